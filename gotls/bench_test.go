package gotls

import (
	"context"
	"crypto/tls"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/internal/daemontest"
	"github.com/gotlsmgr/tlsmgr/internal/testlog"
)

// BenchmarkHandshake: one connection over loopback per op (dial,
// handshake, one line read so that TLS 1.3 tickets are taken in, close),
// for TLS 1.2 and 1.3:
//
//	full           no session cache: a full handshake every time
//	gotickets      resumed with Go's own tickets and LRU client cache
//	stateful       resumed, server with SetStatefulSessions
//	clientcache    resumed, client with NewClientSessionCache, Go's tickets
//	both           resumed, both adapters
//
// It reports the resumed fraction (resumed/op) and the calls to the
// daemon per handshake (calls/op: a lookup per resumption, and with TLS
// 1.3 an update for the new session). The modes run one after the other,
// so the machine's drift enters their ratios; BenchmarkHandshakeRatios
// interleaves them.
func BenchmarkHandshake(b *testing.B) {
	dm := startDaemon(b)
	c := getCert(b)
	d := dm.dial(b, time.Second, nil)
	for _, v := range versions {
		for _, mode := range []string{"full", "gotickets", "stateful", "clientcache", "both"} {
			b.Run(v.name+"/"+mode, func(b *testing.B) {
				addr, ccfg := benchSetup(b, mode, v.v, d, nullServers{}, c)
				before := d.Stats()
				resumed := 0
				b.ResetTimer()
				for b.Loop() {
					if mustConnect(b, addr, ccfg).DidResume {
						resumed++
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(resumed)/float64(b.N), "resumed/op")
				st := d.Stats()
				b.ReportMetric(float64(st.Calls-before.Calls)/float64(b.N), "calls/op")
				if st.Failures != before.Failures {
					b.Fatalf("daemon failures during the benchmark: %+v", st)
				}
				if mode != "full" && resumed != b.N {
					b.Fatalf("%d of %d resumed", resumed, b.N)
				}
			})
		}
	}
}

// resumedModes are the set-ups BenchmarkHandshakeRatios compares: Go's own
// tickets and LRU cache; the same with one round trip to tlsmgr-null added
// to every resumption, in the server (ipc-server) or in the client's cache
// (ipc-client), each answered with an entry of the size the adapter's has
// (the machine's IPC limit for that call, the least any daemon could add);
// and each adapter in their place.
var resumedModes = []string{"gotickets", "ipc-server", "ipc-client", "stateful", "clientcache", "both"}

// Sizes of the entries of this package's tests (their ECDSA P-256
// certificate): a server's session state is 58–76 bytes, a client's with
// the certificate chain and the ticket 595–619.
const serverEntrySize, clientEntrySize = 64, 640

// nullServers are tlsmgr-null servers answering entries of the size
// ipc-server's and ipc-client's calls stand for.
type nullServers struct{ server, client *Daemon }

func startNulls(b *testing.B) nullServers {
	return nullServers{startNull(b, serverEntrySize), startNull(b, clientEntrySize)}
}

// nullCall is one lookup at tlsmgr-null.
func nullCall(b *testing.B, null *Daemon) {
	if err := null.do(func(ctx context.Context, cl *client.Client) error {
		_, err := cl.Lookup(ctx, "smtp", "gotls:x")
		return err
	}); err != nil {
		b.Errorf("tlsmgr-null: %v", err)
	}
}

// ipcCache is Go's LRU cache with a call to tlsmgr-null in every Get.
type ipcCache struct {
	tls.ClientSessionCache
	b    *testing.B
	null *Daemon
}

func (c ipcCache) Get(key string) (*tls.ClientSessionState, bool) {
	nullCall(c.b, c.null)
	return c.ClientSessionCache.Get(key)
}

// benchSetup returns the server address and client config of one of
// resumedModes, or of "full" (no tickets, no cache), its first session
// made.
func benchSetup(b *testing.B, mode string, v uint16, d *Daemon, nulls nullServers, c *testCert) (string, *tls.Config) {
	scfg := serverConfig(c.cert, v)
	var cache tls.ClientSessionCache = tls.NewLRUClientSessionCache(16)
	switch mode {
	case "full":
		scfg.SessionTicketsDisabled = true
		cache = nil
	case "ipc-server":
		scfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
			nullCall(b, nulls.server)
			return scfg.DecryptTicket(identity, cs)
		}
	case "ipc-client":
		cache = ipcCache{cache, b, nulls.client}
	case "stateful":
		SetStatefulSessions(scfg, d, "smtpd")
	case "clientcache": // two caches: the modes' sessions share one key
		cache = NewClientSessionCache(d, "smtp")
	case "both":
		SetStatefulSessions(scfg, d, "smtpd")
		cache = NewClientSessionCache(d, "lmtp")
	}
	addr := startServer(b, scfg)
	ccfg := clientConfig(c.pool, v, cache)
	mustConnect(b, addr, ccfg)
	return addr, ccfg
}

// resumedSetups are benchSetup's results for all resumedModes.
func resumedSetups(b *testing.B, v uint16, d *Daemon, nulls nullServers, c *testCert) ([]string, []*tls.Config) {
	addrs := make([]string, len(resumedModes))
	cfgs := make([]*tls.Config, len(resumedModes))
	for i, mode := range resumedModes {
		addrs[i], cfgs[i] = benchSetup(b, mode, v, d, nulls, c)
	}
	return addrs, cfgs
}

// startNull builds and runs tlsmgr-null, whose lookups answer with a
// session of payload bytes.
func startNull(b *testing.B, payload int) *Daemon {
	dir := b.TempDir()
	build := exec.Command("go", "build", "-o", dir+"/", "../bench/tlsmgr-null")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build tlsmgr-null: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "null.sock")
	p := daemontest.StartCmd(b, exec.Command(filepath.Join(dir, "tlsmgr-null"), "-listen", sock, "-payload", fmt.Sprint(payload)))
	p.WaitServing(b, sock)
	d := Dial(Options{Socket: sock, Timeout: time.Second, Logger: testlog.TB(b)})
	b.Cleanup(func() { d.Close() })
	return d
}

// BenchmarkHandshakeRatios: the adapters' added cost, as ratios that the
// machine's drift does not skew. Each op is one resumed handshake (as in
// BenchmarkHandshake) in every one of resumedModes, in an order that turns
// with each op; it reports each mode's median time (µs-MODE) and its ratio
// to gotickets' (x-MODE).
func BenchmarkHandshakeRatios(b *testing.B) {
	dm := startDaemon(b)
	c := getCert(b)
	d := dm.dial(b, time.Second, nil)
	nulls := startNulls(b)
	for _, v := range versions {
		b.Run(v.name, func(b *testing.B) {
			addrs, cfgs := resumedSetups(b, v.v, d, nulls, c)
			times := make([][]time.Duration, len(resumedModes))
			before := d.Stats()
			op := 0
			for b.Loop() {
				for k := range resumedModes {
					i := (op + k) % len(resumedModes)
					start := time.Now()
					if !mustConnect(b, addrs[i], cfgs[i]).DidResume {
						b.Fatalf("%s: not resumed", resumedModes[i])
					}
					times[i] = append(times[i], time.Since(start))
				}
				op++
			}
			b.StopTimer()
			if st := d.Stats(); st.Failures != before.Failures {
				b.Fatalf("daemon failures during the benchmark: %+v", st)
			}
			base := median(times[0])
			for i, mode := range resumedModes {
				m := median(times[i])
				b.ReportMetric(float64(m)/float64(time.Microsecond), "µs-"+mode)
				if i > 0 {
					b.ReportMetric(float64(m)/float64(base), "x-"+mode)
				}
			}
		})
	}
}

// BenchmarkHandshakeParallel: BenchmarkHandshakeRatios with handshakes
// in parallel, where what an adapter adds is its CPU time (the client's,
// the daemon's) rather than its wait. Each op is, for every one of
// resumedModes in an order that turns with each op, 8 goroutines making 8
// resumed handshakes each; it reports each mode's handshakes per second
// (hs/s-MODE) and its time for them over gotickets' (x-MODE).
func BenchmarkHandshakeParallel(b *testing.B) {
	const goroutines, each = 8, 8
	dm := startDaemon(b)
	c := getCert(b)
	d := Dial(Options{Socket: dm.env.Sock, Timeout: time.Second, Conns: goroutines, Logger: testlog.TB(b)})
	b.Cleanup(func() { d.Close() })
	nulls := startNulls(b)
	for _, v := range versions {
		b.Run(v.name, func(b *testing.B) {
			addrs, cfgs := resumedSetups(b, v.v, d, nulls, c)
			total := make([]time.Duration, len(resumedModes))
			before := d.Stats()
			op := 0
			for b.Loop() {
				for k := range resumedModes {
					i := (op + k) % len(resumedModes)
					errs := make(chan error, goroutines)
					start := time.Now()
					for range goroutines {
						go func() {
							for range each {
								cs, err := connect(addrs[i], cfgs[i])
								if err == nil && !cs.DidResume {
									err = fmt.Errorf("%s: not resumed", resumedModes[i])
								}
								if err != nil {
									errs <- err
									return
								}
							}
							errs <- nil
						}()
					}
					for range goroutines {
						if err := <-errs; err != nil {
							b.Fatal(err)
						}
					}
					total[i] += time.Since(start)
				}
				op++
			}
			b.StopTimer()
			if st := d.Stats(); st.Failures != before.Failures {
				b.Fatalf("daemon failures during the benchmark: %+v", st)
			}
			for i, mode := range resumedModes {
				b.ReportMetric(float64(goroutines*each*op)/total[i].Seconds(), "hs/s-"+mode)
				if i > 0 {
					b.ReportMetric(float64(total[i])/float64(total[0]), "x-"+mode)
				}
			}
		})
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkDaemonLookup: one call through the pool, a hit, for a session
// the size of a server's TLS 1.2 state and for one the size a client
// cache holds: the round trip an adapter adds to a resumption. The same
// against tlsmgr-null is the machine's IPC limit.
func BenchmarkDaemonLookup(b *testing.B) {
	dm := startDaemon(b)
	d := dm.dial(b, time.Second, nil)
	for _, size := range []int{serverEntrySize, clientEntrySize} {
		for _, server := range []struct {
			name string
			d    *Daemon
		}{{"tlsmgr", d}, {"null", startNull(b, size)}} {
			b.Run(fmt.Sprintf("%d/%s", size, server.name), func(b *testing.B) {
				if err := server.d.do(func(ctx context.Context, cl *client.Client) error {
					return cl.Update(ctx, "smtp", "gotls:bench", make([]byte, size))
				}); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					if err := server.d.do(func(ctx context.Context, cl *client.Client) error {
						_, err := cl.Lookup(ctx, "smtp", "gotls:bench")
						return err
					}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
