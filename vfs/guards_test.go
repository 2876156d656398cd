package vfs

// Tests of the read path's checks against an origin or a cache that does
// not deliver what the block table says: each fails with its check removed.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/internal/storetest"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/serve"
	"github.com/zarrfs/zarrfs/vfs/blocks"
	"github.com/zarrfs/zarrfs/vfs/store"
	"github.com/zarrfs/zarrfs/zarr"
)

// readRange reads [at, at+n) of h in one ReadAt.
func readRange(h Handle, at, n int64) ([]byte, error) {
	b := make([]byte, n)
	m, err := h.ReadAt(context.Background(), b, at)
	return b[:m], err
}

// TestShortBlockReadFails: a block whose cache file was truncated under an
// open handle (by something outside zarrfs: the entry was verified when
// opened) makes the read fail, rather than return a buffer with a hole in
// it.
func TestShortBlockReadFails(t *testing.T) {
	dir := shardStore(t)
	x := newCoreFixture(t, dir, &switchOrigin{dir: dir})
	data, err := os.ReadFile(filepath.Join(dir, "big", "c", "0", "0"))
	if err != nil {
		t.Fatal(err)
	}
	h := x.open(t, x.lookup(t, "big/c/0/0"))
	r := storetest.InnerChunkRanges(t, data)[9]
	if b, err := readRange(h, r.Offset, r.Length); err != nil || !bytes.Equal(b, data[r.Offset:r.Offset+r.Length]) {
		t.Fatalf("inner chunk 9: %v", err)
	}
	// The handle keeps the block's reader open; its file loses its second half.
	x.truncateEntries(t)
	b, err := readRange(h, r.Offset, r.Length)
	if err == nil {
		t.Fatalf("reading a block whose cache file was truncated: %d bytes (equal to the origin's: %v), no error", len(b), bytes.Equal(b, data[r.Offset:r.Offset+r.Length]))
	}
	if len(b) != 0 {
		t.Errorf("a failed read returned %d bytes", len(b))
	}
}

// TestReadWholeRefusesAnotherObject: a shard opened by blocks whose origin
// turns out to ignore ranges is read whole, at the handle's version. When
// the whole object the origin sends is not that version (another size and
// no ETag, or another ETag), the read fails with ErrStale rather than
// serve its bytes at the offsets of the handle's table.
func TestReadWholeRefusesAnotherObject(t *testing.T) {
	for _, tc := range []struct {
		name   string
		noETag bool
		empty  []int // inner chunks left out of the new shard: another size
	}{
		{"another size, no ETag", true, []int{3}},
		{"same size, another ETag", false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := shardStore(t)
			o := &switchOrigin{dir: dir}
			x := newCoreFixture(t, dir, o)
			p := filepath.Join(dir, "big", "c", "0", "0")
			old, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			ranges := storetest.InnerChunkRanges(t, old)
			h := x.open(t, x.lookup(t, "big/c/0/0"))
			r := ranges[9]
			if b, err := readRange(h, r.Offset, r.Length); err != nil || !bytes.Equal(b, old[r.Offset:r.Offset+r.Length]) {
				t.Fatalf("inner chunk 9: %v", err)
			}

			newShard := writeShard(t, p, 7, tc.empty...)
			if (len(newShard) != len(old)) != (len(tc.empty) > 0) {
				t.Fatalf("new shard of %d bytes, old %d", len(newShard), len(old))
			}
			o.noRanges.Store(true)
			o.noETag.Store(tc.noETag)

			r = ranges[10] // another block
			b, err := readRange(h, r.Offset, r.Length)
			if !errors.Is(err, ErrStale) {
				t.Errorf("read after the change, from an origin that ignores ranges: %d bytes (the new version's: %v), err %v; want ErrStale",
					len(b), bytes.Equal(b, newShard[r.Offset:min(int64(len(newShard)), r.Offset+r.Length)]), err)
			}
			if !x.fs.RangedStats().Unsupported {
				t.Error("ranged reads were not turned off: the test did not reach the whole read")
			}
		})
	}
}

// noRangesHandler passes requests to h without Range and If-Match: an
// origin behind a proxy that ignores both.
func noRangesHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Range")
		r.Header.Del("If-Match")
		h.ServeHTTP(w, r)
	})
}

// TestWholeOpenRefusesAnotherVersion: a chunk whose version the manifest
// gives, read whole (the origin ignores ranges) and too big for the cache
// to keep, is fetched again by each open. Once the origin holds another
// version of the same size, an open fails with ErrStale instead of serving
// the new bytes under the File of the old: the kernel may hold pages of
// the old version for that inode, and would mix them with the new.
func TestWholeOpenRefusesAnotherVersion(t *testing.T) {
	dir := shardStore(t)
	srv, err := serve.New(serve.Config{Dir: dir, NoAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	x := newCoreFixtureBudget(t, dir, noRangesHandler(srv), 1<<20)
	p := filepath.Join(dir, "plain", "c", "0")
	old, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	f := x.lookup(t, "plain/c/0")
	if f.Version() == "" {
		t.Fatal("no version from the manifest")
	}
	h1 := x.open(t, f)
	if b, err := readRange(h1, 0, 128<<10); err != nil || !bytes.Equal(b, old[:128<<10]) {
		t.Fatalf("first read: %v", err)
	}
	if !x.fs.RangedStats().Unsupported {
		t.Fatal("ranged reads were not turned off")
	}

	newPlain := bytes.Clone(old)
	for i := range newPlain {
		newPlain[i] ^= 0x5a
	}
	rewriteInPlace(t, p, newPlain)

	h2, err := f.Open(context.Background())
	if err == nil {
		b, rerr := readRange(h2, 128<<10, 128<<10)
		_ = h2.Release()
		t.Fatalf("open of the File of the old version after the change: a handle reading %d bytes (the new version's: %v, err %v); want ErrStale",
			len(b), bytes.Equal(b, newPlain[128<<10:256<<10]), rerr)
	}
	if !errors.Is(err, ErrStale) {
		t.Fatalf("open after the change: %v, want ErrStale", err)
	}
	// The next lookup gives the new version, read whole.
	nf := x.lookup(t, "plain/c/0")
	if nf == f || nf.Version() == f.Version() {
		t.Fatalf("lookup after the change: the same File or version (%s)", nf.Version())
	}
	if b, err := readAll(x.open(t, nf), nf.Size()); err != nil || !bytes.Equal(b, newPlain) {
		t.Fatalf("read of the new version: %d bytes, %v", len(b), err)
	}
}

// suffixOrigin answers suffix requests with a fixed piece and body.
type suffixOrigin struct {
	storetest.DirOrigin
	piece    remote.Piece
	body     []byte
	requests atomic.Int64
}

func (o *suffixOrigin) FetchSuffix(ctx context.Context, key, version string, n int64, w io.Writer) (remote.Piece, error) {
	o.requests.Add(1)
	_, err := w.Write(o.body)
	return o.piece, err
}

// TestLearnSkipsIndexAtStart: a shard whose index is at its start cannot
// have its size learned from its end: no request is made, it is read whole.
func TestLearnSkipsIndexAtStart(t *testing.T) {
	meta := storetest.ShardArrayMeta()
	codec := meta["codecs"].([]any)[0].(map[string]any)["configuration"].(map[string]any)
	codec["index_location"] = "start"
	_, arr, err := zarr.ParseV3Node(storetest.MustJSON(t, meta))
	if err != nil {
		t.Fatal(err)
	}
	if !arr.Shard.IndexAtStart {
		t.Fatal("the index is not at the start")
	}
	idxLen := blocks.ShardIndexSize(arr)
	size := 16*int64(storetest.InnerChunkBytes) + idxLen
	n := idxLen + blocks.PageSize
	ctx, cancel := context.WithCancel(context.Background())
	o := &suffixOrigin{piece: remote.Piece{Offset: size - n, Length: n, Total: size, ETag: `"v"`}, body: make([]byte, n)}
	r := newRangedObjects(ctx, nil, o, slog.New(slog.DiscardHandler))
	t.Cleanup(func() {
		cancel()
		r.close()
	})
	if _, ok, err := r.learn(ctx, arr, "big/c/0/0"); ok || err != nil || o.requests.Load() != 0 {
		t.Fatalf("learn of a shard with its index at the start: ok %v, err %v, %d requests; want not ok and no request", ok, err, o.requests.Load())
	}
}

// TestLearnRejectsUnusablePiece: a suffix request that cannot tell a
// shard's version, or whose bytes are not the shard's end, teaches nothing:
// the shard is then read whole (ok false), never by a table of the wrong
// bytes or of no version.
func TestLearnRejectsUnusablePiece(t *testing.T) {
	_, arr, err := zarr.ParseV3Node(storetest.MustJSON(t, storetest.ShardArrayMeta()))
	if err != nil {
		t.Fatal(err)
	}
	idxLen := blocks.ShardIndexSize(arr)
	size := 16*int64(storetest.InnerChunkBytes) + idxLen
	n := idxLen + blocks.PageSize
	end := remote.Piece{Offset: size - n, Length: n, Total: size, ETag: `"v"`}
	for _, tc := range []struct {
		name  string
		piece remote.Piece
		body  int64
		ok    bool
	}{
		{"the end of the shard", end, n, true},
		{"no ETag", remote.Piece{Offset: size - n, Length: n, Total: size}, n, false},
		{"smaller than its index", remote.Piece{Offset: 0, Length: idxLen - 16, Total: idxLen - 16, ETag: `"v"`}, idxLen - 16, false},
		{"not the end", remote.Piece{Offset: 0, Length: n, Total: size, ETag: `"v"`}, n, false},
		{"body shorter than the piece", end, n - 100, false},
		// The origin sent less than the index asked for, correctly labelled.
		{"suffix shorter than asked", remote.Piece{Offset: size - idxLen + 8, Length: idxLen - 8, Total: size, ETag: `"v"`}, idxLen - 8, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			o := &suffixOrigin{piece: tc.piece, body: make([]byte, tc.body)}
			r := newRangedObjects(ctx, nil, o, slog.New(slog.DiscardHandler))
			t.Cleanup(func() {
				cancel()
				r.close()
			})
			tb, ok, err := r.learn(ctx, arr, "big/c/0/0")
			if err != nil || ok != tc.ok {
				t.Fatalf("learn: ok %v, err %v; want ok %v", ok, err, tc.ok)
			}
			if _, learned := r.learned.Peek("big/c/0/0"); learned != tc.ok {
				t.Errorf("remembered: %v, want %v", learned, tc.ok)
			}
			if ok && (tb.Size != size || tb.Version != `"v"`) {
				t.Errorf("table of %d bytes at version %s", tb.Size, tb.Version)
			}
		})
	}
}

// TestLearnPlainRejectsUnusablePiece: the one-byte suffix request that
// finds the size and version of an object a manifest is out of date for
// teaches nothing when it cannot tell the version or the size. A File of
// no version would be read with Open, which takes any cached entry: the
// old version's too.
func TestLearnPlainRejectsUnusablePiece(t *testing.T) {
	const size = 1000
	for _, tc := range []struct {
		name  string
		piece remote.Piece
		ok    bool
	}{
		{"the last byte", remote.Piece{Offset: size - 1, Length: 1, Total: size, ETag: `"v"`}, true},
		{"no ETag", remote.Piece{Offset: size - 1, Length: 1, Total: size}, false},
		{"not the end", remote.Piece{Offset: 0, Length: 1, Total: size, ETag: `"v"`}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			o := &suffixOrigin{piece: tc.piece, body: []byte{1}}
			r := newRangedObjects(ctx, nil, o, slog.New(slog.DiscardHandler))
			t.Cleanup(func() {
				cancel()
				r.close()
			})
			tb, ok, err := r.learnPlain(ctx, "plain/c/0")
			if err != nil || ok != tc.ok {
				t.Fatalf("learnPlain: ok %v, err %v; want ok %v", ok, err, tc.ok)
			}
			if ok && (tb.Size != size || tb.Version != `"v"`) {
				t.Errorf("learned %d bytes at version %s", tb.Size, tb.Version)
			}
		})
	}
}

// truncateEntries halves every entry file of the fixture's cache, as
// something outside zarrfs might; it returns how many it truncated.
func (x *coreFixture) truncateEntries(t *testing.T) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(x.cacheDir, "entries"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n++
		return os.Truncate(p, fi.Size()/2)
	})
	if err != nil || n == 0 {
		t.Fatalf("truncating the cache's entries: %v (%d files)", err, n)
	}
}

// TestShortWholeReadFails: a chunk read whole whose cache file was
// truncated under the open handle makes the read fail, rather than answer
// a short read, which the kernel takes for the end of the file.
func TestShortWholeReadFails(t *testing.T) {
	dir := shardStore(t)
	x := newCoreFixture(t, dir, &switchOrigin{dir: dir})
	data, err := os.ReadFile(filepath.Join(dir, "plain", "c", "0"))
	if err != nil {
		t.Fatal(err)
	}
	h := x.open(t, x.lookup(t, "plain/c/0")) // no version (static origin): read whole
	if ReadsByBlocks(h) {
		t.Fatal("the plain chunk of a static origin is read by blocks")
	}
	if b, err := readRange(h, 0, 128<<10); err != nil || !bytes.Equal(b, data[:128<<10]) {
		t.Fatalf("first read: %v", err)
	}
	x.truncateEntries(t)
	at := int64(len(data)) * 3 / 4
	if b, err := readRange(h, at, 128<<10); err == nil {
		t.Fatalf("read past the truncation of the cache file: %d bytes, no error", len(b))
	}
}

// TestWholeOpenRefusesAnotherSize: a chunk of no known version (a static
// origin) that changed size on the origin is revalidated by the next open
// after the store was marked stale; that open fails with ErrStale, since
// the kernel holds the old size, and the next lookup has the new size.
func TestWholeOpenRefusesAnotherSize(t *testing.T) {
	dir := shardStore(t)
	x := newCoreFixture(t, dir, &switchOrigin{dir: dir})
	p := filepath.Join(dir, "plain", "c", "0")
	old, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	f := x.lookup(t, "plain/c/0")
	h := x.open(t, f)
	if b, err := readAll(h, f.Size()); err != nil || !bytes.Equal(b, old) {
		t.Fatalf("first read: %v", err)
	}
	longer := append(bytes.Clone(old), "more"...)
	rewriteInPlace(t, p, longer)
	x.cache.MarkStale() // what a refresh that saw the store change does

	if h2, err := f.Open(context.Background()); !errors.Is(err, ErrStale) {
		var n int64
		if h2 != nil {
			b, _ := readAll(h2, int64(len(longer)))
			n = int64(len(b))
			_ = h2.Release()
		}
		t.Fatalf("open after the object changed size: err %v (a handle reading %d bytes); want ErrStale", err, n)
	}
	nf := x.lookup(t, "plain/c/0")
	if b, err := readAll(x.open(t, nf), nf.Size()); nf.Size() != int64(len(longer)) || err != nil || !bytes.Equal(b, longer) {
		t.Fatalf("after the change: size %d, read %d bytes (%v); want the new %d", nf.Size(), len(b), err, len(longer))
	}
}

// TestReadAfterReleasePinsNothing: a read that overlaps the handle's
// release (the kernel may send both at once) fails with ErrHandleClosed
// and leaves no cache entry pinned, by blocks and read whole.
func TestReadAfterReleasePinsNothing(t *testing.T) {
	for _, whole := range []bool{false, true} {
		t.Run(map[bool]string{false: "by blocks", true: "whole (origin ignores ranges)"}[whole], func(t *testing.T) {
			dir := shardStore(t)
			o := &switchOrigin{dir: dir}
			x := newCoreFixture(t, dir, o)
			f := x.lookup(t, "big/c/0/0")
			h, err := f.Open(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			o.noRanges.Store(whole)
			if err := h.Release(); err != nil {
				t.Fatal(err)
			}
			if b, err := readRange(h, 0, 4096); !errors.Is(err, ErrHandleClosed) {
				t.Errorf("read after release: %d bytes, err %v; want ErrHandleClosed", len(b), err)
			}
			if whole && !x.fs.RangedStats().Unsupported {
				t.Error("the read did not find that the origin ignores ranges")
			}
			if n := x.cache.Stats().Pinned; n != 0 {
				t.Errorf("%d cache entries pinned after the handle was released", n)
			}
		})
	}
}

// TestDocumentReadPastTheEnd: a read of a metadata document past its end
// reads nothing, as a read past the end of any file does.
func TestDocumentReadPastTheEnd(t *testing.T) {
	dir := shardStore(t)
	x := newCoreFixture(t, dir, &switchOrigin{dir: dir})
	f := x.lookup(t, "big/zarr.json")
	h := x.open(t, f)
	if b, err := readRange(h, f.Size()+10, 100); len(b) != 0 || err != nil {
		t.Fatalf("read past the end of a document: %d bytes, %v", len(b), err)
	}
}

// listOrigin is a static origin with directory listings, for listing tests.
type listOrigin struct{ storetest.DirOrigin }

func (o *listOrigin) FetchSuffix(ctx context.Context, key, version string, n int64, w io.Writer) (remote.Piece, error) {
	return remote.Piece{}, remote.ErrRangesUnsupported
}

// TestRemovedChunkDirectoryListsEmpty: a chunk directory the origin no
// longer has (zarr deletes chunks equal to the fill value, and with them a
// directory that empties) lists nothing; only an origin failing to answer
// is served the last listing.
func TestRemovedChunkDirectoryListsEmpty(t *testing.T) {
	dir := t.TempDir()
	zarray := `{"zarr_format": 2, "shape": [2, 2], "chunks": [1, 1], "dtype": "|u1", "compressor": null, "fill_value": 0, "order": "C", "filters": null, "dimension_separator": "/"}`
	storetest.WriteReplacing(t, filepath.Join(dir, ".zgroup"), `{"zarr_format": 2}`)
	storetest.WriteReplacing(t, filepath.Join(dir, "a", ".zarray"), zarray)
	for _, k := range []string{"0/0", "0/1", "1/0", "1/1"} {
		storetest.WriteReplacing(t, filepath.Join(dir, "a", filepath.FromSlash(k)), "x")
	}
	o := &listOrigin{storetest.DirOrigin{Root: dir, Listing: true}}
	st, err := store.Discover(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	f := New(st, o, nil, Options{Logger: slog.New(slog.DiscardHandler), AttrValid: time.Millisecond})
	t.Cleanup(f.Close)
	lookupDir := func(p string) *Dir {
		var n Node = f.Root()
		for _, name := range strings.Split(p, "/") {
			if n, err = n.(*Dir).Lookup(context.Background(), name); err != nil {
				t.Fatalf("lookup %s: %v", p, err)
			}
		}
		return n.(*Dir)
	}
	row := lookupDir("a/1")
	names := func() []string {
		entries, err := row.ReadDir(context.Background())
		if err != nil {
			t.Fatalf("list a/1: %v", err)
		}
		var out []string
		for _, e := range entries {
			out = append(out, e.Name)
		}
		return out
	}
	if got := names(); len(got) != 2 {
		t.Fatalf("a/1 lists %v, want 0 and 1", got)
	}
	if err := os.RemoveAll(filepath.Join(dir, "a", "1")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // past the listing's validity
	if got := names(); len(got) != 0 {
		t.Errorf("a/1, removed on the origin, lists %v", got)
	}
}
