package gotls

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCacheID(t *testing.T) {
	long := strings.Repeat("x", maxKeyLen+1)
	for _, tc := range []struct {
		key    string
		hashed bool
	}{
		{"mx.example.com", false},
		{"192.0.2.1:25", false},
		{"[2001:db8::1]:25", false},
		{strings.Repeat("x", maxKeyLen), false},
		{long, true},
		{"", true},
		{"a b", true},
		{"nul\x00", true},
		{"caf\u00e9", true},
		{"#abc", true},
	} {
		id := cacheID(tc.key)
		if !strings.HasPrefix(id, idPrefix) {
			t.Errorf("cacheID(%q) = %q, no prefix", tc.key, id)
		}
		hashed := strings.HasPrefix(id, idPrefix+"#") && len(id) == len(idPrefix)+1+64
		if hashed != tc.hashed || (!hashed && id != idPrefix+tc.key) {
			t.Errorf("cacheID(%q) = %q, want hashed=%v", tc.key, id, tc.hashed)
		}
		for i := 0; i < len(id); i++ {
			if id[i] <= 0x20 || id[i] >= 0x7f {
				t.Errorf("cacheID(%q) = %q has byte %#x", tc.key, id, id[i])
			}
		}
	}
	if cacheID(long) == cacheID(long+"y") {
		t.Error("two long keys share an id")
	}
}

func TestClientFormat(t *testing.T) {
	b := encodeClient(1700000000, []byte("ticket"), []byte("state"))
	stored, ticket, state, ok := decodeClient(b)
	if !ok || stored != 1700000000 || string(ticket) != "ticket" || string(state) != "state" {
		t.Fatalf("decode(encode) = %d, %q, %q, %v", stored, ticket, state, ok)
	}
	// Version 1 (no time) still decodes, with stored 0.
	stored, ticket, state, ok = decodeClient([]byte{formatV1, 0, 0, 0, 1, 't', 's', 's'})
	if !ok || stored != 0 || string(ticket) != "t" || string(state) != "ss" {
		t.Fatalf("decode(v1) = %d, %q, %q, %v", stored, ticket, state, ok)
	}
	for _, bad := range [][]byte{
		nil,
		{formatV1},
		{3, 0, 0, 0, 0},
		{formatV1, 0, 0, 0, 9, 'x'},
		{formatV1, 0xff, 0xff, 0xff, 0xff},
		{clientFormatV2, 0, 0, 0, 0, 0, 0, 0, 1},
		{clientFormatV2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},      // no time
		{clientFormatV2, 0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0},   // time < 0
		{clientFormatV2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 'x'}, // short ticket
	} {
		if _, _, _, ok := decodeClient(bad); ok {
			t.Errorf("decodeClient(%q) ok", bad)
		}
	}
}

func TestSameSessionButTime(t *testing.T) {
	a := bytes.Repeat([]byte{0xaa}, 100)
	with := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(a)) }
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"equal", bytes.Clone(a), true},
		{"one byte", with(func(b []byte) []byte { b[10] = 0; return b }), true},
		{"eight bytes", with(func(b []byte) []byte { clear(b[5:13]); return b }), true},
		{"nine bytes", with(func(b []byte) []byte { clear(b[5:14]); return b }), false},
		{"two places", with(func(b []byte) []byte { b[5], b[60] = 0, 0; return b }), false},
		{"first and last", with(func(b []byte) []byte { b[0], b[99] = 0, 0; return b }), false},
		{"longer", append(bytes.Clone(a), 0xaa), false},
	} {
		if got := sameSessionButTime(a, tc.b); got != tc.want {
			t.Errorf("%s: sameSessionButTime = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestClientCacheTLS12ResumptionStoresNothing: a TLS 1.2 resumption costs
// one call (the lookup) while the entry is fresh, though the server sends
// a new ticket every time; an entry older than clientRefreshAfter is
// stored again, and a full handshake's new session always is.
func TestClientCacheTLS12ResumptionStoresNothing(t *testing.T) {
	dm := startDaemon(t)
	c := getCert(t)
	d := dm.dial(t, time.Second, nil)
	addr := startServer(t, serverConfig(c.cert, tls.VersionTLS12))
	cache := NewClientSessionCache(d, "smtp").(*clientCache)
	now := time.Now()
	cache.now = func() time.Time { return now }
	ccfg := clientConfig(c.pool, tls.VersionTLS12, cache)
	entry := func() []byte {
		b, err := d.clients[0].Lookup(context.Background(), "smtp", cacheID(serverName))
		if err != nil {
			t.Fatalf("no entry in the daemon: %v", err)
		}
		return b
	}
	handshake := func(what string, resumed bool, wantCalls uint64) {
		t.Helper()
		before := d.Stats().Calls
		if cs := mustConnect(t, addr, ccfg); cs.DidResume != resumed {
			t.Fatalf("%s: resumed=%v, want %v", what, cs.DidResume, resumed)
		}
		if calls := d.Stats().Calls - before; calls != wantCalls {
			t.Errorf("%s made %d calls to the daemon, want %d", what, calls, wantCalls)
		}
	}
	handshake("the first handshake", false, 2) // a miss, then the Put
	first := entry()
	for i := range 3 {
		now = now.Add(clientRefreshAfter / 4)
		handshake(fmt.Sprint("resumption ", i), true, 1)
	}
	if !bytes.Equal(entry(), first) {
		t.Error("a resumption replaced the fresh entry")
	}

	now = now.Add(clientRefreshAfter)
	handshake("a resumption from an old entry", true, 2)
	refreshed := entry()
	if bytes.Equal(refreshed, first) {
		t.Error("the old entry was not replaced")
	}
	if stored, _, _, _ := decodeClient(refreshed); stored != now.Unix() {
		t.Errorf("refreshed entry stored at %d, want %d", stored, now.Unix())
	}

	// Another server, other ticket keys: the ticket fails, the full
	// handshake's session is stored however fresh the entry.
	addr = startServer(t, serverConfig(c.cert, tls.VersionTLS12))
	handshake("a full handshake after a refused ticket", false, 2)
	if bytes.Equal(entry(), refreshed) {
		t.Error("the new session was not stored")
	}
	handshake("a resumption at the new server", true, 1)

	// Concurrent resumptions with that server share its entry.
	before := d.Stats().Calls
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 4 {
				if cs, err := connect(addr, ccfg); err != nil || !cs.DidResume {
					t.Errorf("concurrent resumption: resumed=%v, %v", cs.DidResume, err)
				}
			}
		})
	}
	wg.Wait()
	if calls := d.Stats().Calls - before; calls != 16 {
		t.Errorf("16 concurrent resumptions made %d calls to the daemon, want 16", calls)
	}
}

// TestClientCacheResumes: a session made by one client process is resumed
// by another, which shares only the daemon with it, and the entry is in
// the daemon's cache under the adapter's id.
func TestClientCacheResumes(t *testing.T) {
	dm := startDaemon(t)
	c := getCert(t)
	certFile, _ := c.files(t)
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			addr := startServer(t, serverConfig(c.cert, v.v))
			d := dm.dial(t, time.Second, nil)
			cache := NewClientSessionCache(d, "smtp")

			// The daemon has nothing yet: a full handshake, whose
			// session goes to the daemon.
			if cs := mustConnect(t, addr, clientConfig(c.pool, v.v, cache)); cs.DidResume || cs.Version != v.v {
				t.Fatalf("first handshake: resumed=%v version=%#x", cs.DidResume, cs.Version)
			}
			b, err := d.clients[0].Lookup(context.Background(), "smtp", cacheID(serverName))
			if err != nil {
				t.Fatalf("the session is not in the daemon's cache: %v", err)
			}
			if _, _, sb, ok := decodeClient(b); !ok {
				t.Fatalf("cache entry of %d bytes does not decode", len(b))
			} else if _, err := tls.ParseSessionState(sb); err != nil {
				t.Fatalf("cache entry's state: %v", err)
			}

			// Another process, another pool, same daemon: resumes.
			out, err := helperCmd(t, "client", "GOTLS_SOCK="+dm.env.Sock, "GOTLS_ADDR="+addr,
				"GOTLS_CERT="+certFile, "GOTLS_CACHE=smtp", fmt.Sprint("GOTLS_MAXVER=", v.v)).Output()
			if err != nil {
				t.Fatalf("client helper: %v", err)
			}
			if want := fmt.Sprintf("resumed=true version=%d\n", v.v); string(out) != want {
				t.Fatalf("client helper printed %q, want %q", out, want)
			}

			// A new cache instance in this process resumes too.
			cache2 := NewClientSessionCache(dm.dial(t, time.Second, nil), "smtp")
			if cs := mustConnect(t, addr, clientConfig(c.pool, v.v, cache2)); !cs.DidResume {
				t.Fatal("a second cache instance did not resume")
			}

			// Put(nil) deletes.
			cache.Put(serverName, nil)
			if _, ok := cache2.Get(serverName); ok {
				t.Fatal("Get after Put(nil) hits")
			}
			if st := d.Stats(); st.Failures != 0 {
				t.Errorf("stats %+v, want no failures", st)
			}
		})
	}
}

// TestClientCacheLongKey: a key too long or odd for a cache_id is hashed
// and still works, through the daemon.
func TestClientCacheLongKey(t *testing.T) {
	dm := startDaemon(t)
	c := getCert(t)
	addr := startServer(t, serverConfig(c.cert, tls.VersionTLS13))
	d := dm.dial(t, time.Second, nil)
	cache := NewClientSessionCache(d, "smtp")
	mustConnect(t, addr, clientConfig(c.pool, tls.VersionTLS13, cache))
	cs, ok := cache.Get(serverName)
	if !ok {
		t.Fatal("no session")
	}
	key := strings.Repeat("k\x00\xff ", 1000)
	cache.Put(key, cs)
	if _, ok := cache.Get(key); !ok {
		t.Fatal("a long key misses")
	}
	if _, err := d.clients[0].Lookup(context.Background(), "smtp", cacheID(key)); err != nil {
		t.Fatalf("hashed id not in the daemon: %v", err)
	}
	if st := d.Stats(); st.Failures != 0 {
		t.Errorf("stats %+v, want no failures", st)
	}
}

// TestClientCacheGarbage: entries that do not decode or parse are misses
// and the handshake is a full one.
func TestClientCacheGarbage(t *testing.T) {
	dm := startDaemon(t)
	c := getCert(t)
	addr := startServer(t, serverConfig(c.cert, tls.VersionTLS13))
	d := dm.dial(t, time.Second, nil)
	cache := NewClientSessionCache(d, "smtp")
	for _, garbage := range [][]byte{
		[]byte("garbage"),
		{formatV1},
		{9, 0, 0, 0, 1, 'x', 'y'},
		encodeClient(1, []byte("ticket"), []byte("not a session state")),
		encodeClient(1, nil, nil),
	} {
		if err := d.clients[0].Update(context.Background(), "smtp", cacheID(serverName), garbage); err != nil {
			t.Fatal(err)
		}
		if _, ok := cache.Get(serverName); ok {
			t.Errorf("Get hits on %q", garbage)
		}
		if cs := mustConnect(t, addr, clientConfig(c.pool, tls.VersionTLS13, cache)); cs.DidResume {
			t.Errorf("resumed on %q", garbage)
		}
		// That handshake replaced the garbage with a real session.
		if cs := mustConnect(t, addr, clientConfig(c.pool, tls.VersionTLS13, cache)); !cs.DidResume {
			t.Errorf("no resumption after garbage %q was replaced", garbage)
		}
	}
}
