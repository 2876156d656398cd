package integration

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/internal/storetest"
)

// A sharded v3 store big enough for ranged reads: array "temp" of int32, shape
// [2048, 2048], shards of [1024, 1024] holding 64 gzip'ed inner chunks of [128, 128]
// (written in a shuffled order, some left empty), crc32c index at the end. Each shard is
// a few MB, so zarrfs reads it by blocks of merged inner chunks.
const (
	shardedSide  = 2048
	shardedShard = 1024
	shardedInner = 128
)

func shardedArrayMeta() map[string]any {
	return storetest.ShardedArray{
		Shape: []int{shardedSide, shardedSide}, Shard: []int{shardedShard, shardedShard},
		Inner: []int{shardedInner, shardedInner}, DataType: "int32", Fill: -1,
		Attributes: map[string]any{"units": "K"},
		InnerCodecs: []any{
			map[string]any{"name": "bytes", "configuration": map[string]any{"endian": "little"}},
			map[string]any{"name": "gzip", "configuration": map[string]any{"level": 1}},
		},
	}.Meta()
}

// writeShardedStore writes the store under dir/sharded.zarr and returns its path.
func writeShardedStore(t testing.TB, dir string) string {
	t.Helper()
	store := filepath.Join(dir, "sharded.zarr")
	put := func(rel string, data []byte) {
		p := filepath.Join(store, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	meta, err := json.Marshal(shardedArrayMeta())
	if err != nil {
		t.Fatal(err)
	}
	put("zarr.json", []byte(`{"zarr_format": 3, "node_type": "group", "attributes": {}}`))
	put("temp/zarr.json", meta)
	rng := rand.New(rand.NewPCG(11, 12))
	const inners = shardedShard / shardedInner
	raw := make([]byte, shardedInner*shardedInner*4)
	for si := range shardedSide / shardedShard {
		for sj := range shardedSide / shardedShard {
			shard := storetest.EncodeShard(rng.Perm(inners*inners), func(k int) []byte {
				if k%17 == 3 { // not stored: reads as fill_value
					return nil
				}
				for e := 0; e < len(raw); e += 4 {
					binary.LittleEndian.PutUint32(raw[e:], uint32(250+rng.IntN(1<<20)))
				}
				var z bytes.Buffer
				zw, _ := gzip.NewWriterLevel(&z, 1)
				zw.Write(raw)
				zw.Close()
				return z.Bytes()
			})
			put(fmt.Sprintf("temp/c/%d/%d", si, sj), shard)
		}
	}
	return store
}

// TestShardsByRanges: a sharded store read through the mount by zarrita equals the
// directory, from a static origin (shard sizes learned by one suffix request each) and from
// `zarrfs serve` (manifest); and reading one inner chunk of a shard through the mount fetches
// its block and the index, not the shard.
func TestShardsByRanges(t *testing.T) {
	t.Parallel() // see parallelTests in main_test.go
	fuseReady.require(t)
	dir := t.TempDir()
	store := writeShardedStore(t, dir)
	shardPath := filepath.Join(store, "temp", "c", "1", "0")
	shard, err := os.ReadFile(shardPath)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("one inner chunk", func(t *testing.T) {
		o := newOrigin(t, dir)
		m := mount(t, o.URL("sharded.zarr"))
		f, err := os.Open(filepath.Join(m.Dir, "temp", "c", "1", "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err != nil || fi.Size() != int64(len(shard)) {
			t.Fatalf("stat through the mount: %v, size %v, want %d", err, fi, len(shard))
		}
		// What a zarr reader does: the index, then the inner chunks it needs.
		inners := shardedShard / shardedInner
		idxLen := inners*inners*16 + 4
		index := make([]byte, idxLen)
		if _, err := f.ReadAt(index, int64(len(shard)-idxLen)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(index, shard[len(shard)-idxLen:]) {
			t.Fatal("the index read through the mount differs")
		}
		k := 21 // stored (k%17 != 3)
		off := int64(binary.LittleEndian.Uint64(index[16*k:]))
		n := int64(binary.LittleEndian.Uint64(index[16*k+8:]))
		got := make([]byte, n)
		if _, err := f.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, shard[off:off+n]) {
			t.Fatal("inner chunk 21 read through the mount differs")
		}
		o.settle(10 * time.Second)
		var moved int64
		for _, r := range o.requests() {
			if r.Path == "/sharded.zarr/temp/c/1/0" {
				moved += r.Bytes
			}
		}
		t.Logf("shard of %d bytes: reading its index and one %d-byte inner chunk moved %d bytes", len(shard), n, moved)
		// One block of merged inner chunks (at most 256 KiB, widened to whole pages) and the
		// index with the page before it.
		if limit := int64(256<<10+2*4096) + int64(idxLen+4096); moved < n || moved > limit {
			t.Errorf("moved %d bytes of the shard, want at most %d (its block and the index)\n%s", moved, limit, o.summary(10))
		}
	})

	t.Run("prefetch", func(t *testing.T) {
		// `zarrfs prefetch` fetches every shard as its blocks: reading them all afterwards
		// costs no request, and the progress adds up.
		o := newOrigin(t, dir)
		m := mount(t, o.URL("sharded.zarr"))
		out, err := runZarrfs(t, "prefetch", "--wait", m.Dir)
		if err != nil {
			t.Fatalf("zarrfs prefetch --wait: %v\n%s", err, out)
		}
		// Shards count as their blocks: done must reach the total, not pass it.
		if m := regexp.MustCompile(`done: (\d+)/(\d+) chunks`).FindStringSubmatch(out); m == nil || m[1] != m[2] {
			t.Errorf("prefetch output does not report the end with every piece done:\n%s", out)
		}
		o.settle(10 * time.Second)
		before := len(o.requests())
		for si := range shardedSide / shardedShard {
			for sj := range shardedSide / shardedShard {
				rel := fmt.Sprintf("temp/c/%d/%d", si, sj)
				want, err := os.ReadFile(filepath.Join(store, filepath.FromSlash(rel)))
				if err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(filepath.Join(m.Dir, filepath.FromSlash(rel)))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%s: %d bytes through the mount differ from the origin's %d", rel, len(got), len(want))
				}
			}
		}
		if reqs := o.requests()[before:]; len(reqs) > 0 {
			t.Errorf("reading prefetched shards made %d requests:\n%s", len(reqs), o.summary(len(reqs)))
		}
	})

	t.Run("zarrita/static", func(t *testing.T) {
		nodeReady.require(t)
		m := mount(t, newOrigin(t, dir).URL("sharded.zarr"))
		out, err := runCompareV3(t, m.Dir, store)
		if err != nil {
			t.Fatalf("compare_v3.mjs: %v\n%s", err, out)
		}
		if s := parseSummary(t, out); s.Compared != 1 || s.Problems != 0 {
			t.Fatalf("compared %d arrays with %d problems, want 1 and 0:\n%s", s.Compared, s.Problems, out)
		}
	})

	t.Run("zarrita/serve", func(t *testing.T) {
		nodeReady.require(t)
		s := startServe(t, dir, "")
		m := mountEnv(t, envWithout("ZARRFS_TOKEN"), s.storeURL(t, "sharded"), "--pin", s.pin, "--token-file", tokenFile(t, s.token))
		out, err := runCompareV3(t, m.Dir, store)
		if err != nil {
			t.Fatalf("compare_v3.mjs: %v\n%s", err, out)
		}
		if s := parseSummary(t, out); s.Compared != 1 || s.Problems != 0 {
			t.Fatalf("compared %d arrays with %d problems, want 1 and 0:\n%s", s.Compared, s.Problems, out)
		}
		stats, err := runZarrfs(t, "stats", "--json", m.Dir)
		if err != nil {
			t.Fatalf("zarrfs stats: %v\n%s", err, stats)
		}
		if !strings.Contains(stats, `"ranged"`) || strings.Contains(stats, `"objects":0,`) {
			t.Errorf("stats show no ranged reads:\n%s", stats)
		}
	})
}
