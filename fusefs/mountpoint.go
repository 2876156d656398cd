package fusefs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Sentinel errors for what the command line turns into advice.
var (
	ErrFusermountMissing = errors.New("fusermount3 not found on PATH: install the fuse3 package (apt-get install fuse3)")
	ErrMountpoint        = errors.New("bad mountpoint")
	ErrBusy              = errors.New("mount is busy")
	// ErrAlreadyMounted: a FUSE file system is mounted on the mountpoint.
	ErrAlreadyMounted = errors.New("already mounted")
	// ErrFuseDevice: /dev/fuse is missing or this user may not open it.
	ErrFuseDevice = errors.New("cannot use FUSE")
)

// Unmount detaches the zarrfs mount at mountpoint.
func Unmount(mountpoint string, lazy bool) error {
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return ErrFusermountMissing
	}
	args := []string{"-u"}
	if lazy {
		args = []string{"-u", "-z"}
	}
	out, err := exec.Command("fusermount3", append(args, "--", mountpoint)...).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "busy") {
			return fmt.Errorf("unmount %s: %w", mountpoint, ErrBusy)
		}
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("unmount %s: %s", mountpoint, msg)
	}
	return nil
}

// CheckMountpoint says what is wrong with a mountpoint, with the fix.
func CheckMountpoint(dir string) error {
	st, err := os.Stat(dir)
	if err == nil && IsDeadMount(dir) {
		err = syscall.ENOTCONN
	}
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %s does not exist: create it with mkdir -p %s", ErrMountpoint, dir, dir)
	case isDeadMount(err):
		return fmt.Errorf("%w: %s is a dead mount (its daemon exited): clean it with zarrfs unmount --lazy %s", ErrMountpoint, dir, dir)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: no permission to reach %s: choose a directory of your own, or fix the permissions of its parents", ErrMountpoint, dir)
	case err != nil:
		return fmt.Errorf("%w: %s: %v", ErrMountpoint, dir, err)
	case !st.IsDir():
		return fmt.Errorf("%w: %s is not a directory: mount on an empty directory (mkdir it first)", ErrMountpoint, dir)
	}
	if fstype, source, ok := MountedAt(dir); ok && strings.HasPrefix(fstype, "fuse") {
		what := "a FUSE file system (" + fstype + ")"
		if fstype == "fuse.zarrfs" {
			what = "a zarrfs mount of " + source
		}
		return fmt.Errorf("%w: %s already has %s on it (zarrfs unmount %s first)", ErrAlreadyMounted, dir, what, dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("%w: cannot read %s: %v", ErrMountpoint, dir, err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("%w: %s is not empty: mount on an empty directory (mkdir a new one)", ErrMountpoint, dir)
	}
	return nil
}

// isDeadMount says whether err is what the kernel answers on a FUSE mount
// whose daemon has gone ("Transport endpoint is not connected").
func isDeadMount(err error) bool {
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}

// IsDeadMount says whether dir is a FUSE mount whose daemon has gone. It
// asks statfs, which always reaches the daemon: stat may be answered from
// the kernel's attribute cache long after the daemon died.
func IsDeadMount(dir string) bool {
	var st unix.Statfs_t
	err := unix.Statfs(dir, &st)
	if errors.Is(err, unix.EIO) {
		// A daemon killed while the kernel waited on it can leave EIO
		// instead; a live zarrfs never fails statfs.
		fstype, _, _ := MountedAt(dir)
		return fstype == "fuse.zarrfs"
	}
	return isDeadMount(err)
}

// CleanDeadMount detaches a dead FUSE mount on dir (one whose daemon exited
// or was killed, so every access fails with "Transport endpoint is not
// connected") with fusermount3 -uz. It reports whether there was one.
func CleanDeadMount(dir string) (bool, error) {
	if !IsDeadMount(dir) {
		return false, nil
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return false, ErrFusermountMissing
	}
	out, err := exec.Command("fusermount3", "-u", "-z", "--", dir).CombinedOutput()
	if err != nil && os.Geteuid() == 0 {
		// fusermount3 refuses mounts it has no record of; root can detach any.
		if uerr := syscall.Unmount(dir, syscall.MNT_DETACH); uerr == nil {
			err = nil
		}
	}
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			msg = err.Error()
		}
		return false, fmt.Errorf("%w: %s is a dead mount (its daemon exited) and fusermount3 -uz could not remove it: %s", ErrMountpoint, dir, msg)
	}
	return true, nil
}

// MountedAt reports the file system type and source of the mount whose
// mountpoint is exactly dir, from /proc/self/mountinfo (the last one, if
// several are stacked).
func MountedAt(dir string) (fstype, source string, ok bool) {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", "", false
	}
	for _, line := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		left, right, found := strings.Cut(line, " - ")
		if !found {
			continue
		}
		lf, rf := strings.Fields(left), strings.Fields(right)
		if len(lf) < 5 || len(rf) < 2 || UnescapeMountinfo(lf[4]) != dir {
			continue
		}
		fstype, source, ok = rf[0], UnescapeMountinfo(rf[1]), true
	}
	return fstype, source, ok
}

// UnescapeMountinfo undoes the kernel's octal escapes (\040 for a space)
// in a field of /proc/*/mountinfo or /proc/mounts.
func UnescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// fuseDevice is the kernel's FUSE device; fusermount3 opens it with the
// caller's own permissions.
const fuseDevice = "/dev/fuse"

// CheckFuseDevice says, with the fix, why this user cannot use FUSE: no
// /dev/fuse (module not loaded, or a container started without it), or no
// permission to open it.
func CheckFuseDevice() error {
	err := unix.Access(fuseDevice, unix.R_OK|unix.W_OK)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w: %s does not exist: load the FUSE module (sudo modprobe fuse), or in a container start it with --device /dev/fuse --cap-add SYS_ADMIN", ErrFuseDevice, fuseDevice)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		group := "the group that owns it"
		var st unix.Stat_t
		if unix.Stat(fuseDevice, &st) == nil {
			if g, gerr := user.LookupGroupId(strconv.Itoa(int(st.Gid))); gerr == nil && g.Name != "root" {
				group = "group " + g.Name + " (sudo usermod -aG " + g.Name + " $USER, then log in again)"
			}
		}
		return fmt.Errorf("%w: no permission to use %s: run as root, or have an administrator add you to %s or make it readable and writable by all (chmod 0666 %s, as Debian does)", ErrFuseDevice, fuseDevice, group, fuseDevice)
	default:
		return fmt.Errorf("%w: %s: %v", ErrFuseDevice, fuseDevice, err)
	}
}
