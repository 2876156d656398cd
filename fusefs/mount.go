package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/remote"
)

// Sentinel errors for what the command line turns into advice.
var (
	ErrFusermountMissing = errors.New("fusermount3 not found on PATH: install the fuse3 package (apt-get install fuse3)")
	ErrMountpoint        = errors.New("bad mountpoint")
	ErrBusy              = errors.New("mount is busy")
)

// Config is everything a mount needs.
type Config struct {
	URL        string
	Mountpoint string
	Remote     remote.Options
	// CacheDir, CacheBytes and CacheFree place and bound the chunk cache:
	// at most CacheBytes of entries, and at least CacheFree left free on
	// its file system.
	CacheDir   string
	CacheBytes int64
	CacheFree  int64
	AllowOther bool
	// AttrValid is how long the kernel may cache names and attributes.
	// Data under one version never changes, so this can be long.
	AttrValid time.Duration
	// ControlSocket, when set, is published on the mount root as
	// ControlXattr so that commands can find the daemon.
	ControlSocket string
	Logger        *slog.Logger
}

// Session is a live mount.
type Session struct {
	cfg     Config
	conn    *fuse.Conn
	client  *remote.Client
	cache   *cache.Cache
	store   *Store
	started time.Time
	served  chan error
}

// Mount discovers the store, mounts it and starts serving. It returns once the
// mount is live: reads of the mountpoint are answered from then on.
func Mount(ctx context.Context, cfg Config) (m *Session, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.AttrValid <= 0 {
		cfg.AttrValid = time.Hour
	}
	if err := CheckMountpoint(cfg.Mountpoint); err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return nil, ErrFusermountMissing
	}
	client, err := remote.New(cfg.URL, cfg.Remote)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			client.Close()
		}
	}()
	store, err := Discover(ctx, client)
	if err != nil {
		return nil, fmt.Errorf("read store metadata at %s: %w", cfg.URL, err)
	}
	cfg.Logger.Info("store discovered", "url", cfg.URL, "format", store.Format, "from", store.Source)

	c, err := cache.New(cache.Options{
		Dir:          cfg.CacheDir,
		MaxBytes:     cfg.CacheBytes,
		MinFreeBytes: cfg.CacheFree,
		Namespace:    cfg.URL,
		Logger:       cfg.Logger,
	}, client)
	if err != nil {
		return nil, fmt.Errorf("open cache: %w", err)
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()

	opts := []fuse.MountOption{
		fuse.FSName(cfg.URL),
		fuse.Subtype("zarrfs"),
		fuse.ReadOnly(),
		fuse.DefaultPermissions(),
		fuse.MaxReadahead(1 << 20),
	}
	if cfg.AllowOther {
		opts = append(opts, fuse.AllowOther())
	}
	conn, err := fuse.Mount(cfg.Mountpoint, opts...)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", cfg.Mountpoint, err)
	}
	m = &Session{cfg: cfg, conn: conn, client: client, cache: c, store: store, started: time.Now(), served: make(chan error, 1)}
	fsys := newFS(store, client, c, cfg.Logger, cfg.AttrValid)
	fsys.controlSocket = cfg.ControlSocket
	srv := fusefs.New(conn, nil)
	go func() { m.served <- srv.Serve(fsys) }()
	return m, nil
}

// Store reports what discovery found.
func (m *Session) Store() *Store { return m.store }

// Stats is a snapshot of a mount's state and counters, for `zarrfs stats`.
type Stats struct {
	URL        string      `json:"url"`
	Mountpoint string      `json:"mountpoint"`
	Format     int         `json:"zarr_format"`
	Source     string      `json:"tree_from"`
	Started    time.Time   `json:"started"`
	CacheDir   string      `json:"cache_dir"`
	CacheBytes int64       `json:"cache_budget_bytes"`
	Cache      cache.Stats `json:"cache"`
}

// Stats returns a snapshot of the mount's counters.
func (m *Session) Stats() Stats {
	return Stats{
		URL:        m.cfg.URL,
		Mountpoint: m.cfg.Mountpoint,
		Format:     m.store.Format,
		Source:     m.store.Source,
		Started:    m.started,
		CacheDir:   m.cfg.CacheDir,
		CacheBytes: m.cfg.CacheBytes,
		Cache:      m.cache.Stats(),
	}
}

// Wait blocks until the file system is unmounted (by Unmount, by
// `zarrfs unmount` or fusermount3 from elsewhere), then releases resources.
func (m *Session) Wait() error {
	err := <-m.served
	m.release()
	return err
}

func (m *Session) release() {
	_ = m.conn.Close()
	_ = m.cache.Close()
	m.client.Close()
}

// Unmount asks the kernel to detach the mount. A busy mount stays mounted
// unless lazy is set, in which case it is detached now and vanishes when its
// last user closes it.
func (m *Session) Unmount(lazy bool) error {
	return Unmount(m.cfg.Mountpoint, lazy)
}

// Unmount detaches the zarrfs mount at mountpoint.
func Unmount(mountpoint string, lazy bool) error {
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return ErrFusermountMissing
	}
	args := []string{"-u"}
	if lazy {
		args = []string{"-u", "-z"}
	}
	out, err := exec.Command("fusermount3", append(args, "--", mountpoint)...).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "busy") {
			return fmt.Errorf("unmount %s: %w", mountpoint, ErrBusy)
		}
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("unmount %s: %s", mountpoint, msg)
	}
	return nil
}

// CheckMountpoint says what is wrong with a mountpoint, with the fix.
func CheckMountpoint(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %s does not exist: create it with mkdir -p %s", ErrMountpoint, dir, dir)
	case errors.Is(err, syscall.ENOTCONN):
		return fmt.Errorf("%w: %s is a dead mount (its daemon exited): clean it with zarrfs unmount --lazy %s", ErrMountpoint, dir, dir)
	case err != nil:
		return fmt.Errorf("%w: %s: %v", ErrMountpoint, dir, err)
	case !st.IsDir():
		return fmt.Errorf("%w: %s is not a directory", ErrMountpoint, dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("%w: cannot read %s: %v", ErrMountpoint, dir, err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("%w: %s is not empty (is something already mounted there?): mount on an empty directory", ErrMountpoint, dir)
	}
	return nil
}
