package remote

import (
	"context"
	"io"
)

// FetchIfChanged is Fetch with "If-None-Match: version": it revalidates a
// cached copy of version. When the origin answers 304 Not Modified it
// writes nothing to w and returns (version, false, nil). Otherwise it
// streams the current object into w exactly as Fetch does (resuming a
// broken body only under the new strong ETag, never writing a byte twice)
// and returns (its strong ETag or "", true, nil). An empty version cannot
// be revalidated: the call is then a plain Fetch.
//
// If-None-Match uses weak comparison (RFC 9110, 13.1.2), so a server may
// answer 304 when its current ETag is W/"x" for a cached "x": it declares
// the two semantically equivalent. The client never asks for a transfer
// encoding (compression is off), so such a 304 still describes the bytes
// cached.
func (c *Client) FetchIfChanged(ctx context.Context, key, version string, w io.Writer) (newVersion string, changed bool, err error) {
	newVersion, notModified, err := c.fetch(ctx, key, version, w)
	if err != nil {
		return "", false, err
	}
	if notModified {
		return version, false, nil
	}
	return newVersion, true, nil
}
