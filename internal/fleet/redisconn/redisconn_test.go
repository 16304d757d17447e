package redisconn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/settings"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
	"github.com/gotlsmgr/tlsmgr/internal/testlog"
	"github.com/redis/go-redis/v9"
)

const timeout = 10 * time.Millisecond

// slack is what the assertions allow past the deadline on a loaded 2-core
// machine under the race detector; the real figures are logged.
const slack = 20 * time.Millisecond

type recLog = testlog.Recorder

func single(addrs ...string) *settings.Settings {
	return &settings.Settings{Path: "/etc/postfix/tlsmgr-redis.cf", Servers: addrs, Timeout: timeout, KeyPrefix: settings.DefaultKeyPrefix}
}

func dial(t *testing.T, s *settings.Settings, tune func(*breakerConfig)) (*Client, *recLog) {
	t.Helper()
	log := &recLog{}
	c, err := newClient(s, log.Logger(), "smtpd", tune)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, log
}

// get is one call as the stores will make it.
func get(c *Client, key string) (string, time.Duration, error) {
	ctx, cancel := c.WithTimeout(context.Background())
	defer cancel()
	start := time.Now()
	v, err := c.Redis().Get(ctx, key).Result()
	return v, time.Since(start), err
}

// patiently makes a set-up call until it succeeds. A longer context does
// not lift the client's own socket deadline (the 10ms of the settings),
// which a healthy server on a loaded machine misses now and then (a CI
// run at load 17 failed TestClusterNodePaused in its set-up so): set-up
// is not what is measured, so it tries again, for up to 10 s, after a
// timeout or while a breaker that this opened is waited out. Any other
// failure is reported at once.
func patiently(t *testing.T, what string, call func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		err := call(ctx)
		d := time.Since(start)
		cancel()
		if err == nil {
			return
		}
		if !isTimeout(err) && !errors.Is(err, ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("%s: %v after %v", what, err, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func set(t *testing.T, c *Client, key, val string) {
	t.Helper()
	patiently(t, "SET "+key, func(ctx context.Context) error {
		return c.Redis().Set(ctx, key, val, time.Minute).Err()
	})
}

// wantGet checks a value with a set-up's patience: a loaded machine must
// not turn a correctness check into a timeout (get measures deadlines).
// A wrong value or a miss fails at once.
func wantGet(t *testing.T, c *Client, key, want string) {
	t.Helper()
	var v string
	patiently(t, "GET "+key, func(ctx context.Context) (err error) {
		v, err = c.Redis().Get(ctx, key).Result()
		return err
	})
	if v != want {
		t.Fatalf("GET %s = %q; want %q", key, v, want)
	}
}

// statsSince returns the counters of st less those of base: what a test's
// measured part did, whatever its set-up had to retry.
func statsSince(st, base Stats) Stats {
	st.Ops -= base.Ops
	st.Errors -= base.Errors
	st.Timeouts -= base.Timeouts
	st.Refused -= base.Refused
	st.BreakerOpens -= base.BreakerOpens
	st.RepliesRefused -= base.RepliesRefused
	return st
}

// latencies gathers call durations for the log and the assertions.
type latencies []time.Duration

func (l latencies) max() time.Duration { return slices.Max(l) }
func (l latencies) quantile(q float64) time.Duration {
	s := slices.Clone(l)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}
func (l latencies) String() string {
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v", len(l), l.quantile(0.5), l.quantile(0.99), l.max())
}

// lateness is the machine's measured wake-up lateness (testenv.Lateness),
// with the bound this package's calls get past their deadline.
type lateness struct{ *testenv.Lateness }

func watchLateness(t *testing.T) *lateness { return &lateness{testenv.WatchLateness(t)} }

// late is the worst lateness seen so far.
func (l *lateness) late() time.Duration { return l.Late() }

// slack is what a bound on a call's duration allows past its deadline.
func (l *lateness) slack() time.Duration { return slack + l.Late() }

// untilUp drives calls, paced by a ticker as traffic would be, until one
// succeeds, checking that every call returns in time; it returns how long
// that took.
func untilUp(t *testing.T, l *lateness, c *Client, key string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		_, d, err := get(c, key)
		if d > timeout+l.slack() {
			t.Fatalf("a call took %v (err %v)", d, err)
		}
		if err == nil || errors.Is(err, redis.Nil) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("still failing after %v: %v; stats %+v", limit, err, c.Stats())
		}
	}
	panic("unreachable")
}

func TestNewRejects(t *testing.T) {
	for _, c := range []struct {
		mod  func(*settings.Settings)
		want string
	}{
		{func(s *settings.Settings) { s.Servers = nil }, "no servers"},
		{func(s *settings.Settings) { s.Servers = []string{"a:1", "b:1"} }, "several servers"},
		{func(s *settings.Settings) { s.SentinelMaster, s.Cluster = "m", true }, "cannot be combined"},
		{func(s *settings.Settings) { s.Cluster, s.Database = true, 2 }, "database 0"},
		{func(s *settings.Settings) { s.TLSCAFile = "/x.pem" }, "without tls"},
		{func(s *settings.Settings) {
			s.TLS, s.TLSCAFile, s.TLSCA = true, "/x.pem", []byte("not a certificate\n")
		}, "tls_ca_file /x.pem: no PEM certificate"},
	} {
		s := single("127.0.0.1:1")
		c.mod(s)
		_, err := New(s, (&recLog{}).Logger(), "smtpd")
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), s.Path+": ") {
			t.Errorf("%+v: error %v, want one naming %s and saying %q", s, err, s.Path, c.want)
		}
	}
	if _, err := New(nil, (&recLog{}).Logger(), "x"); err == nil {
		t.Error("New(nil) succeeded")
	}
}

// The client type follows the settings, not NewUniversalClient's count of
// addresses, and the options that bound every call are in place.
func TestClientOptions(t *testing.T) {
	c, _ := dial(t, single("127.0.0.1:1"), nil)
	rc, ok := c.Redis().(*redis.Client)
	if !ok {
		t.Fatalf("single server: %T", c.Redis())
	}
	o := rc.Options()
	if !o.ContextTimeoutEnabled || o.MaxRetries != 0 || o.ReadTimeout != timeout || o.WriteTimeout != timeout ||
		o.PoolTimeout != timeout || o.DialerRetries != 1 || o.Limiter != nil || o.PoolSize != poolSize ||
		o.MinIdleConns != minIdleConns || o.DialTimeout < timeout {
		t.Errorf("single server options: %+v", o)
	}

	s := single("127.0.0.1:1")
	s.Cluster = true // one seed: NewUniversalClient alone would make a plain client
	c, _ = dial(t, s, nil)
	cc, ok := c.Redis().(*redis.ClusterClient)
	if !ok {
		t.Fatalf("cluster with one seed: %T", c.Redis())
	}
	co := cc.Options()
	if !co.ContextTimeoutEnabled || co.MaxRetries != -1 || !co.DisableRoutingPolicies || co.ReadTimeout != timeout ||
		co.PoolTimeout != timeout || co.NewClient == nil {
		t.Errorf("cluster options: %+v", co)
	}

	s = single("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
	s.SentinelMaster = "mymaster"
	c, _ = dial(t, s, nil)
	fc, ok := c.Redis().(*redis.Client)
	if !ok || fc.Options().Addr != "FailoverClient" {
		t.Fatalf("sentinel: %T", c.Redis())
	}
	if fo := fc.Options(); !fo.ContextTimeoutEnabled || fo.MaxRetries != 0 || fo.ReadTimeout != timeout {
		t.Errorf("sentinel options: %+v", fo)
	}
	if c.Timeout() != timeout {
		t.Errorf("Timeout() = %v", c.Timeout())
	}
}

func writeCA(t *testing.T) (string, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p, cert
}

func TestTLSConfig(t *testing.T) {
	s := single("127.0.0.1:1")
	if conf, err := tlsConfig(s); conf != nil || err != nil {
		t.Fatalf("tls = no: %v, %v", conf, err)
	}
	s.TLS = true
	conf, err := tlsConfig(s)
	sys, _ := x509.SystemCertPool()
	if err != nil || conf == nil || !conf.RootCAs.Equal(sys) || conf.MinVersion != tls.VersionTLS12 {
		t.Fatalf("tls = yes without CA file: %+v, %v; want system roots, TLS 1.2 at least", conf, err)
	}
	p, ca := writeCA(t)
	s.TLSCAFile, s.TLSCA = p, readFile(t, p)
	// The pool is made of the bytes read at load time: the file is not
	// opened again.
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	conf, err = tlsConfig(s)
	if err != nil {
		t.Fatal(err)
	}
	want := x509.NewCertPool()
	want.AddCert(ca)
	if !conf.RootCAs.Equal(want) || conf.ServerName != "" || conf.InsecureSkipVerify {
		t.Fatalf("with CA file: %+v", conf)
	}
	s.TLSCAFile, s.TLSCA = filepath.Join(t.TempDir(), "junk.pem"), []byte("not a certificate\n")
	if _, err := tlsConfig(s); err == nil || err.Error() != "tls_ca_file "+s.TLSCAFile+": no PEM certificate" {
		t.Fatalf("junk CA file: %v", err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// tls_ca_file is read once, by settings.Load: a file put in its place
// afterwards, or its removal, does not change the roots the client
// trusts.
func TestTLSConfigUsesLoadedCA(t *testing.T) {
	dir := t.TempDir()
	caPath, ca := writeCA(t)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, readFile(t, caPath), 0o644); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "seal.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("5a", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cf := filepath.Join(dir, "tlsmgr-redis.cf")
	text := "servers = 127.0.0.1:1\ntls = yes\ntls_ca_file = " + caFile + "\nseal_key_file = " + keyFile + "\n"
	if err := os.WriteFile(cf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{caFile, cf} {
		os.Chmod(p, 0o644) // past the umask
	}
	s, err := settings.Load(cf, os.Geteuid())
	if err != nil {
		t.Fatal(err)
	}

	// Another CA renamed over the file.
	otherPath, _ := writeCA(t)
	if err := os.Rename(otherPath, caFile); err != nil {
		t.Fatal(err)
	}
	want := x509.NewCertPool()
	want.AddCert(ca)
	conf, err := tlsConfig(s)
	if err != nil || !conf.RootCAs.Equal(want) {
		t.Fatalf("CA file replaced after loading: %v; the pool is not the loaded CA's", err)
	}
	// And no file at all.
	if err := os.Remove(caFile); err != nil {
		t.Fatal(err)
	}
	dial(t, s, nil) // New succeeds
	if conf, err := tlsConfig(s); err != nil || !conf.RootCAs.Equal(want) {
		t.Fatalf("CA file removed after loading: %v; the pool is not the loaded CA's", err)
	}
}

func TestTLSServer(t *testing.T) {
	srv := redistest.SingleTLS(t)
	s := single(srv.Addr)
	s.TLS, s.TLSCAFile, s.TLSCA = true, srv.CAFile, readFile(t, srv.CAFile)
	// What is checked is TLS, and that nothing is logged: a loaded machine
	// must not make a call miss 10ms and log an outage.
	s.Timeout = time.Second
	c, log := dial(t, s, nil)
	set(t, c, "k", "v")
	wantGet(t, c, "k", "v")
	log.Want(t)

	// Without the CA the certificate is refused: an outage, reported once.
	s.Timeout = timeout
	s.TLSCAFile, s.TLSCA = "", nil
	c, log = dial(t, s, nil)
	for c.Stats().State == StateUp {
		if _, _, err := get(c, "k"); err == nil {
			t.Fatal("GET succeeded with an untrusted certificate")
		}
	}
	log.Want(t, []string{"warn", "unavailable", "certificate"})
}

func TestSingleOps(t *testing.T) {
	srv := redistest.Single(t)
	// What is counted, not deadlines: a loaded machine must not turn a
	// call into a timeout.
	s := single(srv.Addr)
	s.Timeout = time.Second
	c, log := dial(t, s, nil)
	set(t, c, "k", "v")
	wantGet(t, c, "k", "v")
	if _, _, err := get(c, "missing"); err != redis.Nil {
		t.Fatalf("miss: %v", err)
	}
	ctx, cancel := c.WithTimeout(context.Background())
	defer cancel()
	if err := c.Redis().HSet(ctx, "k", "f", "v").Err(); err == nil || !strings.HasPrefix(err.Error(), "WRONGTYPE") {
		t.Fatalf("HSET on a string: %v", err)
	}
	// A pipeline is one call.
	cmds, err := c.Redis().Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Get(ctx, "k")
		p.Get(ctx, "missing")
		return nil
	})
	if err != redis.Nil || cmds[0].(*redis.StringCmd).Val() != "v" {
		t.Fatalf("pipeline: %v %v", cmds, err)
	}
	// Three WRONGTYPE replies in a row are answers, not an outage.
	for range 3 {
		c.Redis().HGet(ctx, "k", "f")
	}
	st := c.Stats()
	want := Stats{State: StateUp, Ops: 8, Errors: 4}
	if st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
	log.Want(t)
}

func paused(t *testing.T, srv *redistest.Server) {
	srv.Pause()
	// A test that fails while the server is paused leaves it resumed for
	// the other cleanups; resuming a running server does nothing.
	t.Cleanup(srv.Resume)
}

// With the breaker kept closed, every call to a paused server fails by
// its deadline: sequential calls, and concurrent ones beyond the pool size.
func TestPausedServerDeadline(t *testing.T) {
	l := watchLateness(t)
	srv := redistest.Single(t)
	c, log := dial(t, single(srv.Addr), func(b *breakerConfig) { b.threshold = 1 << 30 })
	set(t, c, "k", "v")
	base := c.Stats()
	srv.Pause()

	var seq latencies
	for range 200 {
		_, d, err := get(c, "k")
		if err == nil {
			t.Fatal("GET on a paused server succeeded")
		}
		seq = append(seq, d)
	}
	t.Logf("paused, sequential: %v", seq)

	// More callers than connections: some wait for the pool.
	const burst = poolSize + poolSize/4
	var mu sync.Mutex
	var conc latencies
	var wg sync.WaitGroup
	for range burst {
		wg.Go(func() {
			for range 3 {
				_, d, err := get(c, "k")
				mu.Lock()
				conc = append(conc, d)
				mu.Unlock()
				if err == nil {
					t.Error("GET on a paused server succeeded")
				}
			}
		})
	}
	wg.Wait()
	t.Logf("paused, %d concurrent: %v", burst, conc)
	if seq.max() > timeout+l.slack() {
		t.Errorf("a call took %v with a %v timeout", seq.max(), timeout)
	}
	// In a burst every goroutine wakes at the deadline at once and closes
	// its connection: on two cores under the race detector that queues
	// some for the CPU, and far more when other tests share the cores (CI
	// runs packages side by side): the tail then measures the scheduler,
	// not us (70 ms has been seen). The median still shows that callers
	// waiting for the pool stop at their own deadline, and the maximum
	// catches anything chained (retries, dials); the sequential calls
	// above hold the tight bound.
	if conc.quantile(0.5) > timeout+l.slack() || conc.max() > 250*time.Millisecond+l.late() {
		t.Errorf("burst: %v with a %v timeout", conc, timeout)
	}
	st := statsSince(c.Stats(), base)
	if st.Timeouts != st.Errors || st.Errors != uint64(len(seq)+len(conc)) || st.State != StateUp {
		t.Errorf("stats %+v after %d timed-out calls", st, len(seq)+len(conc))
	}

	srv.Resume()
	untilUp(t, l, c, "k", 5*time.Second)
	wantGet(t, c, "k", "v")
	log.Want(t)
}

func TestBreakerOnPausedServer(t *testing.T) {
	l := watchLateness(t)
	srv := redistest.Single(t)
	c, log := dial(t, single(srv.Addr), nil)
	set(t, c, "k", "v")
	wantGet(t, c, "k", "v")
	base := c.Stats()
	log.Reset()
	paused(t, srv)

	var before latencies
	for c.Stats().State == StateUp {
		_, d, err := get(c, "k")
		if err == nil {
			t.Fatal("GET on a paused server succeeded")
		}
		before = append(before, d)
	}
	t.Logf("paused, before the breaker opened: %v", before)
	if len(before) != 3 || before.max() > timeout+l.slack() {
		t.Errorf("breaker opened after %d calls (want 3), slowest %v", len(before), before.max())
	}

	// Open: refused at once, and without touching the pool.
	pool := *c.Redis().PoolStats()
	var after latencies
	for range 200 {
		_, d, err := get(c, "k")
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("breaker open: %v, want ErrUnavailable", err)
		}
		after = append(after, d)
	}
	t.Logf("paused, breaker open: %v", after)
	if after.quantile(0.99) > timeout/2+l.late() || after.max() > l.slack() {
		t.Errorf("refusals too slow: %v", after)
	}
	if now := *c.Redis().PoolStats(); now.Hits != pool.Hits || now.Misses != pool.Misses || now.Timeouts != pool.Timeouts {
		t.Errorf("refused calls used the pool: %+v then %+v", pool, now)
	}

	// A probe against the still paused server fails in time and keeps it
	// down, with a longer back-off and no second warning.
	b := c.breaker("")
	first := time.Duration(b.until.Load()) - b.now()
	time.Sleep(first)
	_, d, err := get(c, "k")
	if err == nil || errors.Is(err, ErrUnavailable) || d > timeout+l.slack() {
		t.Fatalf("probe: %v after %v; want a timeout within %v", err, d, timeout+l.slack())
	}
	if st := statsSince(c.Stats(), base); st.State != StateDown || st.BreakerOpens != 1 {
		t.Fatalf("after a failed probe: %+v", st)
	}
	log.Want(t, []string{"warn", "Redis smtpd (" + srv.Addr + "): unavailable: ", "timeout", "serving from the local cache"})

	srv.Resume()
	due := time.Duration(b.until.Load()) - b.now()
	took := untilUp(t, l, c, "k", 10*time.Second)
	t.Logf("back up %v after Resume; next probe was due in %v", took, due)
	if took > due+l.slack()+10*time.Millisecond {
		t.Errorf("up %v after Resume, the probe was due in %v", took, due)
	}
	wantGet(t, c, "k", "v")
	log.Want(t,
		[]string{"warn", "unavailable"},
		[]string{"info", "Redis smtpd (" + srv.Addr + "): available again after "})
	st := statsSince(c.Stats(), base)
	if st.State != StateUp || st.BreakerOpens != 1 || st.Timeouts < 4 || st.Refused < 200 {
		t.Errorf("stats after the outage: %+v", st)
	}
}

// A stopped server refuses connections: the calls fail at once, and the
// client comes back by itself when the server is restarted.
func TestStoppedServer(t *testing.T) {
	l := watchLateness(t)
	srv := redistest.Single(t)
	c, log := dial(t, single(srv.Addr), nil)
	set(t, c, "k", "v")
	log.Reset()
	srv.Stop()
	var lat latencies
	for c.Stats().State == StateUp {
		_, d, err := get(c, "k")
		if err == nil {
			t.Fatal("GET on a stopped server succeeded")
		}
		lat = append(lat, d)
	}
	t.Logf("stopped server, before the breaker opened: %v", lat)
	if lat.max() > timeout+l.slack() {
		t.Errorf("a call took %v", lat.max())
	}
	srv.Restart()
	untilUp(t, l, c, "k", 10*time.Second)
	set(t, c, "k", "w")
	wantGet(t, c, "k", "w")
	log.Want(t, []string{"warn", "unavailable"}, []string{"info", "available again"})
}

func TestAuthentication(t *testing.T) {
	l := watchLateness(t)
	const pw = "pw-9f2c1e"
	srv := redistest.Single(t, redistest.WithConfig(
		"requirepass "+pw,
		"user tlsmgr on >"+pw+"-user ~tlsmgr:* +@all",
	))

	s := single(srv.Addr)
	s.Password = pw
	// Good passwords work and log nothing, however loaded the machine.
	s.Timeout = time.Second
	c, log := dial(t, s, nil)
	set(t, c, "k", "v")

	s.Username, s.Password = "tlsmgr", pw+"-user"
	c, log = dial(t, s, nil)
	set(t, c, "tlsmgr:k", "v")
	wantGet(t, c, "tlsmgr:k", "v")
	log.Want(t)

	// A wrong password is an outage with its cause, within the deadline,
	// and never logged.
	s.Timeout = timeout
	s.Username, s.Password = "", pw+"-wrong"
	c, log = dial(t, s, nil)
	for c.Stats().State == StateUp {
		if _, d, err := get(c, "k"); err == nil || d > timeout+l.slack() {
			t.Fatalf("wrong password: %v after %v", err, d)
		}
	}
	log.Want(t, []string{"warn", "unavailable", "WRONGPASS"})
	for _, l := range log.Lines() {
		if strings.Contains(l.Text, pw) {
			t.Errorf("password logged: %q", l.Text)
		}
	}
}

func TestSentinelFailover(t *testing.T) {
	l := watchLateness(t)
	st := redistest.Sentinel(t)
	s := single(st.Addrs...)
	s.SentinelMaster = st.MasterName
	c, log := dial(t, s, nil)
	set(t, c, "k", "v")
	wantGet(t, c, "k", "v")
	log.Reset()

	old := st.Master.Addr
	st.Master.Stop()
	// Calls keep returning in time while the sentinels fail over and the
	// breaker probes; the client follows the new master by itself.
	stop := make(chan struct{})
	done := make(chan latencies)
	go func() {
		var lat latencies
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				done <- lat
				return
			case <-tick.C:
				_, d, _ := get(c, "k")
				lat = append(lat, d)
			}
		}
	}()
	st.WaitFailover()
	took := untilUp(t, l, c, "k", 15*time.Second)
	close(stop)
	lat := <-done
	t.Logf("master %s killed; %s promoted; client back %v later; calls meanwhile: %v", old, st.Master.Addr, took, lat)
	if lat.max() > timeout+l.slack() {
		t.Errorf("a call took %v during the failover", lat.max())
	}
	wantGet(t, c, "k", "v")
	set(t, c, "k2", "v2")
	log.Want(t,
		[]string{"warn", "Redis smtpd (master " + st.MasterName + " via sentinels ", "unavailable"},
		[]string{"info", "available again"})
}

func TestClusterNodePaused(t *testing.T) {
	l := watchLateness(t)
	cl := redistest.Cluster(t)
	s := single(cl.Addrs...)
	s.Cluster = true
	c, log := dial(t, s, nil)

	keys := map[*redistest.Server]string{}
	for i := 0; len(keys) < len(cl.Nodes); i++ {
		k := fmt.Sprintf("tlsmgr:%d", i)
		if _, ok := keys[cl.NodeFor(k)]; !ok {
			keys[cl.NodeFor(k)] = k
		}
	}
	for n, k := range keys {
		set(t, c, k, n.Addr)
		wantGet(t, c, k, n.Addr)
	}
	// What the pause does, from here.
	base := c.Stats()
	log.Reset()

	down := cl.Nodes[1]
	paused(t, down)
	// A client started during the outage has no slot map yet.
	cold, coldLog := dial(t, s, nil)

	check := func(c *Client, base Stats, what string) {
		t.Helper()
		var lat latencies
		// A client without a slot map asks a random node for one, within
		// the caller's deadline: when it picks the paused node, that call
		// fails, and so may calls for healthy keys until a map is loaded.
		// Once one healthy call succeeded, it has a map: no more failures.
		// (Each refused call takes microseconds, so the allowance is time.)
		hasMap, since := c != cold, time.Now()
		slowHealthy := 0
		for i := 0; i < 200 || c.breaker(down.Addr).stateName() == StateUp; i++ {
			for n, k := range keys {
				v, d, err := get(c, k)
				lat = append(lat, d)
				if n == down {
					if err == nil {
						t.Fatalf("%s: GET on the paused node succeeded", what)
					}
				} else if err != nil || v != n.Addr {
					if hasMap && isTimeout(err) {
						// A healthy node missed the 10ms deadline: the
						// machine is loaded (-race, packages in parallel),
						// which a few calls in a thousand may show.
						slowHealthy++
						continue
					}
					if hasMap {
						t.Fatalf("%s: GET %s on %s: %q, %v", what, k, n.Addr, v, err)
					}
					// Calls whose deadline the paused node used up may
					// also have opened a healthy node's breaker for a
					// while; the cold client must recover within seconds.
					if time.Since(since) > 3*time.Second {
						t.Fatalf("%s: calls for healthy nodes still fail 3 s after start without a slot map: %v", what, err)
					}
				} else {
					hasMap = true
				}
			}
			if i > 10000 {
				t.Fatalf("%s: the paused node's breaker never opened", what)
			}
		}
		t.Logf("%s, one node paused: %v; %d calls to healthy nodes timed out", what, lat, slowHealthy)
		if slowHealthy > len(lat)/100 {
			t.Errorf("%s: %d of %d calls to healthy nodes timed out", what, slowHealthy, len(lat))
		}
		if lat.max() > timeout+l.slack() {
			t.Errorf("%s: a call took %v", what, lat.max())
		}
		if st := statsSince(c.Stats(), base); st.State != StateDown || st.BreakerOpens < 1 || c != cold && st.BreakerOpens != 1 {
			t.Errorf("%s: stats %+v", what, st)
		}
	}
	check(c, base, "warm client")
	check(cold, Stats{}, "cold client")
	log.Want(t, []string{"warn", "Redis smtpd (cluster ", "): node " + down.Addr + " unavailable: "})
	// The cold client's calls that spent their deadline asking the
	// paused node for a slot map may have opened healthy nodes' breakers
	// too (see check): one line per transition each, the paused node's
	// "unavailable" among them.
	perNode := map[string]int{}
	nodeLine := regexp.MustCompile(`\): node (\S+) (unavailable: |available again)`)
	for _, l := range coldLog.Lines() {
		m := nodeLine.FindStringSubmatch(l.Text)
		if m == nil || (l.Level == "warn") != (m[2] == "unavailable: ") {
			t.Errorf("cold client logged %s %q", l.Level, l.Text)
			continue
		}
		if l.Level == "warn" {
			perNode[m[1]]++
		}
	}
	for node, n := range perNode {
		if n > 1 {
			t.Errorf("cold client: node %s reported unavailable %d times", node, n)
		}
	}
	if perNode[down.Addr] != 1 {
		t.Errorf("cold client: the paused node reported unavailable %d times, want once: %q", perNode[down.Addr], coldLog.Lines())
	}

	down.Resume()
	for _, x := range []*Client{c, cold} {
		untilUp(t, l, x, keys[down], 15*time.Second)
		if x == cold {
			// Healthy nodes' breakers it opened (see check) may still
			// be open for a moment.
			for _, k := range keys {
				untilUp(t, l, x, k, 15*time.Second)
			}
		}
		for n, k := range keys {
			wantGet(t, x, k, n.Addr)
		}
		if st := x.Stats(); st.State != StateUp {
			t.Errorf("after Resume: %+v", st)
		}
	}
	// Each client: the paused node down once and up once. A healthy
	// node's breaker may also have opened, and closed, while the checks
	// above waited for a loaded machine to answer in 10ms (the pause's
	// own effect on healthy nodes is checked above, in check); never
	// twice, never left open.
	for name, l := range map[string]*recLog{"warm": log, "cold": coldLog} {
		perNode := map[string][]string{}
		for _, ln := range l.Lines() {
			m := nodeLine.FindStringSubmatch(ln.Text)
			if m == nil || (ln.Level == "warn") != (m[2] == "unavailable: ") {
				t.Errorf("%s client logged %s %q", name, ln.Level, ln.Text)
				continue
			}
			perNode[m[1]] = append(perNode[m[1]], ln.Level)
		}
		for node, levels := range perNode {
			if !slices.Equal(levels, []string{"warn", "info"}) {
				t.Errorf("%s client: node %s went %v; want down once and up again: %q", name, node, levels, l.Lines())
			}
		}
		if len(perNode[down.Addr]) == 0 {
			t.Errorf("%s client: nothing logged of the paused node", name)
		}
	}
}

// go-redis's ClusterClient retries a call after a timeout or a failed
// dial. Its node's breaker must still see one failure per call (it opens
// at the third, as for a single server), and the call must end with its
// own error, counted as a timeout, not with the refusal of a breaker that
// its own retry opened.
func TestClusterCallNotRetried(t *testing.T) {
	l := watchLateness(t)
	cl := redistest.Cluster(t)
	s := single(cl.Addrs...)
	s.Cluster = true
	down := cl.Nodes[1]
	key := ""
	for i := 0; cl.NodeFor(key) != down; i++ {
		key = fmt.Sprintf("tlsmgr:%d", i)
	}
	isPaused := false
	// Resuming a stopped server fails the test: only a paused one.
	t.Cleanup(func() {
		if isPaused {
			down.Resume()
		}
	})
	for _, how := range []string{"paused", "stopped"} {
		if how == "stopped" {
			down.Resume()
			isPaused = false
			cl.WaitOK()
		}
		c, _ := dial(t, s, nil)
		set(t, c, key, "v")
		wantGet(t, c, key, "v")
		base := c.Stats()
		if how == "paused" {
			down.Pause()
			isPaused = true
		} else {
			down.Stop()
		}
		var before latencies
		for c.Stats().State == StateUp {
			_, d, err := get(c, key)
			if err == nil || errors.Is(err, ErrUnavailable) {
				t.Fatalf("%s: call %d to the node: %v, want its own failure", how, len(before)+1, err)
			}
			before = append(before, d)
			if len(before) > 10 {
				t.Fatalf("%s: breaker still closed after %d calls", how, len(before))
			}
		}
		st := statsSince(c.Stats(), base)
		t.Logf("%s node: %v; %+v", how, before, st)
		if len(before) != 3 || st.Errors != 3 || st.Refused != 0 || st.BreakerOpens != 1 {
			t.Errorf("%s: breaker opened after %d calls (want 3); stats %+v", how, len(before), st)
		}
		if how == "paused" && (st.Timeouts != 3 || before.max() > timeout+l.slack()) {
			t.Errorf("paused: %d of the 3 calls counted as timeouts; slowest %v", st.Timeouts, before.max())
		}
	}
}

// Refusing says, without I/O, what the open breaker would do with a call,
// and counts it; a cluster's per-node breakers never make it say yes.
func TestRefusing(t *testing.T) {
	srv := redistest.Single(t)
	c, _ := dial(t, single(srv.Addr), nil)
	set(t, c, "k", "v")
	if c.Refusing() {
		t.Fatal("Refusing with Redis up")
	}
	paused(t, srv)
	for c.Stats().State == StateUp {
		get(c, "k")
	}
	before := c.Stats().Refused
	if !c.Refusing() {
		t.Fatal("not Refusing with the breaker open")
	}
	if got := c.Stats().Refused; got != before+1 {
		t.Errorf("Refused %d after Refusing, want %d", got, before+1)
	}
	srv.Resume()
	deadline := time.Now().Add(10 * time.Second)
	for c.Refusing() {
		if time.Now().After(deadline) {
			t.Fatal("still Refusing 10 s after Redis came back and a probe was due")
		}
		time.Sleep(10 * time.Millisecond)
	}
	wantGet(t, c, "k", "v") // the probe closes the breaker
	if c.Refusing() {
		t.Fatal("Refusing after the probe succeeded")
	}
}
