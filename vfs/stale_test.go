package vfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/internal/storetest"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/serve"
	"github.com/zarrfs/zarrfs/vfs/blocks"
	"github.com/zarrfs/zarrfs/vfs/store"
)

// switchOrigin serves dir like nginx: strong ETags (a content hash),
// ranges, no manifest. Tests switch it to misbehave: noRanges answers
// every request whole (ignoring Range and If-Match, as simple servers and
// some proxies do), noETag sends no ETag.
type switchOrigin struct {
	dir              string
	noRanges, noETag atomic.Bool
}

func (o *switchOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := strings.TrimPrefix(path.Clean(r.URL.Path), "/")
	data, err := os.ReadFile(filepath.Join(o.dir, filepath.FromSlash(key)))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	if !o.noETag.Load() {
		sum := sha256.Sum256(data)
		w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:8])+`"`)
	}
	if o.noRanges.Load() {
		r.Header.Del("Range")
		r.Header.Del("If-Match")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

// coreFixture is an FS over a directory served by handler, through a real
// client and cache, without the FUSE adapter or a planner.
type coreFixture struct {
	dir      string
	cacheDir string
	cache    *cache.Cache
	fs       *FS
}

func newCoreFixture(t *testing.T, dir string, handler http.Handler) *coreFixture {
	t.Helper()
	return newCoreFixtureBudget(t, dir, handler, 1<<30)
}

// newCoreFixtureBudget is newCoreFixture with a cache of maxBytes.
func newCoreFixtureBudget(t *testing.T, dir string, handler http.Handler, maxBytes int64) *coreFixture {
	t.Helper()
	hs := httptest.NewServer(handler)
	t.Cleanup(hs.Close)
	client, err := remote.New(hs.URL, remote.Options{RetryDeadline: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	st, err := store.Discover(context.Background(), client)
	if err != nil {
		t.Fatal(err)
	}
	cacheDir := t.TempDir()
	c, err := cache.New(cache.Options{Dir: cacheDir, MaxBytes: maxBytes, Namespace: hs.URL}, OriginSource{Origin: client})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	f := New(st, client, c, Options{Logger: slog.New(slog.DiscardHandler), AttrValid: time.Hour})
	t.Cleanup(f.Close)
	return &coreFixture{dir: dir, cacheDir: cacheDir, cache: c, fs: f}
}

// lookup resolves a slash-separated path to its File, as the kernel does.
func (x *coreFixture) lookup(t *testing.T, p string) *File {
	t.Helper()
	var n Node = x.fs.Root()
	for _, name := range strings.Split(p, "/") {
		d, ok := n.(*Dir)
		if !ok {
			t.Fatalf("lookup %s: %s is not a directory", p, name)
		}
		var err error
		if n, err = d.Lookup(context.Background(), name); err != nil {
			t.Fatalf("lookup %s: %v", p, err)
		}
	}
	f, ok := n.(*File)
	if !ok {
		t.Fatalf("lookup %s: a %T, want a file", p, n)
	}
	return f
}

func (x *coreFixture) open(t *testing.T, f *File) Handle {
	t.Helper()
	h, err := f.Open(context.Background())
	if err != nil {
		t.Fatalf("open %s: %v", f.Key(), err)
	}
	t.Cleanup(func() { _ = h.Release() })
	return h
}

// readAll reads size bytes of h in 128 KiB reads, as the kernel does.
func readAll(h Handle, size int64) ([]byte, error) {
	out := make([]byte, 0, size)
	buf := make([]byte, 128<<10)
	for off := int64(0); off < size; {
		n, err := h.ReadAt(context.Background(), buf, off)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
		out = append(out, buf[:n]...)
		off += int64(n)
	}
	return out, nil
}

// shardStoreDir holds storetest.GenShardStore's store, written once for the
// package's tests (it takes seconds under -race); TestMain removes it.
var (
	shardStoreOnce sync.Once
	shardStoreDir  string
	shardStoreErr  error
)

// shardStore returns a copy of GenShardStore's store of the test's own.
func shardStore(t *testing.T) string {
	t.Helper()
	shardStoreOnce.Do(func() {
		if shardStoreDir, shardStoreErr = os.MkdirTemp("", "vfs-shards-"); shardStoreErr != nil {
			return
		}
		shardStoreErr = os.CopyFS(shardStoreDir, os.DirFS(storetest.GenShardStore(t)))
	})
	if shardStoreErr != nil {
		t.Fatal(shardStoreErr)
	}
	dir := filepath.Join(t.TempDir(), "store")
	if err := os.CopyFS(dir, os.DirFS(shardStoreDir)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// writeShard writes a shard of GenShardStore's array with inner chunks from
// seed, leaving the inner chunks in empty unstored.
func writeShard(t *testing.T, p string, seed uint64, empty ...int) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed+1))
	const perShard = (storetest.ShardSide / storetest.ShardInner) * (storetest.ShardSide / storetest.ShardInner)
	data := storetest.EncodeShard(rng.Perm(perShard), func(i int) []byte {
		if slices.Contains(empty, i) {
			return nil
		}
		chunk := make([]byte, storetest.InnerChunkBytes)
		for k := 0; k < len(chunk); k += 8 {
			binary.LittleEndian.PutUint64(chunk[k:], rng.Uint64())
		}
		return chunk
	})
	rewriteInPlace(t, p, data)
	return data
}

// rewriteInPlace truncates and rewrites p, as an in-place rewrite on the
// origin does, and makes sure its modification time moved.
func rewriteInPlace(t *testing.T, p string, data []byte) {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	later := st.ModTime().Add(time.Second)
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
}

// changedObject is one object a test rewrites on the origin under the
// file system: what it read before, and how.
type changedObject struct {
	key      string
	old, new []byte
	file     *File  // looked up before the change
	h        Handle // opened before the change
}

// TestObjectChangedUnderTheMount: a shard and a big plain chunk, read by
// blocks, are rewritten in place on the origin (the shard with another
// size) while the file system serves them, with no refresh. A read of the
// old version that needs the origin fails with ErrStale (never other
// bytes); the old File then refuses opens (the kernel looks the name up
// again on ESTALE), and a new lookup gives the new version, read whole
// byte for byte. From `zarrfs serve` (versions from a manifest that is now
// out of date) and from a static origin (versions learned by suffix
// requests; there the plain chunk has no version and is read whole, so
// only the shard is checked).
func TestObjectChangedUnderTheMount(t *testing.T) {
	for _, backend := range []string{"static", "serve"} {
		t.Run(backend, func(t *testing.T) {
			dir := shardStore(t)
			var h http.Handler = &switchOrigin{dir: dir}
			if backend == "serve" {
				srv, err := serve.New(serve.Config{Dir: dir, NoAuth: true})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { srv.Close() })
				h = srv
			}
			x := newCoreFixture(t, dir, h)
			objs := []*changedObject{{key: "big/c/0/0"}}
			if backend == "serve" {
				objs = append(objs, &changedObject{key: "plain/c/0"})
			}
			for _, o := range objs {
				var err error
				if o.old, err = os.ReadFile(filepath.Join(dir, filepath.FromSlash(o.key))); err != nil {
					t.Fatal(err)
				}
				o.file = x.lookup(t, o.key)
				o.h = x.open(t, o.file)
				if !ReadsByBlocks(o.h) {
					t.Fatalf("%s: a %T, want a handle reading by blocks", o.key, o.h)
				}
				// Before: what a zarr reader reads first in a shard (one
				// inner chunk), and the third block of the plain chunk.
				at, n := int64(2*blocks.PlainBlockBytes), int64(128<<10)
				if o.key == "big/c/0/0" {
					r := storetest.InnerChunkRanges(t, o.old)[9]
					at, n = r.Offset, r.Length
				}
				got := make([]byte, n)
				if _, err := o.h.ReadAt(context.Background(), got, at); err != nil || !bytes.Equal(got, o.old[at:at+n]) {
					t.Fatalf("%s: [%d, +%d) before the change: %v", o.key, at, n, err)
				}
			}

			// The origin rewrites both in place: the shard one inner chunk
			// shorter, the plain chunk with other bytes of the same size.
			for _, o := range objs {
				p := filepath.Join(dir, filepath.FromSlash(o.key))
				if o.key == "big/c/0/0" {
					o.new = writeShard(t, p, 99, 3)
				} else {
					o.new = bytes.Clone(o.old)
					for i := range o.new {
						o.new[i] ^= 0x5a
					}
					rewriteInPlace(t, p, o.new)
				}
			}
			if len(objs[0].new) == len(objs[0].old) {
				t.Fatal("the new shard has the old size")
			}

			for _, o := range objs {
				// The handle opened before reads its own version: what is
				// cached, or ErrStale; never bytes of the new version.
				b, err := readAll(o.h, int64(len(o.old)))
				switch {
				case err == nil && !bytes.Equal(b, o.old):
					t.Errorf("%s: the handle opened before the change read %d bytes that are not the old version", o.key, len(b))
				case err != nil && !errors.Is(err, ErrStale):
					t.Errorf("%s: the handle opened before the change failed with %v, want ErrStale", o.key, err)
				case err == nil:
					t.Errorf("%s: the whole old version was read after the change; the test proves nothing", o.key)
				}
				// The old File is out of date: opening it again fails with
				// ErrStale (the kernel then looks the name up again).
				if h, err := o.file.Open(context.Background()); !errors.Is(err, ErrStale) {
					if h != nil {
						_ = h.Release()
					}
					t.Errorf("%s: open of the File of the old version: %v, want ErrStale", o.key, err)
				}
				// The next lookup gives the new version, read whole.
				f := x.lookup(t, o.key)
				if f == o.file || f.Size() != int64(len(o.new)) || f.Version() == o.file.Version() {
					t.Errorf("%s after the change: size %d version %s (same File: %v), want %d bytes of a new version", o.key, f.Size(), f.Version(), f == o.file, len(o.new))
					continue
				}
				h := x.open(t, f)
				if !ReadsByBlocks(h) {
					t.Errorf("%s after the change: a %T, want a handle reading by blocks", o.key, h)
				}
				b, err = readAll(h, f.Size())
				if err != nil || !bytes.Equal(b, o.new) {
					t.Errorf("%s after the change: %d bytes, err %v; want the new version's %d bytes", o.key, len(b), err, len(o.new))
				}
			}
		})
	}
}
