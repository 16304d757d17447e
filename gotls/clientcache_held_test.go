package gotls

import (
	"bytes"
	"context"
	"crypto/tls"
	"testing"
	"time"
)

// putSpy passes every call on to the cache and keeps the last session
// stored, as the handshake handed it over.
type putSpy struct {
	tls.ClientSessionCache
	last *tls.ClientSessionState
}

func (p *putSpy) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		p.last = cs
	}
	p.ClientSessionCache.Put(key, cs)
}

// heldFixture is a client cache with a fixed clock whose daemon holds the
// session of one TLS 1.2 handshake with a server, and that session.
type heldFixture struct {
	d     *Daemon
	cache *clientCache
	cs    *tls.ClientSessionState
	now   time.Time // the cache's clock
}

func newHeldFixture(t *testing.T) *heldFixture {
	t.Helper()
	dm := startDaemon(t)
	c := getCert(t)
	d := dm.dial(t, 5*time.Second, nil)
	addr := startServer(t, serverConfig(c.cert, tls.VersionTLS12))
	f := &heldFixture{d: d, cache: NewClientSessionCache(d, "smtp").(*clientCache), now: time.Now()}
	f.cache.now = func() time.Time { return f.now }
	spy := &putSpy{ClientSessionCache: f.cache}
	if cs := mustConnect(t, addr, clientConfig(c.pool, tls.VersionTLS12, spy)); cs.DidResume {
		t.Fatal("the first handshake resumed")
	}
	if spy.last == nil {
		t.Fatal("the handshake stored no session")
	}
	f.cs = spy.last
	if f.entry() == nil {
		t.Fatal("the session is not in the daemon")
	}
	return f
}

// entry is the daemon's entry for the server, nil if none.
func (f *heldFixture) entry() []byte {
	b, err := f.d.clients[0].Lookup(context.Background(), "smtp", cacheID(serverName))
	if err != nil {
		return nil
	}
	return b
}

// stateBytes serializes the session state of cs.
func stateBytes(t *testing.T, cs *tls.ClientSessionState) []byte {
	t.Helper()
	_, state, err := cs.ResumptionState()
	if err != nil || state == nil {
		t.Fatalf("ResumptionState: %v, %v", state, err)
	}
	b, err := state.Bytes()
	if err != nil {
		t.Fatalf("state.Bytes: %v", err)
	}
	return b
}

// TestClientCacheMissForgetsHeldSession: once the daemon has lost an entry
// (deleted by another process, expired, a restarted daemon), or holds
// something else under its id, a lookup that misses drops what the cache
// knew of it, so that the same session handed to Put a moment later (as a
// TLS 1.2 resumption that began before the loss re-issues it) is stored
// again rather than skipped as "the entry the handshake resumed from".
func TestClientCacheMissForgetsHeldSession(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(t *testing.T, f *heldFixture)
	}{
		{"deleted", func(t *testing.T, f *heldFixture) {
			if err := f.d.clients[0].Delete(context.Background(), "smtp", cacheID(serverName)); err != nil {
				t.Fatal(err)
			}
		}},
		{"replaced by garbage", func(t *testing.T, f *heldFixture) {
			if err := f.d.clients[0].Update(context.Background(), "smtp", cacheID(serverName), []byte("garbage")); err != nil {
				t.Fatal(err)
			}
		}},
		// Well framed, but a state this Go cannot parse (another
		// version's, say).
		{"replaced by an unparseable state", func(t *testing.T, f *heldFixture) {
			b := encodeClient(time.Now().Unix(), []byte("ticket"), []byte("not a session state"))
			if err := f.d.clients[0].Update(context.Background(), "smtp", cacheID(serverName), b); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newHeldFixture(t)
			// A resumption's lookup: the cache now holds the entry.
			cs, ok := f.cache.Get(serverName)
			if !ok {
				t.Fatal("Get misses the stored session")
			}
			tc.lose(t, f)
			if _, ok := f.cache.Get(serverName); ok {
				t.Fatal("Get hits after the entry was lost")
			}
			f.cache.Put(serverName, cs)
			if _, _, sb, ok := decodeClient(f.entry()); !ok || !bytes.Equal(sb, stateBytes(t, cs)) {
				t.Fatal("Put after a miss did not store the session: the cache kept what it held before the miss")
			}
		})
	}
}

// TestClientCacheHeldIsItsOwnCopy: what the cache keeps of a session to
// recognise a resumption's re-issued one is a copy of its own, never a
// buffer that is cleared after use or that a session handed out aliases.
// A session stored a moment ago and handed to Put again costs no call; a
// session handed out by Get keeps its secrets when the cache later drops
// or replaces what it held.
func TestClientCacheHeldIsItsOwnCopy(t *testing.T) {
	t.Run("Put", func(t *testing.T) {
		f := newHeldFixture(t)
		stored := f.entry()
		before := f.d.Stats().Calls
		f.cache.Put(serverName, f.cs) // the same session, just stored
		if calls := f.d.Stats().Calls - before; calls != 0 {
			t.Errorf("putting again the session just stored made %d calls to the daemon, want 0", calls)
		}
		if !bytes.Equal(f.entry(), stored) {
			t.Error("putting again the session just stored replaced its entry")
		}
	})
	t.Run("Get", func(t *testing.T) {
		f := newHeldFixture(t)
		cs1, ok := f.cache.Get(serverName)
		if !ok {
			t.Fatal("Get misses the stored session")
		}
		want := stateBytes(t, cs1)
		// Another lookup replaces what the cache holds for the server.
		cs2, ok := f.cache.Get(serverName)
		if !ok {
			t.Fatal("the second Get misses")
		}
		if !bytes.Equal(stateBytes(t, cs1), want) {
			t.Fatal("a later Get changed a session handed out before")
		}
		// Put(nil) drops what the cache holds.
		f.cache.Put(serverName, nil)
		if !bytes.Equal(stateBytes(t, cs2), want) {
			t.Fatal("Put(nil) changed a session handed out before")
		}
		if !bytes.Equal(stateBytes(t, f.cs), want) {
			t.Fatal("the session the handshake stored changed")
		}
	})
}
