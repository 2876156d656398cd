package remote

import (
	"context"
	"fmt"
	"io"
	"net/url"
)

// Origin is one zarr store on the wire, as the rest of zarrfs sees it: the
// HTTP(S) Client today; S3 and GCS origins implement the same methods next to
// it. Keys are store-relative ("t2m/0.0"); every method is safe for
// concurrent use. Errors are the package's sentinels (ErrNotFound, which
// also matches io/fs.ErrNotExist, ErrUnauthorized, ErrForbidden,
// ErrUnreachable, ErrTLS, ErrNoListing, ErrNoManifest, ErrChanged,
// ErrRangesUnsupported) wrapped with context, or a *StatusError.
type Origin interface {
	// Get reads a small object whole (metadata documents), refusing one
	// larger than maxBytes.
	Get(ctx context.Context, key string, maxBytes int64) ([]byte, Object, error)
	// Fetch streams the whole object to w and returns its version (strong
	// ETag, or "" when the origin has none). If it fails after writing, the
	// caller discards what was written.
	Fetch(ctx context.Context, key string, w io.Writer) (version string, err error)
	// FetchIfChanged is Fetch unless the object still has version: then it
	// writes nothing and returns (version, false, nil).
	FetchIfChanged(ctx context.Context, key, version string, w io.Writer) (newVersion string, changed bool, err error)
	// FetchRange streams bytes [off, off+n) of the object at version ("":
	// any) to w; a different version fails with ErrChanged.
	FetchRange(ctx context.Context, key, version string, off, n int64, w io.Writer) (Piece, error)
	// FetchSuffix streams the last n bytes, learning size and version in
	// the same request.
	FetchSuffix(ctx context.Context, key, version string, n int64, w io.Writer) (Piece, error)
	// List returns the direct children of dir ("" is the store root), or
	// an error wrapping ErrNoListing when the origin cannot list.
	List(ctx context.Context, dir string) ([]DirEntry, error)
	// Manifest returns every key with size and version, or an error
	// wrapping ErrNoManifest when the origin keeps none.
	Manifest(ctx context.Context) (*Manifest, error)
	// RefreshManifest revalidates prev: changed is false when the store is
	// unchanged.
	RefreshManifest(ctx context.Context, prev *Manifest, prefix string) (m *Manifest, changed bool, err error)
	// Stats reports the traffic counters since the origin was opened.
	Stats() Stats
	// Close releases idle connections.
	Close()
}

var _ Origin = (*Client)(nil)

// Open returns the Origin for a store URL, chosen by its scheme.
func Open(rawURL string, opts Options) (Origin, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("store URL %q: %w", rawURL, err)
	}
	switch u.Scheme {
	case "http", "https":
		return New(rawURL, opts)
	}
	return nil, fmt.Errorf("store URL %q: unsupported scheme %q (use https:// or http://)", rawURL, u.Scheme)
}
