// Package vfs is the file system logic of a zarrfs mount, free of FUSE: the
// current version of the store (swapped whole by a refresh), lookups and
// directory listings over its tree and chunk grid, metadata documents held
// in memory, chunk files opened through the disk cache — whole, or by
// blocks for shards and big objects (geometry in vfs/blocks) — the
// expansion of predicted shards into blocks, explicit prefetch jobs, and
// the counters of all that.
//
// It speaks plain Go: nodes are *Dir and *File, an open file is a Handle,
// and errors wrap sentinels (io/fs.ErrNotExist, the remote and cache
// sentinels, context.Canceled, ErrStale, ErrHandleClosed); it never returns
// an errno and must not import bazil.org/fuse. The kernel appears only as
// an Invalidator, which the FUSE adapter (package fusefs) implements.
package vfs
