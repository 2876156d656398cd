package zarr

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// checkClassified fails unless err wraps one of the sentinel errors callers branch on.
func checkClassified(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnsupported) {
		t.Fatalf("error %q wraps neither ErrInvalid nor ErrUnsupported", err)
	}
}

// checkArrayProperties checks what every successfully parsed array promises:
// a sane grid and chunk keys that resolve back to their coordinates.
func checkArrayProperties(t *testing.T, a *Array) {
	t.Helper()
	if a == nil {
		t.Fatal("nil array without error")
	}
	if len(a.Shape) != len(a.ChunkShape) || len(a.Shape) > MaxDims {
		t.Fatalf("shape %v and chunk shape %v", a.Shape, a.ChunkShape)
	}
	grid := a.GridShape()
	for i, g := range grid {
		if g < 0 || a.ChunkShape[i] <= 0 || a.Shape[i] < 0 {
			t.Fatalf("shape %v chunks %v grid %v", a.Shape, a.ChunkShape, grid)
		}
	}
	n := a.NumChunks()
	if n < 0 {
		t.Fatalf("NumChunks = %d for grid %v", n, grid)
	}
	if n == 0 {
		for _, comps := range [][]string{{"c"}, {"0"}, {"c", "0"}} {
			if kind, _ := a.Resolve(comps); kind != EntryNone {
				t.Fatalf("empty grid %v: Resolve(%q) = %v", grid, comps, kind)
			}
		}
	} else {
		first := make([]int64, len(grid))
		last := make([]int64, len(grid))
		mid := make([]int64, len(grid))
		for i, g := range grid {
			last[i], mid[i] = g-1, g/2
		}
		for _, coords := range [][]int64{first, last, mid} {
			keys := a.ChunkKeys(coords)
			if len(keys) == 0 || keys[0] != a.ChunkKey(coords) {
				t.Fatalf("ChunkKeys(%v) = %q, ChunkKey %q", coords, keys, a.ChunkKey(coords))
			}
			for _, key := range keys {
				comps := strings.Split(key, "/")
				kind, got := a.Resolve(comps)
				if kind != EntryChunk || !reflect.DeepEqual(got, coords) {
					t.Fatalf("Resolve(%q) = %v %v, want chunk %v", key, kind, got, coords)
				}
				for k := 1; k < len(comps); k++ {
					if kind, _ := a.Resolve(comps[:k]); kind != EntryDir {
						t.Fatalf("Resolve(%q) = %v, want dir (prefix of %q)", comps[:k], kind, key)
					}
				}
			}
			for d := range grid {
				out := slices.Clone(coords)
				out[d] = grid[d]
				for _, key := range a.ChunkKeys(out) {
					if kind, _ := a.Resolve(strings.Split(key, "/")); kind != EntryNone {
						t.Fatalf("out-of-grid key %q resolves to %v", key, kind)
					}
				}
			}
		}
	}
	if s := a.Shard; s != nil && s.IndexUnsupported == "" {
		cps := s.ChunksPerShard(a)
		count, ok := product(cps)
		for _, c := range cps {
			if c < 1 {
				t.Fatalf("ChunksPerShard = %v", cps)
			}
		}
		want := count * 16
		if s.IndexCRC32C {
			want += 4
		}
		if !ok || s.IndexSize(a) != want {
			t.Fatalf("IndexSize = %d for chunks per shard %v (crc %v)", s.IndexSize(a), cps, s.IndexCRC32C)
		}
	}
}

// checkTreeProperties checks the tree's structure and (some of) its arrays.
func checkTreeProperties(t *testing.T, tr *Tree) {
	t.Helper()
	arrays := 0
	err := tr.Walk(func(n *Node) error {
		if tr.Lookup(n.Path) != n {
			t.Fatalf("Lookup(%q) does not find the node", n.Path)
		}
		if i := strings.LastIndexByte(n.Path, '/'); n.Name != n.Path[i+1:] {
			t.Fatalf("node %q named %q", n.Path, n.Name)
		}
		if !slices.IsSorted(n.MetaFiles) {
			t.Fatalf("node %q MetaFiles %q not sorted", n.Path, n.MetaFiles)
		}
		for _, m := range n.MetaFiles {
			if !IsMetadataName(m) {
				t.Fatalf("node %q MetaFiles %q", n.Path, n.MetaFiles)
			}
		}
		for name, c := range n.Children {
			if c.Name != name || c.Path != joinPath(n.Path, name) {
				t.Fatalf("child %q of %q has path %q", name, n.Path, c.Path)
			}
		}
		switch n.Kind {
		case KindArray:
			if len(n.Children) != 0 || n.Implicit {
				t.Fatalf("array %q has children or is implicit", n.Path)
			}
			if arrays++; arrays <= 20 {
				checkArrayProperties(t, n.Array)
			}
		case KindGroup:
			if n.Array != nil {
				t.Fatalf("group %q has an Array", n.Path)
			}
		default:
			t.Fatalf("node %q has kind %v", n.Path, n.Kind)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func FuzzParseZArray(f *testing.F) {
	for _, doc := range []string{
		`{"zarr_format":2,"shape":[10,3],"chunks":[4,3],"dtype":"<i2","order":"F","dimension_separator":"."}`,
		`{"zarr_format":2,"shape":[5,5,5],"chunks":[2,2,2],"dtype":"<i2","dimension_separator":"/"}`,
		`{"zarr_format":2,"shape":[7,1],"chunks":[3,5],"dtype":[["a","<i4"],["b","|S3",[2]]]}`,
		`{"zarr_format":2,"shape":[],"chunks":[],"dtype":"<f8"}`,
		`{"zarr_format":2,"shape":[0,4],"chunks":[1,1],"dtype":"|O"}`,
		`{"zarr_format":2,"shape":[9223372036854775807],"chunks":[2],"dtype":"<i8"}`,
	} {
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseZArray(data)
		if err != nil {
			checkClassified(t, err)
			return
		}
		if a.ZarrFormat != 2 || a.Shard != nil || a.KeyEncoding.Prefix != "" {
			t.Fatalf("v2 array %+v", a)
		}
		checkArrayProperties(t, a)
	})
}

func FuzzParseV3Node(f *testing.F) {
	for _, doc := range []string{
		v3Array(nil),
		v3Array(map[string]string{"codecs": shardingCodec}),
		v3Array(map[string]string{"chunk_key_encoding": `{"name":"default","configuration":{"separator":"."}}`}),
		v3Array(map[string]string{"chunk_key_encoding": `"v2"`, "shape": `[]`, "chunk_grid": `{"name":"regular","configuration":{"chunk_shape":[]}}`}),
		v3Array(map[string]string{"codecs": `[{"name":"transpose","configuration":{"order":[1,0]}},{"name":"sharding_indexed","configuration":{"chunk_shape":[5,2],"codecs":["bytes"],"index_codecs":["bytes","crc32c"],"index_location":"start"}}]`}),
		`{"zarr_format":3,"node_type":"group","attributes":{}}`,
	} {
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		kind, a, err := ParseV3Node(data)
		if err != nil {
			checkClassified(t, err)
			return
		}
		switch kind {
		case KindGroup:
			if a != nil {
				t.Fatal("group with an array")
			}
		case KindArray:
			if a.ZarrFormat != 3 {
				t.Fatalf("v3 array %+v", a)
			}
			checkArrayProperties(t, a)
		default:
			t.Fatalf("kind %v", kind)
		}
	})
}

func FuzzTreeFromZMetadata(f *testing.F) {
	f.Add([]byte(`{"zarr_consolidated_format":1,"metadata":{".zgroup":{"zarr_format":2},"a/.zarray":` + zarray + `,"a/.zattrs":{},"b/c/.zgroup":{"zarr_format":2}}}`))
	f.Add([]byte(`{"zarr_consolidated_format":1,"metadata":{"x/.zarray":"{\"zarr_format\":2,\"shape\":[3],\"chunks\":[1],\"dtype\":\"<i2\"}"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := TreeFromZMetadata(data)
		if err != nil {
			checkClassified(t, err)
			return
		}
		if !tr.Root().HasMetaFile(ZMetadata) {
			t.Fatal("root lacks .zmetadata")
		}
		checkTreeProperties(t, tr)
	})
}

func FuzzTreeFromV3Consolidated(f *testing.F) {
	arr := v3Array(nil)
	f.Add([]byte(v3Group(inline(`"a":`+arr, `"g":`+v3Group(inline(`"b":`+arr)), `"g/b":`+arr, `"x/y/z":`+arr))))
	f.Add([]byte(v3Group("null")))
	f.Add([]byte(arr))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, ok, err := TreeFromV3Consolidated(data)
		if err != nil {
			checkClassified(t, err)
			if ok || tr != nil {
				t.Fatal("error with a tree")
			}
			return
		}
		if !ok {
			if tr != nil {
				t.Fatal("tree without ok")
			}
			return
		}
		checkTreeProperties(t, tr)
	})
}

// fuzzShardArray is the array a FuzzParseShardIndex input is read with: the
// sharded array its document describes, or a fixed one chosen by its first byte.
func fuzzShardArray(meta []byte) *Array {
	if _, a, err := ParseV3Node(meta); err == nil && a != nil && a.Shard != nil && a.Shard.IndexUnsupported == "" {
		return a
	}
	var flags byte
	if len(meta) > 0 {
		flags = meta[0]
	}
	return shardedArray(ShardInfo{IndexCRC32C: flags&1 != 0, IndexBigEndian: flags&2 != 0, IndexAtStart: flags&4 != 0})
}

func FuzzParseShardIndex(f *testing.F) {
	a := shardedArray(ShardInfo{IndexCRC32C: true})
	ranges := []ChunkRange{{Offset: 0, Length: 10}, {Empty: true}, {Offset: 10, Length: 0}, {Offset: 30, Length: 5}, {Offset: 10, Length: 20}, {Empty: true}}
	f.Add([]byte{1}, encodeShardIndex(ranges, a.Shard))
	f.Add([]byte{2}, encodeShardIndex(ranges, &ShardInfo{IndexBigEndian: true}))
	f.Add([]byte(v3Array(map[string]string{"codecs": shardingCodec})), encodeShardIndex(ranges[:2], a.Shard))
	f.Fuzz(func(t *testing.T, meta, index []byte) {
		a := fuzzShardArray(meta)
		ranges, err := ParseShardIndex(index, a)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrChecksum) {
				t.Fatalf("error %q wraps neither ErrInvalid nor ErrChecksum", err)
			}
			return
		}
		if count, _ := product(a.Shard.ChunksPerShard(a)); int64(len(ranges)) != count {
			t.Fatalf("%d ranges for %d inner chunks", len(ranges), count)
		}
		for _, r := range ranges {
			if !r.Empty && (r.Offset < 0 || r.Length < 0 || r.Offset+r.Length < 0) {
				t.Fatalf("range %+v", r)
			}
		}
		if again := encodeShardIndex(ranges, a.Shard); !reflect.DeepEqual(again, index) {
			t.Fatalf("re-encoding the parsed index gives %x, want %x", again, index)
		}
		_ = ValidateShardRanges(ranges, a, int64(len(index))+100)
	})
}
