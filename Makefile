# make            build bin/tlsmgr and bin/tlsmgrctl
# make test       the test command (scripts/test; docs/development.md)
# make bench      benchmark report in bench/results/ (scripts/bench-compare; needs
#                 root for Postfix's column), e.g. BENCH_FLAGS="-d 10s -rounds 5"
# make install    put tlsmgr into Postfix's daemon_directory as tlsmgr-go
#                 (Postfix's own tlsmgr is left alone), tlsmgr-go (standalone,
#                 contrib/tlsmgr-go.service) and tlsmgrctl into $(BINDIR), and
#                 the man pages tlsmgr-go(8) and tlsmgrctl(1) into $(MANDIR);
#                 PREFIX=/usr/local, DESTDIR for staging
# make enable     tlsmgrctl postfix enable: master.cf's tlsmgr service runs
#                 tlsmgr-go, postfix reload, proved (switched back if not)
# make disable    tlsmgrctl postfix disable: back to Postfix's tlsmgr
# make packages   the tlsmgr-go .deb and .rpm packages for amd64 and arm64 in
#                 dist/ (scripts/packages, with nfpm from packaging/go.mod)
#
# CONFIG_DIR selects the Postfix instance (default: postconf's own default).
# VERSION=v1.2.0 sets the version both programs report (default: git describe).

GO          ?= go
NAME        ?= tlsmgr-go
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/sbin
MANDIR      ?= $(PREFIX)/share/man
# git describe: the tag of a release (v1.0.0), or how far past it (v1.0.0-3-gabcdef).
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null)
LDFLAGS      = $(if $(VERSION),-ldflags "-X github.com/gotlsmgr/tlsmgr/internal/version.Version=$(VERSION)")
CONFIG_DIR  ?=
POSTCONF     = postconf $(if $(CONFIG_DIR),-c $(CONFIG_DIR))
POSTFIX      = postfix $(if $(CONFIG_DIR),-c $(CONFIG_DIR))
DAEMON_DIR  ?= $(shell $(POSTCONF) -h daemon_directory 2>/dev/null || echo /usr/lib/postfix/sbin)

.PHONY: all build test install enable disable uninstall packages

all: build

build:
	$(GO) build $(LDFLAGS) -o bin/ ./cmd/...

test:
	scripts/test

.PHONY: bench
bench:
	BENCH_COMMAND="make bench$(if $(BENCH_FLAGS), BENCH_FLAGS='$(BENCH_FLAGS)')" scripts/bench-compare $(BENCH_FLAGS)

install: build
	install -d $(DESTDIR)$(DAEMON_DIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man1
	install -m 0755 bin/tlsmgr $(DESTDIR)$(DAEMON_DIR)/$(NAME)
	install -m 0755 bin/tlsmgr $(DESTDIR)$(BINDIR)/$(NAME)
	install -m 0755 bin/tlsmgrctl $(DESTDIR)$(BINDIR)/tlsmgrctl
	install -m 0644 man/tlsmgr-go.8 $(DESTDIR)$(MANDIR)/man8/tlsmgr-go.8
	install -m 0644 man/tlsmgrctl.1 $(DESTDIR)$(MANDIR)/man1/tlsmgrctl.1
	@echo "installed $(DAEMON_DIR)/$(NAME)"
	@echo "master.cf now says:  $$($(POSTCONF) -M tlsmgr/unix 2>/dev/null)"
	@echo "to switch Postfix to it:  tlsmgrctl postfix enable   (or make enable)"
	@echo "to switch back:           tlsmgrctl postfix disable  (or make disable)"

# Thin wrappers of tlsmgrctl postfix enable and disable (tlsmgrctl(1)),
# which check, switch, reload and prove the switch.
CTL_CONFIG   = $(if $(CONFIG_DIR),-c $(CONFIG_DIR))

enable: build
	bin/tlsmgrctl postfix enable $(CTL_CONFIG)

disable: build
	bin/tlsmgrctl postfix disable $(CTL_CONFIG)

uninstall: disable
	rm -f $(DESTDIR)$(DAEMON_DIR)/$(NAME) $(DESTDIR)$(BINDIR)/$(NAME) $(DESTDIR)$(BINDIR)/tlsmgrctl
	rm -f $(DESTDIR)$(MANDIR)/man8/tlsmgr-go.8 $(DESTDIR)$(MANDIR)/man1/tlsmgrctl.1
	@# What make install put there before the tlsmgr-go names, which
	@# shadows Postfix's tlsmgr and man tlsmgr. Postfix's own are not these:
	@# its program is in daemon_directory, its page compressed (tlsmgr.8.gz).
	rm -f $(DESTDIR)$(BINDIR)/tlsmgr $(DESTDIR)$(MANDIR)/man8/tlsmgr.8

# VERSION as git describe gives it; scripts/packages turns it into each
# format's package version. PACKAGES_DIR (default dist) is where they go.
packages:
	VERSION='$(VERSION)' scripts/packages
