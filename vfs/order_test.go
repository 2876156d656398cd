package vfs

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/zarrfs/zarrfs/internal/storetest"
	"github.com/zarrfs/zarrfs/zarr"
)

func rows(lo, hi int64) *[2]int64 { return &[2]int64{lo, hi} }

func fixedEstimate(*zarr.Node) int64 { return 100 }

func TestBuildOrder(t *testing.T) {
	st := storetest.PlanStore(t, 8) // g/x: 80 rows in chunks of 10; z: 80x40 in 10x10
	tests := []struct {
		name    string
		targets []OrderTarget
		keys    []string
		err     error
	}{
		{"rows to chunks, in order", []OrderTarget{{Path: "g/x", Rows: rows(30, 40)}, {Path: "g/y", Rows: rows(30, 40)}, {Path: "g/x", Rows: rows(0, 10)}},
			[]string{"g/x/3.0.0.0", "g/y/3", "g/x/0.0.0.0"}, nil},
		{"rows across a chunk edge", []OrderTarget{{Path: "g/x", Rows: rows(15, 25)}}, []string{"g/x/1.0.0.0", "g/x/2.0.0.0"}, nil},
		{"a chunk named twice is fetched once, at its first place", []OrderTarget{{Path: "g/y", Rows: rows(0, 5)}, {Path: "g/y", Rows: rows(5, 10)}, {Path: "g/y", Rows: rows(10, 12)}},
			[]string{"g/y/0", "g/y/1"}, nil},
		{"rows take every chunk of the other dimensions", []OrderTarget{{Path: "z", Rows: rows(70, 80)}}, []string{"z/7.0", "z/7.1", "z/7.2", "z/7.3"}, nil},
		{"open stop clamps to the shape", []OrderTarget{{Path: "g/y", Rows: rows(75, 1<<62)}}, []string{"g/y/7"}, nil},
		{"whole array without rows", []OrderTarget{{Path: "g/lat"}}, []string{"g/lat/0"}, nil},
		{"rows past the shape", []OrderTarget{{Path: "g/y", Rows: rows(80, 90)}}, nil, ErrBadRange},
		{"rows of a group", []OrderTarget{{Path: "g", Rows: rows(0, 1)}}, nil, ErrNoSuchPath},
		{"no such array", []OrderTarget{{Path: "nope", Rows: rows(0, 1)}}, nil, ErrNoSuchPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := buildOrder(st, tt.targets, fixedEstimate)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if !slices.Equal(o.keys, tt.keys) {
				t.Fatalf("keys %v, want %v", o.keys, tt.keys)
			}
			// The feed hands out exactly the keys, in order, with sizes.
			next := o.wants(st)
			var got []string
			for {
				w, ok := next()
				if !ok {
					break
				}
				if w.Size != 100 {
					t.Fatalf("%s: size %d, want the estimate 100", w.Key, w.Size)
				}
				got = append(got, w.Key)
			}
			if !slices.Equal(got, tt.keys) {
				t.Fatalf("feed %v, want %v", got, tt.keys)
			}
		})
	}
}

// slabOrder is an order of n slabs of g/x and g/y in the given slab order.
func slabOrder(t *testing.T, slabs []int64) *order {
	t.Helper()
	st := storetest.PlanStore(t, 200)
	var targets []OrderTarget
	for _, s := range slabs {
		targets = append(targets, OrderTarget{Path: "g/x", Rows: rows(s*10, s*10+10)}, OrderTarget{Path: "g/y", Rows: rows(s*10, s*10+10)})
	}
	o, err := buildOrder(st, targets, fixedEstimate)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func slabKeys(s int64) []string {
	return []string{fmt.Sprintf("g/x/%d.0.0.0", s), fmt.Sprintf("g/y/%d", s)}
}

func TestOrderFollowedToTheEnd(t *testing.T) {
	slabs := []int64{5, 2, 7, 0, 1, 3, 6, 4}
	o := slabOrder(t, slabs)
	// A DataLoader with workers: batches k and k+1 read interleaved, each
	// chunk looked up and then opened (seen twice).
	for i := 0; i < len(slabs); i += 2 {
		a, b := slabKeys(slabs[i]), slabKeys(slabs[i+1])
		for _, k := range []string{b[0], a[0], a[0], b[1], b[0], a[1], a[1], b[1]} {
			on, left := o.observe(k)
			if finished := o.progress().State == OrderFinished; (!on && !finished) || left {
				t.Fatalf("read of %s: on %v left %v, want on the order", k, on, left)
			}
		}
	}
	p := o.progress()
	if p.State != OrderFinished || p.TargetsRead != 16 || p.KeysRead != 16 || p.OffOrderReads != 0 {
		t.Fatalf("progress %+v, want finished with 16 targets and keys read, none off the order", p)
	}
	// Once finished, reads go to the planner again.
	if on, _ := o.observe(slabKeys(5)[0]); on {
		t.Fatal("a read after the order finished still counted as following it")
	}
}

func TestOrderLeft(t *testing.T) {
	var slabs []int64
	for s := int64(0); s < 100; s++ {
		slabs = append(slabs, (s*37)%100)
	}
	shuffled := func(t *testing.T) *order { return slabOrder(t, slabs) }
	tests := []struct {
		name  string
		build func(t *testing.T) *order
		reads func(o *order) []string
	}{
		{"reads of keys not in the order", shuffled, func(o *order) []string {
			var ks []string
			for s := int64(100); s < 100+orderLeaveAfter; s++ {
				ks = append(ks, slabKeys(s)[0])
			}
			return ks
		}},
		{"a new epoch without a new order", shuffled, func(o *order) []string {
			// Read all but the last slab, then start again in another
			// order: the keys are in the order but were read long ago.
			ks := slices.Clone(o.keys[:len(o.keys)-2])
			for i := len(o.keys) - 3; i >= 0 && len(ks) < len(o.keys)+2*orderLeaveAfter; i -= 3 {
				ks = append(ks, o.keys[i])
			}
			return ks
		}},
		{"jumping far ahead", longOrder, func(o *order) []string {
			var ks []string
			for i := orderWindow + 10; len(ks) < orderLeaveAfter; i++ {
				ks = append(ks, o.keys[i%len(o.keys)])
			}
			return ks
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.build(t)
			reads := tt.reads(o)
			var leftAt = -1
			for i, k := range reads {
				_, left := o.observe(k)
				if left {
					leftAt = i
					break
				}
			}
			if leftAt < 0 {
				t.Fatalf("the reader never left the order (state %s)", o.progress().State)
			}
			if st := o.progress().State; st != OrderLeft {
				t.Fatalf("state %s, want %s", st, OrderLeft)
			}
			if on, left := o.observe(reads[0]); on || left {
				t.Fatal("an order the reader left still takes reads")
			}
		})
	}
}

// longOrder has more keys than the window: 2,000 slabs of a 1-d array.
func longOrder(t *testing.T) *order {
	t.Helper()
	st := storetest.PlanStore(t, 2000)
	var targets []OrderTarget
	for s := int64(0); s < 2000; s++ {
		targets = append(targets, OrderTarget{Path: "g/y", Rows: rows(s*10, s*10+10)})
	}
	o, err := buildOrder(st, targets, fixedEstimate)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestOrderAFewStrayReadsStayOnIt(t *testing.T) {
	o := slabOrder(t, []int64{4, 1, 3, 0, 2})
	// The reader reads its order with an evaluation array in between: stray
	// reads below the limit do not end the order.
	stray := []string{"z/0.0", "z/0.1", "g/lat/0"}
	for _, s := range []int64{4, 1, 3, 0, 2} {
		for _, k := range slabKeys(s) {
			if on, left := o.observe(k); !on || left {
				t.Fatalf("%s: on %v left %v", k, on, left)
			}
		}
		for _, k := range stray {
			if on, left := o.observe(k); on || left {
				t.Fatalf("stray read %s: on %v left %v, want off the order but not leaving it", k, on, left)
			}
		}
	}
	// The strays after the last slab come after the order finished.
	if p := o.progress(); p.State != OrderFinished || p.OffOrderReads != 12 {
		t.Fatalf("progress %+v, want finished with 12 reads off the order", p)
	}
}
