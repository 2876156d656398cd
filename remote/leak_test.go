package remote

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine they started is still running when
// they are done: every goroutine must have a way to stop, and the tests must use it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
