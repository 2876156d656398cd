package integration

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWritesFailReadOnly: every write-like operation on a file or a directory inside the mount
// fails with EROFS, and nothing changes.
func TestWritesFailReadOnly(t *testing.T) {
	fixturesReady.require(t)
	v2 := filepath.Join(fixturesDir, "zarrita", "v2")
	m := mount(t, newOrigin(t, v2).URL("data.zarr"))
	file := m.path("2d.chunked.i2/0.0") // a chunk
	meta := m.path("2d.chunked.i2/.zarray")
	dir := m.path("2d.chunked.i2") // an array directory
	group := m.path("my group with spaces")
	fresh := m.path("2d.chunked.i2/new-name")
	before, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("read %s: %v", file, err)
	}
	openFor := func(p string, flags int) error {
		fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}
	tests := []struct {
		name string
		op   func() error
	}{
		{"create", func() error { return openFor(fresh, unix.O_CREAT|unix.O_WRONLY|unix.O_EXCL) }},
		{"create in a group", func() error { return openFor(filepath.Join(group, "x"), unix.O_CREAT|unix.O_RDWR) }},
		{"open file for write", func() error { return openFor(file, unix.O_WRONLY) }},
		{"open file for read-write", func() error { return openFor(file, unix.O_RDWR) }},
		{"open metadata for append", func() error { return openFor(meta, unix.O_WRONLY|unix.O_APPEND) }},
		{"open with O_TRUNC", func() error { return openFor(file, unix.O_WRONLY|unix.O_TRUNC) }},
		{"truncate file", func() error { return unix.Truncate(file, 0) }},
		{"mkdir", func() error { return unix.Mkdir(filepath.Join(dir, "newdir"), 0o755) }},
		{"mkdir in a group", func() error { return unix.Mkdir(filepath.Join(group, "newdir"), 0o755) }},
		{"rmdir array dir", func() error { return unix.Rmdir(dir) }},
		{"rmdir group", func() error { return unix.Rmdir(group) }},
		{"unlink file", func() error { return unix.Unlink(file) }},
		{"unlink metadata", func() error { return unix.Unlink(meta) }},
		{"rename file", func() error { return unix.Rename(file, fresh) }},
		{"rename dir", func() error { return unix.Rename(dir, m.path("renamed")) }},
		{"chmod file", func() error { return unix.Chmod(file, 0o600) }},
		{"chmod dir", func() error { return unix.Chmod(dir, 0o700) }},
		{"chown file", func() error { return unix.Chown(file, 1, 1) }},
		{"symlink", func() error { return unix.Symlink("0.0", fresh) }},
		{"link", func() error { return unix.Link(file, fresh) }},
		{"setxattr file", func() error { return unix.Setxattr(file, "user.zarrfs-test", []byte("x"), 0) }},
		{"setxattr dir", func() error { return unix.Setxattr(dir, "user.zarrfs-test", []byte("x"), 0) }},
		{"removexattr file", func() error { return unix.Removexattr(file, "user.zarrfs-test") }},
		{"utimes file", func() error { return unix.UtimesNano(file, []unix.Timespec{{Sec: 1}, {Sec: 1}}) }},
		{"utimes dir", func() error { return unix.UtimesNano(dir, []unix.Timespec{{Sec: 1}, {Sec: 1}}) }},
		{"mknod", func() error { return unix.Mknod(fresh, unix.S_IFIFO|0o644, 0) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			if !errors.Is(err, unix.EROFS) {
				t.Errorf("got %v, want EROFS", errnoString(err))
			}
		})
	}
	after, err := os.ReadFile(file)
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("%s changed (err %v): %q -> %q", file, err, before, after)
	}
	if _, err := os.Lstat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists after failed creates: %v", fresh, err)
	}
}

func errnoString(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error() + " (" + unix.ErrnoName(errno) + ")"
	}
	if err == nil {
		return "success"
	}
	return err.Error()
}

// TestOutOfGridNamesNoRequest: a name that cannot be a chunk of the array (outside its grid, or
// of the wrong dimensionality) is ENOENT without any request to the origin.
func TestOutOfGridNamesNoRequest(t *testing.T) {
	fixturesReady.require(t)
	tests := []struct {
		name, serve, store string
		exists             []string // in-grid keys, which must exist (a control)
		// Keys outside the grid. A lone "0" in a v2 array is not here: without
		// dimension_separator it may be the first level of a legacy nested ("/") store.
		outside []string
	}{
		{"v2 dot-separated", "zarrita/v2", "data.zarr",
			[]string{"2d.chunked.i2/0.0", "2d.chunked.i2/1.1", "3d.chunked.i2/2.2.2"},
			[]string{"2d.chunked.i2/2.0", "2d.chunked.i2/0.2", "2d.chunked.i2/9.9", "2d.chunked.i2/0.0.0",
				"2d.chunked.i2/-1.0", "2d.chunked.i2/1.x", "3d.chunked.i2/3.0.0", "3d.chunked.i2/0.0"}},
		{"v2 slash-separated", "zarr-python-2.13", "fixture",
			[]string{"nested/0/0"},
			[]string{"nested/5/0", "nested/0/5", "nested/1", "nested/0.0"}},
		{"v3 default encoding", "zarrita/v3", "data.zarr",
			[]string{"2d.chunked.i2/c/0/0", "2d.chunked.i2/c/1/1"},
			[]string{"2d.chunked.i2/c/2/0", "2d.chunked.i2/c/0/2", "2d.chunked.i2/c/7", "2d.chunked.i2/c/0.0", "2d.chunked.i2/0.0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := newOrigin(t, filepath.Join(fixturesDir, tc.serve))
			m := mount(t, o.URL(tc.store))
			for _, key := range tc.exists {
				if _, err := os.Stat(m.path(key)); err != nil {
					t.Errorf("in-grid %s: %v", key, err)
				}
			}
			for _, key := range tc.outside {
				for attempt := range 2 {
					_, err := os.Stat(m.path(key))
					if !errors.Is(err, syscall.ENOENT) {
						t.Errorf("stat %s (attempt %d): %v, want ENOENT", key, attempt+1, errnoString(err))
					}
				}
				if f, err := os.Open(m.path(key)); !errors.Is(err, syscall.ENOENT) {
					t.Errorf("open %s: %v, want ENOENT", key, errnoString(err))
					if err == nil {
						f.Close()
					}
				}
				if n := o.count("", "/"+tc.store+"/"+key); n != 0 {
					t.Errorf("%s: %d requests to the origin, want none", key, n)
				}
			}
		})
	}
}

// TestMissingChunkIsRemembered: a chunk the origin answers 404 for is ENOENT, and asking again
// (even after the kernel has forgotten the name) sends no further request. The origin gives no
// listings, so only a request can tell the mount that the chunk is missing.
func TestMissingChunkIsRemembered(t *testing.T) {
	fixturesReady.require(t)
	dir := filepath.Join(t.TempDir(), "data.zarr")
	copyTree(t, filepath.Join(fixturesDir, "zarrita", "v2", "data.zarr"), dir)
	const missingKey, presentKey = "2d.chunked.i2/1.1", "2d.chunked.i2/1.0"
	if err := os.Remove(filepath.Join(dir, filepath.FromSlash(missingKey))); err != nil {
		t.Fatal(err)
	}
	o := newOrigin(t, filepath.Dir(dir), withoutListings())
	m := mount(t, o.URL("data.zarr"))
	urlPath := "/data.zarr/" + missingKey

	if _, err := os.Stat(m.path(missingKey)); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("stat missing chunk: %v, want ENOENT", errnoString(err))
	}
	first := o.count("", urlPath)
	if first == 0 {
		t.Fatalf("no request for %s: the mount cannot know it is missing without asking (no listing)", urlPath)
	}
	dropDentries(t)
	if _, err := os.Stat(m.path(missingKey)); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("second stat: %v, want ENOENT", errnoString(err))
	}
	if _, err := os.ReadFile(m.path(missingKey)); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("read: %v, want ENOENT", errnoString(err))
	}
	if n := o.count("", urlPath); n != first {
		t.Errorf("%d requests for %s after asking again, want still %d (a 404 must be remembered)", n, urlPath, first)
	}
	want, _ := os.ReadFile(filepath.Join(dir, filepath.FromSlash(presentKey)))
	if got, err := os.ReadFile(m.path(presentKey)); err != nil || !bytes.Equal(got, want) {
		t.Errorf("present chunk %s: err %v, %d bytes, want %d", presentKey, err, len(got), len(want))
	}
}

// dropDentries asks the kernel to forget cached names (root only), so the next lookup reaches
// the daemon instead of the kernel's negative dentry.
func dropDentries(t testing.TB) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
		t.Logf("cannot drop dentry caches (%v): the second lookup may be answered by the kernel", err)
	}
}

// TestConcurrentReadersOneFetch: 16 goroutines opening and reading one uncached chunk at the
// same moment cause exactly one GET of it, and all read the right bytes.
func TestConcurrentReadersOneFetch(t *testing.T) {
	fixturesReady.require(t)
	serve := filepath.Join(fixturesDir, "zarrita", "v2")
	tests := []struct {
		name  string
		key   string
		delay time.Duration
	}{
		{"slow origin", "3d.chunked.i2/1.2.0", 300 * time.Millisecond},
		{"fast origin", "3d.chunked.i2/2.1.1", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			urlPath := "/data.zarr/" + tc.key
			o := newOrigin(t, serve, withDelay(urlPath, tc.delay))
			m := mount(t, o.URL("data.zarr"))
			want, err := os.ReadFile(filepath.Join(serve, "data.zarr", filepath.FromSlash(tc.key)))
			if err != nil {
				t.Fatal(err)
			}
			if n := o.count("GET", urlPath); n != 0 {
				t.Fatalf("%d GETs of %s before any reader", n, urlPath)
			}
			const readers = 16
			start := make(chan struct{})
			errs := make([]error, readers)
			got := make([][]byte, readers)
			var wg sync.WaitGroup
			for i := range readers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					f, err := os.Open(m.path(tc.key))
					if err != nil {
						errs[i] = err
						return
					}
					defer f.Close()
					buf := make([]byte, len(want)+10)
					n, err := f.ReadAt(buf, 0)
					if err != nil && n != len(want) {
						errs[i] = err
					}
					got[i] = buf[:n]
				}()
			}
			close(start)
			wg.Wait()
			for i := range readers {
				if errs[i] != nil {
					t.Errorf("reader %d: %v", i, errs[i])
				} else if !bytes.Equal(got[i], want) {
					t.Errorf("reader %d read %d bytes, want the origin's %d", i, len(got[i]), len(want))
				}
			}
			if n := o.count("GET", urlPath); n != 1 {
				t.Errorf("%d GETs of %s for %d concurrent readers, want exactly 1\n%s", n, urlPath, readers, o.summary(30))
			}
		})
	}
}
