package gotls

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
)

// TestBreaker: a daemon that accepts but never answers costs the first
// call its timeout; later calls fail at once, without asking it, until
// the retry time, when one call asks again.
func TestBreaker(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "mute.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	defer func() {
		ln.Close()
		<-done
		close(accepted)
		for c := range accepted {
			c.Close()
		}
	}()
	var l logs
	const timeout = 500 * time.Millisecond // "at once" is well under half of it, on a loaded machine too
	d := Dial(Options{Socket: sock, Timeout: timeout, Conns: 2, Logger: l.Logger()})
	defer d.Close()
	d.retry = time.Hour
	asked := 0
	call := func() (time.Duration, error) {
		start := time.Now()
		err := d.do(func(ctx context.Context, c *client.Client) error {
			asked++
			_, err := c.Lookup(ctx, "smtpd", "x")
			return err
		})
		return time.Since(start), err
	}
	if el, err := call(); err == nil || el < timeout {
		t.Fatalf("first call: %v after %v, want a timeout", err, el)
	}
	for range 10 {
		if el, err := call(); !errors.Is(err, errDown) || el > timeout/2 {
			t.Fatalf("call while down: %v after %v, want errDown at once", err, el)
		}
	}
	if asked != 1 {
		t.Errorf("asked the daemon %d times, want 1", asked)
	}
	d.probeAt.Store(0) // the retry time has come
	if _, err := call(); err == nil || errors.Is(err, errDown) || asked != 2 {
		t.Errorf("probe: %v, asked %d times, want a second timeout", err, asked)
	}
	if st := d.Stats(); st.Calls != 12 || st.Failures != 12 {
		t.Errorf("stats %+v, want 12 calls, 12 failures", st)
	}
	if lines := texts(&l); len(lines) != 1 {
		t.Errorf("log %q, want one line", lines)
	}
}

// TestBreakerFastFailure: a daemon that is plainly gone (no socket) is
// asked every time: that costs nothing, and the first call once it is
// back finds it.
func TestBreakerFastFailure(t *testing.T) {
	var l logs
	d := Dial(Options{Socket: filepath.Join(t.TempDir(), "none.sock"), Logger: l.Logger()})
	defer d.Close()
	d.retry = time.Hour
	asked := 0
	for range 3 {
		err := d.do(func(ctx context.Context, c *client.Client) error {
			asked++
			_, err := c.Lookup(ctx, "smtpd", "x")
			return err
		})
		if err == nil || errors.Is(err, errDown) {
			t.Fatalf("call: %v", err)
		}
	}
	if asked != 3 || len(texts(&l)) != 1 {
		t.Errorf("asked %d times, log %q; want 3 and one line", asked, texts(&l))
	}
}

// TestPickIdle: a call goes to an idle connection when there is one.
func TestPickIdle(t *testing.T) {
	d := Dial(Options{Socket: "/nonexistent", Conns: 3})
	d.busy[0].Add(1)
	d.busy[1].Add(1)
	for range 6 {
		if i := d.pick(); i != 2 {
			t.Fatalf("pick = %d, want the idle 2", i)
		}
	}
	d.busy[2].Add(1)
	seen := map[int]bool{}
	for range 6 {
		seen[d.pick()] = true
	}
	if len(seen) != 3 {
		t.Errorf("all busy: picks %v, want round robin", seen)
	}
}
