package vfs

// Reading an open shard or big object by blocks.
//
// Lock order: rangedHandle.mu is a leaf, never held while calling the
// cache.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/vfs/blocks"
)

// Handle limits.
const (
	handleReaders  = 4 // block readers one open file keeps open
	blockReadahead = 2 // blocks fetched ahead of a sequential reader
)

// rangedHandle is one open of an object read by blocks.
type rangedHandle struct {
	fs   *FS
	file *File // the File opened, told when the object turns out changed
	key  string
	t    *blocks.Table

	mu     sync.Mutex
	open   []*openBlock // most recently used last; at most handleReaders
	last   int          // the block read last, for sequential readahead
	closed bool
	// whole reads the object whole once the origin turned out to ignore
	// ranges.
	whole *cache.Reader
}

// openBlock is a block reader shared by the reads of one handle; refs
// counts the reads using it, so eviction never closes it under one.
type openBlock struct {
	i       int
	r       *cache.Reader
	refs    int
	evicted bool
}

func (h *rangedHandle) acquire(ctx context.Context, i int) (*openBlock, error) {
	h.mu.Lock()
	for k, ob := range h.open {
		if ob.i == i {
			ob.refs++
			h.open = append(append(h.open[:k:k], h.open[k+1:]...), ob)
			h.mu.Unlock()
			return ob, nil
		}
	}
	h.mu.Unlock()
	f := h.t.FetchRange(i)
	r, err := h.fs.ranged.cache.OpenRange(ctx, h.key, h.t.Version, f.Off, f.N)
	if err != nil {
		return nil, err
	}
	h.fs.ranged.stats.blockOpen.Add(1)
	ob := &openBlock{i: i, r: r, refs: 1}
	var evict []*openBlock
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		_ = r.Close()
		return nil, ErrHandleClosed
	}
	h.open = append(h.open, ob)
	for len(h.open) > handleReaders {
		old := h.open[0]
		h.open = h.open[1:]
		old.evicted = true
		if old.refs == 0 {
			evict = append(evict, old)
		}
	}
	h.mu.Unlock()
	for _, old := range evict {
		_ = old.r.Close()
	}
	return ob, nil
}

func (h *rangedHandle) releaseBlock(ob *openBlock) {
	h.mu.Lock()
	ob.refs--
	done := ob.refs == 0 && ob.evicted
	h.mu.Unlock()
	if done {
		_ = ob.r.Close()
	}
}

// ReadAt serves a read from the blocks it spans.
func (h *rangedHandle) ReadAt(ctx context.Context, buf []byte, at int64) (int, error) {
	if h.fs.ranged.unsupported.Load() {
		return h.readWhole(ctx, buf, at)
	}
	t := h.t
	off, n := at, 0
	end := at + int64(len(buf))
	first, lastRead := -1, -1
	for off < end && off < t.Size {
		i, stop := t.Segment(off, end)
		if first < 0 {
			first = i
		}
		lastRead = i
		f := t.FetchRange(i)
		want := int(stop - off)
		if t.InMemory(i) {
			n += copy(buf[n:n+want], t.Tail[off-f.Off:])
			off = stop
			continue
		}
		ob, err := h.acquire(ctx, i)
		if h.fs.ranged.noteUnsupported(err) {
			return h.readWhole(ctx, buf, at)
		}
		if err != nil {
			return 0, h.fs.staleIfChanged(h.file, err)
		}
		m, err := ob.r.ReadAt(buf[n:n+want], off-f.Off)
		h.releaseBlock(ob)
		if m < want {
			if err == nil || errors.Is(err, io.EOF) {
				err = fmt.Errorf("block [%d, +%d) ended after %d bytes", f.Off, f.N, off-f.Off+int64(m))
			}
			return 0, h.fs.staleIfChanged(h.file, err)
		}
		n += m
		off = stop
	}
	if first >= 0 {
		h.readahead(first, lastRead)
	}
	return n, nil
}

// readWhole serves a read from the whole object, for an origin that
// ignores ranges.
func (h *rangedHandle) readWhole(ctx context.Context, buf []byte, off int64) (int, error) {
	h.mu.Lock()
	r := h.whole
	h.mu.Unlock()
	if r == nil {
		var err error
		if r, err = h.fs.cache.OpenVersion(ctx, h.key, h.t.Version); err != nil {
			return 0, err
		}
		if r.Size() != h.t.Size || (r.Version() != "" && r.Version() != h.t.Version) {
			// Blocks of the handle's version may have been served already.
			_ = r.Close()
			return 0, h.fs.noteChanged(h.file, fmt.Errorf("%s: %d bytes of version %s, was %d bytes of version %s: %w",
				h.key, r.Size(), r.Version(), h.t.Size, h.t.Version, remote.ErrChanged))
		}
		h.mu.Lock()
		if h.whole != nil || h.closed {
			_ = r.Close()
			r = h.whole
		} else {
			h.whole = r
		}
		h.mu.Unlock()
		if r == nil {
			return 0, ErrHandleClosed
		}
	}
	n, err := r.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	return n, nil
}

// readahead fetches blocks before the reader asks. A plain object is
// read whole by every zarr reader, so a read at its start asks for all of
// its blocks at once: they arrive in parallel, the reader's share of the
// link grows with them. In a shard, a reader crossing into the next block
// is reading a run of inner chunks: the blocks after it are fetched too.
func (h *rangedHandle) readahead(first, lastRead int) {
	if h.fs.planner == nil {
		return // prefetching is off: only what readers ask for
	}
	h.mu.Lock()
	crossed := first == h.last+1
	h.last = lastRead
	h.mu.Unlock()
	t := h.t
	from, to, class := lastRead+1, lastRead+blockReadahead, cache.PriorityHigh
	switch {
	case !t.Sharded && first == 0:
		to, class = len(t.Blocks)-1, cache.PriorityUrgent
	case !crossed:
		return
	}
	for i := from; i <= to && i < len(t.Blocks); i++ {
		if !t.InMemory(i) {
			h.fs.ranged.cache.Prefetch(blockWant(t, h.key, i), class)
		}
	}
}

// Release closes the block readers once no read uses them.
func (h *rangedHandle) Release() error {
	h.mu.Lock()
	h.closed = true
	var done []*openBlock
	for _, ob := range h.open {
		ob.evicted = true
		if ob.refs == 0 {
			done = append(done, ob)
		}
	}
	h.open = nil
	whole := h.whole
	h.whole = nil
	h.mu.Unlock()
	for _, ob := range done {
		_ = ob.r.Close()
	}
	if whole != nil {
		_ = whole.Close()
	}
	return nil
}
