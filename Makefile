# sensornet: plain GNU Make, two binaries and one static library.
#
#   make                      build build/sensornet-server and build/sensornet-client
#   make test                 install missing Debian packages, build with
#                             AddressSanitizer+UBSan into build/asan, run the suite
#   make demo                 server on 127.0.0.1:5000 plus the two sensors
#   make install PREFIX=DIR   install both binaries into DIR/bin
#   make fuzz                 build the libFuzzer targets (clang) into build/fuzz
#
# Variables: CC, CFLAGS, SANITIZER=address,undefined, BUILD=dir, WERROR=1.
# SPDX-License-Identifier: MIT

CC       ?= cc
CFLAGS   ?= -O2 -g
PREFIX   ?= /usr/local
BUILD    ?= build
PKGS      = sqlite3 libpq libmicrohttpd jansson openssl gnutls
WARN      = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wstrict-prototypes \
            -Wmissing-prototypes -Wpointer-arith -Wsign-compare -Wformat=2 -Wvla \
            -Wno-format-nonliteral
ifeq ($(CI),true)
  WERROR ?= 1
endif
ifeq ($(WERROR),1)
  WARN += -Werror
endif
ifdef SANITIZER
  SAN_FLAGS = -fsanitize=$(SANITIZER) -fno-omit-frame-pointer \
              -fno-sanitize-recover=all
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
INC         = -Ilib -Isrc
ALL_CFLAGS  = $(WARN) $(INC) $(PKG_CFLAGS) $(CFLAGS) $(SAN_FLAGS) \
              $(EXTRA_CFLAGS) -pthread
LINK        = $(CC) $(CFLAGS) $(SAN_FLAGS) $(LDFLAGS) -pthread

LIB_SRC    := $(sort $(wildcard lib/*/*.c))
SERVER_SRC := $(sort $(wildcard src/server/*.c))
CLIENT_SRC := $(sort $(wildcard src/client/*.c))
UNIT_SRC   := $(sort $(wildcard tests/unit/test_*.c))
# Shared test helpers (tests/unit/*.c that are not a test_*.c of their own).
UNIT_HELP  := $(filter-out $(UNIT_SRC),$(sort $(wildcard tests/unit/*.c)))
FUZZ_SRC   := $(sort $(wildcard tests/fuzz/fuzz_*.c))

LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/%.o)
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/%.o)
CLIENT_OBJ := $(CLIENT_SRC:%.c=$(BUILD)/%.o)
# Unit tests link every server and client module except the two main.o.
SERVER_MOD := $(filter-out $(BUILD)/src/server/main.o,$(SERVER_OBJ))
CLIENT_MOD := $(filter-out $(BUILD)/src/client/main.o,$(CLIENT_OBJ))
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
UNIT_HELP_OBJ := $(UNIT_HELP:%.c=$(BUILD)/%.o)
LIBSN      := $(BUILD)/libsensornet.a

BENCH_BIN  := $(BUILD)/loadgen
SERVER_BIN := $(BUILD)/sensornet-server
CLIENT_BIN := $(BUILD)/sensornet-client

.PHONY: all test check unit demo install uninstall clean fuzz fuzz-run bench \
        deps dist asan
all: $(SERVER_BIN) $(CLIENT_BIN) $(BENCH_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(LIBSN): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	$(AR) rcs $@ $^

$(SERVER_BIN): $(SERVER_OBJ) $(LIBSN)
	$(LINK) -o $@ $^ $(PKG_LIBS) -lm

$(CLIENT_BIN): $(CLIENT_OBJ) $(LIBSN)
	$(LINK) -o $@ $^ $(PKG_LIBS) -lm

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(UNIT_HELP_OBJ) $(SERVER_MOD) \
    $(CLIENT_MOD) $(LIBSN)
	@mkdir -p $(dir $@)
	$(LINK) -o $@ $^ $(PKG_LIBS) -lcmocka -lm

unit: $(UNIT_BIN)

# Benchmark tools: same library, own binaries.
$(BUILD)/loadgen: $(BUILD)/bench/loadgen.o $(LIBSN)
	$(LINK) -o $@ $^ -lm

# The whole suite: dependencies, a sanitizer build, then pytest runs the unit
# binaries and the integration tests against that build.
test:
	@bash scripts/deps.sh --test
	$(MAKE) --no-print-directory BUILD=build/asan SANITIZER=address,undefined \
	    all unit
	SENSORNET_BUILD=$(CURDIR)/build/asan /usr/bin/python3 -m pytest -q \
	    -p no:cacheprovider tests $(PYTEST_ARGS)

check: test

demo:
	@bash scripts/deps.sh
	@$(MAKE) --no-print-directory all
	@bash scripts/demo.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(SERVER_BIN) $(CLIENT_BIN) $(DESTDIR)$(PREFIX)/bin/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/sensornet-server \
	      $(DESTDIR)$(PREFIX)/bin/sensornet-client

deps:
	@bash scripts/deps.sh --test

# libFuzzer targets: each tests/fuzz/fuzz_X.c links the library and the
# server modules, built with clang's -fsanitize=fuzzer.
FUZZ_BUILD = build/fuzz
FUZZ_BIN   = $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_BUILD)/%)
fuzz:
	$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=clang \
	    SANITIZER=address,undefined CFLAGS="-O1 -g" \
	    EXTRA_CFLAGS=-fsanitize=fuzzer-no-link $(FUZZ_BIN)
$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/tests/fuzz/fuzz_%.o $(SERVER_MOD) $(CLIENT_MOD) \
    $(LIBSN)
	$(LINK) -fsanitize=fuzzer -o $@ $^ $(PKG_LIBS) -lm

# Run every fuzz target for FUZZ_SECONDS each (default 20) on its corpus.
FUZZ_SECONDS ?= 20
fuzz-run: fuzz
	@bash scripts/fuzz-run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

clean:
	rm -rf build

# make dist: the source tarball deploy/bootstrap.sh installs.
include deploy/dist.mk
# make bench: the benchmarks and their references (docs/performance.md).
include bench/bench.mk
# The dashboard's files, embedded in sensornet-server.
include src/server/dashboard/dashboard.mk

# Keep objects that pattern chains would delete as intermediates.
.SECONDARY:

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
