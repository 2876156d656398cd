package vfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/zarr"
)

// File is a metadata document served from memory, or a chunk (or shard)
// object read through the cache.
type File struct {
	fs      *FS
	key     string
	size    int64
	version string // from the manifest or a suffix request; "" when unknown

	// doc is a metadata document's bytes (isDoc).
	doc   []byte
	isDoc bool

	// Where a chunk lies, for the readahead planner.
	arrPath string
	coords  []int64

	// first is the reader a lookup opened to learn the size, kept for the
	// open that nearly always follows: an object the cache could not keep
	// (disk full, larger than the budget) is then not downloaded twice.
	// Dropped after firstReaderTTL so it pins nothing for long.
	firstMu sync.Mutex
	first   *cache.Reader

	// changed is set once the origin was found to hold another version of
	// the object (noteChanged): the File is out of date for good, and its
	// opens fail with ErrStale, which makes the kernel look the name up
	// again and open the File of the new version.
	changed atomic.Bool
}

// Handle is one open of a File. Reads past the end are short, not errors.
type Handle interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	Release() error
}

// Key is the file's store key.
func (c *File) Key() string { return c.key }

// Size is the file's size in bytes.
func (c *File) Size() int64 { return c.size }

// Version is the chunk's version (strong ETag), "" when unknown.
func (c *File) Version() string { return c.version }

// Document returns a metadata document's bytes, and false for a chunk.
func (c *File) Document() ([]byte, bool) { return c.doc, c.isDoc }

// Attr implements Node.
func (c *File) Attr() Attr {
	return Attr{Inode: Inode(c.key), Size: c.size, Mtime: c.fs.mtime}
}

// Forget tells the file system the kernel forgot the file: a later lookup
// makes a new one.
func (c *File) Forget() {
	c.dropFirst()
	c.fs.forgetFile(c.key, c)
}

// firstReaderTTL bounds how long a lookup's reader waits for its open.
const firstReaderTTL = 5 * time.Second

// takeFirst returns the lookup's reader, once.
func (c *File) takeFirst() *cache.Reader {
	c.firstMu.Lock()
	defer c.firstMu.Unlock()
	r := c.first
	c.first = nil
	return r
}

func (c *File) dropFirst() {
	if r := c.takeFirst(); r != nil {
		_ = r.Close()
	}
}

// Open opens the file for reading. Data under one version never changes,
// so the kernel may keep its page cache across opens.
func (c *File) Open(ctx context.Context) (Handle, error) {
	if c.isDoc {
		return docHandle(c.doc), nil
	}
	f := c.fs
	if c.changed.Load() {
		// Linux retries an open that fails with ESTALE once, revalidating
		// the name: the lookup then gives the File of the new version.
		return nil, fmt.Errorf("%s: version %s: %w", c.key, c.version, ErrStale)
	}
	r := c.takeFirst()
	if r == nil {
		// Opened again (a later epoch): a step of the reader the planner
		// has not seen through a lookup. Predictions use the current
		// version of the store: a refresh may have changed the neighbours
		// since this file was looked up.
		v := f.current()
		var arr *zarr.Array
		if n := v.Tree.Lookup(c.arrPath); n != nil && n.Kind == zarr.KindArray {
			arr = n.Array
			f.access(v.Store, n, c.coords, c.key)
		}
		if h, err := c.openRanged(ctx, arr); h != nil || err != nil {
			if err != nil {
				return nil, err
			}
			return h, nil
		}
		var err error
		if c.version != "" {
			r, err = f.cache.OpenVersion(ctx, c.key, c.version)
		} else {
			r, err = f.cache.Open(ctx, c.key)
		}
		if err != nil {
			return nil, err
		}
	}
	if r.Size() != c.size || (c.version != "" && r.Version() != "" && r.Version() != c.version) {
		// The object changed on the origin since lookup: the kernel holds
		// the old size, and may hold pages of the old version for this
		// inode. Refuse rather than hand out a mix; the next open gets
		// the new version under a new inode.
		_ = r.Close()
		return nil, f.noteChanged(c, fmt.Errorf("%s: %d bytes of version %s, was %d bytes of version %s: %w",
			c.key, r.Size(), r.Version(), c.size, c.version, remote.ErrChanged))
	}
	return &wholeHandle{r: r}, nil
}

// openRanged opens the chunk by blocks when it is a shard or a big object
// of known version; (nil, nil) means read it whole.
func (c *File) openRanged(ctx context.Context, arr *zarr.Array) (Handle, error) {
	r := c.fs.ranged
	if !r.eligible(arr, c.key, c.version, c.size) {
		return nil, nil
	}
	t, err := r.table(ctx, arr, c.key, c.version, c.size)
	switch {
	case r.noteUnsupported(err):
		return nil, nil
	case err != nil:
		return nil, c.fs.staleIfChanged(c, err)
	}
	r.stats.objects.Add(1)
	return &rangedHandle{fs: c.fs, file: c, key: c.key, t: t, last: -2}, nil
}

// docHandle reads a metadata document from memory.
type docHandle []byte

func (d docHandle) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off >= int64(len(d)) {
		return 0, nil
	}
	return copy(p, d[off:]), nil
}

func (d docHandle) Release() error { return nil }

// wholeHandle reads a chunk from its whole cache entry.
type wholeHandle struct{ r *cache.Reader }

func (h *wholeHandle) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := h.r.ReadAt(p, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, err
	}
	return n, nil
}

func (h *wholeHandle) Release() error { return h.r.Close() }

// ReadsByBlocks says whether h reads its object by blocks (a shard or a
// big object of known version) rather than whole.
func ReadsByBlocks(h Handle) bool {
	_, ok := h.(*rangedHandle)
	return ok
}
