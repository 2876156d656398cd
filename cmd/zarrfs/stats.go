package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/pflag"

	"github.com/zarrfs/zarrfs/fusefs"
)

func runStats(args []string) error {
	var asJSON bool
	fl := pflag.NewFlagSet("stats", pflag.ContinueOnError)
	fl.Usage = func() {
		fmt.Fprint(os.Stderr, `Usage: zarrfs stats [--json] MOUNTPOINT

Show what a running zarrfs mount is doing: its origin, cache use and hit
rate, and bytes served from the cache and from the network.

Example:
  zarrfs stats /content/era5

Flags:
`)
		fl.PrintDefaults()
	}
	fl.BoolVar(&asJSON, "json", false, "print the raw counters as JSON")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: stats: %v", errUsage, err)
	}
	if fl.NArg() != 1 {
		return fmt.Errorf("%w: stats takes MOUNTPOINT", errUsage)
	}
	mnt, _ := filepath.Abs(fl.Arg(0))
	c, err := dialControl(mnt)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var raw json.RawMessage
	if err := c.getJSON(ctx, "/v1/stats", &raw); err != nil {
		return err
	}
	if asJSON {
		_, err := os.Stdout.Write(append(raw, '\n'))
		return err
	}
	var s fusefs.Stats
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("daemon of %s sent unreadable stats: %w", mnt, err)
	}
	cs := s.Cache
	hitRate := "-"
	if n := cs.Hits + cs.Misses; n > 0 {
		hitRate = fmt.Sprintf("%.1f%%", 100*float64(cs.Hits)/float64(n))
	}
	fmt.Printf("origin      %s (zarr v%d, tree from %s)\n", s.URL, s.Format, s.Source)
	fmt.Printf("mountpoint  %s, up %s\n", s.Mountpoint, time.Since(s.Started).Round(time.Second))
	fmt.Printf("cache       %s of %s in %d entries (%s)\n", humanize.IBytes(uint64(cs.Bytes)), humanize.IBytes(uint64(s.CacheBytes)), cs.Entries, s.CacheDir)
	fmt.Printf("hit rate    %s (%d hits, %d misses, %d revalidated)\n", hitRate, cs.Hits, cs.Misses, cs.Revalidations)
	fmt.Printf("bytes       %s from cache, %s from network\n", humanize.IBytes(uint64(cs.BytesFromCache)), humanize.IBytes(uint64(cs.BytesFromNetwork)))
	fmt.Printf("problems    %d evictions, %d corrupt entries refetched, %d cache write errors\n", cs.Evictions, cs.CorruptEntries, cs.WriteErrors)
	return nil
}
