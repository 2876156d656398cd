// Package serve is the server of `zarrfs serve`: a read-only HTTP(S) origin
// for zarr stores on this machine's disks.
//
// It owns the request handling (path checks confined by an os.Root, files
// with strong ETags, RFC 9110 ranges and conditionals, HTML directory
// indexes, the access log), bearer-token checks (TokenSet), the server's
// certificate (LoadCert, LoadOrCreateCert, TLSConfig), and the manifest
// endpoint: a per-request walk of the tree, and per store an index built
// once and kept current with inotify.
//
// What it shares with the client (the manifest wire format, the manifest's
// path, the spelling of a file's ETag, certificate fingerprints) is package
// wire's. It must not import the client (package remote) or know about
// mounts, caches or zarr metadata beyond the file names that mark a store.
//
// Files: server.go (Server, ServeHTTP, files), ranges.go, dirindex.go,
// logwriter.go, tokens.go, cert.go; manifest.go (the endpoint), walk.go,
// listdir.go, statpipe.go, sortents.go (the walk and the directory
// listings it is made of); index.go (an index's lifecycle and lock order),
// index_set.go (the indexes' LRU), index_scan.go, index_inotify.go,
// idxdir.go (a watched directory's sorted entries), index_encode.go.
package serve
