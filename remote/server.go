package remote

// The `zarrfs serve` HTTP server: a read-only origin for zarr stores.
//
// Every file is opened through an os.Root for the served directory, so no
// path (symlinks included) reaches outside it; request paths are checked
// before they get there (no "..", ".", empty, NUL or backslash segments, no
// encoded slashes). Files are answered by http.ServeContent with a strong
// ETag and Last-Modified, after the Range and If-Range headers have been
// brought in line with RFC 9110 where ServeContent is looser (see
// normalizeRange). The path segment ".zarrfs" is reserved for the server's
// own endpoints (the manifest) and never names a file.
//
// Concurrency: serving files takes no locks. The manifest's indexes have
// their own (lock order in manifest_index.go). Manifest walks, index builds
// and encodes, the only work whose memory grows with the store, are bounded
// by a semaphore channel (manifestSlots).

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"html"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/netutil"
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Dir is the served directory: one store, or a directory of stores.
	Dir string
	// Tokens are the accepted bearer tokens. Required unless NoAuth.
	Tokens *TokenSet
	// NoAuth serves without authentication. It must be asked for explicitly.
	NoAuth bool
	// Logger gets one access-log record per request (method, path, status,
	// bytes, duration; never a query string or a header) and server errors.
	// Nil discards.
	Logger *slog.Logger
	// MaxConns caps concurrent connections. Default 256.
	MaxConns int
	// ReadHeaderTimeout closes a connection whose request headers (or TLS
	// handshake) take longer. Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections. Default 2m.
	IdleTimeout time.Duration
	// ShutdownTimeout bounds the graceful shutdown: requests still running
	// after it are cut. Default 10s.
	ShutdownTimeout time.Duration
	// MaxManifestWalks caps concurrent manifest walks, index builds and
	// encodes (each holds the names of a directory or a store's index).
	// Default 2; others wait.
	MaxManifestWalks int
}

// Server serves a directory read-only over HTTP. It is an http.Handler;
// Serve runs it on a listener with the configured limits.
type Server struct {
	cfg           ServerConfig
	root          *os.Root
	log           *slog.Logger
	manifestSlots chan struct{}
	now           func() time.Time
	indexes       *indexSet // manifest indexes (manifest_index.go)
}

// NewServer opens cfg.Dir for serving. Close releases it.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("serve: no directory given")
	}
	if !cfg.NoAuth && (cfg.Tokens == nil || cfg.Tokens.Len() == 0) {
		return nil, errors.New("serve: no token given: pass a token file, or ask for --no-auth explicitly")
	}
	if cfg.NoAuth && cfg.Tokens != nil && cfg.Tokens.Len() > 0 {
		return nil, errors.New("serve: tokens given together with --no-auth: choose one")
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 256
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.MaxManifestWalks <= 0 {
		cfg.MaxManifestWalks = 2
	}
	root, err := os.OpenRoot(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:           cfg,
		root:          root,
		log:           log,
		manifestSlots: make(chan struct{}, cfg.MaxManifestWalks),
		now:           time.Now,
	}
	s.indexes = newIndexSet(s)
	s.indexes.startEager()
	return s, nil
}

// Close stops the manifest indexes and releases the served directory. Call
// it after Serve has returned.
func (s *Server) Close() error {
	s.indexes.close()
	return s.root.Close()
}

// Serve answers connections from ln until ctx ends, then shuts down
// gracefully: it stops accepting, lets requests in flight finish for up to
// ShutdownTimeout, and cuts the rest. With tlsConf it serves HTTPS (HTTP/2
// and HTTP/1.1), without it plain HTTP. It returns nil after a shutdown
// asked for by ctx.
func (s *Server) Serve(ctx context.Context, ln net.Listener, tlsConf *tls.Config) error {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	ln = netutil.LimitListener(ln, s.cfg.MaxConns)
	errc := make(chan error, 1)
	go func() {
		if tlsConf != nil {
			srv.TLSConfig = tlsConf.Clone()
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	shutdownErr := srv.Shutdown(sctx)
	if shutdownErr != nil {
		s.log.Warn("serve: requests still running at the end of the shutdown timeout were cut", "timeout", s.cfg.ShutdownTimeout)
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// reservedSegment is the path segment of the server's own endpoints.
const reservedSegment = ".zarrfs"

// ManifestPath is the manifest endpoint below a store's (or any served
// directory's) URL: GET <dir-url>/.zarrfs/manifest.
const ManifestPath = ".zarrfs/manifest"

// ServeHTTP answers one request: 405 for other methods than GET and HEAD,
// 400 for a credential in the URL or a path that could leave the directory,
// 401 without a valid token, then the manifest, a directory index (paths
// ending in /) or a file.
func (s *Server) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	start := s.now()
	w := &loggingWriter{ResponseWriter: rw}
	defer func() {
		// The escaped path keeps the record on one line; the query (where a
		// careless client might put a token) and headers are never logged.
		s.log.Info("request", "method", r.Method, "path", r.URL.EscapedPath(), "status", w.statusCode(),
			"bytes", w.bytes, "duration", s.now().Sub(start).Round(time.Microsecond), "remote", r.RemoteAddr)
	}()
	w.Header().Set("X-Content-Type-Options", "nosniff")

	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed: this server is read-only (GET and HEAD only)", http.StatusMethodNotAllowed)
		return
	}
	if queryHasCredential(r.URL.RawQuery) {
		http.Error(w, "400 bad request: credentials are accepted only in the Authorization: Bearer header, never in the URL", http.StatusBadRequest)
		return
	}
	if !s.cfg.NoAuth && !s.cfg.Tokens.AllowsRequest(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="zarrfs"`)
		http.Error(w, "401 unauthorized: send the token zarrfs serve printed as Authorization: Bearer TOKEN (zarrfs mount --token-file FILE)", http.StatusUnauthorized)
		return
	}
	segs, isDir, err := requestSegments(r.URL)
	if err != nil {
		http.Error(w, "400 bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	for i, seg := range segs {
		if seg != reservedSegment {
			continue
		}
		if i == len(segs)-2 && segs[i+1] == "manifest" && !isDir {
			s.serveManifest(w, r, strings.Join(segs[:i], "/"))
			return
		}
		http.NotFound(w, r)
		return
	}
	s.serveFile(w, r, segs, isDir)
}

// requestSegments splits a request path into checked segments. isDir says
// the path ends in a slash (or is the root).
func requestSegments(u *url.URL) (segs []string, isDir bool, err error) {
	p := u.Path
	if len(p) > 4096 {
		return nil, false, errors.New("path too long")
	}
	if !strings.HasPrefix(p, "/") {
		return nil, false, errors.New("path must start with /")
	}
	// An encoded slash or backslash would make the decoded path name other
	// segments than the client sent.
	if raw := strings.ToLower(u.RawPath); strings.Contains(raw, "%2f") || strings.Contains(raw, "%5c") {
		return nil, false, errors.New("encoded / or \\ in the path")
	}
	p = p[1:]
	if p == "" {
		return nil, true, nil
	}
	p, isDir = strings.CutSuffix(p, "/")
	segs = strings.Split(p, "/")
	for _, seg := range segs {
		switch {
		case seg == "":
			return nil, false, errors.New("empty path segment")
		case seg == "." || seg == "..":
			return nil, false, fmt.Errorf("%q path segment", seg)
		case strings.IndexByte(seg, 0) >= 0:
			return nil, false, errors.New("NUL byte in the path")
		case strings.IndexByte(seg, '\\') >= 0:
			return nil, false, errors.New("backslash in the path")
		}
	}
	return segs, isDir, nil
}

// openStatus maps an error from opening a path in the root to a status.
// Only permission problems and resource exhaustion are told apart from "not
// found": a permission error must not look like a missing chunk (which a
// zarr reader would silently read as fill values).
func openStatus(err error) int {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return http.StatusForbidden
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE), errors.Is(err, syscall.ENOMEM),
		errors.Is(err, syscall.EIO), errors.Is(err, syscall.EINTR), errors.Is(err, syscall.EAGAIN):
		return http.StatusServiceUnavailable
	}
	return http.StatusNotFound // missing, not a directory, symlink loop, escapes the root
}

func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, segs []string, isDir bool) {
	rel := "."
	if len(segs) > 0 {
		rel = strings.Join(segs, "/")
	}
	// O_NONBLOCK: opening a FIFO placed in the directory must not hang.
	f, err := s.root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		s.fail(w, r, openStatus(err), err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		s.fail(w, r, http.StatusServiceUnavailable, err)
		return
	}
	switch {
	case fi.IsDir() && isDir:
		s.serveIndex(w, r, f, segs)
		return
	case fi.IsDir():
		http.Error(w, "404 not found: a directory; its listing is at the same path with a trailing /", http.StatusNotFound)
		return
	case !fi.Mode().IsRegular() || isDir:
		http.NotFound(w, r)
		return
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		s.fail(w, r, http.StatusInternalServerError, errors.New("no stat information"))
		return
	}
	h := w.Header()
	h.Set("ETag", FileETag(st))
	h.Set("Content-Type", contentTypeOf(segs[len(segs)-1]))
	normalizeRangeHeaders(r, fi.Size(), fi.ModTime(), s.now())
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, code int, err error) {
	if code != http.StatusNotFound {
		s.log.Warn("serve: cannot open", "path", r.URL.EscapedPath(), "status", code, "error", err.Error())
	}
	http.Error(w, strconv.Itoa(code)+" "+http.StatusText(code), code)
}

// contentTypeOf names the media type; setting it also stops ServeContent
// from sniffing the content.
func contentTypeOf(name string) string {
	switch {
	case name == ".zarray", name == ".zgroup", name == ".zattrs", name == ".zmetadata", strings.HasSuffix(name, ".json"):
		return "application/json"
	}
	return "application/octet-stream"
}

// FileETag is the strong ETag `zarrfs serve` gives a file, as sent in the
// ETag header and in the manifest: a 64-bit FNV-1a hash of the inode
// number, size, modification time and change time (nanoseconds), in hex.
//
// Like nginx's (mtime, size) it changes whenever the file is rewritten in
// place; the inode catches a replacement by rename that keeps size and
// mtime (cp -p, rsync -t), and the change time, which no user can set,
// catches an in-place rewrite whose mtime was restored (touch -d, rsync
// --inplace -t). It may also change when nothing did (chmod, chown, a new
// hard link, restoring a backup): that costs one re-fetch, never wrong data.
// The device number is left out so that a reboot that renumbers devices
// does not invalidate every client's cache.
func FileETag(st *syscall.Stat_t) string {
	b := fileETag(st)
	return string(b[:])
}

func fileETag(st *syscall.Stat_t) [18]byte { return etagOfHash(etagHash(st)) }

// maxRanges bounds the ranges of one request; more are ignored (RFC 9110
// 14.2 lets a server ignore Range), which also defeats requests for many
// tiny overlapping ranges.
const maxRanges = 16

// normalizeRangeHeaders rewrites Range and If-Range where RFC 9110 asks more
// than http.ServeContent does, so ServeContent sees only cases it handles
// right:
//   - a Range of another unit than bytes (MUST ignore, 14.2), a malformed
//     one, or one with more than maxRanges ranges is ignored: full 200;
//   - If-Range with a date is honoured only when Last-Modified is at least
//     one second older than now, i.e. a strong validator (13.1.5);
//     otherwise the Range is ignored;
//   - a range set with no satisfiable range (every first-pos at or past the
//     end, or only zero-length suffixes; 14.1.1) becomes one ServeContent
//     answers with 416 and "Content-Range: bytes */size" (after it has
//     evaluated the preconditions, which come first);
//   - positions beyond int64 are clamped, not rejected;
//   - on an empty file no range can select a byte: ServeContent ignores
//     Range there (full 200, which 14.2 allows), and a suffix range is
//     dropped here for the same answer.
func normalizeRangeHeaders(r *http.Request, size int64, modtime, now time.Time) {
	rng := r.Header.Get("Range")
	if rng == "" {
		return
	}
	if ir := r.Header.Get("If-Range"); ir != "" && !strings.HasPrefix(ir, `"`) && !strings.HasPrefix(ir, "W/") {
		if _, err := http.ParseTime(ir); err != nil || !modtime.Before(now.Add(-time.Second)) {
			r.Header.Del("Range")
			r.Header.Del("If-Range")
			return
		}
	}
	out, ok := normalizeRange(rng, size)
	if !ok {
		r.Header.Del("Range")
		return
	}
	r.Header.Set("Range", out)
}

// normalizeRange returns a cleaned Range value for a representation of
// size bytes, or ok=false if the header is to be ignored.
func normalizeRange(h string, size int64) (string, bool) {
	unit, set, found := strings.Cut(h, "=")
	if !found || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return "", false
	}
	var (
		specs       []string
		n           int
		sawSpec     bool
		sawSuffixOn bool // a non-zero suffix range (relevant to empty files)
	)
	for spec := range strings.SplitSeq(set, ",") {
		spec = strings.Trim(spec, " \t")
		if spec == "" {
			continue // RFC 9110 list syntax allows empty elements
		}
		if n++; n > maxRanges {
			return "", false
		}
		sawSpec = true
		first, last, found := strings.Cut(spec, "-")
		if !found {
			return "", false
		}
		first, last = strings.Trim(first, " \t"), strings.Trim(last, " \t")
		if first == "" {
			suffix, ok := parsePos(last)
			if !ok {
				return "", false
			}
			if suffix == 0 {
				continue // unsatisfiable
			}
			sawSuffixOn = true
			specs = append(specs, "-"+strconv.FormatInt(min(suffix, max(size, 1)), 10))
			continue
		}
		a, ok := parsePos(first)
		if !ok {
			return "", false
		}
		b := int64(-1)
		if last != "" {
			if b, ok = parsePos(last); !ok || b < a {
				return "", false
			}
		}
		if a >= size {
			continue // unsatisfiable
		}
		if b < 0 {
			specs = append(specs, strconv.FormatInt(a, 10)+"-")
		} else {
			specs = append(specs, strconv.FormatInt(a, 10)+"-"+strconv.FormatInt(min(b, size-1), 10))
		}
	}
	switch {
	case !sawSpec:
		return "", false
	case size == 0 && sawSuffixOn:
		return "", false
	case len(specs) == 0:
		// ServeContent answers this one with 416 and Content-Range */size.
		return "bytes=" + strconv.FormatInt(size, 10) + "-", true
	}
	return "bytes=" + strings.Join(specs, ","), true
}

// parsePos parses 1*DIGIT, clamping values beyond int64.
func parsePos(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var v int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if v > (1<<63-1-9)/10 {
			v = 1<<63 - 1
			continue
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

// serveIndex lists a directory as HTML, streamed in batches so that a
// directory of a million chunks costs little memory. Entries come in
// directory order (clients sort). Symlinks are listed if they resolve
// inside the root; ".zarrfs" is not listed.
func (s *Server) serveIndex(w http.ResponseWriter, r *http.Request, dir *os.File, segs []string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	title := "/" + strings.Join(segs, "/")
	if len(segs) > 0 {
		title += "/"
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	fmt.Fprintf(bw, "<!doctype html>\n<meta charset=\"utf-8\">\n<title>%s</title>\n<h1>%s</h1>\n<pre>\n", html.EscapeString(title), html.EscapeString(title))
	if len(segs) > 0 {
		io.WriteString(bw, "<a href=\"../\">../</a>\n")
	}
	for {
		ents, err := dir.ReadDir(1024)
		for _, e := range ents {
			name := e.Name()
			if name == reservedSegment {
				continue
			}
			isDir := e.IsDir()
			switch t := e.Type(); {
			case t&fs.ModeSymlink != 0:
				fi, err := s.root.Stat(path.Join(append(append([]string(nil), segs...), name)...))
				if err != nil || !(fi.IsDir() || fi.Mode().IsRegular()) {
					continue // dangling, or it leads out of the served directory
				}
				isDir = fi.IsDir()
			case !t.IsDir() && !t.IsRegular():
				continue // FIFOs, sockets, devices are never served
			}
			href := url.PathEscape(name)
			if isDir {
				href += "/"
				name += "/"
			}
			fmt.Fprintf(bw, "<a href=\"%s\">%s</a>\n", html.EscapeString(href), html.EscapeString(name))
		}
		if err == io.EOF || len(ents) == 0 {
			break
		}
		if err != nil {
			s.log.Warn("serve: listing cut short", "path", r.URL.EscapedPath(), "error", err.Error())
			panic(http.ErrAbortHandler) // the client must not take a partial listing for the whole
		}
	}
	io.WriteString(bw, "</pre>\n")
	_ = bw.Flush()
}

// loggingWriter records the status and body bytes of a response for the
// access log. It keeps the io.ReaderFrom fast path (sendfile) of the
// underlying writer.
type loggingWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *loggingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *loggingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *loggingWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err := rf.ReadFrom(r)
		w.bytes += n
		return n, err
	}
	n, err := io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
	w.bytes += n
	return n, err
}

func (w *loggingWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *loggingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *loggingWriter) statusCode() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}
