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

enum store_fsync {
    STORE_FSYNC_ALWAYS = 0, /* sync every commit, commit at once */
    STORE_FSYNC_BATCH,      /* sync every group commit (default) */
    STORE_FSYNC_OFF,        /* never sync: survives a crash of the server
                             * process, not of the machine */
};

#define STORE_F_READONLY 0x1

struct store_conf {
    const char *sqlite_path;  /* --db, used when postgres is NULL */
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
/* Backend name: "sqlite" or "postgresql". */
const char *store_name(const struct store *st);
/* Delete at most max_rows readings older than cutoff_ns in one short
 * transaction; returns rows deleted or a negative enum store_err. */
int store_retention_step(struct store *st, int64_t cutoff_ns, int max_rows);
/* store_close(NULL) is a no-op. */
void store_close(struct store *st);

#endif
