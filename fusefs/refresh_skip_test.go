package fusefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"bazil.org/fuse"

	"github.com/zarrfs/zarrfs/vfs"
	"github.com/zarrfs/zarrfs/vfs/store"
)

// syncBuffer is a log sink safe for the refresh's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.b.String()
	s.b.Reset()
	return out
}

// TestRefreshNodeBecomesMalformed: a refresh that finds an array's metadata
// newly malformed leaves the array out like a deleted one (the kernel
// forgets it, lookups answer ENOENT), warns once, lists it in the store's
// skipped nodes, and keeps the rest; the next unchanged refresh is silent.
func TestRefreshNodeBecomesMalformed(t *testing.T) {
	for _, manifest := range []bool{true, false} {
		t.Run(fmt.Sprintf("manifest=%v", manifest), func(t *testing.T) {
			var logs syncBuffer
			x := newRefreshFixture(t, manifest)
			st, err := store.Discover(context.Background(), x.origin)
			if err != nil {
				t.Fatal(err)
			}
			x.core = vfs.New(st, x.origin, x.chunks, vfs.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), AttrValid: time.Hour})
			t.Cleanup(x.core.Close)
			x.core.SetInvalidator(x.kernel)
			x.fs = newFS(x.core, Options{Logger: slog.New(slog.DiscardHandler)})
			x.mustLookup(t, "a/0", "b/0")

			writeStore(t, x.dir, map[string]string{"b/.zarray": `{"zarr_format":2,"shape":[2],"chunks":[0],"dtype":"<i2"}`})
			rep, err := x.core.Refresh(context.Background())
			if err != nil || !rep.Changed {
				t.Fatalf("refresh: changed=%v err=%v", rep.Changed, err)
			}
			if !slices.Equal(rep.NodesRemoved, []string{"b"}) {
				t.Errorf("nodes removed %q, want [b]", rep.NodesRemoved)
			}
			if got := x.kernel.take(); !slices.Contains(got, inv("b")) {
				t.Errorf("kernel entries dropped %q, want b among them", got)
			}
			if _, err := x.lookup(t, "b/0"); !errors.Is(err, fuse.Errno(syscall.ENOENT)) {
				t.Errorf("lookup of b/0 after b became malformed: %v, want ENOENT", err)
			}
			x.mustLookup(t, "a/0")
			sk := x.core.Store().Skipped
			if len(sk) != 1 || sk[0].Path != "b" || !strings.Contains(sk[0].Problem, "chunks [0] is 0") {
				t.Errorf("skipped %+v, want b with its problem", sk)
			}
			out := logs.take()
			if strings.Count(out, "leaving out a node") != 1 || !strings.Contains(out, "node=b") {
				t.Errorf("want one warning about b, got:\n%s", out)
			}

			// The same problem again is no news.
			writeStore(t, x.dir, map[string]string{"a/.zattrs": `{"units": "C"}`})
			if _, err := x.core.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			if out := logs.take(); strings.Contains(out, "leaving out") {
				t.Errorf("a known problem warned again:\n%s", out)
			}
			if sk := x.core.Store().Skipped; len(sk) != 1 {
				t.Errorf("skipped after the second refresh: %+v", sk)
			}
		})
	}
}
