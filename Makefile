# ksync — GNU Makefile (non-recursive)

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
# systemd looks for user units in /usr/lib, /usr/local/lib and the XDG data directories
# ($PREFIX/share for /usr, /usr/local and ~/.local), never in ~/.local/lib.
ifneq ($(filter /usr /usr/local /usr/ /usr/local/,$(PREFIX)),)
USERUNITDIR ?= $(PREFIX)/lib/systemd/user
else
USERUNITDIR ?= $(PREFIX)/share/systemd/user
endif
DBUSSERVICEDIR ?= $(PREFIX)/share/dbus-1/services
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
DESTDIR ?=

CC ?= cc
CFLAGS ?= -O2 -g
PYTHON ?= /usr/bin/python3
PKG_CONFIG ?= pkg-config

PKGS := libcurl libxml-2.0 libical sqlite3 libsystemd nettle
# What pkg-config cannot find, so that a missing -dev package is said in words, not as a
# compiler error about a header.
PKG_MISSING = $(shell for p in $(PKGS) $(1); do $(PKG_CONFIG) --exists $$p 2>/dev/null || \
	echo $$p; done)

# Debian packages the build, the tests, the demo and the benchmark need.
DEB_PACKAGES := gcc make pkg-config libc6-dev \
	libcurl4-openssl-dev libxml2-dev libical-dev libsqlite3-dev libsystemd-dev libcmocka-dev \
	nettle-dev libunistring-dev \
	radicale xandikos python3-dulwich davical postgresql php-cli php-pgsql php-sabre-dav \
	php-sqlite3 khard khal todoman vdirsyncer \
	python3-pytest python3-requests python3-configobj curl dbus dbus-daemon systemd mandoc \
	sqlite3 procps time openssl strace util-linux gnome-keyring libsecret-tools \
	python3-dbus python3-gi zsh fish linux-perf python3-pytest-xdist

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

# lib/util holds the few headers lib/ shares with daemon/ and cli/ (which name them
# "util/NAME.h"); inside lib/ they are found by their own names too.
KS_INCLUDES := -iquote lib -iquote lib/util
KS_CFLAGS := -std=gnu17 $(WARN) -MMD -MP $(KS_INCLUDES) -D_GNU_SOURCE $(SAN_FLAGS) \
	$(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
KS_LDFLAGS := $(SAN_FLAGS)
# libunistring has no pkg-config file in Debian 12.
KS_LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null) -lunistring -lm
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
# Code some unit tests link besides their own file: the server held in memory that the
# engine's test syncs with.
TEST_HELPER_SRCS := tests/unit/memremote.c
TEST_HELPER_OBJS := $(TEST_HELPER_SRCS:%.c=$(B)/%.o)

BINS :=
ifneq ($(DAEMON_SRCS),)
BINS += $(B)/ksyncd
endif
ifneq ($(CLI_SRCS),)
BINS += $(B)/ksyncctl
endif

MANPAGES := $(wildcard man/*.1 man/*.5 man/*.8)

.PHONY: all deps check check-unit check-integration demo bench install uninstall clean lint \
	build-tests _check pkgcheck pkgcheck-tests

all: $(BINS)

# Order-only: checked before anything is compiled, never a reason to recompile.
pkgcheck:
	@missing="$(call PKG_MISSING)"; if [ -n "$$missing" ]; then \
		echo "pkg-config cannot find: $$missing (the -dev packages are missing?)"; \
		echo "Run 'make deps' (as root) to install what the build needs."; exit 1; fi
	@echo '#include <unicase.h>' | $(CC) -E -x c - >/dev/null 2>&1 || { \
		echo "cannot find unicase.h (libunistring-dev is missing?)"; \
		echo "Run 'make deps' (as root) to install what the build needs."; exit 1; }

pkgcheck-tests:
	@missing="$(call PKG_MISSING,cmocka)"; if [ -n "$$missing" ]; then \
		echo "pkg-config cannot find: $$missing (the -dev packages are missing?)"; \
		echo "Run 'make deps' (as root) to install what the build and tests need."; exit 1; fi

$(LIB_OBJS) $(DAEMON_OBJS) $(CLI_OBJS): | pkgcheck
$(TEST_SRCS:tests/unit/%.c=$(B)/tests/unit/%.o) $(TEST_HELPER_OBJS): | pkgcheck-tests

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
	$(CC) $(KS_LDFLAGS) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LIBKSYNC) $(KS_LIBS) $(TEST_LIBS)

$(B)/t/test_engine: $(B)/tests/unit/memremote.o

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
	@$(MAKE) --no-print-directory check-fuzz
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

# The integration tests spend most of their time waiting on servers and runs, each with its
# own ports, directories and bus: several run at once.
TEST_JOBS ?= 3

check-integration: all
ifneq ($(INTEGRATION_TESTS),)
	KSYNC_BUILD=$(CURDIR)/$(B) KSYNC_MAKEFLAGS="SANITIZE=$(SANITIZE)" \
		$(PYTHON) -m pytest -p no:cacheprovider -q -rfEs \
		-n $(TEST_JOBS) tests/integration
else
	@echo "integration: no tests yet"
endif

# daemon/ and cli/ see the library through lib/ksync.h and lib/util/*.h only (named
# "util/NAME.h"); besides those they include their own headers, next to them. Every other
# header of lib/ is private to it.
FRONT_SRCS = $(wildcard daemon/*.[ch] cli/*.[ch])
# Nor do the files of daemon/ (or of cli/) call each other in a circle: the edges "a b" (a.o
# uses a function or variable b.o defines) must have a topological order.
FILE_EDGES = { f = $$1; sub(/:.*/, "", f); sub(/.*\//, "", f); sub(/\.o$$/, "", f); \
	if ($$2 == "U") use[f " " $$3] = 1; else if ($$2 ~ /^[TDBRC]$$/) def[$$3] = f } \
	END { for (k in use) { split(k, u, " "); \
		if ((u[2] in def) && def[u[2]] != u[1]) print u[1], def[u[2]] } }

lint: $(DAEMON_OBJS) $(CLI_OBJS)
	@if command -v mandoc >/dev/null && [ -n "$(MANPAGES)" ]; then \
		mandoc -Tlint -W warning $(MANPAGES) || exit 1; fi
	@if grep -nE '\<(sprintf|strcpy|strcat|atoi|system|gets)[[:space:]]*\(' lib/*.c; then \
		echo "lint: banned call in lib/"; exit 1; fi
	@bad=$$(for f in $(FRONT_SRCS); do \
		grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' $$f | \
		while IFS= read -r l; do \
			h=$${l#*\"}; h=$${h%%\"*}; \
			case $$h in \
			*..*|/*|util/*/*) ;; \
			ksync.h) continue;; \
			util/*.h) [ -f lib/$$h ] && continue;; \
			*/*) ;; \
			*) [ -f $${f%/*}/$$h ] && continue;; \
			esac; \
			echo "$$f:$${l%%:*}: includes \"$$h\""; \
		done; \
	done); \
	if [ -n "$$bad" ]; then echo "$$bad"; \
		echo "lint: daemon/ and cli/ may include only lib/ksync.h, lib/util/*.h (as" \
			"\"util/NAME.h\") and their own headers"; exit 1; fi
	@for d in daemon cli; do \
		if ! nm -A $(B)/$$d/*.o | awk '$(FILE_EDGES)' | tsort >/dev/null; then \
			echo "lint: the files of $$d/ call each other in a circle (above)"; \
			exit 1; fi; \
	done
	@echo "lint: ok"

demo: deps
	@$(MAKE) --no-print-directory all
	KSYNC_BUILD=$(CURDIR)/$(B) $(PYTHON) tests/demo.py

bench: deps
	@$(MAKE) --no-print-directory all
	KSYNC_BUILD=$(CURDIR)/$(B) $(PYTHON) bench/bench.py $(BENCH_ARGS)

# The randomized sync tester (tests/integration/ksynctest/randomized.py) for as long as asked:
# sequences of SOAK_STEPS operations on each of SOAK_SERVERS in turn, seeds from
# KSYNC_RANDOM_SEED (default: a random one, printed) upwards, for SOAK_SECONDS. Findings are
# shrunk (for at most KSYNC_RANDOM_SHRINK_SECONDS each) and saved under
# tests/integration/random_cases/; KSYNC_RANDOM_DISABLE or KSYNC_RANDOM_ONLY pick the
# operation families. `make check` runs a bounded slice (tests/integration/test_random.py).
SOAK_SECONDS ?= 1800
SOAK_SERVERS ?= radicale,xandikos
SOAK_STEPS ?= 150

.PHONY: soak
soak: deps
	@$(MAKE) --no-print-directory all
	cd tests/integration && KSYNC_BUILD=$(CURDIR)/$(B) $(PYTHON) -m ksynctest.randomized \
		--seconds $(SOAK_SECONDS) --servers $(SOAK_SERVERS) --steps $(SOAK_STEPS)

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(USERUNITDIR) $(DESTDIR)$(DBUSSERVICEDIR) \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	install -m 0644 completions/ksyncctl.bash $(DESTDIR)$(BASHCOMPDIR)/ksyncctl
	install -m 0644 completions/_ksyncctl $(DESTDIR)$(ZSHCOMPDIR)/_ksyncctl
	install -m 0644 completions/ksyncctl.fish $(DESTDIR)$(FISHCOMPDIR)/ksyncctl.fish
	install -m 0755 $(BINS) $(DESTDIR)$(BINDIR)/
	for m in $(MANPAGES); do \
		s=$${m##*.}; install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$$s/; done
	sed 's|@BINDIR@|$(BINDIR)|g' systemd/ksyncd.service.in > $(DESTDIR)$(USERUNITDIR)/ksyncd.service
	chmod 0644 $(DESTDIR)$(USERUNITDIR)/ksyncd.service
	sed 's|@BINDIR@|$(BINDIR)|g' systemd/io.ksync.Sync1.service.in \
		> $(DESTDIR)$(DBUSSERVICEDIR)/io.ksync.Sync1.service
	chmod 0644 $(DESTDIR)$(DBUSSERVICEDIR)/io.ksync.Sync1.service
	@echo "Installed ksyncd and ksyncctl in $(DESTDIR)$(BINDIR), the user unit in" \
		"$(DESTDIR)$(USERUNITDIR), the D-Bus service in $(DESTDIR)$(DBUSSERVICEDIR)."
	@if [ -z "$(DESTDIR)" ] && command -v systemd-analyze >/dev/null 2>&1 && \
	    ! systemd-analyze --user unit-paths 2>/dev/null | grep -qx '$(USERUNITDIR)/\{0,1\}'; \
	then echo "Note: systemd does not look for user units in $(USERUNITDIR): copy" \
		"ksyncd.service to ~/.config/systemd/user/ or set USERUNITDIR."; fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/ksyncd $(DESTDIR)$(BINDIR)/ksyncctl
	for m in $(MANPAGES); do s=$${m##*.}; rm -f $(DESTDIR)$(MANDIR)/man$$s/$${m##*/}; done
	rm -f $(DESTDIR)$(USERUNITDIR)/ksyncd.service
	rm -f $(DESTDIR)$(DBUSSERVICEDIR)/io.ksync.Sync1.service
	rm -f $(DESTDIR)$(BASHCOMPDIR)/ksyncctl $(DESTDIR)$(ZSHCOMPDIR)/_ksyncctl \
		$(DESTDIR)$(FISHCOMPDIR)/ksyncctl.fish

clean:
	rm -rf build

-include $(LIB_OBJS:.o=.d) $(DAEMON_OBJS:.o=.d) $(CLI_OBJS:.o=.d) \
	$(TEST_SRCS:tests/unit/%.c=$(B)/tests/unit/%.d) $(TEST_HELPER_OBJS:.o=.d)

# ---- fuzzing (tests/fuzz/) ------------------------------------------------------------------
# check-fuzz replays the corpora through standalone.c, built with $(CC) and the project's flags
# (SANITIZE=1: under ASan and UBSan). fuzz builds the targets and the library with clang and
# libFuzzer into build/fuzz and runs each for FUZZ_SECONDS; only fuzz needs clang, and it
# installs FUZZ_PACKAGES itself. New inputs go to build/fuzz/corpus/<name>, crashes to
# build/fuzz/artifacts/. FUZZ_TARGETS picks targets; FUZZ_ARGS passes libFuzzer flags, e.g.
# "-fork=1 -ignore_crashes=1" to go on after a crash in a long run.

FUZZ_ALL := vcard ical multistatus config merge href dup refusal feed
FUZZ_TARGETS ?= $(FUZZ_ALL)
FUZZ_SECONDS ?= 60
FUZZ_ARGS ?=
FUZZ_CC ?= clang
# clang only recommends libclang-rt-14-dev, which holds libFuzzer and the sanitizer runtimes.
FUZZ_PACKAGES := clang libclang-rt-14-dev

FUZZ_B := build/fuzz
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=gnu17 $(WARN) -MMD -MP $(KS_INCLUDES) -D_GNU_SOURCE -O1 -g $(FUZZ_SAN) \
	$(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
FUZZ_LIB_OBJS := $(LIB_SRCS:%.c=$(FUZZ_B)/%.o)
FUZZ_LIB := $(FUZZ_B)/lib/libksync.a
FUZZ_OBJS := $(FUZZ_ALL:%=$(FUZZ_B)/tests/fuzz/fuzz_%.o)
FUZZ_BINS := $(FUZZ_TARGETS:%=$(FUZZ_B)/fuzz_%)

REPLAY_OBJS := $(FUZZ_ALL:%=$(B)/tests/fuzz/fuzz_%.o) $(B)/tests/fuzz/standalone.o
REPLAY_BINS := $(FUZZ_ALL:%=$(B)/fuzz/replay_%)

.PHONY: check-fuzz fuzz fuzz-deps fuzz-build
.SECONDARY: $(REPLAY_OBJS) $(FUZZ_OBJS)

$(B)/fuzz/replay_%: $(B)/tests/fuzz/fuzz_%.o $(B)/tests/fuzz/standalone.o $(LIBKSYNC)
	@mkdir -p $(@D)
	$(CC) $(KS_LDFLAGS) $(LDFLAGS) -o $@ $< $(B)/tests/fuzz/standalone.o $(LIBKSYNC) $(KS_LIBS)

check-fuzz: $(REPLAY_BINS)
	@fail=0; for n in $(FUZZ_ALL); do \
		$(B)/fuzz/replay_$$n tests/fuzz/corpus/$$n || fail=1; \
	done; \
	if [ $$fail = 0 ]; then echo "fuzz: every corpus replayed cleanly"; \
	else echo "fuzz: replay FAILED"; fi; \
	exit $$fail

$(FUZZ_B)/%.o: %.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_LIB): $(FUZZ_LIB_OBJS)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $^

$(FUZZ_B)/fuzz_%: $(FUZZ_B)/tests/fuzz/fuzz_%.o $(FUZZ_LIB)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB) $(KS_LIBS)

fuzz-deps:
	@missing=""; for p in $(FUZZ_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' \
			|| missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "Missing packages for fuzzing; run as root:"; \
		echo "  apt-get update && apt-get install -y --no-install-recommends$$missing"; \
		exit 1; \
	fi; \
	echo "Installing:$$missing"; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing \
	|| { apt-get update && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y --no-install-recommends $$missing; }

fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-deps
	@$(MAKE) --no-print-directory fuzz-build
	@failed=""; for n in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_B)/corpus/$$n $(FUZZ_B)/artifacts; \
		stamp=$$(mktemp); \
		echo "== fuzz_$$n for $(FUZZ_SECONDS)s"; \
		$(FUZZ_B)/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
			-print_final_stats=1 -artifact_prefix=$(FUZZ_B)/artifacts/$$n- $(FUZZ_ARGS) \
			$(FUZZ_B)/corpus/$$n tests/fuzz/corpus/$$n || failed="$$failed $$n"; \
		if [ -n "$$(find $(FUZZ_B)/artifacts -name "$$n-*" -newer $$stamp)" ]; then \
			case "$$failed" in *" $$n") ;; *) failed="$$failed $$n";; esac; fi; \
		rm -f $$stamp; \
	done; \
	if [ -n "$$failed" ]; then \
		echo "fuzz: crashes in:$$failed (inputs in $(FUZZ_B)/artifacts/)"; exit 1; fi; \
	echo "fuzz: no crash"

-include $(REPLAY_OBJS:.o=.d) $(FUZZ_LIB_OBJS:.o=.d) $(FUZZ_OBJS:.o=.d)
# ---- end of fuzzing -------------------------------------------------------------------------
