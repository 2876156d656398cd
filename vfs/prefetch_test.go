package vfs

import (
	"errors"
	"slices"
	"testing"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/internal/storetest"
)

func TestResolvePrefetchTargets(t *testing.T) {
	store := storetest.PlanStore(t, 4) // g/x (4 slabs), g/y, z (4x4 grid), g/lat
	tests := []struct {
		name    string
		targets []PrefetchTarget
		want    []string // first keys handed out, in order
		count   int      // all keys
		err     error
	}{
		{"array slice", []PrefetchTarget{{Path: "g/x", Ranges: [][2]int64{{1, 3}}}}, []string{"g/x/1.0.0.0", "g/x/2.0.0.0"}, 2, nil},
		{"open end clamps", []PrefetchTarget{{Path: "/g/y/", Ranges: [][2]int64{{2, 1 << 62}}}}, []string{"g/y/2", "g/y/3"}, 2, nil},
		{"block of a 2-d array", []PrefetchTarget{{Path: "z", Ranges: [][2]int64{{1, 2}, {2, 4}}}}, []string{"z/1.2", "z/1.3"}, 2, nil},
		{"group", []PrefetchTarget{{Path: "g"}}, []string{"g/lat/0", "g/x/0.0.0.0", "g/x/1.0.0.0"}, 1 + 4 + 4, nil},
		{"whole store", nil, []string{"g/lat/0"}, 1 + 4 + 4 + 16, nil},
		{"one chunk", []PrefetchTarget{{Path: "z/3.1"}}, []string{"z/3.1"}, 1, nil},
		{"no such path", []PrefetchTarget{{Path: "nope"}}, nil, 0, ErrNoSuchPath},
		{"chunk outside the grid", []PrefetchTarget{{Path: "z/9.9"}}, nil, 0, ErrNoSuchPath},
		{"range past the grid", []PrefetchTarget{{Path: "z", Ranges: [][2]int64{{4, 5}}}}, nil, 0, ErrBadRange},
		{"too many ranges", []PrefetchTarget{{Path: "g/y", Ranges: [][2]int64{{0, 1}, {0, 1}}}}, nil, 0, ErrBadRange},
		{"ranges on a group", []PrefetchTarget{{Path: "g", Ranges: [][2]int64{{0, 1}}}}, nil, 0, ErrBadRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spans, err := resolveTargets(store, tt.targets)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			next := spanFeed(store, spans, nil)
			var keys []string
			for {
				w, ok := next()
				if !ok {
					break
				}
				if w.Size <= 0 {
					t.Fatalf("%s handed out without a size estimate", w.Key)
				}
				keys = append(keys, w.Key)
			}
			if len(keys) != tt.count || !slices.Equal(keys[:len(tt.want)], tt.want) {
				t.Fatalf("keys %v (%d), want %d starting %v", keys, len(keys), tt.count, tt.want)
			}
			var n int64
			for _, sp := range spans {
				n += sp.count()
			}
			if n != int64(tt.count) {
				t.Fatalf("count %d, want %d", n, tt.count)
			}
		})
	}
}

// TestSpanFeedIsAWant: the feed speaks the cache's type.
var _ func() (cache.Want, bool) = spanFeed(nil, nil, nil)
