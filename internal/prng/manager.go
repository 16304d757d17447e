package prng

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/maillog"
)

// Clock is the time source for the timers, so that tests can run them
// fast. Read and lock timeouts use real time regardless.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Timing defaults of our own; the main.cf parameters (Options.Bytes and
// the periods) have none here: their defaults and limits are config's.
const (
	DefaultIOWait = 10 * time.Second // Postfix's TLS_MGR_TIMEOUT for source I/O

	defaultRetryMin = time.Second
	defaultRetryMax = time.Hour
)

// Options configure Open. Bytes and the two periods are required, as
// main.cf gives them (config.Params); other zero values select the
// defaults noted.
type Options struct {
	Source       string        // tls_random_source: "dev:PATH", "egd:PATH", a plain file, or "" for none
	Bytes        int           // tls_random_bytes, at least 1; at most 255 are read from a device or EGD server
	ExchangeFile string        // tls_random_exchange_name; "" disables
	UpdatePeriod time.Duration // tls_random_prng_update_period, positive
	ReseedPeriod time.Duration // tls_random_reseed_period, positive
	Logger       *slog.Logger  // nil discards

	// SourceOptional makes a source that cannot be opened at Open a
	// warning, as in Postfix, instead of an error; Run keeps retrying a
	// device or EGD server (a plain file is only ever tried at Open).
	SourceOptional bool
	// Verbose logs every reseed and exchange-file update.
	Verbose bool

	Clock       Clock         // timers' clock (default: the system clock)
	ReadTimeout time.Duration // limit on each source connect or read (default 10s)
	LockTimeout time.Duration // limit on waiting for the exchange file's lock (default 10s)
	RetryMin    time.Duration // first delay before reopening a failed source (default 1s)
	RetryMax    time.Duration // longest such delay; it doubles up to this (default 1h)

	// Watch, if set, is told when each reseed and exchange-file update
	// that Run makes starts and (through the function it returns) ends:
	// the daemon's watchdog (daemon_timeout). An exchange file on a dead
	// disk or network file system wedges Run, which no request notices
	// (the pool keeps serving), and then the final save at Close.
	Watch func(what string) (done func())

	osEntropy io.Reader // test hook replacing crypto/rand
}

// Stats is what the control tool shows about the PRNG.
type Stats struct {
	BytesServed uint64 // bytes returned by Pool().Read
	Reads       uint64 // calls of Pool().Read

	Source         string    // tls_random_source as configured ("" for none)
	SourceOK       bool      // false while the source cannot be read or fails its health tests (a plain file: its one read)
	LastReseed     time.Time // last read from Source counted as entropy (zero: never)
	Reseeds        uint64    // reads of Source counted as entropy
	ReseedFailures uint64    // failed opens and reads of Source
	// HealthFailures counts reads of Source whose bytes were not counted
	// as entropy because the source was failing its continuous health
	// tests (the read failed them, or came before a full clean window).
	HealthFailures uint64
	// OSEntropyFailures counts failed reads of the operating system's
	// generator at reseeds.
	OSEntropyFailures uint64

	ExchangeFile       string    // tls_random_exchange_name ("" when disabled)
	LastExchangeUpdate time.Time // last successful read-mix-write of ExchangeFile
	ExchangeUpdates    uint64    // successful read-mix-writes of ExchangeFile
	ExchangeFailures   uint64    // failed exchange-file updates
}

// Manager owns the pool, the entropy source and the exchange file, and
// runs the reseed and exchange timers.
type Manager struct {
	opts  Options
	log   *slog.Logger
	clock Clock
	pool  *drbgPool

	kind       sourceKind
	sourcePath string
	readBytes  int

	// srcMu guards src and the failure state. A read runs without it so
	// that Close can close a source whose read is blocked.
	srcMu       sync.Mutex
	src         entropySource
	srcFailures int // consecutive; drives the back-off

	// health persists across reads and reopens of the source. Only the
	// goroutine reading the source uses it (Open, then Run).
	health *healthTests

	exchMu sync.Mutex // serialises exchange-file updates and Close
	exch   *exchangeFile

	statsMu sync.Mutex
	stats   Stats

	closeOnce sync.Once
	closed    chan struct{}
	closeErr  error
}

// Open instantiates the pool, opens the entropy source and the exchange
// file (before the daemon chroots: both stay open) and seeds the pool from
// the time of day, the pid, the source and the exchange file.
func Open(opts Options) (*Manager, error) {
	if err := normalize(&opts); err != nil {
		return nil, err
	}
	pool, err := newPool(opts.osEntropy, opts.Clock.Now())
	if err != nil {
		return nil, err
	}
	m := &Manager{
		opts:   opts,
		log:    opts.Logger,
		clock:  opts.Clock,
		pool:   pool,
		health: newHealthTests(),
		closed: make(chan struct{}),
	}
	m.kind, m.sourcePath = parseSource(opts.Source)
	m.readBytes = opts.Bytes
	if m.kind == sourceDev || m.kind == sourceEGD {
		m.readBytes = min(m.readBytes, maxDeviceRead)
	}
	m.stats.Source = opts.Source
	m.stats.ExchangeFile = opts.ExchangeFile

	var pidTime [16]byte
	binary.BigEndian.PutUint64(pidTime[:8], uint64(os.Getpid()))
	binary.BigEndian.PutUint64(pidTime[8:], uint64(m.clock.Now().UnixNano()))
	m.pool.Mix(pidTime[:])

	switch m.kind {
	case sourceNone:
		maillog.Warnf(m.log, "no entropy source specified with parameter tls_random_source")
		maillog.Warnf(m.log, "encryption keys etc. may be predictable")
	case sourceFile:
		if err := m.readFileOnce(); err != nil {
			return nil, err
		}
	default:
		src, err := openSource(m.kind, m.sourcePath, opts.ReadTimeout)
		if err != nil {
			if !opts.SourceOptional {
				return nil, fmt.Errorf("open tls_random_source %s: %w", opts.Source, errorCause(err))
			}
			m.sourceFailed(nil, "cannot "+m.openVerb(), err)
		} else {
			m.src = src
			m.reseedFromSource()
		}
	}

	if opts.ExchangeFile != "" {
		exch, err := openExchangeFile(opts.ExchangeFile, m.pool.generate, m.log)
		if err != nil {
			m.closeSource()
			return nil, fmt.Errorf("open tls_random_exchange_name %s: %w", opts.ExchangeFile, errorCause(err))
		}
		m.exch = exch
		m.updateExchange()
	}
	return m, nil
}

func normalize(o *Options) error {
	if o.Bytes < 1 {
		return fmt.Errorf("tls_random_bytes: %d is not a positive number", o.Bytes)
	}
	for _, p := range []struct {
		name  string
		value time.Duration
	}{
		{"tls_random_reseed_period", o.ReseedPeriod},
		{"tls_random_prng_update_period", o.UpdatePeriod},
	} {
		if p.value <= 0 {
			return fmt.Errorf("%s: %v is not a positive period", p.name, p.value)
		}
	}
	o.Logger = maillog.OrDiscard(o.Logger)
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = DefaultIOWait
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultIOWait
	}
	if o.RetryMin <= 0 {
		o.RetryMin = defaultRetryMin
	}
	if o.RetryMax <= 0 {
		o.RetryMax = defaultRetryMax
	}
	o.RetryMax = max(o.RetryMax, o.RetryMin)
	if o.osEntropy == nil {
		o.osEntropy = rand.Reader
	}
	return nil
}

// Pool returns the pool every random byte the daemon emits comes from.
func (m *Manager) Pool() Pool { return m.pool }

// readFileOnce reads a plain-file source at start-up and drops it: it
// would give the same bytes again.
func (m *Manager) readFileOnce() error {
	src, err := openSource(sourceFile, m.sourcePath, m.opts.ReadTimeout)
	if err != nil {
		if !m.opts.SourceOptional {
			return fmt.Errorf("open tls_random_source %s: %w", m.opts.Source, errorCause(err))
		}
		maillog.Warnf(m.log, "cannot open entropy file %s: %v", m.sourcePath, errorCause(err))
		m.recordReadFailure()
		return nil
	}
	defer src.close()
	data, err := src.read(m.readBytes)
	if err != nil {
		if err == io.EOF {
			err = errors.New("file is empty")
		}
		maillog.Warnf(m.log, "cannot read from entropy file %s: %v", m.sourcePath, errorCause(err))
		m.recordReadFailure()
		return nil
	}
	if m.useSourceBytes(data) && m.opts.Verbose {
		maillog.Infof(m.log, "read %d bytes from entropy file %s", len(data), m.sourcePath)
	}
	return nil
}

// useSourceBytes runs one read of the source through the health tests,
// reseeds the pool with it (crediting it as entropy only if it passed) and
// records and reports the outcome. It returns whether it was credited.
func (m *Manager) useSourceBytes(data []byte) bool {
	wasHealthy := m.health.healthy()
	credit, failures, failed := m.health.feed(data)
	nowHealthy := m.health.healthy()
	if err := m.pool.reseed(data, credit); err != nil {
		m.osEntropyFailed(err, credit)
	}
	m.statsMu.Lock()
	m.stats.SourceOK = credit
	if credit {
		m.stats.LastReseed = m.clock.Now()
		m.stats.Reseeds++
	} else {
		m.stats.HealthFailures++
	}
	m.statsMu.Unlock()
	// One line per change of state, not per read: a dead source would
	// otherwise warn at every reseed.
	if failures > 0 && wasHealthy {
		if m.kind == sourceFile {
			maillog.Warnf(m.log, "entropy file %s fails the %s health test: its bytes are not counted as entropy", m.sourcePath, failed)
		} else {
			maillog.Warnf(m.log, "entropy source %s fails the %s health test: its bytes are not counted as entropy until %d bytes in a row pass; reseeds rely on the operating system's generator meanwhile",
				m.opts.Source, failed, aptWindow)
		}
	}
	if nowHealthy && (!wasHealthy || failures > 0) {
		maillog.Infof(m.log, "entropy source %s passes the health tests again", m.opts.Source)
	}
	return credit
}

// osEntropyFailed reports a reseed without the OS generator's bytes.
func (m *Manager) osEntropyFailed(err error, sourceCredited bool) {
	m.statsMu.Lock()
	m.stats.OSEntropyFailures++
	m.statsMu.Unlock()
	if sourceCredited {
		maillog.Warnf(m.log, "%v -- this reseed uses tls_random_source alone", err)
	} else {
		maillog.Warnf(m.log, "%v -- this reseed adds no entropy; the pool keeps serving from its current state", err)
	}
}

// Run runs the reseed and exchange-file timers until ctx is done or the
// manager is closed. Each interval is drawn from the pool, uniformly in
// [0, period] in 1/255 steps as in Postfix, so outsiders cannot predict
// when the pool changes.
func (m *Manager) Run(ctx context.Context) {
	reseed := m.clock.After(m.nextReseedDelay())
	var exchange <-chan time.Time
	if m.exch != nil {
		exchange = m.clock.After(m.randomInterval(m.opts.UpdatePeriod))
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.closed:
			return
		case <-reseed:
			done := m.watch("PRNG reseed")
			m.reseedEvent()
			done()
			reseed = m.clock.After(m.nextReseedDelay())
		case <-exchange:
			done := m.watch("PRNG exchange file update of " + m.opts.ExchangeFile)
			m.updateExchange()
			done()
			exchange = m.clock.After(m.randomInterval(m.opts.UpdatePeriod))
		}
	}
}

// watch is Options.Watch, or nothing.
func (m *Manager) watch(what string) (done func()) {
	if m.opts.Watch == nil {
		return func() {}
	}
	return m.opts.Watch(what)
}

func (m *Manager) randomInterval(period time.Duration) time.Duration {
	b, ok := m.pool.randomByte()
	if !ok {
		b = 255 // nothing random to draw from; the longest wait
	}
	return scaledInterval(period, b)
}

// scaledInterval is period*b/255, computed without overflow for long
// periods.
func scaledInterval(period time.Duration, b byte) time.Duration {
	n := time.Duration(b)
	return period/255*n + period%255*n/255
}

// nextReseedDelay is a random interval, or the back-off delay while the
// source is failing.
func (m *Manager) nextReseedDelay() time.Duration {
	m.srcMu.Lock()
	failures := m.srcFailures
	m.srcMu.Unlock()
	if failures > 0 && (m.kind == sourceDev || m.kind == sourceEGD) {
		return m.backoff(failures)
	}
	return m.randomInterval(m.opts.ReseedPeriod)
}

func (m *Manager) backoff(failures int) time.Duration {
	delay := m.opts.RetryMin
	for i := 1; i < failures && delay < m.opts.RetryMax; i++ {
		delay *= 2
	}
	return min(delay, m.opts.RetryMax)
}

// reseedEvent stirs in the time of day and operating-system randomness
// (always available, even in a chroot), and reads the configured device or
// EGD server, reopening it first if it failed before.
func (m *Manager) reseedEvent() {
	if m.isClosed() {
		return
	}
	mixTime(m.pool, m.clock.Now())
	if m.kind != sourceDev && m.kind != sourceEGD {
		if err := m.pool.reseed(nil, false); err != nil {
			m.osEntropyFailed(err, false)
		}
		return
	}
	m.srcMu.Lock()
	src := m.src
	m.srcMu.Unlock()
	if src == nil {
		var err error
		if src, err = openSource(m.kind, m.sourcePath, m.opts.ReadTimeout); err != nil {
			m.sourceFailed(nil, "cannot "+m.openVerb(), err)
			return
		}
		m.srcMu.Lock()
		if m.isClosed() {
			m.srcMu.Unlock()
			src.close()
			return
		}
		m.src = src
		m.srcMu.Unlock()
	}
	m.reseedFromSource()
}

// reseedFromSource reads the open device or EGD server into the pool.
func (m *Manager) reseedFromSource() {
	m.srcMu.Lock()
	src := m.src
	m.srcMu.Unlock()
	if src == nil {
		return
	}
	data, err := src.read(m.readBytes)
	if err != nil {
		m.sourceFailed(src, m.readFailure(), err)
		return
	}
	wasHealthy := m.health.healthy()
	credit := m.useSourceBytes(data)
	m.srcMu.Lock()
	recovered := m.srcFailures > 0
	m.srcFailures = 0
	m.srcMu.Unlock()
	switch {
	case recovered && m.health.healthy():
		maillog.Infof(m.log, "entropy source %s is working again", m.opts.Source)
	case recovered && !wasHealthy:
		// useSourceBytes said nothing: the source was failing already.
		maillog.Infof(m.log, "entropy source %s can be read again, but still fails its health tests", m.opts.Source)
	case recovered:
		// useSourceBytes has just warned that this read failed.
	case m.opts.Verbose && credit:
		maillog.Infof(m.log, "read %d bytes from entropy source %s", len(data), m.opts.Source)
	case m.opts.Verbose:
		maillog.Infof(m.log, "read %d bytes from entropy source %s, not counted as entropy", len(data), m.opts.Source)
	}
}

func (m *Manager) openVerb() string {
	if m.kind == sourceEGD {
		return "connect to EGD server " + m.sourcePath
	}
	return "open entropy device " + m.sourcePath
}

func (m *Manager) readFailure() string {
	if m.kind == sourceEGD {
		return "cannot read from EGD server " + m.sourcePath
	}
	return "cannot read from entropy device " + m.sourcePath
}

// sourceFailed closes the failed source (if it is still the current one)
// and logs when the next attempt will be.
func (m *Manager) sourceFailed(failed entropySource, what string, err error) {
	if m.isClosed() {
		return // Close closed the source under a read; not a failure
	}
	m.srcMu.Lock()
	if failed != nil && m.src == failed {
		m.src = nil
		failed.close()
	}
	m.srcFailures++
	retry := m.backoff(m.srcFailures)
	m.srcMu.Unlock()
	m.recordReadFailure()
	maillog.Warnf(m.log, "%s: %v -- the pool keeps serving; retrying in %v", what, errorCause(err), retry)
}

func (m *Manager) recordReadFailure() {
	m.statsMu.Lock()
	defer m.statsMu.Unlock()
	m.stats.SourceOK = false
	m.stats.ReseedFailures++
}

// updateExchange runs one exchange-file update. A removed file is
// recreated first; if that is impossible the update is skipped (writing to
// a file nobody can open is pointless) and the daemon keeps going.
func (m *Manager) updateExchange() {
	m.exchMu.Lock()
	defer m.exchMu.Unlock()
	if m.exch == nil {
		return
	}
	err := m.updateExchangeLocked()
	m.statsMu.Lock()
	if err != nil {
		m.stats.ExchangeFailures++
	} else {
		m.stats.LastExchangeUpdate = m.clock.Now()
		m.stats.ExchangeUpdates++
	}
	m.statsMu.Unlock()
	if err != nil {
		maillog.Warnf(m.log, "PRNG exchange file %s: %v", m.opts.ExchangeFile, err)
	} else if m.opts.Verbose {
		maillog.Infof(m.log, "updated PRNG exchange file %s", m.opts.ExchangeFile)
	}
}

func (m *Manager) updateExchangeLocked() error {
	removed, err := m.exch.removed()
	if err != nil {
		return fmt.Errorf("cannot fstat: %w", errorCause(err))
	}
	if removed {
		if err := m.exch.reopen(m.pool.generate); err != nil {
			return fmt.Errorf("cannot recreate it after its removal: %w", errorCause(err))
		}
		maillog.Warnf(m.log, "PRNG exchange file %s was removed -- recreated it", m.opts.ExchangeFile)
	}
	return m.exch.update(m.pool, m.opts.LockTimeout)
}

// Close saves the pool to the exchange file one last time, then closes the
// exchange file and the entropy source and stops Run. The pool stays
// usable. Close is idempotent.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		close(m.closed)
		m.closeSource()
		m.exchMu.Lock()
		defer m.exchMu.Unlock()
		if m.exch == nil {
			return
		}
		if err := m.updateExchangeLocked(); err != nil {
			m.closeErr = fmt.Errorf("update PRNG exchange file %s: %w", m.opts.ExchangeFile, err)
			m.statsMu.Lock()
			m.stats.ExchangeFailures++
			m.statsMu.Unlock()
		} else {
			m.statsMu.Lock()
			m.stats.LastExchangeUpdate = m.clock.Now()
			m.stats.ExchangeUpdates++
			m.statsMu.Unlock()
		}
		if err := m.exch.close(); err != nil && m.closeErr == nil {
			m.closeErr = fmt.Errorf("close PRNG exchange file %s: %w", m.opts.ExchangeFile, err)
		}
		m.exch = nil
	})
	return m.closeErr
}

func (m *Manager) isClosed() bool {
	select {
	case <-m.closed:
		return true
	default:
		return false
	}
}

func (m *Manager) closeSource() {
	m.srcMu.Lock()
	src := m.src
	m.src = nil
	m.srcMu.Unlock()
	if src != nil {
		src.close()
	}
}

// Stats returns a snapshot of the counters.
func (m *Manager) Stats() Stats {
	m.statsMu.Lock()
	s := m.stats
	m.statsMu.Unlock()
	s.Reads = m.pool.reads.Load()
	s.BytesServed = m.pool.bytesServed.Load()
	return s
}
