# dq - a toolkit of small C programs that turn part images into defect findings.
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

override CFLAGS += -std=c11 -D_GNU_SOURCE -pthread \
	-Wall -Wextra -Wshadow -Wformat=2 -Wpointer-arith -Wcast-qual \
	-Wstrict-prototypes -Wmissing-prototypes -Wvla -Wno-unused-parameter \
	-Ilib $(PKG_CFLAGS)

PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)
PKG_MISSING := $(shell for p in $(PKGS); do $(PKG_CONFIG) --exists $$p || echo $$p; done)
LDLIBS = $(PKG_LIBS) -lfcgi -lm -pthread

PROGS = dq-put dq-enqueue dq-dequeue dq-analyze dq-ingest
SCRIPTS = dq-worker
LIBSRC = $(wildcard lib/*.c)
LIBOBJ = $(LIBSRC:.c=.o)
TOOLS = tools/dq-synth
BINS = $(addprefix bin/,$(PROGS))

all: deps-check $(BINS) bin/dq-worker $(TOOLS)

deps-check:
	@if [ -n "$(PKG_MISSING)" ]; then \
		echo "dq: missing build libraries: $(PKG_MISSING); run 'make deps-build'" >&2; \
		exit 1; fi
	@test -f /usr/include/fcgi_stdio.h || \
		{ echo "dq: missing libfcgi (fcgi_stdio.h); run 'make deps-build'" >&2; exit 1; }

lib/libdq.a: $(LIBOBJ)
	$(AR) rcs $@ $(LIBOBJ)

lib/%.o: lib/%.c lib/dq.h $(wildcard lib/*.h)
	$(CC) $(CFLAGS) -c -o $@ $<

bin/%: cmd/$$*/$$*.c lib/libdq.a
	@mkdir -p bin
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< lib/libdq.a $(LDLIBS)

bin/dq-worker: cmd/dq-worker/dq-worker
	@mkdir -p bin
	cp cmd/dq-worker/dq-worker $@ && chmod 755 $@

tools/%: tools/%.c lib/libdq.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< lib/libdq.a $(LDLIBS)

# C unit tests, run by their bats suites.
UNIT = tests/unit/spool-test tests/unit/refan-test
tests/unit/%: tests/unit/%.c lib/libdq.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< lib/libdq.a $(LDLIBS)

install: all
	mkdir -p $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBEXECDIR)/dq $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man7
	for p in $(PROGS) $(SCRIPTS); do install -m 755 bin/$$p $(DESTDIR)$(BINDIR)/$$p; done
	install -m 755 cmd/dq-ingest/ingest.cgi $(DESTDIR)$(LIBEXECDIR)/dq/ingest.cgi
	install -m 644 man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 man/*.7 $(DESTDIR)$(MANDIR)/man7/

# Tests: the built programs first in PATH, bats over tests/bats.
BATS ?= bats
BATS_JOBS ?=
check: all $(UNIT)
	PATH="$(CURDIR)/bin:$(CURDIR)/tools:$$PATH" DQ_TOP="$(CURDIR)" $(BATS) $(BATS_JOBS) tests/bats

check-long: all $(UNIT)
	PATH="$(CURDIR)/bin:$(CURDIR)/tools:$$PATH" DQ_TOP="$(CURDIR)" DQ_LONG=1 $(BATS) tests/bats

# The same suite built with AddressSanitizer and UndefinedBehaviorSanitizer.
check-asan:
	$(MAKE) clean
	$(MAKE) check CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
		LDFLAGS="-fsanitize=address,undefined"

demo: all
	sh tools/demo.sh

lint:
	mandoc -Tlint -W warning man/*.1 man/*.7
	shellcheck -S warning cmd/dq-worker/dq-worker cmd/dq-ingest/ingest.cgi .ci/run tools/*.sh tests/bats/*.bash bench/*.sh

deps-build:
	sh tools/deps.sh build

deps-test:
	sh tools/deps.sh test

clean:
	rm -rf bin lib/*.o lib/libdq.a $(TOOLS) $(UNIT) tests/fuzz/fuzz-ingest

.PHONY: all deps-check install check check-long check-asan demo lint deps-build deps-test clean
