package integration

// A fault-injecting origin: an http.Handler over a directory (net/http's FileServer with a
// strong ETag, as the Go origin serves, or `zarrfs serve`'s handler in process, for the
// manifest) that misbehaves on the data requests it is told to, the ways origins and the
// networks in front of them do. The fault is switched from Go per test; metadata documents,
// listings and the manifest are never faulted, so a mount can always start.
//
// Lock order: faultOrigin.mu is a leaf (it guards the switch and the counters); it is never
// held while serving.

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/remote/serve"
)

// fault names one misbehaviour of faultOrigin.
type fault string

const (
	faultNone             fault = ""
	fault500              fault = "500"
	fault503RetryAfter    fault = "503 Retry-After"
	fault429              fault = "429"
	fault429RetryAfter    fault = "429 Retry-After"
	faultResetBefore      fault = "reset before the headers"
	faultResetMidBody     fault = "reset mid-body"
	faultStallHeaders     fault = "stall before the headers"
	faultStallMidBody     fault = "stall mid-body"
	faultShortBody        fault = "short body"
	faultRange200         fault = "Range answered with 200"
	faultRangeShifted     fault = "Range answered with a shifted Content-Range"
	faultRangeWrongTotal  fault = "Range answered with a wrong total"
	faultETagChanges      fault = "ETag changes between requests"
	faultNotModifiedPlain fault = "304 to a request that was not conditional"
)

// faultOrigin serves dir and injects the current fault into data requests.
type faultOrigin struct {
	srv   *httptest.Server
	inner http.Handler

	mu      sync.Mutex
	fault   fault
	every   int            // fault the 1st, (1+every)th, … request of each path and range; 0: all
	perPath map[string]int // data requests seen per path and range while the fault was set
	faulted int            // requests faulted
	served  int            // data requests
	stop    chan struct{}  // closed by clear: releases stalled requests
	all     bool           // fault every request, metadata and listings too (an outage)
	etagGen int
}

// newFaultOrigin serves dir, statically (FileServer, strong ETags, no manifest) or as
// `zarrfs serve` does (manifest, ETags from the inode), until the test ends.
func newFaultOrigin(t testing.TB, dir string, withServe bool) *faultOrigin {
	t.Helper()
	o := newFaultHandler(t, dir, withServe)
	o.srv = httptest.NewUnstartedServer(o)
	o.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	o.srv.Start()
	t.Cleanup(func() {
		o.clear()
		o.srv.CloseClientConnections()
		o.srv.Close()
	})
	return o
}

// newFaultHandler is newFaultOrigin without a server: the caller serves it.
func newFaultHandler(t testing.TB, dir string, withServe bool) *faultOrigin {
	t.Helper()
	o := &faultOrigin{perPath: map[string]int{}, stop: make(chan struct{})}
	if withServe {
		s, err := serve.New(serve.Config{Dir: dir, NoAuth: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		o.inner = s
	} else {
		files := http.FileServer(http.Dir(dir))
		o.inner = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			local := filepath.Join(dir, filepath.FromSlash(path.Clean("/"+r.URL.Path)))
			if fi, err := os.Stat(local); err == nil && fi.Mode().IsRegular() {
				w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.ModTime().UnixNano(), fi.Size()))
			}
			files.ServeHTTP(w, r)
		})
	}
	t.Cleanup(o.clear)
	return o
}

func (o *faultOrigin) URL(sub string) string { return o.srv.URL + "/" + strings.TrimPrefix(sub, "/") }

// set makes f the fault of data requests: the first of each path and range, and then every
// `every`th (every 0: all of them), until clear.
func (o *faultOrigin) set(f fault, every int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.fault, o.every, o.all = f, every, false
	o.perPath = map[string]int{}
}

// outage makes every request, metadata included, suffer f until clear.
func (o *faultOrigin) outage(f fault) {
	o.set(f, 0)
	o.mu.Lock()
	o.all = true
	o.mu.Unlock()
}

// clear ends the fault and releases the requests it stalls.
func (o *faultOrigin) clear() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fault != faultNone {
		close(o.stop)
		o.stop = make(chan struct{})
	}
	o.fault = faultNone
}

func (o *faultOrigin) counts() (served, faulted int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.served, o.faulted
}

// isData says whether a request is for a chunk or shard (not metadata, a listing or the
// manifest).
func isData(p string) bool {
	if strings.HasSuffix(p, "/") || strings.Contains(p, "/.zarrfs/") {
		return false
	}
	switch path.Base(p) {
	case ".zmetadata", ".zgroup", ".zarray", ".zattrs", "zarr.json":
		return false
	}
	return true
}

// pick decides whether this request is faulted, and how.
func (o *faultOrigin) pick(r *http.Request) (fault, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !isData(r.URL.Path) && !o.all {
		return faultNone, nil
	}
	o.served++
	if o.fault == faultNone {
		return faultNone, nil
	}
	// Counted per path and end of the range, so each block of an object read in parallel
	// meets the fault first and a good answer on its retry, and so does the resume of a
	// body cut short ("bytes=N-" and a block's resume keep the end of what they ask for).
	_, end, _ := strings.Cut(r.Header.Get("Range"), "-")
	id := r.URL.Path + "|" + end
	n := o.perPath[id]
	o.perPath[id] = n + 1
	if o.every > 0 && n%o.every != 0 {
		return faultNone, nil
	}
	switch o.fault {
	case faultRange200, faultRangeShifted, faultRangeWrongTotal:
		if r.Header.Get("Range") == "" {
			return faultNone, nil
		}
	case faultETagChanges:
		o.etagGen++
	}
	o.faulted++
	return o.fault, o.stop
}

func (o *faultOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f, stop := o.pick(r)
	switch f {
	case faultNone:
		o.inner.ServeHTTP(w, r)
	case fault500:
		http.Error(w, "injected", http.StatusInternalServerError)
	case fault503RetryAfter:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "injected", http.StatusServiceUnavailable)
	case fault429:
		http.Error(w, "injected", http.StatusTooManyRequests)
	case fault429RetryAfter:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "injected", http.StatusTooManyRequests)
	case faultResetBefore:
		hijack(w, func(c net.Conn, _ *bufio.ReadWriter) { resetConn(c) })
	case faultStallHeaders:
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	case faultResetMidBody, faultShortBody, faultStallMidBody:
		resp := record(o.inner, r)
		body := resp.Body.Bytes()
		hijack(w, func(c net.Conn, bw *bufio.ReadWriter) {
			writeHead(bw, resp, "", "")
			bw.Write(body[:len(body)/2])
			bw.Flush()
			switch f {
			case faultResetMidBody:
				resetConn(c)
			case faultShortBody:
				c.Close() // a clean end, short of Content-Length
			case faultStallMidBody:
				select {
				case <-stop:
				case <-time.After(2 * time.Minute):
				}
				resetConn(c)
			}
		})
	case faultRange200:
		r2 := r.Clone(r.Context())
		r2.Header.Del("Range")
		r2.Header.Del("If-Range")
		o.inner.ServeHTTP(w, r2)
	case faultRangeShifted:
		// The bytes one further on, labelled as such: not what was asked for.
		r2 := r.Clone(r.Context())
		r2.Header.Set("Range", shiftRange(r.Header.Get("Range")))
		o.inner.ServeHTTP(w, r2)
	case faultRangeWrongTotal:
		resp := record(o.inner, r)
		cr := resp.Header().Get("Content-Range")
		if i := strings.LastIndexByte(cr, '/'); i >= 0 {
			if total, err := strconv.ParseInt(cr[i+1:], 10, 64); err == nil {
				cr = cr[:i+1] + strconv.FormatInt(total+4096, 10)
			}
		}
		hijack(w, func(c net.Conn, bw *bufio.ReadWriter) {
			writeHead(bw, resp, "Content-Range", cr)
			bw.Write(resp.Body.Bytes())
			bw.Flush()
			c.Close()
		})
	case faultETagChanges:
		o.mu.Lock()
		tag := fmt.Sprintf(`"changed-%d"`, o.etagGen)
		o.mu.Unlock()
		o.inner.ServeHTTP(&etagWriter{ResponseWriter: w, etag: tag}, r)
	case faultNotModifiedPlain:
		w.WriteHeader(http.StatusNotModified)
	}
}

// record runs h for r into a recorder.
func record(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// hijack takes the connection over from net/http; f owns it.
func hijack(w http.ResponseWriter, f func(net.Conn, *bufio.ReadWriter)) {
	c, bw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(fmt.Sprintf("hijack: %v", err))
	}
	f(c, bw)
	c.Close()
}

// resetConn closes c with a TCP RST rather than a FIN.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

// writeHead writes resp's status line and headers (one of them replaced when name is set),
// with the Content-Length of its whole body and the connection closing after it.
func writeHead(bw *bufio.ReadWriter, resp *httptest.ResponseRecorder, name, value string) {
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", resp.Code, http.StatusText(resp.Code))
	h := resp.Header().Clone()
	if name != "" {
		h.Set(name, value)
	}
	h.Set("Content-Length", strconv.Itoa(resp.Body.Len()))
	h.Set("Connection", "close")
	h.Write(bw)
	bw.WriteString("\r\n")
}

// shiftRange moves "bytes=a-b" (or "bytes=-n", "bytes=a-") one byte further on.
func shiftRange(rng string) string {
	spec, ok := strings.CutPrefix(rng, "bytes=")
	if !ok {
		return rng
	}
	a, b, _ := strings.Cut(spec, "-")
	if a == "" { // a suffix: one byte shorter, so it ends one byte before the end... and
		// starts one byte later
		if n, err := strconv.ParseInt(b, 10, 64); err == nil && n > 1 {
			return "bytes=-" + strconv.FormatInt(n-1, 10)
		}
		return rng
	}
	first, err := strconv.ParseInt(a, 10, 64)
	if err != nil {
		return rng
	}
	out := "bytes=" + strconv.FormatInt(first+1, 10) + "-"
	if last, err := strconv.ParseInt(b, 10, 64); err == nil {
		out += strconv.FormatInt(last+1, 10)
	}
	return out
}

// etagWriter replaces the ETag of the answer.
type etagWriter struct {
	http.ResponseWriter
	etag string
}

func (e *etagWriter) WriteHeader(code int) {
	e.Header().Set("ETag", e.etag)
	e.ResponseWriter.WriteHeader(code)
}

func (e *etagWriter) Write(p []byte) (int, error) {
	if e.Header().Get("ETag") != e.etag {
		e.WriteHeader(http.StatusOK)
	}
	return e.ResponseWriter.Write(p)
}
