package daemon_test

// The mail owner's account controls the data directory. These tests play
// that account: before start-up and while the daemon runs they plant, at
// every name the daemon writes, a symbolic link (owned by the mail owner,
// as the account would make it) or a hard link to a decoy file of root's,
// and check that the decoy's bytes survive start, run, reload and stop,
// in the standalone and the master(8) start-up paths.

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/daemontest"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

// decoy is a file of root's, readable by all like most of /etc, in a
// directory the mail owner can search but not change.
type decoy struct {
	path  string
	bytes []byte
}

func newDecoy(t *testing.T, e *env) *decoy {
	t.Helper()
	dir := filepath.Join(e.Base, "etc-decoy")
	if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	d := &decoy{path: filepath.Join(dir, fmt.Sprintf("shadow-%d", time.Now().UnixNano())), bytes: make([]byte, 1500)}
	rand.Read(d.bytes)
	if err := os.WriteFile(d.path, d.bytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// intact fails the test if the decoy changed in any way.
func (d *decoy) intact(t *testing.T, when string) {
	t.Helper()
	b, err := os.ReadFile(d.path)
	if err != nil {
		t.Fatalf("%s: decoy: %v", when, err)
	}
	if !bytes.Equal(b, d.bytes) {
		t.Fatalf("%s: the decoy of root's was written through a planted link (%d bytes, was %d)", when, len(b), len(d.bytes))
	}
	var st syscall.Stat_t
	if err := syscall.Stat(d.path, &st); err != nil || st.Uid != 0 || st.Mode&0o7777 != 0o644 {
		t.Fatalf("%s: decoy owner %d mode %o (%v)", when, st.Uid, st.Mode&0o7777, err)
	}
}

// ownerIDs are the mail owner's uid and gid in env.
func ownerIDs(t *testing.T, e *env) (int, int) {
	t.Helper()
	u, err := user.Lookup(e.Owner)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// plant puts a link to the decoy at path, as the mail owner's account
// could: a symbolic link of its own, or a hard link (which the kernel's
// protected_hardlinks would stop that account from making; root makes it
// here to show the daemon refuses it anyway).
func plant(t *testing.T, e *env, kind, path string, d *decoy) {
	t.Helper()
	os.Remove(path)
	switch kind {
	case "symlink":
		if err := os.Symlink(d.path, path); err != nil {
			t.Fatal(err)
		}
		uid, gid := ownerIDs(t, e)
		if err := os.Lchown(path, uid, gid); err != nil {
			t.Fatal(err)
		}
	case "hardlink":
		if err := os.Link(d.path, path); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("unknown link kind %s", kind)
	}
}

// swapIn replaces path, while the daemon holds it open, by a link to the
// decoy: rename(2) over it, as an attacker racing the daemon would.
func swapIn(t *testing.T, e *env, kind, path string, d *decoy) {
	t.Helper()
	tmp := path + ".swap"
	plant(t, e, kind, tmp, d)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startup is one way of starting the daemon: standalone, or as master(8)
// does. stop ends it the way that path ends.
type startup struct {
	name  string
	start func(t *testing.T, e *env, extra ...string) (stop func(t *testing.T), p *daemontest.Proc, sock string)
}

var startups = []startup{
	{"standalone", func(t *testing.T, e *env, extra ...string) (func(*testing.T), *daemontest.Proc, string) {
		p := daemontest.StartCmd(t, e.command(append([]string{"-listen", e.Sock}, e.Opts(extra...)...)...))
		return func(t *testing.T) { p.Stop(t) }, p, e.Sock
	}},
	{"master", func(t *testing.T, e *env, extra ...string) (func(*testing.T), *daemontest.Proc, string) {
		// -V: warnings on stderr too, where the test reads them.
		p, masterEnd, path := startAsMaster(t, e, append([]string{"-l", "-t", "unix", "-c", "-u", "-V"}, e.Opts(extra...)...)...)
		stop := func(t *testing.T) {
			t.Helper()
			masterEnd.Close() // postfix reload or stop
			if st := p.Wait(t, 10*time.Second); st != 0 {
				t.Fatalf("exit status %d when the master went away:\n%s", st, p.Stderr)
			}
		}
		return stop, p, path
	}},
}

// refusal is how the daemon, as the mail owner, turns down a planted
// link: the link itself is refused by name (O_NOFOLLOW and the owner
// check), and the kernel already denies the mail owner a hard link to a
// file of root's.
func refusal(kind string) string {
	if kind == "symlink" {
		return "refusing to use"
	}
	return "permission denied"
}

// waitStarted waits until p serves on sock, or has exited.
func waitStarted(p *daemontest.Proc, sock string) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if daemontest.Announces(sock) {
			return true
		}
		select {
		case <-p.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false
}

// TestPlantedLinksAtStartup: at each name the daemon creates or writes
// before serving, a planted link makes it either refuse to start (saying
// which file and why) or, for a name it only removes, remove the link;
// the decoy never changes.
func TestPlantedLinksAtStartup(t *testing.T) {
	testenv.NeedRoot(t)
	type target struct {
		name     string
		file     string   // under the data directory
		settings []string // -o
		fatal    bool     // refuses to start
	}
	btree := []string{"smtpd_tls_session_cache_database=btree:$DATA/smtpd_scache"}
	targets := []target{
		{"ticket keys, persistence off (wiped)", "tlsmgr_ticket_keys", nil, false},
		{"ticket keys, persistence on", "tlsmgr_ticket_keys", []string{"tlsmgr_ticket_key_persistence=yes"}, true},
		{"PRNG exchange file", "prng_exch", nil, true},
		{"cache file", "smtpd_scache", btree, true},
	}
	for _, su := range startups {
		for _, tg := range targets {
			for _, kind := range []string{"symlink", "hardlink"} {
				t.Run(su.name+"/"+tg.name+"/"+kind, func(t *testing.T) {
					e := newEnv(t, memoryCaches)
					d := newDecoy(t, e)
					path := filepath.Join(e.Data, tg.file)
					plant(t, e, kind, path, d)
					var extra []string
					for _, s := range tg.settings {
						extra = append(extra, strings.ReplaceAll(s, "$DATA", e.Data))
					}
					stop, p, sock := su.start(t, e, extra...)
					started := waitStarted(p, sock)
					d.intact(t, "after start")
					if tg.fatal {
						if started {
							t.Fatalf("daemon started over a planted %s", kind)
						}
						if st := p.Wait(t, 10*time.Second); st == 0 {
							t.Fatalf("exit status 0 over a planted %s", kind)
						}
						fatalSays(t, p.Stderr.String(), path, refusal(kind))
						if _, err := os.Lstat(path); err != nil {
							t.Errorf("the planted link was removed: %v", err)
						}
						return
					}
					if !started {
						t.Fatalf("daemon did not start:\n%s", p.Stderr)
					}
					if _, err := os.Lstat(path); !os.IsNotExist(err) {
						t.Errorf("planted %s at %s not removed (%v)", kind, tg.file, err)
					}
					if !p.Stderr.WaitFor("removing the name without writing to it", 5*time.Second) {
						t.Errorf("no warning about the planted %s:\n%s", kind, p.Stderr)
					}
					stop(t)
					d.intact(t, "after stop")
				})
			}
		}
	}
}

// TestPlantedLinksWhileRunning: the exchange file is rewritten while the
// daemon runs (and at exit), and recreated if removed; a link swapped in
// for it is never written through, and the daemon keeps serving. A
// restart ("postfix reload") then refuses the link, and the aside files
// of a damaged cache are never followed either.
func TestPlantedLinksWhileRunning(t *testing.T) {
	testenv.NeedRoot(t)
	for _, su := range startups {
		for _, kind := range []string{"symlink", "hardlink"} {
			t.Run(su.name+"/"+kind, func(t *testing.T) {
				e := newEnv(t, memoryCaches)
				d := newDecoy(t, e)
				exch := filepath.Join(e.Data, "prng_exch")
				stop, p, sock := su.start(t, e, "tls_random_prng_update_period=1s")
				if !waitStarted(p, sock) {
					t.Fatalf("daemon did not start:\n%s", p.Stderr)
				}
				swapIn(t, e, kind, exch, d)
				// Updates come at random within each second.
				refused := "PRNG exchange file " + exch + ": cannot recreate it after its removal: " + refusal(kind)
				seen := p.Stderr.WaitFor(refused, 15*time.Second)
				d.intact(t, "while running")
				if !seen {
					t.Fatalf("no exchange-file update refused the %s in 15 s:\n%s", kind, p.Stderr)
				}
				if out := ctl(t, sock, "seed", "16"); len(strings.TrimSpace(out)) != 32 {
					t.Errorf("seed while the exchange file is refused: %q", out)
				}
				if !regexp.MustCompile(`(?m)^prng_exchange_failures +[0-9]+$`).MatchString(ctl(t, sock, "stats")) {
					t.Error("stats lack prng_exchange_failures")
				}
				stop(t)
				d.intact(t, "after stop")
				// Reload: a new daemon meets the link at start-up.
				_, p2, sock2 := su.start(t, e)
				if waitStarted(p2, sock2) {
					t.Fatalf("restarted daemon accepted a planted %s", kind)
				}
				p2.Wait(t, 10*time.Second)
				d.intact(t, "after restart")
			})
		}
	}
}

// TestPlantedAsideFiles: a damaged cache file is moved aside, and older
// aside files are removed. Links planted under aside names are removed as
// names at most, never written through.
func TestPlantedAsideFiles(t *testing.T) {
	testenv.NeedRoot(t)
	for _, kind := range []string{"symlink", "hardlink"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t, memoryCaches)
			d := newDecoy(t, e)
			cache := filepath.Join(e.Data, "smtpd_scache")
			uid, gid := ownerIDs(t, e)
			if err := os.WriteFile(cache, bytes.Repeat([]byte("garbage!"), 2048), 0o600); err != nil {
				t.Fatal(err)
			}
			os.Chown(cache, uid, gid)
			plant(t, e, kind, cache+".corrupt-1", d)
			p := e.start(t, "smtpd_tls_session_cache_database=btree:"+cache)
			d.intact(t, "after start")
			if !p.Stderr.WaitFor("moved it to", 5*time.Second) {
				t.Fatalf("damaged cache not moved aside:\n%s", p.Stderr)
			}
			ctl(t, e.Sock, "update", "smtpd", "id1", os.DevNull)
			p.Stop(t)
			d.intact(t, "after stop")
		})
	}
}

// TestPlantedSocketLink: a link at the standalone socket's name is not
// taken for a stale socket, and nothing is bound, chmod-ed or removed
// through it.
func TestPlantedSocketLink(t *testing.T) {
	testenv.NeedRoot(t)
	e := newEnv(t, memoryCaches)
	d := newDecoy(t, e)
	plant(t, e, "symlink", e.Sock, d)
	p := daemontest.StartCmd(t, e.command(append([]string{"-listen", e.Sock}, e.Opts()...)...))
	if st := p.Wait(t, 10*time.Second); st == 0 {
		t.Fatal("started over a link at the socket's name")
	}
	oneFatalLine(t, p.Stderr.String(), "not a socket")
	d.intact(t, "after the refused start")
}

// TestStandaloneDropsPrivileges: started by root without -u, the
// standalone daemon still gives up root once its files and socket are
// open, and its socket is the mail owner's, mode 0660.
func TestStandaloneDropsPrivileges(t *testing.T) {
	testenv.NeedRoot(t)
	e := newEnv(t, memoryCaches)
	p := e.start(t)
	uid, gid := ownerIDs(t, e)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf("\nUid:\t%d\t%d\t%d\t%d\n", uid, uid, uid, uid),
		fmt.Sprintf("\nGid:\t%d\t%d\t%d\t%d\n", gid, gid, gid, gid),
		fmt.Sprintf("\nGroups:\t%d \n", gid),
	} {
		if !strings.Contains(string(status), want) {
			t.Errorf("daemon status lacks %q:\n%s", want, status)
		}
	}
	fi, err := os.Lstat(e.Sock)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o660 || int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("socket mode %v owner %d:%d, want 0660 %d:%d", fi.Mode().Perm(), st.Uid, st.Gid, uid, gid)
	}
	// Another local account cannot connect.
	other := exec.Command(tlsmgrctlBin, "-s", e.Sock, "-timeout", "5s", "seed", "8")
	other.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1, Gid: 1}}
	if out, err := other.CombinedOutput(); err == nil || !strings.Contains(string(out), "permission denied") {
		t.Errorf("another account using the socket: %v\n%s", err, out)
	}
	p.Stop(t)
	if _, err := os.Lstat(e.Sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	p.NoWarnings(t)
}

// fatalSays wants exactly one "fatal:" line in stderr, naming every want.
// (Under -V a missing syslog socket adds a warning of its own.)
func fatalSays(t *testing.T, stderr string, want ...string) {
	t.Helper()
	var fatal []string
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, "fatal: ") {
			fatal = append(fatal, line)
		}
	}
	if len(fatal) != 1 {
		t.Fatalf("want one fatal line, got %d:\n%s", len(fatal), stderr)
	}
	for _, w := range want {
		if !strings.Contains(fatal[0], w) {
			t.Errorf("fatal message does not name %q: %s", w, fatal[0])
		}
	}
}
