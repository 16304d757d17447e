package gotls

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/daemontest"
	"github.com/gotlsmgr/tlsmgr/internal/server/servertest"
	"github.com/gotlsmgr/tlsmgr/internal/testlog"
)

var tlsmgrBin string

func TestMain(m *testing.M) {
	if mode := os.Getenv("GOTLS_HELPER"); mode != "" {
		os.Exit(helper(mode))
	}
	// The examples talk to an in-process server (exampleSocket); the
	// tests run the daemon itself.
	ex, err := servertest.Serve()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	exampleSocket = ex.Path
	code := daemontest.Run(m, "..", func(b daemontest.Bins) { tlsmgrBin = b.Tlsmgr })
	if err := ex.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

const serverName = "gotls.test"

// daemon is a standalone tlsmgr with memory caches, run by the test.
type daemon struct {
	env  *daemontest.Env
	proc *daemontest.Proc
}

// startDaemon runs one, with mainCF's lines added to the memory caches.
func startDaemon(t testing.TB, mainCF ...string) *daemon {
	t.Helper()
	e := daemontest.NewEnv(t, daemontest.MemoryCaches+strings.Join(mainCF, ""))
	return &daemon{env: e, proc: e.Start(t, tlsmgrBin)}
}

// logs collects a Daemon's log lines (Logger: Logger()).
type logs = testlog.Recorder

// texts are the lines logged so far.
func texts(l *logs) []string {
	var out []string
	for _, ln := range l.Lines() {
		out = append(out, ln.Text)
	}
	return out
}

// dial is a pool for the daemon; its log goes to l, or to the test's log.
func (dm *daemon) dial(t testing.TB, timeout time.Duration, l *logs) *Daemon {
	t.Helper()
	log := testlog.TB(t)
	if l != nil {
		log = l.Logger()
	}
	d := Dial(Options{Socket: dm.env.Sock, Timeout: timeout, Logger: log})
	t.Cleanup(func() { d.Close() })
	return d
}

// testCert is a self-signed certificate for serverName and 127.0.0.1.
type testCert struct {
	cert            tls.Certificate
	pool            *x509.CertPool
	certPEM, keyPEM []byte
}

var (
	certOnce sync.Once
	theCert  testCert
)

func getCert(t testing.TB) *testCert {
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: serverName},
			DNSNames:              []string{serverName},
			IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			panic(err)
		}
		theCert.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		theCert.keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
		theCert.cert, err = tls.X509KeyPair(theCert.certPEM, theCert.keyPEM)
		if err != nil {
			panic(err)
		}
		theCert.pool = x509.NewCertPool()
		theCert.pool.AppendCertsFromPEM(theCert.certPEM)
	})
	return &theCert
}

// files writes the certificate and key for helper processes.
func (c *testCert) files(t testing.TB) (certFile, keyFile string) {
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, c.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, c.keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func serverConfig(cert tls.Certificate, maxVersion uint16) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, MaxVersion: maxVersion}
}

func clientConfig(pool *x509.CertPool, maxVersion uint16, cache tls.ClientSessionCache) *tls.Config {
	return &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12, MaxVersion: maxVersion, ClientSessionCache: cache}
}

// serve runs a TLS server on a loopback port until ln is closed: each
// connection gets a handshake, a line, and is closed when the client
// closes it. Handshake errors go to errs, if not nil.
func serve(ln net.Listener, cfg *tls.Config, errs func(error)) {
	for {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(20 * time.Second))
			c := tls.Server(nc, cfg)
			if err := c.Handshake(); err != nil {
				if errs != nil {
					errs(err)
				}
				return
			}
			io.WriteString(c, "hello\n")
			io.Copy(io.Discard, c)
		}()
	}
}

func startServer(t testing.TB, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go serve(ln, cfg, func(err error) { t.Logf("server handshake: %v", err) })
	return ln.Addr().String()
}

// connect makes one connection, reads the server's line (so that a TLS
// 1.3 ticket is taken in) and reports whether it resumed.
func connect(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	c := tls.Client(nc, cfg)
	if err := c.Handshake(); err != nil {
		return tls.ConnectionState{}, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "hello\n" {
		return tls.ConnectionState{}, fmt.Errorf("read %q: %v", line, err)
	}
	return c.ConnectionState(), nil
}

func mustConnect(t testing.TB, addr string, cfg *tls.Config) tls.ConnectionState {
	t.Helper()
	cs, err := connect(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// recordingCache is Go's LRU cache, keeping the tickets it is given.
type recordingCache struct {
	tls.ClientSessionCache
	mu      sync.Mutex
	tickets [][]byte
}

func newRecordingCache() *recordingCache {
	return &recordingCache{ClientSessionCache: tls.NewLRUClientSessionCache(16)}
}

func (r *recordingCache) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		if ticket, _, err := cs.ResumptionState(); err == nil {
			r.mu.Lock()
			r.tickets = append(r.tickets, ticket)
			r.mu.Unlock()
		}
	}
	r.ClientSessionCache.Put(key, cs)
}

func (r *recordingCache) last(t testing.TB) []byte {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.tickets) == 0 {
		t.Fatal("the client got no ticket")
	}
	return r.tickets[len(r.tickets)-1]
}

var versions = []struct {
	name string
	v    uint16
}{{"TLS12", tls.VersionTLS12}, {"TLS13", tls.VersionTLS13}}

// Helper processes: the test binary run again with GOTLS_HELPER set.
//
//	client: one connection to GOTLS_ADDR with NewClientSessionCache on
//	        GOTLS_SOCK; prints "resumed=BOOL version=N".
//	server: a server with SetStatefulSessions on GOTLS_SOCK; prints its
//	        address, serves until its standard input is closed.
//	tickets: a server with ShareTicketKeys on GOTLS_SOCK (none if empty),
//	        driven over standard input (ticketChild).
func helper(mode string) int {
	sock := os.Getenv("GOTLS_SOCK")
	if mode == "tickets" {
		return ticketChild(os.Getenv("GOTLS_CERT"), os.Getenv("GOTLS_KEY"), sock)
	}
	var maxVersion uint16
	fmt.Sscan(os.Getenv("GOTLS_MAXVER"), &maxVersion)
	d := Dial(Options{Socket: sock, Timeout: time.Second, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	defer d.Close()
	switch mode {
	case "client":
		pool := x509.NewCertPool()
		pem, err := os.ReadFile(os.Getenv("GOTLS_CERT"))
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintln(os.Stderr, "bad certificate", err)
			return 1
		}
		cs, err := connect(os.Getenv("GOTLS_ADDR"), clientConfig(pool, maxVersion, NewClientSessionCache(d, os.Getenv("GOTLS_CACHE"))))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("resumed=%v version=%d\n", cs.DidResume, cs.Version)
		return 0
	case "server":
		cert, err := tls.LoadX509KeyPair(os.Getenv("GOTLS_CERT"), os.Getenv("GOTLS_KEY"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cfg := serverConfig(cert, maxVersion)
		SetStatefulSessions(cfg, d, os.Getenv("GOTLS_CACHE"))
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(ln.Addr())
		go serve(ln, cfg, func(err error) { fmt.Fprintln(os.Stderr, "handshake:", err) })
		io.Copy(io.Discard, os.Stdin)
		return 0
	}
	return 2
}

func helperCmd(t testing.TB, mode string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{"GOTLS_HELPER=" + mode}, env...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t.Cleanup(func() {
		if stderr.Len() > 0 {
			t.Logf("%s helper stderr:\n%s", mode, stderr.String())
		}
	})
	return cmd
}

// startHelper starts cmd with pipes to its standard input and output; when
// the test ends, its input is closed and it has 10 s to exit.
func startHelper(t testing.TB, cmd *exec.Cmd) (io.WriteCloser, io.Reader) {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return stdin, stdout
}

// helperServer starts a server process and returns its address.
func helperServer(t testing.TB, env ...string) string {
	t.Helper()
	_, stdout := startHelper(t, helperCmd(t, "server", env...))
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("server helper: %v", err)
	}
	return strings.TrimSpace(addr)
}
