package readahead

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/vfs/store"
	"github.com/zarrfs/zarrfs/zarr"
)

// Coverage tests: arrays of covSlabs slabs of covCols chunks (2-D, chunks
// of 10x10), one lockstep group per directory.
const (
	covSlabs = 64
	covCols  = 16
)

// coverageStore holds rand/a, whole/a and strip/a (64x16 chunks each, a
// group of their own), and the group pair: x and y (64x16 chunks), l (1-D
// labels, one chunk per slab) and w (64x8 chunks: not where x's lie).
func coverageStore(t *testing.T) *store.Store {
	t.Helper()
	tree := zarr.NewTree()
	add := func(p string, shape, chunks []int64) {
		arr := &zarr.Array{ZarrFormat: 2, Shape: shape, ChunkShape: chunks, DataType: "<f4", KeyEncoding: zarr.KeyEncoding{Separator: "."}}
		if _, err := tree.Add(p, zarr.KindArray, arr, ".zarray"); err != nil {
			t.Fatal(err)
		}
	}
	grid := []int64{covSlabs * 10, covCols * 10}
	for _, p := range []string{"rand/a", "whole/a", "strip/a", "pair/x", "pair/y"} {
		add(p, grid, []int64{10, 10})
	}
	add("pair/l", []int64{covSlabs * 10}, []int64{10})
	add("pair/w", []int64{covSlabs * 10, covCols / 2 * 10}, []int64{10, 10})
	return &store.Store{Tree: tree, Format: 2}
}

// ck is the key of chunk (s, c) of arr, or of chunk s of a 1-D arr if c < 0.
func ck(arr string, s, c int64) string {
	if c < 0 {
		return fmt.Sprintf("%s/%d", arr, s)
	}
	return fmt.Sprintf("%s/%d.%d", arr, s, c)
}

// covStep is one step of a reader: the chunks it reads, in order, each
// looked up and then opened, as a reader of the mount does.
type covStep []string

// asks are what the planner asked for during one step.
type asks struct{ urgent, high []string }

// runSteps reads steps with a fresh planner and returns what it asked for
// at each, the step at which it first asked for a key (-1: never), and the
// planner.
func runSteps(t *testing.T, steps []covStep) ([]asks, func(string) int, *Planner) {
	t.Helper()
	st := coverageStore(t)
	sink := &fakeSink{}
	p := New(st, sink, 1<<20, slog.New(slog.DiscardHandler))
	var out []asks
	first := map[string]int{}
	for i, keys := range steps {
		for _, k := range keys {
			read(t, p, st, k, 2000) // lookup
			read(t, p, st, k, 2000) // open
		}
		var a asks
		for _, r := range sink.takeAll() {
			switch r.class {
			case cache.PriorityUrgent:
				a.urgent = append(a.urgent, r.key)
			case cache.PriorityHigh:
				a.high = append(a.high, r.key)
			}
			if _, ok := first[r.key]; !ok {
				first[r.key] = i
			}
		}
		out = append(out, a)
	}
	askedAt := func(k string) int {
		if i, ok := first[k]; ok {
			return i
		}
		return -1
	}
	return out, askedAt, p
}

// covWarm is the steps after which every reader below has had a slab leave
// the recent ones, so the planner has learnt what it reads of a slab.
const covWarm = recentSlabs + 1

func TestPlannerCoverage(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 1))
	perm := rng.Perm(covSlabs) // slabs in shuffled order, none twice

	for _, tt := range []struct {
		name  string
		steps func() []covStep
		check func(t *testing.T, i int, step covStep, a asks, askedAt func(string) int)
		// summary checks all the steps' asks together, and the stats.
		summary func(t *testing.T, got []asks, st Stats)
	}{{
		// Random single chunks of an array of 16 chunks a slab: after a few
		// visits, no guesses of the rest of the slab (asks per read bounded).
		name: "random single chunks",
		steps: func() []covStep {
			var steps []covStep
			for range 200 {
				steps = append(steps, covStep{ck("rand/a", rng.Int64N(covSlabs), rng.Int64N(covCols))})
			}
			return steps
		},
		check: func(t *testing.T, i int, step covStep, a asks, _ func(string) int) {
			if i < covWarm {
				return
			}
			if len(a.urgent) > 0 {
				t.Errorf("step %d (%s): urgent asks %v, want none (the reader reads single chunks)", i, step[0], head(a.urgent, 4))
			}
		},
		summary: func(t *testing.T, got []asks, st Stats) {
			// A random order now and then looks like a short run: it asks
			// ahead only when two steps read the same column (1 in 16).
			ahead := 0
			for _, a := range got[covWarm:] {
				ahead += len(a.high)
			}
			if reads := len(got) - covWarm; ahead > reads/10 {
				t.Errorf("%d asks ahead for %d random reads, want at most %d", ahead, reads, reads/10)
			}
			if st.Narrowed == 0 {
				t.Errorf("stats %+v: no prediction narrowed", st)
			}
		},
	}, {
		// Whole slabs in shuffled order: the first read of a slab asks for
		// the rest of it, also once the reader's coverage is learnt.
		name: "whole slabs",
		steps: func() []covStep {
			var steps []covStep
			for _, s := range perm[:40] {
				var keys covStep
				for c := range int64(covCols) {
					keys = append(keys, ck("whole/a", int64(s), c))
				}
				steps = append(steps, keys)
			}
			return steps
		},
		check: func(t *testing.T, i int, step covStep, a asks, askedAt func(string) int) {
			// Every chunk but the first is asked for at this step or was
			// before it (ahead of an accidental run).
			for _, k := range step[1:] {
				if j := askedAt(k); j < 0 || j > i {
					t.Errorf("step %d: %s not asked for (urgent asks %v)", i, k, head(a.urgent, 4))
					return
				}
			}
		},
		summary: func(t *testing.T, _ []asks, st Stats) {
			if st.Narrowed != 0 {
				t.Errorf("stats %+v: predictions of a whole-slab reader narrowed", st)
			}
		},
	}, {
		// Eight readers of whole slabs, in shuffled order, one chunk each in
		// turn (workers of a DataLoader): more slabs in flight than the
		// recent ones, so each read is a new visit that sees one chunk. Once
		// the first slabs are read (the first rounds look like random
		// single chunks), their slabs are asked for whole.
		name: "interleaved whole slabs",
		steps: func() []covStep {
			const readers = 8
			var steps []covStep
			next := 0
			slab := make([]int, readers)
			col := make([]int64, readers)
			for i := range slab {
				slab[i], next = perm[next], next+1
			}
			for next < 48 {
				for r := range slab {
					steps = append(steps, covStep{ck("whole/a", int64(slab[r]), col[r])})
					if col[r]++; col[r] == covCols {
						slab[r], col[r], next = perm[next], 0, next+1
					}
				}
			}
			return steps
		},
		check: func(t *testing.T, i int, step covStep, a asks, askedAt func(string) int) {
			if i < 4*8 || strings.HasSuffix(step[0], ".0") {
				return // the first slabs; the first chunk of a slab, its reader asks for it
			}
			if j := askedAt(step[0]); j < 0 || j > i {
				t.Errorf("step %d: %s read but not asked for before", i, step[0])
			}
		},
	}, {
		// A strip (column 5) read slab after slab: the run asks for the
		// strip's next chunks, not for whole slabs.
		name: "strip read sequentially",
		steps: func() []covStep {
			var steps []covStep
			for s := range int64(40) {
				steps = append(steps, covStep{ck("strip/a", s, 5)})
			}
			return steps
		},
		check: func(t *testing.T, i int, step covStep, a asks, askedAt func(string) int) {
			if j := askedAt(ck("strip/a", int64(i+1), 5)); j < 0 || j > i {
				t.Errorf("step %d: the strip's next chunk %s not asked for ahead", i, ck("strip/a", int64(i+1), 5))
			}
			if i < covWarm {
				return
			}
			for _, k := range append(a.urgent, a.high...) {
				if !strings.HasSuffix(k, ".5") {
					t.Errorf("step %d: asked for %s, outside the strip (%d urgent, %d ahead)", i, k, len(a.urgent), len(a.high))
					return
				}
			}
		},
	}, {
		// x and y read chunk by chunk at random, with labels l (one chunk a
		// slab) and w (another grid): y's chunk at the same coordinates and
		// l's slab are asked for; w's slab is not.
		name: "lockstep x/y per chunk",
		steps: func() []covStep {
			var steps []covStep
			for _, s := range perm[:40] {
				c := rng.Int64N(covCols)
				steps = append(steps, covStep{
					ck("pair/x", int64(s), c), ck("pair/y", int64(s), c),
					ck("pair/l", int64(s), -1), ck("pair/w", int64(s), c/2),
				})
			}
			return steps
		},
		check: func(t *testing.T, i int, step covStep, a asks, askedAt func(string) int) {
			y := step[1]
			for _, k := range step[1:3] { // y at x's coordinates, l's slab
				if j := askedAt(k); j < 0 || j > i {
					t.Errorf("step %d: %s not asked for; urgent %v", i, k, head(a.urgent, 4))
				}
			}
			if i < covWarm {
				return
			}
			for _, k := range append(a.urgent, a.high...) {
				if strings.HasPrefix(k, "pair/w/") {
					t.Errorf("step %d: asked for %s, of an array whose chunks lie elsewhere", i, k)
					return
				}
			}
			for _, k := range a.urgent {
				if k != y && k != step[2] {
					t.Errorf("step %d: urgent asks %v, want only %s and %s", i, head(a.urgent, 6), y, step[2])
					return
				}
			}
		},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			steps := tt.steps()
			got, askedAt, p := runSteps(t, steps)
			for i := range steps {
				tt.check(t, i, steps[i], got[i], askedAt)
			}
			if tt.summary != nil {
				tt.summary(t, got, p.Stats())
			}
		})
	}
}

// countSink takes every ask as new, as a cache that evicts does; the
// planner's stats count them.
type countSink struct{}

func (countSink) Prefetch(cache.Want, cache.Priority) cache.PrefetchResult {
	return cache.PrefetchQueued
}

func (countSink) StartFeed(next func() (cache.Want, bool)) FeedHandle {
	return &fakeFeed{next: next, done: make(chan struct{})}
}

// TestPlannerLoadShape is the integration load test's shape (one array of
// 400x250 chunks, 64 readers of random chunks; each reader's lookup and
// open of a chunk lie 63 other readers' accesses apart): the planner's asks
// stay a small part of the reads, where whole-slab guesses made hundreds
// per read.
func TestPlannerLoadShape(t *testing.T) {
	const rows, cols, readers, rounds = 400, 250, 64, 100
	tree := zarr.NewTree()
	arr := &zarr.Array{ZarrFormat: 2, Shape: []int64{rows * 32, cols * 32}, ChunkShape: []int64{32, 32}, DataType: "<f8", KeyEncoding: zarr.KeyEncoding{Separator: "."}}
	if _, err := tree.Add("a", zarr.KindArray, arr, ".zarray"); err != nil {
		t.Fatal(err)
	}
	st := &store.Store{Tree: tree, Format: 2}
	p := New(st, countSink{}, 64<<20, slog.New(slog.DiscardHandler))
	rng := rand.New(rand.NewPCG(12, 5))
	cur := make([]string, readers)
	for range rounds {
		for i := range cur {
			cur[i] = fmt.Sprintf("a/%d.%d", rng.IntN(rows), rng.IntN(cols))
			read(t, p, st, cur[i], 2500) // lookup
		}
		for _, k := range cur {
			read(t, p, st, k, 2500) // open
		}
	}
	reads := readers * rounds
	asks := p.Stats().LockstepRequests + p.Stats().RunRequests
	t.Logf("%d reads: %+v", reads, p.Stats())
	if asks > int64(reads/4) {
		t.Fatalf("%d asks for %d random reads, want at most %d: %+v", asks, reads, reads/4, p.Stats())
	}
}
