package redisconn

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/settings"
	"github.com/gotlsmgr/tlsmgr/internal/redistest"
)

// servesUnixSocket has the server listen on redis.sock in its directory
// too, named as the server sees it (inside its root, for a flavour run in
// one).
func servesUnixSocket(s *redistest.Server) {
	sock := filepath.Join(s.Dir, "redis.sock")
	f, err := redistest.SelectedFlavour()
	if err == nil && f.Root() != "" {
		if rel, err := filepath.Rel(f.Root(), sock); err == nil {
			sock = "/" + rel
		}
	}
	redistest.WithConfig("unixsocket "+sock, "unixsocketperm 700")(s)
}

// servers = unix:/path reaches Redis over its local socket.
func TestUnixSocketServer(t *testing.T) {
	srv := redistest.Single(t, servesUnixSocket)
	s := single("unix:" + filepath.Join(srv.Dir, "redis.sock"))
	// What is checked is the transport, not deadlines.
	s.Timeout = time.Second
	c, log := dial(t, s, nil)
	set(t, c, "tlsmgr:k", "over the socket")
	wantGet(t, c, "tlsmgr:k", "over the socket")
	// The same key, seen through TCP: the same server.
	tcp, _ := dial(t, func() *settings.Settings { s := single(srv.Addr); s.Timeout = time.Second; return s }(), nil)
	wantGet(t, tcp, "tlsmgr:k", "over the socket")
	if st := c.Stats(); st.State != StateUp || st.Errors != 0 {
		t.Errorf("stats %+v", st)
	}
	log.Want(t)
}
