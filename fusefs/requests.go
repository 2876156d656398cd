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

// kernelOp is an operation counted apart; the rest are opOther.
type kernelOp int

const (
	opLookup kernelOp = iota
	opGetattr
	opOpen
	opRead
	opFlush
	opRelease
	opForget
	opReaddir
	opOpendir
	opReleasedir
	opGetxattr
	opListxattr
	opStatfs
	opAccess
	opIoctl
	opPoll
	opInterrupt
	opOther
	numKernelOps
)

// kernelOpNames are the operations' names in stats, in this order.
var kernelOpNames = [numKernelOps]string{
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
	n [numKernelOps]atomic.Int64
}

func opOf(r fuse.Request) kernelOp {
	switch r := r.(type) {
	case *fuse.LookupRequest:
		return opLookup
	case *fuse.GetattrRequest:
		return opGetattr
	case *fuse.OpenRequest:
		if r.Dir {
			return opOpendir
		}
		return opOpen
	case *fuse.ReadRequest:
		if r.Dir {
			return opReaddir
		}
		return opRead
	case *fuse.FlushRequest:
		return opFlush
	case *fuse.ReleaseRequest:
		if r.Dir {
			return opReleasedir
		}
		return opRelease
	case *fuse.ForgetRequest, *fuse.BatchForgetRequest:
		return opForget
	case *fuse.GetxattrRequest:
		return opGetxattr
	case *fuse.ListxattrRequest:
		return opListxattr
	case *fuse.StatfsRequest:
		return opStatfs
	case *fuse.AccessRequest:
		return opAccess
	case *fuse.UnrecognizedRequest:
		if r.Opcode == fuseOpIoctl {
			return opIoctl
		}
	case *fuse.PollRequest:
		return opPoll
	case *fuse.InterruptRequest:
		return opInterrupt
	}
	return opOther
}

// count is fusefs.Config.WithContext: it sees every request.
func (c *requestCounters) count(ctx context.Context, r fuse.Request) context.Context {
	c.n[opOf(r)].Add(1)
	return ctx
}

func (c *requestCounters) stats() KernelStats {
	s := KernelStats{ByOp: make(map[string]int64, numKernelOps)}
	for i, name := range kernelOpNames {
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
	for _, name := range kernelOpNames {
		if v := s.ByOp[name]; v > 0 {
			out += fmt.Sprintf("%s%d %s", sep, v, name)
			sep = ", "
		}
	}
	return out
}
