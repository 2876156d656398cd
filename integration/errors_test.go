package integration

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// failWait bounds how long a failing mount may take to give up.
const failWait = 2 * time.Minute

// TestMountErrors: each way a mount can fail exits 1 with one stderr line "zarrfs: ..." that
// names the problem, in the foreground and in the default (detached) mode, and leaves nothing
// mounted.
func TestMountErrors(t *testing.T) {
	fuseReady.require(t)
	fixturesReady.require(t)
	v2 := filepath.Join(fixturesDir, "zarrita", "v2")
	noConsolidated := filepath.Join(fixturesDir, "zarr-python-2.13")

	notZarr := t.TempDir()
	writeFile(t, filepath.Join(notZarr, "README.txt"), []byte("just some files\n"))
	if err := os.Mkdir(filepath.Join(notZarr, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(notZarr, "sub", "data.bin"), []byte{1, 2, 3})

	wrongToken := filepath.Join(t.TempDir(), "token")
	writeFile(t, wrongToken, []byte("not-the-token\n"))

	noFusermount := t.TempDir() // an empty directory as PATH: no fusermount3 anywhere

	tests := []struct {
		name string
		// setup returns the URL to mount, the mount point, extra arguments and the environment
		// (nil: inherit).
		setup func(t *testing.T) (url, mnt string, args, env []string)
		want  []string
	}{
		{"origin unreachable", func(t *testing.T) (string, string, []string, []string) {
			return closedPortURL(t), newMountpoint(t), retryArgs, nil
		}, []string{"cannot reach"}},
		{"TLS certificate not trusted", func(t *testing.T) (string, string, []string, []string) {
			return newOrigin(t, v2, withTLS()).URL("data.zarr"), newMountpoint(t), nil, nil
		}, []string{"--ca-cert"}},
		{"401 without a token", func(t *testing.T) (string, string, []string, []string) {
			return newOrigin(t, v2, withToken("s3cret")).URL("data.zarr"), newMountpoint(t), nil, envWithout("ZARRFS_TOKEN")
		}, []string{"401", "token"}},
		{"401 with a wrong --token-file", func(t *testing.T) (string, string, []string, []string) {
			return newOrigin(t, v2, withToken("s3cret")).URL("data.zarr"), newMountpoint(t), []string{"--token-file", wrongToken}, envWithout("ZARRFS_TOKEN")
		}, []string{"401", "token"}},
		{"403", func(t *testing.T) (string, string, []string, []string) {
			forbid := func(*http.Request) int { return http.StatusForbidden }
			return newOrigin(t, v2, withStatus(forbid)).URL("data.zarr"), newMountpoint(t), nil, nil
		}, []string{"403"}},
		{"not a zarr store", func(t *testing.T) (string, string, []string, []string) {
			return newOrigin(t, notZarr).URL(""), newMountpoint(t), nil, nil
		}, []string{"not a zarr store"}},
		{"no consolidated metadata and no listing", func(t *testing.T) (string, string, []string, []string) {
			return newOrigin(t, noConsolidated, withoutListings()).URL("fixture"), newMountpoint(t), nil, nil
		}, []string{"consolidate_metadata"}},
		{"mountpoint missing", func(t *testing.T) (string, string, []string, []string) {
			return newOrigin(t, v2).URL("data.zarr"), filepath.Join(t.TempDir(), "no-such-dir"), nil, nil
		}, []string{"does not exist"}},
		{"mountpoint not empty", func(t *testing.T) (string, string, []string, []string) {
			mnt := newMountpoint(t)
			writeFile(t, filepath.Join(mnt, "something"), []byte("x"))
			return newOrigin(t, v2).URL("data.zarr"), mnt, nil, nil
		}, []string{"not empty"}},
		{"fusermount3 not on PATH", func(t *testing.T) (string, string, []string, []string) {
			return newOrigin(t, v2).URL("data.zarr"), newMountpoint(t), nil, append(envWithout("PATH"), "PATH="+noFusermount)
		}, []string{"fuse3"}},
	}
	for _, mode := range []string{"foreground", "detached"} {
		for _, tc := range tests {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				url, mnt, args, env := tc.setup(t)
				full := []string{"mount"}
				if mode == "foreground" {
					full = append(full, "--foreground")
				} else {
					cleanupDaemons(t, mnt)
				}
				full = append(full, defaultMountArgs(t, args)...)
				full = append(full, url, mnt)
				start := time.Now()
				p := startZarrfs(t, env, mnt, full...)
				deadline := time.Now().Add(failWait)
				for !p.exited() && !isFuseMount(mnt) && time.Now().Before(deadline) {
					time.Sleep(50 * time.Millisecond)
				}
				if isFuseMount(mnt) {
					t.Fatalf("mounted, but the mount should have failed with %q", tc.want)
				}
				if !p.waitExit(time.Second) {
					t.Fatalf("still running after %v; want exit 1 with %q", failWait, tc.want)
				}
				if code := p.exitCode(); code != 1 {
					t.Errorf("exit status %d, want 1", code)
				}
				if n := strings.Count("\n"+p.output(), "\nzarrfs: "); n != 1 {
					t.Errorf("%d stderr lines start with %q, want exactly one", n, "zarrfs: ")
				}
				if line := zarrfsLine(p.output(), tc.want...); line == "" {
					t.Errorf("no stderr line starting %q containing %q (zarrfs output follows)", "zarrfs: ", tc.want)
				} else {
					t.Logf("after %.1fs: %s", time.Since(start).Seconds(), line)
				}
			})
		}
	}
}

// envWithout is the test's environment minus the named variable.
func envWithout(name string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, name+"=") {
			env = append(env, kv)
		}
	}
	return env
}

// TestMountSucceedsWithCredentials is the other side of the TLS and 401 cases: with the CA
// certificate or the right token (--token-file or ZARRFS_TOKEN) the same origins mount and
// read correctly.
func TestMountSucceedsWithCredentials(t *testing.T) {
	fixturesReady.require(t)
	v2 := filepath.Join(fixturesDir, "zarrita", "v2")
	goodToken := filepath.Join(t.TempDir(), "token")
	writeFile(t, goodToken, []byte("s3cret\n"))
	tests := []struct {
		name  string
		setup func(t *testing.T) (url string, args, env []string)
	}{
		{"TLS with --ca-cert", func(t *testing.T) (string, []string, []string) {
			o := newOrigin(t, v2, withTLS())
			return o.URL("data.zarr"), []string{"--ca-cert", o.caPEM}, nil
		}},
		{"token from --token-file", func(t *testing.T) (string, []string, []string) {
			return newOrigin(t, v2, withToken("s3cret")).URL("data.zarr"), []string{"--token-file", goodToken}, envWithout("ZARRFS_TOKEN")
		}},
		{"token from ZARRFS_TOKEN", func(t *testing.T) (string, []string, []string) {
			return newOrigin(t, v2, withToken("s3cret")).URL("data.zarr"), nil, append(envWithout("ZARRFS_TOKEN"), "ZARRFS_TOKEN=s3cret")
		}},
		{"TLS with --ca-cert and a token", func(t *testing.T) (string, []string, []string) {
			o := newOrigin(t, v2, withTLS(), withToken("s3cret"))
			return o.URL("data.zarr"), []string{"--ca-cert", o.caPEM, "--token-file", goodToken}, envWithout("ZARRFS_TOKEN")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url, args, env := tc.setup(t)
			m := mountEnv(t, env, url, args...)
			for _, key := range []string{".zmetadata", "2d.chunked.i2/.zarray", "2d.chunked.i2/1.0", "my group with spaces/.zgroup"} {
				want, err := os.ReadFile(filepath.Join(v2, "data.zarr", filepath.FromSlash(key)))
				if err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(m.path(key))
				if err != nil {
					t.Errorf("read %s through the mount: %v", key, err)
				} else if !bytes.Equal(got, want) {
					t.Errorf("%s: %d bytes through the mount differ from the origin's %d", key, len(got), len(want))
				}
			}
		})
	}
}
