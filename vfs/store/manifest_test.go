package store_test

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/serve"
	"github.com/zarrfs/zarrfs/vfs/store"
)

// TestDiscoverFromManifest serves each fixture store with the real
// `zarrfs serve` handler and discovers it through the real client: the tree
// must come from the manifest alone (no listing, no consolidated metadata
// needed) and match the directories on disk.
func TestDiscoverFromManifest(t *testing.T) {
	for _, storeDir := range []string{"zarr-python-2.13/fixture", "zarrita/v2/data.zarr", "zarrita/v3/data.zarr"} {
		t.Run(storeDir, func(t *testing.T) {
			root := filepath.Join(fixtures, storeDir)
			srv, err := serve.New(serve.Config{Dir: root, NoAuth: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Close() })
			hs := httptest.NewServer(srv)
			t.Cleanup(hs.Close)
			c, err := remote.New(hs.URL, remote.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			o := &noListing{Client: c}

			s, err := store.Discover(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if s.Source != "manifest" || s.Manifest == nil {
				t.Fatalf("source %q, manifest %v", s.Source, s.Manifest != nil)
			}
			if o.lists > 0 {
				t.Errorf("discovery with a manifest listed %d directories", o.lists)
			}
			got, want := treePaths(s.Tree), nodesOnDisk(t, root)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("tree has %d nodes, disk has %d\ngot  %q\nwant %q", len(got), len(want), got, want)
			}
		})
	}
}

// noListing is a real client whose directory listings are counted, to prove
// the manifest makes them unnecessary.
type noListing struct {
	*remote.Client
	lists int
}

func (o *noListing) List(ctx context.Context, dir string) ([]remote.DirEntry, error) {
	o.lists++
	return o.Client.List(ctx, dir)
}
