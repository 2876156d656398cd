package remote

// Ranged reads: the part of the protocol that reads a piece of an object
// (an inner chunk of a v3 shard, a shard's index) without the rest. The
// design's rule (design.md §7): accept only a 206 whose Content-Range is
// exactly the range asked for, within the object's known total; a 200 means
// the server ignores ranges; a precondition on the version keeps the pieces
// of one object from two versions.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/zarrfs/zarrfs/remote/wire"
)

// ErrRangesUnsupported: the origin answered a range request with the whole
// object (200). The caller reads the object whole instead.
var ErrRangesUnsupported = errors.New("the origin does not serve byte ranges")

// Piece describes a ranged read: where the bytes lie and what they belong to.
type Piece struct {
	Offset int64  // first byte delivered
	Length int64  // bytes delivered
	Total  int64  // size of the whole object
	ETag   string // strong ETag of the object ("" if it sends none)
}

// FetchRange streams bytes [off, off+n) of key into w (fewer when the
// object ends first). version, when not empty, is the version the bytes
// must belong to: a strong ETag is sent as If-Match; a Last-Modified
// version (version.go) cannot be, so the 206's Last-Modified and total size
// are checked against it before anything is written. An object that
// changed fails with ErrChanged (nothing of the new version is written). A
// body that breaks is resumed from where it stopped under the same version,
// so w gets every byte once, in order. An offset at or past the end is a
// *StatusError with Code 416. The Piece's ETag is the version: the strong
// ETag, else the Last-Modified version, else "".
func (c *Client) FetchRange(ctx context.Context, key, version string, off, n int64, w io.Writer) (Piece, error) {
	if off < 0 || n <= 0 {
		return Piece{}, fmt.Errorf("fetch range of %s: offset %d and length %d: want offset >= 0 and length > 0", key, off, n)
	}
	return c.fetchPiece(ctx, key, version, off, n, w)
}

// FetchSuffix streams the last n bytes of key into w (the whole object
// when it is smaller) and says where they lie: one request learns a
// shard's size and reads its index at the end. version works as in
// FetchRange.
func (c *Client) FetchSuffix(ctx context.Context, key, version string, n int64, w io.Writer) (Piece, error) {
	if n <= 0 {
		return Piece{}, fmt.Errorf("fetch suffix of %s: length %d: want > 0", key, n)
	}
	return c.fetchPiece(ctx, key, version, -1, n, w)
}

// fetchPiece reads [off, off+n), or the last n bytes when off < 0.
func (c *Client) fetchPiece(ctx context.Context, key, version string, off, n int64, w io.Writer) (Piece, error) {
	if err := checkKey(key); err != nil {
		return Piece{}, err
	}
	u := c.URL(key)
	etag := version // the version the bytes must belong to, "" until known
	var (
		got     Piece
		written int64
		known   bool // got's range is known (after the first 206)
	)
	err := c.retry(ctx, http.MethodGet, u, func(ctx context.Context, st *retryState) error {
		var rng string
		switch {
		case known:
			if etag == "" {
				return permanent(fmt.Errorf("GET %s: body broke after %d bytes and the object has no strong ETag, so the range cannot be resumed safely", u, written))
			}
			rng = fmt.Sprintf("bytes=%d-%d", got.Offset+written, got.Offset+got.Length-1)
		case off < 0:
			rng = "bytes=-" + strconv.FormatInt(n, 10)
		default:
			rng = fmt.Sprintf("bytes=%d-%d", off, off+n-1)
		}
		hdr := http.Header{"Range": {rng}}
		if etag != "" && !IsModTimeVersion(etag) {
			hdr.Set("If-Match", etag)
		}
		resp, release, err := c.send(ctx, st, http.MethodGet, u, hdr)
		if err != nil {
			return err
		}
		defer release()
		switch resp.StatusCode {
		case http.StatusPartialContent:
		case http.StatusOK:
			return permanent(fmt.Errorf("GET %s with Range: %w (it sent the whole object)", u, ErrRangesUnsupported))
		case http.StatusPreconditionFailed:
			return permanent(fmt.Errorf("GET %s: %w: it is no longer version %s", u, ErrChanged, etag))
		default:
			return statusErrorOf(resp, u)
		}
		first, last, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok {
			return permanent(fmt.Errorf("GET %s: unusable Content-Range %q in a 206 answer", u, resp.Header.Get("Content-Range")))
		}
		if lm, size, ok := parseModTimeVersion(etag); ok {
			if !sameModTime(resp.Header, lm) || total != size {
				return permanent(fmt.Errorf("GET %s: %w: Last-Modified %q and size %d, want version %s",
					u, ErrChanged, resp.Header.Get("Last-Modified"), total, etag))
			}
		} else if tag := wire.StrongETag(resp.Header.Get("ETag")); etag == "" {
			etag = tag
			if etag == "" {
				etag = modTimeVersion(resp.Header, total, c.now())
			}
		} else if tag != "" && tag != etag {
			return permanent(fmt.Errorf("GET %s: %w: ETag %s, want %s", u, ErrChanged, tag, etag))
		}
		if !known {
			want := off
			if off < 0 {
				want = max(0, total-n)
			}
			wantLast := min(want+n, total) - 1
			if first != want || last != wantLast {
				return permanent(fmt.Errorf("GET %s: asked for %s of %d bytes, got Content-Range %q", u, rng, total, resp.Header.Get("Content-Range")))
			}
			got = Piece{Offset: first, Length: last - first + 1, Total: total}
			known = true
		} else if first != got.Offset+written || last != got.Offset+got.Length-1 || total != got.Total {
			return permanent(fmt.Errorf("GET %s: %w: resumed %s, got Content-Range %q", u, ErrChanged, rng, resp.Header.Get("Content-Range")))
		}
		want := last - first + 1
		m, err := c.readBody(st, resp, u, io.LimitReader(resp.Body, want), w)
		written += m
		switch {
		case err != nil:
			return err
		case m < want:
			return &transportError{method: http.MethodGet, url: u, retryable: true,
				cause: fmt.Errorf("range body ended after %d of %d bytes: %w", m, want, io.ErrUnexpectedEOF)}
		}
		return nil
	})
	if err != nil {
		return Piece{}, err
	}
	got.ETag = etag
	return got, nil
}
