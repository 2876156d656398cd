package serve

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"

	"github.com/zarrfs/zarrfs/remote/wire"
)

// The HTML directory index `zarrfs serve` answers for a path ending in "/",
// in the form clients' listing parsers read (one link per entry, "/" after a
// directory's name).

// serveIndex lists a directory as HTML, streamed in batches so that a
// directory of a million chunks costs little memory. Entries come in
// directory order (clients sort). Symlinks are listed if they resolve
// inside the root; ".zarrfs" is not listed.
func (s *Server) serveIndex(w http.ResponseWriter, r *http.Request, dir *os.File, segs []string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	title := "/" + strings.Join(segs, "/")
	if len(segs) > 0 {
		title += "/"
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	fmt.Fprintf(bw, "<!doctype html>\n<meta charset=\"utf-8\">\n<title>%s</title>\n<h1>%s</h1>\n<pre>\n", html.EscapeString(title), html.EscapeString(title))
	if len(segs) > 0 {
		io.WriteString(bw, "<a href=\"../\">../</a>\n")
	}
	for {
		ents, err := dir.ReadDir(1024)
		for _, e := range ents {
			name := e.Name()
			if name == wire.ReservedSegment {
				continue
			}
			isDir := e.IsDir()
			switch t := e.Type(); {
			case t&fs.ModeSymlink != 0:
				fi, err := s.root.Stat(path.Join(append(append([]string(nil), segs...), name)...))
				if err != nil || !(fi.IsDir() || fi.Mode().IsRegular()) {
					continue // dangling, or it leads out of the served directory
				}
				isDir = fi.IsDir()
			case !t.IsDir() && !t.IsRegular():
				continue // FIFOs, sockets, devices are never served
			}
			href := url.PathEscape(name)
			if isDir {
				href += "/"
				name += "/"
			}
			fmt.Fprintf(bw, "<a href=\"%s\">%s</a>\n", html.EscapeString(href), html.EscapeString(name))
		}
		if err == io.EOF || len(ents) == 0 {
			break
		}
		if err != nil {
			s.log.Warn("serve: listing cut short", "path", r.URL.EscapedPath(), "error", err.Error())
			panic(http.ErrAbortHandler) // the client must not take a partial listing for the whole
		}
	}
	io.WriteString(bw, "</pre>\n")
	_ = bw.Flush()
}
