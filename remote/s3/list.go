package s3

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/zarrfs/zarrfs/remote"
)

// List returns the direct children of dir ("" is the store root), from
// ListObjectsV2 with delimiter "/", every page. Keys that are not valid
// store keys (directory markers "dir/", "a//b") are skipped. A directory
// with nothing below it is remote.ErrNotFound (S3 has no empty
// directories); credentials that cannot list give remote.ErrNoListing.
func (o *Origin) List(ctx context.Context, dir string) ([]remote.DirEntry, error) {
	dir = strings.Trim(dir, "/")
	pfx := o.prefix
	if dir != "" {
		if !remote.ValidKey(dir) {
			return nil, fmt.Errorf("list: invalid directory %q", dir)
		}
		pfx += dir + "/"
	}
	var entries []remote.DirEntry
	err := o.list(ctx, dir, pfx, "/", func(page *s3.ListObjectsV2Output) error {
		for _, cp := range page.CommonPrefixes {
			name := strings.TrimSuffix(strings.TrimPrefix(aws.ToString(cp.Prefix), pfx), "/")
			if name != "" && remote.ValidKey(name) && !strings.Contains(name, "/") {
				entries = append(entries, remote.DirEntry{Name: name, IsDir: true})
			}
		}
		for _, obj := range page.Contents {
			name := strings.TrimPrefix(aws.ToString(obj.Key), pfx)
			if name != "" && remote.ValidKey(name) && !strings.Contains(name, "/") {
				entries = append(entries, remote.DirEntry{Name: name})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// A page holds its common prefixes and its objects apart; the contract
	// is one list sorted by name. An empty result is an empty directory:
	// a bucket has no directories of its own to be missing.
	slices.SortFunc(entries, func(a, b remote.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return entries, nil
}

// list runs ListObjectsV2 over every page under pfx, calling page for each.
// AccessDenied is remote.ErrNoListing (and teaches the 403 rule that these
// credentials cannot list).
func (o *Origin) list(ctx context.Context, what, pfx, delimiter string, page func(*s3.ListObjectsV2Output) error) error {
	in := &s3.ListObjectsV2Input{Bucket: &o.bucket, Prefix: &pfx, MaxKeys: aws.Int32(o.opts.ListPageSize)}
	if delimiter != "" {
		in.Delimiter = &delimiter
	}
	for {
		var out *s3.ListObjectsV2Output
		err := o.call(ctx, "LIST", what, func(ctx context.Context, at attempt) error {
			var err error
			out, err = o.client.ListObjectsV2(ctx, in, at.sdkOpts()...)
			if err != nil && isAccessDenied(err) {
				o.listState.Store(listDenied)
			}
			return err
		})
		if err != nil {
			if errors.Is(err, remote.ErrForbidden) && o.listState.Load() == listDenied {
				err = fmt.Errorf("%w: %w", remote.ErrNoListing, err)
			}
			o.operationFailed(ctx, err)
			return err
		}
		o.listState.Store(listAllowed)
		if err := page(out); err != nil {
			return err
		}
		if !aws.ToBool(out.IsTruncated) || aws.ToString(out.NextContinuationToken) == "" {
			return nil
		}
		in.ContinuationToken = out.NextContinuationToken
	}
}

// errTooManyKeys stops a manifest listing at its cap.
var errTooManyKeys = errors.New("too many keys")

// Manifest lists the whole store (see the package doc for why and the
// cap). A store over Options.ManifestMaxKeys keys, or credentials that
// cannot list, give remote.ErrNoManifest.
//
// A store found over the cap stays without a manifest for capRecheck: the
// file system asks for one again at every refresh of a store that has
// none, and finding out again would list the cap's worth of keys (20 pages
// by default) each time only to throw them away.
func (o *Origin) Manifest(ctx context.Context) (*remote.Manifest, error) {
	if o.opts.ManifestMaxKeys < 0 {
		return nil, fmt.Errorf("%s: %w (manifests from listings are off)", o.display, remote.ErrNoManifest)
	}
	if at := o.overCapAt.Load(); at != 0 && time.Since(time.Unix(0, at)) < capRecheck {
		return nil, fmt.Errorf("%s: %w: more than %d keys (found %s ago; listed again after %s)", o.display, remote.ErrNoManifest,
			o.opts.ManifestMaxKeys, time.Since(time.Unix(0, at)).Round(time.Second), capRecheck)
	}
	m, err := o.manifest(ctx, "", o.opts.ManifestMaxKeys)
	switch {
	case errors.Is(err, errTooManyKeys):
		o.overCapAt.Store(time.Now().UnixNano())
	case err == nil:
		o.overCapAt.Store(0)
	}
	return m, err
}

// capRecheck is how long a store found over the manifest cap is taken to
// still be over it: a store that shrank gets its manifest back at a
// refresh after at most this long.
const capRecheck = time.Hour

// RefreshManifest lists again (under prefix, if any) and compares: changed
// is false when every key, size and ETag is the same. A store that grew
// past the cap keeps a manifest up to 10 times the cap, so a mounted store
// does not lose its versions.
func (o *Origin) RefreshManifest(ctx context.Context, prev *remote.Manifest, prefix string) (*remote.Manifest, bool, error) {
	limit := 10 * max(o.opts.ManifestMaxKeys, 1)
	m, err := o.manifest(ctx, prefix, limit)
	if err != nil {
		return nil, false, err
	}
	if prev != nil && m.ETag() == prev.ETag() {
		return prev, false, nil
	}
	return m, true, nil
}

func (o *Origin) manifest(ctx context.Context, prefix string, limit int) (*remote.Manifest, error) {
	if prefix != "" && !remote.ValidKey(strings.TrimSuffix(prefix, "/")) {
		return nil, fmt.Errorf("manifest: invalid prefix %q", prefix)
	}
	b := remote.NewManifestBuilder()
	err := o.list(ctx, prefix, o.prefix+prefix, "", func(page *s3.ListObjectsV2Output) error {
		for _, obj := range page.Contents {
			key := strings.TrimPrefix(aws.ToString(obj.Key), o.prefix)
			if !remote.ValidKey(key) {
				continue // a directory marker or a key no file can name
			}
			if b.Len() >= limit {
				return errTooManyKeys
			}
			if err := b.Add(key, aws.ToInt64(obj.Size), aws.ToString(obj.ETag)); err != nil {
				return fmt.Errorf("manifest of %s: %w", o.display, err)
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, errTooManyKeys):
		o.log.Info("s3: the store has more keys than a listing manifest holds; reading it without one", "store", o.display, "max_keys", limit)
		return nil, fmt.Errorf("%s: %w: more than %d keys: %w", o.display, remote.ErrNoManifest, limit, errTooManyKeys)
	case errors.Is(err, remote.ErrNoListing):
		return nil, fmt.Errorf("%w: %w", remote.ErrNoManifest, err)
	case err != nil:
		return nil, err
	}
	return b.Manifest()
}

// listDeniedProbe reports whether these credentials cannot list the store
// (the 403 rule, doc.go). It asks once (ListObjectsV2, one key) the first
// time a GET is denied before any listing was tried.
func (o *Origin) listDeniedProbe(ctx context.Context) bool {
	if s := o.listState.Load(); s != listUnknown {
		return s == listDenied
	}
	o.probeMu.Lock()
	defer o.probeMu.Unlock()
	if s := o.listState.Load(); s != listUnknown {
		return s == listDenied
	}
	pfx := o.prefix
	_, err := o.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &o.bucket, Prefix: &pfx, MaxKeys: aws.Int32(1)}, o.opFns()...)
	switch {
	case err == nil:
		o.listState.Store(listAllowed)
	case isAccessDenied(err):
		o.listState.Store(listDenied)
	}
	return o.listState.Load() == listDenied
}

// rootDocs are the documents one of which every zarr store has at its root.
var rootDocs = []string{".zmetadata", "zarr.json", ".zgroup", ".zarray"}

// readProvenProbe reports whether these credentials can read the store (the
// 403 rule, doc.go): a GET under the prefix succeeded, or, asked when first
// needed, a one-byte GET of one of the root documents does. Without that
// proof a 403 stays ErrForbidden, so credentials that can read nothing fail
// with "access denied" instead of showing an empty store.
func (o *Origin) readProvenProbe(ctx context.Context) bool {
	if o.readProven.Load() {
		return true
	}
	o.probeMu.Lock()
	defer o.probeMu.Unlock()
	if o.readProven.Load() || time.Since(o.probedAt) < 10*time.Second {
		return o.readProven.Load()
	}
	o.probedAt = time.Now()
	for _, doc := range rootDocs {
		key := o.prefix + doc
		out, err := o.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &o.bucket, Key: &key, Range: aws.String("bytes=0-0")}, o.opFns()...)
		if err == nil {
			out.Body.Close()
			o.readProven.Store(true)
			return true
		}
	}
	return false
}

// readAsMissing is a 403 AccessDenied to a GET by credentials that cannot
// list: by the 403 rule the key is missing.
func (o *Origin) readAsMissing(op, key string) error {
	if o.warned403.CompareAndSwap(false, true) {
		o.log.Warn("s3: the credentials cannot list the bucket, so S3 answers 403 for missing keys; zarrfs reads a 403 AccessDenied as a missing object (fill value). If data is missing, grant s3:GetObject on the store's prefix (docs/s3.md)",
			"store", o.display, "first_key", key)
	}
	return fmt.Errorf("%s %s: %w (403 AccessDenied read as missing: the credentials cannot list, see docs/s3.md)", op, o.url(key), remote.ErrNotFound)
}
