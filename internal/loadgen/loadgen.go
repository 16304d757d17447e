// Package loadgen drives a tlsmgr daemon (ours or Postfix's) with a
// configurable request mix over several connections and measures
// throughput and latency percentiles. tlsmgrctl bench is its front end.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
)

// Ops are the request kinds a mix may name.
var Ops = []string{"lookup", "update", "seed", "policy", "delete", "tktkey"}

// Config describes one run.
type Config struct {
	Socket      string
	Mix         map[string]int // op -> weight
	Connections int
	Duration    time.Duration
	Warmup      time.Duration // run, but do not measure
	Payload     int           // session bytes per update
	Prefill     int           // entries stored before the run; lookups draw from them
	Keyspace    int           // ids updates and deletes draw from (default max(Prefill, 1000))
	CacheType   string        // default smtpd
	SeedSize    int           // default 32
	MaxSamples  int           // latency samples kept per connection (default 4M)
	// NetPoll makes the connections use Go's netpoller instead of blocking
	// system calls: fewer OS threads when there are many connections.
	NetPoll bool
}

// ParseMix reads "lookup=60,update=20,seed=20" (a bare op means weight 1).
func ParseMix(s string) (map[string]int, error) {
	mix := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		op, w, found := strings.Cut(part, "=")
		op, w = strings.TrimSpace(op), strings.TrimSpace(w)
		weight := 1
		if found {
			n, err := strconv.Atoi(w)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("bad weight %q for %s", w, op)
			}
			weight = n
		}
		if !slices.Contains(Ops, op) {
			return nil, fmt.Errorf("unknown op %q (want one of %s)", op, strings.Join(Ops, ", "))
		}
		mix[op] += weight
	}
	total := 0
	for _, w := range mix {
		total += w
	}
	if total == 0 {
		return nil, errors.New("the op mix is empty")
	}
	return mix, nil
}

// OpResult is the outcome for one op kind.
type OpResult struct {
	Op             string
	Count, Errors  uint64
	Misses         uint64 // status -1 replies (cache misses, unknown keys)
	P50, P99, P999 time.Duration
}

// Result is the outcome of a run.
type Result struct {
	Elapsed        time.Duration
	Requests       uint64
	Errors         uint64
	PerSecond      float64
	P50, P99, P999 time.Duration
	Ops            []OpResult
	FirstError     error
}

func (r *Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "requests %d in %.2fs: %.0f req/s, errors %d\n", r.Requests, r.Elapsed.Seconds(), r.PerSecond, r.Errors)
	fmt.Fprintf(&b, "latency  p50 %v  p99 %v  p999 %v\n", r.P50, r.P99, r.P999)
	for _, o := range r.Ops {
		fmt.Fprintf(&b, "  %-7s %9d  misses %-8d errors %-6d p50 %-10v p99 %-10v p999 %v\n",
			o.Op, o.Count, o.Misses, o.Errors, o.P50, o.P99, o.P999)
	}
	if r.FirstError != nil {
		fmt.Fprintf(&b, "first error: %v\n", r.FirstError)
	}
	return b.String()
}

func id(cacheType string, n int) string {
	// Shaped like smtpd's ids; hex so every store accepts it.
	return fmt.Sprintf("%032x&s=%s&l=805306672", n, cacheType)
}

type sample struct {
	op  uint8
	lat time.Duration
}

type worker struct {
	c       *client.Client
	rng     *rand.Rand
	samples []sample
	counts  [6]struct{ n, errs, misses uint64 }
	first   error
}

// Run performs the run described by cfg.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Connections <= 0 {
		cfg.Connections = 1
	}
	if cfg.CacheType == "" {
		cfg.CacheType = "smtpd"
	}
	if cfg.SeedSize <= 0 {
		cfg.SeedSize = 32
	}
	if cfg.Keyspace <= 0 {
		cfg.Keyspace = max(cfg.Prefill, 1000)
	}
	if cfg.MaxSamples <= 0 {
		cfg.MaxSamples = 4 << 20
	}
	var wheel []uint8 // op index per weight unit
	for i, op := range Ops {
		for j := 0; j < cfg.Mix[op]; j++ {
			wheel = append(wheel, uint8(i))
		}
	}
	if len(wheel) == 0 {
		return nil, errors.New("the op mix is empty")
	}
	payload := make([]byte, cfg.Payload)
	for i := range payload {
		payload[i] = byte(i*7 + 1)
	}
	if err := prefill(ctx, cfg, payload); err != nil {
		return nil, err
	}

	workers := make([]*worker, cfg.Connections)
	for i := range workers {
		workers[i] = &worker{
			c:   client.New(cfg.Socket, clientOptions(cfg)),
			rng: rand.New(rand.NewPCG(uint64(i)+1, 42)),
		}
		defer workers[i].c.Close()
		// Connect before the clock starts.
		if _, err := workers[i].c.Policy(ctx, cfg.CacheType); err != nil {
			return nil, fmt.Errorf("connect %s: %w", cfg.Socket, err)
		}
	}
	var measuring sync.WaitGroup
	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	stop := measureFrom.Add(cfg.Duration)
	for _, w := range workers {
		measuring.Add(1)
		go func() {
			defer measuring.Done()
			w.run(ctx, cfg, wheel, payload, measureFrom, stop)
		}()
	}
	measuring.Wait()
	elapsed := time.Since(measureFrom)
	return summarize(workers, elapsed), nil
}

func clientOptions(cfg Config) client.Options {
	if cfg.NetPoll {
		return client.Options{}
	}
	return client.Options{Dial: dialBlocking(30 * time.Second)}
}

func prefill(ctx context.Context, cfg Config, payload []byte) error {
	if cfg.Prefill <= 0 {
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for p := 0; p < 4; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client.New(cfg.Socket, client.Options{})
			defer c.Close()
			for n := p; n < cfg.Prefill; n += 4 {
				if err := c.Update(ctx, cfg.CacheType, id(cfg.CacheType, n), payload); err != nil {
					errs <- fmt.Errorf("prefill: %w", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (w *worker) run(ctx context.Context, cfg Config, wheel []uint8, payload []byte, measureFrom, stop time.Time) {
	for {
		t0 := time.Now()
		if !t0.Before(stop) || ctx.Err() != nil {
			return
		}
		op := wheel[w.rng.IntN(len(wheel))]
		err := w.do(ctx, cfg, op, payload)
		lat := time.Since(t0)
		if t0.Before(measureFrom) {
			continue
		}
		c := &w.counts[op]
		c.n++
		switch {
		case err == nil:
		case errors.Is(err, client.ErrNotFound):
			c.misses++
		default:
			c.errs++
			if w.first == nil {
				w.first = err
			}
			if errors.Is(err, io.ErrUnexpectedEOF) || ctx.Err() != nil {
				time.Sleep(10 * time.Millisecond) // a restarting daemon: do not spin
			}
		}
		if len(w.samples) < cfg.MaxSamples {
			w.samples = append(w.samples, sample{op, lat})
		}
	}
}

func (w *worker) do(ctx context.Context, cfg Config, op uint8, payload []byte) error {
	switch Ops[op] {
	case "lookup":
		n := w.rng.IntN(max(cfg.Prefill, 1))
		_, err := w.c.Lookup(ctx, cfg.CacheType, id(cfg.CacheType, n))
		return err
	case "update":
		return w.c.Update(ctx, cfg.CacheType, id(cfg.CacheType, w.rng.IntN(cfg.Keyspace)), payload)
	case "seed":
		_, err := w.c.Seed(ctx, cfg.SeedSize)
		return err
	case "policy":
		_, err := w.c.Policy(ctx, cfg.CacheType)
		return err
	case "delete":
		return w.c.Delete(ctx, cfg.CacheType, id(cfg.CacheType, cfg.Prefill+w.rng.IntN(cfg.Keyspace)))
	case "tktkey":
		_, err := w.c.TicketKey(ctx, nil)
		return err
	}
	return fmt.Errorf("unknown op %d", op)
}

func summarize(workers []*worker, elapsed time.Duration) *Result {
	r := &Result{Elapsed: elapsed}
	var all []time.Duration
	perOp := make([][]time.Duration, len(Ops))
	var counts [6]struct{ n, errs, misses uint64 }
	for _, w := range workers {
		for _, s := range w.samples {
			all = append(all, s.lat)
			perOp[s.op] = append(perOp[s.op], s.lat)
		}
		for i, c := range w.counts {
			counts[i].n += c.n
			counts[i].errs += c.errs
			counts[i].misses += c.misses
		}
		if r.FirstError == nil {
			r.FirstError = w.first
		}
	}
	for i, op := range Ops {
		c := counts[i]
		if c.n == 0 {
			continue
		}
		r.Requests += c.n
		r.Errors += c.errs
		p := percentiles(perOp[i])
		r.Ops = append(r.Ops, OpResult{Op: op, Count: c.n, Errors: c.errs, Misses: c.misses, P50: p[0], P99: p[1], P999: p[2]})
	}
	p := percentiles(all)
	r.P50, r.P99, r.P999 = p[0], p[1], p[2]
	if elapsed > 0 {
		r.PerSecond = float64(r.Requests) / elapsed.Seconds()
	}
	return r
}

func percentiles(d []time.Duration) [3]time.Duration {
	if len(d) == 0 {
		return [3]time.Duration{}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return [3]time.Duration{at(0.50), at(0.99), at(0.999)}
}
