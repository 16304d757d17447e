package prng

import "time"

// What tests give Open for the main.cf values they leave out: Open has no
// defaults of its own for those (config has them).
const (
	testBytes  = 32
	testPeriod = time.Hour
)

// testOpen is Open with Bytes and the periods filled in where o leaves
// them zero.
func testOpen(o Options) (*Manager, error) {
	if o.Bytes == 0 {
		o.Bytes = testBytes
	}
	if o.ReseedPeriod == 0 {
		o.ReseedPeriod = testPeriod
	}
	if o.UpdatePeriod == 0 {
		o.UpdatePeriod = testPeriod
	}
	return Open(o)
}
