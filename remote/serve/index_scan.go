package serve

// An index's scan of a directory: watch it first, then list it (the
// listing becomes the index's own, idxdir.go), then its subdirectories.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

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
