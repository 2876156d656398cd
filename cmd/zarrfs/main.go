// Command zarrfs mounts a remote zarr store as a local read-only directory.
//
//	zarrfs mount [flags] URL MOUNTPOINT
//	zarrfs unmount [--lazy] MOUNTPOINT
//	zarrfs stats [--json] [--watch] MOUNTPOINT
//	zarrfs version
//
// Run as mount.zarrfs (a link), or as `zarrfs URL MOUNTPOINT -o OPTIONS`, it
// is the mount(8) helper for /etc/fstab.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/pflag"
)

const usage = `zarrfs mounts a remote zarr store as a local, read-only directory.

Usage:
  zarrfs mount [flags] URL MOUNTPOINT   mount the store at URL (returns once the mount is live)
  zarrfs unmount [--lazy] MOUNTPOINT    unmount it
  zarrfs serve [flags] DIR              publish a store (or a directory of stores) over HTTPS
  zarrfs stats [--json] [--watch] MOUNTPOINT
                                        show a mount's cache, network and error counters
  zarrfs prefetch [--wait] PATH...      fetch part of a mounted store into its cache now
  zarrfs refresh MOUNTPOINT             pick up changes made to the store on the origin now
  zarrfs version                        print the version
  mount.zarrfs URL MOUNTPOINT -o OPTS   the mount(8) helper, for /etc/fstab (a link to zarrfs)

Run 'zarrfs COMMAND --help' (or 'zarrfs help COMMAND') for a command's flags and examples.

Example:
  zarrfs mount --token-file ~/.zarrfs-token https://storage:8443/era5.zarr /content/era5
  python -c 'import xarray as xr; print(xr.open_zarr("/content/era5"))'
  zarrfs stats /content/era5
  zarrfs unmount /content/era5
`

// errUsage marks a command-line mistake: the message is followed by a hint to --help.
var errUsage = errors.New("usage")

func main() {
	args := os.Args[1:]
	if isMountHelper(os.Args[0]) || len(args) > 0 && looksLikeURL(args[0]) {
		args = append([]string{mountHelperCommand}, args...)
	}
	stopProfile := startCPUProfile()
	code := run(args)
	stopProfile()
	os.Exit(code)
}

// mountHelperCommand is how main hands a mount(8) helper call to run.
const mountHelperCommand = "\x00mount-helper"

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	if args[0] == "help" && len(args) == 2 && args[1] != "help" {
		args = []string{args[1], "--help"}
	}
	var err error
	switch args[0] {
	case mountHelperCommand:
		err = runMountHelper(args[1:])
	case "mount":
		err = runMount(args[1:])
	case "serve":
		err = runServe(args[1:])
	case "stats":
		err = runStats(args[1:])
	case "prefetch":
		err = runPrefetch(args[1:])
	case "refresh":
		err = runRefresh(args[1:])
	case "unmount", "umount":
		err = runUnmount(args[1:])
	case "version", "--version":
		fmt.Printf("zarrfs %s (%s, %s/%s)\n", version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "-h", "--help":
		fmt.Print(usage)
		return 0
	default:
		err = fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		help := "zarrfs --help"
		switch args[0] {
		case mountHelperCommand:
			help = "mount.zarrfs --help"
		case "mount", "serve", "stats", "refresh", "unmount", "umount":
			help = "zarrfs " + args[0] + " --help"
		}
		fmt.Fprintf(os.Stderr, "zarrfs: %s\nRun '%s' for usage.\n", strings.TrimPrefix(err.Error(), "usage: "), help)
		return 2
	default:
		fmt.Fprintf(os.Stderr, "zarrfs: %s\n", oneLine(err.Error()))
		return 1
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// releaseVersion is set by cmd/release (-ldflags "-X main.releaseVersion=…") for the
// binaries of wheels and tarballs; a plain go build or go install leaves it empty.
var releaseVersion string

func version() string {
	if releaseVersion != "" {
		return releaseVersion
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v
}
