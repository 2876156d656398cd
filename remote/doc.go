// Package remote is zarrfs's wire protocol: it reads a zarr store from an
// HTTP(S) origin (nginx, Apache, python -m http.server, Go's file server, an
// object store, or `zarrfs serve`).
//
// The Client fetches whole objects (Get for small metadata documents, Fetch
// for chunks streamed to a writer) and lists directories from the origin's
// directory index (List, backed by the pure parser ParseIndex). Everything a
// caller branches on is a sentinel error checked with errors.Is: ErrNotFound
// (which also matches io/fs.ErrNotExist), ErrUnauthorized, ErrForbidden,
// ErrUnreachable, ErrTLS, ErrNoListing and ErrChanged. Any other unexpected
// HTTP status is a *StatusError.
//
// Transient failures (connection errors, stalls, 429, 5xx except 501) are
// retried with jittered exponential backoff inside a time budget; a Fetch
// whose body breaks resumes with a Range request pinned to the object's strong
// ETag, so the writer receives every byte exactly once or the call fails.
//
// The bearer token is sent in a header only: it never appears in a URL, a log
// record or an error message.
package remote
