package wire

import (
	"crypto/sha256"
	"encoding/hex"
)

// Fingerprint returns "sha256:HEX" of a DER certificate: the form
// `zarrfs serve` prints and --pin takes.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}
