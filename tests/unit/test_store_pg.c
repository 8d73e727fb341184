/*
 * test_store_pg: what only the PostgreSQL backend does (test_store.c is the
 * backend-generic suite): reconnecting after the server went away, open
 * waiting for a server, concurrent collectors on one database, migration
 * and version checks, read-only opens, the batch cap, retention.
 *
 * Environment (tests/integ/test_store_pg.py sets it up with tests/pg.py):
 *   SENSORNET_TEST_PG        libpq conninfo of a server we may use freely;
 *                            each test makes its own database there
 *   SENSORNET_TEST_PG_STOP   shell command: fast shutdown of that server
 *   SENSORNET_TEST_PG_KILL   shell command: immediate shutdown (a crash)
 *   SENSORNET_TEST_PG_START  shell command: start it again
 *   SENSORNET_TEST_FILTER    run only the tests matching this pattern
 * Without SENSORNET_TEST_PG only the tests that need no server run.
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "server/store.h"
#include "util/clock.h"

/* store_pg.c: how long open() waits for the server. */
extern int store_pg_open_wait_ms;

#define DEADLINE_MS 60000

/* conninfo of this test's own database (made by need_db). */
static char db_conninfo[1024];

static const char *
env(const char *name)
{
    const char *v = getenv(name);

    return v != NULL && *v != '\0' ? v : NULL;
}

static void
sleep_ms(int ms)
{
    nanosleep(&(struct timespec){.tv_sec = ms / 1000,
                                 .tv_nsec = (ms % 1000) * 1000000L},
              NULL);
}

/* conninfo with dbname replaced, as key='value' pairs. */
static void
with_dbname(char *out, size_t out_size, const char *conninfo,
            const char *dbname)
{
    PQconninfoOption *opts, *o;
    char *err = NULL;
    size_t n = 0;
    const char *v, *s;

    opts = PQconninfoParse(conninfo, &err);
    assert_non_null(opts);
    out[0] = '\0';
    for (o = opts; o->keyword != NULL; o++) {
        v = strcmp(o->keyword, "dbname") == 0 ? dbname : o->val;
        if (v == NULL)
            continue;
        n += (size_t)snprintf(out + n, out_size - n, "%s%s='", n ? " " : "",
                              o->keyword);
        for (s = v; *s != '\0' && n + 3 < out_size; s++) {
            if (*s == '\'' || *s == '\\')
                out[n++] = '\\';
            out[n++] = *s;
        }
        assert_true(n + 2 < out_size);
        out[n++] = '\'';
        out[n] = '\0';
    }
    PQconninfoFree(opts);
}

static PGconn *
db_connect(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);

    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(c));
    return c;
}

/* Run sql on conninfo's database; the first value as a number (0 when
 * there is none). */
static long long
db_int(const char *conninfo, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static long long
db_int(const char *conninfo, const char *fmt, ...)
{
    char sql[2048];
    PGconn *c = db_connect(conninfo);
    PGresult *res;
    long long v = 0;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK &&
        PQresultStatus(res) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0 &&
        !PQgetisnull(res, 0, 0))
        v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    PQfinish(c);
    return v;
}

/* A fresh database for this test; skips without a server. */
static void
need_db(const char *name)
{
    const char *base = env("SENSORNET_TEST_PG");
    char dbname[64];

    if (base == NULL) {
        print_message("needs SENSORNET_TEST_PG (tests/integ/"
                      "test_store_pg.py sets it)\n");
        skip();
    }
    db_int(base, "DROP DATABASE IF EXISTS sn_%s", name);
    db_int(base, "CREATE DATABASE sn_%s", name);
    snprintf(dbname, sizeof(dbname), "sn_%s", name);
    with_dbname(db_conninfo, sizeof(db_conninfo), base, dbname);
}

static void
need_ctl(void)
{
    if (env("SENSORNET_TEST_PG_STOP") == NULL ||
        env("SENSORNET_TEST_PG_START") == NULL ||
        env("SENSORNET_TEST_PG_KILL") == NULL) {
        print_message("needs SENSORNET_TEST_PG_STOP/_START/_KILL\n");
        skip();
    }
}

static void
ctl(const char *what)
{
    char name[64];
    int rc;

    snprintf(name, sizeof(name), "SENSORNET_TEST_PG_%s", what);
    rc = system(env(name));
    if (rc != 0)
        fail_msg("%s: exit %d", env(name), rc);
}

static struct store *
open_pg(unsigned flags)
{
    struct store_conf conf = {
        .postgres = db_conninfo,
        .fsync = STORE_FSYNC_BATCH,
        .flags = flags,
    };
    char err[STORE_ERR_LEN];
    struct store *st;
    int why = 0;

    st = store_open(&conf, err, &why);
    if (st == NULL)
        fail_msg("store_open: %s (%d)", err, why);
    assert_string_equal(store_name(st), "postgresql");
    return st;
}

/* Expect open to fail with why == want and errmsg containing needle. */
static void
open_fails(const char *conninfo, unsigned flags, int want,
           const char *needle)
{
    struct store_conf conf = {
        .postgres = conninfo,
        .fsync = STORE_FSYNC_BATCH,
        .flags = flags,
    };
    char err[STORE_ERR_LEN];
    struct store *st;
    int why = 0;

    st = store_open(&conf, err, &why);
    if (st != NULL) {
        store_close(st);
        fail_msg("store_open succeeded; expected %d", want);
    }
    if (why != want || strstr(err, needle) == NULL)
        fail_msg("store_open: %s (%d); expected %d and \"%s\"", err, why,
                 want, needle);
}

/* A deterministic batch: n_series sensors, per_series readings each at
 * ts_base + k * 1000 (k < per_series). */
static int
append_grid(struct store *st, int n_series, int per_series, int64_t ts_base)
{
    char sensor[32];
    int i, k, rc;

    for (k = 0; k < per_series; k++) {
        for (i = 0; i < n_series; i++) {
            int64_t ts = ts_base + (int64_t)k * 1000;
            struct store_reading r = {
                .sensor = sensor,
                .sensor_len = (size_t)snprintf(sensor, sizeof(sensor),
                                               "sensor-%04d", i),
                .quantity = "temperature",
                .quantity_len = 11,
                .unit = "C",
                .unit_len = 1,
                .value = (double)ts / 7.0 + i,
                .ts_ns = ts,
                .recv_ns = ts + 5,
                .has_ts = true,
                .peer = "127.0.0.1:40000",
            };

            rc = store_append(st, &r);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

/* begin + append_grid + commit, retried (as the writer does) until it
 * commits; returns the number of failed attempts. */
static int
commit_grid_retrying(struct store *st, int n_series, int per_series,
                     int64_t ts_base)
{
    int64_t deadline = clock_mono_ms() + DEADLINE_MS;
    int failures = 0, rc;

    for (;;) {
        rc = store_begin(st);
        if (rc == 0)
            rc = append_grid(st, n_series, per_series, ts_base);
        if (rc == 0)
            rc = store_commit(st);
        if (rc == 0)
            return failures;
        store_rollback(st);
        if (rc != STORE_E_BUSY)
            fail_msg("commit: %s (%d)", store_errmsg(st), rc);
        if (failures == 0)
            print_message("retrying: %s\n", store_errmsg(st));
        if (clock_mono_ms() > deadline)
            fail_msg("still failing after %d ms: %s", DEADLINE_MS,
                     store_errmsg(st));
        failures++;
        sleep_ms(50);
    }
}

static void
commit_grid(struct store *st, int n_series, int per_series, int64_t ts_base)
{
    int rc = store_begin(st);

    if (rc == 0)
        rc = append_grid(st, n_series, per_series, ts_base);
    if (rc == 0)
        rc = store_commit(st);
    if (rc != 0)
        fail_msg("commit: %s (%d)", store_errmsg(st), rc);
}

/* Every series' aggregates agree with its rows. */
static void
assert_consistent(void)
{
    assert_int_equal(db_int(db_conninfo,
        "SELECT count(*) FROM series s WHERE s.count <>"
        " (SELECT count(*) FROM readings r WHERE r.series_id = s.id)"
        " OR s.last_ts IS DISTINCT FROM"
        " (SELECT max(ts) FROM readings r WHERE r.series_id = s.id)"
        " OR s.last_value IS DISTINCT FROM (SELECT value FROM readings r"
        "  WHERE r.series_id = s.id ORDER BY ts DESC LIMIT 1)"
        " OR s.first_seen > (SELECT min(recv_ns) FROM readings r"
        "  WHERE r.series_id = s.id)"
        " OR s.last_seen <> (SELECT max(recv_ns) FROM readings r"
        "  WHERE r.series_id = s.id)"
        " OR s.first_ts IS DISTINCT FROM (SELECT min(ts) FROM readings r"
        "  WHERE r.series_id = s.id)"), 0);
}

/* Poll until the query gives want, within DEADLINE_MS. */
static bool
wait_count(const char *sql, long long want)
{
    int64_t deadline = clock_mono_ms() + DEADLINE_MS;

    while (db_int(db_conninfo, "%s", sql) != want) {
        if (clock_mono_ms() > deadline)
            return false;
        sleep_ms(20);
    }
    return true;
}

static long long
n_readings(void)
{
    return db_int(db_conninfo, "SELECT count(*) FROM readings");
}

/* ---- no server needed ------------------------------------------------- */

static void
test_bad_conninfo(void **state)
{
    (void)state;
    open_fails("host='unterminated", 0, STORE_E_INVAL, "bad conninfo");
    open_fails("nosuchkeyword=1", 0, STORE_E_INVAL, "bad conninfo");
}

/* Nothing listens: open retries for store_pg_open_wait_ms, then says so. */
static void
test_open_gives_up(void **state)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    char conninfo[128];
    int64_t t0;
    int fd;

    (void)state;
    /* A port nobody listens on: bound, never listened, closed. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    snprintf(conninfo, sizeof(conninfo),
             "host=127.0.0.1 port=%d dbname=x connect_timeout=2",
             ntohs(sa.sin_port));
    close(fd);
    store_pg_open_wait_ms = 1500;
    t0 = clock_mono_ms();
    open_fails(conninfo, 0, STORE_E_BUSY, "postgresql unreachable");
    open_fails(conninfo, 0, STORE_E_BUSY, "gave up after 1 s");
    store_pg_open_wait_ms = 30000;
    assert_true(clock_mono_ms() - t0 >= 3000);
    assert_true(clock_mono_ms() - t0 < 20000);
}

/* ---- with a server ---------------------------------------------------- */

static void
test_schema_and_idempotence(void **state)
{
    struct store *st;

    (void)state;
    need_db("schema");
    st = open_pg(0);
    assert_int_equal(db_int(db_conninfo, "SELECT max(version) FROM"
                                         " schema_version"), 2);
    commit_grid(st, 3, 10, 1000000);
    assert_int_equal(n_readings(), 30);
    assert_int_equal(db_int(db_conninfo, "SELECT count(*) FROM series"), 3);
    /* The same readings again, and half old half new: stored once. */
    commit_grid(st, 3, 10, 1000000);
    commit_grid(st, 3, 10, 1005000);
    assert_int_equal(n_readings(), 45);
    assert_int_equal(db_int(db_conninfo, "SELECT sum(count) FROM series"),
                     45);
    assert_int_equal(db_int(db_conninfo, "SELECT max(last_ts) FROM series"),
                     1014000);
    assert_int_equal(db_int(db_conninfo, "SELECT count(*) FROM series"
                            " WHERE unit = 'C' AND quantity = 'temperature'"
                            " AND first_seen = 1000005"), 3);
    /* Older readings arriving late do not move last_ts back. */
    commit_grid(st, 3, 2, 1000);
    assert_int_equal(db_int(db_conninfo, "SELECT min(last_ts) FROM series"),
                     1014000);
    assert_consistent();
    store_close(st);

    /* A second open finds version 2 and keeps the data. */
    st = open_pg(0);
    commit_grid(st, 4, 1, 1000000);
    assert_int_equal(n_readings(), 52);
    assert_consistent();
    store_close(st);
}

/* Duplicates inside one batch, names that need quoting, a 20k-row batch
 * (several COPY chunks), peers, an empty commit, misuse. */
static void
test_batch_contents(void **state)
{
    static const char *names[] = {"a\"b", "c\\d", "e,f", "{g}", "h i",
                                  "NULL", "\xc3\xa9t\xc3\xa9"};
    struct store *st;
    size_t i;

    (void)state;
    need_db("contents");
    st = open_pg(0);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_begin(st), STORE_E_INVAL);
    assert_int_equal(store_commit(st), 0); /* empty */
    assert_int_equal(store_commit(st), STORE_E_INVAL);
    assert_int_equal(store_begin(st), 0);
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        struct store_reading r = {
            .sensor = names[i], .sensor_len = strlen(names[i]),
            .quantity = names[i], .quantity_len = strlen(names[i]),
            .unit = names[i], .unit_len = strlen(names[i]),
            .value = -1.5e-300, .ts_ns = INT64_MAX - 1, .recv_ns = 1,
            .peer = i % 2 ? "[::1]:5" : NULL,
        };

        assert_int_equal(store_append(st, &r), 0);
        assert_int_equal(store_append(st, &r), 0); /* same key twice */
    }
    assert_int_equal(append_grid(st, 100, 200, 0), 0);
    assert_int_equal(append_grid(st, 100, 200, 0), 0);
    assert_int_equal(store_commit(st), 0);
    assert_int_equal(n_readings(), 20007);
    assert_int_equal(db_int(db_conninfo, "SELECT count(*) FROM series WHERE"
                            " sensor = quantity AND quantity = unit"), 7);
    assert_int_equal(db_int(db_conninfo, "SELECT count(*) FROM readings"
                            " WHERE value = -1.5e-300 AND ts = %lld",
                            (long long)(INT64_MAX - 1)), 7);
    assert_int_equal(db_int(db_conninfo, "SELECT count(*) FROM readings r"
                            " JOIN peers p ON p.id = r.peer_id"
                            " WHERE p.addr = '[::1]:5'"), 3);
    assert_int_equal(db_int(db_conninfo, "SELECT count(*) FROM readings r"
                            " JOIN peers p ON p.id = r.peer_id"
                            " WHERE p.addr = '127.0.0.1:40000'"), 20000);
    assert_int_equal(db_int(db_conninfo, "SELECT count(*) FROM peers"), 3);
    assert_int_equal(db_int(db_conninfo, "SELECT count(*) FROM series WHERE"
                            " sensor = 'h i' AND count = 1"), 1);
    assert_consistent();
    /* append and commit outside a transaction */
    assert_int_equal(append_grid(st, 1, 1, 0), STORE_E_INVAL);
    assert_int_equal(store_commit(st), STORE_E_INVAL);
    store_close(st);
}

/* One batch may buffer at most 64 MiB; past it append fails, the batch is
 * failed (commit too) until rollback, and the store still works after. */
static void
test_batch_cap(void **state)
{
    struct store *st;
    int rc = 0, i;

    (void)state;
    need_db("cap");
    st = open_pg(0);
    assert_int_equal(store_begin(st), 0);
    for (i = 0; i < 10000 && rc == 0; i++)
        rc = append_grid(st, 1000, 1, (int64_t)i * 1000000);
    assert_int_equal(rc, STORE_E_IO);
    assert_non_null(strstr(store_errmsg(st), "MiB"));
    assert_true(i > 500); /* well over 500k rows fit */
    assert_int_equal(append_grid(st, 1, 1, 0), STORE_E_IO);
    assert_int_equal(store_commit(st), STORE_E_IO);
    store_rollback(st);
    commit_grid(st, 10, 10, 0);
    assert_int_equal(n_readings(), 100);
    store_close(st);
}

static void
test_version_newer(void **state)
{
    struct store *st;

    (void)state;
    need_db("version");
    st = open_pg(0);
    store_close(st);
    db_int(db_conninfo, "UPDATE schema_version SET version = 3");
    open_fails(db_conninfo, 0, STORE_E_VERSION, "newer than");
    open_fails(db_conninfo, STORE_F_READONLY, STORE_E_VERSION, "newer than");
}

/* A version 1 database (peers as text, no first_ts) is migrated at open;
 * a read-only open does not migrate it. */
static void
test_migrate_v1(void **state)
{
    struct store *st;

    (void)state;
    need_db("migrate");
    db_int(db_conninfo,
           "CREATE TABLE schema_version (version integer NOT NULL);"
           "INSERT INTO schema_version VALUES (1);"
           "CREATE TABLE series (id bigint GENERATED BY DEFAULT AS IDENTITY"
           " PRIMARY KEY, sensor text NOT NULL, quantity text NOT NULL,"
           " unit text NOT NULL DEFAULT '', first_seen bigint NOT NULL,"
           " last_seen bigint NOT NULL, last_value double precision,"
           " last_ts bigint, count bigint NOT NULL DEFAULT 0,"
           " UNIQUE (sensor, quantity));"
           "CREATE TABLE readings (series_id bigint NOT NULL,"
           " ts bigint NOT NULL, value double precision NOT NULL,"
           " recv_ns bigint NOT NULL, peer text NOT NULL DEFAULT '',"
           " PRIMARY KEY (series_id, ts));"
           "INSERT INTO series VALUES (7, 'sensor-0000', 'temperature',"
           " 'C', 5, 1005, 2.5, 1000, 2);"
           "INSERT INTO readings VALUES (7, 500, 1.5, 5, '10.0.0.1:1'),"
           " (7, 1000, 2.5, 1005, '10.0.0.2:2')");
    open_fails(db_conninfo, STORE_F_READONLY, STORE_E_VERSION, "older");
    st = open_pg(0);
    assert_int_equal(db_int(db_conninfo, "SELECT version FROM"
                            " schema_version"), 2);
    assert_int_equal(db_int(db_conninfo, "SELECT first_ts FROM series"), 500);
    assert_int_equal(db_int(db_conninfo, "SELECT count(*) FROM readings r"
                            " JOIN peers p ON p.id = r.peer_id WHERE"
                            " p.addr = '10.0.0.2:2' AND r.ts = 1000"), 1);
    /* The migrated series goes on: same id, new rows counted. */
    commit_grid(st, 1, 3, 0); /* ts 0, 1000 (stored), 2000 */
    assert_int_equal(db_int(db_conninfo, "SELECT count FROM series"
                            " WHERE id = 7"), 4);
    assert_int_equal(db_int(db_conninfo, "SELECT first_ts FROM series"), 0);
    assert_int_equal(db_int(db_conninfo, "SELECT count(*) FROM series"), 1);
    assert_consistent();
    store_close(st);
}

/* Somebody else's tables of the same name are left alone. */
static void
test_not_sensornet(void **state)
{
    (void)state;
    need_db("foreign");
    db_int(db_conninfo, "CREATE TABLE readings (x integer)");
    open_fails(db_conninfo, 0, STORE_E_CORRUPT, "not a sensornet database");
    assert_int_equal(db_int(db_conninfo, "SELECT count(*) FROM"
                            " information_schema.tables WHERE table_schema"
                            " = 'public'"), 1);
}

static void
test_readonly(void **state)
{
    struct store *st, *ro;

    (void)state;
    need_db("readonly");
    /* Read-only never creates the schema. */
    open_fails(db_conninfo, STORE_F_READONLY, STORE_E_CORRUPT,
               "no sensornet schema");
    assert_int_equal(db_int(db_conninfo, "SELECT count(*) FROM"
                            " information_schema.tables WHERE table_schema"
                            " = 'public'"), 0);
    st = open_pg(0);
    ro = open_pg(STORE_F_READONLY);
    commit_grid(st, 2, 2, 0);
    assert_int_equal(store_begin(ro), STORE_E_INVAL);
    assert_int_equal(append_grid(ro, 1, 1, 0), STORE_E_INVAL);
    assert_int_equal(store_retention_step(ro, 1000000, 10), STORE_E_INVAL);
    /* Two connections, the reader's read-only. (The failed open's
     * backend may take a moment to leave pg_stat_activity.) */
    assert_true(wait_count("SELECT count(*) FROM pg_stat_activity WHERE"
                           " application_name = 'sensornet-server (read)'",
                           1));
    assert_true(wait_count("SELECT count(*) FROM pg_stat_activity WHERE"
                           " application_name = 'sensornet-server'", 1));
    store_close(ro);
    store_close(st);
}

static void
test_retention(void **state)
{
    struct store *st;
    int n, total = 0;

    (void)state;
    need_db("retention");
    st = open_pg(0);
    commit_grid(st, 5, 200, 0); /* ts 0, 1000, ..., 199000 */
    assert_int_equal(store_retention_step(st, 50000, 0), 0);
    assert_int_equal(store_retention_step(st, 50000, 100), 100);
    while ((n = store_retention_step(st, 50000, 100)) > 0)
        total += n;
    assert_int_equal(n, 0);
    assert_int_equal(total, 150);
    assert_int_equal(n_readings(), 750);
    assert_int_equal(db_int(db_conninfo, "SELECT min(ts) FROM readings"),
                     50000);
    assert_consistent();
    /* Not inside a batch. */
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_retention_step(st, 50000, 100), STORE_E_INVAL);
    store_rollback(st);
    store_close(st);
}

/* A series row deleted by hand while cached: the next commit fails once
 * (STORE_E_BUSY) and the retry creates it again. */
static void
test_series_deleted(void **state)
{
    struct store *st;

    (void)state;
    need_db("deleted");
    st = open_pg(0);
    commit_grid(st, 3, 3, 0);
    db_int(db_conninfo, "DELETE FROM readings WHERE series_id = (SELECT"
                        " min(id) FROM series); DELETE FROM series WHERE"
                        " id = (SELECT min(id) FROM series)");
    assert_int_equal(commit_grid_retrying(st, 3, 3, 0), 1);
    assert_int_equal(n_readings(), 9);
    assert_consistent();
    store_close(st);
}

struct opener {
    pthread_t tid;
    int idx;
    int n_busy;
    char err[STORE_ERR_LEN];
};

/*
 * Each thread is a collector: it opens (all at once, on an empty database:
 * the migration lock) and writes the same series and partly the same
 * readings as the others, in its own order (the lock order).
 */
static void *
opener_main(void *arg)
{
    struct opener *o = arg;
    struct store_conf conf = {.postgres = db_conninfo};
    struct store *st;
    int why, b, rc;

    st = store_open(&conf, o->err, &why);
    if (st == NULL)
        return NULL;
    for (b = 0; b < 20; b++) {
        int64_t base = (int64_t)((b + o->idx) % 20) * 40000;

        rc = store_begin(st);
        if (rc == 0)
            rc = append_grid(st, 50, 40, base);
        if (rc == 0)
            rc = store_commit(st);
        if (rc != 0) {
            store_rollback(st);
            if (rc != STORE_E_BUSY) {
                snprintf(o->err, sizeof(o->err), "%s", store_errmsg(st));
                break;
            }
            o->n_busy++;
            b--; /* retry it, as the writer would */
        }
    }
    if (b == 20)
        o->err[0] = '\0';
    store_close(st);
    return NULL;
}

static void
test_concurrent_collectors(void **state)
{
    struct opener o[6];
    int i, busy = 0;

    (void)state;
    need_db("concurrent");
    for (i = 0; i < 6; i++) {
        o[i] = (struct opener){.idx = i * 3};
        snprintf(o[i].err, sizeof(o[i].err), "did not finish");
        assert_int_equal(pthread_create(&o[i].tid, NULL, opener_main, &o[i]),
                         0);
    }
    for (i = 0; i < 6; i++) {
        pthread_join(o[i].tid, NULL);
        if (o[i].err[0] != '\0')
            fail_msg("collector %d: %s", i, o[i].err);
        busy += o[i].n_busy;
    }
    /* Lock ordering: no deadlock aborts had to be retried. */
    assert_int_equal(busy, 0);
    assert_int_equal(db_int(db_conninfo, "SELECT count(*) FROM"
                            " schema_version"), 1);
    assert_int_equal(db_int(db_conninfo, "SELECT count(*) FROM series"), 50);
    assert_int_equal(n_readings(), 50 * 40 * 20);
    assert_consistent();
}

/* The server stops between commits: begin says "unreachable" until it is
 * back, then the same batches go in; nothing lost, nothing twice. */
static void
test_restart_between_commits(void **state)
{
    struct store *st;
    int rc;

    (void)state;
    need_db("restart");
    need_ctl();
    st = open_pg(0);
    commit_grid(st, 10, 10, 0);
    ctl("STOP");
    rc = store_begin(st);
    if (rc == 0) /* the close was not seen yet: commit sees it */
        rc = append_grid(st, 10, 10, 10000);
    if (rc == 0)
        rc = store_commit(st);
    assert_int_equal(rc, STORE_E_BUSY);
    assert_non_null(strstr(store_errmsg(st), "postgresql unreachable"));
    store_rollback(st);
    /* Still down: the reconnect in begin fails the same way. */
    assert_int_equal(store_begin(st), STORE_E_BUSY);
    assert_non_null(strstr(store_errmsg(st), "postgresql unreachable"));
    assert_int_equal(append_grid(st, 1, 1, 0), STORE_E_BUSY);
    store_rollback(st);
    ctl("START");
    commit_grid_retrying(st, 10, 10, 10000);
    commit_grid(st, 10, 10, 20000);
    assert_int_equal(n_readings(), 300);
    assert_consistent();
    store_close(st);
}

/* A restart while idle is noticed at begin, which reconnects at once. */
static void
test_restart_while_idle(void **state)
{
    struct store *st;

    (void)state;
    need_db("idle");
    need_ctl();
    st = open_pg(0);
    commit_grid(st, 2, 2, 0);
    ctl("STOP");
    ctl("START");
    assert_int_equal(commit_grid_retrying(st, 2, 2, 2000), 0);
    assert_int_equal(n_readings(), 8);
    store_close(st);
}

/* Batches committed so far by test_crash_mid_stream. */
static atomic_int n_committed;

static void *
killer_main(void *arg)
{
    (void)arg;
    while (atomic_load(&n_committed) < 5) /* mid-stream, however fast */
        sleep_ms(5);
    ctl("KILL");
    sleep_ms(500);
    ctl("START");
    return NULL;
}

/*
 * The server crashes while commits are in flight (some during COMMIT:
 * outcome unknown). Every batch is retried until it commits; afterwards
 * each reading is there exactly once and the aggregates count each once.
 */
static void
test_crash_mid_stream(void **state)
{
    struct store *st;
    pthread_t killer;
    int b, failures = 0;

    (void)state;
    need_db("crash");
    need_ctl();
    st = open_pg(0);
    atomic_store(&n_committed, 0);
    assert_int_equal(pthread_create(&killer, NULL, killer_main, NULL), 0);
    for (b = 0; b < 60; b++) {
        failures += commit_grid_retrying(st, 100, 50, (int64_t)b * 50000);
        atomic_fetch_add(&n_committed, 1);
    }
    pthread_join(killer, NULL);
    assert_true(failures > 0);
    assert_int_equal(n_readings(), 60 * 100 * 50);
    assert_consistent();
    store_close(st);
}

static void *
late_killer_main(void *arg)
{
    (void)arg;
    sleep_ms(700);
    ctl("KILL");
    return NULL;
}

/*
 * The server dies while COMMIT runs (a deferred trigger makes COMMIT take
 * 3 s): the outcome is unknown, so commit must fail; the retry after the
 * restart stores the reading once.
 */
static void
test_crash_during_commit(void **state)
{
    struct store *st;
    pthread_t killer;
    int rc;

    (void)state;
    need_db("commitcrash");
    need_ctl();
    st = open_pg(0);
    db_int(db_conninfo, "CREATE FUNCTION sn_slow() RETURNS trigger"
                        " LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(3);"
                        " RETURN NULL; END $$;"
                        "CREATE CONSTRAINT TRIGGER sn_slow AFTER INSERT ON"
                        " readings DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
                        " EXECUTE FUNCTION sn_slow()");
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(append_grid(st, 1, 1, 0), 0);
    assert_int_equal(pthread_create(&killer, NULL, late_killer_main, NULL), 0);
    rc = store_commit(st);
    pthread_join(killer, NULL);
    assert_int_equal(rc, STORE_E_BUSY);
    assert_non_null(strstr(store_errmsg(st), "COMMIT (outcome unknown"));
    store_rollback(st);
    ctl("START");
    db_int(db_conninfo, "DROP TRIGGER sn_slow ON readings");
    commit_grid_retrying(st, 1, 1, 0);
    assert_int_equal(n_readings(), 1);
    assert_consistent();
    store_close(st);
}

/* open waits for a server that is not up yet. */
static void *
starter_main(void *arg)
{
    (void)arg;
    sleep_ms(1500);
    ctl("START");
    return NULL;
}

static void
test_open_waits_for_server(void **state)
{
    struct store *st;
    pthread_t starter;

    (void)state;
    need_db("wait");
    need_ctl();
    ctl("STOP");
    assert_int_equal(pthread_create(&starter, NULL, starter_main, NULL), 0);
    st = open_pg(0);
    pthread_join(starter, NULL);
    commit_grid(st, 1, 1, 0);
    assert_int_equal(n_readings(), 1);
    store_close(st);
}

int
main(void)
{
    const struct CMUnitTest no_server[] = {
        cmocka_unit_test(test_bad_conninfo),
        cmocka_unit_test(test_open_gives_up),
    };
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_conninfo),
        cmocka_unit_test(test_open_gives_up),
        cmocka_unit_test(test_schema_and_idempotence),
        cmocka_unit_test(test_batch_contents),
        cmocka_unit_test(test_batch_cap),
        cmocka_unit_test(test_version_newer),
        cmocka_unit_test(test_migrate_v1),
        cmocka_unit_test(test_not_sensornet),
        cmocka_unit_test(test_readonly),
        cmocka_unit_test(test_retention),
        cmocka_unit_test(test_series_deleted),
        cmocka_unit_test(test_concurrent_collectors),
        cmocka_unit_test(test_restart_between_commits),
        cmocka_unit_test(test_restart_while_idle),
        cmocka_unit_test(test_crash_mid_stream),
        cmocka_unit_test(test_crash_during_commit),
        cmocka_unit_test(test_open_waits_for_server),
    };

    if (env("SENSORNET_TEST_FILTER") != NULL)
        cmocka_set_test_filter(env("SENSORNET_TEST_FILTER"));
    if (env("SENSORNET_TEST_PG") == NULL) {
        print_message("PostgreSQL tests not run here: SENSORNET_TEST_PG is "
                      "unset (tests/integ/test_store_pg.py runs them)\n");
        return cmocka_run_group_tests(no_server, NULL, NULL);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
