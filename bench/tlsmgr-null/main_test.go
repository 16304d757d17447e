package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/internal/loadgen"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// start serves a null server on a fresh socket and returns its path.
func start(t *testing.T, payload int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "null.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve(ln, newReplies(payload)) }()
	t.Cleanup(func() {
		ln.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Errorf("serve returned %v, want net.ErrClosed", err)
		}
	})
	return path
}

// TestLoadgen is the benchmark's own use: every request kind the load
// generator knows, over several connections, gets a valid reply.
func TestLoadgen(t *testing.T) {
	sock := start(t, 512)
	mix, err := loadgen.ParseMix("lookup=50,update=20,seed=10,policy=10,delete=5,tktkey=5")
	if err != nil {
		t.Fatal(err)
	}
	res, err := loadgen.Run(context.Background(), loadgen.Config{
		Socket: sock, Mix: mix, Connections: 3, Duration: 300 * time.Millisecond,
		Payload: 512, Prefill: 50,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || res.FirstError != nil {
		t.Fatalf("%d errors, first %v\n%s", res.Errors, res.FirstError, res)
	}
	seen := map[string]bool{}
	for _, o := range res.Ops {
		seen[o.Op] = true
		if o.Count == 0 || o.Misses != 0 || o.Errors != 0 {
			t.Errorf("%s: %d requests, %d misses, %d errors; want requests and neither", o.Op, o.Count, o.Misses, o.Errors)
		}
	}
	for _, op := range loadgen.Ops {
		if !seen[op] {
			t.Errorf("no %s requests in the run:\n%s", op, res)
		}
	}
	if res.PerSecond <= 0 {
		t.Errorf("%v req/s", res.PerSecond)
	}
}

// TestReplies checks each reply through the client library, which
// validates them as it does our daemon's and Postfix's.
func TestReplies(t *testing.T) {
	sock := start(t, 100)
	ctx := context.Background()
	c := client.New(sock, client.Options{})
	defer c.Close()

	for _, n := range []int{1, 32, 255} {
		b, err := c.Seed(ctx, n)
		if err != nil || len(b) != n {
			t.Errorf("Seed(%d) = %d bytes, %v", n, len(b), err)
		}
	}
	for _, n := range []int{0, 256} {
		if _, err := c.Seed(ctx, n); !isStatus(err, proto.StatusFail) {
			t.Errorf("Seed(%d): %v, want status -2", n, err)
		}
	}
	p, err := c.Policy(ctx, "smtpd")
	if err != nil || !p.Cachable || p.Timeout != time.Hour {
		t.Errorf("Policy = %+v, %v", p, err)
	}
	s, err := c.Lookup(ctx, "smtpd", "anything")
	if err != nil || len(s) != 100 {
		t.Errorf("Lookup = %d bytes, %v; want 100", len(s), err)
	}
	if err := c.Update(ctx, "smtpd", "anything", []byte("session")); err != nil {
		t.Errorf("Update: %v", err)
	}
	if err := c.Delete(ctx, "smtpd", "anything"); err != nil {
		t.Errorf("Delete: %v", err)
	}
	k, err := c.TicketKey(ctx, nil)
	if err != nil || k.Name[0] != 1 || k.Expiry <= time.Now().Unix() {
		t.Errorf("TicketKey = %+v, %v", k, err)
	}
	// Not a request: status -2, and the connection goes on.
	if _, err := c.Stats(ctx); !isStatus(err, proto.StatusFail) {
		t.Errorf("Stats: %v, want status -2", err)
	}
	if _, err := c.Seed(ctx, 8); err != nil {
		t.Errorf("Seed after an unknown request: %v", err)
	}
}

func isStatus(err error, status int32) bool {
	var se *client.StatusError
	return errors.As(err, &se) && se.Status == status
}

// TestFraming speaks the wire format by hand: the announcement comes
// first, requests sent back to back get one reply each in order, and a
// list without a request attribute gets status -2.
func TestFraming(t *testing.T) {
	sock := start(t, 0)
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	r := attr.NewReader(nc, attr.Limits{})
	l, err := r.ReadList()
	if err != nil || len(l) != 1 || string(l[0].Name) != proto.AttrProtocol || string(l[0].Value) != proto.ProtocolName {
		t.Fatalf("announcement %q, %v", l, err)
	}
	var req bytes.Buffer
	w := attr.NewWriter(&req)
	w.Str(proto.AttrRequest, proto.RequestUpdate)
	w.End()
	w.Str("bogus", "x")
	w.End()
	w.Str(proto.AttrRequest, proto.RequestLookup)
	w.End()
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write(req.Bytes()); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"status=0", "status=4294967294", "status=0 session="} {
		l, err := r.ReadList()
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		var got []string
		for _, a := range l {
			got = append(got, string(a.Name)+"="+string(a.Value))
		}
		if g := strings.Join(got, " "); g != want {
			t.Errorf("reply %d = %q, want %q", i, g, want)
		}
	}
	nc.(*net.UnixConn).CloseWrite()
	if _, err := r.ReadList(); err != io.EOF {
		t.Errorf("after the client's end: %v, want io.EOF", err)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-listen", filepath.Join(t.TempDir(), "s"), "extra"},
		{"-listen", "x", "-payload", "-1"},
		{"-nosuchflag"},
	} {
		var stderr bytes.Buffer
		if code := run(args, &stderr); code != 2 || stderr.Len() == 0 {
			t.Errorf("run(%q) = %d, stderr %q; want 2 and a message", args, code, stderr.String())
		}
	}
}
