package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/gotlsmgr/tlsmgr/internal/maillog"
	"github.com/gotlsmgr/tlsmgr/internal/pfversion"
	"github.com/gotlsmgr/tlsmgr/internal/server"
	"github.com/gotlsmgr/tlsmgr/proto"
)

// chooseGreeting decides, before the chroot, who speaks first on a new
// connection and the ticket key record's layout, from
// tlsmgr_protocol_announcement and the installed Postfix, and logs the
// choice in one line.
func (d *daemon) chooseGreeting() {
	setting := d.params.ProtocolAnnouncement
	d.keyRecordLen = proto.TicketKeyRecordLen
	if d.cfgDir == "" {
		// Standalone on built-in defaults: no Postfix to ask, and our
		// own clients (and Postfix 3.6+) expect the announcement.
		d.greeting = server.ServerFirst
		if setting == "no" {
			d.greeting = server.ClientFirst
		}
		maillog.Infof(d.log, "tlsmgr_protocol_announcement = %s: no Postfix configuration: %s", setting, modeText(d.greeting))
		return
	}
	v, found, err := d.postfixVersion()
	if err == nil && v.TicketKeyRecordLen() == proto.TicketKeyRecordLen211 {
		d.keyRecordLen = proto.TicketKeyRecordLen211
	}
	switch {
	case setting == "yes":
		d.greeting = server.ServerFirst
	case setting == "no":
		d.greeting = server.ClientFirst
	case err != nil && d.opts.Listen != "":
		// Standalone with a main.cf but no Postfix: our own clients.
		d.greeting = server.ServerFirst
		maillog.Infof(d.log, "tlsmgr_protocol_announcement = auto: no Postfix found (%v): %s", err, modeText(d.greeting))
		return
	case err != nil:
		// Waiting serves both kinds: an old client speaks at once, and a
		// new one gets the announcement when it has said nothing for a
		// while (server.Config.LateAnnouncement).
		d.greeting = server.ClientFirst
		maillog.WarnAlwaysf(d.log, "tlsmgr_protocol_announcement = auto: cannot tell which Postfix this is (%v): "+
			"the protocol is announced only to a client silent for %v; set tlsmgr_protocol_announcement = yes "+
			"for Postfix 3.6 or later, no for earlier versions", err, server.DefaultLateAnnouncement)
		return
	case v.ServerSpeaksFirst():
		d.greeting = server.ServerFirst
	default:
		d.greeting = server.ClientFirst
	}
	if err != nil {
		maillog.Infof(d.log, "tlsmgr_protocol_announcement = %s: %s (Postfix version unknown: %v)", setting, modeText(d.greeting), err)
		return
	}
	clients := "its clients speak first"
	if v.ServerSpeaksFirst() {
		clients = "its clients wait for the server"
	}
	if setting == "auto" {
		maillog.Infof(d.log, "tlsmgr_protocol_announcement = auto: Postfix %s found (%s): %s, so %s", v, found, clients, modeText(d.greeting))
	} else {
		maillog.Infof(d.log, "tlsmgr_protocol_announcement = %s: %s (Postfix %s found (%s): %s)", setting, modeText(d.greeting), v, found, clients)
	}
	if d.keyRecordLen != proto.TicketKeyRecordLen {
		maillog.Infof(d.log, "ticket keys in Postfix %s's %d-byte record", v, d.keyRecordLen)
	}
}

func modeText(g server.Greeting) string {
	if g == server.ClientFirst {
		return "the protocol is not announced"
	}
	return "the protocol is announced"
}

// postfixVersion asks postconf for the installed Postfix's version and
// reads the mail_version stamp of daemon_directory's smtpd. Where the
// two disagree on who speaks first, smtpd wins: it is the client that
// runs. found says where the version came from.
func (d *daemon) postfixVersion() (v pfversion.Version, found string, err error) {
	p := d.params
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// postconf needs no privilege: it runs as the mail owner.
		cred = &syscall.Credential{Uid: uint32(d.uid), Gid: uint32(d.gid), Groups: []uint32{}}
	}
	q, qerr := pfversion.Query(context.Background(), p.CommandDirectory, d.cfgDir, cred)
	smtpd := filepath.Join(p.DaemonDirectory, "smtpd")
	var s pfversion.Version
	serr := d.asOwner(func() error {
		var err error
		s, err = pfversion.Stamp(smtpd)
		return err
	})
	switch {
	case qerr != nil && serr != nil:
		return v, "", fmt.Errorf("postconf: %v; %v", qerr, serr)
	case serr != nil:
		return q, fmt.Sprintf("postconf -dh mail_version; no stamp: %v", serr), nil
	case qerr != nil:
		return s, fmt.Sprintf("the mail_version stamp of %s; postconf: %v", smtpd, qerr), nil
	case q.Text == s.Text:
		return q, "postconf -dh mail_version, and the mail_version stamp of " + smtpd, nil
	case q.ServerSpeaksFirst() != s.ServerSpeaksFirst():
		maillog.WarnAlwaysf(d.log, "postconf says Postfix %s, but %s is Postfix %s: going by %s, whose clients run; "+
			"restart tlsmgr when the upgrade is complete", q, smtpd, s, smtpd)
		return s, "the mail_version stamp of " + smtpd, nil
	}
	return q, fmt.Sprintf("postconf -dh mail_version; %s says %s", smtpd, s), nil
}
