package origintest

import (
	"os"
	"path/filepath"
	"testing"
)

// WriteTree writes files (store-relative key → content) below dir, for
// backends that serve a directory.
func WriteTree(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for k, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(k))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// PutFile is a Backend.Put for backends that serve dir: it replaces the
// file by a rename, as a writer that never exposes a half-written file
// does.
func PutFile(dir string) func(t *testing.T, key string, data []byte) {
	return func(t *testing.T, key string, data []byte) {
		t.Helper()
		p := filepath.Join(dir, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(filepath.Dir(p), ".put-"+filepath.Base(p))
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
	}
}
