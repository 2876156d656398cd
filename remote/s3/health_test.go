package s3

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/zarrfs/zarrfs/remote"
)

// TestOriginHealth: as with remote.Client, an operation that spends its
// retry budget on an origin that answers only 500 marks it down; further
// operations fail at once with ErrUnreachable without a request; once the
// probe pause is over one operation at a time goes through as the probe,
// and its answer marks the origin up again.
func TestOriginHealth(t *testing.T) {
	var broken atomic.Bool
	var requests atomic.Int64
	hold := make(chan struct{})
	var holding atomic.Bool
	arrived := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if broken.Load() {
			s3Error(w, http.StatusInternalServerError, "InternalError")
			return
		}
		if holding.Load() {
			arrived <- struct{}{}
			<-hold
		}
		w.Header().Set("ETag", `"e"`)
		w.Write([]byte("{}"))
	}))
	t.Cleanup(srv.Close)
	o, err := Open(ctxT(t), "s3://b/s.zarr", Options{Endpoint: srv.URL,
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
		Remote:      remote.Options{RetryDeadline: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	// The health's clock is the test's: probe pauses pass without sleeping.
	var mu sync.Mutex
	now := time.Now()
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	o.health = remote.NewHealth(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	o.httpc.health = o.health
	ctx := ctxT(t)

	broken.Store(true)
	if _, _, err := o.Get(ctx, ".zgroup", 100); err == nil {
		t.Fatal("Get from an origin that answers 500 succeeded")
	}
	st := o.Stats()
	if !st.OriginDown || st.Outages != 1 || st.Failures != 1 || st.Errors.ServerErrors == 0 {
		t.Fatalf("after a whole budget of 500s: %+v; want the origin down after retries", st)
	}

	// Down: the next operations fail at once, without a request; after
	// the first probe pause (1 s) one goes through as the probe, with one
	// attempt only while the origin still fails.
	before := requests.Load()
	if _, _, err := o.Get(ctx, ".zgroup", 100); !errors.Is(err, remote.ErrUnreachable) || requests.Load() != before {
		t.Fatalf("while down: %v after %d requests; want ErrUnreachable and none", err, requests.Load()-before)
	}
	advance(1100 * time.Millisecond)
	if _, _, err := o.Get(ctx, ".zgroup", 100); err == nil || requests.Load() != before+1 {
		t.Fatalf("probe of an origin still down: %v after %d requests; want one attempt", err, requests.Load()-before)
	}

	broken.Store(false)
	before = requests.Load()
	_, _, err = o.Get(ctx, ".zgroup", 100)
	if !errors.Is(err, remote.ErrUnreachable) || requests.Load() != before {
		t.Fatalf("while down: %v after %d requests; want ErrUnreachable and none", err, requests.Load()-before)
	}
	if st := o.Stats(); st.FailedFast != 2 || st.Failures != 2 {
		t.Errorf("a refusal while down: %+v; want it counted as failed fast, not as a failure", st)
	}

	// After the next probe pause (2 s), one operation is the probe; a
	// second one while it is out still fails fast.
	advance(2100 * time.Millisecond)
	holding.Store(true)
	probeErr := make(chan error, 1)
	go func() {
		_, _, err := o.Get(ctx, ".zgroup", 100)
		probeErr <- err
	}()
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("the probe did not reach the origin")
	}
	holding.Store(false)
	if _, _, err := o.Get(ctx, ".zgroup", 100); !errors.Is(err, remote.ErrUnreachable) {
		t.Errorf("a second operation during the probe: %v; want ErrUnreachable (one probe at a time)", err)
	}
	close(hold)
	if err := <-probeErr; err != nil {
		t.Fatalf("probe: %v", err)
	}
	if st := o.Stats(); st.OriginDown {
		t.Fatalf("after a probe got an answer: %+v; want the origin up", st)
	}
	if _, _, err := o.Get(ctx, ".zgroup", 100); err != nil {
		t.Fatalf("after the origin came back: %v", err)
	}
}
