// Package storetest holds the test fixtures shared by the packages of the
// file system core and its adapter: a directory served as a static origin,
// a generated sharded store, and a store of arrays for readahead tests. It
// is imported by tests only.
package storetest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/vfs/blocks"
	"github.com/zarrfs/zarrfs/vfs/store"
	"github.com/zarrfs/zarrfs/zarr"
)

// DirOrigin serves a directory the way a static HTTP server would: files by
// key, and optionally a directory index that may hide dotfiles like nginx's.
type DirOrigin struct {
	Root        string
	Listing     bool
	HideDots    bool
	Status      map[string]error // key -> error to answer instead
	Gets, Lists atomic.Int64
}

func (o *DirOrigin) Get(ctx context.Context, key string, max int64) ([]byte, remote.Object, error) {
	o.Gets.Add(1)
	if err, ok := o.Status[key]; ok {
		return nil, remote.Object{}, err
	}
	data, err := os.ReadFile(filepath.Join(o.Root, filepath.FromSlash(key)))
	if err != nil {
		// Missing, or a directory read as a file: a server answers 404.
		return nil, remote.Object{}, fmt.Errorf("GET %s: %w", key, remote.ErrNotFound)
	}
	return data, remote.Object{Size: int64(len(data))}, nil
}

func (o *DirOrigin) Manifest(ctx context.Context) (*remote.Manifest, error) {
	return nil, fmt.Errorf("GET .zarrfs/manifest: %w", remote.ErrNoManifest)
}

func (o *DirOrigin) RefreshManifest(ctx context.Context, prev *remote.Manifest, prefix string) (*remote.Manifest, bool, error) {
	return nil, false, fmt.Errorf("GET .zarrfs/manifest: %w", remote.ErrNoManifest)
}

func (o *DirOrigin) List(ctx context.Context, dir string) ([]remote.DirEntry, error) {
	o.Lists.Add(1)
	if !o.Listing {
		return nil, fmt.Errorf("list %s: %w", dir, remote.ErrNoListing)
	}
	entries, err := os.ReadDir(filepath.Join(o.Root, filepath.FromSlash(dir)))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, remote.ErrNotFound)
	}
	var out []remote.DirEntry
	for _, e := range entries {
		if o.HideDots && strings.HasPrefix(e.Name(), ".") {
			continue
		}
		out = append(out, remote.DirEntry{Name: e.Name(), IsDir: e.IsDir()})
	}
	return out, nil
}

// PlanStore is a group with x (slabs×3×32×32 uint8, one chunk per slab), y
// (slabs int64, chunk 10 rows) and z (2-d, 4 chunks per slab), v2 "."
// keys, and a small coordinate array.
func PlanStore(t *testing.T, slabs int64) *store.Store {
	t.Helper()
	tree := zarr.NewTree()
	add := func(p string, shape, chunks []int64, dtype string) {
		arr := &zarr.Array{ZarrFormat: 2, Shape: shape, ChunkShape: chunks, DataType: dtype, KeyEncoding: zarr.KeyEncoding{Separator: "."}}
		if _, err := tree.Add(p, zarr.KindArray, arr, ".zarray"); err != nil {
			t.Fatal(err)
		}
	}
	add("g/x", []int64{slabs * 10, 3, 32, 32}, []int64{10, 3, 32, 32}, "|u1")
	add("g/y", []int64{slabs * 10}, []int64{10}, "<i8")
	add("z", []int64{slabs * 10, 40}, []int64{10, 10}, "<f4")
	add("g/lat", []int64{64}, []int64{64}, "<f4")
	return &store.Store{Tree: tree, Format: 2}
}

// The v3 store GenShardStore writes: one int32 array
// "big" of shape [2048, 1024] in shards of [1024, 1024] holding inner
// chunks of [256, 256] (256 KiB each, 16 per shard, written in a shuffled
// order, one left empty), an index with crc32c at the end; and a plain
// array "plain" whose single chunk is blocks.BigObjectBytes+3 bytes.
const (
	ShardInner      = 256
	ShardSide       = 1024
	InnerChunkBytes = ShardInner * ShardInner * 4
)

func ShardArrayMeta() map[string]any {
	return ShardedArray{Shape: []int{2 * ShardSide, ShardSide}, Shard: []int{ShardSide, ShardSide},
		Inner: []int{ShardInner, ShardInner}, DataType: "int32", Fill: 0}.Meta()
}

// ShardedArray describes the zarr.json of a v3 array of sharding_indexed
// shards (index at the end, little-endian with crc32c), for tests that
// write or parse one.
type ShardedArray struct {
	Shape, Shard, Inner []int
	DataType            string
	Fill                any
	Attributes          map[string]any // nil: none
	InnerCodecs         []any          // nil: bytes, little-endian
}

// Meta is the array's zarr.json document.
func (a ShardedArray) Meta() map[string]any {
	little := map[string]any{"name": "bytes", "configuration": map[string]any{"endian": "little"}}
	inner, attrs := a.InnerCodecs, a.Attributes
	if inner == nil {
		inner = []any{little}
	}
	if attrs == nil {
		attrs = map[string]any{}
	}
	return map[string]any{
		"zarr_format": 3, "node_type": "array", "shape": a.Shape, "data_type": a.DataType,
		"chunk_grid":         map[string]any{"name": "regular", "configuration": map[string]any{"chunk_shape": a.Shard}},
		"chunk_key_encoding": map[string]any{"name": "default", "configuration": map[string]any{"separator": "/"}},
		"fill_value":         a.Fill, "attributes": attrs,
		"codecs": []any{map[string]any{"name": "sharding_indexed", "configuration": map[string]any{
			"chunk_shape":    a.Inner,
			"codecs":         inner,
			"index_codecs":   []any{little, map[string]any{"name": "crc32c"}},
			"index_location": "end",
		}}},
	}
}

func PlainArrayMeta() map[string]any {
	n := blocks.BigObjectBytes + 3
	return map[string]any{
		"zarr_format": 3, "node_type": "array", "shape": []int{n}, "data_type": "uint8",
		"chunk_grid":         map[string]any{"name": "regular", "configuration": map[string]any{"chunk_shape": []int{n}}},
		"chunk_key_encoding": map[string]any{"name": "default", "configuration": map[string]any{"separator": "/"}},
		"fill_value":         0, "attributes": map[string]any{},
		"codecs": []any{map[string]any{"name": "bytes"}},
	}
}

func WriteJSON(t *testing.T, p string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// EncodeShard is a v3 shard of len(order) inner chunks stored in that order
// (rng.Perm gives a shuffled layout), followed by its index of (offset,
// length) pairs and the index's crc32c, as the sharding codec writes it with
// index_location "end". chunk(k) gives inner chunk k's bytes, or nil to leave
// it unstored (it reads as fill_value); it is called in order, so a random
// generator it draws from is drawn in the same sequence as the layout.
func EncodeShard(order []int, chunk func(k int) []byte) []byte {
	var data []byte
	index := make([]byte, len(order)*16)
	for _, k := range order {
		c := chunk(k)
		if c == nil {
			binary.LittleEndian.PutUint64(index[16*k:], math.MaxUint64)
			binary.LittleEndian.PutUint64(index[16*k+8:], math.MaxUint64)
			continue
		}
		binary.LittleEndian.PutUint64(index[16*k:], uint64(len(data)))
		binary.LittleEndian.PutUint64(index[16*k+8:], uint64(len(c)))
		data = append(data, c...)
	}
	index = binary.LittleEndian.AppendUint32(index, crc32.Checksum(index, crc32.MakeTable(crc32.Castagnoli)))
	return append(data, index...)
}

// GenShardStore writes the store of shardStore under a new directory.
func GenShardStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	WriteJSON(t, filepath.Join(dir, "zarr.json"), map[string]any{
		"zarr_format": 3, "node_type": "group", "attributes": map[string]any{},
		"consolidated_metadata": map[string]any{"kind": "inline", "must_understand": false,
			"metadata": map[string]any{"big": ShardArrayMeta(), "plain": PlainArrayMeta()}},
	})
	WriteJSON(t, filepath.Join(dir, "big", "zarr.json"), ShardArrayMeta())
	WriteJSON(t, filepath.Join(dir, "plain", "zarr.json"), PlainArrayMeta())
	rng := rand.New(rand.NewPCG(1, 2))
	const perShard = (ShardSide / ShardInner) * (ShardSide / ShardInner)
	for s := range 2 {
		shard := EncodeShard(rng.Perm(perShard), func(i int) []byte {
			if s == 1 && i == 5 {
				return nil
			}
			chunk := make([]byte, InnerChunkBytes)
			for k := range chunk {
				chunk[k] = byte(rng.UintN(256))
			}
			return chunk
		})
		p := filepath.Join(dir, "big", "c", fmt.Sprint(s), "0")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, shard, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	plain := make([]byte, blocks.BigObjectBytes+3)
	for k := range plain {
		plain[k] = byte(k * 7)
	}
	if err := os.MkdirAll(filepath.Join(dir, "plain", "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plain", "c", "0"), plain, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// InnerChunkRanges reads a shard's index from disk.
func InnerChunkRanges(t *testing.T, data []byte) []zarr.ChunkRange {
	t.Helper()
	_, arr, err := zarr.ParseV3Node(MustJSON(t, ShardArrayMeta()))
	if err != nil {
		t.Fatal(err)
	}
	n := arr.Shard.IndexSize(arr)
	ranges, err := zarr.ParseShardIndex(data[int64(len(data))-n:], arr)
	if err != nil {
		t.Fatal(err)
	}
	return ranges
}

// MustJSON marshals v.
func MustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ZarrayDoc is the .zarray of a v2 uint8 array of n elements, one per chunk.
func ZarrayDoc(n int) string {
	return fmt.Sprintf(`{"zarr_format": 2, "shape": [%d], "chunks": [1], "dtype": "|u1", "compressor": null, "fill_value": 0, "order": "C", "filters": null}`, n)
}

// WriteReplacing writes data to a new file renamed onto p, so that it gets
// a new version (inode and mtime) like a real rewrite.
func WriteReplacing(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}
