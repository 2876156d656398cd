package serve

// The inotify side of an index: the reader goroutine that drains the
// kernel's queue, and the application of queued events to the index (a
// re-stat of the one name each is about). Locks: see index.go.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path"
	"syscall"
	"time"

	"github.com/zarrfs/zarrfs/remote/wire"
	"golang.org/x/sys/unix"
)

// inotifyMask is what every watched directory reports.
const inotifyMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_ATTRIB |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF |
	unix.IN_ONLYDIR | unix.IN_EXCL_UNLINK

// maxQueuedEventBytes bounds the events read from the kernel but not yet
// applied (while a request holds the index to encode); beyond it the index
// is rebuilt, as after IN_Q_OVERFLOW. A variable for tests.
var maxQueuedEventBytes = 32 << 20

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
	if d.dropped || name == wire.ReservedSegment {
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
		if changed, added := d.upsert(fileSN, kindFile, st.Size, wire.FileHash(&st)); changed {
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
