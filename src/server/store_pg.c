/*
 * store_pg: the PostgreSQL backend (libpq), selected by --postgres CONNINFO.
 * The schema mirrors SQLite's (store_sqlite.c, docs/storage.md), version 2.
 *
 * append() only buffers. commit() sends the batch in one transaction:
 * intern the batch's new peers and (sensor, quantity) series, lock the
 * batch's series rows in id order, then either
 *   fast: COPY (binary) the rows straight into readings inside a savepoint
 *         and add the aggregates the client computed, or, when that COPY
 *         meets a stored reading (23505: a resend),
 *   slow: COPY them into a temporary staging table and INSERT ... SELECT
 *         ... ON CONFLICT DO NOTHING, adding only the rows it inserted to
 *         the series aggregates.
 * A batch that met stored readings sends the next PG_SLOW_BATCHES the slow
 * way at once: resends come in runs. docs/storage.md has the measurements.
 *
 * Several collectors may share one database. Migration at open runs under
 * an advisory lock. Every transaction takes its locks in one global order
 * (new peer keys, new series keys, both sorted bytewise; series rows by id;
 * then readings, which only the holder of their series row writes), so two
 * collectors that write the same series wait for each other instead of
 * deadlocking. Retention locks series rows before their readings too.
 *
 * Connection states (one thread owns the store, as store.h says):
 *
 *     DOWN --begin/retention_step: connect_session() ok--> IDLE
 *     IDLE --begin--> BATCH --commit ok, or rollback--> IDLE
 *     IDLE, BATCH --connection lost in any call (lose_conn)--> DOWN
 *
 * DOWN is conn == NULL. Each begin() while DOWN makes one connection attempt
 * (bounded by connect_timeout) and returns STORE_E_BUSY when it fails; the
 * writer waits with backoff and tries again. Nothing else is cleared on a
 * reconnect: cached ids stay valid because ids are never reused.
 * SPDX-License-Identifier: MIT
 */
#include "server/store_internal.h"

#include <endian.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <libpq-fe.h>

#include "proto/proto.h"
#include "util/clock.h"
#include "util/log.h"

/* Schema version written and understood: SQLite's number. */
#define PG_SCHEMA_VERSION 2
/* pg_advisory_xact_lock key for migration: "snschema" as a bigint. */
#define PG_MIGRATE_LOCK "8317712432590318945"
/* Hard cap on what one batch buffers (rows, names, strings). */
#define PG_BATCH_MAX ((size_t)64 << 20)
/* Hard cap on commit's scratch (COPY chunks, array parameters). */
#define PG_SCRATCH_MAX ((size_t)32 << 20)
/* Longest peer text stored, as SQLite's backend. */
/* Cached ids: series per conf->series_cache (this when 0), peers. */
#define PG_SERIES_CACHE_DEFAULT ((size_t)1 << 20)
#define PG_PEER_CACHE_MAX ((size_t)65536)
/* COPY data is sent in chunks of about this size. */
#define PG_COPY_CHUNK ((size_t)256 << 10)
/* After a batch met stored readings, this many take the slow path. */
#define PG_SLOW_BATCHES 16

/*
 * How long open() keeps trying to reach the server before it gives up.
 * Not static: tests shorten it (tests/unit/test_store_pg.c).
 */
int store_pg_open_wait_ms = 30000;

/*
 * One distinct series or peer of the current batch. The key is a then b
 * in p->arena: (sensor, quantity) for a series, (address, "") for a peer.
 * The rest is for series only.
 */
struct pg_name {
    uint64_t hash;
    uint32_t key_off;
    uint32_t a_len;
    uint32_t b_len;
    bool pending;      /* id resolved in this transaction: cache it after
                        * COMMIT, not before (a rollback undoes the row) */
    int64_t id;        /* 0 until resolved */
    uint32_t unit_off; /* unit of the newest reading appended */
    uint32_t unit_len;
    int64_t unit_ts;
    uint64_t n_appended;
    /* Over the batch's rows of this series, duplicates dropped (see
     * sort_rows): how many, arrival times, ts range, the newest value. */
    int64_t n;
    int64_t min_recv;
    int64_t max_recv;
    int64_t min_ts;
    int64_t max_ts;
    double max_ts_value;
};

/* A committed id, by key. Owns its key. */
struct pg_cache_ent {
    uint64_t hash; /* 0: empty slot */
    char *key;
    uint32_t a_len;
    uint32_t b_len;
    int64_t id;
};

/* The batch's names of one kind, and the ids committed earlier. */
struct pg_names {
    struct pg_name *v;
    size_t n, cap;
    uint32_t *slots;  /* v index + 1 by hash; 0: empty */
    size_t slots_cap; /* a power of two */
    struct pg_cache_ent *cache;
    size_t n_cache, cache_cap;
    size_t cache_max; /* past this the cache starts over */
};

/* One buffered reading. */
struct pg_row {
    int64_t ts;
    int64_t recv_ns;
    double value;
    uint32_t series; /* index in p->series.v */
    uint32_t peer;   /* index in p->peers.v */
    uint32_t seq;    /* append order: the first of two duplicates wins */
};

struct pg_store {
    struct store base;
    PGconn *conn;       /* NULL: DOWN */
    char *conninfo;     /* owned copy of conf->postgres */
    enum store_fsync fsync;
    bool readonly;
    bool in_batch;      /* between begin and commit/rollback */
    int failed;         /* the error that failed the batch, or 0: append
                         * and commit repeat it until rollback */
    int slow_left;      /* commits left on the slow path */
    size_t mem;         /* bytes held by rows, names, arena */
    size_t scratch_mem; /* bytes held by scratch */

    struct pg_row *rows;
    size_t n_rows, rows_cap;
    struct pg_names series;
    struct pg_names peers;
    char *arena;        /* keys and units of the batch */
    size_t arena_len, arena_cap;
    char *scratch;      /* COPY chunks, array parameters */
    size_t scratch_len, scratch_cap;
    uint32_t last_peer; /* peers come in runs: index + 1, or 0 */
    uint64_t hash_seed;
};

/* ---- statements ------------------------------------------------------ */

/*
 * Migrations, as SQLite's: step i takes version i to i + 1, and a new
 * database runs them all from 0 in one transaction (so the old steps stay
 * exercised). Never edit a released step; append one. No FOREIGN KEYs:
 * their per-row check halved COPY throughput (docs/storage.md); the
 * collector locks each batch's series rows, which also keeps them from
 * being deleted under it.
 */
static const char *const migrations[PG_SCHEMA_VERSION] = {
    /* 0 -> 1: the first layout (peers as text). */
    "CREATE TABLE schema_version (version integer NOT NULL);"
    "INSERT INTO schema_version VALUES (0);"
    "CREATE TABLE series ("
    " id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    " sensor text NOT NULL,"
    " quantity text NOT NULL,"
    " unit text NOT NULL DEFAULT '',"
    " first_seen bigint NOT NULL,"
    " last_seen bigint NOT NULL,"
    " last_value double precision,"
    " last_ts bigint,"
    " count bigint NOT NULL DEFAULT 0,"
    " UNIQUE (sensor, quantity));"
    "CREATE TABLE readings ("
    " series_id bigint NOT NULL,"
    " ts bigint NOT NULL,"
    " value double precision NOT NULL,"
    " recv_ns bigint NOT NULL,"
    " peer text NOT NULL DEFAULT '',"
    " PRIMARY KEY (series_id, ts));",

    /* 1 -> 2: intern peers; keep each series' oldest stored ts, which
     * retention starts from (no index on readings.ts to maintain). */
    "CREATE TABLE peers ("
    " id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    " addr text NOT NULL UNIQUE);"
    "INSERT INTO peers (addr) SELECT DISTINCT peer FROM readings"
    " ORDER BY peer;"
    "CREATE TABLE readings_v2 ("
    " series_id bigint NOT NULL,"
    " ts bigint NOT NULL,"
    " value double precision NOT NULL,"
    " recv_ns bigint NOT NULL,"
    " peer_id bigint NOT NULL,"
    " CONSTRAINT readings_v2_pkey PRIMARY KEY (series_id, ts));"
    "INSERT INTO readings_v2 SELECT r.series_id, r.ts, r.value, r.recv_ns,"
    " p.id FROM readings r JOIN peers p ON p.addr = r.peer"
    " ORDER BY r.series_id, r.ts;"
    "DROP TABLE readings;"
    "ALTER TABLE readings_v2 RENAME TO readings;"
    "ALTER TABLE readings RENAME CONSTRAINT readings_v2_pkey"
    " TO readings_pkey;"
    "ALTER TABLE series ADD COLUMN first_ts bigint;"
    "UPDATE series s SET first_ts ="
    " (SELECT min(ts) FROM readings r WHERE r.series_id = s.id);"
    "CREATE INDEX series_first_ts ON series (first_ts);",
};

/*
 * Insert the batch's unknown series in the order given (sorted by the
 * caller) and return (ordinal, id) for those inserted and for those that
 * were already committed. One another transaction committed after this
 * statement's snapshot is missing: sn_series_get, a new snapshot, has it.
 */
static const char sql_series_put[] =
    "WITH t AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
    "  $4::bigint[]) WITH ORDINALITY AS t(sensor, quantity, unit, seen, ord)),"
    " ins AS (INSERT INTO series (sensor, quantity, unit, first_seen,"
    "  last_seen) SELECT sensor, quantity, unit, seen, seen FROM t"
    "  ORDER BY ord ON CONFLICT (sensor, quantity) DO NOTHING"
    "  RETURNING id, sensor, quantity)"
    " SELECT t.ord, ins.id FROM ins JOIN t USING (sensor, quantity)"
    " UNION ALL"
    " SELECT t.ord, s.id FROM t JOIN series s USING (sensor, quantity)";

static const char sql_series_get[] =
    "SELECT t.ord, s.id FROM unnest($1::text[], $2::text[])"
    " WITH ORDINALITY AS t(sensor, quantity, ord)"
    " JOIN series s USING (sensor, quantity)";

static const char sql_peer_put[] =
    "WITH t AS (SELECT * FROM unnest($1::text[]) WITH ORDINALITY"
    "  AS t(addr, ord)),"
    " ins AS (INSERT INTO peers (addr) SELECT addr FROM t ORDER BY ord"
    "  ON CONFLICT (addr) DO NOTHING RETURNING id, addr)"
    " SELECT t.ord, ins.id FROM ins JOIN t USING (addr)"
    " UNION ALL"
    " SELECT t.ord, p.id FROM t JOIN peers p USING (addr)";

static const char sql_peer_get[] =
    "SELECT t.ord, p.id FROM unnest($1::text[]) WITH ORDINALITY"
    " AS t(addr, ord) JOIN peers p USING (addr)";

/* Lock the batch's series rows in id order (see the file comment). */
static const char sql_series_lock[] =
    "SELECT id FROM series WHERE id = ANY ($1::bigint[])"
    " ORDER BY id FOR NO KEY UPDATE";

/* Aggregates of rows that all went in (fast path), computed by the client.
 * Every right-hand side sees the row as it was before the UPDATE. */
static const char sql_add[] =
    "UPDATE series s SET count = s.count + b.n,"
    "  first_seen = least(s.first_seen, b.first_recv),"
    "  last_seen = greatest(s.last_seen, b.last_recv),"
    "  first_ts = least(s.first_ts, b.min_ts),"
    "  last_value = CASE WHEN s.last_ts IS NULL OR b.max_ts > s.last_ts"
    "   THEN b.max_value ELSE s.last_value END,"
    "  unit = CASE WHEN s.last_ts IS NULL OR b.max_ts > s.last_ts"
    "   THEN b.unit ELSE s.unit END,"
    "  last_ts = greatest(s.last_ts, b.max_ts)"
    " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[],"
    "  $5::bigint[], $6::bigint[], $7::float8[], $8::text[])"
    "  AS b(id, n, first_recv, last_recv, min_ts, max_ts, max_value, unit)"
    " WHERE s.id = b.id";

/*
 * The slow path: move the staged rows into readings; only the rows
 * inserted (not the stored ones) count into the aggregates. $1..$4 carry,
 * per series of the batch, its newest reading: if that one was already
 * stored then series.last_ts is at least as new and nothing changes.
 */
static const char sql_flush[] =
    "WITH ins AS (INSERT INTO readings (series_id, ts, value, recv_ns,"
    "  peer_id) SELECT series_id, ts, value, recv_ns, peer_id"
    "  FROM sn_staging ON CONFLICT DO NOTHING"
    "  RETURNING series_id, ts, recv_ns),"
    " agg AS (SELECT series_id, count(*) AS n, min(recv_ns) AS first_recv,"
    "  max(recv_ns) AS last_recv, min(ts) AS min_ts FROM ins"
    "  GROUP BY series_id),"
    " b AS (SELECT * FROM unnest($1::bigint[], $2::bigint[],"
    "  $3::float8[], $4::text[]) AS b(id, max_ts, max_value, unit))"
    " UPDATE series s SET count = s.count + agg.n,"
    "  first_seen = least(s.first_seen, agg.first_recv),"
    "  last_seen = greatest(s.last_seen, agg.last_recv),"
    "  first_ts = least(s.first_ts, agg.min_ts),"
    "  last_value = CASE WHEN s.last_ts IS NULL OR b.max_ts > s.last_ts"
    "   THEN b.max_value ELSE s.last_value END,"
    "  unit = CASE WHEN s.last_ts IS NULL OR b.max_ts > s.last_ts"
    "   THEN b.unit ELSE s.unit END,"
    "  last_ts = greatest(s.last_ts, b.max_ts)"
    " FROM agg JOIN b ON b.id = agg.series_id"
    " WHERE s.id = agg.series_id";

/*
 * Retention, one short transaction: lock (in id order) up to $2 series
 * whose oldest reading is older than $1, oldest first; delete at most $2
 * of their readings older than $1 (primary key range scans); fix their
 * count and first_ts.
 */
static const char sql_ret_pick[] =
    "SELECT id FROM series WHERE id IN (SELECT id FROM series"
    " WHERE first_ts < $1::bigint ORDER BY first_ts LIMIT $2::integer)"
    " ORDER BY id FOR NO KEY UPDATE";

static const char sql_ret_del[] =
    "WITH v AS (SELECT r.ctid FROM unnest($1::bigint[]) AS s(id)"
    "  CROSS JOIN LATERAL (SELECT ctid FROM readings"
    "   WHERE series_id = s.id AND ts < $2::bigint ORDER BY ts"
    "   LIMIT $3::integer) AS r LIMIT $3::integer),"
    " d AS (DELETE FROM readings WHERE ctid = ANY (ARRAY(SELECT ctid"
    "  FROM v)) RETURNING series_id)"
    " SELECT series_id, count(*) FROM d GROUP BY series_id";

static const char sql_ret_fix[] =
    "UPDATE series s SET count = s.count - d.n, first_ts ="
    " (SELECT min(ts) FROM readings r WHERE r.series_id = s.id)"
    " FROM unnest($1::bigint[], $2::bigint[]) AS d(id, n)"
    " WHERE s.id = d.id";

static const char sql_staging[] =
    "CREATE TEMP TABLE IF NOT EXISTS sn_staging (series_id bigint,"
    " ts bigint, value double precision, recv_ns bigint, peer_id bigint)"
    " ON COMMIT DELETE ROWS";

static const struct {
    const char *name;
    const char *sql;
} prepared[] = {
    {"sn_series_put", sql_series_put},
    {"sn_series_get", sql_series_get},
    {"sn_peer_put", sql_peer_put},
    {"sn_peer_get", sql_peer_get},
    {"sn_series_lock", sql_series_lock},
    {"sn_add", sql_add},
    {"sn_flush", sql_flush},
    {"sn_ret_pick", sql_ret_pick},
    {"sn_ret_del", sql_ret_del},
    {"sn_ret_fix", sql_ret_fix},
};

/* ---- errors ---------------------------------------------------------- */

static void
set_err(struct pg_store *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
set_err(struct pg_store *p, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(p->base.errmsg, sizeof(p->base.errmsg), fmt, ap);
    va_end(ap);
}

/* Copy a libpq message into out as one line: whitespace runs (libpq's
 * messages carry newlines and tabs) become one space. */
static void
one_line(char *out, size_t out_size, const char *msg)
{
    size_t n = 0;
    bool space = false;

    for (; msg != NULL && *msg != '\0' && n + 1 < out_size; msg++) {
        if (*msg == '\n' || *msg == '\t' || *msg == '\r' || *msg == ' ') {
            space = n > 0;
            continue;
        }
        if (space && n + 2 < out_size)
            out[n++] = ' ';
        space = false;
        out[n++] = *msg;
    }
    out[n] = '\0';
}

/* Drop the connection: the next begin reconnects. */
static void
lose_conn(struct pg_store *p)
{
    PQfinish(p->conn);
    p->conn = NULL;
}

static bool
sqlstate_is(const char *state, const char *want)
{
    return state != NULL && strcmp(state, want) == 0;
}

/*
 * The connection is gone or useless: libpq's own errors (no SQLSTATE), the
 * connection exception class 08, the server shutting down or starting
 * (57P01..57P03), or a read-only server (25006: a standby after failover;
 * a reconnect may reach the new primary).
 */
static bool
conn_lost(const PGconn *conn, const char *state)
{
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK || state == NULL)
        return true;
    return strncmp(state, "08", 2) == 0 || sqlstate_is(state, "57P01") ||
           sqlstate_is(state, "57P02") || sqlstate_is(state, "57P03") ||
           sqlstate_is(state, "25006");
}

/*
 * Describe a failed statement (res may be NULL), set errmsg, and return its
 * enum store_err. A lost connection is dropped here (DOWN).
 */
static int
fail(struct pg_store *p, const PGresult *res, const char *what)
{
    const char *state = NULL, *msg = NULL;
    char line[STORE_ERR_LEN];

    if (res != NULL) {
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        if (msg == NULL)
            msg = PQresultErrorMessage(res);
    }
    if ((msg == NULL || *msg == '\0') && p->conn != NULL)
        msg = PQerrorMessage(p->conn);
    one_line(line, sizeof(line), msg);
    if (conn_lost(p->conn, state)) {
        set_err(p, "postgresql unreachable: %s: %s", what,
                line[0] != '\0' ? line : "connection lost");
        lose_conn(p);
        return STORE_E_BUSY;
    }
    set_err(p, "postgresql: %s: %s (SQLSTATE %s)", what, line, state);
    /* Serialization failure, deadlock, lock or statement timeout: the
     * same transaction will do another time. */
    if (sqlstate_is(state, "40001") || sqlstate_is(state, "40P01") ||
        sqlstate_is(state, "55P03") || sqlstate_is(state, "57014"))
        return STORE_E_BUSY;
    if (sqlstate_is(state, "42501") || sqlstate_is(state, "28000") ||
        sqlstate_is(state, "28P01"))
        return STORE_E_INVAL; /* privileges: a configuration error */
    if (sqlstate_is(state, "42P01") || sqlstate_is(state, "42703") ||
        sqlstate_is(state, "42P07") || sqlstate_is(state, "42804"))
        return STORE_E_CORRUPT; /* tables missing or not ours */
    return STORE_E_IO;
}

/* Run one statement expecting want; fail() on anything else. */
static int
exec_ok(struct pg_store *p, const char *sql, ExecStatusType want,
        const char *what)
{
    PGresult *res = PQexec(p->conn, sql);
    int rc = 0;

    if (PQresultStatus(res) != want)
        rc = fail(p, res, what);
    PQclear(res);
    return rc;
}

/* After a failed statement inside BEGIN: end the transaction (if the
 * connection is still up) so the session is clean for the next one. */
static void
abort_tx(struct pg_store *p)
{
    PGresult *res;

    if (p->conn == NULL)
        return;
    res = PQexec(p->conn, "ROLLBACK");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        lose_conn(p);
    PQclear(res);
}

/* ---- memory: every buffer has a hard cap ----------------------------- */

/*
 * Make room for need elements of elem bytes in *ptr (capacity *cap),
 * doubling, with *used bytes of limit already taken. Near the limit a
 * doubling may not fit where need does: then take all that is left,
 * unless pow2 (hash tables need a power of two).
 */
static int
grow_in(struct pg_store *p, size_t *used, size_t limit, void **ptr,
        size_t *cap, size_t need, size_t elem, bool pow2)
{
    size_t ncap = *cap != 0 ? *cap : 256;
    size_t room = (limit - *used) / elem; /* more elements */
    void *np;

    if (need <= *cap)
        return 0;
    if (need - *cap > room)
        goto toobig;
    while (ncap < need)
        ncap *= 2;
    if (ncap - *cap > room) {
        if (pow2)
            goto toobig;
        ncap = *cap + room;
    }
    np = realloc(*ptr, ncap * elem);
    if (np == NULL) {
        set_err(p, "postgresql: out of memory buffering the batch");
        return STORE_E_IO;
    }
    *used += (ncap - *cap) * elem;
    *ptr = np;
    *cap = ncap;
    return 0;
toobig:
    set_err(p, "postgresql: batch over %zu MiB; commit smaller groups",
            limit >> 20);
    return STORE_E_IO;
}

/* The batch buffers share PG_BATCH_MAX. */
static int
grow(struct pg_store *p, void **ptr, size_t *cap, size_t need, size_t elem,
     bool pow2)
{
    return grow_in(p, &p->mem, PG_BATCH_MAX, ptr, cap, need, elem, pow2);
}

/* Append bytes to the arena; *off gets where they start. */
static int
arena_put(struct pg_store *p, const char *s, size_t len, uint32_t *off)
{
    int rc = grow(p, (void **)&p->arena, &p->arena_cap, p->arena_len + len,
                  1, false);

    if (rc < 0)
        return rc;
    if (len > 0)
        memcpy(p->arena + p->arena_len, s, len);
    *off = (uint32_t)p->arena_len;
    p->arena_len += len;
    return 0;
}

static int
scratch_put(struct pg_store *p, const void *s, size_t len)
{
    int rc = grow_in(p, &p->scratch_mem, PG_SCRATCH_MAX,
                     (void **)&p->scratch, &p->scratch_cap,
                     p->scratch_len + len, 1, false);

    if (rc < 0)
        return rc;
    memcpy(p->scratch + p->scratch_len, s, len);
    p->scratch_len += len;
    return 0;
}

static int
scratch_printf(struct pg_store *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
scratch_printf(struct pg_store *p, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return STORE_E_INVAL;
    return scratch_put(p, tmp, (size_t)n);
}

/* ---- names: the batch's series and peers, and the committed ids ------ */

/*
 * FNV-1a over a, a separator, b, from a per-store seed: names come from the
 * network, and with a seed nobody can prepare names that pile up in one
 * stretch of the tables.
 */
static uint64_t
key_hash(uint64_t seed, const char *a, size_t a_len, const char *b,
         size_t b_len)
{
    uint64_t h = seed ^ 1469598103934665603ULL;
    size_t i;

    for (i = 0; i < a_len; i++)
        h = (h ^ (unsigned char)a[i]) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL; /* 0xff never occurs in UTF-8 */
    for (i = 0; i < b_len; i++)
        h = (h ^ (unsigned char)b[i]) * 1099511628211ULL;
    return h != 0 ? h : 1; /* 0 marks an empty cache slot */
}

static bool
key_eq(const char *key, uint32_t a_len, uint32_t b_len, const char *a,
       size_t a_want, const char *b, size_t b_want)
{
    return a_len == a_want && b_len == b_want &&
           memcmp(key, a, a_len) == 0 && memcmp(key + a_len, b, b_len) == 0;
}

static void
cache_clear(struct pg_names *nm)
{
    size_t i;

    for (i = 0; i < nm->cache_cap; i++)
        free(nm->cache[i].key);
    free(nm->cache);
    nm->cache = NULL;
    nm->n_cache = nm->cache_cap = 0;
}

static int64_t
cache_get(const struct pg_names *nm, uint64_t h, const char *a, size_t a_len,
          const char *b, size_t b_len)
{
    size_t mask = nm->cache_cap - 1, i;

    if (nm->cache_cap == 0)
        return 0;
    for (i = h & mask; nm->cache[i].hash != 0; i = (i + 1) & mask) {
        const struct pg_cache_ent *e = &nm->cache[i];

        if (e->hash == h &&
            key_eq(e->key, e->a_len, e->b_len, a, a_len, b, b_len))
            return e->id;
    }
    return 0;
}

/* Move e (its key included) into the table, which has room. */
static void
cache_place(struct pg_cache_ent *tab, size_t cap,
            const struct pg_cache_ent *e)
{
    size_t mask = cap - 1, i;

    for (i = e->hash & mask; tab[i].hash != 0; i = (i + 1) & mask)
        ;
    tab[i] = *e;
}

/* Remember a committed id. Out of memory only loses the cache entry. */
static void
cache_put(struct pg_names *nm, const struct pg_name *n, const char *arena)
{
    struct pg_cache_ent e, *ntab;
    size_t ncap, i;

    if (nm->n_cache >= nm->cache_max)
        cache_clear(nm); /* a cache: it refills from the database */
    if ((nm->n_cache + 1) * 2 > nm->cache_cap) {
        ncap = nm->cache_cap != 0 ? nm->cache_cap * 2 : 64;
        ntab = calloc(ncap, sizeof(*ntab));
        if (ntab == NULL)
            return;
        for (i = 0; i < nm->cache_cap; i++) {
            if (nm->cache[i].hash != 0)
                cache_place(ntab, ncap, &nm->cache[i]);
        }
        free(nm->cache);
        nm->cache = ntab;
        nm->cache_cap = ncap;
    }
    e = (struct pg_cache_ent){.hash = n->hash, .a_len = n->a_len,
                              .b_len = n->b_len, .id = n->id};
    e.key = malloc((size_t)n->a_len + n->b_len + 1);
    if (e.key == NULL)
        return;
    memcpy(e.key, arena + n->key_off, (size_t)n->a_len + n->b_len);
    cache_place(nm->cache, nm->cache_cap, &e);
    nm->n_cache++;
}

static int
slots_rebuild(struct pg_store *p, struct pg_names *nm, size_t ncap)
{
    size_t mask, i, j;
    int rc;

    rc = grow(p, (void **)&nm->slots, &nm->slots_cap, ncap,
              sizeof(*nm->slots), true);
    if (rc < 0)
        return rc;
    mask = nm->slots_cap - 1;
    memset(nm->slots, 0, nm->slots_cap * sizeof(*nm->slots));
    for (i = 0; i < nm->n; i++) {
        for (j = nm->v[i].hash & mask; nm->slots[j] != 0; j = (j + 1) & mask)
            ;
        nm->slots[j] = (uint32_t)i + 1;
    }
    return 0;
}

/* The batch's entry for key (a, b): found, or added with its cached id. */
static int
names_find(struct pg_store *p, struct pg_names *nm, const char *a,
           size_t a_len, const char *b, size_t b_len, uint32_t *out)
{
    uint64_t h = key_hash(p->hash_seed, a, a_len, b, b_len);
    size_t mask, i;
    struct pg_name *n;
    uint32_t off, b_off;
    int rc;

    if (nm->slots_cap == 0) {
        rc = slots_rebuild(p, nm, 64);
        if (rc < 0)
            return rc;
    }
    mask = nm->slots_cap - 1;
    for (i = h & mask; nm->slots[i] != 0; i = (i + 1) & mask) {
        n = &nm->v[nm->slots[i] - 1];
        if (n->hash == h && key_eq(p->arena + n->key_off, n->a_len,
                                   n->b_len, a, a_len, b, b_len)) {
            *out = nm->slots[i] - 1;
            return 0;
        }
    }
    rc = grow(p, (void **)&nm->v, &nm->cap, nm->n + 1, sizeof(*nm->v),
              false);
    if (rc == 0)
        rc = arena_put(p, a, a_len, &off);
    if (rc == 0)
        rc = arena_put(p, b, b_len, &b_off);
    if (rc < 0)
        return rc;
    nm->v[nm->n] = (struct pg_name){
        .hash = h,
        .key_off = off,
        .a_len = (uint32_t)a_len,
        .b_len = (uint32_t)b_len,
        .id = cache_get(nm, h, a, a_len, b, b_len),
    };
    *out = (uint32_t)nm->n++;
    if (nm->n * 2 > nm->slots_cap) /* at most half full */
        return slots_rebuild(p, nm, nm->slots_cap * 2);
    nm->slots[i] = (uint32_t)nm->n;
    return 0;
}

static void
names_reset(struct pg_names *nm)
{
    nm->n = 0;
    if (nm->slots != NULL)
        memset(nm->slots, 0, nm->slots_cap * sizeof(*nm->slots));
}

/* After COMMIT: the ids resolved in it are now safe to keep. */
static void
names_commit(struct pg_names *nm, const char *arena)
{
    size_t i;

    for (i = 0; i < nm->n; i++) {
        if (nm->v[i].pending)
            cache_put(nm, &nm->v[i], arena);
    }
}

static void
names_free(struct pg_names *nm)
{
    cache_clear(nm);
    free(nm->v);
    free(nm->slots);
}

static void
batch_reset(struct pg_store *p)
{
    p->n_rows = 0;
    names_reset(&p->series);
    names_reset(&p->peers);
    p->arena_len = 0;
    p->scratch_len = 0;
    p->last_peer = 0;
    p->in_batch = false;
    p->failed = 0;
}

/* ---- connecting ------------------------------------------------------ */

static void
notice_fn(void *arg, const char *message)
{
    char line[512];

    (void)arg;
    one_line(line, sizeof(line), message);
    log_debug("postgresql: %s", line);
}

/*
 * One connection attempt. Defaults come before the user's conninfo, which
 * overrides them (libpq keeps the last value of a repeated keyword); the
 * client encoding is ours to choose.
 */
static int
connect_once(struct pg_store *p)
{
    static const char *const keys[] = {
        "connect_timeout", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "application_name", "dbname",
        "client_encoding", NULL,
    };
    const char *vals[] = {
        "10", "30", "10", "3",
        p->readonly ? "sensornet-server (read)" : "sensornet-server",
        p->conninfo, "UTF8", NULL,
    };
    char line[STORE_ERR_LEN];
    PGconn *conn;

    conn = PQconnectdbParams(keys, vals, 1);
    if (conn == NULL) {
        set_err(p, "postgresql: out of memory connecting");
        return STORE_E_IO;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        one_line(line, sizeof(line), PQerrorMessage(conn));
        if (PQconnectionNeedsPassword(conn)) {
            set_err(p, "postgresql: the server asks for a password the "
                       "conninfo does not give: %s", line);
            PQfinish(conn);
            return STORE_E_INVAL;
        }
        set_err(p, "postgresql unreachable: %s", line);
        PQfinish(conn);
        return STORE_E_BUSY;
    }
    PQsetNoticeProcessor(conn, notice_fn, NULL);
    p->conn = conn;
    return 0;
}

/* schema_version's value in *version, 0 when there is no schema. */
static int
read_version(struct pg_store *p, int *version)
{
    PGresult *res;
    int rc = 0;

    *version = 0;
    res = PQexec(p->conn, "SELECT to_regclass('schema_version') IS NOT NULL,"
                          " to_regclass('readings') IS NOT NULL OR"
                          " to_regclass('series') IS NOT NULL OR"
                          " to_regclass('peers') IS NOT NULL");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = fail(p, res, "reading the schema version");
        goto out;
    }
    if (PQgetvalue(res, 0, 0)[0] != 't') {
        if (PQgetvalue(res, 0, 1)[0] == 't') {
            set_err(p, "postgresql: the database has readings, series or "
                       "peers tables but no schema_version: not a "
                       "sensornet database");
            rc = STORE_E_CORRUPT;
        }
        goto out;
    }
    PQclear(res);
    res = PQexec(p->conn, "SELECT max(version) FROM schema_version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = fail(p, res, "reading the schema version");
        if (rc != STORE_E_BUSY)
            rc = STORE_E_CORRUPT;
        goto out;
    }
    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        set_err(p, "postgresql: schema_version is empty: not a sensornet "
                   "database");
        rc = STORE_E_CORRUPT;
        goto out;
    }
    *version = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
out:
    PQclear(res);
    return rc;
}

static int
newer_version(struct pg_store *p, int version)
{
    set_err(p, "postgresql: database schema version %d is newer than this "
               "sensornet's (%d): upgrade sensornet",
            version, PG_SCHEMA_VERSION);
    return STORE_E_VERSION;
}

/*
 * Create or migrate the schema in one transaction, under an advisory lock
 * so that collectors starting together do it once.
 */
static int
migrate(struct pg_store *p)
{
    char sql[64];
    int rc, version = 0, from = 0;

    rc = exec_ok(p, "BEGIN", PGRES_COMMAND_OK, "BEGIN");
    if (rc < 0)
        return rc;
    rc = exec_ok(p, "SELECT pg_advisory_xact_lock(" PG_MIGRATE_LOCK ")",
                 PGRES_TUPLES_OK, "waiting for the migration lock");
    if (rc == 0)
        rc = read_version(p, &version);
    if (rc == 0 && version > PG_SCHEMA_VERSION)
        rc = newer_version(p, version);
    if (rc == 0 && version < 0) {
        set_err(p, "postgresql: bad schema version %d", version);
        rc = STORE_E_CORRUPT;
    }
    from = version;
    for (; rc == 0 && version < PG_SCHEMA_VERSION; version++)
        rc = exec_ok(p, migrations[version], PGRES_COMMAND_OK,
                     "migrating the schema");
    if (rc == 0 && from < PG_SCHEMA_VERSION) {
        snprintf(sql, sizeof(sql), "UPDATE schema_version SET version = %d",
                 PG_SCHEMA_VERSION);
        rc = exec_ok(p, sql, PGRES_COMMAND_OK, "migrating the schema");
    }
    if (rc == 0)
        rc = exec_ok(p, "COMMIT", PGRES_COMMAND_OK, "COMMIT (schema)");
    if (rc < 0) {
        abort_tx(p);
        return rc;
    }
    if (from < PG_SCHEMA_VERSION)
        log_info("postgresql: schema version %d -> %d", from,
                 PG_SCHEMA_VERSION);
    return 0;
}

/*
 * Make a fresh connection usable: session settings, a version check (a
 * newer collector may have migrated while we were away), the staging table
 * and the prepared statements. Runs after every connect.
 */
static int
setup_session(struct pg_store *p)
{
    const char *sync;
    PGresult *res;
    size_t i;
    int rc, version = 0;

    if (p->readonly)
        sync = "SET default_transaction_read_only = on";
    else if (p->fsync == STORE_FSYNC_OFF)
        sync = "SET synchronous_commit = off";
    else /* on, or whatever stronger setting the server has */
        sync = "SELECT set_config('synchronous_commit', 'on', false)"
               " WHERE current_setting('synchronous_commit') = 'off'";
    rc = exec_ok(p, "SET client_min_messages = warning;"
                    " SET temp_buffers = '64MB'",
                 PGRES_COMMAND_OK, "setting up the session");
    if (rc == 0)
        rc = exec_ok(p, sync, p->readonly || p->fsync == STORE_FSYNC_OFF ?
                     PGRES_COMMAND_OK : PGRES_TUPLES_OK,
                     "setting synchronous_commit");
    if (rc == 0)
        rc = read_version(p, &version);
    if (rc == 0 && version == 0) {
        set_err(p, "postgresql: the database has no sensornet schema yet "
                   "(a collector creates it)");
        rc = STORE_E_CORRUPT;
    }
    if (rc == 0 && version > PG_SCHEMA_VERSION)
        rc = newer_version(p, version);
    if (rc == 0 && version < PG_SCHEMA_VERSION) {
        set_err(p, "postgresql: database schema version %d is older than "
                   "this sensornet's (%d): a collector migrates it",
                version, PG_SCHEMA_VERSION);
        rc = STORE_E_VERSION;
    }
    if (rc < 0 || p->readonly)
        return rc;
    rc = exec_ok(p, sql_staging, PGRES_COMMAND_OK,
                 "creating the staging table");
    for (i = 0; rc == 0 && i < sizeof(prepared) / sizeof(prepared[0]); i++) {
        res = PQprepare(p->conn, prepared[i].name, prepared[i].sql, 0, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = fail(p, res, "preparing statements");
        PQclear(res);
    }
    return rc;
}

/* Connect and set up, or stay DOWN. */
static int
connect_session(struct pg_store *p)
{
    int rc = connect_once(p);

    if (rc == 0)
        rc = setup_session(p);
    if (rc < 0)
        lose_conn(p);
    return rc;
}

/*
 * Has the server closed this idle connection (a restart sends FATAL 57P01,
 * then EOF)? Reads whatever is waiting without blocking: the first read
 * may return the message, the next one the EOF.
 */
static bool
conn_closed(PGconn *conn)
{
    struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
    int i;

    for (i = 0; i < 4; i++) {
        if (PQstatus(conn) != CONNECTION_OK || pfd.fd < 0)
            return true;
        if (poll(&pfd, 1, 0) <= 0)
            return false;
        if (PQconsumeInput(conn) == 0)
            return true;
        (void)PQisBusy(conn); /* parses it: an ERROR goes to notice_fn */
    }
    return PQstatus(conn) != CONNECTION_OK;
}

/* DOWN, or closed by the server while idle: reconnect now. */
static int
ensure_conn(struct pg_store *p)
{
    bool was_up = p->conn != NULL;
    int rc;

    if (p->conn != NULL && conn_closed(p->conn))
        lose_conn(p);
    if (p->conn != NULL)
        return 0;
    rc = connect_session(p);
    if (rc == 0)
        log_info("postgresql: %s", was_up ? "connection was closed; "
                 "reconnected" : "reconnected");
    return rc;
}

/* ---- open, begin, append --------------------------------------------- */

static void pg_close(struct store *st);

static struct store *
pg_open(const struct store_conf *conf, char *err, int *why)
{
    struct pg_store *p;
    PQconninfoOption *opts;
    char *perr = NULL, line[STORE_ERR_LEN - 64];
    int64_t deadline;
    int rc, delay_ms = 250;
    bool warned = false;

    opts = PQconninfoParse(conf->postgres, &perr);
    if (opts == NULL) {
        one_line(line, sizeof(line), perr != NULL ? perr : "out of memory");
        snprintf(err, STORE_ERR_LEN, "postgresql: bad conninfo: %s", line);
        PQfreemem(perr);
        *why = STORE_E_INVAL;
        return NULL;
    }
    PQconninfoFree(opts);
    p = calloc(1, sizeof(*p));
    if (p == NULL || (p->conninfo = strdup(conf->postgres)) == NULL) {
        free(p);
        snprintf(err, STORE_ERR_LEN, "postgresql: out of memory");
        *why = STORE_E_IO;
        return NULL;
    }
    p->base.ops = &store_pg_ops;
    p->fsync = conf->fsync;
    p->readonly = (conf->flags & STORE_F_READONLY) != 0;
    p->series.cache_max = conf->series_cache != 0 ? conf->series_cache
                                                  : PG_SERIES_CACHE_DEFAULT;
    p->peers.cache_max = PG_PEER_CACHE_MAX;
    if (getrandom(&p->hash_seed, sizeof(p->hash_seed), GRND_NONBLOCK) !=
        (ssize_t)sizeof(p->hash_seed))
        p->hash_seed = (uint64_t)clock_mono_ns() ^ (uint64_t)(uintptr_t)p;

    /* The schema must exist before anything is acknowledged, so open waits
     * for a server that is still starting, within store_pg_open_wait_ms. */
    deadline = clock_mono_ms() + store_pg_open_wait_ms;
    for (;;) {
        rc = connect_once(p);
        if (rc == 0 && !p->readonly)
            rc = migrate(p);
        if (rc == 0)
            rc = setup_session(p);
        if (rc == 0)
            break;
        lose_conn(p);
        if (rc != STORE_E_BUSY || clock_mono_ms() >= deadline)
            goto fail;
        if (!warned)
            log_warn("%s; retrying for up to %d s", p->base.errmsg,
                     store_pg_open_wait_ms / 1000);
        warned = true;
        if (delay_ms > deadline - clock_mono_ms())
            delay_ms = (int)(deadline - clock_mono_ms());
        if (delay_ms > 0)
            nanosleep(&(struct timespec){.tv_sec = delay_ms / 1000,
                          .tv_nsec = (delay_ms % 1000) * 1000000L}, NULL);
        delay_ms = delay_ms * 2 > 2000 ? 2000 : delay_ms * 2;
    }
    if (warned)
        log_info("postgresql: connected");
    return &p->base;
fail:
    if (rc == STORE_E_BUSY && warned)
        snprintf(err, STORE_ERR_LEN, "%.200s (gave up after %d s)",
                 p->base.errmsg, store_pg_open_wait_ms / 1000);
    else
        snprintf(err, STORE_ERR_LEN, "%s", p->base.errmsg);
    *why = rc;
    pg_close(&p->base);
    return NULL;
}

static int
pg_begin(struct store *st)
{
    struct pg_store *p = (struct pg_store *)st;
    int rc;

    if (p->readonly) {
        set_err(p, "postgresql: read-only store");
        return STORE_E_INVAL;
    }
    if (p->in_batch) {
        set_err(p, "postgresql: begin inside a transaction");
        return STORE_E_INVAL;
    }
    rc = ensure_conn(p);
    if (rc < 0)
        return rc;
    batch_reset(p);
    p->in_batch = true;
    return 0;
}

/* Buffer a checked reading. Any error leaves the batch incomplete. */
static int
buffer_reading(struct pg_store *p, const struct store_reading *r,
               size_t peer_len)
{
    const char *peer = r->peer != NULL ? r->peer : "";
    const struct pg_name *lp;
    struct pg_name *s;
    struct pg_row *row;
    uint32_t series, peer_idx;
    int rc;

    if (p->n_rows >= UINT32_MAX) {
        set_err(p, "postgresql: too many readings in one batch");
        return STORE_E_IO;
    }
    rc = names_find(p, &p->series, r->sensor, r->sensor_len, r->quantity,
                    r->quantity_len, &series);
    if (rc < 0)
        return rc;
    /* Consecutive readings nearly always come from one peer. */
    lp = p->last_peer != 0 ? &p->peers.v[p->last_peer - 1] : NULL;
    if (lp != NULL && lp->a_len == peer_len &&
        memcmp(p->arena + lp->key_off, peer, peer_len) == 0) {
        peer_idx = p->last_peer - 1;
    } else {
        rc = names_find(p, &p->peers, peer, peer_len, "", 0, &peer_idx);
        if (rc < 0)
            return rc;
        p->last_peer = peer_idx + 1;
    }
    /* The unit of the newest reading (the first of equal ts) becomes the
     * series' unit; units rarely change, so the arena rarely grows. */
    s = &p->series.v[series];
    if (s->n_appended == 0 || r->ts_ns > s->unit_ts) {
        if (s->n_appended == 0 || s->unit_len != r->unit_len ||
            memcmp(p->arena + s->unit_off, r->unit, r->unit_len) != 0) {
            rc = arena_put(p, r->unit, r->unit_len, &s->unit_off);
            if (rc < 0)
                return rc;
            s->unit_len = (uint32_t)r->unit_len;
        }
        s->unit_ts = r->ts_ns;
    }
    rc = grow(p, (void **)&p->rows, &p->rows_cap, p->n_rows + 1,
              sizeof(*p->rows), false);
    if (rc < 0)
        return rc;
    s->n_appended++;
    row = &p->rows[p->n_rows];
    row->ts = r->ts_ns;
    row->recv_ns = r->recv_ns;
    row->value = r->value;
    row->series = series;
    row->peer = peer_idx;
    row->seq = (uint32_t)p->n_rows;
    p->n_rows++;
    return 0;
}

static int
pg_append(struct store *st, const struct store_reading *r)
{
    struct pg_store *p = (struct pg_store *)st;
    size_t peer_len;
    int rc;

    if (!p->in_batch) {
        if (p->conn == NULL && !p->readonly)
            return STORE_E_BUSY; /* errmsg: why begin failed */
        set_err(p, "postgresql: append outside a transaction");
        return STORE_E_INVAL;
    }
    if (p->failed != 0)
        return p->failed;
    /* store_append() checked the limits (peer at most STORE_PEER_MAX). */
    peer_len = r->peer != NULL ? strlen(r->peer) : 0;
    rc = buffer_reading(p, r, peer_len);
    if (rc < 0)
        p->failed = rc;
    return rc;
}

/* ---- commit ---------------------------------------------------------- */

static int
cmp_row(const void *a, const void *b)
{
    const struct pg_row *x = a, *y = b;

    if (x->series != y->series)
        return x->series < y->series ? -1 : 1;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/*
 * Sort the rows by (series, ts), which inserts each series' rows into the
 * primary key index side by side (measured: about a quarter faster), drop
 * the later of two readings with the same key (as ON CONFLICT DO NOTHING
 * would; so one batch never conflicts with itself), and compute each
 * series' aggregates over what is left.
 */
static void
sort_rows(struct pg_store *p)
{
    struct pg_name *s = NULL;
    size_t i, n = 0;

    qsort(p->rows, p->n_rows, sizeof(*p->rows), cmp_row);
    for (i = 0; i < p->n_rows; i++) {
        const struct pg_row *r = &p->rows[i];

        if (n > 0 && p->rows[n - 1].series == r->series &&
            p->rows[n - 1].ts == r->ts)
            continue;
        if (s != &p->series.v[r->series]) {
            s = &p->series.v[r->series];
            s->n = 0;
            s->min_recv = s->max_recv = r->recv_ns;
            s->min_ts = r->ts; /* sorted: the first is the oldest */
        }
        s->n++;
        if (r->recv_ns < s->min_recv)
            s->min_recv = r->recv_ns;
        if (r->recv_ns > s->max_recv)
            s->max_recv = r->recv_ns;
        s->max_ts = r->ts; /* ... and the last the newest */
        s->max_ts_value = r->value;
        p->rows[n++] = *r;
    }
    p->n_rows = n;
}

/* Text array literal element: always quoted, \ and " escaped. */
static int
put_array_text(struct pg_store *p, const char *s, size_t len, bool first)
{
    size_t i;
    int rc = scratch_put(p, first ? "\"" : ",\"", first ? 1 : 2);

    for (i = 0; rc == 0 && i < len; i++) {
        if (s[i] == '"' || s[i] == '\\')
            rc = scratch_put(p, "\\", 1);
        if (rc == 0)
            rc = scratch_put(p, &s[i], 1);
    }
    return rc == 0 ? scratch_put(p, "\"", 1) : rc;
}

/* What one array parameter holds, per name of a batch (pg_name field). */
enum col {
    COL_A, COL_B, COL_UNIT, COL_ID, COL_N, COL_MIN_RECV, COL_MAX_RECV,
    COL_MIN_TS, COL_MAX_TS, COL_MAX_VALUE,
};

/* Append one array literal "{...}" and its NUL to scratch: col of the
 * names nm->v[idx[i]] (i < n), or of all of them when idx is NULL. */
static int
put_array(struct pg_store *p, const struct pg_names *nm,
          const uint32_t *idx, size_t n, enum col col, size_t *off)
{
    size_t i;
    int rc;

    *off = p->scratch_len;
    rc = scratch_put(p, "{", 1);
    for (i = 0; rc == 0 && i < n; i++) {
        const struct pg_name *e = &nm->v[idx != NULL ? idx[i] : i];
        const char *key = p->arena + e->key_off, *sep = i ? "," : "";
        int64_t v;

        switch (col) {
        case COL_A:
            rc = put_array_text(p, key, e->a_len, i == 0);
            continue;
        case COL_B:
            rc = put_array_text(p, key + e->a_len, e->b_len, i == 0);
            continue;
        case COL_UNIT:
            rc = put_array_text(p, p->arena + e->unit_off, e->unit_len,
                                i == 0);
            continue;
        case COL_MAX_VALUE:
            rc = scratch_printf(p, "%s%.17g", sep, e->max_ts_value);
            continue;
        case COL_ID: v = e->id; break;
        case COL_N: v = e->n; break;
        case COL_MIN_RECV: v = e->min_recv; break;
        case COL_MAX_RECV: v = e->max_recv; break;
        case COL_MIN_TS: v = e->min_ts; break;
        default: v = e->max_ts; break;
        }
        rc = scratch_printf(p, "%s%lld", sep, (long long)v);
    }
    return rc == 0 ? scratch_put(p, "}", 2) : rc;
}

/* Run a prepared statement whose parameters are arrays of cols over the
 * names (idx, n) as put_array takes them; *out gets the result. */
static int
exec_arrays(struct pg_store *p, const char *stmt, const struct pg_names *nm,
            const uint32_t *idx, size_t n, const enum col *cols,
            int n_cols, ExecStatusType want, PGresult **out)
{
    const char *vals[8];
    size_t off[8];
    PGresult *res;
    int rc = 0, k;

    p->scratch_len = 0;
    for (k = 0; rc == 0 && k < n_cols; k++)
        rc = put_array(p, nm, idx, n, cols[k], &off[k]);
    if (rc < 0)
        return rc;
    for (k = 0; k < n_cols; k++)
        vals[k] = p->scratch + off[k];
    res = PQexecPrepared(p->conn, stmt, n_cols, vals, NULL, NULL, 0);
    if (PQresultStatus(res) != want) {
        rc = fail(p, res, stmt);
        PQclear(res);
        return rc;
    }
    *out = res;
    return 0;
}

static int
cmp_key(const struct pg_name *x, const struct pg_name *y, const char *arena)
{
    size_t n = x->a_len < y->a_len ? x->a_len : y->a_len;
    int c = memcmp(arena + x->key_off, arena + y->key_off, n);

    if (c != 0 || x->a_len != y->a_len)
        return c != 0 ? c : (x->a_len < y->a_len ? -1 : 1);
    n = x->b_len < y->b_len ? x->b_len : y->b_len;
    c = memcmp(arena + x->key_off + x->a_len, arena + y->key_off + y->a_len,
               n);
    if (c != 0 || x->b_len == y->b_len)
        return c;
    return x->b_len < y->b_len ? -1 : 1;
}

struct sort_ctx {
    const struct pg_names *nm;
    const char *arena;
};

static int
cmp_key_r(const void *a, const void *b, void *arg)
{
    const struct sort_ctx *c = arg;

    return cmp_key(&c->nm->v[*(const uint32_t *)a],
                   &c->nm->v[*(const uint32_t *)b], c->arena);
}

/*
 * Give every name of the batch its id: insert the unknown ones (sorted by
 * key, so that concurrent collectors take key locks in one order), then
 * look up those another transaction committed meanwhile.
 */
static int
resolve(struct pg_store *p, struct pg_names *nm, bool series)
{
    static const enum col put_series[] = {COL_A, COL_B, COL_UNIT,
                                          COL_MIN_RECV};
    static const enum col put_peer[] = {COL_A};
    struct sort_ctx ctx = {nm, p->arena};
    uint32_t *order;
    PGresult *res = NULL;
    size_t n = 0, i, missing;
    int rc = 0, round, t;

    for (i = 0; i < nm->n; i++)
        n += nm->v[i].id == 0;
    if (n == 0)
        return 0;
    order = malloc(n * sizeof(*order));
    if (order == NULL) {
        set_err(p, "postgresql: out of memory resolving names");
        return STORE_E_IO;
    }
    for (i = 0, n = 0; i < nm->n; i++) {
        if (nm->v[i].id == 0)
            order[n++] = (uint32_t)i;
    }
    qsort_r(order, n, sizeof(*order), cmp_key_r, &ctx);
    for (round = 0; round < 2; round++) {
        if (series)
            rc = exec_arrays(p, round == 0 ? "sn_series_put" :
                             "sn_series_get", nm, order, n, put_series,
                             round == 0 ? 4 : 2, PGRES_TUPLES_OK, &res);
        else
            rc = exec_arrays(p, round == 0 ? "sn_peer_put" : "sn_peer_get",
                             nm, order, n, put_peer, 1, PGRES_TUPLES_OK,
                             &res);
        if (rc < 0)
            goto out;
        for (t = 0; t < PQntuples(res); t++) {
            long long ord = strtoll(PQgetvalue(res, t, 0), NULL, 10);

            if (ord >= 1 && (size_t)ord <= n) {
                nm->v[order[ord - 1]].id =
                    strtoll(PQgetvalue(res, t, 1), NULL, 10);
                nm->v[order[ord - 1]].pending = true;
            }
        }
        PQclear(res);
        res = NULL;
        for (i = 0, missing = 0; i < n; i++) {
            if (nm->v[order[i]].id == 0)
                order[missing++] = order[i];
        }
        n = missing;
        if (n == 0)
            goto out;
    }
    set_err(p, "postgresql: %zu %s could not be inserted or found", n,
            series ? "series" : "peers");
    rc = STORE_E_IO;
out:
    free(order);
    return rc;
}

/* Lock the batch's series rows; a row that is gone (deleted by hand)
 * drops the cache so the next attempt inserts it again. */
static int
lock_series(struct pg_store *p)
{
    static const enum col cols[] = {COL_ID};
    PGresult *res = NULL;
    int rc;

    rc = exec_arrays(p, "sn_series_lock", &p->series, NULL, p->series.n,
                     cols, 1, PGRES_TUPLES_OK, &res);
    if (rc == 0 && (size_t)PQntuples(res) != p->series.n) {
        set_err(p, "postgresql: %zu series rows vanished; looking them up "
                   "again", p->series.n - (size_t)PQntuples(res));
        cache_clear(&p->series);
        rc = STORE_E_BUSY;
    }
    PQclear(res);
    return rc;
}

static void
put_be(char *out, uint64_t v, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        out[i] = (char)(v >> (8 * (len - 1 - i)));
}

static int
copy_flush(struct pg_store *p)
{
    if (p->scratch_len == 0)
        return 0;
    if (PQputCopyData(p->conn, p->scratch, (int)p->scratch_len) != 1)
        return fail(p, NULL, "COPY");
    p->scratch_len = 0;
    return 0;
}

/*
 * COPY the rows into table (readings or sn_staging) in binary format: a
 * header, then per row a field count and (length, big-endian value) per
 * field, then -1. state gets the SQLSTATE of a failed COPY, or "".
 */
static int
copy_rows(struct pg_store *p, const char *table, char state[6])
{
    static const char header[19] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";
    char tuple[2 + 5 * 12], sql[64];
    PGresult *res;
    size_t i, k;
    uint64_t v[5];
    int rc;

    state[0] = '\0';
    snprintf(sql, sizeof(sql), "COPY %s FROM STDIN (FORMAT binary)", table);
    res = PQexec(p->conn, sql);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        rc = fail(p, res, "COPY");
        PQclear(res);
        return rc;
    }
    PQclear(res);
    p->scratch_len = 0;
    rc = scratch_put(p, header, sizeof(header));
    put_be(tuple, 5, 2);
    for (i = 0; rc == 0 && i < p->n_rows; i++) {
        const struct pg_row *r = &p->rows[i];

        v[0] = (uint64_t)p->series.v[r->series].id;
        v[1] = (uint64_t)r->ts;
        memcpy(&v[2], &r->value, 8);
        v[3] = (uint64_t)r->recv_ns;
        v[4] = (uint64_t)p->peers.v[r->peer].id;
        for (k = 0; k < 5; k++) {
            put_be(tuple + 2 + 12 * k, 8, 4);
            put_be(tuple + 6 + 12 * k, v[k], 8);
        }
        rc = scratch_put(p, tuple, sizeof(tuple));
        if (rc == 0 && p->scratch_len >= PG_COPY_CHUNK)
            rc = copy_flush(p);
    }
    if (rc == 0)
        rc = scratch_put(p, "\377\377", 2);
    if (rc == 0)
        rc = copy_flush(p);
    if (rc < 0 && p->conn == NULL)
        return rc;
    /* End the COPY (aborting it after an error of ours) and collect its
     * result, so the connection is back in a state for ROLLBACK. */
    if (PQputCopyEnd(p->conn, rc < 0 ? "sensornet: batch aborted" : NULL) !=
        1)
        return fail(p, NULL, "COPY");
    while ((res = PQgetResult(p->conn)) != NULL) {
        if (rc == 0 && PQresultStatus(res) != PGRES_COMMAND_OK) {
            const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);

            snprintf(state, 6, "%s", st != NULL ? st : "");
            rc = fail(p, res, "COPY");
        }
        PQclear(res);
        if (p->conn == NULL)
            break;
    }
    return rc;
}

/*
 * Fast path: COPY straight into readings (COPY's multi-row inserts run at
 * about twice the speed of INSERT ... SELECT) inside a savepoint, then add
 * the client's aggregates. A stored duplicate (23505) rolls back to the
 * savepoint and sets *dup: take the slow path.
 */
static int
insert_fast(struct pg_store *p, bool *dup)
{
    static const enum col cols[] = {COL_ID, COL_N, COL_MIN_RECV,
                                    COL_MAX_RECV, COL_MIN_TS, COL_MAX_TS,
                                    COL_MAX_VALUE, COL_UNIT};
    PGresult *res = NULL;
    char state[6] = "";
    int rc;

    *dup = false;
    rc = exec_ok(p, "SAVEPOINT sn_fast", PGRES_COMMAND_OK, "SAVEPOINT");
    if (rc == 0)
        rc = copy_rows(p, "readings", state);
    if (rc < 0 && p->conn != NULL && strcmp(state, "23505") == 0) {
        *dup = true;
        return exec_ok(p, "ROLLBACK TO SAVEPOINT sn_fast", PGRES_COMMAND_OK,
                       "ROLLBACK TO SAVEPOINT");
    }
    if (rc == 0)
        rc = exec_arrays(p, "sn_add", &p->series, NULL, p->series.n, cols, 8,
                         PGRES_COMMAND_OK, &res);
    PQclear(res);
    return rc;
}

/* Slow path: COPY into the staging table, then INSERT ... ON CONFLICT DO
 * NOTHING and aggregates over the rows it inserted (sql_flush). */
static int
insert_slow(struct pg_store *p)
{
    static const enum col cols[] = {COL_ID, COL_MAX_TS, COL_MAX_VALUE,
                                    COL_UNIT};
    PGresult *res = NULL;
    char state[6];
    int rc;

    rc = copy_rows(p, "sn_staging", state);
    if (rc == 0)
        rc = exec_arrays(p, "sn_flush", &p->series, NULL, p->series.n, cols,
                         4, PGRES_COMMAND_OK, &res);
    PQclear(res);
    return rc;
}

/* commit() of a batch that has not failed. */
static int
commit_batch(struct pg_store *p)
{
    PGresult *res;
    bool dup = true;
    int rc;

    if (p->n_rows == 0) {
        batch_reset(p);
        return 0;
    }
    if (p->conn == NULL) { /* cannot happen: begin connected */
        set_err(p, "postgresql unreachable: not connected");
        return STORE_E_BUSY;
    }
    sort_rows(p);
    rc = exec_ok(p, "BEGIN", PGRES_COMMAND_OK, "BEGIN");
    if (rc < 0)
        return rc;
    rc = resolve(p, &p->peers, false);
    if (rc == 0)
        rc = resolve(p, &p->series, true);
    if (rc == 0)
        rc = lock_series(p);
    if (rc == 0 && p->slow_left == 0)
        rc = insert_fast(p, &dup);
    if (rc == 0 && dup) {
        if (p->slow_left == 0)
            p->slow_left = PG_SLOW_BATCHES + 1;
        p->slow_left--;
        rc = insert_slow(p);
    }
    if (rc < 0) {
        abort_tx(p);
        return rc;
    }
    /* If the connection breaks now the outcome is unknown: report an
     * error; the writer's retry is harmless because inserts are
     * idempotent. */
    res = PQexec(p->conn, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK ||
        strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        if (PQresultStatus(res) == PGRES_COMMAND_OK) {
            set_err(p, "postgresql: COMMIT rolled back");
            rc = STORE_E_IO;
        } else {
            rc = fail(p, res, "COMMIT (outcome unknown, will retry)");
        }
        PQclear(res);
        return rc;
    }
    PQclear(res);
    names_commit(&p->peers, p->arena);
    names_commit(&p->series, p->arena);
    batch_reset(p);
    return 0;
}

static int
pg_commit(struct store *st)
{
    struct pg_store *p = (struct pg_store *)st;
    int rc;

    if (!p->in_batch) {
        set_err(p, "postgresql: commit outside a transaction");
        return STORE_E_INVAL;
    }
    if (p->failed != 0)
        return p->failed;
    rc = commit_batch(p);
    if (rc < 0)
        p->failed = rc;
    return rc;
}

static void
pg_rollback(struct store *st)
{
    struct pg_store *p = (struct pg_store *)st;

    /* commit() ends its server transaction itself on every path: only
     * the buffered batch is left to drop. */
    batch_reset(p);
}

/* ---- retention ------------------------------------------------------- */

/* "{a,b,...}" of column col (0, 1) of res into scratch at *off. */
static int
result_array(struct pg_store *p, const PGresult *res, int col, size_t *off)
{
    int i, rc;

    *off = p->scratch_len;
    rc = scratch_put(p, "{", 1);
    for (i = 0; rc == 0 && i < PQntuples(res); i++) {
        if (i > 0)
            rc = scratch_put(p, ",", 1);
        if (rc == 0)
            rc = scratch_put(p, PQgetvalue(res, i, col),
                             (size_t)PQgetlength(res, i, col));
    }
    return rc == 0 ? scratch_put(p, "}", 2) : rc;
}

static int
pg_retention_step(struct store *st, int64_t cutoff_ns, int max_rows)
{
    struct pg_store *p = (struct pg_store *)st;
    char cutoff[32], limit[16];
    const char *vals[3];
    PGresult *ids = NULL, *del = NULL, *res;
    size_t off[2];
    long long n = 0;
    int rc, i;

    if (p->readonly || p->in_batch || max_rows < 0) {
        set_err(p, "postgresql: retention on a read-only store, inside a "
                   "transaction or with a negative row count");
        return STORE_E_INVAL;
    }
    if (max_rows == 0)
        return 0;
    rc = ensure_conn(p);
    if (rc < 0)
        return rc;
    snprintf(cutoff, sizeof(cutoff), "%lld", (long long)cutoff_ns);
    snprintf(limit, sizeof(limit), "%d", max_rows);
    rc = exec_ok(p, "BEGIN", PGRES_COMMAND_OK, "BEGIN");
    if (rc < 0)
        return rc;
    vals[0] = cutoff;
    vals[1] = limit;
    ids = PQexecPrepared(p->conn, "sn_ret_pick", 2, vals, NULL, NULL, 0);
    if (PQresultStatus(ids) != PGRES_TUPLES_OK) {
        rc = fail(p, ids, "retention");
        goto out;
    }
    if (PQntuples(ids) > 0) {
        p->scratch_len = 0;
        rc = result_array(p, ids, 0, &off[0]);
        if (rc < 0)
            goto out;
        vals[0] = p->scratch + off[0];
        vals[1] = cutoff;
        vals[2] = limit;
        del = PQexecPrepared(p->conn, "sn_ret_del", 3, vals, NULL, NULL, 0);
        if (PQresultStatus(del) != PGRES_TUPLES_OK) {
            rc = fail(p, del, "retention");
            goto out;
        }
        p->scratch_len = 0;
        rc = result_array(p, del, 0, &off[0]);
        if (rc == 0)
            rc = result_array(p, del, 1, &off[1]);
        if (rc < 0)
            goto out;
        vals[0] = p->scratch + off[0];
        vals[1] = p->scratch + off[1];
        res = PQexecPrepared(p->conn, "sn_ret_fix", 2, vals, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = fail(p, res, "retention");
        PQclear(res);
        for (i = 0; rc == 0 && i < PQntuples(del); i++)
            n += strtoll(PQgetvalue(del, i, 1), NULL, 10);
    }
    if (rc == 0)
        rc = exec_ok(p, "COMMIT", PGRES_COMMAND_OK, "COMMIT (retention)");
out:
    PQclear(ids);
    PQclear(del);
    if (rc < 0) {
        abort_tx(p);
        return rc;
    }
    return (int)n;
}

static void
pg_close(struct store *st)
{
    struct pg_store *p = (struct pg_store *)st;

    lose_conn(p);
    names_free(&p->series);
    names_free(&p->peers);
    free(p->rows);
    free(p->arena);
    free(p->scratch);
    free(p->conninfo);
    free(p);
}

/* ---- the read side (store.h) ----------------------------------------- */

/*
 * Queries of the read handle: one PQexecParams each, parameters as text,
 * results in binary (int8 and float8 arrive as 8 big-endian bytes, so no
 * number is parsed back from text). Text columns are compared and sorted
 * bytewise (COLLATE "C"), as SQLite does.
 */
#define PG_SERIES_COLS                                                         \
    "SELECT s.sensor, s.quantity, s.unit, s.first_seen, s.last_seen,"         \
    " s.first_ts, s.last_ts, s.last_value, s.count,"                          \
    " (SELECT p.addr FROM readings r JOIN peers p ON p.id = r.peer_id"       \
    "  WHERE r.series_id = s.id AND r.ts = s.last_ts)"                        \
    " FROM series s"

static int64_t
pg_col_i64(const PGresult *res, int row, int col)
{
    uint64_t v = 0;

    if (PQgetisnull(res, row, col) || PQgetlength(res, row, col) != 8)
        return 0;
    memcpy(&v, PQgetvalue(res, row, col), 8);
    return (int64_t)be64toh(v);
}

static double
pg_col_f64(const PGresult *res, int row, int col)
{
    uint64_t v = 0;
    double d;

    if (PQgetisnull(res, row, col) || PQgetlength(res, row, col) != 8)
        return 0;
    memcpy(&v, PQgetvalue(res, row, col), 8);
    v = be64toh(v);
    memcpy(&d, &v, 8);
    return d;
}

static const char *
pg_col_text(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col);
}

/* Run one read query; *out gets its result (caller PQclears). */
static int
pg_read_query(struct pg_store *p, const char *sql, int n_params,
              const char *const *vals, PGresult **out)
{
    PGresult *res;
    int rc;

    *out = NULL;
    if (p->in_batch) {
        set_err(p, "postgresql: query inside a write transaction");
        return STORE_E_INVAL;
    }
    rc = ensure_conn(p);
    if (rc < 0)
        return rc;
    res = PQexecParams(p->conn, sql, n_params, NULL, vals, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = fail(p, res, "query");
        PQclear(res);
        return rc;
    }
    *out = res;
    return 0;
}

static int
pg_list_series(struct store *st, const char *sensor, const char *quantity,
               size_t max_rows, store_series_fn *fn, void *arg)
{
    struct pg_store *p = (struct pg_store *)st;
    const char *vals[3];
    char limit[32];
    const char *sql;
    PGresult *res;
    int n = 0, rc, i;

    snprintf(limit, sizeof(limit), "%zu", max_rows);
    vals[0] = limit;
    vals[1] = sensor;
    vals[2] = quantity;
    if (sensor == NULL)
        sql = PG_SERIES_COLS " ORDER BY s.sensor COLLATE \"C\","
                             " s.quantity COLLATE \"C\" LIMIT $1::bigint";
    else if (quantity == NULL)
        sql = PG_SERIES_COLS " WHERE s.sensor = $2"
                             " ORDER BY s.quantity COLLATE \"C\""
                             " LIMIT $1::bigint";
    else
        sql = PG_SERIES_COLS " WHERE s.sensor = $2 AND s.quantity = $3"
                             " LIMIT $1::bigint";
    rc = pg_read_query(p, sql, sensor == NULL ? 1 : quantity == NULL ? 2 : 3,
                       vals, &res);
    if (rc < 0)
        return rc;
    for (i = 0; i < PQntuples(res); i++) {
        struct store_series r = {
            .sensor = pg_col_text(res, i, 0),
            .quantity = pg_col_text(res, i, 1),
            .unit = pg_col_text(res, i, 2),
            .first_seen = pg_col_i64(res, i, 3),
            .last_seen = pg_col_i64(res, i, 4),
            .first_ts = pg_col_i64(res, i, 5),
            .last_ts = pg_col_i64(res, i, 6),
            .last_value = pg_col_f64(res, i, 7),
            .has_last = !PQgetisnull(res, i, 6) && !PQgetisnull(res, i, 7),
            .count = pg_col_i64(res, i, 8),
            .peer = pg_col_text(res, i, 9),
        };

        n++;
        if (fn(arg, &r) != 0)
            break;
    }
    PQclear(res);
    return n;
}

static int
pg_read_range(struct store *st, const struct store_range *q,
              store_point_fn *fn, void *arg)
{
    struct pg_store *p = (struct pg_store *)st;
    char from[32], to[32], limit[32];
    const char *vals[5] = {q->sensor, q->quantity, from, to, limit};
    PGresult *res;
    int n = 0, rc, i;

    snprintf(from, sizeof(from), "%lld", (long long)q->from_ns);
    snprintf(to, sizeof(to), "%lld", (long long)q->to_ns);
    snprintf(limit, sizeof(limit), "%zu", q->limit);
    rc = pg_read_query(
        p,
        "SELECT ts, value FROM readings WHERE series_id ="
        " (SELECT id FROM series WHERE sensor = $1 AND quantity = $2)"
        " AND ts >= $3::bigint AND ts < $4::bigint ORDER BY ts"
        " LIMIT $5::bigint",
        5, vals, &res);
    if (rc < 0)
        return rc;
    for (i = 0; i < PQntuples(res); i++) {
        n++;
        if (fn(arg, pg_col_i64(res, i, 0), pg_col_f64(res, i, 1)) != 0)
            break;
    }
    PQclear(res);
    return n;
}

static int
pg_read_buckets(struct store *st, const struct store_range *q,
                int64_t origin_ns, int64_t step_ns, store_bucket_fn *fn,
                void *arg)
{
    struct pg_store *p = (struct pg_store *)st;
    char origin[32], from[32], to[32], step[32], limit[32];
    const char *vals[7] = {q->sensor, q->quantity, origin, from, to, step,
                           limit};
    PGresult *res;
    int n = 0, rc, i;

    snprintf(origin, sizeof(origin), "%lld", (long long)origin_ns);
    snprintf(from, sizeof(from), "%lld", (long long)q->from_ns);
    snprintf(to, sizeof(to), "%lld", (long long)q->to_ns);
    snprintf(step, sizeof(step), "%lld", (long long)step_ns);
    snprintf(limit, sizeof(limit), "%zu", q->limit);
    rc = pg_read_query(
        p,
        "SELECT (ts - $3::bigint) / $6::bigint AS b, min(value), max(value),"
        " avg(value), count(*) FROM readings WHERE series_id ="
        " (SELECT id FROM series WHERE sensor = $1 AND quantity = $2)"
        " AND ts >= $4::bigint AND ts < $5::bigint GROUP BY b ORDER BY b"
        " LIMIT $7::bigint",
        7, vals, &res);
    if (rc < 0)
        return rc;
    for (i = 0; i < PQntuples(res); i++) {
        struct store_bucket b = {
            .start_ns = origin_ns + pg_col_i64(res, i, 0) * step_ns,
            .min = pg_col_f64(res, i, 1),
            .max = pg_col_f64(res, i, 2),
            .avg = pg_col_f64(res, i, 3),
            .count = pg_col_i64(res, i, 4),
        };

        n++;
        if (fn(arg, &b) != 0)
            break;
    }
    PQclear(res);
    return n;
}

const struct store_ops store_pg_ops = {
    .name = "postgresql",
    .open = pg_open,
    .begin = pg_begin,
    .append = pg_append,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .retention_step = pg_retention_step,
    .close = pg_close,
    .list_series = pg_list_series,
    .read_range = pg_read_range,
    .read_buckets = pg_read_buckets,
};
