package vfs

import "errors"

// ErrStale means an object changed on the origin since it was looked up:
// the kernel still holds its old size, so it is refused rather than served
// as a mix of versions. It wraps the cause (often remote.ErrChanged).
var ErrStale = errors.New("object changed on the origin since it was looked up")

// ErrHandleClosed is returned by a read on a handle already released.
var ErrHandleClosed = errors.New("file handle is closed")

// ErrNotCached is what an Invalidator returns for an entry the kernel does
// not hold: nothing to forget, and not a failure.
var ErrNotCached = errors.New("entry not cached by the kernel")
