package remote

// The server side of the manifest: a depth-first walk of the served tree in
// key order, streamed through a zstd encoder as it goes. Memory is bounded
// by the directories on the current path (the names of each, packed in one
// arena) plus the encoder's window, never by the number of keys: a store of
// a million chunks in one directory holds about 20 MB of names while that
// directory is walked.
//
// Key order: a directory's entries are sorted with "/" appended to the
// names of subdirectories, which makes the depth-first order exactly the
// byte order of the full keys ("a.b" < "a/x", since '.' < '/').
//
// Symlinks are followed when they resolve inside the root (the same rule
// GET applies through os.Root), so every key GET can serve is listed and
// nothing else; a symlink cycle is cut where a directory would be entered a
// second time on the same path.
//
// Most requests do not walk: they are answered from the store's index
// (manifest_index.go), which this walker's code builds and inotify keeps
// current. The walk per request remains for stores the index cannot be
// trusted with (symlinks, remote file systems, limits).

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// manifestFlushInterval bounds how long a client waits for the next bytes
// of a manifest while the server walks (the client's stall timeout is far
// longer).
const manifestFlushInterval = time.Second

func (s *Server) serveManifest(w http.ResponseWriter, r *http.Request, base string) {
	prefix := strings.TrimPrefix(r.URL.Query().Get("prefix"), "/")
	if len(prefix) > maxManifestKey || strings.IndexByte(prefix, 0) >= 0 {
		http.Error(w, "400 bad request: bad prefix", http.StatusBadRequest)
		return
	}
	rel := base
	if rel == "" {
		rel = "."
	}
	dir, err := s.root.Open(rel)
	if err != nil {
		s.fail(w, r, openStatus(err), err)
		return
	}
	defer dir.Close()
	fi, err := dir.Stat()
	if err != nil || !fi.IsDir() {
		http.NotFound(w, r)
		return
	}

	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && s.indexes != nil {
		if s.serveManifestFromIndex(w, r, base, st, prefix) {
			return
		}
	}
	select {
	case s.manifestSlots <- struct{}{}:
		defer func() { <-s.manifestSlots }()
	case <-r.Context().Done():
		return
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		// Revalidation costs a walk (the stat calls) but no compression
		// and no transfer.
		enc := newManifestEncoder(io.Discard)
		wk := &manifestWalker{s: s, ctx: r.Context(), prefix: prefix, enc: enc}
		if err := wk.walk(dir, rel, ""); err == nil && etagListMatches(inm, enc.tag()) {
			h.Set("ETag", enc.tag())
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if _, err := dir.Seek(0, io.SeekStart); err != nil {
			s.fail(w, r, http.StatusInternalServerError, err)
			return
		}
	}
	h.Set("Content-Type", ManifestContentType)
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusOK)

	zw, err := newManifestZstd(w)
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	enc := newManifestEncoder(zw)
	flusher, _ := w.(http.Flusher)
	flush := func() error {
		if err := enc.w.Flush(); err != nil {
			return err
		}
		if err := zw.Flush(); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	}
	if err := enc.header(); err != nil {
		return
	}
	if flush() != nil {
		return
	}
	wk := &manifestWalker{s: s, ctx: r.Context(), prefix: prefix, enc: enc, flush: flush, lastFlush: s.now()}
	werr := wk.walk(dir, rel, "")
	switch {
	case werr == nil:
		err = enc.end()
	case wk.writeErr != nil || r.Context().Err() != nil:
		// The client went away; nothing more to say to it.
		zw.Reset(io.Discard)
		return
	default:
		s.log.Warn("serve: manifest cut short", "path", r.URL.EscapedPath(), "error", werr.Error())
		err = enc.fail(werr.Error())
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		panic(http.ErrAbortHandler)
	}
}

// serveManifestFromIndex answers from the index of base; false: the index
// cannot answer (being off for this store), walk instead.
func (s *Server) serveManifestFromIndex(w http.ResponseWriter, r *http.Request, base string, st *syscall.Stat_t, prefix string) bool {
	ix := s.indexes.get(base)
	if ix == nil {
		return false
	}
	a, err := ix.answer(r.Context(), uint64(st.Dev), st.Ino, prefix, r.Header.Get("If-None-Match"), r.Method == http.MethodHead)
	switch {
	case errors.Is(err, errIndexOff):
		return false
	case err != nil:
		if r.Context().Err() == nil {
			s.fail(w, r, http.StatusServiceUnavailable, err)
		}
		return true
	}
	h := w.Header()
	h.Set("ETag", a.tag)
	if a.body == nil && r.Method != http.MethodHead {
		w.WriteHeader(http.StatusNotModified)
		return true
	}
	h.Set("Content-Type", ManifestContentType)
	if a.body != nil {
		h.Set("Content-Length", strconv.Itoa(a.body.Len()))
	}
	w.WriteHeader(http.StatusOK)
	if a.body != nil {
		_, _ = a.body.WriteTo(w)
	}
	return true
}

// etagListMatches evaluates If-None-Match (weak comparison, RFC 9110
// 13.1.2) against tag.
func etagListMatches(list, tag string) bool {
	for t := range strings.SplitSeq(list, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == tag {
			return true
		}
	}
	return false
}

// manifestWalker walks one manifest request's tree.
type manifestWalker struct {
	s      *Server
	ctx    context.Context
	prefix string
	enc    *manifestEncoder

	flush     func() error // nil: never flush (hash-only walks)
	lastFlush time.Time
	sinceTick int
	writeErr  error // the first write error: the client is gone

	// For index builds: onFile, when set, takes each listed file instead
	// of the encoder; symlink is the first symlink name readDir met.
	onFile  func(e *dirEnt, r *fileStat) error
	symlink string

	ancestors [][2]uint64   // (dev, ino) of the directories being walked
	stats     [2][]fileStat // statFiles' result buffers, reused
}

// Entry kinds of a listed directory.
const (
	kindFile = iota
	kindDir
	kindLinkFile // symlink to a regular file inside the root
	kindLinkDir  // symlink to a directory inside the root
	kindDead     // in an index: removed (its name stays until a merge)
)

// dirEntries is one directory's entries, packed: names (with "/" after a
// directory's name) in one arena, 24 bytes of index per entry.
type dirEntries struct {
	arena []byte
	ents  []dirEnt
}

// dirEnt is one entry: its name (with the "/" of a directory) is
// arena[off:off+n]; pre holds the name's first 8 bytes, big-endian, so most
// comparisons of the sort are one integer comparison. NAME_MAX is 255, so n
// fits in 16 bits. An index (manifest_index.go) keeps the sorted listing
// as its own, in place: pre then holds the file's ETag (see hashOfETag)
// and size its size, so a million keys are listed and indexed in one array.
type dirEnt struct {
	pre  uint64
	size int64
	off  uint32
	n    uint16
	kind uint8
}

func (d *dirEntries) name(e dirEnt) string { return string(d.nameBytes(e)) }

func (d *dirEntries) nameBytes(e dirEnt) []byte {
	n := d.arena[e.off : e.off+uint32(e.n)]
	if e.kind == kindDir || e.kind == kindLinkDir {
		n = n[:len(n)-1]
	}
	return n
}

// wants reports whether a key may be in the manifest (prefix filter).
func (wk *manifestWalker) wantsKey(key string) bool { return strings.HasPrefix(key, wk.prefix) }

// wantsDir reports whether keys below dirKey ("a/b/") may match the prefix.
func (wk *manifestWalker) wantsDir(dirKey string) bool {
	return strings.HasPrefix(dirKey, wk.prefix) || strings.HasPrefix(wk.prefix, dirKey)
}

// walk emits every file below the open directory f (root-relative path rel,
// keys starting with keyPfx) in key order.
func (wk *manifestWalker) walk(f *os.File, rel, keyPfx string) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("stat %s: %w", displayRel(rel), err)
	}
	id := [2]uint64{uint64(st.Dev), st.Ino}
	if slices.Contains(wk.ancestors, id) || len(wk.ancestors) >= 256 {
		return nil // a symlink cycle (or absurd depth): do not enter again
	}
	wk.ancestors = append(wk.ancestors, id)
	defer func() { wk.ancestors = wk.ancestors[:len(wk.ancestors)-1] }()

	list, err := wk.readDir(f, rel)
	if err != nil {
		if keyPfx != "" && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR)) {
			return nil // removed (or replaced by a file) since its parent was listed
		}
		return err
	}
	ents := list.ents
	for i := 0; i < len(ents); {
		if err := wk.ctx.Err(); err != nil {
			return err
		}
		e := ents[i]
		if e.kind == kindDir || e.kind == kindLinkDir {
			i++
			name := list.name(e)
			key := keyPfx + name + "/"
			if !wk.wantsDir(key) {
				continue
			}
			childRel := path.Join(rel, name)
			sub, err := wk.s.root.Open(childRel)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				return fmt.Errorf("open directory %s: %w", displayRel(childRel), err)
			}
			err = wk.walk(sub, childRel, key)
			sub.Close()
			if err != nil {
				return err
			}
			continue
		}
		// A run of files: stat them in parallel, emit them in order.
		j := i
		for j < len(ents) && j-i < statBatch && ents[j].kind != kindDir && ents[j].kind != kindLinkDir {
			j++
		}
		if err := wk.statFiles(f, rel, keyPfx, list, ents[i:j]); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// statBatch is how many files are stat'ed together; batches are stat'ed by
// worker goroutines one ahead of the batch being encoded, because the stat
// calls are most of the walk's time.
const statBatch = 2048

// fileStat is what the manifest needs of a file.
type fileStat struct {
	listed bool // a regular file matching the prefix
	size   int64
	nlink  uint64
	ino    uint64
	etag   [18]byte
	err    error
}

// statFiles stats a run of file entries of the directory f and emits the
// regular files among them, in order.
func (wk *manifestWalker) statFiles(f *os.File, rel, keyPfx string, list *dirEntries, run []dirEnt) error {
	fd := int(f.Fd())
	one := func(e dirEnt, r *fileStat) {
		*r = fileStat{}
		// The name shares the arena, which nothing changes during the
		// walk, and is used only within this call: no allocation per file.
		name := unsafe.String(unsafe.SliceData(list.nameBytes(e)), len(list.nameBytes(e)))
		if wk.prefix != "" && !wk.wantsKey(keyPfx+name) {
			return
		}
		var st syscall.Stat_t
		if e.kind == kindLinkFile {
			fi, err := wk.s.root.Stat(path.Join(rel, name))
			if err != nil || !fi.Mode().IsRegular() {
				return // gone, or no longer a file inside the root
			}
			st = *fi.Sys().(*syscall.Stat_t)
		} else if err := fstatatNoFollow(fd, name, &st); err != nil {
			if !errors.Is(err, syscall.ENOENT) { // ENOENT: removed since the listing
				r.err = fmt.Errorf("stat %s: %w", displayRel(path.Join(rel, name)), err)
			}
			return
		} else if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			return
		}
		r.listed, r.size, r.nlink, r.ino, r.etag = true, st.Size, uint64(st.Nlink), st.Ino, fileETag(&st)
	}
	workers := min(runtime.GOMAXPROCS(0), 4)
	// start stats batch into res in the background; the returned func waits.
	start := func(batch []dirEnt, res []fileStat) func() {
		var wg sync.WaitGroup
		n := max(1, min(workers, len(batch)/64))
		for w := range n {
			wg.Go(func() {
				for k := w; k < len(batch); k += n {
					one(batch[k], &res[k])
				}
			})
		}
		return wg.Wait
	}
	if len(wk.stats[0]) < statBatch {
		wk.stats = [2][]fileStat{make([]fileStat, statBatch), make([]fileStat, statBatch)}
	}
	next := min(statBatch, len(run))
	wait := start(run[:next], wk.stats[0])
	// Every started batch is waited for before returning: the workers use
	// f, which the caller closes.
	for off, cur := 0, 0; off < len(run); off, cur = off+statBatch, 1-cur {
		end := min(off+statBatch, len(run))
		wait()
		wait = func() {}
		if end < len(run) {
			next = min(end+statBatch, len(run))
			wait = start(run[end:next], wk.stats[1-cur])
		}
		for k := range end - off {
			r := &wk.stats[cur][k]
			if r.err != nil {
				wait()
				return r.err
			}
			if r.listed {
				var err error
				if wk.onFile != nil {
					err = wk.onFile(&run[off+k], r)
				} else {
					err = wk.emit(keyPfx, list.nameBytes(run[off+k]), r.size, r.etag[:])
				}
				if err != nil {
					wait()
					return err
				}
			}
		}
	}
	return nil
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

// readDir lists f in key order (see the file comment). It reads the
// directory entries with getdents(2) itself: os.File.ReadDir on a File
// opened through an os.Root lstat()s every entry, which for a million
// chunks costs more than everything else together. Only single names come
// out of it, and they are used relative to f, so the Root's confinement is
// kept.
func (wk *manifestWalker) readDir(f *os.File, rel string) (*dirEntries, error) {
	fd := int(f.Fd())
	fail := func(err error) (*dirEntries, error) {
		return nil, fmt.Errorf("read directory %s: %w", displayRel(rel), err)
	}
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		return fail(err)
	}
	d := &dirEntries{}
	buf := make([]byte, 128<<10)
	for {
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
	}
	slices.SortFunc(d.ents, func(a, b dirEnt) int {
		if a.pre != b.pre {
			if a.pre < b.pre {
				return -1
			}
			return 1
		}
		return bytes.Compare(d.arena[a.off:a.off+uint32(a.n)], d.arena[b.off:b.off+uint32(b.n)])
	})
	return d, nil
}

// addEntry adds one directory entry to d, classified by its d_type (or an
// lstat where the file system does not say).
func (wk *manifestWalker) addEntry(d *dirEntries, fd int, rel string, name []byte, typ uint8) error {
	if len(name) == 0 || string(name) == "." || string(name) == ".." || string(name) == reservedSegment {
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
	var pre [8]byte
	copy(pre[:], sortName)
	d.ents = append(d.ents, dirEnt{pre: binary.BigEndian.Uint64(pre[:]), off: off, n: uint16(len(sortName)), kind: kind})
	return nil
}

// emit writes one entry, flushing now and then so the client sees progress.
func (wk *manifestWalker) emit(keyPfx string, name []byte, size int64, etag []byte) error {
	if err := wk.enc.addJoined(keyPfx, name, size, etag); err != nil {
		wk.writeErr = err
		return err
	}
	if wk.flush == nil {
		return nil
	}
	if wk.sinceTick++; wk.sinceTick < 4096 {
		return nil
	}
	wk.sinceTick = 0
	if now := wk.s.now(); now.Sub(wk.lastFlush) >= manifestFlushInterval {
		wk.lastFlush = now
		if err := wk.flush(); err != nil {
			wk.writeErr = err
			return err
		}
	}
	return nil
}
