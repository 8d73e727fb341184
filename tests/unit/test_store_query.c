/*
 * test_store_query: the read side of store.h (list_series, read_range,
 * read_buckets) on a STORE_F_READONLY handle, against every backend
 * available, as tests/unit/test_store.c does: SQLite always; PostgreSQL
 * again when SENSORNET_TEST_PG holds a libpq conninfo, each test in a
 * schema of its own (tests/integ/test_http_store_pg.py starts a server
 * and sets it).
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "server/store.h"

#include <ftw.h>
#include <libpq-fe.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define S INT64_C(1000000000)
#define T0 INT64_C(1700000000000000000)

struct backend {
    const char *name;
    bool pg;
};

static const struct backend be_sqlite = {"sqlite", false};
static const struct backend be_pg = {"postgresql", true};

struct fx {
    const struct backend *be;
    char dir[PATH_MAX];
    char path[PATH_MAX + 64];
    char *conninfo;
    char schema[64];
    PGconn *pg;
    struct store_conf conf;
    struct store *w;  /* the writer's handle */
    struct store *r;  /* the read-only handle */
};

/* ---- fixture (as test_store.c's) ----------------------------------------- */

static int
pg_prepare(struct fx *f)
{
    static int seq;
    const char *ci = getenv("SENSORNET_TEST_PG");
    char sql[256];
    PGresult *res;
    size_t len;
    bool uri;

    if (ci == NULL)
        return -1;
    f->pg = PQconnectdb(ci);
    if (PQstatus(f->pg) != CONNECTION_OK) {
        print_error("cannot connect to SENSORNET_TEST_PG: %s",
                    PQerrorMessage(f->pg));
        return -1;
    }
    snprintf(f->schema, sizeof(f->schema), "sn_query_%ld_%d", (long)getpid(),
             ++seq);
    snprintf(sql, sizeof(sql), "CREATE SCHEMA %s", f->schema);
    res = PQexec(f->pg, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        print_error("%s: %s", sql, PQerrorMessage(f->pg));
        PQclear(res);
        return -1;
    }
    PQclear(res);
    uri = strncmp(ci, "postgresql://", 13) == 0 ||
          strncmp(ci, "postgres://", 11) == 0;
    len = strlen(ci) + strlen(f->schema) + 64;
    f->conninfo = malloc(len);
    if (f->conninfo == NULL)
        return -1;
    if (uri)
        snprintf(f->conninfo, len, "%s%coptions=-csearch_path%%3D%s", ci,
                 strchr(ci, '?') != NULL ? '&' : '?', f->schema);
    else
        snprintf(f->conninfo, len, "%s options='-csearch_path=%s'", ci,
                 f->schema);
    f->conf.postgres = f->conninfo;
    return 0;
}

static int
setup(void **state)
{
    const struct backend *be = *state;
    const char *tmp = getenv("TMPDIR");
    struct fx *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    f->be = be;
    snprintf(f->dir, sizeof(f->dir), "%s/sn-query-XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/sensornet.db", f->dir);
    f->conf.sqlite_path = f->path;
    f->conf.fsync = STORE_FSYNC_OFF;
    *state = f;
    if (be->pg)
        return pg_prepare(f);
    return 0;
}

static int
rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    int rc = 0;

    store_close(f->r);
    store_close(f->w);
    if (f->pg != NULL) {
        char sql[128];

        snprintf(sql, sizeof(sql), "DROP SCHEMA %s CASCADE", f->schema);
        PQclear(PQexec(f->pg, sql));
        PQfinish(f->pg);
    }
    if (nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        rc = -1;
    free(f->conninfo);
    free(f);
    return rc;
}

static struct store *
open_ok(struct fx *f, unsigned flags)
{
    struct store_conf c = f->conf;
    char err[STORE_ERR_LEN] = "";
    int why = 0;
    struct store *st;

    c.flags = flags;
    st = store_open(&c, err, &why);
    if (st == NULL)
        fail_msg("store_open(%s, flags %u): %d %s", f->be->name, flags, why,
                 err);
    return st;
}

/* Both handles: the writer first (it creates the schema). */
static void
open_both(struct fx *f)
{
    f->w = open_ok(f, 0);
    f->r = open_ok(f, STORE_F_READONLY);
}

static void
put(struct fx *f, const char *sensor, const char *quantity, const char *unit,
    double value, int64_t ts, const char *peer)
{
    struct store_reading r = {
        .sensor = sensor,
        .sensor_len = strlen(sensor),
        .quantity = quantity,
        .quantity_len = strlen(quantity),
        .unit = unit,
        .unit_len = strlen(unit),
        .value = value,
        .ts_ns = ts,
        .recv_ns = ts + 1000,
        .has_ts = true,
        .peer = peer,
    };
    int rc = store_append(f->w, &r);

    if (rc != 0)
        fail_msg("store_append: %d %s", rc, store_errmsg(f->w));
}

static void
begin(struct fx *f)
{
    if (store_begin(f->w) != 0)
        fail_msg("store_begin: %s", store_errmsg(f->w));
}

static void
commit(struct fx *f)
{
    if (store_commit(f->w) != 0)
        fail_msg("store_commit: %s", store_errmsg(f->w));
}

/* ---- collecting rows -------------------------------------------------- */

#define MAX_ROWS 64

struct series_rows {
    size_t n, stop_after;
    char sensor[MAX_ROWS][64], quantity[MAX_ROWS][64], unit[MAX_ROWS][16];
    char peer[MAX_ROWS][64];
    struct store_series s[MAX_ROWS];
};

static int
series_cb(void *arg, const struct store_series *s)
{
    struct series_rows *r = arg;
    size_t i = r->n++;

    assert_true(i < MAX_ROWS);
    snprintf(r->sensor[i], sizeof(r->sensor[i]), "%s", s->sensor);
    snprintf(r->quantity[i], sizeof(r->quantity[i]), "%s", s->quantity);
    snprintf(r->unit[i], sizeof(r->unit[i]), "%s", s->unit);
    snprintf(r->peer[i], sizeof(r->peer[i]), "%s", s->peer);
    r->s[i] = *s;
    return r->stop_after != 0 && r->n >= r->stop_after;
}

struct points {
    size_t n, stop_after;
    int64_t ts[4096];
    double v[4096];
};

static int
point_cb(void *arg, int64_t ts, double value)
{
    struct points *p = arg;

    assert_true(p->n < ARRAY_LEN(p->ts));
    p->ts[p->n] = ts;
    p->v[p->n] = value;
    p->n++;
    return p->stop_after != 0 && p->n >= p->stop_after;
}

struct buckets {
    size_t n;
    struct store_bucket b[4096];
};

static int
bucket_cb(void *arg, const struct store_bucket *b)
{
    struct buckets *bs = arg;

    assert_true(bs->n < ARRAY_LEN(bs->b));
    bs->b[bs->n++] = *b;
    return 0;
}

/* ---- tests ------------------------------------------------------------ */

static void
test_list_series(void **state)
{
    struct fx *f = *state;
    struct series_rows *r = calloc(1, sizeof(*r));
    int n;

    assert_non_null(r);
    open_both(f);
    n = store_list_series(f->r, NULL, NULL, 100, series_cb, r);
    assert_int_equal(n, 0); /* an empty database */

    begin(f);
    put(f, "Sensor2", "humidity", "%", 55.5, T0, "10.0.0.2:4000");
    put(f, "Sensor1", "temperature", "°C", 20.0, T0 + 2 * S, "10.0.0.1:4000");
    put(f, "Sensor1", "temperature", "K", 300.0, T0 + 5 * S,
        "10.0.0.9:4001");
    put(f, "Sensor1", "temperature", "°C", 21.0, T0 + 3 * S, "10.0.0.1:4000");
    put(f, "Sensor1", "humidity", "%", 40, T0 + 1 * S, "10.0.0.1:4000");
    put(f, "a", "co2", "ppm", 415, T0, "[::1]:5000");
    commit(f);

    /* Bytewise order (capitals first), sensor then quantity. */
    n = store_list_series(f->r, NULL, NULL, 100, series_cb, r);
    assert_int_equal(n, 4);
    assert_string_equal(r->sensor[0], "Sensor1");
    assert_string_equal(r->quantity[0], "humidity");
    assert_string_equal(r->sensor[1], "Sensor1");
    assert_string_equal(r->quantity[1], "temperature");
    assert_string_equal(r->sensor[2], "Sensor2");
    assert_string_equal(r->sensor[3], "a");
    /* The newest reading (by ts) gives last value, unit and peer. */
    assert_true(r->s[1].has_last);
    assert_true(r->s[1].last_value == 300.0);
    assert_string_equal(r->unit[1], "K");
    assert_true(r->s[1].last_ts == T0 + 5 * S);
    assert_true(r->s[1].first_ts == T0 + 2 * S);
    assert_int_equal(r->s[1].count, 3);
    assert_string_equal(r->peer[1], "10.0.0.9:4001");
    assert_true(r->s[1].first_seen == T0 + 2 * S + 1000);
    assert_true(r->s[1].last_seen == T0 + 5 * S + 1000);
    assert_string_equal(r->peer[3], "[::1]:5000");

    /* One sensor; one series; a limit; a callback that stops. */
    memset(r, 0, sizeof(*r));
    assert_int_equal(store_list_series(f->r, "Sensor1", NULL, 100, series_cb,
                                       r),
                     2);
    memset(r, 0, sizeof(*r));
    assert_int_equal(store_list_series(f->r, "Sensor1", "temperature", 100,
                                       series_cb, r),
                     1);
    assert_string_equal(r->unit[0], "K");
    memset(r, 0, sizeof(*r));
    assert_int_equal(store_list_series(f->r, "nobody", NULL, 100, series_cb,
                                       r),
                     0);
    memset(r, 0, sizeof(*r));
    assert_int_equal(store_list_series(f->r, NULL, NULL, 3, series_cb, r),
                     3);
    memset(r, 0, sizeof(*r));
    r->stop_after = 2;
    assert_int_equal(store_list_series(f->r, NULL, NULL, 100, series_cb, r),
                     2);
    assert_int_equal(store_list_series(f->r, NULL, NULL, 0, series_cb, r),
                     0);
    /* A quantity needs its sensor. */
    assert_int_equal(store_list_series(f->r, NULL, "co2", 10, series_cb, r),
                     STORE_E_INVAL);
    free(r);
}

static void
test_read_range(void **state)
{
    struct fx *f = *state;
    struct points *p = calloc(1, sizeof(*p));
    struct store_range q = {.sensor = "s", .quantity = "temperature"};
    int i, n;

    assert_non_null(p);
    open_both(f);
    begin(f);
    for (i = 0; i < 100; i++)
        put(f, "s", "temperature", "°C", i + 0.25, T0 + i * S, "p:1");
    put(f, "s", "humidity", "%", 1, T0 + 5 * S, "p:1"); /* not in range */
    put(f, "s2", "temperature", "°C", 1, T0 + 5 * S, "p:1");
    commit(f);

    q.from_ns = T0 + 10 * S;
    q.to_ns = T0 + 20 * S; /* exclusive */
    q.limit = 1000;
    n = store_read_range(f->r, &q, point_cb, p);
    assert_int_equal(n, 10);
    for (i = 0; i < 10; i++) {
        assert_true(p->ts[i] == T0 + (10 + i) * S);
        assert_true(p->v[i] == 10 + i + 0.25);
    }
    /* The limit, and resuming from the first row not returned. */
    memset(p, 0, sizeof(*p));
    q.from_ns = INT64_MIN;
    q.to_ns = INT64_MAX;
    q.limit = 31;
    assert_int_equal(store_read_range(f->r, &q, point_cb, p), 31);
    q.from_ns = p->ts[30];
    memset(p, 0, sizeof(*p));
    assert_int_equal(store_read_range(f->r, &q, point_cb, p), 31);
    assert_true(p->ts[0] == T0 + 30 * S);
    /* A callback that stops early. */
    memset(p, 0, sizeof(*p));
    p->stop_after = 4;
    q.limit = 100;
    assert_int_equal(store_read_range(f->r, &q, point_cb, p), 4);
    /* Empty: no such series, nothing in range, from == to, limit 0. */
    memset(p, 0, sizeof(*p));
    q.quantity = "pressure";
    assert_int_equal(store_read_range(f->r, &q, point_cb, p), 0);
    q.quantity = "temperature";
    q.from_ns = T0 + 1000 * S;
    assert_int_equal(store_read_range(f->r, &q, point_cb, p), 0);
    q.from_ns = q.to_ns = T0;
    assert_int_equal(store_read_range(f->r, &q, point_cb, p), 0);
    q.to_ns = T0 + S;
    q.limit = 0;
    assert_int_equal(store_read_range(f->r, &q, point_cb, p), 0);
    /* Bad arguments. */
    q.limit = 10;
    q.from_ns = T0 + S;
    q.to_ns = T0;
    assert_int_equal(store_read_range(f->r, &q, point_cb, p), STORE_E_INVAL);
    q.to_ns = T0 + 2 * S;
    q.sensor = NULL;
    assert_int_equal(store_read_range(f->r, &q, point_cb, p), STORE_E_INVAL);
    assert_int_equal(store_read_range(f->r, NULL, point_cb, p),
                     STORE_E_INVAL);
    free(p);
}

static void
test_read_buckets(void **state)
{
    struct fx *f = *state;
    struct buckets *bs = calloc(1, sizeof(*bs));
    struct store_range q = {.sensor = "s", .quantity = "t", .limit = 100};
    int64_t base = T0 + 3 * S; /* not on a 10 s boundary of the epoch */
    int i;

    assert_non_null(bs);
    open_both(f);
    begin(f);
    /* 0..29 s after base, value = second; then a gap; then 60..64 s. */
    for (i = 0; i < 30; i++)
        put(f, "s", "t", "", i, base + i * S, "p:1");
    for (i = 60; i < 65; i++)
        put(f, "s", "t", "", i, base + i * S, "p:1");
    commit(f);

    q.from_ns = base;
    q.to_ns = base + 100 * S;
    assert_int_equal(store_read_buckets(f->r, &q, 10 * S, bucket_cb, bs), 5);
    /* Buckets start on multiples of the step since the epoch: the first
     * one holds base..base+6s (7 readings: 0..6). */
    assert_true(bs->b[0].start_ns == T0);
    assert_int_equal(bs->b[0].count, 7);
    assert_true(bs->b[0].min == 0 && bs->b[0].max == 6);
    assert_true(fabs(bs->b[0].avg - 3.0) < 1e-12);
    assert_true(bs->b[1].start_ns == T0 + 10 * S);
    assert_int_equal(bs->b[1].count, 10);
    assert_true(bs->b[1].min == 7 && bs->b[1].max == 16);
    assert_true(fabs(bs->b[1].avg - 11.5) < 1e-12);
    assert_true(bs->b[2].start_ns == T0 + 20 * S);
    assert_true(bs->b[3].start_ns == T0 + 30 * S);
    assert_int_equal(bs->b[3].count, 3); /* 27, 28, 29 */
    /* The gap has no bucket at all. */
    assert_true(bs->b[4].start_ns == T0 + 60 * S);
    assert_int_equal(bs->b[4].count, 5); /* 57..64 is 60..64 */
    /* One bucket for everything; the limit; an empty range. */
    memset(bs, 0, sizeof(*bs));
    assert_int_equal(store_read_buckets(f->r, &q, 3600 * S, bucket_cb, bs),
                     1);
    assert_int_equal(bs->b[0].count, 35);
    memset(bs, 0, sizeof(*bs));
    q.limit = 2;
    assert_int_equal(store_read_buckets(f->r, &q, S, bucket_cb, bs), 2);
    q.limit = 100;
    q.from_ns = base + 40 * S;
    q.to_ns = base + 50 * S;
    assert_int_equal(store_read_buckets(f->r, &q, S, bucket_cb, bs), 0);
    /* Bad steps and ranges. */
    assert_int_equal(store_read_buckets(f->r, &q, 0, bucket_cb, bs),
                     STORE_E_INVAL);
    assert_int_equal(store_read_buckets(f->r, &q, -S, bucket_cb, bs),
                     STORE_E_INVAL);
    q.from_ns = INT64_MIN;
    q.to_ns = INT64_MAX;
    assert_int_equal(store_read_buckets(f->r, &q, S, bucket_cb, bs),
                     STORE_E_INVAL);
    free(bs);
}

static void
test_buckets_before_1970(void **state)
{
    struct fx *f = *state;
    struct buckets *bs = calloc(1, sizeof(*bs));
    struct store_range q = {.sensor = "old", .quantity = "t", .limit = 100};

    assert_non_null(bs);
    open_both(f);
    begin(f);
    put(f, "old", "t", "", 1, -15 * S, "p:1");
    put(f, "old", "t", "", 2, -5 * S, "p:1");
    put(f, "old", "t", "", 3, -1, "p:1");
    put(f, "old", "t", "", 4, 0, "p:1");
    put(f, "old", "t", "", 5, 9 * S, "p:1");
    commit(f);
    q.from_ns = -17 * S;
    q.to_ns = 10 * S;
    /* Floor, not truncation toward zero: -15 s is in [-20 s, -10 s). */
    assert_int_equal(store_read_buckets(f->r, &q, 10 * S, bucket_cb, bs), 3);
    assert_true(bs->b[0].start_ns == -20 * S);
    assert_int_equal(bs->b[0].count, 1);
    assert_true(bs->b[1].start_ns == -10 * S);
    assert_int_equal(bs->b[1].count, 2);
    assert_true(bs->b[1].min == 2 && bs->b[1].max == 3);
    assert_true(bs->b[2].start_ns == 0);
    assert_int_equal(bs->b[2].count, 2);
    free(bs);
}

/* The read handle sees what the writer commits after it was opened (WAL
 * for SQLite), never what is not committed. */
static void
test_read_handle_sees_commits(void **state)
{
    struct fx *f = *state;
    struct series_rows *r = calloc(1, sizeof(*r));
    struct points *p = calloc(1, sizeof(*p));
    struct store_range q = {.sensor = "live", .quantity = "t",
                            .from_ns = INT64_MIN, .to_ns = INT64_MAX,
                            .limit = 100};

    assert_non_null(r);
    assert_non_null(p);
    open_both(f);
    begin(f);
    put(f, "live", "t", "", 1, T0, "p:1");
    commit(f);
    assert_int_equal(store_read_range(f->r, &q, point_cb, p), 1);
    begin(f);
    put(f, "live", "t", "", 2, T0 + S, "p:1");
    /* Not committed yet: not visible, and the query does not block. */
    memset(p, 0, sizeof(*p));
    assert_int_equal(store_read_range(f->r, &q, point_cb, p), 1);
    commit(f);
    memset(p, 0, sizeof(*p));
    assert_int_equal(store_read_range(f->r, &q, point_cb, p), 2);
    assert_int_equal(store_list_series(f->r, "live", "t", 1, series_cb, r),
                     1);
    assert_int_equal(r->s[0].count, 2);
    assert_true(r->s[0].last_value == 2);
    free(r);
    free(p);
}

/* A week of one-second readings of one series aggregates quickly. */
static void
test_buckets_week(void **state)
{
    struct fx *f = *state;
    struct buckets *bs = calloc(1, sizeof(*bs));
    int64_t w0 = INT64_C(1699999200) * S; /* on the hour */
    struct store_range q = {.sensor = "w", .quantity = "t",
                            .from_ns = w0, .to_ns = w0 + 604800 * S,
                            .limit = 10000};
    struct timespec a, b;
    int64_t total = 0;
    double ms;
    size_t i;
    int n;

    assert_non_null(bs);
    open_both(f);
    begin(f);
    for (i = 0; i < 604800; i++)
        put(f, "w", "t", "", (double)(i % 100), w0 + (int64_t)i * S, "p:1");
    commit(f);
    clock_gettime(CLOCK_MONOTONIC, &a);
    n = store_read_buckets(f->r, &q, 3600 * S, bucket_cb, bs);
    clock_gettime(CLOCK_MONOTONIC, &b);
    ms = (double)(b.tv_sec - a.tv_sec) * 1e3 +
         (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    print_message("%s: a week of 1 s data (604800 readings) in %d hourly "
                  "buckets: %.0f ms\n",
                  f->be->name, n, ms);
    assert_int_equal(n, 168);
    for (i = 0; i < (size_t)n; i++)
        total += bs->b[i].count;
    assert_true(total == 604800);
    assert_true(bs->b[0].min == 0 && bs->b[0].max == 99);
    /* Generous: sanitizer builds on a shared 2-core machine. */
    assert_true(ms < 5000);
    free(bs);
}

#define GENERIC(t)                                                             \
    cmocka_unit_test_prestate_setup_teardown(t, setup, teardown, NULL)

int
main(void)
{
    struct CMUnitTest tests[] = {
        GENERIC(test_list_series),
        GENERIC(test_read_range),
        GENERIC(test_read_buckets),
        GENERIC(test_buckets_before_1970),
        GENERIC(test_read_handle_sees_commits),
        GENERIC(test_buckets_week),
    };
    int failed = 0;
    size_t i;

    for (i = 0; i < ARRAY_LEN(tests); i++)
        tests[i].initial_state = (void *)&be_sqlite;
    print_message("group: store query (sqlite)\n");
    failed += cmocka_run_group_tests_name("store query (sqlite)", tests, NULL,
                                          NULL);
    if (getenv("SENSORNET_TEST_PG") != NULL) {
        for (i = 0; i < ARRAY_LEN(tests); i++)
            tests[i].initial_state = (void *)&be_pg;
        print_message("group: store query (postgresql)\n");
        failed += cmocka_run_group_tests_name("store query (postgresql)",
                                              tests, NULL, NULL);
    } else {
        print_message("PostgreSQL query tests not run: SENSORNET_TEST_PG is "
                      "unset (tests/integ/test_http_store_pg.py sets it)\n");
    }
    return failed;
}
