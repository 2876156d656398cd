package integration

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/internal/testutil"
)

// originRequest is one request the Go origin answered.
type originRequest struct {
	Method string
	Path   string // URL path, decoded
	Range  string
	Status int
	Bytes  int64 // body bytes written
}

// origin is an in-process HTTP(S) origin serving a directory with net/http's FileServer, like
// any static web server: Range requests, directory listings (HTML, dotfiles included) and a
// strong ETag per file. It records every request so tests can count what the mount fetched.
//
// Lock order: mu guards log only; it is never held while serving.
type origin struct {
	dir        string
	srv        *httptest.Server
	files      http.Handler
	token      string                    // when set, requests need "Authorization: Bearer <token>"
	status     func(r *http.Request) int // when it returns non-zero, answer that status instead
	delays     map[string]time.Duration  // by URL path: wait before answering
	noListings bool                      // directory URLs answer 404, as object stores do
	mu         sync.Mutex
	log        []originRequest
	inFlight   int // requests being answered, not yet in log; guarded by mu
	useTLS     bool
	caPEM      string // PEM file of the origin's self-signed certificate, when serving HTTPS
}

type originOption func(*origin)

// withToken makes the origin demand a bearer token (401 otherwise).
func withToken(token string) originOption { return func(o *origin) { o.token = token } }

// withStatus answers f(r) instead of serving when it returns non-zero.
func withStatus(f func(r *http.Request) int) originOption { return func(o *origin) { o.status = f } }

// withoutListings makes every directory URL a 404, so only consolidated metadata can tell the
// tree (like an object store with listing denied).
func withoutListings() originOption { return func(o *origin) { o.noListings = true } }

// withDelay holds answers for urlPath for d, so concurrent readers overlap for sure.
func withDelay(urlPath string, d time.Duration) originOption {
	return func(o *origin) { o.delays[urlPath] = d }
}

// withTLS serves HTTPS with httptest's self-signed certificate, written to o.caPEM.
func withTLS() originOption { return func(o *origin) { o.useTLS = true } }

// newOrigin serves dir on 127.0.0.1 until the test ends.
func newOrigin(t testing.TB, dir string, opts ...originOption) *origin {
	t.Helper()
	o := &origin{dir: dir, files: http.FileServer(http.Dir(dir)), delays: map[string]time.Duration{}}
	for _, opt := range opts {
		opt(o)
	}
	o.srv = httptest.NewUnstartedServer(o)
	// Handshakes a test makes fail on purpose (untrusted TLS) would otherwise log to stderr.
	o.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if o.useTLS {
		o.srv.StartTLS()
		cert := o.srv.TLS.Certificates[0]
		o.caPEM = filepath.Join(t.TempDir(), "origin-ca.pem")
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
		if err := os.WriteFile(o.caPEM, pemBytes, 0o644); err != nil {
			t.Fatal(err)
		}
	} else {
		o.srv.Start()
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("origin %s served %d requests; last ones:\n%s", o.srv.URL, len(o.requests()), o.summary(40))
		}
		o.srv.CloseClientConnections()
		o.srv.Close()
	})
	return o
}

// URL is the origin's URL for a path below its directory ("" for the root).
func (o *origin) URL(sub string) string {
	return o.srv.URL + "/" + strings.TrimPrefix(sub, "/")
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
	o.mu.Lock()
	o.inFlight++
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		o.inFlight--
		o.log = append(o.log, originRequest{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range"), Status: cw.status, Bytes: cw.bytes})
		o.mu.Unlock()
	}()
	if o.token != "" && r.Header.Get("Authorization") != "Bearer "+o.token {
		cw.Header().Set("WWW-Authenticate", `Bearer realm="zarrfs-test"`)
		http.Error(cw, "401 unauthorized: a bearer token is required", http.StatusUnauthorized)
		return
	}
	if o.status != nil {
		if code := o.status(r); code != 0 {
			http.Error(cw, http.StatusText(code), code)
			return
		}
	}
	if d := o.delays[r.URL.Path]; d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	local := filepath.Join(o.dir, filepath.FromSlash(path.Clean("/"+r.URL.Path)))
	fi, err := os.Stat(local)
	if err == nil && fi.IsDir() && o.noListings {
		http.NotFound(cw, r)
		return
	}
	if err == nil && fi.Mode().IsRegular() {
		// A strong validator, as nginx and object stores send, so ranged reads can be pinned.
		cw.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.ModTime().UnixNano(), fi.Size()))
	}
	o.files.ServeHTTP(cw, r)
}

type countingWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (c *countingWriter) WriteHeader(code int) {
	c.status = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.bytes += int64(n)
	return n, err
}

// settle waits (at most timeout) until no request is being answered and none
// has been logged for a quiet spell, and returns how many are logged: a
// client killed mid-request leaves requests to finish and be logged after it
// died, some still unread in socket buffers when the others are done.
func (o *origin) settle(timeout time.Duration) int {
	const quiet = 500 * time.Millisecond
	deadline := time.Now().Add(timeout)
	last, since := -1, time.Now()
	for {
		o.mu.Lock()
		n, busy := len(o.log), o.inFlight
		o.mu.Unlock()
		if n != last || busy > 0 {
			last, since = n, time.Now()
		}
		if time.Since(since) >= quiet || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (o *origin) requests() []originRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]originRequest(nil), o.log...)
}

// count is the number of requests with the given method ("" for any) for urlPath, or for
// anything below it when urlPath names a directory.
func (o *origin) count(method, urlPath string) int {
	n := 0
	for _, r := range o.requests() {
		if (method == "" || r.Method == method) && (r.Path == urlPath || strings.HasPrefix(r.Path, strings.TrimSuffix(urlPath, "/")+"/")) {
			n++
		}
	}
	return n
}

func (o *origin) summary(last int) string {
	reqs := o.requests()
	if len(reqs) > last {
		reqs = reqs[len(reqs)-last:]
	}
	var b strings.Builder
	for _, r := range reqs {
		fmt.Fprintf(&b, "  %s %s range=%q -> %d (%d bytes)\n", r.Method, r.Path, r.Range, r.Status, r.Bytes)
	}
	return b.String()
}

// closedPortURL is an http URL on 127.0.0.1 where nothing listens.
func closedPortURL(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + "/store.zarr"
}

const nginxBin = "/usr/sbin/nginx"

// nginxOrigin is a real nginx serving a directory with autoindex on, which (unlike the Go
// origin) never lists dotfiles and sends no Accept-Ranges on 206 replies.
type nginxOrigin struct {
	base      string
	prefix    string
	accessLog string
}

const nginxConf = `# written by zarrfs integration tests
%s
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
events { worker_connections 256; }
http {
    access_log %[2]s/access.log;
    client_body_temp_path %[2]s/client_body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    types { application/json json; text/html html; }
    default_type application/octet-stream;
    sendfile on;
    server {
        listen %[3]s;
        root %[4]s;
        location / { autoindex on; }
    }
}
`

// newNginx starts nginx serving root on a free loopback port until the test ends.
func newNginx(t testing.TB, root string) *nginxOrigin {
	t.Helper()
	nginxReady.require(t)
	prefix := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	user := ""
	if os.Geteuid() == 0 {
		// Workers would otherwise run as nobody and could not read the 0700 test temp dirs.
		user = "user root;"
	}
	conf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, user, prefix, addr, root)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nginxBin, "-p", prefix, "-e", filepath.Join(prefix, "error.log"), "-c", conf, "-g", "daemon off;")
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // so its workers can be ended with it
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	n := &nginxOrigin{base: "http://" + addr, prefix: prefix, accessLog: filepath.Join(prefix, "access.log")}
	t.Cleanup(func() {
		pgid := cmd.Process.Pid
		for _, step := range []struct {
			sig  syscall.Signal
			wait time.Duration
		}{{syscall.SIGQUIT, 5 * time.Second}, {syscall.SIGTERM, 5 * time.Second}, {syscall.SIGKILL, 5 * time.Second}} {
			_ = syscall.Kill(-pgid, step.sig)
			select {
			case <-done:
				if t.Failed() {
					t.Logf("nginx output: %s\nerror.log:\n%s", out.String(), tail(filepath.Join(prefix, "error.log"), 30))
				}
				return
			case <-time.After(step.wait):
			}
		}
		t.Errorf("nginx (pid %d) did not exit", pgid)
	})
	// Wait (bounded) until it accepts connections or exits.
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return n
		}
		select {
		case <-done:
			t.Fatalf("nginx exited at start: %s\n%s", out.String(), tail(filepath.Join(prefix, "error.log"), 30))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not listen on %s within 15s: %s", addr, out.String())
		}
	}
}

func (n *nginxOrigin) URL(sub string) string { return n.base + "/" + strings.TrimPrefix(sub, "/") }

// requestCount is the number of access-log lines (requests nginx answered).
func (n *nginxOrigin) requestCount() int {
	b, _ := os.ReadFile(n.accessLog)
	return strings.Count(string(b), "\n")
}

func tail(file string, lines int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// runCmd runs a command with a bound, returning combined output and the exit code (-1 when it
// could not run or was killed at the bound).
func runCmd(t testing.TB, timeout time.Duration, env []string, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = env
	}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out) + fmt.Sprintf("\n[killed after %v]", timeout), -1
	}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		}
		return string(out) + "\n" + err.Error(), -1
	}
	return string(out), 0
}
