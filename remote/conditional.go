package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
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
	if version == "" {
		v, err := c.Fetch(ctx, key, w)
		return v, true, err
	}
	if err := checkKey(key); err != nil {
		return "", false, err
	}
	u := c.URL(key)
	var (
		written     int64
		etag        string      // strong ETag of the version being written, "" if none
		size        int64  = -1 // total size of that version, -1 while unknown
		notModified bool
	)
	err = c.retry(ctx, http.MethodGet, u, func(ctx context.Context, st *retryState) error {
		hdr := http.Header{"If-None-Match": {version}}
		if written > 0 {
			// Resuming the new version: If-Range guards it, and the
			// precondition on the old version no longer applies.
			hdr = http.Header{
				"Range":    {"bytes=" + strconv.FormatInt(written, 10) + "-"},
				"If-Range": {etag},
			}
		}
		resp, release, err := c.send(ctx, http.MethodGet, u, hdr)
		if err != nil {
			return err
		}
		defer release()
		if written == 0 {
			switch resp.StatusCode {
			case http.StatusNotModified:
				_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
				notModified = true
				return nil
			case http.StatusOK:
			default:
				return statusErrorOf(resp, u)
			}
			etag = strongETag(resp.Header.Get("ETag"))
			size = resp.ContentLength
		} else if err := checkResume(resp, u, written, etag, &size); err != nil {
			if errors.Is(err, ErrChanged) {
				return permanent(err)
			}
			return err
		}

		n, err := copyBody(w, resp.Body)
		written += n
		if n > 0 {
			st.progressed()
		}
		var we writeError
		switch {
		case errors.As(err, &we):
			return permanent(fmt.Errorf("GET %s: writing the body: %w", u, we.err))
		case err != nil:
			terr := c.transportError(resp.Request.Context(), http.MethodGet, u, err)
			if written > 0 && etag == "" {
				terr.cause = fmt.Errorf("body broke after %d bytes and the object has no strong ETag, so it cannot be resumed safely: %w", written, terr.cause)
				return permanent(terr)
			}
			return terr
		case size >= 0 && written != size:
			return &transportError{method: http.MethodGet, url: u, retryable: etag != "" || written == 0,
				cause: fmt.Errorf("body ended after %d of %d bytes: %w", written, size, io.ErrUnexpectedEOF)}
		}
		return nil
	})
	switch {
	case err != nil:
		return "", false, err
	case notModified:
		return version, false, nil
	}
	return etag, true, nil
}
