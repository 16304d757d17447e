// The package comment begins in pool.go; go doc joins the two.

// The pool is a NIST SP 800-90A HMAC_DRBG over HMAC-SHA-256, checked
// against NIST's CAVP known-answer vectors and instantiated from the
// operating system's generator. The package also holds the
// tls_random_source reader (dev:, egd: or a plain file, under continuous
// health tests), the tls_random_exchange_name file and the reseed and
// exchange-file timers (Manager).
//
// Every input goes through the DRBG's own functions and none reaches the
// output directly, so data an attacker knows or chooses (cache ids, session
// bytes, request timing, the exchange file's contents) cannot weaken it.
//
// The full design (inputs, health tests and their cutoffs, the exchange
// file, the timers, differences from Postfix and the known-answer evidence)
// is in docs/prng.md at the root of the repository.
package prng
