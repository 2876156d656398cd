package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// rangeOrigin serves one object with http.ServeContent (ranges, If-Match)
// and a strong ETag; breakFirst makes the first answer stop half-way.
type rangeOrigin struct {
	data       []byte
	etag       string
	ignore     bool // answer every request with the whole object (200)
	breakFirst bool
	requests   atomic.Int32
	lastRange  atomic.Value
}

func (o *rangeOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := o.requests.Add(1)
	o.lastRange.Store(r.Header.Get("Range"))
	w.Header().Set("ETag", o.etag)
	if o.ignore {
		_, _ = w.Write(o.data)
		return
	}
	if o.breakFirst && n == 1 {
		var first, last int64
		if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &first, &last); err != nil {
			http.Error(w, "test origin wants bytes=a-b", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, len(o.data)))
		w.Header().Set("Content-Length", fmt.Sprint(last-first+1))
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(o.data[first : first+(last-first+1)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection breaks mid-body
	}
	http.ServeContent(w, r, "obj", time.Unix(0, 0), bytes.NewReader(o.data))
}

func newRangeOrigin(t *testing.T, o *rangeOrigin) *Client {
	t.Helper()
	if o.data == nil {
		o.data = make([]byte, 10000)
		for i := range o.data {
			o.data[i] = byte(i*7 + i/251)
		}
	}
	if o.etag == "" {
		o.etag = `"v1"`
	}
	srv := httptest.NewServer(o)
	t.Cleanup(srv.Close)
	c, _ := newFakeTimeClient(t, srv.URL+"/store.zarr", Options{})
	return c
}

func TestFetchRange(t *testing.T) {
	tests := []struct {
		name     string
		origin   *rangeOrigin // nil: a plain one
		suffix   bool
		version  string
		off, n   int64
		want     Piece // ETag filled in from the origin
		wantErr  error
		wantCode int
		wantReqs int32
	}{
		{name: "middle", off: 100, n: 50, want: Piece{Offset: 100, Length: 50, Total: 10000}, wantReqs: 1},
		{name: "past the end is cut", off: 9990, n: 50, want: Piece{Offset: 9990, Length: 10, Total: 10000}, wantReqs: 1},
		{name: "at the end", off: 10000, n: 5, wantCode: http.StatusRequestedRangeNotSatisfiable, wantReqs: 1},
		{name: "right version", version: `"v1"`, off: 0, n: 10, want: Piece{Offset: 0, Length: 10, Total: 10000}, wantReqs: 1},
		{name: "changed version", version: `"v0"`, off: 0, n: 10, wantErr: ErrChanged, wantReqs: 1},
		{name: "suffix", suffix: true, n: 16, want: Piece{Offset: 9984, Length: 16, Total: 10000}, wantReqs: 1},
		{name: "suffix larger than the object", suffix: true, n: 20000, want: Piece{Offset: 0, Length: 10000, Total: 10000}, wantReqs: 1},
		{name: "ranges ignored", origin: &rangeOrigin{ignore: true}, off: 5, n: 5, wantErr: ErrRangesUnsupported, wantReqs: 1},
		{name: "broken body resumed", origin: &rangeOrigin{breakFirst: true}, off: 1000, n: 4000, want: Piece{Offset: 1000, Length: 4000, Total: 10000}, wantReqs: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.origin
			if o == nil {
				o = &rangeOrigin{}
			}
			c := newRangeOrigin(t, o)
			var buf bytes.Buffer
			var got Piece
			var err error
			if tt.suffix {
				got, err = c.FetchSuffix(context.Background(), "a/0", tt.version, tt.n, &buf)
			} else {
				got, err = c.FetchRange(context.Background(), "a/0", tt.version, tt.off, tt.n, &buf)
			}
			if n := o.requests.Load(); n != tt.wantReqs {
				t.Errorf("%d requests, want %d", n, tt.wantReqs)
			}
			var se *StatusError
			switch {
			case tt.wantErr != nil || tt.wantCode != 0:
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("err %v, want %v", err, tt.wantErr)
				}
				if tt.wantCode != 0 && (!errors.As(err, &se) || se.Code != tt.wantCode) {
					t.Fatalf("err %v, want status %d", err, tt.wantCode)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			tt.want.ETag = o.etag
			if got != tt.want {
				t.Fatalf("piece %+v, want %+v", got, tt.want)
			}
			if want := o.data[got.Offset : got.Offset+got.Length]; !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("bytes differ: got %d bytes, want %d", buf.Len(), len(want))
			}
		})
	}
}

func TestFetchRangeRejectsWrongContentRange(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", "bytes 0-9/100") // not what was asked
		w.Header().Set("Content-Length", "10")
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write([]byte(strings.Repeat("x", 10)))
	}))
	t.Cleanup(srv.Close)
	c, _ := newFakeTimeClient(t, srv.URL, Options{})
	var buf bytes.Buffer
	if _, err := c.FetchRange(context.Background(), "k", "", 50, 10, &buf); err == nil || buf.Len() != 0 {
		t.Fatalf("err %v, %d bytes written; want an error and nothing written", err, buf.Len())
	}
	for _, bad := range [][2]int64{{-1, 5}, {0, 0}} {
		if _, err := c.FetchRange(context.Background(), "k", "", bad[0], bad[1], &buf); err == nil {
			t.Errorf("FetchRange(%d, %d) accepted", bad[0], bad[1])
		}
	}
}
