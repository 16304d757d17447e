// # Design
//
// The pool is one NIST SP 800-90A HMAC_DRBG over HMAC-SHA-256, checked
// against NIST's CAVP known-answer vectors. It is instantiated from the
// operating system's generator (crypto/rand: getrandom(2), which works in a
// chroot), with the time of day, the pid and the parent pid in the nonce and
// personalization string. From then on every input goes through the DRBG's
// own functions and never reaches the output directly:
//
//   - every reseed takes 32 fresh bytes from the operating system as the
//     entropy input of HMAC_DRBG_Reseed; reads from tls_random_source
//     (dev:, egd: or a plain file) pass continuous health tests (SP 800-90B
//     repetition count and adaptive proportion, and a repeated-pattern
//     test) and join that entropy input if they pass, or enter as
//     additional input, not counted as entropy, if the source is failing;
//   - the exchange file's contents, the time of day at every request, and
//     session-cache material (Pool.Mix) are the provided data of
//     HMAC_DRBG_Update, without resetting the reseed counter: they are
//     stirred in, not credited as entropy;
//   - output is HMAC_DRBG_Generate, which updates the state after every
//     request (backtracking resistance).
//
// # Inputs an attacker chooses
//
// Like Postfix's tlsmgr, the pool does not trust the data it manipulates.
// Clients choose cache ids and session bytes and can time their requests;
// anyone who can write the exchange file chooses its contents. None of this
// can weaken the output. HMAC_DRBG's state (K, V) after an update is
// HMAC-SHA-256 keyed with the previous secret K: as long as K was
// unpredictable, the new state is unpredictable whatever the provided data,
// because predicting it means predicting HMAC under an unknown key. Data an
// attacker knows or picks therefore adds nothing and removes nothing; data
// with entropy the attacker does not know adds it. The state was
// unpredictable from the start (256 bits from the operating system), so
// the output is as strong as the best input ever mixed in, not the worst.
//
// # Files and timers
//
// Open opens the source and the exchange file before the daemon chroots and
// keeps them open (a plain-file source is read once and dropped). Run reseeds
// every random interval in [0, tls_random_reseed_period] and rewrites the
// exchange file every random interval in [0, tls_random_prng_update_period],
// both drawn from the pool. A failing source is reopened with exponential
// back-off while the pool keeps serving. Exchange-file updates take a flock
// with a deadline, read and mix the file, then overwrite its 1024 bytes in
// place with pwrite and fsync; the file is never truncated first, and a
// missing file is created complete under a temporary name and linked into
// place, so a crash at any point leaves a 1024-byte file. See DESIGN.md.
package prng
