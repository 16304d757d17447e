// Command gotls shows the gotls adapters at work: Go TLS servers and
// clients that share sessions through one tlsmgr daemon.
//
//	go run ./examples/gotls -socket SOCK
//
// For each mode it starts two server processes (this program again, with
// -serve) on two loopback ports, connects a client to the first, then a
// client to the second, and prints whether the second handshake resumed
// the first's session:
//
//   - client-cache: the two clients are separate tls.Configs whose only
//     common state is a gotls.NewClientSessionCache in the daemon (the
//     servers share a ticket key, as a server fleet would);
//   - tickets: the servers take their ticket keys from the daemon's ring
//     (gotls.ShareTicketKeys); the client keeps its session in memory;
//   - stateful: the servers keep session state in the daemon and hand the
//     client a random identity (gotls.SetStatefulSessions).
//
// With -serve MODE -addr ADDR it is one such server, until killed; try
// openssl s_client -connect ADDR -reconnect against it.
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/gotlsmgr/tlsmgr/gotls"
)

var modes = []string{"client-cache", "tickets", "stateful"}

func main() {
	socket := flag.String("socket", "", "the tlsmgr daemon's socket")
	serve := flag.String("serve", "", "run one server in this mode ("+strings.Join(modes, ", ")+")")
	addr := flag.String("addr", "127.0.0.1:0", "with -serve: the address to listen on")
	version := flag.String("tls", "1.3", "with -serve: the highest TLS version, 1.2 or 1.3")
	flag.Parse()
	if *socket == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: gotls -socket SOCK [-serve MODE [-addr ADDR] [-tls 1.2|1.3]]")
		os.Exit(2)
	}
	if *serve != "" {
		if err := runServer(*socket, *serve, *addr, *version); err != nil {
			log.Fatal(err)
		}
		return
	}
	ok := true
	for _, mode := range modes {
		resumed, err := demo(*socket, mode)
		if err != nil {
			log.Fatalf("%s: %v", mode, err)
		}
		fmt.Printf("%-12s resumed: %v\n", mode, resumed)
		ok = ok && resumed
	}
	if !ok {
		os.Exit(1)
	}
}

// demo runs one mode: two server processes, a client to each.
func demo(socket, mode string) (bool, error) {
	var addrs []string
	for range 2 {
		addr, stop, err := startServer(socket, mode)
		if err != nil {
			return false, err
		}
		defer stop()
		addrs = append(addrs, addr)
	}
	d := gotls.Dial(gotls.Options{Socket: socket})
	defer d.Close()
	config := func() *tls.Config {
		c := &tls.Config{ServerName: "localhost", InsecureSkipVerify: true} // a demo's own certificate
		if mode == "client-cache" {
			c.ClientSessionCache = gotls.NewClientSessionCache(d, "smtp")
		} else {
			c.ClientSessionCache = tls.NewLRUClientSessionCache(16)
		}
		return c
	}
	first := config()
	if _, err := handshake(addrs[0], first); err != nil {
		return false, err
	}
	second := first
	if mode == "client-cache" {
		second = config() // shares nothing with first but the daemon
	}
	return handshake(addrs[1], second)
}

// handshake connects, reads the server's greeting (a TLS 1.3 ticket
// arrives after the handshake) and reports whether it resumed.
func handshake(addr string, c *tls.Config) (bool, error) {
	conn, err := tls.Dial("tcp", addr, c)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := bufio.NewReader(conn).ReadString('\n'); err != nil {
		return false, err
	}
	return conn.ConnectionState().DidResume, nil
}

// startServer runs this program as a server and returns its address.
func startServer(socket, mode string) (string, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(self, "-socket", socket, "-serve", mode)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait() }
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		stop()
		return "", nil, fmt.Errorf("server did not start: %v", err)
	}
	return strings.TrimPrefix(strings.TrimSpace(line), "listening on "), stop, nil
}

// fleetKey is the ticket key the client-cache demo's servers share, as
// a server fleet would by its own means.
var fleetKey = [32]byte{'g', 'o', 't', 'l', 's', ' ', 'd', 'e', 'm', 'o'}

func runServer(socket, mode, addr, version string) error {
	cert, err := selfSigned()
	if err != nil {
		return err
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: tls.VersionTLS13}
	if version == "1.2" {
		c.MaxVersion = tls.VersionTLS12
	}
	d := gotls.Dial(gotls.Options{Socket: socket})
	defer d.Close()
	switch mode {
	case "client-cache":
		c.SetSessionTicketKeys([][32]byte{fleetKey})
	case "tickets":
		t := gotls.ShareTicketKeys(c, d)
		defer t.Close()
	case "stateful":
		gotls.SetStatefulSessions(c, d, "smtpd")
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	l, err := tls.Listen("tcp", addr, c)
	if err != nil {
		return err
	}
	fmt.Printf("listening on %s\n", l.Addr())
	for {
		conn, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(conn, "hello from gotls "+mode+"\n")
			io.Copy(io.Discard, conn)
		}()
	}
}

// selfSigned makes a certificate for localhost and 127.0.0.1.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
