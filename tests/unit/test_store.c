/*
 * test_store: the store.h contract, run against every backend available.
 *
 * The SQLite backend always runs. When SENSORNET_TEST_PG holds a libpq
 * conninfo, the backend-generic tests run again against PostgreSQL, each in
 * a schema of its own (search_path), dropped at the end. Tests that are
 * about SQLite files (corruption, migration, disk full, fsync) are
 * SQLite-only.
 *
 * Faults come from three hooks installed before SQLite starts: an
 * allocator that fails the Nth allocation (SQLite's and the backend's: it
 * allocates through sqlite3_malloc), a VFS shim that counts and fails
 * writes and syncs, and an auto-extension that sets max_page_count.
 * Disk full is also tested for real on a 1 MiB tmpfs when mount(2) works
 * (root; CI is root and fails instead of skipping).
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "server/store.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SN_APP_ID 0x534e4554
#define NO_VALUE INT64_MIN

/* ------------------------------------------------------------------ */
/* Fault hooks                                                        */

/* Allocator: fail_alloc_at = N fails the Nth allocation from now (once). */
static long fail_alloc_at;
static long n_alloc_failed;
static sqlite3_mem_methods real_mem;

static bool
alloc_should_fail(void)
{
    if (fail_alloc_at <= 0)
        return false;
    if (--fail_alloc_at > 0)
        return false;
    n_alloc_failed++;
    return true;
}

static void *
t_malloc(int n)
{
    return alloc_should_fail() ? NULL : real_mem.xMalloc(n);
}

static void *
t_realloc(void *p, int n)
{
    return alloc_should_fail() ? NULL : real_mem.xRealloc(p, n);
}

/* VFS shim: counts syncs per file kind, fails a chosen write or sync. */
static sqlite3_vfs *real_vfs;
static sqlite3_vfs shim_vfs;
static int n_sync_wal, n_sync_db;
static int fail_sync_wal_at; /* fail the Nth WAL sync from now */
static int fail_write_at;    /* fail the Nth write from now (any file) */
static int fail_write_rc = SQLITE_IOERR_WRITE;

struct shim_file {
    sqlite3_file base;
    sqlite3_file *real;
    bool wal;
};

static bool
countdown(int *at)
{
    if (*at <= 0)
        return false;
    return --*at == 0;
}

#define REAL(f) (((struct shim_file *)(f))->real)

static int
sh_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}

static int
sh_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}

static int
sh_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    if (countdown(&fail_write_at))
        return fail_write_rc;
    return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}

static int
sh_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}

static int
sh_sync(sqlite3_file *f, int flags)
{
    if (((struct shim_file *)f)->wal) {
        n_sync_wal++;
        if (countdown(&fail_sync_wal_at))
            return SQLITE_IOERR_FSYNC;
    } else {
        n_sync_db++;
    }
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}

static int
sh_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}

static int
sh_lock(sqlite3_file *f, int lock)
{
    return REAL(f)->pMethods->xLock(REAL(f), lock);
}

static int
sh_unlock(sqlite3_file *f, int lock)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), lock);
}

static int
sh_check_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int
sh_file_control(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int
sh_sector_size(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}

static int
sh_device_chars(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

static int
sh_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **p)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, pgsz, extend, p);
}

static int
sh_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}

static void
sh_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}

static int
sh_shm_unmap(sqlite3_file *f, int delete_flag)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), delete_flag);
}

static int
sh_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **pp)
{
    return REAL(f)->pMethods->xFetch(REAL(f), off, amt, pp);
}

static int
sh_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static const sqlite3_io_methods shim_io = {
    .iVersion = 3,
    .xClose = sh_close,
    .xRead = sh_read,
    .xWrite = sh_write,
    .xTruncate = sh_truncate,
    .xSync = sh_sync,
    .xFileSize = sh_file_size,
    .xLock = sh_lock,
    .xUnlock = sh_unlock,
    .xCheckReservedLock = sh_check_reserved,
    .xFileControl = sh_file_control,
    .xSectorSize = sh_sector_size,
    .xDeviceCharacteristics = sh_device_chars,
    .xShmMap = sh_shm_map,
    .xShmLock = sh_shm_lock,
    .xShmBarrier = sh_shm_barrier,
    .xShmUnmap = sh_shm_unmap,
    .xFetch = sh_fetch,
    .xUnfetch = sh_unfetch,
};

static int
sh_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags,
        int *out_flags)
{
    struct shim_file *sf = (struct shim_file *)f;
    int rc;

    (void)vfs;
    sf->real = (sqlite3_file *)(sf + 1);
    sf->wal = (flags & SQLITE_OPEN_WAL) != 0;
    rc = real_vfs->xOpen(real_vfs, name, sf->real, flags, out_flags);
    sf->base.pMethods = sf->real->pMethods != NULL ? &shim_io : NULL;
    return rc;
}

/* Auto-extension: PRAGMA max_page_count on every new connection. */
static int test_max_pages;

static int
max_pages_hook(sqlite3 *db, const char **err, const void *api)
{
    char sql[64];

    (void)err;
    (void)api;
    if (test_max_pages <= 0)
        return SQLITE_OK;
    snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %d", test_max_pages);
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

static void
install_hooks(void)
{
    sqlite3_mem_methods mem;

    /* The default allocator is configured before SQLite initialises. */
    sqlite3_shutdown();
    if (sqlite3_config(SQLITE_CONFIG_GETMALLOC, &real_mem) != SQLITE_OK)
        abort();
    mem = real_mem;
    mem.xMalloc = t_malloc;
    mem.xRealloc = t_realloc;
    if (sqlite3_config(SQLITE_CONFIG_MALLOC, &mem) != SQLITE_OK)
        abort();
    if (sqlite3_initialize() != SQLITE_OK)
        abort();

    real_vfs = sqlite3_vfs_find(NULL);
    shim_vfs = *real_vfs;
    shim_vfs.zName = "sntest";
    shim_vfs.szOsFile = (int)sizeof(struct shim_file) + real_vfs->szOsFile;
    shim_vfs.xOpen = sh_open;
    shim_vfs.pNext = NULL;
    if (sqlite3_vfs_register(&shim_vfs, 1) != SQLITE_OK)
        abort();
    /* The cast is the documented way to pass an entry point. */
    sqlite3_auto_extension((void (*)(void))(uintptr_t)max_pages_hook);
}

static void
reset_faults(void)
{
    fail_alloc_at = 0;
    fail_sync_wal_at = 0;
    fail_write_at = 0;
    fail_write_rc = SQLITE_IOERR_WRITE;
    test_max_pages = 0;
    n_sync_wal = 0;
    n_sync_db = 0;
}

/* ------------------------------------------------------------------ */
/* Fixture: one backend, one temporary directory, one database         */

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
    char mnt[PATH_MAX + 32]; /* tmpfs mount point, "" if none */
    char *conninfo;          /* PostgreSQL: with our search_path */
    char schema[64];
    PGconn *pg;
    struct store_conf conf;
};

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
        return -1; /* main() runs this group only when it is set */
    f->pg = PQconnectdb(ci);
    if (PQstatus(f->pg) != CONNECTION_OK) {
        print_error("cannot connect to SENSORNET_TEST_PG: %s",
                    PQerrorMessage(f->pg));
        return -1;
    }
    snprintf(f->schema, sizeof(f->schema), "sn_test_%ld_%d", (long)getpid(),
             ++seq);
    snprintf(sql, sizeof(sql), "CREATE SCHEMA %s; SET search_path TO %s",
             f->schema, f->schema);
    res = PQexec(f->pg, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        print_error("%s: %s", sql, PQerrorMessage(f->pg));
        PQclear(res);
        return -1;
    }
    PQclear(res);
    /* Point the store at the schema: a keyword/value conninfo takes one
     * more keyword, a URI one more parameter. */
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
    reset_faults();
    f->be = be;
    snprintf(f->dir, sizeof(f->dir), "%s/sn-store-XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/sensornet.db", f->dir);
    f->conf.sqlite_path = f->path;
    f->conf.fsync = STORE_FSYNC_BATCH;
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
    if (type == FTW_DP)
        return rmdir(path);
    return unlink(path);
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    int rc = 0;

    reset_faults();
    if (f->pg != NULL) {
        char sql[128];

        if (f->schema[0] != '\0') {
            snprintf(sql, sizeof(sql), "DROP SCHEMA %s CASCADE", f->schema);
            PQclear(PQexec(f->pg, sql));
        }
        PQfinish(f->pg);
    }
    if (f->mnt[0] != '\0')
        umount2(f->mnt, MNT_DETACH);
    if (nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        rc = -1;
    free(f->conninfo);
    free(f);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Helpers                                                            */

static struct store *
open_ok(struct fx *f)
{
    char err[STORE_ERR_LEN] = "";
    int why = 0;
    struct store *st = store_open(&f->conf, err, &why);

    if (st == NULL)
        fail_msg("store_open(%s): %d %s", f->be->name, why, err);
    return st;
}

/* store_open must fail with want; returns the message. */
static void
open_fails(struct fx *f, int want, const char *msg_part)
{
    char err[STORE_ERR_LEN] = "";
    int why = 0;
    struct store *st = store_open(&f->conf, err, &why);

    if (st != NULL) {
        store_close(st);
        fail_msg("store_open succeeded, expected %d", want);
    }
    if (why != want)
        fail_msg("store_open: got %d (%s), expected %d", why, err, want);
    if (msg_part != NULL && strstr(err, msg_part) == NULL)
        fail_msg("store_open message \"%s\" lacks \"%s\"", err, msg_part);
}

static struct store_reading
rd(const char *sensor, const char *quantity, const char *unit, double value,
   int64_t ts)
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
        .peer = "10.0.2.135:54812",
    };
    return r;
}

static void
append_ok(struct store *st, const struct store_reading *r)
{
    int rc = store_append(st, r);

    if (rc != 0)
        fail_msg("store_append: %d %s", rc, store_errmsg(st));
}

static void
commit_ok(struct store *st)
{
    int rc = store_commit(st);

    if (rc != 0)
        fail_msg("store_commit: %d %s", rc, store_errmsg(st));
}

static void
begin_ok(struct store *st)
{
    int rc = store_begin(st);

    if (rc != 0)
        fail_msg("store_begin: %d %s", rc, store_errmsg(st));
}

/*
 * One value from a query through a connection of our own: *num as a
 * double and *i as an integer; false for SQL NULL or no row. Standard SQL,
 * so it runs on both backends.
 */
static bool
query1(struct fx *f, const char *sql, double *num, int64_t *i)
{
    bool found = false;

    if (f->be->pg) {
        PGresult *res = PQexec(f->pg, sql);

        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            fail_msg("%s: %s", sql, PQerrorMessage(f->pg));
        if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)) {
            const char *text = PQgetvalue(res, 0, 0);
            char *end = NULL;

            /* An integer column parses whole; a float one as a double
             * (and its integer part, which no caller then uses). */
            *num = strtod(text, &end);
            if (end == text || *end != '\0')
                fail_msg("%s: not a number: \"%s\"", sql, text);
            *i = strtoll(text, NULL, 10);
            found = true;
        }
        PQclear(res);
    } else {
        sqlite3 *db = NULL;
        sqlite3_stmt *q = NULL;
        int rc = sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL);

        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(q);
        if (rc == SQLITE_ROW && sqlite3_column_type(q, 0) != SQLITE_NULL) {
            *num = sqlite3_column_double(q, 0);
            *i = sqlite3_column_int64(q, 0);
            found = true;
        }
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            fail_msg("%s: %s", sql, sqlite3_errmsg(db));
        sqlite3_finalize(q);
        sqlite3_close(db);
    }
    return found;
}

static double
q_num(struct fx *f, const char *sql)
{
    double v;
    int64_t i;

    return query1(f, sql, &v, &i) ? v : (double)NO_VALUE;
}

static int64_t
q_int(struct fx *f, const char *sql)
{
    double v;
    int64_t i;

    return query1(f, sql, &v, &i) ? i : NO_VALUE;
}

/*
 * What must hold between the tables after any sequence of commits,
 * rollbacks and retention steps: each series counts exactly its stored
 * readings; on SQLite, first_ts is exactly its oldest stored reading.
 */
static void
check_invariants(struct fx *f)
{
    assert_int_equal(q_int(f, "SELECT count(*) FROM series s WHERE count <>"
                              " (SELECT count(*) FROM readings r"
                              "  WHERE r.series_id = s.id)"),
                     0);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings r WHERE NOT"
                              " EXISTS (SELECT 1 FROM series s"
                              "  WHERE s.id = r.series_id)"),
                     0);
    if (f->be->pg)
        return;
    assert_int_equal(q_int(f, "SELECT count(*) FROM series s WHERE first_ts"
                              " IS NOT (SELECT min(ts) FROM readings r"
                              "  WHERE r.series_id = s.id)"),
                     0);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings r WHERE NOT"
                              " EXISTS (SELECT 1 FROM peers p"
                              "  WHERE p.id = r.peer_id)"),
                     0);
}

/* Run SQL on a raw SQLite connection (test set-up only). */
static void
raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    char *msg = NULL;
    int rc = sqlite3_open(path, &db);

    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, msg != NULL ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    sqlite3_close(db);
}

static void
write_file(const char *path, const void *p, size_t len)
{
    FILE *fp = fopen(path, "wb");

    assert_non_null(fp);
    assert_int_equal(fwrite(p, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* The whole file, for byte-for-byte comparisons (caller frees). */
static char *
read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    long n;

    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    n = ftell(fp);
    assert_true(n >= 0);
    rewind(fp);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static bool
file_exists(const char *path)
{
    struct stat sb;

    return stat(path, &sb) == 0;
}

/* Open must refuse the file at f->path and leave it byte-identical, with
 * no journal or WAL file made next to it. */
static void
refused_untouched(struct fx *f, int want, const char *msg_part)
{
    char side[PATH_MAX + 96];
    size_t before_len, after_len;
    char *before = read_file(f->path, &before_len);
    char *after;

    open_fails(f, want, msg_part);
    after = read_file(f->path, &after_len);
    assert_int_equal(before_len, after_len);
    assert_memory_equal(before, after, before_len);
    snprintf(side, sizeof(side), "%s-journal", f->path);
    assert_false(file_exists(side));
    free(before);
    free(after);
}

/* ------------------------------------------------------------------ */
/* Backend-generic tests                                              */

static void
test_create_append_commit(void **state)
{
    struct fx *f = *state;
    struct store *st = open_ok(f);
    struct store_reading r[3] = {
        rd("Sensor1", "temperature", "°C", 25.34, 1000),
        rd("Sensor1", "temperature", "°C", 25.5, 2000),
        rd("Sensor2", "humidity", "%", 57.96, 1000),
    };

    assert_string_equal(store_name(st), f->be->name);
    begin_ok(st);
    for (size_t i = 0; i < ARRAY_LEN(r); i++)
        append_ok(st, &r[i]);
    commit_ok(st);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 3);
    assert_int_equal(q_int(f, "SELECT count(*) FROM series"), 2);
    store_close(st);

    /* Reopening finds the schema and the data; appends go on. */
    st = open_ok(f);
    r[0].ts_ns = 3000;
    begin_ok(st);
    append_ok(st, &r[0]);
    commit_ok(st);
    store_close(st);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 4);
    assert_int_equal(q_int(f, "SELECT count(*) FROM series"), 2);
    check_invariants(f);
}

static void
test_resend_stored_once(void **state)
{
    struct fx *f = *state;
    struct store *st = open_ok(f);
    struct store_reading a = rd("s1", "temperature", "°C", 20.0, 1000);
    struct store_reading b = rd("s1", "temperature", "°C", 21.0, 2000);
    struct store_reading again = a;

    again.value = 99.0; /* same key: the first write wins */
    again.recv_ns = 5000;
    begin_ok(st);
    append_ok(st, &a);
    append_ok(st, &b);
    append_ok(st, &a); /* twice in one transaction */
    commit_ok(st);
    begin_ok(st);
    append_ok(st, &again); /* resent in a later transaction */
    append_ok(st, &b);
    commit_ok(st);
    store_close(st);

    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 2);
    assert_int_equal(q_int(f, "SELECT count FROM series WHERE sensor = 's1'"),
                     2);
    assert_int_equal(q_int(f, "SELECT last_seen FROM series"), 3000);
    assert_true(q_num(f, "SELECT value FROM readings WHERE ts = 1000") == 20.0);
    check_invariants(f);
}

static void
test_rollback_discards(void **state)
{
    struct fx *f = *state;
    struct store *st = open_ok(f);
    struct store_reading old = rd("old", "temperature", "°C", 1.0, 500);
    struct store_reading a = rd("new", "temperature", "°C", 2.0, 1000);
    struct store_reading b = rd("new", "humidity", "%", 50.0, 1000);

    a.peer = "10.0.2.200:40000"; /* a peer first seen in the rollback */
    b.peer = a.peer;
    begin_ok(st);
    append_ok(st, &old);
    commit_ok(st);

    begin_ok(st);
    append_ok(st, &a);
    append_ok(st, &b);
    append_ok(st, &old); /* a duplicate, rolled back with the rest */
    store_rollback(st);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 1);
    assert_int_equal(q_int(f, "SELECT count(*) FROM series"), 1);
    store_rollback(st); /* idle: a no-op */

    /* The same readings again: the series created by the rolled-back
     * transaction must be created again, not found in a stale cache. */
    begin_ok(st);
    append_ok(st, &a);
    append_ok(st, &b);
    commit_ok(st);
    store_close(st);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 3);
    assert_int_equal(q_int(f, "SELECT count(*) FROM series"), 3);
    assert_int_equal(q_int(f, "SELECT sum(count) FROM series"), 3);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings r JOIN series s"
                              " ON s.id = r.series_id WHERE s.sensor = 'new'"),
                     2);
    check_invariants(f);
}

static void
test_series_aggregates(void **state)
{
    struct fx *f = *state;
    struct store *st = open_ok(f);
    struct store_reading r;

    begin_ok(st);
    /* Out of order: the last value is the one with the greatest ts. */
    r = rd("s", "temperature", "°C", 3.0, 30);
    r.recv_ns = 100;
    append_ok(st, &r);
    r = rd("s", "temperature", "°C", 1.0, 10);
    r.recv_ns = 200;
    append_ok(st, &r);
    r = rd("s", "temperature", "°C", 2.0, 20);
    r.recv_ns = 300;
    append_ok(st, &r);
    commit_ok(st);

    assert_int_equal(q_int(f, "SELECT count FROM series"), 3);
    assert_int_equal(q_int(f, "SELECT last_ts FROM series"), 30);
    assert_true(q_num(f, "SELECT last_value FROM series") == 3.0);
    assert_int_equal(q_int(f, "SELECT first_seen FROM series"), 100);
    assert_int_equal(q_int(f, "SELECT last_seen FROM series"), 300);

    begin_ok(st);
    r = rd("s", "temperature", "°C", 0.5, 5); /* older: last_* stay */
    r.recv_ns = 400;
    append_ok(st, &r);
    commit_ok(st);
    assert_int_equal(q_int(f, "SELECT count FROM series"), 4);
    assert_int_equal(q_int(f, "SELECT last_ts FROM series"), 30);
    assert_true(q_num(f, "SELECT last_value FROM series") == 3.0);
    assert_int_equal(q_int(f, "SELECT first_seen FROM series"), 100);
    assert_int_equal(q_int(f, "SELECT last_seen FROM series"), 400);

    begin_ok(st);
    r = rd("s", "temperature", "K", 300.0, 40); /* newer, other unit */
    r.recv_ns = 50;
    append_ok(st, &r);
    commit_ok(st);
    store_close(st);
    assert_int_equal(q_int(f, "SELECT count FROM series"), 5);
    assert_int_equal(q_int(f, "SELECT last_ts FROM series"), 40);
    assert_true(q_num(f, "SELECT last_value FROM series") == 300.0);
    assert_int_equal(q_int(f, "SELECT first_seen FROM series"), 50);
    assert_int_equal(q_int(f, "SELECT count(*) FROM series WHERE unit = 'K'"),
                     1);
    if (!f->be->pg)
        assert_int_equal(q_int(f, "SELECT first_ts FROM series"), 5);
    check_invariants(f);
}

static void
test_text_form_readings(void **state)
{
    struct fx *f = *state;
    struct store *st = open_ok(f);
    struct store_reading r = rd("Sensor1", "temperature", "°C", 25.34, 0);

    /* The writer gives text-form readings their (unique) arrival time. */
    r.has_ts = false;
    r.ts_ns = 1700000000000000001;
    r.recv_ns = r.ts_ns;
    begin_ok(st);
    append_ok(st, &r);
    r.ts_ns++;
    r.recv_ns++;
    append_ok(st, &r);
    commit_ok(st);
    store_close(st);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 2);
    assert_int_equal(q_int(f, "SELECT max(ts) FROM readings"),
                     1700000000000000002);
    assert_int_equal(q_int(f, "SELECT count FROM series"), 2);
    check_invariants(f);
}

static void
test_retention_steps(void **state)
{
    struct fx *f = *state;
    struct store *st = open_ok(f);
    int total = 0, n;

    begin_ok(st);
    for (int i = 1; i <= 10; i++) {
        struct store_reading a = rd("a", "temperature", "°C", i, i * 100);
        struct store_reading b = rd("b", "humidity", "%", i, i * 100 + 1);

        append_ok(st, &a);
        append_ok(st, &b);
    }
    commit_ok(st);

    assert_int_equal(store_retention_step(st, 600, 0), 0);
    /* Readings with ts < 600: 100..500 of a, 101..501 of b. */
    for (int step = 0; step < 20; step++) {
        n = store_retention_step(st, 600, 3);
        if (n < 0)
            fail_msg("retention: %d %s", n, store_errmsg(st));
        assert_true(n <= 3);
        total += n;
        if (n == 0)
            break;
        assert_true(q_int(f, "SELECT count(*) FROM readings") == 20 - total);
    }
    assert_int_equal(total, 10);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 10);
    assert_int_equal(q_int(f, "SELECT min(ts) FROM readings"), 600);
    assert_int_equal(q_int(f, "SELECT sum(count) FROM series"), 10);
    assert_int_equal(q_int(f, "SELECT count FROM series WHERE sensor = 'a'"),
                     5);
    if (!f->be->pg) {
        assert_int_equal(
            q_int(f, "SELECT first_ts FROM series WHERE sensor = 'b'"), 601);
    }

    /* The store still appends after retention, aggregates intact; a
     * reading older than what retention left is found by the next step. */
    begin_ok(st);
    struct store_reading late = rd("a", "temperature", "°C", 11, 1100);
    struct store_reading early = rd("b", "humidity", "%", 0, 550);
    append_ok(st, &late);
    append_ok(st, &early);
    commit_ok(st);
    check_invariants(f);
    assert_int_equal(store_retention_step(st, 600, 100), 1);
    store_close(st);
    assert_int_equal(q_int(f, "SELECT count FROM series WHERE sensor = 'a'"),
                     6);
    assert_int_equal(q_int(f, "SELECT count FROM series WHERE sensor = 'b'"),
                     5);
    check_invariants(f);
}

static void
test_api_misuse(void **state)
{
    struct fx *f = *state;
    struct store *st = open_ok(f);
    struct store_reading ok = rd("s", "temperature", "°C", 1.0, 100);
    struct store_reading bad;

    assert_int_equal(store_append(st, &ok), STORE_E_INVAL);
    assert_int_equal(store_commit(st), STORE_E_INVAL);
    assert_true(store_errmsg(st)[0] != '\0');
    begin_ok(st);
    assert_int_equal(store_begin(st), STORE_E_INVAL);
    assert_int_equal(store_retention_step(st, 1000, 10), STORE_E_INVAL);

    /* A bad reading is refused alone; the transaction goes on. */
    bad = ok;
    bad.value = NAN;
    assert_int_equal(store_append(st, &bad), STORE_E_INVAL);
    bad = ok;
    bad.sensor_len = 0;
    assert_int_equal(store_append(st, &bad), STORE_E_INVAL);
    bad = ok;
    bad.unit = "a unit that is far longer than thirty-two bytes";
    bad.unit_len = strlen(bad.unit);
    assert_int_equal(store_append(st, &bad), STORE_E_INVAL);
    append_ok(st, &ok);
    commit_ok(st);
    store_close(st);
    store_close(NULL);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 1);
    check_invariants(f);
}

/* More series than the id cache holds, across transactions. */
static void
test_series_cache_bound(void **state)
{
    struct fx *f = *state;
    struct store *st;
    char name[32];

    f->conf.series_cache = 8;
    st = open_ok(f);
    for (int t = 0; t < 3; t++) {
        begin_ok(st);
        for (int i = 0; i < 100; i++) {
            struct store_reading r;

            snprintf(name, sizeof(name), "s%03d", i);
            r = rd(name, "temperature", "°C", t, 1000 * (t + 1) + i);
            append_ok(st, &r);
            append_ok(st, &r); /* duplicate: not counted */
        }
        if (t == 1) {
            store_rollback(st);
            continue;
        }
        commit_ok(st);
    }

    /* New series created before and after evictions, then rolled back:
     * none of their ids may survive in the cache. The retry creates them
     * in the other order, so that reused row ids differ. */
    for (int t = 0; t < 2; t++) {
        begin_ok(st);
        for (int i = 0; i < 30; i++) {
            struct store_reading r;

            snprintf(name, sizeof(name), "n%03d", t == 0 ? i % 10 : 9 - i % 10);
            r = rd(name, "humidity", "%", i, 5000 + i);
            append_ok(st, &r);
        }
        if (t == 0)
            store_rollback(st);
        else
            commit_ok(st);
    }
    store_close(st);
    check_invariants(f);
    assert_int_equal(q_int(f, "SELECT count(*) FROM series"), 110);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 230);
    assert_int_equal(
        q_int(f, "SELECT count(*) FROM series WHERE sensor = 'n000'"), 1);
    assert_int_equal(q_int(f, "SELECT count FROM series WHERE sensor = 'n000'"),
                     3);
    assert_int_equal(q_int(f, "SELECT count(*) FROM series"
                              " WHERE sensor LIKE 's%'"),
                     100);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings r JOIN series s"
                              " ON s.id = r.series_id"
                              " WHERE s.sensor LIKE 's%'"),
                     200);
    assert_int_equal(q_int(f, "SELECT min(count) FROM series"
                              " WHERE sensor LIKE 's%'"),
                     2);
    assert_int_equal(q_int(f, "SELECT max(count) FROM series"
                              " WHERE sensor LIKE 's%'"),
                     2);
    assert_true(q_num(f, "SELECT min(last_value) FROM series"
                         " WHERE sensor LIKE 's%'") == 2.0);
    check_invariants(f);
}

/*
 * The batched path (SQLite: readings later than anything their series
 * holds go out many rows per INSERT) must keep "stored once, first write
 * wins, counted exactly". These tests cross the 64-row statement size and
 * its remainders on purpose; on PostgreSQL they check the same contract.
 */

/* The value stored for one key, or NO_VALUE. */
static double
stored_value(struct fx *f, const char *sensor, int64_t ts)
{
    char sql[256];

    snprintf(sql, sizeof(sql),
             "SELECT r.value FROM readings r JOIN series s"
             " ON s.id = r.series_id WHERE s.sensor = '%s' AND r.ts = %" PRId64,
             sensor, ts);
    return q_num(f, sql);
}

static int64_t
series_count(struct fx *f, const char *sensor)
{
    char sql[160];

    snprintf(sql, sizeof(sql), "SELECT count FROM series WHERE sensor = '%s'",
             sensor);
    return q_int(f, sql);
}

/* Duplicates inside one transaction: of a row already inserted, and of a
 * row still waiting in the queue (after the first 64, before the next). */
static void
test_batch_dup_in_batch(void **state)
{
    struct fx *f = *state;
    struct store *st = open_ok(f);
    struct store_reading r;

    begin_ok(st);
    for (int i = 1; i <= 70; i++) {
        r = rd("a", "temperature", "°C", i, i * 10);
        append_ok(st, &r);
    }
    r = rd("a", "temperature", "°C", -1.0, 680); /* queued one: ignored */
    append_ok(st, &r);
    r = rd("a", "temperature", "°C", -2.0, 100); /* inserted one */
    append_ok(st, &r);
    r = rd("a", "temperature", "°C", -3.0, 700); /* the newest */
    append_ok(st, &r);
    for (int i = 71; i <= 200; i++) {
        r = rd("a", "temperature", "°C", i, i * 10);
        append_ok(st, &r);
        append_ok(st, &r); /* at once: the key is the series' newest */
        if (i % 50 == 0) {
            r = rd("b", "humidity", "%", i, i * 10); /* another series */
            append_ok(st, &r);
        }
    }
    commit_ok(st);
    store_close(st);

    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 203);
    assert_int_equal(series_count(f, "a"), 200);
    assert_int_equal(series_count(f, "b"), 3);
    assert_true(stored_value(f, "a", 680) == 68.0);
    assert_true(stored_value(f, "a", 100) == 10.0);
    assert_true(stored_value(f, "a", 700) == 70.0);
    assert_true(stored_value(f, "a", 2000) == 200.0);
    assert_int_equal(q_int(f, "SELECT last_ts FROM series WHERE sensor = 'a'"),
                     2000);
    assert_true(q_num(f, "SELECT last_value FROM series"
                         " WHERE sensor = 'a'") == 200.0);
    check_invariants(f);
}

/* Resends across transactions and across a reopen (the bound comes from
 * the table then), mixed with new readings. */
static void
test_batch_dup_across(void **state)
{
    struct fx *f = *state;
    struct store *st = open_ok(f);
    struct store_reading r;

    begin_ok(st);
    for (int i = 1; i <= 100; i++) {
        r = rd("a", "temperature", "°C", i, i);
        append_ok(st, &r);
    }
    commit_ok(st);

    /* All 100 again (values changed: first write wins), 100 new ones. */
    begin_ok(st);
    for (int i = 1; i <= 200; i++) {
        r = rd("a", "temperature", "°C", i + 1000, i);
        append_ok(st, &r);
    }
    commit_ok(st);
    store_close(st);
    assert_int_equal(series_count(f, "a"), 200);
    assert_true(stored_value(f, "a", 100) == 100.0);
    assert_true(stored_value(f, "a", 101) == 1101.0);

    st = open_ok(f);
    begin_ok(st);
    for (int i = 191; i <= 270; i++) {
        r = rd("a", "temperature", "°C", -i, i);
        append_ok(st, &r);
    }
    commit_ok(st);
    store_close(st);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 270);
    assert_int_equal(series_count(f, "a"), 270);
    assert_true(stored_value(f, "a", 200) == 1200.0);
    assert_true(stored_value(f, "a", 201) == -201.0);
    check_invariants(f);
}

/* Out of order: older readings between newer ones, some of them resent,
 * each counted once, and last_* from the greatest ts. */
static void
test_batch_out_of_order(void **state)
{
    struct fx *f = *state;
    struct store *st = open_ok(f);
    int64_t seen[1000] = {0};
    int n_new = 0;
    struct store_reading r;

    begin_ok(st);
    for (int t = 0; t < 3; t++) {
        if (t == 1) {
            commit_ok(st);
            begin_ok(st);
        }
        for (int i = 0; i < 300; i++) {
            /* A walk that goes mostly up, jumps back and repeats itself:
             * 7919 is prime, so (i * 7919) % 1000 visits keys out of
             * order, and t repeats the first two rounds' keys. */
            int64_t ts = (i * 7919 + t * 131) % 1000;

            if (i % 3 != 0)
                ts = 1000 + t * 1000 + i; /* in order, above the rest */
            if (ts < 1000 && seen[ts] == 0) {
                seen[ts] = 1;
                n_new++;
            } else if (ts >= 1000) {
                n_new++;
            }
            r = rd("s", "temperature", "°C", (double)ts, ts);
            r.recv_ns = 5000 + t * 1000 + i;
            append_ok(st, &r);
        }
    }
    commit_ok(st);
    store_close(st);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), n_new);
    assert_int_equal(series_count(f, "s"), n_new);
    assert_int_equal(q_int(f, "SELECT last_ts FROM series"), 3299);
    assert_true(q_num(f, "SELECT last_value FROM series") == 3299.0);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"
                              " WHERE value <> ts"),
                     0);
    check_invariants(f);
}

/* Rolled back with rows both inserted and queued: nothing stays, and the
 * same readings (and a resend of some) are new again afterwards. */
static void
test_batch_rollback(void **state)
{
    struct fx *f = *state;
    struct store *st = open_ok(f);
    struct store_reading r;

    begin_ok(st);
    for (int i = 1; i <= 10; i++) {
        r = rd("a", "temperature", "°C", i, i);
        append_ok(st, &r);
    }
    commit_ok(st);
    for (int t = 0; t < 2; t++) {
        begin_ok(st);
        for (int i = 5; i <= 150; i++) {
            r = rd("a", "temperature", "°C", i, i);
            append_ok(st, &r);
            r = rd("b", "humidity", "%", i, i);
            append_ok(st, &r);
        }
        if (t == 0)
            store_rollback(st);
        else
            commit_ok(st);
    }
    store_close(st);
    assert_int_equal(series_count(f, "a"), 150);
    assert_int_equal(series_count(f, "b"), 146);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 296);
    check_invariants(f);
}

/* Retention deletes below the bound the store keeps: a reading older than
 * that bound but newer than what is left is new, and counted. */
static void
test_batch_after_retention(void **state)
{
    struct fx *f = *state;
    struct store *st = open_ok(f);
    struct store_reading r;

    begin_ok(st);
    for (int i = 1; i <= 100; i++) {
        r = rd("a", "temperature", "°C", i, i * 10);
        append_ok(st, &r);
    }
    commit_ok(st);
    assert_int_equal(store_retention_step(st, 2000, 1000), 100);

    begin_ok(st);
    r = rd("a", "temperature", "°C", 50, 500); /* deleted: new again */
    append_ok(st, &r);
    append_ok(st, &r);
    for (int i = 101; i <= 180; i++) {
        r = rd("a", "temperature", "°C", i, i * 10);
        append_ok(st, &r);
    }
    commit_ok(st);
    store_close(st);
    assert_int_equal(series_count(f, "a"), 81);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 81);
    assert_int_equal(q_int(f, "SELECT last_ts FROM series"), 1800);
    check_invariants(f);
}

/* A series evicted from a small cache while rows of it wait in the queue
 * comes back and meets them: resends are still recognised. */
static void
test_batch_cache_eviction(void **state)
{
    struct fx *f = *state;
    struct store *st;
    char name[32];
    struct store_reading r;

    f->conf.series_cache = 4;
    st = open_ok(f);
    begin_ok(st);
    /* New readings only, round robin over 10 series: under 64 rows, so
     * on SQLite they all wait in the queue while the cache evicts. */
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 10; i++) {
            snprintf(name, sizeof(name), "e%d", i);
            r = rd(name, "temperature", "°C", round, 100 + round);
            append_ok(st, &r);
        }
    }
    for (int i = 0; i < 10; i++) { /* resend the newest, then an older */
        snprintf(name, sizeof(name), "e%d", i);
        r = rd(name, "temperature", "°C", -1, 104);
        append_ok(st, &r);
        r = rd(name, "temperature", "°C", -1, 102);
        append_ok(st, &r);
    }
    for (int round = 5; round < 30; round++) {
        for (int i = 0; i < 10; i++) {
            snprintf(name, sizeof(name), "e%d", i);
            r = rd(name, "temperature", "°C", round, 100 + round);
            append_ok(st, &r);
            r = rd(name, "temperature", "°C", -1, 99 + round);
            append_ok(st, &r);
        }
    }
    commit_ok(st);
    store_close(st);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 300);
    assert_int_equal(q_int(f, "SELECT min(count) FROM series"), 30);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"
                              " WHERE value < 0"),
                     0);
    check_invariants(f);
}

/* ------------------------------------------------------------------ */
/* SQLite-only tests                                                  */

static void
test_sqlite_schema(void **state)
{
    struct fx *f = *state;
    store_close(open_ok(f));

    assert_int_equal(q_int(f, "PRAGMA application_id"), SN_APP_ID);
    assert_int_equal(q_int(f, "PRAGMA user_version"), 2);
    assert_int_equal(q_int(f, "SELECT count(*) FROM sqlite_schema WHERE"
                              " name = 'readings' AND sql LIKE"
                              " '%WITHOUT ROWID%'"),
                     1);
    assert_int_equal(q_int(f, "SELECT count(*) FROM sqlite_schema WHERE"
                              " name IN ('series', 'peers',"
                              " 'series_first_ts')"),
                     3);
    /* journal_mode is a string: compare through SQL. */
    assert_int_equal(q_int(f, "SELECT journal_mode = 'wal' FROM"
                              " pragma_journal_mode"),
                     1);
}

/* An empty file, and an SQLite file without any schema, become ours. */
static void
test_sqlite_empty_file_created(void **state)
{
    struct fx *f = *state;

    write_file(f->path, "", 0);
    store_close(open_ok(f));
    assert_int_equal(q_int(f, "PRAGMA user_version"), 2);

    assert_int_equal(unlink(f->path), 0);
    raw_exec(f->path, "CREATE TABLE t (x); DROP TABLE t");
    store_close(open_ok(f));
    assert_int_equal(q_int(f, "PRAGMA application_id"), SN_APP_ID);
}

static void
test_sqlite_not_sqlite_refused(void **state)
{
    struct fx *f = *state;
    char text[4096];

    for (size_t i = 0; i < sizeof(text); i++)
        text[i] = (char)('a' + i % 26);
    write_file(f->path, text, sizeof(text));
    refused_untouched(f, STORE_E_CORRUPT, "not an SQLite database");

    write_file(f->path, "short", 5);
    refused_untouched(f, STORE_E_CORRUPT, "not an SQLite database");

    /* An SQLite header on garbage pages. */
    memcpy(text, "SQLite format 3", 16);
    write_file(f->path, text, sizeof(text));
    refused_untouched(f, STORE_E_CORRUPT, NULL);

    /* The read-only handle refuses it the same way. */
    f->conf.flags = STORE_F_READONLY;
    write_file(f->path, "short", 5);
    refused_untouched(f, STORE_E_CORRUPT, "not an SQLite database");
}

static void
test_sqlite_foreign_refused(void **state)
{
    struct fx *f = *state;

    /* Another application's database, application_id 0. */
    raw_exec(f->path, "CREATE TABLE notes (body TEXT);"
                      "INSERT INTO notes VALUES ('keep me')");
    refused_untouched(f, STORE_E_CORRUPT, "not sensornet's");
    assert_int_equal(unlink(f->path), 0);

    /* One that set its own application_id (refused before SQLite). */
    raw_exec(f->path, "PRAGMA application_id = 1234;"
                      "CREATE TABLE notes (body TEXT)");
    refused_untouched(f, STORE_E_CORRUPT, "another application");
    assert_int_equal(unlink(f->path), 0);

    /* A WAL-mode one: even its journal mode stays as it was. */
    raw_exec(f->path, "PRAGMA journal_mode = WAL;"
                      "CREATE TABLE notes (body TEXT)");
    refused_untouched(f, STORE_E_CORRUPT, "not sensornet's");
    assert_int_equal(q_int(f, "SELECT count(*) FROM notes"), 0);
}

/* The version 1 layout, as the first sensornet release created it. */
static const char v1_ddl[] =
    "PRAGMA application_id = 1397638484;" /* 0x534e4554 */
    "CREATE TABLE series ("
    "  id INTEGER PRIMARY KEY, sensor TEXT NOT NULL,"
    "  quantity TEXT NOT NULL, unit TEXT NOT NULL DEFAULT '',"
    "  first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,"
    "  last_value REAL, last_ts INTEGER,"
    "  count INTEGER NOT NULL DEFAULT 0, UNIQUE (sensor, quantity));"
    "CREATE TABLE readings ("
    "  series_id INTEGER NOT NULL REFERENCES series (id),"
    "  ts INTEGER NOT NULL, value REAL NOT NULL, recv_ns INTEGER NOT NULL,"
    "  peer TEXT NOT NULL DEFAULT '',"
    "  PRIMARY KEY (series_id, ts)) WITHOUT ROWID;"
    "PRAGMA user_version = 1;";

static void
test_sqlite_migrate_v1(void **state)
{
    struct fx *f = *state;
    struct store *st;
    struct store_reading r;

    raw_exec(f->path, v1_ddl);
    raw_exec(f->path,
             "INSERT INTO series VALUES"
             " (1, 'Sensor1', 'temperature', '°C', 10, 30, 25.5, 3000, 2),"
             " (2, 'Sensor2', 'humidity', '%', 15, 15, 57.96, 1500, 1);"
             "INSERT INTO readings VALUES"
             " (1, 1000, 25.34, 10, '10.0.2.135:54812'),"
             " (1, 3000, 25.5, 30, '10.0.2.135:54812'),"
             " (2, 1500, 57.96, 15, '10.0.2.136:40000');");

    /* A read-only handle does not migrate. */
    f->conf.flags = STORE_F_READONLY;
    refused_untouched(f, STORE_E_VERSION, "schema version 1");
    f->conf.flags = 0;

    st = open_ok(f);
    assert_int_equal(q_int(f, "PRAGMA user_version"), 2);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 3);
    assert_int_equal(q_int(f, "SELECT count(*) FROM peers"), 2);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings r JOIN peers p"
                              " ON p.id = r.peer_id WHERE"
                              " p.addr = '10.0.2.135:54812'"),
                     2);
    assert_int_equal(
        q_int(f, "SELECT first_ts FROM series WHERE sensor = 'Sensor1'"), 1000);
    assert_true(q_num(f, "SELECT value FROM readings WHERE ts = 1000") ==
                25.34);

    /* Old readings resent after the upgrade are still stored once. */
    begin_ok(st);
    r = rd("Sensor1", "temperature", "°C", 25.34, 1000);
    append_ok(st, &r);
    r = rd("Sensor1", "temperature", "°C", 26.0, 4000);
    append_ok(st, &r);
    commit_ok(st);
    store_close(st);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 4);
    assert_int_equal(
        q_int(f, "SELECT count FROM series WHERE sensor = 'Sensor1'"), 3);
    assert_int_equal(q_int(f, "SELECT count(*) FROM peers"), 2);
    check_invariants(f);
}

static void
test_sqlite_newer_version_refused(void **state)
{
    struct fx *f = *state;

    store_close(open_ok(f));
    raw_exec(f->path, "PRAGMA user_version = 3");
    refused_untouched(f, STORE_E_VERSION,
                      "database schema version 3 is newer than this "
                      "sensornet (2); upgrade sensornet");
    f->conf.flags = STORE_F_READONLY;
    refused_untouched(f, STORE_E_VERSION, "upgrade sensornet");
}

static void
test_sqlite_open_errors(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX + 64];

    f->conf.fsync = (enum store_fsync)42;
    open_fails(f, STORE_E_INVAL, "fsync");
    assert_false(file_exists(f->path));
    f->conf.fsync = STORE_FSYNC_BATCH;

    f->conf.sqlite_path = f->dir; /* a directory */
    open_fails(f, STORE_E_INVAL, "not a regular file");

    snprintf(path, sizeof(path), "%s/no/such/dir/db", f->dir);
    f->conf.sqlite_path = path;
    open_fails(f, STORE_E_IO, NULL);

    f->conf.sqlite_path = "";
    open_fails(f, STORE_E_INVAL, NULL);
}

static void
test_sqlite_readonly(void **state)
{
    struct fx *f = *state;
    struct store *rw, *ro;
    struct store_reading r = rd("s", "temperature", "°C", 1.0, 100);

    f->conf.flags = STORE_F_READONLY;
    open_fails(f, STORE_E_INVAL, "does not exist");
    assert_false(file_exists(f->path)); /* no schema created */
    write_file(f->path, "", 0);
    refused_untouched(f, STORE_E_INVAL, "is empty");

    f->conf.flags = 0;
    rw = open_ok(f);
    begin_ok(rw);
    append_ok(rw, &r);
    commit_ok(rw);

    /* Opened beside the live writer, as the HTTP API does. */
    f->conf.flags = STORE_F_READONLY;
    ro = open_ok(f);
    assert_string_equal(store_name(ro), "sqlite");
    assert_int_equal(store_begin(ro), STORE_E_INVAL);
    assert_int_equal(store_append(ro, &r), STORE_E_INVAL);
    assert_int_equal(store_retention_step(ro, 1000, 10), STORE_E_INVAL);
    store_close(ro);

    /* The writer is unaffected. */
    r.ts_ns = 200;
    begin_ok(rw);
    append_ok(rw, &r);
    commit_ok(rw);
    store_close(rw);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 2);
    check_invariants(f);
}

static void
test_sqlite_busy(void **state)
{
    struct fx *f = *state;
    struct store *st = open_ok(f);
    struct store_reading r = rd("s", "temperature", "°C", 1.0, 100);
    struct timespec t0, t1;
    sqlite3 *other = NULL;
    double ms;

    assert_int_equal(sqlite3_open(f->path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                     SQLITE_OK);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(store_begin(st), STORE_E_BUSY);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
         (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    assert_true(ms < 1000.0); /* the short busy_timeout, not a stall */
    assert_non_null(strstr(store_errmsg(st), "locked"));
    assert_int_equal(store_retention_step(st, 1000, 10), STORE_E_BUSY);

    assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(other);
    begin_ok(st);
    append_ok(st, &r);
    commit_ok(st);
    store_close(st);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 1);
    check_invariants(f);
}

/* Append batches of n readings until a step fails; returns the failing
 * batch number (its readings are those of fill_batch(st, batch, n)). */
static int
fill_batch(struct store *st, int batch, int n)
{
    char name[32];
    int rc;

    rc = store_begin(st);
    for (int i = 0; rc == 0 && i < n; i++) {
        struct store_reading r;

        snprintf(name, sizeof(name), "sensor-%02d", i % 50);
        r = rd(name, "temperature", "°C", i, (int64_t)batch * n + i);
        rc = store_append(st, &r);
    }
    if (rc == 0)
        rc = store_commit(st);
    if (rc != 0)
        store_rollback(st);
    return rc;
}

static int
fill_until_full(struct store *st, int *batch, int n)
{
    int rc = 0;

    for (*batch = 0; *batch < 2000; ++*batch) {
        rc = fill_batch(st, *batch, n);
        if (rc != 0)
            break;
    }
    return rc;
}

static void
test_sqlite_disk_full_tmpfs(void **state)
{
    struct fx *f = *state;
    struct store *st;
    int batch, rc;

    snprintf(f->mnt, sizeof(f->mnt), "%s/fs", f->dir);
    assert_int_equal(mkdir(f->mnt, 0700), 0);
    if (mount("tmpfs", f->mnt, "tmpfs", 0, "size=1m") != 0) {
        const char *ci = getenv("CI");
        char why[128];

        snprintf(why, sizeof(why), "mount tmpfs: %s", strerror(errno));
        f->mnt[0] = '\0';
        if (ci != NULL && strcmp(ci, "true") == 0)
            fail_msg("%s (CI runs as root and must test ENOSPC)", why);
        print_message("skipped: %s; test_sqlite_disk_full_pages covers "
                      "SQLITE_FULL\n",
                      why);
        skip();
    }
    snprintf(f->path, sizeof(f->path), "%s/sensornet.db", f->mnt);
    st = open_ok(f);
    rc = fill_until_full(st, &batch, 500);
    assert_int_equal(rc, STORE_E_IO);
    assert_non_null(strstr(store_errmsg(st), "disk full"));
    assert_true(batch > 0);

    /* The operator frees space; the same readings go in. */
    assert_int_equal(mount("tmpfs", f->mnt, "tmpfs", MS_REMOUNT, "size=64m"),
                     0);
    assert_int_equal(fill_batch(st, batch, 500), 0);
    store_close(st);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"),
                     (batch + 1) * 500);
    assert_int_equal(q_int(f, "SELECT sum(count) FROM series"),
                     (batch + 1) * 500);
    assert_int_equal(q_int(f, "SELECT integrity_check = 'ok' FROM"
                              " pragma_integrity_check"),
                     1);
    check_invariants(f);
}

static void
test_sqlite_disk_full_pages(void **state)
{
    struct fx *f = *state;
    struct store *st;
    int batch, rc, n;

    store_close(open_ok(f));
    test_max_pages = 64; /* 256 KiB */
    st = open_ok(f);
    rc = fill_until_full(st, &batch, 500);
    assert_int_equal(rc, STORE_E_IO);
    assert_non_null(strstr(store_errmsg(st), "disk full"));
    assert_true(batch > 1);

    /* Retention frees pages; the same readings go in. */
    n = store_retention_step(st, (int64_t)batch * 500 / 2, 1000000);
    assert_true(n > 0);
    assert_int_equal(fill_batch(st, batch, 500), 0);
    store_close(st);
    test_max_pages = 0;
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"),
                     (batch + 1) * 500 - n);
    assert_int_equal(q_int(f, "SELECT sum(count) FROM series"),
                     (batch + 1) * 500 - n);
    check_invariants(f);
}

static void
test_sqlite_fsync_failure(void **state)
{
    struct fx *f = *state;
    struct store *st = open_ok(f);

    assert_int_equal(fill_batch(st, 0, 100), 0);
    fail_sync_wal_at = 1;
    assert_int_equal(fill_batch(st, 1, 100), STORE_E_IO);
    assert_non_null(strstr(store_errmsg(st), "I/O error committing"));
    assert_int_equal(fill_batch(st, 1, 100), 0);

    fail_write_at = 1;
    assert_int_equal(fill_batch(st, 2, 100), STORE_E_IO);
    assert_int_equal(fill_batch(st, 2, 100), 0);

    /* ENOSPC as the VFS reports it. */
    fail_write_at = 1;
    fail_write_rc = SQLITE_FULL;
    assert_int_equal(fill_batch(st, 3, 100), STORE_E_IO);
    assert_non_null(strstr(store_errmsg(st), "disk full"));
    assert_int_equal(fill_batch(st, 3, 100), 0);

    /* A commit that lowers first_ts fails: nothing of it may survive in
     * the store's memory either (retention must still find the row). */
    struct store_reading old = rd("sensor-00", "temperature", "°C", 0, -5);
    begin_ok(st);
    append_ok(st, &old);
    fail_sync_wal_at = 1;
    assert_int_equal(store_commit(st), STORE_E_IO);
    assert_int_equal(store_append(st, &old), STORE_E_IO); /* FAILED */
    store_rollback(st);
    assert_int_equal(store_retention_step(st, 0, 10), 0);
    begin_ok(st);
    append_ok(st, &old);
    commit_ok(st);
    assert_int_equal(store_retention_step(st, 0, 10), 1);
    store_close(st);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 400);
    assert_int_equal(q_int(f, "SELECT sum(count) FROM series"), 400);
    check_invariants(f);
}

/*
 * A failed commit with rows both inserted and queued, retried; then a row
 * written behind the store's back (another program) that the store's
 * bound says cannot exist: the commit fails with STORE_E_BUSY instead of
 * counting it, and the retry finds it.
 */
static void
test_sqlite_batch_faults(void **state)
{
    struct fx *f = *state;
    struct store *st = open_ok(f);
    struct store_reading r;
    int rc;

    assert_int_equal(fill_batch(st, 0, 130), 0);
    fail_sync_wal_at = 1;
    assert_int_equal(fill_batch(st, 1, 130), STORE_E_IO);
    assert_int_equal(fill_batch(st, 1, 130), 0);
    assert_int_equal(fill_batch(st, 1, 130), 0); /* all resent */

    begin_ok(st);
    r = rd("x", "temperature", "°C", 1, 100);
    append_ok(st, &r);
    commit_ok(st);
    raw_exec(f->path, "INSERT INTO readings (series_id, ts, value, recv_ns,"
                      " peer_id) SELECT id, 200, 7, 0, 1 FROM series"
                      " WHERE sensor = 'x';"
                      "UPDATE series SET count = count + 1, last_ts = 200"
                      " WHERE sensor = 'x'");
    begin_ok(st);
    r = rd("x", "temperature", "°C", 2, 200); /* "new": ts above 100 */
    append_ok(st, &r);
    rc = store_commit(st);
    assert_int_equal(rc, STORE_E_BUSY);
    assert_non_null(strstr(store_errmsg(st), "already stored"));
    store_rollback(st);
    begin_ok(st);
    append_ok(st, &r);
    r = rd("x", "temperature", "°C", 3, 300);
    append_ok(st, &r);
    commit_ok(st);
    store_close(st);
    assert_int_equal(q_int(f, "SELECT count(*) FROM readings"), 263);
    assert_int_equal(q_int(f, "SELECT count FROM series WHERE sensor = 'x'"),
                     3);
    assert_true(stored_value(f, "x", 200) == 7.0);
    check_invariants(f);
}

/* What each fsync policy syncs, counted at the VFS. */
static void
test_sqlite_sync_policy(void **state)
{
    struct fx *f = *state;
    static const enum store_fsync pol[] = {STORE_FSYNC_ALWAYS,
                                           STORE_FSYNC_BATCH, STORE_FSYNC_OFF};

    for (size_t i = 0; i < ARRAY_LEN(pol); i++) {
        struct store *st;

        f->conf.fsync = pol[i];
        st = open_ok(f);
        for (int c = 0; c < 3; c++) {
            int before = n_sync_wal + n_sync_db;

            assert_int_equal(fill_batch(st, (int)i * 3 + c, 10), 0);
            if (pol[i] == STORE_FSYNC_OFF)
                assert_int_equal(n_sync_wal + n_sync_db, before);
            else
                assert_true(n_sync_wal + n_sync_db > before);
        }
        store_close(st);
    }
}

/*
 * Fail each allocation in turn (curl's torture): open, a transaction,
 * retention and close must return an error, never crash or leak, and a
 * retry of the same readings must then succeed.
 */
static void
test_sqlite_alloc_failures(void **state)
{
    struct fx *f = *state;
    char side[PATH_MAX + 96];
    long n;

    f->conf.fsync = STORE_FSYNC_OFF; /* speed: syncs are not the subject */
    for (n = 1; n < 20000; n++) {
        char err[STORE_ERR_LEN];
        struct store *st;
        int why = 0, rc;

        n_alloc_failed = 0;
        unlink(f->path);
        snprintf(side, sizeof(side), "%s-wal", f->path);
        unlink(side);
        snprintf(side, sizeof(side), "%s-shm", f->path);
        unlink(side);

        fail_alloc_at = n;
        st = store_open(&f->conf, err, &why);
        if (st == NULL) {
            assert_int_equal(n_alloc_failed, 1);
            assert_true(why == STORE_E_IO || why == STORE_E_CORRUPT);
            continue;
        }
        rc = fill_batch(st, 0, 20);
        if (rc == 0)
            rc = store_retention_step(st, 5, 3) == 3 ? 0 : -1;
        fail_alloc_at = 0;
        if (rc != 0) {
            assert_int_equal(n_alloc_failed, 1);
            assert_int_equal(fill_batch(st, 0, 20), 0);
        }
        store_close(st);
        if (n_alloc_failed == 0)
            break; /* every allocation has failed once */
        assert_true(q_int(f, "SELECT count(*) FROM readings") >= 17);
        assert_int_equal(q_int(f, "SELECT count(*) FROM readings"),
                         q_int(f, "SELECT sum(count) FROM series"));
    }
    print_message("each of %ld allocations failed once\n", n - 1);
    assert_true(n > 50);
    assert_true(n < 20000);
}

/* ------------------------------------------------------------------ */

#define GENERIC(t)                                                             \
    cmocka_unit_test_prestate_setup_teardown(t, setup, teardown, NULL)
#define SQLITE_ONLY(t)                                                         \
    cmocka_unit_test_prestate_setup_teardown(t, setup, teardown,               \
                                             (void *)&be_sqlite)

int
main(void)
{
    /* clang-format off */
    struct CMUnitTest generic[] = {
        GENERIC(test_create_append_commit),
        GENERIC(test_resend_stored_once),
        GENERIC(test_rollback_discards),
        GENERIC(test_series_aggregates),
        GENERIC(test_text_form_readings),
        GENERIC(test_retention_steps),
        GENERIC(test_api_misuse),
        GENERIC(test_series_cache_bound),
        GENERIC(test_batch_dup_in_batch),
        GENERIC(test_batch_dup_across),
        GENERIC(test_batch_out_of_order),
        GENERIC(test_batch_rollback),
        GENERIC(test_batch_after_retention),
        GENERIC(test_batch_cache_eviction),
    };
    const struct CMUnitTest sqlite_only[] = {
        SQLITE_ONLY(test_sqlite_schema),
        SQLITE_ONLY(test_sqlite_empty_file_created),
        SQLITE_ONLY(test_sqlite_not_sqlite_refused),
        SQLITE_ONLY(test_sqlite_foreign_refused),
        SQLITE_ONLY(test_sqlite_migrate_v1),
        SQLITE_ONLY(test_sqlite_newer_version_refused),
        SQLITE_ONLY(test_sqlite_open_errors),
        SQLITE_ONLY(test_sqlite_readonly),
        SQLITE_ONLY(test_sqlite_busy),
        SQLITE_ONLY(test_sqlite_disk_full_tmpfs),
        SQLITE_ONLY(test_sqlite_disk_full_pages),
        SQLITE_ONLY(test_sqlite_fsync_failure),
        SQLITE_ONLY(test_sqlite_batch_faults),
        SQLITE_ONLY(test_sqlite_sync_policy),
        SQLITE_ONLY(test_sqlite_alloc_failures),
    };
    /* clang-format on */
    int failed = 0;

    /* cmocka 1.1 does not print group names: say which group runs, so
     * that a log (and tests/integ/test_store_pg.py) can tell. */
    install_hooks();
    for (size_t i = 0; i < ARRAY_LEN(generic); i++)
        generic[i].initial_state = (void *)&be_sqlite;
    print_message("group: store generic (sqlite)\n");
    failed += cmocka_run_group_tests_name("store generic (sqlite)", generic,
                                          NULL, NULL);
    print_message("group: store sqlite-only\n");
    failed += cmocka_run_group_tests_name("store sqlite-only", sqlite_only,
                                          NULL, NULL);
    if (getenv("SENSORNET_TEST_PG") != NULL) {
        for (size_t i = 0; i < ARRAY_LEN(generic); i++)
            generic[i].initial_state = (void *)&be_pg;
        print_message("group: store generic (postgresql)\n");
        failed += cmocka_run_group_tests_name("store generic (postgresql)",
                                              generic, NULL, NULL);
    } else {
        print_message("PostgreSQL store tests not run: SENSORNET_TEST_PG "
                      "is unset (tests/integ starts a server and sets it)\n");
    }
    sqlite3_shutdown();
    return failed;
}
