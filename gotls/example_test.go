package gotls_test

import (
	"crypto/tls"
	"fmt"
	"log"
	"net"

	"github.com/gotlsmgr/tlsmgr/gotls"
)

// Two TLS servers that take their session ticket keys from the same
// daemon (two processes, or two hosts of a fleet) resume each other's
// sessions: a client that did a full handshake with the first resumes
// with the second.
func ExampleShareTicketKeys() {
	socket, cert, roots := gotls.SetupForExamples()
	d := gotls.Dial(gotls.Options{Socket: socket})
	defer d.Close()

	var servers []*tls.Config
	for range 2 {
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
		tickets := gotls.ShareTicketKeys(cfg, d)
		defer tickets.Close()
		servers = append(servers, cfg)
	}
	client := &tls.Config{
		RootCAs:            roots,
		ServerName:         gotls.ServerNameForExamples,
		ClientSessionCache: tls.NewLRUClientSessionCache(8),
	}
	for i, server := range servers {
		fmt.Printf("server %d resumed: %v\n", i+1, connect(server, client))
	}
	// Output:
	// server 1 resumed: false
	// server 2 resumed: true
}

// connect runs one connection over a pipe: a handshake, then a line from
// the server (which, in TLS 1.3, brings the session ticket along).
func connect(server, client *tls.Config) (resumed bool) {
	sc, cc := net.Pipe()
	go func() {
		s := tls.Server(sc, server)
		defer s.Close()
		if err := s.Handshake(); err == nil {
			fmt.Fprintln(s, "220 ready")
		}
	}()
	defer cc.Close() // no close_notify: a pipe has no buffer for it
	c := tls.Client(cc, client)
	line := make([]byte, 64)
	if _, err := c.Read(line); err != nil {
		log.Fatal(err)
	}
	return c.ConnectionState().DidResume
}
