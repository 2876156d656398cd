package zarr

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalid marks a document or shard index that breaks the zarr format.
	ErrInvalid = errors.New("invalid zarr metadata")
	// ErrUnsupported marks a valid document that uses a feature this package does
	// not implement (an unknown chunk grid, a storage transformer, ...).
	ErrUnsupported = errors.New("unsupported zarr feature")
	// ErrConflict marks a tree insertion that contradicts what the tree holds
	// (a node below an array, an array where a group with children exists).
	ErrConflict = errors.New("conflicting zarr hierarchy")
	// ErrBadPath marks a node path (or one name in it) that cannot be a
	// directory of the mount: empty, ".", "..", a NUL, a backslash, a
	// metadata document's name, more than MaxNameBytes. It wraps ErrInvalid.
	ErrBadPath = fmt.Errorf("invalid node path: %w", ErrInvalid)
	// ErrParentSkipped marks a node that cannot be added because it, or a
	// group above it, was left out of the tree (Tree.Skip).
	ErrParentSkipped = errors.New("inside a node that was left out")
	// ErrChecksum marks a shard index whose crc32c does not match its contents.
	ErrChecksum = errors.New("shard index checksum mismatch")
)

// MetadataError describes what is wrong with one metadata document.
type MetadataError struct {
	Document string // the document, e.g. "zarr.json", ".zarray", `.zmetadata: metadata["a/.zarray"]`
	Field    string // dotted path of the offending member; "" for the whole document
	Problem  string
	Kind     error // ErrInvalid or ErrUnsupported
}

func (e *MetadataError) Error() string {
	if e.Field == "" {
		return e.Document + ": " + e.Problem
	}
	return e.Document + ": " + e.Field + " " + e.Problem
}

func (e *MetadataError) Unwrap() error { return e.Kind }

func invalidf(doc, field, format string, args ...any) error {
	return &MetadataError{Document: doc, Field: field, Problem: fmt.Sprintf(format, args...), Kind: ErrInvalid}
}

func badPathf(doc, field, format string, args ...any) error {
	return &MetadataError{Document: doc, Field: field, Problem: fmt.Sprintf(format, args...), Kind: ErrBadPath}
}

func unsupportedf(doc, field, format string, args ...any) error {
	return &MetadataError{Document: doc, Field: field, Problem: fmt.Sprintf(format, args...), Kind: ErrUnsupported}
}
