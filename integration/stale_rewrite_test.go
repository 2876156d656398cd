package integration

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/internal/storetest"
)

// staleShard is a shard of writeFaultStores' v3 array (8x8 inner chunks of 16 KiB, crc32c
// index at the end) with inner chunks from seed, every inner chunk k with k%skip == 0 left
// unstored: another skip gives another size.
func staleShard(seed uint64, skip int) []byte {
	const inners, innerBytes = 64, 64 * 64 * 4
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	return storetest.EncodeShard(rng.Perm(inners), func(k int) []byte {
		if k%skip == 0 {
			return nil
		}
		c := make([]byte, innerBytes)
		for i := 0; i < len(c); i += 8 {
			binary.LittleEndian.PutUint64(c[i:], rng.Uint64())
		}
		return c
	})
}

// bounded runs f, giving up with errHung after d: a read through the mount that hangs is a
// failure to report. The goroutine left behind returns when the mount is taken down.
func bounded(d time.Duration, f func() error) error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		return fmt.Errorf("%w after %v", errHung, d)
	}
}

// isStaleOrEIO says whether err is what a read of an object that changed under it may fail
// with.
func isStaleOrEIO(err error) bool {
	var errno syscall.Errno
	return errors.As(err, &errno) && (errno == syscall.ESTALE || errno == syscall.EIO)
}

// TestStaleObjectRewrittenUnderMount: a v3 shard, and a 17 MiB v2 chunk read by 4 MiB blocks,
// are rewritten in place on the origin while mounted, with different bytes (the shard also
// with another size), after a reader read part of each. With no refresh (--refresh 0, so
// nothing but the reads can notice), the handle opened before the change reads the old bytes
// or fails with ESTALE or EIO, never other bytes; and the next os.ReadFile, with no remount,
// reads the new version byte for byte, and stat shows its size. From a static origin (the
// shard's version learned by a suffix request; the big chunk is read whole there, so only
// the shard) and from `zarrfs serve`'s handler (versions from a manifest, now out of date).
func TestStaleObjectRewrittenUnderMount(t *testing.T) {
	fuseReady.require(t)
	for _, backend := range []string{"static", "serve"} {
		t.Run(backend, func(t *testing.T) {
			stores := writeFaultStores(t)
			o := newFaultOrigin(t, stores.dir, backend == "serve")
			type object struct {
				store, key string
				at, n      int64 // the part read before the change
				new        []byte
			}
			objs := []*object{{store: "v3.zarr", key: "s/c/0/0", new: staleShard(42, 5)}}
			if backend == "serve" {
				big := bytes.Clone(stores.files["v2.zarr/big/0"])
				for i := range big {
					big[i] ^= 0xa5
				}
				// The third block: no readahead of the whole chunk, which a read at its
				// start would start.
				objs = append(objs, &object{store: "v2.zarr", key: "big/0", at: 8 << 20, n: 128 << 10, new: big})
			}
			mounts := map[string]*mounted{}
			files := map[*object]*os.File{}
			for _, ob := range objs {
				old := stores.files[ob.store+"/"+ob.key]
				if ob.store == "v3.zarr" {
					// A zarr reader's first steps: the index, then one inner chunk.
					idx := int64(64*16 + 4)
					at := binary.LittleEndian.Uint64(old[int64(len(old))-idx+16*9:])
					ob.at, ob.n = int64(at), int64(binary.LittleEndian.Uint64(old[int64(len(old))-idx+16*9+8:]))
					if len(ob.new) == len(old) || at == math.MaxUint64 {
						t.Fatalf("bad test data: new shard of %d bytes, old %d; inner chunk 9 at %d", len(ob.new), len(old), ob.at)
					}
				}
				if mounts[ob.store] == nil {
					mounts[ob.store] = mount(t, o.URL(ob.store), "--refresh", "0", "--retry-timeout", "3s")
				}
				f, err := os.Open(mounts[ob.store].path(ob.key))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { f.Close() })
				files[ob] = f
				got := make([]byte, ob.n)
				if err := bounded(30*time.Second, func() error { _, err := f.ReadAt(got, ob.at); return err }); err != nil || !bytes.Equal(got, old[ob.at:ob.at+ob.n]) {
					t.Fatalf("%s/%s: [%d, +%d) before the change: %v", ob.store, ob.key, ob.at, ob.n, err)
				}
			}

			// The origin rewrites both in place.
			for _, ob := range objs {
				p := filepath.Join(stores.dir, ob.store, filepath.FromSlash(ob.key))
				if err := os.WriteFile(p, ob.new, 0o644); err != nil {
					t.Fatal(err)
				}
			}

			for _, ob := range objs {
				name := ob.store + "/" + ob.key
				old := stores.files[name]
				// The handle opened before: the old bytes, or ESTALE or EIO (it finds the
				// change), never anything else.
				got := make([]byte, len(old))
				var n int
				err := bounded(30*time.Second, func() error {
					var err error
					n, err = files[ob].ReadAt(got, 0)
					return err
				})
				switch {
				case err == nil && !bytes.Equal(got[:n], old):
					t.Errorf("%s: the file opened before the change read %d bytes that are not its old version", name, n)
				case err == nil:
					t.Errorf("%s: the file opened before the change read all of its old version from caches: the test proves nothing", name)
				case !isStaleOrEIO(err):
					t.Errorf("%s: the file opened before the change failed with %v, want ESTALE or EIO", name, err)
				}
				t.Logf("%s: the file opened before the change: %v", name, err)
				files[ob].Close()

				// The next read, with no remount: the new version.
				p := mounts[ob.store].path(ob.key)
				b, err := readBounded(p, 30*time.Second)
				switch {
				case err != nil:
					t.Errorf("%s: the first read after the change: %v, want the new version", name, err)
				case !bytes.Equal(b, ob.new):
					t.Errorf("%s: the first read after the change: %d bytes that are not the new version's %d (old: %v)", name, len(b), len(ob.new), bytes.Equal(b, old))
				}
				if fi, err := os.Stat(p); err != nil || fi.Size() != int64(len(ob.new)) {
					t.Errorf("%s: stat after the change: %v, size %v, want %d", name, err, fi, len(ob.new))
				}
			}
			for _, m := range mounts {
				if !strings.Contains(m.output(), "object changed on the origin") {
					t.Errorf("the daemon did not log the change:\n%s", m.output())
				}
			}
		})
	}
}
