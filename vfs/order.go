package vfs

// The read order a training script announces (`zarrfs prefetch --order -`):
// its sampler knows, at the start of an epoch, exactly which samples it will
// read and in which order. The order becomes one background feed of the
// cache that fetches the chunks in exactly that order; the cache's room for
// unread prefetched data bounds how far it runs ahead, and its protection
// of unread prefetched entries keeps what is still to be read from being
// evicted by what comes later. A read that arrives before its turn is a
// demand fetch and goes first, as always.
//
// While the reader follows the order the planner is not consulted for the
// keys in it (the order is better than any guess) and its background fills
// are stopped; reads of keys outside the order still go to the planner.
// When the reader leaves the order — a run of reads that are not in it, or
// far ahead of where the reader is — the order's feed is cancelled and the
// planner takes over again. A new order replaces the previous one.
//
// Locking: orderState.mu guards which order is current; order.mu guards
// one order's reading position. Neither is held while calling the cache or
// the planner, and order.mu is never taken with orderState.mu held.

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/vfs/store"
	"github.com/zarrfs/zarrfs/zarr"
)

// Order limits and the rule for leaving an order.
const (
	// MaxOrderKeys bounds the chunk keys of one order: a few million keys
	// cost a few hundred MB of daemon memory.
	MaxOrderKeys = 4 << 20
	// orderWindow is how far ahead of the first unread key of the order a
	// read may land and still count as following it: readers with workers
	// (a DataLoader) have several batches in flight.
	orderWindow = 1024
	// orderLeaveAfter consecutive reads off the order mean the reader left it.
	orderLeaveAfter = 32
)

// ErrOrderTooLong: an order names more chunks than MaxOrderKeys.
var ErrOrderTooLong = errors.New("order too long")

// OrderTarget is one step of an announced order: an array (or a group, or a
// chunk key) and, for an array, an optional range of indices along its
// first dimension [Start, Stop) — sample indices, as a sampler yields them,
// not chunk indices.
type OrderTarget struct {
	Path string    `json:"path"`
	Rows *[2]int64 `json:"rows,omitempty"`
}

// Order states.
const (
	OrderFollowing = "following" // the reader is on the order
	OrderFinished  = "finished"  // every chunk of the order was read
	OrderLeft      = "left"      // the reader left the order; the planner took over
	OrderReplaced  = "replaced"  // a newer order replaced it
	OrderClosed    = "closed"    // the mount is going away
)

// OrderProgress is the state of the current (or last) announced order.
type OrderProgress struct {
	ID      int    `json:"id"`
	State   string `json:"state"`
	Targets int    `json:"targets"` // lines of the order
	Keys    int    `json:"keys"`    // distinct chunk keys they touch
	Bytes   int64  `json:"bytes"`   // their total size: exact with a manifest, else an estimate
	// TargetsRead is how many targets the reader has read, in order;
	// TargetsFetched how many the feed has brought in (in order, counted
	// by bytes: the feed works strictly along the order).
	TargetsRead    int     `json:"targets_read"`
	TargetsFetched int     `json:"targets_fetched"`
	KeysRead       int     `json:"keys_read"`
	AheadTargets   int     `json:"ahead_targets"` // TargetsFetched - TargetsRead, at least 0
	AheadBytes     int64   `json:"ahead_bytes"`   // bytes fetched and not read yet
	OffOrderReads  int64   `json:"off_order_reads"`
	Elapsed        float64 `json:"elapsed_s"`
	cache.FeedProgress
}

// order is one announced order.
type order struct {
	id      int
	started time.Time
	targets int
	keys    []string
	// targetOf[i] is the target of keys[i]; cumBytes[i] the size of keys[0..i].
	targetOf []int32
	cumBytes []int64
	pos      map[string]int // key → its place in keys
	feed     *cache.Feed

	mu      sync.Mutex
	state   string
	read    []bool
	next    int // first unread place
	nRead   int
	off     int // consecutive reads off the order
	offRead int64
	// recent are the places of the last keys read on the order (-1: none).
	recent [64]int
}

// orderState is the FS's current order.
type orderState struct {
	mu     sync.Mutex
	cur    *order
	lastID int
}

// SetOrder announces the order of the coming reads and starts fetching it;
// it replaces the previous order. It returns once the feed is started.
func (f *FS) SetOrder(targets []OrderTarget) (OrderProgress, error) {
	v := f.current()
	o, err := buildOrder(v.Store, targets, f.estimateChunk)
	if err != nil {
		return OrderProgress{}, err
	}
	// The order is better than any guess: the planner's fills would only
	// compete with it for the link.
	f.planner.StopFills()
	// Ahead of other feeds (a fill of the whole store started at mount
	// time, explicit prefetches): the reader needs these chunks first.
	o.feed = f.cache.AddFeedAt(cache.PriorityHigh, f.ranged.expandFeed(f.arrayOf, o.wants(v.Store), nil))
	f.orders.mu.Lock()
	prev := f.orders.cur
	f.orders.lastID++
	o.id = f.orders.lastID
	f.orders.cur = o
	f.orders.mu.Unlock()
	if prev != nil {
		prev.end(OrderReplaced)
	}
	f.log.Info("order announced", "order", o.id, "targets", o.targets, "keys", len(o.keys), "bytes", o.totalBytes())
	return o.progress(), nil
}

// OrderStatus reports the current or last order; false if none was announced.
func (f *FS) OrderStatus() (OrderProgress, bool) {
	f.orders.mu.Lock()
	o := f.orders.cur
	f.orders.mu.Unlock()
	if o == nil {
		return OrderProgress{}, false
	}
	return o.progress(), true
}

// following reports whether a read of key is the reader following the
// current order, advancing the order's position; false sends the read to
// the planner.
func (f *FS) following(key string) bool {
	f.orders.mu.Lock()
	o := f.orders.cur
	f.orders.mu.Unlock()
	if o == nil {
		return false
	}
	on, left := o.observe(key)
	if left {
		f.log.Info("the reader left the announced order; readahead planner takes over", "order", o.id, "targets_read", o.progress().TargetsRead)
		o.feed.Cancel()
	}
	return on
}

// closeOrder cancels the current order's feed (at unmount).
func (f *FS) closeOrder() {
	f.orders.mu.Lock()
	o := f.orders.cur
	f.orders.mu.Unlock()
	if o != nil {
		o.end(OrderClosed)
	}
}

// buildOrder resolves targets into the order's distinct chunk keys.
func buildOrder(st *store.Store, targets []OrderTarget, estimate func(*zarr.Node) int64) (*order, error) {
	o := &order{started: time.Now(), targets: len(targets), pos: map[string]int{}, state: OrderFollowing}
	for ti, t := range targets {
		spans, err := orderSpans(st, t)
		if err != nil {
			return nil, fmt.Errorf("order line %d: %w", ti+1, err)
		}
		for _, sp := range spans {
			est := estimate(sp.arr)
			var tooLong bool
			sp.forEach(func(c []int64) bool {
				key := path.Join(sp.arr.Path, sp.arr.Array.ChunkKey(c))
				if _, dup := o.pos[key]; dup {
					return true
				}
				size := est
				if m := st.Manifest; m != nil {
					s, _, ok := m.Lookup(key)
					if !ok {
						return true // a fill_value chunk: nothing to fetch or read
					}
					size = s
				}
				if len(o.keys) >= MaxOrderKeys {
					tooLong = true
					return false
				}
				o.pos[key] = len(o.keys)
				o.keys = append(o.keys, key)
				o.targetOf = append(o.targetOf, int32(ti))
				o.cumBytes = append(o.cumBytes, o.totalBytes()+size)
				return true
			})
			if tooLong {
				return nil, fmt.Errorf("%w: more than %d chunks; announce one epoch at a time", ErrOrderTooLong, MaxOrderKeys)
			}
		}
	}
	o.read = make([]bool, len(o.keys))
	for i := range o.recent {
		o.recent[i] = -1
	}
	return o, nil
}

// orderSpans turns one target into spans: rows along the first dimension
// become the chunk indices that hold them.
func orderSpans(st *store.Store, t OrderTarget) ([]prefetchSpan, error) {
	if t.Rows == nil {
		return resolveTargets(st, []PrefetchTarget{{Path: t.Path}})
	}
	lo, hi := t.Rows[0], t.Rows[1]
	n := st.Tree.Lookup(storePath(t.Path))
	if n == nil || n.Kind != zarr.KindArray || n.Array == nil {
		return nil, fmt.Errorf("%w: %s (rows [%d:%d] need an array)", ErrNoSuchPath, displayStorePath(t.Path), lo, hi)
	}
	a := n.Array
	if len(a.Shape) == 0 || len(a.ChunkShape) == 0 || a.ChunkShape[0] <= 0 {
		return nil, fmt.Errorf("%w: %s has no first dimension to take rows of", ErrBadRange, n.Path)
	}
	if lo < 0 || hi <= lo || lo >= a.Shape[0] {
		return nil, fmt.Errorf("%w: %s has rows 0..%d, got %d:%d", ErrBadRange, n.Path, a.Shape[0]-1, lo, hi)
	}
	c := a.ChunkShape[0]
	sp, err := arraySpan(n, [][2]int64{{lo / c, (min(hi, a.Shape[0]) + c - 1) / c}})
	if err != nil {
		return nil, err
	}
	return []prefetchSpan{sp}, nil
}

func (o *order) totalBytes() int64 {
	if len(o.cumBytes) == 0 {
		return 0
	}
	return o.cumBytes[len(o.cumBytes)-1]
}

// wants hands the order's keys to the cache, in order, with the manifest's
// versions and sizes when there is one. It is called from the cache's
// dispatcher only.
func (o *order) wants(st *store.Store) func() (cache.Want, bool) {
	i := 0
	return func() (cache.Want, bool) {
		for i < len(o.keys) {
			key := o.keys[i]
			i++
			o.mu.Lock()
			done := o.read[i-1]
			o.mu.Unlock()
			if done {
				continue // read (so fetched) before the feed got there
			}
			w := cache.Want{Key: key, Size: o.cumBytes[i-1] - o.bytesBefore(i-1)}
			if m := st.Manifest; m != nil {
				_, w.Version, _ = m.Lookup(key)
			}
			return w, true
		}
		return cache.Want{}, false
	}
}

func (o *order) bytesBefore(i int) int64 {
	if i == 0 {
		return 0
	}
	return o.cumBytes[i-1]
}

// observe notes a read of key: on reports whether it follows the order,
// left whether this read made the reader leave it.
func (o *order) observe(key string) (on, left bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.state != OrderFollowing {
		return false, false
	}
	p, in := o.pos[key]
	if in && o.read[p] && slices.Contains(o.recent[:], p) {
		// Read again just after its first read (a lookup, then the open;
		// two batches in one chunk): neither on nor off the order.
		return true, false
	}
	if in && !o.read[p] && p < o.next+orderWindow {
		o.read[p] = true
		o.recent[o.nRead%len(o.recent)] = p
		o.nRead++
		o.off = 0
		for o.next < len(o.read) && o.read[o.next] {
			o.next++
		}
		if o.next == len(o.read) {
			o.state = OrderFinished
		}
		return true, false
	}
	// Not in the order, read again (a new epoch without a new order), or far
	// ahead of the reader's place.
	o.off++
	o.offRead++
	if o.off >= orderLeaveAfter {
		o.state = OrderLeft
		return false, true
	}
	return false, false
}

// end stops o with state, if it is still being followed.
func (o *order) end(state string) {
	o.mu.Lock()
	if o.state == OrderFollowing {
		o.state = state
	}
	o.mu.Unlock()
	o.feed.Cancel()
}

func (o *order) progress() OrderProgress {
	p := OrderProgress{ID: o.id, Targets: o.targets, Keys: len(o.keys), Bytes: o.totalBytes(),
		Elapsed: time.Since(o.started).Seconds()}
	if o.feed != nil {
		p.FeedProgress = o.feed.Progress()
	}
	o.mu.Lock()
	p.State = o.state
	p.KeysRead = o.nRead
	p.OffOrderReads = o.offRead
	next := o.next
	o.mu.Unlock()
	if next > 0 {
		p.TargetsRead = int(o.targetOf[next-1]) + 1
	}
	// The feed works along the order, so the bytes it has done mark how
	// far it has got.
	fetched := sort.Search(len(o.cumBytes), func(i int) bool { return o.cumBytes[i] > p.DoneBytes })
	if fetched > 0 {
		p.TargetsFetched = int(o.targetOf[fetched-1]) + 1
	}
	if fetched == len(o.keys) {
		p.TargetsFetched = o.targets
	}
	if next == len(o.keys) {
		p.TargetsRead = o.targets
	}
	p.AheadTargets = max(0, p.TargetsFetched-p.TargetsRead)
	p.AheadBytes = max(0, p.DoneBytes-o.bytesBefore(next))
	return p
}

// estimateChunk is the size to expect of one object of arr.
func (f *FS) estimateChunk(arr *zarr.Node) int64 { return int64(f.planner.ChunkEstimate(arr)) }
