package remote

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/zarrfs/zarrfs/remote/wire"
)

// The wire formats a lying or broken server controls: the manifest stream
// and the Content-Range it sends. (The Range header a client sends is
// fuzzed in remote/serve.)

func FuzzDecodeManifest(f *testing.F) {
	valid := encodeManifest(f, []manifestEntry{
		{".zgroup", 24, `"e1"`}, {"a/.zarray", 300, `"e2"`}, {"a/0.0", 1 << 40, `"e3"`}, {"a/0.1", 7, ""}, {"ü/c/0/0", 3, `W/"w"`},
	})
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add(valid[:len(valid)-1])
	f.Add(encodeManifest(f, nil))
	f.Add([]byte(wire.Magic + "99\n"))
	f.Add([]byte("<html>not a manifest</html>"))
	flipped := bytes.Clone(valid)
	flipped[len(wire.Magic)+5] ^= 0x40
	f.Add(flipped)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeManifest(bytes.NewReader(data))
		if err != nil {
			if m != nil {
				t.Fatalf("a manifest and an error (%v)", err)
			}
			return
		}
		entries := manifestEntries(m)
		if len(entries) != m.Len() {
			t.Fatalf("Keys gave %d entries, Len %d", len(entries), m.Len())
		}
		for i, e := range entries {
			if i > 0 && e.key <= entries[i-1].key {
				t.Fatalf("keys out of order: %q after %q", e.key, entries[i-1].key)
			}
			if !wire.ValidKey([]byte(e.key)) || e.size < 0 {
				t.Fatalf("accepted entry %+v", e)
			}
			if size, v, ok := m.Lookup(e.key); !ok || size != e.size || v != e.version {
				t.Fatalf("Lookup(%q) = %d %q %v, listed %d %q", e.key, size, v, ok, e.size, e.version)
			}
		}
		// What was accepted encodes back to a manifest with the same entries.
		again, err := decodeManifest(bytes.NewReader(encodeManifest(t, entries)))
		if err != nil {
			t.Fatalf("re-encoded manifest: %v", err)
		}
		if got := manifestEntries(again); !slices.Equal(got, entries) {
			t.Fatalf("round trip differs:\n got %v\nwant %v", got, entries)
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{
		"bytes 0-99/1000", "bytes 10-10/11", "bytes 0-99/*", "bytes */1000", "bytes 5-4/10",
		"bytes 0-9/9", "bytes -1-3/10", "bytes  1 - 2 / 3", "bits 0-1/2", "bytes 0-9223372036854775807/9223372036854775807",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		first, last, total, ok := parseContentRange(s)
		if !ok {
			return
		}
		if first < 0 || last < first || total <= last {
			t.Fatalf("parseContentRange(%q) = %d-%d/%d", s, first, last, total)
		}
		canonical := fmt.Sprintf("bytes %d-%d/%d", first, last, total)
		if a, b, c, ok := parseContentRange(canonical); !ok || a != first || b != last || c != total {
			t.Fatalf("%q does not parse back (%d %d %d %v)", canonical, a, b, c, ok)
		}
	})
}
