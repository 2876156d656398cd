package main

// The control socket: a running mount daemon answers commands (stats,
// prefetch, refresh) as JSON over HTTP on a unix socket that only its user
// can reach. The CLI finds the socket of a mount from its mountpoint through
// the fusefs.ControlXattr attribute of the mount root.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zarrfs/zarrfs/fusefs"
)

// controlSocketPath is where the daemon using cacheDir listens. The cache
// directory is locked by one daemon at a time, so the path is unique to a
// live mount. It lives in a private per-user directory because a unix socket
// path must stay under 108 bytes, which a deep cache directory may not.
func controlSocketPath(cacheDir string) (string, error) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("zarrfs-%d", os.Getuid()))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("control socket directory: %w", err)
	}
	// Refuse a directory someone else planted (or a symlink) in a shared /tmp.
	st, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("control socket directory: %w", err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !st.IsDir() || !ok || int(sys.Uid) != os.Getuid() || st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("control socket directory %s is not a private directory of this user: remove it", dir)
	}
	sum := sha256.Sum256([]byte(cacheDir))
	return filepath.Join(dir, hex.EncodeToString(sum[:8])+".sock"), nil
}

// controlServer serves the control API of one mount.
type controlServer struct {
	path string
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
}

func startControl(path string, mux *http.ServeMux, log *slog.Logger) (*controlServer, error) {
	_ = os.Remove(path) // a socket left by a daemon that died; the cache lock says it is ours
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	c := &controlServer{
		path: path,
		ln:   ln,
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		done: make(chan struct{}),
	}
	go func() {
		defer close(c.done)
		if err := c.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("control socket stopped", "err", err)
		}
	}()
	return c, nil
}

func (c *controlServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.srv.Shutdown(ctx)
	<-c.done
	_ = os.Remove(c.path)
}

// controlMux is the daemon's control API over a live session.
func controlMux(sess *session) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, struct {
			mountStats
			PID int `json:"pid"`
		}{sess.Stats(), os.Getpid()})
	})
	mux.HandleFunc("POST /v1/refresh", func(w http.ResponseWriter, r *http.Request) {
		// The report carries any error: the mount keeps serving either way.
		rep, _ := sess.Refresh(r.Context())
		writeJSON(w, rep)
	})
	registerPrefetch(mux, sess) // prefetch.go
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// controlClient talks to the daemon serving the mount at mnt.
type controlClient struct {
	mnt string
	hc  *http.Client
}

func dialControl(mnt string) (*controlClient, error) {
	buf := make([]byte, 4096)
	n, err := unix.Getxattr(mnt, fusefs.ControlXattr, buf)
	if err != nil {
		if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) {
			return nil, fmt.Errorf("%s is not a zarrfs mount (or its daemon is older than this command)", mnt)
		}
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%s does not exist: give the mountpoint of a zarrfs mount", mnt)
		}
		if errors.Is(err, unix.ENOTCONN) {
			return nil, fmt.Errorf("%s is a dead mount (its daemon exited): clean it with zarrfs unmount --lazy %s", mnt, mnt)
		}
		return nil, fmt.Errorf("find the daemon of %s: %w", mnt, err)
	}
	sock := string(buf[:n])
	// No client-wide timeout: each command bounds its own wait with a
	// context (a refresh may retry the origin for a minute or more).
	hc := &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		},
	}
	return &controlClient{mnt: mnt, hc: hc}, nil
}

// getJSON fetches a control endpoint into v.
func (c *controlClient) getJSON(ctx context.Context, path string, v any) error {
	return c.call(ctx, http.MethodGet, path, v)
}

// call sends a bodiless request to a control endpoint and decodes the JSON answer into v.
func (c *controlClient) call(ctx context.Context, method, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://zarrfs"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("ask the daemon of %s: %w", c.mnt, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("daemon of %s: %s: %s", c.mnt, resp.Status, msg)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
