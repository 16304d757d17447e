package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gotlsmgr/tlsmgr/internal/daemontest"
	"github.com/gotlsmgr/tlsmgr/internal/testenv"
)

var tlsmgrBin string

func TestMain(m *testing.M) {
	daemontest.Main(m, "../..", func(b daemontest.Bins) { tlsmgrBin = b.Tlsmgr })
}

// example builds this program and starts a daemon for it.
func example(t *testing.T) (bin, socket string) {
	t.Helper()
	testenv.NeedRoot(t)
	bin = filepath.Join(t.TempDir(), "gotls")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	e := daemontest.NewEnv(t, daemontest.MemoryCaches)
	p := e.Start(t, tlsmgrBin)
	t.Cleanup(func() { p.Stop(t) })
	return bin, e.Sock
}

// TestExample runs the example as docs/go.md says: every mode resumes
// at the second server (or the second client) what the first did.
func TestExample(t *testing.T) {
	bin, socket := example(t)
	out, err := exec.Command(bin, "-socket", socket).CombinedOutput()
	if err != nil {
		t.Fatalf("gotls -socket: %v\n%s", err, out)
	}
	for _, mode := range modes {
		if want := fmt.Sprintf("%-12s resumed: true", mode); !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// server starts one example server and returns its address.
func server(t *testing.T, bin, socket, mode string) string {
	t.Helper()
	cmd := exec.Command(bin, "-socket", socket, "-serve", mode, "-tls", "1.2")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("%s server: %v", mode, err)
	}
	return strings.TrimPrefix(strings.TrimSpace(line), "listening on ")
}

func sClient(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("openssl", append([]string{"s_client", "-tls1_2"}, args...)...)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl s_client %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestOpenSSL: a client that is not Go resumes against the example
// servers: at one server with -reconnect, and across the two with a
// session saved at the first and offered to the second.
func TestOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		testenv.Missing(t, "openssl")
	}
	bin, socket := example(t)
	for _, mode := range []string{"tickets", "stateful"} {
		t.Run(mode, func(t *testing.T) {
			a, b := server(t, bin, socket, mode), server(t, bin, socket, mode)
			if out := sClient(t, "-connect", a, "-reconnect"); strings.Count(out, "Reused, ") < 5 {
				t.Errorf("-reconnect against %s: %d of 5 reconnections Reused:\n%s", a, strings.Count(out, "Reused, "), out)
			}
			sess := filepath.Join(t.TempDir(), "sess.pem")
			if out := sClient(t, "-connect", a, "-sess_out", sess); !strings.Contains(out, "New, ") {
				t.Fatalf("first handshake at %s:\n%s", a, out)
			}
			if out := sClient(t, "-connect", b, "-sess_in", sess); !strings.Contains(out, "Reused, ") {
				t.Errorf("the session from %s was not resumed at %s:\n%s", a, b, out)
			}
		})
	}
}
