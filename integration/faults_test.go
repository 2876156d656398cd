package integration

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/internal/storetest"
)

// faultStores is the data the fault tests read: a v2 store of small chunks and one big
// chunk (17 MiB: read by 4 MiB blocks from an origin with a manifest, whole from a static
// one, and by the reader in 128 KiB reads either way), and a v3 store of shards read by
// ranges (the index, then blocks of inner chunks).
type faultStores struct {
	dir   string
	files map[string][]byte // "v2.zarr/small/0" -> content, data files only
}

const faultBigChunk = 17 << 20

func writeFaultStores(t testing.TB) *faultStores {
	t.Helper()
	s := &faultStores{dir: t.TempDir(), files: map[string][]byte{}}
	rng := rand.New(rand.NewPCG(5, 6))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := 0; i+8 <= n; i += 8 {
			binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
		}
		return b
	}
	put := func(rel string, b []byte, data bool) {
		p := filepath.Join(s.dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if data {
			s.files[rel] = b
		}
	}
	js := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// v2: consolidated metadata, small chunks and one big chunk.
	arr := func(n, chunk int) map[string]any {
		return map[string]any{"zarr_format": 2, "shape": []int{n}, "chunks": []int{chunk}, "dtype": "|u1",
			"compressor": nil, "fill_value": 0, "order": "C", "filters": nil}
	}
	meta := map[string]any{
		".zgroup":       map[string]any{"zarr_format": 2},
		"small/.zarray": arr(8*8192, 8192),
		"big/.zarray":   arr(faultBigChunk, faultBigChunk),
	}
	for k, v := range meta {
		put("v2.zarr/"+k, js(v), false)
	}
	put("v2.zarr/.zmetadata", js(map[string]any{"zarr_consolidated_format": 1, "metadata": meta}), false)
	for i := range 8 {
		put(fmt.Sprintf("v2.zarr/small/%d", i), random(8192), true)
	}
	put("v2.zarr/big/0", random(faultBigChunk), true)

	// v3: two shards of 8x8 inner chunks of 64x64 int32 (16 KiB each), some not stored.
	const side, shard, inner = 512, 512, 64
	put("v3.zarr/zarr.json", []byte(`{"zarr_format": 3, "node_type": "group", "attributes": {}}`), false)
	put("v3.zarr/s/zarr.json", js(storetest.ShardedArray{Shape: []int{2 * side, side}, Shard: []int{shard, shard},
		Inner: []int{inner, inner}, DataType: "int32", Fill: 0}.Meta()), false)
	const inners = (shard / inner) * (shard / inner)
	for si := range 2 {
		shard := storetest.EncodeShard(rng.Perm(inners), func(k int) []byte {
			if k%13 == 5 {
				return nil
			}
			return random(inner * inner * 4)
		})
		put(fmt.Sprintf("v3.zarr/s/c/%d/0", si), shard, true)
	}
	return s
}

// keys returns the data files of one store ("v2.zarr"), sorted, relative to it.
func (s *faultStores) keys(store string) []string {
	var out []string
	for k := range s.files {
		if rel, ok := strings.CutPrefix(k, store+"/"); ok {
			out = append(out, rel)
		}
	}
	sort.Strings(out)
	return out
}

// readOutcome is what reading one file through the mount gave.
type readOutcome struct {
	ok, eio int
	stale   int      // ESTALE: the object changed since it was looked up (vfs.ErrStale)
	wrong   []string // never allowed: a read that returned other bytes than the origin's
	other   []string // errors other than EIO
}

// readStore reads every data file of store through the mount: whole with os.ReadFile, and for
// shards also the index and one inner chunk with pread at their offsets, as a zarr reader does.
func readStore(s *faultStores, mnt, store string) readOutcome {
	var out readOutcome
	check := func(what string, got, want []byte, err error) {
		var errno syscall.Errno
		switch {
		case err == nil && bytes.Equal(got, want):
			out.ok++
		case err == nil:
			out.wrong = append(out.wrong, fmt.Sprintf("%s: %d bytes that differ from the origin's %d", what, len(got), len(want)))
		case errors.As(err, &errno) && errno == syscall.EIO:
			out.eio++
		case errors.As(err, &errno) && errno == syscall.ESTALE:
			out.stale++
		default:
			out.other = append(out.other, fmt.Sprintf("%s: %v", what, err))
		}
	}
	for _, key := range s.keys(store) {
		want := s.files[store+"/"+key]
		p := filepath.Join(mnt, filepath.FromSlash(key))
		if strings.HasPrefix(key, "s/c/") {
			f, err := os.Open(p)
			if err != nil {
				check(key+" (open)", nil, want, err)
				continue
			}
			idx := make([]byte, 64*16+4)
			_, err = f.ReadAt(idx, int64(len(want)-len(idx)))
			check(key+" (index)", idx, want[len(want)-len(idx):], err)
			off, n := binary.LittleEndian.Uint64(want[len(want)-len(idx)+16*9:]), binary.LittleEndian.Uint64(want[len(want)-len(idx)+16*9+8:])
			if off != math.MaxUint64 {
				got := make([]byte, n)
				_, err = f.ReadAt(got, int64(off))
				check(key+" (inner chunk 9)", got, want[off:off+n], err)
			}
			f.Close()
		}
		got, err := readBounded(p, 30*time.Second)
		check(key, got, want, err)
	}
	return out
}

// errHung: a read through the mount did not return within its bound.
var errHung = errors.New("read hung")

// readBounded is os.ReadFile, giving up (errHung) after d: a read that hangs is a failure
// to report, not a test that never ends. The reader left behind returns when the mount is
// taken down.
func readBounded(p string, d time.Duration) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := os.ReadFile(p)
		ch <- result{b, err}
	}()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-time.After(d):
		return nil, fmt.Errorf("%s: %w after %v", p, errHung, d)
	}
}

// TestFaultInjection: for each fault the origin can inject, reads through a real mount of
// small chunks, a big chunk and v3 shards, from a static origin and from `zarrfs serve`'s
// handler, are byte-identical or fail with EIO — never other bytes, never another error;
// after the fault clears every read succeeds (within the probe interval of an origin marked
// down), and a remount on the same cache reads the same bytes, so nothing bad was cached.
//
// The fault hits the first data request of each path and range and every second one after
// it, so retries and resumes meet both a faulted and a good answer. About 2 minutes under
// -race on 2 cores.
func TestFaultInjection(t *testing.T) {
	fuseReady.require(t)
	stores := writeFaultStores(t)
	faults := []struct {
		f fault
		// mustRead: every read succeeds while the fault is on (a retry or a resume gets
		// past it). Otherwise EIO is allowed, wrong bytes never are.
		mustRead bool
		// stale: an ETag that changes is the object changing on the origin: a read of it
		// may fail with ESTALE while the fault is on (the version it was opened at is
		// gone). The mount then forgets that version, so once the fault clears the next
		// reads succeed without a remount, like after any other fault.
		stale bool
	}{
		{fault500, true, false},
		{fault503RetryAfter, true, false},
		{fault429, true, false},
		{fault429RetryAfter, true, false},
		{faultResetBefore, true, false},
		{faultResetMidBody, true, false},
		{faultShortBody, true, false},
		{faultStallHeaders, false, false},
		{faultStallMidBody, false, false},
		{faultRange200, false, false},
		{faultRangeShifted, false, false},
		{faultRangeWrongTotal, false, false},
		{faultETagChanges, false, true},
		{faultNotModifiedPlain, false, false},
	}
	for _, backend := range []string{"static", "serve"} {
		for _, tc := range faults {
			t.Run(backend+"/"+string(tc.f), func(t *testing.T) {
				// Each case has its own origin, mounts and caches; most of a case is
				// waiting (mounts, retry budgets), so cases overlap (-parallel, GOMAXPROCS
				// by default).
				t.Parallel()
				o := newFaultOrigin(t, stores.dir, backend == "serve")
				// Faults a retry gets past have a budget a busy CI machine cannot spend by
				// a slow scheduler alone; the others keep a short one, as they wait it out.
				retryTimeout := "2s"
				if tc.mustRead {
					retryTimeout = "10s"
				}
				cacheDirs := map[string]string{}
				mounts := map[string]*mounted{}
				mountAll := func() {
					for _, store := range []string{"v2.zarr", "v3.zarr"} {
						if cacheDirs[store] == "" {
							cacheDirs[store] = filepath.Join(t.TempDir(), "cache")
						}
						mounts[store] = mount(t, o.URL(store), "--retry-timeout", retryTimeout, "--refresh", "0", "--cache-dir", cacheDirs[store])
					}
				}
				mountAll()
				o.set(tc.f, 2)
				for store, m := range mounts {
					got := readStore(stores, m.Dir, store)
					for _, w := range got.wrong {
						t.Errorf("%s with the fault on: %s", store, w)
					}
					for _, e := range got.other {
						t.Errorf("%s with the fault on: %s (want the bytes or EIO)", store, e)
					}
					if tc.mustRead && got.eio+got.stale > 0 {
						t.Errorf("%s with the fault on: %d reads failed with EIO, %d with ESTALE; want retries to get past it", store, got.eio, got.stale)
					}
					if got.stale > 0 && !tc.stale {
						t.Errorf("%s with the fault on: %d reads failed with ESTALE, but the object did not change", store, got.stale)
					}
					t.Logf("%s with the fault on: %d reads right, %d EIO, %d ESTALE", store, got.ok, got.eio, got.stale)
				}
				served, faulted := o.counts()
				if faulted == 0 {
					t.Errorf("the fault never fired (%d data requests)", served)
				}
				o.clear()

				// After the fault: everything reads right, within the time an origin marked
				// down takes to be probed again.
				for store, m := range mounts {
					deadline := time.Now().Add(15 * time.Second)
					for {
						got := readStore(stores, m.Dir, store)
						for _, w := range got.wrong {
							t.Errorf("%s after the fault: %s", store, w)
						}
						if got.eio+got.stale == 0 && len(got.other) == 0 {
							break
						}
						if time.Now().After(deadline) {
							t.Errorf("%s still fails 15s after the fault cleared: %d EIO, %d ESTALE, %v", store, got.eio, got.stale, got.other)
							break
						}
						time.Sleep(500 * time.Millisecond)
					}
				}
				// Nothing bad was cached: a new daemon on the same caches reads the same bytes.
				for _, m := range mounts {
					m.cleanup(t)
				}
				mountAll()
				for store, m := range mounts {
					got := readStore(stores, m.Dir, store)
					for _, w := range got.wrong {
						t.Errorf("%s after a remount on the same cache: %s", store, w)
					}
					if got.eio+got.stale > 0 || len(got.other) > 0 {
						t.Errorf("%s after a remount on the same cache: %d EIO, %d ESTALE, %v", store, got.eio, got.stale, got.other)
					}
				}
			})
		}
	}
}
