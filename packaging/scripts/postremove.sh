#!/bin/sh
# tlsmgr-go: Debian's postrm and RPM's %postun (nfpm installs this one
# file as both; the arguments say which).
#
# - remove (deb), erase (rpm): systemd forgets the unit.
# - purge (deb): delete the state files tlsmgr-go kept in Postfix's
#   data_directory, as listed when the package was removed
#   (/var/lib/tlsmgr-go/state-files), each as the mail owner: that
#   directory is the mail owner's, and root must not follow a link the
#   mail owner could have put there. Then remove /var/lib/tlsmgr-go,
#   the standalone service's state included. RPM has no purge: its state
#   stays.
#
# POSIX sh and quiet; a missing Postfix, or no systemd, is not a failure.
set -e

# The default Postfix instance, whatever the caller's environment says:
# postconf, postfix and tlsmgrctl would all follow MAIL_CONFIG.
unset MAIL_CONFIG

unit=tlsmgr-go.service
state=/var/lib/tlsmgr-go

# Only on the running system, not when dpkg works on another root.
if [ -n "${DPKG_ROOT:-}" ]; then
	exit 0
fi

# deb: remove, purge (upgrade, disappear and the abort-* and failed-*
# need nothing); rpm: 0 on erase, 1 or more on an upgrade.
case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null 2>&1 || true
	fi
	;;
purge)
	if [ -f "$state/state-files" ] && [ ! -L "$state/state-files" ]; then
		owner=
		if command -v postconf >/dev/null 2>&1; then
			owner=$(postconf -h mail_owner 2>/dev/null) || owner=
		fi
		uid=
		if [ -n "$owner" ]; then
			uid=$(id -u "$owner" 2>/dev/null) || uid=
		fi
		# Without Postfix (purged too, or its postconf gone) the mail
		# owner is unknown: nothing is deleted as root instead.
		if [ -n "$uid" ] && [ "$uid" != 0 ]; then
			while IFS= read -r f; do
				case "$f" in
				/*)
					runuser -u "$owner" -- rm -f -- "$f" >/dev/null 2>&1 || true
					;;
				esac
			done <"$state/state-files"
		fi
	fi
	rm -rf "$state"
	if command -v deb-systemd-helper >/dev/null 2>&1; then
		deb-systemd-helper purge "$unit" >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
