package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// scriptTimeout bounds one client script run.
const scriptTimeout = 5 * time.Minute

// runScript runs a client script and returns its stdout+stderr and an error if it failed.
func runScript(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	out := stdout.String() + stderr.String()
	if ctx.Err() != nil {
		err = fmt.Errorf("killed after %v", scriptTimeout)
	}
	t.Logf("%s %s: %.1fs, %s", filepath.Base(name), filepath.Base(args[0]), time.Since(start).Seconds(), strings.TrimSpace(stdout.String()))
	return out, err
}

func runCompareV2(t *testing.T, mnt, direct string) (string, error) {
	return runScript(t, pythonBin, "py/compare_v2.py", mnt, direct)
}

func runCompareV3(t *testing.T, mnt, direct string) (string, error) {
	return runScript(t, "node", "js/compare_v3.mjs", mnt, direct)
}

// scriptSummary is the JSON line the compare scripts print last on stdout.
type scriptSummary struct {
	Arrays     int `json:"arrays"`
	Compared   int `json:"compared"`
	BothFailed int `json:"both_failed"`
	Problems   int `json:"problems"`
}

func parseSummary(t testing.TB, out string) scriptSummary {
	t.Helper()
	var s scriptSummary
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &s) == nil {
			return s
		}
	}
	t.Fatalf("no JSON summary in the script's output:\n%s", out)
	return s
}

// checkMostCompared fails t unless most arrays were really read and compared.
func checkMostCompared(t testing.TB, s scriptSummary) {
	t.Helper()
	t.Logf("arrays: %d, compared for real: %d, unreadable both ways: %d", s.Arrays, s.Compared, s.BothFailed)
	if s.Arrays == 0 || s.Compared*5 < s.Arrays*4 {
		t.Errorf("only %d of %d arrays were compared; want at least 80%%", s.Compared, s.Arrays)
	}
}

// TestZarrPythonReadsV2: Debian's zarr-python 2.13 reads every v2 array through the mount
// exactly as it reads the origin directory.
func TestZarrPythonReadsV2(t *testing.T) {
	t.Parallel() // see parallelTests in main_test.go
	fixturesReady.require(t)
	tests := []struct{ name, serve, store, server string }{
		{"zarr-python-2.13/go", "zarr-python-2.13", "fixture", "go"},
		{"zarrita-v2/go", "zarrita/v2", "data.zarr", "go"},
		{"zarr-python-2.13/nginx", "zarr-python-2.13", "fixture", "nginx"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pythonReady.require(t)
			serveDir := filepath.Join(fixturesDir, tc.serve)
			m := mount(t, serverURL(t, tc.server, serveDir, tc.store))
			out, err := runCompareV2(t, m.Dir, filepath.Join(serveDir, tc.store))
			if err != nil {
				t.Fatalf("compare_v2.py: %v\n%s", err, out)
			}
			checkMostCompared(t, parseSummary(t, out))
		})
	}
}

// TestZarritaReadsV3: zarrita.js with @zarrita/storage's FileSystemStore reads every v3 array
// (sharded ones included) through the mount exactly as it reads the origin directory.
func TestZarritaReadsV3(t *testing.T) {
	fixturesReady.require(t)
	for _, server := range []string{"go", "nginx"} {
		t.Run("zarrita-v3/"+server, func(t *testing.T) {
			nodeReady.require(t)
			serveDir := filepath.Join(fixturesDir, "zarrita", "v3")
			m := mount(t, serverURL(t, server, serveDir, "data.zarr"))
			out, err := runCompareV3(t, m.Dir, filepath.Join(serveDir, "data.zarr"))
			if err != nil {
				t.Fatalf("compare_v3.mjs: %v\n%s", err, out)
			}
			checkMostCompared(t, parseSummary(t, out))
		})
	}
}

// serverURL starts the named origin ("go" or "nginx") over serveDir and returns store's URL.
func serverURL(t testing.TB, server, serveDir, store string) string {
	t.Helper()
	if server == "nginx" {
		return newNginx(t, serveDir).URL(store)
	}
	return newOrigin(t, serveDir).URL(store)
}

// TestTrainingClients: stores written by zarr-python 2.13 / xarray read through the mount by
// xarray.open_zarr and by a PyTorch DataLoader (4 workers, shuffled, seeded) give the same
// data as reading them directly.
func TestTrainingClients(t *testing.T) {
	pythonReady.require(t)
	fuseReady.require(t)
	data := t.TempDir()
	if out, err := runScript(t, pythonBin, "py/gen_ml.py", data); err != nil {
		t.Fatalf("gen_ml.py: %v\n%s", err, out)
	}
	o := newOrigin(t, data)
	tests := []struct {
		kind, store string
		ready       *prerequisite
	}{
		{"climate", "climate.zarr", pythonReady},
		{"images", "images.zarr", torchReady},
	}
	for _, tc := range tests {
		t.Run(tc.kind, func(t *testing.T) {
			tc.ready.require(t)
			m := mount(t, o.URL(tc.store))
			out, err := runScript(t, pythonBin, "py/check_ml.py", tc.kind, m.Dir, filepath.Join(data, tc.store))
			if err != nil {
				t.Fatalf("check_ml.py %s: %v\n%s", tc.kind, err, out)
			}
			if o.count("GET", "/"+tc.store) == 0 {
				t.Errorf("the origin saw no GET below /%s: the mount did not read from it", tc.store)
			}
		})
	}
}
