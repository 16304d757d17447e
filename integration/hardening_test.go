package integration

// Hostile clients against the real daemon: a flood of bad input, a full
// client table, a full disk. What must hold: the log stays bounded,
// nobody is locked out, and nothing is lost silently.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// TestLogFloodBounded sends 1 MiB of requests that each deserve a warning
// (unknown request names, bad cache types, garbage that ends connections)
// over many connections. The log gets a bounded number of lines, the
// suppressed ones are counted in stats, and a good client is served
// throughout.
func TestLogFloodBounded(t *testing.T) {
	s := newStandalone(t)
	p := s.start(t)
	bad := [][]byte{
		[]byte(attr.Encode("request", "bogus")),
		[]byte(attr.Encode("request", "lookup", "cache_type", "nosuch", "cache_id", "x")),
		[]byte("\x00\x00"),
	}
	const total = 1 << 20
	var sent int
	var wg sync.WaitGroup
	var mu sync.Mutex
	for conn := 0; sent < total; conn++ {
		var req bytes.Buffer
		for req.Len() < 16<<10 {
			req.Write(bad[conn%len(bad)])
		}
		req.WriteString("request\x00trunc") // the connection ends mid-request
		sent += req.Len()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("unix", s.Sock)
			if err != nil {
				mu.Lock()
				t.Error(err)
				mu.Unlock()
				return
			}
			defer c.Close()
			go func() { c.Write(req.Bytes()); c.(*net.UnixConn).CloseWrite() }()
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			var sink [4096]byte
			for {
				if _, err := c.Read(sink[:]); err != nil {
					return
				}
			}
		}()
		if conn%16 == 15 {
			wg.Wait() // stay well under the client limit
		}
		if conn%4 == 0 {
			c := s.client()
			_, err := c.Seed(context.Background(), 16)
			c.Close()
			if err != nil {
				t.Fatalf("good client during the flood: %v", err)
			}
		}
	}
	wg.Wait()
	st := s.stats(t)
	lines := strings.Count(p.Stderr.String(), "\n")
	// Five causes at most (three kinds of bad request, the cut request, and
	// the listening line), each 10 lines plus one per 10 s of the test.
	if lines > 80 {
		t.Errorf("%d log lines for 1 MiB of bad input, want at most 80", lines)
	}
	if n := statInt(t, st, "log_warnings_suppressed"); n < 10000 {
		t.Errorf("log_warnings_suppressed = %d, want the flood counted", n)
	}
	t.Logf("%d bytes of bad input: %d log lines, %s suppressed", sent, lines, st["log_warnings_suppressed"])
}

// dialAnnounced connects to sock and reads the protocol announcement, so
// the daemon has taken the connection into its table.
func dialAnnounced(t *testing.T, sock string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var buf [len(proto.Announcement)]byte
	if _, err := io.ReadFull(c, buf[:]); err != nil {
		c.Close()
		t.Fatalf("announcement: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	return c
}

// threads is the number of OS threads of process pid.
func threads(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads line")
	return 0
}

// TestClientTableAtItsMaximum fills a client table larger than the Go
// runtime's 10000-thread limit, which once killed the daemon ("thread
// exhaustion"): it must hold every connection with a bounded number of
// threads, and serve a new client and tlsmgrctl stats on top.
func TestClientTableAtItsMaximum(t *testing.T) {
	const clients = 12000
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur < clients+500 {
		testenv.Missing(t, fmt.Sprintf("RLIMIT_NOFILE of %d (it is %d)", clients+500, rl.Cur))
	}
	s := newStandalone(t)
	p := s.start(t, fmt.Sprintf("tlsmgr_client_limit=%d", clients))
	conns := make([]net.Conn, 0, clients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range clients {
		conns = append(conns, dialAnnounced(t, s.Sock))
	}
	if n := threads(t, p.Cmd.Process.Pid); n > 400 {
		t.Errorf("%d threads for %d idle clients, want a bound independent of the client count", n, clients)
	}
	// The table is full: a new client evicts the one idle longest.
	c := s.client()
	defer c.Close()
	if _, err := c.Seed(context.Background(), 32); err != nil {
		t.Fatalf("seed with the table full: %v", err)
	}
	out, err := exec.Command(tlsmgrctlBin, "-s", s.Sock, "stats").CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^connections_evicted +[0-9]+$`).MatchString(string(out)) {
		t.Fatalf("tlsmgrctl stats with the table full: %v\n%s", err, out)
	}
	// Every connection still open is served, the evicted ones see EOF.
	served, evicted := 0, 0
	req := []byte(attr.Encode("request", "seed", "size", "16"))
	for _, c := range conns[:200] {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(req); err != nil {
			evicted++
			continue
		}
		var b [64]byte
		if _, err := c.Read(b[:]); err != nil {
			evicted++
			continue
		}
		served++
	}
	if evicted == 0 || served == 0 {
		t.Errorf("of the 200 oldest connections %d were served and %d evicted; want both", served, evicted)
	}
	select {
	case <-p.Done():
		t.Fatalf("daemon died:\n%s", p.Stderr)
	default:
	}
	p.Stop(t)
}

// TestIdleAndSlowClientsCannotLockOut: idle connections and connections
// dripping a byte at a time hold every slot; a good client and tlsmgrctl
// stats are served all the same, and the slow ones are closed within the
// request bound.
func TestIdleAndSlowClientsCannotLockOut(t *testing.T) {
	s := newStandalone(t)
	p := s.start(t, "tlsmgr_client_limit=20", "ipc_timeout=1h")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 10 {
		conns = append(conns, dialAnnounced(t, s.Sock))
	}
	stop := make(chan struct{})
	var drips sync.WaitGroup
	slowClosed := make(chan time.Duration, 10)
	for range 10 {
		c := dialAnnounced(t, s.Sock)
		conns = append(conns, c)
		drips.Add(1)
		go func() {
			defer drips.Done()
			start := time.Now()
			req := []byte(attr.Encode("request", "seed", "size", "16"))
			for i := 0; ; i = (i + 1) % len(req) {
				select {
				case <-stop:
					return
				case <-time.After(700 * time.Millisecond): // 17 s a request
				}
				if _, err := c.Write(req[i : i+1]); err != nil {
					slowClosed <- time.Since(start)
					return
				}
			}
		}()
	}
	for i := range 20 {
		c := s.client()
		_, err := c.Seed(context.Background(), 16)
		c.Close()
		if err != nil {
			t.Fatalf("good client %d locked out: %v", i, err)
		}
		out, err := exec.Command(tlsmgrctlBin, "-s", s.Sock, "-timeout", "5s", "stats").CombinedOutput()
		if err != nil {
			t.Fatalf("tlsmgrctl stats locked out: %v\n%s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A request must arrive whole within 10 s: the drips are cut off.
	deadline := time.After(40 * time.Second)
	for closed := 0; closed < 10; closed++ {
		select {
		case d := <-slowClosed:
			if d > 35*time.Second {
				t.Errorf("a slow client was closed only after %v", d)
			}
		case <-deadline:
			t.Fatalf("only %d of 10 slow-drip clients closed in 40 s", closed)
		}
	}
	close(stop)
	drips.Wait()
	st := s.stats(t)
	if statInt(t, st, "requests_timed_out") == 0 && statInt(t, st, "connections_evicted") == 0 {
		t.Errorf("neither timeouts nor evictions counted: %v", st)
	}
	p.Stop(t)
}

// TestFullDiskAcknowledgementsCounted is the report's case through the
// real daemon: a btree cache on a 2 MB file system, 3000 updates of 1 KB.
// Every update answered 0 is found by a lookup, every other one was
// answered -1 and is counted, and once space returns the daemon accepts
// updates again by itself.
func TestFullDiskAcknowledgementsCounted(t *testing.T) {
	testenv.NeedRoot(t) // to mount a tmpfs
	s := newStandalone(t)
	fs := filepath.Join(s.Base, "fs")
	if err := os.Mkdir(fs, 0o700); err != nil {
		t.Fatal(err)
	}
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	opts := fmt.Sprintf("size=2m,mode=0700,uid=%d", s.UID)
	if err := unix.Mount("tmpfs", fs, "tmpfs", flags, opts); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	defer func() {
		if err := unix.Unmount(fs, 0); err != nil {
			unix.Unmount(fs, unix.MNT_DETACH)
		}
	}()
	p := s.start(t, "smtpd_tls_session_cache_database=btree:"+filepath.Join(fs, "smtpd_scache"))
	c := s.client()
	defer c.Close()
	ctx := context.Background()
	session := func(i int) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 512) }
	var acked, refused []string
	for i := range 3000 {
		id := fmt.Sprintf("id-%04d", i)
		switch err := c.Update(ctx, "smtpd", id, session(i)); {
		case err == nil:
			acked = append(acked, id)
		case errors.Is(err, client.ErrNotFound): // status -1
			refused = append(refused, id)
		default:
			t.Fatalf("update %s: %v", id, err)
		}
	}
	if len(refused) == 0 {
		t.Fatalf("all 3000 updates acknowledged on a 2 MB file system")
	}
	for _, id := range acked {
		got, err := c.Lookup(ctx, "smtpd", id)
		var i int
		fmt.Sscanf(id, "id-%d", &i)
		if err != nil || !bytes.Equal(got, session(i)) {
			t.Fatalf("acknowledged update %s is gone (%v) while the disk is full", id, err)
		}
	}
	st := s.stats(t)
	if n := statInt(t, st, "smtpd_cache_writes_refused"); n != int64(len(refused)) {
		t.Errorf("smtpd_cache_writes_refused = %d, want %d (the updates answered -1)", n, len(refused))
	}
	if n := statInt(t, st, "smtpd_cache_store_errors"); n < int64(len(refused)) {
		t.Errorf("smtpd_cache_store_errors = %d, want at least %d", n, len(refused))
	}
	if n := statInt(t, st, "smtpd_cache_writes_lost"); n != 0 {
		t.Errorf("smtpd_cache_writes_lost = %d while the daemon runs", n)
	}
	if statInt(t, st, "smtpd_cache_store_failing") != 1 {
		t.Errorf("store_failing not set: %v", st)
	}
	if _, err := c.Seed(ctx, 32); err != nil {
		t.Errorf("seed while the disk is full: %v", err)
	}
	if !strings.Contains(p.Stderr.String(), "no space left on device") {
		t.Errorf("the log does not say why:\n%s", p.Stderr)
	}
	t.Logf("%d acknowledged, %d refused", len(acked), len(refused))

	if err := unix.Mount("tmpfs", fs, "tmpfs", flags|unix.MS_REMOUNT, "size=64m"); err != nil {
		t.Fatalf("enlarge tmpfs: %v", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for statInt(t, s.stats(t), "smtpd_cache_store_failing") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no recovery 60 s after space returned:\n%s", p.Stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := c.Update(ctx, "smtpd", "after", session(1)); err != nil {
		t.Fatalf("update after recovery: %v", err)
	}
	p.Stop(t)
	// Everything acknowledged was committed by the clean stop.
	p = s.start(t, "smtpd_tls_session_cache_database=btree:"+filepath.Join(fs, "smtpd_scache"))
	c2 := s.client()
	defer c2.Close()
	for _, id := range append(acked, "after") {
		if _, err := c2.Lookup(ctx, "smtpd", id); err != nil {
			t.Fatalf("acknowledged %s missing after restart: %v", id, err)
		}
	}
	p.Stop(t)
}
