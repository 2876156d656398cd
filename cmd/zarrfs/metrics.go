package main

// --metrics-addr: the mount's counters over HTTP at /metrics, in the
// Prometheus text exposition format (version 0.0.4), written by hand: it is
// a few lines and needs no client library. The counters are the ones
// `zarrfs stats` shows, read from the same snapshot.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
)

// metricsServer serves /metrics until Close.
type metricsServer struct {
	srv  *http.Server
	done chan struct{}
}

// listenMetrics binds addr before the mount is made, so that a taken port
// fails the mount with a clear message instead of being found later.
func listenMetrics(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %s: %w: choose a free HOST:PORT (for example 127.0.0.1:9464)", addr, err)
	}
	return ln, nil
}

// serveMetrics answers GET /metrics on ln with snapshot's counters.
func serveMetrics(ln net.Listener, snapshot func() any, log *slog.Logger) *metricsServer {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		s, err := viewOf(snapshot())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		writeMetrics(w, s, time.Now())
	})
	m := &metricsServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		done: make(chan struct{}),
	}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server stopped", "err", err)
		}
	}()
	log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return m
}

func (m *metricsServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = m.srv.Shutdown(ctx)
	<-m.done
}

// viewOf reads a stats snapshot through its JSON form, as `zarrfs stats`
// does, so both show the same counters under the same names.
func viewOf(snapshot any) (*statsView, error) {
	b, err := json.Marshal(snapshot)
	if err != nil {
		return nil, err
	}
	var s statsView
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	if s.PID == 0 {
		s.PID = os.Getpid()
	}
	return &s, nil
}

// writeMetrics writes s in the Prometheus text format.
func writeMetrics(w io.Writer, s *statsView, now time.Time) {
	metric := func(name, typ, help string, samples ...sample) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		for _, smp := range samples {
			fmt.Fprintf(w, "%s%s %v\n", name, smp.labels, smp.value)
		}
	}
	one := func(v float64) sample { return sample{value: v} }
	cs, rs := s.Cache, s.Remote

	metric("zarrfs_info", "gauge", "The mounted store; always 1.",
		sample{labels: labels("url", s.URL, "mountpoint", s.Mountpoint, "zarr_format", fmt.Sprint(s.Format), "tree_from", s.Source), value: 1})
	metric("zarrfs_uptime_seconds", "gauge", "Seconds since the mount was made.", one(now.Sub(s.Started).Seconds()))

	metric("zarrfs_cache_budget_bytes", "gauge", "Byte budget of the chunk cache.", one(float64(s.CacheBytes)))
	metric("zarrfs_cache_bytes", "gauge", "Bytes of cache entries on disk.", one(float64(cs.Bytes)))
	metric("zarrfs_cache_entries", "gauge", "Cache entries on disk.", one(float64(cs.Entries)))
	metric("zarrfs_cache_hits_total", "counter", "Opens served from a cache entry on disk.", one(float64(cs.Hits)))
	metric("zarrfs_cache_misses_total", "counter", "Opens that waited for a fetch from the origin.", one(float64(cs.Misses)))
	metric("zarrfs_cache_absent_hits_total", "counter", "Opens of chunks known to be absent on the origin (fill value).", one(float64(cs.NotFoundHits)))
	metric("zarrfs_cache_evictions_total", "counter", "Entries evicted to stay within the budget or the free-space floor.", one(float64(cs.Evictions)))
	metric("zarrfs_cache_corrupt_entries_total", "counter", "Damaged cache entries found, removed and fetched again.", one(float64(cs.CorruptEntries)))
	metric("zarrfs_cache_write_errors_total", "counter", "Fetches the cache disk could not take.", one(float64(cs.WriteErrors)))
	metric("zarrfs_read_bytes_total", "counter", "Bytes read through the mount, by where they came from.",
		sample{labels: labels("source", "cache"), value: float64(cs.BytesFromCache)},
		sample{labels: labels("source", "network"), value: float64(cs.BytesFromNetwork)})

	metric("zarrfs_origin_requests_total", "counter", "HTTP requests sent to the origin (each attempt counts).", one(float64(rs.Requests)))
	metric("zarrfs_origin_requests_in_flight", "gauge", "HTTP requests to the origin not finished yet.", one(float64(rs.InFlight)))
	metric("zarrfs_origin_retries_total", "counter", "Requests repeated after a retryable failure.", one(float64(rs.Retries)))
	metric("zarrfs_origin_failures_total", "counter", "Operations that failed after retries (absent objects not counted).", one(float64(rs.Failures)))
	metric("zarrfs_origin_received_bytes_total", "counter", "Response body bytes received from the origin.", one(float64(rs.BytesReceived)))
	metric("zarrfs_origin_receive_rate_bytes", "gauge", "Bytes per second received from the origin over the last few seconds.", one(rs.RecentBytesPerSec))
	metric("zarrfs_origin_down", "gauge", "1 while the origin is known to be down (operations fail at once while one probe at a time checks it).", one(boolValue(rs.OriginDown)))
	downSince := 0.0
	if rs.OriginDown {
		downSince = float64(rs.DownSince.UnixNano()) / 1e9
	}
	metric("zarrfs_origin_down_since_seconds", "gauge", "Unix time the origin went down; 0 while it is up.", one(downSince))
	metric("zarrfs_origin_outages_total", "counter", "Times the origin went down.", one(float64(rs.Outages)))
	metric("zarrfs_origin_failed_fast_total", "counter", "Operations failed at once because the origin was down.", one(float64(rs.FailedFast)))
	e := rs.Errors
	var errs []sample
	for _, k := range []struct {
		kind string
		n    int64
	}{
		{"not_found", e.NotFound}, {"unauthorized", e.Unauthorized}, {"forbidden", e.Forbidden},
		{"throttled", e.Throttled}, {"http_4xx", e.ClientErrors}, {"http_5xx", e.ServerErrors},
		{"unreachable", e.Unreachable}, {"tls", e.TLS}, {"stalled", e.Stalled},
		{"network", e.Network}, {"changed", e.Changed}, {"other", e.Other},
	} {
		errs = append(errs, sample{labels: labels("kind", k.kind), value: float64(k.n)})
	}
	metric("zarrfs_origin_errors_total", "counter", "Failed requests to the origin by kind (not_found is normal: absent chunks).", errs...)

	rg := s.Ranged
	metric("zarrfs_cache_range_entries", "gauge", "Cache entries that hold a byte range of a shard or big object.", one(float64(cs.RangeEntries)))
	metric("zarrfs_cache_range_bytes", "gauge", "Bytes of range entries on disk.", one(float64(cs.RangeBytes)))
	metric("zarrfs_ranged_opens_total", "counter", "Opens of shards and big objects served by blocks.", one(float64(rg.Objects)))
	metric("zarrfs_ranged_block_opens_total", "counter", "Block entries opened for readers.", one(float64(rg.BlockOpens)))
	metric("zarrfs_ranged_indexes_total", "counter", "Shard indexes read.", one(float64(rg.Tables)))
	metric("zarrfs_ranged_bad_indexes_total", "counter", "Shard indexes that failed to parse (the shard is read in fixed blocks).", one(float64(rg.BadIndexes)))
	metric("zarrfs_ranged_prefetch_dropped_total", "counter", "Predicted shards not prefetched because the expansion queue was full.", one(float64(rg.Dropped)))
	metric("zarrfs_ranged_unsupported", "gauge", "1 when the origin ignores byte ranges and objects are read whole.", one(boolValue(rg.Unsupported)))

	var kernel []sample
	for _, op := range slices.Sorted(maps.Keys(s.Kernel.ByOp)) {
		kernel = append(kernel, sample{labels: labels("op", op), value: float64(s.Kernel.ByOp[op])})
	}
	metric("zarrfs_kernel_requests_total", "counter", "Requests the kernel sent the mount, by operation (each synchronous one is a round trip for the reader).", kernel...)

	if p := s.Prefetch; p != nil {
		metric("zarrfs_prefetch_bytes_total", "counter", "Bytes fetched ahead of reads.", one(float64(p.Bytes)))
		metric("zarrfs_prefetch_used_bytes_total", "counter", "Prefetched bytes that were then read.", one(float64(p.UsedBytes+p.LateBytes)))
		metric("zarrfs_prefetch_wasted_bytes_total", "counter", "Prefetched bytes evicted or dropped without being read.", one(float64(p.WastedBytes)))
		metric("zarrfs_prefetch_unread_bytes", "gauge", "Prefetched bytes on disk not read yet.", one(float64(p.UnreadBytes)))
		metric("zarrfs_stalls_total", "counter", "Reads that waited for the network.", one(float64(p.Stalls)))
		metric("zarrfs_stall_seconds_total", "counter", "Time reads spent waiting for the network.", one(time.Duration(p.StallNs).Seconds()))
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

type sample struct {
	labels string // `{a="b",…}` or ""
	value  float64
}

// labels formats name, value pairs as a Prometheus label set.
func labels(kv ...string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=\"%s\"", kv[i], escapeLabel(kv[i+1]))
	}
	b.WriteByte('}')
	return b.String()
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeLabel(v string) string { return labelEscaper.Replace(v) }
