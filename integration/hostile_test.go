package integration

// Hostile metadata end to end (issue 12, item 4): a store whose good arrays sit next to
// malformed, absurd and escaping nodes mounts with the bad ones left out — warned about in the
// daemon's log and listed by `zarrfs stats --json` — and the good ones read byte-identically
// with zarr-python; a store whose root is malformed, or whose .zmetadata is 500 MB, fails the
// mount with one clear line, with the daemon's memory bounded.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/zarrfs/zarrfs/remote/wire"
)

// hostileLongName is one byte over NAME_MAX: no file system can hold it, but a .zmetadata can.
var hostileLongName = strings.Repeat("L", 256)

const hostileGoodZarray = `{"zarr_format":2,"shape":[4],"chunks":[2],"dtype":"<i2","compressor":null,"fill_value":0,"filters":null,"order":"C"}`

// hostileOnDisk are the bad nodes written as files next to the good arrays, with the word the
// reason for leaving each out must contain.
var hostileOnDisk = []struct {
	dir, doc, body, reason string
}{
	{"zero", ".zarray", strings.Replace(hostileGoodZarray, `"chunks":[2]`, `"chunks":[0]`, 1), "chunks [0] is 0"},
	{"neg", ".zarray", strings.Replace(hostileGoodZarray, `"shape":[4]`, `"shape":[-4]`, 1), "shape [0] is -4"},
	{"trunc", ".zarray", hostileGoodZarray[:40], "JSON"},
	{"huge", ".zarray", strings.Replace(hostileGoodZarray, `"shape":[4],"chunks":[2]`, `"shape":[4294967296,4294967296,4],"chunks":[1,1,1]`, 1), "more than 2^63-1 chunks"},
	{"dims", ".zarray", strings.Replace(strings.Replace(hostileGoodZarray, `"shape":[4]`, `"shape":[`+strings.TrimSuffix(strings.Repeat("1,", 10000), ",")+`]`, 1), `"chunks":[2]`, `"chunks":[1]`, 1), "10000 dimensions"},
	{"sep", ".zarray", strings.Replace(hostileGoodZarray, `"order":"C"`, `"order":"C","dimension_separator":"|"`, 1), "dimension_separator"},
	{"badgrp", ".zgroup", `{"zarr_format":2`, "JSON"},
	{"badgrp/child", ".zarray", hostileGoodZarray, ""},
	{`back\slash`, ".zarray", hostileGoodZarray, "backslash"},
}

// hostileKeysOnly are keys only a .zmetadata can hold: escaping, absolute, NUL, too long.
var hostileKeysOnly = []struct{ dir, reason string }{
	{"../escape", "only of periods"},
	{"grp/../../etc", "only of periods"},
	{"/abs", "empty component"},
	{"nul\x00name", "NUL"},
	{"x/./y", "only of periods"},
	{hostileLongName, "256 bytes"},
}

// hostileKept are the nodes that must mount: the good arrays, and nodes that look odd but that
// zarrfs can serve (an unknown dtype is the client's business; a grid of 9e18 chunks is
// countable).
var hostileKept = []string{"good", "grp", "grp/inner", "text", "newdtype", "vast"}

// writeHostileStore writes the store under dir/name and returns its path.
func writeHostileStore(t *testing.T, dir string) string {
	t.Helper()
	root := filepath.Join(dir, "hostile.zarr")
	if out, err := runScript(t, pythonBin, "py/hostile_store.py", "gen", root); err != nil {
		t.Fatalf("generate the store: %v\n%s", err, out)
	}
	write := func(key, body string) {
		p := filepath.Join(root, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, p, []byte(body))
	}
	for _, n := range hostileOnDisk {
		write(n.dir+"/"+n.doc, n.body)
		if n.doc == ".zarray" {
			write(n.dir+"/0", "\x01\x00\x02\x00")
		}
	}
	write("newdtype/.zarray", strings.Replace(hostileGoodZarray, `"<i2"`, `"<x9"`, 1))
	write("vast/.zarray", strings.Replace(hostileGoodZarray, `"shape":[4],"chunks":[2]`, `"shape":[9000000000000000000],"chunks":[1]`, 1))
	write("vast/0", "\x01\x00")

	// .zmetadata as zarr.consolidate_metadata writes it, from every document on disk (a
	// truncated one as a string, as early zarr-python stored documents), plus keys no disk has.
	meta := map[string]any{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch d.Name() {
		case ".zarray", ".zgroup", ".zattrs":
		default:
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if json.Valid(b) {
			meta[filepath.ToSlash(rel)] = json.RawMessage(b)
		} else {
			meta[filepath.ToSlash(rel)] = string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range hostileKeysOnly {
		meta[k.dir+"/.zarray"] = json.RawMessage(hostileGoodZarray)
	}
	doc, err := json.Marshal(map[string]any{"zarr_consolidated_format": 1, "metadata": meta})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, ".zmetadata"), doc)
	return root
}

// hostileStats is the part of `zarrfs stats --json` this test reads.
type hostileStats struct {
	Source  string `json:"tree_from"`
	Skipped []struct {
		Path    string `json:"path"`
		Problem string `json:"problem"`
		Fix     string `json:"fix"`
		Inside  string `json:"inside"`
	} `json:"skipped_nodes"`
}

func TestHostileMetadata(t *testing.T) {
	fuseReady.require(t)
	pythonReady.require(t)
	root := writeHostileStore(t, t.TempDir())

	cases := []struct {
		name    string
		opts    []originOption
		source  string
		skipped map[string]string // path -> a word of its reason
	}{
		{name: "consolidated", source: "consolidated .zmetadata"},
		// The same store without .zmetadata: the tree comes from the origin's directory index,
		// which cannot hold the keys only .zmetadata had, and a walk does not enter a group left
		// out, so its child goes unnamed.
		{name: "directory index", source: "directory index", opts: []originOption{withStatus(func(r *http.Request) int {
			if strings.HasSuffix(r.URL.Path, "/.zmetadata") {
				return http.StatusNotFound
			}
			return 0
		})}},
	}
	for i := range cases {
		tc := &cases[i]
		tc.skipped = map[string]string{}
		for _, n := range hostileOnDisk {
			if tc.name == "directory index" && n.dir == "badgrp/child" {
				continue
			}
			tc.skipped[n.dir] = n.reason
		}
		if tc.name == "consolidated" {
			for _, k := range hostileKeysOnly {
				tc.skipped[k.dir] = k.reason
			}
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := newOrigin(t, filepath.Dir(root), tc.opts...)
			m := mount(t, o.URL("hostile.zarr"))

			// Good arrays: every file byte-identical, and zarr-python reads the same values.
			for _, arr := range []string{"good", "grp/inner", "text"} {
				entries, err := os.ReadDir(filepath.Join(root, arr))
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range entries {
					readOneFile(t, m.Dir, root, arr+"/"+e.Name())
				}
			}
			out, err := runScript(t, pythonBin, "py/hostile_store.py", "check", m.Dir, root, "good", "grp/inner", "text")
			if err != nil {
				t.Fatalf("zarr-python through the mount: %v\n%s", err, out)
			}
			var res struct {
				Compared int      `json:"compared"`
				Members  []string `json:"root_members"`
			}
			if err := json.Unmarshal([]byte(lastLine(out)), &res); err != nil {
				t.Fatalf("check output: %v\n%s", err, out)
			}
			wantMembers := []string{"good", "grp", "newdtype", "text", "vast"}
			if res.Compared != 3 || !slices.Equal(res.Members, wantMembers) {
				t.Errorf("zarr-python compared %d arrays and lists the root as %q; want 3 and %q", res.Compared, res.Members, wantMembers)
			}

			// Kept nodes are there; bad ones are absent, in lookups and in listings.
			for _, p := range hostileKept {
				if fi, err := os.Stat(m.path(p)); err != nil || !fi.IsDir() {
					t.Errorf("kept node %s: %v", p, err)
				}
			}
			names, err := os.ReadDir(m.Dir)
			if err != nil {
				t.Fatal(err)
			}
			var listed []string
			for _, e := range names {
				listed = append(listed, e.Name())
			}
			if want := []string{".zattrs", ".zgroup", ".zmetadata", "good", "grp", "newdtype", "text", "vast"}; !subset(listed, want) || len(listed) > len(want) {
				t.Errorf("root lists %q, want %q (less .zattrs/.zmetadata where absent)", listed, want)
			}
			for p := range tc.skipped {
				if strings.ContainsAny(p, "\x00") || len(p) > 255 || strings.HasPrefix(p, "/") || strings.Contains(p, "..") || strings.Contains(p, "/./") {
					continue // not a name a path lookup can even ask for
				}
				if _, err := os.Lstat(m.path(p)); err == nil {
					t.Errorf("bad node %q is in the mount", p)
				}
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(m.Dir), "escape")); err == nil {
				t.Errorf("a node escaped the mount")
			}
			// A grid of 9e18 chunks: a name far out is resolved without a hang; chunk 0 reads.
			readOneFile(t, m.Dir, root, "vast/0")
			if _, err := os.Stat(m.path("vast/9000000000000000000")); err == nil {
				t.Errorf("a chunk outside the grid of vast exists")
			}

			// zarrfs stats --json lists every bad node with its reason and a fix.
			sout, code := runCmd(t, time.Minute, nil, zarrfsBin, "stats", "--json", m.Dir)
			if code != 0 {
				t.Fatalf("zarrfs stats --json: exit %d\n%s", code, sout)
			}
			var st hostileStats
			if err := json.Unmarshal([]byte(sout), &st); err != nil {
				t.Fatalf("stats JSON: %v\n%s", err, sout)
			}
			if st.Source != tc.source {
				t.Errorf("tree from %q, want %q", st.Source, tc.source)
			}
			got := map[string]bool{}
			for _, s := range st.Skipped {
				got[s.Path] = true
				word, ok := tc.skipped[s.Path]
				switch {
				case !ok:
					t.Errorf("stats list %q as skipped: %s", s.Path, s.Problem)
				case s.Inside == "" && (!strings.Contains(s.Problem, word) || s.Fix == ""):
					t.Errorf("skipped %q: problem %q fix %q; want %q and a fix", s.Path, s.Problem, s.Fix, word)
				}
			}
			for p := range tc.skipped {
				if !got[p] {
					t.Errorf("stats do not list %q as skipped", p)
				}
			}
			hout, code := runCmd(t, time.Minute, nil, zarrfsBin, "stats", m.Dir)
			if code != 0 || !strings.Contains(hout, fmt.Sprintf("skipped   %d nodes left out", len(tc.skipped))) {
				t.Errorf("zarrfs stats (exit %d) lacks the skipped nodes:\n%s", code, hout)
			}

			// The daemon's log warns about each node left out for itself.
			log := m.output()
			for p := range tc.skipped {
				if p == "badgrp/child" {
					continue // counted in badgrp's line
				}
				if !strings.Contains(log, "node="+strconv.Quote(p)) && !strings.Contains(log, "node="+p+" ") {
					t.Errorf("daemon log has no warning naming %q", p)
				}
			}
			if n := strings.Count(log, "leaving out a node"); n != len(tc.skipped)-boolInt(tc.name == "consolidated") {
				t.Errorf("%d warnings in the daemon log, want %d", n, len(tc.skipped)-boolInt(tc.name == "consolidated"))
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func subset(have, of []string) bool {
	for _, h := range have {
		if !slices.Contains(of, h) {
			return false
		}
	}
	return true
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// failMount runs a foreground mount that must fail, and returns its output and the daemon's
// peak resident set (VmHWM, in kB) sampled while it ran.
func failMount(t *testing.T, url string) (out string, peakKB int64) {
	t.Helper()
	mnt := newMountpoint(t)
	args := append([]string{"mount", "--foreground"}, defaultMountArgs(t, nil)...)
	p := startZarrfs(t, nil, mnt, append(args, url, mnt)...)
	deadline := time.Now().Add(failWait)
	for !p.exited() && !isFuseMount(mnt) && time.Now().Before(deadline) {
		if kb := vmHWM(p.cmd.Process.Pid); kb > peakKB {
			peakKB = kb
		}
		time.Sleep(10 * time.Millisecond)
	}
	if isFuseMount(mnt) {
		t.Fatalf("mounted; want the mount to fail")
	}
	if !p.waitExit(time.Second) {
		t.Fatalf("still running after %v; want a failed mount", failWait)
	}
	if code := p.exitCode(); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	if n := strings.Count("\n"+p.output(), "\nzarrfs: "); n != 1 {
		t.Errorf("%d lines start with %q, want one:\n%s", n, "zarrfs: ", p.output())
	}
	return p.output(), peakKB
}

// vmHWM is a process's peak resident set in kB, 0 once it is gone.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// TestHostileRootFailsMount: a malformed root is the one bad node that fails the mount, with
// one line naming the document and the fix.
func TestHostileRootFailsMount(t *testing.T) {
	fuseReady.require(t)
	dir := t.TempDir()
	for name, files := range map[string]map[string]string{
		"truncated.zarr": {".zmetadata": `{"zarr_consolidated_format":1,"metadata":{".zgroup":{"zarr_format":2},"a/.zarray":`},
		"badgroup.zarr":  {".zgroup": `{"zarr_format":"two"}`, "a/.zarray": hostileGoodZarray},
		"badarray.zarr":  {".zarray": strings.Replace(hostileGoodZarray, `"chunks":[2]`, `"chunks":[0]`, 1)},
	} {
		for key, body := range files {
			p := filepath.Join(dir, name, filepath.FromSlash(key))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, p, []byte(body))
		}
	}
	o := newOrigin(t, dir)
	for name, want := range map[string][]string{
		"truncated.zarr": {"root metadata cannot be used", ".zmetadata: is not valid JSON", "to fix:", "consolidate_metadata"},
		"badgroup.zarr":  {"root metadata cannot be used", ".zgroup: zarr_format must be an integer", "to fix:"},
		"badarray.zarr":  {"root metadata cannot be used", ".zarray: chunks [0] is 0", "to fix:"},
	} {
		t.Run(name, func(t *testing.T) {
			out, _ := failMount(t, o.URL(name))
			if line := zarrfsLine(out, want...); line == "" {
				t.Errorf("no line %q containing %q:\n%s", "zarrfs: ", want, out)
			} else {
				t.Logf("%s", line)
			}
		})
	}
}

// hugeDocBytes is the size of the hostile .zmetadata: twice the limit (store.MaxMetaBytes).
const hugeDocBytes = 500 << 20

// TestHostileHugeMetadata: a 500 MB .zmetadata fails the mount with a message naming the
// limit, without the daemon holding it: refused on its Content-Length before any of it is
// read, and read no further than the limit when it is streamed without one. Nothing is
// written to disk: the handler makes the bytes.
func TestHostileHugeMetadata(t *testing.T) {
	fuseReady.require(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/.zmetadata") {
			http.NotFound(w, r)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/sized/") {
			w.Header().Set("Content-Length", strconv.Itoa(hugeDocBytes))
		}
		w.Header().Set("Content-Type", "application/json")
		// A valid start, then spaces: only its size is wrong.
		head := []byte(`{"zarr_consolidated_format":1,"metadata":{".zgroup":{"zarr_format":2}}`)
		if _, err := w.Write(head); err != nil {
			return
		}
		buf := []byte(strings.Repeat(" ", 1<<20))
		for sent := len(head); sent < hugeDocBytes; sent += len(buf) {
			n := min(len(buf), hugeDocBytes-sent)
			if _, err := w.Write(buf[:n]); err != nil {
				return // the client gave up: what it should do
			}
		}
	}))
	t.Cleanup(srv.Close)

	for _, mode := range []string{"sized", "streamed"} {
		t.Run(mode, func(t *testing.T) {
			start := time.Now()
			out, peakKB := failMount(t, srv.URL+"/"+mode+"/store.zarr")
			line := zarrfsLine(out, "268435456-byte limit")
			if line == "" {
				t.Errorf("no line naming the limit:\n%s", out)
			}
			t.Logf("after %.1fs, daemon peak RSS %d MiB: %s", time.Since(start).Seconds(), peakKB>>10, line)
			// The limit itself is 256 MiB: a streamed document is read up to it (in blocks, not a
			// doubling buffer); a sized one not at all. The race detector's shadow memory adds
			// to what the same heap costs: measured 264 MiB plain and 792 MiB under -race, where
			// a doubling buffer took 1037 MiB and 3700 MiB.
			limitKB := int64(300 << 10)
			if mode == "sized" {
				limitKB = 100 << 10
			}
			if raceEnabled {
				limitKB = limitKB * 7 / 2
			}
			if peakKB == 0 || peakKB > limitKB {
				t.Errorf("daemon peak RSS %d kB, want (0, %d]", peakKB, limitKB)
			}
		})
	}
}

// TestHostileManifest: a manifest whose keys escape the store or repeat is refused whole (the
// decoder in remote/wire checks every key), and the mount fails with one line saying so rather
// than mounting a tree built from it.
func TestHostileManifest(t *testing.T) {
	fuseReady.require(t)
	for name, keys := range map[string][]string{
		"escaping":  {".zgroup", "a/../../etc/passwd"},
		"absolute":  {"/etc/passwd", ".zgroup"},
		"duplicate": {".zgroup", "a/.zarray", "a/.zarray"},
	} {
		t.Run(name, func(t *testing.T) {
			var raw bytes.Buffer
			enc := wire.NewEncoder(&raw)
			if err := enc.WriteHeader(); err != nil {
				t.Fatal(err)
			}
			for i, k := range keys {
				if err := enc.Add(k, 24, fmt.Sprintf(`"v%d"`, i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := enc.End(); err != nil {
				t.Fatal(err)
			}
			zw, err := zstd.NewWriter(nil)
			if err != nil {
				t.Fatal(err)
			}
			body := zw.EncodeAll(raw.Bytes(), nil)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/store.zarr/" + wire.ManifestPath:
					w.Header().Set("Content-Type", wire.ContentType)
					w.Header().Set("ETag", `"m"`)
					_, _ = w.Write(body)
				case "/store.zarr/.zgroup", "/store.zarr/a/.zarray":
					_, _ = w.Write([]byte(`{"zarr_format":2}`))
				default:
					http.NotFound(w, r)
				}
			}))
			t.Cleanup(srv.Close)
			out, _ := failMount(t, srv.URL+"/store.zarr")
			if line := zarrfsLine(out, "malformed zarrfs manifest"); line == "" {
				t.Errorf("no line about the malformed manifest:\n%s", out)
			} else {
				t.Logf("%s", line)
			}
		})
	}
}
