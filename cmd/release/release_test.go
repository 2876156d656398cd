package main

import (
	"archive/zip"
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// fakeRepo is a tiny module laid out like the repository: a main package that prints the
// version it was stamped with, LICENSE, README.md and a Python package (with a __pycache__
// that must stay out of the wheel).
func fakeRepo(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"go.mod":                    "module example.com/fake\n\ngo 1.22\n",
		"cmd/zarrfs/main.go":        "package main\n\nimport \"fmt\"\n\nvar releaseVersion string\n\nfunc main() { fmt.Println(\"zarrfs\", releaseVersion) }\n",
		"LICENSE":                   "the license\n",
		"README.md":                 "# zarrfs\n\nthe readme\n",
		"python/zarrfs/__init__.py": "from ._version import __version__\n",
		"python/zarrfs/torch.py":    "# torch\n",
		"python/zarrfs/_version.py": "__version__ = 'from the source tree'\n",
		"python/zarrfs/__pycache__/torch.cpython-311.pyc": "junk",
		"python/tests/test_x.py":                          "# not packaged\n",
	}
	for name, data := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func buildFake(t *testing.T, root, version string) (string, []string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "dist")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	arts, err := release(ctx, config{Root: root, Out: out, Version: version, Time: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	return out, arts
}

func TestRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	root := fakeRepo(t)
	out, arts := buildFake(t, root, "1.2.3rc1")
	want := []string{
		"zarrfs-1.2.3rc1-linux-amd64.tar.gz",
		"zarrfs-1.2.3rc1-linux-arm64.tar.gz",
		"zarrfs-1.2.3rc1-py3-none-manylinux_2_17_aarch64.whl",
		"zarrfs-1.2.3rc1-py3-none-manylinux_2_17_x86_64.whl",
		"SHA256SUMS",
	}
	if strings.Join(arts, " ") != strings.Join(want, " ") {
		t.Fatalf("artifacts %q, want %q", arts, want)
	}
	if err := checkDir(out); err != nil {
		t.Fatalf("checkDir: %v", err)
	}
	for _, tc := range []struct {
		machine string
		elf     elf.Machine
	}{{"x86_64", elf.EM_X86_64}, {"aarch64", elf.EM_AARCH64}} {
		t.Run(tc.machine, func(t *testing.T) {
			w, err := checkWheel(filepath.Join(out, "zarrfs-1.2.3rc1-py3-none-manylinux_2_17_"+tc.machine+".whl"))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for n := range w.Files {
				names = append(names, n)
			}
			sort.Strings(names)
			wantNames := []string{
				"zarrfs-1.2.3rc1.data/scripts/zarrfs",
				"zarrfs-1.2.3rc1.dist-info/LICENSE",
				"zarrfs-1.2.3rc1.dist-info/METADATA",
				"zarrfs-1.2.3rc1.dist-info/RECORD",
				"zarrfs-1.2.3rc1.dist-info/WHEEL",
				"zarrfs-1.2.3rc1.dist-info/top_level.txt",
				"zarrfs/__init__.py",
				"zarrfs/_version.py",
				"zarrfs/torch.py",
			}
			if strings.Join(names, "\n") != strings.Join(wantNames, "\n") {
				t.Errorf("wheel files:\n%s\nwant:\n%s", strings.Join(names, "\n"), strings.Join(wantNames, "\n"))
			}
			if got := string(w.Files["zarrfs/_version.py"]); !strings.Contains(got, `__version__ = "1.2.3rc1"`) {
				t.Errorf("_version.py = %q", got)
			}
			if m := w.Modes[w.Binary].Perm(); m != 0o755 {
				t.Errorf("binary mode %v, want 0755", m)
			}
			f, err := elf.NewFile(bytes.NewReader(w.Files[w.Binary]))
			if err != nil {
				t.Fatal(err)
			}
			if f.Machine != tc.elf {
				t.Errorf("ELF machine %v, want %v", f.Machine, tc.elf)
			}
			meta := string(w.Files["zarrfs-1.2.3rc1.dist-info/METADATA"])
			if !strings.HasPrefix(meta, "Metadata-Version: 2.1\nName: zarrfs\nVersion: 1.2.3rc1\n") || !strings.HasSuffix(meta, "\n\n# zarrfs\n\nthe readme\n") {
				t.Errorf("METADATA:\n%s", meta)
			}
			// The binary runs here (amd64) and says the version it was stamped with.
			if tc.machine == "x86_64" && runtime.GOARCH == "amd64" {
				exe := filepath.Join(t.TempDir(), "zarrfs")
				if err := os.WriteFile(exe, w.Files[w.Binary], 0o755); err != nil {
					t.Fatal(err)
				}
				got, err := exec.Command(exe).Output()
				if err != nil || string(got) != "zarrfs 1.2.3rc1\n" {
					t.Errorf("the wheel's binary printed %q, %v", got, err)
				}
			}
		})
	}

	t.Run("fixed times", func(t *testing.T) {
		zr, err := zip.OpenReader(filepath.Join(out, want[3]))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		for _, f := range zr.File {
			if !f.Modified.Equal(time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)) {
				t.Errorf("%s: time %v", f.Name, f.Modified)
			}
		}
	})

	t.Run("reproducible", func(t *testing.T) {
		out2, _ := buildFake(t, root, "1.2.3rc1")
		a, _ := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
		b, _ := os.ReadFile(filepath.Join(out2, "SHA256SUMS"))
		if !bytes.Equal(a, b) {
			t.Errorf("two builds differ:\n%s\n%s", a, b)
		}
	})

	t.Run("corruption is caught", func(t *testing.T) {
		// A wheel whose RECORD lies about a file, and a SHA256SUMS that no longer matches.
		whl := filepath.Join(out, want[3])
		b, err := os.ReadFile(whl)
		if err != nil {
			t.Fatal(err)
		}
		bad := rewriteZip(t, b, "zarrfs/torch.py", []byte("# changed\n"))
		if err := os.WriteFile(whl, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		err = checkDir(out)
		if err == nil || !strings.Contains(err.Error(), "RECORD: zarrfs/torch.py: hash") || !strings.Contains(err.Error(), "SHA256SUMS") {
			t.Errorf("checkDir on a tampered wheel: %v", err)
		}
	})
}

// rewriteZip copies zip data with one file's content replaced.
func rewriteZip(t *testing.T, data []byte, name string, content []byte) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range zr.File {
		w, err := zw.CreateHeader(&f.FileHeader)
		if err != nil {
			t.Fatal(err)
		}
		if f.Name == name {
			w.Write(content)
			continue
		}
		rc, _ := f.Open()
		b := new(bytes.Buffer)
		b.ReadFrom(rc)
		rc.Close()
		w.Write(b.Bytes())
	}
	zw.Close()
	return buf.Bytes()
}

func TestCheckStaticELF(t *testing.T) {
	// The test binary itself: built for this machine; static or not depending on cgo, so
	// only the machine mismatch is certain.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	other := elf.EM_AARCH64
	if runtime.GOARCH == "arm64" {
		other = elf.EM_X86_64
	}
	if err := checkStaticELF(b, other); err == nil || !strings.Contains(err.Error(), "ELF machine") {
		t.Errorf("wrong machine not caught: %v", err)
	}
	if err := checkStaticELF([]byte("#!/bin/sh\n"), elf.EM_X86_64); err == nil {
		t.Errorf("a script passed as an ELF binary")
	}
	// A dynamically linked system binary is refused.
	if runtime.GOARCH == "amd64" {
		if sh, err := os.ReadFile("/bin/sh"); err == nil {
			if err := checkStaticELF(sh, elf.EM_X86_64); err == nil {
				t.Errorf("/bin/sh (dynamically linked) passed as static")
			}
		}
	}
}

func TestVersions(t *testing.T) {
	for _, tc := range []struct{ describe, want string }{
		{"v1.2.3-0-gabcdef0", "1.2.3"},
		{"v1.2.3-0-gabcdef0-dirty", "1.2.3+dirty"},
		{"v1.2.3-4-gabcdef0", "1.2.3.post4+gabcdef0"},
		{"v1.2.3-4-gabcdef0-dirty", "1.2.3.post4+gabcdef0.dirty"},
		{"v0.9.0rc1-0-g1234567", "0.9.0rc1"},
	} {
		got, err := versionFromDescribe(tc.describe)
		if err != nil || got != tc.want {
			t.Errorf("versionFromDescribe(%q) = %q, %v; want %q", tc.describe, got, err, tc.want)
		}
		if !validVersion(got) {
			t.Errorf("%q is not valid", got)
		}
	}
	if _, err := versionFromDescribe("release-2024"); err == nil {
		t.Errorf("a non-version tag was accepted")
	}
	for _, v := range []string{"1", "1.2.3", "1.2.3a1", "1.2.3.post4.dev1+g1a2b3c4.dirty", "0.0.0.dev21+g66d85cd", "1!2.0"} {
		if !validVersion(v) {
			t.Errorf("validVersion(%q) = false", v)
		}
	}
	for _, v := range []string{"", "v1.2.3", "1.2.3-beta", "1.2.3+", "latest", "1..2", "1.2.3+G1"} {
		if validVersion(v) {
			t.Errorf("validVersion(%q) = true", v)
		}
	}
	// Whatever git says about this checkout is a valid version.
	if _, err := exec.LookPath("git"); err == nil {
		if v, err := gitVersion(context.Background(), "."); err == nil && !validVersion(v) {
			t.Errorf("gitVersion = %q, not PEP 440", v)
		}
	}
	if v, err := gitVersion(context.Background(), t.TempDir()); err != nil || v != "0.0.0.dev0" {
		t.Errorf("gitVersion outside a checkout = %q, %v; want 0.0.0.dev0", v, err)
	}
	if _, err := release(context.Background(), config{Root: t.TempDir(), Out: t.TempDir(), Version: "v1"}); err == nil || !strings.Contains(err.Error(), "PEP 440") {
		t.Errorf("release with version v1: %v", err)
	}
}
