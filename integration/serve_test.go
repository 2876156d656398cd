package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests run the storage side for real: `zarrfs serve` with its generated TLS certificate
// and token, and `zarrfs mount --pin … --token-file …` reading through it with real clients.

// serveWait bounds how long `zarrfs serve` may take to print its banner.
const serveWait = 30 * time.Second

// servedStores is a running `zarrfs serve` and what it printed.
type servedStores struct {
	*zarrfsProc
	stateDir string
	pin      string            // "sha256:…" from the printed mount command, "" if none
	token    string            // the generated token, if printed
	urls     map[string]string // mount-point name (era5 for era5.zarr) -> store URL
}

var (
	mountLineRE = regexp.MustCompile(`zarrfs mount (?:--pin (sha256:[0-9a-f]{64}) )?(?:--token-file \S+ )?(https?://\S+) /content/(\S+)`)
	tokenEnvRE  = regexp.MustCompile(`ZARRFS_TOKEN=([A-Za-z0-9_-]+) zarrfs mount`)
)

// startServe runs `zarrfs serve --addr 127.0.0.1:0 --state-dir STATE args... dir` and waits
// for its banner. stateDir "" makes a fresh one.
func startServe(t *testing.T, dir, stateDir string, args ...string) *servedStores {
	t.Helper()
	if buildErr != nil {
		missing(t, "zarrfs binary: %v", buildErr)
	}
	if stateDir == "" {
		stateDir = filepath.Join(t.TempDir(), "state")
	}
	full := append([]string{"serve", "--addr", "127.0.0.1:0", "--state-dir", stateDir}, args...)
	p := startZarrfs(t, nil, "", append(full, dir)...)
	// Registered after startZarrfs, so it runs first: the server never exits by itself.
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	})
	deadline := time.Now().Add(serveWait)
	for !strings.Contains(p.output(), "Serving; stop with Ctrl-C.") {
		if p.exited() {
			t.Fatalf("zarrfs serve exited (%v) before it was ready:\n%s", p.exitErr, p.output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("zarrfs serve not ready within %v:\n%s", serveWait, p.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	s := &servedStores{zarrfsProc: p, stateDir: stateDir, urls: map[string]string{}}
	out := p.output()
	for _, m := range mountLineRE.FindAllStringSubmatch(out, -1) {
		if s.pin == "" {
			s.pin = m[1]
		}
		s.urls[m[3]] = m[2]
	}
	if m := tokenEnvRE.FindStringSubmatch(out); m != nil {
		s.token = m[1]
	}
	return s
}

func (s *servedStores) storeURL(t *testing.T, name string) string {
	t.Helper()
	u, ok := s.urls[name]
	if !ok {
		t.Fatalf("zarrfs serve printed no mount command for %q:\n%s", name, s.output())
	}
	return u
}

// tokenFile writes token to a new file and returns its path.
func tokenFile(t *testing.T, token string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	writeFile(t, p, []byte(token+"\n"))
	return p
}

// TestServeAndMount: what `zarrfs serve` prints is enough to mount, and real clients read the
// stores through the mount exactly as they read the directories on the storage side (v2 with
// consolidated metadata, v2 without it (served listings), v3 with shards).
func TestServeAndMount(t *testing.T) {
	t.Parallel() // see parallelTests in main_test.go
	fixturesReady.require(t)
	fuseReady.require(t)
	tests := []struct {
		name, serve, store, mountName string
		compare                       func(t *testing.T, mnt, direct string) (string, error)
		ready                         *prerequisite
	}{
		{"zarrita-v2", "zarrita/v2", "data.zarr", "data", runCompareV2, pythonReady},
		{"zarr-python-2.13 (no consolidated metadata)", "zarr-python-2.13", "fixture", "fixture", runCompareV2, pythonReady},
		{"zarrita-v3", "zarrita/v3", "data.zarr", "data", runCompareV3, nodeReady},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.ready.require(t)
			serveDir := filepath.Join(fixturesDir, tc.serve)
			s := startServe(t, serveDir, "")
			if s.pin == "" || s.token == "" {
				t.Fatalf("the banner lacks the pin or the token:\n%s", s.output())
			}
			m := mountEnv(t, envWithout("ZARRFS_TOKEN"), s.storeURL(t, tc.mountName), "--pin", s.pin, "--token-file", tokenFile(t, s.token))
			out, err := tc.compare(t, m.Dir, filepath.Join(serveDir, tc.store))
			if err != nil {
				t.Fatalf("compare: %v\n%s", err, out)
			}
			checkMostCompared(t, parseSummary(t, out))
			// Once on its own line and once in the ZARRFS_TOKEN=… command; never in the log.
			if n := strings.Count(s.output(), s.token); n != 2 {
				t.Errorf("the token appears %d times in the server's output, want 2 (the banner only)", n)
			}
		})
	}
}

// TestServeTokenFromEnvironment: the ZARRFS_TOKEN=… form of the printed command works too, and
// a directory that is itself a store is served at the root URL.
func TestServeTokenFromEnvironment(t *testing.T) {
	fixturesReady.require(t)
	fuseReady.require(t)
	store := filepath.Join(fixturesDir, "zarrita", "v2", "data.zarr")
	s := startServe(t, store, "")
	u := s.storeURL(t, "data")
	if !strings.HasSuffix(u, "/") {
		t.Errorf("a store served as DIR should be at the root URL, got %s", u)
	}
	m := mountEnv(t, append(envWithout("ZARRFS_TOKEN"), "ZARRFS_TOKEN="+s.token), u, "--pin", s.pin)
	for _, key := range []string{".zmetadata", "2d.chunked.i2/.zarray", "2d.chunked.i2/1.0", "my group with spaces/.zgroup"} {
		want, err := os.ReadFile(filepath.Join(store, filepath.FromSlash(key)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(m.path(key))
		if err != nil || string(got) != string(want) {
			t.Errorf("%s through the mount: %d bytes, %v; want %d bytes", key, len(got), err, len(want))
		}
	}
}

// TestServeMountFailures: a wrong pin and a wrong token each fail the mount with one line that
// names the problem and the fix.
func TestServeMountFailures(t *testing.T) {
	fixturesReady.require(t)
	fuseReady.require(t)
	serveDir := filepath.Join(fixturesDir, "zarrita", "v2")
	s := startServe(t, serveDir, "")
	url := s.storeURL(t, "data")
	otherPin := "sha256:" + strings.Repeat("0", 64)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"wrong pin", []string{"--pin", otherPin, "--token-file", tokenFile(t, s.token)}, []string{"--pin", s.pin, otherPin}},
		{"wrong token", []string{"--pin", s.pin, "--token-file", tokenFile(t, "not-the-token-0123456789")}, []string{"401", "token"}},
		{"no token", []string{"--pin", s.pin}, []string{"401", "token"}},
		{"no pin", []string{"--token-file", tokenFile(t, s.token)}, []string{"TLS"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mnt := newMountpoint(t)
			full := append([]string{"mount", "--foreground"}, defaultMountArgs(t, append(tc.args, retryArgs...))...)
			p := startZarrfs(t, envWithout("ZARRFS_TOKEN"), mnt, append(full, url, mnt)...)
			deadline := time.Now().Add(failWait)
			for !p.exited() && !isFuseMount(mnt) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if isFuseMount(mnt) {
				t.Fatalf("mounted, but should have failed with %q", tc.want)
			}
			if code := p.exitCode(); code != 1 {
				t.Errorf("exit status %d, want 1", code)
			}
			if line := zarrfsLine(p.output(), tc.want...); line == "" {
				t.Errorf("no stderr line starting %q containing %q:\n%s", "zarrfs: ", tc.want, p.output())
			} else {
				t.Logf("%s", line)
			}
		})
	}
}

// TestServeRestart: a restart with the same state directory keeps the certificate (the same
// pin) and the token, and does not print the token again; SIGTERM stops it cleanly.
func TestServeRestart(t *testing.T) {
	fixturesReady.require(t)
	serveDir := filepath.Join(fixturesDir, "zarrita", "v2")
	first := startServe(t, serveDir, "")
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !first.waitExit(30 * time.Second) {
		t.Fatal("zarrfs serve still running 30s after SIGTERM")
	}
	if code := first.exitCode(); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	second := startServe(t, serveDir, first.stateDir)
	switch {
	case second.pin != first.pin:
		t.Errorf("pin changed across a restart: %s then %s", first.pin, second.pin)
	case strings.Contains(second.output(), first.token):
		t.Errorf("the token was printed again on restart")
	case !strings.Contains(second.output(), filepath.Join(first.stateDir, "token")):
		t.Errorf("the restart does not say where the token is:\n%s", second.output())
	}
}

// TestServeRefusesToPublishSecrets: a state directory or token file inside the served
// directory would publish the key or the token; serve refuses to start.
func TestServeRefusesToPublishSecrets(t *testing.T) {
	if buildErr != nil {
		missing(t, "zarrfs binary: %v", buildErr)
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "s.zarr"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "s.zarr", ".zgroup"), []byte(`{"zarr_format": 2}`))
	inside := filepath.Join(dir, "tokens")
	writeFile(t, inside, []byte("a-token-that-is-long-enough\n"))
	for name, args := range map[string][]string{
		"state dir inside":  {"--state-dir", filepath.Join(dir, "state")},
		"token file inside": {"--token-file", inside, "--insecure-http"},
	} {
		t.Run(name, func(t *testing.T) {
			p := startZarrfs(t, nil, "", append(append([]string{"serve", "--addr", "127.0.0.1:0"}, args...), dir)...)
			if !p.waitExit(serveWait) {
				_ = p.cmd.Process.Signal(syscall.SIGTERM)
				t.Fatalf("zarrfs serve started with a secret inside the served directory")
			}
			if code := p.exitCode(); code != 1 || zarrfsLine(p.output(), "inside the served directory") == "" {
				t.Errorf("exit %d, output:\n%s", code, p.output())
			}
		})
	}
}
