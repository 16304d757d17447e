package master

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

// Tests that change process-wide state (chroot, credentials, stdio) run in
// a child process: the test binary re-executed with childEnv naming the
// helper to run.
const childEnv = "MASTER_TEST_CHILD"

func TestMain(m *testing.M) {
	if name := os.Getenv(childEnv); name != "" {
		os.Exit(runChild(name))
	}
	os.Exit(m.Run())
}

func runChild(name string) int {
	switch name {
	case "jail":
		return jailChild()
	case "daemon":
		return daemonChild()
	case "stdio":
		return stdioChild()
	}
	fmt.Fprintf(os.Stderr, "unknown child %q\n", name)
	return 2
}

// startChild runs the named helper with extra environment settings.
func startChild(t *testing.T, name string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	// The race detector otherwise sleeps a second at exit.
	cmd.Env = append(append(os.Environ(), childEnv+"="+name, "GORACE=atexit_sleep_ms=0"), env...)
	cmd.Stderr = os.Stderr
	return cmd
}

func requireRoot(t *testing.T) { testenv.NeedRoot(t) }

func skipOutsideCI(t *testing.T, why string) {
	t.Helper()
	testenv.Missing(t, why)
}

// unprivilegedUser returns the uid and gid of "nobody", creating a system
// account if there is none.
func unprivilegedUser(t *testing.T) (uid, gid int) {
	t.Helper()
	uid, gid, err := LookupUser("nobody")
	if err != nil {
		const name = "tlsmgrtest"
		if uid, gid, err = LookupUser(name); err != nil {
			out, err := exec.Command("useradd", "--system", "--no-create-home",
				"--shell", "/usr/sbin/nologin", "--user-group", name).CombinedOutput()
			if err != nil {
				t.Fatalf("useradd: %v: %s", err, out)
			}
			if uid, gid, err = LookupUser(name); err != nil {
				t.Fatal(err)
			}
		}
	}
	if uid == 0 || gid == 0 {
		t.Fatalf("unprivileged user has uid %d gid %d", uid, gid)
	}
	return uid, gid
}

// jailReport is what the jail child observed after Jail.
type jailReport struct {
	Err        string
	Uid, Euid  int
	Gid, Egid  int
	Groups     []int
	Cwd        string
	Marker     bool     // "/marker" exists: we are inside the jail
	Outside    bool     // /etc/passwd is reachable
	Threads    [][3]int // uid, euid, gid seen on each of several OS threads
	ProcStatus []string // Uid: lines of every task, when /proc is reachable
}

func jailChild() int {
	root := os.Getenv("JAIL_ROOT")
	uid, _ := strconv.Atoi(os.Getenv("JAIL_UID"))
	gid, _ := strconv.Atoi(os.Getenv("JAIL_GID"))
	chroot := os.Getenv("JAIL_CHROOT") == "1"
	drop := os.Getenv("JAIL_DROP") == "1"

	// Goroutines locked to their own OS threads, to see that credential
	// changes reach every thread and not only the calling one.
	type creds = [3]int
	var threads []chan chan creds
	for range 4 {
		req := make(chan chan creds)
		threads = append(threads, req)
		go func() {
			runtime.LockOSThread()
			for reply := range req {
				reply <- creds{syscall.Getuid(), syscall.Geteuid(), syscall.Getgid()}
			}
		}()
	}
	ask := func() [][3]int {
		var out [][3]int
		for _, req := range threads {
			reply := make(chan creds)
			req <- reply
			out = append(out, <-reply)
		}
		return out
	}
	ask() // the threads exist before Jail runs

	var r jailReport
	if err := Jail(root, uid, gid, chroot, drop); err != nil {
		r.Err = err.Error()
	}
	r.Uid, r.Euid, r.Gid, r.Egid = syscall.Getuid(), syscall.Geteuid(), syscall.Getgid(), syscall.Getegid()
	r.Groups, _ = syscall.Getgroups()
	r.Cwd, _ = os.Getwd()
	_, err := os.Stat("/marker")
	r.Marker = err == nil
	_, err = os.Stat("/etc/passwd")
	r.Outside = err == nil
	r.Threads = ask()
	if tasks, err := filepath.Glob("/proc/self/task/*/status"); err == nil {
		for _, task := range tasks {
			data, err := os.ReadFile(task)
			if err != nil {
				continue
			}
			for line := range strings.Lines(string(data)) {
				if strings.HasPrefix(line, "Uid:") {
					r.ProcStatus = append(r.ProcStatus, strings.Join(strings.Fields(line), " "))
				}
			}
		}
	}
	json.NewEncoder(os.Stdout).Encode(&r)
	return 0
}

// stdioChild echoes one line from StdioConn and checks that deadlines work.
func stdioChild() int {
	conn, err := StdioConn()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		fmt.Fprintln(os.Stderr, "read:", err)
		return 1
	}
	fmt.Fprintf(conn, "echo: %s", line)
	conn.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := conn.Read(make([]byte, 1)); os.IsTimeout(err) {
		fmt.Fprintln(conn, "deadline ok")
	} else {
		fmt.Fprintln(conn, "deadline not applied:", err)
	}
	if err := conn.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		return 1
	}
	return 0
}
