package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// pythonHTTPServer is `python3 -m http.server` serving dir: Last-Modified, no ETag, no
// ranges, If-Modified-Since. It logs one line per request to stderr, which is how requests are
// counted.
type pythonHTTPServer struct {
	base string
	mu   sync.Mutex
	log  []pyRequest
}

type pyRequest struct {
	path   string
	status int
}

var pyLogLine = regexp.MustCompile(`"GET (\S+) HTTP/1\.[01]" (\d{3})`)

func startPythonHTTPServer(t *testing.T, dir string) *pythonHTTPServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, pythonBin, "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", dir, fmt.Sprint(port))
	cmd.WaitDelay = 5 * time.Second
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("start %s -m http.server: %v", pythonBin, err)
		}
		t.Skipf("no %s: %v", pythonBin, err)
	}
	s := &pythonHTTPServer{base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := pyLogLine.FindStringSubmatch(sc.Text()); m != nil {
				var code int
				fmt.Sscan(m[2], &code)
				s.mu.Lock()
				s.log = append(s.log, pyRequest{m[1], code})
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(s.base + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("python3 -m http.server not answering after 15s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return s
}

// requests returns the log from the n-th request on, once it has been quiet for a moment
// (bounded), and its length.
func (s *pythonHTTPServer) requests(from int) ([]pyRequest, int) {
	deadline := time.Now().Add(5 * time.Second)
	last := -1
	for time.Now().Before(deadline) {
		s.mu.Lock()
		n := len(s.log)
		s.mu.Unlock()
		if n == last {
			break
		}
		last = n
		time.Sleep(300 * time.Millisecond)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]pyRequest(nil), s.log[from:]...), len(s.log)
}

// TestLastModifiedRevalidates: with an origin that sends Last-Modified and no ETag (python3 -m
// http.server, started from /usr/bin/python3), a remount on the same cache after one entry
// was damaged fetches only that entry again (200) and revalidates every other chunk with
// If-Modified-Since (304), instead of dropping them all as unversioned.
func TestLastModifiedRevalidates(t *testing.T) {
	fuseReady.require(t)
	dir := t.TempDir()
	s := generateStore(t, dir, 12)
	// Files written in the same second as an answer's Date are not trusted (their
	// Last-Modified could miss a rewrite in that second): these were written an hour ago.
	old := time.Now().Add(-time.Hour)
	if err := filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, old, old)
	}); err != nil {
		t.Fatal(err)
	}
	py := startPythonHTTPServer(t, dir)
	cache := filepath.Join(t.TempDir(), "cache")
	mnt := newMountpoint(t)
	readAll := func(m *mounted, when string) {
		for _, k := range s.chunks {
			b, err := readBounded(m.path(k), 30*time.Second)
			if err != nil || !bytes.Equal(b, s.files[k]) {
				t.Fatalf("%s %s: %d bytes, %v", when, k, len(b), err)
			}
		}
	}

	m := mountAt(t, mnt, py.base+"/"+cacheStoreName, "--cache-dir", cache, "--refresh", "0")
	readAll(m, "first mount")
	m.cleanup(t)
	if out := m.output(); strings.Contains(out, "unversioned") && !strings.Contains(out, "unversioned_removed=0") {
		t.Errorf("first mount logs unversioned entries:\n%s", logLine(out, "unversioned"))
	}

	// Damage the entry of one chunk: flip its last byte.
	damaged := damageOneEntry(t, cache, s.chunks)
	t.Logf("damaged the cache entry of %s", damaged)
	_, from := py.requests(0)

	m = mountAt(t, mnt, py.base+"/"+cacheStoreName, "--cache-dir", cache, "--refresh", "0")
	readAll(m, "remount")
	if out := m.output(); !strings.Contains(out, "unversioned_removed=0") {
		t.Errorf("the remount did not keep every entry: %s", logLine(out, "reusing"))
	}
	reqs, _ := py.requests(from)
	byStatus := map[int][]string{}
	chunk := map[string]bool{}
	for _, k := range s.chunks {
		chunk["/"+cacheStoreName+"/"+k] = true
	}
	for _, r := range reqs {
		if chunk[r.path] {
			byStatus[r.status] = append(byStatus[r.status], strings.TrimPrefix(r.path, "/"+cacheStoreName+"/"))
		}
	}
	t.Logf("remount: %d chunk requests: %d answered 304, %d answered 200 (%v)", len(reqs), len(byStatus[304]), len(byStatus[200]), byStatus[200])
	if len(byStatus[200]) != 1 || byStatus[200][0] != damaged {
		t.Errorf("chunks fetched again (200): %v; want only the damaged %s", byStatus[200], damaged)
	}
	if len(byStatus[304]) != len(s.chunks)-1 {
		t.Errorf("%d chunks revalidated (304), want %d (all but the damaged one)", len(byStatus[304]), len(s.chunks)-1)
	}
}

// damageOneEntry flips the last data byte of a cache entry of one of keys and returns the key.
func damageOneEntry(t *testing.T, cacheDir string, keys []string) string {
	t.Helper()
	var victim, key string
	_ = filepath.WalkDir(filepath.Join(cacheDir, "entries"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || victim != "" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		// The header records the key; the longest key found in it is the one (a/1.1 is
		// also inside a/1.10's header).
		for _, k := range keys {
			if bytes.Contains(b[:min(len(b), 512)], []byte(k)) && len(k) > len(key) {
				key = k
			}
		}
		if key != "" {
			victim = p
		}
		return nil
	})
	if victim == "" {
		t.Fatalf("no cache entry of a chunk under %s", cacheDir)
	}
	b, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0xff
	if err := os.WriteFile(victim, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return key
}

// logLine is the first line of out that contains want.
func logLine(out, want string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, want) {
			return line
		}
	}
	return "(no line with " + want + ")"
}
