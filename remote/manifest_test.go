package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/zarrfs/zarrfs/remote/wire"
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
	enc := wire.NewEncoder(&buf)
	if err := enc.WriteHeader(); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := enc.Add(e.key, e.size, e.version); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.End(); err != nil {
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
		if m.Len() != len(entries) || wire.StrongETag(m.ETag()) == "" {
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
				zw.Write([]byte(wire.HeaderLine))
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
