package remote

// Traffic counters of a Client, for `zarrfs stats` and /metrics. They are
// atomics bumped on the request path; the only lock, rateMeter.mu, guards the
// throughput window and is never held while doing anything else.

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of a Client's counters since New.
type Stats struct {
	Requests      int64 `json:"requests"`       // HTTP requests sent; each attempt counts
	InFlight      int64 `json:"in_flight"`      // requests sent whose response body is not finished
	Retries       int64 `json:"retries"`        // attempts repeated after a retryable failure
	Failures      int64 `json:"failures"`       // operations that failed for good (missing objects and cancellations excluded)
	BytesReceived int64 `json:"bytes_received"` // response body bytes
	// RecentBytesPerSec is the body bytes received per second over the
	// last RateWindow.
	RecentBytesPerSec float64     `json:"recent_bytes_per_sec"`
	Errors            ErrorCounts `json:"errors"` // failed attempts by kind
	// OriginDown: an operation gave up on the origin (no usable answer for
	// a whole retry budget) and none has had an answer since; operations
	// fail at once (ErrUnreachable) while one probe at a time checks it.
	OriginDown bool      `json:"origin_down"`
	DownSince  time.Time `json:"down_since,omitzero"` // when it went down; zero when up
	DownCause  string    `json:"down_cause,omitempty"`
	Outages    int64     `json:"outages"`     // times the origin went down
	FailedFast int64     `json:"failed_fast"` // operations failed at once because the origin was down
}

// ErrorCounts counts failed attempts by what went wrong. A request the
// caller cancelled is not a failure and is not counted.
type ErrorCounts struct {
	NotFound     int64 `json:"not_found"`    // 404, 410, no manifest, no listing: normal, a missing chunk is the fill value
	Unauthorized int64 `json:"unauthorized"` // 401
	Forbidden    int64 `json:"forbidden"`    // 403
	Throttled    int64 `json:"throttled"`    // 429
	ClientErrors int64 `json:"http_4xx"`     // other 4xx
	ServerErrors int64 `json:"http_5xx"`     // 5xx
	Unreachable  int64 `json:"unreachable"`  // DNS failure, connection refused or timed out
	TLS          int64 `json:"tls"`          // certificate not trusted, pin mismatch, not TLS
	Stalled      int64 `json:"stalled"`      // no progress for the stall timeout
	Network      int64 `json:"network"`      // other transport failures: reset, body cut short
	Changed      int64 `json:"changed"`      // the object changed while it was being read
	Other        int64 `json:"other"`
}

// Total is the number of failed attempts, missing objects excluded.
func (e ErrorCounts) Total() int64 {
	return e.Unauthorized + e.Forbidden + e.Throttled + e.ClientErrors + e.ServerErrors +
		e.Unreachable + e.TLS + e.Stalled + e.Network + e.Changed + e.Other
}

// RateWindow is the span RecentBytesPerSec is measured over.
const RateWindow = 5 * time.Second

// counters is the live form of Stats, embedded in Client. Its zero value is
// ready to use.
type counters struct {
	requests, inFlight, retries, failures, bytes atomic.Int64

	notFound, unauthorized, forbidden, throttled, clientErrors, serverErrors,
	unreachable, tls, stalled, network, changed, other atomic.Int64

	rate rateMeter
}

// Stats returns a snapshot of the client's counters.
func (c *Client) Stats() Stats {
	k := &c.counters
	h := c.health.State()
	return Stats{
		OriginDown:        h.Down,
		DownSince:         h.Since,
		DownCause:         h.Cause,
		Outages:           h.Outages,
		FailedFast:        h.Rejected,
		Requests:          k.requests.Load(),
		InFlight:          k.inFlight.Load(),
		Retries:           k.retries.Load(),
		Failures:          k.failures.Load(),
		BytesReceived:     k.bytes.Load(),
		RecentBytesPerSec: k.rate.perSecond(time.Now()),
		Errors: ErrorCounts{
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
	if n > 0 {
		k.bytes.Add(int64(n))
		k.rate.add(time.Now(), int64(n))
	}
}

// attemptFailed counts a failed attempt by kind. ctx is the operation's
// context: an attempt that failed because the caller gave up is not counted.
func (k *counters) attemptFailed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	k.kindOf(err).Add(1)
}

// operationFailed counts an operation that failed for good.
func (k *counters) operationFailed(ctx context.Context, err error) {
	if ctx.Err() != nil || isAbsence(err) {
		return
	}
	k.failures.Add(1)
}

// isAbsence says whether err only reports that something is not there: a
// missing object, or an origin without a manifest or directory listings.
func isAbsence(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrNoManifest) || errors.Is(err, ErrNoListing)
}

func (k *counters) kindOf(err error) *atomic.Int64 {
	if isAbsence(err) {
		return &k.notFound
	}
	var se *StatusError
	if errors.As(err, &se) {
		switch {
		case se.Code == http.StatusNotFound || se.Code == http.StatusGone:
			return &k.notFound
		case se.Code == http.StatusUnauthorized:
			return &k.unauthorized
		case se.Code == http.StatusForbidden:
			return &k.forbidden
		case se.Code == http.StatusTooManyRequests:
			return &k.throttled
		case se.Code >= 500:
			return &k.serverErrors
		case se.Code >= 400:
			return &k.clientErrors
		}
		return &k.other
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return &k.notFound
	case errors.Is(err, ErrChanged):
		return &k.changed
	case errors.Is(err, ErrTLS):
		return &k.tls
	case errors.Is(err, ErrUnreachable):
		return &k.unreachable
	case errors.Is(err, errStalled):
		return &k.stalled
	}
	var te *transportError
	if errors.As(err, &te) {
		return &k.network
	}
	return &k.other
}

// rateMeter sums bytes into one-second buckets to give a recent rate.
type rateMeter struct {
	mu      sync.Mutex
	buckets [int(RateWindow/time.Second) + 1]struct{ sec, bytes int64 }
}

func (m *rateMeter) add(now time.Time, n int64) {
	sec := now.Unix()
	m.mu.Lock()
	b := &m.buckets[sec%int64(len(m.buckets))]
	if b.sec != sec {
		b.sec, b.bytes = sec, 0
	}
	b.bytes += n
	m.mu.Unlock()
}

// perSecond is the rate over the last RateWindow, counting the current,
// partial second for the fraction of it that has passed.
func (m *rateMeter) perSecond(now time.Time) float64 {
	sec := now.Unix()
	full := int64(len(m.buckets) - 1)
	var sum int64
	m.mu.Lock()
	for _, b := range m.buckets {
		if b.sec <= sec && b.sec >= sec-full {
			sum += b.bytes
		}
	}
	m.mu.Unlock()
	span := float64(full) + float64(now.Nanosecond())/1e9
	return float64(sum) / span
}
