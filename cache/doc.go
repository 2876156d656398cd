// Package cache keeps the objects (chunks, shards) of one remote store on
// local disk under a byte budget and a free-space floor, fetching each on
// first access from a Source, and never serves bytes it cannot vouch for.
//
// # Reads
//
// A key is fetched once however many readers ask for it at the same time, on
// the cache's own lifetime context: a reader that gives up (a FUSE interrupt)
// stops waiting but does not stop the fetch, so the data still lands in the
// cache for the next reader. Keys the origin reports missing are remembered,
// because a missing chunk is normal in zarr (it means fill_value) and is asked
// for again and again. When the disk cannot take an entry (full, read-only,
// failing) the read is served from memory instead and the failure is logged
// once: the cache degrades, the read does not fail.
//
// # Versions
//
// An entry is addressed by (origin, key) and records the version of the
// object it holds (its strong ETag, or the version in a manifest). A caller
// that knows the current version (OpenVersion) gets the entry only if the
// versions match, with no request. A caller that does not (Open) gets entries
// this process fetched or revalidated; an entry left by an earlier run is
// revalidated first with a conditional request (the Source's FetchIfChanged:
// If-None-Match, or If-Modified-Since for the remote package's Last-Modified
// versions): 304 keeps it, a new version replaces it. An entry without a
// version cannot be revalidated and is dropped at start. A revalidation
// that fails (the origin is down) fails the Open and keeps the entry: only
// the origin's own "not found" removes one.
//
// # Ranges
//
// A large object (a v3 shard, a big chunk) need not be cached whole: with a
// Source that is also a RangeSource, OpenRange and ranged Wants cache
// byte ranges of it (the caller aligns them: inner chunks of a shard, blocks
// of a chunk), each an entry of its own addressed by (origin, key, offset,
// length). A range is always fetched and used at a known version (a strong
// ETag), which the Source makes the origin enforce (If-Match), so the ranges
// of one object never mix two versions and a range entry is never
// revalidated: a matching version is its proof, another version replaces it.
// Ranges of one object, and its whole entry, coexist independently; each is
// counted, pinned, prefetched and evicted like any entry, so a partially
// cached shard serves the ranges it has.
//
// # On disk
//
//	Dir/lock                   flock'ed by the Cache that owns Dir; holds its pid
//	Dir/tmp/fetch-*            fetches in progress; removed at start
//	Dir/entries/ab/abcd…ef     one file per entry; the name is the hex SHA-256
//	                           of SHA-256(origin URL) followed by the key,
//	                           and for a range by "\x00range\x00", its
//	                           offset and its length (8 bytes each, LE)
//
// An entry file is a header, then the object's bytes (or the range's):
//
//	magic "ZARRFSCE", format version 1, kind (0 = whole object, 1 = byte
//	range), header length H, SHA-256 of the origin URL, data length,
//	CRC32C of the data, [kind 1: offset and length of the range], key,
//	version (room for 255 bytes), CRC32C of the header
//	data: bytes H .. H+length
//
// Kind 1 was added without a new format version: whole entries are
// unchanged, and a build that does not know kind 1 finds such entries
// corrupt and removes them at start, which only costs refetches.
//
// (field by field in entry.go). A fetch streams into a temp file after room
// for the header, computing the data's CRC32C as it goes; the header is
// written last and the file renamed into place. There is no fsync: after a
// power loss a renamed file may be torn, truncated or zero-filled, which its
// length and checksums reveal, and a bad entry is never served, only fetched
// again, so durability is not needed for correctness.
//
// # Integrity
//
// New removes the temp files, reads every entry's header and checks its
// checksum, that the name is the hash of the key (and range) it records (so
// an entry swapped with another, or a range with another range of the same
// object, is caught) and that the file length is the header's
// plus the data length; bad files are removed. The data is checked each time
// an entry is opened (length and CRC32C over all of it, which also warms
// the page cache for the read that follows); a damaged entry is removed,
// counted (Stats.CorruptEntries) and fetched again. Reading every byte at
// start instead would delay a mount by minutes for a large cache.
//
// # Budget and eviction
//
// Entry files stay within Options.MaxBytes at all times (only the temp files
// of fetches in flight come on top), and the cache shrinks before each
// insert to leave Options.MinFreeBytes free on its file system. Entries open
// by a Reader are pinned: eviction passes over them, and a new entry that
// would only fit by evicting pinned ones is served without being kept, as is
// an entry larger than the budget. The eviction policy (policy.go) keeps a
// stable part of a dataset that is read every epoch in a new order and is
// larger than the cache, where LRU would hit only by luck.
//
// # Prefetching
//
// Prefetch and Feeds bring objects (and ranges) in before a reader asks
// (sched.go, sched_feed.go). Every fetch has a Priority: a reader's own
// fetch (PriorityDemand) starts at once; prefetches wait in a queue per
// priority and start, highest first, within a limit on requests in flight
// and a link budget (the bytes requested and not yet received stay under
// about twice the measured bandwidth-delay product), which PriorityUrgent
// does not wait for. An Open of a key being prefetched joins that fetch,
// promoting it to demand, and never makes a second request. A prefetched
// entry nobody has read yet is protected from eviction by newer prefetches,
// and the bytes of such entries are bounded, so prefetching never crowds
// out a reader's own data. A prefetch no reader waits for is never held in
// memory: when the disk cannot take it, it is dropped.
//
// The package does not know about HTTP (the remote client satisfies Source)
// nor why a caller prefetches: it is given priorities, whose scheduling
// Priority documents, and which object deserves which is the caller's
// decision.
package cache
