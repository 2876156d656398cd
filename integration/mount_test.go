package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/fusefs"
	"github.com/zarrfs/zarrfs/internal/testutil"
)

// mountWait bounds how long a mount may take to appear.
const mountWait = 30 * time.Second

// zarrfsProc is one run of the zarrfs binary. Its t.Cleanup unmounts mnt (if mounted), ends the
// process with bounded waits, and dumps its output if the test failed.
type zarrfsProc struct {
	mnt     string
	cmd     *exec.Cmd
	out     *testutil.SyncBuffer
	done    chan struct{} // closed when the process has exited
	exitErr error         // valid after done
}

// startZarrfs starts `zarrfs args...` with env (nil: inherit). mnt is the mount point the run
// may create, which cleanup removes; "" if none.
func startZarrfs(t testing.TB, env []string, mnt string, args ...string) *zarrfsProc {
	t.Helper()
	p := &zarrfsProc{mnt: mnt, out: &testutil.SyncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(zarrfsBin, args...)
	if env != nil {
		p.cmd.Env = env
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start zarrfs: %v", err)
	}
	go func() {
		p.exitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.cleanup(t) })
	return p
}

func (p *zarrfsProc) output() string { return p.out.String() }

func (p *zarrfsProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode is the exit status once exited (-1 if killed by a signal).
func (p *zarrfsProc) exitCode() int {
	<-p.done
	if p.exitErr == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(p.exitErr, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// waitExit waits up to d for the process to exit.
func (p *zarrfsProc) waitExit(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// exitAfterUnmount waits up to d for p to exit after its mount is gone; if it does not, it
// asks the daemon for its goroutines (SIGQUIT: the Go runtime prints them to the output the
// test shows) and fails t with what holds the mount.
func (p *zarrfsProc) exitAfterUnmount(t testing.TB, d time.Duration) {
	t.Helper()
	if p.waitExit(d) {
		return
	}
	users := mountUsers(p.mnt)
	_ = p.cmd.Process.Signal(syscall.SIGQUIT)
	p.waitExit(5 * time.Second)
	t.Fatalf("zarrfs (pid %d) did not exit within %v of the unmount of %s (still mounted: %v; users: %v); its goroutines are in its output", p.cmd.Process.Pid, d, p.mnt, isFuseMount(p.mnt), users)
}

// waitMounted waits (bounded) until p.mnt is a FUSE mount, or fails the test if the process
// exits or the bound passes first.
func (p *zarrfsProc) waitMounted(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(mountWait)
	for {
		if isFuseMount(p.mnt) {
			return
		}
		if p.exited() {
			t.Fatalf("zarrfs exited (%v) before %s was mounted (its output follows)", p.exitErr, p.mnt)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted within %v (zarrfs output follows)", p.mnt, mountWait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *zarrfsProc) cleanup(t testing.TB) {
	if p.mnt != "" {
		unmountBounded(t, p.mnt)
	}
	// After an unmount the daemon exits by itself; otherwise signal it.
	if !p.waitExit(10 * time.Second) {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		if !p.waitExit(5 * time.Second) {
			_ = p.cmd.Process.Kill()
			if !p.waitExit(5 * time.Second) {
				t.Errorf("zarrfs pid %d did not exit even after SIGKILL", p.cmd.Process.Pid)
			}
		}
		if p.mnt != "" {
			unmountBounded(t, p.mnt)
		}
	}
	out := p.output()
	if strings.Contains(out, "WARNING: DATA RACE") {
		t.Errorf("the race detector found a data race in zarrfs:\n%s", out)
	} else if t.Failed() {
		t.Logf("zarrfs %s output:\n%s", strings.Join(p.cmd.Args[1:], " "), out)
	}
}

// unmountBounded removes a mount at mnt if there is one: fusermount3 -u, then -uz (lazy).
func unmountBounded(t testing.TB, mnt string) {
	for _, flag := range []string{"-u", "-uz"} {
		if !isFuseMount(mnt) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cmd := exec.CommandContext(ctx, "fusermount3", flag, mnt)
		cmd.WaitDelay = 2 * time.Second
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil && flag == "-u" {
			// Busy: name who holds it, so that a daemon that then outlives its lazy
			// unmount can be explained.
			if users := mountUsers(mnt); len(users) > 0 {
				t.Logf("fusermount3 -u %s: %v: %s; in use by: %s", mnt, err, bytes.TrimSpace(out), strings.Join(users, "; "))
			}
		}
		if err != nil && flag == "-uz" {
			t.Errorf("fusermount3 %s %s: %v: %s", flag, mnt, err, out)
		}
	}
	if isFuseMount(mnt) {
		t.Errorf("%s is still mounted after fusermount3 -uz", mnt)
	}
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	Point, FSType, Source string
}

func mountinfo() []mountEntry {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		left, right, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		lf, rf := strings.Fields(left), strings.Fields(right)
		if len(lf) < 5 || len(rf) < 2 {
			continue
		}
		out = append(out, mountEntry{Point: fusefs.UnescapeMountinfo(lf[4]), FSType: rf[0], Source: fusefs.UnescapeMountinfo(rf[1])})
	}
	return out
}

func isFuseMount(mnt string) bool {
	for _, e := range mountinfo() {
		if e.Point == mnt && (e.FSType == "fuse" || strings.HasPrefix(e.FSType, "fuse.")) {
			return true
		}
	}
	return false
}

// newMountpoint is an empty directory for a mount, made before the mount's cleanup is
// registered so that the cleanup (unmount) runs before the directory is removed.
func newMountpoint(t testing.TB) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	return mnt
}

// mounted is a live foreground mount.
type mounted struct {
	*zarrfsProc
	Dir string
}

// path is the mount path of a slash-separated store key.
func (m *mounted) path(key string) string { return filepath.Join(m.Dir, filepath.FromSlash(key)) }

// mount runs `zarrfs mount --foreground --cache-dir <tmp> args... url MNT` and returns once
// MNT is a FUSE mount; everything is undone when the test ends.
func mount(t testing.TB, url string, args ...string) *mounted {
	t.Helper()
	return mountEnv(t, nil, url, args...)
}

func mountEnv(t testing.TB, env []string, url string, args ...string) *mounted {
	t.Helper()
	fuseReady.require(t)
	mnt := newMountpoint(t)
	full := append([]string{"mount", "--foreground"}, defaultMountArgs(t, args)...)
	full = append(full, url, mnt)
	p := startZarrfs(t, env, mnt, full...)
	p.waitMounted(t)
	return &mounted{zarrfsProc: p, Dir: mnt}
}

// defaultMountArgs adds a private cache dir and the log level unless args set them.
func defaultMountArgs(t testing.TB, args []string) []string {
	joined := " " + strings.Join(args, " ")
	out := append([]string(nil), args...)
	if !strings.Contains(joined, " --cache-dir") {
		out = append(out, "--cache-dir", filepath.Join(t.TempDir(), "cache"))
	}
	if !strings.Contains(joined, " --log-level") {
		level := os.Getenv("ZARRFS_TEST_LOG_LEVEL")
		if level == "" {
			level = "info"
		}
		out = append(out, "--log-level", level)
	}
	return out
}

// daemonPids finds zarrfs processes (of the binary under test) whose arguments name mnt: the
// detached daemons a background mount leaves behind.
func daemonPids(mnt string) []int {
	return procsMatching(func(p procInfo) bool {
		return len(p.args) > 0 && p.args[0] == zarrfsBin && argsName(p.args[1:], mnt)
	})
}

// cleanupDaemons registers a cleanup that unmounts mnt and ends any daemon serving it.
func cleanupDaemons(t testing.TB, mnt string) {
	t.Cleanup(func() {
		unmountBounded(t, mnt)
		deadline := time.Now().Add(10 * time.Second)
		for _, pid := range daemonPids(mnt) {
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

func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// state is the field after the parenthesised command name; Z (zombie) is not alive.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// zarrfsLine returns the stderr line "zarrfs: ..." that contains every one of want, or "".
func zarrfsLine(out string, want ...string) string {
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "zarrfs: ") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			return line
		}
	}
	return ""
}
