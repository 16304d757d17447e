package daemon_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/daemontest"
)

// TestFatalReachesMailLog starts the daemon as master(8) does, with
// maillog_file set, for each kind of start-up failure: the one fatal
// line must reach postlogd's socket, since under master(8) nobody reads
// stderr (tlsmgr-go(8), DIAGNOSTICS).
func TestFatalReachesMailLog(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra []string
		files func(t *testing.T) []*os.File // fds 3... instead of master's
		want  []string
	}{
		{name: "bad size value", extra: []string{"smtpd_tls_session_cache_max_bytes=128mb"},
			want: []string{"smtpd_tls_session_cache_max_bytes", `"128mb"`}},
		{name: "bad announcement value", extra: []string{"tlsmgr_protocol_announcement=sometimes"},
			want: []string{"tlsmgr_protocol_announcement", `"sometimes"`}},
		{name: "cache file cannot be opened",
			extra: []string{"smtpd_tls_session_cache_database=btree:/nonexistent/dir/x"},
			want:  []string{"btree:/nonexistent/dir/x"}},
		{name: "missing entropy device", extra: []string{"tls_random_source=dev:/dev/nosuch"},
			want: []string{"/dev/nosuch"}},
		{name: "seal key readable by others", extra: []string{"smtpd_tls_session_cache_database=redis:$BASE/redis.cf"},
			want: []string{"seal.key", "mode 0644"}},
		{name: "no status channel", want: []string{"status", "fd 5"},
			files: func(t *testing.T) []*os.File {
				l, _ := listeningSocket(t)
				return []*os.File{nil, nil, nil, l}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, memoryCaches+"maillog_file = /var/log/postfix.log\nsyslog_name = postfix-test\n")
			public := filepath.Join(e.Data, "public")
			if err := os.Mkdir(public, 0o755); err != nil {
				t.Fatal(err)
			}
			postlog := filepath.Join(public, "postlog")
			conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: postlog, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			os.Chmod(postlog, 0o666)
			// A fleet's settings whose seal key file others may read.
			key := filepath.Join(e.Base, "seal.key")
			os.WriteFile(key, []byte(strings.Repeat("ab", 32)+"\n"), 0o644)
			os.Chmod(key, 0o644)
			settings := "servers = 127.0.0.1:1\nseal_key_file = " + key + "\n"
			if err := os.WriteFile(filepath.Join(e.Base, "redis.cf"), []byte(settings), 0o600); err != nil {
				t.Fatal(err)
			}
			var extra []string
			for _, x := range tc.extra {
				extra = append(extra, strings.ReplaceAll(x, "$BASE", e.Base))
			}
			args := append([]string{"-l", "-t", "unix"}, e.Opts(extra...)...)
			var p *daemontest.Proc
			if tc.files != nil {
				cmd := e.command(args...)
				cmd.ExtraFiles = tc.files(t)
				p = daemontest.StartCmd(t, cmd)
			} else {
				p, _, _ = startAsMaster(t, e, args...)
			}
			if st := p.Wait(t, 15*time.Second); st != 1 {
				t.Fatalf("exit status %d, want 1:\n%s", st, p.Stderr)
			}
			var records []string
			buf := make([]byte, 8192)
			for {
				conn.SetReadDeadline(time.Now().Add(time.Second))
				n, err := conn.Read(buf)
				if err != nil {
					break
				}
				records = append(records, string(buf[:n]))
			}
			var fatal []string
			for _, r := range records {
				if strings.Contains(r, "postfix-test/tlsmgr[") && strings.Contains(r, "fatal: ") {
					fatal = append(fatal, r)
				}
			}
			if len(fatal) != 1 {
				t.Fatalf("%d fatal records in the mail log, want 1:\n%s\nstderr:\n%s", len(fatal), strings.Join(records, "\n"), p.Stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(fatal[0], w) {
					t.Errorf("fatal record %q lacks %q", fatal[0], w)
				}
			}
		})
	}
}
