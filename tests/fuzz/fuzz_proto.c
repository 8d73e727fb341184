/*
 * fuzz_proto: libFuzzer harness for lib/proto and lib/util/strparse.
 *
 * The input is split on '\n'; each line goes, in its own exactly-sized heap
 * block (so AddressSanitizer sees any read past its length), through
 * proto_parse_line, proto_parse_text, proto_format_human on every reading,
 * proto_escape_line, proto_utf8_valid and proto_is_http_request, and the
 * results are checked against the contract in proto.h:
 *   - rc is an enum proto_rc; OK means 1 <= n <= PROTO_MAX_FIELDS, names
 *     within their limits, valid UTF-8 without control bytes, canonical
 *     quantities lower-case and distinct, values finite;
 *   - the text form agrees between proto_parse_line and proto_parse_text;
 *   - a text-form reading's human form parses back to the same human form;
 *   - proto_escape_line is one line of UTF-8 and can be undone exactly;
 *   - proto_utf8_valid and sp_utf8_len agree with a naive decoder;
 *   - sp_f64 agrees bit for bit with strtod.
 * The first byte of the input picks the timestamp multiplier.
 * SPDX-License-Identifier: MIT
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"
#include "util/strparse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct proto_line g_a, g_b;

static void
check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_proto: invariant failed: %s\n", what);
        abort();
    }
}

/* Valid UTF-8 by a naive decoder, no NUL. */
static int
naive_utf8(const unsigned char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        uint32_t cp;
        size_t n, k;

        if (s[i] == 0)
            return 0;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        if ((s[i] & 0xe0) == 0xc0) {
            n = 2;
            cp = s[i] & 0x1f;
        } else if ((s[i] & 0xf0) == 0xe0) {
            n = 3;
            cp = s[i] & 0x0f;
        } else if ((s[i] & 0xf8) == 0xf0) {
            n = 4;
            cp = s[i] & 0x07;
        } else {
            return 0;
        }
        if (len - i < n)
            return 0;
        for (k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
            (n == 4 && cp < 0x10000) || (cp >= 0xd800 && cp <= 0xdfff) ||
            cp > 0x10ffff)
            return 0;
        i += n;
    }
    return 1;
}

static int
has_ctl(const char *p, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];

        if (c < 0x20 || c == 0x7f)
            return 1;
    }
    return 0;
}

static int
clean_str(struct proto_str s)
{
    return s.len == 0 || (s.p != NULL && proto_utf8_valid(s.p, s.len) &&
                          !has_ctl(s.p, s.len));
}

static int
str_eq(struct proto_str a, struct proto_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* Owned, exactly sized, NUL-free formatting of one reading. */
static char *
human(const struct proto_reading *r, size_t *len)
{
    size_t n = proto_format_human(r, NULL, 0);
    char *buf = malloc(n + 1);

    check(buf != NULL, "malloc");
    check(proto_format_human(r, buf, n + 1) == n, "human length stable");
    check(strlen(buf) == n, "human NUL-terminated at its length");
    *len = n;
    return buf;
}

static void
check_line(const char *p, size_t len, const struct proto_line *pl)
{
    size_t i, j;

    check(pl->n >= 1 && pl->n <= PROTO_MAX_FIELDS, "1 <= n <= max");
    check(pl->fmt == PROTO_FMT_TEXT || pl->fmt == PROTO_FMT_INFLUX ||
              pl->fmt == PROTO_FMT_GRAPHITE,
          "fmt");
    check(pl->scratch_used <= len, "scratch within the line's length");
    if (pl->fmt == PROTO_FMT_TEXT)
        check(pl->n == 1 && !pl->has_ts, "text form: one reading, no ts");
    for (i = 0; i < pl->n; i++) {
        const struct proto_reading *r = &pl->r[i];

        check(r->sensor.len >= 1 && r->sensor.len <= PROTO_MAX_NAME,
              "sensor length");
        check(r->quantity.len >= 1 && r->quantity.len <= PROTO_MAX_NAME,
              "quantity length");
        check(r->unit.len <= PROTO_MAX_UNIT, "unit length");
        check(isfinite(r->value), "finite value");
        check(clean_str(r->sensor) && clean_str(r->quantity) &&
                  clean_str(r->unit),
              "names are clean UTF-8");
        check((r->sensor.p >= p && r->sensor.p + r->sensor.len <= p + len) ||
                  (r->sensor.p >= pl->scratch &&
                   r->sensor.p + r->sensor.len <=
                       pl->scratch + pl->scratch_used),
              "sensor borrows from the line or scratch");
        for (j = 0; j < r->quantity.len; j++)
            check(!(r->quantity.p[j] >= 'A' && r->quantity.p[j] <= 'Z'),
                  "quantity lower-case");
        for (j = 0; j < i; j++)
            check(!str_eq(pl->r[j].quantity, r->quantity),
                  "quantities distinct");
    }
}

/* Undo proto_escape_line. */
static size_t
unescape(const char *s, size_t n, char *out)
{
    size_t i = 0, o = 0;

    while (i < n) {
        if (s[i] != '\\') {
            out[o++] = s[i++];
            continue;
        }
        check(i + 1 < n, "escape complete");
        switch (s[i + 1]) {
        case 'n': out[o++] = '\n'; i += 2; break;
        case 'r': out[o++] = '\r'; i += 2; break;
        case 't': out[o++] = '\t'; i += 2; break;
        case '\\': out[o++] = '\\'; i += 2; break;
        case 'x': {
            unsigned v = 0;
            size_t k;

            check(i + 3 < n, "\\x has two digits");
            for (k = 2; k < 4; k++) {
                char c = s[i + k];

                v = v * 16 + (unsigned)(c >= 'a' ? c - 'a' + 10 : c - '0');
            }
            out[o++] = (char)v;
            i += 4;
            break;
        }
        default:
            check(0, "known escape");
        }
    }
    return o;
}

static void
fuzz_escape(const char *p, size_t len)
{
    size_t n = proto_escape_line(p, len, NULL, 0), back;
    char *buf = malloc(n + 1), *orig = malloc(len + 1);
    char small[7];

    check(buf != NULL && orig != NULL, "malloc");
    check(n >= len && n <= 4 * len, "escape length");
    check(proto_escape_line(p, len, buf, n + 1) == n, "escape stable");
    check(naive_utf8((unsigned char *)buf, n) && !has_ctl(buf, n),
          "escaped line is clean UTF-8");
    back = unescape(buf, n, orig);
    check(back == len && (len == 0 || memcmp(orig, p, len) == 0),
          "escape round trip");
    /* A short buffer holds a NUL-terminated prefix. */
    check(proto_escape_line(p, len, small, sizeof(small)) == n,
          "truncated escape length");
    check(strlen(small) == (n < sizeof(small) ? n : sizeof(small) - 1) &&
              memcmp(small, buf, strlen(small)) == 0,
          "truncated escape is a prefix");
    free(buf);
    free(orig);
}

static void
fuzz_f64(const char *p, size_t len)
{
    const char *cur = p;
    double v, w;
    char tok[SP_NUM_MAX + 1];
    size_t n;

    if (sp_f64(&cur, p + len, &v) != 0)
        return;
    n = (size_t)(cur - p);
    check(n >= 1 && n <= SP_NUM_MAX, "sp_f64 token length");
    memcpy(tok, p, n);
    tok[n] = '\0';
    w = strtod(tok, NULL);
    check(memcmp(&v, &w, sizeof(v)) == 0, "sp_f64 == strtod");
}

static void
fuzz_one(const char *line, size_t len, const struct proto_opts *opts)
{
    char *p = malloc(len ? len : 1);
    int rc, rc_text;
    size_t i;

    check(p != NULL, "malloc");
    if (len > 0)
        memcpy(p, line, len);

    check((proto_utf8_valid(p, len) != 0) ==
              naive_utf8((unsigned char *)p, len),
          "proto_utf8_valid == naive decoder");
    for (i = 0; i < len; i++) {
        size_t n = sp_utf8_len(p + i, p + len);

        check(n == 0 || (n <= 4 && n <= len - i), "sp_utf8_len bounds");
    }

    rc = proto_parse_line(p, len, opts, &g_a);
    check(rc <= PROTO_OK && rc >= PROTO_E_TIMESTAMP, "rc in enum");
    check((rc == PROTO_E_TOOLONG) == (len > PROTO_MAX_LINE_LIMIT),
          "toolong iff over the limit");
    if (rc == PROTO_E_UTF8)
        check(!proto_utf8_valid(p, len), "utf8 error on invalid utf-8");
    if (len <= PROTO_MAX_LINE_LIMIT && !proto_utf8_valid(p, len) &&
        memchr(p, '\0', len) == NULL)
        check(rc == PROTO_E_UTF8, "invalid utf-8 is reported as such");
    if (rc == PROTO_OK)
        check_line(p, len, &g_a);

    rc_text = proto_parse_text(p, len, &g_b);
    if (rc_text == PROTO_OK) {
        check_line(p, len, &g_b);
        check(rc == PROTO_OK && g_a.fmt == PROTO_FMT_TEXT,
              "text accepted by parse_text is text for parse_line");
        check(str_eq(g_a.r[0].sensor, g_b.r[0].sensor) &&
                  str_eq(g_a.r[0].quantity, g_b.r[0].quantity) &&
                  str_eq(g_a.r[0].unit, g_b.r[0].unit) &&
                  memcmp(&g_a.r[0].value, &g_b.r[0].value,
                         sizeof(double)) == 0,
              "parse_text and parse_line agree");
    } else if (rc == PROTO_OK) {
        /* fuzz_graphite checks the Graphite side of the boundary. */
        check(g_a.fmt == PROTO_FMT_INFLUX || g_a.fmt == PROTO_FMT_GRAPHITE,
              "text refused means influx or graphite");
    }

    if (rc == PROTO_OK) {
        for (i = 0; i < g_a.n; i++) {
            size_t hl, hl2;
            char *h = human(&g_a.r[i], &hl);

            check(naive_utf8((unsigned char *)h, hl) && !has_ctl(h, hl),
                  "human form is one clean line");
            if (g_a.fmt == PROTO_FMT_TEXT &&
                (g_a.r[i].value == 0 ||
                 fabs(g_a.r[i].value) >= DBL_MIN)) {
                char *h2;

                check(proto_parse_text(h, hl, &g_b) == PROTO_OK,
                      "human form of a text reading parses");
                h2 = human(&g_b.r[0], &hl2);
                check(hl2 == hl && memcmp(h, h2, hl) == 0,
                      "human form round trip");
                free(h2);
            }
            free(h);
        }
    }

    fuzz_escape(p, len);
    fuzz_f64(p, len);
    (void)proto_is_http_request(p, len);
    free(p);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int64_t mults[] = { 0, 1, 1000, 1000000, 1000000000 };
    struct proto_opts opts = { 0 };
    const char *p = (const char *)data, *end = p + size;

    if (size > 0)
        opts.ts_mult = mults[data[0] % 5];
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
