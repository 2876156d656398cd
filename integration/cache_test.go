package integration

// The chunk cache end to end (issue 4): a daemon killed with SIGKILL in the middle of
// concurrent reads leaves a cache the next mount can use — every byte it then serves is the
// origin's, and the entries the killed daemon completed are reused (revalidated with a 304)
// rather than fetched again. The disk-full checks are in diskfull_cache_test.go.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestCacheOriginRevalidates checks what the kill/remount test counts on: the Go origin sends a
// strong ETag and answers If-None-Match with 304 and no body when it matches, 200 otherwise.
func TestCacheOriginRevalidates(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "0.0"), []byte("chunk bytes"))
	o := newOrigin(t, dir)

	code, body, hdr := get(t, http.DefaultClient, o.URL("0.0"), "")
	etag := hdr.Get("ETag")
	if code != 200 || body != "chunk bytes" || etag == "" || strings.HasPrefix(etag, "W/") {
		t.Fatalf("plain GET: %d, ETag %q, body %q; want 200 with a strong ETag", code, etag, body)
	}
	tests := []struct {
		name        string
		ifNoneMatch string
		wantStatus  int
		wantBody    string
	}{
		{"current version", etag, http.StatusNotModified, ""},
		{"current among others", `"other", ` + etag, http.StatusNotModified, ""},
		{"another version", `"other"`, http.StatusOK, "chunk bytes"},
		{"no validator", "", http.StatusOK, "chunk bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, o.URL("0.0"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.ifNoneMatch != "" {
				req.Header.Set("If-None-Match", tc.ifNoneMatch)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus || string(b) != tc.wantBody {
				t.Errorf("If-None-Match %q: %d %q, want %d %q", tc.ifNoneMatch, resp.StatusCode, b, tc.wantStatus, tc.wantBody)
			}
		})
	}
	// The request log records the 304s, which is what the remount test counts.
	n304 := 0
	for _, r := range o.requests() {
		if r.Status == http.StatusNotModified {
			n304++
		}
	}
	if n304 != 2 {
		t.Errorf("origin log has %d 304 answers, want 2:\n%s", n304, o.summary(10))
	}
}

// cacheStoreName is the store's directory below the directory the origin serves.
const cacheStoreName = "store.zarr"

// genStore is a generated zarr v2 store on disk, with its files kept in memory to compare.
type genStore struct {
	dir     string            // the store root
	files   map[string][]byte // every file, by store key
	chunks  []string          // keys of the chunk files present, sorted
	missing []string          // chunk keys in the grid with no file (read as fill_value)
}

// generateStore writes a consolidated v2 store of random chunks, all decided by seed: an array
// "a" with flat keys (about 230 chunks of 1-16 KiB; zlib is declared, the bytes are opaque to
// zarrfs) and an array "g/b" in a subgroup with nested keys (about 120 chunks of 4 KiB), about a
// tenth of each grid missing — 2-3 MB and some 360 files in all.
func generateStore(t testing.TB, dir string, seed uint64) *genStore {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	s := &genStore{dir: filepath.Join(dir, cacheStoreName), files: map[string][]byte{}}
	zarrayA := map[string]any{
		"zarr_format": 2, "shape": []int{512, 512}, "chunks": []int{32, 32}, "dtype": "<f8",
		"compressor": map[string]any{"id": "zlib", "level": 1}, "fill_value": 0.0, "order": "C",
		"filters": nil, "dimension_separator": ".",
	}
	zarrayB := map[string]any{
		"zarr_format": 2, "shape": []int{8, 8, 8192}, "chunks": []int{1, 1, 4096}, "dtype": "|u1",
		"compressor": nil, "fill_value": 0, "order": "C", "filters": nil, "dimension_separator": "/",
	}
	meta := map[string]any{
		".zgroup":     map[string]any{"zarr_format": 2},
		".zattrs":     map[string]any{"seed": seed},
		"a/.zarray":   zarrayA,
		"a/.zattrs":   map[string]any{"_ARRAY_DIMENSIONS": []string{"y", "x"}},
		"g/.zgroup":   map[string]any{"zarr_format": 2},
		"g/b/.zarray": zarrayB,
		"g/b/.zattrs": map[string]any{"_ARRAY_DIMENSIONS": []string{"i", "j", "k"}},
	}
	for key, doc := range meta {
		b, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		s.files[key] = b
	}
	zmeta, err := json.MarshalIndent(map[string]any{"zarr_consolidated_format": 1, "metadata": meta}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	s.files[".zmetadata"] = zmeta

	addChunk := func(key string, size int) {
		if rng.IntN(10) == 0 {
			s.missing = append(s.missing, key)
			return
		}
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		s.files[key] = b
		s.chunks = append(s.chunks, key)
	}
	for i := range 16 {
		for j := range 16 {
			addChunk(fmt.Sprintf("a/%d.%d", i, j), 1024+rng.IntN(15*1024+1))
		}
	}
	for i := range 8 {
		for j := range 8 {
			for k := range 2 {
				addChunk(fmt.Sprintf("g/b/%d/%d/%d", i, j, k), 4096)
			}
		}
	}
	sort.Strings(s.chunks)
	for key, b := range s.files {
		p := filepath.Join(s.dir, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, p, b)
	}
	return s
}

// keys returns every file key of the store, sorted.
func (s *genStore) keys() []string {
	keys := make([]string, 0, len(s.files))
	for k := range s.files {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// mountAt is mount on a mountpoint the caller chose (to remount on the same one), with the same
// guarantees: the mount appears within mountWait or the test fails, and the test's cleanup
// unmounts it and reaps the process.
func mountAt(t testing.TB, mnt, url string, args ...string) *mounted {
	t.Helper()
	fuseReady.require(t)
	full := append([]string{"mount", "--foreground"}, defaultMountArgs(t, args)...)
	full = append(full, url, mnt)
	p := startZarrfs(t, quickRaceExit(), mnt, full...)
	p.waitMounted(t)
	return &mounted{zarrfsProc: p, Dir: mnt}
}

// quickRaceExit is the environment with the race runtime's pause at exit (1s by default, for
// reports from other threads) turned off: these tests unmount a daemon hundreds of times, and a
// race found while serving is reported when it happens, not at exit.
func quickRaceExit() []string {
	if !raceEnabled {
		return nil
	}
	return append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}

// killMount kills the daemon of m with SIGKILL, waits (bounded) until it is reaped, and
// detaches the dead mount with fusermount3 -uz, as an operator would after a crash.
func killMount(t testing.TB, m *mounted) {
	t.Helper()
	if err := m.cmd.Process.Signal(syscall.SIGKILL); err != nil && !m.exited() {
		t.Fatalf("kill -9 zarrfs pid %d: %v", m.cmd.Process.Pid, err)
	}
	if !m.waitExit(15 * time.Second) {
		t.Fatalf("zarrfs pid %d not reaped 15s after SIGKILL", m.cmd.Process.Pid)
	}
	lazyUnmount(t, m.Dir)
}

// lazyUnmount runs fusermount3 -uz mnt (bounded) and checks the mount is gone.
func lazyUnmount(t testing.TB, mnt string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "fusermount3", "-uz", mnt)
	cmd.WaitDelay = 2 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -uz %s: %v: %s", mnt, err, out)
	}
	if isFuseMount(mnt) {
		t.Fatalf("%s still mounted after fusermount3 -uz", mnt)
	}
}

// cacheDirState is what a cache directory holds, seen from outside.
type cacheDirState struct {
	entries    int
	entryBytes int64    // sum of the entry files' sizes
	largest    int64    // largest entry file
	temps      []string // files under tmp/
	strays     []string // names the cache does not own (cache/doc.go: lock, tmp/, entries/)
}

// inspectCacheDir walks a cache directory. It may run while a daemon changes the directory:
// files that vanish during the walk are skipped.
func inspectCacheDir(dir string) (cacheDirState, error) {
	var st cacheDirState
	top, err := os.ReadDir(dir)
	if err != nil {
		return st, err
	}
	for _, d := range top {
		switch d.Name() {
		case "lock", "entries", "tmp":
		default:
			st.strays = append(st.strays, d.Name())
		}
	}
	walk := func(sub string, visit func(fs.FileInfo)) error {
		err := filepath.WalkDir(filepath.Join(dir, sub), func(p string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil || d.IsDir() {
				return err
			}
			fi, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			visit(fi)
			return nil
		})
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	if err := walk("entries", func(fi fs.FileInfo) {
		st.entries++
		st.entryBytes += fi.Size()
		st.largest = max(st.largest, fi.Size())
	}); err != nil {
		return st, err
	}
	err = walk("tmp", func(fi fs.FileInfo) { st.temps = append(st.temps, fi.Name()) })
	return st, err
}

// killRound is what one round of TestCacheKillRemount saw.
type killRound struct {
	seed        uint64
	fromFirst   bool          // the kill delay counted from the first chunk read, not the readers' start
	delay       time.Duration // drawn from the seed
	chunks      int           // chunk files in the store
	delivered   int           // distinct chunks the killed daemon served completely and correctly
	readErrors  map[string]int
	entriesLeft int // entry files the killed daemon left
	tempsLeft   int // temp files it left
	reused      int // chunks the second mount revalidated (304) instead of fetching
	refetched   int // chunks the second mount fetched (200)
	wrongBytes  int // reads (either mount) that returned bytes differing from the origin
}

// TestCacheKillRemount runs rounds of: 16 readers over a generated store, SIGKILL of the daemon
// at a random moment mid-read, fusermount3 -uz, remount on the same cache directory. After the
// remount every file must read exactly as in the origin (by name and by listing), every entry
// the killed daemon left must be valid and reused — revalidated with one conditional request
// answered 304, never fetched again — including every chunk it had served completely, and the
// temp files of its interrupted fetches must be gone.
//
// Rounds alternate between counting the random delay (0-300 ms) from the readers' start, so the
// kill can land in the very first fetches, and from the first chunk served, so that half the
// rounds prove reuse whatever the machine's speed. Seeds are ZARRFS_CACHE_SEED (default 1)
// plus the round number; ZARRFS_CACHE_ROUNDS overrides the 50 rounds (5 with -short).
func TestCacheKillRemount(t *testing.T) {
	t.Parallel() // see parallelTests in main_test.go
	fuseReady.require(t)
	rounds := 50
	if testing.Short() {
		rounds = 5
	}
	if v := os.Getenv("ZARRFS_CACHE_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("ZARRFS_CACHE_ROUNDS=%q: want a positive number", v)
		}
		rounds = n
	}
	baseSeed := uint64(1)
	if v := os.Getenv("ZARRFS_CACHE_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("ZARRFS_CACHE_SEED=%q: want a number", v)
		}
		baseSeed = n
	}
	start := time.Now()
	var results []killRound
	failed := 0
	for i := range rounds {
		seed := baseSeed + uint64(i)
		name := fmt.Sprintf("round%02d", i)
		var res killRound
		ok := t.Run(name, func(t *testing.T) {
			t.Logf("seed %d (reproduce: ZARRFS_CACHE_SEED=%d go test -race -run 'TestCacheKillRemount/%s$' ./integration/)", seed, baseSeed, name)
			res = killRemountRound(t, seed, i%2 == 1)
		})
		results = append(results, res)
		if !ok {
			failed++
			if failed >= 3 {
				t.Fatalf("stopping after %d failed rounds", failed)
			}
		}
	}

	var (
		totalReused, totalRefetched, totalDelivered, totalChunks, roundsReusing, totalTemps int
		fromFirstRounds, fromFirstReusing, totalWrong                                       int
		errs                                                                                = map[string]int{}
	)
	var table strings.Builder
	fmt.Fprintf(&table, "round seed  from   delay  served-by-killed  entries-left  temps-left  reused(304)  refetched(200)  reader-errors\n")
	for i, r := range results {
		totalReused += r.reused
		totalWrong += r.wrongBytes
		totalRefetched += r.refetched
		totalDelivered += r.delivered
		totalChunks += r.chunks
		totalTemps += r.tempsLeft
		if r.reused > 0 {
			roundsReusing++
		}
		if r.fromFirst {
			fromFirstRounds++
			if r.reused > 0 {
				fromFirstReusing++
			}
		}
		var es []string
		for k, n := range r.readErrors {
			errs[k] += n
			es = append(es, fmt.Sprintf("%s×%d", k, n))
		}
		sort.Strings(es)
		from := "start"
		if r.fromFirst {
			from = "first"
		}
		fmt.Fprintf(&table, "%5d %4d  %-5s %4dms  %16d  %12d  %10d  %11d  %14d  %s\n",
			i, r.seed, from, r.delay.Milliseconds(), r.delivered, r.entriesLeft, r.tempsLeft, r.reused, r.refetched, strings.Join(es, " "))
	}
	t.Logf("%d rounds in %v (race-built daemon: %v)\n%s", len(results), time.Since(start).Round(time.Millisecond), raceEnabled, table.String())
	t.Logf("totals: %d chunks across rounds; the killed daemons served %d completely; the remounts reused %d entries (304) and fetched %d chunks again; %d rounds of %d reused entries; %d temp files left by kills; %d wrong reads; reader errors after the kill: %v",
		totalChunks, totalDelivered, totalReused, totalRefetched, roundsReusing, len(results), totalTemps, totalWrong, errs)
	// Per round the checks are exact (see killRemountRound); across rounds, reuse must have
	// happened for real: in every round where the kill came after a chunk was served, and in
	// total at least as often as the killed daemons served chunks.
	if fromFirstReusing != fromFirstRounds {
		t.Errorf("only %d of the %d rounds killed after a chunk was served reused any entry", fromFirstReusing, fromFirstRounds)
	}
	if totalReused == 0 || totalReused < totalDelivered {
		t.Errorf("remounts reused %d entries in all, fewer than the %d chunks the killed daemons served (or none)", totalReused, totalDelivered)
	}
}

// killRemountRound runs one round (see TestCacheKillRemount) and returns what it saw.
func killRemountRound(t *testing.T, seed uint64, fromFirst bool) killRound {
	res := killRound{seed: seed, fromFirst: fromFirst, readErrors: map[string]int{}}
	root := t.TempDir()
	s := generateStore(t, root, seed)
	res.chunks = len(s.chunks)
	rng := rand.New(rand.NewPCG(seed, 0x6b696c6c)) // the round's choices: orders and delay
	res.delay = time.Duration(rng.IntN(301)) * time.Millisecond

	o := newOrigin(t, root)
	url := o.URL(cacheStoreName)
	cacheDir := filepath.Join(root, "cache")
	mnt := newMountpoint(t)
	args := append([]string{"--cache-dir", cacheDir, "--cache-min-free", "0"}, retryArgs...)

	// First mount: 16 readers, each over every file in its own order, until the kill.
	m1 := mountAt(t, mnt, url, args...)
	keys := s.keys()
	var (
		killed       atomic.Bool
		mu           sync.Mutex
		delivered    = map[string]bool{}
		wrong        []string
		earlyErrors  []string
		firstChunk   = make(chan struct{})
		firstOnce    sync.Once
		readersDone  = make(chan struct{})
		readersGroup sync.WaitGroup
	)
	orders := make([][]string, 16)
	for i := range orders {
		orders[i] = slices.Clone(keys)
		rng.Shuffle(len(keys), func(a, b int) { orders[i][a], orders[i][b] = orders[i][b], orders[i][a] })
	}
	isChunk := map[string]bool{}
	for _, k := range s.chunks {
		isChunk[k] = true
	}
	for _, order := range orders {
		readersGroup.Add(1)
		go func() {
			defer readersGroup.Done()
			for _, key := range order {
				got, err := os.ReadFile(m1.path(key))
				mu.Lock()
				switch {
				case err != nil && killed.Load():
					res.readErrors[errnoName(err)]++
				case err != nil:
					earlyErrors = append(earlyErrors, fmt.Sprintf("%s: %v", key, err))
				case string(got) != string(s.files[key]):
					wrong = append(wrong, fmt.Sprintf("%s: %d bytes, want %d, first difference at %d", key, len(got), len(s.files[key]), firstDiff(got, s.files[key])))
				case isChunk[key]:
					delivered[key] = true
					firstOnce.Do(func() { close(firstChunk) })
				}
				mu.Unlock()
				if err != nil {
					return // the mount is dead
				}
			}
		}()
	}
	go func() { readersGroup.Wait(); close(readersDone) }()
	if fromFirst {
		select {
		case <-firstChunk:
		case <-readersDone:
		case <-time.After(30 * time.Second):
			killed.Store(true)
			killMount(t, m1)
			t.Fatalf("no chunk read through the first mount within 30s")
		}
	}
	time.Sleep(res.delay)
	killed.Store(true) // before the kill, so every error the kill causes is seen as such
	killMount(t, m1)
	select {
	case <-readersDone:
	case <-time.After(30 * time.Second):
		t.Fatalf("readers of the killed mount still blocked 30s after SIGKILL and fusermount3 -uz")
	}
	mu.Lock()
	res.delivered = len(delivered)
	res.wrongBytes = len(wrong)
	for _, w := range wrong {
		t.Errorf("the first mount served wrong bytes: %s", w)
	}
	for _, e := range earlyErrors {
		t.Errorf("read failed through the first mount before it was killed: %s", e)
	}
	mu.Unlock()

	left, err := inspectCacheDir(cacheDir)
	if err != nil {
		t.Fatalf("inspect the cache directory after the kill: %v", err)
	}
	res.entriesLeft, res.tempsLeft = left.entries, len(left.temps)
	if len(left.strays) > 0 {
		t.Errorf("files in the cache directory that the cache does not own: %v", left.strays)
	}

	// Second mount on the same cache directory and mountpoint: the lock died with the daemon.
	// Requests of the killed daemon still being answered must not count as the remount's.
	before := o.settle(10 * time.Second)
	m2 := mountAt(t, mnt, url, args...)
	problems := compareTrees(s.dir, mnt)
	for _, p := range problems {
		res.wrongBytes++
		t.Errorf("after the remount: %s", p)
	}
	if len(problems) > 0 {
		// Seen once: something outside the test (a CI script's global cleanup of zarrfs
		// mounts, run by someone else on the same machine) unmounted the remount mid-read.
		t.Errorf("diagnosis: %s mounted now: %v; second daemon exited: %v", mnt, isFuseMount(mnt), m2.exited())
	}
	for _, key := range s.missing[:min(5, len(s.missing))] {
		if _, err := os.Stat(m2.path(key)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("chunk %s is missing in the origin; stat under the remount: %v, want ENOENT", key, err)
		}
	}

	// Count how the remount got each chunk: a 304 is an entry of the killed daemon reused.
	answered := map[string][]int{} // chunk key -> statuses of the GETs for it
	for _, r := range o.requests()[before:] {
		key := strings.TrimPrefix(r.Path, "/"+cacheStoreName+"/")
		if r.Method == http.MethodGet && isChunk[key] {
			answered[key] = append(answered[key], r.Status)
		}
	}
	var notReused []string
	for _, key := range s.chunks {
		st := answered[key]
		switch {
		case slices.Equal(st, []int{http.StatusNotModified}):
			res.reused++
		case slices.Equal(st, []int{http.StatusOK}):
			res.refetched++
			if delivered[key] {
				notReused = append(notReused, key)
			}
		default:
			t.Errorf("chunk %s: the remount's GETs were answered %v; want one GET, answered 304 (reused) or 200 (fetched)", key, st)
		}
	}
	if len(notReused) > 0 {
		t.Errorf("%d chunks the killed daemon had served completely were fetched again instead of reused, e.g. %s", len(notReused), firstFew(notReused))
	}
	if res.reused != left.entries {
		t.Errorf("the killed daemon left %d entry files but the remount reused %d: entries lost or damaged by the kill", left.entries, res.reused)
	}
	if strings.Contains(m2.output(), "cache entry damaged") {
		t.Errorf("the remount found damaged cache entries after a kill -9 (no power loss, so none should be):\n%s", m2.output())
	}

	// A clean unmount: the daemon exits 0, leaving every chunk cached and no temp file.
	unmountBounded(t, mnt)
	m2.exitAfterUnmount(t, 15*time.Second)
	if code := m2.exitCode(); code != 0 {
		t.Errorf("the second zarrfs exited %d after a clean unmount, want 0", code)
	}
	after, err := inspectCacheDir(cacheDir)
	if err != nil {
		t.Fatalf("inspect the cache directory after the remount: %v", err)
	}
	if len(after.temps) > 0 {
		t.Errorf("temp files left in %s after a clean unmount: %v", filepath.Join(cacheDir, "tmp"), after.temps)
	}
	if after.entries != len(s.chunks) {
		t.Errorf("%d entries cached after reading all %d chunks through the remount", after.entries, len(s.chunks))
	}
	t.Logf("killed %v after %s: the killed daemon served %d of %d chunks and left %d entries and %d temp files; the remount reused %d and fetched %d (reader errors after the kill: %v)",
		res.delay, map[bool]string{true: "the first chunk", false: "the readers' start"}[fromFirst],
		res.delivered, res.chunks, res.entriesLeft, res.tempsLeft, res.reused, res.refetched, res.readErrors)
	return res
}

// errnoName names the errno behind a failed read through a dead mount (ENOTCONN, EIO, ...).
func errnoName(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOTCONN:
			return "ENOTCONN"
		case syscall.EIO:
			return "EIO"
		case syscall.ECONNABORTED:
			return "ECONNABORTED"
		case syscall.ENOENT:
			return "ENOENT"
		case syscall.EINTR:
			return "EINTR"
		}
		return "errno" + strconv.Itoa(int(errno))
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
