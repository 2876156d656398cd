package fusefs

import (
	"context"
	"testing"

	"bazil.org/fuse"
)

func TestKernelRequestsCounted(t *testing.T) {
	tests := []struct {
		req  fuse.Request
		want string
	}{
		{&fuse.LookupRequest{}, "lookup"},
		{&fuse.OpenRequest{}, "open"},
		{&fuse.OpenRequest{Dir: true}, "opendir"},
		{&fuse.ReadRequest{}, "read"},
		{&fuse.ReadRequest{Dir: true}, "readdir"},
		{&fuse.FlushRequest{}, "flush"},
		{&fuse.ReleaseRequest{}, "release"},
		{&fuse.ReleaseRequest{Dir: true}, "releasedir"},
		{&fuse.BatchForgetRequest{}, "forget"},
		{&fuse.PollRequest{}, "poll"},
		{&fuse.UnrecognizedRequest{Opcode: fuseOpIoctl}, "ioctl"},
		{&fuse.UnrecognizedRequest{Opcode: 4000}, "other"},
		{&fuse.SetattrRequest{}, "other"},
	}
	var c requestCounters
	for _, tt := range tests {
		c.count(context.Background(), tt.req)
		c.count(context.Background(), tt.req)
	}
	s := c.stats()
	if s.Requests != int64(2*len(tests)) {
		t.Errorf("%d requests counted, want %d", s.Requests, 2*len(tests))
	}
	want := map[string]int64{}
	for _, tt := range tests {
		want[tt.want] += 2
	}
	for name, n := range s.ByOp {
		if n != want[name] {
			t.Errorf("%s: %d, want %d", name, n, want[name])
		}
	}
	if got, want := (KernelStats{Requests: 3, ByOp: map[string]int64{"read": 2, "open": 1, "flush": 0}}).String(), "3 requests: 1 open, 2 read"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
