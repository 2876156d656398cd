package origins

import (
	"context"
	"strings"
	"testing"

	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/s3"
)

func TestOpenByScheme(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		url  string
		opts Options
		want string // type name, or "error: substring"
	}{
		{"https://host/d.zarr", Options{}, "*remote.Client"},
		{"http://host/d.zarr", Options{}, "*remote.Client"},
		{"s3://bucket/d.zarr", Options{S3: s3.Options{Anonymous: true, Region: "us-east-1"}}, "*s3.Origin"},
		{"gs://bucket/d.zarr", Options{}, "*s3.Origin"},
		{"ftp://host/d.zarr", Options{}, "error: unsupported scheme"},
		{"https://host/d.zarr", Options{S3: s3.Options{Endpoint: "http://x"}}, "error: --s3-* options"},
		{"s3:///d.zarr", Options{S3: s3.Options{Anonymous: true}}, "error: s3://bucket"},
	} {
		o, err := Open(ctx, c.url, c.opts)
		if want, ok := strings.CutPrefix(c.want, "error: "); ok {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Open(%s): %v, want an error saying %q", c.url, err, want)
			}
			continue
		}
		if err != nil {
			t.Errorf("Open(%s): %v", c.url, err)
			continue
		}
		var got string
		switch o.(type) {
		case *remote.Client:
			got = "*remote.Client"
		case *s3.Origin:
			got = "*s3.Origin"
		}
		if got != c.want {
			t.Errorf("Open(%s) = %T, want %s", c.url, o, c.want)
		}
		o.Close()
	}
	if !IsObjectStore("s3://b/x") || !IsObjectStore("gs://b/x") || IsObjectStore("https://b/x") {
		t.Error("IsObjectStore")
	}
}
