package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/internal/maillog"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/tktkey"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// Status codes of tlsmgr replies.
const (
	StatusOK   = proto.StatusOK
	StatusErr  = proto.StatusErr
	StatusFail = proto.StatusFail
)

// Attribute names, short for this file.
const (
	attrRequest   = proto.AttrRequest
	attrStatus    = proto.AttrStatus
	attrCacheType = proto.AttrCacheType
	attrCacheID   = proto.AttrCacheID
	attrSession   = proto.AttrSession
	attrSize      = proto.AttrSize
	attrSeed      = proto.AttrSeed
	attrCachable  = proto.AttrCachable
	attrTimeout   = proto.AttrTimeout
	attrKeyName   = proto.AttrKeyName
	attrKeyBuf    = proto.AttrKeyBuf
)

const announcement = proto.Announcement

type conn struct {
	srv  *Server
	t    transport
	peer string
	rd   reqReader
	r    *attr.Reader
	w    *attr.Writer
	now  time.Time // of the request being served
	vals [3][]byte // request attribute values, reused
	// idle is, while the connection waits for a request, the time of its
	// last one (or of its start) in nanoseconds since the server started,
	// plus one; 0 while a request is read or answered. Eviction picks the
	// smallest.
	idle    atomic.Uint64
	stopped atomic.Bool // see stop
	// lossy: stopped, and the transport loses what the client has sent
	// and the connection not yet read.
	lossy   atomic.Bool
	evicted bool // out of the client table; srv.mu
	// busy times the request being answered for the watchdog; busyAt is
	// its value without the cache. See watchdog.go.
	busy   atomic.Uint64
	busyAt uint64

	// How the connection began (greet): whether the announcement went
	// out, whether the client spoke before it could, and, with
	// ClientFirst, whether the first bytes are still awaited.
	announced, spokeFirst, awaitFirst bool
	requests                          int // read on the connection so far
}

// reqReader is what the attribute reader reads a connection through. It
// tells the wait for a request, under the idle timeout, from the reads of
// the rest of a request that did not come in one piece, which must all be
// done within RequestTimeout of the second read. Real clients send a
// request in one write, so the time limit costs nothing on that path.
type reqReader struct {
	c        *conn
	begun    bool      // the current request's first bytes are in
	deadline time.Time // for its remaining bytes; zero until needed
}

func (r *reqReader) Read(p []byte) (int, error) {
	c := r.c
	if !r.begun {
		var n int
		var err error
		if c.awaitFirst {
			n, err = c.readFirst(p)
		} else {
			n, err = c.t.readNext(p)
		}
		if n > 0 {
			r.begun = true
			c.idle.Store(0)
		}
		return n, err
	}
	if r.deadline.IsZero() {
		r.deadline = time.Now().Add(c.srv.cfg.RequestTimeout)
	}
	return c.t.readBy(p, r.deadline)
}

// await prepares for the next request. With bytes of it buffered already
// (a client that does not wait for replies) it has begun; otherwise the
// connection is idle, and may be evicted, until its first bytes come.
func (c *conn) await(buffered bool) {
	c.rd.begun, c.rd.deadline = buffered, time.Time{}
	if !buffered {
		c.idle.Store(uint64(c.now.Sub(c.srv.start)) + 1)
	}
}

// stop makes the connection end once it has answered what its client has
// sent so far: Shutdown and eviction use it. Reads go on until what is
// queued has been consumed and then see end of file, so a request already
// sent is answered and closing does not reset the client's connection;
// the client's later writes fail. A transport that cannot shut down its
// reading side (-S on a pipe) loses a request sent but not yet read
// instead (lossy). srv.mu is held, so the transport is still open.
func (c *conn) stop() {
	if c.stopped.Swap(true) {
		return
	}
	if !c.t.stop() {
		c.lossy.Store(true)
	}
}

// abort wakes the connection's reads and writes at once, when Shutdown
// runs out of time. srv.mu is held, so the transport is still open.
func (c *conn) abort() {
	c.stopped.Store(true)
	c.t.abort()
}

func (c *conn) serve() {
	log := c.srv.cfg.Log
	maillog.Debugf(log, 1, "connect from %s", c.peer)
	defer maillog.Debugf(log, 1, "disconnect from %s", c.peer)
	if !c.greet() {
		return
	}
	c.rd.c = c
	br := bufio.NewReaderSize(&c.rd, 16<<10)
	c.r = attr.NewBufferedReader(br, c.srv.cfg.Limits)
	c.w = attr.NewWriter(c.t)
	for first := true; ; first = false {
		c.await(br.Buffered() > 0)
		if first && c.masterTrigger(br) {
			maillog.Debugf(log, 1, "received master trigger from %s", c.peer)
			return
		}
		req, err := c.r.ReadList()
		switch {
		case err == nil:
			if c.requests++; c.requests == 1 && c.spokeFirst {
				c.mismatch(oldClient, "sent its first request before the protocol announcement")
			}
		case err == attr.ErrTooLarge:
			c.srv.counters.malformed.Add(1)
			maillog.Warnf(log, "request from %s exceeds the size limits (%d bytes per attribute, %d per request)",
				c.peer, c.srv.cfg.Limits.MaxValue, c.srv.cfg.Limits.MaxList)
			if !c.reply(func() { c.w.Int(attrStatus, StatusFail) }) {
				return
			}
			continue
		case c.stopped.Load():
			// Evicted or shutting down, and everything the client sent
			// before has been answered.
			maillog.Debugf(log, 1, "closing connection from %s: %v", c.peer, err)
			return
		case err == io.EOF:
			return
		case errors.Is(err, syscall.ECONNRESET):
			// The client closed with a reply unread. After the first
			// request, that is how a client reading the announcement as
			// its reply gives up.
			if c.readAsReply() {
				c.mismatch(oldClient, "hung up without reading the reply to its first request")
			}
			return
		case err == io.ErrUnexpectedEOF && first && c.r.Partial() <= 2:
			// master(8) wakes us by writing one byte and closing.
			maillog.Debugf(log, 1, "received master trigger from %s", c.peer)
			return
		case err == attr.ErrOutOfSync:
			c.srv.counters.malformed.Add(1)
			maillog.Warnf(log, "request from %s does not end within the size limits: closing the connection", c.peer)
			return
		case errors.Is(err, os.ErrDeadlineExceeded) && c.rd.begun:
			c.srv.counters.timedOut.Add(1)
			maillog.Warnf(log, "request from %s not complete within %v: closing the connection", c.peer, c.srv.cfg.RequestTimeout)
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			maillog.Warnf(log, "timeout while waiting for data from %s", c.peer)
			return
		case err == io.ErrUnexpectedEOF:
			maillog.Warnf(log, "end-of-input while reading request from %s", c.peer)
			return
		default:
			maillog.Warnf(log, "read request from %s: %v", c.peer, err)
			return
		}
		c.now = time.Now()
		c.arrived()
		if pool := c.srv.cfg.Pool; pool != nil {
			var t [8]byte
			binary.LittleEndian.PutUint64(t[:], uint64(c.now.UnixNano()))
			pool.Mix(t[:])
		}
		if !c.dispatch(req) {
			return
		}
		if c.lossy.Load() && c.srv.closing.Load() {
			return // a request sent since could not be told from none
		}
	}
}

// masterTrigger reports whether the connection begins with master(8)'s
// wake-up: the byte W and a null byte (unix_trigger), which master.cf's
// wakeup time sends. master(8) then waits for the server to write or
// close: an announcement ends it, but a server that does not announce
// (clients of Postfix 3.5 and earlier) must close, or master warns of a
// read timeout 100 s later and the request timeout warns here first. No
// request begins so: its first attribute is "request".
func (c *conn) masterTrigger(br *bufio.Reader) bool {
	// One byte first: a client waiting for the reply to a one-byte list
	// (an empty one) must not wait here for a second.
	if b, err := br.Peek(1); err != nil || b[0] != masterWakeup[0] {
		return false
	}
	b, err := br.Peek(len(masterWakeup))
	return err == nil && string(b) == masterWakeup
}

// masterWakeup is what master(8)'s trigger writes.
const masterWakeup = "W\x00"

// reply writes one reply list and flushes it; false means the connection
// is broken.
func (c *conn) reply(body func()) bool {
	c.replying()
	c.t.beginReply()
	body()
	c.w.End()
	if err := c.w.Flush(); err != nil {
		if (errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) && c.readAsReply() {
			c.mismatch(oldClient, "hung up before the reply to its first request")
			return false
		}
		maillog.Warnf(c.srv.cfg.Log, "write reply to %s: %v", c.peer, err)
		return false
	}
	return true
}

// greet begins a connection as the server's clients expect: with the
// protocol announcement (ServerFirst) or without (ClientFirst, see
// readFirst). False means the connection is finished.
func (c *conn) greet() bool {
	if c.srv.cfg.Greeting == ClientFirst {
		c.awaitFirst = true
		return true
	}
	if c.t.pending() {
		// A client that speaks first (Postfix 3.5 or earlier) would take
		// the announcement for its reply; master(8)'s wake-up byte too
		// comes unasked. A client that waits for the announcement never
		// writes before it, so leaving it out cannot hurt one.
		c.spokeFirst = true
		return true
	}
	return c.announce()
}

func (c *conn) announce() bool {
	c.t.beginReply()
	if _, err := io.WriteString(c.t, announcement); err != nil {
		// The master's wakeup trigger often closes before we speak.
		maillog.Debugf(c.srv.cfg.Log, 1, "write protocol announcement to %s: %v", c.peer, err)
		return false
	}
	c.announced = true
	return true
}

// readFirst is the first read of a ClientFirst connection. A client
// silent for LateAnnouncement is waiting for the announcement (Postfix
// 3.6 or later): it gets it then, and the read goes on as usual.
func (c *conn) readFirst(p []byte) (int, error) {
	cfg := &c.srv.cfg
	n, err := c.t.readBy(p, time.Now().Add(cfg.LateAnnouncement))
	c.awaitFirst = false
	if !errors.Is(err, os.ErrDeadlineExceeded) || n > 0 || c.stopped.Load() {
		return n, err
	}
	c.mismatch(newClient, fmt.Sprintf("sent nothing for %v: announced the protocol late", cfg.LateAnnouncement))
	if !c.announce() {
		return 0, io.EOF
	}
	return c.t.readNext(p)
}

// readAsReply reports whether the client may have read the announcement
// as the reply to its first request: one request answered on an
// announced connection, then the client went away with the reply unread.
func (c *conn) readAsReply() bool {
	return c.requests == 1 && c.announced && c.srv.cfg.Greeting == ServerFirst
}

// Which way a mismatch goes, for its warning.
const (
	oldClient = "it speaks first, as Postfix 3.5 and earlier do, and loses TLS when it reads the announcement as its reply; " +
		"set tlsmgr_protocol_announcement = no if Postfix before 3.6 uses this tlsmgr"
	newClient = "it waits for the server, as Postfix 3.6 and later do; " +
		"set tlsmgr_protocol_announcement = yes if Postfix 3.6 or later uses this tlsmgr"
)

// mismatch counts and reports a client whose expectation of who speaks
// first is not the server's. The warning is written before the count
// moves, so whoever sees the count (a metrics scrape, a test) finds the
// warning already in the log.
func (c *conn) mismatch(hint, what string) {
	maillog.Warnf(c.srv.cfg.Log, "protocol mismatch: client %s %s: %s (now: %v)", c.peer, what, hint, c.srv.cfg.Greeting)
	c.srv.counters.mismatched.Add(1)
}

// dispatch answers one request. Requests and replies carry exactly the
// attributes Postfix's tlsmgr and its clients use, in the same order.
func (c *conn) dispatch(req attr.List) bool {
	if len(req) == 0 || string(req[0].Name) != attrRequest {
		// Postfix leaves such a client waiting; an answer is kinder.
		c.srv.counters.malformed.Add(1)
		maillog.Warnf(c.srv.cfg.Log, "request from %s does not start with a %q attribute", c.peer, attrRequest)
		return c.reply(func() { c.w.Int(attrStatus, StatusFail) })
	}
	name, args := string(req[0].Value), req[1:]
	c.dispatched(name)
	if rs := c.srv.counters.requests[name]; rs != nil {
		rs.count.Add(1)
		defer rs.done(time.Now())
	}
	switch name {
	case proto.RequestSeed:
		return c.seed(args)
	case proto.RequestPolicy:
		return c.policy(args)
	case proto.RequestLookup:
		return c.lookup(args)
	case proto.RequestUpdate:
		return c.update(args)
	case proto.RequestDelete:
		return c.delete(args)
	case proto.RequestTktKey:
		return c.tktkey(args)
	case proto.RequestStats:
		return c.stats(args)
	case proto.RequestDump:
		return c.dump(args)
	case proto.RequestFlush:
		return c.flush(args)
	}
	c.srv.counters.malformed.Add(1)
	maillog.Warnf(c.srv.cfg.Log, "unknown request %q from %s", printable(req[0].Value), c.peer)
	return c.reply(func() { c.w.Int(attrStatus, StatusFail) })
}

// args checks that a request holds exactly the named attributes, each once,
// in any order, and returns their values in the order of names.
func (c *conn) args(request string, got attr.List, names ...string) ([][]byte, bool) {
	vals := c.vals[:len(names)]
	clear(vals)
	seen := 0
	for _, a := range got {
		i := indexOf(names, a.Name)
		if i < 0 || vals[i] != nil {
			c.badRequest(request, "unexpected attribute %q", printable(a.Name))
			return nil, false
		}
		vals[i] = a.Value
		seen++
	}
	if seen != len(names) {
		for i, v := range vals {
			if v == nil {
				c.badRequest(request, "missing attribute %q", names[i])
				break
			}
		}
		return nil, false
	}
	return vals, true
}

func indexOf(names []string, name []byte) int {
	for i, n := range names {
		if n == string(name) {
			return i
		}
	}
	return -1
}

func (c *conn) badRequest(request, format string, args ...any) {
	c.srv.counters.malformed.Add(1)
	maillog.Warnf(c.srv.cfg.Log, "bad %q request from %s: "+format, append([]any{request, c.peer}, args...)...)
}

func (c *conn) seed(args attr.List) bool {
	status, out := StatusFail, []byte(nil)
	var buf [255]byte
	if v, ok := c.args(proto.RequestSeed, args, attrSize); ok {
		n, err := attr.ParseInt(attrSize, v[0])
		switch {
		case err != nil:
			c.badRequest(proto.RequestSeed, "%v", err)
		case n <= 0 || n > 255:
			c.badRequest(proto.RequestSeed, "bogus seed length \"%d\"", n)
		default:
			if _, err := io.ReadFull(c.srv.cfg.Pool, buf[:n]); err != nil {
				maillog.Warnf(c.srv.cfg.Log, "PRNG: %v (seed request from %s)", err, c.peer)
				status = StatusErr
			} else {
				status, out = StatusOK, buf[:n]
				c.srv.counters.seedBytes.Add(uint64(n))
			}
		}
	}
	ok := c.reply(func() {
		c.w.Int(attrStatus, status)
		c.w.Data(attrSeed, out)
	})
	clear(buf[:])
	return ok
}

// cacheType finds the named cache type, warning about unknown names.
func (c *conn) cacheType(request string, name []byte) (*CacheType, bool) {
	for i := range c.srv.cfg.Caches {
		if ct := &c.srv.cfg.Caches[i]; ct.Name == string(name) {
			c.cacheChosen(i)
			return ct, true
		}
	}
	c.badRequest(request, "bogus cache type \"%s\"", printable(name))
	return nil, false
}

func (c *conn) policy(args attr.List) bool {
	status, cachable, timeout := StatusFail, int32(0), int32(0)
	if v, ok := c.args(proto.RequestPolicy, args, attrCacheType); ok {
		if ct, ok := c.cacheType(proto.RequestPolicy, v[0]); ok {
			status, timeout = StatusOK, int32(ct.Timeout()/time.Second)
			if ct.Cache != nil {
				cachable = 1
			}
		}
	}
	return c.reply(func() {
		c.w.Int(attrStatus, status)
		c.w.Int(attrCachable, cachable)
		c.w.Int(attrTimeout, timeout)
	})
}

// enabledCache resolves the cache of a lookup/update/delete request.
// Unknown and disabled types are usage errors, as in Postfix.
func (c *conn) enabledCache(request string, name []byte) *scache.Cache {
	ct, ok := c.cacheType(request, name)
	if !ok {
		return nil
	}
	if ct.Cache == nil {
		maillog.Debugf(c.srv.cfg.Log, 1, "%s request for disabled %s cache from %s", request, ct.Name, c.peer)
	}
	return ct.Cache
}

// cacheContext is storeContext for a call to cache, telling a cache that
// logs its transactions which client it serves.
func (c *conn) cacheContext(cache *scache.Cache) (context.Context, context.CancelFunc) {
	ctx, cancel := c.storeContext()
	if cache.Logging() {
		ctx = scache.WithClient(ctx, c.peer)
	}
	return ctx, cancel
}

// storeContext bounds a store call by StoreTimeout from the request's
// arrival; a Shutdown that runs out of patience cancels it.
func (c *conn) storeContext() (context.Context, context.CancelFunc) {
	if c.srv.cfg.StoreTimeout <= 0 {
		return c.srv.base, func() {}
	}
	return context.WithDeadline(c.srv.base, c.now.Add(c.srv.cfg.StoreTimeout))
}

func (c *conn) lookup(args attr.List) bool {
	status, session := StatusFail, []byte(nil)
	if v, ok := c.args(proto.RequestLookup, args, attrCacheType, attrCacheID); ok {
		if cache := c.enabledCache(proto.RequestLookup, v[0]); cache != nil {
			ctx, cancel := c.cacheContext(cache)
			s, err := cache.Lookup(ctx, string(v[1]))
			cancel()
			switch {
			case err == nil:
				status, session = StatusOK, s
			case errors.Is(err, scache.ErrNotFound):
				status = StatusErr
			default:
				maillog.Warnf(c.srv.cfg.Log, "%v; answered as a miss to %s", err, c.peer)
				status = StatusErr
			}
		}
	}
	ok := c.reply(func() {
		c.w.Int(attrStatus, status)
		c.w.Data(attrSession, session)
	})
	clear(session)
	return ok
}

func (c *conn) update(args attr.List) bool {
	status := StatusFail
	if v, ok := c.args(proto.RequestUpdate, args, attrCacheType, attrCacheID, attrSession); ok {
		session, err := attr.ParseData(attrSession, v[2])
		if err != nil {
			c.badRequest(proto.RequestUpdate, "%v", errShort(err))
		} else if cache := c.enabledCache(proto.RequestUpdate, v[0]); cache != nil {
			ctx, cancel := c.cacheContext(cache)
			err := cache.Update(ctx, string(v[1]), session)
			cancel()
			switch {
			case err == nil:
				status = StatusOK
			case errors.Is(err, scache.ErrTooLarge):
				maillog.Warnf(c.srv.cfg.Log, "%s TLS cache: entry of %d bytes from %s is over the cache size limit",
					cache.Name(), len(session), c.peer)
				status = StatusErr
			case errors.Is(err, scache.ErrStoreFailing):
				// The store reports its outage with counts itself.
				status = StatusErr
			default:
				maillog.Warnf(c.srv.cfg.Log, "%v; update from %s refused", err, c.peer)
				status = StatusErr
			}
		}
		clear(session)
	}
	return c.reply(func() { c.w.Int(attrStatus, status) })
}

func (c *conn) delete(args attr.List) bool {
	status := StatusFail
	if v, ok := c.args(proto.RequestDelete, args, attrCacheType, attrCacheID); ok {
		if cache := c.enabledCache(proto.RequestDelete, v[0]); cache != nil {
			ctx, cancel := c.cacheContext(cache)
			found, err := cache.Delete(ctx, string(v[1]))
			cancel()
			switch {
			case errors.Is(err, scache.ErrStoreFailing):
				status = StatusErr
			case err != nil:
				maillog.Warnf(c.srv.cfg.Log, "%v; delete from %s refused", err, c.peer)
				status = StatusErr
			case found:
				status = StatusOK
			default:
				status = StatusErr
			}
		}
	}
	return c.reply(func() { c.w.Int(attrStatus, status) })
}

func (c *conn) tktkey(args attr.List) bool {
	status := StatusFail
	var rec [proto.TicketKeyRecordLen]byte
	var out []byte
	if v, ok := c.args(proto.RequestTktKey, args, attrKeyName); ok {
		name, err := attr.ParseData(attrKeyName, v[0])
		switch {
		case err != nil:
			c.badRequest(proto.RequestTktKey, "%v", errShort(err))
		case len(name) != 0 && len(name) != proto.TicketNameLen:
			c.badRequest(proto.RequestTktKey, "invalid session ticket key name length: %d", len(name))
		case c.srv.cfg.Keys == nil:
			status = StatusErr
		default:
			var key proto.TicketKey
			if len(name) == 0 {
				ctx, cancel := c.storeContext()
				key, err = c.srv.cfg.Keys.Encrypting(ctx)
				cancel()
			} else {
				ctx, cancel := c.storeContext()
				key, err = c.srv.cfg.Keys.Decrypting(ctx, [proto.TicketNameLen]byte(name))
				cancel()
			}
			switch {
			case err == nil:
				out = rec[:c.srv.cfg.KeyRecordLen]
				key.MarshalLayout(out)
				key.Wipe()
				status = StatusOK
			case errors.Is(err, tktkey.ErrDisabled), errors.Is(err, tktkey.ErrUnknownKey):
				status = StatusErr
			default:
				maillog.Warnf(c.srv.cfg.Log, "session ticket key for %s: %v", c.peer, err)
				status = StatusErr
			}
		}
	}
	ok := c.reply(func() {
		c.w.Int(attrStatus, status)
		c.w.Data(attrKeyBuf, out)
	})
	clear(rec[:])
	return ok
}

// errShort drops the value from a syntax error: session data and key
// names must not reach the log.
func errShort(err error) error {
	var se *attr.SyntaxError
	if errors.As(err, &se) {
		return errors.New("attribute " + se.Name + ": " + se.Why)
	}
	return err
}

// printable makes client-supplied text safe for the log, shortening it.
func printable(b []byte) string {
	const max = 100
	out := make([]byte, 0, min(len(b), max))
	for i, ch := range b {
		if i == max {
			out = append(out, "..."...)
			break
		}
		if ch < 0x20 || ch > 0x7e {
			ch = '?'
		}
		out = append(out, ch)
	}
	return string(out)
}
