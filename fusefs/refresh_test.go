package fusefs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/internal/storetest"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/serve"
	"github.com/zarrfs/zarrfs/vfs"
	"github.com/zarrfs/zarrfs/vfs/store"
	"github.com/zarrfs/zarrfs/zarr"
)

// The refresh logic is tested over a store in a temporary directory that
// the test rewrites between refreshes. With a manifest, the directory is
// served by the real `zarrfs serve` handler (serve.New), so manifests
// and versions are exactly what a mount sees; without one it is read like a
// static origin with consolidated metadata.

// testStore is a small zarr v2 store: arrays a (4 chunks) and b (2 chunks)
// with consolidated metadata.
func testStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeStore(t, dir, map[string]string{
		".zgroup":   `{"zarr_format": 2}`,
		"a/.zarray": storetest.ZarrayDoc(4),
		"a/.zattrs": `{"units": "K"}`,
		"a/0":       "a0", "a/1": "a1", "a/2": "a2", "a/3": "a3",
		"b/.zarray": storetest.ZarrayDoc(2),
		"b/0":       "b0", "b/1": "b1",
	})
	return dir
}

// writeStore writes (or, for "" values, removes) keys and then rewrites
// .zmetadata from the documents on disk, as zarr.consolidate_metadata does.
// Every write is a new file renamed into place, so it gets a new version.
func writeStore(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for key, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(key))
		if data == "" {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		storetest.WriteReplacing(t, p, data)
	}
	meta := map[string]json.RawMessage{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !zarr.IsMetadataName(d.Name()) || d.Name() == ".zmetadata" {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		meta[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := json.Marshal(map[string]any{"zarr_consolidated_format": 1, "metadata": meta})
	if err != nil {
		t.Fatal(err)
	}
	storetest.WriteReplacing(t, filepath.Join(dir, ".zmetadata"), string(doc))
}

// testOrigin is an Origin over a store directory: a real client of the
// `zarrfs serve` handler when manifest is set, else the static
// storetest.DirOrigin. fail, when set, answers every request; getHook runs
// before each Get.
type testOrigin struct {
	mu         sync.Mutex
	static     *storetest.DirOrigin
	client     *remote.Client
	fail       error
	noManifest bool
	getHook    func(key string)
}

func newTestOrigin(t *testing.T, dir string, manifest bool) *testOrigin {
	t.Helper()
	o := &testOrigin{static: &storetest.DirOrigin{Root: dir}}
	if !manifest {
		return o
	}
	srv, err := serve.New(serve.Config{Dir: dir, NoAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	o.client, err = remote.New(hs.URL, remote.Options{RetryDeadline: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.client.Close)
	return o
}

func (o *testOrigin) state() (error, bool, func(string)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.fail, o.noManifest, o.getHook
}

func (o *testOrigin) set(fail error, noManifest bool, hook func(string)) {
	o.mu.Lock()
	o.fail, o.noManifest, o.getHook = fail, noManifest, hook
	o.mu.Unlock()
}

func (o *testOrigin) Get(ctx context.Context, key string, maxBytes int64) ([]byte, remote.Object, error) {
	fail, _, hook := o.state()
	if fail != nil {
		return nil, remote.Object{}, fail
	}
	data, obj, err := o.static.Get(ctx, key, maxBytes)
	if hook != nil {
		hook(key) // after the read: the answer is the version of that moment
	}
	return data, obj, err
}

func (o *testOrigin) List(ctx context.Context, dir string) ([]remote.DirEntry, error) {
	if fail, _, _ := o.state(); fail != nil {
		return nil, fail
	}
	return o.static.List(ctx, dir)
}

// FetchSuffix: the test stores have no shards, so no suffix is ever asked
// for; an origin that cannot answer one says it ignores ranges.
func (o *testOrigin) FetchSuffix(ctx context.Context, key, version string, n int64, w io.Writer) (remote.Piece, error) {
	return remote.Piece{}, fmt.Errorf("suffix of %s: %w", key, remote.ErrRangesUnsupported)
}

func (o *testOrigin) Manifest(ctx context.Context) (*remote.Manifest, error) {
	fail, noManifest, _ := o.state()
	switch {
	case fail != nil:
		return nil, fail
	case noManifest || o.client == nil:
		return o.static.Manifest(ctx)
	}
	return o.client.Manifest(ctx)
}

func (o *testOrigin) RefreshManifest(ctx context.Context, prev *remote.Manifest, prefix string) (*remote.Manifest, bool, error) {
	fail, noManifest, _ := o.state()
	switch {
	case fail != nil:
		return nil, false, fail
	case noManifest || o.client == nil:
		return o.static.RefreshManifest(ctx, prev, prefix)
	}
	return o.client.RefreshManifest(ctx, prev, prefix)
}

// sizeChunks is the Chunks of the fixture: a real cache whose source reads
// the store directory. It counts MarkStale, and sizeHook lets a test stall
// the fetch of a key after its bytes were read (the answer is then late).
type sizeChunks struct {
	*cache.Cache
	dir       string
	mu        sync.Mutex
	stale     int
	sizeHook  func(key string)
	sizeCalls int
}

func newSizeChunks(t *testing.T, dir string) *sizeChunks {
	t.Helper()
	c := &sizeChunks{dir: dir}
	cc, err := cache.New(cache.Options{Dir: t.TempDir(), MaxBytes: 1 << 30, Namespace: "refresh-test"}, dirSource{c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	c.Cache = cc
	return c
}

func (c *sizeChunks) MarkStale() {
	c.mu.Lock()
	c.stale++
	c.mu.Unlock()
	c.Cache.MarkStale()
}

func (c *sizeChunks) staleCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stale
}

// dirSource serves the store directory to the cache, with a content hash
// as the version.
type dirSource struct{ c *sizeChunks }

func (s dirSource) read(key string) ([]byte, string, error) {
	s.c.mu.Lock()
	hook := s.c.sizeHook
	s.c.sizeCalls++
	s.c.mu.Unlock()
	data, err := os.ReadFile(filepath.Join(s.c.dir, filepath.FromSlash(key)))
	if hook != nil {
		hook(key)
	}
	if err != nil {
		return nil, "", fmt.Errorf("fetch %s: %w", key, remote.ErrNotFound)
	}
	sum := sha256.Sum256(data)
	return data, fmt.Sprintf("%q", hex.EncodeToString(sum[:8])), nil
}

func (s dirSource) Fetch(ctx context.Context, key string, w io.Writer) (string, error) {
	data, version, err := s.read(key)
	if err != nil {
		return "", err
	}
	_, err = w.Write(data)
	return version, err
}

func (s dirSource) FetchIfChanged(ctx context.Context, key, version string, w io.Writer) (string, bool, error) {
	data, now, err := s.read(key)
	if err != nil {
		return "", false, err
	}
	if now == version {
		return now, false, nil
	}
	_, err = w.Write(data)
	return now, true, err
}

// recordingKernel is the invalidator: it records "parentPath|name" for
// every entry the refresh asked the kernel to forget.
type recordingKernel struct {
	mu    sync.Mutex
	calls []string
}

func (k *recordingKernel) InvalidateEntry(parent *vfs.Dir, name string) error {
	p := parent.Path()
	k.mu.Lock()
	k.calls = append(k.calls, p+"|"+name)
	k.mu.Unlock()
	return nil
}

func (k *recordingKernel) take() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := k.calls
	k.calls = nil
	sort.Strings(out)
	return out
}

// refreshFixture is an FS over a test store, with what the kernel has
// looked up so far.
type refreshFixture struct {
	dir    string
	origin *testOrigin
	chunks *sizeChunks
	kernel *recordingKernel
	core   *vfs.FS
	fs     *FS
}

func newRefreshFixture(t *testing.T, manifest bool) *refreshFixture {
	t.Helper()
	dir := testStore(t)
	o := newTestOrigin(t, dir, manifest)
	st, err := store.Discover(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Manifest != nil; got != manifest {
		t.Fatalf("discovered with manifest=%v, want %v (source %q)", got, manifest, st.Source)
	}
	x := &refreshFixture{dir: dir, origin: o, chunks: newSizeChunks(t, dir), kernel: &recordingKernel{}}
	x.core = vfs.New(st, o, x.chunks, vfs.Options{Logger: slog.New(slog.DiscardHandler), AttrValid: time.Hour})
	t.Cleanup(x.core.Close)
	x.core.SetInvalidator(x.kernel)
	x.fs = newFS(x.core, Options{Logger: slog.New(slog.DiscardHandler)})
	return x
}

// lookup resolves a slash path from the root the way the kernel does, one
// component at a time.
func (x *refreshFixture) lookup(t *testing.T, p string) (fusefs.Node, error) {
	t.Helper()
	n, _, err := x.lookupEntry(t, p)
	return n, err
}

// lookupEntry is lookup that also returns the answer to the kernel for the last component
// (how long it may cache the entry).
func (x *refreshFixture) lookupEntry(t *testing.T, p string) (fusefs.Node, *fuse.LookupResponse, error) {
	t.Helper()
	n, err := x.fs.Root()
	if err != nil {
		t.Fatal(err)
	}
	resp := &fuse.LookupResponse{}
	for _, name := range strings.Split(p, "/") {
		l, ok := n.(fusefs.NodeRequestLookuper)
		if !ok {
			return nil, nil, fmt.Errorf("%s: %T is not a directory", p, n)
		}
		resp = &fuse.LookupResponse{}
		n, err = l.Lookup(context.Background(), &fuse.LookupRequest{Name: name}, resp)
		if err != nil {
			return nil, nil, err
		}
	}
	return n, resp, nil
}

func (x *refreshFixture) mustLookup(t *testing.T, paths ...string) map[string]fusefs.Node {
	t.Helper()
	out := map[string]fusefs.Node{}
	for _, p := range paths {
		n, err := x.lookup(t, p)
		if err != nil {
			t.Fatalf("lookup %s: %v", p, err)
		}
		out[p] = n
	}
	return out
}

// fileContent is what a file node serves: its size, and its bytes for a
// metadata document.
func fileContent(t *testing.T, n fusefs.Node) string {
	t.Helper()
	if f, ok := n.(*fileNode); ok {
		if doc, ok := f.f.Document(); ok {
			return string(doc)
		}
		return fmt.Sprintf("chunk of %d bytes, version %q", f.f.Size(), f.f.Version())
	}
	t.Fatalf("%T is not a file", n)
	return ""
}

// invalidation is the expected record of one kernel entry dropped.
func inv(p string) string {
	dir, name := path.Split(p)
	return strings.TrimSuffix(dir, "/") + "|" + name
}

func TestRefreshUnchanged(t *testing.T) {
	for _, manifest := range []bool{true, false} {
		t.Run(fmt.Sprintf("manifest=%v", manifest), func(t *testing.T) {
			x := newRefreshFixture(t, manifest)
			before := x.mustLookup(t, "a/0", "a/.zattrs", "b/1")
			v := x.core.Store()
			rep, err := x.core.Refresh(context.Background())
			if err != nil || rep.Error != "" || rep.Changed {
				t.Fatalf("refresh of an unchanged store: changed=%v err=%v rep.Error=%q", rep.Changed, err, rep.Error)
			}
			if x.core.Store() != v {
				t.Errorf("the view was swapped though nothing changed")
			}
			if got := x.kernel.take(); len(got) > 0 || rep.Invalidated != 0 {
				t.Errorf("kernel entries dropped though nothing changed: %q (report: %d)", got, rep.Invalidated)
			}
			if n := x.chunks.staleCount(); n != 0 {
				t.Errorf("MarkStale called %d times though nothing changed", n)
			}
			for p, n := range x.mustLookup(t, "a/0", "a/.zattrs", "b/1") {
				if before[p] != n {
					t.Errorf("%s: a new node after an unchanged refresh (the kernel loses its page cache)", p)
				}
			}
		})
	}
}

func TestRefreshChanged(t *testing.T) {
	known := []string{"a/0", "a/1", "a/.zattrs", "a/.zarray", "b/0", ".zgroup"}
	tests := []struct {
		name     string
		manifest bool
		change   map[string]string
		// wantInvalidated are the kernel entries dropped, as paths.
		wantInvalidated []string
		wantKeys        int // changed keys reported (manifest only)
		wantAdded       []string
		wantRemoved     []string
		wantChanged     []string
		wantStale       int
		// wantSame are looked-up paths whose node must survive the refresh.
		wantSame []string
	}{
		{
			name:            "manifest: chunk and attributes rewritten",
			manifest:        true,
			change:          map[string]string{"a/1": "A1", "a/.zattrs": `{"units": "C"}`},
			wantInvalidated: []string{"a/1", "a/.zattrs"},
			wantKeys:        3, // and .zmetadata
			wantSame:        []string{"a/0", "a/.zarray", "b/0", ".zgroup"},
		},
		{
			name:            "manifest: unknown chunk rewritten, array added",
			manifest:        true,
			change:          map[string]string{"a/3": "A3", "c/.zarray": storetest.ZarrayDoc(1), "c/0": "c0"},
			wantInvalidated: nil, // the kernel knows none of them
			wantKeys:        4,
			wantAdded:       []string{"c"},
			wantSame:        []string{"a/0", "a/1", "a/.zattrs", "a/.zarray", "b/0", ".zgroup"},
		},
		{
			name:            "manifest: array removed",
			manifest:        true,
			change:          map[string]string{"b/.zarray": "", "b/0": "", "b/1": ""},
			wantInvalidated: []string{"b", "b/0"},
			wantKeys:        4,
			wantRemoved:     []string{"b"},
			wantSame:        []string{"a/0", "a/1", "a/.zattrs", "a/.zarray", ".zgroup"},
		},
		{
			name:            "manifest: array reshaped",
			manifest:        true,
			change:          map[string]string{"a/.zarray": storetest.ZarrayDoc(8)},
			wantInvalidated: []string{"a", "a/.zarray"},
			wantKeys:        2,
			wantChanged:     []string{"a"},
			// Chunks keep their version, so their nodes (and page cache).
			wantSame: []string{"a/0", "a/1", "a/.zattrs", "b/0", ".zgroup"},
		},
		{
			name:            "static: chunk rewritten, metadata reconsolidated",
			manifest:        false,
			change:          map[string]string{"a/1": "A1", "a/.zattrs": `{"units": "C"}`},
			wantInvalidated: known, // no per-key versions: every known file
			wantStale:       1,
		},
		{
			name:            "static: array added",
			manifest:        false,
			change:          map[string]string{"c/.zarray": storetest.ZarrayDoc(1), "c/0": "c0"},
			wantInvalidated: known,
			wantAdded:       []string{"c"},
			wantStale:       1,
		},
		{
			name:            "static: array removed and another reshaped",
			manifest:        false,
			change:          map[string]string{"b/.zarray": "", "b/0": "", "b/1": "", "a/.zarray": storetest.ZarrayDoc(8)},
			wantInvalidated: append([]string{"a", "b"}, known...),
			wantRemoved:     []string{"b"},
			wantChanged:     []string{"a"},
			wantStale:       1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x := newRefreshFixture(t, tc.manifest)
			before := x.mustLookup(t, known...)
			old := x.core.Store()
			writeStore(t, x.dir, tc.change)

			rep, err := x.core.Refresh(context.Background())
			if err != nil || !rep.Changed {
				t.Fatalf("refresh: changed=%v err=%v", rep.Changed, err)
			}
			if x.core.Store() == old {
				t.Fatalf("the view was not swapped")
			}
			var want []string
			for _, p := range tc.wantInvalidated {
				want = append(want, inv(p))
			}
			sort.Strings(want)
			if got := x.kernel.take(); !slices.Equal(got, want) {
				t.Errorf("kernel entries dropped:\n got  %q\n want %q", got, want)
			}
			if rep.Invalidated != len(want) {
				t.Errorf("report says %d entries invalidated, want %d", rep.Invalidated, len(want))
			}
			if tc.manifest && rep.ChangedKeys != tc.wantKeys {
				t.Errorf("changed keys %d, want %d", rep.ChangedKeys, tc.wantKeys)
			}
			for _, c := range []struct {
				what      string
				got, want []string
			}{{"added", rep.NodesAdded, tc.wantAdded}, {"removed", rep.NodesRemoved, tc.wantRemoved}, {"changed", rep.NodesChanged, tc.wantChanged}} {
				if !slices.Equal(c.got, c.want) {
					t.Errorf("nodes %s: %q, want %q", c.what, c.got, c.want)
				}
			}
			if n := x.chunks.staleCount(); n != tc.wantStale {
				t.Errorf("MarkStale called %d times, want %d", n, tc.wantStale)
			}

			// What the kernel looks up again is the new version; what did
			// not change keeps its node.
			for _, p := range known {
				n, err := x.lookup(t, p)
				data, changed := tc.change[p]
				if changed && data == "" || slices.Contains(tc.wantRemoved, strings.Split(p, "/")[0]) {
					if !errors.Is(err, fuse.Errno(syscall.ENOENT)) {
						t.Errorf("%s after removal: %v, want ENOENT", p, err)
					}
					continue
				}
				if err != nil {
					t.Errorf("lookup %s after refresh: %v", p, err)
					continue
				}
				if slices.Contains(tc.wantSame, p) != (n == before[p]) {
					t.Errorf("%s: node kept = %v, want %v", p, n == before[p], slices.Contains(tc.wantSame, p))
				}
				if changed && zarr.IsMetadataName(path.Base(p)) && fileContent(t, n) != data {
					t.Errorf("%s serves %q after refresh, want %q", p, fileContent(t, n), data)
				}
			}
			for _, p := range tc.wantAdded {
				if _, err := x.lookup(t, p+"/0"); err != nil {
					t.Errorf("added %s/0: %v", p, err)
				}
			}
		})
	}
}

func TestRefreshErrorsKeepTheView(t *testing.T) {
	unavailable := &remote.StatusError{Method: "GET", URL: "http://origin/", Code: 503, Status: "503 Service Unavailable"}
	tests := []struct {
		name     string
		manifest bool
		// breakOrigin makes the origin fail; it returns what the error
		// must match and a phrase its message must contain.
		breakOrigin func(x *refreshFixture) (error, string)
	}{
		{"manifest: 503", true, func(x *refreshFixture) (error, string) {
			x.origin.set(unavailable, false, nil)
			return unavailable, "revalidate manifest"
		}},
		{"static: 503", false, func(x *refreshFixture) (error, string) {
			x.origin.set(unavailable, false, nil)
			return unavailable, "revalidate metadata"
		}},
		{"manifest: manifest gone", true, func(x *refreshFixture) (error, string) {
			x.origin.set(nil, true, nil)
			return remote.ErrNoManifest, "serving the last version"
		}},
		{"static: store gone", false, func(x *refreshFixture) (error, string) {
			for _, k := range []string{".zmetadata", ".zgroup"} {
				if err := os.Remove(filepath.Join(x.dir, k)); err != nil {
					panic(err)
				}
			}
			return store.ErrNotZarr, "serving the last version"
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x := newRefreshFixture(t, tc.manifest)
			before := x.mustLookup(t, "a/0", "a/.zattrs")
			old := x.core.Store()
			// A real change is pending too: an error must not apply half of it.
			writeStore(t, x.dir, map[string]string{"a/0": "A0", "a/.zattrs": `{"units": "C"}`})
			wantErr, phrase := tc.breakOrigin(x)

			rep, err := x.core.Refresh(context.Background())
			if !errors.Is(err, wantErr) {
				t.Fatalf("refresh error %v, want one matching %v", err, wantErr)
			}
			if rep.Error == "" || !strings.Contains(rep.Error, phrase) || rep.Changed {
				t.Errorf("report: changed=%v error %q, want an error saying %q", rep.Changed, rep.Error, phrase)
			}
			if x.core.Store() != old {
				t.Errorf("a failed refresh swapped the view")
			}
			if got := x.kernel.take(); len(got) > 0 {
				t.Errorf("a failed refresh dropped kernel entries %q", got)
			}
			if n := x.chunks.staleCount(); n != 0 {
				t.Errorf("a failed refresh marked the cache stale")
			}
			x.origin.set(nil, false, nil)
			for p, n := range x.mustLookup(t, "a/0", "a/.zattrs") {
				if before[p] != n {
					t.Errorf("%s: new node after a failed refresh", p)
				}
			}
		})
	}
}

// TestRefreshRacingLookup: a lookup that read the old view before a refresh
// and finishes after it must not leave the old version behind: neither in
// FS.files (later lookups) nor in the kernel (its own answer arrives after
// the refresh invalidated the name, so the kernel would keep it for
// attrValid).
func TestRefreshRacingLookup(t *testing.T) {
	tests := []struct {
		name     string
		manifest bool
		key      string
		change   map[string]string
		// block makes the lookup of key wait in the origin or the cache
		// until released.
		block func(x *refreshFixture, started chan<- struct{}, release <-chan struct{})
		// current is what the node must serve after the refresh.
		current func(t *testing.T, x *refreshFixture, n fusefs.Node) (got, want string)
	}{
		{
			name: "manifest: metadata document", manifest: true, key: "a/.zattrs", change: map[string]string{"a/.zattrs": `{"units": "C"}`},
			block: func(x *refreshFixture, started chan<- struct{}, release <-chan struct{}) {
				var once sync.Once
				x.origin.set(nil, false, func(key string) {
					if key == "a/.zattrs" {
						once.Do(func() { close(started); <-release })
					}
				})
			},
			current: func(t *testing.T, x *refreshFixture, n fusefs.Node) (string, string) {
				return fileContent(t, n), `{"units": "C"}`
			},
		},
		{
			name: "static: chunk size", manifest: false, key: "a/1",
			// A static origin shows a change through its metadata only.
			change: map[string]string{"a/1": "a bigger chunk", "a/.zattrs": `{"units": "C"}`},
			block: func(x *refreshFixture, started chan<- struct{}, release <-chan struct{}) {
				var once sync.Once
				x.chunks.mu.Lock()
				x.chunks.sizeHook = func(key string) {
					if key == "a/1" {
						once.Do(func() { close(started); <-release })
					}
				}
				x.chunks.mu.Unlock()
			},
			current: func(t *testing.T, x *refreshFixture, n fusefs.Node) (string, string) {
				return fileContent(t, n), fmt.Sprintf("chunk of %d bytes, version %q", len("a bigger chunk"), "")
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x := newRefreshFixture(t, tc.manifest)
			x.mustLookup(t, "a/0")
			started, release := make(chan struct{}), make(chan struct{})
			tc.block(x, started, release)
			type answer struct {
				n    fusefs.Node
				resp *fuse.LookupResponse
				err  error
			}
			done := make(chan answer, 1)
			go func() {
				n, resp, err := x.lookupEntry(t, tc.key)
				done <- answer{n, resp, err}
			}()
			select {
			case <-started:
			case a := <-done:
				t.Fatalf("the lookup did not reach the origin/cache: %v", a.err)
			}
			// The lookup has learnt the old version; the store changes and a
			// refresh completes while it is still on its way.
			writeStore(t, x.dir, tc.change)
			rep, err := x.core.Refresh(context.Background())
			if err != nil || !rep.Changed {
				t.Fatalf("refresh: changed=%v err=%v", rep.Changed, err)
			}
			close(release)
			racing := <-done
			if racing.err != nil {
				t.Fatalf("the racing lookup: %v", racing.err)
			}
			// The racing lookup's own answer reaches the kernel after the refresh has
			// invalidated the name: if it is the old version, the kernel must not keep it.
			if got, want := tc.current(t, x, racing.n); got != want && racing.resp.EntryValid != 0 {
				t.Errorf("the lookup racing the refresh answered the old version (%q, want %q) and let the kernel cache that entry for %v: readers see the old version until it expires, as the refresh's invalidation came before this answer",
					got, want, racing.resp.EntryValid)
			}
			x.origin.set(nil, false, nil)
			n, err := x.lookup(t, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := tc.current(t, x, n); got != want {
				t.Errorf("%s after the refresh serves %q, want %q: a lookup racing the refresh left the old version's node in place", tc.key, got, want)
			}
		})
	}
}
