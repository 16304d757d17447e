package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
)

// checkStructure walks the bbolt page tree in data, a read-only map of the
// file, before bbolt itself maps it. bbolt trusts its pages: a damaged
// file can make it read outside the map, recurse forever on a cycle (a
// stack overflow is fatal in Go, not a panic) or allocate a huge freelist,
// and after a crash it walks the tree in a goroutine of its own, where no
// fault can be recovered. After this walk every page bbolt reaches from
// the newest valid meta page is in the file, says its own id, is a branch
// or leaf reached exactly once, and keeps its elements inside itself, and
// the freelist, if saved, names only unreachable pages. What is inside
// keys and values is left to the entry checksums.
//
// The walk follows bbolt 1.x's on-disk format (native byte order).
func checkStructure(data []byte) error {
	w := &walker{data: data}
	// Should the file shrink under the map, reads fault: guard turns that
	// into an error.
	return guard(func() error {
		if err := w.readMeta(); err != nil {
			return err
		}
		if err := w.readFreelist(); err != nil {
			return err
		}
		return w.walkTree(w.root, 0, true)
	})
}

const (
	pageHeaderLen  = 16
	branchElemLen  = 16
	leafElemLen    = 16
	metaLen        = 64
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	branchPageFlag = 0x01
	leafPageFlag   = 0x02
	freelistFlag   = 0x10
	bucketLeafFlag = 0x01
	noFreelist     = ^uint64(0)
	maxTreeDepth   = 48 // a tree of 2^48 pages does not fit any disk
	inBucketLen    = 16
	minPageSize    = 1024
	maxPageSize    = 1 << 16
	maxPageRun     = 64 << 20 // bytes; a page run this large is damage, not data
)

var ne = binary.NativeEndian

type walker struct {
	data     []byte // the file, mapped read-only
	pageSize int
	hwm      uint64 // pages below this id are in use or free
	root     uint64
	txid     uint64
	freelist uint64
	free     bitset
	seen     bitset
}

type metaPage struct {
	pageSize uint32
	root     uint64
	freelist uint64
	hwm      uint64
	txid     uint64
}

// parseMeta checks one meta page the way bbolt does: magic, version and
// the FNV-64a checksum of the fields before it.
func parseMeta(page []byte) (metaPage, bool) {
	if len(page) < pageHeaderLen+metaLen {
		return metaPage{}, false
	}
	m := page[pageHeaderLen : pageHeaderLen+metaLen]
	if ne.Uint32(m[0:]) != boltMagic || ne.Uint32(m[4:]) != boltVersion {
		return metaPage{}, false
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if h.Sum64() != ne.Uint64(m[56:]) {
		return metaPage{}, false
	}
	return metaPage{
		pageSize: ne.Uint32(m[8:]),
		root:     ne.Uint64(m[16:]),
		freelist: ne.Uint64(m[32:]),
		hwm:      ne.Uint64(m[40:]),
		txid:     ne.Uint64(m[48:]),
	}, true
}

// slice returns n bytes of the file at off.
func (w *walker) slice(off, n uint64) ([]byte, error) {
	if off > uint64(len(w.data)) || n > uint64(len(w.data))-off {
		return nil, fmt.Errorf("%d bytes at %d are past the end of the file (%d bytes)", n, off, len(w.data))
	}
	return w.data[off : off+n], nil
}

func (w *walker) readMeta() error {
	// The page size is in either meta page; the second one sits one page
	// in, and the page size is not known yet, so try them all as bbolt does.
	pageSize := 0
	for size := minPageSize; size <= maxPageSize && pageSize == 0; size *= 2 {
		for _, off := range []uint64{0, uint64(size)} {
			page, err := w.slice(off, pageHeaderLen+metaLen)
			if err != nil {
				continue
			}
			if m, ok := parseMeta(page); ok && int(m.pageSize) == size {
				pageSize = size
				break
			}
		}
	}
	if pageSize == 0 {
		return errors.New("no valid meta page")
	}
	w.pageSize = pageSize
	var metas [2]metaPage
	var valid [2]bool
	for i := range metas {
		if page, err := w.slice(uint64(i*pageSize), pageHeaderLen+metaLen); err == nil {
			metas[i], valid[i] = parseMeta(page)
			valid[i] = valid[i] && int(metas[i].pageSize) == pageSize
		}
	}
	// bbolt uses the valid meta page with the higher transaction id.
	a, b := 0, 1
	if metas[1].txid > metas[0].txid {
		a, b = 1, 0
	}
	var m metaPage
	switch {
	case valid[a]:
		m = metas[a]
	case valid[b]:
		m = metas[b]
	default:
		return errors.New("no valid meta page")
	}
	filePages := uint64(len(w.data)) / uint64(pageSize)
	if m.hwm < 4 || m.hwm > filePages {
		return fmt.Errorf("meta page claims %d pages, the file holds %d", m.hwm, filePages)
	}
	w.hwm, w.root, w.txid, w.freelist = m.hwm, m.root, m.txid, m.freelist
	w.free = newBitset(m.hwm)
	w.seen = newBitset(m.hwm)
	return nil
}

// pageHeader reads and checks the header of page id: it names itself, has
// one of the wanted flags and, with its overflow pages, ends below the
// high water mark.
func (w *walker) pageHeader(id uint64, wantFlags ...uint16) (flags uint16, count int, pages uint64, err error) {
	if id < 2 || id >= w.hwm {
		return 0, 0, 0, fmt.Errorf("page id %d out of range [2, %d)", id, w.hwm)
	}
	h, err := w.slice(id*uint64(w.pageSize), pageHeaderLen)
	if err != nil {
		return 0, 0, 0, err
	}
	if got := ne.Uint64(h[0:]); got != id {
		return 0, 0, 0, fmt.Errorf("page %d calls itself %d", id, got)
	}
	flags = ne.Uint16(h[8:])
	count = int(ne.Uint16(h[10:]))
	pages = 1 + uint64(ne.Uint32(h[12:]))
	ok := false
	for _, f := range wantFlags {
		ok = ok || flags == f
	}
	if !ok {
		return 0, 0, 0, fmt.Errorf("page %d has type %#x", id, flags)
	}
	if pages > w.hwm-id {
		return 0, 0, 0, fmt.Errorf("page %d runs %d pages past the end", id, pages)
	}
	return flags, count, pages, nil
}

// claim records that pages [id, id+n) are reachable, refusing a page
// reached twice (a cycle or shared page) or listed as free.
func (w *walker) claim(id, n uint64) error {
	for p := id; p < id+n; p++ {
		if w.seen.has(p) {
			return fmt.Errorf("page %d is reached twice", p)
		}
		if w.free.has(p) {
			return fmt.Errorf("page %d is in use and in the freelist", p)
		}
		w.seen.set(p)
	}
	return nil
}

func (w *walker) readFreelist() error {
	if w.freelist == noFreelist {
		return nil // bbolt rebuilds it from the tree walked here
	}
	_, count, pages, err := w.pageHeader(w.freelist, freelistFlag)
	if err != nil {
		return fmt.Errorf("freelist: %w", err)
	}
	if pages*uint64(w.pageSize) > maxPageRun {
		return fmt.Errorf("freelist of %d pages", pages)
	}
	buf, err := w.slice(w.freelist*uint64(w.pageSize), pages*uint64(w.pageSize))
	if err != nil {
		return err
	}
	ids := buf[pageHeaderLen:]
	n := uint64(count)
	if count == 0xFFFF {
		// The real count is in the first element.
		n, ids = ne.Uint64(ids), ids[8:]
	}
	if n > uint64(len(ids))/8 {
		return fmt.Errorf("freelist claims %d ids in %d pages", n, pages)
	}
	for i := range n {
		id := ne.Uint64(ids[8*i:])
		if id < 2 || id >= w.hwm || w.free.has(id) {
			return fmt.Errorf("freelist names page %d (high water mark %d) badly", id, w.hwm)
		}
		w.free.set(id)
	}
	return w.claim(w.freelist, pages)
}

// walkTree checks the subtree at page id. In the root tree, leaves hold
// the buckets; in a bucket's tree they hold keys and values and no
// nested buckets (this store never makes any).
func (w *walker) walkTree(id uint64, depth int, rootTree bool) error {
	if depth > maxTreeDepth {
		return fmt.Errorf("tree deeper than %d at page %d", maxTreeDepth, id)
	}
	flags, count, pages, err := w.pageHeader(id, branchPageFlag, leafPageFlag)
	if err != nil {
		return err
	}
	if err := w.claim(id, pages); err != nil {
		return err
	}
	size := pages * uint64(w.pageSize)
	if size > maxPageRun {
		return fmt.Errorf("page %d spans %d pages", id, pages)
	}
	buf, err := w.slice(id*uint64(w.pageSize), size)
	if err != nil {
		return err
	}
	if flags == branchPageFlag {
		if count == 0 || pageHeaderLen+count*branchElemLen > len(buf) {
			return fmt.Errorf("branch page %d has %d elements", id, count)
		}
		for i := range count {
			e := pageHeaderLen + i*branchElemLen
			pos, ksize := uint64(ne.Uint32(buf[e:])), uint64(ne.Uint32(buf[e+4:]))
			if uint64(e)+pos+ksize > uint64(len(buf)) {
				return fmt.Errorf("branch page %d element %d points outside the page", id, i)
			}
			if err := w.walkTree(ne.Uint64(buf[e+8:]), depth+1, rootTree); err != nil {
				return err
			}
		}
		return nil
	}
	return w.checkLeaf(id, buf, count, depth, rootTree)
}

// checkLeaf checks the elements of a leaf page (or an inline bucket, which
// is a leaf page stored in its parent's value).
func (w *walker) checkLeaf(id uint64, page []byte, count int, depth int, rootTree bool) error {
	if pageHeaderLen+count*leafElemLen > len(page) {
		return fmt.Errorf("leaf page %d has %d elements", id, count)
	}
	for i := range count {
		e := pageHeaderLen + i*leafElemLen
		eflags := ne.Uint32(page[e:])
		pos, ksize, vsize := uint64(ne.Uint32(page[e+4:])), uint64(ne.Uint32(page[e+8:])), uint64(ne.Uint32(page[e+12:]))
		end := uint64(e) + pos + ksize + vsize
		if end > uint64(len(page)) {
			return fmt.Errorf("leaf page %d element %d points outside the page", id, i)
		}
		if eflags&bucketLeafFlag == 0 {
			continue
		}
		if !rootTree {
			return fmt.Errorf("leaf page %d holds a nested bucket", id)
		}
		value := page[uint64(e)+pos+ksize : end]
		if len(value) < inBucketLen {
			return fmt.Errorf("leaf page %d: bucket value of %d bytes", id, len(value))
		}
		if root := ne.Uint64(value); root != 0 {
			if err := w.walkTree(root, depth+1, false); err != nil {
				return err
			}
			continue
		}
		inline := value[inBucketLen:]
		if len(inline) < pageHeaderLen || ne.Uint16(inline[8:]) != leafPageFlag {
			return fmt.Errorf("leaf page %d: damaged inline bucket", id)
		}
		if err := w.checkLeaf(id, inline, int(ne.Uint16(inline[10:])), depth+1, false); err != nil {
			return err
		}
	}
	return nil
}

type bitset []uint64

func newBitset(n uint64) bitset    { return make(bitset, (n+63)/64) }
func (b bitset) has(i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }
func (b bitset) set(i uint64)      { b[i/64] |= 1 << (i % 64) }
