package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The load test (issue #12, item 5): 64 concurrent readers — goroutines of this test and
// child python3 processes, with pread and mmap — read random chunks of a store of 100,000
// chunks through a real mount for a while (10 minutes with ZARRFS_LONG_TESTS=1, loadCIDuration
// otherwise). Every read is compared with the origin's bytes; the daemon's resident set is
// sampled (and must stay under loadMaxRSS), its open files must come back to where they were
// before the load, and after the unmount it must exit with status 0.
const (
	loadGridRows    = 400
	loadGridCols    = 250
	loadChunks      = loadGridRows * loadGridCols // 100,000
	loadGoReaders   = 56
	loadProcReaders = 8 // python3 processes, one reader each: 56 + 8 = 64 readers
	loadCIDuration  = 30 * time.Second
	loadLongDur     = 10 * time.Minute
	// loadCacheSize is far below the store (about 250 MB), so the disk cache evicts and
	// refetches all through the run.
	loadCacheSize = "64MiB"
	// loadMaxRSS bounds the daemon's peak resident set. The binary under test is built with
	// -race under `go test -race`, which multiplies a Go program's memory several times; the
	// bound is generous for that, and far below what a leak of per-chunk state for 100,000
	// chunks read over and over would reach over 10 minutes.
	loadMaxRSS = 1536 << 20
	// loadFDSlack is how many more open files (not sockets) the daemon may hold after the
	// load than before it.
	loadFDSlack = 8
	// loadMaxConns is the HTTP client's cap on connections to one origin (remote.Options
	// MaxConnsPerHost's default): idle ones may stay open after the load.
	loadMaxConns = 64
)

// loadChunkKey is the store key of chunk n of array "a" (grid loadGridRows x loadGridCols).
func loadChunkKey(n int) string {
	return fmt.Sprintf("a/%d.%d", n/loadGridCols, n%loadGridCols)
}

// loadChunk is the content of chunk n: 1-4 KiB of ChaCha8 bytes, both decided by n and seed.
func loadChunk(seed uint64, n int) []byte {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
		key[8+i] = byte(uint64(n) >> (8 * i))
	}
	r := rand.NewChaCha8(key)
	size := 1024 + int(r.Uint64()%3073)
	b := make([]byte, size)
	_, _ = r.Read(b)
	return b
}

// loadOrigin serves a synthetic consolidated v2 store of loadChunks chunks without writing
// them to disk: each chunk is made from its key when asked. http.ServeContent with a strong
// ETag answers ranges and conditional requests as a static server does.
type loadOrigin struct {
	seed     uint64
	meta     map[string][]byte
	srv      *httptest.Server
	requests atomic.Int64
	inFlight atomic.Int64
	bytes    atomic.Int64
}

func newLoadOrigin(t testing.TB, seed uint64) *loadOrigin {
	t.Helper()
	zarray := fmt.Sprintf(`{"zarr_format": 2, "shape": [%d, %d], "chunks": [32, 32], "dtype": "<f8", "compressor": {"id": "zlib", "level": 1}, "fill_value": 0.0, "order": "C", "filters": null, "dimension_separator": "."}`,
		loadGridRows*32, loadGridCols*32)
	o := &loadOrigin{seed: seed, meta: map[string][]byte{
		".zgroup":   []byte(`{"zarr_format": 2}`),
		"a/.zarray": []byte(zarray),
		".zmetadata": fmt.Appendf(nil, `{"zarr_consolidated_format": 1, "metadata": {".zgroup": {"zarr_format": 2}, "a/.zarray": %s}}`,
			zarray),
	}}
	o.srv = httptest.NewServer(o)
	t.Cleanup(func() {
		o.srv.CloseClientConnections()
		o.srv.Close()
	})
	return o
}

func (o *loadOrigin) URL() string { return o.srv.URL + "/load.zarr" }

func (o *loadOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.requests.Add(1)
	o.inFlight.Add(1)
	defer o.inFlight.Add(-1)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "read-only", http.StatusMethodNotAllowed)
		return
	}
	key, ok := strings.CutPrefix(r.URL.Path, "/load.zarr/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	body, ok := o.meta[key]
	etag := fmt.Sprintf(`"m-%s"`, key)
	if !ok {
		n, err := loadParseKey(key)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		body = loadChunk(o.seed, n)
		etag = fmt.Sprintf(`"c-%d-%d"`, n, len(body))
	}
	w.Header().Set("ETag", etag)
	cw := &countingBytes{ResponseWriter: w}
	http.ServeContent(cw, r, "", time.Unix(1_700_000_000, 0), bytes.NewReader(body))
	o.bytes.Add(cw.n)
}

// settle waits (at most max) until no request has been under way or begun for quiet: the
// daemon's prefetches of the last reads are done.
func (o *loadOrigin) settle(quiet, max time.Duration) bool {
	deadline := time.Now().Add(max)
	last, since := o.requests.Load(), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if n := o.requests.Load(); n != last || o.inFlight.Load() != 0 {
			last, since = n, time.Now()
			continue
		}
		if time.Since(since) >= quiet {
			return true
		}
	}
	return false
}

// loadParseKey is the chunk number of "a/i.j", or an error outside the grid.
func loadParseKey(key string) (int, error) {
	rest, ok := strings.CutPrefix(key, "a/")
	if !ok {
		return 0, fmt.Errorf("not in array a: %q", key)
	}
	is, js, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, fmt.Errorf("not a chunk key: %q", key)
	}
	i, err1 := strconv.Atoi(is)
	j, err2 := strconv.Atoi(js)
	if err1 != nil || err2 != nil || i < 0 || j < 0 || i >= loadGridRows || j >= loadGridCols {
		return 0, fmt.Errorf("not a chunk of the grid: %q", key)
	}
	return i*loadGridCols + j, nil
}

// countingBytes counts the body bytes written through it.
type countingBytes struct {
	http.ResponseWriter
	n int64
}

func (c *countingBytes) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// loadReaderScript is one child reader: it opens random chunks of the mount until the
// duration is up, reads each whole with pread (even reads) or through mmap (odd ones), and
// compares its CRC-32 with the origin's; it prints a JSON summary.
const loadReaderScript = `
import json, mmap, os, random, sys, time, zlib
mnt, sums, dur, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
keys, want = [], {}
with open(sums) as f:
    for line in f:
        k, c, s = line.split()
        keys.append(k)
        want[k] = (int(c, 16), int(s))
rnd = random.Random(seed)
end = time.monotonic() + dur
reads = nbytes = 0
errors = []
while time.monotonic() < end and len(errors) < 20:
    k = rnd.choice(keys)
    crc, size = want[k]
    try:
        fd = os.open(os.path.join(mnt, k), os.O_RDONLY)
        try:
            st = os.fstat(fd)
            if st.st_size != size:
                errors.append("%s: size %d, origin's %d" % (k, st.st_size, size))
                continue
            if reads % 2 == 0:
                parts, off = [], 0
                while off < size:
                    b = os.pread(fd, size - off, off)
                    if not b:
                        break
                    parts.append(b)
                    off += len(b)
                data = b"".join(parts)
            else:
                m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
                try:
                    data = bytes(m)
                finally:
                    m.close()
        finally:
            os.close(fd)
    except OSError as e:
        errors.append("%s: %s" % (k, e))
        continue
    if len(data) != size or zlib.crc32(data) != crc:
        errors.append("%s: %d bytes with crc %08x, origin's %d bytes crc %08x" % (k, len(data), zlib.crc32(data), size, crc))
        continue
    reads += 1
    nbytes += size
print(json.dumps({"reads": reads, "bytes": nbytes, "errors": errors}))
`

// loadStats is what the readers did, added up.
type loadStats struct {
	mu       sync.Mutex
	reads    int64
	bytes    int64
	mmaps    int64
	problems []string
}

func (s *loadStats) add(reads, bytes, mmaps int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads += reads
	s.bytes += bytes
	s.mmaps += mmaps
}

// problem records a problem and reports whether enough have been seen to stop.
func (s *loadStats) problem(format string, args ...any) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.problems) < maxProblems {
		s.problems = append(s.problems, fmt.Sprintf(format, args...))
	}
	return len(s.problems) >= maxProblems
}

// loadGoReader reads random chunks until deadline, alternating a whole-file pread, a pread
// of a random range and an mmap of the whole file, comparing with the origin's bytes.
func loadGoReader(mnt string, seed uint64, id int, deadline time.Time, st *loadStats) {
	rng := rand.New(rand.NewPCG(seed, uint64(id)))
	var reads, nbytes, mmaps int64
	defer func() { st.add(reads, nbytes, mmaps) }()
	for i := 0; time.Now().Before(deadline); i++ {
		n := rng.IntN(loadChunks)
		key := loadChunkKey(n)
		want := loadChunk(seed, n)
		got, err := loadReadOne(filepath.Join(mnt, filepath.FromSlash(key)), len(want), i%3, rng)
		if err != nil {
			if st.problem("reader %d: %s: %v", id, key, err) {
				return
			}
			continue
		}
		if !bytes.Equal(got.data, want[got.off:got.off+len(got.data)]) {
			st.problem("reader %d: %s: bytes %d..%d differ from the origin's (first difference at %d)",
				id, key, got.off, got.off+len(got.data), got.off+firstDiff(got.data, want[got.off:got.off+len(got.data)]))
			continue
		}
		reads++
		nbytes += int64(len(got.data))
		if i%3 == 2 {
			mmaps++
		}
	}
}

type loadRead struct {
	off  int
	data []byte
}

// loadReadOne reads path, whose origin size is size: mode 0 whole with pread, 1 a random
// range with pread, 2 whole through mmap.
func loadReadOne(path string, size, mode int, rng *rand.Rand) (loadRead, error) {
	fd, err := openRetryingEINTR(path)
	if err != nil {
		return loadRead{}, fmt.Errorf("open: %w", err)
	}
	defer unix.Close(fd)
	var stat unix.Stat_t
	if err := unix.Fstat(fd, &stat); err != nil {
		return loadRead{}, fmt.Errorf("fstat: %w", err)
	}
	if int(stat.Size) != size {
		return loadRead{}, fmt.Errorf("size %d, origin's %d", stat.Size, size)
	}
	switch mode {
	case 2:
		m, err := unix.Mmap(fd, 0, size, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return loadRead{}, fmt.Errorf("mmap: %w", err)
		}
		data := bytes.Clone(m)
		if err := unix.Munmap(m); err != nil {
			return loadRead{}, fmt.Errorf("munmap: %w", err)
		}
		return loadRead{data: data}, nil
	default:
		off, n := 0, size
		if mode == 1 {
			off = rng.IntN(size)
			n = 1 + rng.IntN(size-off)
		}
		data, err := preadFull(fd, off, n)
		if err != nil {
			return loadRead{}, err
		}
		return loadRead{off: off, data: data}, nil
	}
}

// openRetryingEINTR opens path read-only, again when a signal interrupted the open, as
// os.Open does: the Go runtime signals its threads (preemption), and an open that waits for
// the daemon's fetch is then interrupted (FUSE_INTERRUPT) and fails with EINTR, which the
// kernel does not restart.
func openRetryingEINTR(path string) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// preadFull reads n bytes at off, failing on a short read (EOF before n bytes).
func preadFull(fd, off, n int) ([]byte, error) {
	buf := make([]byte, n)
	for got := 0; got < n; {
		k, err := unix.Pread(fd, buf[got:], int64(off+got))
		if err == unix.EINTR {
			continue // as os.File.ReadAt does
		}
		if err != nil {
			return nil, fmt.Errorf("pread %d bytes at %d: %w", n-got, off+got, err)
		}
		if k == 0 {
			return nil, fmt.Errorf("short read: %d of %d bytes at %d", got, n, off)
		}
		got += k
	}
	return buf, nil
}

// procStatus is one field of /proc/PID/status in bytes ("VmRSS", "VmHWM"), or -1.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return kb << 10
				}
			}
		}
	}
	return -1
}

// fdCounts is what a process holds open, from /proc/PID/fd: sockets (connections to the
// origin, the FUSE device is not one) and everything else (files, pipes, the FUSE device).
type fdCounts struct {
	sockets, files int
	other          []string // the non-socket targets, for a failure message
}

func openFDs(pid int) (fdCounts, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fdCounts{}, err
	}
	var c fdCounts
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed since the listing
		}
		if strings.HasPrefix(target, "socket:") {
			c.sockets++
			continue
		}
		c.files++
		c.other = append(c.other, target)
	}
	return c, nil
}

// rssSampler records the largest VmRSS of a process, sampled until stopped.
type rssSampler struct {
	stop    chan struct{}
	done    chan struct{}
	maxRSS  int64
	samples int
}

func startRSSSampler(pid int, every time.Duration) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			if rss := procStatus(pid, "VmRSS"); rss > 0 {
				s.maxRSS = max(s.maxRSS, rss)
				s.samples++
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// finish stops the sampler and waits for it (it never blocks for long: one file read).
func (s *rssSampler) finish() {
	close(s.stop)
	<-s.done
}

// longTests reports whether the full-length versions of the long tests were asked for.
func longTests() bool { return os.Getenv("ZARRFS_LONG_TESTS") == "1" }

func TestLoad100kChunks(t *testing.T) {
	t.Parallel() // see parallelTests in main_test.go
	fuseReady.require(t)
	if _, err := os.Stat(pythonBin); err != nil {
		missing(t, "%s: %v", pythonBin, err)
	}
	dur := loadCIDuration
	if longTests() {
		dur = loadLongDur
	}
	const seed = 0x10ad
	o := newLoadOrigin(t, seed)

	// The checksums the child readers compare with, from the same generator as the origin.
	sums := filepath.Join(t.TempDir(), "sums")
	f, err := os.Create(sums)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	var storeBytes int64
	for n := range loadChunks {
		b := loadChunk(seed, n)
		storeBytes += int64(len(b))
		fmt.Fprintf(w, "%s %08x %d\n", loadChunkKey(n), crc32.ChecksumIEEE(b), len(b))
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	m := mountAt(t, newMountpoint(t), o.URL(), "--cache-size", loadCacheSize, "--refresh", "0")
	pid := m.cmd.Process.Pid
	// Warm the metadata and one chunk, so the baseline holds what a served mount always
	// holds (the cache's files, a connection to the origin).
	if _, err := os.ReadFile(filepath.Join(m.Dir, ".zmetadata")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(m.path(loadChunkKey(0))); err != nil {
		t.Fatal(err)
	}
	fdsBefore, err := openFDs(pid)
	if err != nil {
		t.Fatalf("daemon's open files: %v", err)
	}
	rss := startRSSSampler(pid, 250*time.Millisecond)
	start := time.Now()
	deadline := start.Add(dur)

	st := &loadStats{}
	var wg sync.WaitGroup
	for id := range loadGoReaders {
		wg.Go(func() { loadGoReader(m.Dir, seed, id, deadline, st) })
	}
	type child struct {
		out  bytes.Buffer
		err  error
		cmd  *exec.Cmd
		done chan struct{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), dur+2*time.Minute)
	defer cancel()
	children := make([]*child, loadProcReaders)
	for i := range children {
		c := &child{done: make(chan struct{})}
		c.cmd = exec.CommandContext(ctx, pythonBin, "-c", loadReaderScript, m.Dir, sums,
			strconv.FormatFloat(dur.Seconds(), 'f', 1, 64), strconv.Itoa(1000+i))
		c.cmd.Stdout = &c.out
		c.cmd.Stderr = &c.out
		c.cmd.WaitDelay = 5 * time.Second
		if err := c.cmd.Start(); err != nil {
			t.Fatalf("start reader process: %v", err)
		}
		go func() { c.err = c.cmd.Wait(); close(c.done) }()
		children[i] = c
	}
	wg.Wait()
	procReads, procBytes := int64(0), int64(0)
	for i, c := range children {
		<-c.done // bounded by ctx
		if c.err != nil {
			t.Errorf("reader process %d: %v: %s", i, c.err, c.out.String())
			continue
		}
		var res struct {
			Reads  int64    `json:"reads"`
			Bytes  int64    `json:"bytes"`
			Errors []string `json:"errors"`
		}
		if err := json.Unmarshal(bytes.TrimSpace(c.out.Bytes()), &res); err != nil {
			t.Errorf("reader process %d: summary %q: %v", i, c.out.String(), err)
			continue
		}
		for _, e := range res.Errors {
			st.problem("reader process %d: %s", i, e)
		}
		if res.Reads == 0 {
			t.Errorf("reader process %d read nothing", i)
		}
		procReads += res.Reads
		procBytes += res.Bytes
	}
	elapsed := time.Since(start)
	rss.finish()
	hwm := procStatus(pid, "VmHWM")

	// Prefetches of the last reads may still be under way, and files the readers closed are
	// released by the kernel asynchronously; a lookup's reader is kept for its open for
	// 5 s (vfs firstReaderTTL). Wait for all of it, bounded.
	stats, _ := runCmd(t, time.Minute, nil, zarrfsBin, "stats", "--json", m.Dir)
	if !o.settle(3*time.Second, 2*time.Minute) {
		t.Errorf("the daemon still sends requests to the origin 2 minutes after the readers stopped")
	}
	time.Sleep(6 * time.Second)
	fdsAfter, errAfter := openFDs(pid)
	for wait := time.Now().Add(30 * time.Second); errAfter == nil && fdsAfter.files > fdsBefore.files+loadFDSlack && time.Now().Before(wait); {
		time.Sleep(200 * time.Millisecond)
		fdsAfter, errAfter = openFDs(pid)
	}

	t.Logf("load: %d readers (%d goroutines, %d python3 processes) for %v over %d chunks (%.1f MB): "+
		"%d reads (%d by goroutines, %d of them mmap; %d by processes), %.1f MB read; "+
		"origin answered %d requests, %.1f MB; daemon max VmRSS %.1f MiB (%d samples), VmHWM %.1f MiB; "+
		"open files %d before, %d after; sockets %d before, %d after",
		loadGoReaders+loadProcReaders, loadGoReaders, loadProcReaders, elapsed.Round(time.Second), loadChunks, float64(storeBytes)/1e6,
		st.reads+procReads, st.reads, st.mmaps, procReads, float64(st.bytes+procBytes)/1e6,
		o.requests.Load(), float64(o.bytes.Load())/1e6, float64(rss.maxRSS)/(1<<20), rss.samples, float64(hwm)/(1<<20),
		fdsBefore.files, fdsAfter.files, fdsBefore.sockets, fdsAfter.sockets)
	t.Logf("zarrfs stats --json at the end of the load: %s", strings.TrimSpace(stats))

	for _, p := range st.problems {
		t.Error(p)
	}
	if st.reads == 0 {
		t.Errorf("the goroutine readers read nothing")
	}
	if hwm > loadMaxRSS || rss.maxRSS > loadMaxRSS {
		t.Errorf("daemon resident set peaked at %d MiB (sampled max %d MiB), over the bound of %d MiB",
			hwm>>20, rss.maxRSS>>20, loadMaxRSS>>20)
	}
	switch {
	case errAfter != nil:
		t.Errorf("daemon's open files after the load: %v", errAfter)
	case fdsAfter.files > fdsBefore.files+loadFDSlack:
		t.Errorf("daemon holds %d open files after the load, %d before (a descriptor leak): %v", fdsAfter.files, fdsBefore.files, fdsAfter.other)
	case fdsAfter.sockets > fdsBefore.sockets+loadMaxConns:
		// Idle keep-alive connections stay open (for 90 s) up to the client's cap.
		t.Errorf("daemon holds %d sockets after the load, %d before: more than the client's cap of %d connections", fdsAfter.sockets, fdsBefore.sockets, loadMaxConns)
	}

	// Unmount: the daemon must exit by itself, cleanly.
	unmountBounded(t, m.Dir)
	m.exitAfterUnmount(t, 30*time.Second)
	if code := m.exitCode(); code != 0 {
		t.Errorf("daemon exited with status %d after the unmount, want 0", code)
	}
	if strings.Contains(m.output(), "panic:") || strings.Contains(m.output(), "goroutine ") {
		t.Errorf("daemon output shows a panic or goroutine dump")
	}
}
