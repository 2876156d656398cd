// Package s3 has one job: it is the remote.Origin for a zarr store kept in an
// S3-compatible bucket (AWS S3, Cloudflare R2, MinIO, Ceph RGW, versitygw)
// or in a Google Cloud Storage bucket through GCS's S3-compatible XML API.
// Requests go through github.com/aws/aws-sdk-go-v2/service/s3: its default
// credential chain (environment, AWS_PROFILE and the shared files, web
// identity, instance metadata), its credential cache (temporary credentials
// are refreshed before they expire, without a remount) and its SigV4 signer.
// Nothing here signs by hand. GetObject, the hot path, is sent as a plain
// net/http request built from the same SDK parts (endpoint resolver,
// credential cache, v4.Signer, retryer) without the SDK's per-operation
// middleware stack, which cost as much CPU as the rest of a small read
// (fastget.go).
//
// # Versions, ranges, revalidation
//
// An object's version is its ETag exactly as S3 sends it (quotes kept).
// Ranged reads send Range with If-Match: version, so the pieces of one
// object never come from two versions (412 is remote.ErrChanged). A whole
// read whose body breaks resumes from the byte it stopped at, also under
// If-Match. FetchIfChanged sends If-None-Match (a 304 transfers nothing).
//
// # The manifest comes from listing, when the store is small enough
//
// Manifest lists the store's prefix (ListObjectsV2, no delimiter, 1000 keys
// a page) and returns every key with its exact size and ETag, so the file
// system knows sizes, versions and absent chunks without one request per
// chunk, and refresh learns exactly which keys changed. Listing costs one
// request per 1000 keys at mount and at each refresh, so it is capped:
// Options.ManifestMaxKeys (default 20000, 20 requests). A store with more
// keys gives remote.ErrNoManifest and is read like an HTTP origin: from its
// consolidated metadata, else by listing one directory at a time (List),
// and a refresh then revalidates metadata documents and chunks one by one.
// Such a store is taken to stay over the cap for an hour, so a refresh
// does not list the cap's worth of keys again to learn it: it lists only
// the groups, one delimited listing each.
// A store that grows past the cap while mounted keeps its manifest (a
// refresh lists up to 10 times the cap) so it does not lose its versions.
// Credentials without list permission give remote.ErrNoManifest and
// remote.ErrNoListing: such a store needs consolidated metadata.
//
// # The 403 rule
//
// S3 answers a GET of a missing key with 404 NoSuchKey only when the caller
// may list the bucket (s3:ListBucket); otherwise it answers 403
// AccessDenied, exactly as for an existing key it may not read. In zarr a
// missing chunk is normal (it reads as the fill value), so zarrfs must not
// turn every missing chunk into an I/O error, nor guess. The rule:
//
//  1. With a manifest (the credentials can list), absence is known from the
//     listing; the file system does not ask for a key that is not in it.
//  2. A 403 AccessDenied to a GET is remote.ErrForbidden when the
//     credentials can list the store's prefix (a missing key would have been
//     a 404), or when it is not known whether they can.
//  3. When they cannot (ListObjectsV2 on the prefix answered AccessDenied,
//     asked once, the first time it matters), a 403 AccessDenied to a GET is
//     remote.ErrNotFound: the key is read as missing. The first such answer
//     is logged at warning level, naming the rule. A store of which nothing
//     at all can be read then fails to mount as "not a zarr store": grant
//     s3:GetObject on the prefix (docs/s3.md).
//
// Other 403s are never read as missing: a wrong secret
// (SignatureDoesNotMatch), an unknown key id (InvalidAccessKeyId) or an
// expired token fail with a message that names the fix.
//
// # Retries
//
// The SDK's adaptive retry mode retries connection errors, 5xx and
// throttling (503 SlowDown, 429) with jittered exponential backoff capped at
// 5 s, honours Retry-After, and, once a provider throttles, slows the rate
// at which this origin sends requests (shared by all requests of the
// mount). There is no retry quota that could fail reads under load. Each
// operation's retries are bounded by remote.Options.RetryDeadline, counted
// from its start or from the last byte it received; a body that stalls for
// StallTimeout is cut and resumed. An operation that spends its budget
// without a usable answer marks the origin down (remote.Health, shared
// with remote.Client's behaviour): operations then fail at once with
// remote.ErrUnreachable while one probe at a time checks whether it is
// back. Traffic is counted in remote.Counters, the counters every origin
// keeps for `zarrfs stats` and /metrics.
//
// # GCS
//
// gs://bucket/prefix goes to https://storage.googleapis.com with the same
// requests, unsigned, and "Authorization: Bearer TOKEN" (gcs.go). The token
// comes from Options.TokenFile (re-read when it changes), else
// remote.Options.Token, else Google's Application Default Credentials
// (golang.org/x/oauth2/google: GOOGLE_APPLICATION_CREDENTIALS, gcloud's
// application_default_credentials.json, the GCE metadata server) with the
// read-only storage scope, whose tokens are renewed before they expire.
// Without any of them, or with Options.Anonymous, requests are anonymous
// (public buckets).
package s3
