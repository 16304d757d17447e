package redisstore

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redistest"
	"github.com/gotlsmgr/tlsmgr/internal/scache"
	"github.com/gotlsmgr/tlsmgr/internal/scache/memstore"
)

// A TLS 1.2 session as Postfix stores it is a few hundred bytes.
var benchSession = bytes.Repeat([]byte{0xA5}, 300)

const benchIDs = 1000

func benchID(i int) string { return fmt.Sprintf("%064x&s=smtpd&l=805306672", i%benchIDs) }

func reportMicros(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e3/float64(b.N), "µs/op")
}

// benchStore is a member on loopback Redis (or on a dead one) with
// benchIDs entries, one connection's worth of traffic.
func benchStore(b *testing.B, addr string, keys [][32]byte) *member {
	m := newMember(b, conf{addrs: []string{addr}, keys: keys})
	now := time.Now()
	for i := range benchIDs {
		put(b, m, benchID(i), now, benchSession)
	}
	return m
}

// noFallback fails a benchmark of the Redis path that measured the local
// cache instead.
func noFallback(b *testing.B, m *member) {
	if st := m.FleetStats(); st.FallbackHits+st.FallbackMisses+st.UpdatesUnshared != 0 {
		b.Fatalf("Redis did not answer everything: %+v", st)
	}
}

func benchGet(b *testing.B, s scache.Store, prefix string) {
	i := 0
	for b.Loop() {
		e, err := s.Get(ctx, prefix+benchID(i))
		if prefix == "" && (err != nil || len(e.Session) != len(benchSession)) {
			b.Fatalf("Get: %v", err)
		}
		i++
	}
	reportMicros(b)
}

func benchPut(b *testing.B, s scache.Store) {
	i := 0
	for b.Loop() {
		now := time.Now()
		e := scache.Entry{Written: now, Expires: now.Add(time.Hour), Session: benchSession}
		if err := s.Put(ctx, benchID(i), e); err != nil {
			b.Fatal(err)
		}
		i++
	}
	reportMicros(b)
}

func BenchmarkGet(b *testing.B) {
	m := benchStore(b, redistest.Single(b).Addr, nil)
	benchGet(b, m, "")
	noFallback(b, m)
}

func BenchmarkGetMiss(b *testing.B) {
	m := benchStore(b, redistest.Single(b).Addr, nil)
	benchGet(b, m, "absent ")
	noFallback(b, m)
}

// During a seal key rotation: two names in one pipeline.
func BenchmarkGetTwoSealKeys(b *testing.B) {
	m := benchStore(b, redistest.Single(b).Addr, [][32]byte{k2, k1})
	benchGet(b, m, "")
	noFallback(b, m)
}

func BenchmarkPut(b *testing.B) {
	m := benchStore(b, redistest.Single(b).Addr, nil)
	benchPut(b, m)
	noFallback(b, m)
}

// Redis away with the breaker open: the local cache answers, behind a
// refused call.
func BenchmarkGetRedisDown(b *testing.B) {
	m := benchStore(b, deadServer(b), nil)
	benchGet(b, m, "")
}

func BenchmarkPutRedisDown(b *testing.B) {
	m := benchStore(b, deadServer(b), nil)
	benchPut(b, m)
}

// The memory store, for the ratios.
func BenchmarkMemstoreGet(b *testing.B) {
	s := memstore.New(roomy)
	for i := range benchIDs {
		put(b, s, benchID(i), time.Now(), benchSession)
	}
	benchGet(b, s, "")
}

func BenchmarkMemstorePut(b *testing.B) {
	benchPut(b, memstore.New(roomy))
}
