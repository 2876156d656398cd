package zarr

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// TreeFromZMetadata builds the tree from a v2 consolidated .zmetadata document
// ({"zarr_consolidated_format":1,"metadata":{".zgroup":{...},"a/.zarray":{...}}}).
// The root's MetaFiles include ".zmetadata". Keys naming other documents than
// .zgroup, .zarray and .zattrs are ignored.
//
// A node whose key or document is unusable (an invalid path, a malformed
// .zarray, .zgroup or .zattrs, a place that contradicts the hierarchy) is
// left out with its descendants and reported by the tree's Skipped; only a
// malformed document as a whole, or a malformed root node, is an error.
func TreeFromZMetadata(data []byte) (*Tree, error) {
	const doc = ZMetadata
	m, err := decodeDocument(doc, data)
	if err != nil {
		return nil, err
	}
	format, err := requireInt(doc, m, "zarr_consolidated_format")
	if err != nil {
		return nil, err
	}
	if format != 1 {
		return nil, unsupportedf(doc, "zarr_consolidated_format", "is %d; only version 1 is supported", format)
	}
	raw, ok := m["metadata"]
	if !ok {
		return nil, invalidf(doc, "metadata", "is missing")
	}
	entries, err := decodeObject(doc, "metadata", raw)
	if err != nil {
		return nil, err
	}

	t := NewTree()
	var attrs []string
	// fail reports a problem with one node: an error at the root, a
	// skipped node below it.
	fail := func(dir string, err error) error {
		if dir == "" {
			return err
		}
		t.Skip(dir, err)
		return nil
	}
	for _, key := range sortedByDepth(entries) {
		dir, base := "", key
		if i := strings.LastIndexByte(key, '/'); i >= 0 {
			dir, base = key[:i], key[i+1:]
			if i == 0 {
				dir = "/" // an absolute key is not the root's: invalid
			}
		}
		if base != ZGroup && base != ZArray && base != ZAttrs {
			continue
		}
		field := fmt.Sprintf("metadata[%q]", key)
		if _, err := splitNodePath(dir); err != nil {
			t.Skip(dir, badPathf(doc, field, "names an invalid node path: %v", err))
			continue
		}
		if p, ok := t.skippedAncestor(dir); ok {
			if p != dir {
				t.Skip(dir, parentSkippedError(dir, p))
			}
			continue
		}
		entryDoc := doc + " " + field
		body, err := consolidatedEntry(doc, field, entries[key])
		if err != nil {
			if err := fail(dir, err); err != nil {
				return nil, err
			}
			continue
		}
		switch base {
		case ZGroup:
			if err := parseZGroup(entryDoc, body); err != nil {
				if err := fail(dir, err); err != nil {
					return nil, err
				}
				continue
			}
			if _, err := t.Add(dir, KindGroup, nil, ZGroup); err != nil {
				if err := fail(dir, invalidf(doc, field, "does not fit the hierarchy: %v", err)); err != nil {
					return nil, err
				}
			}
		case ZArray:
			a, err := parseZArray(entryDoc, body)
			if err != nil {
				if err := fail(dir, err); err != nil {
					return nil, err
				}
				continue
			}
			if _, err := t.Add(dir, KindArray, a, ZArray); err != nil {
				if err := fail(dir, invalidf(doc, field, "does not fit the hierarchy: %v", err)); err != nil {
					return nil, err
				}
			}
		case ZAttrs:
			if !isJSONObject(body) {
				if err := fail(dir, invalidf(doc, field, "must be a JSON object of attributes")); err != nil {
					return nil, err
				}
				continue
			}
			attrs = append(attrs, dir)
		}
	}
	// Attributes last, so that they attach to the node their directory's
	// .zgroup or .zarray defines, whatever the key order.
	for _, dir := range attrs {
		if _, ok := t.skippedAncestor(dir); ok {
			continue
		}
		n, err := t.ensure(dir)
		if err != nil {
			if err := fail(dir, invalidf(doc, fmt.Sprintf("metadata[%q]", joinPath(dir, ZAttrs)), "does not fit the hierarchy: %v", err)); err != nil {
				return nil, err
			}
			continue
		}
		n.addMetaFiles(ZAttrs)
	}
	t.root.addMetaFiles(ZMetadata)
	return t, nil
}

// consolidatedEntry returns the document stored under one consolidated key.
// Early zarr-python versions stored each document as a JSON string holding
// the document rather than as the object itself; both are accepted.
func consolidatedEntry(doc, field string, raw json.RawMessage) ([]byte, error) {
	if s, ok := decodeString(raw); ok {
		if !json.Valid([]byte(s)) {
			return nil, invalidf(doc, field, "is a string that does not hold a JSON document")
		}
		return []byte(s), nil
	}
	return raw, nil
}

// sortedByDepth orders keys parents first, then by name, so that explicit
// groups are added before their children.
func sortedByDepth(entries map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(entries))
	for k := range entries {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		di, dj := strings.Count(keys[i], "/"), strings.Count(keys[j], "/")
		if di != dj {
			return di < dj
		}
		return keys[i] < keys[j]
	})
	return keys
}

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// TreeFromV3Consolidated builds the tree from a v3 root zarr.json with inline
// consolidated_metadata ({"kind":"inline","metadata":{"a":{...},"a/b":{...}}}).
// ok is false (with a nil error) when the document is a valid group whose
// consolidated_metadata is null or absent. Every node gets MetaFiles
// ["zarr.json"]; a root that is an array gives a tree with one array node.
// Nested groups' own inline consolidated metadata is merged in.
//
// As with TreeFromZMetadata, an unusable entry is left out with its
// descendants (see Tree.Skipped); only a malformed root document, or
// malformed consolidated metadata of the root, is an error.
func TreeFromV3Consolidated(rootDoc []byte) (t *Tree, ok bool, err error) {
	const doc = ZarrJSON
	root, err := parseV3(doc, rootDoc)
	if err != nil {
		return nil, false, err
	}
	t = NewTree()
	if root.kind == KindArray {
		if _, err := t.Add("", KindArray, root.array, ZarrJSON); err != nil {
			return nil, false, err
		}
		return t, true, nil
	}
	if root.consolidated == nil {
		return nil, false, nil
	}
	if _, err := t.Add("", KindGroup, nil, ZarrJSON); err != nil {
		return nil, false, err
	}
	if err := addV3Consolidated(t, doc, "", root.consolidated, 0); err != nil {
		return nil, false, err
	}
	return t, true, nil
}

// maxConsolidatedNesting bounds how deep groups' own consolidated metadata may
// nest. Each level is parsed again by the level below it, so without a bound
// a hostile document costs time quadratic in its size; writers nest one or
// two levels at most.
const maxConsolidatedNesting = 32

// addV3Consolidated adds the nodes of one consolidated_metadata member, whose
// keys are relative to the group at prefix. An error is about the member as
// a whole (the caller fails or skips the group at prefix); unusable entries
// are skipped.
func addV3Consolidated(t *Tree, doc, prefix string, raw json.RawMessage, nesting int) error {
	const field = "consolidated_metadata"
	if nesting > maxConsolidatedNesting {
		return unsupportedf(doc, field, "nests more than %d levels of consolidated metadata", maxConsolidatedNesting)
	}
	cm, err := decodeObject(doc, field, raw)
	if err != nil {
		return err
	}
	kindRaw, ok := cm["kind"]
	if !ok {
		return invalidf(doc, field+".kind", "is missing")
	}
	if kind, _ := decodeString(kindRaw); kind != "inline" {
		return unsupportedf(doc, field+".kind", "is %s; only \"inline\" consolidated metadata is supported", abbreviate(kindRaw))
	}
	metaRaw, ok := cm["metadata"]
	if !ok {
		return invalidf(doc, field+".metadata", "is missing")
	}
	entries, err := decodeObject(doc, field+".metadata", metaRaw)
	if err != nil {
		return err
	}
	for _, key := range sortedByDepth(entries) {
		entryField := fmt.Sprintf("%s.metadata[%q]", field, key)
		path := joinPath(prefix, key)
		if key == "" {
			t.Skip(prefix+"/", badPathf(doc, entryField, "names the group itself; keys must be relative paths of its descendants"))
			continue
		}
		if _, err := splitNodePath(key); err != nil {
			t.Skip(path, badPathf(doc, entryField, "names an invalid node path: %v", err))
			continue
		}
		if _, err := splitNodePath(path); err != nil {
			t.Skip(path, badPathf(doc, entryField, "names an invalid node path: %v", err))
			continue
		}
		if p, ok := t.skippedAncestor(path); ok {
			if p != path {
				t.Skip(path, parentSkippedError(path, p))
			}
			continue
		}
		entryDoc := doc + " " + entryField
		n, err := parseV3(entryDoc, entries[key])
		if err != nil {
			t.Skip(path, err)
			continue
		}
		if existing := t.Lookup(path); existing != nil && !existing.Implicit {
			// Writers flatten nested groups' entries into the root and may also
			// keep them in the nested group: the same node twice is fine.
			if existing.Kind != n.kind {
				t.Skip(path, invalidf(doc, entryField, "is %s but %q is also listed as %s", n.kind.withArticle(), path, existing.Kind.withArticle()))
				continue
			}
		} else if _, err := t.Add(path, n.kind, n.array, ZarrJSON); err != nil {
			t.Skip(path, invalidf(doc, entryField, "does not fit the hierarchy: %v", err))
			continue
		}
		if n.kind == KindGroup && n.consolidated != nil {
			if err := addV3Consolidated(t, entryDoc, path, n.consolidated, nesting+1); err != nil {
				t.Skip(path, err)
			}
		}
	}
	return nil
}
