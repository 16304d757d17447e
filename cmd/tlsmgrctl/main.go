// Command tlsmgrctl talks to a running tlsmgr (ours or Postfix's): one
// subcommand per request, a stats dump, and a load generator.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/internal/loadgen"
	"github.com/gotlsmgr/tlsmgr/internal/postfixctl"
	"github.com/gotlsmgr/tlsmgr/internal/version"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// walkTimeout is dump's and flush's time limit unless -timeout is given:
// the daemon's own bound on them.
const walkTimeout = 10 * time.Minute

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

const usage = `usage: tlsmgrctl [-s SOCKET] [-timeout DURATION] [-show-secrets] COMMAND [ARGS]

commands:
  seed N                    print N (1..255) random bytes from the daemon, in hex
  policy TYPE               show whether cache TYPE (smtpd, smtp, lmtp) is enabled, and its timeout
  lookup TYPE ID            write the session stored under ID to standard output
  update TYPE ID FILE|-     store the bytes of FILE (or standard input) under ID
  delete TYPE ID            remove the entry under ID
  tktkey [NAME_HEX]         show the current ticket key, or the one named (secrets hidden unless -show-secrets)
  stats [-json]             show the daemon's counters as a table, or as one JSON object (our tlsmgr only)
  dump TYPE [-n N]          list up to N (100) entries of cache TYPE: a short hash of the id,
                            age and size, never the session (our tlsmgr only)
  flush TYPE                remove every entry of cache TYPE (our tlsmgr only; root or the mail owner)
  keys                      list the ticket-key ring: epoch, name, expiry,
                            fleet or local (never the secrets); our tlsmgr only
  bench [FLAGS]             load test; "tlsmgrctl bench -h" lists its flags
  version                   print tlsmgrctl's version and the daemon's (our tlsmgr only)
  postfix enable|disable|status|state-files [-c CONFIG_DIR]
                            switch master.cf's tlsmgr service to tlsmgr-go and back,
                            proving each switch; "tlsmgrctl postfix" lists the details

The socket defaults to $TLSMGR_SOCKET, else /var/spool/postfix/private/tlsmgr.
Exit status: 0 success, 1 not found or refused (status -1), 2 any other error.
tlsmgrctl(1) has the details.

flags:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tlsmgrctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	def := os.Getenv("TLSMGR_SOCKET")
	if def == "" {
		def = "/var/spool/postfix/private/tlsmgr"
	}
	socket := fs.String("s", def, "daemon socket")
	timeout := fs.Duration("timeout", 10*time.Second, "time limit for one request")
	showSecrets := fs.Bool("show-secrets", false, "tktkey: also print the AES and HMAC keys")
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help") {
		fs.SetOutput(stdout) // asked for: the usage is the output
		fs.Usage()
		return 0
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "bench":
		return bench(*socket, rest, stdout, stderr)
	case "postfix":
		return postfixCommand(rest, stdout, stderr)
	}
	if (cmd == "dump" || cmd == "flush") && !flagSet(fs, "timeout") {
		// They walk a whole cache: its size decides how long they take.
		*timeout = walkTimeout
	}
	c := client.New(*socket, client.Options{Timeout: *timeout})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	err := command(ctx, c, *socket, cmd, rest, *showSecrets, stdin, stdout)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "tlsmgrctl: %v\n", err)
		fs.Usage()
		return 2
	case errors.Is(err, client.ErrNotFound):
		fmt.Fprintf(stderr, "tlsmgrctl: %v\n", err)
		return 1
	default:
		fmt.Fprintf(stderr, "tlsmgrctl: %v\n", err)
		return 2
	}
}

var errUsage = errors.New("usage")

// oursOnly checks, for the commands that only tlsmgr-go knows, that
// tlsmgr-go answers on socket: Postfix's own tlsmgr leaves them
// unanswered, and is recognised a second later instead of at the end of
// the timeout.
func oursOnly(ctx context.Context, socket, cmd string) error {
	_, err := oursStats(ctx, socket, cmd)
	return err
}

// oursStats returns the stats of tlsmgr-go on socket, or the error that
// another daemon answers there.
func oursStats(ctx context.Context, socket, cmd string) ([][2]string, error) {
	pairs, d, err := postfixctl.Stats(ctx, socket)
	if err != nil {
		return nil, err
	}
	if !d.Ours {
		return nil, fmt.Errorf("%s: %s answers there; %s needs tlsmgr-go (tlsmgrctl postfix enable switches to it): %w",
			socket, d, cmd, postfixctl.ErrNotOurs)
	}
	return pairs, nil
}

func nargs(cmd string, args []string, min, max int) error {
	if len(args) < min || len(args) > max {
		return fmt.Errorf("%w: wrong number of arguments for %s", errUsage, cmd)
	}
	return nil
}

func command(ctx context.Context, c *client.Client, socket, cmd string, args []string, showSecrets bool, stdin io.Reader, stdout io.Writer) error {
	switch cmd {
	case "dump", "flush":
		if err := oursOnly(ctx, socket, cmd); err != nil {
			return err
		}
	}
	switch cmd {
	case "seed":
		if err := nargs(cmd, args, 1, 1); err != nil {
			return err
		}
		n, err := strconv.Atoi(args[0])
		if err != nil || n < 1 || n > 255 {
			return fmt.Errorf("%w: seed size must be a number from 1 to 255", errUsage)
		}
		b, err := c.Seed(ctx, n)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, hex.EncodeToString(b))
	case "policy":
		if err := nargs(cmd, args, 1, 1); err != nil {
			return err
		}
		p, err := c.Policy(ctx, args[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "cachable=%d timeout=%d\n", b2i(p.Cachable), int(p.Timeout/time.Second))
	case "lookup":
		if err := nargs(cmd, args, 2, 2); err != nil {
			return err
		}
		b, err := c.Lookup(ctx, args[0], args[1])
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	case "update":
		if err := nargs(cmd, args, 3, 3); err != nil {
			return err
		}
		var b []byte
		var err error
		if args[2] == "-" {
			b, err = io.ReadAll(io.LimitReader(stdin, 1<<20))
		} else {
			b, err = os.ReadFile(args[2])
		}
		if err != nil {
			return err
		}
		return c.Update(ctx, args[0], args[1], b)
	case "delete":
		if err := nargs(cmd, args, 2, 2); err != nil {
			return err
		}
		return c.Delete(ctx, args[0], args[1])
	case "tktkey":
		if err := nargs(cmd, args, 0, 1); err != nil {
			return err
		}
		var name []byte
		if len(args) == 1 {
			var err error
			if name, err = hex.DecodeString(args[0]); err != nil || len(name) != 16 {
				return fmt.Errorf("%w: key name must be 32 hex digits", errUsage)
			}
		}
		k, err := c.TicketKey(ctx, name)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "name=%x expiry=%d (%s)\n", k.Name, k.Expiry, k.ExpiryTime().UTC().Format(time.RFC3339))
		if showSecrets {
			fmt.Fprintf(stdout, "aes=%x hmac=%x\n", k.AES, k.HMAC)
		}
		k.Wipe()
	case "version":
		if err := nargs(cmd, args, 0, 0); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "tlsmgrctl %s\n", version.String())
		pairs, err := oursStats(ctx, socket, cmd)
		if err != nil {
			return fmt.Errorf("the daemon's version: %w", err)
		}
		for _, p := range pairs {
			if p[0] == proto.VersionStat {
				fmt.Fprintf(stdout, "tlsmgr %s\n", p[1])
				return nil
			}
		}
		return fmt.Errorf("the daemon's version: its stats reply has no %s (a tlsmgr older than the version pair): %w", proto.VersionStat, client.ErrNotFound)
	case "stats":
		asJSON := false
		switch {
		case len(args) == 1 && args[0] == "-json":
			asJSON = true
		case len(args) != 0:
			return fmt.Errorf("%w: stats takes only -json", errUsage)
		}
		pairs, err := oursStats(ctx, socket, cmd)
		if err != nil {
			return err
		}
		if asJSON {
			return statsJSON(stdout, pairs)
		}
		statsTable(stdout, pairs)
	case "dump":
		max := 100
		switch {
		case len(args) == 3 && args[1] == "-n":
			n, err := strconv.Atoi(args[2])
			if err != nil || n < 0 {
				return fmt.Errorf("%w: -n takes a number", errUsage)
			}
			max = n
		case len(args) != 1:
			return fmt.Errorf("%w: dump TYPE [-n N]", errUsage)
		}
		total, entries, err := c.Dump(ctx, args[0], max)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "# %s cache: %d entries, %d listed\n", args[0], total, len(entries))
		for _, e := range entries {
			fmt.Fprintf(stdout, "%s age=%s size=%d\n", e.IDHash, e.Age, e.Size)
		}
	case "flush":
		if err := nargs(cmd, args, 1, 1); err != nil {
			return err
		}
		n, err := c.Flush(ctx, args[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s cache: %d entries removed\n", args[0], n)
	case "keys":
		if err := nargs(cmd, args, 0, 0); err != nil {
			return err
		}
		pairs, err := oursStats(ctx, socket, cmd)
		if err != nil {
			return err
		}
		for _, p := range pairs {
			switch {
			case p[0] == proto.RingKeyStat: // keys: the ring, from the stats
				fmt.Fprintln(stdout, p[1])
			case p[0] == proto.KeyModeStat, p[0] == proto.RingDigestStat:
				fmt.Fprintf(stdout, "# %s = %s\n", p[0], p[1])
			}
		}
	default:
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
	return nil
}

// statsTable prints the pairs as two aligned columns, a blank line
// between groups (the name's first word: requests, smtpd, tktkey, prng...).
func statsTable(w io.Writer, pairs [][2]string) {
	width := 0
	for _, p := range pairs {
		width = max(width, len(p[0]))
	}
	group := ""
	for i, p := range pairs {
		g, _, _ := strings.Cut(p[0], "_")
		if i > 0 && g != group {
			fmt.Fprintln(w)
		}
		group = g
		fmt.Fprintf(w, "%-*s  %s\n", width, p[0], p[1])
	}
}

// statsJSON prints the pairs as one JSON object: numbers as numbers, a
// name given more than once (the ring's keys) as an array, in order.
func statsJSON(w io.Writer, pairs [][2]string) error {
	values := map[string][]any{}
	var order []string
	for _, p := range pairs {
		var v any = p[1]
		if f, err := strconv.ParseFloat(p[1], 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
			v = json.Number(p[1])
		}
		if _, seen := values[p[0]]; !seen {
			order = append(order, p[0])
		}
		values[p[0]] = append(values[p[0]], v)
	}
	var b strings.Builder
	b.WriteString("{")
	for i, name := range order {
		if i > 0 {
			b.WriteString(",")
		}
		k, _ := json.Marshal(name)
		var v []byte
		if vs := values[name]; len(vs) == 1 && name != proto.RingKeyStat {
			v, _ = json.Marshal(vs[0])
		} else {
			v, _ = json.Marshal(vs)
		}
		fmt.Fprintf(&b, "\n  %s: %s", k, v)
	}
	b.WriteString("\n}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func bench(socket string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tlsmgrctl bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mix := fs.String("mix", "lookup=60,update=20,seed=20", "request mix: op=weight,... (ops: "+strings.Join(loadgen.Ops, " ")+")")
	conns := fs.Int("c", 1, "concurrent connections")
	duration := fs.Duration("d", 10*time.Second, "measured duration")
	warmup := fs.Duration("warmup", time.Second, "unmeasured warm-up")
	payload := fs.Int("payload", 512, "session bytes per update")
	prefill := fs.Int("prefill", 10000, "entries stored before the run (lookups hit them)")
	keyspace := fs.Int("keys", 0, "ids updates draw from (default: prefill)")
	cacheType := fs.String("type", "smtpd", "cache type")
	seedSize := fs.Int("seed-size", 32, "bytes per seed request")
	netpoll := fs.Bool("netpoll", false, "use Go's netpoller instead of blocking system calls on the connections")
	procs := fs.Int("procs", 0, "OS threads running the load generator's Go code (GOMAXPROCS); 0: Go's default")
	tsv := fs.Bool("tsv", false, "print one line: requests/s, p50, p99, p999 (microseconds), errors")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	m, err := loadgen.ParseMix(*mix)
	if err != nil {
		fmt.Fprintf(stderr, "tlsmgrctl bench: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := loadgen.Run(ctx, loadgen.Config{
		Socket: socket, Mix: m, Connections: *conns, Duration: *duration, Warmup: *warmup,
		Payload: *payload, Prefill: *prefill, Keyspace: *keyspace, CacheType: *cacheType, SeedSize: *seedSize, NetPoll: *netpoll,
	})
	if err != nil {
		fmt.Fprintf(stderr, "tlsmgrctl bench: %v\n", err)
		return 2
	}
	if *tsv {
		us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
		fmt.Fprintf(stdout, "%.0f\t%.1f\t%.1f\t%.1f\t%d\n", res.PerSecond, us(res.P50), us(res.P99), us(res.P999), res.Errors)
		return 0
	}
	fmt.Fprintf(stdout, "socket %s, %d connection(s), mix %s, payload %d\n", socket, *conns, *mix, *payload)
	fmt.Fprint(stdout, res)
	return 0
}
