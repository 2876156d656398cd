package cache

// The on-disk entry format (see doc.go for the layout and the crash
// semantics). No locks here: these functions work on files the caller owns.

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
)

const (
	entryMagic    = "ZARRFSCE"
	formatVersion = 1
	// kindWhole is an entry holding a whole object; kindRange one holding
	// bytes [off, off+n) of an object, the range recorded in the header.
	// Adding a kind needs no new format version: a build that does not know
	// a kind finds such entries corrupt and removes them, which is safe.
	kindWhole = 0
	kindRange = 1

	fixedHeaderLen = 64
	rangeFieldsLen = 16 // kindRange: offset and length, after the fixed part
	maxKeyLen      = 1<<16 - 1
	// maxVersionLen is the room reserved for the version: the data is
	// written before the version is known, right after the header. A longer
	// version is stored as "", which makes the entry unusable after a
	// restart but not wrong.
	maxVersionLen = 255
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt marks an entry file that does not hold what its name and the
// index say; the cache removes it and fetches the object again.
var errCorrupt = errors.New("corrupt cache entry")

// header is the start of an entry file.
//
//	off  len  field
//	0    8    magic "ZARRFSCE"
//	8    2    format version (1)
//	10   2    kind (0 = whole object, 1 = byte range)
//	12   4    header length H: the data starts at H
//	16   32   SHA-256 of the namespace (the origin URL)
//	48   8    data length
//	56   4    CRC32C of the data
//	60   2    key length K
//	62   1    version length V (<= 255)
//	63   1    zero
//	          kind 1 only, R = 16 (R = 0 for kind 0):
//	64   8      offset of the range in the object
//	72   8      length of the range (= data length)
//	64+R K    key
//	64+R+K 255 version, V bytes then zeros
//	H-4  4    CRC32C of bytes [0, H-4) of the header
//
// Integers are little-endian; H = 64 + R + K + 255 + 4.
type header struct {
	nsHash  [32]byte
	dataLen int64
	dataCRC uint32
	rng     span // zero for a whole object
	key     string
	version string
}

// headerLen is the header length of a whole-object entry.
func headerLen(keyLen int) int64 { return int64(fixedHeaderLen + keyLen + maxVersionLen + 4) }

// headerLenOf is the header length of an entry holding rng of an object
// (the whole object when rng is zero).
func headerLenOf(rng span, keyLen int) int64 {
	if rng.ranged() {
		return headerLen(keyLen) + rangeFieldsLen
	}
	return headerLen(keyLen)
}

// span is a byte range [off, off+n) of an object; the zero span (n == 0)
// stands for the whole object, since a range is never empty.
type span struct{ off, n int64 }

func (r span) ranged() bool { return r.n > 0 }

func (r span) kind() uint16 {
	if r.ranged() {
		return kindRange
	}
	return kindWhole
}

// describe names key, or the range of it, in messages.
func (r span) describe(key string) string {
	if !r.ranged() {
		return fmt.Sprintf("%q", key)
	}
	return fmt.Sprintf("%q bytes [%d, %d)", key, r.off, r.off+r.n)
}

// diskVersion is the version an entry's header records for version.
func diskVersion(version string) string {
	if len(version) > maxVersionLen {
		return ""
	}
	return version
}

func (h *header) marshal() []byte {
	n := headerLenOf(h.rng, len(h.key))
	b := make([]byte, n)
	copy(b, entryMagic)
	binary.LittleEndian.PutUint16(b[8:], formatVersion)
	binary.LittleEndian.PutUint16(b[10:], h.rng.kind())
	binary.LittleEndian.PutUint32(b[12:], uint32(n))
	copy(b[16:48], h.nsHash[:])
	binary.LittleEndian.PutUint64(b[48:], uint64(h.dataLen))
	binary.LittleEndian.PutUint32(b[56:], h.dataCRC)
	v := diskVersion(h.version)
	binary.LittleEndian.PutUint16(b[60:], uint16(len(h.key)))
	b[62] = byte(len(v))
	keyAt := fixedHeaderLen
	if h.rng.ranged() {
		binary.LittleEndian.PutUint64(b[fixedHeaderLen:], uint64(h.rng.off))
		binary.LittleEndian.PutUint64(b[fixedHeaderLen+8:], uint64(h.rng.n))
		keyAt += rangeFieldsLen
	}
	copy(b[keyAt:], h.key)
	copy(b[keyAt+len(h.key):], v)
	binary.LittleEndian.PutUint32(b[n-4:], crc32.Checksum(b[:n-4], castagnoli))
	return b
}

// readHeader reads and checks the header of an entry file of fileLen bytes:
// its checksum, and that the file is exactly as long as the header says.
func readHeader(f *os.File, fileLen int64) (header, int64, error) {
	var h header
	bad := func(format string, args ...any) (header, int64, error) {
		return h, 0, fmt.Errorf("%w: %s: %s", errCorrupt, f.Name(), fmt.Sprintf(format, args...))
	}
	if fileLen < headerLen(0) {
		return bad("%d bytes, shorter than any header", fileLen)
	}
	buf := make([]byte, min(fileLen, 4096))
	if _, err := f.ReadAt(buf, 0); err != nil {
		return bad("read header: %v", err)
	}
	if string(buf[:8]) != entryMagic {
		return bad("no entry magic")
	}
	if v := binary.LittleEndian.Uint16(buf[8:]); v != formatVersion {
		return bad("format version %d, want %d", v, formatVersion)
	}
	kind := binary.LittleEndian.Uint16(buf[10:])
	if kind != kindWhole && kind != kindRange {
		return bad("entry kind %d unknown", kind)
	}
	keyLen := int(binary.LittleEndian.Uint16(buf[60:]))
	n, keyAt := headerLen(keyLen), fixedHeaderLen
	if kind == kindRange {
		n, keyAt = n+rangeFieldsLen, keyAt+rangeFieldsLen
	}
	if got := int64(binary.LittleEndian.Uint32(buf[12:])); got != n {
		return bad("header length %d, want %d for a %d-byte key", got, n, keyLen)
	}
	if n > fileLen {
		return bad("%d bytes, shorter than its %d-byte header", fileLen, n)
	}
	if n > int64(len(buf)) {
		buf = make([]byte, n)
		if _, err := f.ReadAt(buf, 0); err != nil {
			return bad("read header: %v", err)
		}
	}
	buf = buf[:n]
	if want, got := binary.LittleEndian.Uint32(buf[n-4:]), crc32.Checksum(buf[:n-4], castagnoli); got != want {
		return bad("header checksum %08x, want %08x", got, want)
	}
	verLen := int(buf[62])
	copy(h.nsHash[:], buf[16:48])
	h.dataLen = int64(binary.LittleEndian.Uint64(buf[48:]))
	h.dataCRC = binary.LittleEndian.Uint32(buf[56:])
	h.key = string(buf[keyAt : keyAt+keyLen])
	h.version = string(buf[keyAt+keyLen : keyAt+keyLen+verLen])
	if h.dataLen < 0 || n+h.dataLen != fileLen {
		return bad("%d bytes, want %d-byte header + %d bytes of data", fileLen, n, h.dataLen)
	}
	if kind == kindRange {
		h.rng.off = int64(binary.LittleEndian.Uint64(buf[fixedHeaderLen:]))
		h.rng.n = int64(binary.LittleEndian.Uint64(buf[fixedHeaderLen+8:]))
		if h.rng.off < 0 || h.rng.n <= 0 || h.rng.n != h.dataLen {
			return bad("range [%d, +%d) of %d bytes of data", h.rng.off, h.rng.n, h.dataLen)
		}
	}
	return h, n, nil
}

var crcBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// checkData reads the data of an entry and compares its CRC32C with the
// header's.
func checkData(f *os.File, h header, hdrLen int64) error {
	bp := crcBufs.Get().(*[]byte)
	defer crcBufs.Put(bp)
	var crc uint32
	r := io.NewSectionReader(f, hdrLen, h.dataLen)
	for {
		n, err := r.Read(*bp)
		crc = crc32.Update(crc, castagnoli, (*bp)[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: %s: read data: %v", errCorrupt, f.Name(), err)
		}
	}
	if crc != h.dataCRC {
		return fmt.Errorf("%w: %s: data checksum %08x, want %08x", errCorrupt, f.Name(), crc, h.dataCRC)
	}
	return nil
}

// verifyEntry checks that f is a sound entry holding e's object and
// version, reading all of it. It returns where the data starts.
func verifyEntry(f *os.File, e *entry, nsHash [32]byte) (int64, error) {
	info, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	h, hdrLen, err := readHeader(f, info.Size())
	if err != nil {
		return 0, err
	}
	switch {
	case h.nsHash != nsHash || h.key != e.key || h.rng != e.rng:
		return 0, fmt.Errorf("%w: %s holds %s of another origin, key or range, not %s",
			errCorrupt, f.Name(), h.rng.describe(h.key), e.rng.describe(e.key))
	case h.version != diskVersion(e.version) || h.dataLen != e.dataLen:
		return 0, fmt.Errorf("%w: %s holds version %s of %d bytes, want %s of %d bytes",
			errCorrupt, f.Name(), h.version, h.dataLen, e.version, e.dataLen)
	}
	return hdrLen, checkData(f, h, hdrLen)
}

// entryID names the entry of key from the origin with namespace hash ns:
// hex for the file name, and a 64-bit hash for the eviction policy.
func entryID(ns [32]byte, key string) (string, uint64) {
	return entryIDOf(ns, key, span{})
}

// rangeIDTag separates the names of range entries from those of whole
// entries. Ranges of one origin never share a name (the hashed input ends
// with fixed-size fields, so two inputs of equal length have equal keys). A
// whole entry could share one only with a key ending in this tag and 16
// binary bytes, which no zarr key does; even then the header's kind and
// range tell them apart, and the clash costs refetches, never wrong bytes.
const rangeIDTag = "\x00range\x00"

// entryIDOf names the entry of rng of key (the whole object if rng is zero).
func entryIDOf(ns [32]byte, key string, rng span) (string, uint64) {
	h := sha256.New()
	h.Write(ns[:])
	h.Write([]byte(key))
	if rng.ranged() {
		var b [len(rangeIDTag) + 16]byte
		copy(b[:], rangeIDTag)
		binary.LittleEndian.PutUint64(b[len(rangeIDTag):], uint64(rng.off))
		binary.LittleEndian.PutUint64(b[len(rangeIDTag)+8:], uint64(rng.n))
		h.Write(b[:])
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return hex.EncodeToString(sum[:]), binary.LittleEndian.Uint64(sum[:8])
}

// entryWriter receives a fetch into a temp entry file, after the room left
// for the header, checksumming as it goes. It remembers the first write
// error, so a failing disk can be told apart from a failing Source.
type entryWriter struct {
	f   *os.File
	rng span  // what part of the object it holds (zero: the whole)
	off int64 // where the data starts: headerLenOf(rng, len(key))
	n   int64
	crc uint32
	err error
}

func (w *entryWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.f.WriteAt(p, w.off+w.n)
	w.crc = crc32.Update(w.crc, castagnoli, p[:n])
	w.n += int64(n)
	w.err = err
	return n, err
}

// finish writes the header, which makes the temp file a complete entry.
func (w *entryWriter) finish(ns [32]byte, key, version string) error {
	h := header{nsHash: ns, dataLen: w.n, dataCRC: w.crc, rng: w.rng, key: key, version: version}
	_, err := w.f.WriteAt(h.marshal(), 0)
	return err
}
