/*
 * batch: the unit of group commit. A network thread fills a batch with the
 * readings it parsed, their log.txt lines and, per connection, how far the
 * acknowledgements may go once the batch is committed; the writer thread
 * commits it and hands it back. A batch is allocated once with fixed
 * capacities and reused: nothing is allocated per reading.
 *
 * Ownership: a batch belongs to the thread that holds it; handing it to
 * writer_submit() transfers it to the writer until on_done() gives it back.
 * Readings borrow their peer string from the connection, which stays
 * allocated while a batch refers to it (conn refcount).
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_BATCH_H
#define SN_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"
#include "server/store.h"

struct batch;

/* How far a committed batch acknowledges one connection (or, for the HTTP
 * API, one request): who is whatever the batch's owner put there. */
struct batch_ack {
    void *who;
    uint64_t n_accepted; /* lines accepted up to the last one in the batch */
    uint32_t n_orig;     /* original-form messages to answer */
};

typedef void batch_notify_fn(struct batch *b, void *arg);

struct batch {
    struct batch *next;      /* writer queue link */
    void *owner;             /* the network thread that fills it */
    batch_notify_fn *on_taken; /* writer thread: batch entered a commit */
    batch_notify_fn *on_done;  /* writer thread: batch committed */
    int64_t first_ns;        /* monotonic time of the first record */
    bool ts_assigned;        /* writer made arrival timestamps unique */
    bool failed;             /* given up at shutdown: never acknowledge */

    struct store_reading *readings;
    size_t n_readings, cap_readings;
    struct batch_ack *acks;
    size_t n_acks;
    char *arena;             /* sensor, quantity and unit strings */
    size_t arena_len, arena_cap;
    char *log;               /* log.txt lines, formatted */
    size_t log_len, log_cap, log_written;
};

/* A batch for cap_readings readings and log_cap bytes of log.txt lines;
 * NULL on allocation failure. */
struct batch *batch_new(size_t cap_readings, size_t log_cap);
void batch_free(struct batch *b);
void batch_reset(struct batch *b);
bool batch_empty(const struct batch *b);

/* True if n more readings (and their strings and log lines, of at most
 * log_bytes) fit. */
bool batch_room(const struct batch *b, size_t n, size_t log_bytes);

/* Append one reading (strings copied into the arena; peer borrowed). The
 * caller checked batch_room(). */
void batch_add(struct batch *b, const struct proto_reading *r, bool has_ts,
               int64_t ts_ns, int64_t recv_ns, const char *peer);

/* Record that who's acknowledgement may go to n_accepted lines and n_orig
 * more original-form replies once this batch commits. Returns true when a
 * new entry was made (the caller takes a reference on who then). */
bool batch_ack(struct batch *b, void *who, uint64_t n_accepted,
               uint32_t n_orig);

/* Space for log.txt text: returns a pointer to at least want free bytes,
 * or NULL when the log buffer is full; batch_log_commit() adds what was
 * written. */
char *batch_log_reserve(struct batch *b, size_t want);
void batch_log_commit(struct batch *b, size_t n);

#endif
