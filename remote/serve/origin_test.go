package serve

import (
	"net/http/httptest"
	"testing"

	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/origintest"
)

// TestOriginServe checks the HTTP client's Origin contract over `zarrfs
// serve`: the handler, its directory listings and its manifest (from the
// index, kept current by inotify as the suite changes objects).
func TestOriginServe(t *testing.T) {
	origintest.Run(t, func(t *testing.T, files map[string][]byte) origintest.Backend {
		dir := t.TempDir()
		origintest.WriteTree(t, dir, files)
		ts, err := NewTokenSet(testToken)
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(Config{Dir: dir, Tokens: ts})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(s)
		t.Cleanup(func() {
			hs.Close()
			s.Close()
		})
		o, err := remote.Open(hs.URL, remote.Options{Token: testToken})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(o.Close)
		return origintest.Backend{Origin: o, Put: origintest.PutFile(dir), Versioned: true, Lists: true, Manifests: true}
	})
}
