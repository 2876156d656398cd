package s3

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/zarrfs/zarrfs/internal/s3test"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/origintest"
)

var suiteBucket atomic.Int64

// TestOriginSuite runs the contract every remote.Origin passes
// (remote/origintest) against this origin over a real S3 server.
func TestOriginSuite(t *testing.T) { origintest.Run(t, newSuiteBackend) }

// newSuiteBackend puts files in a fresh bucket of one versitygw per test.
// The origin builds its manifest from a listing, and S3 objects always
// carry an ETag.
func newSuiteBackend(t *testing.T, files map[string][]byte) origintest.Backend {
	t.Helper()
	o, srv, bucket := newSuiteOrigin(t, files)
	return origintest.Backend{
		Origin: o,
		Put: func(t *testing.T, key string, data []byte) {
			srv.Put(t, bucket, "store.zarr/", map[string][]byte{key: data})
		},
		Versioned: true,
		Lists:     true,
		Manifests: true,
	}
}

func newSuiteOrigin(t *testing.T, files map[string][]byte) (remote.Origin, *s3test.Server, string) {
	t.Helper()
	srv := s3test.Start(t)
	bucket := fmt.Sprintf("suite%d", suiteBucket.Add(1))
	srv.CreateBucket(t, bucket)
	srv.Put(t, bucket, "store.zarr/", files)
	return openT(t, srv, "s3://"+bucket+"/store.zarr", Options{}), srv, bucket
}

func TestSuiteConstructor(t *testing.T) {
	o, _, _ := newSuiteOrigin(t, map[string][]byte{"a/b": []byte("x")})
	if data, _, err := o.Get(ctxT(t), "a/b", 10); err != nil || string(data) != "x" {
		t.Fatalf("%q %v", data, err)
	}
}
