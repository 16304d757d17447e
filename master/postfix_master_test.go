package master

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
		t.Skip("Postfix master(8) not installed")
	}
	requireRoot(t)
	if _, _, err := LookupUser("postfix"); err != nil {
		t.Skip("no postfix account")
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
	conf, queue, data, daemons := filepath.Join(top, "conf"), filepath.Join(top, "queue"),
		filepath.Join(top, "data"), filepath.Join(top, "daemon")
	for _, d := range []string{conf, data, daemons, filepath.Join(queue, "pid"),
		filepath.Join(queue, "private"), filepath.Join(queue, "public")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	uid, gid, _ := LookupUser("postfix")
	os.Chown(data, uid, gid)
	if err := os.Symlink(exe, filepath.Join(daemons, "gotest")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr/lib/postfix/sbin/postlogd", filepath.Join(daemons, "postlogd")); err != nil {
		t.Fatal(err)
	}
	reportPath := filepath.Join(top, "report")
	logPath := filepath.Join(top, "maillog")
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
	masterCf := "postlog unix-dgram n - n - 1 postlogd\n" +
		"gotest unix - n n - 1 gotest\n"
	old := time.Now().Add(-time.Minute) // Postfix waits while main.cf is brand new
	for name, text := range map[string]string{"main.cf": mainCf, "master.cf": masterCf} {
		p := filepath.Join(conf, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, old, old)
	}

	// -d: stay in the foreground; -v: log each status record received.
	master := exec.Command(postfixMaster, "-c", conf, "-d", "-v")
	master.Env = []string{"PATH=/usr/bin:/bin", "MAIL_CONFIG=" + conf}
	var masterOut strings.Builder
	master.Stdout, master.Stderr = &masterOut, &masterOut
	if err := master.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			master.Process.Kill()
			master.Wait()
		}
	})
	logs := func() string {
		b, _ := os.ReadFile(logPath)
		r, _ := os.ReadFile(reportPath)
		return fmt.Sprintf("master output:\n%s\nmaillog:\n%s\nreport:\n%s", masterOut.String(), b, r)
	}

	sock := filepath.Join(queue, "private", "gotest")
	var conn net.Conn
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("service socket never came up: %v\n%s", err, logs())
		}
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if err != nil {
		t.Fatalf("no greeting: %v\n%s", err, logs())
	}
	if !strings.HasPrefix(line, "generation ") || !strings.Contains(line, "transport unix single true") {
		t.Errorf("greeting %q", line)
	}
	gen := strings.Fields(line)[1]

	// The master logs each status record it decodes (pid, generation,
	// avail): taken, then available again.
	var pidLine string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), "gen "+gen+" avail 0") && strings.Contains(string(b), "gen "+gen+" avail 1") {
			pidLine = string(b)
			break
		}
	}
	if pidLine == "" {
		t.Errorf("master did not log our status records\n%s", logs())
	}
	if strings.Contains(pidLine, "ignoring status update") || strings.Contains(pidLine, "partial status") {
		t.Errorf("master rejected a status record\n%s", logs())
	}

	// Stopping the master must close Gone in the daemon.
	master.Process.Signal(syscall.SIGTERM)
	master.Wait()
	stopped = true
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if r, _ := os.ReadFile(reportPath); strings.Contains(string(r), "gone") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not notice the master going away\n%s", logs())
		}
	}
	if r, _ := os.ReadFile(reportPath); !strings.Contains(string(r), `"-l" "-t" "unix" "-d" "-v"`) {
		t.Errorf("unexpected daemon arguments\n%s", r)
	}
}
