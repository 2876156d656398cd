package zarr

import (
	"math"
	"strconv"
	"strings"
)

// Kind says whether a node of the hierarchy is a group or an array.
type Kind int

const (
	KindGroup Kind = iota + 1
	KindArray
)

func (k Kind) String() string {
	switch k {
	case KindGroup:
		return "group"
	case KindArray:
		return "array"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// withArticle returns "a group" or "an array", for messages.
func (k Kind) withArticle() string {
	if k == KindArray {
		return "an array"
	}
	return "a " + k.String()
}

// KeyEncoding is how chunk coordinates become a key relative to the array's directory.
type KeyEncoding struct {
	Prefix    string // "c" for the v3 "default" encoding, "" for v2 and the v3 "v2" encoding
	Separator string // "." or "/"
	// SeparatorUnset is true for a v2 array whose .zarray has no
	// dimension_separator. Such arrays use "." by the spec, but zarr-python's
	// NestedDirectoryStore wrote "/" keys without recording it, so Resolve
	// accepts both spellings and ChunkKeys returns both.
	SeparatorUnset bool
}

// Array is what the tree needs to know about an array: its grid and key names.
type Array struct {
	ZarrFormat  int     // 2 or 3
	Shape       []int64 // length of each dimension
	ChunkShape  []int64 // shape of one stored object (for sharded v3 arrays: the shard shape)
	KeyEncoding KeyEncoding
	DataType    string     // v2 dtype string (structured dtypes as compact JSON) or v3 data_type name; informational
	Order       string     // v2 "C" or "F" ("" when absent or v3); informational
	Shard       *ShardInfo // non-nil when the codec chain's array->bytes codec is sharding_indexed
}

// GridShape returns the number of chunks along each dimension: ceil(shape/chunk),
// 0 when the dimension is empty.
func (a *Array) GridShape() []int64 {
	grid := make([]int64, len(a.Shape))
	for i, s := range a.Shape {
		if i >= len(a.ChunkShape) || a.ChunkShape[i] <= 0 || s <= 0 {
			continue
		}
		c := a.ChunkShape[i]
		grid[i] = s / c
		if s%c != 0 {
			grid[i]++
		}
	}
	return grid
}

// NumChunks returns the number of chunk keys the grid allows (1 for a 0-d
// array), or -1 if that overflows int64, which Parse* functions rule out.
func (a *Array) NumChunks() int64 {
	n, ok := product(a.GridShape())
	if !ok {
		return -1
	}
	return n
}

// ChunkKey returns the key of the chunk at coords relative to the array's
// directory: "0.1", "0/1", "c/0/1", "c.0.1"; for a 0-d array "0" (v2
// encodings) or "c" (v3 default). It returns "" if len(coords) is not the
// number of dimensions.
func (a *Array) ChunkKey(coords []int64) string {
	return a.chunkKey(coords, a.KeyEncoding.Separator)
}

// ChunkKeys returns every key under which the chunk at coords may be stored:
// ChunkKey first, then for v2 arrays without dimension_separator the
// "/"-separated spelling when it differs.
func (a *Array) ChunkKeys(coords []int64) []string {
	key := a.ChunkKey(coords)
	if key == "" {
		return nil
	}
	keys := []string{key}
	if a.KeyEncoding.SeparatorUnset && a.KeyEncoding.Separator != "/" {
		if alt := a.chunkKey(coords, "/"); alt != key {
			keys = append(keys, alt)
		}
	}
	return keys
}

func (a *Array) chunkKey(coords []int64, sep string) string {
	if len(coords) != len(a.Shape) {
		return ""
	}
	var b strings.Builder
	prefix := a.KeyEncoding.Prefix
	b.WriteString(prefix)
	if len(coords) == 0 {
		if prefix == "" {
			return "0"
		}
		return prefix
	}
	for i, c := range coords {
		if i > 0 || prefix != "" {
			b.WriteString(sep)
		}
		b.WriteString(strconv.FormatInt(c, 10))
	}
	return b.String()
}

// EntryKind classifies a name below an array's directory.
type EntryKind int

const (
	EntryNone  EntryKind = iota // no chunk or chunk directory can have this name
	EntryDir                    // an intermediate directory that can hold chunks
	EntryChunk                  // a chunk key inside the grid
)

func (k EntryKind) String() string {
	switch k {
	case EntryNone:
		return "none"
	case EntryDir:
		return "dir"
	case EntryChunk:
		return "chunk"
	}
	return "EntryKind(" + strconv.Itoa(int(k)) + ")"
}

// Resolve classifies a path below the array's directory, given as path
// components (e.g. []string{"c","0"}). EntryDir: an intermediate directory
// that can hold chunks ("c", "c/0" for a 3-d default-encoded array, "0" for a
// 2-d v2 "/" array). EntryChunk: a chunk key inside the grid, returned with
// its coordinates. EntryNone: no such name can exist (outside the grid, not a
// decimal number, leading zeros like "01", a sign, wrong depth, an empty
// component). Metadata documents are not chunk names and resolve to EntryNone.
func (a *Array) Resolve(components []string) (EntryKind, []int64) {
	if len(components) == 0 || len(a.ChunkShape) != len(a.Shape) {
		return EntryNone, nil
	}
	grid := a.GridShape()
	for _, g := range grid {
		if g == 0 {
			return EntryNone, nil
		}
	}
	enc := a.KeyEncoding
	if enc.Prefix != "" {
		if enc.Separator == "/" || len(grid) == 0 {
			if components[0] != enc.Prefix {
				return EntryNone, nil
			}
			if len(grid) == 0 {
				if len(components) == 1 {
					return EntryChunk, []int64{}
				}
				return EntryNone, nil
			}
			if len(components) == 1 {
				return EntryDir, nil
			}
			return resolveNested(components[1:], grid)
		}
		if len(components) != 1 {
			return EntryNone, nil
		}
		rest, ok := strings.CutPrefix(components[0], enc.Prefix+enc.Separator)
		if !ok {
			return EntryNone, nil
		}
		return resolveFlat(rest, enc.Separator, grid)
	}
	if len(grid) == 0 {
		if len(components) == 1 && components[0] == "0" {
			return EntryChunk, []int64{}
		}
		return EntryNone, nil
	}
	if enc.Separator == "/" {
		return resolveNested(components, grid)
	}
	if len(components) == 1 {
		if kind, coords := resolveFlat(components[0], enc.Separator, grid); kind != EntryNone {
			return kind, coords
		}
	}
	if enc.SeparatorUnset {
		return resolveNested(components, grid)
	}
	return EntryNone, nil
}

// resolveNested resolves a key whose coordinates are path components; fewer
// components than dimensions name a directory.
func resolveNested(components []string, grid []int64) (EntryKind, []int64) {
	if len(components) > len(grid) {
		return EntryNone, nil
	}
	coords := make([]int64, len(components))
	for i, c := range components {
		n, ok := parseIndex(c, grid[i])
		if !ok {
			return EntryNone, nil
		}
		coords[i] = n
	}
	if len(components) < len(grid) {
		return EntryDir, nil
	}
	return EntryChunk, coords
}

// resolveFlat resolves one path component holding all coordinates joined by sep.
func resolveFlat(name, sep string, grid []int64) (EntryKind, []int64) {
	if sep == "" || strings.Count(name, sep) != len(grid)-1 {
		return EntryNone, nil
	}
	coords := make([]int64, 0, len(grid))
	for i, part := range strings.Split(name, sep) {
		n, ok := parseIndex(part, grid[i])
		if !ok {
			return EntryNone, nil
		}
		coords = append(coords, n)
	}
	return EntryChunk, coords
}

// parseIndex parses a canonical decimal chunk index (no sign, no leading
// zeros) and checks it is below limit.
func parseIndex(s string, limit int64) (int64, bool) {
	if s == "" || len(s) > 19 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		d := s[i]
		if d < '0' || d > '9' {
			return 0, false
		}
		if n > (math.MaxInt64-int64(d-'0'))/10 {
			return 0, false
		}
		n = n*10 + int64(d-'0')
	}
	return n, n < limit
}

// mulInt64 multiplies non-negative values, reporting overflow.
func mulInt64(a, b int64) (int64, bool) {
	if a < 0 || b < 0 {
		return 0, false
	}
	if a == 0 || b == 0 {
		return 0, true
	}
	if a > math.MaxInt64/b {
		return 0, false
	}
	return a * b, true
}

func addInt64(a, b int64) (int64, bool) {
	if a < 0 || b < 0 || a > math.MaxInt64-b {
		return 0, false
	}
	return a + b, true
}

// product multiplies non-negative dims; the product of no dims is 1.
func product(dims []int64) (int64, bool) {
	p := int64(1)
	for _, d := range dims {
		var ok bool
		if p, ok = mulInt64(p, d); !ok {
			return 0, false
		}
	}
	return p, true
}

// validate checks the invariants every parsed array satisfies; field names
// are those of the document kind (v2 or v3).
func (a *Array) validate(doc, shapeField, chunkField string) error {
	if len(a.Shape) > MaxDims {
		return unsupportedf(doc, shapeField, "has %d dimensions; at most %d are supported", len(a.Shape), MaxDims)
	}
	if len(a.ChunkShape) != len(a.Shape) {
		return invalidf(doc, chunkField, "has %d dimensions but %s has %d", len(a.ChunkShape), shapeField, len(a.Shape))
	}
	for i, s := range a.Shape {
		if s < 0 {
			return invalidf(doc, shapeField, "[%d] is %d; dimensions cannot be negative", i, s)
		}
	}
	for i, c := range a.ChunkShape {
		if c <= 0 {
			return invalidf(doc, chunkField, "[%d] is %d; chunk sizes must be positive", i, c)
		}
	}
	if _, ok := product(a.GridShape()); !ok {
		return unsupportedf(doc, chunkField, "gives more than 2^63-1 chunks for %s %v", shapeField, a.Shape)
	}
	switch a.KeyEncoding.Separator {
	case ".", "/":
	default:
		return invalidf(doc, "", "chunk key separator %q must be \".\" or \"/\"", a.KeyEncoding.Separator)
	}
	return nil
}
