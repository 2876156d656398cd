package cache

// Flights: one fetch or revalidation in progress per entry id, and the Opens
// that wait for it (Cache.flights). A flight is started by an Open
// (startFlightLocked) or queued by the scheduler (sched.go), makes its
// request on a goroutine of its own (runFlight) on the cache's lifetime
// context, streams the object into a temp entry file (download) and hands
// the outcome to its waiters (finish), which puts the entry in place
// (placeLocked, cache.go). Locking as in cache.go: flight state is guarded
// by Cache.mu, and nothing here holds it during a request or a disk write.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// flight is one fetch or revalidation in progress and the Opens waiting for
// it. It is not a singleflight.Group call because the result is an open file
// each waiter must own a share of, and singleflight cannot say how many
// callers took a result (some give up before it arrives); counting waiters
// under Cache.mu can.
type flight struct {
	done chan struct{} // closed, under Cache.mu, once the outcome is set
	// staleGen is Cache.staleGen when the fetch began: an object fetched
	// before a MarkStale may be the old version and lands unchecked.
	staleGen uint64
	// waiters counts the Opens waiting; when the fetch ends, each is owed a
	// share of res.file and a pin of res.entry. Guarded by Cache.mu.
	waiters  int
	accesses int    // Opens that asked for it, for the eviction policy
	reuse    uint32 // the first one's reuse distance, for the eviction policy
	// recheck is the entry of an earlier run this flight revalidates with a
	// conditional request, or nil for a fetch.
	recheck *entry
	// Outcome: the fetched object, or unchanged (the entry on disk is
	// current: look it up again), or err.
	res       *fetched
	unchanged bool
	err       error

	// What it fetches: key, or rng of key at version (ranges only; a
	// whole-object fetch takes whatever version the origin has).
	id      string
	sum     uint64
	key     string
	rng     span
	version string

	// sched is the scheduler's part: priority, queue state, prefetch
	// bookkeeping, the Wants' Done callbacks (sched.go).
	sched flightSched
}

// fetched is a successfully fetched object.
type fetched struct {
	size     int64
	version  string
	f        *os.File    // the temp entry file, open; nil when held in memory
	file     *sharedFile // f, shared by the waiters
	dataOff  int64       // where the object starts in f
	mem      []byte
	tmpPath  string // where f lies until it is renamed into place or removed
	keepable bool   // f is a complete entry (header written) that may be put in place
	entry    *entry // the entry it became, pinned once per waiter; nil if not kept
}

// flightReader is a Reader over the object a finished flight fetched,
// one of the shares owed to its waiters.
func (c *Cache) flightReader(fl *flight) *Reader {
	res := fl.res
	r := &Reader{size: res.size, version: res.version, counters: &c.reads, mem: res.mem}
	if res.file != nil {
		r.file, r.dataOff = res.file, res.dataOff
	}
	if e := res.entry; e != nil {
		r.unpin = func() { c.unpin(e) }
	}
	return r
}

// giveUp withdraws an Open whose ctx ended from fl, and returns ctx.Err().
func (c *Cache) giveUp(ctx context.Context, fl *flight) error {
	if c.beforeGiveUp != nil {
		c.beforeGiveUp()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-fl.done:
		// The fetch ended while we gave up and counted us among its readers.
		if res := fl.res; res != nil {
			if res.file != nil {
				_ = res.file.release()
			}
			if res.entry != nil {
				c.unpinLocked(res.entry)
			}
		}
	default:
		fl.waiters--
	}
	return ctx.Err()
}

// startFlightLocked starts a demand fetch of key, or of rng of key at
// version (a revalidation of recheck, if not nil), for an Open.
func (c *Cache) startFlightLocked(id string, sum uint64, key, version string, rng span, reuse uint32, recheck *entry) *flight {
	fl := &flight{done: make(chan struct{}), recheck: recheck, reuse: reuse, id: id, sum: sum, key: key}
	fl.sched.prio = PriorityDemand
	if rng.ranged() {
		fl.rng, fl.version = rng, version
	}
	c.flights[id] = fl
	c.launchLocked(fl)
	return fl
}

// runFlight makes fl's request, on its own goroutine (launchLocked).
func (c *Cache) runFlight(fl *flight) {
	defer c.fetches.Done()
	id, sum, key := fl.id, fl.sum, fl.key
	memoryOK := func() bool { return c.mayUseMemory(fl) }
	switch {
	case fl.rng.ranged():
		get := c.metered(fl, c.rangeFetch(key, fl.version, fl.rng))
		res, _, err := c.download(key, fl.rng, get, get, memoryOK)
		c.finish(id, sum, key, fl, res, false, err)
		return
	case fl.recheck != nil:
		unchanged, res, err := c.revalidate(id, key, fl.recheck)
		if err != errRefetch {
			c.finish(id, sum, key, fl, res, unchanged, err)
			return
		}
	}
	res, _, err := c.download(key, span{}, c.metered(fl, c.plainFetch(key)), c.plainFetch(key), memoryOK)
	c.finish(id, sum, key, fl, res, false, err)
}

// errPrefetchDropped: a prefetch the disk could not take is dropped rather
// than held in memory; a reader that joined it fetches again. Its Wants'
// Done see ErrNotKept.
var errPrefetchDropped = fmt.Errorf("prefetch dropped: %w", ErrNotKept)

// mayUseMemory says whether fl may be served from memory when the disk
// fails: only if a reader waits for it (prefetches never fill RAM).
func (c *Cache) mayUseMemory(fl *flight) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !fl.unclaimedLocked()
}

// errRefetch tells a revalidation to fetch the object instead.
var errRefetch = errors.New("fetch instead of revalidating")

// revalidate asks the origin whether the entry e of an earlier run is still
// current, after checking that it is sound: a damaged or vanished entry is
// fetched anew (errRefetch) rather than revalidated and then refetched.
func (c *Cache) revalidate(id, key string, e *entry) (unchanged bool, res *fetched, err error) {
	c.mu.Lock()
	if c.index[id] != e {
		c.mu.Unlock()
		return false, nil, errRefetch
	}
	f, err := os.Open(c.entryPath(id))
	if err != nil {
		c.dropCorruptLocked(e, err)
		c.mu.Unlock()
		return false, nil, errRefetch
	}
	e.pins++
	c.mu.Unlock()
	_, verr := verifyEntry(f, e, c.nsHash)
	f.Close()
	c.mu.Lock()
	c.unpinLocked(e)
	if verr != nil {
		c.dropCorruptLocked(e, verr)
	}
	c.mu.Unlock()
	if verr != nil {
		return false, nil, errRefetch
	}

	res, notModified, err := c.download(key, span{}, c.metered(nil, func(w io.Writer) (string, bool, error) {
		return c.src.FetchIfChanged(c.ctx, key, e.version, w)
	}), c.plainFetch(key), nil)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err != nil:
		return false, nil, err
	case notModified:
		c.stats.Revalidations++
		e.unchecked = false
		return true, nil, nil
	}
	c.stats.Changed++
	return false, res, nil
}

// getFunc runs one request to the Source, writing the object to w; changed
// is false when a conditional request found the entry current.
type getFunc func(w io.Writer) (version string, changed bool, err error)

func (c *Cache) plainFetch(key string) getFunc {
	return func(w io.Writer) (string, bool, error) {
		v, err := c.src.Fetch(c.ctx, key, w)
		return v, true, err
	}
}

// download runs get, which fetches rng of key (zero: the whole object),
// into a temp entry file, or into memory when the disk will not take it and
// memoryOK (nil = always) allows; else it fails with errPrefetchDropped.
// When the disk fails mid-write, what was written is incomplete and retry
// fetches it again into memory.
func (c *Cache) download(key string, rng span, get, retry getFunc, memoryOK func() bool) (res *fetched, notModified bool, err error) {
	what := rng.describe(key)
	toMemory := func(get getFunc) (*fetched, bool, error) {
		if memoryOK != nil && !memoryOK() {
			return nil, false, fmt.Errorf("fetch %s: %w", what, errPrefetchDropped)
		}
		return c.downloadToMemory(what, get)
	}
	if len(key) > maxKeyLen {
		return toMemory(get)
	}
	f, err := c.createTemp(c.tmpDir, "fetch-*")
	if err != nil {
		c.noteWriteError(err, 0)
		return toMemory(get)
	}
	w := &entryWriter{f: f, rng: rng, off: headerLenOf(rng, len(key))}
	c.countFetch()
	version, changed, err := get(w)
	if err == nil && w.err != nil {
		err = w.err // a Source that dropped our write error
	}
	if err != nil || !changed {
		_ = f.Close()
		_ = os.Remove(f.Name())
		switch {
		case err == nil:
			return nil, true, nil
		case w.err == nil:
			return nil, false, c.fetchError(what, err)
		}
		// What was written is incomplete: fetch it again, into memory.
		c.noteWriteError(w.err, w.off+w.n)
		return toMemory(retry)
	}
	c.countNetworkBytes(w.n)
	res = &fetched{size: w.n, version: version, f: f, dataOff: w.off, tmpPath: f.Name(), keepable: true}
	if err := w.finish(c.nsHash, key, version); err != nil {
		// The data is intact, so serve it; only the entry is unusable.
		c.noteWriteError(err, 0)
		res.keepable = false
	}
	return res, false, nil
}

// downloadToMemory runs get into a buffer; what names the object (or range)
// in errors.
func (c *Cache) downloadToMemory(what string, get getFunc) (*fetched, bool, error) {
	var buf bytes.Buffer
	c.countFetch()
	version, changed, err := get(&buf)
	switch {
	case err != nil:
		return nil, false, c.fetchError(what, err)
	case !changed:
		return nil, true, nil
	}
	c.countNetworkBytes(int64(buf.Len()))
	return &fetched{size: int64(buf.Len()), version: version, mem: buf.Bytes()}, false, nil
}

func (c *Cache) countFetch() {
	c.mu.Lock()
	c.stats.Fetches++
	c.mu.Unlock()
}

func (c *Cache) countNetworkBytes(n int64) {
	c.mu.Lock()
	c.stats.BytesFromNetwork += n
	c.mu.Unlock()
}

// fetchError wraps a failed request for what (a quoted key, or a range of
// one: span.describe).
func (c *Cache) fetchError(what string, err error) error {
	if c.ctx.Err() != nil {
		// Reported as ErrClosed, not as a cancellation, which callers take
		// for their own request being interrupted.
		return fmt.Errorf("fetch %s: %w", what, ErrClosed)
	}
	return fmt.Errorf("fetch %s: %w", what, err)
}

// finish puts a fetched object in place (or not) and hands the outcome to
// the waiting Opens.
func (c *Cache) finish(id string, sum uint64, key string, fl *flight, res *fetched, unchanged bool, err error) {
	free, freeKnown := int64(0), false
	if res != nil && res.keepable && c.minFree > 0 {
		free, freeKnown = c.freeSpace()
	}
	c.mu.Lock()
	delete(c.flights, id)
	c.flightEndedLocked(fl, res, err)
	switch {
	case err != nil:
		if errors.Is(err, fs.ErrNotExist) {
			c.notFound.Add(key, struct{}{})
			if old := c.index[id]; old != nil {
				c.removeLocked(old) // the object is gone from the origin
			}
		}
	case res != nil:
		c.notFound.Remove(key)
		c.placeLocked(id, sum, key, fl, res, free, freeKnown)
		if res.f != nil {
			if fl.waiters == 0 {
				_ = res.f.Close()
			} else {
				res.file = newSharedFile(res.f, fl.waiters)
			}
		}
	}
	if res != nil && res.tmpPath != "" {
		// Not kept: its Readers hold the open file. Removed before the
		// waiters return, so no temp file outlives its fetch.
		_ = os.Remove(res.tmpPath)
		res.tmpPath = ""
	}
	fl.res, fl.unchanged, fl.err = res, unchanged, err
	close(fl.done)
	calls := fl.doneCallsLocked()
	c.mu.Unlock()
	runDones(calls)
}
