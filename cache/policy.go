package cache

// Eviction policies. Every method runs under Cache.mu; nothing here locks.

import (
	"container/list"
	"math"
	"math/bits"
)

// policy orders the entries on disk and chooses which to evict. It tracks
// the bytes of the entries it holds; the Cache keeps the id -> entry map and
// deletes the files.
type policy interface {
	// record notes one Open of the object with hash sum, hit or miss, and
	// returns the number of Opens since its previous one (its reuse
	// distance; large if unknown).
	record(sum uint64) uint32
	// add takes a newly fetched entry.
	add(e *entry)
	// addRecovered takes an entry found on disk at start, oldest first.
	addRecovered(e *entry)
	// hit notes an Open served by e.
	hit(e *entry)
	// remove forgets e (corrupt, replaced, dropped by the Cache itself).
	remove(e *entry)
	// shrink evicts entries, calling evict for each after forgetting it,
	// until bytes() <= limit or every remaining entry is pinned.
	shrink(limit int64, evict func(*entry))
	bytes() int64
}

// lruPolicy is plain least-recently-used: the baseline that cyclic epochs
// over a dataset larger than the cache defeat.
type lruPolicy struct {
	order list.List // front = most recently used
	size  int64
}

func newLRUPolicy() *lruPolicy { return &lruPolicy{} }

func (p *lruPolicy) record(uint64) uint32 { return math.MaxUint32 }

func (p *lruPolicy) add(e *entry) {
	e.elem = p.order.PushFront(e)
	p.size += e.fileLen
}

func (p *lruPolicy) addRecovered(e *entry) { p.add(e) }

func (p *lruPolicy) hit(e *entry) { p.order.MoveToFront(e.elem) }

func (p *lruPolicy) remove(e *entry) {
	p.order.Remove(e.elem)
	e.elem = nil
	p.size -= e.fileLen
}

func (p *lruPolicy) shrink(limit int64, evict func(*entry)) {
	for p.size > limit {
		v := oldestUnpinned(&p.order)
		if v == nil {
			return
		}
		p.remove(v)
		evict(v)
	}
}

func (p *lruPolicy) bytes() int64 { return p.size }

// admissionPolicy is the default: a small LRU window in front of a large
// LRU main area, with entry into main decided by access frequency (the
// W-TinyLFU structure of Caffeine and Ristretto), made to keep a stable part
// of a dataset read in a new order every epoch, and to follow the working set
// when it moves.
//
// A training job reads the same dataset every epoch in a new order. When the
// dataset is larger than the cache, LRU evicts exactly the entries the next
// epoch needs first, and after the first epoch hits only by luck. Here a new
// entry leaving the window replaces main's least recently used entry only if
// the object was opened clearly more often than that resident (a frequency
// sketch counts Opens; the fetch and the open after a lookup do not count,
// and ties go to the resident). Every object of a cyclic dataset is opened
// once per epoch, so newcomers do not get in and main keeps a stable part of
// the dataset, hit every epoch.
//
// That alone would freeze the cache when the working set moves to a smaller
// dataset: the residents' counts, earned over many epochs, fade only slowly.
// So the policy also watches which signal pays: hits on main's residents, or
// misses that plain LRU would have hit (the object was last opened fewer
// Opens ago than there are entries). While the latter clearly dominate —
// the residents are no longer read and the new objects are re-read soon —
// such recently re-read objects are admitted regardless of frequency.
//
// The window keeps every new entry for a while whatever its frequency, so an
// object fetched by a lookup and opened right after is not fetched twice.
type admissionPolicy struct {
	window, main list.List // front = most recently used
	windowBytes  int64
	mainBytes    int64
	windowTarget int64
	freq         *sketch

	// clock counts Opens; lastSeen[hash] is the clock of the last Open of
	// the objects with that hash (a collision makes an object look more
	// recent than it is, which at worst admits it).
	clock    uint32
	lastSeen []uint32
	seenMask uint64

	// Hits on main's residents, and misses that LRU would have hit, both
	// halved every `entries` Opens.
	mainHits, recencyHits int
	sinceDecay            int
}

const (
	// The window is this share of the budget...
	windowShare = 100
	// ...but holds at least this many entries: enough for the lookups of
	// many concurrent readers to be followed by their opens.
	minWindowEntries = 16
	// averageEntryGuess turns the byte budget into an expected entry count
	// to size the frequency sketch; it grows if entries are smaller.
	averageEntryGuess = 64 << 10
	// A newcomer must beat a resident's count by more than this: halving
	// all counts breaks ties unevenly, which would let newcomers churn main.
	tieMargin = 1
	// Recency admission starts when misses LRU would have hit outnumber hits
	// on main this many times over. Smaller follows a new working set faster
	// but churns main at the start of the second epoch, when the objects of
	// the end of the first epoch come back early (benchmarked: 2 keeps the
	// second epoch of a shuffled dataset twice the cache at 40% or more).
	recencyDominance = 2
)

func newAdmissionPolicy(maxBytes int64) *admissionPolicy {
	p := &admissionPolicy{windowTarget: maxBytes / windowShare}
	p.resize(int(min(maxBytes/averageEntryGuess, 1<<20)))
	return p
}

// resize sizes the sketch and the recency table for n entries, forgetting
// the history.
func (p *admissionPolicy) resize(n int) {
	p.freq = newSketch(n)
	p.lastSeen = make([]uint32, len(p.freq.rows[0]))
	p.seenMask = uint64(len(p.lastSeen) - 1)
}

func (p *admissionPolicy) entries() int { return p.window.Len() + p.main.Len() }

func (p *admissionPolicy) record(sum uint64) uint32 {
	p.freq.increment(sum)
	p.clock++
	if p.sinceDecay++; p.sinceDecay >= max(64, p.entries()) {
		p.sinceDecay = 0
		p.mainHits /= 2
		p.recencyHits /= 2
	}
	slot := &p.lastSeen[sum&p.seenMask]
	prev := *slot
	*slot = p.clock
	if prev == 0 {
		return math.MaxUint32
	}
	return p.clock - prev
}

func (p *admissionPolicy) add(e *entry) {
	if int64(e.reuse) < int64(p.entries()) {
		p.recencyHits++
	}
	e.inWindow = true
	e.elem = p.window.PushFront(e)
	p.windowBytes += e.fileLen
	if n := p.entries(); n > p.freq.entries && p.freq.entries < 1<<20 {
		// Entries are smaller than guessed: a sketch too small for them
		// counts collisions as accesses. Starting over costs only history.
		p.resize(2 * n)
	}
}

func (p *admissionPolicy) addRecovered(e *entry) {
	e.inWindow = false
	e.elem = p.main.PushFront(e)
	p.mainBytes += e.fileLen
}

func (p *admissionPolicy) hit(e *entry) {
	if e.inWindow {
		e.stint++
		p.window.MoveToFront(e.elem)
		return
	}
	p.mainHits++
	p.main.MoveToFront(e.elem)
}

func (p *admissionPolicy) remove(e *entry) {
	if e.inWindow {
		p.window.Remove(e.elem)
		p.windowBytes -= e.fileLen
	} else {
		p.main.Remove(e.elem)
		p.mainBytes -= e.fileLen
	}
	e.elem = nil
}

func (p *admissionPolicy) bytes() int64 { return p.windowBytes + p.mainBytes }

func (p *admissionPolicy) shrink(limit int64, evict func(*entry)) {
	// Entries past the window's share leave it: into main while there is
	// room, else against main's least recently used entry.
	for p.windowBytes > p.windowTarget && p.window.Len() > minWindowEntries {
		candidate := oldestUnpinned(&p.window)
		if candidate == nil {
			break
		}
		if p.bytes() <= limit {
			p.window.Remove(candidate.elem)
			p.windowBytes -= candidate.fileLen
			candidate.inWindow = false
			candidate.elem = p.main.PushFront(candidate)
			p.mainBytes += candidate.fileLen
			continue
		}
		victim := oldestUnpinned(&p.main)
		if victim == nil || !p.admits(candidate, victim) {
			p.remove(candidate)
			evict(candidate)
			continue
		}
		p.remove(victim)
		evict(victim)
	}
	for p.bytes() > limit {
		v := oldestUnpinned(&p.main)
		if v == nil {
			v = oldestUnpinned(&p.window)
		}
		if v == nil {
			return
		}
		p.remove(v)
		evict(v)
	}
}

// admits says whether candidate, leaving the window, deserves victim's place.
//
// The candidate's own recent Opens are discounted: it was opened stint
// times since its fetch began, and counting the fetch itself, or the open
// that follows a lookup, would let every newly read object beat a resident
// that has simply not been read yet this epoch — which is LRU again. Only
// repeated use beyond that counts.
func (p *admissionPolicy) admits(candidate, victim *entry) bool {
	if p.recencyHits > recencyDominance*p.mainHits && int64(candidate.reuse) < int64(p.entries()) {
		return true
	}
	est := int(p.freq.estimate(candidate.sum))
	score := max(0, est-candidate.stint) + max(0, candidate.stint-2)
	return score > int(p.freq.estimate(victim.sum))+tieMargin
}

// oldestUnpinned returns the least recently used entry of l that no Reader
// holds, or nil.
func oldestUnpinned(l *list.List) *entry {
	for el := l.Back(); el != nil; el = el.Prev() {
		if e := el.Value.(*entry); e.pins == 0 {
			return e
		}
	}
	return nil
}

// sketch is a count-min sketch of small saturating counters: the
// approximate number of recent accesses of each object in little memory,
// whatever the number of objects. All counters are halved every sample
// accesses so that old popularity fades.
type sketch struct {
	rows    [4][]uint8
	shift   uint // 64 - log2(width)
	entries int  // the entry count it was sized for
	adds    int
	sample  int
}

const maxCount = 15

// Odd multipliers give each row its own index for the same hash.
var sketchSeeds = [4]uint64{0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93}

func newSketch(entries int) *sketch {
	entries = max(entries, 256)
	width := 1 << bits.Len(uint(4*entries-1)) // four counters per entry keeps collisions rare
	s := &sketch{shift: uint(64 - bits.TrailingZeros(uint(width))), entries: entries, sample: 10 * entries}
	for i := range s.rows {
		s.rows[i] = make([]uint8, width)
	}
	return s
}

func (s *sketch) index(sum uint64, row int) uint64 { return (sum * sketchSeeds[row]) >> s.shift }

func (s *sketch) estimate(sum uint64) uint8 {
	m := uint8(maxCount)
	for i := range s.rows {
		m = min(m, s.rows[i][s.index(sum, i)])
	}
	return m
}

// increment raises only the counters at the minimum (conservative update),
// which keeps the overestimate from collisions small.
func (s *sketch) increment(sum uint64) {
	m := s.estimate(sum)
	if m < maxCount {
		for i := range s.rows {
			if c := &s.rows[i][s.index(sum, i)]; *c == m {
				*c++
			}
		}
	}
	if s.adds++; s.adds >= s.sample {
		s.adds /= 2
		for i := range s.rows {
			for j := range s.rows[i] {
				s.rows[i][j] >>= 1
			}
		}
	}
}
