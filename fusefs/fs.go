package fusefs

// Lock order: FS.nodesMu is a leaf, never held while calling the core or
// the kernel.

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"syscall"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"

	"github.com/zarrfs/zarrfs/vfs"
)

// Options configure the adapter.
type Options struct {
	// ControlSocket, when set, is published on the mount root as
	// ControlXattr so that commands can find the daemon.
	ControlSocket string
	Logger        *slog.Logger
}

// FS serves a vfs.FS to the kernel. It keeps one node per core directory
// and file, so that the kernel sees one inode per path and a refresh can
// invalidate entries through the nodes the kernel knows.
type FS struct {
	core          *vfs.FS
	log           *slog.Logger
	controlSocket string

	nodesMu sync.Mutex
	dirs    map[*vfs.Dir]fusefs.Node
	files   map[*vfs.File]*fileNode

	server *fusefs.Server // set once serving starts
}

// newFS returns the adapter of core.
func newFS(core *vfs.FS, opts Options) *FS {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &FS{
		core:          core,
		log:           opts.Logger,
		controlSocket: opts.ControlSocket,
		dirs:          map[*vfs.Dir]fusefs.Node{},
		files:         map[*vfs.File]*fileNode{},
	}
}

var _ fusefs.FS = (*FS)(nil)

// Root implements fs.FS.
func (f *FS) Root() (fusefs.Node, error) { return f.dirNode(f.core.Root()), nil }

// Statfs reports a read-only file system with no free space, so tools such as
// df show the mount without suggesting it can take writes.
func (f *FS) Statfs(ctx context.Context, req *fuse.StatfsRequest, resp *fuse.StatfsResponse) error {
	resp.Bsize = 4096
	resp.Frsize = 4096
	resp.Namelen = 255
	return nil
}

// dirNode returns the one node of d.
func (f *FS) dirNode(d *vfs.Dir) fusefs.Node {
	f.nodesMu.Lock()
	defer f.nodesMu.Unlock()
	n, ok := f.dirs[d]
	if !ok {
		if d.InChunkSpace() {
			n = &chunkDirNode{dirNode{fs: f, d: d}}
		} else {
			n = &dirNode{fs: f, d: d}
		}
		f.dirs[d] = n
	}
	return n
}

// knownDir returns the node of d if the kernel may hold it.
func (f *FS) knownDir(d *vfs.Dir) (fusefs.Node, bool) {
	f.nodesMu.Lock()
	defer f.nodesMu.Unlock()
	n, ok := f.dirs[d]
	return n, ok
}

// fileNode returns the one node of c until the kernel forgets it.
func (f *FS) fileNode(c *vfs.File) *fileNode {
	f.nodesMu.Lock()
	defer f.nodesMu.Unlock()
	n, ok := f.files[c]
	if !ok {
		n = &fileNode{fs: f, f: c}
		f.files[c] = n
	}
	return n
}

func (f *FS) node(n vfs.Node) fusefs.Node {
	switch n := n.(type) {
	case *vfs.Dir:
		return f.dirNode(n)
	case *vfs.File:
		return f.fileNode(n)
	}
	panic("fusefs: unknown vfs node type")
}

// InvalidateEntry implements vfs.Invalidator through the kernel. The core
// calls it from a refresh, never from inside a request of this adapter.
func (f *FS) InvalidateEntry(parent *vfs.Dir, name string) error {
	n, ok := f.knownDir(parent)
	if !ok || f.server == nil {
		return vfs.ErrNotCached
	}
	err := f.server.InvalidateEntry(n, name)
	if errors.Is(err, fuse.ErrNotCached) {
		return vfs.ErrNotCached
	}
	return err
}

// errno translates an error of the core to what the kernel gets, once, at
// this boundary. A cancelled request's own context error is returned
// unwrapped so bazil answers EINTR.
func (f *FS) errno(op, key string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, vfs.ErrStale):
		return fuse.ToErrno(syscall.ESTALE)
	case errors.Is(err, vfs.ErrHandleClosed):
		return fuse.ToErrno(syscall.EBADF)
	case errors.Is(err, context.Canceled):
		return context.Canceled
	case errors.Is(err, fs.ErrNotExist):
		return fuse.ToErrno(syscall.ENOENT)
	}
	f.log.Warn("read from origin failed", "op", op, "key", key, "err", err)
	return fuse.ToErrno(syscall.EIO)
}

func (f *FS) fillAttr(a *fuse.Attr, va vfs.Attr) {
	a.Inode = va.Inode
	a.Valid = f.core.AttrValid()
	a.Mtime, a.Ctime, a.Atime = va.Mtime, va.Mtime, va.Mtime
	if va.IsDir {
		a.Mode = os.ModeDir | 0o555
		a.Nlink = 2
		return
	}
	a.Mode = 0o444
	a.Nlink = 1
	a.Size = uint64(va.Size)
	a.Blocks = (uint64(va.Size) + 511) / 512
	a.BlockSize = 128 << 10
}

// dirNode is a group or array directory.
type dirNode struct {
	fs *FS
	d  *vfs.Dir
}

var (
	_ fusefs.Node                = (*dirNode)(nil)
	_ fusefs.NodeRequestLookuper = (*dirNode)(nil)
	_ fusefs.HandleReadDirAller  = (*dirNode)(nil)
	_ fusefs.NodeGetxattrer      = (*dirNode)(nil)
	_ fusefs.NodeListxattrer     = (*dirNode)(nil)
)

func (d *dirNode) Attr(ctx context.Context, a *fuse.Attr) error {
	d.fs.fillAttr(a, d.d.Attr())
	return nil
}

func (d *dirNode) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fusefs.Node, error) {
	resp.EntryValid = d.fs.core.AttrValid()
	n, err := d.d.Lookup(ctx, req.Name)
	if err != nil {
		return nil, d.fs.errno("lookup", joinKey(d.d.Path(), req.Name), err)
	}
	return d.fs.node(n), nil
}

func (d *dirNode) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	entries, err := d.d.ReadDir(ctx)
	if err != nil {
		return nil, d.fs.errno("readdir", d.d.Path(), err)
	}
	out := make([]fuse.Dirent, 0, len(entries))
	for _, e := range entries {
		t := fuse.DT_File
		if e.IsDir {
			t = fuse.DT_Dir
		}
		out = append(out, fuse.Dirent{Inode: e.Inode, Name: e.Name, Type: t})
	}
	return out, nil
}

// chunkDirNode is a directory inside an array's chunk key space. It has no
// extended attributes.
type chunkDirNode struct{ dir dirNode }

var (
	_ fusefs.Node                = (*chunkDirNode)(nil)
	_ fusefs.NodeRequestLookuper = (*chunkDirNode)(nil)
	_ fusefs.HandleReadDirAller  = (*chunkDirNode)(nil)
)

func (d *chunkDirNode) Attr(ctx context.Context, a *fuse.Attr) error { return d.dir.Attr(ctx, a) }

func (d *chunkDirNode) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fusefs.Node, error) {
	return d.dir.Lookup(ctx, req, resp)
}

func (d *chunkDirNode) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	return d.dir.ReadDirAll(ctx)
}

// joinKey is the store key of name in the directory at dir.
func joinKey(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// fileNode is a metadata document or a chunk file.
type fileNode struct {
	fs *FS
	f  *vfs.File
}

var (
	_ fusefs.Node          = (*fileNode)(nil)
	_ fusefs.NodeOpener    = (*fileNode)(nil)
	_ fusefs.NodeForgetter = (*fileNode)(nil)
)

func (n *fileNode) Attr(ctx context.Context, a *fuse.Attr) error {
	n.fs.fillAttr(a, n.f.Attr())
	return nil
}

func (n *fileNode) Forget() {
	n.fs.nodesMu.Lock()
	if n.fs.files[n.f] == n {
		delete(n.fs.files, n.f)
	}
	n.fs.nodesMu.Unlock()
	n.f.Forget()
}

func (n *fileNode) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fusefs.Handle, error) {
	h, err := n.f.Open(ctx)
	if err != nil {
		return nil, n.fs.errno("open", n.f.Key(), err)
	}
	// Data under one version never changes: let the page cache keep it.
	resp.Flags |= fuse.OpenKeepCache
	return &handle{fs: n.fs, key: n.f.Key(), h: h}, nil
}

// handle is one open of a file.
type handle struct {
	fs  *FS
	key string
	h   vfs.Handle
}

var (
	_ fusefs.HandleReader   = (*handle)(nil)
	_ fusefs.HandleFlusher  = (*handle)(nil)
	_ fusefs.HandlePoller   = (*handle)(nil)
	_ fusefs.HandleReleaser = (*handle)(nil)
)

func (h *handle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	buf := resp.Data[:req.Size] // bazil allocates it with that capacity
	n, err := h.h.ReadAt(ctx, buf, req.Offset)
	if err != nil {
		return h.fs.errno("read", h.key, err)
	}
	resp.Data = buf[:n]
	return nil
}

// Flush answers ENOSYS: the kernel then stops sending FLUSH for this mount
// (fc->no_flush), which saves every close(2) a round trip to the daemon. A
// read-only file system has nothing to flush; for many small files this
// round trip was a third of the per-file cost.
func (h *handle) Flush(ctx context.Context, req *fuse.FlushRequest) error {
	return fuse.ToErrno(syscall.ENOSYS)
}

// Poll answers ENOSYS: the kernel then reports every file of the mount
// always ready without asking (fc->no_poll), as bazil's fallback would, but
// without a round trip each time a Go program opens a file (os.Open adds
// every file to the runtime's epoll set).
func (h *handle) Poll(ctx context.Context, req *fuse.PollRequest, resp *fuse.PollResponse) error {
	return fuse.ToErrno(syscall.ENOSYS)
}

func (h *handle) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
	return h.h.Release()
}
