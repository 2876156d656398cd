package remote

// Origin health: once an operation has given up on an origin that does not
// answer (transport errors, stalls, 5xx or 429 for a whole retry budget),
// every further operation would wait a whole budget again, and a reader
// whose data is not cached would hang for it each time. Health remembers
// that the origin is down so operations fail at once (ErrUnreachable), and
// lets one operation at a time through as a probe, with a growing pause
// between probes; any usable answer from the origin, to a probe or to an
// operation that was already in flight, marks it up again.
//
// Lock order: Health.mu is a leaf; nothing is called while holding it.

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

const (
	probeBackoffMin = time.Second
	// probeBackoffMax and ProbeStallMax keep the time from the origin's
	// return to the next successful probe under about 8 s.
	probeBackoffMax = 3 * time.Second
)

// ProbeStallMax is the longest a probe (Admit's probe=true) may wait
// without progress: a probe of an origin that is down must not hold the
// next probe back for a whole stall timeout.
const ProbeStallMax = 5 * time.Second

// Health tracks whether an origin is reachable. Its zero value is not
// usable: make one with NewHealth. It is safe for concurrent use and is
// meant to be shared by the operations of one origin (the HTTP client, an
// S3 client).
type Health struct {
	now func() time.Time

	mu        sync.Mutex
	down      bool
	since     time.Time // when it went down
	cause     string    // the error the operation that gave up saw
	probing   bool      // a probe is in flight
	nextProbe time.Time // no probe before this
	pause     time.Duration
	rejected  int64 // operations failed at once while down
	outages   int64 // times the origin went down
}

// NewHealth returns the Health of an origin that is up. now is the clock
// (time.Now outside tests).
func NewHealth(now func() time.Time) *Health {
	if now == nil {
		now = time.Now
	}
	return &Health{now: now}
}

// HealthState is a snapshot of a Health.
type HealthState struct {
	Down      bool
	Since     time.Time // zero when up
	Cause     string
	Rejected  int64 // operations failed fast while down, since NewHealth
	Outages   int64 // transitions to down, since NewHealth
	NextProbe time.Time
}

// State returns a snapshot.
func (h *Health) State() HealthState {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := HealthState{Down: h.down, Cause: h.cause, Rejected: h.rejected, Outages: h.outages}
	if h.down {
		s.Since, s.NextProbe = h.since, h.nextProbe
	}
	return s
}

// Admit is called before an operation. When the origin is up it returns
// (false, nil). When it is down it either lets this operation through as
// the probe (true, nil) — the caller must then call ProbeDone once it is
// finished, whatever the outcome — or refuses it with an error wrapping
// ErrUnreachable.
func (h *Health) Admit() (probe bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.down {
		return false, nil
	}
	now := h.now()
	if !h.probing && !now.Before(h.nextProbe) {
		h.probing = true
		return true, nil
	}
	h.rejected++
	return false, &downError{since: h.since, cause: h.cause}
}

// IsDown says whether the origin is currently known to be down.
func (h *Health) IsDown() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.down
}

// Up records a usable answer from the origin; it says whether the origin
// was down until then.
func (h *Health) Up() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.down {
		return false
	}
	h.down, h.cause = false, ""
	h.since, h.nextProbe, h.pause = time.Time{}, time.Time{}, 0
	return true
}

// Down records that an operation gave up on an origin that did not answer
// usably for a whole retry budget. cause is its last error. It says
// whether the origin was up until then.
func (h *Health) Down(cause error) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down {
		return false
	}
	now := h.now()
	h.down, h.since, h.outages = true, now, h.outages+1
	h.cause = cause.Error()
	h.pause = probeBackoffMin
	h.nextProbe = now.Add(h.pause)
	return true
}

// ProbeDone ends the probe Admit let through. If the origin is still down
// (the probe got no usable answer), the next probe waits a little longer.
func (h *Health) ProbeDone() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.probing = false
	if !h.down {
		return
	}
	h.pause = min(2*h.pause, probeBackoffMax)
	h.nextProbe = h.now().Add(h.pause)
}

// downError is what an operation refused by Admit gets.
type downError struct {
	since time.Time
	cause string
}

func (e *downError) Error() string {
	return fmt.Sprintf("%v: down since %s (%s); failing at once until a probe gets an answer",
		ErrUnreachable, e.since.UTC().Format(time.RFC3339), e.cause)
}

func (e *downError) Unwrap() error { return ErrUnreachable }

// FailedFast reports whether err is Admit's refusal of an operation while
// the origin is down: it is counted by Health (Rejected), not as a failure.
func FailedFast(err error) bool {
	var d *downError
	return errors.As(err, &d)
}
