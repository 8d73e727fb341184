/*
 * test_http: the HTTP API's pure parts. http_params.c (query parameters,
 * times, durations: every boundary the docs promise) and the number
 * formatting of http_api.c, plus the presence registry the API reads.
 * The endpoints themselves run against a real server in
 * tests/integ/test_http*.py.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/http_internal.h"
#include "server/http_params.h"
#include "server/presence.h"

#define S INT64_C(1000000000)
#define NOW INT64_C(1700000000000000000) /* 2023-11-14T22:13:20Z */

/* ---- durations ---------------------------------------------------------- */

static void
test_duration(void **state)
{
    static const struct {
        const char *in;
        int rc;
        int64_t ns;
    } cases[] = {
        {"10s", 0, 10 * S},
        {"1ns", 0, 1},
        {"1us", 0, 1000},
        {"1\xc2\xb5s", 0, 1000},
        {"500ms", 0, 500000000},
        {"1m", 0, 60 * S},
        {"1h30m", 0, 5400 * S},
        {"2d", 0, 172800 * S},
        {"1w", 0, 604800 * S},
        {"1h1m1s1ms", 0, 3661 * S + 1000000},
        {"9223372036854775807ns", 0, INT64_MAX},
        {"9223372036854775808ns", -ERANGE, 0},
        {"99999999999999999999s", -ERANGE, 0},
        {"10000000000000w", -ERANGE, 0},
        {"5000000000h5000000000h", -ERANGE, 0},
        {"", -EINVAL, 0},
        {"10", -EINVAL, 0},   /* a unit is required */
        {"s", -EINVAL, 0},
        {"10x", -EINVAL, 0},
        {"1mo", -EINVAL, 0},
        {"-1s", -EINVAL, 0},
        {"+1s", -EINVAL, 0},
        {"1.5s", -EINVAL, 0},
        {"0s", -EINVAL, 0},   /* must be positive */
        {"1s ", -EINVAL, 0},
        {" 1s", -EINVAL, 0},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t v = -42;
        int rc = http_parse_duration(cases[i].in, &v);

        if (rc != cases[i].rc)
            fail_msg("duration \"%s\": rc %d, want %d", cases[i].in, rc,
                     cases[i].rc);
        if (rc == 0 && v != cases[i].ns)
            fail_msg("duration \"%s\": %lld, want %lld", cases[i].in,
                     (long long)v, (long long)cases[i].ns);
        if (rc != 0 && v != -42)
            fail_msg("duration \"%s\": output written on failure",
                     cases[i].in);
    }
    assert_int_equal(http_parse_duration(NULL, &(int64_t){0}), -EINVAL);
}

/* ---- times -------------------------------------------------------------- */

static void
test_time(void **state)
{
    static const struct {
        const char *in;
        int rc;
        int64_t ns;
    } cases[] = {
        {"1700000000000000000", 0, NOW},
        {"0", 0, 0},
        {"-5", 0, -5},                       /* ns before the epoch */
        {"+7", 0, 7},
        {"9223372036854775807", 0, INT64_MAX},
        {"-9223372036854775808", 0, INT64_MIN},
        {"9223372036854775808", -ERANGE, 0},
        {"now", 0, NOW},
        {"now-1h", 0, NOW - 3600 * S},
        {"-5m", 0, NOW - 300 * S},
        {"-1h30m", 0, NOW - 5400 * S},
        {"-7d", 0, NOW - 7 * 86400 * S},
        {"2023-11-14T22:13:20Z", 0, NOW},
        {"2023-11-14t22:13:20z", 0, NOW},
        {"2023-11-14 22:13:20Z", 0, NOW},
        {"2023-11-14T22:13:20.5Z", 0, NOW + 500000000},
        {"2023-11-14T22:13:20.000000001Z", 0, NOW + 1},
        {"2023-11-14T23:13:20+01:00", 0, NOW},
        {"2023-11-14T21:13:20-01:00", 0, NOW},
        {"2023-11-15T03:43:20+05:30", 0, NOW},
        {"1970-01-01T00:00:00Z", 0, 0},
        {"1969-12-31T23:59:59.999999999Z", 0, -1},
        {"2024-02-29T00:00:00Z", 0, INT64_C(1709164800) * S},
        {"2000-02-29T00:00:00Z", 0, INT64_C(951782400) * S},
        {"2016-12-31T23:59:60Z", 0, INT64_C(1483228799) * S}, /* leap s */
        {"2262-04-11T23:47:16.854775807Z", 0, INT64_MAX},
        {"2262-04-11T23:47:16.854775808Z", -ERANGE, 0},
        {"1677-09-21T00:12:43.145224192Z", 0, INT64_MIN},
        {"1600-01-01T00:00:00Z", -ERANGE, 0},
        {"2023-02-29T00:00:00Z", -EINVAL, 0},
        {"1900-02-29T00:00:00Z", -EINVAL, 0},
        {"2023-04-31T00:00:00Z", -EINVAL, 0},
        {"2023-13-01T00:00:00Z", -EINVAL, 0},
        {"2023-00-01T00:00:00Z", -EINVAL, 0},
        {"2023-11-14T24:00:00Z", -EINVAL, 0},
        {"2023-11-14T22:60:00Z", -EINVAL, 0},
        {"2023-11-14T22:13:20", -EINVAL, 0},  /* offset required */
        {"2023-11-14T22:13:20.Z", -EINVAL, 0},
        {"2023-11-14T22:13:20.1234567891Z", -EINVAL, 0},
        {"2023-11-14T22:13:20+1:00", -EINVAL, 0},
        {"2023-11-14T22:13:20+24:00", -EINVAL, 0},
        {"2023-11-14T22:13:20Zjunk", -EINVAL, 0},
        {"2023-11-14", -EINVAL, 0},
        {"2023-1-14T22:13:20Z", -EINVAL, 0},
        {"", -EINVAL, 0},
        {"nowish", -EINVAL, 0},
        {"now-", -EINVAL, 0},
        {"now-5", -EINVAL, 0},               /* a duration needs a unit */
        {"now+1h", -EINVAL, 0},
        {"-", -EINVAL, 0},
        {"1e9", -EINVAL, 0},
        {"12 ", -EINVAL, 0},
        {"0x10", -EINVAL, 0},
        {"yesterday", -EINVAL, 0},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t v = -42;
        int rc = http_parse_time(cases[i].in, NOW, &v);

        if (rc != cases[i].rc)
            fail_msg("time \"%s\": rc %d, want %d", cases[i].in, rc,
                     cases[i].rc);
        if (rc == 0 && v != cases[i].ns)
            fail_msg("time \"%s\": %lld, want %lld", cases[i].in,
                     (long long)v, (long long)cases[i].ns);
    }
    /* Relative times that would pass the int64 range. */
    assert_int_equal(http_parse_time("-1w", INT64_MIN + 5, &(int64_t){0}),
                     -ERANGE);
}

static void
test_format_time(void **state)
{
    static const struct {
        int64_t ns;
        const char *out;
    } cases[] = {
        {NOW, "2023-11-14T22:13:20.000000000Z"},
        {0, "1970-01-01T00:00:00.000000000Z"},
        {-1, "1969-12-31T23:59:59.999999999Z"},
        {INT64_MAX, "2262-04-11T23:47:16.854775807Z"},
        {INT64_MIN, "1677-09-21T00:12:43.145224192Z"},
        {INT64_C(951782400) * S + 1, "2000-02-29T00:00:00.000000001Z"},
    };
    char buf[64];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t back = 0;
        size_t n = http_format_time(cases[i].ns, buf, sizeof(buf));

        assert_int_equal(n, strlen(cases[i].out));
        assert_string_equal(buf, cases[i].out);
        /* Every time we print, we read back. */
        assert_int_equal(http_parse_time(buf, 0, &back), 0);
        assert_true(back == cases[i].ns);
    }
    /* A short buffer is cut, still terminated. */
    assert_int_equal(http_format_time(NOW, buf, 8), 7);
    assert_string_equal(buf, "2023-11");
}

/* ---- parameters --------------------------------------------------------- */

/* Set the "k=v&k=v" pairs of qs (no escapes) into hp; returns the first
 * failure's rc, with its message in err. */
static int
set_all(struct http_params *hp, const char *qs, char *err, size_t len)
{
    char buf[512], *p = buf;
    int rc = 0;

    snprintf(buf, sizeof(buf), "%s", qs);
    while (rc == 0 && *p != '\0') {
        char *amp = strchr(p, '&'), *eq;

        if (amp != NULL)
            *amp = '\0';
        eq = strchr(p, '=');
        if (eq != NULL)
            *eq++ = '\0';
        rc = http_params_set(hp, p, eq, NOW, err, len);
        if (amp == NULL)
            break;
        p = amp + 1;
    }
    if (rc == 0)
        rc = http_params_finish(hp, NOW, err, len);
    return rc;
}

#define RANGE (HP_SENSOR | HP_QUANTITY | HP_FROM | HP_TO | HP_LIMIT | HP_FORMAT)
#define SERIES (HP_SENSOR | HP_QUANTITY | HP_FROM | HP_TO | HP_STEP)

static void
expect_err(unsigned allowed, bool lenient, const char *qs,
           const char *msg_part)
{
    struct http_params hp;
    char err[HTTP_ERR_LEN] = "";

    http_params_init(&hp, allowed, lenient);
    if (set_all(&hp, qs, err, sizeof(err)) != -EINVAL)
        fail_msg("\"%s\" accepted", qs);
    if (strstr(err, msg_part) == NULL)
        fail_msg("\"%s\": message \"%s\" lacks \"%s\"", qs, err, msg_part);
}

static void
expect_ok(unsigned allowed, bool lenient, const char *qs,
          struct http_params *hp)
{
    char err[HTTP_ERR_LEN] = "";

    http_params_init(hp, allowed, lenient);
    if (set_all(hp, qs, err, sizeof(err)) != 0)
        fail_msg("\"%s\" refused: %s", qs, err);
}

static void
test_params_readings(void **state)
{
    struct http_params hp;

    (void)state;
    expect_ok(RANGE, false, "sensor=Sensor1&quantity=Temperatura", &hp);
    assert_string_equal(hp.sensor, "Sensor1");
    assert_string_equal(hp.quantity, "temperature"); /* canonical */
    assert_true(hp.from_ns == INT64_MIN && hp.to_ns == INT64_MAX);
    assert_int_equal(hp.limit, HTTP_DEFAULT_LIMIT);
    assert_false(hp.csv);

    expect_ok(RANGE, false,
              "sensor=s&from=2023-11-14T22:13:19Z&to=now&limit=5&format=csv",
              &hp);
    assert_true(hp.from_ns == NOW - S && hp.to_ns == NOW);
    assert_int_equal(hp.limit, 5);
    assert_true(hp.csv);
    /* An empty range is refused. */
    expect_err(RANGE, false, "sensor=s&from=now&to=now", "before");
    expect_err(RANGE, false, "sensor=s&from=-1m&to=-2m", "before");

    expect_ok(RANGE, false, "sensor=s&limit=20000", &hp);
    assert_int_equal(hp.limit, HTTP_MAX_ROWS);
    expect_ok(RANGE, false, "sensor=s&limit=999999999999999999999999", &hp);
    assert_int_equal(hp.limit, HTTP_MAX_ROWS);
    expect_ok(RANGE, false, "sensor=s&quantity=wind%20speed", &hp);
    expect_ok(RANGE, false, "sensor=s&quantity=Wind", &hp);
    assert_string_equal(hp.quantity, "wind"); /* unknown: lower-cased */

    expect_err(RANGE, false, "quantity=temperature", "missing parameter");
    expect_err(RANGE, false, "sensor=", "sensor:");
    expect_err(RANGE, false, "sensor=a&sensor=b", "twice");
    expect_err(RANGE, false, "sensor=s&limit=0", "limit");
    expect_err(RANGE, false, "sensor=s&limit=-1", "limit");
    expect_err(RANGE, false, "sensor=s&limit=1x", "limit");
    expect_err(RANGE, false, "sensor=s&limit=", "limit");
    expect_err(RANGE, false, "sensor=s&format=xml", "format");
    expect_err(RANGE, false, "sensor=s&from=yesterday", "not a time");
    expect_err(RANGE, false, "sensor=s&to=1e9", "not a time");
    expect_err(RANGE, false, "sensor=s&step=1s", "unknown parameter 'step'");
    expect_err(RANGE, false, "sensor=s&frm=1", "unknown parameter 'frm'");
    expect_err(RANGE, false, "sensor=s&db=x", "unknown parameter");
    expect_err(RANGE, false, "sensor", "sensor:"); /* no '=': empty */
}

static void
test_params_names(void **state)
{
    struct http_params hp;
    char err[HTTP_ERR_LEN];
    char long_name[PROTO_MAX_NAME + 2];

    (void)state;
    memset(long_name, 'x', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    http_params_init(&hp, RANGE, false);
    assert_int_equal(http_params_set(&hp, "sensor", long_name, NOW, err,
                                     sizeof(err)),
                     -EINVAL);
    long_name[PROTO_MAX_NAME] = '\0'; /* exactly the limit */
    http_params_init(&hp, RANGE, false);
    assert_int_equal(http_params_set(&hp, "sensor", long_name, NOW, err,
                                     sizeof(err)),
                     0);
    assert_int_equal(strlen(hp.sensor), PROTO_MAX_NAME);
    http_params_init(&hp, RANGE, false);
    assert_int_equal(http_params_set(&hp, "sensor", "bad\x01", NOW, err,
                                     sizeof(err)),
                     -EINVAL);
    http_params_init(&hp, RANGE, false);
    assert_int_equal(http_params_set(&hp, "sensor", "bad\xff", NOW, err,
                                     sizeof(err)),
                     -EINVAL);
    http_params_init(&hp, RANGE, false);
    assert_int_equal(http_params_set(&hp, "sensor", "s\xc3\xa3o paulo", NOW,
                                     err, sizeof(err)),
                     0);
    http_params_init(&hp, RANGE, false);
    assert_int_equal(http_params_set(&hp, "quantity", "PRESS\xc3\x83O", NOW,
                                     err, sizeof(err)),
                     0);
    assert_string_equal(hp.quantity, "pressure");
    /* A NULL key (cannot come from libmicrohttpd) is just unknown. */
    http_params_init(&hp, RANGE, false);
    assert_int_equal(http_params_set(&hp, NULL, "x", NOW, err, sizeof(err)),
                     -EINVAL);
}

static void
test_params_series(void **state)
{
    struct http_params hp;

    (void)state;
    /* Defaults: the last hour, a round step for about 300 buckets. */
    expect_ok(SERIES, false, "sensor=s", &hp);
    assert_true(hp.to_ns == NOW && hp.from_ns == NOW - 3600 * S);
    assert_true(hp.step_ns == 15 * S);
    expect_ok(SERIES, false, "sensor=s&from=-5m", &hp);
    assert_true(hp.step_ns == 1 * S);
    expect_ok(SERIES, false, "sensor=s&from=-7d", &hp);
    assert_true(hp.step_ns == 3600 * S);
    expect_ok(SERIES, false, "sensor=s&from=-24h&step=10m", &hp);
    assert_true(hp.step_ns == 600 * S);
    expect_ok(SERIES, false, "sensor=s&from=-3650d", &hp); /* weeks */
    assert_true(hp.step_ns % (604800 * S) == 0);
    assert_true((hp.to_ns - hp.from_ns) / hp.step_ns <= HTTP_AUTO_BUCKETS);
    /* 10000 buckets at most. */
    expect_ok(SERIES, false, "sensor=s&from=-9990s&step=1s", &hp);
    expect_err(SERIES, false, "sensor=s&from=-1d&step=1s", "buckets");
    expect_err(SERIES, false, "sensor=s&step=10", "not a duration");
    expect_err(SERIES, false, "sensor=s&step=0s", "not a duration");
    expect_err(SERIES, false, "sensor=s&step=-1s", "not a duration");
    expect_err(SERIES, false, "sensor=s&limit=1", "unknown parameter");
    expect_err(SERIES, false,
               "sensor=s&from=-9223372036854775808&to=9223372036854775807",
               "too large");
}

static void
test_params_write(void **state)
{
    struct http_params hp;
    unsigned w = HP_PRECISION | HP_IGNORED;
    static const struct {
        const char *p;
        int64_t mult;
    } prec[] = {{"ns", 1},         {"n", 1},
                {"u", 1000},       {"us", 1000},
                {"ms", 1000000},   {"s", S},
                {"m", 60 * S},     {"h", 3600 * S}};
    char qs[64];
    size_t i;

    (void)state;
    expect_ok(w, true, "db=telegraf&rp=autogen&u=x&p=y&consistency=one",
              &hp);
    assert_true(hp.ts_mult == 1);
    for (i = 0; i < sizeof(prec) / sizeof(prec[0]); i++) {
        snprintf(qs, sizeof(qs), "db=x&precision=%s", prec[i].p);
        expect_ok(w, true, qs, &hp);
        assert_true(hp.ts_mult == prec[i].mult);
    }
    /* Unknown parameters are ignored on /write, as InfluxDB does. */
    expect_ok(w, true, "db=x&org=y&bucket=z", &hp);
    expect_err(w, true, "precision=d", "precision");
    expect_err(w, true, "precision=", "precision");
    expect_err(w, true, "precision=s&precision=ms", "twice");
    /* ...but /write never takes the query parameters. */
    expect_ok(w, true, "sensor=x", &hp);
    assert_int_equal(hp.seen, 0);
}

/* ---- numbers ------------------------------------------------------------ */

static void
test_fmt_double(void **state)
{
    static const struct {
        double v;
        const char *out;
    } cases[] = {
        {25.34, "25.34"},
        {0.1 + 0.2, "0.30000000000000004"},
        {-3.5, "-3.5"},
        {0, "0"},
        {1e300, "1e+300"},
        {1.0 / 3, "0.3333333333333333"},
        {123456789012345678.0, "1.2345678901234568e+17"},
        {5e-324, "4.94065645841247e-324"}, /* reads back as 5e-324 */
    };
    char buf[40];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int n = http_fmt_double(cases[i].v, buf, sizeof(buf));

        assert_true(n > 0);
        assert_string_equal(buf, cases[i].out);
    }
    assert_int_equal(http_fmt_double(1.0 / 3, buf, 5), -1);
}

/* ---- presence ----------------------------------------------------------- */

static void
test_presence(void **state)
{
    struct presence *p = presence_new(2);
    struct presence_entry *a, *b, *c;

    (void)state;
    assert_non_null(p);
    assert_int_equal(presence_count(p, "s1"), 0);
    a = presence_switch(p, NULL, "s1", 2);
    assert_non_null(a);
    assert_true(presence_is(a, "s1", 2));
    assert_false(presence_is(a, "s10", 3));
    assert_false(presence_is(NULL, "s1", 2));
    b = presence_switch(p, NULL, "s1", 2); /* a second connection */
    assert_ptr_equal(a, b);
    assert_int_equal(presence_count(p, "s1"), 2);
    assert_int_equal(presence_size(p), 1);
    /* One of them moves on to s2. */
    b = presence_switch(p, b, "s2", 2);
    assert_int_equal(presence_count(p, "s1"), 1);
    assert_int_equal(presence_count(p, "s2"), 1);
    /* Full (2 sensors): a third is not shown, the old one is dropped. */
    c = presence_switch(p, NULL, "s3", 2);
    assert_null(c);
    assert_int_equal(presence_count(p, "s3"), 0);
    c = presence_switch(p, b, "s3", 2); /* s2 freed: room for s3 */
    assert_non_null(c);
    assert_int_equal(presence_count(p, "s2"), 0);
    assert_int_equal(presence_size(p), 2);
    presence_release(p, a);
    presence_release(p, c);
    presence_release(p, NULL);
    assert_int_equal(presence_size(p), 0);
    assert_int_equal(presence_count(p, "s1"), 0);
    /* NULL registries (a worker without the HTTP API) are no-ops. */
    assert_null(presence_switch(NULL, NULL, "x", 1));
    assert_int_equal(presence_count(NULL, "x"), 0);
    assert_int_equal(presence_size(NULL), 0);
    presence_release(NULL, NULL);
    /* Entries still held are freed with the registry. */
    a = presence_switch(p, NULL, "left", 4);
    assert_non_null(a);
    presence_free(p);
    presence_free(NULL);
}

struct churn {
    struct presence *p;
    int id;
};

static void *
churn_main(void *arg)
{
    struct churn *ch = arg;
    struct presence_entry *e = NULL;
    char name[16];
    int i;

    for (i = 0; i < 20000; i++) {
        int n = snprintf(name, sizeof(name), "s%d", (i + ch->id) % 7);

        if (!presence_is(e, name, (size_t)n))
            e = presence_switch(ch->p, e, name, (size_t)n);
    }
    presence_release(ch->p, e);
    return NULL;
}

static void
test_presence_threads(void **state)
{
    struct churn ch[4];
    pthread_t t[4];
    int i;

    (void)state;
    ch[0].p = presence_new(0);
    assert_non_null(ch[0].p);
    for (i = 0; i < 4; i++) {
        ch[i].p = ch[0].p;
        ch[i].id = i;
        assert_int_equal(pthread_create(&t[i], NULL, churn_main, &ch[i]), 0);
    }
    for (i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    /* Every reference was given back: nothing is left. */
    assert_int_equal(presence_size(ch[0].p), 0);
    presence_free(ch[0].p);
}

/* ---- the embedded dashboard --------------------------------------------- */

static void
test_assets(void **state)
{
    bool index = false, js = false, css = false;
    size_t i;

    (void)state;
    assert_true(http_n_assets >= 3);
    for (i = 0; i < http_n_assets; i++) {
        const struct http_asset *a = &http_assets[i];

        assert_true(a->path[0] == '/');
        assert_true(a->len > 0);
        assert_int_equal(a->data[a->len], 0); /* NUL after the bytes */
        if (strcmp(a->path, "/index.html") == 0) {
            index = true;
            assert_string_equal(a->type, "text/html; charset=utf-8");
            /* Served without any other host: no CDN, no remote font. */
            assert_null(strstr((const char *)a->data, "http://"));
            assert_null(strstr((const char *)a->data, "https://"));
        }
        if (strcmp(a->path, "/app.js") == 0)
            js = true;
        if (strcmp(a->path, "/style.css") == 0)
            css = true;
    }
    assert_true(index && js && css);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_format_time),
        cmocka_unit_test(test_params_readings),
        cmocka_unit_test(test_params_names),
        cmocka_unit_test(test_params_series),
        cmocka_unit_test(test_params_write),
        cmocka_unit_test(test_fmt_double),
        cmocka_unit_test(test_presence),
        cmocka_unit_test(test_presence_threads),
        cmocka_unit_test(test_assets),
    };

    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
