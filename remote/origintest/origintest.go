// Package origintest is the test suite every remote.Origin must pass: the
// contract the filesystem and the cache rely on, checked the same way for
// the HTTP client over a static origin, over `zarrfs serve`, and for the S3
// and GCS origins to come.
//
// It owns the contract's checks and the store they run on. It must not
// know how a backend is built or served: the caller's Open function makes
// one, filled with the files asked for, and says what it can do.
package origintest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/remote"
)

// Backend is one origin under test.
type Backend struct {
	// Origin serves the files Open was given, keys relative to the store.
	Origin remote.Origin
	// Put replaces the object key with data (or creates it): afterwards
	// the origin serves data under a new version.
	Put func(t *testing.T, key string, data []byte)
	// Versioned: every object has a strong version (ETag), so conditional
	// and pinned reads can be checked. Without it, versions may be "".
	Versioned bool
	// Lists: List must answer. Otherwise an error wrapping
	// remote.ErrNoListing is accepted too.
	Lists bool
	// Manifests: Manifest must answer. Otherwise an error wrapping
	// remote.ErrNoManifest is accepted too.
	Manifests bool
}

// Open makes a backend serving files (store-relative key → content). It
// releases what it made with t.Cleanup.
type Open func(t *testing.T, files map[string][]byte) Backend

// big is the object ranged reads are checked on: larger than a read
// buffer, with a pattern that shows a misplaced byte.
var big = func() []byte {
	b := make([]byte, 100_000)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}()

// store is the store every check starts from: metadata documents, chunks
// in nested directories, an empty object, a name that needs escaping.
func store() map[string][]byte {
	return map[string][]byte{
		".zgroup":         []byte(`{"zarr_format": 2}`),
		".zattrs":         []byte(`{}`),
		"a/.zarray":       []byte(`{"shape": [10], "chunks": [5]}`),
		"a/0.0":           big,
		"a/0.1":           []byte("x"),
		"a/c/0":           bytes.Repeat([]byte("c0"), 50),
		"b/zarr.json":     []byte(`{"zarr_format": 3, "node_type": "group"}`),
		"empty":           {},
		"name with space": []byte("spaced"),
		"deep/er/x/y/z.0": []byte("deep"),
	}
}

// Run checks the Origin contract on backends made by open, each subtest on
// a fresh one.
func Run(t *testing.T, open Open) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b Backend, files map[string][]byte)
	}{
		{"Get", testGet},
		{"GetLimit", testGetLimit},
		{"NotFound", testNotFound},
		{"InvalidKeys", testInvalidKeys},
		{"Fetch", testFetch},
		{"FetchIfChanged", testFetchIfChanged},
		{"FetchRange", testFetchRange},
		{"FetchSuffix", testFetchSuffix},
		{"RangeChanged", testRangeChanged},
		{"List", testList},
		{"Manifest", testManifest},
		{"RefreshManifest", testRefreshManifest},
		{"Concurrent", testConcurrent},
		{"Stats", testStats},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files := store()
			b := open(t, maps.Clone(files))
			if b.Origin == nil {
				t.Fatal("Open gave no Origin")
			}
			tc.fn(t, b, files)
		})
	}
}

func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// sortedKeys lists files' keys in byte order.
func sortedKeys(files map[string][]byte) []string {
	return slices.Sorted(maps.Keys(files))
}

// strong reports whether v is a strong entity tag.
func strong(v string) bool {
	return len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' && !strings.Contains(v[1:len(v)-1], `"`)
}

// checkVersion fails unless v is a usable version for b.
func checkVersion(t *testing.T, b Backend, what, v string) {
	t.Helper()
	if v == "" && b.Versioned {
		t.Errorf("%s: no version from a versioned backend", what)
	}
	if v != "" && !strong(v) {
		t.Errorf("%s: version %q is not a strong ETag", what, v)
	}
}

func testGet(t *testing.T, b Backend, files map[string][]byte) {
	ctx := ctxOf(t)
	for _, k := range sortedKeys(files) {
		data, obj, err := b.Origin.Get(ctx, k, 1<<20)
		if err != nil {
			t.Errorf("Get(%q): %v", k, err)
			continue
		}
		if !bytes.Equal(data, files[k]) || obj.Size != int64(len(files[k])) {
			t.Errorf("Get(%q): %d bytes (Size %d), want %d bytes", k, len(data), obj.Size, len(files[k]))
		}
		if b.Versioned && !strong(obj.ETag) {
			t.Errorf("Get(%q): ETag %q, want a strong ETag", k, obj.ETag)
		}
	}
}

func testGetLimit(t *testing.T, b Backend, files map[string][]byte) {
	ctx := ctxOf(t)
	n := int64(len(files["a/0.0"]))
	if data, _, err := b.Origin.Get(ctx, "a/0.0", n); err != nil || int64(len(data)) != n {
		t.Errorf("Get with maxBytes the object's size: %d bytes, %v", len(data), err)
	}
	data, _, err := b.Origin.Get(ctx, "a/0.0", n-1)
	switch {
	case err == nil:
		t.Errorf("Get of a %d-byte object with maxBytes %d: %d bytes and no error", n, n-1, len(data))
	case errors.Is(err, fs.ErrNotExist):
		t.Errorf("Get over the limit: %v, which claims the object is missing", err)
	}
	if _, _, err := b.Origin.Get(ctx, "a/0.1", 0); err == nil {
		t.Error("Get with maxBytes 0 gave no error")
	}
}

func testNotFound(t *testing.T, b Backend, _ map[string][]byte) {
	ctx := ctxOf(t)
	missing := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, remote.ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s of a missing key: %v, want remote.ErrNotFound (and fs.ErrNotExist)", op, err)
		}
	}
	for _, k := range []string{"missing", "a/9.9", "nodir/0", "a/0.0/below-a-file"} {
		var buf bytes.Buffer
		_, _, err := b.Origin.Get(ctx, k, 1<<20)
		missing("Get "+k, err)
		_, err = b.Origin.Fetch(ctx, k, &buf)
		missing("Fetch "+k, err)
		_, _, err = b.Origin.FetchIfChanged(ctx, k, `"0123"`, &buf)
		missing("FetchIfChanged "+k, err)
		_, err = b.Origin.FetchRange(ctx, k, "", 0, 10, &buf)
		missing("FetchRange "+k, err)
		_, err = b.Origin.FetchSuffix(ctx, k, "", 10, &buf)
		missing("FetchSuffix "+k, err)
		if buf.Len() != 0 {
			t.Errorf("%s: %d bytes written for a missing key", k, buf.Len())
		}
	}
}

func testInvalidKeys(t *testing.T, b Backend, _ map[string][]byte) {
	ctx := ctxOf(t)
	for _, k := range []string{"", "/a/0.0", "a//0.0", "a/./0.0", "a/../a/0.0", "../x", "a/0.0/", "a\x00b"} {
		var buf bytes.Buffer
		if _, _, err := b.Origin.Get(ctx, k, 1<<20); err == nil {
			t.Errorf("Get(%q) accepted", k)
		}
		if _, err := b.Origin.Fetch(ctx, k, &buf); err == nil {
			t.Errorf("Fetch(%q) accepted", k)
		}
		if _, err := b.Origin.FetchRange(ctx, k, "", 0, 1, &buf); err == nil {
			t.Errorf("FetchRange(%q) accepted", k)
		}
		if buf.Len() != 0 {
			t.Errorf("%q: %d bytes written for an invalid key", k, buf.Len())
		}
	}
}

func testFetch(t *testing.T, b Backend, files map[string][]byte) {
	ctx := ctxOf(t)
	for _, k := range sortedKeys(files) {
		var buf bytes.Buffer
		v, err := b.Origin.Fetch(ctx, k, &buf)
		if err != nil {
			t.Errorf("Fetch(%q): %v", k, err)
			continue
		}
		if !bytes.Equal(buf.Bytes(), files[k]) {
			t.Errorf("Fetch(%q): %d bytes, want %d", k, buf.Len(), len(files[k]))
		}
		checkVersion(t, b, "Fetch "+k, v)
		again, err := b.Origin.Fetch(ctx, k, io.Discard)
		if err != nil || again != v {
			t.Errorf("Fetch(%q) again: version %q (%v), first %q: an unchanged object keeps its version", k, again, err, v)
		}
		if _, obj, err := b.Origin.Get(ctx, k, 1<<20); err == nil && v != "" && obj.ETag != v {
			t.Errorf("%s: Get's ETag %q, Fetch's version %q", k, obj.ETag, v)
		}
	}
}

func testFetchIfChanged(t *testing.T, b Backend, files map[string][]byte) {
	ctx := ctxOf(t)
	const k = "a/0.1"
	var buf bytes.Buffer
	v, err := b.Origin.Fetch(ctx, k, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if v != "" {
		buf.Reset()
		nv, changed, err := b.Origin.FetchIfChanged(ctx, k, v, &buf)
		if err != nil || changed || nv != v || buf.Len() != 0 {
			t.Errorf("FetchIfChanged with the current version: %q changed=%v, %d bytes, %v; want %q unchanged, nothing written", nv, changed, buf.Len(), err, v)
		}
	}
	buf.Reset()
	nv, changed, err := b.Origin.FetchIfChanged(ctx, k, "", &buf)
	if err != nil || !changed || !bytes.Equal(buf.Bytes(), files[k]) || nv != v {
		t.Errorf("FetchIfChanged without a version: %q changed=%v %q %v; want a plain Fetch (%q)", nv, changed, buf.Bytes(), err, v)
	}

	next := []byte("a new version, longer than the old one")
	b.Put(t, k, next)
	buf.Reset()
	nv, changed, err = b.Origin.FetchIfChanged(ctx, k, v, &buf)
	switch {
	case err != nil:
		t.Fatalf("FetchIfChanged after a change: %v", err)
	case !changed || !bytes.Equal(buf.Bytes(), next):
		t.Errorf("FetchIfChanged after a change: changed=%v, %q; want the new content", changed, buf.Bytes())
	case v != "" && nv == v:
		t.Errorf("FetchIfChanged after a change: the version stayed %q", v)
	}
	checkVersion(t, b, "FetchIfChanged after a change", nv)
	if nv != "" {
		got, err := b.Origin.Fetch(ctx, k, io.Discard)
		if err != nil || got != nv {
			t.Errorf("Fetch after FetchIfChanged: version %q (%v), FetchIfChanged said %q", got, err, nv)
		}
	}
}

// checkPiece compares a ranged read with what it should have delivered.
func checkPiece(t *testing.T, what string, p remote.Piece, got []byte, obj []byte, off, n int64, version string) {
	t.Helper()
	total := int64(len(obj))
	end := min(off+n, total)
	want := obj[off:end]
	if !bytes.Equal(got, want) {
		t.Errorf("%s: %d bytes, want bytes [%d, %d) (%d)", what, len(got), off, end, len(want))
	}
	if p.Offset != off || p.Length != end-off || p.Total != total {
		t.Errorf("%s: Piece{Offset %d, Length %d, Total %d}, want {%d, %d, %d}", what, p.Offset, p.Length, p.Total, off, end-off, total)
	}
	if version != "" && p.ETag != version {
		t.Errorf("%s: Piece.ETag %q, want %q", what, p.ETag, version)
	}
}

func testFetchRange(t *testing.T, b Backend, files map[string][]byte) {
	ctx := ctxOf(t)
	const k = "a/0.0"
	obj := files[k]
	size := int64(len(obj))
	v, err := b.Origin.Fetch(ctx, k, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	versions := []string{""}
	if v != "" {
		versions = append(versions, v)
	}
	for _, version := range versions {
		for _, r := range [][2]int64{{0, 1}, {0, 4096}, {1, 1}, {12345, 54321}, {size - 1, 1}, {size - 10, 10}, {size - 10, 1000}, {0, size}, {0, 2 * size}} {
			var buf bytes.Buffer
			p, err := b.Origin.FetchRange(ctx, k, version, r[0], r[1], &buf)
			what := fmt.Sprintf("FetchRange(%d, %d, version %q)", r[0], r[1], version)
			if err != nil {
				t.Errorf("%s: %v", what, err)
				continue
			}
			checkPiece(t, what, p, buf.Bytes(), obj, r[0], r[1], v)
		}
	}
	for _, r := range [][2]int64{{size, 1}, {size + 100, 10}} {
		var buf bytes.Buffer
		_, err := b.Origin.FetchRange(ctx, k, "", r[0], r[1], &buf)
		if err == nil || errors.Is(err, fs.ErrNotExist) || errors.Is(err, remote.ErrChanged) || buf.Len() != 0 {
			t.Errorf("FetchRange(%d, %d) of a %d-byte object: %v, %d bytes; want an error saying the range is past the end, nothing written", r[0], r[1], size, err, buf.Len())
		}
	}
	for _, r := range [][2]int64{{-1, 10}, {0, 0}, {0, -5}} {
		if _, err := b.Origin.FetchRange(ctx, k, "", r[0], r[1], io.Discard); err == nil {
			t.Errorf("FetchRange(%d, %d) accepted", r[0], r[1])
		}
	}
}

func testFetchSuffix(t *testing.T, b Backend, files map[string][]byte) {
	ctx := ctxOf(t)
	v, err := b.Origin.Fetch(ctx, "a/0.0", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a/0.0", "a/c/0", "a/0.1"} {
		obj := files[k]
		size := int64(len(obj))
		version := ""
		if k == "a/0.0" {
			version = v
		}
		for _, n := range []int64{1, 10, size, size + 1, 1 << 20} {
			var buf bytes.Buffer
			p, err := b.Origin.FetchSuffix(ctx, k, version, n, &buf)
			what := fmt.Sprintf("FetchSuffix(%s, %d, version %q)", k, n, version)
			if err != nil {
				t.Errorf("%s: %v", what, err)
				continue
			}
			off := max(0, size-n)
			checkPiece(t, what, p, buf.Bytes(), obj, off, size-off, version)
			if b.Versioned && !strong(p.ETag) {
				t.Errorf("%s: Piece.ETag %q, want the object's version", what, p.ETag)
			}
		}
	}
	if _, err := b.Origin.FetchSuffix(ctx, "a/0.0", "", 0, io.Discard); err == nil {
		t.Error("FetchSuffix of 0 bytes accepted")
	}
}

// testRangeChanged: a ranged read pinned to a version the object no longer
// has fails with ErrChanged and writes nothing of the new version.
func testRangeChanged(t *testing.T, b Backend, files map[string][]byte) {
	ctx := ctxOf(t)
	const k = "a/c/0"
	v, err := b.Origin.Fetch(ctx, k, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if v == "" {
		t.Skip("the backend has no versions to pin a read to")
	}
	other := `"0000000000000000-not-a-version"`
	check := func(what, version string) {
		t.Helper()
		var buf bytes.Buffer
		_, err := b.Origin.FetchRange(ctx, k, version, 0, 10, &buf)
		if !errors.Is(err, remote.ErrChanged) || buf.Len() != 0 {
			t.Errorf("FetchRange %s: %v, %d bytes; want ErrChanged, nothing written", what, err, buf.Len())
		}
		buf.Reset()
		_, err = b.Origin.FetchSuffix(ctx, k, version, 10, &buf)
		if !errors.Is(err, remote.ErrChanged) || buf.Len() != 0 {
			t.Errorf("FetchSuffix %s: %v, %d bytes; want ErrChanged, nothing written", what, err, buf.Len())
		}
	}
	check("with another version", other)
	b.Put(t, k, bytes.Repeat([]byte("n1"), 70))
	check("with the version before a change", v)
	nv, err := b.Origin.Fetch(ctx, k, io.Discard)
	if err != nil || nv == v {
		t.Fatalf("Fetch after a change: version %q (%v), was %q", nv, err, v)
	}
	var buf bytes.Buffer
	p, err := b.Origin.FetchRange(ctx, k, nv, 2, 4, &buf)
	if err != nil || buf.String() != "n1n1" || p.ETag != nv || p.Total != 140 {
		t.Errorf("FetchRange with the new version: %q %+v %v", buf.String(), p, err)
	}
}

// children is what a listing of dir must hold: the direct children of dir
// among files, subdirectories marked.
func children(files map[string][]byte, dir string) map[string]bool {
	out := map[string]bool{}
	pfx := ""
	if dir != "" {
		pfx = dir + "/"
	}
	for k := range files {
		rest, ok := strings.CutPrefix(k, pfx)
		if !ok {
			continue
		}
		name, _, isDir := strings.Cut(rest, "/")
		out[name] = out[name] || isDir
	}
	return out
}

func testList(t *testing.T, b Backend, files map[string][]byte) {
	ctx := ctxOf(t)
	for _, dir := range []string{"", "a", "a/", "a/c", "b", "deep/er", "deep/er/x/y"} {
		got, err := b.Origin.List(ctx, dir)
		if err != nil {
			if !b.Lists && errors.Is(err, remote.ErrNoListing) {
				continue
			}
			t.Errorf("List(%q): %v", dir, err)
			continue
		}
		want := children(files, strings.TrimSuffix(dir, "/"))
		if !slices.IsSortedFunc(got, func(a, b remote.DirEntry) int { return strings.Compare(a.Name, b.Name) }) {
			t.Errorf("List(%q) is not sorted by name: %v", dir, got)
		}
		seen := map[string]bool{}
		for _, e := range got {
			isDir, ok := want[e.Name]
			switch {
			case !ok:
				t.Errorf("List(%q) has %q, which is not in the directory", dir, e.Name)
			case isDir != e.IsDir:
				t.Errorf("List(%q): %q IsDir=%v, want %v", dir, e.Name, e.IsDir, isDir)
			case seen[e.Name]:
				t.Errorf("List(%q) has %q twice", dir, e.Name)
			}
			seen[e.Name] = true
		}
		// Dotfiles may be left out (nginx never lists them; clients ask
		// for metadata documents by name).
		for name := range want {
			if !seen[name] && !strings.HasPrefix(name, ".") {
				t.Errorf("List(%q) lacks %q", dir, name)
			}
		}
	}
	got, err := b.Origin.List(ctx, "no-such-dir")
	if err == nil && len(got) != 0 {
		t.Errorf("List of a missing directory: %v", got)
	}
	if err != nil && !errors.Is(err, remote.ErrNoListing) {
		t.Errorf("List of a missing directory: %v, want no entries or ErrNoListing", err)
	}
}

// manifestOf returns b's manifest, or nil (the test is done) when b keeps
// none and need not.
func manifestOf(t *testing.T, b Backend) *remote.Manifest {
	t.Helper()
	m, err := b.Origin.Manifest(ctxOf(t))
	switch {
	case err == nil && m == nil:
		t.Fatal("Manifest: no manifest and no error")
	case err == nil:
		return m
	case !b.Manifests && errors.Is(err, remote.ErrNoManifest):
		return nil
	}
	t.Fatalf("Manifest: %v", err)
	return nil
}

func testManifest(t *testing.T, b Backend, files map[string][]byte) {
	ctx := ctxOf(t)
	m := manifestOf(t, b)
	if m == nil {
		return
	}
	if m.Len() != len(files) {
		t.Errorf("manifest of %d keys, want %d", m.Len(), len(files))
	}
	var keys []string
	m.Keys(func(k string, size int64, version string) bool {
		keys = append(keys, k)
		data, ok := files[k]
		if !ok {
			t.Errorf("manifest lists %q, which is not in the store", k)
			return true
		}
		if size != int64(len(data)) {
			t.Errorf("manifest: %q is %d bytes, want %d", k, size, len(data))
		}
		v, err := b.Origin.Fetch(ctx, k, io.Discard)
		if err != nil || v != version {
			t.Errorf("manifest: %q version %q, Fetch says %q (%v)", k, version, v, err)
		}
		return true
	})
	if want := sortedKeys(files); !slices.Equal(keys, want) {
		t.Errorf("manifest keys:\n got %q\nwant %q", keys, want)
	}
	if _, _, ok := m.Lookup("missing"); ok {
		t.Error("manifest Lookup found a missing key")
	}
	for dir, want := range map[string]bool{"": true, "a": true, "a/c": true, "deep/er/x": true, "a/0.0": false, "nodir": false} {
		if m.IsDir(dir) != want {
			t.Errorf("manifest IsDir(%q) = %v, want %v", dir, !want, want)
		}
	}
	for _, dir := range []string{"", "a", "deep/er"} {
		want := children(files, dir)
		var got []string
		for _, e := range m.Children(dir) {
			if want[e.Name] != e.IsDir {
				t.Errorf("manifest Children(%q): %q IsDir=%v", dir, e.Name, e.IsDir)
			}
			got = append(got, e.Name)
		}
		if !slices.Equal(got, slices.Sorted(maps.Keys(want))) {
			t.Errorf("manifest Children(%q) = %q", dir, got)
		}
	}
}

func testRefreshManifest(t *testing.T, b Backend, files map[string][]byte) {
	ctx := ctxOf(t)
	m := manifestOf(t, b)
	if m == nil {
		return
	}
	same, changed, err := b.Origin.RefreshManifest(ctx, m, "")
	if err != nil || changed || same != m {
		t.Errorf("RefreshManifest of an unchanged store: changed=%v, same manifest %v, %v", changed, same == m, err)
	}
	_, oldVersion, _ := m.Lookup("a/0.1")
	b.Put(t, "a/0.1", []byte("changed"))
	b.Put(t, "a/9.9", []byte("new key"))
	next, changed, err := b.Origin.RefreshManifest(ctx, m, "")
	if err != nil || !changed || next == nil {
		t.Fatalf("RefreshManifest after a change: changed=%v, %v", changed, err)
	}
	if size, v, ok := next.Lookup("a/0.1"); !ok || size != 7 || v == oldVersion {
		t.Errorf("after a change: a/0.1 is %d bytes, version %q (was %q)", size, v, oldVersion)
	}
	if _, _, ok := next.Lookup("a/9.9"); !ok || next.Len() != len(files)+1 {
		t.Errorf("after a change: the new key is missing (%d keys)", next.Len())
	}
	if _, changed, err := b.Origin.RefreshManifest(ctx, next, ""); err != nil || changed {
		t.Errorf("RefreshManifest of the new manifest: changed=%v, %v", changed, err)
	}
}

func testConcurrent(t *testing.T, b Backend, files map[string][]byte) {
	ctx := ctxOf(t)
	keys := sortedKeys(files)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 3 * len(keys) {
				k := keys[(g+i)%len(keys)]
				var buf bytes.Buffer
				if _, err := b.Origin.Fetch(ctx, k, &buf); err != nil || !bytes.Equal(buf.Bytes(), files[k]) {
					t.Errorf("concurrent Fetch(%q): %d bytes, %v", k, buf.Len(), err)
					return
				}
				if len(files[k]) > 1 {
					buf.Reset()
					if _, err := b.Origin.FetchRange(ctx, k, "", 1, 1, &buf); err != nil || buf.Len() != 1 || buf.Bytes()[0] != files[k][1] {
						t.Errorf("concurrent FetchRange(%q): %q, %v", k, buf.Bytes(), err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

func testStats(t *testing.T, b Backend, files map[string][]byte) {
	ctx := ctxOf(t)
	before := b.Origin.Stats()
	if _, err := b.Origin.Fetch(ctx, "a/0.0", io.Discard); err != nil {
		t.Fatal(err)
	}
	_, _ = b.Origin.Fetch(ctx, "missing", io.Discard)
	after := b.Origin.Stats()
	if after.Requests <= before.Requests {
		t.Errorf("Stats: %d requests after two fetches, %d before", after.Requests, before.Requests)
	}
	if got := after.BytesReceived - before.BytesReceived; got < int64(len(files["a/0.0"])) {
		t.Errorf("Stats: %d bytes received for a %d-byte object", got, len(files["a/0.0"]))
	}
	if after.InFlight != 0 {
		t.Errorf("Stats: %d requests in flight after every call returned", after.InFlight)
	}
	if after.Failures != before.Failures || after.Errors.Total() != before.Errors.Total() {
		t.Errorf("Stats: a missing object counted as a failure (%d → %d failures, %+v)", before.Failures, after.Failures, after.Errors)
	}
}
