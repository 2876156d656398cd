package readahead

import (
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/internal/storetest"
	"github.com/zarrfs/zarrfs/vfs/store"
	"github.com/zarrfs/zarrfs/zarr"
)

// fakeSink records what the planner asks for, in order, and answers like
// the cache: a key asked for before is present.
type fakeSink struct {
	mu    sync.Mutex
	asked []askRec
	seen  map[string]bool
	feeds []*fakeFeed
}

type askRec struct {
	key   string
	class cache.Priority
}

func (s *fakeSink) Prefetch(w cache.Want, class cache.Priority) cache.PrefetchResult {
	key := w.Key
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	if s.seen[key] {
		return cache.PrefetchPresent
	}
	s.seen[key] = true
	s.asked = append(s.asked, askRec{key, class})
	return cache.PrefetchQueued
}

func (s *fakeSink) StartFeed(next func() (cache.Want, bool)) FeedHandle {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := &fakeFeed{next: next, done: make(chan struct{})}
	s.feeds = append(s.feeds, f)
	return f
}

// take returns the keys asked for at class since the last take, and forgets
// all records.
func (s *fakeSink) take(class cache.Priority) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, r := range s.asked {
		if r.class == class {
			out = append(out, r.key)
		}
	}
	s.asked = nil
	return out
}

// takeAll returns the records since the last take, and forgets them.
func (s *fakeSink) takeAll() []askRec {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.asked
	s.asked = nil
	return out
}

type fakeFeed struct {
	next      func() (cache.Want, bool)
	cancelled bool
	done      chan struct{}
}

func (f *fakeFeed) Cancel()                      { f.cancelled = true }
func (f *fakeFeed) Done() <-chan struct{}        { return f.done }
func (f *fakeFeed) Progress() cache.FeedProgress { return cache.FeedProgress{Cancelled: f.cancelled} }
func (f *fakeFeed) drain() (keys []string) {
	for {
		w, ok := f.next()
		if !ok {
			return keys
		}
		keys = append(keys, w.Key)
	}
}

func newTestPlanner(t *testing.T, slabs, budget int64) (*Planner, *fakeSink, *store.Store) {
	store := storetest.PlanStore(t, slabs)
	sink := &fakeSink{}
	p := New(store, sink, budget, slog.New(slog.DiscardHandler))
	return p, sink, store
}

// read reports an access to chunk key (e.g. "g/x/3.0.0.0") and its size.
func read(t *testing.T, p *Planner, store *store.Store, key string, size int64) {
	t.Helper()
	dir, name := path.Split(key)
	n := store.Tree.Lookup(strings.TrimSuffix(dir, "/"))
	kind, coords := n.Array.Resolve([]string{name})
	if kind != zarr.EntryChunk {
		t.Fatalf("%s is not a chunk", key)
	}
	p.Access(store, n, coords, key)
	p.ObserveSize(n, size)
}

func xKey(i int64) string { return fmt.Sprintf("g/x/%d.0.0.0", i) }
func yKey(i int64) string { return fmt.Sprintf("g/y/%d", i) }

// readXY reads slab i of x and y, as the images workload does.
func readXY(t *testing.T, p *Planner, store *store.Store, i int64) {
	read(t, p, store, xKey(i), 25000)
	read(t, p, store, yKey(i), 100)
}

func TestPlannerLockstep(t *testing.T) {
	p, sink, store := newTestPlanner(t, 50, 1<<30)
	read(t, p, store, xKey(17), 25000)
	if got := sink.take(cache.PriorityUrgent); !slices.Equal(got, []string{yKey(17)}) {
		t.Fatalf("lockstep after x[17]: %v, want y[17] only", got)
	}
	read(t, p, store, yKey(17), 100) // the same slab: nothing new
	if got := sink.take(cache.PriorityUrgent); len(got) != 0 {
		t.Fatalf("lockstep after y[17]: %v", got)
	}
	// A slab of several chunks along the other axis: the rest of it.
	read(t, p, store, "z/3.2", 4000)
	want := []string{"z/3.0", "z/3.1", "z/3.3"}
	if got := sink.take(cache.PriorityUrgent); !slices.Equal(got, want) {
		t.Fatalf("lockstep after z[3,2]: %v, want %v", got, want)
	}
}

func TestPlannerSequentialRunGrows(t *testing.T) {
	p, sink, store := newTestPlanner(t, 200, 1<<30)
	var ahead []int // slabs asked ahead after each step
	var all []string
	for i := int64(0); i < 8; i++ {
		readXY(t, p, store, i)
		got := sink.take(cache.PriorityHigh)
		all = append(all, got...)
		ahead = append(ahead, len(got)/2) // x and y per slab
	}
	// Window 1 at the start, then 2, doubling per confirmed step: the
	// furthest slab asked for after step i is i + window (1, 3, 6, 11, 20,
	// ...), and each step asks for what the last one did not.
	wantAhead := []int{1, 2, 3, 5, 9, 17, 33, 65}
	if !slices.Equal(ahead, wantAhead) {
		t.Fatalf("slabs asked ahead per step %v, want %v", ahead, wantAhead)
	}
	// In ascending order, x and y together, never twice.
	var want []string
	for s := int64(1); s <= 7+128; s++ {
		want = append(want, xKey(s), yKey(s))
	}
	if !slices.Equal(all, want) {
		t.Fatalf("run requests out of order:\n got %v\nwant %v", head(all, 12), head(want, 12))
	}
	if len(sink.feeds) != 0 {
		t.Fatal("a sequential reader started a background fill")
	}
}

func head(s []string, n int) []string { return s[:min(n, len(s))] }

func TestPlannerRunWindowCappedByBudget(t *testing.T) {
	// 4 MiB run budget (the floor) and 1 MB slabs: at most 4 slabs ahead.
	p, sink, store := newTestPlanner(t, 500, 8<<20)
	maxAhead := 0
	for i := int64(0); i < 20; i++ {
		read(t, p, store, xKey(i), 1e6)
		got := sink.take(cache.PriorityHigh)
		for _, k := range got {
			var s int64
			fmt.Sscanf(strings.TrimPrefix(k, "g/x/"), "%d", &s)
			maxAhead = max(maxAhead, int(s-i))
		}
	}
	if maxAhead < 2 || maxAhead > 4 {
		t.Fatalf("window reached %d slabs ahead, want 2..4 (budget 4 MiB, slabs of 1 MB)", maxAhead)
	}
}

func TestPlannerStrided(t *testing.T) {
	p, sink, store := newTestPlanner(t, 200, 1<<30)
	var steps [][]string
	for _, i := range []int64{5, 8, 11, 14} {
		readXY(t, p, store, i)
		steps = append(steps, sink.take(cache.PriorityHigh))
	}
	want := [][]string{
		nil,
		{xKey(11), yKey(11)},                     // tentative: one step ahead
		{xKey(14), yKey(14), xKey(17), yKey(17)}, // confirmed: window 2
		{xKey(20), yKey(20), xKey(23), yKey(23), xKey(26), yKey(26)}, // window 4
	}
	for i := range want {
		if !slices.Equal(steps[i], want[i]) {
			t.Fatalf("step %d: %v, want %v", i, steps[i], want[i])
		}
	}
	if len(sink.feeds) != 0 {
		t.Fatal("a strided reader started a background fill")
	}
}

func TestPlannerShuffledFillsWhenItFits(t *testing.T) {
	p, sink, store := newTestPlanner(t, 50, 1<<30)
	readXY(t, p, store, 37)
	if len(sink.feeds) != 0 {
		t.Fatal("fill after one access")
	}
	readXY(t, p, store, 2) // not a run: the order looks shuffled
	if len(sink.feeds) != 1 {
		t.Fatalf("%d fills after a shuffled step, want 1", len(sink.feeds))
	}
	got := sink.feeds[0].drain()
	var want []string
	for s := int64(0); s < 50; s++ {
		want = append(want, xKey(s), yKey(s))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("fill order %v, want %v", head(got, 8), head(want, 8))
	}
	readXY(t, p, store, 20)
	readXY(t, p, store, 45)
	if len(sink.feeds) != 1 {
		t.Fatal("a second fill started")
	}
	if st := p.Stats(); st.FillsStarted != 1 || st.Misses < 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPlannerShuffledTooLargePredictsOnly(t *testing.T) {
	// 50 slabs of 25 kB: 1.25 MB, in a 1 MB cache.
	p, sink, store := newTestPlanner(t, 50, 1<<20)
	for _, i := range []int64{31, 7, 44, 12, 3, 27} {
		readXY(t, p, store, i)
	}
	if len(sink.feeds) != 0 {
		t.Fatal("filled a cache too small for the arrays")
	}
	if st := p.Stats(); st.FillsTooLarge != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Only what is predicted: the lockstep partner of each slab read.
	got := sink.take(cache.PriorityUrgent)
	want := []string{yKey(31), yKey(7), yKey(44), yKey(12), yKey(3), yKey(27)}
	if !slices.Equal(got, want) {
		t.Fatalf("lockstep %v, want %v", got, want)
	}
}

func TestPlannerTwoInterleavedReaders(t *testing.T) {
	p, sink, store := newTestPlanner(t, 200, 1<<30)
	var runs []string
	for i := int64(0); i < 6; i++ {
		readXY(t, p, store, i)     // reader A from the start
		readXY(t, p, store, 100+i) // reader B from the middle
		runs = append(runs, sink.take(cache.PriorityHigh)...)
	}
	for _, want := range []int64{1, 2, 6, 10, 102, 106, 110} {
		if !slices.Contains(runs, xKey(want)) {
			t.Errorf("x[%d] not asked ahead", want)
		}
	}
	for i, k := range runs {
		if i > 0 && k == runs[i-1] {
			t.Fatalf("asked twice: %s", k)
		}
	}
	// B's first access looked like a shuffle; once both runs are seen the
	// background fill stops.
	if len(sink.feeds) != 1 || !sink.feeds[0].cancelled {
		t.Fatalf("fills %d, want one, cancelled", len(sink.feeds))
	}
	if st := p.Stats(); st.FillsCancelled != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPlannerDropsArraysNotRead(t *testing.T) {
	p, sink, store := newTestPlanner(t, 100, 1<<30)
	read(t, p, store, xKey(40), 25000) // y is never read
	if got := sink.take(cache.PriorityUrgent); !slices.Equal(got, []string{yKey(40)}) {
		t.Fatalf("lockstep at the first slab %v, want the guess y[40]", got)
	}
	for _, i := range []int64{3, 77, 12} {
		read(t, p, store, xKey(i), 25000)
		if got := sink.take(cache.PriorityUrgent); len(got) != 0 {
			t.Fatalf("lockstep at x[%d]: %v, but y is not being read", i, got)
		}
	}
	if len(sink.feeds) != 1 {
		t.Fatalf("%d fills", len(sink.feeds))
	}
	keys := sink.feeds[0].drain()
	if len(keys) != 100 {
		t.Fatalf("fill of %d keys, want the 100 of x", len(keys))
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "g/x/") {
			t.Fatalf("fill of an array not being read: %s", k)
		}
	}
}

func TestPlannerWarmsSmallArrays(t *testing.T) {
	p, sink, _ := newTestPlanner(t, 100, 1<<30)
	p.WarmSmallArrays()
	if got := sink.take(cache.PriorityUrgent); !slices.Equal(got, []string{"g/lat/0"}) {
		t.Fatalf("warmed %v, want the coordinate array g/lat only", got)
	}
}

func TestItemSize(t *testing.T) {
	for _, tt := range []struct {
		dtype string
		want  int64
	}{{"<f4", 4}, {"|u1", 1}, {"<i8", 8}, {"float32", 4}, {"uint16", 2}, {"bool", 1}, {"|b1", 1}, {"<U10", 10}, {"", 8}, {"complex128", 16}} {
		if got := itemSize(tt.dtype); got != tt.want {
			t.Errorf("itemSize(%q) = %d, want %d", tt.dtype, got, tt.want)
		}
	}
}

// TestPlannerMissHalvesWindow: an access no stream predicted halves the window of the most
// recent stream, so a reader that wanders off and comes back does not pull the run's full
// (doubled) window at once.
func TestPlannerMissHalvesWindow(t *testing.T) {
	p, sink, store := newTestPlanner(t, 200, 1<<30)
	for i := int64(0); i < 6; i++ {
		readXY(t, p, store, i)
	}
	// After six steps the window is 32: slabs up to 5+32 = 37 were asked for.
	got := sink.take(cache.PriorityHigh)
	if last := got[len(got)-1]; last != yKey(37) {
		t.Fatalf("after slabs 0-5 the run reached %s, want %s", last, yKey(37))
	}
	readXY(t, p, store, 150) // predicted by no stream: a miss
	sink.take(cache.PriorityHigh)
	// Back on the run: its window, halved to 16 by the miss, doubles to 32 again, so the
	// run reaches 6+32 = 38: one new slab. Without the halving it would double to 64 and
	// reach slab 70.
	readXY(t, p, store, 6)
	got = sink.take(cache.PriorityHigh)
	if want := []string{xKey(38), yKey(38)}; !slices.Equal(got, want) {
		t.Fatalf("after the miss and slab 6 the run asked for %v, want %v (the window halved by the miss)", head(got, 6), want)
	}
}

// TestPlannerLateArrayJoinsFill: DataLoader workers each read the images of
// their batch before any reads the labels, so when the shuffled order shows
// and the fill starts, only x has been read. When y is first read the fill
// is restarted over both, slab by slab (so that slabs complete in order),
// instead of y costing a round trip per chunk all epoch; once only.
func TestPlannerLateArrayJoinsFill(t *testing.T) {
	p, sink, store := newTestPlanner(t, 50, 1<<30)
	for _, i := range []int64{31, 7, 44, 12, 3, 27} {
		read(t, p, store, xKey(i), 25000)
	}
	if len(sink.feeds) != 1 {
		t.Fatalf("%d fills after shuffled reads of x, want 1", len(sink.feeds))
	}
	read(t, p, store, yKey(31), 100)
	read(t, p, store, yKey(7), 100)
	if len(sink.feeds) != 2 {
		t.Fatalf("%d fills after y was first read, want 2 (the fill restarted with y, once)", len(sink.feeds))
	}
	if !sink.feeds[0].cancelled {
		t.Error("the fill of x alone still runs beside the new one")
	}
	var got []string
	for {
		w, ok := sink.feeds[1].next()
		if !ok {
			break
		}
		got = append(got, w.Key)
	}
	var want []string
	for s := int64(0); s < 50; s++ {
		want = append(want, xKey(s), yKey(s))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("the new fill gives %v…, want x and y slab by slab: %v…", head(got, 4), head(want, 4))
	}
	if st := p.Stats(); st.FillsStarted != 1 || st.FillsJoined != 1 {
		t.Fatalf("stats %+v, want one fill started and one array joined", st)
	}
	p.StopFills()
	if !sink.feeds[1].cancelled {
		t.Error("the restarted fill still runs after StopFills")
	}
}
