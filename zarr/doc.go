// Package zarr understands the zarr v2 and v3 storage formats well enough to
// present a store as a file tree: which groups and arrays exist, which metadata
// documents each directory holds, which chunk file names can exist inside an
// array's directory, and where each inner chunk lies inside a v3 shard.
//
// It is pure format code: it never touches the network or the disk, so every
// function takes the bytes of a document and returns plain values. The FUSE
// layer uses it to answer lookups for names outside an array's chunk grid
// without a network request, and to build the directory tree from
// consolidated metadata.
//
// Errors about a document are *MetadataError values naming the document and
// the field; they wrap ErrInvalid (the document breaks the format) or
// ErrUnsupported (the document is valid but uses something this package does
// not implement), so callers can tell a broken store from a too-new one.
package zarr
