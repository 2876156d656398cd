package serve

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
// their own (lock order in index.go). Manifest walks, index builds
// and encodes, the only work whose memory grows with the store, are bounded
// by a semaphore channel (manifestSlots).

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zarrfs/zarrfs/remote/wire"
	"golang.org/x/net/netutil"
)

// Config configures a Server.
type Config struct {
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
	cfg           Config
	root          *os.Root
	log           *slog.Logger
	manifestSlots chan struct{}
	now           func() time.Time
	indexes       *indexSet // manifest indexes (index.go)
}

// New opens cfg.Dir for serving. Close releases it.
func New(cfg Config) (*Server, error) {
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
		if seg != wire.ReservedSegment {
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
	h.Set("ETag", wire.FileETag(st))
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
