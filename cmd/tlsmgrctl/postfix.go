package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"

	"github.com/gotlsmgr/tlsmgr/internal/daemon"
	"github.com/gotlsmgr/tlsmgr/internal/postfixctl"
)

const postfixUsage = `usage: tlsmgrctl postfix enable|disable|status|state-files [-c CONFIG_DIR] [-q] [-wait DURATION]

  enable       run tlsmgr-go as master.cf's tlsmgr service: check the
               installed Postfix and main.cf, postconf -F, postfix reload,
               then prove it answers within -wait (20s; switched back if
               it does not)
  disable      run Postfix's own tlsmgr again, the same way
  status       which tlsmgr master.cf runs, and which one answers;
               -q: print nothing, exit 0 if it runs tlsmgr-go, 1 if not
  state-files  the files tlsmgr-go keeps its state in, one a line
`

// postfixCommand runs "tlsmgrctl postfix ...": exit status 0 success, 1
// (status -q) not tlsmgr-go, 2 an error.
func postfixCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, postfixUsage)
		return 2
	}
	sub := args[0]
	fs := flag.NewFlagSet("tlsmgrctl postfix "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), postfixUsage) }
	dir := fs.String("c", os.Getenv("MAIL_CONFIG"), "Postfix configuration directory")
	quiet := fs.Bool("q", false, "status: no output, only the exit status")
	wait := fs.Duration("wait", postfixctl.DefaultWait, "enable, disable: how long the daemon may take to answer after the switch")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	in := &postfixctl.Instance{ConfigDir: *dir, Out: stdout, Wait: *wait}
	ctx := context.Background()
	var err error
	switch sub {
	case "enable":
		err = in.Enable(ctx)
	case "disable":
		err = in.Disable(ctx)
	case "status":
		if *quiet {
			in.Out = nil
		}
		var f *postfixctl.Facts
		f, _, err = in.Status(ctx)
		if f != nil && *quiet {
			if f.Runs() {
				return 0
			}
			return 1
		}
	case "state-files":
		err = stateFiles(ctx, in, stdout)
	default:
		fs.Usage()
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "tlsmgrctl postfix %s: %v\n", sub, err)
		return 2
	}
	return 0
}

func stateFiles(ctx context.Context, in *postfixctl.Instance, stdout io.Writer) error {
	f, err := in.Look(ctx)
	if err != nil {
		return err
	}
	u, err := user.Lookup(f.Params.MailOwner)
	if err != nil {
		return fmt.Errorf("mail_owner %s: %w", f.Params.MailOwner, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return fmt.Errorf("mail_owner %s: uid %q", f.Params.MailOwner, u.Uid)
	}
	for _, p := range daemon.StateFiles(f.Params, uid) {
		fmt.Fprintln(stdout, p)
	}
	return nil
}
