// Package storetest is the conformance suite every scache.Store must pass.
//
// The contract it checks, beyond the scache.Store comments:
//
//   - Written comes back exactly as stored, to the nanosecond (compared
//     with time.Time.Equal: the location and monotonic reading may be
//     dropped).
//   - Put always stores the new entry and then, while a limit is exceeded,
//     removes the entry with the oldest Written time (which may be the new
//     one). Each such removal counts in StoreStats.Evictions; replacing an
//     entry and Expire do not.
//   - Expire removes entries in Written order, oldest first, and its more
//     result is exact: true if and only if expired entries remain.
//   - An entry whose scache.Size alone exceeds MaxBytes is refused with
//     scache.ErrTooLarge and the store is left as it was.
//   - A store whose commits do not fail reports, after a Commit, no
//     Pending, Refused or Lost changes and is not Failing (every Stats
//     comparison of the suite includes these fields).
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

// OpenFunc returns a new, empty store bounded by lim. The suite closes
// every store it opens exactly once; OpenFunc may register t.Cleanup for
// anything else (temporary files).
type OpenFunc func(t *testing.T, lim scache.Limits) scache.Store

// Run runs the conformance suite against the stores that open returns.
func Run(t *testing.T, open OpenFunc) {
	tests := []struct {
		name string
		fn   func(*testing.T, OpenFunc)
	}{
		{"GetMiss", testGetMiss},
		{"PutGet", testPutGet},
		{"WrittenPrecision", testWrittenPrecision},
		{"EmptySession", testEmptySession},
		{"PutReplaces", testPutReplaces},
		{"NotAliased", testNotAliased},
		{"Delete", testDelete},
		{"Expire", testExpire},
		{"ExpireMoreExact", testExpireMoreExact},
		{"MaxEntries", testMaxEntries},
		{"MaxEntriesNewestStays", testMaxEntriesNewestStays},
		{"MaxBytes", testMaxBytes},
		{"TooLarge", testTooLarge},
		{"SetLimits", testSetLimits},
		{"Model", testModel},
		{"Concurrent", testConcurrent},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

var ctx = context.Background()

// roomy limits never evict in the small tests.
var roomy = scache.Limits{MaxEntries: 1000, MaxBytes: 1 << 24}

// base is an arbitrary time with a nanosecond part, so that a store that
// rounds is caught.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

func at(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }

// openStore opens a store bounded by lim and closes it, checking the
// error, when the test ends.
func openStore(t *testing.T, open OpenFunc, lim scache.Limits) scache.Store {
	t.Helper()
	s := open(t, lim)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// put stores an entry and, for a store that commits in the background,
// waits for the commit, so that the bounds it triggers can be checked.
func put(t *testing.T, s scache.Store, id string, written time.Time, session []byte) {
	t.Helper()
	if err := s.Put(ctx, id, scache.Entry{Written: written, Session: session}); err != nil {
		t.Fatalf("Put(%q): %v", id, err)
	}
	if c, ok := s.(scache.Committer); ok {
		if err := c.Commit(ctx); err != nil {
			t.Fatalf("Commit after Put(%q): %v", id, err)
		}
	}
}

func mustGet(t *testing.T, s scache.Store, id string) scache.Entry {
	t.Helper()
	e, err := s.Get(ctx, id)
	if err != nil {
		t.Fatalf("Get(%q): %v", id, err)
	}
	return e
}

func wantEntry(t *testing.T, s scache.Store, id string, written time.Time, session []byte) {
	t.Helper()
	e := mustGet(t, s, id)
	if !e.Written.Equal(written) {
		t.Errorf("Get(%q).Written = %v, want %v", id, e.Written, written)
	}
	if !bytes.Equal(e.Session, session) {
		t.Errorf("Get(%q).Session = %q, want %q", id, e.Session, session)
	}
}

func wantMiss(t *testing.T, s scache.Store, id string) {
	t.Helper()
	e, err := s.Get(ctx, id)
	if !errors.Is(err, scache.ErrNotFound) {
		t.Errorf("Get(%q) = %v, %v; want scache.ErrNotFound", id, e, err)
	}
}

func stats(t *testing.T, s scache.Store) scache.StoreStats {
	t.Helper()
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return st
}

func wantStats(t *testing.T, s scache.Store, entries int, bytes int64, evictions uint64) {
	t.Helper()
	st := stats(t, s)
	want := scache.StoreStats{Entries: entries, Bytes: bytes, Evictions: evictions}
	if st != want {
		t.Errorf("Stats = %+v, want %+v", st, want)
	}
}

func testGetMiss(t *testing.T, open OpenFunc) {
	s := openStore(t, open, roomy)
	wantMiss(t, s, "nothing-here")
	put(t, s, "a", at(0), []byte("x"))
	wantMiss(t, s, "b")
	wantMiss(t, s, "A")
	wantStats(t, s, 1, scache.Size("a", []byte("x")), 0)
}

func testPutGet(t *testing.T, open OpenFunc) {
	s := openStore(t, open, roomy)
	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	ids := []string{
		"0123456789abcdef0123456789abcdef&s=smtp&l=805306672",
		"smtp&[mx.example]:25&192.0.2.1&&0123456789ABCDEF",
		"x",
	}
	for i, id := range ids {
		put(t, s, id, at(i), binary[i:])
	}
	var total int64
	for i, id := range ids {
		wantEntry(t, s, id, at(i), binary[i:])
		total += scache.Size(id, binary[i:])
	}
	wantStats(t, s, len(ids), total, 0)
}

func testWrittenPrecision(t *testing.T, open OpenFunc) {
	s := openStore(t, open, roomy)
	now := time.Now() // carries a monotonic reading, which may be dropped
	times := []time.Time{
		now,
		base,
		time.Date(2038, 1, 19, 3, 14, 8, 1, time.FixedZone("X", 3600)),
		time.Unix(0, 1),
		time.Unix(-1, 999999999),
	}
	for i, w := range times {
		put(t, s, fmt.Sprint("t", i), w, []byte("s"))
	}
	for i, w := range times {
		e := mustGet(t, s, fmt.Sprint("t", i))
		if !e.Written.Equal(w) {
			t.Errorf("Written %v came back as %v: stores must keep nanoseconds", w, e.Written)
		}
	}
}

func testEmptySession(t *testing.T, open OpenFunc) {
	s := openStore(t, open, roomy)
	put(t, s, "empty", at(0), nil)
	e := mustGet(t, s, "empty")
	if len(e.Session) != 0 {
		t.Errorf("Session = %q, want empty", e.Session)
	}
	wantStats(t, s, 1, scache.Size("empty", nil), 0)
}

func testPutReplaces(t *testing.T, open OpenFunc) {
	s := openStore(t, open, roomy)
	put(t, s, "a", at(5), []byte("first session"))
	put(t, s, "b", at(6), []byte("other"))
	put(t, s, "a", at(1), []byte("second"))
	wantEntry(t, s, "a", at(1), []byte("second"))
	wantEntry(t, s, "b", at(6), []byte("other"))
	wantStats(t, s, 2, scache.Size("a", []byte("second"))+scache.Size("b", []byte("other")), 0)

	// The replaced entry's old write time must not linger in the order
	// used by Expire: a cutoff between the two write times of "a" now
	// catches it.
	n, more, err := s.Expire(ctx, at(2), 10, nil)
	if err != nil || n != 1 || more {
		t.Fatalf("Expire = %d, %v, %v; want 1, false, nil", n, more, err)
	}
	wantMiss(t, s, "a")
	n, _, err = s.Expire(ctx, at(6), 10, nil)
	if err != nil || n != 0 {
		t.Fatalf("Expire after removal = %d, %v; want 0", n, err)
	}
}

func testNotAliased(t *testing.T, open OpenFunc) {
	s := openStore(t, open, roomy)
	in := []byte("session bytes")
	put(t, s, "a", at(0), in)
	copy(in, "XXXXXXX")
	e := mustGet(t, s, "a")
	if string(e.Session) != "session bytes" {
		t.Fatalf("store kept the caller's Put slice: %q", e.Session)
	}
	for i := range e.Session {
		e.Session[i] = 'Y'
	}
	wantEntry(t, s, "a", at(0), []byte("session bytes"))
	e1, e2 := mustGet(t, s, "a"), mustGet(t, s, "a")
	e1.Session[0] = 'Z'
	if e2.Session[0] == 'Z' {
		t.Fatal("two Gets returned the same slice")
	}
}

func testDelete(t *testing.T, open OpenFunc) {
	s := openStore(t, open, roomy)
	put(t, s, "a", at(0), []byte("1"))
	put(t, s, "b", at(1), []byte("2"))
	if ok, err := s.Delete(ctx, "a"); err != nil || !ok {
		t.Fatalf("Delete(a) = %v, %v; want true", ok, err)
	}
	if ok, err := s.Delete(ctx, "a"); err != nil || ok {
		t.Fatalf("second Delete(a) = %v, %v; want false", ok, err)
	}
	if ok, err := s.Delete(ctx, "never"); err != nil || ok {
		t.Fatalf("Delete(never) = %v, %v; want false", ok, err)
	}
	wantMiss(t, s, "a")
	wantEntry(t, s, "b", at(1), []byte("2"))
	wantStats(t, s, 1, scache.Size("b", []byte("2")), 0)
	// A deleted entry must not come back through Expire's order either.
	n, more, err := s.Expire(ctx, at(100), 10, nil)
	if err != nil || n != 1 || more {
		t.Fatalf("Expire = %d, %v, %v; want 1, false, nil", n, more, err)
	}
	wantStats(t, s, 0, 0, 0)
}

func testExpire(t *testing.T, open OpenFunc) {
	s := openStore(t, open, roomy)
	// Insert out of order: the store must order by Written, not by insertion.
	order := rand.New(rand.NewPCG(1, 2)).Perm(20)
	for _, i := range order {
		put(t, s, fmt.Sprint("id", i), at(i), []byte(fmt.Sprint("s", i)))
	}
	cutoff := at(10) // entries 0..9 are written before it; 10 is not
	var visited []string
	visit := func(b []byte) { visited = append(visited, string(b)) }
	for round, want := range []struct {
		n    int
		more bool
	}{{3, true}, {3, true}, {3, true}, {1, false}, {0, false}} {
		n, more, err := s.Expire(ctx, cutoff, 3, visit)
		if err != nil || n != want.n || more != want.more {
			t.Fatalf("round %d: Expire = %d, %v, %v; want %d, %v, nil", round, n, more, err, want.n, want.more)
		}
	}
	var want []string
	for i := range 10 {
		want = append(want, fmt.Sprint("s", i))
	}
	if !slices.Equal(visited, want) {
		t.Errorf("visited %q, want %q (oldest first)", visited, want)
	}
	for i := range 20 {
		id := fmt.Sprint("id", i)
		if i < 10 {
			wantMiss(t, s, id)
		} else {
			wantEntry(t, s, id, at(i), []byte(fmt.Sprint("s", i)))
		}
	}
	st := stats(t, s)
	if st.Entries != 10 || st.Evictions != 0 {
		t.Errorf("Stats = %+v, want 10 entries and no evictions (expiry is not eviction)", st)
	}
	// A nil visit is allowed.
	if n, more, err := s.Expire(ctx, at(12), 100, nil); err != nil || n != 2 || more {
		t.Errorf("Expire with nil visit = %d, %v, %v; want 2, false, nil", n, more, err)
	}
}

func testExpireMoreExact(t *testing.T, open OpenFunc) {
	s := openStore(t, open, roomy)
	for i := range 6 {
		put(t, s, fmt.Sprint("id", i), at(i), []byte("s"))
	}
	// Exactly max expired entries: all go, and nothing expired remains.
	if n, more, err := s.Expire(ctx, at(3), 3, nil); err != nil || n != 3 || more {
		t.Fatalf("Expire = %d, %v, %v; want 3, false, nil", n, more, err)
	}
	// max 0 removes nothing but still reports what is left.
	if n, more, err := s.Expire(ctx, at(5), 0, nil); err != nil || n != 0 || !more {
		t.Fatalf("Expire(max 0) = %d, %v, %v; want 0, true, nil", n, more, err)
	}
	if n, more, err := s.Expire(ctx, at(0), 10, nil); err != nil || n != 0 || more {
		t.Fatalf("Expire(nothing expired) = %d, %v, %v; want 0, false, nil", n, more, err)
	}
	wantStats(t, s, 3, 3*scache.Size("id0", []byte("s")), 0)
}

func testMaxEntries(t *testing.T, open OpenFunc) {
	s := openStore(t, open, scache.Limits{MaxEntries: 10, MaxBytes: 1 << 30})
	// Written times 0..9 in a shuffled insertion order.
	for _, i := range rand.New(rand.NewPCG(3, 4)).Perm(10) {
		put(t, s, fmt.Sprintf("id%02d", i), at(i), []byte("s"))
	}
	size := scache.Size("id00", []byte("s"))
	wantStats(t, s, 10, 10*size, 0)
	// Replacing an entry in a full store evicts nothing.
	put(t, s, "id09", at(9), []byte("t"))
	wantStats(t, s, 10, 10*size, 0)
	for i := 10; i < 15; i++ {
		put(t, s, fmt.Sprintf("id%02d", i), at(i), []byte("s"))
	}
	for i := range 15 {
		if i < 5 {
			wantMiss(t, s, fmt.Sprintf("id%02d", i))
		} else {
			mustGet(t, s, fmt.Sprintf("id%02d", i))
		}
	}
	wantStats(t, s, 10, 10*size, 5)
}

func testMaxEntriesNewestStays(t *testing.T, open OpenFunc) {
	s := openStore(t, open, scache.Limits{MaxEntries: 3, MaxBytes: 1 << 30})
	for i := range 3 {
		put(t, s, fmt.Sprint("id", i+10), at(i+10), []byte("s"))
	}
	// An entry older than everything in a full store is itself the one to
	// go: the store keeps the MaxEntries newest.
	put(t, s, "old", at(1), []byte("s"))
	wantMiss(t, s, "old")
	for i := range 3 {
		mustGet(t, s, fmt.Sprint("id", i+10))
	}
	wantStats(t, s, 3, 3*scache.Size("id10", []byte("s")), 1)
}

func testMaxBytes(t *testing.T, open OpenFunc) {
	session := bytes.Repeat([]byte{0xAB}, 100)
	size := scache.Size("id0", session)
	s := openStore(t, open, scache.Limits{MaxEntries: 1000, MaxBytes: 5 * size})
	for i := range 8 {
		put(t, s, fmt.Sprint("id", i), at(i), session)
	}
	for i := range 8 {
		if i < 3 {
			wantMiss(t, s, fmt.Sprint("id", i))
		} else {
			wantEntry(t, s, fmt.Sprint("id", i), at(i), session)
		}
	}
	wantStats(t, s, 5, 5*size, 3)

	// One entry as large as two makes room by evicting the two oldest.
	double := bytes.Repeat([]byte{0xCD}, 100+int(size))
	put(t, s, "id8", at(8), double)
	wantMiss(t, s, "id3")
	wantMiss(t, s, "id4")
	wantEntry(t, s, "id8", at(8), double)
	wantStats(t, s, 4, 5*size, 5)

	// Growing an entry in place can evict others too.
	put(t, s, "id5", at(9), double)
	wantMiss(t, s, "id6")
	wantStats(t, s, 3, 5*size, 6)
}

// testSetLimits changes the bounds of an open store (for a reload of
// main.cf): a smaller bound evicts the oldest at once, down to it,
// counted as evictions, and holds from then on; a larger one lets the
// store grow; invalid bounds change nothing.
func testSetLimits(t *testing.T, open OpenFunc) {
	s := openStore(t, open, scache.Limits{MaxEntries: 10, MaxBytes: 1 << 30})
	id := func(i int) string { return fmt.Sprintf("id%02d", i) }
	for _, i := range rand.New(rand.NewPCG(5, 6)).Perm(10) {
		put(t, s, id(i), at(i), []byte("s"))
	}
	size := scache.Size(id(0), []byte("s"))
	setLimits := func(lim scache.Limits) {
		t.Helper()
		if err := s.SetLimits(ctx, lim); err != nil {
			t.Fatalf("SetLimits(%+v): %v", lim, err)
		}
	}
	setLimits(scache.Limits{MaxEntries: 4, MaxBytes: 1 << 30})
	for i := range 10 {
		if i < 6 {
			wantMiss(t, s, id(i))
		} else {
			wantEntry(t, s, id(i), at(i), []byte("s"))
		}
	}
	wantStats(t, s, 4, 4*size, 6)
	// It holds for what comes next.
	put(t, s, id(10), at(10), []byte("s"))
	wantMiss(t, s, id(6))
	wantStats(t, s, 4, 4*size, 7)

	// The byte bound, which also refuses larger entries from now on.
	setLimits(scache.Limits{MaxEntries: 100, MaxBytes: 2 * size})
	wantMiss(t, s, id(7))
	wantMiss(t, s, id(8))
	wantEntry(t, s, id(9), at(9), []byte("s"))
	wantEntry(t, s, id(10), at(10), []byte("s"))
	wantStats(t, s, 2, 2*size, 9)
	tooBig := make([]byte, 2*size-scache.EntryOverhead-int64(len("big"))+1)
	if err := s.Put(ctx, "big", scache.Entry{Written: at(11), Session: tooBig}); !errors.Is(err, scache.ErrTooLarge) {
		t.Errorf("Put over the new byte bound = %v, want scache.ErrTooLarge", err)
	}

	// A larger bound evicts nothing and lets the store grow.
	setLimits(scache.Limits{MaxEntries: 100, MaxBytes: 1 << 30})
	wantStats(t, s, 2, 2*size, 9)
	for i := 11; i < 15; i++ {
		put(t, s, id(i), at(i), []byte("s"))
	}
	wantStats(t, s, 6, 6*size, 9)

	// Invalid bounds are refused and change nothing.
	for _, lim := range []scache.Limits{{MaxEntries: 0, MaxBytes: 1}, {MaxEntries: 1, MaxBytes: 0}, {MaxEntries: -1, MaxBytes: -1}} {
		if err := s.SetLimits(ctx, lim); err == nil {
			t.Errorf("SetLimits(%+v) succeeded", lim)
		}
	}
	wantStats(t, s, 6, 6*size, 9)
	put(t, s, id(15), at(15), []byte("s"))
	wantStats(t, s, 7, 7*size, 9)
}

func testTooLarge(t *testing.T, open OpenFunc) {
	const maxBytes = 1000
	s := openStore(t, open, scache.Limits{MaxEntries: 10, MaxBytes: maxBytes})
	put(t, s, "a", at(0), []byte("small"))
	put(t, s, "b", at(1), []byte("small too"))
	before := stats(t, s)

	tooBig := make([]byte, maxBytes-scache.EntryOverhead-len("c")+1)
	if got := scache.Size("c", tooBig); got != maxBytes+1 {
		t.Fatalf("test bug: size %d", got)
	}
	err := s.Put(ctx, "c", scache.Entry{Written: at(2), Session: tooBig})
	if !errors.Is(err, scache.ErrTooLarge) {
		t.Fatalf("Put of %d bytes under MaxBytes %d = %v, want ErrTooLarge", scache.Size("c", tooBig), maxBytes, err)
	}
	// Replacing an entry with one too large leaves the old one in place.
	err = s.Put(ctx, "a", scache.Entry{Written: at(3), Session: append(tooBig, 'x')})
	if !errors.Is(err, scache.ErrTooLarge) {
		t.Fatalf("replacing Put = %v, want ErrTooLarge", err)
	}
	wantMiss(t, s, "c")
	wantEntry(t, s, "a", at(0), []byte("small"))
	wantEntry(t, s, "b", at(1), []byte("small too"))
	if st := stats(t, s); st != before {
		t.Errorf("Stats after refused Puts = %+v, want %+v", st, before)
	}

	// Exactly MaxBytes fits, at the cost of everything else.
	fits := tooBig[:len(tooBig)-1]
	put(t, s, "c", at(4), fits)
	wantEntry(t, s, "c", at(4), fits)
	wantMiss(t, s, "a")
	wantMiss(t, s, "b")
	wantStats(t, s, 1, maxBytes, 2)
}

// model is the reference implementation the randomized test compares with.
type model struct {
	lim       scache.Limits
	entries   map[string]scache.Entry
	bytes     int64
	evictions uint64
}

func (m *model) remove(id string) {
	m.bytes -= scache.Size(id, m.entries[id].Session)
	delete(m.entries, id)
}

// byAge lists the ids oldest first; write times in the test are unique.
func (m *model) byAge() []string {
	ids := make([]string, 0, len(m.entries))
	for id := range m.entries {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int { return m.entries[a].Written.Compare(m.entries[b].Written) })
	return ids
}

func (m *model) put(id string, e scache.Entry) error {
	if scache.Size(id, e.Session) > m.lim.MaxBytes {
		return scache.ErrTooLarge
	}
	if _, ok := m.entries[id]; ok {
		m.remove(id)
	}
	m.entries[id] = e
	m.bytes += scache.Size(id, e.Session)
	for _, old := range m.byAge() {
		if len(m.entries) <= m.lim.MaxEntries && m.bytes <= m.lim.MaxBytes {
			break
		}
		m.remove(old)
		m.evictions++
	}
	return nil
}

func (m *model) expire(cutoff time.Time, max int) (visited []string, more bool) {
	for _, id := range m.byAge() {
		if !m.entries[id].Written.Before(cutoff) {
			return visited, false
		}
		if len(visited) == max {
			return visited, true
		}
		visited = append(visited, string(m.entries[id].Session))
		m.remove(id)
	}
	return visited, false
}

func testModel(t *testing.T, open OpenFunc) {
	lim := scache.Limits{MaxEntries: 40, MaxBytes: 6000}
	s := openStore(t, open, lim)
	m := &model{lim: lim, entries: map[string]scache.Entry{}}
	rng := rand.New(rand.NewPCG(20240611, 5))
	ops := 3000
	if testing.Short() {
		ops = 800
	}
	usedTimes := map[int64]bool{}
	const span = int64(time.Hour)
	newTime := func() time.Time {
		for {
			ns := rng.Int64N(span)
			if !usedTimes[ns] {
				usedTimes[ns] = true
				return base.Add(time.Duration(ns))
			}
		}
	}
	randomID := func() string {
		n := rng.IntN(120)
		if n%7 == 0 {
			return fmt.Sprintf("smtp&[mx%d.example]:25&192.0.2.%d&&%064x", n, n, n)
		}
		return fmt.Sprintf("id-%d", n)
	}
	randomSession := func() []byte {
		n := rng.IntN(300)
		if rng.IntN(100) == 0 {
			n = 6000 // too large alone
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	for op := range ops {
		switch r := rng.IntN(100); {
		case r < 45:
			id, e := randomID(), scache.Entry{Written: newTime(), Session: randomSession()}
			got, want := s.Put(ctx, id, e), m.put(id, e)
			if !errors.Is(got, want) && got != want {
				t.Fatalf("op %d: Put(%q, %d bytes) = %v, model says %v", op, id, len(e.Session), got, want)
			}
		case r < 70:
			id := randomID()
			got, err := s.Get(ctx, id)
			want, ok := m.entries[id]
			switch {
			case !ok && !errors.Is(err, scache.ErrNotFound):
				t.Fatalf("op %d: Get(%q) = %v, %v; model has no entry", op, id, got, err)
			case ok && err != nil:
				t.Fatalf("op %d: Get(%q) = %v; model has one", op, id, err)
			case ok && (!got.Written.Equal(want.Written) || !bytes.Equal(got.Session, want.Session)):
				t.Fatalf("op %d: Get(%q) returned a different entry than the model's", op, id)
			}
		case r < 82:
			id := randomID()
			_, want := m.entries[id]
			if want {
				m.remove(id)
			}
			got, err := s.Delete(ctx, id)
			if err != nil || got != want {
				t.Fatalf("op %d: Delete(%q) = %v, %v; model says %v", op, id, got, err, want)
			}
		default:
			cutoff := base.Add(time.Duration(rng.Int64N(span)))
			max := rng.IntN(8)
			var got []string
			n, more, err := s.Expire(ctx, cutoff, max, func(b []byte) { got = append(got, string(b)) })
			want, wantMore := m.expire(cutoff, max)
			if err != nil || n != len(want) || more != wantMore || !slices.Equal(got, want) {
				t.Fatalf("op %d: Expire(max %d) = %d, %v, %v visiting %d; model removes %d, more %v",
					op, max, n, more, err, len(got), len(want), wantMore)
			}
		}
		st := stats(t, s)
		if st.Entries != len(m.entries) || st.Bytes != m.bytes || st.Evictions != m.evictions {
			t.Fatalf("op %d: Stats = %+v, model has %d entries, %d bytes, %d evictions",
				op, st, len(m.entries), m.bytes, m.evictions)
		}
	}
	// Finally every entry of the model is in the store, exactly.
	for id, e := range m.entries {
		wantEntry(t, s, id, e.Written, e.Session)
	}
}

func testConcurrent(t *testing.T, open OpenFunc) {
	lim := scache.Limits{MaxEntries: 50, MaxBytes: 50 * 200}
	s := openStore(t, open, lim)
	const workers = 6
	perWorker := 300
	if testing.Short() {
		perWorker = 100
	}
	// A session names its id, so any entry read back can be checked.
	sessionFor := func(id string, n int) []byte {
		return fmt.Appendf(nil, "%s|%d|%s", id, n, bytes.Repeat([]byte{'.'}, n%100))
	}
	validFor := func(id string, b []byte) bool { return bytes.HasPrefix(b, []byte(id+"|")) }
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			for n := range perWorker {
				id := fmt.Sprint("shared-", rng.IntN(80))
				var err error
				switch rng.IntN(10) {
				case 0, 1, 2, 3:
					err = s.Put(ctx, id, scache.Entry{Written: time.Now(), Session: sessionFor(id, n)})
				case 4, 5, 6:
					var e scache.Entry
					e, err = s.Get(ctx, id)
					if err == nil && !validFor(id, e.Session) {
						err = fmt.Errorf("Get(%q) returned another id's session %q", id, e.Session)
					}
					if errors.Is(err, scache.ErrNotFound) {
						err = nil
					}
				case 7:
					_, err = s.Delete(ctx, id)
				case 8:
					_, _, err = s.Expire(ctx, time.Now().Add(-time.Millisecond), 5, func(b []byte) {
						if !bytes.Contains(b, []byte("|")) {
							t.Errorf("Expire visited a foreign session %q", b)
						}
					})
				default:
					var st scache.StoreStats
					st, err = s.Stats(ctx)
					if err == nil && (st.Entries > lim.MaxEntries || st.Bytes > lim.MaxBytes) {
						err = fmt.Errorf("stats %+v beyond limits %+v", st, lim)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// After the storm, Stats must agree with what Get finds.
	st := stats(t, s)
	found, total := 0, int64(0)
	for i := range 80 {
		id := fmt.Sprint("shared-", i)
		e, err := s.Get(ctx, id)
		if errors.Is(err, scache.ErrNotFound) {
			continue
		}
		if err != nil || !validFor(id, e.Session) {
			t.Fatalf("Get(%q) = %q, %v", id, e.Session, err)
		}
		found++
		total += scache.Size(id, e.Session)
	}
	if st.Entries != found || st.Bytes != total {
		t.Errorf("Stats = %+v, but Get finds %d entries of %d bytes", st, found, total)
	}
}

func testClose(t *testing.T, open OpenFunc) {
	s := open(t, roomy)
	put(t, s, "a", at(0), []byte("x"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
