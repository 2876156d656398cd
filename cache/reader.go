package cache

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
)

var errNegativeOffset = errors.New("negative offset")

// Reader is one reader's view of an entry. ReadAt is safe for concurrent use.
// A Reader stays valid until Close whatever happens to the cache: it holds an
// open file (which keeps even a replaced file's data) or the bytes
// themselves, and while it is open its entry is pinned: eviction passes it
// over.
type Reader struct {
	size      int64
	version   string
	file      *sharedFile // nil when the entry is held in memory
	dataOff   int64       // where the object starts in file, after the entry header
	mem       []byte
	counters  *readCounters
	fromCache bool   // served by an entry already on disk, not by a fetch
	unpin     func() // releases the entry; nil if the Reader pins none
	closed    atomic.Bool
}

// readCounters are the cache's counters of bytes read, kept apart from
// Cache.mu so ReadAt never takes a lock.
type readCounters struct {
	served    atomic.Int64
	fromCache atomic.Int64
}

// sharedFile is an open entry file shared by the Readers handed out for one
// fetch; the last of them to close it closes the file.
type sharedFile struct {
	f    *os.File
	refs atomic.Int32
}

func newSharedFile(f *os.File, refs int) *sharedFile {
	s := &sharedFile{f: f}
	s.refs.Store(int32(refs))
	return s
}

func (s *sharedFile) release() error {
	if s.refs.Add(-1) == 0 {
		return s.f.Close()
	}
	return nil
}

// ReadAt reads like io.ReaderAt: fewer than len(p) bytes only at the end of
// the entry, with io.EOF.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if r.closed.Load() {
		return 0, os.ErrClosed
	}
	if off < 0 {
		return 0, fmt.Errorf("read at offset %d: %w", off, errNegativeOffset)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	var atEnd bool
	if rest := r.size - off; int64(len(p)) > rest {
		p, atEnd = p[:rest], true
	}
	var n int
	var err error
	if r.file != nil {
		n, err = r.file.f.ReadAt(p, r.dataOff+off)
		if n < len(p) {
			// The entry was verified when opened: only something outside
			// zarrfs truncating it can cause this. Not io.EOF, which
			// callers take for the end of the object: its end is r.size.
			cause := io.ErrUnexpectedEOF
			if err != nil && !errors.Is(err, io.EOF) {
				cause = errors.Join(err, io.ErrUnexpectedEOF)
			}
			err = fmt.Errorf("read cache file %s: %d of %d bytes at %d: %w", r.file.f.Name(), n, len(p), off, cause)
		}
	} else {
		n = copy(p, r.mem[off:])
	}
	if err == nil && atEnd {
		err = io.EOF
	}
	r.counters.served.Add(int64(n))
	if r.fromCache {
		r.counters.fromCache.Add(int64(n))
	}
	return n, err
}

// Size is the exact length of the object.
func (r *Reader) Size() int64 { return r.size }

// Version is the version the Source reported for the object (its strong
// ETag or the manifest's version), or "" if it reported none.
func (r *Reader) Version() string { return r.version }

// Close releases the Reader and its entry; closing it again does nothing.
func (r *Reader) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	if r.unpin != nil {
		r.unpin()
	}
	if r.file == nil {
		return nil
	}
	return r.file.release()
}
