package cache

import (
	"errors"
	"os"
	"testing"
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
