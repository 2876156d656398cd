package main

// Object-store origins on the command line: the --s3-* flags of `zarrfs
// mount`, their -o forms for mount.zarrfs and fstab, and the advice for
// mounts of buckets that fail.

import (
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/s3"
	"github.com/zarrfs/zarrfs/vfs/store"
)

// s3Flags are the mount flags for s3:// and gs:// URLs.
type s3Flags struct {
	endpoint   string
	region     string
	addressing string
	anonymous  bool
}

func addS3Flags(fl *pflag.FlagSet, f *s3Flags) {
	fl.StringVar(&f.endpoint, "s3-endpoint", "", "`URL` of an S3-compatible service for s3:// URLs (MinIO, R2, Ceph); default AWS")
	fl.StringVar(&f.region, "s3-region", "", "`REGION` of the bucket (default $AWS_REGION or the profile's; on AWS a wrong one is corrected)")
	fl.StringVar(&f.addressing, "s3-addressing", "", "`STYLE` of bucket addressing: path or virtual (default: path with --s3-endpoint, virtual on AWS)")
	fl.BoolVar(&f.anonymous, "s3-anonymous", false, "send unsigned requests to a public bucket, and no token on gs:// (also the fallback when no credentials are found)")
}

func init() {
	// mount.zarrfs / fstab: -o s3_endpoint=URL,s3_region=R,s3_addressing=path,s3_anonymous
	helperValueOptions["s3_endpoint"] = "--s3-endpoint"
	helperValueOptions["s3_region"] = "--s3-region"
	helperValueOptions["s3_addressing"] = "--s3-addressing"
	helperBoolOptions["s3_anonymous"] = "--s3-anonymous"
}

// options are the flags as the S3/GCS origin takes them. tokenFile is
// --token-file: for gs:// it is re-read when it changes, so a refreshed OAuth
// token is picked up.
func (f s3Flags) options(tokenFile string) s3.Options {
	return s3.Options{
		Endpoint:   f.endpoint,
		Region:     f.region,
		Addressing: f.addressing,
		Anonymous:  f.anonymous,
		TokenFile:  tokenFile,
	}
}

// adviseObjectStore is adviseOrigin for s3:// and gs://: remote/s3's errors
// already name the fix (check AWS_SECRET_ACCESS_KEY, use --s3-region X, …),
// so they are shown alone, without the HTTP-origin advice of explain; a
// store with no zarr metadata is explained here.
func adviseObjectStore(url string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotZarr):
		return &advisedError{advice: fmt.Sprintf("no zarr store at %s: none of .zmetadata, zarr.json, .zgroup, .zarray is under that prefix; check the bucket and path (they must name the store's root)", url), err: err, alone: true}
	case errors.Is(err, remote.ErrForbidden), errors.Is(err, remote.ErrUnauthorized), errors.Is(err, remote.ErrUnreachable),
		errors.Is(err, remote.ErrTLS), errors.Is(err, s3.ErrNoSuchBucket), errors.Is(err, s3.ErrWrongRegion):
		return &advisedError{advice: err.Error(), err: err, alone: true}
	}
	return err
}
