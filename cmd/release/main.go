// Command release builds zarrfs's release artifacts, offline, into a directory:
//
//	go run ./cmd/release [--version V] DIR
//
// For linux/amd64 and linux/arm64 it builds the static (CGO_ENABLED=0) zarrfs binary and
// packs it
//
//   - into a wheel, zarrfs-V-py3-none-manylinux_2_17_x86_64.whl (aarch64 for arm64), holding
//     the Python package python/zarrfs and the binary as zarrfs-V.data/scripts/zarrfs, which
//     pip installs into the environment's bin directory (so `pip install zarrfs` puts
//     `zarrfs` on PATH), with METADATA, WHEEL and a RECORD of sha256 hashes;
//   - into a tarball, zarrfs-V-linux-amd64.tar.gz, holding the binary, LICENSE and README.md
//     in a directory zarrfs-V-linux-amd64/;
//
// and writes SHA256SUMS over all of them. The version V is the flag's, or else derived from
// `git describe --tags` (a tag vX.Y.Z on the commit gives X.Y.Z), and is a PEP 440 version.
// Every file in the archives carries one fixed time ($SOURCE_DATE_EPOCH, else the commit's
// time), so the same commit and toolchain give the same bytes. Publishing the wheels to the
// package index is a separate, manual step: see docs/release.md.
package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// target is one platform the release is built for.
type target struct {
	GOARCH  string // amd64, arm64
	Machine string // the wheel's platform machine: x86_64, aarch64
}

var targets = []target{{"amd64", "x86_64"}, {"arm64", "aarch64"}}

// glibcTag is the manylinux baseline of the wheels. The binary is static and needs no glibc
// at all; manylinux_2_17 (CentOS 7's glibc) is the oldest tag current pip versions accept.
const glibcTag = "manylinux_2_17"

const summary = "Mount a remote zarr store as a local read-only directory (FUSE), with a Python API"

func main() {
	log := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "release: "+format+"\n", args...) }
	var cfg config
	fl := flag.NewFlagSet("release", flag.ContinueOnError)
	fl.Usage = func() {
		fmt.Fprint(os.Stderr, `Usage: go run ./cmd/release [--version V] DIR
       go run ./cmd/release --check DIR

Builds into DIR, without network access: the wheels
zarrfs-V-py3-none-manylinux_2_17_{x86_64,aarch64}.whl (static zarrfs binary and the
Python package), the tarballs zarrfs-V-linux-{amd64,arm64}.tar.gz, and SHA256SUMS.
Run it from the repository. --check verifies artifacts built earlier (run after
every build too). See docs/release.md for publishing.

Flags:
`)
		fl.PrintDefaults()
	}
	fl.StringVar(&cfg.Version, "version", "", "the release version, PEP 440 (default: from git describe --tags)")
	check := fl.Bool("check", false, "only check the artifacts already in DIR (wheel metadata, RECORD hashes, static binaries, SHA256SUMS)")
	if err := fl.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if fl.NArg() != 1 {
		fl.Usage()
		os.Exit(2)
	}
	cfg.Out = fl.Arg(0)
	if *check {
		if err := checkDir(cfg.Out); err != nil {
			log("%v", err)
			os.Exit(1)
		}
		log("%s: every artifact checks out", cfg.Out)
		return
	}
	root, err := repoRoot()
	if err != nil {
		log("%v", err)
		os.Exit(1)
	}
	cfg.Root = root
	cfg.Log = log
	arts, err := release(context.Background(), cfg)
	if err != nil {
		log("%v", err)
		os.Exit(1)
	}
	for _, a := range arts {
		fmt.Println(filepath.Join(cfg.Out, a))
	}
}

// config is what one release run needs.
type config struct {
	Root    string // the repository: go.mod, LICENSE, README.md, python/zarrfs
	Out     string // where the artifacts go
	Version string // "" derives it from git
	Pkg     string // the Go package of the binary, relative to Root ("./cmd/zarrfs" if "")
	Time    time.Time
	Log     func(format string, args ...any)
}

// release builds every artifact into cfg.Out and returns their names (SHA256SUMS last).
func release(ctx context.Context, cfg config) ([]string, error) {
	if cfg.Log == nil {
		cfg.Log = func(string, ...any) {}
	}
	if cfg.Pkg == "" {
		cfg.Pkg = "./cmd/zarrfs"
	}
	if cfg.Version == "" {
		v, err := gitVersion(ctx, cfg.Root)
		if err != nil {
			return nil, err
		}
		cfg.Version = v
	}
	if !validVersion(cfg.Version) {
		return nil, fmt.Errorf("version %q is not a PEP 440 version (say 1.2.3, 1.3.0rc1, 0.1.0.dev4+g1a2b3c4)", cfg.Version)
	}
	if cfg.Time.IsZero() {
		cfg.Time = buildTime(ctx, cfg.Root)
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	pyFiles, err := pythonPackage(cfg.Root, cfg.Version)
	if err != nil {
		return nil, err
	}
	license, err := os.ReadFile(filepath.Join(cfg.Root, "LICENSE"))
	if err != nil {
		return nil, err
	}
	readme, err := os.ReadFile(filepath.Join(cfg.Root, "README.md"))
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "zarrfs-release-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	var arts []string
	for _, tg := range targets {
		bin := filepath.Join(tmp, "zarrfs-"+tg.GOARCH)
		cfg.Log("building %s for linux/%s (version %s)", cfg.Pkg, tg.GOARCH, cfg.Version)
		if err := goBuild(ctx, cfg.Root, cfg.Pkg, tg.GOARCH, cfg.Version, bin); err != nil {
			return nil, err
		}
		exe, err := os.ReadFile(bin)
		if err != nil {
			return nil, err
		}
		whl := wheelName(cfg.Version, tg.Machine)
		data, err := buildWheel(cfg.Version, tg.Machine, exe, pyFiles, license, readme, cfg.Time)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(cfg.Out, whl), data, 0o644); err != nil {
			return nil, err
		}
		tgz := tarballName(cfg.Version, tg.GOARCH)
		data, err = buildTarball(strings.TrimSuffix(tgz, ".tar.gz"), exe, license, readme, cfg.Time)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(cfg.Out, tgz), data, 0o644); err != nil {
			return nil, err
		}
		arts = append(arts, whl, tgz)
		cfg.Log("wrote %s and %s", whl, tgz)
	}
	sort.Strings(arts)
	var sums bytes.Buffer
	for _, a := range arts {
		b, err := os.ReadFile(filepath.Join(cfg.Out, a))
		if err != nil {
			return nil, err
		}
		h := sha256.Sum256(b)
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(h[:]), a)
	}
	if err := os.WriteFile(filepath.Join(cfg.Out, "SHA256SUMS"), sums.Bytes(), 0o644); err != nil {
		return nil, err
	}
	if err := checkFiles(cfg.Out, arts); err != nil {
		return nil, fmt.Errorf("the artifacts just built do not check out: %w", err)
	}
	return append(arts, "SHA256SUMS"), nil
}

func wheelName(version, machine string) string {
	return fmt.Sprintf("zarrfs-%s-py3-none-%s_%s.whl", wheelEscape(version), glibcTag, machine)
}

func tarballName(version, goarch string) string {
	return fmt.Sprintf("zarrfs-%s-linux-%s.tar.gz", version, goarch)
}

// wheelEscape is the version as it appears in wheel file and directory names.
func wheelEscape(version string) string { return strings.ReplaceAll(version, "-", "_") }

// repoRoot is the directory of the main module's go.mod.
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the zarrfs module: run go run ./cmd/release from the repository")
	}
	return filepath.Dir(gomod), nil
}

// pep440 matches the public part of a PEP 440 version in its normalised spelling, with an
// optional local label.
var pep440 = regexp.MustCompile(`^(\d+!)?\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[a-z0-9]+(\.[a-z0-9]+)*)?$`)

func validVersion(v string) bool { return pep440.MatchString(v) }

var describeRE = regexp.MustCompile(`^v?(\d+(?:\.\d+)*(?:(?:a|b|rc)\d+)?)(?:-(\d+)-g([0-9a-f]+))?(-dirty)?$`)

// gitVersion derives the version from `git describe --tags`: a release tag vX.Y.Z on the
// commit gives X.Y.Z; N commits after it gives X.Y.Z.postN+gHASH; without any release tag,
// 0.0.0.devN+gHASH (N commits in the history); outside a git checkout, 0.0.0.dev0. A dirty
// tree adds .dirty to the local label.
func gitVersion(ctx context.Context, root string) (string, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	if d, err := git("describe", "--tags", "--dirty", "--match", "v[0-9]*", "--long"); err == nil {
		return versionFromDescribe(d)
	}
	hash, err := git("rev-parse", "--short=7", "HEAD")
	if err != nil {
		// Not a git checkout (an exported tree): a development version that can never be
		// mistaken for a release.
		return "0.0.0.dev0", nil
	}
	n, _ := git("rev-list", "--count", "HEAD")
	if n == "" {
		n = "0"
	}
	local := "g" + hash
	if st, err := git("status", "--porcelain", "--untracked-files=no"); err == nil && st != "" {
		local += ".dirty"
	}
	return fmt.Sprintf("0.0.0.dev%s+%s", n, local), nil
}

// versionFromDescribe turns `git describe --long --dirty` output into a PEP 440 version.
func versionFromDescribe(d string) (string, error) {
	m := describeRE.FindStringSubmatch(d)
	if m == nil {
		return "", fmt.Errorf("git describe says %q, which is no vX.Y.Z tag: pass --version", d)
	}
	v, n, hash, dirty := m[1], m[2], m[3], m[4] != ""
	if n == "" || n == "0" {
		if dirty {
			return v + "+dirty", nil
		}
		return v, nil
	}
	local := "g" + hash
	if dirty {
		local += ".dirty"
	}
	return fmt.Sprintf("%s.post%s+%s", v, n, local), nil
}

// buildTime is the one time stamped on every archived file: $SOURCE_DATE_EPOCH, else the
// commit's time, else 2020-01-01 (zip cannot say anything before 1980).
func buildTime(ctx context.Context, root string) time.Time {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return clampTime(time.Unix(n, 0))
		}
	}
	cmd := exec.CommandContext(ctx, "git", "log", "-1", "--format=%ct")
	cmd.Dir = root
	if out, err := cmd.Output(); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil {
			return clampTime(time.Unix(n, 0))
		}
	}
	return time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
}

func clampTime(t time.Time) time.Time {
	if min := time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC); t.Before(min) {
		return min
	}
	return t.UTC()
}

// goBuild builds pkg as a static linux/goarch binary stamped with version.
func goBuild(ctx context.Context, root, pkg, goarch, version, out string) error {
	goCmd := "go"
	if gr := os.Getenv("GOROOT"); gr != "" {
		if p := filepath.Join(gr, "bin", "go"); fileExists(p) {
			goCmd = p
		}
	}
	args := []string{"build", "-trimpath", "-o", out,
		"-ldflags", "-s -w -X main.releaseVersion=" + version, pkg}
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOFLAGS=-mod=readonly")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("GOARCH=%s go %s: %w\n%s", goarch, strings.Join(args, " "), err, buf.String())
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// pyFile is one file of the Python package, by its path inside the wheel.
type pyFile struct {
	Name string
	Data []byte
}

// pythonPackage reads python/zarrfs/**.py and adds zarrfs/_version.py with version.
func pythonPackage(root, version string) ([]pyFile, error) {
	dir := filepath.Join(root, "python", "zarrfs")
	var files []pyFile
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "__pycache__" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".py") && d.Name() != "py.typed" {
			return nil
		}
		rel, err := filepath.Rel(filepath.Join(root, "python"), p)
		if err != nil {
			return err
		}
		if filepath.ToSlash(rel) == "zarrfs/_version.py" {
			return nil // written below
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, pyFile{filepath.ToSlash(rel), b})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("the Python package: %w", err)
	}
	if !slicesHas(files, "zarrfs/__init__.py") {
		return nil, fmt.Errorf("the Python package: no %s", filepath.Join(dir, "__init__.py"))
	}
	files = append(files, pyFile{"zarrfs/_version.py", []byte(fmt.Sprintf("# Written by cmd/release.\n__version__ = %q\n", version))})
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	return files, nil
}

func slicesHas(files []pyFile, name string) bool {
	for _, f := range files {
		if f.Name == name {
			return true
		}
	}
	return false
}

// wheelEntry is one file written into a wheel.
type wheelEntry struct {
	Name string
	Data []byte
	Mode fs.FileMode
}

// recordHash is a file's hash as RECORD spells it: sha256=<urlsafe base64, no padding>.
func recordHash(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256=" + base64.RawURLEncoding.EncodeToString(h[:])
}

// metadata is the wheel's METADATA (core metadata 2.1).
func metadata(version string, readme []byte) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "Metadata-Version: 2.1\nName: zarrfs\nVersion: %s\nSummary: %s\n", version, summary)
	b.WriteString("Home-page: https://github.com/zarrfs/zarrfs\n")
	b.WriteString("License: Apache-2.0\n")
	b.WriteString("Keywords: zarr,fuse,filesystem,pytorch,xarray\n")
	for _, c := range []string{
		"Environment :: Console",
		"Intended Audience :: Science/Research",
		"License :: OSI Approved :: Apache Software License",
		"Operating System :: POSIX :: Linux",
		"Programming Language :: Go",
		"Programming Language :: Python :: 3",
		"Topic :: System :: Filesystems",
	} {
		fmt.Fprintf(&b, "Classifier: %s\n", c)
	}
	b.WriteString("Requires-Python: >=3.8\n")
	b.WriteString("Provides-Extra: torch\nRequires-Dist: torch; extra == \"torch\"\n")
	b.WriteString("Description-Content-Type: text/markdown\n\n")
	b.Write(readme)
	return []byte(b.String())
}

// buildWheel packs one platform's wheel.
func buildWheel(version, machine string, exe []byte, py []pyFile, license, readme []byte, mtime time.Time) ([]byte, error) {
	ver := wheelEscape(version)
	distInfo := "zarrfs-" + ver + ".dist-info"
	var entries []wheelEntry
	for _, f := range py {
		entries = append(entries, wheelEntry{f.Name, f.Data, 0o644})
	}
	entries = append(entries,
		wheelEntry{"zarrfs-" + ver + ".data/scripts/zarrfs", exe, 0o755},
		wheelEntry{distInfo + "/LICENSE", license, 0o644},
		wheelEntry{distInfo + "/METADATA", metadata(version, readme), 0o644},
		wheelEntry{distInfo + "/WHEEL", []byte(fmt.Sprintf(
			"Wheel-Version: 1.0\nGenerator: zarrfs cmd/release\nRoot-Is-Purelib: false\nTag: py3-none-%s_%s\n", glibcTag, machine)), 0o644},
		wheelEntry{distInfo + "/top_level.txt", []byte("zarrfs\n"), 0o644},
	)
	var record strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&record, "%s,%s,%d\n", e.Name, recordHash(e.Data), len(e.Data))
	}
	fmt.Fprintf(&record, "%s/RECORD,,\n", distInfo)
	entries = append(entries, wheelEntry{distInfo + "/RECORD", []byte(record.String()), 0o644})

	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	zw.RegisterCompressor(zip.Deflate, func(w io.Writer) (io.WriteCloser, error) {
		return flate.NewWriter(w, flate.BestCompression)
	})
	for _, e := range entries {
		hdr := &zip.FileHeader{Name: e.Name, Method: zip.Deflate, Modified: mtime}
		hdr.SetMode(e.Mode)
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(e.Data); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// buildTarball packs the binary, LICENSE and README.md into dir/ in a .tar.gz.
func buildTarball(dir string, exe, license, readme []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	gz.ModTime = mtime
	tw := tar.NewWriter(gz)
	hdr := func(name string, mode int64, size int, typ byte) *tar.Header {
		return &tar.Header{Name: name, Mode: mode, Size: int64(size), Typeflag: typ, ModTime: mtime,
			Uname: "root", Gname: "root", Format: tar.FormatPAX}
	}
	if err := tw.WriteHeader(hdr(dir+"/", 0o755, 0, tar.TypeDir)); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode int64
	}{{"zarrfs", exe, 0o755}, {"LICENSE", license, 0o644}, {"README.md", readme, 0o644}} {
		if err := tw.WriteHeader(hdr(dir+"/"+f.name, f.mode, len(f.data), tar.TypeReg)); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
