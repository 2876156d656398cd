package cache

// The Cache, its entries, the open path and the placement of fetched
// objects. The files of the package follow its types: flight.go the fetches
// in progress, sched.go the scheduler (priorities, queues, the link
// measurement, Prefetch), sched_feed.go the Feeds, policy.go eviction,
// entry.go the on-disk format, recover.go the scan at start, reader.go
// Readers, ranges.go byte ranges, dir.go the directory lock.
//
// Locking. Cache.mu is the only mutex of a Cache. It guards the index, the
// eviction policy, the pins, the not-found memory, the in-flight fetches,
// the counters, and the scheduler's state wherever it lives (Cache.sched,
// flight.sched, entry.unread, the Feeds). Nothing else is acquired while it
// is held, except the Logger's own lock (a leaf: logging never calls back
// into the cache). Reader byte counters, shared-file references and the
// scheduler's byte and stall counters are atomics, updated without mu.
//
// mu also keeps the index and the entries directory in agreement: every
// rename into Dir/entries, every unlink from it and every open of an
// indexed entry happens under mu, so the file at an indexed entry's path is
// that entry (or damage that verification catches), and an unlink never hits
// a file a concurrent fetch has just put in place. A fetch's temp file is
// also removed under mu, before its waiters return. The slow parts happen
// without it: Source requests, temp-file writes, verification reads, statfs.
//
// Callers' code (Feed functions, Want.Done callbacks) is never called with
// mu held: Done calls are collected under mu and made after it is released,
// so a callback may call back into the Cache.
//
// New's directory scan uses a mutex of its own, local to the scan, before
// the Cache exists.

import (
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Source is where missing entries come from (remote.Client satisfies it).
// An object missing on the origin is an error for which
// errors.Is(err, fs.ErrNotExist) holds. If a call fails after writing to w,
// the caller discards what was written.
type Source interface {
	// Fetch writes the whole object to w and returns its version (strong
	// ETag or "").
	Fetch(ctx context.Context, key string, w io.Writer) (version string, err error)
	// FetchIfChanged is Fetch with If-None-Match: version. When the origin
	// answers 304 it writes nothing and returns (version, false, nil).
	FetchIfChanged(ctx context.Context, key, version string, w io.Writer) (newVersion string, changed bool, err error)
}

// ErrClosed is returned by Open after Close, and by Opens whose fetch Close
// cancelled.
var ErrClosed = errors.New("cache is closed")

// Options configure a Cache.
type Options struct {
	Dir string // cache directory; created (0700) if missing
	// MaxBytes is the budget for the entry files on disk, headers
	// included. Entries stay within it at all times; only the temp files of
	// fetches in flight come on top.
	MaxBytes int64
	// MinFreeBytes is a floor on the free space of Dir's file system,
	// checked before each entry is put in place: the cache shrinks, or does
	// not keep the entry, to leave this much free. 0 sets no floor.
	MinFreeBytes int64
	Namespace    string       // identifies the origin (its URL); entries are keyed by (Namespace, key)
	MaxNotFound  int          // how many "missing on origin" keys to remember; 0 means 100000
	Logger       *slog.Logger // nil = discard

	// Test hooks, set before the directory is scanned.
	newPolicy func(maxBytes int64) policy
	statfs    func(dir string) (int64, error)
}

const defaultMaxNotFound = 100_000

// The cache owns these names in Options.Dir (and lockFileName) and nothing
// else in it.
const (
	entriesSubdir = "entries"
	tmpSubdir     = "tmp"
)

// Stats are counters since New plus the current state of the cache.
type Stats struct {
	Hits             int64 // Opens (and OpenRanges) served from an entry on disk (after a 304 too)
	Misses           int64 // Opens (and OpenRanges) that waited for a fetch
	NotFoundHits     int64 // Opens answered from the memory of keys missing on the origin
	Revalidations    int64 // conditional requests answered 304: an entry of an earlier run kept
	Changed          int64 // conditional requests answered with a new version: the entry replaced
	Fetches          int64 // requests to the Source (Fetch, FetchIfChanged and FetchRange)
	Recovered        int64 // valid entries found on disk by New
	Reused           int64 // Hits on entries written by an earlier run
	BytesFromCache   int64 // bytes returned by Readers of entries already on disk
	BytesFromNetwork int64 // bytes the Source delivered
	BytesServed      int64 // all bytes returned by Reader.ReadAt
	Evictions        int64 // entries removed to stay within the budget or the free-space floor
	CorruptEntries   int64 // damaged entries found (by New or on Open), removed and fetched again
	WriteErrors      int64 // fetches the disk could not take, served from memory instead
	Entries          int   // entries on disk now, ranges included
	Bytes            int64 // bytes of entry files on disk now, ranges included
	RangeEntries     int   // entries on disk now that hold a byte range of an object
	RangeBytes       int64 // bytes of those entry files
	Pinned           int   // entries held by open Readers now
	InFlight         int   // fetches in progress now
}

// Cache is an on-disk cache of one origin's objects. It is safe for
// concurrent use.
type Cache struct {
	staleGen   uint64 // MarkStale calls so far; guarded by mu
	src        Source
	log        *slog.Logger
	maxBytes   int64
	minFree    int64
	nsHash     [32]byte
	dir        string
	entriesDir string
	tmpDir     string
	lock       *dirLock

	// createTemp makes the file a fetch is written to. Tests replace it to
	// simulate a full or failing disk, which a chmod cannot do when the tests
	// run as root.
	createTemp func(dir, pattern string) (*os.File, error)
	// statfs reports the free bytes of the cache's file system.
	statfs func(dir string) (int64, error)
	// beforeGiveUp, if set, runs when an Open's ctx has ended, before it
	// withdraws from its fetch. Tests use it to end the fetch in between.
	beforeGiveUp func()

	ctx     context.Context // the cache's lifetime: every fetch runs on it
	cancel  context.CancelFunc
	fetches sync.WaitGroup

	reads readCounters

	mu               sync.Mutex
	closed           bool
	index            map[string]*entry // entry id -> entry on disk
	policy           policy
	notFound         *simplelru.LRU[string, struct{}] // keys the Source reported missing
	flights          map[string]*flight               // entry id -> fetch in progress
	writeErrorLogged bool
	statfsErrLogged  bool
	stats            Stats     // counters; the current-state fields are filled in by Stats
	sched            scheduler // priorities, prefetch queues and feeds (sched.go)
}

// entry is an object stored at Cache.entryPath(id). Its fields are guarded
// by Cache.mu.
type entry struct {
	id      string
	sum     uint64 // hash of the id, for the policy's frequency sketch
	key     string
	rng     span // the byte range of the object it holds; zero: the whole object
	version string
	dataLen int64
	fileLen int64 // header and data: what it costs in the budget

	// unchecked marks an entry written by an earlier run: the object may
	// have changed on the origin since, so Open (version unknown)
	// revalidates it before its first use.
	unchecked bool
	recovered bool // found by New
	pending   bool // being put in place: not yet renamed into the entries directory
	pins      int  // open Readers, verifications, an unread prefetch's protection: never evicted while > 0

	// Eviction policy state.
	elem     *list.Element
	inWindow bool
	stint    int    // Opens since its fetch began, while in the policy's window
	reuse    uint32 // Opens between the one that fetched it and the previous Open of the object

	// unread is the scheduler's part (sched.go): set while the entry is a
	// prefetch no Open has read yet, which may hold one of pins.
	unread *unreadPrefetch
}

// New opens the cache in opts.Dir for objects from src. It locks the
// directory (ErrLocked if another Cache holds it), removes the temp files a
// previous run left, and indexes the entries it finds, checking each
// header and length; their data is checked when they are opened.
func New(opts Options, src Source) (*Cache, error) {
	switch {
	case opts.Dir == "":
		return nil, errors.New("cache: no directory: set Options.Dir to the cache directory")
	case opts.MaxBytes <= 0:
		return nil, fmt.Errorf("cache: budget of %d bytes: set Options.MaxBytes to a positive size", opts.MaxBytes)
	case opts.MinFreeBytes < 0:
		return nil, fmt.Errorf("cache: free-space floor of %d bytes: set Options.MinFreeBytes to 0 or more", opts.MinFreeBytes)
	case src == nil:
		return nil, errors.New("cache: no Source to fetch from")
	}
	maxNotFound := opts.MaxNotFound
	if maxNotFound <= 0 {
		maxNotFound = defaultMaxNotFound
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	newPolicy := opts.newPolicy
	if newPolicy == nil {
		newPolicy = func(maxBytes int64) policy { return newAdmissionPolicy(maxBytes) }
	}
	statfs := opts.statfs
	if statfs == nil {
		statfs = statfsFree
	}

	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("cache: create cache directory: %w", err)
	}
	lock, err := lockDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	notFound, err := simplelru.NewLRU[string, struct{}](maxNotFound, nil)
	if err != nil {
		lock.release()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cache{
		src:        src,
		log:        log,
		maxBytes:   opts.MaxBytes,
		minFree:    opts.MinFreeBytes,
		nsHash:     sha256.Sum256([]byte(opts.Namespace)),
		dir:        opts.Dir,
		entriesDir: filepath.Join(opts.Dir, entriesSubdir),
		tmpDir:     filepath.Join(opts.Dir, tmpSubdir),
		lock:       lock,
		createTemp: os.CreateTemp,
		statfs:     statfs,
		ctx:        ctx,
		cancel:     cancel,
		index:      make(map[string]*entry),
		policy:     newPolicy(opts.MaxBytes),
		notFound:   notFound,
		flights:    make(map[string]*flight),
	}
	if opts.MaxBytes >= startRoom {
		c.sched.startBytes = initialBytes
	}
	if err := c.recover(); err != nil {
		cancel()
		lock.release()
		return nil, err
	}
	return c, nil
}

// Open returns a reader over the object key, fetching it first if it is
// not cached. Concurrent Opens of the same missing key cause one fetch.
//
// The version is unknown, so an entry is used as is only if this process
// fetched or revalidated it; an entry left by an earlier run is revalidated
// first with a conditional request (304 keeps it, anything else replaces
// it).
//
// The fetch runs on the cache's own lifetime context, never ctx: if ctx ends
// first, Open returns ctx.Err() unwrapped and the fetch goes on and lands in
// the cache. A key the Source reported missing is remembered, and later Opens
// return an fs.ErrNotExist error without asking the Source; other fetch errors
// are not remembered.
func (c *Cache) Open(ctx context.Context, key string) (*Reader, error) {
	return c.open(ctx, key, "", span{})
}

// OpenVersion is Open for a caller that knows the object's current version
// (from a manifest): an entry of that version is used without any request,
// whoever wrote it; an entry of another version is replaced by a fetch. The
// memory of missing keys is not consulted, since the caller knows the key
// exists. The Reader's Version is what the origin sent, which differs from
// version if the manifest is older than the object. An empty version means
// unknown: OpenVersion(ctx, key, "") is Open(ctx, key).
func (c *Cache) OpenVersion(ctx context.Context, key, version string) (*Reader, error) {
	return c.open(ctx, key, version, span{})
}

// open serves Open, OpenVersion (rng zero) and OpenRange.
func (c *Cache) open(ctx context.Context, key, version string, rng span) (*Reader, error) {
	id, sum := entryIDOf(c.nsHash, key, rng)
	recorded := false
	var reuse uint32
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if version == "" {
			if _, ok := c.notFound.Get(key); ok {
				c.stats.NotFoundHits++
				c.mu.Unlock()
				return nil, fmt.Errorf("fetch %q: %w (remembered from an earlier fetch)", key, fs.ErrNotExist)
			}
		}
		if !recorded {
			reuse = c.policy.record(sum)
			recorded = true
		}
		e := c.index[id]
		if e != nil && usableLocked(e, version) {
			f, err := os.Open(c.entryPath(id))
			if err != nil {
				c.dropCorruptLocked(e, err)
				c.mu.Unlock()
				continue
			}
			e.pins++
			c.policy.hit(e)
			c.prefetchReadLocked(e)
			c.mu.Unlock()
			if r := c.verifiedReader(e, f); r != nil {
				return r, nil
			}
			continue // damaged, and now removed: fetch it
		}
		fl := c.flights[id]
		if fl != nil && rng.ranged() && fl.version != version {
			// The range is being fetched at another version: that cannot
			// serve this Open, and two fetches must not race to place the
			// one entry. Let it end (now, if it was queued), then fetch.
			c.promoteLocked(fl)
			c.mu.Unlock()
			select {
			case <-fl.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			continue
		}
		if fl == nil {
			var recheck *entry
			if e != nil && version == "" && e.unchecked {
				recheck = e
			}
			fl = c.startFlightLocked(id, sum, key, version, rng, reuse, recheck)
		} else if fl.readerJoinsLocked() {
			fl.reuse = reuse // a prefetch's first reader
		}
		c.promoteLocked(fl)
		fl.waiters++
		fl.accesses++
		if fl.recheck == nil {
			c.stats.Misses++
		}
		c.mu.Unlock()

		waitStart := time.Now()
		select {
		case <-fl.done:
		case <-ctx.Done():
			c.noteStall(fl, time.Since(waitStart))
			return nil, c.giveUp(ctx, fl)
		}
		c.noteStall(fl, time.Since(waitStart))
		switch {
		case fl.unchanged:
			continue // the entry is current: open it as a hit
		case errors.Is(fl.err, errPrefetchDropped):
			continue // a prefetch the disk could not take: fetch it for this reader
		case fl.err != nil:
			return nil, fl.err
		}
		if fl.recheck != nil {
			c.mu.Lock()
			c.stats.Misses++
			c.mu.Unlock()
		}
		return c.flightReader(fl), nil
	}
}

// usableLocked says whether e may serve an Open asking for version ("" =
// unknown).
func usableLocked(e *entry, version string) bool {
	if version == "" {
		return !e.unchecked
	}
	if e.version != version {
		return false
	}
	e.unchecked = false // the manifest vouches for it as a 304 would
	return true
}

// verifiedReader checks the entry file f (opened for e, which is pinned)
// and returns a Reader over it, or nil after removing the entry if it is
// damaged.
func (c *Cache) verifiedReader(e *entry, f *os.File) *Reader {
	dataOff, err := verifyEntry(f, e, c.nsHash)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		f.Close()
		c.unpinLocked(e)
		c.dropCorruptLocked(e, err)
		return nil
	}
	c.stats.Hits++
	if e.recovered {
		c.stats.Reused++
	}
	return &Reader{
		size: e.dataLen, version: e.version,
		file: newSharedFile(f, 1), dataOff: dataOff,
		counters: &c.reads, fromCache: true,
		unpin: func() { c.unpin(e) },
	}
}

// Size is Open and Close, for callers that only need the exact size.
func (c *Cache) Size(ctx context.Context, key string) (int64, error) {
	r, err := c.Open(ctx, key)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	return r.Size(), nil
}

// Stats reports counters since New and the current state of the cache.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	s := c.stats
	s.Entries = len(c.index)
	s.Bytes = c.policy.bytes()
	s.InFlight = len(c.flights) - c.sched.queued // queued prefetches have made no request yet
	for _, e := range c.index {
		if e.pins > 0 {
			s.Pinned++
		}
		if e.rng.ranged() {
			s.RangeEntries++
			s.RangeBytes += e.fileLen
		}
	}
	c.mu.Unlock()
	s.BytesServed = c.reads.served.Load()
	s.BytesFromCache = c.reads.fromCache.Load()
	return s
}

// Close cancels the fetches in flight, waits for them to end and unlocks
// the directory. Their waiting Opens fail with ErrClosed; Readers already
// handed out stay valid. Closing again does nothing.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	calls := c.closeSchedLocked()
	c.mu.Unlock()
	runDones(calls)
	c.cancel()
	c.fetches.Wait() // every fetch has called its Wants' Done
	return c.lock.release()
}

func (c *Cache) entryPath(id string) string {
	return filepath.Join(c.entriesDir, id[:2], id)
}

// unpin releases one pin of e, and shrinks the cache if pins had kept it
// over budget.
func (c *Cache) unpin(e *entry) {
	c.mu.Lock()
	c.unpinLocked(e)
	c.mu.Unlock()
}

func (c *Cache) unpinLocked(e *entry) {
	e.pins--
	if e.pins == 0 && c.policy.bytes() > c.maxBytes {
		c.policy.shrink(c.maxBytes, c.evictLocked)
	}
}

// evictLocked deletes an entry the policy has given up.
func (c *Cache) evictLocked(e *entry) {
	c.prefetchForgetLocked(e, true)
	if c.index[e.id] == e {
		delete(c.index, e.id)
	}
	if e.pending {
		return // never put in place
	}
	c.stats.Evictions++
	if err := os.Remove(c.entryPath(e.id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("cannot remove evicted cache entry", "path", c.entryPath(e.id), "err", err)
	}
}

// removeLocked forgets an indexed entry and deletes its file.
func (c *Cache) removeLocked(e *entry) {
	c.prefetchForgetLocked(e, false)
	c.policy.remove(e)
	delete(c.index, e.id)
	if err := os.Remove(c.entryPath(e.id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("cannot remove cache entry", "path", c.entryPath(e.id), "err", err)
	}
}

// dropCorruptLocked removes e, found damaged, unless it was replaced
// meanwhile. The next Open fetches the object again.
func (c *Cache) dropCorruptLocked(e *entry, err error) {
	if c.index[e.id] != e {
		return
	}
	c.removeLocked(e)
	c.stats.CorruptEntries++
	c.log.Warn("cache entry damaged; removed it and fetching the object again", "key", e.key, "err", err)
}

// placeLocked makes a fetched object the entry for id, replacing whatever
// entry id had, if it fits within the budget and the free-space floor
// after evicting what the policy gives up; else the object is served but
// not kept. free is the file system's free space, if known.
func (c *Cache) placeLocked(id string, sum uint64, key string, fl *flight, res *fetched, free int64, freeKnown bool) {
	old := c.index[id]
	if old != nil {
		// Superseded: its file is renamed over or removed below; its Readers
		// keep their open file.
		c.prefetchForgetLocked(old, false)
		c.policy.remove(old)
		delete(c.index, id)
	}
	var deficit int64 // bytes to free to restore the floor
	if freeKnown {
		deficit = max(0, c.minFree-free)
	}
	dropOld := func() {
		if old != nil {
			_ = os.Remove(c.entryPath(id))
		}
	}
	fileLen := res.dataOff + res.size
	if res.f == nil || !res.keepable || fileLen > c.maxBytes {
		dropOld()
		c.prefetchNotKeptLocked(fl, res)
		c.policy.shrink(min(c.maxBytes, c.policy.bytes()-deficit), c.evictLocked)
		return
	}
	e := &entry{
		id: id, sum: sum, key: key, rng: fl.rng, version: res.version,
		dataLen: res.size, fileLen: fileLen,
		pending: true, pins: fl.waiters + protectPin(fl), stint: fl.accesses, reuse: fl.reuse,
		// A range is only ever used at the version it was fetched for.
		unchecked: fl.staleGen != c.staleGen && !fl.rng.ranged(),
	}
	c.index[id] = e
	c.policy.add(e)
	limit := min(c.maxBytes, c.policy.bytes()-deficit)
	c.policy.shrink(limit, c.evictLocked)
	if protectPin(fl) == 0 && c.index[id] == e && c.policy.bytes() > limit && c.unprotectOldestLocked(c.policy.bytes()-limit) {
		// A reader's data does not fit past unread prefetches: they give way.
		c.policy.shrink(limit, c.evictLocked)
	}
	if c.index[id] != e || c.policy.bytes() > limit {
		c.prefetchNotKeptLocked(fl, res)
		// No room: the rest is pinned, or the floor asks for more than
		// the cache holds.
		if c.index[id] == e {
			c.policy.remove(e)
			delete(c.index, id)
		}
		dropOld()
		return
	}
	path := c.entryPath(id)
	err := os.MkdirAll(filepath.Dir(path), 0o700)
	if err == nil {
		err = os.Rename(res.tmpPath, path)
	}
	if err != nil {
		c.policy.remove(e)
		delete(c.index, id)
		dropOld()
		c.prefetchNotKeptLocked(fl, res)
		c.noteWriteErrorLocked(err)
		return
	}
	e.pending = false
	res.tmpPath = ""
	res.entry = e
	c.prefetchPlacedLocked(e, fl)
}

// freeSpace reports the free bytes of the cache's file system; a failure
// is logged once and disables the floor for the call.
func (c *Cache) freeSpace() (int64, bool) {
	free, err := c.statfs(c.dir)
	if err == nil {
		return free, true
	}
	c.mu.Lock()
	first := !c.statfsErrLogged
	c.statfsErrLogged = true
	c.mu.Unlock()
	if first {
		c.log.Warn("cannot read the free space of the cache's file system; the free-space floor is not enforced while this lasts", "dir", c.dir, "err", err)
	}
	return 0, false
}

// noteWriteError counts a failure to write the cache and logs the first one:
// once the disk is full every fetch fails the same way. On a full disk it
// also evicts at least what the failed write needed (attempted bytes, or a
// MiB when unknown), so the next fetch has a chance to land.
func (c *Cache) noteWriteError(err error, attempted int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.noteWriteErrorLocked(err)
	if errors.Is(err, syscall.ENOSPC) {
		need := max(attempted, 1<<20)
		c.policy.shrink(max(0, c.policy.bytes()-need), c.evictLocked)
	}
}

func (c *Cache) noteWriteErrorLocked(err error) {
	c.stats.WriteErrors++
	if c.writeErrorLogged {
		return
	}
	c.writeErrorLogged = true
	c.log.Error("cannot write to the cache directory; serving reads from memory instead, which is slower and uses RAM. "+
		"Free space on its disk, fix its permissions, set a free-space floor (--cache-min-free), or choose another cache directory. "+
		"Further failures are counted, not logged",
		"dir", c.dir, "err", err)
}
