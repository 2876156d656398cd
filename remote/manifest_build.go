package remote

import (
	"bytes"
	"fmt"

	"github.com/zarrfs/zarrfs/remote/wire"
)

// ManifestBuilder builds a Manifest from keys an origin learnt another way
// than the manifest endpoint: an object store's listing (remote/s3). The
// result is the manifest `zarrfs serve` would send for the same entries,
// ETag included, so an unchanged listing revalidates as unchanged.
type ManifestBuilder struct {
	buf  bytes.Buffer
	enc  *wire.Encoder
	err  error
	prev string // the last key added
	n    int
}

// NewManifestBuilder returns an empty builder.
func NewManifestBuilder() *ManifestBuilder {
	b := &ManifestBuilder{}
	b.enc = wire.NewEncoder(&b.buf)
	b.err = b.enc.WriteHeader()
	return b
}

// Add appends one key, which must sort after every key added before it
// (byte order, as S3 lists) and be a valid store key (ValidKey).
func (b *ManifestBuilder) Add(key string, size int64, version string) error {
	if b.err != nil {
		return b.err
	}
	switch {
	case !wire.ValidKey([]byte(key)) || len(key) > wire.MaxKeyLen:
		return fmt.Errorf("manifest key %q: not a valid store key", key)
	case len(version) > wire.MaxVersionLen:
		return fmt.Errorf("manifest key %q: version of %d bytes is too long", key, len(version))
	case size < 0:
		return fmt.Errorf("manifest key %q: negative size %d", key, size)
	case b.n > 0 && key <= b.prev:
		return fmt.Errorf("manifest key %q: not after %q", key, b.prev)
	}
	if b.err = b.enc.Add(key, size, version); b.err == nil {
		b.prev = key
		b.n++
	}
	return b.err
}

// Len is the number of keys added.
func (b *ManifestBuilder) Len() int { return b.n }

// Manifest finishes the builder and returns the manifest. The builder must
// not be used afterwards.
func (b *ManifestBuilder) Manifest() (*Manifest, error) {
	if b.err != nil {
		return nil, b.err
	}
	if err := b.enc.End(); err != nil {
		return nil, err
	}
	m, err := decodeManifest(&b.buf)
	b.buf = bytes.Buffer{}
	return m, err
}

// ValidKey reports whether key names an object inside a store: not empty,
// no empty, "." or ".." segment, no NUL byte. Origins skip listed keys that
// are not (an object store may hold "a//b" or "dir/" markers).
func ValidKey(key string) bool { return checkKey(key) == nil }
