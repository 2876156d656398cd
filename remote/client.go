package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zarrfs/zarrfs/remote/wire"
)

// notFoundError is ErrNotFound's type: it matches io/fs.ErrNotExist so the
// cache package can recognise a missing object without importing remote.
type notFoundError struct{}

func (notFoundError) Error() string        { return "not found on the origin" }
func (notFoundError) Is(target error) bool { return target == fs.ErrNotExist }

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrNotFound: the origin answered 404 or 410. It matches fs.ErrNotExist.
	ErrNotFound error = notFoundError{}
	// ErrUnauthorized: the origin answered 401 (missing or wrong token).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden: the origin answered 403.
	ErrForbidden = errors.New("forbidden")
	// ErrUnreachable: the origin's name does not resolve, or no connection
	// could be made to it before the retry budget ran out.
	ErrUnreachable = errors.New("origin unreachable")
	// ErrTLS: the origin's certificate could not be verified, or it does not
	// speak TLS at all. Never retried.
	ErrTLS = errors.New("TLS verification failed")
	// ErrNotTLS: an https URL reached a server that does not speak TLS on
	// that port. It wraps ErrTLS.
	ErrNotTLS = fmt.Errorf("%w: the server does not speak TLS on this port", ErrTLS)
	// ErrNoListing: the directory URL does not serve an index this package
	// understands (or serves none).
	ErrNoListing = errors.New("no directory listing")
	// ErrChanged: the object changed while it was being read. Whatever was
	// written so far belongs to the old version and must be discarded.
	ErrChanged = errors.New("object changed while it was being read")
)

// StatusError reports an HTTP status the operation could not use. It also
// unwraps to ErrNotFound (404, 410), ErrUnauthorized (401) or ErrForbidden
// (403), so callers may branch on the sentinel alone.
type StatusError struct {
	Method, URL string
	Code        int
	Status      string // e.g. "500 Internal Server Error"

	retryAfter time.Duration // from a Retry-After header, 0 if none
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %s", e.Method, e.URL, e.Status)
}

func (e *StatusError) Unwrap() error {
	switch e.Code {
	case http.StatusNotFound, http.StatusGone:
		return ErrNotFound
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusForbidden:
		return ErrForbidden
	}
	return nil
}

// Options configures a Client. The zero value is usable.
type Options struct {
	// Token is sent as "Authorization: Bearer <token>" when non-empty. It is
	// never logged and never part of an error message.
	Token string
	// CACertFile is a PEM file of extra trusted CAs, added to the system
	// roots, for origins with a private CA.
	CACertFile string
	// Pin, "sha256:HEX" (the SHA-256 of the server's DER leaf certificate,
	// as `zarrfs serve` prints it), makes the client accept exactly that
	// certificate and no other, without checking host names or CAs. A
	// mismatch fails with a *PinMismatchError (ErrPinMismatch, ErrTLS).
	Pin string
	// RetryDeadline bounds the time one operation may spend waiting for the
	// origin, failing and retrying, stalls included, counted from its start
	// or from the last time it made progress (bytes delivered). An
	// operation that gives up on an origin that did not answer usably
	// (transport errors, stalls, 5xx, 429) marks it down (Health): later
	// operations then fail at once with ErrUnreachable while one probe at
	// a time checks it. Default 60s.
	RetryDeadline time.Duration
	// StallTimeout fails (and retries) an attempt whose connection setup,
	// response headers or body make no progress for this long, or for what
	// is left of RetryDeadline if that is shorter. Default 30s.
	StallTimeout time.Duration
	// MaxConnsPerHost bounds the connections to the origin. Default 64.
	MaxConnsPerHost int
	// UserAgent defaults to "zarrfs".
	UserAgent string
	// Logger gets retries at Debug and give-ups at Warn. Nil discards.
	Logger *slog.Logger
}

// Object describes a fetched object.
type Object struct {
	Size         int64
	ETag         string // the ETag header as sent (quotes and any W/ prefix kept), "" if none
	LastModified time.Time
}

// DirEntry is one direct child of a listed directory.
type DirEntry struct {
	Name  string
	IsDir bool
}

// Client reads one zarr store from an HTTP(S) origin. It is safe for
// concurrent use; one Client should live as long as the mount.
type Client struct {
	base string // store root URL, always ending in "/"
	opts Options
	log  *slog.Logger
	tr   *http.Transport
	hc   *http.Client

	counters Counters // traffic counters for Stats
	health   *Health  // whether the origin is known to be down

	// Replaced by tests to observe backoff without waiting.
	now    func() time.Time
	sleep  func(ctx context.Context, d time.Duration) error
	jitter func(max time.Duration) time.Duration
}

// New returns a Client for the store rooted at baseURL (http or https).
func New(baseURL string, opts Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("store URL %q: %w", baseURL, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("store URL %q: scheme must be http or https", baseURL)
	case u.Opaque != "" || u.Host == "":
		return nil, fmt.Errorf("store URL %q: want scheme://host[:port]/path", baseURL)
	case u.User != nil:
		// Do not echo the URL: it holds a credential.
		return nil, fmt.Errorf("store URL for %s: remove the user:password part; give a token with --token-file instead", u.Host)
	case u.RawQuery != "" || u.ForceQuery:
		return nil, fmt.Errorf("store URL for %s: remove the ?query part (a token belongs in --token-file, not in the URL)", u.Host)
	case u.Fragment != "" || strings.Contains(baseURL, "#"):
		return nil, fmt.Errorf("store URL %s: remove the #fragment part", u.Redacted())
	}
	if strings.ContainsFunc(opts.Token, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, errors.New("token contains whitespace or control characters: the token file must hold the token alone")
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
		if u.RawPath != "" {
			u.RawPath += "/"
		}
	}

	if opts.RetryDeadline <= 0 {
		opts.RetryDeadline = 60 * time.Second
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = 30 * time.Second
	}
	if opts.MaxConnsPerHost <= 0 {
		opts.MaxConnsPerHost = 64
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "zarrfs"
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.CACertFile != "" {
		pool, err := loadCAs(opts.CACertFile)
		if err != nil {
			return nil, err
		}
		tlsConf.RootCAs = pool
	}
	if opts.Pin != "" {
		if u.Scheme != "https" {
			return nil, fmt.Errorf("store URL %s: --pin needs an https:// URL", u.Redacted())
		}
		if err := pinTLSConfig(tlsConf, opts.Pin); err != nil {
			return nil, err
		}
	}
	dialer := &net.Dialer{Timeout: opts.StallTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConf,
		ForceAttemptHTTP2:     true, // a custom TLS config turns HTTP/2 off unless forced
		TLSHandshakeTimeout:   opts.StallTimeout,
		ResponseHeaderTimeout: opts.StallTimeout,
		ExpectContinueTimeout: time.Second,
		MaxConnsPerHost:       opts.MaxConnsPerHost,
		MaxIdleConnsPerHost:   opts.MaxConnsPerHost,
		MaxIdleConns:          opts.MaxConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		// Transparent gzip would make Content-Length, ranges and ETags refer
		// to the encoded bytes; chunks are compressed already.
		DisableCompression: true,
	}
	c := &Client{
		base:   u.String(),
		opts:   opts,
		log:    log,
		tr:     tr,
		hc:     &http.Client{Transport: tr},
		now:    time.Now,
		sleep:  sleepCtx,
		jitter: fullJitter,
	}
	c.health = NewHealth(func() time.Time { return c.now() })
	return c, nil
}

func loadCAs(file string) (*x509.CertPool, error) {
	pemData, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("CA certificate file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("CA certificate file %s: no PEM certificate found (want \"-----BEGIN CERTIFICATE-----\" blocks)", file)
	}
	return pool, nil
}

// Close closes idle connections. In-flight requests are not affected.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// URL returns the object URL for a store-relative slash path; each segment
// is path-escaped ("a b/.zarray" -> ".../a%20b/.zarray"). It does not
// validate the key; the request methods do.
func (c *Client) URL(key string) string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return c.base + strings.Join(segs, "/")
}

// checkKey rejects keys that would not name an object inside the store.
func checkKey(key string) error {
	if key == "" {
		return errors.New("empty store key")
	}
	for _, seg := range strings.Split(key, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("invalid store key %q: empty path segment", key)
		case seg == "." || seg == "..":
			return fmt.Errorf("invalid store key %q: %q segment", key, seg)
		case strings.IndexByte(seg, 0) >= 0:
			return fmt.Errorf("invalid store key %q: NUL byte", key)
		}
	}
	return nil
}

// Get reads a whole object into memory; it fails, naming the size, if the
// object is larger than maxBytes (which must be positive).
func (c *Client) Get(ctx context.Context, key string, maxBytes int64) ([]byte, Object, error) {
	if err := checkKey(key); err != nil {
		return nil, Object{}, err
	}
	if maxBytes <= 0 {
		return nil, Object{}, fmt.Errorf("get %s: maxBytes must be positive, got %d", key, maxBytes)
	}
	u := c.URL(key)
	var (
		data []byte
		obj  Object
	)
	err := c.retry(ctx, http.MethodGet, u, func(ctx context.Context, st *retryState) error {
		resp, release, err := c.send(ctx, st, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		defer release()
		if resp.StatusCode != http.StatusOK {
			return statusErrorOf(resp, u)
		}
		if resp.ContentLength > maxBytes {
			return permanent(fmt.Errorf("GET %s: object is %d bytes, more than the %d-byte limit", u, resp.ContentLength, maxBytes))
		}
		got, err := readLimited(resp.Body, resp.ContentLength, maxBytes)
		if errors.Is(err, errTooLarge) {
			return permanent(fmt.Errorf("GET %s: object is more than the %d-byte limit", u, maxBytes))
		}
		if err != nil {
			return c.transportError(resp.Request.Context(), http.MethodGet, u, err)
		}
		data = got
		obj = objectOf(resp, int64(len(got)))
		return nil
	})
	if err != nil {
		return nil, Object{}, err
	}
	return data, obj, nil
}

// errTooLarge: a body of unknown length went past the limit.
var errTooLarge = errors.New("body larger than the limit")

// readBlock is the unit a body of unknown length is read in.
const readBlock = 1 << 20

// readLimited reads a whole body of at most max bytes. A body of known
// length is read into one buffer of that size. One of unknown length
// (chunked) is read in blocks and joined at the end: growing one buffer by
// doubling would hold up to three times the limit while a hostile body runs
// past it, where blocks hold the limit at most and are dropped at once.
func readLimited(r io.Reader, length, max int64) ([]byte, error) {
	if length >= 0 {
		buf := make([]byte, length)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return buf, nil
	}
	var blocks [][]byte
	var total int64
	for {
		b := make([]byte, readBlock)
		n, err := io.ReadFull(r, b)
		total += int64(n)
		if total > max {
			return nil, errTooLarge
		}
		if n > 0 {
			blocks = append(blocks, b[:n])
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	out := make([]byte, 0, total)
	for _, b := range blocks {
		out = append(out, b...)
	}
	return out, nil
}

func objectOf(resp *http.Response, size int64) Object {
	obj := Object{Size: size, ETag: resp.Header.Get("ETag")}
	if lm := resp.Header.Get("Last-Modified"); lm != "" {
		if t, err := http.ParseTime(lm); err == nil {
			obj.LastModified = t
		}
	}
	return obj
}

// Fetch streams the whole object into w and returns its version: the strong
// ETag (as sent, with quotes), else a Last-Modified version (version.go),
// else "" if the origin gave neither.
//
// If the body breaks after n bytes reached w and the object has a strong
// ETag, Fetch continues with "Range: bytes=n-" and "If-Range: <etag>", so w
// receives every byte exactly once, in order. A resume answered with the
// whole object (200), or a 206 whose Content-Range does not continue at n
// with the original total, fails with ErrChanged: the caller must discard
// what it got. Without a strong ETag a break after bytes were written fails
// with the transport error; Fetch never writes the object twice into w.
func (c *Client) Fetch(ctx context.Context, key string, w io.Writer) (version string, err error) {
	version, _, err = c.fetch(ctx, key, "", w)
	return version, err
}

// fetch is Fetch, and with prev set a conditional GET (If-None-Match, or
// If-Modified-Since for a Last-Modified version): a 304 writes nothing and
// returns notModified. A resume after a break is guarded by If-Range alone:
// the precondition on the old version no longer applies.
func (c *Client) fetch(ctx context.Context, key, prev string, w io.Writer) (version string, notModified bool, err error) {
	if err := checkKey(key); err != nil {
		return "", false, err
	}
	u := c.URL(key)
	var (
		written int64
		etag    string           // strong ETag of the version being written, "" if none
		size    int64       = -1 // total size of that version, -1 while unknown
		first   http.Header      // the headers of the answer that started the body
		at      time.Time        // when it came
	)
	err = c.retry(ctx, http.MethodGet, u, func(ctx context.Context, st *retryState) error {
		var hdr http.Header
		switch {
		case written > 0:
			hdr = http.Header{
				"Range":    {"bytes=" + strconv.FormatInt(written, 10) + "-"},
				"If-Range": {etag},
			}
		case IsModTimeVersion(prev):
			if lm, _, ok := parseModTimeVersion(prev); ok {
				hdr = http.Header{"If-Modified-Since": {lm.UTC().Format(http.TimeFormat)}}
			}
		case prev != "":
			hdr = http.Header{"If-None-Match": {prev}}
		}
		resp, release, err := c.send(ctx, st, http.MethodGet, u, hdr)
		if err != nil {
			return err
		}
		defer release()
		if written == 0 {
			switch {
			case resp.StatusCode == http.StatusNotModified && hdr != nil:
				_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
				notModified = true
				return nil
			case resp.StatusCode != http.StatusOK:
				return statusErrorOf(resp, u)
			}
			etag = wire.StrongETag(resp.Header.Get("ETag"))
			size = resp.ContentLength
			first, at = resp.Header, c.now()
		} else if err := checkResume(resp, u, written, etag, &size); err != nil {
			if errors.Is(err, ErrChanged) {
				return permanent(err)
			}
			return err
		}

		n, err := c.readBody(st, resp, u, resp.Body, w)
		written += n
		terr, broke := err.(*transportError)
		switch {
		case broke && written > 0 && etag == "":
			terr.cause = fmt.Errorf("body broke after %d bytes and the object has no strong ETag, so it cannot be resumed safely: %w", written, terr.cause)
			return permanent(terr)
		case err != nil:
			return err
		case size >= 0 && written != size:
			// The transport reports short bodies itself; this guards the rest.
			return &transportError{method: http.MethodGet, url: u, retryable: etag != "" || written == 0,
				cause: fmt.Errorf("body ended after %d of %d bytes: %w", written, size, io.ErrUnexpectedEOF)}
		}
		return nil
	})
	if err != nil {
		return "", false, err
	}
	if notModified {
		return prev, true, nil
	}
	if etag != "" {
		return etag, false, nil
	}
	return modTimeVersion(first, written, at), false, nil
}

// checkResume accepts only a 206 that continues the version being written
// at exactly offset written; size is learnt from it if still unknown.
func checkResume(resp *http.Response, u string, written int64, etag string, size *int64) error {
	changed := func(format string, args ...any) error {
		return fmt.Errorf("GET %s: %w: %s", u, ErrChanged, fmt.Sprintf(format, args...))
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		return changed("resuming at byte %d, the origin sent the whole object (new version, or ranges not supported)", written)
	case http.StatusRequestedRangeNotSatisfiable:
		return changed("resuming at byte %d, the origin answered %s", written, resp.Status)
	default:
		return statusErrorOf(resp, u)
	}
	start, end, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
	switch {
	case !ok:
		return changed("unusable Content-Range %q in the resumed response", resp.Header.Get("Content-Range"))
	case start != written || end != total-1:
		return changed("asked for bytes %d- but got Content-Range %q", written, resp.Header.Get("Content-Range"))
	case *size >= 0 && total != *size:
		return changed("size changed from %d to %d bytes", *size, total)
	case resp.ContentLength >= 0 && resp.ContentLength != end-start+1:
		return changed("Content-Length %d does not match Content-Range %q", resp.ContentLength, resp.Header.Get("Content-Range"))
	}
	if got := resp.Header.Get("ETag"); got != "" && got != etag {
		return changed("ETag changed from %s to %s", etag, got)
	}
	*size = total
	return nil
}

// parseContentRange parses "bytes first-last/total" (total must be known).
func parseContentRange(s string) (first, last, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	first, err1 = strconv.ParseInt(strings.TrimSpace(a), 10, 64)
	last, err2 = strconv.ParseInt(strings.TrimSpace(b), 10, 64)
	total, err3 = strconv.ParseInt(strings.TrimSpace(tot), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || first < 0 || last < first || total <= last {
		return 0, 0, 0, false
	}
	return first, last, total, true
}

// writeError marks a failure of the caller's writer, which is never retried.
type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// readBody copies body (resp's, or a limit of it) into w, noting progress
// for the stall watchdog. A failure of w is permanent (another attempt
// cannot help); a broken body comes back as the *transportError itself,
// unwrapped, for the caller to qualify.
func (c *Client) readBody(st *retryState, resp *http.Response, u string, body io.Reader, w io.Writer) (int64, error) {
	if wb, ok := resp.Body.(*watchedBody); ok {
		wb.payload = true // its bytes are progress
	}
	n, err := copyBody(w, body)
	if n > 0 {
		st.progressed()
	}
	var we writeError
	switch {
	case errors.As(err, &we):
		return n, permanent(fmt.Errorf("GET %s: writing the body: %w", u, we.err))
	case err != nil:
		return n, c.transportError(resp.Request.Context(), http.MethodGet, u, err)
	}
	return n, nil
}

// copyBody copies r to w, telling the caller's write errors (writeError)
// apart from the network's read errors.
func copyBody(w io.Writer, r io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			wn, werr := w.Write(buf[:n])
			total += int64(wn)
			if werr == nil && wn < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return total, writeError{werr}
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// List returns the direct children of dir ("" = the store root), sorted by
// name, from the origin's HTML or JSON directory index. Origins that do not
// list directories give ErrNoListing. Dotfiles may be missing from an index
// (nginx never lists them): request metadata documents by name.
func (c *Client) List(ctx context.Context, dir string) ([]DirEntry, error) {
	dir = strings.TrimSuffix(dir, "/")
	u := c.base
	if dir != "" {
		if err := checkKey(dir); err != nil {
			return nil, err
		}
		u = c.URL(dir) + "/"
	}
	var entries []DirEntry
	err := c.retry(ctx, http.MethodGet, u, func(ctx context.Context, st *retryState) error {
		hdr := http.Header{"Accept": {"text/html, application/xhtml+xml, application/json;q=0.9, */*;q=0.1"}}
		resp, release, err := c.send(ctx, st, http.MethodGet, u, hdr)
		if err != nil {
			return err
		}
		defer release()
		switch resp.StatusCode {
		case http.StatusOK:
		case http.StatusNotFound, http.StatusForbidden, http.StatusMethodNotAllowed, http.StatusGone:
			return permanent(fmt.Errorf("list %s: %w: the origin answered %s (consolidate the store's metadata with zarr.consolidate_metadata, or publish it with zarrfs serve)", u, ErrNoListing, resp.Status))
		default:
			return statusErrorOf(resp, u)
		}
		body := &recordingReader{r: io.LimitReader(resp.Body, maxListingBytes)}
		got, err := ParseIndex(resp.Request.URL, resp.Header.Get("Content-Type"), body)
		if body.err != nil {
			return c.transportError(resp.Request.Context(), http.MethodGet, u, body.err)
		}
		if err != nil {
			return permanent(fmt.Errorf("list %s: %w", u, err))
		}
		entries = got
		return nil
	})
	if err != nil {
		return nil, err
	}
	return entries, nil
}

// maxListingBytes bounds one index page (about ten million entries).
const maxListingBytes = 1 << 30

// recordingReader remembers the first read error other than io.EOF, so a
// broken connection is not mistaken for a malformed index.
type recordingReader struct {
	r   io.Reader
	err error
}

func (r *recordingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}
