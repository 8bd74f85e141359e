# dq - a toolkit of small C programs that turn part images into defect findings.
#
# Everything built goes under $(B) (default: the source tree), so that the
# sanitizer build (B=build/asan) lives beside the normal one.
.SUFFIXES:
.SECONDEXPANSION:

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBEXECDIR ?= $(PREFIX)/libexec
MANDIR ?= $(PREFIX)/share/man
CC ?= cc
CFLAGS ?= -O2 -g
PKG_CONFIG ?= pkg-config
PKGS = libcurl jansson openssl uuid libjpeg libpng libwebp
B ?= .

PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)
PKG_MISSING := $(shell for p in $(PKGS); do $(PKG_CONFIG) --exists $$p 2>/dev/null || echo $$p; done)

override CFLAGS += -std=c11 -D_GNU_SOURCE -pthread \
	-Wall -Wextra -Wshadow -Wformat=2 -Wpointer-arith -Wcast-qual \
	-Wstrict-prototypes -Wmissing-prototypes -Wvla -Wno-unused-parameter \
	-Ilib $(PKG_CFLAGS)
# --as-needed: a program links only the libraries it calls (said here, as a
# sanitizer build would link them all): the local path loads no libssl.
LDLIBS = -Wl,--as-needed $(PKG_LIBS) -lfcgi -lm -pthread

PROGS = dq-put dq-enqueue dq-dequeue dq-analyze dq-ingest
SCRIPTS = dq-worker
LIBSRC = $(wildcard lib/*.c lib/*/*.c lib/*/*/*.c)
LIBHDR = $(wildcard lib/*.h lib/*/*.h lib/*/*/*.h)
LIBOBJ = $(patsubst %.c,$(B)/%.o,$(LIBSRC))
LIBA = $(B)/lib/libdq.a
TOOLS = $(B)/tools/dq-synth
UNIT = $(B)/tests/unit/spool-test $(B)/tests/unit/reference-test $(B)/tests/unit/image-test \
	$(B)/tests/unit/status-test $(B)/tests/unit/http-test \
	$(B)/tests/unit/cred-test
BINS = $(addprefix $(B)/bin/,$(PROGS) $(SCRIPTS))

all: deps-check $(BINS) $(TOOLS)

deps-check:
	@if [ -n "$(PKG_MISSING)" ]; then \
		echo "dq: missing build libraries: $(PKG_MISSING); run 'make deps-build'" >&2; \
		exit 1; fi
	@test -f /usr/include/fcgi_stdio.h || \
		{ echo "dq: missing libfcgi (fcgi_stdio.h); run 'make deps-build'" >&2; exit 1; }

$(LIBA): $(LIBOBJ)
	$(AR) rcs $@ $(LIBOBJ)

$(B)/lib/%.o: lib/%.c $(LIBHDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

$(B)/bin/%: cmd/$$*/$$*.c $(LIBA)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIBA) $(LDLIBS)

$(B)/bin/dq-worker: cmd/dq-worker/dq-worker
	@mkdir -p $(@D)
	cp cmd/dq-worker/dq-worker $@ && chmod 755 $@

$(B)/tools/%: tools/%.c $(LIBA)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIBA) $(LDLIBS)

# C unit tests, run by their bats suites.
$(B)/tests/unit/%: tests/unit/%.c $(LIBA)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIBA) $(LDLIBS)

install: all
	mkdir -p $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBEXECDIR)/dq $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man7
	for p in $(PROGS) $(SCRIPTS); do install -m 755 $(B)/bin/$$p $(DESTDIR)$(BINDIR)/$$p; done
	install -m 755 $(TOOLS) $(DESTDIR)$(BINDIR)/
	install -m 755 cmd/dq-ingest/ingest.cgi $(DESTDIR)$(LIBEXECDIR)/dq/ingest.cgi
	install -m 644 man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 man/*.7 $(DESTDIR)$(MANDIR)/man7/

# Tests: the built programs first in PATH, bats over tests/bats.
BATS ?= bats
BATS_JOBS ?=
TEST_ENV = DQ_TOP="$(CURDIR)" DQ_BUILD="$(abspath $(B))"
# check and demo are the whole set-up on a fresh machine: they install what
# is missing first (as root; otherwise deps.sh prints the apt-get line),
# then build in a new make that sees the libraries just installed.
check:
	sh tools/deps.sh test
	$(MAKE) check-run

check-run: all $(UNIT)
	$(TEST_ENV) $(BATS) $(BATS_JOBS) tests/bats

check-long: all $(UNIT)
	$(TEST_ENV) DQ_LONG=1 $(BATS) tests/bats tests/long

# The same suite built with AddressSanitizer and UndefinedBehaviorSanitizer.
SAN = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
check-asan:
	sh tools/deps.sh test
	$(MAKE) check-run B=build/asan CFLAGS="-O1 -g $(SAN)" LDFLAGS="$(SAN)"

# ThreadSanitizer over the suites whose programs run threads (dq-analyze -j
# and its lease keeper, the worker that drives them, the HTTP layer's
# shared pool under http-test -n, and the token cache's threads under
# cred-test); a race it reports
# fails the program with 86.  Threads left unjoined are not reported: a
# system error ends dq-analyze at once from the thread that met it, by
# design.  26-analyze-threads also makes its own TSan dq-analyze in every run.
TSAN = -fsanitize=thread
TSAN_SUITES = tests/bats/21-analyze.bats tests/bats/22-worker.bats tests/bats/22-worker-stream.bats \
	tests/bats/26-analyze-threads.bats \
	tests/bats/40-http.bats tests/bats/41-cred.bats
check-tsan:
	$(MAKE) all build/tsan/tests/unit/http-test build/tsan/tests/unit/cred-test B=build/tsan \
		CFLAGS="-O1 -g $(TSAN)" LDFLAGS="$(TSAN)"
	DQ_TOP="$(CURDIR)" DQ_BUILD="$(CURDIR)/build/tsan" DQ_TSAN_BUILD="$(CURDIR)/build/tsan" \
		TSAN_OPTIONS="exitcode=86 report_thread_leaks=0" $(BATS) $(BATS_JOBS) $(TSAN_SUITES)

# deploy/: the root file systems the two images describe, assembled by
# debootstrap from Debian's archive, dq installed with make install
# DESTDIR, checked by chroot (root; skips, saying why, without the archive).
check-rootfs: all
	DQ_BUILD="$(abspath $(B))" bash deploy/rootfs-test.sh

demo:
	sh tools/deps.sh build
	$(MAKE) all
	bash tools/demo.sh

lint:
	mandoc -Tlint -W warning man/*.1 man/*.7
	shellcheck -S warning cmd/dq-worker/dq-worker cmd/dq-ingest/ingest.cgi .ci/run tools/*.sh tests/bats/*.bash $(wildcard bench/*.sh) deploy/*.sh

# libFuzzer over dq-ingest's request parser (clang).  `make fuzz` runs for
# FUZZ_SECONDS on a scratch copy of the corpus; `make fuzz-smoke` replays
# the corpus and every past crash (tests/fuzz/regressions), then fuzzes
# briefly.  A crash is written to tests/fuzz/crash-*: move it into
# tests/fuzz/regressions/ with the fix.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_FLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_RUN = -dict=tests/fuzz/ingest.dict -artifact_prefix=tests/fuzz/crash- -max_len=65536 -rss_limit_mb=1024

tests/fuzz/fuzz-ingest: tests/fuzz/fuzz-ingest.c $(LIBSRC) $(LIBHDR)
	$(FUZZ_CC) $(FUZZ_FLAGS) -std=c11 -D_GNU_SOURCE -Ilib $(PKG_CFLAGS) -o $@ \
		tests/fuzz/fuzz-ingest.c $(LIBSRC) $(PKG_LIBS) -lm -pthread

fuzz: tests/fuzz/fuzz-ingest
	work=$$(mktemp -d) && cp tests/fuzz/corpus/* tests/fuzz/regressions/* "$$work"/ 2>/dev/null; \
	tests/fuzz/fuzz-ingest $(FUZZ_RUN) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 "$$work"; \
	status=$$?; rm -rf "$$work"; exit $$status

fuzz-smoke: tests/fuzz/fuzz-ingest
	tests/fuzz/fuzz-ingest $(FUZZ_RUN) tests/fuzz/corpus/* $(wildcard tests/fuzz/regressions/*)
	$(MAKE) fuzz FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS)

.PHONY: fuzz fuzz-smoke

deps-build:
	sh tools/deps.sh build

deps-test:
	sh tools/deps.sh test

clean:
	rm -rf bin lib/*.o lib/*/*.o lib/*/*/*.o lib/libdq.a tools/dq-synth tests/unit/*-test build tests/fuzz/fuzz-ingest

.PHONY: all deps-check install check check-run check-long check-asan check-tsan check-rootfs demo lint deps-build deps-test clean
