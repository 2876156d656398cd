package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// crash abandons c as a killed process would: nothing is cleaned up, the
// lock goes (the kernel drops it with the process), fetches stop.
func crash(c *Cache) {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.fetches.Wait()
	c.lock.release()
}

func TestRestartReusesEntries(t *testing.T) {
	src := newMemSource()
	keys := []string{"a/0.0", "a/0.1", "b/c/0/0"}
	data := map[string][]byte{}
	for i, k := range keys {
		data[k] = src.put(k, 1000*(i+1))
	}
	opts := Options{Dir: t.TempDir(), MaxBytes: 100_000}
	c := newCacheIn(t, opts, src)
	for _, k := range keys {
		openAndRead(t, c, k, data[k])
	}
	before := onDisk(t, c)
	crash(c) // no Close: a restart after kill -9 and after Close look the same on disk

	c = newCacheIn(t, opts, src)
	if s := c.Stats(); s.Recovered != 3 || s.Entries != 3 || s.Bytes != before.entryBytes {
		t.Fatalf("after restart: %+v, want the 3 entries (%d bytes) indexed", s, before.entryBytes)
	}
	for range 2 { // the first Opens revalidate, the second ones only hit
		for _, k := range keys {
			openAndRead(t, c, k, data[k])
		}
	}
	for _, k := range keys {
		if n, cond := src.callsFor(k), src.condCallsFor(k); n != 2 || cond != 1 {
			t.Errorf("%s: %d requests (%d conditional), want the first fetch and one revalidation", k, n, cond)
		}
	}
	if s := c.Stats(); s.Hits != 6 || s.Misses != 0 || s.Revalidations != 3 || s.Reused != 6 || s.BytesFromNetwork != 0 {
		t.Errorf("stats %+v, want 6 hits on reused entries, 3 revalidations, nothing fetched", s)
	}

	// A caller that knows the versions needs no request at all.
	c.Close()
	c = newCacheIn(t, opts, src)
	for _, k := range keys {
		r, err := c.OpenVersion(context.Background(), k, src.objects[k].version)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, r); !bytes.Equal(got, data[k]) {
			t.Fatalf("%s: wrong data", k)
		}
		r.Close()
		if n := src.callsFor(k); n != 2 {
			t.Errorf("%s: OpenVersion of the cached version made a request", k)
		}
	}
	if s := c.Stats(); s.Hits != 3 || s.Reused != 3 || s.BytesFromCache != int64(len(data[keys[0]])+len(data[keys[1]])+len(data[keys[2]])) {
		t.Errorf("stats %+v", s)
	}
}

func TestRestartAfterCrashMidWrite(t *testing.T) {
	src := newMemSource()
	keys := []string{"a/0", "a/1", "a/2", "a/3"}
	data := map[string][]byte{}
	for _, k := range keys {
		data[k] = src.put(k, 5000)
	}
	opts := Options{Dir: t.TempDir(), MaxBytes: 100_000}
	c := newCacheIn(t, opts, src)
	for _, k := range keys[:3] {
		openAndRead(t, c, k, data[k])
	}
	// A fetch in the middle of its write when the process dies.
	src.started = make(chan string, 1)
	gate := src.hold("a/3")
	go func() {
		if r, err := c.Open(context.Background(), "a/3"); err == nil {
			r.Close()
		}
	}()
	<-src.started
	tmps, _ := os.ReadDir(c.tmpDir)
	if len(tmps) != 1 {
		t.Fatalf("%d temp files while a fetch runs, want 1", len(tmps))
	}
	// What a power loss leaves of entries renamed into place just before:
	// one cut short, one whose blocks never reached the disk.
	if err := os.Truncate(c.pathOf("a/1"), 3000); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.pathOf("a/2"), make([]byte, entrySize("a/2", 5000)), 0o600); err != nil {
		t.Fatal(err)
	}
	torn := filepath.Join(c.tmpDir, "fetch-torn")
	if err := os.WriteFile(torn, data["a/0"][:100], 0o600); err != nil {
		t.Fatal(err)
	}
	crash(c)
	close(gate)
	src.started = nil

	c = newCacheIn(t, opts, src)
	if u := onDisk(t, c); u.tmpFiles != 0 || u.entryFiles != 1 {
		t.Fatalf("on disk after restart %+v, want no temp files and the one sound entry", u)
	}
	if s := c.Stats(); s.Recovered != 1 || s.CorruptEntries != 2 {
		t.Fatalf("stats %+v, want 1 entry recovered and 2 found damaged", s)
	}
	for _, k := range keys {
		openAndRead(t, c, k, data[k])
	}
	if n := src.condCallsFor("a/0"); n != 1 {
		t.Errorf("the sound entry was not revalidated (%d conditional requests)", n)
	}
	for _, k := range keys[1:] {
		if n := src.condCallsFor(k); n != 0 {
			t.Errorf("%s: revalidated although damaged or never written", k)
		}
	}
	checkBudget(t, c, opts.MaxBytes, "after the reads")
}

func TestRevalidationAfterRestart(t *testing.T) {
	const key = "a/0.0"
	errOrigin := errors.New("origin answered 503")
	tests := []struct {
		name string
		// change alters the origin between the runs; it returns the data
		// Open must now serve, nil if Open must fail.
		change      func(src *memSource) []byte
		wantErr     error
		wantStats   Stats // the counters to compare: Hits, Misses, Revalidations, Changed, Reused
		wantCond    int   // conditional requests
		wantFetches int   // requests in all, in the second run
		wantKept    bool  // an entry of key on disk afterwards
	}{
		{"unchanged: 304 keeps the entry", func(src *memSource) []byte { return src.objects[key].data },
			nil, Stats{Hits: 1, Revalidations: 1, Reused: 1}, 1, 1, true},
		{"changed: the new version replaces it", func(src *memSource) []byte { return src.put(key, 777) },
			nil, Stats{Misses: 1, Changed: 1}, 1, 1, true},
		{"no version: fetched again", func(src *memSource) []byte { return nil },
			nil, Stats{Misses: 1}, 0, 1, true},
		{"deleted on the origin: not found, entry removed", func(src *memSource) []byte { src.remove(key); return nil },
			fs.ErrNotExist, Stats{}, 1, 1, false},
		{"origin failing: error, entry kept", func(src *memSource) []byte { src.failWith(key, errOrigin); return nil },
			errOrigin, Stats{}, 1, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newMemSource()
			data := src.put(key, 500)
			if strings.HasPrefix(tt.name, "no version") {
				data = src.putVersion(key, 500, "")
			}
			opts := Options{Dir: t.TempDir(), MaxBytes: 100_000}
			c := newCacheIn(t, opts, src)
			openAndRead(t, c, key, data)
			c.Close()

			want := tt.change(src)
			if want == nil && tt.wantErr == nil {
				want = data
			}
			calls0, cond0 := src.callsFor(key), src.condCallsFor(key)
			c = newCacheIn(t, opts, src)
			r, err := c.Open(context.Background(), key)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Open = %v, want %v", err, tt.wantErr)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, r); !bytes.Equal(got, want) || r.Version() != src.objects[key].version {
					t.Fatalf("Open served %d bytes of version %s, want the origin's %d bytes of %s", len(got), r.Version(), len(want), src.objects[key].version)
				}
				r.Close()
			}
			s := c.Stats()
			got := Stats{Hits: s.Hits, Misses: s.Misses, Revalidations: s.Revalidations, Changed: s.Changed, Reused: s.Reused}
			if got != tt.wantStats {
				t.Errorf("stats %+v, want %+v", got, tt.wantStats)
			}
			if n, cond := src.callsFor(key)-calls0, src.condCallsFor(key)-cond0; n != tt.wantFetches || cond != tt.wantCond {
				t.Errorf("%d requests, %d conditional; want %d, %d", n, cond, tt.wantFetches, tt.wantCond)
			}
			if _, err := os.Stat(c.pathOf(key)); (err == nil) != tt.wantKept {
				t.Errorf("entry on disk: %v, want kept %v", err, tt.wantKept)
			}

			// Whatever happened, the next Open without a change is a hit
			// with no request, or (after an error) succeeds.
			src.failWith(key, nil)
			if tt.wantErr == nil {
				calls := src.callsFor(key)
				openAndRead(t, c, key, want)
				if src.callsFor(key) != calls {
					t.Errorf("the Open after the revalidation made a request")
				}
			}
		})
	}
}

func TestConcurrentOpensRevalidateOnce(t *testing.T) {
	const openers = 20
	src := newMemSource()
	data := src.put("k", 4000)
	opts := Options{Dir: t.TempDir(), MaxBytes: 100_000}
	c := newCacheIn(t, opts, src)
	openAndRead(t, c, "k", data)
	c.Close()

	c = newCacheIn(t, opts, src)
	src.started = make(chan string, 1)
	gate := src.hold("k")
	var wg sync.WaitGroup
	for range openers {
		wg.Go(func() {
			r, err := c.Open(context.Background(), "k")
			if err != nil {
				t.Error(err)
				return
			}
			defer r.Close()
			if got := readAll(t, r); !bytes.Equal(got, data) {
				t.Error("wrong data")
			}
		})
	}
	<-src.started
	waitFor(t, "the Opens to wait for the revalidation", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, fl := range c.flights {
			return fl.waiters == openers
		}
		return false
	})
	close(gate)
	wg.Wait()
	if n := src.condCallsFor("k"); n != 1 || src.callsFor("k") != 2 {
		t.Fatalf("%d conditional requests for %d concurrent Opens, want 1", n, openers)
	}
	if s := c.Stats(); s.Hits != openers || s.Revalidations != 1 || s.Pinned != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// revalidateOnceSource is a memSource that answers one conditional request
// per key; a further one fails. A cache that revalidates an entry more than
// once then fails the Open at once, where it could otherwise revalidate in
// a loop.
type revalidateOnceSource struct {
	*memSource
	mu          sync.Mutex
	revalidated map[string]bool
}

var errRevalidatedAgain = errors.New("test source: a second conditional request for the same key")

func (s *revalidateOnceSource) FetchIfChanged(ctx context.Context, key, version string, w io.Writer) (string, bool, error) {
	s.mu.Lock()
	again := s.revalidated[key]
	s.revalidated[key] = true
	s.mu.Unlock()
	if again {
		return "", false, errRevalidatedAgain
	}
	return s.memSource.FetchIfChanged(ctx, key, version, w)
}

// TestRevalidatedEntryIsTrusted: an entry of an earlier run is revalidated
// once, by the first Open that does not know its version, and trusted from
// then on; an OpenVersion of the version it holds vouches for it as a 304
// would, so the Opens after it make no request either.
func TestRevalidatedEntryIsTrusted(t *testing.T) {
	src := &revalidateOnceSource{memSource: newMemSource(), revalidated: map[string]bool{}}
	dataA := src.put("a", 1000)
	dataB := src.put("b", 2000)
	opts := Options{Dir: t.TempDir(), MaxBytes: 100_000}
	c := newCacheIn(t, opts, src)
	openAndRead(t, c, "a", dataA)
	openAndRead(t, c, "b", dataB)
	c.Close()

	c = newCacheIn(t, opts, src)
	for i := range 3 {
		openAndRead(t, c, "a", dataA)
		if n, cond := src.callsFor("a"), src.condCallsFor("a"); n != 2 || cond != 1 {
			t.Fatalf("after Open %d of a in the second run: %d requests (%d conditional), want the first run's fetch and one revalidation", i+1, n, cond)
		}
	}

	r, err := c.OpenVersion(context.Background(), "b", src.versionOf("b"))
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, r); !bytes.Equal(got, dataB) {
		t.Fatal("OpenVersion(b): wrong data")
	}
	r.Close()
	for i := range 2 {
		openAndRead(t, c, "b", dataB)
		if n := src.callsFor("b"); n != 1 {
			t.Fatalf("Open %d of b after an OpenVersion of its version: %d requests (%d conditional), want only the first run's fetch", i+1, n, src.condCallsFor("b"))
		}
	}
	if s := c.Stats(); s.Hits != 6 || s.Misses != 0 || s.Revalidations != 1 || s.Reused != 6 {
		t.Fatalf("stats %+v, want 6 hits on reused entries and one revalidation", s)
	}
}

func TestOpenVersion(t *testing.T) {
	src := newMemSource()
	v1data := src.put("k", 100)
	v1 := src.objects["k"].version
	c := newTestCache(t, 100_000, src)
	open := func(version string) *Reader {
		t.Helper()
		r, err := c.OpenVersion(context.Background(), "k", version)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}

	open(v1).Close() // fetched
	open(v1).Close() // hit
	if n := src.callsFor("k"); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}

	// The manifest says the object changed: the old entry is not used.
	v2data := src.put("k", 200)
	v2 := src.objects["k"].version
	r := open(v2)
	if got := readAll(t, r); !bytes.Equal(got, v2data) || r.Version() != v2 {
		t.Fatalf("OpenVersion(v2) served version %s", r.Version())
	}
	if n, cond := src.callsFor("k"), src.condCallsFor("k"); n != 2 || cond != 0 {
		t.Fatalf("%d requests (%d conditional), want one plain fetch more", n, cond)
	}
	r.Close()
	// Fetched by this process, so Open uses it too; an old version is a miss.
	openAndRead(t, c, "k", v2data)
	if n := src.callsFor("k"); n != 2 {
		t.Fatalf("Open of an entry this process fetched made a request")
	}

	// A manifest older than the origin: the Reader says what it holds.
	r = open(v1)
	if got := readAll(t, r); r.Version() != v2 || !bytes.Equal(got, v2data) {
		t.Fatalf("OpenVersion(v1) with v2 on the origin served version %s", r.Version())
	}
	if bytes.Equal(v1data, v2data) {
		t.Fatal("test objects must differ")
	}
	// OpenVersion with no version is Open.
	open("").Close()
	if s := c.Stats(); s.Hits != 3 || s.Misses != 3 {
		t.Fatalf("stats %+v, want 3 hits and 3 misses", s)
	}
}

func TestLockedDirectory(t *testing.T) {
	dir := t.TempDir()
	src := newMemSource()
	first := newCacheIn(t, Options{Dir: dir, MaxBytes: 1000}, src)

	_, err := New(Options{Dir: dir, MaxBytes: 1000}, src)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second New on the same directory = %v, want ErrLocked", err)
	}
	for _, want := range []string{dir, fmt.Sprintf("process %d", os.Getpid()), "use a different --cache-dir, or unmount the other mount"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	first.Close()
	second := newCacheIn(t, Options{Dir: dir, MaxBytes: 1000}, src)
	second.Close()

	// Another process holding the lock.
	flock, err := exec.LookPath("flock")
	if err != nil {
		t.Skip("no flock command to hold the lock from another process")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	holder := exec.CommandContext(ctx, flock, filepath.Join(dir, lockFileName), "sleep", "60")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Wait()
	defer cancel()
	waitFor(t, "the other process to take the lock", func() bool {
		c, err := New(Options{Dir: dir, MaxBytes: 1000}, src)
		if err == nil {
			c.Close()
			return false
		}
		return errors.Is(err, ErrLocked)
	})
}

// fakeDisk is a file system of a given capacity holding the cache
// directory and, on the side, other files of size other.
type fakeDisk struct {
	capacity int64
	other    atomic.Int64
}

func (d *fakeDisk) statfs(dir string) (int64, error) {
	var used int64
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		info, err := e.Info()
		if err == nil {
			used += info.Size()
		}
		return nil
	})
	return d.capacity - used - d.other.Load(), err
}

func TestMinFreeSpace(t *testing.T) {
	src := newMemSource()
	one := entrySize("k00", 1000)
	disk := &fakeDisk{capacity: 10*one + 50}
	c := newCacheIn(t, Options{Dir: t.TempDir(), MaxBytes: 100 * one, MinFreeBytes: 3 * one, statfs: disk.statfs}, src)
	read := func(k string) {
		t.Helper()
		want := src.objects[k].data
		if want == nil {
			want = src.put(k, 1000)
		}
		openAndRead(t, c, k, want)
	}
	for i := range 20 {
		read(fmt.Sprintf("k%02d", i))
		if u := onDisk(t, c); u.entryBytes > 7*one {
			t.Fatalf("after %d reads: %d entries on disk, want at most 7 to keep 3 entries' worth free", i+1, u.entryFiles)
		}
	}
	if s := c.Stats(); s.Entries != 7 || s.Evictions != 13 {
		t.Fatalf("stats %+v, want the cache to fill what the floor allows", s)
	}

	// Other files take 4 entries' worth: the next insert shrinks the cache.
	disk.other.Store(4 * one)
	read("k00")
	if u := onDisk(t, c); u.entryBytes > 3*one {
		t.Fatalf("%d entries on disk, want at most 3 once other files fill the disk", u.entryFiles)
	}

	// The disk is full of other files: reads go on, nothing is kept.
	disk.other.Store(10 * one)
	for i := range 5 {
		read(fmt.Sprintf("k%02d", i))
	}
	if u := onDisk(t, c); u.entryFiles != 0 || u.tmpFiles != 0 {
		t.Fatalf("on disk %+v, want nothing kept on a full disk", u)
	}
}

// TestConcurrentReadersStress runs readers, lookups and version-aware
// opens against a small cache while the origin changes objects, and checks
// every byte against the version the Reader reports. Run it with -race.
func TestConcurrentReadersStress(t *testing.T) {
	src := newMemSource()
	const nkeys = 30
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("s/%d", i)
		src.put(keys[i], 100+(i*397)%5000)
	}
	budget := 10 * entrySize("s/10", 2500)
	opts := Options{Dir: t.TempDir(), MaxBytes: budget}
	c := newCacheIn(t, opts, src)

	stop := make(chan struct{})
	var mutator sync.WaitGroup
	mutator.Go(func() { // the origin publishes new versions now and then
		rng := rand.New(rand.NewPCG(7, 7))
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			src.putVersion(keys[rng.IntN(nkeys)], 100+rng.IntN(5000), fmt.Sprintf(`"m%d"`, n))
		}
	})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range 150 {
				k := keys[rng.IntN(nkeys)]
				var r *Reader
				var err error
				switch op := rng.IntN(10); {
				case op < 6:
					r, err = c.Open(context.Background(), k)
				case op < 9:
					src.mu.Lock()
					v := src.objects[k].version
					src.mu.Unlock()
					r, err = c.OpenVersion(context.Background(), k, v)
				default:
					_, err = c.Size(context.Background(), k)
				}
				if err != nil {
					t.Errorf("%s: %v", k, err)
					return
				}
				if r == nil {
					continue
				}
				got, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
				if err != nil || !bytes.Equal(got, src.dataOf(r.Version())) {
					t.Errorf("%s: %d bytes (%v) differ from version %s", k, len(got), err, r.Version())
				}
				r.Close()
			}
		})
	}
	wg.Wait()
	close(stop)
	mutator.Wait()

	checkBudget(t, c, budget, "after the stress")
	if n := openCacheFiles(t, c); n != 0 {
		t.Errorf("%d cache files still open after every Reader closed", n)
	}
	if s := c.Stats(); s.Pinned != 0 || s.InFlight != 0 || s.Hits == 0 || s.Evictions == 0 || s.CorruptEntries != 0 {
		t.Errorf("stats %+v", s)
	}
	// What is left on disk is sound.
	c.Close()
	c = newCacheIn(t, opts, src)
	if s := c.Stats(); s.CorruptEntries != 0 {
		t.Errorf("restart found %d damaged entries", s.CorruptEntries)
	}
}
