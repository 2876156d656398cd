package serve

// The manifest endpoint (GET <dir>/.zarrfs/manifest, format in package
// wire): answered from the store's index (index.go) when it can be trusted,
// else by walking the tree for this request (walk.go).

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/zarrfs/zarrfs/remote/wire"
)

// manifestFlushInterval bounds how long a client waits for the next bytes
// of a manifest while the server walks (the client's stall timeout is far
// longer).
const manifestFlushInterval = time.Second

func (s *Server) serveManifest(w http.ResponseWriter, r *http.Request, base string) {
	prefix := strings.TrimPrefix(r.URL.Query().Get("prefix"), "/")
	if len(prefix) > wire.MaxKeyLen || strings.IndexByte(prefix, 0) >= 0 {
		http.Error(w, "400 bad request: bad prefix", http.StatusBadRequest)
		return
	}
	rel := base
	if rel == "" {
		rel = "."
	}
	dir, err := s.root.Open(rel)
	if err != nil {
		s.fail(w, r, openStatus(err), err)
		return
	}
	defer dir.Close()
	fi, err := dir.Stat()
	if err != nil || !fi.IsDir() {
		http.NotFound(w, r)
		return
	}

	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && s.indexes != nil {
		if s.serveManifestFromIndex(w, r, base, st, prefix) {
			return
		}
	}
	select {
	case s.manifestSlots <- struct{}{}:
		defer func() { <-s.manifestSlots }()
	case <-r.Context().Done():
		return
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		// Revalidation costs a walk (the stat calls) but no compression
		// and no transfer.
		enc := wire.NewEncoder(io.Discard)
		wk := &manifestWalker{s: s, ctx: r.Context(), prefix: prefix, enc: enc}
		if err := wk.walk(dir, rel, ""); err == nil && etagListMatches(inm, enc.Tag()) {
			h.Set("ETag", enc.Tag())
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if _, err := dir.Seek(0, io.SeekStart); err != nil {
			s.fail(w, r, http.StatusInternalServerError, err)
			return
		}
	}
	h.Set("Content-Type", wire.ContentType)
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusOK)

	zw, err := newManifestZstd(w, false)
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	enc := wire.NewEncoder(zw)
	flusher, _ := w.(http.Flusher)
	flush := func() error {
		if err := enc.Flush(); err != nil {
			return err
		}
		if err := zw.Flush(); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	}
	if err := enc.WriteHeader(); err != nil {
		return
	}
	if flush() != nil {
		return
	}
	wk := &manifestWalker{s: s, ctx: r.Context(), prefix: prefix, enc: enc, flush: flush, lastFlush: s.now()}
	werr := wk.walk(dir, rel, "")
	switch {
	case werr == nil:
		err = enc.End()
	case wk.writeErr != nil || r.Context().Err() != nil:
		// The client went away; nothing more to say to it.
		zw.Reset(io.Discard)
		return
	default:
		s.log.Warn("serve: manifest cut short", "path", r.URL.EscapedPath(), "error", werr.Error())
		err = enc.Fail(werr.Error())
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		panic(http.ErrAbortHandler)
	}
}

// serveManifestFromIndex answers from the index of base; false: the index
// cannot answer (being off for this store), walk instead.
func (s *Server) serveManifestFromIndex(w http.ResponseWriter, r *http.Request, base string, st *syscall.Stat_t, prefix string) bool {
	ix := s.indexes.get(base)
	if ix == nil {
		return false
	}
	a, err := ix.answer(r.Context(), uint64(st.Dev), st.Ino, prefix, r.Header.Get("If-None-Match"), r.Method == http.MethodHead)
	switch {
	case errors.Is(err, errIndexOff):
		return false
	case err != nil:
		if r.Context().Err() == nil {
			s.fail(w, r, http.StatusServiceUnavailable, err)
		}
		return true
	}
	h := w.Header()
	h.Set("ETag", a.tag)
	if a.body == nil && r.Method != http.MethodHead {
		w.WriteHeader(http.StatusNotModified)
		return true
	}
	h.Set("Content-Type", wire.ContentType)
	if a.body != nil {
		h.Set("Content-Length", strconv.Itoa(a.body.Len()))
	}
	w.WriteHeader(http.StatusOK)
	if a.body != nil {
		_, _ = a.body.WriteTo(w)
	}
	return true
}

// etagListMatches evaluates If-None-Match (weak comparison, RFC 9110
// 13.1.2) against tag.
func etagListMatches(list, tag string) bool {
	for t := range strings.SplitSeq(list, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == tag {
			return true
		}
	}
	return false
}

// newManifestZstd is the compressor every manifest response uses. With
// background set, each block is compressed and written on a goroutine of
// the encoder while the caller fills the next one (the same bytes come
// out): the compression then takes another core instead of adding to the
// encode. Only for a w that may be written from another goroutine between
// the caller's calls (a chunkBuffer, not an http.ResponseWriter, which the
// encoder could still be writing to when a failed request's handler
// returns).
func newManifestZstd(w io.Writer, background bool) (*zstd.Encoder, error) {
	conc := 1
	if background {
		conc = 2
	}
	return zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(conc),
		zstd.WithWindowSize(1<<20), zstd.WithEncoderCRC(true))
}
