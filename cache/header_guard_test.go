package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEntryHeaderFieldsCheckedBeyondCRC: a header whose checksum is right but whose magic,
// format version or kind is not ours (a file of another program or of a future format, with
// its own valid checksum) is rejected by those checks themselves — the bit-flip test of
// TestEntryFormatDetectsEveryHeaderByte cannot tell, since the checksum catches a flip first.
func TestEntryHeaderFieldsCheckedBeyondCRC(t *testing.T) {
	ns := sha256.Sum256([]byte(testNamespace))
	const key, version = "arr/c/0/1", `"etag-1"`
	data := bytes.Repeat([]byte("zarr chunk "), 10)
	path := filepath.Join(t.TempDir(), "entry")
	writeEntryFile(t, path, ns, key, span{}, version, data)
	pristine, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hdrLen := headerLenOf(span{}, len(key))
	cases := []struct {
		name, want string
		edit       func(b []byte)
	}{
		{"foreign magic", "no entry magic", func(b []byte) { copy(b[:8], "NOTOURS!") }},
		{"future format version", "format version", func(b []byte) { binary.LittleEndian.PutUint16(b[8:], formatVersion+1) }},
		{"unknown kind", "entry kind", func(b []byte) { binary.LittleEndian.PutUint16(b[10:], 7) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(pristine)
			tc.edit(b)
			binary.LittleEndian.PutUint32(b[hdrLen-4:], crc32.Checksum(b[:hdrLen-4], castagnoli))
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			_, _, err = readHeader(f, int64(len(b)))
			if !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("readHeader = %v, want %v naming %q", err, errCorrupt, tc.want)
			}
		})
	}
}

// TestRangeEntryHeaderChecked: a range entry whose header (with a right checksum) names a
// range that does not match its data — a negative offset, or a length other than the data's
// — is rejected: a reader would otherwise serve those bytes as another part of the object.
func TestRangeEntryHeaderChecked(t *testing.T) {
	ns := sha256.Sum256([]byte(testNamespace))
	const key, version = "arr/c/0/1", `"etag-1"`
	data := bytes.Repeat([]byte("shard block "), 10)
	rng := span{off: 1 << 20, n: int64(len(data))}
	path := filepath.Join(t.TempDir(), "entry")
	writeEntryFile(t, path, ns, key, rng, version, data)
	pristine, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hdrLen := headerLenOf(rng, len(key))
	for name, edit := range map[string]func(b []byte){
		"negative offset":        func(b []byte) { binary.LittleEndian.PutUint64(b[fixedHeaderLen:], uint64(1<<63)) },
		"length beyond the data": func(b []byte) { binary.LittleEndian.PutUint64(b[fixedHeaderLen+8:], uint64(len(data)+1)) },
		"zero length":            func(b []byte) { binary.LittleEndian.PutUint64(b[fixedHeaderLen+8:], 0) },
	} {
		t.Run(name, func(t *testing.T) {
			b := bytes.Clone(pristine)
			edit(b)
			binary.LittleEndian.PutUint32(b[hdrLen-4:], crc32.Checksum(b[:hdrLen-4], castagnoli))
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, _, err := readHeader(f, int64(len(b))); !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), "range [") {
				t.Fatalf("readHeader = %v, want %v naming the range", err, errCorrupt)
			}
		})
	}
}
