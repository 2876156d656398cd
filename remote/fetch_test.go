package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/internal/testutil"
)

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// object is deterministic test content whose every offset is distinct
// enough that a duplicated or skipped run of bytes changes it.
func object(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// rangeLog records the Range and If-Range headers of each request.
type rangeLog struct {
	mu   sync.Mutex
	reqs []string
}

func (l *rangeLog) add(r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs = append(l.reqs, r.Header.Get("Range")+"|"+r.Header.Get("If-Range"))
}

func (l *rangeLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.reqs...)
}

// cutAfter answers like a full 200 with the given headers, sends only the
// first n bytes of data, and drops the connection.
func cutAfter(t *testing.T, etag string, data []byte, n int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		hdr := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n", len(data))
		if etag != "" {
			hdr += "ETag: " + etag + "\r\n"
		}
		hijackWrite(t, w, hdr+"\r\n"+string(data[:n]))
	}
}

// cutRangeAfter serves a 206 for the request's Range, cut after n bytes.
func cutRangeAfter(t *testing.T, etag string, data []byte, n int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var start int
		fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-", &start)
		hdr := fmt.Sprintf("HTTP/1.1 206 Partial Content\r\nContent-Length: %d\r\nContent-Range: bytes %d-%d/%d\r\nETag: %s\r\n\r\n",
			len(data)-start, start, len(data)-1, len(data), etag)
		hijackWrite(t, w, hdr+string(data[start:start+n]))
	}
}

func logged(l *rangeLog, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { l.add(r); h(w, r) }
}

func TestFetchResumesAfterBrokenBody(t *testing.T) {
	data := object(100_000)
	const etag = `"v1"`
	var log rangeLog
	h := &scripted{handlers: []http.HandlerFunc{
		logged(&log, cutAfter(t, etag, data, 30_000)),
		logged(&log, cutRangeAfter(t, etag, data, 20_000)),
		logged(&log, body(etag, string(data))), // ServeContent honours Range and If-Range
	}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c, _ := newFakeTimeClient(t, srv.URL, Options{})

	var got bytes.Buffer
	version, err := c.Fetch(context.Background(), "arr/0.0", &got)
	if err != nil {
		t.Fatal(err)
	}
	if version != etag {
		t.Errorf("version = %q, want %q", version, etag)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Errorf("w got %d bytes, not exactly the object", got.Len())
	}
	want := []string{"|", `bytes=30000-|"v1"`, `bytes=50000-|"v1"`}
	if g := log.get(); strings.Join(g, " ") != strings.Join(want, " ") {
		t.Errorf("requests (Range|If-Range) = %q, want %q", g, want)
	}
}

func TestFetchResumeRejectsChangedObject(t *testing.T) {
	data := object(1000)
	newData := object(1200)
	tests := []struct {
		name   string
		resume http.HandlerFunc
	}{
		{"If-Range fails, whole new object", body(`"v2"`, string(newData))},
		{"ranges ignored", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"v1"`)
			w.Write(data)
		}},
		{"wrong start", rawResponse("206 Partial Content", "Content-Range: bytes 0-999/1000\r\nETag: \"v1\"", string(data))},
		{"wrong total", rawResponse("206 Partial Content", "Content-Range: bytes 400-1199/1200\r\nETag: \"v1\"", string(newData[400:]))},
		{"different ETag on 206", rawResponse("206 Partial Content", "Content-Range: bytes 400-999/1000\r\nETag: \"v2\"", string(data[400:]))},
		{"unknown total", rawResponse("206 Partial Content", "Content-Range: bytes 400-999/*\r\nETag: \"v1\"", string(data[400:]))},
		{"416", rawResponse("416 Range Not Satisfiable", "Content-Range: bytes */300", "")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &scripted{handlers: []http.HandlerFunc{cutAfter(t, `"v1"`, data, 400), tt.resume, body(`"v1"`, string(data))}}
			srv := httptest.NewServer(h)
			defer srv.Close()
			c, _ := newFakeTimeClient(t, srv.URL, Options{})
			var got bytes.Buffer
			_, err := c.Fetch(context.Background(), "k", &got)
			if !errors.Is(err, ErrChanged) {
				t.Fatalf("err = %v, want ErrChanged", err)
			}
			if n := h.n.Load(); n != 2 {
				t.Errorf("requests = %d, want 2 (no retry after a change)", n)
			}
			if !bytes.Equal(got.Bytes(), data[:400]) {
				t.Errorf("w got %d bytes; want only the 400 of the first version", got.Len())
			}
		})
	}
}

func rawResponse(statusLine, headers, payload string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for _, line := range strings.Split(headers, "\r\n") {
			k, v, _ := strings.Cut(line, ": ")
			w.Header().Set(k, v)
		}
		var code int
		fmt.Sscanf(statusLine, "%d", &code)
		w.Header().Set("Content-Length", fmt.Sprint(len(payload)))
		w.WriteHeader(code)
		io.WriteString(w, payload)
	}
}

func TestFetchWithoutStrongETagDoesNotRestart(t *testing.T) {
	data := object(5000)
	for _, etag := range []string{"", `W/"weak"`} {
		t.Run("etag="+etag, func(t *testing.T) {
			h := &scripted{handlers: []http.HandlerFunc{cutAfter(t, etag, data, 1234), body(etag, string(data))}}
			srv := httptest.NewServer(h)
			defer srv.Close()
			c, _ := newFakeTimeClient(t, srv.URL, Options{})
			var got bytes.Buffer
			_, err := c.Fetch(context.Background(), "k", &got)
			if err == nil {
				t.Fatal("want an error")
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("err = %v, want it to wrap the transport error (unexpected EOF)", err)
			}
			if n := h.n.Load(); n != 1 {
				t.Errorf("requests = %d, want 1", n)
			}
			if !bytes.Equal(got.Bytes(), data[:1234]) {
				t.Errorf("w got %d bytes, want exactly the 1234 received once", got.Len())
			}
		})
	}
}

func TestFetchWithoutETagRetriesWhenNothingWritten(t *testing.T) {
	data := object(5000)
	h := &scripted{handlers: []http.HandlerFunc{cutAfter(t, "", data, 0), body("", string(data))}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c, _ := newFakeTimeClient(t, srv.URL, Options{})
	var got bytes.Buffer
	version, err := c.Fetch(context.Background(), "k", &got)
	if err != nil || version != "" || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("Fetch = %q, %v, %d bytes", version, err, got.Len())
	}
}

func TestFetchResumesChunkedBody(t *testing.T) {
	data := object(3000)
	const etag = `"c1"`
	var log rangeLog
	h := &scripted{handlers: []http.HandlerFunc{
		logged(&log, func(w http.ResponseWriter, r *http.Request) {
			hijackWrite(t, w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nETag: "+etag+"\r\n\r\n"+
				fmt.Sprintf("%x\r\n%s\r\n", 1000, data[:1000])+"7d0\r\n"+string(data[1000:1500]))
		}),
		logged(&log, body(etag, string(data))),
	}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c, _ := newFakeTimeClient(t, srv.URL, Options{})
	var got bytes.Buffer
	if _, err := c.Fetch(context.Background(), "k", &got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Errorf("w got %d bytes, not exactly the object", got.Len())
	}
	if g := log.get(); len(g) != 2 || !strings.HasPrefix(g[1], "bytes=1") {
		t.Errorf("requests = %q", g)
	}
}

type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	return 0, errors.New("disk full")
}

func TestFetchWriterErrorNotRetried(t *testing.T) {
	h := &scripted{handlers: []http.HandlerFunc{body(`"v"`, "some data")}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c, _ := newFakeTimeClient(t, srv.URL, Options{})
	_, err := c.Fetch(context.Background(), "k", &failingWriter{})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v", err)
	}
	if n := h.n.Load(); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
}

func TestStallTimeoutRetries(t *testing.T) {
	data := object(64 << 10)
	const etag = `"s1"`
	release := make(chan struct{})
	defer close(release)
	stall := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		case <-time.After(20 * time.Second):
		}
	}
	tests := []struct {
		name  string
		first http.HandlerFunc
		want  []string
	}{
		{"body stalls", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", etag)
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.Write(data[:10_000])
			w.(http.Flusher).Flush()
			stall(w, r)
		}, []string{"|", `bytes=10000-|"s1"`}},
		{"headers stall", stall, []string{"|", "|"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log rangeLog
			h := &scripted{handlers: []http.HandlerFunc{logged(&log, tt.first), logged(&log, body(etag, string(data)))}}
			srv := httptest.NewServer(h)
			defer srv.Close()
			var logBuf testutil.SyncBuffer
			c, err := New(srv.URL, Options{StallTimeout: 300 * time.Millisecond, Logger: newTestLogger(&logBuf)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var got bytes.Buffer
			if _, err := c.Fetch(context.Background(), "k", &got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), data) {
				t.Errorf("w got %d bytes, not exactly the object", got.Len())
			}
			if g := log.get(); strings.Join(g, " ") != strings.Join(tt.want, " ") {
				t.Errorf("requests = %q, want %q", g, tt.want)
			}
			if s := logBuf.String(); !strings.Contains(s, "stall timeout") && !strings.Contains(s, "timeout awaiting response headers") {
				t.Errorf("retry log does not name the stall: %s", s)
			}
		})
	}
}
