package daemon_test

import (
	"context"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/internal/daemontest"
)

// fakePostfix puts a postconf that answers postconfSays (nothing: fails)
// into a command directory of the env's, and an smtpd carrying the stamp
// of stampSays (nothing: no smtpd) into its daemon_directory. It returns
// the -o setting for the command directory.
func fakePostfix(t *testing.T, e *env, postconfSays, stampSays string) string {
	t.Helper()
	bin := filepath.Join(e.Base, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho 'postconf: fatal: no such thing' >&2\nexit 1\n"
	if postconfSays != "" {
		// It must be asked for the instance's configuration.
		script = "#!/bin/sh\n[ \"$1 $2 $3 $4\" = \"-c " + e.Cfg + " -dh mail_version\" ] || exit 1\necho " + postconfSays + "\n"
	}
	if err := os.WriteFile(filepath.Join(bin, "postconf"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	smtpd := filepath.Join(e.Base, "smtpd") // e.Base is daemon_directory
	os.Remove(smtpd)
	if stampSays != "" {
		b := append([]byte("\x7fELF....\x00mail_version="+stampSays+"\x00"), make([]byte, 4096)...)
		if err := os.WriteFile(smtpd, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return "command_directory=" + bin
}

// startEither starts a standalone daemon and waits until it answers a
// client, whichever side speaks first.
func startEither(t *testing.T, e *env, extra ...string) *daemontest.Proc {
	t.Helper()
	p := daemontest.StartCmd(t, e.command(append([]string{"-listen", e.Sock}, e.Opts(extra...)...)...))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := client.New(e.Sock, client.Options{Timeout: time.Second})
		_, err := c.Seed(context.Background(), 1)
		c.Close()
		if err == nil {
			return p
		}
		select {
		case <-p.Done():
			t.Fatalf("daemon exited at start-up:\n%s", p.Stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon does not answer: %v\n%s", err, p.Stderr)
		}
	}
}

// speaksFirst connects and reports whether the daemon said anything
// within a second; then it sends a tktkey request as an old client would,
// after the announcement if there was one, and returns the record.
func speaksFirst(t *testing.T, sock string) (bool, []byte) {
	t.Helper()
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r := attr.NewReader(nc, attr.Limits{})
	// Well under the late announcement's 2s, which would answer a
	// silent client of a daemon that waits for its clients.
	nc.SetReadDeadline(time.Now().Add(time.Second))
	l, err := r.ReadList()
	announced := err == nil
	if announced && (len(l) != 1 || string(l[0].Value) != "tlsmgr_protocol") {
		t.Fatalf("first list %v", l)
	}
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	nc.Write([]byte(attr.Encode("request", "tktkey", "keyname", "")))
	l, err = r.ReadList()
	if err != nil {
		t.Fatalf("tktkey: %v", err)
	}
	v, _ := l.Get("keybuf")
	rec, _ := base64.StdEncoding.DecodeString(string(v))
	return announced, rec
}

// TestProtocolAnnouncement: the installed Postfix decides who speaks
// first, and how long a ticket key record is; the setting overrides it.
func TestProtocolAnnouncement(t *testing.T) {
	const cf = memoryCaches + "smtpd_tls_session_cache_timeout = 3600s\n"
	for _, tc := range []struct {
		name, postconf, stamp, setting string
		announced                      bool
		record                         int
		log                            []string
	}{
		{"3.7", "3.7.11", "3.7.11", "", true, 88,
			[]string{"tlsmgr_protocol_announcement = auto: Postfix 3.7.11 found (postconf -dh mail_version, and the mail_version stamp of", "its clients wait for the server, so the protocol is announced"}},
		{"3.5", "3.5.25", "3.5.25", "", false, 88,
			[]string{"tlsmgr_protocol_announcement = auto: Postfix 3.5.25 found", "its clients speak first, so the protocol is not announced"}},
		{"2.11", "2.11.11", "2.11.11", "", false, 56,
			[]string{"Postfix 2.11.11 found", "ticket keys in Postfix 2.11.11's 56-byte record"}},
		{"stamp only", "", "3.5.25", "", false, 88,
			[]string{"Postfix 3.5.25 found (the mail_version stamp of", "postconf: "}},
		{"postconf only", "3.10.13", "", "", true, 88,
			[]string{"Postfix 3.10.13 found (postconf -dh mail_version; no stamp"}},
		{"half upgraded", "3.6.0", "3.5.25", "", false, 88,
			[]string{"warning: postconf says Postfix 3.6.0, but", "is Postfix 3.5.25: going by", "Postfix 3.5.25 found"}},
		{"none, standalone", "", "", "", true, 88,
			[]string{"tlsmgr_protocol_announcement = auto: no Postfix found (postconf:"}},
		{"yes overrides", "3.5.25", "3.5.25", "yes", true, 88,
			[]string{"tlsmgr_protocol_announcement = yes: the protocol is announced (Postfix 3.5.25 found"}},
		{"no overrides", "3.7.11", "3.7.11", "no", false, 88,
			[]string{"tlsmgr_protocol_announcement = no: the protocol is not announced (Postfix 3.7.11 found"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, cf)
			extra := []string{fakePostfix(t, e, tc.postconf, tc.stamp)}
			if tc.setting != "" {
				extra = append(extra, "tlsmgr_protocol_announcement="+tc.setting)
			}
			p := startEither(t, e, extra...)
			announced, rec := speaksFirst(t, e.Sock)
			if announced != tc.announced || len(rec) != tc.record {
				t.Errorf("announced %v, %d-byte record; want %v, %d\n%s", announced, len(rec), tc.announced, tc.record, p.Stderr)
			}
			for _, want := range tc.log {
				if !p.Stderr.WaitFor(want, 5*time.Second) {
					t.Errorf("log lacks %q:\n%s", want, p.Stderr)
				}
			}
			if strings.Contains(p.Stderr.String(), "mismatch") {
				t.Errorf("a mismatch was reported:\n%s", p.Stderr)
			}
		})
	}
}

// Under master(8), a Postfix that cannot be read leaves the daemon
// waiting for each client's request, announcing to a silent one.
func TestProtocolAnnouncementUnknownUnderMaster(t *testing.T) {
	e := newEnv(t, memoryCaches)
	bin := fakePostfix(t, e, "", "")
	p, _, path := startAsMaster(t, e, append([]string{"-l", "-t", "unix", "-V"}, e.Opts(bin)...)...)
	// An old client is answered at once; a new one after the wait.
	old := client.New(path, client.Options{AnnouncementWait: time.Millisecond, Timeout: 10 * time.Second})
	defer old.Close()
	start := time.Now()
	if _, err := old.Seed(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("a client speaking first was answered after %v", took)
	}
	nc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	start = time.Now()
	l, err := attr.NewReader(nc, attr.Limits{}).ReadList()
	if v, _ := l.Get("protocol"); err != nil || string(v) != "tlsmgr_protocol" {
		t.Errorf("a client waiting for the announcement did not get it: %v %v", l, err)
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("announced after %v, not after 2s of silence", took)
	}
	for _, want := range []string{
		"warning: tlsmgr_protocol_announcement = auto: cannot tell which Postfix this is (postconf: ",
		"the protocol is announced only to a client silent for 2s",
		"warning: protocol mismatch: client ", "sent nothing for 2s: announced the protocol late",
	} {
		if !p.Stderr.WaitFor(want, 5*time.Second) {
			t.Errorf("log lacks %q:\n%s", want, p.Stderr)
		}
	}
}
