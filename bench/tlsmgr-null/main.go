// Command tlsmgr-null is a do-nothing tlsmgr server for benchmarks: it
// speaks the protocol's framing (the announcement, attribute lists) but
// keeps no cache, draws no random bytes and checks nothing beyond what
// picks the reply. It reads each request and writes a fixed, valid reply
// prepared at start: a hit with a fixed session for every lookup, success
// for every update and delete, fixed bytes for a seed, one fixed ticket
// key. Its throughput is the IPC limit of the machine it runs on, the
// ceiling no tlsmgr can beat there; scripts/bench-compare runs it beside
// the real daemons.
//
//	tlsmgr-null -listen PATH [-payload BYTES]
//
// Connections are served as our daemon serves them, with blocking system
// calls (a read waiting in the kernel, then a write: two per request).
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/internal/blockio"
	"github.com/gotlsmgr/tlsmgr/proto"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("tlsmgr-null", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "", "UNIX socket to serve (required)")
	payload := fs.Int("payload", 512, "session bytes in every lookup reply")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *listen == "" || fs.NArg() != 0 || *payload < 0 || *payload > 48<<10 {
		fmt.Fprintln(stderr, "usage: tlsmgr-null -listen PATH [-payload BYTES (0..49152)]")
		return 2
	}
	// A fresh path: nothing is removed or chmod'ed, since the
	// benchmark runs this as root (the load generator is root too).
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: *listen, Net: "unix"})
	if err != nil {
		fmt.Fprintf(stderr, "tlsmgr-null: %v\n", err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		ln.Close() // removes the socket file
	}()
	if err := serve(ln, newReplies(*payload)); err != nil && !errors.Is(err, net.ErrClosed) {
		fmt.Fprintf(stderr, "tlsmgr-null: %v\n", err)
		return 1
	}
	return 0
}

// replies are the encoded reply lists, one per request kind.
type replies struct {
	lookup, ok, policy, tktkey, fail []byte
	seed                             [256][]byte // by size; [0] unused
}

func encode(body func(w *attr.Writer)) []byte {
	var b bytes.Buffer
	w := attr.NewWriter(&b)
	body(w)
	w.End()
	if err := w.Flush(); err != nil {
		panic(err) // fixed names and values: cannot happen
	}
	return b.Bytes()
}

func newReplies(payload int) *replies {
	session := make([]byte, payload)
	for i := range session {
		session[i] = byte(i*7 + 1)
	}
	var key proto.TicketKey
	for i := range key.Name {
		key.Name[i] = byte(i + 1)
	}
	for i := range key.AES {
		key.AES[i] = byte(0x20 + i)
	}
	for i := range key.HMAC {
		key.HMAC[i] = byte(0x60 + i)
	}
	key.Expiry = 1 << 40 // far in the future
	var rec [proto.TicketKeyRecordLen]byte
	key.MarshalTo(rec[:])

	r := &replies{
		lookup: encode(func(w *attr.Writer) {
			w.Int(proto.AttrStatus, proto.StatusOK)
			w.Data(proto.AttrSession, session)
		}),
		ok: encode(func(w *attr.Writer) { w.Int(proto.AttrStatus, proto.StatusOK) }),
		policy: encode(func(w *attr.Writer) {
			w.Int(proto.AttrStatus, proto.StatusOK)
			w.Int(proto.AttrCachable, 1)
			w.Int(proto.AttrTimeout, 3600)
		}),
		tktkey: encode(func(w *attr.Writer) {
			w.Int(proto.AttrStatus, proto.StatusOK)
			w.Data(proto.AttrKeyBuf, rec[:])
		}),
		fail: encode(func(w *attr.Writer) { w.Int(proto.AttrStatus, proto.StatusFail) }),
	}
	seed := make([]byte, 255)
	for i := range seed {
		seed[i] = byte(i*13 + 5)
	}
	for n := 1; n <= 255; n++ {
		r.seed[n] = encode(func(w *attr.Writer) {
			w.Int(proto.AttrStatus, proto.StatusOK)
			w.Data(proto.AttrSeed, seed[:n])
		})
	}
	return r
}

// pick returns the reply to one request.
func (r *replies) pick(req attr.List) []byte {
	if len(req) == 0 || string(req[0].Name) != proto.AttrRequest {
		return r.fail
	}
	switch string(req[0].Value) {
	case proto.RequestLookup:
		return r.lookup
	case proto.RequestUpdate, proto.RequestDelete:
		return r.ok
	case proto.RequestPolicy:
		return r.policy
	case proto.RequestTktKey:
		return r.tktkey
	case proto.RequestSeed:
		if v, ok := req[1:].Get(proto.AttrSize); ok {
			if n, err := attr.ParseInt(proto.AttrSize, v); err == nil && n > 0 && n <= 255 {
				return r.seed[n]
			}
		}
	}
	return r.fail
}

func serve(ln *net.UnixListener, r *replies) error {
	for {
		uc, err := ln.AcceptUnix()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		fd, err := blockingFD(uc)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tlsmgr-null: %v\n", err)
			continue
		}
		go serveConn(fd, r)
	}
}

// blockingFD takes the socket out of Go's netpoller: a duplicate of its
// descriptor in blocking mode.
func blockingFD(uc *net.UnixConn) (int, error) {
	defer uc.Close()
	rc, err := uc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, dupErr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, os.NewSyscallError("fcntl", dupErr)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("fcntl", err)
	}
	return fd, nil
}

type fdReader int

func (f fdReader) Read(p []byte) (int, error) { return blockio.Read(int(f), p) }

func serveConn(fd int, r *replies) {
	defer unix.Close(fd)
	if _, err := blockio.Write(fd, []byte(proto.Announcement)); err != nil {
		return
	}
	rd := attr.NewBufferedReader(bufio.NewReaderSize(fdReader(fd), 16<<10), attr.Limits{})
	for {
		req, err := rd.ReadList()
		var reply []byte
		switch {
		case err == nil:
			reply = r.pick(req)
		case err == attr.ErrTooLarge:
			reply = r.fail
		default:
			return // end of stream, or out of sync
		}
		if _, err := blockio.Write(fd, reply); err != nil {
			return
		}
	}
}
