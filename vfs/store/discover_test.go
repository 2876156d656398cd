package store_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/zarrfs/zarrfs/internal/storetest"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/vfs/store"
	"github.com/zarrfs/zarrfs/zarr"
)

const fixtures = "../../../shared/fixtures"

// nodesOnDisk lists the group and array paths of a store directory, by the
// metadata documents present, as the ground truth for discovery.
func nodesOnDisk(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch d.Name() {
		case ".zarray", ".zgroup", "zarr.json":
			rel, _ := filepath.Rel(root, filepath.Dir(p))
			if rel == "." {
				rel = ""
			}
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return uniq(out)
}

func uniq(s []string) []string {
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func treePaths(t *zarr.Tree) []string {
	var out []string
	var walk func(n *zarr.Node)
	walk = func(n *zarr.Node) {
		out = append(out, n.Path)
		for _, name := range n.ChildNames() {
			walk(n.Children[name])
		}
	}
	walk(t.Root())
	sort.Strings(out)
	return out
}

func TestDiscoverFixtures(t *testing.T) {
	cases := []struct {
		store      string
		listing    bool
		hideDots   bool
		wantSource string
		wantFormat int
		// wantGets, when set, is the exact number of documents requested:
		// a consolidated store must cost one round of requests, not a walk.
		wantGets int64
	}{
		{"zarr-python-2.13/fixture", true, false, "directory index", 2, 0},
		{"zarr-python-2.13/fixture", true, true, "directory index", 2, 0},
		{"zarrita/v2/data.zarr", false, false, "consolidated .zmetadata", 2, 1},
		{"zarrita/v3/data.zarr", true, false, "directory index", 3, 0},
		{"zarrita/v3/data.zarr", true, true, "directory index", 3, 0},
		{"zarrita/v3/data.zarr/consolidated", false, false, "consolidated zarr.json", 3, 2},
		{"zarr-python-2.13/fixture/flat", false, false, ".zarray (array at the root)", 2, 5},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/listing=%v/hideDots=%v", tc.store, tc.listing, tc.hideDots), func(t *testing.T) {
			root := filepath.Join(fixtures, tc.store)
			o := &storetest.DirOrigin{Root: root, Listing: tc.listing, HideDots: tc.hideDots}
			s, err := store.Discover(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if s.Source != tc.wantSource || s.Format != tc.wantFormat {
				t.Errorf("source %q format %d, want %q %d", s.Source, s.Format, tc.wantSource, tc.wantFormat)
			}
			if tc.wantGets > 0 && (o.Gets.Load() != tc.wantGets || o.Lists.Load() != 0) {
				t.Errorf("discovery made %d GETs and %d listings, want %d and 0", o.Gets.Load(), o.Lists.Load(), tc.wantGets)
			}
			got, want := treePaths(s.Tree), nodesOnDisk(t, root)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("tree has %d nodes, disk has %d\ngot  %q\nwant %q", len(got), len(want), got, want)
			}
			// Every metadata file the tree claims must exist, and every one on
			// disk must be claimed.
			var walk func(n *zarr.Node)
			walk = func(n *zarr.Node) {
				for _, m := range n.MetaFiles {
					if _, err := os.Stat(filepath.Join(root, n.Path, m)); err != nil {
						t.Errorf("tree claims %s/%s: %v", n.Path, m, err)
					}
				}
				for _, m := range []string{".zarray", ".zgroup", ".zattrs", "zarr.json", ".zmetadata"} {
					if _, err := os.Stat(filepath.Join(root, n.Path, m)); err == nil && !contains(n.MetaFiles, m) {
						t.Errorf("tree misses %s", path.Join(n.Path, m))
					}
				}
				for _, c := range n.Children {
					walk(c)
				}
			}
			walk(s.Tree.Root())
		})
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestDiscoverFailures(t *testing.T) {
	empty := t.TempDir()
	cases := []struct {
		name   string
		origin *storetest.DirOrigin
		want   error
	}{
		{"not a store", &storetest.DirOrigin{Root: empty, Listing: true}, store.ErrNotZarr},
		{"no consolidation, no listing", &storetest.DirOrigin{Root: filepath.Join(fixtures, "zarr-python-2.13/fixture")}, store.ErrNoStructure},
		{"v3 no consolidation, no listing", &storetest.DirOrigin{Root: filepath.Join(fixtures, "zarrita/v3/data.zarr")}, store.ErrNoStructure},
		{"401 stops discovery", &storetest.DirOrigin{Root: empty, Status: map[string]error{".zmetadata": remote.ErrUnauthorized}}, remote.ErrUnauthorized},
		// The origin lists its directories, so a Discover that took the 503 for "no
		// consolidated metadata" would go on to crawl the store and succeed: the 503 must
		// fail it, as the 503 itself (the mount then fails rather than serving a store
		// discovered without its consolidated metadata).
		{"5xx is not 'absent'", &storetest.DirOrigin{Root: filepath.Join(fixtures, "zarrita/v2/data.zarr"), Listing: true, Status: map[string]error{".zmetadata": &remote.StatusError{Method: "GET", URL: ".zmetadata", Code: 503, Status: "503 Service Unavailable"}}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := store.Discover(context.Background(), tc.origin)
			if err == nil {
				t.Fatal("discovery succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if st := tc.origin.Status[".zmetadata"]; tc.want == nil && st != nil {
				var se *remote.StatusError
				if !errors.As(err, &se) || se != st {
					t.Errorf("got %v, want the origin's answer %v", err, st)
				}
				if errors.Is(err, fs.ErrNotExist) {
					t.Errorf("got %v, which reads as absent (fs.ErrNotExist)", err)
				}
			}
		})
	}
}

// A store that discovers fine with its listing must discover fine: the 503 case above
// relies on it (its failure must come from the 503, not from the store).
func TestDiscoverListedWithoutZMetadata(t *testing.T) {
	o := &storetest.DirOrigin{Root: filepath.Join(fixtures, "zarrita/v2/data.zarr"), Listing: true,
		Status: map[string]error{".zmetadata": fmt.Errorf("GET .zmetadata: %w", remote.ErrNotFound)}}
	if _, err := store.Discover(context.Background(), o); err != nil {
		t.Fatalf("Discover of a listed store without .zmetadata: %v", err)
	}
}
