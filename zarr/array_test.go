package zarr

import (
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestGridShapeAndNumChunks(t *testing.T) {
	tests := []struct {
		name       string
		shape, ch  []int64
		wantGrid   []int64
		wantChunks int64
	}{
		{"exact", []int64{4, 6}, []int64{2, 3}, []int64{2, 2}, 4},
		{"ragged last chunk", []int64{5, 3}, []int64{2, 2}, []int64{3, 2}, 6},
		{"chunk larger than shape", []int64{3}, []int64{10}, []int64{1}, 1},
		{"empty dimension", []int64{0, 3}, []int64{2, 2}, []int64{0, 2}, 0},
		{"0-d", []int64{}, []int64{}, []int64{}, 1},
		{"huge dimension", []int64{math.MaxInt64}, []int64{1}, []int64{math.MaxInt64}, math.MaxInt64},
		{"huge ragged", []int64{math.MaxInt64}, []int64{2}, []int64{math.MaxInt64/2 + 1}, math.MaxInt64/2 + 1},
		{"count overflows", []int64{math.MaxInt64, 2}, []int64{1, 1}, []int64{math.MaxInt64, 2}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &Array{Shape: tt.shape, ChunkShape: tt.ch, KeyEncoding: KeyEncoding{Separator: "."}}
			if got := a.GridShape(); !reflect.DeepEqual(got, tt.wantGrid) {
				t.Errorf("GridShape = %v, want %v", got, tt.wantGrid)
			}
			if got := a.NumChunks(); got != tt.wantChunks {
				t.Errorf("NumChunks = %d, want %d", got, tt.wantChunks)
			}
		})
	}
}

var (
	encV2Dot      = KeyEncoding{Separator: "."}
	encV2Slash    = KeyEncoding{Separator: "/"}
	encV2Legacy   = KeyEncoding{Separator: ".", SeparatorUnset: true}
	encV3Default  = KeyEncoding{Prefix: "c", Separator: "/"}
	encV3DefDot   = KeyEncoding{Prefix: "c", Separator: "."}
	allEncodings  = []KeyEncoding{encV2Dot, encV2Slash, encV2Legacy, encV3Default, encV3DefDot}
	encodingNames = map[KeyEncoding]string{encV2Dot: "v2 .", encV2Slash: "v2 /", encV2Legacy: "v2 legacy", encV3Default: "v3 default /", encV3DefDot: "v3 default ."}
)

func TestChunkKey(t *testing.T) {
	tests := []struct {
		enc    KeyEncoding
		coords []int64
		want   string
		keys   []string
	}{
		{encV2Dot, []int64{0, 1}, "0.1", []string{"0.1"}},
		{encV2Slash, []int64{0, 1}, "0/1", []string{"0/1"}},
		{encV2Legacy, []int64{0, 1}, "0.1", []string{"0.1", "0/1"}},
		{encV3Default, []int64{0, 1}, "c/0/1", []string{"c/0/1"}},
		{encV3DefDot, []int64{0, 1}, "c.0.1", []string{"c.0.1"}},
		{encV2Dot, []int64{12}, "12", []string{"12"}},
		{encV2Legacy, []int64{12}, "12", []string{"12"}},
		{encV3Default, []int64{12}, "c/12", []string{"c/12"}},
		{encV3DefDot, []int64{12}, "c.12", []string{"c.12"}},
		{encV2Dot, []int64{}, "0", []string{"0"}},
		{encV2Slash, []int64{}, "0", []string{"0"}},
		{encV2Legacy, []int64{}, "0", []string{"0"}},
		{encV3Default, []int64{}, "c", []string{"c"}},
		{encV3DefDot, []int64{}, "c", []string{"c"}},
	}
	for _, tt := range tests {
		shape := make([]int64, len(tt.coords))
		chunks := make([]int64, len(tt.coords))
		for i := range shape {
			shape[i], chunks[i] = 100, 1
		}
		a := &Array{Shape: shape, ChunkShape: chunks, KeyEncoding: tt.enc}
		if got := a.ChunkKey(tt.coords); got != tt.want {
			t.Errorf("%s: ChunkKey(%v) = %q, want %q", encodingNames[tt.enc], tt.coords, got, tt.want)
		}
		if got := a.ChunkKeys(tt.coords); !reflect.DeepEqual(got, tt.keys) {
			t.Errorf("%s: ChunkKeys(%v) = %q, want %q", encodingNames[tt.enc], tt.coords, got, tt.keys)
		}
		if got := a.ChunkKey(append(tt.coords, 0)); got != "" {
			t.Errorf("%s: ChunkKey with too many coords = %q, want \"\"", encodingNames[tt.enc], got)
		}
	}
}

func TestResolve(t *testing.T) {
	// A 3x2 grid: shape [5, 4] in chunks of [2, 2].
	arr2d := func(enc KeyEncoding) *Array {
		return &Array{Shape: []int64{5, 4}, ChunkShape: []int64{2, 2}, KeyEncoding: enc}
	}
	arr0d := func(enc KeyEncoding) *Array { return &Array{Shape: []int64{}, ChunkShape: []int64{}, KeyEncoding: enc} }
	arr3d := func(enc KeyEncoding) *Array {
		return &Array{Shape: []int64{2, 2, 2}, ChunkShape: []int64{1, 1, 1}, KeyEncoding: enc}
	}
	arrEmpty := func(enc KeyEncoding) *Array {
		return &Array{Shape: []int64{0, 4}, ChunkShape: []int64{2, 2}, KeyEncoding: enc}
	}
	type tc struct {
		path   string
		want   EntryKind
		coords []int64
	}
	tests := []struct {
		name  string
		a     *Array
		cases []tc
	}{
		{"v2 . 2-d", arr2d(encV2Dot), []tc{
			{"0.0", EntryChunk, []int64{0, 0}}, {"2.1", EntryChunk, []int64{2, 1}},
			{"3.0", EntryNone, nil}, {"0.2", EntryNone, nil}, {"01.0", EntryNone, nil}, {"-1.0", EntryNone, nil},
			{"+1.0", EntryNone, nil}, {"0.0.0", EntryNone, nil}, {"0", EntryNone, nil}, {"0/0", EntryNone, nil},
			{"c", EntryNone, nil}, {"c/0/0", EntryNone, nil}, {"0.", EntryNone, nil}, {".0", EntryNone, nil},
			{"0..0", EntryNone, nil}, {"", EntryNone, nil}, {".zarray", EntryNone, nil}, {"0.0 ", EntryNone, nil},
		}},
		{"v2 / 2-d", arr2d(encV2Slash), []tc{
			{"0", EntryDir, nil}, {"2", EntryDir, nil}, {"0/1", EntryChunk, []int64{0, 1}}, {"2/1", EntryChunk, []int64{2, 1}},
			{"3", EntryNone, nil}, {"0/2", EntryNone, nil}, {"0.0", EntryNone, nil}, {"0/0/0", EntryNone, nil},
			{"00/0", EntryNone, nil}, {"0//0", EntryNone, nil}, {"c", EntryNone, nil}, {"0/", EntryNone, nil},
		}},
		{"v2 legacy 2-d", arr2d(encV2Legacy), []tc{
			{"0.1", EntryChunk, []int64{0, 1}}, {"0/1", EntryChunk, []int64{0, 1}}, {"0", EntryDir, nil},
			{"3.0", EntryNone, nil}, {"3/0", EntryNone, nil}, {"3", EntryNone, nil}, {"0.0.0", EntryNone, nil}, {"c", EntryNone, nil},
		}},
		{"v3 default / 2-d", arr2d(encV3Default), []tc{
			{"c", EntryDir, nil}, {"c/0", EntryDir, nil}, {"c/2/1", EntryChunk, []int64{2, 1}},
			{"c/3", EntryNone, nil}, {"c/0/2", EntryNone, nil}, {"0/0", EntryNone, nil}, {"0", EntryNone, nil},
			{"c/0/0/0", EntryNone, nil}, {"c.0.0", EntryNone, nil}, {"C/0/0", EntryNone, nil}, {"c/01/0", EntryNone, nil},
			{"zarr.json", EntryNone, nil},
		}},
		{"v3 default . 2-d", arr2d(encV3DefDot), []tc{
			{"c.0.0", EntryChunk, []int64{0, 0}}, {"c.2.1", EntryChunk, []int64{2, 1}},
			{"c", EntryNone, nil}, {"c/0/0", EntryNone, nil}, {"c.0", EntryNone, nil}, {"c.3.0", EntryNone, nil},
			{"0.0", EntryNone, nil}, {"c.0.0.0", EntryNone, nil}, {"cc.0.0", EntryNone, nil},
		}},
		{"v3 default / 3-d", arr3d(encV3Default), []tc{
			{"c", EntryDir, nil}, {"c/1", EntryDir, nil}, {"c/1/0", EntryDir, nil}, {"c/1/0/1", EntryChunk, []int64{1, 0, 1}},
			{"c/2", EntryNone, nil}, {"c/1/2", EntryNone, nil}, {"c/1/0/1/0", EntryNone, nil},
		}},
		{"v2 / 3-d", arr3d(encV2Slash), []tc{
			{"1", EntryDir, nil}, {"1/0", EntryDir, nil}, {"1/0/1", EntryChunk, []int64{1, 0, 1}}, {"1.0.1", EntryNone, nil},
		}},
		{"v2 legacy 3-d", arr3d(encV2Legacy), []tc{
			{"1.0.1", EntryChunk, []int64{1, 0, 1}}, {"1/0/1", EntryChunk, []int64{1, 0, 1}}, {"1", EntryDir, nil},
			{"1/0", EntryDir, nil}, {"1.0", EntryNone, nil}, {"1.0/1", EntryNone, nil},
		}},
		{"v2 . 0-d", arr0d(encV2Dot), []tc{{"0", EntryChunk, []int64{}}, {"c", EntryNone, nil}, {"1", EntryNone, nil}, {"0.0", EntryNone, nil}, {"0/0", EntryNone, nil}}},
		{"v2 / 0-d", arr0d(encV2Slash), []tc{{"0", EntryChunk, []int64{}}, {"0/0", EntryNone, nil}}},
		{"v3 default / 0-d", arr0d(encV3Default), []tc{{"c", EntryChunk, []int64{}}, {"c/0", EntryNone, nil}, {"0", EntryNone, nil}}},
		{"v3 default . 0-d", arr0d(encV3DefDot), []tc{{"c", EntryChunk, []int64{}}, {"c.0", EntryNone, nil}}},
		{"v3 default / empty dim", arrEmpty(encV3Default), []tc{{"c", EntryNone, nil}, {"c/0", EntryNone, nil}, {"c/0/0", EntryNone, nil}}},
		{"v2 . empty dim", arrEmpty(encV2Dot), []tc{{"0.0", EntryNone, nil}}},
	}
	for _, tt := range tests {
		for _, c := range tt.cases {
			kind, coords := tt.a.Resolve(strings.Split(c.path, "/"))
			if kind != c.want || !reflect.DeepEqual(coords, c.coords) {
				t.Errorf("%s: Resolve(%q) = %v %v, want %v %v", tt.name, c.path, kind, coords, c.want, c.coords)
			}
		}
		if kind, _ := tt.a.Resolve(nil); kind != EntryNone {
			t.Errorf("%s: Resolve(nil) = %v, want none", tt.name, kind)
		}
	}
}

// TestResolveRoundTrip checks every chunk of small grids in every encoding:
// each key resolves back to its coordinates.
func TestResolveRoundTrip(t *testing.T) {
	for _, enc := range allEncodings {
		a := &Array{Shape: []int64{3, 1, 11}, ChunkShape: []int64{1, 1, 2}, KeyEncoding: enc}
		grid := a.GridShape()
		seen := map[string]bool{}
		for i := int64(0); i < grid[0]; i++ {
			for k := int64(0); k < grid[2]; k++ {
				coords := []int64{i, 0, k}
				for _, key := range a.ChunkKeys(coords) {
					if seen[key] {
						t.Errorf("%s: key %q produced twice", encodingNames[enc], key)
					}
					seen[key] = true
					kind, got := a.Resolve(strings.Split(key, "/"))
					if kind != EntryChunk || !reflect.DeepEqual(got, coords) {
						t.Errorf("%s: Resolve(%q) = %v %v, want chunk %v", encodingNames[enc], key, kind, got, coords)
					}
				}
			}
		}
		if want := 3 * 6; len(seen) < want {
			t.Errorf("%s: %d distinct keys, want at least %d", encodingNames[enc], len(seen), want)
		}
	}
}

func TestParseIndex(t *testing.T) {
	tests := []struct {
		s     string
		limit int64
		want  int64
		ok    bool
	}{
		{"0", 1, 0, true}, {"9", 10, 9, true}, {"10", 10, 0, false}, {"123", 1000, 123, true},
		{"9223372036854775806", math.MaxInt64, 9223372036854775806, true},
		{"9223372036854775807", math.MaxInt64, 0, false},
		{"9223372036854775808", math.MaxInt64, 0, false},
		{"99999999999999999999", math.MaxInt64, 0, false},
		{"", 10, 0, false}, {"01", 10, 0, false}, {"00", 10, 0, false}, {"-1", 10, 0, false}, {"+1", 10, 0, false},
		{"1a", 10, 0, false}, {" 1", 10, 0, false}, {"\u0661", 10, 0, false},
	}
	for _, tt := range tests {
		got, ok := parseIndex(tt.s, tt.limit)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("parseIndex(%q, %d) = %d %v, want %d %v", tt.s, tt.limit, got, ok, tt.want, tt.ok)
		}
	}
}
