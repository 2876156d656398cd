package store

// The skip policy: a node whose metadata or name is unusable is left out of
// the mount, with its descendants, and reported (log and `zarrfs stats`);
// the rest of the store mounts. Only an unusable root fails discovery. An
// origin that fails to answer is not a malformed node: discovery fails then,
// so that an outage is never read as nodes deleted.

import (
	"errors"
	"fmt"
	"log/slog"
	"path"

	"github.com/zarrfs/zarrfs/zarr"
)

// Skipped is a node of the store left out of the mount.
type Skipped struct {
	Path    string `json:"path"`             // as the store spells it; may be an invalid path
	Problem string `json:"problem"`          // what is wrong, naming the document and field
	Fix     string `json:"fix,omitempty"`    // what the store's owner can do about it
	Inside  string `json:"inside,omitempty"` // the skipped group it was left out with, if that is the reason
}

// skippedFrom turns a tree's skipped nodes into the store's report; how is
// how the tree was learnt, for the fix ("consolidated" asks for
// re-consolidation after the repair).
func skippedFrom(nodes []zarr.SkippedNode, consolidated bool) []Skipped {
	out := make([]Skipped, 0, len(nodes))
	paths := map[string]bool{}
	for _, n := range nodes {
		paths[n.Path] = true
	}
	for _, n := range nodes {
		s := Skipped{Path: n.Path, Problem: n.Err.Error()}
		if errors.Is(n.Err, zarr.ErrParentSkipped) {
			for p := path.Dir(n.Path); p != "." && p != "/"; p = path.Dir(p) {
				if paths[p] {
					s.Inside = p
					break
				}
			}
			s.Problem = "left out with the node it is inside"
			if s.Inside != "" {
				s.Problem = fmt.Sprintf("left out with %q, which it is inside", s.Inside)
			}
		}
		s.Fix = fixFor(n.Err, consolidated)
		out = append(out, s)
	}
	return out
}

func fixFor(err error, consolidated bool) string {
	again := ""
	if consolidated {
		again = ", then consolidate the metadata again (zarr.consolidate_metadata)"
	}
	switch {
	case errors.Is(err, zarr.ErrParentSkipped):
		return "fix the group it is inside"
	case errors.Is(err, zarr.ErrBadPath):
		return fmt.Sprintf("rename it on the storage machine: each name must be non-empty, not \".\" or \"..\", without NUL or backslash, at most %d bytes%s", zarr.MaxNameBytes, again)
	case errors.Is(err, zarr.ErrConflict):
		return "move or remove it on the storage machine: nothing can be inside an array, and one path cannot be both a group and an array" + again
	case errors.Is(err, zarr.ErrUnsupported):
		return "zarrfs cannot name this array's chunks: rewrite it with a regular chunk grid, the default or v2 chunk key encoding and at most " +
			fmt.Sprint(zarr.MaxDims) + " dimensions, or read it without zarrfs"
	case errors.Is(err, zarr.ErrInvalid):
		return "repair or rewrite its metadata document on the storage machine (for example with zarr-python)" + again
	}
	return ""
}

// WarnSkipped logs the nodes of skipped that before does not already hold
// (by path and problem): all of them at mount (before nil), and only the
// newly malformed ones after a refresh, so that a store refreshed every
// minute does not repeat the same warnings. Nodes left out with a group are
// counted in the group's line rather than logged one by one.
func WarnSkipped(log *slog.Logger, skipped, before []Skipped) {
	if log == nil {
		return
	}
	known := map[Skipped]bool{}
	for _, s := range before {
		known[s] = true
	}
	inside := map[string]int{}
	for _, s := range skipped {
		if s.Inside != "" && !known[s] {
			inside[s.Inside]++
		}
	}
	for _, s := range skipped {
		if known[s] || s.Inside != "" {
			continue
		}
		attrs := []any{"node", s.Path, "problem", s.Problem}
		if n := inside[s.Path]; n > 0 {
			attrs = append(attrs, "also_left_out", n)
		}
		if s.Fix != "" {
			attrs = append(attrs, "fix", s.Fix)
		}
		log.Warn("store: leaving out a node whose metadata cannot be used; the rest of the store is mounted", attrs...)
	}
}

// ErrBadRoot means the store's root metadata cannot be used: nothing can be
// mounted without it.
var ErrBadRoot = errors.New("the store's root metadata cannot be used")

// rootError is the error of an unusable root document, with the fix.
func rootError(err error, consolidated bool) error {
	fix := fixFor(err, consolidated)
	if fix == "" {
		return fmt.Errorf("%w: %w", ErrBadRoot, err)
	}
	return fmt.Errorf("%w: %w (to fix: %s)", ErrBadRoot, err, fix)
}
