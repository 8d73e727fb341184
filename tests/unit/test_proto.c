/*
 * test_proto: lib/proto (and the lib/util/strparse helpers it stands on).
 *
 * Most behaviour lives in the golden table tests/unit/data/proto.cases,
 * read relative to the repository root (the cwd when tests run). Its format
 * (jq's): records separated by blank lines; "#" lines are comments;
 *   @MODE [ts_mult=N]   selects what the following cases test:
 *                       line text human escape http canon utf8
 *   INPUT               one line, literal bytes; or "~" and C escapes
 *                       (\\ \t \r \n \0 \xHH) for bytes that cannot be
 *                       written literally, or an input starting with # @ ~
 *   EXPECTED            one line, the rendering below
 * Parse results render as
 *   ok <text|influx> <ts|-> | "<sensor>" "<quantity>" "<unit>" <value> | ...
 *   err <proto_strerror text>
 * with strings escaped (\" \\ \xHH) and values in the shortest %g form
 * that reads back exactly.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "proto/proto.h"
#include "util/strparse.h"

#define CASES_PATH "tests/unit/data/proto.cases"
#define DOC_PATH "docs/protocol.md"

/* One proto_line for the whole run: it is 64 KiB + readings. */
static struct proto_line g_line;

/* ---- the golden table ------------------------------------------------- */

enum mode { M_LINE, M_TEXT, M_HUMAN, M_ESCAPE, M_HTTP, M_CANON, M_UTF8 };

static void
run_case(enum mode mode, const struct proto_opts *opts, const char *in,
         size_t in_len, struct sbuf *got)
{
    char *copy = gd_exact_copy(in, in_len);
    int rc;

    got->len = 0;
    sb_puts(got, "");
    switch (mode) {
    case M_LINE:
        rc = proto_parse_line(copy, in_len, opts, &g_line);
        gd_render_parse(got, rc, &g_line);
        break;
    case M_TEXT:
        rc = proto_parse_text(copy, in_len, &g_line);
        gd_render_parse(got, rc, &g_line);
        break;
    case M_HUMAN: {
        size_t i;

        rc = proto_parse_line(copy, in_len, opts, &g_line);
        if (rc != PROTO_OK) {
            gd_render_parse(got, rc, &g_line);
            break;
        }
        for (i = 0; i < g_line.n; i++) {
            char buf[1024];
            size_t n = proto_format_human(&g_line.r[i], buf, sizeof(buf));

            assert_true(n < sizeof(buf));
            if (i > 0)
                sb_puts(got, " | ");
            sb_put(got, buf, n);
        }
        break;
    }
    case M_ESCAPE: {
        size_t n = proto_escape_line(copy, in_len, NULL, 0);
        char *buf = malloc(n + 1);

        assert_non_null(buf);
        assert_int_equal(proto_escape_line(copy, in_len, buf, n + 1), n);
        sb_put(got, buf, n);
        free(buf);
        break;
    }
    case M_HTTP:
        sb_puts(got, proto_is_http_request(copy, in_len) ? "yes" : "no");
        break;
    case M_CANON: {
        char buf[PROTO_MAX_NAME];
        struct proto_str du, q;

        q = proto_canon_quantity(copy, in_len, buf, sizeof(buf), &du);
        sb_quoted(got, q.p, q.len);
        sb_puts(got, " ");
        sb_quoted(got, du.p, du.len);
        break;
    }
    case M_UTF8:
        sb_puts(got, proto_utf8_valid(copy, in_len) ? "valid" : "invalid");
        break;
    }
    free(copy);
}

static void
test_golden_cases(void **state)
{
    struct gd_case_file cf = { 0 };
    struct proto_opts opts = { .ts_mult = 0 };
    enum mode mode = M_LINE;
    struct sbuf got = { 0 };
    unsigned n_cases = 0, n_fail = 0;
    char *line;
    size_t len;

    (void)state;
    cf.buf = gd_read_file(CASES_PATH, &cf.len);
    while ((line = gd_next_line(&cf, &len)) != NULL) {
        char *exp, *raw = line;
        size_t exp_len, raw_len = len;
        long in_len;
        unsigned in_lineno;

        if (len == 0 || line[0] == '#')
            continue;
        if (line[0] == '@') {
            static const char *const names[] = {
                "line", "text", "human", "escape", "http", "canon", "utf8",
            };
            char word[32] = "";
            long long mult = 0;
            size_t i, w = 0;

            while (w + 1 < len && w + 1 < sizeof(word) && line[w + 1] != ' ' &&
                   line[w + 1] != '\n') {
                word[w] = line[w + 1];
                w++;
            }
            word[w] = '\0';
            for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                if (strcmp(word, names[i]) == 0)
                    break;
            }
            if (i == sizeof(names) / sizeof(names[0]))
                fail_msg("%s:%u: unknown mode '%s'", CASES_PATH, cf.lineno,
                         word);
            mode = (enum mode)i;
            if (w + 1 < len) {
                /* "@mode ts_mult=N" */
                const char *a = line + w + 2, *aend = line + len;
                int64_t v;

                if ((size_t)(aend - a) <= 8 || memcmp(a, "ts_mult=", 8) != 0)
                    fail_msg("%s:%u: bad mode argument", CASES_PATH,
                             cf.lineno);
                a += 8;
                if (sp_i64(&a, aend, &v) != 0 || a != aend)
                    fail_msg("%s:%u: bad ts_mult", CASES_PATH, cf.lineno);
                mult = v;
            }
            opts.ts_mult = (int64_t)mult;
            continue;
        }
        in_lineno = cf.lineno;
        if (line[0] == '~') {
            /* Decode a copy: the raw line is printed on mismatch. */
            line = gd_exact_copy(raw + 1, len - 1);
            in_len = gd_decode_input(line, len - 1);
            if (in_len < 0)
                fail_msg("%s:%u: bad escape in input", CASES_PATH,
                         in_lineno);
        } else {
            in_len = (long)len;
        }
        exp = gd_next_line(&cf, &exp_len);
        if (exp == NULL)
            fail_msg("%s:%u: input without expected line", CASES_PATH,
                     in_lineno);
        run_case(mode, &opts, line, (size_t)in_len, &got);
        n_cases++;
        if (got.len != exp_len || memcmp(got.p, exp, exp_len) != 0) {
            n_fail++;
            print_error("%s:%u: mismatch\n  input:    %.*s\n"
                        "  expected: %.*s\n  got:      %s\n",
                        CASES_PATH, in_lineno, (int)raw_len, raw,
                        (int)exp_len, exp, got.p);
        }
        if (line != raw)
            free(line);
    }
    print_message("proto.cases: %u cases, %u failed\n", n_cases, n_fail);
    free(got.p);
    free(cf.buf);
    assert_true(n_cases > 200);
    assert_int_equal(n_fail, 0);
}

/*
 * Every line inside a ```sensornet fence of docs/protocol.md must be an
 * input of proto.cases, so the contract's examples are all tested.
 */
static void
test_doc_examples_in_cases(void **state)
{
    size_t dlen, clen, missing = 0, n = 0;
    char *doc = gd_read_file(DOC_PATH, &dlen);
    char *cases = gd_read_file(CASES_PATH, &clen);
    char *p = doc, *end = doc + dlen;
    bool in_fence = false;

    (void)state;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);

        if (len >= 3 && memcmp(p, "```", 3) == 0) {
            in_fence = !in_fence && len == 12 &&
                       memcmp(p, "```sensornet", 12) == 0;
        } else if (in_fence && len > 0) {
            /* Look for "\n<line>\n" in the cases file. */
            char *needle = malloc(len + 3);
            bool found;

            assert_non_null(needle);
            needle[0] = '\n';
            memcpy(needle + 1, p, len);
            needle[len + 1] = '\n';
            needle[len + 2] = '\0';
            found = strstr(cases, needle) != NULL;
            if (!found) {
                print_error("docs example not in %s: %.*s\n", CASES_PATH,
                            (int)len, p);
                missing++;
            }
            n++;
            free(needle);
        }
        p += len + 1;
    }
    free(doc);
    free(cases);
    print_message("docs/protocol.md: %zu examples checked\n", n);
    assert_true(n >= 20);
    assert_int_equal(missing, 0);
}

/* ---- parser properties the table cannot show --------------------------- */

static bool
points_into(struct proto_str s, const char *p, size_t len)
{
    return s.p >= p && s.p + s.len <= p + len;
}

static void
test_parse_in_place(void **state)
{
    static const char txt[] = "Sensor1 - Temperatura: 25.34 K";
    static const char lp[] = "weather,sensor=roof,unit=K temp=1,hum=2 5";
    static const char esc[] = "w,sensor=a\\ b Foo\\=x=1,BAR=2";
    char *c;

    (void)state;
    c = gd_exact_copy(txt, strlen(txt));
    assert_int_equal(proto_parse_line(c, strlen(txt), NULL, &g_line),
                     PROTO_OK);
    assert_true(points_into(g_line.r[0].sensor, c, strlen(txt)));
    assert_true(points_into(g_line.r[0].unit, c, strlen(txt)));
    assert_int_equal(g_line.scratch_used, 0);
    free(c);

    c = gd_exact_copy(lp, strlen(lp));
    assert_int_equal(proto_parse_line(c, strlen(lp), NULL, &g_line),
                     PROTO_OK);
    assert_int_equal(g_line.n, 2);
    assert_true(points_into(g_line.r[0].sensor, c, strlen(lp)));
    assert_true(points_into(g_line.r[1].unit, c, strlen(lp)));
    assert_int_equal(g_line.scratch_used, 0);
    free(c);

    /* Escaped tokens and upper-case unknown keys go to scratch, and only
     * as many bytes as they hold. */
    c = gd_exact_copy(esc, strlen(esc));
    assert_int_equal(proto_parse_line(c, strlen(esc), NULL, &g_line),
                     PROTO_OK);
    assert_int_equal(g_line.n, 2);
    assert_int_equal(g_line.r[0].sensor.len, 3);
    assert_memory_equal(g_line.r[0].sensor.p, "a b", 3);
    assert_memory_equal(g_line.r[0].quantity.p, "foo=x", 5);
    assert_memory_equal(g_line.r[1].quantity.p, "bar", 3);
    assert_int_equal(g_line.scratch_used, 3 + 5 + 3);
    free(c);
}

/* Every prefix of a line parses without reading past its length. */
static void
test_prefixes(void **state)
{
    static const char *const lines[] = {
        "Sensor1 - Temperatura: 25.34\xc2\xb0" "C",
        "weather,sensor=Sensor1,unit=\xc2\xb0" "C temperature=25.34,"
        "humidity=57i,ok=t,s=\"a \\\" b\" 1700000000000000000",
        "GET /index.html HTTP/1.1",
    };
    size_t i, n;

    (void)state;
    for (i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        size_t len = strlen(lines[i]);

        for (n = 0; n <= len; n++) {
            char *c = gd_exact_copy(lines[i], n);
            char out[256];
            int rc = proto_parse_line(c, n, NULL, &g_line);

            if (rc == PROTO_OK)
                assert_true(g_line.n >= 1);
            (void)proto_parse_text(c, n, &g_line);
            (void)proto_is_http_request(c, n);
            (void)proto_utf8_valid(c, n);
            (void)proto_escape_line(c, n, out, sizeof(out));
            free(c);
        }
    }
    /* A known prefix result: the text form without its unit. */
    assert_int_equal(proto_parse_line(lines[0], 28, NULL, &g_line),
                     PROTO_OK);
    assert_true(g_line.r[0].value == 25.34);
}

static void
test_line_length_limit(void **state)
{
    size_t len = PROTO_MAX_LINE_LIMIT;
    char *buf = malloc(len + 1);
    static const char head[] = "m,sensor=s v=1,s=\"";

    (void)state;
    assert_non_null(buf);
    /* Exactly the limit: a long string field, accepted. */
    memset(buf, 'x', len + 1);
    memcpy(buf, head, strlen(head));
    buf[len - 1] = '"';
    assert_int_equal(proto_parse_line(buf, len, NULL, &g_line), PROTO_OK);
    assert_int_equal(g_line.n, 1);
    /* One byte more: refused before anything else is looked at. */
    buf[len - 1] = 'x';
    buf[len] = '"';
    assert_int_equal(proto_parse_line(buf, len + 1, NULL, &g_line),
                     PROTO_E_TOOLONG);
    assert_int_equal(proto_parse_text(buf, len + 1, &g_line),
                     PROTO_E_TOOLONG);
    free(buf);
}

/* Escaped upper-case keys use scratch twice over (unescape, lower-case):
 * in place, so never more than the line's length. */
static void
test_scratch_bounded(void **state)
{
    struct sbuf b = { 0 };
    size_t i;

    (void)state;
    sb_puts(&b, "m\\ ");
    for (i = 0; i < 63; i++)
        sb_printf(&b, "%sK\\ %03zu%.110s=1", i ? "," : " ", i,
                  "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                  "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_true(b.len < PROTO_MAX_LINE_LIMIT);
    assert_int_equal(proto_parse_line(b.p, b.len, NULL, &g_line), PROTO_OK);
    assert_int_equal(g_line.n, 63);
    assert_true(g_line.scratch_used <= b.len);
    assert_int_equal(g_line.r[62].quantity.p[0], 'k');
    free(b.p);
}

static void
test_field_count_limit(void **state)
{
    struct sbuf b = { 0 };
    size_t i;

    (void)state;
    sb_puts(&b, "m,sensor=s ");
    for (i = 0; i < PROTO_MAX_FIELDS; i++)
        sb_printf(&b, "%sf%zu=%zu", i ? "," : "", i, i);
    assert_int_equal(proto_parse_line(b.p, b.len, NULL, &g_line), PROTO_OK);
    assert_int_equal(g_line.n, PROTO_MAX_FIELDS);
    assert_true(g_line.r[63].value == 63);
    /* Repeats of a key are one reading: still 64. */
    sb_puts(&b, ",f0=100,F1=101,f63=163");
    assert_int_equal(proto_parse_line(b.p, b.len, NULL, &g_line), PROTO_OK);
    assert_int_equal(g_line.n, PROTO_MAX_FIELDS);
    assert_true(g_line.r[0].value == 100);
    assert_true(g_line.r[1].value == 101);
    assert_true(g_line.r[63].value == 163);
    /* String fields do not count. */
    sb_puts(&b, ",s=\"x\"");
    assert_int_equal(proto_parse_line(b.p, b.len, NULL, &g_line), PROTO_OK);
    /* One more numeric field: refused. */
    sb_puts(&b, ",f64=1");
    assert_int_equal(proto_parse_line(b.p, b.len, NULL, &g_line),
                     PROTO_E_TOOMANY);
    free(b.p);
}

static void
test_name_limits(void **state)
{
    char n128[129], n129[130], u32[33], u33[34];
    struct sbuf b = { 0 };

    (void)state;
    memset(n128, 'a', 128);
    n128[128] = '\0';
    memset(n129, 'a', 129);
    n129[129] = '\0';
    memset(u32, 'u', 32);
    u32[32] = '\0';
    memset(u33, 'u', 33);
    u33[33] = '\0';

#define EXPECT(want, ...)                                                     \
    do {                                                                      \
        b.len = 0;                                                            \
        sb_printf(&b, __VA_ARGS__);                                           \
        assert_int_equal(proto_parse_line(b.p, b.len, NULL, &g_line), want); \
    } while (0)

    EXPECT(PROTO_OK, "%s - q: 1", n128);
    EXPECT(PROTO_E_NAME, "%s - q: 1", n129);
    EXPECT(PROTO_OK, "s - %s: 1", n128);
    EXPECT(PROTO_E_NAME, "s - %s: 1", n129);
    EXPECT(PROTO_OK, "s - q: 1 %s", u32);
    EXPECT(PROTO_E_NAME, "s - q: 1 %s", u33);
    EXPECT(PROTO_OK, "%s v=1", n128);
    EXPECT(PROTO_E_NAME, "%s v=1", n129);
    EXPECT(PROTO_OK, "m,sensor=%s v=1", n128);
    EXPECT(PROTO_E_NAME, "m,sensor=%s v=1", n129);
    /* A long measurement does not matter when the sensor tag names it. */
    EXPECT(PROTO_OK, "%s,sensor=s v=1", n129);
    EXPECT(PROTO_OK, "m %s=1", n128);
    EXPECT(PROTO_E_NAME, "m %s=1", n129);
    /* ... nor a long key of an ignored string field. */
    EXPECT(PROTO_OK, "m %s=\"x\",v=1", n129);
    EXPECT(PROTO_OK, "m,unit=%s v=1", u32);
    EXPECT(PROTO_E_NAME, "m,unit=%s v=1", u33);
    /* Limits apply after unescaping: 64 escaped commas are 64 bytes. */
    EXPECT(PROTO_OK, "m,sensor=%s%s v=1",
           "\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,"
           "\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,",
           "\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,"
           "\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,\\,");
    assert_int_equal(g_line.r[0].sensor.len, 64);
    EXPECT(PROTO_OK, "m %.120s\\ \\ \\ \\ \\ \\ \\ \\ =1", n128);
    assert_int_equal(g_line.r[0].quantity.len, 128);
#undef EXPECT
    free(b.p);
}

static void
test_timestamp_mult(void **state)
{
    static const char ok[] = "m v=1 1700000000";
    static const char big[] = "m v=1 9300000000";
    struct proto_opts o = { 0 };

    (void)state;
    o.ts_mult = 1000000000;
    assert_int_equal(proto_parse_line(ok, strlen(ok), &o, &g_line), PROTO_OK);
    assert_true(g_line.has_ts);
    assert_int_equal(g_line.ts_ns, 1700000000000000000LL);
    assert_int_equal(proto_parse_line(big, strlen(big), &o, &g_line),
                     PROTO_E_TIMESTAMP);
    o.ts_mult = 1000;
    assert_int_equal(proto_parse_line(ok, strlen(ok), &o, &g_line), PROTO_OK);
    assert_int_equal(g_line.ts_ns, 1700000000000LL);
    /* 0 and NULL both mean ns. */
    o.ts_mult = 0;
    assert_int_equal(proto_parse_line(ok, strlen(ok), &o, &g_line), PROTO_OK);
    assert_int_equal(g_line.ts_ns, 1700000000LL);
    assert_int_equal(proto_parse_line(ok, strlen(ok), NULL, &g_line),
                     PROTO_OK);
    assert_int_equal(g_line.ts_ns, 1700000000LL);
}

static void
test_strerror(void **state)
{
    int rc, rc2;

    (void)state;
    for (rc = PROTO_E_TIMESTAMP; rc <= PROTO_OK; rc++) {
        const char *s = proto_strerror(rc);

        assert_non_null(s);
        assert_true(strlen(s) > 0 && strlen(s) < 40);
        assert_null(strpbrk(s, "\r\n"));
        assert_string_not_equal(s, "unknown error");
        for (rc2 = PROTO_E_TIMESTAMP; rc2 < rc; rc2++)
            assert_string_not_equal(s, proto_strerror(rc2));
    }
    assert_string_equal(proto_strerror(PROTO_E_SYNTAX), "syntax error");
    assert_string_equal(proto_strerror(PROTO_E_UTF8), "invalid utf-8");
    assert_string_equal(proto_strerror(PROTO_E_NUL), "nul or control byte");
    assert_string_equal(proto_strerror(PROTO_E_RANGE), "number out of range");
    assert_string_equal(proto_strerror(PROTO_E_NOFIELD), "no numeric field");
    assert_string_equal(proto_strerror(PROTO_E_TOOMANY), "too many fields");
    assert_string_equal(proto_strerror(PROTO_E_NAME), "bad name");
    assert_string_equal(proto_strerror(PROTO_E_TOOLONG), "line too long");
    assert_string_equal(proto_strerror(PROTO_E_TIMESTAMP), "bad timestamp");
    assert_string_equal(proto_strerror(-99), "unknown error");
    assert_string_equal(proto_strerror(1), "unknown error");
}

/* snprintf semantics: any buffer size gives a NUL-terminated prefix and
 * the full length. */
static void
test_format_truncation(void **state)
{
    struct proto_reading r = {
        .sensor = { "Sensor1", 7 },
        .quantity = { "temperature", 11 },
        .unit = { "\xc2\xb0" "C", 3 },
        .value = 25.34,
    };
    static const char want[] = "Sensor1 - Temperatura: 25.34\xc2\xb0" "C";
    static const char raw[] = "a\tb\\c\xff\xc2\xb0";
    static const char raw_want[] = "a\\tb\\\\c\\xff\xc2\xb0";
    char buf[64];
    size_t n, cap;

    (void)state;
    assert_int_equal(proto_format_human(&r, NULL, 0), strlen(want));
    for (cap = 1; cap <= sizeof(want) + 1; cap++) {
        memset(buf, '#', sizeof(buf));
        n = proto_format_human(&r, buf, cap);
        assert_int_equal(n, strlen(want));
        assert_int_equal(strlen(buf), cap - 1 < n ? cap - 1 : n);
        assert_memory_equal(buf, want, strlen(buf));
        assert_int_equal(buf[cap], '#'); /* nothing written past cap */
    }
    assert_int_equal(proto_escape_line(raw, strlen(raw), NULL, 0),
                     strlen(raw_want));
    for (cap = 1; cap <= sizeof(raw_want) + 1; cap++) {
        memset(buf, '#', sizeof(buf));
        n = proto_escape_line(raw, strlen(raw), buf, cap);
        assert_int_equal(n, strlen(raw_want));
        assert_memory_equal(buf, raw_want, strlen(buf));
        assert_int_equal(buf[cap], '#');
    }
}

/* Readings built by other code: control bytes and bad UTF-8 in names are
 * escaped, other units are spaced, an empty unit leaves no space. */
static void
test_format_human_odd(void **state)
{
    struct proto_reading r = {
        .sensor = { "a\nb\\", 4 },
        .quantity = { "x\x7f", 2 },
        .unit = { "", 0 },
        .value = -0.0,
    };
    char buf[128];

    (void)state;
    proto_format_human(&r, buf, sizeof(buf));
    assert_string_equal(buf, "a\\nb\\ - x\\x7f: -0");
    r.quantity = (struct proto_str){ "humidity", 8 };
    r.unit = (struct proto_str){ "g/m\xb3", 4 };
    r.value = 1e21;
    proto_format_human(&r, buf, sizeof(buf));
    assert_string_equal(buf, "a\\nb\\ - Umidade: 1e+21 g/m\\xb3");
    r.sensor = (struct proto_str){ NULL, 0 };
    r.quantity = (struct proto_str){ NULL, 0 };
    proto_format_human(&r, buf, sizeof(buf));
    assert_string_equal(buf, " - : 1e+21 g/m\\xb3");
}

/* The original's lines come back byte for byte; every text-form line's
 * human form parses back to the same reading. */
static void
test_human_round_trip(void **state)
{
    static const char *const lines[] = {
        "Sensor1 - Temperatura: 25.34\xc2\xb0" "C",
        "Sensor2 - Umidade: 57.96%",
        "Sensor1 - Temperatura: -0.5\xc2\xb0" "C",
        "Sensor2 - Umidade: 100%",
        "Sensor 3 - pressure: 1013.25 hPa",
        "garden - co2: 415 ppm",
        "x - battery: 87",
        "x - Temperatura: 300 K",
        "x - Temperatura: 25 e5",
    };
    char buf[256], buf2[256];
    size_t i, n;

    (void)state;
    for (i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        assert_int_equal(proto_parse_line(lines[i], strlen(lines[i]), NULL,
                                          &g_line),
                         PROTO_OK);
        n = proto_format_human(&g_line.r[0], buf, sizeof(buf));
        assert_string_equal(buf, lines[i]);
        assert_int_equal(proto_parse_text(buf, n, &g_line), PROTO_OK);
        proto_format_human(&g_line.r[0], buf2, sizeof(buf2));
        assert_string_equal(buf2, buf);
    }
}

static void
test_canon_quantity_buffer(void **state)
{
    char buf[8];
    struct proto_str q, du;

    (void)state;
    q = proto_canon_quantity("Temp", 4, NULL, 0, NULL);
    assert_int_equal(q.len, 11);
    assert_memory_equal(q.p, "temperature", 11);
    q = proto_canon_quantity("Wind", 4, buf, sizeof(buf), &du);
    assert_ptr_equal(q.p, buf);
    assert_memory_equal(buf, "wind", 4);
    assert_int_equal(du.len, 0);
    /* buf_len < len breaks the contract: an empty name, not an overflow. */
    q = proto_canon_quantity("WindSpeed", 9, buf, sizeof(buf), &du);
    assert_int_equal(q.len, 0);
    q = proto_canon_quantity("", 0, buf, sizeof(buf), &du);
    assert_int_equal(q.len, 0);
}

/* Control bytes, DEL and bad UTF-8 at every offset (fast path and tail). */
static void
test_bad_byte_every_offset(void **state)
{
    static const struct {
        const char *bytes;
        size_t len;
        int rc;
    } bad[] = {
        { "\0", 1, PROTO_E_NUL },     { "\x01", 1, PROTO_E_NUL },
        { "\x1f", 1, PROTO_E_NUL },   { "\x7f", 1, PROTO_E_NUL },
        { "\r", 1, PROTO_E_NUL },     { "\xff", 1, PROTO_E_UTF8 },
        { "\x80", 1, PROTO_E_UTF8 },  { "\xc0\xaf", 2, PROTO_E_UTF8 },
        { "\xed\xa0\x80", 3, PROTO_E_UTF8 },
    };
    static const char base[] = "weather,sensor=Sensor1 temperatura=25.34";
    char line[64];
    size_t i, at, len = strlen(base);

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (at = 0; at <= len; at++) {
            memcpy(line, base, at);
            memcpy(line + at, bad[i].bytes, bad[i].len);
            memcpy(line + at + bad[i].len, base + at, len - at);
            assert_int_equal(proto_parse_line(line, len + bad[i].len, NULL,
                                              &g_line),
                             bad[i].rc);
        }
    }
    /* Invalid UTF-8 wins over an earlier control byte. */
    assert_int_equal(proto_parse_line("a\x01 b\xff", 5, NULL, &g_line),
                     PROTO_E_UTF8);
    assert_false(proto_utf8_valid("a\0b", 3));
    assert_true(proto_utf8_valid("", 0));
}

/* ---- strparse ----------------------------------------------------------- */

/* A reference decoder: code point and length, any form, then the rules. */
static size_t
ref_utf8_len(const unsigned char *s, size_t avail)
{
    uint32_t cp;
    size_t n, i;

    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xe0) == 0xc0) {
        n = 2;
        cp = s[0] & 0x1f;
    } else if ((s[0] & 0xf0) == 0xe0) {
        n = 3;
        cp = s[0] & 0x0f;
    } else if ((s[0] & 0xf8) == 0xf0) {
        n = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (avail < n)
        return 0;
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
        (n == 4 && cp < 0x10000))
        return 0;
    if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
        return 0;
    return n;
}

static void
test_utf8_exhaustive(void **state)
{
    unsigned char s[4];
    unsigned a, b, c, d;

    (void)state;
    for (a = 0; a < 256; a++) {
        s[0] = (unsigned char)a;
        assert_int_equal(sp_utf8_len((char *)s, (char *)s + 1),
                         ref_utf8_len(s, 1));
        for (b = 0; b < 256; b++) {
            s[1] = (unsigned char)b;
            assert_int_equal(sp_utf8_len((char *)s, (char *)s + 2),
                             ref_utf8_len(s, 2));
        }
    }
    for (a = 0xe0; a < 0x100; a++) {
        for (b = 0x70; b < 0xd0; b++) {
            for (c = 0x70; c < 0xd0; c++) {
                s[0] = (unsigned char)a;
                s[1] = (unsigned char)b;
                s[2] = (unsigned char)c;
                assert_int_equal(sp_utf8_len((char *)s, (char *)s + 3),
                                 ref_utf8_len(s, 3));
                for (d = 0x7f; d < 0xc1; d += 0x41) {
                    s[3] = (unsigned char)d;
                    assert_int_equal(sp_utf8_len((char *)s, (char *)s + 4),
                                     ref_utf8_len(s, 4));
                }
            }
        }
    }
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t
rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* sp_f64 (fast path included) agrees bit for bit with strtod. */
static void
test_sp_f64_matches_strtod(void **state)
{
    char tok[64];
    int iter;

    (void)state;
    for (iter = 0; iter < 300000; iter++) {
        int n = 0, nd = 1 + (int)(rng() % 20), dot = (int)(rng() % 22), k;
        const char *p = tok;
        double got, want;

        if (rng() % 3 == 0)
            tok[n++] = "+-"[rng() % 2];
        for (k = 0; k < nd; k++) {
            if (k == dot)
                tok[n++] = '.';
            tok[n++] = (char)('0' + (rng() % 4 == 0 ? 0 : rng() % 10));
        }
        if (rng() % 3 == 0)
            n += snprintf(tok + n, sizeof(tok) - (size_t)n, "e%d",
                          (int)(rng() % 80) - 40);
        tok[n] = '\0';
        assert_int_equal(sp_f64(&p, tok + n, &got), 0);
        assert_ptr_equal(p, tok + n);
        want = strtod(tok, NULL);
        if (memcmp(&got, &want, sizeof(got)) != 0)
            fail_msg("sp_f64(\"%s\") = %.17g, strtod = %.17g", tok, got,
                     want);
    }
}

static void
test_sp_numbers(void **state)
{
    static const char *const f_bad[] = { "", ".", "+", "-.", "e5", "+e" };
    const char *p, *s;
    double d;
    int64_t i;
    uint64_t u;
    size_t k;

    (void)state;
    for (k = 0; k < sizeof(f_bad) / sizeof(f_bad[0]); k++) {
        p = f_bad[k];
        assert_int_equal(sp_f64(&p, p + strlen(p), &d), -EINVAL);
        assert_ptr_equal(p, f_bad[k]);
    }
    s = "1e5x";
    p = s;
    assert_int_equal(sp_f64(&p, s + 4, &d), 0);
    assert_true(d == 1e5 && p == s + 3);
    s = "2e+x";
    p = s;
    assert_int_equal(sp_f64(&p, s + 4, &d), 0);
    assert_true(d == 2 && p == s + 1);
    s = "1e309";
    p = s;
    assert_int_equal(sp_f64(&p, s + 5, &d), -ERANGE);
    assert_ptr_equal(p, s);
    s = "1e-400";
    p = s;
    assert_int_equal(sp_f64(&p, s + 6, &d), 0);
    assert_true(d == 0);
    s = "-0";
    p = s;
    assert_int_equal(sp_f64(&p, s + 2, &d), 0);
    assert_true(d == 0 && signbit(d));
    /* Numbers are at most SP_NUM_MAX bytes, whatever their value. */
    {
        char big[SP_NUM_MAX + 2];

        memset(big, '0', sizeof(big));
        big[1] = '.';
        big[SP_NUM_MAX - 1] = '5';
        p = big;
        assert_int_equal(sp_f64(&p, big + SP_NUM_MAX, &d), 0);
        assert_true(d == 0 && p == big + SP_NUM_MAX);
        big[SP_NUM_MAX - 1] = '0';
        big[SP_NUM_MAX] = '5';
        p = big;
        assert_int_equal(sp_f64(&p, big + SP_NUM_MAX + 1, &d), -ERANGE);
        assert_ptr_equal(p, big);
    }
    /* The bound really bounds: "12" with end after "1". */
    s = "12";
    p = s;
    assert_int_equal(sp_f64(&p, s + 1, &d), 0);
    assert_true(d == 1);

    s = "9223372036854775807";
    p = s;
    assert_int_equal(sp_i64(&p, s + strlen(s), &i), 0);
    assert_true(i == INT64_MAX);
    s = "-9223372036854775808";
    p = s;
    assert_int_equal(sp_i64(&p, s + strlen(s), &i), 0);
    assert_true(i == INT64_MIN);
    s = "9223372036854775808";
    p = s;
    assert_int_equal(sp_i64(&p, s + strlen(s), &i), -ERANGE);
    assert_ptr_equal(p, s);
    s = "-";
    p = s;
    assert_int_equal(sp_i64(&p, s + 1, &i), -EINVAL);
    s = "18446744073709551615";
    p = s;
    assert_int_equal(sp_u64(&p, s + strlen(s), &u), 0);
    assert_true(u == UINT64_MAX);
    s = "18446744073709551616";
    p = s;
    assert_int_equal(sp_u64(&p, s + strlen(s), &u), -ERANGE);
    s = "+1";
    p = s;
    assert_int_equal(sp_u64(&p, s + 2, &u), -EINVAL);

    assert_true(sp_casematch("TeMp", 4, "temp"));
    assert_false(sp_casematch("Temp", 4, "tem"));
    assert_false(sp_casematch("Tem", 3, "temp"));
    s = " \t x \t";
    assert_ptr_equal(sp_skip_blanks(s, s + 6), s + 3);
    assert_ptr_equal(sp_rtrim_blanks(s, s + 6), s + 4);
    assert_ptr_equal(sp_rtrim_blanks(s, s + 2), s);
}

/* The human form prints values exactly as "%.15g" would (proto_format.c
 * has a fast path for short decimals; it must never differ). */
static void
test_human_value_matches_printf(void **state)
{
    static const double p10[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7};
    struct proto_reading r;
    char got[512], want[512], num[64];
    unsigned long long x = 0x9e3779b97f4a7c15ULL;
    int i;

    (void)state;
    memset(&r, 0, sizeof(r));
    r.sensor.p = "s";
    r.sensor.len = 1;
    r.quantity.p = "x";
    r.quantity.len = 1;
    for (i = 0; i < 300000; i++) {
        double v;

        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        switch (i % 4) {
        case 0: /* short decimals, like sensors send */
            v = (double)(long long)(x % 2000000ULL) / p10[(x >> 40) % 8] -
                (double)((x >> 20) % 1000);
            break;
        case 1: /* any double in a wide range */
            v = ldexp((double)(x >> 11) / 9007199254740992.0,
                      (int)((x >> 3) % 120) - 60);
            break;
        case 2: /* integers up to and past 1e15 */
            v = (double)(x % 4000000000000000ULL);
            break;
        default: /* negative zero, tiny, huge */
            v = i % 12 == 3 ? -0.0 : (x & 1 ? 1e-5 : 1.5e15) * (double)(x % 7);
            break;
        }
        r.value = v;
        proto_format_human(&r, got, sizeof(got));
        snprintf(num, sizeof(num), "%.15g", v);
        snprintf(want, sizeof(want), "s - x: %s", num);
        if (strcmp(got, want) != 0)
            fail_msg("value %.17g: got '%s', want '%s'", v, got, want);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_cases),
        cmocka_unit_test(test_doc_examples_in_cases),
        cmocka_unit_test(test_parse_in_place),
        cmocka_unit_test(test_prefixes),
        cmocka_unit_test(test_line_length_limit),
        cmocka_unit_test(test_scratch_bounded),
        cmocka_unit_test(test_field_count_limit),
        cmocka_unit_test(test_name_limits),
        cmocka_unit_test(test_timestamp_mult),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_format_truncation),
        cmocka_unit_test(test_format_human_odd),
        cmocka_unit_test(test_human_round_trip),
        cmocka_unit_test(test_canon_quantity_buffer),
        cmocka_unit_test(test_bad_byte_every_offset),
        cmocka_unit_test(test_utf8_exhaustive),
        cmocka_unit_test(test_sp_f64_matches_strtod),
        cmocka_unit_test(test_sp_numbers),
        cmocka_unit_test(test_human_value_matches_printf),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
