package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/zarrfs/zarrfs/internal/s3test"
	"github.com/zarrfs/zarrfs/remote"
)

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// openT opens an origin on the server with root keys unless opts says otherwise.
func openT(t *testing.T, srv *s3test.Server, url string, opts Options) *Origin {
	t.Helper()
	if opts.Endpoint == "" {
		opts.Endpoint = srv.Endpoint
	}
	if opts.Credentials == nil && !opts.Anonymous {
		opts.Credentials = credentials.NewStaticCredentialsProvider(s3test.RootAccess, s3test.RootSecret, "")
	}
	if opts.Remote.RetryDeadline == 0 {
		opts.Remote.RetryDeadline = 5 * time.Second
	}
	o, err := Open(ctxT(t), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	return o
}

var storeFiles = map[string][]byte{
	".zgroup":     []byte(`{"zarr_format":2}`),
	"x/.zarray":   []byte(`{"zarr_format":2}`),
	"x/0.0":       randBytes(1, 100_000),
	"x/0.1":       randBytes(2, 3),
	"x/sub/deep":  randBytes(3, 10),
	"y/c/0/0":     randBytes(4, 2<<20+17),
	"a b/ünï.txt": []byte("names with spaces"),
}

func TestFetchContract(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "zarr")
	srv.Put(t, "zarr", "stores/a.zarr/", storeFiles)
	srv.Put(t, "zarr", "stores/other.zarr/", map[string][]byte{"x/0.0": []byte("other store")})
	o := openT(t, srv, "s3://zarr/stores/a.zarr", Options{})
	ctx := ctxT(t)

	t.Run("Get", func(t *testing.T) {
		data, obj, err := o.Get(ctx, ".zgroup", 1<<20)
		if err != nil || !bytes.Equal(data, storeFiles[".zgroup"]) || obj.Size != int64(len(data)) || obj.ETag == "" {
			t.Fatalf("Get = %q, %+v, %v", data, obj, err)
		}
		if _, _, err := o.Get(ctx, "x/0.0", 1000); err == nil || !strings.Contains(err.Error(), "limit") {
			t.Fatalf("Get over the limit: %v", err)
		}
		data, _, err = o.Get(ctx, "a b/ünï.txt", 1<<20)
		if err != nil || string(data) != "names with spaces" {
			t.Fatalf("Get of a key with spaces: %q %v", data, err)
		}
	})
	t.Run("Fetch", func(t *testing.T) {
		for key, want := range storeFiles {
			var buf bytes.Buffer
			v, err := o.Fetch(ctx, key, &buf)
			if err != nil || !bytes.Equal(buf.Bytes(), want) || v == "" {
				t.Fatalf("Fetch %s: %d bytes, version %q, %v", key, buf.Len(), v, err)
			}
			var again bytes.Buffer
			nv, changed, err := o.FetchIfChanged(ctx, key, v, &again)
			if err != nil || changed || nv != v || again.Len() != 0 {
				t.Fatalf("FetchIfChanged %s same version: %q %v %v, %d bytes", key, nv, changed, err, again.Len())
			}
			nv, changed, err = o.FetchIfChanged(ctx, key, `"not-the-etag"`, &again)
			if err != nil || !changed || nv != v || !bytes.Equal(again.Bytes(), want) {
				t.Fatalf("FetchIfChanged %s other version: %q %v %v", key, nv, changed, err)
			}
		}
	})
	t.Run("Ranges", func(t *testing.T) {
		want := storeFiles["y/c/0/0"]
		total := int64(len(want))
		for _, c := range []struct{ off, n int64 }{{0, 1}, {10, 100}, {total - 5, 5}, {total - 5, 100}, {1 << 20, 1 << 20}} {
			var buf bytes.Buffer
			p, err := o.FetchRange(ctx, "y/c/0/0", "", c.off, c.n, &buf)
			end := min(c.off+c.n, total)
			if err != nil || !bytes.Equal(buf.Bytes(), want[c.off:end]) || p.Offset != c.off || p.Length != end-c.off || p.Total != total || p.ETag == "" {
				t.Fatalf("FetchRange(%d,%d) = %+v, %d bytes, %v", c.off, c.n, p, buf.Len(), err)
			}
		}
		var buf bytes.Buffer
		_, err := o.FetchRange(ctx, "y/c/0/0", "", total, 10, &buf)
		var se *remote.StatusError
		if !errors.As(err, &se) || se.Code != 416 {
			t.Fatalf("range past the end: %v", err)
		}
		for _, n := range []int64{1, 1000, total, total + 50} {
			buf.Reset()
			p, err := o.FetchSuffix(ctx, "y/c/0/0", "", n, &buf)
			first := max(0, total-n)
			if err != nil || !bytes.Equal(buf.Bytes(), want[first:]) || p.Offset != first || p.Total != total {
				t.Fatalf("FetchSuffix(%d) = %+v, %v", n, p, err)
			}
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		before := o.Stats()
		var buf bytes.Buffer
		_, _, err1 := o.Get(ctx, "x/9.9", 100)
		_, err2 := o.Fetch(ctx, "x/9.9", &buf)
		_, err3 := o.FetchRange(ctx, "x/9.9", "", 0, 10, &buf)
		_, _, err4 := o.FetchIfChanged(ctx, "x/9.9", `"v"`, &buf)
		for i, err := range []error{err1, err2, err3, err4} {
			if !errors.Is(err, remote.ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("missing key, call %d: %v", i, err)
			}
		}
		if st := o.Stats(); st.Failures != before.Failures || st.Errors.NotFound != before.Errors.NotFound+4 {
			t.Errorf("missing keys counted as failures: %+v", st)
		}
	})
	t.Run("BadKey", func(t *testing.T) {
		for _, k := range []string{"../other.zarr/x/0.0", "", "x//0.0", "x/./0"} {
			if _, _, err := o.Get(ctx, k, 100); err == nil {
				t.Errorf("key %q accepted", k)
			}
		}
	})
	t.Run("Changed", func(t *testing.T) {
		srv.Put(t, "zarr", "stores/a.zarr/", map[string][]byte{"chg": randBytes(7, 1000)})
		var buf bytes.Buffer
		p, err := o.FetchRange(ctx, "chg", "", 0, 100, &buf)
		if err != nil {
			t.Fatal(err)
		}
		srv.Put(t, "zarr", "stores/a.zarr/", map[string][]byte{"chg": randBytes(8, 1000)})
		buf.Reset()
		_, err = o.FetchRange(ctx, "chg", p.ETag, 100, 100, &buf)
		if !errors.Is(err, remote.ErrChanged) || buf.Len() != 0 {
			t.Fatalf("range of a replaced object: %v, %d bytes written", err, buf.Len())
		}
		_, err = o.FetchSuffix(ctx, "chg", p.ETag, 10, &buf)
		if !errors.Is(err, remote.ErrChanged) {
			t.Fatalf("suffix of a replaced object: %v", err)
		}
		// The new version revalidates as changed, and then as unchanged.
		nv, changed, err := o.FetchIfChanged(ctx, "chg", p.ETag, &buf)
		if err != nil || !changed || nv == p.ETag {
			t.Fatalf("FetchIfChanged after replace: %q %v %v", nv, changed, err)
		}
	})
	t.Run("Stats", func(t *testing.T) {
		st := o.Stats()
		if st.Requests == 0 || st.BytesReceived < 2<<20 || st.InFlight != 0 {
			t.Fatalf("stats: %+v", st)
		}
	})
}

func TestList(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "zarr")
	files := map[string][]byte{}
	for k, v := range storeFiles {
		files[k] = v
	}
	for i := range 57 {
		files[fmt.Sprintf("many/%d.0", i)] = []byte{byte(i)}
	}
	srv.Put(t, "zarr", "s.zarr/", files)
	srv.Put(t, "zarr", "s.zarr.bak/", map[string][]byte{"x": []byte("sibling that shares the prefix")})
	o := openT(t, srv, "s3://zarr/s.zarr/", Options{ListPageSize: 10})
	ctx := ctxT(t)

	names := func(es []remote.DirEntry) []string {
		var out []string
		for _, e := range es {
			n := e.Name
			if e.IsDir {
				n += "/"
			}
			out = append(out, n)
		}
		slices.Sort(out)
		return out
	}
	root, err := o.List(ctx, "")
	if got, want := names(root), []string{".zgroup", "a b/", "many/", "x/", "y/"}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("List root = %v, %v; want %v", got, err, want)
	}
	x, err := o.List(ctx, "x")
	if got, want := names(x), []string{".zarray", "0.0", "0.1", "sub/"}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("List x = %v, %v; want %v", got, err, want)
	}
	many, err := o.List(ctx, "many/")
	if err != nil || len(many) != 57 {
		t.Fatalf("List many (6 pages of 10): %d entries, %v", len(many), err)
	}
	if got, err := o.List(ctx, "nope"); err != nil || len(got) != 0 {
		t.Fatalf("List of a missing directory: %v, %v; want no entries (a bucket has no directories to miss)", got, err)
	}

	m, err := o.Manifest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Len() != len(files) {
		t.Fatalf("manifest has %d keys, want %d", m.Len(), len(files))
	}
	for k, v := range files {
		size, version, ok := m.Lookup(k)
		if !ok || size != int64(len(v)) {
			t.Fatalf("manifest %s: %d %q %v", k, size, version, ok)
		}
		var buf bytes.Buffer
		if got, err := o.Fetch(ctx, k, &buf); err != nil || got != version {
			t.Fatalf("manifest version of %s is %q, Fetch says %q (%v)", k, version, got, err)
		}
	}
	if got := names(m.Children("x")); !slices.Equal(got, []string{".zarray", "0.0", "0.1", "sub/"}) {
		t.Fatalf("manifest children of x: %v", got)
	}
	same, changed, err := o.RefreshManifest(ctx, m, "")
	if err != nil || changed || same != m {
		t.Fatalf("RefreshManifest unchanged: %v %v", changed, err)
	}
	srv.Put(t, "zarr", "s.zarr/", map[string][]byte{"x/0.1": []byte("rewritten")})
	m2, changed, err := o.RefreshManifest(ctx, m, "")
	if err != nil || !changed {
		t.Fatalf("RefreshManifest after a rewrite: %v %v", changed, err)
	}
	if size, _, _ := m2.Lookup("x/0.1"); size != int64(len("rewritten")) {
		t.Fatalf("refreshed size %d", size)
	}
	pm, _, err := o.RefreshManifest(ctx, nil, "x/")
	if err != nil || pm.Len() != 4 {
		t.Fatalf("manifest of prefix x/: %v, %v", pm, err)
	}

	small := openT(t, srv, "s3://zarr/s.zarr", Options{ManifestMaxKeys: 20})
	if _, err := small.Manifest(ctx); !errors.Is(err, remote.ErrNoManifest) {
		t.Fatalf("manifest over the cap: %v", err)
	}
	off := openT(t, srv, "s3://zarr/s.zarr", Options{ManifestMaxKeys: -1})
	if _, err := off.Manifest(ctx); !errors.Is(err, remote.ErrNoManifest) {
		t.Fatalf("manifest turned off: %v", err)
	}
}

func TestErrorsNameTheFix(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "zarr")
	srv.Put(t, "zarr", "s.zarr/", map[string][]byte{".zgroup": []byte(`{"zarr_format":2}`)})
	ctx := ctxT(t)

	check := func(name string, o *Origin, sentinel error, words ...string) {
		t.Helper()
		_, _, err := o.Get(ctx, ".zgroup", 1<<20)
		if !errors.Is(err, sentinel) {
			t.Errorf("%s: got %v, want %v", name, err, sentinel)
			return
		}
		for _, w := range words {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", name, err, w)
			}
		}
		if strings.Contains(err.Error(), s3test.RootSecret) {
			t.Errorf("%s: the secret is in the message", name)
		}
		t.Logf("%s: %v", name, err)
	}
	check("wrong secret", openT(t, srv, "s3://zarr/s.zarr", Options{
		Credentials: credentials.NewStaticCredentialsProvider(s3test.RootAccess, "wrong-secret", ""),
	}), remote.ErrForbidden, "AWS_SECRET_ACCESS_KEY", "SignatureDoesNotMatch")
	check("unknown key id", openT(t, srv, "s3://zarr/s.zarr", Options{
		Credentials: credentials.NewStaticCredentialsProvider("nobody", "whatever-secret", ""),
	}), remote.ErrForbidden, "AWS_ACCESS_KEY_ID")
	check("missing bucket", openT(t, srv, "s3://no-such-bucket/s.zarr", Options{}), ErrNoSuchBucket, "no-such-bucket", "bucket name")
	check("anonymous on a private bucket", openT(t, srv, "s3://zarr/s.zarr", Options{Anonymous: true}), remote.ErrForbidden, "anonymous", "not public")

	// A port nobody listens on.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + l.Addr().String()
	l.Close()
	start := time.Now()
	check("endpoint unreachable", openT(t, srv, "s3://zarr/s.zarr", Options{Endpoint: dead, Remote: remote.Options{RetryDeadline: 2 * time.Second}}),
		remote.ErrUnreachable, "--s3-endpoint", dead)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("unreachable endpoint took %s with a 2s retry budget", d)
	}

	// Listing: missing bucket is not "no listing".
	o := openT(t, srv, "s3://no-such-bucket/s.zarr", Options{})
	if _, err := o.List(ctx, ""); !errors.Is(err, ErrNoSuchBucket) {
		t.Errorf("List of a missing bucket: %v", err)
	}
	if _, err := o.Manifest(ctx); !errors.Is(err, ErrNoSuchBucket) || errors.Is(err, remote.ErrNoManifest) {
		t.Errorf("Manifest of a missing bucket: %v", err)
	}
}

// rotatingProvider hands out the current key pair with a short expiry, as
// STS or an instance role does; the SDK's credential cache asks again when
// it expires.
type rotatingProvider struct {
	access, secret atomic.Pointer[string]
	retrieved      atomic.Int64
}

func (p *rotatingProvider) set(access, secret string) {
	p.access.Store(&access)
	p.secret.Store(&secret)
}

func (p *rotatingProvider) Retrieve(context.Context) (aws.Credentials, error) {
	p.retrieved.Add(1)
	return aws.Credentials{AccessKeyID: *p.access.Load(), SecretAccessKey: *p.secret.Load(),
		CanExpire: true, Expires: time.Now().Add(1500 * time.Millisecond), Source: "test"}, nil
}

// TestCredentialRotation reads while the credentials rotate to a new key
// pair and the old pair is deleted: expiring credentials are refreshed by
// the SDK's cache, without reopening the origin. versitygw has no STS, so
// the two pairs are two users with full access.
func TestCredentialRotation(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "zarr")
	srv.Put(t, "zarr", "s.zarr/", storeFiles)
	srv.CreateUser(t, "reader1", "reader1-secret-aaaaaaaa")
	srv.CreateUser(t, "reader2", "reader2-secret-bbbbbbbb")
	p := &rotatingProvider{}
	p.set("reader1", "reader1-secret-aaaaaaaa")
	o := openT(t, srv, "s3://zarr/s.zarr", Options{Credentials: aws.NewCredentialsCache(p)})
	ctx := ctxT(t)
	read := func() error {
		var buf bytes.Buffer
		if _, err := o.Fetch(ctx, "x/0.0", &buf); err != nil {
			return err
		}
		if !bytes.Equal(buf.Bytes(), storeFiles["x/0.0"]) {
			return errors.New("wrong bytes")
		}
		return nil
	}
	if err := read(); err != nil {
		t.Fatal(err)
	}
	p.set("reader2", "reader2-secret-bbbbbbbb")
	srv.DeleteUser(t, "reader1")
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		if err := read(); err != nil && !errors.Is(err, remote.ErrForbidden) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// By now the old pair expired in the cache: every read works.
	for range 5 {
		if err := read(); err != nil {
			t.Fatalf("read after rotation: %v", err)
		}
	}
	if p.retrieved.Load() < 2 {
		t.Fatalf("credentials retrieved %d times", p.retrieved.Load())
	}
	// And the old pair really is dead.
	old := openT(t, srv, "s3://zarr/s.zarr", Options{Credentials: credentials.NewStaticCredentialsProvider("reader1", "reader1-secret-aaaaaaaa", "")})
	if _, _, err := old.Get(ctx, ".zgroup", 100); !errors.Is(err, remote.ErrForbidden) {
		t.Fatalf("deleted user still reads: %v", err)
	}
}
