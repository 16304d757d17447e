package scache

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Clearer is implemented by stores that remove every entry in a way of
// their own (a shared store: everywhere). Other stores are flushed
// through Expire.
type Clearer interface {
	Clear(ctx context.Context) (int, error)
}

// DumpEntry describes one entry without its secrets: a short keyed hash
// of its id (the same for the same id while the daemon runs, and no
// dictionary of destinations finds it), its age and its session's size.
type DumpEntry struct {
	IDHash string
	Age    time.Duration
	Size   int
}

// dumpKey keys the hashes of ids in dumps; made once per process.
var dumpKey = func() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}()

// IDHash is the short keyed hash of id shown by dumps.
func IDHash(id string) string {
	m := hmac.New(sha256.New, dumpKey)
	m.Write([]byte(id))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// Dump lists up to max entries (all live or expired but not yet swept)
// and returns how many the store holds in all.
func (c *Cache) Dump(ctx context.Context, max int) (entries []DumpEntry, total int, err error) {
	now := c.now()
	err = c.store.Each(ctx, func(id string, written time.Time, size int) bool {
		total++
		if len(entries) < max {
			entries = append(entries, DumpEntry{IDHash: IDHash(id), Age: now.Sub(written), Size: size})
		}
		return ctx.Err() == nil
	})
	return entries, total, err
}

// flushBatch is how many entries one Expire call of a flush removes.
const flushBatch = 1000

// Flush removes every entry and returns how many.
func (c *Cache) Flush(ctx context.Context) (int, error) {
	if cl, ok := c.store.(Clearer); ok {
		n, err := cl.Clear(ctx)
		c.deletes.Add(uint64(n))
		return n, err
	}
	total := 0
	for {
		n, more, err := c.store.Expire(ctx, time.Unix(1<<62, 0), flushBatch, nil)
		total += n
		c.deletes.Add(uint64(n))
		if err != nil || !more {
			return total, err
		}
	}
}
