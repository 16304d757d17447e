package gotls

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/daemontest"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// The ticket tests run every TLS server in a process of its own: the test
// binary again, as the "tickets" helper (see helper).

func TestTicketDeriveKey(t *testing.T) {
	var k proto.TicketKey
	for i := range k.AES {
		k.AES[i], k.HMAC[i] = byte(i), byte(100+i)
	}
	copy(k.Name[:], "0123456789abcdef")
	a, b := DeriveTicketKey(&k), DeriveTicketKey(&k)
	if a != b {
		t.Fatal("derivation is not deterministic")
	}
	if a == ([32]byte{}) {
		t.Fatal("derived key is zero")
	}
	for _, change := range []func(*proto.TicketKey){
		func(k *proto.TicketKey) { k.Name[0] ^= 1 },
		func(k *proto.TicketKey) { k.AES[31] ^= 1 },
		func(k *proto.TicketKey) { k.HMAC[0] ^= 1 },
	} {
		k2 := k
		change(&k2)
		if DeriveTicketKey(&k2) == a {
			t.Error("a change of name or material does not change the derived key")
		}
	}
	k2 := k
	k2.Expiry = 12345
	if DeriveTicketKey(&k2) != a {
		t.Error("the expiry changes the derived key")
	}
}

// ticketChild serves TLS on a loopback port it prints as "ADDR host:port"
// (each connection as serve does), with the daemon's ticket keys if sock
// is not empty, and answers commands on standard
// input: "refresh" (REFRESH ok / REFRESH err ...) and "keys" (KEYS n). It
// returns when standard input ends.
func ticketChild(certFile, keyFile, sock string) int {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg := serverConfig(cert, tls.VersionTLS13)
	var tk *Tickets
	if sock != "" {
		// slog.Default() writes through the log package: its lines
		// go to standard error after "LOG ".
		log.SetFlags(0)
		log.SetPrefix("LOG ")
		d := Dial(Options{Socket: sock, Timeout: 2 * time.Second})
		defer d.Close()
		tk = ShareTicketKeys(cfg, d)
		defer tk.Close()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer ln.Close()
	go serve(ln, cfg, func(err error) { fmt.Fprintf(os.Stderr, "handshake: %v\n", err) })
	fmt.Printf("ADDR %s\n", ln.Addr())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "refresh":
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := tk.Refresh(ctx)
			cancel()
			if err != nil {
				fmt.Printf("REFRESH err %v\n", err)
			} else {
				fmt.Println("REFRESH ok")
			}
		case "keys":
			fmt.Printf("KEYS %d\n", tk.Keys())
		default:
			fmt.Println("?")
		}
	}
	return 0
}

// ticketServer is a running ticketChild.
type ticketServer struct {
	addr   string
	in     io.WriteCloser
	out    *bufio.Scanner
	stderr *daemontest.Buffer
}

func startTicketServer(t *testing.T, sock string) *ticketServer {
	t.Helper()
	certFile, keyFile := getCert(t).files(t)
	cmd := helperCmd(t, "tickets", "GOTLS_SOCK="+sock, "GOTLS_CERT="+certFile, "GOTLS_KEY="+keyFile)
	s := &ticketServer{stderr: &daemontest.Buffer{}}
	cmd.Stderr = s.stderr
	var stdout io.Reader
	s.in, stdout = startHelper(t, cmd)
	s.out = bufio.NewScanner(stdout)
	line := s.line(t)
	addr, ok := strings.CutPrefix(line, "ADDR ")
	if !ok {
		t.Fatalf("server child said %q:\n%s", line, s.stderr)
	}
	s.addr = addr
	return s
}

func (s *ticketServer) line(t *testing.T) string {
	t.Helper()
	if !s.out.Scan() {
		t.Fatalf("server child ended (%v):\n%s", s.out.Err(), s.stderr)
	}
	return s.out.Text()
}

func (s *ticketServer) ask(t *testing.T, cmd string) string {
	t.Helper()
	if _, err := io.WriteString(s.in, cmd+"\n"); err != nil {
		t.Fatal(err)
	}
	return s.line(t)
}

func (s *ticketServer) keys(t *testing.T) string { t.Helper(); return s.ask(t, "keys") }

// waitLogged waits up to 5s for n of the child's log lines holding what
// (they come through a pipe, a moment after it wrote them) and counts
// them.
func (s *ticketServer) waitLogged(what string, n int) int {
	for deadline := time.Now().Add(5 * time.Second); s.logged(what) < n && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	return s.logged(what)
}

// logged counts the child's log lines holding what.
func (s *ticketServer) logged(what string) int {
	n := 0
	for _, l := range strings.Split(s.stderr.String(), "\n") {
		if strings.HasPrefix(l, "LOG ") && strings.Contains(l, what) {
			n++
		}
	}
	return n
}

// ticketClient is a Go TLS client with its own in-memory session cache.
type ticketClient struct {
	cfg *tls.Config
}

func newTicketClient(t testing.TB, version uint16) *ticketClient {
	// serverName is also the session cache key: the same for every server.
	cfg := clientConfig(getCert(t).pool, version, tls.NewLRUClientSessionCache(8))
	cfg.MinVersion = version
	return &ticketClient{cfg: cfg}
}

// connect makes one connection to addr and reports whether it resumed.
// firstSession is a new client whose first handshake, a full one, was
// with the server at addr.
func firstSession(t *testing.T, version uint16, addr string) *ticketClient {
	t.Helper()
	c := newTicketClient(t, version)
	if c.connect(t, addr) {
		t.Fatal("first handshake resumed")
	}
	return c
}

func (c *ticketClient) connect(t *testing.T, addr string) bool {
	t.Helper()
	st := mustConnect(t, addr, c.cfg)
	if st.Version != c.cfg.MaxVersion {
		t.Fatalf("version %x, want %x", st.Version, c.cfg.MaxVersion)
	}
	return st.DidResume
}

// TestTicketSharedResume: a session from one server process resumes on
// another that shares the daemon's ticket keys, and not on one with Go's
// own keys.
func TestTicketSharedResume(t *testing.T) {
	t.Parallel()
	env := startDaemon(t).env
	a, b := startTicketServer(t, env.Sock), startTicketServer(t, env.Sock)
	for _, s := range []*ticketServer{a, b} {
		if got := s.keys(t); got != "KEYS 1" {
			t.Fatalf("server has %q after ShareTicketKeys", got)
		}
	}
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			c := firstSession(t, v.v, a.addr)
			if !c.connect(t, b.addr) {
				t.Fatal("session from the first server does not resume on the second")
			}
			if !c.connect(t, a.addr) {
				t.Fatal("session from the second server does not resume on the first")
			}
		})
	}

	// Control: the same two processes without ShareTicketKeys.
	ca, cb := startTicketServer(t, ""), startTicketServer(t, "")
	for _, v := range versions {
		t.Run("control/"+v.name, func(t *testing.T) {
			c := firstSession(t, v.v, ca.addr)
			if !c.connect(t, ca.addr) {
				t.Fatal("session does not even resume on the same server")
			}
			if c.connect(t, cb.addr) {
				t.Fatal("session resumed on another server with its own keys")
			}
		})
	}
	for _, s := range []*ticketServer{a, b} {
		if n := s.logged(""); n != 0 {
			t.Errorf("server logged:\n%s", s.stderr)
		}
	}
}

// TestTicketDaemonDown: with the daemon gone the servers keep their keys,
// handshakes and resumptions go on, and each server logs it once; back,
// the daemon's new ring replaces the kept keys.
func TestTicketDaemonDown(t *testing.T) {
	t.Parallel()
	dm := startDaemon(t)
	env, p := dm.env, dm.proc
	a, b := startTicketServer(t, env.Sock), startTicketServer(t, env.Sock)

	before := map[string]*ticketClient{}
	for _, v := range versions {
		c := firstSession(t, v.v, a.addr)
		before[v.name] = c
	}
	p.Kill()
	for _, s := range []*ticketServer{a, b} {
		for range 3 {
			if got := s.ask(t, "refresh"); !strings.HasPrefix(got, "REFRESH err") {
				t.Fatalf("refresh with the daemon gone: %q", got)
			}
		}
		if got := s.keys(t); got != "KEYS 1" {
			t.Fatalf("server has %q with the daemon gone", got)
		}
	}
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			if !before[v.name].connect(t, b.addr) {
				t.Fatal("ticket from before the daemon went does not resume")
			}
			c := firstSession(t, v.v, b.addr)
			if !c.connect(t, a.addr) {
				t.Fatal("ticket issued with the daemon gone does not resume on the other server")
			}
		})
	}
	for _, s := range []*ticketServer{a, b} {
		if n := s.waitLogged("not answering", 1); n != 1 {
			t.Errorf("server logged the daemon's absence %d times:\n%s", n, s.stderr)
		}
	}

	// A new daemon has a new ring (in memory): the kept key is dropped.
	env.Start(t, tlsmgrBin)
	for _, s := range []*ticketServer{a, b} {
		// The Daemon asks again at most once a second while it is down.
		deadline := time.Now().Add(10 * time.Second)
		for got := s.ask(t, "refresh"); got != "REFRESH ok"; got = s.ask(t, "refresh") {
			if time.Now().After(deadline) {
				t.Fatalf("refresh with the daemon back: %q", got)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if got := s.keys(t); got != "KEYS 1" {
			t.Fatalf("server has %q with the daemon back", got)
		}
		if n := s.waitLogged("answering again", 1); n != 1 {
			t.Errorf("server logged the daemon's return %d times:\n%s", n, s.stderr)
		}
	}
	for _, v := range versions {
		t.Run("back/"+v.name, func(t *testing.T) {
			c := firstSession(t, v.v, a.addr)
			if !c.connect(t, b.addr) {
				t.Fatal("session does not resume across servers with the daemon back")
			}
			// Only the old ring knew the key of the ticket from before.
			if before[v.name].connect(t, b.addr) {
				t.Fatal("ticket under a key the daemon no longer knows resumed")
			}
		})
	}
}

// TestTicketLocalKey: with the daemon gone, its key goes on encrypting for
// a rotation period past its expiry, then a key of the server's own does
// (logged once), replaced at the same period; tickets under every key kept
// still resume, and the own keys go on decrypting once the daemon is back.
// The servers run in the test, Tickets on a clock the test sets.
func TestTicketLocalKey(t *testing.T) {
	dm := startDaemon(t)
	c := getCert(t)
	l := &logs{}
	d := dm.dial(t, time.Second, l)
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	setClock := func(unix int64) { clock.Store(time.Unix(unix, 0).UnixNano()) }

	cfgA, cfgB := serverConfig(c.cert, tls.VersionTLS13), serverConfig(c.cert, tls.VersionTLS13)
	a, b := shareTicketKeys(cfgA, d, now), ShareTicketKeys(cfgB, d)
	t.Cleanup(func() { a.Close(); b.Close() })
	addrA, addrB := startServer(t, cfgA), startServer(t, cfgB)
	snapshot := func() []ticketKey {
		a.mu.Lock()
		defer a.mu.Unlock()
		return slices.Clone(a.keys)
	}
	// describe shows keys without their secret.
	describe := func(ks []ticketKey) string {
		var out []string
		for _, k := range ks {
			out = append(out, fmt.Sprintf("{name %x local %v expiry %d seen %d}", k.name[:4], k.local, k.expiry, k.seen))
		}
		return strings.Join(out, " ")
	}
	if ks := snapshot(); len(ks) != 1 || ks[0].local {
		t.Fatalf("keys at start: %s", describe(ks))
	}
	shared := snapshot()[0]

	client := func() *tls.Config { return clientConfig(c.pool, tls.VersionTLS13, tls.NewLRUClientSessionCache(4)) }
	resumes := func(cfg *tls.Config, addr string) bool { t.Helper(); return mustConnect(t, addr, cfg).DidResume }
	before := client()
	if resumes(before, addrA) || !resumes(before, addrB) {
		t.Fatal("a session does not resume across the servers")
	}

	dm.proc.Kill()
	// Until a period past its expiry (a period: the key's life since it
	// was seen), the daemon's key encrypts on.
	period := shared.expiry - shared.seen
	setClock(shared.expiry + period - 1)
	if a.Refresh(context.Background()) == nil {
		t.Fatal("refresh with the daemon gone succeeded")
	}
	a.fallBack()
	if ks := snapshot(); len(ks) != 1 || ks[0].name != shared.name {
		t.Fatalf("the daemon's key was replaced before its time: %s", describe(ks))
	}
	setClock(shared.expiry + period)
	a.fallBack()
	ks := snapshot()
	if len(ks) != 2 || !ks[0].local || ks[1].name != shared.name || ks[0].expiry != shared.expiry+2*period {
		t.Fatalf("keys after the period: %s", describe(ks))
	}
	if n := l.Count("info", "own"); n != 1 {
		t.Errorf("the own key was logged %d times: %q", n, texts(l))
	}
	if !resumes(before, addrA) {
		t.Error("a ticket under the daemon's key does not resume")
	}
	during := client()
	if resumes(during, addrA) {
		t.Fatal("first handshake resumed")
	}
	if resumes(copyTicket(t, during), addrB) {
		t.Error("a ticket under the own key resumed at the other server")
	}
	if !resumes(during, addrA) {
		t.Error("a ticket under the own key does not resume where it was issued")
	}

	// The own key is replaced at its expiry; the one before decrypts on.
	a.fallBack()
	if got := snapshot(); len(got) != 2 {
		t.Fatalf("own key replaced before its expiry: %s", describe(got))
	}
	setClock(ks[0].expiry)
	a.fallBack()
	if got := snapshot(); len(got) != 3 || !got[0].local || got[1].goKey != ks[0].goKey || got[2].name != shared.name {
		t.Fatalf("keys after the own key's expiry: %s", describe(got))
	}
	if !resumes(during, addrA) {
		t.Error("a ticket under the first own key does not resume")
	}
	if n := l.Count("info", "own"); n != 1 {
		t.Errorf("the own key was logged %d times: %q", n, texts(l))
	}

	// The daemon is back, with a new ring: its key encrypts, the own
	// keys decrypt, the daemon's old key is gone.
	dm.proc = dm.env.Start(t, tlsmgrBin)
	deadline := time.Now().Add(10 * time.Second)
	for a.Refresh(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("no refresh with the daemon back")
		}
		time.Sleep(200 * time.Millisecond)
	}
	got := snapshot()
	if len(got) != 3 || got[0].local || !got[1].local || !got[2].local {
		t.Fatalf("keys with the daemon back: %s", describe(got))
	}
	if !resumes(during, addrA) {
		t.Error("a ticket under an own key does not resume with the daemon back")
	}
	if err := b.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := client()
	if resumes(after, addrA) || !resumes(after, addrB) {
		t.Error("with the daemon back, a session does not resume across the servers")
	}
}

// copyTicket is a client config holding the session cfg's cache holds.
func copyTicket(t *testing.T, cfg *tls.Config) *tls.Config {
	t.Helper()
	cs, ok := cfg.ClientSessionCache.Get(serverName)
	if !ok {
		t.Fatal("the client holds no session")
	}
	c := cfg.Clone()
	c.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	c.ClientSessionCache.Put(serverName, cs)
	return c
}

// TestTicketRunFallsBack: Tickets' own refreshes, not only a caller's, move
// to a key of the server's own once the daemon has been gone for a period
// past its key's expiry.
func TestTicketRunFallsBack(t *testing.T) {
	dm := startDaemon(t)
	d := dm.dial(t, time.Second, &logs{})
	cur, err := d.clients[0].TicketKey(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	expiry := cur.Expiry
	cur.Wipe()
	// Tickets' clock starts a second before the key's expiry, so that its
	// first regular refresh comes a second or two from now.
	var clock atomic.Int64
	clock.Store(time.Unix(expiry-1, 0).UnixNano())
	cfg := serverConfig(getCert(t).cert, tls.VersionTLS13)
	tk := shareTicketKeys(cfg, d, func() time.Time { return time.Unix(0, clock.Load()) })
	t.Cleanup(func() { tk.Close() })
	if tk.Keys() != 1 {
		t.Fatal("no key from the daemon")
	}
	dm.proc.Kill()
	clock.Store(time.Unix(expiry+24*3600, 0).UnixNano())
	deadline := time.Now().Add(15 * time.Second)
	for {
		tk.mu.Lock()
		local := tk.keys[0].local
		tk.mu.Unlock()
		if local {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Tickets' refreshes did not move to an own key")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
