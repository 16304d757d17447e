package master

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const postfixMaster = "/usr/lib/postfix/sbin/master"

// daemonChild is a minimal multi_server daemon run by a real master(8): it
// greets each client with its generation, keeps the master informed of
// its state, and records the moment the master goes away.
func daemonChild() int {
	report := func(format string, args ...any) {
		f, err := os.OpenFile(os.Getenv("DAEMON_REPORT"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err == nil {
			fmt.Fprintf(f, format+"\n", args...)
			f.Close()
		}
	}
	opts, err := ParseArgs(os.Args[1:])
	if err != nil {
		report("args: %v", err)
		return 1
	}
	report("args: %q", os.Args[1:])
	status, err := OpenStatus(StatusFD, 0, os.Getenv(GenerationEnv))
	if err != nil {
		report("status: %v", err)
		return 1
	}
	lns, err := InheritedListeners(ListenFD, opts.SocketCount)
	if err != nil {
		report("listeners: %v", err)
		return 1
	}
	go func() {
		for {
			c, err := lns[0].Accept()
			if err != nil {
				return
			}
			status.Notify(false)
			fmt.Fprintf(c, "generation %o transport %s single %v\n", status.Generation(), opts.Transport, opts.SingleProcess)
			c.Close()
			status.Notify(true)
		}
	}()
	<-status.Gone()
	report("gone")
	return 0
}

// TestUnderPostfixMaster runs the test binary as a service of a private
// instance of Postfix's master(8): the master must hand over the status
// channel and listening socket the way this package expects, decode our
// status records, and the daemon must notice when the master stops.
func TestUnderPostfixMaster(t *testing.T) {
	if _, err := os.Stat(postfixMaster); err != nil {
		skipOutsideCI(t, "Postfix master(8) not installed")
	}
	requireRoot(t)
	if _, _, err := LookupUser("postfix"); err != nil {
		skipOutsideCI(t, "no postfix account")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	top, err := os.MkdirTemp("", "pfmaster")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	if err := os.Chmod(top, 0o755); err != nil { // the mail owner must get in
		t.Fatal(err)
	}
	conf, queue, data, daemons := filepath.Join(top, "conf"), filepath.Join(top, "queue"),
		filepath.Join(top, "data"), filepath.Join(top, "daemon")
	for _, d := range []string{conf, data, daemons, filepath.Join(queue, "pid"),
		filepath.Join(queue, "private"), filepath.Join(queue, "public")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// master(8) creates the service sockets as the mail owner.
	uid, gid, _ := LookupUser("postfix")
	for _, d := range []string{data, filepath.Join(queue, "private"), filepath.Join(queue, "public")} {
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(exe, filepath.Join(daemons, "gotest")); err != nil {
		t.Fatal(err)
	}
	reportPath := filepath.Join(top, "report")
	logPath := filepath.Join(top, "maillog")
	// The test plays postlogd: with maillog_file set the master sends its
	// records to this socket. (A real postlogd run with -v can deadlock on
	// its own socket's small queue before it starts reading.)
	maillog := collectDatagrams(t, filepath.Join(queue, "public", "postlog"))
	mainCf := strings.Join([]string{
		"compatibility_level = 3.6",
		"queue_directory = " + queue,
		"data_directory = " + data,
		"daemon_directory = " + daemons,
		"meta_directory = /etc/postfix",
		"maillog_file = " + logPath,
		"maillog_file_prefixes = " + top,
		"myhostname = master-test.example",
		"inet_interfaces = loopback-only",
		"import_environment = MAIL_CONFIG MAIL_DEBUG " + childEnv + "=daemon " +
			"DAEMON_REPORT=" + reportPath + " GORACE=atexit_sleep_ms=0",
	}, "\n") + "\n"
	masterCf := "gotest unix - n n - 1 gotest\n"
	old := time.Now().Add(-time.Minute) // Postfix waits while main.cf is brand new
	for name, text := range map[string]string{"main.cf": mainCf, "master.cf": masterCf} {
		p := filepath.Join(conf, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, old, old)
	}

	// -d: stay in the foreground; -v: log each status record received.
	// Its own process group lets the cleanup end every process it started.
	master := exec.Command(postfixMaster, "-c", conf, "-d", "-v")
	master.Env = []string{"PATH=/usr/bin:/bin", "MAIL_CONFIG=" + conf}
	master.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var masterOut strings.Builder
	master.Stdout, master.Stderr = &masterOut, &masterOut
	if err := master.Start(); err != nil {
		t.Fatal(err)
	}
	masterDone := make(chan struct{})
	go func() { master.Wait(); close(masterDone) }()
	t.Cleanup(func() {
		syscall.Kill(-master.Process.Pid, syscall.SIGKILL)
		<-masterDone
	})
	readFile := func(p string) string {
		b, _ := os.ReadFile(p)
		return string(b)
	}
	logs := func() string {
		return fmt.Sprintf("master output:\n%s\nmaillog:\n%s\nreport:\n%s",
			masterOut.String(), maillog(), readFile(reportPath))
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s\n%s", what, logs())
			}
		}
	}

	sock := filepath.Join(queue, "private", "gotest")
	greet := func() string {
		t.Helper()
		var conn net.Conn
		waitFor("the service socket", func() bool {
			var err error
			conn, err = net.Dial("unix", sock)
			return err == nil
		})
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			t.Fatalf("no greeting: %v\n%s", err, logs())
		}
		if !strings.HasPrefix(line, "generation ") || !strings.Contains(line, "transport unix single true") {
			t.Fatalf("greeting %q", line)
		}
		gen := strings.Fields(line)[1]
		// The master logs each status record it decodes: taken, then
		// available again.
		waitFor("the master to log status records of generation "+gen, func() bool {
			l := maillog()
			return strings.Contains(l, "gen "+gen+" avail 0") && strings.Contains(l, "gen "+gen+" avail 1")
		})
		return gen
	}
	goneCount := func() int { return strings.Count(readFile(reportPath), "gone") }

	gen1 := greet()
	// "postfix reload": the master renews the status channels, so the
	// daemon must see Gone and exit; the next client gets a new process.
	master.Process.Signal(syscall.SIGHUP)
	waitFor("the daemon to notice the reload", func() bool { return goneCount() == 1 })
	if gen2 := greet(); gen2 == gen1 {
		t.Errorf("same generation %s after reload", gen2)
	}
	// The master dies outright.
	master.Process.Signal(syscall.SIGKILL)
	waitFor("the daemon to notice the master's death", func() bool { return goneCount() == 2 })

	if l := maillog(); strings.Contains(l, "ignoring status update") || strings.Contains(l, "partial status") {
		t.Errorf("master rejected a status record\n%s", logs())
	}
	if r := readFile(reportPath); !strings.Contains(r, `"-l" "-t" "unix" "-d" "-v"`) {
		t.Errorf("unexpected daemon arguments\n%s", r)
	}
}

// collectDatagrams receives datagrams on a socket at path until the test
// ends, and returns a function giving all received so far, one per line.
func collectDatagrams(t *testing.T, path string) func() string {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var all strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 8192)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			all.Write(buf[:n])
			all.WriteByte('\n')
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		return all.String()
	}
}
