package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"bazil.org/fuse"
	fusefs "bazil.org/fuse/fs"
	"golang.org/x/sys/unix"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/remote"
)

// Sentinel errors for what the command line turns into advice.
var (
	ErrFusermountMissing = errors.New("fusermount3 not found on PATH: install the fuse3 package (apt-get install fuse3)")
	ErrMountpoint        = errors.New("bad mountpoint")
	ErrBusy              = errors.New("mount is busy")
	// ErrAlreadyMounted: a FUSE file system is mounted on the mountpoint.
	ErrAlreadyMounted = errors.New("already mounted")
	// ErrFuseDevice: /dev/fuse is missing or this user may not open it.
	ErrFuseDevice = errors.New("cannot use FUSE")
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
	// RefreshEvery is how often the store is revalidated on the origin;
	// 0 never (refresh on demand only).
	RefreshEvery time.Duration
	// ControlSocket, when set, is published on the mount root as
	// ControlXattr so that commands can find the daemon.
	ControlSocket string
	// NoPrefetch turns the readahead planner off: only what readers ask
	// for is fetched (explicit Prefetch still works).
	NoPrefetch bool
	Logger     *slog.Logger
}

// Session is a live mount.
type Session struct {
	cfg     Config
	conn    *fuse.Conn
	client  *remote.Client
	cache   *cache.Cache
	fs      *FS
	started time.Time
	served  chan error
	stop    context.CancelFunc // ends the refresh loop

	lastMu      sync.Mutex
	lastRefresh *RefreshReport

	sessionJobs // explicit prefetches (prefetch.go)
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
	}, rangeSource{client})
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
	fsys := newFS(store, client, c, cfg.Logger, cfg.AttrValid)
	fsys.controlSocket = cfg.ControlSocket
	if !cfg.NoPrefetch {
		fsys.planner = newPlanner(store, rangedSink{inner: cacheSink{c}, fs: fsys}, cfg.CacheBytes, cfg.Logger)
	}
	srv := fusefs.New(conn, nil)
	fsys.server = srv
	loopCtx, stop := context.WithCancel(context.Background())
	m = &Session{cfg: cfg, conn: conn, client: client, cache: c, fs: fsys, started: time.Now(), served: make(chan error, 1), stop: stop}
	go func() { m.served <- srv.Serve(fsys) }()
	fsys.planner.warmSmallArrays()
	if cfg.RefreshEvery > 0 {
		go m.refreshLoop(loopCtx, cfg.RefreshEvery)
	}
	return m, nil
}

// Store reports the store's current version.
func (m *Session) Store() *Store { return m.fs.current().Store }

// Refresh revalidates the store on the origin now and switches to its new
// version if it changed. An error (origin unreachable, store gone) leaves the
// mount serving the version it has.
func (m *Session) Refresh(ctx context.Context) (RefreshReport, error) {
	rep, err := m.fs.refresh(ctx)
	m.lastMu.Lock()
	m.lastRefresh = &rep
	m.lastMu.Unlock()
	if err != nil {
		m.cfg.Logger.Warn("refresh failed; still serving the last version of the store", "err", err)
	}
	return rep, err
}

func (m *Session) refreshLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, every+m.cfg.Remote.RetryDeadline)
			_, _ = m.Refresh(rctx)
			cancel()
		}
	}
}

// Stats is a snapshot of a mount's state and counters, for `zarrfs stats`.
type Stats struct {
	URL         string         `json:"url"`
	Mountpoint  string         `json:"mountpoint"`
	Format      int            `json:"zarr_format"`
	Source      string         `json:"tree_from"`
	Started     time.Time      `json:"started"`
	CacheDir    string         `json:"cache_dir"`
	CacheBytes  int64          `json:"cache_budget_bytes"`
	Cache       cache.Stats    `json:"cache"`
	Remote      remote.Stats   `json:"remote"` // traffic with the origin
	Prefetch    PrefetchStats  `json:"prefetch"`
	Ranged      RangedStats    `json:"ranged"` // shards and big objects read by blocks
	LastRefresh *RefreshReport `json:"last_refresh,omitempty"`
}

// Stats returns a snapshot of the mount's counters.
func (m *Session) Stats() Stats {
	m.lastMu.Lock()
	last := m.lastRefresh
	m.lastMu.Unlock()
	store := m.Store()
	return Stats{
		LastRefresh: last,
		URL:         m.cfg.URL,
		Mountpoint:  m.cfg.Mountpoint,
		Format:      store.Format,
		Source:      store.Source,
		Started:     m.started,
		CacheDir:    m.cfg.CacheDir,
		CacheBytes:  m.cfg.CacheBytes,
		Cache:       m.cache.Stats(),
		Remote:      m.client.Stats(),
		Prefetch:    m.PrefetchStats(),
		Ranged:      m.fs.ranged.Stats(),
	}
}

// rangeSource lets the cache read ranges of objects through the client.
type rangeSource struct{ *remote.Client }

func (s rangeSource) FetchRange(ctx context.Context, key, version string, off, n int64, w io.Writer) error {
	p, err := s.Client.FetchRange(ctx, key, version, off, n, w)
	if err == nil && p.Length != n {
		err = fmt.Errorf("fetch %s bytes %d-%d: got %d bytes of %d: %w", key, off, off+n-1, p.Length, p.Total, remote.ErrChanged)
	}
	return err
}

// Wait blocks until the file system is unmounted (by Unmount, by
// `zarrfs unmount` or fusermount3 from elsewhere), then releases resources.
func (m *Session) Wait() error {
	err := <-m.served
	m.release()
	return err
}

func (m *Session) release() {
	m.stop()
	m.fs.planner.close()
	m.fs.ranged.close()
	m.cancelJobs()
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
	if err == nil && IsDeadMount(dir) {
		err = syscall.ENOTCONN
	}
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %s does not exist: create it with mkdir -p %s", ErrMountpoint, dir, dir)
	case isDeadMount(err):
		return fmt.Errorf("%w: %s is a dead mount (its daemon exited): clean it with zarrfs unmount --lazy %s", ErrMountpoint, dir, dir)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: no permission to reach %s: choose a directory of your own, or fix the permissions of its parents", ErrMountpoint, dir)
	case err != nil:
		return fmt.Errorf("%w: %s: %v", ErrMountpoint, dir, err)
	case !st.IsDir():
		return fmt.Errorf("%w: %s is not a directory: mount on an empty directory (mkdir it first)", ErrMountpoint, dir)
	}
	if fstype, source, ok := MountedAt(dir); ok && strings.HasPrefix(fstype, "fuse") {
		what := "a FUSE file system (" + fstype + ")"
		if fstype == "fuse.zarrfs" {
			what = "a zarrfs mount of " + source
		}
		return fmt.Errorf("%w: %s already has %s on it (zarrfs unmount %s first)", ErrAlreadyMounted, dir, what, dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("%w: cannot read %s: %v", ErrMountpoint, dir, err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("%w: %s is not empty: mount on an empty directory (mkdir a new one)", ErrMountpoint, dir)
	}
	return nil
}

// isDeadMount says whether err is what the kernel answers on a FUSE mount
// whose daemon has gone ("Transport endpoint is not connected").
func isDeadMount(err error) bool {
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}

// IsDeadMount says whether dir is a FUSE mount whose daemon has gone. It
// asks statfs, which always reaches the daemon: stat may be answered from
// the kernel's attribute cache long after the daemon died.
func IsDeadMount(dir string) bool {
	var st unix.Statfs_t
	err := unix.Statfs(dir, &st)
	if errors.Is(err, unix.EIO) {
		// A daemon killed while the kernel waited on it can leave EIO
		// instead; a live zarrfs never fails statfs.
		fstype, _, _ := MountedAt(dir)
		return fstype == "fuse.zarrfs"
	}
	return isDeadMount(err)
}

// CleanDeadMount detaches a dead FUSE mount on dir (one whose daemon exited
// or was killed, so every access fails with "Transport endpoint is not
// connected") with fusermount3 -uz. It reports whether there was one.
func CleanDeadMount(dir string) (bool, error) {
	if !IsDeadMount(dir) {
		return false, nil
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return false, ErrFusermountMissing
	}
	out, err := exec.Command("fusermount3", "-u", "-z", "--", dir).CombinedOutput()
	if err != nil && os.Geteuid() == 0 {
		// fusermount3 refuses mounts it has no record of; root can detach any.
		if uerr := syscall.Unmount(dir, syscall.MNT_DETACH); uerr == nil {
			err = nil
		}
	}
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			msg = err.Error()
		}
		return false, fmt.Errorf("%w: %s is a dead mount (its daemon exited) and fusermount3 -uz could not remove it: %s", ErrMountpoint, dir, msg)
	}
	return true, nil
}

// MountedAt reports the file system type and source of the mount whose
// mountpoint is exactly dir, from /proc/self/mountinfo (the last one, if
// several are stacked).
func MountedAt(dir string) (fstype, source string, ok bool) {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", "", false
	}
	for _, line := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		left, right, found := strings.Cut(line, " - ")
		if !found {
			continue
		}
		lf, rf := strings.Fields(left), strings.Fields(right)
		if len(lf) < 5 || len(rf) < 2 || unescapeMountinfo(lf[4]) != dir {
			continue
		}
		fstype, source, ok = rf[0], unescapeMountinfo(rf[1]), true
	}
	return fstype, source, ok
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// fuseDevice is the kernel's FUSE device; fusermount3 opens it with the
// caller's own permissions.
const fuseDevice = "/dev/fuse"

// CheckFuseDevice says, with the fix, why this user cannot use FUSE: no
// /dev/fuse (module not loaded, or a container started without it), or no
// permission to open it.
func CheckFuseDevice() error {
	err := unix.Access(fuseDevice, unix.R_OK|unix.W_OK)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w: %s does not exist: load the FUSE module (sudo modprobe fuse), or in a container start it with --device /dev/fuse --cap-add SYS_ADMIN", ErrFuseDevice, fuseDevice)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		group := "the group that owns it"
		var st unix.Stat_t
		if unix.Stat(fuseDevice, &st) == nil {
			if g, gerr := user.LookupGroupId(strconv.Itoa(int(st.Gid))); gerr == nil && g.Name != "root" {
				group = "group " + g.Name + " (sudo usermod -aG " + g.Name + " $USER, then log in again)"
			}
		}
		return fmt.Errorf("%w: no permission to use %s: run as root, or have an administrator add you to %s or make it readable and writable by all (chmod 0666 %s, as Debian does)", ErrFuseDevice, fuseDevice, group, fuseDevice)
	default:
		return fmt.Errorf("%w: %s: %v", ErrFuseDevice, fuseDevice, err)
	}
}
