package zarr

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func testArray() *Array {
	return &Array{ZarrFormat: 2, Shape: []int64{4}, ChunkShape: []int64{2}, KeyEncoding: KeyEncoding{Separator: "."}, DataType: "<i2"}
}

func TestTreeAdd(t *testing.T) {
	tr := NewTree()
	if r := tr.Root(); r.Kind != KindGroup || !r.Implicit || r.Path != "" || len(r.MetaFiles) != 0 {
		t.Fatalf("new root = %+v, want an implicit group", r)
	}
	mustAdd := func(path string, kind Kind, arr *Array, meta ...string) *Node {
		t.Helper()
		n, err := tr.Add(path, kind, arr, meta...)
		if err != nil {
			t.Fatalf("Add(%q): %v", path, err)
		}
		return n
	}
	mustAdd("", KindGroup, nil, ZGroup, ZAttrs)
	arr := mustAdd("a/b c/arr", KindArray, testArray(), ZAttrs, ZArray, ZAttrs)
	if !reflect.DeepEqual(arr.MetaFiles, []string{ZArray, ZAttrs}) {
		t.Errorf("MetaFiles = %q, want sorted and deduplicated", arr.MetaFiles)
	}
	if arr.Path != "a/b c/arr" || arr.Name != "arr" || arr.Kind != KindArray || arr.Implicit {
		t.Errorf("array node = %+v", arr)
	}
	mid := tr.Lookup("a/b c")
	if mid == nil || !mid.Implicit || mid.Kind != KindGroup || mid.Name != "b c" || mid.Path != "a/b c" {
		t.Fatalf("implicit parent = %+v", mid)
	}
	// An implicit group becomes explicit when its own document turns up.
	if n := mustAdd("a/b c", KindGroup, nil, ZGroup); n != mid || n.Implicit {
		t.Errorf("explicit add of an implicit group gave %+v", n)
	}
	mustAdd("a/b c/arr2", KindArray, testArray(), ZArray)
	mustAdd("a/0", KindGroup, nil, ZGroup)
	if got := tr.Lookup("a").ChildNames(); !reflect.DeepEqual(got, []string{"0", "b c"}) {
		t.Errorf("ChildNames = %q", got)
	}
	for _, p := range []string{"x", "a/x", "a/b c/arr/0", "/a", "a/", "a//b"} {
		if n := tr.Lookup(p); n != nil {
			t.Errorf("Lookup(%q) = %+v, want nil", p, n)
		}
	}

	errorCases := []struct {
		path string
		kind Kind
		arr  *Array
		meta []string
		want error
		msg  string
	}{
		{"a/b c/arr/x", KindGroup, nil, nil, ErrConflict, `would be inside array "a/b c/arr"`},
		{"a/b c/arr/x/y", KindArray, testArray(), nil, ErrConflict, "inside array"},
		{"a/b c/arr", KindArray, testArray(), nil, ErrConflict, "already exists as an array"},
		{"a", KindArray, testArray(), nil, ErrConflict, "an array cannot contain"},
		{"", KindGroup, nil, nil, ErrConflict, "already exists"},
		{"a//b", KindGroup, nil, nil, ErrInvalid, "empty component"},
		{"/a", KindGroup, nil, nil, ErrInvalid, "empty component"},
		{"a/", KindGroup, nil, nil, ErrInvalid, "empty component"},
		{"a/..", KindGroup, nil, nil, ErrInvalid, "only of periods"},
		{"a/.", KindGroup, nil, nil, ErrInvalid, "only of periods"},
		{"a/.zarray", KindGroup, nil, nil, ErrInvalid, "metadata document name"},
		{"a/zarr.json", KindGroup, nil, nil, ErrInvalid, "metadata document name"},
		{"a/x\x00", KindGroup, nil, nil, ErrInvalid, "NUL"},
		{"q", KindArray, nil, nil, ErrInvalid, "needs its Array"},
		{"q", KindGroup, testArray(), nil, ErrInvalid, "cannot have an Array"},
		{"q", Kind(0), nil, nil, ErrInvalid, "unknown node kind"},
		{"q", KindGroup, nil, []string{"data.bin"}, ErrInvalid, "not a metadata document name"},
	}
	for _, c := range errorCases {
		_, err := tr.Add(c.path, c.kind, c.arr, c.meta...)
		if !errors.Is(err, c.want) || !strings.Contains(fmtErr(err), c.msg) {
			t.Errorf("Add(%q, %v): err %v, want %v containing %q", c.path, c.kind, err, c.want, c.msg)
		}
	}
	// Failed adds leave no implicit nodes behind.
	if tr.Lookup("q") != nil || tr.Lookup("a/b c/arr/x") != nil || tr.Lookup("a/..") != nil {
		t.Error("a failed Add left nodes in the tree")
	}
	var paths []string
	if err := tr.Walk(func(n *Node) error { paths = append(paths, n.Path); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []string{"", "a", "a/0", "a/b c", "a/b c/arr", "a/b c/arr2"}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("Walk order %q, want %q", paths, want)
	}
	stop := errors.New("stop")
	if err := tr.Walk(func(n *Node) error { return stop }); err != stop {
		t.Errorf("Walk did not return the callback's error: %v", err)
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestTreeArrayRoot(t *testing.T) {
	tr := NewTree()
	if _, err := tr.Add("", KindArray, testArray(), ZArray); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Add("x", KindGroup, nil); !errors.Is(err, ErrConflict) {
		t.Errorf("child of an array root: err %v, want ErrConflict", err)
	}
}

const zgroup = `{"zarr_format":2}`
const zarray = `{"zarr_format":2,"shape":[4],"chunks":[2],"dtype":"<i2","order":"C"}`

func TestTreeFromZMetadata(t *testing.T) {
	doc := `{"zarr_consolidated_format":1,"metadata":{
		".zgroup":` + zgroup + `,
		".zattrs":{"a":1},
		"g/sub/arr/.zarray":` + zarray + `,
		"g/sub/arr/.zattrs":{},
		"g/.zgroup":` + zgroup + `,
		"str/.zarray":"{\"zarr_format\":2,\"shape\":[3],\"chunks\":[3],\"dtype\":\"<f8\"}",
		"attrsonly/.zattrs":{},
		"g/notes.txt":"ignored",
		"g/zarr.json":{"zarr_format":3}
	}}`
	tr, err := TreeFromZMetadata([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		kind     Kind
		implicit bool
		meta     []string
	}{
		"":          {KindGroup, false, []string{ZAttrs, ZGroup, ZMetadata}},
		"g":         {KindGroup, false, []string{ZGroup}},
		"g/sub":     {KindGroup, true, nil},
		"g/sub/arr": {KindArray, false, []string{ZArray, ZAttrs}},
		"str":       {KindArray, false, []string{ZArray}},
		"attrsonly": {KindGroup, true, []string{ZAttrs}},
	}
	seen := 0
	err = tr.Walk(func(n *Node) error {
		seen++
		w, ok := want[n.Path]
		if !ok {
			t.Errorf("unexpected node %q", n.Path)
			return nil
		}
		if n.Kind != w.kind || n.Implicit != w.implicit || !reflect.DeepEqual(n.MetaFiles, w.meta) {
			t.Errorf("node %q = kind %v implicit %v meta %q, want %v %v %q", n.Path, n.Kind, n.Implicit, n.MetaFiles, w.kind, w.implicit, w.meta)
		}
		return nil
	})
	if err != nil || seen != len(want) {
		t.Errorf("walked %d nodes (err %v), want %d", seen, err, len(want))
	}
	if a := tr.Lookup("str").Array; a == nil || a.DataType != "<f8" || a.Shape[0] != 3 {
		t.Errorf("string-encoded .zarray parsed as %+v", a)
	}

	checkErrorCases(t, func(b []byte) error { _, err := TreeFromZMetadata(b); return err }, []errorCase{
		{"not JSON", `{`, ErrInvalid, ".zmetadata: is not valid JSON"},
		{"format missing", `{"metadata":{}}`, ErrInvalid, ".zmetadata: zarr_consolidated_format is missing"},
		{"format 2", `{"zarr_consolidated_format":2,"metadata":{}}`, ErrUnsupported, ".zmetadata: zarr_consolidated_format is 2"},
		{"metadata missing", `{"zarr_consolidated_format":1}`, ErrInvalid, ".zmetadata: metadata is missing"},
		{"metadata not object", `{"zarr_consolidated_format":1,"metadata":[]}`, ErrInvalid, ".zmetadata: metadata must be a JSON object"},
		{"attrs not object", `{"zarr_consolidated_format":1,"metadata":{".zattrs":[1]}}`, ErrInvalid, `metadata[".zattrs"] must be a JSON object of attributes`},
		{"root array malformed", `{"zarr_consolidated_format":1,"metadata":{".zarray":{"zarr_format":2,"shape":[1],"chunks":[0],"dtype":"<i2"}}}`, ErrInvalid, `metadata[".zarray"]: chunks [0] is 0`},
		{"string not JSON", `{"zarr_consolidated_format":1,"metadata":{".zgroup":"{"}}`, ErrInvalid, "is a string that does not hold a JSON document"},
		{"group of wrong format", `{"zarr_consolidated_format":1,"metadata":{".zgroup":{"zarr_format":3}}}`, ErrUnsupported, `.zmetadata metadata[".zgroup"]: zarr_format is 3`},
	})
}

func v3Group(consolidated string) string {
	if consolidated == "" {
		return `{"zarr_format":3,"node_type":"group"}`
	}
	return `{"zarr_format":3,"node_type":"group","consolidated_metadata":` + consolidated + `}`
}

func inline(entries ...string) string {
	return `{"kind":"inline","must_understand":false,"metadata":{` + strings.Join(entries, ",") + `}}`
}

func TestTreeFromV3Consolidated(t *testing.T) {
	arr := v3Array(nil)
	doc := v3Group(inline(
		`"x/deep/arr":`+arr,
		`"x":`+v3Group(""),
		`"nested":`+v3Group(inline(`"inner":`+arr, `"sub":`+v3Group(inline(`"leaf":`+arr)))),
		`"nested/inner":`+arr,
		`"a b":`+arr,
	))
	tr, ok, err := TreeFromV3Consolidated([]byte(doc))
	if err != nil || !ok {
		t.Fatalf("ok %v err %v", ok, err)
	}
	want := map[string]struct {
		kind     Kind
		implicit bool
	}{
		"": {KindGroup, false}, "x": {KindGroup, false}, "x/deep": {KindGroup, true}, "x/deep/arr": {KindArray, false},
		"nested": {KindGroup, false}, "nested/inner": {KindArray, false}, "nested/sub": {KindGroup, false},
		"nested/sub/leaf": {KindArray, false}, "a b": {KindArray, false},
	}
	seen := 0
	_ = tr.Walk(func(n *Node) error {
		seen++
		w, ok := want[n.Path]
		if !ok || n.Kind != w.kind || n.Implicit != w.implicit {
			t.Errorf("node %q kind %v implicit %v, want %+v (known %v)", n.Path, n.Kind, n.Implicit, w, ok)
		}
		wantMeta := []string{ZarrJSON}
		if n.Implicit {
			wantMeta = nil
		}
		if !reflect.DeepEqual(n.MetaFiles, wantMeta) {
			t.Errorf("node %q MetaFiles %q, want %q", n.Path, n.MetaFiles, wantMeta)
		}
		return nil
	})
	if seen != len(want) {
		t.Errorf("walked %d nodes, want %d", seen, len(want))
	}

	// A root that is an array is a one-node tree.
	tr, ok, err = TreeFromV3Consolidated([]byte(arr))
	if err != nil || !ok || tr.Root().Kind != KindArray || len(tr.Root().Children) != 0 || !reflect.DeepEqual(tr.Root().MetaFiles, []string{ZarrJSON}) {
		t.Errorf("array root: ok %v err %v root %+v", ok, err, tr)
	}
	for _, d := range []string{v3Group(""), v3Group("null")} {
		tr, ok, err := TreeFromV3Consolidated([]byte(d))
		if tr != nil || ok || err != nil {
			t.Errorf("%s: tree %v ok %v err %v, want nil false nil", d, tr, ok, err)
		}
	}
	if tr, ok, err := TreeFromV3Consolidated([]byte(v3Group(inline()))); err != nil || !ok || len(tr.Root().Children) != 0 {
		t.Errorf("empty inline metadata: ok %v err %v", ok, err)
	}

	checkErrorCases(t, func(b []byte) error { _, _, err := TreeFromV3Consolidated(b); return err }, []errorCase{
		{"not JSON", `{`, ErrInvalid, "zarr.json: is not valid JSON"},
		{"not object", v3Group(`[]`), ErrInvalid, "zarr.json: consolidated_metadata must be a JSON object"},
		{"kind missing", v3Group(`{"metadata":{}}`), ErrInvalid, "zarr.json: consolidated_metadata.kind is missing"},
		{"kind other", v3Group(`{"kind":"external","metadata":{}}`), ErrUnsupported, `zarr.json: consolidated_metadata.kind is "external"; only "inline"`},
		{"metadata missing", v3Group(`{"kind":"inline"}`), ErrInvalid, "zarr.json: consolidated_metadata.metadata is missing"},
		{"root must understand", `{"zarr_format":3,"node_type":"group","x":{"must_understand":true},"consolidated_metadata":null}`, ErrUnsupported, "must_understand true"},
	})
}

// deepConsolidated nests groups with their own consolidated metadata levels deep.
func deepConsolidated(levels int) string {
	doc := v3Group(inline())
	for i := 0; i < levels; i++ {
		doc = v3Group(inline(`"g":` + doc))
	}
	return doc
}

func TestV3ConsolidatedNestingWithinLimit(t *testing.T) {
	tr, ok, err := TreeFromV3Consolidated([]byte(deepConsolidated(maxConsolidatedNesting)))
	if err != nil || !ok {
		t.Fatalf("ok %v err %v", ok, err)
	}
	path := strings.TrimSuffix(strings.Repeat("g/", maxConsolidatedNesting), "/")
	if n := tr.Lookup(path); n == nil || n.Kind != KindGroup || n.Implicit {
		t.Errorf("Lookup(%q) = %+v, want the deepest group", path, n)
	}
}
