package vfs

import (
	"encoding/binary"
	"hash/crc32"
	"log/slog"
	"slices"
	"testing"

	"github.com/zarrfs/zarrfs/internal/storetest"
	"github.com/zarrfs/zarrfs/vfs/blocks"
	"github.com/zarrfs/zarrfs/zarr"
)

func TestShardTableRejectsBadIndex(t *testing.T) {
	_, arr, err := zarr.ParseV3Node(storetest.MustJSON(t, storetest.ShardArrayMeta()))
	if err != nil {
		t.Fatal(err)
	}
	idxLen := arr.Shard.IndexSize(arr)
	good := make([]byte, idxLen-4)
	for i := range 16 {
		binary.LittleEndian.PutUint64(good[16*i:], uint64(i*storetest.InnerChunkBytes))
		binary.LittleEndian.PutUint64(good[16*i+8:], storetest.InnerChunkBytes)
	}
	withCRC := func(b []byte) []byte {
		return binary.LittleEndian.AppendUint32(slices.Clone(b), crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
	}
	size := int64(16*storetest.InnerChunkBytes) + idxLen
	beyond := slices.Clone(good)
	binary.LittleEndian.PutUint64(beyond[16*3:], uint64(size))
	flipped := withCRC(good)
	flipped[7] ^= 1
	for _, tc := range []struct {
		name  string
		index []byte
		ok    bool
	}{
		{"good", withCRC(good), true},
		{"checksum mismatch", flipped, false},
		{"chunk beyond the data area", withCRC(beyond), false},
		{"short", withCRC(good)[1:], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := blocks.ShardTable(arr, `"v"`, size, tc.index)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			r := &rangedObjects{log: slog.New(slog.DiscardHandler)}
			tb := r.shardOrFixed(arr, "k", `"v"`, size, tc.index)
			if tb.Blocks[len(tb.Blocks)-1].End() != size || (r.stats.badIndex.Load() == 1) == tc.ok {
				t.Errorf("fallback table: ends at %d (want %d), bad indexes %d", tb.Blocks[len(tb.Blocks)-1].End(), size, r.stats.badIndex.Load())
			}
		})
	}
}
