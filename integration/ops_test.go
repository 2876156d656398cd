package integration

// Everyday use (issue 6): mounting from a notebook cell, from /etc/fstab through mount(8)
// and its helper, from a systemd unit; `zarrfs stats` and /metrics; and the one-line
// messages for the common mistakes that errors_test.go does not cover.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/fusefs"
	"golang.org/x/sys/unix"
)

// opsStats is the part of `zarrfs stats --json` these tests read.
type opsStats struct {
	URL         string `json:"url"`
	Mountpoint  string `json:"mountpoint"`
	CacheDir    string `json:"cache_dir"`
	CacheBudget int64  `json:"cache_budget_bytes"`
	PID         int    `json:"pid"`
	Cache       struct {
		Hits, Misses, BytesFromCache, BytesFromNetwork int64
	} `json:"cache"`
	Remote struct {
		Requests      int64 `json:"requests"`
		BytesReceived int64 `json:"bytes_received"`
	} `json:"remote"`
}

func opsStatsJSON(t testing.TB, mnt string) opsStats {
	t.Helper()
	var s opsStats
	statsJSON(t, mnt, &s)
	return s
}

// statsJSON decodes `zarrfs stats --json` of mnt into v, the part a test reads.
func statsJSON(t testing.TB, mnt string, v any) {
	t.Helper()
	out, code := runCmd(t, time.Minute, nil, zarrfsBin, "stats", "--json", mnt)
	if code != 0 {
		t.Fatalf("zarrfs stats --json %s: exit %d:\n%s", mnt, code, out)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("zarrfs stats --json output does not parse: %v\n%s", err, out)
	}
}

// opsFreeAddr is a loopback address where nothing listens (now).
func opsFreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// opsWaitGone waits (bounded) until none of pids runs.
func opsWaitGone(t testing.TB, pids []int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for _, pid := range pids {
		for processAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if processAlive(pid) {
			t.Errorf("daemon pid %d still running 15s after its mount was removed", pid)
		}
	}
}

// opsGatedOrigin serves dir, holding every request for gatedPath until release is called, so a
// test can be sure a read of that file waits for the network (a cache miss) even when the
// prefetcher fetches the store in the background.
func opsGatedOrigin(t testing.TB, dir, gatedPath string) (o *origin, release func()) {
	gate := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	o = newOrigin(t, dir, withStatus(func(r *http.Request) int {
		if r.URL.Path == gatedPath {
			select {
			case <-gate:
			case <-r.Context().Done():
			}
		}
		return 0
	}))
	return o, release
}

// opsReadThroughGate reads key, whose origin request opsGatedOrigin holds, and releases the gate
// once the mount counts the read as a miss: so the read certainly waited for the network.
func opsReadThroughGate(t testing.TB, mnt, originStore, key string, release func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		want, _ := os.ReadFile(filepath.Join(originStore, filepath.FromSlash(key)))
		got, err := os.ReadFile(filepath.Join(mnt, filepath.FromSlash(key)))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("read %s through the mount: %v (%d bytes, want %d)", key, err, len(got), len(want))
		}
	}()
	deadline := time.Now().Add(mountWait)
	for opsStatsJSON(t, mnt).Cache.Misses == 0 {
		if time.Now().After(deadline) {
			release()
			t.Fatalf("a read held at the origin never counted as a cache miss")
		}
		time.Sleep(20 * time.Millisecond)
	}
	release()
	<-done
}

// TestMountHelper: the mount(8) helper forms, called as mount(8) and mount.fuse3 call them,
// map -o options to flags, return once the mount is live, and stay silent on success.
func TestMountHelper(t *testing.T) {
	fuseReady.require(t)
	fixturesReady.require(t)
	serve := filepath.Join(fixturesDir, "zarrita", "v2")
	o := newOrigin(t, serve)
	helperDir := t.TempDir()
	helper := filepath.Join(helperDir, "mount.zarrfs")
	if err := os.Symlink(zarrfsBin, helper); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		bin     string
		options string // -o value; %s is the cache dir
		budget  int64
		other   bool // allow_other given
	}{
		{"mount.zarrfs as mount(8) calls it", helper, "rw,_netdev,nofail,cache_dir=%s,cache_size=64MiB,allow_other,x-systemd.automount", 64 << 20, true},
		{"zarrfs URL MNT -o as mount.fuse3 calls it", zarrfsBin, "ro,dev,suid,cache_dir=%s,cache-size=32MiB,log_level=debug", 32 << 20, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mnt := newMountpoint(t)
			cleanupDaemons(t, mnt)
			cacheDir := filepath.Join(t.TempDir(), "cache")
			cmd := exec.Command(tc.bin, o.URL("data.zarr"), mnt, "-o", fmt.Sprintf(tc.options, cacheDir))
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			cmd.WaitDelay = 5 * time.Second
			if err := cmd.Run(); err != nil {
				t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", cmd, err, stdout.String(), stderr.String())
			}
			if !isFuseMount(mnt) {
				t.Fatalf("the helper returned 0 but %s is not mounted", mnt)
			}
			if stdout.Len() > 0 || stderr.Len() > 0 {
				t.Errorf("a mount helper should be silent on success; stdout %q, stderr %q", stdout.String(), stderr.String())
			}
			readOneFile(t, mnt, filepath.Join(serve, "data.zarr"), "2d.chunked.i2/1.0")
			s := opsStatsJSON(t, mnt)
			if s.CacheDir != cacheDir || s.CacheBudget != tc.budget {
				t.Errorf("cache %s with budget %d, want %s with %d (from -o)", s.CacheDir, s.CacheBudget, cacheDir, tc.budget)
			}
			opts := ""
			for _, line := range strings.Split(string(must(os.ReadFile("/proc/self/mounts"))), "\n") {
				if f := strings.Fields(line); len(f) > 3 && fusefs.UnescapeMountinfo(f[1]) == mnt {
					opts = f[3]
				}
			}
			if got := strings.Contains(","+opts+",", ",allow_other,"); got != tc.other {
				t.Errorf("mount options %q: allow_other present %v, want %v", opts, got, tc.other)
			}
			if !strings.HasPrefix(opts, "ro,") {
				t.Errorf("mount options %q: want a read-only mount", opts)
			}
			pids := daemonPids(mnt)
			// umount(8) is how fstab mounts are taken down; the daemon must then exit.
			if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
				t.Fatalf("umount %s: %v: %s", mnt, err, out)
			}
			opsWaitGone(t, pids)
		})
	}

	errCases := []struct {
		name string
		args []string // after URL MNT
		code int
		want []string
	}{
		{"unknown option", []string{"-o", "rw,cachedir=/x"}, 2, []string{`unknown mount option "cachedir=/x"`, "cache_dir="}},
		{"option without its value", []string{"-o", "cache_size"}, 2, []string{"cache_size needs a value"}},
		{"bad size", []string{"-o", "cache_size=lots"}, 2, []string{"--cache-size", "512MiB"}},
		{"unknown flag", []string{"-x"}, 2, []string{"unknown flag -x"}},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			mnt := newMountpoint(t)
			cleanupDaemons(t, mnt)
			args := append([]string{o.URL("data.zarr"), mnt}, tc.args...)
			args = append(args, "-o", "cache_dir="+filepath.Join(t.TempDir(), "cache"))
			out, code := runCmd(t, time.Minute, nil, helper, args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d:\n%s", code, tc.code, out)
			}
			if line := zarrfsLine(out, tc.want...); line == "" {
				t.Errorf("no line %q containing %q:\n%s", "zarrfs: ...", tc.want, out)
			}
			if isFuseMount(mnt) {
				t.Errorf("mounted despite the error")
			}
		})
	}

	t.Run("-f checks without mounting", func(t *testing.T) {
		mnt := newMountpoint(t)
		out, code := runCmd(t, time.Minute, nil, helper, o.URL("data.zarr"), mnt, "-f", "-o", "_netdev,cache_dir=/var/cache/zarrfs")
		if code != 0 || isFuseMount(mnt) {
			t.Fatalf("-f: exit %d, mounted %v:\n%s", code, isFuseMount(mnt), out)
		}
		if !strings.Contains(out, "zarrfs mount --cache-dir=/var/cache/zarrfs "+o.URL("data.zarr")+" "+mnt) {
			t.Errorf("-f does not say what it would run:\n%s", out)
		}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestMountTypeZarrfs: real mount(8) runs, with fstab-style options: `mount -t zarrfs` through
// a temporary /sbin/mount.zarrfs link, and `mount -t fuse.zarrfs` through fuse3's mount.fuse3,
// which runs `zarrfs` from PATH (a temporary /usr/local/bin/zarrfs link). mount(8) runs
// helpers with neither PATH nor HOME; the links are removed when the test ends.
func TestMountTypeZarrfs(t *testing.T) {
	fuseReady.require(t)
	fixturesReady.require(t)
	if os.Geteuid() != 0 {
		t.Skip("mount(8) with a helper link in /sbin needs root")
	}
	if _, err := exec.LookPath("mount"); err != nil {
		missing(t, "mount(8): %v", err)
	}
	serve := filepath.Join(fixturesDir, "zarrita", "v2")
	o := newOrigin(t, serve)
	tests := []struct {
		fstype, link string
	}{
		{"zarrfs", "/sbin/mount.zarrfs"},
		{"fuse.zarrfs", "/usr/local/bin/zarrfs"},
	}
	for _, tc := range tests {
		t.Run(tc.fstype, func(t *testing.T) {
			if tc.fstype == "fuse.zarrfs" {
				if _, err := os.Stat("/sbin/mount.fuse3"); err != nil {
					missing(t, "mount.fuse3 (package fuse3): %v", err)
				}
			}
			if _, err := os.Lstat(tc.link); err == nil {
				// A link left by an earlier run that was killed points into its temp dir.
				if target, err := os.Readlink(tc.link); err == nil && strings.Contains(target, "/zarrfs-integration-") {
					_ = os.Remove(tc.link)
				} else {
					t.Skipf("%s exists already (an installed zarrfs?); not replacing it", tc.link)
				}
			}
			if err := os.Symlink(zarrfsBin, tc.link); err != nil {
				t.Fatalf("link %s: %v", tc.link, err)
			}
			t.Cleanup(func() { _ = os.Remove(tc.link) })
			mnt := newMountpoint(t)
			cleanupDaemons(t, mnt)
			cacheDir := filepath.Join(t.TempDir(), "cache")
			out, code := runCmd(t, time.Minute, nil, "mount", "-t", tc.fstype, "-o", "_netdev,nofail,cache_dir="+cacheDir+",cache_size=48MiB", o.URL("data.zarr"), mnt)
			if code != 0 {
				t.Fatalf("mount -t %s: exit %d:\n%s\n%s", tc.fstype, code, out, tail(filepath.Join(cacheDir, "zarrfs.log"), 20))
			}
			if !isFuseMount(mnt) {
				t.Fatalf("mount -t %s returned 0 but %s is not mounted", tc.fstype, mnt)
			}
			readOneFile(t, mnt, filepath.Join(serve, "data.zarr"), "2d.chunked.i2/0.1")
			if s := opsStatsJSON(t, mnt); s.CacheBudget != 48<<20 || s.CacheDir != cacheDir {
				t.Errorf("cache %s with budget %d, want %s and 48MiB from -o", s.CacheDir, s.CacheBudget, cacheDir)
			}
			pids := daemonPids(mnt)
			if out, code := runCmd(t, time.Minute, nil, "umount", mnt); code != 0 {
				t.Fatalf("umount: exit %d: %s", code, out)
			}
			opsWaitGone(t, pids)
		})
	}
}

// TestMountOutlivesItsShell: what a notebook cell does. `zarrfs mount` run from a shell that
// then exits leaves a working mount, and its output pipes reach EOF as soon as the shell exits
// (a daemon holding them would hang the cell); SIGINT, SIGTERM and SIGHUP sent to the shell's
// whole process group (an interrupted cell, a closed terminal) do not reach the daemon, which
// runs in its own session.
func TestMountOutlivesItsShell(t *testing.T) {
	fuseReady.require(t)
	fixturesReady.require(t)
	serve := filepath.Join(fixturesDir, "zarrita", "v2")
	o := newOrigin(t, serve)

	t.Run("shell exits", func(t *testing.T) {
		mnt := newMountpoint(t)
		cleanupDaemons(t, mnt)
		cacheDir := filepath.Join(t.TempDir(), "cache")
		cmd := exec.Command("sh", "-c", `"$0" mount --cache-dir "$1" "$2" "$3"`, zarrfsBin, cacheDir, o.URL("data.zarr"), mnt)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		done := make(chan struct{})
		var out []byte
		var err error
		go func() { out, err = cmd.CombinedOutput(); close(done) }() // returns at EOF of the pipe
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			t.Fatalf("the shell's output never reached EOF: the daemon holds the cell's pipe")
		}
		if err != nil {
			t.Fatalf("sh -c 'zarrfs mount ...': %v:\n%s", err, out)
		}
		if !strings.Contains(string(out), "mounted") || !strings.Contains(string(out), filepath.Join(cacheDir, "zarrfs.log")) {
			t.Errorf("zarrfs mount does not say it mounted and where its log is:\n%s", out)
		}
		readOneFile(t, mnt, filepath.Join(serve, "data.zarr"), "2d.chunked.i2/1.1")
		if fi, err := os.Stat(filepath.Join(cacheDir, "zarrfs.log")); err != nil || fi.Size() == 0 {
			t.Errorf("daemon log under the cache dir: %v", err)
		}
	})

	t.Run("signals to the launching process group", func(t *testing.T) {
		mnt := newMountpoint(t)
		cleanupDaemons(t, mnt)
		cacheDir := filepath.Join(t.TempDir(), "cache")
		// Like a cell running `!zarrfs mount … && python train.py`: the shell stays.
		cmd := exec.Command("sh", "-c", `"$0" mount --cache-dir "$1" "$2" "$3" && echo MOUNTED && sleep 120`, zarrfsBin, cacheDir, o.URL("data.zarr"), mnt)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pgid := cmd.Process.Pid
		exited := make(chan error, 1)
		mounted := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			saw := false
			for sc.Scan() {
				if sc.Text() == "MOUNTED" && !saw {
					saw = true
					mounted <- true
				}
			}
			if !saw {
				mounted <- false
			}
			exited <- cmd.Wait()
		}()
		t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
		select {
		case ok := <-mounted:
			if !ok {
				t.Fatalf("zarrfs mount failed in the shell: %v", <-exited)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("no mount within 2 minutes")
		}
		pids := daemonPids(mnt)
		if len(pids) != 1 {
			t.Fatalf("want one daemon for %s, found %v", mnt, pids)
		}
		daemon := pids[0]
		if pg, sid := procGroupAndSession(t, daemon); pg == pgid || sid == pgid || sid != daemon {
			t.Errorf("daemon %d: process group %d, session %d; want its own session (the shell's group is %d)", daemon, pg, sid, pgid)
		}
		for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGHUP, syscall.SIGTERM} {
			_ = syscall.Kill(-pgid, sig)
		}
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Fatal("the shell survived SIGINT, SIGHUP and SIGTERM to its group; the test cannot go on")
		}
		if !processAlive(daemon) {
			t.Fatalf("the daemon died with the launching process group; tail of its log:\n%s", tail(filepath.Join(cacheDir, "zarrfs.log"), 20))
		}
		if !isFuseMount(mnt) {
			t.Fatalf("%s is no longer mounted", mnt)
		}
		readOneFile(t, mnt, filepath.Join(serve, "data.zarr"), "2d.chunked.i2/0.0")
	})
}

// procGroupAndSession reads a process's group and session ids from /proc.
func procGroupAndSession(t testing.TB, pid int) (pgrp, session int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	// pid (comm) state ppid pgrp session ...
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 4 {
		t.Fatalf("unexpected /proc/%d/stat: %q", pid, s)
	}
	pgrp, _ = strconv.Atoi(f[2])
	session, _ = strconv.Atoi(f[3])
	return pgrp, session
}

// TestStatsCommand: after reads, `zarrfs stats` shows nonzero hits and misses, --json parses
// and agrees, and --watch repeats until interrupted, then exits 0.
func TestStatsCommand(t *testing.T) {
	fixturesReady.require(t)
	serve := filepath.Join(fixturesDir, "zarrita", "v2")
	o, release := opsGatedOrigin(t, serve, "/data.zarr/2d.chunked.i2/0.1")
	m := mount(t, o.URL("data.zarr"))
	opsReadThroughGate(t, m.Dir, filepath.Join(serve, "data.zarr"), "2d.chunked.i2/0.1", release) // a miss
	for _, key := range []string{"2d.chunked.i2/0.1", "2d.chunked.i2/0.0", "3d.chunked.i2/1.2.0"} {
		readOneFile(t, m.Dir, filepath.Join(serve, "data.zarr"), key) // the first a hit for sure
	}

	s := opsStatsJSON(t, m.Dir)
	if s.Cache.Hits == 0 || s.Cache.Misses == 0 {
		t.Errorf("after a read that waited for the network and reads of cached chunks: %d hits, %d misses; want both nonzero", s.Cache.Hits, s.Cache.Misses)
	}
	if s.Remote.Requests == 0 || s.Remote.BytesReceived == 0 || s.Cache.BytesFromNetwork == 0 {
		t.Errorf("network counters: %d requests, %d bytes received, %d bytes read from the network; want nonzero",
			s.Remote.Requests, s.Remote.BytesReceived, s.Cache.BytesFromNetwork)
	}
	if s.PID != m.cmd.Process.Pid || s.Mountpoint != m.Dir || s.URL != o.URL("data.zarr") {
		t.Errorf("stats name pid %d, %s, %s; want %d, %s, %s", s.PID, s.Mountpoint, s.URL, m.cmd.Process.Pid, m.Dir, o.URL("data.zarr"))
	}

	out, code := runCmd(t, time.Minute, nil, zarrfsBin, "stats", m.Dir)
	if code != 0 {
		t.Fatalf("zarrfs stats: exit %d:\n%s", code, out)
	}
	hitLine := fmt.Sprintf("(%d hits, %d misses", s.Cache.Hits, s.Cache.Misses)
	for _, want := range []string{o.URL("data.zarr"), "hit rate", hitLine, "from network", "in flight", "retries", "errors    none"} {
		if !strings.Contains(out, want) {
			t.Errorf("zarrfs stats output lacks %q:\n%s", want, out)
		}
	}

	for _, format := range []string{"text", "json"} {
		t.Run("watch/"+format, func(t *testing.T) {
			args := []string{"stats", "--watch", "--interval", "200ms", m.Dir}
			if format == "json" {
				args = append(args, "--json")
			}
			p := startZarrfs(t, nil, "", args...)
			deadline := time.Now().Add(30 * time.Second)
			count := func() int {
				if format == "json" {
					return strings.Count(p.output(), "\n")
				}
				return strings.Count(p.output(), "hit rate")
			}
			for count() < 3 && !p.exited() && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if count() < 3 {
				t.Fatalf("--watch printed %d snapshots, want at least 3:\n%s", count(), p.output())
			}
			_ = p.cmd.Process.Signal(os.Interrupt)
			if !p.waitExit(10 * time.Second) {
				t.Fatal("--watch still running 10s after SIGINT")
			}
			if code := p.exitCode(); code != 0 {
				t.Errorf("--watch exit %d after SIGINT, want 0", code)
			}
			if format == "json" {
				for _, line := range strings.Split(strings.TrimSpace(p.output()), "\n") {
					var v opsStats
					if err := json.Unmarshal([]byte(line), &v); err != nil || v.Mountpoint != m.Dir {
						t.Errorf("--watch --json line %q: %v", line, err)
					}
				}
			}
		})
	}

	t.Run("not a zarrfs mount", func(t *testing.T) {
		out, code := runCmd(t, time.Minute, nil, zarrfsBin, "stats", t.TempDir())
		if code != 1 || zarrfsLine(out, "is not a zarrfs mount") == "" {
			t.Errorf("stats of a plain directory: exit %d:\n%s", code, out)
		}
	})
}

// TestMetricsAddr: --metrics-addr serves the counters in the Prometheus text format, the same
// numbers `zarrfs stats --json` reports.
func TestMetricsAddr(t *testing.T) {
	fixturesReady.require(t)
	serve := filepath.Join(fixturesDir, "zarrita", "v2")
	o, release := opsGatedOrigin(t, serve, "/data.zarr/2d.chunked.i2/1.1")
	addr := opsFreeAddr(t)
	m := mount(t, o.URL("data.zarr"), "--metrics-addr", addr)
	opsReadThroughGate(t, m.Dir, filepath.Join(serve, "data.zarr"), "2d.chunked.i2/1.1", release)
	readOneFile(t, m.Dir, filepath.Join(serve, "data.zarr"), "2d.chunked.i2/1.1")
	s := opsStatsJSON(t, m.Dir)

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	sampleRE := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? (\S+)$`)
	values := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		if strings.HasPrefix(line, "# HELP ") || strings.HasPrefix(line, "# TYPE ") {
			continue
		}
		mm := sampleRE.FindStringSubmatch(line)
		if mm == nil {
			t.Errorf("not a Prometheus sample line: %q", line)
			continue
		}
		v, err := strconv.ParseFloat(mm[3], 64)
		if err != nil {
			t.Errorf("sample %q: value: %v", line, err)
		}
		values[mm[1]+mm[2]] = v
	}
	for name, want := range map[string]float64{
		"zarrfs_cache_hits_total":                 float64(s.Cache.Hits),
		"zarrfs_cache_misses_total":               float64(s.Cache.Misses),
		`zarrfs_read_bytes_total{source="cache"}`: float64(s.Cache.BytesFromCache),
		"zarrfs_cache_budget_bytes":               float64(s.CacheBudget),
	} {
		if got, ok := values[name]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v as zarrfs stats --json says", name, got, ok, want)
		}
	}
	for _, name := range []string{"zarrfs_cache_hits_total", "zarrfs_cache_misses_total", "zarrfs_origin_requests_total", "zarrfs_origin_received_bytes_total"} {
		if values[name] <= 0 {
			t.Errorf("%s = %v after reads, want > 0", name, values[name])
		}
	}
	info := fmt.Sprintf(`zarrfs_info{url="%s",mountpoint="%s",`, o.URL("data.zarr"), m.Dir)
	if !strings.Contains(string(body), info) {
		t.Errorf("/metrics lacks %s…:\n%s", info, body)
	}
}

// TestSystemdNotify: in --foreground mode under a Type=notify unit (NOTIFY_SOCKET set), zarrfs
// sends READY=1 once the mount is live, and STOPPING=1 when told to stop.
func TestSystemdNotify(t *testing.T) {
	fuseReady.require(t)
	fixturesReady.require(t)
	serve := filepath.Join(fixturesDir, "zarrita", "v2")
	o := newOrigin(t, serve)
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mnt := newMountpoint(t)
	env := append(envWithout("NOTIFY_SOCKET"), "NOTIFY_SOCKET="+sock)
	p := startZarrfs(t, env, mnt, append(append([]string{"mount", "--foreground"}, defaultMountArgs(t, nil)...), o.URL("data.zarr"), mnt)...)

	read := func(want string) string {
		t.Helper()
		buf := make([]byte, 4096)
		_ = conn.SetReadDeadline(time.Now().Add(mountWait))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no %s on NOTIFY_SOCKET: %v", want, err)
		}
		msg := string(buf[:n])
		if !strings.Contains("\n"+msg+"\n", "\n"+want+"\n") {
			t.Fatalf("notification %q, want %s", msg, want)
		}
		return msg
	}
	msg := read("READY=1")
	if !isFuseMount(mnt) {
		t.Fatalf("READY=1 sent before %s was mounted", mnt)
	}
	if !strings.Contains(msg, "STATUS=serving "+o.URL("data.zarr")) {
		t.Errorf("READY notification %q has no STATUS line naming the URL", msg)
	}
	readOneFile(t, mnt, filepath.Join(serve, "data.zarr"), "2d.chunked.i2/0.0")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	read("STOPPING=1")
	if !p.waitExit(30*time.Second) || p.exitCode() != 0 {
		t.Fatalf("zarrfs did not exit 0 after SIGTERM")
	}
}

// TestOpsMountErrors: the common mistakes not covered by TestMountErrors each exit 1 with one
// line "zarrfs: …" that names the problem and the fix, in the default (detached) mode.
func TestOpsMountErrors(t *testing.T) {
	fuseReady.require(t)
	fixturesReady.require(t)
	v2 := filepath.Join(fixturesDir, "zarrita", "v2")
	wrongToken := filepath.Join(t.TempDir(), "token")
	writeFile(t, wrongToken, []byte("not-the-token\n"))

	tests := []struct {
		name string
		// setup returns the URL, the mountpoint, extra arguments and extra words the message
		// must hold.
		setup func(t *testing.T) (url, mnt string, args, want []string)
		want  []string
	}{
		{"wrong URL path (404 on metadata)", func(t *testing.T) (string, string, []string, []string) {
			return newOrigin(t, v2).URL("no-such.zarr"), newMountpoint(t), nil, nil
		}, []string{"no zarr store at", "404", "check the URL's path"}},
		{"URL of the directory above the store", func(t *testing.T) (string, string, []string, []string) {
			return newOrigin(t, v2).URL(""), newMountpoint(t), nil, nil
		}, []string{"not a zarr store", "data.zarr"}},
		{"host name does not resolve", func(t *testing.T) (string, string, []string, []string) {
			return "http://no-such-host.invalid/era5.zarr", newMountpoint(t), retryArgs, nil
		}, []string{"cannot resolve host no-such-host.invalid"}},
		{"TLS certificate of unknown authority", func(t *testing.T) (string, string, []string, []string) {
			return newOrigin(t, v2, withTLS()).URL("data.zarr"), newMountpoint(t), nil, nil
		}, []string{"unknown authority", "--pin", "--ca-cert"}},
		{"wrong token", func(t *testing.T) (string, string, []string, []string) {
			return newOrigin(t, v2, withToken("s3cret")).URL("data.zarr"), newMountpoint(t), []string{"--token-file", wrongToken}, nil
		}, []string{"refused the token", "401", "--token-file"}},
		{"mountpoint is a file", func(t *testing.T) (string, string, []string, []string) {
			f := filepath.Join(t.TempDir(), "file")
			writeFile(t, f, []byte("x"))
			return newOrigin(t, v2).URL("data.zarr"), f, nil, nil
		}, []string{"is not a directory"}},
		{"mountpoint already mounted", func(t *testing.T) (string, string, []string, []string) {
			o := newOrigin(t, v2)
			first := mount(t, o.URL("data.zarr"))
			return o.URL("data.zarr"), first.Dir, nil, nil
		}, []string{"already mounted", "zarrfs unmount "}},
		{"cache directory locked by another mount", func(t *testing.T) (string, string, []string, []string) {
			o := newOrigin(t, v2)
			cacheDir := filepath.Join(t.TempDir(), "shared-cache")
			first := mount(t, o.URL("data.zarr"), "--cache-dir", cacheDir)
			return o.URL("data.zarr"), newMountpoint(t), []string{"--cache-dir", cacheDir, "--log-file", filepath.Join(t.TempDir(), "second.log")},
				[]string{"process " + strconv.Itoa(first.cmd.Process.Pid)}
		}, []string{"is in use by process", "use a different --cache-dir"}},
		{"cache directory is a file", func(t *testing.T) (string, string, []string, []string) {
			f := filepath.Join(t.TempDir(), "file")
			writeFile(t, f, []byte("x"))
			return newOrigin(t, v2).URL("data.zarr"), newMountpoint(t), []string{"--cache-dir", filepath.Join(f, "cache")}, nil
		}, []string{"cache directory", "--cache-dir"}},
		{"metrics address in use", func(t *testing.T) (string, string, []string, []string) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			return newOrigin(t, v2).URL("data.zarr"), newMountpoint(t), []string{"--metrics-addr", l.Addr().String()}, nil
		}, []string{"--metrics-addr", "address already in use"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url, mnt, args, extra := tc.setup(t)
			wasMounted := isFuseMount(mnt)
			if !wasMounted {
				cleanupDaemons(t, mnt)
			}
			full := append([]string{"mount"}, defaultMountArgs(t, args)...)
			out, code := runCmd(t, 2*time.Minute, nil, zarrfsBin, append(full, url, mnt)...)
			if code != 1 {
				t.Errorf("exit %d, want 1:\n%s", code, out)
			}
			if n := strings.Count("\n"+out, "\nzarrfs: "); n != 1 {
				t.Errorf("%d lines start with %q, want exactly one:\n%s", n, "zarrfs: ", out)
			}
			want := append(append([]string(nil), tc.want...), extra...)
			if line := zarrfsLine(out, want...); line == "" {
				t.Errorf("no line starting %q containing %q:\n%s", "zarrfs: ", want, out)
			} else {
				t.Logf("%s", line)
			}
			if !wasMounted && isFuseMount(mnt) {
				t.Errorf("%s got mounted", mnt)
			}
		})
	}
}

// TestDeadMountCleaned: a mount whose daemon was killed ("Transport endpoint is not
// connected") is detached with a note, and the new mount proceeds.
func TestDeadMountCleaned(t *testing.T) {
	fuseReady.require(t)
	fixturesReady.require(t)
	serve := filepath.Join(fixturesDir, "zarrita", "v2")
	o := newOrigin(t, serve)
	mnt := newMountpoint(t)
	cleanupDaemons(t, mnt)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	args := append(append([]string{"mount"}, defaultMountArgs(t, []string{"--cache-dir", cacheDir})...), o.URL("data.zarr"), mnt)
	if out, code := runCmd(t, time.Minute, nil, zarrfsBin, args...); code != 0 {
		t.Fatalf("first mount: exit %d:\n%s", code, out)
	}
	pids := daemonPids(mnt)
	if len(pids) != 1 {
		t.Fatalf("want one daemon, found %v", pids)
	}
	readOneFile(t, mnt, filepath.Join(serve, "data.zarr"), "2d.chunked.i2/0.0")
	_ = syscall.Kill(pids[0], syscall.SIGKILL) // what the OOM killer does
	opsWaitGone(t, pids)
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); !errors.Is(err, unix.ENOTCONN) && !errors.Is(err, unix.ECONNABORTED) && !errors.Is(err, unix.EIO) {
		t.Fatalf("statfs of the dead mount: %v, want ENOTCONN (Transport endpoint is not connected) or the like", err)
	}

	out, code := runCmd(t, time.Minute, nil, zarrfsBin, args...)
	if code != 0 {
		t.Fatalf("mount over the dead mount: exit %d:\n%s", code, out)
	}
	if zarrfsLine(out, "note:", mnt, "dead mount", "fusermount3 -uz") == "" {
		t.Errorf("no note that the dead mount was cleaned:\n%s", out)
	}
	readOneFile(t, mnt, filepath.Join(serve, "data.zarr"), "2d.chunked.i2/0.1")
	if n := strings.Count(string(must(os.ReadFile("/proc/self/mountinfo"))), " "+mnt+" "); n != 1 {
		t.Errorf("%s appears %d times in mountinfo, want 1 (the dead mount must be gone)", mnt, n)
	}
}

// TestUnprivilegedUser: run as an unprivileged user (nobody), the FUSE device and cache
// directory checks say what is wrong. /dev/fuse is made unusable for certain by bind-mounting a
// root-only FUSE device node over it in a private mount namespace (unshare), so the test does
// not depend on the host's /dev/fuse mode; without unshare it runs only if the host's
// /dev/fuse is already closed to nobody.
func TestUnprivilegedUser(t *testing.T) {
	fuseReady.require(t)
	fixturesReady.require(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to run zarrfs as another user")
	}
	for _, tool := range []string{"setpriv", "unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing(t, "%s (util-linux): %v", tool, err)
		}
	}
	o := newOrigin(t, filepath.Join(fixturesDir, "zarrita", "v2"))
	// Everything nobody touches must be reachable by it: /tmp/… made 0755.
	root, err := os.MkdirTemp("/tmp", "zarrfs-nobody-") // not $TMPDIR: it may be private (0700)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "zarrfs")
	if err := os.WriteFile(bin, must(os.ReadFile(zarrfsBin)), 0o755); err != nil {
		t.Fatal(err)
	}
	mkdir := func(name string, uid int) string {
		d := filepath.Join(root, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, uid); err != nil {
			t.Fatal(err)
		}
		return d
	}
	const nobody = 65534
	mnt := mkdir("mnt", nobody)
	ownCache := mkdir("cache-nobody", nobody)
	rootCache := mkdir("cache-root", 0)
	node := filepath.Join(root, "fuse-root-only")
	if err := unix.Mknod(node, unix.S_IFCHR|0o600, int(unix.Mkdev(10, 229))); err != nil {
		t.Fatalf("mknod: %v", err)
	}

	// asNobody runs zarrfs as nobody, with /dev/fuse replaced by node when unshare can.
	asNobody := func(t *testing.T, args ...string) (string, int) {
		t.Helper()
		drop := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"}
		inner := append(append(drop, bin), args...)
		script := `mount --bind "$0" /dev/fuse && exec "$@"`
		out, code := runCmd(t, 2*time.Minute, nil, "unshare", append([]string{"--mount", "--propagation", "private", "--", "sh", "-c", script, node}, inner...)...)
		if code == 0 || strings.HasPrefix(out, "zarrfs: ") {
			return out, code
		}
		// unshare or the bind mount failed (no CAP_SYS_ADMIN in this container?).
		probe := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "sh", "-c", "test -r /dev/fuse && test -w /dev/fuse")
		if probe.Run() == nil {
			missing(t, "cannot unshare a mount namespace (%s) and the host's /dev/fuse is open to nobody", strings.TrimSpace(out))
		}
		return runCmd(t, 2*time.Minute, nil, "setpriv", append(append(drop, bin), args...)...)
	}

	tests := []struct {
		name     string
		cacheDir string
		want     []string
	}{
		{"no permission to use /dev/fuse", ownCache, []string{"no permission to use /dev/fuse", "run as root"}},
		{"cache directory not writable", rootCache, []string{"is not writable by this user", "--cache-dir"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cleanupDaemons(t, mnt)
			out, code := asNobody(t, "mount", "--cache-dir", tc.cacheDir, o.URL("data.zarr"), mnt)
			if code != 1 {
				t.Errorf("exit %d, want 1:\n%s", code, out)
			}
			if n := strings.Count("\n"+out, "\nzarrfs: "); n != 1 {
				t.Errorf("%d lines start with %q, want one:\n%s", n, "zarrfs: ", out)
			}
			if line := zarrfsLine(out, tc.want...); line == "" {
				t.Errorf("no line %q containing %q:\n%s", "zarrfs: ", tc.want, out)
			} else {
				t.Logf("%s", line)
			}
			if isFuseMount(mnt) {
				t.Errorf("%s got mounted", mnt)
			}
		})
	}
}
