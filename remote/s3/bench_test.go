package s3

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/zarrfs/zarrfs/remote"
)

// BenchmarkFetchSmall measures the client's cost per request: the same
// in-process server read as S3 (signed; GetObject as a plain request, and
// through the SDK's operation stack) and as a plain HTTP origin
// (remote.Client), 512-byte objects.
func BenchmarkFetchSmall(b *testing.B) {
	objects := map[string]string{}
	for i := range 100 {
		objects[fmt.Sprintf("s.zarr/x/%d", i)] = string(randBytes(uint64(i), 512))
	}
	f := &fakeS3{listAllowed: true, objects: objects}
	srv := httptest.NewServer(f)
	b.Cleanup(srv.Close)
	ctx := context.Background()
	s3o, err := Open(ctx, "s3://b/s.zarr", Options{Endpoint: srv.URL,
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
	if err != nil {
		b.Fatal(err)
	}
	// The same origin with GetObject through the SDK's operation stack, as
	// before fastget.go.
	sdko, err := Open(ctx, "s3://b/s.zarr", Options{Endpoint: srv.URL,
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
	if err != nil {
		b.Fatal(err)
	}
	sdko.sdkGet = true
	httpo, err := remote.New(srv.URL+"/b/s.zarr", remote.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		o    remote.Origin
	}{{"s3", s3o}, {"s3-sdk", sdko}, {"http", httpo}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := c.o.Fetch(ctx, fmt.Sprintf("x/%d", i%100), io.Discard); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
