package serve

// The stat of a directory's files, overlapped with its listing
// (statPipeline).

import (
	"errors"
	"fmt"
	"path"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"github.com/zarrfs/zarrfs/remote/wire"
)

// statBatch is how many consecutive listing positions one stat job covers.
const statBatch = 2048

// fileMeta is what the stat of one listed file found.
type fileMeta struct {
	size int64  // -1: not listed (removed since getdents, not a regular file, outside the prefix, or a directory)
	hash uint64 // the ETag's hash (wire.FileHash)
}

// linkedFile is a listed file with more than one hard link.
type linkedFile struct {
	name string
	ino  uint64
}

// statJob is statBatch consecutive listing positions to stat. Its names
// are copies: the listing's arena moves as it grows.
type statJob struct {
	names  []byte
	items  []statItem
	res    []fileMeta // becomes one of the listing's metas
	linked []linkedFile
	lo     int // listing position of items[0]
	err    error
}

type statItem struct {
	off  uint32 // in names
	n    uint16
	kind uint8 // kindFile, kindLinkFile; anything else is not stat'ed
}

// statPipeline stats a directory's files while it is still being listed:
// the lister hands full batches of positions to worker goroutines and goes
// on reading the directory, so getdents, fstatat and the lister's own work
// overlap instead of following each other. At most maxInflight jobs exist,
// which bounds the names copied ahead of the workers.
type statPipeline struct {
	wk   *manifestWalker
	list *dirListing
	fd   int
	rel  string

	todo        chan *statJob
	done        chan *statJob // never full: as large as the jobs in flight
	free        []*statJob
	inflight    int
	maxInflight int
	stopped     bool
	wg          sync.WaitGroup
	err         error // the first stat error
}

func (wk *manifestWalker) startStats(list *dirListing, fd int, rel string) *statPipeline {
	workers := min(runtime.GOMAXPROCS(0), 4)
	p := &statPipeline{wk: wk, list: list, fd: fd, rel: rel, maxInflight: 2*workers + 2}
	p.todo = make(chan *statJob, p.maxInflight)
	p.done = make(chan *statJob, p.maxInflight)
	for range workers {
		p.wg.Go(func() {
			var st syscall.Stat_t
			for j := range p.todo {
				p.run(j, &st)
				p.done <- j
			}
		})
	}
	return p
}

// dispatch hands the listing positions [lo, hi) to the workers; filter,
// when not nil, says which files to stat (the others are left out).
func (p *statPipeline) dispatch(lo, hi int, filter func(name []byte) bool) error {
	j := p.job()
	if p.err != nil {
		p.free = append(p.free, j)
		p.inflight--
		return p.err
	}
	d := p.list
	j.lo, j.err = lo, nil
	j.names, j.items, j.linked = j.names[:0], j.items[:0], j.linked[:0]
	j.res = make([]fileMeta, hi-lo)
	p.list.metas = append(p.list.metas, j.res)
	for _, e := range d.listed[lo:hi] {
		it := statItem{kind: kindDead}
		if e.kind == kindFile || e.kind == kindLinkFile {
			name := d.arena[e.off : e.off+uint32(e.n)]
			if filter == nil || filter(name) {
				it = statItem{off: uint32(len(j.names)), n: e.n, kind: e.kind}
				j.names = append(j.names, name...)
			}
		}
		j.items = append(j.items, it)
	}
	p.todo <- j
	return nil
}

// job returns a job to fill: a free one, a new one, or the next one done.
func (p *statPipeline) job() *statJob {
	for {
		if n := len(p.free); n > 0 {
			j := p.free[n-1]
			p.free = p.free[:n-1]
			p.inflight++
			return j
		}
		if p.inflight < p.maxInflight {
			p.inflight++
			return &statJob{}
		}
		p.collect(<-p.done)
	}
}

func (p *statPipeline) collect(j *statJob) {
	p.inflight--
	if j.err != nil && p.err == nil {
		p.err = j.err
	}
	p.list.linked = append(p.list.linked, j.linked...)
	j.res = nil
	p.free = append(p.free, j)
}

// stop waits for every job (the workers use the directory's fd, which the
// caller closes) and returns the first stat error. Safe to call twice.
func (p *statPipeline) stop() error {
	if !p.stopped {
		p.stopped = true
		close(p.todo)
		for p.inflight > 0 {
			p.collect(<-p.done)
		}
		p.wg.Wait()
	}
	return p.err
}

// run stats one job's files.
func (p *statPipeline) run(j *statJob, st *syscall.Stat_t) {
	for k, it := range j.items {
		r := &j.res[k]
		r.size = -1
		if it.kind != kindFile && it.kind != kindLinkFile {
			continue
		}
		// The name is used only within this iteration, and names is not
		// written while the job runs: no string allocated per file.
		name := unsafe.String(&j.names[it.off], int(it.n))
		if it.kind == kindLinkFile {
			fi, err := p.wk.s.root.Stat(path.Join(p.rel, name))
			if err != nil || !fi.Mode().IsRegular() {
				continue // gone, or no longer a file inside the root
			}
			*st = *fi.Sys().(*syscall.Stat_t)
		} else if err := fstatatNoFollow(p.fd, name, st); err != nil {
			if !errors.Is(err, syscall.ENOENT) { // ENOENT: removed since the listing
				if j.err == nil {
					j.err = fmt.Errorf("stat %s: %w", displayRel(path.Join(p.rel, name)), err)
				}
			}
			continue
		} else if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			continue
		}
		r.size, r.hash = st.Size, wire.FileHash(st)
		if st.Nlink > 1 {
			j.linked = append(j.linked, linkedFile{name: strings.Clone(name), ino: st.Ino})
		}
	}
}
