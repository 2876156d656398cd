package main

// `zarrfs stats`: what a running mount is doing, from its daemon's control
// socket, as a few readable lines, as JSON, or refreshed in place (--watch).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/zarrfs/zarrfs/vfs/store"
)

// statsView is a daemon's /v1/stats answer: mountStats plus what the
// control socket adds, and the prefetcher's counters, read by JSON name so
// that this command also reads daemons without them.
type statsView struct {
	mountStats
	PID      int           `json:"pid"`
	Prefetch *prefetchView `json:"prefetch,omitempty"`
}

// prefetchView holds the prefetch and stall counters the CLI shows.
type prefetchView struct {
	Requests    int64 `json:"requests"`
	Bytes       int64 `json:"bytes"`
	UsedBytes   int64 `json:"used_bytes"`
	LateBytes   int64 `json:"late_bytes"`
	UnreadBytes int64 `json:"unread_bytes"`
	WastedBytes int64 `json:"wasted_bytes"`
	Queued      int   `json:"queued"`
	Stalls      int64 `json:"stalls"`
	StallNs     int64 `json:"stall_ns"`
	StallMaxNs  int64 `json:"stall_max_ns"`
}

func runStats(args []string) error {
	var (
		asJSON   bool
		watch    bool
		interval time.Duration
	)
	fl := pflag.NewFlagSet("stats", pflag.ContinueOnError)
	fl.Usage = func() {
		fmt.Fprint(os.Stdout, `Usage: zarrfs stats [--json] [--watch [--interval D]] MOUNTPOINT

Show what a running zarrfs mount is doing: its origin and store, cache use and
hit rate, bytes read from the cache and the network, network throughput now
and on average, requests in flight, retries and errors, prefetch used and
wasted, and how long reads waited for the network.

Examples:
  zarrfs stats /content/era5
  zarrfs stats --watch /content/era5          # refresh every 2s until Ctrl-C
  zarrfs stats --json /content/era5 | jq .cache

Flags:
`)
		fl.SetOutput(os.Stdout)
		fl.PrintDefaults()
	}
	fl.BoolVar(&asJSON, "json", false, "print the daemon's counters as JSON (with --watch: one object per line)")
	fl.BoolVarP(&watch, "watch", "w", false, "refresh every --interval until interrupted (in place on a terminal)")
	fl.DurationVar(&interval, "interval", 2*time.Second, "time between refreshes with --watch")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: stats: %v", errUsage, err)
	}
	if fl.NArg() != 1 {
		return fmt.Errorf("%w: stats takes MOUNTPOINT, got %d arguments", errUsage, fl.NArg())
	}
	if interval < 100*time.Millisecond {
		return fmt.Errorf("%w: --interval %s is too short: use 100ms or more", errUsage, interval)
	}
	mnt, _ := filepath.Abs(fl.Arg(0))
	c, err := dialControl(mnt)
	if err != nil {
		return err
	}
	if !watch {
		raw, s, err := fetchStats(context.Background(), c, mnt)
		if err != nil {
			return err
		}
		if asJSON {
			_, err := os.Stdout.Write(append(bytes.TrimSpace(raw), '\n'))
			return err
		}
		_, err = io.WriteString(os.Stdout, renderStats(s, nil, 0, time.Now()))
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	term := isTerminal(os.Stdout)
	var (
		prev      *statsView
		prevAt    time.Time
		lastLines int
	)
	for {
		raw, s, err := fetchStats(ctx, c, mnt)
		if ctx.Err() != nil {
			return nil // Ctrl-C: a normal way to end --watch
		}
		if err != nil {
			return err
		}
		now := time.Now()
		switch {
		case asJSON:
			var line bytes.Buffer
			if err := json.Compact(&line, raw); err != nil {
				return fmt.Errorf("daemon of %s sent unreadable stats: %w", mnt, err)
			}
			line.WriteByte('\n')
			if _, err := os.Stdout.Write(line.Bytes()); err != nil {
				return err
			}
		case term:
			out := renderStats(s, prev, now.Sub(prevAt), now)
			out = fitWidth(out, terminalWidth(os.Stdout))
			if lastLines > 0 {
				// Back to the top of the previous block, and clear it.
				fmt.Fprintf(os.Stdout, "\x1b[%dA\x1b[J", lastLines)
			}
			fmt.Fprint(os.Stdout, out)
			lastLines = strings.Count(out, "\n")
		default:
			if prev != nil {
				fmt.Fprintln(os.Stdout)
			}
			fmt.Fprint(os.Stdout, renderStats(s, prev, now.Sub(prevAt), now))
		}
		prev, prevAt = s, now
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// fetchStats asks the daemon for its counters.
func fetchStats(ctx context.Context, c *controlClient, mnt string) (json.RawMessage, *statsView, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var raw json.RawMessage
	if err := c.getJSON(ctx, "/v1/stats", &raw); err != nil {
		return nil, nil, err
	}
	var s statsView
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, nil, fmt.Errorf("daemon of %s sent unreadable stats: %w", mnt, err)
	}
	return raw, &s, nil
}

// renderStats formats a snapshot in a few lines. With prev (an earlier
// snapshot, elapsed before this one) it adds the read rate between the two.
func renderStats(s, prev *statsView, elapsed time.Duration, now time.Time) string {
	var b strings.Builder
	line := func(label, format string, args ...any) {
		fmt.Fprintf(&b, "%-9s %s\n", label, fmt.Sprintf(format, args...))
	}
	cs, rs := s.Cache, s.Remote
	up := now.Sub(s.Started)

	head := fmt.Sprintf("%s  zarr v%d (%s)", s.URL, s.Format, s.Source)
	line("origin", "%s", head)
	mount := fmt.Sprintf("%s, up %s", s.Mountpoint, roundDuration(up))
	if s.PID > 0 {
		mount += fmt.Sprintf(", daemon pid %d", s.PID)
	}
	line("mount", "%s", mount)

	cacheLine := fmt.Sprintf("%s of %s used", ibytes(cs.Bytes), ibytes(s.CacheBytes))
	if s.CacheBytes > 0 {
		cacheLine += fmt.Sprintf(" (%.0f%%)", 100*float64(cs.Bytes)/float64(s.CacheBytes))
	}
	cacheLine += fmt.Sprintf(", %d entries, %d evicted, in %s", cs.Entries, cs.Evictions, s.CacheDir)
	line("cache", "%s", cacheLine)

	hits := "-"
	if n := cs.Hits + cs.Misses; n > 0 {
		hits = fmt.Sprintf("%.1f%%", 100*float64(cs.Hits)/float64(n))
	}
	line("hit rate", "%s (%d hits, %d misses, %d known-absent chunks)", hits, cs.Hits, cs.Misses, cs.NotFoundHits)

	read := fmt.Sprintf("%s from cache, %s from network", ibytes(cs.BytesFromCache), ibytes(cs.BytesFromNetwork))
	if prev != nil && elapsed > 0 {
		served := cs.BytesServed - prev.Cache.BytesServed
		read += fmt.Sprintf("; reading %s now", rate(float64(served)/elapsed.Seconds()))
	}
	line("read", "%s", read)

	avg := 0.0
	if up > 0 {
		avg = float64(rs.BytesReceived) / up.Seconds()
	}
	line("network", "%s now, %s average; %d in flight, %d requests, %d retries",
		rate(rs.RecentBytesPerSec), rate(avg), rs.InFlight, rs.Requests, rs.Retries)

	if rs.OriginDown {
		line("origin", "DOWN since %s (%s ago): uncached reads fail at once (EIO) while one probe at a time checks it; cached data is served; last error: %s",
			rs.DownSince.Local().Format(time.TimeOnly), roundDuration(now.Sub(rs.DownSince)), rs.DownCause)
	} else if rs.Outages > 0 {
		line("outages", "%d (the origin did not answer for a whole --retry-timeout); %d operations failed at once while it was down", rs.Outages, rs.FailedFast)
	}
	line("errors", "%s", describeErrors(s))

	if p := s.Prefetch; p != nil {
		line("prefetch", "%s fetched ahead: %s used, %s not read yet, %s wasted; %d queued",
			ibytes(p.Bytes), ibytes(p.UsedBytes+p.LateBytes), ibytes(p.UnreadBytes), ibytes(p.WastedBytes), p.Queued)
		stall := "none"
		if p.Stalls > 0 {
			stall = fmt.Sprintf("%d reads waited for the network, %s in all (longest %s)",
				p.Stalls, roundDuration(time.Duration(p.StallNs)), roundDuration(time.Duration(p.StallMaxNs)))
		}
		line("stalls", "%s", stall)
	}

	if o := s.Order; o != nil {
		line("order", "%d (%s): %d of %d targets read, %d fetched (%d ahead, %s); %d reads off the order",
			o.ID, o.State, o.TargetsRead, o.Targets, o.TargetsFetched, o.AheadTargets, ibytes(o.AheadBytes), o.OffOrderReads)
	}

	if r := s.Ranged; r.Objects > 0 || r.Unsupported {
		ranged := fmt.Sprintf("%d shard and big-object opens read by blocks (%d block opens, %d shard indexes read)",
			r.Objects, r.BlockOpens, r.Tables)
		if r.BadIndexes > 0 {
			ranged += fmt.Sprintf(", %d damaged shard indexes", r.BadIndexes)
		}
		if r.Unsupported {
			ranged = "off: the origin ignores byte ranges, objects are read whole"
		}
		line("ranges", "%s", ranged)
	}

	if s.Kernel.Requests > 0 {
		line("kernel", "%s", s.Kernel)
	}

	if r := s.LastRefresh; r != nil {
		ago := roundDuration(now.Sub(r.At))
		switch {
		case r.Error != "":
			line("refresh", "FAILED %s ago, serving the last version: %s", ago, r.Error)
		case r.Changed:
			line("refresh", "%s ago: store changed (%d keys, %d nodes added, %d removed)", ago, r.ChangedKeys, len(r.NodesAdded), len(r.NodesRemoved))
		default:
			line("refresh", "%s ago: unchanged", ago)
		}
	}
	renderSkipped(&b, s.SkippedNodes)
	return b.String()
}

// maxSkippedLines bounds the nodes the human view names one by one; the
// JSON view has them all.
const maxSkippedLines = 10

// renderSkipped names the nodes left out of the mount, with the reason and
// the fix; nodes left out with a group are counted in the group's line.
func renderSkipped(b *strings.Builder, skipped []store.Skipped) {
	if len(skipped) == 0 {
		return
	}
	inside := map[string]int{}
	for _, k := range skipped {
		if k.Inside != "" {
			inside[k.Inside]++
		}
	}
	fmt.Fprintf(b, "%-9s %d nodes left out of the mount (their metadata or names cannot be used):\n", "skipped", len(skipped))
	shown := 0
	for _, k := range skipped {
		if k.Inside != "" {
			continue
		}
		if shown == maxSkippedLines {
			fmt.Fprintf(b, "%-9s ... and more: zarrfs stats --json lists them all\n", "")
			break
		}
		shown++
		name := k.Path
		if strconv.Quote(name) != `"`+name+`"` {
			name = strconv.Quote(name) // control bytes, backslashes: show them
		}
		with := ""
		if n := inside[k.Path]; n > 0 {
			with = fmt.Sprintf(" (with %d nodes inside it)", n)
		}
		fmt.Fprintf(b, "%-9s %s%s: %s\n", "", name, with, k.Problem)
		if k.Fix != "" {
			fmt.Fprintf(b, "%-9s   fix: %s\n", "", k.Fix)
		}
	}
}

// describeErrors sums up what went wrong with the origin and the cache.
func describeErrors(s *statsView) string {
	e := s.Remote.Errors
	var parts []string
	add := func(n int64, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(e.ServerErrors, "5xx")
	add(e.Throttled, "429 (throttled)")
	add(e.Stalled, "stalled")
	add(e.Network, "network")
	add(e.Unreachable, "unreachable")
	add(e.Unauthorized, "401")
	add(e.Forbidden, "403")
	add(e.ClientErrors, "other 4xx")
	add(e.TLS, "TLS")
	add(e.Changed, "changed while read")
	add(e.Other, "other")
	var out string
	if len(parts) == 0 {
		out = "none"
	} else {
		out = fmt.Sprintf("%d failed attempts (%s), %d requests failed after retries", e.Total(), strings.Join(parts, ", "), s.Remote.Failures)
	}
	var cache []string
	if n := s.Cache.CorruptEntries; n > 0 {
		cache = append(cache, fmt.Sprintf("%d corrupt cache entries refetched", n))
	}
	if n := s.Cache.WriteErrors; n > 0 {
		cache = append(cache, fmt.Sprintf("%d cache writes failed (disk full?)", n))
	}
	if len(cache) > 0 {
		out += "; " + strings.Join(cache, ", ")
	}
	return out
}

func ibytes(n int64) string {
	if n < 0 {
		n = 0
	}
	return humanize.IBytes(uint64(n))
}

func rate(bps float64) string {
	if bps < 1 {
		return "0 B/s"
	}
	return humanize.IBytes(uint64(bps)) + "/s"
}

// roundDuration keeps two significant units: 3h12m, 4m05s, 12.3s, 250ms.
func roundDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	}
}

// fitWidth cuts lines to the terminal's width, so that redrawing in place
// (which counts lines) is not thrown off by wrapped lines.
func fitWidth(s string, width int) string {
	if width <= 0 {
		return s
	}
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		body := strings.TrimSuffix(l, "\n")
		if r := []rune(body); len(r) > width-1 {
			lines[i] = string(r[:width-2]) + "…" + strings.TrimPrefix(l, body)
		}
	}
	return strings.Join(lines, "")
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func terminalWidth(f *os.File) int {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
}
