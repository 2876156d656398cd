//go:build !race

package integration

// raceEnabled tells TestMain to build the binary under test with -race too, so a data race in
// the daemon shows up while the end-to-end tests drive it.
const raceEnabled = false
