package remote

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestHealthProbeBackoff(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	h := NewHealth(func() time.Time { return now })
	if probe, err := h.Admit(); probe || err != nil {
		t.Fatalf("up: Admit = %v, %v; want no probe, no error", probe, err)
	}
	if !h.Down(errors.New("boom")) || h.Down(errors.New("again")) {
		t.Fatal("Down should report the transition once")
	}
	if _, err := h.Admit(); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("down, before the first probe: err = %v, want ErrUnreachable", err)
	}
	// Probes are 1 s, 2 s, 3 s, 3 s apart, one at a time.
	for i, pause := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second} {
		now = now.Add(pause - time.Millisecond)
		if probe, err := h.Admit(); probe || err == nil {
			t.Fatalf("probe %d: admitted %v before its pause of %v ended", i, probe, pause)
		}
		now = now.Add(time.Millisecond)
		if probe, err := h.Admit(); !probe || err != nil {
			t.Fatalf("probe %d: Admit = %v, %v after %v; want the probe", i, probe, err, pause)
		}
		if probe, err := h.Admit(); probe || !errors.Is(err, ErrUnreachable) {
			t.Fatalf("probe %d: a second operation during the probe got %v, %v; want ErrUnreachable", i, probe, err)
		}
		h.ProbeDone()
	}
	st := h.State()
	if !st.Down || st.Outages != 1 || st.Rejected != 9 || st.Cause != "boom" {
		t.Errorf("state = %+v; want down once, 9 rejected, cause boom", st)
	}
	if !h.Up() || h.IsDown() {
		t.Fatal("Up should end the outage")
	}
	if probe, err := h.Admit(); probe || err != nil {
		t.Errorf("up again: Admit = %v, %v", probe, err)
	}
}

// TestOriginDownFailsFast: once an operation gave up on an origin that
// answers 5xx, further operations fail at once with ErrUnreachable and no
// request, one probe at a time goes out after the pause, and a usable
// answer ends the outage.
func TestOriginDownFailsFast(t *testing.T) {
	var healthy atomic.Bool
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if !healthy.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("ETag", `"v"`)
		_, _ = io.WriteString(w, "data")
	}))
	defer srv.Close()
	c, clk := newFakeTimeClient(t, srv.URL, Options{RetryDeadline: 10 * time.Second})
	ctx := context.Background()

	if _, err := c.Fetch(ctx, "a/0", io.Discard); errors.Is(err, ErrUnreachable) || err == nil {
		t.Fatalf("first operation: err = %v; want the 503 after its budget", err)
	}
	if st := c.Stats(); !st.OriginDown || st.DownSince.IsZero() || st.Outages != 1 {
		t.Fatalf("after giving up: stats %+v; want the origin down", st)
	}
	before := n.Load()
	for range 5 {
		if _, err := c.Fetch(ctx, "a/1", io.Discard); !errors.Is(err, ErrUnreachable) {
			t.Fatalf("while down: err = %v, want ErrUnreachable", err)
		}
	}
	if got := n.Load() - before; got != 0 {
		t.Errorf("while down and before the first probe: %d requests, want 0", got)
	}
	clk.sleep(ctx, time.Second)
	// The probe makes one attempt only.
	if _, err := c.Fetch(ctx, "a/1", io.Discard); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("failed probe: err = %v, want ErrUnreachable", err)
	}
	if got := n.Load() - before; got != 1 {
		t.Errorf("failed probe made %d requests, want 1", got)
	}
	if st := c.Stats(); st.FailedFast != 5 {
		t.Errorf("failed_fast = %d, want 5", st.FailedFast)
	}
	healthy.Store(true)
	clk.sleep(ctx, time.Second) // the second pause is 2 s
	if _, err := c.Fetch(ctx, "a/1", io.Discard); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("before the second probe: err = %v, want ErrUnreachable", err)
	}
	clk.sleep(ctx, time.Second)
	if _, err := c.Fetch(ctx, "a/1", io.Discard); err != nil {
		t.Fatalf("second probe: %v", err)
	}
	if st := c.Stats(); st.OriginDown || !st.DownSince.IsZero() {
		t.Errorf("after a successful probe: stats %+v; want the origin up", st)
	}
	if _, err := c.Fetch(ctx, "a/2", io.Discard); err != nil {
		t.Errorf("after the outage: %v", err)
	}
}

// stallingServer accepts connections and never answers until closed.
func stallingServer(t *testing.T) (url string, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int32)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + ln.Addr().String() + "/store", accepted
}

// TestStallBoundedByRetryBudget: an origin that accepts and never answers
// costs an operation its retry budget, not the (much longer) stall timeout,
// and once the origin is down the next operation fails at once.
func TestStallBoundedByRetryBudget(t *testing.T) {
	u, _ := stallingServer(t)
	c, err := New(u, Options{RetryDeadline: 700 * time.Millisecond, StallTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Fetch(context.Background(), "a/0", io.Discard)
	took := time.Since(start)
	if !errors.Is(err, errStalled) {
		t.Fatalf("err = %v, want a stall", err)
	}
	if !strings.Contains(err.Error(), "retry budget") {
		t.Errorf("err = %v; want it to say the retry budget ran out", err)
	}
	// Behaviour, not speed: the budget plus a generous margin, far below
	// the 30 s stall timeout.
	if took > 5*time.Second {
		t.Errorf("a stalled operation took %v with a 700ms retry budget", took)
	}
	start = time.Now()
	if _, err := c.Fetch(context.Background(), "a/1", io.Discard); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("next operation: err = %v, want ErrUnreachable", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the next operation took %v; want it to fail at once", took)
	}
}

// TestProgressRestartsBudget: a body that keeps delivering bytes slower than
// the retry budget in all is not cut by the budget.
func TestProgressRestartsBudget(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		for range 10 {
			_, _ = w.Write([]byte("x"))
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	}))
	defer srv.Close()
	c, err := New(srv.URL, Options{RetryDeadline: 400 * time.Millisecond, StallTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var sb strings.Builder
	if _, err := c.Fetch(context.Background(), "a/0", &sb); err != nil || sb.Len() != 10 {
		t.Fatalf("Fetch = %d bytes, %v; want 10 bytes delivered over 1s", sb.Len(), err)
	}
}
