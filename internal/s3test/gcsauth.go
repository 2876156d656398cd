package s3test

// Google OAuth for gs:// tests without Google: a token endpoint that the
// credential files written here name as their token_uri, and a proxy that
// makes fake-gcs-server (which checks no token) a private bucket.

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TokenServer stands for Google's OAuth token endpoint: it issues tok-1,
// tok-2, … valid for TTL, for the JWT grant of a service account key and
// the refresh-token grant of a gcloud login (refresh token "1//refresh").
type TokenServer struct {
	*httptest.Server
	TTL time.Duration

	mu     sync.Mutex
	issued map[string]time.Time // token -> expiry
	scopes []string             // the scope each JWT grant asked for
	grants []string
	refuse bool
}

// NewTokenServer starts a TokenServer; it stops when the test ends.
func NewTokenServer(t testing.TB, ttl time.Duration) *TokenServer {
	ts := &TokenServer{TTL: ttl, issued: map[string]time.Time{}}
	ts.Server = httptest.NewServer(http.HandlerFunc(ts.serve))
	t.Cleanup(ts.Close)
	return ts
}

func (ts *TokenServer) serve(w http.ResponseWriter, r *http.Request) {
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
		// The assertion's claims, not verified: tests look at the scope.
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
			ts.refuse = true
		}
	default:
		http.Error(w, "unsupported grant "+grant, http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if ts.refuse {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"invalid_grant","error_description":"Token has been expired or revoked."}`)
		return
	}
	tok := "tok-" + strconv.Itoa(len(ts.issued)+1)
	ts.issued[tok] = time.Now().Add(ts.TTL)
	fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":%d}`, tok, int(ts.TTL/time.Second))
}

// Refuse makes the server answer invalid_grant, as Google does for a
// revoked login or a deleted key.
func (ts *TokenServer) Refuse() {
	ts.mu.Lock()
	ts.refuse = true
	ts.mu.Unlock()
}

// Valid reports whether an Authorization header carries a token this
// server issued that has not expired.
func (ts *TokenServer) Valid(auth string) bool {
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	ts.mu.Lock()
	defer ts.mu.Unlock()
	exp, known := ts.issued[tok]
	return ok && known && time.Now().Before(exp)
}

// Issued is the number of tokens issued.
func (ts *TokenServer) Issued() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.issued)
}

// Grants are the grant types asked for, and Scopes the scopes of the JWT
// grants, in order.
func (ts *TokenServer) Grants() (grants, scopes []string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.grants...), append([]string(nil), ts.scopes...)
}

// ServiceAccountKey writes a service account key file whose token_uri is
// the token server, and returns its path.
func ServiceAccountKey(t testing.TB, tokenURI string) string {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writeJSON(t, "sa.json", map[string]string{
		"type":           "service_account",
		"project_id":     "zarrfs-test",
		"private_key_id": "k1",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   "reader@zarrfs-test.iam.gserviceaccount.com",
		"client_id":      "1",
		"token_uri":      tokenURI,
	})
}

// AuthorizedUser writes what `gcloud auth application-default login`
// leaves, with the token server as token_uri, and returns its path.
func AuthorizedUser(t testing.TB, tokenURI string) string {
	return writeJSON(t, "application_default_credentials.json", map[string]string{
		"type":          "authorized_user",
		"client_id":     "cid.apps.googleusercontent.com",
		"client_secret": "secret",
		"refresh_token": "1//refresh",
		"token_uri":     tokenURI,
	})
}

func writeJSON(t testing.TB, name string, v any) string {
	doc, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// PrivateGCS puts a proxy in front of a GCS endpoint (fake-gcs-server) that
// answers 401, as GCS does for a private bucket, to any request without a
// live token of ts. It returns the proxy's endpoint and a function giving
// the number of requests let through and refused.
func PrivateGCS(t testing.TB, endpoint string, ts *TokenServer) (string, func() (passed, refused int)) {
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	// fake-gcs-server tells path-style from virtual-hosted requests by the
	// Host header: it must be its own.
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(u)
		pr.Out.Host = u.Host
	}}
	var mu sync.Mutex
	var passed, refused int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok := ts.Valid(r.Header.Get("Authorization"))
		mu.Lock()
		if ok {
			passed++
		} else {
			refused++
		}
		mu.Unlock()
		if !ok {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AuthenticationRequired</Code><Message>Authentication required.</Message></Error>`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return passed, refused
	}
}
