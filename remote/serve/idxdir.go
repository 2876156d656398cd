package serve

// The index's sorted directory arena (idxDir). Not safe for concurrent use:
// the index's lock (index.go) guards it.

import (
	"bytes"
	"slices"
)

// idxDir is one watched directory: its entries sorted by name (a
// subdirectory's name with "/" appended: key order, see listdir.go), names
// in one arena, 24 bytes per entry (a dirEnt holding a file's size and ETag
// hash; kinds kindFile, kindDir, kindDead). Entries
// added after the last merge wait, unsorted, in pend; removed ones are
// marked dead in place. merge folds both in, at encode time or when pend
// grows past 1/8 of ents, so a writer creating files one by one costs
// amortized O(1) moves per file.
type idxDir struct {
	rel      string // root-relative path
	parent   *idxDir
	name     string // in parent
	wd       int32
	dev, ino uint64
	dropped  bool

	arena  []byte
	ents   []dirEnt
	dead   int // dead entries in ents
	pend   []dirEnt
	pendAt map[string]int32
	nFiles int // live files directly in this directory

	subdirs map[string]*idxDir // by name, without "/"
}

func (d *idxDir) sortName(e *dirEnt) []byte { return d.arena[e.off : e.off+uint32(e.n)] }

func (d *idxDir) setSubdir(name string, sub *idxDir) {
	if d.subdirs == nil {
		d.subdirs = map[string]*idxDir{}
	}
	d.subdirs[name] = sub
}

// lookup finds the entry (live or dead) with sort name sn.
func (d *idxDir) lookup(sn []byte) (e *dirEnt, inMain bool) {
	i, found := slices.BinarySearchFunc(d.ents, sn, func(e dirEnt, t []byte) int {
		return bytes.Compare(d.arena[e.off:e.off+uint32(e.n)], t)
	})
	if found {
		return &d.ents[i], true
	}
	if j, ok := d.pendAt[string(sn)]; ok {
		return &d.pend[j], false
	}
	return nil, false
}

// upsert sets an entry; changed: anything differs; added: it was not live.
func (d *idxDir) upsert(sn []byte, kind uint8, size int64, hash uint64) (changed, added bool) {
	if e, inMain := d.lookup(sn); e != nil {
		if e.kind == kindDead {
			if inMain {
				d.dead--
			}
			e.kind, e.size, e.hash = kind, size, hash
			return true, true
		}
		if e.kind == kind && e.size == size && e.hash == hash {
			return false, false
		}
		e.kind, e.size, e.hash = kind, size, hash
		return true, false
	}
	if uint64(len(d.arena))+uint64(len(sn)) > 1<<32-1 {
		d.merge() // compacts the arena
	}
	off := uint32(len(d.arena))
	d.arena = append(d.arena, sn...)
	if d.pendAt == nil {
		d.pendAt = map[string]int32{}
	}
	d.pendAt[string(sn)] = int32(len(d.pend))
	d.pend = append(d.pend, dirEnt{hash: hash, size: size, off: off, n: uint16(len(sn)), kind: kind})
	if len(d.pend) > max(256, len(d.ents)/8) {
		d.merge()
	}
	return true, true
}

// remove marks the live entry sn dead; false if there is none.
func (d *idxDir) remove(sn []byte) bool {
	e, inMain := d.lookup(sn)
	if e == nil || e.kind == kindDead {
		return false
	}
	e.kind = kindDead
	if inMain {
		if d.dead++; d.dead > 1024 && d.dead > len(d.ents)/2 {
			d.merge()
		}
	}
	return true
}

// merge folds pend into ents, drops dead entries and, when most of the
// arena is dead names, compacts it.
func (d *idxDir) merge() {
	if len(d.pend) == 0 && d.dead == 0 {
		return
	}
	if len(d.pend) == 0 {
		// Only removals: compact in place.
		d.ents = slices.DeleteFunc(d.ents, func(e dirEnt) bool { return e.kind == kindDead })
		d.dead = 0
		return
	}
	cmp := func(a, b dirEnt) int { return bytes.Compare(d.sortName(&a), d.sortName(&b)) }
	pend := slices.DeleteFunc(d.pend, func(e dirEnt) bool { return e.kind == kindDead })
	slices.SortFunc(pend, cmp)
	out := make([]dirEnt, 0, len(d.ents)-d.dead+len(pend))
	nameBytes := 0
	i, j := 0, 0
	for i < len(d.ents) || j < len(pend) {
		var e dirEnt
		switch {
		case i < len(d.ents) && d.ents[i].kind == kindDead:
			i++
			continue
		case j >= len(pend) || (i < len(d.ents) && cmp(d.ents[i], pend[j]) < 0):
			e = d.ents[i]
			i++
		default:
			e = pend[j]
			j++
		}
		nameBytes += int(e.n)
		out = append(out, e)
	}
	if len(d.arena) > 4096 && nameBytes < len(d.arena)/2 {
		arena := make([]byte, 0, nameBytes+nameBytes/8)
		for k := range out {
			sn := d.sortName(&out[k])
			out[k].off = uint32(len(arena))
			arena = append(arena, sn...)
		}
		d.arena = arena
	}
	d.ents, d.dead = out, 0
	d.pend = d.pend[:0]
	if cap(d.pend) > 4096 {
		d.pend = nil
	}
	d.pendAt = nil
}
