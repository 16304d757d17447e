package server

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/gotlsmgr/tlsmgr/client"
)

// Benchmarks of each request type over a real UNIX socket, one connection,
// through the client library: what a Postfix process sees, end to end.

func benchClient(b *testing.B) (*client.Client, *fixture) {
	t := &testing.T{}
	f := newFixture(t)
	b.Cleanup(func() { f.srv.Shutdown(context.Background()) })
	c := client.New(f.path, client.Options{})
	b.Cleanup(func() { c.Close() })
	return c, f
}

func BenchmarkSeed(b *testing.B) {
	c, _ := benchClient(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := c.Seed(ctx, 32); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPolicy(b *testing.B) {
	c, _ := benchClient(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := c.Policy(ctx, "smtpd"); err != nil {
			b.Fatal(err)
		}
	}
}

func benchIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%064x&s=smtp&l=805306672", i)
	}
	return ids
}

func BenchmarkLookup(b *testing.B) {
	c, _ := benchClient(b)
	ctx := context.Background()
	ids := benchIDs(500)
	session := make([]byte, 512)
	for _, id := range ids {
		if err := c.Update(ctx, "smtpd", id, session); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	for b.Loop() {
		if _, err := c.Lookup(ctx, "smtpd", ids[i%len(ids)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkUpdate(b *testing.B) {
	c, _ := benchClient(b)
	ctx := context.Background()
	ids := benchIDs(500)
	session := make([]byte, 512)
	i := 0
	for b.Loop() {
		if err := c.Update(ctx, "smtpd", ids[i%len(ids)], session); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkDelete(b *testing.B) {
	c, _ := benchClient(b)
	ctx := context.Background()
	for b.Loop() {
		if err := c.Delete(ctx, "smtpd", "absent"); err != client.ErrNotFound && err != nil && !isNotFound(err) {
			b.Fatal(err)
		}
	}
}

func isNotFound(err error) bool {
	var se *client.StatusError
	return err != nil && errors.As(err, &se) && se.Status == client.StatusErr
}

func BenchmarkTktKey(b *testing.B) {
	c, _ := benchClient(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := c.TicketKey(ctx, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMixParallel is the 60/20/20 lookup/update/seed mix over 8
// connections, as make bench compares it with Postfix's tlsmgr.
func BenchmarkMixParallel(b *testing.B) {
	_, f := benchClient(b)
	ctx := context.Background()
	ids := benchIDs(500)
	session := make([]byte, 512)
	seedClient := client.New(f.path, client.Options{})
	for _, id := range ids {
		if err := seedClient.Update(ctx, "smtpd", id, session); err != nil {
			b.Fatal(err)
		}
	}
	seedClient.Close()
	b.SetParallelism(4) // 4 × GOMAXPROCS(2) = 8 connections
	b.RunParallel(func(pb *testing.PB) {
		c := client.New(f.path, client.Options{})
		defer c.Close()
		i := 0
		for pb.Next() {
			var err error
			switch i % 5 {
			case 0, 1, 2:
				_, err = c.Lookup(ctx, "smtpd", ids[i%len(ids)])
			case 3:
				err = c.Update(ctx, "smtpd", ids[i%len(ids)], session)
			case 4:
				_, err = c.Seed(ctx, 32)
			}
			if err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
