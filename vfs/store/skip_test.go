package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/wire"
	"github.com/zarrfs/zarrfs/vfs/store"
	"github.com/zarrfs/zarrfs/zarr"
)

// memOrigin is a store held in memory: files by key, a directory index
// derived from the keys (plus extraDirs, names a hostile index lists), and
// a manifest of every key when withManifest is set.
type memOrigin struct {
	files        map[string]string
	listing      bool
	extraDirs    map[string][]string // dir -> directory names listed on top of the real ones
	withManifest bool
	fail         map[string]error // key -> error a GET answers
	mu           sync.Mutex
	gets         []string // keys asked for, in order
}

func (o *memOrigin) Get(_ context.Context, key string, _ int64) ([]byte, remote.Object, error) {
	o.mu.Lock()
	o.gets = append(o.gets, key)
	o.mu.Unlock()
	if err, ok := o.fail[key]; ok {
		return nil, remote.Object{}, err
	}
	data, ok := o.files[key]
	if !ok {
		return nil, remote.Object{}, fmt.Errorf("GET %s: %w", key, remote.ErrNotFound)
	}
	return []byte(data), remote.Object{Size: int64(len(data))}, nil
}

func (o *memOrigin) List(_ context.Context, dir string) ([]remote.DirEntry, error) {
	if !o.listing {
		return nil, fmt.Errorf("list %s: %w", dir, remote.ErrNoListing)
	}
	seen := map[string]bool{}
	var out []remote.DirEntry
	prefix := ""
	if dir != "" {
		prefix = dir + "/"
	}
	for key := range o.files {
		rest, ok := strings.CutPrefix(key, prefix)
		if !ok {
			continue
		}
		name, _, isDir := strings.Cut(rest, "/")
		if !seen[name] {
			seen[name] = true
			out = append(out, remote.DirEntry{Name: name, IsDir: isDir})
		}
	}
	for _, name := range o.extraDirs[dir] {
		out = append(out, remote.DirEntry{Name: name, IsDir: true})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (o *memOrigin) Manifest(context.Context) (*remote.Manifest, error) {
	if !o.withManifest {
		return nil, remote.ErrNoManifest
	}
	keys := make([]string, 0, len(o.files))
	for k := range o.files {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var raw bytes.Buffer
	enc := wire.NewEncoder(&raw)
	if err := enc.WriteHeader(); err != nil {
		return nil, err
	}
	for i, k := range keys {
		if err := enc.Add(k, int64(len(o.files[k])), fmt.Sprintf(`"v%d"`, i)); err != nil {
			return nil, err
		}
	}
	if err := enc.End(); err != nil {
		return nil, err
	}
	zw, _ := zstd.NewWriter(nil)
	return remote.ReadManifest(bytes.NewReader(zw.EncodeAll(raw.Bytes(), nil)))
}

func (o *memOrigin) RefreshManifest(ctx context.Context, prev *remote.Manifest, _ string) (*remote.Manifest, bool, error) {
	m, err := o.Manifest(ctx)
	return m, true, err
}

const (
	goodV2   = `{"zarr_format":2,"shape":[4,4],"chunks":[2,2],"dtype":"<i2","dimension_separator":"."}`
	groupV2  = `{"zarr_format":2}`
	goodV3   = `{"zarr_format":3,"node_type":"array","shape":[4],"data_type":"int16","chunk_grid":{"name":"regular","configuration":{"chunk_shape":[2]}},"chunk_key_encoding":{"name":"default"},"fill_value":0,"codecs":[{"name":"bytes"}]}`
	groupV3  = `{"zarr_format":3,"node_type":"group"}`
	longName = "n234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456"
)

// hostileV2 is a v2 store with good nodes next to bad ones; badV2 names the
// nodes that must be left out.
func hostileV2() map[string]string {
	return map[string]string{
		".zgroup":      groupV2,
		"good/.zarray": goodV2,
		"good/0.0":     "xx",
		"grp/.zgroup":  groupV2,
		// Sorts before its array's .zarray: a node inside an array, whatever the key order.
		"good/-inner/.zgroup":          groupV2,
		"grp/inner/.zarray":            goodV2,
		"zero/.zarray":                 strings.Replace(goodV2, `"chunks":[2,2]`, `"chunks":[0,2]`, 1),
		"neg/.zarray":                  strings.Replace(goodV2, `"shape":[4,4]`, `"shape":[-4,4]`, 1),
		"trunc/.zarray":                goodV2[:30],
		"huge/.zarray":                 strings.Replace(goodV2, `"shape":[4,4],"chunks":[2,2]`, `"shape":[4294967296,4294967296,4],"chunks":[1,1,1]`, 1),
		"sep/.zarray":                  strings.Replace(goodV2, `"."`, `"|"`, 1),
		"badgrp/.zgroup":               `{"zarr_format":2`,
		"badgrp/child/.zarray":         goodV2,
		`back\slash/.zarray`:           goodV2,
		longName + "/.zarray":          goodV2,
		"sub/.zgroup":                  groupV2,
		"sub/" + longName + "/.zarray": goodV2,
	}
}

var (
	badV2  = []string{"good/-inner", "badgrp", "badgrp/child", "huge", "neg", "sep", "trunc", "zero", `back\slash`, longName, "sub/" + longName}
	keptV2 = []string{"", "good", "grp", "grp/inner", "sub"}
)

func hostileV3() map[string]string {
	return map[string]string{
		"zarr.json":             groupV3,
		"good/zarr.json":        goodV3,
		"good/c/0":              "xx",
		"zero/zarr.json":        strings.Replace(goodV3, `"chunk_shape":[2]`, `"chunk_shape":[0]`, 1),
		"keyenc/zarr.json":      strings.Replace(goodV3, `{"name":"default"}`, `{"name":"hashed"}`, 1),
		"trunc/zarr.json":       goodV3[:40],
		"badgrp/zarr.json":      `{"zarr_format":3,"node_type":"grp"}`,
		"badgrp/x/zarr.json":    goodV3,
		"ok/zarr.json":          groupV3,
		"ok/deep/zarr.json":     goodV3,
		`a\b/zarr.json`:         goodV3,
		longName + "/zarr.json": goodV3,
		// What zarrfs need not understand to name chunks passes.
		"newdtype/zarr.json": strings.Replace(goodV3, `"int16"`, `"float1024"`, 1),
	}
}

var (
	badV3  = []string{"badgrp", "badgrp/x", "keyenc", "trunc", "zero", `a\b`, longName}
	keptV3 = []string{"", "good", "newdtype", "ok", "ok/deep"}
)

func sortedSkipped(s *store.Store) []string {
	var out []string
	for _, k := range s.Skipped {
		out = append(out, k.Path)
	}
	sort.Strings(out)
	return out
}

func TestDiscoverSkipsBadNodes(t *testing.T) {
	zmeta := func(files map[string]string) string {
		var entries []string
		for k, v := range files {
			if zarr.IsMetadataName(path.Base(k)) {
				if !json(v) {
					v = fmt.Sprintf("%q", v) // a truncated document, stored as a string
				}
				entries = append(entries, fmt.Sprintf("%q:%s", k, v))
			}
		}
		sort.Strings(entries)
		return `{"zarr_consolidated_format":1,"metadata":{` + strings.Join(entries, ",") + `}}`
	}
	consolidated := hostileV2()
	consolidated[".zmetadata"] = zmeta(consolidated)
	// v3 consolidated metadata inlines every node's zarr.json in the root's.
	consolidatedV3 := hostileV3()
	var inline []string
	for k, v := range consolidatedV3 {
		if dir, ok := strings.CutSuffix(k, "/zarr.json"); ok && json(v) {
			inline = append(inline, fmt.Sprintf("%q:%s", dir, v))
		}
	}
	sort.Strings(inline)
	consolidatedV3["zarr.json"] = `{"zarr_format":3,"node_type":"group","consolidated_metadata":{"kind":"inline","metadata":{` + strings.Join(inline, ",") + `}}}`
	// A directory index may list names no store can hold on disk.
	listed := hostileV2()
	delete(listed, "sub/"+longName+"/.zarray")
	delete(listed, longName+"/.zarray")
	cases := []struct {
		name       string
		origin     *memOrigin
		source     string
		bad, kept  []string
		fixMention string // the fix of a malformed array mentions this
	}{
		{"v2 directory index", &memOrigin{files: listed, listing: true, extraDirs: map[string][]string{"": {longName, "..", "."}, "sub": {longName}}},
			// A walk does not enter a group left out, so its children are
			// absent without being named.
			"directory index", append(without(badV2, "badgrp/child", "good/-inner"), "..", "."), keptV2, "zarr-python"},
		{"v2 manifest", &memOrigin{files: hostileV2(), withManifest: true}, "manifest", badV2, keptV2, "zarr-python"},
		{"v2 consolidated", &memOrigin{files: consolidated}, "consolidated .zmetadata", badV2, keptV2, "consolidate_metadata"},
		{"v3 directory index", &memOrigin{files: hostileV3(), listing: true}, "directory index", without(badV3, "badgrp/x"), keptV3, "zarr-python"},
		{"v3 manifest", &memOrigin{files: hostileV3(), withManifest: true}, "manifest", badV3, keptV3, "zarr-python"},
		// A truncated document cannot be inlined in another.
		{"v3 consolidated", &memOrigin{files: consolidatedV3}, "consolidated zarr.json", without(badV3, "trunc"), keptV3, "consolidate_metadata"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := store.Discover(context.Background(), tc.origin)
			if err != nil {
				t.Fatalf("discovery failed: %v; want the good nodes mounted", err)
			}
			if s.Source != tc.source {
				t.Errorf("source %q, want %q", s.Source, tc.source)
			}
			want := slices.Clone(tc.bad)
			sort.Strings(want)
			if got := sortedSkipped(s); !slices.Equal(got, want) {
				t.Errorf("skipped\n %q\nwant\n %q", got, want)
			}
			for _, p := range tc.kept {
				if s.Tree.Lookup(p) == nil {
					t.Errorf("good node %q missing", p)
				}
			}
			for _, p := range append(slices.Clone(tc.bad), "badgrp/child", "badgrp/x") {
				if zarr.CheckNodePath(p) == nil && s.Tree.Lookup(p) != nil {
					t.Errorf("bad node %q mounted", p)
				}
			}
			// A document below a name that cannot be mounted is not even fetched.
			for _, k := range tc.origin.gets {
				if zarr.CheckNodePath(path.Dir(k)) != nil && path.Dir(k) != "." {
					t.Errorf("fetched %q", k)
				}
			}
			// Every name in the tree can be a file name.
			_ = s.Tree.Walk(func(n *zarr.Node) error {
				if err := zarr.CheckNodePath(n.Path); err != nil || len(n.Name) > zarr.MaxNameBytes {
					t.Errorf("tree holds %q: %v", n.Path, err)
				}
				return nil
			})
			for _, k := range s.Skipped {
				if k.Problem == "" || k.Fix == "" {
					t.Errorf("skipped %q without a problem or a fix: %+v", k.Path, k)
				}
				if strings.ContainsAny(k.Problem, "\n") {
					t.Errorf("problem of %q spans lines: %q", k.Path, k.Problem)
				}
				switch k.Path {
				case "zero":
					if !strings.Contains(k.Problem, "zero/") && !strings.Contains(k.Problem, `["zero"]`) || !strings.Contains(k.Fix, tc.fixMention) {
						t.Errorf("zero: problem %q fix %q; want the document named and a fix mentioning %q", k.Problem, k.Fix, tc.fixMention)
					}
				case "badgrp/child", "badgrp/x":
					if k.Inside != "badgrp" {
						t.Errorf("%s left out inside %q, want badgrp", k.Path, k.Inside)
					}
				case `back\slash`, `a\b`:
					if !strings.Contains(k.Problem, "backslash") || !strings.Contains(k.Fix, "rename") {
						t.Errorf("%s: problem %q fix %q", k.Path, k.Problem, k.Fix)
					}
				case longName:
					if !strings.Contains(k.Problem, "256 bytes") {
						t.Errorf("long name: problem %q", k.Problem)
					}
				}
			}
		})
	}
}

func without(list []string, drop ...string) []string {
	return slices.DeleteFunc(slices.Clone(list), func(s string) bool { return slices.Contains(drop, s) })
}

func json(s string) bool {
	return strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") && strings.Count(s, "{") == strings.Count(s, "}")
}

func TestDiscoverBadRootFails(t *testing.T) {
	cases := []struct {
		name   string
		origin *memOrigin
		msg    string
	}{
		{"truncated .zmetadata", &memOrigin{files: map[string]string{".zmetadata": `{"zarr_consolidated_format":1,"metadata":{`}}, ".zmetadata: is not valid JSON"},
		{"root .zgroup in .zmetadata", &memOrigin{files: map[string]string{".zmetadata": `{"zarr_consolidated_format":1,"metadata":{".zgroup":{"zarr_format":7}}}`}}, `metadata[".zgroup"]: zarr_format is 7`},
		{"root zarr.json", &memOrigin{files: map[string]string{"zarr.json": `{"zarr_format":3,"node_type":"array","shape":[-1]}`}, listing: true}, "zarr.json"},
		{"root .zgroup", &memOrigin{files: map[string]string{".zgroup": `[]`}, listing: true}, ".zgroup: is not a JSON object"},
		{"root .zarray", &memOrigin{files: map[string]string{".zarray": strings.Replace(goodV2, "[2,2]", "[0,2]", 1)}}, "chunks [0] is 0"},
		{"root in a manifest", &memOrigin{files: map[string]string{".zgroup": `{`, "a/.zarray": goodV2}, withManifest: true}, ".zgroup: is not valid JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := store.Discover(context.Background(), tc.origin)
			if !errors.Is(err, store.ErrBadRoot) {
				t.Fatalf("error %v, want ErrBadRoot", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.msg) || !strings.Contains(msg, "to fix:") || strings.Contains(msg, "\n") {
				t.Errorf("message %q: want one line naming %q and a fix", msg, tc.msg)
			}
		})
	}
}

// An origin that fails to serve a node's document is an outage, not a
// malformed node: discovery fails rather than mounting the store without it.
func TestDiscoverFetchFailureIsNotASkip(t *testing.T) {
	for _, o := range []*memOrigin{
		{files: hostileV2(), listing: true, fail: map[string]error{"good/.zarray": &remote.StatusError{Code: 503}}},
		{files: hostileV2(), withManifest: true, fail: map[string]error{"good/.zarray": &remote.StatusError{Code: 503}}},
	} {
		s, err := store.Discover(context.Background(), o)
		var se *remote.StatusError
		if !errors.As(err, &se) {
			t.Errorf("manifest %v: got store %v, error %v; want the 503", o.withManifest, s != nil, err)
		}
	}
}

func TestWarnSkipped(t *testing.T) {
	s, err := store.Discover(context.Background(), &memOrigin{files: hostileV2(), withManifest: true})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	store.WarnSkipped(log, s.Skipped, nil)
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	// One line per node left out for itself; badgrp/child is counted in badgrp's.
	if len(lines) != len(badV2)-1 {
		t.Errorf("%d warnings, want %d:\n%s", len(lines), len(badV2)-1, out)
	}
	for _, want := range []string{"node=zero", "level=WARN", "fix=", "node=badgrp", "also_left_out=1", `chunks [0] is 0`} {
		if !strings.Contains(out, want) {
			t.Errorf("warnings lack %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "node=badgrp/child") {
		t.Errorf("a node left out with its group is logged on its own:\n%s", out)
	}
	// A refresh that finds the same problems says nothing; a new one, one line.
	buf.Reset()
	store.WarnSkipped(log, s.Skipped, s.Skipped)
	if buf.Len() != 0 {
		t.Errorf("known problems logged again:\n%s", buf.String())
	}
	more := append(slices.Clone(s.Skipped), store.Skipped{Path: "new", Problem: "p", Fix: "f"})
	store.WarnSkipped(log, more, s.Skipped)
	if got := strings.Count(buf.String(), "\n"); got != 1 || !strings.Contains(buf.String(), "node=new") {
		t.Errorf("after a refresh: %q, want one line about the new node", buf.String())
	}
}

var _ store.Origin = (*memOrigin)(nil)
var _ = fs.ErrNotExist
