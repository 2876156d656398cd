package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/zarrfs/zarrfs/vfs/store"
	"github.com/zarrfs/zarrfs/zarr"
)

// FuzzDiscoverConsolidated: whatever consolidated metadata a store holds,
// discovery never panics; it fails only for an unusable root (ErrBadRoot,
// or a v3 root without consolidated metadata and no listing), and otherwise
// mounts a tree whose every name can be a file name, with every node left
// out reported with a reason and absent from the tree.
func FuzzDiscoverConsolidated(f *testing.F) {
	zmeta := `{"zarr_consolidated_format":1,"metadata":{".zgroup":{"zarr_format":2},"good/.zarray":` + goodV2 +
		`,"zero/.zarray":{"zarr_format":2,"shape":[4],"chunks":[0],"dtype":"<i2"},"../x/.zarray":` + goodV2 +
		`,"g/.zgroup":"{","g/a/.zarray":` + goodV2 + `,"a\\b/.zattrs":{}}}`
	f.Add([]byte(zmeta), false)
	f.Add([]byte(`{"zarr_consolidated_format":1,"metadata":{".zarray":`+goodV2+`,"a/.zgroup":{"zarr_format":2}}}`), false)
	f.Add([]byte(`{"zarr_consolidated_format":1,"metadata":{`), false)
	v3 := `{"zarr_format":3,"node_type":"group","consolidated_metadata":{"kind":"inline","metadata":{"good":` + goodV3 +
		`,"g":{"zarr_format":3,"node_type":"group","consolidated_metadata":{"kind":"inline","metadata":{"x":` + goodV3 + `}}}` +
		`,"bad":{"zarr_format":3,"node_type":"array"},"/abs":` + goodV3 + `,"a/../b":` + goodV3 + `}}}`
	f.Add([]byte(v3), true)
	f.Add([]byte(goodV3), true)
	f.Add([]byte(groupV3), true)
	f.Fuzz(func(t *testing.T, doc []byte, v3 bool) {
		key := ".zmetadata"
		if v3 {
			key = "zarr.json"
		}
		s, err := store.Discover(context.Background(), &memOrigin{files: map[string]string{key: string(doc)}})
		if err != nil {
			if !errors.Is(err, store.ErrBadRoot) && !(v3 && errors.Is(err, store.ErrNoStructure)) {
				t.Fatalf("discovery failed with %v; want ErrBadRoot", err)
			}
			return
		}
		skipped := map[string]bool{}
		for _, k := range s.Skipped {
			if k.Path == "" || k.Problem == "" {
				t.Fatalf("skipped node without a path or a problem: %+v", k)
			}
			skipped[k.Path] = true
		}
		_ = s.Tree.Walk(func(n *zarr.Node) error {
			if n.Path != "" && !fileName(n.Name) {
				t.Fatalf("tree holds %q, named %q", n.Path, n.Name)
			}
			if skipped[n.Path] {
				t.Fatalf("node %q is both in the tree and left out", n.Path)
			}
			return nil
		})
	})
}

// fileName reports whether name can be one directory entry of the mount,
// checked here on its own rather than by the validator under test.
func fileName(name string) bool {
	return name != "" && name != "." && name != ".." && len(name) <= 255 &&
		!strings.ContainsAny(name, "/\\\x00") && !zarr.IsMetadataName(name)
}
