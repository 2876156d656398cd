package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

type manifestEntry struct {
	key     string
	size    int64
	version string
}

// encodeManifest builds an uncompressed manifest stream.
func encodeManifest(t testing.TB, entries []manifestEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := NewEncoder(&buf)
	if err := enc.WriteHeader(); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := enc.Add(e.key, e.size, e.version); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.End(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// decodeManifest decodes a stream and returns its entries.
func decodeManifest(r io.Reader) ([]manifestEntry, error) {
	var out []manifestEntry
	_, err := Decode(r, func(key []byte, size int64, version []byte) error {
		out = append(out, manifestEntry{string(key), size, string(version)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func TestManifestDecodeRejects(t *testing.T) {
	good := encodeManifest(t, []manifestEntry{{"a/0", 1, `"x"`}, {"a/1", 2, `"y"`}})
	// Every proper prefix of a valid stream is refused: a truncated manifest
	// must never pass for a shorter store.
	for n := 0; n < len(good); n++ {
		if _, err := decodeManifest(bytes.NewReader(good[:n])); err == nil {
			t.Fatalf("a stream cut at %d of %d bytes was accepted", n, len(good))
		}
	}
	rec := func(key string, shared int) []byte {
		r := []byte{recEntry}
		r = binary.AppendUvarint(r, uint64(shared))
		r = binary.AppendUvarint(r, uint64(len(key)-shared))
		r = append(r, key[shared:]...)
		r = binary.AppendUvarint(r, 1)
		r = binary.AppendUvarint(r, 3)
		return append(r, `"v"`...)
	}
	end := func(n int) []byte {
		r := []byte{recEnd}
		r = binary.AppendUvarint(r, uint64(n))
		r = binary.AppendUvarint(r, 3)
		return append(r, `"t"`...)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	hdr := []byte(HeaderLine)
	tests := []struct {
		name   string
		stream []byte
		want   error
	}{
		{"not a manifest", []byte("<html>hello</html>\n"), ErrNoManifest},
		{"empty", nil, ErrNoManifest},
		{"newer version", cat([]byte("zarrfs-manifest 2\n"), end(0)), ErrNoManifest},
		{"unsorted", cat(hdr, rec("b", 0), rec("a", 0), end(2)), ErrBadManifest},
		{"duplicate", cat(hdr, rec("a", 0), rec("a", 1), end(2)), ErrBadManifest},
		{"shared beyond previous", cat(hdr, rec("a", 0), rec("abc", 2), end(2)), ErrBadManifest},
		{"empty key", cat(hdr, rec("", 0), end(1)), ErrBadManifest},
		{"dot-dot segment", cat(hdr, rec("a/../b", 0), end(1)), ErrBadManifest},
		{"dot segment", cat(hdr, rec("./b", 0), end(1)), ErrBadManifest},
		{"empty segment", cat(hdr, rec("a//b", 0), end(1)), ErrBadManifest},
		{"absolute", cat(hdr, rec("/etc/passwd", 0), end(1)), ErrBadManifest},
		{"NUL", cat(hdr, rec("a\x00b", 0), end(1)), ErrBadManifest},
		{"wrong count", cat(hdr, rec("a", 0), end(2)), ErrBadManifest},
		{"data after the end", cat(hdr, rec("a", 0), end(1), rec("b", 0)), ErrBadManifest},
		{"unknown record", cat(hdr, []byte{'Z'}, end(0)), ErrBadManifest},
		{"no end record", cat(hdr, rec("a", 0)), ErrBadManifest},
		{"huge key length", cat(hdr, []byte{recEntry, 0, 0xff, 0xff, 0x03}), ErrBadManifest},
	}
	for _, tc := range tests {
		_, err := decodeManifest(bytes.NewReader(tc.stream))
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	var buf bytes.Buffer
	enc := NewEncoder(&buf)
	_ = enc.WriteHeader()
	_ = enc.Add("a", 1, `"x"`)
	_ = enc.Fail("read directory b: permission denied")
	var se *ServerError
	if _, err := decodeManifest(&buf); !errors.As(err, &se) || !strings.Contains(se.Message, "permission denied") {
		t.Errorf("error record: %v", err)
	}
}
