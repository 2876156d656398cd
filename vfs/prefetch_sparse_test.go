package vfs

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/wire"
	"github.com/zarrfs/zarrfs/vfs/store"
	"github.com/zarrfs/zarrfs/zarr"
)

// TestPrefetchVastSparseArray: an explicit prefetch of an array whose grid
// has 9e18 chunks (valid zarr), of which the manifest lists three, counts
// and hands out those three, in C order, at once — rather than walking
// every coordinate of the grid, which would never end.
func TestPrefetchVastSparseArray(t *testing.T) {
	tree := zarr.NewTree()
	for p, shape := range map[string][]int64{"v": {9_000_000_000_000_000_000}, "w": {3_000_000_000, 3_000_000_000}} {
		arr := &zarr.Array{ZarrFormat: 2, Shape: shape, ChunkShape: make([]int64, len(shape)), DataType: "<i2", KeyEncoding: zarr.KeyEncoding{Separator: "."}}
		for i := range arr.ChunkShape {
			arr.ChunkShape[i] = 1
		}
		if _, err := tree.Add(p, zarr.KindArray, arr, ".zarray"); err != nil {
			t.Fatal(err)
		}
	}
	keys := []string{".zgroup", "v/.zarray", "v/17", "v/3", "v/5", "v/x", "w/.zarray", "w/0.2999999999", "w/2.1"}
	var raw bytes.Buffer
	enc := wire.NewEncoder(&raw)
	if err := enc.WriteHeader(); err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		if err := enc.Add(k, int64(10+i), `"v"`); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.End(); err != nil {
		t.Fatal(err)
	}
	zw, _ := zstd.NewWriter(nil)
	man, err := remote.ReadManifest(bytes.NewReader(zw.EncodeAll(raw.Bytes(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	st := &store.Store{Tree: tree, Format: 2, Manifest: man}
	f := &FS{}

	type result struct {
		keys, bytes int64
		fed         []string
	}
	done := make(chan result, 1)
	go func() {
		spans, err := resolveTargets(st, nil)
		if err != nil {
			t.Error(err)
			done <- result{}
			return
		}
		var r result
		r.keys, r.bytes, _ = f.estimate(st, spans)
		next := spanFeed(st, spans, nil)
		for {
			w, ok := next()
			if !ok {
				break
			}
			r.fed = append(r.fed, w.Key)
		}
		done <- r
	}()
	select {
	case r := <-done:
		want := []string{"v/3", "v/5", "v/17", "w/0.2999999999", "w/2.1"}
		if r.keys != 5 || r.bytes != 13+14+12+17+18 || !slices.Equal(r.fed, want) {
			t.Errorf("estimate %d keys %d bytes, fed %q; want 5, %d, %q", r.keys, r.bytes, r.fed, 13+14+12+17+18, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("prefetch of a vast, sparse array still walking its grid after 20s")
	}
}
