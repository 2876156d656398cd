package serve

// The server's manifest indexes: at most maxIndexes, least recently used
// first out, the served directory's stores built eagerly at start. Lock
// order: see index.go (indexSet.mu comes first).

import (
	"context"
	"path"
	"slices"
	"sync"
	"time"

	"github.com/zarrfs/zarrfs/remote/wire"
)

// indexSet holds the server's indexes, most recently used last.
type indexSet struct {
	s      *Server
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	eagerDone chan struct{} // closed once the eager builds are registered

	mu     sync.Mutex
	lru    []*manifestIndex
	logged map[string]bool // base + "\x00" + kind: logged once
	closed bool
}

func newIndexSet(s *Server) *indexSet {
	ctx, cancel := context.WithCancel(context.Background())
	return &indexSet{s: s, ctx: ctx, cancel: cancel, logged: map[string]bool{}, eagerDone: make(chan struct{})}
}

// storeMarkers name the files that make a directory a zarr store.
var storeMarkers = []string{".zgroup", ".zarray", ".zattrs", ".zmetadata", "zarr.json"}

func (set *indexSet) isStore(rel string) bool {
	for _, m := range storeMarkers {
		if fi, err := set.s.root.Lstat(path.Join(rel, m)); err == nil && fi.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// startEager builds, in the background, the index of the served directory
// if it is a store, else those of its direct children that are stores (the
// children of a store are its arrays and groups, which its index covers;
// indexing them too would hold their keys twice). At most MaxManifestWalks
// builds run at a time: each takes a manifest slot.
func (set *indexSet) startEager() {
	set.wg.Go(func() {
		defer close(set.eagerDone)
		var bases []string
		if set.isStore(".") {
			bases = append(bases, "")
		} else if d, err := set.s.root.Open("."); err == nil {
			ents, _ := d.ReadDir(-1)
			d.Close()
			for _, e := range ents {
				if len(bases) >= maxIndexes {
					break
				}
				if e.IsDir() && e.Name() != wire.ReservedSegment && set.isStore(e.Name()) {
					bases = append(bases, e.Name())
				}
			}
		}
		for _, b := range bases {
			if set.get(b) == nil {
				return
			}
		}
	})
}

// get returns the index for base, starting its build if there is none (or
// its failure is old enough to retry); nil once the set is closed.
func (set *indexSet) get(base string) *manifestIndex {
	set.mu.Lock()
	if set.closed {
		set.mu.Unlock()
		return nil
	}
	var ix *manifestIndex
	at := -1
	for i, c := range set.lru {
		if c.base == base {
			ix, at = c, i
			break
		}
	}
	if ix != nil && ix.retryable(time.Now()) {
		set.lru = slices.Delete(set.lru, at, at+1)
		old := ix
		set.wg.Go(func() { old.shutdown() })
		ix, at = nil, -1
	}
	var evicted *manifestIndex
	if ix == nil {
		ix = newManifestIndex(set, base)
		if len(set.lru) >= maxIndexes {
			evicted = set.lru[0]
			set.lru = slices.Delete(set.lru, 0, 1)
		}
		set.lru = append(set.lru, ix)
		set.wg.Go(func() {
			defer ix.release()
			ix.buildLocked(set.ctx)
		})
	} else if at != len(set.lru)-1 {
		set.lru = append(slices.Delete(set.lru, at, at+1), ix)
	}
	if evicted != nil {
		set.wg.Go(func() { evicted.shutdown() })
	}
	set.mu.Unlock()
	return ix
}

// close stops every index and waits for every goroutine of the set.
func (set *indexSet) close() {
	if set == nil {
		return
	}
	set.mu.Lock()
	set.closed = true
	all := set.lru
	set.lru = nil
	set.mu.Unlock()
	set.cancel()
	for _, ix := range all {
		ix.shutdown()
	}
	set.wg.Wait()
}

// logOnce logs an index failure once per base and kind.
func (set *indexSet) logOnce(base string, u *indexUntrusted) {
	set.mu.Lock()
	k := base + "\x00" + u.kind
	seen := set.logged[k]
	set.logged[k] = true
	set.mu.Unlock()
	if seen {
		return
	}
	set.s.log.Warn("serve: manifest index off; this store's manifests are built by walking the tree on every request (correct, slower)",
		"store", displayRel(relOf(base)), "reason", u.reason, "fix", u.fix)
}

func relOf(base string) string {
	if base == "" {
		return "."
	}
	return base
}
