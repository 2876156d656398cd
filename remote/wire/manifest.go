package wire

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
	"strconv"
	"strings"
)

// ContentType is the media type of a manifest response.
const ContentType = "application/vnd.zarrfs.manifest+zstd"

// Version is the wire format version this package reads and writes.
const Version = 1

// ReservedSegment is the path segment of the server's own endpoints: it
// never names a file of a store.
const ReservedSegment = ".zarrfs"

// ManifestPath is the manifest endpoint below a store's (or any served
// directory's) URL: GET <dir-url>/.zarrfs/manifest.
const ManifestPath = ReservedSegment + "/manifest"

// Magic starts the header line; HeaderLine is the whole header this
// package writes.
const (
	Magic      = "zarrfs-manifest "
	HeaderLine = "zarrfs-manifest 1\n"
)

// Limits of one record: a longer key, version (or tag) or error message is
// refused by the decoder (and cut by the encoder, for messages).
const (
	MaxKeyLen     = 4096
	MaxVersionLen = 1024
	MaxMessageLen = 4096
)

// Record types.
const (
	recEntry = 'K'
	recEnd   = 'E'
	recError = 'X'
)

// ErrNoManifest: the content is not a zarrfs manifest, or one of a format
// version this zarrfs does not read. The client's ErrNoManifest is this
// value: an origin without a manifest and an answer in another format are
// the same thing to a caller (fall back to consolidated metadata or
// listings).
var ErrNoManifest = errors.New("the origin serves no zarrfs manifest")

// ErrBadManifest: the manifest stream is malformed (a bug, or a proxy that
// altered it). Unlike ErrNoManifest this is not a normal condition.
var ErrBadManifest = errors.New("malformed zarrfs manifest")

// ServerError: the server reported a failure inside the manifest stream
// (for example a directory it could not read). The listing is incomplete
// and must not be used.
type ServerError struct{ Message string }

func (e *ServerError) Error() string {
	return "the server could not complete the manifest: " + e.Message
}

// Encoder writes the records of a manifest (uncompressed) to w and
// computes its tag. Keys must come in strictly increasing byte order.
type Encoder struct {
	w     *bufio.Writer
	prev  []byte // the previous key
	key   []byte // the key being added
	count uint64
	sum   hash.Hash
	rec   []byte
}

// NewEncoder returns an encoder writing to w through a buffer: call Flush
// (End and Fail flush) before w is to see the records.
func NewEncoder(w io.Writer) *Encoder {
	return &Encoder{w: bufio.NewWriterSize(w, 64<<10), sum: sha256.New()}
}

// WriteHeader writes the header line. A stream that only computes a tag
// does without.
func (e *Encoder) WriteHeader() error {
	_, err := e.w.WriteString(HeaderLine)
	return err
}

// Add writes one entry.
func (e *Encoder) Add(key string, size int64, etag string) error {
	e.key = append(e.key[:0], key...)
	return e.addKey(size, []byte(etag))
}

// AddJoined is Add for the key dirPrefix+name, without building it as a
// string.
func (e *Encoder) AddJoined(dirPrefix string, name []byte, size int64, etag []byte) error {
	e.key = append(append(e.key[:0], dirPrefix...), name...)
	return e.addKey(size, etag)
}

// addKey writes the entry for the key in e.key.
func (e *Encoder) addKey(size int64, etag []byte) error {
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

// Tag is the manifest's ETag for the entries written so far.
func (e *Encoder) Tag() string {
	var sum [sha256.Size]byte
	e.sum.Sum(sum[:0])
	return `"m` + hex.EncodeToString(sum[:16]) + `"`
}

// Flush writes what is buffered to the underlying writer.
func (e *Encoder) Flush() error { return e.w.Flush() }

// End writes the end record and flushes.
func (e *Encoder) End() error {
	tag := e.Tag()
	r := append(e.rec[:0], recEnd)
	r = binary.AppendUvarint(r, e.count)
	r = binary.AppendUvarint(r, uint64(len(tag)))
	r = append(r, tag...)
	if _, err := e.w.Write(r); err != nil {
		return err
	}
	return e.w.Flush()
}

// Fail writes an error record and flushes.
func (e *Encoder) Fail(msg string) error {
	if len(msg) > MaxMessageLen {
		msg = msg[:MaxMessageLen]
	}
	r := append(e.rec[:0], recError)
	r = binary.AppendUvarint(r, uint64(len(msg)))
	r = append(r, msg...)
	if _, err := e.w.Write(r); err != nil {
		return err
	}
	return e.w.Flush()
}

// Decode reads an uncompressed manifest stream (header included) and calls
// add for every entry, in order; key and version are valid only during the
// call. It returns the manifest's tag once the end record has been read.
// Errors: ErrNoManifest (another format or version), ErrBadManifest (a
// damaged stream), a *ServerError, an error of add, or r's read error.
func Decode(r io.Reader, add func(key []byte, size int64, version []byte) error) (tag string, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	line, err := br.ReadSlice('\n')
	if err != nil || !bytes.HasPrefix(line, []byte(Magic)) {
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
		return "", fmt.Errorf("%w: the content is not a zarrfs manifest", ErrNoManifest)
	}
	if v := strings.TrimSpace(string(line[len(Magic):])); v != strconv.Itoa(Version) {
		return "", fmt.Errorf("%w: the server sends manifest format version %q and this zarrfs reads version %d; upgrade zarrfs on this machine", ErrNoManifest, v, Version)
	}
	var (
		entries int
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
				return "", bad("the stream ended after %d entries without an end record", entries)
			}
			return "", err
		}
		switch kind {
		case recEntry:
			shared, err := binary.ReadUvarint(br)
			if err != nil {
				return "", eofIsFormat(err)
			}
			n, err := binary.ReadUvarint(br)
			if err != nil {
				return "", eofIsFormat(err)
			}
			if shared > uint64(len(prev)) || shared+n > MaxKeyLen {
				return "", bad("entry %d: bad key lengths", entries)
			}
			suffix, err := readBytes(n, MaxKeyLen, "key")
			if err != nil {
				return "", eofIsFormat(err)
			}
			cur = append(append(cur[:0], prev[:shared]...), suffix...)
			if !ValidKey(cur) {
				return "", bad("entry %d: invalid key %q", entries, cur)
			}
			if entries > 0 && bytes.Compare(cur, prev) <= 0 {
				return "", bad("entry %d: key %q does not sort after %q", entries, cur, prev)
			}
			size, err := binary.ReadUvarint(br)
			if err != nil {
				return "", eofIsFormat(err)
			}
			if size > 1<<62 {
				return "", bad("entry %d: size %d", entries, size)
			}
			vn, err := binary.ReadUvarint(br)
			if err != nil {
				return "", eofIsFormat(err)
			}
			ver, err := readBytes(vn, MaxVersionLen, "version")
			if err != nil {
				return "", eofIsFormat(err)
			}
			if err := add(cur, int64(size), ver); err != nil {
				return "", err
			}
			entries++
			prev, cur = cur, prev
		case recEnd:
			count, err := binary.ReadUvarint(br)
			if err != nil {
				return "", eofIsFormat(err)
			}
			tn, err := binary.ReadUvarint(br)
			if err != nil {
				return "", eofIsFormat(err)
			}
			tag, err := readBytes(tn, MaxVersionLen, "tag")
			if err != nil {
				return "", eofIsFormat(err)
			}
			if count != uint64(entries) {
				return "", bad("the end record counts %d entries, the stream had %d", count, entries)
			}
			if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
				if err != nil {
					return "", err
				}
				return "", bad("data after the end record")
			}
			return string(tag), nil
		case recError:
			n, err := binary.ReadUvarint(br)
			if err != nil {
				return "", eofIsFormat(err)
			}
			msg, err := readBytes(n, MaxMessageLen, "error message")
			if err != nil {
				return "", eofIsFormat(err)
			}
			return "", &ServerError{Message: strings.ToValidUTF8(string(msg), "?")}
		default:
			return "", bad("unknown record type 0x%02x after %d entries", kind, entries)
		}
	}
}

// bad is an ErrBadManifest saying what is wrong.
func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadManifest, fmt.Sprintf(format, args...))
}

func eofIsFormat(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return bad("the stream ends in the middle of a record")
	}
	return err
}

// ValidKey reports whether k may be a key of a manifest: not empty, and
// no empty, ".", ".." or NUL-holding segment (the client's key rules).
func ValidKey(k []byte) bool {
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
