package vfs

// Lock order: FS.dirsMu, FS.filesMu and view.docsMu are leaves: none is held
// while taking another or while calling out (network, cache, kernel).
// Listing caches lock internally. FS.refreshMu (refresh.go) is taken before
// any of them.

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"path"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/golang-lru/v2/expirable"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/internal/sharedload"
	"github.com/zarrfs/zarrfs/readahead"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/vfs/blocks"
	"github.com/zarrfs/zarrfs/vfs/store"
	"github.com/zarrfs/zarrfs/zarr"
)

// Origin is what the file system needs from the remote store: what
// discovery and revalidation need, and suffix reads that learn a shard's
// size and version with its index. Every remote.Origin satisfies it.
type Origin interface {
	store.Origin
	FetchSuffix(ctx context.Context, key, version string, n int64, w io.Writer) (remote.Piece, error)
}

// Cache is what the file system needs from the chunk cache. *cache.Cache
// satisfies it.
type Cache interface {
	Open(ctx context.Context, key string) (*cache.Reader, error)
	// OpenVersion opens the entry of exactly that version (from the
	// manifest): a cached entry of that version costs no request.
	OpenVersion(ctx context.Context, key, version string) (*cache.Reader, error)
	// OpenRange opens bytes [off, off+n) of that version: one block.
	OpenRange(ctx context.Context, key, version string, off, n int64) (*cache.Reader, error)
	Prefetch(w cache.Want, class cache.Priority) cache.PrefetchResult
	AddFeed(next func() (cache.Want, bool)) *cache.Feed
	// AddFeedAt adds a feed pulled before those of a lower priority.
	AddFeedAt(p cache.Priority, next func() (cache.Want, bool)) *cache.Feed
	PrefetchStats() cache.PrefetchStats
	// MarkStale makes every entry be revalidated before its next Open.
	MarkStale()
}

var (
	_ Origin = remote.Origin(nil)
	_ Cache  = (*cache.Cache)(nil)
)

// Options tune a file system.
type Options struct {
	Logger *slog.Logger
	// AttrValid is how long the kernel may cache names and attributes.
	AttrValid time.Duration
}

// FS is the zarr namespace: groups and arrays are directories, metadata
// documents are files held in memory, chunks are files read through the
// cache.
type FS struct {
	// view is the store as last discovered or refreshed. Every operation
	// reads it once and works on that one consistent version.
	view      atomic.Pointer[view]
	origin    Origin
	cache     Cache
	planner   *readahead.Planner // nil disables prefetching
	ranged    *rangedObjects     // shards and big objects read by blocks
	log       *slog.Logger
	attrValid time.Duration
	mtime     time.Time

	// life is the mount's lifetime: shared loads and background work run
	// on it and end when Close cancels it.
	life     context.Context
	stopLife context.CancelFunc

	listings *expirable.LRU[string, []remote.DirEntry]
	// lastListings keeps the last good listing of each directory, to answer
	// with while the origin is down: an outage is not an empty directory.
	lastListings *lru.Cache[string, []remote.DirEntry]
	listLoads    *sharedload.Group[[]remote.DirEntry]
	docLoads     *sharedload.Group[[]byte]

	// dirs holds one Dir per directory path, so the kernel's entries can be
	// invalidated through the directory it knows when the store changes.
	dirsMu sync.Mutex
	dirs   map[string]*Dir

	// files holds the files the kernel may know, by key, until it forgets
	// them: a repeated lookup returns the same File (and keeps its page
	// cache), and a refresh knows which entries to invalidate.
	filesMu sync.Mutex
	files   map[string]*File

	// staleVersions holds "key\x00version" of objects found changed on
	// the origin (noteChanged): a manifest naming that version is out of
	// date for the key, which is then looked up on the origin itself.
	staleVersions *lru.Cache[string, struct{}]

	refreshMu   sync.Mutex  // one refresh at a time; see refresh.go
	invalidator Invalidator // set once serving starts
	lastMu      sync.Mutex
	lastRefresh *RefreshReport

	jobs   explicitJobs // prefetch.go
	orders orderState   // order.go
}

// view is one version of the store: its tree, manifest and the metadata
// documents fetched for it. Documents are added as they are first read.
type view struct {
	*store.Store
	docsMu sync.Mutex
}

// docs returns a copy of the documents fetched so far.
func (v *view) docs() map[string][]byte {
	v.docsMu.Lock()
	defer v.docsMu.Unlock()
	out := make(map[string][]byte, len(v.Docs))
	for k, d := range v.Docs {
		out[k] = d
	}
	return out
}

// New builds the file system over a discovered store. Close releases it.
func New(st *store.Store, origin Origin, c Cache, opts Options) *FS {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.AttrValid <= 0 {
		opts.AttrValid = time.Hour
	}
	life, stop := context.WithCancel(context.Background())
	f := &FS{
		origin:       origin,
		cache:        c,
		log:          opts.Logger,
		attrValid:    opts.AttrValid,
		mtime:        time.Now(),
		life:         life,
		stopLife:     stop,
		listings:     expirable.NewLRU[string, []remote.DirEntry](1024, nil, opts.AttrValid),
		lastListings: must(lru.New[string, []remote.DirEntry](1024)),
		listLoads:    sharedload.New[[]remote.DirEntry](life),
		docLoads:     sharedload.New[[]byte](life),
		dirs:         map[string]*Dir{},
		files:        map[string]*File{},
		// Bounded like the memory of missing shards; a forgotten one
		// costs one more ESTALE.
		staleVersions: must(lru.New[string, struct{}](missingShards)),
	}
	f.view.Store(&view{Store: st})
	f.ranged = newRangedObjects(life, c, origin, opts.Logger)
	return f
}

// UsePlanner makes p the readahead policy: lookups and opens are reported
// to it. Call it before serving; without it only what readers ask for is
// fetched.
func (f *FS) UsePlanner(p *readahead.Planner) { f.planner = p }

// SetInvalidator gives the file system the kernel's entry cache to drop
// changed entries from. Call it before serving.
func (f *FS) SetInvalidator(inv Invalidator) { f.invalidator = inv }

// Close stops the background work and the loads in progress, and cancels
// the explicit prefetches.
func (f *FS) Close() {
	f.stopLife()
	f.ranged.close()
	f.cancelJobs()
	f.closeOrder()
}

// access reports a reader's step to the announced order when it follows
// it, else to the readahead planner.
func (f *FS) access(st *store.Store, arr *zarr.Node, coords []int64, key string) {
	if f.following(key) {
		return
	}
	f.planner.Access(st, arr, coords, key)
}

// AttrValid is how long the kernel may cache names and attributes.
func (f *FS) AttrValid() time.Duration { return f.attrValid }

// Store reports the store's current version.
func (f *FS) Store() *store.Store { return f.current().Store }

func (f *FS) current() *view { return f.view.Load() }

// must is for constructors that fail only on invalid constant arguments.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Node is a *Dir or a *File.
type Node interface {
	Attr() Attr
}

// Attr is what the kernel is told of a node.
type Attr struct {
	Inode uint64
	IsDir bool
	Size  int64
	Mtime time.Time // the mount's start: the store has no times of its own
}

// DirEntry is one name in a directory listing.
type DirEntry struct {
	Name  string
	Inode uint64
	IsDir bool
}

// Root returns the store's root directory.
func (f *FS) Root() *Dir {
	return f.dirNode("", func() *Dir { return &Dir{fs: f, path: ""} })
}

// dirNode returns the one Dir at p, made by mk the first time.
func (f *FS) dirNode(p string, mk func() *Dir) *Dir {
	f.dirsMu.Lock()
	defer f.dirsMu.Unlock()
	d, ok := f.dirs[p]
	if !ok {
		d = mk()
		f.dirs[p] = d
	}
	return d
}

// fileNode returns the File of key the kernel may already know, or makes
// one from view v with mk (which may fail) and remembers it while v is
// still the current view: a File made from a version that a refresh has
// since replaced is handed out once but not remembered.
func (f *FS) fileNode(v *view, key string, mk func() (*File, error)) (*File, error) {
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
		return prev, nil // a concurrent lookup won: one File per key
	}
	// A refresh swaps the view before it clears files under filesMu, so
	// this check cannot let a stale File in after the clearing.
	if f.current() == v {
		f.files[key] = n
	}
	return n, nil
}

// forgetFile drops n, unless a refresh already replaced it.
func (f *FS) forgetFile(key string, n *File) {
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
func (f *FS) lookupCurrent(lookup func(v *view) (Node, error)) (Node, error) {
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

// knownDir returns the Dir at p if the kernel may know it.
func (f *FS) knownDir(p string) (*Dir, bool) {
	f.dirsMu.Lock()
	defer f.dirsMu.Unlock()
	d, ok := f.dirs[p]
	return d, ok
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
	return f.docLoads.Do(ctx, key, func(life context.Context) ([]byte, error) {
		data, _, err := f.origin.Get(life, key, store.MaxMetaBytes)
		if err != nil {
			return nil, err
		}
		v.docsMu.Lock()
		v.Docs[key] = data
		v.docsMu.Unlock()
		return data, nil
	})
}

// list returns the origin's listing of dir, cached for the attribute validity.
func (f *FS) list(ctx context.Context, dir string) ([]remote.DirEntry, error) {
	if entries, ok := f.listings.Get(dir); ok {
		return entries, nil
	}
	return f.listLoads.Do(ctx, dir, func(life context.Context) ([]remote.DirEntry, error) {
		entries, err := f.origin.List(life, dir)
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
}

// Inode is the inode number of a store path: a stable hash, so tools that
// remember inodes (find, tar, rsync) see a consistent tree across lookups
// and mounts.
func Inode(p string) uint64 {
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

// asNode returns a lookup's File as a Node, and no Node with an error.
func asNode(f *File, err error) (Node, error) {
	if err != nil {
		return nil, err
	}
	return f, nil
}

// notExist is the error of a name the current store does not have.
func notExist(p string) error {
	return fmt.Errorf("%s: %w", p, fs.ErrNotExist)
}

// Dir is a group or array directory, or a directory inside an array's
// chunk key space ("c", "c/0", or "0" for a v2 array with "/"
// separators). It names its path, not a tree node, so that it always
// answers from the current version of the store.
type Dir struct {
	fs *FS
	// path is the directory's store path; for a chunk directory, arrPath
	// is its array's and rel the components below the array directory.
	path    string
	arrPath string
	rel     []string
	inChunk bool
}

// Path is the directory's store path ("" for the root).
func (d *Dir) Path() string { return d.path }

// Attr implements Node.
func (d *Dir) Attr() Attr {
	return Attr{Inode: Inode(d.path), IsDir: true, Mtime: d.fs.mtime}
}

// node returns the group or array in v, or ErrNotExist when a refresh
// removed it.
func (d *Dir) node(v *view) (*zarr.Node, error) {
	p := d.path
	if d.inChunk {
		p = d.arrPath
	}
	n := v.Tree.Lookup(p)
	if n == nil || (d.inChunk && n.Kind != zarr.KindArray) {
		return nil, notExist(d.path)
	}
	return n, nil
}

// Lookup resolves name in the directory: a *Dir or a *File.
func (d *Dir) Lookup(ctx context.Context, name string) (Node, error) {
	f := d.fs
	return f.lookupCurrent(func(v *view) (Node, error) {
		n, err := d.node(v)
		if err != nil {
			return nil, err
		}
		if d.inChunk {
			return lookupInArray(ctx, f, v, n, d.rel, name)
		}
		if n.HasMetaFile(name) {
			return asNode(f.lookupMeta(ctx, v, path.Join(n.Path, name)))
		}
		if child, ok := n.Children[name]; ok {
			return f.dirNode(child.Path, func() *Dir { return &Dir{fs: f, path: child.Path} }), nil
		}
		if n.Kind == zarr.KindArray {
			return lookupInArray(ctx, f, v, n, nil, name)
		}
		return nil, notExist(path.Join(d.path, name))
	})
}

// ReadDir lists the directory.
func (d *Dir) ReadDir(ctx context.Context) ([]DirEntry, error) {
	v := d.fs.current()
	n, err := d.node(v)
	if err != nil {
		return nil, err
	}
	if d.inChunk {
		return listChunks(ctx, d.fs, v, n, d.rel)
	}
	var out []DirEntry
	for _, m := range n.MetaFiles {
		out = append(out, DirEntry{Inode: Inode(path.Join(n.Path, m)), Name: m})
	}
	for _, name := range n.ChildNames() {
		out = append(out, DirEntry{Inode: Inode(path.Join(n.Path, name)), Name: name, IsDir: true})
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

// lookupInArray resolves name below the array directory at rel. Names the
// chunk grid rules out do not exist without asking the origin. With a
// manifest, existence, size and version come from it without a request;
// without one, a chunk's exact size is learnt by fetching it, since a
// lookup is nearly always followed by a read of the whole chunk.
func lookupInArray(ctx context.Context, f *FS, v *view, arr *zarr.Node, rel []string, name string) (Node, error) {
	comps := append(append([]string(nil), rel...), name)
	kind, coords := arr.Array.Resolve(comps)
	key := path.Join(arr.Path, path.Join(comps...))
	m := v.Manifest
	if kind == zarr.EntryChunk && f.current() == v {
		// Before this chunk's own fetch, so predicted ones run alongside it.
		// Only from the current version: a lookup that overlapped a refresh
		// must not make the planner go back to the old one.
		f.access(v.Store, arr, coords, key)
	}
	switch {
	case kind == zarr.EntryDir && (m == nil || m.IsDir(key)):
		return f.dirNode(key, func() *Dir { return &Dir{fs: f, path: key, arrPath: arr.Path, rel: comps, inChunk: true} }), nil
	case kind == zarr.EntryChunk && m != nil:
		size, version, ok := m.Lookup(key)
		if !ok {
			break
		}
		f.planner.ObserveSize(arr, size)
		return asNode(f.fileNode(v, key, func() (*File, error) {
			c := &File{fs: f, key: key, size: size, version: version, arrPath: arr.Path, coords: coords}
			if f.staleVersion(key, version) {
				f.relearn(ctx, arr.Array, c)
			}
			return c, nil
		}))
	case kind == zarr.EntryChunk:
		return asNode(f.fileNode(v, key, func() (*File, error) {
			// A shard: one suffix request learns its size and version and
			// reads its index, instead of downloading it whole.
			if t, ok, err := f.ranged.learn(ctx, arr.Array, key); err != nil {
				return nil, err
			} else if ok {
				f.planner.ObserveSize(arr, t.Size)
				return &File{fs: f, key: key, size: t.Size, version: t.Version, arrPath: arr.Path, coords: coords}, nil
			}
			r, err := f.cache.Open(ctx, key)
			if err != nil {
				return nil, err
			}
			f.planner.ObserveSize(arr, r.Size())
			c := &File{fs: f, key: key, size: r.Size(), first: r, arrPath: arr.Path, coords: coords}
			time.AfterFunc(firstReaderTTL, c.dropFirst)
			return c, nil
		}))
	}
	return nil, notExist(key)
}

// relearn sets the size and version of c, whose object changed on the
// origin after the manifest that gave them, from the origin itself, until
// a refresh brings a manifest that has them. When the origin cannot say,
// c keeps the manifest's: reads of it fail with ESTALE until a refresh.
func (f *FS) relearn(ctx context.Context, arr *zarr.Array, c *File) {
	var t *blocks.Table
	var ok bool
	var err error
	if blocks.ShardIndexSize(arr) > 0 && !arr.Shard.IndexAtStart {
		t, ok, err = f.ranged.learn(ctx, arr, c.key)
	} else {
		t, ok, err = f.ranged.learnPlain(ctx, c.key)
	}
	switch {
	case ok:
		c.size, c.version = t.Size, t.Version
	case err == nil && f.ranged.unsupported.Load():
		// The origin ignores ranges: the object is read whole, and the
		// fetch says its size and version. The fetch that found the
		// change replaced the old version's entry, so a cached entry is
		// the new version unless it says otherwise.
		r, err := f.cache.Open(ctx, c.key)
		if err != nil {
			f.log.Debug("cannot learn the version of a changed object; keeping the manifest's", "key", c.key, "err", err)
			return
		}
		if r.Version() == c.version {
			_ = r.Close()
			return
		}
		c.size, c.version, c.first = r.Size(), r.Version(), r
		time.AfterFunc(firstReaderTTL, c.dropFirst)
	case err != nil:
		f.log.Debug("cannot learn the version of a changed object; keeping the manifest's", "key", c.key, "err", err)
	}
}

// listChunks lists the chunk files and chunk directories under rel that the
// manifest or the origin's directory index shows. Without either only the
// metadata is listed: zarr clients never list chunk directories to read data.
func listChunks(ctx context.Context, f *FS, v *view, arr *zarr.Node, rel []string) ([]DirEntry, error) {
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
			return nil, err
		}
	}
	var out []DirEntry
	comps := append(append([]string(nil), rel...), "")
	for _, e := range entries {
		comps[len(comps)-1] = e.Name
		kind, _ := arr.Array.Resolve(comps)
		switch {
		case kind == zarr.EntryDir && e.IsDir:
			out = append(out, DirEntry{Inode: Inode(path.Join(dir, e.Name)), Name: e.Name, IsDir: true})
		case kind == zarr.EntryChunk && !e.IsDir:
			out = append(out, DirEntry{Inode: Inode(path.Join(dir, e.Name)), Name: e.Name})
		}
	}
	return out, nil
}

// lookupMeta returns a metadata document as a file with its exact size.
func (f *FS) lookupMeta(ctx context.Context, v *view, key string) (*File, error) {
	return f.fileNode(v, key, func() (*File, error) {
		data, err := f.metaDoc(ctx, v, key)
		if err != nil {
			return nil, err
		}
		return &File{fs: f, key: key, size: int64(len(data)), doc: data, isDoc: true}, nil
	})
}

// InChunkSpace says whether the directory lies inside an array's chunk key
// space rather than being a group or an array.
func (d *Dir) InChunkSpace() bool { return d.inChunk }
