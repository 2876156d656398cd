package zarr

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
)

// ShardInfo describes a v3 array whose stored objects are shards of the
// sharding_indexed codec: each holds a grid of inner chunks and an index of
// where each one lies.
type ShardInfo struct {
	InnerChunkShape []int64
	IndexAtStart    bool // index_location "start" (default "end")
	IndexCRC32C     bool // index_codecs contain crc32c
	IndexBigEndian  bool // the index's bytes codec is big-endian (rare; the spec recommends little)
	// IndexUnsupported, when not empty, says why ParseShardIndex cannot read
	// this array's shard index (an unusual index codec, or a codec after
	// sharding_indexed that encodes the whole shard). Such shards can still be
	// served whole; only ranged reads of inner chunks are impossible.
	IndexUnsupported string

	// shardShape is the shard shape as the sharding codec sees it: the array's
	// chunk shape after any transpose codecs before it. Nil means a.ChunkShape.
	shardShape []int64
}

// ChunksPerShard returns the number of inner chunks along each dimension of a shard.
func (s *ShardInfo) ChunksPerShard(a *Array) []int64 {
	shape := s.shardShape
	if shape == nil && a != nil {
		shape = a.ChunkShape
	}
	if len(shape) != len(s.InnerChunkShape) {
		return nil
	}
	cps := make([]int64, len(shape))
	for i, inner := range s.InnerChunkShape {
		if inner > 0 {
			cps[i] = shape[i] / inner
		}
	}
	return cps
}

// IndexSize returns the encoded size of a shard's index in bytes:
// prod(chunks per shard)*16, plus 4 with crc32c. It returns -1 when the size
// is unknown (IndexUnsupported) or overflows, which parsing rules out.
func (s *ShardInfo) IndexSize(a *Array) int64 {
	if s.IndexUnsupported != "" {
		return -1
	}
	n, ok := shardIndexSize(s.ChunksPerShard(a), s.IndexCRC32C)
	if !ok {
		return -1
	}
	return n
}

// IndexOffset returns where the index starts in a shard of shardSize bytes.
func (s *ShardInfo) IndexOffset(a *Array, shardSize int64) int64 {
	if s.IndexAtStart {
		return 0
	}
	return shardSize - s.IndexSize(a)
}

func shardIndexSize(cps []int64, crc bool) (int64, bool) {
	if cps == nil {
		return 0, false
	}
	n, ok := product(cps)
	if !ok {
		return 0, false
	}
	if n, ok = mulInt64(n, 16); !ok {
		return 0, false
	}
	if crc {
		return addInt64(n, 4)
	}
	return n, true
}

// ChunkRange is where one inner chunk lies in its shard.
type ChunkRange struct {
	Offset, Length int64
	Empty          bool // the chunk is not stored: it reads as fill_value
}

var crc32cTable = crc32.MakeTable(crc32.Castagnoli)

// ParseShardIndex parses the index bytes of one shard of a: an (offset,
// nbytes) pair of uint64 per inner chunk in C order, both all-ones for an
// empty chunk, then with crc32c a little-endian Castagnoli checksum of the
// pairs, which is verified (a mismatch wraps ErrChecksum).
func ParseShardIndex(index []byte, a *Array) ([]ChunkRange, error) {
	if a == nil || a.Shard == nil {
		return nil, fmt.Errorf("parse shard index: the array is not sharded: %w", ErrInvalid)
	}
	s := a.Shard
	if s.IndexUnsupported != "" {
		return nil, fmt.Errorf("parse shard index: %s: %w", s.IndexUnsupported, ErrUnsupported)
	}
	size := s.IndexSize(a)
	if size < 0 {
		return nil, fmt.Errorf("parse shard index: index size overflows: %w", ErrInvalid)
	}
	if int64(len(index)) != size {
		return nil, fmt.Errorf("parse shard index: got %d bytes, want %d: %w", len(index), size, ErrInvalid)
	}
	pairs := index
	if s.IndexCRC32C {
		pairs = index[:len(index)-4]
		want := binary.LittleEndian.Uint32(index[len(index)-4:])
		if got := crc32.Checksum(pairs, crc32cTable); got != want {
			return nil, fmt.Errorf("parse shard index: crc32c is %08x, index says %08x: %w", got, want, ErrChecksum)
		}
	}
	var order binary.ByteOrder = binary.LittleEndian
	if s.IndexBigEndian {
		order = binary.BigEndian
	}
	ranges := make([]ChunkRange, len(pairs)/16)
	for i := range ranges {
		off := order.Uint64(pairs[16*i:])
		n := order.Uint64(pairs[16*i+8:])
		if off == math.MaxUint64 && n == math.MaxUint64 {
			ranges[i] = ChunkRange{Empty: true}
			continue
		}
		if off > math.MaxInt64 || n > math.MaxInt64 || off+n > math.MaxInt64 {
			return nil, fmt.Errorf("parse shard index: inner chunk %d has offset %d and length %d, beyond any object size: %w", i, off, n, ErrInvalid)
		}
		ranges[i] = ChunkRange{Offset: int64(off), Length: int64(n)}
	}
	return ranges, nil
}

// ValidateShardRanges checks that every stored inner chunk lies inside a shard
// of shardSize bytes and outside its index.
func ValidateShardRanges(ranges []ChunkRange, a *Array, shardSize int64) error {
	if a == nil || a.Shard == nil {
		return fmt.Errorf("validate shard ranges: the array is not sharded: %w", ErrInvalid)
	}
	indexSize := a.Shard.IndexSize(a)
	if indexSize < 0 || indexSize > shardSize {
		return fmt.Errorf("validate shard ranges: shard of %d bytes cannot hold a %d-byte index: %w", shardSize, indexSize, ErrInvalid)
	}
	lo, hi := int64(0), shardSize-indexSize
	if a.Shard.IndexAtStart {
		lo, hi = indexSize, shardSize
	}
	for i, r := range ranges {
		if r.Empty {
			continue
		}
		if r.Offset < lo || r.Length < 0 || r.Offset > hi || r.Length > hi-r.Offset {
			return fmt.Errorf("validate shard ranges: inner chunk %d at [%d, +%d) lies outside the data area [%d, %d) of the shard: %w",
				i, r.Offset, r.Length, lo, hi, ErrInvalid)
		}
	}
	return nil
}
