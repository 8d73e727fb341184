/*
 * pending: one sensor's readings that the server has not acknowledged yet,
 * in production order, with the bookkeeping that maps the server's replies
 * on the current connection back to readings.
 *
 * Queue layout, oldest first:
 *
 *     head                                                      tail
 *     | sent on this connection (line 1, 2, ...) | not sent yet |
 *       some sent slots may be refused tombstones
 *
 * - pending_push() appends a new reading (fails when max slots are used:
 *   the sensor then stops producing until acks free space).
 * - pending_send_next() hands out the oldest unsent reading and gives it
 *   the next line number of the connection (1-based).
 * - pending_err(k) marks line k refused ("ERR k reason"): it will never be
 *   accepted, so it is dropped.
 * - pending_ok(n) says n lines of this connection were accepted in all
 *   ("OK n", cumulative): accepted readings leave from the head.
 * - pending_rewind() ends the connection: every reading still queued
 *   becomes unsent again, to be resent in order on the next connection,
 *   and line numbers start again at 1.
 *
 * Invariants: readings leave only by pending_ok (accepted) or pending_err
 * (refused); the number of slots never exceeds max; memory grows with use
 * up to max and shrinks back when the queue empties.
 *
 * With a disk spool (spool.h) this queue is a window onto it: the client
 * appends each reading to the spool first and moves readings from the
 * spool into the queue while the queue has room (each entry carries its
 * spool seq); whatever leaves the head of the queue is settled in the
 * spool (pending_peek() tells how far). Without a spool the queue is all
 * there is.
 *
 * Not thread-safe: one sensor, one event loop.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_CLIENT_PENDING_H
#define SN_CLIENT_PENDING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Hard upper bound for --max-pending (slots per sensor). */
#define PENDING_MAX_LIMIT 10000000

/* One reading: all a sensor needs to put it on the wire again. */
struct pending_entry {
    int64_t ts_ns; /* wall-clock time of the reading, unique per sensor */
    double value;  /* 2 decimals */
    uint64_t seq;  /* its spool record, 0 without a spool */
};

struct pending;

/* A queue holding at most max (1..PENDING_MAX_LIMIT) readings. Returns NULL
 * with errno set (EINVAL, ENOMEM). */
struct pending *pending_new(size_t max);
/* Frees the queue and the readings in it; pending_destroy(NULL) is a no-op. */
void pending_destroy(struct pending *pq);

/* Append a copy of *e. Returns 0, -ENOBUFS when max slots are in use, or
 * -ENOMEM when growing failed (the queue is unchanged either way). */
int pending_push(struct pending *pq, const struct pending_entry *e);

/* Make sure the next pending_push() cannot fail with -ENOMEM. Returns 0,
 * -ENOBUFS when max slots are in use, or -ENOMEM. */
int pending_reserve(struct pending *pq);

/* The oldest reading still queued (never a refused one), or NULL when the
 * queue is empty. Borrowed until the next call on pq. */
const struct pending_entry *pending_peek(const struct pending *pq);

/*
 * Drop the unsent readings whose seq is <= seq, oldest first (they lost
 * their spool copy to the spool's full policy). Readings sent on this
 * connection stay: their replies will settle them. Returns how many went.
 */
size_t pending_drop_unsent(struct pending *pq, uint64_t seq);

/* Readings neither accepted nor refused yet. */
size_t pending_len(const struct pending *pq);
/* True when pending_push() would return -ENOBUFS. */
bool pending_full(const struct pending *pq);
/* Readings queued but not yet sent on this connection. */
size_t pending_unsent(const struct pending *pq);
/* Readings sent on this connection and still waiting for OK or ERR. */
size_t pending_inflight(const struct pending *pq);
/* Lines of this connection the server has acknowledged with "OK n". */
uint64_t pending_accepted(const struct pending *pq);

/*
 * The oldest unsent reading, now counted as sent on this connection as line
 * *line; *resend is true if it had already been sent on an earlier
 * connection. Returns NULL when every reading is sent. The pointer borrows
 * from the queue and is valid until the next call on pq.
 */
const struct pending_entry *pending_send_next(struct pending *pq,
                                              uint64_t *line, bool *resend);

/*
 * "OK n": n lines of this connection were accepted in all. Drops the
 * readings newly accepted and sets *n_acked to their number (0 for a stale
 * or repeated n). Returns 0, or -EPROTO (nothing changed) when n counts more
 * lines than were sent and not refused: the connection is out of step.
 */
int pending_ok(struct pending *pq, uint64_t n, size_t *n_acked);

/*
 * "ERR line reason": line of this connection was refused. Copies the
 * reading to *out (may be NULL) and drops it. Returns 0, -EALREADY if that
 * line was already refused, or -ENOENT if no line with that number waits
 * for a reply (never sent, or already accepted).
 */
int pending_err(struct pending *pq, uint64_t line, struct pending_entry *out);

/* The connection ended: everything queued is unsent again (order kept),
 * line numbers and the accepted count restart. */
void pending_rewind(struct pending *pq);

#endif
