package s3

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

// GCSScope is the OAuth scope zarrfs asks Application Default Credentials
// for: reading objects and listing them, nothing more.
const GCSScope = "https://www.googleapis.com/auth/devstorage.read_only"

// findDefaultCredentials is google.FindDefaultCredentials; tests replace it
// to stand for a machine without credentials without probing for a GCE
// metadata server.
var findDefaultCredentials = google.FindDefaultCredentials

// bearerMiddleware adds "Authorization: Bearer TOKEN" to every GCS request
// after the (anonymous, so absent) signature: GCS's XML API takes OAuth
// tokens where S3 takes SigV4. It runs once per attempt, so a retried or
// resumed request carries a token that is valid then.
func (o *Origin) bearerMiddleware(stack *middleware.Stack) error {
	return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("zarrfsBearerToken",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			req, ok := in.Request.(*smithyhttp.Request)
			if !ok || o.bearer == nil {
				return next.HandleFinalize(ctx, in)
			}
			tok, err := o.bearer()
			if err != nil {
				return middleware.FinalizeOutput{}, middleware.Metadata{}, &tokenError{source: o.tokenSource, err: err}
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			return next.HandleFinalize(ctx, in)
		}), middleware.After)
}

// tokenError: no bearer token could be had for a GCS request.
type tokenError struct {
	source string
	err    error
}

func (e *tokenError) Error() string { return "bearer token from " + e.source + ": " + e.err.Error() }
func (e *tokenError) Unwrap() error { return e.err }

// setupGCSAuth chooses where gs:// requests get their bearer token, in this
// order: none when Anonymous; the token file; Remote.Token; Application
// Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's
// application_default_credentials.json, the GCE metadata server), whose
// tokens oauth2 refreshes before they expire; none when there are no
// credentials anywhere (public buckets).
func (o *Origin) setupGCSAuth(ctx context.Context) error {
	opts := o.opts
	switch {
	case opts.Anonymous:
		o.anonymous, o.tokenSource = true, "--s3-anonymous"
		if opts.TokenFile != "" || opts.Remote.Token != "" {
			o.log.Info("gcs: --s3-anonymous: the token is not sent", "store", o.display)
		}
		return nil
	case opts.TokenFile != "":
		v, _ := tokens.LoadOrStore(opts.TokenFile, &tokenFile{path: opts.TokenFile})
		o.bearer, o.tokenSource = v.(*tokenFile).get, "--token-file "+opts.TokenFile
		return nil
	case opts.Remote.Token != "":
		tok := opts.Remote.Token
		o.bearer, o.tokenSource = func() (string, error) { return tok, nil }, "$ZARRFS_TOKEN"
		return nil
	}

	// The credentials refresh their tokens long after Open returned: their
	// context must outlive Open's, and their client must not hang.
	tctx := context.WithValue(context.WithoutCancel(ctx), oauth2.HTTPClient, &http.Client{
		Timeout:   o.opts.Remote.StallTimeout,
		Transport: http.DefaultTransport,
	})
	creds, err := findDefaultCredentials(tctx, GCSScope)
	if err != nil {
		if f := os.Getenv("GOOGLE_APPLICATION_CREDENTIALS"); f != "" {
			return fmt.Errorf("%s: Google Application Default Credentials: %w (fix GOOGLE_APPLICATION_CREDENTIALS=%s, or pass --token-file, or --s3-anonymous for a public bucket)", o.display, err, f)
		}
		o.log.Warn("gcs: no Google credentials found (no --token-file, no Application Default Credentials); sending anonymous requests (public buckets only)", "store", o.display)
		o.anonymous, o.tokenSource = true, "no --token-file, no Application Default Credentials found"
		return nil
	}
	o.tokenSource = adcSource(creds)
	ts := creds.TokenSource
	// Ask for the first token now: a revoked login or a broken key fails
	// the mount with a message, not every read with 401s.
	tok, err := ts.Token()
	if err != nil {
		return fmt.Errorf("%s: getting a token from Google Application Default Credentials (%s): %w; renew them with `gcloud auth application-default login`, or pass --token-file", o.display, o.tokenSource, err)
	}
	o.log.Info("gcs: using Application Default Credentials", "store", o.display, "source", o.tokenSource, "token_expires", tok.Expiry.Round(time.Second))
	o.bearer = func() (string, error) {
		t, err := ts.Token()
		if err != nil {
			return "", err
		}
		return t.AccessToken, nil
	}
	return nil
}

// adcSource names where Application Default Credentials were found, for
// logs and messages.
func adcSource(creds *google.Credentials) string {
	if f := os.Getenv("GOOGLE_APPLICATION_CREDENTIALS"); f != "" {
		return "Application Default Credentials in GOOGLE_APPLICATION_CREDENTIALS=" + f
	}
	if creds.JSON != nil {
		return "Application Default Credentials of gcloud (application_default_credentials.json)"
	}
	return "Application Default Credentials of the GCE metadata server"
}

// gcsAuthHint is the fix for a GCS request that was refused.
func (o *Origin) gcsAuthHint() string {
	if o.anonymous {
		return "the requests are anonymous (" + o.tokenSource + ") and the bucket is not public: run `gcloud auth application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file), or pass --token-file FILE"
	}
	return "the token (from " + o.tokenSource + ") was refused: renew it (`gcloud auth application-default login`, or rewrite --token-file), or check the bucket's permissions"
}

// tokenFile caches the bearer token file, re-reading it when its
// modification time or size changes, so a token refreshed by another
// program is used without a remount.
type tokenFile struct {
	mu      sync.Mutex
	path    string
	mod     time.Time
	size    int64
	token   string
	checked time.Time
}

var tokens sync.Map // path -> *tokenFile, shared by the origins of a process

func (t *tokenFile) get() (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	// A stat a second at most: requests come by the hundred.
	if t.token != "" && time.Since(t.checked) < time.Second {
		return t.token, nil
	}
	t.checked = time.Now()
	fi, err := os.Stat(t.path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if t.token != "" && fi.ModTime().Equal(t.mod) && fi.Size() == t.size {
		return t.token, nil
	}
	data, err := os.ReadFile(t.path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" || strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", errors.New("token file: want the token alone on one line")
	}
	t.token, t.mod, t.size = tok, fi.ModTime(), fi.Size()
	return tok, nil
}
