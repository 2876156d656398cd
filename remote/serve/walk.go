package serve

// The server side of the manifest: a depth-first walk of the served tree in
// key order, streamed through a zstd encoder as it goes. Memory is bounded
// by the directories on the current path (24 bytes per entry, the names of
// each packed in one arena) plus the encoder's window, never by the number
// of keys below: a store of a million chunks in one directory holds about
// 35 MB while that directory is walked, 16 MB more while it is listed and
// stat'ed (statPipeline).
//
// Key order: see listdir.go.
//
// Symlinks are followed when they resolve inside the root (the same rule
// GET applies through os.Root), so every key GET can serve is listed and
// nothing else; a symlink cycle is cut where a directory would be entered a
// second time on the same path.
//
// Most requests do not walk: they are answered from the store's index
// (index.go), which this walker's code builds and inotify keeps
// current. The walk per request remains for stores the index cannot be
// trusted with (symlinks, remote file systems, limits).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/zarrfs/zarrfs/remote/wire"
)

// manifestWalker walks one manifest request's tree.
type manifestWalker struct {
	s      *Server
	ctx    context.Context
	prefix string
	enc    *wire.Encoder

	flush     func() error // nil: never flush (hash-only walks)
	lastFlush time.Time
	sinceTick int
	writeErr  error // the first write error: the client is gone

	// symlink is the first symlink name listDir met (an index build
	// gives up on it).
	symlink string

	ancestors [][2]uint64 // (dev, ino) of the directories being walked
}

// wantsDir reports whether keys below dirKey ("a/b/") may match the prefix.
func (wk *manifestWalker) wantsDir(dirKey string) bool {
	return strings.HasPrefix(dirKey, wk.prefix) || strings.HasPrefix(wk.prefix, dirKey)
}

// walk emits every file below the open directory f (root-relative path rel,
// keys starting with keyPfx) in key order.
func (wk *manifestWalker) walk(f *os.File, rel, keyPfx string) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("stat %s: %w", displayRel(rel), err)
	}
	id := [2]uint64{uint64(st.Dev), st.Ino}
	if slices.Contains(wk.ancestors, id) || len(wk.ancestors) >= 256 {
		return nil // a symlink cycle (or absurd depth): do not enter again
	}
	wk.ancestors = append(wk.ancestors, id)
	defer func() { wk.ancestors = wk.ancestors[:len(wk.ancestors)-1] }()

	list, err := wk.listDir(f, rel, keyPfx)
	if err != nil {
		if keyPfx != "" && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR)) {
			return nil // removed (or replaced by a file) since its parent was listed
		}
		return err
	}
	for i, e := range list.ents {
		if i%statBatch == 0 {
			if err := wk.ctx.Err(); err != nil {
				return err
			}
		}
		if e.kind == kindDir || e.kind == kindLinkDir {
			name := list.name(e)
			key := keyPfx + name + "/"
			if !wk.wantsDir(key) {
				continue
			}
			childRel := path.Join(rel, name)
			beforeOpenDir(childRel)
			sub, err := wk.s.root.Open(childRel)
			if err != nil {
				if vanished(err) {
					continue // removed or replaced since its parent was listed
				}
				return fmt.Errorf("open directory %s: %w", displayRel(childRel), err)
			}
			err = wk.walk(sub, childRel, key)
			sub.Close()
			if err != nil {
				return err
			}
			continue
		}
		if e.kind == kindFile || e.kind == kindLinkFile {
			tag := wire.ETagOfHash(e.hash)
			if err := wk.emit(keyPfx, list.nameBytes(e), e.size, tag[:]); err != nil {
				return err
			}
		}
	}
	return nil
}

// emit writes one entry, flushing now and then so the client sees progress.
func (wk *manifestWalker) emit(keyPfx string, name []byte, size int64, etag []byte) error {
	if err := wk.enc.AddJoined(keyPfx, name, size, etag); err != nil {
		wk.writeErr = err
		return err
	}
	if wk.flush == nil {
		return nil
	}
	if wk.sinceTick++; wk.sinceTick < 4096 {
		return nil
	}
	wk.sinceTick = 0
	if now := wk.s.now(); now.Sub(wk.lastFlush) >= manifestFlushInterval {
		wk.lastFlush = now
		if err := wk.flush(); err != nil {
			wk.writeErr = err
			return err
		}
	}
	return nil
}
