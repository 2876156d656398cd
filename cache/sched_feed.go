package cache

// Background feeds and the dispatcher goroutine that pulls them. Locking as
// in sched.go: state under Cache.mu, Feed.next and Want.Done called with no
// lock held.

import (
	"errors"
	"fmt"
	"io/fs"
)

// FeedProgress is how far a Feed has got.
type FeedProgress struct {
	DoneKeys     int64 `json:"done_keys"`     // keys on disk now (fetched, already cached) or missing on the origin
	DoneBytes    int64 `json:"done_bytes"`    // bytes of those keys
	FetchedBytes int64 `json:"fetched_bytes"` // bytes this feed's requests brought in
	MissingKeys  int64 `json:"missing_keys"`  // keys the origin does not have (fill_value chunks)
	FailedKeys   int64 `json:"failed_keys"`   // keys whose fetch failed
	Pending      int   `json:"pending"`       // keys queued or in flight
	Finished     bool  `json:"finished"`      // every key was handed out and has ended
	Cancelled    bool  `json:"cancelled"`
}

// Feed hands out keys to prefetch at its priority (PriorityLow unless
// added with AddFeedAt), one at a time as request slots free up, and
// tracks them until they are on disk.
type Feed struct {
	c    *Cache
	next func() (Want, bool)
	prio Priority // PriorityHigh or PriorityLow
	done chan struct{}

	// Guarded by Cache.mu.
	exhausted   bool // next returned ok == false
	cancelled   bool
	closed      bool // done is closed
	outstanding int  // flights counting this feed
	progress    FeedProgress
	err         error // the first failure
	// held is a Want refused for room, offered again before next is
	// called; its Done gets ErrFeedCancelled if the feed ends first.
	held    Want
	hasHeld bool
}

// AddFeed starts pulling keys from next in the background: each key is
// fetched like a Prefetch at PriorityLow, as slots free up and while
// there is room for unread prefetched data. next is called from one
// goroutine, never with the cache's lock held, and must not block; it
// returns ok == false when it has no more keys.
func (c *Cache) AddFeed(next func() (Want, bool)) *Feed {
	return c.AddFeedAt(PriorityLow, next)
}

// AddFeedAt is AddFeed at priority p: while a feed at PriorityHigh has keys
// to hand out, feeds at PriorityLow wait, and its keys are queued ahead of
// theirs. Feeds of one priority take turns. For a plan that is better than
// the others running, such as a reader's announced order beside a fill of
// the whole store; p is PriorityHigh or PriorityLow (Urgent counts as High:
// feeds never skip the link budget).
func (c *Cache) AddFeedAt(p Priority, next func() (Want, bool)) *Feed {
	if p < PriorityHigh {
		p = PriorityHigh
	}
	if p > PriorityLow {
		p = PriorityLow
	}
	f := &Feed{c: c, next: next, prio: p, done: make(chan struct{})}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		f.cancelled = true
		c.feedCheckDoneLocked(f)
		return f
	}
	c.sched.feeds = append(c.sched.feeds, f)
	c.startDispatcherLocked()
	c.kickLocked()
	return f
}

// Done is closed once every key of the feed has been fetched, found cached
// or missing, or failed, or once the feed is cancelled and its requests
// have ended.
func (f *Feed) Done() <-chan struct{} { return f.done }

// Cancel stops handing out keys; fetches already started go on and land
// in the cache.
func (f *Feed) Cancel() {
	f.c.mu.Lock()
	f.cancelled = true
	f.c.dropFeedLocked(f)
	f.c.feedCheckDoneLocked(f)
	calls := f.dropHeldLocked(ErrFeedCancelled)
	f.c.mu.Unlock()
	runDones(calls)
}

// dropHeldLocked forgets the Want held back for room, returning its Done
// call with err.
func (f *Feed) dropHeldLocked(err error) []doneCall {
	if !f.hasHeld {
		return nil
	}
	w := f.held
	f.held, f.hasHeld = Want{}, false
	if w.Done == nil {
		return nil
	}
	return []doneCall{{w.Done, fmt.Errorf("prefetch %s: %w", w.span().describe(w.Key), err)}}
}

// Progress reports how far the feed has got.
func (f *Feed) Progress() FeedProgress {
	f.c.mu.Lock()
	defer f.c.mu.Unlock()
	p := f.progress
	p.Pending = f.outstanding
	p.Finished = f.closed && !f.cancelled
	p.Cancelled = f.cancelled
	return p
}

// Err is the first fetch failure of the feed (other than a missing key), or nil.
func (f *Feed) Err() error {
	f.c.mu.Lock()
	defer f.c.mu.Unlock()
	return f.err
}

func (c *Cache) feedCheckDoneLocked(f *Feed) {
	if !f.closed && (f.exhausted || f.cancelled) && f.outstanding == 0 {
		f.closed = true
		close(f.done)
	}
}

func (c *Cache) dropFeedLocked(f *Feed) {
	feeds := c.sched.feeds
	for i, g := range feeds {
		if g == f {
			c.sched.feeds = append(feeds[:i:i], feeds[i+1:]...)
			return
		}
	}
}

// startDispatcherLocked starts the dispatcher goroutine on first use, so a
// cache that never prefetches runs none.
func (c *Cache) startDispatcherLocked() {
	s := &c.sched
	if s.started || c.closed {
		return
	}
	s.started = true
	s.kick = make(chan struct{}, 1)
	c.fetches.Add(1)
	go c.dispatcher()
}

func (c *Cache) kickLocked() {
	if c.sched.kick == nil {
		return
	}
	select {
	case c.sched.kick <- struct{}{}:
	default:
	}
}

// dispatcher pulls keys from the feeds whenever slots free up, until the
// cache closes.
func (c *Cache) dispatcher() {
	defer c.fetches.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.sched.kick:
		}
		c.pullFeeds()
	}
}

// pullFeeds queues keys from the feeds, round robin, while request slots
// and prefetch room are free.
func (c *Cache) pullFeeds() {
	for c.ctx.Err() == nil {
		c.mu.Lock()
		c.dispatchLocked()
		f, room := c.feedToPullLocked()
		c.mu.Unlock()
		if f == nil || room <= 0 {
			return
		}
		queued := 0
		for queued < room && c.ctx.Err() == nil {
			c.mu.Lock()
			w, ok := f.held, f.hasHeld
			f.held, f.hasHeld = Want{}, false
			c.mu.Unlock()
			if !ok {
				w, ok = f.next() // the caller's code: no lock held
			}
			var calls []doneCall
			c.mu.Lock()
			switch {
			case f.cancelled:
				if ok {
					calls = append(calls, doneCall{w.Done, fmt.Errorf("prefetch %s: %w", w.span().describe(w.Key), ErrFeedCancelled)})
				}
				ok = false
			case !ok:
				f.exhausted = true
				c.dropFeedLocked(f)
				c.feedCheckDoneLocked(f)
			default:
				res, size, err := c.prefetchLocked(w, f.prio, f)
				switch {
				case res == PrefetchQueued:
					queued++
					c.dispatchLocked()
				case res == PrefetchPresent:
					if size >= 0 { // cached; else in flight, counted when it ends
						f.progress.DoneKeys++
						f.progress.DoneBytes += size
						calls = append(calls, doneCall{w.Done, nil})
					}
				case res == PrefetchMissing:
					f.progress.DoneKeys++
					f.progress.MissingKeys++
					calls = append(calls, doneCall{w.Done, err})
				case errors.Is(err, ErrPrefetchRefused) && !errors.Is(err, errTooLarge):
					// No room: hold the Want back, and wait for reads (or
					// Close) to make room.
					f.held, f.hasHeld = w, true
					ok = false
					room = 0
				default: // a Want that can never be fetched (or kept), or the cache closed
					f.progress.FailedKeys++
					if f.err == nil {
						f.err = err
					}
					calls = append(calls, doneCall{w.Done, err})
				}
			}
			c.mu.Unlock()
			runDones(calls)
			if !ok {
				break
			}
		}
		if room == 0 {
			return
		}
	}
}

// feedToPullLocked picks the next feed to pull from and how many keys it
// may queue now: none while fetches of the feeds' priority wait in their
// queue, while the limit on requests in flight is reached, or without
// prefetch room.
func (c *Cache) feedToPullLocked() (*Feed, int) {
	s := &c.sched
	if len(s.feeds) == 0 || c.closed {
		return nil, 0
	}
	// The feeds of the best priority present take turns; the others wait
	// until those have handed out every key.
	prio := PriorityLow
	for _, f := range s.feeds {
		prio = min(prio, f.prio)
	}
	// Pull only as the queue of that priority drains, so that keys are
	// taken from a feed when a slot is about to free up, not all at once.
	for _, fl := range s.queues[prio] {
		if fl.sched.queued && fl.sched.prio == prio {
			return nil, 0
		}
	}
	room := s.limitLocked() - s.inFlightLocked()
	if room <= 0 || !c.prefetchRoomLocked() {
		return nil, 0
	}
	for range s.feeds {
		s.feedRR = (s.feedRR + 1) % len(s.feeds)
		if f := s.feeds[s.feedRR]; f.prio == prio {
			return f, room
		}
	}
	return nil, 0 // not reached: a feed of prio exists
}

// closeSchedLocked ends what Close must end: queued flights fail with
// ErrClosed, feeds are cancelled. It returns the Done calls to make once
// Cache.mu is released.
func (c *Cache) closeSchedLocked() []doneCall {
	var calls []doneCall
	s := &c.sched
	for k := range s.queues {
		for _, fl := range s.queues[k] {
			if fl == nil || !fl.sched.queued {
				continue
			}
			fl.sched.queued = false
			s.queued--
			if c.flights[fl.id] == fl {
				delete(c.flights, fl.id)
			}
			fl.err = ErrClosed
			for _, f := range fl.sched.feeds {
				f.outstanding--
			}
			fl.sched.feeds = nil
			close(fl.done)
			calls = append(calls, fl.doneCallsLocked()...)
		}
		s.queues[k] = nil
	}
	for _, f := range s.feeds {
		f.cancelled = true
	}
	for _, f := range s.feeds {
		c.feedCheckDoneLocked(f)
		calls = append(calls, f.dropHeldLocked(ErrClosed)...)
	}
	s.feeds = nil
	return calls
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
