/*
 * test_graphite: Graphite plaintext in lib/proto (graphite.c), and the
 * boundaries between it, the text form and line protocol.
 *
 * Most cases live in the golden table tests/unit/data/graphite.cases (its
 * format is described at its top, the same as proto.cases), read relative
 * to the repository root (the cwd when tests run). Every line of a
 * ```graphite fence in docs/protocol.md must be an input there.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "proto/proto.h"
#include "util/strparse.h"

#define CASES_PATH "tests/unit/data/graphite.cases"
#define DOC_PATH "docs/protocol.md"

static struct proto_line g_line, g_line2;

/* ---- the golden table ---------------------------------------------------- */

/* "@line [prefix=STR] [parts=N]" or "@graphite ...". */
static void
parse_mode(const char *line, size_t len, unsigned lineno, bool *only,
           char *prefix, size_t prefix_cap, struct proto_graphite_map *map)
{
    const char *p = line + 1, *end = line + len;
    const char *w = p;

    while (p < end && *p != ' ')
        p++;
    if ((size_t)(p - w) == 4 && memcmp(w, "line", 4) == 0)
        *only = false;
    else if ((size_t)(p - w) == 8 && memcmp(w, "graphite", 8) == 0)
        *only = true;
    else
        fail_msg("%s:%u: unknown mode", CASES_PATH, lineno);
    prefix[0] = '\0';
    map->prefix = NULL;
    map->sensor_parts = 0;
    while (p < end) {
        p++;
        w = p;
        while (p < end && *p != ' ')
            p++;
        if ((size_t)(p - w) > 7 && memcmp(w, "prefix=", 7) == 0) {
            size_t n = (size_t)(p - w) - 7;

            assert_true(n < prefix_cap);
            memcpy(prefix, w + 7, n);
            prefix[n] = '\0';
            map->prefix = prefix;
        } else if ((size_t)(p - w) > 6 && memcmp(w, "parts=", 6) == 0) {
            const char *q = w + 6;
            uint64_t v;

            if (sp_u64(&q, p, &v) != 0 || q != p || v > 1000)
                fail_msg("%s:%u: bad parts", CASES_PATH, lineno);
            map->sensor_parts = (unsigned)v;
        } else {
            fail_msg("%s:%u: bad mode argument", CASES_PATH, lineno);
        }
    }
}

static void
test_golden_cases(void **state)
{
    struct gd_case_file cf = { 0 };
    struct proto_graphite_map map = { 0 };
    struct proto_opts opts = { .ts_mult = 0, .graphite = &map };
    struct sbuf got = { 0 };
    unsigned n_cases = 0, n_fail = 0;
    bool only = false;
    char prefix[64] = "";
    char *line;
    size_t len;

    (void)state;
    cf.buf = gd_read_file(CASES_PATH, &cf.len);
    while ((line = gd_next_line(&cf, &len)) != NULL) {
        char *exp, *raw = line, *copy;
        size_t exp_len, raw_len = len;
        long in_len;
        unsigned in_lineno;
        int rc;

        if (len == 0 || line[0] == '#')
            continue;
        if (line[0] == '@') {
            parse_mode(line, len, cf.lineno, &only, prefix, sizeof(prefix),
                       &map);
            continue;
        }
        in_lineno = cf.lineno;
        if (line[0] == '~') {
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
        copy = gd_exact_copy(line, (size_t)in_len);
        rc = only ? proto_parse_graphite(copy, (size_t)in_len, &opts,
                                         &g_line)
                  : proto_parse_line(copy, (size_t)in_len, &opts, &g_line);
        got.len = 0;
        sb_puts(&got, "");
        gd_render_parse(&got, rc, &g_line);
        n_cases++;
        if (got.len != exp_len || memcmp(got.p, exp, exp_len) != 0) {
            n_fail++;
            print_error("%s:%u: mismatch\n  input:    %.*s\n"
                        "  expected: %.*s\n  got:      %s\n",
                        CASES_PATH, in_lineno, (int)raw_len, raw,
                        (int)exp_len, exp, got.p);
        }
        free(copy);
        if (line != raw)
            free(line);
    }
    print_message("graphite.cases: %u cases, %u failed\n", n_cases, n_fail);
    free(got.p);
    free(cf.buf);
    assert_true(n_cases > 60);
    assert_int_equal(n_fail, 0);
}

/* Every line in a ```graphite fence of docs/protocol.md is a case input. */
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
            in_fence = !in_fence && len == 11 &&
                       memcmp(p, "```graphite", 11) == 0;
        } else if (in_fence && len > 0) {
            char *needle = malloc(len + 3);

            assert_non_null(needle);
            needle[0] = '\n';
            memcpy(needle + 1, p, len);
            needle[len + 1] = '\n';
            needle[len + 2] = '\0';
            if (strstr(cases, needle) == NULL) {
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
    print_message("docs/protocol.md: %zu Graphite examples checked\n", n);
    assert_true(n >= 8);
    assert_int_equal(missing, 0);
}

/* ---- properties the table cannot show ------------------------------------ */

static bool
points_into(struct proto_str s, const char *p, size_t len)
{
    return s.p >= p && s.p + s.len <= p + len;
}

static void
test_parse_in_place(void **state)
{
    static const char lower[] = "home.livingroom.cpu_idle 1 2";
    static const char upper[] = "home.livingroom.CPU_Idle 1 2";
    static const char known[] = "home.livingroom.Temp 1 2";
    char *c;

    (void)state;
    c = gd_exact_copy(lower, strlen(lower));
    assert_int_equal(proto_parse_line(c, strlen(lower), NULL, &g_line),
                     PROTO_OK);
    assert_int_equal(g_line.fmt, PROTO_FMT_GRAPHITE);
    assert_true(points_into(g_line.r[0].sensor, c, strlen(lower)));
    assert_true(points_into(g_line.r[0].quantity, c, strlen(lower)));
    assert_int_equal(g_line.scratch_used, 0);
    free(c);

    c = gd_exact_copy(upper, strlen(upper));
    assert_int_equal(proto_parse_line(c, strlen(upper), NULL, &g_line),
                     PROTO_OK);
    assert_true(points_into(g_line.r[0].sensor, c, strlen(upper)));
    assert_int_equal(g_line.scratch_used, 8);
    assert_memory_equal(g_line.r[0].quantity.p, "cpu_idle", 8);
    assert_ptr_equal(g_line.r[0].quantity.p, g_line.scratch);
    free(c);

    /* Known quantities come from the static table, like the unit. */
    c = gd_exact_copy(known, strlen(known));
    assert_int_equal(proto_parse_line(c, strlen(known), NULL, &g_line),
                     PROTO_OK);
    assert_int_equal(g_line.scratch_used, 0);
    assert_false(points_into(g_line.r[0].quantity, c, strlen(known)));
    assert_memory_equal(g_line.r[0].unit.p, "\xc2\xb0" "C", 3);
    free(c);
}

static void
test_name_limits(void **state)
{
    char n128[129], n129[130];
    struct sbuf b = { 0 };
    struct proto_graphite_map map = { .prefix = "p.", .sensor_parts = 1 };
    struct proto_opts o = { .graphite = &map };

    (void)state;
    memset(n128, 'a', 128);
    n128[128] = '\0';
    memset(n129, 'a', 129);
    n129[129] = '\0';

#define EXPECT(want, opts, ...)                                               \
    do {                                                                      \
        b.len = 0;                                                            \
        sb_printf(&b, __VA_ARGS__);                                           \
        assert_int_equal(proto_parse_line(b.p, b.len, opts, &g_line), want); \
    } while (0)

    EXPECT(PROTO_OK, NULL, "%s.q 1 2", n128);
    EXPECT(PROTO_E_NAME, NULL, "%s.q 1 2", n129);
    EXPECT(PROTO_OK, NULL, "s.%s 1 2", n128);
    EXPECT(PROTO_E_NAME, NULL, "s.%s 1 2", n129);
    /* Dots count: "a.<126 bytes>" is 128. */
    EXPECT(PROTO_OK, NULL, "a.%.126s.q 1 2", n128);
    EXPECT(PROTO_E_NAME, NULL, "a.%.127s.q 1 2", n128);
    /* The limits apply after the prefix is stripped. */
    EXPECT(PROTO_OK, &o, "p.%s.q 1 2", n128);
    assert_int_equal(g_line.r[0].sensor.len, 128);
    EXPECT(PROTO_E_NAME, &o, "p.%s.q 1 2", n129);
    EXPECT(PROTO_OK, &o, "p.s.%s 1 2", n128);
    EXPECT(PROTO_OK, &o, "p.s.%.60s.%.67s 1 2", n128, n128);
    assert_int_equal(g_line.r[0].quantity.len, 128);
    EXPECT(PROTO_E_NAME, &o, "p.s.%.60s.%.68s 1 2", n128, n128);
#undef EXPECT
    free(b.p);
}

/* NULL opts, NULL map, NULL or empty prefix, parts 0: all the default. */
static void
test_default_map(void **state)
{
    static const char line[] = "a.b.c 1 2";
    struct proto_graphite_map m0 = { 0 }, m1 = { .prefix = "" };
    struct proto_opts o0 = { 0 }, o1 = { .graphite = &m0 },
                      o2 = { .graphite = &m1 };
    const struct proto_opts *all[] = { NULL, &o0, &o1, &o2 };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        assert_int_equal(proto_parse_line(line, strlen(line), all[i],
                                          &g_line),
                         PROTO_OK);
        assert_int_equal(g_line.r[0].sensor.len, 3);
        assert_memory_equal(g_line.r[0].sensor.p, "a.b", 3);
        assert_int_equal(g_line.r[0].quantity.len, 1);
        assert_int_equal(g_line.r[0].quantity.p[0], 'c');
        assert_true(g_line.has_ts && g_line.ts_ns == 2000000000);
    }
    /* ts_mult is line protocol's: Graphite is always in seconds. */
    o1.ts_mult = 1000;
    assert_int_equal(proto_parse_line(line, strlen(line), &o1, &g_line),
                     PROTO_OK);
    assert_true(g_line.ts_ns == 2000000000);
}

/* Every prefix of a line parses without reading past its length. */
static void
test_prefixes(void **state)
{
    static const char *const lines[] = {
        "collectd.myhost.cpu-0.cpu-idle 98.5 1718100942.123",
        "x.y -1.5e-3 -1",
    };
    struct proto_graphite_map map = { .prefix = "collectd.",
                                      .sensor_parts = 1 };
    struct proto_opts o = { .graphite = &map };
    size_t i, n;

    (void)state;
    for (i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        size_t len = strlen(lines[i]);

        for (n = 0; n <= len; n++) {
            char *c = gd_exact_copy(lines[i], n);

            (void)proto_parse_line(c, n, &o, &g_line);
            (void)proto_parse_graphite(c, n, NULL, &g_line);
            free(c);
        }
    }
}

static uint64_t rng_state = 0x2545f4914f6cdd1dULL;

static uint64_t
rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/*
 * The formats are disjoint: on random lines built from the bytes that
 * matter to any of them, a line proto_parse_graphite accepts is Graphite
 * for proto_parse_line too (the text form and line protocol refused it),
 * and a line proto_parse_line takes as text or line protocol is refused by
 * proto_parse_graphite.
 */
static void
test_disjoint(void **state)
{
    static const char *const atoms[] = {
        "-", ".", ":", "=", ",", "\"", "\\", "1", "25", "2.5", "-1", "1e3",
        "nan", "x", "temp", "s1", "a.b", "\302\260C", "1718100942", "i",
        "u", "t", ";", "v=1", "x.y", "%",
    };
    static const char *const seps[] = { " ", " ", " ", " ", "  ", "\t",
                                        " - ", ": " };
    const size_t n_atoms = sizeof(atoms) / sizeof(atoms[0]);
    const size_t n_seps = sizeof(seps) / sizeof(seps[0]);
    unsigned n_graphite = 0, n_other = 0;
    char line[160];
    int iter;

    (void)state;
    for (iter = 0; iter < 300000; iter++) {
        size_t len = 0, w, k, n_words = 1 + rng() % 5;
        int rc, rc_g;

        bool shaped = iter % 2 == 0; /* Graphite's shape, give or take */

        if (shaped)
            n_words = 3;
        for (w = 0; w < n_words; w++) {
            size_t n = shaped && w > 0 ? 1 : 1 + rng() % 3;

            if (w > 0) {
                const char *sp = shaped ? " " : seps[rng() % n_seps];

                memcpy(line + len, sp, strlen(sp));
                len += strlen(sp);
            }
            for (k = 0; k < n; k++) {
                const char *a = shaped && w > 0 && rng() % 4 != 0
                                    ? atoms[7 + rng() % 6]
                                    : atoms[rng() % n_atoms];

                memcpy(line + len, a, strlen(a));
                len += strlen(a);
            }
        }
        rc = proto_parse_line(line, len, NULL, &g_line);
        rc_g = proto_parse_graphite(line, len, NULL, &g_line2);
        if (rc_g == PROTO_OK) {
            n_graphite++;
            if (rc != PROTO_OK || g_line.fmt != PROTO_FMT_GRAPHITE)
                fail_msg("Graphite line taken as another format: %.*s",
                         (int)len, line);
            assert_int_equal(g_line.r[0].sensor.len,
                             g_line2.r[0].sensor.len);
            assert_true(g_line.r[0].value == g_line2.r[0].value);
        } else if (rc == PROTO_OK) {
            n_other++;
            if (g_line.fmt == PROTO_FMT_GRAPHITE)
                fail_msg("Graphite by parse_line, not alone: %.*s",
                         (int)len, line);
        }
    }
    print_message("disjoint: %u Graphite, %u text or line protocol\n",
                  n_graphite, n_other);
    assert_true(n_graphite > 100 && n_other > 100);
}

static void
test_canon_unit(void **state)
{
    struct proto_str u;

    (void)state;
    u = proto_canon_unit("Temp", 4, "C", 1);
    assert_int_equal(u.len, 3);
    assert_memory_equal(u.p, "\xc2\xb0" "C", 3);
    u = proto_canon_unit("temperature", 11, "", 0);
    assert_memory_equal(u.p, "\xc2\xb0" "C", 3);
    u = proto_canon_unit("temperature", 11, "K", 1);
    assert_int_equal(u.len, 1);
    assert_int_equal(u.p[0], 'K');
    u = proto_canon_unit("humidity", 8, "%RH", 3);
    assert_int_equal(u.len, 1);
    assert_int_equal(u.p[0], '%');
    u = proto_canon_unit("wind", 4, "m/s", 3);
    assert_int_equal(u.len, 3);
    u = proto_canon_unit("wind", 4, "", 0);
    assert_int_equal(u.len, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_cases),
        cmocka_unit_test(test_doc_examples_in_cases),
        cmocka_unit_test(test_parse_in_place),
        cmocka_unit_test(test_name_limits),
        cmocka_unit_test(test_default_map),
        cmocka_unit_test(test_prefixes),
        cmocka_unit_test(test_disjoint),
        cmocka_unit_test(test_canon_unit),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
