package redisstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/scache/storetest"
)

// withExpiry gives the suite's entries, which have no Expires, a future
// one, so that every Put goes on to Redis as the cache's would.
type withExpiry struct{ *Store }

func (w withExpiry) Put(c context.Context, id string, e scache.Entry) error {
	if e.Expires.IsZero() {
		e.Expires = time.Now().Add(time.Hour)
	}
	return w.Store.Put(c, id, e)
}

// While Redis is away the store is its local cache, which must then be a
// conforming store, bounds and sweep included: the whole suite applies.
// Each store checks afterwards that Redis was asked and never answered, so
// the suite really ran on the fallback path.
func TestConformanceRedisDown(t *testing.T) {
	addr := deadServer(t)
	storetest.Run(t, func(t *testing.T, lim scache.Limits) scache.Store {
		m := newMember(t, conf{addrs: []string{addr}, timeout: timeout, lim: lim})
		t.Cleanup(func() {
			st := m.FleetStats()
			// Lookups of writes still queued are answered locally.
			if st.Hits+st.Misses != st.LocalHits+st.LocalMisses || st.UpdatesUnshared == 0 || st.Backend.Errors == 0 {
				t.Errorf("the suite did not run against an unreachable Redis: %+v", st)
			}
		})
		return withExpiry{m.Store}
	})
}

// With Redis up the suite's bound and sweep checks do not apply (Redis
// holds what the local cache evicts or sweeps, and stays authoritative),
// so these are its other checks, each across two members, plus what
// becomes of the bounds and the sweep.
func TestSharedSemantics(t *testing.T) {
	srv := redistest.Single(t)
	n := 0
	// Two members of a fleet of their own: a key prefix per subtest.
	pair := func(t *testing.T, lim scache.Limits) (*member, *member) {
		n++
		c := conf{addrs: []string{srv.Addr}, prefix: fmt.Sprintf("t%d:", n), lim: lim}
		a, b := newMember(t, c), newMember(t, c)
		t.Cleanup(func() {
			a.wantRedisOnly(t)
			b.wantRedisOnly(t)
			a.Close()
			b.Close()
		})
		return a, b
	}
	base := time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)
	at := func(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }

	t.Run("GetMiss", func(t *testing.T) {
		a, b := pair(t, roomy)
		wantMiss(t, a, "nothing-here")
		put(t, a, "a", at(0), []byte("x"))
		wantMiss(t, b, "b")
		wantMiss(t, b, "A")
		wantEntry(t, b, "a", at(0), []byte("x"))
	})

	t.Run("PutGet", func(t *testing.T) {
		a, b := pair(t, roomy)
		binary := make([]byte, 256)
		for i := range binary {
			binary[i] = byte(i)
		}
		ids := []string{
			"0123456789abcdef0123456789abcdef&s=smtp&l=805306672",
			"smtp&[mx.example]:25&192.0.2.1&&0123456789ABCDEF",
			"x",
			"",
			"\x00\xff binary id",
		}
		for i, id := range ids {
			put(t, a, id, at(i), binary[i:])
		}
		for i, id := range ids {
			wantEntry(t, b, id, at(i), binary[i:])
		}
	})

	t.Run("WrittenPrecision", func(t *testing.T) {
		a, b := pair(t, roomy)
		times := []time.Time{
			time.Now(),
			base,
			time.Date(2038, 1, 19, 3, 14, 8, 1, time.FixedZone("X", 3600)),
			time.Unix(0, 1),
			time.Unix(-1, 999999999),
			time.Unix(0, -1<<63),
			time.Unix(0, 1<<63-1),
		}
		for i, w := range times {
			put(t, a, fmt.Sprint("t", i), w, []byte("s"))
		}
		for i, w := range times {
			wantEntry(t, b, fmt.Sprint("t", i), w, []byte("s"))
		}
	})

	t.Run("WrittenOutOfRange", func(t *testing.T) {
		// Unix nanoseconds cannot hold it: kept locally only, and an
		// older version must not show through in its place.
		a, b := pair(t, roomy)
		put(t, a, "far", base, []byte("old"))
		far := time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
		put(t, a, "far", far, []byte("new"))
		wantMiss(t, b, "far")
		if !a.localHas("far") {
			t.Error("not kept locally")
		}
	})

	t.Run("EmptySession", func(t *testing.T) {
		a, b := pair(t, roomy)
		put(t, a, "empty", at(0), nil)
		e, err := b.Get(ctx, "empty")
		if err != nil || len(e.Session) != 0 || !e.Written.Equal(at(0)) {
			t.Errorf("Get = %+v, %v; want an empty session written %v", e, err, at(0))
		}
	})

	t.Run("PutReplaces", func(t *testing.T) {
		a, b := pair(t, roomy)
		put(t, a, "a", at(5), []byte("first session"))
		put(t, b, "a", at(1), []byte("second"))
		wantEntry(t, a, "a", at(1), []byte("second"))
		// a's local copy was the older one: Redis, not it, answered.
		if st := a.FleetStats(); st.LocalHits != 0 || st.Hits != 1 {
			t.Fatalf("a's lookup: %+v, want one hit from Redis", st)
		}
	})

	t.Run("NotAliased", func(t *testing.T) {
		a, b := pair(t, roomy)
		in := []byte("session bytes")
		put(t, a, "a", at(0), in)
		copy(in, "XXXXXXX")
		e1, err := b.Get(ctx, "a")
		if err != nil || string(e1.Session) != "session bytes" {
			t.Fatalf("Get = %q, %v", e1.Session, err)
		}
		e2, _ := b.Get(ctx, "a")
		e1.Session[0] = 'Z'
		if e2.Session[0] == 'Z' {
			t.Fatal("two Gets returned the same slice")
		}
		wantEntry(t, a, "a", at(0), []byte("session bytes"))
	})

	t.Run("Delete", func(t *testing.T) {
		a, b := pair(t, roomy)
		put(t, a, "a", at(0), []byte("1"))
		put(t, a, "b", at(1), []byte("2"))
		if ok, err := b.Delete(ctx, "a"); err != nil || !ok {
			t.Fatalf("Delete(a) through b = %v, %v; want true", ok, err)
		}
		// Redis is authoritative: a's local copy does not answer.
		if !a.localHas("a") {
			t.Fatal("test bug: a has no local copy")
		}
		wantMiss(t, a, "a")
		if ok, err := a.Delete(ctx, "a"); err != nil || ok {
			t.Fatalf("second Delete(a) = %v, %v; want false", ok, err)
		}
		if a.localHas("a") {
			t.Error("Delete left the local copy")
		}
		if ok, err := a.Delete(ctx, "never"); err != nil || ok {
			t.Fatalf("Delete(never) = %v, %v; want false", ok, err)
		}
		wantEntry(t, b, "b", at(1), []byte("2"))
	})

	t.Run("TooLarge", func(t *testing.T) {
		const maxBytes = 1000
		a, b := pair(t, scache.Limits{MaxEntries: 10, MaxBytes: maxBytes})
		put(t, a, "a", at(0), []byte("small"))
		tooBig := make([]byte, maxBytes-scache.EntryOverhead-len("c")+1)
		e := scache.Entry{Written: at(2), Expires: time.Now().Add(time.Hour), Session: tooBig}
		if err := a.Put(ctx, "c", e); !errors.Is(err, scache.ErrTooLarge) {
			t.Fatalf("Put = %v, want ErrTooLarge", err)
		}
		e.Session = append(tooBig, 'x')
		if err := a.Put(ctx, "a", e); !errors.Is(err, scache.ErrTooLarge) {
			t.Fatalf("replacing Put = %v, want ErrTooLarge", err)
		}
		// Refused everywhere: not in Redis either.
		wantMiss(t, b, "c")
		wantEntry(t, b, "a", at(0), []byte("small"))
		fits := tooBig[:len(tooBig)-1]
		put(t, a, "c", at(4), fits)
		wantEntry(t, b, "c", at(4), fits)
	})

	t.Run("BoundsApplyLocally", func(t *testing.T) {
		a, b := pair(t, scache.Limits{MaxEntries: 5, MaxBytes: 1 << 20})
		for i := range 20 {
			put(t, a, fmt.Sprint("id", i), at(i), []byte("s"))
		}
		st, _ := a.Stats(ctx)
		if st.Entries != 5 || st.Evictions != 15 {
			t.Errorf("local part: %+v, want 5 entries and 15 evictions", st)
		}
		for i := range 20 {
			wantEntry(t, a, fmt.Sprint("id", i), at(i), []byte("s"))
			wantEntry(t, b, fmt.Sprint("id", i), at(i), []byte("s"))
		}
	})

	t.Run("ExpireSweepsLocalOnly", func(t *testing.T) {
		a, b := pair(t, roomy)
		var visited []string
		for i := range 4 {
			put(t, a, fmt.Sprint("id", i), at(i), []byte(fmt.Sprint("s", i)))
		}
		n, more, err := a.Expire(ctx, at(2), 10, func(s []byte) { visited = append(visited, string(s)) })
		if err != nil || n != 2 || more || fmt.Sprint(visited) != "[s0 s1]" {
			t.Fatalf("Expire = %d, %v, %v visiting %q; want 2, false, nil, [s0 s1]", n, more, err, visited)
		}
		if st, _ := a.Stats(ctx); st.Entries != 2 {
			t.Errorf("local part after Expire: %+v", st)
		}
		// Redis expires its own copies; the sweep leaves them.
		for i := range 4 {
			wantEntry(t, b, fmt.Sprint("id", i), at(i), []byte(fmt.Sprint("s", i)))
		}
	})

	// A random mix of operations through either member agrees with a map
	// while Redis is up; Stats follow the local part alone.
	t.Run("Model", func(t *testing.T) {
		lim := scache.Limits{MaxEntries: 20, MaxBytes: 4000}
		a, b := pair(t, lim)
		members := []*member{a, b}
		model := map[string]scache.Entry{}
		rng := rand.New(rand.NewPCG(20250314, 9))
		ops := 1500
		if testing.Short() {
			ops = 400
		}
		for op := range ops {
			m := members[rng.IntN(2)]
			id := fmt.Sprint("id-", rng.IntN(60))
			switch r := rng.IntN(100); {
			case r < 40:
				session := make([]byte, rng.IntN(200))
				if rng.IntN(50) == 0 {
					session = make([]byte, 4000) // too large alone
				}
				for i := range session {
					session[i] = byte(rng.Uint32())
				}
				e := scache.Entry{Written: base.Add(time.Duration(rng.Int64N(int64(time.Hour)))), Expires: time.Now().Add(time.Hour), Session: session}
				err := m.Put(ctx, id, e)
				if scache.Size(id, session) > lim.MaxBytes {
					if !errors.Is(err, scache.ErrTooLarge) {
						t.Fatalf("op %d: Put too large = %v", op, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("op %d: Put = %v", op, err)
				}
				settle(t, m)
				model[id] = e
			case r < 80:
				settle(t, m)
				got, err := m.Get(ctx, id)
				want, ok := model[id]
				switch {
				case !ok && !errors.Is(err, scache.ErrNotFound):
					t.Fatalf("op %d: Get(%q) = %v, %v; the model has none", op, id, got, err)
				case ok && err != nil:
					t.Fatalf("op %d: Get(%q) = %v; the model has one", op, id, err)
				case ok && (!got.Written.Equal(want.Written) || !bytes.Equal(got.Session, want.Session)):
					t.Fatalf("op %d: Get(%q) differs from the model", op, id)
				}
			default:
				_, want := model[id]
				delete(model, id)
				if got, err := m.Delete(ctx, id); err != nil || got != want {
					t.Fatalf("op %d: Delete(%q) = %v, %v; the model says %v", op, id, got, err, want)
				}
			}
			for _, m := range members {
				if st, _ := m.Stats(ctx); st.Entries > lim.MaxEntries || st.Bytes > lim.MaxBytes {
					t.Fatalf("op %d: local part %+v beyond %+v", op, st, lim)
				}
			}
		}
		for id, e := range model {
			wantEntry(t, a, id, e.Written, e.Session)
			wantEntry(t, b, id, e.Written, e.Session)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		lim := scache.Limits{MaxEntries: 30, MaxBytes: 30 * 200}
		a, b := pair(t, lim)
		sessionFor := func(id string, n int) []byte {
			return fmt.Appendf(nil, "%s|%d|%s", id, n, bytes.Repeat([]byte{'.'}, n%100))
		}
		var wg sync.WaitGroup
		for w := range 6 {
			m := []*member{a, b}[w%2]
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), 7))
				for n := range 200 {
					id := fmt.Sprint("shared-", rng.IntN(50))
					switch rng.IntN(10) {
					case 0, 1, 2, 3:
						e := scache.Entry{Written: time.Now(), Expires: time.Now().Add(time.Hour), Session: sessionFor(id, n)}
						if err := m.Put(ctx, id, e); err != nil {
							t.Error(err)
							return
						}
					case 4, 5, 6, 7:
						e, err := m.Get(ctx, id)
						if err == nil && !bytes.HasPrefix(e.Session, []byte(id+"|")) {
							t.Errorf("Get(%q) returned another id's session %q", id, e.Session)
							return
						}
					case 8:
						m.Delete(ctx, id)
					default:
						m.Expire(ctx, time.Now(), 5, nil)
						if st, _ := m.Stats(ctx); st.Entries > lim.MaxEntries || st.Bytes > lim.MaxBytes {
							t.Errorf("local part %+v beyond %+v", st, lim)
							return
						}
					}
				}
			})
		}
		wg.Wait()
		// After the storm, once both members' writes have landed and
		// each has applied the other's invalidations, both see the same
		// entries.
		settle(t, a)
		settle(t, b)
		settle(t, a)
		for i := range 50 {
			id := fmt.Sprint("shared-", i)
			ea, erra := a.Get(ctx, id)
			eb, errb := b.Get(ctx, id)
			if !errors.Is(erra, errb) || !bytes.Equal(ea.Session, eb.Session) || !ea.Written.Equal(eb.Written) {
				t.Errorf("%s: a has %q (%v), b %q (%v)", id, ea.Session, erra, eb.Session, errb)
			}
		}
	})
}
