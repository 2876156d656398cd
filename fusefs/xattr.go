package fusefs

import (
	"context"
	"syscall"

	"bazil.org/fuse"
)

// ControlXattr is the extended attribute of the mount root that holds the
// path of the daemon's control socket. Reading an xattr works on a read-only
// mount and adds nothing to the store's namespace, so `zarrfs stats MNT` and
// friends find their daemon from the mountpoint alone.
const ControlXattr = "user.zarrfs.control"

func (d *dirNode) Getxattr(ctx context.Context, req *fuse.GetxattrRequest, resp *fuse.GetxattrResponse) error {
	if d.d.Path() != "" || req.Name != ControlXattr || d.fs.controlSocket == "" {
		return fuse.ErrNoXattr
	}
	val := []byte(d.fs.controlSocket)
	if req.Size != 0 && int(req.Size) < len(val) {
		return fuse.ToErrno(syscall.ERANGE)
	}
	resp.Xattr = val
	return nil
}

func (d *dirNode) Listxattr(ctx context.Context, req *fuse.ListxattrRequest, resp *fuse.ListxattrResponse) error {
	if d.d.Path() == "" && d.fs.controlSocket != "" {
		resp.Append(ControlXattr)
	}
	return nil
}
