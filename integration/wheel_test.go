package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests check what notebook users get: the wheels `go run ./cmd/release` builds, pip
// installed into a fresh venv, driven through zarrfs's Python API; and the Python package's
// own unit tests.

// releaseWait bounds `go run ./cmd/release` (two cross-builds of zarrfs, cold cache on CI).
const releaseWait = 10 * time.Minute

var venvReady = &prerequisite{check: func() error {
	dir, err := os.MkdirTemp("", "zarrfs-venv-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := runQuiet(2*time.Minute, pythonBin, "-m", "venv", "--without-pip", filepath.Join(dir, "v")); err != nil {
		return fmt.Errorf("%w: apt-get install python3-venv", err)
	}
	return runQuiet(time.Minute, pythonBin, "-c", "import ensurepip")
}}

// runIn runs name args in dir with env added, bounded by timeout, and returns its combined
// output; it fails the test if the command fails.
func runIn(t *testing.T, timeout time.Duration, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("killed after %v", timeout)
	}
	if err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
	t.Logf("%s %s: %.1fs", filepath.Base(name), strings.Join(args, " "), time.Since(start).Seconds())
	return string(out)
}

// repoRoot is the repository (the integration tests run in integration/).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// killDaemonsOf registers a cleanup that unmounts mnt and ends the processes running exe
// whose arguments name mnt (the daemons a background mount through the Python API leaves).
func killDaemonsOf(t *testing.T, exe, mnt string) {
	t.Cleanup(func() {
		unmountBounded(t, mnt)
		deadline := time.Now().Add(10 * time.Second)
		pids := procsMatching(func(p procInfo) bool {
			return p.exe == exe && len(p.args) > 0 && argsName(p.args[1:], mnt)
		})
		for _, pid := range pids {
			for processAlive(pid) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if processAlive(pid) {
				t.Errorf("daemon pid %d still running 10s after unmount of %s; killing it", pid, mnt)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}

var wheelRE = regexp.MustCompile(`(?:^|/)zarrfs-([^/\s]+)-py3-none-manylinux_2_17_(x86_64|aarch64)\.whl$`)

// TestWheelInVenv: the x86_64 wheel built by `go run ./cmd/release` installs with pip into a
// fresh venv (offline), puts a working `zarrfs` on the venv's PATH, and through the Python API
// mounts a store served by `zarrfs serve`, reads it with zarr-python, reads stats() and
// unmounts. `go run ./cmd/release --check` passes on everything built (the aarch64 wheel's
// binary included: ELF machine, static linking, RECORD hashes).
func TestWheelInVenv(t *testing.T) {
	t.Parallel() // see parallelTests in main_test.go
	fixturesReady.require(t)
	fuseReady.require(t)
	pythonReady.require(t)
	venvReady.require(t)
	if _, err := exec.LookPath("go"); err != nil {
		missing(t, "go not on PATH (needed for go run ./cmd/release)")
	}
	root := repoRoot(t)
	tmp := t.TempDir()
	dist := filepath.Join(tmp, "dist")
	out := runIn(t, releaseWait, root, nil, "go", "run", "./cmd/release", dist)
	runIn(t, 2*time.Minute, root, nil, "go", "run", "./cmd/release", "--check", dist)
	var wheel, version string
	machines := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if m := wheelRE.FindStringSubmatch(line); m != nil {
			machines[m[2]] = true
			if m[2] == "x86_64" {
				wheel, version = line, m[1]
			}
		}
	}
	if !machines["x86_64"] || !machines["aarch64"] {
		t.Fatalf("go run ./cmd/release did not print both wheels:\n%s", out)
	}
	for _, name := range []string{"SHA256SUMS", "zarrfs-" + version + "-linux-amd64.tar.gz", "zarrfs-" + version + "-linux-arm64.tar.gz"} {
		if _, err := os.Stat(filepath.Join(dist, name)); err != nil {
			t.Errorf("release artifact: %v", err)
		}
	}

	venv := filepath.Join(tmp, "venv")
	runIn(t, 3*time.Minute, tmp, nil, pythonBin, "-m", "venv", "--system-site-packages", venv)
	pipEnv := []string{"PIP_DISABLE_PIP_VERSION_CHECK=1", "PIP_NO_INPUT=1", "PYTHONDONTWRITEBYTECODE=1"}
	runIn(t, 3*time.Minute, tmp, pipEnv, filepath.Join(venv, "bin", "pip"), "install", "--no-index", "--no-cache-dir", wheel)
	exe := filepath.Join(venv, "bin", "zarrfs")
	if st, err := os.Stat(exe); err != nil || st.Mode().Perm()&0o111 == 0 {
		t.Fatalf("pip install did not put an executable zarrfs in the venv's bin: %v %v", st, err)
	}
	if got := runIn(t, time.Minute, tmp, nil, exe, "version"); !strings.HasPrefix(got, "zarrfs "+version+" ") {
		t.Errorf("zarrfs version from the venv: %q, want the release version %s", got, version)
	}
	if got := runIn(t, time.Minute, tmp, nil, filepath.Join(venv, "bin", "python"), "-m", "zarrfs", "version"); !strings.HasPrefix(got, "zarrfs "+version+" ") {
		t.Errorf("python -m zarrfs version: %q", got)
	}
	// On the venv's PATH, as `source venv/bin/activate` (or a notebook kernel) has it.
	pathEnv := []string{"PATH=" + filepath.Join(venv, "bin") + ":" + os.Getenv("PATH")}
	if got := runIn(t, time.Minute, tmp, pathEnv, "sh", "-c", "command -v zarrfs"); strings.TrimSpace(got) != exe {
		t.Errorf("command -v zarrfs in the venv = %q, want %s", got, exe)
	}
	showOut := runIn(t, time.Minute, tmp, pipEnv, filepath.Join(venv, "bin", "pip"), "show", "-f", "zarrfs")
	for _, want := range []string{"Name: zarrfs", "Version: " + version, "zarrfs/__init__.py", "zarrfs/__main__.py", "zarrfs/torch.py"} {
		if !strings.Contains(showOut, want) {
			t.Errorf("pip show -f zarrfs lacks %q:\n%s", want, showOut)
		}
	}

	serveDir := filepath.Join(fixturesDir, "zarrita", "v2")
	s := startServe(t, serveDir, "")
	if s.pin == "" || s.token == "" {
		t.Fatalf("the banner lacks the pin or the token:\n%s", s.output())
	}
	mnt := newMountpoint(t)
	killDaemonsOf(t, exe, mnt)
	script, err := filepath.Abs(filepath.Join("py", "wheel_api.py"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(venv, "bin", "python"), script, s.storeURL(t, "data"),
		filepath.Join(serveDir, "data.zarr"), mnt, filepath.Join(tmp, "cache"), s.pin, tokenFile(t, s.token))
	cmd.Dir = tmp // not the repository root, where `import zarr` would find the Go package
	cmd.Env = append(envWithout("ZARRFS_TOKEN"), "PYTHONDONTWRITEBYTECODE=1")
	cmd.WaitDelay = 5 * time.Second
	res, err := cmd.CombinedOutput()
	t.Logf("wheel_api.py:\n%s", res)
	if err != nil {
		t.Fatalf("wheel_api.py through the venv's zarrfs: %v", err)
	}
	var sum struct {
		Binary   string `json:"binary"`
		Version  string `json:"version"`
		Arrays   int    `json:"arrays"`
		Compared int    `json:"compared"`
		Problems int    `json:"problems"`
	}
	lines := strings.Split(strings.TrimSpace(string(res)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil {
		t.Fatalf("no JSON summary: %v", err)
	}
	if sum.Binary != exe || sum.Version != version || sum.Problems != 0 || sum.Compared == 0 {
		t.Errorf("summary %+v; want binary %s, version %s, no problems", sum, exe, version)
	}
	if isFuseMount(mnt) {
		t.Errorf("%s is still mounted after the Python API's with block", mnt)
	}
}

// TestPythonUnitTests runs python/tests (a fake zarrfs on PATH; a real DataLoader with
// num_workers 0 and 2) with Debian's python, from outside the repository root.
func TestPythonUnitTests(t *testing.T) {
	if err := runQuiet(time.Minute, pythonBin, "-c", "import json, unittest"); err != nil {
		missing(t, "python3: %v", err)
	}
	torchReady.require(t)
	tests := filepath.Join(repoRoot(t), "python", "tests")
	out := runIn(t, 5*time.Minute, t.TempDir(), []string{"PYTHONDONTWRITEBYTECODE=1"},
		pythonBin, "-m", "unittest", "discover", "-v", "-s", tests, "-t", tests)
	t.Logf("%s", out)
	if strings.Contains(out, "skipped") {
		t.Errorf("some Python tests were skipped")
	}
}
