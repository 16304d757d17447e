# make            build bin/tlsmgr and bin/tlsmgrctl
# make test       the README's test command
# make install    put tlsmgr into Postfix's daemon_directory as tlsmgr-go
#                 (Postfix's own tlsmgr is left alone) and tlsmgrctl into $(BINDIR)
# make enable     point master.cf's tlsmgr service at tlsmgr-go, then postfix reload
# make disable    point it back at Postfix's tlsmgr, then postfix reload
#
# CONFIG_DIR selects the Postfix instance (default: postconf's own default).

GO          ?= go
NAME        ?= tlsmgr-go
BINDIR      ?= /usr/local/sbin
CONFIG_DIR  ?=
POSTCONF     = postconf $(if $(CONFIG_DIR),-c $(CONFIG_DIR))
POSTFIX      = postfix $(if $(CONFIG_DIR),-c $(CONFIG_DIR))
DAEMON_DIR  ?= $(shell $(POSTCONF) -h daemon_directory 2>/dev/null || echo /usr/lib/postfix/sbin)

.PHONY: all build test install enable disable uninstall

all: build

build:
	$(GO) build -o bin/ ./cmd/...

test:
	scripts/test

install: build
	install -d $(DESTDIR)$(DAEMON_DIR) $(DESTDIR)$(BINDIR)
	install -m 0755 bin/tlsmgr $(DESTDIR)$(DAEMON_DIR)/$(NAME)
	install -m 0755 bin/tlsmgrctl $(DESTDIR)$(BINDIR)/tlsmgrctl
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
	rm -f $(DESTDIR)$(DAEMON_DIR)/$(NAME) $(DESTDIR)$(BINDIR)/tlsmgrctl
