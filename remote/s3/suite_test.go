package s3

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/zarrfs/zarrfs/internal/s3test"
	"github.com/zarrfs/zarrfs/remote"
)

var suiteBucket atomic.Int64

// newSuiteOrigin is the constructor the shared origin test suite
// (remote/origintest, on another branch) takes: at merge,
//
//	func TestOriginSuite(t *testing.T) { origintest.Run(t, newSuiteOrigin) }
//
// Each call puts files in a fresh bucket of one versitygw per test.
func newSuiteOrigin(t *testing.T, files map[string][]byte) remote.Origin {
	t.Helper()
	srv := s3test.Start(t)
	bucket := fmt.Sprintf("suite%d", suiteBucket.Add(1))
	srv.CreateBucket(t, bucket)
	srv.Put(t, bucket, "store.zarr/", files)
	return openT(t, srv, "s3://"+bucket+"/store.zarr", Options{})
}

func TestSuiteConstructor(t *testing.T) {
	o := newSuiteOrigin(t, map[string][]byte{"a/b": []byte("x")})
	if data, _, err := o.Get(ctxT(t), "a/b", 10); err != nil || string(data) != "x" {
		t.Fatalf("%q %v", data, err)
	}
}
