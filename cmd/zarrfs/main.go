// Command zarrfs mounts a remote zarr store as a local read-only directory.
//
//	zarrfs mount [flags] URL MOUNTPOINT
//	zarrfs unmount [--lazy] MOUNTPOINT
//	zarrfs version
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/pflag"
)

const usage = `zarrfs mounts a remote zarr store as a local, read-only directory.

Usage:
  zarrfs mount [flags] URL MOUNTPOINT   mount the store at URL (returns once the mount is live)
  zarrfs unmount [--lazy] MOUNTPOINT    unmount it
  zarrfs serve [flags] DIR              publish a store (or a directory of stores) over HTTPS
  zarrfs stats [--json] MOUNTPOINT      show a mount's cache and transfer counters
  zarrfs version                        print the version

Run 'zarrfs COMMAND --help' for a command's flags.

Example:
  zarrfs mount --token-file ~/.zarrfs-token https://storage:8443/era5.zarr /content/era5
  python -c 'import xarray as xr; print(xr.open_zarr("/content/era5"))'
  zarrfs unmount /content/era5
`

// errUsage marks a command-line mistake: the message is followed by a hint to --help.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "mount":
		err = runMount(args[1:])
	case "serve":
		err = runServe(args[1:])
	case "stats":
		err = runStats(args[1:])
	case "unmount", "umount":
		err = runUnmount(args[1:])
	case "version", "--version":
		fmt.Println("zarrfs", version())
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
		fmt.Fprintf(os.Stderr, "zarrfs: %s\nRun 'zarrfs --help' for usage.\n", strings.TrimPrefix(err.Error(), "usage: "))
		return 2
	default:
		fmt.Fprintf(os.Stderr, "zarrfs: %s\n", oneLine(err.Error()))
		return 1
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func version() string {
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
