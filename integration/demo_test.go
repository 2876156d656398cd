package integration

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// demoScript runs inside a private mount namespace: /usr and /var become overlays whose
// changes land in $OV, python3-zarr is removed there (the machine's own stays installed), and
// docs/demo.sh runs from the repository root as a new user would, so it must notice that
// zarr-python is missing and install it.
const demoScript = `set -euo pipefail
for d in usr var; do
	mkdir -p "$OV/$d-up" "$OV/$d-work"
	mount -t overlay overlay -o "lowerdir=/$d,upperdir=$OV/$d-up,workdir=$OV/$d-work" "/$d"
done
if dpkg -s python3-zarr >/dev/null 2>&1; then
	dpkg -r --force-depends python3-zarr >/dev/null
fi
if /usr/bin/python3 -I -c 'import zarr' 2>/dev/null; then
	echo "zarr-python is still importable after removing python3-zarr" >&2
	exit 3
fi
echo "demo-test: python3-zarr is not installed"
cd "$REPO"
bash docs/demo.sh
`

// TestDemoOnAMachineWithoutZarrPython: `sudo bash docs/demo.sh`, the README's first command,
// works where python3-zarr is not installed yet, run from the repository root (where a plain
// `python3 -c 'import zarr'` finds the Go package directory zarr/ and passes). The machine is
// left untouched: the removal and the reinstall happen in overlays of a private mount
// namespace. Needs root, unshare(1), overlayfs and Debian's package mirror.
func TestDemoOnAMachineWithoutZarrPython(t *testing.T) {
	fuseReady.require(t)
	if os.Geteuid() != 0 {
		missing(t, "root (the demo installs Debian packages)")
	}
	for _, tool := range []string{"unshare", "dpkg", "apt-get", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing(t, "%s not on PATH", tool)
		}
	}
	tmp := t.TempDir()
	demoDir := filepath.Join(tmp, "demo")
	// Whatever happens, end the demo's processes (its background daemon would keep the
	// private namespace, and its mount, alive).
	t.Cleanup(func() { killExe(t, filepath.Join(demoDir, "bin", "zarrfs")) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "bash", "-c", demoScript)
	cmd.Env = append(os.Environ(), "OV="+filepath.Join(tmp, "overlay"), "REPO="+repoRoot(t),
		"ZARRFS_DEMO_DIR="+demoDir, "ZARRFS_DEMO_PORT="+strconv.Itoa(port), "DEBIAN_FRONTEND=noninteractive")
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("docs/demo.sh in a namespace without python3-zarr (%.0fs):\n%s", time.Since(start).Seconds(), out)
	if ctx.Err() != nil {
		t.Fatalf("killed after 10 minutes")
	}
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 32 {
		missing(t, "cannot mount an overlay in a private mount namespace here")
	}
	if err != nil {
		t.Fatalf("docs/demo.sh failed: %v", err)
	}
	for _, want := range []string{"demo-test: python3-zarr is not installed", "== installing python3-zarr", "identical to the origin", "demo finished"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the demo's output lacks %q", want)
		}
	}
}

// killExe ends every process running the executable at path.
func killExe(t *testing.T, path string) {
	for _, pid := range procsMatching(func(p procInfo) bool { return p.exe == path }) {
		t.Logf("ending leftover %s (pid %d)", path, pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
