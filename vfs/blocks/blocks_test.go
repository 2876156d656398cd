package blocks_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/zarrfs/zarrfs/internal/storetest"
	"github.com/zarrfs/zarrfs/vfs/blocks"
	"github.com/zarrfs/zarrfs/zarr"
)

func TestShardTableLayout(t *testing.T) {
	dir := storetest.GenShardStore(t)
	_, arr, err := zarr.ParseV3Node(storetest.MustJSON(t, storetest.ShardArrayMeta()))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"big/c/0/0", "big/c/1/0"} {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(key)))
		if err != nil {
			t.Fatal(err)
		}
		size := int64(len(data))
		idxLen := arr.Shard.IndexSize(arr)
		tb, err := blocks.ShardTable(arr, `"v"`, size, data[blocks.IndexFetchRange(arr, size).Off:])
		if err != nil {
			t.Fatal(err)
		}
		// Contiguous cover of the object.
		pos := int64(0)
		for i, b := range tb.Blocks {
			if b.Off != pos || b.N <= 0 {
				t.Fatalf("%s: block %d is [%d, +%d), want it to start at %d", key, i, b.Off, b.N, pos)
			}
			pos = b.End()
		}
		if pos != size {
			t.Fatalf("%s: blocks end at %d, object has %d bytes", key, pos, size)
		}
		if i := tb.Find(size - 1); !tb.InMemory(i) || tb.Blocks[i] != (blocks.Extent{size - idxLen, idxLen}) {
			t.Errorf("%s: the index is not a block of its own held in memory: %v", key, tb.Blocks[i])
		}
		// The kernel reads whole pages: the pages of one inner chunk (or
		// of the index) are served by exactly one block.
		pagesOf := func(off, n int64) (int64, int64) {
			return off / blocks.PageSize * blocks.PageSize, min(size, (off+n+blocks.PageSize-1)/blocks.PageSize*blocks.PageSize)
		}
		blocksFor := func(lo, hi int64) map[int]bool {
			used := map[int]bool{}
			for p := lo; p < hi; {
				i, stop := tb.Segment(p, hi)
				if f := tb.FetchRange(i); p < f.Off || stop > f.End() || stop <= p {
					t.Fatalf("%s: segment(%d, %d) = block %d to %d, outside its fetch range %v", key, p, hi, i, stop, f)
				}
				used[i] = true
				p = stop
			}
			return used
		}
		if lo, hi := pagesOf(size-idxLen, idxLen); len(blocksFor(lo, hi)) != 1 {
			t.Errorf("%s: the index's pages need blocks %v", key, blocksFor(lo, hi))
		}
		// Every inner chunk lies in exactly one block, and blocks stay small.
		stored := 0
		for i, r := range storetest.InnerChunkRanges(t, data) {
			if r.Empty {
				continue
			}
			stored++
			b := tb.Blocks[tb.Find(r.Offset)]
			if r.Offset+r.Length > b.End() {
				t.Errorf("%s: inner chunk %d [%d, +%d) is split at %d", key, i, r.Offset, r.Length, b.End())
			}
			if lo, hi := pagesOf(r.Offset, r.Length); len(blocksFor(lo, hi)) != 1 {
				t.Errorf("%s: the pages of inner chunk %d need blocks %v", key, i, blocksFor(lo, hi))
			}
		}
		for _, b := range tb.Blocks {
			if b.N > blocks.ShardBlockBytes {
				t.Errorf("%s: block [%d, +%d) exceeds %d bytes", key, b.Off, b.N, blocks.ShardBlockBytes)
			}
		}
		if want := (stored*storetest.InnerChunkBytes+blocks.ShardBlockBytes-1)/blocks.ShardBlockBytes + 1; len(tb.Blocks) != want {
			t.Errorf("%s: %d blocks, want %d (merged inner chunks + index)", key, len(tb.Blocks), want)
		}
	}
}
