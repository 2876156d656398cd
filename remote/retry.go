package remote

// One logical operation (Get, Fetch, List) is a series of attempts run by
// Client.retry. Each attempt runs under its own context, cancelled by a
// stall watchdog when the network makes no progress for StallTimeout, so no
// attempt can hang; the retry budget (RetryDeadline) bounds the series.
// No locks are held here: the watchdog is a time.AfterFunc timer whose only
// action is cancelling the attempt's context.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	backoffBase = 100 * time.Millisecond
	backoffCap  = 5 * time.Second // longest wait between two attempts from backoff alone
	// retryAfterCap bounds how long a server's Retry-After can make us wait.
	retryAfterCap = 30 * time.Second
)

// retryState is one operation's progress through its attempts.
type retryState struct {
	now         func() time.Time
	start       time.Time // operation start, for the final message
	budgetStart time.Time // start of the current retry budget
	attempts    int
	step        int // backoff exponent
}

// progressed restarts the retry budget and the backoff: an operation that
// keeps delivering bytes is not failing, however long it runs.
func (s *retryState) progressed() {
	s.budgetStart = s.now()
	s.step = 0
}

// retry runs attempt until it succeeds, fails permanently, the caller's
// context ends or the retry budget is spent.
func (c *Client) retry(ctx context.Context, method, u string, attempt func(context.Context, *retryState) error) error {
	now := c.now()
	st := &retryState{now: c.now, start: now, budgetStart: now}
	for {
		st.attempts++
		err := attempt(ctx, st)
		if err == nil {
			return nil
		}
		c.counters.attemptFailed(ctx, err)
		if ctxErr := ctx.Err(); ctxErr != nil {
			if st.attempts > 1 {
				return fmt.Errorf("%s %s: %w (after %d attempts; last error: %v)", method, u, ctxErr, st.attempts, err)
			}
			return fmt.Errorf("%s %s: %w", method, u, ctxErr)
		}
		var perm permanentError
		if errors.As(err, &perm) {
			c.counters.operationFailed(ctx, perm.err)
			return st.final(perm.err)
		}
		retryable, retryAfter := classify(err)
		if !retryable {
			c.counters.operationFailed(ctx, err)
			return st.final(err)
		}
		wait := c.backoff(st.step, retryAfter)
		if c.now().Sub(st.budgetStart)+wait > c.opts.RetryDeadline {
			c.log.Warn("remote: giving up", "method", method, "url", u, "attempts", st.attempts, "error", err.Error())
			c.counters.operationFailed(ctx, err)
			return st.final(err)
		}
		c.counters.retries.Add(1)
		c.log.Debug("remote: retrying", "method", method, "url", u, "attempt", st.attempts, "wait", wait, "error", err.Error())
		if err := c.sleep(ctx, wait); err != nil {
			return fmt.Errorf("%s %s: %w (after %d attempts)", method, u, err, st.attempts)
		}
		st.step++
	}
}

// final decorates the last error with the attempt count when there was
// more than one attempt.
func (s *retryState) final(err error) error {
	if s.attempts <= 1 {
		return err
	}
	return &gaveUpError{last: err, attempts: s.attempts, elapsed: s.now().Sub(s.start)}
}

type gaveUpError struct {
	last     error
	attempts int
	elapsed  time.Duration
}

func (e *gaveUpError) Error() string {
	return fmt.Sprintf("%v (gave up after %d attempts in %s)", e.last, e.attempts, e.elapsed.Round(time.Millisecond))
}
func (e *gaveUpError) Unwrap() error { return e.last }

// backoff returns the wait before the next attempt: full jitter over an
// exponentially growing ceiling, but at least what Retry-After asked.
func (c *Client) backoff(step int, retryAfter time.Duration) time.Duration {
	ceiling := backoffCap
	if step < 16 {
		ceiling = min(backoffCap, backoffBase<<step)
	}
	wait := c.jitter(ceiling)
	return max(wait, min(retryAfter, retryAfterCap))
}

func fullJitter(ceiling time.Duration) time.Duration {
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling + 1)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// permanentError stops the retry loop; the wrapped error is returned as is.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return permanentError{err} }

// classify says whether an attempt's error is worth another attempt, and
// how long the server asked us to wait.
func classify(err error) (retryable bool, retryAfter time.Duration) {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code == http.StatusTooManyRequests || (se.Code >= 500 && se.Code != http.StatusNotImplemented), se.retryAfter
	}
	var te *transportError
	if errors.As(err, &te) {
		return te.retryable, 0
	}
	return false, 0
}

// transportError is a failure below HTTP: DNS, connect, TLS, a connection
// reset or cut, a stall.
type transportError struct {
	method, url string
	kind        error // ErrUnreachable, ErrTLS or nil
	cause       error
	retryable   bool
}

func (e *transportError) Error() string {
	if e.kind != nil {
		return fmt.Sprintf("%s %s: %v: %v", e.method, e.url, e.kind, e.cause)
	}
	return fmt.Sprintf("%s %s: %v", e.method, e.url, e.cause)
}

func (e *transportError) Unwrap() []error {
	if e.kind == nil {
		return []error{e.cause}
	}
	return []error{e.kind, e.cause}
}

// errStalled is the cause set on an attempt's context by the watchdog.
var errStalled = errors.New("stalled")

// transportError classifies err from an attempt run under attemptCtx.
func (c *Client) transportError(attemptCtx context.Context, method, u string, err error) *transportError {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // its text repeats the method and URL
	}
	te := &transportError{method: method, url: u, cause: err, retryable: true}
	if errors.Is(context.Cause(attemptCtx), errStalled) {
		te.cause = fmt.Errorf("no progress for %s (stall timeout): %w", c.opts.StallTimeout, errStalled)
		return te
	}
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verify           *tls.CertificateVerificationError
		recordHeader     tls.RecordHeaderError
		dnsErr           *net.DNSError
		opErr            *net.OpError
	)
	switch {
	case errors.As(err, &recordHeader),
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		te.kind, te.retryable = ErrNotTLS, false
	case errors.As(err, &unknownAuthority), errors.As(err, &hostname), errors.As(err, &invalid),
		errors.As(err, &verify):
		te.kind, te.retryable = ErrTLS, false
	case errors.As(err, &dnsErr):
		te.kind, te.retryable = ErrUnreachable, !dnsErr.IsNotFound
	case errors.As(err, &opErr) && opErr.Op == "dial":
		te.kind = ErrUnreachable
	}
	return te
}

// statusErrorOf turns an unusable response into a *StatusError, draining a
// little of the body so the connection can be reused.
func statusErrorOf(resp *http.Response, u string) error {
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	status := resp.Status
	if status == "" {
		status = strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
	}
	return &StatusError{
		Method:     resp.Request.Method,
		URL:        u,
		Code:       resp.StatusCode,
		Status:     status,
		retryAfter: parseRetryAfter(resp.Header.Get("Retry-After")),
	}
}

// parseRetryAfter reads delta-seconds or an HTTP date; 0 if absent or bad.
func parseRetryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(retryAfterCap/time.Second)+1)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, time.Until(t))
	}
	return 0
}

// watchdog cancels an attempt when the network makes no progress for d
// while armed. It is armed only while waiting on the network (from getting
// a connection to the response headers, and inside each body Read), so a
// slow consumer or a wait for a free connection slot is not a stall.
type watchdog struct {
	d time.Duration
	t *time.Timer
}

func newWatchdog(d time.Duration, cancel context.CancelCauseFunc) *watchdog {
	t := time.AfterFunc(time.Hour, func() { cancel(errStalled) })
	t.Stop()
	return &watchdog{d: d, t: t}
}

func (w *watchdog) arm()    { w.t.Reset(w.d) }
func (w *watchdog) disarm() { w.t.Stop() }

// watchedBody arms the watchdog around each Read of the response body.
type watchedBody struct {
	rc       io.ReadCloser
	wd       *watchdog
	counters *counters
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.wd.arm()
	n, err := b.rc.Read(p)
	b.wd.disarm()
	b.counters.received(n)
	return n, err
}

func (b *watchedBody) Close() error { return b.rc.Close() }

// send makes one attempt's request. On success the response body is watched
// for stalls and release must be called when done with it.
func (c *Client) send(ctx context.Context, method, u string, hdr http.Header) (resp *http.Response, release func(), err error) {
	actx, cancel := context.WithCancelCause(ctx)
	wd := newWatchdog(c.opts.StallTimeout, cancel)
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { wd.arm() }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(actx, trace), method, u, nil)
	if err != nil {
		cancel(nil)
		return nil, nil, permanent(fmt.Errorf("%s %s: %w", method, u, err))
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", c.opts.UserAgent)
	if c.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.opts.Token)
	}
	c.counters.requests.Add(1)
	c.counters.inFlight.Add(1)
	resp, err = c.hc.Do(req)
	wd.disarm()
	if err != nil {
		c.counters.inFlight.Add(-1)
		terr := c.transportError(actx, method, u, err)
		cancel(nil)
		return nil, nil, terr
	}
	resp.Body = &watchedBody{rc: resp.Body, wd: wd, counters: &c.counters}
	var once sync.Once
	release = func() {
		once.Do(func() {
			wd.disarm()
			resp.Body.Close()
			cancel(nil)
			c.counters.inFlight.Add(-1)
		})
	}
	return resp, release, nil
}
