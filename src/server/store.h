/*
 * store: durable storage of readings behind one interface, with a backend
 * per database (SQLite's VFS, Fluent Bit's output plugins).
 *
 * Threading: a struct store is owned by exactly one thread at a time. The
 * writer thread owns the ingest handle; the HTTP API opens its own read
 * handle with store_open(..., STORE_F_READONLY). Nothing on an event loop
 * thread calls into a store.
 *
 * Transactions: begin, append*, commit. A reading appended is durable once
 * commit returns 0 (synced as conf->fsync says). On any error the caller
 * calls store_rollback() and may retry the same readings later: appends are
 * idempotent on (sensor, quantity, ts_ns), so a retried or resent reading
 * is stored once.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_STORE_H
#define SN_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_ERR_LEN 256
/* Longest peer address a store keeps; store_append refuses longer. */
#define STORE_PEER_MAX 128

enum store_fsync {
    STORE_FSYNC_ALWAYS = 0, /* sync every commit, commit at once */
    STORE_FSYNC_BATCH,      /* sync every group commit (default) */
    STORE_FSYNC_OFF,        /* never sync: survives a crash of the server
                             * process, not of the machine */
};

#define STORE_F_READONLY 0x1

struct store_conf {
    const char *sqlite_path;  /* --db, used when postgres is NULL; NULL
                               * too: no database (--db off) */
    const char *postgres;     /* --postgres CONNINFO, or NULL */
    enum store_fsync fsync;
    unsigned flags;           /* STORE_F_* */
    /* Most (sensor, quantity) -> series id entries a store keeps in memory
     * (about 150 bytes each); 0 means the default, 1048576. */
    size_t series_cache;
};

/* One reading to store. Borrowed: the store copies what it keeps. */
struct store_reading {
    const char *sensor;
    size_t sensor_len;
    const char *quantity; /* canonical */
    size_t quantity_len;
    const char *unit;
    size_t unit_len;
    double value;
    int64_t ts_ns;     /* reading time: the line's, else its arrival time */
    int64_t recv_ns;   /* arrival time at the collector */
    bool has_ts;       /* false: ts_ns is the arrival time (text form) */
    const char *peer;  /* "10.0.2.135:54812", NUL-terminated */
};

/* Error classes, so the writer can say what happened and decide to wait. */
enum store_err {
    STORE_E_IO = -1,       /* disk full, I/O error: retry later */
    STORE_E_BUSY = -2,     /* locked or unreachable: retry later */
    STORE_E_CORRUPT = -3,  /* not a sensornet database, or corrupt */
    STORE_E_VERSION = -4,  /* schema newer than this binary */
    STORE_E_INVAL = -5,    /* bad argument or configuration */
};

struct store;

/*
 * Open (creating or migrating the schema) the backend that conf selects.
 * Returns NULL with a one-line message in err (STORE_ERR_LEN) on failure,
 * and *why set to an enum store_err. A file at sqlite_path that is not a
 * sensornet database is refused untouched (STORE_E_CORRUPT).
 */
struct store *store_open(const struct store_conf *conf, char *err,
                         int *why);

int store_begin(struct store *st);
/* Returns 0 or a negative enum store_err. A backend may buffer the reading
 * until commit (PostgreSQL's COPY path does). */
int store_append(struct store *st, const struct store_reading *r);
/* Durable on return 0; negative enum store_err otherwise (then rollback). */
int store_commit(struct store *st);
void store_rollback(struct store *st);
/* The last error's message (valid until the next call on st). */
const char *store_errmsg(struct store *st);
/* Backend name: "sqlite", "postgresql" or "none". */
const char *store_name(const struct store *st);
/* Delete at most max_rows readings older than cutoff_ns in one short
 * transaction; returns rows deleted or a negative enum store_err. */
int store_retention_step(struct store *st, int64_t cutoff_ns, int max_rows);
/* ---- The read side ------------------------------------------------------
 * Queries for the HTTP API, on its own STORE_F_READONLY handle (any handle
 * works). Each streams rows to a callback: strings in a row are
 * NUL-terminated and borrowed for the length of the call only. A callback
 * returns 0 to go on, anything else to stop early. Each op returns the
 * number of rows passed to the callback, or a negative enum store_err with
 * store_errmsg() set. Rows are capped by the caller's limit, never more
 * than STORE_QUERY_MAX_ROWS.
 */
#define STORE_QUERY_MAX_ROWS 100000

/* One row of the sensors table (docs/storage.md, section 3). */
struct store_series {
    const char *sensor;
    const char *quantity;
    const char *unit;      /* unit of the newest reading */
    const char *peer;      /* who sent the newest reading; "" if unknown */
    int64_t first_seen;    /* arrival of the first stored reading (ns) */
    int64_t last_seen;     /* arrival of the last stored reading (ns) */
    int64_t first_ts;      /* oldest reading time stored (count > 0) */
    int64_t last_ts;       /* newest reading time (has_last) */
    double last_value;     /* value at last_ts (has_last) */
    bool has_last;
    int64_t count;         /* readings stored now */
};

typedef int store_series_fn(void *arg, const struct store_series *s);

/* The series ordered by sensor then quantity: all of them when sensor is
 * NULL, else those of sensor (and only quantity when it is not NULL). At
 * most max_rows. */
int store_list_series(struct store *st, const char *sensor,
                      const char *quantity, size_t max_rows,
                      store_series_fn *fn, void *arg);

/* One series' readings with from_ns <= ts < to_ns, at most limit. */
struct store_range {
    const char *sensor;
    const char *quantity;
    int64_t from_ns;
    int64_t to_ns;
    size_t limit;
};

typedef int store_point_fn(void *arg, int64_t ts_ns, double value);

/* The readings of the range in time order. */
int store_read_range(struct store *st, const struct store_range *q,
                     store_point_fn *fn, void *arg);

/* The readings of one bucket [start_ns, start_ns + step). */
struct store_bucket {
    int64_t start_ns;
    int64_t count;
    double min, max, avg;
};

typedef int store_bucket_fn(void *arg, const struct store_bucket *b);

/*
 * The range's readings aggregated by the database into buckets of step_ns
 * aligned on multiples of step_ns (since the epoch): the non-empty ones in
 * time order, at most q->limit. step_ns > 0, and to_ns minus from_ns
 * rounded down to a multiple of step_ns must fit in an int64_t
 * (STORE_E_INVAL otherwise).
 */
int store_read_buckets(struct store *st, const struct store_range *q,
                       int64_t step_ns, store_bucket_fn *fn, void *arg);

/* store_close(NULL) is a no-op. */
void store_close(struct store *st);

#endif
