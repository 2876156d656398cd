package serve

// One directory's listing, in key order, its files stat'ed: what a walk
// emits and what an index keeps (idxdir.go) as its own.
//
// Key order: a directory's entries are sorted with "/" appended to the
// names of subdirectories, which makes the depth-first order exactly the
// byte order of the full keys ("a.b" < "a/x", since '.' < '/').

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"github.com/zarrfs/zarrfs/remote/wire"
	"golang.org/x/sys/unix"
)

// Entry kinds of a listed directory.
const (
	kindFile = iota
	kindDir
	kindLinkFile // symlink to a regular file inside the root
	kindLinkDir  // symlink to a directory inside the root
	kindDead     // in an index: removed (its name stays until a merge)
)

// listEnt is one entry of a directory while it is listed and sorted: its
// name (with the "/" of a directory) is arena[off:off+n]; sortPrefix holds
// the name's first 8 bytes, big-endian, so most comparisons of the sort are
// one integer comparison; pos is its listing position (getdents order),
// which indexes the stat results (dirListing.metas). NAME_MAX is 255, so n
// fits in 16 bits.
//
// Once sorted, each listEnt becomes a dirEnt in place (dirListing.resolve):
// the two types have the same layout, so a million keys are listed, sorted
// and indexed in one array, 24 bytes each.
type listEnt struct {
	sortPrefix uint64
	pos        int64
	off        uint32
	n          uint16
	kind       uint8
}

// dirEnt is one entry of a listed (sorted, stat'ed) directory, and of an
// index (idxdir.go), which keeps the listing as its own: its name as in
// listEnt; for a file, hash is its ETag's hash (wire.FileHash) and size its
// size; a directory has neither.
type dirEnt struct {
	hash uint64
	size int64
	off  uint32
	n    uint16
	kind uint8
}

// listEnt and dirEnt must stay the same size (dirEntsOf reuses the memory
// of one as the other): these fail to compile otherwise.
var (
	_ [unsafe.Sizeof(listEnt{}) - unsafe.Sizeof(dirEnt{})]struct{}
	_ [unsafe.Sizeof(dirEnt{}) - unsafe.Sizeof(listEnt{})]struct{}
)

// dirEntsOf is the memory of l as dirEnts. The caller turns each element
// into a dirEnt before reading it as one.
func dirEntsOf(l []listEnt) []dirEnt {
	if len(l) == 0 {
		return nil
	}
	return unsafe.Slice((*dirEnt)(unsafe.Pointer(unsafe.SliceData(l))), len(l))
}

// dirListing is one directory's entries: names (with "/" after a
// directory's name) in one arena, 24 bytes of index per entry. While listDir
// lists and sorts, the entries are listed (listEnts) and metas holds what
// the stat of each listing position found; once listDir returns they are
// ents (dirEnts, in key order, the same memory): a file's entry holds its
// size and ETag hash, or is kindDead when the stat did not list it.
type dirListing struct {
	arena  []byte
	listed []listEnt
	ents   []dirEnt
	metas  [][]fileMeta // position p: metas[p/statBatch][p%statBatch]
	linked []linkedFile
}

// resolve turns the entries of part (sorted, so in no particular listing
// order) into dirEnts, in place, with what their stat found.
func (l *dirListing) resolve(part []listEnt) {
	out := dirEntsOf(part)
	for i := range part {
		le := part[i] // a copy: out[i] is the same memory
		de := dirEnt{off: le.off, n: le.n, kind: le.kind}
		if le.kind == kindFile || le.kind == kindLinkFile {
			p := int(le.pos)
			if m := l.metas[p/statBatch][p%statBatch]; m.size < 0 {
				de.kind = kindDead
			} else {
				de.hash, de.size = m.hash, m.size
			}
		}
		out[i] = de
	}
}

func (d *dirListing) name(e dirEnt) string { return string(d.nameBytes(e)) }

func (d *dirListing) nameBytes(e dirEnt) []byte {
	n := d.arena[e.off : e.off+uint32(e.n)]
	if e.kind == kindDir || e.kind == kindLinkDir {
		n = n[:len(n)-1]
	}
	return n
}

// displayRel names a root-relative path in messages sent to the client.
func displayRel(rel string) string {
	if rel == "." {
		return "the store's root"
	}
	return rel
}

func fstatatNoFollow(dirfd int, name string, st *syscall.Stat_t) error {
	var ust unix.Stat_t
	for {
		err := unix.Fstatat(dirfd, name, &ust, unix.AT_SYMLINK_NOFOLLOW)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		*st = syscall.Stat_t{
			Dev: ust.Dev, Ino: ust.Ino, Nlink: ust.Nlink, Mode: ust.Mode, Size: ust.Size,
			Mtim: syscall.Timespec(ust.Mtim), Ctim: syscall.Timespec(ust.Ctim),
		}
		return nil
	}
}

// listDir lists f in key order (see the file comment) and stats its files
// (those matching the walk's prefix, keys starting with keyPfx) while it
// lists (statPipeline). It reads the directory entries with getdents(2)
// itself: os.File.ReadDir on a File opened through an os.Root lstat()s
// every entry, which for a million chunks costs more than everything else
// together. Only single names come out of it, and they are used relative
// to f, so the Root's confinement is kept.
func (wk *manifestWalker) listDir(f *os.File, rel, keyPfx string) (list *dirListing, err error) {
	fd := int(f.Fd())
	fail := func(err error) (*dirListing, error) {
		return nil, fmt.Errorf("read directory %s: %w", displayRel(rel), err)
	}
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		return fail(err)
	}
	var filter func(name []byte) bool
	if wk.prefix != "" {
		filter = func(name []byte) bool { return keyHasPrefix(keyPfx, name, wk.prefix) }
	}
	d := &dirListing{}
	p := wk.startStats(d, fd, rel)
	defer func() {
		if serr := p.stop(); serr != nil && err == nil {
			list, err = nil, serr
		}
	}()
	buf := make([]byte, 128<<10)
	sent := 0 // positions handed to the workers
	for {
		if err := wk.ctx.Err(); err != nil {
			return nil, err
		}
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fail(err)
		}
		if n <= 0 {
			break
		}
		for rec := buf[:n]; len(rec) >= 19; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name NUL-terminated.
			reclen := int(binary.NativeEndian.Uint16(rec[16:18]))
			if reclen < 19 || reclen > len(rec) {
				return fail(errors.New("malformed directory entry"))
			}
			typ := rec[18]
			name := rec[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			rec = rec[reclen:]
			if err := wk.addEntry(d, fd, rel, name, typ); err != nil {
				return fail(err)
			}
		}
		for ; len(d.listed)-sent >= statBatch; sent += statBatch {
			if err := p.dispatch(sent, sent+statBatch, filter); err != nil {
				return nil, err
			}
		}
	}
	if sent < len(d.listed) {
		if err := p.dispatch(sent, len(d.listed), filter); err != nil {
			return nil, err
		}
	}
	if err := p.stop(); err != nil {
		return nil, err
	}
	sortEntries(d.listed, func(a, b listEnt) int {
		if a.sortPrefix != b.sortPrefix {
			if a.sortPrefix < b.sortPrefix {
				return -1
			}
			return 1
		}
		return bytes.Compare(d.arena[a.off:a.off+uint32(a.n)], d.arena[b.off:b.off+uint32(b.n)])
	}, d.resolve)
	d.ents, d.listed, d.metas = dirEntsOf(d.listed), nil, nil
	d.arena = sortedArena(d.arena, d.ents)
	return d, nil
}

// sortedArena copies the names of ents into a new arena in the order of
// ents (updating their offsets) and returns it. Names are read in key
// order by every encode of the listing; in getdents order each read is a
// cache miss, in key order it is sequential. Large listings are copied on
// up to GOMAXPROCS cores.
func sortedArena(arena []byte, ents []dirEnt) []byte {
	parts := 1
	if len(ents) >= 1<<15 {
		parts = min(runtime.GOMAXPROCS(0), 8)
	}
	bounds := make([]int, parts+1) // part k is ents[bounds[k]:bounds[k+1]]
	starts := make([]int, parts+1) // and its names go to out[starts[k]:]
	for k := range parts {
		bounds[k+1] = len(ents) * (k + 1) / parts
		n := 0
		for _, e := range ents[bounds[k]:bounds[k+1]] {
			n += int(e.n)
		}
		starts[k+1] = starts[k] + n
	}
	out := make([]byte, starts[parts])
	copyPart := func(k int) {
		at := starts[k]
		for i := bounds[k]; i < bounds[k+1]; i++ {
			e := &ents[i]
			copy(out[at:], arena[e.off:e.off+uint32(e.n)])
			e.off = uint32(at)
			at += int(e.n)
		}
	}
	var wg sync.WaitGroup
	for k := 1; k < parts; k++ {
		wg.Go(func() { copyPart(k) })
	}
	copyPart(0)
	wg.Wait()
	return out
}

// keyHasPrefix reports whether keyPfx+name starts with prefix.
func keyHasPrefix(keyPfx string, name []byte, prefix string) bool {
	if len(prefix) <= len(keyPfx) {
		return strings.HasPrefix(keyPfx, prefix)
	}
	return strings.HasPrefix(prefix, keyPfx) && bytes.HasPrefix(name, []byte(prefix[len(keyPfx):]))
}

// addEntry adds one directory entry to d, classified by its d_type (or an
// lstat where the file system does not say).
func (wk *manifestWalker) addEntry(d *dirListing, fd int, rel string, name []byte, typ uint8) error {
	if len(name) == 0 || string(name) == "." || string(name) == ".." || string(name) == wire.ReservedSegment {
		return nil
	}
	if typ == unix.DT_UNKNOWN {
		var st syscall.Stat_t
		if err := fstatatNoFollow(fd, string(name), &st); err != nil {
			return nil // gone since the listing
		}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			typ = unix.DT_REG
		case syscall.S_IFDIR:
			typ = unix.DT_DIR
		case syscall.S_IFLNK:
			typ = unix.DT_LNK
		}
	}
	if typ == unix.DT_LNK && wk.symlink == "" {
		wk.symlink = string(name)
	}
	var kind uint8
	switch typ {
	case unix.DT_REG:
		kind = kindFile
	case unix.DT_DIR:
		kind = kindDir
	case unix.DT_LNK:
		fi, err := wk.s.root.Stat(path.Join(rel, string(name)))
		switch {
		case err != nil:
			return nil // dangling, or leads outside the root: GET will not serve it either
		case fi.IsDir():
			kind = kindLinkDir
		case fi.Mode().IsRegular():
			kind = kindLinkFile
		default:
			return nil
		}
	default:
		return nil // devices, FIFOs, sockets are never served
	}
	if uint64(len(d.arena))+uint64(len(name))+1 > 1<<32-1 {
		return errors.New("more than 4 GiB of names")
	}
	off := uint32(len(d.arena))
	d.arena = append(d.arena, name...)
	if kind == kindDir || kind == kindLinkDir {
		d.arena = append(d.arena, '/')
	}
	sortName := d.arena[off:]
	var prefix [8]byte
	copy(prefix[:], sortName)
	d.listed = append(d.listed, listEnt{sortPrefix: binary.BigEndian.Uint64(prefix[:]), pos: int64(len(d.listed)), off: off, n: uint16(len(sortName)), kind: kind})
	return nil
}
