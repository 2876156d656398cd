// Package readahead is the readahead policy of a mount: it watches which
// chunks readers look up and open, predicts from the chunk grid what they
// ask for next, and asks a Sink (the cache) for it at the cache's priority
// classes. It also builds the feeds that background prefetches hand the
// cache. It must not know about files, handles, the kernel, blocks of
// shards or the origin: what it predicts are whole chunk keys, and a Sink
// decides how they are fetched.
package readahead

// The readahead planner: the policy half of prefetching (the mechanism —
// priorities, concurrency, protection of unread data — is cache's
// scheduler). It watches chunk lookups and opens and predicts, from the
// chunk grid, what the reader asks for next:
//
//   - Lockstep. Arrays of one group that share the leading dimension and its
//     chunking (x and y; the variables of an xarray Dataset along time) are
//     read together: a chunk of slab i of one predicts all chunks of slab i
//     of the others (and the rest of its own slab along the other axes).
//   - Runs. Ascending, descending or strided slab indices form a stream whose
//     window (slabs fetched ahead) starts small and doubles with every
//     confirmed step, up to a byte budget; an access no stream predicted
//     halves the window of the most recent one. Up to maxStreams streams per
//     group, so interleaved readers each keep theirs.
//   - Coverage. Per array, the planner learns how much of a slab a reader
//     reads per visit: the distinct chunks read of a slab, folded into a
//     moving average when the slab leaves the recent ones (a slab readers
//     come back to while it is still counted, as readers taking turns do,
//     corrects its share instead of counting as another visit). Under a
//     quarter of a slab of several chunks (random single chunks, a strip of
//     tiles), a lockstep prediction asks only for the chunk at the
//     coordinates read along the other axes, and a run for that chunk of the
//     slabs ahead while the reader keeps to it (a strip): whole-slab guesses
//     nobody reads would take request slots and link from the readers' own
//     misses. Until a visit is learnt, whole slabs, so that the first reads
//     of an xarray time step are not slowed.
//   - Shuffled epochs. When an access continues no stream and the arrays
//     being read fit the cache, the rest of them is fetched in the
//     background (a cache Feed), so the epoch is bounded by the link rather
//     than by one round trip per chunk. It starts only once the order has
//     been seen to be non-sequential, so the first reads get the whole link.
//     An array first read after the fill started (DataLoader workers read
//     their batches' images before any reads a label) joins it if it fits.
//     When the arrays do not fit, only predictions are fetched, and the
//     cache never evicts unread prefetched data to make room for more.
//
// Lock order: Planner.mu is held only while deciding; it is never held while
// calling the cache (which may call the planner's feed generators from its
// dispatcher goroutine, without its own lock).

import (
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/vfs/store"
	"github.com/zarrfs/zarrfs/zarr"
)

// Planner tuning.
const (
	maxStreams = 4 // run streams per lockstep group
	// maxStride is the largest slab step that starts a stream after two
	// accesses; larger steps start one only as a miss. Small, so that a
	// shuffled order rarely looks like a run.
	maxStride = 4
	// recentSlabs is how many distinct slabs per group count as "being read
	// now": an access to one of them (another array of the same slab) is not
	// a new step of the reader.
	recentSlabs = 4
	// trackSlabs is how many slabs per group coverage keeps counting the
	// chunks of, the least recently read dropped first: more than the recent
	// ones, so that the slabs of several readers reading in turn (workers of
	// a DataLoader) keep their counts while they come and go from the recent
	// ones. At least 2*recentSlabs, so a recent slab is never dropped.
	trackSlabs = 16
	// inactiveAfter: an array of a group not read during this many slab
	// visits is left out of lockstep predictions and fills.
	inactiveAfter = 4
	// maxChunksPerSlab bounds the chunks one slab prediction asks for, and
	// the positions coverage tells apart in a slab.
	maxChunksPerSlab = 4096
	// narrowCover: an array whose readers read less than this part of a
	// slab per visit gets predictions of the chunks they read, not slabs.
	narrowCover = 0.25
	// coverWeight is the weight of a new visit in the coverage average.
	coverWeight = 0.25
	// fillShare is the part of the cache budget the arrays of a shuffled
	// group may take for a background fill.
	fillShare = 0.9
	// decayEvery halves a group's hit and miss counts after this many visits.
	decayEvery = 64
	// Small arrays (coordinates: time, lat, lon) are fetched when the mount
	// starts, because xarray reads them all when it opens a Dataset.
	smallArrayBytes  = 1 << 20
	smallArrayChunks = 4
	smallWarmMax     = 64
)

// Sink is what the planner needs from the cache: take one predicted object
// at a priority class, or start a background feed of many.
type Sink interface {
	Prefetch(w cache.Want, class cache.Priority) cache.PrefetchResult
	StartFeed(next func() (cache.Want, bool)) FeedHandle
}

// FeedHandle is a running background feed (*cache.Feed).
type FeedHandle interface {
	Cancel()
	Done() <-chan struct{}
	Progress() cache.FeedProgress
}

// FeedCache is what CacheSink needs of the cache (*cache.Cache).
type FeedCache interface {
	Prefetch(w cache.Want, class cache.Priority) cache.PrefetchResult
	AddFeed(next func() (cache.Want, bool)) *cache.Feed
}

var _ FeedCache = (*cache.Cache)(nil)

// CacheSink adapts the cache to Sink.
type CacheSink struct{ Cache FeedCache }

func (s CacheSink) Prefetch(w cache.Want, class cache.Priority) cache.PrefetchResult {
	return s.Cache.Prefetch(w, class)
}

func (s CacheSink) StartFeed(next func() (cache.Want, bool)) FeedHandle {
	return s.Cache.AddFeed(next)
}

// Planner is the readahead policy of one mount. A nil *Planner is valid
// and predicts nothing.
type Planner struct {
	sink Sink
	// manifest is the store's manifest (nil without one); atomic because
	// want reads it outside mu while a refresh may rebuild.
	manifest  atomic.Pointer[remote.Manifest]
	budget    int64 // cache budget in bytes
	runBudget int64 // bytes one run window may cover
	log       *slog.Logger

	mu     sync.Mutex
	store  *store.Store // the version of the store the groups were built from
	arrays map[*zarr.Node]*arrayInfo
	groups []*lockGroup
	stats  Stats
	closed bool
}

// Stats count the planner's decisions.
type Stats struct {
	LockstepRequests int64 `json:"lockstep_requests"` // chunks asked for because a sibling read their slab
	RunRequests      int64 `json:"run_requests"`      // chunks asked for ahead of a run
	RunsConfirmed    int64 `json:"runs_confirmed"`    // accesses a run predicted
	Misses           int64 `json:"unpredicted"`       // slab accesses no run predicted
	FillsStarted     int64 `json:"fills_started"`     // background fills of shuffled groups
	FillsCancelled   int64 `json:"fills_cancelled"`   // fills stopped because runs explained the order
	FillsTooLarge    int64 `json:"fills_too_large"`   // shuffled groups larger than the cache: predictions only
	FillsJoined      int64 `json:"fills_joined"`      // arrays first read while their group's fill ran, added to it
	Narrowed         int64 `json:"narrowed"`          // slab predictions cut to the chunk read, as readers read little of a slab
}

// arrayInfo is the planner's view of one array.
type arrayInfo struct {
	node    *zarr.Node
	group   *lockGroup
	idx     int // position in group.arrays
	grid    []int64
	perSlab int64 // chunks per slab: product of the grid past the leading axis
	// cover is the moving average of the part of a slab read per visit;
	// covers counts the visits it has learnt (0: none yet).
	cover  float64
	covers int64
	// Observed object sizes (from lookups), for estimates without a manifest.
	sizeSum, sizeN int64
	lastVisit      int64 // group visit count when last read; -1 never
	manifestTotal  int64 // bytes of its chunks per the manifest; -1 not computed
	// altSep: chunk keys use "/" although ChunkKey spells "." (a v2 array
	// without dimension_separator). Atomic: feeds read it without planner.mu.
	altSep atomic.Bool
}

func (a *arrayInfo) avgSize() float64 {
	if a.sizeN == 0 {
		return 0
	}
	return float64(a.sizeSum) / float64(a.sizeN)
}

// chunkKey is the store key of the chunk at coords.
func (a *arrayInfo) chunkKey(coords []int64) string {
	keys := a.node.Array.ChunkKeys(coords)
	if len(keys) == 0 {
		return ""
	}
	k := keys[0]
	if a.altSep.Load() && len(keys) > 1 {
		k = keys[1]
	}
	return path.Join(a.node.Path, k)
}

// lockGroup is a set of arrays read in lockstep along their leading axis.
type lockGroup struct {
	arrays  []*arrayInfo
	nslabs  int64
	visits  int64              // distinct-slab accesses so far
	recent  [recentSlabs]int64 // last distinct slabs, most recent at visits%recentSlabs
	track   []*slabSeen        // what was read of the last slabs read, least recent first
	streams []*stream
	hits    int64
	misses  int64
	fill    FeedHandle // background fill in progress, or nil
	filled  bool       // a fill ran (or was refused as too large): not again
	// inFill holds every array the fill covers (true) or was refused for
	// (false) (joinFillLocked).
	inFill map[*arrayInfo]bool
}

// stream is one run of slab accesses.
type stream struct {
	last   int64
	stride int64   // 0 while only one access is known
	window int64   // slabs fetched ahead
	issued int64   // furthest slab asked for, in the stride's direction
	used   int64   // group visit of its last hit, for LRU replacement
	at     []int64 // coordinates past the leading axis of the read that made its last step
}

// New returns the planner of a mount of store whose cache holds budget
// bytes; it asks sink for what it predicts.
func New(store *store.Store, sink Sink, budget int64, log *slog.Logger) *Planner {
	p := &Planner{
		sink:      sink,
		budget:    budget,
		runBudget: max(4<<20, min(budget/4, 256<<20)),
		log:       log,
	}
	p.buildLocked(store)
	return p
}

// buildLocked (re)builds the arrays and groups from a version of the store,
// forgetting what was learnt; it returns the fills to cancel.
func (p *Planner) buildLocked(store *store.Store) (stale []FeedHandle) {
	for _, g := range p.groups {
		stale = append(stale, g.takeFillsLocked()...)
	}
	p.store = store
	p.manifest.Store(store.Manifest)
	p.arrays = map[*zarr.Node]*arrayInfo{}
	p.groups = nil
	groups := map[string]*lockGroup{}
	var order []string
	_ = store.Tree.Walk(func(n *zarr.Node) error {
		if n.Kind != zarr.KindArray || n.Array == nil || len(n.Array.Shape) == 0 || n.Array.NumChunks() <= 0 {
			return nil
		}
		a := &arrayInfo{node: n, grid: n.Array.GridShape(), perSlab: 1, manifestTotal: -1, lastVisit: -1}
		for _, g := range a.grid[1:] {
			a.perSlab *= g
		}
		parent := path.Dir(n.Path)
		gk := parent + "\x00" + strconv.FormatInt(n.Array.Shape[0], 10) + "\x00" + strconv.FormatInt(n.Array.ChunkShape[0], 10)
		g := groups[gk]
		if g == nil {
			g = &lockGroup{nslabs: a.grid[0]}
			groups[gk] = g
			order = append(order, gk)
		}
		a.group = g
		a.idx = len(g.arrays)
		g.arrays = append(g.arrays, a)
		p.arrays[n] = a
		return nil
	})
	for _, gk := range order {
		p.groups = append(p.groups, groups[gk])
	}
	return stale
}

// slabReq is a slab to ask for at a class.
type slabReq struct {
	slab  int64
	class cache.Priority
}

// Access notes a lookup or open of the chunk at coords of arr (key as the
// reader named it) in store (the version the file system resolved it in)
// and asks the cache for what it predicts.
func (p *Planner) Access(store *store.Store, arr *zarr.Node, coords []int64, key string) {
	if p == nil || len(coords) == 0 || store == nil {
		return
	}
	p.mu.Lock()
	if store != p.store && !p.closed {
		// The store was refreshed: its arrays may have new shapes.
		stale := p.buildLocked(store)
		p.mu.Unlock()
		for _, f := range stale {
			f.Cancel()
		}
		p.mu.Lock()
	}
	a := p.arrays[arr]
	if a == nil || p.closed {
		p.mu.Unlock()
		return
	}
	if !a.altSep.Load() && strings.Contains(strings.TrimPrefix(key, arr.Path+"/"), "/") && !strings.Contains(arr.Array.ChunkKey(coords), "/") {
		a.altSep.Store(true)
	}
	g := a.group
	s := coords[0]
	a.lastVisit = g.visits
	if arrays, old := p.joinFillLocked(g, a); arrays != nil {
		p.mu.Unlock()
		p.restartFill(g, arrays, old)
		p.mu.Lock()
		if p.arrays[arr] != a || p.closed {
			p.mu.Unlock()
			return // rebuilt or closed meanwhile
		}
	}
	if g.isRecent(s) {
		g.trackLocked(s).mark(a, coords)
		p.mu.Unlock()
		return
	}
	plan, runPlan, reqs, startFill, cancelFill := p.visitLocked(g, s, a, coords)
	var fillArrays []*arrayInfo
	if startFill {
		fillArrays = g.activeArrays()
	}
	p.mu.Unlock()

	for _, f := range cancelFill {
		f.Cancel()
	}
	// Lockstep: the rest of this slab (or the chunk the reader reads), every
	// active array.
	p.askSlab(plan, s, cache.PriorityUrgent, key)
	for _, r := range reqs {
		p.askSlab(runPlan, r.slab, r.class, "")
	}
	if startFill {
		p.startFill(g, fillArrays)
	}
}

// ObserveSize records the size of an object of arr learnt at lookup.
func (p *Planner) ObserveSize(arr *zarr.Node, size int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	if a := p.arrays[arr]; a != nil {
		a.sizeSum += size
		a.sizeN++
	}
	p.mu.Unlock()
}

func (g *lockGroup) isRecent(s int64) bool {
	for i := int64(0); i < min(g.visits, recentSlabs); i++ {
		if g.recent[(g.visits-1-i)%recentSlabs] == s {
			return true
		}
	}
	return false
}

// activeArrays are the arrays of g read lately. At the first slab the
// reader visits, all of them are: that is the lockstep guess. From the
// second on, only those it read in the last inactiveAfter slabs.
func (g *lockGroup) activeArrays() []*arrayInfo {
	var out []*arrayInfo
	for _, a := range g.arrays {
		if g.isActive(a) {
			out = append(out, a)
		}
	}
	return out
}

func (g *lockGroup) isActive(a *arrayInfo) bool {
	return g.visits <= 1 || (a.lastVisit >= 0 && g.visits-a.lastVisit <= inactiveAfter)
}

// visitLocked takes a step of the reader to slab s, by a read of the chunk
// at coords of a: it learns from the slab that leaves the recent ones,
// updates the streams and says what to ask for of this slab (plan) and of
// each slab ahead (runPlan), which slabs to ask for ahead, and whether to
// start or cancel the background fill.
func (p *Planner) visitLocked(g *lockGroup, s int64, a *arrayInfo, coords []int64) (plan, runPlan []target, reqs []slabReq, startFill bool, cancelFill []FeedHandle) {
	i := g.visits % recentSlabs
	if g.visits >= recentSlabs {
		if e := g.findTrack(g.recent[i]); e != nil {
			e.fold(g.arrays) // g.recent[i] leaves the recent slabs
		}
	}
	g.recent[i] = s
	g.trackLocked(s).mark(a, coords)
	g.visits++
	a.lastVisit = g.visits
	plan, narrowed := p.planLocked(g, a, coords)
	p.stats.Narrowed += narrowed
	if g.visits%decayEvery == 0 {
		g.hits /= 2
		g.misses /= 2
	}
	first := len(g.streams) == 0
	st := g.match(s)
	switch {
	case st != nil:
		g.hits++
		p.stats.RunsConfirmed++
	case first:
		st = &stream{last: s, used: g.visits}
		if s == 0 {
			// Reading from the start is the usual beginning of a pass.
			st.stride, st.window = 1, 1
		}
		g.streams = append(g.streams, st)
	default:
		g.misses++
		p.stats.Misses++
		if mru := g.mostRecent(); mru != nil {
			mru.window = max(1, mru.window/2)
		}
		st = &stream{last: s, used: g.visits}
		if s == 0 {
			st.stride, st.window = 1, 1
		}
		g.addStream(st)
	}
	// A run of a reader that reads little of a slab predicts the chunk it
	// read only while it reads the same one slab after slab (a strip): the
	// accidental runs of a random reader would ask for chunks at coordinates
	// it does not come back to. A new stream counts as the same.
	runPlan = plan
	if st.at != nil && !slices.Equal(st.at, coords[1:]) {
		runPlan = wholeTargets(plan)
	}
	st.at = append(st.at[:0], coords[1:]...)
	if st.stride != 0 {
		reqs = p.runAhead(g, st, runPlan)
		p.stats.Narrowed += narrowed * int64(len(reqs))
	}

	switch {
	case g.fill != nil && g.hits >= 4 && g.hits > 2*g.misses:
		// The order turned out to be runs (interleaved readers, say): their
		// windows fetch what is needed.
		cancelFill = g.takeFillsLocked()
		p.stats.FillsCancelled++
	case g.fill == nil && !g.filled && g.visits >= 2 && st.stride == 0 && g.misses > 0:
		g.filled = true
		if p.fitsLocked(g) {
			startFill = true
			p.stats.FillsStarted++
		} else {
			p.stats.FillsTooLarge++
		}
	}
	return plan, runPlan, reqs, startFill, cancelFill
}

// match finds the stream that predicted slab s and advances it.
func (g *lockGroup) match(s int64) *stream {
	for _, st := range g.streams {
		d := s - st.last
		switch {
		case d == 0:
		case st.stride == 0:
			if d < -maxStride || d > maxStride {
				continue
			}
			// A second point: a tentative run, one step ahead; a unit step
			// (the common case) two.
			st.stride, st.window = d, 1
			if d == 1 {
				st.window = 2
			}
			st.issued = s
		case d == st.stride:
			st.window *= 2
		case d%st.stride == 0 && d/st.stride > 0 && d/st.stride <= st.window:
			// A skip ahead inside the window still follows the run.
		default:
			continue
		}
		st.last = s
		st.used = g.visits
		return st
	}
	return nil
}

func (g *lockGroup) mostRecent() *stream {
	var m *stream
	for _, st := range g.streams {
		if m == nil || st.used > m.used {
			m = st
		}
	}
	return m
}

func (g *lockGroup) addStream(st *stream) {
	if len(g.streams) < maxStreams {
		g.streams = append(g.streams, st)
		return
	}
	lru := 0
	for i, o := range g.streams {
		if o.used < g.streams[lru].used {
			lru = i
		}
	}
	g.streams[lru] = st
}

// runAhead caps st's window at the run budget (for what plan asks of each
// slab) and returns the slabs of the window not asked for yet.
func (p *Planner) runAhead(g *lockGroup, st *stream, plan []target) []slabReq {
	slabBytes := p.planBytesLocked(plan)
	maxWindow := int64(64)
	if slabBytes > 0 {
		maxWindow = max(1, min(1024, int64(float64(p.runBudget)/slabBytes)))
	}
	st.window = max(1, min(st.window, maxWindow))
	end := st.last + st.window*st.stride
	from := st.last + st.stride
	if (st.stride > 0 && st.issued >= from) || (st.stride < 0 && st.issued <= from) {
		from = st.issued + st.stride
	}
	var reqs []slabReq
	for s := from; (st.stride > 0 && s <= end) || (st.stride < 0 && s >= end); s += st.stride {
		if s < 0 || s >= g.nslabs {
			break
		}
		reqs = append(reqs, slabReq{slab: s, class: cache.PriorityHigh})
		st.issued = s
	}
	return reqs
}

// planBytesLocked estimates the bytes plan asks for of one slab.
func (p *Planner) planBytesLocked(plan []target) float64 {
	var total float64
	for _, t := range plan {
		n := float64(t.a.perSlab)
		if t.at != nil {
			n = 1
		}
		total += p.chunkEstimateLocked(t.a) * n
	}
	return total
}

// chunkEstimateLocked is an array's average object size: observed, or the
// group's, or a decoded upper bound.
func (p *Planner) chunkEstimateLocked(a *arrayInfo) float64 {
	if avg := a.avgSize(); avg > 0 {
		return avg
	}
	if a.manifestTotal > 0 {
		return float64(a.manifestTotal) / float64(a.node.Array.NumChunks())
	}
	n := float64(itemSize(a.node.Array.DataType))
	for _, c := range a.node.Array.ChunkShape {
		n *= float64(c)
	}
	return n
}

// askSlab asks the cache at class for what plan predicts of slab s, except
// skip (the chunk the reader is asking for itself).
func (p *Planner) askSlab(plan []target, s int64, class cache.Priority, skip string) {
	for _, t := range plan {
		a := t.a
		if s >= a.grid[0] {
			continue
		}
		p.mu.Lock()
		est := int64(p.chunkEstimateLocked(a))
		p.mu.Unlock()
		if t.at != nil {
			coords := append([]int64{s}, t.at[1:]...)
			if key := a.chunkKey(coords); key != "" && key != skip {
				p.ask(key, est, class)
			}
			continue
		}
		n := 0
		forSlabChunks(a, s, func(coords []int64) bool {
			key := a.chunkKey(coords)
			if key != "" && key != skip {
				p.ask(key, est, class)
			}
			n++
			return n < maxChunksPerSlab
		})
	}
}

// ask asks the cache for key (of about est bytes) at class; with a
// manifest, only keys that exist, at their version and size.
func (p *Planner) ask(key string, est int64, class cache.Priority) {
	w, ok := p.want(key, est)
	if !ok {
		return // a fill_value chunk: nothing stored
	}
	if p.sink.Prefetch(w, class) == cache.PrefetchQueued {
		p.mu.Lock()
		switch class {
		case cache.PriorityUrgent:
			p.stats.LockstepRequests++
		case cache.PriorityHigh:
			p.stats.RunRequests++
		}
		p.mu.Unlock()
	}
}

// want describes key for the cache: from the manifest when there is one
// (false if it lists no such key), else with the estimated size.
func (p *Planner) want(key string, est int64) (cache.Want, bool) {
	m := p.manifest.Load()
	if m == nil {
		return cache.Want{Key: key, Size: est}, true
	}
	size, version, ok := m.Lookup(key)
	return cache.Want{Key: key, Version: version, Size: size}, ok
}

// forSlabChunks calls fn with the coordinates of each chunk of slab s of a,
// in C order, until fn returns false.
func forSlabChunks(a *arrayInfo, s int64, fn func([]int64) bool) {
	coords := make([]int64, len(a.grid))
	coords[0] = s
	for {
		if !fn(append([]int64(nil), coords...)) {
			return
		}
		i := len(coords) - 1
		for ; i >= 1; i-- {
			coords[i]++
			if coords[i] < a.grid[i] {
				break
			}
			coords[i] = 0
		}
		if i < 1 {
			return
		}
	}
}

// WarmSmallArrays asks for every chunk of the store's small arrays
// (coordinate variables that xarray reads whole when it opens a Dataset),
// at most smallWarmMax of them.
func (p *Planner) WarmSmallArrays() {
	if p == nil {
		return
	}
	var keys []string
	var est []int64
	p.mu.Lock()
	for _, a := range p.arrays {
		n := a.node.Array.NumChunks()
		if n > smallArrayChunks {
			continue
		}
		bytes := float64(itemSize(a.node.Array.DataType))
		for _, d := range a.node.Array.Shape {
			bytes *= float64(d)
		}
		if bytes > smallArrayBytes {
			continue
		}
		for s := int64(0); s < a.grid[0]; s++ {
			forSlabChunks(a, s, func(c []int64) bool {
				keys = append(keys, a.chunkKey(c))
				est = append(est, int64(p.chunkEstimateLocked(a)))
				return len(keys) < smallWarmMax
			})
		}
		if len(keys) >= smallWarmMax {
			break
		}
	}
	p.mu.Unlock()
	for i, k := range keys {
		p.ask(k, est[i], cache.PriorityUrgent)
	}
}

// Close stops the fills.
func (p *Planner) Close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.StopFills()
}

// StopFills cancels the background fills in progress (an announced order
// takes their place); later accesses may start new ones.
func (p *Planner) StopFills() {
	if p == nil {
		return
	}
	p.mu.Lock()
	var fills []FeedHandle
	for _, g := range p.groups {
		fills = append(fills, g.takeFillsLocked()...)
	}
	p.mu.Unlock()
	for _, f := range fills {
		f.Cancel()
	}
}

// Stats returns the planner's counters.
func (p *Planner) Stats() Stats {
	if p == nil {
		return Stats{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// ChunkEstimate is the planner's estimate of an object of arr (observed
// average, or the decoded size of a chunk); without a planner, the decoded
// size.
func (p *Planner) ChunkEstimate(arr *zarr.Node) float64 {
	if p != nil {
		p.mu.Lock()
		defer p.mu.Unlock()
		if a := p.arrays[arr]; a != nil {
			return p.chunkEstimateLocked(a)
		}
	}
	n := float64(itemSize(arr.Array.DataType))
	for _, c := range arr.Array.ChunkShape {
		n *= float64(c)
	}
	return n
}
