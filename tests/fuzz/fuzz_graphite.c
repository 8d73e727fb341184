/*
 * fuzz_graphite: libFuzzer harness for Graphite plaintext (graphite.c) and
 * its boundaries with the text form and line protocol.
 *
 * The first byte picks the path map (prefix none, "collectd.", "a" or "";
 * sensor_parts 0 to 3); the rest is split on '\n' and each line, in its own
 * exactly-sized heap block, goes through proto_parse_graphite and
 * proto_parse_line. Checked:
 *   - the formats are disjoint: proto_parse_graphite accepts a line iff
 *     proto_parse_line takes it as Graphite, with the same reading; a line
 *     Graphite accepts is refused by proto_parse_text;
 *   - an accepted reading: one, names 1..128 bytes of clean UTF-8, the
 *     sensor borrowed from the line, the quantity lower-case, unit at most
 *     32 bytes, value finite, scratch within the line's length, timestamp
 *     in InfluxDB's range and not negative.
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct proto_line g_a, g_b, g_c;

static void
check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_graphite: invariant failed: %s\n", what);
        abort();
    }
}

static int
clean(struct proto_str s)
{
    size_t i;

    if (s.len == 0)
        return 1;
    if (s.p == NULL || !proto_utf8_valid(s.p, s.len))
        return 0;
    for (i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];

        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

static int
same(struct proto_str a, struct proto_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static void
check_reading(const char *p, size_t len, const struct proto_line *pl)
{
    const struct proto_reading *r = &pl->r[0];
    size_t i;

    check(pl->n == 1 && pl->fmt == PROTO_FMT_GRAPHITE, "one graphite");
    check(r->sensor.len >= 1 && r->sensor.len <= PROTO_MAX_NAME, "sensor");
    check(r->quantity.len >= 1 && r->quantity.len <= PROTO_MAX_NAME,
          "quantity");
    check(r->unit.len <= PROTO_MAX_UNIT, "unit");
    check(clean(r->sensor) && clean(r->quantity) && clean(r->unit),
          "clean names");
    check(r->sensor.p >= p && r->sensor.p + r->sensor.len <= p + len,
          "sensor borrows from the line");
    check(memchr(r->sensor.p, ' ', r->sensor.len) == NULL &&
              memchr(r->sensor.p, '\t', r->sensor.len) == NULL,
          "no blank in the sensor");
    for (i = 0; i < r->quantity.len; i++)
        check(!(r->quantity.p[i] >= 'A' && r->quantity.p[i] <= 'Z'),
              "quantity lower-case");
    check(isfinite(r->value), "finite");
    check(pl->scratch_used <= len, "scratch within the line");
    if (pl->has_ts)
        check(pl->ts_ns >= 0 && pl->ts_ns <= INT64_MAX - 1, "ts range");
}

static void
fuzz_one(const char *line, size_t len, const struct proto_opts *o)
{
    char *p = malloc(len ? len : 1);
    int rc_g, rc, rc_t;

    check(p != NULL, "malloc");
    if (len > 0)
        memcpy(p, line, len);
    rc_g = proto_parse_graphite(p, len, o, &g_a);
    rc = proto_parse_line(p, len, o, &g_b);
    rc_t = proto_parse_text(p, len, &g_c);
    check(rc_g <= PROTO_OK && rc_g >= PROTO_E_TIMESTAMP, "rc_g in enum");
    check(rc <= PROTO_OK && rc >= PROTO_E_TIMESTAMP, "rc in enum");
    if (rc_g == PROTO_OK) {
        check_reading(p, len, &g_a);
        check(rc == PROTO_OK && g_b.fmt == PROTO_FMT_GRAPHITE,
              "graphite alone => graphite in parse_line");
        check(rc_t != PROTO_OK, "graphite is never the text form");
        check(same(g_a.r[0].sensor, g_b.r[0].sensor) &&
                  same(g_a.r[0].quantity, g_b.r[0].quantity) &&
                  same(g_a.r[0].unit, g_b.r[0].unit) &&
                  memcmp(&g_a.r[0].value, &g_b.r[0].value,
                         sizeof(double)) == 0 &&
                  g_a.has_ts == g_b.has_ts &&
                  (!g_a.has_ts || g_a.ts_ns == g_b.ts_ns),
              "same reading both ways");
    } else if (rc == PROTO_OK) {
        check(g_b.fmt != PROTO_FMT_GRAPHITE,
              "parse_line's graphite is parse_graphite's");
    }
    free(p);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const prefixes[] = { NULL, "collectd.", "a", "" };
    struct proto_graphite_map map = { 0 };
    struct proto_opts opts = { 0 };
    const char *p = (const char *)data, *end = p + size;

    if (size == 0)
        return 0;
    map.prefix = prefixes[data[0] & 3];
    map.sensor_parts = (data[0] >> 2) & 3;
    opts.graphite = (data[0] & 0x80) ? NULL : &map;
    p++;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);

        fuzz_one(p, len, &opts);
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    return 0;
}
