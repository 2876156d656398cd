package s3

// GetObject without the SDK's operation stack. Every GetObject through
// s3.Client builds a fresh stack of some forty middlewares, resolves the
// endpoint with the rules engine and allocates ~400 objects: ~0.13 ms of
// CPU per request, as much as the rest of a small chunk's read. The hot
// path therefore sends GETs as plain net/http requests, using the SDK's
// parts for everything that must not be hand-written: the endpoint comes
// from the client's own EndpointResolverV2 (once per region), credentials
// from the same credential cache as every other request, the signature
// from the SDK's SigV4 signer (v4.Signer.SignHTTP), the retry decisions
// and backoff from the same retryer (budgetRetryer over the shared
// adaptive retryer). Errors are built as the SDK builds them (status,
// S3 error code and message), so mapError reads both paths alike.
//
// Anything unusual goes through s3.Client instead: an endpoint whose auth
// scheme is not plain SigV4 for "s3" (S3 Express, multi-region access
// points), and, for the rest of the origin's life, a clock so skewed that
// S3 refuses the signature (the SDK corrects for skew).

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyauth "github.com/aws/smithy-go/auth"
	"github.com/aws/smithy-go/encoding/httpbinding"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// emptyPayloadHash is the SHA-256 of an empty body, the payload hash of a
// GET (X-Amz-Content-Sha256).
const emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// fastGet holds what the plain GET path needs. Lock order: mu is a leaf.
type fastGet struct {
	signer    *v4.Signer
	creds     aws.CredentialsProvider // nil: unsigned (anonymous, GCS)
	opts      s3.Options              // the client's, for endpoint parameters
	userAgent []string                // the User-Agent header's value, shared by every request

	mu        sync.Mutex
	endpoints map[string]*fastEndpoint // by region; nil value: use the SDK
	off       bool                     // the SDK path for good (clock skew)
}

// fastEndpoint is the bucket's resolved base URL and signing region, with
// the parts every request repeats worked out once.
type fastEndpoint struct {
	base          url.URL // scheme://host[/bucket] without a trailing slash
	signingRegion string
	rawPath       string // base.EscapedPath()
}

func newFastGet(client *s3.Client, creds aws.CredentialsProvider, userAgent string) *fastGet {
	return &fastGet{
		userAgent: []string{userAgent},
		// S3 signs the path as sent, without escaping it again.
		signer:    v4.NewSigner(func(so *v4.SignerOptions) { so.DisableURIPathEscaping = true }),
		creds:     creds,
		opts:      client.Options(),
		endpoints: map[string]*fastEndpoint{},
	}
}

// endpoint returns the bucket's endpoint in region, or nil when GETs there
// must go through the SDK.
func (f *fastGet) endpoint(ctx context.Context, bucket, region string) *fastEndpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.off {
		return nil
	}
	if ep, ok := f.endpoints[region]; ok {
		return ep
	}
	ep := f.resolve(ctx, bucket, region)
	f.endpoints[region] = ep
	return ep
}

func (f *fastGet) resolve(ctx context.Context, bucket, region string) *fastEndpoint {
	o := f.opts
	params := s3.EndpointParameters{
		Bucket:                         aws.String(bucket),
		Region:                         aws.String(region),
		UseFIPS:                        aws.Bool(o.EndpointOptions.UseFIPSEndpoint == aws.FIPSEndpointStateEnabled),
		UseDualStack:                   aws.Bool(o.EndpointOptions.UseDualStackEndpoint == aws.DualStackEndpointStateEnabled),
		Endpoint:                       o.BaseEndpoint,
		ForcePathStyle:                 aws.Bool(o.UsePathStyle),
		Accelerate:                     aws.Bool(o.UseAccelerate),
		DisableMultiRegionAccessPoints: aws.Bool(o.DisableMultiRegionAccessPoints),
		UseArnRegion:                   aws.Bool(o.UseARNRegion),
		DisableS3ExpressSessionAuth:    o.DisableS3ExpressSessionAuth,
	}
	res := o.EndpointResolverV2
	if res == nil {
		res = s3.NewDefaultEndpointResolverV2()
	}
	ep, err := res.ResolveEndpoint(ctx, params)
	if err != nil || len(ep.Headers) > 0 {
		return nil
	}
	// The auth scheme the SDK would use must be plain SigV4 for "s3":
	// S3 Express ("s3express", session auth) and SigV4a (multi-region
	// access points) stay with the SDK.
	signingRegion := region
	if opts, ok := smithyauth.GetAuthOptions(&ep.Properties); ok {
		// Endpoint rules name the scheme "sigv4"; the smithy ID is the long form.
		if len(opts) != 1 || (opts[0].SchemeID != "sigv4" && opts[0].SchemeID != smithyauth.SchemeIDSigV4) {
			return nil
		}
		if name, ok := smithyhttp.GetSigV4SigningName(&opts[0].SignerProperties); ok && name != "s3" {
			return nil
		}
		if r, ok := smithyhttp.GetSigV4SigningRegion(&opts[0].SignerProperties); ok && r != "" {
			signingRegion = r
		}
	}
	base := ep.URI
	base.Path = strings.TrimSuffix(base.Path, "/")
	base.RawPath = strings.TrimSuffix(base.RawPath, "/")
	if base.RawQuery != "" || base.Fragment != "" {
		return nil
	}
	return &fastEndpoint{base: base, signingRegion: signingRegion, rawPath: base.EscapedPath()}
}

// disable sends every later GET through the SDK.
func (f *fastGet) disable() {
	f.mu.Lock()
	f.off = true
	f.mu.Unlock()
}

// getObjectFast is GetObject with the retries of one operation (br), as
// the SDK's retry middleware runs them. ok is false when this GET must go
// through the SDK instead.
func (o *Origin) getObjectFast(ctx context.Context, in *s3.GetObjectInput, br *budgetRetryer, region string) (out *s3.GetObjectOutput, ok bool, err error) {
	ep := o.fast.endpoint(ctx, o.bucket, region)
	if ep == nil {
		return nil, false, nil
	}
	releaseRetry := func(error) error { return nil }
	for attempt := 1; ; attempt++ {
		releaseAttempt, err := br.GetAttemptToken(ctx)
		if err != nil {
			return nil, true, err
		}
		out, opErr := o.getOnce(ctx, ep, in)
		_ = releaseAttempt(opErr)
		if opErr == nil {
			_ = releaseRetry(nil)
			return out, true, nil
		}
		if code, _ := apiCode(opErr); code == "RequestTimeTooSkewed" {
			o.log.Warn("s3: the machine's clock is off from S3's; sending requests through the SDK, which corrects for it", "error", opErr.Error())
			o.fast.disable()
			return nil, false, nil
		}
		if ctx.Err() != nil || !br.IsErrorRetryable(opErr) {
			return nil, true, opErr
		}
		if attempt >= br.MaxAttempts() {
			return nil, true, fmt.Errorf("exceeded maximum number of attempts, %d: %w", attempt, opErr)
		}
		if releaseRetry, err = br.GetRetryToken(ctx, opErr); err != nil {
			return nil, true, err
		}
		d, err := br.RetryDelay(attempt, opErr)
		if err != nil {
			return nil, true, err
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, true, &smithy.CanceledError{Err: ctx.Err()}
		case <-t.C:
		}
	}
}

// getOnce sends one attempt. A status other than 200 or 206 is an error
// shaped as the SDK shapes it.
func (o *Origin) getOnce(ctx context.Context, ep *fastEndpoint, in *s3.GetObjectInput) (*s3.GetObjectOutput, error) {
	key := aws.ToString(in.Key)
	u := ep.base
	u.Path = ep.base.Path + "/" + key
	u.RawPath = ep.rawPath + "/" + httpbinding.EscapePath(key, false)
	// The URL is u itself, not parsed back from its string: Go would
	// re-escape the path, and parsing is work for nothing.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "", nil)
	if err != nil {
		return nil, &smithy.OperationError{ServiceID: "S3", OperationName: "GetObject", Err: err}
	}
	req.URL, req.Host = &u, u.Host
	h := req.Header
	if in.Range != nil {
		h.Set("Range", *in.Range)
	}
	if in.IfMatch != nil {
		h.Set("If-Match", *in.IfMatch)
	}
	if in.IfNoneMatch != nil {
		h.Set("If-None-Match", *in.IfNoneMatch)
	}
	switch {
	case o.bearer != nil:
		tok, err := o.bearer()
		if err != nil {
			return nil, &tokenError{source: o.tokenSource, err: err}
		}
		h.Set("Authorization", "Bearer "+tok)
	case o.fast.creds != nil:
		creds, err := o.fast.creds.Retrieve(ctx)
		if err != nil {
			return nil, &smithy.OperationError{ServiceID: "S3", OperationName: "GetObject", Err: fmt.Errorf("failed to retrieve credentials: %w", err)}
		}
		h.Set("X-Amz-Content-Sha256", emptyPayloadHash)
		if err := o.fast.signer.SignHTTP(ctx, creds, req, emptyPayloadHash, "s3", ep.signingRegion, time.Now().UTC()); err != nil {
			return nil, &smithy.OperationError{ServiceID: "S3", OperationName: "GetObject", Err: err}
		}
	}
	// After signing: SigV4 never signs User-Agent (the signer skips it),
	// so it need not walk past it.
	h["User-Agent"] = o.fast.userAgent
	resp, err := o.httpc.Do(req)
	if err != nil {
		var serr error = &smithyhttp.RequestSendError{Err: err}
		if ctx.Err() != nil {
			serr = &smithy.CanceledError{Err: err}
		}
		return nil, &smithy.OperationError{ServiceID: "S3", OperationName: "GetObject", Err: serr}
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		return nil, responseError(resp)
	}
	out := &s3.GetObjectOutput{Body: resp.Body}
	rh := resp.Header
	if v := rh.Get("ETag"); v != "" {
		out.ETag = aws.String(v)
	}
	if v := rh.Get("Content-Range"); v != "" {
		out.ContentRange = aws.String(v)
	}
	if resp.ContentLength >= 0 {
		out.ContentLength = aws.Int64(resp.ContentLength)
	}
	if v := rh.Get("Last-Modified"); v != "" {
		if t, err := http.ParseTime(v); err == nil {
			out.LastModified = aws.Time(t)
		}
	}
	return out, nil
}

// responseError reads an error answer's S3 XML error document (a HEAD or
// a 304 has none) and returns it as the SDK would: an OperationError over
// an awshttp.ResponseError over a smithy.GenericAPIError.
func responseError(resp *http.Response) error {
	defer resp.Body.Close()
	var doc struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_ = xml.Unmarshal(body, &doc)
	var inner error = &smithy.GenericAPIError{Code: doc.Code, Message: doc.Message}
	if doc.Code == "" {
		inner = errors.New("http " + strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode))
	}
	return &smithy.OperationError{ServiceID: "S3", OperationName: "GetObject", Err: &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: resp}, Err: inner},
		RequestID:     resp.Header.Get("X-Amz-Request-Id"),
	}}
}
