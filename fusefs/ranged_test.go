package fusefs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/internal/storetest"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/serve"
	"github.com/zarrfs/zarrfs/vfs"
	"github.com/zarrfs/zarrfs/vfs/blocks"
	"github.com/zarrfs/zarrfs/vfs/store"
)

// countingHandler counts requests and body bytes.
type countingHandler struct {
	h        http.Handler
	requests atomic.Int64
	bytes    atomic.Int64
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

// Write counts before writing: the client may have the bytes (and the test
// may look at the count) before the server's Write returns.
func (w countingWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return w.ResponseWriter.Write(p)
}

func (c *countingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.requests.Add(1)
	c.h.ServeHTTP(countingWriter{w, &c.bytes}, r)
}

// staticETagServer is a static origin without a manifest that sends strong
// ETags (a content hash) and serves ranges, like nginx. noRanges makes it
// answer every request with the whole object.
func staticETagServer(dir string, noRanges bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(path.Clean(r.URL.Path), "/")
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(key)))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		sum := sha256.Sum256(data)
		w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:8])+`"`)
		if noRanges {
			r.Header.Del("Range")
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	})
}

// rangedFixture is an FS over genShardStore's store, read through a real
// client and cache from a counted origin.
type rangedFixture struct {
	dir    string
	origin *countingHandler
	cache  *cache.Cache
	core   *vfs.FS
	fs     *FS
}

func newRangedFixture(t *testing.T, dir string, handler http.Handler) *rangedFixture {
	t.Helper()
	counted := &countingHandler{h: handler}
	hs := httptest.NewServer(counted)
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
	c, err := cache.New(cache.Options{Dir: t.TempDir(), MaxBytes: 1 << 30, Namespace: hs.URL}, vfs.OriginSource{Origin: client})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	core := vfs.New(st, client, c, vfs.Options{Logger: slog.New(slog.DiscardHandler), AttrValid: time.Hour})
	t.Cleanup(core.Close)
	f := newFS(core, Options{Logger: slog.New(slog.DiscardHandler)})
	return &rangedFixture{dir: dir, origin: counted, cache: c, core: core, fs: f}
}

func (x *rangedFixture) lookup(t *testing.T, p string) fusefs.Node {
	t.Helper()
	n, err := x.fs.Root()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range strings.Split(p, "/") {
		if n, err = n.(fusefs.NodeRequestLookuper).Lookup(context.Background(), &fuse.LookupRequest{Name: name}, &fuse.LookupResponse{}); err != nil {
			t.Fatalf("lookup %s: %v", p, err)
		}
	}
	return n
}

func (x *rangedFixture) open(t *testing.T, p string) fusefs.Handle {
	t.Helper()
	h, err := x.lookup(t, p).(fusefs.NodeOpener).Open(context.Background(), &fuse.OpenRequest{}, &fuse.OpenResponse{})
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	t.Cleanup(func() {
		if rel, ok := h.(fusefs.HandleReleaser); ok {
			_ = rel.Release(context.Background(), &fuse.ReleaseRequest{})
		}
	})
	return h
}

func readAt(t *testing.T, h fusefs.Handle, off int64, n int) []byte {
	t.Helper()
	resp := &fuse.ReadResponse{Data: make([]byte, 0, n)}
	if err := h.(fusefs.HandleReader).Read(context.Background(), &fuse.ReadRequest{Offset: off, Size: n}, resp); err != nil {
		t.Fatalf("read [%d, +%d): %v", off, n, err)
	}
	return resp.Data
}

// TestRangedReads reads shards and a big plain chunk through the FS, from
// `zarrfs serve` (manifest: versions known up front) and from a static
// origin (versions learned by a suffix request), and checks bytes and what
// crossed the network.
func TestRangedReads(t *testing.T) {
	dir := storetest.GenShardStore(t)
	srv, err := serve.New(serve.Config{Dir: dir, NoAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	for _, tc := range []struct {
		name    string
		handler http.Handler
	}{
		{"serve", srv},
		{"static", staticETagServer(dir, false)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newRangedFixture(t, dir, tc.handler)
			data, err := os.ReadFile(filepath.Join(dir, "big/c/0/0"))
			if err != nil {
				t.Fatal(err)
			}
			ranges := storetest.InnerChunkRanges(t, data)
			before := x.origin.bytes.Load()
			h := x.open(t, "big/c/0/0")
			if ok := vfs.ReadsByBlocks(h.(*handle).h); !ok {
				t.Fatalf("open gave a %T, want a ranged handle", h.(*handle).h)
			}
			// The reader's first steps: the index, then one inner chunk.
			idx := int64(len(ranges))*16 + 4
			if got := readAt(t, h, int64(len(data))-idx, int(idx)); !bytes.Equal(got, data[int64(len(data))-idx:]) {
				t.Fatal("index bytes differ")
			}
			r := ranges[9]
			if got := readAt(t, h, r.Offset, int(r.Length)); !bytes.Equal(got, data[r.Offset:r.Offset+r.Length]) {
				t.Fatal("inner chunk 9 differs")
			}
			moved := x.origin.bytes.Load() - before
			t.Logf("index + inner chunk 9 (%d bytes) moved %d bytes of a %d-byte shard", r.Length, moved, len(data))
			if moved > blocks.ShardBlockBytes+idx+3*blocks.PageSize || moved < r.Length {
				t.Errorf("reading the index and one inner chunk moved %d bytes; the shard has %d, a block is at most %d", moved, len(data), blocks.ShardBlockBytes)
			}
			st := x.cache.Stats()
			if st.RangeEntries < 1 || st.RangeBytes < r.Length {
				t.Errorf("cache holds %d range entries (%d bytes), want the block of inner chunk 9", st.RangeEntries, st.RangeBytes)
			}
			// Random reads over both shards and the plain chunk, crossing
			// block boundaries, all equal to the file.
			rng := rand.New(rand.NewPCG(3, 4))
			for _, key := range []string{"big/c/0/0", "big/c/1/0", "plain/c/0"} {
				data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(key)))
				if err != nil {
					t.Fatal(err)
				}
				h := x.open(t, key)
				// Without a manifest a plain chunk's size is learned by
				// fetching it: it is read whole.
				wantRanged := tc.name == "serve" || strings.HasPrefix(key, "big/")
				if ok := vfs.ReadsByBlocks(h.(*handle).h); ok != wantRanged {
					t.Fatalf("%s: open gave a %T, want ranged=%v", key, h.(*handle).h, wantRanged)
				}
				for range 200 {
					off := rng.Int64N(int64(len(data)))
					n := 1 + rng.IntN(300<<10)
					want := data[off:min(int64(len(data)), off+int64(n))]
					if got := readAt(t, h, off, n); !bytes.Equal(got, want) {
						t.Fatalf("%s: read [%d, +%d): %d bytes differ from the file's %d", key, off, n, len(got), len(want))
					}
				}
			}
			// Everything read is cached: a second pass costs no request.
			reqs := x.origin.requests.Load()
			h2 := x.open(t, "big/c/0/0")
			if got := readAt(t, h2, r.Offset, int(r.Length)); !bytes.Equal(got, data[r.Offset:r.Offset+r.Length]) {
				t.Fatal("inner chunk 9 differs on the second read")
			}
			if n := x.origin.requests.Load() - reqs; n != 0 {
				t.Errorf("a cached inner chunk cost %d requests", n)
			}
		})
	}
}

// TestRangedFallbacks: an origin that ignores ranges still serves every
// byte (whole objects), and an object that changed under its version is
// ESTALE, never a mix.
func TestRangedFallbacks(t *testing.T) {
	t.Run("ranges ignored", func(t *testing.T) {
		dir := storetest.GenShardStore(t)
		x := newRangedFixture(t, dir, staticETagServer(dir, true))
		for _, key := range []string{"big/c/0/0", "plain/c/0"} {
			data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(key)))
			if err != nil {
				t.Fatal(err)
			}
			h := x.open(t, key)
			for _, off := range []int64{0, int64(len(data)) / 3, int64(len(data)) - 100} {
				if got := readAt(t, h, off, 128<<10); !bytes.Equal(got, data[off:min(int64(len(data)), off+128<<10)]) {
					t.Fatalf("%s at %d: bytes differ", key, off)
				}
			}
		}
		if !x.core.RangedStats().Unsupported {
			t.Error("ranged reads are still on after the origin ignored a range")
		}
	})
	t.Run("missing shard asked for once", func(t *testing.T) {
		dir := storetest.GenShardStore(t)
		if err := os.Remove(filepath.Join(dir, "big/c/1/0")); err != nil {
			t.Fatal(err)
		}
		x := newRangedFixture(t, dir, staticETagServer(dir, false))
		root, _ := x.fs.Root()
		big, err := root.(fusefs.NodeRequestLookuper).Lookup(context.Background(), &fuse.LookupRequest{Name: "big"}, &fuse.LookupResponse{})
		if err != nil {
			t.Fatal(err)
		}
		before := x.origin.requests.Load()
		for range 3 {
			_, err := lookupPath(big, "c/1/0")
			if err == nil || !strings.Contains(err.Error(), "no such file") {
				t.Fatalf("lookup of a missing shard: %v, want ENOENT", err)
			}
		}
		if n := x.origin.requests.Load() - before; n != 1 {
			t.Errorf("3 lookups of a missing shard made %d requests, want 1", n)
		}
	})
	t.Run("changed on the origin", func(t *testing.T) {
		dir := storetest.GenShardStore(t)
		srv, err := serve.New(serve.Config{Dir: dir, NoAuth: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		x := newRangedFixture(t, dir, srv)
		data, err := os.ReadFile(filepath.Join(dir, "plain/c/0"))
		if err != nil {
			t.Fatal(err)
		}
		h := x.open(t, "plain/c/0")
		readAt(t, h, 0, 4096)
		data[blocks.PlainBlockBytes+10] ^= 0xff
		if err := os.WriteFile(filepath.Join(dir, "plain/c/0"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		resp := &fuse.ReadResponse{Data: make([]byte, 0, 4096)}
		err = h.(fusefs.HandleReader).Read(context.Background(), &fuse.ReadRequest{Offset: blocks.PlainBlockBytes, Size: 4096}, resp)
		if err == nil || !strings.Contains(err.Error(), "stale") {
			t.Fatalf("read of a block after the object changed: err = %v, want ESTALE", err)
		}
	})
}

// TestRangedPrefetch: a predicted shard reaches the cache as its blocks,
// through the planner's sink and through a feed, so a reader then finds
// every block cached.
func TestRangedPrefetch(t *testing.T) {
	dir := storetest.GenShardStore(t)
	srv, err := serve.New(serve.Config{Dir: dir, NoAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	for _, via := range []string{"sink", "feed"} {
		t.Run(via, func(t *testing.T) {
			x := newRangedFixture(t, dir, srv)
			sink := x.core.PrefetchSink()
			m := x.core.Store().Manifest
			size, version, ok := m.Lookup("big/c/1/0")
			if !ok {
				t.Fatal("manifest lacks big/c/1/0")
			}
			w := cache.Want{Key: "big/c/1/0", Version: version, Size: size}
			if via == "sink" {
				if res := sink.Prefetch(w, cache.PriorityHigh); res != cache.PrefetchQueued {
					t.Fatalf("Prefetch = %v", res)
				}
			} else {
				sent := false
				feed := sink.StartFeed(func() (cache.Want, bool) {
					if sent {
						return cache.Want{}, false
					}
					sent = true
					return w, true
				})
				select {
				case <-feed.Done():
				case <-time.After(30 * time.Second):
					t.Fatal("feed did not finish")
				}
			}
			// Wait (bounded) for every block to land.
			data, err := os.ReadFile(filepath.Join(dir, "big/c/1/0"))
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for x.cache.Stats().RangeBytes < int64(len(data))-int64(len(storetest.InnerChunkRanges(t, data))*16+4) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			reqs := x.origin.requests.Load()
			h := x.open(t, "big/c/1/0")
			if got := readAt(t, h, 0, len(data)); !bytes.Equal(got, data) {
				t.Fatal("prefetched shard reads differently")
			}
			if n := x.origin.requests.Load() - reqs; n != 0 {
				t.Errorf("reading a prefetched shard cost %d requests", n)
			}
		})
	}
}

// lookupPath looks up a slash path below n.
func lookupPath(n fusefs.Node, p string) (fusefs.Node, error) {
	for _, name := range strings.Split(p, "/") {
		var err error
		if n, err = n.(fusefs.NodeRequestLookuper).Lookup(context.Background(), &fuse.LookupRequest{Name: name}, &fuse.LookupResponse{}); err != nil {
			return nil, err
		}
	}
	return n, nil
}
