package vfs

// Expansion: predicted shards and big objects (the planner, background
// fills, explicit prefetches) are turned into their blocks before they
// reach the cache's scheduler, so a prefetched shard lands as the same
// block entries a reader opens.

import (
	"context"
	"path"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/readahead"
	"github.com/zarrfs/zarrfs/vfs/blocks"
	"github.com/zarrfs/zarrfs/zarr"
)

// Expansion limits.
const (
	expandWorkers = 4
	expandQueue   = 256
)

// blockWant is the cache Want of block i of t.
func blockWant(t *blocks.Table, key string, i int) cache.Want {
	f := t.FetchRange(i)
	return cache.Want{Key: key, Version: t.Version, Off: f.Off, Len: f.N}
}

// blockWants lists the cache Wants that fetch every block of t except the
// in-memory index.
func blockWants(t *blocks.Table, key string) []cache.Want {
	out := make([]cache.Want, 0, len(t.Blocks))
	for i := range t.Blocks {
		if !t.InMemory(i) {
			out = append(out, blockWant(t, key, i))
		}
	}
	return out
}

// expandJob is a predicted object to fetch as blocks.
type expandJob struct {
	arr     *zarr.Array
	key     string
	version string // "" without a manifest: learned first
	size    int64
	class   cache.Priority
}

// blockWants returns the Wants of a predicted object, blocking for its
// table; ok is false when it is not read by ranges (fetch it whole).
func (r *rangedObjects) blockWants(ctx context.Context, j expandJob) (wants []cache.Want, ok bool, err error) {
	var t *blocks.Table
	if j.version == "" {
		if t, ok, err = r.learn(ctx, j.arr, j.key); !ok || err != nil {
			return nil, ok, err
		}
	} else {
		if !r.eligible(j.arr, j.key, j.version, j.size) {
			return nil, false, nil
		}
		if t, err = r.table(ctx, j.arr, j.key, j.version, j.size); err != nil {
			if r.noteUnsupported(err) {
				return nil, false, nil
			}
			return nil, true, err
		}
	}
	r.stats.expanded.Add(1)
	return blockWants(t, j.key), true, nil
}

// handles says whether a predicted object should go through expansion.
func (r *rangedObjects) handles(arr *zarr.Array, version string, size int64) bool {
	if r.unsupported.Load() {
		return false
	}
	if version == "" {
		return blocks.ShardIndexSize(arr) > 0 && !arr.Shard.IndexAtStart
	}
	return r.eligible(arr, "", version, size)
}

// prefetch queues a predicted object's blocks without blocking: the table
// is loaded by a worker when it is not known yet.
func (r *rangedObjects) prefetch(j expandJob) cache.PrefetchResult {
	if j.version != "" {
		if t, ok := r.tables.Get(j.key + "\x00" + j.version); ok {
			r.stats.expanded.Add(1)
			return r.queue(blockWants(t, j.key), j.class)
		}
	}
	select {
	case r.jobs <- j:
		return cache.PrefetchQueued
	default:
		r.stats.dropped.Add(1)
		return cache.PrefetchRefused
	}
}

func (r *rangedObjects) queue(wants []cache.Want, class cache.Priority) cache.PrefetchResult {
	res := cache.PrefetchPresent
	for _, w := range wants {
		switch r.cache.Prefetch(w, class) {
		case cache.PrefetchQueued:
			res = cache.PrefetchQueued
		case cache.PrefetchRefused:
			return cache.PrefetchRefused // no room: the rest would be refused too
		}
	}
	return res
}

func (r *rangedObjects) expandLoop() {
	for {
		select {
		case <-r.life.Done():
			return
		case j := <-r.jobs:
			wants, ok, err := r.blockWants(r.life, j)
			switch {
			case err != nil:
				if r.life.Err() == nil {
					r.log.Debug("prefetch: block table", "key", j.key, "err", err)
				}
			case ok:
				r.queue(wants, j.class)
			default:
				// Not ranged after all (e.g. the origin ignores ranges).
				r.cache.Prefetch(cache.Want{Key: j.key, Version: j.version, Size: j.size}, j.class)
			}
		}
	}
}

// expandFeed wraps a feed's generator so that shards and big objects come
// out as their blocks; expanded (if not nil) hears how many blocks each
// expanded object became. It blocks for a table that is not known yet (one
// request); the cache's dispatcher tolerates that.
func (r *rangedObjects) expandFeed(arrayOf func(key string) *zarr.Array, next func() (cache.Want, bool), expanded func(blocks int)) func() (cache.Want, bool) {
	var pending []cache.Want
	return func() (cache.Want, bool) {
		for {
			if len(pending) > 0 {
				w := pending[0]
				pending = pending[1:]
				return w, true
			}
			w, ok := next()
			if !ok || w.Len > 0 {
				return w, ok
			}
			arr := arrayOf(w.Key)
			if !r.handles(arr, w.Version, w.Size) {
				return w, true
			}
			wants, ranged, err := r.blockWants(r.life, expandJob{arr: arr, key: w.Key, version: w.Version, size: w.Size})
			switch {
			case err != nil:
				if r.life.Err() != nil {
					return cache.Want{}, false
				}
				r.log.Debug("prefetch: block table", "key", w.Key, "err", err)
			case !ranged:
				return w, true
			default:
				pending = wants
				if expanded != nil {
					expanded(len(wants))
				}
			}
		}
	}
}

// arrayOf returns the array whose chunk key is key in the current view, or
// nil.
func (f *FS) arrayOf(key string) *zarr.Array {
	tree := f.current().Tree
	for p := path.Dir(key); ; p = path.Dir(p) {
		if p == "." {
			p = ""
		}
		if n := tree.Lookup(p); n != nil && n.Kind == zarr.KindArray {
			return n.Array
		}
		if p == "" {
			return nil
		}
	}
}

// PrefetchSink returns where the planner sends its predictions: the cache,
// with shards and big objects expanded into their blocks on the way.
func (f *FS) PrefetchSink() readahead.Sink {
	return rangedSink{inner: readahead.CacheSink{Cache: f.cache}, fs: f}
}

// rangedSink expands predicted shards and big objects into blocks on their
// way from the planner to the cache.
type rangedSink struct {
	inner readahead.Sink
	fs    *FS
}

func (s rangedSink) Prefetch(w cache.Want, class cache.Priority) cache.PrefetchResult {
	if r := s.fs.ranged; w.Len == 0 {
		if arr := s.fs.arrayOf(w.Key); r.handles(arr, w.Version, w.Size) {
			return r.prefetch(expandJob{arr: arr, key: w.Key, version: w.Version, size: w.Size, class: class})
		}
	}
	return s.inner.Prefetch(w, class)
}

func (s rangedSink) StartFeed(next func() (cache.Want, bool)) readahead.FeedHandle {
	return s.inner.StartFeed(s.fs.ranged.expandFeed(s.fs.arrayOf, next, nil))
}
