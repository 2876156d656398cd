package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// These tests need no mount: they check that the comparisons the end-to-end tests rely on pass
// for a plain copy of a store and fail for a copy that differs, so a broken comparison cannot
// make a broken mount look good.

func TestCompareTreesDetectsDifferences(t *testing.T) {
	fixturesReady.require(t)
	src := filepath.Join(fixturesDir, "zarrita", "v2", "data.zarr")
	tests := []struct {
		name   string
		change func(t *testing.T, dir string)
		want   string // a substring of some reported problem; "" = no problems
	}{
		{"identical copy", func(*testing.T, string) {}, ""},
		{"one byte changed", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "2d.chunked.i2", "0.0")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)-1] ^= 0xff
			writeFile(t, p, b)
		}, "2d.chunked.i2/0.0"},
		{"file shorter", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, "1d.contiguous.i4", ".zarray"), 10); err != nil {
				t.Fatal(err)
			}
		}, "1d.contiguous.i4/.zarray: stat size 10"},
		{"file missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "1d.contiguous.i4", "0")); err != nil {
				t.Fatal(err)
			}
		}, "1d.contiguous.i4/0: stat under the mount"},
		{"directory missing", func(t *testing.T, dir string) {
			if err := os.RemoveAll(filepath.Join(dir, "my group with spaces")); err != nil {
				t.Fatal(err)
			}
		}, "my group with spaces/: a directory in the origin"},
		{"extra file", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "2d.chunked.i2", "7.7"), []byte("stray"))
		}, "2d.chunked.i2/7.7"},
		{"file where a directory was", func(t *testing.T, dir string) {
			if err := os.RemoveAll(filepath.Join(dir, "2d.chunked.i2")); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, "2d.chunked.i2"), []byte("x"))
		}, "2d.chunked.i2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "copy")
			copyTree(t, src, dir)
			tc.change(t, dir)
			problems := compareTrees(src, dir)
			if tc.want == "" {
				for _, p := range problems {
					t.Errorf("unexpected problem: %s", p)
				}
				return
			}
			for _, p := range problems {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Errorf("no problem mentions %q; got %q", tc.want, problems)
		})
	}
}

// swapFiles exchanges the contents of two files (two chunks of one array: still decodable,
// different values).
func swapFiles(t testing.TB, a, b string) {
	t.Helper()
	ab, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, a, bb)
	writeFile(t, b, ab)
}

func writeFile(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestClientScriptsDetectDifferences(t *testing.T) {
	fixturesReady.require(t)
	tests := []struct {
		name  string
		ready *prerequisite
		store string // below fixturesDir
		a, b  string // chunk files of one array to swap in the changed copy
		run   func(t *testing.T, mnt, direct string) (string, error)
	}{
		{"zarr-python compare_v2.py", pythonReady, "zarrita/v2/data.zarr", "2d.chunked.i2/0.0", "2d.chunked.i2/1.1", runCompareV2},
		{"zarrita.js compare_v3.mjs", nodeReady, "zarrita/v3/data.zarr", "2d.chunked.i2/c/0/0", "2d.chunked.i2/c/1/1", runCompareV3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.ready.require(t)
			direct := filepath.Join(fixturesDir, tc.store)
			dir := filepath.Join(t.TempDir(), "copy")
			copyTree(t, direct, dir)
			if out, err := tc.run(t, dir, direct); err != nil {
				t.Fatalf("a plain copy does not compare equal: %v\n%s", err, out)
			}
			swapFiles(t, filepath.Join(dir, tc.a), filepath.Join(dir, tc.b))
			out, err := tc.run(t, dir, direct)
			if err == nil {
				t.Fatalf("a copy with two chunks swapped compares equal:\n%s", out)
			}
			if !strings.Contains(out, "2d.chunked.i2") {
				t.Errorf("the report does not name the changed array:\n%s", out)
			}
		})
	}
}
