package remote

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"golang.org/x/net/html"
)

// maxHTMLToken bounds the memory one HTML token may take.
const maxHTMLToken = 16 << 20

// ParseIndex parses a directory index page served for dirURL (the URL the
// page was actually served from; a missing trailing slash is added) and
// returns the directory's direct children sorted by name.
//
// HTML indexes (Go's http.FileServer, nginx autoindex, Apache
// mod_autoindex, python -m http.server, and most others) are read from
// their links: only an href that resolves to dirURL plus one path segment,
// on the same scheme and host and without query or fragment, is a child; a
// trailing slash marks a directory; names are URL-decoded. Sort links,
// parent links, "." and ".." are thereby dropped. JSON indexes are nginx's
// "autoindex_format json". An empty contentType is sniffed. Any other
// content type, or JSON of another shape, gives ErrNoListing.
func ParseIndex(dirURL *url.URL, contentType string, body io.Reader) ([]DirEntry, error) {
	if dirURL == nil {
		return nil, errors.New("parse index: nil directory URL")
	}
	br := bufio.NewReader(body)
	if strings.TrimSpace(contentType) == "" {
		head, err := br.Peek(512)
		if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
			return nil, fmt.Errorf("parse index: %w", err)
		}
		contentType = sniffIndexType(head)
	}
	mediaType, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, fmt.Errorf("%w: unreadable content type %q", ErrNoListing, contentType)
	}
	var entries map[string]bool
	switch {
	case mediaType == "text/html" || mediaType == "application/xhtml+xml":
		entries, err = parseHTMLIndex(dirURL, br)
	case mediaType == "application/json" || strings.HasSuffix(mediaType, "+json"):
		entries, err = parseJSONIndex(br)
	default:
		return nil, fmt.Errorf("%w: content type %q is not an HTML or JSON directory index", ErrNoListing, mediaType)
	}
	if err != nil {
		return nil, err
	}
	out := make([]DirEntry, 0, len(entries))
	for name, isDir := range entries {
		out = append(out, DirEntry{Name: name, IsDir: isDir})
	}
	slices.SortFunc(out, func(a, b DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func sniffIndexType(head []byte) string {
	trimmed := bytes.TrimLeft(head, " \t\r\n\ufeff")
	if len(trimmed) > 0 && trimmed[0] == '[' {
		return "application/json"
	}
	return http.DetectContentType(head)
}

// parseHTMLIndex collects the children named by <a href> links.
func parseHTMLIndex(dirURL *url.URL, r io.Reader) (map[string]bool, error) {
	dir := directoryURL(dirURL)
	entries := map[string]bool{}
	z := html.NewTokenizer(r)
	z.SetMaxBuf(maxHTMLToken)
	for {
		switch z.Next() {
		case html.ErrorToken:
			if err := z.Err(); err != io.EOF {
				return nil, fmt.Errorf("parse HTML index: %w", err)
			}
			return entries, nil
		case html.StartTagToken, html.SelfClosingTagToken:
			tag, hasAttr := z.TagName()
			if string(tag) != "a" {
				continue
			}
			for hasAttr {
				var key, val []byte
				key, val, hasAttr = z.TagAttr()
				if string(key) != "href" {
					continue
				}
				if name, isDir, ok := childOf(dir, string(val)); ok {
					entries[name] = entries[name] || isDir
				}
				break
			}
		}
	}
}

// directoryURL returns a copy of u whose path ends in a slash, so that
// relative links resolve inside the directory.
func directoryURL(u *url.URL) *url.URL {
	d := *u
	d.RawQuery, d.ForceQuery, d.Fragment, d.RawFragment = "", false, "", ""
	if !strings.HasSuffix(d.Path, "/") {
		d.Path += "/"
		if d.RawPath != "" {
			d.RawPath += "/"
		}
	}
	return &d
}

// childOf reports whether href, resolved against the directory URL dir,
// names a direct child of dir, and returns the child's decoded name.
func childOf(dir *url.URL, href string) (name string, isDir, ok bool) {
	href = strings.TrimSpace(href)
	if href == "" || strings.ContainsAny(href, "?#") {
		return "", false, false
	}
	ref, err := url.Parse(href)
	if err != nil {
		return "", false, false
	}
	abs := dir.ResolveReference(ref)
	if !strings.EqualFold(abs.Scheme, dir.Scheme) || !sameHost(abs, dir) {
		return "", false, false
	}
	rest, found := strings.CutPrefix(abs.Path, dir.Path)
	if !found {
		return "", false, false
	}
	rest, isDir = strings.CutSuffix(rest, "/")
	if !validName(rest) {
		return "", false, false
	}
	return rest, isDir, true
}

// validName reports whether s can be one entry of a directory.
func validName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00")
}

func sameHost(a, b *url.URL) bool {
	return strings.EqualFold(a.Hostname(), b.Hostname()) && effectivePort(a) == effectivePort(b)
}

func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch strings.ToLower(u.Scheme) {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}

// parseJSONIndex reads nginx's autoindex_format json: an array of
// {"name": ..., "type": "directory"|"file"|"other", ...}. Names are plain
// (not URL-encoded). "other" entries (devices, sockets) are skipped.
func parseJSONIndex(r io.Reader) (map[string]bool, error) {
	dec := json.NewDecoder(r)
	notIndex := func(err error) error {
		return fmt.Errorf("%w: JSON is not an nginx autoindex array: %w", ErrNoListing, err)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, notIndex(err)
	}
	if tok != json.Delim('[') {
		return nil, notIndex(fmt.Errorf("starts with %v", tok))
	}
	entries := map[string]bool{}
	for dec.More() {
		var e struct {
			Name *string `json:"name"`
			Type string  `json:"type"`
		}
		if err := dec.Decode(&e); err != nil {
			return nil, notIndex(err)
		}
		if e.Name == nil {
			return nil, notIndex(errors.New(`an entry has no "name"`))
		}
		if !validName(*e.Name) {
			continue
		}
		switch e.Type {
		case "directory":
			entries[*e.Name] = true
		case "file":
			if _, seen := entries[*e.Name]; !seen {
				entries[*e.Name] = false
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, notIndex(err)
	}
	return entries, nil
}
