package redisstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/redisconn"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

func TestNewRejects(t *testing.T) {
	addr := deadServer(t)
	m := newMember(t, conf{addrs: []string{addr}})
	for _, c := range []struct {
		cache string
		lim   scache.Limits
		want  string
	}{
		{"", roomy, "cache name"},
		{"smtp:d", roomy, "cache name"},
		{"smtpd", scache.Limits{MaxEntries: 0, MaxBytes: 1}, "limits"},
		{"smtpd", scache.Limits{MaxEntries: 1, MaxBytes: 0}, "limits"},
	} {
		if _, err := New(m.client, m.sealer, "p:", c.cache, c.lim, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%q, %+v) = %v, want an error about %s", c.cache, c.lim, err, c.want)
		}
	}
	if _, err := New(nil, m.sealer, "p:", "smtpd", roomy, nil); err == nil {
		t.Error("New without a client succeeded")
	}
	if _, err := New(m.client, nil, "p:", "smtpd", roomy, nil); err == nil {
		t.Error("New without a sealer succeeded")
	}
}

// An entry updated through any member is returned by every other; a
// delete through any member is seen by all.
func TestTwoMembers(t *testing.T) {
	srv := redistest.Single(t)
	c := conf{addrs: []string{srv.Addr}}
	a, b := newMember(t, c), newMember(t, c)
	now := time.Now()
	put(t, a, "id1", now, []byte("session one"))
	wantEntry(t, b, "id1", now, []byte("session one"))
	put(t, b, "id1", now.Add(time.Second), []byte("session one, again"))
	wantEntry(t, a, "id1", now.Add(time.Second), []byte("session one, again"))
	if ok, err := b.Delete(ctx, "id1"); !ok || err != nil {
		t.Fatalf("Delete through b = %v, %v", ok, err)
	}
	wantMiss(t, a, "id1")
	// Through the caches, as the daemon uses them.
	ca := scache.New(scache.Config{Name: "smtpd", Timeout: time.Hour}, a)
	cb := scache.New(scache.Config{Name: "smtpd", Timeout: time.Hour}, b)
	if err := ca.Update(ctx, "id2", []byte("two")); err != nil {
		t.Fatal(err)
	}
	settle(t, a)
	settle(t, b)
	if s, err := cb.Lookup(ctx, "id2"); err != nil || string(s) != "two" {
		t.Fatalf("Lookup through b = %q, %v", s, err)
	}
	if ok, err := cb.Delete(ctx, "id2"); !ok || err != nil {
		t.Fatalf("Delete through b = %v, %v", ok, err)
	}
	settle(t, a)
	if _, err := ca.Lookup(ctx, "id2"); !errors.Is(err, scache.ErrNotFound) {
		t.Fatalf("Lookup through a after a delete through b: %v", err)
	}
	a.wantRedisOnly(t)
	b.wantRedisOnly(t)
	st := a.FleetStats()
	if st.Hits != 1 || st.Misses != 2 || st.Backend.State != redisconn.StateUp {
		t.Errorf("a's stats %+v, want 1 hit and 2 misses", st)
	}
}

// Redis never sees an id, a session or a seal key: every key and value
// in it, read as an operator (or an intruder) would, contains none of
// them, raw or encoded.
func TestSealedAtRest(t *testing.T) {
	srv := redistest.Single(t)
	// A member mid-rotation writes too, so both keys' names are in use.
	old := newMember(t, conf{addrs: []string{srv.Addr}, keys: [][32]byte{k1}})
	rotated := newMember(t, conf{addrs: []string{srv.Addr}, keys: [][32]byte{k2, k1}})
	smtp := newMember(t, conf{addrs: []string{srv.Addr}, cache: "smtp", keys: [][32]byte{k2, k1}})

	rng := rand.New(rand.NewPCG(1, 2))
	var ids []string
	var sessions [][]byte
	for i := range 30 {
		ids = append(ids,
			fmt.Sprintf("%064x&s=smtpd&l=805306672", rng.Uint64()),
			fmt.Sprintf("smtp&[mx%d.example.net]:25&192.0.2.%d&&%032X", i, i, rng.Uint64()))
	}
	for range ids {
		s := make([]byte, 100+rng.IntN(200))
		for j := range s {
			s[j] = byte(rng.Uint32())
		}
		sessions = append(sessions, s)
	}
	writers := []*member{old, rotated, smtp}
	for i, id := range ids {
		put(t, writers[i%3], id, time.Now(), sessions[i])
		// The same id in the other cache too.
		if i%3 != 2 {
			put(t, smtp, id, time.Now(), sessions[(i+1)%len(sessions)])
		}
	}

	r := srv.Client(t)
	keys := allKeys(t, r)
	shape := regexp.MustCompile(`^tlsmgr:c:(smtpd|smtp):[A-Za-z0-9_-]{43}$`)
	var haystack [][]byte
	for _, k := range keys {
		if !shape.MatchString(k) {
			t.Errorf("key %q is not prefix, cache and a 43-character name", k)
		}
		v, err := r.Get(ctx, k).Bytes()
		if err != nil {
			t.Fatalf("GET %s: %v", k, err)
		}
		haystack = append(haystack, []byte(k), v)
	}
	if want := len(ids) + len(ids)*2/3; len(keys) != want {
		t.Fatalf("%d keys in Redis, want %d", len(keys), want)
	}

	var needles [][]byte
	for _, id := range ids {
		needles = append(needles, encodings([]byte(id))...)
	}
	for _, s := range sessions {
		needles = append(needles, encodings(s)...)
		// A leaked part of a session is a leak too.
		for i := 0; i+16 <= len(s); i += 8 {
			needles = append(needles, s[i:i+16], []byte(hex.EncodeToString(s[i:i+16])))
		}
	}
	for _, k := range [][32]byte{k1, k2} {
		needles = append(needles, encodings(k[:])...)
	}
	found := 0
	for _, n := range needles {
		for _, h := range haystack {
			if bytes.Contains(h, n) {
				found++
				if found < 5 {
					t.Errorf("Redis holds %q in the clear", n)
				}
			}
		}
	}
	if found > 0 {
		t.Fatalf("%d secrets found in Redis", found)
	}
	// And the entries are all there, each in its cache.
	for i, id := range ids {
		wantEntryIn(t, rotated, smtp, i, id, sessions)
	}
}

func wantEntryIn(t *testing.T, smtpd, smtp *member, i int, id string, sessions [][]byte) {
	t.Helper()
	want := sessions[i]
	s := scache.Store(smtpd)
	if i%3 == 2 {
		s = smtp
	}
	e, err := s.Get(ctx, id)
	if err != nil || !bytes.Equal(e.Session, want) {
		t.Errorf("entry %d: %v, or another session", i, err)
	}
	if i%3 != 2 {
		e, err := smtp.Get(ctx, id)
		if err != nil || !bytes.Equal(e.Session, sessions[(i+1)%len(sessions)]) {
			t.Errorf("entry %d in the smtp cache: %v, or another session", i, err)
		}
	}
}

// encodings are b raw, in hex and in base64 (every alphabet, padded or
// not, from each of the three byte alignments).
func encodings(b []byte) [][]byte {
	out := [][]byte{b, []byte(hex.EncodeToString(b)), []byte(strings.ToUpper(hex.EncodeToString(b)))}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		for off := range 3 {
			s := enc.EncodeToString(b[off:])
			// The last characters depend on what follows; the rest not.
			out = append(out, []byte(strings.TrimRight(s, "=")[:len(strings.TrimRight(s, "="))-3]))
		}
	}
	return out
}

// A value moved under another key, altered or foreign does not open: it
// is a miss, counted and logged, and never a fallback to the local copy
// (Redis answered).
func TestValueMovedOrDamaged(t *testing.T) {
	srv := redistest.Single(t)
	a := newMember(t, conf{addrs: []string{srv.Addr}})
	smtp := newMember(t, conf{addrs: []string{srv.Addr}, cache: "smtp"})
	r := srv.Client(t)
	now := time.Now()
	for _, id := range []string{"x", "y", "z", "w"} {
		put(t, a, id, now, []byte("session of "+id))
		put(t, smtp, id, now, []byte("smtp session of "+id))
	}
	key := func(m *member, id string) string { return m.writeKey(id) }
	value := func(k string) []byte {
		v, err := r.Get(ctx, k).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	set := func(k string, v []byte) {
		if err := r.Set(ctx, k, v, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// x's value under y's key.
	set(key(a, "y"), value(key(a, "x")))
	// The smtp cache's value of z under the smtpd key of z: same id,
	// same seal key, another cache.
	set(key(a, "z"), value(key(smtp, "z")))
	// One bit of w flipped.
	v := value(key(a, "w"))
	v[len(v)-20] ^= 1
	set(key(a, "w"), v)

	for i, id := range []string{"y", "z", "w"} {
		wantMiss(t, a, id)
		if !a.localHas(id) {
			t.Fatalf("test bug: no local copy of %s", id)
		}
		if got := a.FleetStats().Unopenable; got != uint64(i+1) {
			t.Errorf("after %s: %d values counted unopenable, want %d", id, got, i+1)
		}
	}
	// Garbage of every length around the header's.
	for n := range 40 {
		set(key(a, "x"), bytes.Repeat([]byte{1}, n))
		wantMiss(t, a, "x")
	}
	st := a.FleetStats()
	if st.Unopenable != 43 || st.Misses != 43 || st.FallbackHits+st.FallbackMisses != 0 {
		t.Errorf("stats %+v: want 43 unopenable misses and no fallback", st)
	}
	lines := a.log.Lines()
	if len(lines) != 43 {
		t.Fatalf("logged %d lines, want one per value (the daemon's logger rate-limits)", len(lines))
	}
	for _, l := range lines {
		if l.Level != "warn" || !strings.Contains(l.Text, "failed to open") || strings.Contains(l.Text, "session of") || strings.Contains(l.Text, a.keyPrefix) {
			t.Errorf("log line %q", l.Text)
		}
	}
	// The other cache is untouched.
	wantEntry(t, smtp, "z", now, []byte("smtp session of z"))
}

// Seal key rotation: written under [k1], read by a member with [k2, k1]
// in one round trip; with [k2] alone the old entries are gone.
func TestSealKeyRotation(t *testing.T) {
	srv := redistest.Single(t)
	addrs := []string{srv.Addr}
	old := newMember(t, conf{addrs: addrs, keys: [][32]byte{k1}})
	mid := newMember(t, conf{addrs: addrs, keys: [][32]byte{k2, k1}})
	done := newMember(t, conf{addrs: addrs, keys: [][32]byte{k2}})
	other := newMember(t, conf{addrs: addrs, keys: [][32]byte{k3}})
	now := time.Now()

	put(t, old, "a", now, []byte("a under k1"))
	put(t, old, "b", now, []byte("b under k1"))
	ops := mid.FleetStats().Backend.Ops
	wantEntry(t, mid, "a", now, []byte("a under k1"))
	wantMiss(t, mid, "nothing")
	if got := mid.FleetStats().Backend.Ops - ops; got != 2 {
		t.Errorf("2 lookups with two seal keys took %d Redis calls, want 2 (one pipeline each)", got)
	}
	wantMiss(t, done, "a")
	wantMiss(t, other, "a")

	// A newer entry under k2's name wins over the old one.
	put(t, mid, "b", now.Add(time.Second), []byte("b under k2"))
	wantEntry(t, mid, "b", now.Add(time.Second), []byte("b under k2"))
	wantEntry(t, done, "b", now.Add(time.Second), []byte("b under k2"))
	// A member not yet rotated still reads the old one, until...
	wantEntry(t, old, "b", now, []byte("b under k1"))
	// ...a delete by a rotated member removes both names.
	if ok, _ := mid.Delete(ctx, "b"); !ok {
		t.Error("Delete(b) found nothing")
	}
	wantMiss(t, old, "b")
	wantMiss(t, done, "b")

	for _, m := range []*member{old, mid, done, other} {
		m.wantRedisOnly(t)
		if st := m.FleetStats(); st.Unopenable != 0 {
			t.Errorf("another key's entry was tried and failed to open: %+v", st)
		}
	}
}

func TestRedisTTL(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		in   time.Duration
		want time.Duration
		ok   bool
	}{
		{-time.Second, 0, false},
		{0, 0, false},
		{time.Nanosecond, time.Millisecond, true},
		{400 * time.Microsecond, time.Millisecond, true},
		{time.Millisecond, time.Millisecond, true},
		{time.Millisecond + 1, 2 * time.Millisecond, true},
		{time.Hour, time.Hour, true},
		{time.Hour - time.Microsecond, time.Hour, true},
	} {
		got, ok := redisTTL(now.Add(c.in), now)
		if got != c.want || ok != c.ok {
			t.Errorf("redisTTL(now + %v) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// Redis expires a key at the entry's Expires; the cache's rule (written +
// timeout) still decides, exactly, whatever Redis still holds.
func TestExpiry(t *testing.T) {
	srv := redistest.Single(t)
	a := newMember(t, conf{addrs: []string{srv.Addr}})
	b := newMember(t, conf{addrs: []string{srv.Addr}})
	r := srv.Client(t)

	const ttl = time.Hour
	start := time.Now()
	var clock time.Time = start
	now := func() time.Time { return clock }
	ca := scache.New(scache.Config{Name: "smtpd", Timeout: ttl, Now: now}, a)
	cb := scache.New(scache.Config{Name: "smtpd", Timeout: ttl, Now: now}, b)
	if err := ca.Update(ctx, "id", []byte("s")); err != nil {
		t.Fatal(err)
	}
	settle(t, a)
	pttl, err := r.PTTL(ctx, a.writeKey("id")).Result()
	elapsed := time.Since(start)
	if err != nil || pttl > ttl || pttl < ttl-elapsed-2*time.Millisecond {
		t.Fatalf("PTTL = %v, %v; want within 2ms of %v", pttl, err, ttl-elapsed)
	}
	t.Logf("PTTL %v, Expires - now %v", pttl, ttl-elapsed)

	clock = start.Add(ttl) // written + timeout: still alive, as in Postfix
	if s, err := cb.Lookup(ctx, "id"); err != nil || string(s) != "s" {
		t.Fatalf("at written + timeout: %q, %v", s, err)
	}
	clock = start.Add(ttl + time.Nanosecond)
	if n, _ := r.Exists(ctx, a.writeKey("id")).Result(); n != 1 {
		t.Fatal("test bug: Redis no longer holds the key")
	}
	if _, err := cb.Lookup(ctx, "id"); !errors.Is(err, scache.ErrNotFound) {
		t.Fatalf("a nanosecond later: %v, want a miss", err)
	}
	// The cache deleted it on the way, for every member.
	if n, _ := r.Exists(ctx, a.writeKey("id")).Result(); n != 0 {
		t.Error("the expired entry is still in Redis")
	}
	if st, _ := cb.Stats(ctx); st.Expired != 1 {
		t.Errorf("Expired = %d, want 1", st.Expired)
	}

	// An entry that expires in a few milliseconds is gone from Redis by
	// itself.
	e := scache.Entry{Written: time.Now(), Expires: time.Now().Add(5 * time.Millisecond), Session: []byte("brief")}
	if err := a.Put(ctx, "brief", e); err != nil {
		t.Fatal(err)
	}
	settle(t, a)
	deadline := time.Now().Add(5 * time.Second)
	for r.Exists(ctx, a.writeKey("brief")).Val() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("Redis did not expire the key")
		}
		time.Sleep(time.Millisecond)
	}
	wantMiss(t, b, "brief")

	// An entry expired already is not written, and replaces the one
	// Redis had: an older version must not answer in its place.
	put(t, a, "old", time.Now(), []byte("v1"))
	e = scache.Entry{Written: time.Now(), Expires: time.Now().Add(-time.Second), Session: []byte("v2")}
	if err := a.Put(ctx, "old", e); err != nil {
		t.Fatal(err)
	}
	settle(t, a)
	if n, _ := r.Exists(ctx, a.writeKey("old")).Result(); n != 0 {
		t.Error("an expired entry replaced nothing in Redis")
	}
	wantMiss(t, b, "old")
	a.wantRedisOnly(t)
	b.wantRedisOnly(t)
}

// untilUp drives lookups, paced as traffic would be, until Redis answers
// one again.
func untilUp(t *testing.T, m *member, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		before := m.FleetStats()
		m.Get(ctx, "probe")
		if st := m.FleetStats(); st.Hits+st.Misses > before.Hits+before.Misses {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("Redis still failing after %v: %+v", limit, m.FleetStats())
		}
	}
	panic("unreachable")
}

// A paused (black-holed) Redis: every call returns by the deadline, the
// local cache answers for what this member wrote before and during the
// outage, the log says so once; when Redis is back it is authoritative
// again.
func TestOutage(t *testing.T) {
	l := watchLateness(t)
	srv := redistest.Single(t)
	c := conf{addrs: []string{srv.Addr}, timeout: timeout}
	a, b := newMember(t, c), newMember(t, c)
	// Set-up through patient members: only the outage is measured.
	pa := newMember(t, conf{addrs: []string{srv.Addr}})
	// Tracking on, so that a's own writes are proved in Redis (putShared).
	waitTracking(t, a)
	waitTracking(t, b)
	now := time.Now()
	for i := range 20 {
		putShared(t, a, fmt.Sprint("before-", i), now, []byte(fmt.Sprint("session before ", i)))
	}
	put(t, pa, "b-only", now, []byte("written by another member"))
	eventually(t, b, "before-0", "session before 0", 5*time.Second)
	// What the outage does, from here: a loaded machine may have made a
	// set-up call miss its 10ms.
	base := a.FleetStats()
	a.log.Reset()
	a.clientLog.Reset()
	// ... and the outage's first unshared update is reported at once
	// (Reset forgets the rate limits too).

	srv.Pause()
	t.Cleanup(srv.Resume) // resuming a running server does nothing
	var gets, puts latencies
	// sent marks the updates that went out before their deadline passed
	// (the breaker refuses the rest at once): a paused Redis runs those
	// when it wakes, so their outcome is unknown.
	var sent []bool
	tick := time.NewTicker(time.Millisecond)
	for i := range 200 {
		<-tick.C
		id := fmt.Sprint("during-", i)
		session := []byte(fmt.Sprint("session during ", i))
		var err error
		refused := a.FleetStats().Backend.Refused
		puts = append(puts, timed(func() {
			err = a.Put(ctx, id, scache.Entry{Written: now, Expires: now.Add(time.Hour), Session: session})
		}))
		if err != nil {
			t.Fatalf("Put during the outage: %v", err)
		}
		// Refused by the breaker means never sent; the time taken
		// says nothing on a loaded machine.
		sent = append(sent, a.FleetStats().Backend.Refused == refused)
		var e scache.Entry
		gets = append(gets, timed(func() { e, err = a.Get(ctx, id) }))
		if err != nil || !bytes.Equal(e.Session, session) {
			t.Fatalf("Get(%s) during the outage = %q, %v", id, e.Session, err)
		}
		before := fmt.Sprint("before-", i%20)
		gets = append(gets, timed(func() { e, err = a.Get(ctx, before) }))
		if err != nil || string(e.Session) != "session "+strings.ReplaceAll(before, "-", " ") {
			t.Fatalf("Get(%s) during the outage = %q, %v", before, e.Session, err)
		}
		gets = append(gets, timed(func() { _, err = a.Get(ctx, "b-only") }))
		if !errors.Is(err, scache.ErrNotFound) {
			t.Fatalf("Get(b-only) during the outage: %v, want a miss", err)
		}
	}
	tick.Stop()
	t.Logf("paused Redis, timeout %v: Get %v; Put %v", timeout, gets, puts)
	if gets.max() > timeout+l.slack() || puts.max() > timeout+l.slack() {
		t.Errorf("a call took longer than %v + %v: Get max %v, Put max %v", timeout, l.slack(), gets.max(), puts.max())
	}
	// A delete during the outage reaches the local cache.
	if ok, err := a.Delete(ctx, "before-19"); !ok || err != nil {
		t.Errorf("Delete during the outage = %v, %v", ok, err)
	}
	wantMiss(t, a, "before-19")

	st := a.FleetStats()
	t.Logf("a's stats after the outage: %+v", st)
	// An update still on its way to Redis is answered locally too (a
	// member reads its own writes), and so is a copy trusted a moment
	// before: local hits, not fallbacks.
	if st.FallbackHits+st.LocalHits-base.FallbackHits-base.LocalHits != 400 || st.Hits-base.Hits != st.LocalHits-base.LocalHits ||
		st.FallbackMisses-base.FallbackMisses != 201 ||
		st.UpdatesUnshared-base.UpdatesUnshared != 200 || st.DeletesUnshared-base.DeletesUnshared != 1 ||
		st.Backend.State == redisconn.StateUp || st.Backend.BreakerOpens-base.Backend.BreakerOpens != 1 {
		t.Errorf("stats %+v, before the outage %+v", st, base)
	}
	// One line per transition from the client; from the store, the
	// updates the fleet does not get, at most one line per 10 s.
	if n := len(a.log.Lines()); n == 0 || n != a.log.Count("warn", "not shared with the fleet") {
		t.Errorf("store log: %q; want reports of the unshared updates", a.log.Lines())
	}
	a.log.Reset()
	a.clientLog.Want(t, []string{"warn", "unavailable", "serving from the local cache"})

	// The request's own deadline bounds a call too, with a Redis timeout
	// far beyond it.
	slow := newMember(t, conf{addrs: []string{srv.Addr}, timeout: time.Second})
	put(t, slow, "x", now, []byte("kept locally"))
	rctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
	var e scache.Entry
	var err error
	d := timed(func() { e, err = slow.Get(rctx, "x") })
	cancel()
	if err != nil || string(e.Session) != "kept locally" || d > 5*time.Millisecond+l.slack() {
		t.Errorf("Get with a 5ms request deadline: %q, %v after %v", e.Session, err, d)
	}
	// A request out of time does not even ask Redis.
	rctx, cancel = context.WithCancel(ctx)
	cancel()
	ops := slow.FleetStats().Backend.Ops
	if e, err := slow.Get(rctx, "x"); err != nil || string(e.Session) != "kept locally" {
		t.Errorf("Get with a done context: %q, %v", e.Session, err)
	}
	if err := slow.Put(rctx, "y", scache.Entry{Written: now, Expires: now.Add(time.Hour)}); err != nil {
		t.Errorf("Put with a done context: %v", err)
	}
	if got := slow.FleetStats().Backend.Ops; got != ops {
		t.Errorf("calls with a done context reached the client: %d calls", got-ops)
	}

	srv.Resume()
	t.Logf("Redis answers again %v after Resume", untilUp(t, a, 10*time.Second))
	untilUp(t, b, 10*time.Second)
	a.clientLog.Want(t, []string{"warn", "unavailable"}, []string{"info", "available again"})

	// Authoritative again: a delete through b is seen by a, whose local
	// copy would have answered during the outage.
	if ok, _ := b.Delete(ctx, "before-0"); !ok {
		t.Error("Delete(before-0) through b found nothing")
	}
	if !a.localHas("before-0") {
		t.Fatal("test bug: a has no local copy of before-0")
	}
	wantAnswer(t, a, "before-0", now, nil)
	wantAnswer(t, a, "before-1", now, []byte("session before 1"))
	// The outage's updates were not replayed; a still reads its own.
	unsent := 0
	for i, s := range sent {
		id := fmt.Sprint("during-", i)
		if !s {
			wantAnswer(t, b, id, now, nil)
			unsent++
		}
		wantAnswer(t, a, id, now, []byte(fmt.Sprint("session during ", i)))
	}
	t.Logf("%d updates of the outage went out before their deadline passed", len(sent)-unsent)
	if unsent < 150 {
		t.Errorf("only %d of %d updates were refused at once", unsent, len(sent))
	}
	// New updates are shared again.
	putShared(t, a, "after", now, []byte("after the outage"))
	wantAnswer(t, b, "after", now, []byte("after the outage"))
}

// The local bounds hold while Redis is away.
func TestOutageBounds(t *testing.T) {
	addr := deadServer(t)
	lim := scache.Limits{MaxEntries: 10, MaxBytes: 1 << 20}
	m := newMember(t, conf{addrs: []string{addr}, timeout: timeout, lim: lim})
	base := time.Now()
	for i := range 30 {
		put(t, m, fmt.Sprint("id", i), base.Add(time.Duration(i)), []byte("s"))
	}
	if st, _ := m.Stats(ctx); st.Entries != 10 || st.Evictions != 20 || st.Bytes != 10*scache.Size("id10", []byte("s")) {
		t.Errorf("Stats = %+v, want 10 entries, 20 evictions", st)
	}
	for i := range 30 {
		if i < 20 {
			wantMiss(t, m, fmt.Sprint("id", i))
		} else {
			wantEntry(t, m, fmt.Sprint("id", i), base.Add(time.Duration(i)), []byte("s"))
		}
	}
	session := bytes.Repeat([]byte{'x'}, 1000)
	lim = scache.Limits{MaxEntries: 1000, MaxBytes: 5 * scache.Size("id0", session)}
	m = newMember(t, conf{addrs: []string{addr}, timeout: timeout, lim: lim})
	for i := range 8 {
		put(t, m, fmt.Sprint("id", i), base.Add(time.Duration(i)), session)
	}
	if st, _ := m.Stats(ctx); st.Entries != 5 || st.Bytes != lim.MaxBytes || st.Evictions != 3 {
		t.Errorf("Stats = %+v, want 5 entries of %d bytes, 3 evictions", st, lim.MaxBytes)
	}
	if st := m.FleetStats(); st.UpdatesUnshared != 8 || st.Hits+st.Misses != 0 {
		t.Errorf("FleetStats = %+v: Redis was not away", st)
	}
}

// An error reply (OOM at maxmemory) is not an outage to the breaker, but
// the fleet loses the updates: the store logs the start and the end.
func TestErrorReplies(t *testing.T) {
	srv := redistest.Single(t)
	m := newMember(t, conf{addrs: []string{srv.Addr}})
	other := newMember(t, conf{addrs: []string{srv.Addr}})
	r := srv.Client(t)
	now := time.Now()
	put(t, m, "before", now, []byte("s"))
	if err := r.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		put(t, m, fmt.Sprint("oom-", i), now, []byte("s"))
		wantEntry(t, m, "before", now, []byte("s")) // reads still work
	}
	st := m.FleetStats()
	if st.UpdatesUnshared != 5 || st.Backend.State != redisconn.StateUp || st.Hits != 5 {
		t.Errorf("stats %+v: want 5 unshared updates, Redis up", st)
	}
	wantMiss(t, other, "oom-0")
	m.log.Want(t, []string{"warn", "Redis smtpd session cache: Redis refuses updates: OOM", "kept in the local cache only"})
	if err := r.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	put(t, m, "after", now, []byte("s"))
	wantEntry(t, other, "after", now, []byte("s"))
	m.log.Want(t, []string{"warn", "OOM"}, []string{"info", "Redis smtpd session cache: Redis accepts updates again"})
	m.clientLog.Want(t)
}

// Redis Cluster: keys spread over the three masters, and lookups and
// deletes with two seal keys, whose names are in different slots.
func TestCluster(t *testing.T) {
	cl := redistest.Cluster(t)
	c := conf{addrs: cl.Addrs, cluster: true, keys: [][32]byte{k2, k1}}
	a, b := newMember(t, c), newMember(t, c)
	c.keys = [][32]byte{k1}
	old := newMember(t, c)
	now := time.Now()
	const n = 300
	perNode := map[string]int{}
	for i := range n {
		id := fmt.Sprint("smtp&[mx", i, ".example]:25")
		put(t, a, id, now, []byte(id+" session"))
		perNode[cl.NodeFor(a.writeKey(id)).Addr]++
		put(t, old, "old "+id, now, []byte(id+" old session"))
	}
	var dbsize int64
	for _, node := range cl.Nodes {
		k := node.Client(t).DBSize(ctx).Val()
		if k == 0 || int64(perNode[node.Addr]) == 0 {
			t.Errorf("node %s holds %d keys", node.Addr, k)
		}
		dbsize += k
	}
	if dbsize != 2*n {
		t.Errorf("%d keys in the cluster, want %d", dbsize, 2*n)
	}
	t.Logf("keys per node: %v", perNode)
	for i := range n {
		id := fmt.Sprint("smtp&[mx", i, ".example]:25")
		wantEntry(t, b, id, now, []byte(id+" session"))
		wantEntry(t, b, "old "+id, now, []byte(id+" old session"))
		if i%2 == 0 {
			for _, d := range []string{id, "old " + id} {
				if ok, err := b.Delete(ctx, d); !ok || err != nil {
					t.Fatalf("Delete(%s) = %v, %v", d, ok, err)
				}
			}
		}
	}
	for i := range n {
		id := fmt.Sprint("smtp&[mx", i, ".example]:25")
		if i%2 == 0 {
			wantMiss(t, a, id)
			wantMiss(t, old, "old "+id)
		} else {
			wantEntry(t, a, id, now, []byte(id+" session"))
		}
	}
	for _, m := range []*member{a, b, old} {
		m.wantRedisOnly(t)
	}
}
