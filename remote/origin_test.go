package remote_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/origintest"
)

// staticOrigin serves dir as a plain static origin would: files with a
// strong ETag (a hash of the content) through http.ServeContent (ranges,
// If-None-Match, If-Match, If-Range), directory listings from Go's file
// server for paths ending in "/", and no manifest.
func staticOrigin(dir string) http.Handler {
	listings := http.FileServer(http.Dir(dir))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			listings.ServeHTTP(w, r)
			return
		}
		p := filepath.Join(dir, filepath.FromSlash(path.Clean(r.URL.Path)))
		data, err := os.ReadFile(p)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		fi, err := os.Stat(p)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		sum := sha256.Sum256(data)
		w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:16])+`"`)
		http.ServeContent(w, r, "", fi.ModTime(), bytes.NewReader(data))
	})
}

// TestOriginStatic checks the HTTP client's Origin contract over a static
// origin.
func TestOriginStatic(t *testing.T) {
	origintest.Run(t, func(t *testing.T, files map[string][]byte) origintest.Backend {
		dir := t.TempDir()
		origintest.WriteTree(t, dir, files)
		srv := httptest.NewServer(http.StripPrefix("/store.zarr", staticOrigin(dir)))
		t.Cleanup(srv.Close)
		o, err := remote.Open(srv.URL+"/store.zarr", remote.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(o.Close)
		return origintest.Backend{Origin: o, Put: origintest.PutFile(dir), Versioned: true, Lists: true}
	})
}
