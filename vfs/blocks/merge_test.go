package blocks_test

import (
	"encoding/binary"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/zarrfs/zarrfs/internal/storetest"
	"github.com/zarrfs/zarrfs/vfs/blocks"
	"github.com/zarrfs/zarrfs/zarr"
)

// smallInnerArray is a v3 array whose shards hold 8x8 inner chunks; the inner chunks are
// gzip'ed, so their stored sizes are whatever a test's shard says.
func smallInnerArray(t *testing.T) *zarr.Array {
	t.Helper()
	meta := storetest.ShardedArray{Shape: []int{64, 64}, Shard: []int{64, 64}, Inner: []int{8, 8}, DataType: "uint8", Fill: 0,
		InnerCodecs: []any{
			map[string]any{"name": "bytes"},
			map[string]any{"name": "gzip", "configuration": map[string]any{"level": 1}},
		},
	}.Meta()
	_, arr, err := zarr.ParseV3Node(storetest.MustJSON(t, meta))
	if err != nil {
		t.Fatal(err)
	}
	return arr
}

// shardOf lays out 64 inner chunks of the given stored sizes back to back (a negative size:
// not stored), with gap bytes before each one, and appends the index; it returns the shard
// and each stored inner chunk's extent.
func shardOf(sizes, gaps []int) ([]byte, []blocks.Extent) {
	var data []byte
	index := make([]byte, 64*16)
	var chunks []blocks.Extent
	for i, n := range sizes {
		if n < 0 {
			binary.LittleEndian.PutUint64(index[16*i:], math.MaxUint64)
			binary.LittleEndian.PutUint64(index[16*i+8:], math.MaxUint64)
			continue
		}
		data = append(data, make([]byte, gaps[i])...)
		binary.LittleEndian.PutUint64(index[16*i:], uint64(len(data)))
		binary.LittleEndian.PutUint64(index[16*i+8:], uint64(n))
		chunks = append(chunks, blocks.Extent{Off: int64(len(data)), N: int64(n)})
		data = append(data, make([]byte, n)...)
	}
	index = binary.LittleEndian.AppendUint32(index, crc32.Checksum(index, crc32.MakeTable(crc32.Castagnoli)))
	return append(data, index...), chunks
}

// TestShardTableMergesSmallInnerChunks: inner chunks much smaller than a block, of sizes that
// are no multiple of a page, merge several to a block (TestShardTableLayout's inner chunks
// are exactly a block each, so it never merges), a big gap starts a new block, an inner chunk
// is never split, and each inner chunk's pages — which reach into the neighbouring blocks at
// unaligned edges — are served by one block: a read that starts on the page before a block's
// first byte continues into that block.
func TestShardTableMergesSmallInnerChunks(t *testing.T) {
	arr := smallInnerArray(t)
	rng := rand.New(rand.NewPCG(3, 4))
	cases := map[string]struct{ sizes, gaps []int }{
		"unaligned 3-9 KB, back to back": {},
		"unaligned, some missing":        {},
		"a gap wider than MergeGapBytes": {},
	}
	for name := range cases {
		sizes, gaps := make([]int, 64), make([]int, 64)
		for i := range sizes {
			sizes[i] = 3000 + rng.IntN(6000) | 1 // odd: never page-aligned
		}
		switch name {
		case "unaligned, some missing":
			for i := 5; i < 64; i += 7 {
				sizes[i] = -1
			}
		case "a gap wider than MergeGapBytes":
			gaps[20] = blocks.MergeGapBytes + 12345
		}
		cases[name] = struct{ sizes, gaps []int }{sizes, gaps}
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			shard, chunks := shardOf(tc.sizes, tc.gaps)
			size := int64(len(shard))
			tb, err := blocks.ShardTable(arr, `"v"`, size, shard[blocks.IndexFetchRange(arr, size).Off:])
			if err != nil {
				t.Fatal(err)
			}
			var dataBytes int64
			for _, c := range chunks {
				dataBytes += c.N
				i := tb.Find(c.Off)
				if b := tb.Blocks[i]; c.End() > b.End() {
					t.Errorf("inner chunk %v is split at %d", c, b.End())
				}
			}
			// Merged: about one block per ShardBlockBytes of inner chunks (greedy merging
			// may leave each block up to one inner chunk short), plus the index and, with a
			// wide gap, the gap's block and the new run's.
			want := int(dataBytes/(blocks.ShardBlockBytes-9000)) + 2
			if tc.gaps[20] > 0 {
				want += 2
			}
			if len(tb.Blocks) > want {
				t.Errorf("%d blocks for %d inner chunks (%d bytes): want at most %d, inner chunks are not merged", len(tb.Blocks), len(chunks), dataBytes, want)
			}
			if len(tb.Blocks) < 3 {
				t.Fatalf("%d blocks: the case needs at least two data blocks to test their edges", len(tb.Blocks))
			}
			if tc.gaps[20] > 0 {
				// The chunk after the gap starts a block of its own.
				after := chunks[20]
				if tc.sizes[20] < 0 {
					t.Fatal("chunk 20 must be stored")
				}
				if b := tb.Blocks[tb.Find(after.Off)]; b.Off != after.Off {
					t.Errorf("inner chunk %v after a gap of %d bytes is in block %v, want a block starting at it", after, tc.gaps[20], b)
				}
			}
			for i, b := range tb.Blocks {
				if b.N > blocks.ShardBlockBytes {
					t.Errorf("block %d %v exceeds %d bytes", i, b, blocks.ShardBlockBytes)
				}
			}
			// Every inner chunk's pages: one block serves them all.
			for _, c := range chunks {
				lo := c.Off / blocks.PageSize * blocks.PageSize
				hi := min(size, (c.End()+blocks.PageSize-1)/blocks.PageSize*blocks.PageSize)
				first, stop := tb.Segment(lo, hi)
				if stop != hi {
					t.Errorf("the pages [%d, %d) of inner chunk %v need more than block %d (it serves up to %d)", lo, hi, c, first, stop)
				}
				if f := tb.FetchRange(first); lo < f.Off || hi > f.End() {
					t.Errorf("pages [%d, %d) of inner chunk %v served by block %d whose fetch range is %v", lo, hi, c, first, f)
				}
			}
			// Each edge between two blocks that is not page-aligned: a read from the start
			// of the page holding the edge to past it is the next block's (its fetch range
			// begins at that page), not a read of two blocks.
			edges := 0
			for k := 0; k+1 < len(tb.Blocks); k++ {
				edge := tb.Blocks[k].End()
				if edge%blocks.PageSize == 0 {
					continue
				}
				edges++
				p := edge / blocks.PageSize * blocks.PageSize
				end := min(size, edge+100)
				i, stop := tb.Segment(p, end)
				if i != k+1 || stop != end {
					t.Errorf("read [%d, %d) across the edge %d of blocks %d and %d: Segment = block %d up to %d, want block %d up to %d", p, end, edge, k, k+1, i, stop, k+1, end)
				}
				// A read that ends before the edge stays in block k.
				if p < edge-1 && tb.Find(p) == k {
					if i, stop := tb.Segment(p, edge-1); i != k || stop != edge-1 {
						t.Errorf("read [%d, %d) before the edge %d: Segment = block %d up to %d, want block %d", p, edge-1, edge, i, stop, k)
					}
				}
			}
			if edges == 0 {
				t.Fatalf("no unaligned block edge: the case tests no continuation")
			}
		})
	}
}
