package serve

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/internal/testutil"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/wire"
)

const (
	testToken = "test-token-0123456789abcdef"
	secret    = "TOP SECRET OUTSIDE THE SERVED DIRECTORY"
)

// body100 is the content of the range-test file.
var body100 = strings.Repeat("0123456789", 10)

// serverTree builds
//
//	outside/secret.txt                         (must never be served)
//	served/store.zarr/{.zgroup,.zattrs,empty,name with space}
//	served/store.zarr/a/{.zarray,0.0,0.1}
//	served/store.zarr/{link-in -> a/0.0, dirlink-in -> a, loop -> .}
//	served/store.zarr/{link-out, link-abs, dirlink-out, link-dangling} (lead outside or nowhere)
//	served/store.zarr/fifo
//
// and returns the served directory.
func serverTree(t testing.TB) string {
	t.Helper()
	top := t.TempDir()
	outside := filepath.Join(top, "outside")
	served := filepath.Join(top, "served")
	store := filepath.Join(served, "store.zarr")
	for _, d := range []string{outside, filepath.Join(store, "a")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		filepath.Join(outside, "secret.txt"):     secret,
		filepath.Join(store, ".zgroup"):          `{"zarr_format": 2}`,
		filepath.Join(store, ".zattrs"):          `{}`,
		filepath.Join(store, "empty"):            "",
		filepath.Join(store, "name with space"):  "spaced",
		filepath.Join(store, "a", ".zarray"):     `{"shape": [10]}`,
		filepath.Join(store, "a", "0.0"):         body100,
		filepath.Join(store, "a", "0.1"):         "x",
		filepath.Join(top, "served-sibling.txt"): secret, // next to DIR, not in it
	}
	for p, content := range files {
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"link-in":       "a/0.0",
		"dirlink-in":    "a",
		"loop":          ".",
		"link-out":      "../../outside/secret.txt",
		"link-abs":      filepath.Join(outside, "secret.txt"),
		"dirlink-out":   "../../outside",
		"link-dangling": "no/such/file",
		"link-sibling":  "../../served-sibling.txt",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(store, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(store, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	return served
}

// newTestServer serves dir over plain HTTP through httptest and returns
// the server's base URL and the access log.
func newTestServer(t testing.TB, cfg Config) (*Server, string, *testutil.SyncBuffer) {
	t.Helper()
	logBuf := &testutil.SyncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logBuf, nil))
	if cfg.Tokens == nil && !cfg.NoAuth {
		ts, err := NewTokenSet(testToken)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Tokens = ts
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(func() {
		hs.Close()
		s.Close()
	})
	return s, hs.URL, logBuf
}

// rawRequest sends target exactly as given (no client-side cleaning or
// escaping) and returns the response with its body read.
func rawRequest(t testing.TB, base, method, target string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var req strings.Builder
	req.WriteString(method + " " + target + " HTTP/1.1\r\nHost: " + addr + "\r\nConnection: close\r\n")
	for k, v := range hdr {
		req.WriteString(k + ": " + v + "\r\n")
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(conn, req.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %q: %v", method, target, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func authHdr() map[string]string { return map[string]string{"Authorization": "Bearer " + testToken} }

func TestServerRefusesEscapes(t *testing.T) {
	served := serverTree(t)
	_, base, _ := newTestServer(t, Config{Dir: served})
	targets := []string{
		"/../outside/secret.txt",
		"/../served-sibling.txt",
		"/store.zarr/../../outside/secret.txt",
		"/store.zarr/a/../../../outside/secret.txt",
		"/%2e%2e/outside/secret.txt",
		"/%2E%2E/served-sibling.txt",
		"/store.zarr/%2e%2e/%2e%2e/outside/secret.txt",
		"/%252e%252e/outside/secret.txt",
		"/store.zarr/%252e%252e%252f%252e%252e%252foutside%252fsecret.txt",
		"/..%2foutside%2fsecret.txt",
		"/store.zarr/..%2F..%2Foutside%2Fsecret.txt",
		"/..%5coutside%5csecret.txt",
		`/..\outside\secret.txt`,
		"/store.zarr/a/0.0%00",
		"/store.zarr%00/.zgroup",
		"/store.zarr/%00",
		"//etc/passwd",
		"/etc/passwd",
		"/" + filepath.Join(filepath.Dir(served), "outside", "secret.txt"),
		"http://evil.example/../outside/secret.txt",
		"/store.zarr/link-out",
		"/store.zarr/link-abs",
		"/store.zarr/link-sibling",
		"/store.zarr/dirlink-out/secret.txt",
		"/store.zarr/dirlink-out/",
		"/store.zarr/link-dangling",
		"/store.zarr/loop/link-out",
		"/store.zarr/./a/0.0",
		"/./store.zarr/.zgroup",
		"/store.zarr/a/./0.0",
		"/store.zarr//a/0.0",
		"/store.zarr/a/0.0/",
		"/store.zarr/a",
		"/store.zarr/fifo",
		"/store.zarr/.zarrfs/secret",
		"/store.zarr/no-such-key",
	}
	for _, target := range targets {
		t.Run(target, func(t *testing.T) {
			for _, method := range []string{"GET", "HEAD"} {
				resp, body := rawRequest(t, base, method, target, authHdr())
				if resp.StatusCode < 400 || resp.StatusCode >= 500 {
					t.Errorf("%s %s: %s, want 4xx", method, target, resp.Status)
				}
				if strings.Contains(body, "TOP SECRET") {
					t.Fatalf("%s %s served bytes from outside the directory: %q", method, target, body)
				}
			}
		})
	}
}

func TestServerServesInside(t *testing.T) {
	served := serverTree(t)
	_, base, _ := newTestServer(t, Config{Dir: served})
	tests := []struct{ target, want string }{
		{"/store.zarr/.zgroup", `{"zarr_format": 2}`},
		{"/store.zarr/.zattrs", `{}`},
		{"/store.zarr/a/.zarray", `{"shape": [10]}`},
		{"/store.zarr/a/0.0", body100},
		{"/store.zarr/empty", ""},
		{"/store.zarr/name%20with%20space", "spaced"},
		{"/store.zarr/link-in", body100},
		{"/store.zarr/dirlink-in/0.1", "x"},
		{"/store.zarr/loop/loop/a/0.1", "x"},
	}
	for _, tc := range tests {
		resp, body := rawRequest(t, base, "GET", tc.target, authHdr())
		if resp.StatusCode != 200 || body != tc.want {
			t.Errorf("GET %s: %s %q, want 200 %q", tc.target, resp.Status, body, tc.want)
		}
	}
	// A directory listing with a trailing slash: dotfiles are listed, links
	// that lead outside are not.
	resp, body := rawRequest(t, base, "GET", "/store.zarr/", authHdr())
	if resp.StatusCode != 200 {
		t.Fatalf("listing: %s", resp.Status)
	}
	u, _ := http.NewRequest("GET", base+"/store.zarr/", nil)
	entries, err := remote.ParseIndex(u.URL, resp.Header.Get("Content-Type"), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		n := e.Name
		if e.IsDir {
			n += "/"
		}
		names = append(names, n)
	}
	want := ".zattrs .zgroup a/ dirlink-in/ empty link-in loop/ name with space"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("listing names:\n got %s\nwant %s", got, want)
	}
}

func TestServerAuth(t *testing.T) {
	served := serverTree(t)
	_, base, logs := newTestServer(t, Config{Dir: served})
	tests := []struct {
		name   string
		target string
		hdr    map[string]string
		want   int
	}{
		{"missing", "/store.zarr/.zgroup", nil, 401},
		{"wrong", "/store.zarr/.zgroup", map[string]string{"Authorization": "Bearer wrong-token-0123456789abcdef"}, 401},
		{"right prefix only", "/store.zarr/.zgroup", map[string]string{"Authorization": "Bearer " + testToken[:10]}, 401},
		{"right plus suffix", "/store.zarr/.zgroup", map[string]string{"Authorization": "Bearer " + testToken + "x"}, 401},
		{"basic scheme", "/store.zarr/.zgroup", map[string]string{"Authorization": "Basic " + testToken}, 401},
		{"no scheme", "/store.zarr/.zgroup", map[string]string{"Authorization": testToken}, 401},
		{"empty bearer", "/store.zarr/.zgroup", map[string]string{"Authorization": "Bearer "}, 401},
		{"right", "/store.zarr/.zgroup", authHdr(), 200},
		{"scheme case-insensitive", "/store.zarr/.zgroup", map[string]string{"Authorization": "bearer " + testToken}, 200},
		{"missing, on a missing key", "/store.zarr/nothing", nil, 401},
		{"missing, on an escape", "/../outside/secret.txt", nil, 401},
		{"token in URL only", "/store.zarr/.zgroup?token=" + testToken, nil, 400},
		{"token in URL and header", "/store.zarr/.zgroup?token=" + testToken, authHdr(), 400},
		{"access_token in URL", "/store.zarr/.zgroup?access_token=" + testToken, authHdr(), 400},
		{"encoded parameter name", "/store.zarr/.zgroup?%74oken=" + testToken, authHdr(), 400},
		{"X-Amz-Signature-like", "/store.zarr/.zgroup?X-Amz-Signature=abc", authHdr(), 400},
		{"harmless query", "/store.zarr/.zgroup?v=1", authHdr(), 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := rawRequest(t, base, "GET", tc.target, tc.hdr)
			if resp.StatusCode != tc.want {
				t.Errorf("%s: %s, want %d (%s)", tc.target, resp.Status, tc.want, body)
			}
			if tc.want == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %q", resp.Header.Get("WWW-Authenticate"))
			}
			if tc.want != 200 && strings.Contains(body, "zarr_format") {
				t.Errorf("refused request got the file: %q", body)
			}
		})
	}
	log := logs.String()
	if strings.Contains(log, testToken[:12]) || strings.Contains(log, "wrong-token") {
		t.Errorf("a token reached the access log:\n%s", log)
	}
	for _, want := range []string{"method=GET", "path=/store.zarr/.zgroup", "status=401", "status=200", "bytes=18", "duration="} {
		if !strings.Contains(log, want) {
			t.Errorf("access log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "?") {
		t.Errorf("access log holds a query string:\n%s", log)
	}
}

func TestServerNoAuthAndConfig(t *testing.T) {
	served := serverTree(t)
	_, base, _ := newTestServer(t, Config{Dir: served, NoAuth: true})
	if resp, _ := rawRequest(t, base, "GET", "/store.zarr/.zgroup", nil); resp.StatusCode != 200 {
		t.Errorf("--no-auth: %s, want 200", resp.Status)
	}
	if _, err := New(Config{Dir: served}); err == nil {
		t.Error("New without tokens and without NoAuth succeeded")
	}
	ts, _ := NewTokenSet(testToken)
	if _, err := New(Config{Dir: served, NoAuth: true, Tokens: ts}); err == nil {
		t.Error("New with tokens and NoAuth succeeded")
	}
	if _, err := New(Config{Dir: filepath.Join(served, "nope"), NoAuth: true}); err == nil {
		t.Error("New on a missing directory succeeded")
	}
}

func TestServerMethods(t *testing.T) {
	served := serverTree(t)
	_, base, _ := newTestServer(t, Config{Dir: served})
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "MKCOL", "COPY", "MOVE", "LOCK"} {
		for _, hdr := range []map[string]string{nil, authHdr()} {
			resp, _ := rawRequest(t, base, m, "/store.zarr/a/0.0", hdr)
			if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s: %s Allow=%q, want 405 with Allow: GET, HEAD", m, resp.Status, resp.Header.Get("Allow"))
			}
		}
	}
	if err := os.WriteFile(filepath.Join(served, "store.zarr", "a", "0.1"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	resp, body := rawRequest(t, base, "HEAD", "/store.zarr/a/0.0", authHdr())
	if resp.StatusCode != 200 || body != "" || resp.Header.Get("Content-Length") != "100" {
		t.Errorf("HEAD: %s, Content-Length %q, body %q", resp.Status, resp.Header.Get("Content-Length"), body)
	}
}

// TestServerConditionalAndRange checks RFC 9110 sections 13 (conditional
// requests) and 14 (range requests) one rule at a time.
func TestServerConditionalAndRange(t *testing.T) {
	served := serverTree(t)
	chunk := filepath.Join(served, "store.zarr", "a", "0.0")
	hourAgo := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(chunk, hourAgo, hourAgo); err != nil {
		t.Fatal(err)
	}
	future := filepath.Join(served, "store.zarr", "future")
	if err := os.WriteFile(future, []byte(body100), 0o644); err != nil {
		t.Fatal(err)
	}
	inAnHour := time.Now().Add(time.Hour).Truncate(time.Second)
	if err := os.Chtimes(future, inAnHour, inAnHour); err != nil {
		t.Fatal(err)
	}
	_, base, _ := newTestServer(t, Config{Dir: served})
	first, _ := rawRequest(t, base, "GET", "/store.zarr/a/0.0", authHdr())
	etag, lastMod := first.Header.Get("ETag"), first.Header.Get("Last-Modified")
	if wire.StrongETag(etag) == "" {
		t.Fatalf("ETag %q is not a strong entity tag", etag)
	}
	if lastMod != hourAgo.UTC().Format(http.TimeFormat) {
		t.Errorf("Last-Modified %q, want %q", lastMod, hourAgo.UTC().Format(http.TimeFormat))
	}
	if first.Header.Get("Accept-Ranges") != "bytes" {
		t.Errorf("Accept-Ranges %q", first.Header.Get("Accept-Ranges"))
	}
	futureETag := func() string {
		r, _ := rawRequest(t, base, "HEAD", "/store.zarr/future", authHdr())
		return r.Header.Get("ETag")
	}()
	weak := "W/" + etag
	many := "bytes=" + strings.Repeat("0-0,", maxRanges) + "1-1"

	type want struct {
		code         int
		body         string // checked unless multipart
		contentRange string
	}
	tests := []struct {
		name   string
		target string
		method string
		hdr    map[string]string
		want   want
	}{
		{"plain GET", "a/0.0", "GET", nil, want{200, body100, ""}},
		{"first bytes", "a/0.0", "GET", map[string]string{"Range": "bytes=0-9"}, want{206, body100[:10], "bytes 0-9/100"}},
		{"open-ended", "a/0.0", "GET", map[string]string{"Range": "bytes=90-"}, want{206, body100[90:], "bytes 90-99/100"}},
		{"suffix", "a/0.0", "GET", map[string]string{"Range": "bytes=-10"}, want{206, body100[90:], "bytes 90-99/100"}},
		{"suffix longer than the file", "a/0.0", "GET", map[string]string{"Range": "bytes=-1000"}, want{206, body100, "bytes 0-99/100"}},
		{"last-pos past the end", "a/0.0", "GET", map[string]string{"Range": "bytes=50-1000"}, want{206, body100[50:], "bytes 50-99/100"}},
		{"huge last-pos", "a/0.0", "GET", map[string]string{"Range": "bytes=1-99999999999999999999999"}, want{206, body100[1:], "bytes 1-99/100"}},
		{"whitespace and empty elements", "a/0.0", "GET", map[string]string{"Range": "bytes= 3-4 ,"}, want{206, body100[3:5], "bytes 3-4/100"}},
		{"unit is case-insensitive", "a/0.0", "GET", map[string]string{"Range": "Bytes=0-0"}, want{206, "0", "bytes 0-0/100"}},
		{"first-pos at the end: 416", "a/0.0", "GET", map[string]string{"Range": "bytes=100-"}, want{416, "", "bytes */100"}},
		{"huge first-pos: 416", "a/0.0", "GET", map[string]string{"Range": "bytes=99999999999999999999-"}, want{416, "", "bytes */100"}},
		{"zero suffix: 416", "a/0.0", "GET", map[string]string{"Range": "bytes=-0"}, want{416, "", "bytes */100"}},
		{"all unsatisfiable: 416", "a/0.0", "GET", map[string]string{"Range": "bytes=100-200,-0"}, want{416, "", "bytes */100"}},
		{"one satisfiable of two", "a/0.0", "GET", map[string]string{"Range": "bytes=200-300,5-6"}, want{206, "56", "bytes 5-6/100"}},
		{"other unit ignored", "a/0.0", "GET", map[string]string{"Range": "items=0-5"}, want{200, body100, ""}},
		{"malformed ignored", "a/0.0", "GET", map[string]string{"Range": "bytes=abc"}, want{200, body100, ""}},
		{"last before first ignored", "a/0.0", "GET", map[string]string{"Range": "bytes=5-1"}, want{200, body100, ""}},
		{"negative ignored", "a/0.0", "GET", map[string]string{"Range": "bytes=--5"}, want{200, body100, ""}},
		{"too many ranges ignored", "a/0.0", "GET", map[string]string{"Range": many}, want{200, body100, ""}},
		{"multi-range: multipart", "a/0.0", "GET", map[string]string{"Range": "bytes=0-1,10-11"}, want{206, "", ""}},
		{"HEAD with a range", "a/0.0", "HEAD", map[string]string{"Range": "bytes=0-9"}, want{206, "", "bytes 0-9/100"}},
		{"If-None-Match match: 304", "a/0.0", "GET", map[string]string{"If-None-Match": etag}, want{304, "", ""}},
		{"If-None-Match weak comparison: 304", "a/0.0", "GET", map[string]string{"If-None-Match": weak}, want{304, "", ""}},
		{"If-None-Match in a list: 304", "a/0.0", "GET", map[string]string{"If-None-Match": `"x", ` + etag}, want{304, "", ""}},
		{"If-None-Match star: 304", "a/0.0", "GET", map[string]string{"If-None-Match": "*"}, want{304, "", ""}},
		{"If-None-Match other: 200", "a/0.0", "GET", map[string]string{"If-None-Match": `"other"`}, want{200, body100, ""}},
		{"If-None-Match beats If-Modified-Since", "a/0.0", "GET", map[string]string{"If-None-Match": `"other"`, "If-Modified-Since": lastMod}, want{200, body100, ""}},
		{"If-Modified-Since unchanged: 304", "a/0.0", "GET", map[string]string{"If-Modified-Since": lastMod}, want{304, "", ""}},
		{"If-None-Match match before Range: 304", "a/0.0", "GET", map[string]string{"If-None-Match": etag, "Range": "bytes=500-"}, want{304, "", ""}},
		{"If-Match match: 200", "a/0.0", "GET", map[string]string{"If-Match": etag}, want{200, body100, ""}},
		{"If-Match star: 200", "a/0.0", "GET", map[string]string{"If-Match": "*"}, want{200, body100, ""}},
		{"If-Match other: 412", "a/0.0", "GET", map[string]string{"If-Match": `"other"`}, want{412, "", ""}},
		{"If-Match weak is never a match: 412", "a/0.0", "GET", map[string]string{"If-Match": weak}, want{412, "", ""}},
		{"If-Match fails before Range: 412", "a/0.0", "GET", map[string]string{"If-Match": `"other"`, "Range": "bytes=0-1"}, want{412, "", ""}},
		{"If-Match with Range: 206", "a/0.0", "GET", map[string]string{"If-Match": etag, "Range": "bytes=0-1"}, want{206, "01", "bytes 0-1/100"}},
		{"If-Unmodified-Since in the past: 412", "a/0.0", "GET", map[string]string{"If-Unmodified-Since": hourAgo.Add(-time.Hour).UTC().Format(http.TimeFormat)}, want{412, "", ""}},
		{"If-Range strong match: 206", "a/0.0", "GET", map[string]string{"If-Range": etag, "Range": "bytes=0-1"}, want{206, "01", "bytes 0-1/100"}},
		{"If-Range other: full 200", "a/0.0", "GET", map[string]string{"If-Range": `"other"`, "Range": "bytes=0-1"}, want{200, body100, ""}},
		{"If-Range weak: full 200", "a/0.0", "GET", map[string]string{"If-Range": weak, "Range": "bytes=0-1"}, want{200, body100, ""}},
		{"If-Range old date equal: 206", "a/0.0", "GET", map[string]string{"If-Range": lastMod, "Range": "bytes=0-1"}, want{206, "01", "bytes 0-1/100"}},
		{"If-Range other date: full 200", "a/0.0", "GET", map[string]string{"If-Range": hourAgo.Add(time.Second).UTC().Format(http.TimeFormat), "Range": "bytes=0-1"}, want{200, body100, ""}},
		{"If-Range garbage: full 200", "a/0.0", "GET", map[string]string{"If-Range": "garbage", "Range": "bytes=0-1"}, want{200, body100, ""}},
		{"If-Range date not older than a second is weak: full 200", "future", "GET", map[string]string{"If-Range": inAnHour.UTC().Format(http.TimeFormat), "Range": "bytes=0-1"}, want{200, body100, ""}},
		{"If-Range etag on a fresh file: 206", "future", "GET", map[string]string{"If-Range": futureETag, "Range": "bytes=0-1"}, want{206, "01", "bytes 0-1/100"}},
		{"If-Range unsatisfiable with match: 416", "a/0.0", "GET", map[string]string{"If-Range": etag, "Range": "bytes=100-"}, want{416, "", "bytes */100"}},
		{"If-Range unsatisfiable without match: 200", "a/0.0", "GET", map[string]string{"If-Range": `"other"`, "Range": "bytes=100-"}, want{200, body100, ""}},
		{"empty file", "empty", "GET", nil, want{200, "", ""}},
		// RFC 9110 14.2 lets a server ignore Range; ServeContent does so for
		// an empty file (where no range can select a byte) and we keep it.
		{"empty file, first-pos 0: full 200", "empty", "GET", map[string]string{"Range": "bytes=0-"}, want{200, "", ""}},
		{"empty file, suffix: full 200", "empty", "GET", map[string]string{"Range": "bytes=-5"}, want{200, "", ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hdr := authHdr()
			for k, v := range tc.hdr {
				hdr[k] = v
			}
			resp, body := rawRequest(t, base, tc.method, "/store.zarr/"+tc.target, hdr)
			if resp.StatusCode != tc.want.code {
				t.Fatalf("%s, want %d (body %q)", resp.Status, tc.want.code, body)
			}
			if cr := resp.Header.Get("Content-Range"); cr != tc.want.contentRange && !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/") {
				t.Errorf("Content-Range %q, want %q", cr, tc.want.contentRange)
			}
			switch tc.want.code {
			case 200, 206:
				if tc.method == "GET" && !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/") && body != tc.want.body {
					t.Errorf("body %q, want %q", body, tc.want.body)
				}
				if tc.method == "HEAD" && body != "" {
					t.Errorf("HEAD with a body %q", body)
				}
				if resp.Header.Get("ETag") == "" || resp.Header.Get("Accept-Ranges") != "bytes" {
					t.Errorf("ETag %q, Accept-Ranges %q", resp.Header.Get("ETag"), resp.Header.Get("Accept-Ranges"))
				}
				if tc.want.code == 206 && resp.Header.Get("Content-Length") != "" && resp.Header.Get("Content-Length") != strconv.Itoa(len(body)) && tc.method == "GET" {
					t.Errorf("Content-Length %q for %d bytes", resp.Header.Get("Content-Length"), len(body))
				}
			case 304:
				if body != "" || resp.Header.Get("ETag") == "" {
					t.Errorf("304 with body %q, ETag %q (RFC 9110 15.4.5: ETag must be sent)", body, resp.Header.Get("ETag"))
				}
			}
			if tc.name == "multi-range: multipart" {
				checkMultipart(t, resp, body, []string{body100[0:2], body100[10:12]}, []string{"bytes 0-1/100", "bytes 10-11/100"})
			}
		})
	}
}

func checkMultipart(t *testing.T, resp *http.Response, body string, parts, ranges []string) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/byteranges" {
		t.Fatalf("Content-Type %q, want multipart/byteranges", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(strings.NewReader(body), params["boundary"])
	for i := range parts {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		b, _ := io.ReadAll(p)
		if string(b) != parts[i] || p.Header.Get("Content-Range") != ranges[i] {
			t.Errorf("part %d: %q %q, want %q %q", i, b, p.Header.Get("Content-Range"), parts[i], ranges[i])
		}
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Errorf("more parts than ranges: %v", err)
	}
}

// TestServerETagFollowsContent: replacing a file by rename with the same
// size and mtime (what rsync -t and cp -p leave) changes the ETag.
func TestServerETagFollowsContent(t *testing.T) {
	served := serverTree(t)
	_, base, _ := newTestServer(t, Config{Dir: served})
	p := filepath.Join(served, "store.zarr", "a", "0.0")
	fi, _ := os.Stat(p)
	r1, _ := rawRequest(t, base, "HEAD", "/store.zarr/a/0.0", authHdr())
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.ToUpper(body100[:50])+body100[50:]), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	r2, _ := rawRequest(t, base, "HEAD", "/store.zarr/a/0.0", authHdr())
	if r1.Header.Get("ETag") == r2.Header.Get("ETag") {
		t.Errorf("ETag %s unchanged after the file was replaced", r1.Header.Get("ETag"))
	}
	if r1.Header.Get("Last-Modified") != r2.Header.Get("Last-Modified") {
		t.Errorf("test setup: mtime changed")
	}
}

func TestNormalizeRange(t *testing.T) {
	tests := []struct {
		in   string
		size int64
		out  string
		ok   bool
	}{
		{"bytes=0-9", 100, "bytes=0-9", true},
		{"bytes=0-", 100, "bytes=0-", true},
		{"bytes=-5", 100, "bytes=-5", true},
		{"bytes=-500", 100, "bytes=-100", true},
		{"bytes=0-500", 100, "bytes=0-99", true},
		{"bytes=100-", 100, "bytes=100-", true},
		{"bytes=-0", 100, "bytes=100-", true},
		{"bytes=1-2,100-", 100, "bytes=1-2", true},
		{"bytes=0-", 0, "bytes=0-", true},
		{"bytes=-1", 0, "", false},
		{"bytes=", 100, "", false},
		{"bytes=,", 100, "", false},
		{"bytes=a-b", 100, "", false},
		{"bytes=1", 100, "", false},
		{"bytes=2-1", 100, "", false},
		{"bits=0-1", 100, "", false},
		{"0-1", 100, "", false},
		{"bytes=0-1;x", 100, "", false},
		{"bytes=+1-2", 100, "", false},
	}
	for _, tc := range tests {
		out, ok := normalizeRange(tc.in, tc.size)
		if out != tc.out || ok != tc.ok {
			t.Errorf("normalizeRange(%q, %d) = %q, %v; want %q, %v", tc.in, tc.size, out, ok, tc.out, tc.ok)
		}
	}
}

// serveOn runs s.Serve on a loopback listener until the test ends.
func serveOn(t *testing.T, s *Server) (addr string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln, nil) }()
	var once sync.Once
	var serveErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case serveErr = <-done:
			case <-time.After(30 * time.Second):
				t.Error("Serve did not return 30s after its context ended")
			}
		})
		return serveErr
	}
	t.Cleanup(func() { _ = stop() })
	return ln.Addr().String(), stop
}

func TestServerCutsSlowHeaders(t *testing.T) {
	served := serverTree(t)
	ts, _ := NewTokenSet(testToken)
	s, err := New(Config{Dir: served, Tokens: ts, ReadHeaderTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr, _ := serveOn(t, s)
	for _, partial := range []string{"", "GET /store.zarr/.zgroup HTTP/1.1\r\nHost: x\r\n"} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(conn, partial); err != nil {
			t.Fatal(err)
		}
		// The server must close the connection; the deadline only keeps a
		// broken server from hanging the test.
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		b, err := io.ReadAll(conn)
		conn.Close()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("a client sending %q and then nothing was not cut off", partial)
		}
		if bytes.Contains(b, []byte("zarr_format")) {
			t.Errorf("an incomplete request was answered: %q", b)
		}
	}
}

func TestServerConnectionCap(t *testing.T) {
	served := serverTree(t)
	s, err := New(Config{Dir: served, NoAuth: true, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr, _ := serveOn(t, s)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	get := func(timeout time.Duration) error {
		tr := &http.Transport{DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr, Timeout: timeout}
		resp, err := client.Get("http://" + addr + "/store.zarr/.zgroup")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	if err := get(500 * time.Millisecond); err == nil {
		t.Error("a third connection was served while two were held with a cap of 2")
	}
	held[0].Close()
	if err := get(20 * time.Second); err != nil {
		t.Errorf("after a held connection closed: %v", err)
	}
	held[1].Close()
}

func TestServerGracefulShutdown(t *testing.T) {
	served := serverTree(t)
	big := bytes.Repeat([]byte("z"), 8<<20)
	if err := os.WriteFile(filepath.Join(served, "store.zarr", "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Dir: served, NoAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr, stop := serveOn(t, s)
	resp, err := http.Get("http://" + addr + "/store.zarr/big")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head := make([]byte, 1024)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || len(head)+len(rest) != len(big) {
		t.Errorf("request in flight during shutdown: %d bytes, %v; want all %d", len(head)+len(rest), err, len(big))
	}
	if err := <-stopped; err != nil {
		t.Errorf("Serve after shutdown: %v", err)
	}
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		c.Close()
		t.Error("still accepting connections after shutdown")
	}
}
