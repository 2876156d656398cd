package store_test

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/internal/storetest"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/serve"
	"github.com/zarrfs/zarrfs/vfs/store"
	"github.com/zarrfs/zarrfs/zarr"
)

// manifestOf writes files (key -> content, "" removes) into dir, serves it
// with the `zarrfs serve` handler and returns its manifest. Files not named
// keep their version.
func manifestOf(t *testing.T, dir string, files map[string]string) *remote.Manifest {
	t.Helper()
	for k, v := range files {
		p := filepath.Join(dir, filepath.FromSlash(k))
		if v == "" {
			_ = os.Remove(p)
			continue
		}
		storetest.WriteReplacing(t, p, v)
	}
	srv, err := serve.New(serve.Config{Dir: dir, NoAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	client, err := remote.New(hs.URL, remote.Options{RetryDeadline: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	m, err := client.Manifest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDiffManifests(t *testing.T) {
	base := map[string]string{".zgroup": `{"zarr_format": 2}`, "a/.zarray": "x", "a/0": "0", "a/1": "1", "b/0": "b"}
	tests := []struct {
		name   string
		change map[string]string // "" removes
		want   []string
	}{
		{"nothing", nil, nil},
		{"rewritten, same size", map[string]string{"a/0": "9"}, []string{"a/0"}},
		{"rewritten, new size", map[string]string{"a/1": "1234"}, []string{"a/1"}},
		{"added", map[string]string{"a/2": "2", "c/.zarray": "y"}, []string{"a/2", "c/.zarray"}},
		{"removed", map[string]string{"b/0": "", "a/1": ""}, []string{"a/1", "b/0"}},
		{"all at once", map[string]string{"a/0": "9", "a/2": "2", "b/0": ""}, []string{"a/0", "a/2", "b/0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			old := manifestOf(t, dir, base)
			next := manifestOf(t, dir, tc.change)
			got := store.DiffManifests(old, next)
			sort.Strings(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("diffManifests = %q, want %q", got, tc.want)
			}
			if back := store.DiffManifests(next, old); len(back) != len(tc.want) {
				t.Errorf("the reverse diff has %d keys, want %d", len(back), len(tc.want))
			}
		})
	}
}

func TestDiffTrees(t *testing.T) {
	arr := func(n int) *zarr.Array {
		a, err := zarr.ParseZArray([]byte(storetest.ZarrayDoc(n)))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	type node struct {
		path string
		kind zarr.Kind
		size int // array length, for arrays
	}
	build := func(nodes []node) *zarr.Tree {
		tr := zarr.NewTree()
		if _, err := tr.Add("", zarr.KindGroup, nil, ".zgroup"); err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			var a *zarr.Array
			meta := ".zgroup"
			if n.kind == zarr.KindArray {
				a, meta = arr(n.size), ".zarray"
			}
			if _, err := tr.Add(n.path, n.kind, a, meta); err != nil {
				t.Fatal(err)
			}
		}
		return tr
	}
	base := []node{{"g", zarr.KindGroup, 0}, {"g/x", zarr.KindArray, 4}, {"y", zarr.KindArray, 2}}
	tests := []struct {
		name                    string
		next                    []node
		added, removed, changed []string
	}{
		{"same", base, nil, nil, nil},
		{"same shape, parsed again", []node{{"g", zarr.KindGroup, 0}, {"g/x", zarr.KindArray, 4}, {"y", zarr.KindArray, 2}}, nil, nil, nil},
		{"array added", append(slices.Clone(base), node{"g/z", zarr.KindArray, 1}), []string{"g/z"}, nil, nil},
		{"group removed with its array", []node{{"y", zarr.KindArray, 2}}, nil, []string{"g", "g/x"}, nil},
		{"array reshaped", []node{{"g", zarr.KindGroup, 0}, {"g/x", zarr.KindArray, 8}, {"y", zarr.KindArray, 2}}, nil, nil, []string{"g/x"}},
		{"group became an array", []node{{"g", zarr.KindArray, 3}, {"y", zarr.KindArray, 2}}, nil, []string{"g/x"}, []string{"g"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			added, removed, changed := store.DiffTrees(build(base), build(tc.next))
			for _, c := range []struct {
				what      string
				got, want []string
			}{{"added", added, tc.added}, {"removed", removed, tc.removed}, {"changed", changed, tc.changed}} {
				if !slices.Equal(c.got, c.want) {
					t.Errorf("%s: %q, want %q", c.what, c.got, c.want)
				}
			}
		})
	}
}
