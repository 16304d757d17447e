package redisconn

// Hostile replies: a fake Redis (internal/redisfake) answers go-redis's
// set-up as a server would and then sends, once, a reply that go-redis
// v9.23.0 trusts to size a slice, a map, a line or a recursion. Before
// the reply guard each of these panicked (makeslice: len out of range),
// aborted the runtime (out of memory, stack overflow), or grew a buffer
// without bound. Each case runs in a child process of the test binary, so
// that a crash is a failed subtest and not a dead test run, and the child
// caps its own stack, address space and resident memory, so that an
// unguarded run cannot take the machine's memory with it.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/settings"
	"github.com/gotlsmgr/tlsmgr/internal/redisfake"
	"github.com/gotlsmgr/tlsmgr/internal/respguard"
)

// hostileEnv names the case a child process runs.
const hostileEnv = "REDISCONN_HOSTILE_CASE"

// flood is how much an endless reply sends before giving up: 16 MiB,
// 256 times the line bound, and enough nesting (4 bytes a level) to
// overflow a 64 MiB stack many times over.
const flood = 16 << 20

type hostileCase struct {
	name string
	topo string // "single", "cluster", "sentinel" or "tracker"
	// on is the command (upper case, its first words) whose first reply
	// is hostile; "message" is an invalidation message on the tracker's
	// subscription, sent once tracking is on.
	on   string
	send func(c *redisfake.Conn) error
	why  string // in the refusal's reason
}

func raw(s string) func(*redisfake.Conn) error {
	return func(c *redisfake.Conn) error { return c.Send(s) }
}

func endless(head, unit string) func(*redisfake.Conn) error {
	return func(c *redisfake.Conn) error { return c.Flood(head, unit, flood) }
}

const (
	maxInt = "9223372036854775807" // 2^63-1: makeslice panics
	oneTiB = "1099511627776"       // 2^40: the runtime aborts out of memory
)

var hostileCases = []hostileCase{
	// A GET's reply: go-redis reads it with ReadString.
	{"bulk-2^63-1", "single", "GET HOSTILE", raw("$" + maxInt + "\r\n"), "bulk string announces more than 524288 bytes"},
	{"bulk-2^40", "single", "GET HOSTILE", raw("$" + oneTiB + "\r\n"), "bulk string announces more than 524288 bytes"},
	{"bulk-over-bound", "single", "GET HOSTILE", raw("$524289\r\n" + strings.Repeat("v", 524289) + "\r\n"), "bulk string announces more than 524288 bytes"},
	{"blob-error-2^63-1", "single", "GET HOSTILE", raw("!" + maxInt + "\r\n"), "blob error announces more than"},
	{"verbatim-2^63-1", "single", "GET HOSTILE", raw("=" + maxInt + "\r\n"), "verbatim string announces more than"},
	{"array-2^63-1", "single", "GET HOSTILE", raw("*" + maxInt + "\r\n"), "array announces more than 131072 elements"},
	{"bulk-negative", "single", "GET HOSTILE", raw("$-5\r\nhello\r\n"), "bulk string length is negative"},
	{"bulk-without-crlf", "single", "GET HOSTILE", raw("$3\r\nabcd\r\n"), "bulk string not followed by CRLF"},
	{"unknown-type", "single", "GET HOSTILE", raw("@5\r\n"), "unknown reply type '@'"},
	{"simple-string-endless", "single", "GET HOSTILE", endless("+", "a"), "simple string line longer than 65536 bytes"},
	{"error-endless", "single", "GET HOSTILE", endless("-ERR ", "e"), "error line longer than 65536 bytes"},
	{"integer-endless", "single", "GET HOSTILE", endless(":", "9"), "integer line longer than 1024 bytes"},
	{"big-number-endless", "single", "GET HOSTILE", endless("(", "9"), "big number line longer than 1024 bytes"},
	{"trickled-header", "single", "GET HOSTILE", func(c *redisfake.Conn) error { return c.Trickle("$"+maxInt+"\r\n", time.Millisecond) }, "bulk string announces more than"},
	// A RESP3 push before the reply: go-redis reads it with ReadReply.
	{"push-2^63-1", "single", "GET HOSTILE", raw(">" + maxInt + "\r\n$10\r\ninvalidate\r\n"), "push announces more than"},
	// HELLO's reply, which every new connection reads (ReadMapLen, then
	// ReadReply for each value).
	{"hello-map-2^63-1", "single", "HELLO", raw("%" + maxInt + "\r\n"), "map announces more than 65536 pairs"},
	{"hello-nested", "single", "HELLO", endless("%1\r\n$7\r\nmodules\r\n", "*1\r\n"), "aggregates nested more than 32 deep"},
	{"hello-double-endless", "single", "HELLO", endless("%1\r\n$5\r\nproto\r\n,", "1"), "double line longer than 1024 bytes"},
	{"hello-attribute-in-attribute", "single", "HELLO", raw("|1\r\n+a\r\n|1\r\n+b\r\n+c\r\n+d\r\n"), "attribute inside an attribute"},
	// The tracker's CLIENT TRACKING goes through Do, which reads with
	// ReadReply; its invalidations come as pub/sub messages (RESP2).
	{"tracking-array-2^63-1", "tracker", "CLIENT TRACKING ON", raw("*" + maxInt + "\r\n"), "array announces more than"},
	{"tracking-set-2^63-1", "tracker", "CLIENT TRACKING ON", raw("~" + maxInt + "\r\n"), "set announces more than"},
	{"tracking-push-2^40", "tracker", "CLIENT TRACKING ON", raw(">" + oneTiB + "\r\n"), "push announces more than"},
	{"invalidation-keys-2^63-1", "tracker", "message", raw("*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*" + maxInt + "\r\n"), "array announces more than"},
	{"invalidation-nested", "tracker", "message", endless("*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n", "*1\r\n"), "aggregates nested more than 32 deep"},
	// A cluster's slot map and a node's reply; a sentinel's answer and
	// the master's reply.
	{"cluster-slots-2^63-1", "cluster", "CLUSTER SLOTS", raw("*" + maxInt + "\r\n"), "array announces more than"},
	{"cluster-get-2^63-1", "cluster", "GET HOSTILE", raw("$" + maxInt + "\r\n"), "bulk string announces more than"},
	{"sentinel-master-addr-2^63-1", "sentinel", "SENTINEL GET-MASTER-ADDR-BY-NAME", raw("*" + maxInt + "\r\n"), "array announces more than"},
	{"sentinel-master-get-2^40", "sentinel", "GET HOSTILE", raw("$" + oneTiB + "\r\n"), "bulk string announces more than"},
}

// TestHostileReplies runs each case in a child process: the daemon's
// client must refuse the reply, fail that call (a miss), count and log
// the refusal, and serve the next calls, all without crashing.
func TestHostileReplies(t *testing.T) {
	if os.Getenv(hostileEnv) != "" {
		t.Skip("in a child process")
	}
	for _, hc := range hostileCases {
		t.Run(hc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHostileChild$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), hostileEnv+"="+hc.name)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "--- PASS: TestHostileChild") {
				t.Fatalf("child for %s: %v\n%s", hc.name, err, crash(out))
			}
			for _, l := range strings.Split(string(out), "\n") {
				if strings.Contains(l, "hostile_test.go") {
					t.Log(strings.TrimSpace(l))
				}
			}
		})
	}
}

// crash shortens a child's output to its first lines and, if it died, the
// start of the panic or fatal error.
func crash(out []byte) string {
	s := string(out)
	head := s[:min(len(s), 3000)]
	for _, m := range []string{"panic: ", "fatal error: ", "runtime: goroutine stack exceeds", "hostile child: "} {
		if i := strings.Index(s, m); i >= 0 {
			return head + "\n...\n" + s[i:min(len(s), i+1500)]
		}
	}
	return head
}

// TestHostileChild is one case of TestHostileReplies, in the child.
func TestHostileChild(t *testing.T) {
	name := os.Getenv(hostileEnv)
	if name == "" {
		t.Skip("runs in a child process of TestHostileReplies")
	}
	var hc hostileCase
	for _, c := range hostileCases {
		if c.name == name {
			hc = c
		}
	}
	if hc.name == "" {
		t.Fatalf("no case %q", name)
	}
	limitChild(t)
	runHostile(t, hc)
}

// limitChild keeps an unguarded client from taking the machine down: a
// 64 MiB stack (go-redis recurses once per level of nesting), an address
// space 2 GiB over what the process has (not under the race detector,
// which maps shadow memory as the heap grows), and a watchdog that stops
// the process past 1 GiB resident.
func limitChild(t *testing.T) {
	debug.SetMaxStack(64 << 20)
	debug.SetMemoryLimit(256 << 20)
	if !raceEnabled {
		if vm := procStatus("VmSize"); vm > 0 {
			lim := vm + 2<<30
			if err := syscall.Setrlimit(syscall.RLIMIT_AS, &syscall.Rlimit{Cur: lim, Max: lim}); err != nil {
				t.Fatalf("RLIMIT_AS: %v", err)
			}
		}
	}
	go func() {
		for range time.Tick(5 * time.Millisecond) {
			if rss := procStatus("VmRSS"); rss > 1<<30 {
				fmt.Fprintf(os.Stderr, "hostile child: %d MiB resident, stopping\n", rss>>20)
				os.Exit(3)
			}
		}
	}()
}

// procStatus returns a size field of /proc/self/status in bytes.
func procStatus(field string) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// hostileSettings are a client's settings for the fake; the timeout is
// long, so that an unguarded client has the time to read a flood to its
// end rather than time out first.
func hostileSettings(topo, addr string) *settings.Settings {
	s := single(addr)
	s.Timeout = 2 * time.Second
	switch topo {
	case "cluster":
		s.Cluster = true
	case "sentinel":
		s.SentinelMaster = "mymaster"
	}
	return s
}

func runHostile(t *testing.T, hc hostileCase) {
	var fired atomic.Bool
	var srv *redisfake.Server
	srv = redisfake.Start(t, func(c *redisfake.Conn, args []string) bool {
		cmd := strings.ToUpper(strings.Join(args, " "))
		switch {
		case cmd == "GET GOOD":
			c.Send(redisfake.Bulk("fine"))
			return true
		case hc.on == "message" && strings.HasPrefix(cmd, "CLIENT TRACKING ON"):
			c.Send("+OK\r\n")
			if fired.Swap(true) {
				return true
			}
			for i, a := range args {
				if strings.EqualFold(a, "REDIRECT") && i+1 < len(args) {
					id, _ := strconv.ParseInt(args[i+1], 10, 64)
					if sub := srv.Conn(id); sub != nil {
						go hc.send(sub)
					}
				}
			}
			return true
		case strings.HasPrefix(cmd, hc.on) && !fired.Swap(true):
			hc.send(c)
			return true
		}
		return false
	})
	log := &recLog{}
	c, err := newClient(hostileSettings(hc.topo, srv.Addr), log.Logger(), "smtpd", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var tr *Tracker
	switch {
	case hc.topo == "tracker":
		tr = c.Track("tlsmgr:", func([]string) {})
		defer tr.Close()
	case hc.on == "GET HOSTILE":
		// The call that reads the reply fails, in time, with the
		// refusal: the caller answers from its local cache.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		v, err := c.Redis().Get(ctx, "hostile").Result()
		cancel()
		took := time.Since(start)
		var re *respguard.Error
		if !errors.As(err, &re) || !errors.Is(err, respguard.ErrRefused) || !strings.Contains(re.Reason, hc.why) {
			t.Fatalf("GET: %.40q, %v after %v; want a refusal for %q", v, err, took, hc.why)
		}
		t.Logf("GET failed after %v: %v", took.Round(time.Millisecond), err)
	}

	// The refusal is counted and logged, whichever connection met it;
	// calls make the client connect (and a cluster load its slots).
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().RepliesRefused == 0 {
		if time.Now().After(deadline) {
			cmds := srv.Commands()
			t.Fatalf("no refusal counted; stats %+v; the fake saw %d commands, the first %q; log:\n%s", c.Stats(), len(cmds), cmds[:min(len(cmds), 10)], log)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c.Redis().Get(ctx, "good")
		cancel()
		time.Sleep(time.Millisecond)
	}
	if n := log.Count("warn", "refused: "+hc.why); n != 1 {
		t.Errorf("%d warnings of the refusal, want 1; log:\n%s", n, log)
	}

	// Then the client works: a new connection, with ordinary replies.
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		v, err := c.Redis().Get(ctx, "good").Result()
		cancel()
		on := tr == nil
		if tr != nil {
			_, on = tr.State()
		}
		if err == nil && v == "fine" && on {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client not back 10 s after the refusal: GET %q, %v, tracking on %v; stats %+v; log:\n%s", v, err, on, c.Stats(), log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := c.Stats(); st.RepliesRefused != 1 {
		t.Errorf("stats %+v, want one reply refused", st)
	}
	t.Logf("refused and back: %s", strings.Join(strings.Split(log.String(), "\n"), " | "))
}
