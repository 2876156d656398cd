package zarr

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// fixtureRoot holds stores written by other zarr implementations
// (see ../../shared/fixtures/README.md).
const fixtureRoot = "../../shared/fixtures"

var fixtureStores = []string{
	"zarr-python-2.13/fixture",
	"zarrita/v2/data.zarr",
	"zarrita/v3/data.zarr",
}

func fixtureDir(t testing.TB, store string) string {
	t.Helper()
	dir := filepath.Join(fixtureRoot, store)
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("fixture store not available: %v", err)
	}
	return dir
}

// diskNode is a group or array found by walking a store on disk.
type diskNode struct {
	kind      Kind
	array     *Array
	metaFiles []string
	implicit  bool
}

// scanStore walks a store directory and parses every metadata document in it.
// Directories inside arrays are chunk directories, not nodes.
func scanStore(t *testing.T, root string) map[string]*diskNode {
	t.Helper()
	nodes := map[string]*diskNode{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		nodePath := filepath.ToSlash(rel)
		if nodePath == "." {
			nodePath = ""
		}
		entries, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		n := &diskNode{kind: KindGroup}
		for _, e := range entries {
			if e.Type().IsRegular() && IsMetadataName(e.Name()) {
				n.metaFiles = append(n.metaFiles, e.Name())
			}
		}
		read := func(name string) []byte {
			data, err := os.ReadFile(filepath.Join(path, name))
			if err != nil {
				t.Fatal(err)
			}
			return data
		}
		for _, name := range n.metaFiles {
			doc := nodePath + "/" + name
			switch name {
			case ZArray:
				a, err := ParseZArray(read(name))
				if err != nil {
					t.Errorf("%s: %v", doc, err)
					continue
				}
				n.kind, n.array = KindArray, a
			case ZGroup:
				if err := ParseZGroup(read(name)); err != nil {
					t.Errorf("%s: %v", doc, err)
				}
			case ZarrJSON:
				kind, a, err := ParseV3Node(read(name))
				if err != nil {
					t.Errorf("%s: %v", doc, err)
					continue
				}
				n.kind, n.array = kind, a
			case ZAttrs:
				if !json.Valid(read(name)) || !isJSONObject(read(name)) {
					t.Errorf("%s: not a JSON object", doc)
				}
			case ZMetadata:
				if _, err := TreeFromZMetadata(read(name)); err != nil {
					t.Errorf("%s: %v", doc, err)
				}
			}
		}
		n.implicit = !slices.Contains(n.metaFiles, ZArray) && !slices.Contains(n.metaFiles, ZGroup) && !slices.Contains(n.metaFiles, ZarrJSON)
		nodes[nodePath] = n
		if n.kind == KindArray {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return nodes
}

func TestFixtureStoresConform(t *testing.T) {
	for _, store := range fixtureStores {
		t.Run(store, func(t *testing.T) {
			root := fixtureDir(t, store)
			nodes := scanStore(t, root)
			arrays, chunks := 0, 0
			for path, n := range nodes {
				if n.kind != KindArray || n.array == nil {
					continue
				}
				arrays++
				chunks += checkArrayDir(t, filepath.Join(root, filepath.FromSlash(path)), path, n.array)
				checkImpossibleNames(t, path, n.array)
			}
			if arrays == 0 || chunks == 0 {
				t.Fatalf("found %d arrays and %d chunk files in %s; the walk is broken", arrays, chunks, store)
			}
			t.Logf("%d nodes, %d arrays, %d chunk files", len(nodes), arrays, chunks)
		})
	}
}

// checkArrayDir checks that every file below an array directory resolves to
// the chunk whose key it is and every directory to EntryDir. It returns the
// number of chunk files.
func checkArrayDir(t *testing.T, dir, nodePath string, a *Array) int {
	t.Helper()
	chunks := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		comps := strings.Split(key, "/")
		kind, coords := a.Resolve(comps)
		switch {
		case d.IsDir():
			if kind != EntryDir {
				t.Errorf("%s: directory %q resolves to %v, want dir", nodePath, key, kind)
			}
		case len(comps) == 1 && IsMetadataName(key):
			if kind != EntryNone {
				t.Errorf("%s: metadata document %q resolves to %v, want none", nodePath, key, kind)
			}
		default:
			chunks++
			if kind != EntryChunk {
				t.Errorf("%s: chunk file %q resolves to %v, want chunk", nodePath, key, kind)
				return nil
			}
			if !slices.Contains(a.ChunkKeys(coords), key) {
				t.Errorf("%s: chunk file %q resolves to %v whose keys are %q", nodePath, key, coords, a.ChunkKeys(coords))
			}
			if !a.KeyEncoding.SeparatorUnset && a.ChunkKey(coords) != key {
				t.Errorf("%s: chunk file %q resolves to %v whose key is %q", nodePath, key, coords, a.ChunkKey(coords))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return chunks
}

// keyComponents spells chunk coordinates (given as already formatted parts,
// possibly malformed) as path components under the array's key encoding.
func keyComponents(a *Array, parts []string, sep string) []string {
	prefix := a.KeyEncoding.Prefix
	switch {
	case prefix != "" && sep == "/":
		return append([]string{prefix}, parts...)
	case prefix != "":
		return []string{prefix + sep + strings.Join(parts, sep)}
	case sep == "/":
		return parts
	default:
		return []string{strings.Join(parts, sep)}
	}
}

// checkImpossibleNames checks names that no chunk of a can have, and the
// intermediate directories it can have.
func checkImpossibleNames(t *testing.T, nodePath string, a *Array) {
	t.Helper()
	grid := a.GridShape()
	n := len(grid)
	sep := a.KeyEncoding.Separator
	expect := func(comps []string, want EntryKind) {
		t.Helper()
		if got, _ := a.Resolve(comps); got != want {
			t.Errorf("%s: Resolve(%q) = %v, want %v", nodePath, comps, got, want)
		}
	}
	zeros := func() []string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = "0"
		}
		return parts
	}
	for _, name := range []string{ZArray, ZAttrs, ZGroup, ZarrJSON, ZMetadata, "", "x"} {
		expect([]string{name}, EntryNone)
	}
	expect(nil, EntryNone)
	if a.KeyEncoding.Prefix == "" {
		expect([]string{"c"}, EntryNone)
		expect([]string{"c", "0"}, EntryNone)
	} else if n > 0 {
		expect([]string{"0"}, EntryNone)
		expect([]string{"d"}, EntryNone)
	}
	if n == 0 {
		return
	}
	expect(keyComponents(a, zeros(), sep), EntryChunk)
	bad := []string{"00", "01", "-1", "-0", "+0", "1e0", " 0", "0 ", "0x0", "\u0660", "", "99999999999999999999", "9223372036854775807"}
	for d := 0; d < n; d++ {
		parts := zeros()
		parts[d] = strconv.FormatInt(grid[d], 10)
		expect(keyComponents(a, parts, sep), EntryNone)
		for _, tok := range bad {
			parts := zeros()
			parts[d] = tok
			expect(keyComponents(a, parts, sep), EntryNone)
		}
	}
	expect(keyComponents(a, append(zeros(), "0"), sep), EntryNone)
	if n == 2 {
		expect([]string{"0.0.0"}, EntryNone)
		expect(keyComponents(a, []string{"0.0.0"}, sep), EntryNone)
	}
	if sep == "/" {
		for k := 1; k < n; k++ {
			expect(keyComponents(a, zeros()[:k], sep), EntryDir)
		}
		expect(append(keyComponents(a, zeros(), sep), ""), EntryNone)
		if n >= 2 {
			expect(keyComponents(a, zeros(), "."), EntryNone)
		}
	} else {
		if n >= 2 {
			// Without a recorded dimension_separator the nested spelling is
			// possible too, so a prefix of the coordinates is a directory.
			wantPrefix, wantNested := EntryNone, EntryNone
			if a.KeyEncoding.SeparatorUnset {
				wantNested = EntryChunk
				if n == 2 {
					wantPrefix = EntryDir // "0" is both a 1-part prefix and a nested directory
				}
				for k := 1; k < n; k++ {
					expect(keyComponents(a, zeros()[:k], "/"), EntryDir)
				}
			}
			expect(keyComponents(a, zeros()[:n-1], sep), wantPrefix)
			expect(keyComponents(a, zeros(), "/"), wantNested)
		}
		expect([]string{keyComponents(a, zeros(), sep)[0] + sep}, EntryNone)
	}
}

// treeNodes lists the nodes of a tree as diskNodes for comparison.
func treeNodes(t *testing.T, tree *Tree) map[string]*diskNode {
	t.Helper()
	nodes := map[string]*diskNode{}
	err := tree.Walk(func(n *Node) error {
		if got := tree.Lookup(n.Path); got != n {
			t.Errorf("Lookup(%q) does not return the walked node", n.Path)
		}
		nodes[n.Path] = &diskNode{kind: n.Kind, array: n.Array, metaFiles: n.MetaFiles, implicit: n.Implicit}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return nodes
}

func compareNodes(t *testing.T, got, want map[string]*diskNode) {
	t.Helper()
	for path, w := range want {
		g, ok := got[path]
		if !ok {
			t.Errorf("node %q is on disk but not in the consolidated tree", path)
			continue
		}
		if g.kind != w.kind || g.implicit != w.implicit {
			t.Errorf("node %q: kind %v implicit %v, on disk %v implicit %v", path, g.kind, g.implicit, w.kind, w.implicit)
		}
		if !slices.Equal(g.metaFiles, w.metaFiles) {
			t.Errorf("node %q: MetaFiles %q, on disk %q", path, g.metaFiles, w.metaFiles)
		}
		if !reflect.DeepEqual(g.array, w.array) {
			t.Errorf("node %q: consolidated array %+v, on disk %+v", path, g.array, w.array)
		}
	}
	for path := range got {
		if _, ok := want[path]; !ok {
			t.Errorf("node %q is in the consolidated tree but not on disk", path)
		}
	}
}

func TestFixtureZMetadataMatchesDisk(t *testing.T) {
	root := fixtureDir(t, "zarrita/v2/data.zarr")
	data, err := os.ReadFile(filepath.Join(root, ZMetadata))
	if err != nil {
		t.Fatal(err)
	}
	tree, err := TreeFromZMetadata(data)
	if err != nil {
		t.Fatal(err)
	}
	compareNodes(t, treeNodes(t, tree), scanStore(t, root))
	if n := tree.Lookup("my group with spaces"); n == nil || n.Kind != KindGroup {
		t.Errorf("Lookup(%q) = %+v, want a group", "my group with spaces", n)
	}
}

func TestFixtureV3ConsolidatedMatchesDisk(t *testing.T) {
	root := filepath.Join(fixtureDir(t, "zarrita/v3/data.zarr"), "consolidated")
	data, err := os.ReadFile(filepath.Join(root, ZarrJSON))
	if err != nil {
		t.Fatal(err)
	}
	tree, ok, err := TreeFromV3Consolidated(data)
	if err != nil || !ok {
		t.Fatalf("TreeFromV3Consolidated: ok=%v err=%v", ok, err)
	}
	compareNodes(t, treeNodes(t, tree), scanStore(t, root))
	if n := tree.Lookup("nested/1d.i2"); n == nil || n.Kind != KindArray {
		t.Errorf("Lookup(nested/1d.i2) = %+v, want an array", n)
	}
}

func TestFixtureV3WithoutConsolidated(t *testing.T) {
	root := fixtureDir(t, "zarrita/v3/data.zarr")
	for _, doc := range []string{"zarr.json", "my group with spaces/zarr.json", "consolidated/nested/zarr.json"} {
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(doc)))
		if err != nil {
			t.Fatal(err)
		}
		tree, ok, err := TreeFromV3Consolidated(data)
		if err != nil || ok || tree != nil {
			t.Errorf("%s: got tree=%v ok=%v err=%v, want no tree, ok false, no error", doc, tree != nil, ok, err)
		}
	}
}

// v3ItemSize is the size in bytes of the fixed-size v3 data types the sharded fixtures use.
var v3ItemSize = map[string]int64{"bool": 1, "uint8": 1, "int8": 1, "int16": 2, "uint16": 2, "int32": 4, "float32": 4, "float64": 8, "int64": 8}

func TestFixtureShardIndexes(t *testing.T) {
	root := fixtureDir(t, "zarrita/v3/data.zarr")
	nodes := scanStore(t, root)
	shards, empty := 0, 0
	for path, n := range nodes {
		a := n.array
		if a == nil || a.Shard == nil {
			continue
		}
		if a.Shard.IndexAtStart || !a.Shard.IndexCRC32C || a.Shard.IndexUnsupported != "" {
			t.Errorf("%s: shard info %+v, want index at end with crc32c", path, a.Shard)
		}
		innerGzip := innerCodecsAreBytesGzip(t, filepath.Join(root, filepath.FromSlash(path), ZarrJSON))
		innerBytes, _ := product(a.Shard.InnerChunkShape)
		innerBytes *= v3ItemSize[a.DataType]
		arrayDir := filepath.Join(root, filepath.FromSlash(path))
		err := filepath.WalkDir(arrayDir, func(file string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() == ZarrJSON {
				return err
			}
			shards++
			rel, _ := filepath.Rel(arrayDir, file)
			name := path + "/" + filepath.ToSlash(rel)
			data, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			size := a.Shard.IndexSize(a)
			if size < 0 || int64(len(data)) < size {
				t.Errorf("%s: %d bytes cannot hold a %d-byte index", name, len(data), size)
				return nil
			}
			off := a.Shard.IndexOffset(a, int64(len(data)))
			index := data[off : off+size]
			ranges, err := ParseShardIndex(index, a)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				return nil
			}
			if want, _ := product(a.Shard.ChunksPerShard(a)); int64(len(ranges)) != want {
				t.Errorf("%s: %d ranges, want %d", name, len(ranges), want)
			}
			if err := ValidateShardRanges(ranges, a, int64(len(data))); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			for i, r := range ranges {
				if r.Empty {
					empty++
					continue
				}
				if !innerGzip || v3ItemSize[a.DataType] == 0 {
					continue
				}
				// The strongest check that a range is right: it decodes to exactly one inner chunk.
				zr, err := gzip.NewReader(bytes.NewReader(data[r.Offset : r.Offset+r.Length]))
				if err != nil {
					t.Errorf("%s: inner chunk %d: %v", name, i, err)
					continue
				}
				raw, err := io.ReadAll(zr)
				if err != nil || int64(len(raw)) != innerBytes {
					t.Errorf("%s: inner chunk %d decodes to %d bytes (err %v), want %d", name, i, len(raw), err, innerBytes)
				}
			}
			checkIndexCorruption(t, name, index, a)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if shards == 0 || empty == 0 {
		t.Fatalf("checked %d shards with %d empty inner chunks; expected the fixtures to have both", shards, empty)
	}
}

func innerCodecsAreBytesGzip(t *testing.T, file string) bool {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Codecs []struct {
			Configuration struct {
				Codecs []struct{ Name string } `json:"codecs"`
			} `json:"configuration"`
		} `json:"codecs"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	inner := doc.Codecs[0].Configuration.Codecs
	return len(inner) == 2 && inner[0].Name == "bytes" && inner[1].Name == "gzip"
}

// checkIndexCorruption flips each byte of a real index in turn and checks
// the checksum catches it; it also checks truncated and extended indexes.
func checkIndexCorruption(t *testing.T, name string, index []byte, a *Array) {
	t.Helper()
	for i := range index {
		bad := bytes.Clone(index)
		bad[i] ^= 0x40
		if _, err := ParseShardIndex(bad, a); !errors.Is(err, ErrChecksum) {
			t.Errorf("%s: index with byte %d flipped: err %v, want ErrChecksum", name, i, err)
		}
	}
	for _, bad := range [][]byte{index[1:], index[:len(index)-1], append(bytes.Clone(index), 0)} {
		if _, err := ParseShardIndex(bad, a); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: index of %d bytes: err %v, want ErrInvalid", name, len(bad), err)
		}
	}
}
