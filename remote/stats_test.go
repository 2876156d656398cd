package remote

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestClientStats(t *testing.T) {
	body := bytes.Repeat([]byte("z"), 1000)
	ok := func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(body) }
	status := func(code int) http.HandlerFunc {
		// No body, so BytesReceived counts only the successful responses.
		return func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) }
	}
	tests := []struct {
		name     string
		handlers []http.HandlerFunc
		wantErr  bool
		want     Stats // RecentBytesPerSec is checked separately
	}{
		{"one good request", []http.HandlerFunc{ok}, false,
			Stats{Requests: 1, BytesReceived: 1000}},
		{"two 503 then success", []http.HandlerFunc{status(503), status(503), ok}, false,
			Stats{Requests: 3, Retries: 2, BytesReceived: 1000, Errors: ErrorCounts{ServerErrors: 2}}},
		{"429 then success", []http.HandlerFunc{status(429), ok}, false,
			Stats{Requests: 2, Retries: 1, BytesReceived: 1000, Errors: ErrorCounts{Throttled: 1}}},
		{"404 is not a failure", []http.HandlerFunc{status(404)}, true,
			Stats{Requests: 1, Errors: ErrorCounts{NotFound: 1}}},
		{"401 fails at once", []http.HandlerFunc{status(401)}, true,
			Stats{Requests: 1, Failures: 1, Errors: ErrorCounts{Unauthorized: 1}}},
		{"403 fails at once", []http.HandlerFunc{status(403)}, true,
			Stats{Requests: 1, Failures: 1, Errors: ErrorCounts{Forbidden: 1}}},
		{"other 4xx", []http.HandlerFunc{status(416)}, true,
			Stats{Requests: 1, Failures: 1, Errors: ErrorCounts{ClientErrors: 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(&scripted{handlers: tc.handlers})
			defer srv.Close()
			c, _ := newFakeTimeClient(t, srv.URL, Options{})
			var buf bytes.Buffer
			_, err := c.Fetch(context.Background(), "a/0.0", &buf)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Fetch error = %v, want error: %v", err, tc.wantErr)
			}
			got := c.Stats()
			if got.BytesReceived > 0 && got.RecentBytesPerSec <= 0 {
				t.Errorf("RecentBytesPerSec = %v after receiving %d bytes", got.RecentBytesPerSec, got.BytesReceived)
			}
			got.RecentBytesPerSec = 0
			if got != tc.want {
				t.Errorf("Stats() = %+v\nwant      %+v", got, tc.want)
			}
			if got.Errors.Total() != tc.want.Errors.Total() {
				t.Errorf("Errors.Total() = %d, want %d", got.Errors.Total(), tc.want.Errors.Total())
			}
		})
	}
}

func TestClientStatsCancelledNotCounted(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c, _ := newFakeTimeClient(t, srv.URL, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Fetch(ctx, "a/0.0", &bytes.Buffer{})
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().InFlight != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the request never showed as in flight")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Fetch = %v, want context.Canceled", err)
	}
	got := c.Stats()
	if got.InFlight != 0 || got.Failures != 0 || got.Errors.Total() != 0 || got.Errors.NotFound != 0 {
		t.Errorf("after a cancelled request: %+v, want nothing in flight and no failures", got)
	}
}

func TestRateMeter(t *testing.T) {
	var m rateMeter
	base := time.Unix(2_000_000, 0)
	tests := []struct {
		name string
		adds map[int]int64 // second offset -> bytes
		at   time.Duration
		want float64
	}{
		{"nothing", nil, 0, 0},
		{"steady 100/s over the window", map[int]int64{0: 100, 1: 100, 2: 100, 3: 100, 4: 100, 5: 100}, 5 * time.Second, 600.0 / 5},
		{"old bytes fall out", map[int]int64{0: 1000, 10: 50}, 10*time.Second + 500*time.Millisecond, 50 / 5.5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m = rateMeter{}
			for off, n := range tc.adds {
				m.add(base.Add(time.Duration(off)*time.Second), n)
			}
			if got := m.perSecond(base.Add(tc.at)); got < tc.want*0.999 || got > tc.want*1.001 {
				t.Errorf("perSecond = %v, want %v", got, tc.want)
			}
		})
	}
}

// An origin without a manifest or listings is normal: those 404s are counted as absences,
// not as errors or failures.
func TestClientStatsAbsenceIsNoFailure(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotFound) }))
	defer srv.Close()
	c, _ := newFakeTimeClient(t, srv.URL, Options{})
	if _, err := c.Manifest(context.Background()); !errors.Is(err, ErrNoManifest) {
		t.Fatalf("Manifest = %v, want ErrNoManifest", err)
	}
	if _, err := c.List(context.Background(), "a"); !errors.Is(err, ErrNoListing) {
		t.Fatalf("List = %v, want ErrNoListing", err)
	}
	got := c.Stats()
	if got.Requests != 2 || got.Failures != 0 || got.Errors.Total() != 0 || got.Errors.NotFound != 2 {
		t.Errorf("Stats() = %+v, want 2 requests, 2 not found, no failures", got)
	}
}
