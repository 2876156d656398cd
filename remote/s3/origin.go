package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/zarrfs/zarrfs/remote"
)

// GCSEndpoint is where gs:// URLs are sent: GCS's XML API.
const GCSEndpoint = "https://storage.googleapis.com"

// Addressing styles (Options.Addressing).
const (
	AddressingAuto    = ""        // path-style with an endpoint and on GCS, virtual-hosted on AWS
	AddressingPath    = "path"    // https://endpoint/bucket/key
	AddressingVirtual = "virtual" // https://bucket.endpoint/key
)

// Options configures an Origin. The zero value reads s3:// from AWS with the
// default credential chain.
type Options struct {
	// Remote carries what every origin shares: RetryDeadline, StallTimeout,
	// MaxConnsPerHost, UserAgent, Logger, CACertFile, and Token (the bearer
	// token of gs:// URLs). Pin is not supported here.
	Remote remote.Options
	// Endpoint is the S3-compatible service's base URL (--s3-endpoint), for
	// MinIO, R2, Ceph; empty: AWS (or GCS for gs://).
	Endpoint string
	// Region (--s3-region); empty: AWS_REGION / the profile's region, else
	// us-east-1 (on AWS a wrong region is corrected from S3's redirect).
	Region string
	// Addressing is AddressingAuto, AddressingPath or AddressingVirtual.
	Addressing string
	// Anonymous sends unsigned requests (--s3-anonymous): public buckets.
	// On gs:// it also sends no bearer token, whatever else is configured.
	Anonymous bool
	// Credentials, when set, replaces the default credential chain (tests,
	// embedding programs). It is wrapped in the SDK's credential cache.
	Credentials aws.CredentialsProvider
	// TokenFile holds the bearer token for gs:// (--token-file); it is
	// re-read when it changes. Remote.Token is used when it is empty, and
	// Google's Application Default Credentials when both are.
	TokenFile string
	// ManifestMaxKeys caps the keys a listing-built manifest may hold
	// (default $ZARRFS_S3_MANIFEST_MAX_KEYS, else 20000; negative: never
	// build one).
	ManifestMaxKeys int
	// ListPageSize is the keys per ListObjectsV2 page (default 1000, the
	// most S3 returns); tests make it small to exercise pagination.
	ListPageSize int32
}

// Origin reads one zarr store from a bucket. It is safe for concurrent use.
type Origin struct {
	client   *s3.Client
	bucket   string
	prefix   string // store root inside the bucket: "" or ending in "/"
	display  string // "s3://bucket/prefix" for messages
	endpoint string // as given, "" for AWS
	gcs      bool
	opts     Options
	log      *slog.Logger
	httpc    *countingClient
	tr       atomic.Pointer[http.Transport] // built by the SDK's client, for Close
	retryer  aws.RetryerV2
	k        remote.Counters
	// health: once an operation gave up on an origin that did not answer
	// for a whole retry budget, operations fail at once while one probe at
	// a time checks whether it is back (remote/health.go).
	health *remote.Health

	region atomic.Pointer[string] // current region; a redirect may change it
	// overCapAt (UnixNano): when a listing found the store over
	// ManifestMaxKeys; 0 when it was not.
	overCapAt atomic.Int64

	// The 403 rule (doc.go): can these credentials list the store?
	listState atomic.Int32 // listUnknown, listAllowed, listDenied
	probeMu   sync.Mutex   // one probe at a time
	warned403 atomic.Bool
	// readProven: a GET under the store prefix succeeded with these
	// credentials (they can read the store). provedAt rate-limits probes.
	readProven atomic.Bool
	probedAt   time.Time // guarded by probeMu
	anonymous  bool

	// fast sends GetObject without the SDK's stack (fastget.go); sdkGet
	// turns that off (benchmarks compare the two).
	fast   *fastGet
	sdkGet bool

	// gs:// only: bearer returns the token of the next attempt (nil:
	// anonymous); tokenSource names where it comes from, for messages.
	bearer      func() (string, error)
	tokenSource string
}

const (
	listUnknown int32 = iota
	listAllowed
	listDenied
)

var _ remote.Origin = (*Origin)(nil)

// ParseURL splits s3://bucket/prefix or gs://bucket/prefix into its parts;
// prefix is "" or ends in "/".
func ParseURL(rawURL string) (scheme, bucket, prefix string, err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", "", "", fmt.Errorf("store URL %q: %w", rawURL, err)
	}
	switch {
	case u.Scheme != "s3" && u.Scheme != "gs":
		return "", "", "", fmt.Errorf("store URL %q: scheme must be s3 or gs", rawURL)
	case u.Host == "" || u.Opaque != "":
		return "", "", "", fmt.Errorf("store URL %q: want %s://bucket/path/to/store.zarr", rawURL, u.Scheme)
	case u.User != nil:
		return "", "", "", fmt.Errorf("store URL for bucket %s: remove the user:password part; credentials come from the environment or the profile", u.Host)
	case u.RawQuery != "" || u.Fragment != "":
		return "", "", "", fmt.Errorf("store URL %s://%s: remove the ?query or #fragment part", u.Scheme, u.Host)
	}
	prefix = strings.Trim(u.Path, "/")
	if prefix != "" {
		if !remote.ValidKey(prefix) {
			return "", "", "", fmt.Errorf("store URL %q: the path has an empty, \".\" or \"..\" segment", rawURL)
		}
		prefix += "/"
	}
	return u.Scheme, u.Host, prefix, nil
}

// Open returns the Origin for an s3:// or gs:// store URL. It loads the
// AWS configuration (region, credentials) but sends no request: a wrong
// secret or a missing bucket shows in the first read.
func Open(ctx context.Context, rawURL string, opts Options) (*Origin, error) {
	scheme, bucket, prefix, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if opts.Remote.Pin != "" {
		return nil, fmt.Errorf("--pin is for https:// origins; for %s:// use --ca-cert with a private CA", scheme)
	}
	if opts.Remote.RetryDeadline <= 0 {
		opts.Remote.RetryDeadline = 60 * time.Second
	}
	if opts.Remote.StallTimeout <= 0 {
		opts.Remote.StallTimeout = 30 * time.Second
	}
	if opts.Remote.MaxConnsPerHost <= 0 {
		opts.Remote.MaxConnsPerHost = 64
	}
	if opts.Remote.UserAgent == "" {
		opts.Remote.UserAgent = "zarrfs"
	}
	if opts.ManifestMaxKeys == 0 {
		opts.ManifestMaxKeys = 20000
		// A knob for tests and for stores just over the cap, not a flag:
		// most users never need it (docs/s3.md).
		if v := os.Getenv("ZARRFS_S3_MANIFEST_MAX_KEYS"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n == 0 {
				return nil, fmt.Errorf("ZARRFS_S3_MANIFEST_MAX_KEYS=%q: want a number of keys, or -1 for no manifest", v)
			}
			opts.ManifestMaxKeys = n
		}
	}
	if opts.ListPageSize <= 0 || opts.ListPageSize > 1000 {
		opts.ListPageSize = 1000
	}
	switch opts.Addressing {
	case AddressingAuto, AddressingPath, AddressingVirtual:
	default:
		return nil, fmt.Errorf("S3 addressing %q: want %q or %q", opts.Addressing, AddressingPath, AddressingVirtual)
	}
	log := opts.Remote.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := &Origin{
		bucket:   bucket,
		prefix:   prefix,
		display:  scheme + "://" + bucket + "/" + prefix,
		endpoint: opts.Endpoint,
		gcs:      scheme == "gs",
		opts:     opts,
		log:      log,
		health:   remote.NewHealth(nil),
	}
	if o.gcs && o.endpoint == "" {
		o.endpoint = GCSEndpoint
	}
	if o.endpoint != "" {
		eu, err := url.Parse(o.endpoint)
		if err != nil || (eu.Scheme != "http" && eu.Scheme != "https") || eu.Host == "" {
			return nil, fmt.Errorf("--s3-endpoint %q: want http(s)://host[:port]", o.endpoint)
		}
	}

	hc, err := o.newHTTPClient()
	if err != nil {
		return nil, err
	}
	o.retryer = retry.NewAdaptiveMode(func(ao *retry.AdaptiveModeOptions) {
		ao.StandardOptions = append(ao.StandardOptions, func(so *retry.StandardOptions) {
			so.MaxAttempts = 0 // bounded by RetryDeadline instead (budgetRetryer)
			so.MaxBackoff = 5 * time.Second
			so.RateLimiter = ratelimit.None
		})
	})

	loadOpts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(hc),
		config.WithRetryer(func() aws.Retryer { return o.retryer }),
		config.WithAppID(opts.Remote.UserAgent),
	}
	if opts.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(opts.Region))
	}
	// GCS requests are never SigV4-signed: a bearer token (or nothing) is
	// added by bearerMiddleware instead.
	anonymous := opts.Anonymous || o.gcs
	o.anonymous = opts.Anonymous
	if o.gcs {
		if err := o.setupGCSAuth(ctx); err != nil {
			return nil, err
		}
	}
	switch {
	case anonymous:
		loadOpts = append(loadOpts, config.WithCredentialsProvider(aws.AnonymousCredentials{}))
	case opts.Credentials != nil:
		loadOpts = append(loadOpts, config.WithCredentialsProvider(opts.Credentials))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("%s: load the AWS configuration (AWS_PROFILE, ~/.aws/config): %w", o.display, err)
	}
	// Count every attempt the SDK sends, after the SDK added any CA bundle.
	o.httpc = &countingClient{next: cfg.HTTPClient, k: &o.k, health: o.health, log: log}
	cfg.HTTPClient = o.httpc
	if !anonymous && opts.Credentials == nil {
		// No credentials anywhere is legal: a public bucket. Say so, once.
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, cerr := cfg.Credentials.Retrieve(rctx)
		cancel()
		if cerr != nil && credentialsConfigured() {
			// A source was configured and failed (a broken profile, an
			// expired SSO session): say so now, not as 403s later.
			return nil, fmt.Errorf("%s: AWS credentials: %w (fix the profile or environment, or pass --s3-anonymous for a public bucket)", o.display, cerr)
		}
		if cerr != nil {
			log.Warn("s3: no AWS credentials found; sending anonymous requests (public buckets only)", "store", o.display, "error", cerr.Error())
			cfg.Credentials = aws.AnonymousCredentials{}
			o.anonymous = true
		}
	}
	region := cfg.Region
	switch {
	case o.gcs && region == "":
		region = "auto"
	case region == "":
		region = "us-east-1"
	}
	o.region.Store(&region)

	o.client = s3.NewFromConfig(cfg, func(so *s3.Options) {
		if o.endpoint != "" {
			so.BaseEndpoint = aws.String(o.endpoint)
		}
		// Path-style wherever an endpoint is given (MinIO, Ceph, versitygw
		// need it) and on GCS (a bucket name with dots breaks the TLS name
		// of virtual hosts there); virtual-hosted on AWS, which is phasing
		// path-style out.
		so.UsePathStyle = opts.Addressing == AddressingPath || (opts.Addressing == AddressingAuto && o.endpoint != "")
		// Checksums of whole objects do not apply to ranges, and GCS does not
		// send S3's; ETags and lengths already guard every read.
		so.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		so.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		so.DisableLogOutputChecksumValidationSkipped = true
		if o.gcs {
			so.APIOptions = append(so.APIOptions, o.bearerMiddleware)
		}
	})
	signWith := cfg.Credentials
	if signWith == nil || aws.IsCredentialsProvider(signWith, aws.AnonymousCredentials{}) {
		signWith = nil // unsigned: anonymous, or GCS's bearer tokens
	}
	o.fast = newFastGet(o.client, signWith, opts.Remote.UserAgent)
	return o, nil
}

// credentialsConfigured reports whether any credential source other than
// the instance's metadata service is configured, the case in which a
// failure to get credentials is an error rather than "none: anonymous".
func credentialsConfigured() bool {
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"} {
		if os.Getenv(v) != "" {
			return true
		}
	}
	home, _ := os.UserHomeDir()
	for _, f := range []string{os.Getenv("AWS_SHARED_CREDENTIALS_FILE"), os.Getenv("AWS_CONFIG_FILE"),
		filepath.Join(home, ".aws", "credentials"), filepath.Join(home, ".aws", "config")} {
		if f == "" || (home == "" && !filepath.IsAbs(f)) {
			continue
		}
		if _, err := os.Stat(f); err == nil {
			return true
		}
	}
	return false
}

// newHTTPClient is the SDK's buildable client with zarrfs's connection
// limits and timeouts, wrapped to count traffic for Stats.
func (o *Origin) newHTTPClient() (*awshttp.BuildableClient, error) {
	ro := o.opts.Remote
	var roots *x509.CertPool
	if ro.CACertFile != "" {
		pemData, err := os.ReadFile(ro.CACertFile)
		if err != nil {
			return nil, fmt.Errorf("CA certificate file: %w", err)
		}
		roots, err = x509.SystemCertPool()
		if err != nil || roots == nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("CA certificate file %s: no PEM certificate found", ro.CACertFile)
		}
	}
	// The SDK's buildable client, so that AWS_CA_BUNDLE and the profile's
	// ca_bundle still apply; the transport it builds is kept for Close.
	return awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.DialContext = (&net.Dialer{Timeout: ro.StallTimeout, KeepAlive: 30 * time.Second}).DialContext
		tr.MaxConnsPerHost = ro.MaxConnsPerHost
		tr.MaxIdleConnsPerHost = ro.MaxConnsPerHost
		tr.MaxIdleConns = ro.MaxConnsPerHost
		tr.ResponseHeaderTimeout = ro.StallTimeout
		tr.TLSHandshakeTimeout = ro.StallTimeout
		// Transparent gzip would make lengths and ranges refer to the
		// encoded bytes.
		tr.DisableCompression = true
		if roots != nil {
			if tr.TLSClientConfig == nil {
				tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			tr.TLSClientConfig.RootCAs = roots
		}
		o.tr.Store(tr)
	}), nil
}

// Close releases idle connections.
func (o *Origin) Close() {
	if tr := o.tr.Load(); tr != nil {
		tr.CloseIdleConnections()
	}
}

// String is the store URL.
func (o *Origin) String() string { return o.display }

// Region is the region requests are signed for now (a redirect may have
// changed it).
func (o *Origin) Region() string { return *o.region.Load() }

// objectKey maps a store key to the bucket's key.
func (o *Origin) objectKey(key string) (string, error) {
	if !remote.ValidKey(key) {
		return "", fmt.Errorf("invalid store key %q", key)
	}
	return o.prefix + key, nil
}

func (o *Origin) url(key string) string { return o.display + key }

// opFns are the per-operation options: the retry budget and the region.
func (o *Origin) opFns() []func(*s3.Options) {
	return o.newAttempt().sdkOpts()
}

func (o *Origin) newBudget() *budgetRetryer {
	return &budgetRetryer{RetryerV2: o.retryer, deadline: time.Now().Add(o.opts.Remote.RetryDeadline), k: &o.k, health: o.health}
}

// attempt is what one try of an operation runs under: its retry budget
// and the region to sign for. The plain GET path (fastget.go) reads them
// directly; SDK operations get them as options (sdkOpts).
type attempt struct {
	br     *budgetRetryer
	region string
}

func (o *Origin) newAttempt() attempt { return attempt{br: o.newBudget(), region: o.Region()} }

func (a attempt) sdkOpts() []func(*s3.Options) {
	return []func(*s3.Options){func(so *s3.Options) {
		so.Retryer = a.br
		so.Region = a.region
	}}
}

// call runs one SDK operation; a redirect to the bucket's region is followed
// once (on AWS), and the error is mapped to remote's sentinels. The
// origin's health is asked first, as remote.Client does: while the origin
// is down the operation fails at once unless it is the one probe let
// through, which gets one attempt and at most remote.ProbeStallMax to get
// an answer. An operation that spent its whole retry budget without a
// usable answer marks the origin down.
func (o *Origin) call(ctx context.Context, op, key string, fn func(ctx context.Context, at attempt) error) error {
	probe, err := o.health.Admit()
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, o.url(key), err)
	}
	if probe {
		o.log.Debug("s3: probing the origin", "op", op, "url", o.url(key))
		defer o.health.ProbeDone()
	}
	for attempt := 0; ; attempt++ {
		at := o.newAttempt()
		actx, stop := ctx, func() {}
		if probe {
			// The context stays with a GET's body: it is cancelled only
			// when no answer came in time (or with ctx).
			pctx, cancel := context.WithCancel(ctx)
			t := time.AfterFunc(remote.ProbeStallMax, cancel)
			actx, stop = pctx, func() {
				t.Stop()
				if op != "GET" {
					cancel() // a listing was read whole
				}
			}
		}
		err := fn(actx, at)
		stop()
		if err == nil {
			return nil
		}
		if r := redirectRegion(err); r != "" && attempt == 0 && r != o.Region() && (o.endpoint == "" || o.opts.Region == "") {
			o.log.Info("s3: following the bucket's region", "bucket", o.bucket, "from", o.Region(), "to", r)
			o.region.Store(&r)
			continue
		}
		if op == "GET" && isAccessDenied(err) && o.listDeniedProbe(ctx) && o.readProvenProbe(ctx) {
			return o.readAsMissing(op, key)
		}
		mapped := o.mapError(ctx, op, key, err)
		if at.br.spent.Load() && ctx.Err() == nil && o.health.Down(mapped) {
			o.log.Warn("s3: the origin is down: operations fail at once while one probe at a time checks whether it is back",
				"op", op, "url", o.url(key), "error", mapped.Error())
		}
		return mapped
	}
}
