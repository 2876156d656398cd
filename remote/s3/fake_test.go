package s3

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/zarrfs/zarrfs/remote"
)

// fakeS3 answers the few requests these tests need, to produce what
// versitygw does not: 403 for missing keys without list permission, 503
// SlowDown, a region redirect. Path-style, bucket "b".
type fakeS3 struct {
	mu          sync.Mutex
	objects     map[string]string // full key -> content
	listAllowed bool
	denied      map[string]bool // keys the credentials may not read
	slowDowns   int             // answer this many requests with 503 SlowDown
	region      string          // when set, requests signed for another region get a 301
	requests    atomic.Int64
	lists       atomic.Int64
}

func s3Error(w http.ResponseWriter, status int, code string, hdr ...string) {
	for i := 0; i+1 < len(hdr); i += 2 {
		w.Header().Set(hdr[i], hdr[i+1])
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code><Message>%s from the fake</Message></Error>", code, code)
}

func (f *fakeS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.slowDowns > 0 {
		f.slowDowns--
		s3Error(w, http.StatusServiceUnavailable, "SlowDown")
		return
	}
	if f.region != "" && !strings.Contains(r.Header.Get("Authorization"), "/"+f.region+"/s3/") {
		s3Error(w, http.StatusMovedPermanently, "PermanentRedirect", "X-Amz-Bucket-Region", f.region)
		return
	}
	key, ok := strings.CutPrefix(r.URL.Path, "/b/")
	if !ok && r.URL.Path != "/b" {
		s3Error(w, http.StatusNotFound, "NoSuchBucket")
		return
	}
	if r.URL.Query().Get("list-type") == "2" {
		f.lists.Add(1)
		if !f.listAllowed {
			s3Error(w, http.StatusForbidden, "AccessDenied")
			return
		}
		w.Header().Set("Content-Type", "application/xml")
		fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><IsTruncated>false</IsTruncated></ListBucketResult>`)
		return
	}
	data, exists := f.objects[key]
	switch {
	case f.denied[key]:
		s3Error(w, http.StatusForbidden, "AccessDenied")
	case !exists && f.listAllowed:
		s3Error(w, http.StatusNotFound, "NoSuchKey")
	case !exists:
		s3Error(w, http.StatusForbidden, "AccessDenied")
	default:
		w.Header().Set("ETag", `"e`+fmt.Sprint(len(data))+`"`)
		http.ServeContent(w, r, key, time.Time{}, strings.NewReader(data))
	}
}

func openFake(t *testing.T, f *fakeS3, opts Options) (*Origin, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	opts.Endpoint = srv.URL
	opts.Credentials = credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")
	if opts.Remote.RetryDeadline == 0 {
		opts.Remote.RetryDeadline = 5 * time.Second
	}
	o, err := Open(ctxT(t), "s3://b/s.zarr", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	return o, srv
}

func TestThe403Rule(t *testing.T) {
	ctx := ctxT(t)
	t.Run("cannot list, can read: 403 is missing", func(t *testing.T) {
		f := &fakeS3{objects: map[string]string{"s.zarr/zarr.json": `{"zarr_format":3}`, "s.zarr/x/c/0": "chunk"}}
		o, _ := openFake(t, f, Options{})
		// The first denied GET, before anything was read: the origin asks
		// once whether it may list, and proves it can read the store.
		_, _, err := o.Get(ctx, ".zmetadata", 1<<20)
		if !errors.Is(err, remote.ErrNotFound) || !strings.Contains(err.Error(), "403") {
			t.Fatalf("missing .zmetadata: %v", err)
		}
		var buf bytes.Buffer
		if _, err := o.Fetch(ctx, "x/c/1", &buf); !errors.Is(err, remote.ErrNotFound) {
			t.Fatalf("missing chunk: %v", err)
		}
		if _, err := o.Fetch(ctx, "x/c/0", &buf); err != nil || buf.String() != "chunk" {
			t.Fatalf("present chunk: %q %v", buf.String(), err)
		}
		if n := f.lists.Load(); n != 1 {
			t.Errorf("listed %d times to learn the permission, want once", n)
		}
		if st := o.Stats(); st.Failures != 0 {
			t.Errorf("missing chunks counted as failures: %+v", st)
		}
	})
	t.Run("cannot list, can read nothing: 403 is forbidden", func(t *testing.T) {
		f := &fakeS3{objects: map[string]string{}}
		o, _ := openFake(t, f, Options{})
		if _, _, err := o.Get(ctx, "zarr.json", 1<<20); !errors.Is(err, remote.ErrForbidden) || !strings.Contains(err.Error(), "s3:GetObject") {
			t.Fatalf("unreadable store: %v", err)
		}
	})
	t.Run("can list: 403 is forbidden", func(t *testing.T) {
		f := &fakeS3{listAllowed: true, objects: map[string]string{"s.zarr/zarr.json": "{}", "s.zarr/x/c/0": "chunk"},
			denied: map[string]bool{"s.zarr/x/c/0": true}}
		o, _ := openFake(t, f, Options{})
		var buf bytes.Buffer
		if _, err := o.Fetch(ctx, "x/c/1", &buf); !errors.Is(err, remote.ErrNotFound) {
			t.Fatalf("missing chunk (404): %v", err)
		}
		if _, err := o.Fetch(ctx, "x/c/0", &buf); !errors.Is(err, remote.ErrForbidden) {
			t.Fatalf("denied chunk: %v", err)
		}
	})
}

func TestSlowDownBacksOff(t *testing.T) {
	ctx := ctxT(t)
	f := &fakeS3{listAllowed: true, slowDowns: 3, objects: map[string]string{"s.zarr/.zgroup": "{}"}}
	o, _ := openFake(t, f, Options{Remote: remote.Options{RetryDeadline: 30 * time.Second}})
	start := time.Now()
	data, _, err := o.Get(ctx, ".zgroup", 100)
	if err != nil || string(data) != "{}" {
		t.Fatalf("Get through three SlowDowns: %q %v", data, err)
	}
	st := o.Stats()
	if st.Retries != 3 || st.Errors.Throttled != 3 || st.Requests != 4 {
		t.Errorf("stats after three SlowDowns: %+v", st)
	}
	// The SDK's backoff: a random wait up to 1 s, 2 s, 4 s (capped at 5 s).
	t.Logf("three SlowDowns cost %s", time.Since(start))

	// Throttled for good: the retry budget ends it, without a tight loop.
	f.mu.Lock()
	f.slowDowns = 1 << 30
	f.mu.Unlock()
	o2, _ := openFake(t, f, Options{Remote: remote.Options{RetryDeadline: 3 * time.Second}})
	before := f.requests.Load()
	start = time.Now()
	_, _, err = o2.Get(ctx, ".zgroup", 100)
	d, n := time.Since(start), f.requests.Load()-before
	if err == nil || d > 8*time.Second {
		t.Fatalf("endless SlowDown: %v after %s", err, d)
	}
	if n > 15 {
		t.Errorf("%d requests in %s under SlowDown: not backing off", n, d)
	}
	t.Logf("endless SlowDown: %d requests in %s: %v", n, d.Round(time.Millisecond), err)
}

func TestRegionRedirect(t *testing.T) {
	ctx := ctxT(t)
	f := &fakeS3{listAllowed: true, region: "eu-west-1", objects: map[string]string{"s.zarr/.zgroup": "{}"}}
	o, _ := openFake(t, f, Options{})
	if data, _, err := o.Get(ctx, ".zgroup", 100); err != nil || string(data) != "{}" {
		t.Fatalf("Get after a redirect: %q %v", data, err)
	}
	if o.Region() != "eu-west-1" {
		t.Fatalf("region %q after the redirect", o.Region())
	}
	// A region given explicitly with an endpoint is not overridden: the
	// error names the right one.
	o2, _ := openFake(t, f, Options{Region: "us-west-2"})
	_, _, err := o2.Get(ctx, ".zgroup", 100)
	if !errors.Is(err, ErrWrongRegion) || !strings.Contains(err.Error(), "--s3-region eu-west-1") {
		t.Fatalf("wrong explicit region: %v", err)
	}
}

// TestCredentialSources: with no source configured the origin falls back
// to anonymous requests (public buckets); a configured source that fails
// is an error at Open that says how to fix it.
func TestCredentialSources(t *testing.T) {
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"} {
		t.Setenv(v, "")
	}
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	o, err := Open(ctxT(t), "s3://b/s.zarr", Options{Endpoint: "http://127.0.0.1:9"})
	if err != nil || !o.anonymous {
		t.Fatalf("no credentials anywhere: %v, anonymous=%v", err, o != nil && o.anonymous)
	}
	o.Close()

	cfg := filepath.Join(dir, "config")
	if err := os.WriteFile(cfg, []byte("[profile broken]\ncredential_process = /bin/false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CONFIG_FILE", cfg)
	t.Setenv("AWS_PROFILE", "broken")
	_, err = Open(ctxT(t), "s3://b/s.zarr", Options{Endpoint: "http://127.0.0.1:9"})
	if err == nil || !strings.Contains(err.Error(), "AWS credentials") || !strings.Contains(err.Error(), "--s3-anonymous") {
		t.Fatalf("broken profile: %v", err)
	}
	t.Log(err)
}
