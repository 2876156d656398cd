package s3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/zarrfs/zarrfs/remote"
)

// counters are the live Stats. Requests, statuses and bytes are counted
// where the SDK hands each attempt to the network (countingClient), so the
// SDK's own retries are counted too.
type counters struct {
	requests, inFlight, retries, failures, bytes atomic.Int64

	notFound, unauthorized, forbidden, throttled, clientErrors, serverErrors,
	unreachable, tls, stalled, network, changed, other atomic.Int64

	rateMu  sync.Mutex
	buckets [int(remote.RateWindow/time.Second) + 1]struct{ sec, bytes int64 }
}

// Stats reports the traffic counters since Open. A 503 counts as throttled:
// S3 throttles with 503 SlowDown.
func (o *Origin) Stats() remote.Stats {
	k := &o.k
	return remote.Stats{
		Requests:          k.requests.Load(),
		InFlight:          k.inFlight.Load(),
		Retries:           k.retries.Load(),
		Failures:          k.failures.Load(),
		BytesReceived:     k.bytes.Load(),
		RecentBytesPerSec: k.perSecond(time.Now()),
		Errors: remote.ErrorCounts{
			NotFound:     k.notFound.Load(),
			Unauthorized: k.unauthorized.Load(),
			Forbidden:    k.forbidden.Load(),
			Throttled:    k.throttled.Load(),
			ClientErrors: k.clientErrors.Load(),
			ServerErrors: k.serverErrors.Load(),
			Unreachable:  k.unreachable.Load(),
			TLS:          k.tls.Load(),
			Stalled:      k.stalled.Load(),
			Network:      k.network.Load(),
			Changed:      k.changed.Load(),
			Other:        k.other.Load(),
		},
	}
}

func (k *counters) received(n int) {
	if n <= 0 {
		return
	}
	k.bytes.Add(int64(n))
	sec := time.Now().Unix()
	k.rateMu.Lock()
	b := &k.buckets[sec%int64(len(k.buckets))]
	if b.sec != sec {
		b.sec, b.bytes = sec, 0
	}
	b.bytes += int64(n)
	k.rateMu.Unlock()
}

func (k *counters) perSecond(now time.Time) float64 {
	sec := now.Unix()
	full := int64(len(k.buckets) - 1)
	var sum int64
	k.rateMu.Lock()
	for _, b := range k.buckets {
		if b.sec <= sec && b.sec >= sec-full {
			sum += b.bytes
		}
	}
	k.rateMu.Unlock()
	return float64(sum) / (float64(full) + float64(now.Nanosecond())/1e9)
}

// operationFailed counts an operation that failed for good: not a missing
// object, not the caller's cancellation.
func (k *counters) operationFailed(ctx context.Context, err error) {
	if err == nil || ctx.Err() != nil || errors.Is(err, remote.ErrNotFound) ||
		errors.Is(err, remote.ErrNoManifest) || errors.Is(err, remote.ErrNoListing) || errors.Is(err, errNotModified) {
		return
	}
	if errors.Is(err, remote.ErrChanged) {
		k.changed.Add(1)
	}
	k.failures.Add(1)
}

// countingClient counts each attempt the SDK sends, by outcome.
type countingClient struct {
	next aws.HTTPClient
	k    *counters
}

func (c *countingClient) Do(req *http.Request) (*http.Response, error) {
	k := c.k
	k.requests.Add(1)
	k.inFlight.Add(1)
	resp, err := c.next.Do(req)
	if err != nil {
		k.inFlight.Add(-1)
		if req.Context().Err() == nil {
			var dnserr *net.DNSError
			var operr *net.OpError
			switch {
			case errors.As(err, &dnserr) || (errors.As(err, &operr) && operr.Op == "dial"):
				k.unreachable.Add(1)
			case isTLSError(err):
				k.tls.Add(1)
			default:
				k.network.Add(1)
			}
		}
		return nil, err
	}
	switch s := resp.StatusCode; {
	case s == http.StatusNotFound || s == http.StatusGone:
		k.notFound.Add(1)
	case s == http.StatusUnauthorized:
		k.unauthorized.Add(1)
	case s == http.StatusForbidden:
		k.forbidden.Add(1)
	case s == http.StatusTooManyRequests || s == http.StatusServiceUnavailable:
		k.throttled.Add(1)
	case s == http.StatusPreconditionFailed:
		k.changed.Add(1)
	case s >= 500:
		k.serverErrors.Add(1)
	case s >= 400:
		k.clientErrors.Add(1)
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
	k      *counters
	closed atomic.Bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.k.received(n)
	return n, err
}

func (b *countingBody) Close() error {
	if b.closed.CompareAndSwap(false, true) {
		b.k.inFlight.Add(-1)
	}
	return b.ReadCloser.Close()
}

// budgetRetryer bounds one operation's retries by remote's RetryDeadline:
// it wraps the origin's shared adaptive retryer (whose send-rate limiter
// must stay shared) with the operation's deadline.
type budgetRetryer struct {
	aws.RetryerV2
	deadline time.Time
	k        *counters
}

// MaxAttempts is high: the deadline, not a count, ends the retries (the
// standard retryer would stop after 3).
func (r *budgetRetryer) MaxAttempts() int { return 1000 }

func (r *budgetRetryer) IsErrorRetryable(err error) bool {
	return r.RetryerV2.IsErrorRetryable(err) && time.Now().Before(r.deadline)
}

func (r *budgetRetryer) RetryDelay(attempt int, opErr error) (time.Duration, error) {
	d, err := r.RetryerV2.RetryDelay(attempt, opErr)
	if err != nil {
		return 0, err
	}
	if time.Now().Add(d).After(r.deadline) {
		return 0, fmt.Errorf("gave up after %d attempts (retry budget spent): %w", attempt, opErr)
	}
	r.k.retries.Add(1)
	return d, nil
}
