package cache

// Rebuilding the index at start. This runs inside New, before the Cache is
// shared: the scan's own mutex (scanResults.mu) guards only the results of
// its workers, and Cache.mu is not taken.

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// scanWorkers overlap the header reads of a cold directory; more would
// only contend for the disk.
const scanWorkers = 4

type recoveredEntry struct {
	e     *entry
	mtime time.Time
}

type scanResults struct {
	mu          sync.Mutex
	found       []recoveredEntry
	corrupt     int
	unversioned int
	errs        []error
}

// recover removes the temp files of earlier runs and indexes the entries
// they left. Each entry's header is read and checked (its checksum, its
// name against the key and range it names, its length against the file's), so a
// torn, truncated or misplaced entry is removed now. The data is checked
// when the entry is opened, not here: that read is needed anyway, and
// reading every byte of a large cache at start would delay the mount by
// minutes. Entries without a version are removed: nothing can tell whether
// they are still current. Entries are ordered for the policy by the time
// they were written.
func (c *Cache) recover() error {
	if err := os.RemoveAll(c.tmpDir); err != nil {
		return fmt.Errorf("cache: remove the temp files of an earlier run in %s: %w", c.tmpDir, err)
	}
	for _, d := range []string{c.tmpDir, c.entriesDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("cache: %w", err)
		}
	}
	subdirs, err := os.ReadDir(c.entriesDir)
	if err != nil {
		return fmt.Errorf("cache: read %s: %w", c.entriesDir, err)
	}

	var res scanResults
	work := make(chan string)
	var wg sync.WaitGroup
	for range scanWorkers {
		wg.Go(func() {
			for sub := range work {
				c.scanSubdir(sub, &res)
			}
		})
	}
	for _, d := range subdirs {
		if d.IsDir() && isHex(d.Name(), 2) {
			work <- d.Name()
			continue
		}
		// Not the cache's layout: a leftover of another version of it.
		if err := os.RemoveAll(filepath.Join(c.entriesDir, d.Name())); err != nil {
			res.errs = append(res.errs, err)
		}
	}
	close(work)
	wg.Wait()
	if len(res.errs) > 0 {
		return fmt.Errorf("cache: clean up %s (fix its permissions, or choose another cache directory): %w", c.entriesDir, errors.Join(res.errs...))
	}

	slices.SortFunc(res.found, func(a, b recoveredEntry) int {
		return cmp.Or(a.mtime.Compare(b.mtime), cmp.Compare(a.e.id, b.e.id))
	})
	var bytes int64
	for _, r := range res.found {
		c.index[r.e.id] = r.e
		c.policy.addRecovered(r.e)
		bytes += r.e.fileLen
	}
	c.stats.Recovered = int64(len(res.found))
	c.stats.CorruptEntries = int64(res.corrupt)

	// The budget or the floor may be smaller than last time.
	limit := c.maxBytes
	if c.minFree > 0 {
		if free, ok := c.freeSpace(); ok {
			limit = min(limit, bytes-max(0, c.minFree-free))
		}
	}
	c.policy.shrink(limit, c.evictLocked)

	if len(res.found)+res.corrupt+res.unversioned > 0 {
		c.log.Info("cache: reusing the entries of an earlier run",
			"dir", c.dir, "entries", len(res.found), "bytes", bytes,
			"damaged_removed", res.corrupt, "unversioned_removed", res.unversioned,
			"evicted", c.stats.Evictions)
	}
	return nil
}

func (c *Cache) scanSubdir(sub string, res *scanResults) {
	dir := filepath.Join(c.entriesDir, sub)
	names, err := os.ReadDir(dir)
	if err != nil {
		res.mu.Lock()
		res.errs = append(res.errs, err)
		res.mu.Unlock()
		return
	}
	var found []recoveredEntry
	var corrupt, unversioned int
	var errs []error
	for _, d := range names {
		path := filepath.Join(dir, d.Name())
		e, mtime, err := c.scanEntry(path, sub, d.Name())
		switch {
		case err == nil:
			found = append(found, recoveredEntry{e, mtime})
			continue
		case errors.Is(err, errUnversioned):
			unversioned++
		default:
			corrupt++
			c.log.Warn("cache entry damaged; removed it", "err", err)
		}
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, err)
		}
	}
	res.mu.Lock()
	res.found = append(res.found, found...)
	res.corrupt += corrupt
	res.unversioned += unversioned
	res.errs = append(res.errs, errs...)
	res.mu.Unlock()
}

var errUnversioned = errors.New("entry has no version")

// scanEntry reads and checks the header of one file of the entries
// directory.
func (c *Cache) scanEntry(path, sub, name string) (*entry, time.Time, error) {
	if !isHex(name, 64) || name[:2] != sub {
		return nil, time.Time{}, fmt.Errorf("%w: %s: not an entry name", errCorrupt, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() {
		return nil, time.Time{}, fmt.Errorf("%w: %s: not a regular file (%v)", errCorrupt, path, err)
	}
	h, _, err := readHeader(f, info.Size())
	if err != nil {
		return nil, time.Time{}, err
	}
	// The name is the hash of the namespace, key and range the header
	// records, so an entry swapped with another (a range with another range
	// of the same object too), or copied under another name, fails here.
	// Entries of other origins are kept: they age out like any other.
	id, sum := entryIDOf(h.nsHash, h.key, h.rng)
	if id != name {
		return nil, time.Time{}, fmt.Errorf("%w: %s holds %s, whose entry has another name", errCorrupt, path, h.rng.describe(h.key))
	}
	if h.version == "" {
		return nil, time.Time{}, errUnversioned
	}
	return &entry{
		id: name, sum: sum, key: h.key, rng: h.rng, version: h.version,
		dataLen: h.dataLen, fileLen: info.Size(),
		// A whole object may have changed on the origin since; a range is
		// only used at the version it records, which is its proof.
		unchecked: !h.rng.ranged(), recovered: true,
	}, info.ModTime(), nil
}

// isHex says whether s is n lowercase hex digits, as entry names are.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, ch := range []byte(s) {
		if !('0' <= ch && ch <= '9' || 'a' <= ch && ch <= 'f') {
			return false
		}
	}
	return true
}
