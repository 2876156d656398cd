package cache

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// waitIdle waits until no fetch is queued or in flight.
func waitIdle(t *testing.T, c *Cache) {
	t.Helper()
	waitFor(t, "the fetches to end", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.flights) == 0
	})
}

func TestPrefetchLandsEntryThatOpenHits(t *testing.T) {
	src := newMemSource()
	data := src.put("a/0", 5000)
	c := newTestCache(t, 1<<20, src)

	if got := c.Prefetch(Want{Key: "a/0"}, PriorityHigh); got != PrefetchQueued {
		t.Fatalf("Prefetch = %v, want queued", got)
	}
	waitIdle(t, c)
	if got := c.Prefetch(Want{Key: "a/0"}, PriorityHigh); got != PrefetchPresent {
		t.Fatalf("second Prefetch = %v, want present", got)
	}
	if ps := c.PrefetchStats(); ps.UnreadBytes != entrySize("a/0", 5000) || ps.Bytes != 5000 {
		t.Fatalf("after prefetch: %+v", ps)
	}
	r, err := c.Open(context.Background(), "a/0")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, r); !bytes.Equal(got, data) {
		t.Fatal("wrong data")
	}
	r.Close()
	if n := src.callsFor("a/0"); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
	ps := c.PrefetchStats()
	if ps.UsedBytes != 5000 || ps.UnreadBytes != 0 || ps.WastedBytes != 0 {
		t.Fatalf("after read: %+v", ps)
	}
	if s := c.Stats(); s.Hits != 1 || s.Misses != 0 || s.Pinned != 0 {
		t.Fatalf("cache stats %+v", s)
	}
}

func TestOpenJoinsPrefetchInFlight(t *testing.T) {
	src := newMemSource()
	data := src.put("k", 3000)
	gate := src.hold("k")
	src.started = make(chan string, 4)
	c := newTestCache(t, 1<<20, src)

	c.Prefetch(Want{Key: "k"}, PriorityLow)
	<-src.started // the prefetch's request is running
	got := make(chan []byte)
	go func() {
		r, err := c.Open(context.Background(), "k")
		if err != nil {
			got <- nil
			return
		}
		defer r.Close()
		b := make([]byte, r.Size())
		_, _ = r.ReadAt(b, 0)
		got <- b
	}()
	waitFor(t, "the Open to join the prefetch", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, fl := range c.flights {
			return fl.waiters == 1 && fl.sched.prio == PriorityDemand
		}
		return false
	})
	close(gate)
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatal("wrong data")
	}
	if n := src.callsFor("k"); n != 1 {
		t.Fatalf("%d requests for a prefetched key opened while in flight, want 1", n)
	}
	ps := c.PrefetchStats()
	if ps.LateBytes != 3000 || ps.Promoted != 1 || ps.Stalls != 1 || ps.UnreadBytes != 0 {
		t.Fatalf("stats %+v", ps)
	}
}

func TestOpenStartsQueuedPrefetchAtOnce(t *testing.T) {
	src := newMemSource()
	src.put("busy", 10)
	data := src.put("queued", 20)
	gate := src.hold("busy")
	c := newTestCache(t, 1<<20, src)
	c.mu.Lock()
	c.sched.fixedLimit = 1
	c.mu.Unlock()

	c.Prefetch(Want{Key: "busy"}, PriorityUrgent) // takes the only slot
	c.Prefetch(Want{Key: "queued"}, PriorityHigh) // waits for it
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Open(ctx, "queued") // must not wait for "busy"
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, r); !bytes.Equal(got, data) {
		t.Fatal("wrong data")
	}
	r.Close()
	close(gate)
	waitIdle(t, c)
	if n := src.callsFor("queued"); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}

func TestPrefetchPriorityOrder(t *testing.T) {
	src := newMemSource()
	for _, k := range []string{"demand", "low1", "high1", "urgent1", "low2", "urgent2"} {
		src.put(k, 100)
	}
	gate := src.hold("demand")
	src.started = make(chan string, 16)
	c := newTestCache(t, 1<<20, src)
	c.mu.Lock()
	c.sched.fixedLimit = 1
	c.mu.Unlock()

	opened := make(chan error, 1)
	go func() {
		r, err := c.Open(context.Background(), "demand")
		if err == nil {
			r.Close()
		}
		opened <- err
	}()
	if k := <-src.started; k != "demand" {
		t.Fatalf("first request %q", k)
	}
	for _, p := range []struct {
		key  string
		prio Priority
	}{{"low1", PriorityLow}, {"high1", PriorityHigh}, {"urgent1", PriorityUrgent}, {"low2", PriorityLow}, {"urgent2", PriorityUrgent}} {
		if got := c.Prefetch(Want{Key: p.key}, p.prio); got != PrefetchQueued {
			t.Fatalf("Prefetch(%s) = %v", p.key, got)
		}
	}
	// low2 is asked for again at a higher priority: it moves up.
	if got := c.Prefetch(Want{Key: "low2"}, PriorityHigh); got != PrefetchPresent {
		t.Fatalf("Prefetch(low2) again = %v", got)
	}
	close(gate)
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
	var order []string
	for range 5 {
		order = append(order, <-src.started)
	}
	want := []string{"urgent1", "urgent2", "high1", "low2", "low1"}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("order %v, want %v", order, want)
	}
}

func TestUnreadPrefetchesAreProtected(t *testing.T) {
	src := newMemSource()
	const n = 1000
	keys := make([]string, 12)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%02d", i)
		src.put(keys[i], n)
	}
	src.put("demand", n)
	per := entrySize("k00", n)
	budget := 8 * per // room for prefetch: budget less an eighth
	c := newTestCache(t, budget, src)

	var queued, refused int
	for _, k := range keys {
		switch c.Prefetch(Want{Key: k}, PriorityHigh) {
		case PrefetchQueued:
			queued++
		case PrefetchRefused:
			refused++
		}
		waitIdle(t, c) // one at a time, so the room check sees each land
	}
	if queued == 0 || refused == 0 || queued+refused != len(keys) {
		t.Fatalf("queued %d refused %d of %d", queued, refused, len(keys))
	}
	ps := c.PrefetchStats()
	if ps.WastedBytes != 0 || ps.UnreadBytes != int64(queued)*per {
		t.Fatalf("stats %+v, want %d unread entries and none wasted", ps, queued)
	}
	// Every prefetched entry is still there: reading them costs no request.
	for _, k := range keys[:queued] {
		r, err := c.Open(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		if calls := src.callsFor(k); calls != 1 {
			t.Fatalf("%s: %d requests, want 1", k, calls)
		}
	}
	if ps := c.PrefetchStats(); ps.UsedBytes != int64(queued)*n || ps.UnreadBytes != 0 {
		t.Fatalf("after reading: %+v", ps)
	}
}

func TestDemandDisplacesUnreadPrefetchesWhenFull(t *testing.T) {
	src := newMemSource()
	const n = 1000
	per := entrySize("k00", n)
	c := newTestCache(t, 8*per, src)
	prefetched := 0
	for i := range 10 {
		k := fmt.Sprintf("k%02d", i)
		src.put(k, n)
		if c.Prefetch(Want{Key: k}, PriorityHigh) == PrefetchQueued {
			prefetched++
		}
		waitIdle(t, c)
	}
	// The reader wants an object larger than the room prefetches left: it
	// must be kept, at the expense of the oldest unread prefetches.
	big := src.put("big", 6*n)
	for range 2 {
		r, err := c.Open(context.Background(), "big")
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, r); !bytes.Equal(got, big) {
			t.Fatal("wrong data")
		}
		r.Close()
	}
	if calls := src.callsFor("big"); calls != 1 {
		t.Fatalf("the reader's object was not kept: %d requests", calls)
	}
	ps := c.PrefetchStats()
	if prefetched < 3 || ps.WastedBytes == 0 || ps.WastedBytes%n != 0 {
		t.Fatalf("%d prefetched, stats %+v: displaced prefetches not counted as wasted", prefetched, ps)
	}
	if s := c.Stats(); s.Bytes > 8*per {
		t.Fatalf("cache over budget: %d > %d", s.Bytes, 8*per)
	}
}

// sliceFeed hands out keys from a list.
func sliceFeed(keys []string) func() (Want, bool) {
	var mu sync.Mutex
	i := 0
	return func() (Want, bool) {
		mu.Lock()
		defer mu.Unlock()
		if i >= len(keys) {
			return Want{}, false
		}
		i++
		return Want{Key: keys[i-1]}, true
	}
}

func TestFeedFetchesEverythingOnce(t *testing.T) {
	src := newMemSource()
	var keys []string
	var total int64
	for i := range 40 {
		k := fmt.Sprintf("arr/%d", i)
		keys = append(keys, k)
		if i%10 == 7 {
			continue // missing on the origin: a fill_value chunk
		}
		total += int64(len(src.put(k, 100+i)))
	}
	c := newTestCache(t, 1<<20, src)
	// One key cached already, one being read right now.
	r, err := c.Open(context.Background(), "arr/0")
	if err != nil {
		t.Fatal(err)
	}
	r.Close()

	f := c.AddFeed(sliceFeed(keys))
	select {
	case <-f.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("feed not done: %+v", f.Progress())
	}
	p := f.Progress()
	if !p.Finished || p.DoneKeys != 40 || p.MissingKeys != 4 || p.DoneBytes != total || p.FailedKeys != 0 {
		t.Fatalf("progress %+v, want 40 keys (4 missing) and %d bytes", p, total)
	}
	if p.FetchedBytes != total-100 {
		t.Fatalf("fetched %d bytes, want %d (all but the cached key)", p.FetchedBytes, total-100)
	}
	for _, k := range keys {
		if n := src.callsFor(k); n != 1 {
			t.Fatalf("%s: %d requests, want 1", k, n)
		}
	}
}

func TestFeedWaitsForRoomInsteadOfEvicting(t *testing.T) {
	src := newMemSource()
	const n = 1000
	var keys []string
	for i := range 20 {
		k := fmt.Sprintf("k%02d", i)
		keys = append(keys, k)
		src.put(k, n)
	}
	per := entrySize("k00", n)
	c := newTestCache(t, 8*per, src)
	f := c.AddFeed(sliceFeed(keys))
	waitFor(t, "the feed to stop for room", func() bool {
		p := f.Progress()
		return p.Pending == 0 && p.DoneKeys > 0
	})
	time.Sleep(50 * time.Millisecond)
	p := f.Progress()
	if p.Finished || p.DoneKeys >= 20 {
		t.Fatalf("the feed went past the budget: %+v", p)
	}
	if ps := c.PrefetchStats(); ps.WastedBytes != 0 || c.Stats().Evictions != 0 {
		t.Fatalf("prefetches evicted each other: %+v", ps)
	}
	// Reading what it fetched makes room, and it goes on.
	done := p.DoneKeys
	for _, k := range keys[:done] {
		r, err := c.Open(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
	}
	waitFor(t, "the feed to go on", func() bool { return f.Progress().DoneKeys > done })
	f.Cancel()
	select {
	case <-f.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("cancelled feed not done")
	}
}

func TestCloseEndsQueuedPrefetchesAndFeeds(t *testing.T) {
	src := newMemSource()
	src.put("held", 10)
	src.put("q", 10)
	src.hold("held")
	c, err := New(Options{Dir: t.TempDir(), MaxBytes: 1 << 20, Namespace: testNamespace}, src)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.sched.fixedLimit = 1
	c.mu.Unlock()
	c.Prefetch(Want{Key: "held"}, PriorityHigh)
	if got := c.Prefetch(Want{Key: "q"}, PriorityHigh); got != PrefetchQueued {
		t.Fatalf("Prefetch(q) = %v", got)
	}
	f := c.AddFeed(func() (Want, bool) { return Want{Key: "q"}, true })
	closeWithin(t, c, 10*time.Second, "Close hangs")
	select {
	case <-f.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("feed not done after Close")
	}
	if n := src.callsFor("q"); n != 0 {
		t.Fatalf("queued key fetched %d times after Close", n)
	}
	if got := c.Prefetch(Want{Key: "x"}, PriorityHigh); got != PrefetchRefused {
		t.Fatalf("Prefetch after Close = %v", got)
	}
}

func TestControllerPipe(t *testing.T) {
	tests := []struct {
		name    string
		latency time.Duration
		rate    float64 // bytes/s
		want    float64 // bytes
	}{
		{"nothing measured", 0, 0, 0},
		{"400mbit 40ms", 40 * time.Millisecond, 50e6, 2e6},
		{"100mbit 100ms", 100 * time.Millisecond, 12.5e6, 1.25e6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var k controller
			if tt.rate > 0 {
				k.lat[0], k.nlat = tt.latency, 1
				k.rate[0], k.nrate = tt.rate, 1
			}
			if got := k.bdp(); got < tt.want*0.999 || got > tt.want*1.001 {
				t.Fatalf("bdp %.0f, want %.0f", got, tt.want)
			}
		})
	}
}

func TestControllerMeasures(t *testing.T) {
	var k controller
	t0 := time.Unix(1000, 0)
	delivered := int64(0)
	// 50 MB/s for a second, 40 ms to the first byte, 1 MB objects.
	for i := range 50 {
		delivered += 1e6
		k.observe(t0.Add(time.Duration(i+1)*20*time.Millisecond), 40*time.Millisecond+time.Duration(i%3)*time.Millisecond, 1e6, delivered)
	}
	if r := k.maxRate(); r < 45e6 || r > 55e6 {
		t.Fatalf("rate %.0f, want ~50e6", r)
	}
	if l := k.minLatency(); l != 40*time.Millisecond {
		t.Fatalf("latency %v", l)
	}
	if k.avgSize != 1e6 {
		t.Fatalf("average size %.0f", k.avgSize)
	}
}

// TestLimitBeforeTheLinkIsMeasured: before the first rate sample, requests
// for small objects may go on starting until they add up to initialBytes,
// enough to measure a fast link (with initialLimit of them the link measures
// at what 8 requests give, and the budget set from that keeps it there);
// large ones stop at initialLimit, also when tiny ones are mixed in (the x
// and y chunks of a training set).
func TestLimitBeforeTheLinkIsMeasured(t *testing.T) {
	for _, tt := range []struct {
		name  string
		hints []int64 // sizes of the requests in flight
		want  int
	}{
		{"nothing in flight", nil, maxLimit},
		{"8 of 1 MB", slices.Repeat([]int64{1 << 20}, 8), initialLimit},
		{"4 of 1 MB and 4 of 300 B", slices.Repeat([]int64{1 << 20, 300}, 4), initialLimit},
		{"20 of 92 KB", slices.Repeat([]int64{92 << 10}, 20), maxLimit},
		{"45 of 92 KB", slices.Repeat([]int64{92 << 10}, 45), initialLimit},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var s scheduler
			s.startBytes = initialBytes // a cache of at least startRoom
			s.active = map[*flight]struct{}{}
			for _, h := range tt.hints {
				fl := &flight{}
				fl.sched.prio, fl.sched.hint = PriorityLow, h
				s.active[fl] = struct{}{}
				s.running[PriorityLow]++
			}
			if got := s.limitLocked(); got != tt.want {
				t.Fatalf("limit %d, want %d", got, tt.want)
			}
			s.startBytes = 0 // a cache under startRoom: no burst before the measurement
			if got := s.limitLocked(); got != initialLimit {
				t.Fatalf("in a small cache: limit %d, want %d", got, initialLimit)
			}
			s.ctl.lat[0], s.ctl.nlat = 40*time.Millisecond, 1
			s.ctl.rate[0], s.ctl.nrate = 50e6, 1
			if got := s.limitLocked(); got != maxLimit {
				t.Fatalf("measured: limit %d, want %d", got, maxLimit)
			}
		})
	}
}

// TestScheduleKeepsPipeFull: with the link measured, prefetches start while
// the bytes requested and not received stay under two bandwidth-delay
// products and one object.
func TestScheduleKeepsPipeFull(t *testing.T) {
	var s scheduler
	s.ctl.lat[0], s.ctl.nlat = 40*time.Millisecond, 1
	s.ctl.rate[0], s.ctl.nrate = 50e6, 1 // bdp 2 MB
	s.ctl.avgSize = 1e6
	s.active = map[*flight]struct{}{}
	start := func(prio Priority, hint int64) *flight {
		fl := &flight{}
		fl.sched.prio, fl.sched.hint = prio, hint
		s.active[fl] = struct{}{}
		s.running[prio]++
		return fl
	}
	n := 0
	for s.mayStartLocked(PriorityLow) {
		start(PriorityLow, 1e6)
		n++
	}
	if n != 5 { // 2*bdp + avg = 5 MB of 1 MB objects
		t.Fatalf("%d background fetches of 1 MB started, want 5", n)
	}
	// Small objects count by their size, not their number.
	for range 20 {
		start(PriorityLow, 300).sched.recv.Store(0)
	}
	if s.mayStartLocked(PriorityLow) {
		t.Fatal("started past the pipe")
	}
	// Received bytes leave the pipe.
	for fl := range s.active {
		if fl.sched.hint == 1e6 {
			fl.sched.recv.Store(1e6)
		}
	}
	if !s.mayStartLocked(PriorityLow) {
		t.Fatal("pipe empty, yet nothing may start")
	}
	for s.mayStartLocked(PriorityLow) {
		start(PriorityLow, 1e6)
	}
	// Urgent prefetches are not held back by the link budget.
	if !s.mayStartLocked(PriorityUrgent) {
		t.Fatal("an urgent prefetch held back by the pipe")
	}
}

// TestHighFeedGoesFirst: a feed added at PriorityHigh (a reader's announced
// order) is pulled before a PriorityLow feed that was there first (a fill of
// the whole store), which resumes once the high one has handed out its
// keys; without the priority the two would take turns.
func TestHighFeedGoesFirst(t *testing.T) {
	src := newMemSource()
	var low, high []string
	for i := range 12 {
		low = append(low, fmt.Sprintf("low/%02d", i))
		src.put(low[i], 100)
	}
	for i := range 6 {
		high = append(high, fmt.Sprintf("high/%02d", i))
		src.put(high[i], 100)
	}
	gate := src.hold(low[0])
	src.started = make(chan string, len(low)+len(high))
	c := newTestCache(t, 1<<20, src)
	c.mu.Lock()
	c.sched.fixedLimit = 1 // one request at a time: the start order is the pull order
	c.mu.Unlock()

	lowFeed := c.AddFeed(sliceFeed(low))
	if got := <-src.started; got != low[0] {
		t.Fatalf("first request for %s, want %s", got, low[0])
	}
	highFeed := c.AddFeedAt(PriorityHigh, sliceFeed(high))
	close(gate)
	for _, f := range []*Feed{highFeed, lowFeed} {
		select {
		case <-f.Done():
		case <-time.After(20 * time.Second):
			t.Fatalf("feed not done: %+v", f.Progress())
		}
	}
	close(src.started)
	order := []string{low[0]} // taken from started above
	for k := range src.started {
		order = append(order, k)
	}
	want := append(append([]string{low[0]}, high...), low[1:]...)
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("requests in the order\n%v\nwant the high feed's right after the running one:\n%v", order, want)
	}
}
