# src/server/dashboard/dashboard.mk: the dashboard's files, embedded into
# sensornet-server as a generated C file (scripts/embed-assets.sh: od and
# awk, nothing to install). Included by the top-level Makefile after its
# own rules:
#
#   include src/server/dashboard/dashboard.mk
#
# Every binary that links the server modules (the server, the unit tests,
# the fuzz targets) links the table too, since http.o refers to it.
# SPDX-License-Identifier: MIT

DASH_SRC := $(sort $(wildcard src/server/dashboard/*.html \
                              src/server/dashboard/*.js \
                              src/server/dashboard/*.css \
                              src/server/dashboard/*.svg))
DASH_C   := $(BUILD)/gen/dashboard_assets.c
DASH_OBJ := $(BUILD)/gen/dashboard_assets.o

$(DASH_C): $(DASH_SRC) scripts/embed-assets.sh src/server/dashboard/dashboard.mk
	@mkdir -p $(dir $@)
	sh scripts/embed-assets.sh $@ $(DASH_SRC)

$(DASH_OBJ): $(DASH_C)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(SERVER_BIN) $(UNIT_BIN) $(FUZZ_BIN): $(DASH_OBJ)
