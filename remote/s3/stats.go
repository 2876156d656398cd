package s3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/zarrfs/zarrfs/remote"
)

// Stats reports the traffic counters since Open, in remote's one Counters
// type, and the origin's health. Requests, statuses and bytes are counted
// where the SDK hands each attempt to the network (countingClient), so the
// SDK's own retries are counted too. A 503 counts as throttled: S3
// throttles with 503 SlowDown.
func (o *Origin) Stats() remote.Stats { return o.k.Snapshot(o.health) }

// operationFailed counts an operation that failed for good: not a missing
// object, a 304, the caller's cancellation, or a refusal while the origin
// is down (Health counts those).
func (o *Origin) operationFailed(ctx context.Context, err error) {
	if err == nil || ctx.Err() != nil || remote.IsAbsence(err) || errors.Is(err, errNotModified) || remote.FailedFast(err) {
		return
	}
	if errors.Is(err, remote.ErrChanged) {
		o.k.Changed.Add(1)
	}
	o.k.OperationFailed(ctx, err)
}

// countingClient counts each attempt the SDK sends, by outcome, and tells
// the origin's health of every usable answer.
type countingClient struct {
	next   aws.HTTPClient
	k      *remote.Counters
	health *remote.Health
	log    *slog.Logger
}

func (c *countingClient) Do(req *http.Request) (*http.Response, error) {
	k := c.k
	k.Requests.Add(1)
	k.InFlight.Add(1)
	resp, err := c.next.Do(req)
	if err != nil {
		k.InFlight.Add(-1)
		if req.Context().Err() == nil {
			var dnserr *net.DNSError
			var operr *net.OpError
			switch {
			case errors.As(err, &dnserr) || (errors.As(err, &operr) && operr.Op == "dial"):
				k.Unreachable.Add(1)
			case isTLSError(err):
				k.TLS.Add(1)
			default:
				k.Network.Add(1)
			}
		}
		return nil, err
	}
	switch s := resp.StatusCode; {
	case s == http.StatusNotFound || s == http.StatusGone:
		k.NotFound.Add(1)
	case s == http.StatusUnauthorized:
		k.Unauthorized.Add(1)
	case s == http.StatusForbidden:
		k.Forbidden.Add(1)
	case s == http.StatusTooManyRequests || s == http.StatusServiceUnavailable:
		k.Throttled.Add(1)
	case s == http.StatusPreconditionFailed:
		k.Changed.Add(1)
	case s >= 500:
		k.ServerErrors.Add(1)
	case s >= 400:
		k.ClientErrors.Add(1)
	}
	if s := resp.StatusCode; s < 500 && s != http.StatusTooManyRequests && c.health.Up() {
		c.log.Info("s3: the origin answers again", "method", req.Method, "url", req.URL.Redacted(), "status", resp.Status)
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, k: k}
	return resp, nil
}

func isTLSError(err error) bool {
	var rerr tls.RecordHeaderError
	var cerr *tls.CertificateVerificationError
	return errors.As(err, &rerr) || errors.As(err, &cerr)
}

// countingBody counts body bytes and ends the request's in-flight count
// when closed.
type countingBody struct {
	io.ReadCloser
	k      *remote.Counters
	closed atomic.Bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.k.Received(n)
	return n, err
}

func (b *countingBody) Close() error {
	if b.closed.CompareAndSwap(false, true) {
		b.k.InFlight.Add(-1)
	}
	return b.ReadCloser.Close()
}

// budgetRetryer bounds one operation's retries by remote's RetryDeadline:
// it wraps the origin's shared adaptive retryer (whose send-rate limiter
// must stay shared) with the operation's deadline. While the origin is
// known to be down an operation gets one attempt, as with remote.Client.
type budgetRetryer struct {
	aws.RetryerV2
	deadline time.Time
	k        *remote.Counters
	health   *remote.Health
	// spent: a retryable error was not retried because the budget was
	// spent, i.e. the origin gave no usable answer for a whole budget.
	spent atomic.Bool
}

// MaxAttempts is high: the deadline, not a count, ends the retries (the
// standard retryer would stop after 3).
func (r *budgetRetryer) MaxAttempts() int { return 1000 }

func (r *budgetRetryer) IsErrorRetryable(err error) bool {
	if !r.RetryerV2.IsErrorRetryable(err) || r.health.IsDown() {
		return false
	}
	if !time.Now().Before(r.deadline) {
		r.spent.Store(true)
		return false
	}
	return true
}

func (r *budgetRetryer) RetryDelay(attempt int, opErr error) (time.Duration, error) {
	d, err := r.RetryerV2.RetryDelay(attempt, opErr)
	if err != nil {
		return 0, err
	}
	if time.Now().Add(d).After(r.deadline) {
		r.spent.Store(true)
		return 0, fmt.Errorf("gave up after %d attempts (retry budget spent): %w", attempt, opErr)
	}
	r.k.Retries.Add(1)
	return d, nil
}
