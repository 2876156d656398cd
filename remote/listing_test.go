package remote

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Entries of the store the captured pages under testdata/index list:
// captured from nginx 1.22 (autoindex html and json), python3.11 -m
// http.server and Go's http.FileServer; the apache_* pages are written by
// hand after mod_autoindex's formats (HTMLTable, FancyIndexing <pre>, plain).
var (
	capturedDirs  = []string{"a b", "c", "q#h", "x", "é ü"}
	capturedFiles = []string{
		"0.0", "a_very_long_chunk_file_name_that_nginx_truncates_in_the_link_text.0.0",
		"amp&lt.txt", "c:d", "pct%25.bin", `quote"s`, "sp ace.txt",
	}
	apacheEntries = []DirEntry{{"0.0.0", false}, {"0.0.1", false}, {"sub dir", true}}
)

// entries builds a sorted listing; names ending in "/" are directories.
func entries(names ...string) []DirEntry {
	var out []DirEntry
	for _, n := range names {
		name, isDir := strings.CutSuffix(n, "/")
		out = append(out, DirEntry{Name: name, IsDir: isDir})
	}
	slices.SortFunc(out, func(a, b DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func capturedRoot(dotfiles bool, replace map[string]string) []DirEntry {
	var names []string
	for _, d := range capturedDirs {
		names = append(names, d+"/")
	}
	for _, f := range capturedFiles {
		if r, ok := replace[f]; ok {
			f = r
		}
		names = append(names, f)
	}
	if dotfiles {
		names = append(names, ".zarray", ".zattrs")
	}
	return entries(names...)
}

func TestParseIndexCapturedPages(t *testing.T) {
	tests := []struct {
		file, dirURL, contentType string
		want                      []DirEntry
	}{
		{"nginx.html", "http://127.0.0.1:18732/", "text/html", capturedRoot(false, nil)},
		{"nginx_loc.html", "http://127.0.0.1:18732/loc/", "text/html", capturedRoot(false, nil)},
		{"nginx.json", "http://127.0.0.1:18732/json/", "application/json", capturedRoot(false, nil)},
		{"nginx_x.html", "http://127.0.0.1:18732/x/", "text/html", entries("0")},
		{"nginx_empty.html", "http://127.0.0.1:18732/a%20b/", "text/html", nil},
		{"nginx_empty.json", "http://127.0.0.1:18732/json/a%20b/", "application/json", nil},
		{"python.html", "http://127.0.0.1:18731/", "text/html; charset=utf-8", capturedRoot(true, nil)},
		{"python_x.html", "http://127.0.0.1:18731/x/", "text/html; charset=utf-8", entries("0")},
		{"python_empty.html", "http://127.0.0.1:18731/a%20b/", "text/html; charset=utf-8", nil},
		// Go's FileServer does not HTML-escape "&" in hrefs, so "amp&lt.txt"
		// reads back as "amp<.txt", as in a browser.
		{"gofileserver.html", "http://127.0.0.1:41234/", "text/html; charset=utf-8", capturedRoot(true, map[string]string{"amp&lt.txt": "amp<.txt"})},
		{"gofileserver_x.html", "http://127.0.0.1:41234/x/", "text/html; charset=utf-8", entries("0")},
		{"apache_table.html", "https://storage.example.org/stores/era5.zarr/t2m", "text/html;charset=UTF-8",
			append(entries(".zarray", "c:d"), apacheEntries...)},
		{"apache_pre.html", "https://storage.example.org/stores/era5.zarr/t2m/", "text/html", apacheEntries},
		{"apache_plain.html", "https://storage.example.org:443/stores/era5.zarr/t2m/", "text/html", apacheEntries},
		{"python.html", "http://127.0.0.1:18731/", "", capturedRoot(true, nil)},
		{"nginx.json", "http://127.0.0.1:18732/json/", "", capturedRoot(false, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.contentType, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", "index", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := ParseIndex(mustURL(t, tt.dirURL), tt.contentType, f)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			slices.SortFunc(want, func(a, b DirEntry) int { return strings.Compare(a.Name, b.Name) })
			if !slices.Equal(got, want) {
				t.Errorf("got  %v\nwant %v", got, want)
			}
		})
	}
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestParseIndexLinks(t *testing.T) {
	const dir = "https://Host.example:443/store/a%20b/"
	tests := []struct {
		name, href string
		want       []DirEntry // nil: dropped
	}{
		{"relative file", "0.0", entries("0.0")},
		{"relative dir", "c/", entries("c/")},
		{"dot-slash", "./c:d", entries("c:d")},
		{"encoded dotfile", "%2Ezarray", entries(".zarray")},
		{"absolute path", "/store/a%20b/x/", entries("x/")},
		{"absolute URL same host", "https://host.example/store/a%20b/y", entries("y")},
		{"absolute URL other host", "https://other.example/store/a%20b/y", nil},
		{"other port", "https://host.example:8443/store/a%20b/y", nil},
		{"other scheme", "http://host.example/store/a%20b/y", nil},
		{"protocol-relative other host", "//other.example/store/a%20b/y", nil},
		{"parent", "../", nil},
		{"parent absolute", "/store/", nil},
		{"self", "./", nil},
		{"self absolute", "/store/a%20b/", nil},
		{"dot", ".", nil},
		{"encoded dot-dot", "%2E%2E/", nil},
		{"grandchild", "c/0", nil},
		{"encoded slash", "a%2Fb", nil},
		{"sort link", "?C=N;O=D", nil},
		{"query", "0.0?download=1", nil},
		{"fragment", "#top", nil},
		{"fragment on child", "0.0#x", nil},
		{"mailto", "mailto:admin@example.org", nil},
		{"javascript", "javascript:void(0)", nil},
		{"NUL", "a%00b", nil},
		{"empty", "", nil},
		{"spaces around", "  0.1  ", entries("0.1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			page := `<html><body><a href="` + htmlAttrEscape(tt.href) + `">link</a></body></html>`
			got, err := ParseIndex(mustURL(t, dir), "text/html", strings.NewReader(page))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("href %q: got %v, want %v", tt.href, got, tt.want)
			}
		})
	}
}

func htmlAttrEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", `"`, "&quot;").Replace(s)
}

func TestParseIndexMerges(t *testing.T) {
	page := `<a href="x">x</a><A HREF="x/">x/</A><a href="b">b</a><a href="b">b again</a><a href="a"/><a name="n">`
	got, err := ParseIndex(mustURL(t, "http://h/s/"), "text/html", strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	if want := entries("a", "b", "x/"); !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestParseIndexRejects(t *testing.T) {
	tests := []struct{ name, contentType, body string }{
		{"plain text", "text/plain", "0.0\n0.1\n"},
		{"octet-stream", "application/octet-stream", "\x00\x01"},
		{"S3 XML", "application/xml", `<?xml version="1.0"?><ListBucketResult></ListBucketResult>`},
		{"bad media type", "text/html; charset", "<a href=x>"},
		{"JSON object", "application/json", `{"name":"x"}`},
		{"JSON truncated", "application/json", `[{"name":"x","type":"file"},`},
		{"JSON entry without name", "application/json", `[{"type":"file"}]`},
		{"JSON strings", "application/json", `["a","b"]`},
		{"sniffed binary", "", "\x89PNG\r\n\x1a\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseIndex(mustURL(t, "http://h/s/"), tt.contentType, strings.NewReader(tt.body))
			if !errors.Is(err, ErrNoListing) {
				t.Errorf("err = %v, want ErrNoListing", err)
			}
		})
	}
}

func TestParseIndexJSONEntries(t *testing.T) {
	body := `[{"name":"d","type":"directory"},{"name":"f","type":"file","size":3},{"name":"sock","type":"other"},` +
		`{"name":"..","type":"directory"},{"name":"a/b","type":"file"},{"name":"","type":"file"},{"name":"%2Ex","type":"file"}]`
	got, err := ParseIndex(mustURL(t, "http://h/s/"), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	// JSON names are literal: "%2Ex" is not decoded.
	if want := entries("%2Ex", "d/", "f"); !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestListGoFileServer(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"a b/.zarray", "a b/0.0", "a b/c/0", ".zgroup", "x/.zarray"} {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(http.StripPrefix("/my store", http.FileServer(http.Dir(root))))
	defer srv.Close()
	c, _ := newFakeTimeClient(t, srv.URL+"/my%20store", Options{})
	tests := []struct {
		dir  string
		want []DirEntry
	}{
		{"", entries(".zgroup", "a b/", "x/")},
		{"a b", entries(".zarray", "0.0", "c/")},
		{"a b/", entries(".zarray", "0.0", "c/")},
		{"a b/c", entries("0")},
	}
	for _, tt := range tests {
		got, err := c.List(context.Background(), tt.dir)
		if err != nil {
			t.Fatalf("List(%q): %v", tt.dir, err)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("List(%q) = %v, want %v", tt.dir, got, tt.want)
		}
	}
	if _, err := c.List(context.Background(), "missing"); !errors.Is(err, ErrNoListing) {
		t.Errorf("List(missing): err = %v, want ErrNoListing", err)
	}
}

func TestListStatuses(t *testing.T) {
	page := func(contentType, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasSuffix(r.URL.Path, "/") {
				t.Errorf("directory requested without trailing slash: %q", r.URL.Path)
			}
			w.Header().Set("Content-Type", contentType)
			w.Write([]byte(body))
		}
	}
	tests := []struct {
		name     string
		handlers []http.HandlerFunc
		want     []DirEntry
		sentinel error
		requests int32
	}{
		{"404", []http.HandlerFunc{status(404)}, nil, ErrNoListing, 1},
		{"403", []http.HandlerFunc{status(403)}, nil, ErrNoListing, 1},
		{"405", []http.HandlerFunc{status(405)}, nil, ErrNoListing, 1},
		{"401", []http.HandlerFunc{status(401)}, nil, ErrUnauthorized, 1},
		{"200 not an index", []http.HandlerFunc{page("application/xml", "<ListBucketResult/>")}, nil, ErrNoListing, 1},
		{"503 then html", []http.HandlerFunc{status(503), page("text/html", `<a href="0.0">0.0</a>`)}, entries("0.0"), nil, 2},
		{"json", []http.HandlerFunc{page("application/json", `[{"name":"c","type":"directory"}]`)}, entries("c/"), nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &scripted{handlers: tt.handlers}
			srv := httptest.NewServer(h)
			defer srv.Close()
			c, _ := newFakeTimeClient(t, srv.URL, Options{})
			got, err := c.List(context.Background(), "grp/arr")
			if tt.sentinel != nil {
				if !errors.Is(err, tt.sentinel) {
					t.Fatalf("err = %v, want %v", err, tt.sentinel)
				}
				if !strings.Contains(err.Error(), srv.URL+"/grp/arr/") {
					t.Errorf("err = %q does not name the URL", err)
				}
			} else if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("List = %v, %v; want %v", got, err, tt.want)
			}
			if n := h.n.Load(); n != tt.requests {
				t.Errorf("requests = %d, want %d", n, tt.requests)
			}
		})
	}
}

func TestListRetriesBrokenBody(t *testing.T) {
	h := &scripted{handlers: []http.HandlerFunc{
		func(w http.ResponseWriter, r *http.Request) {
			hijackWrite(t, w, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 500\r\n\r\n<a href=\"0.0\">0.0</a>")
		},
		func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte(`<a href="0.0">0.0</a><a href="0.1">0.1</a>`))
		},
	}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c, _ := newFakeTimeClient(t, srv.URL, Options{})
	got, err := c.List(context.Background(), "")
	if err != nil || !slices.Equal(got, entries("0.0", "0.1")) {
		t.Fatalf("List = %v, %v", got, err)
	}
	if n := h.n.Load(); n != 2 {
		t.Errorf("requests = %d, want 2", n)
	}
}

func FuzzParseIndex(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "index", "*"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		ct := "text/html"
		if strings.HasSuffix(file, ".json") {
			ct = "application/json"
		}
		f.Add(ct, data)
	}
	dir := mustURL(f, "http://example.org/store/dir/")
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		got, err := ParseIndex(dir, contentType, strings.NewReader(string(body)))
		if err != nil {
			return
		}
		for i, e := range got {
			if !validName(e.Name) {
				t.Errorf("invalid name %q", e.Name)
			}
			if i > 0 && got[i-1].Name >= e.Name {
				t.Errorf("not sorted or duplicated: %q then %q", got[i-1].Name, e.Name)
			}
		}
	})
}
