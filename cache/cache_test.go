package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// memSource is an in-memory Source that counts calls and can hold or fail a
// fetch on demand.
type memSource struct {
	mu      sync.Mutex
	objects map[string]memObject
	calls   map[string]int
	gates   map[string]chan struct{} // a Fetch of the key waits until the gate is closed or its ctx ends
	errs    map[string]error         // a Fetch of the key writes part of the object, then fails with this
	started chan string              // if set, gets the key when a Fetch begins
}

type memObject struct {
	data    []byte
	version string
}

func newMemSource() *memSource {
	return &memSource{
		objects: map[string]memObject{},
		calls:   map[string]int{},
		gates:   map[string]chan struct{}{},
		errs:    map[string]error{},
	}
}

// put stores an object of n bytes under key and returns its data.
func (s *memSource) put(key string, n int) []byte {
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(len(key)*31 + i*7 + n)
	}
	s.mu.Lock()
	s.objects[key] = memObject{data: data, version: fmt.Sprintf(`"v-%s-%d"`, key, n)}
	s.mu.Unlock()
	return data
}

func (s *memSource) hold(key string) chan struct{} {
	gate := make(chan struct{})
	s.mu.Lock()
	s.gates[key] = gate
	s.mu.Unlock()
	return gate
}

func (s *memSource) failWith(key string, err error) {
	s.mu.Lock()
	if err == nil {
		delete(s.errs, key)
	} else {
		s.errs[key] = err
	}
	s.mu.Unlock()
}

func (s *memSource) callsFor(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[key]
}

func (s *memSource) Fetch(ctx context.Context, key string, w io.Writer) (string, error) {
	s.mu.Lock()
	s.calls[key]++
	obj, ok := s.objects[key]
	gate, failure := s.gates[key], s.errs[key]
	s.mu.Unlock()
	if s.started != nil {
		s.started <- key
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if failure != nil {
		_, _ = w.Write(obj.data[:len(obj.data)/2])
		return "", failure
	}
	if !ok {
		return "", fmt.Errorf("GET %s: %w", key, fs.ErrNotExist)
	}
	// Several writes, as an HTTP body copy makes.
	for data := obj.data; len(data) > 0; {
		n := min(len(data), 7)
		if _, err := w.Write(data[:n]); err != nil {
			return "", err
		}
		data = data[n:]
	}
	return obj.version, nil
}

func newTestCache(t *testing.T, maxBytes int64, src Source) *Cache {
	t.Helper()
	c, err := New(Options{Dir: t.TempDir(), MaxBytes: maxBytes, Namespace: "https://origin.test/store.zarr"}, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func readAll(t *testing.T, r *Reader) []byte {
	t.Helper()
	data, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	if err != nil {
		t.Fatalf("read entry: %v", err)
	}
	return data
}

// openAndRead opens key, checks its content and closes it.
func openAndRead(t *testing.T, c *Cache, key string, want []byte) {
	t.Helper()
	r, err := c.Open(context.Background(), key)
	if err != nil {
		t.Fatalf("Open(%q): %v", key, err)
	}
	defer r.Close()
	if got := readAll(t, r); !bytes.Equal(got, want) {
		t.Fatalf("Open(%q): read %d bytes that differ from the %d stored", key, len(got), len(want))
	}
}

type diskUsage struct {
	entryFiles int
	entryBytes int64
	tmpFiles   int
}

// onDisk walks the cache's directories, so tests check the disk rather than
// the cache's own accounting.
func onDisk(t *testing.T, c *Cache) diskUsage {
	t.Helper()
	var u diskUsage
	walk := func(dir string, visit func(fs.FileInfo)) {
		err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			visit(info)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	walk(c.entriesDir, func(info fs.FileInfo) {
		if info.Mode().IsRegular() {
			u.entryFiles++
			u.entryBytes += info.Size()
		}
	})
	walk(c.tmpDir, func(fs.FileInfo) { u.tmpFiles++ })
	return u
}

// openCacheFiles counts this process's open file descriptors on files in the
// cache's directory (unlinked ones included), to catch a Reader's file that is
// never closed.
func openCacheFiles(t *testing.T, c *Cache) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot list open files: %v", err)
	}
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, c.dir+string(filepath.Separator)) {
			n++
		}
	}
	return n
}

// waitFor waits until cond holds: for a background fetch to land, or for
// goroutines to start waiting. It bounds a wait, it does not measure speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	src := newMemSource()
	tests := []struct {
		name string
		opts Options
		src  Source
	}{
		{"no directory", Options{MaxBytes: 100}, src},
		{"no budget", Options{Dir: t.TempDir()}, src},
		{"negative budget", Options{Dir: t.TempDir(), MaxBytes: -1}, src},
		{"no source", Options{Dir: t.TempDir(), MaxBytes: 100}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := New(tt.opts, tt.src); err == nil {
				c.Close()
				t.Fatal("New accepted the options")
			}
		})
	}
}

func TestOpenFetchesOnceThenHits(t *testing.T) {
	const budget = 4096
	tests := []struct {
		name string
		key  string
		size int
	}{
		{"empty object", "a/.zattrs", 0},
		{"small chunk", "a/0.0", 100},
		{"chunk filling the budget", "a/c/1/2", budget},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newMemSource()
			want := src.put(tt.key, tt.size)
			c := newTestCache(t, budget, src)
			for i := range 3 {
				r, err := c.Open(context.Background(), tt.key)
				if err != nil {
					t.Fatalf("Open #%d: %v", i+1, err)
				}
				if got := readAll(t, r); !bytes.Equal(got, want) {
					t.Fatalf("Open #%d: content differs from the origin's", i+1)
				}
				if r.Size() != int64(tt.size) || r.Version() != src.objects[tt.key].version {
					t.Fatalf("Open #%d: size %d version %s, want %d %s", i+1, r.Size(), r.Version(), tt.size, src.objects[tt.key].version)
				}
				r.Close()
			}
			size, err := c.Size(context.Background(), tt.key)
			if err != nil || size != int64(tt.size) {
				t.Fatalf("Size = %d, %v; want %d", size, err, tt.size)
			}
			if n := src.callsFor(tt.key); n != 1 {
				t.Fatalf("Source.Fetch called %d times, want 1", n)
			}
			s := c.Stats()
			if s.Misses != 1 || s.Hits != 3 || s.Entries != 1 || s.Bytes != int64(tt.size) || s.BytesFetched != int64(tt.size) || s.BytesServed != 3*int64(tt.size) {
				t.Fatalf("stats %+v", s)
			}
			if u := onDisk(t, c); u.entryFiles != 1 || u.entryBytes != int64(tt.size) || u.tmpFiles != 0 {
				t.Fatalf("on disk %+v", u)
			}
		})
	}
}

func TestConcurrentOpensFetchOnce(t *testing.T) {
	const openers = 50
	failCreate := func(dir, pattern string) (*os.File, error) {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: syscall.ENOSPC}
	}
	tests := []struct {
		name        string
		budget      int64
		createTemp  func(dir, pattern string) (*os.File, error)
		wantEntries int
	}{
		{"entry kept on disk", 1000, nil, 1},
		{"entry larger than the budget", 100, nil, 0},
		{"entry held in memory", 1000, failCreate, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newMemSource()
			want := src.put("x/0", 500)
			gate := src.hold("x/0")
			c := newTestCache(t, tt.budget, src)
			if tt.createTemp != nil {
				c.createTemp = tt.createTemp
			}
			var wg sync.WaitGroup
			errs := make(chan error, openers)
			for range openers {
				wg.Go(func() {
					r, err := c.Open(context.Background(), "x/0")
					if err != nil {
						errs <- err
						return
					}
					defer r.Close()
					// Readers of one fetch may share a file: read it in parallel.
					got := make([]byte, r.Size())
					for off := 0; off < len(got); off += 64 {
						end := min(off+64, len(got))
						if _, err := r.ReadAt(got[off:end], int64(off)); err != nil && err != io.EOF {
							errs <- err
							return
						}
					}
					if !bytes.Equal(got, want) {
						errs <- errors.New("content differs from the origin's")
					}
				})
			}
			waitFor(t, "all Opens to wait for the fetch", func() bool { return c.Stats().Misses == openers })
			close(gate)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if n := src.callsFor("x/0"); n != 1 {
				t.Fatalf("Source.Fetch called %d times for %d concurrent Opens, want 1", n, openers)
			}
			if s := c.Stats(); s.Entries != tt.wantEntries {
				t.Fatalf("%d entries, want %d", s.Entries, tt.wantEntries)
			}
			if u := onDisk(t, c); u.entryFiles != tt.wantEntries || u.tmpFiles != 0 {
				t.Fatalf("on disk %+v, want %d entries and no temp files", u, tt.wantEntries)
			}
			if n := openCacheFiles(t, c); n != 0 {
				t.Fatalf("%d cache files still open after every Reader closed", n)
			}
		})
	}
}

func TestCallerGivingUpLeavesFetchRunning(t *testing.T) {
	tests := []struct {
		name    string
		ctx     func() (context.Context, context.CancelFunc)
		giveUp  bool // cancel once the fetch has started
		wantErr error
	}{
		{"cancelled", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }, true, context.Canceled},
		{"deadline passed", func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		}, false, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newMemSource()
			src.started = make(chan string, 1)
			want := src.put("a/0.0", 300)
			gate := src.hold("a/0.0")
			c := newTestCache(t, 1000, src)

			ctx, cancel := tt.ctx()
			defer cancel()
			result := make(chan error, 1)
			go func() {
				r, err := c.Open(ctx, "a/0.0")
				if r != nil {
					r.Close()
				}
				result <- err
			}()
			<-src.started
			if tt.giveUp {
				cancel()
			}
			// Unwrapped, so the FUSE layer can tell its own interrupt apart.
			if err := <-result; err != tt.wantErr {
				t.Fatalf("Open returned %v, want exactly %v", err, tt.wantErr)
			}
			close(gate)
			waitFor(t, "the fetch to land in the cache", func() bool { return c.Stats().Entries == 1 })
			openAndRead(t, c, "a/0.0", want)
			if n := src.callsFor("a/0.0"); n != 1 {
				t.Fatalf("Source.Fetch called %d times, want 1", n)
			}
			if s := c.Stats(); s.Hits != 1 {
				t.Fatalf("the Open after the fetch landed was not a hit: %+v", s)
			}
			if n := openCacheFiles(t, c); n != 0 {
				t.Fatalf("%d cache files still open: the Open that gave up kept its share", n)
			}
		})
	}
}

// An Open may give up just as its fetch ends, after the fetch counted it
// among its readers: the share of the file it was owed must be released.
func TestGivingUpAsFetchEndsLeaksNoFile(t *testing.T) {
	src := newMemSource()
	src.started = make(chan string, 1)
	src.put("a/0.0", 10)
	gate := src.hold("a/0.0")
	c := newTestCache(t, 1000, src)
	c.beforeGiveUp = func() { // runs on Open's goroutine, so no t.Fatal here
		close(gate)
		for c.Stats().Entries != 1 {
			time.Sleep(time.Millisecond)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() {
		_, err := c.Open(ctx, "a/0.0")
		result <- err
	}()
	<-src.started
	cancel()
	if err := <-result; err != context.Canceled {
		t.Fatalf("Open = %v, want context.Canceled", err)
	}
	if n := openCacheFiles(t, c); n != 0 {
		t.Fatalf("%d cache files still open after the only Open gave up", n)
	}
}

func TestNotFoundIsRemembered(t *testing.T) {
	src := newMemSource()
	c, err := New(Options{Dir: t.TempDir(), MaxBytes: 1000, MaxNotFound: 2}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	open := func(key string) error {
		t.Helper()
		r, err := c.Open(context.Background(), key)
		if err == nil {
			r.Close()
			t.Fatalf("Open(%q) of a missing key succeeded", key)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Open(%q) = %v, want an fs.ErrNotExist error", key, err)
		}
		return err
	}
	for range 5 {
		open("a/9.9")
	}
	if _, err := c.Size(context.Background(), "a/9.9"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Size = %v, want an fs.ErrNotExist error", err)
	}
	if n := src.callsFor("a/9.9"); n != 1 {
		t.Fatalf("Source.Fetch called %d times for a missing key, want 1", n)
	}
	if s := c.Stats(); s.NotFoundHits != 5 || s.Entries != 0 {
		t.Fatalf("stats %+v, want 5 not-found hits and no entries", s)
	}

	// The memory is bounded: two newer missing keys push the first one out.
	open("a/9.8")
	open("a/9.7")
	open("a/9.9")
	if n := src.callsFor("a/9.9"); n != 2 {
		t.Fatalf("Source.Fetch called %d times after the key was forgotten, want 2", n)
	}
}

func TestFetchErrorIsNotCached(t *testing.T) {
	errOrigin := errors.New("origin answered 503")
	src := newMemSource()
	want := src.put("a/0.0", 200)
	src.failWith("a/0.0", errOrigin)
	c := newTestCache(t, 1000, src)

	for i := 1; i <= 2; i++ {
		_, err := c.Open(context.Background(), "a/0.0")
		if !errors.Is(err, errOrigin) {
			t.Fatalf("Open #%d = %v, want the Source's error", i, err)
		}
		if !strings.Contains(err.Error(), `fetch "a/0.0": `) {
			t.Fatalf("error %q does not name the key", err)
		}
		if n := src.callsFor("a/0.0"); n != i {
			t.Fatalf("after %d failed Opens, Source.Fetch called %d times", i, n)
		}
		if u := onDisk(t, c); u != (diskUsage{}) {
			t.Fatalf("a failed fetch left files: %+v", u)
		}
	}
	src.failWith("a/0.0", nil)
	openAndRead(t, c, "a/0.0", want)
}

func TestBudgetIsNeverExceeded(t *testing.T) {
	const budget = 1000
	src := newMemSource()
	c := newTestCache(t, budget, src)
	keys := make([]string, 40)
	data := map[string][]byte{}
	for i := range keys {
		keys[i] = fmt.Sprintf("t/%d.0", i)
		data[keys[i]] = src.put(keys[i], 1+(i*137)%400)
	}
	check := func(when string) {
		t.Helper()
		u, s := onDisk(t, c), c.Stats()
		if u.entryBytes > budget {
			t.Fatalf("%s: %d bytes on disk, budget %d", when, u.entryBytes, budget)
		}
		if u.entryBytes != s.Bytes || u.entryFiles != s.Entries || u.tmpFiles != 0 {
			t.Fatalf("%s: on disk %+v, stats say %d entries of %d bytes", when, u, s.Entries, s.Bytes)
		}
	}
	for _, key := range keys {
		openAndRead(t, c, key, data[key])
		check("after " + key)
	}

	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 30 {
				key := keys[(w*7+i*11)%len(keys)]
				r, err := c.Open(context.Background(), key)
				if err != nil {
					t.Error(err)
					return
				}
				got, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
				if err != nil || !bytes.Equal(got, data[key]) {
					t.Errorf("%s: read %d bytes (%v), differing from the origin's", key, len(got), err)
				}
				r.Close()
			}
		})
	}
	wg.Wait()
	check("after concurrent Opens")
	if c.Stats().Evictions == 0 {
		t.Fatal("no evictions although the objects total more than the budget")
	}
}

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	tests := []struct {
		name      string
		touch     string // opened again before the third key is added
		evicted   string
		survivors []string
	}{
		{"untouched oldest goes", "", "a", []string{"b", "c"}},
		{"recently used survives", "a", "b", []string{"a", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newMemSource()
			data := map[string][]byte{}
			for _, k := range []string{"a", "b", "c"} {
				data[k] = src.put(k, 40)
			}
			c := newTestCache(t, 100, src)
			openAndRead(t, c, "a", data["a"])
			openAndRead(t, c, "b", data["b"])
			if tt.touch != "" {
				openAndRead(t, c, tt.touch, data[tt.touch])
			}
			openAndRead(t, c, "c", data["c"])

			for _, k := range tt.survivors {
				openAndRead(t, c, k, data[k])
				if n := src.callsFor(k); n != 1 {
					t.Errorf("%s was evicted (fetched %d times)", k, n)
				}
			}
			if _, err := os.Stat(c.entryPath(c.entryID(tt.evicted))); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s still on disk: %v", tt.evicted, err)
			}
			openAndRead(t, c, tt.evicted, data[tt.evicted])
			if n := src.callsFor(tt.evicted); n != 2 {
				t.Errorf("%s fetched %d times, want 2 (it was evicted)", tt.evicted, n)
			}
		})
	}
}

func TestReaderOutlivesEvictionAndClose(t *testing.T) {
	src := newMemSource()
	data := map[string][]byte{}
	for _, k := range []string{"a", "b", "c"} {
		data[k] = src.put(k, 40)
	}
	c := newTestCache(t, 100, src)
	r, err := c.Open(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	openAndRead(t, c, "b", data["b"])
	openAndRead(t, c, "c", data["c"])
	if _, err := os.Stat(c.entryPath(c.entryID("a"))); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a was not evicted: %v", err)
	}
	if got := readAll(t, r); !bytes.Equal(got, data["a"]) {
		t.Fatal("reader of an evicted entry reads wrong data")
	}
	c.Close()
	if got := readAll(t, r); !bytes.Equal(got, data["a"]) {
		t.Fatal("reader reads wrong data after the cache closed")
	}
}

func TestEntryLargerThanBudgetIsServedNotKept(t *testing.T) {
	src := newMemSource()
	small := src.put("small", 50)
	big := src.put("big", 250)
	c := newTestCache(t, 100, src)
	openAndRead(t, c, "small", small)
	for i := 1; i <= 2; i++ {
		openAndRead(t, c, "big", big)
		if n := src.callsFor("big"); n != i {
			t.Fatalf("big fetched %d times after %d Opens: it must not be cached", n, i)
		}
		// The oversized entry must not have pushed out what fits.
		if u, s := onDisk(t, c), c.Stats(); u != (diskUsage{entryFiles: 1, entryBytes: 50}) || s.Entries != 1 || s.Evictions != 0 {
			t.Fatalf("on disk %+v, stats %+v; want only the small entry", u, s)
		}
	}
}

// syncBuffer is a log destination that fetch goroutines may write to.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestWriteFailureServesFromMemory(t *testing.T) {
	keys := []string{"a/0.0", "a/0.1"}
	tests := []struct {
		name string
		// breakDisk makes the cache's disk fail in one way.
		breakDisk      func(t *testing.T, c *Cache)
		fetchesPerOpen int
	}{
		{"temp file cannot be created", func(t *testing.T, c *Cache) {
			c.createTemp = func(dir, pattern string) (*os.File, error) {
				return nil, &fs.PathError{Op: "open", Path: dir, Err: syscall.ENOSPC}
			}
		}, 1},
		{"writes fail midway", func(t *testing.T, c *Cache) {
			c.createTemp = func(dir, pattern string) (*os.File, error) {
				f, err := os.CreateTemp(dir, pattern)
				if err != nil {
					return nil, err
				}
				f.Close()
				return os.Open(f.Name()) // read-only: every write fails
			}
		}, 2},
		{"entry cannot be put in place", func(t *testing.T, c *Cache) {
			for _, k := range keys {
				// A file where the entry's directory should go.
				if err := os.WriteFile(filepath.Dir(c.entryPath(c.entryID(k))), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newMemSource()
			var logs syncBuffer
			c, err := New(Options{Dir: t.TempDir(), MaxBytes: 1000, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, src)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			tt.breakDisk(t, c)
			for _, k := range keys {
				want := src.put(k, 123)
				for range 2 {
					r, err := c.Open(context.Background(), k)
					if err != nil {
						t.Fatalf("Open(%q) failed although only the disk is broken: %v", k, err)
					}
					if got := readAll(t, r); !bytes.Equal(got, want) || r.Version() != src.objects[k].version {
						t.Fatalf("Open(%q) served wrong data or version %q", k, r.Version())
					}
					r.Close()
				}
				if n := src.callsFor(k); n != 2*tt.fetchesPerOpen {
					t.Fatalf("%s fetched %d times, want %d", k, n, 2*tt.fetchesPerOpen)
				}
			}
			if s := c.Stats(); s.WriteErrors != 2*int64(len(keys)) || s.Entries != 0 {
				t.Fatalf("stats %+v, want %d write errors and no entries", s, 2*len(keys))
			}
			if u := onDisk(t, c); u.entryBytes != 0 || u.tmpFiles != 0 {
				t.Fatalf("left on disk: %+v", u)
			}
			if n := strings.Count(logs.String(), "cannot write to the cache directory"); n != 1 {
				t.Fatalf("write failure logged %d times, want once:\n%s", n, logs.String())
			}
		})
	}
}

func TestCloseCancelsBlockedFetch(t *testing.T) {
	src := newMemSource()
	src.started = make(chan string, 1)
	src.put("a/0.0", 100)
	src.hold("a/0.0") // never released: only cancellation ends this fetch
	c := newTestCache(t, 1000, src)

	result := make(chan error, 1)
	go func() {
		_, err := c.Open(context.Background(), "a/0.0")
		result <- err
	}()
	<-src.started
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return: it did not cancel the blocked fetch")
	}
	err := <-result
	if !errors.Is(err, ErrClosed) || errors.Is(err, context.Canceled) {
		t.Fatalf("Open waiting on a cancelled fetch = %v, want ErrClosed and not a cancellation", err)
	}
	if _, err := c.Open(context.Background(), "a/0.0"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Open after Close = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if u := onDisk(t, c); u != (diskUsage{}) {
		t.Fatalf("left on disk: %+v", u)
	}
}

func TestNewRemovesPreviousRun(t *testing.T) {
	dir := t.TempDir()
	src := newMemSource()
	want := src.put("a/0.0", 64)
	opts := Options{Dir: dir, MaxBytes: 1000, Namespace: "https://origin.test/store.zarr"}

	// What a previous run left: an entry with stale content at the very path
	// of a/0.0, a torn temp file, and files that are not the cache's.
	first, err := New(opts, src)
	if err != nil {
		t.Fatal(err)
	}
	stale := first.entryPath(first.entryID("a/0.0"))
	first.Close()
	notOurs := []string{filepath.Join(dir, "keep.txt"), filepath.Join(dir, "other", "x")}
	for _, p := range append([]string{stale, filepath.Join(dir, tmpSubdir, "fetch-123")}, notOurs...) {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("stale"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	c, err := New(opts, src)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if u := onDisk(t, c); u != (diskUsage{}) {
		t.Fatalf("New left files of the previous run: %+v", u)
	}
	for _, p := range notOurs {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("New touched a file that is not the cache's: %v", err)
		}
	}
	openAndRead(t, c, "a/0.0", want)
	if n := src.callsFor("a/0.0"); n != 1 {
		t.Fatalf("Source.Fetch called %d times, want 1", n)
	}
}

func TestReadAt(t *testing.T) {
	const size = 100
	backings := []struct {
		name  string
		setup func(c *Cache)
	}{
		{"file", func(*Cache) {}},
		{"memory", func(c *Cache) {
			c.createTemp = func(dir, _ string) (*os.File, error) {
				return nil, &fs.PathError{Op: "open", Path: dir, Err: syscall.EROFS}
			}
		}},
	}
	tests := []struct {
		name    string
		off     int64
		len     int
		wantN   int
		wantErr error
	}{
		{"start", 0, 10, 10, nil},
		{"middle", 40, 20, 20, nil},
		{"to the end exactly", 90, 10, 10, nil},
		{"across the end", 95, 10, 5, io.EOF},
		{"at the end", size, 10, 0, io.EOF},
		{"past the end", size + 5, 10, 0, io.EOF},
		{"negative offset", -1, 10, 0, errNegativeOffset},
	}
	for _, b := range backings {
		t.Run(b.name, func(t *testing.T) {
			src := newMemSource()
			data := src.put("k", size)
			c := newTestCache(t, 1000, src)
			b.setup(c)
			r, err := c.Open(context.Background(), "k")
			if err != nil {
				t.Fatal(err)
			}
			var served int64
			for _, tt := range tests {
				p := make([]byte, tt.len)
				n, err := r.ReadAt(p, tt.off)
				if n != tt.wantN || !errors.Is(err, tt.wantErr) {
					t.Fatalf("%s: ReadAt = %d, %v; want %d, %v", tt.name, n, err, tt.wantN, tt.wantErr)
				}
				if n > 0 && !bytes.Equal(p[:n], data[tt.off:tt.off+int64(n)]) {
					t.Fatalf("%s: wrong bytes", tt.name)
				}
				served += int64(n)
			}
			if s := c.Stats(); s.BytesServed != served {
				t.Fatalf("BytesServed = %d, want %d", s.BytesServed, served)
			}
			r.Close()
			if _, err := r.ReadAt(make([]byte, 1), 0); !errors.Is(err, os.ErrClosed) {
				t.Fatalf("ReadAt after Close = %v, want os.ErrClosed", err)
			}
			if err := r.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
		})
	}
}
