package s3

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2/google"

	"github.com/zarrfs/zarrfs/internal/s3test"
	"github.com/zarrfs/zarrfs/remote"
)

// TestGCSBearerToken: gs:// requests carry the token from the token file,
// unsigned, and a rewritten token file is picked up without reopening.
func TestGCSBearerToken(t *testing.T) {
	var mu sync.Mutex
	var auths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		if r.URL.Path != "/bkt/s.zarr/.zgroup" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"abc"`)
		w.Write([]byte("{}"))
	}))
	t.Cleanup(srv.Close)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("ya29.first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := Open(ctxT(t), "gs://bkt/s.zarr", Options{Endpoint: srv.URL, TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	ctx := ctxT(t)
	if data, _, err := o.Get(ctx, ".zgroup", 100); err != nil || string(data) != "{}" {
		t.Fatalf("Get: %q %v", data, err)
	}
	if _, _, err := o.Get(ctx, "missing", 100); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	time.Sleep(1100 * time.Millisecond) // the file is looked at once a second at most
	if err := os.WriteFile(tokenFile, []byte("ya29.second-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := o.Get(ctx, ".zgroup", 100); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"Bearer ya29.first", "Bearer ya29.first", "Bearer ya29.second-token"}
	if strings.Join(auths, "|") != strings.Join(want, "|") {
		t.Fatalf("Authorization headers %q, want %q", auths, want)
	}

	// Without a token, and no Application Default Credentials (whatever
	// the machine running the test has): anonymous, no Authorization.
	auths = nil
	mu.Unlock()
	findDefaultCredentials = func(context.Context, ...string) (*google.Credentials, error) {
		return nil, errors.New("google: could not find default credentials")
	}
	t.Cleanup(func() { findDefaultCredentials = google.FindDefaultCredentials })
	anon, err := Open(ctxT(t), "gs://bkt/s.zarr", Options{Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(anon.Close)
	if _, _, err := anon.Get(ctx, ".zgroup", 100); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(auths) != 1 || auths[0] != "" {
		t.Fatalf("anonymous GCS request sent Authorization %q", auths)
	}
}

// TestGCSFake reads through fake-gcs-server's XML API: GET, ranges, suffix,
// 404, listing with delimiters and the listing manifest. fake-gcs-server
// ignores If-Match and If-None-Match and does not paginate, so ErrChanged,
// 304 and pagination are tested against versitygw only.
func TestGCSFake(t *testing.T) {
	seed := t.TempDir()
	files := map[string][]byte{
		".zgroup":   []byte(`{"zarr_format":2}`),
		"x/.zarray": []byte(`{"zarr_format":2}`),
		"x/0.0":     randBytes(11, 70_000),
		"x/0.1":     randBytes(12, 5),
		"y/c/0/0":   randBytes(13, 300_000),
	}
	for k, v := range files {
		p := filepath.Join(seed, "bkt", "s.zarr", filepath.FromSlash(k))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, v, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	endpoint := s3test.StartFakeGCS(t, seed)
	o, err := Open(ctxT(t), "gs://bkt/s.zarr", Options{Endpoint: endpoint, Remote: remote.Options{Token: "ya29.test", RetryDeadline: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	ctx := ctxT(t)
	for k, want := range files {
		var buf bytes.Buffer
		v, err := o.Fetch(ctx, k, &buf)
		if err != nil || !bytes.Equal(buf.Bytes(), want) || v == "" {
			t.Fatalf("Fetch %s: %d bytes, %q, %v", k, buf.Len(), v, err)
		}
	}
	want := files["y/c/0/0"]
	var buf bytes.Buffer
	p, err := o.FetchRange(ctx, "y/c/0/0", "", 1000, 500, &buf)
	if err != nil || !bytes.Equal(buf.Bytes(), want[1000:1500]) || p.Total != int64(len(want)) {
		t.Fatalf("FetchRange: %+v %v", p, err)
	}
	buf.Reset()
	p, err = o.FetchSuffix(ctx, "y/c/0/0", "", 4096, &buf)
	if err != nil || !bytes.Equal(buf.Bytes(), want[len(want)-4096:]) || p.Offset != int64(len(want)-4096) {
		t.Fatalf("FetchSuffix: %+v %v", p, err)
	}
	if _, err := o.Fetch(ctx, "x/9.9", &buf); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	root, err := o.List(ctx, "")
	if err != nil || len(root) != 3 {
		t.Fatalf("List root: %+v %v", root, err)
	}
	m, err := o.Manifest(ctx)
	if err != nil || m.Len() != len(files) {
		t.Fatalf("Manifest: %v %v", m, err)
	}
	for k, v := range files {
		if size, _, ok := m.Lookup(k); !ok || size != int64(len(v)) {
			t.Fatalf("manifest %s: %d %v", k, size, ok)
		}
	}
}
