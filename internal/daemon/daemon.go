// Package daemon assembles tlsmgr from its parts and runs it, either under
// Postfix's master(8) (inherited sockets, status channel, chroot, privilege
// drop) or standalone on a socket of its own.
//
// The start-up order follows Postfix's: read the configuration, start
// logging, open every file (as the mail owner, never as root), take the
// sockets, then chroot and drop privileges, and only then serve. After the
// jail only descriptors opened before it are used.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/attr"
	"github.com/gotlsmgr/tlsmgr/internal/config"
	"github.com/gotlsmgr/tlsmgr/internal/maillog"
	"github.com/gotlsmgr/tlsmgr/internal/master"
	"github.com/gotlsmgr/tlsmgr/internal/metrics"
	"github.com/gotlsmgr/tlsmgr/internal/prng"
	"github.com/gotlsmgr/tlsmgr/internal/server"
	"github.com/gotlsmgr/tlsmgr/internal/tktkey"
	"github.com/gotlsmgr/tlsmgr/internal/version"
	"github.com/gotlsmgr/tlsmgr/internal/watchdog"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// ProcessName is Postfix's name for this program, used in the log tag.
const ProcessName = "tlsmgr"

// Main runs the daemon with the command-line arguments args (without the
// program name) and returns the exit status.
func Main(args []string) int {
	if printRequest(args, os.Stdout) { // -h, --help, --version
		return 0
	}
	d := &daemon{stderr: os.Stderr, pid: os.Getpid(), metrics: metrics.New()}
	err := d.run(args)
	if err != nil {
		d.fatal(err)
	}
	// Only now: the fatal line goes out through the log, which is all
	// anyone sees under master(8).
	if d.logh != nil {
		d.logh.Close()
	}
	if err != nil {
		return 1
	}
	return 0
}

type daemon struct {
	opts   *master.Options
	params *config.Params
	log    *slog.Logger     // writes through logh
	logh   *maillog.Handler // the log's output: its counters, chroot, Close
	stderr io.Writer
	pid    int

	uid, gid  int // the mail owner's, or ours when not root
	asOwner   func(func() error) error
	pool      *prng.Manager
	caches    []server.CacheType
	keys      *tktkey.Manager
	keyStore  io.Closer
	backends  []*backend // Redis clients of the fleet's stores
	listeners []net.Listener
	stdio     net.Conn
	status    *master.Status
	created   []string // files start-up created, removed if it fails
	srv       *server.Server
	wd        *watchdog.Watchdog
	serving   atomic.Pointer[server.Server]
	metrics   *metrics.Registry // every part's figures: stats replies, /metrics

	// Who speaks first on a connection, and the ticket key record's
	// length: for the Postfix found at start-up (greeting.go).
	greeting     server.Greeting
	keyRecordLen int

	metricsListener net.Listener // tlsmgr_metrics_address; nil if unset
	metricsHTTP     *http.Server // serving metricsListener

	// Where the configuration came from, for a reload (reload.go): the
	// main.cf directory ("" for none) and the built-in defaults.
	cfgDir   string
	cfgExtra map[string]string
	conf     *config.Config // as last read: the values d.params came from
	hup      chan os.Signal // SIGHUP, standalone; nil under master(8)
}

// fatal reports a start-up or run-time failure as one line, through the
// log, and on stderr unless the log already goes there. A failure before
// the log is set up goes to the log Postfix's daemons would use then
// (fallbackLog): under master(8) nobody sees stderr.
func (d *daemon) fatal(err error) {
	if d.log == nil && (d.opts == nil || d.opts.Listen == "") {
		d.useLog(d.fallbackLog())
	}
	if d.log != nil {
		maillog.Fatalf(d.log, "%v", err)
		if d.opts != nil && (d.opts.StderrLog || d.opts.Listen != "") {
			return
		}
	}
	fmt.Fprintf(d.stderr, "%s: fatal: %v\n", ProcessName, err)
}

// fallbackLog is the log for a failure before the configured one is up:
// where main.cf's maillog_file, syslog_name and syslog_facility say, as
// far as main.cf could be read, else syslog as postfix/tlsmgr with the
// mail facility, where Postfix's daemons log from their first line. Nil
// if even that cannot be had.
func (d *daemon) fallbackLog() *maillog.Handler {
	o := maillog.Options{Tag: "postfix/" + ProcessName, Facility: "mail", Syslog: true, Exit: func(int) {}}
	if c := d.conf; c != nil {
		if name, err := c.String("syslog_name"); err == nil && name != "" {
			o.Tag = name + "/" + ProcessName
		}
		if f, err := c.String("syslog_facility"); err == nil && f != "" {
			o.Facility = f
		}
		file, err1 := c.String("maillog_file")
		queue, err2 := c.String("queue_directory")
		if err1 == nil && err2 == nil && file != "" && queue != "" {
			o.Postlog = filepath.Join(queue, "public", "postlog")
		}
		o.Hostname, _ = c.String("myhostname")
	}
	log, err := maillog.New(o)
	if err != nil {
		// An unknown facility: the default one, then.
		o.Facility = "mail"
		if log, err = maillog.New(o); err != nil {
			return nil
		}
	}
	return log
}

func (d *daemon) run(args []string) error {
	opts, err := master.ParseArgs(args)
	if err != nil {
		return err
	}
	d.opts = opts
	standalone := opts.Listen != ""
	// SIGHUP reloads, standalone: taken from the start, so that one sent
	// during start-up does not end the daemon (see reload.go).
	d.hup = d.reloadSignals()
	defer stopSignals(d.hup)
	if !standalone && !opts.Stdin && opts.Transport == "" && !underMaster() {
		return errNoMaster // run by hand: say how to run it standalone
	}
	if !standalone && !opts.Stdin && !opts.SingleProcess {
		// tlsmgr keeps state in memory: one process only, as in Postfix.
		return errors.New("service tlsmgr requires a process limit of 1")
	}
	// Take over the descriptors master(8) passed before anything opens a
	// file: were one missing, a file of ours would get its number and
	// pass for it. The error waits until it can be logged.
	var inheritErr error
	if !standalone && !opts.Stdin {
		inheritErr = d.inheritSockets()
	}
	if err := d.loadConfig(standalone); err != nil {
		return err
	}
	if err := d.startLog(standalone); err != nil {
		return err
	}
	if inheritErr != nil {
		return inheritErr
	}
	for _, w := range d.params.Warnings {
		maillog.WarnAlwaysf(d.log, "%s", w)
	}
	if !standalone && !opts.Stdin {
		if names := d.conf.Undeclared(); len(names) > 0 {
			maillog.Infof(d.log, "postconf and postfix check report %s as unused parameters: tlsmgrctl postfix enable declares them (-o %s on the tlsmgr service)",
				strings.Join(names, ", "), config.DeclareParam)
		}
	}
	if err := server.CheckLimits(d.params.ClientLimit); err != nil {
		return err
	}
	if err := d.owner(); err != nil {
		return err
	}
	// daemon_timeout: from here on, work that wedges (a store on a dead
	// disk or network file system) ends the process; see watchdogFired.
	// Start-up is one task; stopping is another, watched until
	// everything is closed.
	d.wd = watchdog.New(d.params.DaemonTimeout, d.watchdogFired)
	defer d.wd.Stop()
	startedUp := d.wd.Start("start-up")
	// A start-up that fails leaves no file behind that it created.
	keepFiles := false
	defer func() {
		d.closeAll()
		if !keepFiles {
			d.removeCreated()
		}
	}()
	// The socket first: a second daemon on a live socket must fail on
	// that, not on the first one's locks.
	if err := d.openSockets(); err != nil {
		return err
	}
	if err := d.openFiles(); err != nil {
		return err
	}
	// Postfix's programs are out of reach once jailed.
	d.chooseGreeting()
	if (opts.Chroot || opts.DropPrivileges) && os.Geteuid() != 0 {
		return errors.New("-c and -u need root privileges")
	}
	// Nothing after start-up needs root, so root gives it up whether or
	// not -u asked (standalone has no -u to forget): every later file
	// operation is then the mail owner's.
	if os.Geteuid() == 0 {
		if err := master.Jail(d.params.QueueDirectory, d.uid, d.gid, opts.Chroot, true); err != nil {
			// Perhaps half jailed: paths may no longer mean what they did.
			keepFiles = opts.Chroot
			return err
		}
		if opts.Chroot {
			d.logh.SetChroot(d.params.QueueDirectory)
		}
	}
	keepFiles = true
	startedUp()
	return d.serve()
}

// watchdogFired is the verdict of the daemon_timeout watchdog: a request
// or a background task has been running for longer than daemon_timeout,
// wedged on a store (a dead disk or network file system, a server that
// accepts and never answers). A wedged goroutine cannot be stopped, so,
// as Postfix's daemons do, the process logs a fatal error and exits at
// once, for master(8) (or systemd, standalone) to start a fresh one.
// No file is closed on the way out, since that could wedge too: the
// cache files are left as a kill would leave them, which they survive.
func (d *daemon) watchdogFired(e *watchdog.Error) {
	// Should logging itself hang (a blocked stderr), exit all the same.
	time.AfterFunc(5*time.Second, func() { os.Exit(1) })
	d.fatal(fmt.Errorf("watchdog timeout: %s still not done after %v (daemon_timeout = %v): exiting",
		e.What, e.Running.Round(time.Millisecond), e.Timeout))
	// A thread asleep in the kernel, uninterruptibly (a frozen file
	// system), keeps the process from finishing its exit, and with it
	// the sockets open. Clients should not wait for that: the listening
	// socket is closed (standalone, removed) and every client sees end
	// of file now. Shutdown with a context already done never waits.
	if srv := d.serving.Load(); srv != nil {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		srv.Shutdown(ctx)
	}
	os.Exit(1)
}

func (d *daemon) loadConfig(standalone bool) error {
	dir := os.Getenv("MAIL_CONFIG")
	var extra map[string]string
	if dir == "" {
		if standalone {
			// No Postfix needed: embedded defaults a normal user can run.
			defaults, err := standaloneDefaults()
			if err != nil {
				return err
			}
			extra = defaults
		} else {
			dir = "/etc/postfix"
		}
	}
	// A reload (SIGHUP, standalone) reads the same again: see reload.go.
	d.cfgDir, d.cfgExtra = dir, extra
	var err error
	if d.conf, d.params, err = d.readConfig(); err != nil {
		return err
	}
	if extra != nil && d.params.DataDirectory == extra["data_directory"] {
		// Only the built-in state directory is ours to create.
		return makeStateDir(d.params.DataDirectory, d.params.MailOwner)
	}
	return nil
}

// makeStateDir creates the built-in state directory, owned by the account
// that will own the files in it. Its parent is root's (/var/lib) or the
// user's own, so only the last component needs care.
func makeStateDir(dir, owner string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil
	}
	uid, gid, err := master.LookupUser(owner)
	if err != nil {
		return fmt.Errorf("mail_owner %s: %w", owner, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("state directory %s: not a directory", dir)
	}
	if err := os.Lchown(dir, uid, gid); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	return nil
}

// standaloneDefaults enables all three caches in memory and keeps state
// in a directory of the user's. Run by root, files still must not belong
// to root: they go to /var/lib/tlsmgr, owned by the postfix account if
// there is one, else by nobody. The directory is created later, and only
// if no setting moves the data directory elsewhere.
func standaloneDefaults() (map[string]string, error) {
	if os.Geteuid() == 0 {
		return rootStandaloneDefaults()
	}
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, ".local", "state")
		} else {
			dir = os.TempDir()
		}
	}
	dir = filepath.Join(dir, "tlsmgr")
	owner := strconv.Itoa(os.Getuid())
	if u, err := user.Current(); err == nil {
		owner = u.Username
	}
	return memoryDefaults(dir, owner), nil
}

func rootStandaloneDefaults() (map[string]string, error) {
	owner := "postfix"
	if _, _, err := master.LookupUser(owner); err != nil {
		owner = "nobody"
		if _, _, err := master.LookupUser(owner); err != nil {
			return nil, errors.New("running as root needs a postfix or nobody account to own the state files")
		}
	}
	return memoryDefaults("/var/lib/tlsmgr", owner), nil
}

func memoryDefaults(dir, owner string) map[string]string {
	return map[string]string{
		"smtpd_tls_session_cache_database": "memory:smtpd",
		"smtp_tls_session_cache_database":  "memory:smtp",
		"lmtp_tls_session_cache_database":  "memory:lmtp",
		"data_directory":                   dir,
		"queue_directory":                  dir,
		"mail_owner":                       owner,
	}
}

func (d *daemon) startLog(standalone bool) error {
	p := d.params
	o := maillog.Options{
		Tag:      p.SyslogName + "/" + ProcessName,
		Facility: p.SyslogFacility,
		Hostname: p.MyHostname, // Postfix puts it in log records
		Verbose:  d.opts.Verbose,
		Exit:     func(int) {}, // Main returns the exit status itself
	}
	switch {
	case standalone:
		o.Stderr = d.stderr
	case p.MaillogFile != "":
		o.Postlog = filepath.Join(p.QueueDirectory, "public", "postlog")
	default:
		o.Syslog = true
	}
	if d.opts.StderrLog {
		o.Stderr = d.stderr
	}
	h, err := maillog.New(o)
	if err != nil {
		return err
	}
	d.useLog(h)
	if err := h.ConnectError(); err != nil {
		maillog.WarnAlwaysf(d.log, "%v", err)
	}
	return nil
}

// useLog makes h the daemon's log, if it is not nil.
func (d *daemon) useLog(h *maillog.Handler) {
	if h != nil {
		d.logh, d.log = h, slog.New(h)
	}
}

// owner finds the account that must own every file we create.
func (d *daemon) owner() error {
	if os.Geteuid() != 0 {
		d.uid, d.gid = os.Getuid(), os.Getgid()
		d.asOwner = func(fn func() error) error { return fn() }
		return nil
	}
	uid, gid, err := master.LookupUser(d.params.MailOwner)
	if err != nil {
		return fmt.Errorf("mail_owner %s: %w", d.params.MailOwner, err)
	}
	if uid == 0 {
		return fmt.Errorf("mail_owner %s has root privileges: refusing to create files as root", d.params.MailOwner)
	}
	d.uid, d.gid = uid, gid
	d.asOwner = func(fn func() error) error { return master.AsUser(uid, gid, fn) }
	return nil
}

// openSockets takes the client connection of -S, or the standalone socket.
func (d *daemon) openSockets() error {
	switch {
	case d.opts.Stdin:
		c, err := master.StdioConn()
		if err != nil {
			return err
		}
		d.stdio = c
	case d.opts.Listen != "":
		l, err := d.listenStandalone(d.opts.Listen)
		if err != nil {
			return err
		}
		d.listeners = []net.Listener{l}
	}
	return d.openMetrics()
}

// inheritSockets takes the listening sockets and the status channel from
// master(8).
func (d *daemon) inheritSockets() error {
	// Look at every descriptor before taking any over: that opens new
	// ones, which would get the number of a missing one.
	var fst syscall.Stat_t
	if err := syscall.Fstat(master.StatusFD, &fst); err != nil {
		return fmt.Errorf("master(8) status channel: fd %d: %w", master.StatusFD, err)
	}
	n := max(d.opts.SocketCount, 1)
	ls, err := master.InheritedListeners(master.ListenFD, n)
	if err != nil {
		return fmt.Errorf("listening sockets from master(8): %w", err)
	}
	d.listeners = ls
	st, err := master.OpenStatus(master.StatusFD, d.pid, os.Getenv("GENERATION"))
	if err != nil {
		return fmt.Errorf("master(8) status channel: %w", err)
	}
	d.status = st
	return nil
}

// listenStandalone takes over path, refusing if a live daemon answers there
// and removing a stale socket left by one that died. The socket is the
// mail owner's, mode 0660: Postfix's clients run as that account, and no
// other local account may fetch ticket keys or other clients' sessions.
// The owner makes it (and removes it at exit) itself, so nothing root
// does goes through a name in the socket's directory.
func (d *daemon) listenStandalone(path string) (net.Listener, error) {
	var l net.Listener
	err := d.asOwner(func() error {
		var err error
		l, err = bindSocket(path)
		return err
	})
	if errors.Is(err, os.ErrPermission) && os.Geteuid() == 0 {
		return nil, fmt.Errorf("%w (the socket's directory must be writable by mail_owner %s, e.g. install -d -o %s -m 0750 %s)",
			err, d.params.MailOwner, d.params.MailOwner, filepath.Dir(path))
	}
	return l, err
}

func bindSocket(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen %s: another tlsmgr is serving there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// The mode comes from the umask at bind time: a chmod afterwards
	// would act on whatever the name then is.
	old := syscall.Umask(0o117)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	l.(*net.UnixListener).SetUnlinkOnClose(true)
	return l, nil
}

func (d *daemon) serve() error {
	p := d.params
	limits := attr.Limits{
		MaxValue: p.MaxAttributeSize,
		MaxName:  min(p.MaxAttributeSize, 4096),
		MaxList:  p.MaxRequestSize,
	}
	cfg := server.Config{
		Caches:     d.caches,
		Keys:       d.keys,
		Pool:       d.pool.Pool(),
		Log:        d.log,
		Limits:     limits,
		IPCTimeout: p.IPCTimeout,
		MaxClients: p.ClientLimit,
		BlockingIO: true,
		Metrics:    d.metrics,
		// Root, and the mail owner (whom the daemon runs as once
		// started): the accounts that own the caches anyway.
		MayControl: func(uid uint32) bool {
			return uid == 0 || int(uid) == d.uid || int(uid) == os.Geteuid()
		},
		// A request may make a store call for its cache and, for a
		// ticket name the ring lacks, one for the key.
		StoreTimeout: d.storeTimeout(),
		Watchdog:     d.wd,
		Greeting:     d.greeting,
		KeyRecordLen: d.keyRecordLen,
	}
	if d.status != nil {
		cfg.OnAvail = func(avail bool) {
			if err := d.status.Notify(avail); err != nil {
				maillog.Warnf(d.log, "master(8) status update: %v", err)
			}
		}
	}
	d.srv = server.New(cfg)
	d.serving.Store(d.srv)
	// After the server's: stats replies list its figures first.
	d.metrics.Register(d.collect)
	defer d.serveMetrics()()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var bg sync.WaitGroup
	bg.Add(1)
	go func() { defer bg.Done(); d.pool.Run(ctx) }()

	for _, ct := range d.caches {
		if ct.Cache != nil {
			bg.Add(1)
			go func() { defer bg.Done(); ct.Cache.RunSweeper(ctx) }()
		}
	}
	bg.Add(1)
	go func() { defer bg.Done(); d.keys.Run(ctx) }() // returns at once unless the ring is the fleet's

	stop := make(chan string, 1+len(d.listeners))
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)
	// A broken pipe to a client must not kill us; Go already turns
	// SIGPIPE on sockets into EPIPE, and stderr may be closed by master(8).
	signal.Ignore(syscall.SIGPIPE)
	go func() {
		if sig, ok := <-signals; ok {
			stop <- "signal " + sig.String()
		}
	}()
	if d.status != nil {
		go func() {
			<-d.status.Gone()
			stop <- "master(8) went away"
		}()
	}
	maillog.Infof(d.log, "tlsmgr version %s starting", version.String())
	for _, l := range d.listeners {
		go func() {
			if err := d.srv.Serve(l); err != nil && !errors.Is(err, server.ErrServerClosed) {
				stop <- "accept: " + err.Error()
			}
		}()
	}
	if d.stdio != nil {
		// -S: the one client's end is the daemon's.
		go func() {
			d.srv.ServeConnSync(d.stdio)
			stop <- "client on stdin/stdout done"
		}()
	}
	if d.opts.Listen != "" {
		maillog.Infof(d.log, "listening on %s", d.opts.Listen)
	}
	why := d.awaitStop(stop, d.hup) // reloading main.cf on SIGHUP meanwhile
	maillog.Debugf(d.log, 1, "stopping: %s", why)
	// Watched until the end of run, when the watchdog stops.
	d.wd.Start("shutdown (" + why + ")")
	shutdownCtx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	if err := d.srv.Shutdown(shutdownCtx); err != nil {
		maillog.Warnf(d.log, "clients still busy at shutdown: %v", err)
	}
	cancel()
	bg.Wait()
	return nil
}

var (
	descPID        = metrics.Desc{Name: "pid", Help: "The daemon's process id (stats only).", StatOnly: true}
	descVersion    = metrics.Desc{Name: "build_info", Stat: proto.VersionStat, Help: "The daemon's version (tlsmgrctl version)."}
	descSuppressed = metrics.Desc{Name: "log_warnings_suppressed", Help: "Warnings not logged by the rate limit."}
	descDropped    = metrics.Desc{Name: "log_records_dropped", Help: "Log records dropped: the log could not take them."}
)

// collect emits the daemon's own figures and those of the parts the
// server does not own: the ticket-key ring, its backend, the PRNG.
func (d *daemon) collect(ctx context.Context, emit metrics.Emit) {
	emit.Info(descVersion, version.String())
	emit.Info(descPID, strconv.Itoa(d.pid))
	emit.Counter(descSuppressed, d.logh.Suppressed())
	emit.Counter(descDropped, d.logh.Dropped())
	d.keys.Collect(ctx, emit)
	for _, b := range d.backends {
		if b.cache == nil {
			b.client.Collect(emit, "redis_"+b.name+"_")
		}
	}
	d.pool.Collect(ctx, emit)
}
