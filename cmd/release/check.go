package main

// Checking built artifacts: `go run ./cmd/release --check DIR` (and every release run, after
// building) verifies what pip and people downloading tarballs rely on.

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

var (
	wheelNameRE   = regexp.MustCompile(`^zarrfs-([^-]+)-py3-none-manylinux_2_17_(x86_64|aarch64)\.whl$`)
	tarballNameRE = regexp.MustCompile(`^zarrfs-([^-]+)-linux-(amd64|arm64)\.tar\.gz$`)
)

// elfMachine is the ELF machine a platform's binary must have.
var elfMachine = map[string]elf.Machine{
	"x86_64": elf.EM_X86_64, "aarch64": elf.EM_AARCH64,
	"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64,
}

// checkDir verifies every wheel and tarball in dir and SHA256SUMS. It wants at least one of
// each per platform.
func checkDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return checkFiles(dir, names)
}

// checkFiles is checkDir for the artifacts among names.
func checkFiles(dir string, names []string) error {
	var errs []error
	var artifacts []string
	seen := map[string]bool{}
	for _, name := range names {
		var err error
		switch {
		case wheelNameRE.MatchString(name):
			m := wheelNameRE.FindStringSubmatch(name)
			seen["wheel "+m[2]] = true
			_, err = checkWheel(filepath.Join(dir, name))
		case tarballNameRE.MatchString(name):
			m := tarballNameRE.FindStringSubmatch(name)
			seen["tarball "+m[2]] = true
			err = checkTarball(filepath.Join(dir, name))
		default:
			continue
		}
		artifacts = append(artifacts, name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	for _, tg := range targets {
		for _, k := range []string{"wheel " + tg.Machine, "tarball " + tg.GOARCH} {
			if !seen[k] {
				errs = append(errs, fmt.Errorf("no %s in %s", k, dir))
			}
		}
	}
	if err := checkSums(dir, artifacts); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkSums verifies SHA256SUMS in dir: every line's hash, and that it lists artifacts.
func checkSums(dir string, artifacts []string) error {
	b, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		return err
	}
	listed := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			return fmt.Errorf("SHA256SUMS: bad line %q", sc.Text())
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("SHA256SUMS: %w", err)
		}
		h := sha256.Sum256(data)
		if hex.EncodeToString(h[:]) != sum {
			return fmt.Errorf("SHA256SUMS: %s does not match its hash", name)
		}
		listed[name] = true
	}
	for _, a := range artifacts {
		if !listed[a] {
			return fmt.Errorf("SHA256SUMS does not list %s", a)
		}
	}
	return nil
}

// wheelInfo is what checkWheel learnt of a wheel.
type wheelInfo struct {
	Version string
	Machine string
	Files   map[string][]byte
	Modes   map[string]os.FileMode
	Binary  string // the path of the binary inside the wheel
}

// checkWheel verifies a wheel: its name, WHEEL, METADATA, that RECORD lists every file
// exactly once with the right sha256 and size, the package's __init__.py, and the binary in
// .data/scripts: executable, static, for the wheel's machine.
func checkWheel(path string) (*wheelInfo, error) {
	m := wheelNameRE.FindStringSubmatch(filepath.Base(path))
	if m == nil {
		return nil, fmt.Errorf("not a zarrfs wheel name")
	}
	w := &wheelInfo{Version: m[1], Machine: m[2], Files: map[string][]byte{}, Modes: map[string]os.FileMode{}}
	zr, err := zip.OpenReader(path)
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	for _, f := range zr.File {
		if _, dup := w.Files[f.Name]; dup {
			return nil, fmt.Errorf("%s is in the zip twice", f.Name)
		}
		rc, err := f.Open()
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Name, err)
		}
		w.Files[f.Name], w.Modes[f.Name] = b, f.Mode()
	}
	distInfo := "zarrfs-" + w.Version + ".dist-info/"
	data := "zarrfs-" + w.Version + ".data/"
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	wantTag := "Tag: py3-none-manylinux_2_17_" + w.Machine
	wheel := string(w.Files[distInfo+"WHEEL"])
	for _, want := range []string{"Wheel-Version: 1.0\n", "Root-Is-Purelib: false\n", wantTag + "\n"} {
		if !strings.Contains(wheel, want) {
			fail("WHEEL lacks %q:\n%s", strings.TrimSpace(want), wheel)
		}
	}
	meta := string(w.Files[distInfo+"METADATA"])
	head, _, _ := strings.Cut(meta, "\n\n")
	for _, want := range []string{"Metadata-Version: 2.1", "Name: zarrfs", "Version: " + strings.ReplaceAll(w.Version, "_", "-")} {
		if !strings.Contains("\n"+head+"\n", "\n"+want+"\n") {
			fail("METADATA lacks %q", want)
		}
	}
	if !validVersion(strings.ReplaceAll(w.Version, "_", "-")) {
		fail("version %q is not PEP 440", w.Version)
	}
	if _, ok := w.Files["zarrfs/__init__.py"]; !ok {
		fail("no zarrfs/__init__.py")
	}
	if !bytes.Contains(w.Files["zarrfs/_version.py"], []byte(strconv.Quote(strings.ReplaceAll(w.Version, "_", "-")))) {
		fail("zarrfs/_version.py does not hold the version")
	}

	// RECORD: every file once, right hash and size; RECORD itself without a hash.
	record, ok := w.Files[distInfo+"RECORD"]
	if !ok {
		fail("no %sRECORD", distInfo)
	}
	listed := map[string]bool{}
	for i, line := range strings.Split(strings.TrimSuffix(string(record), "\n"), "\n") {
		parts := strings.Split(line, ",")
		if len(parts) != 3 {
			fail("RECORD line %d: %q is not path,hash,size", i+1, line)
			continue
		}
		name, hash, size := parts[0], parts[1], parts[2]
		if listed[name] {
			fail("RECORD lists %s twice", name)
		}
		listed[name] = true
		b, ok := w.Files[name]
		if !ok {
			fail("RECORD lists %s, which is not in the wheel", name)
			continue
		}
		if name == distInfo+"RECORD" {
			if hash != "" || size != "" {
				fail("RECORD's own line has a hash")
			}
			continue
		}
		if hash != recordHash(b) {
			fail("RECORD: %s: hash %s, the file's is %s", name, hash, recordHash(b))
		}
		if size != strconv.Itoa(len(b)) {
			fail("RECORD: %s: size %s, the file has %d bytes", name, size, len(b))
		}
	}
	for name := range w.Files {
		if !listed[name] {
			fail("RECORD does not list %s", name)
		}
		if !strings.HasPrefix(name, "zarrfs/") && !strings.HasPrefix(name, distInfo) && !strings.HasPrefix(name, data) {
			fail("%s is outside zarrfs/, %s and %s", name, distInfo, data)
		}
	}

	w.Binary = data + "scripts/zarrfs"
	exe, ok := w.Files[w.Binary]
	if !ok {
		fail("no %s (the zarrfs command pip puts on PATH)", w.Binary)
	} else {
		if w.Modes[w.Binary]&0o111 == 0 {
			fail("%s is not executable (mode %v)", w.Binary, w.Modes[w.Binary])
		}
		if err := checkStaticELF(exe, elfMachine[w.Machine]); err != nil {
			fail("%s: %v", w.Binary, err)
		}
	}
	return w, errors.Join(errs...)
}

// checkStaticELF verifies that b is a static linux executable for machine: no interpreter,
// no shared libraries.
func checkStaticELF(b []byte, machine elf.Machine) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("not an ELF file: %v", err)
	}
	defer f.Close()
	if f.Machine != machine {
		return fmt.Errorf("ELF machine %v, want %v", f.Machine, machine)
	}
	if f.Type != elf.ET_EXEC {
		return fmt.Errorf("ELF type %v, want a static executable (ET_EXEC)", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			return fmt.Errorf("dynamically linked (has %v): build with CGO_ENABLED=0", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return fmt.Errorf("needs shared libraries %v", libs)
	}
	return nil
}

// checkTarball verifies a tarball: dir/ with zarrfs (static, for its architecture,
// executable), LICENSE and README.md.
func checkTarball(path string) error {
	m := tarballNameRE.FindStringSubmatch(filepath.Base(path))
	if m == nil {
		return fmt.Errorf("not a zarrfs tarball name")
	}
	dir := strings.TrimSuffix(filepath.Base(path), ".tar.gz") + "/"
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(gz)
	got := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		got[h.Name] = true
		switch h.Name {
		case dir:
		case dir + "zarrfs":
			if h.Mode&0o111 == 0 {
				return fmt.Errorf("zarrfs is not executable (mode %o)", h.Mode)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				return err
			}
			if err := checkStaticELF(b, elfMachine[m[2]]); err != nil {
				return fmt.Errorf("zarrfs: %v", err)
			}
		case dir + "LICENSE", dir + "README.md":
		default:
			return fmt.Errorf("unexpected entry %s", h.Name)
		}
	}
	for _, want := range []string{dir + "zarrfs", dir + "LICENSE", dir + "README.md"} {
		if !got[want] {
			return fmt.Errorf("no %s", want)
		}
	}
	return nil
}
