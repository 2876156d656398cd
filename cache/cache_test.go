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

	"github.com/zarrfs/zarrfs/internal/testutil"
)

// memSource is an in-memory Source that counts calls and can hold or fail a
// fetch on demand. It keeps every version it ever served, so a test can
// check a Reader against the version it reports.
type memSource struct {
	mu       sync.Mutex
	objects  map[string]memObject
	versions map[string][]byte        // version -> data, for every version ever stored
	calls    map[string]int           // Fetch and FetchIfChanged calls
	cond     map[string]int           // FetchIfChanged calls with a version
	gates    map[string]chan struct{} // a call for the key waits until the gate is closed or its ctx ends
	errs     map[string]error         // a call for the key writes part of the object, then fails with this
	started  chan string              // if set, gets the key when a call begins

	// RangeSource (ranges_test.go).
	ranges     map[string]int // FetchRange calls, by key and by rangeName
	changedErr error          // FetchRange of a version the object no longer has fails with this
	noRanges   bool           // FetchRange fails with errTestNoRanges, as for an origin ignoring ranges
	rangeExtra int            // FetchRange delivers this many bytes more (or fewer, < 0) than asked
}

type memObject struct {
	data    []byte
	version string
}

func newMemSource() *memSource {
	return &memSource{
		objects:  map[string]memObject{},
		versions: map[string][]byte{},
		calls:    map[string]int{},
		cond:     map[string]int{},
		gates:    map[string]chan struct{}{},
		errs:     map[string]error{},
		ranges:   map[string]int{},
	}
}

// put stores an object of n bytes under key and returns its data. Putting
// a key again with another size makes a new version.
func (s *memSource) put(key string, n int) []byte {
	return s.putVersion(key, n, fmt.Sprintf(`"v-%s-%d"`, key, n))
}

// putVersion stores an object of n bytes with the given version ("" = the
// origin gives none); its content depends on key, n and version.
func (s *memSource) putVersion(key string, n int, version string) []byte {
	data := make([]byte, n)
	seed := len(key)*31 + n + len(version)*17
	for _, ch := range []byte(version) {
		seed = seed*7 + int(ch)
	}
	for i := range data {
		data[i] = byte(seed + i*7 + i/253)
	}
	s.mu.Lock()
	s.objects[key] = memObject{data: data, version: version}
	if version != "" {
		s.versions[version] = data
	}
	s.mu.Unlock()
	return data
}

func (s *memSource) remove(key string) {
	s.mu.Lock()
	delete(s.objects, key)
	s.mu.Unlock()
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

// callsFor counts the requests for key, conditional or not.
func (s *memSource) callsFor(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[key]
}

// condCallsFor counts the conditional requests for key.
func (s *memSource) condCallsFor(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cond[key]
}

// dataOf returns the data of a version the source served.
func (s *memSource) dataOf(version string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.versions[version]
}

func (s *memSource) Fetch(ctx context.Context, key string, w io.Writer) (string, error) {
	v, _, err := s.fetch(ctx, key, "", w)
	return v, err
}

func (s *memSource) FetchIfChanged(ctx context.Context, key, version string, w io.Writer) (string, bool, error) {
	return s.fetch(ctx, key, version, w)
}

func (s *memSource) fetch(ctx context.Context, key, ifNoneMatch string, w io.Writer) (string, bool, error) {
	s.mu.Lock()
	s.calls[key]++
	if ifNoneMatch != "" {
		s.cond[key]++
	}
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
			return "", false, ctx.Err()
		}
	}
	if failure != nil {
		_, _ = w.Write(obj.data[:len(obj.data)/2])
		return "", false, failure
	}
	if !ok {
		return "", false, fmt.Errorf("GET %s: %w", key, fs.ErrNotExist)
	}
	if ifNoneMatch != "" && ifNoneMatch == obj.version {
		return obj.version, false, nil
	}
	// Several writes, as an HTTP body copy makes.
	for data := obj.data; len(data) > 0; {
		n := min(len(data), 7000)
		if _, err := w.Write(data[:n]); err != nil {
			return "", false, err
		}
		data = data[n:]
	}
	return obj.version, true, nil
}

// entrySize is what an entry of an n-byte object under key costs on disk.
func entrySize(key string, n int) int64 { return headerLen(len(key)) + int64(n) }

const testNamespace = "https://origin.test/store.zarr"

func newTestCache(t *testing.T, maxBytes int64, src Source) *Cache {
	t.Helper()
	return newCacheIn(t, Options{Dir: t.TempDir(), MaxBytes: maxBytes}, src)
}

// newCacheIn opens a cache with opts (namespace defaulted) and closes it at
// the end of the test.
func newCacheIn(t *testing.T, opts Options, src Source) *Cache {
	t.Helper()
	if opts.Namespace == "" {
		opts.Namespace = testNamespace
	}
	c, err := New(opts, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// pathOf is where the entry of key lies.
func (c *Cache) pathOf(key string) string {
	id, _ := entryID(c.nsHash, key)
	return c.entryPath(id)
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
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	r, err := c.Open(ctx, key)
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
	u, err := diskUsageOf(c)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// diskUsageOf is onDisk for any goroutine. Files that vanish during the walk
// (evicted, renamed) are not counted.
func diskUsageOf(c *Cache) (diskUsage, error) {
	var u diskUsage
	walk := func(dir string, visit func(fs.FileInfo)) error {
		return filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil || d.IsDir() {
				return err
			}
			info, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			visit(info)
			return nil
		})
	}
	err := walk(c.entriesDir, func(info fs.FileInfo) {
		if info.Mode().IsRegular() {
			u.entryFiles++
			u.entryBytes += info.Size()
		}
	})
	if err == nil {
		err = walk(c.tmpDir, func(fs.FileInfo) { u.tmpFiles++ })
	}
	return u, err
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
	lock := filepath.Join(c.dir, lockFileName)
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && target != lock && strings.HasPrefix(target, c.dir+string(filepath.Separator)) {
			n++
		}
	}
	return n
}

// openTimeout bounds the Opens of test helpers, so that a cache which
// never serves one fails the test instead of hanging the package.
const openTimeout = 30 * time.Second

// waitFor waits until cond holds: for a background fetch to land, or for
// goroutines to start waiting. It bounds a wait, it does not measure speed.
// closeWithin closes c and fails with hung if Close has not returned within
// d.
func closeWithin(t *testing.T, c *Cache, d time.Duration, hung string) {
	t.Helper()
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(d):
		t.Fatal(hung)
	}
}

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
		{"negative free-space floor", Options{Dir: t.TempDir(), MaxBytes: 100, MinFreeBytes: -1}, src},
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
	budget := entrySize("a/c/1/2", 4096)
	tests := []struct {
		name string
		key  string
		size int
	}{
		{"empty object", "a/.zattrs", 0},
		{"small chunk", "a/0.0", 100},
		{"chunk filling the budget", "a/c/1/2", 4096},
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
				t.Fatalf("Source called %d times, want 1", n)
			}
			n := int64(tt.size)
			s := c.Stats()
			want1 := Stats{Hits: 3, Misses: 1, Fetches: 1, BytesFromNetwork: n, BytesServed: 3 * n, BytesFromCache: 2 * n,
				Entries: 1, Bytes: entrySize(tt.key, tt.size)}
			if s != want1 {
				t.Fatalf("stats\n%+v, want\n%+v", s, want1)
			}
			if u := onDisk(t, c); u.entryFiles != 1 || u.entryBytes != entrySize(tt.key, tt.size) || u.tmpFiles != 0 {
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
		{"entry kept on disk", 10_000, nil, 1},
		{"entry larger than the budget", 100, nil, 0},
		{"entry held in memory", 10_000, failCreate, 0},
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
				t.Fatalf("Source called %d times for %d concurrent Opens, want 1", n, openers)
			}
			if s := c.Stats(); s.Entries != tt.wantEntries || s.Pinned != 0 {
				t.Fatalf("%d entries (%d pinned), want %d (none pinned)", s.Entries, s.Pinned, tt.wantEntries)
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
			c := newTestCache(t, 10_000, src)

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
				t.Fatalf("Source called %d times, want 1", n)
			}
			if s := c.Stats(); s.Hits != 1 || s.Pinned != 0 {
				t.Fatalf("the Open after the fetch landed was not a hit, or a pin leaked: %+v", s)
			}
			if n := openCacheFiles(t, c); n != 0 {
				t.Fatalf("%d cache files still open: the Open that gave up kept its share", n)
			}
		})
	}
}

// An Open may give up just as its fetch ends, after the fetch counted it
// among its readers: the share of the file and the pin it was owed must be
// released.
func TestGivingUpAsFetchEndsLeaksNoFile(t *testing.T) {
	src := newMemSource()
	src.started = make(chan string, 1)
	src.put("a/0.0", 10)
	gate := src.hold("a/0.0")
	c := newTestCache(t, 10_000, src)
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
	if s := c.Stats(); s.Pinned != 0 {
		t.Fatalf("%d entries still pinned after the only Open gave up", s.Pinned)
	}
}

func TestNotFoundIsRemembered(t *testing.T) {
	src := newMemSource()
	c := newCacheIn(t, Options{Dir: t.TempDir(), MaxBytes: 1000, MaxNotFound: 2}, src)
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
		t.Fatalf("Source called %d times for a missing key, want 1", n)
	}
	if s := c.Stats(); s.NotFoundHits != 5 || s.Entries != 0 {
		t.Fatalf("stats %+v, want 5 not-found hits and no entries", s)
	}

	// The memory is bounded: two newer missing keys push the first one out.
	open("a/9.8")
	open("a/9.7")
	open("a/9.9")
	if n := src.callsFor("a/9.9"); n != 2 {
		t.Fatalf("Source called %d times after the key was forgotten, want 2", n)
	}

	// A caller that knows the key exists (a manifest) is not answered from
	// the memory, and a successful fetch clears it.
	want := src.put("a/9.9", 10)
	r, err := c.OpenVersion(context.Background(), "a/9.9", src.objects["a/9.9"].version)
	if err != nil {
		t.Fatalf("OpenVersion of a key remembered missing: %v", err)
	}
	r.Close()
	openAndRead(t, c, "a/9.9", want)
}

func TestFetchErrorIsNotCached(t *testing.T) {
	errOrigin := errors.New("origin answered 503")
	src := newMemSource()
	want := src.put("a/0.0", 200)
	src.failWith("a/0.0", errOrigin)
	c := newTestCache(t, 10_000, src)

	for i := 1; i <= 2; i++ {
		_, err := c.Open(context.Background(), "a/0.0")
		if !errors.Is(err, errOrigin) {
			t.Fatalf("Open #%d = %v, want the Source's error", i, err)
		}
		if !strings.Contains(err.Error(), `fetch "a/0.0": `) {
			t.Fatalf("error %q does not name the key", err)
		}
		if n := src.callsFor("a/0.0"); n != i {
			t.Fatalf("after %d failed Opens, Source called %d times", i, n)
		}
		if u := onDisk(t, c); u != (diskUsage{}) {
			t.Fatalf("a failed fetch left files: %+v", u)
		}
	}
	src.failWith("a/0.0", nil)
	openAndRead(t, c, "a/0.0", want)
}

// checkBudget compares the disk with the budget and with the cache's own
// accounting.
func checkBudget(t *testing.T, c *Cache, budget int64, when string) {
	t.Helper()
	u, s := onDisk(t, c), c.Stats()
	if u.entryBytes > budget {
		t.Fatalf("%s: %d bytes of entries on disk, budget %d", when, u.entryBytes, budget)
	}
	if u.entryBytes != s.Bytes || u.entryFiles != s.Entries || u.tmpFiles != 0 {
		t.Fatalf("%s: on disk %+v, stats say %d entries of %d bytes", when, u, s.Entries, s.Bytes)
	}
}

func TestBudgetIsNeverExceeded(t *testing.T) {
	for _, pol := range testPolicies {
		t.Run(pol.name, func(t *testing.T) {
			budget := 5 * entrySize("t/0.0", 400)
			src := newMemSource()
			c := newCacheIn(t, Options{Dir: t.TempDir(), MaxBytes: budget, newPolicy: pol.new}, src)
			keys := make([]string, 40)
			data := map[string][]byte{}
			for i := range keys {
				keys[i] = fmt.Sprintf("t/%d.0", i)
				data[keys[i]] = src.put(keys[i], 1+(i*137)%1000)
			}
			for _, key := range keys {
				openAndRead(t, c, key, data[key])
				checkBudget(t, c, budget, "after "+key)
			}

			var wg sync.WaitGroup
			stop := make(chan struct{})
			watcher := make(chan error, 1)
			// The budget holds while fetches land, not only after. Every
			// rename and unlink in the entries directory happens under
			// c.mu, so a walk under it sees an exact state.
			go func() {
				defer close(watcher)
				for {
					select {
					case <-stop:
						return
					default:
					}
					c.mu.Lock()
					u, err := diskUsageOf(c)
					c.mu.Unlock()
					if err != nil {
						watcher <- err
						return
					}
					if u.entryBytes > budget {
						watcher <- fmt.Errorf("%d bytes of entries on disk, budget %d", u.entryBytes, budget)
						return
					}
				}
			}()
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
			close(stop)
			if err := <-watcher; err != nil {
				t.Fatal(err)
			}
			checkBudget(t, c, budget, "after concurrent Opens")
			if c.Stats().Evictions == 0 {
				t.Fatal("no evictions although the objects total more than the budget")
			}
		})
	}
}

var testPolicies = []struct {
	name string
	new  func(int64) policy
}{
	{"admission", func(b int64) policy { return newAdmissionPolicy(b) }},
	{"lru", func(int64) policy { return newLRUPolicy() }},
}

// With few entries, both policies evict the least recently used: the
// admission policy's window holds them all.
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
	for _, pol := range testPolicies {
		for _, tt := range tests {
			t.Run(pol.name+"/"+tt.name, func(t *testing.T) {
				src := newMemSource()
				data := map[string][]byte{}
				for _, k := range []string{"a", "b", "c"} {
					data[k] = src.put(k, 40)
				}
				c := newCacheIn(t, Options{Dir: t.TempDir(), MaxBytes: 2*entrySize("a", 40) + 10, newPolicy: pol.new}, src)
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
				if _, err := os.Stat(c.pathOf(tt.evicted)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s still on disk: %v", tt.evicted, err)
				}
				openAndRead(t, c, tt.evicted, data[tt.evicted])
				if n := src.callsFor(tt.evicted); n != 2 {
					t.Errorf("%s fetched %d times, want 2 (it was evicted)", tt.evicted, n)
				}
			})
		}
	}
}

func TestPinnedEntriesAreNotEvicted(t *testing.T) {
	src := newMemSource()
	data := map[string][]byte{}
	for _, k := range []string{"a", "b", "c", "d"} {
		data[k] = src.put(k, 40)
	}
	budget := 2*entrySize("a", 40) + 10
	c := newTestCache(t, budget, src)
	ra, err := c.Open(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	openAndRead(t, c, "b", data["b"])
	openAndRead(t, c, "c", data["c"]) // the oldest is a, but it is pinned: b goes
	if _, err := os.Stat(c.pathOf("a")); err != nil {
		t.Fatalf("a was evicted while a Reader held it: %v", err)
	}
	if _, err := os.Stat(c.pathOf("b")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("b was not evicted in a's place: %v", err)
	}
	if s := c.Stats(); s.Pinned != 1 || s.Entries != 2 {
		t.Fatalf("stats %+v, want a (pinned) and c", s)
	}

	// Everything pinned: a new object is served, but not kept, and the
	// budget holds.
	rc, err := c.Open(context.Background(), "c")
	if err != nil {
		t.Fatal(err)
	}
	openAndRead(t, c, "d", data["d"])
	checkBudget(t, c, budget, "with every entry pinned")
	if _, err := os.Stat(c.pathOf("d")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("d was kept although every other entry was pinned: %v", err)
	}
	rc.Close()

	if got := readAll(t, ra); !bytes.Equal(got, data["a"]) {
		t.Fatal("reader of a pinned entry reads wrong data")
	}
	c.Close()
	if got := readAll(t, ra); !bytes.Equal(got, data["a"]) {
		t.Fatal("reader reads wrong data after the cache closed")
	}
}

func TestEntryLargerThanBudgetIsServedNotKept(t *testing.T) {
	src := newMemSource()
	small := src.put("small", 50)
	big := src.put("big", 2000)
	c := newTestCache(t, entrySize("small", 50)+100, src)
	openAndRead(t, c, "small", small)
	for i := 1; i <= 2; i++ {
		openAndRead(t, c, "big", big)
		if n := src.callsFor("big"); n != i {
			t.Fatalf("big fetched %d times after %d Opens: it must not be cached", n, i)
		}
		// The oversized entry must not have pushed out what fits.
		if u, s := onDisk(t, c), c.Stats(); u != (diskUsage{entryFiles: 1, entryBytes: entrySize("small", 50)}) || s.Entries != 1 || s.Evictions != 0 {
			t.Fatalf("on disk %+v, stats %+v; want only the small entry", u, s)
		}
	}
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
			c.createTemp = readOnlyTemp
		}, 2},
		{"entry cannot be put in place", func(t *testing.T, c *Cache) {
			for _, k := range keys {
				// A file where the entry's directory should go.
				if err := os.WriteFile(filepath.Dir(c.pathOf(k)), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newMemSource()
			var logs testutil.SyncBuffer
			c := newCacheIn(t, Options{Dir: t.TempDir(), MaxBytes: 10_000, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, src)
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

// A full disk also makes the cache give up entries, so later fetches can
// land again.
func TestDiskFullEvicts(t *testing.T) {
	src := newMemSource()
	c := newTestCache(t, 100_000, src)
	data := map[string][]byte{}
	for _, k := range []string{"a", "b", "c"} {
		data[k] = src.put(k, 1000)
		openAndRead(t, c, k, data[k])
	}
	full := true
	c.createTemp = func(dir, pattern string) (*os.File, error) {
		if full {
			return nil, &fs.PathError{Op: "open", Path: dir, Err: syscall.ENOSPC}
		}
		return os.CreateTemp(dir, pattern)
	}
	data["d"] = src.put("d", 1000)
	openAndRead(t, c, "d", data["d"])
	if s := c.Stats(); s.Evictions != 3 || s.Entries != 0 || s.WriteErrors != 1 {
		t.Fatalf("stats %+v, want the 3 entries evicted to make room after ENOSPC", s)
	}
	full = false
	openAndRead(t, c, "d", data["d"])
	if s := c.Stats(); s.Entries != 1 {
		t.Fatalf("stats %+v, want d cached once the disk has room", s)
	}
}

func TestCloseCancelsBlockedFetch(t *testing.T) {
	src := newMemSource()
	src.started = make(chan string, 1)
	src.put("a/0.0", 100)
	src.hold("a/0.0") // never released: only cancellation ends this fetch
	c := newTestCache(t, 10_000, src)

	result := make(chan error, 1)
	go func() {
		_, err := c.Open(context.Background(), "a/0.0")
		result <- err
	}()
	<-src.started
	closeWithin(t, c, 30*time.Second, "Close did not return: it did not cancel the blocked fetch")
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

func TestReadAt(t *testing.T) {
	const size = 100
	backings := []struct {
		name  string
		setup func(c *Cache)
		hit   bool // read through a second Open, served by the entry on disk
	}{
		{"fetched file", func(*Cache) {}, false},
		{"entry on disk", func(*Cache) {}, true},
		{"memory", func(c *Cache) {
			c.createTemp = func(dir, _ string) (*os.File, error) {
				return nil, &fs.PathError{Op: "open", Path: dir, Err: syscall.EROFS}
			}
		}, false},
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
			c := newTestCache(t, 10_000, src)
			b.setup(c)
			r, err := c.Open(context.Background(), "k")
			if err != nil {
				t.Fatal(err)
			}
			var fromNetwork int64
			if b.hit {
				fromNetwork = c.Stats().BytesServed
				r.Close()
				if r, err = c.Open(context.Background(), "k"); err != nil {
					t.Fatal(err)
				}
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
			s := c.Stats()
			wantFromCache := int64(0)
			if b.hit {
				wantFromCache = served
			}
			if s.BytesServed != served+fromNetwork || s.BytesFromCache != wantFromCache {
				t.Fatalf("BytesServed = %d, BytesFromCache = %d; want %d, %d", s.BytesServed, s.BytesFromCache, served, wantFromCache)
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

// TestMarkStale: after the store changed, a cached entry is revalidated (304
// keeps it, a new version replaces it) and a key remembered as missing is
// asked for again.
func TestMarkStale(t *testing.T) {
	src := newMemSource()
	src.put("a", 100)
	wantB := src.put("b", 200)
	c := newTestCache(t, 1<<20, src)
	ctx := context.Background()
	read := func(key string) []byte {
		t.Helper()
		r, err := c.Open(ctx, key)
		if err != nil {
			t.Fatalf("open %s: %v", key, err)
		}
		defer r.Close()
		return readAll(t, r)
	}
	read("a")
	read("b")
	if _, err := c.Open(ctx, "new"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing key: %v", err)
	}

	wantA := src.put("a", 150) // a new version of a
	wantNew := src.put("new", 50)
	c.MarkStale()

	if got := read("a"); !bytes.Equal(got, wantA) {
		t.Errorf("a after MarkStale is not the new version (%d bytes)", len(got))
	}
	if got := read("b"); !bytes.Equal(got, wantB) {
		t.Errorf("b after MarkStale changed")
	}
	if got := read("new"); !bytes.Equal(got, wantNew) {
		t.Errorf("a key missing before MarkStale is not found now")
	}
	if src.condCallsFor("a") != 1 || src.condCallsFor("b") != 1 {
		t.Errorf("conditional requests a=%d b=%d, want 1 each", src.condCallsFor("a"), src.condCallsFor("b"))
	}
	st := c.Stats()
	if st.Revalidations != 1 || st.Changed != 1 {
		t.Errorf("revalidations %d (304s), changed %d; want 1 and 1", st.Revalidations, st.Changed)
	}
	calls := src.callsFor("a")
	if got := read("a"); !bytes.Equal(got, wantA) || src.callsFor("a") != calls {
		t.Errorf("a revalidated entry is not a plain hit again")
	}
}

// TestMarkStaleDuringFetch: an object whose fetch began before MarkStale may
// be the old version, so its entry is revalidated before its next use.
func TestMarkStaleDuringFetch(t *testing.T) {
	src := newMemSource()
	src.put("a", 100)
	c := newTestCache(t, 1<<20, src)
	ctx := context.Background()
	gate := src.hold("a")
	done := make(chan error, 1)
	go func() {
		r, err := c.Open(ctx, "a")
		if err == nil {
			r.Close()
		}
		done <- err
	}()
	for src.callsFor("a") == 0 {
		time.Sleep(time.Millisecond)
	}
	c.MarkStale() // the fetch in flight may have read the old version
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := src.put("a", 150)
	r, err := c.Open(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := readAll(t, r); !bytes.Equal(got, want) {
		t.Errorf("entry fetched across MarkStale served without revalidation (%d bytes, want %d)", len(got), len(want))
	}
	if src.condCallsFor("a") != 1 {
		t.Errorf("conditional requests for a: %d, want 1", src.condCallsFor("a"))
	}
}

// readOnlyTemp is a Cache.createTemp whose files take no write: the file is
// created, then opened read-only.
func readOnlyTemp(dir, pattern string) (*os.File, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	f.Close()
	return os.Open(f.Name())
}
