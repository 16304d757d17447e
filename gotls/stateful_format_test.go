package gotls

import (
	"context"
	"encoding/hex"
	"testing"
	"time"
)

// TestStatefulEntryOfAnotherFormat: an entry under a client's identity
// whose format byte is not one this version writes (a later version's,
// laid out otherwise) is a miss, even with the identity and a valid state
// where version 2 keeps them: the handshake is a full one.
func TestStatefulEntryOfAnotherFormat(t *testing.T) {
	dm := startDaemon(t)
	c := getCert(t)
	d := dm.dial(t, time.Second, nil)
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			scfg := serverConfig(c.cert, v.v)
			SetStatefulSessions(scfg, d, "smtpd")
			addr := startServer(t, scfg)
			cache := newRecordingCache()
			cfg := clientConfig(c.pool, v.v, cache)
			mustConnect(t, addr, cfg)
			identity := cache.last(t)
			id := idPrefix + hex.EncodeToString(identity)
			ctx := context.Background()
			entry, err := d.clients[0].Lookup(ctx, "smtpd", id)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := boundState(entry, identity); !ok {
				t.Fatal("the entry stored is not bound to its identity")
			}
			entry[0] = serverFormatV2 + 1
			if err := d.clients[0].Update(ctx, "smtpd", id, entry); err != nil {
				t.Fatal(err)
			}
			if cs := mustConnect(t, addr, cfg); cs.DidResume {
				t.Fatalf("resumed on an entry of format %d", entry[0])
			}
			if cs := mustConnect(t, addr, cfg); !cs.DidResume {
				t.Fatal("no resumption once the entry is good again")
			}
		})
	}
}
