// Package cache keeps the chunks of one remote store on local disk under a
// byte budget, fetching each on first access from a Source.
//
// A key is fetched once however many readers ask for it at the same time, on
// the cache's own lifetime context: a reader that gives up (a FUSE interrupt)
// stops waiting but does not stop the fetch, so the data still lands in the
// cache for the next reader. Keys the origin reports missing are remembered,
// because a missing chunk is normal in zarr (it means fill_value) and is asked
// for again and again.
//
// Entries are plain files under Options.Dir, written to a temp file and renamed
// into place, indexed in memory in least-recently-used order and evicted
// (unlinked) to keep the total within Options.MaxBytes. A Reader holds an open
// file, so eviction never disturbs a read in progress. When the disk cannot
// take an entry (full, read-only, failing) the read is served from memory
// instead: the cache degrades, the read does not fail.
//
// The package does not know about HTTP: the remote client satisfies Source.
package cache
