package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// switchServer serves a handler on one loopback port that can be closed (connections refused:
// a dead origin) and opened again on the same port.
type switchServer struct {
	t    testing.TB
	addr string
	h    http.Handler
	mu   sync.Mutex
	srv  *http.Server
}

func newSwitchServer(t testing.TB, h http.Handler) *switchServer {
	s := &switchServer{t: t, h: h}
	s.start("127.0.0.1:0")
	t.Cleanup(s.stop)
	return s
}

func (s *switchServer) start(addr string) {
	s.t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the old socket may linger a moment
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("listen on %s again: %v", addr, err)
	}
	s.addr = ln.Addr().String()
	srv := &http.Server{Handler: s.h, ErrorLog: log.New(io.Discard, "", 0)}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go srv.Serve(ln)
}

func (s *switchServer) stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Close() // the listener and every connection: refused from now on
	}
}

func (s *switchServer) URL(sub string) string { return "http://" + s.addr + "/" + sub }

// outageLength is how long TestOriginDeadlines keeps the origin down: the 120 s with
// ZARRFS_LONG_TESTS=1, 20 s otherwise (CI).
func outageLength() time.Duration {
	if os.Getenv("ZARRFS_LONG_TESTS") == "1" {
		return 120 * time.Second
	}
	return 20 * time.Second
}

// remoteHealth is the part of `zarrfs stats --json` about the origin's health.
type remoteHealth struct {
	Remote struct {
		OriginDown bool      `json:"origin_down"`
		DownSince  time.Time `json:"down_since"`
		Outages    int64     `json:"outages"`
		FailedFast int64     `json:"failed_fast"`
	} `json:"remote"`
	LastRefresh *struct {
		Error string `json:"error"`
	} `json:"last_refresh"`
}

func healthStats(t testing.TB, mnt string) remoteHealth {
	t.Helper()
	out, err := runZarrfs(t, "stats", "--json", mnt)
	if err != nil {
		t.Fatalf("zarrfs stats --json: %v\n%s", err, out)
	}
	var h remoteHealth
	if err := json.Unmarshal([]byte(out), &h); err != nil {
		t.Fatalf("zarrfs stats --json: %v\n%s", err, out)
	}
	return h
}

// timedRead reads a file through the mount and says how long it took.
func timedRead(p string) ([]byte, time.Duration, error) {
	start := time.Now()
	b, err := os.ReadFile(p)
	return b, time.Since(start), err
}

func isEIO(err error) bool {
	var errno syscall.Errno
	return errors.As(err, &errno) && errno == syscall.EIO
}

// TestOriginDeadlines: against a stalled origin (it accepts and never answers, metadata
// included) and a dead one (connection refused), every read of an uncached chunk fails with
// EIO within --retry-timeout plus a margin, and once the origin is known to be down later
// ones fail at once; throughout the outage (20 s, 120 s with ZARRFS_LONG_TESTS=1) cached
// chunks read whole and right, the tree lists as before although the mount refreshes every
// 2 s, and `zarrfs stats` shows the origin down; within 10 s of the origin's return reads
// succeed again, without a remount.
func TestOriginDeadlines(t *testing.T) {
	t.Parallel() // see parallelTests in main_test.go
	fuseReady.require(t)
	stores := writeFaultStores(t)
	const retryTimeout = 3 * time.Second
	const margin = 5 * time.Second
	for _, mode := range []string{"stalled", "dead"} {
		t.Run(mode, func(t *testing.T) {
			// The stalled origin is a static one; the dead one is `zarrfs serve`'s handler,
			// so lookups come from its manifest.
			o := newFaultHandler(t, stores.dir, mode == "dead")
			srv := newSwitchServer(t, o)
			m := mount(t, srv.URL("v2.zarr"), "--retry-timeout", retryTimeout.String(), "--refresh", "2s")
			keys := stores.keys("v2.zarr")
			var cached, uncached []string
			for i, k := range keys {
				if i%2 == 0 || k == "big/0" {
					cached = append(cached, k)
				} else {
					uncached = append(uncached, k)
				}
			}
			for _, k := range cached {
				if b, err := os.ReadFile(m.path(k)); err != nil || !bytes.Equal(b, stores.files["v2.zarr/"+k]) {
					t.Fatalf("%s before the outage: %d bytes, %v", k, len(b), err)
				}
			}
			tree0, failed0 := walkMount(m.Dir)
			if len(failed0) > 0 {
				t.Fatalf("listing before the outage: %v", failed0)
			}

			// The outage.
			if mode == "stalled" {
				o.outage(faultStallHeaders)
			} else {
				srv.stop()
			}
			_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0) // cached reads reach the daemon
			b, took, err := timedRead(m.path(uncached[0]))
			if !isEIO(err) {
				t.Fatalf("first uncached read in the outage: %d bytes, %v; want EIO", len(b), err)
			}
			t.Logf("first uncached read: EIO after %v", took.Round(time.Millisecond))
			if took > retryTimeout+margin {
				t.Errorf("first uncached read took %v, want EIO within --retry-timeout %v + %v", took, retryTimeout, margin)
			}
			h := healthStats(t, m.Dir)
			if !h.Remote.OriginDown || h.Remote.DownSince.IsZero() {
				t.Errorf("stats after a read gave up: %+v; want the origin down", h.Remote)
			}

			outage := outageLength()
			end := time.Now().Add(outage)
			var slowest time.Duration
			var fast, failedReads, cachedReads, listings int
			for i := 0; time.Now().Before(end); i++ {
				k := uncached[i%len(uncached)]
				b, took, err := timedRead(m.path(k))
				if !isEIO(err) {
					t.Fatalf("uncached %s in the outage: %d bytes, %v; want EIO", k, len(b), err)
				}
				failedReads++
				slowest = max(slowest, took)
				if took < time.Second {
					fast++
				}
				for _, k := range cached {
					b, err := os.ReadFile(m.path(k))
					if err != nil || !bytes.Equal(b, stores.files["v2.zarr/"+k]) {
						t.Fatalf("cached %s in the outage: %d bytes (want %d), %v", k, len(b), len(stores.files["v2.zarr/"+k]), err)
					}
					cachedReads++
				}
				if i%5 == 0 {
					tree, failed := walkMount(m.Dir)
					if len(failed) > 0 || !sameTree(tree, tree0) {
						t.Fatalf("listing in the outage: %d entries (was %d), failures %v", len(tree), len(tree0), failed)
					}
					listings++
				}
				time.Sleep(200 * time.Millisecond)
			}
			t.Logf("%v outage: %d uncached reads failed (EIO), %d of them in under 1s, slowest %v; %d cached reads right; %d listings unchanged",
				outage, failedReads, fast, slowest.Round(time.Millisecond), cachedReads, listings)
			if slowest > retryTimeout+margin {
				t.Errorf("an uncached read in the outage took %v, want at most --retry-timeout + %v", slowest, margin)
			}
			if fast < failedReads/2 {
				t.Errorf("only %d of %d uncached reads failed fast once the origin was known down", fast, failedReads)
			}
			h = healthStats(t, m.Dir)
			if !h.Remote.OriginDown || h.Remote.FailedFast == 0 {
				t.Errorf("stats at the end of the outage: %+v; want the origin down and reads failed fast", h.Remote)
			}

			// The origin returns.
			back := time.Now()
			if mode == "stalled" {
				o.clear()
			} else {
				srv.start(srv.addr)
			}
			for {
				b, err := os.ReadFile(m.path(uncached[0]))
				if err == nil {
					if !bytes.Equal(b, stores.files["v2.zarr/"+uncached[0]]) {
						t.Fatalf("%s after the outage: wrong bytes", uncached[0])
					}
					break
				}
				if time.Since(back) > 10*time.Second {
					t.Fatalf("reads still fail 10s after the origin returned: %v", err)
				}
				time.Sleep(200 * time.Millisecond)
			}
			t.Logf("service resumed %v after the origin returned", time.Since(back).Round(time.Millisecond))
			for _, k := range uncached {
				if b, err := os.ReadFile(m.path(k)); err != nil || !bytes.Equal(b, stores.files["v2.zarr/"+k]) {
					t.Errorf("%s after the outage: %d bytes, %v", k, len(b), err)
				}
			}
			if tree, failed := walkMount(m.Dir); len(failed) > 0 || !sameTree(tree, tree0) {
				t.Errorf("listing after the outage: %d entries (was %d), failures %v", len(tree), len(tree0), failed)
			}
			h = healthStats(t, m.Dir)
			if h.Remote.OriginDown || h.Remote.Outages < 1 {
				t.Errorf("stats after the outage: %+v; want the origin up after at least one outage", h.Remote)
			}
		})
	}
}

func sameTree(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}
