package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	errTestChanged  = errors.New("the object changed (as remote.ErrChanged)")
	errTestNoRanges = errors.New("the origin ignores ranges (as remote.ErrRangesUnsupported)")
)

func rangeName(key string, off, n int64) string { return fmt.Sprintf("%s@%d+%d", key, off, n) }

// FetchRange makes memSource a RangeSource. Like the remote client behind
// the fusefs adapter, it fails when the object is not the version asked for,
// delivers fewer bytes when the object ends first, and can be set to fail
// as an origin that ignores ranges, or to deliver the wrong length.
func (s *memSource) FetchRange(ctx context.Context, key, version string, off, n int64, w io.Writer) error {
	s.mu.Lock()
	s.ranges[key]++
	s.ranges[rangeName(key, off, n)]++
	gate := s.gates[key]
	s.mu.Unlock()
	if s.started != nil {
		s.started <- key
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock() // the object as it is once the request goes out
	obj, ok := s.objects[key]
	failure, changedErr, noRanges, extra := s.errs[key], s.changedErr, s.noRanges, s.rangeExtra
	s.mu.Unlock()
	switch {
	case !ok:
		return fmt.Errorf("GET %s: %w", key, fs.ErrNotExist)
	case noRanges:
		return fmt.Errorf("GET %s: %w", key, errTestNoRanges)
	case version != obj.version:
		if changedErr == nil {
			changedErr = errTestChanged
		}
		return fmt.Errorf("GET %s: %w: it is %s, not %s", key, changedErr, obj.version, version)
	}
	end := max(off, min(off+n+int64(extra), int64(len(obj.data))))
	data := obj.data[min(off, end):end]
	if failure != nil {
		_, _ = w.Write(data[:len(data)/2])
		return failure
	}
	for len(data) > 0 {
		k := min(len(data), 7000)
		if _, err := w.Write(data[:k]); err != nil {
			return err
		}
		data = data[k:]
	}
	return nil
}

func (s *memSource) rangeCallsFor(key string, off, n int64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ranges[rangeName(key, off, n)]
}

func (s *memSource) rangeCallsForKey(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ranges[key]
}

func (s *memSource) set(f func(s *memSource)) {
	s.mu.Lock()
	f(s)
	s.mu.Unlock()
}

func (s *memSource) versionOf(key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.objects[key].version
}

// releaseWhen closes gate once cond holds (or after 30s, so that a failing
// test ends), from its own goroutine: for a request to be let through once
// the test has set up what waits for it.
func releaseWhen(gate chan struct{}, cond func() bool) {
	go func() {
		deadline := time.Now().Add(30 * time.Second)
		for !cond() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		close(gate)
	}()
}

// plainSource hides memSource's FetchRange: a Source without ranges.
type plainSource struct{ Source }

func rangeEntrySize(key string, n int64) int64 { return headerLenOf(span{n: n}, len(key)) + n }

// openRangeAndRead opens a range, checks its size, version and content
// (also read from an inner offset) and closes it.
func openRangeAndRead(t *testing.T, c *Cache, key, version string, off, n int64, want []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	r, err := c.OpenRange(ctx, key, version, off, n)
	if err != nil {
		t.Fatalf("OpenRange(%s): %v", rangeName(key, off, n), err)
	}
	defer r.Close()
	if r.Size() != n || r.Version() != version {
		t.Fatalf("OpenRange(%s): size %d, version %s; want %d, %s", rangeName(key, off, n), r.Size(), r.Version(), n, version)
	}
	if got := readAll(t, r); !bytes.Equal(got, want) {
		t.Fatalf("OpenRange(%s): read %d bytes that differ from the %d of the object's range", rangeName(key, off, n), len(got), len(want))
	}
	if n > 1 {
		p := make([]byte, n-1)
		if k, err := r.ReadAt(p, 1); int64(k) != n-1 || (err != nil && err != io.EOF) || !bytes.Equal(p, want[1:]) {
			t.Fatalf("ReadAt(1) of %s: %d bytes, %v, or wrong content", rangeName(key, off, n), k, err)
		}
	}
}

func TestOpenRangeFetchesOnceThenHits(t *testing.T) {
	const key = "arr/c/0"
	src := newMemSource()
	data := src.put(key, 20_000)
	v := src.versionOf(key)
	c := newTestCache(t, 1<<20, src)
	ranges := []span{{0, 1000}, {1000, 8000}, {19_999, 1}, {0, 20_000}, {500, 7001}}
	var netBytes, diskBytes int64
	for _, r := range ranges {
		openRangeAndRead(t, c, key, v, r.off, r.n, data[r.off:r.off+r.n])
		openRangeAndRead(t, c, key, v, r.off, r.n, data[r.off:r.off+r.n])
		if got := src.rangeCallsFor(key, r.off, r.n); got != 1 {
			t.Errorf("%s: %d requests for two OpenRanges, want 1", r.describe(key), got)
		}
		netBytes += r.n
		diskBytes += rangeEntrySize(key, r.n)
	}
	if n := src.callsFor(key); n != 0 {
		t.Errorf("%d whole-object requests, want none", n)
	}
	s := c.Stats()
	want := Stats{Hits: 5, Misses: 5, Fetches: 5, BytesFromNetwork: netBytes, Entries: 5, Bytes: diskBytes, RangeEntries: 5, RangeBytes: diskBytes}
	got := Stats{Hits: s.Hits, Misses: s.Misses, Fetches: s.Fetches, BytesFromNetwork: s.BytesFromNetwork, Entries: s.Entries, Bytes: s.Bytes, RangeEntries: s.RangeEntries, RangeBytes: s.RangeBytes}
	if got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}
	checkBudget(t, c, 1<<20, "after the reads")
	if s.Pinned != 0 || openCacheFiles(t, c) != 0 {
		t.Errorf("%d entries pinned, %d files open after every Reader closed", s.Pinned, openCacheFiles(t, c))
	}
}

func TestOpenRangeRejects(t *testing.T) {
	src := newMemSource()
	src.put("k", 100)
	v := src.versionOf("k")
	tests := []struct {
		name         string
		src          Source
		version      string
		off, n       int64
		wantNoRanges bool
	}{
		{"no version", src, "", 0, 10, false},
		{"negative offset", src, v, -1, 10, false},
		{"empty range", src, v, 0, 0, false},
		{"negative length", src, v, 0, -5, false},
		{"range past the largest offset", src, v, 1 << 62, 1 << 62, false},
		{"plain Source", plainSource{src}, v, 0, 10, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCache(t, 1<<20, tt.src)
			r, err := c.OpenRange(context.Background(), "k", tt.version, tt.off, tt.n)
			if err == nil {
				r.Close()
				t.Fatal("OpenRange succeeded")
			}
			if errors.Is(err, ErrNoRanges) != tt.wantNoRanges {
				t.Fatalf("OpenRange = %v; ErrNoRanges expected: %v", err, tt.wantNoRanges)
			}
			if n := src.rangeCallsForKey("k"); n != 0 {
				t.Fatalf("%d requests for a rejected range", n)
			}
		})
	}
}

func TestConcurrentOpenRangesFetchOnce(t *testing.T) {
	const openers = 30
	src := newMemSource()
	data := src.put("shard", 10_000)
	v := src.versionOf("shard")
	gate := src.hold("shard")
	c := newTestCache(t, 1<<20, src)
	var wg sync.WaitGroup
	errs := make(chan error, openers)
	for range openers {
		wg.Go(func() {
			r, err := c.OpenRange(context.Background(), "shard", v, 2000, 3000)
			if err != nil {
				errs <- err
				return
			}
			defer r.Close()
			if got := readAll(t, r); !bytes.Equal(got, data[2000:5000]) {
				errs <- errors.New("content differs from the origin's range")
			}
		})
	}
	waitFor(t, "all OpenRanges to wait for the fetch", func() bool { return c.Stats().Misses == openers })
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := src.rangeCallsForKey("shard"); n != 1 {
		t.Fatalf("%d requests for %d concurrent OpenRanges, want 1", n, openers)
	}
	if s := c.Stats(); s.RangeEntries != 1 || s.Pinned != 0 || s.InFlight != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestWholeAndRangesCoexist(t *testing.T) {
	const key = "big/0.0"
	src := newMemSource()
	data := src.put(key, 5000)
	v := src.versionOf(key)
	ranges := []span{{0, 100}, {0, 200}, {100, 100}, {4904, 96}}
	opts := Options{Dir: t.TempDir(), MaxBytes: 1 << 20}
	c := newCacheIn(t, opts, src)
	openAndRead(t, c, key, data)
	for _, r := range ranges {
		openRangeAndRead(t, c, key, v, r.off, r.n, data[r.off:r.off+r.n])
	}
	if u := onDisk(t, c); u.entryFiles != 5 {
		t.Fatalf("%d entry files, want the whole object and %d ranges apart", u.entryFiles, len(ranges))
	}
	if s := c.Stats(); s.Entries != 5 || s.RangeEntries != 4 || s.Bytes-s.RangeBytes != entrySize(key, 5000) {
		t.Fatalf("stats %+v", s)
	}

	crash(c)
	c = newCacheIn(t, opts, src)
	if s := c.Stats(); s.Recovered != 5 || s.RangeEntries != 4 || s.CorruptEntries != 0 {
		t.Fatalf("after restart %+v, want all 5 entries back", s)
	}
	for _, r := range ranges {
		openRangeAndRead(t, c, key, v, r.off, r.n, data[r.off:r.off+r.n])
		if n := src.rangeCallsFor(key, r.off, r.n); n != 1 {
			t.Errorf("%s: %d requests, want only the first run's", r.describe(key), n)
		}
	}
	openAndRead(t, c, key, data) // the whole entry is revalidated as ever
	if n, cond := src.callsFor(key), src.condCallsFor(key); n != 2 || cond != 1 {
		t.Errorf("whole object: %d requests (%d conditional), want the fetch and one revalidation", n, cond)
	}
	if s := c.Stats(); s.Reused != 5 || s.Hits != 5 {
		t.Errorf("stats %+v, want 5 hits on reused entries", s)
	}
}

func TestRangeEntryAcrossRestart(t *testing.T) {
	const key = "s/c/1"
	const off, n = 4096, 4096
	tests := []struct {
		name string
		// change alters the origin (and the cache) between the runs and
		// returns the version the caller asks for now.
		change      func(src *memSource, c *Cache) string
		wantCalls   int // range requests in the second run
		wantReused  int64
		wantCurrent bool // the data served is the origin's current version (else the first run's)
	}{
		{"same version: used with no request",
			func(src *memSource, _ *Cache) string { return src.versionOf(key) }, 0, 1, true},
		{"MarkStale is irrelevant: the version is the proof",
			func(src *memSource, c *Cache) string { c.MarkStale(); return src.versionOf(key) }, 0, 1, true},
		{"origin changed, caller still at the old version: used with no request",
			func(src *memSource, _ *Cache) string { v := src.versionOf(key); src.put(key, 9000); return v }, 0, 1, false},
		{"origin changed, caller at the new version: fetched again",
			func(src *memSource, _ *Cache) string { src.put(key, 9000); return src.versionOf(key) }, 1, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newMemSource()
			first := src.put(key, 10_000)
			v1 := src.versionOf(key)
			opts := Options{Dir: t.TempDir(), MaxBytes: 1 << 20}
			c := newCacheIn(t, opts, src)
			openRangeAndRead(t, c, key, v1, off, n, first[off:off+n])
			c.Close()

			c = newCacheIn(t, opts, src)
			version := tt.change(src, c)
			want := first[off : off+n]
			if tt.wantCurrent {
				want = src.dataOf(src.versionOf(key))[off : off+n]
			}
			openRangeAndRead(t, c, key, version, off, n, want)
			if got := src.rangeCallsForKey(key) - 1; got != tt.wantCalls {
				t.Errorf("%d requests, want %d", got, tt.wantCalls)
			}
			s := c.Stats()
			if s.Reused != tt.wantReused || s.RangeEntries != 1 || s.CorruptEntries != 0 {
				t.Errorf("stats %+v, want %d reused and the one range entry", s, tt.wantReused)
			}
			checkBudget(t, c, opts.MaxBytes, "after the read")
			// What is on disk now is used by the next run with no request.
			c.Close()
			calls := src.rangeCallsForKey(key)
			c = newCacheIn(t, opts, src)
			openRangeAndRead(t, c, key, version, off, n, want)
			if src.rangeCallsForKey(key) != calls {
				t.Error("the third run made a request")
			}
		})
	}
}

// TestRangeCorruptionMatrix damages range entries in every way of damages
// (a swap exchanges two ranges of one object of equal length, which only
// their names and recorded offsets tell apart), while the cache runs and
// across a restart.
func TestRangeCorruptionMatrix(t *testing.T) {
	const key = "s/c/0"
	targets := []target{
		{key, span{0, 1000}},
		{key, span{1000, 2000}}, // victim
		{key, span{3000, 2000}}, // partner
		{key, span{9999, 1}},
	}
	victim, partner := targets[1], targets[2]
	for _, restart := range []bool{false, true} {
		mode := "in process"
		if restart {
			mode = "across a restart"
		}
		for _, d := range damages {
			t.Run(mode+"/"+d.name, func(t *testing.T) {
				src := newMemSource()
				data := src.put(key, 10_000)
				v := src.versionOf(key)
				opts := Options{Dir: t.TempDir(), MaxBytes: 100_000}
				c := newCacheIn(t, opts, src)
				readAllTargets := func() {
					t.Helper()
					for _, tg := range targets {
						openRangeAndRead(t, c, key, v, tg.rng.off, tg.rng.n, data[tg.rng.off:tg.rng.off+tg.rng.n])
					}
				}
				readAllTargets()
				wantCorrupt := d.inProcess
				if restart {
					c.Close()
					d.apply(t, c, victim, partner)
					c = newCacheIn(t, opts, src)
					wantCorrupt = d.acrossRestart
				} else {
					d.apply(t, c, victim, partner)
				}

				readAllTargets()
				for _, tg := range targets {
					hurt := tg == victim || (d.damaged == 2 && tg == partner)
					want := 1 // no request for a sound range, even after a restart...
					if hurt {
						want = 2 // ...and one fetch for a damaged one
					}
					if got := src.rangeCallsFor(key, tg.rng.off, tg.rng.n); got != want {
						t.Errorf("%s (damaged %v): %d requests, want %d", tg, hurt, got, want)
					}
				}
				s := c.Stats()
				if s.CorruptEntries != int64(wantCorrupt) || s.RangeEntries != len(targets) {
					t.Errorf("CorruptEntries = %d, RangeEntries = %d; want %d, %d", s.CorruptEntries, s.RangeEntries, wantCorrupt, len(targets))
				}
				checkBudget(t, c, opts.MaxBytes, "after the reads")

				// The refetched entries are sound: a new cache uses them all.
				c.Close()
				c = newCacheIn(t, opts, src)
				calls := src.rangeCallsForKey(key)
				readAllTargets()
				if s := c.Stats(); s.Hits != int64(len(targets)) || s.Reused != int64(len(targets)) || s.CorruptEntries != 0 || src.rangeCallsForKey(key) != calls {
					t.Errorf("after the repair: %+v, want every entry reused and none corrupt", s)
				}
			})
		}
	}
}

// checkNothingKept checks that no entry, temp file or open file is left.
func checkNothingKept(t *testing.T, c *Cache) {
	t.Helper()
	if u := onDisk(t, c); u.entryFiles != 0 || u.tmpFiles != 0 {
		t.Errorf("on disk %+v, want nothing", u)
	}
	if s := c.Stats(); s.Entries != 0 || s.Pinned != 0 {
		t.Errorf("stats %+v, want no entry", s)
	}
	if n := openCacheFiles(t, c); n != 0 {
		t.Errorf("%d cache files left open", n)
	}
}

func TestRangeFetchFailures(t *testing.T) {
	const key = "s/0"
	const off, n = 100, 500
	errOrigin := errors.New("origin answered 503")
	errCustomChanged := errors.New("precondition failed (injected)")
	tests := []struct {
		name string
		// setup alters the source, under its lock; it returns the version
		// to ask for.
		setup   func(src *memSource) string
		wantErr error
	}{
		{"one byte short", func(src *memSource) string { src.rangeExtra = -1; return src.objects[key].version }, ErrRangeLength},
		{"nothing delivered", func(src *memSource) string { src.rangeExtra = -n; return src.objects[key].version }, ErrRangeLength},
		{"one byte too many", func(src *memSource) string { src.rangeExtra = 1; return src.objects[key].version }, ErrRangeLength},
		{"many bytes too many", func(src *memSource) string { src.rangeExtra = 20_000; return src.objects[key].version }, ErrRangeLength},
		{"object changed", func(src *memSource) string {
			v := src.objects[key].version
			src.objects[key] = memObject{data: src.objects[key].data, version: `"v2"`}
			return v
		}, errTestChanged},
		{"object changed, injected error", func(src *memSource) string {
			src.changedErr = errCustomChanged
			return `"an old one"`
		}, errCustomChanged},
		{"origin ignores ranges", func(src *memSource) string { src.noRanges = true; return src.objects[key].version }, errTestNoRanges},
		{"origin failing mid-body", func(src *memSource) string { src.errs[key] = errOrigin; return src.objects[key].version }, errOrigin},
		{"missing on the origin", func(src *memSource) string { v := src.objects[key].version; delete(src.objects, key); return v }, fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newMemSource()
			data := src.put(key, 1000)
			c := newTestCache(t, 1<<20, src)
			var version string
			src.set(func(s *memSource) { version = tt.setup(s) })

			r, err := c.OpenRange(context.Background(), key, version, off, n)
			if err == nil {
				r.Close()
				t.Fatal("OpenRange succeeded")
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("OpenRange = %v, want %v", err, tt.wantErr)
			}
			checkNothingKept(t, c)

			// The same failure through a prefetch: reported, nothing kept.
			got := make(chan error, 1)
			c.Prefetch(Want{Key: key, Version: version, Off: off, Len: n, Done: func(err error) { got <- err }}, PriorityHigh)
			if err := <-got; !errors.Is(err, tt.wantErr) {
				t.Fatalf("prefetch outcome %v, want %v", err, tt.wantErr)
			}
			waitIdle(t, c)
			checkNothingKept(t, c)

			// Once the origin behaves, the range is fetched and kept.
			src.set(func(s *memSource) {
				s.rangeExtra, s.noRanges, s.changedErr = 0, false, nil
				delete(s.errs, key)
				s.objects[key] = memObject{data: data, version: `"v-good"`}
			})
			openRangeAndRead(t, c, key, `"v-good"`, off, n, data[off:off+n])
			if s := c.Stats(); s.RangeEntries != 1 || s.CorruptEntries != 0 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

func TestOpenRangeServedFromMemoryWhenDiskFails(t *testing.T) {
	src := newMemSource()
	data := src.put("k", 4000)
	v := src.versionOf("k")
	c := newTestCache(t, 1<<20, src)
	c.createTemp = func(dir, _ string) (*os.File, error) {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: syscall.EROFS}
	}
	openRangeAndRead(t, c, "k", v, 1000, 2000, data[1000:3000])
	if s := c.Stats(); s.WriteErrors != 1 || s.Misses != 1 {
		t.Fatalf("stats %+v, want one write error", s)
	}
	checkNothingKept(t, c)
}

func TestRangeEntriesWithinBudget(t *testing.T) {
	const key = "shard/0"
	const n = 1000
	per := rangeEntrySize(key, n)
	budget := 3*per + per/2
	src := newMemSource()
	data := src.put(key, 20*n)
	v := src.versionOf(key)
	c := newCacheIn(t, Options{Dir: t.TempDir(), MaxBytes: budget, newPolicy: func(int64) policy { return newLRUPolicy() }}, src)

	// A Reader held open pins its range through all that follows.
	pinned, err := c.OpenRange(context.Background(), key, v, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(1); i < 12; i++ {
		openRangeAndRead(t, c, key, v, i*n, n, data[i*n:(i+1)*n])
		checkBudget(t, c, budget, fmt.Sprintf("after range %d", i))
	}
	s := c.Stats()
	if s.Evictions < 8 || s.RangeEntries != s.Entries || s.RangeBytes != s.Bytes || s.Entries > 3 {
		t.Fatalf("stats %+v, want ranges evicted to stay within 3 entries", s)
	}
	if _, err := os.Stat(c.pathOfTarget(target{key, span{0, n}})); err != nil {
		t.Fatalf("the pinned range was evicted: %v", err)
	}
	if got := readAll(t, pinned); !bytes.Equal(got, data[:n]) {
		t.Fatal("the pinned range's Reader reads wrong data")
	}
	pinned.Close()
	// The most recent ranges are hits, the first evicted ones misses.
	calls := src.rangeCallsForKey(key)
	openRangeAndRead(t, c, key, v, 11*n, n, data[11*n:12*n])
	if src.rangeCallsForKey(key) != calls {
		t.Error("the most recent range was not kept")
	}
	openRangeAndRead(t, c, key, v, 1*n, n, data[1*n:2*n])
	if src.rangeCallsForKey(key) != calls+1 {
		t.Error("an evicted range was served without a fetch")
	}
	checkBudget(t, c, budget, "at the end")
}

func TestOpenRangeJoinsPrefetch(t *testing.T) {
	const key = "s"
	tests := []struct {
		name   string
		queued bool // the prefetch waits in the queue (else its request runs)
	}{
		{"in flight", false},
		{"queued", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newMemSource()
			data := src.put(key, 8000)
			v := src.versionOf(key)
			src.put("busy", 10)
			c := newTestCache(t, 1<<20, src)
			src.started = make(chan string, 8)
			var gate chan struct{}
			if tt.queued {
				c.mu.Lock()
				c.sched.fixedLimit = 1
				c.mu.Unlock()
				gate = src.hold("busy")
				c.Prefetch(Want{Key: "busy"}, PriorityUrgent) // takes the only slot
				<-src.started
			} else {
				gate = src.hold(key)
			}
			doneErr := make(chan error, 1)
			if got := c.Prefetch(Want{Key: key, Version: v, Off: 2000, Len: 3000, Done: func(err error) { doneErr <- err }}, PriorityLow); got != PrefetchQueued {
				t.Fatalf("Prefetch = %v", got)
			}
			if !tt.queued {
				<-src.started
				releaseWhen(gate, func() bool {
					c.mu.Lock()
					defer c.mu.Unlock()
					for _, fl := range c.flights {
						if fl.rng.ranged() && fl.waiters == 1 && fl.sched.prio == PriorityDemand {
							return true
						}
					}
					return false
				})
			}
			openRangeAndRead(t, c, key, v, 2000, 3000, data[2000:5000])
			if err := <-doneErr; err != nil {
				t.Fatalf("prefetch outcome %v", err)
			}
			if tt.queued {
				close(gate)
			}
			waitIdle(t, c)
			if n := src.rangeCallsForKey(key); n != 1 {
				t.Fatalf("%d requests, want 1", n)
			}
			var unread int64 // the range was read: only "busy" is unread
			if tt.queued {
				unread = entrySize("busy", 10)
			}
			if ps := c.PrefetchStats(); ps.Promoted != 1 || ps.UnreadBytes != unread || ps.LateBytes != 3000 {
				t.Fatalf("prefetch stats %+v", ps)
			}
		})
	}
}

func TestOpenRangeWaitsOutAnotherVersion(t *testing.T) {
	const key = "s"
	src := newMemSource()
	v1data := src.put(key, 5000)
	v1 := src.versionOf(key)
	gate := src.hold(key)
	src.started = make(chan string, 4)
	c := newTestCache(t, 1<<20, src)
	doneErr := make(chan error, 1)
	c.Prefetch(Want{Key: key, Version: v1, Off: 0, Len: 1000, Done: func(err error) { doneErr <- err }}, PriorityLow)
	<-src.started
	v2data := src.put(key, 6000) // the origin moves on while v1's range is being read
	v2 := src.versionOf(key)
	// A prefetch of the new version must not join the old one's fetch.
	if got := c.Prefetch(Want{Key: key, Version: v2, Off: 0, Len: 1000}, PriorityHigh); got != PrefetchRefused {
		t.Fatalf("Prefetch of another version of a range in flight = %v, want refused", got)
	}
	releaseWhen(gate, func() bool { return c.PrefetchStats().Promoted == 1 })
	openRangeAndRead(t, c, key, v2, 0, 1000, v2data[:1000])
	if err := <-doneErr; !errors.Is(err, errTestChanged) {
		t.Fatalf("outcome of the old version's prefetch: %v, want it changed", err)
	}
	if n := src.rangeCallsForKey(key); n != 2 {
		t.Fatalf("%d requests, want the old version's and the new one's", n)
	}
	if bytes.Equal(v1data[:1000], v2data[:1000]) {
		t.Fatal("test versions must differ")
	}
	if s := c.Stats(); s.RangeEntries != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// doneLog records the outcomes a Want's Done reports; fn also calls back
// into the cache, which deadlocks if Done runs under Cache.mu.
type doneLog struct {
	mu   sync.Mutex
	errs []error
}

func (d *doneLog) fn(c *Cache) func(error) {
	return func(err error) {
		c.Stats()
		c.PrefetchStats()
		c.Prefetch(Want{Key: "callback/nothing", Version: `"x"`, Off: 0, Len: 1}, PriorityLow)
		d.mu.Lock()
		d.errs = append(d.errs, err)
		d.mu.Unlock()
	}
}

func (d *doneLog) calls() []error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]error(nil), d.errs...)
}

// waitOne waits for the first outcome and returns it.
func (d *doneLog) waitOne(t *testing.T) error {
	t.Helper()
	waitFor(t, "Done to be called", func() bool { return len(d.calls()) > 0 })
	return d.calls()[0]
}

// waitDones waits until every log has an outcome. Done callbacks run after
// the cache's lock is released, so they may still be on their way when the
// flights or the feed that made them are over.
func waitDones(t *testing.T, logs []doneLog) {
	t.Helper()
	waitFor(t, "every Want's Done", func() bool {
		for i := range logs {
			if len(logs[i].calls()) == 0 {
				return false
			}
		}
		return true
	})
}

// errAny stands for an error whose kind the test does not name.
var errAny = errors.New("any error")

func TestPrefetchRangeDone(t *testing.T) {
	const key = "s/0"
	failCreate := func(dir, _ string) (*os.File, error) {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: syscall.ENOSPC}
	}
	errOrigin := errors.New("origin answered 503")
	tests := []struct {
		name    string
		budget  int64
		plain   bool                                                   // the Source is not a RangeSource
		prep    func(t *testing.T, c *Cache, src *memSource, v string) // before the Prefetch
		after   func(src *memSource)                                   // after it
		want    func(v string) Want
		wantRes PrefetchResult
		wantErr error // nil: the range must be on disk afterwards
		// wantImmediate: Done has run by the time Prefetch returns.
		wantImmediate bool
		wantCalls     int // range requests in all
	}{
		{name: "queued, lands on disk",
			want:    func(v string) Want { return Want{Key: key, Version: v, Off: 1000, Len: 2000} },
			wantRes: PrefetchQueued, wantCalls: 1},
		{name: "already cached",
			prep: func(t *testing.T, c *Cache, src *memSource, v string) {
				openRangeAndRead(t, c, key, v, 1000, 2000, src.dataOf(v)[1000:3000])
			},
			want:    func(v string) Want { return Want{Key: key, Version: v, Off: 1000, Len: 2000} },
			wantRes: PrefetchPresent, wantImmediate: true, wantCalls: 1},
		{name: "joins a prefetch of the same range",
			prep: func(t *testing.T, c *Cache, src *memSource, v string) {
				src.hold(key)
				c.Prefetch(Want{Key: key, Version: v, Off: 1000, Len: 2000}, PriorityHigh)
			},
			after:   func(src *memSource) { src.set(func(s *memSource) { close(s.gates[key]) }) },
			want:    func(v string) Want { return Want{Key: key, Version: v, Off: 1000, Len: 2000} },
			wantRes: PrefetchPresent, wantCalls: 1},
		{name: "refused: larger than the budget allows", budget: 8000,
			want:    func(v string) Want { return Want{Key: key, Version: v, Off: 0, Len: 7500} },
			wantRes: PrefetchRefused, wantErr: ErrPrefetchRefused, wantImmediate: true},
		{name: "fetch fails",
			prep:    func(t *testing.T, c *Cache, src *memSource, v string) { src.failWith(key, errOrigin) },
			want:    func(v string) Want { return Want{Key: key, Version: v, Off: 1000, Len: 2000} },
			wantRes: PrefetchQueued, wantErr: errOrigin, wantCalls: 1},
		{name: "object changed",
			want:    func(v string) Want { return Want{Key: key, Version: `"old"`, Off: 1000, Len: 2000} },
			wantRes: PrefetchQueued, wantErr: errTestChanged, wantCalls: 1},
		{name: "missing on the origin",
			want:    func(v string) Want { return Want{Key: "gone", Version: v, Off: 0, Len: 10} },
			wantRes: PrefetchQueued, wantErr: fs.ErrNotExist},
		{name: "disk cannot take it",
			prep:    func(t *testing.T, c *Cache, src *memSource, v string) { c.createTemp = failCreate },
			want:    func(v string) Want { return Want{Key: key, Version: v, Off: 1000, Len: 2000} },
			wantRes: PrefetchQueued, wantErr: ErrNotKept},
		{name: "plain Source", plain: true,
			want:    func(v string) Want { return Want{Key: key, Version: v, Off: 1000, Len: 2000} },
			wantRes: PrefetchRefused, wantErr: ErrNoRanges, wantImmediate: true},
		{name: "range without version",
			want:    func(v string) Want { return Want{Key: key, Off: 1000, Len: 2000} },
			wantRes: PrefetchRefused, wantErr: errAny, wantImmediate: true},
		{name: "offset without length",
			want:    func(v string) Want { return Want{Key: key, Version: v, Off: 1000} },
			wantRes: PrefetchRefused, wantErr: errAny, wantImmediate: true},
		{name: "whole object remembered missing",
			prep: func(t *testing.T, c *Cache, src *memSource, v string) {
				if _, err := c.Open(context.Background(), "gone"); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("Open(gone) = %v", err)
				}
			},
			want:    func(v string) Want { return Want{Key: "gone"} },
			wantRes: PrefetchMissing, wantErr: fs.ErrNotExist, wantImmediate: true},
		{name: "whole object, queued, lands on disk",
			want:    func(v string) Want { return Want{Key: key} },
			wantRes: PrefetchQueued},
		{name: "after Close",
			prep:    func(t *testing.T, c *Cache, src *memSource, v string) { c.Close() },
			want:    func(v string) Want { return Want{Key: key, Version: v, Off: 1000, Len: 2000} },
			wantRes: PrefetchRefused, wantErr: ErrClosed, wantImmediate: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newMemSource()
			src.put(key, 8000)
			v := src.versionOf(key)
			budget := tt.budget
			if budget == 0 {
				budget = 1 << 20
			}
			var s Source = src
			if tt.plain {
				s = plainSource{src}
			}
			c := newTestCache(t, budget, s)
			if tt.prep != nil {
				tt.prep(t, c, src, v)
			}
			var log doneLog
			w := tt.want(v)
			w.Done = log.fn(c)
			if got := c.Prefetch(w, PriorityHigh); got != tt.wantRes {
				t.Fatalf("Prefetch = %v, want %v", got, tt.wantRes)
			}
			if immediate := len(log.calls()) == 1; tt.wantImmediate && !immediate {
				t.Fatal("Done not called by the time Prefetch returned")
			}
			if tt.after != nil {
				tt.after(src)
			}
			err := log.waitOne(t)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("outcome %v, want nil", err)
			case tt.wantErr == errAny && err == nil:
				t.Fatal("outcome nil, want an error")
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("outcome %v, want %v", err, tt.wantErr)
			}
			waitIdle(t, c)
			if tt.wantErr == nil {
				id, _ := entryIDOf(c.nsHash, w.Key, w.span())
				c.mu.Lock()
				e := c.index[id]
				c.mu.Unlock()
				if e == nil {
					t.Fatal("Done said nil but the entry is not on disk")
				}
				if _, err := os.Stat(c.entryPath(id)); err != nil {
					t.Fatal(err)
				}
			}
			if tt.wantCalls > 0 && src.rangeCallsForKey(key) != tt.wantCalls {
				t.Errorf("%d range requests, want %d", src.rangeCallsForKey(key), tt.wantCalls)
			}
			c.Close()
			if n := len(log.calls()); n != 1 {
				t.Fatalf("Done called %d times, want once", n)
			}
		})
	}
}

func TestCloseEndsRangePrefetches(t *testing.T) {
	src := newMemSource()
	src.put("running", 1000)
	src.put("queued", 1000)
	src.hold("running")
	src.started = make(chan string, 4)
	c, err := New(Options{Dir: t.TempDir(), MaxBytes: 1 << 20, Namespace: testNamespace}, src)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.sched.fixedLimit = 1
	c.mu.Unlock()
	var running, queued, nested doneLog
	c.Prefetch(Want{Key: "running", Version: src.versionOf("running"), Off: 0, Len: 100, Done: running.fn(c)}, PriorityHigh)
	<-src.started
	// The queued prefetch's Done prefetches again from inside Close.
	if got := c.Prefetch(Want{Key: "queued", Version: src.versionOf("queued"), Off: 0, Len: 100, Done: func(err error) {
		queued.fn(c)(err)
		c.Prefetch(Want{Key: "queued", Version: src.versionOf("queued"), Off: 100, Len: 100, Done: nested.fn(c)}, PriorityHigh)
	}}, PriorityHigh); got != PrefetchQueued {
		t.Fatalf("Prefetch = %v", got)
	}
	closeWithin(t, c, 20*time.Second, "Close hangs (a Done called under the cache's lock?)")
	// Close returned: every Done has run, once.
	for name, log := range map[string]*doneLog{"running": &running, "queued": &queued, "nested": &nested} {
		errs := log.calls()
		if len(errs) != 1 || !errors.Is(errs[0], ErrClosed) {
			t.Errorf("%s: Done outcomes %v, want one ErrClosed", name, errs)
		}
	}
	if n := src.rangeCallsForKey("queued"); n != 0 {
		t.Errorf("the queued range was fetched %d times after Close", n)
	}
}

// TestDoneMayCallBackIntoCache calls OpenRange and Prefetch from Done, as
// the fusefs block table does when a range lands.
func TestDoneMayCallBackIntoCache(t *testing.T) {
	const key = "s"
	src := newMemSource()
	data := src.put(key, 3000)
	v := src.versionOf(key)
	c := newTestCache(t, 1<<20, src)
	result := make(chan error, 3)
	var second func(error)
	first := func(err error) {
		if err != nil {
			result <- err
			return
		}
		r, err := c.OpenRange(context.Background(), key, v, 0, 1000) // a hit
		if err != nil {
			result <- err
			return
		}
		got, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
		if err != nil || !bytes.Equal(got, data[:1000]) {
			result <- fmt.Errorf("wrong data (%v)", err)
		}
		r.Close()
		// Already cached: its Done runs inside this Prefetch call.
		c.Prefetch(Want{Key: key, Version: v, Off: 0, Len: 1000, Done: second}, PriorityHigh)
		result <- nil
	}
	second = func(err error) {
		// And from there, another prefetch that lands later.
		c.Prefetch(Want{Key: key, Version: v, Off: 1000, Len: 1000, Done: func(err error) { result <- err }}, PriorityHigh)
		result <- err
	}
	c.Prefetch(Want{Key: key, Version: v, Off: 0, Len: 1000, Done: first}, PriorityHigh)
	for range 3 {
		select {
		case err := <-result:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a Done callback is stuck (called under the cache's lock?)")
		}
	}
	waitIdle(t, c)
	if s := c.Stats(); s.RangeEntries != 2 || src.rangeCallsForKey(key) != 2 {
		t.Fatalf("stats %+v, %d requests; want 2 ranges fetched once each", s, src.rangeCallsForKey(key))
	}
}

func TestFeedOfRanges(t *testing.T) {
	const key = "shard"
	const n = 1000
	src := newMemSource()
	src.put(key, 8*n)
	v := src.versionOf(key)
	c := newTestCache(t, 1<<20, src)
	openRangeAndRead(t, c, key, v, 3*n, n, src.dataOf(v)[3*n:4*n]) // cached before the feed

	var wants []Want
	for i := range int64(8) {
		wants = append(wants, Want{Key: key, Version: v, Off: i * n, Len: n})
	}
	wants = append(wants,
		Want{Key: key, Version: v, Off: 0, Len: n},         // twice
		Want{Key: "gone", Version: v, Off: 0, Len: n},      // missing on the origin
		Want{Key: key, Off: 0, Len: n},                     // invalid: no version
		Want{Key: key, Version: `"stale"`, Off: 0, Len: n}, // the origin has another version
	)
	logs := make([]doneLog, len(wants))
	i := 0
	f := c.AddFeed(func() (Want, bool) {
		if i >= len(wants) {
			return Want{}, false
		}
		w := wants[i]
		w.Done = logs[i].fn(c)
		i++
		return w, true
	})
	select {
	case <-f.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("feed not done: %+v", f.Progress())
	}
	waitIdle(t, c)
	waitDones(t, logs)
	p := f.Progress()
	if !p.Finished || p.DoneKeys != 10 || p.MissingKeys != 1 || p.FailedKeys != 2 || p.DoneBytes != 9*n || p.FetchedBytes < 7*n {
		t.Fatalf("progress %+v, want 10 done (1 missing, 9 ranges of %d bytes), 2 failed", p, n)
	}
	if f.Err() == nil {
		t.Error("feed Err is nil after failures")
	}
	for i, w := range wants {
		errs := logs[i].calls()
		if len(errs) != 1 {
			t.Fatalf("want %d (%s): Done called %d times", i, w.span().describe(w.Key), len(errs))
		}
		wantOK := i < 9
		if (errs[0] == nil) != wantOK {
			t.Errorf("want %d (%s): outcome %v", i, w.span().describe(w.Key), errs[0])
		}
	}
	for i := range int64(8) {
		want := 1
		if i == 0 {
			want = 2 // and the stale version's, which fails
		}
		if got := src.rangeCallsFor(key, i*n, n); got != want {
			t.Errorf("range %d: %d requests, want %d", i, got, want)
		}
	}
	if s := c.Stats(); s.RangeEntries != 8 {
		t.Errorf("stats %+v, want the 8 ranges on disk", s)
	}
}

func TestFeedCancelEndsHeldRangeWant(t *testing.T) {
	const key, other = "shard", "other"
	src := newMemSource()
	src.put(key, 4000)
	src.put(other, 4000)
	v := src.versionOf(key)
	gate := src.hold(key)
	src.started = make(chan string, 4)
	c := newTestCache(t, 1<<20, src)
	var inFlight doneLog
	c.Prefetch(Want{Key: key, Version: v, Off: 0, Len: 1000, Done: inFlight.fn(c)}, PriorityHigh)
	<-src.started
	// The feed's second Want is the same range at another version: refused
	// while the first is in flight, so the feed holds it back.
	wants := []Want{
		{Key: other, Version: src.versionOf(other), Off: 0, Len: 1000},
		{Key: key, Version: `"newer"`, Off: 0, Len: 1000},
		{Key: other, Version: src.versionOf(other), Off: 1000, Len: 1000}, // never handed out
	}
	logs := make([]doneLog, len(wants))
	var mu sync.Mutex
	handed := 0
	f := c.AddFeed(func() (Want, bool) {
		mu.Lock()
		defer mu.Unlock()
		if handed == len(wants) {
			return Want{}, false
		}
		w := wants[handed]
		w.Done = logs[handed].fn(c)
		handed++
		return w, true
	})
	waitFor(t, "the feed to hold a Want back", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return f.hasHeld && f.outstanding == 0
	})
	f.Cancel()
	select {
	case <-f.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("cancelled feed not done")
	}
	close(gate)
	if err := inFlight.waitOne(t); err != nil {
		t.Fatalf("the in-flight prefetch: %v", err)
	}
	waitIdle(t, c)
	waitDones(t, logs[:2]) // the third is never handed out
	mu.Lock()
	defer mu.Unlock()
	if handed != 2 {
		t.Fatalf("%d Wants handed out, want 2", handed)
	}
	if errs := logs[0].calls(); len(errs) != 1 || errs[0] != nil {
		t.Errorf("first Want: outcomes %v, want one nil", errs)
	}
	if errs := logs[1].calls(); len(errs) != 1 || !errors.Is(errs[0], ErrFeedCancelled) {
		t.Errorf("held Want: outcomes %v, want one ErrFeedCancelled", errs)
	}
	if n := src.rangeCallsFor(key, 0, 1000); n != 1 {
		t.Errorf("%d requests for the contested range, want 1", n)
	}
}

func TestFeedSkipsWantsTooLargeToKeep(t *testing.T) {
	src := newMemSource()
	src.put("huge", 10_000)
	src.put("small", 100)
	budget := int64(8000)
	c := newTestCache(t, budget, src)
	var huge, small doneLog
	next := []Want{
		{Key: "huge", Version: src.versionOf("huge"), Off: 0, Len: 7500, Done: huge.fn(c)},
		{Key: "small", Done: small.fn(c)},
	}
	f := c.AddFeed(func() (Want, bool) {
		if len(next) == 0 {
			return Want{}, false
		}
		w := next[0]
		next = next[1:]
		return w, true
	})
	select {
	case <-f.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("feed stuck on a Want it can never keep: %+v", f.Progress())
	}
	if p := f.Progress(); p.FailedKeys != 1 || p.DoneKeys != 1 || !p.Finished {
		t.Fatalf("progress %+v, want the huge range failed and the small key done", p)
	}
	if err := huge.waitOne(t); !errors.Is(err, ErrPrefetchRefused) {
		t.Errorf("huge range: outcome %v, want ErrPrefetchRefused", err)
	}
	if err := small.waitOne(t); err != nil {
		t.Errorf("small key: outcome %v", err)
	}
}
