package server

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/scache/memstore"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
	"github.com/gotlsmgr/tlsmgr/internal/watchdog"
)

// wedgedStore's Get never returns until the test ends, whatever its
// context says: a store stuck in the kernel on a dead disk or network
// file system.
type wedgedStore struct {
	scache.Store
	entered chan struct{} // receives a value as each Get gets stuck
	release chan struct{} // closed at the end of the test
}

func (s *wedgedStore) Get(context.Context, string) (scache.Entry, error) {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.release
	return scache.Entry{}, scache.ErrNotFound
}

// peerOf is how the server names conn n of this test process on path.
func peerOf(n int, path string) string {
	return fmt.Sprintf("conn %d (pid %d, uid %d) on %s", n, os.Getpid(), os.Getuid(), path)
}

// TestWatchdogNamesWedgedRequest: a request wedged in its store makes the
// watchdog fire within its timeout plus a check interval, naming the
// request, its cache and its connection; clients that are idle, slow to
// send a request, or served in time, do not.
func TestWatchdogNamesWedgedRequest(t *testing.T) {
	// Long enough that a request served in time never looks wedged on a
	// loaded machine.
	const timeout = time.Second
	late := testenv.WatchLateness(t)
	fired := make(chan *watchdog.Error, 1)
	wd := watchdog.New(timeout, func(e *watchdog.Error) { fired <- e })
	t.Cleanup(wd.Stop)
	ws := &wedgedStore{Store: memstore.New(scache.Limits{MaxEntries: 10, MaxBytes: 1 << 20}),
		entered: make(chan struct{}, 1), release: make(chan struct{})}
	f := newFixture(t, func(cfg *Config, st map[string]scache.Store) {
		cfg.Watchdog = wd
		st["smtpd"] = ws
	})
	t.Cleanup(func() { close(ws.release) }) // before the fixture's Shutdown

	f.dial(t) // conn 1: idle throughout
	slow := f.dial(t)
	// conn 2 begins a request and takes its time over the rest, well
	// within RequestTimeout: waiting for a client is not timed.
	if _, err := slow.nc.Write([]byte(wire("request", "lookup")[:12])); err != nil {
		t.Fatal(err)
	}
	busy := f.dial(t) // conn 3: served in time, again and again
	for end := time.Now().Add(2 * timeout); time.Now().Before(end); {
		busy.send("request", "update", "cache_type", "smtp", "cache_id", "x", "session", b64("s")).expect(ok)
		busy.send("request", "lookup", "cache_type", "smtp", "cache_id", "x").expect(ok + " session=" + b64("s"))
	}
	select {
	case e := <-fired:
		t.Fatalf("fired with nothing wedged: %v", e)
	default:
	}

	wedged := f.dial(t) // conn 4
	start := time.Now()
	wedged.send("request", "lookup", "cache_type", "smtpd", "cache_id", "a")
	<-ws.entered
	var e *watchdog.Error
	select {
	case e = <-fired:
	case <-time.After(timeout + 5*time.Second):
		t.Fatal("the watchdog did not fire")
	}
	took := time.Since(start)
	t.Logf("fired %v after the request, timeout %v: %v", took, timeout, e)
	want := "lookup request for the smtpd cache from " + peerOf(4, f.path)
	if e.What != want {
		t.Errorf("watchdog names %q\nwant            %q", e.What, want)
	}
	// A check every timeout/20; the rest is for a loaded machine and the
	// race detector, plus the worst wake-up seen in this test.
	if bound := timeout + timeout/20 + 150*time.Millisecond + late.Late(); took < timeout || took > bound {
		t.Errorf("fired %v after the request, timeout %v, bound %v", took, timeout, bound)
	}
	if !strings.HasPrefix(e.Error(), "watchdog timeout: "+want+" still not done after") {
		t.Errorf("error %q", e.Error())
	}
}

// TestConnectionIDsInLog: every line the server logs about a client names
// its connection, with the client's pid and uid, and no other; two
// clients at once each find only their own lines under their id.
func TestConnectionIDsInLog(t *testing.T) {
	logCaches = true
	defer func() { logCaches = false }()
	lim := attr.Limits{MaxValue: 2048, MaxList: 8192}
	f := newFixture(t, func(cfg *Config, _ map[string]scache.Store) { cfg.Limits = lim })
	clients := map[string]*raw{"a": f.dial(t), "b": f.dial(t)} // conns 1 and 2
	peers := map[string]string{"a": peerOf(1, f.path), "b": peerOf(2, f.path)}
	var wg sync.WaitGroup
	for name, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				id := fmt.Sprintf("%s-%d", name, i)
				val := b64("session of " + id)
				c.send("request", "update", "cache_type", "smtpd", "cache_id", id, "session", val).expect(ok)
				c.send("request", "lookup", "cache_type", "smtpd", "cache_id", id).expect(ok + " session=" + val)
				c.send("request", "delete", "cache_type", "smtpd", "cache_id", id).expect(ok)
				c.send("request", "lookup", "cache_type", "bogus-"+name, "cache_id", id).expect(fail + " session=")
			}
			c.send("request", "frobnicate-"+name).expect(fail)
			c.send("request", "update", "cache_type", "smtpd", "cache_id", name+"-big", "session", strings.Repeat("A", 4096)).expect(fail)
			c.send("request", "lmtp-"+name+"-seed", "size", "8").expect(fail)
			c.nc.Close()
		}()
	}
	wg.Wait()
	waitUntil(t, "both connections are closed", func() bool { return f.srv.serving() == 0 })

	// Which client a line is about, from what the client sent.
	marks := map[string][]string{
		"a": {"id=a-", "entry a-", `"bogus-a"`, `"frobnicate-a"`, `"lmtp-a-seed"`},
		"b": {"id=b-", "entry b-", `"bogus-b"`, `"frobnicate-b"`, `"lmtp-b-seed"`},
	}
	counts := map[string]int{}
	for _, line := range strings.Split(f.log.String(), "\n") {
		var who []string
		for name, peer := range peers {
			if strings.Contains(line, peer) {
				who = append(who, name)
			}
		}
		about := ""
		for name, ms := range marks {
			for _, m := range ms {
				if strings.Contains(line, m) {
					about = name
				}
			}
		}
		switch {
		case len(who) == 0 && about == "" && strings.HasPrefix(line, "open "):
			// The caches' own, at start.
		case len(who) != 1:
			t.Errorf("line names %d of the connections: %s", len(who), line)
		case about != "" && who[0] != about:
			t.Errorf("line about client %s names %s's connection: %s", about, who[0], line)
		default:
			counts[who[0]]++
		}
	}
	for name, peer := range peers {
		size := len("session of " + name + "-7")
		for _, want := range []string{
			"connect from " + peer,
			"lookup smtpd session id=" + name + "-7 from " + peer,
			fmt.Sprintf("read smtpd TLS cache entry %s-7: time=1700000000 [data %d bytes] from %s", name, size, peer),
			fmt.Sprintf("put smtpd session id=%s-7 [data %d bytes] from %s", name, size, peer),
			"delete smtpd session id=" + name + "-7 from " + peer,
			`bad "lookup" request from ` + peer + `: bogus cache type "bogus-` + name + `"`,
			`unknown request "frobnicate-` + name + `" from ` + peer,
			"request from " + peer + " exceeds the size limits",
			"disconnect from " + peer,
		} {
			if !f.log.Has(want) {
				t.Errorf("log lacks %q", want)
			}
		}
	}
	t.Logf("lines per connection: %v", counts)
	if t.Failed() {
		t.Logf("log:\n%s", f.log.String())
	}
}

// TestConnectionIDsOfEvictionAndTimeout: the eviction names the
// connection closed to make room, the idle timeout the one that waited.
func TestConnectionIDsOfEvictionAndTimeout(t *testing.T) {
	f := newFixture(t, func(cfg *Config, _ map[string]scache.Store) {
		cfg.MaxClients = 1
		cfg.IPCTimeout = 300 * time.Millisecond
	})
	first := f.dial(t)
	// Only an idle connection is evicted: wait until the first is.
	f.waitTable(t, 1, 0)
	f.dial(t)
	first.expectEOF()
	f.log.WaitFor(t, "too many clients (limit 1): closing the connection from "+peerOf(1, f.path)+" idle for")
	f.log.WaitFor(t, "timeout while waiting for data from "+peerOf(2, f.path))
}

// fixtureWatchdog, if set, watches the requests of every fixture's server:
// BenchmarkWatchdog sets it.
var fixtureWatchdog *watchdog.Watchdog

// BenchmarkWatchdog runs BenchmarkLookup and BenchmarkMixParallel with a
// watchdog at daemon_timeout = 1s, the smallest main.cf allows, so that it
// scans the connections most often (every 50ms): compare with the two
// benchmarks without one.
func BenchmarkWatchdog(b *testing.B) {
	for _, bm := range []struct {
		name string
		fn   func(*testing.B)
	}{{"Lookup", BenchmarkLookup}, {"MixParallel", BenchmarkMixParallel}} {
		b.Run(bm.name, func(b *testing.B) {
			fixtureWatchdog = watchdog.New(time.Second, func(e *watchdog.Error) { panic(e) })
			defer func() { fixtureWatchdog.Stop(); fixtureWatchdog = nil }()
			bm.fn(b)
		})
	}
}

// BenchmarkRequestTiming is what the watchdog adds to every request: the
// stores at its arrival, dispatch, choice of cache and reply (c.now is
// read for every request anyway).
func BenchmarkRequestTiming(b *testing.B) {
	s := New(Config{Caches: []CacheType{{Name: "smtpd"}}})
	c := &conn{srv: s, now: time.Now()}
	for b.Loop() {
		c.arrived()
		c.dispatched("lookup")
		c.cacheChosen(0)
		c.replying()
	}
}

// BenchmarkWatchdogScan is one check of 1000 connections, one of them
// answering a request: what the watchdog's goroutine does every
// daemon_timeout/20 (at most every second).
func BenchmarkWatchdogScan(b *testing.B) {
	s := New(Config{Caches: []CacheType{{Name: "smtpd"}}})
	for i := range 1000 {
		c := &conn{srv: s, peer: fmt.Sprint("conn ", i)}
		if i == 500 {
			c.now = time.Now()
			c.arrived()
		}
		s.conns[c] = struct{}{}
	}
	for b.Loop() {
		if started, _ := s.oldestRequest(); started.IsZero() {
			b.Fatal("no request found")
		}
	}
}

// TestWatchdogNamesOldestRequest: of several wedged requests, the
// watchdog names the one wedged longest, whose time ran out first.
func TestWatchdogNamesOldestRequest(t *testing.T) {
	const timeout = 400 * time.Millisecond
	fired := make(chan *watchdog.Error, 1)
	wd := watchdog.New(timeout, func(e *watchdog.Error) {
		select {
		case fired <- e:
		default:
		}
	})
	t.Cleanup(wd.Stop)
	lim := scache.Limits{MaxEntries: 10, MaxBytes: 1 << 20}
	ws := &wedgedStore{Store: memstore.New(lim), entered: make(chan struct{}, 3), release: make(chan struct{})}
	ws2 := &wedgedStore{Store: memstore.New(lim), entered: make(chan struct{}, 3), release: ws.release}
	f := newFixture(t, func(cfg *Config, st map[string]scache.Store) {
		cfg.Watchdog = wd
		st["smtpd"], st["smtp"] = ws, ws2
	})
	t.Cleanup(func() { close(ws.release) })
	first := f.dial(t)  // conn 1: wedged first, on the smtp cache
	second := f.dial(t) // conn 2, on smtpd
	third := f.dial(t)  // conn 3, on smtp again
	first.send("request", "lookup", "cache_type", "smtp", "cache_id", "a")
	<-ws2.entered
	time.Sleep(timeout / 4)
	second.send("request", "lookup", "cache_type", "smtpd", "cache_id", "b")
	<-ws.entered
	time.Sleep(timeout / 4)
	third.send("request", "lookup", "cache_type", "smtp", "cache_id", "c")
	<-ws2.entered
	select {
	case e := <-fired:
		if want := "lookup request for the smtp cache from " + peerOf(1, f.path); e.What != want {
			t.Errorf("watchdog names %q\nwant            %q", e.What, want)
		}
	case <-time.After(timeout + 5*time.Second):
		t.Fatal("the watchdog did not fire")
	}
}
