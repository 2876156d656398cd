package fusefs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckMountpoint(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	full := filepath.Join(dir, "full")
	file := filepath.Join(dir, "file")
	for _, d := range []string{empty, full} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{file, filepath.Join(full, "x")} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		dir     string
		wantErr error
		want    string
	}{
		{empty, nil, ""},
		{filepath.Join(dir, "missing"), ErrMountpoint, "mkdir -p " + filepath.Join(dir, "missing")},
		{file, ErrMountpoint, "is not a directory"},
		{full, ErrMountpoint, "is not empty"},
		{"/proc", ErrMountpoint, "is not empty"}, // a mount, but not a FUSE one
	}
	for _, tc := range tests {
		err := CheckMountpoint(tc.dir)
		switch {
		case tc.wantErr == nil && err != nil:
			t.Errorf("CheckMountpoint(%s) = %v, want nil", tc.dir, err)
		case tc.wantErr != nil && (!errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("CheckMountpoint(%s) = %v, want %v containing %q", tc.dir, err, tc.wantErr, tc.want)
		}
	}
}

func TestMountedAt(t *testing.T) {
	if fstype, _, ok := MountedAt("/proc"); !ok || fstype != "proc" {
		t.Errorf("MountedAt(/proc) = %q, %v; want proc", fstype, ok)
	}
	if fstype, _, ok := MountedAt(t.TempDir()); ok {
		t.Errorf("MountedAt(a fresh temp dir) = %q, want no mount", fstype)
	}
	if IsDeadMount(t.TempDir()) {
		t.Errorf("IsDeadMount(a fresh temp dir) = true")
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/plain`:            "/mnt/plain",
		`/mnt/with\040space`:    "/mnt/with space",
		`/mnt/tab\011and\134`:   "/mnt/tab\tand\\",
		`/mnt/trailing\04`:      `/mnt/trailing\04`,
		`/mnt/not\999octal`:     `/mnt/not\999octal`,
		`https://h/a\040b.zarr`: "https://h/a b.zarr",
	} {
		if got := UnescapeMountinfo(in); got != want {
			t.Errorf("UnescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckFuseDevice(t *testing.T) {
	if _, err := os.Stat(fuseDevice); err != nil {
		err := CheckFuseDevice()
		if !errors.Is(err, ErrFuseDevice) || !strings.Contains(err.Error(), "modprobe fuse") {
			t.Errorf("without %s: %v, want ErrFuseDevice naming modprobe", fuseDevice, err)
		}
		return
	}
	if os.Geteuid() == 0 {
		if err := CheckFuseDevice(); err != nil {
			t.Errorf("as root: %v, want nil", err)
		}
	}
}
