package integration

// Live refresh (issue 7), end to end: a mounted store changes on its origin, `zarrfs refresh` (or
// the --refresh loop) makes the change visible, and the origin's own records prove that only
// what changed crossed the network again; readers holding files open never see a mix of two
// versions; an origin outage during refreshes does not disturb the tree or cached reads.

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// storeFile is what the origin directory holds at one key.
type storeFile struct {
	size  int64
	mtime time.Time
	sum   [32]byte
}

// snapshotStore maps every key of the store directory to its file.
func snapshotStore(t testing.TB, dir string) map[string]storeFile {
	t.Helper()
	out := map[string]storeFile{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = storeFile{size: fi.Size(), mtime: fi.ModTime(), sum: sha256.Sum256(b)}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func isMetadataKey(key string) bool {
	switch path.Base(key) {
	case ".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json":
		return true
	}
	return false
}

// storeDiff is what a change did to a store, as the origin sees it: a chunk file rewritten
// (even with the same bytes: it has a new validator) or created is changed.
type storeDiff struct {
	changed      map[string]int64 // chunk key -> size now
	unchanged    map[string]bool  // chunk keys
	changedBytes int64            // sum of the changed chunk files' sizes
	metaBytes    int64            // sum of the sizes of every metadata document now
}

func diffStoreFiles(before, after map[string]storeFile) storeDiff {
	d := storeDiff{changed: map[string]int64{}, unchanged: map[string]bool{}}
	for key, f := range after {
		if isMetadataKey(key) {
			d.metaBytes += f.size
			continue
		}
		if old, ok := before[key]; ok && old == f {
			d.unchanged[key] = true
			continue
		}
		d.changed[key] = f.size
		d.changedBytes += f.size
	}
	return d
}

// transfer is what an origin sent for the store's keys during some period.
type transfer struct {
	contentBytes int64          // body bytes of 200/206 answers for store keys
	fetched      map[string]int // key -> 200/206 answers
	revalidated  map[string]int // key -> 304 answers
	other        []string       // anything else, for the log
}

func newTransfer() *transfer {
	return &transfer{fetched: map[string]int{}, revalidated: map[string]int{}}
}

func (tr *transfer) add(key string, status int, bytes int64) {
	switch status {
	case http.StatusOK, http.StatusPartialContent:
		tr.contentBytes += bytes
		tr.fetched[key]++
	case http.StatusNotModified:
		tr.revalidated[key]++
		if bytes != 0 {
			tr.other = append(tr.other, fmt.Sprintf("304 for %s with %d body bytes", key, bytes))
		}
	default:
		tr.other = append(tr.other, fmt.Sprintf("%d for %s (%d bytes)", status, key, bytes))
	}
}

// checkRetransfer asserts the re-transfer after a refresh: every changed chunk fetched, no
// unchanged chunk fetched, and the content bytes between the changed chunks and the changed
// chunks plus every metadata document. With revalidate, each unchanged chunk must have been
// revalidated by a 304 (a static origin); without, never asked for at all (a manifest).
func checkRetransfer(t *testing.T, d storeDiff, tr *transfer, revalidate bool) {
	t.Helper()
	t.Logf("changed: %d chunks, %d bytes; metadata documents: %d bytes; re-transferred: %d bytes in %d keys, %d revalidations by 304; other answers: %q",
		len(d.changed), d.changedBytes, d.metaBytes, tr.contentBytes, len(tr.fetched), len(tr.revalidated), tr.other)
	for key := range d.changed {
		if tr.fetched[key] == 0 {
			t.Errorf("changed chunk %s was not fetched again: readers got the old value?", key)
		}
	}
	var unrevalidated []string
	for key := range d.unchanged {
		if n := tr.fetched[key]; n > 0 {
			t.Errorf("unchanged chunk %s transferred again (%d times)", key, n)
		}
		switch n := tr.revalidated[key]; {
		case revalidate && n == 0:
			unrevalidated = append(unrevalidated, key)
		case !revalidate && n > 0:
			t.Errorf("unchanged chunk %s revalidated %d times though the manifest vouches for it", key, n)
		}
	}
	if len(unrevalidated) > 0 {
		sort.Strings(unrevalidated)
		t.Errorf("%d unchanged chunks were read after the refresh without a revalidation (304), e.g. %q: stale entries served as current", len(unrevalidated), unrevalidated[:min(5, len(unrevalidated))])
	}
	var twice []string
	for key, n := range tr.fetched {
		if n > 1 {
			twice = append(twice, fmt.Sprintf("%s (%d times)", key, n))
		}
	}
	if len(twice) > 0 {
		sort.Strings(twice)
		t.Errorf("fetched more than once after the refresh: %v", twice)
	}
	if limit := d.changedBytes + d.metaBytes; tr.contentBytes > limit {
		t.Errorf("re-transferred %d bytes after the refresh, more than the changed chunks plus all metadata (%d + %d = %d)", tr.contentBytes, d.changedBytes, d.metaBytes, limit)
	}
	if tr.contentBytes < d.changedBytes {
		t.Errorf("re-transferred %d bytes after the refresh, fewer than the changed chunks (%d)", tr.contentBytes, d.changedBytes)
	}
}

// storeRead is what zarr-python and xarray read from a store (py/refresh_store.py read).
type storeRead struct {
	Arrays map[string]string `json:"arrays"` // name -> sha256 of the values
	Title  *string           `json:"title"`
}

func readWithPython(t *testing.T, dir string) storeRead {
	t.Helper()
	out, err := runScript(t, pythonBin, "py/refresh_store.py", "read", dir)
	if err != nil {
		t.Fatalf("read %s with zarr-python: %v\n%s", dir, err, out)
	}
	var r storeRead
	line := strings.TrimSpace(out)
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("read %s: %v in %q", dir, err, out)
	}
	return r
}

func runPythonStore(t *testing.T, cmd, dir string) {
	t.Helper()
	if out, err := runScript(t, pythonBin, "py/refresh_store.py", cmd, dir); err != nil {
		t.Fatalf("refresh_store.py %s: %v\n%s", cmd, err, out)
	}
}

// refreshNow runs `zarrfs refresh MNT` and returns its output; it must succeed.
func refreshNow(t testing.TB, mnt string) string {
	t.Helper()
	out, code := runCmd(t, 2*time.Minute, nil, zarrfsBin, "refresh", mnt)
	if code != 0 {
		t.Fatalf("zarrfs refresh %s: exit %d: %s", mnt, code, out)
	}
	return out
}

// refreshReport is the part of `zarrfs stats --json` about the last refresh.
type refreshReport struct {
	At           time.Time `json:"at"`
	Changed      bool      `json:"changed"`
	ChangedKeys  int       `json:"changed_keys"`
	NodesAdded   []string  `json:"nodes_added"`
	NodesRemoved []string  `json:"nodes_removed"`
	Error        string    `json:"error"`
}

func lastRefresh(t testing.TB, mnt string) *refreshReport {
	t.Helper()
	out, code := runCmd(t, time.Minute, nil, zarrfsBin, "stats", "--json", mnt)
	if code != 0 {
		t.Fatalf("zarrfs stats --json %s: exit %d: %s", mnt, code, out)
	}
	var s struct {
		LastRefresh *refreshReport `json:"last_refresh"`
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("zarrfs stats --json: %v in %q", err, out)
	}
	return s.LastRefresh
}

// checkRefreshedRead compares what zarr-python read through the mount before and after the
// change with what it reads from the origin directory itself.
func checkRefreshedRead(t *testing.T, before, after, direct storeRead) {
	t.Helper()
	if !maps.Equal(after.Arrays, direct.Arrays) {
		t.Errorf("after the refresh the mount reads\n %v\nthe origin directory reads\n %v", after.Arrays, direct.Arrays)
	}
	if _, ok := after.Arrays["v10"]; !ok {
		t.Errorf("the new variable v10 is not visible through the mount: %v", after.Arrays)
	}
	if after.Arrays["t2m"] == before.Arrays["t2m"] {
		t.Errorf("t2m reads the same values after its region was rewritten")
	}
	if after.Arrays["u10"] != before.Arrays["u10"] {
		t.Errorf("u10 changed though nobody wrote it")
	}
	if after.Title == nil || before.Title == nil || *after.Title != *before.Title {
		t.Errorf("the dataset's title reads %v after the change, %v before", after.Title, before.Title)
	}
}

// TestRefreshStaticOrigin: a store with consolidated metadata on a static origin (the Go
// origin, strong ETags) is read, 1% of its chunks rewritten and a variable added by xarray;
// after `zarrfs refresh`, zarr-python reads the new values, the unchanged chunks are revalidated
// by 304, and only the changed chunks and metadata crossed the network.
func TestRefreshStaticOrigin(t *testing.T) {
	pythonReady.require(t)
	fuseReady.require(t)
	dir := t.TempDir()
	store := filepath.Join(dir, "s.zarr")
	runPythonStore(t, "gen", store)
	o := newOrigin(t, dir)
	m := mount(t, o.URL("s.zarr"), "--refresh", "0")

	before := readWithPython(t, m.Dir)
	if direct := readWithPython(t, store); !maps.Equal(before.Arrays, direct.Arrays) {
		t.Fatalf("before any change the mount reads %v, the directory %v", before.Arrays, direct.Arrays)
	}
	snap := snapshotStore(t, store)
	runPythonStore(t, "change", store)
	diff := diffStoreFiles(snap, snapshotStore(t, store))
	if n := len(diff.changed); n < 2 || diff.changed["t2m/0.0.0"] == 0 {
		t.Fatalf("the change rewrote %d chunks, expected t2m/0.0.0 among them", n)
	}

	mark := len(o.requests())
	out := refreshNow(t, m.Dir)
	if !strings.Contains(out, "store changed") {
		t.Errorf("zarrfs refresh says %q, want a change", out)
	}
	after := readWithPython(t, m.Dir)
	checkRefreshedRead(t, before, after, readWithPython(t, store))

	tr := newTransfer()
	for _, r := range o.requests()[mark:] {
		key, ok := strings.CutPrefix(r.Path, "/s.zarr/")
		if !ok || key == ".zarrfs/manifest" {
			continue // the manifest probe: a 404 page, not store content
		}
		tr.add(key, r.Status, r.Bytes)
	}
	checkRetransfer(t, diff, tr, true)
	if rep := lastRefresh(t, m.Dir); rep == nil || !rep.Changed || rep.Error != "" || !slices.Contains(rep.NodesAdded, "v10") {
		t.Errorf("stats last_refresh = %+v, want a change adding v10", rep)
	}
}

var accessLogRE = regexp.MustCompile(`msg=request method=(\S+) path=(\S+) status=(\d+) bytes=(\d+)`)

// accessLog parses the request records of `zarrfs serve`'s access log.
func accessLog(out string) [][]string {
	var recs [][]string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if m := accessLogRE.FindStringSubmatch(sc.Text()); m != nil {
			recs = append(recs, m[1:])
		}
	}
	return recs
}

// settledAccessLog waits until the server has logged every answer (it logs after answering).
func settledAccessLog(s *servedStores) [][]string {
	n, stable := -1, 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && stable < 3; {
		time.Sleep(100 * time.Millisecond)
		if m := len(accessLog(s.output())); m == n {
			stable++
		} else {
			n, stable = m, 0
		}
	}
	return accessLog(s.output())
}

// TestRefreshServeOrigin: the same change served by `zarrfs serve`, whose manifest gives each
// key a version: after the refresh only the changed chunks and metadata are fetched, and the
// unchanged chunks are not even revalidated. Bytes are counted from the server's access log.
func TestRefreshServeOrigin(t *testing.T) {
	pythonReady.require(t)
	fuseReady.require(t)
	dir := t.TempDir()
	store := filepath.Join(dir, "s.zarr")
	runPythonStore(t, "gen", store)
	s := startServe(t, dir, "")
	m := mountEnv(t, envWithout("ZARRFS_TOKEN"), s.storeURL(t, "s"), "--pin", s.pin, "--token-file", tokenFile(t, s.token), "--refresh", "0")

	before := readWithPython(t, m.Dir)
	snap := snapshotStore(t, store)
	runPythonStore(t, "change", store)
	diff := diffStoreFiles(snap, snapshotStore(t, store))

	mark := len(settledAccessLog(s))
	out := refreshNow(t, m.Dir)
	if !strings.Contains(out, "store changed") {
		t.Errorf("zarrfs refresh says %q, want a change", out)
	}
	after := readWithPython(t, m.Dir)
	checkRefreshedRead(t, before, after, readWithPython(t, store))

	tr := newTransfer()
	manifests, manifestBytes := 0, int64(0)
	for _, rec := range settledAccessLog(s)[mark:] {
		status, _ := strconv.Atoi(rec[2])
		bytes, _ := strconv.ParseInt(rec[3], 10, 64)
		key, ok := strings.CutPrefix(rec[1], "/s.zarr/")
		switch {
		case !ok:
			tr.other = append(tr.other, rec[0]+" "+rec[1])
		case key == ".zarrfs/manifest":
			manifests++
			manifestBytes += bytes
		default:
			tr.add(key, status, bytes)
		}
	}
	t.Logf("manifest: %d requests, %d bytes", manifests, manifestBytes)
	if manifests != 1 {
		t.Errorf("one refresh fetched the manifest %d times, want 1", manifests)
	}
	checkRetransfer(t, diff, tr, false)
}

// rewriteStore is a zarr v2 store written by the test, whose chunks it rewrites again and again:
// every version of every chunk has distinct bytes (and alternately two sizes), so a read can be
// matched to exactly one version or found to be a mix.
type rewriteStore struct {
	dir    string
	mu     sync.Mutex
	arrays map[string]int              // array name -> number of chunks
	latest map[string]int              // chunk key -> latest version
	known  map[string]map[[32]byte]int // chunk key -> sha256 -> version
	round  int                         // in the root's attributes, so metadata changes
	inPlc  *sync.RWMutex               // held for writing while a file is rewritten in place
}

const rewriteChunk = 64 << 10

func newRewriteStore(t testing.TB, dir string, arrays map[string]int) *rewriteStore {
	t.Helper()
	s := &rewriteStore{dir: dir, arrays: map[string]int{}, latest: map[string]int{}, known: map[string]map[[32]byte]int{}, inPlc: &sync.RWMutex{}}
	writeReplacing(t, filepath.Join(dir, ".zgroup"), []byte(`{"zarr_format": 2}`))
	for name, n := range arrays {
		s.addArray(t, name, n)
	}
	return s
}

func (s *rewriteStore) zarray(n int) string {
	return fmt.Sprintf(`{"zarr_format": 2, "shape": [%d], "chunks": [%d], "dtype": "|u1", "compressor": null, "fill_value": 0, "order": "C", "filters": null}`, n*rewriteChunk, rewriteChunk)
}

// content is version v of key: pseudo-random bytes, 64 KiB for even versions, 48 KiB for odd.
func (s *rewriteStore) content(key string, v int) []byte {
	size := rewriteChunk
	if v%2 == 1 {
		size -= 16 << 10
	}
	seed := sha256.Sum256([]byte(fmt.Sprintf("%s@%d", key, v)))
	rng := rand.NewChaCha8(seed)
	b := make([]byte, size)
	_, _ = rng.Read(b)
	return b
}

// addArray writes array name with n chunks (version 0) and reconsolidates.
func (s *rewriteStore) addArray(t testing.TB, name string, n int) {
	t.Helper()
	s.mu.Lock()
	s.arrays[name] = n
	s.mu.Unlock()
	writeReplacing(t, filepath.Join(s.dir, name, ".zarray"), []byte(s.zarray(n)))
	for i := range n {
		key := fmt.Sprintf("%s/%d", name, i)
		s.writeVersion(t, key, false)
	}
	s.consolidate(t)
}

func (s *rewriteStore) keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name, n := range s.arrays {
		for i := range n {
			out = append(out, fmt.Sprintf("%s/%d", name, i))
		}
	}
	sort.Strings(out)
	return out
}

// writeVersion writes the next version of key: into a new file renamed over the old one, or
// in place (truncated and rewritten) while no answer is being served.
func (s *rewriteStore) writeVersion(t testing.TB, key string, inPlace bool) {
	s.mu.Lock()
	v, ok := s.latest[key]
	if ok {
		v++
	}
	data := s.content(key, v)
	if s.known[key] == nil {
		s.known[key] = map[[32]byte]int{}
	}
	// Known before any reader can see it.
	s.known[key][sha256.Sum256(data)] = v
	s.latest[key] = v
	s.mu.Unlock()
	p := filepath.Join(s.dir, filepath.FromSlash(key))
	if !inPlace {
		writeReplacing(t, p, data)
		return
	}
	// A static web server streams a file being rewritten in place as it is at each moment;
	// the lock keeps each answer to one version, so that a mix can only come from zarrfs.
	s.inPlc.Lock()
	defer s.inPlc.Unlock()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Error(err)
	}
}

// consolidate bumps the root attributes and rewrites .zmetadata, as zarr.consolidate_metadata
// does after a write: the only change a static origin's refresh can see.
func (s *rewriteStore) consolidate(t testing.TB) {
	s.mu.Lock()
	s.round++
	attrs := fmt.Sprintf(`{"round": %d}`, s.round)
	meta := map[string]json.RawMessage{".zgroup": json.RawMessage(`{"zarr_format": 2}`), ".zattrs": json.RawMessage(attrs)}
	for name, n := range s.arrays {
		meta[name+"/.zarray"] = json.RawMessage(s.zarray(n))
	}
	s.mu.Unlock()
	doc, err := json.Marshal(map[string]any{"zarr_consolidated_format": 1, "metadata": meta})
	if err != nil {
		t.Fatal(err)
	}
	writeReplacing(t, filepath.Join(s.dir, ".zattrs"), []byte(attrs))
	writeReplacing(t, filepath.Join(s.dir, ".zmetadata"), doc)
}

// version tells which version of key b is, or -1 for bytes that are no version of it.
func (s *rewriteStore) version(key string, b []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.known[key][sha256.Sum256(b)]; ok {
		return v
	}
	return -1
}

func (s *rewriteStore) latestVersion(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latest[key]
}

// front serves o with in-place rewrites excluded while an answer is served.
func (s *rewriteStore) front(t testing.TB, o *origin) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.inPlc.RLock()
		defer s.inPlc.RUnlock()
		o.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv.URL
}

func writeReplacing(t testing.TB, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := p + ".tmp"
	writeFile(t, tmp, data)
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

// TestRefreshOpenWhileRewrite: 1,000 times, a reader opens a chunk, the origin rewrites it
// (renamed over, or in place) and the metadata, and the reader reads the whole file, with random
// pauses of 0-2 ms between the steps, while the mount refreshes every 20 ms and `zarrfs refresh`
// runs in a loop. Every read must be one complete version of the chunk, or fail.
func TestRefreshOpenWhileRewrite(t *testing.T) {
	t.Parallel() // see parallelTests in main_test.go
	fuseReady.require(t)
	const rounds = 1000
	dir := t.TempDir()
	s := newRewriteStore(t, filepath.Join(dir, "s.zarr"), map[string]int{"a": 4})
	o := newOrigin(t, dir)
	m := mount(t, s.front(t, o)+"/s.zarr", "--refresh", "20ms")

	stop := make(chan struct{})
	var refreshes, bgReads, bgErrors atomic.Int64
	var bgMixed atomic.Value // string: the first mix a background reader saw
	var wg sync.WaitGroup
	// A second reader reads every chunk again and again, so that fetches, lookups and opens
	// also overlap the rewrites and the refreshes.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			for _, key := range s.keys() {
				select {
				case <-stop:
					return
				default:
				}
				b, err := os.ReadFile(m.path(key))
				switch {
				case err != nil:
					bgErrors.Add(1)
				case s.version(key, b) < 0:
					bgMixed.CompareAndSwap(nil, fmt.Sprintf("%s: %d bytes that are no version of it", key, len(b)))
				}
				bgReads.Add(1)
			}
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if out, code := runCmd(t, time.Minute, nil, zarrfsBin, "refresh", m.Dir); code != 0 {
				t.Errorf("zarrfs refresh during the rounds: exit %d: %s", code, out)
				return
			}
			refreshes.Add(1)
		}
	}()

	rng := rand.New(rand.NewPCG(7, 11))
	pause := func() { time.Sleep(time.Duration(rng.IntN(2001)) * time.Microsecond) }
	keys := s.keys()
	var (
		ok, failed, current, atOpen int
		errs                        = map[string]int{}
		mixed                       []string
	)
	start := time.Now()
	for i := range rounds {
		key := keys[rng.IntN(len(keys))]
		openVersion := s.latestVersion(key)
		f, err := os.Open(m.path(key))
		if err != nil {
			errs["open: "+errnoOf(err)]++
			failed++
			s.writeVersion(t, key, i%2 == 1)
			s.consolidate(t)
			continue
		}
		pause()
		s.writeVersion(t, key, i%2 == 1)
		s.consolidate(t)
		pause()
		b, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			errs["read: "+errnoOf(err)]++
			failed++
			continue
		}
		switch v := s.version(key, b); {
		case v < 0:
			mixed = append(mixed, fmt.Sprintf("round %d: %s: %d bytes that are no version of it (latest %d)", i, key, len(b), s.latestVersion(key)))
		case v == s.latestVersion(key):
			current++
			ok++
		case v == openVersion:
			atOpen++
			ok++
		default:
			ok++
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d rounds in %v: %d complete reads (%d of the version current at open, %d older, %d written during the round), %d errors %v; background reader: %d reads, %d errors; %d `zarrfs refresh` runs alongside",
		rounds, time.Since(start).Round(time.Millisecond), ok, atOpen, ok-atOpen-current, current, failed, errs, bgReads.Load(), bgErrors.Load(), refreshes.Load())
	if msg, _ := bgMixed.Load().(string); msg != "" {
		t.Errorf("the background reader read a mix of versions: %s", msg)
	}
	for _, msg := range mixed[:min(10, len(mixed))] {
		t.Error(msg)
	}
	if len(mixed) > 0 {
		t.Errorf("%d of %d reads returned a mix of versions", len(mixed), rounds)
	}
	if ok < rounds/2 {
		t.Errorf("only %d of %d reads succeeded: the check proves little", ok, rounds)
	}

	// Once the origin is quiet, a refresh makes the latest version of every chunk visible.
	refreshNow(t, m.Dir)
	for _, key := range keys {
		b, err := os.ReadFile(m.path(key))
		if v := s.version(key, b); err != nil || v != s.latestVersion(key) {
			t.Errorf("%s after a final refresh: version %d (%d bytes, err %v), want the latest, %d", key, v, len(b), err, s.latestVersion(key))
		}
	}
}

// outageDuration is how long the origin fails in TestRefreshOriginOutage: 60 s, or
// ZARRFS_TEST_OUTAGE for local runs (never under CI).
func outageDuration(t *testing.T) time.Duration {
	d := 60 * time.Second
	if v := os.Getenv("ZARRFS_TEST_OUTAGE"); v != "" && os.Getenv("CI") != "true" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("ZARRFS_TEST_OUTAGE=%q: %v", v, err)
		}
	}
	return d
}

// walkMount lists every directory below root like find(1) does, going on past a directory that
// cannot be listed: it returns each path (slash-separated, relative) and whether it is a
// directory, and an error per directory that failed.
func walkMount(root string) (map[string]bool, map[string]string) {
	tree, failed := map[string]bool{}, map[string]string{}
	var walk func(rel string)
	walk = func(rel string) {
		entries, err := os.ReadDir(filepath.Join(root, filepath.FromSlash(rel)))
		if err != nil {
			failed[rel] = errnoOf(err)
		}
		for _, e := range entries {
			p := path.Join(rel, e.Name())
			tree[p] = e.IsDir()
			if e.IsDir() {
				walk(p)
			}
		}
	}
	walk("")
	return tree, failed
}

// TestRefreshOriginOutage: the origin answers 503 to everything for 60 s while the mount
// refreshes every 2 s: throughout, the tree lists and cached chunks read as before, and
// `zarrfs stats` shows the failing refresh; after the outage a refresh succeeds and brings the
// change made on the origin meanwhile.
func TestRefreshOriginOutage(t *testing.T) {
	t.Parallel() // see parallelTests in main_test.go
	fuseReady.require(t)
	outage := outageDuration(t)
	dir := t.TempDir()
	s := newRewriteStore(t, filepath.Join(dir, "s.zarr"), map[string]int{"a": 3, "b": 2})
	var down atomic.Bool
	o := newOrigin(t, dir, withStatus(func(*http.Request) int {
		if down.Load() {
			return http.StatusServiceUnavailable
		}
		return 0
	}))
	// A short attribute timeout makes the kernel ask the daemon (lookups, sizes) again and
	// again during the outage instead of answering from its own caches.
	m := mount(t, o.URL("s.zarr"), "--refresh", "2s", "--retry-timeout", "1s", "--attr-timeout", "1s")

	keys := s.keys()
	var tree0 map[string]bool // the tree the mount must list
	// failures counts each kind of failure; the first of each kind is reported in full.
	failures := map[string]int{}
	fail := func(kind, format string, args ...any) {
		t.Helper()
		if failures[kind]++; failures[kind] == 1 {
			t.Errorf("%s: "+format, append([]any{kind}, args...)...)
		}
	}
	check := func(when string) {
		t.Helper()
		got, failed := walkMount(m.Dir)
		for dir, err := range failed {
			fail("listing "+dir+"/ "+when, "%s", err)
		}
		if len(failed) == 0 && !maps.Equal(got, tree0) {
			fail("tree "+when, "lists %d entries, %d before the outage", len(got), len(tree0))
		}
		for _, key := range keys {
			b, err := os.ReadFile(m.path(key))
			if v := s.version(key, b); err != nil || v != 0 {
				fail("read "+key+" "+when, "version %d, %d bytes, err %v", v, len(b), err)
			}
		}
	}
	tree0, failed := walkMount(m.Dir)
	if len(failed) > 0 || !tree0["a"] || tree0["a/0"] {
		t.Fatalf("before the outage the mount lists %v, failures %v", tree0, failed)
	}
	check("before the outage")
	if lr := lastRefresh(t, m.Dir); lr != nil && lr.Error != "" {
		t.Fatalf("refresh failing before the outage: %+v", lr)
	}
	if t.Failed() {
		t.FailNow()
	}

	down.Store(true)
	began := time.Now()
	s.addArray(t, "c", 1) // on the origin meanwhile: invisible until it answers again
	checks, sawError := 0, 0
	for time.Since(began) < outage {
		time.Sleep(time.Second)
		checks++
		check("during the outage")
		if time.Since(began) < 5*time.Second {
			continue // the first refresh attempts are still running
		}
		if lr := lastRefresh(t, m.Dir); lr != nil && lr.Error != "" && lr.At.After(began) {
			sawError++
		} else {
			fail("stats during the outage", "last_refresh = %+v, want a failed refresh", lr)
		}
	}
	down.Store(false)
	ended := time.Now()
	t.Logf("outage of %v: %d checks, %d saw the failed refresh in stats; failures by kind: %v", ended.Sub(began).Round(time.Second), checks, sawError, failures)
	if sawError == 0 {
		t.Errorf("stats never showed a failed refresh during the outage")
	}

	// The next periodic refresh succeeds and brings the new array.
	var lr *refreshReport
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if lr = lastRefresh(t, m.Dir); lr != nil && lr.At.After(ended) && lr.Error == "" {
			break
		}
	}
	if lr == nil || !lr.At.After(ended) || lr.Error != "" {
		t.Fatalf("no successful refresh within 30 s of the outage's end: %+v", lr)
	}
	refreshNow(t, m.Dir)
	if b, err := os.ReadFile(m.path("c/0")); err != nil || s.version("c/0", b) != 0 {
		t.Errorf("the array added during the outage: c/0 reads %d bytes, err %v", len(b), err)
	}
	tree0["c"], tree0["c/.zarray"], tree0["c/0"] = true, false, false
	check("after the outage")
}

// errnoOf names the errno inside err, or says it has none.
func errnoOf(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}
