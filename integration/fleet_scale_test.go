package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// TestFleetFlushAndDumpAtScale: dump and flush of a shared cache finish
// whatever its size, batch by batch, each batch under Redis's own
// deadline (20ms here), not under one request's.
func TestFleetFlushAndDumpAtScale(t *testing.T) {
	const entries = 20000
	srv := redistest.Single(t)
	cf := fleetSettings(t, []string{srv.Addr})
	m := newStandalone(t, "smtpd_tls_session_cache_database=redis:"+cf)
	p := m.start(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := m.client()
			defer c.Close()
			for i := w; i < entries; i += 8 {
				if err := c.Update(ctx, "smtpd", fmt.Sprintf("%064x&s=smtpd", i), []byte("a session of a realistic size..................................................")); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("fill: %v", err)
	}
	// The updates are written behind, and on a loaded machine some may
	// find the queue full and stay local (counted): wait until Redis
	// holds what it will, and go by that.
	var held int64
	for stable := 0; stable < 5; time.Sleep(100 * time.Millisecond) {
		n, err := srv.Client(t).DBSize(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == held {
			stable++
		} else {
			held, stable = n, 0
		}
	}
	if held < entries*3/4 {
		t.Fatalf("Redis holds %d of %d entries", held, entries)
	}

	run := func(args ...string) string {
		t.Helper()
		start := time.Now()
		out, err := exec.Command(tlsmgrctlBin, append([]string{"-s", m.Sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tlsmgrctl %v after %v: %v\n%s\n%s", args, time.Since(start), err, out, p.Stderr)
		}
		t.Logf("tlsmgrctl %v: %v", args, time.Since(start).Round(time.Millisecond))
		return string(out)
	}
	out := run("dump", "smtpd", "-n", "10")
	if m := regexp.MustCompile(`# smtpd cache: (\d+) entries, 10 listed`).FindStringSubmatch(out); m == nil || m[1] != strconv.FormatInt(held, 10) {
		t.Errorf("dump: %.300s", out)
	}
	out = run("flush", "smtpd")
	if want := fmt.Sprintf("smtpd cache: %d entries removed\n", held); out != want {
		t.Errorf("flush: %q, want %q", out, want)
	}
	if n, _ := srv.Client(t).DBSize(ctx).Result(); n != 0 {
		t.Errorf("Redis still holds %d keys after the flush", n)
	}
}

// TestFleetSettingsChangeNeedsRestart: a seal key added to the key file,
// then SIGHUP, is named as needing a restart, not passed over as "nothing
// changed"; a SIGHUP with the files unchanged says nothing of them.
func TestFleetSettingsChangeNeedsRestart(t *testing.T) {
	srv := redistest.Single(t)
	cf := fleetSettings(t, []string{srv.Addr})
	m := newStandalone(t, "smtpd_tls_session_cache_database=redis:"+cf)
	// The daemon, the mail owner by then, reads main.cf again and looks
	// at the files, as it could in /etc/postfix.
	for _, dir := range []string{m.Cfg, filepath.Dir(cf)} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p := m.start(t)
	hup := func() {
		t.Helper()
		if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	hup()
	waitLogCount(t, p, "reload", 1)
	if strings.Contains(p.Stderr.String(), "changed since start-up") {
		t.Fatalf("unchanged settings reported as changed:\n%s", p.Stderr)
	}
	keyFile := filepath.Join(filepath.Dir(cf), "seal.key")
	old, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	// A new current key, the old one kept for opening.
	if err := os.WriteFile(keyFile, append([]byte(strings.Repeat("5a", 32)+"\n"), old...), 0o600); err != nil {
		t.Fatal(err)
	}
	hup()
	want := "changed since start-up: " + keyFile + "; that needs a restart"
	waitLogCount(t, p, "reload", 2)
	if !strings.Contains(p.Stderr.String(), want) {
		t.Errorf("no warning %q:\n%s", want, p.Stderr)
	}
}
