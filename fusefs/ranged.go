package fusefs

// Ranged reads of large objects. A v3 shard holds many inner chunks and a
// reader usually wants a few of them; a big plain chunk is better fetched
// in pieces the reader can start on while the rest is still coming. Both
// are read and cached in blocks instead of whole, when their version is
// known (a block of one version must never meet a block of another, so
// every range request carries If-Match):
//
//   - A shard's blocks follow its inner chunks: neighbouring inner chunks
//     (closer than mergeGapBytes) merge into one block of at most
//     shardBlockBytes, an inner chunk is never split, and the bytes between
//     them and the index get blocks of their own. The index is read once
//     (by a range, or with the suffix request that learns the shard's size
//     on an origin without a manifest) and kept in memory with the table.
//   - A plain object of at least bigObjectBytes gets fixed blocks of
//     plainBlockBytes.
//
// The kernel reads whole pages, so a reader's first and last page usually
// reach a little into the neighbouring blocks. Each block is therefore
// fetched with the pages it shares with its neighbours (its "fetch range",
// at most a page more on each side), and a read at a block's edge is served
// from the block it continues into: one inner chunk costs one block.
//
// Each block is a cache range entry, so a partially read shard keeps (and
// serves) exactly the blocks that were read. Predicted shards (the
// planner, background fills, `zarrfs prefetch`) are expanded into their
// blocks before they reach the cache's scheduler, so a prefetched shard
// lands as the same block entries a reader opens.
//
// An origin that answers a range request with the whole object (200) turns
// ranged reads off for the rest of the mount: objects are then read whole.
//
// Lock order: rangedHandle.mu is a leaf; the table LRU and singleflight lock
// internally. Nothing here holds a lock while calling the cache or the
// origin.

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"

	"bazil.org/fuse"
	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/zarr"
)

// Block layout and limits.
const (
	bigObjectBytes  = 16 << 20 // plain objects this large are read by blocks
	plainBlockBytes = 4 << 20
	// shardBlockBytes bounds a block of merged inner chunks: a reader that
	// wants one inner chunk pays for at most this much of its neighbours
	// (and one request per this much when it wants them all).
	shardBlockBytes = 256 << 10
	mergeGapBytes   = 64 << 10
	// maxIndexInMemory bounds the shard index bytes a table keeps; a
	// larger index is read from its cache entry like any block. With
	// tableCacheSize tables this keeps their memory to tens of MB.
	maxIndexInMemory = 64 << 10
	tableCacheSize   = 256
	missingShards    = 16384
	handleReaders    = 4 // block readers one open file keeps open
	blockReadahead   = 2 // blocks fetched ahead of a sequential reader
	expandWorkers    = 4
	expandQueue      = 256
)

// rangeChunks is what ranged reads need from the cache (*cache.Cache).
type rangeChunks interface {
	OpenRange(ctx context.Context, key, version string, off, n int64) (*cache.Reader, error)
	Prefetch(w cache.Want, class cache.Priority) cache.PrefetchResult
}

// suffixOrigin reads the end of an object and learns its size and version
// in the same request (*remote.Client).
type suffixOrigin interface {
	FetchSuffix(ctx context.Context, key, version string, n int64, w io.Writer) (remote.Piece, error)
}

// span is a byte range of an object.
type span struct{ off, n int64 }

func (s span) end() int64 { return s.off + s.n }

// pageSize is the granularity of the kernel's reads.
const pageSize = 4096

// blockTable partitions one version of an object into blocks.
type blockTable struct {
	sharded bool
	version string
	size    int64
	blocks  []span // sorted, contiguous, covering [0, size)
	// indexBlock is the block of a shard's index (-1 if none); tail holds
	// its fetch range when it is small enough to keep, and reads of it are
	// served from memory.
	indexBlock int
	tail       []byte
}

// find returns the block holding byte off (< size).
func (t *blockTable) find(off int64) int {
	return sort.Search(len(t.blocks), func(i int) bool { return t.blocks[i].end() > off })
}

// fetchRange is what block i's cache entry holds: the block widened to
// whole pages.
func (t *blockTable) fetchRange(i int) span {
	b := t.blocks[i]
	lo := b.off / pageSize * pageSize
	hi := min(t.size, (b.end()+pageSize-1)/pageSize*pageSize)
	return span{lo, hi - lo}
}

// inMemory says whether block i is served from tail.
func (t *blockTable) inMemory(i int) bool { return i == t.indexBlock && t.tail != nil }

// segment picks the block that serves the read of [p, end), p < size, and
// how far it serves it: the block holding p, unless p is only the start of
// a page the read continues into the next block with.
func (t *blockTable) segment(p, end int64) (i int, stop int64) {
	i = t.find(p)
	if i+1 < len(t.blocks) && t.fetchRange(i+1).off <= p && end > t.blocks[i+1].off {
		i++
	}
	stop = t.blocks[i].end()
	if f := t.fetchRange(i); end <= f.end() {
		stop = end
	}
	return i, min(stop, t.size, end)
}

// want is the cache Want of block i.
func (t *blockTable) want(key string, i int) cache.Want {
	f := t.fetchRange(i)
	return cache.Want{Key: key, Version: t.version, Off: f.off, Len: f.n}
}

// appendFixed appends [lo, hi) cut into pieces of at most n bytes.
func appendFixed(blocks []span, lo, hi, n int64) []span {
	for lo < hi {
		m := min(n, hi-lo)
		blocks = append(blocks, span{lo, m})
		lo += m
	}
	return blocks
}

// fixedTable is the table of a plain object.
func fixedTable(version string, size, blockSize int64) *blockTable {
	return &blockTable{version: version, size: size, blocks: appendFixed(nil, 0, size, blockSize), indexBlock: -1}
}

// indexFetchRange is the fetch range of the index block of a shard of
// size bytes: the index widened to whole pages.
func indexFetchRange(arr *zarr.Array, size int64) span {
	t := blockTable{size: size, blocks: []span{{arr.Shard.IndexOffset(arr, size), arr.Shard.IndexSize(arr)}}}
	return t.fetchRange(0)
}

// shardTable builds the table of one shard of arr from the bytes of its
// index's fetch range (indexFetchRange).
func shardTable(arr *zarr.Array, version string, size int64, tail []byte) (*blockTable, error) {
	fr := indexFetchRange(arr, size)
	idx := span{arr.Shard.IndexOffset(arr, size), arr.Shard.IndexSize(arr)}
	if int64(len(tail)) != fr.n {
		return nil, fmt.Errorf("the index's pages are %d bytes, want %d: %w", len(tail), fr.n, zarr.ErrInvalid)
	}
	ranges, err := zarr.ParseShardIndex(tail[idx.off-fr.off:idx.end()-fr.off], arr)
	if err != nil {
		return nil, err
	}
	if err := zarr.ValidateShardRanges(ranges, arr, size); err != nil {
		return nil, err
	}
	stored := make([]span, 0, len(ranges))
	for _, r := range ranges {
		if !r.Empty && r.Length > 0 {
			stored = append(stored, span{r.Offset, r.Length})
		}
	}
	slices.SortFunc(stored, func(a, b span) int {
		if a.off != b.off {
			return cmp.Compare(a.off, b.off)
		}
		return cmp.Compare(a.n, b.n)
	})
	// Merge neighbours; overlapping inner chunks (legal, if odd) always
	// share a block so that blocks stay disjoint.
	var merged []span
	for _, s := range stored {
		if k := len(merged) - 1; k >= 0 {
			m := &merged[k]
			end := max(m.end(), s.end())
			if s.off < m.end() || (s.off <= m.end()+mergeGapBytes && end-m.off <= shardBlockBytes) {
				m.n = end - m.off
				continue
			}
		}
		merged = append(merged, s)
	}
	if idx.n > 0 {
		i, _ := slices.BinarySearchFunc(merged, idx.off, func(s span, off int64) int { return cmp.Compare(s.off, off) })
		merged = slices.Insert(merged, i, idx)
	}
	t := &blockTable{sharded: true, version: version, size: size, indexBlock: -1}
	pos := int64(0)
	for _, m := range merged {
		t.blocks = appendFixed(t.blocks, pos, m.off, shardBlockBytes)
		if m == idx {
			t.indexBlock = len(t.blocks)
		}
		t.blocks = append(t.blocks, m)
		pos = m.end()
	}
	t.blocks = appendFixed(t.blocks, pos, size, shardBlockBytes)
	if t.indexBlock >= 0 && t.fetchRange(t.indexBlock) == fr && fr.n <= maxIndexInMemory {
		t.tail = tail
	}
	return t, nil
}

// shardIndexSize is the index size of arr's shards when zarrfs can read
// them by ranges, else 0.
func shardIndexSize(arr *zarr.Array) int64 {
	if arr == nil || arr.Shard == nil || arr.Shard.IndexUnsupported != "" {
		return 0
	}
	return max(0, arr.Shard.IndexSize(arr))
}

// rangedObjects decides which objects are read by ranges and holds their
// block tables.
type rangedObjects struct {
	chunks rangeChunks
	origin suffixOrigin // nil: sizes of shards are learned only from a manifest
	log    *slog.Logger

	tables  *lru.Cache[string, *blockTable] // key "\x00" version -> table
	learned *lru.Cache[string, *blockTable] // key -> table learned without a manifest
	// missing remembers shards the origin does not have (fill_value): a
	// lookup of one is asked once, like the cache's memory of missing keys.
	missing *lru.Cache[string, error]
	loads   singleflight.Group
	// unsupported is set once the origin answered a range with the whole
	// object: everything is read whole from then on.
	unsupported atomic.Bool
	warnedIndex atomic.Bool

	ctx    context.Context // the mount's lifetime: loads outlive one reader
	cancel context.CancelFunc
	jobs   chan expandJob
	wg     sync.WaitGroup

	stats rangedCounters
}

type rangedCounters struct {
	objects   atomic.Int64 // opens served by ranges
	tables    atomic.Int64 // block tables built
	badIndex  atomic.Int64 // shards whose index could not be used
	expanded  atomic.Int64 // predicted objects expanded into blocks
	dropped   atomic.Int64 // expansions dropped: queue full
	blockOpen atomic.Int64 // block opens
}

// RangedStats count ranged reads.
type RangedStats struct {
	Objects     int64 `json:"objects"`     // opens of shards and big objects served by blocks
	Tables      int64 `json:"tables"`      // block tables built (shard indexes read)
	BadIndexes  int64 `json:"bad_indexes"` // shard indexes that failed to parse: read in fixed blocks
	Expanded    int64 `json:"expanded"`    // predicted objects prefetched as blocks
	BlockOpens  int64 `json:"block_opens"` // block entries opened for readers
	Dropped     int64 `json:"dropped"`     // predicted objects not prefetched: the expansion queue was full
	Unsupported bool  `json:"unsupported"` // the origin ignores ranges: objects are read whole
}

func newRangedObjects(chunks rangeChunks, origin suffixOrigin, log *slog.Logger) *rangedObjects {
	ctx, cancel := context.WithCancel(context.Background())
	r := &rangedObjects{
		chunks:  chunks,
		origin:  origin,
		log:     log,
		tables:  must(lru.New[string, *blockTable](tableCacheSize)),
		learned: must(lru.New[string, *blockTable](tableCacheSize)),
		missing: must(lru.New[string, error](missingShards)),
		ctx:     ctx,
		cancel:  cancel,
		jobs:    make(chan expandJob, expandQueue),
	}
	for range expandWorkers {
		r.wg.Go(r.expandLoop)
	}
	return r
}

// close stops the expansion workers and the loads in progress.
func (r *rangedObjects) close() {
	if r == nil {
		return
	}
	r.cancel()
	r.wg.Wait()
}

func (r *rangedObjects) Stats() RangedStats {
	if r == nil {
		return RangedStats{}
	}
	return RangedStats{
		Objects: r.stats.objects.Load(), Tables: r.stats.tables.Load(), BadIndexes: r.stats.badIndex.Load(),
		Expanded: r.stats.expanded.Load(), BlockOpens: r.stats.blockOpen.Load(), Dropped: r.stats.dropped.Load(),
		Unsupported: r.unsupported.Load(),
	}
}

// forget drops what was learned without a manifest: after the store
// changed, sizes and versions must be asked for again.
func (r *rangedObjects) forget() {
	if r != nil {
		r.learned.Purge()
		r.missing.Purge()
	}
}

// eligible says whether an object of that version and size is read by
// ranges: a shard larger than one block (a smaller one costs one request
// whole, two by ranges), a big plain object, or any object whose table is
// known already (a shard learned without a manifest).
func (r *rangedObjects) eligible(arr *zarr.Array, key, version string, size int64) bool {
	if r == nil || r.unsupported.Load() || version == "" {
		return false
	}
	if idx := shardIndexSize(arr); idx > 0 && size >= idx && size > shardBlockBytes {
		return true
	}
	return size >= bigObjectBytes || r.tables.Contains(key+"\x00"+version)
}

// noteUnsupported turns ranged reads off when err says the origin ignores
// ranges, and reports whether it did.
func (r *rangedObjects) noteUnsupported(err error) bool {
	if !errors.Is(err, remote.ErrRangesUnsupported) && !errors.Is(err, cache.ErrNoRanges) {
		return false
	}
	if !r.unsupported.Swap(true) {
		r.log.Warn("the origin ignores byte ranges: shards and big chunks are read whole", "err", err)
	}
	return true
}

// table returns the block table of key at version (size bytes), reading a
// shard's index if it is not known yet. Concurrent calls share one load,
// which runs on the mount's lifetime so that a reader giving up does not
// fail the others.
func (r *rangedObjects) table(ctx context.Context, arr *zarr.Array, key, version string, size int64) (*blockTable, error) {
	id := key + "\x00" + version
	if t, ok := r.tables.Get(id); ok {
		return t, nil
	}
	return r.shared(ctx, id, func() (*blockTable, error) {
		if t, ok := r.tables.Get(id); ok {
			return t, nil
		}
		t, err := r.load(arr, key, version, size)
		if err != nil {
			return nil, err
		}
		r.tables.Add(id, t)
		return t, nil
	})
}

// shared runs load once for all concurrent callers with the same id. A
// caller whose ctx ends stops waiting; the load goes on for the others.
func (r *rangedObjects) shared(ctx context.Context, id string, load func() (*blockTable, error)) (*blockTable, error) {
	ch := r.loads.DoChan(id, func() (any, error) { return load() })
	select {
	case res := <-ch:
		t, _ := res.Val.(*blockTable)
		return t, res.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (r *rangedObjects) load(arr *zarr.Array, key, version string, size int64) (*blockTable, error) {
	idxLen := shardIndexSize(arr)
	if idxLen == 0 || size < idxLen {
		return fixedTable(version, size, plainBlockBytes), nil
	}
	fr := indexFetchRange(arr, size)
	rd, err := r.chunks.OpenRange(r.ctx, key, version, fr.off, fr.n)
	if err != nil {
		return nil, fmt.Errorf("read the index of shard %s: %w", key, err)
	}
	tail := make([]byte, fr.n)
	_, err = rd.ReadAt(tail, 0)
	_ = rd.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read the index of shard %s: %w", key, err)
	}
	return r.shardOrFixed(arr, key, version, size, tail), nil
}

// shardOrFixed builds a shard's table from its index, or fixed blocks
// when the index is unusable (the bytes are still served as they are).
func (r *rangedObjects) shardOrFixed(arr *zarr.Array, key, version string, size int64, tail []byte) *blockTable {
	r.stats.tables.Add(1)
	t, err := shardTable(arr, version, size, tail)
	if err == nil {
		return t
	}
	r.stats.badIndex.Add(1)
	if !r.warnedIndex.Swap(true) {
		r.log.Warn("a shard index on the origin is damaged; that shard is read in fixed blocks (rewrite it to fix; later ones are counted in stats, not logged)",
			"key", key, "err", err)
	}
	return fixedTable(version, size, shardBlockBytes)
}

// learn finds the size and version of a shard on an origin without a
// manifest: one suffix request reads the index and says both. ok is false
// when the shard cannot be read by ranges (no strong ETag, an origin that
// ignores ranges, an object smaller than its index): it is then read whole.
func (r *rangedObjects) learn(ctx context.Context, arr *zarr.Array, key string) (t *blockTable, ok bool, err error) {
	idxLen := shardIndexSize(arr)
	if r == nil || r.origin == nil || idxLen == 0 || r.unsupported.Load() {
		return nil, false, nil
	}
	if arr.Shard.IndexAtStart {
		return nil, false, nil // the size is only learned from the end
	}
	if t, ok := r.learned.Get(key); ok {
		return t, true, nil
	}
	if err, ok := r.missing.Get(key); ok {
		return nil, false, err
	}
	t, err = r.shared(ctx, "learn\x00"+key, func() (*blockTable, error) {
		// The index and the page before it: enough for the index's fetch
		// range whatever the size turns out to be.
		var buf bytes.Buffer
		p, err := r.origin.FetchSuffix(r.ctx, key, "", idxLen+pageSize, &buf)
		if err != nil {
			if r.noteUnsupported(err) {
				return nil, nil
			}
			if errors.Is(err, fs.ErrNotExist) {
				r.missing.Add(key, err)
			}
			return nil, err
		}
		if p.ETag == "" || p.Total < idxLen || p.Offset+p.Length != p.Total || int64(buf.Len()) != p.Length {
			return nil, nil
		}
		fr := indexFetchRange(arr, p.Total)
		if fr.off < p.Offset {
			return nil, nil
		}
		t := r.shardOrFixed(arr, key, p.ETag, p.Total, buf.Bytes()[fr.off-p.Offset:])
		r.learned.Add(key, t)
		r.tables.Add(key+"\x00"+p.ETag, t)
		return t, nil
	})
	return t, t != nil && err == nil, err
}

// wants lists the cache Wants that fetch every block of t except the
// in-memory index.
func (t *blockTable) wants(key string) []cache.Want {
	out := make([]cache.Want, 0, len(t.blocks))
	for i := range t.blocks {
		if !t.inMemory(i) {
			out = append(out, t.want(key, i))
		}
	}
	return out
}

// expandJob is a predicted object to fetch as blocks.
type expandJob struct {
	arr     *zarr.Array
	key     string
	version string // "" without a manifest: learned first
	size    int64
	class   cache.Priority
}

// blockWants returns the Wants of a predicted object, blocking for its
// table; ok is false when it is not read by ranges (fetch it whole).
func (r *rangedObjects) blockWants(ctx context.Context, j expandJob) (wants []cache.Want, ok bool, err error) {
	var t *blockTable
	if j.version == "" {
		if t, ok, err = r.learn(ctx, j.arr, j.key); !ok || err != nil {
			return nil, ok, err
		}
	} else {
		if !r.eligible(j.arr, j.key, j.version, j.size) {
			return nil, false, nil
		}
		if t, err = r.table(ctx, j.arr, j.key, j.version, j.size); err != nil {
			if r.noteUnsupported(err) {
				return nil, false, nil
			}
			return nil, true, err
		}
	}
	r.stats.expanded.Add(1)
	return t.wants(j.key), true, nil
}

// handles says whether a predicted object should go through expansion.
func (r *rangedObjects) handles(arr *zarr.Array, version string, size int64) bool {
	if r == nil || r.unsupported.Load() {
		return false
	}
	if version == "" {
		return r.origin != nil && shardIndexSize(arr) > 0 && !arr.Shard.IndexAtStart
	}
	return r.eligible(arr, "", version, size)
}

// prefetch queues a predicted object's blocks without blocking: the table
// is loaded by a worker when it is not known yet.
func (r *rangedObjects) prefetch(j expandJob) cache.PrefetchResult {
	if j.version != "" {
		if t, ok := r.tables.Get(j.key + "\x00" + j.version); ok {
			r.stats.expanded.Add(1)
			return r.queue(t.wants(j.key), j.class)
		}
	}
	select {
	case r.jobs <- j:
		return cache.PrefetchQueued
	default:
		r.stats.dropped.Add(1)
		return cache.PrefetchRefused
	}
}

func (r *rangedObjects) queue(wants []cache.Want, class cache.Priority) cache.PrefetchResult {
	res := cache.PrefetchPresent
	for _, w := range wants {
		switch r.chunks.Prefetch(w, class) {
		case cache.PrefetchQueued:
			res = cache.PrefetchQueued
		case cache.PrefetchRefused:
			return cache.PrefetchRefused // no room: the rest would be refused too
		}
	}
	return res
}

func (r *rangedObjects) expandLoop() {
	for {
		select {
		case <-r.ctx.Done():
			return
		case j := <-r.jobs:
			wants, ok, err := r.blockWants(r.ctx, j)
			switch {
			case err != nil:
				if r.ctx.Err() == nil {
					r.log.Debug("prefetch: block table", "key", j.key, "err", err)
				}
			case ok:
				r.queue(wants, j.class)
			default:
				// Not ranged after all (e.g. the origin ignores ranges).
				r.chunks.Prefetch(cache.Want{Key: j.key, Version: j.version, Size: j.size}, j.class)
			}
		}
	}
}

// expandFeed wraps a feed's generator so that shards and big objects come
// out as their blocks; expanded (if not nil) hears how many blocks each
// expanded object became. It blocks for a table that is not known yet (one
// request); the cache's dispatcher tolerates that.
func (r *rangedObjects) expandFeed(arrayOf func(key string) *zarr.Array, next func() (cache.Want, bool), expanded func(blocks int)) func() (cache.Want, bool) {
	if r == nil {
		return next
	}
	var pending []cache.Want
	return func() (cache.Want, bool) {
		for {
			if len(pending) > 0 {
				w := pending[0]
				pending = pending[1:]
				return w, true
			}
			w, ok := next()
			if !ok || w.Len > 0 {
				return w, ok
			}
			arr := arrayOf(w.Key)
			if !r.handles(arr, w.Version, w.Size) {
				return w, true
			}
			wants, ranged, err := r.blockWants(r.ctx, expandJob{arr: arr, key: w.Key, version: w.Version, size: w.Size})
			switch {
			case err != nil:
				if r.ctx.Err() != nil {
					return cache.Want{}, false
				}
				r.log.Debug("prefetch: block table", "key", w.Key, "err", err)
			case !ranged:
				return w, true
			default:
				pending = wants
				if expanded != nil {
					expanded(len(wants))
				}
			}
		}
	}
}

// arrayOf returns the array whose chunk key is key in the current view, or
// nil.
func (f *FS) arrayOf(key string) *zarr.Array {
	tree := f.current().Tree
	for p := path.Dir(key); ; p = path.Dir(p) {
		if p == "." {
			p = ""
		}
		if n := tree.Lookup(p); n != nil && n.Kind == zarr.KindArray {
			return n.Array
		}
		if p == "" {
			return nil
		}
	}
}

// rangedSink expands predicted shards and big objects into blocks on their
// way from the planner to the cache.
type rangedSink struct {
	inner prefetchSink
	fs    *FS
}

func (s rangedSink) Prefetch(w cache.Want, class cache.Priority) cache.PrefetchResult {
	if r := s.fs.ranged; w.Len == 0 && r != nil {
		if arr := s.fs.arrayOf(w.Key); r.handles(arr, w.Version, w.Size) {
			return r.prefetch(expandJob{arr: arr, key: w.Key, version: w.Version, size: w.Size, class: class})
		}
	}
	return s.inner.Prefetch(w, class)
}

func (s rangedSink) StartFeed(next func() (cache.Want, bool)) feedHandle {
	return s.inner.StartFeed(s.fs.ranged.expandFeed(s.fs.arrayOf, next, nil))
}

// rangedHandle is one open of an object read by blocks.
type rangedHandle struct {
	fs  *FS
	key string
	t   *blockTable

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
	f := h.t.fetchRange(i)
	r, err := h.fs.ranged.chunks.OpenRange(ctx, h.key, h.t.version, f.off, f.n)
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
		return nil, fuse.ToErrno(syscall.EBADF)
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

func (h *rangedHandle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	buf := resp.Data[:req.Size]
	if h.fs.ranged.unsupported.Load() {
		return h.readWhole(ctx, req, resp)
	}
	t := h.t
	off, n := req.Offset, 0
	end := req.Offset + int64(len(buf))
	first, lastRead := -1, -1
	for off < end && off < t.size {
		i, stop := t.segment(off, end)
		if first < 0 {
			first = i
		}
		lastRead = i
		f := t.fetchRange(i)
		want := int(stop - off)
		if t.inMemory(i) {
			n += copy(buf[n:n+want], t.tail[off-f.off:])
			off = stop
			continue
		}
		ob, err := h.acquire(ctx, i)
		if h.fs.ranged.noteUnsupported(err) {
			return h.readWhole(ctx, req, resp)
		}
		if err != nil {
			return h.fs.rangeErrno(h.key, err)
		}
		m, err := ob.r.ReadAt(buf[n:n+want], off-f.off)
		h.releaseBlock(ob)
		if m < want {
			if err == nil || errors.Is(err, io.EOF) {
				err = fmt.Errorf("block [%d, +%d) ended after %d bytes", f.off, f.n, off-f.off+int64(m))
			}
			return h.fs.rangeErrno(h.key, err)
		}
		n += m
		off = stop
	}
	resp.Data = buf[:n]
	if first >= 0 {
		h.readahead(first, lastRead)
	}
	return nil
}

// readWhole serves a read from the whole object, for an origin that
// ignores ranges.
func (h *rangedHandle) readWhole(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	h.mu.Lock()
	r := h.whole
	h.mu.Unlock()
	if r == nil {
		var err error
		if r, err = h.fs.chunks.OpenVersion(ctx, h.key, h.t.version); err != nil {
			return h.fs.errno("read", h.key, err)
		}
		if r.Size() != h.t.size {
			_ = r.Close()
			return h.fs.rangeErrno(h.key, fmt.Errorf("%w: %d bytes, was %d", remote.ErrChanged, r.Size(), h.t.size))
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
			return fuse.ToErrno(syscall.EBADF)
		}
	}
	buf := resp.Data[:req.Size]
	n, err := r.ReadAt(buf, req.Offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return h.fs.errno("read", h.key, err)
	}
	resp.Data = buf[:n]
	return nil
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
	case !t.sharded && first == 0:
		to, class = len(t.blocks)-1, cache.PriorityUrgent
	case !crossed:
		return
	}
	for i := from; i <= to && i < len(t.blocks); i++ {
		if !t.inMemory(i) {
			h.fs.ranged.chunks.Prefetch(t.want(h.key, i), class)
		}
	}
}

func (h *rangedHandle) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
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

// rangeErrno translates a block read failure: an object that changed on
// the origin since its version was learned is ESTALE (the kernel holds the
// old size); the rest as errno does.
func (f *FS) rangeErrno(key string, err error) error {
	if errors.Is(err, remote.ErrChanged) {
		f.log.Warn("object changed on the origin while being read; reopen it after the next refresh", "key", key, "err", err)
		return fuse.ToErrno(syscall.ESTALE)
	}
	return f.errno("read", key, err)
}
