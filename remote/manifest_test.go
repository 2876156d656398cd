package remote

import (
	"bytes"
	"context"
	"encoding/binary"
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
)

type manifestEntry struct {
	key     string
	size    int64
	version string
}

// encodeManifest builds an uncompressed manifest stream.
func encodeManifest(t testing.TB, entries []manifestEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := newManifestEncoder(&buf)
	if err := enc.header(); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := enc.add(e.key, e.size, e.version); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.end(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func manifestEntries(m *Manifest) []manifestEntry {
	var out []manifestEntry
	m.Keys(func(k string, size int64, v string) bool {
		out = append(out, manifestEntry{k, size, v})
		return true
	})
	return out
}

func TestManifestRoundTrip(t *testing.T) {
	tests := [][]manifestEntry{
		nil,
		{{"a", 0, `"1"`}},
		{{".zgroup", 24, `"e1"`}, {"a b/.zarray", 300, `"e2"`}, {"a b/0.0", 1 << 40, `"e3"`}, {"a.b", 7, ""}, {"a/0", 1, `"e5"`}, {"a/0.0", 2, `"e6"`}, {"ü/c/0/0", 3, `W/"weak"`}},
	}
	for i, entries := range tests {
		m, err := decodeManifest(bytes.NewReader(encodeManifest(t, entries)))
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if got := manifestEntries(m); !slices.Equal(got, entries) {
			t.Errorf("case %d: round trip\n got %v\nwant %v", i, got, entries)
		}
		if m.Len() != len(entries) || strongETag(m.ETag()) == "" {
			t.Errorf("case %d: Len %d, ETag %q", i, m.Len(), m.ETag())
		}
	}
	// Enough keys to fill several arena chunks, some with empty versions.
	var big []manifestEntry
	for i := range 120000 {
		v := fmt.Sprintf(`"%x"`, i*7919)
		if i%1000 == 0 {
			v = ""
		}
		big = append(big, manifestEntry{fmt.Sprintf("array/c/%06d/%d", i, i%7), int64(i), v})
	}
	mbig, err := decodeManifest(bytes.NewReader(encodeManifest(t, big)))
	if err != nil {
		t.Fatal(err)
	}
	if got := manifestEntries(mbig); !slices.Equal(got, big) {
		t.Errorf("large round trip differs")
	}
	if len(mbig.keys.chunks) < 2 {
		t.Errorf("the large case fills only %d arena chunk", len(mbig.keys.chunks))
	}
	for i := 0; i < len(big); i += 997 {
		size, v, ok := mbig.Lookup(big[i].key)
		if !ok || size != big[i].size || v != big[i].version {
			t.Errorf("Lookup(%q) = %d %q %v", big[i].key, size, v, ok)
		}
	}

	a := encodeManifest(t, tests[2])
	b := encodeManifest(t, tests[2][:3])
	ma, _ := decodeManifest(bytes.NewReader(a))
	mb, _ := decodeManifest(bytes.NewReader(b))
	ma2, _ := decodeManifest(bytes.NewReader(encodeManifest(t, tests[2])))
	if ma.ETag() == mb.ETag() || ma.ETag() != ma2.ETag() {
		t.Errorf("manifest tags: %s (full), %s (3 keys), %s (full again): want equal for equal listings only", ma.ETag(), mb.ETag(), ma2.ETag())
	}
}

func TestManifestQueries(t *testing.T) {
	entries := []manifestEntry{
		{".zgroup", 1, `"g"`}, {".zmetadata", 2, `"m"`},
		{"a.b", 3, `"ab"`},
		{"a/.zarray", 4, `"az"`}, {"a/0.0", 5, `"a00"`}, {"a/0.1", 6, `"a01"`},
		{"a/c/0/0", 7, `"ac00"`}, {"a/c/0/1", 8, `"ac01"`}, {"a/c/1/0", 9, `"ac10"`},
		{"a0", 10, `"a0"`},
		{"b/zarr.json", 11, `"bz"`},
	}
	m, err := decodeManifest(bytes.NewReader(encodeManifest(t, entries)))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		size, v, ok := m.Lookup(e.key)
		if !ok || size != e.size || v != e.version {
			t.Errorf("Lookup(%q) = %d %q %v, want %d %q", e.key, size, v, ok, e.size, e.version)
		}
	}
	for _, miss := range []string{"", "a", "a/", "a/c", "a/0.2", "b", "zz", ".z", "a/c/0/0/x"} {
		if _, _, ok := m.Lookup(miss); ok {
			t.Errorf("Lookup(%q) found a key", miss)
		}
	}
	children := func(dir string) string {
		var s []string
		for _, e := range m.Children(dir) {
			if e.IsDir {
				s = append(s, e.Name+"/")
			} else {
				s = append(s, e.Name)
			}
		}
		return strings.Join(s, " ")
	}
	for dir, want := range map[string]string{
		"":        ".zgroup .zmetadata a/ a.b a0 b/",
		"/":       ".zgroup .zmetadata a/ a.b a0 b/",
		"a":       ".zarray 0.0 0.1 c/",
		"a/":      ".zarray 0.0 0.1 c/",
		"a/c":     "0/ 1/",
		"a/c/0":   "0 1",
		"b":       "zarr.json",
		"a.b":     "",
		"nothing": "",
		"a/c/0/0": "",
	} {
		if got := children(dir); got != want {
			t.Errorf("Children(%q) = %q, want %q", dir, got, want)
		}
	}
	for dir, want := range map[string]bool{"": true, "a": true, "a/c/1": true, "b/": true, "a.b": false, "a0": false, "c": false, "a/c/2": false} {
		if got := m.IsDir(dir); got != want {
			t.Errorf("IsDir(%q) = %v, want %v", dir, got, want)
		}
	}
	n := 0
	m.Keys(func(string, int64, string) bool { n++; return n < 3 })
	if n != 3 {
		t.Errorf("Keys did not stop when fn returned false: %d calls", n)
	}
}

func TestManifestDecodeRejects(t *testing.T) {
	good := encodeManifest(t, []manifestEntry{{"a/0", 1, `"x"`}, {"a/1", 2, `"y"`}})
	// Every proper prefix of a valid stream is refused: a truncated manifest
	// must never pass for a shorter store.
	for n := 0; n < len(good); n++ {
		if _, err := decodeManifest(bytes.NewReader(good[:n])); err == nil {
			t.Fatalf("a stream cut at %d of %d bytes was accepted", n, len(good))
		}
	}
	rec := func(key string, shared int) []byte {
		r := []byte{recEntry}
		r = binary.AppendUvarint(r, uint64(shared))
		r = binary.AppendUvarint(r, uint64(len(key)-shared))
		r = append(r, key[shared:]...)
		r = binary.AppendUvarint(r, 1)
		r = binary.AppendUvarint(r, 3)
		return append(r, `"v"`...)
	}
	end := func(n int) []byte {
		r := []byte{recEnd}
		r = binary.AppendUvarint(r, uint64(n))
		r = binary.AppendUvarint(r, 3)
		return append(r, `"t"`...)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	hdr := []byte(manifestHeader)
	tests := []struct {
		name   string
		stream []byte
		want   error
	}{
		{"not a manifest", []byte("<html>hello</html>\n"), ErrNoManifest},
		{"empty", nil, ErrNoManifest},
		{"newer version", cat([]byte("zarrfs-manifest 2\n"), end(0)), ErrNoManifest},
		{"unsorted", cat(hdr, rec("b", 0), rec("a", 0), end(2)), ErrBadManifest},
		{"duplicate", cat(hdr, rec("a", 0), rec("a", 1), end(2)), ErrBadManifest},
		{"shared beyond previous", cat(hdr, rec("a", 0), rec("abc", 2), end(2)), ErrBadManifest},
		{"empty key", cat(hdr, rec("", 0), end(1)), ErrBadManifest},
		{"dot-dot segment", cat(hdr, rec("a/../b", 0), end(1)), ErrBadManifest},
		{"dot segment", cat(hdr, rec("./b", 0), end(1)), ErrBadManifest},
		{"empty segment", cat(hdr, rec("a//b", 0), end(1)), ErrBadManifest},
		{"absolute", cat(hdr, rec("/etc/passwd", 0), end(1)), ErrBadManifest},
		{"NUL", cat(hdr, rec("a\x00b", 0), end(1)), ErrBadManifest},
		{"wrong count", cat(hdr, rec("a", 0), end(2)), ErrBadManifest},
		{"data after the end", cat(hdr, rec("a", 0), end(1), rec("b", 0)), ErrBadManifest},
		{"unknown record", cat(hdr, []byte{'Z'}, end(0)), ErrBadManifest},
		{"no end record", cat(hdr, rec("a", 0)), ErrBadManifest},
		{"huge key length", cat(hdr, []byte{recEntry, 0, 0xff, 0xff, 0x03}), ErrBadManifest},
	}
	for _, tc := range tests {
		_, err := decodeManifest(bytes.NewReader(tc.stream))
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	var buf bytes.Buffer
	enc := newManifestEncoder(&buf)
	_ = enc.header()
	_ = enc.add("a", 1, `"x"`)
	_ = enc.fail("read directory b: permission denied")
	var se *ManifestServerError
	if _, err := decodeManifest(&buf); !errors.As(err, &se) || !strings.Contains(se.Message, "permission denied") {
		t.Errorf("error record: %v", err)
	}
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

func fetchManifestHTTP(t testing.TB, url string, hdr map[string]string) (*http.Response, *Manifest, error) {
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
	zr, err := zstd.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	m, err := decodeManifest(zr)
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
				if s := b.String(); s != "." && s != ".." && s != reservedSegment {
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
			_, base, _ := newTestServer(t, ServerConfig{Dir: dir, NoAuth: true})
			resp, m, err := fetchManifestHTTP(t, base+"/"+ManifestPath, nil)
			if err != nil || m == nil {
				t.Fatalf("manifest: %v %v", resp.Status, err)
			}
			if ct := resp.Header.Get("Content-Type"); ct != ManifestContentType {
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
				c, err := New(base, Options{})
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
	s, base, _ := newTestServer(t, ServerConfig{Dir: served})
	_ = s
	auth := map[string]string{"Authorization": "Bearer " + testToken}
	storeURL := base + "/store.zarr/"
	resp, m, err := fetchManifestHTTP(t, storeURL+ManifestPath, auth)
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
	_, mp, err := fetchManifestHTTP(t, storeURL+ManifestPath+"?prefix=a/0.", auth)
	if err != nil || mp == nil {
		t.Fatal(err)
	}
	if got := manifestEntries(mp); len(got) != 2 || got[0].key != "a/0.0" || got[1].key != "a/0.1" {
		t.Errorf("prefix a/0.: %v", got)
	}

	// Revalidation.
	etag := m.ETag()
	resp, _, _ = fetchManifestHTTP(t, storeURL+ManifestPath, map[string]string{"Authorization": auth["Authorization"], "If-None-Match": etag})
	if resp.StatusCode != 304 || resp.Header.Get("ETag") != etag {
		t.Errorf("If-None-Match with the current tag: %s ETag %q, want 304 %s", resp.Status, resp.Header.Get("ETag"), etag)
	}
	if err := os.WriteFile(filepath.Join(served, "store.zarr", "a", "1.0"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	resp, m2, _ := fetchManifestHTTP(t, storeURL+ManifestPath, map[string]string{"Authorization": auth["Authorization"], "If-None-Match": etag})
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
		{"GET", "/store.zarr/" + ManifestPath, nil, 401},
		{"GET", "/store.zarr/" + ManifestPath + "?token=" + testToken, authHdr(), 400},
		{"GET", "/store.zarr/.zarrfs/", authHdr(), 404},
		{"GET", "/store.zarr/.zarrfs/manifest/", authHdr(), 404},
		{"GET", "/store.zarr/.zarrfs/other", authHdr(), 404},
		{"GET", "/store.zarr/a/0.0/" + ManifestPath, authHdr(), 404},
		{"GET", "/no-such-store/" + ManifestPath, authHdr(), 404},
		{"GET", "/store.zarr/dirlink-out/" + ManifestPath, authHdr(), 404},
		{"GET", "/../" + ManifestPath, authHdr(), 400},
		{"HEAD", "/store.zarr/" + ManifestPath, authHdr(), 200},
		{"POST", "/store.zarr/" + ManifestPath, authHdr(), 405},
	} {
		resp, _ := rawRequest(t, base, tc.method, tc.target, tc.hdr)
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: %s, want %d", tc.method, tc.target, resp.Status, tc.want)
		}
	}
}

func TestClientManifest(t *testing.T) {
	served := serverTree(t)
	_, base, _ := newTestServer(t, ServerConfig{Dir: served})
	ctx := context.Background()

	c, err := New(base+"/store.zarr", Options{Token: testToken})
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

	noToken, _ := New(base+"/store.zarr", Options{})
	if _, err := noToken.Manifest(ctx); !errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrNoManifest) {
		t.Errorf("without a token: %v, want ErrUnauthorized (not ErrNoManifest)", err)
	}

	// Origins without a manifest: ErrNoManifest, with one request each.
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
		c, _ := New(u, Options{})
		_, err := c.Manifest(ctx)
		if !errors.Is(err, ErrNoManifest) {
			t.Errorf("%s: %v, want ErrNoManifest", name, err)
		}
	}
	if n != 1 {
		t.Errorf("the HTML origin got %d requests, want 1 (no retry for a definite answer)", n)
	}
}

func TestClientManifestRetriesAndTruncation(t *testing.T) {
	good := func() []byte {
		var buf bytes.Buffer
		zw, _ := zstd.NewWriter(&buf)
		zw.Write(encodeManifest(t, []manifestEntry{{"a", 1, `"x"`}, {"b", 2, `"y"`}}))
		zw.Close()
		return buf.Bytes()
	}()
	tests := []struct {
		name     string
		handlers []http.HandlerFunc
		wantErr  error // nil: success
		requests int32
	}{
		{"503 then ok", []http.HandlerFunc{
			func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) },
			func(w http.ResponseWriter, r *http.Request) { w.Write(good) },
		}, nil, 2},
		{"cut mid-stream then ok", []http.HandlerFunc{
			func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", fmt.Sprint(len(good)))
				w.Write(good[:len(good)/2])
			},
			func(w http.ResponseWriter, r *http.Request) { w.Write(good) },
		}, nil, 2},
		{"complete frames but no end record", []http.HandlerFunc{
			func(w http.ResponseWriter, r *http.Request) {
				zw, _ := zstd.NewWriter(w)
				zw.Write([]byte(manifestHeader))
				zw.Close()
			},
		}, ErrBadManifest, 1},
		{"damaged zstd", []http.HandlerFunc{
			func(w http.ResponseWriter, r *http.Request) {
				bad := bytes.Clone(good)
				bad[len(bad)-6] ^= 0xff
				w.Write(bad)
			},
		}, ErrBadManifest, 1},
		{"newer version", []http.HandlerFunc{
			func(w http.ResponseWriter, r *http.Request) {
				zw, _ := zstd.NewWriter(w)
				zw.Write([]byte("zarrfs-manifest 9\n"))
				zw.Close()
			},
		}, ErrNoManifest, 1},
		{"405", []http.HandlerFunc{func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(405) }}, ErrNoManifest, 1},
		{"403", []http.HandlerFunc{func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(403) }}, ErrNoManifest, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sc := &scripted{handlers: tc.handlers}
			srv := httptest.NewServer(sc)
			defer srv.Close()
			c, _ := newFakeTimeClient(t, srv.URL, Options{})
			m, err := c.Manifest(context.Background())
			switch {
			case tc.wantErr == nil && (err != nil || m.Len() != 2):
				t.Errorf("err %v, manifest %v", err, m)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Errorf("err %v, want %v", err, tc.wantErr)
			}
			if got := sc.n.Load(); got != tc.requests {
				t.Errorf("%d requests, want %d", got, tc.requests)
			}
		})
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
	_, base, _ := newTestServer(t, ServerConfig{Dir: dir, NoAuth: true})
	c, _ := New(base+"/store", Options{})
	_, err := c.Manifest(context.Background())
	var se *ManifestServerError
	if !errors.As(err, &se) || !strings.Contains(se.Message, "locked") {
		t.Errorf("err %v, want a ManifestServerError naming the directory", err)
	}
}

// TestManifestSymlinkCycle: a link to an ancestor is followed once per
// path, and the walk ends.
func TestManifestSymlinkCycle(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "s", "d"), 0o755)
	os.WriteFile(filepath.Join(dir, "s", "d", "f"), []byte("1"), 0o644)
	os.Symlink("..", filepath.Join(dir, "s", "d", "up"))
	_, base, _ := newTestServer(t, ServerConfig{Dir: dir, NoAuth: true})
	c, _ := New(base+"/s", Options{})
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
