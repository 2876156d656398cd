package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

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

// TestS3ServerCostVersusNginx (run with ZARRFS_BENCH_S3=1; docs/benchmarks.md)
// times plain GETs of the zarr-python fixture's 7,389 small files from
// this process, 8 at a time, against versitygw (with keep-alive; signed by
// the SDK's SigV4 signer, and anonymous under a public-read policy) and
// against nginx serving versitygw's own files, and reads each server's CPU
// time from /proc: what a GET costs the server itself, which on a small
// machine competes with the zarrfs daemon for the same cores.
func TestS3ServerCostVersusNginx(t *testing.T) {
	if os.Getenv("ZARRFS_BENCH_S3") == "" {
		t.Skip("a benchmark: set ZARRFS_BENCH_S3=1 (and ZARRFS_BENCH_ROUNDS, default 3)")
	}
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("ZARRFS_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	t.Setenv("VGW_KEEP_ALIVE", "true")
	const fx = "zarr-python-2.13"
	srv := s3Fixtures(t, fx)
	ng := newNginx(t, srv.Dir) // one directory per bucket: the same files
	prefix := s3Key(fx, "fixture")
	ctx := t.Context()
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::` + s3Bucket + `/*"]}]}`
	if _, err := srv.Client.PutBucketPolicy(ctx, &awss3.PutBucketPolicyInput{Bucket: aws.String(s3Bucket), Policy: aws.String(policy)}); err != nil {
		t.Fatalf("public-read policy: %v", err)
	}
	var keys []string
	root := filepath.Join(fixturesDir, fx, "fixture")
	if err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(root, p)
			keys = append(keys, prefix+filepath.ToSlash(rel))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	vgwPids := procsMatching(func(p procInfo) bool {
		return slices.Contains(p.args, strings.TrimPrefix(srv.Endpoint, "http://")) && slices.Contains(p.args, "posix")
	})
	ngPids := nginxPids(ng.prefix)
	if len(vgwPids) != 1 || len(ngPids) < 2 {
		t.Fatalf("server processes: versitygw %v, nginx %v", vgwPids, ngPids)
	}
	signer := v4.NewSigner(func(so *v4.SignerOptions) { so.DisableURIPathEscaping = true })
	creds := aws.Credentials{AccessKeyID: s3test.RootAccess, SecretAccessKey: s3test.RootSecret}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8, DisableCompression: true}}
	t.Cleanup(hc.CloseIdleConnections)
	type variant struct {
		name   string
		base   string
		signed bool
		pids   []int
	}
	variants := []variant{
		{"nginx", ng.URL(s3Bucket), false, ngPids},
		{"versitygw, signed", srv.Endpoint + "/" + s3Bucket, true, vgwPids},
		{"versitygw, anonymous", srv.Endpoint + "/" + s3Bucket, false, vgwPids},
	}
	for r := range rounds {
		for _, v := range variants {
			serverCPU := func() (d time.Duration) {
				for _, pid := range v.pids {
					d += procCPU(t, pid)
				}
				return d
			}
			s0, c0, start := serverCPU(), selfCPU(), time.Now()
			ch := make(chan string)
			var wg sync.WaitGroup
			var failed atomic.Int64
			for range 8 {
				wg.Go(func() {
					for k := range ch {
						req, _ := http.NewRequestWithContext(ctx, http.MethodGet, v.base+"/"+k, nil)
						if v.signed {
							req.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
							if err := signer.SignHTTP(ctx, creds, req, "UNSIGNED-PAYLOAD", "s3", "us-east-1", time.Now().UTC()); err != nil {
								failed.Add(1)
								continue
							}
						}
						resp, err := hc.Do(req)
						if err != nil {
							failed.Add(1)
							continue
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							failed.Add(1)
						}
					}
				})
			}
			for _, k := range keys {
				ch <- k
			}
			close(ch)
			wg.Wait()
			wall, client, server := time.Since(start), selfCPU()-c0, serverCPU()-s0
			if n := failed.Load(); n > 0 {
				t.Fatalf("%s: %d of %d GETs failed", v.name, n, len(keys))
			}
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(len(keys)) }
			t.Logf("round %d, %s: %d GETs, per GET: wall %.0f µs, server CPU %.0f µs, client CPU %.0f µs",
				r, v.name, len(keys), per(wall), per(server), per(client))
			hc.CloseIdleConnections()
		}
	}
}

// nginxPids are the master and workers of the nginx started with prefix.
func nginxPids(prefix string) []int {
	// nginx rewrites its command line ("nginx: master process ... -p PREFIX ...").
	master := procsMatching(func(p procInfo) bool {
		return filepath.Base(p.exe) == "nginx" && strings.Contains(strings.Join(p.args, " "), "master process") &&
			strings.Contains(strings.Join(p.args, " "), prefix)
	})
	if len(master) != 1 {
		return master
	}
	return append(master, procsMatching(func(p procInfo) bool {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/stat")
		if err != nil {
			return false
		}
		s := string(data)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		return len(f) > 1 && f[1] == strconv.Itoa(master[0])
	})...)
}

// selfCPU is this process's user+system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
