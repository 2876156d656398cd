package integration

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These tests check the test origins themselves (no mount needed): what the end-to-end tests
// claim to exercise — counting, tokens, injected statuses, listings with and without
// dotfiles — must really be what the origins do.

func get(t *testing.T, client *http.Client, url, token string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestGoOriginHarness(t *testing.T) {
	fixturesReady.require(t)
	serve := filepath.Join(fixturesDir, "zarrita", "v2")
	zarray, err := os.ReadFile(filepath.Join(serve, "data.zarr", "2d.chunked.i2", ".zarray"))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("serves, lists dotfiles, counts", func(t *testing.T) {
		o := newOrigin(t, serve)
		code, body, hdr := get(t, http.DefaultClient, o.URL("data.zarr/2d.chunked.i2/.zarray"), "")
		if code != 200 || body != string(zarray) || hdr.Get("ETag") == "" {
			t.Errorf("GET .zarray: %d, ETag %q, body %q", code, hdr.Get("ETag"), body)
		}
		code, body, _ = get(t, http.DefaultClient, o.URL("data.zarr/2d.chunked.i2/"), "")
		if code != 200 || !strings.Contains(body, `href=".zarray"`) || !strings.Contains(body, `href="1.1"`) {
			t.Errorf("listing: %d %q", code, body)
		}
		if n := o.count("GET", "/data.zarr/2d.chunked.i2/.zarray"); n != 1 {
			t.Errorf("count of .zarray GETs = %d, want 1", n)
		}
		if n := o.count("", "/data.zarr/2d.chunked.i2"); n != 2 {
			t.Errorf("count below the array dir = %d, want 2", n)
		}
	})
	t.Run("token", func(t *testing.T) {
		o := newOrigin(t, serve, withToken("tok"))
		if code, _, _ := get(t, http.DefaultClient, o.URL("data.zarr/.zgroup"), ""); code != 401 {
			t.Errorf("without token: %d, want 401", code)
		}
		if code, _, _ := get(t, http.DefaultClient, o.URL("data.zarr/.zgroup"), "wrong"); code != 401 {
			t.Errorf("wrong token: %d, want 401", code)
		}
		if code, _, _ := get(t, http.DefaultClient, o.URL("data.zarr/.zgroup"), "tok"); code != 200 {
			t.Errorf("right token: %d, want 200", code)
		}
	})
	t.Run("status and no listings", func(t *testing.T) {
		o := newOrigin(t, serve, withoutListings(), withStatus(func(r *http.Request) int {
			if strings.HasSuffix(r.URL.Path, "/0.0") {
				return http.StatusForbidden
			}
			return 0
		}))
		for url, want := range map[string]int{
			"data.zarr/2d.chunked.i2/0.0":    403,
			"data.zarr/2d.chunked.i2/0.1":    200,
			"data.zarr/2d.chunked.i2/":       404,
			"data.zarr/2d.chunked.i2":        404,
			"data.zarr/":                     404,
			"data.zarr/2d.chunked.i2/.zattr": 404,
		} {
			if code, _, _ := get(t, http.DefaultClient, o.URL(url), ""); code != want {
				t.Errorf("GET %s: %d, want %d", url, code, want)
			}
		}
	})
	t.Run("TLS", func(t *testing.T) {
		o := newOrigin(t, serve, withTLS())
		if _, err := http.Get(o.URL("data.zarr/.zgroup")); err == nil {
			t.Errorf("a default client trusts the self-signed origin")
		}
		pemBytes, err := os.ReadFile(o.caPEM)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(pemBytes)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AddCert(cert)
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		if code, _, _ := get(t, client, o.URL("data.zarr/.zgroup"), ""); code != 200 {
			t.Errorf("with the CA: %d, want 200", code)
		}
	})
}

func TestNginxOriginHarness(t *testing.T) {
	fixturesReady.require(t)
	serve := filepath.Join(fixturesDir, "zarr-python-2.13")
	n := newNginx(t, serve)
	code, body, _ := get(t, http.DefaultClient, n.URL("fixture/"), "")
	if code != 200 || !strings.Contains(body, `href="flat/"`) {
		t.Fatalf("autoindex of the store: %d %q", code, body)
	}
	if strings.Contains(body, ".zgroup") {
		t.Errorf("nginx autoindex lists dotfiles; the tests assume it hides them")
	}
	code, body, _ = get(t, http.DefaultClient, n.URL("fixture/.zgroup"), "")
	if code != 200 || !strings.Contains(body, "zarr_format") {
		t.Errorf("GET .zgroup by name: %d %q", code, body)
	}
	// nginx logs a request after answering it: give the log a moment.
	deadline := time.Now().Add(5 * time.Second)
	for n.requestCount() < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := n.requestCount(); got != 2 {
		t.Errorf("access log has %d requests, want 2", got)
	}
}
