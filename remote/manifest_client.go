package remote

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/klauspost/compress/zstd"
	"github.com/zarrfs/zarrfs/remote/wire"
)

// zstdMagic starts every zstd frame.
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// maxManifestWindow bounds the zstd window a server may make the client
// allocate (the server uses 1 MiB).
const maxManifestWindow = 32 << 20

// Manifest fetches the store's manifest from `zarrfs serve`. An origin
// without one gives an error wrapping ErrNoManifest: fall back to
// consolidated metadata or listings. Other errors (401, unreachable, a
// manifest the server could not complete: *ManifestServerError) are real
// failures. Transient failures are retried like any request; a broken
// transfer starts over.
func (c *Client) Manifest(ctx context.Context) (*Manifest, error) {
	m, _, err := c.fetchManifest(ctx, "", "")
	return m, err
}

// ManifestPrefix is Manifest restricted to the keys starting with prefix
// (for example "temperature/"). Keys stay relative to the store root.
func (c *Client) ManifestPrefix(ctx context.Context, prefix string) (*Manifest, error) {
	m, _, err := c.fetchManifest(ctx, prefix, "")
	return m, err
}

// RefreshManifest revalidates prev (from Manifest, with its prefix if any:
// pass the same prefix): if the store is unchanged it returns prev and
// changed=false after a 304 without transferring the listing; otherwise the
// new manifest and changed=true.
func (c *Client) RefreshManifest(ctx context.Context, prev *Manifest, prefix string) (m *Manifest, changed bool, err error) {
	etag := ""
	if prev != nil {
		etag = prev.ETag()
	}
	m, notModified, err := c.fetchManifest(ctx, prefix, etag)
	if err != nil {
		return nil, false, err
	}
	if notModified {
		return prev, false, nil
	}
	return m, true, nil
}

func (c *Client) fetchManifest(ctx context.Context, prefix, ifNoneMatch string) (m *Manifest, notModified bool, err error) {
	u := c.base + wire.ManifestPath
	if prefix != "" {
		u += "?prefix=" + url.QueryEscape(prefix)
	}
	err = c.retry(ctx, http.MethodGet, u, func(ctx context.Context, st *retryState) error {
		m, notModified = nil, false
		hdr := http.Header{"Accept": {wire.ContentType}}
		if ifNoneMatch != "" {
			hdr.Set("If-None-Match", ifNoneMatch)
		}
		resp, release, err := c.send(ctx, st, http.MethodGet, u, hdr)
		if err != nil {
			return err
		}
		defer release()
		switch resp.StatusCode {
		case http.StatusOK:
		case http.StatusNotModified:
			if ifNoneMatch == "" {
				return permanent(fmt.Errorf("GET %s: %w: 304 to a request without If-None-Match", u, ErrNoManifest))
			}
			notModified = true
			return nil
		case http.StatusNotFound, http.StatusGone, http.StatusMethodNotAllowed, http.StatusNotImplemented,
			http.StatusForbidden, http.StatusBadRequest:
			// 403 too: object stores answer it for a key that does not
			// exist. `zarrfs serve` answers it only when the store's
			// directory is unreadable, which the store's own keys report.
			_ = statusErrorOf(resp, u)
			return permanent(fmt.Errorf("GET %s: %w (the origin answered %s)", u, ErrNoManifest, resp.Status))
		default:
			return statusErrorOf(resp, u)
		}
		body := &recordingReader{r: resp.Body}
		got, err := ReadManifest(body)
		switch {
		case body.err != nil:
			return c.transportError(resp.Request.Context(), http.MethodGet, u, body.err)
		case errors.Is(err, errNotZstd):
			return permanent(fmt.Errorf("GET %s: %w: the origin answered 200 with content of type %q that is not a zarrfs manifest", u, ErrNoManifest, resp.Header.Get("Content-Type")))
		case err != nil:
			return permanent(fmt.Errorf("GET %s: %w", u, err))
		}
		m = got
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return m, notModified, nil
}

// errNotZstd: the body is not a zstd stream, so not a manifest.
var errNotZstd = fmt.Errorf("%w: not a zstd stream", ErrNoManifest)

// ReadManifest decodes a manifest response body (the zstd stream, as a
// captured response holds it). Its errors wrap ErrNoManifest (not a zstd
// stream, another format or version) or ErrBadManifest (a damaged stream),
// or are a *ManifestServerError or r's own read error.
func ReadManifest(r io.Reader) (*Manifest, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(len(zstdMagic))
	if !bytes.Equal(head, zstdMagic) {
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		return nil, errNotZstd
	}
	zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(maxManifestWindow))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	m, err := decodeManifest(zr)
	if err != nil {
		var se *ManifestServerError
		if errors.As(err, &se) || errors.Is(err, ErrNoManifest) || errors.Is(err, ErrBadManifest) {
			return nil, err
		}
		// A zstd error: the compressed stream itself is damaged (or r failed,
		// which the caller tells apart).
		return nil, fmt.Errorf("%w: %w", ErrBadManifest, err)
	}
	return m, nil
}
