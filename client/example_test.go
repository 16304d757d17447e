package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"testing"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/internal/server/servertest"
)

// daemonSocket is the socket of the daemon the examples talk to: in real
// use tlsmgr-go's -listen path, or Postfix's private/tlsmgr. Here it is an
// in-process server that TestMain starts.
var daemonSocket string

func TestMain(m *testing.M) {
	s, err := servertest.Serve()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	daemonSocket = s.Path
	code := m.Run()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// A session stored in the smtp cache is there for the next lookup of its
// id, until it expires or is deleted.
func Example() {
	c := client.New(daemonSocket, client.Options{})
	defer c.Close()
	ctx := context.Background()

	const id = "smtp&example.com&25"
	if err := c.Update(ctx, "smtp", id, []byte("serialized session")); err != nil {
		log.Fatal(err)
	}
	session, err := c.Lookup(ctx, "smtp", id)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("found %q\n", session)

	if err := c.Delete(ctx, "smtp", id); err != nil {
		log.Fatal(err)
	}
	_, err = c.Lookup(ctx, "smtp", id)
	fmt.Println("after delete:", errors.Is(err, client.ErrNotFound))
	// Output:
	// found "serialized session"
	// after delete: true
}

// Policy says whether the daemon caches sessions of a type and for how
// long; a disabled cache type (here lmtp) is not cachable.
func ExampleClient_Policy() {
	c := client.New(daemonSocket, client.Options{})
	defer c.Close()
	for _, cacheType := range []string{"smtpd", "lmtp"} {
		p, err := c.Policy(context.Background(), cacheType)
		if err != nil {
			log.Fatal(err)
		}
		if p.Cachable {
			fmt.Println(cacheType, "sessions are kept for", p.Timeout)
		} else {
			fmt.Println(cacheType, "sessions are not cached")
		}
	}
	// Output:
	// smtpd sessions are kept for 1h0m0s
	// lmtp sessions are not cached
}

// TicketKey with no name returns the key that encrypts new session
// tickets; with a key's name, that key, while it still decrypts.
func ExampleClient_TicketKey() {
	c := client.New(daemonSocket, client.Options{})
	defer c.Close()
	ctx := context.Background()

	current, err := c.TicketKey(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	byName, err := c.TicketKey(ctx, current.Name[:])
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("same key:", byName == current)
	current.Wipe()
	byName.Wipe()
	// Output: same key: true
}
