package zarr

import (
	"slices"
	"strings"
	"testing"
)

// fuzzArray builds the array a FuzzResolve input describes: dims 0..4
// dimensions from the low bits of enc, a key encoding from its high bits,
// and shape and chunk sizes from sizes (two bytes a dimension, kept small
// enough that grids of tens of chunks are common).
func fuzzArray(enc byte, sizes []byte) *Array {
	dims := int(enc % 5)
	a := &Array{Shape: make([]int64, dims), ChunkShape: make([]int64, dims)}
	for i := 0; i < dims; i++ {
		var s, c byte = 7, 3
		if 2*i+1 < len(sizes) {
			s, c = sizes[2*i], sizes[2*i+1]
		}
		a.Shape[i], a.ChunkShape[i] = int64(s), int64(c%16)+1
	}
	switch (enc / 5) % 5 {
	case 0:
		a.ZarrFormat, a.KeyEncoding = 2, KeyEncoding{Separator: "."}
	case 1:
		a.ZarrFormat, a.KeyEncoding = 2, KeyEncoding{Separator: "/"}
	case 2:
		a.ZarrFormat, a.KeyEncoding = 2, KeyEncoding{Separator: ".", SeparatorUnset: true}
	case 3:
		a.ZarrFormat, a.KeyEncoding = 3, KeyEncoding{Prefix: "c", Separator: "/"}
	default:
		a.ZarrFormat, a.KeyEncoding = 3, KeyEncoding{Prefix: "c", Separator: "."}
	}
	return a
}

// FuzzResolve: any name below an array's directory is either no chunk,
// a directory on the way to chunks, or a chunk whose coordinates lie inside
// the grid and whose key, spelt back by ChunkKeys, is the name itself; and
// every chunk key resolves back to its coordinates.
func FuzzResolve(f *testing.F) {
	f.Add(byte(2), []byte{10, 3, 10, 4}, "1.2", []byte{1, 2})
	f.Add(byte(7), []byte{10, 3, 10, 4}, "1/2", []byte{3, 2})
	f.Add(byte(17), []byte{10, 3, 10, 4}, "c/1/2", []byte{9, 9})
	f.Add(byte(22), []byte{10, 3, 10, 4}, "c.1.2", []byte{0, 0})
	f.Add(byte(12), []byte{10, 3, 10, 4}, "3/0", []byte{3, 0})
	f.Add(byte(15), []byte{}, "c", []byte{})
	f.Add(byte(0), []byte{}, "0", []byte{})
	f.Add(byte(1), []byte{0, 1}, "0", []byte{0})
	f.Add(byte(6), []byte{200, 0}, "01", []byte{1})
	f.Add(byte(16), []byte{5, 1}, "c/-1", []byte{1})
	f.Add(byte(3), []byte{9, 2, 9, 2, 9, 2}, "4.4.9223372036854775807", []byte{4, 4, 4})
	f.Fuzz(func(t *testing.T, enc byte, sizes []byte, name string, pick []byte) {
		a := fuzzArray(enc, sizes)
		grid := a.GridShape()
		comps := strings.Split(name, "/")
		kind, coords := a.Resolve(comps)
		switch kind {
		case EntryChunk:
			if len(coords) != len(grid) {
				t.Fatalf("Resolve(%q) = %v for a %d-d grid", name, coords, len(grid))
			}
			for i, c := range coords {
				if c < 0 || c >= grid[i] {
					t.Fatalf("Resolve(%q) = %v outside grid %v", name, coords, grid)
				}
			}
			if !slices.Contains(a.ChunkKeys(coords), name) {
				t.Fatalf("Resolve(%q) = %v, but its keys are %q", name, coords, a.ChunkKeys(coords))
			}
			for _, c := range comps {
				if len(c) > MaxNameBytes {
					t.Fatalf("chunk name component of %d bytes", len(c))
				}
			}
		case EntryDir:
			// A directory is a proper prefix of some chunk key's components.
			depth := 0
			for _, key := range a.ChunkKeys(make([]int64, len(grid))) {
				depth = max(depth, strings.Count(key, "/")+1)
			}
			if len(comps) >= depth {
				t.Fatalf("Resolve(%q) is a directory, but chunk keys are %d components deep", name, depth)
			}
		case EntryNone:
		default:
			t.Fatalf("Resolve(%q) = kind %v", name, kind)
		}

		// Coordinates picked inside the grid round-trip through every key.
		if a.NumChunks() == 0 {
			return
		}
		want := make([]int64, len(grid))
		for i := range want {
			if i < len(pick) {
				want[i] = int64(pick[i]) % grid[i]
			}
		}
		keys := a.ChunkKeys(want)
		if len(keys) == 0 || keys[0] != a.ChunkKey(want) {
			t.Fatalf("ChunkKeys(%v) = %q, ChunkKey %q", want, keys, a.ChunkKey(want))
		}
		for _, key := range keys {
			kind, got := a.Resolve(strings.Split(key, "/"))
			if kind != EntryChunk || !slices.Equal(got, want) {
				t.Fatalf("key %q of %v resolves to %v %v", key, want, kind, got)
			}
		}
	})
}
