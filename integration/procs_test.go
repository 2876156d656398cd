package integration

import (
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
