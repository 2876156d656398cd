// Package s3test starts a real S3-compatible server for tests: versitygw
// (github.com/versity/versitygw) with its POSIX backend in a temporary
// directory, listening on loopback, with a root key pair and the admin API
// (to add and remove users). It is imported only from _test.go files.
//
// The binary comes from $ZARRFS_VERSITYGW, else from a cache under
// os.TempDir() where it is built once with `go install` from the Go module
// proxy (a few minutes the first time). When it cannot be had the test is
// skipped, or failed under CI=true: CI must never go green by skipping.
package s3test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/zarrfs/zarrfs/internal/testutil"
)

// VersitygwVersion is the versitygw release the tests build and run.
const VersitygwVersion = "v1.8.0"

// Root credentials of every server started here.
const (
	RootAccess = "zarrfsroot"
	RootSecret = "zarrfsroot-secret-0123456789"
)

// Server is one running versitygw.
type Server struct {
	Endpoint      string // http://127.0.0.1:PORT
	AdminEndpoint string // http://127.0.0.1:PORT of the admin API
	Dir           string // the POSIX backend's root: one directory per bucket
	bin           string
	Client        *s3.Client // signed with the root keys, path-style
}

var buildMu sync.Mutex

// missing skips t, or fails it under CI=true.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	reason := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing (CI=true, so this fails instead of skipping): %s", reason)
	}
	t.Skipf("skipping: %s (the test builds its server with go install from the Go module proxy, or takes it from $ZARRFS_VERSITYGW / $ZARRFS_FAKE_GCS_SERVER)", reason)
}

// Binary returns the path of a versitygw binary, building it if needed.
func Binary(t testing.TB) string {
	t.Helper()
	return tool(t, "ZARRFS_VERSITYGW", "versitygw", "github.com/versity/versitygw/cmd/versitygw", VersitygwVersion)
}

// FakeGCSVersion is the fake-gcs-server release the GCS tests run.
const FakeGCSVersion = "v1.56.1"

// FakeGCSBinary returns the path of a fake-gcs-server binary, building it
// if needed ($ZARRFS_FAKE_GCS_SERVER overrides).
func FakeGCSBinary(t testing.TB) string {
	t.Helper()
	return tool(t, "ZARRFS_FAKE_GCS_SERVER", "fake-gcs-server", "github.com/fsouza/fake-gcs-server", FakeGCSVersion)
}

// tool finds a test server binary: $envVar, else a cache under
// os.TempDir() where `go install pkg@version` builds it once (bounded).
func tool(t testing.TB, envVar, name, pkg, version string) string {
	t.Helper()
	if p := os.Getenv(envVar); p != "" {
		if _, err := os.Stat(p); err != nil {
			missing(t, "%s=%s: %v", envVar, p, err)
		}
		return p
	}
	dir := filepath.Join(os.TempDir(), "zarrfs-"+name+"-"+version)
	bin := filepath.Join(dir, name)
	buildMu.Lock()
	defer buildMu.Unlock()
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		missing(t, "cache dir: %v", err)
	}
	// Several test binaries may build at once: one takes the lock file.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		missing(t, "lock: %v", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		missing(t, "lock: %v", err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	t.Logf("building %s %s into %s (once; set %s to skip)", name, version, dir, envVar)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", pkg+"@"+version)
	cmd.Dir = dir // outside any module
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=", "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		missing(t, "go install %s@%s: %v\n%s", pkg, version, err, out)
	}
	return bin
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start runs a versitygw for the test and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	iam := filepath.Join(dir, "iam")
	for _, d := range []string{data, iam} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var lastErr error
	for try := 0; try < 3; try++ {
		port, aport := freePort(t), freePort(t)
		s := &Server{
			Endpoint:      "http://127.0.0.1:" + strconv.Itoa(port),
			AdminEndpoint: "http://127.0.0.1:" + strconv.Itoa(aport),
			Dir:           data,
			bin:           bin,
		}
		cmd := exec.Command(bin, "--access", RootAccess, "--secret", RootSecret,
			"--port", "127.0.0.1:"+strconv.Itoa(port), "--admin-port", "127.0.0.1:"+strconv.Itoa(aport),
			"--iam-dir", iam, "--quiet", "posix", data)
		if os.Getenv("VGW_KEEP_ALIVE") == "" {
			// versitygw closes the connection after every answer unless told otherwise;
			// S3 and GCS keep connections open, so the tests see the client as it runs
			// against them (the S3 benchmark sets VGW_KEEP_ALIVE=false for its variant).
			cmd.Env = append(os.Environ(), "VGW_KEEP_ALIVE=true")
		}
		logBuf, done, stop := startProcess(t, "versitygw", cmd)
		if err := waitListening(done, "127.0.0.1:"+strconv.Itoa(port), "127.0.0.1:"+strconv.Itoa(aport)); err != nil {
			stop()
			lastErr = fmt.Errorf("%v\nversitygw output:\n%s", err, logBuf.String())
			continue
		}
		t.Cleanup(stop)
		s.Client = s.NewClient(RootAccess, RootSecret)
		return s
	}
	t.Fatalf("versitygw did not start: %v", lastErr)
	return nil
}

// startProcess starts a test server in its own process group with its
// output kept; done receives its exit, and stop ends it (SIGTERM, then SIGKILL
// after 5 s) and waits for it.
func startProcess(t testing.TB, name string, cmd *exec.Cmd) (out *testutil.SyncBuffer, done <-chan error, stop func()) {
	t.Helper()
	out = &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	// exited is closed (so stop never waits on an exit someone else
	// received) and exitErr carries the exit to one reader (waitListening).
	exited := make(chan struct{})
	exitErr := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		close(exited)
		exitErr <- err
	}()
	return out, exitErr, func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
}

// waitListening waits (at most 20 s) until both addresses accept.
func waitListening(done <-chan error, addrs ...string) error {
	deadline := time.Now().Add(20 * time.Second)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case err := <-done:
				return fmt.Errorf("versitygw exited: %v", err)
			default:
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("versitygw not listening on %s after 20s", a)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// NewClient returns an S3 client for the server signed with the given keys.
func (s *Server) NewClient(access, secret string) *s3.Client {
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(access, secret, ""),
	})
}

// CreateBucket creates a bucket owned by root.
func (s *Server) CreateBucket(t testing.TB, bucket string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := s.Client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
}

// Put uploads files (key -> content) under prefix.
func (s *Server) Put(t testing.TB, bucket, prefix string, files map[string][]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for k, v := range files {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			key := prefix + k
			_, err := s.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(v)})
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("put %s: %w", key, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
}

// Admin runs `versitygw admin ARGS…` against the server as root.
func (s *Server) Admin(t testing.TB, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"admin", "--access", RootAccess, "--secret", RootSecret, "--endpoint-url", s.AdminEndpoint}, args...)
	out, err := exec.CommandContext(ctx, s.bin, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("versitygw %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// CreateUser adds a user with the admin role (full access).
func (s *Server) CreateUser(t testing.TB, access, secret string) {
	t.Helper()
	s.Admin(t, "create-user", "--access", access, "--secret", secret, "--role", "admin")
}

// DeleteUser removes a user: its keys stop working.
func (s *Server) DeleteUser(t testing.TB, access string) {
	t.Helper()
	s.Admin(t, "delete-user", "--access", access)
}

// PutDir uploads every regular file under dir to bucket under prefix (keys
// are slash paths relative to dir).
func (s *Server) PutDir(t testing.TB, bucket, prefix, dir string) int {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = data
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	s.Put(t, bucket, prefix, files)
	return len(files)
}

// StartFakeGCS runs fake-gcs-server on loopback over plain HTTP with the
// objects under seed (seed/BUCKET/KEY…) in memory, and returns its endpoint
// (for gs:// with an endpoint). It stops when the test ends.
func StartFakeGCS(t testing.TB, seed string) string {
	t.Helper()
	bin := FakeGCSBinary(t)
	var lastErr error
	for try := 0; try < 3; try++ {
		port := freePort(t)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		logBuf, done, stop := startProcess(t, "fake-gcs-server", exec.Command(bin, "-scheme", "http", "-host", "127.0.0.1", "-port", strconv.Itoa(port),
			"-public-host", addr, "-backend", "memory", "-data", seed, "-log-level", "warn"))
		if err := waitListening(done, addr); err != nil {
			stop()
			lastErr = fmt.Errorf("%v\nfake-gcs-server output:\n%s", err, logBuf.String())
			continue
		}
		t.Cleanup(stop)
		return "http://" + addr
	}
	t.Fatalf("fake-gcs-server did not start: %v", lastErr)
	return ""
}
