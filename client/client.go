// Package client talks to a tlsmgr daemon (ours or Postfix's) over its UNIX
// socket, one method per request. A Client keeps its connection open and
// reuses it, as Postfix's smtpd and smtp do, and reconnects when the daemon
// went away (a restart, "postfix reload").
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// Status codes of tlsmgr replies.
const (
	StatusOK   = proto.StatusOK
	StatusErr  = proto.StatusErr
	StatusFail = proto.StatusFail
)

// ErrNotFound is returned for a reply with status -1: a cache miss, an
// unknown ticket key, a refused update, or nothing to delete.
var ErrNotFound = errors.New("tlsmgr: not found or refused")

// StatusError is a reply with a status other than OK. It matches
// ErrNotFound (errors.Is) when the status is -1.
type StatusError struct {
	Request string
	Status  int32
}

func (e *StatusError) Error() string {
	switch e.Status {
	case StatusErr:
		return fmt.Sprintf("tlsmgr %s: not found or refused (status -1)", e.Request)
	case StatusFail:
		return fmt.Sprintf("tlsmgr %s: request rejected as malformed or not allowed (status -2)", e.Request)
	}
	return fmt.Sprintf("tlsmgr %s: status %d", e.Request, e.Status)
}

func (e *StatusError) Is(target error) bool { return target == ErrNotFound && e.Status == StatusErr }

// ProtocolError is a reply the client could not understand.
type ProtocolError struct {
	Request string
	Why     string
}

func (e *ProtocolError) Error() string { return "tlsmgr " + e.Request + ": protocol error: " + e.Why }

// Options tune a Client. Zero values take defaults.
type Options struct {
	DialTimeout time.Duration // default 5s
	// Timeout bounds one request when ctx has no deadline (default 30s).
	Timeout time.Duration
	// Dial, if set, replaces net.Dialer: the load generator uses it for
	// connections with less per-request overhead.
	Dial func(ctx context.Context, path string) (net.Conn, error)
	// AnnouncementWait bounds the wait on a new connection for the
	// server's protocol announcement (default 200ms; never more than half
	// of what is left of the request's time). Our daemon and Postfix 3.6
	// and later announce; Postfix's tlsmgr before 3.6 waits for the
	// request, which is then sent without the announcement.
	AnnouncementWait time.Duration
}

// replyLimits bound what the client reads: the daemon's own limits, with
// room for stats replies, which are long.
var replyLimits = attr.Limits{MaxAttrs: 1024}

// Client is a connection to a tlsmgr daemon. It is safe for concurrent use;
// requests from several goroutines take turns on the one connection (open
// several Clients for parallelism).
type Client struct {
	path string
	opts Options

	mu sync.Mutex
	nc net.Conn
	r  *attr.Reader
	w  *attr.Writer
	// unannounced: the connection's server has not announced the
	// protocol (yet); a reply that is the announcement is skipped.
	unannounced bool
}

// New returns a client for the socket at path. It connects on first use.
func New(path string, opts Options) *Client {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.AnnouncementWait <= 0 {
		opts.AnnouncementWait = 200 * time.Millisecond
	}
	return &Client{path: path, opts: opts}
}

// Close closes the connection; the client reconnects if used again.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.drop()
}

func (c *Client) drop() error {
	if c.nc == nil {
		return nil
	}
	err := c.nc.Close()
	c.nc, c.r, c.w = nil, nil, nil
	return err
}

func (c *Client) connect(ctx context.Context) error {
	var nc net.Conn
	var err error
	if c.opts.Dial != nil {
		nc, err = c.opts.Dial(ctx, c.path)
	} else {
		d := net.Dialer{Timeout: c.opts.DialTimeout}
		nc, err = d.DialContext(ctx, "unix", c.path)
	}
	if err != nil {
		return err
	}
	c.nc, c.r, c.w = nc, attr.NewReader(nc, replyLimits), attr.NewWriter(nc)
	c.unannounced = false
	dl := c.deadline(ctx)
	wait := min(c.opts.AnnouncementWait, time.Until(dl)/2)
	c.nc.SetReadDeadline(time.Now().Add(wait))
	l, err := c.r.ReadList()
	switch {
	case err == nil && !isAnnouncement(l):
		c.drop()
		return &ProtocolError{Request: "connect", Why: "server did not announce tlsmgr_protocol"}
	case err == nil:
	case isTimeout(err) && c.r.Partial() == 0 && time.Now().Before(dl):
		// A server that waits for the request, as Postfix's tlsmgr
		// before 3.6 does (or one that announces late).
		c.unannounced = true
	default:
		c.drop()
		return fmt.Errorf("tlsmgr %s: read protocol announcement: %w", c.path, err)
	}
	return nil
}

func isAnnouncement(l attr.List) bool {
	v, ok := l.Get(proto.AttrProtocol)
	return ok && len(l) == 1 && string(v) == proto.ProtocolName
}

func (c *Client) deadline(ctx context.Context) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(c.opts.Timeout)
}

func (c *Client) setDeadline(ctx context.Context) { c.nc.SetDeadline(c.deadline(ctx)) }

// call sends one request and returns the reply list, valid until the next
// call; c.mu is held. A request on a reused connection that fails with an
// I/O error is retried once on a new connection: the daemon may have been
// restarted since the last request, and every request may be repeated.
func (c *Client) call(ctx context.Context, send func(w *attr.Writer)) (attr.List, error) {
	for attempt := 0; ; attempt++ {
		reused := c.nc != nil
		if !reused {
			if err := c.connect(ctx); err != nil {
				return nil, err
			}
		}
		c.setDeadline(ctx)
		send(c.w)
		c.w.End()
		err := c.w.Flush()
		var l attr.List
		if err == nil {
			l, err = c.r.ReadList()
		}
		if err == nil && c.unannounced {
			c.unannounced = false
			if isAnnouncement(l) {
				l, err = c.r.ReadList()
			}
		}
		if err == nil {
			return l, nil
		}
		c.drop()
		if errors.Is(err, attr.ErrNUL) {
			return nil, err
		}
		if !reused || attempt > 0 || ctx.Err() != nil || isTimeout(err) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// isTimeout reports a request that ran out of time: it is not retried,
// since the time limit bounds the whole request.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// reply checks a reply's status and returns the values of the named
// attributes, which must follow it in that order.
func reply(request string, l attr.List, names ...string) (int32, [][]byte, error) {
	if len(l) < 1 || string(l[0].Name) != proto.AttrStatus {
		return 0, nil, &ProtocolError{request, "reply has no status"}
	}
	status, err := attr.ParseInt(proto.AttrStatus, l[0].Value)
	if err != nil {
		return 0, nil, &ProtocolError{request, err.Error()}
	}
	if len(l) == 1 && status != StatusOK {
		// Our daemon answers a malformed request with the status alone.
		return status, nil, nil
	}
	if len(l) != 1+len(names) {
		return 0, nil, &ProtocolError{request, fmt.Sprintf("reply has %d attributes, want %d", len(l), 1+len(names))}
	}
	vals := make([][]byte, len(names))
	for i, n := range names {
		if string(l[1+i].Name) != n {
			return 0, nil, &ProtocolError{request, fmt.Sprintf("reply attribute %d is %q, want %q", 2+i, l[1+i].Name, n)}
		}
		vals[i] = l[1+i].Value
	}
	return status, vals, nil
}

func statusErr(request string, status int32) error {
	if status == StatusOK {
		return nil
	}
	return &StatusError{Request: request, Status: status}
}

// Seed asks for n (1..255) random bytes.
func (c *Client) Seed(ctx context.Context, n int) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, err := c.call(ctx, func(w *attr.Writer) {
		w.Str(proto.AttrRequest, proto.RequestSeed)
		w.Int(proto.AttrSize, int32(n))
	})
	if err != nil {
		return nil, err
	}
	status, v, err := reply(proto.RequestSeed, l, proto.AttrSeed)
	if err != nil || status != StatusOK {
		return nil, errors.Join(err, statusErr(proto.RequestSeed, status))
	}
	b, err := attr.ParseData(proto.AttrSeed, v[0])
	if err != nil {
		return nil, &ProtocolError{proto.RequestSeed, err.Error()}
	}
	return b, nil
}

// Policy is a policy reply.
type Policy struct {
	Cachable bool
	Timeout  time.Duration
}

// Policy asks whether a cache type is enabled and for its timeout.
func (c *Client) Policy(ctx context.Context, cacheType string) (Policy, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, err := c.call(ctx, func(w *attr.Writer) {
		w.Str(proto.AttrRequest, proto.RequestPolicy)
		w.Str(proto.AttrCacheType, cacheType)
	})
	if err != nil {
		return Policy{}, err
	}
	status, v, err := reply(proto.RequestPolicy, l, proto.AttrCachable, proto.AttrTimeout)
	if err != nil || status != StatusOK {
		return Policy{}, errors.Join(err, statusErr(proto.RequestPolicy, status))
	}
	cachable, err1 := attr.ParseInt(proto.AttrCachable, v[0])
	timeout, err2 := attr.ParseInt(proto.AttrTimeout, v[1])
	if err := errors.Join(err1, err2); err != nil {
		return Policy{}, &ProtocolError{proto.RequestPolicy, err.Error()}
	}
	return Policy{Cachable: cachable != 0, Timeout: time.Duration(timeout) * time.Second}, nil
}

// Lookup returns the session stored under id, or an error matching
// ErrNotFound on a miss.
func (c *Client) Lookup(ctx context.Context, cacheType, id string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, err := c.call(ctx, func(w *attr.Writer) {
		w.Str(proto.AttrRequest, proto.RequestLookup)
		w.Str(proto.AttrCacheType, cacheType)
		w.Str(proto.AttrCacheID, id)
	})
	if err != nil {
		return nil, err
	}
	status, v, err := reply(proto.RequestLookup, l, proto.AttrSession)
	if err != nil || status != StatusOK {
		return nil, errors.Join(err, statusErr(proto.RequestLookup, status))
	}
	b, err := attr.ParseData(proto.AttrSession, v[0])
	if err != nil {
		return nil, &ProtocolError{proto.RequestLookup, err.Error()}
	}
	return b, nil
}

// Update stores session under id.
func (c *Client) Update(ctx context.Context, cacheType, id string, session []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, err := c.call(ctx, func(w *attr.Writer) {
		w.Str(proto.AttrRequest, proto.RequestUpdate)
		w.Str(proto.AttrCacheType, cacheType)
		w.Str(proto.AttrCacheID, id)
		w.Data(proto.AttrSession, session)
	})
	if err != nil {
		return err
	}
	status, _, err := reply(proto.RequestUpdate, l)
	return errors.Join(err, statusErr(proto.RequestUpdate, status))
}

// Delete removes the entry under id; an error matching ErrNotFound means
// there was none.
func (c *Client) Delete(ctx context.Context, cacheType, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, err := c.call(ctx, func(w *attr.Writer) {
		w.Str(proto.AttrRequest, proto.RequestDelete)
		w.Str(proto.AttrCacheType, cacheType)
		w.Str(proto.AttrCacheID, id)
	})
	if err != nil {
		return err
	}
	status, _, err := reply(proto.RequestDelete, l)
	return errors.Join(err, statusErr(proto.RequestDelete, status))
}

// TicketKey asks for the current ticket encryption key (name nil) or for
// the decryption key with the given 16-byte name.
func (c *Client) TicketKey(ctx context.Context, name []byte) (proto.TicketKey, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, err := c.call(ctx, func(w *attr.Writer) {
		w.Str(proto.AttrRequest, proto.RequestTktKey)
		w.Data(proto.AttrKeyName, name)
	})
	if err != nil {
		return proto.TicketKey{}, err
	}
	status, v, err := reply(proto.RequestTktKey, l, proto.AttrKeyBuf)
	if err != nil || status != StatusOK {
		return proto.TicketKey{}, errors.Join(err, statusErr(proto.RequestTktKey, status))
	}
	rec, err := attr.ParseData(proto.AttrKeyBuf, v[0])
	if err != nil {
		return proto.TicketKey{}, &ProtocolError{proto.RequestTktKey, err.Error()}
	}
	k, err := proto.ParseTicketKey(rec)
	clear(rec)
	if err != nil {
		return proto.TicketKey{}, &ProtocolError{proto.RequestTktKey, err.Error()}
	}
	return k, nil
}

// Stats returns our daemon's counters (Postfix's tlsmgr does not have this
// request and leaves it unanswered: use a ctx with a deadline).
func (c *Client) Stats(ctx context.Context) ([][2]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, err := c.call(ctx, func(w *attr.Writer) { w.Str(proto.AttrRequest, proto.RequestStats) })
	if err != nil {
		return nil, err
	}
	if len(l) == 0 || string(l[0].Name) != proto.AttrStatus {
		return nil, &ProtocolError{proto.RequestStats, "reply has no status"}
	}
	status, err := attr.ParseInt(proto.AttrStatus, l[0].Value)
	if err != nil {
		return nil, &ProtocolError{proto.RequestStats, err.Error()}
	}
	if status != StatusOK {
		return nil, statusErr(proto.RequestStats, status)
	}
	out := make([][2]string, 0, len(l)-1)
	for _, a := range l[1:] {
		out = append(out, [2]string{string(a.Name), string(a.Value)})
	}
	return out, nil
}

// DumpEntry is one line of a dump: a short keyed hash of the id (never
// the id), the entry's age and its session's size.
type DumpEntry struct {
	IDHash string
	Age    time.Duration
	Size   int
}

// Dump lists up to max entries of a cache of our daemon, and returns how
// many it holds.
func (c *Client) Dump(ctx context.Context, cacheType string, max int) (total int, entries []DumpEntry, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, err := c.call(ctx, func(w *attr.Writer) {
		w.Str(proto.AttrRequest, proto.RequestDump)
		w.Str(proto.AttrCacheType, cacheType)
		w.Int(proto.AttrMax, int32(max))
	})
	if err != nil {
		return 0, nil, err
	}
	status, rest, err := controlReply(proto.RequestDump, l)
	if err != nil {
		return 0, nil, err
	}
	for _, a := range rest {
		switch string(a.Name) {
		case proto.AttrTotal:
			n, err := attr.ParseInt(proto.AttrTotal, a.Value)
			if err != nil {
				return 0, nil, &ProtocolError{proto.RequestDump, err.Error()}
			}
			total = int(n)
		case proto.AttrEntry:
			var e DumpEntry
			var age int64
			if _, err := fmt.Sscanf(string(a.Value), "%s %d %d", &e.IDHash, &age, &e.Size); err != nil {
				return 0, nil, &ProtocolError{proto.RequestDump, fmt.Sprintf("entry %q: %v", a.Value, err)}
			}
			e.Age = time.Duration(age) * time.Second
			entries = append(entries, e)
		}
	}
	return total, entries, statusReason(proto.RequestDump, status, rest)
}

// Flush empties a cache of our daemon and returns how many entries it
// removed. The daemon allows it to root and the mail owner only.
func (c *Client) Flush(ctx context.Context, cacheType string) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, err := c.call(ctx, func(w *attr.Writer) {
		w.Str(proto.AttrRequest, proto.RequestFlush)
		w.Str(proto.AttrCacheType, cacheType)
	})
	if err != nil {
		return 0, err
	}
	status, rest, err := controlReply(proto.RequestFlush, l)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, a := range rest {
		if string(a.Name) == proto.AttrCount {
			v, err := attr.ParseInt(proto.AttrCount, a.Value)
			if err != nil {
				return 0, &ProtocolError{proto.RequestFlush, err.Error()}
			}
			n = int(v)
		}
	}
	return n, statusReason(proto.RequestFlush, status, rest)
}

// controlReply splits a reply of our own requests into its status and the
// attributes after it.
func controlReply(request string, l attr.List) (int32, attr.List, error) {
	if len(l) == 0 || string(l[0].Name) != proto.AttrStatus {
		return 0, nil, &ProtocolError{request, "reply has no status"}
	}
	status, err := attr.ParseInt(proto.AttrStatus, l[0].Value)
	if err != nil {
		return 0, nil, &ProtocolError{request, err.Error()}
	}
	return status, l[1:], nil
}

// statusReason is statusErr with the daemon's reason, if it gave one.
func statusReason(request string, status int32, rest attr.List) error {
	err := statusErr(request, status)
	if err == nil {
		return nil
	}
	for _, a := range rest {
		if string(a.Name) == proto.AttrReason {
			return fmt.Errorf("%w: %s", err, a.Value)
		}
	}
	return err
}
