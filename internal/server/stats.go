package server

import (
	"context"

	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/internal/metrics"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// Stats returns the daemon's figures as ordered name/value pairs: the
// same pairs a "stats" request returns, from the registry.
func (s *Server) Stats(ctx context.Context) [][2]string {
	return metrics.Pairs(s.metrics.Gather(ctx))
}

// stats answers our "stats" request (not part of Postfix's protocol): the
// status, then one string attribute per counter.
func (c *conn) stats(args attr.List) bool {
	if _, ok := c.args(proto.RequestStats, args); !ok {
		return c.reply(func() { c.w.Int(attrStatus, StatusFail) })
	}
	ctx, cancel := c.storeContext()
	pairs := c.srv.Stats(ctx)
	cancel()
	return c.reply(func() {
		c.w.Int(attrStatus, StatusOK)
		for _, p := range pairs {
			c.w.Str(p[0], p[1])
		}
	})
}
