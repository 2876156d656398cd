package main

// zarrfs prefetch --order: tell a mount's daemon the order of the coming
// reads (one target a line), so it fetches exactly that sequence ahead of
// the reader.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/zarrfs/zarrfs/vfs"
)

// maxOrderLine bounds one line of an order.
const maxOrderLine = 64 << 10

// sendOrder reads an order from file ("-": stdin) and hands it to the
// daemon of the mount its targets are in.
func sendOrder(file string, quiet bool) error {
	in := io.Reader(os.Stdin)
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("read the order: %w", err)
		}
		defer f.Close()
		in = f
	}
	mnt, targets, err := parseOrder(in)
	if err != nil {
		return err
	}
	c, err := dialControl(mnt)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var p vfs.OrderProgress
	if err := c.sendJSON(ctx, http.MethodPost, "/v1/order", orderRequest{Targets: targets}, &p); err != nil {
		return err
	}
	if !quiet {
		fmt.Fprintf(os.Stderr, "zarrfs: order %d of %s: %d targets, %d chunks (%s), fetching in order\n",
			p.ID, mnt, p.Targets, p.Keys, humanize.IBytes(uint64(p.Bytes)))
	}
	return nil
}

// parseOrder reads order lines: PATH or PATH[start:stop], every PATH inside
// one zarrfs mount. Empty lines and lines starting with # are skipped.
func parseOrder(in io.Reader) (mnt string, targets []vfs.OrderTarget, err error) {
	type place struct{ mnt, rel string }
	places := map[string]place{} // directory of a line's path → its mount and store path
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 4096), maxOrderLine)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, rows, err := splitRows(line)
		if err != nil {
			return "", nil, fmt.Errorf("%w: order line %d %q: %v", errUsage, n, line, err)
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", nil, err
		}
		// Lines name a few arrays many times: find each one's mount once.
		pl, ok := places[abs]
		if !ok {
			m, err := mountRootOf(abs)
			if err != nil {
				return "", nil, fmt.Errorf("order line %d: %s: %w", n, p, err)
			}
			rel, err := filepath.Rel(m, abs)
			if err != nil {
				return "", nil, err
			}
			if rel == "." {
				rel = ""
			}
			pl = place{mnt: m, rel: filepath.ToSlash(rel)}
			places[abs] = pl
		}
		if mnt == "" {
			mnt = pl.mnt
		} else if pl.mnt != mnt {
			return "", nil, fmt.Errorf("%w: order line %d: %s is in the mount %s, earlier lines in %s: send one order per mount", errUsage, n, p, pl.mnt, mnt)
		}
		targets = append(targets, vfs.OrderTarget{Path: pl.rel, Rows: rows})
	}
	if err := sc.Err(); err != nil {
		return "", nil, fmt.Errorf("read the order: %w", err)
	}
	if len(targets) == 0 {
		return "", nil, fmt.Errorf("%w: the order is empty: give one target a line, e.g. /content/era5/t2m[480:504]", errUsage)
	}
	return mnt, targets, nil
}

// splitRows splits "PATH[start:stop]" into PATH and the row range; a PATH
// without brackets has none. An empty start is 0; an empty stop the end.
func splitRows(s string) (string, *[2]int64, error) {
	if !strings.HasSuffix(s, "]") {
		return s, nil, nil
	}
	i := strings.LastIndexByte(s, '[')
	if i < 0 {
		return "", nil, fmt.Errorf("a ']' without '['")
	}
	lo, hi, ok := strings.Cut(s[i+1:len(s)-1], ":")
	if !ok {
		return "", nil, fmt.Errorf("want [start:stop] along the first dimension")
	}
	r := [2]int64{0, 1<<63 - 1}
	var err error
	if lo = strings.TrimSpace(lo); lo != "" {
		if r[0], err = strconv.ParseInt(lo, 10, 64); err != nil || r[0] < 0 {
			return "", nil, fmt.Errorf("start %q is not a number >= 0", lo)
		}
	}
	if hi = strings.TrimSpace(hi); hi != "" {
		if r[1], err = strconv.ParseInt(hi, 10, 64); err != nil || r[1] <= r[0] {
			return "", nil, fmt.Errorf("stop %q must be a number above the start", hi)
		}
	}
	return s[:i], &r, nil
}
