/*
 * writer: the storage thread (Redis bio). It owns the store and log.txt;
 * network threads hand it filled batches and get them back, committed,
 * through each batch's on_done callback. Group commit: every batch queued
 * when a commit starts goes into that one transaction.
 *
 * When a commit fails (disk full, database locked or unreachable) the
 * writer rolls back, logs, waits with backoff and retries the same batches;
 * they are not handed back meanwhile, so network threads run out of batches
 * and stop reading their sockets (backpressure), and nothing is
 * acknowledged that is not committed.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_WRITER_H
#define SN_WRITER_H

#include <stdbool.h>
#include <stdint.h>

#include "server/batch.h"
#include "server/logfile.h"
#include "server/store.h"

struct writer_conf {
    enum store_fsync fsync;
    int commit_interval_ms;  /* longest wait to gather a group (batch mode) */
    size_t batch_max;        /* commit at once when this many are queued */
    int64_t retention_ns;    /* 0: keep everything */
    int shutdown_timeout_ms; /* give up retrying this long after stop */
};

/* Commit histograms (for /metrics): counts per bucket, not cumulative;
 * bucket i holds values up to bounds[i], the last one the rest. */
#define WRITER_HIST_BUCKETS 12
extern const uint64_t writer_latency_bounds_ns[WRITER_HIST_BUCKETS - 1];
extern const uint64_t writer_size_bounds[WRITER_HIST_BUCKETS - 1];

struct writer_stats {
    uint64_t commits;
    uint64_t readings;
    uint64_t errors;
    uint64_t invalid;       /* readings the store refused one by one */
    uint64_t retention_deleted;
    uint64_t queued_batches;
    int64_t last_commit_ns; /* duration of the last commit */
    bool healthy;           /* the last commit attempt succeeded */
    uint64_t latency_hist[WRITER_HIST_BUCKETS]; /* commit duration */
    uint64_t latency_sum_ns;
    uint64_t size_hist[WRITER_HIST_BUCKETS];    /* readings per commit */
};

struct writer;

/* Takes ownership of st and lf (either may be NULL: no database, or no
 * log.txt). NULL + errno on failure. */
struct writer *writer_new(const struct writer_conf *conf, struct store *st,
                          struct logfile *lf);
int writer_start(struct writer *w);
/* Queue a filled batch (any thread). Its on_taken and on_done callbacks
 * run on the writer thread. */
void writer_submit(struct writer *w, struct batch *b);
/* Ask for log.txt to be reopened before the next write (SIGHUP). */
void writer_reopen_log(struct writer *w);
/* Commit everything queued, then stop the thread. Returns 0, or -EIO if
 * batches had to be given up after shutdown_timeout_ms of failures. */
int writer_stop(struct writer *w);
/* Frees the writer, its store and its log file. */
void writer_free(struct writer *w);
void writer_get_stats(struct writer *w, struct writer_stats *out);

#endif
