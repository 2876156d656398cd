package main

import (
	"bufio"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/fusefs"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/vfs"
)

func sampleStats() *statsView {
	var s statsView
	s.mountStats = mountStats{
		URL:        `https://host/odd "name"\store.zarr`,
		Mountpoint: "/content/era5",
		Format:     2,
		Source:     "consolidated .zmetadata",
		Started:    time.Unix(1_000_000, 0),
		CacheDir:   "/root/.cache/zarrfs/ab",
		CacheBytes: 10 << 30,
	}
	s.Cache.Hits, s.Cache.Misses, s.Cache.Bytes, s.Cache.Entries = 90, 10, 3<<30, 300
	s.Cache.BytesFromCache, s.Cache.BytesFromNetwork, s.Cache.BytesServed = 6<<30, 2<<30, 8<<30
	s.Remote.Requests, s.Remote.Retries, s.Remote.BytesReceived, s.Remote.InFlight = 120, 3, 2<<30, 4
	s.Remote.RecentBytesPerSec = 50 << 20
	s.Remote.Errors.ServerErrors, s.Remote.Errors.Stalled, s.Remote.Errors.NotFound = 2, 1, 7
	s.Remote.Failures = 1
	s.Cache.RangeEntries, s.Cache.RangeBytes = 40, 10<<20
	s.Ranged = vfs.RangedStats{Objects: 5, BlockOpens: 17, Tables: 3, BadIndexes: 1, Unsupported: true}
	s.Kernel = fusefs.KernelStats{Requests: 12, ByOp: map[string]int64{"open": 5, "read": 7, "flush": 0}}
	s.PID = 4242
	s.Prefetch = &prefetchView{Bytes: 1 << 30, UsedBytes: 700 << 20, LateBytes: 100 << 20, UnreadBytes: 100 << 20, WastedBytes: 124 << 20,
		Stalls: 12, StallNs: int64(3 * time.Second), StallMaxNs: int64(800 * time.Millisecond)}
	return &s
}

func TestWriteMetrics(t *testing.T) {
	var b strings.Builder
	writeMetrics(&b, sampleStats(), time.Unix(1_000_100, 0))
	out := b.String()
	sampleRE := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (\S+)$`)
	values := map[string]float64{}
	typed := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || (f[1] != "counter" && f[1] != "gauge") {
				t.Errorf("bad TYPE line %q", line)
			}
			typed[f[0]] = true
			continue
		}
		if strings.HasPrefix(line, "# HELP ") {
			continue
		}
		m := sampleRE.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("not a sample line: %q", line)
			continue
		}
		if !typed[m[1]] {
			t.Errorf("sample %q before its TYPE line", line)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Errorf("%q: %v", line, err)
		}
		values[m[1]+m[2]] = v
	}
	for name, want := range map[string]float64{
		"zarrfs_cache_hits_total":                      90,
		"zarrfs_cache_misses_total":                    10,
		"zarrfs_cache_budget_bytes":                    10 << 30,
		`zarrfs_read_bytes_total{source="network"}`:    2 << 30,
		"zarrfs_origin_requests_in_flight":             4,
		"zarrfs_origin_retries_total":                  3,
		`zarrfs_origin_errors_total{kind="http_5xx"}`:  2,
		`zarrfs_origin_errors_total{kind="not_found"}`: 7,
		"zarrfs_uptime_seconds":                        100,
		"zarrfs_prefetch_used_bytes_total":             800 << 20,
		"zarrfs_stall_seconds_total":                   3,
		"zarrfs_cache_range_entries":                   40,
		"zarrfs_cache_range_bytes":                     10 << 20,
		"zarrfs_ranged_opens_total":                    5,
		"zarrfs_ranged_block_opens_total":              17,
		"zarrfs_ranged_indexes_total":                  3,
		"zarrfs_ranged_bad_indexes_total":              1,
		"zarrfs_ranged_unsupported":                    1,
		`zarrfs_kernel_requests_total{op="open"}`:      5,
		`zarrfs_kernel_requests_total{op="flush"}`:     0,
	} {
		if got, ok := values[name]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if want := `url="https://host/odd \"name\"\\store.zarr"`; !strings.Contains(out, want) {
		t.Errorf("label not escaped as %s:\n%s", want, out)
	}
}

func TestRenderStats(t *testing.T) {
	s := sampleStats()
	now := time.Unix(1_000_000, 0).Add(2*time.Hour + 3*time.Minute)
	out := renderStats(s, nil, 0, now)
	for _, want := range []string{
		"/content/era5, up 2h3m, daemon pid 4242",
		"3.0 GiB of 10 GiB used (30%), 300 entries",
		"90.0% (90 hits, 10 misses",
		"6.0 GiB from cache, 2.0 GiB from network\n",
		"50 MiB/s now",
		"4 in flight, 120 requests, 3 retries",
		"3 failed attempts (2 5xx, 1 stalled), 1 requests failed after retries",
		"1.0 GiB fetched ahead: 800 MiB used, 100 MiB not read yet, 124 MiB wasted",
		"12 reads waited for the network, 3s in all (longest 800ms)",
		"kernel    12 requests: 5 open, 7 read\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n > 11 { // one line per subject, every subject present
		t.Errorf("%d lines; keep it compact:\n%s", n, out)
	}

	prev := sampleStats()
	prev.Cache.BytesServed -= 20 << 20
	if out := renderStats(s, prev, 2*time.Second, now); !strings.Contains(out, "reading 10 MiB/s now") {
		t.Errorf("with an earlier sample, want the read rate between them:\n%s", out)
	}

	quiet := sampleStats()
	quiet.Remote.Errors = remote.ErrorCounts{NotFound: 12}
	quiet.Remote.Failures = 0
	quiet.Prefetch = nil
	out = renderStats(quiet, nil, 0, now)
	if !strings.Contains(out, "errors    none\n") || strings.Contains(out, "prefetch") {
		t.Errorf("404s alone are no errors, and no prefetch line without prefetch counters:\n%s", out)
	}
}

func TestFitWidth(t *testing.T) {
	tests := []struct {
		in    string
		width int
		want  string
	}{
		{"short\n", 80, "short\n"},
		{"abcdefghij\nxy\n", 6, "abcd…\nxy\n"},
		{"héllo wörld\n", 8, "héllo …\n"},
		{"anything\n", 0, "anything\n"},
	}
	for _, tc := range tests {
		if got := fitWidth(tc.in, tc.width); got != tc.want {
			t.Errorf("fitWidth(%q, %d) = %q, want %q", tc.in, tc.width, got, tc.want)
		}
	}
}

func TestRoundDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                                     "0s",
		250*time.Millisecond + 400:            "250ms",
		12*time.Second + 340*time.Millisecond: "12.3s",
		4*time.Minute + 5*time.Second + 9:     "4m5s",
		3*time.Hour + 12*time.Minute + 40*time.Second: "3h13m",
	} {
		if got := roundDuration(d); got != want {
			t.Errorf("roundDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestOriginDownShown(t *testing.T) {
	s := sampleStats()
	now := time.Unix(1_000_000, 0).Add(time.Hour)
	s.Remote.OriginDown, s.Remote.DownSince, s.Remote.DownCause = true, now.Add(-90*time.Second), "GET http://h/a: stalled"
	s.Remote.Outages, s.Remote.FailedFast = 1, 33
	out := renderStats(s, nil, 0, now)
	if !strings.Contains(out, "DOWN since") || !strings.Contains(out, "(1m30s ago)") || !strings.Contains(out, "stalled") {
		t.Errorf("a down origin is not shown:\n%s", out)
	}
	var b strings.Builder
	writeMetrics(&b, s, now)
	for _, want := range []string{"zarrfs_origin_down 1\n", "zarrfs_origin_failed_fast_total 33\n", "zarrfs_origin_outages_total 1\n",
		fmt.Sprintf("zarrfs_origin_down_since_seconds %v\n", float64(now.Add(-90*time.Second).Unix()))} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	s.Remote.OriginDown, s.Remote.DownSince = false, time.Time{}
	if out := renderStats(s, nil, 0, now); !strings.Contains(out, "outages   1 ") || strings.Contains(out, "DOWN") {
		t.Errorf("after the outage, want the count of outages:\n%s", out)
	}
}
