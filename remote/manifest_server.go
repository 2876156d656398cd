package remote

// The server side of the manifest: a depth-first walk of the served tree in
// key order, streamed through a zstd encoder as it goes. Memory is bounded
// by the directories on the current path (24 bytes per entry, the names of
// each packed in one arena) plus the encoder's window, never by the number
// of keys below: a store of a million chunks in one directory holds about
// 35 MB while that directory is walked, 16 MB more while it is listed and
// stat'ed (statPipeline).
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

	zw, err := newManifestZstd(w, false)
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

	// symlink is the first symlink name listDir met (an index build
	// gives up on it).
	symlink string

	ancestors [][2]uint64 // (dev, ino) of the directories being walked
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
// fits in 16 bits. Once a listing is stat'ed and sorted, a file's pre holds
// its ETag's hash (see hashOfETag) and size its size; an index
// (manifest_index.go) keeps the listing as its own, in place, so a million
// keys are listed and indexed in one array.
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

	list, err := wk.listDir(f, rel, keyPfx)
	if err != nil {
		if keyPfx != "" && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR)) {
			return nil // removed (or replaced by a file) since its parent was listed
		}
		return err
	}
	for i, e := range list.ents {
		if i%statBatch == 0 {
			if err := wk.ctx.Err(); err != nil {
				return err
			}
		}
		if e.kind == kindDir || e.kind == kindLinkDir {
			name := list.name(e)
			key := keyPfx + name + "/"
			if !wk.wantsDir(key) {
				continue
			}
			childRel := path.Join(rel, name)
			beforeOpenDir(childRel)
			sub, err := wk.s.root.Open(childRel)
			if err != nil {
				if vanished(err) {
					continue // removed or replaced since its parent was listed
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
		if e.kind == kindFile || e.kind == kindLinkFile {
			tag := etagOfHash(e.pre)
			if err := wk.emit(keyPfx, list.nameBytes(e), e.size, tag[:]); err != nil {
				return err
			}
		}
	}
	return nil
}

// statBatch is how many consecutive listing positions one stat job covers.
const statBatch = 2048

// fileMeta is what the stat of one listed file found.
type fileMeta struct {
	size int64  // -1: not listed (removed since getdents, not a regular file, outside the prefix, or a directory)
	hash uint64 // the ETag's hash (see hashOfETag)
}

// linkedFile is a listed file with more than one hard link.
type linkedFile struct {
	name string
	ino  uint64
}

// dirListing is one directory's entries in key order (dirEntries), the
// files among them stat'ed. Once listDir returns, a file's entry holds its
// size and its ETag's hash in pre, or is kindDead when the stat did not
// list it; a directory's size is 0. Until then, while the entries are
// listed and sorted, size holds the entry's listing position (getdents
// order), which indexes metas.
type dirListing struct {
	dirEntries
	metas  [][]fileMeta // position p: metas[p/statBatch][p%statBatch]
	linked []linkedFile
}

// resolve gives the entries of part (sorted, so in no particular listing
// order) what their stat found.
func (l *dirListing) resolve(part []dirEnt) {
	for i := range part {
		e := &part[i]
		switch e.kind {
		case kindFile, kindLinkFile:
			p := int(e.size)
			m := l.metas[p/statBatch][p%statBatch]
			if m.size < 0 {
				e.kind = kindDead
				continue
			}
			e.pre, e.size = m.hash, m.size
		default:
			e.size = 0
		}
	}
}

// statJob is statBatch consecutive listing positions to stat. Its names
// are copies: the listing's arena moves as it grows.
type statJob struct {
	names  []byte
	items  []statItem
	res    []fileMeta // becomes one of the listing's metas
	linked []linkedFile
	lo     int // listing position of items[0]
	err    error
}

type statItem struct {
	off  uint32 // in names
	n    uint16
	kind uint8 // kindFile, kindLinkFile; anything else is not stat'ed
}

// statPipeline stats a directory's files while it is still being listed:
// the lister hands full batches of positions to worker goroutines and goes
// on reading the directory, so getdents, fstatat and the lister's own work
// overlap instead of following each other. At most maxInflight jobs exist,
// which bounds the names copied ahead of the workers.
type statPipeline struct {
	wk   *manifestWalker
	list *dirListing
	fd   int
	rel  string

	todo        chan *statJob
	done        chan *statJob // never full: as large as the jobs in flight
	free        []*statJob
	inflight    int
	maxInflight int
	stopped     bool
	wg          sync.WaitGroup
	err         error // the first stat error
}

func (wk *manifestWalker) startStats(list *dirListing, fd int, rel string) *statPipeline {
	workers := min(runtime.GOMAXPROCS(0), 4)
	p := &statPipeline{wk: wk, list: list, fd: fd, rel: rel, maxInflight: 2*workers + 2}
	p.todo = make(chan *statJob, p.maxInflight)
	p.done = make(chan *statJob, p.maxInflight)
	for range workers {
		p.wg.Go(func() {
			var st syscall.Stat_t
			for j := range p.todo {
				p.run(j, &st)
				p.done <- j
			}
		})
	}
	return p
}

// dispatch hands the listing positions [lo, hi) to the workers; filter,
// when not nil, says which files to stat (the others are left out).
func (p *statPipeline) dispatch(lo, hi int, filter func(name []byte) bool) error {
	j := p.job()
	if p.err != nil {
		p.free = append(p.free, j)
		p.inflight--
		return p.err
	}
	d := &p.list.dirEntries
	j.lo, j.err = lo, nil
	j.names, j.items, j.linked = j.names[:0], j.items[:0], j.linked[:0]
	j.res = make([]fileMeta, hi-lo)
	p.list.metas = append(p.list.metas, j.res)
	for _, e := range d.ents[lo:hi] {
		it := statItem{kind: kindDead}
		if e.kind == kindFile || e.kind == kindLinkFile {
			name := d.arena[e.off : e.off+uint32(e.n)]
			if filter == nil || filter(name) {
				it = statItem{off: uint32(len(j.names)), n: e.n, kind: e.kind}
				j.names = append(j.names, name...)
			}
		}
		j.items = append(j.items, it)
	}
	p.todo <- j
	return nil
}

// job returns a job to fill: a free one, a new one, or the next one done.
func (p *statPipeline) job() *statJob {
	for {
		if n := len(p.free); n > 0 {
			j := p.free[n-1]
			p.free = p.free[:n-1]
			p.inflight++
			return j
		}
		if p.inflight < p.maxInflight {
			p.inflight++
			return &statJob{}
		}
		p.collect(<-p.done)
	}
}

func (p *statPipeline) collect(j *statJob) {
	p.inflight--
	if j.err != nil && p.err == nil {
		p.err = j.err
	}
	p.list.linked = append(p.list.linked, j.linked...)
	j.res = nil
	p.free = append(p.free, j)
}

// stop waits for every job (the workers use the directory's fd, which the
// caller closes) and returns the first stat error. Safe to call twice.
func (p *statPipeline) stop() error {
	if !p.stopped {
		p.stopped = true
		close(p.todo)
		for p.inflight > 0 {
			p.collect(<-p.done)
		}
		p.wg.Wait()
	}
	return p.err
}

// run stats one job's files.
func (p *statPipeline) run(j *statJob, st *syscall.Stat_t) {
	for k, it := range j.items {
		r := &j.res[k]
		r.size = -1
		if it.kind != kindFile && it.kind != kindLinkFile {
			continue
		}
		// The name is used only within this iteration, and names is not
		// written while the job runs: no string allocated per file.
		name := unsafe.String(&j.names[it.off], int(it.n))
		if it.kind == kindLinkFile {
			fi, err := p.wk.s.root.Stat(path.Join(p.rel, name))
			if err != nil || !fi.Mode().IsRegular() {
				continue // gone, or no longer a file inside the root
			}
			*st = *fi.Sys().(*syscall.Stat_t)
		} else if err := fstatatNoFollow(p.fd, name, st); err != nil {
			if !errors.Is(err, syscall.ENOENT) { // ENOENT: removed since the listing
				if j.err == nil {
					j.err = fmt.Errorf("stat %s: %w", displayRel(path.Join(p.rel, name)), err)
				}
			}
			continue
		} else if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			continue
		}
		r.size, r.hash = st.Size, etagHash(st)
		if st.Nlink > 1 {
			j.linked = append(j.linked, linkedFile{name: strings.Clone(name), ino: st.Ino})
		}
	}
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
			if err := wk.addEntry(&d.dirEntries, fd, rel, name, typ); err != nil {
				return fail(err)
			}
		}
		for ; len(d.ents)-sent >= statBatch; sent += statBatch {
			if err := p.dispatch(sent, sent+statBatch, filter); err != nil {
				return nil, err
			}
		}
	}
	if sent < len(d.ents) {
		if err := p.dispatch(sent, len(d.ents), filter); err != nil {
			return nil, err
		}
	}
	if err := p.stop(); err != nil {
		return nil, err
	}
	sortEntries(d.ents, func(a, b dirEnt) int {
		if a.pre != b.pre {
			if a.pre < b.pre {
				return -1
			}
			return 1
		}
		return bytes.Compare(d.arena[a.off:a.off+uint32(a.n)], d.arena[b.off:b.off+uint32(b.n)])
	}, d.resolve)
	d.metas = nil
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

// sortEntries sorts ents by cmp on up to GOMAXPROCS cores, then calls
// done on each sorted part (on the core that sorted it): a large slice is
// split around a sampled median (one pass, in place) and both sides are
// sorted at once. A million entries take about 0.4 s on one core.
func sortEntries(ents []dirEnt, cmp func(a, b dirEnt) int, done func(part []dirEnt)) {
	depth := 0
	for n := runtime.GOMAXPROCS(0); n > 1 && depth < 3; n >>= 1 {
		depth++
	}
	sortParallel(ents, cmp, done, depth)
}

func sortParallel(ents []dirEnt, cmp func(a, b dirEnt) int, done func(part []dirEnt), depth int) {
	const samples = 63
	if depth == 0 || len(ents) < 1<<15 {
		slices.SortFunc(ents, cmp)
		done(ents)
		return
	}
	var s [samples]dirEnt
	for i := range s {
		s[i] = ents[i*(len(ents)-1)/(samples-1)]
	}
	slices.SortFunc(s[:], cmp)
	pivot := s[samples/2]
	lo := 0
	for k := range ents {
		if cmp(ents[k], pivot) < 0 {
			ents[lo], ents[k] = ents[k], ents[lo]
			lo++
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { sortParallel(ents[:lo], cmp, done, depth-1) })
	sortParallel(ents[lo:], cmp, done, depth-1)
	wg.Wait()
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
	// size holds the listing position until the stat results are resolved.
	d.ents = append(d.ents, dirEnt{pre: binary.BigEndian.Uint64(pre[:]), size: int64(len(d.ents)), off: off, n: uint16(len(sortName)), kind: kind})
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
