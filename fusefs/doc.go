// Package fusefs is the FUSE adapter of zarrfs: bazil.org/fuse nodes and
// handles that translate kernel requests into calls on the file system core
// (package vfs) and its errors into errnos — the only place errnos are made
// — the bazil mount and serve wiring, the kernel entry invalidation the
// core asks for on refresh, the control socket published as an extended
// attribute of the mount root, and the mountpoint utilities (checks, dead
// mounts, unmount). It must not know the store model, the cache or the
// origin: what it serves comes from vfs.
package fusefs
