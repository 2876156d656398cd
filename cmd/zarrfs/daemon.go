package main

// The composition root of a mount: the origin, the cache, the file system
// core, the readahead planner and the FUSE adapter are built here from the
// command line's options, each handed its collaborators explicitly, and
// torn down here in the reverse order.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/zarrfs/zarrfs/cache"
	"github.com/zarrfs/zarrfs/fusefs"
	"github.com/zarrfs/zarrfs/readahead"
	"github.com/zarrfs/zarrfs/remote"
	"github.com/zarrfs/zarrfs/remote/origins"
	"github.com/zarrfs/zarrfs/remote/s3"
	"github.com/zarrfs/zarrfs/vfs"
	"github.com/zarrfs/zarrfs/vfs/store"
)

// mountConfig is everything a mount needs.
type mountConfig struct {
	URL        string
	Mountpoint string
	Remote     remote.Options
	// S3 configures s3:// and gs:// origins.
	S3 s3.Options
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
	// fusefs.ControlXattr so that commands can find the daemon.
	ControlSocket string
	// NoPrefetch turns the readahead planner off: only what readers ask
	// for is fetched (explicit prefetch still works).
	NoPrefetch bool
	// PrefetchAll starts fetching the whole store at mount time when it
	// fits the cache budget.
	PrefetchAll bool
	Logger      *slog.Logger
}

// session is a live mount.
type session struct {
	cfg     mountConfig
	origin  remote.Origin
	cache   *cache.Cache
	fs      *vfs.FS
	planner *readahead.Planner // nil with NoPrefetch
	mount   *fusefs.Mount
	started time.Time
	stop    context.CancelFunc // ends the refresh loop
}

// mountStore discovers the store, mounts it and starts serving. It returns
// once the mount is live: reads of the mountpoint are answered from then on.
func mountStore(ctx context.Context, cfg mountConfig) (m *session, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.AttrValid <= 0 {
		cfg.AttrValid = time.Hour
	}
	if err := fusefs.CheckMountpoint(cfg.Mountpoint); err != nil {
		return nil, err
	}
	if err := fusefs.CheckFusermount(); err != nil {
		return nil, err
	}
	origin, err := origins.Open(ctx, cfg.URL, origins.Options{Remote: cfg.Remote, S3: cfg.S3})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			origin.Close()
		}
	}()
	st, err := store.Discover(ctx, origin)
	if err != nil {
		return nil, fmt.Errorf("read store metadata at %s: %w", cfg.URL, err)
	}
	cfg.Logger.Info("store discovered", "url", cfg.URL, "format", st.Format, "from", st.Source, "nodes_left_out", len(st.Skipped))
	store.WarnSkipped(cfg.Logger, st.Skipped, nil)

	c, err := cache.New(cache.Options{
		Dir:          cfg.CacheDir,
		MaxBytes:     cfg.CacheBytes,
		MinFreeBytes: cfg.CacheFree,
		Namespace:    cfg.URL,
		Logger:       cfg.Logger,
	}, vfs.OriginSource{Origin: origin})
	if err != nil {
		return nil, fmt.Errorf("open cache: %w", err)
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()

	fsys := vfs.New(st, origin, c, vfs.Options{Logger: cfg.Logger, AttrValid: cfg.AttrValid})
	defer func() {
		if err != nil {
			fsys.Close()
		}
	}()
	var planner *readahead.Planner
	if !cfg.NoPrefetch {
		planner = readahead.New(st, fsys.PrefetchSink(), cfg.CacheBytes, cfg.Logger)
		fsys.UsePlanner(planner)
	}
	mnt, err := fusefs.Serve(cfg.Mountpoint, fsys, fusefs.MountOptions{
		FSName:     cfg.URL,
		AllowOther: cfg.AllowOther,
		Options:    fusefs.Options{ControlSocket: cfg.ControlSocket, Logger: cfg.Logger},
	})
	if err != nil {
		planner.Close()
		return nil, err
	}
	loopCtx, stop := context.WithCancel(context.Background())
	m = &session{cfg: cfg, origin: origin, cache: c, fs: fsys, planner: planner, mount: mnt, started: time.Now(), stop: stop}
	planner.WarmSmallArrays()
	if cfg.PrefetchAll {
		m.prefetchAll()
	}
	if cfg.RefreshEvery > 0 {
		go m.refreshLoop(loopCtx, cfg.RefreshEvery)
	}
	return m, nil
}

// prefetchAll starts the background fill of the whole store (--prefetch)
// when it fits the cache budget with room to spare for the readers' own
// misses and the cache's free-space floor; otherwise it says why not.
func (m *session) prefetchAll() {
	budget := m.cfg.CacheBytes / 10 * 9
	p, started := m.fs.PrefetchAll(budget)
	if !started {
		m.cfg.Logger.Warn("--prefetch: the store does not fit the cache budget; fetching only what is read and predicted",
			"store_bytes", p.Bytes, "exact", p.BytesExact, "budget_bytes", budget, "fix", "a larger --cache-size, or zarrfs prefetch PATH for part of the store")
		return
	}
	m.cfg.Logger.Info("--prefetch: filling the cache with the whole store in the background", "job", p.ID, "keys", p.Keys, "bytes", p.Bytes)
}

// Refresh revalidates the store on the origin now; see vfs.FS.Refresh.
func (m *session) Refresh(ctx context.Context) (vfs.RefreshReport, error) {
	return m.fs.Refresh(ctx)
}

func (m *session) refreshLoop(ctx context.Context, every time.Duration) {
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

// Prefetch, PrefetchStatus and CancelPrefetch run explicit prefetches; see
// vfs.FS.
func (m *session) Prefetch(targets []vfs.PrefetchTarget) (vfs.PrefetchProgress, error) {
	return m.fs.Prefetch(targets)
}

func (m *session) PrefetchStatus(id int) (vfs.PrefetchProgress, bool) { return m.fs.PrefetchStatus(id) }

func (m *session) CancelPrefetch(id int) bool { return m.fs.CancelPrefetch(id) }

// SetOrder announces the order of the coming reads; see vfs.FS.SetOrder.
func (m *session) SetOrder(targets []vfs.OrderTarget) (vfs.OrderProgress, error) {
	return m.fs.SetOrder(targets)
}

// mountStats is a snapshot of a mount's state and counters, for
// `zarrfs stats` and the metrics endpoint.
type mountStats struct {
	URL         string             `json:"url"`
	Mountpoint  string             `json:"mountpoint"`
	Format      int                `json:"zarr_format"`
	Source      string             `json:"tree_from"`
	Started     time.Time          `json:"started"`
	CacheDir    string             `json:"cache_dir"`
	CacheBytes  int64              `json:"cache_budget_bytes"`
	Cache       cache.Stats        `json:"cache"`
	Remote      remote.Stats       `json:"remote"` // traffic with the origin
	Prefetch    vfs.PrefetchStats  `json:"prefetch"`
	Order       *vfs.OrderProgress `json:"order,omitempty"` // the announced read order
	Ranged      vfs.RangedStats    `json:"ranged"`          // shards and big objects read by blocks
	Kernel      fusefs.KernelStats `json:"kernel"`          // requests from the kernel, by operation
	LastRefresh *vfs.RefreshReport `json:"last_refresh,omitempty"`
	// SkippedNodes are the groups and arrays left out of the mount because
	// their metadata or names cannot be used (always a list, maybe empty).
	SkippedNodes []store.Skipped `json:"skipped_nodes"`
}

// Stats returns a snapshot of the mount's counters.
func (m *session) Stats() mountStats {
	st := m.fs.Store()
	var order *vfs.OrderProgress
	if o, ok := m.fs.OrderStatus(); ok {
		order = &o
	}
	return mountStats{
		Order:       order,
		LastRefresh: m.fs.LastRefresh(),
		URL:         m.cfg.URL,
		Mountpoint:  m.cfg.Mountpoint,
		Format:      st.Format,
		Source:      st.Source,
		Started:     m.started,
		CacheDir:    m.cfg.CacheDir,
		CacheBytes:  m.cfg.CacheBytes,
		Cache:       m.cache.Stats(),
		Remote:      m.origin.Stats(),
		Prefetch:    m.fs.PrefetchStats(),
		Ranged:      m.fs.RangedStats(),
		Kernel:      m.mount.KernelStats(),
		// Never null: scripts can count it without a check.
		SkippedNodes: append([]store.Skipped{}, st.Skipped...),
	}
}

// summary is what the log says of a mount's life when it ends: enough to
// tell where a benchmark's or a training run's time went without having
// polled zarrfs stats before the unmount.
func (m *session) summary() []any {
	s := m.Stats()
	p := s.Prefetch
	return []any{
		"hits", s.Cache.Hits, "misses", s.Cache.Misses,
		"received", humanize.IBytes(uint64(s.Remote.BytesReceived)), "requests", s.Remote.Requests,
		"prefetched", humanize.IBytes(uint64(p.Bytes)), "prefetch_wasted", humanize.IBytes(uint64(p.WastedBytes)),
		"stalls", p.Stalls, "stall_time", time.Duration(p.StallTime).Round(time.Millisecond),
		"kernel", s.Kernel.String(),
	}
}

// Wait blocks until the file system is unmounted (by Unmount, by
// `zarrfs unmount` or fusermount3 from elsewhere), then releases resources.
func (m *session) Wait() error {
	err := m.mount.Wait()
	m.release()
	return err
}

func (m *session) release() {
	m.stop()
	m.planner.Close()
	m.fs.Close()
	_ = m.cache.Close()
	m.origin.Close()
}

// Unmount asks the kernel to detach the mount; see fusefs.Mount.Unmount.
func (m *session) Unmount(lazy bool) error { return m.mount.Unmount(lazy) }
