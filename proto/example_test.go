package proto_test

import (
	"fmt"
	"log"

	"github.com/gotlsmgr/tlsmgr/proto"
)

// The keybuf attribute of a tktkey reply carries a ticket key as the
// record Marshal writes and ParseTicketKey reads.
func ExampleParseTicketKey() {
	var k proto.TicketKey
	copy(k.Name[:], "0123456789abcdef")
	k.Expiry = 1_800_000_000
	record := k.Marshal()

	got, err := proto.ParseTicketKey(record)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(record), string(got.Name[:]), got.ExpiryTime().UTC())
	// Output: 88 0123456789abcdef 2027-01-15 08:00:00 +0000 UTC
}

// A request is an attribute list: name, NUL, value, NUL, and a NUL to end
// the list. This one asks for the smtpd cache's policy.
func Example() {
	request := proto.AttrRequest + "\x00" + proto.RequestPolicy + "\x00" +
		proto.AttrCacheType + "\x00smtpd\x00\x00"
	fmt.Printf("%q\n", request)
	// Output: "request\x00policy\x00cache_type\x00smtpd\x00\x00"
}
