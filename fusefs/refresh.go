package fusefs

// Live refresh: the store's root metadata (or manifest) is revalidated now
// and then; when it changed, the new version replaces the old in one atomic
// swap, and the kernel forgets exactly the entries that changed.
//
// Lock order: FS.refreshMu is taken first and held for a whole refresh; the
// leaf locks of fs.go (dirsMu, filesMu, view.docsMu) are taken under it,
// never the other way round.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"reflect"
	"sort"
	"time"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"

	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/zarr"
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

// invalidator is what refresh needs of the FUSE server (fs.Server).
type invalidator interface {
	InvalidateEntry(parent fusefs.Node, name string) error
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
	rep.NodesAdded, rep.NodesRemoved, rep.NodesChanged = diffTrees(old.Tree, next.Tree)

	f.view.Store(&view{Store: next})
	if next.Manifest == nil {
		// Without versions per key any cached chunk may have changed: each
		// is revalidated when next opened (a 304 costs no transfer).
		f.chunks.MarkStale()
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
func (f *FS) revalidate(ctx context.Context, old *view) (*Store, []string, error) {
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
		next := &Store{Docs: map[string][]byte{}, Manifest: m}
		old.docsMu.Lock()
		reuse := make(map[string][]byte, len(old.Docs))
		for k, v := range old.Docs {
			reuse[k] = v
		}
		old.docsMu.Unlock()
		if err := fromManifestReusing(ctx, f.origin, next, old.Manifest, reuse); err != nil {
			return nil, nil, fmt.Errorf("read the changed store: %w", err)
		}
		keys := diffManifests(old.Manifest, m)
		if len(keys) == 0 {
			return nil, nil, nil
		}
		return next, keys, nil
	}

	next, err := Discover(ctx, f.origin)
	if errors.Is(err, ErrNotZarr) {
		return nil, nil, fmt.Errorf("the store is gone from the origin (deleted or moved?); serving the last version: %w", err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("revalidate metadata: %w", err)
	}
	if next.Manifest != nil {
		// The origin gained a manifest: everything may differ.
		return next, nil, nil
	}
	if sameDocs(old, next) && reflect.DeepEqual(treeShape(old.Tree), treeShape(next.Tree)) {
		return nil, nil, nil
	}
	return next, nil, nil
}

// sameDocs compares the documents both versions fetched.
func sameDocs(old *view, next *Store) bool {
	old.docsMu.Lock()
	defer old.docsMu.Unlock()
	for k, v := range next.Docs {
		if w, ok := old.Docs[k]; ok && !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

// diffManifests lists the keys added, removed or given a new version.
func diffManifests(old, next *remote.Manifest) []string {
	var keys []string
	next.Keys(func(k string, size int64, version string) bool {
		if s, v, ok := old.Lookup(k); !ok || s != size || v != version {
			keys = append(keys, k)
		}
		return true
	})
	old.Keys(func(k string, _ int64, _ string) bool {
		if _, _, ok := next.Lookup(k); !ok {
			keys = append(keys, k)
		}
		return true
	})
	return keys
}

// nodeShape is what makes a node the same across versions.
type nodeShape struct {
	Kind  zarr.Kind
	Array *zarr.Array
}

func treeShape(t *zarr.Tree) map[string]nodeShape {
	out := map[string]nodeShape{}
	_ = t.Walk(func(n *zarr.Node) error {
		out[n.Path] = nodeShape{Kind: n.Kind, Array: n.Array}
		return nil
	})
	return out
}

// diffTrees lists the node paths added, removed and changed (kind or array
// metadata), each sorted.
func diffTrees(old, next *zarr.Tree) (added, removed, changed []string) {
	a, b := treeShape(old), treeShape(next)
	for p, s := range b {
		if o, ok := a[p]; !ok {
			added = append(added, p)
		} else if !reflect.DeepEqual(o, s) {
			changed = append(changed, p)
		}
	}
	for p := range a {
		if _, ok := b[p]; !ok {
			removed = append(removed, p)
		}
	}
	sort.Strings(added)
	sort.Strings(removed)
	sort.Strings(changed)
	return added, removed, changed
}

// invalidate makes the kernel forget what changed: the entries of changed
// files (or of every file the kernel holds, when the origin gives no
// per-key versions) and of removed or changed nodes. Open files keep
// reading the version they opened. It runs outside any FUSE handler, as
// kernel notifications from inside one can deadlock.
func (f *FS) invalidate(old *view, next *Store, changedKeys, removed, changed []string) int {
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
		if !ok || f.server == nil {
			continue // the kernel never looked inside it
		}
		err := f.server.InvalidateEntry(parent, name)
		switch {
		case err == nil:
			n++
		case errors.Is(err, fuse.ErrNotCached):
		default:
			f.log.Warn("kernel entry invalidation failed", "path", p, "err", err)
		}
	}
	return n
}
