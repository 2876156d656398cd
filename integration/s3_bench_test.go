package integration

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/internal/s3test"
)

// TestS3EpochVersusNginx (run with ZARRFS_BENCH_S3=1; docs/benchmarks.md)
// reads the same fixture stores, cold, through a mount of versitygw (signed
// S3 requests, XML listing) and through a mount of nginx, both on loopback:
// the wall time of one epoch (every file read, 8 readers), the CPU time the
// zarrfs daemon spent, which is where signing and XML parsing show, and the
// requests it sent.
//
// Knobs: ZARRFS_BENCH_ROUNDS (default 3), ZARRFS_BENCH_STORES and
// ZARRFS_BENCH_VARIANTS (comma-separated; default all stores, and the
// variants s3, s3-no-manifest, nginx; s3-close is versitygw without
// keep-alive), ZARRFS_BENCH_PROFILE_DIR (each daemon writes its CPU profile
// there, cmd/zarrfs/profile.go).
func TestS3EpochVersusNginx(t *testing.T) {
	if os.Getenv("ZARRFS_BENCH_S3") == "" {
		t.Skip("a benchmark: set ZARRFS_BENCH_S3=1 (and ZARRFS_BENCH_ROUNDS, default 3)")
	}
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("ZARRFS_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	variants := []string{"s3", "s3-no-manifest", "nginx"}
	if v := os.Getenv("ZARRFS_BENCH_VARIANTS"); v != "" {
		variants = strings.Split(v, ",")
	}
	stores := append([]struct{ name, serve, store string }{{"generated-1MiB-chunks", "gen", "big.zarr"}}, fixtureStores...)
	var fixtures []string
	if only := os.Getenv("ZARRFS_BENCH_STORES"); only != "" {
		stores = slices.DeleteFunc(stores, func(fx struct{ name, serve, store string }) bool {
			return !slices.Contains(strings.Split(only, ","), fx.name)
		})
	}
	for _, fx := range stores {
		if fx.serve != "gen" {
			fixtures = append(fixtures, fx.name)
		}
	}
	// A store of 1 MiB chunks (64 MiB of random float32), next to the
	// fixtures' tiny ones: request overhead matters less as chunks grow.
	gen := t.TempDir()
	if slices.ContainsFunc(stores, func(fx struct{ name, serve, store string }) bool { return fx.serve == "gen" }) {
		pythonReady.require(t)
		if out, err := runScript(t, pythonBin, "-c", `
import sys, numpy as np, zarr
z = zarr.open(sys.argv[1] + "/big.zarr", mode="w", shape=(2048, 8192), chunks=(256, 1024), dtype="f4", compressor=None)
z[:] = np.random.default_rng(1).random((2048, 8192), dtype="f4")
zarr.consolidate_metadata(sys.argv[1] + "/big.zarr")
`, gen); err != nil {
			t.Fatalf("generate: %v\n%s", err, out)
		}
	}
	// versitygw closes the connection after every answer unless told
	// otherwise (--keep-alive, off by default): a TCP connect, two new
	// goroutines and a close per GET on both sides, which neither S3 nor
	// nginx makes a client pay. The environment reaches the versitygw
	// s3Fixtures starts; s3-close is a second one without keep-alive.
	servers := map[string]*s3test.Server{}
	start := func(keepAlive bool) *s3test.Server {
		t.Setenv("VGW_KEEP_ALIVE", strconv.FormatBool(keepAlive))
		srv := s3Fixtures(t, fixtures...) // all of them when none is named
		if _, err := os.Stat(filepath.Join(gen, "big.zarr")); err == nil {
			srv.PutDir(t, s3Bucket, s3Key("gen", "big.zarr"), filepath.Join(gen, "big.zarr"))
		}
		return srv
	}
	for _, v := range variants {
		switch v {
		case "s3", "s3-no-manifest":
			if servers["keep-alive"] == nil {
				servers["keep-alive"] = start(true)
			}
		case "s3-close":
			servers["close"] = start(false)
		case "nginx":
		default:
			t.Fatalf("ZARRFS_BENCH_VARIANTS: unknown variant %q", v)
		}
	}
	for _, fx := range stores {
		serveDir := filepath.Join(fixturesDir, fx.serve)
		if fx.serve == "gen" {
			serveDir = gen
		}
		ng := newNginx(t, serveDir)
		wall := map[string]time.Duration{}
		cpu := map[string]time.Duration{}
		for r := range rounds {
			for _, which := range variants {
				var prof []string
				if dir := os.Getenv("ZARRFS_BENCH_PROFILE_DIR"); dir != "" {
					prof = []string{"ZARRFS_CPUPROFILE=" + filepath.Join(dir, fmt.Sprintf("%s-%s-%d.pprof", fx.name, which, r))}
				}
				env := func(extra ...string) []string {
					return s3Env(s3test.RootAccess, s3test.RootSecret, append(prof, extra...)...)
				}
				var m *mounted
				switch which {
				case "s3":
					m = mountEnv(t, env(), s3URL(fx.serve, fx.store), "--s3-endpoint", servers["keep-alive"].Endpoint, "--log-level", "warn")
				case "s3-close":
					m = mountEnv(t, env(), s3URL(fx.serve, fx.store), "--s3-endpoint", servers["close"].Endpoint, "--log-level", "warn")
				case "s3-no-manifest":
					m = mountEnv(t, env("ZARRFS_S3_MANIFEST_MAX_KEYS=-1"), s3URL(fx.serve, fx.store), "--s3-endpoint", servers["keep-alive"].Endpoint, "--log-level", "warn")
				default:
					m = mountEnv(t, append(os.Environ(), prof...), ng.URL(fx.store), "--log-level", "warn")
				}
				req0 := opsStatsJSON(t, m.Dir).Remote.Requests
				cpu0 := procCPU(t, m.cmd.Process.Pid)
				start := time.Now()
				n, files := readAll(t, m.Dir, 8)
				w := time.Since(start)
				c := procCPU(t, m.cmd.Process.Pid) - cpu0
				reqs := opsStatsJSON(t, m.Dir).Remote.Requests - req0
				t.Logf("%s round %d via %s: %d files, %d bytes, %d requests, wall %s, daemon CPU %s", fx.name, r, which, files, n, reqs, w.Round(time.Millisecond), c.Round(time.Millisecond))
				wall[which] += w
				cpu[which] += c
				unmountBounded(t, m.Dir)
			}
		}
		line := "SUMMARY " + fx.name + " (mean of " + strconv.Itoa(rounds) + "):"
		for _, v := range variants {
			line += fmt.Sprintf(" | %s wall %s cpu %s", v, (wall[v] / time.Duration(rounds)).Round(time.Millisecond), (cpu[v] / time.Duration(rounds)).Round(time.Millisecond))
		}
		t.Log(line)
	}
}

// readAll reads every file under dir with workers readers, as an epoch
// does, and returns the bytes and files read.
func readAll(t *testing.T, dir string, workers int) (int64, int) {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string)
	var total int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n int64
			for p := range ch {
				f, err := os.Open(p)
				if err != nil {
					t.Error(err)
					continue
				}
				m, err := io.Copy(io.Discard, f)
				f.Close()
				if err != nil {
					t.Error(err)
				}
				n += m
			}
			mu.Lock()
			total += n
			mu.Unlock()
		}()
	}
	for _, f := range files {
		ch <- f
	}
	close(ch)
	wg.Wait()
	return total, len(files)
}

// procCPU is the user+system CPU time of a process so far.
func procCPU(t *testing.T, pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}
