package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/pflag"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/fusefs"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/origins"
	"github.com/zarrfs/zarrfs/vfs/store"
)

// readyFDEnv names the file descriptor on which a detached daemon reports to
// the command that started it: "ok" once the mount is live, or the error.
const readyFDEnv = "ZARRFS_READY_FD"

// readyWait bounds how long `zarrfs mount` waits for its daemon. Discovery is
// itself bounded by the retry deadline; this only guards against a hang.
const readyWait = 5 * time.Minute

type mountFlags struct {
	foreground   bool
	cacheDir     string
	cacheSize    string
	cacheMinFree string
	tokenFile    string
	caCert       string
	pin          string
	allowOther   bool
	logLevel     string
	logFile      string
	retryTimeout time.Duration
	refresh      time.Duration
	attrTimeout  time.Duration
	metricsAddr  string
	prefetch     bool
	s3           s3Flags // --s3-* (origin.go)
}

func runMount(args []string) error {
	var f mountFlags
	fl := pflag.NewFlagSet("mount", pflag.ContinueOnError)
	fl.Usage = func() {
		fmt.Fprint(os.Stdout, `Usage: zarrfs mount [flags] URL MOUNTPOINT

Mount the zarr store at URL (https://, http://, s3:// or gs://) read-only on MOUNTPOINT, an
empty directory. Returns once the mount is live; the daemon keeps serving in
its own session (an interrupted notebook cell or a closed shell does not stop
it) until 'zarrfs unmount MOUNTPOINT'. Sizes take 512MiB, 10G, 1.5TiB.

Examples:
  zarrfs mount https://storage:8443/era5.zarr /content/era5
  ZARRFS_TOKEN=... zarrfs mount --pin sha256:9f86d0... https://storage:8443/era5.zarr /content/era5
  zarrfs mount --s3-endpoint https://minio:9000 s3://bucket/era5.zarr /mnt/era5
  zarrfs mount --cache-size 50G --token-file ~/.zarrfs-token https://host/d.zarr /mnt/d
  zarrfs mount --foreground --metrics-addr 127.0.0.1:9464 https://host/d.zarr /mnt/d   # systemd

For /etc/fstab (type zarrfs, options as -o cache_dir=...,token_file=...) see
'mount.zarrfs --help'.

Flags:
`)
		fl.SetOutput(os.Stdout)
		fl.PrintDefaults()
	}
	fl.BoolVarP(&f.foreground, "foreground", "f", false, "stay attached and log to stderr (for systemd and tests); SIGINT/SIGTERM unmount")
	fl.StringVar(&f.cacheDir, "cache-dir", "", "`DIR` for cached chunks (default ~/.cache/zarrfs/<hash of URL>)")
	fl.StringVar(&f.cacheSize, "cache-size", "10GiB", "byte budget of the chunk cache, a `SIZE` such as 512MiB or 10G")
	fl.StringVar(&f.cacheMinFree, "cache-min-free", "1GiB", "keep at least this `SIZE` free on the cache's file system (e.g. 0, 5G)")
	fl.StringVar(&f.tokenFile, "token-file", "", "`FILE` holding a bearer token for the origin (default: $ZARRFS_TOKEN)")
	fl.StringVar(&f.caCert, "ca-cert", "", "PEM `FILE` of a private CA to trust for the origin's certificate")
	fl.StringVar(&f.pin, "pin", "", "accept exactly the origin certificate with this fingerprint `sha256:HEX`, as printed by zarrfs serve")
	fl.BoolVar(&f.allowOther, "allow-other", false, "let other users read the mount (needs user_allow_other in /etc/fuse.conf unless root)")
	fl.StringVar(&f.logLevel, "log-level", "info", "`LEVEL` of the log: debug, info, warn or error")
	fl.StringVar(&f.logFile, "log-file", "", "log `FILE` of the background daemon (default <cache-dir>/zarrfs.log)")
	fl.DurationVar(&f.retryTimeout, "retry-timeout", 60*time.Second, "give up on an origin request after retrying this long")
	fl.DurationVar(&f.refresh, "refresh", 30*time.Second, "revalidate the store on the origin this often and show changes (0: only on 'zarrfs refresh')")
	fl.DurationVar(&f.attrTimeout, "attr-timeout", time.Hour, "how long the kernel caches names and sizes")
	fl.BoolVar(&f.prefetch, "prefetch", false, "start filling the cache with the whole store at mount time, when it fits --cache-size (see zarrfs stats)")
	addS3Flags(fl, &f.s3)
	fl.StringVar(&f.metricsAddr, "metrics-addr", "", "serve the mount's counters at http://`HOST:PORT`/metrics in Prometheus text format")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: mount: %v", errUsage, err)
	}
	if fl.NArg() != 2 {
		return fmt.Errorf("%w: mount takes two arguments, URL and MOUNTPOINT; got %d", errUsage, fl.NArg())
	}
	url, mnt := fl.Arg(0), fl.Arg(1)
	if f.cacheDir == "" {
		f.cacheDir = defaultCacheDir(url)
	}
	if abs, err := filepath.Abs(mnt); err == nil {
		mnt = abs
	}
	if abs, err := filepath.Abs(f.cacheDir); err == nil {
		f.cacheDir = abs
	}
	if os.Getenv(readyFDEnv) == "" { // a daemon's parent has checked already
		if err := checkMountFlags(f); err != nil {
			return err
		}
		if err := preflight(mnt, f.cacheDir); err != nil {
			return err
		}
	}
	if f.foreground || os.Getenv(readyFDEnv) != "" {
		return mountForeground(url, mnt, f)
	}
	return mountDetached(url, mnt, f, args)
}

func defaultCacheDir(url string) string {
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		switch {
		case err == nil:
			base = filepath.Join(home, ".cache")
		case os.Geteuid() == 0: // mount(8) and systemd run root without $HOME
			base = defaultRootCacheBase()
		default:
			base = filepath.Join(os.TempDir(), ".cache")
		}
	}
	sum := sha256.Sum256([]byte(url))
	return filepath.Join(base, "zarrfs", hex.EncodeToString(sum[:8]))
}

// mountDetached starts the daemon in its own session (so an interrupted
// notebook cell or a closed shell does not take it down) and waits until it
// reports that the mount is live or why it failed.
func mountDetached(url, mnt string, f mountFlags, args []string) error {
	// Fail fast on what can be checked here, before a daemon is started.
	if err := fusefs.CheckMountpoint(mnt); err != nil {
		return err
	}
	if err := os.MkdirAll(f.cacheDir, 0o700); err != nil {
		return fmt.Errorf("cache directory: %w", err)
	}
	logPath := f.logFile
	if logPath == "" {
		logPath = filepath.Join(f.cacheDir, "zarrfs.log")
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	defer logFile.Close()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(exe, append([]string{"mount", "--cache-dir", f.cacheDir}, args...)...)
	cmd.Env = append(os.Environ(), readyFDEnv+"=3")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start daemon: %w", err)
	}
	w.Close()
	pid := cmd.Process.Pid
	go func() { _ = cmd.Wait() }() // reap it if it dies while we wait

	msg := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(r, 64<<10))
		msg <- strings.TrimSpace(string(b))
	}()
	select {
	case m := <-msg:
		switch {
		case m == "ok":
			fmt.Printf("zarrfs: mounted %s on %s (daemon pid %d, log %s)\n", url, mnt, pid, logPath)
			return nil
		case strings.HasPrefix(m, "error: "):
			return errors.New(strings.TrimPrefix(m, "error: "))
		default:
			return fmt.Errorf("the mount daemon exited without reporting (see %s)%s", logPath, lastLines(logPath))
		}
	case <-time.After(readyWait):
		_ = cmd.Process.Kill()
		_ = fusefs.Unmount(mnt, true)
		return fmt.Errorf("the mount daemon did not become ready within %v (see %s)", readyWait, logPath)
	}
}

func lastLines(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return ": " + strings.Join(lines, " | ")
}

// mountForeground mounts and serves until unmounted or signalled. When started
// by mountDetached it reports readiness on the inherited descriptor.
func mountForeground(url, mnt string, f mountFlags) (err error) {
	var ready *os.File
	if s := os.Getenv(readyFDEnv); s != "" {
		fd, convErr := strconv.Atoi(s)
		if convErr == nil {
			ready = os.NewFile(uintptr(fd), "ready")
		}
		os.Unsetenv(readyFDEnv)
		signal.Ignore(syscall.SIGHUP)
	}
	report := func(msg string) {
		if ready != nil {
			_, _ = io.WriteString(ready, msg+"\n")
			_ = ready.Close()
			ready = nil
		}
	}
	defer func() {
		if err != nil {
			err = explain(err)
			report("error: " + oneLine(err.Error()))
		}
	}()

	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, f.logLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	size, err := humanize.ParseBytes(f.cacheSize)
	if err != nil || size == 0 {
		return fmt.Errorf("%w: --cache-size %q: want a size such as 512MiB or 10G", errUsage, f.cacheSize)
	}
	minFree, err := humanize.ParseBytes(f.cacheMinFree)
	if err != nil {
		return fmt.Errorf("%w: --cache-min-free %q: want a size such as 1GiB or 0", errUsage, f.cacheMinFree)
	}
	token, err := readToken(f.tokenFile)
	if err != nil {
		return err
	}

	sock, err := controlSocketPath(f.cacheDir)
	if err != nil {
		return err
	}
	var metricsLn net.Listener
	if f.metricsAddr != "" {
		if metricsLn, err = listenMetrics(f.metricsAddr); err != nil {
			return err
		}
		defer func() {
			if err != nil {
				metricsLn.Close()
			}
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	remoteOpts := remote.Options{
		Token:         token,
		CACertFile:    f.caCert,
		Pin:           f.pin,
		RetryDeadline: f.retryTimeout,
		UserAgent:     "zarrfs/" + version(),
		Logger:        log,
	}
	m, err := mountStore(ctx, mountConfig{
		URL:           url,
		Mountpoint:    mnt,
		Remote:        remoteOpts,
		CacheDir:      f.cacheDir,
		CacheBytes:    int64(size),
		CacheFree:     int64(minFree),
		AllowOther:    f.allowOther,
		AttrValid:     f.attrTimeout,
		ControlSocket: sock,
		RefreshEvery:  f.refresh,
		S3:            f.s3.options(f.tokenFile),
		PrefetchAll:   f.prefetch,
		Logger:        log,
	})
	if err != nil {
		if origins.IsObjectStore(url) {
			return adviseObjectStore(url, err)
		}
		return adviseOrigin(ctx, url, remoteOpts, err)
	}
	if metricsLn != nil {
		ms := serveMetrics(metricsLn, func() any { return m.Stats() }, log)
		defer ms.Close()
	}
	ctl, err := startControl(sock, controlMux(m), log)
	if err != nil {
		// The mount works without it; only stats and prefetch commands do not.
		log.Warn("no control socket: zarrfs stats and prefetch will not reach this mount", "err", err)
	} else {
		defer ctl.Close()
	}
	log.Info("mounted", "url", url, "mountpoint", mnt, "cache", f.cacheDir, "cache_size", humanize.IBytes(size), "pid", os.Getpid())
	report("ok")
	if f.foreground {
		notifyReady(log, url, mnt)
	}

	done := make(chan error, 1)
	go func() { done <- m.Wait() }()
	select {
	case err := <-done:
		log.Info("unmounted", append([]any{"mountpoint", mnt}, m.summary()...)...)
		return err
	case <-ctx.Done():
	}
	log.Info("signal received: unmounting", "mountpoint", mnt)
	if f.foreground {
		notifyStopping(log)
	}
	if err := m.Unmount(false); err != nil {
		log.Warn("mount busy: detaching it lazily; it disappears when its last user closes it", "err", err)
		if err := m.Unmount(true); err != nil {
			log.Error("lazy unmount failed", "err", err)
		}
	}
	select {
	case err := <-done:
		log.Info("unmounted", append([]any{"mountpoint", mnt}, m.summary()...)...)
		return err
	case <-time.After(30 * time.Second):
		return fmt.Errorf("file system still serving 30s after unmount of %s; exiting", mnt)
	}
}

func readToken(file string) (string, error) {
	if file == "" {
		return strings.TrimSpace(os.Getenv("ZARRFS_TOKEN")), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read --token-file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("--token-file %s is empty: put the token the server printed in it", file)
	}
	return token, nil
}

// explain puts the fix in front of an error the user can act on.
func explain(err error) error {
	var advice string
	var advised *advisedError
	switch {
	case errors.Is(err, errUsage), errors.Is(err, fusefs.ErrMountpoint), errors.Is(err, fusefs.ErrFusermountMissing),
		errors.Is(err, fusefs.ErrAlreadyMounted), errors.Is(err, fusefs.ErrFuseDevice), errors.Is(err, errCacheDir),
		errors.Is(err, cache.ErrLocked), errors.As(err, &advised):
		return err
	case strings.Contains(err.Error(), "user_allow_other"):
		advice = "--allow-other (allow_other) needs the line user_allow_other in /etc/fuse.conf when not mounting as root: add it, or drop the option"
	case errors.Is(err, remote.ErrNotTLS):
		advice = "the origin does not speak TLS on this port; use an http:// URL or the server's TLS port"
	case errors.Is(err, remote.ErrPinMismatch):
		advice = "the origin's TLS certificate is not the one --pin names; if the server generated a new certificate (its state directory was removed, or it runs on another machine), copy the new --pin from its output; otherwise something else answers at this address"
	case errors.Is(err, remote.ErrTLS):
		advice = "TLS certificate verification failed: for a zarrfs serve origin pass the --pin sha256:… it printed; for a private CA pass --ca-cert FILE"
	case errors.Is(err, remote.ErrUnreachable):
		advice = "cannot reach the origin; check the URL and that the server is running and reachable from here"
	case errors.Is(err, remote.ErrUnauthorized):
		advice = "the origin answered 401 Unauthorized: it needs a bearer token, or refused the one given; pass --token-file FILE or set ZARRFS_TOKEN"
	case errors.Is(err, remote.ErrForbidden):
		advice = "the origin answered 403 Forbidden: the token or the server's configuration denies access to this store"
	case errors.Is(err, store.ErrNotZarr):
		advice = "the URL is not a zarr store; point it at the store's root directory (the one holding .zgroup, .zarray, .zmetadata or zarr.json)"
	case errors.Is(err, store.ErrNoStructure):
		advice = `cannot learn the store's tree; on the storage machine consolidate its metadata with zarr.consolidate_metadata("PATH/TO/STORE") (zarr-python), or serve it from a server that lists directories`
	default:
		return err
	}
	return fmt.Errorf("%s: %w", advice, err)
}
