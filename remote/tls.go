package remote

// The client's certificate pinning (--pin). The server's certificate
// (given, or generated once and kept in a state directory) is package
// remote/serve's.
//
// A pin is the SHA-256 of the DER leaf certificate, written "sha256:HEX".
// A pinned client accepts exactly that certificate and nothing else; the
// host name is not checked against it (a generated self-signed certificate
// names whatever the server machine believed its names were, not the name
// the client used). Without a pin the client verifies normally; it never
// skips verification otherwise.

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/zarrfs/zarrfs/remote/wire"
)

// ErrPinMismatch: the origin presented a certificate other than the pinned
// one. It wraps ErrTLS; the error itself is a *PinMismatchError.
var ErrPinMismatch = fmt.Errorf("%w: the server's certificate does not match --pin", ErrTLS)

// PinMismatchError says which certificate was seen and which was expected.
type PinMismatchError struct {
	Seen, Want string // "sha256:HEX"
}

func (e *PinMismatchError) Error() string {
	return fmt.Sprintf("the server's certificate has fingerprint %s, but --pin expects %s", e.Seen, e.Want)
}

func (e *PinMismatchError) Unwrap() error { return ErrPinMismatch }

// ParsePin parses "sha256:HEX" (also accepting upper case and the
// colon-separated form openssl prints) into a digest.
func ParsePin(pin string) ([sha256.Size]byte, error) {
	var out [sha256.Size]byte
	algo, digest, found := strings.Cut(strings.TrimSpace(pin), ":")
	if !found || !strings.EqualFold(algo, "sha256") {
		return out, fmt.Errorf("--pin %q: want sha256:HEX (64 hex digits), as printed by zarrfs serve", pin)
	}
	digest = strings.ReplaceAll(digest, ":", "")
	b, err := hex.DecodeString(digest)
	if err != nil || len(b) != sha256.Size {
		return out, fmt.Errorf("--pin %q: want sha256: followed by 64 hex digits, as printed by zarrfs serve", pin)
	}
	copy(out[:], b)
	return out, nil
}

// pinTLSConfig makes conf accept exactly the certificate whose DER has the
// digest pin. Standard verification is replaced (not merely skipped) by the
// pin check in VerifyConnection, which runs on every handshake, resumed
// ones included.
func pinTLSConfig(conf *tls.Config, pin string) error {
	want, err := ParsePin(pin)
	if err != nil {
		return err
	}
	wantStr := "sha256:" + hex.EncodeToString(want[:])
	conf.InsecureSkipVerify = true // replaced by VerifyConnection below
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return &tls.CertificateVerificationError{Err: errors.New("the server sent no certificate")}
		}
		leaf := cs.PeerCertificates[0]
		if sha256.Sum256(leaf.Raw) != want {
			// tls.CertificateVerificationError is what the client
			// classifies as a permanent TLS failure.
			return &tls.CertificateVerificationError{
				UnverifiedCertificates: cs.PeerCertificates,
				Err:                    &PinMismatchError{Seen: wire.Fingerprint(leaf.Raw), Want: wantStr},
			}
		}
		return nil
	}
	return nil
}
