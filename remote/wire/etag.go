package wire

import (
	"strings"
	"syscall"
)

// FileETag is the strong ETag `zarrfs serve` gives a file, as sent in the
// ETag header and in the manifest: a 64-bit FNV-1a hash of the inode
// number, size, modification time and change time (nanoseconds), in hex.
//
// Like nginx's (mtime, size) it changes whenever the file is rewritten in
// place; the inode catches a replacement by rename that keeps size and
// mtime (cp -p, rsync -t), and the change time, which no user can set,
// catches an in-place rewrite whose mtime was restored (touch -d, rsync
// --inplace -t). It may also change when nothing did (chmod, chown, a new
// hard link, restoring a backup): that costs one re-fetch, never wrong data.
// The device number is left out so that a reboot that renumbers devices
// does not invalidate every client's cache.
func FileETag(st *syscall.Stat_t) string {
	b := ETagOfHash(FileHash(st))
	return string(b[:])
}

// FileHash is the 64-bit FNV-1a hash a file's ETag spells (see FileETag):
// an index keeps it as a number and spells it only when it is sent.
func FileHash(st *syscall.Stat_t) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for _, v := range [...]uint64{
		st.Ino, uint64(st.Size),
		uint64(st.Mtim.Sec)*1e9 + uint64(st.Mtim.Nsec),
		uint64(st.Ctim.Sec)*1e9 + uint64(st.Ctim.Nsec),
	} {
		for range 8 {
			h ^= v & 0xff
			h *= prime
			v >>= 8
		}
	}
	return h
}

// ETagOfHash spells h in hex between quotes: the ETag of a file.
func ETagOfHash(h uint64) [18]byte {
	const digits = "0123456789abcdef"
	var b [18]byte
	b[0], b[17] = '"', '"'
	for i := 16; i >= 1; i-- {
		b[i] = digits[h&0xf]
		h >>= 4
	}
	return b
}

// HashOfETag is the 64-bit value a file's ETag (from ETagOfHash) spells.
func HashOfETag(tag [18]byte) uint64 {
	var h uint64
	for _, c := range tag[1:17] {
		v := uint64(c - '0')
		if c >= 'a' {
			v = uint64(c-'a') + 10
		}
		h = h<<4 | v
	}
	return h
}

// StrongETag returns etag if it is a strong entity tag (quoted, no W/
// prefix, no quote inside), else "".
func StrongETag(etag string) string {
	if len(etag) < 2 || etag[0] != '"' || etag[len(etag)-1] != '"' || strings.Contains(etag[1:len(etag)-1], `"`) {
		return ""
	}
	return etag
}
