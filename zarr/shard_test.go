package zarr

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"reflect"
	"testing"
)

// encodeShardIndex is the writer's side of ParseShardIndex, for tests.
func encodeShardIndex(ranges []ChunkRange, s *ShardInfo) []byte {
	var order binary.AppendByteOrder = binary.LittleEndian
	if s.IndexBigEndian {
		order = binary.BigEndian
	}
	out := make([]byte, 0, len(ranges)*16+4)
	for _, r := range ranges {
		off, n := uint64(r.Offset), uint64(r.Length)
		if r.Empty {
			off, n = math.MaxUint64, math.MaxUint64
		}
		out = order.AppendUint64(out, off)
		out = order.AppendUint64(out, n)
	}
	if s.IndexCRC32C {
		out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, crc32.MakeTable(crc32.Castagnoli)))
	}
	return out
}

func shardedArray(s ShardInfo) *Array {
	if s.InnerChunkShape == nil {
		s.InnerChunkShape = []int64{2, 1}
	}
	return &Array{ZarrFormat: 3, Shape: []int64{8, 3}, ChunkShape: []int64{4, 3}, KeyEncoding: KeyEncoding{Prefix: "c", Separator: "/"}, Shard: &s}
}

func TestParseShardIndexRoundTrip(t *testing.T) {
	// 2x3 inner chunks per shard.
	ranges := []ChunkRange{{Offset: 0, Length: 10}, {Empty: true}, {Offset: 10, Length: 0}, {Offset: 30, Length: 5}, {Offset: 10, Length: 20}, {Empty: true}}
	for _, s := range []ShardInfo{
		{IndexCRC32C: true},
		{},
		{IndexBigEndian: true, IndexCRC32C: true},
		{IndexBigEndian: true},
		{IndexAtStart: true, IndexCRC32C: true},
	} {
		a := shardedArray(s)
		index := encodeShardIndex(ranges, a.Shard)
		if want := a.Shard.IndexSize(a); int64(len(index)) != want {
			t.Fatalf("%+v: encoded %d bytes, IndexSize %d", s, len(index), want)
		}
		got, err := ParseShardIndex(index, a)
		if err != nil {
			t.Errorf("%+v: %v", s, err)
			continue
		}
		if !reflect.DeepEqual(got, ranges) {
			t.Errorf("%+v: got %+v, want %+v", s, got, ranges)
		}
	}
}

func TestParseShardIndexErrors(t *testing.T) {
	a := shardedArray(ShardInfo{IndexCRC32C: true})
	good := []ChunkRange{{Offset: 0, Length: 1}, {Offset: 1, Length: 1}, {Offset: 2, Length: 1}, {Offset: 3, Length: 1}, {Offset: 4, Length: 1}, {Offset: 5, Length: 1}}
	withPair := func(i int, off, n uint64) []byte {
		noCRC := shardedArray(ShardInfo{})
		index := encodeShardIndex(good, noCRC.Shard)
		binary.LittleEndian.PutUint64(index[16*i:], off)
		binary.LittleEndian.PutUint64(index[16*i+8:], n)
		return binary.LittleEndian.AppendUint32(index, crc32.Checksum(index, crc32cTable))
	}
	unsupported := shardedArray(ShardInfo{IndexUnsupported: "test"})
	tests := []struct {
		name  string
		index []byte
		a     *Array
		want  error
	}{
		{"half-empty pair", withPair(2, math.MaxUint64, 4), a, ErrInvalid},
		{"offset beyond int64", withPair(0, 1<<63, 4), a, ErrInvalid},
		{"length beyond int64", withPair(0, 0, 1<<63), a, ErrInvalid},
		{"end beyond int64", withPair(0, math.MaxInt64, 1), a, ErrInvalid},
		{"short", encodeShardIndex(good, a.Shard)[:10], a, ErrInvalid},
		{"empty", nil, a, ErrInvalid},
		{"not sharded", nil, &Array{Shape: []int64{1}, ChunkShape: []int64{1}}, ErrInvalid},
		{"nil array", nil, nil, ErrInvalid},
		{"unsupported layout", encodeShardIndex(good, a.Shard), unsupported, ErrUnsupported},
	}
	for _, tt := range tests {
		if _, err := ParseShardIndex(tt.index, tt.a); !errors.Is(err, tt.want) {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.want)
		}
	}
	if r, err := ParseShardIndex(withPair(1, math.MaxInt64, 0), a); err != nil || r[1].Offset != math.MaxInt64 {
		t.Errorf("largest valid offset: %v %v", r, err)
	}
	index := encodeShardIndex(good, a.Shard)
	index[len(index)-1] ^= 1
	if _, err := ParseShardIndex(index, a); !errors.Is(err, ErrChecksum) {
		t.Errorf("bad checksum: err %v, want ErrChecksum", err)
	}
}

func TestValidateShardRanges(t *testing.T) {
	end := shardedArray(ShardInfo{IndexCRC32C: true}) // 6 inner chunks: index of 100 bytes
	start := shardedArray(ShardInfo{IndexAtStart: true})
	tests := []struct {
		name   string
		a      *Array
		size   int64
		ranges []ChunkRange
		ok     bool
	}{
		{"end: fits", end, 150, []ChunkRange{{Offset: 0, Length: 50}, {Empty: true}}, true},
		{"end: overlaps index", end, 150, []ChunkRange{{Offset: 0, Length: 51}}, false},
		{"end: beyond file", end, 150, []ChunkRange{{Offset: 200, Length: 1}}, false},
		{"end: negative offset", end, 150, []ChunkRange{{Offset: -1, Length: 1}}, false},
		{"end: negative length", end, 150, []ChunkRange{{Offset: 1, Length: -1}}, false},
		{"end: only an index", end, 100, []ChunkRange{{Empty: true}}, true},
		{"end: file smaller than index", end, 99, nil, false},
		{"start: fits", start, 100, []ChunkRange{{Offset: 96, Length: 4}}, true},
		{"start: inside index", start, 200, []ChunkRange{{Offset: 95, Length: 4}}, false},
		{"start: beyond file", start, 100, []ChunkRange{{Offset: 96, Length: 5}}, false},
		{"not sharded", &Array{}, 100, nil, false},
	}
	for _, tt := range tests {
		err := ValidateShardRanges(tt.ranges, tt.a, tt.size)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
	if got := end.Shard.IndexOffset(end, 150); got != 50 {
		t.Errorf("IndexOffset at end = %d, want 50", got)
	}
	if got := start.Shard.IndexOffset(start, 150); got != 0 {
		t.Errorf("IndexOffset at start = %d, want 0", got)
	}
}
