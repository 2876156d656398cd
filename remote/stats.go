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

// Counters is the live form of Stats, kept by every origin of zarrfs (the
// HTTP Client here, remote/s3) so that `zarrfs stats` and /metrics read the
// same counters whatever the origin. Each origin bumps them where it sees
// the event; Snapshot turns them into Stats. The zero value is ready to
// use; it is safe for concurrent use.
type Counters struct {
	Requests, InFlight, Retries, Failures, Bytes atomic.Int64

	// Failed attempts by kind (ErrorCounts).
	NotFound, Unauthorized, Forbidden, Throttled, ClientErrors, ServerErrors,
	Unreachable, TLS, Stalled, Network, Changed, Other atomic.Int64

	rate rateMeter
}

// Stats returns a snapshot of the client's counters.
func (c *Client) Stats() Stats { return c.counters.Snapshot(c.health) }

// Snapshot returns the counters as Stats, with the origin's health when h
// is not nil.
func (k *Counters) Snapshot(h *Health) Stats {
	st := Stats{
		Requests:          k.Requests.Load(),
		InFlight:          k.InFlight.Load(),
		Retries:           k.Retries.Load(),
		Failures:          k.Failures.Load(),
		BytesReceived:     k.Bytes.Load(),
		RecentBytesPerSec: k.rate.perSecond(time.Now()),
		Errors: ErrorCounts{
			NotFound:     k.NotFound.Load(),
			Unauthorized: k.Unauthorized.Load(),
			Forbidden:    k.Forbidden.Load(),
			Throttled:    k.Throttled.Load(),
			ClientErrors: k.ClientErrors.Load(),
			ServerErrors: k.ServerErrors.Load(),
			Unreachable:  k.Unreachable.Load(),
			TLS:          k.TLS.Load(),
			Stalled:      k.Stalled.Load(),
			Network:      k.Network.Load(),
			Changed:      k.Changed.Load(),
			Other:        k.Other.Load(),
		},
	}
	if h != nil {
		hs := h.State()
		st.OriginDown, st.DownSince, st.DownCause = hs.Down, hs.Since, hs.Cause
		st.Outages, st.FailedFast = hs.Outages, hs.Rejected
	}
	return st
}

// Received counts n response body bytes.
func (k *Counters) Received(n int) {
	if n > 0 {
		k.Bytes.Add(int64(n))
		k.rate.add(time.Now(), int64(n))
	}
}

// attemptFailed counts a failed attempt by kind. ctx is the operation's
// context: an attempt that failed because the caller gave up is not counted.
func (k *Counters) attemptFailed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	k.kindOf(err).Add(1)
}

// OperationFailed counts an operation that failed for good: not one that
// only found something absent (IsAbsence), nor one the caller cancelled.
func (k *Counters) OperationFailed(ctx context.Context, err error) {
	if ctx.Err() != nil || IsAbsence(err) {
		return
	}
	k.Failures.Add(1)
}

// IsAbsence says whether err only reports that something is not there: a
// missing object, or an origin without a manifest or directory listings.
func IsAbsence(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrNoManifest) || errors.Is(err, ErrNoListing)
}

func (k *Counters) kindOf(err error) *atomic.Int64 {
	if IsAbsence(err) {
		return &k.NotFound
	}
	var se *StatusError
	if errors.As(err, &se) {
		switch {
		case se.Code == http.StatusNotFound || se.Code == http.StatusGone:
			return &k.NotFound
		case se.Code == http.StatusUnauthorized:
			return &k.Unauthorized
		case se.Code == http.StatusForbidden:
			return &k.Forbidden
		case se.Code == http.StatusTooManyRequests:
			return &k.Throttled
		case se.Code >= 500:
			return &k.ServerErrors
		case se.Code >= 400:
			return &k.ClientErrors
		}
		return &k.Other
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return &k.NotFound
	case errors.Is(err, ErrChanged):
		return &k.Changed
	case errors.Is(err, ErrTLS):
		return &k.TLS
	case errors.Is(err, ErrUnreachable):
		return &k.Unreachable
	case errors.Is(err, errStalled):
		return &k.Stalled
	}
	var te *transportError
	if errors.As(err, &te) {
		return &k.Network
	}
	return &k.Other
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
