package fusefs

// Lock order: FS.dirsMu, FS.filesMu and view.docsMu are leaves: none is held
// while taking another or while calling out (network, cache, kernel).
// Listing caches lock internally. FS.refreshMu (refresh.go) is taken before
// any of them.

import (
	"context"
	"errors"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/sync/singleflight"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/zarr"
)

// Chunks is what the file system needs from the chunk cache. *cache.Cache
// satisfies it.
type Chunks interface {
	Open(ctx context.Context, key string) (*cache.Reader, error)
	// OpenVersion opens the entry of exactly that version (from the
	// manifest): a cached entry of that version costs no request.
	OpenVersion(ctx context.Context, key, version string) (*cache.Reader, error)
	// MarkStale makes every entry be revalidated before its next Open.
	MarkStale()
}

// FS is the zarr namespace served to the kernel: groups and arrays are
// directories, metadata documents are files held in memory, chunks are files
// read through the cache.
type FS struct {
	// view is the store as last discovered or refreshed. Every operation
	// reads it once and works on that one consistent version.
	view    atomic.Pointer[view]
	origin  Origin
	chunks  Chunks
	planner *planner // readahead policy (planner.go); nil disables prefetching
	// ranged reads shards and big objects by blocks (ranged.go); nil when
	// the cache cannot read ranges.
	ranged    *rangedObjects
	log       *slog.Logger
	attrValid time.Duration
	mtime     time.Time
	// controlSocket is the daemon's control socket, published to the CLI
	// through ControlXattr on the root.
	controlSocket string

	listings *expirable.LRU[string, []remote.DirEntry]
	// lastListings keeps the last good listing of each directory, to answer
	// with while the origin is down: an outage is not an empty directory.
	lastListings *lru.Cache[string, []remote.DirEntry]
	listSF       singleflight.Group
	docsSF       singleflight.Group

	// dirs holds one node per directory path, so the kernel's entries can be
	// invalidated through the node it knows when the store changes.
	dirsMu sync.Mutex
	dirs   map[string]fusefs.Node

	// files holds the file nodes the kernel may know, by key, until it
	// forgets them: a repeated lookup returns the same node (and keeps its
	// page cache), and a refresh knows which entries to invalidate.
	filesMu sync.Mutex
	files   map[string]fusefs.Node

	refreshMu sync.Mutex  // one refresh at a time; see refresh.go
	server    invalidator // set once serving starts
}

// view is one version of the store: its tree, manifest and the metadata
// documents fetched for it. Documents are added as they are first read.
type view struct {
	*Store
	docsMu sync.Mutex
}

// newFS builds the file system over a discovered store.
func newFS(store *Store, origin Origin, chunks Chunks, log *slog.Logger, attrValid time.Duration) *FS {
	f := &FS{
		origin:       origin,
		chunks:       chunks,
		log:          log,
		attrValid:    attrValid,
		mtime:        time.Now(),
		listings:     expirable.NewLRU[string, []remote.DirEntry](1024, nil, attrValid),
		lastListings: must(lru.New[string, []remote.DirEntry](1024)),
		dirs:         map[string]fusefs.Node{},
		files:        map[string]fusefs.Node{},
	}
	f.view.Store(&view{Store: store})
	if rc, ok := chunks.(rangeChunks); ok {
		so, _ := origin.(suffixOrigin)
		f.ranged = newRangedObjects(rc, so, log)
	}
	return f
}

func (f *FS) current() *view { return f.view.Load() }

// must is for constructors that fail only on invalid constant arguments.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Root implements fs.FS.
func (f *FS) Root() (fusefs.Node, error) {
	return f.dirNode("", func() fusefs.Node { return &nodeDir{fs: f, path: ""} }), nil
}

// dirNode returns the one node of the directory at p, made by mk the first time.
func (f *FS) dirNode(p string, mk func() fusefs.Node) fusefs.Node {
	f.dirsMu.Lock()
	defer f.dirsMu.Unlock()
	n, ok := f.dirs[p]
	if !ok {
		n = mk()
		f.dirs[p] = n
	}
	return n
}

// fileNode returns the file node of key the kernel may already know, or
// makes one from view v with mk (which may fail) and remembers it while v is
// still the current view: a node made from a version that a refresh has
// since replaced is handed out once but not remembered.
func (f *FS) fileNode(v *view, key string, mk func() (fusefs.Node, error)) (fusefs.Node, error) {
	f.filesMu.Lock()
	n, ok := f.files[key]
	f.filesMu.Unlock()
	if ok {
		return n, nil
	}
	n, err := mk()
	if err != nil {
		return nil, err
	}
	f.filesMu.Lock()
	defer f.filesMu.Unlock()
	if prev, ok := f.files[key]; ok {
		return prev, nil // a concurrent lookup won: one node per key
	}
	// A refresh swaps the view before it clears files under filesMu, so
	// this check cannot let a stale node in after the clearing.
	if f.current() == v {
		f.files[key] = n
	}
	return n, nil
}

// forgetFile drops n, unless a refresh already replaced it.
func (f *FS) forgetFile(key string, n fusefs.Node) {
	f.filesMu.Lock()
	if f.files[key] == n {
		delete(f.files, key)
	}
	f.filesMu.Unlock()
}

// lookupCurrent runs a lookup against the current view, again if a refresh
// replaced the view meanwhile: an answer from the old version given after
// the refresh invalidated the kernel's entries would be cached by the kernel
// for the whole entry validity.
func (f *FS) lookupCurrent(lookup func(v *view) (fusefs.Node, error)) (fusefs.Node, error) {
	for attempt := 0; ; attempt++ {
		v := f.current()
		n, err := lookup(v)
		// Refreshes are seconds apart at the least: a lookup that overlaps
		// three of them is not worth looping on.
		if f.current() == v || attempt == 2 {
			return n, err
		}
	}
}

// knownDir returns the node of the directory at p if the kernel may know it.
func (f *FS) knownDir(p string) (fusefs.Node, bool) {
	f.dirsMu.Lock()
	defer f.dirsMu.Unlock()
	n, ok := f.dirs[p]
	return n, ok
}

// Statfs reports a read-only file system with no free space, so tools such as
// df show the mount without suggesting it can take writes.
func (f *FS) Statfs(ctx context.Context, req *fuse.StatfsRequest, resp *fuse.StatfsResponse) error {
	resp.Bsize = 4096
	resp.Frsize = 4096
	resp.Namelen = 255
	return nil
}

// metaDoc returns a metadata document of the view, fetching it the first
// time; documents are small and read often, so they stay in memory.
func (f *FS) metaDoc(ctx context.Context, v *view, key string) ([]byte, error) {
	v.docsMu.Lock()
	data, ok := v.Docs[key]
	v.docsMu.Unlock()
	if ok {
		return data, nil
	}
	ch := f.docsSF.DoChan(key, func() (any, error) {
		// Detached from the reader's context: an interrupted reader must not
		// cancel a fetch other readers wait for.
		data, _, err := f.origin.Get(context.WithoutCancel(ctx), key, maxMetaBytes)
		if err != nil {
			return nil, err
		}
		v.docsMu.Lock()
		v.Docs[key] = data
		v.docsMu.Unlock()
		return data, nil
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.([]byte), nil
	}
}

// list returns the origin's listing of dir, cached for the attribute validity.
func (f *FS) list(ctx context.Context, dir string) ([]remote.DirEntry, error) {
	if entries, ok := f.listings.Get(dir); ok {
		return entries, nil
	}
	ch := f.listSF.DoChan(dir, func() (any, error) {
		entries, err := f.origin.List(context.WithoutCancel(ctx), dir)
		if err != nil {
			if last, ok := f.lastListings.Get(dir); ok && !errors.Is(err, remote.ErrNoListing) && !errors.Is(err, fs.ErrNotExist) {
				f.log.Warn("origin failed to list a directory; answering with its last listing", "dir", dir, "err", err)
				return last, nil
			}
			return nil, err
		}
		f.listings.Add(dir, entries)
		f.lastListings.Add(dir, entries)
		return entries, nil
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.([]remote.DirEntry), nil
	}
}

// inode numbers are stable hashes of the store path, so tools that remember
// inodes (find, tar, rsync) see a consistent tree across lookups and mounts.
func inode(p string) uint64 {
	if p == "" {
		return 1
	}
	h := fnv.New64a()
	_, _ = io.WriteString(h, p)
	ino := h.Sum64()
	if ino <= 1 {
		ino += 2
	}
	return ino
}

func (f *FS) dirAttr(p string, a *fuse.Attr) {
	a.Inode = inode(p)
	a.Mode = os.ModeDir | 0o555
	a.Nlink = 2
	a.Valid = f.attrValid
	a.Mtime, a.Ctime, a.Atime = f.mtime, f.mtime, f.mtime
}

func (f *FS) fileAttr(p string, size int64, a *fuse.Attr) {
	a.Inode = inode(p)
	a.Mode = 0o444
	a.Nlink = 1
	a.Size = uint64(size)
	a.Blocks = (uint64(size) + 511) / 512
	a.BlockSize = 128 << 10
	a.Valid = f.attrValid
	a.Mtime, a.Ctime, a.Atime = f.mtime, f.mtime, f.mtime
}

// errno translates an error to what the kernel gets, once, at the FUSE
// boundary. A cancelled request's own context error is returned unwrapped so
// bazil answers EINTR.
func (f *FS) errno(op, key string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled):
		return context.Canceled
	case errors.Is(err, fs.ErrNotExist):
		return fuse.ToErrno(syscall.ENOENT)
	}
	f.log.Warn("read from origin failed", "op", op, "key", key, "err", err)
	return fuse.ToErrno(syscall.EIO)
}

// nodeDir is a group or array directory. It names its path, not a tree
// node, so that it always answers from the current version of the store.
type nodeDir struct {
	fs   *FS
	path string
}

// node returns the directory's node in v, or ENOENT when a refresh removed it.
func (d *nodeDir) node(v *view) (*zarr.Node, error) {
	n := v.Tree.Lookup(d.path)
	if n == nil {
		return nil, fuse.ToErrno(syscall.ENOENT)
	}
	return n, nil
}

var (
	_ fusefs.Node                = (*nodeDir)(nil)
	_ fusefs.NodeRequestLookuper = (*nodeDir)(nil)
	_ fusefs.HandleReadDirAller  = (*nodeDir)(nil)
)

func (d *nodeDir) Attr(ctx context.Context, a *fuse.Attr) error {
	d.fs.dirAttr(d.path, a)
	return nil
}

func (d *nodeDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fusefs.Node, error) {
	resp.EntryValid = d.fs.attrValid
	return d.fs.lookupCurrent(func(v *view) (fusefs.Node, error) {
		n, err := d.node(v)
		if err != nil {
			return nil, err
		}
		name := req.Name
		if n.HasMetaFile(name) {
			return d.fs.lookupMeta(ctx, v, path.Join(n.Path, name))
		}
		if child, ok := n.Children[name]; ok {
			return d.fs.dirNode(child.Path, func() fusefs.Node { return &nodeDir{fs: d.fs, path: child.Path} }), nil
		}
		if n.Kind == zarr.KindArray {
			return lookupInArray(ctx, d.fs, v, n, nil, name)
		}
		return nil, fuse.ToErrno(syscall.ENOENT)
	})
}

func (d *nodeDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	v := d.fs.current()
	n, err := d.node(v)
	if err != nil {
		return nil, err
	}
	var out []fuse.Dirent
	for _, m := range n.MetaFiles {
		out = append(out, fuse.Dirent{Inode: inode(path.Join(n.Path, m)), Name: m, Type: fuse.DT_File})
	}
	for _, name := range n.ChildNames() {
		out = append(out, fuse.Dirent{Inode: inode(path.Join(n.Path, name)), Name: name, Type: fuse.DT_Dir})
	}
	if n.Kind != zarr.KindArray {
		return out, nil
	}
	chunks, err := listChunks(ctx, d.fs, v, n, nil)
	if err != nil {
		return nil, err
	}
	return append(out, chunks...), nil
}

// chunkDir is a directory inside an array's chunk key space ("c", "c/0", or
// "0" for a v2 array with "/" separators).
type chunkDir struct {
	fs      *FS
	arrPath string
	rel     []string // components below the array directory
}

// array returns the array in v, or ENOENT when a refresh removed it.
func (d *chunkDir) array(v *view) (*zarr.Node, error) {
	n := v.Tree.Lookup(d.arrPath)
	if n == nil || n.Kind != zarr.KindArray {
		return nil, fuse.ToErrno(syscall.ENOENT)
	}
	return n, nil
}

var (
	_ fusefs.Node                = (*chunkDir)(nil)
	_ fusefs.NodeRequestLookuper = (*chunkDir)(nil)
	_ fusefs.HandleReadDirAller  = (*chunkDir)(nil)
)

func (d *chunkDir) path() string { return path.Join(d.arrPath, path.Join(d.rel...)) }

func (d *chunkDir) Attr(ctx context.Context, a *fuse.Attr) error {
	d.fs.dirAttr(d.path(), a)
	return nil
}

func (d *chunkDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fusefs.Node, error) {
	resp.EntryValid = d.fs.attrValid
	return d.fs.lookupCurrent(func(v *view) (fusefs.Node, error) {
		arr, err := d.array(v)
		if err != nil {
			return nil, err
		}
		return lookupInArray(ctx, d.fs, v, arr, d.rel, req.Name)
	})
}

func (d *chunkDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	v := d.fs.current()
	arr, err := d.array(v)
	if err != nil {
		return nil, err
	}
	return listChunks(ctx, d.fs, v, arr, d.rel)
}

// lookupInArray resolves name below the array directory at rel. Names the
// chunk grid rules out are ENOENT without asking the origin. With a manifest,
// existence, size and version come from it without a request; without one, a
// chunk's exact size is learnt by fetching it, since a lookup is nearly
// always followed by a read of the whole chunk.
func lookupInArray(ctx context.Context, f *FS, v *view, arr *zarr.Node, rel []string, name string) (fusefs.Node, error) {
	comps := append(append([]string(nil), rel...), name)
	kind, coords := arr.Array.Resolve(comps)
	key := path.Join(arr.Path, path.Join(comps...))
	m := v.Manifest
	if kind == zarr.EntryChunk && f.current() == v {
		// Before this chunk's own fetch, so predicted ones run alongside it.
		// Only from the current version: a lookup that overlapped a refresh
		// must not make the planner go back to the old one.
		f.planner.access(v.Store, arr, coords, key)
	}
	switch {
	case kind == zarr.EntryDir && (m == nil || m.IsDir(key)):
		return f.dirNode(key, func() fusefs.Node { return &chunkDir{fs: f, arrPath: arr.Path, rel: comps} }), nil
	case kind == zarr.EntryChunk && m != nil:
		if size, version, ok := m.Lookup(key); ok {
			f.planner.observeSize(arr, size)
			return f.fileNode(v, key, func() (fusefs.Node, error) {
				return &chunkFile{fs: f, key: key, size: size, version: version, arrPath: arr.Path, coords: coords}, nil
			})
		}
	case kind == zarr.EntryChunk:
		return f.fileNode(v, key, func() (fusefs.Node, error) {
			// A shard: one suffix request learns its size and version and
			// reads its index, instead of downloading it whole.
			if t, ok, err := f.ranged.learn(ctx, arr.Array, key); err != nil {
				return nil, f.errno("lookup", key, err)
			} else if ok {
				f.planner.observeSize(arr, t.size)
				return &chunkFile{fs: f, key: key, size: t.size, version: t.version, arrPath: arr.Path, coords: coords}, nil
			}
			r, err := f.chunks.Open(ctx, key)
			if err != nil {
				return nil, f.errno("lookup", key, err)
			}
			f.planner.observeSize(arr, r.Size())
			c := &chunkFile{fs: f, key: key, size: r.Size(), first: r, arrPath: arr.Path, coords: coords}
			time.AfterFunc(firstReaderTTL, c.dropFirst)
			return c, nil
		})
	}
	return nil, fuse.ToErrno(syscall.ENOENT)
}

// listChunks lists the chunk files and chunk directories under rel that the
// manifest or the origin's directory index shows. Without either only the
// metadata is listed: zarr clients never list chunk directories to read data.
func listChunks(ctx context.Context, f *FS, v *view, arr *zarr.Node, rel []string) ([]fuse.Dirent, error) {
	dir := path.Join(arr.Path, path.Join(rel...))
	var entries []remote.DirEntry
	if v.Manifest != nil {
		entries = v.Manifest.Children(dir)
	} else {
		var err error
		entries, err = f.list(ctx, dir)
		if errors.Is(err, remote.ErrNoListing) || errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, f.errno("readdir", dir, err)
		}
	}
	var out []fuse.Dirent
	comps := append(append([]string(nil), rel...), "")
	for _, e := range entries {
		comps[len(comps)-1] = e.Name
		kind, _ := arr.Array.Resolve(comps)
		switch {
		case kind == zarr.EntryDir && e.IsDir:
			out = append(out, fuse.Dirent{Inode: inode(path.Join(dir, e.Name)), Name: e.Name, Type: fuse.DT_Dir})
		case kind == zarr.EntryChunk && !e.IsDir:
			out = append(out, fuse.Dirent{Inode: inode(path.Join(dir, e.Name)), Name: e.Name, Type: fuse.DT_File})
		}
	}
	return out, nil
}

// lookupMeta returns a metadata document as a file with its exact size.
func (f *FS) lookupMeta(ctx context.Context, v *view, key string) (fusefs.Node, error) {
	return f.fileNode(v, key, func() (fusefs.Node, error) {
		data, err := f.metaDoc(ctx, v, key)
		if err != nil {
			return nil, f.errno("lookup", key, err)
		}
		return &metaFile{fs: f, key: key, data: data}, nil
	})
}

// metaFile is a metadata document served from memory. It is its own handle.
type metaFile struct {
	fs   *FS
	key  string
	data []byte
}

var (
	_ fusefs.Node         = (*metaFile)(nil)
	_ fusefs.NodeOpener   = (*metaFile)(nil)
	_ fusefs.HandleReader = (*metaFile)(nil)
)

func (m *metaFile) Attr(ctx context.Context, a *fuse.Attr) error {
	m.fs.fileAttr(m.key, int64(len(m.data)), a)
	return nil
}

func (m *metaFile) Forget() { m.fs.forgetFile(m.key, m) }

func (m *metaFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fusefs.Handle, error) {
	resp.Flags |= fuse.OpenKeepCache
	return m, nil
}

func (m *metaFile) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	if req.Offset >= int64(len(m.data)) {
		return nil
	}
	end := min(req.Offset+int64(req.Size), int64(len(m.data)))
	resp.Data = m.data[req.Offset:end]
	return nil
}

// chunkFile is a chunk (or shard) object read through the cache.
type chunkFile struct {
	fs      *FS
	key     string
	size    int64
	version string // from the manifest; "" when unknown

	// Where the chunk lies, for the readahead planner.
	arrPath string
	coords  []int64

	// first is the reader a lookup opened to learn the size, kept for the
	// open that nearly always follows: an object the cache could not keep
	// (disk full, larger than the budget) is then not downloaded twice.
	// Dropped after firstReaderTTL so it pins nothing for long.
	firstMu sync.Mutex
	first   *cache.Reader
}

// firstReaderTTL bounds how long a lookup's reader waits for its open.
const firstReaderTTL = 5 * time.Second

// takeFirst returns the lookup's reader, once.
func (c *chunkFile) takeFirst() *cache.Reader {
	c.firstMu.Lock()
	defer c.firstMu.Unlock()
	r := c.first
	c.first = nil
	return r
}

func (c *chunkFile) dropFirst() {
	if r := c.takeFirst(); r != nil {
		_ = r.Close()
	}
}

var (
	_ fusefs.Node       = (*chunkFile)(nil)
	_ fusefs.NodeOpener = (*chunkFile)(nil)
)

func (c *chunkFile) Attr(ctx context.Context, a *fuse.Attr) error {
	c.fs.fileAttr(c.key, c.size, a)
	return nil
}

func (c *chunkFile) Forget() {
	c.dropFirst()
	c.fs.forgetFile(c.key, c)
}

func (c *chunkFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fusefs.Handle, error) {
	r := c.takeFirst()
	if r == nil {
		// Opened again (a later epoch): a step of the reader the planner
		// has not seen through a lookup. Predictions use the current
		// version of the store: a refresh may have changed the neighbours
		// since this node was looked up.
		v := c.fs.current()
		var arr *zarr.Array
		if n := v.Tree.Lookup(c.arrPath); n != nil && n.Kind == zarr.KindArray {
			arr = n.Array
			c.fs.planner.access(v.Store, n, c.coords, c.key)
		}
		if h, err := c.openRanged(ctx, arr); h != nil || err != nil {
			if err != nil {
				return nil, err
			}
			resp.Flags |= fuse.OpenKeepCache
			return h, nil
		}
		var err error
		if c.version != "" {
			r, err = c.fs.chunks.OpenVersion(ctx, c.key, c.version)
		} else {
			r, err = c.fs.chunks.Open(ctx, c.key)
		}
		if err != nil {
			return nil, c.fs.errno("open", c.key, err)
		}
	}
	if r.Size() != c.size {
		// The object changed on the origin since lookup; the kernel still
		// believes the old size. Refuse rather than hand out a mix.
		_ = r.Close()
		c.fs.log.Warn("object changed size on the origin since lookup", "key", c.key, "was", c.size, "now", r.Size())
		return nil, fuse.ToErrno(syscall.ESTALE)
	}
	// Data under one version never changes: let the page cache keep it.
	resp.Flags |= fuse.OpenKeepCache
	return &chunkHandle{fs: c.fs, key: c.key, r: r}, nil
}

// openRanged opens the chunk by blocks when it is a shard or a big object
// of known version; (nil, nil) means read it whole.
func (c *chunkFile) openRanged(ctx context.Context, arr *zarr.Array) (fusefs.Handle, error) {
	r := c.fs.ranged
	if !r.eligible(arr, c.key, c.version, c.size) {
		return nil, nil
	}
	t, err := r.table(ctx, arr, c.key, c.version, c.size)
	switch {
	case r.noteUnsupported(err):
		return nil, nil
	case err != nil:
		return nil, c.fs.rangeErrno(c.key, err)
	}
	r.stats.objects.Add(1)
	return &rangedHandle{fs: c.fs, key: c.key, t: t, last: -2}, nil
}

// chunkHandle is one open of a chunk file.
type chunkHandle struct {
	fs  *FS
	key string
	r   *cache.Reader
}

var (
	_ fusefs.HandleReader   = (*chunkHandle)(nil)
	_ fusefs.HandleReleaser = (*chunkHandle)(nil)
)

func (h *chunkHandle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	buf := resp.Data[:req.Size] // bazil allocates it with that capacity
	n, err := h.r.ReadAt(buf, req.Offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return h.fs.errno("read", h.key, err)
	}
	resp.Data = buf[:n]
	return nil
}

func (h *chunkHandle) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
	return h.r.Close()
}
