package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// The WAN soak (issue #12, item 3): `zarrfs serve` publishes a v2 store (small chunks, and big
// chunks that the mount reads by 4 MiB blocks since the manifest gives their sizes) and a v3
// store of shards; a toxiproxy, in process (the library github.com/Shopify/toxiproxy/v2),
// stands between it and the mounts on 127.0.0.1 with latency and jitter, a bandwidth limit per
// connection and, every few seconds, a reset of every connection (the proxy stops and starts
// again on the same address). Many readers, with pread and mmap, read soakCIBytes (2 GiB with
// ZARRFS_LONG_TESTS=1) through the mounts; every byte must match the origin's and no read may
// fail. Each read's pages are dropped from the page cache afterwards and the disk cache is far
// smaller than the stores, so reads keep crossing the proxy.
const (
	soakCIBytes      = 256 << 20
	soakLongBytes    = 2 << 30
	soakReaders      = 16
	soakBigChunk     = 20 << 20 // >= 16 MiB: fetched as 4 MiB blocks (README, The cache)
	soakLatencyMs    = 20
	soakJitterMs     = 10
	soakRateKBps     = 8192 // per connection and direction
	soakResetEvery   = 3 * time.Second
	soakResetWindow  = 150 * time.Millisecond
	soakCacheSize    = "48MiB"
	soakCITimeout    = 4 * time.Minute
	soakLongTimeout  = 40 * time.Minute
	soakMaxReadBytes = 8 << 20
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

// soakProxy is an in-process toxiproxy in front of upstream (host:port), on 127.0.0.1.
type soakProxy struct {
	proxy    *toxiproxy.Proxy
	resets   atomic.Int64 // resets made
	noResets bool
}

func newSoakProxy(t testing.TB, upstream string) *soakProxy {
	t.Helper()
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(server, "origin", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("toxiproxy: %v", err)
	}
	sp := &soakProxy{proxy: p}
	t.Cleanup(func() { sp.proxy.Stop() })
	// ZARRFS_SOAK_TOXICS (default "latency,bandwidth,reset") picks the faults, to find
	// which one the stall comes with.
	toxics := os.Getenv("ZARRFS_SOAK_TOXICS")
	if toxics == "" {
		toxics = "latency,bandwidth,reset"
	}
	if strings.Contains(toxics, "latency") {
		sp.add(t, "latency", "latency", map[string]any{"latency": soakLatencyMs, "jitter": soakJitterMs})
	}
	if strings.Contains(toxics, "bandwidth") {
		sp.add(t, "bandwidth", "bandwidth", map[string]any{"rate": soakRateKBps})
	}
	sp.noResets = !strings.Contains(toxics, "reset")
	return sp
}

func (sp *soakProxy) add(t testing.TB, name, typ string, attrs map[string]any) {
	t.Helper()
	if err := sp.addErr(name, typ, attrs); err != nil {
		t.Fatalf("toxiproxy: add toxic %s: %v", name, err)
	}
}

func (sp *soakProxy) addErr(name, typ string, attrs map[string]any) error {
	b, err := json.Marshal(map[string]any{"name": name, "type": typ, "stream": "downstream", "toxicity": 1.0, "attributes": attrs})
	if err != nil {
		return err
	}
	_, err = sp.proxy.Toxics.AddToxicJson(bytes.NewReader(b))
	return err
}

// resetLoop resets every connection through the proxy every soakResetEvery until ctx ends:
// it stops the proxy, which closes both ends of every link at once (mid-body for a response
// under way, so the mount sees a broken body or a refused connection), and starts it again on
// the same address. (The reset_peer toxic of toxiproxy v2.5.0 was tried first: added and
// removed every few seconds under load, it left links that passed no more data and spun, so
// every request stalled.)
func (sp *soakProxy) resetLoop(ctx context.Context) error {
	tick := time.NewTicker(soakResetEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if sp.noResets {
			continue
		}
		sp.proxy.Stop()
		sp.resets.Add(1)
		select {
		case <-ctx.Done():
		case <-time.After(soakResetWindow):
		}
		if err := sp.proxy.Start(); err != nil {
			return fmt.Errorf("restart the proxy on %s: %w", sp.proxy.Listen, err)
		}
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

// soakReadOne reads a piece of f through the mount (pread or mmap, whole for small files, a
// random range of up to soakMaxReadBytes otherwise), compares it with the origin's file, and
// drops the file's pages from the page cache so the next read asks the daemon again.
func soakReadOne(mnt string, f soakFile, rng *rand.Rand, c *soakCounters) {
	off, n := int64(0), f.size
	if f.kind != "small" {
		n = 1 + rng.Int64N(min(f.size, soakMaxReadBytes))
		off = rng.Int64N(f.size - n + 1)
	}
	fd, err := openRetryingEINTR(filepath.Join(mnt, filepath.FromSlash(f.rel)))
	if err != nil {
		c.problem("%s: open: %v", f.rel, err)
		return
	}
	defer unix.Close(fd)
	defer unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
	var got []byte
	if useMmap := rng.IntN(2) == 0; useMmap {
		// mmap offsets must be page-aligned: map from the page that holds off.
		page := int64(unix.Getpagesize())
		start := off / page * page
		m, err := unix.Mmap(fd, start, int(off+n-start), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			c.problem("%s: mmap %d bytes at %d: %v", f.rel, off+n-start, start, err)
			return
		}
		got = bytes.Clone(m[off-start:])
		_ = unix.Munmap(m)
		c.mmaps.Add(1)
	} else {
		got, err = preadFull(fd, int(off), int(n))
		if err != nil {
			c.problem("%s: %v", f.rel, err)
			return
		}
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

func TestWANSoak(t *testing.T) {
	// Not yet in CI: the readers never finish. The mounts' requests through the in-process
	// toxiproxy stall (zarrfs stats: stalled 45, 5 KB received) — also with no toxic at all
	// and no resets (ZARRFS_SOAK_TOXICS=none), so the toxics are not the cause; whether the
	// proxy (in this process), `zarrfs serve` or the mount is at fault is still open.
	if os.Getenv("ZARRFS_WAN_SOAK") != "1" {
		t.Skip("the WAN soak runs only with ZARRFS_WAN_SOAK=1 (reads stall through toxiproxy; under investigation)")
	}
	fuseReady.require(t)
	target, nSmall, nBig, timeout := int64(soakCIBytes), 300, 4, soakCITimeout
	if longTests() {
		target, nSmall, nBig, timeout = soakLongBytes, 1500, 12, soakLongTimeout
	}
	dir := t.TempDir()
	files := writeSoakStore(t, dir, nSmall, nBig, 0x50a3)
	shardStore := writeShardedStore(t, dir)
	for si := range shardedSide / shardedShard {
		for sj := range shardedSide / shardedShard {
			rel := fmt.Sprintf("temp/c/%d/%d", si, sj)
			p := filepath.Join(shardStore, filepath.FromSlash(rel))
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, soakFile{rel: rel, path: p, size: st.Size(), kind: "shard"})
		}
	}

	served := startServe(t, dir, "", "--insecure-http", "--no-auth", "--access-log=false")
	soakURL, shardURL := served.storeURL(t, "soak"), served.storeURL(t, "sharded")
	u, err := url.Parse(soakURL)
	if err != nil {
		t.Fatal(err)
	}
	sp := newSoakProxy(t, u.Host)
	viaProxy := func(s string) string { return strings.Replace(s, u.Host, sp.proxy.Listen, 1) }

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resetErr := make(chan error, 1)
	resetCtx, stopResets := context.WithCancel(ctx)
	defer stopResets()
	go func() { resetErr <- sp.resetLoop(resetCtx) }()

	mnt := map[string]*mounted{}
	for name, storeURL := range map[string]string{"soak": viaProxy(soakURL), "sharded": viaProxy(shardURL)} {
		mnt[name] = mountAt(t, newMountpoint(t), storeURL, "--cache-size", soakCacheSize, "--refresh", "0", "--retry-timeout", "60s")
	}
	mountFor := func(f soakFile) string {
		if f.kind == "shard" {
			return mnt["sharded"].Dir
		}
		return mnt["soak"].Dir
	}

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
				before := c.bytes.Load()
				soakReadOne(mountFor(f), f, rng, c)
				claimed.Add(c.bytes.Load() - before)
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
			t.Logf("soak: %.1f MiB read in %d reads, %d resets, %v", float64(c.bytes.Load())/(1<<20), c.reads.Load(), sp.resets.Load(), time.Since(start).Round(time.Second))
			continue
		case <-ctx.Done():
		}
		// Readers are stuck in the kernel waiting for the daemons: have them print their
		// goroutines (shown with their output when the test ends), then abort the FUSE
		// connections so the stuck reads fail and the readers return.
		t.Errorf("the readers did not finish within %v (%d of %d bytes read): a read hangs", timeout, c.bytes.Load(), target)
		for _, m := range mnt {
			_ = m.cmd.Process.Signal(unix.SIGQUIT)
		}
		time.Sleep(5 * time.Second)
		for _, m := range mnt {
			abortFuse(t, m.Dir)
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
	stopResets()
	if err := <-resetErr; err != nil {
		t.Errorf("reset loop: %v", err)
	}
	if ctx.Err() != nil {
		t.Errorf("the soak did not finish within %v: %d of %d bytes read", timeout, c.bytes.Load(), target)
	}

	var retries, requests, received int64
	for name, m := range mnt {
		out, code := runCmd(t, time.Minute, nil, zarrfsBin, "stats", "--json", m.Dir)
		var st struct {
			Remote struct {
				Requests      int64 `json:"requests"`
				Retries       int64 `json:"retries"`
				BytesReceived int64 `json:"bytes_received"`
			} `json:"remote"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
			t.Errorf("zarrfs stats --json %s (%s): exit %d:\n%s", m.Dir, name, code, out)
			continue
		}
		retries += st.Remote.Retries
		requests += st.Remote.Requests
		received += st.Remote.BytesReceived
	}
	t.Logf("WAN soak: %d readers read %.1f MiB in %d reads (%d by mmap; small %.1f MiB, big %.1f MiB, shards %.1f MiB) in %v, %.1f MiB/s, "+
		"through toxiproxy (latency %d±%d ms, %d KB/s per connection, all connections reset %d times, down %v each time); the mounts made %d requests (%d retries) and received %.1f MiB; %d errors",
		soakReaders, float64(c.bytes.Load())/(1<<20), c.reads.Load(), c.mmaps.Load(),
		float64(c.small.Load())/(1<<20), float64(c.big.Load())/(1<<20), float64(c.shard.Load())/(1<<20),
		elapsed.Round(time.Second), float64(c.bytes.Load())/(1<<20)/elapsed.Seconds(),
		soakLatencyMs, soakJitterMs, soakRateKBps, sp.resets.Load(), soakResetWindow, requests, retries, float64(received)/(1<<20), c.errs.Load())
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
	if sp.resets.Load() == 0 || retries == 0 {
		t.Errorf("%d resets and %d retries: the connection resets did not reach the mounts", sp.resets.Load(), retries)
	}
}

// abortFuse aborts the FUSE connection of the mount at mnt (/sys/fs/fuse/connections/N/abort,
// N the minor of the mount's device in /proc/self/mountinfo: a stat of a stuck mount could
// hang), so that requests stuck in it fail at once.
func abortFuse(t testing.TB, mnt string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Logf("abort %s: %v", mnt, err)
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[4] != mnt {
			continue
		}
		_, minor, _ := strings.Cut(f[2], ":")
		p := "/sys/fs/fuse/connections/" + minor + "/abort"
		if err := os.WriteFile(p, []byte("1"), 0o200); err != nil {
			t.Logf("abort %s: %v", p, err)
		}
	}
}
