// Package redisring keeps the fleet's session ticket keys in Redis: a
// tktkey.EpochStore shared by every tlsmgr that names the same Redis and
// key prefix in tlsmgr_ticket_key_database.
//
// Each epoch's key is one value, created with SET NX (the first member to
// get there wins; the others adopt its key) and an expiry at the end of the
// key's decryption lifetime, so Redis forgets retired keys by itself. A
// second value under the key's name lets a member answer a ticket issued
// by another member by name. Both values are sealed (fleet/seal) with the
// Redis key as associated data, and the name is a keyed hash: Redis never
// sees a key, or its name, in the clear.
//
// Redis keys, for prefix P and period H = T/2 in seconds (members with
// different timeouts have different epochs, so their rings stay apart):
//
//	P + "k:" + H + ":e:" + epoch   the key of that epoch
//	P + "k:" + H + ":n:" + Name(key name)   the same key, found by name
package redisring

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gotlsmgr/tlsmgr/internal/fleet/redisconn"
	"github.com/gotlsmgr/tlsmgr/internal/fleet/seal"
	"github.com/gotlsmgr/tlsmgr/internal/tktkey"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// Store is a tktkey.EpochStore on Redis. It is safe for concurrent use.
type Store struct {
	client *redisconn.Client
	sealer *seal.Sealer
	base   string // P + "k:" + H + ":"
}

var _ tktkey.EpochStore = (*Store)(nil)

// New returns the ring of the fleet whose keys live under prefix, for
// epochs of half seconds (T/2).
func New(client *redisconn.Client, sealer *seal.Sealer, prefix string, half int64) *Store {
	return &Store{client: client, sealer: sealer, base: prefix + "k:" + strconv.FormatInt(half, 10) + ":"}
}

func (s *Store) epochKey(epoch int64) string { return s.base + "e:" + strconv.FormatInt(epoch, 10) }

func (s *Store) nameKey(name [proto.TicketNameLen]byte) string {
	return s.base + "n:" + s.sealer.Name(hex.EncodeToString(name[:]))
}

// seal returns the sealed wire record of k for the Redis key rk.
func (s *Store) seal(rk string, k *proto.TicketKey) []byte {
	rec := k.Marshal()
	defer clear(rec)
	return s.sealer.Seal([]byte(rk), rec)
}

// open returns the key sealed under rk.
func (s *Store) open(rk string, sealed []byte) (proto.TicketKey, error) {
	rec, err := s.sealer.Open([]byte(rk), sealed)
	if err != nil {
		return proto.TicketKey{}, fmt.Errorf("ticket key under %s: %w", rk, err)
	}
	defer clear(rec)
	return proto.ParseTicketKey(rec)
}

// Epochs returns the stored keys of the given epochs, in one round trip
// (a pipeline: in a cluster the epochs live in different slots). A value
// that does not open is left out, as if absent: the caller then creates
// one, which SET NX keeps from replacing it, so it adopts nothing bad.
func (s *Store) Epochs(ctx context.Context, epochs []int64) (map[int64]proto.TicketKey, error) {
	ctx, cancel := s.client.WithTimeout(ctx)
	defer cancel()
	pipe := s.client.Redis().Pipeline()
	cmds := make([]*redis.StringCmd, len(epochs))
	for i, e := range epochs {
		cmds[i] = pipe.Get(ctx, s.epochKey(e))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	got := make(map[int64]proto.TicketKey, len(epochs))
	var bad error
	for i, cmd := range cmds {
		b, err := cmd.Bytes()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, err
		}
		k, err := s.open(s.epochKey(epochs[i]), b)
		if err != nil {
			bad = err
			continue
		}
		got[epochs[i]] = k
	}
	if len(got) == 0 && bad != nil {
		return nil, bad
	}
	return got, nil
}

// Create stores k as epoch's key unless there is one, and returns the key
// that is stored. Either way the key is also made findable by name: its
// creator may have died between the two writes.
func (s *Store) Create(ctx context.Context, epoch int64, k proto.TicketKey, until time.Time) (proto.TicketKey, error) {
	ctx, cancel := s.client.WithTimeout(ctx)
	defer cancel()
	rdb := s.client.Redis()
	ek := s.epochKey(epoch)
	// A relative expiry (PX): EXAT, which ExpireAt sends, needs Redis
	// 6.2, and 6.0 (Debian 11's) answers it with a syntax error.
	ttl := max(time.Until(until), time.Millisecond) // 0 would mean no expiry at all
	created, err := rdb.SetArgs(ctx, ek, s.seal(ek, &k), redis.SetArgs{Mode: "NX", TTL: ttl}).Result()
	switch {
	case err == nil && created == "OK":
	case err == nil || errors.Is(err, redis.Nil):
		// Another member was first: adopt its key.
		b, err := rdb.Get(ctx, ek).Bytes()
		if err != nil {
			return proto.TicketKey{}, err
		}
		if k, err = s.open(ek, b); err != nil {
			return proto.TicketKey{}, err
		}
	default:
		return proto.TicketKey{}, err
	}
	nk := s.nameKey(k.Name)
	if err := rdb.SetArgs(ctx, nk, s.seal(nk, &k), redis.SetArgs{Mode: "NX", TTL: ttl}).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return proto.TicketKey{}, err
	}
	return k, nil
}

// ByName returns the key named name, or tktkey.ErrUnknownKey. While a
// seal-key rotation is under way, a name is looked for under the hash of
// every seal key, in one round trip.
func (s *Store) ByName(ctx context.Context, name [proto.TicketNameLen]byte) (proto.TicketKey, error) {
	ctx, cancel := s.client.WithTimeout(ctx)
	defer cancel()
	var keys []string
	for _, n := range s.sealer.Names(hex.EncodeToString(name[:])) {
		keys = append(keys, s.base+"n:"+n)
	}
	pipe := s.client.Redis().Pipeline()
	cmds := make([]*redis.StringCmd, len(keys))
	for i, nk := range keys {
		cmds[i] = pipe.Get(ctx, nk)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return proto.TicketKey{}, err
	}
	for i, cmd := range cmds {
		b, err := cmd.Bytes()
		if err != nil {
			continue // redis.Nil: not under this hash
		}
		k, err := s.open(keys[i], b)
		if err != nil {
			return proto.TicketKey{}, err
		}
		if k.Name != name {
			k.Wipe()
			return proto.TicketKey{}, fmt.Errorf("ticket key under %s has another name", keys[i])
		}
		return k, nil
	}
	return proto.TicketKey{}, tktkey.ErrUnknownKey
}
