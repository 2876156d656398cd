package fusefs

import (
	"fmt"
	"os/exec"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"

	"github.com/zarrfs/zarrfs/vfs"
)

// MountOptions are the kernel-side options of a mount.
type MountOptions struct {
	// FSName is shown as the mount's source (the store URL).
	FSName     string
	AllowOther bool
	Options
}

// Mount is a live FUSE mount serving a vfs.FS.
type Mount struct {
	mountpoint string
	conn       *fuse.Conn
	served     chan error
	requests   *requestCounters
}

// CheckFusermount says whether fusermount3, which mounts and unmounts
// without privileges, is installed.
func CheckFusermount() error {
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return ErrFusermountMissing
	}
	return nil
}

// Serve mounts core on mountpoint and starts answering the kernel; it
// returns once the mount is live. The core's entry invalidations go to the
// kernel from then on.
func Serve(mountpoint string, core *vfs.FS, opts MountOptions) (*Mount, error) {
	mopts := []fuse.MountOption{
		fuse.FSName(opts.FSName),
		fuse.Subtype("zarrfs"),
		fuse.ReadOnly(),
		fuse.DefaultPermissions(),
		fuse.MaxReadahead(1 << 20),
		fuse.AsyncRead(),
	}
	if opts.AllowOther {
		mopts = append(mopts, fuse.AllowOther())
	}
	conn, err := fuse.Mount(mountpoint, mopts...)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	fsys := newFS(core, opts.Options)
	requests := &requestCounters{}
	srv := fusefs.New(conn, &fusefs.Config{WithContext: requests.count})
	fsys.server = srv
	core.SetInvalidator(fsys)
	m := &Mount{mountpoint: mountpoint, conn: conn, served: make(chan error, 1), requests: requests}
	go func() { m.served <- srv.Serve(fsys) }()
	return m, nil
}

// Wait blocks until the file system is unmounted (by Unmount, by
// `zarrfs unmount` or fusermount3 from elsewhere), then closes the
// connection to the kernel.
func (m *Mount) Wait() error {
	err := <-m.served
	_ = m.conn.Close()
	return err
}

// KernelStats counts the requests the kernel sent so far.
func (m *Mount) KernelStats() KernelStats { return m.requests.stats() }

// Unmount asks the kernel to detach the mount. A busy mount stays mounted
// unless lazy is set, in which case it is detached now and vanishes when its
// last user closes it.
func (m *Mount) Unmount(lazy bool) error {
	return Unmount(m.mountpoint, lazy)
}
