package prng

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"hash"
)

// Limits from NIST SP 800-90A Rev. 1, section 10.1, table 2, for
// HMAC_DRBG with SHA-256.
const (
	drbgOutLen         = sha256.Size
	maxBytesPerRequest = 1 << 19 / 8 // max_number_of_bits_per_request = 2^19
	maxReseedInterval  = 1 << 48     // reseed_interval <= 2^48
)

var (
	errReseedRequired = errors.New("HMAC_DRBG: reseed required")
	errRequestTooLong = errors.New("HMAC_DRBG: request longer than 2^19 bits")
)

// hmacDRBG is HMAC_DRBG (SP 800-90A Rev. 1, section 10.1.2) over
// HMAC-SHA-256. It follows the specification's algorithms step by step so
// that the CAVP known-answer vectors can check it; it is not safe for
// concurrent use (the pool serialises access).
type hmacDRBG struct {
	key   [drbgOutLen]byte // K
	value [drbgOutLen]byte // V
	// mac is HMAC keyed with key; it is rebuilt whenever key changes so
	// that the steps that reuse K do not pay for the key schedule again.
	mac            hash.Hash
	reseedCounter  uint64
	reseedInterval uint64
	separator      [1]byte // scratch for the 0x00 / 0x01 byte, avoids an allocation
}

// newHMACDRBG runs HMAC_DRBG_Instantiate_algorithm (10.1.2.3).
func newHMACDRBG(entropy, nonce, personalization []byte) *hmacDRBG {
	d := &hmacDRBG{reseedInterval: maxReseedInterval}
	for i := range d.key {
		d.key[i] = 0x00
		d.value[i] = 0x01
	}
	d.rekey()
	d.update(entropy, nonce, personalization)
	d.reseedCounter = 1
	return d
}

func (d *hmacDRBG) rekey() {
	d.mac = hmac.New(sha256.New, d.key[:])
}

// update is HMAC_DRBG_Update (10.1.2.2). The provided data is given in
// parts that are hashed as their concatenation; it is "Null" when every
// part is empty.
func (d *hmacDRBG) update(provided ...[]byte) {
	d.updateRound(0x00, provided)
	for _, part := range provided {
		if len(part) > 0 {
			d.updateRound(0x01, provided)
			return
		}
	}
}

// updateRound computes K = HMAC(K, V || separator || provided data), then
// V = HMAC(K, V).
func (d *hmacDRBG) updateRound(separator byte, provided [][]byte) {
	d.separator[0] = separator
	d.mac.Reset()
	d.mac.Write(d.value[:])
	d.mac.Write(d.separator[:])
	for _, part := range provided {
		d.mac.Write(part)
	}
	d.mac.Sum(d.key[:0])
	d.rekey()
	d.nextValue()
}

// nextValue computes V = HMAC(K, V).
func (d *hmacDRBG) nextValue() {
	d.mac.Reset()
	d.mac.Write(d.value[:])
	d.mac.Sum(d.value[:0])
}

// reseed is HMAC_DRBG_Reseed_algorithm (10.1.2.4).
func (d *hmacDRBG) reseed(entropy, additional []byte) {
	d.update(entropy, additional)
	d.reseedCounter = 1
}

// generate is HMAC_DRBG_Generate_algorithm (10.1.2.5): it fills out (at
// most 2^19 bits) and updates the state with the additional input, or with
// Null when there is none, so that a later compromise of the state does not
// reveal out (backtracking resistance).
func (d *hmacDRBG) generate(out, additional []byte) error {
	if len(out) > maxBytesPerRequest {
		return errRequestTooLong
	}
	if d.reseedCounter > d.reseedInterval {
		return errReseedRequired
	}
	if len(additional) > 0 {
		d.update(additional)
	}
	for filled := 0; filled < len(out); {
		d.nextValue()
		filled += copy(out[filled:], d.value[:])
	}
	d.update(additional)
	d.reseedCounter++
	return nil
}
