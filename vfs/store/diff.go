package store

import (
	"bytes"
	"reflect"
	"sort"

	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/zarr"
)

// DiffManifests lists the keys added, removed or given a new version.
func DiffManifests(old, next *remote.Manifest) []string {
	var keys []string
	next.Keys(func(k string, size int64, version string) bool {
		if s, v, ok := old.Lookup(k); !ok || s != size || v != version {
			keys = append(keys, k)
		}
		return true
	})
	old.Keys(func(k string, _ int64, _ string) bool {
		if _, _, ok := next.Lookup(k); !ok {
			keys = append(keys, k)
		}
		return true
	})
	return keys
}

// SameDocs says whether the documents both versions fetched are equal.
func SameDocs(old, next map[string][]byte) bool {
	for k, v := range next {
		if w, ok := old[k]; ok && !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

// SameShape says whether two trees have the same nodes, each of the same
// kind and array metadata.
func SameShape(old, next *zarr.Tree) bool {
	return reflect.DeepEqual(treeShape(old), treeShape(next))
}

// nodeShape is what makes a node the same across versions.
type nodeShape struct {
	Kind  zarr.Kind
	Array *zarr.Array
}

func treeShape(t *zarr.Tree) map[string]nodeShape {
	out := map[string]nodeShape{}
	_ = t.Walk(func(n *zarr.Node) error {
		out[n.Path] = nodeShape{Kind: n.Kind, Array: n.Array}
		return nil
	})
	return out
}

// DiffTrees lists the node paths added, removed and changed (kind or array
// metadata), each sorted.
func DiffTrees(old, next *zarr.Tree) (added, removed, changed []string) {
	a, b := treeShape(old), treeShape(next)
	for p, s := range b {
		if o, ok := a[p]; !ok {
			added = append(added, p)
		} else if !reflect.DeepEqual(o, s) {
			changed = append(changed, p)
		}
	}
	for p := range a {
		if _, ok := b[p]; !ok {
			removed = append(removed, p)
		}
	}
	sort.Strings(added)
	sort.Strings(removed)
	sort.Strings(changed)
	return added, removed, changed
}
