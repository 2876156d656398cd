package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readOneFile checks that a file reads through the mount as it reads in the origin.
func readOneFile(t testing.TB, mnt, originStore, key string) {
	t.Helper()
	want, err := os.ReadFile(filepath.Join(originStore, filepath.FromSlash(key)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(mnt, filepath.FromSlash(key)))
	if err != nil {
		t.Fatalf("read %s through the mount: %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes through the mount differ from the origin's %d", key, len(got), len(want))
	}
}

// TestBackgroundMount: `zarrfs mount` without --foreground returns 0 once the mount is live and
// leaves a daemon serving it; `zarrfs unmount` removes the mount and the daemon exits.
func TestBackgroundMount(t *testing.T) {
	fuseReady.require(t)
	fixturesReady.require(t)
	serve := filepath.Join(fixturesDir, "zarrita", "v2")
	o := newOrigin(t, serve)
	mnt := newMountpoint(t)
	cleanupDaemons(t, mnt)

	out, code := runCmd(t, time.Minute, nil, zarrfsBin, append(append([]string{"mount"}, defaultMountArgs(t, nil)...), o.URL("data.zarr"), mnt)...)
	if code != 0 {
		t.Fatalf("zarrfs mount: exit %d, want 0:\n%s", code, out)
	}
	// "returns once the mount is live": no waiting here.
	if !isFuseMount(mnt) {
		t.Fatalf("zarrfs mount returned 0 but %s is not a FUSE mount yet:\n%s", mnt, out)
	}
	pids := daemonPids(mnt)
	if len(pids) != 1 {
		t.Errorf("want one daemon serving %s, found pids %v", mnt, pids)
	}
	readOneFile(t, mnt, filepath.Join(serve, "data.zarr"), "3d.chunked.i2/1.2.0")

	out, code = runCmd(t, time.Minute, nil, zarrfsBin, "unmount", mnt)
	if code != 0 {
		t.Fatalf("zarrfs unmount: exit %d, want 0:\n%s", code, out)
	}
	if isFuseMount(mnt) {
		t.Fatalf("%s still mounted after zarrfs unmount", mnt)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for processAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if processAlive(pid) {
			t.Errorf("daemon pid %d still running 10s after unmount", pid)
		}
	}
}

// TestUnmountBusy: unmounting while a process has its working directory inside the mount
// fails, names that process, and leaves the mount working; once it is gone, unmount succeeds
// and the foreground daemon exits 0.
func TestUnmountBusy(t *testing.T) {
	fixturesReady.require(t)
	serve := filepath.Join(fixturesDir, "zarrita", "v2")
	m := mount(t, newOrigin(t, serve).URL("data.zarr"))

	sleeper := exec.Command("sleep", "60")
	sleeper.Dir = m.path("2d.chunked.i2")
	if err := sleeper.Start(); err != nil {
		t.Fatalf("start sleep in the mount: %v", err)
	}
	sleepDone := make(chan struct{})
	go func() { _ = sleeper.Wait(); close(sleepDone) }()
	stopSleeper := func() {
		_ = sleeper.Process.Kill()
		select {
		case <-sleepDone:
		case <-time.After(10 * time.Second):
			t.Errorf("sleep pid %d did not exit after SIGKILL", sleeper.Process.Pid)
		}
	}
	t.Cleanup(stopSleeper)
	// The child's cwd is set between fork and exec; wait until /proc shows it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		cwd, _ := os.Readlink("/proc/" + strconv.Itoa(sleeper.Process.Pid) + "/cwd")
		if strings.HasPrefix(cwd, m.Dir) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sleep's cwd is %q, not inside %s", cwd, m.Dir)
		}
		time.Sleep(20 * time.Millisecond)
	}

	out, code := runCmd(t, time.Minute, nil, zarrfsBin, "unmount", m.Dir)
	if code != 1 {
		t.Errorf("zarrfs unmount of a busy mount: exit %d, want 1:\n%s", code, out)
	}
	pid := strconv.Itoa(sleeper.Process.Pid)
	if line := zarrfsLine(out, pid, "sleep"); line == "" {
		t.Errorf("no line %q naming pid %s and %q:\n%s", "zarrfs: ...", pid, "sleep", out)
	}
	if !isFuseMount(m.Dir) {
		t.Fatalf("a failed unmount removed the mount")
	}
	readOneFile(t, m.Dir, filepath.Join(serve, "data.zarr"), "2d.chunked.i2/0.1")

	stopSleeper()
	out, code = runCmd(t, time.Minute, nil, zarrfsBin, "unmount", m.Dir)
	if code != 0 {
		t.Fatalf("zarrfs unmount after the holder exited: exit %d:\n%s", code, out)
	}
	if isFuseMount(m.Dir) {
		t.Fatalf("%s still mounted after zarrfs unmount", m.Dir)
	}
	if !m.waitExit(30 * time.Second) {
		t.Fatalf("foreground zarrfs still running 30s after its mount was removed")
	}
	if code := m.exitCode(); code != 0 {
		t.Errorf("foreground zarrfs exit status %d after unmount, want 0", code)
	}
}

// TestSignalUnmounts: SIGTERM or SIGINT to a foreground mount unmounts it and exits 0.
func TestSignalUnmounts(t *testing.T) {
	fixturesReady.require(t)
	serve := filepath.Join(fixturesDir, "zarrita", "v2")
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			m := mount(t, newOrigin(t, serve).URL("data.zarr"))
			readOneFile(t, m.Dir, filepath.Join(serve, "data.zarr"), "1d.contiguous.i4/0")
			if err := m.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if !m.waitExit(30 * time.Second) {
				t.Fatalf("still running 30s after %v", sig)
			}
			if code := m.exitCode(); code != 0 {
				t.Errorf("exit status %d after %v, want 0", code, sig)
			}
			if isFuseMount(m.Dir) {
				t.Errorf("%s still listed in /proc/self/mountinfo after %v", m.Dir, sig)
			}
		})
	}
}
