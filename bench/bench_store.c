/*
 * bench_store: appends through store.h (SQLite backend) against a bare
 * prepared-statement INSERT loop into the same schema, in the same run.
 *
 * Both paths insert the same readings in the same transactions with the
 * same pragmas (WAL, synchronous per -f, the store's cache and checkpoint
 * settings). The bare loop knows every series and peer id in advance and
 * only inserts readings; the store path also interns names and keeps the
 * series aggregates. Rounds alternate which path runs first, each timed
 * run starts after sync(2), and the median of each path is reported.
 *
 *   bench_store [-n rows] [-s series] [-t rows_per_txn] [-f full|off]
 *               [-r rounds] [-d dir]
 *
 * Build: bench/bench_store.c with the server objects and $(PKG_LIBS).
 * SPDX-License-Identifier: MIT
 */
#include "server/store.h"
#include "util/clock.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* Keep in step with store_sqlite.c (setup_writer). */
#define BARE_PRAGMAS                                                           \
    "PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 10000;"           \
    " PRAGMA journal_size_limit = 67108864; PRAGMA temp_store = MEMORY"

#define NAME_LEN 32
#define BASE_TS INT64_C(1700000000000000000)

struct opts {
    long rows;
    int series;
    int txn;
    bool sync_off;
    int rounds;
    const char *dir;
};

/* Sensor k sends two quantities from one connection (one peer each). */
struct names {
    char (*sensor)[NAME_LEN];
    char (*peer)[NAME_LEN];
    int n_sensor;
};

struct result {
    double rows_per_s;
    double cpu_s;
    double wall_s;
};

static const char *const quantity[2] = {"temperature", "humidity"};
static const char *const unit[2] = {"°C", "%"};

static void
usage(void)
{
    fprintf(stderr, "usage: bench_store [-n rows] [-s series] [-t txn_rows]"
                    " [-f full|off] [-r rounds] [-d dir]\n");
    exit(2);
}

static long
num_arg(const char *s, long min, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        usage();
    return v;
}

static double
cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void
remove_db(const char *path)
{
    char side[512];

    unlink(path);
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);
}

/* The i-th reading of the run: sensor, quantity, time. */
static void
reading_at(const struct opts *o, long i, int *series, int64_t *ts)
{
    *series = (int)(i % o->series);
    *ts = BASE_TS + (i / o->series) * INT64_C(1000000000) + *series;
}

static void
die_sqlite(sqlite3 *db, const char *what)
{
    fprintf(stderr, "bench_store: %s: %s\n", what, sqlite3_errmsg(db));
    exit(1);
}

static void
exec_or_die(sqlite3 *db, const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        die_sqlite(db, sql);
}

static struct store *
open_store(const struct opts *o, const char *path)
{
    struct store_conf conf = {
        .sqlite_path = path,
        .fsync = o->sync_off ? STORE_FSYNC_OFF : STORE_FSYNC_BATCH,
    };
    char err[STORE_ERR_LEN];
    int why;
    struct store *st = store_open(&conf, err, &why);

    if (st == NULL) {
        fprintf(stderr, "bench_store: %s\n", err);
        exit(1);
    }
    return st;
}

static struct result
run_store(const struct opts *o, const struct names *nm, const char *path)
{
    struct store *st;
    struct result res;
    int64_t t0;
    double c0;

    remove_db(path);
    st = open_store(o, path);
    sync(); /* the other path's dirty pages are not ours to write */
    c0 = cpu_seconds();
    t0 = clock_mono_ns();
    for (long i = 0; i < o->rows;) {
        int rc = store_begin(st);

        for (long end = i + o->txn; rc == 0 && i < end && i < o->rows; i++) {
            struct store_reading r;
            int s, k;
            int64_t ts;

            reading_at(o, i, &s, &ts);
            k = s / 2;
            r.sensor = nm->sensor[k];
            r.sensor_len = strlen(nm->sensor[k]);
            r.quantity = quantity[s % 2];
            r.quantity_len = strlen(quantity[s % 2]);
            r.unit = unit[s % 2];
            r.unit_len = strlen(unit[s % 2]);
            r.value = 20.0 + (double)(i % 1000) / 100.0;
            r.ts_ns = ts;
            r.recv_ns = ts + 5000;
            r.has_ts = true;
            r.peer = nm->peer[k];
            rc = store_append(st, &r);
        }
        if (rc == 0)
            rc = store_commit(st);
        if (rc != 0) {
            fprintf(stderr, "bench_store: store: %s\n", store_errmsg(st));
            exit(1);
        }
    }
    res.wall_s = (double)(clock_mono_ns() - t0) / 1e9;
    res.cpu_s = cpu_seconds() - c0;
    res.rows_per_s = (double)o->rows / res.wall_s;
    store_close(st);
    return res;
}

static struct result
run_bare(const struct opts *o, const struct names *nm, const char *path)
{
    sqlite3_stmt *ins = NULL, *add = NULL;
    struct result res;
    sqlite3 *db = NULL;
    int64_t t0;
    double c0;

    /* The schema comes from the store itself, so it is the same. */
    remove_db(path);
    store_close(open_store(o, path));
    /* The open flags the store uses: one thread owns the handle. */
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        die_sqlite(db, "open");
    exec_or_die(db, o->sync_off ? "PRAGMA synchronous = OFF"
                                : "PRAGMA synchronous = FULL");
    exec_or_die(db, BARE_PRAGMAS);

    /* Series i + 1 and peer k + 1, known in advance. */
    exec_or_die(db, "BEGIN");
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO series (id, sensor, quantity, unit,"
                           " first_seen, last_seen, count)"
                           " VALUES (?1, ?2, ?3, ?4, 0, 0, 0)",
                           -1, &add, NULL) != SQLITE_OK)
        die_sqlite(db, "prepare series");
    for (int s = 0; s < o->series; s++) {
        sqlite3_bind_int(add, 1, s + 1);
        sqlite3_bind_text(add, 2, nm->sensor[s / 2], -1, SQLITE_STATIC);
        sqlite3_bind_text(add, 3, quantity[s % 2], -1, SQLITE_STATIC);
        sqlite3_bind_text(add, 4, unit[s % 2], -1, SQLITE_STATIC);
        if (sqlite3_step(add) != SQLITE_DONE)
            die_sqlite(db, "insert series");
        sqlite3_reset(add);
    }
    sqlite3_finalize(add);
    if (sqlite3_prepare_v2(db, "INSERT INTO peers (id, addr) VALUES (?1, ?2)",
                           -1, &add, NULL) != SQLITE_OK)
        die_sqlite(db, "prepare peers");
    for (int k = 0; k < nm->n_sensor; k++) {
        sqlite3_bind_int(add, 1, k + 1);
        sqlite3_bind_text(add, 2, nm->peer[k], -1, SQLITE_STATIC);
        if (sqlite3_step(add) != SQLITE_DONE)
            die_sqlite(db, "insert peer");
        sqlite3_reset(add);
    }
    sqlite3_finalize(add);
    exec_or_die(db, "COMMIT");
    if (sqlite3_prepare_v2(db,
                           "INSERT OR IGNORE INTO readings"
                           " (series_id, ts, value, recv_ns, peer_id)"
                           " VALUES (?1, ?2, ?3, ?4, ?5)",
                           -1, &ins, NULL) != SQLITE_OK)
        die_sqlite(db, "prepare readings");

    sync();
    c0 = cpu_seconds();
    t0 = clock_mono_ns();
    for (long i = 0; i < o->rows;) {
        exec_or_die(db, "BEGIN IMMEDIATE");
        for (long end = i + o->txn; i < end && i < o->rows; i++) {
            int s;
            int64_t ts;

            reading_at(o, i, &s, &ts);
            sqlite3_bind_int64(ins, 1, s + 1);
            sqlite3_bind_int64(ins, 2, ts);
            sqlite3_bind_double(ins, 3, 20.0 + (double)(i % 1000) / 100.0);
            sqlite3_bind_int64(ins, 4, ts + 5000);
            sqlite3_bind_int64(ins, 5, s / 2 + 1);
            if (sqlite3_step(ins) != SQLITE_DONE)
                die_sqlite(db, "insert reading");
            sqlite3_reset(ins);
        }
        exec_or_die(db, "COMMIT");
    }
    res.wall_s = (double)(clock_mono_ns() - t0) / 1e9;
    res.cpu_s = cpu_seconds() - c0;
    res.rows_per_s = (double)o->rows / res.wall_s;
    sqlite3_finalize(ins);
    sqlite3_close(db);
    return res;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Median and best of rows/s by wall clock, and median rows per CPU s. */
static void
summarize(const struct result *r, int n, double *median, double *best,
          double *per_cpu)
{
    double *v = calloc((size_t)n, sizeof(*v));
    double *c = calloc((size_t)n, sizeof(*c));

    if (v == NULL || c == NULL) {
        fprintf(stderr, "bench_store: out of memory\n");
        exit(1);
    }
    for (int i = 0; i < n; i++) {
        v[i] = r[i].rows_per_s;
        c[i] = r[i].rows_per_s * r[i].wall_s / r[i].cpu_s;
    }
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    qsort(c, (size_t)n, sizeof(*c), cmp_double);
    *median = v[n / 2];
    *best = v[n - 1];
    *per_cpu = c[n / 2];
    free(v);
    free(c);
}

static void
print_runs(const char *name, struct result *r, int n)
{
    printf("%-6s", name);
    for (int i = 0; i < n; i++)
        printf(" %7.0f/s (cpu %4.1f s)", r[i].rows_per_s, r[i].cpu_s);
    printf("\n");
}

int
main(int argc, char **argv)
{
    struct opts o = {
        .rows = 2000000,
        .series = 1000,
        .txn = 10000,
        .sync_off = false,
        .rounds = 5,
        .dir = NULL,
    };
    char store_path[256], bare_path[256];
    struct result *rs, *rb;
    double ms[3], mb[3];
    struct names nm;
    struct stat sb;
    int c;

    for (;;) {
        c = getopt(argc, argv, "n:s:t:f:r:d:h");
        if (c == -1)
            break;
        switch (c) {
        case 'n':
            o.rows = num_arg(optarg, 1, 1000000000);
            break;
        case 's':
            o.series = (int)num_arg(optarg, 2, 1000000) & ~1;
            break;
        case 't':
            o.txn = (int)num_arg(optarg, 1, 10000000);
            break;
        case 'f':
            if (strcmp(optarg, "full") == 0)
                o.sync_off = false;
            else if (strcmp(optarg, "off") == 0)
                o.sync_off = true;
            else
                usage();
            break;
        case 'r':
            o.rounds = (int)num_arg(optarg, 1, 100);
            break;
        case 'd':
            o.dir = optarg;
            break;
        default:
            usage();
        }
    }
    if (optind != argc)
        usage();
    if (o.dir == NULL)
        o.dir = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    snprintf(store_path, sizeof(store_path), "%s/bench-store.db", o.dir);
    snprintf(bare_path, sizeof(bare_path), "%s/bench-bare.db", o.dir);

    nm.n_sensor = o.series / 2;
    nm.sensor = calloc((size_t)nm.n_sensor, sizeof(*nm.sensor));
    nm.peer = calloc((size_t)nm.n_sensor, sizeof(*nm.peer));
    rs = calloc((size_t)o.rounds, sizeof(*rs));
    rb = calloc((size_t)o.rounds, sizeof(*rb));
    if (nm.sensor == NULL || nm.peer == NULL || rs == NULL || rb == NULL) {
        fprintf(stderr, "bench_store: out of memory\n");
        free(nm.sensor);
        free(nm.peer);
        free(rs);
        free(rb);
        return 1;
    }
    for (int k = 0; k < nm.n_sensor; k++) {
        snprintf(nm.sensor[k], NAME_LEN, "sensor-%05d", k);
        snprintf(nm.peer[k], NAME_LEN, "10.0.%d.%d:%d", k / 250 % 256,
                 k % 250 + 2, 40000 + k % 20000);
    }

    printf("bench_store: %ld readings, %d series, %d per transaction, "
           "synchronous=%s (fsync %s), sqlite %s, in %s\n",
           o.rows, o.series, o.txn, o.sync_off ? "OFF" : "FULL",
           o.sync_off ? "off" : "batch", sqlite3_libversion(), o.dir);
    /* Alternate which path goes first, against order effects. */
    for (int i = 0; i < o.rounds; i++) {
        if (i % 2 == 0) {
            rb[i] = run_bare(&o, &nm, bare_path);
            rs[i] = run_store(&o, &nm, store_path);
        } else {
            rs[i] = run_store(&o, &nm, store_path);
            rb[i] = run_bare(&o, &nm, bare_path);
        }
    }
    print_runs("bare", rb, o.rounds);
    print_runs("store", rs, o.rounds);
    summarize(rs, o.rounds, &ms[0], &ms[1], &ms[2]);
    summarize(rb, o.rounds, &mb[0], &mb[1], &mb[2]);
    printf("median: store %.0f rows/s, bare %.0f rows/s, store/bare %.1f %%\n",
           ms[0], mb[0], 100.0 * ms[0] / mb[0]);
    printf("best:   store %.0f rows/s, bare %.0f rows/s, store/bare %.1f %%\n",
           ms[1], mb[1], 100.0 * ms[1] / mb[1]);
    printf("cpu:    store %.0f rows/cpu-s, bare %.0f rows/cpu-s, "
           "store/bare %.1f %%\n",
           ms[2], mb[2], 100.0 * ms[2] / mb[2]);
    if (stat(store_path, &sb) == 0)
        printf("database size: %.1f MB (%.1f bytes/reading)\n",
               (double)sb.st_size / 1e6, (double)sb.st_size / (double)o.rows);
    remove_db(store_path);
    remove_db(bare_path);
    free(nm.sensor);
    free(nm.peer);
    free(rs);
    free(rb);
    return 0;
}
