package cache

// The cache directory as a whole: its lock, and the free space of the file
// system it lives on. No mutex is involved: the lock is taken in New and
// released in Close.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrLocked is returned (wrapped) by New when another Cache, in this or
// another process, holds the directory.
var ErrLocked = errors.New("cache directory is in use")

const lockFileName = "lock"

// dirLock is an exclusive flock on Dir/lock, held for the Cache's life. The
// kernel drops it when the process dies, so a crashed daemon never leaves
// a stale lock behind; the pid written in the file only names the holder
// in the error message.
type dirLock struct{ f *os.File }

func lockDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cache: lock %s: %w", dir, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	if errors.Is(err, unix.EWOULDBLOCK) {
		holder := "another process"
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				holder = fmt.Sprintf("process %d", pid)
			}
		}
		f.Close()
		return nil, fmt.Errorf("cache directory %s is in use by %s (another zarrfs mount): use a different --cache-dir, or unmount the other mount: %w",
			dir, holder, ErrLocked)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("cache: lock %s: %w", path, err)
	}
	// Best effort: the pid only improves the message above.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dirLock{f: f}, nil
}

// release unlocks by closing the file; the file stays, so that a waiting
// New does not lock an unlinked inode.
func (l *dirLock) release() error { return l.f.Close() }

// statfsFree reports the bytes available to unprivileged users on the file
// system holding dir.
func statfsFree(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
