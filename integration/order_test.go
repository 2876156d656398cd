package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// sendOrder runs `zarrfs prefetch --order -` with lines on stdin.
func sendOrder(t testing.TB, lines []string) (string, error) {
	t.Helper()
	cmd := exec.Command(zarrfsBin, "prefetch", "--order", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	cmd.WaitDelay = 5 * time.Second
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("zarrfs prefetch --order did not return in 60 s")
	}
	return string(out), err
}

// orderStats is the "order" object of the daemon's stats.
func orderStats(t testing.TB, mnt string) map[string]any {
	t.Helper()
	o, _ := mountStats(t, mnt)["order"].(map[string]any)
	return o
}

// TestOrderHint announces a shuffled epoch with `zarrfs prefetch --order -`: the daemon fetches
// exactly the announced chunks, in the announced order, before the reader asks, the reader then
// reads only from the cache, the planner stays out of the way, and a reader that leaves the
// order is noticed.
func TestOrderHint(t *testing.T) {
	dir := t.TempDir()
	const slabs, rows = 40, 256
	files := writeLockstepStore(t, filepath.Join(dir, "train.zarr"), slabs, rows, 11)
	var opts []originOption
	for i := range slabs {
		opts = append(opts, withDelay(fmt.Sprintf("/train.zarr/x/%d.0", i), 10*time.Millisecond),
			withDelay(fmt.Sprintf("/train.zarr/y/%d", i), 10*time.Millisecond))
	}
	o := newOrigin(t, dir, opts...)
	// A cache under 256 MiB starts no burst of requests before it has
	// measured the link (cache.startRoom), so arrivals at the origin can
	// swap only within the few requests in flight: the order shows.
	m := mount(t, o.URL("train.zarr"), "--cache-size", "128MiB")
	before := len(o.requests())

	order := rand.New(rand.NewPCG(5, 5)).Perm(slabs)
	var lines, keys []string
	for _, i := range order {
		for _, v := range []string{"x", "y"} {
			lines = append(lines, fmt.Sprintf("%s/%s[%d:%d]", m.Dir, v, i*rows, (i+1)*rows))
		}
		keys = append(keys, fmt.Sprintf("x/%d.0", i), fmt.Sprintf("y/%d", i))
	}
	if out, err := sendOrder(t, lines); err != nil {
		t.Fatalf("zarrfs prefetch --order -: %v\n%s", err, out)
	}

	// The order is fetched with nobody reading.
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := orderStats(t, m.Dir)
		if done, _ := st["done_keys"].(float64); int(done) == len(keys) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the order was not fetched in 60 s: %v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var got []string
	for _, r := range chunkRequests(o, "train.zarr", before) {
		got = append(got, strings.TrimPrefix(r, "GET "))
	}
	if len(got) != len(keys) {
		t.Fatalf("%d chunk requests, want exactly the %d announced: %v", len(got), len(keys), got)
	}
	// Requests run a few at a time, so arrivals may swap within the
	// requests in flight, but no further.
	for j, k := range got {
		p := slices.Index(keys, k)
		if p < 0 {
			t.Fatalf("requested %s, which is not in the order", k)
		}
		if d := p - j; d > 16 || d < -16 {
			t.Fatalf("request %d is %s, at place %d of the order: not fetched in order\ngot  %v\nwant %v", j, k, p, got, keys)
		}
	}

	// The reader follows the order: every read is local and right.
	for _, k := range keys {
		b, err := readKey(m, k)
		if err != nil || !bytes.Equal(b, files[k]) {
			t.Fatalf("read %s: %v (equal %v)", k, err, bytes.Equal(b, files[k]))
		}
	}
	if n := len(chunkRequests(o, "train.zarr", before)); n != len(keys) {
		t.Fatalf("%d chunk requests after the read, want %d: reads missed the cache", n, len(keys))
	}
	st := mountStats(t, m.Dir)
	ord, _ := st["order"].(map[string]any)
	pf, _ := st["prefetch"].(map[string]any)
	planner, _ := pf["planner"].(map[string]any)
	if ord["state"] != "finished" || ord["targets_read"] != float64(2*slabs) || ord["targets_fetched"] != float64(2*slabs) {
		t.Fatalf("order after the epoch: %v, want finished with every target read and fetched", ord)
	}
	if fills, _ := planner["fills_started"].(float64); fills != 0 {
		t.Fatalf("the planner started %v background fills while the reader followed the order", fills)
	}

	// A second epoch announces a new order but reads in another one: the
	// daemon notices and hands the reader back to the planner.
	var lines2 []string
	for _, i := range rand.New(rand.NewPCG(6, 6)).Perm(slabs) {
		lines2 = append(lines2, fmt.Sprintf("%s/x[%d:%d]", m.Dir, i*rows, (i+1)*rows))
	}
	if out, err := sendOrder(t, lines2); err != nil {
		t.Fatalf("second order: %v\n%s", err, out)
	}
	if ord := orderStats(t, m.Dir); ord["id"] != float64(2) || ord["state"] != "following" {
		t.Fatalf("second order: %v, want order 2 being followed", ord)
	}
	for _, i := range rand.New(rand.NewPCG(7, 7)).Perm(slabs) {
		k := fmt.Sprintf("y/%d", i) // y is not in the second order
		if b, err := readKey(m, k); err != nil || !bytes.Equal(b, files[k]) {
			t.Fatalf("read %s: %v", k, err)
		}
	}
	if ord := orderStats(t, m.Dir); ord["state"] != "left" || ord["targets_read"] != float64(0) {
		t.Fatalf("a reader off the order: %v, want the order left with nothing of it read", ord)
	}

	// Bad orders are refused with the line that is wrong.
	for _, tc := range []struct{ line, want string }{
		{m.Dir + "/x[5000000:5000010]", "order line 1"},
		{m.Dir + "/nope[0:1]", "no such group, array or chunk"},
		{m.Dir + "/x[3:1]", "must be a number above the start"},
		{t.TempDir() + "/x[0:1]", "not inside a zarrfs mount"},
	} {
		out, err := sendOrder(t, []string{tc.line})
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("order %q: err %v, output %q; want a failure saying %q", tc.line, err, out, tc.want)
		}
	}
}

// TestMountPrefetch: `zarrfs mount --prefetch` fills the cache with the whole store while
// nobody reads, when it fits the cache budget, and leaves it alone, saying why, when not.
func TestMountPrefetch(t *testing.T) {
	dir := t.TempDir()
	files := writeLockstepStore(t, filepath.Join(dir, "train.zarr"), 30, 256, 12)
	o := newOrigin(t, dir)
	var chunks []string
	for k := range files {
		if !strings.HasPrefix(filepath.Base(k), ".") {
			chunks = append(chunks, k)
		}
	}

	m := mount(t, o.URL("train.zarr"), "--prefetch")
	deadline := time.Now().Add(60 * time.Second)
	for len(chunkRequests(o, "train.zarr", 0)) < len(chunks) {
		if time.Now().After(deadline) {
			t.Fatalf("--prefetch fetched %d of %d chunks in 60 s with nobody reading", len(chunkRequests(o, "train.zarr", 0)), len(chunks))
		}
		time.Sleep(50 * time.Millisecond)
	}
	o.settle(5 * time.Second)
	before := len(chunkRequests(o, "train.zarr", 0))
	for _, k := range chunks {
		if b, err := readKey(m, k); err != nil || !bytes.Equal(b, files[k]) {
			t.Fatalf("read %s: %v", k, err)
		}
	}
	if n := len(chunkRequests(o, "train.zarr", 0)); n != before || n != len(chunks) {
		t.Fatalf("%d chunk requests after reading everything (%d before), want exactly the %d chunks, once, before the reads", n, before, len(chunks))
	}

	// A budget too small for the store: no fill, and the log says why.
	o2 := newOrigin(t, dir)
	small := mount(t, o2.URL("train.zarr"), "--prefetch", "--cache-size", "64KiB", "--log-level", "info")
	time.Sleep(time.Second)
	if n := len(chunkRequests(o2, "train.zarr", 0)); n > 2 {
		t.Fatalf("--prefetch with a budget smaller than the store fetched %d chunks with nobody reading", n)
	}
	if !strings.Contains(small.output(), "does not fit the cache budget") {
		t.Fatalf("no word in the log of why --prefetch did nothing:\n%s", small.output())
	}
}
