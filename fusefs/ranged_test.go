package fusefs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/serve"
	"github.com/zarrfs/zarrfs/zarr"
)

// shardStore describes the v3 store genShardStore writes: one int32 array
// "big" of shape [2048, 1024] in shards of [1024, 1024] holding inner
// chunks of [256, 256] (256 KiB each, 16 per shard, written in a shuffled
// order, one left empty), an index with crc32c at the end; and a plain
// array "plain" whose single chunk is bigObjectBytes+3 bytes.
const (
	shardInner      = 256
	shardSide       = 1024
	innerChunkBytes = shardInner * shardInner * 4
)

func shardArrayMeta() map[string]any {
	return map[string]any{
		"zarr_format": 3, "node_type": "array", "shape": []int{2 * shardSide, shardSide}, "data_type": "int32",
		"chunk_grid":         map[string]any{"name": "regular", "configuration": map[string]any{"chunk_shape": []int{shardSide, shardSide}}},
		"chunk_key_encoding": map[string]any{"name": "default", "configuration": map[string]any{"separator": "/"}},
		"fill_value":         0, "attributes": map[string]any{},
		"codecs": []any{map[string]any{"name": "sharding_indexed", "configuration": map[string]any{
			"chunk_shape":    []int{shardInner, shardInner},
			"codecs":         []any{map[string]any{"name": "bytes", "configuration": map[string]any{"endian": "little"}}},
			"index_codecs":   []any{map[string]any{"name": "bytes", "configuration": map[string]any{"endian": "little"}}, map[string]any{"name": "crc32c"}},
			"index_location": "end",
		}}},
	}
}

func plainArrayMeta() map[string]any {
	n := bigObjectBytes + 3
	return map[string]any{
		"zarr_format": 3, "node_type": "array", "shape": []int{n}, "data_type": "uint8",
		"chunk_grid":         map[string]any{"name": "regular", "configuration": map[string]any{"chunk_shape": []int{n}}},
		"chunk_key_encoding": map[string]any{"name": "default", "configuration": map[string]any{"separator": "/"}},
		"fill_value":         0, "attributes": map[string]any{},
		"codecs": []any{map[string]any{"name": "bytes"}},
	}
}

func writeJSON(t *testing.T, p string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// genShardStore writes the store of shardStore under a new directory.
func genShardStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeJSON(t, filepath.Join(dir, "zarr.json"), map[string]any{
		"zarr_format": 3, "node_type": "group", "attributes": map[string]any{},
		"consolidated_metadata": map[string]any{"kind": "inline", "must_understand": false,
			"metadata": map[string]any{"big": shardArrayMeta(), "plain": plainArrayMeta()}},
	})
	writeJSON(t, filepath.Join(dir, "big", "zarr.json"), shardArrayMeta())
	writeJSON(t, filepath.Join(dir, "plain", "zarr.json"), plainArrayMeta())
	rng := rand.New(rand.NewPCG(1, 2))
	const perShard = (shardSide / shardInner) * (shardSide / shardInner)
	for s := range 2 {
		var data []byte
		index := make([]byte, perShard*16)
		for _, i := range rng.Perm(perShard) {
			if s == 1 && i == 5 {
				binary.LittleEndian.PutUint64(index[16*i:], math.MaxUint64)
				binary.LittleEndian.PutUint64(index[16*i+8:], math.MaxUint64)
				continue
			}
			chunk := make([]byte, innerChunkBytes)
			for k := range chunk {
				chunk[k] = byte(rng.UintN(256))
			}
			binary.LittleEndian.PutUint64(index[16*i:], uint64(len(data)))
			binary.LittleEndian.PutUint64(index[16*i+8:], uint64(len(chunk)))
			data = append(data, chunk...)
		}
		index = binary.LittleEndian.AppendUint32(index, crc32.Checksum(index, crc32.MakeTable(crc32.Castagnoli)))
		p := filepath.Join(dir, "big", "c", fmt.Sprint(s), "0")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, append(data, index...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	plain := make([]byte, bigObjectBytes+3)
	for k := range plain {
		plain[k] = byte(k * 7)
	}
	if err := os.MkdirAll(filepath.Join(dir, "plain", "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plain", "c", "0"), plain, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

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
	store, err := Discover(context.Background(), client)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(cache.Options{Dir: t.TempDir(), MaxBytes: 1 << 30, Namespace: hs.URL}, rangeSource{client})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	f := newFS(store, client, c, slog.New(slog.DiscardHandler), time.Hour)
	t.Cleanup(f.ranged.close)
	return &rangedFixture{dir: dir, origin: counted, cache: c, fs: f}
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

// innerChunkRanges reads a shard's index from disk.
func innerChunkRanges(t *testing.T, data []byte) []zarr.ChunkRange {
	t.Helper()
	_, arr, err := zarr.ParseV3Node(mustJSON(t, shardArrayMeta()))
	if err != nil {
		t.Fatal(err)
	}
	n := arr.Shard.IndexSize(arr)
	ranges, err := zarr.ParseShardIndex(data[int64(len(data))-n:], arr)
	if err != nil {
		t.Fatal(err)
	}
	return ranges
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestShardTableLayout(t *testing.T) {
	dir := genShardStore(t)
	_, arr, err := zarr.ParseV3Node(mustJSON(t, shardArrayMeta()))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"big/c/0/0", "big/c/1/0"} {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(key)))
		if err != nil {
			t.Fatal(err)
		}
		size := int64(len(data))
		idxLen := arr.Shard.IndexSize(arr)
		tb, err := shardTable(arr, `"v"`, size, data[indexFetchRange(arr, size).off:])
		if err != nil {
			t.Fatal(err)
		}
		// Contiguous cover of the object.
		pos := int64(0)
		for i, b := range tb.blocks {
			if b.off != pos || b.n <= 0 {
				t.Fatalf("%s: block %d is [%d, +%d), want it to start at %d", key, i, b.off, b.n, pos)
			}
			pos = b.end()
		}
		if pos != size {
			t.Fatalf("%s: blocks end at %d, object has %d bytes", key, pos, size)
		}
		if i := tb.find(size - 1); !tb.inMemory(i) || tb.blocks[i] != (span{size - idxLen, idxLen}) {
			t.Errorf("%s: the index is not a block of its own held in memory: %v", key, tb.blocks[i])
		}
		// The kernel reads whole pages: the pages of one inner chunk (or
		// of the index) are served by exactly one block.
		pagesOf := func(off, n int64) (int64, int64) {
			return off / pageSize * pageSize, min(size, (off+n+pageSize-1)/pageSize*pageSize)
		}
		blocksFor := func(lo, hi int64) map[int]bool {
			used := map[int]bool{}
			for p := lo; p < hi; {
				i, stop := tb.segment(p, hi)
				if f := tb.fetchRange(i); p < f.off || stop > f.end() || stop <= p {
					t.Fatalf("%s: segment(%d, %d) = block %d to %d, outside its fetch range %v", key, p, hi, i, stop, f)
				}
				used[i] = true
				p = stop
			}
			return used
		}
		if lo, hi := pagesOf(size-idxLen, idxLen); len(blocksFor(lo, hi)) != 1 {
			t.Errorf("%s: the index's pages need blocks %v", key, blocksFor(lo, hi))
		}
		// Every inner chunk lies in exactly one block, and blocks stay small.
		stored := 0
		for i, r := range innerChunkRanges(t, data) {
			if r.Empty {
				continue
			}
			stored++
			b := tb.blocks[tb.find(r.Offset)]
			if r.Offset+r.Length > b.end() {
				t.Errorf("%s: inner chunk %d [%d, +%d) is split at %d", key, i, r.Offset, r.Length, b.end())
			}
			if lo, hi := pagesOf(r.Offset, r.Length); len(blocksFor(lo, hi)) != 1 {
				t.Errorf("%s: the pages of inner chunk %d need blocks %v", key, i, blocksFor(lo, hi))
			}
		}
		for _, b := range tb.blocks {
			if b.n > shardBlockBytes {
				t.Errorf("%s: block [%d, +%d) exceeds %d bytes", key, b.off, b.n, shardBlockBytes)
			}
		}
		if want := (stored*innerChunkBytes+shardBlockBytes-1)/shardBlockBytes + 1; len(tb.blocks) != want {
			t.Errorf("%s: %d blocks, want %d (merged inner chunks + index)", key, len(tb.blocks), want)
		}
	}
}

func TestShardTableRejectsBadIndex(t *testing.T) {
	_, arr, err := zarr.ParseV3Node(mustJSON(t, shardArrayMeta()))
	if err != nil {
		t.Fatal(err)
	}
	idxLen := arr.Shard.IndexSize(arr)
	good := make([]byte, idxLen-4)
	for i := range 16 {
		binary.LittleEndian.PutUint64(good[16*i:], uint64(i*innerChunkBytes))
		binary.LittleEndian.PutUint64(good[16*i+8:], innerChunkBytes)
	}
	withCRC := func(b []byte) []byte {
		return binary.LittleEndian.AppendUint32(slices.Clone(b), crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
	}
	size := int64(16*innerChunkBytes) + idxLen
	beyond := slices.Clone(good)
	binary.LittleEndian.PutUint64(beyond[16*3:], uint64(size))
	flipped := withCRC(good)
	flipped[7] ^= 1
	for _, tc := range []struct {
		name  string
		index []byte
		ok    bool
	}{
		{"good", withCRC(good), true},
		{"checksum mismatch", flipped, false},
		{"chunk beyond the data area", withCRC(beyond), false},
		{"short", withCRC(good)[1:], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := shardTable(arr, `"v"`, size, tc.index)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			r := &rangedObjects{log: slog.New(slog.DiscardHandler)}
			tb := r.shardOrFixed(arr, "k", `"v"`, size, tc.index)
			if tb.blocks[len(tb.blocks)-1].end() != size || (r.stats.badIndex.Load() == 1) == tc.ok {
				t.Errorf("fallback table: ends at %d (want %d), bad indexes %d", tb.blocks[len(tb.blocks)-1].end(), size, r.stats.badIndex.Load())
			}
		})
	}
}

// TestRangedReads reads shards and a big plain chunk through the FS, from
// `zarrfs serve` (manifest: versions known up front) and from a static
// origin (versions learned by a suffix request), and checks bytes and what
// crossed the network.
func TestRangedReads(t *testing.T) {
	dir := genShardStore(t)
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
			ranges := innerChunkRanges(t, data)
			before := x.origin.bytes.Load()
			h := x.open(t, "big/c/0/0")
			if _, ok := h.(*rangedHandle); !ok {
				t.Fatalf("open gave a %T, want a ranged handle", h)
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
			if moved > shardBlockBytes+idx+3*pageSize || moved < r.Length {
				t.Errorf("reading the index and one inner chunk moved %d bytes; the shard has %d, a block is at most %d", moved, len(data), shardBlockBytes)
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
				if _, ok := h.(*rangedHandle); ok != wantRanged {
					t.Fatalf("%s: open gave a %T, want ranged=%v", key, h, wantRanged)
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
		dir := genShardStore(t)
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
		if !x.fs.ranged.Stats().Unsupported {
			t.Error("ranged reads are still on after the origin ignored a range")
		}
	})
	t.Run("missing shard asked for once", func(t *testing.T) {
		dir := genShardStore(t)
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
		dir := genShardStore(t)
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
		data[plainBlockBytes+10] ^= 0xff
		if err := os.WriteFile(filepath.Join(dir, "plain/c/0"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		resp := &fuse.ReadResponse{Data: make([]byte, 0, 4096)}
		err = h.(fusefs.HandleReader).Read(context.Background(), &fuse.ReadRequest{Offset: plainBlockBytes, Size: 4096}, resp)
		if err == nil || !strings.Contains(err.Error(), "stale") {
			t.Fatalf("read of a block after the object changed: err = %v, want ESTALE", err)
		}
	})
}

// TestRangedPrefetch: a predicted shard reaches the cache as its blocks,
// through the planner's sink and through a feed, so a reader then finds
// every block cached.
func TestRangedPrefetch(t *testing.T) {
	dir := genShardStore(t)
	srv, err := serve.New(serve.Config{Dir: dir, NoAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	for _, via := range []string{"sink", "feed"} {
		t.Run(via, func(t *testing.T) {
			x := newRangedFixture(t, dir, srv)
			sink := rangedSink{inner: cacheSink{x.cache}, fs: x.fs}
			m := x.fs.current().Manifest
			size, version, ok := m.Lookup("big/c/1/0")
			if !ok {
				t.Fatal("manifest lacks big/c/1/0")
			}
			w := cache.Want{Key: "big/c/1/0", Version: version, Size: size}
			if via == "sink" {
				if res := sink.Prefetch(w, cache.ClassRun); res != cache.PrefetchQueued {
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
			for x.cache.Stats().RangeBytes < int64(len(data))-int64(len(innerChunkRanges(t, data))*16+4) && time.Now().Before(deadline) {
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
