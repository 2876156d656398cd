// Package integration holds zarrfs's end-to-end tests: they build the real binary, serve
// stores from a real origin (an in-process net/http server, or nginx), mount them with FUSE
// and read them with unmodified clients (the Go standard library, Debian's zarr-python 2.13
// and xarray, PyTorch's DataLoader, npm's zarrita.js), comparing every answer with reading
// the origin directory directly.
//
// A missing prerequisite (FUSE access, fusermount3, python3 with zarr/xarray/torch, node with
// integration/js/node_modules, nginx, the shared fixtures) skips the tests that need it, except
// under CI=true, where it fails them: CI must never go green by skipping.
package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// parallelTests: the slow tests (a minute or more of outages, kill rounds, load, S3, venvs)
// call t.Parallel(). Each has its own origin, mountpoints, caches and daemons and finds its
// processes by its own mountpoint, so they can overlap; most of their time is waiting
// (outages, retry budgets, process start-up), so .ci/run runs this package with -parallel 4 on
// two cores. Go runs them after all the sequential tests. A test that changes the
// environment (t.Setenv) or the whole machine must stay sequential.

// Paths used throughout; filled in by TestMain.
var (
	zarrfsBin   string // the binary under test, built by TestMain
	buildErr    error  // why it could not be built
	fixturesDir string // ../../shared/fixtures, absolute
	// retryArgs shortens the binary's own retry deadline where the binary has such a flag, so
	// that "origin unreachable" fails in seconds rather than after the default deadline.
	retryArgs []string
)

const pythonBin = "/usr/bin/python3"

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "zarrfs-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	if abs, err := filepath.Abs(filepath.Join("..", "..", "shared", "fixtures")); err == nil {
		fixturesDir = abs
	}
	zarrfsBin = filepath.Join(tmp, "zarrfs")
	start := time.Now()
	if prebuilt := os.Getenv("ZARRFS_TEST_BINARY"); prebuilt != "" {
		// For debugging a binary built elsewhere (say, with extra logging).
		zarrfsBin, buildErr = filepath.Abs(prebuilt)
		if buildErr == nil {
			_, buildErr = os.Stat(zarrfsBin)
		}
	} else {
		buildErr = buildBinary(zarrfsBin)
	}
	if buildErr == nil {
		fmt.Fprintf(os.Stderr, "integration: binary under test %s (race=%v, ready in %.1fs)\n", zarrfsBin, raceEnabled, time.Since(start).Seconds())
		probeFlags()
	} else {
		fmt.Fprintf(os.Stderr, "integration: cannot build the binary: %v\n", buildErr)
	}
	return m.Run()
}

func buildBinary(out string) error {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "../cmd/zarrfs")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goCmd, args...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, buf.String())
	}
	return nil
}

// probeFlags looks at `zarrfs mount --help` for optional flags the tests can use to run faster.
func probeFlags() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, zarrfsBin, "mount", "--help").CombinedOutput()
	if bytes.Contains(out, []byte("--retry-timeout")) {
		retryArgs = []string{"--retry-timeout=3s"}
	}
}

// missing skips t for a missing prerequisite, or fails it under CI=true.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	reason := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing (CI=true, so this fails instead of skipping): %s", reason)
	}
	t.Skipf("prerequisite missing: %s", reason)
}

// prerequisite is a check run at most once per test binary.
type prerequisite struct {
	once  sync.Once
	err   error
	check func() error
}

func (p *prerequisite) require(t testing.TB) {
	t.Helper()
	p.once.Do(func() { p.err = p.check() })
	if p.err != nil {
		missing(t, "%v", p.err)
	}
}

var (
	fuseReady = &prerequisite{check: func() error {
		if buildErr != nil {
			return fmt.Errorf("zarrfs binary: %w", buildErr)
		}
		if err := unix.Access("/dev/fuse", unix.R_OK|unix.W_OK); err != nil {
			return fmt.Errorf("no read/write access to /dev/fuse (%v): run as root or in a container with /dev/fuse", err)
		}
		if _, err := exec.LookPath("fusermount3"); err != nil {
			return errors.New("fusermount3 not on PATH: apt-get install fuse3")
		}
		return nil
	}}
	fixturesReady = &prerequisite{check: func() error {
		for _, p := range []string{"zarr-python-2.13/fixture/.zgroup", "zarrita/v2/data.zarr/.zmetadata", "zarrita/v3/data.zarr/zarr.json"} {
			if _, err := os.Stat(filepath.Join(fixturesDir, p)); err != nil {
				return fmt.Errorf("shared fixtures: %w", err)
			}
		}
		return nil
	}}
	pythonReady = &prerequisite{check: func() error {
		return runQuiet(2*time.Minute, pythonBin, "-c", "import numpy, numcodecs, zarr, xarray, dask")
	}}
	torchReady = &prerequisite{check: func() error {
		return runQuiet(2*time.Minute, pythonBin, "-c", "import torch, torch.utils.data")
	}}
	nodeReady = &prerequisite{check: func() error {
		if err := runQuiet(time.Minute, "node", "--version"); err != nil {
			return err
		}
		for _, p := range []string{"js/node_modules/zarrita/package.json", "js/node_modules/@zarrita/storage/package.json"} {
			if _, err := os.Stat(p); err != nil {
				return fmt.Errorf("%w: run npm ci --prefix integration/js", err)
			}
		}
		return nil
	}}
	nginxReady = &prerequisite{check: func() error {
		if _, err := os.Stat(nginxBin); err != nil {
			return fmt.Errorf("%w: apt-get install nginx-light", err)
		}
		return nil
	}}
)

// runQuiet runs a command and returns an error holding its output if it fails.
func runQuiet(timeout time.Duration, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
