package remote

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
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
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
	// inotifyMask is what every watched directory reports.
	inotifyMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_ATTRIB |
		unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF |
		unix.IN_ONLYDIR | unix.IN_EXCL_UNLINK
)

// maxQueuedEventBytes bounds the events read from the kernel but not yet
// applied (while a request holds the index to encode); beyond it the index
// is rebuilt, as after IN_Q_OVERFLOW. A variable for tests.
var maxQueuedEventBytes = 32 << 20

// Hooks for tests: watch limits and file system types cannot be staged
// without root.
var (
	inotifyAddWatch = unix.InotifyAddWatch
	indexFstatfs    = unix.Fstatfs
	// openDirHook, when set, runs before a scan opens a subdirectory it has
	// listed, so that a test can change the store at that moment.
	openDirHook atomic.Pointer[func(rel string)]
)

func beforeOpenDir(rel string) {
	if hook := openDirHook.Load(); hook != nil {
		(*hook)(rel)
	}
}

// remoteFSTypes are the file systems (statfs f_type) where inotify sees
// only the changes made through this machine's kernel: writes by other
// clients of the same share never produce an event.
var remoteFSTypes = map[int64]string{
	0x6969:     "NFS",
	0x517b:     "SMB",
	0xff534d42: "CIFS",
	0xfe534d42: "SMB2/3",
	0x65735546: "FUSE (sshfs, s3fs, gcsfuse, virtiofs, …)",
	0x01021997: "9p",
	0x00c36400: "Ceph",
	0x5346414f: "AFS",
	0x6b414653: "kAFS",
	0x01161970: "GFS2",
	0x7461636f: "OCFS2",
	0x0bd00bd0: "Lustre",
	0x47504653: "GPFS (Spectrum Scale)",
	0x73757245: "Coda",
	0x20030528: "OrangeFS",
}

// indexUntrusted says why an index cannot be used; the store is walked
// per request instead.
type indexUntrusted struct {
	kind      string // short, for logging once per kind
	reason    string
	fix       string
	permanent bool // never retried
}

func (e *indexUntrusted) Error() string { return e.reason }

// indexSet holds the server's indexes, most recently used last.
type indexSet struct {
	s      *Server
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	eagerDone chan struct{} // closed once the eager builds are registered

	mu     sync.Mutex
	lru    []*manifestIndex
	logged map[string]bool // base + "\x00" + kind: logged once
	closed bool
}

func newIndexSet(s *Server) *indexSet {
	ctx, cancel := context.WithCancel(context.Background())
	return &indexSet{s: s, ctx: ctx, cancel: cancel, logged: map[string]bool{}, eagerDone: make(chan struct{})}
}

// storeMarkers name the files that make a directory a zarr store.
var storeMarkers = []string{".zgroup", ".zarray", ".zattrs", ".zmetadata", "zarr.json"}

func (set *indexSet) isStore(rel string) bool {
	for _, m := range storeMarkers {
		if fi, err := set.s.root.Lstat(path.Join(rel, m)); err == nil && fi.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// startEager builds, in the background, the index of the served directory
// if it is a store, else those of its direct children that are stores (the
// children of a store are its arrays and groups, which its index covers;
// indexing them too would hold their keys twice). At most MaxManifestWalks
// builds run at a time: each takes a manifest slot.
func (set *indexSet) startEager() {
	set.wg.Go(func() {
		defer close(set.eagerDone)
		var bases []string
		if set.isStore(".") {
			bases = append(bases, "")
		} else if d, err := set.s.root.Open("."); err == nil {
			ents, _ := d.ReadDir(-1)
			d.Close()
			for _, e := range ents {
				if len(bases) >= maxIndexes {
					break
				}
				if e.IsDir() && e.Name() != reservedSegment && set.isStore(e.Name()) {
					bases = append(bases, e.Name())
				}
			}
		}
		for _, b := range bases {
			if set.get(b) == nil {
				return
			}
		}
	})
}

// get returns the index for base, starting its build if there is none (or
// its failure is old enough to retry); nil once the set is closed.
func (set *indexSet) get(base string) *manifestIndex {
	set.mu.Lock()
	if set.closed {
		set.mu.Unlock()
		return nil
	}
	var ix *manifestIndex
	at := -1
	for i, c := range set.lru {
		if c.base == base {
			ix, at = c, i
			break
		}
	}
	if ix != nil && ix.retryable(time.Now()) {
		set.lru = slices.Delete(set.lru, at, at+1)
		old := ix
		set.wg.Go(func() { old.shutdown() })
		ix, at = nil, -1
	}
	var evicted *manifestIndex
	if ix == nil {
		ix = newManifestIndex(set, base)
		if len(set.lru) >= maxIndexes {
			evicted = set.lru[0]
			set.lru = slices.Delete(set.lru, 0, 1)
		}
		set.lru = append(set.lru, ix)
		set.wg.Go(func() {
			defer ix.release()
			ix.buildLocked(set.ctx)
		})
	} else if at != len(set.lru)-1 {
		set.lru = append(slices.Delete(set.lru, at, at+1), ix)
	}
	if evicted != nil {
		set.wg.Go(func() { evicted.shutdown() })
	}
	set.mu.Unlock()
	return ix
}

// close stops every index and waits for every goroutine of the set.
func (set *indexSet) close() {
	if set == nil {
		return
	}
	set.mu.Lock()
	set.closed = true
	all := set.lru
	set.lru = nil
	set.mu.Unlock()
	set.cancel()
	for _, ix := range all {
		ix.shutdown()
	}
	set.wg.Wait()
}

// logOnce logs an index failure once per base and kind.
func (set *indexSet) logOnce(base string, u *indexUntrusted) {
	set.mu.Lock()
	k := base + "\x00" + u.kind
	seen := set.logged[k]
	set.logged[k] = true
	set.mu.Unlock()
	if seen {
		return
	}
	set.s.log.Warn("serve: manifest index off; this store's manifests are built by walking the tree on every request (correct, slower)",
		"store", displayRel(relOf(base)), "reason", u.reason, "fix", u.fix)
}

func relOf(base string) string {
	if base == "" {
		return "."
	}
	return base
}

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

type cachedManifest struct {
	gen  uint64
	ok   bool
	tag  string
	body *chunkBuffer
}

// bodyChunk is the size of a chunkBuffer's chunks.
const bodyChunk = 256 << 10

// chunkBuffer holds a compressed manifest in fixed-size chunks: nothing is
// copied as it grows (a bytes.Buffer would allocate about twice the body on
// the way and keep up to twice its size), and at most one chunk is slack.
// Immutable once written, so one body can be sent to many clients at once.
type chunkBuffer struct {
	chunks [][]byte
	n      int
}

func (c *chunkBuffer) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if len(c.chunks) == 0 || len(c.chunks[len(c.chunks)-1]) == bodyChunk {
			c.chunks = append(c.chunks, make([]byte, 0, bodyChunk))
		}
		last := &c.chunks[len(c.chunks)-1]
		k := min(len(p), bodyChunk-len(*last))
		*last = append(*last, p[:k]...)
		p = p[k:]
	}
	c.n += n
	return n, nil
}

// Len is the body's size.
func (c *chunkBuffer) Len() int { return c.n }

// WriteTo writes the whole body to w.
func (c *chunkBuffer) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for _, ch := range c.chunks {
		n, err := w.Write(ch)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

type cachedTag struct {
	gen uint64
	tag string
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

func (ix *manifestIndex) openInotify() error {
	ifd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		if errors.Is(err, unix.EMFILE) {
			return &indexUntrusted{kind: "instances", reason: "the inotify instance limit (fs.inotify.max_user_instances) is reached",
				fix: "raise it: sysctl -w fs.inotify.max_user_instances=1024 (one instance per indexed store)"}
		}
		return fmt.Errorf("inotify_init1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(ifd)
		return fmt.Errorf("eventfd: %w", err)
	}
	ix.ifd, ix.wakefd = ifd, wake
	if ix.rbuf == nil {
		ix.rbuf = make([]byte, 64<<10)
	}
	ix.readerWG.Add(1)
	go ix.reader(ifd, wake)
	return nil
}

// reader reads events as they come, so the kernel queue (16384 events by
// default) does not overflow while a request holds the index, and applies
// them when nobody else holds it. It owns the fds' closing.
func (ix *manifestIndex) reader(ifd, wake int) {
	defer ix.readerWG.Done()
	defer unix.Close(wake)
	defer unix.Close(ifd)
	fds := []unix.PollFd{{Fd: int32(ifd), Events: unix.POLLIN}, {Fd: int32(wake), Events: unix.POLLIN}}
	for {
		timeout := -1
		ix.qmu.Lock()
		if len(ix.queue) > 0 || ix.qOverflow {
			timeout = 20 // applied later: the holder was busy
		}
		ix.qmu.Unlock()
		fds[0].Revents, fds[1].Revents = 0, 0
		if _, err := unix.Poll(fds, timeout); err != nil && err != unix.EINTR {
			return
		}
		if fds[1].Revents != 0 {
			return
		}
		ix.qmu.Lock()
		ix.readEventsLocked()
		ix.qmu.Unlock()
		if ix.tryAcquire() {
			if ix.state == indexReady && ix.ifd == ifd {
				ix.inReader = true
				if err := ix.applyLocked(ix.set.ctx); err != nil && ix.set.ctx.Err() == nil {
					ix.failLocked(err)
				}
				ix.inReader = false
			}
			stop := ix.stopping || ix.ifd != ifd
			ix.release()
			if stop {
				return
			}
		}
	}
}

// readEventsLocked reads the inotify fd until EAGAIN into the queue.
func (ix *manifestIndex) readEventsLocked() {
	if ix.ifd < 0 {
		return
	}
	for {
		n, err := unix.Read(ix.ifd, ix.rbuf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			if err != nil && err != unix.EAGAIN {
				ix.qOverflow = true // cannot happen; be safe: walk again
			}
			return
		}
		if ix.qOverflow {
			continue // everything is rescanned anyway
		}
		if len(ix.queue)+n > maxQueuedEventBytes {
			ix.queue, ix.qOverflow = nil, true
			continue
		}
		ix.queue = append(ix.queue, ix.rbuf[:n]...)
	}
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

// applyLocked drains the inotify fd and applies the queued events. When a
// watched directory is no longer at its path, the events that moved it are
// queued by the time that is seen: read again, until nothing moves.
func (ix *manifestIndex) applyLocked(ctx context.Context) error {
	for round := 0; ; round++ {
		ix.qmu.Lock()
		ix.readEventsLocked()
		q, overflow := ix.queue, ix.qOverflow
		ix.queue, ix.qOverflow = nil, false
		ix.qmu.Unlock()
		if overflow {
			ix.rebuild = true
		}
		if ix.rebuild {
			return nil
		}
		moved, err := ix.applyEvents(ctx, q)
		if cap(q) <= 1<<20 {
			ix.qmu.Lock()
			if ix.queue == nil {
				ix.queue = q[:0]
			}
			ix.qmu.Unlock()
		}
		if err != nil || !moved {
			return err
		}
		if round >= 64 {
			ix.rebuild = true
			return nil
		}
		if round >= 2 {
			time.Sleep(time.Millisecond) // a rename between its move and its event
		}
	}
}

// applyEvents applies a batch of raw inotify events; moved reports events
// skipped because their directory was no longer where the index has it.
func (ix *manifestIndex) applyEvents(ctx context.Context, q []byte) (moved bool, err error) {
	var (
		cur      *idxDir
		curF     *os.File
		curOK    bool
		lastWd   int32 = -1
		lastName string
	)
	defer func() {
		if curF != nil {
			curF.Close()
		}
	}()
	for len(q) >= unix.SizeofInotifyEvent {
		wd := int32(binary.NativeEndian.Uint32(q[0:4]))
		mask := binary.NativeEndian.Uint32(q[4:8])
		n := int(binary.NativeEndian.Uint32(q[12:16]))
		if unix.SizeofInotifyEvent+n > len(q) {
			break
		}
		nameB := q[unix.SizeofInotifyEvent : unix.SizeofInotifyEvent+n]
		if i := bytes.IndexByte(nameB, 0); i >= 0 {
			nameB = nameB[:i]
		}
		q = q[unix.SizeofInotifyEvent+n:]
		if mask&unix.IN_Q_OVERFLOW != 0 {
			ix.rebuild = true
			return false, nil
		}
		d := ix.byWd[wd]
		if d == nil {
			continue // a watch already removed
		}
		if mask&unix.IN_IGNORED != 0 {
			delete(ix.byWd, wd)
			if d == ix.root {
				ix.rebuild = true
				return false, nil
			}
			// The kernel dropped the watch: the directory itself is gone.
			// Whatever is at its path now is another one, unwatched, and
			// may even have the same inode number (freed and reused), so
			// that the identity checks below would take it for the old
			// one. Forget the old one and look at the path afresh.
			if p := d.parent; p != nil && !d.dropped && p.subdirs[d.name] == d {
				ix.removeDir(p, d.name, []byte(d.name+"/"))
				if curF != nil {
					curF.Close()
				}
				cur, curF, curOK = nil, nil, false // the subtree may hold it
				pf, ok := ix.openWatched(p)
				if !ok {
					moved = true
					continue
				}
				err := ix.refresh(ctx, p, pf, d.name)
				pf.Close()
				if err != nil || ix.rebuild {
					return moved, err
				}
			}
			continue
		}
		if len(nameB) == 0 {
			// About the directory itself; a subdirectory's removal or move
			// is applied from its parent's events.
			if d == ix.root && mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_UNMOUNT) != 0 {
				ix.rebuild = true
				return false, nil
			}
			continue
		}
		if wd == lastWd && string(nameB) == lastName {
			continue // the kernel merges only identical events
		}
		lastWd, lastName = wd, string(nameB)
		if d != cur {
			if curF != nil {
				curF.Close()
				curF = nil
			}
			cur = d
			curF, curOK = ix.openWatched(d)
		}
		if !curOK {
			moved = true
			continue
		}
		if err := ix.refresh(ctx, d, curF, lastName); err != nil || ix.rebuild {
			return moved, err
		}
	}
	return moved, nil
}

// openWatched opens the watched directory d if it is still where the index
// has it.
func (ix *manifestIndex) openWatched(d *idxDir) (*os.File, bool) {
	f, err := ix.set.s.root.Open(d.rel)
	if err != nil {
		return nil, false
	}
	var st syscall.Stat_t
	if syscall.Fstat(int(f.Fd()), &st) != nil || uint64(st.Dev) != d.dev || st.Ino != d.ino {
		f.Close()
		return nil, false
	}
	return f, true
}

// refresh re-stats name in the watched directory d (open as f) and updates
// the index to match.
func (ix *manifestIndex) refresh(ctx context.Context, d *idxDir, f *os.File, name string) error {
	if d.dropped || name == reservedSegment {
		return nil
	}
	var st syscall.Stat_t
	err := fstatatNoFollow(int(f.Fd()), name, &st)
	if err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("stat %s: %w", displayRel(path.Join(d.rel, name)), err)
	}
	mode := st.Mode & syscall.S_IFMT
	if err != nil {
		mode = 0
	}
	fileSN := []byte(name)
	dirSN := append([]byte(name), '/')
	switch mode {
	case syscall.S_IFLNK:
		return symlinkUntrusted(path.Join(d.rel, name))
	case syscall.S_IFREG:
		ix.removeDir(d, name, dirSN)
		if changed, added := d.upsert(fileSN, kindFile, st.Size, etagHash(&st)); changed {
			ix.gen++
			if added {
				d.nFiles++
				if ix.keys++; ix.keys > maxIndexKeys {
					return tooManyKeys()
				}
			}
		}
		ref := multiRef{d, name}
		if st.Nlink > 1 {
			if _, ok := ix.multi[ref]; !ok {
				if len(ix.multi) >= maxHardLinked {
					return hardLinksUntrusted()
				}
				known := false
				for _, ino := range ix.multi {
					if known = ino == st.Ino; known {
						break
					}
				}
				if !known {
					// A new link to a file the index knows by another name
					// (or names) whose change time just moved without an
					// event: find them by walking again.
					ix.rebuild = true
				}
				ix.multi[ref] = st.Ino
			}
		} else {
			delete(ix.multi, ref)
		}
	case syscall.S_IFDIR:
		ix.removeFile(d, name, fileSN)
		if sub := d.subdirs[name]; sub != nil {
			if sub.dev == uint64(st.Dev) && sub.ino == st.Ino {
				// The same directory (chmod, a duplicate event): check it
				// can still be read, as a walk would.
				sf, err := ix.set.s.root.Open(sub.rel)
				if err != nil {
					if vanished(err) {
						return nil // its parent's events follow
					}
					return fmt.Errorf("open directory %s: %w", sub.rel, err)
				}
				sf.Close()
				return nil
			}
			ix.removeDir(d, name, dirSN)
		}
		childRel := path.Join(d.rel, name)
		sf, err := ix.set.s.root.Open(childRel)
		if err != nil {
			if vanished(err) {
				return nil
			}
			return fmt.Errorf("open directory %s: %w", childRel, err)
		}
		sub, err := ix.buildDir(ctx, sf, childRel, d, name)
		sf.Close()
		if errors.Is(err, errVanished) {
			return nil
		}
		if err != nil {
			return err
		}
		d.upsert(dirSN, kindDir, 0, 0)
		d.setSubdir(name, sub)
		ix.gen++
	default: // gone, or not a file the server serves
		ix.removeFile(d, name, fileSN)
		ix.removeDir(d, name, dirSN)
	}
	return nil
}

func (ix *manifestIndex) removeFile(d *idxDir, name string, sn []byte) {
	if d.remove(sn) {
		d.nFiles--
		ix.keys--
		ix.gen++
		delete(ix.multi, multiRef{d, name})
	}
}

func (ix *manifestIndex) removeDir(d *idxDir, name string, sn []byte) {
	sub := d.subdirs[name]
	if sub == nil {
		return
	}
	d.remove(sn)
	delete(d.subdirs, name)
	ix.drop(sub)
	ix.gen++
}

// drop forgets a subtree and removes its watches.
func (ix *manifestIndex) drop(d *idxDir) {
	d.dropped = true
	ix.keys -= d.nFiles
	if ix.byWd[d.wd] == d {
		delete(ix.byWd, d.wd)
		_, _ = unix.InotifyRmWatch(ix.ifd, uint32(d.wd))
	}
	for _, sub := range d.subdirs {
		ix.drop(sub)
	}
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

// buildDir watches and then scans the directory f (root-relative rel,
// called name in parent; parent nil for the base): watching first means
// every change after the scan's reads produces an event.
func (ix *manifestIndex) buildDir(ctx context.Context, f *os.File, rel string, parent *idxDir, name string) (*idxDir, error) {
	fd := int(f.Fd())
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", displayRel(rel), err)
	}
	if parent == nil || uint64(st.Dev) != parent.dev {
		var sfs unix.Statfs_t
		if err := indexFstatfs(fd, &sfs); err != nil {
			return nil, fmt.Errorf("statfs %s: %w", displayRel(rel), err)
		}
		if name, ok := remoteFSTypes[int64(sfs.Type)]; ok {
			return nil, &indexUntrusted{kind: "remotefs", permanent: true,
				reason: fmt.Sprintf("%s is on %s, where inotify does not see changes made by other machines", displayRel(rel), name),
				fix:    "run zarrfs serve on the machine whose disks hold the store"}
		}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil, errVanished
	}
	wd, err := inotifyAddWatch(ix.ifd, "/proc/self/fd/"+strconv.Itoa(fd), inotifyMask)
	if err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return nil, &indexUntrusted{kind: "watches", reason: "the inotify watch limit (fs.inotify.max_user_watches) is reached",
				fix: "raise it: sysctl -w fs.inotify.max_user_watches=1048576 (one watch per directory of each served store; about 1 KB of kernel memory each)"}
		}
		return nil, fmt.Errorf("watch %s: %w", displayRel(rel), err)
	}
	d := &idxDir{rel: rel, wd: int32(wd), dev: uint64(st.Dev), ino: st.Ino, parent: parent, name: name}
	if old := ix.byWd[d.wd]; old != nil {
		// The kernel watches this inode already: it was moved here (during
		// this scan, or with an event skipped because its old parent had
		// moved too), or it contains itself (a bind mount). A move: the old
		// place goes, the watch stays; the move's events, queued, follow.
		if old.parent == nil {
			return nil, &indexUntrusted{kind: "bindmount", reason: "the store contains itself at " + displayRel(rel) + " (a bind mount)",
				fix: "serve the store without bind mounts inside it"}
		}
		for a := parent; a != nil; a = a.parent {
			if a == old {
				return nil, &indexUntrusted{kind: "bindmount", reason: "the directory " + displayRel(rel) + " contains itself (a bind mount)",
					fix: "serve the store without bind mounts inside it"}
			}
		}
		delete(ix.byWd, old.wd)
		if old.parent.subdirs[old.name] == old {
			old.parent.remove([]byte(old.name + "/"))
			delete(old.parent.subdirs, old.name)
		}
		ix.drop(old)
		ix.gen++
	}
	ix.byWd[d.wd] = d

	wk := &manifestWalker{s: ix.set.s, ctx: ctx}
	list, err := wk.listDir(f, rel, "")
	if err != nil {
		if parent != nil && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR)) {
			// Removed while watched: its parent's event follows.
			delete(ix.byWd, d.wd)
			_, _ = unix.InotifyRmWatch(ix.ifd, uint32(d.wd))
			return nil, errVanished
		}
		return nil, err
	}
	if wk.symlink != "" {
		return nil, symlinkUntrusted(path.Join(rel, wk.symlink))
	}
	if len(ix.multi)+len(list.linked) > maxHardLinked {
		return nil, hardLinksUntrusted()
	}
	for _, l := range list.linked {
		ix.multi[multiRef{d, l.name}] = l.ino
	}
	// The listing becomes the index in place (its entries hold each file's
	// size and ETag hash already; what vanished is dead).
	d.arena, d.ents = list.arena, list.ents
	for i := range d.ents {
		if d.ents[i].kind == kindFile {
			d.nFiles++
		}
	}
	if ix.keys += d.nFiles; ix.keys > maxIndexKeys {
		return nil, tooManyKeys()
	}
	ents := d.ents
	for i := range ents {
		if ents[i].kind != kindDir {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		name := string(d.sortName(&ents[i]))
		name = name[:len(name)-1]
		childRel := path.Join(rel, name)
		beforeOpenDir(childRel)
		sub, err := ix.set.s.root.Open(childRel)
		if err != nil {
			if vanished(err) {
				ents[i].kind = kindDead
				continue
			}
			return nil, fmt.Errorf("open directory %s: %w", displayRel(childRel), err)
		}
		child, err := ix.buildDir(ctx, sub, childRel, d, name)
		sub.Close()
		if errors.Is(err, errVanished) {
			ents[i].kind = kindDead
			continue
		}
		if err != nil {
			return nil, err
		}
		d.setSubdir(name, child)
	}
	d.dead = 0
	for i := range d.ents {
		if d.ents[i].kind == kindDead {
			d.dead++
		}
	}
	d.merge() // drops what vanished or is not a regular file
	return d, nil
}

// idxDir is one watched directory: its entries sorted by name (a
// subdirectory's name with "/" appended: key order, see
// manifest_server.go), names in one arena, 24 bytes per entry (a dirEnt
// whose pre is the ETag's hash; kinds kindFile, kindDir, kindDead). Entries
// added after the last merge wait, unsorted, in pend; removed ones are
// marked dead in place. merge folds both in, at encode time or when pend
// grows past 1/8 of ents, so a writer creating files one by one costs
// amortized O(1) moves per file.
type idxDir struct {
	rel      string // root-relative path
	parent   *idxDir
	name     string // in parent
	wd       int32
	dev, ino uint64
	dropped  bool

	arena  []byte
	ents   []dirEnt
	dead   int // dead entries in ents
	pend   []dirEnt
	pendAt map[string]int32
	nFiles int // live files directly in this directory

	subdirs map[string]*idxDir // by name, without "/"
}

func (d *idxDir) sortName(e *dirEnt) []byte { return d.arena[e.off : e.off+uint32(e.n)] }

func (d *idxDir) setSubdir(name string, sub *idxDir) {
	if d.subdirs == nil {
		d.subdirs = map[string]*idxDir{}
	}
	d.subdirs[name] = sub
}

// lookup finds the entry (live or dead) with sort name sn.
func (d *idxDir) lookup(sn []byte) (e *dirEnt, inMain bool) {
	i, found := slices.BinarySearchFunc(d.ents, sn, func(e dirEnt, t []byte) int {
		return bytes.Compare(d.arena[e.off:e.off+uint32(e.n)], t)
	})
	if found {
		return &d.ents[i], true
	}
	if j, ok := d.pendAt[string(sn)]; ok {
		return &d.pend[j], false
	}
	return nil, false
}

// upsert sets an entry; changed: anything differs; added: it was not live.
func (d *idxDir) upsert(sn []byte, kind uint8, size int64, hash uint64) (changed, added bool) {
	if e, inMain := d.lookup(sn); e != nil {
		if e.kind == kindDead {
			if inMain {
				d.dead--
			}
			e.kind, e.size, e.pre = kind, size, hash
			return true, true
		}
		if e.kind == kind && e.size == size && e.pre == hash {
			return false, false
		}
		e.kind, e.size, e.pre = kind, size, hash
		return true, false
	}
	if uint64(len(d.arena))+uint64(len(sn)) > 1<<32-1 {
		d.merge() // compacts the arena
	}
	off := uint32(len(d.arena))
	d.arena = append(d.arena, sn...)
	if d.pendAt == nil {
		d.pendAt = map[string]int32{}
	}
	d.pendAt[string(sn)] = int32(len(d.pend))
	d.pend = append(d.pend, dirEnt{pre: hash, size: size, off: off, n: uint16(len(sn)), kind: kind})
	if len(d.pend) > max(256, len(d.ents)/8) {
		d.merge()
	}
	return true, true
}

// remove marks the live entry sn dead; false if there is none.
func (d *idxDir) remove(sn []byte) bool {
	e, inMain := d.lookup(sn)
	if e == nil || e.kind == kindDead {
		return false
	}
	e.kind = kindDead
	if inMain {
		if d.dead++; d.dead > 1024 && d.dead > len(d.ents)/2 {
			d.merge()
		}
	}
	return true
}

// merge folds pend into ents, drops dead entries and, when most of the
// arena is dead names, compacts it.
func (d *idxDir) merge() {
	if len(d.pend) == 0 && d.dead == 0 {
		return
	}
	if len(d.pend) == 0 {
		// Only removals: compact in place.
		d.ents = slices.DeleteFunc(d.ents, func(e dirEnt) bool { return e.kind == kindDead })
		d.dead = 0
		return
	}
	cmp := func(a, b dirEnt) int { return bytes.Compare(d.sortName(&a), d.sortName(&b)) }
	pend := slices.DeleteFunc(d.pend, func(e dirEnt) bool { return e.kind == kindDead })
	slices.SortFunc(pend, cmp)
	out := make([]dirEnt, 0, len(d.ents)-d.dead+len(pend))
	nameBytes := 0
	i, j := 0, 0
	for i < len(d.ents) || j < len(pend) {
		var e dirEnt
		switch {
		case i < len(d.ents) && d.ents[i].kind == kindDead:
			i++
			continue
		case j >= len(pend) || (i < len(d.ents) && cmp(d.ents[i], pend[j]) < 0):
			e = d.ents[i]
			i++
		default:
			e = pend[j]
			j++
		}
		nameBytes += int(e.n)
		out = append(out, e)
	}
	if len(d.arena) > 4096 && nameBytes < len(d.arena)/2 {
		arena := make([]byte, 0, nameBytes+nameBytes/8)
		for k := range out {
			sn := d.sortName(&out[k])
			out[k].off = uint32(len(arena))
			arena = append(arena, sn...)
		}
		d.arena = arena
	}
	d.ents, d.dead = out, 0
	d.pend = d.pend[:0]
	if cap(d.pend) > 4096 {
		d.pend = nil
	}
	d.pendAt = nil
}

// hashOfETag is the 64-bit value a fileETag spells in hex.
func hashOfETag(tag [18]byte) uint64 {
	var h uint64
	for _, c := range tag[1:17] {
		v := uint64(c - '0')
		if c >= 'a' {
			v = uint64(c-'a') + 10
		}
		h = h<<4 | v
	}
	return h
}

// etagOfHash spells h in hex between quotes: the ETag of a file.
func etagOfHash(h uint64) [18]byte {
	const digits = "0123456789abcdef"
	var b [18]byte
	b[0], b[17] = '"', '"'
	for i := 16; i >= 1; i-- {
		b[i] = digits[h&0xf]
		h >>= 4
	}
	return b
}

// etagHash is the 64-bit FNV-1a hash a file's ETag spells (see FileETag):
// the index keeps it as a number.
func etagHash(st *syscall.Stat_t) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for _, v := range [...]uint64{
		st.Ino, uint64(st.Size),
		uint64(st.Mtim.Sec)*1e9 + uint64(st.Mtim.Nsec),
		uint64(st.Ctim.Sec)*1e9 + uint64(st.Ctim.Nsec),
	} {
		for range 8 {
			h ^= v & 0xff
			h *= prime
			v >>= 8
		}
	}
	return h
}

// writeManifestLocked writes the manifest of the keys starting with
// prefix, uncompressed (header, entries, end record), and returns its tag.
func (ix *manifestIndex) writeManifestLocked(w io.Writer, prefix string, header bool) (string, error) {
	enc := newManifestEncoder(w)
	if header {
		if err := enc.header(); err != nil {
			return "", err
		}
	}
	if err := ix.encodeDir(enc, ix.root, "", prefix); err != nil {
		return "", err
	}
	if !header {
		return enc.tag(), nil // a tag alone: no end record needed
	}
	return enc.tag(), enc.end()
}

// encodeDir encodes the keys below d (keys starting with keyPfx) that
// start with prefix; keyPfx is always a prefix of prefix or has it as
// prefix.
func (ix *manifestIndex) encodeDir(enc *manifestEncoder, d *idxDir, keyPfx, prefix string) error {
	d.merge()
	lo, rest := 0, ""
	if len(prefix) > len(keyPfx) {
		rest = prefix[len(keyPfx):]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			// Only the subdirectory rest[:j] can hold matching keys.
			if sub := d.subdirs[rest[:j]]; sub != nil {
				return ix.encodeDir(enc, sub, keyPfx+rest[:j+1], prefix)
			}
			return nil
		}
	}
	restB := []byte(rest)
	if rest != "" {
		lo, _ = slices.BinarySearchFunc(d.ents, restB, func(e dirEnt, t []byte) int {
			return bytes.Compare(d.sortName(&e), t)
		})
	}
	for i := lo; i < len(d.ents); i++ {
		e := &d.ents[i]
		sn := d.sortName(e)
		if rest != "" && !bytes.HasPrefix(sn, restB) {
			break
		}
		switch e.kind {
		case kindFile:
			tag := etagOfHash(e.pre)
			if err := enc.addJoined(keyPfx, sn, e.size, tag[:]); err != nil {
				return err
			}
		case kindDir:
			sub := d.subdirs[string(sn[:len(sn)-1])]
			if sub == nil {
				continue
			}
			if err := ix.encodeDir(enc, sub, keyPfx+string(sn), prefix); err != nil {
				return err
			}
		}
	}
	return nil
}

// newManifestZstd is the compressor every manifest response uses. With
// background set, each block is compressed and written on a goroutine of
// the encoder while the caller fills the next one (the same bytes come
// out): the compression then takes another core instead of adding to the
// encode. Only for a w that may be written from another goroutine between
// the caller's calls (a chunkBuffer, not an http.ResponseWriter, which the
// encoder could still be writing to when a failed request's handler
// returns).
func newManifestZstd(w io.Writer, background bool) (*zstd.Encoder, error) {
	conc := 1
	if background {
		conc = 2
	}
	return zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(conc),
		zstd.WithWindowSize(1<<20), zstd.WithEncoderCRC(true))
}

// compressedLocked encodes and compresses the manifest of prefix.
func (ix *manifestIndex) compressedLocked(prefix string) (tag string, body *chunkBuffer, err error) {
	body = &chunkBuffer{}
	zw, err := newManifestZstd(body, true)
	if err != nil {
		return "", nil, err
	}
	tag, err = ix.writeManifestLocked(zw, prefix, true)
	if cerr := zw.Close(); err == nil { // Close also waits for the encoder's goroutines
		err = cerr
	}
	if err != nil {
		return "", nil, err
	}
	return tag, body, nil
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
