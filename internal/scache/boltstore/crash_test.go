package boltstore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/gotlsmgr/tlsmgr/internal/scache"
)

const crashChildEnv = "TLSMGR_BOLTSTORE_CRASH_CHILD"

// crashLimits make the child evict by count and by bytes now and then.
var crashLimits = scache.Limits{MaxEntries: 3000, MaxBytes: 2 << 20}

// crashSession derives an entry's session from its id and write time, so
// that anything read back can be checked without a record of the writes.
func crashSession(id string, written int64, n int) []byte {
	out := make([]byte, 0, n+sha256.Size)
	var block [8]byte
	for i := uint64(0); len(out) < n; i++ {
		h := sha256.New()
		h.Write([]byte(id))
		binary.BigEndian.PutUint64(block[:], uint64(written))
		h.Write(block[:])
		binary.BigEndian.PutUint64(block[:], i)
		h.Write(block[:])
		out = h.Sum(out)
	}
	return out[:n]
}

// TestCrashKill SIGKILLs a child process in the middle of a stream of
// writes, about 20 times, and checks after each kill that the file opens
// without complaint, that every entry is one that was written, and that
// the counters match a full count.
func TestCrashKill(t *testing.T) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	rounds := 20
	if testing.Short() {
		rounds = 5
	}
	path := filepath.Join(t.TempDir(), "cache.db")
	rng := rand.New(rand.NewPCG(42, 1))
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashKill$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path, "CRASH_SEED="+strconv.Itoa(round))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "ready\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: child said %q, %v", round, line, err)
		}
		time.Sleep(time.Duration(5+rng.IntN(80)) * time.Millisecond)
		cmd.Process.Kill()
		err = cmd.Wait()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != -1 {
			t.Fatalf("round %d: child ended on its own: %v", round, err)
		}
		checkAfterCrash(t, round, path)
	}
}

func checkAfterCrash(t *testing.T, round int, path string) {
	t.Helper()
	s, err := Open(path, crashLimits, Options{Logger: failOnWarn(t)})
	if err != nil {
		t.Fatalf("round %d: reopen: %v", round, err)
	}
	defer s.Close()
	entries, total := fullCount(t, s)
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != entries || st.Bytes != total {
		t.Fatalf("round %d: Stats %+v, file holds %d entries of %d bytes", round, st, entries, total)
	}
	if entries > crashLimits.MaxEntries || total > crashLimits.MaxBytes {
		t.Fatalf("round %d: %d entries of %d bytes exceed %+v", round, entries, total, crashLimits)
	}
	err = s.run(ctx, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketEntries).ForEach(func(k, v []byte) error {
				nanos, session, ok := decodeValue(k, v)
				if !ok || !bytes.Equal(session, crashSession(string(k), nanos, len(session))) {
					return fmt.Errorf("entry %q holds bytes that were never written", k)
				}
				return nil
			})
		})
	})
	if err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	if d, r := s.damageCounts(); d != 0 || r != 0 {
		t.Fatalf("round %d: damaged %d, resets %d", round, d, r)
	}
	t.Logf("round %d: %d entries intact", round, entries)
}

// exitOnWarn makes a child that distrusts the file fail loudly: the file
// a killed child leaves must always be trusted.
type exitOnWarn struct{}

func (exitOnWarn) Enabled(_ context.Context, level slog.Level) bool { return level >= slog.LevelWarn }

func (exitOnWarn) Handle(_ context.Context, r slog.Record) error {
	fmt.Fprintf(os.Stderr, "child: warning: %s\n", r.Message)
	os.Exit(4)
	return nil
}

func (h exitOnWarn) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h exitOnWarn) WithGroup(string) slog.Handler      { return h }

// crashChild writes until it is killed. It never closes the store.
func crashChild(path string) {
	seed, _ := strconv.Atoi(os.Getenv("CRASH_SEED"))
	rng := rand.New(rand.NewPCG(uint64(seed), 2))
	s, err := Open(path, crashLimits, Options{Logger: slog.New(exitOnWarn{})})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	fmt.Println("ready")
	for {
		id := fmt.Sprintf("id-%d", rng.IntN(5000))
		switch r := rng.IntN(100); {
		case r < 80:
			written := time.Now().UnixNano()
			session := crashSession(id, written, rng.IntN(1500))
			if err := s.Put(ctx, id, scache.Entry{Written: time.Unix(0, written), Session: session}); err != nil {
				fmt.Fprintln(os.Stderr, "child: Put:", err)
				os.Exit(2)
			}
		case r < 90:
			if _, err := s.Delete(ctx, id); err != nil {
				fmt.Fprintln(os.Stderr, "child: Delete:", err)
				os.Exit(2)
			}
		case r < 92:
			cutoff := time.Now().Add(-time.Second - time.Duration(rng.IntN(2000))*time.Millisecond)
			if _, _, err := s.Expire(ctx, cutoff, 20, nil); err != nil {
				fmt.Fprintln(os.Stderr, "child: Expire:", err)
				os.Exit(2)
			}
		default:
			e, err := s.Get(ctx, id)
			if err == nil && !bytes.Equal(e.Session, crashSession(id, e.Written.UnixNano(), len(e.Session))) {
				fmt.Fprintln(os.Stderr, "child: Get returned bytes never written")
				os.Exit(3)
			}
			if err != nil && !errors.Is(err, scache.ErrNotFound) {
				fmt.Fprintln(os.Stderr, "child: Get:", err)
				os.Exit(2)
			}
		}
	}
}
