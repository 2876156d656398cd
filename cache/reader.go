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
// A Reader stays valid until Close even if its entry is evicted meanwhile: it
// holds an open file (which keeps an unlinked file's data) or the bytes
// themselves.
type Reader struct {
	size    int64
	version string
	file    *sharedFile // nil when the entry is held in memory
	mem     []byte
	served  *atomic.Int64 // the cache's BytesServed counter
	closed  atomic.Bool
}

// sharedFile is an open entry file shared by the Readers handed out for one
// fetch; the last of them to close it closes the file.
type sharedFile struct {
	f    *os.File
	refs atomic.Int32
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
	var n int
	var err error
	if r.file != nil {
		n, err = r.file.f.ReadAt(p, off)
	} else if n = copy(p, r.mem[off:]); n < len(p) {
		err = io.EOF
	}
	r.served.Add(int64(n))
	return n, err
}

// Size is the exact length of the entry.
func (r *Reader) Size() int64 { return r.size }

// Version is the version the Source reported for the entry (its strong ETag),
// or "" if it reported none.
func (r *Reader) Version() string { return r.version }

// Close releases the Reader; closing it again does nothing.
func (r *Reader) Close() error {
	if r.closed.Swap(true) || r.file == nil {
		return nil
	}
	return r.file.release()
}
