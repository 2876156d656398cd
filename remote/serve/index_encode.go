package serve

// An index's answer as bytes: encoding its keys in the manifest wire format
// (package wire), compressed, kept per generation in a chunkBuffer.

import (
	"bytes"
	"io"
	"slices"
	"strings"

	"github.com/zarrfs/zarrfs/remote/wire"
)

type cachedManifest struct {
	gen  uint64
	ok   bool
	tag  string
	body *chunkBuffer
}

// bodyChunk is the size of a chunkBuffer's chunks.
const bodyChunk = 256 << 10

// chunkBuffer holds a compressed manifest in fixed-size chunks: nothing is
// copied as it grows (a bytes.Buffer would allocate about twice the body on
// the way and keep up to twice its size), and at most one chunk is slack.
// Immutable once written, so one body can be sent to many clients at once.
type chunkBuffer struct {
	chunks [][]byte
	n      int
}

func (c *chunkBuffer) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if len(c.chunks) == 0 || len(c.chunks[len(c.chunks)-1]) == bodyChunk {
			c.chunks = append(c.chunks, make([]byte, 0, bodyChunk))
		}
		last := &c.chunks[len(c.chunks)-1]
		k := min(len(p), bodyChunk-len(*last))
		*last = append(*last, p[:k]...)
		p = p[k:]
	}
	c.n += n
	return n, nil
}

// Len is the body's size.
func (c *chunkBuffer) Len() int { return c.n }

// WriteTo writes the whole body to w.
func (c *chunkBuffer) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for _, ch := range c.chunks {
		n, err := w.Write(ch)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

type cachedTag struct {
	gen uint64
	tag string
}

// writeManifestLocked writes the manifest of the keys starting with
// prefix, uncompressed (header, entries, end record), and returns its tag.
func (ix *manifestIndex) writeManifestLocked(w io.Writer, prefix string, header bool) (string, error) {
	enc := wire.NewEncoder(w)
	if header {
		if err := enc.WriteHeader(); err != nil {
			return "", err
		}
	}
	if err := ix.encodeDir(enc, ix.root, "", prefix); err != nil {
		return "", err
	}
	if !header {
		return enc.Tag(), nil // a tag alone: no end record needed
	}
	return enc.Tag(), enc.End()
}

// encodeDir encodes the keys below d (keys starting with keyPfx) that
// start with prefix; keyPfx is always a prefix of prefix or has it as
// prefix.
func (ix *manifestIndex) encodeDir(enc *wire.Encoder, d *idxDir, keyPfx, prefix string) error {
	d.merge()
	lo, rest := 0, ""
	if len(prefix) > len(keyPfx) {
		rest = prefix[len(keyPfx):]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			// Only the subdirectory rest[:j] can hold matching keys.
			if sub := d.subdirs[rest[:j]]; sub != nil {
				return ix.encodeDir(enc, sub, keyPfx+rest[:j+1], prefix)
			}
			return nil
		}
	}
	restB := []byte(rest)
	if rest != "" {
		lo, _ = slices.BinarySearchFunc(d.ents, restB, func(e dirEnt, t []byte) int {
			return bytes.Compare(d.sortName(&e), t)
		})
	}
	for i := lo; i < len(d.ents); i++ {
		e := &d.ents[i]
		sn := d.sortName(e)
		if rest != "" && !bytes.HasPrefix(sn, restB) {
			break
		}
		switch e.kind {
		case kindFile:
			tag := wire.ETagOfHash(e.hash)
			if err := enc.AddJoined(keyPfx, sn, e.size, tag[:]); err != nil {
				return err
			}
		case kindDir:
			sub := d.subdirs[string(sn[:len(sn)-1])]
			if sub == nil {
				continue
			}
			if err := ix.encodeDir(enc, sub, keyPfx+string(sn), prefix); err != nil {
				return err
			}
		}
	}
	return nil
}

// compressedLocked encodes and compresses the manifest of prefix.
func (ix *manifestIndex) compressedLocked(prefix string) (tag string, body *chunkBuffer, err error) {
	body = &chunkBuffer{}
	zw, err := newManifestZstd(body, true)
	if err != nil {
		return "", nil, err
	}
	tag, err = ix.writeManifestLocked(zw, prefix, true)
	if cerr := zw.Close(); err == nil { // Close also waits for the encoder's goroutines
		err = cerr
	}
	if err != nil {
		return "", nil, err
	}
	return tag, body, nil
}
