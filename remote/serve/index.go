package serve

// The manifest index: one in-memory listing per served store (per base
// directory a manifest is asked for), built by one walk and then kept
// current with inotify, so that a manifest request costs an encode from
// memory (or nothing: the compressed body of the last full manifest is
// cached per generation) instead of a stat of every file.
//
// Why raw inotify and not fsnotify: a manifest must reflect every change
// whose system call completed before the request arrived. The kernel
// queues an inotify event before the call returns, so the request path
// reads the inotify fd non-blocking until EAGAIN and applies what it read
// before answering. fsnotify delivers events through a channel fed by its
// own goroutine and cannot say "everything queued so far has been read",
// so a request could be answered from an index that misses a change the
// client already saw complete.
//
// Applying an event re-stats the one name it is about (in the watched
// directory, opened through the os.Root and checked to still be the watched
// inode) and upserts or removes it; a new directory is watched first and
// then scanned, so nothing created between mkdir and inotify_add_watch is
// missed; a removed or moved directory drops its subtree and watches. A
// moved directory is re-scanned under its new name. Events are re-read
// whenever a watched directory is no longer where the index has it: the
// events that explain the move are then already queued.
//
// The index is not trusted, and the server falls back to walking the tree
// on every request (correct, slower; logged once with the reason and the
// fix), when the store holds a symlink (inotify does not watch link
// targets), lives on a file system where inotify does not see other
// machines' writes (remoteFSTypes), hits the inotify watch or instance
// limit, holds more than maxIndexKeys keys or more than maxHardLinked
// hard-linked files, or cannot be read. Such failures are retried after
// indexRetryAfter (never for a remote file system).
//
// Known limits of inotify that the index inherits: a write through a
// shared mmap changes a file's mtime without an event, and a hard link made
// or removed outside the store changes the ctime (part of the ETag) of a
// file inside it without an event. Files that already have several links
// are re-stat'ed on every request, which covers links inside the store.
//
// Lock order: indexSet.mu → manifestIndex.lock → manifestIndex.qmu;
// Server.manifestSlots is taken last (under manifestIndex.lock) and never
// while waiting for another lock. The inotify reader goroutine takes
// manifestIndex.lock only with tryLock, so closing an index (which waits for
// the reader) under the lock cannot deadlock.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// maxIndexes bounds the indexes a server keeps (least recently used
	// first out; evicting one closes its inotify fd).
	maxIndexes = 16
	// maxIndexKeys bounds one index. An index costs about 24 bytes per key
	// plus the names' bytes and 1/8 slack while a writer adds keys: about
	// 35–50 bytes per key, so 4M keys are 140–200 MB. Larger stores are
	// walked per request.
	maxIndexKeys = 4 << 20
	// maxHardLinked bounds the files with more than one link, which are
	// re-stat'ed on every request (their ctime moves without an event).
	maxHardLinked = 4096
	// indexRetryAfter is how long a store whose index failed is walked per
	// request before the index is tried again.
	indexRetryAfter = time.Minute
)

// indexUntrusted says why an index cannot be used; the store is walked
// per request instead.
type indexUntrusted struct {
	kind      string // short, for logging once per kind
	reason    string
	fix       string
	permanent bool // never retried
}

func (e *indexUntrusted) Error() string { return e.reason }

// Index states.
const (
	indexBuilding = iota
	indexReady
	indexFailed
	indexClosed
)

// manifestIndex is the index of one base directory.
type manifestIndex struct {
	set  *indexSet
	base string
	rel  string

	// lock is held by the builder and by whoever applies events or
	// encodes; a channel so that waiting respects a request's context.
	lock chan struct{}

	failedAt  atomic.Int64 // unix nanoseconds of the failure; 0: not failed
	permanent atomic.Bool

	// Guarded by lock.
	state    int
	failure  *indexUntrusted
	ifd      int // inotify fd; -1 when none
	wakefd   int // eventfd that stops the reader
	readerWG sync.WaitGroup
	stopping bool // the reader closes the fds and exits after its apply
	inReader bool // the reader goroutine holds the lock
	root     *idxDir
	byWd     map[int32]*idxDir
	keys     int
	gen      uint64               // bumped by every applied change
	rebuild  bool                 // events were lost (overflow, base moved): walk again
	multi    map[multiRef]uint64  // hard-linked files, to their inode
	full     cachedManifest       // compressed manifest for prefix ""
	tags     map[string]cachedTag // tags of other prefixes at gen

	// Guarded by qmu: events read from the kernel, not yet applied.
	qmu       sync.Mutex
	queue     []byte
	qOverflow bool
	rbuf      []byte
}

// multiRef names a file with several hard links.
type multiRef struct {
	d    *idxDir
	name string
}

func newManifestIndex(set *indexSet, base string) *manifestIndex {
	ix := &manifestIndex{set: set, base: base, rel: relOf(base), lock: make(chan struct{}, 1), ifd: -1, wakefd: -1}
	ix.lock <- struct{}{} // held by the builder until the first build ends
	return ix
}

func (ix *manifestIndex) acquire(ctx context.Context) error {
	select {
	case ix.lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (ix *manifestIndex) tryAcquire() bool {
	select {
	case ix.lock <- struct{}{}:
		return true
	default:
		return false
	}
}

func (ix *manifestIndex) release() { <-ix.lock }

// retryable reports whether the index failed long enough ago to try again.
func (ix *manifestIndex) retryable(now time.Time) bool {
	at := ix.failedAt.Load()
	return at != 0 && !ix.permanent.Load() && now.UnixNano()-at >= int64(indexRetryAfter)
}

// shutdown closes the index (waiting for whoever holds it).
func (ix *manifestIndex) shutdown() {
	ix.lock <- struct{}{}
	ix.closeLocked()
	ix.state = indexClosed
	ix.release()
}

// closeLocked stops the reader, closes the fds and frees the tree.
func (ix *manifestIndex) closeLocked() {
	if ix.ifd >= 0 {
		ix.stopping = true
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		_, _ = unix.Write(ix.wakefd, one[:])
		if !ix.inReader { // else the reader returns after its apply
			ix.readerWG.Wait()
			ix.stopping = false
		}
		ix.ifd, ix.wakefd = -1, -1
	}
	ix.root, ix.byWd, ix.multi, ix.keys = nil, nil, nil, 0
	ix.full, ix.tags = cachedManifest{}, nil
	ix.qmu.Lock()
	ix.queue, ix.qOverflow = nil, false
	ix.qmu.Unlock()
}

// failLocked turns the index off after err.
func (ix *manifestIndex) failLocked(err error) {
	var u *indexUntrusted
	if !errors.As(err, &u) {
		u = &indexUntrusted{kind: "error", reason: err.Error(),
			fix: "fix the cause (the same error ends a walked manifest with an error record); the index is tried again after " + indexRetryAfter.String()}
	}
	ix.closeLocked()
	ix.state, ix.failure = indexFailed, u
	ix.permanent.Store(u.permanent)
	ix.failedAt.Store(time.Now().UnixNano())
	ix.set.logOnce(ix.base, u)
}

// buildLocked builds the index from scratch, reusing the inotify fd if
// there is one; on failure the index is off.
func (ix *manifestIndex) buildLocked(ctx context.Context) {
	if err := ix.buildTree(ctx); err != nil {
		if ctx.Err() != nil { // the server is closing
			ix.closeLocked()
			ix.state = indexClosed
			return
		}
		ix.failLocked(err)
		return
	}
	ix.state = indexReady
}

func (ix *manifestIndex) buildTree(ctx context.Context) error {
	if ix.ifd < 0 {
		if err := ix.openInotify(); err != nil {
			return err
		}
	} else {
		for wd := range ix.byWd {
			_, _ = unix.InotifyRmWatch(ix.ifd, uint32(wd))
		}
	}
	ix.root, ix.byWd, ix.multi, ix.keys, ix.rebuild = nil, map[int32]*idxDir{}, map[multiRef]uint64{}, 0, false
	ix.full, ix.tags = cachedManifest{}, nil
	ix.gen++
	// Whatever was queued is about watches just removed.
	ix.qmu.Lock()
	ix.readEventsLocked()
	ix.queue, ix.qOverflow = ix.queue[:0], false
	ix.qmu.Unlock()

	select {
	case ix.set.s.manifestSlots <- struct{}{}:
		defer func() { <-ix.set.s.manifestSlots }()
	case <-ctx.Done():
		return ctx.Err()
	}
	f, err := ix.set.s.root.Open(ix.rel)
	if err != nil {
		return fmt.Errorf("open %s: %w", displayRel(ix.rel), err)
	}
	defer f.Close()
	root, err := ix.buildDir(ctx, f, ix.rel, nil, "")
	if err != nil {
		return err
	}
	ix.root = root
	return nil
}

// syncLocked brings the index up to date with every change completed
// before the call, rebuilding it if events were lost.
func (ix *manifestIndex) syncLocked(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		if err := ix.applyLocked(ctx); err != nil {
			return err
		}
		if !ix.rebuild {
			break
		}
		if attempt == 2 {
			return &indexUntrusted{kind: "churn", reason: "the store changes faster than its index can follow (three syncs in a row had to rebuild it: events lost to an inotify queue overflow, or new hard links to indexed files)",
				fix: "raise fs.inotify.max_queued_events, or accept the walk while the store is being written"}
		}
		if err := ix.buildTree(ctx); err != nil {
			return err
		}
	}
	for ref := range ix.multi {
		if ref.d.dropped {
			delete(ix.multi, ref)
			continue
		}
		f, err := ix.set.s.root.Open(ref.d.rel)
		if err != nil {
			continue // moved: its parent's events rescan it
		}
		err = ix.refresh(ctx, ref.d, f, ref.name)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func symlinkUntrusted(rel string) error {
	return &indexUntrusted{kind: "symlink", reason: "the store contains a symlink (" + rel + "), and inotify does not watch what a link points to",
		fix: "replace symlinks inside the store with the files or directories themselves (or a bind mount)"}
}

func tooManyKeys() error {
	return &indexUntrusted{kind: "keys", reason: fmt.Sprintf("the store has more than %d keys, the index's cap (about 200 MB of memory)", maxIndexKeys),
		fix: "serve large arrays as stores of their own (zarrfs serve of their parent directory indexes each store separately)"}
}

func hardLinksUntrusted() error {
	return &indexUntrusted{kind: "hardlinks", reason: fmt.Sprintf("the store has more than %d files with several hard links, whose change time moves without an inotify event", maxHardLinked),
		fix: "copy the files instead of hard-linking them"}
}

// indexAnswer is what a request gets from an index.
type indexAnswer struct {
	tag  string
	body *chunkBuffer // nil: not modified, or HEAD
}

// errVanished: a directory went away (or became a file) while it was
// scanned; the events that did it are queued.
var errVanished = errors.New("directory vanished")

// vanished reports whether opening a path listed a moment ago failed
// because it is gone or because a directory on the way is a file now: a
// writer changed the store meanwhile, which its events (or the next walk)
// account for. Paths are opened from the root, so a directory replaced by a
// file above the one opened shows as ENOTDIR.
func vanished(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// errIndexOff: the index cannot answer; walk instead.
var errIndexOff = errors.New("manifest index off")

// answer brings the index up to date and answers a request for prefix:
// with only the tag when ifNoneMatch matches it or for HEAD, else with the
// compressed body. dev and ino identify the base directory the request
// opened; a different one (the base was replaced) is indexed anew.
func (ix *manifestIndex) answer(ctx context.Context, dev, ino uint64, prefix, ifNoneMatch string, head bool) (indexAnswer, error) {
	if err := ix.acquire(ctx); err != nil {
		return indexAnswer{}, err
	}
	defer ix.release()
	if ix.state != indexReady {
		return indexAnswer{}, errIndexOff
	}
	if ix.root.dev != dev || ix.root.ino != ino {
		ix.rebuild = true
	}
	if err := ix.syncLocked(ctx); err != nil {
		if ctx.Err() != nil || ix.set.ctx.Err() != nil {
			return indexAnswer{}, err
		}
		ix.failLocked(err)
		return indexAnswer{}, errIndexOff
	}
	if ix.root.dev != dev || ix.root.ino != ino {
		return indexAnswer{}, errIndexOff // the base changed again meanwhile
	}
	if prefix == "" {
		if !ix.full.ok || ix.full.gen != ix.gen {
			if err := ix.slot(ctx); err != nil {
				return indexAnswer{}, err
			}
			tag, body, err := ix.compressedLocked("")
			<-ix.set.s.manifestSlots
			if err != nil {
				return indexAnswer{}, err
			}
			ix.full = cachedManifest{gen: ix.gen, ok: true, tag: tag, body: body}
		}
		a := indexAnswer{tag: ix.full.tag}
		if !head && (ifNoneMatch == "" || !etagListMatches(ifNoneMatch, a.tag)) {
			a.body = ix.full.body
		}
		return a, nil
	}
	if err := ix.slot(ctx); err != nil {
		return indexAnswer{}, err
	}
	defer func() { <-ix.set.s.manifestSlots }()
	if ifNoneMatch != "" || head {
		t, ok := ix.tags[prefix]
		if !ok || t.gen != ix.gen {
			tag, err := ix.writeManifestLocked(io.Discard, prefix, false)
			if err != nil {
				return indexAnswer{}, err
			}
			if ix.tags == nil || len(ix.tags) >= 64 {
				ix.tags = map[string]cachedTag{}
			}
			t = cachedTag{gen: ix.gen, tag: tag}
			ix.tags[prefix] = t
		}
		if head || etagListMatches(ifNoneMatch, t.tag) {
			return indexAnswer{tag: t.tag}, nil
		}
	}
	tag, body, err := ix.compressedLocked(prefix)
	if err != nil {
		return indexAnswer{}, err
	}
	return indexAnswer{tag: tag, body: body}, nil
}

// slot takes one of the server's manifest slots (encoding holds a
// compressed body in memory).
func (ix *manifestIndex) slot(ctx context.Context) error {
	select {
	case ix.set.s.manifestSlots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-ix.set.ctx.Done():
		return ix.set.ctx.Err()
	}
}
