package s3

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/zarrfs/zarrfs/remote"
)

// TestGetWithoutTheSDKStack: GETs go out as plain requests signed with the
// SDK's SigV4 signer (the SDK's stack would add its invocation id), with
// the session token of temporary credentials; a clock skewed enough for S3
// to refuse the signature sends the GET, and every later one, through the
// SDK, which corrects for skew. Signatures themselves are checked by
// versitygw in the contract suite.
func TestGetWithoutTheSDKStack(t *testing.T) {
	var mu sync.Mutex
	var seen []http.Header
	skewed := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		refuse := skewed > 0
		if refuse {
			skewed--
		}
		mu.Unlock()
		if refuse {
			s3Error(w, http.StatusForbidden, "RequestTimeTooSkewed")
			return
		}
		w.Header().Set("ETag", `"e"`)
		w.Write([]byte("{}"))
	}))
	t.Cleanup(srv.Close)
	o, err := Open(ctxT(t), "s3://b/s.zarr", Options{Endpoint: srv.URL,
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "SESSION")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	ctx := ctxT(t)
	last := func() http.Header {
		mu.Lock()
		defer mu.Unlock()
		return seen[len(seen)-1]
	}
	if _, _, err := o.Get(ctx, ".zgroup", 100); err != nil {
		t.Fatal(err)
	}
	h := last()
	if h.Get("Amz-Sdk-Invocation-Id") != "" {
		t.Errorf("the GET went through the SDK's stack: %v", h)
	}
	if !strings.HasPrefix(h.Get("Authorization"), "AWS4-HMAC-SHA256 Credential=AKID/") || h.Get("X-Amz-Security-Token") != "SESSION" ||
		h.Get("X-Amz-Content-Sha256") != emptyPayloadHash || h.Get("X-Amz-Date") == "" {
		t.Errorf("GET not signed with SigV4 and the session token: %v", h)
	}

	mu.Lock()
	skewed = 1
	mu.Unlock()
	if _, _, err := o.Get(ctx, ".zgroup", 100); err != nil {
		t.Fatalf("GET with a skewed clock: %v", err)
	}
	if _, _, err := o.Get(ctx, ".zgroup", 100); err != nil {
		t.Fatal(err)
	}
	if h := last(); h.Get("Amz-Sdk-Invocation-Id") == "" {
		t.Errorf("after S3 refused the clock, GETs still skip the SDK: %v", h)
	}
}

// TestFastEndpoint: the plain GET path takes its URL and signing region from
// the SDK's endpoint resolver, and leaves to the SDK what it cannot sign
// with plain SigV4 (S3 Express directory buckets).
func TestFastEndpoint(t *testing.T) {
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	creds := credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")
	for _, c := range []struct {
		url, endpoint, addressing, region string
		want, signingRegion               string
	}{
		{"s3://my-bucket/s.zarr", "", "", "us-west-2", "https://my-bucket.s3.us-west-2.amazonaws.com", "us-west-2"},
		{"s3://my-bucket/s.zarr", "", AddressingPath, "eu-central-1", "https://s3.eu-central-1.amazonaws.com/my-bucket", "eu-central-1"},
		{"s3://zarr/s.zarr", "http://127.0.0.1:9000", "", "us-east-1", "http://127.0.0.1:9000/zarr", "us-east-1"},
		{"gs://bkt/s.zarr", "", "", "", "https://storage.googleapis.com/bkt", "auto"},
		{"s3://data--usw2-az1--x-s3/s.zarr", "", "", "us-west-2", "", ""},
	} {
		o, err := Open(ctxT(t), c.url, Options{Endpoint: c.endpoint, Addressing: c.addressing, Region: c.region, Credentials: creds, Anonymous: c.url[:2] == "gs"})
		if err != nil {
			t.Fatal(err)
		}
		ep := o.fast.endpoint(ctxT(t), o.bucket, o.Region())
		switch {
		case c.want == "" && ep != nil:
			t.Errorf("%s: plain GETs to %s; want the SDK's", c.url, ep.base.String())
		case c.want != "" && (ep == nil || ep.base.String() != c.want || ep.signingRegion != c.signingRegion):
			t.Errorf("%s: endpoint %+v; want %s signed for %s", c.url, ep, c.want, c.signingRegion)
		}
		o.Close()
	}
}

// TestGetsReuseOneConnection: sequential reads of every kind, answers with
// errors and 304s among them, go over one kept-alive connection. A body
// left unread (an error document, say) makes Go close the connection, and
// a TCP connect per small GET costs more than the GET (docs/benchmarks.md).
func TestGetsReuseOneConnection(t *testing.T) {
	f := &fakeS3{listAllowed: true, objects: map[string]string{"s.zarr/a": "chunk a", "s.zarr/b": strings.Repeat("b", 5000)}}
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(f)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	ctx := ctxT(t)
	o, err := Open(ctx, "s3://b/s.zarr", Options{Endpoint: srv.URL,
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	for range 3 {
		if _, _, err := o.Get(ctx, "a", 100); err != nil {
			t.Fatal(err)
		}
		etag, err := o.Fetch(ctx, "b", io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if _, changed, err := o.FetchIfChanged(ctx, "b", etag, io.Discard); err != nil || changed {
			t.Fatalf("FetchIfChanged with the current ETag: changed %v, %v", changed, err)
		}
		if _, err := o.FetchRange(ctx, "b", etag, 10, 100, io.Discard); err != nil {
			t.Fatal(err)
		}
		if _, err := o.FetchSuffix(ctx, "b", "", 100, io.Discard); err != nil {
			t.Fatal(err)
		}
		if _, err := o.Fetch(ctx, "missing", io.Discard); !errors.Is(err, remote.ErrNotFound) {
			t.Fatalf("missing key: %v", err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("18 sequential requests opened %d connections, want 1", n)
	}
}
