package main

// The mount(8) helper. With an fstab line of type zarrfs, mount(8) runs
//
//	/sbin/mount.zarrfs URL MOUNTPOINT [-sfnv] -o OPTIONS
//
// (a link to this binary), and with type fuse.zarrfs, fuse3's mount.fuse3
// runs `zarrfs URL MOUNTPOINT -o OPTIONS`. Both land here: the -o options
// become `zarrfs mount` flags, and the mount is made as a detached daemon, so
// the helper returns once the mount is live, as mount(8) expects.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// defaultPath is the PATH a helper runs with when mount(8) gave it none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// mountHelperNames are the names mount(8) runs a helper under.
var mountHelperNames = []string{"mount.zarrfs", "mount.fuse.zarrfs"}

func isMountHelper(argv0 string) bool {
	return slices.Contains(mountHelperNames, filepath.Base(argv0))
}

// looksLikeURL tells the mount.fuse3 form (`zarrfs URL MNT -o …`) from a
// command name.
func looksLikeURL(s string) bool {
	s = strings.TrimPrefix(s, "zarrfs#")
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") ||
		strings.HasPrefix(s, "s3://") || strings.HasPrefix(s, "gs://")
}

// helperValueOptions maps -o NAME=VALUE options to `zarrfs mount` flags.
var helperValueOptions = map[string]string{
	"cache_dir":      "--cache-dir",
	"cache_size":     "--cache-size",
	"cache_min_free": "--cache-min-free",
	"token_file":     "--token-file",
	"ca_cert":        "--ca-cert",
	"pin":            "--pin",
	"log_file":       "--log-file",
	"log_level":      "--log-level",
	"retry_timeout":  "--retry-timeout",
	"refresh":        "--refresh",
	"attr_timeout":   "--attr-timeout",
	"metrics_addr":   "--metrics-addr",
}

// helperBoolOptions maps bare -o options to `zarrfs mount` flags.
var helperBoolOptions = map[string]string{
	"allow_other": "--allow-other",
	"prefetch":    "--prefetch",
}

// helperIgnoredOptions are meant for mount(8), systemd or the kernel's
// generic mount flags, and mean nothing to zarrfs. rw is among them because
// mount(8) passes it whenever an fstab line does not say ro; the mount is
// read-only whatever it says.
var helperIgnoredOptions = []string{
	"_netdev", "nofail", "auto", "noauto", "user", "users", "nouser", "owner", "group",
	"defaults", "ro", "rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec",
	"atime", "noatime", "relatime", "strictatime", "nodiratime", "diratime",
	"async", "sync", "loud", "silent",
}

const helperUsage = `Usage: mount.zarrfs URL MOUNTPOINT [-o OPTION[,OPTION...]] [-fnsv]

The mount(8) helper of zarrfs, for /etc/fstab:

  https://storage:8443/era5.zarr  /mnt/era5  zarrfs  _netdev,cache_dir=/var/cache/zarrfs  0  0

Install it with: ln -s "$(command -v zarrfs)" /sbin/mount.zarrfs

Options map to 'zarrfs mount' flags: cache_dir=, cache_size=, cache_min_free=,
token_file=, ca_cert=, pin=, log_file=, log_level=, retry_timeout=, refresh=,
attr_timeout=, metrics_addr=, allow_other, prefetch; for s3:// and gs:// sources
s3_endpoint=, s3_region=, s3_addressing=, s3_anonymous. _netdev, nofail, auto, noauto,
user, ro, rw (the mount is always read-only) and x-systemd.* are accepted and
ignored. -f checks the options without mounting; -s ignores unknown options;
-v says what it does; -n is accepted (there is no mtab to skip).
`

// runMountHelper mounts as mount(8) asks: SOURCE DIR [-sfnv] [-o OPTS] [-t TYPE] [-N NS].
func runMountHelper(args []string) error {
	var (
		positional                    []string
		opts                          []string
		fake, sloppy, verbose, helped bool
	)
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-h" || a == "--help":
			helped = true
		case a == "-o" || a == "-t" || a == "-N":
			if i+1 >= len(args) {
				return fmt.Errorf("%w: mount.zarrfs: %s needs a value", errUsage, a)
			}
			i++
			if a == "-o" {
				opts = append(opts, strings.Split(args[i], ",")...)
			}
		case strings.HasPrefix(a, "-o"):
			opts = append(opts, strings.Split(a[2:], ",")...)
		case strings.HasPrefix(a, "-t"), strings.HasPrefix(a, "-N"):
			// -tzarrfs, -Nnamespace: nothing for us to do.
		case len(a) > 1 && a[0] == '-':
			for _, c := range a[1:] {
				switch c {
				case 'f':
					fake = true
				case 's':
					sloppy = true
				case 'v':
					verbose = true
				case 'n':
				default:
					return fmt.Errorf("%w: mount.zarrfs: unknown flag -%c (it takes -f, -n, -s, -v and -o OPTIONS)", errUsage, c)
				}
			}
		default:
			positional = append(positional, a)
		}
	}
	if helped {
		fmt.Print(helperUsage)
		return nil
	}
	if len(positional) != 2 {
		return fmt.Errorf("%w: mount.zarrfs takes URL and MOUNTPOINT (and -o OPTIONS), got %d arguments", errUsage, len(positional))
	}
	url := strings.TrimPrefix(positional[0], "zarrfs#") // the old "type#source" fstab form
	mnt := positional[1]
	flags, notes, err := helperFlags(opts, sloppy)
	if err != nil {
		return err
	}
	mountArgs := append(append([]string{}, flags...), url, mnt)
	if verbose || fake {
		for _, n := range notes {
			fmt.Fprintf(os.Stderr, "zarrfs: note: %s\n", n)
		}
		fmt.Fprintf(os.Stderr, "zarrfs: running: zarrfs mount %s\n", strings.Join(mountArgs, " "))
	}
	if fake {
		return nil
	}
	if os.Getenv("PATH") == "" {
		// mount(8) runs helpers with no PATH; fusermount3 must still be found.
		os.Setenv("PATH", defaultPath)
	}
	if !verbose {
		// mount(8) helpers are silent on success.
		if devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
			defer func(stdout *os.File) { os.Stdout = stdout; devNull.Close() }(os.Stdout)
			os.Stdout = devNull
		}
	}
	return runMount(mountArgs)
}

// helperFlags turns -o options into `zarrfs mount` flags. Unknown options
// are an error, or a note when sloppy (-s).
func helperFlags(opts []string, sloppy bool) (flags, notes []string, err error) {
	for _, o := range opts {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		name, value, hasValue := strings.Cut(o, "=")
		key := strings.ReplaceAll(name, "-", "_")
		switch {
		case helperValueOptions[key] != "":
			if !hasValue || value == "" {
				return nil, nil, fmt.Errorf("%w: mount option %s needs a value: %s=VALUE", errUsage, name, name)
			}
			flags = append(flags, helperValueOptions[key]+"="+value)
		case helperBoolOptions[key] != "":
			if hasValue {
				return nil, nil, fmt.Errorf("%w: mount option %s takes no value", errUsage, name)
			}
			flags = append(flags, helperBoolOptions[key])
		case slices.Contains(helperIgnoredOptions, key),
			strings.HasPrefix(key, "x_"), strings.HasPrefix(name, "x-"), key == "comment":
			notes = append(notes, "ignoring mount option "+o)
		case sloppy:
			notes = append(notes, "ignoring unknown mount option "+o+" (-s)")
		default:
			return nil, nil, fmt.Errorf("%w: unknown mount option %q: zarrfs takes %s", errUsage, o, knownHelperOptions())
		}
	}
	return flags, notes, nil
}

func knownHelperOptions() string {
	var names []string
	for k := range helperValueOptions {
		names = append(names, k+"=")
	}
	for k := range helperBoolOptions {
		names = append(names, k)
	}
	slices.Sort(names)
	return strings.Join(names, ", ") + " (see mount.zarrfs --help)"
}
