// Package remote is the client side of zarrfs's wire: it reads a zarr store
// from an origin. Origin is the interface the rest of zarrfs uses; the
// HTTP(S) Client implements it for static origins (nginx, Apache, python -m
// http.server, Go's file server, object stores over HTTPS) and for `zarrfs
// serve`, and S3 or GCS origins implement it next to it (Open chooses by
// the URL's scheme). Every backend is checked with the shared suite in
// remote/origintest.
//
// The Client fetches whole objects (Get for small metadata documents, Fetch
// for chunks streamed to a writer), ranges (FetchRange, FetchSuffix),
// revalidates (FetchIfChanged), lists directories from the origin's
// directory index (List, backed by the pure parser ParseIndex), and reads
// `zarrfs serve`'s manifest into a Manifest. Everything a caller branches on
// is a sentinel error checked with errors.Is: ErrNotFound (which also
// matches io/fs.ErrNotExist), ErrUnauthorized, ErrForbidden, ErrUnreachable,
// ErrTLS, ErrNoListing, ErrNoManifest and ErrChanged. Any other unexpected
// HTTP status is a *StatusError.
//
// Transient failures (connection errors, stalls, 429, 5xx except 501) are
// retried with jittered exponential backoff inside a time budget; a Fetch
// whose body breaks resumes with a Range request pinned to the object's strong
// ETag, so the writer receives every byte exactly once or the call fails.
//
// The bearer token is sent in a header only: it never appears in a URL, a log
// record or an error message. With a pin (Options.Pin) the client accepts
// exactly one certificate.
//
// It must not know the server: the server is package remote/serve, which
// remote never imports; what both ends share (the manifest wire format, the
// manifest's path, ETag spelling, certificate fingerprints) is package
// remote/wire. Nor does it know about caches, mounts or zarr metadata.
package remote
