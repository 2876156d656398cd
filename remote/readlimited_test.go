package remote

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestReadLimited(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), readBlock/4) // 2.5 blocks
	n := int64(len(body))
	tests := []struct {
		name    string
		r       io.Reader
		length  int64
		max     int64
		want    []byte
		wantErr error
	}{
		{"known length", bytes.NewReader(body), n, n, body, nil},
		{"known length, short body", bytes.NewReader(body[:10]), n, n, nil, io.ErrUnexpectedEOF},
		{"unknown length, within", bytes.NewReader(body), -1, n, body, nil},
		{"unknown length, empty", strings.NewReader(""), -1, 10, []byte{}, nil},
		{"unknown length, exact block", bytes.NewReader(body[:readBlock]), -1, readBlock, body[:readBlock], nil},
		{"unknown length, one byte over", bytes.NewReader(body), -1, n - 1, nil, errTooLarge},
		{"unknown length, endless", zeros{}, -1, 3 * readBlock, nil, errTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readLimited(tt.r, tt.length, tt.max)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if err == nil && !bytes.Equal(got, tt.want) {
				t.Fatalf("got %d bytes, want %d", len(got), len(tt.want))
			}
		})
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestGetRefusesOversizedDocuments: a document over the limit fails with a
// message naming the limit, whether the server says its length (refused
// before the body is read) or streams it without one.
func TestGetRefusesOversizedDocuments(t *testing.T) {
	const limit = 4 * readBlock
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sized" {
			w.Header().Set("Content-Length", "500000000")
		}
		buf := make([]byte, 64<<10)
		for i := 0; i < 500_000_000/len(buf); i++ {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	c, err := New(srv.URL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, key := range []string{"sized", "streamed"} {
		_, _, err := c.Get(context.Background(), key, limit)
		if err == nil || !strings.Contains(err.Error(), "4194304-byte limit") {
			t.Errorf("%s: %v, want the limit named", key, err)
		}
	}
}
