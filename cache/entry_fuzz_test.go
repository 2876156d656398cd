package cache

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReadHeader feeds readHeader entry files as a crash, a bad disk or
// another program could leave them. With fixCRC the fuzzer's header gets a
// correct checksum at the length its own fields claim, so that the checks
// behind the checksum are reached too.
func FuzzReadHeader(f *testing.F) {
	whole := header{dataLen: 5, dataCRC: 7, key: "a/0.0", version: `"v1"`}
	ranged := header{dataLen: 3, key: "s/c/0/0", version: `"v2"`, rng: span{off: 4096, n: 3}}
	for _, h := range []header{whole, ranged} {
		b := append(h.marshal(), make([]byte, h.dataLen)...)
		f.Add(b, false)
		f.Add(b[:len(b)-1], false)
		f.Add(append(b, 0), false)
		b[40] ^= 1
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Add([]byte(entryMagic), false)
	f.Fuzz(func(t *testing.T, data []byte, fixCRC bool) {
		if fixCRC && len(data) >= fixedHeaderLen {
			n := int(binary.LittleEndian.Uint32(data[12:]))
			if n >= 4 && n <= len(data) {
				binary.LittleEndian.PutUint32(data[n-4:], crc32.Checksum(data[:n-4], castagnoli))
			}
		}
		path := filepath.Join(t.TempDir(), "entry")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		file, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		h, n, err := readHeader(file, int64(len(data)))
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error %v is not errCorrupt", err)
			}
			return
		}
		if n != headerLenOf(h.rng, len(h.key)) || n+h.dataLen != int64(len(data)) || len(h.version) > maxVersionLen {
			t.Fatalf("accepted header %+v of %d bytes in a %d-byte file", h, n, len(data))
		}
		if h.rng.ranged() && (h.rng.off < 0 || h.rng.n != h.dataLen) {
			t.Fatalf("accepted range %+v for %d bytes of data", h.rng, h.dataLen)
		}
		// An accepted header written again reads back the same.
		again := append(h.marshal(), data[n:]...)
		if err := os.WriteFile(path, again, 0o600); err != nil {
			t.Fatal(err)
		}
		h2, n2, err := readHeader(file, int64(len(again)))
		if err != nil || h2 != h || n2 != n {
			t.Fatalf("rewritten header reads back as %+v, %d, %v; want %+v, %d", h2, n2, err, h, n)
		}
	})
}
