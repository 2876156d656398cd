package wire

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"syscall"
	"testing"
)

func TestFileETag(t *testing.T) {
	base := syscall.Stat_t{Ino: 42, Size: 1000, Mtim: syscall.Timespec{Sec: 1700000000, Nsec: 5}, Ctim: syscall.Timespec{Sec: 1700000001, Nsec: 7}}
	tests := []struct {
		name   string
		change func(st *syscall.Stat_t)
	}{
		{"inode", func(st *syscall.Stat_t) { st.Ino++ }},
		{"size", func(st *syscall.Stat_t) { st.Size++ }},
		{"mtime ns", func(st *syscall.Stat_t) { st.Mtim.Nsec++ }},
		{"mtime s", func(st *syscall.Stat_t) { st.Mtim.Sec++ }},
		{"ctime ns", func(st *syscall.Stat_t) { st.Ctim.Nsec++ }},
		{"ctime s", func(st *syscall.Stat_t) { st.Ctim.Sec++ }},
	}
	e0 := FileETag(&base)
	if StrongETag(e0) == "" || len(e0) != 18 {
		t.Fatalf("FileETag %q: want a quoted 16-digit strong ETag", e0)
	}
	same := base
	same.Dev, same.Nlink, same.Atim = 99, 3, syscall.Timespec{Sec: 5}
	if FileETag(&same) != e0 {
		t.Error("the ETag depends on device, link count or atime")
	}
	for _, tc := range tests {
		st := base
		tc.change(&st)
		if FileETag(&st) == e0 {
			t.Errorf("changing the %s keeps the ETag %s", tc.name, e0)
		}
	}
}

func TestETagHashRoundTrip(t *testing.T) {
	// FileHash is FNV-1a over the little-endian bytes of the four fields;
	// computed here with hash/fnv, so a change to the ETag (which would
	// make every client refetch its cache) cannot go unnoticed.
	rng := rand.New(rand.NewPCG(9, 9))
	for range 1000 {
		st := syscall.Stat_t{Ino: rng.Uint64(), Size: rng.Int64()}
		st.Mtim.Sec, st.Mtim.Nsec = rng.Int64N(1<<40), rng.Int64N(1e9)
		st.Ctim.Sec, st.Ctim.Nsec = rng.Int64N(1<<40), rng.Int64N(1e9)
		f := fnv.New64a()
		for _, v := range []uint64{st.Ino, uint64(st.Size),
			uint64(st.Mtim.Sec)*1e9 + uint64(st.Mtim.Nsec), uint64(st.Ctim.Sec)*1e9 + uint64(st.Ctim.Nsec)} {
			f.Write(binary.LittleEndian.AppendUint64(nil, v))
		}
		if got, want := FileHash(&st), f.Sum64(); got != want {
			t.Fatalf("FileHash = %x, FNV-1a of the fields = %x", got, want)
		}
		tag := ETagOfHash(FileHash(&st))
		if want := fmt.Sprintf(`"%016x"`, f.Sum64()); string(tag[:]) != want {
			t.Fatalf("ETagOfHash(FileHash(st)) = %s, want %s", tag[:], want)
		}
		if HashOfETag(tag) != f.Sum64() {
			t.Fatalf("HashOfETag(%s) does not give the hash back", tag[:])
		}
	}
}
