#!/bin/sh
# tlsmgr-go: Debian's postinst and RPM's %post (nfpm installs this one
# file as both; the arguments say which). Installing never edits
# master.cf: Postfix runs its own tlsmgr until the administrator points
# master.cf's tlsmgr service at tlsmgr-go (README, "Use with Postfix";
# tlsmgrctl(1), postfix enable).
# On an upgrade, when master.cf does run tlsmgr-go, Postfix is reloaded so
# that master(8) starts the new binary; the old one saves its caches as
# it stops and the new one reads them.
#
# POSIX sh, quiet on success; a missing or stopped Postfix, or no
# systemd, is not a failure.
set -e

# The default Postfix instance, whatever the caller's environment says:
# postconf, postfix and tlsmgrctl would all follow MAIL_CONFIG.
unset MAIL_CONFIG

# deb: "configure" and the version it replaces, empty on a first install
# (abort-upgrade and the other abort-* need nothing); rpm: 1 on a first
# install, 2 or more on an upgrade.
upgrade=no
case "$1" in
configure)
	if [ -n "$2" ]; then
		upgrade=yes
	fi
	;;
[0-9]*)
	if [ "$1" -ge 2 ]; then
		upgrade=yes
	fi
	;;
*)
	exit 0
	;;
esac

unit=tlsmgr-go.service
ctl=/usr/sbin/tlsmgrctl

# Only on the running system, not when dpkg installs into another root.
if [ -n "${DPKG_ROOT:-}" ]; then
	exit 0
fi

# systemctl, or on Debian deb-systemd-invoke, which asks policy-rc.d
# first (a chroot or an image build may forbid starting services).
svc() {
	if command -v deb-systemd-invoke >/dev/null 2>&1; then
		deb-systemd-invoke "$@"
	else
		systemctl "$@"
	fi
}

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
# Debian: remember the links systemctl enable would make, so that purge
# removes them (the unit is not enabled here).
if command -v deb-systemd-helper >/dev/null 2>&1; then
	deb-systemd-helper update-state "$unit" >/dev/null 2>&1 || true
fi

if [ "$upgrade" = no ]; then
	exit 0
fi

# The standalone service, if it runs, restarts with the new binary.
if [ -d /run/systemd/system ]; then
	svc try-restart "$unit" >/dev/null 2>&1 || true
fi

# Postfix's master(8) runs tlsmgr-go (status 0; 1: something else,
# 2: no Postfix, or no answer): postfix reload, if Postfix runs.
status=0
"$ctl" postfix status -q >/dev/null 2>&1 || status=$?
if [ "$status" -eq 0 ] && command -v postfix >/dev/null 2>&1 &&
	postfix status >/dev/null 2>&1; then
	if ! postfix reload >/dev/null 2>&1; then
		echo "tlsmgr-go: postfix reload failed; run it to start the new tlsmgr-go" >&2
	fi
fi
exit 0
