package cache

// Byte ranges of large objects (the inner chunks of a v3 shard, blocks of a
// big chunk), each cached as an entry of its own, addressed by (namespace,
// key, offset, length) and pinned to one version of the object. They share
// everything else with whole objects: flights, the scheduler, the budget,
// the eviction policy, pins. No locks of their own: see cache.go.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
)

// RangeSource is implemented by Sources that can read part of an object.
// FetchRange streams exactly bytes [off, off+n) of version `version` (a
// strong ETag, never "") of key into w. If the object is no longer that
// version it fails with an error the caller can recognise (the fusefs
// adapter returns remote.ErrChanged wrapped; the cache passes errors through
// wrapped with context, and never caches anything from such a fetch). A
// Source whose origin ignores ranges returns an error too
// (remote.ErrRangesUnsupported).
type RangeSource interface {
	FetchRange(ctx context.Context, key, version string, off, n int64, w io.Writer) error
}

// ErrNoRanges: the cache's Source is not a RangeSource (OpenRange and
// ranged Wants fail with it).
var ErrNoRanges = errors.New("the cache's source cannot fetch byte ranges")

// ErrRangeLength: the Source delivered more or fewer bytes than the range
// asked for. Nothing of such a fetch is kept.
var ErrRangeLength = errors.New("the source delivered a range of the wrong length")

// OpenRange returns a Reader over bytes [off, off+n) of version `version` of
// key (Reader.Size() == n, ReadAt offsets relative to off). version must not
// be "". The range is its own entry, addressed by (namespace, key, off, n)
// and recording version: a cached entry of the same version is used with no
// request, whoever wrote it (also one left by an earlier run: the version is
// the proof, so there is no revalidation); another version is replaced by a
// fetch. Concurrent OpenRanges of the same range cause one fetch, and an
// OpenRange joins a prefetch of the same range and version (promoting it).
// Everything else behaves like OpenVersion: the fetch runs on the cache's
// lifetime (ctx only ends the wait, and then OpenRange returns ctx.Err()
// unwrapped), the read is served from memory when the disk fails, the entry
// is pinned while the Reader is open, and MarkStale does not affect it. A
// fetch that delivers fewer or more than n bytes fails with ErrRangeLength
// and nothing is kept; the Source's errors come back wrapped, with nothing
// kept either.
func (c *Cache) OpenRange(ctx context.Context, key, version string, off, n int64) (*Reader, error) {
	rng := span{off: off, n: n}
	if err := c.checkRange(key, version, rng); err != nil {
		return nil, err
	}
	return c.open(ctx, key, version, rng)
}

// checkRange says why rng of key at version cannot be fetched, if it cannot.
func (c *Cache) checkRange(key, version string, rng span) error {
	switch {
	case version == "":
		return fmt.Errorf("open range of %q: no version: a range is only cached for a known version (strong ETag)", key)
	case rng.off < 0 || rng.n <= 0 || rng.off > math.MaxInt64-rng.n:
		return fmt.Errorf("open range of %q: offset %d and length %d: want offset >= 0 and length > 0", key, rng.off, rng.n)
	}
	if _, ok := c.src.(RangeSource); !ok {
		return fmt.Errorf("open %s: %w", rng.describe(key), ErrNoRanges)
	}
	return nil
}

// rangeFetch is the request for rng of key at version; checkRange made sure
// the Source is a RangeSource.
func (c *Cache) rangeFetch(key, version string, rng span) getFunc {
	rs := c.src.(RangeSource)
	return func(w io.Writer) (string, bool, error) {
		ew := &exactWriter{w: w, limit: rng.n}
		err := rs.FetchRange(c.ctx, key, version, rng.off, rng.n, ew)
		switch {
		case ew.overflow:
			// Whatever the Source made of our refusal, the cause is this.
			return "", false, fmt.Errorf("%w: more than %d bytes", ErrRangeLength, rng.n)
		case err != nil:
			return "", false, err
		case ew.n != rng.n:
			return "", false, fmt.Errorf("%w: %d bytes, want %d", ErrRangeLength, ew.n, rng.n)
		}
		return version, true, nil
	}
}

// exactWriter passes on at most limit bytes and refuses the rest, so a
// Source sending too much fails before anything past the range is written.
type exactWriter struct {
	w        io.Writer
	limit, n int64
	overflow bool
}

func (e *exactWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > e.limit-e.n {
		e.overflow = true
		return 0, fmt.Errorf("%w: more than %d bytes", ErrRangeLength, e.limit)
	}
	n, err := e.w.Write(p)
	e.n += int64(n)
	return n, err
}
