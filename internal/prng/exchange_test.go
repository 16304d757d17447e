package prng

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/safefile/safefiletest"
	"github.com/gotlsmgr/tlsmgr/internal/testlog"
)

func checkExchangeFile(t *testing.T, path string) []byte {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size() != ExchangeFileSize || info.Mode().Perm() != 0o600 || !info.Mode().IsRegular() {
		t.Fatalf("%s: size %d, mode %v; want a regular 1024-byte file, mode 0600", path, info.Size(), info.Mode())
	}
	return readFile(t, path)
}

func noTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Fatalf("temporary file %s left behind", e.Name())
		}
	}
}

func TestExchangeFileLifecycle(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "prng_exch")
	clock := newFakeClock()
	m, err := testOpen(Options{ExchangeFile: path, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	noTempFiles(t, dir)
	seen := map[string]bool{string(checkExchangeFile(t, path)): true}
	st := m.Stats()
	if st.ExchangeFile != path || !st.LastExchangeUpdate.Equal(clock.Now()) || st.ExchangeFailures != 0 {
		t.Fatalf("stats after Open: %+v", st)
	}
	var ino uint64
	if info, err := os.Stat(path); err == nil {
		ino = info.Sys().(*syscall.Stat_t).Ino
	}
	for range 5 {
		m.updateExchange()
		content := checkExchangeFile(t, path)
		if seen[string(content)] {
			t.Fatal("an update left the contents unchanged")
		}
		seen[string(content)] = true
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if seen[string(checkExchangeFile(t, path))] {
		t.Fatal("Close did not save the pool")
	}
	if info, _ := os.Stat(path); info.Sys().(*syscall.Stat_t).Ino != ino {
		t.Fatal("updates replaced the file instead of rewriting it in place")
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	poolBytes(t, m.Pool(), 32) // still usable after Close
}

func TestExchangeFileExistingContent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "prng_exch")
	output := func(content []byte) []byte {
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		m, err := testOpen(Options{ExchangeFile: path, Clock: newFakeClock(), osEntropy: &countingReader{}})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		checkExchangeFile(t, path)
		return poolBytes(t, m.Pool(), 32)
	}
	short := output([]byte("ten bytes!"))
	if !bytes.Equal(short, output([]byte("ten bytes!"))) {
		t.Fatal("same inputs, different output")
	}
	if bytes.Equal(short, output([]byte("ten bytes?"))) {
		t.Fatal("the exchange file's content does not reach the pool")
	}
	output(bytes.Repeat([]byte{1}, 3000)) // trimmed to 1024 by checkExchangeFile's check
}

func TestExchangeFileOpenError(t *testing.T) {
	_, err := testOpen(Options{ExchangeFile: "/nonexistent/dir/prng_exch"})
	if err == nil || err.Error() != "open tls_random_exchange_name /nonexistent/dir/prng_exch: no such file or directory" {
		t.Fatalf("Open error: %v", err)
	}
}

// TestExchangeFileLockedByOtherProcess: another process holds the flock
// (and writes under it); the update waits for it, then completes.
func TestExchangeFileLockedByOtherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "prng_exch")
	log := &testlog.Recorder{}
	m, err := testOpen(Options{ExchangeFile: path, Logger: log.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const hold = 300 * time.Millisecond
	_, out := startHelper(t, "hold-lock", path, helperHoldEnv+"="+hold.String())
	expectLine(t, out, "locked")
	start := time.Now()
	m.updateExchange()
	waited := time.Since(start)
	if waited < hold/2 {
		t.Fatalf("update finished after %v while the lock was held for %v", waited, hold)
	}
	t.Logf("the update waited %v for the lock", waited)
	content := checkExchangeFile(t, path)
	if bytes.Equal(content, helperPattern()) {
		t.Fatal("update did not happen after the lock was released")
	}
	if st := m.Stats(); st.ExchangeFailures != 0 || len(log.Lines()) != 2 {
		t.Fatalf("stats %+v, log %q", st, log.Lines())
	}
}

// TestExchangeFileLockTimeout: a holder that never lets go costs one
// skipped update and a warning, not a hung daemon.
func TestExchangeFileLockTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "prng_exch")
	log := &testlog.Recorder{}
	m, err := testOpen(Options{ExchangeFile: path, Logger: log.Logger(), LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cmd, out := startHelper(t, "hold-lock", path, helperHoldEnv+"=forever")
	expectLine(t, out, "locked")
	start := time.Now()
	m.updateExchange()
	if waited := time.Since(start); waited > 3*time.Second {
		t.Fatalf("update waited %v", waited)
	}
	if !bytes.Equal(checkExchangeFile(t, path), helperPattern()) {
		t.Fatal("the file was written without the lock")
	}
	if st := m.Stats(); st.ExchangeFailures != 1 {
		t.Fatalf("stats: %+v", st)
	}
	if log.Count("", "PRNG exchange file "+path+": cannot lock: lock held by another process") != 1 {
		t.Fatalf("log: %q", log.Lines())
	}
	cmd.Process.Kill()
	cmd.Wait()
	m.updateExchange()
	if bytes.Equal(checkExchangeFile(t, path), helperPattern()) {
		t.Fatal("no update after the holder died")
	}
}

func TestExchangeFileRemovedIsRecreated(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "prng_exch")
	log := &testlog.Recorder{}
	m, err := testOpen(Options{ExchangeFile: path, Logger: log.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	os.Remove(path)
	m.updateExchange()
	first := checkExchangeFile(t, path)
	if log.Count("", "PRNG exchange file "+path+" was removed -- recreated it") != 1 {
		t.Fatalf("log: %q", log.Lines())
	}
	// The kept descriptor now refers to the new file.
	m.updateExchange()
	if bytes.Equal(first, checkExchangeFile(t, path)) {
		t.Fatal("updates no longer reach the file at the configured name")
	}
	if st := m.Stats(); st.ExchangeFailures != 0 {
		t.Fatalf("stats: %+v", st)
	}
	noTempFiles(t, dir)

	// Replaced by another file (rename over it): follow the new one.
	other := filepath.Join(dir, "other")
	os.WriteFile(other, make([]byte, ExchangeFileSize), 0o600)
	if err := os.Rename(other, path); err != nil {
		t.Fatal(err)
	}
	m.updateExchange()
	if bytes.Equal(checkExchangeFile(t, path), make([]byte, ExchangeFileSize)) {
		t.Fatal("the replacement file was not updated")
	}
}

func TestExchangeFileDirectoryGone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	os.Mkdir(dir, 0o700)
	path := filepath.Join(dir, "prng_exch")
	log := &testlog.Recorder{}
	m, err := testOpen(Options{ExchangeFile: path, Logger: log.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(dir)
	m.updateExchange()
	if log.Count("", "PRNG exchange file "+path+": cannot recreate it after its removal: no such file or directory") != 1 {
		t.Fatalf("log: %q", log.Lines())
	}
	if st := m.Stats(); st.ExchangeFailures != 1 {
		t.Fatalf("stats: %+v", st)
	}
	poolBytes(t, m.Pool(), 32)
	if err := m.Close(); err == nil {
		t.Fatal("Close reported no error for the unsaved pool")
	}
}

// TestExchangeFileSurvivesSIGKILL kills processes that update the file in
// a tight loop: the file must always be 1024 bytes. Every other round
// starts without the file, so that some kills land while it is created;
// then it may be absent, but never short.
func TestExchangeFileSurvivesSIGKILL(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "prng_exch")
	if _, err := testOpen(Options{ExchangeFile: path}); err != nil {
		t.Fatal(err)
	}
	previous := checkExchangeFile(t, path)
	changed := 0
	for round := range 20 {
		fresh := round%2 == 1
		if fresh {
			os.Remove(path)
		}
		cmd, out := startHelper(t, "update-loop", path)
		if fresh {
			time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
		} else {
			expectLine(t, out, "ready")
			time.Sleep(time.Duration(rand.IntN(10)) * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		info, err := os.Stat(path)
		if fresh && os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if info.Size() != ExchangeFileSize {
			t.Fatalf("round %d: file is %d bytes after SIGKILL", round, info.Size())
		}
		content := readFile(t, path)
		if !bytes.Equal(content, previous) {
			changed++
		}
		previous = content
	}
	if changed == 0 {
		t.Fatal("the helpers never updated the file")
	}
}

// An existing exchange file that others may read gets mode 0600, with a
// warning: its bytes seed other processes' generators.
func TestExchangeFileModeRestricted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "prng_exch")
	if err := os.WriteFile(path, bytes.Repeat([]byte{7}, ExchangeFileSize), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644) // whatever the umask
	log := &testlog.Recorder{}
	m, err := testOpen(Options{ExchangeFile: path, Logger: log.Logger(), Clock: newFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	checkExchangeFile(t, path)
	if log.Count("", "was mode 0644; making it 0600") != 1 {
		t.Fatalf("want one warning about the mode, got %q", log.Lines())
	}
}

// A symbolic link that is not root's, planted at the exchange file's name
// before start-up or while running, is never written through.
func TestExchangeFileRefusesLink(t *testing.T) {
	dir := t.TempDir()
	decoy := filepath.Join(dir, "decoy")
	if err := os.WriteFile(decoy, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "prng_exch")
	safefiletest.PlantLink(t, decoy, path)
	if _, err := testOpen(Options{ExchangeFile: path, Clock: newFakeClock()}); err == nil || !strings.Contains(err.Error(), "refusing to use") {
		t.Fatalf("Open over a link: %v", err)
	}
	os.Remove(path)
	log := &testlog.Recorder{}
	m, err := testOpen(Options{ExchangeFile: path, Logger: log.Logger(), Clock: newFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	safefiletest.PlantLink(t, decoy, path+".new")
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	m.updateExchange()
	if st := m.Stats(); st.ExchangeFailures != 1 || log.Count("", "refusing to use") != 1 {
		t.Fatalf("update over a swapped-in link: %d failures, log %q", st.ExchangeFailures, log.Lines())
	}
	if b := readFile(t, decoy); string(b) != "precious" {
		t.Fatalf("decoy now %q", b)
	}
}
