# make            build bin/tlsmgr and bin/tlsmgrctl
# make test       the README's test command
# make bench      benchmark report in bench/results/ (scripts/bench-compare; needs
#                 root for Postfix's column), e.g. BENCH_FLAGS="-d 10s -rounds 5"
# make install    put tlsmgr into Postfix's daemon_directory as tlsmgr-go
#                 (Postfix's own tlsmgr is left alone), tlsmgr (standalone,
#                 contrib/tlsmgr.service) and tlsmgrctl into $(BINDIR), and the
#                 man pages into $(MANDIR); PREFIX=/usr/local, DESTDIR for staging
# make enable     point master.cf's tlsmgr service at tlsmgr-go, then postfix reload
# make disable    point it back at Postfix's tlsmgr, then postfix reload
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

.PHONY: all build test install enable disable uninstall

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
	install -m 0755 bin/tlsmgr $(DESTDIR)$(BINDIR)/tlsmgr
	install -m 0755 bin/tlsmgrctl $(DESTDIR)$(BINDIR)/tlsmgrctl
	install -m 0644 man/tlsmgr.8 $(DESTDIR)$(MANDIR)/man8/tlsmgr.8
	install -m 0644 man/tlsmgrctl.1 $(DESTDIR)$(MANDIR)/man1/tlsmgrctl.1
	@echo "installed $(DAEMON_DIR)/$(NAME)"
	@echo "master.cf now says:  $$($(POSTCONF) -M tlsmgr/unix 2>/dev/null)"
	@echo "to switch Postfix to it:  make enable   (or: postconf -F tlsmgr/unix/command=$(NAME) && postfix reload)"
	@echo "to switch back:           make disable  (or: postconf -F tlsmgr/unix/command=tlsmgr && postfix reload)"

enable:
	test -x $(DAEMON_DIR)/$(NAME) || { echo "run make install first" >&2; exit 1; }
	$(POSTCONF) -F tlsmgr/unix/command=$(NAME)
	$(POSTCONF) -M tlsmgr/unix
	$(POSTFIX) reload

disable:
	$(POSTCONF) -F tlsmgr/unix/command=tlsmgr
	$(POSTCONF) -M tlsmgr/unix
	$(POSTFIX) reload

uninstall: disable
	rm -f $(DESTDIR)$(DAEMON_DIR)/$(NAME) $(DESTDIR)$(BINDIR)/tlsmgr $(DESTDIR)$(BINDIR)/tlsmgrctl
	rm -f $(DESTDIR)$(MANDIR)/man8/tlsmgr.8 $(DESTDIR)$(MANDIR)/man1/tlsmgrctl.1
