package keyfile

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gotlsmgr/tlsmgr/internal/testlog"
	"github.com/gotlsmgr/tlsmgr/internal/tktkey"
	"github.com/gotlsmgr/tlsmgr/proto"
)

var ctx = context.Background()

func testKey(seed byte, expiry int64) *proto.TicketKey {
	k := &proto.TicketKey{Expiry: expiry}
	for i := range k.Name {
		k.Name[i] = seed + byte(i)
	}
	for i := range k.AES {
		k.AES[i] = seed ^ byte(3*i)
	}
	for i := range k.HMAC {
		k.HMAC[i] = seed + byte(7*i)
	}
	return k
}

// open opens the file at path, logging to rec if it is not nil.
func open(t *testing.T, path string, rec *testlog.Recorder) *File {
	t.Helper()
	var log *slog.Logger
	if rec != nil {
		log = rec.Logger()
	}
	f, err := Open(path, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func sameKey(a, b *proto.TicketKey) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func wantRing(t *testing.T, f *File, want tktkey.Ring) {
	t.Helper()
	got, err := f.Load(ctx)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !sameKey(got.Current, want.Current) || !sameKey(got.Previous, want.Previous) {
		t.Errorf("Load = %+v, want %+v", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	f := open(t, filepath.Join(t.TempDir(), "keys"), nil)
	wantRing(t, f, tktkey.Ring{}) // a new file is an empty ring
	for _, r := range []tktkey.Ring{
		{Current: testKey(1, 1700000000)},
		{Current: testKey(2, 1700003600), Previous: testKey(1, 1700000000)},
		{Previous: testKey(9, -1)},
		{Current: testKey(3, 1<<62), Previous: testKey(2, 0)},
		{},
	} {
		if err := f.Save(ctx, r); err != nil {
			t.Fatal(err)
		}
		wantRing(t, f, r)
	}
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys")
	f := open(t, path, nil)
	r := tktkey.Ring{Current: testKey(5, 1800000000), Previous: testKey(4, 1799996400)}
	if err := f.Save(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Load(ctx); err != ErrClosed {
		t.Errorf("Load after Close = %v, want ErrClosed", err)
	}
	if err := f.Save(ctx, r); err != ErrClosed {
		t.Errorf("Save after Close = %v, want ErrClosed", err)
	}
	wantRing(t, open(t, path, nil), r)
	if fi, _ := os.Stat(path); fi.Size() != RecordLen {
		t.Errorf("file size %d, want %d", fi.Size(), RecordLen)
	}
}

// savedRing is a key file holding r, a ring of two keys, and its bytes.
func savedRing(t *testing.T) (path string, r tktkey.Ring, good []byte) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "keys")
	r = tktkey.Ring{Current: testKey(5, 1800000000), Previous: testKey(4, 1799996400)}
	f := open(t, path, nil)
	if err := f.Save(ctx, r); err != nil {
		t.Fatal(err)
	}
	f.Close()
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, r, good
}

// Every single-byte change and every wrong length loads as an empty ring
// with a warning, never as different keys.
func TestDamagedFile(t *testing.T) {
	path, r, good := savedRing(t)
	check := func(name string, content []byte) {
		t.Helper()
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		rec := &testlog.Recorder{}
		f := open(t, path, rec)
		wantRing(t, f, tktkey.Ring{})
		if !strings.Contains(rec.String(), path) {
			t.Errorf("%s: no warning (got %q)", name, rec)
		}
		f.Close()
	}
	for i := range good {
		bad := bytes.Clone(good)
		bad[i] ^= 0x01
		check(fmt.Sprintf("bit flip at %d", i), bad)
	}
	check("truncated", good[:RecordLen-1])
	check("too long", append(bytes.Clone(good), 0))
	check("short garbage", []byte("hello"))

	// Saving again repairs the file, also when it had grown.
	if err := os.WriteFile(path, append(bytes.Clone(good), make([]byte, 100)...), 0o600); err != nil {
		t.Fatal(err)
	}
	f := open(t, path, &testlog.Recorder{})
	if err := f.Save(ctx, r); err != nil {
		t.Fatal(err)
	}
	wantRing(t, f, r)
}

func TestMode(t *testing.T) {
	old := unix.Umask(0)
	defer unix.Umask(old)
	path := filepath.Join(t.TempDir(), "keys")
	open(t, path, nil).Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("new file mode %v, want 0600", fi.Mode().Perm())
	}
	os.Chmod(path, 0o644)
	rec := &testlog.Recorder{}
	open(t, path, rec).Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v not tightened to 0600", fi.Mode().Perm())
	}
	if !strings.Contains(rec.String(), "0600") {
		t.Errorf("no warning about the mode: %q", rec)
	}
}

func TestNotRegular(t *testing.T) {
	if _, err := Open(t.TempDir(), nil); err == nil {
		t.Error("Open of a directory succeeded")
	}
}

// The file keeps working through its descriptor after its name is gone,
// as after chroot.
func TestWorksAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys")
	f := open(t, path, nil)
	if err := os.Rename(path, filepath.Join(dir, "moved")); err != nil {
		t.Fatal(err)
	}
	r := tktkey.Ring{Current: testKey(8, 1900000000)}
	if err := f.Save(ctx, r); err != nil {
		t.Fatal(err)
	}
	wantRing(t, f, r)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("Save recreated the file by name: %v", err)
	}
}

func TestBufferWiped(t *testing.T) {
	f := open(t, filepath.Join(t.TempDir(), "keys"), nil)
	if err := f.Save(ctx, tktkey.Ring{Current: testKey(1, 1), Previous: testKey(2, 2)}); err != nil {
		t.Fatal(err)
	}
	if f.buf != [RecordLen]byte{} {
		t.Error("Save left key bytes in its buffer")
	}
	if _, err := f.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if f.buf != [RecordLen]byte{} {
		t.Error("Load left key bytes in its buffer")
	}
}

func TestConcurrent(t *testing.T) {
	f := open(t, filepath.Join(t.TempDir(), "keys"), nil)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				k := testKey(byte(w), int64(i))
				if err := f.Save(ctx, tktkey.Ring{Current: k, Previous: k}); err != nil {
					t.Error(err)
					return
				}
				r, err := f.Load(ctx)
				if err != nil || r.Current == nil || !sameKey(r.Current, r.Previous) {
					t.Errorf("Load = %+v, %v: a torn ring", r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
