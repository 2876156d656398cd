// Package store owns the model of one version of a zarr store as zarrfs
// serves it — its tree, the metadata documents fetched for it, the manifest
// when the origin keeps one — how that model is learnt from an origin
// (Discover), and how two versions differ (the diffs a refresh acts on).
// It must not know about files, handles, the kernel or the cache: it speaks
// only to an origin, through Origin.
package store

import (
	"context"
	"errors"

	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/zarr"
)

// Origin is what discovery and revalidation need from the remote store.
// Every remote.Origin satisfies it.
type Origin interface {
	Get(ctx context.Context, key string, maxBytes int64) ([]byte, remote.Object, error)
	List(ctx context.Context, dir string) ([]remote.DirEntry, error)
	// Manifest returns every key with size and version, or an error wrapping
	// remote.ErrNoManifest when the origin is not `zarrfs serve`.
	Manifest(ctx context.Context) (*remote.Manifest, error)
	// RefreshManifest revalidates prev: changed is false (after a 304) when
	// the store is unchanged.
	RefreshManifest(ctx context.Context, prev *remote.Manifest, prefix string) (m *remote.Manifest, changed bool, err error)
}

var _ Origin = remote.Origin(nil)

// MaxMetaBytes bounds one metadata document held in memory. Consolidated
// metadata of very large hierarchies can reach tens of MB; nothing legitimate
// comes near this.
const MaxMetaBytes = 256 << 20

// crawlParallelism bounds the metadata requests in flight while walking a
// store through its directory index.
const crawlParallelism = 16

// ErrNotZarr means the URL has none of the documents that make a zarr store root.
var ErrNotZarr = errors.New("not a zarr store")

// ErrNoStructure means the store is zarr but its tree cannot be learnt:
// it has no consolidated metadata and the origin lists no directories.
var ErrNoStructure = errors.New("store structure unknown")

// Store is what discovery learnt about a store: its tree, the metadata
// documents already fetched on the way (keyed by store-relative key), how
// the tree was found, and the origin's manifest when it serves one.
type Store struct {
	Tree   *zarr.Tree
	Docs   map[string][]byte
	Format int    // 2 or 3
	Source string // "manifest", "consolidated .zmetadata", "consolidated zarr.json" or "directory index"
	// Manifest, when non-nil, is authoritative for which keys exist and
	// their sizes and versions.
	Manifest *remote.Manifest
	// Skipped are the nodes left out because their metadata or names are
	// unusable (see skip.go), in the order found.
	Skipped []Skipped
}

// FromManifest builds the version of the store that manifest m lists,
// reusing the documents of reuse (read for the earlier manifest prev) whose
// version did not change.
func FromManifest(ctx context.Context, o Origin, m, prev *remote.Manifest, reuse map[string][]byte) (*Store, error) {
	s := &Store{Docs: map[string][]byte{}, Manifest: m}
	if err := fromManifestReusing(ctx, o, s, prev, reuse); err != nil {
		return nil, err
	}
	return s, nil
}
