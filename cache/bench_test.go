package cache

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	lru "github.com/hashicorp/golang-lru/v2"
)

// BenchmarkEpochHitRate reads a dataset twice the cache's budget (400
// objects of 64 KiB, a budget of 200 entries) for 3 epochs, each in a new
// shuffled order, through a real Cache on disk, and reports the hit rate of
// epochs 2 and 3 for the default policy and for plain LRU. The 2Q cache of
// golang-lru/v2 (counted in entries, no disk) is replayed on the same orders
// for comparison. The ideal is 50%: half the dataset stays cached.
//
//	go test -run '^$' -bench EpochHitRate -benchtime 5x ./cache/
func BenchmarkEpochHitRate(b *testing.B) {
	const (
		objects = 400
		size    = 64 << 10
		budget  = 200 // entries
		epochs  = 3
	)
	keys := make([]string, objects)
	for i := range keys {
		keys[i] = fmt.Sprintf("x/%d.0", i)
	}
	maxBytes := budget * entrySize(keys[objects-1], size)
	for _, pol := range testPolicies {
		b.Run("policy="+pol.name, func(b *testing.B) {
			src := newMemSource()
			for _, k := range keys {
				src.put(k, size)
			}
			var rates [epochs]float64
			iter := uint64(0)
			for b.Loop() {
				iter++
				c, err := New(Options{Dir: b.TempDir(), MaxBytes: maxBytes, Namespace: testNamespace, newPolicy: pol.new}, src)
				if err != nil {
					b.Fatal(err)
				}
				rng := rand.New(rand.NewPCG(iter, 42))
				buf := make([]byte, size)
				for e := range epochs {
					before := c.Stats()
					for _, i := range rng.Perm(objects) {
						r, err := c.Open(context.Background(), keys[i])
						if err != nil {
							b.Fatal(err)
						}
						if _, err := r.ReadAt(buf, 0); err != nil && err != io.EOF {
							b.Fatal(err)
						}
						r.Close()
					}
					after := c.Stats()
					rates[e] += float64(after.Hits-before.Hits) / objects
				}
				c.Close()
			}
			b.ReportMetric(100*rates[1]/float64(iter), "%hit-epoch2")
			b.ReportMetric(100*rates[2]/float64(iter), "%hit-epoch3")
		})
	}
	b.Run("policy=golang-lru-2q-sim", func(b *testing.B) {
		var rates [epochs]float64
		iter := uint64(0)
		for b.Loop() {
			iter++
			c, err := lru.New2Q[int, struct{}](budget)
			if err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(iter, 42))
			for e := range epochs {
				hits := 0
				for _, i := range rng.Perm(objects) {
					if _, ok := c.Get(i); ok {
						hits++
					} else {
						c.Add(i, struct{}{})
					}
				}
				rates[e] += float64(hits) / objects
			}
		}
		b.ReportMetric(100*rates[1]/float64(iter), "%hit-epoch2")
		b.ReportMetric(100*rates[2]/float64(iter), "%hit-epoch3")
	})
}

// BenchmarkRecover measures New on a directory of entries left by an
// earlier run: the header scan that rebuilds the index.
//
//	go test -run '^$' -bench Recover -benchtime 5x ./cache/
func BenchmarkRecover(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			ns := sha256.Sum256([]byte(testNamespace))
			data := make([]byte, 1024)
			for i := range n {
				key := fmt.Sprintf("arr/c/%d/%d", i/1000, i%1000)
				id, _ := entryID(ns, key)
				path := filepath.Join(dir, entriesSubdir, id[:2], id)
				if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
					b.Fatal(err)
				}
				writeEntryFileB(b, path, ns, key, `"v1"`, data)
			}
			src := newMemSource()
			for b.Loop() {
				c, err := New(Options{Dir: dir, MaxBytes: 1 << 40, Namespace: testNamespace}, src)
				if err != nil {
					b.Fatal(err)
				}
				if s := c.Stats(); s.Entries != n {
					b.Fatalf("%d entries recovered, want %d", s.Entries, n)
				}
				c.Close()
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(n), "µs/entry")
		})
	}
}

func writeEntryFileB(b *testing.B, path string, ns [32]byte, key, version string, data []byte) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	w := &entryWriter{f: f, off: headerLen(len(key))}
	if _, err := w.Write(data); err != nil {
		b.Fatal(err)
	}
	if err := w.finish(ns, key, version); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkOpenHit measures an Open served from disk, which verifies the
// whole entry (length and CRC32C), plus one read of it all.
//
//	go test -run '^$' -bench OpenHit ./cache/
func BenchmarkOpenHit(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20, 16 << 20} {
		b.Run(fmt.Sprintf("size=%dKiB", size>>10), func(b *testing.B) {
			src := newMemSource()
			src.put("k", size)
			c, err := New(Options{Dir: b.TempDir(), MaxBytes: 1 << 30, Namespace: testNamespace}, src)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, size)
			b.SetBytes(int64(size))
			for b.Loop() {
				r, err := c.Open(context.Background(), "k")
				if err != nil {
					b.Fatal(err)
				}
				if _, err := r.ReadAt(buf, 0); err != nil && err != io.EOF {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
}
