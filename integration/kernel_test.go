package integration

// What the kernel asks the daemon per file: the synchronous requests are
// round trips a reader waits for, and for many small files they are most of
// the cost of reading through the mount (docs/benchmarks.md, climate_tiles).

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// kernelStats is the part of `zarrfs stats --json` about kernel requests.
type kernelStats struct {
	Kernel struct {
		Requests int64            `json:"requests"`
		ByOp     map[string]int64 `json:"by_op"`
	} `json:"kernel"`
}

func kernelStatsJSON(t testing.TB, mnt string) kernelStats {
	t.Helper()
	var s kernelStats
	statsJSON(t, mnt, &s)
	return s
}

// TestKernelRequestsPerFile: opening, reading and closing a cached chunk again
// and again costs one request per open (plus an isatty a reader may do):
// the kernel keeps the pages across opens, and stops sending FLUSH (at
// close) and POLL (when a Go program's os.Open adds the file to its epoll
// set) once the first of each is answered ENOSYS. `zarrfs stats` counts the
// requests by operation.
func TestKernelRequestsPerFile(t *testing.T) {
	fixturesReady.require(t)
	serve := filepath.Join(fixturesDir, "zarrita", "v2")
	o := newOrigin(t, serve)
	m := mount(t, o.URL("data.zarr"))
	const key = "2d.chunked.i2/0.1"
	want, err := os.ReadFile(filepath.Join(serve, "data.zarr", key))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(m.Dir, key)
	readOnce := func() {
		t.Helper()
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// What Python's open() does to pick its buffering: a FUSE_IOCTL.
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			t.Errorf("%s is a terminal?", p)
		}
		buf := make([]byte, len(want)+1)
		n, _ := f.ReadAt(buf, 0)
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("read %d bytes of %s, not the origin's %d", n, key, len(want))
		}
	}
	readOnce() // fetched, cached, first FLUSH answered
	before := kernelStatsJSON(t, m.Dir).Kernel.ByOp

	const rounds = 50
	for range rounds {
		readOnce()
	}
	after := kernelStatsJSON(t, m.Dir).Kernel.ByOp
	t.Logf("requests by operation before the %d rounds: %v; after: %v", rounds, before, after)
	delta := func(op string) int64 { return after[op] - before[op] }
	if got := delta("open"); got != rounds {
		t.Errorf("%d opens sent for %d opens of the file, want one each", got, rounds)
	}
	if got := delta("ioctl"); got != rounds {
		t.Errorf("%d ioctls reached the daemon for %d isatty calls (the counter misses them?)", got, rounds)
	}
	if got := delta("flush"); got != 0 {
		t.Errorf("%d FLUSH requests for %d closes after the first: the kernel should have stopped sending them", got, rounds)
	}
	if got := delta("poll"); got != 0 {
		t.Errorf("%d POLL requests for %d opens by a Go program after the first: the kernel should have stopped sending them", got, rounds)
	}
	if got := delta("read"); got != 0 {
		t.Errorf("%d READ requests for %d reads of an unchanged file: the page cache should serve them", got, rounds)
	}

	out, code := runCmd(t, time.Minute, nil, zarrfsBin, "stats", m.Dir)
	if code != 0 || !strings.Contains(out, "kernel ") || !strings.Contains(out, " open") {
		t.Errorf("zarrfs stats (exit %d) lacks the kernel requests line:\n%s", code, out)
	}
}
