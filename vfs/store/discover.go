package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/zarr"
)

// Discover learns the tree of the store at the origin's root: from consolidated
// metadata when the store has it, else by walking the origin's directory index
// and requesting each node's metadata documents by name (nginx's autoindex
// hides dotfiles, so names come from the index and documents are asked for).
func Discover(ctx context.Context, o Origin) (*Store, error) {
	s := &Store{Docs: map[string][]byte{}}
	m, err := o.Manifest(ctx)
	switch {
	case err == nil:
		s.Manifest = m
		return s, fromManifestReusing(ctx, o, s, nil, nil)
	case !errors.Is(err, remote.ErrNoManifest):
		return nil, err
	}
	get := func(key string) ([]byte, bool, error) {
		data, _, err := o.Get(ctx, key, MaxMetaBytes)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		s.Docs[key] = data
		return data, true, nil
	}

	if data, ok, err := get(".zmetadata"); err != nil {
		return nil, err
	} else if ok {
		t, err := zarr.TreeFromZMetadata(data)
		if err != nil {
			return nil, rootError(fmt.Errorf("consolidated metadata: %w", err), true)
		}
		s.Tree, s.Format, s.Source = t, 2, "consolidated .zmetadata"
		s.Skipped = skippedFrom(t.Skipped(), true)
		return s, nil
	}

	if data, ok, err := get("zarr.json"); err != nil {
		return nil, err
	} else if ok {
		s.Format = 3
		t, consolidated, err := zarr.TreeFromV3Consolidated(data)
		if err != nil {
			return nil, rootError(err, false)
		}
		if consolidated {
			s.Tree, s.Source = t, "consolidated zarr.json"
			s.Skipped = skippedFrom(t.Skipped(), true)
			return s, nil
		}
		kind, arr, err := zarr.ParseV3Node(data)
		if err != nil {
			return nil, rootError(err, false)
		}
		s.Tree = zarr.NewTree()
		if _, err := s.Tree.Add("", kind, arr, "zarr.json"); err != nil {
			return nil, err
		}
		if kind == zarr.KindArray {
			s.Source = "zarr.json (array at the root)"
			return s, nil
		}
		return s, crawl(ctx, o, s, "")
	}

	if data, ok, err := get(".zgroup"); err != nil {
		return nil, err
	} else if ok {
		if err := zarr.ParseZGroup(data); err != nil {
			return nil, rootError(err, false)
		}
		s.Format = 2
		s.Tree = zarr.NewTree()
		metas, err := probeAttrs(ctx, o, s, "", ".zgroup")
		if err != nil {
			return nil, err
		}
		if _, err := s.Tree.Add("", zarr.KindGroup, nil, metas...); err != nil {
			return nil, err
		}
		return s, crawl(ctx, o, s, "")
	}

	if data, ok, err := get(".zarray"); err != nil {
		return nil, err
	} else if ok {
		arr, err := zarr.ParseZArray(data)
		if err != nil {
			return nil, rootError(err, false)
		}
		s.Format = 2
		s.Tree = zarr.NewTree()
		metas, err := probeAttrs(ctx, o, s, "", ".zarray")
		if err != nil {
			return nil, err
		}
		if _, err := s.Tree.Add("", zarr.KindArray, arr, metas...); err != nil {
			return nil, err
		}
		s.Source = ".zarray (array at the root)"
		return s, nil
	}
	return nil, fmt.Errorf("%w: none of .zmetadata, zarr.json, .zgroup or .zarray exists at the store root", ErrNotZarr)
}

// probeAttrs returns the v2 metadata files of a node: the one already found
// plus .zattrs when the origin has it.
func probeAttrs(ctx context.Context, o Origin, s *Store, dir, found string) ([]string, error) {
	key := path.Join(dir, ".zattrs")
	data, _, err := o.Get(ctx, key, MaxMetaBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return []string{found}, nil
	}
	if err != nil {
		return nil, err
	}
	s.Docs[key] = data
	return []string{found, ".zattrs"}, nil
}

// crawl walks the store below dir through the origin's directory index.
func crawl(ctx context.Context, o Origin, s *Store, root string) error {
	var mu sync.Mutex // guards s.Docs and s.Tree while the walk runs in parallel
	g, ctx := errgroup.WithContext(ctx)
	// Requests, not goroutines, are bounded: a goroutine that lists a group
	// spawns one per child, and errgroup.SetLimit would deadlock once every
	// slot waited to spawn.
	slots := make(chan struct{}, crawlParallelism)
	acquire := func() { slots <- struct{}{} }
	release := func() { <-slots }

	get := func(key string) ([]byte, bool, error) {
		acquire()
		data, _, err := o.Get(ctx, key, MaxMetaBytes)
		release()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		mu.Lock()
		s.Docs[key] = data
		mu.Unlock()
		return data, true, nil
	}
	// add adds a node, or leaves it out when it does not fit the tree.
	add := func(p string, kind zarr.Kind, arr *zarr.Array, metas ...string) bool {
		mu.Lock()
		defer mu.Unlock()
		if _, err := s.Tree.Add(p, kind, arr, metas...); err != nil {
			s.Tree.Skip(p, err)
			return false
		}
		return true
	}
	// skip leaves out a node whose document is malformed: only a failure to
	// fetch fails the walk.
	skip := func(p string, err error) error {
		mu.Lock()
		defer mu.Unlock()
		s.Tree.Skip(p, err)
		return nil
	}

	// visit examines one listed directory: is it a group, an array, or not
	// part of the hierarchy at all (a chunk directory, a stray folder)?
	var visit func(dir string) error
	var walk func(dir string) error
	visit = func(dir string) error {
		if s.Format == 3 {
			data, ok, err := get(path.Join(dir, "zarr.json"))
			if err != nil || !ok {
				return err
			}
			kind, arr, err := zarr.ParseV3Node(data)
			if err != nil {
				return skip(dir, fmt.Errorf("%s/%w", dir, err))
			}
			if !add(dir, kind, arr, "zarr.json") {
				return nil
			}
			if kind == zarr.KindGroup {
				return walk(dir)
			}
			return nil
		}
		if data, ok, err := get(path.Join(dir, ".zarray")); err != nil {
			return err
		} else if ok {
			arr, err := zarr.ParseZArray(data)
			if err != nil {
				return skip(dir, fmt.Errorf("%s/%w", dir, err))
			}
			metas, err := v2Attrs(get, dir, ".zarray")
			if err != nil {
				return err
			}
			add(dir, zarr.KindArray, arr, metas...)
			return nil
		}
		data, ok, err := get(path.Join(dir, ".zgroup"))
		if err != nil || !ok {
			return err
		}
		if err := zarr.ParseZGroup(data); err != nil {
			return skip(dir, fmt.Errorf("%s/%w", dir, err))
		}
		metas, err := v2Attrs(get, dir, ".zgroup")
		if err != nil {
			return err
		}
		if !add(dir, zarr.KindGroup, nil, metas...) {
			return nil
		}
		return walk(dir)
	}
	walk = func(dir string) error {
		acquire()
		entries, err := o.List(ctx, dir)
		release()
		if err != nil {
			if dir == root && errors.Is(err, remote.ErrNoListing) {
				return fmt.Errorf("%w: the store has no consolidated metadata and the origin gives no directory listing (%v)", ErrNoStructure, err)
			}
			return fmt.Errorf("list %q: %w", dir, err)
		}
		for _, e := range entries {
			if !e.IsDir {
				continue
			}
			// Checked before joining: path.Join would resolve a ".." away.
			if err := checkListedName(e.Name); err != nil {
				raw := e.Name
				if dir != "" {
					raw = dir + "/" + e.Name
				}
				_ = skip(raw, fmt.Errorf("listing of %q: %w", displayDir(dir), err))
				continue
			}
			child := path.Join(dir, e.Name)
			g.Go(func() error { return visit(child) })
		}
		return nil
	}
	if s.Source == "" {
		s.Source = "directory index"
	}
	if err := walk(root); err != nil {
		_ = g.Wait()
		return err
	}
	if err := g.Wait(); err != nil {
		return err
	}
	s.Skipped = skippedFrom(s.Tree.Skipped(), false)
	return nil
}

// checkListedName checks one name of a directory listing.
func checkListedName(name string) error {
	if strings.Contains(name, "/") {
		return fmt.Errorf("name %q contains \"/\": %w", name, zarr.ErrBadPath)
	}
	return zarr.CheckNodePath(name)
}

func displayDir(dir string) string {
	if dir == "" {
		return "/"
	}
	return dir
}

func v2Attrs(get func(string) ([]byte, bool, error), dir, found string) ([]string, error) {
	_, ok, err := get(path.Join(dir, ".zattrs"))
	if err != nil {
		return nil, err
	}
	if ok {
		return []string{found, ".zattrs"}, nil
	}
	return []string{found}, nil
}

// fromManifestReusing builds the tree from the keys the manifest lists: a
// directory holding .zarray, .zgroup or zarr.json is a node. Its documents
// are fetched in parallel and parsed; consolidated metadata is not needed.
// A document whose version is the same in prev (an earlier manifest of the
// store) is taken from reuse instead of fetched again.
func fromManifestReusing(ctx context.Context, o Origin, s *Store, prev *remote.Manifest, reuse map[string][]byte) error {
	s.Source = "manifest"
	type node struct {
		dir   string
		metas []string
	}
	nodes := map[string]*node{}
	var order []string
	s.Manifest.Keys(func(key string, _ int64, _ string) bool {
		dir, name := path.Split(key)
		dir = strings.TrimSuffix(dir, "/")
		if !zarr.IsMetadataName(name) {
			return true
		}
		n, ok := nodes[dir]
		if !ok {
			n = &node{dir: dir}
			nodes[dir] = n
			order = append(order, dir)
		}
		n.metas = append(n.metas, name)
		return true
	})
	root, ok := nodes[""]
	if !ok {
		return fmt.Errorf("%w: the manifest lists no .zgroup, .zarray or zarr.json at the store root", ErrNotZarr)
	}
	if slices.Contains(root.metas, "zarr.json") {
		s.Format = 3
	} else {
		s.Format = 2
	}
	type parsed struct {
		kind zarr.Kind
		arr  *zarr.Array
		err  error // the document is malformed: the node is left out
	}
	tree := zarr.NewTree()
	results := make([]parsed, len(order))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(crawlParallelism)
	for i, dir := range order {
		n := nodes[dir]
		var doc string
		switch {
		case s.Format == 3 && slices.Contains(n.metas, "zarr.json"):
			doc = "zarr.json"
		case s.Format == 2 && slices.Contains(n.metas, ".zarray"):
			doc = ".zarray"
		case s.Format == 2 && slices.Contains(n.metas, ".zgroup"):
			doc = ".zgroup"
		default:
			// Only .zattrs (or a document of the other format): not a node.
			continue
		}
		// Keys the manifest decoder let through can still be unusable as
		// names here (a backslash, more than 255 bytes): such a node is
		// left out without fetching its document.
		if err := zarr.CheckNodePath(dir); err != nil {
			results[i].err = fmt.Errorf("manifest key %q: %w", path.Join(dir, doc), err)
			continue
		}
		key := path.Join(dir, doc)
		data, reused := reuse[key]
		reused = reused && sameVersion(prev, s.Manifest, key)
		g.Go(func() error {
			if !reused {
				fetched, _, err := o.Get(gctx, key, MaxMetaBytes)
				if err != nil {
					return fmt.Errorf("fetch %s: %w", key, err)
				}
				data = fetched
			}
			var err error
			var p parsed
			switch doc {
			case "zarr.json":
				p.kind, p.arr, err = zarr.ParseV3Node(data)
			case ".zarray":
				p.kind = zarr.KindArray
				p.arr, err = zarr.ParseZArray(data)
			case ".zgroup":
				p.kind, err = zarr.KindGroup, zarr.ParseZGroup(data)
			}
			if err != nil {
				p = parsed{err: err}
				if dir != "" {
					p.err = fmt.Errorf("%s/%w", dir, err)
				}
			}
			mu.Lock()
			if p.err == nil {
				s.Docs[key] = data
			}
			results[i] = p
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// Other documents read before (.zattrs) stay valid while their version does.
	for key, data := range reuse {
		if _, ok := s.Docs[key]; !ok && sameVersion(prev, s.Manifest, key) {
			s.Docs[key] = data
		}
	}
	// Parents before children, so that a node left out takes its
	// descendants with it whatever the manifest's byte order.
	byDepth := make([]int, len(order))
	for i := range byDepth {
		byDepth[i] = i
	}
	sort.SliceStable(byDepth, func(a, b int) bool {
		return strings.Count(order[byDepth[a]], "/")+min(len(order[byDepth[a]]), 1) < strings.Count(order[byDepth[b]], "/")+min(len(order[byDepth[b]]), 1)
	})
	for _, i := range byDepth {
		dir, p := order[i], results[i]
		if p.err != nil {
			if dir == "" {
				return rootError(p.err, false)
			}
			tree.Skip(dir, p.err)
			continue
		}
		if p.kind == 0 {
			continue
		}
		metas := append([]string(nil), nodes[dir].metas...)
		sort.Strings(metas)
		if _, err := tree.Add(dir, p.kind, p.arr, metas...); err != nil {
			if dir == "" {
				return rootError(fmt.Errorf("manifest: %w", err), false)
			}
			tree.Skip(dir, fmt.Errorf("manifest: %w", err))
		}
	}
	s.Tree = tree
	s.Skipped = skippedFrom(tree.Skipped(), false)
	return nil
}

// sameVersion reports whether key has one known version in both manifests.
func sameVersion(prev, next *remote.Manifest, key string) bool {
	if prev == nil {
		return false
	}
	_, v1, ok1 := prev.Lookup(key)
	_, v2, ok2 := next.Lookup(key)
	return ok1 && ok2 && v1 == v2 && v1 != ""
}
