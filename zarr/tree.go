package zarr

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Names of the metadata documents a node's directory may hold.
const (
	ZArray    = ".zarray"
	ZGroup    = ".zgroup"
	ZAttrs    = ".zattrs"
	ZMetadata = ".zmetadata"
	ZarrJSON  = "zarr.json"
)

// IsMetadataName reports whether name is one of the metadata document names.
func IsMetadataName(name string) bool {
	switch name {
	case ZArray, ZGroup, ZAttrs, ZMetadata, ZarrJSON:
		return true
	}
	return false
}

// Node is a group or an array of the hierarchy.
type Node struct {
	Path      string // "" for the root, else "a/b" (slash-separated, no leading slash)
	Name      string // last component of Path; "" for the root
	Kind      Kind
	Array     *Array   // for arrays
	MetaFiles []string // metadata documents known to exist in this node's directory, sorted
	Children  map[string]*Node
	// Implicit is true for a group that no group document defines: it exists
	// because something below it does (or it only has a .zattrs).
	Implicit bool
}

// ChildNames returns the names of the node's children, sorted.
func (n *Node) ChildNames() []string {
	names := make([]string, 0, len(n.Children))
	for name := range n.Children {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// HasMetaFile reports whether the metadata document name is known to exist in the node's directory.
func (n *Node) HasMetaFile(name string) bool {
	i := sort.SearchStrings(n.MetaFiles, name)
	return i < len(n.MetaFiles) && n.MetaFiles[i] == name
}

func (n *Node) addMetaFiles(names ...string) {
	for _, name := range names {
		if !n.HasMetaFile(name) {
			n.MetaFiles = append(n.MetaFiles, name)
			sort.Strings(n.MetaFiles)
		}
	}
}

// MaxNameBytes bounds one component of a node path: NAME_MAX of Linux file
// systems, so a longer name could be listed but never opened.
const MaxNameBytes = 255

// Tree is the hierarchy of a store. It is not safe for concurrent
// modification; build it, then share it read-only.
type Tree struct {
	root *Node
	// skipped are the paths left out (see Skip), valid or not; skippedList
	// keeps them with their reasons in the order met.
	skipped     map[string]bool
	skippedList []SkippedNode
}

// SkippedNode is a node left out of a tree because its metadata (or its
// name, or its parent's) is unusable; the rest of the tree stands.
type SkippedNode struct {
	// Path is the node's path as the metadata spells it; it may be an
	// invalid path (one with "..", a NUL, a backslash, ...).
	Path string
	// Err says what is wrong: a *MetadataError, or an error wrapping
	// ErrInvalid, ErrUnsupported, ErrConflict or ErrParentSkipped.
	Err error
}

// NewTree returns a tree holding only an implicit root group.
func NewTree() *Tree {
	return &Tree{root: newImplicitGroup("", ""), skipped: map[string]bool{}}
}

// Skip leaves the node at path out of the tree: it is removed if present,
// with its descendants (recorded as skipped for ErrParentSkipped), and no
// node can be added at or below it afterwards. The first reason recorded
// for a path is kept. The root cannot be skipped: a tree without its root
// is no tree, so callers fail instead.
func (t *Tree) Skip(path string, err error) {
	if path == "" {
		panic("zarr: Tree.Skip of the root")
	}
	if t.skipped[path] {
		return
	}
	// An invalid path is kept too, for dedup only: the valid paths that
	// skippedAncestor asks about never equal it.
	t.skipped[path] = true
	t.skippedList = append(t.skippedList, SkippedNode{Path: path, Err: err})
	n := t.Lookup(path)
	if n == nil {
		return
	}
	parent := t.Lookup(parentPath(path))
	delete(parent.Children, n.Name)
	var drop func(*Node)
	drop = func(c *Node) {
		for _, name := range c.ChildNames() {
			child := c.Children[name]
			if !child.Implicit {
				t.skippedList = append(t.skippedList, SkippedNode{Path: child.Path, Err: parentSkippedError(child.Path, path)})
			}
			t.skipped[child.Path] = true
			drop(child)
		}
	}
	drop(n)
}

// Skipped returns the nodes left out, in the order they were.
func (t *Tree) Skipped() []SkippedNode { return slices.Clone(t.skippedList) }

// skippedAncestor returns the nearest skipped node at or above path.
func (t *Tree) skippedAncestor(path string) (string, bool) {
	if len(t.skipped) == 0 {
		return "", false
	}
	for p := path; p != ""; p = parentPath(p) {
		if t.skipped[p] {
			return p, true
		}
	}
	return "", false
}

func parentSkippedError(path, skipped string) error {
	return fmt.Errorf("%q is inside %q, which was left out: %w", path, skipped, ErrParentSkipped)
}

func parentPath(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

func newImplicitGroup(path, name string) *Node {
	return &Node{Path: path, Name: name, Kind: KindGroup, Implicit: true, Children: map[string]*Node{}}
}

// Root returns the root node.
func (t *Tree) Root() *Node { return t.root }

// Lookup returns the node at path ("" for the root), nil if absent.
func (t *Tree) Lookup(path string) *Node {
	n := t.root
	if path == "" {
		return n
	}
	for _, c := range strings.Split(path, "/") {
		if n = n.Children[c]; n == nil {
			return nil
		}
	}
	return n
}

// Walk calls fn for every node, parents before children, siblings by name;
// it stops at the first error and returns it.
func (t *Tree) Walk(fn func(*Node) error) error {
	var walk func(*Node) error
	walk = func(n *Node) error {
		if err := fn(n); err != nil {
			return err
		}
		for _, name := range n.ChildNames() {
			if err := walk(n.Children[name]); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(t.root)
}

// CheckNodePath reports whether path can name a node below the mount: no
// empty, "." or ".." component, no metadata document name, no NUL or
// backslash, no component longer than MaxNameBytes. The error wraps
// ErrInvalid. "" (the root) is valid.
func CheckNodePath(path string) error {
	_, err := splitNodePath(path)
	return err
}

// splitNodePath checks a node path and returns its components (none for the root).
func splitNodePath(path string) ([]string, error) {
	if path == "" {
		return nil, nil
	}
	comps := strings.Split(path, "/")
	for _, c := range comps {
		switch {
		case c == "":
			return nil, fmt.Errorf("node path %q has an empty component (leading, trailing or doubled \"/\"): %w", path, ErrBadPath)
		case strings.Trim(c, ".") == "":
			return nil, fmt.Errorf("node path %q has a component made only of periods: %w", path, ErrBadPath)
		case IsMetadataName(c):
			return nil, fmt.Errorf("node path %q uses the metadata document name %q as a node name: %w", path, c, ErrBadPath)
		case strings.IndexByte(c, 0) >= 0:
			return nil, fmt.Errorf("node path %q contains a NUL byte: %w", path, ErrBadPath)
		case strings.IndexByte(c, '\\') >= 0:
			// Legal on Linux, but a path separator to any Windows-written
			// store or client: the name means different things to each.
			return nil, fmt.Errorf("node path %q contains a backslash: %w", path, ErrBadPath)
		case len(c) > MaxNameBytes:
			return nil, fmt.Errorf("node path %q has a component of %d bytes; file names are at most %d: %w", path, len(c), MaxNameBytes, ErrBadPath)
		}
	}
	return comps, nil
}

// Add inserts a node, creating implicit parent groups. It fails (ErrConflict)
// when a parent is an array, when the node already exists explicitly, or when
// an array would replace a group that has children.
func (t *Tree) Add(path string, kind Kind, arr *Array, metaFiles ...string) (*Node, error) {
	switch {
	case kind == KindArray && arr == nil:
		return nil, fmt.Errorf("add %q: an array node needs its Array: %w", path, ErrInvalid)
	case kind == KindGroup && arr != nil:
		return nil, fmt.Errorf("add %q: a group node cannot have an Array: %w", path, ErrInvalid)
	case kind != KindArray && kind != KindGroup:
		return nil, fmt.Errorf("add %q: unknown node kind %v: %w", path, kind, ErrInvalid)
	}
	for _, name := range metaFiles {
		if !IsMetadataName(name) {
			return nil, fmt.Errorf("add %q: %q is not a metadata document name: %w", path, name, ErrInvalid)
		}
	}
	n, err := t.ensure(path)
	if err != nil {
		return nil, fmt.Errorf("add %q: %w", path, err)
	}
	if !n.Implicit {
		return nil, fmt.Errorf("add %q: it already exists as %s: %w", path, n.Kind.withArticle(), ErrConflict)
	}
	if kind == KindArray && len(n.Children) > 0 {
		return nil, fmt.Errorf("add %q: an array cannot contain %q: %w", path, n.ChildNames()[0], ErrConflict)
	}
	n.Implicit = false
	n.Kind = kind
	n.Array = arr
	n.addMetaFiles(metaFiles...)
	return n, nil
}

// ensure returns the node at path, creating implicit groups for it and its
// parents. It changes nothing when it fails.
func (t *Tree) ensure(path string) (*Node, error) {
	comps, err := splitNodePath(path)
	if err != nil {
		return nil, err
	}
	if p, ok := t.skippedAncestor(path); ok {
		if p == path {
			return nil, fmt.Errorf("%q was left out: %w", path, ErrParentSkipped)
		}
		return nil, parentSkippedError(path, p)
	}
	n := t.root
	for i, c := range comps {
		if n.Kind == KindArray {
			return nil, fmt.Errorf("%q would be inside array %q: %w", path, displayPath(n.Path), ErrConflict)
		}
		if n.Children[c] == nil {
			break
		}
		n = n.Children[c]
		if i == len(comps)-1 {
			return n, nil
		}
	}
	n = t.root
	for i, c := range comps {
		child := n.Children[c]
		if child == nil {
			child = newImplicitGroup(strings.Join(comps[:i+1], "/"), c)
			n.Children[c] = child
		}
		n = child
	}
	return n, nil
}

func displayPath(path string) string {
	if path == "" {
		return "/"
	}
	return path
}
