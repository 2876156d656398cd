package remote

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/zarrfs/zarrfs/remote/wire"
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

// TestPinSelfSigned: a pinned client accepts exactly the pinned certificate
// (host name and CA not checked), refuses another one without retrying, and
// an unpinned client refuses a self-signed one. (TestPin in remote/serve
// does the same with the certificate `zarrfs serve` generates.)
func TestPinSelfSigned(t *testing.T) {
	conns := &atomic.Int32{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		io.WriteString(w, "chunk")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	ctx := context.Background()
	pin := wire.Fingerprint(srv.Certificate().Raw)

	c, err := New(strings.Replace(srv.URL, "127.0.0.1", "other.invalid.name.example", 1), Options{Pin: pin})
	if err != nil {
		t.Fatal(err)
	}
	c.tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
	}
	var buf bytes.Buffer
	if _, err := c.Fetch(ctx, "a/0.0", &buf); err != nil || buf.String() != "chunk" {
		t.Errorf("with the right pin, another host name: %q, %v", buf.String(), err)
	}

	wrong := "sha256:" + strings.Repeat("00", 32)
	conns.Store(0)
	c, _ = New(srv.URL, Options{Pin: wrong})
	_, err = c.Fetch(ctx, "a/0.0", io.Discard)
	var pm *PinMismatchError
	switch {
	case !errors.Is(err, ErrPinMismatch), !errors.Is(err, ErrTLS), !errors.As(err, &pm):
		t.Fatalf("wrong pin: %v, want a PinMismatchError (ErrPinMismatch, ErrTLS)", err)
	case pm.Seen != pin || pm.Want != wrong:
		t.Errorf("mismatch says seen %s want %s; the server's is %s", pm.Seen, pm.Want, pin)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("a pin mismatch was retried: %d connections, want 1", n)
	}

	c, _ = New(srv.URL, Options{})
	if _, err := c.Fetch(ctx, "a/0.0", io.Discard); !errors.Is(err, ErrTLS) || errors.Is(err, ErrPinMismatch) {
		t.Errorf("without a pin: %v, want ErrTLS", err)
	}
}
