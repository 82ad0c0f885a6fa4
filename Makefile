# ksync — GNU Makefile (non-recursive)

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
USERUNITDIR ?= $(PREFIX)/lib/systemd/user
DBUSSERVICEDIR ?= $(PREFIX)/share/dbus-1/services
DESTDIR ?=

CC ?= cc
CFLAGS ?= -O2 -g
PYTHON ?= /usr/bin/python3
PKG_CONFIG ?= pkg-config

PKGS := libcurl libxml-2.0 libical sqlite3 libsystemd

# Debian packages the build, the tests, the demo and the benchmark need.
DEB_PACKAGES := gcc make pkg-config libc6-dev \
	libcurl4-openssl-dev libxml2-dev libical-dev libsqlite3-dev libsystemd-dev libcmocka-dev \
	radicale xandikos python3-dulwich khard khal todoman vdirsyncer \
	python3-pytest python3-requests curl dbus dbus-daemon systemd mandoc sqlite3 procps time \
	openssl strace

ifeq ($(SANITIZE),1)
B := build/asan
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
else
B := build/plain
SAN_FLAGS :=
endif

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
	-Wcast-qual -Wformat=2 -Wno-unused-parameter
ifeq ($(WERROR),1)
WARN += -Werror
endif

KS_CFLAGS := -std=gnu17 $(WARN) -MMD -MP -iquote lib -D_GNU_SOURCE $(SAN_FLAGS) \
	$(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
KS_LDFLAGS := $(SAN_FLAGS)
KS_LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null) -lm
TEST_LIBS := $(shell $(PKG_CONFIG) --libs cmocka 2>/dev/null)

LIB_SRCS := $(sort $(wildcard lib/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(B)/%.o)
LIBKSYNC := $(B)/lib/libksync.a

DAEMON_SRCS := $(sort $(wildcard daemon/*.c))
DAEMON_OBJS := $(DAEMON_SRCS:%.c=$(B)/%.o)
CLI_SRCS := $(sort $(wildcard cli/*.c))
CLI_OBJS := $(CLI_SRCS:%.c=$(B)/%.o)

TEST_SRCS := $(sort $(wildcard tests/unit/test_*.c))
TEST_BINS := $(TEST_SRCS:tests/unit/%.c=$(B)/t/%)

BINS :=
ifneq ($(DAEMON_SRCS),)
BINS += $(B)/ksyncd
endif
ifneq ($(CLI_SRCS),)
BINS += $(B)/ksyncctl
endif

MANPAGES := $(wildcard man/*.1 man/*.5 man/*.8)

.PHONY: all deps check check-unit check-integration demo bench install uninstall clean lint \
	build-tests _check

all: $(BINS)

$(B)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(KS_CFLAGS) $(CFLAGS) -c -o $@ $<

$(LIBKSYNC): $(LIB_OBJS)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $^

$(B)/ksyncd: $(DAEMON_OBJS) $(LIBKSYNC)
	$(CC) $(KS_LDFLAGS) $(LDFLAGS) -o $@ $(DAEMON_OBJS) $(LIBKSYNC) $(KS_LIBS)

$(B)/ksyncctl: $(CLI_OBJS) $(LIBKSYNC)
	$(CC) $(KS_LDFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJS) $(LIBKSYNC) $(KS_LIBS)

$(B)/t/%: $(B)/tests/unit/%.o $(LIBKSYNC)
	@mkdir -p $(@D)
	$(CC) $(KS_LDFLAGS) $(LDFLAGS) -o $@ $< $(LIBKSYNC) $(KS_LIBS) $(TEST_LIBS)

build-tests: $(TEST_BINS)

# Installs what is missing (root), or says what to install.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' \
			|| missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "Missing packages; run as root:"; \
		echo "  apt-get update && apt-get install -y --no-install-recommends$$missing"; \
		exit 1; \
	fi; \
	echo "Installing:$$missing"; \
	if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then \
		apt-get update || exit 1; \
	fi; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing \
	|| { apt-get update && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y --no-install-recommends $$missing; }

check: deps
	@$(MAKE) --no-print-directory _check

_check: all build-tests
	@$(MAKE) --no-print-directory check-unit
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory check-integration

check-unit: $(TEST_BINS)
	@fail=0; for t in $(TEST_BINS); do \
		echo "== $$t"; \
		KSYNC_FIXTURES=$(CURDIR)/tests/fixtures $$t || fail=1; \
	done; \
	if [ $$fail = 0 ]; then echo "unit: all test binaries passed"; else echo "unit: FAILED"; fi; \
	exit $$fail

INTEGRATION_TESTS := $(wildcard tests/integration/test_*.py)

check-integration: all
ifneq ($(INTEGRATION_TESTS),)
	KSYNC_BUILD=$(CURDIR)/$(B) $(PYTHON) -m pytest -p no:cacheprovider -q tests/integration
else
	@echo "integration: no tests yet"
endif

lint:
	@if command -v mandoc >/dev/null && [ -n "$(MANPAGES)" ]; then \
		mandoc -Tlint -W warning $(MANPAGES) || exit 1; fi
	@if grep -nE '\<(sprintf|strcpy|strcat|atoi|system|gets)[[:space:]]*\(' lib/*.c; then \
		echo "lint: banned call in lib/"; exit 1; fi
	@echo "lint: ok"

demo: deps
	@$(MAKE) --no-print-directory all
	KSYNC_BUILD=$(CURDIR)/$(B) $(PYTHON) tests/demo.py

bench: deps
	@$(MAKE) --no-print-directory all
	KSYNC_BUILD=$(CURDIR)/$(B) $(PYTHON) bench/bench.py $(BENCH_ARGS)

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(USERUNITDIR) $(DESTDIR)$(DBUSSERVICEDIR)
	install -m 0755 $(BINS) $(DESTDIR)$(BINDIR)/
	for m in $(MANPAGES); do \
		s=$${m##*.}; install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$$s/; done
	sed 's|@BINDIR@|$(BINDIR)|g' systemd/ksyncd.service.in > $(DESTDIR)$(USERUNITDIR)/ksyncd.service
	chmod 0644 $(DESTDIR)$(USERUNITDIR)/ksyncd.service
	sed 's|@BINDIR@|$(BINDIR)|g' systemd/io.ksync.Sync1.service.in \
		> $(DESTDIR)$(DBUSSERVICEDIR)/io.ksync.Sync1.service
	chmod 0644 $(DESTDIR)$(DBUSSERVICEDIR)/io.ksync.Sync1.service

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/ksyncd $(DESTDIR)$(BINDIR)/ksyncctl
	for m in $(MANPAGES); do s=$${m##*.}; rm -f $(DESTDIR)$(MANDIR)/man$$s/$${m##*/}; done
	rm -f $(DESTDIR)$(USERUNITDIR)/ksyncd.service
	rm -f $(DESTDIR)$(DBUSSERVICEDIR)/io.ksync.Sync1.service

clean:
	rm -rf build

-include $(LIB_OBJS:.o=.d) $(DAEMON_OBJS:.o=.d) $(CLI_OBJS:.o=.d) \
	$(TEST_SRCS:tests/unit/%.c=$(B)/tests/unit/%.d)
