package integration

// Prefetching end to end (issue 5): `zarrfs prefetch --wait` warms a store (or a slice of an
// array) through the running mount so that reading it afterwards costs no request, and a
// shuffled lockstep read of two arrays — the shape of a training loop — is prefetched: the
// planner recognises the shuffle and fills the cache, each chunk is requested once, and every
// byte read is the origin's.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runZarrfs runs the binary under test to completion (bounded) and returns its output.
func runZarrfs(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, zarrfsBin, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// chunkRequests counts the origin's requests for chunk keys of the store, from the n-th on.
func chunkRequests(o *origin, store string, from int) []string {
	var out []string
	for _, r := range o.requests()[from:] {
		key := strings.TrimPrefix(r.Path, "/"+store+"/")
		if key == r.Path || strings.HasPrefix(filepath.Base(key), ".") || strings.HasPrefix(key, ".") {
			continue // not in the store, a metadata document, or the manifest
		}
		out = append(out, r.Method+" "+key)
	}
	return out
}

// readKey reads a store key through the mount: its bytes, or nil with fs.ErrNotExist.
func readKey(m *mounted, key string) ([]byte, error) {
	return os.ReadFile(m.path(key))
}

func TestPrefetchWaitThenReadsAreLocal(t *testing.T) {
	dir := t.TempDir()
	s := generateStore(t, dir, 5)
	o := newOrigin(t, dir)

	t.Run("whole store", func(t *testing.T) {
		m := mount(t, o.URL(cacheStoreName))
		out, err := runZarrfs(t, "prefetch", "--wait", m.Dir)
		if err != nil {
			t.Fatalf("zarrfs prefetch --wait: %v\n%s", err, out)
		}
		if !strings.Contains(out, "done") || !strings.Contains(out, fmt.Sprintf("%d missing", len(s.missing))) {
			t.Errorf("prefetch output does not report the end and the %d missing chunks:\n%s", len(s.missing), out)
		}
		before := len(o.requests())
		for _, key := range s.chunks {
			got, err := readKey(m, key)
			if err != nil {
				t.Fatalf("read %s: %v", key, err)
			}
			if !bytes.Equal(got, s.files[key]) {
				t.Fatalf("%s: %d bytes differ from the origin's %d", key, len(got), len(s.files[key]))
			}
		}
		for _, key := range s.missing {
			if _, err := readKey(m, key); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("missing chunk %s: %v, want ENOENT", key, err)
			}
		}
		if reqs := chunkRequests(o, cacheStoreName, before); len(reqs) > 0 {
			t.Fatalf("reading a prefetched store made %d chunk requests, want 0: %v", len(reqs), reqs[:min(5, len(reqs))])
		}
	})

	t.Run("slice of an array", func(t *testing.T) {
		m := mount(t, o.URL(cacheStoreName))
		// Rows 2 and 3 of the 16x16 chunk grid of a.
		out, err := runZarrfs(t, "prefetch", "--wait", m.path("a")+"[2:4]")
		if err != nil {
			t.Fatalf("zarrfs prefetch --wait a[2:4]: %v\n%s", err, out)
		}
		before := len(o.requests())
		var slice []string
		for _, key := range s.chunks {
			if strings.HasPrefix(key, "a/2.") || strings.HasPrefix(key, "a/3.") {
				slice = append(slice, key)
				if _, err := readKey(m, key); err != nil {
					t.Fatalf("read %s: %v", key, err)
				}
			}
		}
		// Reading them in order makes the planner fetch the next rows ahead: only
		// requests for the slice's own chunks count.
		for _, r := range chunkRequests(o, cacheStoreName, before) {
			for _, key := range slice {
				if r == "GET "+key {
					t.Fatalf("%s was prefetched, yet reading it made a request", key)
				}
			}
		}
		// Outside the slice nothing was fetched.
		outside := "a/12.9"
		if _, ok := s.files[outside]; !ok {
			outside = "a/12.8"
		}
		before = len(o.requests())
		if _, err := readKey(m, outside); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range chunkRequests(o, cacheStoreName, before) {
			if r == "GET "+outside {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("a chunk outside the slice: %d requests, want 1", n)
		}
	})

	t.Run("bad targets", func(t *testing.T) {
		m := mount(t, o.URL(cacheStoreName))
		for _, arg := range []string{m.path("nosuch"), m.path("a") + "[20:30]", m.path("a") + "[1:2,3:4,5:6]", t.TempDir()} {
			out, err := runZarrfs(t, "prefetch", "--wait", arg)
			if err == nil {
				t.Errorf("zarrfs prefetch %s succeeded:\n%s", arg, out)
			}
		}
	})
}

// writeLockstepStore writes a v2 store with arrays x (n×64 bytes, 1-d chunks of `rows` rows of
// 64 bytes: uint8 (n, 64)) and y (n int64, same leading chunking), uncompressed, consolidated.
func writeLockstepStore(t testing.TB, dir string, slabs, rows int, seed uint64) map[string][]byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	n := slabs * rows
	files := map[string][]byte{}
	zx := map[string]any{"zarr_format": 2, "shape": []int{n, 64}, "chunks": []int{rows, 64}, "dtype": "|u1",
		"compressor": nil, "fill_value": 0, "order": "C", "filters": nil, "dimension_separator": "."}
	zy := map[string]any{"zarr_format": 2, "shape": []int{n}, "chunks": []int{rows}, "dtype": "<i8",
		"compressor": nil, "fill_value": 0, "order": "C", "filters": nil}
	meta := map[string]any{".zgroup": map[string]any{"zarr_format": 2}, "x/.zarray": zx, "y/.zarray": zy}
	for k, v := range meta {
		b, _ := json.Marshal(v)
		files[k] = b
	}
	zm, _ := json.Marshal(map[string]any{"zarr_consolidated_format": 1, "metadata": meta})
	files[".zmetadata"] = zm
	for i := range slabs {
		x := make([]byte, rows*64)
		for j := range x {
			x[j] = byte(rng.Uint32())
		}
		y := make([]byte, rows*8)
		for j := range y {
			y[j] = byte(rng.Uint32())
		}
		files[fmt.Sprintf("x/%d.0", i)] = x
		files[fmt.Sprintf("y/%d", i)] = y
	}
	for k, b := range files {
		p := filepath.Join(dir, filepath.FromSlash(k))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, p, b)
	}
	return files
}

// mountStats asks the daemon of mnt for its counters.
func mountStats(t testing.TB, mnt string) map[string]any {
	t.Helper()
	out, err := runZarrfs(t, "stats", "--json", mnt)
	if err != nil {
		t.Fatalf("zarrfs stats --json: %v\n%s", err, out)
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("stats: %v\n%s", err, out)
	}
	return s
}

func TestPrefetchShuffledLockstepRead(t *testing.T) {
	dir := t.TempDir()
	const slabs = 40
	files := writeLockstepStore(t, filepath.Join(dir, "train.zarr"), slabs, 256, 9)
	// A round trip per request, as over a WAN, so that fetching ahead pays.
	var opts []originOption
	for i := range slabs {
		opts = append(opts, withDelay(fmt.Sprintf("/train.zarr/x/%d.0", i), 15*time.Millisecond),
			withDelay(fmt.Sprintf("/train.zarr/y/%d", i), 15*time.Millisecond))
	}
	o := newOrigin(t, dir, opts...)
	m := mount(t, o.URL("train.zarr"))

	// One epoch in a shuffled order, x and y of each slab together, as a training loop does.
	order := rand.New(rand.NewPCG(3, 3)).Perm(slabs)
	for _, i := range order {
		for _, key := range []string{fmt.Sprintf("x/%d.0", i), fmt.Sprintf("y/%d", i)} {
			got, err := readKey(m, key)
			if err != nil {
				t.Fatalf("read %s: %v", key, err)
			}
			if !bytes.Equal(got, files[key]) {
				t.Fatalf("%s: wrong bytes", key)
			}
		}
	}
	// Each chunk was requested once, whether the reader or a prefetch asked first.
	seen := map[string]int{}
	for _, r := range chunkRequests(o, "train.zarr", 0) {
		seen[r]++
	}
	for key, n := range seen {
		if n != 1 {
			t.Errorf("%s requested %d times", key, n)
		}
	}
	if len(seen) != 2*slabs {
		t.Errorf("%d chunks requested, want %d: %v", len(seen), 2*slabs, seen)
	}

	st := mountStats(t, m.Dir)
	pf, _ := st["prefetch"].(map[string]any)
	planner, _ := pf["planner"].(map[string]any)
	used, _ := pf["used_bytes"].(float64)
	late, _ := pf["late_bytes"].(float64)
	fills, _ := planner["fills_started"].(float64)
	lockstep, _ := planner["lockstep_requests"].(float64)
	if used <= 0 || fills != 1 || lockstep <= 0 {
		t.Fatalf("prefetch counters: used %v bytes (late %v), %v fills, %v lockstep requests; want used > 0, one fill, lockstep > 0\n%v",
			used, late, fills, lockstep, pf)
	}
	t.Logf("prefetched then read: %.0f bytes (+%.0f read while arriving), stalls %v", used, late, pf["stalls"])
}
