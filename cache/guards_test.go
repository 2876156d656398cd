package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// TestRevalidateSkipsAnEntryNoLongerIndexed: a revalidation runs on its own
// goroutine after the Open that started it, and by then its entry may be
// gone from the index (evicted, or removed as damaged). Its file may still
// be there (an eviction whose unlink failed leaves it, with a warning), and
// would verify: the revalidation must not ask the origin about that entry
// nor call it current, which would have the Open look it up again, find
// nothing and fetch anyway. It fetches anew (errRefetch) with no
// conditional request.
func TestRevalidateSkipsAnEntryNoLongerIndexed(t *testing.T) {
	src := newMemSource()
	data := src.put("a", 1000)
	opts := Options{Dir: t.TempDir(), MaxBytes: 100_000}
	c := newCacheIn(t, opts, src)
	openAndRead(t, c, "a", data)
	c.Close()

	c = newCacheIn(t, opts, src) // the entry is of an earlier run: unchecked
	id, _ := entryIDOf(c.nsHash, "a", span{})
	c.mu.Lock()
	e := c.index[id]
	if e == nil || !e.unchecked {
		c.mu.Unlock()
		t.Fatalf("entry of the earlier run: %+v, want one to revalidate", e)
	}
	// Forgotten by the index, its file left in place.
	c.policy.remove(e)
	delete(c.index, id)
	c.mu.Unlock()
	if _, err := os.Stat(c.entryPath(id)); err != nil {
		t.Fatal(err)
	}

	unchanged, res, err := c.revalidate(id, "a", e)
	if !errors.Is(err, errRefetch) || unchanged || res != nil {
		t.Errorf("revalidate of an entry no longer indexed: unchanged %v, fetched %v, err %v; want errRefetch", unchanged, res != nil, err)
	}
	if n := src.condCallsFor("a"); n != 0 {
		t.Errorf("%d conditional requests for an entry no longer indexed, want none", n)
	}
	openAndRead(t, c, "a", data)
}

// TestTruncatedEntryReadFails: an entry file truncated under an open Reader
// (by something outside zarrfs: it was verified when opened) reads with an
// error that is not io.EOF, which callers take for the end of the object
// and would serve a short object as complete.
func TestTruncatedEntryReadFails(t *testing.T) {
	src := newMemSource()
	data := src.put("a", 10_000)
	c := newTestCache(t, 100_000, src)
	openAndRead(t, c, "a", data)
	r, err := c.Open(context.Background(), "a") // a hit: a Reader over the entry file
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fi, err := os.Stat(c.pathOf("a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(c.pathOf("a"), fi.Size()-5000); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10_000)
	n, err := r.ReadAt(buf, 0)
	if err == nil || errors.Is(err, io.EOF) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadAt of a truncated entry: %d bytes, err %v; want io.ErrUnexpectedEOF and not io.EOF", n, err)
	}
}

// ignoringSource is a memSource whose Fetch ignores write errors, as a
// careless Source might: the cache must notice on its own.
type ignoringSource struct{ *memSource }

func (s ignoringSource) Fetch(ctx context.Context, key string, w io.Writer) (string, error) {
	s.mu.Lock()
	obj := s.objects[key]
	s.calls[key]++
	s.mu.Unlock()
	for data := obj.data; len(data) > 0; data = data[min(len(data), 7000):] {
		_, _ = w.Write(data[:min(len(data), 7000)])
	}
	return obj.version, nil
}

// TestSourceIgnoringWriteErrors: when the disk fails under a fetch whose
// Source drops the write error, the object is fetched again into memory
// and served whole, never as the part that reached the disk.
func TestSourceIgnoringWriteErrors(t *testing.T) {
	src := ignoringSource{newMemSource()}
	data := src.put("a", 20_000)
	c := newTestCache(t, 100_000, src)
	c.createTemp = readOnlyTemp // every write fails
	r, err := c.Open(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := readAll(t, r); !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, want the object's %d", len(got), len(data))
	}
}

// countingRangeSource counts the bytes the cache accepts from FetchRange.
type countingRangeSource struct {
	*memSource
	accepted atomic.Int64
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func (s *countingRangeSource) FetchRange(ctx context.Context, key, version string, off, n int64, w io.Writer) error {
	return s.memSource.FetchRange(ctx, key, version, off, n, countingWriter{w, &s.accepted})
}

// TestRangeSourceSendingTooMuchIsStopped: a range Source that sends far
// more than the range (a misbehaving origin) is refused at the range's
// end: nothing past it is written to disk, and the fetch fails with
// ErrRangeLength.
func TestRangeSourceSendingTooMuchIsStopped(t *testing.T) {
	src := &countingRangeSource{memSource: newMemSource()}
	src.put("a", 1_000_000)
	src.rangeExtra = 500_000
	c := newTestCache(t, 10_000_000, src)
	_, err := c.OpenRange(context.Background(), "a", src.versionOf("a"), 0, 1000)
	if !errors.Is(err, ErrRangeLength) {
		t.Fatalf("OpenRange of a Source sending 500,000 bytes too many: %v, want ErrRangeLength", err)
	}
	if n := src.accepted.Load(); n > 1000 {
		t.Errorf("the cache took %d bytes of a 1,000-byte range", n)
	}
}

// TestDropCorruptSparesAReplacement: an Open that found its entry damaged
// after verifying it outside the lock drops that entry only if it is still
// the one indexed: a newer version fetched meanwhile under the same id
// stays, with its file.
func TestDropCorruptSparesAReplacement(t *testing.T) {
	src := newMemSource()
	data := src.put("a", 1000)
	// Not closed at the end if the drop never returns: Close would wait
	// for the lock it holds.
	c, err := New(Options{Dir: t.TempDir(), MaxBytes: 100_000, Namespace: testNamespace}, src)
	if err != nil {
		t.Fatal(err)
	}
	openAndRead(t, c, "a", data)
	id, _ := entryIDOf(c.nsHash, "a", span{})
	c.mu.Lock()
	old := c.index[id]
	c.mu.Unlock()

	data = src.put("a", 2000) // a new version, fetched by an OpenVersion
	r, err := c.OpenVersion(context.Background(), "a", src.versionOf("a"))
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	calls := src.callsFor("a")

	dropped := make(chan struct{})
	go func() {
		defer close(dropped)
		c.mu.Lock()
		defer c.mu.Unlock()
		c.dropCorruptLocked(old, errors.New("test: the old entry's file is damaged"))
	}()
	select {
	case <-dropped:
	case <-time.After(10 * time.Second):
		t.Fatal("dropping the replaced entry did not return within 10s")
	}
	defer c.Close()
	r, err = c.OpenVersion(context.Background(), "a", src.versionOf("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := readAll(t, r); !bytes.Equal(got, data) {
		t.Fatal("wrong data")
	}
	if n := src.callsFor("a"); n != calls {
		t.Errorf("the new version was fetched again (%d requests, want %d): dropping the old entry dropped it", n, calls)
	}
	if s := c.Stats(); s.CorruptEntries != 0 {
		t.Errorf("%d corrupt entries counted for an entry already replaced", s.CorruptEntries)
	}
}
