package serve

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/zarrfs/zarrfs/internal/testutil"
	"github.com/zarrfs/zarrfs/remote/wire"
	"golang.org/x/sys/unix"
)

// indexTestServer is a Server on dir (no HTTP listener) whose log is kept.
func indexTestServer(t testing.TB, dir string) (*Server, *testutil.SyncBuffer) {
	t.Helper()
	logBuf := &testutil.SyncBuffer{}
	s, err := New(Config{Dir: dir, NoAuth: true, Logger: slog.New(slog.NewTextHandler(logBuf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, logBuf
}

// walkBytes is the uncompressed manifest the per-request walk produces.
func walkBytes(t testing.TB, s *Server, base, prefix string) []byte {
	t.Helper()
	rel := relOf(base)
	f, err := s.root.Open(rel)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	enc := wire.NewEncoder(&buf)
	if err := enc.WriteHeader(); err != nil {
		t.Fatal(err)
	}
	wk := &manifestWalker{s: s, ctx: context.Background(), prefix: prefix, enc: enc}
	if err := wk.walk(f, rel, ""); err != nil {
		t.Fatalf("walk: %v", err)
	}
	if err := enc.End(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// readyIndex returns the index of base, built and trusted.
func readyIndex(t testing.TB, s *Server, base string) *manifestIndex {
	t.Helper()
	ix := s.indexes.get(base)
	if ix == nil {
		t.Fatal("no index: the server is closed")
	}
	if err := ix.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer ix.release()
	if ix.state != indexReady {
		t.Fatalf("index of %q not ready: state %d, %v", base, ix.state, ix.failure)
	}
	return ix
}

// indexBytes brings ix up to date (no sleeping: the drain makes it exact)
// and returns its uncompressed manifest for prefix.
func indexBytes(t testing.TB, ix *manifestIndex, prefix string) []byte {
	t.Helper()
	if err := ix.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer ix.release()
	if ix.state != indexReady {
		t.Fatalf("index not ready: state %d, %v", ix.state, ix.failure)
	}
	if err := ix.syncLocked(context.Background()); err != nil {
		t.Fatalf("sync: %v", err)
	}
	var buf bytes.Buffer
	if _, err := ix.writeManifestLocked(&buf, prefix, true); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// requestManifest asks the server over its handler and returns the
// status, the ETag header and the uncompressed body.
func requestManifest(t testing.TB, s *Server, base, prefix, inm string) (int, string, []byte) {
	t.Helper()
	target := "/" + wire.ManifestPath
	if base != "" {
		target = "/" + base + target
	}
	if prefix != "" {
		target += "?prefix=" + prefix
	}
	req := httptest.NewRequest("GET", target, nil)
	if inm != "" {
		req.Header.Set("If-None-Match", inm)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != 200 {
		return rec.Code, rec.Header().Get("ETag"), nil
	}
	zr, err := zstd.NewReader(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var out bytes.Buffer
	if _, err := out.ReadFrom(zr); err != nil {
		t.Fatalf("decompress: %v", err)
	}
	return rec.Code, rec.Header().Get("ETag"), out.Bytes()
}

// diffManifests names the first difference of two uncompressed manifests.
func diffManifests(t testing.TB, got, want []byte) string {
	t.Helper()
	if bytes.Equal(got, want) {
		return ""
	}
	g, err1 := decodeManifest(bytes.NewReader(got))
	w, err2 := decodeManifest(bytes.NewReader(want))
	if err1 != nil || err2 != nil {
		return fmt.Sprintf("undecodable: %v / %v", err1, err2)
	}
	ge, we := manifestEntries(g), manifestEntries(w)
	for i := range max(len(ge), len(we)) {
		switch {
		case i >= len(ge):
			return fmt.Sprintf("index lacks %v", we[i])
		case i >= len(we):
			return fmt.Sprintf("index has extra %v", ge[i])
		case ge[i] != we[i]:
			return fmt.Sprintf("index has %v, walk has %v", ge[i], we[i])
		}
	}
	return "same entries, different bytes"
}

// treeGen makes random trees whose names mix the characters that sort
// around '/'.
type treeGen struct {
	rng  *rand.Rand
	root string
}

func (g *treeGen) name() string {
	alphabet := []string{"a", "b", ".", "-", "0", "1", "A", "_", " ", "é"}
	for {
		var b strings.Builder
		for range 1 + g.rng.IntN(3) {
			b.WriteString(alphabet[g.rng.IntN(len(alphabet))])
		}
		if s := b.String(); s != "." && s != ".." && s != wire.ReservedSegment {
			return s
		}
	}
}

// dirs lists the directories below the root (root included, as ".").
func (g *treeGen) dirs(t testing.TB) []string {
	var out []string
	filepath.WalkDir(g.root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			rel, _ := filepath.Rel(g.root, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func (g *treeGen) files(t testing.TB) []string {
	var out []string
	filepath.WalkDir(g.root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(g.root, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func (g *treeGen) pick(list []string) string { return list[g.rng.IntN(len(list))] }

func (g *treeGen) write(t testing.TB, rel string, n int) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(g.root, rel), bytes.Repeat([]byte{byte('a' + g.rng.IntN(26))}, n), 0o644); err != nil && !os.IsExist(err) {
		// A name taken by a directory: fine, the mutation is skipped.
		if fi, serr := os.Stat(filepath.Join(g.root, rel)); serr != nil || !fi.IsDir() {
			t.Fatal(err)
		}
	}
}

func (g *treeGen) populate(t testing.TB, n int) {
	for range n {
		dir := "."
		for range g.rng.IntN(4) {
			dir = filepath.Join(dir, g.name())
			if fi, err := os.Stat(filepath.Join(g.root, dir)); err == nil && !fi.IsDir() {
				dir = ""
				break
			}
		}
		if dir == "" {
			continue
		}
		if err := os.MkdirAll(filepath.Join(g.root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		g.write(t, filepath.Join(dir, g.name()), g.rng.IntN(50))
	}
}

// mutations are the changes the index must follow, each named.
var mutations = []struct {
	name string
	do   func(t testing.TB, g *treeGen) string
}{
	{"create", func(t testing.TB, g *treeGen) string {
		p := filepath.Join(g.pick(g.dirs(t)), g.name())
		g.write(t, p, g.rng.IntN(40))
		return p
	}},
	{"overwrite same size", func(t testing.TB, g *treeGen) string {
		fs := g.files(t)
		if len(fs) == 0 {
			return ""
		}
		p := g.pick(fs)
		fi, _ := os.Stat(filepath.Join(g.root, p))
		g.write(t, p, int(fi.Size()))
		return p
	}},
	{"truncate", func(t testing.TB, g *treeGen) string {
		fs := g.files(t)
		if len(fs) == 0 {
			return ""
		}
		p := g.pick(fs)
		os.Truncate(filepath.Join(g.root, p), int64(g.rng.IntN(5)))
		return p
	}},
	{"chmod", func(t testing.TB, g *treeGen) string {
		fs := g.files(t)
		if len(fs) == 0 {
			return ""
		}
		p := g.pick(fs)
		os.Chmod(filepath.Join(g.root, p), os.FileMode(0o600+g.rng.IntN(0o77)))
		return p
	}},
	{"remove file", func(t testing.TB, g *treeGen) string {
		fs := g.files(t)
		if len(fs) == 0 {
			return ""
		}
		p := g.pick(fs)
		os.Remove(filepath.Join(g.root, p))
		return p
	}},
	{"rename file", func(t testing.TB, g *treeGen) string {
		fs := g.files(t)
		if len(fs) == 0 {
			return ""
		}
		from := g.pick(fs)
		to := filepath.Join(g.pick(g.dirs(t)), g.name())
		os.Rename(filepath.Join(g.root, from), filepath.Join(g.root, to)) // may replace a file, or fail on a directory
		return from + " -> " + to
	}},
	{"rename dir", func(t testing.TB, g *treeGen) string {
		ds := g.dirs(t)
		if len(ds) < 2 {
			return ""
		}
		from := g.pick(ds[1:])
		to := filepath.Join(g.pick(ds), g.name())
		os.Rename(filepath.Join(g.root, from), filepath.Join(g.root, to)) // fails into itself or onto a non-empty dir
		return from + " -> " + to
	}},
	{"remove subtree", func(t testing.TB, g *treeGen) string {
		ds := g.dirs(t)
		if len(ds) < 2 {
			return ""
		}
		p := g.pick(ds[1:])
		os.RemoveAll(filepath.Join(g.root, p))
		return p
	}},
	{"new nested dir with files", func(t testing.TB, g *treeGen) string {
		// Files right after mkdir: the race between mkdir and the watch.
		p := filepath.Join(g.pick(g.dirs(t)), g.name(), g.name(), g.name())
		if err := os.MkdirAll(filepath.Join(g.root, p), 0o755); err != nil {
			return "" // a file is in the way
		}
		for range 1 + g.rng.IntN(5) {
			g.write(t, filepath.Join(p, g.name()), g.rng.IntN(30))
		}
		return p
	}},
	{"file becomes dir", func(t testing.TB, g *treeGen) string {
		fs := g.files(t)
		if len(fs) == 0 {
			return ""
		}
		p := g.pick(fs)
		os.Remove(filepath.Join(g.root, p))
		os.Mkdir(filepath.Join(g.root, p), 0o755)
		g.write(t, filepath.Join(p, "inner"), 3)
		return p
	}},
	{"dir becomes file", func(t testing.TB, g *treeGen) string {
		ds := g.dirs(t)
		if len(ds) < 2 {
			return ""
		}
		p := g.pick(ds[1:])
		os.RemoveAll(filepath.Join(g.root, p))
		g.write(t, p, 7)
		return p
	}},
	{"move dir out and back under another name", func(t testing.TB, g *treeGen) string {
		ds := g.dirs(t)
		if len(ds) < 2 {
			return ""
		}
		p := g.pick(ds[1:])
		out := filepath.Join(filepath.Dir(g.root), "outside-"+fmt.Sprint(g.rng.Uint32()))
		if os.Rename(filepath.Join(g.root, p), out) != nil {
			return ""
		}
		os.WriteFile(filepath.Join(out, "written-outside"), []byte("x"), 0o644)
		os.Rename(out, filepath.Join(g.root, g.name()+"-back"))
		os.RemoveAll(out)
		return p
	}},
	{"hard link", func(t testing.TB, g *treeGen) string {
		// The other name's ctime moves without an event for it.
		fs := g.files(t)
		if len(fs) == 0 {
			return ""
		}
		from := g.pick(fs)
		to := filepath.Join(g.pick(g.dirs(t)), g.name()+"-link")
		os.Link(filepath.Join(g.root, from), filepath.Join(g.root, to))
		return from + " -> " + to
	}},
	{"non-regular file", func(t testing.TB, g *treeGen) string {
		p := filepath.Join(g.pick(g.dirs(t)), g.name()+"-fifo")
		unix.Mkfifo(filepath.Join(g.root, p), 0o644)
		return p
	}},
}

// TestIndexMatchesWalk: over random trees, the index's manifest is byte
// for byte the walk's, after the build and after every mutation, for the
// whole store and for prefixes, without any sleep between the change and
// the request.
func TestIndexMatchesWalk(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			top := t.TempDir()
			store := filepath.Join(top, "store")
			os.Mkdir(store, 0o755)
			g := &treeGen{rng: rand.New(rand.NewPCG(seed, 11)), root: store}
			g.populate(t, 150)
			s, logBuf := indexTestServer(t, store)
			ix := readyIndex(t, s, "")
			check := func(what string) {
				t.Helper()
				want := walkBytes(t, s, "", "")
				if d := diffManifests(t, indexBytes(t, ix, ""), want); d != "" {
					t.Fatalf("after %s: %s", what, d)
				}
				for _, p := range []string{"a", "a/", "é", g.name(), g.name() + "/" + g.name()} {
					if d := diffManifests(t, indexBytes(t, ix, p), walkBytes(t, s, "", p)); d != "" {
						t.Fatalf("after %s, prefix %q: %s", what, p, d)
					}
				}
				// And through the handler (cached compressed body).
				code, _, body := requestManifest(t, s, "", "", "")
				if code != 200 || !bytes.Equal(body, want) {
					t.Fatalf("after %s: the handler answers %d, %s", what, code, diffManifests(t, body, want))
				}
			}
			check("the build")
			for i := range 120 {
				m := mutations[g.rng.IntN(len(mutations))]
				what := m.do(t, g)
				check(fmt.Sprintf("mutation %d: %s %s", i, m.name, what))
			}
			if strings.Contains(logBuf.String(), "manifest index off") {
				t.Errorf("the index went off:\n%s", logBuf)
			}
		})
	}
}

// TestIndexEveryMutation runs each mutation kind on its own, so that a
// failure names it.
func TestIndexEveryMutation(t *testing.T) {
	for i, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			store := filepath.Join(t.TempDir(), "store")
			os.Mkdir(store, 0o755)
			g := &treeGen{rng: rand.New(rand.NewPCG(uint64(i), 3)), root: store}
			g.populate(t, 60)
			s, _ := indexTestServer(t, store)
			ix := readyIndex(t, s, "")
			for range 10 {
				what := m.do(t, g)
				if d := diffManifests(t, indexBytes(t, ix, ""), walkBytes(t, s, "", "")); d != "" {
					t.Fatalf("%s %s: %s", m.name, what, d)
				}
			}
		})
	}
}

// TestIndexManyFilesOneByOne: a writer creating files one at a time in
// one directory (the pending set and its merges), then removing most.
func TestIndexManyFilesOneByOne(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	os.MkdirAll(filepath.Join(store, "x"), 0o755)
	s, _ := indexTestServer(t, store)
	ix := readyIndex(t, s, "")
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 6000
	for i := range n {
		name := fmt.Sprintf("%d.%d", rng.IntN(100), i)
		os.WriteFile(filepath.Join(store, "x", name), []byte("v"), 0o644)
		if i%1500 == 0 {
			if d := diffManifests(t, indexBytes(t, ix, ""), walkBytes(t, s, "", "")); d != "" {
				t.Fatalf("after %d files: %s", i+1, d)
			}
		}
	}
	ents, _ := os.ReadDir(filepath.Join(store, "x"))
	for i, e := range ents {
		if i%5 != 0 {
			os.Remove(filepath.Join(store, "x", e.Name()))
		}
	}
	if d := diffManifests(t, indexBytes(t, ix, ""), walkBytes(t, s, "", "")); d != "" {
		t.Fatalf("after removals: %s", d)
	}
	ix.acquire(context.Background())
	keys := ix.keys
	ix.release()
	if want := (len(ents) + 4) / 5; keys != want {
		t.Errorf("index counts %d keys, want %d", keys, want)
	}
}

// TestIdxDirModel checks upsert/remove/merge against a map.
func TestIdxDirModel(t *testing.T) {
	for seed := range uint64(5) {
		rng := rand.New(rand.NewPCG(seed, 5))
		d := &idxDir{}
		model := map[string]int64{}
		for op := range 20000 {
			name := []byte(fmt.Sprintf("k%d", rng.IntN(3000)))
			if rng.IntN(3) == 0 {
				_, had := model[string(name)]
				if got := d.remove(name); got != had {
					t.Fatalf("seed %d op %d: remove(%s) = %v, model had it: %v", seed, op, name, got, had)
				}
				delete(model, string(name))
				continue
			}
			size := int64(rng.IntN(4))
			old, had := model[string(name)]
			changed, added := d.upsert(name, kindFile, size, uint64(size))
			if added != !had || changed != (!had || old != size) {
				t.Fatalf("seed %d op %d: upsert(%s) = %v %v; model had %v (%d)", seed, op, name, changed, added, had, old)
			}
			model[string(name)] = size
			if op%4000 == 0 {
				d.merge()
			}
		}
		d.merge()
		var got []string
		for i := range d.ents {
			got = append(got, string(d.sortName(&d.ents[i])))
		}
		want := slices.Sorted(func(yield func(string) bool) {
			for k := range model {
				if !yield(k) {
					return
				}
			}
		})
		if !slices.Equal(got, want) {
			t.Fatalf("seed %d: %d entries after merge, want %d", seed, len(got), len(want))
		}
		for i := range d.ents {
			if d.ents[i].size != model[got[i]] {
				t.Fatalf("seed %d: %s size %d, want %d", seed, got[i], d.ents[i].size, model[got[i]])
			}
		}
	}
}

// TestSortEntries: the parallel sort orders like slices.SortFunc and hands
// every entry to done exactly once, for sizes around the split threshold
// and names that share their first 8 bytes.
func TestSortEntries(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4)) // split twice even on a small machine
	tests := []struct {
		n      int
		common string // shared first bytes of every name
	}{
		{0, ""}, {1, ""}, {100, ""}, {1<<15 - 1, ""}, {1 << 15, ""}, {70000, ""}, {150000, "0123456789"}, {150000, "x/"},
	}
	for _, tc := range tests {
		rng := rand.New(rand.NewPCG(uint64(tc.n), 1))
		d := &dirListing{}
		for i := range tc.n {
			name := fmt.Sprintf("%s%d.%d", tc.common, rng.IntN(1000), i)
			off := uint32(len(d.arena))
			d.arena = append(d.arena, name...)
			var pre [8]byte
			copy(pre[:], name)
			d.listed = append(d.listed, listEnt{sortPrefix: binary.BigEndian.Uint64(pre[:]), pos: int64(i), off: off, n: uint16(len(name))})
		}
		cmp := func(a, b listEnt) int {
			if c := cmp.Compare(a.sortPrefix, b.sortPrefix); c != 0 {
				return c
			}
			return bytes.Compare(d.arena[a.off:a.off+uint32(a.n)], d.arena[b.off:b.off+uint32(b.n)])
		}
		want := slices.Clone(d.listed)
		slices.SortFunc(want, cmp)
		var mu sync.Mutex
		seen := make([]int, tc.n)
		sortEntries(d.listed, cmp, func(part []listEnt) {
			mu.Lock()
			defer mu.Unlock()
			for _, e := range part {
				seen[e.pos]++
			}
		})
		if !slices.Equal(d.listed, want) {
			t.Errorf("n=%d %q: order differs from slices.SortFunc", tc.n, tc.common)
		}
		for i, c := range seen {
			if c != 1 {
				t.Fatalf("n=%d %q: entry %d handed to done %d times", tc.n, tc.common, i, c)
			}
		}
	}
}

// TestWalkLargeDirectory: a directory of several stat batches (stat'ed by
// the pipeline while it is listed) with subdirectories, a FIFO and hard
// links among its files is listed exactly: every regular file with its
// size and ETag, in key order, for the whole store and for prefixes; and
// the index says the same.
func TestWalkLargeDirectory(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	x := filepath.Join(store, "x")
	os.MkdirAll(x, 0o755)
	const n = 3*statBatch + 123
	for i := range n {
		os.WriteFile(filepath.Join(x, fmt.Sprintf("%d.%d", i%97, i)), make([]byte, i%7), 0o644)
	}
	for _, d := range []string{"5.x", "5", "50.1/deep"} {
		os.MkdirAll(filepath.Join(x, d), 0o755)
		os.WriteFile(filepath.Join(x, d, "c"), []byte("c"), 0o644)
	}
	if err := os.Link(filepath.Join(x, "1.1"), filepath.Join(x, "1.1-link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(x, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, _ := indexTestServer(t, store)
	files := walkFiles(t, store)
	for _, prefix := range []string{"", "x/", "x/5", "x/5.", "x/50.1/", "x/96.", "y"} {
		m, err := decodeManifest(bytes.NewReader(walkBytes(t, s, "", prefix)))
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for k := range files {
			if strings.HasPrefix(k, prefix) {
				want = append(want, k)
			}
		}
		slices.Sort(want)
		var got []string
		for _, e := range manifestEntries(m) {
			got = append(got, e.key)
			var st syscall.Stat_t
			if err := syscall.Lstat(filepath.Join(store, e.key), &st); err != nil {
				t.Fatal(err)
			}
			if tag := wire.ETagOfHash(wire.FileHash(&st)); e.size != files[e.key] || e.version != string(tag[:]) {
				t.Fatalf("prefix %q: %s listed as %d %s, is %d %s", prefix, e.key, e.size, e.version, files[e.key], tag[:])
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("prefix %q: %d keys listed, want %d", prefix, len(got), len(want))
		}
	}
	ix := readyIndex(t, s, "")
	if d := diffManifests(t, indexBytes(t, ix, ""), walkBytes(t, s, "", "")); d != "" {
		t.Fatal(d)
	}
	ix.acquire(context.Background())
	keys, multi := ix.keys, len(ix.multi)
	ix.release()
	if keys != len(files) || multi != 2 {
		t.Errorf("index: %d keys, %d hard-linked; want %d, 2", keys, multi, len(files))
	}
}

// TestStatJobSkipsWhatIsNoFile: the stat of a listed name that is gone,
// is not a regular file or was left out is not listed and is no error; a
// hard-linked file is reported.
func TestStatJobSkipsWhatIsNoFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("abc"), 0o644)
	os.Link(filepath.Join(dir, "f"), filepath.Join(dir, "f2"))
	os.WriteFile(filepath.Join(dir, "g"), []byte("g"), 0o644)
	os.Mkdir(filepath.Join(dir, "d"), 0o755)
	unix.Mkfifo(filepath.Join(dir, "p"), 0o644)
	s, _ := indexTestServer(t, dir)
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	j := &statJob{}
	items := []struct {
		name string
		kind uint8
		size int64 // -1: not listed
	}{
		{"f", kindFile, 3}, {"gone", kindFile, -1}, {"d", kindFile, -1}, {"p", kindFile, -1}, {"g", kindDead, -1}, {"g", kindFile, 1},
	}
	for _, it := range items {
		j.items = append(j.items, statItem{off: uint32(len(j.names)), n: uint16(len(it.name)), kind: it.kind})
		j.names = append(j.names, it.name...)
	}
	j.res = make([]fileMeta, len(items))
	p := &statPipeline{wk: &manifestWalker{s: s, ctx: context.Background()}, fd: int(f.Fd()), rel: "."}
	var st syscall.Stat_t
	p.run(j, &st)
	if j.err != nil {
		t.Fatal(j.err)
	}
	for k, it := range items {
		if j.res[k].size != it.size {
			t.Errorf("%s (kind %d): size %d, want %d", it.name, it.kind, j.res[k].size, it.size)
		}
	}
	if len(j.linked) != 1 || j.linked[0].name != "f" {
		t.Errorf("hard-linked files reported: %+v, want f", j.linked)
	}
}

// overflowEvent is the record the kernel queues when events were lost.
func overflowEvent() []byte {
	b := make([]byte, unix.SizeofInotifyEvent)
	binary.NativeEndian.PutUint32(b[0:4], ^uint32(0))
	binary.NativeEndian.PutUint32(b[4:8], unix.IN_Q_OVERFLOW)
	return b
}

// TestIndexOverflowRebuilds: lost events (the kernel's IN_Q_OVERFLOW, or
// the index's own queue bound) make the next request rebuild the index,
// and the answer is still exact.
func TestIndexOverflowRebuilds(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	os.MkdirAll(filepath.Join(store, "a"), 0o755)
	os.WriteFile(filepath.Join(store, "a", "0"), []byte("0"), 0o644)
	t.Cleanup(func() { inotifyAddWatch = unix.InotifyAddWatch }) // after the server's Close
	s, _ := indexTestServer(t, store)
	ix := readyIndex(t, s, "")

	// Hooks are read under the index's lock (and queue lock): set them so.
	watches := 0
	ix.acquire(context.Background())
	inotifyAddWatch = func(fd int, p string, mask uint32) (int, error) {
		watches++
		return unix.InotifyAddWatch(fd, p, mask)
	}
	ix.release()

	// The kernel's overflow record, as the reader would queue it.
	os.WriteFile(filepath.Join(store, "a", "1"), []byte("1"), 0o644)
	ix.acquire(context.Background())
	ix.qmu.Lock()
	ix.readEventsLocked()
	ix.queue = append(overflowEvent(), ix.queue...)
	ix.qmu.Unlock()
	ix.release()
	os.WriteFile(filepath.Join(store, "a", "2"), []byte("2"), 0o644)
	if d := diffManifests(t, indexBytes(t, ix, ""), walkBytes(t, s, "", "")); d != "" {
		t.Fatalf("after IN_Q_OVERFLOW: %s", d)
	}
	if watches != 2 {
		t.Errorf("%d watches added after the overflow, want 2 (a rebuild of 2 directories)", watches)
	}

	// The index's own bound on queued events.
	ix.acquire(context.Background()) // as a request encoding would: the reader only queues
	watches = 0
	ix.qmu.Lock()
	defer func(n int) {
		ix.qmu.Lock()
		maxQueuedEventBytes = n
		ix.qmu.Unlock()
	}(maxQueuedEventBytes)
	maxQueuedEventBytes = 256
	ix.qmu.Unlock()
	for i := range 50 {
		os.WriteFile(filepath.Join(store, "a", fmt.Sprint("f", i)), []byte("1"), 0o644)
	}
	ix.release()
	if d := diffManifests(t, indexBytes(t, ix, ""), walkBytes(t, s, "", "")); d != "" {
		t.Fatalf("after the queue bound: %s", d)
	}
	if watches == 0 {
		t.Error("no rebuild after the queue overflowed")
	}
}

// TestIndexFallbacks: stores the index cannot be trusted with are walked
// per request (same answer), and the reason is logged once with its fix.
func TestIndexFallbacks(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, store string) // before the server starts
		later   func(t *testing.T, store string) // after the index is built, under its lock
		restore func()
		wantLog string
	}{
		{name: "symlink in the store", setup: func(t *testing.T, store string) {
			os.Symlink("a/0", filepath.Join(store, "link"))
		}, wantLog: "symlink"},
		{name: "dangling symlink", setup: func(t *testing.T, store string) {
			os.Symlink("nothing", filepath.Join(store, "a", "dangling"))
		}, wantLog: "symlink"},
		{name: "symlink created later", later: func(t *testing.T, store string) {
			os.Symlink("0", filepath.Join(store, "a", "later"))
		}, wantLog: "symlink"},
		{name: "watch limit", setup: func(t *testing.T, store string) {
			n := 0
			inotifyAddWatch = func(fd int, p string, mask uint32) (int, error) {
				if n++; n > 1 {
					return -1, unix.ENOSPC
				}
				return unix.InotifyAddWatch(fd, p, mask)
			}
		}, restore: func() { inotifyAddWatch = unix.InotifyAddWatch }, wantLog: "max_user_watches"},
		{name: "watch limit for a new directory", later: func(t *testing.T, store string) {
			inotifyAddWatch = func(int, string, uint32) (int, error) { return -1, unix.ENOSPC } // under the index's lock
			os.Mkdir(filepath.Join(store, "new"), 0o755)
			os.WriteFile(filepath.Join(store, "new", "f"), nil, 0o644)
		}, restore: func() { inotifyAddWatch = unix.InotifyAddWatch }, wantLog: "max_user_watches"},
		{name: "NFS", setup: func(t *testing.T, store string) {
			indexFstatfs = func(fd int, st *unix.Statfs_t) error { st.Type = 0x6969; return nil }
		}, restore: func() { indexFstatfs = unix.Fstatfs }, wantLog: "NFS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.restore != nil {
				t.Cleanup(tc.restore) // after the server's Close
			}
			store := filepath.Join(t.TempDir(), "store")
			os.MkdirAll(filepath.Join(store, "a"), 0o755)
			os.WriteFile(filepath.Join(store, "a", "0"), []byte("0"), 0o644)
			os.WriteFile(filepath.Join(store, ".zgroup"), []byte("{}"), 0o644)
			if tc.setup != nil {
				tc.setup(t, store)
			}
			s, logBuf := indexTestServer(t, store)
			if tc.later != nil {
				ix := readyIndex(t, s, "")
				ix.acquire(context.Background())
				tc.later(t, store)
				ix.release()
			}
			for i := range 3 {
				code, _, body := requestManifest(t, s, "", "", "")
				if code != 200 {
					t.Fatalf("request %d: %d", i, code)
				}
				if d := diffManifests(t, body, walkBytes(t, s, "", "")); d != "" {
					t.Fatalf("request %d: %s", i, d)
				}
			}
			ix := s.indexes.get("")
			ix.acquire(context.Background())
			state := ix.state
			ix.release()
			if state != indexFailed {
				t.Errorf("index state %d, want failed (walked per request)", state)
			}
			if n := strings.Count(logBuf.String(), "manifest index off"); n != 1 || !strings.Contains(logBuf.String(), tc.wantLog) {
				t.Errorf("logged %d times, want once mentioning %q:\n%s", n, tc.wantLog, logBuf)
			}
		})
	}
}

// TestIndexRevalidationAndCache: If-None-Match with the current tag is a
// 304 from the index; many requests share one encoded body; a change gives
// a new tag.
func TestIndexRevalidationAndCache(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	os.MkdirAll(filepath.Join(store, "a"), 0o755)
	os.WriteFile(filepath.Join(store, "a", "0"), []byte("0"), 0o644)
	s, _ := indexTestServer(t, store)
	ix := readyIndex(t, s, "")

	code, tag, body := requestManifest(t, s, "", "", "")
	if code != 200 || tag == "" {
		t.Fatalf("%d %q", code, tag)
	}
	m, err := decodeManifest(bytes.NewReader(body))
	if err != nil || m.ETag() != tag {
		t.Fatalf("ETag header %q, manifest tag %v %v", tag, m, err)
	}
	a1, _ := ix.answer(context.Background(), ix.root.dev, ix.root.ino, "", "", false)
	a2, _ := ix.answer(context.Background(), ix.root.dev, ix.root.ino, "", "", false)
	if a1.body == nil || a1.body != a2.body {
		t.Error("two requests for an unchanged store encoded twice")
	}
	if code, got, _ := requestManifest(t, s, "", "", tag); code != 304 || got != tag {
		t.Errorf("revalidation: %d %q, want 304 %q", code, got, tag)
	}
	if code, _, _ := requestManifest(t, s, "", "a/", `"mother"`); code != 200 {
		t.Errorf("prefix with another tag: %d", code)
	}
	_, ptag, _ := requestManifest(t, s, "", "a/", "")
	if code, _, _ := requestManifest(t, s, "", "a/", ptag); code != 304 {
		t.Errorf("prefix revalidation: %d", code)
	}
	os.WriteFile(filepath.Join(store, "a", "1"), []byte("1"), 0o644)
	code, tag2, _ := requestManifest(t, s, "", "", tag)
	if code != 200 || tag2 == tag {
		t.Errorf("after a change: %d, tag %q (was %q)", code, tag2, tag)
	}
	if code, _, _ := requestManifest(t, s, "", "a/", ptag); code != 200 {
		t.Errorf("prefix after a change: %d", code)
	}
}

// TestIndexEagerAndLRU: the served directory's stores are indexed at
// start; more bases than maxIndexes evict the least recently used, whose
// inotify fd is closed.
func TestIndexEagerAndLRU(t *testing.T) {
	top := t.TempDir()
	for i := range maxIndexes + 4 {
		d := filepath.Join(top, fmt.Sprintf("s%02d", i))
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "zarr.json"), []byte("{}"), 0o644)
	}
	os.Mkdir(filepath.Join(top, "not-a-store"), 0o755)
	s, _ := indexTestServer(t, top)
	<-s.indexes.eagerDone
	ix := readyIndex(t, s, "s00")
	s.indexes.mu.Lock()
	n := len(s.indexes.lru)
	s.indexes.mu.Unlock()
	if n != maxIndexes {
		t.Errorf("%d indexes at start, want %d", n, maxIndexes)
	}
	for i := range maxIndexes + 4 {
		if code, _, _ := requestManifest(t, s, fmt.Sprintf("s%02d", i), "", ""); code != 200 {
			t.Fatalf("s%02d: %d", i, code)
		}
	}
	s.indexes.mu.Lock()
	n = len(s.indexes.lru)
	s.indexes.mu.Unlock()
	if n != maxIndexes {
		t.Errorf("%d indexes, want at most %d", n, maxIndexes)
	}
	// s00 was evicted (least recently used) and closed.
	ix.acquire(context.Background())
	st, ifd := ix.state, ix.ifd
	ix.release()
	if st != indexClosed || ifd != -1 {
		t.Errorf("evicted index: state %d, fd %d", st, ifd)
	}
}

func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// TestIndexCloseStopsEverything: Close leaves no goroutine and no fd
// behind, also while builds are running.
func TestIndexCloseStopsEverything(t *testing.T) {
	top := t.TempDir()
	for i := range 3 {
		g := &treeGen{rng: rand.New(rand.NewPCG(uint64(i), 1)), root: filepath.Join(top, fmt.Sprint("s", i))}
		os.MkdirAll(g.root, 0o755)
		os.WriteFile(filepath.Join(g.root, ".zgroup"), []byte("{}"), 0o644)
		g.populate(t, 200)
	}
	runtime.GC()
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	for _, wait := range []bool{true, false} {
		s, err := New(Config{Dir: top, NoAuth: true})
		if err != nil {
			t.Fatal(err)
		}
		if wait {
			for i := range 3 {
				requestManifest(t, s, fmt.Sprint("s", i), "", "")
			}
			os.WriteFile(filepath.Join(top, "s1", "new"), nil, 0o644) // an event for the reader
		}
		s.Close()
		// A goroutine counts until it has returned, a little after the
		// WaitGroup that Close waited on (the zstd encoder's, the stat
		// workers') was done: give finished ones a moment to go; a leaked
		// one stays.
		for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > goroutines && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		if g := runtime.NumGoroutine(); g > goroutines {
			buf := make([]byte, 1<<20)
			t.Errorf("wait=%v: %d goroutines after Close, %d before\n%s", wait, g, goroutines, buf[:runtime.Stack(buf, true)])
		}
		if n := openFDs(t); n > fds {
			t.Errorf("wait=%v: %d open fds after Close, %d before", wait, n, fds)
		}
	}
}

// TestIndexConcurrentWriter: requests while a writer mutates; every answer
// decodes, and once the writer stops the index equals the walk. Run with
// -race.
func TestIndexConcurrentWriter(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	os.MkdirAll(store, 0o755)
	g := &treeGen{rng: rand.New(rand.NewPCG(42, 42)), root: store}
	g.populate(t, 80)
	s, _ := indexTestServer(t, store)
	ix := readyIndex(t, s, "")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				prefix := ""
				if r == 2 {
					prefix = "a"
				}
				code, _, body := requestManifest(t, s, "", prefix, "")
				if code != 200 {
					t.Errorf("status %d", code)
					return
				}
				if _, err := decodeManifest(bytes.NewReader(body)); err != nil {
					t.Errorf("decode: %v", err)
					return
				}
			}
		})
	}
	// Not "hard link": each new link to a file the index knows forces a
	// rebuild (the other names' change time moves without an event), and a
	// writer that keeps making them while rebuilds run is the churn case
	// (TestIndexChurnFallsBack), which a slow machine reaches here.
	for range 300 {
		m := mutations[g.rng.IntN(len(mutations))]
		if m.name == "hard link" {
			continue
		}
		m.do(t, g)
	}
	close(stop)
	wg.Wait()
	if d := diffManifests(t, indexBytes(t, ix, ""), walkBytes(t, s, "", "")); d != "" {
		t.Fatalf("after the writer: %s", d)
	}
}

// TestIndexBaseReplaced: a base directory replaced by another one under
// the same name is indexed anew.
func TestIndexBaseReplaced(t *testing.T) {
	top := t.TempDir()
	os.MkdirAll(filepath.Join(top, "s", "a"), 0o755)
	os.WriteFile(filepath.Join(top, "s", "a", "0"), []byte("0"), 0o644)
	s, _ := indexTestServer(t, top)
	requestManifest(t, s, "s", "", "")
	os.Rename(filepath.Join(top, "s"), filepath.Join(top, "old"))
	os.MkdirAll(filepath.Join(top, "s", "b"), 0o755)
	os.WriteFile(filepath.Join(top, "s", "b", "1"), []byte("1"), 0o644)
	code, _, body := requestManifest(t, s, "s", "", "")
	if code != 200 {
		t.Fatal(code)
	}
	if d := diffManifests(t, body, walkBytes(t, s, "s", "")); d != "" {
		t.Fatal(d)
	}
}

// TestDirReplacedByFileWhileScanned: a directory replaced by a file between
// its parent's listing and its own open (the path, opened from the root, then
// fails with ENOTDIR) is a change like any other. The walk leaves it out;
// the index build skips it, and the events that replaced it bring the index
// up to date. Before, both failed: the manifest ended with an error record
// and the index was off for a minute.
func TestDirReplacedByFileWhileScanned(t *testing.T) {
	for _, scan := range []string{"walk", "index build"} {
		t.Run(scan, func(t *testing.T) {
			store := filepath.Join(t.TempDir(), "store")
			for _, f := range []string{"a/b/c", "a/x", "z"} {
				p := filepath.Join(store, filepath.FromSlash(f))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var replaced atomic.Bool
			replace := func(rel string) {
				if rel != "a/b" || !replaced.CompareAndSwap(false, true) {
					return
				}
				if err := os.Rename(filepath.Join(store, "a"), filepath.Join(store, "a.old")); err != nil {
					t.Error(err)
				}
				if err := os.WriteFile(filepath.Join(store, "a"), []byte("a file now"), 0o644); err != nil {
					t.Error(err)
				}
			}
			t.Cleanup(func() { openDirHook.Store(nil) })
			if scan == "index build" {
				openDirHook.Store(&replace) // the build starts with the server
			}
			s, _ := indexTestServer(t, store)
			ix := readyIndex(t, s, "")
			openDirHook.Store(&replace)
			got := walkBytes(t, s, "", "")
			openDirHook.Store(nil)
			if !replaced.Load() {
				t.Fatal("the scan never opened a/b")
			}
			if scan == "walk" {
				m, err := decodeManifest(bytes.NewReader(got))
				if err != nil {
					t.Fatal(err)
				}
				if _, _, ok := m.Lookup("a/b/c"); ok {
					t.Error("the walk lists a/b/c, which it could not have read")
				}
				return
			}
			if d := diffManifests(t, indexBytes(t, ix, ""), walkBytes(t, s, "", "")); d != "" {
				t.Fatalf("index after the replacement: %s", d)
			}
		})
	}
}

// TestIndexChurnFallsBack: a store that changes in a way that forces a
// rebuild during every rebuild (here: each time a rebuild opens a/sub, a
// file with one name gets a second) turns the index off when the third
// sync in a row needs a rebuild; the request is answered by the walk, and
// the reason is logged.
func TestIndexChurnFallsBack(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	if err := os.MkdirAll(filepath.Join(store, "a", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		os.WriteFile(filepath.Join(store, "a", fmt.Sprint("f", i)), []byte("x"), 0o644)
	}
	s, logBuf := indexTestServer(t, store)
	readyIndex(t, s, "")
	var links atomic.Int32
	link := func() {
		n := links.Add(1) - 1
		if err := os.Link(filepath.Join(store, "a", fmt.Sprint("f", n)), filepath.Join(store, "a", fmt.Sprint("link", n))); err != nil {
			t.Error(err)
		}
	}
	hook := func(rel string) {
		// The first link, then one per rebuild; none during the walk that
		// answers once the index is off.
		if rel == "a/sub" && links.Load() < 3 {
			link()
		}
	}
	openDirHook.Store(&hook)
	t.Cleanup(func() { openDirHook.Store(nil) })
	link() // the first one, seen by the request's drain
	code, _, body := requestManifest(t, s, "", "", "")
	openDirHook.Store(nil)
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	if d := diffManifests(t, body, walkBytes(t, s, "", "")); d != "" {
		t.Fatalf("answer during churn: %s", d)
	}
	if n := links.Load(); n != 3 {
		t.Errorf("%d links made, want 3 (the first, then one in each of two rebuilds)", n)
	}
	ix := s.indexes.get("")
	ix.acquire(context.Background())
	state := ix.state
	ix.release()
	if state != indexFailed || !strings.Contains(logBuf.String(), "faster than its index") {
		t.Errorf("index state %d; log:\n%s", state, logBuf)
	}
}

// TestIndexDirInodeReused: a directory removed and made again under the
// same name can get the freed inode number back. Its old watch is gone with
// the old directory; the index must not take the new one for the old one
// (same device and inode) and leave it unwatched.
func TestIndexDirInodeReused(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	dir := filepath.Join(store, "d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "old"), []byte("old"), 0o644)
	s, _ := indexTestServer(t, store)
	ix := readyIndex(t, s, "")
	inode := func() uint64 {
		var st syscall.Stat_t
		if err := syscall.Stat(dir, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	for i := range 50 {
		before := inode()
		ix.acquire(context.Background()) // the events queue until the next request
		os.RemoveAll(dir)
		os.Mkdir(dir, 0o755)
		after := inode()
		os.WriteFile(filepath.Join(dir, fmt.Sprint("new", i)), []byte("new"), 0o644)
		ix.release()
		if d := diffManifests(t, indexBytes(t, ix, ""), walkBytes(t, s, "", "")); d != "" {
			t.Fatalf("try %d (inode %d, then %d): %s", i, before, after, d)
		}
		// The new directory is watched: a later change is seen.
		os.WriteFile(filepath.Join(dir, "later"), []byte("later"), 0o644)
		if d := diffManifests(t, indexBytes(t, ix, ""), walkBytes(t, s, "", "")); d != "" {
			t.Fatalf("try %d (inode %d, then %d), a file written later: %s", i, before, after, d)
		}
		if before == after {
			return
		}
	}
	t.Skip("the file system gave a new inode number to each new directory in 50 tries")
}
