package vfs

import "errors"

// ErrStale means an object changed on the origin since it was looked up:
// the kernel still holds its old size (and maybe pages of the old version),
// so it is refused rather than served as a mix of versions. It wraps the
// cause (often remote.ErrChanged). The File of the old version is then
// forgotten (FS.noteChanged): its opens fail with ErrStale too, which Linux
// answers by looking the name up again, getting the new version.
var ErrStale = errors.New("object changed on the origin since it was looked up")

// ErrHandleClosed is returned by a read on a handle already released.
var ErrHandleClosed = errors.New("file handle is closed")

// ErrNotCached is what an Invalidator returns for an entry the kernel does
// not hold: nothing to forget, and not a failure.
var ErrNotCached = errors.New("entry not cached by the kernel")
