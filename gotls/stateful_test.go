package gotls

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStatefulAcrossProcesses: two server processes, each with its own
// ticket keys (Go's random ones), resume each other's sessions through
// the daemon; the client only ever holds a 32-byte identity, which is
// the daemon's cache_id for the state.
func TestStatefulAcrossProcesses(t *testing.T) {
	dm := startDaemon(t)
	c := getCert(t)
	certFile, keyFile := c.files(t)
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			env := []string{"GOTLS_SOCK=" + dm.env.Sock, "GOTLS_CERT=" + certFile, "GOTLS_KEY=" + keyFile,
				"GOTLS_CACHE=smtpd", fmt.Sprint("GOTLS_MAXVER=", v.v)}
			a, b := helperServer(t, env...), helperServer(t, env...)
			cache := newRecordingCache()
			cfg := clientConfig(c.pool, v.v, cache)
			if cs := mustConnect(t, a, cfg); cs.DidResume || cs.Version != v.v {
				t.Fatalf("first handshake: resumed=%v version=%#x", cs.DidResume, cs.Version)
			}
			checkIdentity(t, dm, cache.last(t))
			for i, addr := range []string{b, a, b} {
				if cs := mustConnect(t, addr, cfg); !cs.DidResume {
					t.Fatalf("handshake %d (server %s) did not resume", i+2, addr)
				}
				checkIdentity(t, dm, cache.last(t))
			}
		})
	}
}

// checkIdentity wants a 32-byte identity with the state under it in the
// daemon's smtpd cache.
func checkIdentity(t *testing.T, dm *daemon, identity []byte) {
	t.Helper()
	if len(identity) != IdentityLen {
		t.Fatalf("the client got a ticket of %d bytes, want a %d-byte identity", len(identity), IdentityLen)
	}
	d := dm.dial(t, time.Second, nil)
	b, err := d.clients[0].Lookup(context.Background(), "smtpd", idPrefix+hex.EncodeToString(identity))
	if err != nil {
		t.Fatalf("identity %x not in the daemon: %v", identity, err)
	}
	state, ok := boundState(b, identity)
	if !ok || b[0] != serverFormatV2 || !bytes.Equal(b[1:1+IdentityLen], identity) {
		t.Fatalf("entry does not start with the format byte and its identity")
	}
	if _, err := tls.ParseSessionState(state); err != nil {
		t.Fatal(err)
	}
}

// TestStatefulEntryOfAnotherIdentity: a store that answers with another
// identity's entry (a valid state of another session) gives a full
// handshake, not a failed one.
func TestStatefulEntryOfAnotherIdentity(t *testing.T) {
	dm := startDaemon(t)
	c := getCert(t)
	d := dm.dial(t, time.Second, nil)
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			scfg := serverConfig(c.cert, v.v)
			SetStatefulSessions(scfg, d, "smtpd")
			addr := startServer(t, scfg)
			cacheA, cacheB := newRecordingCache(), newRecordingCache()
			cfgA, cfgB := clientConfig(c.pool, v.v, cacheA), clientConfig(c.pool, v.v, cacheB)
			mustConnect(t, addr, cfgA)
			mustConnect(t, addr, cfgB)
			idA, idB := idPrefix+hex.EncodeToString(cacheA.last(t)), idPrefix+hex.EncodeToString(cacheB.last(t))
			ctx := context.Background()
			entryB, err := d.clients[0].Lookup(ctx, "smtpd", idB)
			if err != nil {
				t.Fatal(err)
			}
			// A's identity now finds B's session, whole and valid.
			if err := d.clients[0].Update(ctx, "smtpd", idA, entryB); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 5; i++ {
				cs, err := connect(addr, cfgA)
				if err != nil {
					t.Fatalf("handshake %d failed instead of falling back to a full one: %v", i, err)
				}
				if i == 0 && cs.DidResume {
					t.Fatal("resumed with another identity's session")
				}
			}
			// B still resumes.
			if cs := mustConnect(t, addr, cfgB); !cs.DidResume {
				t.Error("B no longer resumes")
			}
		})
	}
}

// TestStatefulConfigs: two servers in one process, with different ticket
// keys, resume each other's sessions only because of the daemon; without
// SetStatefulSessions they do not.
func TestStatefulConfigs(t *testing.T) {
	dm := startDaemon(t)
	c := getCert(t)
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			mk := func(stateful bool, key byte) string {
				cfg := serverConfig(c.cert, v.v)
				cfg.SetSessionTicketKeys([][32]byte{{key}})
				if stateful {
					SetStatefulSessions(cfg, dm.dial(t, time.Second, nil), "smtpd")
				}
				return startServer(t, cfg)
			}
			// Control: Go's own tickets under different keys.
			p, q := mk(false, 1), mk(false, 2)
			cfg := clientConfig(c.pool, v.v, tls.NewLRUClientSessionCache(4))
			mustConnect(t, p, cfg)
			if cs := mustConnect(t, q, cfg); cs.DidResume {
				t.Fatal("control: resumed across ticket keys without the daemon")
			}
			a, b := mk(true, 3), mk(true, 4)
			cfg = clientConfig(c.pool, v.v, tls.NewLRUClientSessionCache(4))
			mustConnect(t, a, cfg)
			if cs := mustConnect(t, b, cfg); !cs.DidResume {
				t.Fatal("did not resume through the daemon")
			}
		})
	}
}

// TestStatefulGarbage: an entry under a client's identity that does not
// parse, and an identity the daemon does not know, are misses: the
// handshake is a full one.
func TestStatefulGarbage(t *testing.T) {
	dm := startDaemon(t)
	c := getCert(t)
	d := dm.dial(t, time.Second, nil)
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			scfg := serverConfig(c.cert, v.v)
			SetStatefulSessions(scfg, d, "smtpd")
			addr := startServer(t, scfg)
			cache := newRecordingCache()
			cfg := clientConfig(c.pool, v.v, cache)
			for _, garbage := range [][]byte{[]byte("garbage"), {formatV1}, {formatV1, 1, 2, 3}, {serverFormatV2}, {7}} {
				mustConnect(t, addr, cfg)
				id := idPrefix + hex.EncodeToString(cache.last(t))
				if err := d.clients[0].Update(context.Background(), "smtpd", id, garbage); err != nil {
					t.Fatal(err)
				}
				if cs := mustConnect(t, addr, cfg); cs.DidResume {
					t.Fatalf("resumed on garbage %q", garbage)
				}
			}
			// An identity that was never stored.
			mustConnect(t, addr, cfg)
			if err := d.clients[0].Delete(context.Background(), "smtpd", idPrefix+hex.EncodeToString(cache.last(t))); err != nil {
				t.Fatal(err)
			}
			if cs := mustConnect(t, addr, cfg); cs.DidResume {
				t.Fatal("resumed on an unknown identity")
			}
			if cs := mustConnect(t, addr, cfg); !cs.DidResume {
				t.Fatal("no resumption once the entry is good again")
			}
		})
	}
	if st := d.Stats(); st.Failures != 0 {
		t.Errorf("stats %+v, want no failures", st)
	}
}

// TestDaemonGone: with the daemon killed, or stopped (SIGSTOP: calls run
// out of time), both adapters let every handshake complete, fully,
// within the deadline; each pool logs the outage once, and the return
// once the daemon answers again, when resumption works again.
func TestDaemonGone(t *testing.T) {
	for _, how := range []string{"killed", "stopped"} {
		t.Run(how, func(t *testing.T) {
			dm := startDaemon(t)
			c := getCert(t)
			// Every call while the daemon is up must fit in it, on a
			// loaded machine too, or the logs' counts are off.
			const timeout = 500 * time.Millisecond
			var slog, clog logs
			sd, cd := dm.dial(t, timeout, &slog), dm.dial(t, timeout, &clog)
			sd.retry, cd.retry = 300*time.Millisecond, 300*time.Millisecond
			for _, v := range versions {
				scfg := serverConfig(c.cert, v.v)
				SetStatefulSessions(scfg, sd, "smtpd")
				addr := startServer(t, scfg)
				ccfg := clientConfig(c.pool, v.v, NewClientSessionCache(cd, "smtp"))
				ccfg.ServerName = serverName
				mustConnect(t, addr, ccfg)
				if cs := mustConnect(t, addr, ccfg); !cs.DidResume {
					t.Fatalf("%s: no resumption with the daemon up", v.name)
				}
				// The stateful server alone, with Go's client cache.
				gcfg := clientConfig(c.pool, v.v, tls.NewLRUClientSessionCache(4))
				mustConnect(t, addr, gcfg)

				switch how {
				case "killed":
					dm.proc.Kill()
				case "stopped":
					dm.proc.Signal(t, syscall.SIGSTOP)
				}
				for i := range 4 {
					for _, cfg := range []*tls.Config{ccfg, gcfg} {
						start := time.Now()
						cs := mustConnect(t, addr, cfg)
						// At most three calls (Get, Unwrap or Wrap, Put), each bounded.
						if el := time.Since(start); el > 3*timeout+2*time.Second {
							t.Errorf("%s: handshake %d took %v", v.name, i, el)
						}
						if cs.DidResume {
							t.Errorf("%s: handshake %d resumed with the daemon %s", v.name, i, how)
						}
					}
				}
				for name, l := range map[string]*logs{"server": &slog, "client": &clog} {
					lines := texts(l)
					if len(lines) != 1 || !strings.Contains(lines[0], "not answering") {
						t.Errorf("%s %s log: %q, want one 'not answering' line", v.name, name, lines)
					}
				}
				if sd.Stats().Failures == 0 || cd.Stats().Failures == 0 {
					t.Errorf("failures not counted: %+v %+v", sd.Stats(), cd.Stats())
				}

				// Back again.
				switch how {
				case "killed":
					dm.proc = dm.env.Start(t, tlsmgrBin)
				case "stopped":
					dm.proc.Signal(t, syscall.SIGCONT)
				}
				time.Sleep(sd.retry + 50*time.Millisecond) // the next call asks the daemon
				mustConnect(t, addr, ccfg)
				if cs := mustConnect(t, addr, ccfg); !cs.DidResume {
					t.Errorf("%s: no resumption once the daemon is back", v.name)
				}
				for name, l := range map[string]*logs{"server": &slog, "client": &clog} {
					lines := texts(l)
					if len(lines) != 2 || !strings.Contains(lines[1], "answering again") {
						t.Errorf("%s %s log: %q, want 'answering again' second", v.name, name, lines)
					}
				}
				slog.Reset()
				clog.Reset()
			}
		})
	}
}

// TestStatefulTLS12ResumptionStoresNothing: a TLS 1.2 server re-issues
// the session it resumed; the adapter hands back the same identity
// instead of storing the state again, so a resumption costs one call to
// the daemon (the lookup), and the identity keeps resuming.
func TestStatefulTLS12ResumptionStoresNothing(t *testing.T) {
	dm := startDaemon(t)
	c := getCert(t)
	d := dm.dial(t, time.Second, nil)
	scfg := serverConfig(c.cert, tls.VersionTLS12)
	SetStatefulSessions(scfg, d, "smtpd")
	addr := startServer(t, scfg)
	cache := tls.NewLRUClientSessionCache(4)
	ccfg := clientConfig(c.pool, tls.VersionTLS12, cache)
	if mustConnect(t, addr, ccfg).DidResume {
		t.Fatal("the first handshake resumed")
	}
	ticket := func() []byte {
		cs, ok := cache.Get(serverName)
		if !ok {
			t.Fatal("the client holds no session")
		}
		tk, _, err := cs.ResumptionState()
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	first := ticket()
	for i := range 3 {
		before := d.Stats().Calls
		if !mustConnect(t, addr, ccfg).DidResume {
			t.Fatalf("resumption %d did not resume", i)
		}
		if calls := d.Stats().Calls - before; calls != 1 {
			t.Errorf("resumption %d made %d calls to the daemon, want 1 (the lookup)", i, calls)
		}
		if got := ticket(); !bytes.Equal(got, first) {
			t.Errorf("resumption %d: the client was given another identity", i)
		}
	}
}
