package fusefs

import (
	"context"
	"fmt"
	"sync/atomic"

	"bazil.org/fuse"
)

// KernelStats counts the requests the kernel sent the mount, by operation:
// where the per-file cost of reading through FUSE goes (every synchronous
// request is a round trip between the reader and the daemon).
type KernelStats struct {
	Requests int64            `json:"requests"`
	ByOp     map[string]int64 `json:"by_op"` // lookup, open, read, flush, release, ioctl, ...
}

// kernelOps names the operations counted apart; the rest are "other".
var kernelOps = [...]string{
	"lookup", "getattr", "open", "read", "flush", "release", "forget",
	"readdir", "opendir", "releasedir", "getxattr", "listxattr", "statfs",
	"access", "ioctl", "poll", "interrupt", "other",
}

// fuseOpIoctl is FUSE_IOCTL, which bazil does not decode: a reader's
// isatty(3) (Python's open does one) costs a round trip answered ENOTTY.
const fuseOpIoctl = 39

// requestCounters counts kernel requests without a lock; bazil calls count
// from each request's goroutine before the request is served.
type requestCounters struct {
	n [len(kernelOps)]atomic.Int64
}

func opIndex(r fuse.Request) int {
	switch r := r.(type) {
	case *fuse.LookupRequest:
		return 0
	case *fuse.GetattrRequest:
		return 1
	case *fuse.OpenRequest:
		if r.Dir {
			return 8
		}
		return 2
	case *fuse.ReadRequest:
		if r.Dir {
			return 7
		}
		return 3
	case *fuse.FlushRequest:
		return 4
	case *fuse.ReleaseRequest:
		if r.Dir {
			return 9
		}
		return 5
	case *fuse.ForgetRequest, *fuse.BatchForgetRequest:
		return 6
	case *fuse.GetxattrRequest:
		return 10
	case *fuse.ListxattrRequest:
		return 11
	case *fuse.StatfsRequest:
		return 12
	case *fuse.AccessRequest:
		return 13
	case *fuse.UnrecognizedRequest:
		if r.Opcode == fuseOpIoctl {
			return 14
		}
	case *fuse.PollRequest:
		return 15
	case *fuse.InterruptRequest:
		return 16
	}
	return len(kernelOps) - 1
}

// count is fusefs.Config.WithContext: it sees every request.
func (c *requestCounters) count(ctx context.Context, r fuse.Request) context.Context {
	c.n[opIndex(r)].Add(1)
	return ctx
}

func (c *requestCounters) stats() KernelStats {
	s := KernelStats{ByOp: make(map[string]int64, len(kernelOps))}
	for i, name := range kernelOps {
		v := c.n[i].Load()
		s.ByOp[name] = v
		s.Requests += v
	}
	return s
}

// String lists the operations asked for in a fixed order, so that
// successive lines compare at a glance.
func (s KernelStats) String() string {
	out := fmt.Sprintf("%d requests", s.Requests)
	sep := ": "
	for _, name := range kernelOps {
		if v := s.ByOp[name]; v > 0 {
			out += fmt.Sprintf("%s%d %s", sep, v, name)
			sep = ", "
		}
	}
	return out
}
