package postfixctl

import (
	"bufio"
	"context"
	"encoding/base64"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/internal/server/servertest"
)

// postfixLike serves seed requests as Postfix's tlsmgr does and leaves
// every other request unanswered, as it does (tlsmgr.c: an unknown
// request gets no reply and no log line).
func postfixLike(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tlsmgr")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				w := attr.NewWriter(nc)
				w.Str("protocol", "tlsmgr_protocol")
				w.End()
				w.Flush()
				r := attr.NewBufferedReader(bufio.NewReader(nc), attr.Limits{MaxValue: 4096, MaxList: 8192})
				for {
					l, err := r.ReadList()
					if err != nil {
						return
					}
					if req, _ := l.Get("request"); string(req) == "seed" {
						w.Int("status", 0)
						w.Str("seed", base64.StdEncoding.EncodeToString(make([]byte, 32)))
						w.End()
						w.Flush()
					}
				}
			}()
		}
	}()
	return path
}

func TestIdentifyOurs(t *testing.T) {
	srv := servertest.Start(t, "")
	d, err := Identify(context.Background(), srv.Path)
	if err != nil || !d.Ours {
		t.Fatalf("Identify = %+v, %v; want ours", d, err)
	}
}

// Postfix's tlsmgr is told apart a second after its seed answer, not at
// the end of the caller's time.
func TestIdentifyPostfixsOwn(t *testing.T) {
	path := postfixLike(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	d, err := Identify(ctx, path)
	took := time.Since(start)
	if err != nil || d.Ours {
		t.Fatalf("Identify = %+v, %v; want another tlsmgr", d, err)
	}
	if took < statsPatience || took > statsPatience+3*time.Second {
		t.Errorf("told after %v; want about %v", took, statsPatience)
	}
}

func TestIdentifyNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if d, err := Identify(ctx, filepath.Join(t.TempDir(), "none")); err == nil {
		t.Fatalf("Identify of no socket = %+v", d)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a missing socket took %v", took)
	}
}
