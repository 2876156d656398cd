package zarr

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// skipCase is a consolidated document whose root is fine but some of whose
// nodes are not: they must be left out (with the reason, wrapping kind, and
// a message containing msg for the first), and the good ones kept.
type skipCase struct {
	name    string
	doc     string
	skipped []string // paths left out, in the order reported
	kind    error    // what the first skipped node's error wraps
	msg     string   // part of the first skipped node's message
	kept    []string // paths that must still be in the tree
}

func checkSkipCases(t *testing.T, build func([]byte) (*Tree, error), cases []skipCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := build([]byte(tt.doc))
			if err != nil {
				t.Fatalf("error %v, want the good nodes kept and the bad ones skipped", err)
			}
			var got []string
			for _, s := range tr.Skipped() {
				got = append(got, s.Path)
				if s.Err == nil {
					t.Errorf("skipped %q without a reason", s.Path)
				}
			}
			if !slices.Equal(got, tt.skipped) {
				t.Errorf("skipped %q, want %q", got, tt.skipped)
			}
			if len(got) > 0 {
				first := tr.Skipped()[0].Err
				if !errors.Is(first, tt.kind) {
					t.Errorf("reason %q does not wrap %v", first, tt.kind)
				}
				if !strings.Contains(first.Error(), tt.msg) {
					t.Errorf("reason %q does not contain %q", first, tt.msg)
				}
			}
			// A node left out because a group above it was says so.
			for _, s := range tr.Skipped() {
				for _, q := range tt.skipped {
					if strings.HasPrefix(s.Path, q+"/") && CheckNodePath(s.Path) == nil && !errors.Is(s.Err, ErrParentSkipped) {
						t.Errorf("%q is inside skipped %q, but its reason %q does not wrap ErrParentSkipped", s.Path, q, s.Err)
					}
				}
			}
			for _, p := range tt.skipped {
				if tr.Lookup(p) != nil {
					t.Errorf("skipped node %q is still in the tree", p)
				}
			}
			for _, p := range tt.kept {
				if tr.Lookup(p) == nil {
					t.Errorf("good node %q is missing", p)
				}
			}
			checkTreeProperties(t, tr)
		})
	}
}

func zmeta(entries ...string) string {
	return `{"zarr_consolidated_format":1,"metadata":{".zgroup":{"zarr_format":2},` + strings.Join(entries, ",") + `}}`
}

func zarrayWith(shape, chunks, dtype string) string {
	return fmt.Sprintf(`{"zarr_format":2,"shape":%s,"chunks":%s,"dtype":%s}`, shape, chunks, dtype)
}

func TestTreeFromZMetadataSkipsBadNodes(t *testing.T) {
	good := `"good/.zarray":` + zarray
	long := strings.Repeat("n", MaxNameBytes+1)
	dims := "[" + strings.TrimSuffix(strings.Repeat("1,", 10000), ",") + "]"
	checkSkipCases(t, TreeFromZMetadata, []skipCase{
		{"chunks 0", zmeta(good, `"a/.zarray":`+zarrayWith("[4]", "[0]", `"<i2"`)), []string{"a"}, ErrInvalid, `metadata["a/.zarray"]: chunks [0] is 0`, []string{"good"}},
		{"negative shape", zmeta(good, `"a/.zarray":`+zarrayWith("[-1]", "[1]", `"<i2"`)), []string{"a"}, ErrInvalid, `shape [0] is -1`, []string{"good"}},
		{"shape not an integer", zmeta(good, `"a/.zarray":`+zarrayWith("[9e18]", "[1]", `"<i2"`)), []string{"a"}, ErrInvalid, `shape [0] must be an integer, got 9e18`, []string{"good"}},
		{"shape beyond int64", zmeta(good, `"a/.zarray":`+zarrayWith("[99999999999999999999]", "[1]", `"<i2"`)), []string{"a"}, ErrInvalid, `must be an integer`, []string{"good"}},
		{"more than 2^63 chunks", zmeta(good, `"a/.zarray":`+zarrayWith("[4294967296,4294967296,2]", "[1,1,1]", `"<i2"`)), []string{"a"}, ErrUnsupported, `more than 2^63-1 chunks`, []string{"good"}},
		{"10000 dimensions", zmeta(good, `"a/.zarray":`+zarrayWith(dims, dims, `"<i2"`)), []string{"a"}, ErrUnsupported, `has 10000 dimensions`, []string{"good"}},
		{"dtype empty", zmeta(good, `"a/.zarray":`+zarrayWith("[4]", "[2]", `""`)), []string{"a"}, ErrInvalid, `dtype is empty`, []string{"good"}},
		{"dtype not a type", zmeta(good, `"a/.zarray":`+zarrayWith("[4]", "[2]", `7`)), []string{"a"}, ErrInvalid, `dtype must be a string`, []string{"good"}},
		{"separator unknown", zmeta(good, `"a/.zarray":{"zarr_format":2,"shape":[4],"chunks":[2],"dtype":"<i2","dimension_separator":"|"}`), []string{"a"}, ErrInvalid, `dimension_separator must be`, []string{"good"}},
		{"truncated string entry", zmeta(good, `"a/.zarray":"{\"zarr_format\":2,\"shape\":[4],"`), []string{"a"}, ErrInvalid, `is a string that does not hold a JSON document`, []string{"good"}},
		{"entry not an object", zmeta(good, `"a/.zarray":[1]`), []string{"a"}, ErrInvalid, `.zarray"]: is not a JSON object`, []string{"good"}},
		{"group malformed: children too", zmeta(good, `"g/.zgroup":{"zarr_format":"2"}`, `"g/x/.zarray":`+zarray, `"g/y/z/.zgroup":`+zgroup, `"g/.zattrs":{}`),
			[]string{"g", "g/x", "g/y/z"}, ErrInvalid, `metadata["g/.zgroup"]: zarr_format must be an integer`, []string{"good"}},
		{"attrs malformed", zmeta(good, `"a/.zarray":`+zarray, `"a/.zattrs":[1]`), []string{"a"}, ErrInvalid, `metadata["a/.zattrs"] must be a JSON object`, []string{"good"}},
		{"attrs malformed on implicit group", zmeta(good, `"g/.zattrs":"x"`, `"g/a/.zarray":`+zarray), []string{"g", "g/a"}, ErrInvalid, `is a string that does not hold a JSON document`, []string{"good"}},
		{"array and group", zmeta(good, `"a/.zarray":`+zarray, `"a/.zgroup":`+zgroup), []string{"a"}, ErrInvalid, `metadata["a/.zgroup"] does not fit the hierarchy`, []string{"good"}},
		{"node inside array", zmeta(good, `"a/.zarray":`+zarray, `"a/b/.zgroup":`+zgroup), []string{"a/b"}, ErrInvalid, `inside array "a"`, []string{"good", "a"}},
		{"attrs inside array", zmeta(good, `"a/.zarray":`+zarray, `"a/b/.zattrs":{}`), []string{"a/b"}, ErrInvalid, `metadata["a/b/.zattrs"] does not fit the hierarchy`, []string{"good", "a"}},
		{"dot-dot", zmeta(good, `"../x/.zarray":`+zarray), []string{"../x"}, ErrBadPath, `names an invalid node path`, []string{"good"}},
		{"dot-dot inside", zmeta(good, `"a/../../x/.zarray":`+zarray), []string{"a/../../x"}, ErrBadPath, `only of periods`, []string{"good"}},
		{"dot", zmeta(good, `"./x/.zarray":`+zarray), []string{"./x"}, ErrBadPath, `only of periods`, []string{"good"}},
		{"empty component", zmeta(good, `"a//.zgroup":`+zgroup), []string{"a/"}, ErrBadPath, `metadata["a//.zgroup"] names an invalid node path`, []string{"good"}},
		{"absolute", zmeta(good, `"/x/.zarray":`+zarray, `"/.zarray":`+zarray), []string{"/", "/x"}, ErrBadPath, `metadata["/.zarray"] names an invalid node path`, []string{"good"}},
		{"NUL", zmeta(good, `"x\u0000y/.zarray":`+zarray), []string{"x\x00y"}, ErrBadPath, `NUL`, []string{"good"}},
		{"backslash", zmeta(good, `"..\\x/.zarray":`+zarray), []string{`..\x`}, ErrBadPath, `backslash`, []string{"good"}},
		{"name too long", zmeta(good, `"`+long+`/.zarray":`+zarray, `"`+long+`/b/.zarray":`+zarray), []string{long, long + "/b"}, ErrBadPath, `component of 256 bytes`, []string{"good"}},
		{"name of 255 bytes is fine", zmeta(good, `"`+long[1:]+`/.zarray":`+zarray), nil, nil, "", []string{"good", long[1:]}},
		// What zarrfs does not need to understand to name chunks passes.
		{"unknown dtype passes", zmeta(good, `"a/.zarray":`+zarrayWith("[4]", "[2]", `"<x9"`)), nil, nil, "", []string{"good", "a"}},
		{"huge but countable grid passes", zmeta(good, `"a/.zarray":`+zarrayWith("[9000000000000000000]", "[1]", `"<i2"`)), nil, nil, "", []string{"good", "a"}},
	})
}

func TestTreeFromV3ConsolidatedSkipsBadNodes(t *testing.T) {
	arr := v3Array(nil)
	good := `"good":` + arr
	doc := func(entries ...string) string { return v3Group(inline(append([]string{good}, entries...)...)) }
	long := strings.Repeat("n", MaxNameBytes+1)
	checkSkipCases(t, func(b []byte) (*Tree, error) {
		tr, ok, err := TreeFromV3Consolidated(b)
		if err == nil && !ok {
			err = errors.New("not consolidated")
		}
		return tr, err
	}, []skipCase{
		{"chunks 0", doc(`"a":` + v3Array(map[string]string{"chunk_grid": `{"name":"regular","configuration":{"chunk_shape":[0,1]}}`})), []string{"a"}, ErrInvalid, `chunk_shape [0] is 0`, []string{"good"}},
		{"wrong rank", doc(`"a":` + v3Array(map[string]string{"shape": `[1,2,3]`})), []string{"a"}, ErrInvalid,
			`zarr.json consolidated_metadata.metadata["a"]: chunk_grid.configuration.chunk_shape has 2 dimensions but shape has 3`, []string{"good"}},
		{"unknown key encoding", doc(`"a":` + v3Array(map[string]string{"chunk_key_encoding": `{"name":"hashed"}`})), []string{"a"}, ErrUnsupported, `chunk_key_encoding.name is "hashed"`, []string{"good"}},
		{"unknown chunk grid", doc(`"a":` + v3Array(map[string]string{"chunk_grid": `{"name":"rectilinear","configuration":{}}`})), []string{"a"}, ErrUnsupported, `only the "regular" chunk grid`, []string{"good"}},
		{"storage transformer", doc(`"a":` + strings.Replace(arr, `{`, `{"storage_transformers":[{"name":"x"}],`, 1)), []string{"a"}, ErrUnsupported, `storage transformer "x"`, []string{"good"}},
		{"entry not object", doc(`"a":1`), []string{"a"}, ErrInvalid, `consolidated_metadata.metadata["a"]: is not a JSON object`, []string{"good"}},
		{"node below array", doc(`"a":`+arr, `"a/b":`+arr), []string{"a/b"}, ErrInvalid, `metadata["a/b"] does not fit the hierarchy`, []string{"good", "a"}},
		{"kind conflict in nested", doc(`"a":`+v3Group(inline(`"b":`+v3Group(""))), `"a/b":`+arr), []string{"a/b"}, ErrInvalid, `metadata["a/b"] is an array but "a/b" is also listed as a group`, []string{"good", "a"}},
		{"nested entry names its document", doc(`"a":` + v3Group(inline(`"b":{"zarr_format":3}`))), []string{"a/b"}, ErrInvalid,
			`zarr.json consolidated_metadata.metadata["a"] consolidated_metadata.metadata["b"]: node_type is missing`, []string{"good", "a"}},
		{"group malformed: children too", doc(`"g":{"zarr_format":3,"node_type":"grop"}`, `"g/x":`+arr, `"g/y/z":`+arr), []string{"g", "g/x", "g/y/z"}, ErrInvalid, `node_type must be "array" or "group"`, []string{"good"}},
		{"nested consolidated malformed", doc(`"g":`+v3Group(`{"kind":"inline"}`), `"g/x":`+arr), []string{"g", "g/x"}, ErrInvalid, `consolidated_metadata.metadata is missing`, []string{"good"}},
		{"nested too deep", doc(`"d":` + deepConsolidated(maxConsolidatedNesting+1)), []string{strings.TrimSuffix("d/"+strings.Repeat("g/", maxConsolidatedNesting), "/")}, ErrUnsupported, "nests more than 32 levels", []string{"good", "d"}},
		{"empty key", doc(`"":` + arr), []string{"/"}, ErrBadPath, `consolidated_metadata.metadata[""] names the group itself`, []string{"good"}},
		{"dot-dot", doc(`"a/../b":` + arr), []string{"a/../b"}, ErrBadPath, `consolidated_metadata.metadata["a/../b"] names an invalid node path`, []string{"good"}},
		{"absolute", doc(`"/etc":` + arr), []string{"/etc"}, ErrBadPath, `empty component`, []string{"good"}},
		{"NUL", doc(`"a\u0000":` + arr), []string{"a\x00"}, ErrBadPath, `NUL`, []string{"good"}},
		{"backslash", doc(`"a\\..":` + arr), []string{`a\..`}, ErrBadPath, `backslash`, []string{"good"}},
		{"name too long", doc(`"` + long + `":` + arr), []string{long}, ErrBadPath, `component of 256 bytes`, []string{"good"}},
		{"unknown codec and data type pass", doc(`"a":` + v3Array(map[string]string{"data_type": `"float1024"`, "codecs": `[{"name":"bytes"},{"name":"future-codec"}]`})), nil, nil, "", []string{"good", "a"}},
	})
}

func TestTreeSkip(t *testing.T) {
	tr := NewTree()
	for _, p := range []string{"g", "g/a", "g/b/c", "h"} {
		if _, err := tr.Add(p, KindGroup, nil); err != nil {
			t.Fatal(err)
		}
	}
	cause := fmt.Errorf("bad: %w", ErrInvalid)
	tr.Skip("g", cause)
	tr.Skip("g", errors.New("second reason is dropped"))
	var got []string
	for _, s := range tr.Skipped() {
		got = append(got, s.Path)
	}
	if want := []string{"g", "g/a", "g/b/c"}; !slices.Equal(got, want) {
		t.Errorf("skipped %q, want %q (implicit g/b not listed)", got, want)
	}
	if s := tr.Skipped(); s[0].Err != cause || !errors.Is(s[1].Err, ErrParentSkipped) {
		t.Errorf("reasons %v", s)
	}
	if tr.Lookup("g") != nil || tr.Lookup("h") == nil {
		t.Error("Skip removed the wrong nodes")
	}
	for _, p := range []string{"g", "g/a", "g/new/x"} {
		if _, err := tr.Add(p, KindGroup, nil); !errors.Is(err, ErrParentSkipped) {
			t.Errorf("Add(%q) after skipping g: %v, want ErrParentSkipped", p, err)
		}
	}
	if _, err := tr.Add("gg", KindGroup, nil); err != nil {
		t.Errorf("Add(gg): %v (a sibling with a common prefix is not inside g)", err)
	}
}
