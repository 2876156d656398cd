package serve

import (
	"strconv"
	"strings"
	"testing"
)

// The Range header a lying or broken client controls.

func FuzzNormalizeRange(f *testing.F) {
	for _, seed := range []struct {
		h    string
		size int64
	}{
		{"bytes=0-99", 1000}, {"bytes=-100", 50}, {"bytes=500-", 100}, {"Bytes = 1-2, 4-5", 10},
		{"bytes=0-0,-1", 0}, {"bytes=99999999999999999999-", 10}, {"bytes=5-3", 10}, {"items=0-1", 10},
		{"bytes=,,0-1,", 10}, {"bytes=-0", 10}, {"bytes=0-1,2-3,4-5,6-7,8-9,10-11,12-13,14-15,16-17", 100},
	} {
		f.Add(seed.h, seed.size)
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			size = -(size + 1)
		}
		out, ok := normalizeRange(h, size)
		if !ok {
			return
		}
		set, found := strings.CutPrefix(out, "bytes=")
		if !found || set == "" {
			t.Fatalf("normalizeRange(%q, %d) = %q", h, size, out)
		}
		specs := strings.Split(set, ",")
		if len(specs) > maxRanges {
			t.Fatalf("%d ranges kept of %q", len(specs), h)
		}
		if set == strconv.FormatInt(size, 10)+"-" {
			return // nothing satisfiable: ServeContent answers 416
		}
		for _, spec := range specs {
			first, last, _ := strings.Cut(spec, "-")
			if first == "" {
				n, err := strconv.ParseInt(last, 10, 64)
				if err != nil || n < 1 || n > max(size, 1) {
					t.Fatalf("suffix %q of %d bytes from %q", spec, size, h)
				}
				continue
			}
			a, err := strconv.ParseInt(first, 10, 64)
			if err != nil || a < 0 || a >= size {
				t.Fatalf("range %q of %d bytes from %q", spec, size, h)
			}
			if last != "" {
				b, err := strconv.ParseInt(last, 10, 64)
				if err != nil || b < a || b >= size {
					t.Fatalf("range %q of %d bytes from %q", spec, size, h)
				}
			}
		}
		// Cleaning is idempotent.
		if again, ok := normalizeRange(out, size); !ok || again != out {
			t.Fatalf("normalizeRange(%q) = %q, %v; want it unchanged", out, again, ok)
		}
	})
}
