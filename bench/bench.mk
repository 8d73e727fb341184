# bench/bench.mk: the benchmark, included by the top-level Makefile.
#
#   make bench                 release build (-O2) into build/release, then
#                              bench/bench.py: every scenario against the real
#                              server and the references on loopback; table,
#                              CSV, PNGs and perf profiles in bench/results/
#                              (about 8 minutes; bounded at 15)
#   make bench BENCH_QUICK=1   the same in short (about 70 s, bounded at 3
#                              minutes): a smoke test, not figures to quote
#   make bench BENCH_ONLY=discard,sqlite-logon   some scenarios only
#   make bench BENCH_ONLY=sqlite-logon,sqlite-logoff,influxdb \
#        BENCH_CONNS=100 BENCH_REPEATS=3   the headline ratio alone (~2 min)
#
# Needs the Debian packages listed in docs/performance.md (the deps script
# installs them with --bench). SPDX-License-Identifier: MIT

BENCH_BUILD   ?= build/release
BENCH_RESULTS ?= bench/results
BENCH_PY      ?= /usr/bin/python3
# The Makefile's link command (sanitizer flags included) when it has one.
BENCH_LINK     = $(if $(LINK),$(LINK),$(CC) $(CFLAGS) $(LDFLAGS) -pthread)

# The reference server: reads and drops (or acknowledges) lines.
$(BUILD)/discard: $(BUILD)/bench/discard.o $(LIBSN)
	$(BENCH_LINK) -o $@ $^ -lm

# SQLite alone, sensornet's table and settings: the durable store's floor.
$(BUILD)/sqlite_floor: $(BUILD)/bench/sqlite_floor.o $(LIBSN)
	$(BENCH_LINK) -o $@ $^ $(PKG_LIBS) -lm

.PHONY: bench bench-build
bench-build:
	$(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) \
	    BUILD=$(BENCH_BUILD) SANITIZER= \
	    CFLAGS="-O2 -g" $(BENCH_BUILD)/sensornet-server \
	    $(BENCH_BUILD)/loadgen $(BENCH_BUILD)/discard \
	    $(BENCH_BUILD)/sqlite_floor

bench:
	@bash scripts/deps.sh --bench
	@$(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) bench-build
	$(BENCH_PY) bench/bench.py --build $(BENCH_BUILD) --out $(BENCH_RESULTS) \
	    $(if $(filter-out 0,$(BENCH_QUICK)),--quick) \
	    $(if $(BENCH_ONLY),--only $(BENCH_ONLY)) \
	    $(if $(BENCH_CONNS),--conns $(BENCH_CONNS)) \
	    $(if $(BENCH_REPEATS),--repeats $(BENCH_REPEATS)) \
	    $(if $(filter-out 0,$(BENCH_NO_PROFILE)),--no-profile)
