package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// writeEntryFile writes an entry file of data for rng of key (zero: the
// whole object) the way a fetch does.
func writeEntryFile(t *testing.T, path string, ns [32]byte, key string, rng span, version string, data []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := &entryWriter{f: f, rng: rng, off: headerLenOf(rng, len(key))}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.finish(ns, key, version); err != nil {
		t.Fatal(err)
	}
}

func TestEntryFormatDetectsEveryHeaderByte(t *testing.T) {
	data := bytes.Repeat([]byte("zarr chunk "), 100)
	tests := []struct {
		name string
		rng  span
	}{
		{"whole object", span{}},
		{"range", span{off: 1 << 20, n: int64(len(data))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkEntryFormat(t, tt.rng, data) })
	}
}

func checkEntryFormat(t *testing.T, rng span, data []byte) {
	ns := sha256.Sum256([]byte(testNamespace))
	const key, version = "arr/c/0/1", `"etag-1"`
	path := filepath.Join(t.TempDir(), "entry")
	writeEntryFile(t, path, ns, key, rng, version, data)
	pristine, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hdrLen := headerLenOf(rng, len(key))
	e := &entry{key: key, rng: rng, version: version, dataLen: int64(len(data))}
	check := func() error {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		_, err = verifyEntry(f, e, ns)
		return err
	}
	if err := check(); err != nil {
		t.Fatalf("a sound entry fails verification: %v", err)
	}
	if got := int64(len(pristine)); got != hdrLen+int64(len(data)) {
		t.Fatalf("entry file of %d bytes, want %d", got, hdrLen+int64(len(data)))
	}
	// What New's scan reads back is what was written.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	h, n, err := readHeader(f, int64(len(pristine)))
	f.Close()
	if err != nil || n != hdrLen || h.key != key || h.version != version || h.rng != rng || h.dataLen != int64(len(data)) {
		t.Fatalf("readHeader = %+v, %d, %v; want %s of %d bytes after a %d-byte header", h, n, err, rng.describe(key), len(data), hdrLen)
	}
	// Every single-bit error, header and data, is caught.
	for off := range pristine {
		damaged := bytes.Clone(pristine)
		damaged[off] ^= 0x10
		if err := os.WriteFile(path, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := check(); !errors.Is(err, errCorrupt) {
			t.Fatalf("flipping a bit of byte %d (header is %d bytes): verification = %v", off, hdrLen, err)
		}
	}
	// And so is every truncation and an extension.
	for _, n := range []int{0, 1, 63, 64, 80, int(hdrLen) - 1, int(hdrLen), len(pristine) - 1, len(pristine) + 1} {
		b := append(bytes.Clone(pristine), 0)[:n]
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := check(); !errors.Is(err, errCorrupt) {
			t.Fatalf("file cut to %d of %d bytes: verification = %v", n, len(pristine), err)
		}
	}
	// A sound entry of another key, range, version or origin is not this
	// entry.
	otherRange := span{off: 0, n: int64(len(data))} // a range for a whole entry...
	if rng.ranged() {
		otherRange = span{off: rng.off + rng.n, n: rng.n} // ...another for a range
	}
	others := []struct {
		name    string
		ns      [32]byte
		key     string
		rng     span
		version string
	}{
		{"other key", ns, "arr/c/0/2", rng, version},
		{"other range", ns, key, otherRange, version},
		{"other version", ns, key, rng, `"etag-2"`},
		{"other origin", sha256.Sum256([]byte("https://elsewhere/")), key, rng, version},
	}
	if rng.ranged() {
		others = append(others, struct {
			name    string
			ns      [32]byte
			key     string
			rng     span
			version string
		}{"the whole object", ns, key, span{}, version})
	}
	for _, o := range others {
		writeEntryFile(t, path, o.ns, o.key, o.rng, o.version, data)
		if err := check(); !errors.Is(err, errCorrupt) {
			t.Fatalf("%s: verification = %v", o.name, err)
		}
	}
}

// target names an entry in tests: a whole object (rng zero) or a range of one.
type target struct {
	key string
	rng span
}

func (tg target) String() string { return tg.rng.describe(tg.key) }

func (tg target) headerLen() int64 { return headerLenOf(tg.rng, len(tg.key)) }

// pathOfTarget is where the entry of tg lies.
func (c *Cache) pathOfTarget(tg target) string {
	id, _ := entryIDOf(c.nsHash, tg.key, tg.rng)
	return c.entryPath(id)
}

// damage is one way an entry file can be hurt: by a crash, the disk, or a
// person.
type damage struct {
	name string
	// apply damages the entry of victim (and of partner, for a swap).
	apply func(t *testing.T, c *Cache, victim, partner target)
	// damaged is how many entries it damages; inProcess and acrossRestart
	// are how many of them the cache counts as corrupt in each mode (an
	// entry deleted behind its back is only noticed while running).
	damaged, inProcess, acrossRestart int
}

func flipByte(at func(size, hdr int64) int64) func(*testing.T, *Cache, target, target) {
	return func(t *testing.T, c *Cache, victim, _ target) {
		t.Helper()
		path := c.pathOfTarget(victim)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[at(int64(len(b)), victim.headerLen())] ^= 0xff
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func truncateTo(at func(size, hdr int64) int64) func(*testing.T, *Cache, target, target) {
	return func(t *testing.T, c *Cache, victim, _ target) {
		t.Helper()
		path := c.pathOfTarget(victim)
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, at(info.Size(), victim.headerLen())); err != nil {
			t.Fatal(err)
		}
	}
}

var damages = []damage{
	{"flip a byte of the magic", flipByte(func(_, _ int64) int64 { return 0 }), 1, 1, 1},
	{"flip a byte of the data length", flipByte(func(_, _ int64) int64 { return 50 }), 1, 1, 1},
	{"flip a byte after the fixed header (key, or offset of a range)", flipByte(func(_, _ int64) int64 { return fixedHeaderLen + 1 }), 1, 1, 1},
	{"flip the last byte of the key", flipByte(func(_, hdr int64) int64 { return hdr - 4 - maxVersionLen - 1 }), 1, 1, 1},
	{"flip a byte of the version", flipByte(func(_, hdr int64) int64 { return hdr - 4 - maxVersionLen + 2 }), 1, 1, 1},
	{"flip a byte of the header checksum", flipByte(func(_, hdr int64) int64 { return hdr - 1 }), 1, 1, 1},
	{"flip the first byte of data", flipByte(func(_, hdr int64) int64 { return hdr }), 1, 1, 1},
	{"flip a byte in the middle of the data", flipByte(func(size, hdr int64) int64 { return (size + hdr) / 2 }), 1, 1, 1},
	{"flip the last byte of data", flipByte(func(size, _ int64) int64 { return size - 1 }), 1, 1, 1},
	{"truncate to 0", truncateTo(func(_, _ int64) int64 { return 0 }), 1, 1, 1},
	{"truncate mid-header", truncateTo(func(_, hdr int64) int64 { return hdr / 2 }), 1, 1, 1},
	{"truncate mid-data", truncateTo(func(size, hdr int64) int64 { return (size + hdr) / 2 }), 1, 1, 1},
	{"zeros in place of the entry (torn by a power loss)", func(t *testing.T, c *Cache, victim, _ target) {
		path := c.pathOfTarget(victim)
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, make([]byte, info.Size()), 0o600); err != nil {
			t.Fatal(err)
		}
	}, 1, 1, 1},
	{"extend by a byte", func(t *testing.T, c *Cache, victim, _ target) {
		f, err := os.OpenFile(c.pathOfTarget(victim), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte{0})
		f.Close()
	}, 1, 1, 1},
	{"swap two entries", func(t *testing.T, c *Cache, victim, partner target) {
		a, b := c.pathOfTarget(victim), c.pathOfTarget(partner)
		tmp := a + ".swap"
		for _, mv := range [][2]string{{a, tmp}, {b, a}, {tmp, b}} {
			if err := os.Rename(mv[0], mv[1]); err != nil {
				t.Fatal(err)
			}
		}
	}, 2, 2, 2},
	{"entry deleted", func(t *testing.T, c *Cache, victim, _ target) {
		if err := os.Remove(c.pathOfTarget(victim)); err != nil {
			t.Fatal(err)
		}
	}, 1, 1, 0},
}

// TestCorruptionMatrix damages entries in every way of damages, while the
// cache runs and across a restart, and checks that every read is correct,
// that each damaged entry is fetched again and counted, and that the sound
// entries are still used.
func TestCorruptionMatrix(t *testing.T) {
	keys := []string{"a/0.0", "a/0.1", "a/1.0", "a/1.1"}
	sizes := []int{1000, 3000, 1, 0}
	const victim, partner = "a/0.1", "a/1.0"
	for _, restart := range []bool{false, true} {
		mode := "in process"
		if restart {
			mode = "across a restart"
		}
		for _, d := range damages {
			t.Run(mode+"/"+d.name, func(t *testing.T) {
				src := newMemSource()
				data := map[string][]byte{}
				for i, k := range keys {
					data[k] = src.put(k, sizes[i])
				}
				opts := Options{Dir: t.TempDir(), MaxBytes: 100_000}
				c := newCacheIn(t, opts, src)
				for _, k := range keys {
					openAndRead(t, c, k, data[k])
				}
				wantCorrupt := d.inProcess
				if restart {
					c.Close()
					d.apply(t, c, target{key: victim}, target{key: partner})
					c = newCacheIn(t, opts, src)
					wantCorrupt = d.acrossRestart
				} else {
					d.apply(t, c, target{key: victim}, target{key: partner})
				}

				for _, k := range keys {
					openAndRead(t, c, k, data[k])
				}
				for _, k := range keys {
					hurt := k == victim || (d.damaged == 2 && k == partner)
					wantCalls, wantCond := 1, 0 // no request for a sound entry...
					switch {
					case hurt:
						wantCalls = 2 // ...one fetch for a damaged one, never a revalidation first
					case restart:
						wantCalls, wantCond = 2, 1 // ...but a revalidation after a restart
					}
					if got, cond := src.callsFor(k), src.condCallsFor(k); got != wantCalls || cond != wantCond {
						t.Errorf("%s (damaged %v): %d requests, %d conditional; want %d, %d", k, hurt, got, cond, wantCalls, wantCond)
					}
				}
				s := c.Stats()
				if s.CorruptEntries != int64(wantCorrupt) {
					t.Errorf("CorruptEntries = %d, want %d", s.CorruptEntries, wantCorrupt)
				}
				if s.Entries != len(keys) {
					t.Errorf("%d entries, want all %d back in place", s.Entries, len(keys))
				}
				checkBudget(t, c, opts.MaxBytes, "after the reads")

				// The refetched entries are sound: a new cache uses them all.
				c.Close()
				c = newCacheIn(t, opts, src)
				for _, k := range keys {
					r, err := c.OpenVersion(context.Background(), k, src.objects[k].version)
					if err != nil {
						t.Fatal(err)
					}
					if got := readAll(t, r); !bytes.Equal(got, data[k]) {
						t.Fatalf("%s: wrong data after the repair", k)
					}
					r.Close()
				}
				if s := c.Stats(); s.Hits != int64(len(keys)) || s.Reused != int64(len(keys)) || s.CorruptEntries != 0 {
					t.Errorf("after the repair: %+v, want every entry reused and none corrupt", s)
				}
			})
		}
	}
}

func TestNewCleansLeftovers(t *testing.T) {
	dir := t.TempDir()
	src := newMemSource()
	want := src.put("a/0.0", 64)
	opts := Options{Dir: dir, MaxBytes: 100_000}
	c := newCacheIn(t, opts, src)
	openAndRead(t, c, "a/0.0", want)
	c.Close()

	ours := []string{ // left by a crash, or by an older version of zarrfs
		filepath.Join(dir, tmpSubdir, "fetch-123"),
		filepath.Join(dir, tmpSubdir, "fetch-456"),
		filepath.Join(dir, entriesSubdir, "ab", "not-an-entry"),
		filepath.Join(dir, entriesSubdir, "ab", "ab"+string(bytes.Repeat([]byte("0"), 62))), // an entry name, raw data
		filepath.Join(dir, entriesSubdir, "junk-dir", "x"),
		filepath.Join(dir, entriesSubdir, "stray-file"),
	}
	notOurs := []string{filepath.Join(dir, "keep.txt"), filepath.Join(dir, "other", "x")}
	for _, p := range append(ours, notOurs...) {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("stale"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	c = newCacheIn(t, opts, src)
	for _, p := range ours {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("New left %s: %v", p, err)
		}
	}
	for _, p := range notOurs {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("New touched a file that is not the cache's: %v", err)
		}
	}
	if u := onDisk(t, c); u.entryFiles != 1 || u.tmpFiles != 0 {
		t.Fatalf("on disk %+v, want the one sound entry", u)
	}
	if s := c.Stats(); s.Recovered != 1 || s.CorruptEntries != 2 {
		t.Fatalf("stats %+v, want 1 entry recovered and the 2 misplaced files in entry directories counted corrupt", s)
	}
	openAndRead(t, c, "a/0.0", want)
	if n := src.callsFor("a/0.0"); n != 2 || src.condCallsFor("a/0.0") != 1 {
		t.Fatalf("%d requests, want the first fetch and one revalidation", n)
	}
}
