package vfs

// Explicit prefetch (`zarrfs prefetch`): warm a subtree of the store — the
// whole store, a group, an array, or a range of chunk indices of an array —
// through the running mount, as a background feed of the cache. And the
// prefetch counters of a mount.
//
// Locking: explicitJobs.mu guards the job table only; it is never held while
// calling the cache or the planner.

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/readahead"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/vfs/store"
	"github.com/zarrfs/zarrfs/zarr"
)

// ErrNoSuchPath: a prefetch target names nothing in the store.
var ErrNoSuchPath = errors.New("no such group, array or chunk in the store")

// ErrBadRange: a prefetch target's chunk index range does not fit the array.
var ErrBadRange = errors.New("bad chunk index range")

// PrefetchStats are a mount's prefetch counters: the cache's scheduler, the
// planner's decisions and explicit jobs.
type PrefetchStats struct {
	cache.PrefetchStats
	Planner readahead.Stats `json:"planner"`
	Jobs    int             `json:"explicit_jobs"` // explicit prefetches running
}

// PrefetchStats returns the mount's prefetch counters.
func (f *FS) PrefetchStats() PrefetchStats {
	st := PrefetchStats{PrefetchStats: f.cache.PrefetchStats(), Planner: f.planner.Stats()}
	m := &f.jobs
	m.mu.Lock()
	for _, j := range m.table {
		select {
		case <-j.feed.Done():
		default:
			st.Jobs++
		}
	}
	m.mu.Unlock()
	return st
}

// PrefetchTarget is what to warm: a store path ("" = the whole store; a
// group, an array, or one chunk key) and, for an array, optional ranges of
// chunk indices [lo, hi) along its leading dimensions (the rest whole).
type PrefetchTarget struct {
	Path   string     `json:"path"`
	Ranges [][2]int64 `json:"ranges,omitempty"`
}

// PrefetchProgress is the state of an explicit prefetch.
type PrefetchProgress struct {
	ID         int     `json:"id"`
	Keys       int64   `json:"keys"`            // chunk keys it covers; a shard read by ranges counts as its blocks
	Bytes      int64   `json:"bytes"`           // their total size: exact with a manifest, else an estimate
	BytesExact bool    `json:"bytes_exact"`     // Bytes comes from the manifest
	Elapsed    float64 `json:"elapsed_s"`       // seconds since it started
	Error      string  `json:"error,omitempty"` // first fetch failure
	cache.FeedProgress
}

// prefetchJob is one explicit prefetch.
type prefetchJob struct {
	id      int
	keys    int64
	bytes   int64
	exact   bool
	started time.Time
	feed    *cache.Feed
	// blocks counts the pieces shards were expanded into beyond one key
	// each, so that done keys never pass the total.
	blocks atomic.Int64
}

// maxFinishedJobs bounds the finished jobs kept for their progress.
const maxFinishedJobs = 16

// prefetchSpan is the part of one array to warm: chunk indices [lo, hi).
type prefetchSpan struct {
	arr    *zarr.Node
	lo, hi []int64
}

// Prefetch starts warming targets in the background and returns the job's
// initial progress; PrefetchStatus follows it. Keys already cached cost no
// request; chunks missing on the origin count as done.
func (f *FS) Prefetch(targets []PrefetchTarget) (PrefetchProgress, error) {
	v := f.current()
	spans, err := resolveTargets(v.Store, targets)
	if err != nil {
		return PrefetchProgress{}, err
	}
	job := &prefetchJob{started: time.Now()}
	job.keys, job.bytes, job.exact = f.estimate(v.Store, spans)
	return f.startJob(v, spans, job, len(targets)), nil
}

// PrefetchAll starts fetching the whole store in the background, as
// Prefetch of the store root does, if its size (exact with a manifest, else
// estimated) fits within budget; started is false, with the size, when not.
func (f *FS) PrefetchAll(budget int64) (p PrefetchProgress, started bool) {
	v := f.current()
	spans, _ := resolveTargets(v.Store, nil) // the root always resolves
	job := &prefetchJob{started: time.Now()}
	job.keys, job.bytes, job.exact = f.estimate(v.Store, spans)
	if job.bytes > budget {
		return PrefetchProgress{Keys: job.keys, Bytes: job.bytes, BytesExact: job.exact}, false
	}
	return f.startJob(v, spans, job, 1), true
}

// startJob starts the feed of an explicit prefetch of spans.
func (f *FS) startJob(v *view, spans []prefetchSpan, job *prefetchJob, targets int) PrefetchProgress {
	job.feed = f.cache.AddFeed(f.ranged.expandFeed(f.arrayOf, spanFeed(v.Store, spans, f.planner),
		func(blocks int) { job.blocks.Add(int64(blocks - 1)) }))
	m := &f.jobs
	m.mu.Lock()
	m.next++
	job.id = m.next
	if m.table == nil {
		m.table = map[int]*prefetchJob{}
	}
	m.table[job.id] = job
	m.pruneLocked()
	m.mu.Unlock()
	f.log.Info("prefetch started", "job", job.id, "targets", targets, "keys", job.keys, "bytes", job.bytes)
	return job.progress()
}

// PrefetchStatus reports the progress of job id.
func (f *FS) PrefetchStatus(id int) (PrefetchProgress, bool) {
	j := f.jobs.get(id)
	if j == nil {
		return PrefetchProgress{}, false
	}
	return j.progress(), true
}

// CancelPrefetch stops job id; fetches already started still land.
func (f *FS) CancelPrefetch(id int) bool {
	j := f.jobs.get(id)
	if j == nil {
		return false
	}
	j.feed.Cancel()
	return true
}

func (f *FS) cancelJobs() {
	m := &f.jobs
	m.mu.Lock()
	jobs := make([]*prefetchJob, 0, len(m.table))
	for _, j := range m.table {
		jobs = append(jobs, j)
	}
	m.mu.Unlock()
	for _, j := range jobs {
		j.feed.Cancel()
	}
}

func (m *explicitJobs) pruneLocked() {
	var finished []int
	for id, j := range m.table {
		select {
		case <-j.feed.Done():
			finished = append(finished, id)
		default:
		}
	}
	if len(finished) <= maxFinishedJobs {
		return
	}
	slices.Sort(finished)
	for _, id := range finished[:len(finished)-maxFinishedJobs] {
		delete(m.table, id)
	}
}

func (j *prefetchJob) progress() PrefetchProgress {
	p := PrefetchProgress{
		ID: j.id, Keys: j.keys + j.blocks.Load(), Bytes: j.bytes, BytesExact: j.exact,
		Elapsed:      time.Since(j.started).Seconds(),
		FeedProgress: j.feed.Progress(),
	}
	if err := j.feed.Err(); err != nil {
		p.Error = err.Error()
	}
	return p
}

// resolveTargets turns targets into spans of arrays.
func resolveTargets(st *store.Store, targets []PrefetchTarget) ([]prefetchSpan, error) {
	if len(targets) == 0 {
		targets = []PrefetchTarget{{Path: ""}}
	}
	var spans []prefetchSpan
	for _, t := range targets {
		p := storePath(t.Path)
		if n := st.Tree.Lookup(p); n != nil {
			if n.Kind != zarr.KindArray {
				if len(t.Ranges) > 0 {
					return nil, fmt.Errorf("%w: %s is a group; chunk ranges apply to arrays", ErrBadRange, displayStorePath(p))
				}
				spans = append(spans, groupSpans(n)...)
				continue
			}
			sp, err := arraySpan(n, t.Ranges)
			if err != nil {
				return nil, err
			}
			spans = append(spans, sp)
			continue
		}
		sp, ok := chunkSpan(st, p)
		if !ok || len(t.Ranges) > 0 {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchPath, displayStorePath(p))
		}
		spans = append(spans, sp)
	}
	return spans, nil
}

// storePath is a target's path as a store key: no leading or trailing
// slash, no dot components.
func storePath(p string) string { return strings.Trim(path.Clean("/"+p), "/") }

func displayStorePath(p string) string {
	if p == "" {
		return "the store root"
	}
	return p
}

// groupSpans covers every array below n, whole.
func groupSpans(n *zarr.Node) []prefetchSpan {
	var spans []prefetchSpan
	var walk func(*zarr.Node)
	walk = func(n *zarr.Node) {
		if n.Kind == zarr.KindArray && n.Array != nil {
			if sp, err := arraySpan(n, nil); err == nil {
				spans = append(spans, sp)
			}
			return
		}
		for _, name := range n.ChildNames() {
			walk(n.Children[name])
		}
	}
	walk(n)
	return spans
}

// arraySpan covers the chunks of arr within ranges (leading dimensions).
func arraySpan(arr *zarr.Node, ranges [][2]int64) (prefetchSpan, error) {
	grid := arr.Array.GridShape()
	if len(ranges) > len(grid) {
		return prefetchSpan{}, fmt.Errorf("%w: %s has %d dimensions, got %d ranges", ErrBadRange, arr.Path, len(grid), len(ranges))
	}
	sp := prefetchSpan{arr: arr, lo: make([]int64, len(grid)), hi: slices.Clone(grid)}
	for i, r := range ranges {
		lo, hi := r[0], min(r[1], grid[i])
		if lo < 0 || lo >= hi {
			return prefetchSpan{}, fmt.Errorf("%w: %s dimension %d has chunk indices 0..%d, got %d:%d", ErrBadRange, arr.Path, i, grid[i]-1, r[0], r[1])
		}
		sp.lo[i], sp.hi[i] = lo, hi
	}
	return sp, nil
}

// chunkSpan covers one chunk named by its store key.
func chunkSpan(st *store.Store, key string) (prefetchSpan, bool) {
	// The array is the longest node path that is a prefix of the key.
	for dir := path.Dir(key); dir != "." && dir != "/"; dir = path.Dir(dir) {
		n := st.Tree.Lookup(dir)
		if n == nil {
			continue
		}
		if n.Kind != zarr.KindArray || n.Array == nil {
			return prefetchSpan{}, false
		}
		kind, coords := n.Array.Resolve(strings.Split(strings.TrimPrefix(key, dir+"/"), "/"))
		if kind != zarr.EntryChunk {
			return prefetchSpan{}, false
		}
		hi := make([]int64, len(coords))
		for i, c := range coords {
			hi[i] = c + 1
		}
		return prefetchSpan{arr: n, lo: coords, hi: hi}, true
	}
	return prefetchSpan{}, false
}

func (sp prefetchSpan) count() int64 {
	n := int64(1)
	for i := range sp.lo {
		n *= sp.hi[i] - sp.lo[i]
	}
	return n
}

// forEach calls fn with each chunk's coordinates in C order until it
// returns false.
func (sp prefetchSpan) forEach(fn func([]int64) bool) {
	coords := slices.Clone(sp.lo)
	if sp.count() == 0 {
		return
	}
	for {
		if !fn(slices.Clone(coords)) {
			return
		}
		i := len(coords) - 1
		for ; i >= 0; i-- {
			coords[i]++
			if coords[i] < sp.hi[i] {
				break
			}
			coords[i] = sp.lo[i]
		}
		if i < 0 {
			return
		}
	}
}

// estimate counts the keys of spans and their bytes: exact from the
// manifest, else the planner's estimate per chunk.
func (f *FS) estimate(st *store.Store, spans []prefetchSpan) (keys, bytes int64, exact bool) {
	if man := st.Manifest; man != nil {
		for _, sp := range spans {
			if sparse(man, sp) {
				for _, c := range listedChunks(man, sp) {
					keys++
					bytes += c.size
				}
				continue
			}
			sp.forEach(func(c []int64) bool {
				if size, _, ok := man.Lookup(path.Join(sp.arr.Path, sp.arr.Array.ChunkKey(c))); ok {
					keys++
					bytes += size
				}
				return true
			})
		}
		return keys, bytes, true
	}
	for _, sp := range spans {
		n := sp.count()
		keys += n
		bytes += int64(f.planner.ChunkEstimate(sp.arr) * float64(n))
	}
	return keys, bytes, false
}

// spanFeed hands out the chunk keys of spans in order, with the manifest's
// versions and sizes (skipping keys it does not list) when there is one,
// else with the planner's size estimates.
func spanFeed(st *store.Store, spans []prefetchSpan, p *readahead.Planner) func() (cache.Want, bool) {
	si := 0
	var coords []int64 // next chunk of spans[si]; nil = start of it
	var est int64
	var listed []listedChunk // the rest of a sparse span's chunks; see sparse
	listing := false
	return func() (cache.Want, bool) {
		for si < len(spans) {
			sp := spans[si]
			if coords == nil && !listing && st.Manifest != nil && sparse(st.Manifest, sp) {
				listed, listing = listedChunks(st.Manifest, sp), true
			}
			if listing {
				if len(listed) == 0 {
					si++
					listing = false
					continue
				}
				c := listed[0]
				listed = listed[1:]
				return cache.Want{Key: c.key, Version: c.version, Size: c.size}, true
			}
			if coords == nil {
				if sp.count() == 0 {
					si++
					continue
				}
				coords = slices.Clone(sp.lo)
				est = int64(p.ChunkEstimate(sp.arr))
			} else if !advance(coords, sp.lo, sp.hi) {
				si++
				coords = nil
				continue
			}
			key := path.Join(sp.arr.Path, sp.arr.Array.ChunkKey(coords))
			if st.Manifest == nil {
				return cache.Want{Key: key, Size: est}, true
			}
			if size, version, ok := st.Manifest.Lookup(key); ok {
				return cache.Want{Key: key, Version: version, Size: size}, true
			}
		}
		return cache.Want{}, false
	}
}

// sparse reports whether a span holds more chunks than the manifest has
// keys: most of its coordinates name nothing stored, and walking them (a
// grid of 9e18 chunks is valid zarr) would never end; its chunks are found
// from the manifest's keys instead.
func sparse(man *remote.Manifest, sp prefetchSpan) bool {
	return sp.count() > int64(man.Len())
}

// listedChunk is a chunk of a span that the manifest lists.
type listedChunk struct {
	coords       []int64
	key, version string
	size         int64
}

// listedChunks returns the chunks of sp the manifest lists, in C order, in
// one pass over the manifest's keys.
func listedChunks(man *remote.Manifest, sp prefetchSpan) []listedChunk {
	var out []listedChunk
	prefix := sp.arr.Path + "/"
	if sp.arr.Path == "" {
		prefix = ""
	}
	man.Keys(func(key string, size int64, version string) bool {
		rel, ok := strings.CutPrefix(key, prefix)
		if !ok {
			return true
		}
		kind, coords := sp.arr.Array.Resolve(strings.Split(rel, "/"))
		if kind != zarr.EntryChunk || key != path.Join(sp.arr.Path, sp.arr.Array.ChunkKey(coords)) {
			return true
		}
		for i, c := range coords {
			if c < sp.lo[i] || c >= sp.hi[i] {
				return true
			}
		}
		out = append(out, listedChunk{coords: coords, key: key, version: version, size: size})
		return true
	})
	slices.SortFunc(out, func(a, b listedChunk) int { return slices.Compare(a.coords, b.coords) })
	return out
}

// advance moves coords to the next chunk in C order within [lo, hi); false
// past the end.
func advance(coords, lo, hi []int64) bool {
	for i := len(coords) - 1; i >= 0; i-- {
		coords[i]++
		if coords[i] < hi[i] {
			return true
		}
		coords[i] = lo[i]
	}
	return false
}

// explicitJobs is the table of a mount's explicit prefetches.
type explicitJobs struct {
	mu    sync.Mutex
	table map[int]*prefetchJob
	next  int
}

func (m *explicitJobs) get(id int) *prefetchJob {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.table[id]
}
