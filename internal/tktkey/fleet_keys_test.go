package tktkey

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/proto"
)

// nameStore is an EpochStore that accepts every epoch key offered and
// answers by-name lookups from a table the test fills, or fails while
// down.
type nameStore struct {
	mu     sync.Mutex
	byName map[[proto.TicketNameLen]byte]proto.TicketKey
	down   bool
	calls  int
}

func (s *nameStore) Epochs(context.Context, []int64) (map[int64]proto.TicketKey, error) {
	return map[int64]proto.TicketKey{}, nil
}

func (s *nameStore) Create(_ context.Context, _ int64, k proto.TicketKey, _ time.Time) (proto.TicketKey, error) {
	return k, nil
}

func (s *nameStore) ByName(_ context.Context, name [proto.TicketNameLen]byte) (proto.TicketKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.down {
		return proto.TicketKey{}, errStoreDown
	}
	if k, ok := s.byName[name]; ok {
		return k, nil
	}
	return proto.TicketKey{}, ErrUnknownKey
}

func (s *nameStore) set(name [proto.TicketNameLen]byte, k proto.TicketKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byName == nil {
		s.byName = make(map[[proto.TicketNameLen]byte]proto.TicketKey)
	}
	s.byName[name] = k
}

func newNameFleet(t *testing.T, st *nameStore, now time.Time) *Manager {
	t.Helper()
	m, err := NewManager(bg, Options{
		Timeout: 120 * time.Second, Rand: newSeededRand(7), Fleet: st,
		Now: func() time.Time { return now }, StoreTimeout: time.Minute, LookupTimeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func testKey(name byte, expiry int64) proto.TicketKey {
	return proto.TicketKey{Name: [proto.TicketNameLen]byte{0xa0, name}, AES: [proto.TicketKeyLen]byte{1, name}, HMAC: [proto.TicketMACLen]byte{2, name}, Expiry: expiry}
}

// TestFleetByNameChecksNameAndWindow: a key the store returns for a
// by-name lookup is used only if it is the key asked for and still
// decrypts: its expiry plus T/2 is after now.
func TestFleetByNameChecksNameAndWindow(t *testing.T) {
	now := time.Unix(t0, 0)
	const half = 60
	asked := [proto.TicketNameLen]byte{0xa0, 1}
	for _, c := range []struct {
		what string
		k    proto.TicketKey
		ok   bool
	}{
		{"live key", testKey(1, now.Unix()-half+1), true},
		{"key whose window ends now", testKey(1, now.Unix()-half), false},
		{"key past its window", testKey(1, now.Unix()-half-30), false},
		{"another key than asked", testKey(2, now.Unix()+half), false},
	} {
		t.Run(c.what, func(t *testing.T) {
			st := &nameStore{}
			st.set(asked, c.k)
			m := newNameFleet(t, st, now)
			k, err := m.Decrypting(bg, asked)
			if c.ok {
				if err != nil || k != c.k {
					t.Fatalf("Decrypting = %x, %v; want the stored key", k.Name, err)
				}
				return
			}
			if !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("Decrypting(%x) with the store returning %x (expiry %d, now %d) = %x, %v; want ErrUnknownKey",
					asked, c.k.Name, c.k.Expiry, now.Unix(), k.Name, err)
			}
		})
	}
}

// TestFleetRefusesIncompleteKey: a stored epoch key with an all-zero
// name, AES or HMAC part is refused like any other bad key, and mail goes
// on with a local key.
func TestFleetRefusesIncompleteKey(t *testing.T) {
	for _, part := range []string{"name", "AES", "HMAC"} {
		t.Run(part, func(t *testing.T) {
			f := newTestFleet(t, 120*time.Second)
			e := f.baseEpoch()
			bad := proto.TicketKey{Name: [proto.TicketNameLen]byte{0xbb}, AES: [proto.TicketKeyLen]byte{1}, HMAC: [proto.TicketMACLen]byte{2}, Expiry: f.expiryOf(e)}
			switch part {
			case "name":
				bad.Name = [proto.TicketNameLen]byte{}
			case "AES":
				bad.AES = [proto.TicketKeyLen]byte{}
			case "HMAC":
				bad.HMAC = [proto.TicketMACLen]byte{}
			}
			f.store.put(e, bad, f.until(e+1))
			a := f.join("a")
			if _, ok := a.fleetKeys()[e]; ok {
				t.Fatalf("a key with an empty %s part was adopted", part)
			}
			if !strings.Contains(a.log.String(), "is empty") {
				t.Errorf("log: %s", a.log.String())
			}
			if k := a.enc(t); k == bad || a.m.Stats().LocalKeys != 1 {
				t.Fatalf("encrypting with %x, %d local keys; want a local key in place of the empty one", k.Name, a.m.Stats().LocalKeys)
			}
		})
	}
}

// TestFleetSparesKeepNewest: past maxSpares keys found by name, the one
// that stops decrypting first is dropped, never the newest.
func TestFleetSparesKeepNewest(t *testing.T) {
	now := time.Unix(t0, 0)
	st := &nameStore{}
	m := newNameFleet(t, st, now)
	var names [][proto.TicketNameLen]byte
	for i := range maxSpares + 1 {
		k := testKey(byte(10+i), now.Unix()+int64(i)) // expiring later and later
		st.set(k.Name, k)
		if _, err := m.Decrypting(bg, k.Name); err != nil {
			t.Fatalf("lookup %d: %v", i, err)
		}
		names = append(names, k.Name)
	}
	st.mu.Lock()
	st.down = true // from now on only what the ring holds decrypts
	st.mu.Unlock()
	for i := 1; i <= maxSpares; i++ {
		if _, err := m.Decrypting(bg, names[i]); err != nil {
			t.Fatalf("spare %d of %d (expiring %ds after the first) no longer decrypts: %v", i, maxSpares+1, i, err)
		}
	}
	if _, err := m.Decrypting(bg, names[0]); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("the spare expiring first still decrypts (%v); want it dropped", err)
	}
}
