package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/zarrfs/zarrfs/internal/storetest"
	"github.com/zarrfs/zarrfs/internal/testutil"
)

// The WAN soak (issue #12, item 3): `zarrfs serve` publishes a v2 store (small chunks, and big
// chunks that the mount reads by 4 MiB blocks since the manifest gives their sizes) and a v3
// store of shards; a toxiproxy (the library github.com/Shopify/toxiproxy/v2) stands between it
// and the mounts on 127.0.0.1 with latency and jitter, a bandwidth limit per connection and,
// every few seconds, a reset of every connection (the proxy stops and starts again on the same
// address). Many readers, with pread and mmap, read the mounts; every byte must match the
// origin's and no read may fail. Each read's pages are dropped from the page cache afterwards
// and the disk cache is smaller than the stores, so reads keep crossing the proxy.
//
// By default (CI) the soak reads soakCIBytes with every fault on and a reset every second, in
// seconds. ZARRFS_LONG_TESTS=1 reads soakLongBytes with a reset every 3 s (docs/benchmarks.md,
// "WAN soak"). ZARRFS_SOAK_TOXICS (default "latency,bandwidth,reset", "none" for none) picks
// the faults, to bisect a failure.
//
// The proxy runs in a child process (this test binary again, as TestWANSoakProxy), never in
// the readers' process: a reader touching an mmap'ed page of the mount blocks its thread in a
// page fault that Go cannot preempt, so it holds its P, and a stop-the-world (GC) waits for
// it. With the proxy in the same process, a few such faults took every P (or a GC stopped the
// world) and the proxy, which had to carry the bytes that end the faults, never ran again:
// every read hung, with or without toxics.
const (
	soakCIBytes         = 64 << 20
	soakLongBytes       = 2 << 30
	soakReaders         = 16
	soakBigChunk        = 20 << 20 // >= 16 MiB: fetched as 4 MiB blocks (README, The cache)
	soakLatencyMs       = 20
	soakJitterMs        = 10
	soakRateKBps        = 8192 // per connection and direction
	soakCIResetEvery    = time.Second
	soakLongResetEvery  = 3 * time.Second
	soakResetWindow     = 150 * time.Millisecond
	soakCacheSize       = "48MiB"
	soakCITimeout       = 3 * time.Minute
	soakLongTimeout     = 40 * time.Minute
	soakMaxReadBytes    = 8 << 20
	soakProxyUpstream   = "ZARRFS_SOAK_PROXY_UPSTREAM" // set in the proxy process only
	soakProxyResetEvery = "ZARRFS_SOAK_PROXY_RESET_EVERY"
	soakProxyBackstop   = "ZARRFS_SOAK_PROXY_BACKSTOP"
)

// soakFile is one file of a store that the readers pick from.
type soakFile struct {
	rel  string // below its mount (the store's root)
	path string // on the origin's disk
	size int64
	kind string // "small", "big", "shard"
}

// writeSoakStore writes soak.zarr under dir: array "s" of nSmall chunks of 4-64 KiB and array
// "b" of nBig chunks of soakBigChunk bytes, random bytes from seed (a compressor is declared,
// the bytes are opaque to zarrfs).
func writeSoakStore(t testing.TB, dir string, nSmall, nBig int, seed uint64) []soakFile {
	t.Helper()
	store := filepath.Join(dir, "soak.zarr")
	zs := fmt.Sprintf(`{"zarr_format": 2, "shape": [%d, 64], "chunks": [64, 64], "dtype": "<f8", "compressor": {"id": "zlib", "level": 1}, "fill_value": 0.0, "order": "C", "filters": null, "dimension_separator": "."}`, nSmall*64)
	zb := fmt.Sprintf(`{"zarr_format": 2, "shape": [%d, %d], "chunks": [1, %d], "dtype": "|u1", "compressor": null, "fill_value": 0, "order": "C", "filters": null, "dimension_separator": "."}`, nBig, soakBigChunk, soakBigChunk)
	zmeta := fmt.Sprintf(`{"zarr_consolidated_format": 1, "metadata": {".zgroup": {"zarr_format": 2}, "s/.zarray": %s, "b/.zarray": %s}}`, zs, zb)
	for rel, body := range map[string]string{".zgroup": `{"zarr_format": 2}`, ".zmetadata": zmeta, "s/.zarray": zs, "b/.zarray": zb} {
		p := filepath.Join(store, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, p, []byte(body))
	}
	rng := rand.New(rand.NewPCG(seed, 0x50a4))
	var seedKey [32]byte
	for i := range 8 {
		seedKey[i] = byte(seed >> (8 * i))
	}
	gen := rand.NewChaCha8(seedKey)
	var files []soakFile
	add := func(rel string, size int, kind string) {
		b := make([]byte, size)
		_, _ = gen.Read(b)
		p := filepath.Join(store, filepath.FromSlash(rel))
		writeFile(t, p, b)
		files = append(files, soakFile{rel: rel, path: p, size: int64(size), kind: kind})
	}
	for i := range nSmall {
		add(fmt.Sprintf("s/%d.0", i), 4<<10+rng.IntN(60<<10), "small")
	}
	for i := range nBig {
		add(fmt.Sprintf("b/%d.0", i), soakBigChunk, "big")
	}
	return files
}

// writeSoakShards writes sharded.zarr under dir, laid out as writeShardedStore's (array
// "temp", shards of 8x8 inner chunks, index with crc32c at the end, some inner chunks
// absent) but with random bytes of random lengths as inner chunks: zarrfs never decodes
// them, and gzip'ing real ones takes seconds under the race detector.
func writeSoakShards(t testing.TB, dir string, seed uint64) []soakFile {
	t.Helper()
	store := filepath.Join(dir, "sharded.zarr")
	meta, err := json.Marshal(shardedArrayMeta())
	if err != nil {
		t.Fatal(err)
	}
	for rel, body := range map[string][]byte{"zarr.json": []byte(`{"zarr_format": 3, "node_type": "group", "attributes": {}}`), "temp/zarr.json": meta} {
		p := filepath.Join(store, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, p, body)
	}
	rng := rand.New(rand.NewPCG(seed, 0x5a4d))
	gen := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 's', 'h', 'a', 'r', 'd'})
	const inners = shardedShard / shardedInner
	var files []soakFile
	for si := range shardedSide / shardedShard {
		for sj := range shardedSide / shardedShard {
			data := storetest.EncodeShard(rng.Perm(inners*inners), func(k int) []byte {
				if k%17 == 3 { // not stored: reads as fill_value
					return nil
				}
				chunk := make([]byte, 16<<10+rng.IntN(48<<10))
				_, _ = gen.Read(chunk)
				return chunk
			})
			rel := fmt.Sprintf("temp/c/%d/%d", si, sj)
			p := filepath.Join(store, filepath.FromSlash(rel))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, p, data)
			files = append(files, soakFile{rel: rel, path: p, size: int64(len(data)), kind: "shard"})
		}
	}
	return files
}

// TestWANSoakProxy is not a test of its own: it is the WAN of TestWANSoak, which runs this
// test binary again with only this test and soakProxyUpstream set. It serves an in-process
// toxiproxy in front of the upstream, prints "soak-proxy listen ADDR", resets every
// connection every soakProxyResetEvery, and reads commands on stdin: "watch PID" names a
// mount's daemon to kill if the soak outlives soakProxyBackstop (its end ends its FUSE
// connection and so every read stuck in it) — the backstop for a hang that freezes the
// readers' process, whose own deadline then cannot fire (a goroutine stuck in a page fault of
// an mmap'ed file blocks every stop-the-world). The end of stdin stops it; it prints
// "soak-proxy resets N" and exits.
func TestWANSoakProxy(t *testing.T) {
	upstream := os.Getenv(soakProxyUpstream)
	if upstream == "" {
		t.Skip("the WAN soak's proxy process, started by TestWANSoak")
	}
	resetEvery, err := time.ParseDuration(os.Getenv(soakProxyResetEvery))
	if err != nil {
		t.Fatalf("%s: %v", soakProxyResetEvery, err)
	}
	backstop, err := time.ParseDuration(os.Getenv(soakProxyBackstop))
	if err != nil {
		t.Fatalf("%s: %v", soakProxyBackstop, err)
	}
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(server, "origin", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("toxiproxy: %v", err)
	}
	toxics := soakToxics()
	add := func(name, typ string, attrs map[string]any) {
		b, err := json.Marshal(map[string]any{"name": name, "type": typ, "stream": "downstream", "toxicity": 1.0, "attributes": attrs})
		if err == nil {
			_, err = p.Toxics.AddToxicJson(bytes.NewReader(b))
		}
		if err != nil {
			t.Fatalf("toxiproxy: add toxic %s: %v", name, err)
		}
	}
	if strings.Contains(toxics, "latency") {
		add("latency", "latency", map[string]any{"latency": soakLatencyMs, "jitter": soakJitterMs})
	}
	if strings.Contains(toxics, "bandwidth") {
		add("bandwidth", "bandwidth", map[string]any{"rate": soakRateKBps})
	}
	fmt.Printf("soak-proxy listen %s\n", p.Listen)

	var mu sync.Mutex
	var watched []int
	backstopTimer := time.AfterFunc(backstop, func() {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf("soak-proxy backstop: killing the daemons %v after %v\n", watched, backstop)
		for _, pid := range watched {
			_ = unix.Kill(pid, unix.SIGQUIT) // its goroutines, then its end
		}
		time.Sleep(5 * time.Second)
		for _, pid := range watched {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	})
	defer backstopTimer.Stop()

	ctx, stop := context.WithCancel(context.Background())
	var resets atomic.Int64
	resetDone := make(chan error, 1)
	go func() {
		if !strings.Contains(toxics, "reset") {
			resetDone <- nil
			return
		}
		resetDone <- soakResetLoop(ctx, p, resetEvery, &resets)
	}()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if pid, err := strconv.Atoi(strings.TrimPrefix(in.Text(), "watch ")); err == nil {
			mu.Lock()
			watched = append(watched, pid)
			mu.Unlock()
		}
	}
	stop()
	if err := <-resetDone; err != nil {
		fmt.Printf("soak-proxy error: %v\n", err)
	}
	p.Stop()
	fmt.Printf("soak-proxy resets %d\n", resets.Load())
}

// soakResetLoop resets every connection through p every `every` until ctx ends: it stops the
// proxy, which closes both ends of every link at once (mid-body for a response under way, so
// the mount sees a broken body or a refused connection), and starts it again on the same
// address. (The reset_peer toxic of toxiproxy v2.5.0, added and removed every few seconds, was
// tried first, while the proxy still ran in the readers' process and froze with it for the
// reason at the top of this file; it was not tried again.)
func soakResetLoop(ctx context.Context, p *toxiproxy.Proxy, every time.Duration, resets *atomic.Int64) error {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		p.Stop()
		resets.Add(1)
		select {
		case <-ctx.Done():
		case <-time.After(soakResetWindow):
		}
		if err := p.Start(); err != nil {
			return fmt.Errorf("restart the proxy on %s: %w", p.Listen, err)
		}
	}
}

// soakProxy is the parent's end of the proxy process.
type soakProxy struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *testutil.SyncBuffer // what the child printed, stdout and stderr
	listen chan string          // its address, once
	resets atomic.Int64         // resets made, known once it has ended
	failed atomic.Bool          // it printed an error (its output has it)
	done   chan struct{}        // closed when the child has been reaped
	exit   error                // its exit, valid after done
}

// startSoakProxy starts the proxy process in front of upstream and returns its address
// (waiting for it, bounded). backstop is when it kills the watched daemons; stop (or the
// test's cleanup) ends it.
func startSoakProxy(t *testing.T, upstream string, resetEvery, backstop time.Duration) (*soakProxy, string) {
	t.Helper()
	sp := &soakProxy{out: &testutil.SyncBuffer{}, listen: make(chan string, 1), done: make(chan struct{})}
	// -test.timeout=0: the backstop and the end of stdin bound the child, not a test timer.
	sp.cmd = exec.Command(os.Args[0], "-test.run=^TestWANSoakProxy$", "-test.count=1", "-test.timeout=0")
	sp.cmd.Env = append(os.Environ(),
		soakProxyUpstream+"="+upstream,
		soakProxyResetEvery+"="+resetEvery.String(),
		soakProxyBackstop+"="+backstop.String(),
		"ZARRFS_TEST_BINARY="+zarrfsBin) // its TestMain takes the binary instead of building one
	sp.cmd.Stderr = sp.out
	sp.cmd.WaitDelay = 5 * time.Second
	var err error
	if sp.stdin, err = sp.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := sp.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.cmd.Start(); err != nil {
		t.Fatalf("start the proxy process: %v", err)
	}
	go func() {
		defer close(sp.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(sp.out, line)
			if addr, ok := strings.CutPrefix(line, "soak-proxy listen "); ok {
				sp.listen <- addr
			} else if n, ok := strings.CutPrefix(line, "soak-proxy resets "); ok {
				v, _ := strconv.ParseInt(n, 10, 64)
				sp.resets.Store(v)
			} else if strings.HasPrefix(line, "soak-proxy error: ") {
				sp.failed.Store(true)
			}
		}
		sp.exit = sp.cmd.Wait()
	}()
	t.Cleanup(func() {
		if !sp.stop() {
			t.Errorf("the proxy process did not end within 15s of its stdin closing; killed")
		}
		if t.Failed() {
			t.Logf("proxy process output:\n%s", sp.out.String())
		}
	})
	select {
	case addr := <-sp.listen:
		return sp, addr
	case <-sp.done:
		t.Fatalf("the proxy process ended before it listened:\n%s", sp.out.String())
	case <-time.After(time.Minute):
		t.Fatalf("the proxy process did not listen within a minute:\n%s", sp.out.String())
	}
	return nil, ""
}

// watch has the proxy process kill the daemon pid at its backstop.
func (sp *soakProxy) watch(t *testing.T, pid int) {
	if _, err := fmt.Fprintf(sp.stdin, "watch %d\n", pid); err != nil {
		t.Fatalf("tell the proxy process to watch pid %d: %v", pid, err)
	}
}

// stop ends the proxy process (its resets are then in sp.resets) and waits for it, killing it
// after 15s. It reports whether it ended by itself; calling it again is harmless.
func (sp *soakProxy) stop() bool {
	_ = sp.stdin.Close()
	select {
	case <-sp.done:
		return true
	case <-time.After(15 * time.Second):
		_ = sp.cmd.Process.Kill()
		<-sp.done
		return false
	}
}

// soakCounters add up what the readers did.
type soakCounters struct {
	reads, bytes, mmaps     atomic.Int64
	small, big, shard, errs atomic.Int64
	mu                      sync.Mutex
	problems                []string
}

func (c *soakCounters) problem(format string, args ...any) {
	c.errs.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.problems) < maxProblems {
		c.problems = append(c.problems, fmt.Sprintf(format, args...))
	}
}

// soakPiece picks what to read of f: the whole of a small file, a random range of up to
// soakMaxReadBytes of the others.
func soakPiece(f soakFile, rng *rand.Rand) (off, n int64) {
	if f.kind == "small" {
		return 0, f.size
	}
	n = 1 + rng.Int64N(min(f.size, soakMaxReadBytes))
	return rng.Int64N(f.size - n + 1), n
}

// soakReadOne reads n bytes at off of f through the mount (pread or mmap), compares them with
// the origin's file, and drops the file's pages from the page cache so the next read asks the
// daemon again.
func soakReadOne(mnt string, f soakFile, off, n int64, rng *rand.Rand, c *soakCounters) {
	fd, err := openRetryingEINTR(filepath.Join(mnt, filepath.FromSlash(f.rel)))
	if err != nil {
		c.problem("%s: open: %v", f.rel, err)
		return
	}
	defer unix.Close(fd)
	defer unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
	var got []byte
	if rng.IntN(2) == 0 {
		if got, err = mmapRead(fd, off, n); err != nil {
			c.problem("%s: %v", f.rel, err)
			return
		}
		c.mmaps.Add(1)
	} else if got, err = preadFull(fd, int(off), int(n)); err != nil {
		c.problem("%s: %v", f.rel, err)
		return
	}
	want := make([]byte, n)
	of, err := os.Open(f.path)
	if err == nil {
		_, err = of.ReadAt(want, off)
		of.Close()
	}
	if err != nil {
		c.problem("%s: read the origin's file: %v", f.rel, err)
		return
	}
	if !bytes.Equal(got, want) {
		c.problem("%s: bytes %d..%d through the mount differ from the origin's (first difference at %d)", f.rel, off, off+n, off+int64(firstDiff(got, want)))
		return
	}
	c.reads.Add(1)
	c.bytes.Add(n)
	switch f.kind {
	case "small":
		c.small.Add(n)
	case "big":
		c.big.Add(n)
	default:
		c.shard.Add(n)
	}
}

// mmapRead copies n bytes at off of fd through a shared mapping. A page the daemon fails to
// deliver is a SIGBUS, which is an error here, not the end of the test binary.
func mmapRead(fd int, off, n int64) (got []byte, err error) {
	// mmap offsets must be page-aligned: map from the page that holds off.
	page := int64(unix.Getpagesize())
	start := off / page * page
	m, err := unix.Mmap(fd, start, int(off+n-start), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes at %d: %w", off+n-start, start, err)
	}
	defer unix.Munmap(m)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			got, err = nil, fmt.Errorf("mmap read of %d bytes at %d: a page fault failed (SIGBUS): %v", n, off, r)
		}
	}()
	return bytes.Clone(m[off-start:]), nil
}

func TestWANSoak(t *testing.T) {
	fuseReady.require(t)
	target, nSmall, nBig, timeout, resetEvery := int64(soakCIBytes), 200, 2, soakCITimeout, soakCIResetEvery
	if longTests() {
		target, nSmall, nBig, timeout, resetEvery = soakLongBytes, 1500, 12, soakLongTimeout, soakLongResetEvery
	}
	dir := t.TempDir()
	files := writeSoakStore(t, dir, nSmall, nBig, 0x50a3)
	files = append(files, writeSoakShards(t, dir, 0x50a3)...)

	served := startServe(t, dir, "", "--insecure-http", "--no-auth", "--access-log=false")
	soakURL, shardURL := served.storeURL(t, "soak"), served.storeURL(t, "sharded")
	u, err := url.Parse(soakURL)
	if err != nil {
		t.Fatal(err)
	}
	// The proxy's own backstop comes well after the test's deadline, which normally acts first.
	sp, proxyAddr := startSoakProxy(t, u.Host, resetEvery, timeout+time.Minute)
	viaProxy := func(s string) string { return strings.Replace(s, u.Host, proxyAddr, 1) }

	mnt := map[string]*mounted{}
	for name, storeURL := range map[string]string{"soak": viaProxy(soakURL), "sharded": viaProxy(shardURL)} {
		mnt[name] = mountAt(t, newMountpoint(t), storeURL, "--cache-size", soakCacheSize, "--refresh", "0", "--retry-timeout", "60s")
		sp.watch(t, mnt[name].cmd.Process.Pid)
	}
	mountFor := func(f soakFile) string {
		if f.kind == "shard" {
			return mnt["sharded"].Dir
		}
		return mnt["soak"].Dir
	}

	// A reader in an mmap page fault holds its P until the fault ends: with more Ps than
	// readers, the others (and the deadline below) keep running meanwhile.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), soakReaders+4)))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := &soakCounters{}
	var claimed atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for id := range soakReaders {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(0x50a3, uint64(id)))
			for ctx.Err() == nil && claimed.Load() < target && c.errs.Load() < maxProblems {
				// Mixed: half the reads small chunks, the rest big chunks and shards.
				var f soakFile
				switch r := rng.IntN(4); {
				case r < 2:
					f = files[rng.IntN(nSmall)]
				case r == 2:
					f = files[nSmall+rng.IntN(nBig)]
				default:
					f = files[nSmall+nBig+rng.IntN(len(files)-nSmall-nBig)]
				}
				// Claimed before it is read, so the readers stop at the target together.
				off, n := soakPiece(f, rng)
				if claimed.Add(n)-n >= target {
					return
				}
				soakReadOne(mountFor(f), f, off, n, rng, c)
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	progress := time.NewTicker(15 * time.Second)
	defer progress.Stop()
wait:
	for {
		select {
		case <-finished:
			break wait
		case <-progress.C:
			t.Logf("soak: %.1f MiB read in %d reads, %v", float64(c.bytes.Load())/(1<<20), c.reads.Load(), time.Since(start).Round(time.Second))
			continue
		case <-ctx.Done():
		}
		// Readers are stuck in the kernel waiting for the daemons: have them print their
		// goroutines (shown with their output when the test ends) and end, which ends their
		// FUSE connections, so the stuck reads fail and the readers return. (Not `zarrfs
		// stats`: it could hang on the stuck mount, in a wait no signal ends.)
		t.Errorf("the readers did not finish within %v (%d of %d bytes read): a read hangs", timeout, c.bytes.Load(), target)
		for _, m := range mnt {
			_ = m.cmd.Process.Signal(unix.SIGQUIT)
		}
		time.Sleep(5 * time.Second)
		for _, m := range mnt {
			_ = m.cmd.Process.Kill()
		}
		select {
		case <-finished:
		case <-time.After(time.Minute):
			t.Fatalf("readers still stuck a minute after the FUSE connections were aborted")
		}
		break
	}
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		t.Errorf("the soak did not finish within %v: %d of %d bytes read", timeout, c.bytes.Load(), target)
	}

	// Once the readers are done, no request may stay in flight (a leaked flight or body)
	// beyond what the prefetcher finishes in a moment, and none may have failed for good.
	var retries, requests, received, failures, peakRSS int64
	for name, m := range mnt {
		peakRSS = max(peakRSS, procStatus(m.cmd.Process.Pid, "VmHWM"))
		var st struct {
			Remote struct {
				Requests      int64 `json:"requests"`
				InFlight      int64 `json:"in_flight"`
				Retries       int64 `json:"retries"`
				Failures      int64 `json:"failures"`
				BytesReceived int64 `json:"bytes_received"`
			} `json:"remote"`
		}
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			out, code := runCmd(t, time.Minute, nil, zarrfsBin, "stats", "--json", m.Dir)
			if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
				t.Errorf("zarrfs stats --json %s (%s): exit %d, %v:\n%s", m.Dir, name, code, err, out)
				break
			}
			if st.Remote.InFlight == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: %d requests still in flight 30s after the readers finished", name, st.Remote.InFlight)
				break
			}
		}
		retries += st.Remote.Retries
		requests += st.Remote.Requests
		received += st.Remote.BytesReceived
		failures += st.Remote.Failures
	}
	if failures > 0 {
		t.Errorf("the mounts counted %d operations that failed for good", failures)
	}
	if !sp.stop() {
		t.Errorf("the proxy process did not end within 15s of its stdin closing; killed")
	}
	if sp.failed.Load() || sp.exit != nil {
		t.Errorf("the proxy process failed (%v): its output follows", sp.exit)
	}
	t.Logf("WAN soak: %d readers read %.1f MiB in %d reads (%d by mmap; small %.1f MiB, big %.1f MiB, shards %.1f MiB) in %v, %.1f MiB/s, "+
		"through toxiproxy (%s; latency %d±%d ms, %d KB/s per connection, all connections reset %d times, every %v, down %v each time); "+
		"the mounts made %d requests (%d retries) and received %.1f MiB; daemon peak RSS %.0f MiB; %d errors",
		soakReaders, float64(c.bytes.Load())/(1<<20), c.reads.Load(), c.mmaps.Load(),
		float64(c.small.Load())/(1<<20), float64(c.big.Load())/(1<<20), float64(c.shard.Load())/(1<<20),
		elapsed.Round(time.Second), float64(c.bytes.Load())/(1<<20)/elapsed.Seconds(),
		soakToxics(), soakLatencyMs, soakJitterMs, soakRateKBps, sp.resets.Load(), resetEvery, soakResetWindow,
		requests, retries, float64(received)/(1<<20), float64(peakRSS)/(1<<20), c.errs.Load())
	for _, p := range c.problems {
		t.Error(p)
	}
	if c.bytes.Load() < target {
		t.Errorf("read %d bytes, want at least %d", c.bytes.Load(), target)
	}
	for kind, n := range map[string]int64{"small": c.small.Load(), "big": c.big.Load(), "shard": c.shard.Load()} {
		if n == 0 {
			t.Errorf("no %s chunk was read", kind)
		}
	}
	// The faults must have been felt, or the soak proves nothing about them.
	if strings.Contains(soakToxics(), "reset") && (sp.resets.Load() == 0 || retries == 0) {
		t.Errorf("%d resets and %d retries: the connection resets did not reach the mounts", sp.resets.Load(), retries)
	}
}

// soakToxics is ZARRFS_SOAK_TOXICS or its default.
func soakToxics() string {
	if s := os.Getenv("ZARRFS_SOAK_TOXICS"); s != "" {
		return s
	}
	return "latency,bandwidth,reset"
}
