package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2/google"

	"github.com/zarrfs/zarrfs/internal/s3test"
	"github.com/zarrfs/zarrfs/remote"
)

// gcsStandIn is a private GCS bucket "bkt" (XML API, path-style) that
// accepts only live tokens of ts. The first whole GET of "big" sends half
// the object, pauses for pause, then breaks the connection, so the read
// resumes later with a Range under If-Match.
type gcsStandIn struct {
	ts      *s3test.TokenServer
	objects map[string][]byte
	pause   time.Duration

	mu    sync.Mutex
	auths []string // Authorization of each request, in order
	paths []string
	broke bool
}

func (g *gcsStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	g.mu.Lock()
	g.auths = append(g.auths, auth)
	g.paths = append(g.paths, r.URL.Path+" "+r.Header.Get("Range"))
	breakNow := !g.broke && r.URL.Path == "/bkt/s.zarr/big" && r.Header.Get("Range") == ""
	if breakNow {
		g.broke = true
	}
	g.mu.Unlock()
	if !g.ts.Valid(auth) {
		s3Error(w, http.StatusUnauthorized, "AuthenticationRequired")
		return
	}
	data, ok := g.objects[strings.TrimPrefix(r.URL.Path, "/bkt/s.zarr/")]
	if !ok {
		s3Error(w, http.StatusNotFound, "NoSuchKey")
		return
	}
	w.Header().Set("ETag", `"v1"`)
	if im := r.Header.Get("If-Match"); im != "" && im != `"v1"` {
		s3Error(w, http.StatusPreconditionFailed, "PreconditionFailed")
		return
	}
	if rng := r.Header.Get("Range"); rng != "" {
		var first int
		if _, err := fmt.Sscanf(rng, "bytes=%d-", &first); err != nil || first >= len(data) {
			s3Error(w, http.StatusRequestedRangeNotSatisfiable, "InvalidRange")
			return
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, len(data)-1, len(data)))
		w.Header().Set("Content-Length", strconv.Itoa(len(data)-first))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data[first:])
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	if !breakNow {
		w.Write(data)
		return
	}
	w.Write(data[:len(data)/2])
	w.(http.Flusher).Flush()
	time.Sleep(g.pause)
	panic(http.ErrAbortHandler) // the connection breaks mid-body
}

func (g *gcsStandIn) log() (auths, paths []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.auths...), append([]string(nil), g.paths...)
}

// TestGCSApplicationDefaultCredentials: with neither --token-file nor a
// token, gs:// requests carry tokens from Application Default Credentials
// (a service account key in GOOGLE_APPLICATION_CREDENTIALS, a gcloud
// login), asked with the read-only storage scope, and a token that expires
// during a read is refreshed before the read resumes: no remount, no 401.
func TestGCSApplicationDefaultCredentials(t *testing.T) {
	for _, c := range []struct {
		name  string
		write func(testing.TB, string) string
		grant string
	}{
		{"service_account", s3test.ServiceAccountKey, "urn:ietf:params:oauth:grant-type:jwt-bearer"},
		{"authorized_user", s3test.AuthorizedUser, "refresh_token"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Tokens live 11 s; oauth2 renews them 10 s early, so each is
			// used for 1 s, and the read paused for 1.5 s needs a new one.
			ts := s3test.NewTokenServer(t, 11*time.Second)
			t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", c.write(t, ts.URL))
			big := randBytes(21, 300_000)
			g := &gcsStandIn{ts: ts, pause: 1500 * time.Millisecond,
				objects: map[string][]byte{".zgroup": []byte(`{"zarr_format":2}`), "big": big}}
			srv := httptest.NewServer(g)
			t.Cleanup(srv.Close)

			o, err := Open(ctxT(t), "gs://bkt/s.zarr", Options{Endpoint: srv.URL, Remote: remote.Options{RetryDeadline: 10 * time.Second}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(o.Close)
			ctx := ctxT(t)
			if data, _, err := o.Get(ctx, ".zgroup", 100); err != nil || string(data) != `{"zarr_format":2}` {
				t.Fatalf("Get with ADC: %q %v", data, err)
			}
			var buf bytes.Buffer
			if _, err := o.Fetch(ctx, "big", &buf); err != nil || !bytes.Equal(buf.Bytes(), big) {
				t.Fatalf("Fetch across a token's expiry: %d bytes, %v", buf.Len(), err)
			}
			auths, paths := g.log()
			if len(auths) != 3 {
				t.Fatalf("requests %q, want the .zgroup GET, the broken GET and its resume", paths)
			}
			if auths[0] != "Bearer tok-1" || auths[1] != "Bearer tok-1" || auths[2] != "Bearer tok-2" {
				t.Errorf("tokens %q for %q: want tok-1, tok-1, then tok-2 for the resume after tok-1 expired", auths, paths)
			}
			grants, scopes := ts.Grants()
			for _, gr := range grants {
				if gr != c.grant {
					t.Errorf("grant %q, want %q", gr, c.grant)
				}
			}
			for _, s := range scopes {
				if s != GCSScope {
					t.Errorf("service account asked for scope %q, want %q", s, GCSScope)
				}
			}
		})
	}
}

// TestGCSCredentialOrder: --token-file (or a token) comes before ADC,
// --s3-anonymous before both, no credentials at all is anonymous, and each
// failure says how to get credentials.
func TestGCSCredentialOrder(t *testing.T) {
	ts := s3test.NewTokenServer(t, time.Hour)
	g := &gcsStandIn{ts: ts, objects: map[string][]byte{".zgroup": []byte("{}")}}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", s3test.ServiceAccountKey(t, ts.URL))
	ctx := ctxT(t)
	open := func(opts Options) (*Origin, error) {
		opts.Endpoint = srv.URL
		opts.Remote.RetryDeadline = 2 * time.Second
		o, err := Open(ctx, "gs://bkt/s.zarr", opts)
		if err == nil {
			t.Cleanup(o.Close)
		}
		return o, err
	}
	lastAuth := func() string {
		auths, _ := g.log()
		return auths[len(auths)-1]
	}

	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := open(Options{TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = o.Get(ctx, ".zgroup", 100)
	if lastAuth() != "Bearer from-file" || ts.Issued() != 0 {
		t.Fatalf("with --token-file: sent %q, ADC asked for %d tokens", lastAuth(), ts.Issued())
	}
	if !errors.Is(err, remote.ErrUnauthorized) || !strings.Contains(err.Error(), "--token-file "+tokenFile) {
		t.Errorf("a refused token file: %v", err)
	}

	o, err = open(Options{TokenFile: tokenFile, Anonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = o.Get(ctx, ".zgroup", 100)
	if lastAuth() != "" || ts.Issued() != 0 {
		t.Fatalf("with --s3-anonymous: sent %q", lastAuth())
	}
	if !errors.Is(err, remote.ErrUnauthorized) || !strings.Contains(err.Error(), "gcloud auth application-default login") {
		t.Errorf("anonymous on a private bucket: %v", err)
	}

	o, err = open(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := o.Get(ctx, ".zgroup", 100); err != nil || lastAuth() != "Bearer tok-1" {
		t.Fatalf("ADC: %v, sent %q", err, lastAuth())
	}

	// A revoked login fails at Open, naming the fix.
	ts.Refuse()
	if _, err := open(Options{}); err == nil || !strings.Contains(err.Error(), "gcloud auth application-default login") || !strings.Contains(err.Error(), "invalid_grant") {
		t.Errorf("revoked ADC: %v", err)
	}
	// A credentials file that does not parse fails at Open, naming it.
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte("{"), 0o600)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", bad)
	if _, err := open(Options{}); err == nil || !strings.Contains(err.Error(), "GOOGLE_APPLICATION_CREDENTIALS="+bad) {
		t.Errorf("broken GOOGLE_APPLICATION_CREDENTIALS: %v", err)
	}

	// No credentials anywhere: anonymous requests, and a private bucket's
	// refusal says how to get credentials.
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	findDefaultCredentials = func(context.Context, ...string) (*google.Credentials, error) {
		return nil, errors.New("google: could not find default credentials")
	}
	t.Cleanup(func() { findDefaultCredentials = google.FindDefaultCredentials })
	o, err = open(Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = o.Get(ctx, ".zgroup", 100)
	if lastAuth() != "" {
		t.Fatalf("without credentials: sent %q", lastAuth())
	}
	for _, want := range []string{"anonymous", "gcloud auth application-default login", "--token-file"} {
		if !errors.Is(err, remote.ErrUnauthorized) || !strings.Contains(err.Error(), want) {
			t.Errorf("private bucket without credentials: %v; want it to say %q", err, want)
		}
	}
}

// TestGCSMetadataServer: on a GCE VM (GCE_METADATA_HOST stands for one),
// Application Default Credentials are the VM's service account, whose
// tokens come from the metadata server, asked for the read-only scope.
// It runs in a child process: whether the process runs on GCE is decided
// once per process (metadata.OnGCE), and must not leak into other tests.
func TestGCSMetadataServer(t *testing.T) {
	if os.Getenv("ZARRFS_TEST_GCE_CHILD") != "1" {
		cmd := exec.CommandContext(ctxT(t), os.Args[0], "-test.run=^TestGCSMetadataServer$", "-test.count=1")
		cmd.Env = append(os.Environ(), "ZARRFS_TEST_GCE_CHILD=1")
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "PASS") {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	var mu sync.Mutex
	var scopes []string
	meta := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata-Flavor") != "Google" {
			http.Error(w, "missing Metadata-Flavor", http.StatusForbidden)
			return
		}
		w.Header().Set("Metadata-Flavor", "Google")
		switch r.URL.Path {
		case "/computeMetadata/v1/project/project-id":
			fmt.Fprint(w, "zarrfs-test")
		case "/computeMetadata/v1/instance/service-accounts/default/token":
			mu.Lock()
			scopes = append(scopes, r.URL.Query().Get("scopes"))
			mu.Unlock()
			fmt.Fprint(w, `{"access_token":"vm-token","token_type":"Bearer","expires_in":3599}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(meta.Close)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	t.Setenv("HOME", t.TempDir()) // no gcloud login
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(meta.URL, "http://"))
	var auth atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth.Store(r.Header.Get("Authorization"))
		w.Write([]byte("{}"))
	}))
	t.Cleanup(srv.Close)
	o, err := Open(ctxT(t), "gs://bkt/s.zarr", Options{Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	if _, _, err := o.Get(ctxT(t), ".zgroup", 100); err != nil {
		t.Fatal(err)
	}
	if got, _ := auth.Load().(string); got != "Bearer vm-token" {
		t.Errorf("sent Authorization %q, want the metadata server's token", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(scopes) == 0 || scopes[0] != GCSScope {
		t.Errorf("metadata server asked for scopes %q, want %q", scopes, GCSScope)
	}
}
