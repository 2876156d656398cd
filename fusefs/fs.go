package fusefs

// Lock order: metaDocs.mu is the only lock in this file and is never held
// while calling out (network, cache, kernel). listing caches lock internally.

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
	"syscall"
	"time"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"
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
	Size(ctx context.Context, key string) (int64, error)
}

// FS is the zarr namespace served to the kernel: groups and arrays are
// directories, metadata documents are files held in memory, chunks are files
// read through the cache.
type FS struct {
	store     *Store
	origin    Origin
	chunks    Chunks
	log       *slog.Logger
	attrValid time.Duration
	mtime     time.Time

	docs     metaDocs
	listings *expirable.LRU[string, []remote.DirEntry]
	listSF   singleflight.Group
}

// newFS builds the file system over a discovered store.
func newFS(store *Store, origin Origin, chunks Chunks, log *slog.Logger, attrValid time.Duration) *FS {
	f := &FS{
		store:     store,
		origin:    origin,
		chunks:    chunks,
		log:       log,
		attrValid: attrValid,
		mtime:     time.Now(),
		listings:  expirable.NewLRU[string, []remote.DirEntry](1024, nil, attrValid),
	}
	f.docs.docs = make(map[string][]byte, len(store.Docs))
	for k, v := range store.Docs {
		f.docs.docs[k] = v
	}
	return f
}

// Root implements fs.FS.
func (f *FS) Root() (fusefs.Node, error) {
	return &nodeDir{fs: f, node: f.store.Tree.Root()}, nil
}

// Statfs reports a read-only file system with no free space, so tools such as
// df show the mount without suggesting it can take writes.
func (f *FS) Statfs(ctx context.Context, req *fuse.StatfsRequest, resp *fuse.StatfsResponse) error {
	resp.Bsize = 4096
	resp.Frsize = 4096
	resp.Namelen = 255
	return nil
}

// metaDocs holds metadata documents in memory; they are small and read often.
type metaDocs struct {
	mu   sync.Mutex
	docs map[string][]byte
	sf   singleflight.Group
}

func (f *FS) metaDoc(ctx context.Context, key string) ([]byte, error) {
	f.docs.mu.Lock()
	data, ok := f.docs.docs[key]
	f.docs.mu.Unlock()
	if ok {
		return data, nil
	}
	ch := f.docs.sf.DoChan(key, func() (any, error) {
		// Detached from the reader's context: an interrupted reader must not
		// cancel a fetch other readers wait for.
		data, _, err := f.origin.Get(context.WithoutCancel(ctx), key, maxMetaBytes)
		if err != nil {
			return nil, err
		}
		f.docs.mu.Lock()
		f.docs.docs[key] = data
		f.docs.mu.Unlock()
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
			return nil, err
		}
		f.listings.Add(dir, entries)
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

// nodeDir is a group or array directory.
type nodeDir struct {
	fs   *FS
	node *zarr.Node
}

var (
	_ fusefs.Node                = (*nodeDir)(nil)
	_ fusefs.NodeRequestLookuper = (*nodeDir)(nil)
	_ fusefs.HandleReadDirAller  = (*nodeDir)(nil)
)

func (d *nodeDir) Attr(ctx context.Context, a *fuse.Attr) error {
	d.fs.dirAttr(d.node.Path, a)
	return nil
}

func (d *nodeDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fusefs.Node, error) {
	resp.EntryValid = d.fs.attrValid
	name := req.Name
	for _, m := range d.node.MetaFiles {
		if m == name {
			return d.fs.lookupMeta(ctx, path.Join(d.node.Path, name))
		}
	}
	if child, ok := d.node.Children[name]; ok {
		return &nodeDir{fs: d.fs, node: child}, nil
	}
	if d.node.Kind == zarr.KindArray {
		return lookupInArray(ctx, d.fs, d.node, nil, name)
	}
	return nil, fuse.ToErrno(syscall.ENOENT)
}

func (d *nodeDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	var out []fuse.Dirent
	for _, m := range d.node.MetaFiles {
		out = append(out, fuse.Dirent{Inode: inode(path.Join(d.node.Path, m)), Name: m, Type: fuse.DT_File})
	}
	for _, name := range d.node.ChildNames() {
		out = append(out, fuse.Dirent{Inode: inode(path.Join(d.node.Path, name)), Name: name, Type: fuse.DT_Dir})
	}
	if d.node.Kind != zarr.KindArray {
		return out, nil
	}
	chunks, err := listChunks(ctx, d.fs, d.node, nil)
	if err != nil {
		return nil, err
	}
	return append(out, chunks...), nil
}

// chunkDir is a directory inside an array's chunk key space ("c", "c/0", or
// "0" for a v2 array with "/" separators).
type chunkDir struct {
	fs  *FS
	arr *zarr.Node
	rel []string // components below the array directory
}

var (
	_ fusefs.Node                = (*chunkDir)(nil)
	_ fusefs.NodeRequestLookuper = (*chunkDir)(nil)
	_ fusefs.HandleReadDirAller  = (*chunkDir)(nil)
)

func (d *chunkDir) path() string { return path.Join(d.arr.Path, path.Join(d.rel...)) }

func (d *chunkDir) Attr(ctx context.Context, a *fuse.Attr) error {
	d.fs.dirAttr(d.path(), a)
	return nil
}

func (d *chunkDir) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fusefs.Node, error) {
	resp.EntryValid = d.fs.attrValid
	return lookupInArray(ctx, d.fs, d.arr, d.rel, req.Name)
}

func (d *chunkDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	return listChunks(ctx, d.fs, d.arr, d.rel)
}

// lookupInArray resolves name below the array directory at rel. Names the
// chunk grid rules out are ENOENT without asking the origin; a chunk's exact
// size is learnt by fetching it, since a lookup is nearly always followed by
// a read of the whole chunk.
func lookupInArray(ctx context.Context, f *FS, arr *zarr.Node, rel []string, name string) (fusefs.Node, error) {
	comps := append(append([]string(nil), rel...), name)
	kind, _ := arr.Array.Resolve(comps)
	switch kind {
	case zarr.EntryDir:
		return &chunkDir{fs: f, arr: arr, rel: comps}, nil
	case zarr.EntryChunk:
		key := path.Join(arr.Path, path.Join(comps...))
		size, err := f.chunks.Size(ctx, key)
		if err != nil {
			return nil, f.errno("lookup", key, err)
		}
		return &chunkFile{fs: f, key: key, size: size}, nil
	}
	return nil, fuse.ToErrno(syscall.ENOENT)
}

// listChunks lists the chunk files and chunk directories under rel that the
// origin's directory index shows. Without an index only the metadata is
// listed: zarr clients never list chunk directories to read data.
func listChunks(ctx context.Context, f *FS, arr *zarr.Node, rel []string) ([]fuse.Dirent, error) {
	dir := path.Join(arr.Path, path.Join(rel...))
	entries, err := f.list(ctx, dir)
	if errors.Is(err, remote.ErrNoListing) || errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, f.errno("readdir", dir, err)
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
func (f *FS) lookupMeta(ctx context.Context, key string) (fusefs.Node, error) {
	data, err := f.metaDoc(ctx, key)
	if err != nil {
		return nil, f.errno("lookup", key, err)
	}
	return &metaFile{fs: f, key: key, data: data}, nil
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
	fs   *FS
	key  string
	size int64
}

var (
	_ fusefs.Node       = (*chunkFile)(nil)
	_ fusefs.NodeOpener = (*chunkFile)(nil)
)

func (c *chunkFile) Attr(ctx context.Context, a *fuse.Attr) error {
	c.fs.fileAttr(c.key, c.size, a)
	return nil
}

func (c *chunkFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fusefs.Handle, error) {
	r, err := c.fs.chunks.Open(ctx, c.key)
	if err != nil {
		return nil, c.fs.errno("open", c.key, err)
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
	buf := make([]byte, req.Size)
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
