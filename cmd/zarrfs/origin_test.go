package main

import (
	"slices"
	"testing"
)

func TestS3HelperOptions(t *testing.T) {
	flags, _, err := helperFlags([]string{"_netdev", "s3_endpoint=http://127.0.0.1:7070", "s3-region=eu-west-1", "s3_addressing=path", "s3_anonymous"}, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"--s3-endpoint=http://127.0.0.1:7070", "--s3-region=eu-west-1", "--s3-addressing=path", "--s3-anonymous"}
	if !slices.Equal(flags, want) {
		t.Fatalf("flags %v, want %v", flags, want)
	}
	for _, u := range []string{"s3://bucket/era5.zarr", "gs://bucket/era5.zarr", "zarrfs#s3://bucket/x"} {
		if !looksLikeURL(u) {
			t.Errorf("%s is not taken for a source", u)
		}
	}
}
