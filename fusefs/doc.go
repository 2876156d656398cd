// Package fusefs presents a remote zarr store as a read-only directory tree
// through FUSE: it learns the store's tree (consolidated metadata or the
// origin's directory index), serves metadata documents from memory and chunk
// files through the disk cache, and translates errors to errno at this one
// boundary. It is the only package that imports bazil.org/fuse.
package fusefs
