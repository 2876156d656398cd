package vfs

// Ranged reads of large objects. A v3 shard holds many inner chunks and a
// reader usually wants a few of them; a big plain chunk is better fetched
// in pieces the reader can start on while the rest is still coming. Both
// are read and cached in blocks (their geometry is package blocks) instead
// of whole, when their version is known (a block of one version must never
// meet a block of another, so every range request carries If-Match). A
// shard's index is read once (by a range, or with the suffix request that
// learns the shard's size on an origin without a manifest) and kept in
// memory with its table.
//
// Each block is a cache range entry, so a partially read shard keeps (and
// serves) exactly the blocks that were read. This file loads and keeps the
// block tables; expand.go turns predicted objects into their blocks;
// ranged_handle.go reads an open object by blocks.
//
// An origin that answers a range request with the whole object (200) turns
// ranged reads off for the rest of the mount: objects are then read whole.
//
// Lock order: the table LRUs and the shared loads lock internally. Nothing
// here holds a lock while calling the cache or the origin.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/internal/sharedload"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/vfs/blocks"
	"github.com/zarrfs/zarrfs/zarr"
)

// Table memory and bookkeeping limits.
const (
	// tableCacheSize tables keep shard indexes of at most
	// blocks.MaxIndexInMemory bytes each: tens of MB.
	tableCacheSize = 256
	missingShards  = 16384
)

// rangedObjects decides which objects are read by ranges and holds their
// block tables.
type rangedObjects struct {
	cache  Cache
	origin Origin
	log    *slog.Logger

	tables  *lru.Cache[string, *blocks.Table] // key "\x00" version -> table
	learned *lru.Cache[string, *blocks.Table] // key -> table learned without a manifest
	// missing remembers shards the origin does not have (fill_value): a
	// lookup of one is asked once, like the cache's memory of missing keys.
	missing *lru.Cache[string, error]
	// loads share a table's load among readers; it runs on the mount's
	// lifetime, so a reader giving up does not fail the others.
	loads *sharedload.Group[*blocks.Table]
	// unsupported is set once the origin answered a range with the whole
	// object: everything is read whole from then on.
	unsupported atomic.Bool
	warnedIndex atomic.Bool

	life context.Context // the mount's lifetime: expansions and loads end with it
	jobs chan expandJob
	wg   sync.WaitGroup

	stats rangedCounters
}

type rangedCounters struct {
	objects   atomic.Int64 // opens served by ranges
	tables    atomic.Int64 // block tables built
	badIndex  atomic.Int64 // shards whose index could not be used
	expanded  atomic.Int64 // predicted objects expanded into blocks
	dropped   atomic.Int64 // expansions dropped: queue full
	blockOpen atomic.Int64 // block opens
}

// RangedStats count ranged reads.
type RangedStats struct {
	Objects     int64 `json:"objects"`     // opens of shards and big objects served by blocks
	Tables      int64 `json:"tables"`      // block tables built (shard indexes read)
	BadIndexes  int64 `json:"bad_indexes"` // shard indexes that failed to parse: read in fixed blocks
	Expanded    int64 `json:"expanded"`    // predicted objects prefetched as blocks
	BlockOpens  int64 `json:"block_opens"` // block entries opened for readers
	Dropped     int64 `json:"dropped"`     // predicted objects not prefetched: the expansion queue was full
	Unsupported bool  `json:"unsupported"` // the origin ignores ranges: objects are read whole
}

// newRangedObjects starts the expansion workers; they stop when life ends.
func newRangedObjects(life context.Context, c Cache, origin Origin, log *slog.Logger) *rangedObjects {
	r := &rangedObjects{
		cache:   c,
		origin:  origin,
		log:     log,
		tables:  must(lru.New[string, *blocks.Table](tableCacheSize)),
		learned: must(lru.New[string, *blocks.Table](tableCacheSize)),
		missing: must(lru.New[string, error](missingShards)),
		loads:   sharedload.New[*blocks.Table](life),
		life:    life,
		jobs:    make(chan expandJob, expandQueue),
	}
	for range expandWorkers {
		r.wg.Go(r.expandLoop)
	}
	return r
}

// close waits for the expansion workers, once the lifetime has ended.
func (r *rangedObjects) close() {
	<-r.life.Done()
	r.wg.Wait()
}

// RangedStats reports the counters of ranged reads.
func (f *FS) RangedStats() RangedStats {
	r := f.ranged
	return RangedStats{
		Objects: r.stats.objects.Load(), Tables: r.stats.tables.Load(), BadIndexes: r.stats.badIndex.Load(),
		Expanded: r.stats.expanded.Load(), BlockOpens: r.stats.blockOpen.Load(), Dropped: r.stats.dropped.Load(),
		Unsupported: r.unsupported.Load(),
	}
}

// forget drops what was learned without a manifest: after the store
// changed, sizes and versions must be asked for again.
func (r *rangedObjects) forget() {
	r.learned.Purge()
	r.missing.Purge()
}

// eligible says whether an object of that version and size is read by
// ranges: a shard larger than one block (a smaller one costs one request
// whole, two by ranges), a big plain object, or any object whose table is
// known already (a shard learned without a manifest).
func (r *rangedObjects) eligible(arr *zarr.Array, key, version string, size int64) bool {
	if r.unsupported.Load() || version == "" {
		return false
	}
	if idx := blocks.ShardIndexSize(arr); idx > 0 && size >= idx && size > blocks.ShardBlockBytes {
		return true
	}
	return size >= blocks.BigObjectBytes || r.tables.Contains(key+"\x00"+version)
}

// noteUnsupported turns ranged reads off when err says the origin ignores
// ranges, and reports whether it did.
func (r *rangedObjects) noteUnsupported(err error) bool {
	if !errors.Is(err, remote.ErrRangesUnsupported) && !errors.Is(err, cache.ErrNoRanges) {
		return false
	}
	if !r.unsupported.Swap(true) {
		r.log.Warn("the origin ignores byte ranges: shards and big chunks are read whole", "err", err)
	}
	return true
}

// table returns the block table of key at version (size bytes), reading a
// shard's index if it is not known yet. Concurrent calls share one load.
func (r *rangedObjects) table(ctx context.Context, arr *zarr.Array, key, version string, size int64) (*blocks.Table, error) {
	id := key + "\x00" + version
	if t, ok := r.tables.Get(id); ok {
		return t, nil
	}
	return r.loads.Do(ctx, id, func(life context.Context) (*blocks.Table, error) {
		if t, ok := r.tables.Get(id); ok {
			return t, nil
		}
		t, err := r.load(life, arr, key, version, size)
		if err != nil {
			return nil, err
		}
		r.tables.Add(id, t)
		return t, nil
	})
}

func (r *rangedObjects) load(ctx context.Context, arr *zarr.Array, key, version string, size int64) (*blocks.Table, error) {
	idxLen := blocks.ShardIndexSize(arr)
	if idxLen == 0 || size < idxLen {
		return blocks.FixedTable(version, size, blocks.PlainBlockBytes), nil
	}
	fr := blocks.IndexFetchRange(arr, size)
	rd, err := r.cache.OpenRange(ctx, key, version, fr.Off, fr.N)
	if err != nil {
		return nil, fmt.Errorf("read the index of shard %s: %w", key, err)
	}
	tail := make([]byte, fr.N)
	_, err = rd.ReadAt(tail, 0)
	_ = rd.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read the index of shard %s: %w", key, err)
	}
	return r.shardOrFixed(arr, key, version, size, tail), nil
}

// shardOrFixed builds a shard's table from its index, or fixed blocks
// when the index is unusable (the bytes are still served as they are).
func (r *rangedObjects) shardOrFixed(arr *zarr.Array, key, version string, size int64, tail []byte) *blocks.Table {
	r.stats.tables.Add(1)
	t, err := blocks.ShardTable(arr, version, size, tail)
	if err == nil {
		return t
	}
	r.stats.badIndex.Add(1)
	if !r.warnedIndex.Swap(true) {
		r.log.Warn("a shard index on the origin is damaged; that shard is read in fixed blocks (rewrite it to fix; later ones are counted in stats, not logged)",
			"key", key, "err", err)
	}
	return blocks.FixedTable(version, size, blocks.ShardBlockBytes)
}

// learn finds the size and version of a shard on an origin without a
// manifest: one suffix request reads the index and says both. ok is false
// when the shard cannot be read by ranges (no strong ETag, an origin that
// ignores ranges, an object smaller than its index): it is then read whole.
func (r *rangedObjects) learn(ctx context.Context, arr *zarr.Array, key string) (t *blocks.Table, ok bool, err error) {
	idxLen := blocks.ShardIndexSize(arr)
	if idxLen == 0 || r.unsupported.Load() {
		return nil, false, nil
	}
	if arr.Shard.IndexAtStart {
		return nil, false, nil // the size is only learned from the end
	}
	if t, ok := r.learned.Get(key); ok {
		return t, true, nil
	}
	if err, ok := r.missing.Get(key); ok {
		return nil, false, err
	}
	t, err = r.loads.Do(ctx, "learn\x00"+key, func(life context.Context) (*blocks.Table, error) {
		// The index and the page before it: enough for the index's fetch
		// range whatever the size turns out to be.
		var buf bytes.Buffer
		p, err := r.origin.FetchSuffix(life, key, "", idxLen+blocks.PageSize, &buf)
		if err != nil {
			if r.noteUnsupported(err) {
				return nil, nil
			}
			if errors.Is(err, fs.ErrNotExist) {
				r.missing.Add(key, err)
			}
			return nil, err
		}
		if p.ETag == "" || p.Total < idxLen || p.Offset+p.Length != p.Total || int64(buf.Len()) != p.Length {
			return nil, nil
		}
		fr := blocks.IndexFetchRange(arr, p.Total)
		if fr.Off < p.Offset {
			return nil, nil
		}
		t := r.shardOrFixed(arr, key, p.ETag, p.Total, buf.Bytes()[fr.Off-p.Offset:])
		r.learned.Add(key, t)
		r.tables.Add(key+"\x00"+p.ETag, t)
		return t, nil
	})
	return t, t != nil && err == nil, err
}

// forgetVersion drops what was learned about key at version, which the
// origin no longer has: its block table, and the size and version learned
// without a manifest, so the next lookup asks the origin again.
func (r *rangedObjects) forgetVersion(key, version string) {
	r.tables.Remove(key + "\x00" + version)
	if t, ok := r.learned.Peek(key); ok && t.Version == version {
		r.learned.Remove(key)
	}
}

// learnPlain finds the size and version of an object the manifest is out
// of date for, with a one-byte suffix request; ok is false when the origin
// cannot say (no strong ETag, no ranges).
func (r *rangedObjects) learnPlain(ctx context.Context, key string) (t *blocks.Table, ok bool, err error) {
	if r.unsupported.Load() {
		return nil, false, nil
	}
	if t, ok := r.learned.Get(key); ok {
		return t, true, nil
	}
	t, err = r.loads.Do(ctx, "plain\x00"+key, func(life context.Context) (*blocks.Table, error) {
		p, err := r.origin.FetchSuffix(life, key, "", 1, io.Discard)
		if err != nil {
			if r.noteUnsupported(err) {
				return nil, nil
			}
			return nil, err
		}
		if p.ETag == "" || p.Offset+p.Length != p.Total {
			return nil, nil
		}
		t := blocks.FixedTable(p.ETag, p.Total, blocks.PlainBlockBytes)
		r.learned.Add(key, t)
		return t, nil
	})
	return t, t != nil && err == nil, err
}

// staleIfChanged turns a read failure that says the object changed on the
// origin (remote.ErrChanged) into noteChanged's ErrStale.
func (f *FS) staleIfChanged(c *File, err error) error {
	if errors.Is(err, remote.ErrChanged) {
		return f.noteChanged(c, err)
	}
	return err
}

// noteChanged is told that the origin no longer holds c's version of its
// object (err says how that was found). It forgets that version and what
// was derived from it (the block table, the learned size and version, the
// File the kernel is handed on lookup), so that the next lookup learns the
// new version from the origin (or from a manifest that has it) and the
// kernel gets a new inode, whose size and pages are the new version's:
// data of two versions never meet in one inode. Handles open on c keep
// their version: blocks already cached are served, the others fail. It
// returns err wrapped in ErrStale for the read or open that found it.
func (f *FS) noteChanged(c *File, err error) error {
	if !c.changed.Swap(true) {
		f.log.Warn("object changed on the origin; the next open reads the new version", "key", c.key, "version", c.version, "err", err)
	}
	c.dropFirst() // its opens are refused: the lookup's reader is of no use
	f.ranged.forgetVersion(c.key, c.version)
	if c.version != "" {
		f.staleVersions.Add(c.key+"\x00"+c.version, struct{}{})
	}
	f.filesMu.Lock()
	if n, ok := f.files[c.key]; ok && n.version == c.version {
		// Another File of the same version (made after a refresh) is just
		// as out of date.
		n.changed.Store(true)
		delete(f.files, c.key)
	}
	f.filesMu.Unlock()
	return fmt.Errorf("%w: %w", ErrStale, err)
}

// staleVersion says whether version of key is known to be gone from the
// origin although the manifest still names it.
func (f *FS) staleVersion(key, version string) bool {
	return version != "" && f.staleVersions.Contains(key+"\x00"+version)
}
