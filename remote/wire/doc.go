// Package wire is what both ends of the zarrfs wire agree on: the manifest
// format (its media type, version, records, encoder and decoder), where the
// manifest lives below a store's URL, how `zarrfs serve` spells a file's
// ETag, and how a certificate's fingerprint (--pin) is written.
//
// It is imported by the client (package remote) and by the server (package
// remote/serve), which never import each other. It must not know about
// HTTP requests, retries, caches, directories being served or the client's
// in-memory manifest: it only turns values into bytes and bytes into values.
package wire
