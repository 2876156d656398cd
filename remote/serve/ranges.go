package serve

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Range and If-Range brought in line with RFC 9110 before http.ServeContent
// answers (see normalizeRangeHeaders).

// maxRanges bounds the ranges of one request; more are ignored (RFC 9110
// 14.2 lets a server ignore Range), which also defeats requests for many
// tiny overlapping ranges.
const maxRanges = 16

// normalizeRangeHeaders rewrites Range and If-Range where RFC 9110 asks more
// than http.ServeContent does, so ServeContent sees only cases it handles
// right:
//   - a Range of another unit than bytes (MUST ignore, 14.2), a malformed
//     one, or one with more than maxRanges ranges is ignored: full 200;
//   - If-Range with a date is honoured only when Last-Modified is at least
//     one second older than now, i.e. a strong validator (13.1.5);
//     otherwise the Range is ignored;
//   - a range set with no satisfiable range (every first-pos at or past the
//     end, or only zero-length suffixes; 14.1.1) becomes one ServeContent
//     answers with 416 and "Content-Range: bytes */size" (after it has
//     evaluated the preconditions, which come first);
//   - positions beyond int64 are clamped, not rejected;
//   - on an empty file no range can select a byte: ServeContent ignores
//     Range there (full 200, which 14.2 allows), and a suffix range is
//     dropped here for the same answer.
func normalizeRangeHeaders(r *http.Request, size int64, modtime, now time.Time) {
	rng := r.Header.Get("Range")
	if rng == "" {
		return
	}
	if ir := r.Header.Get("If-Range"); ir != "" && !strings.HasPrefix(ir, `"`) && !strings.HasPrefix(ir, "W/") {
		if _, err := http.ParseTime(ir); err != nil || !modtime.Before(now.Add(-time.Second)) {
			r.Header.Del("Range")
			r.Header.Del("If-Range")
			return
		}
	}
	out, ok := normalizeRange(rng, size)
	if !ok {
		r.Header.Del("Range")
		return
	}
	r.Header.Set("Range", out)
}

// normalizeRange returns a cleaned Range value for a representation of
// size bytes, or ok=false if the header is to be ignored.
func normalizeRange(h string, size int64) (string, bool) {
	unit, set, found := strings.Cut(h, "=")
	if !found || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return "", false
	}
	var (
		specs       []string
		n           int
		sawSpec     bool
		sawSuffixOn bool // a non-zero suffix range (relevant to empty files)
	)
	for spec := range strings.SplitSeq(set, ",") {
		spec = strings.Trim(spec, " \t")
		if spec == "" {
			continue // RFC 9110 list syntax allows empty elements
		}
		if n++; n > maxRanges {
			return "", false
		}
		sawSpec = true
		first, last, found := strings.Cut(spec, "-")
		if !found {
			return "", false
		}
		first, last = strings.Trim(first, " \t"), strings.Trim(last, " \t")
		if first == "" {
			suffix, ok := parsePos(last)
			if !ok {
				return "", false
			}
			if suffix == 0 {
				continue // unsatisfiable
			}
			sawSuffixOn = true
			specs = append(specs, "-"+strconv.FormatInt(min(suffix, max(size, 1)), 10))
			continue
		}
		a, ok := parsePos(first)
		if !ok {
			return "", false
		}
		b := int64(-1)
		if last != "" {
			if b, ok = parsePos(last); !ok || b < a {
				return "", false
			}
		}
		if a >= size {
			continue // unsatisfiable
		}
		if b < 0 {
			specs = append(specs, strconv.FormatInt(a, 10)+"-")
		} else {
			specs = append(specs, strconv.FormatInt(a, 10)+"-"+strconv.FormatInt(min(b, size-1), 10))
		}
	}
	switch {
	case !sawSpec:
		return "", false
	case size == 0 && sawSuffixOn:
		return "", false
	case len(specs) == 0:
		// ServeContent answers this one with 416 and Content-Range */size.
		return "bytes=" + strconv.FormatInt(size, 10) + "-", true
	}
	return "bytes=" + strings.Join(specs, ","), true
}

// parsePos parses 1*DIGIT, clamping values beyond int64.
func parsePos(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var v int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if v > (1<<63-1-9)/10 {
			v = 1<<63 - 1
			continue
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}
