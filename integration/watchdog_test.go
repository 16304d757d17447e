package integration

// daemon_timeout: a daemon whose store wedges ends itself, as Postfix's
// daemons do, so that master(8) or systemd can start a fresh one.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/internal/daemontest"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

// TestWatchdogEndsWedgedDaemon: the smtpd cache lives on a redis-server
// stopped with SIGSTOP, which accepts connections (the kernel does) and
// never answers, and the settings give Redis the longest timeout allowed
// (10s): a lookup waits that long. With daemon_timeout = 2s the daemon
// must log a fatal error naming the wedged request and exit with status
// 1 within daemon_timeout and a small margin, long before the lookup's
// own deadline.
func TestWatchdogEndsWedgedDaemon(t *testing.T) {
	srv := redistest.Single(t)
	cf := fleetSettings(t, []string{srv.Addr})
	text, err := os.ReadFile(cf)
	if err != nil {
		t.Fatal(err)
	}
	slow := strings.Replace(string(text), "timeout = 20ms\n", "timeout = 10s\n", 1)
	if slow == string(text) {
		t.Fatalf("no timeout line to replace in %s:\n%s", cf, text)
	}
	if err := os.WriteFile(cf, []byte(slow), 0o600); err != nil {
		t.Fatal(err)
	}
	const daemonTimeout = 2 * time.Second
	s := newStandalone(t, "smtpd_tls_session_cache_database=redis:"+cf,
		fmt.Sprintf("daemon_timeout=%ds", int(daemonTimeout/time.Second)))
	p := s.start(t)
	ctx := context.Background()
	c := s.client()
	defer c.Close()
	if err := c.Update(ctx, "smtpd", "before", []byte("session")); err != nil {
		t.Fatal(err)
	}
	// Served in time for longer than daemon_timeout: no alarm.
	for end := time.Now().Add(daemonTimeout + time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if _, err := c.Lookup(ctx, "smtpd", "before"); err != nil {
			t.Fatal(err)
		}
	}

	srv.Pause()
	defer srv.Resume()
	wedged := client.New(s.Sock, client.Options{Timeout: 30 * time.Second})
	defer wedged.Close()
	start := time.Now()
	answered := make(chan error, 1)
	// Not held locally: the lookup goes to Redis and waits there.
	go func() { _, err := wedged.Lookup(ctx, "smtpd", "never-written"); answered <- err }()
	status := p.Wait(t, daemonTimeout+10*time.Second)
	took := time.Since(start)
	t.Logf("daemon exited with status %d %v after the lookup (daemon_timeout %v)", status, took, daemonTimeout)
	if status != 1 {
		t.Errorf("exit status %d, want 1:\n%s", status, p.Stderr)
	}
	// The watchdog checks every daemon_timeout/20; the rest is the
	// client's connection and a loaded machine.
	if took < daemonTimeout || took > daemonTimeout+daemonTimeout/20+time.Second {
		t.Errorf("exited %v after the lookup, daemon_timeout %v", took, daemonTimeout)
	}
	fatal := regexp.MustCompile(`tlsmgr\[\d+\]: fatal: watchdog timeout: lookup request for the smtpd cache from conn \d+ ` +
		regexp.QuoteMeta(fmt.Sprintf("(pid %d, uid %d) on %s", os.Getpid(), os.Getuid(), s.Sock)) +
		` still not done after 2\.\d+s \(daemon_timeout = 2s\): exiting`)
	if line := fatal.FindString(p.Stderr.String()); line == "" {
		t.Errorf("no fatal line naming the wedged lookup:\n%s", p.Stderr)
	} else {
		t.Logf("logged: %s", line)
	}
	select {
	case err := <-answered:
		if err == nil {
			t.Error("the wedged lookup was answered")
		}
	case <-time.After(10 * time.Second):
		t.Error("the wedged lookup's connection survived the daemon")
	}
}

// TestWatchdogOnFrozenDisk: a btree cache on an ext4 file system that is
// then frozen (fsfreeze), as a dead disk would be: commits hang in the
// kernel, updates are acknowledged while the write-behind queue has room,
// then one waits. The daemon logs the fatal error naming that update
// within daemon_timeout and a margin. The committer's thread sleeps in
// the kernel, uninterruptibly, so the process may not finish exiting
// until the file system thaws (its status is then 1); meanwhile its
// clients must not wait for it: the wedged update's connection is ended
// and the socket no longer answers.
func TestWatchdogOnFrozenDisk(t *testing.T) {
	testenv.NeedRoot(t) // to mount and freeze a file system
	for _, cmd := range []string{"mkfs.ext4", "fsfreeze", "mount", "umount"} {
		if _, err := exec.LookPath(cmd); err != nil {
			testenv.Missing(t, cmd)
		}
	}
	const daemonTimeout = 2 * time.Second
	s := newStandalone(t, fmt.Sprintf("daemon_timeout=%ds", int(daemonTimeout/time.Second)))
	img, fs := filepath.Join(s.Base, "disk.img"), filepath.Join(s.Base, "fs")
	if err := os.Mkdir(fs, 0o700); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) error {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if err := run("mkfs.ext4", "-q", "-F", img); err != nil {
		t.Fatal(err)
	}
	if err := run("mount", "-o", "loop", img, fs); err != nil {
		t.Logf("%v", err)
		testenv.Missing(t, "loop devices (mount -o loop)")
	}
	thaw := func() { exec.Command("fsfreeze", "-u", fs).Run() }
	t.Cleanup(func() {
		thaw()
		if err := unix.Unmount(fs, 0); err != nil {
			unix.Unmount(fs, unix.MNT_DETACH)
		}
	})
	if err := os.Chown(fs, s.UID, -1); err != nil {
		t.Fatal(err)
	}
	p := s.start(t, "smtpd_tls_session_cache_database=btree:"+filepath.Join(fs, "smtpd_scache"))
	t.Cleanup(thaw) // before the daemon is killed: a frozen one cannot die
	ctx := context.Background()
	c := s.client()
	defer c.Close()
	if err := c.Update(ctx, "smtpd", "before", []byte("session")); err != nil {
		t.Fatal(err)
	}

	if err := run("fsfreeze", "-f", fs); err != nil {
		t.Fatal(err)
	}
	var last atomic.Int64 // when the latest update was sent
	updates := make(chan int, 1)
	go func() {
		n := 0
		for ; ; n++ {
			last.Store(time.Now().UnixNano())
			if c.Update(ctx, "smtpd", fmt.Sprintf("frozen-%d", n), []byte("session")) != nil {
				break
			}
		}
		updates <- n
	}()
	fatal := regexp.MustCompile(`fatal: watchdog timeout: update request for the smtpd cache from conn \d+ ` +
		regexp.QuoteMeta(fmt.Sprintf("(pid %d, uid %d) on %s", os.Getpid(), os.Getuid(), s.Sock)) +
		` still not done after 2\.\d+s \(daemon_timeout = 2s\): exiting`)
	deadline := time.Now().Add(daemonTimeout + 30*time.Second)
	for !fatal.MatchString(p.Stderr.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no fatal line naming the wedged update:\n%s", p.Stderr)
		}
		time.Sleep(time.Millisecond)
	}
	took := time.Since(time.Unix(0, last.Load()))
	t.Logf("fatal line %v after the update that waits (daemon_timeout %v): %s", took, daemonTimeout, fatal.FindString(p.Stderr.String()))
	if took < daemonTimeout || took > daemonTimeout+daemonTimeout/20+time.Second {
		t.Errorf("fatal line %v after the update that waits, daemon_timeout %v", took, daemonTimeout)
	}
	select {
	case n := <-updates:
		t.Logf("%d updates acknowledged on the frozen disk before one waited", n)
	case <-time.After(5 * time.Second):
		t.Error("the wedged update's connection was not ended")
	}
	if daemontest.Announces(s.Sock) {
		t.Error("the socket still answers after the fatal error")
	}
	select {
	case <-p.Done():
		t.Logf("the daemon exited while the file system was frozen")
	case <-time.After(time.Second):
		t.Logf("the daemon is still exiting a second later, as the kernel holds its committer")
	}
	thaw()
	if status := p.Wait(t, 10*time.Second); status != 1 {
		t.Errorf("exit status %d, want 1:\n%s", status, p.Stderr)
	}
}
