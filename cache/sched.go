package cache

// Fetch scheduling: every fetch has a Priority. Demand fetches (a reader is
// waiting) start at once; prefetches wait in a queue per priority and start,
// highest priority first, while the bytes requested and not yet received
// stay under what fills the link: twice the bandwidth-delay product measured
// from the fetches' throughput and time to first byte (mayStartLocked), and
// at most maxLimit requests. PriorityUrgent skips the bytes check. Feeds
// supply low-priority work, pulled only as slots free up, so a store of
// millions of objects never sits in memory as a queue. Every prefetch
// streams into its cache file; no prefetched object is held in RAM.
//
// A prefetch is a flight like any other (flight.go): a demand Open of a key
// that is queued or being prefetched joins that flight, promoting it to
// demand, and never starts a second request. A prefetched entry that has not
// been read yet holds a protection pin, so newer prefetches cannot evict it;
// demand placements may release the oldest protections when nothing else is
// left to evict. The bytes of unread prefetched entries are bounded
// (prefetchRoomLocked) so prefetches never crowd out the reader's own data.
//
// The scheduler's state lives in its own types: scheduler (the Cache's
// queues, counters and link measurement), flightSched (a flight's priority,
// queue state and prefetch bookkeeping) and unreadPrefetch (an entry a
// prefetch placed that no Open has read yet). cache.go and flight.go reach
// it only through the methods here.
//
// Locking: all of it is guarded by Cache.mu, like the rest of the Cache
// (see cache.go); the byte and stall counters a fetch or an Open updates
// without the lock are atomics. The dispatcher goroutine calls Feed
// functions without holding any lock, because feeds belong to callers that
// take their own locks and call back into the Cache. Want.Done callbacks
// are likewise collected under Cache.mu and called after it is released
// (runDones), since they belong to callers too.

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"sync/atomic"
	"time"
)

// Priority orders fetches: a lower value starts first. Each prefetch
// priority has a FIFO queue; a queue is served only when every queue above
// it is empty, so a higher-priority prefetch never waits behind a lower one.
type Priority int

const (
	// PriorityDemand is a fetch a reader waits for. It starts at once,
	// outside the queues, and counts against no limit. Prefetch does not
	// take it: a prefetch becomes demand when an Open joins it.
	PriorityDemand Priority = iota
	// PriorityUrgent prefetches start first, and are held back only by the
	// limit on requests in flight, not by the link budget (the bytes
	// requested and not yet received): for what a reader is expected to
	// ask for next, which is worth a request even while the link is busy.
	PriorityUrgent
	// PriorityHigh prefetches start after urgent ones, while the link
	// budget has room.
	PriorityHigh
	// PriorityLow prefetches start last, within the link budget. Feeds
	// fetch at this priority, and are pulled only while no low-priority
	// prefetch waits in its queue.
	PriorityLow
	numPriorities
)

func (p Priority) String() string {
	switch p {
	case PriorityDemand:
		return "demand"
	case PriorityUrgent:
		return "urgent"
	case PriorityHigh:
		return "high"
	case PriorityLow:
		return "low"
	}
	return fmt.Sprintf("Priority(%d)", int(p))
}

// PrefetchResult says what Prefetch did.
type PrefetchResult int

const (
	// PrefetchQueued: a fetch was queued (or started).
	PrefetchQueued PrefetchResult = iota
	// PrefetchPresent: the key is cached, or already being fetched or queued.
	PrefetchPresent
	// PrefetchMissing: the origin reported the key missing earlier.
	PrefetchMissing
	// PrefetchRefused: no room for more unread prefetched data, the queue
	// is full, the range is being fetched at another version, the cache is
	// closed, or the Want is invalid (its Done says which).
	PrefetchRefused
)

// ErrPrefetchRefused is the outcome (Want.Done) of a Prefetch refused for
// want of room or queue space, or because the range is being fetched at
// another version right now. Asking again later may succeed.
var ErrPrefetchRefused = errors.New("prefetch refused: no room for more unread prefetched data, or the queue is full")

// errTooLarge refuses a prefetch for good: the object is too large for the
// cache ever to keep, so a Feed does not offer it again.
var errTooLarge = fmt.Errorf("%w: larger than the cache can keep", ErrPrefetchRefused)

// ErrNotKept is the outcome (Want.Done) of a prefetch whose object was
// fetched but could not be kept on disk: no room (the rest is pinned, the
// free-space floor, an object larger than the budget) or the cache
// directory cannot take it.
var ErrNotKept = errors.New("fetched but not kept in the cache: no room, or the cache directory cannot take it")

// ErrFeedCancelled is the outcome (Want.Done) of a Want a Feed handed out
// that was not fetched because the Feed was cancelled.
var ErrFeedCancelled = errors.New("prefetch feed cancelled")

// Scheduler limits.
const (
	initialLimit = 8  // requests in flight before the link is measured
	maxLimit     = 48 // well under remote's connection cap of 64
	// initialBytes: before the link is measured, more than initialLimit
	// requests may start while those in flight are expected to bring less
	// than this (counted with the sizes the prefetches were given, often
	// the uncompressed size, up to twice the real one). initialLimit
	// requests for 46 KB objects at 40 ms are 9 MB/s, the link measures at
	// that, and the budget it sets never lets more requests start: an
	// announced order of 2,214 such files ran at 9 MB/s of a 47 MB/s link.
	initialBytes = 4 << 20
	startRoom    = 256 << 20
	// maxQueued bounds the flights waiting for a slot; prefetches past it
	// are refused (ErrPrefetchRefused: the caller may ask again later).
	maxQueued = 4096
	// latencySamples and rateSamples are the windows of the latency minimum
	// and the throughput maximum.
	latencySamples = 16
	rateSamples    = 8
	ratePeriod     = 200 * time.Millisecond
)

// PrefetchStats are the prefetcher's counters since New and its current state.
type PrefetchStats struct {
	Queued        int     `json:"queued"`             // prefetches waiting for a slot
	InFlight      int     `json:"in_flight"`          // requests in flight, all priorities
	Limit         int     `json:"limit"`              // current limit of requests in flight
	PipeBytes     int64   `json:"pipe_bytes"`         // measured bandwidth-delay product
	ThroughputBps float64 `json:"throughput_bps"`     // measured, bytes/s (recent maximum)
	LatencyMs     float64 `json:"latency_ms"`         // measured time to first byte (recent minimum)
	Requests      int64   `json:"requests"`           // prefetch requests started
	Bytes         int64   `json:"bytes"`              // bytes fetched by prefetches
	UsedBytes     int64   `json:"used_bytes"`         // prefetched, then read from disk
	LateBytes     int64   `json:"late_bytes"`         // prefetched, read while still arriving (a shorter wait)
	UnreadBytes   int64   `json:"unread_bytes"`       // prefetched, on disk, not read yet
	WastedBytes   int64   `json:"wasted_bytes"`       // prefetched, then evicted or not kept, never read
	Refused       int64   `json:"refused"`            // prefetches refused for room or queue length
	Stalls        int64   `json:"stalls"`             // Opens that waited for a fetch
	StallTime     int64   `json:"stall_ns"`           // total time Opens waited for fetches
	DemandWaitMax int64   `json:"stall_max_ns"`       // longest single wait
	Feeds         int     `json:"feeds"`              // background feeds active
	Promoted      int64   `json:"promoted_to_demand"` // queued or running prefetches a reader caught up with
}

// scheduler is the Cache's fetch scheduling state, guarded by Cache.mu
// (the atomics excepted).
type scheduler struct {
	queues  [numPriorities][]*flight // FIFO; stale entries (promoted, moved up) are skipped
	queued  int                      // flights waiting in the queues
	running [numPriorities]int
	active  map[*flight]struct{} // flights making a request
	feeds   []*Feed
	feedRR  int

	started bool          // the dispatcher goroutine runs
	kick    chan struct{} // wakes the dispatcher; capacity 1

	unread      list.List // entries holding a protection pin (unreadPrefetch), oldest first
	unreadBytes int64     // bytes of the entries in unread

	ctl   controller
	stats PrefetchStats
	// fixedLimit, when > 0, replaces the controller's limit (tests).
	fixedLimit int
	// startBytes is initialBytes for a cache of at least startRoom bytes,
	// else 0: a small cache's room for unread prefetched data is checked
	// with a guessed size per request in flight, which a burst of
	// requests before the first measurement could overrun.
	startBytes float64

	delivered atomic.Int64 // bytes written by all fetches, for the throughput
	stalls    atomic.Int64
	stallNs   atomic.Int64
	stallMax  atomic.Int64
}

// flightSched is the scheduler's part of a flight, guarded by Cache.mu
// (recv is atomic: the fetch counts into it without the lock).
type flightSched struct {
	prio     Priority
	queued   bool          // waiting in queues[prio]: no request made yet
	prefetch bool          // made by Prefetch or a Feed, before any reader asked
	joined   bool          // a reader waited for it while it was a prefetch
	feeds    []*Feed       // feeds that count it
	dones    []func(error) // the Done callbacks of the Wants waiting for its outcome
	hint     int64         // expected size, 0 unknown
	recv     atomic.Int64  // bytes its request has delivered so far
}

// unreadPrefetch is the scheduler's part of an entry a prefetch placed and
// no Open has read yet (entry.unread), guarded by Cache.mu. While elem is
// set the entry holds a protection pin (one of entry.pins) and is in
// scheduler.unread, so newer prefetches cannot evict it;
// unprotectOldestLocked may lift the pin earlier to make room for a
// reader's data, and the entry then stays an unread prefetch only for the
// counters (UsedBytes, WastedBytes).
type unreadPrefetch struct {
	elem *list.Element // in scheduler.unread while protected; nil after
}

// controller measures the link: the time to first byte (a recent minimum,
// which is the round trip without queueing), the throughput (a recent
// maximum) and the average object size. Their product, the bandwidth-delay
// product, is what must be requested and not yet received for the link
// never to wait (mayStartLocked).
type controller struct {
	lat     [latencySamples]time.Duration
	nlat    int
	rate    [rateSamples]float64
	nrate   int
	avgSize float64

	lastSample    time.Time
	lastDelivered int64
}

func (k *controller) minLatency() time.Duration {
	n := min(k.nlat, latencySamples)
	if n == 0 {
		return 0
	}
	m := k.lat[0]
	for _, l := range k.lat[1:n] {
		m = min(m, l)
	}
	return m
}

func (k *controller) maxRate() float64 {
	var m float64
	for _, r := range k.rate[:min(k.nrate, rateSamples)] {
		m = max(m, r)
	}
	return m
}

// observe takes one finished fetch: its time to first byte and size, and
// the bytes all fetches delivered so far.
func (k *controller) observe(now time.Time, ttfb time.Duration, size, delivered int64) {
	if ttfb > 0 {
		k.lat[k.nlat%latencySamples] = ttfb
		k.nlat++
	}
	if size > 0 {
		if k.avgSize == 0 {
			k.avgSize = float64(size)
		} else {
			k.avgSize += (float64(size) - k.avgSize) / 8
		}
	}
	if k.lastSample.IsZero() {
		k.lastSample, k.lastDelivered = now, delivered
	} else if dt := now.Sub(k.lastSample); dt >= ratePeriod {
		k.rate[k.nrate%rateSamples] = float64(delivered-k.lastDelivered) / dt.Seconds()
		k.nrate++
		k.lastSample, k.lastDelivered = now, delivered
	}
}

// bdp is the bandwidth-delay product in bytes: what must be requested and
// not yet received for the link never to wait for a first byte. 0 until
// measured.
func (k *controller) bdp() float64 {
	return k.minLatency().Seconds() * k.maxRate()
}

// idle forgets the rate window's start, so a pause between bursts does not
// count as a slow link.
func (k *controller) idle() { k.lastSample = time.Time{} }

// Want names an object, or a byte range of one, to prefetch.
type Want struct {
	Key     string
	Version string // the manifest's version (or strong ETag); "" when unknown
	// Size is the expected size (exact from a manifest, or an estimate);
	// 0 when unknown. The scheduler keeps about two bandwidth-delay
	// products of bytes requested and not yet received, counted with it.
	Size int64
	// Off, Len: when Len > 0, only bytes [Off, Off+Len) of Key at Version
	// (required), cached as the range entry OpenRange uses. Size is then
	// ignored (Len is the size). Off without Len is invalid.
	Off, Len int64
	// Done, when not nil, is called exactly once, from a goroutine holding
	// no cache lock, when the prefetch has an outcome: nil once the object
	// (range) is on disk or was already cached; an error when it failed
	// (the fetch's error, wrapped), was refused (ErrPrefetchRefused; also
	// ErrNoRanges or a message for an invalid Want), is remembered missing
	// (fs.ErrNotExist), was fetched but not kept (ErrNotKept), or the cache
	// closed (ErrClosed). It may run before Prefetch returns (already
	// cached, refused), but never while Cache.mu is held. A Want handed out
	// by a Feed is the same, except that a refusal for room is not an
	// outcome (the Feed offers it again later) and a Want the Feed held back
	// when it is cancelled gets ErrFeedCancelled. Close returns only after
	// every Done of its fetches has returned, so Done must not call Close.
	Done func(error)
}

// span is the byte range the Want asks for (zero: the whole object).
func (w *Want) span() span {
	if w.Len > 0 {
		return span{off: w.Off, n: w.Len}
	}
	return span{}
}

// doneCall is a Want.Done call to make once Cache.mu is released.
type doneCall struct {
	done func(error)
	err  error
}

// runDones calls what calls collected. Never with Cache.mu held.
func runDones(calls []doneCall) {
	for _, d := range calls {
		if d.done != nil {
			d.done(d.err)
		}
	}
}

// outcomeLocked is the Done outcome of a flight that has ended.
func (fl *flight) outcomeLocked() error {
	switch {
	case fl.err != nil:
		return fl.err
	case fl.res != nil && fl.res.entry == nil:
		return fmt.Errorf("fetch %s: %w", fl.rng.describe(fl.key), ErrNotKept)
	}
	return nil // on disk, or found current by a revalidation
}

// doneCallsLocked takes the Done calls of an ended flight.
func (fl *flight) doneCallsLocked() []doneCall {
	dones := fl.sched.dones
	if len(dones) == 0 {
		return nil
	}
	err := fl.outcomeLocked()
	calls := make([]doneCall, len(dones))
	for i, d := range dones {
		calls[i] = doneCall{d, err}
	}
	fl.sched.dones = nil
	return calls
}

// unclaimedLocked says whether fl is a prefetch no reader waits for now.
// Such a fetch is not held in memory when the disk cannot take it
// (prefetches never fill RAM), and the entry it places holds a protection
// pin until its first read (protectPin).
func (fl *flight) unclaimedLocked() bool {
	return fl.sched.prefetch && fl.waiters == 0
}

// readerJoinsLocked notes that a reader waits for fl, a flight another
// caller started. It reports whether fl is a prefetch no reader had joined
// before: the Open's reuse distance is then the flight's, and its bytes
// count as late (PrefetchStats.LateBytes).
func (fl *flight) readerJoinsLocked() bool {
	if !fl.sched.prefetch || fl.sched.joined {
		return false
	}
	fl.sched.joined = true
	return true
}

// Prefetch asks for w to be fetched into the cache at priority prio (not
// PriorityDemand; an invalid one is taken as PriorityLow), unless it is
// cached, already in flight or queued, remembered missing, or there is no
// room for more unread prefetched data. A key (range) queued at a lower
// priority moves up. Prefetch never blocks and never waits for the fetch;
// w.Done tells the outcome.
func (c *Cache) Prefetch(w Want, prio Priority) PrefetchResult {
	if prio <= PriorityDemand || prio >= numPriorities {
		prio = PriorityLow
	}
	c.mu.Lock()
	res, size, err := c.prefetchLocked(w, prio, nil)
	if res == PrefetchQueued {
		c.dispatchLocked()
	}
	c.mu.Unlock()
	if !attached(res, size) && w.Done != nil {
		w.Done(err)
	}
	return res
}

// attached says whether prefetchLocked, returning res and size, handed the
// Want's Done to a flight, which calls it when it ends.
func attached(res PrefetchResult, size int64) bool {
	return res == PrefetchQueued || res == PrefetchPresent && size < 0
}

// prefetchLocked is Prefetch under Cache.mu; a fetch it queues or joins is
// counted in feed f (if not nil), and gets w.Done. For PrefetchPresent, size
// is the cached object's size, or -1 when the key is in flight. Unless the
// Done was handed to a flight (attached), err is the outcome for it: nil
// when cached, errors.Is ErrPrefetchRefused for a refusal that may pass
// later, another error for a Want that can never be fetched.
func (c *Cache) prefetchLocked(w Want, prio Priority, f *Feed) (PrefetchResult, int64, error) {
	key, version, rng := w.Key, w.Version, w.span()
	if c.closed {
		return PrefetchRefused, 0, fmt.Errorf("prefetch %s: %w", rng.describe(key), ErrClosed)
	}
	switch {
	case w.Len < 0 || w.Len == 0 && w.Off != 0:
		return PrefetchRefused, 0, fmt.Errorf("prefetch %q: offset %d and length %d: a range needs a length > 0", key, w.Off, w.Len)
	case rng.ranged():
		if err := c.checkRange(key, version, rng); err != nil {
			return PrefetchRefused, 0, fmt.Errorf("prefetch: %w", err)
		}
	}
	if version == "" {
		if _, ok := c.notFound.Peek(key); ok {
			return PrefetchMissing, 0, fmt.Errorf("prefetch %q: %w (remembered from an earlier fetch)", key, fs.ErrNotExist)
		}
	}
	id, sum := entryIDOf(c.nsHash, key, rng)
	if e := c.index[id]; e != nil && (version == "" || e.version == version) {
		return PrefetchPresent, e.dataLen, nil
	}
	s := &c.sched
	if fl := c.flights[id]; fl != nil {
		if rng.ranged() && fl.version != version {
			s.stats.Refused++
			return PrefetchRefused, 0, fmt.Errorf("prefetch %s: being fetched at version %s, not %s: %w",
				rng.describe(key), fl.version, version, ErrPrefetchRefused)
		}
		if fl.sched.queued && prio < fl.sched.prio {
			fl.sched.prio = prio
			s.queues[prio] = append(s.queues[prio], fl)
		}
		if f != nil {
			fl.sched.feeds = append(fl.sched.feeds, f)
			f.outstanding++
		}
		if w.Done != nil {
			fl.sched.dones = append(fl.sched.dones, w.Done)
		}
		return PrefetchPresent, -1, nil
	}
	hint := w.Size
	if rng.ranged() {
		hint = rng.n
	}
	if !c.keepableLocked(hint) {
		s.stats.Refused++
		return PrefetchRefused, 0, fmt.Errorf("prefetch %s of %d bytes: %w", rng.describe(key), hint, errTooLarge)
	}
	if s.queued >= maxQueued || !c.prefetchRoomLocked() {
		s.stats.Refused++
		return PrefetchRefused, 0, fmt.Errorf("prefetch %s: %w", rng.describe(key), ErrPrefetchRefused)
	}
	// No reader's Open yet: the first one to join gives its reuse distance.
	fl := &flight{done: make(chan struct{}), id: id, sum: sum, key: key, reuse: math.MaxUint32}
	if rng.ranged() {
		fl.rng, fl.version = rng, version
	}
	fl.sched.prio, fl.sched.queued, fl.sched.prefetch, fl.sched.hint = prio, true, true, hint
	if f != nil {
		fl.sched.feeds = []*Feed{f}
		f.outstanding++
	}
	if w.Done != nil {
		fl.sched.dones = []func(error){w.Done}
	}
	c.flights[id] = fl
	s.queues[prio] = append(s.queues[prio], fl)
	s.queued++
	c.startDispatcherLocked()
	return PrefetchQueued, 0, nil
}

// keepableLocked says whether an object of the expected size (0: unknown)
// could be kept: prefetching one the cache must drop only to fetch it again
// for its reader wastes the link.
func (c *Cache) keepableLocked(size int64) bool {
	return size <= 0 || size <= c.maxBytes-c.maxBytes/8
}

// prefetchRoomLocked says whether one more prefetch fits: unread prefetched
// data plus what is queued and in flight stays within the budget less a
// reserve for what readers fetch themselves.
func (c *Cache) prefetchRoomLocked() bool {
	s := &c.sched
	reserve := max(c.maxBytes/8, int64(4*s.ctl.avgSize))
	pending := s.queued
	for p := PriorityDemand + 1; p < numPriorities; p++ { // every prefetch running
		pending += s.running[p]
	}
	est := s.ctl.avgSize
	if est == 0 {
		est = float64(min(averageEntryGuess, c.maxBytes/64))
	}
	return float64(s.unreadBytes)+float64(pending+1)*est <= float64(c.maxBytes-reserve)
}

// limitLocked is how many requests may be in flight when a prefetch
// starts: until the link is measured, initialLimit, or maxLimit while the
// requests in flight are expected to bring less than startBytes (small
// objects, in a cache of at least startRoom); then maxLimit. The link budget (mayStartLocked) is what
// usually binds.
func (s *scheduler) limitLocked() int {
	switch {
	case s.fixedLimit > 0:
		return s.fixedLimit
	case s.ctl.bdp() == 0 && (s.startBytes == 0 || s.outstandingLocked() >= s.startBytes):
		return initialLimit
	}
	return maxLimit
}

// outstandingLocked is the bytes requested and not received yet: the
// expected size of each request in flight less what it has delivered.
func (s *scheduler) outstandingLocked() float64 {
	var n float64
	for fl := range s.active {
		size := float64(fl.sched.hint)
		if size <= 0 {
			size = s.ctl.avgSize
		}
		n += max(0, size-float64(fl.sched.recv.Load()))
	}
	return n
}

// mayStartLocked says whether a prefetch of priority prio may start now.
// Besides the count limit, it keeps the bytes requested and not yet
// received (the link budget) under two bandwidth-delay products plus one
// average object, except for PriorityUrgent: enough to keep the
// link busy while each request waits for its first byte, and to let the
// measured throughput grow if the link is faster than measured so far. Bytes,
// not requests, because the objects of one store differ in size by orders
// of magnitude (x and y of a training set), and a request for a tiny object
// keeps no link busy.
//
// Prefetches are not held back while a reader waits for a demand
// fetch. That would give the demand request a larger share of the link
// (TCP shares it per connection), but measured on the WAN harness it costs
// more in link time than the reader gains: with the pipe at one
// bandwidth-delay product or less while readers wait, epoch 1 took 5-15%
// longer (docs/benchmarks.md). Pausing the prefetches already running
// while a demand fetch runs (their body copy waiting between reads) did not
// help either: the paused transfers' bytes keep arriving into buffers for
// most of an object, so a miss waited barely less, and the link delivered
// 20-25% less (docs/benchmarks.md, issue 14).
func (s *scheduler) mayStartLocked(prio Priority) bool {
	if s.inFlightLocked() >= s.limitLocked() {
		return false
	}
	bdp := s.ctl.bdp()
	if bdp == 0 || s.fixedLimit > 0 || prio == PriorityUrgent {
		return true // unmeasured (count limit only), or urgent: outside the budget
	}
	return s.outstandingLocked() < 2*bdp+s.ctl.avgSize
}

// dispatchLocked starts queued prefetches, highest priority first, while
// the limits allow.
func (c *Cache) dispatchLocked() {
	s := &c.sched
	for !c.closed {
		var next *flight
		for p := PriorityDemand + 1; p < numPriorities && next == nil; p++ {
			q := s.queues[p]
			for len(q) > 0 && (!q[0].sched.queued || q[0].sched.prio != p) {
				q[0] = nil
				q = q[1:] // stale: promoted or moved to a higher priority
			}
			s.queues[p] = q
			if len(q) > 0 && s.mayStartLocked(p) {
				next = q[0]
				q[0] = nil
				s.queues[p] = q[1:]
			}
			if len(q) > 0 && next == nil {
				return // a higher priority waits for a slot: lower ones wait too
			}
		}
		if next == nil {
			return
		}
		s.queued--
		next.sched.queued = false
		s.stats.Requests++
		c.launchLocked(next)
	}
}

// promoteLocked makes fl, which a reader now waits for, a demand fetch:
// started at once if it was queued, counted as demand if it runs.
func (c *Cache) promoteLocked(fl *flight) {
	s, fs := &c.sched, &fl.sched
	if fs.prio == PriorityDemand {
		return
	}
	s.stats.Promoted++
	c.log.Debug("fetch promoted", "key", fl.key, "from", fs.prio, "queued", fs.queued, "recv", fs.recv.Load(), "in_flight", s.inFlightLocked())
	if fs.queued {
		fs.queued = false
		s.queued--
		fs.prio = PriorityDemand
		c.launchLocked(fl)
		return
	}
	s.running[fs.prio]--
	fs.prio = PriorityDemand
	s.running[PriorityDemand]++
}

// launchLocked starts fl's request.
func (c *Cache) launchLocked(fl *flight) {
	fl.staleGen = c.staleGen // see MarkStale
	c.log.Debug("fetch start", "key", fl.key, "priority", fl.sched.prio, "in_flight", c.sched.inFlightLocked())
	c.sched.running[fl.sched.prio]++
	if c.sched.active == nil {
		c.sched.active = map[*flight]struct{}{}
	}
	c.sched.active[fl] = struct{}{}
	c.fetches.Add(1) // under mu with closed false, so never after Close began waiting
	go c.runFlight(fl)
}

// flightEndedLocked does the scheduler's part of finishing fl: counters,
// feeds, and the next dispatch.
func (c *Cache) flightEndedLocked(fl *flight, res *fetched, err error) {
	s, fs := &c.sched, &fl.sched
	if !fs.queued {
		s.running[fs.prio]--
		delete(s.active, fl)
	}
	switch {
	case res != nil:
		c.log.Debug("fetch end", "key", fl.key, "priority", fs.prio, "bytes", res.size)
	case err != nil:
		c.log.Debug("fetch failed", "key", fl.key, "priority", fs.prio, "err", err)
	}
	if fs.prefetch && res != nil {
		s.stats.Bytes += res.size
		if fs.joined {
			s.stats.LateBytes += res.size
		}
	}
	for _, f := range fs.feeds {
		f.outstanding--
		switch {
		case res != nil:
			f.progress.DoneKeys++
			f.progress.DoneBytes += res.size
			f.progress.FetchedBytes += res.size
		case err != nil && isNotExist(err):
			f.progress.DoneKeys++
			f.progress.MissingKeys++
		case err != nil:
			f.progress.FailedKeys++
			if f.err == nil {
				f.err = err
			}
		default: // unchanged: the entry on disk is current
			f.progress.DoneKeys++
		}
		c.feedCheckDoneLocked(f)
	}
	fs.feeds = nil
	if s.inFlightLocked() == 0 {
		s.ctl.idle()
	}
	c.dispatchLocked()
	c.kickLocked()
}

// protectPin is the extra pin a freshly fetched entry gets: one when it was
// prefetched and no reader has taken it yet.
func protectPin(fl *flight) int {
	if fl.unclaimedLocked() {
		return 1
	}
	return 0
}

// prefetchPlacedLocked records that e, fetched by fl, is on disk; a
// prefetch nobody read yet stays protected until its first read.
func (c *Cache) prefetchPlacedLocked(e *entry, fl *flight) {
	if protectPin(fl) == 0 {
		return
	}
	e.unread = &unreadPrefetch{elem: c.sched.unread.PushBack(e)}
	c.sched.unreadBytes += e.fileLen
}

// prefetchNotKeptLocked counts a prefetch that could not be kept.
func (c *Cache) prefetchNotKeptLocked(fl *flight, res *fetched) {
	if protectPin(fl) == 1 && res != nil {
		c.sched.stats.WastedBytes += res.size
	}
}

// prefetchReadLocked notes an Open served by e (pinned by that Open): a
// prefetched entry has proven useful and loses its protection.
func (c *Cache) prefetchReadLocked(e *entry) {
	if e.unread == nil {
		return
	}
	c.sched.stats.UsedBytes += e.dataLen
	protected := c.unprotectLocked(e)
	e.unread = nil
	if protected {
		c.unpinLocked(e)
	}
	c.kickLocked() // room for more unread data
}

// unprotectLocked takes e out of the unread list if it is protected, and
// reports whether it was; the caller releases the protection pin.
func (c *Cache) unprotectLocked(e *entry) bool {
	u := e.unread
	if u == nil || u.elem == nil {
		return false
	}
	c.sched.unread.Remove(u.elem)
	u.elem = nil
	c.sched.unreadBytes -= e.fileLen
	return true
}

// prefetchForgetLocked is called when e leaves the index: evicted, removed
// or superseded.
func (c *Cache) prefetchForgetLocked(e *entry, evicted bool) {
	if e.unread != nil && evicted {
		c.sched.stats.WastedBytes += e.dataLen
	}
	if c.unprotectLocked(e) {
		e.pins--
	}
	e.unread = nil
}

// unprotectOldestLocked lifts the protection of the oldest unread
// prefetched entries, at least need bytes of them, so that a reader's own
// data can be kept; it reports whether it lifted any.
func (c *Cache) unprotectOldestLocked(need int64) bool {
	lifted := false
	for need > 0 {
		el := c.sched.unread.Front()
		if el == nil {
			break
		}
		e := el.Value.(*entry)
		need -= e.fileLen
		c.unprotectLocked(e)
		e.pins-- // no shrink here: the caller shrinks once
		lifted = true
	}
	return lifted
}

// noteStall records how long an Open waited for fl.
func (c *Cache) noteStall(fl *flight, d time.Duration) {
	c.log.Debug("open waited", "key", fl.key, "wait", d)
	s := &c.sched
	s.stalls.Add(1)
	s.stallNs.Add(int64(d))
	for {
		m := s.stallMax.Load()
		if int64(d) <= m || s.stallMax.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// PrefetchStats reports the prefetcher's counters and state.
func (c *Cache) PrefetchStats() PrefetchStats {
	c.mu.Lock()
	s := &c.sched
	st := s.stats
	st.Queued = s.queued
	st.InFlight = s.inFlightLocked()
	st.Limit = s.limitLocked()
	st.PipeBytes = int64(s.ctl.bdp())
	st.ThroughputBps = s.ctl.maxRate()
	st.LatencyMs = float64(s.ctl.minLatency()) / float64(time.Millisecond)
	st.UnreadBytes = s.unreadBytes
	st.Feeds = len(s.feeds)
	c.mu.Unlock()
	st.Stalls = s.stalls.Load()
	st.StallTime = s.stallNs.Load()
	st.DemandWaitMax = s.stallMax.Load()
	return st
}

// meteredWriter passes a fetch's bytes on while noting when the first one
// came and counting them for the throughput.
type meteredWriter struct {
	w       io.Writer
	first   time.Time
	written int64
	total   *atomic.Int64
	fl      *atomic.Int64 // the flight's own count; nil if none
}

func (m *meteredWriter) Write(p []byte) (int, error) {
	if m.first.IsZero() {
		m.first = time.Now()
	}
	n, err := m.w.Write(p)
	m.written += int64(n)
	m.total.Add(int64(n))
	if m.fl != nil {
		m.fl.Add(int64(n))
	}
	return n, err
}

// metered wraps get, the request of fl (nil for a revalidation), so the
// controller learns its latency and size and the scheduler its progress.
func (c *Cache) metered(fl *flight, get getFunc) getFunc {
	return func(w io.Writer) (string, bool, error) {
		start := time.Now()
		mw := &meteredWriter{w: w, total: &c.sched.delivered}
		if fl != nil {
			fl.sched.recv.Store(0) // a retry starts over
			mw.fl = &fl.sched.recv
		}
		v, changed, err := get(mw)
		if err == nil && !mw.first.IsZero() {
			now := time.Now()
			c.mu.Lock()
			c.sched.ctl.observe(now, mw.first.Sub(start), mw.written, c.sched.delivered.Load())
			c.mu.Unlock()
		}
		return v, changed, err
	}
}

func (s *scheduler) inFlightLocked() int {
	n := 0
	for _, r := range s.running {
		n += r
	}
	return n
}
