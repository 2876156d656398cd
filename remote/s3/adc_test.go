package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2/google"

	"github.com/zarrfs/zarrfs/remote"
)

// tokenServer stands for Google's OAuth token endpoint (a credential file's
// token_uri): it issues tok-1, tok-2, … valid for ttl, for the JWT grant of
// a service account key and the refresh-token grant of a gcloud login.
type tokenServer struct {
	*httptest.Server
	t   *testing.T
	ttl time.Duration

	mu     sync.Mutex
	issued map[string]time.Time // token -> expiry
	scopes []string             // the scope each JWT grant asked for
	grants []string
	refuse bool // answer invalid_grant, as for a revoked login
}

func newTokenServer(t *testing.T, ttl time.Duration) *tokenServer {
	ts := &tokenServer{t: t, ttl: ttl, issued: map[string]time.Time{}}
	ts.Server = httptest.NewServer(http.HandlerFunc(ts.serve))
	t.Cleanup(ts.Close)
	return ts
}

func (ts *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	grant := r.PostForm.Get("grant_type")
	ts.grants = append(ts.grants, grant)
	switch grant {
	case "urn:ietf:params:oauth:grant-type:jwt-bearer":
		// The assertion's claims, unverified: the test checks the scope.
		parts := strings.Split(r.PostForm.Get("assertion"), ".")
		var claims struct {
			Scope string `json:"scope"`
		}
		if len(parts) == 3 {
			payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
			_ = json.Unmarshal(payload, &claims)
		}
		ts.scopes = append(ts.scopes, claims.Scope)
	case "refresh_token":
		if r.PostForm.Get("refresh_token") != "1//refresh" {
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		}
	default:
		http.Error(w, "unsupported grant "+grant, http.StatusBadRequest)
		return
	}
	if ts.refuse {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"invalid_grant","error_description":"Token has been expired or revoked."}`)
		return
	}
	tok := "tok-" + strconv.Itoa(len(ts.issued)+1)
	ts.issued[tok] = time.Now().Add(ts.ttl)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":%d}`, tok, int(ts.ttl/time.Second))
}

// valid reports whether auth carries a token this server issued that has
// not expired.
func (ts *tokenServer) valid(auth string) bool {
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	ts.mu.Lock()
	defer ts.mu.Unlock()
	exp, known := ts.issued[tok]
	return ok && known && time.Now().Before(exp)
}

func (ts *tokenServer) count() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.issued)
}

// serviceAccountJSON writes a service account key file whose token_uri is
// the token server.
func serviceAccountJSON(t *testing.T, tokenURI string) string {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     "zarrfs-test",
		"private_key_id": "k1",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   "reader@zarrfs-test.iam.gserviceaccount.com",
		"client_id":      "1",
		"token_uri":      tokenURI,
	})
	p := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(p, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// authorizedUserJSON writes what `gcloud auth application-default login`
// leaves, with the token server as token_uri.
func authorizedUserJSON(t *testing.T, tokenURI string) string {
	doc, _ := json.Marshal(map[string]string{
		"type":          "authorized_user",
		"client_id":     "cid.apps.googleusercontent.com",
		"client_secret": "secret",
		"refresh_token": "1//refresh",
		"token_uri":     tokenURI,
	})
	p := filepath.Join(t.TempDir(), "application_default_credentials.json")
	if err := os.WriteFile(p, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// gcsStandIn is a private GCS bucket "bkt" (XML API, path-style) that
// accepts only live tokens of ts. The first whole GET of "big" sends half
// the object, pauses for pause, then breaks the connection, so the read
// resumes later with a Range under If-Match.
type gcsStandIn struct {
	ts      *tokenServer
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
	if !g.ts.valid(auth) {
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
		write func(*testing.T, string) string
		grant string
	}{
		{"service_account", serviceAccountJSON, "urn:ietf:params:oauth:grant-type:jwt-bearer"},
		{"authorized_user", authorizedUserJSON, "refresh_token"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Tokens live 11 s; oauth2 renews them 10 s early, so each is
			// used for 1 s, and the read paused for 1.5 s needs a new one.
			ts := newTokenServer(t, 11*time.Second)
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
			ts.mu.Lock()
			defer ts.mu.Unlock()
			for _, gr := range ts.grants {
				if gr != c.grant {
					t.Errorf("grant %q, want %q", gr, c.grant)
				}
			}
			for _, s := range ts.scopes {
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
	ts := newTokenServer(t, time.Hour)
	g := &gcsStandIn{ts: ts, objects: map[string][]byte{".zgroup": []byte("{}")}}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", serviceAccountJSON(t, ts.URL))
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
	if lastAuth() != "Bearer from-file" || ts.count() != 0 {
		t.Fatalf("with --token-file: sent %q, ADC asked for %d tokens", lastAuth(), ts.count())
	}
	if !errors.Is(err, remote.ErrUnauthorized) || !strings.Contains(err.Error(), "--token-file "+tokenFile) {
		t.Errorf("a refused token file: %v", err)
	}

	o, err = open(Options{TokenFile: tokenFile, Anonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = o.Get(ctx, ".zgroup", 100)
	if lastAuth() != "" || ts.count() != 0 {
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
	ts.mu.Lock()
	ts.refuse = true
	ts.mu.Unlock()
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
