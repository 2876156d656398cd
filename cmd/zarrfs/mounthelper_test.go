package main

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestHelperFlags(t *testing.T) {
	tests := []struct {
		name    string
		opts    []string
		sloppy  bool
		want    []string
		notes   int
		wantErr string
	}{
		{"fstab line", []string{"rw", "_netdev", "cache_dir=/var/cache/zarrfs", "nofail"}, false,
			[]string{"--cache-dir=/var/cache/zarrfs"}, 3, ""},
		{"every value option", []string{"cache_size=10G", "cache_min_free=1GiB", "token_file=/etc/t", "ca_cert=/etc/ca.pem",
			"pin=sha256:ab", "log_file=/l", "log_level=debug", "retry_timeout=5s", "refresh=0", "attr_timeout=1m", "metrics_addr=:9464"}, false,
			[]string{"--cache-size=10G", "--cache-min-free=1GiB", "--token-file=/etc/t", "--ca-cert=/etc/ca.pem", "--pin=sha256:ab",
				"--log-file=/l", "--log-level=debug", "--retry-timeout=5s", "--refresh=0", "--attr-timeout=1m", "--metrics-addr=:9464"}, 0, ""},
		{"dashes as in flags", []string{"cache-size=512MiB", "allow-other"}, false, []string{"--cache-size=512MiB", "--allow-other"}, 0, ""},
		{"mount.fuse3 additions", []string{"ro", "dev", "suid", "allow_other"}, false, []string{"--allow-other"}, 3, ""},
		{"systemd options", []string{"x-systemd.automount", "x-systemd.mount-timeout=30", "comment=foo", "noauto", "user"}, false, nil, 5, ""},
		{"value with = inside", []string{"pin=sha256:a=b"}, false, []string{"--pin=sha256:a=b"}, 0, ""},
		{"unknown", []string{"cachedir=/x"}, false, nil, 0, `unknown mount option "cachedir=/x"`},
		{"unknown but sloppy", []string{"cachedir=/x"}, true, nil, 1, ""},
		{"missing value", []string{"cache_dir"}, false, nil, 0, "cache_dir needs a value"},
		{"empty value", []string{"cache_dir="}, false, nil, 0, "cache_dir needs a value"},
		{"bool with value", []string{"allow_other=1"}, false, nil, 0, "takes no value"},
		{"empty items", []string{"", " ", "ro"}, false, nil, 1, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, notes, err := helperFlags(tc.opts, tc.sloppy)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errUsage) {
					t.Fatalf("error %v, want a usage error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("flags %q, want %q", got, tc.want)
			}
			if len(notes) != tc.notes {
				t.Errorf("notes %q, want %d", notes, tc.notes)
			}
		})
	}
}

func TestMountHelperDetection(t *testing.T) {
	for _, tc := range []struct {
		argv0 string
		want  bool
	}{
		{"/sbin/mount.zarrfs", true},
		{"mount.zarrfs", true},
		{"/usr/sbin/mount.fuse.zarrfs", true},
		{"/usr/local/bin/zarrfs", false},
		{"/sbin/mount.zarrfs2", false},
	} {
		if got := isMountHelper(tc.argv0); got != tc.want {
			t.Errorf("isMountHelper(%q) = %v, want %v", tc.argv0, got, tc.want)
		}
	}
	for _, tc := range []struct {
		arg  string
		want bool
	}{
		{"https://host/era5.zarr", true},
		{"http://127.0.0.1:8080/x", true},
		{"zarrfs#https://host/x.zarr", true},
		{"mount", false},
		{"/content/data", false},
		{"--help", false},
	} {
		if got := looksLikeURL(tc.arg); got != tc.want {
			t.Errorf("looksLikeURL(%q) = %v, want %v", tc.arg, got, tc.want)
		}
	}
}

func TestMountHelperArgs(t *testing.T) {
	// -f (fake) parses everything and mounts nothing, so these run without FUSE.
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"as mount(8) calls it", []string{"https://h/x.zarr", "/mnt/x", "-o", "rw,cache_dir=/c", "-f"}, ""},
		{"flags before the operands", []string{"-fnv", "-o", "ro", "https://h/x.zarr", "/mnt/x"}, ""},
		{"-oOPTS and -tTYPE", []string{"-f", "-ocache_size=1G", "-tzarrfs", "https://h/x.zarr", "/mnt/x"}, ""},
		{"-t and -N take values", []string{"-f", "-t", "zarrfs", "-N", "/proc/1/ns/mnt", "https://h/x.zarr", "/mnt/x"}, ""},
		{"one operand", []string{"-f", "https://h/x.zarr"}, "takes URL and MOUNTPOINT"},
		{"-o without value", []string{"https://h/x.zarr", "/mnt/x", "-o"}, "-o needs a value"},
		{"unknown flag", []string{"https://h/x.zarr", "/mnt/x", "-q"}, "unknown flag -q"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := runMountHelper(tc.args)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
