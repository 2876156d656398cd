package serve

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/wire"
)

func TestLoadOrCreateCert(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	first, err := LoadOrCreateCert(state, []string{"storage.example", "10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	if !first.Generated || !first.SelfSigned {
		t.Errorf("first start: Generated=%v SelfSigned=%v, want both", first.Generated, first.SelfSigned)
	}
	sum := sha256.Sum256(first.Cert.Leaf.Raw)
	if first.Fingerprint != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("fingerprint %s is not the SHA-256 of the DER leaf", first.Fingerprint)
	}
	if err := first.Cert.Leaf.VerifyHostname("storage.example"); err != nil {
		t.Error(err)
	}
	if err := first.Cert.Leaf.VerifyHostname("10.1.2.3"); err != nil {
		t.Error(err)
	}
	for _, f := range []string{StateKeyFile, StateCertFile} {
		fi, err := os.Stat(filepath.Join(state, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == StateKeyFile && fi.Mode().Perm() != 0o600 {
			t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
		}
	}
	if fi, _ := os.Stat(state); fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory mode %v, want 0700", fi.Mode().Perm())
	}
	again, err := LoadOrCreateCert(state, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.Generated || again.Fingerprint != first.Fingerprint {
		t.Errorf("second start: Generated=%v, fingerprint %s (was %s): want the same certificate kept", again.Generated, again.Fingerprint, first.Fingerprint)
	}
	os.Remove(filepath.Join(state, StateCertFile))
	if _, err := LoadOrCreateCert(state, nil); err == nil || !strings.Contains(err.Error(), "only one of") {
		t.Errorf("key without certificate: %v", err)
	}
}

// pinnedOrigin serves the test tree over TLS with a generated certificate
// and counts TLS connections.
func pinnedOrigin(t *testing.T) (url string, sc *Cert, conns *atomic.Int32) {
	t.Helper()
	served := serverTree(t)
	sc, err := LoadOrCreateCert(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Dir: served, NoAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(s)
	hs.TLS = TLSConfig(sc)
	conns = &atomic.Int32{}
	hs.Config.ErrorLog = log.New(io.Discard, "", 0)
	ln := hs.Listener
	hs.Listener = &countingListener{Listener: ln, n: conns}
	hs.StartTLS()
	t.Cleanup(func() { hs.Close(); s.Close() })
	return hs.URL + "/store.zarr", sc, conns
}

type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func TestPin(t *testing.T) {
	url, sc, conns := pinnedOrigin(t)
	ctx := context.Background()

	c, err := remote.New(url, remote.Options{Pin: sc.Fingerprint})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Fetch(ctx, "a/0.0", io.Discard); err != nil {
		t.Errorf("with the right pin: %v", err)
	}

	wrong := "sha256:" + strings.Repeat("00", 32)
	conns.Store(0)
	c, _ = remote.New(url, remote.Options{Pin: wrong})
	_, err = c.Fetch(ctx, "a/0.0", io.Discard)
	var pm *remote.PinMismatchError
	switch {
	case !errors.Is(err, remote.ErrPinMismatch), !errors.Is(err, remote.ErrTLS), !errors.As(err, &pm):
		t.Fatalf("wrong pin: %v, want a remote.PinMismatchError (remote.ErrPinMismatch, remote.ErrTLS)", err)
	case pm.Seen != sc.Fingerprint || pm.Want != wrong:
		t.Errorf("mismatch says seen %s want %s; the server's is %s", pm.Seen, pm.Want, sc.Fingerprint)
	case !strings.Contains(err.Error(), sc.Fingerprint) || !strings.Contains(err.Error(), wrong):
		t.Errorf("message does not name both fingerprints: %v", err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("a pin mismatch was retried: %d connections, want 1", n)
	}

	// Without a pin the self-signed certificate is refused (no silent trust).
	c, _ = remote.New(url, remote.Options{})
	if _, err := c.Fetch(ctx, "a/0.0", io.Discard); !errors.Is(err, remote.ErrTLS) || errors.Is(err, remote.ErrPinMismatch) {
		t.Errorf("without a pin: %v, want remote.ErrTLS", err)
	}
	// The generated certificate also works as --ca-cert.
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: sc.Cert.Leaf.Raw}), 0o644)
	c, _ = remote.New(strings.Replace(url, "127.0.0.1", "localhost", 1), remote.Options{CACertFile: caFile})
	if _, err := c.Fetch(ctx, "a/0.0", io.Discard); err != nil {
		t.Errorf("with the certificate as --ca-cert: %v", err)
	}

	if _, err := remote.New(strings.Replace(url, "https:", "http:", 1), remote.Options{Pin: sc.Fingerprint}); err == nil {
		t.Error("--pin with an http URL was accepted")
	}
	if _, err := remote.New(url, remote.Options{Pin: "sha256:nothex"}); err == nil {
		t.Error("a malformed pin was accepted")
	}
}

func TestLoadCertGiven(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM, err := generateSelfSigned([]string{"h"}, nowForTest())
	if err != nil {
		t.Fatal(err)
	}
	cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(cf, certPEM, 0o644)
	os.WriteFile(kf, keyPEM, 0o600)
	sc, err := LoadCert(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	cert, _ := x509.ParseCertificate(block.Bytes)
	if sc.Fingerprint != wire.Fingerprint(cert.Raw) || !sc.SelfSigned || sc.Generated {
		t.Errorf("LoadCert: %+v", sc)
	}
	if _, err := LoadCert(cf, cf); err == nil {
		t.Error("a certificate as its own key was accepted")
	}
}
