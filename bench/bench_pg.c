/*
 * bench_pg: rows per second into PostgreSQL through store_pg (the
 * collector's whole path: buffer, sort, intern series and peers, COPY,
 * series aggregates) against the ceiling, a bare binary COPY of the same
 * rows straight into the same table, in the same run. A third line measures
 * the alternative store_pg does not use: one INSERT ... SELECT FROM
 * unnest($1::bigint[], ...) ON CONFLICT DO NOTHING with binary array
 * parameters (docs/storage.md: "PostgreSQL").
 *
 * Without resends store_pg takes its fast path (COPY into readings); with
 * -d it takes the slow one (COPY into a staging table, then INSERT ...
 * SELECT ... ON CONFLICT DO NOTHING), which is the one to hold against
 * unnest. Rates count the rows offered, resent ones included; the bare
 * COPY leaves the resent rows out (it cannot take duplicates).
 *
 *     bench_pg [-n ROWS] [-b BATCH] [-s SERIES] [-d DUP%] [-r RUNS] CONNINFO
 *
 * Each variant gets its own fresh database (sn_bench_store, sn_bench_copy,
 * sn_bench_unnest), dropped right after it is measured: CONNINFO's role
 * needs CREATEDB.
 * Defaults: 1,000,000 rows in batches of 100,000 from 1000 series, no
 * resent rows; -d 10 makes 10% of each batch a resend of the previous one.
 * The variants run in turn RUNS times (default 3), each after a CHECKPOINT,
 * and the median run of each is printed: other load on the machine moves
 * single runs a lot.
 * Client CPU is this process's; server CPU is the backend's, read from
 * /proc when the server runs on this machine.
 * SPDX-License-Identifier: MIT
 */
#include <endian.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "server/store.h"
#include "util/clock.h"
#include "util/log.h"

struct opts {
    const char *conninfo;
    long n_rows;
    long batch;
    int n_series;
    int dup_pct;
    int runs;
};

struct result {
    double secs;
    double client_cpu;
    double server_cpu; /* < 0: unknown */
    long rows;
};

static void
die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void
die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("bench_pg: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static double
cpu_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* utime + stime of a local process in seconds, or -1. */
static double
proc_cpu(int pid)
{
    char path[64], buf[1024], *p;
    unsigned long long ut, st;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')'); /* comm may contain spaces */
    if (p == NULL)
        return -1;
    /* Fields after comm: state(3) ... utime(14) stime(15). */
    for (int i = 0; i < 12 && p != NULL; i++)
        p = strchr(p + 1, ' ');
    if (p == NULL)
        return -1;
    ut = strtoull(p + 1, &p, 10);
    st = strtoull(p + 1, NULL, 10);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* A connection to dbname on the server CONNINFO names. */
static void
quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static PGconn *
connect_db(const char *conninfo, const char *dbname)
{
    const char *keys[] = {"dbname", "dbname", NULL};
    const char *vals[] = {conninfo, dbname, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);

    if (PQstatus(c) != CONNECTION_OK)
        die("connect: %s", PQerrorMessage(c));
    PQsetNoticeProcessor(c, quiet, NULL);
    return c;
}

static void
exec_or_die(PGconn *c, const char *sql)
{
    PGresult *res = PQexec(c, sql);

    if (PQresultStatus(res) != PGRES_COMMAND_OK &&
        PQresultStatus(res) != PGRES_TUPLES_OK)
        die("%s: %s", sql, PQerrorMessage(c));
    PQclear(res);
}

/* A fresh database name; out gets CONNINFO with its dbname replaced (as
 * key='value' pairs, so that a URI works too). */
static void
fresh_db(const struct opts *o, const char *name, char *out, size_t out_size)
{
    PQconninfoOption *opts, *opt;
    char sql[128], *err = NULL;
    size_t n = 0;
    PGconn *c = connect_db(o->conninfo, NULL);

    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", name);
    exec_or_die(c, sql);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
    exec_or_die(c, sql);
    PQfinish(c);
    opts = PQconninfoParse(o->conninfo, &err);
    if (opts == NULL)
        die("conninfo: %s", err != NULL ? err : "out of memory");
    out[0] = '\0';
    for (opt = opts; opt->keyword != NULL; opt++) {
        const char *v = strcmp(opt->keyword, "dbname") ? opt->val : name;

        if (v == NULL)
            continue;
        n += (size_t)snprintf(out + n, out_size - n, " %s='", opt->keyword);
        for (; *v != '\0' && n + 4 < out_size; v++) {
            if (*v == '\'' || *v == '\\')
                out[n++] = '\\';
            out[n++] = *v;
        }
        if (n + 2 >= out_size)
            die("conninfo too long");
        out[n++] = '\'';
        out[n] = '\0';
    }
    PQconninfoFree(opts);
}

/* Drop a variant's database as soon as it is measured, so that no
 * autovacuum of it runs into the next variant's time. */
static void
drop_db(const struct opts *o, const char *name)
{
    char sql[128];
    PGconn *c = connect_db(o->conninfo, NULL);

    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)",
             name);
    exec_or_die(c, sql);
    PQfinish(c);
}

/* The backend pid of the store's connection (application_name
 * sensornet-server) to dbname, for its CPU time; -1 if not found. */
static int
store_backend(const struct opts *o, const char *dbname)
{
    char sql[256];
    PGconn *c = connect_db(o->conninfo, NULL);
    PGresult *res;
    int pid = -1;

    snprintf(sql, sizeof(sql), "SELECT pid FROM pg_stat_activity WHERE"
             " datname = '%s' AND application_name = 'sensornet-server'",
             dbname);
    res = PQexec(c, sql);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        pid = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    PQfinish(c);
    return pid;
}

/* Row k of batch b: series i, timestamp ts. Batches go forward in time;
 * with dup_pct the first dup_pct% of a batch repeats the previous one. */
static void
row_at(const struct opts *o, long b, long k, int *series, int64_t *ts)
{
    long per = o->batch / o->n_series, dup = o->batch * o->dup_pct / 100;

    if (b > 0 && k < dup) { /* the previous batch's tail */
        b--;
        k = o->batch - dup + k;
    }
    *series = (int)(k % o->n_series);
    *ts = 1700000000000000000LL + (b * per + k / o->n_series) * 1000000LL;
}

/* The k-th row of a batch in (series, ts) order, the order store_pg sorts
 * a batch into: the two libpq variants send rows that way too, so that all
 * three insert into the index alike (their best case). */
static long
sorted_k(const struct opts *o, long k)
{
    long per = o->batch / o->n_series;

    return (k % per) * o->n_series + k / per;
}

static double
value_at(int series, int64_t ts)
{
    return (double)(ts % 100000) / 100.0 + series;
}

/* ---- store_pg ---------------------------------------------------------- */

static struct result
run_store(const struct opts *o)
{
    char conninfo[512], name[32];
    struct store_conf conf = {.postgres = conninfo,
                              .fsync = STORE_FSYNC_BATCH};
    char err[STORE_ERR_LEN];
    struct result r = {.server_cpu = -1};
    struct store *st;
    int64_t t0;
    double c0, s0;
    int why, pid;

    fresh_db(o, "sn_bench_store", conninfo, sizeof(conninfo));
    st = store_open(&conf, err, &why);
    if (st == NULL)
        die("store_open: %s", err);
    pid = store_backend(o, "sn_bench_store");
    t0 = clock_mono_ns();
    c0 = cpu_now();
    s0 = pid < 0 ? -1 : proc_cpu(pid);
    for (long b = 0; b * o->batch < o->n_rows; b++) {
        if (store_begin(st) != 0)
            die("begin: %s", store_errmsg(st));
        for (long k = 0; k < o->batch; k++) {
            struct store_reading rd = {
                .quantity = "temperature",
                .quantity_len = 11,
                .unit = "C",
                .unit_len = 1,
                .peer = "10.0.2.135:54812",
                .has_ts = true,
            };
            int s;

            row_at(o, b, k, &s, &rd.ts_ns);
            rd.sensor_len = (size_t)snprintf(name, sizeof(name),
                                             "bench-%04d", s);
            rd.sensor = name;
            rd.value = value_at(s, rd.ts_ns);
            rd.recv_ns = rd.ts_ns + 1000;
            if (store_append(st, &rd) != 0)
                die("append: %s", store_errmsg(st));
        }
        if (store_commit(st) != 0)
            die("commit: %s", store_errmsg(st));
        r.rows += o->batch;
    }
    r.secs = (double)(clock_mono_ns() - t0) / 1e9;
    r.client_cpu = cpu_now() - c0;
    r.server_cpu = s0 < 0 ? -1 : proc_cpu(pid) - s0;
    store_close(st);
    drop_db(o, "sn_bench_store");
    return r;
}

/* ---- shared by the two libpq variants --------------------------------- */

struct wbuf {
    char *p;
    size_t len, cap;
};

static void
wb_put(struct wbuf *w, const void *s, size_t len)
{
    if (w->len + len > w->cap) {
        w->cap = (w->len + len) * 2;
        w->p = realloc(w->p, w->cap);
        if (w->p == NULL)
            die("out of memory");
    }
    memcpy(w->p + w->len, s, len);
    w->len += len;
}

static void
wb_be32(struct wbuf *w, uint32_t v)
{
    v = htobe32(v);
    wb_put(w, &v, 4);
}

static void
wb_be64(struct wbuf *w, uint64_t v)
{
    v = htobe64(v);
    wb_put(w, &v, 8);
}

static void
wb_f64(struct wbuf *w, double d)
{
    uint64_t v;

    memcpy(&v, &d, 8);
    wb_be64(w, v);
}

/* Create the schema the way the collector does (store_open), then the
 * series rows; returns a connection to that database. */
static PGconn *
prepared_db(const struct opts *o, const char *dbname, int server_pid[1])
{
    char conninfo[512], err[STORE_ERR_LEN], sql[256];
    struct store_conf conf = {.postgres = conninfo};
    struct store *st;
    PGconn *c;
    int why;

    fresh_db(o, dbname, conninfo, sizeof(conninfo));
    st = store_open(&conf, err, &why);
    if (st == NULL)
        die("store_open: %s", err);
    store_close(st);
    c = connect_db(conninfo, NULL);
    snprintf(sql, sizeof(sql),
             "INSERT INTO series (id, sensor, quantity, unit, first_seen,"
             " last_seen) SELECT i, 'bench-' || lpad((i - 1)::text, 4, '0'),"
             " 'temperature', 'C', 0, 0 FROM generate_series(1, %d) i",
             o->n_series);
    exec_or_die(c, sql);
    exec_or_die(c, "INSERT INTO peers (id, addr) VALUES (1,"
                   " '10.0.2.135:54812')");
    server_pid[0] = PQbackendPID(c);
    return c;
}

/* ---- bare COPY --------------------------------------------------------- */

static struct result
run_copy(const struct opts *o)
{
    static const char header[19] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";
    struct result r = {0};
    struct wbuf w = {0};
    PGresult *res;
    PGconn *c;
    int64_t t0;
    double c0, s0;
    int pid;

    c = prepared_db(o, "sn_bench_copy", &pid);
    t0 = clock_mono_ns();
    c0 = cpu_now();
    s0 = proc_cpu(pid);
    for (long b = 0; b * o->batch < o->n_rows; b++) {
        w.len = 0;
        wb_put(&w, header, sizeof(header));
        for (long k = 0; k < o->batch; k++) {
            long kk = sorted_k(o, k);
            int64_t ts;
            int s;

            row_at(o, b, kk, &s, &ts);
            if (b > 0 && kk < o->batch * o->dup_pct / 100)
                continue; /* a bare COPY cannot take duplicates */
            wb_put(&w, "\0\5", 2);
            wb_be32(&w, 8);
            wb_be64(&w, (uint64_t)s + 1);
            wb_be32(&w, 8);
            wb_be64(&w, (uint64_t)ts);
            wb_be32(&w, 8);
            wb_f64(&w, value_at(s, ts));
            wb_be32(&w, 8);
            wb_be64(&w, (uint64_t)ts + 1000);
            wb_be32(&w, 8);
            wb_be64(&w, 1); /* peer_id */
        }
        wb_put(&w, "\377\377", 2);
        exec_or_die(c, "BEGIN");
        res = PQexec(c, "COPY readings FROM STDIN (FORMAT binary)");
        if (PQresultStatus(res) != PGRES_COPY_IN)
            die("COPY: %s", PQerrorMessage(c));
        PQclear(res);
        for (size_t off = 0; off < w.len; off += 256 << 10) {
            size_t n = w.len - off < (256 << 10) ? w.len - off : 256 << 10;

            if (PQputCopyData(c, w.p + off, (int)n) != 1)
                die("COPY: %s", PQerrorMessage(c));
        }
        if (PQputCopyEnd(c, NULL) != 1)
            die("COPY: %s", PQerrorMessage(c));
        while ((res = PQgetResult(c)) != NULL) {
            if (PQresultStatus(res) != PGRES_COMMAND_OK)
                die("COPY: %s", PQerrorMessage(c));
            PQclear(res);
        }
        exec_or_die(c, "COMMIT");
        r.rows += o->batch;
    }
    r.secs = (double)(clock_mono_ns() - t0) / 1e9;
    r.client_cpu = cpu_now() - c0;
    r.server_cpu = s0 < 0 ? -1 : proc_cpu(pid) - s0;
    free(w.p);
    PQfinish(c);
    drop_db(o, "sn_bench_copy");
    return r;
}

/* ---- INSERT ... SELECT FROM unnest(binary arrays) ---------------------- */

/* The statement store_pg would run instead of COPY + sn_flush. */
static const char sql_unnest[] =
    "WITH ins AS (INSERT INTO readings (series_id, ts, value, recv_ns,"
    "  peer_id) SELECT * FROM unnest($1::bigint[], $2::bigint[],"
    "  $3::float8[], $4::bigint[], $5::bigint[]) ON CONFLICT DO NOTHING"
    "  RETURNING series_id, ts, recv_ns),"
    " agg AS (SELECT series_id, count(*) AS n, min(recv_ns) AS first_recv,"
    "  max(recv_ns) AS last_recv, min(ts) AS min_ts FROM ins"
    "  GROUP BY series_id),"
    " b AS (SELECT * FROM unnest($6::bigint[], $7::bigint[],"
    "  $8::float8[]) AS b(id, max_ts, max_value))"
    " UPDATE series s SET count = s.count + agg.n,"
    "  first_seen = least(s.first_seen, agg.first_recv),"
    "  last_seen = greatest(s.last_seen, agg.last_recv),"
    "  first_ts = least(s.first_ts, agg.min_ts),"
    "  last_value = CASE WHEN s.last_ts IS NULL OR b.max_ts > s.last_ts"
    "   THEN b.max_value ELSE s.last_value END,"
    "  last_ts = greatest(s.last_ts, b.max_ts)"
    " FROM agg JOIN b ON b.id = agg.series_id"
    " WHERE s.id = agg.series_id";

/* Binary one-dimensional array header for n elements of type oid. */
static void
array_head(struct wbuf *w, uint32_t oid, long n)
{
    wb_be32(w, 1); /* ndim */
    wb_be32(w, 0); /* no NULLs */
    wb_be32(w, oid);
    wb_be32(w, (uint32_t)n);
    wb_be32(w, 1); /* lower bound */
}

static struct result
run_unnest(const struct opts *o)
{
    enum { INT8 = 20, FLOAT8 = 701 };
    struct result r = {0};
    struct wbuf w[8] = {{0}};
    const char *vals[8];
    int lens[8], fmts[8];
    char lock_sql[128];
    PGresult *res;
    PGconn *c;
    int64_t t0, *max_ts;
    double c0, s0, *max_val;
    int pid, i;

    c = prepared_db(o, "sn_bench_unnest", &pid);
    res = PQprepare(c, "ins", sql_unnest, 0, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        die("prepare: %s", PQerrorMessage(c));
    PQclear(res);
    snprintf(lock_sql, sizeof(lock_sql), "SELECT id FROM series WHERE id <="
             " %d ORDER BY id FOR NO KEY UPDATE", o->n_series);
    max_ts = calloc((size_t)o->n_series, sizeof(*max_ts));
    max_val = calloc((size_t)o->n_series, sizeof(*max_val));
    if (max_ts == NULL || max_val == NULL)
        die("out of memory");
    t0 = clock_mono_ns();
    c0 = cpu_now();
    s0 = proc_cpu(pid);
    for (long b = 0; b * o->batch < o->n_rows; b++) {
        for (i = 0; i < 8; i++)
            w[i].len = 0;
        array_head(&w[0], INT8, o->batch);
        array_head(&w[1], INT8, o->batch);
        array_head(&w[2], FLOAT8, o->batch);
        array_head(&w[3], INT8, o->batch);
        array_head(&w[4], INT8, o->batch);
        for (i = 0; i < o->n_series; i++)
            max_ts[i] = INT64_MIN;
        for (long k = 0; k < o->batch; k++) {
            int64_t ts;
            int s;

            row_at(o, b, sorted_k(o, k), &s, &ts);
            wb_be32(&w[0], 8);
            wb_be64(&w[0], (uint64_t)s + 1);
            wb_be32(&w[1], 8);
            wb_be64(&w[1], (uint64_t)ts);
            wb_be32(&w[2], 8);
            wb_f64(&w[2], value_at(s, ts));
            wb_be32(&w[3], 8);
            wb_be64(&w[3], (uint64_t)ts + 1000);
            wb_be32(&w[4], 8);
            wb_be64(&w[4], 1); /* peer_id */
            if (ts > max_ts[s]) {
                max_ts[s] = ts;
                max_val[s] = value_at(s, ts);
            }
        }
        array_head(&w[5], INT8, o->n_series);
        array_head(&w[6], INT8, o->n_series);
        array_head(&w[7], FLOAT8, o->n_series);
        for (i = 0; i < o->n_series; i++) {
            wb_be32(&w[5], 8);
            wb_be64(&w[5], (uint64_t)i + 1);
            wb_be32(&w[6], 8);
            wb_be64(&w[6], (uint64_t)max_ts[i]);
            wb_be32(&w[7], 8);
            wb_f64(&w[7], max_val[i]);
        }
        for (i = 0; i < 8; i++) {
            vals[i] = w[i].p;
            lens[i] = (int)w[i].len;
            fmts[i] = 1;
        }
        exec_or_die(c, "BEGIN");
        exec_or_die(c, lock_sql);
        res = PQexecPrepared(c, "ins", 8, vals, lens, fmts, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            die("insert: %s", PQerrorMessage(c));
        PQclear(res);
        exec_or_die(c, "COMMIT");
        r.rows += o->batch;
    }
    r.secs = (double)(clock_mono_ns() - t0) / 1e9;
    r.client_cpu = cpu_now() - c0;
    r.server_cpu = s0 < 0 ? -1 : proc_cpu(pid) - s0;
    for (i = 0; i < 8; i++)
        free(w[i].p);
    free(max_ts);
    free(max_val);
    PQfinish(c);
    drop_db(o, "sn_bench_unnest");
    return r;
}

/* CHECKPOINT, so that no variant pays for another's dirty pages. Needs
 * superuser or pg_checkpoint; without them the runs are just noisier. */
static void
checkpoint(const struct opts *o)
{
    PGconn *c = connect_db(o->conninfo, NULL);

    PQclear(PQexec(c, "CHECKPOINT"));
    PQfinish(c);
}

static int
cmp_rate(const void *a, const void *b)
{
    const struct result *x = a, *y = b;
    double rx = (double)x->rows / x->secs, ry = (double)y->rows / y->secs;

    return rx < ry ? -1 : rx > ry;
}

static struct result
median(struct result *r, int n)
{
    qsort(r, (size_t)n, sizeof(*r), cmp_rate);
    return r[n / 2];
}

static void
print_result(const char *name, const struct result *r)
{
    printf("%-28s %10.0f rows/s  %6.2f s  client cpu %5.2f s", name,
           (double)r->rows / r->secs, r->secs, r->client_cpu);
    if (r->server_cpu >= 0)
        printf("  server cpu %5.2f s", r->server_cpu);
    printf("\n");
}

static void
usage(void)
{
    fprintf(stderr, "usage: bench_pg [-n ROWS] [-b BATCH] [-s SERIES] "
                    "[-d DUP%%] [-r RUNS] CONNINFO\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    struct opts o = {.n_rows = 1000000, .batch = 100000, .n_series = 1000,
                     .runs = 3};
    struct result rs, rc, ru, all[3][16];
    int ch, i;

    while ((ch = getopt(argc, argv, "n:b:s:d:r:h")) != -1) {
        switch (ch) {
        case 'n':
            o.n_rows = strtol(optarg, NULL, 10);
            break;
        case 'b':
            o.batch = strtol(optarg, NULL, 10);
            break;
        case 's':
            o.n_series = (int)strtol(optarg, NULL, 10);
            break;
        case 'd':
            o.dup_pct = (int)strtol(optarg, NULL, 10);
            break;
        case 'r':
            o.runs = (int)strtol(optarg, NULL, 10);
            break;
        default:
            usage();
        }
    }
    if (optind + 1 != argc || o.n_rows <= 0 || o.batch <= 0 ||
        o.n_series <= 0 || o.n_series > 9999 || o.batch % o.n_series != 0 ||
        o.dup_pct < 0 || o.dup_pct > 50 || o.runs < 1 || o.runs > 16)
        usage();
    o.conninfo = argv[optind];
    log_init("bench_pg", LOG_WARN);
    printf("bench_pg: %ld rows, batches of %ld from %d series, %d%% resent;"
           " synchronous_commit on; median of %d runs\n", o.n_rows, o.batch,
           o.n_series, o.dup_pct, o.runs);
    for (i = 0; i < o.runs; i++) {
        checkpoint(&o);
        all[0][i] = run_store(&o);
        checkpoint(&o);
        all[1][i] = run_copy(&o);
        checkpoint(&o);
        all[2][i] = run_unnest(&o);
    }
    rs = median(all[0], o.runs);
    rc = median(all[1], o.runs);
    ru = median(all[2], o.runs);
    print_result(o.dup_pct ? "store_pg (slow: staging)" :
                 "store_pg (fast: COPY)", &rs);
    print_result("bare COPY into readings", &rc);
    print_result("INSERT ... unnest(arrays)", &ru);
    printf("store_pg / bare COPY: %.2f\n",
           ((double)rs.rows / rs.secs) / ((double)rc.rows / rc.secs));
    printf("unnest / store_pg:    %.2f\n",
           ((double)ru.rows / ru.secs) / ((double)rs.rows / rs.secs));
    return 0;
}
