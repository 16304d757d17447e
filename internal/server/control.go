package server

// Our own requests for operators (tlsmgrctl dump and flush): Postfix's
// clients never send them. Neither ever shows an id or a session.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/internal/maillog"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// maxDumpMax is the most entries one dump reply carries (each line is
// about 40 bytes).
const maxDumpMax = 10000

// dump lists a cache's entries: a short keyed hash of each id, its age in
// seconds and its session's size, and how many entries there are.
func (c *conn) dump(args attr.List) bool {
	v, ok := c.args(proto.RequestDump, args, attrCacheType, proto.AttrMax)
	if !ok {
		return c.reply(func() { c.w.Int(attrStatus, StatusFail) })
	}
	max, err := attr.ParseInt(proto.AttrMax, v[1])
	if err != nil || max < 0 {
		c.badRequest(proto.RequestDump, "bad %s %q", proto.AttrMax, printable(v[1]))
		return c.reply(func() { c.w.Int(attrStatus, StatusFail) })
	}
	cache := c.enabledCache(proto.RequestDump, v[0])
	if cache == nil {
		return c.refuse("the cache is unknown or disabled")
	}
	ctx, cancel := c.operatorContext()
	entries, total, err := cache.Dump(ctx, min(int(max), maxDumpMax))
	cancel()
	if err != nil {
		maillog.Warnf(c.srv.cfg.Log, "dump of the %s cache for %s: %v", cache.Name(), c.peer, err)
		return c.refuse(err.Error())
	}
	return c.reply(func() {
		c.w.Int(attrStatus, StatusOK)
		c.w.Int(proto.AttrTotal, int32(min(total, 1<<31-1)))
		for _, e := range entries {
			c.w.Str(proto.AttrEntry, fmt.Sprintf("%s %d %d", e.IDHash, int64(e.Age.Seconds()), e.Size))
		}
	})
}

// flush empties a cache, for root and the mail owner only: anyone who
// can reach the socket may read and write sessions, but wiping every
// host's sessions of a shared cache is an operator's decision.
func (c *conn) flush(args attr.List) bool {
	v, ok := c.args(proto.RequestFlush, args, attrCacheType)
	if !ok {
		return c.reply(func() { c.w.Int(attrStatus, StatusFail) })
	}
	if err := c.mayControl(); err != nil {
		maillog.Warnf(c.srv.cfg.Log, "flush of the %s cache refused to %s: %v", printable(v[0]), c.peer, err)
		return c.refuse(err.Error())
	}
	cache := c.enabledCache(proto.RequestFlush, v[0])
	if cache == nil {
		return c.refuse("the cache is unknown or disabled")
	}
	ctx, cancel := c.operatorContext()
	start := time.Now()
	n, err := cache.Flush(ctx)
	cancel()
	maillog.Infof(c.srv.cfg.Log, "%s cache flushed for %s: %d entries removed in %v", cache.Name(), c.peer, n,
		time.Since(start).Round(time.Millisecond))
	if err != nil {
		maillog.Warnf(c.srv.cfg.Log, "flush of the %s cache for %s: %v", cache.Name(), c.peer, err)
		return c.refuse(fmt.Sprintf("flushed %d entries, then: %v", n, err))
	}
	return c.reply(func() {
		c.w.Int(attrStatus, StatusOK)
		c.w.Int(proto.AttrCount, int32(min(n, 1<<31-1)))
	})
}

var errNotOperator = errors.New("only root and the mail owner may flush a cache")

// mayControl asks the kernel who connected (SO_PEERCRED) and whether
// Config.MayControl lets that uid run operators' commands.
func (c *conn) mayControl() error {
	uid, err := c.t.peerUID()
	if err != nil {
		return err
	}
	if c.srv.cfg.MayControl == nil || !c.srv.cfg.MayControl(uid) {
		return fmt.Errorf("%w (uid %d is neither)", errNotOperator, uid)
	}
	return nil
}

// operatorTimeout bounds a dump or flush, which walk a whole cache (a
// shared one in batches, each under the store's own per-call deadline)
// rather than make one store call: its size, not StoreTimeout, decides
// how long they take. The watchdog (daemon_timeout) watches them too.
const operatorTimeout = 10 * time.Minute

func (c *conn) operatorContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.srv.base, operatorTimeout)
}

// refuse answers status -1 with the reason.
func (c *conn) refuse(reason string) bool {
	return c.reply(func() {
		c.w.Int(attrStatus, StatusErr)
		c.w.Str(proto.AttrReason, reason)
	})
}
