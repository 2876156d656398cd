package main

// zarrfs prefetch: warm part of a mounted store through its daemon, and the
// daemon's side of it (the /v1/prefetch control endpoints).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/zarrfs/zarrfs/fusefs"
	"github.com/zarrfs/zarrfs/vfs"
)

// prefetchRequest is the body of POST /v1/prefetch.
type prefetchRequest struct {
	Targets []vfs.PrefetchTarget `json:"targets"`
}

// orderRequest is the body of POST /v1/order.
type orderRequest struct {
	Targets []vfs.OrderTarget `json:"targets"`
}

// maxOrderBody bounds an order's JSON: millions of lines of a long epoch.
const maxOrderBody = 256 << 20

// registerPrefetch adds the prefetch endpoints to the control API:
//
//	POST   /v1/prefetch       {"targets":[{"path":"t2m","ranges":[[0,10]]}]} -> progress of the new job
//	GET    /v1/prefetch/{id}  -> progress
//	DELETE /v1/prefetch/{id}  -> cancel it
//	POST   /v1/order          {"targets":[{"path":"t2m","rows":[480,504]}]} -> the new order's progress
func registerPrefetch(mux *http.ServeMux, sess *session) {
	mux.HandleFunc("POST /v1/order", targetsHandler(maxOrderBody, func(req orderRequest) (vfs.OrderProgress, error) {
		return sess.SetOrder(req.Targets)
	}))
	mux.HandleFunc("POST /v1/prefetch", targetsHandler(1<<20, func(req prefetchRequest) (vfs.PrefetchProgress, error) {
		return sess.Prefetch(req.Targets)
	}))
	job := func(w http.ResponseWriter, r *http.Request) (int, bool) {
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil {
			http.Error(w, "bad job id", http.StatusBadRequest)
			return 0, false
		}
		return id, true
	}
	mux.HandleFunc("GET /v1/prefetch/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, ok := job(w, r)
		if !ok {
			return
		}
		p, ok := sess.PrefetchStatus(id)
		if !ok {
			http.Error(w, "no such prefetch job", http.StatusNotFound)
			return
		}
		writeJSON(w, p)
	})
	mux.HandleFunc("DELETE /v1/prefetch/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, ok := job(w, r)
		if !ok {
			return
		}
		if !sess.CancelPrefetch(id) {
			http.Error(w, "no such prefetch job", http.StatusNotFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// targetsHandler decodes a JSON request of at most limit bytes, runs do on
// it and answers its result; targets that name nothing in the store, or do
// not fit it, are a 404 whose text the CLI shows as it is.
func targetsHandler[Req, Resp any](limit int64, do func(Req) (Resp, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req Req
		if err := json.NewDecoder(io.LimitReader(r.Body, limit)).Decode(&req); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := do(req)
		switch {
		case errors.Is(err, vfs.ErrNoSuchPath), errors.Is(err, vfs.ErrBadRange), errors.Is(err, vfs.ErrOrderTooLong):
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, resp)
	}
}

// sendJSON makes a request with an optional JSON body and decodes the
// answer into out (when not nil).
func (c *controlClient) sendJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://zarrfs"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("ask the daemon of %s: %w", c.mnt, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound && method == http.MethodPost {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return errors.New(strings.TrimSpace(string(msg)))
	}
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode == http.StatusNotFound && strings.Contains(string(msg), "404 page not found") {
			return fmt.Errorf("the daemon of %s does not know prefetch (it is older than this command): remount with this version", c.mnt)
		}
		return fmt.Errorf("daemon of %s: %s: %s", c.mnt, resp.Status, strings.TrimSpace(string(msg)))
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func runPrefetch(args []string) error {
	var wait, quiet bool
	var orderFile string
	fl := pflag.NewFlagSet("prefetch", pflag.ContinueOnError)
	fl.Usage = func() {
		fmt.Fprint(os.Stderr, `Usage: zarrfs prefetch [--wait] PATH...

Fetch part of a mounted store into the mount's cache now, so that later
reads cost no network round trip. PATH is a path inside a zarrfs mount: the
mount itself (the whole store), a group, an array, or a chunk file. An array
path may end with chunk index ranges along its leading dimensions, in
brackets: t2m[0:100] is chunks 0 to 99 along the first dimension, t2m[5]
only chunk 5, x[:10,2:4] a block; an open end means to the end.

Without --wait the daemon fetches in the background and the command returns
at once. With --wait it shows progress (a bar on a terminal, lines
otherwise) and returns when everything is cached; Ctrl-C cancels the
prefetch. Chunks missing on the origin (fill_value chunks) count as done.

With --order FILE (- for stdin) the daemon is told the order of the coming
reads instead: one target a line, in read order, a path inside the mount with
an optional [start:stop] of indices along the array's first dimension (sample
indices, as a sampler yields them; not chunk indices). The daemon fetches the
chunks in exactly that order, as far ahead as the cache allows, and the
command returns as soon as it has the order. A new order replaces the last
one: send one per epoch. zarrfs stats shows how far it got.

Examples:
  zarrfs prefetch --wait /content/era5
  zarrfs prefetch /content/era5/t2m[0:365] /content/era5/u10[0:365]
  zarrfs prefetch --order epoch3.txt   # lines like /content/era5/t2m[480:504]

Flags:
`)
		fl.PrintDefaults()
	}
	fl.BoolVarP(&wait, "wait", "w", false, "wait until everything is cached, showing progress")
	fl.BoolVarP(&quiet, "quiet", "q", false, "with --wait, print nothing but errors")
	fl.StringVar(&orderFile, "order", "", "announce the read order: targets one a line from `FILE` (- for stdin)")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: prefetch: %v", errUsage, err)
	}
	if orderFile != "" {
		if fl.NArg() > 0 || wait {
			return fmt.Errorf("%w: prefetch --order reads its targets from FILE and takes no PATH or --wait", errUsage)
		}
		return sendOrder(orderFile, quiet)
	}
	if fl.NArg() == 0 {
		return fmt.Errorf("%w: prefetch takes at least one PATH inside a zarrfs mount", errUsage)
	}
	// One job per mount, with every target of that mount.
	var mounts []string
	targets := map[string][]vfs.PrefetchTarget{}
	for _, arg := range fl.Args() {
		mnt, t, err := prefetchTarget(arg)
		if err != nil {
			return err
		}
		if _, ok := targets[mnt]; !ok {
			mounts = append(mounts, mnt)
		}
		targets[mnt] = append(targets[mnt], t)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, mnt := range mounts {
		c, err := dialControl(mnt)
		if err != nil {
			return err
		}
		var p vfs.PrefetchProgress
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = c.sendJSON(rctx, http.MethodPost, "/v1/prefetch", prefetchRequest{Targets: targets[mnt]}, &p)
		cancel()
		if err != nil {
			return err
		}
		if !wait {
			if !quiet {
				fmt.Printf("zarrfs: prefetching %d chunks (%s%s) of %s in the background (job %d)\n",
					p.Keys, approx(p), humanize.Bytes(uint64(p.Bytes)), mnt, p.ID)
			}
			continue
		}
		if err := waitPrefetch(ctx, c, mnt, p, quiet); err != nil {
			return err
		}
	}
	return nil
}

func approx(p vfs.PrefetchProgress) string {
	if p.BytesExact {
		return ""
	}
	return "~"
}

// prefetchTarget splits a PATH argument into its mount and the target
// inside it.
func prefetchTarget(arg string) (mnt string, t vfs.PrefetchTarget, err error) {
	p := arg
	if strings.HasSuffix(p, "]") {
		i := strings.LastIndexByte(p, '[')
		if i < 0 {
			return "", t, fmt.Errorf("%w: %s: a ']' without '['", errUsage, arg)
		}
		t.Ranges, err = parseRanges(p[i+1 : len(p)-1])
		if err != nil {
			return "", t, fmt.Errorf("%w: %s: %v", errUsage, arg, err)
		}
		p = p[:i]
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", t, err
	}
	mnt, err = mountRootOf(abs)
	if err != nil {
		return "", t, fmt.Errorf("%s: %w", arg, err)
	}
	rel, err := filepath.Rel(mnt, abs)
	if err != nil {
		return "", t, err
	}
	if rel != "." {
		t.Path = filepath.ToSlash(rel)
	}
	return mnt, t, nil
}

// mountRootOf finds the zarrfs mount holding path: the nearest directory at
// or above it whose control attribute is set.
func mountRootOf(path string) (string, error) {
	buf := make([]byte, 4096)
	for dir := path; ; dir = filepath.Dir(dir) {
		if _, err := unix.Getxattr(dir, fusefs.ControlXattr, buf); err == nil {
			return dir, nil
		} else if errors.Is(err, unix.ENOTCONN) {
			return "", fmt.Errorf("%s is a dead mount (its daemon exited): clean it with zarrfs unmount --lazy %s", dir, dir)
		}
		if dir == filepath.Dir(dir) {
			return "", errors.New("not inside a zarrfs mount (or its daemon is older than this command)")
		}
	}
}

// parseRanges parses "0:10,2:4", "5", ":10" or "3:" into [lo, hi) pairs.
func parseRanges(s string) ([][2]int64, error) {
	var out [][2]int64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, ":")
		var r [2]int64
		var err error
		if lo != "" {
			if r[0], err = strconv.ParseInt(lo, 10, 64); err != nil || r[0] < 0 {
				return nil, fmt.Errorf("chunk index %q is not a number >= 0", lo)
			}
		}
		switch {
		case !isRange:
			if lo == "" {
				return nil, errors.New("empty chunk index range")
			}
			r[1] = r[0] + 1
		case hi == "":
			r[1] = math.MaxInt64
		default:
			if r[1], err = strconv.ParseInt(hi, 10, 64); err != nil || r[1] <= r[0] {
				return nil, fmt.Errorf("chunk index range %q: the end must be a number above the start", part)
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// waitPrefetch follows job p until it ends, with a progress bar on a
// terminal and plain lines otherwise. An interrupt cancels the job.
func waitPrefetch(ctx context.Context, c *controlClient, mnt string, p vfs.PrefetchProgress, quiet bool) error {
	tty := !quiet && term.IsTerminal(int(os.Stdout.Fd()))
	var bar *progressbar.ProgressBar
	if tty {
		bar = progressbar.NewOptions64(max(p.Bytes, 1),
			progressbar.OptionSetDescription("prefetch "+filepath.Base(mnt)),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionFullWidth(),
			progressbar.OptionSetWriter(os.Stdout),
			progressbar.OptionOnCompletion(func() { fmt.Println() }),
		)
	} else if !quiet {
		fmt.Printf("prefetch %s: %d chunks, %s%s\n", mnt, p.Keys, approx(p), humanize.Bytes(uint64(p.Bytes)))
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastLine := time.Now()
	for {
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = c.sendJSON(cctx, http.MethodDelete, fmt.Sprintf("/v1/prefetch/%d", p.ID), nil, nil)
			cancel()
			if bar != nil {
				fmt.Println()
			}
			return errors.New("interrupted: prefetch cancelled (what was fetched stays cached)")
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := c.sendJSON(rctx, http.MethodGet, fmt.Sprintf("/v1/prefetch/%d", p.ID), nil, &p)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				continue // the interrupt is handled above
			}
			return err
		}
		done := p.Finished || p.Cancelled
		switch {
		case bar != nil:
			if p.DoneBytes > bar.GetMax64() {
				bar.ChangeMax64(p.DoneBytes) // the estimate was low
			}
			_ = bar.Set64(p.DoneBytes)
			if done {
				_ = bar.Finish()
			}
		case !quiet && (done || time.Since(lastLine) >= 2*time.Second):
			lastLine = time.Now()
			fmt.Println(progressLine(p))
		}
		if !done {
			continue
		}
		if p.FailedKeys > 0 {
			return fmt.Errorf("prefetch of %s: %d chunks could not be fetched (first error: %s); see the daemon's log", mnt, p.FailedKeys, p.Error)
		}
		if p.Cancelled {
			return fmt.Errorf("prefetch of %s was cancelled (the mount was unmounted, or another command cancelled it)", mnt)
		}
		if !quiet && bar != nil {
			fmt.Printf("prefetch %s: %d chunks cached (%d missing on the origin), %s fetched in %s\n", mnt,
				p.DoneKeys, p.MissingKeys, humanize.Bytes(uint64(p.FetchedBytes)), time.Duration(p.Elapsed*float64(time.Second)).Round(100*time.Millisecond))
		}
		return nil
	}
}

// progressLine is one line of progress for logs and pipes.
func progressLine(p vfs.PrefetchProgress) string {
	rate := 0.0
	if p.Elapsed > 0 {
		rate = float64(p.FetchedBytes) / p.Elapsed
	}
	eta := "-"
	if left := p.Bytes - p.DoneBytes; left > 0 && rate > 0 && !p.Finished {
		eta = time.Duration(float64(left) / rate * float64(time.Second)).Round(time.Second).String()
	}
	state := "running"
	switch {
	case p.Finished:
		state = "done"
	case p.Cancelled:
		state = "cancelled"
	}
	return fmt.Sprintf("prefetch: %s: %d/%d chunks, %s of %s%s, %s/s, ETA %s, %d missing, %d failed",
		state, p.DoneKeys, p.Keys, humanize.Bytes(uint64(p.DoneBytes)), approx(p), humanize.Bytes(uint64(p.Bytes)),
		humanize.Bytes(uint64(rate)), eta, p.MissingKeys, p.FailedKeys)
}
