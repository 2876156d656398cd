package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// A debugging aid, not a feature: ZARRFS_CPUPROFILE=FILE makes the process
// (the foreground mount daemon, for instance) write a CPU profile of its
// whole life to FILE when run returns, i.e. after the unmount. The S3
// benchmark (integration/s3_bench_test.go, ZARRFS_BENCH_PROFILE_DIR) uses it
// to compare where the daemon's CPU goes per origin.
func startCPUProfile() (stop func()) {
	path := os.Getenv("ZARRFS_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "zarrfs: ZARRFS_CPUPROFILE: %v\n", err)
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }
}
