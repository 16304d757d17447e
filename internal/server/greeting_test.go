package server

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/internal/pfversion"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// postfixClient does on the wire what a given Postfix version's
// tls_mgr.c client does through attr_clnt_request(): a 3.6 or later
// client first reads the announcement and refuses anything else
// (ATTR_FLAG_STRICT); an earlier one sends its request as soon as it has
// connected. The reply is read as attr_scan0() with ATTR_FLAG_MISSING
// reads it (see scan0), and a reply without every wanted attribute is a
// failure. A failed request is tried once more on a new connection, then
// given up ("problem talking to server"), as Postfix does.
type postfixClient struct {
	t    *testing.T
	v    pfversion.Version
	path string
	// slow makes an old client write its request only once the
	// server's first bytes are in the socket, as a client slower than
	// the server's announcement would.
	slow bool
	// pause is the wait before a failed request is tried again on a new
	// connection: Postfix sleeps a second, then closes the old one.
	pause time.Duration
	nc    net.Conn
	br    *bufio.Reader
}

func newPostfixClient(t *testing.T, version, path string) *postfixClient {
	t.Helper()
	v, err := pfversion.Parse(version)
	if err != nil {
		t.Fatal(err)
	}
	pc := &postfixClient{t: t, v: v, path: path}
	t.Cleanup(pc.close)
	return pc
}

func (pc *postfixClient) close() {
	if pc.nc != nil {
		pc.nc.Close()
		pc.nc = nil
	}
}

// connect is auto_clnt's connect, with the handshake of 3.6 and later.
func (pc *postfixClient) connect() bool {
	nc, err := net.Dial("unix", pc.path)
	if err != nil {
		pc.t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	// Byte by byte, so that a reply that comes after the list read is
	// left in the socket, as it is when the client reads before the
	// reply arrives.
	pc.nc, pc.br = nc, bufio.NewReader(oneByte{nc})
	if !pc.v.ServerSpeaksFirst() {
		if pc.slow {
			pc.br.Peek(1) // left in the buffer, read as the reply
		}
		return true
	}
	l, err := attr.NewBufferedReader(pc.br, attr.DefaultLimits).ReadList()
	return err == nil && len(l) == 1 && string(l[0].Name) == "protocol" && string(l[0].Value) == "tlsmgr_protocol"
}

// request sends pairs and returns the wanted reply values, or false.
func (pc *postfixClient) request(pairs []string, wanted ...string) ([][]byte, bool) {
	for attempt := 0; attempt < 2; attempt++ {
		if pc.nc == nil && !pc.connect() {
			pc.close()
			continue
		}
		if _, err := io.WriteString(pc.nc, attr.Encode(pairs...)); err != nil {
			pc.close()
			continue
		}
		l, err := attr.NewBufferedReader(pc.br, attr.DefaultLimits).ReadList()
		if err == nil {
			if vals := scan0(l, wanted...); len(vals) == len(wanted) {
				return vals, true
			}
		}
		time.Sleep(pc.pause)
		pc.close() // auto_clnt_recover
	}
	return nil, false
}

type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) { return o.r.Read(p[:min(len(p), 1)]) }

// scan0 picks the wanted attributes out of a reply list as attr_scan0()
// does without ATTR_FLAG_EXTRA: in the order wanted, skipping any other
// attribute, so that a reply attribute an older client does not know
// (policy's timeout for 2.10) is ignored. It returns the values found,
// up to the first one missing.
func scan0(l attr.List, wanted ...string) [][]byte {
	var vals [][]byte
	for _, a := range l {
		if len(vals) < len(wanted) && string(a.Name) == wanted[len(vals)] {
			vals = append(vals, a.Value)
		}
	}
	return vals
}

// session runs what an smtpd of that version asks of tlsmgr in its life
// and reports the first failure.
func (pc *postfixClient) session(keyLen int) error {
	v, ok := pc.request([]string{"request", "seed", "size", "32"}, "status", "seed")
	if !ok || string(v[0]) != "0" || len(v[1]) == 0 {
		return fmt.Errorf("seed: %q %v", v, ok)
	}
	policy := []string{"status", "cachable"}
	if hasTickets(pc.v) {
		// 2.10 and before want no timeout: the extra attribute is skipped.
		policy = append(policy, "timeout")
	}
	if v, ok = pc.request([]string{"request", "policy", "cache_type", "smtpd"}, policy...); !ok || string(v[1]) != "1" {
		return fmt.Errorf("policy: %q %v", v, ok)
	}
	if v, ok = pc.request([]string{"request", "update", "cache_type", "smtpd", "cache_id", "id-" + pc.v.Text, "session", b64("s")}, "status"); !ok || string(v[0]) != "0" {
		return fmt.Errorf("update: %q %v", v, ok)
	}
	if v, ok = pc.request([]string{"request", "lookup", "cache_type", "smtpd", "cache_id", "id-" + pc.v.Text}, "status", "session"); !ok || string(v[1]) != b64("s") {
		return fmt.Errorf("lookup: %q %v", v, ok)
	}
	if v, ok = pc.request([]string{"request", "delete", "cache_type", "smtpd", "cache_id", "id-" + pc.v.Text}, "status"); !ok || string(v[0]) != "0" {
		return fmt.Errorf("delete: %q %v", v, ok)
	}
	if !hasTickets(pc.v) {
		return nil
	}
	// request_scache_key(): status 0 and a record of exactly the
	// client's own struct size, or no key.
	v, ok = pc.request([]string{"request", "tktkey", "keyname", ""}, "status", "keybuf")
	if !ok || string(v[0]) != "0" {
		return fmt.Errorf("tktkey: %q %v", v, ok)
	}
	rec, err := attr.ParseData("keybuf", v[1])
	if err != nil || len(rec) != keyLen {
		return fmt.Errorf("tktkey: a record of %d bytes, the client takes only %d", len(rec), keyLen)
	}
	name := rec[:proto.TicketNameLen]
	v, ok = pc.request([]string{"request", "tktkey", "keyname", b64(string(name))}, "status", "keybuf")
	if again, _ := attr.ParseData("keybuf", v[1]); !ok || !bytes.Equal(again, rec) {
		return fmt.Errorf("tktkey by name: %q %v", v, ok)
	}
	return nil
}

// hasTickets: tktkey requests and policy's timeout came with 2.11.
func hasTickets(v pfversion.Version) bool { return v.Major > 2 || v.Minor >= 11 }

// What the clients of each version expect: who speaks first, and the
// ticket key record's size.
func TestPostfixClientsOfEveryVersion(t *testing.T) {
	for _, version := range []string{"2.10.1", "2.11.0", "3.0.0", "3.1.0", "3.4.13", "3.5.25",
		"3.6-20200919", "3.6-20200920", "3.6.0", "3.7.11", "3.10.13", "3.12-20260821"} {
		t.Run(version, func(t *testing.T) {
			v, _ := pfversion.Parse(version)
			greeting := ClientFirst
			if v.ServerSpeaksFirst() {
				greeting = ServerFirst
			}
			f := newFixture(t, func(c *Config, _ map[string]scache.Store) {
				c.Greeting, c.KeyRecordLen = greeting, v.TicketKeyRecordLen()
			})
			// Several processes, each with its own connection.
			for i := 0; i < 3; i++ {
				if err := newPostfixClient(t, version, f.path).session(v.TicketKeyRecordLen()); err != nil {
					t.Fatalf("Postfix %s client: %v\n%s", version, err, f.log.String())
				}
			}
			if f.log.Has("mismatch") || f.srv.counters.mismatched.Load() != 0 {
				t.Errorf("mismatch reported:\n%s", f.log.String())
			}
		})
	}
}

// Without the right setting, a client of the other kind fails as the
// real one does, and the daemon says why; with it, all is well.
func TestWrongGreeting(t *testing.T) {
	for _, pause := range []time.Duration{time.Second, 0} {
		t.Run(fmt.Sprintf("old client, server first, retry after %v", pause), func(t *testing.T) {
			f := newFixture(t) // ServerFirst
			pc := newPostfixClient(t, "3.5.25", f.path)
			pc.slow = true // the announcement gets there first
			pc.pause = pause
			if _, ok := pc.request([]string{"request", "seed", "size", "32"}, "status", "seed"); ok {
				t.Fatal("a Postfix 3.5 client worked with an announcement it reads as its reply")
			}
			// Each try went away with its reply unread (a reset), or
			// before it was written (a broken pipe).
			waitMismatches(t, f, 2)
			want := "hung up without reading the reply to its first request"
			if pause == 0 {
				want = "hung up"
			}
			if f.log.Count("warn", want) != 2 || !f.log.Has("tlsmgr_protocol_announcement = no") {
				t.Errorf("no warning naming the cause and the parameter:\n%s", f.log.String())
			}
		})
	}
	t.Run("new client, client first", func(t *testing.T) {
		f := newFixture(t, func(c *Config, _ map[string]scache.Store) {
			c.Greeting, c.LateAnnouncement = ClientFirst, 300*time.Millisecond
		})
		start := time.Now()
		if err := newPostfixClient(t, "3.7.11", f.path).session(proto.TicketKeyRecordLen); err != nil {
			t.Fatalf("a Postfix 3.7 client did not get a late announcement: %v", err)
		}
		if took := time.Since(start); took < 300*time.Millisecond {
			t.Errorf("announced after %v, before the client was silent for 300ms", took)
		}
		waitMismatches(t, f, 1)
		if !f.log.Has("sent nothing for 300ms: announced the protocol late") || !f.log.Has("tlsmgr_protocol_announcement = yes") {
			t.Errorf("no warning naming the cause and the parameter:\n%s", f.log.String())
		}
	})
	t.Run("3.6 client, 2.11 record", func(t *testing.T) {
		f := newFixture(t, func(c *Config, _ map[string]scache.Store) { c.KeyRecordLen = proto.TicketKeyRecordLen211 })
		err := newPostfixClient(t, "3.6.0", f.path).session(proto.TicketKeyRecordLen)
		if err == nil || !strings.Contains(err.Error(), "a record of 56 bytes") {
			t.Errorf("a 3.6 client took a 2.11 record: %v", err)
		}
	})
}

// A request already waiting when the connection is taken is from a
// client that speaks first: it gets no announcement, and an answer.
func TestRequestBeforeAnnouncement(t *testing.T) {
	f := newFixture(t)
	path := f.path + ".manual"
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accept := func() {
		t.Helper()
		nc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		f.srv.ServeConn(nc)
	}
	// The request is in the socket before the server takes the
	// connection.
	pc := newPostfixClient(t, "3.5.25", path)
	if !pc.connect() {
		t.Fatal("connect")
	}
	pc.nc.Write([]byte(attr.Encode("request", "seed", "size", "16")))
	accept()
	l2, err := attr.NewBufferedReader(pc.br, attr.DefaultLimits).ReadList()
	if v := scan0(l2, "status", "seed"); err != nil || len(v) != 2 || string(v[0]) != "0" {
		t.Fatalf("seed: %v %v\n%s", l2, err, f.log.String())
	}
	// The next request on the same connection works too.
	if _, ok := pc.request([]string{"request", "policy", "cache_type", "smtpd"}, "status", "cachable", "timeout"); !ok {
		t.Fatal("policy on the same connection failed")
	}
	waitMismatches(t, f, 1)
	if !f.log.Has("sent its first request before the protocol announcement") {
		t.Errorf("no warning:\n%s", f.log.String())
	}

	// master(8)'s wake-up trigger, also there before the announcement,
	// is no mismatch.
	nc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	nc.Write([]byte("W"))
	nc.Close()
	accept()
	f.log.WaitFor(t, "received master trigger")
	if n := f.srv.counters.mismatched.Load(); n != 1 {
		t.Errorf("%d mismatches after a wake-up trigger, want still 1", n)
	}
}

func waitMismatches(t *testing.T, f *fixture, want uint64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); f.srv.counters.mismatched.Load() < want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			break
		}
	}
	if got := f.srv.counters.mismatched.Load(); got != want {
		t.Fatalf("%d mismatches counted, want %d\n%s", got, want, f.log.String())
	}
}
