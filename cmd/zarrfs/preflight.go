package main

// Checks made before a mount starts, so that the common mistakes fail at
// once with one line naming the fix, instead of deep inside the daemon, and
// advice for the failures only the origin can reveal.

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"golang.org/x/sys/unix"

	"github.com/zarrfs/zarrfs/fusefs"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/vfs/store"
)

// errCacheDir marks a cache directory zarrfs cannot use.
var errCacheDir = errors.New("cache directory unusable")

// preflight checks the mountpoint, fusermount3, the cache directory and
// /dev/fuse, in that order. A dead
// mount left on the mountpoint by a daemon that was killed is detached
// first, with a note on stderr.
func preflight(mnt, cacheDir string) error {
	cleaned, err := fusefs.CleanDeadMount(mnt)
	if err != nil {
		return err
	}
	if cleaned {
		fmt.Fprintf(os.Stderr, "zarrfs: note: %s was a dead mount (its daemon had exited); detached it with fusermount3 -uz\n", mnt)
	}
	if err := fusefs.CheckMountpoint(mnt); err != nil {
		return err
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return fusefs.ErrFusermountMissing
	}
	if err := checkCacheDir(cacheDir); err != nil {
		return err
	}
	return fusefs.CheckFuseDevice()
}

// checkMountFlags checks the flag values the daemon would otherwise reject
// only after detaching, so that a typo is a usage error (exit 2) at once.
func checkMountFlags(f mountFlags) error {
	if size, err := humanize.ParseBytes(f.cacheSize); err != nil || size == 0 {
		return fmt.Errorf("%w: --cache-size %q: want a size such as 512MiB or 10G", errUsage, f.cacheSize)
	}
	if _, err := humanize.ParseBytes(f.cacheMinFree); err != nil {
		return fmt.Errorf("%w: --cache-min-free %q: want a size such as 1GiB or 0", errUsage, f.cacheMinFree)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, f.logLevel)
	}
	_, err := readToken(f.tokenFile)
	return err
}

// checkCacheDir creates the cache directory if needed and checks that this
// user can write in it.
func checkCacheDir(dir string) error {
	fix := "pass --cache-dir DIR (cache_dir=DIR in fstab) with a directory you can write, on a disk with room for --cache-size"
	err := os.MkdirAll(dir, 0o700)
	if err == nil {
		err = unix.Access(dir, unix.W_OK|unix.X_OK)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EROFS):
		return fmt.Errorf("%w: %s is on a read-only file system: %s", errCacheDir, dir, fix)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: %s is not writable by this user (uid %d): %s", errCacheDir, dir, os.Getuid(), fix)
	case errors.Is(err, unix.ENOTDIR), errors.Is(err, os.ErrExist):
		return fmt.Errorf("%w: %s (or a parent) is a file, not a directory: %s", errCacheDir, dir, fix)
	default:
		return fmt.Errorf("%w: %s: %v: %s", errCacheDir, dir, err, fix)
	}
}

// advisedError carries advice that already names the fix; explain passes it
// through unchanged.
type advisedError struct {
	advice string
	err    error
	alone  bool // the advice says all the cause would: leave the cause out of the message
}

func (e *advisedError) Error() string {
	if e.alone {
		return e.advice
	}
	return e.advice + ": " + e.err.Error()
}
func (e *advisedError) Unwrap() error { return e.err }

// adviseOrigin refines errors whose fix depends on details of the origin's
// answer: a URL with no zarr metadata (a wrong path, or a directory one
// level above the store), an unresolvable host, or a certificate problem.
func adviseOrigin(ctx context.Context, storeURL string, opts remote.Options, err error) error {
	var (
		dnsErr    *net.DNSError
		statusErr *remote.StatusError
	)
	switch {
	case errors.Is(err, remote.ErrUnauthorized) && opts.Token != "":
		return &advisedError{advice: "the origin refused the token (401 Unauthorized): put the token the server printed in --token-file or ZARRFS_TOKEN (zarrfs serve keeps it in its state directory, file token)", err: err}
	case errors.Is(err, remote.ErrUnauthorized):
		return &advisedError{advice: "the origin needs a bearer token (401 Unauthorized): pass --token-file FILE or set ZARRFS_TOKEN to the token the server printed", err: err}
	case errors.As(err, &statusErr) && statusErr.Code == 400 && strings.HasPrefix(storeURL, "http://"):
		return &advisedError{advice: "the origin answered 400 Bad Request to plain HTTP: if this port serves HTTPS (zarrfs serve does unless --insecure-http), use an https:// URL", err: err}
	case errors.Is(err, store.ErrNotZarr):
		return &advisedError{advice: describeNotZarr(ctx, storeURL, opts), err: err, alone: true}
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return &advisedError{advice: fmt.Sprintf("cannot resolve host %s: check the host name in the URL (or this machine's DNS)", dnsErr.Name), err: err}
	case errors.As(err, &dnsErr):
		return &advisedError{advice: fmt.Sprintf("cannot resolve host %s (%s): check this machine's DNS and network, and the host name in the URL", dnsErr.Name, dnsErr.Err), err: err}
	}
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
	)
	switch {
	case errors.Is(err, remote.ErrPinMismatch) || errors.Is(err, remote.ErrNotTLS):
		return err // explain has the advice
	case errors.As(err, &unknownAuthority):
		return &advisedError{advice: "the origin's TLS certificate is signed by an unknown authority (self-signed, or a private CA): for a zarrfs serve origin pass the --pin sha256:… it printed; otherwise pass --ca-cert FILE with the CA's PEM certificate", err: err}
	case errors.As(err, &hostname):
		return &advisedError{advice: fmt.Sprintf("the origin's TLS certificate is not valid for the host %s: use a host name the certificate names in the URL, or --pin its fingerprint", hostOf(storeURL)), err: err}
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return &advisedError{advice: "the origin's TLS certificate has expired or is not yet valid: renew it on the server, or check this machine's clock", err: err}
	}
	return err
}

// describeNotZarr says what the origin has at a URL with no zarr metadata.
func describeNotZarr(ctx context.Context, storeURL string, opts remote.Options) string {
	opts.RetryDeadline = 10 * time.Second
	opts.Logger = nil
	c, err := remote.New(storeURL, opts)
	if err != nil {
		return "no zarr store at " + storeURL
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	entries, err := c.List(ctx, "")
	if err != nil {
		return fmt.Sprintf("no zarr store at %s: the origin answered 404 Not Found for .zmetadata, zarr.json, .zgroup and .zarray; check the URL's path: it must name the store's root directory", storeURL)
	}
	var stores, names []string
	for _, e := range entries {
		name := e.Name
		if e.IsDir {
			name += "/"
		}
		names = append(names, name)
		if e.IsDir && (strings.HasSuffix(e.Name, ".zarr") || strings.HasSuffix(e.Name, ".zarr3")) {
			stores = append(stores, e.Name)
		}
	}
	switch {
	case len(stores) > 0:
		return fmt.Sprintf("%s is not a zarr store but a directory holding %s; mount one of them, e.g. %s", storeURL, listSome(stores, 4), strings.TrimSuffix(storeURL, "/")+"/"+stores[0])
	case len(names) == 0:
		return fmt.Sprintf("%s is not a zarr store: it is an empty directory; check the URL's path: it must name the store's root directory", storeURL)
	default:
		return fmt.Sprintf("%s is not a zarr store: the directory holds %s but none of .zmetadata, zarr.json, .zgroup or .zarray; point the URL at the store's root directory", storeURL, listSome(names, 4))
	}
}

func listSome(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:n], ", ") + fmt.Sprintf(" and %d more", len(names)-n)
}

func hostOf(storeURL string) string {
	if u, err := url.Parse(storeURL); err == nil {
		return u.Hostname()
	}
	return storeURL
}

// defaultRootCacheBase is where root keeps caches when it has no home
// directory (mount(8) and systemd run helpers without $HOME).
func defaultRootCacheBase() string { return filepath.Join("/var", "cache") }
