package serve

// The server's certificate: given (LoadCert), or generated once as a
// self-signed certificate and kept in a state directory (LoadOrCreateCert),
// which clients then pin by its fingerprint (--pin).

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/zarrfs/zarrfs/remote/wire"
)

// Names of the files a generated certificate is kept in, in the state
// directory.
const (
	StateCertFile = "cert.pem"
	StateKeyFile  = "key.pem"
)

// Cert is the certificate a server presents.
type Cert struct {
	Cert        tls.Certificate
	Fingerprint string // "sha256:HEX" of the leaf
	SelfSigned  bool   // the leaf signs itself: clients need --pin (or --ca-cert)
	Generated   bool   // created by this call
	CertFile    string
	KeyFile     string
}

// LoadCert loads a PEM certificate chain and its key.
func LoadCert(certFile, keyFile string) (*Cert, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse TLS certificate %s: %w", certFile, err)
	}
	cert.Leaf = leaf
	selfSigned := leaf.CheckSignatureFrom(leaf) == nil && string(leaf.RawIssuer) == string(leaf.RawSubject)
	return &Cert{
		Cert:        cert,
		Fingerprint: wire.Fingerprint(leaf.Raw),
		SelfSigned:  selfSigned,
		CertFile:    certFile,
		KeyFile:     keyFile,
	}, nil
}

// LoadOrCreateCert returns the certificate kept in stateDir, generating a
// key and a self-signed certificate there on first use. The certificate
// names hosts (DNS names or IP addresses) for clients that verify it with
// --ca-cert instead of a pin; it is valid for 20 years because a pinned
// client identifies it by its hash, not by a chain or a date.
func LoadOrCreateCert(stateDir string, hosts []string) (*Cert, error) {
	certFile := filepath.Join(stateDir, StateCertFile)
	keyFile := filepath.Join(stateDir, StateKeyFile)
	_, certErr := os.Stat(certFile)
	_, keyErr := os.Stat(keyFile)
	switch {
	case certErr == nil && keyErr == nil:
		return LoadCert(certFile, keyFile)
	case certErr == nil || keyErr == nil:
		return nil, fmt.Errorf("state directory %s has only one of %s and %s: remove the other to generate a new pair (clients then need the new --pin)", stateDir, StateCertFile, StateKeyFile)
	case !errors.Is(certErr, os.ErrNotExist):
		return nil, fmt.Errorf("state directory: %w", certErr)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	certPEM, keyPEM, err := generateSelfSigned(hosts, time.Now())
	if err != nil {
		return nil, err
	}
	// Key first, exclusively: two servers starting at once must not end up
	// with a certificate and a key that do not belong together.
	if err := writeExclusive(keyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeExclusive(certFile, certPEM, 0o644); err != nil {
		return nil, err
	}
	sc, err := LoadCert(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	sc.Generated = true
	return sc, nil
}

func writeExclusive(file string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(file)
		return fmt.Errorf("write %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(file)
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}

// generateSelfSigned makes an ECDSA P-256 key and a self-signed certificate
// for hosts, returned as PEM.
func generateSelfSigned(hosts []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("generate certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "zarrfs serve", Organization: []string{"zarrfs"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // so it can also be given to clients as --ca-cert
	}
	seen := map[string]bool{}
	for _, h := range append([]string{"localhost", "127.0.0.1", "::1"}, hosts...) {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode TLS key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}

// TLSConfig is the TLS configuration `zarrfs serve` uses: TLS 1.2 or
// later, HTTP/2 and HTTP/1.1.
func TLSConfig(sc *Cert) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{sc.Cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}
}
