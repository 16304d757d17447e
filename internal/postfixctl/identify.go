package postfixctl

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// Daemon says which tlsmgr answers on a socket.
type Daemon struct {
	Ours    bool   // this project's daemon: it answers stats
	Version string // ours: its version
	// Answered is how long the first answer took (stats for ours, a seed
	// request for another).
	Answered time.Duration
}

func (d Daemon) String() string {
	if d.Ours {
		return "tlsmgr-go " + d.Version
	}
	return "a tlsmgr without the stats request (Postfix's own)"
}

// ErrNotOurs is the error of Identify's callers that need our daemon.
var ErrNotOurs = errors.New("not tlsmgr-go")

// statsPatience is how long a stats request may stay unanswered, while a
// seed request was answered, before the daemon is taken for one that
// does not know stats: Postfix's tlsmgr leaves an unknown request
// unanswered, ours answers stats as fast as a seed. The seed request
// goes only after probeAfter without an answer, so that ours sees only
// the stats request.
const (
	statsPatience = time.Second
	probeAfter    = 200 * time.Millisecond
)

// Identify finds which tlsmgr answers on socket (see Stats). An error
// means that neither request was answered (nothing listens, or the
// daemon is stuck) within ctx.
func Identify(ctx context.Context, socket string) (Daemon, error) {
	_, d, err := Stats(ctx, socket)
	return d, err
}

// Stats sends a stats request to the daemon on socket and returns its
// answer, and which daemon answered. Ours answers; Postfix's own leaves
// the request unanswered but answers a seed request sent on another
// connection, and is recognised a second after that answer (nil pairs,
// no error) rather than at the end of ctx.
func Stats(ctx context.Context, socket string) ([][2]string, Daemon, error) {
	start := time.Now()
	type answer struct {
		pairs [][2]string
		err   error
	}
	stats := make(chan answer, 1)
	seed := make(chan error, 1)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		c := client.New(socket, client.Options{})
		defer c.Close()
		pairs, err := c.Stats(sctx)
		stats <- answer{pairs, err}
	}()
	ours := func(a answer) ([][2]string, Daemon, error) {
		if a.err != nil {
			return nil, Daemon{}, a.err
		}
		d := Daemon{Ours: true, Answered: time.Since(start)}
		for _, p := range a.pairs {
			if p[0] == proto.VersionStat {
				d.Version = p[1]
			}
		}
		return a.pairs, d, nil
	}
	probe := time.NewTimer(probeAfter)
	defer probe.Stop()
	var seedErr error
	var seedAt time.Time
	seeded := false
	var patience <-chan time.Time
	for {
		select {
		case a := <-stats:
			if a.err == nil || !seeded || seedErr != nil {
				return ours(a)
			}
			// Answered, but not as ours does: an error status.
			return nil, Daemon{Answered: seedAt.Sub(start)}, nil
		case <-probe.C:
			go func() {
				c := client.New(socket, client.Options{})
				defer c.Close()
				_, err := c.Seed(sctx, 1)
				seed <- err
			}()
		case seedErr = <-seed:
			seeded, seedAt = true, time.Now()
			if seedErr != nil {
				continue // the stats answer (or ctx) decides
			}
			t := time.NewTimer(statsPatience)
			defer t.Stop()
			patience = t.C
		case <-patience:
			return nil, Daemon{Answered: seedAt.Sub(start)}, nil
		case <-ctx.Done():
			if seeded && seedErr != nil {
				return nil, Daemon{}, fmt.Errorf("no answer from %s: %w", socket, seedErr)
			}
			return nil, Daemon{}, fmt.Errorf("no answer from %s: %w", socket, ctx.Err())
		}
	}
}
