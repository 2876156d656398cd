package remote

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The cache package depends on this exact method set.
var _ interface {
	Fetch(ctx context.Context, key string, w io.Writer) (version string, err error)
} = (*Client)(nil)

// fakeClock replaces the client's clock and sleep so backoff is observable
// and retry budgets are spent without waiting.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	waits []time.Duration
}

func (f *fakeClock) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.waits = append(f.waits, d)
	f.mu.Unlock()
	return ctx.Err()
}

func (f *fakeClock) recorded() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.waits...)
}

// newFakeTimeClient returns a client whose backoff waits are the full
// ceiling (no randomness) and cost no real time.
func newFakeTimeClient(t *testing.T, base string, opts Options) (*Client, *fakeClock) {
	t.Helper()
	c, err := New(base, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	c.now, c.sleep = clk.now, clk.sleep
	c.jitter = func(ceiling time.Duration) time.Duration { return ceiling }
	return c, clk
}

// scripted serves the i-th request with handlers[i] (the last one repeats)
// and counts requests.
type scripted struct {
	n        atomic.Int32
	handlers []http.HandlerFunc
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i := int(s.n.Add(1)) - 1
	s.handlers[min(i, len(s.handlers)-1)](w, r)
}

func status(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { http.Error(w, http.StatusText(code), code) }
}

func body(etag, data string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if etag != "" {
			w.Header().Set("ETag", etag)
		}
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(data))
	}
}

func TestGetRetriesTransientStatuses(t *testing.T) {
	h := &scripted{handlers: []http.HandlerFunc{status(503), status(503), body(`"v1"`, "payload")}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c, clk := newFakeTimeClient(t, srv.URL, Options{})

	data, obj, err := c.Get(context.Background(), "g/.zarray", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "payload" || obj.Size != 7 || obj.ETag != `"v1"` {
		t.Errorf("got %q %+v", data, obj)
	}
	if n := h.n.Load(); n != 3 {
		t.Errorf("requests = %d, want 3", n)
	}
	if w := clk.recorded(); len(w) != 2 || w[0] != backoffBase || w[1] != 2*backoffBase {
		t.Errorf("waits = %v, want [100ms 200ms]", w)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	tests := []struct {
		name       string
		retryAfter string
		wantWait   time.Duration
	}{
		{"seconds", "2", 2 * time.Second},
		{"capped", "3600", retryAfterCap},
		{"garbage means backoff", "soon", backoffBase},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &scripted{handlers: []http.HandlerFunc{
				func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Retry-After", tt.retryAfter)
					status(429)(w, r)
				},
				body("", "ok"),
			}}
			srv := httptest.NewServer(h)
			defer srv.Close()
			c, clk := newFakeTimeClient(t, srv.URL, Options{RetryDeadline: time.Hour})
			if _, _, err := c.Get(context.Background(), "k", 100); err != nil {
				t.Fatal(err)
			}
			if w := clk.recorded(); len(w) != 1 || w[0] != tt.wantWait {
				t.Errorf("waits = %v, want [%v]", w, tt.wantWait)
			}
		})
	}
}

func TestRetryAfterBeyondBudgetGivesUp(t *testing.T) {
	h := &scripted{handlers: []http.HandlerFunc{func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "20")
		status(429)(w, r)
	}}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c, _ := newFakeTimeClient(t, srv.URL, Options{RetryDeadline: 5 * time.Second})
	_, _, err := c.Get(context.Background(), "k", 100)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 429 {
		t.Fatalf("err = %v, want a 429 StatusError", err)
	}
	if n := h.n.Load(); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
}

func TestServerErrorUntilDeadline(t *testing.T) {
	h := &scripted{handlers: []http.HandlerFunc{status(500)}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	// Waits at full ceiling: 0.1+0.2+0.4+0.8+1.6+3.2 = 6.3s, the next 5s
	// wait would end past 10s, so the 7th attempt is the last.
	c, clk := newFakeTimeClient(t, srv.URL, Options{RetryDeadline: 10 * time.Second})
	_, err := c.Fetch(context.Background(), "a/0.0", io.Discard)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 500 {
		t.Fatalf("err = %v, want a 500 StatusError", err)
	}
	if n := h.n.Load(); n != 7 {
		t.Errorf("requests = %d, want 7", n)
	}
	if !strings.Contains(err.Error(), "7 attempts") || !strings.Contains(err.Error(), "500 Internal Server Error") {
		t.Errorf("error %q should give the attempt count and the last cause", err)
	}
	var total time.Duration
	for _, w := range clk.recorded() {
		if w > backoffCap {
			t.Errorf("wait %v exceeds the cap", w)
		}
		total += w
	}
	if total > 10*time.Second {
		t.Errorf("waited %v in all, budget was 10s", total)
	}
}

func TestStatusesNotRetried(t *testing.T) {
	tests := []struct {
		code     int
		sentinel error
	}{
		{404, ErrNotFound},
		{410, ErrNotFound},
		{401, ErrUnauthorized},
		{403, ErrForbidden},
		{416, nil},
		{400, nil},
		{501, nil},
	}
	ops := map[string]func(c *Client) error{
		"Get": func(c *Client) error { _, _, err := c.Get(context.Background(), "a/b", 100); return err },
		"Fetch": func(c *Client) error {
			_, err := c.Fetch(context.Background(), "a/b", io.Discard)
			return err
		},
	}
	for _, tt := range tests {
		for opName, op := range ops {
			t.Run(http.StatusText(tt.code)+"/"+opName, func(t *testing.T) {
				h := &scripted{handlers: []http.HandlerFunc{status(tt.code), body("", "must not get here")}}
				srv := httptest.NewServer(h)
				defer srv.Close()
				c, _ := newFakeTimeClient(t, srv.URL, Options{})
				err := op(c)
				if n := h.n.Load(); n != 1 {
					t.Errorf("requests = %d, want exactly 1", n)
				}
				var se *StatusError
				if !errors.As(err, &se) || se.Code != tt.code {
					t.Fatalf("err = %v, want StatusError %d", err, tt.code)
				}
				if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
					t.Errorf("err = %v, want errors.Is %v", err, tt.sentinel)
				}
				if want := "GET " + srv.URL + "/a/b: "; !strings.HasPrefix(err.Error(), want) {
					t.Errorf("err = %q, want prefix %q", err, want)
				}
			})
		}
	}
}

func TestNotFoundIsFSNotExist(t *testing.T) {
	srv := httptest.NewServer(status(404))
	defer srv.Close()
	c, _ := newFakeTimeClient(t, srv.URL, Options{})
	_, err := c.Fetch(context.Background(), "x/0.0", io.Discard)
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrNotFound) {
		t.Errorf("err = %v, want ErrNotFound and fs.ErrNotExist", err)
	}
	if errors.Is(ErrForbidden, fs.ErrNotExist) {
		t.Error("ErrForbidden must not match fs.ErrNotExist")
	}
}

// hijackWrite sends raw bytes on the connection and closes it abruptly.
func hijackWrite(t *testing.T, w http.ResponseWriter, raw string) {
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		t.Error(err)
		return
	}
	buf.WriteString(raw)
	buf.Flush()
	conn.Close()
}

func TestConnectionResetMidHeadersRetried(t *testing.T) {
	var h *scripted
	h = &scripted{handlers: []http.HandlerFunc{
		func(w http.ResponseWriter, r *http.Request) { hijackWrite(t, w, "HTTP/1.1 200 OK\r\nContent-Le") },
		func(w http.ResponseWriter, r *http.Request) { hijackWrite(t, w, "") },
		body("", "metadata"),
	}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c, _ := newFakeTimeClient(t, srv.URL, Options{})
	data, _, err := c.Get(context.Background(), ".zgroup", 100)
	if err != nil || string(data) != "metadata" {
		t.Fatalf("Get = %q, %v", data, err)
	}
	if n := h.n.Load(); n != 3 {
		t.Errorf("requests = %d, want 3", n)
	}
}

func TestGetSizeLimit(t *testing.T) {
	payload := strings.Repeat("x", 100)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"content-length", body("", payload), "100 bytes"},
		{"chunked", func(w http.ResponseWriter, r *http.Request) {
			w.(http.Flusher).Flush() // no Content-Length
			io.WriteString(w, payload)
		}, "more than the 50-byte limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &scripted{handlers: []http.HandlerFunc{tt.handler}}
			srv := httptest.NewServer(h)
			defer srv.Close()
			c, _ := newFakeTimeClient(t, srv.URL, Options{})
			_, _, err := c.Get(context.Background(), "big", 50)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to mention %q", err, tt.want)
			}
			if n := h.n.Load(); n != 1 {
				t.Errorf("requests = %d, want 1", n)
			}
			if data, _, err := c.Get(context.Background(), "big", 100); err != nil || string(data) != payload {
				t.Errorf("at the limit: %d bytes, %v", len(data), err)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	const token = "s3cr3t-T0ken-value"
	for _, tok := range []string{token, ""} {
		t.Run("token="+tok, func(t *testing.T) {
			var got []string
			var mu sync.Mutex
			h := &scripted{handlers: []http.HandlerFunc{
				func(w http.ResponseWriter, r *http.Request) {
					mu.Lock()
					got = append(got, r.Header.Get("Authorization"))
					mu.Unlock()
					w.Header().Set("Retry-After", "0")
					status(503)(w, r)
				},
			}}
			srv := httptest.NewServer(h)
			defer srv.Close()
			var logBuf strings.Builder
			c, _ := newFakeTimeClient(t, srv.URL, Options{Token: tok, RetryDeadline: time.Second, Logger: newTestLogger(&logBuf)})
			_, _, err := c.Get(context.Background(), "k", 10)
			if err == nil {
				t.Fatal("want an error")
			}
			want := ""
			if tok != "" {
				want = "Bearer " + tok
			}
			for _, g := range got {
				if g != want {
					t.Errorf("Authorization = %q, want %q", g, want)
				}
			}
			if len(got) < 2 {
				t.Errorf("only %d requests seen", len(got))
			}
			if strings.Contains(err.Error(), token) || strings.Contains(logBuf.String(), token) {
				t.Errorf("token leaked: error %q, log %q", err, logBuf.String())
			}
			if logBuf.Len() == 0 {
				t.Error("retries were not logged")
			}
		})
	}
}

func TestNewRejectsBadURLs(t *testing.T) {
	tests := []struct {
		url, wantMsg, secret string
	}{
		{"ftp://h/store", "http or https", ""},
		{"https://alice:hunter2@h/store", "--token-file", "hunter2"},
		{"https://h/store?token=abc123", "--token-file", "abc123"},
		{"https://h/store#frag", "fragment", ""},
		{"https:///store", "host", ""},
		{"h/store", "http or https", ""},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			_, err := New(tt.url, Options{})
			if err == nil {
				t.Fatal("want an error")
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.wantMsg)
			}
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Errorf("err = %q leaks the credential", err)
			}
		})
	}
	if _, err := New("https://h/s", Options{Token: "two words"}); err == nil || strings.Contains(err.Error(), "words") {
		t.Errorf("token with a space: err = %v", err)
	}
}

func TestURLEscaping(t *testing.T) {
	tests := []struct{ base, key, want string }{
		{"http://h/store", "a b/.zarray", "http://h/store/a%20b/.zarray"},
		{"http://h/store/", "x/c/0/1", "http://h/store/x/c/0/1"},
		{"http://h", "q#h/0", "http://h/q%23h/0"},
		{"http://h/", "pct%/a?b", "http://h/pct%25/a%3Fb"},
		{"https://h:8443/my%20store", "é/0.0", "https://h:8443/my%20store/%C3%A9/0.0"},
	}
	for _, tt := range tests {
		c, err := New(tt.base, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.URL(tt.key); got != tt.want {
			t.Errorf("New(%q).URL(%q) = %q, want %q", tt.base, tt.key, got, tt.want)
		}
	}

	var gotPath string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath = r.URL.Path
		io.WriteString(w, "{}")
	}))
	defer srv.Close()
	c, _ := newFakeTimeClient(t, srv.URL+"/my store", Options{})
	if _, _, err := c.Get(context.Background(), "a b/.zarray", 10); err != nil {
		t.Fatal(err)
	}
	if gotPath != "/my store/a b/.zarray" {
		t.Errorf("server saw path %q", gotPath)
	}
	for _, bad := range []string{"", "../etc/passwd", "a//b", "/a", "a/./b", "a/"} {
		if _, _, err := c.Get(context.Background(), bad, 10); err == nil {
			t.Errorf("Get(%q) accepted an invalid key", bad)
		}
	}
}

func writeCertPEM(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "ca.pem")
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestTLS(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "secure")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the rejected handshakes are expected
	srv.StartTLS()
	defer srv.Close()
	caFile := writeCertPEM(t, srv)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	tests := []struct {
		name, url, ca string
		wantTLSErr    bool
	}{
		{"unknown authority", srv.URL, "", true},
		{"trusted private CA", srv.URL, caFile, false},
		{"hostname mismatch", "https://localhost:" + port, caFile, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newFakeTimeClient(t, tt.url, Options{CACertFile: tt.ca})
			data, _, err := c.Get(context.Background(), "k", 100)
			if !tt.wantTLSErr {
				if err != nil || string(data) != "secure" {
					t.Fatalf("Get = %q, %v", data, err)
				}
				return
			}
			if !errors.Is(err, ErrTLS) {
				t.Fatalf("err = %v, want ErrTLS", err)
			}
			if strings.Contains(err.Error(), "attempts") {
				t.Errorf("TLS failure was retried: %v", err)
			}
		})
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("handler hits = %d, want 1 (only the trusted case)", n)
	}

	if _, err := New(srv.URL, Options{CACertFile: filepath.Join(t.TempDir(), "missing.pem")}); err == nil {
		t.Error("missing CA file accepted")
	}
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	if _, err := New(srv.URL, Options{CACertFile: notPEM}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("non-PEM CA file: err = %v", err)
	}
}

func TestPlainHTTPServerWithHTTPSURL(t *testing.T) {
	srv := httptest.NewServer(status(200))
	defer srv.Close()
	c, _ := newFakeTimeClient(t, strings.Replace(srv.URL, "http:", "https:", 1), Options{})
	_, _, err := c.Get(context.Background(), "k", 10)
	if !errors.Is(err, ErrTLS) || strings.Contains(err.Error(), "attempts") {
		t.Errorf("err = %v, want ErrTLS without retries", err)
	}
}

func TestHTTP2Negotiated(t *testing.T) {
	var proto atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto.Store(int32(r.ProtoMajor))
		io.WriteString(w, "h2")
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	c, _ := newFakeTimeClient(t, srv.URL, Options{CACertFile: writeCertPEM(t, srv)})
	if _, err := c.Fetch(context.Background(), "k", io.Discard); err != nil {
		t.Fatal(err)
	}
	if p := proto.Load(); p != 2 {
		t.Errorf("protocol HTTP/%d, want HTTP/2", p)
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	c, err := New("http://"+addr+"/store", Options{RetryDeadline: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Fetch(context.Background(), "k", io.Discard)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	if !strings.Contains(err.Error(), "attempts") {
		t.Errorf("err = %q, want the attempt count", err)
	}
	// A hang guard, not a speed test: the budget is 0.3s.
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("took %v with a 300ms retry budget", d)
	}
}

func TestCallerCancellation(t *testing.T) {
	h := &scripted{handlers: []http.HandlerFunc{status(503)}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c, err := New(srv.URL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	c.sleep = func(context.Context, time.Duration) error { cancel(); return context.Canceled }
	_, err = c.Fetch(ctx, "k", io.Discard)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}
