package remote

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// The cache package depends on this exact method set (cache.Source).
var _ interface {
	Fetch(ctx context.Context, key string, w io.Writer) (version string, err error)
	FetchIfChanged(ctx context.Context, key, version string, w io.Writer) (newVersion string, changed bool, err error)
} = (*Client)(nil)

// condLog records the If-None-Match, Range and If-Range headers of each
// request.
type condLog struct {
	mu   sync.Mutex
	reqs []string
}

func (l *condLog) wrap(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.reqs = append(l.reqs, r.Header.Get("If-None-Match")+"|"+r.Header.Get("Range")+"|"+r.Header.Get("If-Range"))
		l.mu.Unlock()
		h(w, r)
	}
}

func (l *condLog) get() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.reqs, " ")
}

func TestFetchIfChanged(t *testing.T) {
	data := object(50_000)
	newData := object(60_000)[10_000:]
	tests := []struct {
		name        string
		version     string
		handlers    []http.HandlerFunc // served in turn; ServeContent honours If-None-Match, Range and If-Range
		wantVersion string
		wantChanged bool
		wantBody    []byte
		wantReqs    string // If-None-Match|Range|If-Range of each request
	}{
		{"unchanged: 304, nothing written", `"v1"`,
			[]http.HandlerFunc{body(`"v1"`, string(data))},
			`"v1"`, false, nil, `"v1"||`},
		{"changed: 200 with the new object", `"v1"`,
			[]http.HandlerFunc{body(`"v2"`, string(newData))},
			`"v2"`, true, newData, `"v1"||`},
		{"changed, new object without ETag", `"v1"`,
			[]http.HandlerFunc{body("", string(newData))},
			"", true, newData, `"v1"||`},
		{"changed, new object with a weak ETag", `"v1"`,
			[]http.HandlerFunc{body(`W/"v2"`, string(newData))},
			"", true, newData, `"v1"||`},
		{"no version: plain fetch, no precondition", "",
			[]http.HandlerFunc{body(`"v1"`, string(data))},
			`"v1"`, true, data, "||"},
		{"503 then 304", `"v1"`,
			[]http.HandlerFunc{status(http.StatusServiceUnavailable), body(`"v1"`, string(data))},
			`"v1"`, false, nil, `"v1"|| "v1"||`},
		{"429 then 200", `"v1"`,
			[]http.HandlerFunc{status(http.StatusTooManyRequests), body(`"v2"`, string(newData))},
			`"v2"`, true, newData, `"v1"|| "v1"||`},
		{"connection reset before any byte, then 304", `"v1"`,
			[]http.HandlerFunc{func(w http.ResponseWriter, r *http.Request) { hijackWrite(t, w, "") }, body(`"v1"`, string(data))},
			`"v1"`, false, nil, `"v1"|| "v1"||`},
		{"new version's body breaks: resumed under the new ETag", `"v1"`,
			[]http.HandlerFunc{cutAfter(t, `"v2"`, newData, 20_000), body(`"v2"`, string(newData))},
			`"v2"`, true, newData, `"v1"|| |bytes=20000-|"v2"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log condLog
			handlers := make([]http.HandlerFunc, len(tt.handlers))
			for i, h := range tt.handlers {
				handlers[i] = log.wrap(h)
			}
			srv := httptest.NewServer(&scripted{handlers: handlers})
			defer srv.Close()
			c, _ := newFakeTimeClient(t, srv.URL, Options{})

			var got bytes.Buffer
			version, changed, err := c.FetchIfChanged(context.Background(), "arr/0.0", tt.version, &got)
			if err != nil {
				t.Fatal(err)
			}
			if version != tt.wantVersion || changed != tt.wantChanged {
				t.Errorf("FetchIfChanged = %q, %v; want %q, %v", version, changed, tt.wantVersion, tt.wantChanged)
			}
			if !bytes.Equal(got.Bytes(), tt.wantBody) {
				t.Errorf("w got %d bytes, want %d", got.Len(), len(tt.wantBody))
			}
			if g := log.get(); g != tt.wantReqs {
				t.Errorf("requests (If-None-Match|Range|If-Range) = %q, want %q", g, tt.wantReqs)
			}
		})
	}
}

func TestFetchIfChangedErrors(t *testing.T) {
	data := object(5000)
	tests := []struct {
		name     string
		handlers []http.HandlerFunc
		want     error
		wantReqs int32
	}{
		{"404 is fs.ErrNotExist, not retried", []http.HandlerFunc{status(http.StatusNotFound)}, fs.ErrNotExist, 1},
		{"403 not retried", []http.HandlerFunc{status(http.StatusForbidden)}, ErrForbidden, 1},
		{"resume answered with another version", []http.HandlerFunc{cutAfter(t, `"v2"`, data, 1000), body(`"v3"`, string(object(7000)))}, ErrChanged, 2},
		{"body of an object without strong ETag breaks", []http.HandlerFunc{cutAfter(t, "", data, 1000), body("", string(data))}, io.ErrUnexpectedEOF, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &scripted{handlers: tt.handlers}
			srv := httptest.NewServer(h)
			defer srv.Close()
			c, _ := newFakeTimeClient(t, srv.URL, Options{})
			_, _, err := c.FetchIfChanged(context.Background(), "k", `"v1"`, io.Discard)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if n := h.n.Load(); n != tt.wantReqs {
				t.Errorf("requests = %d, want %d", n, tt.wantReqs)
			}
		})
	}
}

func TestFetchIfChangedRejectsBadKey(t *testing.T) {
	c, _ := newFakeTimeClient(t, "http://127.0.0.1:1/store", Options{})
	if _, _, err := c.FetchIfChanged(context.Background(), "../etc/passwd", `"v1"`, io.Discard); err == nil {
		t.Fatal("a key escaping the store was accepted")
	}
}
