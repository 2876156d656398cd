package integration

// End-to-end tests of s3:// stores: a real S3-compatible server (versitygw,
// built from the Go module proxy, POSIX backend, loopback) holds the shared
// fixture stores; zarrfs mounts them with signed requests and the mounts are
// compared byte for byte with the fixture directories and read with
// zarr-python and zarrita, as for HTTP origins.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/internal/s3test"
)

const s3Bucket = "zarr"

// s3Env is the environment of a zarrfs that signs with the given keys: the
// machine's own AWS settings (profiles, instance metadata) are kept out.
func s3Env(access, secret string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "AWS_CA_BUNDLE=") {
			env = append(env, kv)
		}
	}
	env = append(env, "AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent")
	if access != "" {
		env = append(env, "AWS_ACCESS_KEY_ID="+access, "AWS_SECRET_ACCESS_KEY="+secret)
	}
	return append(env, extra...)
}

// s3Fixtures starts versitygw with the named fixture stores (all when none
// is named) in bucket "zarr" under fixtures/<serve>/<store>/.
func s3Fixtures(t *testing.T, names ...string) *s3test.Server {
	t.Helper()
	fuseReady.require(t)
	fixturesReady.require(t)
	srv := s3test.Start(t)
	srv.CreateBucket(t, s3Bucket)
	start := time.Now()
	n := 0
	for _, fx := range fixtureStores {
		if len(names) > 0 && !slices.Contains(names, fx.name) {
			continue
		}
		n += srv.PutDir(t, s3Bucket, s3Key(fx.serve, fx.store), filepath.Join(fixturesDir, fx.serve, fx.store))
	}
	t.Logf("uploaded %d files to versitygw in %s", n, time.Since(start).Round(time.Millisecond))
	return srv
}

func s3Key(serve, store string) string { return "fixtures/" + serve + "/" + store + "/" }

func s3URL(serve, store string) string {
	return "s3://" + s3Bucket + "/" + strings.TrimSuffix(s3Key(serve, store), "/")
}

// TestS3MountMatchesStore mounts every fixture store from versitygw, with a
// manifest built from ListObjectsV2 and without one (consolidated metadata,
// or directory listings for the zarr-python fixture, which has none), and
// checks the files byte for byte and the arrays with zarr-python / zarrita.
func TestS3MountMatchesStore(t *testing.T) {
	t.Parallel() // see parallelTests in main_test.go
	srv := s3Fixtures(t)
	for _, mode := range []string{"manifest", "no-manifest"} {
		for _, fx := range fixtureStores {
			t.Run(fx.name+"/"+mode, func(t *testing.T) {
				var extra []string
				if mode == "no-manifest" {
					extra = append(extra, "ZARRFS_S3_MANIFEST_MAX_KEYS=-1")
				}
				m := mountEnv(t, s3Env(s3test.RootAccess, s3test.RootSecret, extra...), s3URL(fx.serve, fx.store),
					"--s3-endpoint", srv.Endpoint)
				want := filepath.Join(fixturesDir, fx.serve, fx.store)
				start := time.Now()
				problems := compareTrees(want, m.Dir)
				for _, p := range problems {
					t.Error(p)
				}
				tree, _ := listTree(want)
				t.Logf("%s via s3 (%s): compared %d entries in %s, %d problems", fx.name, mode, len(tree), time.Since(start).Round(time.Millisecond), len(problems))
				for _, line := range strings.Split(m.output(), "\n") {
					if strings.Contains(line, "store discovered") {
						t.Logf("%s", line)
					}
				}
				switch {
				case strings.HasPrefix(fx.name, "zarr-python") || fx.name == "zarrita-v2":
					t.Run("zarr-python", func(t *testing.T) {
						pythonReady.require(t)
						out, err := runCompareV2(t, m.Dir, want)
						if err != nil {
							t.Fatalf("compare_v2.py: %v\n%s", err, out)
						}
						checkMostCompared(t, parseSummary(t, out))
					})
				case fx.name == "zarrita-v3":
					t.Run("zarrita", func(t *testing.T) {
						nodeReady.require(t)
						out, err := runCompareV3(t, m.Dir, want)
						if err != nil {
							t.Fatalf("compare_v3.mjs: %v\n%s", err, out)
						}
						checkMostCompared(t, parseSummary(t, out))
					})
				}
			})
		}
	}
}

// TestS3MountErrors: a wrong secret and a missing bucket fail the mount with
// one line that names the fix.
func TestS3MountErrors(t *testing.T) {
	t.Parallel() // see parallelTests in main_test.go
	fx := fixtureStores[1]
	srv := s3Fixtures(t, fx.name)
	for _, tc := range []struct {
		name string
		url  string
		env  []string
		want []string
	}{
		{"wrong secret", s3URL(fx.serve, fx.store), s3Env(s3test.RootAccess, "not-the-secret"), []string{"SignatureDoesNotMatch", "AWS_SECRET_ACCESS_KEY"}},
		{"unknown access key", s3URL(fx.serve, fx.store), s3Env("nobody", "not-the-secret"), []string{"AWS_ACCESS_KEY_ID"}},
		{"missing bucket", "s3://no-such-bucket/" + fx.store, s3Env(s3test.RootAccess, s3test.RootSecret), []string{"no-such-bucket", "does not exist"}},
		{"anonymous on a private bucket", s3URL(fx.serve, fx.store), s3Env("", ""), []string{"anonymous", "not public"}},
		{"wrong path", "s3://" + s3Bucket + "/fixtures/nothing-here.zarr", s3Env(s3test.RootAccess, s3test.RootSecret), []string{"no zarr store"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := newMountpoint(t)
			args := append([]string{"mount", "--foreground", "--cache-dir", filepath.Join(t.TempDir(), "cache"), "--s3-endpoint", srv.Endpoint}, retryArgs...)
			p := startZarrfs(t, tc.env, mnt, append(args, tc.url, mnt)...)
			if !p.waitExit(failWait) {
				t.Fatalf("zarrfs still running after %v", failWait)
			}
			if code := p.exitCode(); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			line := zarrfsLine(p.output(), tc.want...)
			if line == "" {
				t.Errorf("no line naming %q in:\n%s", tc.want, p.output())
			}
			if strings.Contains(p.output(), "not-the-secret") || strings.Contains(p.output(), s3test.RootSecret) {
				t.Errorf("a secret is in the output:\n%s", p.output())
			}
			if isFuseMount(mnt) {
				t.Error("something is mounted after a failed mount")
			}
			t.Logf("%s: %s", tc.name, line)
		})
	}
}

// TestS3FourMounts: four mounts of one store, each with its own cache, read
// it at the same time and all see exactly the fixture's bytes. The store is
// the v3 one (shards read by ranges); two mounts list it into a manifest,
// two go without one. (TestS3MountMatchesStore reads the 7,389-file store;
// four times that under -race took minutes of CI and proved nothing more.)
func TestS3FourMounts(t *testing.T) {
	t.Parallel() // see parallelTests in main_test.go
	fx := fixtureStores[2]
	srv := s3Fixtures(t, fx.name)
	want := filepath.Join(fixturesDir, fx.serve, fx.store)
	var mounts []*mounted
	for i := range 4 {
		var extra []string
		if i%2 == 1 {
			extra = append(extra, "ZARRFS_S3_MANIFEST_MAX_KEYS=-1")
		}
		mounts = append(mounts, mountEnv(t, s3Env(s3test.RootAccess, s3test.RootSecret, extra...), s3URL(fx.serve, fx.store), "--s3-endpoint", srv.Endpoint))
	}
	start := time.Now()
	var wg sync.WaitGroup
	problems := make([][]string, len(mounts))
	for i, m := range mounts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			problems[i] = compareTrees(want, m.Dir)
		}()
	}
	wg.Wait()
	for i, ps := range problems {
		for _, p := range ps {
			t.Errorf("mount %d: %s", i, p)
		}
	}
	t.Logf("4 mounts read %s concurrently in %s", fx.name, time.Since(start).Round(time.Millisecond))
}

// TestS3CredentialRotation: the mount's credentials come from a
// credential_process that hands out keys expiring in 3 s, as STS does. While
// mounted they rotate to a new key pair and the old pair is deleted once
// it expired; reads go on working without a remount.
func TestS3CredentialRotation(t *testing.T) {
	t.Parallel() // see parallelTests in main_test.go
	srv := s3Fixtures(t, fixtureStores[1].name)
	srv.CreateUser(t, "rot1", "rot1-secret-aaaaaaaaaaaa")
	srv.CreateUser(t, "rot2", "rot2-secret-bbbbbbbbbbbb")
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	calls := filepath.Join(dir, "calls")
	writeFile(t, keys, []byte("rot1 rot1-secret-aaaaaaaaaaaa\n"))
	script := filepath.Join(dir, "creds.sh")
	writeFile(t, script, []byte(fmt.Sprintf(`#!/bin/sh
read id secret < %[1]s
echo "$id" >> %[2]s
exp=$(date -u -d "@$(( $(date +%%s) + 3 ))" +%%Y-%%m-%%dT%%H:%%M:%%SZ)
printf '{"Version":1,"AccessKeyId":"%%s","SecretAccessKey":"%%s","Expiration":"%%s"}' "$id" "$secret" "$exp"
`, keys, calls)))
	if err := os.Chmod(script, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config")
	writeFile(t, cfg, []byte("[profile rotating]\ncredential_process = "+script+"\n"))
	env := s3Env("", "")
	env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "AWS_CONFIG_FILE=") })
	env = append(env, "AWS_CONFIG_FILE="+cfg, "AWS_PROFILE=rotating")

	fx := fixtureStores[1] // zarrita v2: one directory per array
	want := filepath.Join(fixturesDir, fx.serve, fx.store)
	m := mountEnv(t, env, s3URL(fx.serve, fx.store), "--s3-endpoint", srv.Endpoint)
	entries, err := os.ReadDir(want)
	if err != nil {
		t.Fatal(err)
	}
	var arrays []string
	for _, e := range entries {
		if e.IsDir() {
			arrays = append(arrays, e.Name())
		}
	}
	if len(arrays) < 4 {
		t.Fatalf("fixture has %d arrays", len(arrays))
	}
	half := len(arrays) / 2
	compare := func(names []string) {
		for _, a := range names {
			for _, p := range compareTrees(filepath.Join(want, a), filepath.Join(m.Dir, a)) {
				t.Errorf("%s: %s", a, p)
			}
		}
	}
	compare(arrays[:half])
	writeFile(t, keys, []byte("rot2 rot2-secret-bbbbbbbbbbbb\n"))
	time.Sleep(4 * time.Second) // every credential handed out as rot1 has expired
	srv.DeleteUser(t, "rot1")
	compare(arrays[half:])
	data, _ := os.ReadFile(calls)
	got := strings.Fields(string(data))
	if !slices.Contains(got, "rot1") || !slices.Contains(got, "rot2") {
		t.Errorf("credential_process handed out %v; want rot1 then rot2", got)
	}
	t.Logf("credential_process ran %d times: %v", len(got), got)
}

// TestGCSMount mounts gs:// stores served by fake-gcs-server's XML API on
// loopback (bearer token, path-style) and checks them byte for byte.
// fake-gcs-server ignores If-Match/If-None-Match and does not paginate
// listings; remote/s3's tests cover those against versitygw.
func TestGCSMount(t *testing.T) {
	fuseReady.require(t)
	fixturesReady.require(t)
	seed := t.TempDir()
	for _, fx := range fixtureStores[1:] { // the zarrita v2 and v3 stores
		copyTree(t, filepath.Join(fixturesDir, fx.serve, fx.store), filepath.Join(seed, "bkt", fx.serve, fx.store))
	}
	endpoint := s3test.StartFakeGCS(t, seed)
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokenFile, []byte("ya29.fake-token\n"))
	for _, fx := range fixtureStores[1:] {
		t.Run(fx.name, func(t *testing.T) {
			m := mountEnv(t, s3Env("", ""), "gs://bkt/"+fx.serve+"/"+fx.store, "--s3-endpoint", endpoint, "--token-file", tokenFile)
			want := filepath.Join(fixturesDir, fx.serve, fx.store)
			problems := compareTrees(want, m.Dir)
			for _, p := range problems {
				t.Error(p)
			}
			tree, _ := listTree(want)
			t.Logf("%s via gs://: compared %d entries, %d problems", fx.name, len(tree), len(problems))
		})
	}
}

// TestS3Refresh: an object rewritten in the bucket is seen after `zarrfs
// refresh`, and `zarrfs stats` reports the refresh.
func TestS3Refresh(t *testing.T) {
	fx := fixtureStores[1] // zarrita v2
	srv := s3Fixtures(t, fx.name)
	want := filepath.Join(fixturesDir, fx.serve, fx.store)
	var key string
	_ = filepath.WalkDir(want, func(p string, d os.DirEntry, err error) error {
		if err == nil && key == "" && d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".") {
			if fi, _ := d.Info(); fi != nil && fi.Size() > 8 {
				key, _ = filepath.Rel(want, p)
			}
		}
		return nil
	})
	if key == "" {
		t.Fatal("no chunk in the fixture")
	}
	orig, err := os.ReadFile(filepath.Join(want, key))
	if err != nil {
		t.Fatal(err)
	}
	m := mountEnv(t, s3Env(s3test.RootAccess, s3test.RootSecret), s3URL(fx.serve, fx.store), "--s3-endpoint", srv.Endpoint, "--refresh", "0")
	got, err := os.ReadFile(m.path(key))
	if err != nil || !bytes.Equal(got, orig) {
		t.Fatalf("read %s: %v (equal: %v)", key, err, bytes.Equal(got, orig))
	}
	changed := bytes.Clone(orig)
	for i := range changed {
		changed[i] ^= 0xff
	}
	srv.Put(t, s3Bucket, s3Key(fx.serve, fx.store), map[string][]byte{filepath.ToSlash(key): changed})
	out := refreshNow(t, m.Dir)
	got, err = os.ReadFile(m.path(key))
	if err != nil || !bytes.Equal(got, changed) {
		t.Fatalf("after refresh (%s) %s reads the old bytes: %v (old: %v)", strings.TrimSpace(out), key, err, bytes.Equal(got, orig))
	}
	if r := lastRefresh(t, m.Dir); r == nil || !r.Changed || r.ChangedKeys != 1 {
		t.Errorf("last refresh: %+v", r)
	}
	t.Logf("refresh: %s", strings.TrimSpace(out))
}

// gcsEnv is the environment of a zarrfs reading gs:// with Google's
// Application Default Credentials only from what extra says: the machine's
// own (GOOGLE_APPLICATION_CREDENTIALS, gcloud's login under HOME) are kept
// out.
func gcsEnv(t *testing.T, extra ...string) []string {
	var env []string
	for _, kv := range s3Env("", "") {
		if !strings.HasPrefix(kv, "GOOGLE_") && !strings.HasPrefix(kv, "GCE_METADATA_") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "ZARRFS_TOKEN=") {
			env = append(env, kv)
		}
	}
	return append(append(env, "HOME="+t.TempDir()), extra...)
}

// TestGCSMountADC mounts a private gs:// bucket (fake-gcs-server behind a
// proxy that refuses requests without a live token) with no --token-file:
// the tokens come from Application Default Credentials, a service account
// key in GOOGLE_APPLICATION_CREDENTIALS or gcloud's login under HOME, both
// naming a local token endpoint as token_uri. Without credentials the mount
// is anonymous and fails saying how to get credentials.
func TestGCSMountADC(t *testing.T) {
	fuseReady.require(t)
	fixturesReady.require(t)
	fx := fixtureStores[1] // zarrita v2
	seed := t.TempDir()
	copyTree(t, filepath.Join(fixturesDir, fx.serve, fx.store), filepath.Join(seed, "bkt", fx.serve, fx.store))
	ts := s3test.NewTokenServer(t, time.Hour)
	endpoint, counts := s3test.PrivateGCS(t, s3test.StartFakeGCS(t, seed), ts)
	url := "gs://bkt/" + fx.serve + "/" + fx.store
	want := filepath.Join(fixturesDir, fx.serve, fx.store)

	gcloudHome := t.TempDir()
	adc := filepath.Join(gcloudHome, ".config", "gcloud", "application_default_credentials.json")
	if err := os.MkdirAll(filepath.Dir(adc), 0o700); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(s3test.AuthorizedUser(t, ts.URL))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, adc, data)

	for _, c := range []struct {
		name string
		env  []string
	}{
		{"service account key", gcsEnv(t, "GOOGLE_APPLICATION_CREDENTIALS="+s3test.ServiceAccountKey(t, ts.URL))},
		{"gcloud login", append(gcsEnv(t), "HOME="+gcloudHome)},
	} {
		t.Run(c.name, func(t *testing.T) {
			issued := ts.Issued()
			m := mountEnv(t, c.env, url, "--s3-endpoint", endpoint)
			for _, p := range compareTrees(want, m.Dir) {
				t.Error(p)
			}
			passed, refused := counts()
			if ts.Issued() == issued || passed == 0 || refused != 0 {
				t.Errorf("tokens issued %d (before %d), requests let through %d, refused %d", ts.Issued(), issued, passed, refused)
			}
		})
	}

	t.Run("no credentials", func(t *testing.T) {
		mnt := newMountpoint(t)
		args := append([]string{"mount", "--foreground", "--cache-dir", filepath.Join(t.TempDir(), "cache"), "--s3-endpoint", endpoint}, retryArgs...)
		p := startZarrfs(t, gcsEnv(t), mnt, append(args, url, mnt)...)
		if !p.waitExit(failWait) {
			t.Fatalf("zarrfs still running after %v", failWait)
		}
		if line := zarrfsLine(p.output(), "anonymous", "gcloud auth application-default login", "--token-file"); line == "" {
			t.Errorf("no line saying how to get credentials in:\n%s", p.output())
		} else {
			t.Logf("no credentials: %s", line)
		}
		if isFuseMount(mnt) {
			t.Error("something is mounted after a failed mount")
		}
	})
}
