package vfs

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine they started is still running when
// they are done: every goroutine must have a way to stop, and the tests must use it. The
// one exception is the expiry goroutine of golang-lru's expirable LRU (FS.listings): v2
// has no way to stop it (its source says so), so every FS leaves one behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/hashicorp/golang-lru/v2/expirable.NewLRU[...].func1"),
		goleak.Cleanup(func(code int) {
			if shardStoreDir != "" {
				_ = os.RemoveAll(shardStoreDir)
			}
			os.Exit(code)
		}))
}
