#!/bin/sh
# tlsmgr-go: Debian's prerm and RPM's %preun (nfpm installs this one file
# as both; the arguments say which). Only when the package goes for good,
# not on an upgrade:
#
# - if master.cf's tlsmgr service runs tlsmgr-go, switch it back to
#   Postfix's own tlsmgr and reload Postfix (tlsmgrctl postfix disable;
#   should that fail, postconf -F and postfix reload), saying so in one
#   line;
# - save the list of state files tlsmgr-go keeps in Postfix's
#   data_directory (tlsmgrctl postfix state-files) in
#   /var/lib/tlsmgr-go/state-files, for Debian's purge to delete them;
# - stop tlsmgr-go.service (RPM: and disable it, as RPM's systemd macros
#   do).
#
# POSIX sh, quiet on success but for that one line; a missing or stopped
# Postfix, or no systemd, is not a failure.
set -e

# The default Postfix instance, whatever the caller's environment says:
# postconf, postfix and tlsmgrctl would all follow MAIL_CONFIG.
unset MAIL_CONFIG

# deb: remove (upgrade, deconfigure, failed-upgrade: nothing to do);
# rpm: 0 on erase, 1 or more on an upgrade.
case "$1" in
remove)
	format=deb
	;;
0)
	format=rpm
	;;
*)
	exit 0
	;;
esac

unit=tlsmgr-go.service
ctl=/usr/sbin/tlsmgrctl
state=/var/lib/tlsmgr-go

# Only on the running system, not when dpkg works on another root.
if [ -n "${DPKG_ROOT:-}" ]; then
	exit 0
fi

# systemctl, or on Debian deb-systemd-invoke, which asks policy-rc.d
# first.
svc() {
	if command -v deb-systemd-invoke >/dev/null 2>&1; then
		deb-systemd-invoke "$@"
	else
		systemctl "$@"
	fi
}

# master.cf: status 0 means its tlsmgr service runs tlsmgr-go (1:
# something else; 2: no Postfix, or no answer).
status=0
"$ctl" postfix status -q >/dev/null 2>&1 || status=$?
if [ "$status" -eq 0 ]; then
	if out=$("$ctl" postfix disable 2>&1); then
		echo "tlsmgr-go: master.cf's tlsmgr service runs Postfix's own tlsmgr again"
	else
		printf 'tlsmgr-go: tlsmgrctl postfix disable failed: %s\n' "$out" >&2
		echo "tlsmgr-go: switching master.cf back with postconf -F tlsmgr/unix/command=tlsmgr tlsmgr/unix/wakeup=1000? and postfix reload" >&2
		# The command field holds the -o that enable added: it goes too.
		if postconf -F tlsmgr/unix/command=tlsmgr 'tlsmgr/unix/wakeup=1000?'; then
			if postfix status >/dev/null 2>&1 && ! postfix reload >/dev/null 2>&1; then
				echo "tlsmgr-go: postfix reload failed; run it so that master(8) stops tlsmgr-go" >&2
			fi
		else
			echo "tlsmgr-go: postconf failed: master.cf's tlsmgr service still names tlsmgr-go, which is going away; run postconf -F tlsmgr/unix/command=tlsmgr and postfix reload" >&2
		fi
	fi
fi

# The state files in Postfix's data_directory, saved in root's own
# directory, mode 0600 (the directory stays 0755: the standalone
# service's state is inside it). Kept as it was when tlsmgrctl cannot
# say (no Postfix).
if [ -x "$ctl" ] && list=$("$ctl" postfix state-files 2>/dev/null); then
	if [ ! -d "$state" ]; then
		mkdir -m 0755 "$state" 2>/dev/null || true
	fi
	if [ -d "$state" ] && [ ! -L "$state" ]; then
		old_umask=$(umask)
		umask 077
		rm -f "$state/state-files.new"
		if printf '%s\n' "$list" >"$state/state-files.new"; then
			mv -f "$state/state-files.new" "$state/state-files"
		fi
		umask "$old_umask"
	fi
fi

# The standalone service.
if [ -d /run/systemd/system ]; then
	svc stop "$unit" >/dev/null 2>&1 || true
fi
if [ "$format" = rpm ] && command -v systemctl >/dev/null 2>&1; then
	systemctl --no-reload disable --quiet "$unit" >/dev/null 2>&1 || true
fi
exit 0
