package integration

// A fleet under real Postfix: several Postfix instances, each running our
// tlsmgr under master(8), share their TLS session caches and ticket-key
// ring through one real redis-server, and real TLS clients (openssl
// s_client, Postfix's own smtp client) resume at one member what another
// member established.
//
// What Postfix 3.7 keys its caches on, found by reading the ids tlsmgr
// logs at smtpd_tls_loglevel=2, decides how these fleets are laid out:
//
//   - smtpd's session-id cache: HEXID&s=SERVICE&l=OPENSSL_VERSION, where
//     SERVICE is the master.cf service name: "127.0.0.1:10025" for a
//     service written so, "10025" for one written by port alone. Members
//     on different ports, or named "127.0.0.1:P" and "127.0.0.2:P", look
//     up different ids and never find each other's sessions, however
//     shared the cache. A real fleet does not have that problem: every
//     member's master.cf says "smtp inet ... smtpd", so every member's
//     service name is "smtp". The honest imitation is the same: every
//     member's smtpd is named by the same port alone and listens on its own
//     address through inet_interfaces. Postfix accepts only addresses of a
//     local interface there, so members past the first need loopback
//     aliases (127.0.0.2, 127.0.0.3), which loopbackAddrs adds.
//   - tickets (TLS 1.2 and 1.3) carry no service name and resume across
//     any two members that share the ring, whatever their ports.
//   - the smtp client's cache: smtp&NEXTHOP&HOST&ADDR&&DIGEST (the
//     client's master.cf service name, the next hop, the server's name and
//     address, and a digest of the TLS policy), so two members share an
//     entry when they relay to the same server with the same policy:
//     every member here relays to member 1's relay smtpd.
//
// Members with different certificates resume each other's sessions and
// tickets alike (a server-side session does not hold the server's
// certificate), so each member keeps the one scripts/postfix-instance made.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

// loopbackAddrs returns 127.0.0.1 to 127.0.0.n, each an address of lo:
// an address it lacks is added (a /32 alias) for the test and removed
// after it. Tests using them run one at a time on the machine (a lock
// held until the test's end), so that one test run does not remove an
// alias from under another's.
func loopbackAddrs(t *testing.T, n int) []string {
	t.Helper()
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "tlsmgr-test-loopback.lock"), os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() }) // after the aliases' removal, registered later
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	if ifaddrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range ifaddrs {
			if ipn, ok := a.(*net.IPNet); ok {
				have[ipn.IP.String()] = true
			}
		}
	}
	var addrs []string
	for i := 1; i <= n; i++ {
		addr := fmt.Sprintf("127.0.0.%d", i)
		addrs = append(addrs, addr)
		if have[addr] {
			continue
		}
		if out, err := exec.Command("ip", "addr", "add", addr+"/32", "dev", "lo").CombinedOutput(); err != nil {
			testenv.Missing(t, fmt.Sprintf("loopback address %s (ip addr add needs CAP_NET_ADMIN): %v: %s", addr, err, strings.TrimSpace(string(out))))
		}
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "addr", "del", addr+"/32", "dev", "lo").CombinedOutput(); err != nil {
				t.Errorf("remove loopback address %s: %v: %s", addr, err, out)
			}
		})
	}
	return addrs
}

// sharedSettings are the main.cf settings that make all three databases
// the fleet's, on the Redis of the settings file cf; none for cf "".
func sharedSettings(cf string) []string {
	if cf == "" {
		return nil
	}
	return []string{
		"smtpd_tls_session_cache_database=redis:" + cf,
		"smtp_tls_session_cache_database=redis:" + cf,
		"tlsmgr_ticket_key_database=redis:" + cf,
	}
}

// startPostfixFleet starts n Postfix instances with our tlsmgr: member i
// listens on 127.0.0.(i+1), every member on the same smtpd port with its
// services named by port alone (see the top of this file), and every
// member relays to member 1's relay smtpd. With cf (a Redis settings
// file) all three databases are the fleet's; with cf "" each member keeps
// its own default state (file caches, a ring in memory).
func startPostfixFleet(t *testing.T, n int, cf string) []*instance {
	t.Helper()
	addrs := loopbackAddrs(t, n)
	port := freePortAt(t, "0.0.0.0") // free on every address
	shared := sharedSettings(cf)
	var fleet []*instance
	for i, addr := range addrs {
		settings := shared
		if i > 0 {
			settings = append(settings[:len(settings):len(settings)], fmt.Sprintf("relayhost=[%s]:%d", fleet[0].addr, fleet[0].relayPort))
		}
		fleet = append(fleet, newInstanceWith(t, tlsmgrBin, instanceOptions{addr: addr, smtpdPort: port, portNames: true, settings: settings}))
	}
	return fleet
}

// restartWith stops the instance, changes main.cf and starts it again:
// a new master(8), so new smtpd processes and a new tlsmgr.
func (in *instance) restartWith(t *testing.T, settings ...string) {
	t.Helper()
	in.script("stop")
	waitFor(t, 20*time.Second, "Postfix to stop", func() bool {
		return exec.Command("postfix", "-c", filepath.Join(in.dir, "etc"), "status").Run() != nil && in.tlsmgrPID() == 0
	})
	in.postconf(settings...)
	in.script("start")
	waitFor(t, 20*time.Second, "smtpd to listen", func() bool {
		c, err := net.Dial("tcp", in.smtpdAddr())
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// logIDs returns the ids of the tlsmgr log records "OP CACHE session
// id=ID" (at smtpd_tls_loglevel=2), in order.
func logIDs(log, op, cache string) []string {
	re := regexp.MustCompile(`postfix/tlsmgr\[\d+\]: ` + op + ` ` + cache + ` session id=(\S+)`)
	var ids []string
	for _, m := range re.FindAllStringSubmatch(log, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

func last(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

// smtpdReuse counts smtpd's "Reusing old session" records: from the
// session-id cache (ticket false) or from a ticket (ticket true).
func smtpdReuse(log string, ticket bool) int {
	re := regexp.MustCompile(`(?m)postfix/smtpd\[\d+\]: \S+: Reusing old session$`)
	if ticket {
		re = regexp.MustCompile(`(?m)postfix/smtpd\[\d+\]: \S+: Reusing old session \(RFC 5077 session ticket\)$`)
	}
	return len(re.FindAllString(log, -1))
}

func noPanics(t *testing.T, fleet []*instance) {
	t.Helper()
	for i, in := range fleet {
		if log := in.maillog(); strings.Contains(log, "panic:") {
			t.Errorf("member %d logged a panic:\n%s", i+1, log)
		}
	}
}

// TestFleetUnderPostfix: two Postfix instances on one Redis. A TLS 1.2
// session saved through the first resumes at the second from the shared
// session-id cache; TLS 1.3 and TLS 1.2 tickets from the first resume at
// the second with the shared ring; and the second's smtp client resumes
// the session the first's established with their common destination.
func TestFleetUnderPostfix(t *testing.T) {
	need(t, true, "postfix", "postconf", "openssl", "redis-server", "ip")
	srv := redistest.Single(t)
	fleet := startPostfixFleet(t, 2, fleetSettings(t, []string{srv.Addr}))
	a, b := fleet[0], fleet[1]

	t.Run("smtpd session id cache", func(t *testing.T) {
		sess := filepath.Join(t.TempDir(), "session.pem")
		tls12 := []string{"-tls1_2", "-no_ticket"}
		if got := a.handshake(t, tls12, sess, ""); got != "New" {
			t.Fatalf("first handshake at member 1: %s, want New", got)
		}
		var saved string
		waitFor(t, 10*time.Second, "member 1 to save the session", func() bool {
			saved = last(logIDs(a.maillog(), "put", "smtpd"))
			return saved != ""
		})
		// The id carries the service name, the same on both members.
		if want := fmt.Sprintf("&s=%d&", a.smtpdPort); !strings.Contains(saved, want) {
			t.Errorf("member 1 saved id %s, want one with the service name %q", saved, want)
		}
		before := smtpdReuse(b.maillog(), false)
		if got := b.handshakeWait(t, tls12, "", sess, 0); got != "Reused" {
			t.Fatalf("member 2 did not resume member 1's session: %s\nmember 2's log:\n%s", got, b.maillog())
		}
		waitFor(t, 10*time.Second, "member 2's smtpd to log the reuse from its cache", func() bool {
			return smtpdReuse(b.maillog(), false) > before
		})
		looked := logIDs(b.maillog(), "lookup", "smtpd")
		if !strings.Contains(strings.Join(looked, "\n")+"\n", saved+"\n") {
			t.Errorf("member 2 looked up %q, not the id member 1 saved, %s", looked, saved)
		}
	})

	for _, tc := range []struct {
		name string
		args []string
	}{{"TLS 1.3 tickets", []string{"-tls1_3"}}, {"TLS 1.2 tickets", []string{"-tls1_2"}}} {
		t.Run(tc.name, func(t *testing.T) {
			sess := filepath.Join(t.TempDir(), "session.pem")
			if got := a.handshake(t, tc.args, sess, ""); got != "New" {
				t.Fatalf("first handshake at member 1: %s, want New", got)
			}
			before := smtpdReuse(b.maillog(), true)
			if got := b.handshakeWait(t, tc.args, "", sess, 0); got != "Reused" {
				t.Fatalf("member 2 did not resume member 1's ticket: %s\nmember 2's log:\n%s", got, b.maillog())
			}
			// From the ticket, not from a cache that TLS 1.2 also fills.
			waitFor(t, 10*time.Second, "member 2's smtpd to log the reuse of a ticket", func() bool {
				return smtpdReuse(b.maillog(), true) > before
			})
		})
	}

	t.Run("smtp client cache", func(t *testing.T) {
		dest := fmt.Sprintf("127.0.0.1[127.0.0.1]:%d", a.relayPort) // member 1's relay smtpd, both members' relayhost
		delivered := regexp.MustCompile(`postfix/smtp\[\d+\]: \w+: to=<rcpt@relay\.test>, relay=` + regexp.QuoteMeta(dest) + `, .*status=sent`)
		reused := regexp.MustCompile(`postfix/smtp\[\d+\]: ` + regexp.QuoteMeta(dest) + `: Reusing old session`)
		a.sendMail(t)
		var saved string
		waitFor(t, 30*time.Second, "member 1's delivery, its session saved", func() bool {
			log := a.maillog()
			saved = last(logIDs(log, "put", "smtp"))
			return delivered.MatchString(log) && saved != ""
		})
		if reused.MatchString(a.maillog()) {
			t.Fatal("member 1's first delivery already reused a session")
		}
		b.sendMail(t)
		waitFor(t, 30*time.Second, "member 2's delivery to reuse member 1's session", func() bool {
			log := b.maillog()
			return reused.MatchString(log) && delivered.MatchString(log)
		})
		if looked := logIDs(b.maillog(), "lookup", "smtp"); !strings.Contains(strings.Join(looked, "\n")+"\n", saved+"\n") {
			t.Errorf("member 2's smtp looked up %q, not the id member 1 saved, %s", looked, saved)
		}
	})

	noPanics(t, fleet)
}

// roundRobin obtains a session from member 1, then reconnects n times to
// members 1, 2, 3, 1, ... offering it, and returns how many reconnections
// resumed and a line of them (member number, R for resumed, N for new).
func roundRobin(t *testing.T, fleet []*instance, args []string, n int) (resumed int, trace string) {
	t.Helper()
	sess := filepath.Join(t.TempDir(), "session.pem")
	if got := fleet[0].handshake(t, args, sess, ""); got != "New" {
		t.Fatalf("first handshake at member 1: %s, want New", got)
	}
	var steps []string
	for i := range n {
		m := i % len(fleet)
		got := fleet[m].handshakeWait(t, args, "", sess, 0)
		if got == "Reused" {
			resumed++
		}
		steps = append(steps, fmt.Sprintf("%d%c", m+1, got[0]))
	}
	return resumed, strings.Join(steps, " ")
}

// TestFleetResumptionRoundRobin measures what a fleet gains: a client that
// got its session from one member and reconnects round-robin over three
// resumes only at the member that issued it (about 1/3) while each member
// keeps its own state, and nearly always once the same three members
// share the ring and caches through Redis (main.cf changed and Postfix
// restarted, as the set-up in docs/fleet.md does).
func TestFleetResumptionRoundRobin(t *testing.T) {
	need(t, true, "postfix", "postconf", "openssl", "redis-server", "ip")
	const members, reconnects = 3, 12
	srv := redistest.Single(t)
	cf := fleetSettings(t, []string{srv.Addr})
	fleet := startPostfixFleet(t, members, "")
	protocols := []struct {
		name string
		args []string
	}{
		{"TLS 1.3 tickets", []string{"-tls1_3"}},
		{"TLS 1.2 session ids", []string{"-tls1_2", "-no_ticket"}},
	}
	fraction := map[string]map[string]float64{}
	for _, mode := range []string{"separate", "shared"} {
		if mode == "shared" {
			for _, in := range fleet {
				in.restartWith(t, sharedSettings(cf)...)
			}
		}
		fraction[mode] = map[string]float64{}
		for _, p := range protocols {
			resumed, trace := roundRobin(t, fleet, p.args, reconnects)
			fraction[mode][p.name] = float64(resumed) / reconnects
			t.Logf("%s, %s: %d of %d reconnections resumed: %s", mode, p.name, resumed, reconnects, trace)
			// Without sharing, member 1 must still resume its own
			// sessions, or the comparison measures nothing.
			if want := (reconnects + members - 1) / members; mode == "separate" && resumed != want {
				t.Errorf("separate members: %d resumed, want exactly the %d reconnections to member 1: %s", resumed, want, trace)
			}
		}
	}
	noPanics(t, fleet)
	for _, p := range protocols {
		shared, separate := fraction["shared"][p.name], fraction["separate"][p.name]
		ratio := "inf"
		if separate > 0 {
			ratio = strconv.FormatFloat(shared/separate, 'f', 2, 64)
		}
		t.Logf("%s, %d members, %d round-robin reconnections: resumed %.0f%% shared vs %.0f%% separate (ratio %s)",
			p.name, members, reconnects, 100*shared, 100*separate, ratio)
		if shared < 0.9 {
			t.Errorf("%s: shared fleet resumed %.2f of reconnections, want >= 0.9", p.name, shared)
		}
		if separate > 0.5 {
			t.Errorf("%s: separate members resumed %.2f of reconnections, want <= 0.5", p.name, separate)
		}
	}
}
