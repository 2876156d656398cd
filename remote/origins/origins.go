// Package origins has one job: open the remote.Origin for a store URL by its
// scheme — http(s):// through remote.Open, s3:// and gs:// through
// remote/s3. It exists because remote cannot import its own backends
// (remote/s3 imports remote); the composition root calls Open.
package origins

import (
	"context"
	"fmt"
	"net/url"

	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/s3"
)

// Options configures whichever origin the URL asks for.
type Options struct {
	// Remote applies to every origin (retries, timeouts, CA, token, logger).
	Remote remote.Options
	// S3 applies to s3:// and gs://; its own Remote field is ignored.
	S3 s3.Options
}

// Open returns the Origin for rawURL. It sends no request.
func Open(ctx context.Context, rawURL string, opts Options) (remote.Origin, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("store URL %q: %w", rawURL, err)
	}
	switch u.Scheme {
	case "s3", "gs":
		so := opts.S3
		so.Remote = opts.Remote
		return s3.Open(ctx, rawURL, so)
	case "http", "https":
		if opts.S3.Endpoint != "" || opts.S3.Region != "" || opts.S3.Anonymous || opts.S3.Addressing != "" {
			return nil, fmt.Errorf("store URL %s: the --s3-* options are for s3:// and gs:// URLs", u.Redacted())
		}
		return remote.Open(rawURL, opts.Remote)
	}
	return nil, fmt.Errorf("store URL %q: unsupported scheme %q (use https://, http://, s3:// or gs://)", rawURL, u.Scheme)
}

// IsObjectStore reports whether rawURL names a bucket (s3:// or gs://).
func IsObjectStore(rawURL string) bool {
	u, err := url.Parse(rawURL)
	return err == nil && (u.Scheme == "s3" || u.Scheme == "gs")
}
