package integration

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// maxProblems caps how many differences compareTrees reports.
const maxProblems = 30

// compareTrees checks that got (a mount) shows exactly the tree of want (the origin dir):
//   - every file of want, opened by name under got, has the same size from stat and the same
//     bytes (this is how zarr clients read: by name);
//   - walking got (readdir) lists exactly the files and directories of want, and every listed
//     file has want's bytes (zarr-python 2 lists a group's children; rsync/cp -r list all).
//
// It returns the differences found, at most maxProblems of them.
func compareTrees(want, got string) []string {
	var (
		mu       sync.Mutex
		problems []string
	)
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < maxProblems {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	wantTree, err := listTree(want)
	if err != nil {
		return []string{fmt.Sprintf("walk %s: %v", want, err)}
	}

	// By name: stat and read each origin file under the mount, a few at a time.
	var files []string
	for rel, isDir := range wantTree {
		if !isDir {
			files = append(files, rel)
		}
	}
	sort.Strings(files)
	work := make(chan string)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rel := range work {
				compareFile(filepath.Join(want, rel), filepath.Join(got, rel), rel, report)
			}
		}()
	}
	for _, rel := range files {
		work <- rel
	}
	close(work)
	wg.Wait()
	for rel, isDir := range wantTree {
		if isDir {
			if fi, err := os.Stat(filepath.Join(got, rel)); err != nil || !fi.IsDir() {
				report("%s/: a directory in the origin, but under the mount: %v", rel, describe(fi, err))
			}
		}
	}

	// By listing.
	gotTree, err := listTree(got)
	if err != nil {
		report("walk the mount: %v", err)
		return problems
	}
	var unlisted, extra []string
	for rel := range wantTree {
		if _, ok := gotTree[rel]; !ok {
			unlisted = append(unlisted, rel)
		}
	}
	// A listed file that the origin has was compared by name above.
	for rel, isDir := range gotTree {
		wantIsDir, ok := wantTree[rel]
		switch {
		case !ok:
			extra = append(extra, rel)
		case isDir != wantIsDir:
			report("%s: listed as dir=%v under the mount, dir=%v in the origin", rel, isDir, wantIsDir)
		}
	}
	sort.Strings(unlisted)
	sort.Strings(extra)
	if len(unlisted) > 0 {
		report("%d origin entries not listed by readdir under the mount, e.g. %s", len(unlisted), firstFew(unlisted))
	}
	if len(extra) > 0 {
		report("%d entries listed under the mount that the origin does not have, e.g. %s", len(extra), firstFew(extra))
		for _, rel := range extra {
			if b, err := os.ReadFile(filepath.Join(got, rel)); err == nil && len(extra) <= 5 {
				report("%s: extra entry holds %d bytes: %.80q", rel, len(b), b)
			}
		}
	}
	return problems
}

func compareFile(wantPath, gotPath, rel string, report func(string, ...any)) {
	wantBytes, err := os.ReadFile(wantPath)
	if err != nil {
		report("%s: read origin: %v", rel, err)
		return
	}
	fi, err := os.Stat(gotPath)
	if err != nil {
		report("%s: stat under the mount: %v", rel, err)
		return
	}
	if !fi.Mode().IsRegular() {
		report("%s: not a regular file under the mount: %v", rel, fi.Mode())
		return
	}
	if fi.Size() != int64(len(wantBytes)) {
		report("%s: stat size %d under the mount, %d in the origin", rel, fi.Size(), len(wantBytes))
	}
	gotBytes, err := os.ReadFile(gotPath)
	if err != nil {
		report("%s: read under the mount: %v", rel, err)
		return
	}
	if !bytes.Equal(gotBytes, wantBytes) {
		report("%s: %d bytes under the mount differ from the origin's %d bytes (first difference at %d)",
			rel, len(gotBytes), len(wantBytes), firstDiff(gotBytes, wantBytes))
	}
}

// listTree maps every path below root (slash-separated, relative) to whether it is a directory.
func listTree(root string) (map[string]bool, error) {
	tree := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		tree[filepath.ToSlash(rel)] = d.IsDir()
		return nil
	})
	return tree, err
}

func describe(fi os.FileInfo, err error) string {
	if err != nil {
		return err.Error()
	}
	return fi.Mode().String()
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func firstFew(s []string) string {
	if len(s) > 5 {
		return strings.Join(s[:5], ", ") + ", ..."
	}
	return strings.Join(s, ", ")
}

// copyTree copies src to dst with writable modes (the shared fixtures are read-only), so a test
// can change its copy.
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}

// fixtureStores are the stores written by other zarr implementations, as (directory the
// origin serves, store path below it).
var fixtureStores = []struct {
	name, serve, store string
}{
	{"zarr-python-2.13", "zarr-python-2.13", "fixture"},
	{"zarrita-v2", "zarrita/v2", "data.zarr"},
	{"zarrita-v3", "zarrita/v3", "data.zarr"},
}

// TestTreeMatchesOrigin mounts each fixture store and checks the mount shows exactly the
// origin's files, byte for byte, with exact sizes — served by the Go origin (HTML listings that
// include dotfiles) and by nginx (autoindex hides dotfiles, so the client must ask for
// .zarray/.zgroup/.zattrs by name; the zarr-python-2.13 fixture has no consolidated metadata).
func TestTreeMatchesOrigin(t *testing.T) {
	t.Parallel() // see parallelTests in main_test.go
	fixturesReady.require(t)
	for _, server := range []string{"go", "nginx"} {
		for _, fx := range fixtureStores {
			t.Run(fx.name+"/"+server, func(t *testing.T) {
				serveDir := filepath.Join(fixturesDir, fx.serve)
				var url string
				if server == "go" {
					url = newOrigin(t, serveDir).URL(fx.store)
				} else {
					url = newNginx(t, serveDir).URL(fx.store)
				}
				m := mount(t, url)
				want := filepath.Join(serveDir, fx.store)
				problems := compareTrees(want, m.Dir)
				for _, p := range problems {
					t.Error(p)
				}
				tree, _ := listTree(want)
				t.Logf("%s via %s: compared %d entries, %d problems", fx.name, server, len(tree), len(problems))
			})
		}
	}
}
