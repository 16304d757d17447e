// Package postfixctl switches a Postfix instance's tlsmgr service between
// Postfix's own tlsmgr and tlsmgr-go, and says which one runs: what
// tlsmgrctl postfix enable, disable and status do. It works only through
// Postfix's own commands (postconf -F to edit master.cf, postfix reload),
// as an administrator would, and proves each switch by talking to the
// daemon that then answers on private/tlsmgr; a switch that cannot be
// proved is undone.
package postfixctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/gotlsmgr/tlsmgr/client"
	"github.com/gotlsmgr/tlsmgr/internal/config"
	"github.com/gotlsmgr/tlsmgr/internal/pfversion"
)

// Command names in master.cf's tlsmgr service.
const (
	OurCommand     = "tlsmgr-go"
	PostfixCommand = "tlsmgr"
	service        = "tlsmgr/unix"
)

// DefaultWait bounds the wait, after postfix reload, for the new daemon
// to answer: master(8) starts it on the first request, and the old one
// may answer until it has finished its own.
const DefaultWait = 20 * time.Second

// commandTimeout bounds each postconf or postfix command.
const commandTimeout = time.Minute

// Instance is one Postfix instance.
type Instance struct {
	// ConfigDir is the instance's configuration directory (-c); empty
	// means Postfix's default instance.
	ConfigDir string
	// Out receives the progress lines; nil discards them.
	Out io.Writer
	// Wait bounds the wait for a daemon to answer after a switch
	// (DefaultWait if zero).
	Wait time.Duration
}

func (in *Instance) wait() time.Duration {
	if in.Wait > 0 {
		return in.Wait
	}
	return DefaultWait
}

func (in *Instance) say(format string, args ...any) {
	if in.Out != nil {
		fmt.Fprintf(in.Out, format+"\n", args...)
	}
}

// postconfPath is postconf on root's PATH, where Postfix installs it.
func postconfPath() string {
	if p, err := exec.LookPath("postconf"); err == nil {
		return p
	}
	return "/usr/sbin/postconf"
}

// run runs a Postfix command with the instance's -c, returning its
// standard output; an error quotes its standard error.
func (in *Instance) run(ctx context.Context, program string, args ...string) (string, error) {
	if in.ConfigDir != "" {
		args = append([]string{"-c", in.ConfigDir}, args...)
	}
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, program, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return stdout.String(), fmt.Errorf("%s %s: %s", filepath.Base(program), strings.Join(args, " "), msg)
	}
	return stdout.String(), nil
}

func (in *Instance) postconf(ctx context.Context, args ...string) (string, error) {
	return in.run(ctx, postconfPath(), args...)
}

// postfix runs the postfix command of the instance's command_directory.
func (in *Instance) postfix(ctx context.Context, facts *Facts, args ...string) error {
	_, err := in.run(ctx, filepath.Join(facts.CommandDirectory, "postfix"), args...)
	return err
}

// Facts are what the switch needs to know of the instance.
type Facts struct {
	ConfigDirectory  string
	CommandDirectory string
	DaemonDirectory  string
	QueueDirectory   string
	Version          pfversion.Version
	Command          string // master.cf's tlsmgr service runs this
	Running          bool   // postfix status
	// Throttle is service_throttle_time: how long master(8) leaves a
	// service alone after its program failed at start-up.
	Throttle time.Duration
	Params   *config.Params
	// OwnSet are tlsmgr-go's own parameters that main.cf sets.
	OwnSet []string
	// Warnings are the daemon's own about main.cf (config.Params).
	Warnings []string
}

// Socket is the tlsmgr service's socket.
func (f *Facts) Socket() string { return filepath.Join(f.QueueDirectory, "private", "tlsmgr") }

// Runs reports whether master.cf runs tlsmgr-go.
func (f *Facts) Runs() bool { return filepath.Base(f.Command) == OurCommand }

// Look finds the facts: postconf for the directories, the version and
// master.cf's command, postfix status, and main.cf read as the daemon
// reads it (an error there is the daemon's start-up error).
func (in *Instance) Look(ctx context.Context) (*Facts, error) {
	names := []string{"config_directory", "command_directory", "daemon_directory", "queue_directory", "mail_version", "service_throttle_time"}
	out, err := in.postconf(ctx, append([]string{"-h"}, names...)...)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != len(names) {
		return nil, fmt.Errorf("postconf -h: %d lines, want %d", len(lines), len(names))
	}
	f := &Facts{ConfigDirectory: lines[0], CommandDirectory: lines[1], DaemonDirectory: lines[2], QueueDirectory: lines[3]}
	if f.Version, err = pfversion.Parse(lines[4]); err != nil {
		return nil, fmt.Errorf("postconf -h mail_version: %w", err)
	}
	if f.Throttle, err = config.ParseTime(lines[5], 's'); err != nil {
		return nil, fmt.Errorf("postconf -h service_throttle_time: %w", err)
	}
	// The program's name, without the arguments the field also holds.
	command, err := in.masterField(ctx, "command")
	if err != nil {
		return nil, err
	}
	f.Command = strings.Fields(command)[0]
	f.Running = in.postfix(ctx, f, "status") == nil
	c, err := config.Load(f.ConfigDirectory, nil, nil)
	if err == nil {
		f.Params, err = c.Params()
	}
	if err != nil {
		return f, fmt.Errorf("%s/main.cf, read as tlsmgr-go reads it: %w", f.ConfigDirectory, err)
	}
	f.Warnings = append(c.Warnings(), f.Params.Warnings...)
	f.OwnSet = c.OwnSet()
	return f, nil
}

// masterField returns a field of the tlsmgr service in master.cf.
func (in *Instance) masterField(ctx context.Context, field string) (string, error) {
	out, err := in.postconf(ctx, "-hF", service+"/"+field)
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(out)
	if v == "" {
		return "", fmt.Errorf("master.cf has no %s service", service)
	}
	return v, nil
}

// Status reports which tlsmgr master.cf runs and, if Postfix runs,
// which one answers.
func (in *Instance) Status(ctx context.Context) (*Facts, *Daemon, error) {
	f, err := in.Look(ctx)
	if f == nil {
		return nil, nil, err
	}
	in.say("master.cf runs %s for the %s service (%s)", f.Command, service, f.ConfigDirectory)
	if !f.Running {
		in.say("Postfix %s is not running", f.Version)
		return f, nil, nil
	}
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d, ierr := Identify(ictx, f.Socket())
	if ierr != nil {
		in.say("nothing answers on %s: %v", f.Socket(), ierr)
		return f, nil, nil
	}
	in.say("answering on %s: %s", f.Socket(), d)
	return f, &d, err
}

// ModeError is enable's refusal: the installed Postfix and a forced
// tlsmgr_protocol_announcement disagree.
type ModeError struct {
	Version pfversion.Version
	Setting string
}

func (e *ModeError) Error() string {
	if e.Setting == "yes" {
		return fmt.Sprintf("main.cf sets tlsmgr_protocol_announcement = yes, but the clients of Postfix %s speak first "+
			"and would take the announcement for the reply to their first request (no TLS session cache, "+
			"no ticket keys): remove the setting (auto finds the version) or set it to no", e.Version)
	}
	return fmt.Sprintf("main.cf sets tlsmgr_protocol_announcement = no, but the clients of Postfix %s wait for "+
		"the announcement: every connection would wait 2 s for it: remove the setting (auto finds the version) "+
		"or set it to yes", e.Version)
}

// checkMode refuses a forced announcement mode that the installed
// version's clients do not speak.
func checkMode(f *Facts) error {
	first := f.Version.ServerSpeaksFirst()
	switch f.Params.ProtocolAnnouncement {
	case "yes":
		if !first {
			return &ModeError{f.Version, "yes"}
		}
	case "no":
		if first {
			return &ModeError{f.Version, "no"}
		}
	}
	return nil
}

// Enable switches master.cf's tlsmgr service to tlsmgr-go, reloads
// Postfix and proves that tlsmgr-go answers; on any failure after the
// switch it switches back and reloads again.
func (in *Instance) Enable(ctx context.Context) error {
	f, err := in.Look(ctx)
	if err != nil {
		return err
	}
	for _, w := range f.Warnings {
		in.say("warning: %s", w)
	}
	bin := filepath.Join(f.DaemonDirectory, OurCommand)
	if st, err := os.Stat(bin); err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not installed as an executable in daemon_directory (install the package, or make install)", bin)
	}
	if err := checkMode(f); err != nil {
		return err
	}
	mode := "does not announce the protocol (its clients speak first)"
	if f.Version.ServerSpeaksFirst() {
		mode = "announces the protocol, as Postfix 3.6 and later do"
	}
	in.say("Postfix %s: tlsmgr-go %s", f.Version, mode)
	previous := f.Command
	if previous == OurCommand {
		in.say("master.cf already runs %s", OurCommand)
	}
	if err := in.switchTo(ctx, f, OurCommand); err != nil {
		return err
	}
	if !f.Running {
		in.say("Postfix is not running: master(8) starts %s when Postfix starts", OurCommand)
		in.say("to undo: tlsmgrctl postfix disable%s", in.flag())
		return nil
	}
	d, perr := in.prove(ctx, f, true)
	if perr == nil {
		in.say("%s answers on %s (seed and policy requests, %v)", d, f.Socket(), d.Answered.Round(time.Millisecond))
		in.say("to undo: tlsmgrctl postfix disable%s", in.flag())
		return nil
	}
	if previous == OurCommand {
		previous = PostfixCommand
	}
	in.say("%s does not answer: %v; switching back to %s", OurCommand, perr, previous)
	if err := in.switchTo(ctx, f, previous); err != nil {
		return fmt.Errorf("%v; and switching back failed: %w", perr, err)
	}
	// master(8) throttles the service for service_throttle_time after the
	// failed start, whatever runs it now.
	if _, err := in.proveWithin(ctx, f, false, f.Throttle+in.wait()); err != nil {
		return fmt.Errorf("%v; switched back to %s, which does not answer either: %w", perr, previous, err)
	}
	return fmt.Errorf("%s did not answer (%v), so master.cf runs %s again; the mail log has tlsmgr-go's reason (a fatal: line)", OurCommand, perr, previous)
}

// Disable switches master.cf's tlsmgr service back to Postfix's tlsmgr,
// reloads Postfix and proves that it answers.
func (in *Instance) Disable(ctx context.Context) error {
	f, err := in.Look(ctx)
	if f == nil {
		return err
	}
	if err := in.switchTo(ctx, f, PostfixCommand); err != nil {
		return err
	}
	if !f.Running {
		in.say("Postfix is not running: master(8) starts its own tlsmgr when Postfix starts")
		return nil
	}
	d, err := in.prove(ctx, f, false)
	if err != nil {
		return fmt.Errorf("Postfix's tlsmgr does not answer after the switch: %w", err)
	}
	in.say("Postfix's tlsmgr answers on %s (%v)", f.Socket(), d.Answered.Round(time.Millisecond))
	return nil
}

func (in *Instance) flag() string {
	if in.ConfigDir == "" {
		return ""
	}
	return " -c " + in.ConfigDir
}

// Wake-up times of the tlsmgr service: Postfix's (on demand, then every
// 1000 s while used), and ours, so that master(8) starts tlsmgr-go at
// once after postfix start or reload, and again within a minute after a
// crash, with no mail traffic: its metrics (tlsmgr_metrics_address) are
// then always served.
const (
	postfixWakeup = "1000?"
	ourWakeup     = "60"
)

// declareParam, on the tlsmgr service, names tlsmgr-go's own parameters
// set in main.cf, which Postfix's postconf otherwise reports as unused
// (postfix check, postfix reload): a name that smtpd_restriction_classes
// lists is a user-defined parameter to postconf, whatever service the
// option is given to. Only the tlsmgr service's command line carries it,
// and neither tlsmgr reads it.
const declareParam = config.DeclareParam

// switchTo points master.cf's tlsmgr service at command, with its wake-up
// time and (for ours) the declaration of the own parameters that main.cf
// sets, and, if Postfix runs, reloads it.
func (in *Instance) switchTo(ctx context.Context, f *Facts, command string) error {
	wakeup, declare := postfixWakeup, ""
	if command == OurCommand {
		wakeup, declare = ourWakeup, strings.Join(f.OwnSet, ",")
	}
	if _, err := in.postconf(ctx, "-F", service+"/command="+command, service+"/wakeup="+wakeup); err != nil {
		return err
	}
	in.say("master.cf: %s service command = %s, wakeup = %s", service, command, wakeup)
	if declare != "" {
		if _, err := in.postconf(ctx, "-P", service+"/"+declareParam+"="+declare); err != nil {
			return err
		}
		in.say("master.cf: %s service -o %s=%s (so that postconf knows them)", service, declareParam, declare)
	} else if _, err := in.postconf(ctx, "-PX", service+"/"+declareParam); err != nil {
		return err
	}
	f.Command = command
	if !f.Running {
		return nil
	}
	if err := in.postfix(ctx, f, "reload"); err != nil {
		return err
	}
	in.say("postfix reload")
	return nil
}

// prove waits until the daemon wanted (ours or not) answers a seed and a
// policy request on the service's socket.
func (in *Instance) prove(ctx context.Context, f *Facts, ours bool) (Daemon, error) {
	return in.proveWithin(ctx, f, ours, in.wait())
}

func (in *Instance) proveWithin(ctx context.Context, f *Facts, ours bool, limit time.Duration) (Daemon, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	last := errors.New("no answer yet")
	for {
		if d, err := in.proveOnce(ctx, f.Socket()); err != nil {
			last = err
		} else if d.Ours == ours {
			return d, nil
		} else {
			last = fmt.Errorf("%s still answers", d)
		}
		select {
		case <-ctx.Done():
			return Daemon{}, fmt.Errorf("not within %v: %w", limit, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (in *Instance) proveOnce(ctx context.Context, socket string) (Daemon, error) {
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d, err := Identify(ictx, socket)
	if err != nil {
		return d, err
	}
	c := client.New(socket, client.Options{Timeout: 5 * time.Second})
	defer c.Close()
	if _, err := c.Seed(ictx, 32); err != nil {
		return d, fmt.Errorf("seed request: %w", err)
	}
	if _, err := c.Policy(ictx, "smtpd"); err != nil {
		return d, fmt.Errorf("policy request: %w", err)
	}
	return d, nil
}
