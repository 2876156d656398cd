package remote

// Versions of objects on origins without ETags. Static servers such as
// `python3 -m http.server` send Last-Modified but no ETag; without a version
// a cache must drop what it holds at every restart. Last-Modified plus the
// object's size stands in for a version there, spelt "lm:<unix-seconds>-<size>"
// so it can never be mistaken for an ETag (which is always quoted). Such a
// version is revalidated with If-Modified-Since, and a ranged read under it
// checks the 206's Last-Modified and total size instead of sending If-Match.
//
// Last-Modified has a resolution of one second: an object written again in
// the same second as the response keeps its Last-Modified. So, as RFC 9110
// (8.8.2.2) says of a weak Last-Modified, one less than a second before the
// response's Date (or in the future) is not trusted: no version then.

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/zarrfs/zarrfs/remote/wire"
)

const lmPrefix = "lm:"

// IsModTimeVersion says whether version is a Last-Modified version (not an
// ETag).
func IsModTimeVersion(version string) bool { return strings.HasPrefix(version, lmPrefix) }

// modTimeVersion returns the Last-Modified version of an object of size
// bytes answered with h, or "" when h has no trustworthy Last-Modified.
// received is the client's clock at the answer, used when h has no Date.
func modTimeVersion(h http.Header, size int64, received time.Time) string {
	if size < 0 {
		return ""
	}
	lm, err := http.ParseTime(h.Get("Last-Modified"))
	if err != nil {
		return ""
	}
	date := received
	if d, err := http.ParseTime(h.Get("Date")); err == nil {
		date = d
	}
	if date.Sub(lm) < time.Second {
		return ""
	}
	return lmPrefix + strconv.FormatInt(lm.Unix(), 10) + "-" + strconv.FormatInt(size, 10)
}

// parseModTimeVersion splits a Last-Modified version.
func parseModTimeVersion(v string) (lm time.Time, size int64, ok bool) {
	rest, found := strings.CutPrefix(v, lmPrefix)
	if !found {
		return time.Time{}, 0, false
	}
	a, b, found := strings.Cut(rest, "-")
	if !found {
		return time.Time{}, 0, false
	}
	secs, err1 := strconv.ParseInt(a, 10, 64)
	size, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || size < 0 {
		return time.Time{}, 0, false
	}
	return time.Unix(secs, 0), size, true
}

// versionOf is the version of an object answered with h: its strong ETag,
// else its Last-Modified version, else "".
func versionOf(h http.Header, size int64, received time.Time) string {
	if etag := wire.StrongETag(h.Get("ETag")); etag != "" {
		return etag
	}
	return modTimeVersion(h, size, received)
}

// sameModTime says whether h's Last-Modified is the one version records.
func sameModTime(h http.Header, lm time.Time) bool {
	t, err := http.ParseTime(h.Get("Last-Modified"))
	return err == nil && t.Unix() == lm.Unix()
}
