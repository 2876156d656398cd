package remote

// The manifest: every key of a store (or of a prefix of it) with its size
// and version, so that a client knows exact sizes and which keys are absent
// without a request per lookup, and can list chunk directories.
//
// Wire format, version 1. GET <store-url>/.zarrfs/manifest[?prefix=P]
// answers 200 with Content-Type application/vnd.zarrfs.manifest+zstd and a
// body that is a zstd stream (one or more frames) of:
//
//	header  "zarrfs-manifest 1\n"                   (magic, then the format version)
//	entry   'K' uvarint(shared) uvarint(n) suffix[n]  the key: the first `shared`
//	            uvarint(size)                         bytes of the previous key, then
//	            uvarint(m) etag[m]                    suffix; etag as in the ETag header
//	...
//	end     'E' uvarint(count) uvarint(m) tag[m]    count of entries; tag is the
//	                                                manifest's own strong ETag
//	  or
//	error   'X' uvarint(m) message[m]              the server failed mid-stream
//
// Nothing follows the end or error record. Keys are relative to the store
// URL (also with ?prefix=, which only filters), '/'-separated, and strictly
// increasing in byte order. The tag is derived from the entry records alone,
// so an unchanged store gives the same tag; a request with If-None-Match:
// tag is answered 304 when it still matches. A reader must reject any other
// version line (the server will offer newer versions under new
// version numbers) and any stream that ends without an end record.
//
// Static origins answer the endpoint with 404 (nginx, Apache, buckets) or
// with something that is not this format; clients treat both as "no
// manifest" (ErrNoManifest) and fall back to consolidated metadata.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// ManifestContentType is the media type of a manifest response.
const ManifestContentType = "application/vnd.zarrfs.manifest+zstd"

// ManifestVersion is the wire format version this package reads and writes.
const ManifestVersion = 1

const (
	manifestMagic      = "zarrfs-manifest "
	manifestHeader     = "zarrfs-manifest 1\n"
	recEntry           = 'K'
	recEnd             = 'E'
	recError           = 'X'
	maxManifestKey     = 4096
	maxManifestVersion = 1024
	maxManifestMessage = 4096
)

// ErrNoManifest: the origin serves no zarrfs manifest (404, 405, 403, 410,
// 501, or content in another format, or a format version this zarrfs does
// not read). Fall back to consolidated metadata or listings.
var ErrNoManifest = errors.New("the origin serves no zarrfs manifest")

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

// memoryBytes is the memory the manifest holds, for benchmarks.
func (m *Manifest) memoryBytes() int64 {
	return m.keys.bytes() + m.versions.bytes() +
		int64(cap(m.keyEnds)+cap(m.verEnds))*4 + int64(cap(m.sizes))*8
}

// manifestEncoder writes the records of a manifest (uncompressed) to w and
// computes its tag. It does not write the header.
type manifestEncoder struct {
	w     *bufio.Writer
	prev  []byte // the previous key
	key   []byte // the key being added
	count uint64
	sum   hash.Hash
	rec   []byte
}

func newManifestEncoder(w io.Writer) *manifestEncoder {
	return &manifestEncoder{w: bufio.NewWriterSize(w, 64<<10), sum: sha256.New()}
}

func (e *manifestEncoder) header() error {
	_, err := e.w.WriteString(manifestHeader)
	return err
}

// add writes one entry; keys must come in strictly increasing order.
func (e *manifestEncoder) add(key string, size int64, etag string) error {
	e.key = append(e.key[:0], key...)
	return e.addKey(size, []byte(etag))
}

// addJoined is add for the key dirPrefix+name, without building it as a
// string.
func (e *manifestEncoder) addJoined(dirPrefix string, name []byte, size int64, etag []byte) error {
	e.key = append(append(e.key[:0], dirPrefix...), name...)
	return e.addKey(size, etag)
}

// addKey writes the entry for the key in e.key.
func (e *manifestEncoder) addKey(size int64, etag []byte) error {
	key := e.key
	shared := 0
	for shared < len(key) && shared < len(e.prev) && key[shared] == e.prev[shared] {
		shared++
	}
	r := append(e.rec[:0], recEntry)
	r = binary.AppendUvarint(r, uint64(shared))
	r = binary.AppendUvarint(r, uint64(len(key)-shared))
	r = append(r, key[shared:]...)
	r = binary.AppendUvarint(r, uint64(size))
	r = binary.AppendUvarint(r, uint64(len(etag)))
	r = append(r, etag...)
	e.rec = r
	e.prev, e.key = key, e.prev
	e.count++
	e.sum.Write(r)
	_, err := e.w.Write(r)
	return err
}

// tag is the manifest's ETag for the entries written so far.
func (e *manifestEncoder) tag() string {
	var sum [sha256.Size]byte
	e.sum.Sum(sum[:0])
	return `"m` + hex.EncodeToString(sum[:16]) + `"`
}

// end writes the end record and flushes.
func (e *manifestEncoder) end() error {
	tag := e.tag()
	r := append(e.rec[:0], recEnd)
	r = binary.AppendUvarint(r, e.count)
	r = binary.AppendUvarint(r, uint64(len(tag)))
	r = append(r, tag...)
	if _, err := e.w.Write(r); err != nil {
		return err
	}
	return e.w.Flush()
}

// fail writes an error record and flushes.
func (e *manifestEncoder) fail(msg string) error {
	if len(msg) > maxManifestMessage {
		msg = msg[:maxManifestMessage]
	}
	r := append(e.rec[:0], recError)
	r = binary.AppendUvarint(r, uint64(len(msg)))
	r = append(r, msg...)
	if _, err := e.w.Write(r); err != nil {
		return err
	}
	return e.w.Flush()
}

// ErrBadManifest: the manifest stream is malformed (a bug, or a proxy that
// altered it). Unlike ErrNoManifest this is not a normal condition.
var ErrBadManifest = errors.New("malformed zarrfs manifest")

// ManifestServerError: the server reported a failure inside the manifest
// stream (for example a directory it could not read). The listing is
// incomplete and must not be used.
type ManifestServerError struct{ Message string }

func (e *ManifestServerError) Error() string {
	return "the server could not complete the manifest: " + e.Message
}

// decodeManifest reads an uncompressed manifest stream (header included).
func decodeManifest(r io.Reader) (*Manifest, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	line, err := br.ReadSlice('\n')
	if err != nil || !bytes.HasPrefix(line, []byte(manifestMagic)) {
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: the content is not a zarrfs manifest", ErrNoManifest)
	}
	if v := strings.TrimSpace(string(line[len(manifestMagic):])); v != strconv.Itoa(ManifestVersion) {
		return nil, fmt.Errorf("%w: the server sends manifest format version %q and this zarrfs reads version %d; upgrade zarrfs on this machine", ErrNoManifest, v, ManifestVersion)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadManifest, fmt.Sprintf(format, args...))
	}
	var (
		m       Manifest
		prev    []byte
		cur     []byte
		scratch []byte
	)
	readBytes := func(n uint64, limit int, what string) ([]byte, error) {
		if n > uint64(limit) {
			return nil, bad("%s of %d bytes (limit %d)", what, n, limit)
		}
		if cap(scratch) < int(n) {
			scratch = make([]byte, n)
		}
		scratch = scratch[:n]
		if _, err := io.ReadFull(br, scratch); err != nil {
			return nil, err
		}
		return scratch, nil
	}
	for {
		kind, err := br.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, bad("the stream ended after %d entries without an end record", len(m.keyEnds))
			}
			return nil, err
		}
		switch kind {
		case recEntry:
			shared, err := binary.ReadUvarint(br)
			if err != nil {
				return nil, eofIsFormat(err, bad)
			}
			n, err := binary.ReadUvarint(br)
			if err != nil {
				return nil, eofIsFormat(err, bad)
			}
			if shared > uint64(len(prev)) || shared+n > maxManifestKey {
				return nil, bad("entry %d: bad key lengths", len(m.keyEnds))
			}
			suffix, err := readBytes(n, maxManifestKey, "key")
			if err != nil {
				return nil, eofIsFormat(err, bad)
			}
			cur = append(append(cur[:0], prev[:shared]...), suffix...)
			if !validManifestKey(cur) {
				return nil, bad("entry %d: invalid key %q", len(m.keyEnds), cur)
			}
			if len(m.keyEnds) > 0 && bytes.Compare(cur, prev) <= 0 {
				return nil, bad("entry %d: key %q does not sort after %q", len(m.keyEnds), cur, prev)
			}
			size, err := binary.ReadUvarint(br)
			if err != nil {
				return nil, eofIsFormat(err, bad)
			}
			if size > 1<<62 {
				return nil, bad("entry %d: size %d", len(m.keyEnds), size)
			}
			vn, err := binary.ReadUvarint(br)
			if err != nil {
				return nil, eofIsFormat(err, bad)
			}
			ver, err := readBytes(vn, maxManifestVersion, "version")
			if err != nil {
				return nil, eofIsFormat(err, bad)
			}
			if m.keys.size+arenaChunk > 1<<32-1 || m.versions.size+arenaChunk > 1<<32-1 {
				return nil, bad("more than 4 GiB of keys")
			}
			if len(m.keyEnds) == cap(m.keyEnds) {
				// Double (append grows large slices by only 1.25×, which
				// allocates five times the final size on the way).
				n := max(1024, 2*cap(m.keyEnds))
				m.keyEnds = slices.Grow(m.keyEnds, n-len(m.keyEnds))
				m.verEnds = slices.Grow(m.verEnds, n-len(m.verEnds))
				m.sizes = slices.Grow(m.sizes, n-len(m.sizes))
			}
			m.keyEnds = append(m.keyEnds, uint32(m.keys.add(cur)))
			m.verEnds = append(m.verEnds, uint32(m.versions.add(ver)))
			m.sizes = append(m.sizes, int64(size))
			prev, cur = cur, prev
		case recEnd:
			count, err := binary.ReadUvarint(br)
			if err != nil {
				return nil, eofIsFormat(err, bad)
			}
			tn, err := binary.ReadUvarint(br)
			if err != nil {
				return nil, eofIsFormat(err, bad)
			}
			tag, err := readBytes(tn, maxManifestVersion, "tag")
			if err != nil {
				return nil, eofIsFormat(err, bad)
			}
			if count != uint64(len(m.keyEnds)) {
				return nil, bad("the end record counts %d entries, the stream had %d", count, len(m.keyEnds))
			}
			if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
				if err != nil {
					return nil, err
				}
				return nil, bad("data after the end record")
			}
			m.etag = string(tag)
			m.keys.finish()
			m.versions.finish()
			return &m, nil
		case recError:
			n, err := binary.ReadUvarint(br)
			if err != nil {
				return nil, eofIsFormat(err, bad)
			}
			msg, err := readBytes(n, maxManifestMessage, "error message")
			if err != nil {
				return nil, eofIsFormat(err, bad)
			}
			return nil, &ManifestServerError{Message: strings.ToValidUTF8(string(msg), "?")}
		default:
			return nil, bad("unknown record type 0x%02x after %d entries", kind, len(m.keyEnds))
		}
	}
}

func eofIsFormat(err error, bad func(string, ...any) error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return bad("the stream ends in the middle of a record")
	}
	return err
}

// validManifestKey applies checkKey's rules to a key from the wire.
func validManifestKey(k []byte) bool {
	if len(k) == 0 {
		return false
	}
	for seg := range bytes.SplitSeq(k, []byte{'/'}) {
		if len(seg) == 0 || string(seg) == "." || string(seg) == ".." || bytes.IndexByte(seg, 0) >= 0 {
			return false
		}
	}
	return true
}
