// Package blocks owns the geometry of reading one large object by ranges:
// how one version of a v3 shard or of a big plain chunk is cut into blocks,
// and which block serves which bytes of a read. A shard's blocks follow its
// inner chunks: neighbouring inner chunks (closer than MergeGapBytes) merge
// into one block of at most ShardBlockBytes, an inner chunk is never split,
// and the bytes between them and the index get blocks of their own. A plain
// object of at least BigObjectBytes gets fixed blocks of PlainBlockBytes.
//
// The kernel reads whole pages, so a reader's first and last page usually
// reach a little into the neighbouring blocks. Each block is therefore
// fetched with the pages it shares with its neighbours (its "fetch range",
// at most a page more on each side), and a read at a block's edge is served
// from the block it continues into: one inner chunk costs one block.
//
// It is pure code over zarr.Array: it must not know the cache, the origin,
// files or handles.
package blocks

import (
	"cmp"
	"fmt"
	"slices"
	"sort"

	"github.com/zarrfs/zarrfs/zarr"
)

// Block layout and limits.
const (
	BigObjectBytes  = 16 << 20 // plain objects this large are read by blocks
	PlainBlockBytes = 4 << 20
	// ShardBlockBytes bounds a block of merged inner chunks: a reader that
	// wants one inner chunk pays for at most this much of its neighbours
	// (and one request per this much when it wants them all).
	ShardBlockBytes = 256 << 10
	MergeGapBytes   = 64 << 10
	// MaxIndexInMemory bounds the shard index bytes a table keeps; a
	// larger index is read from its cache entry like any block.
	MaxIndexInMemory = 64 << 10
)

// PageSize is the granularity of the kernel's reads.
const PageSize = 4096

// Extent is a byte range [Off, Off+N) of an object.
type Extent struct{ Off, N int64 }

// End is the offset just past the extent.
func (e Extent) End() int64 { return e.Off + e.N }

// Table partitions one version of an object into blocks.
type Table struct {
	Sharded bool
	Version string
	Size    int64
	Blocks  []Extent // sorted, contiguous, covering [0, Size)
	// IndexBlock is the block of a shard's index (-1 if none); Tail holds
	// its fetch range when it is small enough to keep, and reads of it are
	// served from memory.
	IndexBlock int
	Tail       []byte
}

// Find returns the block holding byte off (< Size).
func (t *Table) Find(off int64) int {
	return sort.Search(len(t.Blocks), func(i int) bool { return t.Blocks[i].End() > off })
}

// FetchRange is what block i's cache entry holds: the block widened to
// whole pages.
func (t *Table) FetchRange(i int) Extent {
	b := t.Blocks[i]
	lo := b.Off / PageSize * PageSize
	hi := min(t.Size, (b.End()+PageSize-1)/PageSize*PageSize)
	return Extent{lo, hi - lo}
}

// InMemory says whether block i is served from Tail.
func (t *Table) InMemory(i int) bool { return i == t.IndexBlock && t.Tail != nil }

// Segment picks the block that serves the read of [p, end), p < Size, and
// how far it serves it: the block holding p, unless p is only the start of
// a page the read continues into the next block with.
func (t *Table) Segment(p, end int64) (i int, stop int64) {
	i = t.Find(p)
	if i+1 < len(t.Blocks) && t.FetchRange(i+1).Off <= p && end > t.Blocks[i+1].Off {
		i++
	}
	stop = t.Blocks[i].End()
	if f := t.FetchRange(i); end <= f.End() {
		stop = end
	}
	return i, min(stop, t.Size, end)
}

// appendFixed appends [lo, hi) cut into pieces of at most n bytes.
func appendFixed(blocks []Extent, lo, hi, n int64) []Extent {
	for lo < hi {
		m := min(n, hi-lo)
		blocks = append(blocks, Extent{lo, m})
		lo += m
	}
	return blocks
}

// FixedTable is the table of a plain object: blocks of blockSize bytes.
func FixedTable(version string, size, blockSize int64) *Table {
	return &Table{Version: version, Size: size, Blocks: appendFixed(nil, 0, size, blockSize), IndexBlock: -1}
}

// IndexFetchRange is the fetch range of the index block of a shard of
// size bytes: the index widened to whole pages.
func IndexFetchRange(arr *zarr.Array, size int64) Extent {
	t := Table{Size: size, Blocks: []Extent{{arr.Shard.IndexOffset(arr, size), arr.Shard.IndexSize(arr)}}}
	return t.FetchRange(0)
}

// ShardTable builds the table of one shard of arr from the bytes of its
// index's fetch range (IndexFetchRange).
func ShardTable(arr *zarr.Array, version string, size int64, tail []byte) (*Table, error) {
	fr := IndexFetchRange(arr, size)
	idx := Extent{arr.Shard.IndexOffset(arr, size), arr.Shard.IndexSize(arr)}
	if int64(len(tail)) != fr.N {
		return nil, fmt.Errorf("the index's pages are %d bytes, want %d: %w", len(tail), fr.N, zarr.ErrInvalid)
	}
	ranges, err := zarr.ParseShardIndex(tail[idx.Off-fr.Off:idx.End()-fr.Off], arr)
	if err != nil {
		return nil, err
	}
	if err := zarr.ValidateShardRanges(ranges, arr, size); err != nil {
		return nil, err
	}
	stored := make([]Extent, 0, len(ranges))
	for _, r := range ranges {
		if !r.Empty && r.Length > 0 {
			stored = append(stored, Extent{r.Offset, r.Length})
		}
	}
	slices.SortFunc(stored, func(a, b Extent) int {
		if a.Off != b.Off {
			return cmp.Compare(a.Off, b.Off)
		}
		return cmp.Compare(a.N, b.N)
	})
	// Merge neighbours; overlapping inner chunks (legal, if odd) always
	// share a block so that blocks stay disjoint.
	var merged []Extent
	for _, s := range stored {
		if k := len(merged) - 1; k >= 0 {
			m := &merged[k]
			end := max(m.End(), s.End())
			if s.Off < m.End() || (s.Off <= m.End()+MergeGapBytes && end-m.Off <= ShardBlockBytes) {
				m.N = end - m.Off
				continue
			}
		}
		merged = append(merged, s)
	}
	if idx.N > 0 {
		i, _ := slices.BinarySearchFunc(merged, idx.Off, func(s Extent, off int64) int { return cmp.Compare(s.Off, off) })
		merged = slices.Insert(merged, i, idx)
	}
	t := &Table{Sharded: true, Version: version, Size: size, IndexBlock: -1}
	pos := int64(0)
	for _, m := range merged {
		t.Blocks = appendFixed(t.Blocks, pos, m.Off, ShardBlockBytes)
		if m == idx {
			t.IndexBlock = len(t.Blocks)
		}
		t.Blocks = append(t.Blocks, m)
		pos = m.End()
	}
	t.Blocks = appendFixed(t.Blocks, pos, size, ShardBlockBytes)
	if t.IndexBlock >= 0 && t.FetchRange(t.IndexBlock) == fr && fr.N <= MaxIndexInMemory {
		t.Tail = tail
	}
	return t, nil
}

// ShardIndexSize is the index size of arr's shards when they can be read
// by ranges, else 0.
func ShardIndexSize(arr *zarr.Array) int64 {
	if arr == nil || arr.Shard == nil || arr.Shard.IndexUnsupported != "" {
		return 0
	}
	return max(0, arr.Shard.IndexSize(arr))
}
