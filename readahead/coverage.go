package readahead

import "slices"

// Coverage: how much of a slab readers read per visit, learnt per array
// (slabSeen, folded into arrayInfo's moving average), and the predictions
// it shapes (planLocked): whole slabs for readers of whole slabs, the chunk
// at the reader's coordinates for readers of single chunks or strips. All
// of it is guarded by Planner.mu (see planner.go).

// span is how many positions of a slab coverage tells apart.
func (a *arrayInfo) span() int64 { return min(a.perSlab, maxChunksPerSlab) }

// narrow says whether a's readers were seen to read little of a slab;
// known is false until a visit has been learnt.
func (a *arrayInfo) narrow() (narrow, known bool) {
	if a.perSlab <= 1 {
		return false, true
	}
	if a.covers == 0 {
		return false, false
	}
	return a.cover < narrowCover, true
}

// pos is the position of the chunk at coords in its slab, for coverage.
func (a *arrayInfo) pos(coords []int64) int64 {
	var n int64
	for i := 1; i < len(a.grid) && i < len(coords); i++ {
		n = n*a.grid[i] + coords[i]
	}
	return n % a.span()
}

// sameOther says whether b's chunks lie where a's do along the axes past
// the leading one, so that a chunk's coordinates name b's chunk there too.
func (a *arrayInfo) sameOther(b *arrayInfo) bool {
	return len(a.grid) == len(b.grid) && slices.Equal(a.grid[1:], b.grid[1:])
}

// slabSeen is what readers read of one slab: per array (by idx), the
// positions of the chunks looked up or opened, how many there are, and the
// part of the slab already folded into the array's coverage (-1: none).
type slabSeen struct {
	slab   int64
	bits   [][]uint64
	n      []int64
	folded []float64
}

// trackLocked returns what was read of slab s, counting it from now if it
// was not counted, and makes it the most recent.
func (g *lockGroup) trackLocked(s int64) *slabSeen {
	for i, e := range g.track {
		if e.slab == s {
			copy(g.track[i:], g.track[i+1:])
			g.track[len(g.track)-1] = e
			return e
		}
	}
	var e *slabSeen
	if len(g.track) < trackSlabs {
		e = &slabSeen{}
		g.track = append(g.track, e)
	} else {
		// Reuse the least recent: its visits were folded when it left the
		// recent slabs.
		e = g.track[0]
		copy(g.track, g.track[1:])
		g.track[len(g.track)-1] = e
		for i := range e.n {
			e.n[i], e.folded[i] = 0, -1
			clear(e.bits[i])
		}
	}
	e.slab = s
	return e
}

// findTrack returns what was read of slab s, or nil if it is not counted.
func (g *lockGroup) findTrack(s int64) *slabSeen {
	for _, e := range g.track {
		if e.slab == s {
			return e
		}
	}
	return nil
}

// mark notes a read of the chunk at coords of a.
func (e *slabSeen) mark(a *arrayInfo, coords []int64) {
	if a.perSlab <= 1 {
		return
	}
	for len(e.bits) <= a.idx {
		e.bits = append(e.bits, nil)
		e.n = append(e.n, 0)
		e.folded = append(e.folded, -1)
	}
	if e.bits[a.idx] == nil {
		e.bits[a.idx] = make([]uint64, (a.span()+63)/64)
	}
	i := a.pos(coords)
	w, bit := &e.bits[a.idx][i/64], uint64(1)<<(i%64)
	if *w&bit == 0 {
		*w |= bit
		e.n[a.idx]++
	}
}

// fold adds what was read of a slab that leaves the recent slabs to the
// coverage of the arrays read in it. A slab folded before (readers came
// back to it) corrects its share of the average by what was read since,
// rather than counting as a visit of its own.
func (e *slabSeen) fold(arrays []*arrayInfo) {
	for i, n := range e.n {
		if n == 0 {
			continue
		}
		a := arrays[i]
		part := float64(n) / float64(a.span())
		switch {
		case e.folded[i] >= 0:
			a.cover = min(1, max(0, a.cover+coverWeight*(part-e.folded[i])))
		case a.covers == 0:
			a.cover = part
			a.covers++
		default:
			a.cover += coverWeight * (part - a.cover)
			a.covers++
		}
		e.folded[i] = part
	}
}

// target is one array of a prediction: its whole slab, or (at non-nil) only
// the chunk at those coordinates along the axes past the leading one.
type target struct {
	a  *arrayInfo
	at []int64
}

// wholeTargets are the targets of plan that predict whole slabs.
func wholeTargets(plan []target) []target {
	var out []target
	for _, t := range plan {
		if t.at == nil {
			out = append(out, t)
		}
	}
	return out
}

// planLocked decides what a step to a new slab, by a read of the chunk at
// coords of a, predicts of each active array: its whole slab, or where its
// readers read little of a slab (or, not known yet for it, a's do) the
// chunk at the same coordinates; an array whose chunks do not lie where a's
// do is then left out. It returns how many arrays were narrowed.
func (p *Planner) planLocked(g *lockGroup, a *arrayInfo, coords []int64) (plan []target, narrowed int64) {
	aNarrow, _ := a.narrow()
	for _, b := range g.activeArrays() {
		narrow, known := b.narrow()
		if !known {
			narrow = aNarrow
		}
		switch {
		case !narrow:
			plan = append(plan, target{a: b})
		case b == a || a.sameOther(b):
			plan = append(plan, target{a: b, at: coords})
			narrowed++
		default:
			narrowed++
		}
	}
	return plan, narrowed
}
