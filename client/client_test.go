package client_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/internal/server"
	"github.com/gotlsmgr/tlsmgr/internal/server/servertest"
	"github.com/gotlsmgr/tlsmgr/proto"
)

var bg = context.Background()

func newClient(t *testing.T, path string, opts client.Options) *client.Client {
	t.Helper()
	c := client.New(path, opts)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestHappyPath(t *testing.T) {
	ts := startServer(t, "")
	c := newClient(t, ts.Path, client.Options{})

	// seed
	for _, n := range []int{1, 32, 255} {
		b, err := c.Seed(bg, n)
		if err != nil || len(b) != n {
			t.Fatalf("Seed(%d) = %d bytes, %v", n, len(b), err)
		}
	}
	s1, _ := c.Seed(bg, 32)
	s2, _ := c.Seed(bg, 32)
	if bytes.Equal(s1, s2) {
		t.Error("two seeds are equal")
	}

	// policy
	p, err := c.Policy(bg, "smtpd")
	if err != nil || !p.Cachable || p.Timeout != time.Hour {
		t.Errorf("Policy(smtpd) = %+v, %v; want cachable, 1h", p, err)
	}
	p, err = c.Policy(bg, "lmtp")
	if err != nil || p.Cachable || p.Timeout != time.Hour {
		t.Errorf("Policy(lmtp) = %+v, %v; want not cachable, 1h", p, err)
	}

	// update, lookup, delete; binary session bytes survive.
	const id = "0123456789abcdef&s=smtpd&l=805306672"
	session := []byte("\x00\x01binary\xffsession\x00")
	if err := c.Update(bg, "smtpd", id, session); err != nil {
		t.Fatalf("Update: %v", err)
	}
	got, err := c.Lookup(bg, "smtpd", id)
	if err != nil || !bytes.Equal(got, session) {
		t.Fatalf("Lookup = %q, %v; want %q", got, err, session)
	}
	if _, err := c.Lookup(bg, "smtp", id); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("the smtp cache shares entries with smtpd: %v", err)
	}
	// An empty session is a valid value.
	if err := c.Update(bg, "smtp", "empty", nil); err != nil {
		t.Fatalf("Update(empty): %v", err)
	}
	if got, err := c.Lookup(bg, "smtp", "empty"); err != nil || len(got) != 0 {
		t.Errorf("Lookup(empty) = %q, %v", got, err)
	}
	if err := c.Delete(bg, "smtpd", id); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := c.Lookup(bg, "smtpd", id); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Lookup after Delete = %v, want ErrNotFound", err)
	}

	// tktkey
	k, err := c.TicketKey(bg, nil)
	if err != nil {
		t.Fatalf("TicketKey(nil): %v", err)
	}
	now := time.Now().Unix()
	if k.Expiry < now+1790 || k.Expiry > now+1800 || k.Name == [proto.TicketNameLen]byte{} {
		t.Errorf("TicketKey(nil) = name %x expiry now%+d", k.Name, k.Expiry-now)
	}
	k2, err := c.TicketKey(bg, k.Name[:])
	if err != nil || k2 != k {
		t.Errorf("TicketKey(name) = %v, %v; want the same key", k2.Name, err)
	}

	// stats
	pairs, err := c.Stats(bg)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	m := map[string]string{}
	for _, p := range pairs {
		m[p[0]] = p[1]
	}
	if m["requests_seed"] != "5" || m["requests_tktkey"] != "2" || m["smtpd_cache_updates"] != "1" || m["lmtp_cache_enabled"] != "0" {
		t.Errorf("Stats = %v", pairs)
	}
	if pairs[0][0] != "clients" {
		t.Errorf("Stats out of order: first pair %v", pairs[0])
	}

	// One connection for all of it.
	if got := ts.Stat("connections_accepted"); got != "1" {
		t.Errorf("connections accepted = %s, want 1 (the client must reuse its connection)", got)
	}
}

func wantStatus(t *testing.T, what string, err error, status int32) {
	t.Helper()
	var se *client.StatusError
	if !errors.As(err, &se) {
		t.Errorf("%s: error %v (%T) is not a *StatusError", what, err, err)
		return
	}
	if se.Status != status {
		t.Errorf("%s: status %d, want %d", what, se.Status, status)
	}
	if got, want := errors.Is(err, client.ErrNotFound), status == -1; got != want {
		t.Errorf("%s: errors.Is(err, ErrNotFound) = %v, want %v (error %v)", what, got, want, err)
	}
	var pe *client.ProtocolError
	if errors.As(err, &pe) {
		t.Errorf("%s: status error also matches ProtocolError: %v", what, err)
	}
}

func TestNotFound(t *testing.T) {
	ts := startServer(t, "")
	c := newClient(t, ts.Path, client.Options{})
	_, err := c.Lookup(bg, "smtpd", "missing")
	wantStatus(t, "Lookup miss", err, -1)
	var se *client.StatusError
	if errors.As(err, &se) && se.Request != "lookup" {
		t.Errorf("StatusError.Request = %q, want lookup", se.Request)
	}
	if err != nil && !strings.Contains(err.Error(), "lookup") {
		t.Errorf("error text %q does not name the request", err)
	}
	wantStatus(t, "Delete miss", c.Delete(bg, "smtpd", "missing"), -1)
	unknown := bytes.Repeat([]byte{0x5a}, 16)
	_, err = c.TicketKey(bg, unknown)
	wantStatus(t, "TicketKey(unknown)", err, -1)
}

func TestStatusFail(t *testing.T) {
	ts := startServer(t, "")
	c := newClient(t, ts.Path, client.Options{})
	_, err := c.Policy(bg, "bogus")
	wantStatus(t, "Policy(bogus)", err, -2)
	_, err = c.Lookup(bg, "bogus", "x")
	wantStatus(t, "Lookup(bogus)", err, -2)
	wantStatus(t, "Update(lmtp, disabled)", c.Update(bg, "lmtp", "x", []byte("s")), -2)
	wantStatus(t, "Delete(lmtp, disabled)", c.Delete(bg, "lmtp", "x"), -2)
	for _, n := range []int{0, 256, -1} {
		_, err = c.Seed(bg, n)
		wantStatus(t, fmt.Sprint("Seed(", n, ")"), err, -2)
	}
	_, err = c.TicketKey(bg, []byte("short"))
	wantStatus(t, "TicketKey(5-byte name)", err, -2)
	// The connection stayed usable throughout.
	if _, err := c.Seed(bg, 8); err != nil {
		t.Errorf("Seed after errors: %v", err)
	}
	if got := ts.Stat("connections_accepted"); got != "1" {
		t.Errorf("connections accepted = %s, want 1", got)
	}
}

func TestStatusErrorText(t *testing.T) {
	for _, tc := range []struct {
		status int32
		want   string
	}{
		{-1, "tlsmgr lookup: not found or refused (status -1)"},
		{-2, "tlsmgr lookup: request rejected as malformed or not allowed (status -2)"},
		{7, "tlsmgr lookup: status 7"},
	} {
		e := &client.StatusError{Request: "lookup", Status: tc.status}
		if e.Error() != tc.want {
			t.Errorf("status %d: %q, want %q", tc.status, e.Error(), tc.want)
		}
	}
	if errors.Is(&client.StatusError{Status: -2}, client.ErrNotFound) {
		t.Error("status -2 matches ErrNotFound")
	}
}

// The daemon answers some malformed requests with the status alone.
func TestStatusOnlyReply(t *testing.T) {
	f := startFake(t, answer(wire("status", "4294967294"), wire("status", "4294967295")))
	c := newClient(t, f.path, client.Options{})
	_, err := c.Lookup(bg, "smtpd", "x")
	wantStatus(t, "status-only -2", err, -2)
	_, err = c.Seed(bg, 5)
	wantStatus(t, "status-only -1", err, -1)
}

func wantProtocolError(t *testing.T, what string, err error, request string) {
	t.Helper()
	var pe *client.ProtocolError
	if !errors.As(err, &pe) {
		t.Errorf("%s: error %v (%T) is not a *ProtocolError", what, err, err)
		return
	}
	if pe.Request != request {
		t.Errorf("%s: ProtocolError.Request = %q, want %q", what, pe.Request, request)
	}
	if errors.Is(err, client.ErrNotFound) {
		t.Errorf("%s: protocol error matches ErrNotFound", what)
	}
}

func TestBadAnnouncement(t *testing.T) {
	for _, ann := range []string{
		wire("protocol", "something_else"),
		wire("protocol", "tlsmgr_protocol", "extra", "1"),
		wire("status", "0"),
		wire(),
	} {
		f := startFake(t, func(nc net.Conn, r *attr.Reader, _ int) {
			io.WriteString(nc, ann)
			io.Copy(io.Discard, nc)
		})
		c := newClient(t, f.path, client.Options{})
		_, err := c.Seed(bg, 4)
		wantProtocolError(t, fmt.Sprintf("announcement %q", ann), err, "connect")
	}
}

func TestBadReplies(t *testing.T) {
	key := proto.TicketKey{Expiry: 42}
	key.Name[0] = 1
	goodRec := base64.StdEncoding.EncodeToString(key.Marshal())
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name    string
		reply   string
		request string
		call    func(c *client.Client) error
	}{
		{"no status", wire("seed", b64("abc")), "seed", seedCall},
		{"status not first", wire("seed", b64("abc"), "status", "0"), "seed", seedCall},
		{"status not a number", wire("status", "-1", "seed", ""), "seed", seedCall},
		{"wrong attribute name", wire("status", "0", "session", b64("abc")), "seed", seedCall},
		{"extra attribute", wire("status", "0", "seed", b64("abc"), "more", "1"), "seed", seedCall},
		{"missing attribute", wire("status", "0"), "seed", seedCall},
		{"seed not base64", wire("status", "0", "seed", "!!!!"), "seed", seedCall},
		{"policy one attribute short", wire("status", "0", "cachable", "1"), "policy", policyCall},
		{"policy swapped", wire("status", "0", "timeout", "3600", "cachable", "1"), "policy", policyCall},
		{"policy timeout not a number", wire("status", "0", "cachable", "1", "timeout", "1h"), "policy", policyCall},
		{"lookup session not base64", wire("status", "0", "session", "a\nb="), "lookup", lookupCall},
		{"lookup wrong name", wire("status", "0", "seed", b64("x")), "lookup", lookupCall},
		{"update extra", wire("status", "0", "session", ""), "update", updateCall},
		{"update no status", wire("result", "0"), "update", updateCall},
		{"delete status junk", wire("status", "0x"), "delete", deleteCall},
		{"tktkey short record", wire("status", "0", "keybuf", b64("short")), "tktkey", tktkeyCall},
		{"tktkey long record", wire("status", "0", "keybuf", goodRec+"AAAA"), "tktkey", tktkeyCall},
		{"tktkey not base64", wire("status", "0", "keybuf", "*"), "tktkey", tktkeyCall},
		{"stats no status", wire("clients", "1"), "stats", statsCall},
		{"stats status junk", wire("status", "zero", "clients", "1"), "stats", statsCall},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The second reply checks that the connection is still in sync.
			f := startFake(t, answer(tc.reply, wire("status", "0", "seed", b64("ok"))))
			c := newClient(t, f.path, client.Options{})
			wantProtocolError(t, tc.name, tc.call(c), tc.request)
			if b, err := c.Seed(bg, 2); err != nil || string(b) != "ok" {
				t.Errorf("next request = %q, %v", b, err)
			}
		})
	}
	// And the good record parses.
	f := startFake(t, answer(wire("status", "0", "keybuf", goodRec)))
	c := newClient(t, f.path, client.Options{})
	if k, err := c.TicketKey(bg, nil); err != nil || k != key {
		t.Errorf("TicketKey = %+v, %v", k, err)
	}
}

func seedCall(c *client.Client) error   { _, err := c.Seed(bg, 3); return err }
func policyCall(c *client.Client) error { _, err := c.Policy(bg, "smtpd"); return err }
func lookupCall(c *client.Client) error { _, err := c.Lookup(bg, "smtpd", "id"); return err }
func updateCall(c *client.Client) error { return c.Update(bg, "smtpd", "id", []byte("s")) }
func deleteCall(c *client.Client) error { return c.Delete(bg, "smtpd", "id") }
func tktkeyCall(c *client.Client) error { _, err := c.TicketKey(bg, nil); return err }
func statsCall(c *client.Client) error  { _, err := c.Stats(bg); return err }

// The client sends exactly what Postfix's clients send.
func TestRequestsOnTheWire(t *testing.T) {
	var mu sync.Mutex
	var got []string
	f := startFake(t, func(nc net.Conn, r *attr.Reader, _ int) {
		io.WriteString(nc, announcement)
		for {
			l, err := r.ReadList()
			if err != nil {
				return
			}
			var parts []string
			for _, a := range l {
				parts = append(parts, string(a.Name)+"="+string(a.Value))
			}
			mu.Lock()
			got = append(got, strings.Join(parts, " "))
			mu.Unlock()
			io.WriteString(nc, wire("status", "4294967295"))
		}
	})
	c := newClient(t, f.path, client.Options{})
	c.Seed(bg, 32)
	c.Policy(bg, "smtp")
	c.Lookup(bg, "smtpd", "id1")
	c.Update(bg, "lmtp", "id2", []byte("sess"))
	c.Delete(bg, "smtp", "id3")
	c.TicketKey(bg, nil)
	c.TicketKey(bg, bytes.Repeat([]byte{0xff}, 16))
	c.Stats(bg)
	want := []string{
		"request=seed size=32",
		"request=policy cache_type=smtp",
		"request=lookup cache_type=smtpd cache_id=id1",
		"request=update cache_type=lmtp cache_id=id2 session=c2Vzcw==",
		"request=delete cache_type=smtp cache_id=id3",
		"request=tktkey keyname=",
		"request=tktkey keyname=/////////////////////w==",
		"request=stats",
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := f.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestReconnectAfterRestart(t *testing.T) {
	ts := startServer(t, "")
	c := newClient(t, ts.Path, client.Options{})
	if err := c.Update(bg, "smtpd", "a", []byte("first server")); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Lookup(bg, "smtpd", "a"); err != nil || string(got) != "first server" {
		t.Fatalf("Lookup = %q, %v", got, err)
	}

	ts.Stop(t) // closes the client's connection and removes the socket
	ts2 := startServer(t, ts.Path)

	// The first request after the restart goes out on the dead connection,
	// fails, and is retried once on a new one: no error reaches the caller.
	if b, err := c.Seed(bg, 16); err != nil || len(b) != 16 {
		t.Fatalf("Seed after restart = %d bytes, %v", len(b), err)
	}
	// It really is the new server (a fresh, empty cache).
	if _, err := c.Lookup(bg, "smtpd", "a"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Lookup on the new server = %v, want ErrNotFound", err)
	}
	if err := c.Update(bg, "smtpd", "a", []byte("second server")); err != nil {
		t.Fatal(err)
	}
	if got := ts2.Stat("connections_accepted"); got != "1" {
		t.Errorf("new server accepted %s connections, want 1", got)
	}
	if got := ts2.Stat("requests_seed"); got != "1" {
		t.Errorf("new server saw %s seed requests, want 1", got)
	}
}

// With no server at all the client fails, and recovers once one is back.
func TestServerDown(t *testing.T) {
	ts := startServer(t, "")
	c := newClient(t, ts.Path, client.Options{DialTimeout: time.Second})
	if _, err := c.Seed(bg, 1); err != nil {
		t.Fatal(err)
	}
	ts.Stop(t)
	if _, err := c.Seed(bg, 1); err == nil {
		t.Fatal("Seed with the server gone succeeded")
	}
	if _, err := c.Seed(bg, 1); err == nil {
		t.Fatal("second Seed with the server gone succeeded")
	}
	startServer(t, ts.Path)
	if _, err := c.Seed(bg, 1); err != nil {
		t.Fatalf("Seed after the server came back: %v", err)
	}
}

// A request on a reused connection is retried once, not more.
func TestRetryOnlyOnce(t *testing.T) {
	f := startFake(t, func(nc net.Conn, r *attr.Reader, n int) {
		io.WriteString(nc, announcement)
		if n == 1 {
			// Answer one request, then die.
			if _, err := r.ReadList(); err != nil {
				return
			}
			io.WriteString(nc, wire("status", "0"))
		}
		// Later connections die on their first request.
		r.ReadList()
	})
	c := newClient(t, f.path, client.Options{})
	if err := c.Delete(bg, "smtpd", "x"); err != nil {
		t.Fatalf("first request: %v", err)
	}
	// Connection 1 dies on this request, and so does the retry's.
	err := c.Delete(bg, "smtpd", "x")
	if err == nil {
		t.Fatal("request against a dying server succeeded")
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("error = %v, want io.ErrUnexpectedEOF", err)
	}
	if n := f.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the original and one retry)", n)
	}
	// A request on a fresh connection is not retried.
	err = c.Delete(bg, "smtpd", "x")
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("error = %v, want io.ErrUnexpectedEOF", err)
	}
	if n := f.conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3 (no retry on a new connection)", n)
	}
}

func TestNULInString(t *testing.T) {
	ts := startServer(t, "")
	c := newClient(t, ts.Path, client.Options{})
	// On a client that has not connected yet...
	if _, err := c.Lookup(bg, "smtpd", "bad\x00id"); !errors.Is(err, attr.ErrNUL) {
		t.Errorf("Lookup(id with NUL) = %v, want attr.ErrNUL", err)
	}
	if err := c.Update(bg, "smtpd", "ok", []byte("x")); err != nil {
		t.Fatalf("Update after ErrNUL: %v", err)
	}
	// ...and on a connection in use.
	if err := c.Update(bg, "smtpd", "id\x00", []byte("x")); !errors.Is(err, attr.ErrNUL) {
		t.Errorf("Update(id with NUL) = %v, want attr.ErrNUL", err)
	}
	if err := c.Delete(bg, "smt\x00pd", "ok"); !errors.Is(err, attr.ErrNUL) {
		t.Errorf("Delete(type with NUL) = %v, want attr.ErrNUL", err)
	}
	if _, err := c.Policy(bg, "\x00"); !errors.Is(err, attr.ErrNUL) {
		t.Errorf("Policy(NUL) = %v, want attr.ErrNUL", err)
	}
	if got, err := c.Lookup(bg, "smtpd", "ok"); err != nil || string(got) != "x" {
		t.Fatalf("Lookup after ErrNUL = %q, %v", got, err)
	}
	// Nothing half-written reached the server.
	if got := ts.Stat("requests_malformed"); got != "0" {
		t.Errorf("server saw %s malformed requests, want 0", got)
	}
	if got := ts.Stat("requests_lookup"); got != "1" {
		t.Errorf("server saw %s lookups, want 1", got)
	}
	if strings.Contains(ts.Log.String(), "warning") {
		t.Errorf("server warned:\n%s", ts.Log.String())
	}
}

// silent announces the protocol and then never answers.
func silent(answerFirst int) func(net.Conn, *attr.Reader, int) {
	return func(nc net.Conn, r *attr.Reader, _ int) {
		io.WriteString(nc, announcement)
		for i := 0; i < answerFirst; i++ {
			if _, err := r.ReadList(); err != nil {
				return
			}
			io.WriteString(nc, wire("status", "0"))
		}
		io.Copy(io.Discard, nc)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &ne) && ne.Timeout()
}

func TestContextDeadline(t *testing.T) {
	const limit = 200 * time.Millisecond
	for _, tc := range []struct {
		name        string
		answerFirst int
	}{{"fresh connection", 0}, {"reused connection", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, silent(tc.answerFirst))
			c := newClient(t, f.path, client.Options{Timeout: time.Minute})
			for range tc.answerFirst {
				if err := c.Delete(bg, "smtpd", "x"); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(bg, limit)
			defer cancel()
			start := time.Now()
			err := c.Delete(ctx, "smtpd", "x")
			elapsed := time.Since(start)
			if !isTimeout(err) {
				t.Errorf("error = %v, want a timeout", err)
			}
			if elapsed < limit-20*time.Millisecond || elapsed > limit+2*time.Second {
				t.Errorf("returned after %v, want about %v", elapsed, limit)
			}
		})
	}
}

// Options.Timeout bounds one request when ctx has no deadline, also on a
// reused connection, where a failure would otherwise be retried.
func TestOptionsTimeout(t *testing.T) {
	const limit = 300 * time.Millisecond
	for _, answerFirst := range []int{0, 1} {
		t.Run(fmt.Sprint("answered", answerFirst), func(t *testing.T) {
			f := startFake(t, silent(answerFirst))
			c := newClient(t, f.path, client.Options{Timeout: limit})
			for range answerFirst {
				if err := c.Delete(bg, "smtpd", "x"); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			err := c.Delete(bg, "smtpd", "x")
			elapsed := time.Since(start)
			if !isTimeout(err) {
				t.Errorf("error = %v, want a timeout", err)
			}
			if elapsed < limit-20*time.Millisecond || elapsed >= limit+2*time.Second {
				t.Errorf("returned after %v, want about %v", elapsed, limit)
			}
			if n := f.conns.Load(); n != 1 {
				t.Errorf("%d connections: a timed-out request was retried", n)
			}
		})
	}
}

// A server that accepts but never announces is bounded too.
func TestNoAnnouncementTimeout(t *testing.T) {
	f := startFake(t, func(nc net.Conn, _ *attr.Reader, _ int) { io.Copy(io.Discard, nc) })
	c := newClient(t, f.path, client.Options{})
	ctx, cancel := context.WithTimeout(bg, 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Seed(ctx, 1)
	if !isTimeout(err) || time.Since(start) > 3*time.Second {
		t.Errorf("Seed = %v after %v, want a timeout after about 150ms", err, time.Since(start))
	}
}

func TestCustomDialAndClose(t *testing.T) {
	ts := startServer(t, "")
	var dials atomic.Int32
	c := newClient(t, ts.Path, client.Options{Dial: func(ctx context.Context, path string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}})
	for range 3 {
		if _, err := c.Seed(bg, 4); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.Seed(bg, 4); err != nil {
		t.Fatalf("Seed after Close: %v", err)
	}
	if n := dials.Load(); n != 2 {
		t.Errorf("Dial called %d times, want 2 (once, and again after Close)", n)
	}
	failing := newClient(t, ts.Path, client.Options{Dial: func(context.Context, string) (net.Conn, error) {
		return nil, errors.New("no route")
	}})
	if _, err := failing.Seed(bg, 4); err == nil || !strings.Contains(err.Error(), "no route") {
		t.Errorf("Seed with a failing Dial = %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	ts := startServer(t, "")
	c := newClient(t, ts.Path, client.Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				id := fmt.Sprintf("g%d-%d", g, i)
				sess := []byte(id + "-session")
				if err := c.Update(bg, "smtpd", id, sess); err != nil {
					errs <- err
					return
				}
				got, err := c.Lookup(bg, "smtpd", id)
				if err != nil || !bytes.Equal(got, sess) {
					errs <- fmt.Errorf("Lookup(%s) = %q, %v", id, got, err)
					return
				}
				if i%8 == 0 {
					if b, err := c.Seed(bg, 20); err != nil || len(b) != 20 {
						errs <- fmt.Errorf("Seed = %d bytes, %v", len(b), err)
						return
					}
					if _, err := c.TicketKey(bg, nil); err != nil {
						errs <- err
						return
					}
				}
				if i%10 == 0 {
					if _, err := c.Lookup(bg, "smtpd", "missing"); !errors.Is(err, client.ErrNotFound) {
						errs <- fmt.Errorf("miss = %v", err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := ts.Stat("connections_accepted"); got != "1" {
		t.Errorf("connections accepted = %s, want 1", got)
	}
	if got := ts.Stat("smtpd_cache_entries"); got != "320" {
		t.Errorf("entries = %s, want 320", got)
	}
}

// postfix35 answers as Postfix's tlsmgr before 3.6 does: no
// announcement; a reply per request, as soon as the request is in.
func postfix35(replies ...string) func(net.Conn, *attr.Reader, int) {
	return func(nc net.Conn, r *attr.Reader, _ int) {
		for _, rep := range replies {
			if _, err := r.ReadList(); err != nil {
				return
			}
			io.WriteString(nc, rep)
		}
		io.Copy(io.Discard, nc)
	}
}

// A server that waits for the request (Postfix's tlsmgr before 3.6, or
// ours for such clients) gets it after a bounded wait for an
// announcement, on every new connection.
func TestServerWithoutAnnouncement(t *testing.T) {
	f := startFake(t, postfix35(wire("status", "0", "seed", "AQID"), wire("status", "0", "cachable", "1", "timeout", "3600")))
	// The wait is long enough that a second one on the reused
	// connection cannot hide in a loaded machine's scheduling delays.
	const wait = time.Second
	c := newClient(t, f.path, client.Options{AnnouncementWait: wait})
	start := time.Now()
	if seed, err := c.Seed(bg, 3); err != nil || string(seed) != "\x01\x02\x03" {
		t.Fatalf("Seed = %q, %v", seed, err)
	}
	if took := time.Since(start); took < wait || took > wait+5*time.Second {
		t.Errorf("first request took %v, want the announcement wait of %v", took, wait)
	}
	// Reused: no wait.
	start = time.Now()
	if _, err := c.Policy(bg, "smtpd"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took >= wait {
		t.Errorf("second request took %v: waited again on the same connection", took)
	}
	// A deadline shorter than the wait: half of it is waited, the
	// request still fits in the rest.
	f2 := startFake(t, postfix35(wire("status", "0", "seed", "AQID")))
	c2 := newClient(t, f2.path, client.Options{AnnouncementWait: time.Minute})
	ctx, cancel := context.WithTimeout(bg, 2*time.Second)
	defer cancel()
	start = time.Now()
	if _, err := c2.Seed(ctx, 3); err != nil {
		t.Errorf("with a deadline of 2s and a wait of a minute: %v", err)
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("with a deadline of 2s: answered after %v, before half of it was waited", took)
	}
}

// A server that announces only after the client gave up waiting (ours
// to a client it did not expect, or one just slow) has its announcement
// skipped where the reply was expected.
func TestLateAnnouncement(t *testing.T) {
	f := startFake(t, func(nc net.Conn, r *attr.Reader, _ int) {
		time.Sleep(150 * time.Millisecond)
		io.WriteString(nc, announcement)
		for {
			if _, err := r.ReadList(); err != nil {
				return
			}
			io.WriteString(nc, wire("status", "0", "seed", "AQID"))
		}
	})
	c := newClient(t, f.path, client.Options{AnnouncementWait: 20 * time.Millisecond})
	for i := 0; i < 3; i++ {
		if seed, err := c.Seed(bg, 3); err != nil || string(seed) != "\x01\x02\x03" {
			t.Fatalf("Seed %d = %q, %v", i, seed, err)
		}
	}
}

// Against our own server in either mode, the client never makes the
// server report a mismatch.
func TestBothGreetings(t *testing.T) {
	for _, g := range []server.Greeting{server.ServerFirst, server.ClientFirst} {
		t.Run(g.String(), func(t *testing.T) {
			ts := servertest.StartWith(t, "", func(c *server.Config) { c.Greeting = g })
			c := newClient(t, ts.Path, client.Options{})
			for i := 0; i < 3; i++ {
				if _, err := c.Seed(bg, 8); err != nil {
					t.Fatal(err)
				}
				c.Close() // a new connection each time
			}
			if ts.Log.Has("mismatch") {
				t.Errorf("server reported a mismatch:\n%s", ts.Log.String())
			}
		})
	}
}
