/*
 * graphite: Graphite's plaintext protocol, one line
 *     <path> <value> <timestamp>
 * into one reading (docs/protocol.md, "Graphite plaintext").
 *
 * proto_parse_line calls proto_graphite_parse only after the text form and
 * line protocol have both refused the line, so the two older formats never
 * pay for it. The three are disjoint: a Graphite line's second word is a
 * number, which line protocol's field set (it needs "key=value") and the
 * text form (it needs a lone "-" word and a ':') can never be.
 *
 * The path is split into sensor and quantity by struct proto_graphite_map.
 * Like the rest of lib/proto: parsed in place (the sensor always borrows
 * from the line; only an upper-case unknown quantity is copied, lower-cased,
 * into scratch), no allocation, no global state.
 * SPDX-License-Identifier: MIT
 */
#include "proto/proto.h"

#include <errno.h>
#include <string.h>

#include "util/strparse.h"

/* InfluxDB's largest timestamp (proto_parse.c's TS_MAX), in s and ns. */
#define TS_MAX (INT64_MAX - 1)
#define NS_PER_SEC 1000000000LL
#define SEC_MAX (TS_MAX / NS_PER_SEC)

/* True if (p, len) is nan, inf or infinity, any case, with a sign or not. */
static bool
is_nan_inf(const char *p, size_t len)
{
    if (len > 0 && (*p == '+' || *p == '-')) {
        p++;
        len--;
    }
    return sp_casematch(p, len, "nan") || sp_casematch(p, len, "inf") ||
           sp_casematch(p, len, "infinity");
}

/* True if (p, len) holds any byte of the NUL-terminated set. */
static bool
strpbrk_len(const char *p, size_t len, const char *set)
{
    for (; *set != '\0'; set++) {
        if (memchr(p, *set, len) != NULL)
            return true;
    }
    return false;
}

/* The next blank-separated word of [*cur, e); false if none is left. */
static bool
next_word(const char **cur, const char *e, struct proto_str *w)
{
    const char *p = sp_skip_blanks(*cur, e);

    if (p >= e)
        return false;
    w->p = p;
    while (p < e && !sp_is_blank((unsigned char)*p))
        p++;
    w->len = (size_t)(p - w->p);
    *cur = p;
    return true;
}

/*
 * "-1" (now: no timestamp of its own), or seconds since the epoch as
 * digits with an optional fraction (".5"; digits past the ninth are
 * dropped), within InfluxDB's range once in ns.
 */
static int
parse_seconds(struct proto_str w, struct proto_line *out)
{
    const char *p = w.p, *end = w.p + w.len;
    int64_t sec = 0, frac = 0, scale = NS_PER_SEC;

    if (w.len == 2 && p[0] == '-' && p[1] == '1') {
        out->has_ts = false;
        return PROTO_OK;
    }
    if (p >= end || !sp_is_digit((unsigned char)*p))
        return PROTO_E_TIMESTAMP;
    while (p < end && sp_is_digit((unsigned char)*p)) {
        sec = sec * 10 + (*p - '0');
        if (sec > SEC_MAX)
            return PROTO_E_TIMESTAMP;
        p++;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end)
            return PROTO_E_TIMESTAMP; /* "5." */
        while (p < end && sp_is_digit((unsigned char)*p)) {
            if (scale > 1) {
                scale /= 10;
                frac += (*p - '0') * scale;
            }
            p++;
        }
    }
    if (p != end || (sec == SEC_MAX && frac > TS_MAX % NS_PER_SEC))
        return PROTO_E_TIMESTAMP;
    out->has_ts = true;
    out->ts_ns = sec * NS_PER_SEC + frac;
    return PROTO_OK;
}

/*
 * Split the path (after its prefix) into sensor and quantity: components
 * are separated by '.', and none may be empty.
 */
static int
split_path(struct proto_str path, const struct proto_graphite_map *map,
           struct proto_str *sensor, struct proto_str *qname)
{
    const char *p = path.p, *end = path.p + path.len, *cut = NULL;
    unsigned parts = map != NULL ? map->sensor_parts : 0, n = 1;
    size_t i;

    if (map != NULL && map->prefix != NULL && map->prefix[0] != '\0') {
        size_t plen = strlen(map->prefix);

        if (plen < path.len && memcmp(p, map->prefix, plen) == 0)
            p += plen;
    }
    if (p >= end || *p == '.' || end[-1] == '.')
        return PROTO_E_NAME;
    for (i = 0; p + i < end; i++) {
        if (p[i] != '.')
            continue;
        if (p[i + 1] == '.')
            return PROTO_E_NAME; /* "a..b": an empty component */
        if (parts != 0 && n == parts)
            cut = p + i; /* the dot after the sensor's last component */
        n++;
    }
    if (parts == 0) {
        if (n < 2)
            return PROTO_E_NAME;
        cut = memrchr(p, '.', (size_t)(end - p));
    }
    if (cut == NULL)
        return PROTO_E_NAME; /* fewer than parts + 1 components */
    sensor->p = p;
    sensor->len = (size_t)(cut - p);
    qname->p = cut + 1;
    qname->len = (size_t)(end - cut - 1);
    if (sensor->len > PROTO_MAX_NAME || qname->len > PROTO_MAX_NAME)
        return PROTO_E_NAME;
    return PROTO_OK;
}

int
proto_graphite_parse(const char *b, const char *e,
                     const struct proto_opts *opts, struct proto_line *out,
                     bool *looks)
{
    const struct proto_graphite_map *map = opts != NULL ? opts->graphite
                                                        : NULL;
    struct proto_str path, val, ts, extra, sensor, qname, quantity, unit;
    const char *cur = b, *q;
    size_t room;
    double v;
    int rc;

    *looks = false;
    if (!next_word(&cur, e, &path) || !next_word(&cur, e, &val) ||
        !next_word(&cur, e, &ts) || next_word(&cur, e, &extra))
        return PROTO_E_SYNTAX; /* not three words */
    /* Bytes that mean something in line protocol's first word: a line
     * with them is broken line protocol, not Graphite (nor tagged
     * Graphite, "a.b;tag=v", which is not supported). */
    if (strpbrk_len(path.p, path.len, ",=\\"))
        return PROTO_E_SYNTAX;
    if (is_nan_inf(val.p, val.len)) {
        *looks = true;
        return PROTO_E_RANGE;
    }
    q = val.p;
    rc = sp_f64(&q, val.p + val.len, &v);
    if (rc == -ERANGE) {
        *looks = true;
        return PROTO_E_RANGE;
    }
    if (rc != 0 || q != val.p + val.len)
        return PROTO_E_SYNTAX;
    *looks = true;

    rc = parse_seconds(ts, out);
    if (rc != PROTO_OK)
        return rc;
    rc = split_path(path, map, &sensor, &qname);
    if (rc != PROTO_OK)
        return rc;

    /* Canonicalize into scratch; keep borrowing when lower-casing changed
     * nothing (the common case: collectd's names are lower-case). */
    room = sizeof(out->scratch) - out->scratch_used;
    quantity = proto_canon_quantity(qname.p, qname.len,
                                    out->scratch + out->scratch_used, room,
                                    &unit);
    if (quantity.len == 0)
        return PROTO_E_TOOLONG; /* no scratch left: cannot happen */
    if (quantity.p == out->scratch + out->scratch_used) {
        if (memcmp(quantity.p, qname.p, qname.len) == 0)
            quantity.p = qname.p;
        else
            out->scratch_used += quantity.len;
    }

    out->fmt = PROTO_FMT_GRAPHITE;
    out->r[0].sensor = sensor;
    out->r[0].quantity = quantity;
    out->r[0].unit = unit;
    out->r[0].value = v;
    out->n = 1;
    return PROTO_OK;
}
