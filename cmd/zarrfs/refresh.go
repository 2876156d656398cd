package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"github.com/zarrfs/zarrfs/vfs"
)

func runRefresh(args []string) error {
	fl := pflag.NewFlagSet("refresh", pflag.ContinueOnError)
	fl.Usage = func() {
		fmt.Fprint(os.Stderr, `Usage: zarrfs refresh MOUNTPOINT

Revalidate the mounted store on its origin now, instead of waiting for the
next --refresh interval: new, removed and reshaped arrays appear, changed
chunks are fetched again when next read, unchanged ones are kept.

Example:
  zarrfs refresh /content/era5
`)
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: refresh: %v", errUsage, err)
	}
	if fl.NArg() != 1 {
		return fmt.Errorf("%w: refresh takes MOUNTPOINT", errUsage)
	}
	mnt, _ := filepath.Abs(fl.Arg(0))
	c, err := dialControl(mnt)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var rep vfs.RefreshReport
	if err := c.call(ctx, "POST", "/v1/refresh", &rep); err != nil {
		return err
	}
	switch {
	case rep.Error != "":
		return fmt.Errorf("refresh of %s failed; the mount keeps serving the last version: %s", mnt, rep.Error)
	case !rep.Changed:
		fmt.Printf("%s: unchanged on the origin (checked in %s)\n", mnt, rep.Took)
	default:
		fmt.Printf("%s: store changed: %d keys, %d arrays/groups added, %d removed, %d changed; %d kernel entries dropped (in %s)\n",
			mnt, rep.ChangedKeys, len(rep.NodesAdded), len(rep.NodesRemoved), len(rep.NodesChanged), rep.Invalidated, rep.Took)
	}
	return nil
}
