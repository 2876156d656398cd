package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/zarrfs/zarrfs/remote"
)

// Sentinels of this package, besides remote's.
var (
	// ErrNoSuchBucket: the bucket does not exist (at this endpoint). It is
	// not remote.ErrNotFound: a missing bucket is a wrong URL, not a
	// missing chunk.
	ErrNoSuchBucket = errors.New("no such bucket")
	// ErrWrongRegion: the bucket lives in another region than the one the
	// request was signed for, and the redirect could not be followed.
	ErrWrongRegion = errors.New("wrong region for the bucket")
	// errNotModified: a conditional GET answered 304.
	errNotModified = errors.New("not modified")
)

// apiCode returns the S3 error code ("NoSuchKey") and HTTP status of err.
func apiCode(err error) (code string, status int) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	return code, status
}

// redirectRegion is the region S3 names when a request went to the wrong
// one (301 PermanentRedirect, 400 AuthorizationHeaderMalformed, or a HEAD's
// bare 301), from the x-amz-bucket-region header; "" otherwise.
func redirectRegion(err error) string {
	var re *awshttp.ResponseError
	if !errors.As(err, &re) || re.Response == nil {
		return ""
	}
	code, status := apiCode(err)
	switch {
	case status == http.StatusMovedPermanently, code == "PermanentRedirect",
		code == "AuthorizationHeaderMalformed", code == "IllegalLocationConstraintException":
		return re.Response.Header.Get("X-Amz-Bucket-Region")
	}
	return ""
}

// mapError turns an SDK error into one wrapping remote's sentinels, with a
// message that names the fix. The credentials' secrets never appear.
func (o *Origin) mapError(ctx context.Context, op, key string, err error) error {
	where := op + " " + o.url(key)
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s: %w", where, cerr)
	}
	code, status := apiCode(err)
	msg := ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		msg = ae.ErrorMessage()
	}
	detail := func() string {
		s := code
		if s == "" && status != 0 {
			s = fmt.Sprintf("HTTP %d", status)
		}
		if msg != "" {
			s += ": " + msg
		}
		return s
	}
	var terr *tokenError
	switch {
	case errors.As(err, &terr):
		return fmt.Errorf("%s: %w: %v; renew the credentials (`gcloud auth application-default login`, or rewrite --token-file)", where, remote.ErrUnauthorized, terr)
	case status == http.StatusNotModified:
		return errNotModified
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed:
		return fmt.Errorf("%s: %w (412 to If-Match)", where, remote.ErrChanged)
	case code == "InvalidRange" || status == http.StatusRequestedRangeNotSatisfiable:
		return &remote.StatusError{Method: op, URL: o.url(key), Code: http.StatusRequestedRangeNotSatisfiable, Status: "416 " + detail()}
	case code == "NoSuchBucket":
		return fmt.Errorf("%s: %w: bucket %q does not exist%s; check the bucket name in the URL%s", where, ErrNoSuchBucket, o.bucket, o.atEndpoint(), o.endpointHint())
	case code == "NoSuchKey" || status == http.StatusNotFound || status == http.StatusGone:
		return fmt.Errorf("%s: %w", where, remote.ErrNotFound)
	case code == "SignatureDoesNotMatch":
		return fmt.Errorf("%s: %w: the secret key does not match the access key id (SignatureDoesNotMatch); check AWS_SECRET_ACCESS_KEY, or aws_secret_access_key of AWS_PROFILE in ~/.aws/credentials", where, remote.ErrForbidden)
	case code == "InvalidAccessKeyId":
		return fmt.Errorf("%s: %w: the access key id is unknown%s (InvalidAccessKeyId); check AWS_ACCESS_KEY_ID or AWS_PROFILE, and --s3-endpoint", where, remote.ErrForbidden, o.atEndpoint())
	case code == "ExpiredToken" || code == "ExpiredTokenException" || code == "TokenRefreshRequired" || code == "InvalidToken" || code == "RequestExpired":
		return fmt.Errorf("%s: %w: the temporary credentials have expired or are invalid (%s); renew them (aws sso login, a new AWS_SESSION_TOKEN), or check the machine's clock", where, remote.ErrUnauthorized, code)
	case code == "AuthorizationHeaderMalformed" || code == "PermanentRedirect" || status == http.StatusMovedPermanently:
		r := redirectRegion(err)
		if r == "" {
			return fmt.Errorf("%s: %w: %s; set --s3-region to the bucket's region", where, ErrWrongRegion, detail())
		}
		return fmt.Errorf("%s: %w: the bucket is in region %s, not %s; use --s3-region %s", where, ErrWrongRegion, r, o.Region(), r)
	case code == "AccessDenied" || code == "AllAccessDisabled" || status == http.StatusForbidden:
		return fmt.Errorf("%s: %w: %s; %s", where, remote.ErrForbidden, detail(), o.permissionHint(op))
	case status == http.StatusUnauthorized:
		if o.gcs {
			return fmt.Errorf("%s: %w: %s; %s", where, remote.ErrUnauthorized, detail(), o.gcsAuthHint())
		}
		return fmt.Errorf("%s: %w: %s", where, remote.ErrUnauthorized, detail())
	case status >= 400:
		return &remote.StatusError{Method: op, URL: o.url(key), Code: status, Status: fmt.Sprintf("%d %s", status, detail())}
	}
	var uerr *x509.UnknownAuthorityError
	var herr x509.HostnameError
	var cerr *tls.CertificateVerificationError
	if errors.As(err, &uerr) || errors.As(err, &herr) || errors.As(err, &cerr) {
		return fmt.Errorf("%s: %w: %v (a private CA: --ca-cert)", where, remote.ErrTLS, err)
	}
	var nerr net.Error
	var operr *net.OpError
	var dnserr *net.DNSError
	if errors.As(err, &dnserr) || errors.As(err, &operr) || errors.As(err, &nerr) {
		return fmt.Errorf("%s: %w: %v; check --s3-endpoint (%s) and the network", where, remote.ErrUnreachable, rootCause(err), o.endpointOrAWS())
	}
	return fmt.Errorf("%s: %w", where, err)
}

// rootCause strips the SDK's layers of "operation error S3: GetObject, …".
func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		var operr *net.OpError
		if errors.As(err, &operr) && err == error(operr) {
			return err
		}
		err = u
	}
}

func (o *Origin) endpointOrAWS() string {
	if o.endpoint == "" {
		return "AWS S3, region " + o.Region()
	}
	return o.endpoint
}

func (o *Origin) atEndpoint() string {
	if o.endpoint == "" {
		return ""
	}
	return " at " + o.endpoint
}

func (o *Origin) endpointHint() string {
	if o.gcs {
		return ""
	}
	if o.endpoint == "" {
		return " (for MinIO, R2 or Ceph, give --s3-endpoint)"
	}
	return " and --s3-endpoint"
}

// permissionHint says which permission a denied operation needs.
func (o *Origin) permissionHint(op string) string {
	switch {
	case o.gcs && o.anonymous:
		return o.gcsAuthHint()
	case o.gcs:
		return "the account of the token (from " + o.tokenSource + ") needs storage.objects.get on the bucket (and storage.objects.list to list)"
	}
	if o.anonymous {
		return "the requests are anonymous (--s3-anonymous, or no AWS credentials were found) and the bucket is not public: give credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
	}
	res := "arn:aws:s3:::" + o.bucket + "/" + o.prefix + "*"
	if strings.HasPrefix(op, "LIST") {
		return "listing needs s3:ListBucket on arn:aws:s3:::" + o.bucket + " (optional if the store has consolidated metadata)"
	}
	return "the credentials need s3:GetObject on " + res + " (see docs/s3.md)"
}

// isAccessDenied reports a 403 that may hide a missing key (the 403 rule):
// plain AccessDenied, not a signature or key-id problem.
func isAccessDenied(err error) bool {
	code, status := apiCode(err)
	return code == "AccessDenied" || (code == "" && status == http.StatusForbidden)
}
