package remote

import (
	"encoding/hex"
	"strings"
	"testing"
)

func TestParsePin(t *testing.T) {
	hexd := strings.Repeat("ab", 32)
	var want [32]byte
	b, _ := hex.DecodeString(hexd)
	copy(want[:], b)
	colons := strings.ToUpper(strings.TrimSuffix(strings.Repeat("AB:", 32), ":"))
	tests := []struct {
		in string
		ok bool
	}{
		{"sha256:" + hexd, true},
		{"SHA256:" + strings.ToUpper(hexd), true},
		{"sha256:" + colons, true},
		{"  sha256:" + hexd + "\n", true},
		{hexd, false},
		{"sha1:" + hexd, false},
		{"sha256:" + hexd[:62], false},
		{"sha256:" + hexd + "ab", false},
		{"sha256:" + strings.Repeat("zz", 32), false},
		{"", false},
	}
	for _, tc := range tests {
		got, err := ParsePin(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != want) {
			t.Errorf("ParsePin(%q) = %x, %v; want ok=%v", tc.in, got, err, tc.ok)
		}
	}
}
