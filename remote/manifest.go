package remote

// The client's in-memory manifest: every key of a store (or of a prefix of
// it) with its size and version, decoded from the wire format of package
// wire, so that the filesystem knows exact sizes and which keys are absent
// without a request per lookup, and can list chunk directories.

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/zarrfs/zarrfs/remote/wire"
)

// ErrNoManifest: the origin serves no zarrfs manifest (404, 405, 403, 410,
// 501, or content in another format, or a format version this zarrfs does
// not read). Fall back to consolidated metadata or listings. It is
// wire.ErrNoManifest, which the decoder returns.
var ErrNoManifest = wire.ErrNoManifest

// ErrBadManifest: the manifest stream is malformed (a bug, or a proxy that
// altered it). Unlike ErrNoManifest this is not a normal condition. It is
// wire.ErrBadManifest.
var ErrBadManifest = wire.ErrBadManifest

// ManifestServerError: the server reported a failure inside the manifest
// stream (for example a directory it could not read). The listing is
// incomplete and must not be used.
type ManifestServerError = wire.ServerError

// Manifest is a read-only, compact, sorted list of a store's keys with
// their sizes and versions. Each key costs 16 bytes plus its text and its
// version's text: keys and versions live in two string arenas indexed by
// end offsets, and lookups are binary searches (a million keys: about
// 45 MB). Safe for concurrent use.
type Manifest struct {
	keys     arena
	keyEnds  []uint32 // key i ends at keyEnds[i] in keys (see arena.get)
	sizes    []int64
	versions arena
	verEnds  []uint32
	etag     string // the manifest's own ETag
}

// arenaChunk is the size of one arena chunk. Strings never straddle
// chunks, so an arena grows without ever copying what it holds (a single
// growing buffer would allocate several times its final size on the way,
// and hold two copies at once).
const arenaChunk = 1 << 20

// arena is a sequence of strings in fixed-size chunks, addressed by global
// offsets: offset o is byte o%arenaChunk of chunk o/arenaChunk.
type arena struct {
	chunks []string        // full chunks
	cur    strings.Builder // the chunk being filled
	size   uint64          // global offset of the next byte
}

// add appends s and returns its end offset; a string that does not fit
// in the current chunk starts the next one.
func (a *arena) add(s []byte) uint64 {
	if a.cur.Cap() == 0 {
		a.cur.Grow(arenaChunk)
	}
	if a.cur.Len()+len(s) > arenaChunk {
		a.chunks = append(a.chunks, a.cur.String())
		a.size = uint64(len(a.chunks)) * arenaChunk
		a.cur = strings.Builder{}
		a.cur.Grow(arenaChunk)
	}
	a.cur.Write(s)
	a.size += uint64(len(s))
	return a.size
}

// finish closes the current chunk.
func (a *arena) finish() {
	if a.cur.Len() > 0 {
		a.chunks = append(a.chunks, a.cur.String())
	}
	a.cur = strings.Builder{}
}

// get returns the string ending at end whose predecessor ended at prevEnd.
func (a *arena) get(prevEnd, end uint32) string {
	if end == prevEnd {
		return ""
	}
	c := (end - 1) / arenaChunk
	start := prevEnd
	if start/arenaChunk != c {
		start = c * arenaChunk // the string moved to the start of a new chunk
	}
	return a.chunks[c][start%arenaChunk : start%arenaChunk+(end-start)]
}

// bytes is the arena's memory.
func (a *arena) bytes() int64 { return int64(len(a.chunks)) * arenaChunk }

// Len is the number of keys.
func (m *Manifest) Len() int { return len(m.keyEnds) }

// ETag is the manifest's own strong ETag, for revalidation.
func (m *Manifest) ETag() string { return m.etag }

func (m *Manifest) key(i int) string {
	prev := uint32(0)
	if i > 0 {
		prev = m.keyEnds[i-1]
	}
	return m.keys.get(prev, m.keyEnds[i])
}

func (m *Manifest) version(i int) string {
	prev := uint32(0)
	if i > 0 {
		prev = m.verEnds[i-1]
	}
	return m.versions.get(prev, m.verEnds[i])
}

// search returns the index of the first key >= k.
func (m *Manifest) search(lo int, k string) int {
	return lo + sort.Search(len(m.keyEnds)-lo, func(i int) bool { return m.key(lo+i) >= k })
}

// Lookup returns the size and version of key; ok is false if the store has
// no such object. version is the strong ETag exactly as the origin sends it
// in the ETag header (what Client.Fetch returns as version).
func (m *Manifest) Lookup(key string) (size int64, version string, ok bool) {
	i := m.search(0, key)
	if i < len(m.keyEnds) && m.key(i) == key {
		return m.sizes[i], m.version(i), true
	}
	return 0, "", false
}

// IsDir reports whether dir ("" is the root) has at least one key below
// it, i.e. is a directory of the store.
func (m *Manifest) IsDir(dir string) bool {
	dir = strings.Trim(dir, "/")
	if dir == "" {
		return true
	}
	i := m.search(0, dir+"/")
	return i < len(m.keyEnds) && strings.HasPrefix(m.key(i), dir+"/")
}

// Children returns the direct children of dir ("" is the root), files and
// subdirectories, sorted by name; nil if dir holds no key. Names share the
// manifest's memory. A subdirectory costs one binary search however many
// keys are below it.
func (m *Manifest) Children(dir string) []DirEntry {
	pfx := strings.Trim(dir, "/")
	if pfx != "" {
		pfx += "/"
	}
	var out []DirEntry
	for i := m.search(0, pfx); i < len(m.keyEnds); {
		k := m.key(i)
		if !strings.HasPrefix(k, pfx) {
			break
		}
		rest := k[len(pfx):]
		j := strings.IndexByte(rest, '/')
		if j < 0 {
			out = append(out, DirEntry{Name: rest})
			i++
			continue
		}
		out = append(out, DirEntry{Name: rest[:j], IsDir: true})
		// '0' follows '/': skip every key below this subdirectory.
		i = m.search(i+1, k[:len(pfx)+j]+"0")
	}
	// Key order puts "a.b" before "a/…"; names want "a" before "a.b".
	slices.SortFunc(out, func(a, b DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Keys calls fn for every key in byte order until fn returns false.
func (m *Manifest) Keys(fn func(key string, size int64, version string) bool) {
	for i := range m.keyEnds {
		if !fn(m.key(i), m.sizes[i], m.version(i)) {
			return
		}
	}
}

// MemoryBytes is the memory the manifest holds (its arenas and arrays),
// which benchmarks report.
func (m *Manifest) MemoryBytes() int64 {
	return m.keys.bytes() + m.versions.bytes() +
		int64(cap(m.keyEnds)+cap(m.verEnds))*4 + int64(cap(m.sizes))*8
}

// decodeManifest reads an uncompressed manifest stream (header included).
func decodeManifest(r io.Reader) (*Manifest, error) {
	var m Manifest
	tag, err := wire.Decode(r, func(key []byte, size int64, version []byte) error {
		if m.keys.size+arenaChunk > 1<<32-1 || m.versions.size+arenaChunk > 1<<32-1 {
			return fmt.Errorf("%w: more than 4 GiB of keys", ErrBadManifest)
		}
		if len(m.keyEnds) == cap(m.keyEnds) {
			// Double (append grows large slices by only 1.25×, which
			// allocates five times the final size on the way).
			n := max(1024, 2*cap(m.keyEnds))
			m.keyEnds = slices.Grow(m.keyEnds, n-len(m.keyEnds))
			m.verEnds = slices.Grow(m.verEnds, n-len(m.verEnds))
			m.sizes = slices.Grow(m.sizes, n-len(m.sizes))
		}
		m.keyEnds = append(m.keyEnds, uint32(m.keys.add(key)))
		m.verEnds = append(m.verEnds, uint32(m.versions.add(version)))
		m.sizes = append(m.sizes, size)
		return nil
	})
	if err != nil {
		return nil, err
	}
	m.etag = tag
	m.keys.finish()
	m.versions.finish()
	return &m, nil
}
