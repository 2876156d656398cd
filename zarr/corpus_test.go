package zarr

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var writeFuzzCorpus = flag.Bool("write-fuzz-corpus", false, "write the fixture documents into testdata/fuzz as seed corpora")

// TestWriteFuzzCorpus regenerates the committed fixture seeds:
//
//	go test -run TestWriteFuzzCorpus ./zarr/ -args -write-fuzz-corpus
func TestWriteFuzzCorpus(t *testing.T) {
	if !*writeFuzzCorpus {
		t.Skip("run with -args -write-fuzz-corpus to regenerate testdata/fuzz seeds")
	}
	seen := map[string]bool{}
	write := func(target, name string, values ...[]byte) {
		var b strings.Builder
		b.WriteString("go test fuzz v1\n")
		for _, v := range values {
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		}
		if seen[target+b.String()] {
			return
		}
		seen[target+b.String()] = true
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		name = "fixture-" + strings.NewReplacer("/", "_", " ", "_", "..", "_").Replace(name)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, store := range fixtureStores {
		root := fixtureDir(t, store)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(filepath.Join(fixtureRoot), path)
			rel = filepath.ToSlash(rel)
			switch d.Name() {
			case ZArray:
				// zarr-python's fixture repeats each array under 7 compressors
				// ("<array>/<compressor>/.zarray"); one compressor is seed enough.
				if parts := strings.Split(rel, "/"); store == fixtureStores[0] && len(parts) == 5 && parts[3] != "0" {
					return nil
				}
				data, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				write("FuzzParseZArray", rel, data)
			case ZMetadata:
				data, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				write("FuzzTreeFromZMetadata", rel, data)
			case ZarrJSON:
				data, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				write("FuzzParseV3Node", rel, data)
				write("FuzzTreeFromV3Consolidated", rel, data)
				_, a, err := ParseV3Node(data)
				if err != nil || a == nil || a.Shard == nil {
					return err
				}
				// One shard per sharded array is seed enough.
				return writeShardSeed(filepath.Dir(path), rel, data, a, write)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func writeShardSeed(arrayDir, rel string, meta []byte, a *Array, write func(string, string, ...[]byte)) error {
	return filepath.WalkDir(arrayDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == ZarrJSON {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		size := a.Shard.IndexSize(a)
		if size < 0 || int64(len(data)) < size {
			return fmt.Errorf("%s: shard smaller than its index", path)
		}
		off := a.Shard.IndexOffset(a, int64(len(data)))
		write("FuzzParseShardIndex", rel, meta, data[off:off+size])
		return fs.SkipAll
	})
}
