package server

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/gotlsmgr/tlsmgr/proto"
)

// TestTicketKeyNameOneByteLong: a key name must be exactly 16 bytes (or
// empty for the current key). A 17-byte name that starts with the name
// of a live key gets what Postfix's tlsmgr answers for a bad length:
// status FAIL and an empty key buffer, with a warning, never the key.
func TestTicketKeyNameOneByteLong(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t)
	c.send("request", "tktkey", "keyname", "")
	enc, found := strings.CutPrefix(c.readList(), ok+" keybuf=")
	if !found {
		t.Fatal("no current key")
	}
	b, _ := base64.StdEncoding.DecodeString(enc)
	k, err := proto.ParseTicketKey(b)
	if err != nil {
		t.Fatal(err)
	}
	name := k.Name[:]
	for _, bad := range [][]byte{
		append(append([]byte{}, name...), 'x'),
		append(append([]byte{}, name...), name...),
		name[:15],
	} {
		c.send("request", "tktkey", "keyname", base64.StdEncoding.EncodeToString(bad)).expect(fail + " keybuf=")
	}
	// The connection still serves, and the right name still works.
	c.send("request", "tktkey", "keyname", base64.StdEncoding.EncodeToString(name)).expect(ok + " keybuf=" + enc)
	for _, n := range []string{"17", "32", "15"} {
		if !f.log.Has("invalid session ticket key name length: " + n) {
			t.Errorf("no warning for a %s-byte key name:\n%s", n, f.log.String())
		}
	}
}
