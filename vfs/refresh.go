package vfs

// Live refresh: the store's root metadata (or manifest) is revalidated now
// and then; when it changed, the new version replaces the old in one atomic
// swap, and the kernel forgets exactly the entries that changed.
//
// Lock order: FS.refreshMu is taken first and held for a whole refresh; the
// leaf locks of fs.go (dirsMu, filesMu, view.docsMu) are taken under it,
// never the other way round.

import (
	"context"
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/vfs/store"
)

// RefreshReport says what a refresh found.
type RefreshReport struct {
	At           time.Time `json:"at"`
	Took         string    `json:"took"`
	Changed      bool      `json:"changed"`
	ChangedKeys  int       `json:"changed_keys,omitempty"` // keys added, removed or rewritten (with a manifest)
	NodesAdded   []string  `json:"nodes_added,omitempty"`
	NodesRemoved []string  `json:"nodes_removed,omitempty"`
	NodesChanged []string  `json:"nodes_changed,omitempty"` // reshaped arrays, groups that became arrays
	Invalidated  int       `json:"invalidated_entries"`     // kernel entries dropped
	Error        string    `json:"error,omitempty"`
}

// Invalidator is what refresh needs of the kernel: to forget the entry
// name of directory parent. It returns an error wrapping ErrNotCached when
// the kernel does not hold that entry. It is never called from inside a
// request on parent, as kernel notifications from inside one can deadlock.
type Invalidator interface {
	InvalidateEntry(parent *Dir, name string) error
}

// Refresh revalidates the store on the origin now and switches to its new
// version if it changed. An error (origin unreachable, store gone) leaves
// the file system serving the version it has.
func (f *FS) Refresh(ctx context.Context) (RefreshReport, error) {
	rep, err := f.refresh(ctx)
	f.lastMu.Lock()
	f.lastRefresh = &rep
	f.lastMu.Unlock()
	if err != nil {
		f.log.Warn("refresh failed; still serving the last version of the store", "err", err)
	}
	return rep, err
}

// LastRefresh is the report of the last refresh, nil before the first.
func (f *FS) LastRefresh() *RefreshReport {
	f.lastMu.Lock()
	defer f.lastMu.Unlock()
	return f.lastRefresh
}

// refresh revalidates the store and, when it changed, switches to the new
// version. Origin failures (timeouts, 5xx, a vanished store) keep the current
// version: an outage is not a change.
func (f *FS) refresh(ctx context.Context) (rep RefreshReport, err error) {
	f.refreshMu.Lock()
	defer f.refreshMu.Unlock()
	start := time.Now()
	rep.At = start
	defer func() { rep.Took = time.Since(start).Round(time.Millisecond).String() }()

	old := f.current()
	next, changedKeys, err := f.revalidate(ctx, old)
	if err != nil {
		rep.Error = err.Error()
		return rep, err
	}
	if next == nil {
		return rep, nil
	}
	rep.Changed = true
	rep.ChangedKeys = len(changedKeys)
	rep.NodesAdded, rep.NodesRemoved, rep.NodesChanged = store.DiffTrees(old.Tree, next.Tree)
	// A node that became malformed is removed like a deleted one, with a
	// warning; problems the old version already had are not repeated.
	store.WarnSkipped(f.log, next.Skipped, old.Skipped)

	f.view.Store(&view{Store: next})
	if next.Manifest == nil {
		// Without versions per key any cached chunk may have changed: each
		// is revalidated when next opened (a 304 costs no transfer).
		f.cache.MarkStale()
		f.ranged.forget()
	}
	f.listings.Purge()
	rep.Invalidated = f.invalidate(old, next, changedKeys, rep.NodesRemoved, rep.NodesChanged)
	f.log.Info("store changed on the origin", "changed_keys", rep.ChangedKeys,
		"nodes_added", len(rep.NodesAdded), "nodes_removed", len(rep.NodesRemoved),
		"nodes_changed", len(rep.NodesChanged), "kernel_entries_invalidated", rep.Invalidated)
	return rep, nil
}

// revalidate returns the store's new version and the keys that changed, or
// nil when nothing changed.
func (f *FS) revalidate(ctx context.Context, old *view) (*store.Store, []string, error) {
	if old.Manifest != nil {
		m, changed, err := f.origin.RefreshManifest(ctx, old.Manifest, "")
		if errors.Is(err, remote.ErrNoManifest) {
			return nil, nil, fmt.Errorf("the store's manifest is gone from the origin (store deleted or moved?); serving the last version: %w", err)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("revalidate manifest: %w", err)
		}
		if !changed {
			return nil, nil, nil
		}
		next, err := store.FromManifest(ctx, f.origin, m, old.Manifest, old.docs())
		if err != nil {
			return nil, nil, fmt.Errorf("read the changed store: %w", err)
		}
		keys := store.DiffManifests(old.Manifest, m)
		if len(keys) == 0 {
			return nil, nil, nil
		}
		return next, keys, nil
	}

	next, err := store.Discover(ctx, f.origin)
	if errors.Is(err, store.ErrNotZarr) {
		return nil, nil, fmt.Errorf("the store is gone from the origin (deleted or moved?); serving the last version: %w", err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("revalidate metadata: %w", err)
	}
	if next.Manifest != nil {
		// The origin gained a manifest: everything may differ.
		return next, nil, nil
	}
	if store.SameDocs(old.docs(), next.Docs) && store.SameShape(old.Tree, next.Tree) {
		return nil, nil, nil
	}
	return next, nil, nil
}

// invalidate makes the kernel forget what changed: the entries of changed
// files (or of every file the kernel holds, when the origin gives no
// per-key versions) and of removed or changed nodes. Open files keep
// reading the version they opened. It runs outside any FUSE handler, as
// kernel notifications from inside one can deadlock.
func (f *FS) invalidate(old *view, next *store.Store, changedKeys, removed, changed []string) int {
	var stale []string
	f.filesMu.Lock()
	if next.Manifest != nil && old.Manifest != nil {
		for _, k := range changedKeys {
			if _, ok := f.files[k]; ok {
				stale = append(stale, k)
				delete(f.files, k)
			}
		}
	} else {
		for k := range f.files {
			stale = append(stale, k)
		}
		clear(f.files)
	}
	f.filesMu.Unlock()
	stale = append(stale, removed...)
	stale = append(stale, changed...)

	n := 0
	for _, p := range stale {
		if p == "" {
			continue // the root itself stays
		}
		dir, name := path.Split(p)
		parent, ok := f.knownDir(path.Clean("/" + dir)[1:])
		if !ok || f.invalidator == nil {
			continue // the kernel never looked inside it
		}
		err := f.invalidator.InvalidateEntry(parent, name)
		switch {
		case err == nil:
			n++
		case errors.Is(err, ErrNotCached):
		default:
			f.log.Warn("kernel entry invalidation failed", "path", p, "err", err)
		}
	}
	return n
}
