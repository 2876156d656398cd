package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/zarrfs/zarrfs/fusefs"
)

func runUnmount(args []string) error {
	var lazy bool
	fl := pflag.NewFlagSet("unmount", pflag.ContinueOnError)
	fl.Usage = func() {
		fmt.Fprint(os.Stdout, `Usage: zarrfs unmount [--lazy] MOUNTPOINT

Unmount a zarrfs mount; its daemon then exits. If processes still use the
mount, says which, and leaves it mounted unless --lazy is given. A dead mount
("Transport endpoint is not connected") is removed with --lazy.

Examples:
  zarrfs unmount /content/era5
  zarrfs unmount --lazy /content/era5

Flags:
`)
		fl.SetOutput(os.Stdout)
		fl.PrintDefaults()
	}
	fl.BoolVarP(&lazy, "lazy", "z", false, "detach now even if busy; the mount disappears when its last user closes it")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: unmount: %v", errUsage, err)
	}
	if fl.NArg() != 1 {
		return fmt.Errorf("%w: unmount takes MOUNTPOINT", errUsage)
	}
	mnt := fl.Arg(0)
	if abs, err := filepath.Abs(mnt); err == nil {
		mnt = abs
	}
	err := fusefs.Unmount(mnt, lazy)
	if errors.Is(err, fusefs.ErrBusy) {
		holders := mountHolders(mnt)
		if len(holders) == 0 {
			return fmt.Errorf("%s is busy; close what uses it, or run zarrfs unmount --lazy %s", mnt, mnt)
		}
		return fmt.Errorf("%s is busy, in use by %s; stop them or run zarrfs unmount --lazy %s", mnt, strings.Join(holders, ", "), mnt)
	}
	return err
}

// mountHolders names the processes whose working directory, root, open files
// or mapped files lie under mnt, as "pid 123 (python3)". Reading /proc links
// never calls into the FUSE file system, so this works on a busy mount.
func mountHolders(mnt string) []string {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	under := func(p string) bool {
		p = strings.TrimSuffix(p, " (deleted)")
		return p == mnt || strings.HasPrefix(p, mnt+"/")
	}
	self := os.Getpid()
	var out []string
	var pids []int
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		holds := false
		for _, l := range []string{"cwd", "root", "exe"} {
			if t, err := os.Readlink(filepath.Join(dir, l)); err == nil && under(t) {
				holds = true
			}
		}
		if !holds {
			fds, _ := os.ReadDir(filepath.Join(dir, "fd"))
			for _, fd := range fds {
				if t, err := os.Readlink(filepath.Join(dir, "fd", fd.Name())); err == nil && under(t) {
					holds = true
					break
				}
			}
		}
		if !holds {
			if maps, err := os.ReadFile(filepath.Join(dir, "maps")); err == nil {
				for _, line := range strings.Split(string(maps), "\n") {
					if i := strings.Index(line, "/"); i >= 0 && under(line[i:]) {
						holds = true
						break
					}
				}
			}
		}
		if holds {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	for _, pid := range pids {
		comm, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
		out = append(out, fmt.Sprintf("pid %d (%s)", pid, strings.TrimSpace(string(comm))))
	}
	return out
}
