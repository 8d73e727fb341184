/*
 * sqlite_floor: what SQLite alone costs per reading on this machine, with
 * sensornet's readings table (schema version 2 of src/server/store_sqlite.c:
 * WITHOUT ROWID, keyed by series and timestamp) and its writer settings
 * (WAL, synchronous FULL, 64 MiB cache, checkpoint every 10,000 pages),
 * committing groups of --group rows like the writer's group commit. No
 * network, no parsing, no series bookkeeping: the ceiling of a store that
 * inserts through one SQLite connection, which sensornet's writer is.
 *
 *   sqlite_floor --dir DIR [--rows N] [--group N] [--series N]
 *                [--multi K]
 *
 * --multi K inserts K rows per statement (one INSERT with K value tuples)
 * instead of one; K = 1 is what store_sqlite.c does today. Prints one line:
 *   multi=K rows=N seconds=S rate=R cpu_s=C us_per_row=U
 * SPDX-License-Identifier: MIT
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <unistd.h>

#include "util/clock.h"

/* Lines a connection sends in one burst: readings reach the writer in
 * runs of one series, interleaved with the other connections' runs. */
#define RUN_LEN 20

struct row {
    int64_t series, ts, recv, peer;
    double value;
};

static void
die(sqlite3 *db, const char *what)
{
    fprintf(stderr, "sqlite_floor: %s: %s\n", what,
            db != NULL ? sqlite3_errmsg(db) : "out of memory");
    exit(1);
}

static double
cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void
exec(sqlite3 *db, const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        die(db, sql);
}

static void
bind_row(sqlite3_stmt *st, int first, const struct row *r)
{
    sqlite3_bind_int64(st, first, r->series);
    sqlite3_bind_int64(st, first + 1, r->ts);
    sqlite3_bind_double(st, first + 2, r->value);
    sqlite3_bind_int64(st, first + 3, r->recv);
    sqlite3_bind_int64(st, first + 4, r->peer);
}

static void
step(sqlite3 *db, sqlite3_stmt *st)
{
    if (sqlite3_step(st) != SQLITE_DONE)
        die(db, "insert");
    sqlite3_reset(st);
}

int
main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"dir", required_argument, NULL, 'd'},
        {"rows", required_argument, NULL, 'n'},
        {"group", required_argument, NULL, 'g'},
        {"series", required_argument, NULL, 's'},
        {"multi", required_argument, NULL, 'm'},
        {NULL, 0, NULL, 0}};
    const char *dir = "/tmp";
    long rows = 2000000, group = 20000, series = 100, multi = 1, done = 0;
    long i, k;
    char path[4096], *sql;
    size_t len;
    sqlite3 *db = NULL;
    sqlite3_stmt *st;
    struct row *batch;
    int64_t *seq, base = clock_real_ns(), t0;
    double c0, secs, cpu;
    int ch;

    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'd': dir = optarg; break;
        case 'n': rows = strtol(optarg, NULL, 10); break;
        case 'g': group = strtol(optarg, NULL, 10); break;
        case 's': series = strtol(optarg, NULL, 10); break;
        case 'm': multi = strtol(optarg, NULL, 10); break;
        default:
            fprintf(stderr, "usage: sqlite_floor --dir DIR [--rows N] "
                            "[--group N] [--series N] [--multi K]\n");
            return 2;
        }
    }
    if (rows < 1 || rows > 100000000 || group < 1 || group > 1000000 ||
        series < 1 || series > 1000000 || multi < 1 || multi > 500 ||
        group % multi != 0) {
        fprintf(stderr, "sqlite_floor: bad sizes (--group must be a "
                        "multiple of --multi)\n");
        return 2;
    }
    snprintf(path, sizeof(path), "%s/floor.db", dir);
    unlink(path);
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die(db, "open");
    exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
             " PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 10000;"
             " PRAGMA temp_store = MEMORY;"
             "CREATE TABLE readings ("
             "  series_id INTEGER NOT NULL, ts INTEGER NOT NULL,"
             "  value REAL NOT NULL, recv_ns INTEGER NOT NULL,"
             "  peer_id INTEGER NOT NULL,"
             "  PRIMARY KEY (series_id, ts)) WITHOUT ROWID;");
    sql = malloc(128 + (size_t)multi * 16);
    batch = calloc((size_t)group, sizeof(*batch));
    seq = calloc((size_t)series, sizeof(*seq));
    if (sql == NULL || batch == NULL || seq == NULL)
        die(NULL, "setup");
    len = (size_t)snprintf(sql, 128, "INSERT OR IGNORE INTO readings"
                                     " (series_id, ts, value, recv_ns,"
                                     " peer_id) VALUES ");
    for (k = 0; k < multi; k++) {
        memcpy(sql + len, k ? ",(?,?,?,?,?)" : "(?,?,?,?,?)",
               k ? 12 : 11);
        len += k ? 12 : 11;
    }
    sql[len] = '\0';
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st,
                           NULL) != SQLITE_OK)
        die(db, "prepare");
    t0 = clock_mono_ns();
    c0 = cpu_seconds();
    while (done < rows) {
        for (i = 0; i < group; i++) {
            long s = (i / RUN_LEN) % series;

            batch[i] = (struct row){.series = s + 1, .ts = base + seq[s]++,
                                    .value = (double)(i % 4000) / 100,
                                    .recv = base + done + i, .peer = s + 1};
        }
        exec(db, "BEGIN IMMEDIATE");
        for (i = 0; i < group; i += multi) {
            for (k = 0; k < multi; k++)
                bind_row(st, (int)(k * 5 + 1), &batch[i + k]);
            step(db, st);
        }
        exec(db, "COMMIT");
        done += group;
    }
    secs = (double)(clock_mono_ns() - t0) / 1e9;
    cpu = cpu_seconds() - c0;
    printf("multi=%ld rows=%ld seconds=%.3f rate=%.0f cpu_s=%.3f "
           "us_per_row=%.3f\n",
           multi, done, secs, (double)done / secs, cpu, 1e6 * cpu / done);
    sqlite3_finalize(st);
    sqlite3_close(db);
    unlink(path);
    snprintf(path, sizeof(path), "%s/floor.db-wal", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/floor.db-shm", dir);
    unlink(path);
    free(sql);
    free(batch);
    free(seq);
    return 0;
}
