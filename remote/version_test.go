package remote

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestModTimeVersion(t *testing.T) {
	date := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	hdr := func(lm, d time.Time) http.Header {
		h := http.Header{}
		if !lm.IsZero() {
			h.Set("Last-Modified", lm.Format(http.TimeFormat))
		}
		if !d.IsZero() {
			h.Set("Date", d.Format(http.TimeFormat))
		}
		return h
	}
	tests := []struct {
		name string
		h    http.Header
		size int64
		want string
	}{
		{"an hour old", hdr(date.Add(-time.Hour), date), 42, "lm:" + strconv.FormatInt(date.Add(-time.Hour).Unix(), 10) + "-42"},
		{"one second old", hdr(date.Add(-time.Second), date), 7, "lm:" + strconv.FormatInt(date.Add(-time.Second).Unix(), 10) + "-7"},
		{"same second as Date", hdr(date, date), 7, ""},
		{"in the future", hdr(date.Add(time.Hour), date), 7, ""},
		{"no Last-Modified", hdr(time.Time{}, date), 7, ""},
		{"no Date: the client's clock", hdr(date.Add(-time.Hour), time.Time{}), 1, "lm:" + strconv.FormatInt(date.Add(-time.Hour).Unix(), 10) + "-1"},
		{"unknown size", hdr(date.Add(-time.Hour), date), -1, ""},
		{"garbage", http.Header{"Last-Modified": {"yesterday"}, "Date": {date.Format(http.TimeFormat)}}, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := modTimeVersion(tt.h, tt.size, date)
			if got != tt.want {
				t.Fatalf("modTimeVersion = %q, want %q", got, tt.want)
			}
			if got == "" {
				return
			}
			lm, size, ok := parseModTimeVersion(got)
			if !ok || size != tt.size || !sameModTime(tt.h, lm) || !IsModTimeVersion(got) {
				t.Errorf("parse %q = %v %d %v", got, lm, size, ok)
			}
		})
	}
	if v := versionOf(http.Header{"Etag": {`"e"`}, "Last-Modified": {date.Add(-time.Hour).Format(http.TimeFormat)}}, 1, date); v != `"e"` {
		t.Errorf("with a strong ETag the version is %q, want the ETag", v)
	}
}

// lmOrigin serves one object with Last-Modified and no ETag, as
// python3 -m http.server does (Range handled by ServeContent here), and
// logs the conditional and range headers it gets.
type lmOrigin struct {
	mu      sync.Mutex
	data    []byte
	modTime time.Time
	log     []string
}

func (o *lmOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	data, mt := o.data, o.modTime
	o.log = append(o.log, strings.Join([]string{r.Header.Get("If-Modified-Since"), r.Header.Get("If-None-Match"), r.Header.Get("If-Match"), r.Header.Get("Range")}, "|"))
	o.mu.Unlock()
	http.ServeContent(w, r, "", mt, bytes.NewReader(data))
}

func (o *lmOrigin) set(data string, mt time.Time) {
	o.mu.Lock()
	o.data, o.modTime = []byte(data), mt
	o.mu.Unlock()
}

func (o *lmOrigin) last() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.log[len(o.log)-1]
}

func TestModTimeVersionFetch(t *testing.T) {
	o := &lmOrigin{}
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	o.set("0123456789", old)
	srv := httptest.NewServer(o)
	defer srv.Close()
	c, err := New(srv.URL, Options{RetryDeadline: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	want := "lm:" + strconv.FormatInt(old.Unix(), 10) + "-10"

	var buf bytes.Buffer
	v, err := c.Fetch(ctx, "a/0", &buf)
	if err != nil || v != want || buf.String() != "0123456789" {
		t.Fatalf("Fetch = %q, %q, %v; want %q", buf.String(), v, err, want)
	}

	// Revalidation: If-Modified-Since, and 304 means unchanged.
	buf.Reset()
	nv, changed, err := c.FetchIfChanged(ctx, "a/0", v, &buf)
	if err != nil || changed || nv != v || buf.Len() != 0 {
		t.Fatalf("FetchIfChanged unchanged = %q, %v, %v, %d bytes", nv, changed, err, buf.Len())
	}
	if got := o.last(); !strings.HasPrefix(got, old.UTC().Format(http.TimeFormat)+"|") {
		t.Errorf("revalidation sent %q; want If-Modified-Since %s and no If-None-Match", got, old.UTC().Format(http.TimeFormat))
	}

	// A range under the version: no If-Match, the 206's Last-Modified and
	// total size are checked.
	buf.Reset()
	p, err := c.FetchRange(ctx, "a/0", v, 2, 3, &buf)
	if err != nil || buf.String() != "234" || p.ETag != v || p.Total != 10 {
		t.Fatalf("FetchRange = %q %+v %v", buf.String(), p, err)
	}
	if got := o.last(); got != "|||bytes=2-4" {
		t.Errorf("range request sent %q; want only Range", got)
	}
	buf.Reset()
	p, err = c.FetchSuffix(ctx, "a/0", "", 4, &buf)
	if err != nil || buf.String() != "6789" || p.ETag != v {
		t.Fatalf("FetchSuffix learns %+v %q %v; want version %s", p, buf.String(), err, v)
	}

	// Same size, newer Last-Modified: the range fails with ErrChanged.
	newer := old.Add(time.Minute)
	o.set("abcdefghij", newer)
	buf.Reset()
	if _, err := c.FetchRange(ctx, "a/0", v, 2, 3, &buf); !errors.Is(err, ErrChanged) || buf.Len() != 0 {
		t.Errorf("range of a rewritten object: %v, %d bytes written; want ErrChanged and nothing", err, buf.Len())
	}
	// Same Last-Modified, other size: ErrChanged too.
	o.set("0123456789ab", old)
	if _, err := c.FetchRange(ctx, "a/0", v, 2, 3, &buf); !errors.Is(err, ErrChanged) || buf.Len() != 0 {
		t.Errorf("range of a resized object: %v, %d bytes written; want ErrChanged and nothing", err, buf.Len())
	}
	// A changed object is fetched anew by the revalidation.
	o.set("abcdefghij", newer)
	buf.Reset()
	nv, changed, err = c.FetchIfChanged(ctx, "a/0", v, &buf)
	wantNew := "lm:" + strconv.FormatInt(newer.Unix(), 10) + "-10"
	if err != nil || !changed || nv != wantNew || buf.String() != "abcdefghij" {
		t.Errorf("FetchIfChanged changed = %q, %v, %v, %q; want %s", nv, changed, err, buf.String(), wantNew)
	}

	// A Last-Modified in the current second is not trusted.
	o.set("fresh", time.Now())
	if v, err := c.Fetch(ctx, "a/0", io.Discard); err != nil || v != "" {
		t.Errorf("fresh object: version %q, %v; want none", v, err)
	}
}
