package serve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/wire"
)

type manifestEntry struct {
	key     string
	size    int64
	version string
}

// decodeManifest decodes an uncompressed manifest stream into the client's
// Manifest (remote.ReadManifest reads the compressed form a response has).
func decodeManifest(r io.Reader) (*remote.Manifest, error) {
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(zw, r); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return remote.ReadManifest(&buf)
}

func manifestEntries(m *remote.Manifest) []manifestEntry {
	var out []manifestEntry
	m.Keys(func(k string, size int64, v string) bool {
		out = append(out, manifestEntry{k, size, v})
		return true
	})
	return out
}

// walkFiles lists the regular files below dir (no symlinks) as keys.
func walkFiles(t testing.TB, dir string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			out[filepath.ToSlash(rel)] = fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func fetchManifestHTTP(t testing.TB, url string, hdr map[string]string) (*http.Response, *remote.Manifest, error) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, resp.Body)
		return resp, nil, nil
	}
	m, err := remote.ReadManifest(resp.Body)
	return resp, m, err
}

// TestServerManifestMatchesTree: for random trees whose names mix the
// characters that sort around '/', the manifest lists exactly the regular
// files, in strictly increasing byte order, with the sizes and the ETags
// GET sends.
func TestServerManifestMatchesTree(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			dir := t.TempDir()
			rng := rand.New(rand.NewPCG(seed, 7))
			alphabet := []string{"a", "b", ".", "-", "0", "1", "A", "_", " ", "é"}
			name := func() string {
				var b strings.Builder
				for range 1 + rng.IntN(3) {
					b.WriteString(alphabet[rng.IntN(len(alphabet))])
				}
				if s := b.String(); s != "." && s != ".." && s != wire.ReservedSegment {
					return s
				}
				return "x"
			}
			for range 300 {
				p := dir
				for range rng.IntN(4) {
					p = filepath.Join(p, name())
					if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
						goto next
					}
				}
				if err := os.MkdirAll(p, 0o755); err != nil {
					t.Fatal(err)
				}
				p = filepath.Join(p, name())
				if fi, err := os.Stat(p); err == nil && fi.IsDir() {
					continue
				}
				if err := os.WriteFile(p, bytes.Repeat([]byte{'x'}, rng.IntN(50)), 0o644); err != nil {
					t.Fatal(err)
				}
			next:
			}
			want := walkFiles(t, dir)
			_, base, _ := newTestServer(t, Config{Dir: dir, NoAuth: true})
			resp, m, err := fetchManifestHTTP(t, base+"/"+wire.ManifestPath, nil)
			if err != nil || m == nil {
				t.Fatalf("manifest: %v %v", resp.Status, err)
			}
			if ct := resp.Header.Get("Content-Type"); ct != wire.ContentType {
				t.Errorf("Content-Type %q", ct)
			}
			var prev string
			got := map[string]int64{}
			m.Keys(func(k string, size int64, v string) bool {
				if k <= prev && prev != "" {
					t.Errorf("key %q after %q", k, prev)
				}
				prev = k
				got[k] = size
				return true
			})
			if len(got) != len(want) {
				t.Errorf("%d keys, want %d", len(got), len(want))
			}
			for k, size := range want {
				if got[k] != size {
					t.Errorf("key %q: size %d in the manifest, %d on disk (present %v)", k, got[k], size, got[k] != 0 || size == 0)
				}
			}
			// ETags agree with GET, for a sample of keys.
			checked := 0
			m.Keys(func(k string, size int64, v string) bool {
				c, err := remote.New(base, remote.Options{})
				if err != nil {
					t.Fatal(err)
				}
				var buf bytes.Buffer
				ver, err := c.Fetch(context.Background(), k, &buf)
				if err != nil || ver != v || int64(buf.Len()) != size {
					t.Errorf("Fetch(%q): version %q size %d err %v; manifest says %q %d", k, ver, buf.Len(), err, v, size)
				}
				checked++
				return checked < 40
			})
		})
	}
}

func TestServerManifestEndpoint(t *testing.T) {
	served := serverTree(t)
	s, base, _ := newTestServer(t, Config{Dir: served})
	_ = s
	auth := map[string]string{"Authorization": "Bearer " + testToken}
	storeURL := base + "/store.zarr/"
	resp, m, err := fetchManifestHTTP(t, storeURL+wire.ManifestPath, auth)
	if err != nil || m == nil {
		t.Fatalf("manifest: %s %v", resp.Status, err)
	}
	var keys []string
	m.Keys(func(k string, _ int64, _ string) bool { keys = append(keys, k); return true })
	want := []string{".zattrs", ".zgroup", "a/.zarray", "a/0.0", "a/0.1", "dirlink-in/.zarray", "dirlink-in/0.0", "dirlink-in/0.1",
		"empty", "link-in", "name with space"}
	if !slices.Equal(keys, want) {
		t.Errorf("keys (links out, FIFO and the link to an ancestor excluded):\n got %q\nwant %q", keys, want)
	}
	for _, k := range keys {
		resp, body := rawRequest(t, base, "GET", "/store.zarr/"+strings.ReplaceAll(k, " ", "%20"), authHdr())
		size, v, _ := m.Lookup(k)
		if resp.StatusCode != 200 || resp.Header.Get("ETag") != v || int64(len(body)) != size {
			t.Errorf("GET %s: %s ETag %s, %d bytes; manifest: %s, %d bytes", k, resp.Status, resp.Header.Get("ETag"), len(body), v, size)
		}
	}

	// Prefix filter: keys stay relative to the store.
	_, mp, err := fetchManifestHTTP(t, storeURL+wire.ManifestPath+"?prefix=a/0.", auth)
	if err != nil || mp == nil {
		t.Fatal(err)
	}
	if got := manifestEntries(mp); len(got) != 2 || got[0].key != "a/0.0" || got[1].key != "a/0.1" {
		t.Errorf("prefix a/0.: %v", got)
	}

	// Revalidation.
	etag := m.ETag()
	resp, _, _ = fetchManifestHTTP(t, storeURL+wire.ManifestPath, map[string]string{"Authorization": auth["Authorization"], "If-None-Match": etag})
	if resp.StatusCode != 304 || resp.Header.Get("ETag") != etag {
		t.Errorf("If-None-Match with the current tag: %s ETag %q, want 304 %s", resp.Status, resp.Header.Get("ETag"), etag)
	}
	if err := os.WriteFile(filepath.Join(served, "store.zarr", "a", "1.0"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	resp, m2, _ := fetchManifestHTTP(t, storeURL+wire.ManifestPath, map[string]string{"Authorization": auth["Authorization"], "If-None-Match": etag})
	if resp.StatusCode != 200 || m2 == nil || m2.ETag() == etag {
		t.Fatalf("after a change: %s", resp.Status)
	}
	if _, _, ok := m2.Lookup("a/1.0"); !ok {
		t.Error("the new key is missing")
	}

	// Auth applies; other paths below .zarrfs are not found; HEAD works.
	for _, tc := range []struct {
		method, target string
		hdr            map[string]string
		want           int
	}{
		{"GET", "/store.zarr/" + wire.ManifestPath, nil, 401},
		{"GET", "/store.zarr/" + wire.ManifestPath + "?token=" + testToken, authHdr(), 400},
		{"GET", "/store.zarr/.zarrfs/", authHdr(), 404},
		{"GET", "/store.zarr/.zarrfs/manifest/", authHdr(), 404},
		{"GET", "/store.zarr/.zarrfs/other", authHdr(), 404},
		{"GET", "/store.zarr/a/0.0/" + wire.ManifestPath, authHdr(), 404},
		{"GET", "/no-such-store/" + wire.ManifestPath, authHdr(), 404},
		{"GET", "/store.zarr/dirlink-out/" + wire.ManifestPath, authHdr(), 404},
		{"GET", "/../" + wire.ManifestPath, authHdr(), 400},
		{"HEAD", "/store.zarr/" + wire.ManifestPath, authHdr(), 200},
		{"POST", "/store.zarr/" + wire.ManifestPath, authHdr(), 405},
	} {
		resp, _ := rawRequest(t, base, tc.method, tc.target, tc.hdr)
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: %s, want %d", tc.method, tc.target, resp.Status, tc.want)
		}
	}
}

func TestClientManifest(t *testing.T) {
	served := serverTree(t)
	_, base, _ := newTestServer(t, Config{Dir: served})
	ctx := context.Background()

	c, err := remote.New(base+"/store.zarr", remote.Options{Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := c.Manifest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if size, v, ok := m.Lookup("a/0.0"); !ok || size != 100 {
		t.Errorf("Lookup a/0.0: %d %q %v", size, v, ok)
	} else if ver, err := c.Fetch(ctx, "a/0.0", io.Discard); err != nil || ver != v {
		t.Errorf("Fetch version %q (%v), manifest version %q", ver, err, v)
	}
	same, changed, err := c.RefreshManifest(ctx, m, "")
	if err != nil || changed || same != m {
		t.Errorf("RefreshManifest of an unchanged store: changed=%v err=%v", changed, err)
	}
	sub, err := c.ManifestPrefix(ctx, "a/")
	if err != nil || sub.Len() != 3 {
		t.Errorf("ManifestPrefix a/: %v, %v", sub, err)
	}

	noToken, _ := remote.New(base+"/store.zarr", remote.Options{})
	if _, err := noToken.Manifest(ctx); !errors.Is(err, remote.ErrUnauthorized) || errors.Is(err, remote.ErrNoManifest) {
		t.Errorf("without a token: %v, want remote.ErrUnauthorized (not remote.ErrNoManifest)", err)
	}

	// Origins without a manifest: remote.ErrNoManifest, with one request each.
	static := httptest.NewServer(http.FileServer(http.Dir(served)))
	defer static.Close()
	n := 0
	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<!doctype html><p>single-page app</p>")
	}))
	defer html.Close()
	for name, u := range map[string]string{"Go file server": static.URL + "/store.zarr", "HTML for every path": html.URL + "/store.zarr"} {
		c, _ := remote.New(u, remote.Options{})
		_, err := c.Manifest(ctx)
		if !errors.Is(err, remote.ErrNoManifest) {
			t.Errorf("%s: %v, want remote.ErrNoManifest", name, err)
		}
	}
	if n != 1 {
		t.Errorf("the HTML origin got %d requests, want 1 (no retry for a definite answer)", n)
	}
}

// TestManifestServerFailure: a directory the server cannot read ends the
// stream with an error record, and the client reports it.
func TestManifestServerFailure(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads every directory; the permission failure cannot be staged")
	}
	dir := t.TempDir()
	locked := filepath.Join(dir, "store", "locked")
	if err := os.MkdirAll(locked, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "store", "a"), []byte("1"), 0o644)
	os.Chmod(locked, 0)
	defer os.Chmod(locked, 0o755)
	_, base, _ := newTestServer(t, Config{Dir: dir, NoAuth: true})
	c, _ := remote.New(base+"/store", remote.Options{})
	_, err := c.Manifest(context.Background())
	var se *remote.ManifestServerError
	if !errors.As(err, &se) || !strings.Contains(se.Message, "locked") {
		t.Errorf("err %v, want a remote.ManifestServerError naming the directory", err)
	}
}

// TestManifestSymlinkCycle: a link to an ancestor is followed once per
// path, and the walk ends.
func TestManifestSymlinkCycle(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "s", "d"), 0o755)
	os.WriteFile(filepath.Join(dir, "s", "d", "f"), []byte("1"), 0o644)
	os.Symlink("..", filepath.Join(dir, "s", "d", "up"))
	_, base, _ := newTestServer(t, Config{Dir: dir, NoAuth: true})
	c, _ := remote.New(base+"/s", remote.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := c.Manifest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := manifestEntries(m); len(got) != 1 || got[0].key != "d/f" {
		t.Errorf("keys %v, want only d/f", got)
	}
}
