package cache

// Locking. Cache.mu is the only lock in this package and nothing else is
// acquired while it is held. It guards the index, the not-found memory, the
// in-flight fetches and the counters, and it is also what keeps the index and
// the entries directory in agreement: every rename into, open of, and unlink
// from Dir/entries happens under mu, so a path the index names always exists
// and an unlink never hits a file a concurrent fetch has just put in place.
// Source.Fetch and temp-file writes, the slow parts, happen without it.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Source is where missing entries come from (remote.Client satisfies it).
// Fetch writes the whole object to w and returns its version (a strong ETag,
// may be ""). An object missing on the origin is an error for which
// errors.Is(err, fs.ErrNotExist) holds. If Fetch fails after writing to w, the
// caller discards what was written.
type Source interface {
	Fetch(ctx context.Context, key string, w io.Writer) (version string, err error)
}

// ErrClosed is returned by Open after Close, and by Opens whose fetch Close
// cancelled.
var ErrClosed = errors.New("cache is closed")

// Options configure a Cache.
type Options struct {
	Dir         string       // cache directory; created (0700) if missing
	MaxBytes    int64        // byte budget for entry data on disk
	Namespace   string       // identifies the origin (its URL); entries are keyed by hash(Namespace, key)
	MaxNotFound int          // how many "missing on origin" keys to remember; 0 means 100000
	Logger      *slog.Logger // nil = discard
}

const defaultMaxNotFound = 100_000

// The cache owns these subdirectories of Options.Dir and nothing else in it.
const (
	entriesSubdir = "entries"
	tmpSubdir     = "tmp"
)

// Stats are counters since New plus the current size of the cache.
type Stats struct {
	Hits         int64 // Opens served from an entry on disk
	Misses       int64 // Opens that waited for a fetch (their own or one already in flight)
	NotFoundHits int64 // Opens answered from the memory of keys missing on the origin
	Fetches      int64 // calls to Source.Fetch
	BytesFetched int64 // bytes of successful fetches
	BytesServed  int64 // bytes returned by Reader.ReadAt
	Evictions    int64 // entries unlinked to stay within the budget
	WriteErrors  int64 // fetches that could not be written to disk and were served from memory
	Entries      int   // entries on disk now
	Bytes        int64 // bytes of entries on disk now
}

// Cache is an on-disk cache of one origin's objects. It is safe for
// concurrent use.
type Cache struct {
	src        Source
	log        *slog.Logger
	maxBytes   int64
	namespace  string
	dir        string
	entriesDir string
	tmpDir     string

	// createTemp makes the file a fetch is written to. Tests replace it to
	// simulate a full or failing disk, which a chmod cannot do when the tests
	// run as root.
	createTemp func(dir, pattern string) (*os.File, error)
	// beforeGiveUp, if set, runs when an Open's ctx has ended, before it
	// withdraws from its fetch. Tests use it to end the fetch in between.
	beforeGiveUp func()

	ctx     context.Context // the cache's lifetime: every fetch runs on it
	cancel  context.CancelFunc
	fetches sync.WaitGroup

	bytesServed atomic.Int64

	mu               sync.Mutex
	closed           bool
	index            *simplelru.LRU[string, entry] // entry id -> entry on disk, least recently used first out
	indexBytes       int64
	notFound         *simplelru.LRU[string, struct{}] // keys the Source reported missing
	flights          map[string]*flight               // entry id -> fetch in progress
	writeErrorLogged bool
	stats            Stats // counters; Entries, Bytes and BytesServed are filled in by Stats
}

// entry is an object stored at Cache.entryPath(id).
type entry struct {
	size    int64
	version string
}

// flight is one fetch in progress and the Opens waiting for it. It is not a
// singleflight.Group call because the result is an open file each waiter must
// own a share of, and singleflight cannot say how many callers took a result
// (some give up before it arrives); counting waiters under Cache.mu can.
type flight struct {
	done chan struct{} // closed, under Cache.mu, once res or err is set
	// waiters counts the Opens waiting; when the fetch ends, each is owed one
	// reference to res.file. Guarded by Cache.mu.
	waiters int
	res     *fetched
	err     error
}

// fetched is the outcome of a successful fetch.
type fetched struct {
	size    int64
	version string
	file    *sharedFile // the written file, still open; nil when held in memory
	mem     []byte
	tmpPath string // where file lies until it is renamed into place or removed
	keep    bool   // whether to rename it into the cache (else it is served and dropped)
}

// New opens a cache in opts.Dir for objects from src.
func New(opts Options, src Source) (*Cache, error) {
	switch {
	case opts.Dir == "":
		return nil, errors.New("cache: no directory: set Options.Dir to the cache directory")
	case opts.MaxBytes <= 0:
		return nil, fmt.Errorf("cache: budget of %d bytes: set Options.MaxBytes to a positive size", opts.MaxBytes)
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

	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("cache: create cache directory: %w", err)
	}
	entriesDir := filepath.Join(opts.Dir, entriesSubdir)
	tmpDir := filepath.Join(opts.Dir, tmpSubdir)
	for _, d := range []string{entriesDir, tmpDir} {
		// Whatever a previous run left is removed, not reused: entries do not
		// yet record their length and checksum, so a file torn by a crash, or
		// written for an older version of the object, would be served as data.
		// Reuse across restarts comes with self-verifying entries.
		if err := os.RemoveAll(d); err != nil {
			return nil, fmt.Errorf("cache: clear what a previous run left in %s: %w", d, err)
		}
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
	}

	index, err := simplelru.NewLRU[string, entry](math.MaxInt, nil) // bounded by bytes, not count
	if err != nil {
		return nil, err
	}
	notFound, err := simplelru.NewLRU[string, struct{}](maxNotFound, nil)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Cache{
		src:        src,
		log:        log,
		maxBytes:   opts.MaxBytes,
		namespace:  opts.Namespace,
		dir:        opts.Dir,
		entriesDir: entriesDir,
		tmpDir:     tmpDir,
		createTemp: os.CreateTemp,
		ctx:        ctx,
		cancel:     cancel,
		index:      index,
		notFound:   notFound,
		flights:    make(map[string]*flight),
	}, nil
}

// Open returns a reader over the entry for key, fetching it first if it is
// not cached. Concurrent Opens of the same missing key cause one Source.Fetch.
//
// The fetch runs on the cache's own lifetime context, never ctx: if ctx ends
// first, Open returns ctx.Err() unwrapped and the fetch goes on and lands in
// the cache. A key the Source reported missing is remembered, and later Opens
// return an fs.ErrNotExist error without asking the Source; other fetch errors
// are not remembered.
func (c *Cache) Open(ctx context.Context, key string) (*Reader, error) {
	id := c.entryID(key)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if _, ok := c.notFound.Get(key); ok {
		c.stats.NotFoundHits++
		c.mu.Unlock()
		return nil, fmt.Errorf("fetch %q: %w (remembered from an earlier fetch)", key, fs.ErrNotExist)
	}
	if r := c.openEntryLocked(id); r != nil {
		c.stats.Hits++
		c.mu.Unlock()
		return r, nil
	}
	fl := c.flights[id]
	if fl == nil {
		fl = c.startFetchLocked(id, key)
	}
	fl.waiters++
	c.stats.Misses++
	c.mu.Unlock()

	select {
	case <-fl.done:
		return c.readerFor(fl)
	case <-ctx.Done():
	}
	if c.beforeGiveUp != nil {
		c.beforeGiveUp()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-fl.done:
		// The fetch ended while we gave up and counted us among its readers.
		if fl.res != nil && fl.res.file != nil {
			_ = fl.res.file.release()
		}
	default:
		fl.waiters--
	}
	return nil, ctx.Err()
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

// Stats reports counters since New and the current size of the cache.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	s := c.stats
	s.Entries = c.index.Len()
	s.Bytes = c.indexBytes
	c.mu.Unlock()
	s.BytesServed = c.bytesServed.Load()
	return s
}

// Close cancels the fetches in flight and waits for them to end. Their
// waiting Opens fail with ErrClosed; Readers already handed out stay valid.
// Closing again does nothing.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.fetches.Wait()
	return nil
}

func (c *Cache) entryID(key string) string {
	h := sha256.New()
	h.Write([]byte(c.namespace))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return hex.EncodeToString(h.Sum(nil))
}

func (c *Cache) entryPath(id string) string {
	return filepath.Join(c.entriesDir, id[:2], id)
}

// openEntryLocked returns a Reader over the cached entry id, or nil if there
// is none.
func (c *Cache) openEntryLocked(id string) *Reader {
	e, ok := c.index.Get(id)
	if !ok {
		return nil
	}
	f, err := os.Open(c.entryPath(id))
	if err != nil {
		// Removed or damaged behind our back: forget it and fetch again.
		c.log.Warn("cache entry unreadable; fetching it again", "path", c.entryPath(id), "err", err)
		c.index.Remove(id)
		c.indexBytes -= e.size
		return nil
	}
	file := &sharedFile{f: f}
	file.refs.Store(1)
	return &Reader{size: e.size, version: e.version, file: file, served: &c.bytesServed}
}

func (c *Cache) startFetchLocked(id, key string) *flight {
	fl := &flight{done: make(chan struct{})}
	c.flights[id] = fl
	c.fetches.Add(1) // under mu with closed false, so never after Close began waiting
	go func() {
		defer c.fetches.Done()
		res, err := c.fetch(key)
		if res != nil && res.file != nil {
			res.keep = res.size <= c.maxBytes
			if res.keep {
				if err := os.MkdirAll(filepath.Dir(c.entryPath(id)), 0o700); err != nil {
					c.noteWriteError(err)
					res.keep = false
				}
			}
			if !res.keep {
				// Too big for the budget, or nowhere to put it: serve it from
				// the open file and let the data go when the last Reader closes.
				removeTemp(res)
			}
		}
		c.finish(id, key, fl, res, err)
	}()
	return fl
}

// fetch gets key from the Source into a temp file, or into memory when the
// disk will not take it.
func (c *Cache) fetch(key string) (*fetched, error) {
	f, err := c.createTemp(c.tmpDir, "fetch-*")
	if err != nil {
		c.noteWriteError(err)
		return c.fetchToMemory(key)
	}
	w := &fileWriter{f: f}
	version, err := c.fetchFromSource(key, w)
	if err == nil && w.err != nil {
		err = w.err // a Source that dropped our write error
	}
	if err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		if w.err == nil {
			return nil, c.fetchError(key, err)
		}
		// What was written is incomplete, so fetch it again into memory.
		c.noteWriteError(w.err)
		return c.fetchToMemory(key)
	}
	file := &sharedFile{f: f}
	return &fetched{size: w.n, version: version, file: file, tmpPath: f.Name()}, nil
}

func (c *Cache) fetchToMemory(key string) (*fetched, error) {
	var buf bytes.Buffer
	version, err := c.fetchFromSource(key, &buf)
	if err != nil {
		return nil, c.fetchError(key, err)
	}
	return &fetched{size: int64(buf.Len()), version: version, mem: buf.Bytes()}, nil
}

func (c *Cache) fetchFromSource(key string, w io.Writer) (string, error) {
	c.mu.Lock()
	c.stats.Fetches++
	c.mu.Unlock()
	return c.src.Fetch(c.ctx, key, w)
}

func (c *Cache) fetchError(key string, err error) error {
	if c.ctx.Err() != nil {
		// Reported as ErrClosed, not as a cancellation, which callers take
		// for their own request being interrupted.
		return fmt.Errorf("fetch %q: %w", key, ErrClosed)
	}
	return fmt.Errorf("fetch %q: %w", key, err)
}

// finish puts a fetched entry in place and hands it to the waiting Opens.
func (c *Cache) finish(id, key string, fl *flight, res *fetched, err error) {
	var installErr error
	c.mu.Lock()
	if res != nil && res.keep {
		installErr = c.installLocked(id, res)
	}
	if errors.Is(err, fs.ErrNotExist) {
		c.notFound.Add(key, struct{}{})
	}
	delete(c.flights, id)
	if res != nil {
		c.stats.BytesFetched += res.size
		if res.file != nil {
			if fl.waiters == 0 {
				_ = res.file.f.Close()
			} else {
				res.file.refs.Store(int32(fl.waiters))
			}
		}
	}
	fl.res, fl.err = res, err
	close(fl.done)
	c.mu.Unlock()

	if installErr != nil {
		removeTemp(res)
		c.noteWriteError(installErr)
	}
}

// installLocked renames a fetched temp file into place, indexes it and
// evicts least recently used entries until the cache is within budget.
func (c *Cache) installLocked(id string, res *fetched) error {
	if err := os.Rename(res.tmpPath, c.entryPath(id)); err != nil {
		return err
	}
	res.tmpPath = ""
	c.index.Add(id, entry{size: res.size, version: res.version})
	c.indexBytes += res.size
	for c.indexBytes > c.maxBytes {
		old, e, ok := c.index.RemoveOldest()
		if !ok {
			break
		}
		c.indexBytes -= e.size
		c.stats.Evictions++
		if err := os.Remove(c.entryPath(old)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("cannot remove evicted cache entry", "path", c.entryPath(old), "err", err)
		}
	}
	return nil
}

// noteWriteError counts a failure to write the cache and logs the first one:
// once the disk is full every fetch fails the same way.
func (c *Cache) noteWriteError(err error) {
	c.mu.Lock()
	c.stats.WriteErrors++
	first := !c.writeErrorLogged
	c.writeErrorLogged = true
	c.mu.Unlock()
	if first {
		c.log.Error("cannot write to the cache directory; serving reads from memory instead, which is slower and uses RAM. "+
			"Free space on its disk, fix its permissions, or choose another cache directory. Further failures are counted, not logged",
			"dir", c.dir, "err", err)
	}
}

func (c *Cache) readerFor(fl *flight) (*Reader, error) {
	if fl.err != nil {
		return nil, fl.err
	}
	return &Reader{size: fl.res.size, version: fl.res.version, file: fl.res.file, mem: fl.res.mem, served: &c.bytesServed}, nil
}

func removeTemp(res *fetched) {
	if res.tmpPath != "" {
		_ = os.Remove(res.tmpPath)
		res.tmpPath = ""
	}
}

// fileWriter writes a fetch to its temp file and remembers the first write
// error, so a failing disk can be told apart from a failing Source.
type fileWriter struct {
	f   *os.File
	n   int64
	err error
}

func (w *fileWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.f.Write(p)
	w.n += int64(n)
	w.err = err
	return n, err
}
