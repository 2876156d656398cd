package readahead

import (
	"path"
	"strconv"
	"strings"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/remote"
)

// Background fills of shuffled groups that fit the cache: whether they fit
// (fitsLocked and the sizes it needs), starting one, an array that joins a
// running one, and the feed that walks the arrays slab by slab. State is in
// lockGroup and guarded by Planner.mu (see planner.go); feeds are started
// and cancelled without it.

// takeFillsLocked ends g's fill: it returns the feeds to cancel (after
// Planner.mu is released) and forgets them.
func (g *lockGroup) takeFillsLocked() []FeedHandle {
	var feeds []FeedHandle
	if g.fill != nil {
		feeds = append(feeds, g.fill)
	}
	g.fill, g.inFill = nil, nil
	return feeds
}

// fitsLocked says whether g's active arrays fit the fill's share of the cache.
func (p *Planner) fitsLocked(g *lockGroup) bool {
	var total float64
	for _, a := range g.activeArrays() {
		total += p.arrayBytesLocked(a)
	}
	return total <= fillShare*float64(p.budget)
}

// arrayBytesLocked is the bytes of all of a's chunks: exact from the
// manifest, else the observed average times the number of chunks.
func (p *Planner) arrayBytesLocked(a *arrayInfo) float64 {
	if m := p.manifest.Load(); m != nil {
		if a.manifestTotal < 0 {
			a.manifestTotal = manifestBytes(m, a.node.Path)
		}
		return float64(a.manifestTotal)
	}
	return p.chunkEstimateLocked(a) * float64(a.node.Array.NumChunks())
}

// manifestBytes sums the sizes of the objects below dir, metadata included
// (it is small).
func manifestBytes(m *remote.Manifest, dir string) int64 {
	var total int64
	var walk func(d string)
	walk = func(d string) {
		for _, e := range m.Children(d) {
			k := path.Join(d, e.Name)
			if e.IsDir {
				walk(k)
				continue
			}
			if size, _, ok := m.Lookup(k); ok {
				total += size
			}
		}
	}
	walk(dir)
	return total
}

// itemSize guesses the bytes per element from a v2 dtype ("<f4") or a v3
// data type name ("float32"); 8 when unknown.
func itemSize(dtype string) int64 {
	end := len(dtype)
	start := end
	for start > 0 && dtype[start-1] >= '0' && dtype[start-1] <= '9' {
		start--
	}
	n, err := strconv.Atoi(dtype[start:end])
	if err != nil || n <= 0 {
		if dtype == "bool" || dtype == "|b1" {
			return 1
		}
		return 8
	}
	if strings.HasPrefix(dtype, "<") || strings.HasPrefix(dtype, ">") || strings.HasPrefix(dtype, "|") {
		return int64(n) // v2: bytes
	}
	return int64(max(1, n/8)) // v3: bits
}

// startFill starts the background fill of g's active arrays: every chunk,
// slab by slab, lowest first.
func (p *Planner) startFill(g *lockGroup, arrays []*arrayInfo) {
	next := p.slabFeed(arrays, 0, g.nslabs)
	h := p.sink.StartFeed(next)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		h.Cancel()
		return
	}
	g.fill = h
	g.inFill = map[*arrayInfo]bool{}
	for _, a := range arrays {
		g.inFill[a] = true
	}
	p.mu.Unlock()
	p.log.Debug("prefetch: shuffled reads; filling the cache in the background", "arrays", len(arrays), "slabs", g.nslabs)
}

// joinFillLocked decides whether a, just read, joins g's running fill: it
// was not read when the fill started (DataLoader workers each read the
// images of their batch before any reads its labels, so the labels look
// idle then) and the fill with it still fits the cache budget. Without
// this, such an array is fetched one round trip per chunk all epoch long.
// It returns the arrays of the new fill and the feed it replaces, or nil.
func (p *Planner) joinFillLocked(g *lockGroup, a *arrayInfo) ([]*arrayInfo, FeedHandle) {
	if _, asked := g.inFill[a]; g.fill == nil || asked {
		return nil, nil
	}
	g.inFill[a] = true // asked once, whatever the answer
	var arrays []*arrayInfo
	var total float64
	for _, b := range g.arrays { // the group's order, as startFill's
		if g.inFill[b] {
			arrays = append(arrays, b)
			total += p.arrayBytesLocked(b)
		}
	}
	if total > fillShare*float64(p.budget) {
		g.inFill[a] = false // refused: not asked again
		return nil, nil
	}
	p.stats.FillsJoined++
	return arrays, g.fill
}

// restartFill replaces g's fill (old) by one over arrays, from the first
// slab again: one feed that goes slab by slab over every array, so that
// slabs complete in order (a second feed for the new array alone would
// wait behind the first). What the old fill fetched is found present in
// the cache and skipped without a request.
func (p *Planner) restartFill(g *lockGroup, arrays []*arrayInfo, old FeedHandle) {
	h := p.sink.StartFeed(p.slabFeed(arrays, 0, g.nslabs))
	p.mu.Lock()
	if p.closed || g.fill != old {
		p.mu.Unlock()
		h.Cancel() // the fill ended or was replaced meanwhile
		return
	}
	g.fill = h
	p.mu.Unlock()
	old.Cancel()
	p.log.Debug("prefetch: an array read since the fill started joins it", "arrays", len(arrays), "slabs", g.nslabs)
}

// slabFeed returns a generator of the keys of slabs [lo, hi) of arrays, slab
// by slab, leaving out arrays the reader stopped reading; with a manifest it
// skips keys that do not exist. It is called by the cache's dispatcher only,
// which holds no lock of its own then.
func (p *Planner) slabFeed(arrays []*arrayInfo, lo, hi int64) func() (cache.Want, bool) {
	s := lo
	ai := 0
	var est int64
	var pending [][]int64 // chunks of the current (slab, array) not handed out yet
	return func() (cache.Want, bool) {
		for {
			if len(pending) > 0 {
				coords := pending[0]
				pending = pending[1:]
				if w, ok := p.want(arrays[ai-1].chunkKey(coords), est); ok {
					return w, true
				}
				continue
			}
			if ai >= len(arrays) {
				ai = 0
				s++
			}
			if s >= hi || len(arrays) == 0 {
				return cache.Want{}, false
			}
			a := arrays[ai]
			ai++
			p.mu.Lock()
			skip := !a.group.isActive(a) // the reader stopped reading it
			est = int64(p.chunkEstimateLocked(a))
			p.mu.Unlock()
			if skip || s >= a.grid[0] {
				continue
			}
			forSlabChunks(a, s, func(c []int64) bool {
				pending = append(pending, c)
				return len(pending) < maxChunksPerSlab
			})
		}
	}
}
