package vfs

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/internal/storetest"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/vfs/store"
)

// manifestOrigin serves a directory's documents with a manifest of its
// files; every RefreshManifest reports a new manifest, of the same keys.
type manifestOrigin struct {
	storetest.DirOrigin
	keys []string
}

func (o *manifestOrigin) manifest() (*remote.Manifest, error) {
	b := remote.NewManifestBuilder()
	for _, k := range o.keys {
		if err := b.Add(k, 1, `"`+k+`"`); err != nil {
			return nil, err
		}
	}
	return b.Manifest()
}

func (o *manifestOrigin) Manifest(ctx context.Context) (*remote.Manifest, error) {
	return o.manifest()
}

func (o *manifestOrigin) RefreshManifest(ctx context.Context, prev *remote.Manifest, prefix string) (*remote.Manifest, bool, error) {
	m, err := o.manifest()
	return m, true, err
}

func (o *manifestOrigin) FetchSuffix(ctx context.Context, key, version string, n int64, w io.Writer) (remote.Piece, error) {
	return remote.Piece{}, remote.ErrRangesUnsupported
}

// TestRefreshOfAnUnchangedManifest: a manifest the origin reports as new
// but that names the same keys, sizes and versions (re-encoded, or a key
// added and removed again between two refreshes) is no change: the report
// says so and the view stays.
func TestRefreshOfAnUnchangedManifest(t *testing.T) {
	dir := t.TempDir()
	storetest.WriteReplacing(t, filepath.Join(dir, ".zgroup"), `{"zarr_format": 2}`)
	storetest.WriteReplacing(t, filepath.Join(dir, "a", ".zarray"), storetest.ZarrayDoc(2))
	o := &manifestOrigin{DirOrigin: storetest.DirOrigin{Root: dir}, keys: []string{".zgroup", "a/.zarray", "a/0", "a/1"}}
	st, err := store.Discover(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	f := New(st, o, nil, Options{Logger: slog.New(slog.DiscardHandler), AttrValid: time.Hour})
	t.Cleanup(f.Close)
	before := f.current()
	rep, err := f.Refresh(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Changed || f.current() != before {
		t.Errorf("refresh of a manifest with the same keys: changed %v, view replaced %v; want neither", rep.Changed, f.current() != before)
	}
}
