package vfs

import (
	"context"
	"fmt"
	"io"

	"github.com/zarrfs/zarrfs/remote"
)

// OriginSource lets the cache fetch whole objects and ranges of them from
// an origin. A range that comes back shorter or longer than asked means
// the object changed: it fails with remote.ErrChanged.
type OriginSource struct{ Origin remote.Origin }

func (s OriginSource) Fetch(ctx context.Context, key string, w io.Writer) (string, error) {
	return s.Origin.Fetch(ctx, key, w)
}

func (s OriginSource) FetchIfChanged(ctx context.Context, key, version string, w io.Writer) (string, bool, error) {
	return s.Origin.FetchIfChanged(ctx, key, version, w)
}

func (s OriginSource) FetchRange(ctx context.Context, key, version string, off, n int64, w io.Writer) error {
	p, err := s.Origin.FetchRange(ctx, key, version, off, n, w)
	if err == nil && p.Length != n {
		err = fmt.Errorf("fetch %s bytes %d-%d: got %d bytes of %d: %w", key, off, off+n-1, p.Length, p.Total, remote.ErrChanged)
	}
	return err
}
