package remote

// One logical operation (Get, Fetch, List) is a series of attempts run by
// Client.retry. Each attempt runs under its own context, cancelled by a
// stall watchdog when the network makes no progress for StallTimeout or
// for what is left of the retry budget, whichever is shorter, so no attempt
// can hang and the retry budget (RetryDeadline) bounds the operation's
// whole wait, stalls included. The origin's Health (health.go) is asked
// before each operation: an origin known to be down fails it at once.
// Lock order: watchdog.mu is a leaf, held only to arm or disarm its timer,
// whose only action is cancelling the attempt's context.

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
	"sync/atomic"
	"time"
)

const (
	backoffBase = 100 * time.Millisecond
	backoffCap  = 5 * time.Second // longest wait between two attempts from backoff alone
	// retryAfterCap bounds how long a server's Retry-After can make us wait.
	retryAfterCap = 30 * time.Second
)

// minStall is the least an attempt is given, so one that starts with its
// budget nearly spent can still take an answer that is already there.
const minStall = 50 * time.Millisecond

// retryState is one operation's progress through its attempts.
type retryState struct {
	now    func() time.Time
	start  time.Time     // operation start, for the final message
	budget time.Duration // RetryDeadline
	stall  time.Duration // the stall timeout of this operation's attempts
	// budgetStart (UnixNano) is the start of the current retry budget. It
	// is atomic because a dial's trace hook may read it on another
	// goroutine.
	budgetStart atomic.Int64
	attempts    int
	step        int // backoff exponent
}

func (c *Client) newRetryState(probe bool) *retryState {
	now := c.now()
	st := &retryState{now: c.now, start: now, budget: c.opts.RetryDeadline, stall: c.opts.StallTimeout}
	if probe {
		// A probe of an origin that is down must not hold the next probe
		// back for a whole stall timeout.
		st.stall = min(st.stall, ProbeStallMax)
	}
	st.budgetStart.Store(now.UnixNano())
	return st
}

// progressed restarts the retry budget and the backoff: an operation that
// keeps delivering bytes is not failing, however long it runs.
func (s *retryState) progressed() {
	s.madeProgress()
	s.step = 0
}

// madeProgress restarts the retry budget; it is called for every body
// read that delivered bytes.
func (s *retryState) madeProgress() { s.budgetStart.Store(s.now().UnixNano()) }

// spent is the time used of the current retry budget.
func (s *retryState) spent() time.Duration {
	return s.now().Sub(time.Unix(0, s.budgetStart.Load()))
}

// stallLimit is how long the network may now make no progress: the stall
// timeout, but never past the end of the retry budget.
func (s *retryState) stallLimit() (d time.Duration, byBudget bool) {
	left := s.budget - s.spent()
	if left < s.stall {
		return max(left, minStall), true
	}
	return s.stall, false
}

// retry runs attempt until it succeeds, fails permanently, the caller's
// context ends or the retry budget is spent.
func (c *Client) retry(ctx context.Context, method, u string, attempt func(context.Context, *retryState) error) error {
	probe, err := c.health.Admit()
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	if probe {
		c.log.Debug("remote: probing the origin", "method", method, "url", u)
		defer c.health.ProbeDone()
	}
	st := c.newRetryState(probe)
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
			c.counters.OperationFailed(ctx, perm.err)
			return st.final(perm.err)
		}
		retryable, retryAfter := classify(err)
		if !retryable {
			c.counters.OperationFailed(ctx, err)
			return st.final(err)
		}
		if c.health.IsDown() {
			// Another operation gave up meanwhile, or this one is the probe
			// and got no answer: one attempt is all it gets.
			c.counters.OperationFailed(ctx, err)
			return st.final(fmt.Errorf("%w (the origin is down: last error: %w)", ErrUnreachable, err))
		}
		wait := c.backoff(st.step, retryAfter)
		if st.spent()+wait > st.budget {
			c.log.Warn("remote: giving up", "method", method, "url", u, "attempts", st.attempts, "error", err.Error())
			c.counters.OperationFailed(ctx, err)
			if c.health.Down(err) {
				c.log.Warn("remote: the origin is down: operations fail at once while one probe at a time checks whether it is back",
					"method", method, "url", u, "error", err.Error())
			}
			return st.final(err)
		}
		c.counters.Retries.Add(1)
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
	var sc *stallCause
	if errors.As(context.Cause(attemptCtx), &sc) {
		why := "stall timeout"
		if sc.byBudget {
			why = "the rest of the retry budget"
		}
		te.cause = fmt.Errorf("no progress for %s (%s): %w", sc.d.Round(time.Millisecond), why, errStalled)
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

// stallCause is the cause the watchdog sets on an attempt's context; it
// matches errStalled.
type stallCause struct {
	d        time.Duration
	byBudget bool // d was what was left of the retry budget
}

func (e *stallCause) Error() string        { return fmt.Sprintf("no progress for %s", e.d) }
func (e *stallCause) Is(target error) bool { return target == errStalled }

// watchdog cancels an attempt when the network makes no progress while
// armed, for the stall limit the operation has left when it is armed. It
// is armed only while waiting on the network (from dialing or getting a
// connection to the response headers, and inside each body Read), so a
// slow consumer or a wait for a free connection slot is not a stall.
type watchdog struct {
	limit  func() (time.Duration, bool)
	cancel context.CancelCauseFunc

	mu sync.Mutex
	t  *time.Timer
}

func newWatchdog(limit func() (time.Duration, bool), cancel context.CancelCauseFunc) *watchdog {
	return &watchdog{limit: limit, cancel: cancel}
}

func (w *watchdog) arm() {
	d, byBudget := w.limit()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.t != nil {
		w.t.Stop()
	}
	w.t = time.AfterFunc(d, func() { w.cancel(&stallCause{d: d, byBudget: byBudget}) })
}

func (w *watchdog) disarm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.t != nil {
		w.t.Stop()
		w.t = nil
	}
}

// watchedBody arms the watchdog around each Read of the response body.
// Once the body is known to be the payload (payload set by readBody), a
// Read that delivers bytes restarts the operation's retry budget; the body
// of an error answer is not progress.
type watchedBody struct {
	rc       io.ReadCloser
	wd       *watchdog
	st       *retryState
	counters *Counters
	payload  bool
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.wd.arm()
	n, err := b.rc.Read(p)
	b.wd.disarm()
	if n > 0 && b.payload {
		b.st.madeProgress()
	}
	b.counters.Received(n)
	return n, err
}

func (b *watchedBody) Close() error { return b.rc.Close() }

// send makes one attempt's request. On success the response body is watched
// for stalls and release must be called when done with it.
func (c *Client) send(ctx context.Context, st *retryState, method, u string, hdr http.Header) (resp *http.Response, release func(), err error) {
	actx, cancel := context.WithCancelCause(ctx)
	wd := newWatchdog(st.stallLimit, cancel)
	trace := &httptrace.ClientTrace{
		// A dial that hangs (packets dropped) is a stall like any other.
		ConnectStart: func(string, string) { wd.arm() },
		GotConn:      func(httptrace.GotConnInfo) { wd.arm() },
	}
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
	c.counters.Requests.Add(1)
	c.counters.InFlight.Add(1)
	resp, err = c.hc.Do(req)
	wd.disarm()
	if err != nil {
		c.counters.InFlight.Add(-1)
		terr := c.transportError(actx, method, u, err)
		cancel(nil)
		return nil, nil, terr
	}
	if resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests && c.health.Up() {
		c.log.Info("remote: the origin answers again", "method", method, "url", u, "status", resp.Status)
	}
	resp.Body = &watchedBody{rc: resp.Body, wd: wd, st: st, counters: &c.counters}
	var once sync.Once
	release = func() {
		once.Do(func() {
			wd.disarm()
			resp.Body.Close()
			cancel(nil)
			c.counters.InFlight.Add(-1)
		})
	}
	return resp, release, nil
}
