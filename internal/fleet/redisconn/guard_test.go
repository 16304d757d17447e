package redisconn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/settings"
	"github.com/gotlsmgr/tlsmgr/internal/metrics"
	"github.com/gotlsmgr/tlsmgr/internal/redisfake"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/respguard"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Refusals are counted one by one and logged once per refusalLogEvery,
// the next line saying how many were not.
func TestRefusalLogRateLimited(t *testing.T) {
	c, log := dial(t, single("127.0.0.1:1"), nil)
	e := &respguard.Error{Reason: "bulk string announces more than 524288 bytes", Offset: 151}
	for range 5 {
		c.replyRefused("127.0.0.1:1", e)
	}
	log.Want(t, []string{"warn", "Redis smtpd (127.0.0.1:1): reply from 127.0.0.1:1 refused: bulk string announces more than 524288 bytes, at byte 151 of the connection; connection closed, the call fails"})
	log.Elapse(refusalLogEvery)
	c.replyRefused("127.0.0.1:1", e)
	log.Want(t, []string{"warn", "refused"}, []string{"warn", "refused: bulk string", "fails (4 more refused since the last report)"})
	if st := c.Stats(); st.RepliesRefused != 6 {
		t.Errorf("stats %+v, want 6 replies refused", st)
	}
	var samples []metrics.Sample
	c.Collect(func(s metrics.Sample) { samples = append(samples, s) }, "smtpd_cache_redis_")
	var found bool
	for _, s := range samples {
		if s.Name == "redis_replies_refused" && s.Kind == metrics.CounterKind && s.StatName() == "smtpd_cache_redis_replies_refused" && s.Value == 6 &&
			len(s.Labels) == 1 && s.Labels[0] == (metrics.Label{Name: "backend", Value: "smtpd"}) {
			found = true
		}
	}
	if !found {
		t.Errorf("no counter redis_replies_refused{backend=smtpd} = 6 (stats smtpd_cache_redis_replies_refused) in %+v", samples)
	}
}

// A reply that trickles (a line that never ends, a byte every few
// milliseconds) is cut by the call's deadline like a silent server; a
// valid reply that trickles passes the guard, which follows the framing
// across reads of a byte.
func TestTrickle(t *testing.T) {
	srv := redisfake.Start(t, func(c *redisfake.Conn, args []string) bool {
		if args[0] != "GET" {
			return false
		}
		switch args[1] {
		case "slow":
			c.Trickle("$10\r\n0123456789\r\n", time.Millisecond)
		case "endless":
			c.Send("+")
			for c.Trickle("a", 2*time.Millisecond) == nil {
			}
		default:
			return false
		}
		return true
	})
	c, log := dial(t, single(srv.Addr), func(b *breakerConfig) { b.threshold = 1 << 30 })
	var lat latencies
	for range 20 {
		_, d, err := get(c, "endless")
		if err == nil || !isTimeout(err) {
			t.Fatalf("endless line: %v after %v, want a timeout", err, d)
		}
		lat = append(lat, d)
	}
	t.Logf("endless trickle: %v", lat)
	if lat.quantile(0.5) > timeout+slack {
		t.Errorf("calls on a trickle: %v with a %v timeout", lat, timeout)
	}
	// The trickled value takes longer than 10 ms.
	s := single(srv.Addr)
	s.Timeout = 5 * time.Second
	patient, plog := dial(t, s, nil)
	wantGet(t, patient, "slow", "0123456789")
	for _, x := range []*Client{c, patient} {
		if st := x.Stats(); st.RepliesRefused != 0 {
			t.Errorf("stats %+v", st)
		}
	}
	log.Want(t)
	plog.Want(t)
}

// extent is what one reply asks of the guard's bounds.
type extent struct {
	bytes, bulk, count, line, depth int
}

func (e *extent) grow(o extent) {
	e.bytes, e.bulk, e.count = max(e.bytes, o.bytes), max(e.bulk, o.bulk), max(e.count, o.count)
	e.line, e.depth = max(e.line, o.line), max(e.depth, o.depth)
}

func (e extent) String() string {
	return fmt.Sprintf("%8d bytes, bulk %6d, count %5d, line %4d, depth %2d", e.bytes, e.bulk, e.count, e.line, e.depth)
}

// readExtent reads one reply, open aggregates around it being depth.
func readExtent(r *bufio.Reader, depth int, e *extent) error {
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	e.bytes += len(line)
	body := line[1 : len(line)-2]
	n, _ := strconv.Atoi(body)
	switch line[0] {
	case '$', '!', '=':
		if n >= 0 {
			e.bulk = max(e.bulk, n)
			e.bytes += n + 2
			_, err = io.CopyN(io.Discard, r, int64(n)+2)
		}
		return err
	case '*', '~', '>', '%', '|':
		if line[0] == '%' || line[0] == '|' {
			n *= 2
		}
		e.count = max(e.count, n)
		if n > 0 {
			e.depth = max(e.depth, depth+1)
		}
		for range n {
			if err := readExtent(r, depth+1, e); err != nil {
				return err
			}
		}
		if line[0] == '|' {
			return readExtent(r, depth, e)
		}
		return nil
	}
	e.line = max(e.line, len(body))
	return nil
}

// measure sends commands on a connection of its own (HELLO 3 first for
// RESP3) and returns the extent of the largest replies.
func measure(t *testing.T, addr string, resp3 bool, cmds ...[]string) extent {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReaderSize(conn, 64<<10)
	if resp3 {
		cmds = append([][]string{{"HELLO", "3"}}, cmds...)
	}
	var all extent
	for _, args := range cmds {
		fmt.Fprintf(conn, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(conn, "$%d\r\n%s\r\n", len(a), a)
		}
		var e extent
		if err := readExtent(r, 0, &e); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		all.grow(e)
	}
	return all
}

// Real servers answer through the guard exactly as without it: every
// kind of client the daemon makes, its largest value, pipelines, SCAN,
// invalidations of thousands of keys in one message, and the big replies
// go-redis may ask for (COMMAND, CLUSTER SLOTS/SHARDS, INFO). The sizes
// the project reads are measured and must sit well within the bounds.
func TestRealServersThroughGuard(t *testing.T) {
	srv := redistest.Single(t)
	cl := redistest.Cluster(t)
	st := redistest.Sentinel(t)
	ctx := context.Background()
	// The largest value a member writes is a sealed session of 48 KiB at
	// most (Postfix's attribute limit); 64 KiB is above that.
	big := strings.Repeat("s", 64<<10)

	// Patient clients: these calls are large, and what is tested is what
	// arrives, not how fast.
	patient := func(s *settings.Settings) *settings.Settings { s.Timeout = 5 * time.Second; return s }
	c, log := dial(t, patient(single(srv.Addr)), nil)
	var invalidated atomic.Int64
	tr := c.Track("tlsmgr:", func(keys []string) { invalidated.Add(int64(len(keys))) })
	defer tr.Close()
	set(t, c, "tlsmgr:big", big)
	wantGet(t, c, "tlsmgr:big", big)
	deadline := time.Now().Add(10 * time.Second)
	for _, on := tr.State(); !on; _, on = tr.State() {
		if time.Now().After(deadline) {
			t.Fatalf("tracking not on; log:\n%s", log)
		}
		time.Sleep(time.Millisecond)
	}
	// 5000 keys changed in one pipeline: Redis batches their
	// invalidations into few messages.
	const keys = 5000
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.Redis().Pipelined(pctx, func(p redis.Pipeliner) error {
		for i := range keys {
			p.Set(pctx, fmt.Sprintf("tlsmgr:%040d", i), "v", time.Minute)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for invalidated.Load() < keys {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d invalidations; log:\n%s", invalidated.Load(), keys, log)
		}
		time.Sleep(time.Millisecond)
	}
	var scanned int
	for cursor := uint64(0); ; {
		ks, next, err := c.Redis().Scan(pctx, cursor, "tlsmgr:*", 500).Result()
		if err != nil {
			t.Fatal(err)
		}
		scanned += len(ks)
		if cursor = next; cursor == 0 {
			break
		}
	}
	if scanned < keys {
		t.Errorf("SCAN found %d keys, want %d", scanned, keys)
	}
	for _, args := range [][]any{{"COMMAND"}, {"COMMAND", "DOCS"}, {"INFO", "everything"}, {"CLIENT", "INFO"}} {
		if err := c.Redis().Do(pctx, args...).Err(); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}

	cs := single(cl.Addrs...)
	cs.Cluster = true
	cc, clog := dial(t, patient(cs), nil)
	set(t, cc, "tlsmgr:big", big)
	wantGet(t, cc, "tlsmgr:big", big)
	for _, args := range [][]any{{"CLUSTER", "SLOTS"}, {"CLUSTER", "SHARDS"}} {
		if err := cc.Redis().Do(pctx, args...).Err(); err != nil {
			t.Errorf("cluster %v: %v", args, err)
		}
	}

	ss := single(st.Addrs...)
	ss.SentinelMaster = st.MasterName
	sc, slog := dial(t, patient(ss), nil)
	set(t, sc, "tlsmgr:big", big)
	wantGet(t, sc, "tlsmgr:big", big)

	for name, x := range map[string]*Client{"single": c, "cluster": cc, "sentinel": sc} {
		if s := x.Stats(); s.RepliesRefused != 0 || s.Errors != 0 {
			t.Errorf("%s: stats %+v", name, s)
		}
	}
	log.Want(t)
	clog.Want(t)
	slog.Want(t)

	// What the project reads, measured on connections of their own.
	sentinel := st.Sentinels[0].Addr
	measured := []struct {
		what string
		e    extent
	}{
		{"HELLO 3, GET of 64 KiB", measure(t, srv.Addr, true, []string{"GET", "tlsmgr:big"})},
		{"SCAN COUNT 500", measure(t, srv.Addr, true, []string{"SCAN", "0", "MATCH", "tlsmgr:*", "COUNT", "500"})},
		{"CLIENT INFO, INFO", measure(t, srv.Addr, true, []string{"CLIENT", "INFO"}, []string{"INFO"})},
		{"invalidation of 5000 keys", invalidation(t, srv.Addr, keys)},
		{"CLUSTER SLOTS, SHARDS", measure(t, cl.Addrs[0], true, []string{"CLUSTER", "SLOTS"}, []string{"CLUSTER", "SHARDS"})},
		{"SENTINEL master, sentinels", measure(t, sentinel, false, []string{"SENTINEL", "GET-MASTER-ADDR-BY-NAME", st.MasterName}, []string{"SENTINEL", "SENTINELS", st.MasterName})},
		// Not asked by tlsmgr (routing policies are off), but go-redis
		// may ask them; they must fit, with less margin.
		{"COMMAND (not asked)", measure(t, srv.Addr, true, []string{"COMMAND"})},
		{"COMMAND DOCS (not asked)", measure(t, srv.Addr, true, []string{"COMMAND", "DOCS"})},
		{"INFO everything (not asked)", measure(t, srv.Addr, true, []string{"INFO", "everything"})},
	}
	lim := respguard.Default
	for _, m := range measured {
		t.Logf("%-28s %v", m.what, m.e)
		margin := 4
		if strings.HasSuffix(m.what, "(not asked)") {
			margin = 2
		}
		e := m.e
		if e.bytes*margin > lim.Reply || e.bulk*margin > lim.Bulk || e.count*margin > lim.Count ||
			e.line*margin > lim.Line || e.depth*margin > lim.Depth {
			t.Errorf("%s: %v is not within 1/%d of the bounds %+v", m.what, e, margin, lim)
		}
	}
}

// invalidation subscribes a RESP2 connection to invalidations, has Redis
// track the prefix for it, changes n keys in one pipeline, and returns the
// extent of the largest message.
func invalidation(t *testing.T, addr string, n int) extent {
	t.Helper()
	sub, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	sub.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(sub)
	io.WriteString(sub, "CLIENT ID\r\nSUBSCRIBE __redis__:invalidate\r\n")
	line, _ := r.ReadString('\n')
	id := strings.TrimSpace(strings.TrimPrefix(line, ":"))
	var e extent
	if err := readExtent(r, 0, &e); err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1, DisableIdentity: true, MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn := rdb.Conn()
	defer conn.Close()
	if err := conn.Do(ctx, "CLIENT", "TRACKING", "ON", "REDIRECT", id, "BCAST", "PREFIX", "tlsmgr:").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range n {
			p.Set(ctx, fmt.Sprintf("tlsmgr:%040d", i), "w", time.Minute)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var all extent
	for seen := 0; seen < n; {
		var m extent
		if err := readExtent(r, 0, &m); err != nil {
			t.Fatalf("after %d of %d invalidations: %v", seen, n, err)
		}
		seen += m.count
		all.grow(m)
	}
	return all
}

// warmUp runs GETs until the server and the machine are warm: the first
// sub-benchmark after a server's start was otherwise three times slower
// than the second, whichever it was.
func warmUp(b *testing.B, addr string) {
	rdb := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true, MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	defer rdb.Close()
	ctx := context.Background()
	rdb.Set(ctx, "bench", strings.Repeat("v", 1024), 0)
	for range 50000 {
		if err := rdb.Get(ctx, "bench").Err(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGet1KB is a GET of a 1 KB value from a real redis-server
// through go-redis with the daemon's dialer, without and with the guard:
//
//	go test -run XXX -bench Get1KB -count 10 ./internal/fleet/redisconn
func BenchmarkGet1KB(b *testing.B) {
	srv := redistest.Single(b)
	warmUp(b, srv.Addr)
	for _, guarded := range []bool{false, true} {
		name := "plain"
		if guarded {
			name = "guarded"
		}
		b.Run(name, func(b *testing.B) {
			dial := dialer(time.Second, nil)
			if guarded {
				plain := dial
				dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
					conn, err := plain(ctx, network, addr)
					if err != nil {
						return nil, err
					}
					return respguard.Wrap(conn, respguard.Default, nil), nil
				}
			}
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, Dialer: dial, PoolSize: 4, DisableIdentity: true,
				MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
			defer rdb.Close()
			ctx := context.Background()
			if err := rdb.Set(ctx, "bench", strings.Repeat("v", 1024), 0).Err(); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(1024)
			b.ResetTimer()
			for b.Loop() {
				if v, err := rdb.Get(ctx, "bench").Result(); err != nil || len(v) != 1024 {
					b.Fatal(v, err)
				}
			}
		})
	}
}

// BenchmarkGet1KBPipelined is the same with 100 GETs a round trip, where
// the guard's share of the time is largest.
func BenchmarkGet1KBPipelined(b *testing.B) {
	srv := redistest.Single(b)
	warmUp(b, srv.Addr)
	var mu sync.Mutex
	for _, guarded := range []bool{false, true} {
		name := "plain"
		if guarded {
			name = "guarded"
		}
		b.Run(name, func(b *testing.B) {
			var refusals []error
			dial := dialer(time.Second, nil)
			if guarded {
				plain := dial
				dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
					conn, err := plain(ctx, network, addr)
					if err != nil {
						return nil, err
					}
					return respguard.Wrap(conn, respguard.Default, func(e *respguard.Error) {
						mu.Lock()
						refusals = append(refusals, e)
						mu.Unlock()
					}), nil
				}
			}
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, Dialer: dial, PoolSize: 4, DisableIdentity: true,
				MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
			defer rdb.Close()
			ctx := context.Background()
			if err := rdb.Set(ctx, "bench", strings.Repeat("v", 1024), 0).Err(); err != nil {
				b.Fatal(err)
			}
			cmds := make([]*redis.StringCmd, 100)
			b.SetBytes(100 * 1024)
			b.ResetTimer()
			for b.Loop() {
				p := rdb.Pipeline()
				for i := range cmds {
					cmds[i] = p.Get(ctx, "bench")
				}
				if _, err := p.Exec(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			mu.Lock()
			defer mu.Unlock()
			if err := errors.Join(refusals...); err != nil {
				b.Fatal(err)
			}
		})
	}
}
