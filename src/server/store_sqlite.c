/*
 * store_sqlite: the SQLite backend of store.h (docs/storage.md is the
 * contract: schema, durability per fsync policy, error classes).
 *
 * Invariants: a reading is an INSERT OR IGNORE into a WITHOUT ROWID table
 * keyed by (series_id, ts); (sensor, quantity) is interned into a series id
 * through an in-memory map, so an append runs no SELECT once a series is
 * known. A reading later than anything its series holds cannot be a
 * duplicate: it waits in a queue that goes out QUEUE_ROWS rows per
 * statement; any other reading takes the one-row statement, whose
 * sqlite3_changes() says whether it was new (see sq_append). Aggregates of
 * the open transaction live in that map and reach the series table in one
 * UPDATE per touched series at commit. A file that is not a sensornet
 * database is never written to, not even its journal mode.
 *
 * Called only by the thread that owns the store (the writer, or the HTTP
 * API's read-only handle).
 * SPDX-License-Identifier: MIT
 */
#include "server/store_internal.h"

#include "proto/proto.h"
#include "util/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* PRAGMA application_id of every sensornet database: "SNET". */
#define SN_APP_ID 0x534e4554
/* The schema version this binary writes (PRAGMA user_version). */
#define SCHEMA_VERSION 2

/* Lock waits: generous while opening (a migration may hold the lock),
 * short afterwards so that a stray lock never stalls the writer. */
#define OPEN_BUSY_MS 2000
#define RUN_BUSY_MS 100

/* Page cache of the writer's connection (KiB, SQLite's negative form): the
 * right-most leaf page of every active series stays in memory. */
#define CACHE_KIB 65536
/* WAL pages between automatic checkpoints (4 KiB pages: 40 MiB). One
 * checkpoint then writes a leaf page once for many transactions. */
#define WAL_CHECKPOINT_PAGES 10000
/* The WAL file is truncated to this size after a checkpoint. */
#define WAL_SIZE_LIMIT (64 * 1024 * 1024)

/* Defaults of the in-memory caches (entries); see docs/storage.md. */
#define SERIES_CACHE_DEFAULT (1u << 20)
#define PEER_CACHE_MAX 65536
/* Longest peer text stored ("[v6 address]:port" is under 64 bytes). */

/* Rows per multi-row INSERT of the queue (a power of two): 64 rows take
 * about three quarters of the CPU of 64 one-row statements. The remainder
 * goes out in halving sizes, so MULTI_SIZES statements are prepared. */
#define QUEUE_ROWS 64
#define MULTI_SIZES 7
_Static_assert(QUEUE_ROWS == 1 << (MULTI_SIZES - 1), "queue sizes");
/* 5 parameters a row: within SQLite's SQLITE_MAX_VARIABLE_NUMBER (999 in
 * the oldest versions). */
_Static_assert(QUEUE_ROWS * 5 <= 999, "queue parameters");

/* Not an SQLite code: a queued row that had to be new was already
 * stored, so the readings table changed behind this store (fail()). */
#define SQ_E_CHANGED (-1)

/* Ask SQLite for extended result codes at open time when it knows how. */
#ifndef SQLITE_OPEN_EXRESCODE
#define SQLITE_OPEN_EXRESCODE 0
#endif

/*
 * One cached series or peer. For a series the key is sensor then quantity
 * (a_len bytes of sensor); for a peer it is the address (a_len == key_len).
 * id 0 means "not known to be in the database": the row was created by a
 * transaction that rolled back, so the next use looks it up again.
 */
struct entry {
    struct entry *next_dirty; /* series touched by the open transaction */
    uint64_t hash;
    int64_t id;
    /* What the open transaction added to this series (new readings only). */
    int64_t n_new;
    int64_t first_recv;
    int64_t last_recv;
    int64_t min_ts;
    int64_t max_ts;
    double max_ts_value;
    /* Series: a bound on series.first_ts, see flush_one(). */
    int64_t fts;
    uint64_t fts_epoch;
    /* Series: no stored row (the open transaction's included) has a ts
     * above hi, while hi_epoch holds (see sq_append); INT64_MIN: none. */
    int64_t hi;
    uint64_t hi_epoch;
    /* Series: the peer of its last reading (valid while peer_gen holds). */
    struct entry *peer;
    uint64_t peer_gen;
    bool dirty;   /* on the dirty list */
    bool created; /* its row was inserted by the open transaction */
    uint8_t unit_len;
    char unit[PROTO_MAX_UNIT]; /* unit of the reading at max_ts */
    uint32_t a_len;
    uint32_t key_len;
    char key[];
};

/* Open addressing, linear probing, no single deletes (only clear). */
struct map {
    struct entry **slot;
    size_t n_slot; /* 0 or a power of two */
    size_t n;
    size_t max; /* hard cap on n */
};

/*
 * Transaction state; every transition is in one function:
 *
 *     IDLE --sq_begin--> OPEN --sq_commit (ok)--> IDLE
 *                         |  \--any error: fail_txn--> FAILED
 *                         |                              |
 *                         +--sq_rollback--> IDLE <--sq_rollback
 *
 * FAILED refuses append and commit with the error that caused it, so a
 * transaction that SQLite already rolled back on its own is never
 * continued in autocommit mode.
 */
enum txn_state { TXN_IDLE = 0, TXN_OPEN, TXN_FAILED };

enum stmt_id {
    S_BEGIN = 0,
    S_COMMIT,
    S_ROLLBACK,
    S_INSERT,
    S_SERIES_GET,
    S_SERIES_ADD,
    S_SERIES_UPD,
    S_SERIES_UPD_FTS,
    S_SERIES_MAX,
    S_PEER_GET,
    S_PEER_ADD,
    S_RET_PICK,
    S_RET_DEL,
    S_RET_FIX,
    S_COUNT
};

#define SERIES_UPD_SQL(fts)                                                    \
    "UPDATE series SET count = count + ?2,"                                    \
    " first_seen = min(first_seen, ?3),"                                       \
    " last_seen = max(last_seen, ?4)," fts                                     \
    " last_value = CASE WHEN last_ts IS NULL OR ?6 >= last_ts"                 \
    "   THEN ?7 ELSE last_value END,"                                          \
    " unit = CASE WHEN last_ts IS NULL OR ?6 >= last_ts"                       \
    "   THEN ?8 ELSE unit END,"                                                \
    " last_ts = coalesce(max(last_ts, ?6), ?6)"                                \
    " WHERE id = ?1"

static const char *const stmt_sql[S_COUNT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_INSERT] = "INSERT OR IGNORE INTO readings"
                 " (series_id, ts, value, recv_ns, peer_id)"
                 " VALUES (?1, ?2, ?3, ?4, ?5)",
    [S_SERIES_GET] = "SELECT id FROM series WHERE sensor = ?1"
                     " AND quantity = ?2",
    [S_SERIES_ADD] = "INSERT INTO series"
                     " (sensor, quantity, unit, first_seen, last_seen, count)"
                     " VALUES (?1, ?2, ?3, ?4, ?4, 0)",
    /* All right-hand sides see the row as it was before the UPDATE. The
     * _FTS form also lowers first_ts (indexed, so a third dearer). */
    [S_SERIES_UPD] = SERIES_UPD_SQL(""),
    [S_SERIES_UPD_FTS] =
        SERIES_UPD_SQL(" first_ts = coalesce(min(first_ts, ?5), ?5),"),
    [S_SERIES_MAX] = "SELECT max(ts) FROM readings WHERE series_id = ?1",
    [S_PEER_GET] = "SELECT id FROM peers WHERE addr = ?1",
    [S_PEER_ADD] = "INSERT INTO peers (addr) VALUES (?1)",
    [S_RET_PICK] = "SELECT id FROM series WHERE first_ts < ?1"
                   " ORDER BY first_ts LIMIT 1",
    [S_RET_DEL] = "DELETE FROM readings WHERE series_id = ?1 AND ts IN"
                  " (SELECT ts FROM readings WHERE series_id = ?1"
                  "  AND ts < ?2 ORDER BY ts LIMIT ?3)",
    [S_RET_FIX] = "UPDATE series SET count = count - ?2, first_ts ="
                  " (SELECT min(ts) FROM readings WHERE series_id = ?1)"
                  " WHERE id = ?1",
};

/* A reading queued for the multi-row INSERT, ids resolved. */
struct qrow {
    int64_t series_id;
    int64_t ts;
    double value;
    int64_t recv;
    int64_t peer_id;
};

struct sq_store {
    struct store base; /* first: store.c sees only this */
    sqlite3 *db;
    char *path;
    bool readonly;
    enum txn_state txn;
    int txn_rc;        /* the error that made the transaction FAILED */
    bool peer_created; /* the open transaction inserted into peers */
    sqlite3_stmt *stmt[S_COUNT];
    sqlite3_stmt *multi[MULTI_SIZES]; /* multi[k]: 2^k rows */
    struct qrow queue[QUEUE_ROWS];    /* new readings not inserted yet */
    size_t n_queue;
    struct map series;
    struct map peers;
    struct entry *dirty;
    struct entry *last_peer; /* most recent peer: readings come in runs */
    bool series_evicted;     /* the open transaction emptied the cache */
    uint64_t peer_gen;       /* bumped whenever the peer cache is emptied */
    uint64_t fts_epoch;      /* bumped by retention, which raises first_ts */
    uint64_t hi_epoch;       /* bumped when any entry's hi may be wrong */
    uint64_t hash_seed;
};

/*
 * Schema migrations, in order: step i takes user_version i to i + 1, and a
 * new database runs them all from 0 inside one transaction (so the oldest
 * steps stay exercised). Never edit a released step; append a new one.
 */
static const char *const migrations[SCHEMA_VERSION] = {
    /* 0 -> 1: the first layout (peers as text, no retention index). */
    "CREATE TABLE series ("
    "  id         INTEGER PRIMARY KEY,"
    "  sensor     TEXT NOT NULL,"
    "  quantity   TEXT NOT NULL,"
    "  unit       TEXT NOT NULL DEFAULT '',"
    "  first_seen INTEGER NOT NULL,"
    "  last_seen  INTEGER NOT NULL,"
    "  last_value REAL,"
    "  last_ts    INTEGER,"
    "  count      INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE (sensor, quantity));"
    "CREATE TABLE readings ("
    "  series_id INTEGER NOT NULL REFERENCES series (id),"
    "  ts        INTEGER NOT NULL,"
    "  value     REAL NOT NULL,"
    "  recv_ns   INTEGER NOT NULL,"
    "  peer      TEXT NOT NULL DEFAULT '',"
    "  PRIMARY KEY (series_id, ts)) WITHOUT ROWID;",

    /* 1 -> 2: intern peers (a fifth smaller, a third faster to insert)
     * and keep each series' oldest stored ts for retention. */
    "CREATE TABLE peers ("
    "  id   INTEGER PRIMARY KEY,"
    "  addr TEXT NOT NULL UNIQUE);"
    "INSERT INTO peers (addr) SELECT DISTINCT peer FROM readings"
    "  ORDER BY peer;"
    "CREATE TABLE readings_v2 ("
    "  series_id INTEGER NOT NULL REFERENCES series (id),"
    "  ts        INTEGER NOT NULL,"
    "  value     REAL NOT NULL,"
    "  recv_ns   INTEGER NOT NULL,"
    "  peer_id   INTEGER NOT NULL REFERENCES peers (id),"
    "  PRIMARY KEY (series_id, ts)) WITHOUT ROWID;"
    "INSERT INTO readings_v2 (series_id, ts, value, recv_ns, peer_id)"
    "  SELECT r.series_id, r.ts, r.value, r.recv_ns, p.id"
    "  FROM readings AS r JOIN peers AS p ON p.addr = r.peer"
    "  ORDER BY r.series_id, r.ts;"
    "DROP TABLE readings;"
    "ALTER TABLE readings_v2 RENAME TO readings;"
    "ALTER TABLE series ADD COLUMN first_ts INTEGER;"
    "UPDATE series SET first_ts ="
    "  (SELECT min(ts) FROM readings WHERE series_id = series.id);"
    "CREATE INDEX series_first_ts ON series (first_ts);",
};

/* ------------------------------------------------------------------ */
/* Errors                                                             */

/* The store.h class of an SQLite result code. */
static int
err_class(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return STORE_E_BUSY;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return STORE_E_CORRUPT;
    case SQLITE_MISUSE:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG:
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
        return STORE_E_INVAL;
    default: /* FULL, IOERR, NOMEM, CANTOPEN, READONLY, PERM, ... */
        return STORE_E_IO;
    }
}

/*
 * Format "<what> <path>: <reason>" for an SQLite failure into buf, with a
 * plain-words reason for the classes an operator must act on.
 */
static void
format_err(char *buf, sqlite3 *db, int rc, const char *what, const char *path)
{
    const char *msg = db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    int sys = db != NULL ? sqlite3_system_errno(db) : 0;
    char sysbuf[96] = "";

    if (sys != 0)
        snprintf(sysbuf, sizeof(sysbuf), " (%s)", strerror(sys));
    switch (rc & 0xff) {
    case SQLITE_FULL:
        snprintf(buf, STORE_ERR_LEN, "disk full %s %s: %s%s", what, path, msg,
                 sysbuf);
        break;
    case SQLITE_IOERR:
        snprintf(buf, STORE_ERR_LEN, "I/O error %s %s: %s%s (sqlite code %d)",
                 what, path, msg, sysbuf, rc);
        break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        snprintf(buf, STORE_ERR_LEN,
                 "database %s is locked by another process (%s)", path, what);
        break;
    default:
        snprintf(buf, STORE_ERR_LEN, "sqlite error %s %s: %s%s", what, path,
                 msg, sysbuf);
        break;
    }
}

/* Record an SQLite failure outside a transaction; returns its class. */
static int
fail(struct sq_store *s, int rc, const char *what)
{
    if (rc == SQ_E_CHANGED) {
        snprintf(s->base.errmsg, STORE_ERR_LEN,
                 "%s %s: a reading known to be new was already stored (was "
                 "the database written by another program?); retrying",
                 what, s->path);
        return STORE_E_BUSY;
    }
    format_err(s->base.errmsg, s->db, rc, what, s->path);
    return err_class(rc);
}

/* Record a failure inside a transaction, which only rollback leaves. */
static int
fail_txn(struct sq_store *s, int rc, const char *what)
{
    s->txn = TXN_FAILED;
    s->txn_rc = fail(s, rc, what);
    return s->txn_rc;
}

static int
refuse(struct sq_store *s, const char *why)
{
    snprintf(s->base.errmsg, STORE_ERR_LEN, "%s", why);
    return STORE_E_INVAL;
}

/* Step a statement that returns no row, then reset it. */
static int
run(sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);

    sqlite3_reset(stmt);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* ------------------------------------------------------------------ */
/* The map. Memory comes from sqlite3_malloc64 so that one allocator    */
/* (SQLite's, which tests replace to fail the Nth call) covers the     */
/* whole backend.                                                       */

/* Word-at-a-time multiplicative hash with a final mix (murmur3's fmix64).
 * The seed differs per store, so colliding names cannot be precomputed;
 * the cache's cap bounds what collisions could cost anyway. */
static uint64_t
mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static uint64_t
hash_bytes(uint64_t h, const char *p, size_t len)
{
    uint64_t w;

    for (; len >= 8; p += 8, len -= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 29;
    }
    w = 0;
    memcpy(&w, p, len); /* either byte order: any fixed layout will do */
    w ^= (uint64_t)len << 56;
    return (h ^ w) * 0x9e3779b97f4a7c15ULL;
}

static uint64_t
key_hash(uint64_t seed, const char *a, size_t a_len, const char *b,
         size_t b_len)
{
    uint64_t h = hash_bytes(seed ^ a_len, a, a_len);

    return mix(hash_bytes(h, b, b_len));
}

static void
map_init(struct map *m, size_t max)
{
    m->slot = NULL;
    m->n_slot = 0;
    m->n = 0;
    m->max = max;
}

static void
map_clear(struct map *m)
{
    for (size_t i = 0; i < m->n_slot; i++) {
        sqlite3_free(m->slot[i]);
        m->slot[i] = NULL;
    }
    m->n = 0;
}

static void
map_free(struct map *m)
{
    map_clear(m);
    sqlite3_free(m->slot);
    m->slot = NULL;
    m->n_slot = 0;
}

/* The slot holding the key, or the empty slot where it belongs. */
static struct entry **
map_slot(struct map *m, uint64_t hash, const char *a, size_t a_len,
         const char *b, size_t b_len)
{
    size_t mask = m->n_slot - 1;
    size_t i = (size_t)hash & mask;

    for (;;) {
        struct entry *e = m->slot[i];

        if (e == NULL)
            return &m->slot[i];
        if (e->hash == hash && e->a_len == a_len &&
            e->key_len == a_len + b_len && memcmp(e->key, a, a_len) == 0 &&
            memcmp(e->key + a_len, b, b_len) == 0)
            return &m->slot[i];
        i = (i + 1) & mask;
    }
}

static struct entry *
map_find(struct map *m, uint64_t hash, const char *a, size_t a_len,
         const char *b, size_t b_len)
{
    if (m->n_slot == 0)
        return NULL;
    return *map_slot(m, hash, a, a_len, b, b_len);
}

/* Keep the load factor at most 1/2; returns 0 or SQLITE_NOMEM. */
static int
map_reserve(struct map *m)
{
    size_t n_slot = m->n_slot == 0 ? 1024 : m->n_slot * 2;
    struct entry **slot;

    if ((m->n + 1) * 2 <= m->n_slot)
        return SQLITE_OK;
    slot = sqlite3_malloc64(n_slot * sizeof(*slot));
    if (slot == NULL)
        return SQLITE_NOMEM;
    memset(slot, 0, n_slot * sizeof(*slot));
    for (size_t i = 0; i < m->n_slot; i++) {
        struct entry *e = m->slot[i];
        size_t j;

        if (e == NULL)
            continue;
        j = (size_t)e->hash & (n_slot - 1);
        while (slot[j] != NULL)
            j = (j + 1) & (n_slot - 1);
        slot[j] = e;
    }
    sqlite3_free(m->slot);
    m->slot = slot;
    m->n_slot = n_slot;
    return SQLITE_OK;
}

/* Add a new entry for a key known to be absent (caller checked the cap). */
static struct entry *
map_add(struct map *m, uint64_t hash, const char *a, size_t a_len,
        const char *b, size_t b_len)
{
    struct entry *e;

    if (map_reserve(m) != SQLITE_OK)
        return NULL;
    e = sqlite3_malloc64(sizeof(*e) + a_len + b_len);
    if (e == NULL)
        return NULL;
    memset(e, 0, sizeof(*e));
    e->hash = hash;
    e->a_len = (uint32_t)a_len;
    e->key_len = (uint32_t)(a_len + b_len);
    memcpy(e->key, a, a_len);
    memcpy(e->key + a_len, b, b_len);
    *map_slot(m, hash, a, a_len, b, b_len) = e;
    m->n++;
    return e;
}

/* ------------------------------------------------------------------ */
/* Series and peers                                                   */

/*
 * Write one series' pending aggregates into the open transaction.
 *
 * first_ts is indexed, and rewriting it costs a third of the UPDATE even
 * when it does not change. e->fts is a value series.first_ts is known not
 * to exceed (learnt at commit): new readings at or after it leave first_ts
 * as it is. Retention raises first_ts and so voids every such bound at
 * once by bumping fts_epoch; an entry of an older epoch writes first_ts.
 */
static int
flush_one(struct sq_store *s, struct entry *e)
{
    bool fts_known = e->fts_epoch == s->fts_epoch && e->min_ts >= e->fts;
    sqlite3_stmt *u = s->stmt[fts_known ? S_SERIES_UPD : S_SERIES_UPD_FTS];

    sqlite3_bind_int64(u, 1, e->id);
    sqlite3_bind_int64(u, 2, e->n_new);
    sqlite3_bind_int64(u, 3, e->first_recv);
    sqlite3_bind_int64(u, 4, e->last_recv);
    if (!fts_known)
        sqlite3_bind_int64(u, 5, e->min_ts);
    sqlite3_bind_int64(u, 6, e->max_ts);
    sqlite3_bind_double(u, 7, e->max_ts_value);
    sqlite3_bind_text(u, 8, e->unit, e->unit_len, SQLITE_STATIC);
    return run(u);
}

/* Write every touched series into the open transaction. The dirty list
 * stays as it is: dirty_done() ends it once the outcome is known. */
static int
flush_dirty(struct sq_store *s)
{
    for (struct entry *e = s->dirty; e != NULL; e = e->next_dirty) {
        int rc;

        if (e->n_new == 0)
            continue; /* only resent readings */
        rc = flush_one(s, e);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

/* Empty the dirty list after commit or rollback. A series row inserted
 * by a transaction that rolled back no longer exists: forget its id. */
static void
dirty_done(struct sq_store *s, bool committed)
{
    while (s->dirty != NULL) {
        struct entry *e = s->dirty;

        s->dirty = e->next_dirty;
        e->next_dirty = NULL;
        e->dirty = false;
        if (committed && e->n_new > 0) {
            /* Now series.first_ts <= min_ts (and <= fts, if still valid). */
            if (e->fts_epoch != s->fts_epoch || e->min_ts < e->fts)
                e->fts = e->min_ts;
            e->fts_epoch = s->fts_epoch;
        }
        e->n_new = 0;
        if (e->created && !committed)
            e->id = 0;
        e->created = false;
    }
}

/*
 * Insert the queued readings, QUEUE_ROWS per statement and the remainder in
 * halving sizes. Each row was checked new when queued (sq_append), so each
 * must insert: if one did not, the table changed behind the store and no
 * cached bound can be trusted any more (SQ_E_CHANGED).
 */
static int
queue_flush(struct sq_store *s)
{
    size_t done = 0;

    while (done < s->n_queue) {
        size_t left = s->n_queue - done;
        int k = MULTI_SIZES - 1;
        sqlite3_stmt *m;
        size_t n;
        int rc;

        while (((size_t)1 << k) > left)
            k--;
        n = (size_t)1 << k;
        m = s->multi[k];
        for (size_t i = 0; i < n; i++) {
            const struct qrow *q = &s->queue[done + i];
            int p = (int)i * 5;

            sqlite3_bind_int64(m, p + 1, q->series_id);
            sqlite3_bind_int64(m, p + 2, q->ts);
            sqlite3_bind_double(m, p + 3, q->value);
            sqlite3_bind_int64(m, p + 4, q->recv);
            sqlite3_bind_int64(m, p + 5, q->peer_id);
        }
        rc = run(m);
        if (rc != SQLITE_OK)
            return rc;
        if ((size_t)sqlite3_changes(s->db) != n) {
            s->hi_epoch++;
            return SQ_E_CHANGED;
        }
        done += n;
    }
    s->n_queue = 0;
    return SQLITE_OK;
}

/* Learn e->hi from the table (the open transaction's rows included). The
 * queue holds no row of e: rows are queued only once e->hi is current. */
static int
load_hi(struct sq_store *s, struct entry *e)
{
    sqlite3_stmt *q = s->stmt[S_SERIES_MAX];
    int rc;

    sqlite3_bind_int64(q, 1, e->id);
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        e->hi = sqlite3_column_type(q, 0) == SQLITE_NULL
                    ? INT64_MIN
                    : sqlite3_column_int64(q, 0);
        e->hi_epoch = s->hi_epoch;
        rc = SQLITE_OK;
    }
    sqlite3_reset(q);
    return rc;
}

/* Look up or insert the series row of a cached entry whose id is 0. */
static int
series_resolve(struct sq_store *s, struct entry *e,
               const struct store_reading *r)
{
    sqlite3_stmt *g = s->stmt[S_SERIES_GET];
    sqlite3_stmt *a = s->stmt[S_SERIES_ADD];
    int rc;

    sqlite3_bind_text(g, 1, r->sensor, (int)r->sensor_len, SQLITE_STATIC);
    sqlite3_bind_text(g, 2, r->quantity, (int)r->quantity_len, SQLITE_STATIC);
    rc = sqlite3_step(g);
    if (rc == SQLITE_ROW)
        e->id = sqlite3_column_int64(g, 0);
    sqlite3_reset(g);
    if (rc == SQLITE_ROW)
        return SQLITE_OK;
    if (rc != SQLITE_DONE)
        return rc;

    sqlite3_bind_text(a, 1, r->sensor, (int)r->sensor_len, SQLITE_STATIC);
    sqlite3_bind_text(a, 2, r->quantity, (int)r->quantity_len, SQLITE_STATIC);
    sqlite3_bind_text(a, 3, r->unit != NULL ? r->unit : "", (int)r->unit_len,
                      SQLITE_STATIC);
    sqlite3_bind_int64(a, 4, r->recv_ns);
    rc = run(a);
    if (rc != SQLITE_OK)
        return rc;
    e->id = sqlite3_last_insert_rowid(s->db);
    e->created = true;
    e->fts_epoch = 0;
    e->hi = INT64_MIN; /* a new series holds no reading */
    e->hi_epoch = s->hi_epoch;
    return SQLITE_OK;
}

/*
 * The cache entry of r's series with a valid id, marked dirty. When the
 * cache is full, the pending aggregates are flushed into the transaction
 * and the cache is emptied: bounded memory, one UPDATE more per series.
 */
static int
series_get(struct sq_store *s, const struct store_reading *r,
           struct entry **out)
{
    uint64_t h = key_hash(s->hash_seed, r->sensor, r->sensor_len, r->quantity,
                          r->quantity_len);
    struct entry *e = map_find(&s->series, h, r->sensor, r->sensor_len,
                               r->quantity, r->quantity_len);
    int rc;

    if (e == NULL) {
        if (s->series.n >= s->series.max) {
            /* The flushed rows stay in the transaction; if it rolls back
             * they go too, and the emptied cache holds no stale id. The
             * queue goes first: entries that come back learn their hi
             * from the table, which must hold every queued row. */
            rc = queue_flush(s);
            if (rc != SQLITE_OK)
                return rc;
            rc = flush_dirty(s);
            if (rc != SQLITE_OK)
                return rc;
            s->dirty = NULL;
            s->series_evicted = true;
            map_clear(&s->series);
        }
        e = map_add(&s->series, h, r->sensor, r->sensor_len, r->quantity,
                    r->quantity_len);
        if (e == NULL)
            return SQLITE_NOMEM;
    }
    if (e->id == 0) {
        rc = series_resolve(s, e, r);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (!e->dirty) {
        e->dirty = true;
        e->next_dirty = s->dirty;
        s->dirty = e;
    }
    *out = e;
    return SQLITE_OK;
}

/* The peers row id of addr, inserting it when new. */
static int
peer_get(struct sq_store *s, const char *addr, size_t len, int64_t *id)
{
    struct entry *e = s->last_peer;
    uint64_t h;
    int rc;

    if (e != NULL && e->key_len == len && memcmp(e->key, addr, len) == 0) {
        *id = e->id;
        return SQLITE_OK;
    }
    h = key_hash(s->hash_seed, addr, len, "", 0);
    e = map_find(&s->peers, h, addr, len, "", 0);
    if (e == NULL) {
        sqlite3_stmt *g = s->stmt[S_PEER_GET];
        int64_t found = 0;

        sqlite3_bind_text(g, 1, addr, (int)len, SQLITE_STATIC);
        rc = sqlite3_step(g);
        if (rc == SQLITE_ROW)
            found = sqlite3_column_int64(g, 0);
        sqlite3_reset(g);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return rc;
        if (rc == SQLITE_DONE) {
            sqlite3_stmt *a = s->stmt[S_PEER_ADD];

            sqlite3_bind_text(a, 1, addr, (int)len, SQLITE_STATIC);
            rc = run(a);
            if (rc != SQLITE_OK)
                return rc;
            found = sqlite3_last_insert_rowid(s->db);
            s->peer_created = true;
        }
        if (s->peers.n >= s->peers.max) {
            s->last_peer = NULL;
            s->peer_gen++;
            map_clear(&s->peers);
        }
        e = map_add(&s->peers, h, addr, len, "", 0);
        if (e == NULL)
            return SQLITE_NOMEM;
        e->id = found;
    }
    s->last_peer = e;
    *id = e->id;
    return SQLITE_OK;
}

/* ------------------------------------------------------------------ */
/* Transactions                                                       */

static int
sq_begin(struct store *st)
{
    struct sq_store *s = (struct sq_store *)st;
    int rc;

    if (s->readonly)
        return refuse(s, "store opened read-only");
    if (s->txn != TXN_IDLE)
        return refuse(s, "store_begin: a transaction is already open");
    rc = run(s->stmt[S_BEGIN]);
    if (rc != SQLITE_OK)
        return fail(s, rc, "beginning a transaction on");
    s->txn = TXN_OPEN;
    return 0;
}

/* Add a reading known to be new to its series' pending aggregates. */
static void
note_new(struct entry *e, const struct store_reading *r)
{
    if (e->n_new == 0) {
        e->first_recv = r->recv_ns;
        e->last_recv = r->recv_ns;
        e->min_ts = r->ts_ns;
        e->max_ts = INT64_MIN;
    }
    e->n_new++;
    if (r->recv_ns < e->first_recv)
        e->first_recv = r->recv_ns;
    if (r->recv_ns > e->last_recv)
        e->last_recv = r->recv_ns;
    if (r->ts_ns < e->min_ts)
        e->min_ts = r->ts_ns;
    if (r->ts_ns >= e->max_ts) {
        e->max_ts = r->ts_ns;
        e->max_ts_value = r->value;
        e->unit_len = (uint8_t)r->unit_len;
        if (r->unit_len > 0)
            memcpy(e->unit, r->unit, r->unit_len);
    }
}

/*
 * Two paths, so that the count of new readings stays exact:
 *
 *  - ts above e->hi (the series' greatest stored ts, this transaction's
 *    rows included): no row can have this key, so the reading is new. It
 *    is counted now and queued; queue_flush() inserts QUEUE_ROWS per
 *    statement. In steady ingest nearly every reading goes this way.
 *  - anything else (a resend, a duplicate inside the batch, an older
 *    reading): the queue is inserted first, so that this reading meets
 *    every earlier one in the table and the first write of a key wins,
 *    then one INSERT OR IGNORE, and sqlite3_changes() says if it was new.
 *
 * A bound that is too high only sends a reading the slow way: retention
 * deletes rows and leaves hi as it is. One that could be too low (after a
 * rollback, which may follow a COMMIT of unknown outcome, or SQ_E_CHANGED)
 * is voided for every entry at once by bumping hi_epoch; an entry of an
 * older epoch reloads hi (one key seek) before its next reading.
 */
static int
sq_append(struct store *st, const struct store_reading *r)
{
    struct sq_store *s = (struct sq_store *)st;
    sqlite3_stmt *ins = s->stmt[S_INSERT];
    const char *peer = r->peer != NULL ? r->peer : "";
    struct entry *e;
    size_t peer_len;
    int64_t peer_id = 0;
    int rc;

    if (s->txn == TXN_FAILED)
        return s->txn_rc;
    if (s->txn != TXN_OPEN)
        return refuse(s, "store_append outside a transaction");
    /* store_append() checked the limits (peer at most STORE_PEER_MAX). */
    peer_len = r->peer != NULL ? strlen(r->peer) : 0;
    rc = series_get(s, r, &e);
    if (rc != SQLITE_OK)
        return fail_txn(s, rc, "appending to");
    /* A series usually keeps its connection: try its last peer first. */
    if (e->peer != NULL && e->peer_gen == s->peer_gen &&
        e->peer->key_len == peer_len &&
        memcmp(e->peer->key, peer, peer_len) == 0) {
        peer_id = e->peer->id;
    } else {
        rc = peer_get(s, peer, peer_len, &peer_id);
        if (rc != SQLITE_OK)
            return fail_txn(s, rc, "appending to");
        e->peer = s->last_peer;
        e->peer_gen = s->peer_gen;
    }
    if (e->hi_epoch != s->hi_epoch) {
        rc = load_hi(s, e);
        if (rc != SQLITE_OK)
            return fail_txn(s, rc, "appending to");
    }

    if (r->ts_ns > e->hi) {
        struct qrow *q = &s->queue[s->n_queue++];

        q->series_id = e->id;
        q->ts = r->ts_ns;
        q->value = r->value;
        q->recv = r->recv_ns;
        q->peer_id = peer_id;
        e->hi = r->ts_ns;
        note_new(e, r);
        if (s->n_queue == QUEUE_ROWS) {
            rc = queue_flush(s);
            if (rc != SQLITE_OK)
                return fail_txn(s, rc, "appending to");
        }
        return 0;
    }

    rc = queue_flush(s);
    if (rc != SQLITE_OK)
        return fail_txn(s, rc, "appending to");
    sqlite3_bind_int64(ins, 1, e->id);
    sqlite3_bind_int64(ins, 2, r->ts_ns);
    sqlite3_bind_double(ins, 3, r->value);
    sqlite3_bind_int64(ins, 4, r->recv_ns);
    sqlite3_bind_int64(ins, 5, peer_id);
    rc = run(ins);
    if (rc != SQLITE_OK)
        return fail_txn(s, rc, "appending to");
    if (sqlite3_changes(s->db) == 0)
        return 0; /* already stored: a resend changes nothing */
    note_new(e, r);
    return 0;
}

static int
sq_commit(struct store *st)
{
    struct sq_store *s = (struct sq_store *)st;
    int rc;

    if (s->txn == TXN_FAILED)
        return s->txn_rc;
    if (s->txn != TXN_OPEN)
        return refuse(s, "store_commit outside a transaction");
    rc = queue_flush(s);
    if (rc != SQLITE_OK)
        return fail_txn(s, rc, "appending to");
    rc = flush_dirty(s);
    if (rc != SQLITE_OK)
        return fail_txn(s, rc, "updating series in");
    rc = run(s->stmt[S_COMMIT]);
    if (rc != SQLITE_OK)
        return fail_txn(s, rc, "committing to");
    dirty_done(s, true);
    s->txn = TXN_IDLE;
    s->peer_created = false;
    s->series_evicted = false;
    return 0;
}

static void
sq_rollback(struct store *st)
{
    struct sq_store *s = (struct sq_store *)st;

    if (s->txn == TXN_IDLE)
        return;
    /* SQLite rolls back by itself after some errors (SQLITE_FULL, I/O,
     * out of memory); only an open transaction needs the statement. */
    if (!sqlite3_get_autocommit(s->db))
        (void)run(s->stmt[S_ROLLBACK]);
    s->n_queue = 0;
    /* The rows behind each hi may be gone, or (a COMMIT that failed late)
     * be there after all: reload every bound from the table. */
    s->hi_epoch++;
    dirty_done(s, false);
    /* A series created before an eviction and looked up again after it
     * is not marked created: only an empty cache is sure to be right. */
    if (s->series_evicted) {
        map_clear(&s->series);
        s->series_evicted = false;
    }
    if (s->peer_created) {
        s->last_peer = NULL;
        s->peer_gen++;
        map_clear(&s->peers);
        s->peer_created = false;
    }
    s->txn = TXN_IDLE;
}

/*
 * Delete up to max_rows readings older than cutoff_ns, series by series
 * in order of their oldest reading: series_first_ts finds the series, the
 * primary key the rows, so nothing is scanned. Each series visited loses
 * at least one row, so a step runs at most 3 * max_rows statements.
 */
static int
sq_retention_step(struct store *st, int64_t cutoff_ns, int max_rows)
{
    struct sq_store *s = (struct sq_store *)st;
    sqlite3_stmt *pick = s->stmt[S_RET_PICK];
    sqlite3_stmt *del = s->stmt[S_RET_DEL];
    sqlite3_stmt *fix = s->stmt[S_RET_FIX];
    int left = max_rows;
    int rc;

    if (s->readonly)
        return refuse(s, "store opened read-only");
    if (s->txn != TXN_IDLE)
        return refuse(s, "store_retention_step inside a transaction");
    if (max_rows <= 0)
        return 0;
    rc = run(s->stmt[S_BEGIN]);
    if (rc != SQLITE_OK)
        return fail(s, rc, "beginning retention on");
    while (left > 0) {
        int64_t id;
        int n;

        sqlite3_bind_int64(pick, 1, cutoff_ns);
        rc = sqlite3_step(pick);
        id = rc == SQLITE_ROW ? sqlite3_column_int64(pick, 0) : 0;
        sqlite3_reset(pick);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW)
            goto fail;
        sqlite3_bind_int64(del, 1, id);
        sqlite3_bind_int64(del, 2, cutoff_ns);
        sqlite3_bind_int(del, 3, left);
        rc = run(del);
        if (rc != SQLITE_OK)
            goto fail;
        n = sqlite3_changes(s->db);
        sqlite3_bind_int64(fix, 1, id);
        sqlite3_bind_int(fix, 2, n);
        rc = run(fix);
        if (rc != SQLITE_OK)
            goto fail;
        left -= n;
    }
    rc = run(s->stmt[S_COMMIT]);
    if (rc != SQLITE_OK)
        goto fail;
    if (left < max_rows)
        s->fts_epoch++; /* first_ts rose: every cached bound is void */
    return max_rows - left;
fail:
    rc = fail(s, rc, "deleting old readings from");
    if (!sqlite3_get_autocommit(s->db))
        (void)run(s->stmt[S_ROLLBACK]);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Open and close                                                     */

static void
sq_close(struct store *st)
{
    struct sq_store *s = (struct sq_store *)st;

    sq_rollback(st);
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(s->stmt[i]);
    for (int i = 0; i < MULTI_SIZES; i++)
        sqlite3_finalize(s->multi[i]);
    map_free(&s->series);
    map_free(&s->peers);
    sqlite3_close(s->db);
    sqlite3_free(s->path);
    sqlite3_free(s);
}

/* Where the raw header check left a path. */
enum file_kind {
    FILE_MISSING = 0, /* no file: create one */
    FILE_EMPTY,       /* zero bytes: SQLite treats it as a new database */
    FILE_SQLITE,      /* SQLite header, application_id 0 or sensornet's */
};

static uint32_t
be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

/* Classify a file by its first n (up to 100) header bytes. */
static int
classify_header(const char *path, const unsigned char *hdr, size_t n,
                enum file_kind *kind, uint32_t *app_id, char *err)
{
    static const char magic[16] = "SQLite format 3";

    if (n < 100 || memcmp(hdr, magic, sizeof(magic)) != 0) {
        snprintf(err, STORE_ERR_LEN,
                 "%s is not an SQLite database; refusing to touch it "
                 "(move it away or choose another --db)",
                 path);
        return STORE_E_CORRUPT;
    }
    if (be32(hdr + 68) != 0 && be32(hdr + 68) != SN_APP_ID) {
        snprintf(err, STORE_ERR_LEN,
                 "%s is the SQLite database of another application "
                 "(application_id 0x%08" PRIx32 "), not sensornet's; "
                 "refusing to touch it",
                 path, be32(hdr + 68));
        return STORE_E_CORRUPT;
    }
    *kind = FILE_SQLITE;
    *app_id = be32(hdr + 68);
    return 0;
}

/*
 * Classify the file at path by reading its first 100 bytes with plain
 * read(2), before SQLite sees it: SQLite must not touch (journal, lock
 * files aside) a file we are going to refuse. Returns 0 or a store error.
 */
static int
precheck(const char *path, enum file_kind *kind, uint32_t *app_id, char *err)
{
    unsigned char hdr[100];
    struct stat sb;
    ssize_t n;
    int fd;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0 && errno == ENOENT) {
        *kind = FILE_MISSING;
        return 0;
    }
    if (fd < 0) {
        snprintf(err, STORE_ERR_LEN, "cannot open database %s: %s", path,
                 strerror(errno));
        return STORE_E_IO;
    }
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        snprintf(err, STORE_ERR_LEN, "database %s is not a regular file", path);
        return STORE_E_INVAL;
    }
    if (sb.st_size == 0) {
        close(fd);
        *kind = FILE_EMPTY;
        return 0;
    }
    n = pread(fd, hdr, sizeof(hdr), 0);
    if (n < 0) {
        snprintf(err, STORE_ERR_LEN, "cannot read database %s: %s", path,
                 strerror(errno));
        close(fd);
        return STORE_E_IO;
    }
    close(fd);
    return classify_header(path, hdr, (size_t)n, kind, app_id, err);
}

/*
 * precheck() for a handle opened while another connection of this process
 * may have the file open (the HTTP API's read handle beside the writer).
 * Closing any descriptor of a file drops every POSIX lock the process
 * holds on it, the writer's included: another process could then take the
 * file for its own, checkpoint, and delete the WAL the writer goes on
 * appending to. So the header is read through SQLite's own descriptor,
 * which SQLite keeps open while locks are held; opening a connection only
 * reads the file.
 */
static int
precheck_shared(const char *path, enum file_kind *kind, uint32_t *app_id,
                char *err)
{
    unsigned char hdr[100];
    sqlite3_file *fp = NULL;
    sqlite3 *db = NULL;
    struct stat sb;
    size_t n = sizeof(hdr);
    int rc;

    if (stat(path, &sb) < 0) {
        if (errno == ENOENT) {
            *kind = FILE_MISSING;
            return 0;
        }
        snprintf(err, STORE_ERR_LEN, "cannot open database %s: %s", path,
                 strerror(errno));
        return STORE_E_IO;
    }
    if (!S_ISREG(sb.st_mode)) {
        snprintf(err, STORE_ERR_LEN, "database %s is not a regular file", path);
        return STORE_E_INVAL;
    }
    if (sb.st_size == 0) {
        *kind = FILE_EMPTY;
        return 0;
    }
    rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                         NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &fp);
    if (rc == SQLITE_OK && (fp == NULL || fp->pMethods == NULL))
        rc = SQLITE_CANTOPEN;
    if (rc == SQLITE_OK) {
        rc = fp->pMethods->xRead(fp, hdr, (int)sizeof(hdr), 0);
        if (rc == SQLITE_IOERR_SHORT_READ) {
            n = (size_t)sb.st_size < sizeof(hdr) ? (size_t)sb.st_size : 0;
            rc = SQLITE_OK;
        }
    }
    if (rc != SQLITE_OK) {
        format_err(err, db, rc, "reading the header of", path);
        sqlite3_close(db);
        return err_class(rc);
    }
    sqlite3_close(db);
    return classify_header(path, hdr, n, kind, app_id, err);
}

/* One integer from a single-row query (a PRAGMA or a count). */
static int
query_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);

    if (rc == SQLITE_OK) {
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(q, 0);
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            rc = SQLITE_CORRUPT; /* a PRAGMA that returned no row */
        }
    }
    sqlite3_finalize(q);
    return rc;
}

/*
 * What the database at db is: *version is its schema version, or -1 for
 * a database without any schema (then ours to create). Anything else is
 * refused with STORE_E_CORRUPT, a newer schema with STORE_E_VERSION.
 */
static int
identify(struct sq_store *s, int *version, char *err)
{
    int64_t app = 0, ver = 0, n_obj = 0;
    int rc;

    rc = query_int(s->db, "PRAGMA application_id", &app);
    if (rc == SQLITE_OK)
        rc = query_int(s->db, "PRAGMA user_version", &ver);
    if (rc == SQLITE_OK)
        rc = query_int(s->db, "SELECT count(*) FROM sqlite_schema", &n_obj);
    if (rc != SQLITE_OK) {
        if ((rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT)
            snprintf(err, STORE_ERR_LEN,
                     "%s is not a usable SQLite database (%s); refusing "
                     "to touch it",
                     s->path, sqlite3_errmsg(s->db));
        else
            format_err(err, s->db, rc, "reading the header of", s->path);
        return err_class(rc);
    }
    if (app == 0 && ver == 0 && n_obj == 0) {
        *version = -1;
        return 0;
    }
    if (app != SN_APP_ID) {
        snprintf(err, STORE_ERR_LEN,
                 "%s is an SQLite database but not sensornet's "
                 "(application_id 0x%08" PRIx32 ", %" PRId64
                 " schema objects); refusing to touch it",
                 s->path, (uint32_t)app, n_obj);
        return STORE_E_CORRUPT;
    }
    if (ver > SCHEMA_VERSION) {
        snprintf(err, STORE_ERR_LEN,
                 "database schema version %" PRId64 " is newer than this "
                 "sensornet (%d); upgrade sensornet",
                 ver, SCHEMA_VERSION);
        return STORE_E_VERSION;
    }
    if (ver < 1) {
        snprintf(err, STORE_ERR_LEN,
                 "%s has the sensornet application_id but no schema "
                 "version; refusing to touch it",
                 s->path);
        return STORE_E_CORRUPT;
    }
    *version = (int)ver;
    return 0;
}

static int
exec_sql(struct sq_store *s, const char *sql, const char *what, char *err)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);

    if (rc != SQLITE_OK) {
        format_err(err, s->db, rc, what, s->path);
        return err_class(rc);
    }
    return 0;
}

/*
 * Bring the schema to SCHEMA_VERSION in one IMMEDIATE transaction,
 * identifying the database again under the lock (another process may have
 * created or migrated it since the first look).
 */
static int
migrate(struct sq_store *s, char *err)
{
    char sql[64];
    int version = 0;
    int rc;

    rc = exec_sql(s, "BEGIN IMMEDIATE", "locking", err);
    if (rc < 0)
        return rc;
    rc = identify(s, &version, err);
    if (rc < 0)
        goto fail;
    if (version < 0) {
        snprintf(sql, sizeof(sql), "PRAGMA application_id = %d", SN_APP_ID);
        rc = exec_sql(s, sql, "creating", err);
        if (rc < 0)
            goto fail;
        version = 0;
    }
    for (; version < SCHEMA_VERSION; version++) {
        rc = exec_sql(s, migrations[version], "migrating the schema of", err);
        if (rc < 0)
            goto fail;
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version + 1);
        rc = exec_sql(s, sql, "migrating the schema of", err);
        if (rc < 0)
            goto fail;
    }
    rc = exec_sql(s, "COMMIT", "migrating the schema of", err);
    if (rc < 0)
        goto fail;
    return 0;
fail:
    if (!sqlite3_get_autocommit(s->db))
        (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static int
open_db(struct sq_store *s, int flags, char *err)
{
    int rc = sqlite3_open_v2(
        s->path, &s->db, flags | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE,
        NULL);

    if (rc != SQLITE_OK) {
        format_err(err, s->db, rc, "opening", s->path);
        return err_class(rc);
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, OPEN_BUSY_MS);
    return 0;
}

/* The INSERT OR IGNORE of n readings at once (queue_flush()). */
static int
prepare_multi(struct sq_store *s, size_t n, sqlite3_stmt **out)
{
    static const char head[] = "INSERT OR IGNORE INTO readings"
                               " (series_id, ts, value, recv_ns, peer_id)"
                               " VALUES (?,?,?,?,?)";
    char sql[sizeof(head) + QUEUE_ROWS * 12];
    size_t len = sizeof(head) - 1;

    memcpy(sql, head, len);
    for (size_t i = 1; i < n; i++) {
        memcpy(sql + len, ",(?,?,?,?,?)", 12);
        len += 12;
    }
    return sqlite3_prepare_v3(s->db, sql, (int)len, SQLITE_PREPARE_PERSISTENT,
                              out, NULL);
}

/* The pragmas and statements of a writer connection (docs/storage.md). */
static int
setup_writer(struct sq_store *s, enum store_fsync policy, char *err)
{
    char sql[256];
    const char *sync;
    int rc;

    sync = policy == STORE_FSYNC_OFF ? "OFF" : "FULL";
    snprintf(sql, sizeof(sql),
             "PRAGMA synchronous = %s; PRAGMA cache_size = -%d;"
             " PRAGMA wal_autocheckpoint = %d;"
             " PRAGMA journal_size_limit = %d; PRAGMA temp_store = MEMORY;"
             " PRAGMA foreign_keys = OFF",
             sync, CACHE_KIB, WAL_CHECKPOINT_PAGES, WAL_SIZE_LIMIT);
    rc = exec_sql(s, sql, "configuring", err);
    if (rc < 0)
        return rc;
    rc = SQLITE_OK;
    for (int i = 0; rc == SQLITE_OK && i < S_COUNT; i++)
        rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1,
                                SQLITE_PREPARE_PERSISTENT, &s->stmt[i], NULL);
    for (int k = 0; rc == SQLITE_OK && k < MULTI_SIZES; k++)
        rc = prepare_multi(s, (size_t)1 << k, &s->multi[k]);
    if (rc != SQLITE_OK) {
        format_err(err, s->db, rc, "preparing statements on", s->path);
        return err_class(rc);
    }
    return 0;
}

/* Switch an identified database to WAL (persistent in the file). */
static int
set_wal(struct sq_store *s, char *err)
{
    sqlite3_stmt *q = NULL;
    int rc =
        sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &q, NULL);
    bool wal = false;

    if (rc == SQLITE_OK) {
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            const char *mode = (const char *)sqlite3_column_text(q, 0);

            wal = mode != NULL && strcmp(mode, "wal") == 0;
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_OK) {
        format_err(err, s->db, rc, "switching to WAL", s->path);
        return err_class(rc);
    }
    if (!wal) {
        snprintf(err, STORE_ERR_LEN,
                 "cannot switch %s to WAL mode (a network file system?)",
                 s->path);
        return STORE_E_IO;
    }
    return 0;
}

/* A read-only handle needs the current schema: it never migrates. */
static int
check_readable(struct sq_store *s, int version, char *err)
{
    if (version < 0) {
        snprintf(err, STORE_ERR_LEN,
                 "database %s has no sensornet schema yet; the server "
                 "creates it",
                 s->path);
        return STORE_E_INVAL;
    }
    if (version != SCHEMA_VERSION) {
        snprintf(err, STORE_ERR_LEN,
                 "database %s has schema version %d; the server migrates "
                 "it to %d first",
                 s->path, version, SCHEMA_VERSION);
        return STORE_E_VERSION;
    }
    return exec_sql(s, "PRAGMA query_only = 1", "configuring", err);
}

/*
 * Open order, so that a foreign file is never written:
 *   1. precheck: plain read(2) of the header (not SQLite, other app: out);
 *   2. a read-only connection identifies an existing file (application_id,
 *      user_version, schema objects); the read-only handle stops here;
 *   3. only then a read-write connection: WAL, migrate, pragmas, statements.
 */
static struct store *
sq_open(const struct store_conf *conf, char *err, int *why)
{
    bool readonly = (conf->flags & STORE_F_READONLY) != 0;
    enum file_kind kind = FILE_MISSING;
    struct sq_store *s = NULL;
    size_t path_len;
    uint32_t raw_app_id = 0;
    int version = -1;
    int rc;

    if (conf->sqlite_path == NULL || conf->sqlite_path[0] == '\0') {
        snprintf(err, STORE_ERR_LEN, "no SQLite database path given");
        rc = STORE_E_INVAL;
        goto fail;
    }
    if (conf->fsync != STORE_FSYNC_ALWAYS && conf->fsync != STORE_FSYNC_BATCH &&
        conf->fsync != STORE_FSYNC_OFF) {
        snprintf(err, STORE_ERR_LEN, "unknown fsync policy %d",
                 (int)conf->fsync);
        rc = STORE_E_INVAL;
        goto fail;
    }
    rc = readonly
             ? precheck_shared(conf->sqlite_path, &kind, &raw_app_id, err)
             : precheck(conf->sqlite_path, &kind, &raw_app_id, err);
    if (rc < 0)
        goto fail;
    if (readonly && kind != FILE_SQLITE) {
        snprintf(err, STORE_ERR_LEN, "database %s %s; the server creates it",
                 conf->sqlite_path,
                 kind == FILE_MISSING ? "does not exist" : "is empty");
        rc = STORE_E_INVAL;
        goto fail;
    }

    path_len = strlen(conf->sqlite_path);
    s = sqlite3_malloc64(sizeof(*s));
    if (s != NULL)
        memset(s, 0, sizeof(*s));
    if (s != NULL)
        s->path = sqlite3_malloc64(path_len + 1);
    if (s == NULL || s->path == NULL) {
        snprintf(err, STORE_ERR_LEN, "out of memory opening %s",
                 conf->sqlite_path);
        rc = STORE_E_IO;
        goto fail;
    }
    memcpy(s->path, conf->sqlite_path, path_len + 1);
    s->base.ops = &store_sqlite_ops;
    s->fts_epoch = 1; /* entries start at 0: no first_ts bound */
    s->hi_epoch = 1;  /* likewise: no bound on a series' greatest ts */
    s->hash_seed = mix((uint64_t)clock_mono_ns() ^ (uint64_t)(uintptr_t)s);
    s->readonly = readonly;
    map_init(&s->series, conf->series_cache != 0 ? conf->series_cache
                                                 : SERIES_CACHE_DEFAULT);
    map_init(&s->peers, PEER_CACHE_MAX);

    if (kind == FILE_SQLITE) {
        rc = open_db(s, SQLITE_OPEN_READONLY, err);
        if (rc == 0)
            rc = identify(s, &version, err);
        /* A hot journal needs a writer to roll it back: fine for a file
         * whose header is ours, migrate() identifies it again. */
        if (rc < 0 && !readonly && raw_app_id == SN_APP_ID &&
            sqlite3_extended_errcode(s->db) == SQLITE_READONLY_ROLLBACK)
            rc = 0;
        else if (rc == 0 && readonly)
            rc = check_readable(s, version, err);
        if (rc < 0)
            goto fail;
        if (readonly) {
            sqlite3_busy_timeout(s->db, RUN_BUSY_MS);
            return &s->base;
        }
        sqlite3_close(s->db);
        s->db = NULL;
    }

    rc = open_db(s, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, err);
    if (rc == 0)
        rc = set_wal(s, err);
    if (rc == 0)
        rc = migrate(s, err);
    if (rc == 0)
        rc = setup_writer(s, conf->fsync, err);
    if (rc < 0)
        goto fail;
    sqlite3_busy_timeout(s->db, RUN_BUSY_MS);
    return &s->base;
fail:
    if (s != NULL)
        sq_close(&s->base);
    *why = rc;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* The read side (store.h). Statements are prepared per call: a query   */
/* costs far more than its preparation, and the read handle keeps no    */
/* state between calls.                                                 */

#define SQ_SERIES_COLS                                                         \
    "SELECT s.sensor, s.quantity, s.unit, s.first_seen, s.last_seen,"         \
    " s.first_ts, s.last_ts, s.last_value, s.count,"                          \
    " (SELECT p.addr FROM readings AS r JOIN peers AS p ON p.id = r.peer_id" \
    "  WHERE r.series_id = s.id AND r.ts = s.last_ts)"                        \
    " FROM series AS s"

/* Prepare sql; on failure record it and return its class. */
static int
sq_prepare_query(struct sq_store *s, const char *sql, sqlite3_stmt **q)
{
    int rc = sqlite3_prepare_v2(s->db, sql, -1, q, NULL);

    if (rc != SQLITE_OK) {
        sqlite3_finalize(*q);
        *q = NULL;
        return fail(s, rc, "preparing a query on");
    }
    return 0;
}

static const char *
col_text(sqlite3_stmt *q, int col)
{
    const unsigned char *t = sqlite3_column_text(q, col);

    return t != NULL ? (const char *)t : "";
}

/* Step q to its end, handing each row to row(); returns rows or an error.
 * row() returns nonzero to stop. */
static int
sq_stream(struct sq_store *s, sqlite3_stmt *q,
          int (*row)(sqlite3_stmt *q, void *ctx), void *ctx)
{
    int n = 0, rc;

    for (;;) {
        rc = sqlite3_step(q);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            rc = fail(s, rc, "querying");
            sqlite3_finalize(q);
            return rc;
        }
        n++;
        if (row(q, ctx) != 0)
            break;
    }
    sqlite3_finalize(q);
    return n;
}

struct sq_series_ctx {
    store_series_fn *fn;
    void *arg;
};

static int
sq_series_row(sqlite3_stmt *q, void *ctx)
{
    struct sq_series_ctx *c = ctx;
    struct store_series r = {
        .sensor = col_text(q, 0),
        .quantity = col_text(q, 1),
        .unit = col_text(q, 2),
        .first_seen = sqlite3_column_int64(q, 3),
        .last_seen = sqlite3_column_int64(q, 4),
        .first_ts = sqlite3_column_int64(q, 5),
        .last_ts = sqlite3_column_int64(q, 6),
        .last_value = sqlite3_column_double(q, 7),
        .has_last = sqlite3_column_type(q, 6) != SQLITE_NULL &&
                    sqlite3_column_type(q, 7) != SQLITE_NULL,
        .count = sqlite3_column_int64(q, 8),
        .peer = col_text(q, 9),
    };

    return c->fn(c->arg, &r);
}

static int
sq_list_series(struct store *st, const char *sensor, const char *quantity,
               size_t max_rows, store_series_fn *fn, void *arg)
{
    struct sq_store *s = (struct sq_store *)st;
    struct sq_series_ctx ctx = {fn, arg};
    sqlite3_stmt *q = NULL;
    const char *sql;
    int rc;

    if (sensor == NULL)
        sql = SQ_SERIES_COLS " ORDER BY s.sensor, s.quantity LIMIT ?3";
    else if (quantity == NULL)
        sql = SQ_SERIES_COLS " WHERE s.sensor = ?1"
                             " ORDER BY s.quantity LIMIT ?3";
    else
        sql = SQ_SERIES_COLS " WHERE s.sensor = ?1 AND s.quantity = ?2"
                             " LIMIT ?3";
    rc = sq_prepare_query(s, sql, &q);
    if (rc < 0)
        return rc;
    if (sensor != NULL)
        sqlite3_bind_text(q, 1, sensor, -1, SQLITE_STATIC);
    if (quantity != NULL)
        sqlite3_bind_text(q, 2, quantity, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, (sqlite3_int64)max_rows);
    return sq_stream(s, q, sq_series_row, &ctx);
}

struct sq_point_ctx {
    store_point_fn *fn;
    void *arg;
};

static int
sq_point_row(sqlite3_stmt *q, void *ctx)
{
    struct sq_point_ctx *c = ctx;

    return c->fn(c->arg, sqlite3_column_int64(q, 0),
                 sqlite3_column_double(q, 1));
}

static int
sq_read_range(struct store *st, const struct store_range *r,
              store_point_fn *fn, void *arg)
{
    struct sq_store *s = (struct sq_store *)st;
    struct sq_point_ctx ctx = {fn, arg};
    sqlite3_stmt *q = NULL;
    int rc;

    /* One primary-key range scan of the series. */
    rc = sq_prepare_query(
        s,
        "SELECT ts, value FROM readings WHERE series_id ="
        " (SELECT id FROM series WHERE sensor = ?1 AND quantity = ?2)"
        " AND ts >= ?3 AND ts < ?4 ORDER BY ts LIMIT ?5",
        &q);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(q, 1, r->sensor, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, r->quantity, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, r->from_ns);
    sqlite3_bind_int64(q, 4, r->to_ns);
    sqlite3_bind_int64(q, 5, (sqlite3_int64)r->limit);
    return sq_stream(s, q, sq_point_row, &ctx);
}

struct sq_bucket_ctx {
    store_bucket_fn *fn;
    void *arg;
    int64_t origin, step;
};

static int
sq_bucket_row(sqlite3_stmt *q, void *ctx)
{
    struct sq_bucket_ctx *c = ctx;
    struct store_bucket b = {
        .start_ns = c->origin + sqlite3_column_int64(q, 0) * c->step,
        .min = sqlite3_column_double(q, 1),
        .max = sqlite3_column_double(q, 2),
        .avg = sqlite3_column_double(q, 3),
        .count = sqlite3_column_int64(q, 4),
    };

    return c->fn(c->arg, &b);
}

static int
sq_read_buckets(struct store *st, const struct store_range *r,
                int64_t origin_ns, int64_t step_ns, store_bucket_fn *fn,
                void *arg)
{
    struct sq_store *s = (struct sq_store *)st;
    struct sq_bucket_ctx ctx = {fn, arg, origin_ns, step_ns};
    sqlite3_stmt *q = NULL;
    int rc;

    /* ts - origin >= 0, so integer division is the floor: the bucket. */
    rc = sq_prepare_query(
        s,
        "SELECT (ts - ?3) / ?6 AS b, min(value), max(value), avg(value),"
        " count(*) FROM readings WHERE series_id ="
        " (SELECT id FROM series WHERE sensor = ?1 AND quantity = ?2)"
        " AND ts >= ?4 AND ts < ?5 GROUP BY b ORDER BY b LIMIT ?7",
        &q);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(q, 1, r->sensor, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, r->quantity, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, origin_ns);
    sqlite3_bind_int64(q, 4, r->from_ns);
    sqlite3_bind_int64(q, 5, r->to_ns);
    sqlite3_bind_int64(q, 6, step_ns);
    sqlite3_bind_int64(q, 7, (sqlite3_int64)r->limit);
    return sq_stream(s, q, sq_bucket_row, &ctx);
}

const struct store_ops store_sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .begin = sq_begin,
    .append = sq_append,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .retention_step = sq_retention_step,
    .close = sq_close,
    .list_series = sq_list_series,
    .read_range = sq_read_range,
    .read_buckets = sq_read_buckets,
};
