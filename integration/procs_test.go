package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// procReadTimeout bounds how long procsMatching waits for one process's /proc entries.
// Reading another process's cmdline takes that process's memory-map lock, which a process
// stuck in a page fault on a hung FUSE mount holds indefinitely; such a process is skipped
// instead of hanging a test's cleanup (a cleanup that hangs outlives every deadline but go
// test's -timeout, and leaks mounts into the next test).
const procReadTimeout = 3 * time.Second

// procInfo is what procsMatching knows of one process.
type procInfo struct {
	pid  int
	exe  string   // the /proc/PID/exe link, "" if unreadable
	args []string // argv, nil if unreadable
}

// procsMatching returns the pids of the processes (other than this one) for which match
// holds. Each process is read in a goroutine of its own; the scan returns after at most
// procReadTimeout, without the processes whose entries could not be read by then (their
// goroutines end when the read does; they own nothing).
func procsMatching(match func(p procInfo) bool) []int {
	entries, _ := os.ReadDir("/proc")
	results := make(chan procInfo, len(entries))
	started := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		started++
		go func() {
			p := procInfo{pid: pid}
			p.exe, _ = os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
			if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && len(b) > 0 {
				p.args = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
			}
			results <- p
		}()
	}
	var pids []int
	timeout := time.After(procReadTimeout)
	for range started {
		select {
		case p := <-results:
			if match(p) {
				pids = append(pids, p.pid)
			}
		case <-timeout:
			return pids
		}
	}
	return pids
}

// argsName reports whether args (an argv after its program) holds the argument want.
func argsName(args []string, want string) bool {
	for _, a := range args {
		if a == want {
			return true
		}
	}
	return false
}

// mountUsers describes the processes that hold something under mnt: an open file, a working
// directory or a mapping ("pid 123 (python3): fd 5 -> /mnt/x/a/0"). Bounded like
// procsMatching.
func mountUsers(mnt string) []string {
	prefix := strings.TrimSuffix(mnt, "/") + "/"
	under := func(p string) bool { return p == mnt || strings.HasPrefix(p, prefix) }
	entries, _ := os.ReadDir("/proc")
	results := make(chan []string, len(entries))
	started := 0
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		started++
		go func() {
			dir := filepath.Join("/proc", e.Name())
			comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
			who := fmt.Sprintf("pid %s (%s)", e.Name(), strings.TrimSpace(string(comm)))
			var found []string
			if cwd, err := os.Readlink(filepath.Join(dir, "cwd")); err == nil && under(cwd) {
				found = append(found, who+": cwd "+cwd)
			}
			fds, _ := os.ReadDir(filepath.Join(dir, "fd"))
			for _, fd := range fds {
				if target, err := os.Readlink(filepath.Join(dir, "fd", fd.Name())); err == nil && under(target) {
					found = append(found, who+": fd "+fd.Name()+" -> "+target)
				}
			}
			if maps, err := os.ReadFile(filepath.Join(dir, "maps")); err == nil {
				for _, line := range strings.Split(string(maps), "\n") {
					if i := strings.Index(line, " /"); i >= 0 && under(strings.TrimSpace(line[i:])) {
						found = append(found, who+": mapping "+strings.TrimSpace(line[i:]))
						break
					}
				}
			}
			results <- found
		}()
	}
	var users []string
	timeout := time.After(procReadTimeout)
	for range started {
		select {
		case found := <-results:
			users = append(users, found...)
		case <-timeout:
			return append(users, "(some processes did not answer)")
		}
	}
	return users
}
