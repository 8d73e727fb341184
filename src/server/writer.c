/*
 * writer: see writer.h.
 *
 * One commit: make arrival timestamps unique (text-form readings have no
 * timestamp of their own and are keyed by arrival time); then, at the same
 * time, store begin/append/commit on this thread and, on a helper thread
 * (the log thread, when there are both a store and log.txt), append the
 * batches' log.txt lines and sync log.txt unless fsync is off; hand the
 * batches back once both have succeeded (group commit, then ack). A failed
 * half is retried alone: re-appending to the store is harmless because
 * appends are idempotent, and log.txt resumes at the byte where it stopped.
 *
 * The log thread only ever touches log.txt and the batches' log fields
 * (log, log_len, log_written), and only between log_start() and
 * log_wait(), while this thread only reads the readings.
 * SPDX-License-Identifier: MIT
 */
#include "server/writer.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/clock.h"
#include "util/log.h"

#define RETRY_MIN_MS 50
#define RETRY_MAX_MS 2000
#define RETENTION_EVERY_MS 1000
#define RETENTION_STEP_ROWS 2000
/* Most readings in one transaction. */
#define GROUP_MAX 262144

const uint64_t writer_latency_bounds_ns[WRITER_HIST_BUCKETS - 1] = {
    1000000,   2500000,   5000000,   10000000,   25000000,   50000000,
    100000000, 250000000, 500000000, 1000000000, 2500000000,
};
const uint64_t writer_size_bounds[WRITER_HIST_BUCKETS - 1] = {
    1, 10, 50, 100, 500, 1000, 5000, 10000, 50000, 100000, 262144,
};

/* The bucket of v among bounds (WRITER_HIST_BUCKETS - 1 of them). */
static size_t
hist_bucket(uint64_t v, const uint64_t *bounds)
{
    size_t i;

    for (i = 0; i < WRITER_HIST_BUCKETS - 1; i++)
        if (v <= bounds[i])
            break;
    return i;
}

/*
 * The log thread's one job slot:
 *
 *     IDLE --log_start--> PENDING --log thread: write, sync--> DONE
 *     DONE --log_wait (returns rc)--> IDLE        stop: IDLE -> exit
 */
enum log_job { LOG_IDLE = 0, LOG_PENDING, LOG_DONE };

struct log_thread {
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Protected by mu. */
    enum log_job job;
    struct batch *list;
    int rc;
    bool stop;
};

struct writer {
    pthread_t thread;
    bool started;
    struct log_thread lt;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Protected by mu. */
    struct batch *q_head, *q_tail;
    size_t q_readings;
    size_t q_batches;
    bool stopping;
    bool reopen;
    struct writer_stats stats;
    /* Writer thread only. */
    struct writer_conf conf;
    struct store *st;
    struct logfile *lf;
    int64_t last_arrival_ns;
    uint64_t n_invalid;
    int64_t stop_ms;
    int64_t next_retention_ms;
    struct log_ratelimit err_rl;
};

struct writer *
writer_new(const struct writer_conf *conf, struct store *st,
           struct logfile *lf)
{
    struct writer *w = calloc(1, sizeof(*w));
    pthread_condattr_t ca;

    if (w == NULL)
        return NULL;
    w->conf = *conf;
    w->st = st;
    w->lf = lf;
    w->stats.healthy = true;
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&w->lt.mu, NULL);
    pthread_cond_init(&w->lt.cv, NULL);
    return w;
}

static void
abs_deadline(struct timespec *ts, int64_t mono_ns)
{
    ts->tv_sec = mono_ns / 1000000000;
    ts->tv_nsec = mono_ns % 1000000000;
}

/* Wait on the condition variable until mono_ns (monotonic) at the latest;
 * call with mu held. */
static void
wait_until_ns(struct writer *w, int64_t mono_ns)
{
    struct timespec ts;

    abs_deadline(&ts, mono_ns);
    pthread_cond_timedwait(&w->cv, &w->mu, &ts);
}

/* Text-form readings are keyed by arrival time: make those times strictly
 * increasing on this collector so that two readings of one sensor that
 * arrive in the same nanosecond (one read, several lines) both stay. */
static void
assign_arrival_ts(struct writer *w, struct batch *b)
{
    size_t i;

    if (b->ts_assigned)
        return;
    for (i = 0; i < b->n_readings; i++) {
        struct store_reading *r = &b->readings[i];

        if (r->has_ts)
            continue;
        if (r->ts_ns <= w->last_arrival_ns)
            r->ts_ns = w->last_arrival_ns + 1;
        w->last_arrival_ns = r->ts_ns;
    }
    b->ts_assigned = true;
}

static int
store_group(struct writer *w, struct batch *list)
{
    struct batch *b;
    size_t i;
    int rc;

    rc = store_begin(w->st);
    if (rc < 0)
        goto fail;
    for (b = list; b != NULL; b = b->next) {
        for (i = 0; i < b->n_readings; i++) {
            rc = store_append(w->st, &b->readings[i]);
            if (rc == STORE_E_INVAL) {
                /* This one reading is refused, the transaction goes on:
                 * retrying it would fail forever. The parser never lets
                 * such a reading through; count it if one ever comes. */
                w->n_invalid++;
                continue;
            }
            if (rc < 0)
                goto fail;
        }
    }
    rc = store_commit(w->st);
    if (rc < 0)
        goto fail;
    return 0;
fail:
    store_rollback(w->st);
    return rc;
}

static int
log_group(struct writer *w, struct batch *list)
{
    struct batch *b;
    int rc;

    for (b = list; b != NULL; b = b->next) {
        rc = logfile_write(w->lf, b->log, b->log_len, &b->log_written);
        if (rc < 0)
            return rc;
    }
    if (w->conf.fsync != STORE_FSYNC_OFF)
        return logfile_sync(w->lf);
    return 0;
}

static void *
log_main(void *arg)
{
    struct writer *w = arg;
    struct log_thread *lt = &w->lt;

    /* Names for top, perf and the bench (15 bytes at most). */
    (void)pthread_setname_np(pthread_self(), "sn-log");
    pthread_mutex_lock(&lt->mu);
    for (;;) {
        while (lt->job != LOG_PENDING && !lt->stop)
            pthread_cond_wait(&lt->cv, &lt->mu);
        if (lt->job != LOG_PENDING)
            break;
        pthread_mutex_unlock(&lt->mu);
        lt->rc = log_group(w, lt->list);
        pthread_mutex_lock(&lt->mu);
        lt->job = LOG_DONE;
        pthread_cond_broadcast(&lt->cv);
    }
    pthread_mutex_unlock(&lt->mu);
    return NULL;
}

/* Write and sync the group's log.txt lines: on the log thread if there is
 * one, so that it overlaps the store's transaction, else here. */
static void
log_start(struct writer *w, struct batch *list)
{
    struct log_thread *lt = &w->lt;

    if (!lt->started) {
        lt->list = list;
        return;
    }
    pthread_mutex_lock(&lt->mu);
    lt->list = list;
    lt->job = LOG_PENDING;
    pthread_cond_broadcast(&lt->cv);
    pthread_mutex_unlock(&lt->mu);
}

/* The outcome of log_start(): 0 once the lines are written (and synced). */
static int
log_wait(struct writer *w)
{
    struct log_thread *lt = &w->lt;
    int rc;

    if (!lt->started)
        return log_group(w, lt->list);
    pthread_mutex_lock(&lt->mu);
    while (lt->job != LOG_DONE)
        pthread_cond_wait(&lt->cv, &lt->mu);
    lt->job = LOG_IDLE;
    rc = lt->rc;
    pthread_mutex_unlock(&lt->mu);
    return rc;
}

static void
complain(struct writer *w, const char *what, const char *msg)
{
    uint64_t suppressed;

    if (log_ratelimit(&w->err_rl, clock_mono_ms(), 5000, &suppressed))
        log_error("%s failed: %s; holding acknowledgements and retrying"
                  " (%llu similar messages suppressed)",
                  what, msg, (unsigned long long)suppressed);
}

/* Commit one group, retrying until it succeeds or, once stopping, until
 * shutdown_timeout_ms passes. Returns 0 or -EIO when given up. */
static int
commit_group(struct writer *w, struct batch *list, size_t n_readings)
{
    int64_t t0 = clock_mono_ns();
    int delay = RETRY_MIN_MS, rc;
    bool stored = (w->st == NULL);
    bool logged = (w->lf == NULL);
    struct batch *b;

    for (b = list; b != NULL; b = b->next)
        assign_arrival_ts(w, b);
    for (;;) {
        if (!logged)
            log_start(w, list);
        if (!stored) {
            rc = store_group(w, list);
            if (rc == 0)
                stored = true;
            else
                complain(w, store_name(w->st), store_errmsg(w->st));
        }
        if (!logged) {
            rc = log_wait(w);
            if (rc == 0)
                logged = true;
            else
                complain(w, "writing log.txt", strerror(-rc));
        }
        if (stored && logged)
            break;
        pthread_mutex_lock(&w->mu);
        w->stats.errors++;
        w->stats.healthy = false;
        if (w->stopping && clock_mono_ms() - w->stop_ms >
                               w->conf.shutdown_timeout_ms) {
            pthread_mutex_unlock(&w->mu);
            log_error("giving up on %zu readings after %d ms of failures at"
                      " shutdown: they were never acknowledged",
                      n_readings, w->conf.shutdown_timeout_ms);
            return -EIO;
        }
        wait_until_ns(w, clock_mono_ns() + (int64_t)delay * 1000000);
        pthread_mutex_unlock(&w->mu);
        delay = delay * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : delay * 2;
    }
    pthread_mutex_lock(&w->mu);
    if (!w->stats.healthy)
        log_info("storage recovered; committing again");
    w->stats.healthy = true;
    w->stats.commits++;
    w->stats.readings += n_readings;
    w->stats.invalid = w->n_invalid;
    w->stats.last_commit_ns = clock_mono_ns() - t0;
    /* /metrics histograms */
    w->stats.latency_hist[hist_bucket((uint64_t)w->stats.last_commit_ns,
                                      writer_latency_bounds_ns)]++;
    w->stats.latency_sum_ns += (uint64_t)w->stats.last_commit_ns;
    w->stats.size_hist[hist_bucket(n_readings, writer_size_bounds)]++;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

static void
retention(struct writer *w)
{
    int64_t cutoff;
    int n;

    if (w->st == NULL || w->conf.retention_ns <= 0 ||
        clock_mono_ms() < w->next_retention_ms)
        return;
    w->next_retention_ms = clock_mono_ms() + RETENTION_EVERY_MS;
    cutoff = clock_real_ns() - w->conf.retention_ns;
    /* One small step per idle moment: ingest never waits behind it for
     * longer than one short transaction. */
    n = store_retention_step(w->st, cutoff, RETENTION_STEP_ROWS);
    if (n < 0) {
        complain(w, "retention", store_errmsg(w->st));
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->stats.retention_deleted += (uint64_t)n;
    pthread_mutex_unlock(&w->mu);
    if (n == RETENTION_STEP_ROWS)
        w->next_retention_ms = 0; /* more to do: next idle moment */
}

static void
log_thread_stop(struct writer *w)
{
    if (!w->lt.started)
        return;
    pthread_mutex_lock(&w->lt.mu);
    w->lt.stop = true;
    pthread_cond_broadcast(&w->lt.cv);
    pthread_mutex_unlock(&w->lt.mu);
    pthread_join(w->lt.thread, NULL);
    w->lt.started = false;
}

static void *
writer_main(void *arg)
{
    struct writer *w = arg;
    struct batch *list, *b, *next, *last;
    size_t n;
    bool reopen, failed;

    (void)pthread_setname_np(pthread_self(), "sn-writer");
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (w->q_head == NULL && !w->stopping) {
            if (w->conf.retention_ns > 0) {
                pthread_mutex_unlock(&w->mu);
                retention(w);
                pthread_mutex_lock(&w->mu);
                if (w->q_head != NULL || w->stopping)
                    break;
                wait_until_ns(w, clock_mono_ns() +
                                     (int64_t)RETENTION_EVERY_MS * 1000000);
            } else {
                pthread_cond_wait(&w->cv, &w->mu);
            }
        }
        if (w->q_head == NULL) {
            pthread_mutex_unlock(&w->mu);
            break;
        }
        /* Gather a group: wait until the oldest queued batch is
         * commit_interval old or enough readings are queued. */
        if (w->conf.fsync == STORE_FSYNC_BATCH ||
            w->conf.fsync == STORE_FSYNC_OFF) {
            int64_t deadline = w->q_head->first_ns +
                               (int64_t)w->conf.commit_interval_ms * 1000000;

            while (!w->stopping && w->q_readings < w->conf.batch_max &&
                   clock_mono_ns() < deadline)
                wait_until_ns(w, deadline);
        }
        /* Take whole batches, at most GROUP_MAX readings (at least one
         * batch): a bounded transaction, and a bounded COPY buffer for
         * PostgreSQL. */
        list = w->q_head;
        n = 0;
        for (b = list, last = NULL; b != NULL; last = b, b = b->next) {
            if (last != NULL && n + b->n_readings > GROUP_MAX)
                break;
            n += b->n_readings;
            w->q_batches--;
        }
        last->next = NULL;
        w->q_head = b;
        if (b == NULL)
            w->q_tail = NULL;
        w->q_readings -= n;
        reopen = w->reopen;
        w->reopen = false;
        pthread_mutex_unlock(&w->mu);

        if (reopen && w->lf != NULL && logfile_reopen(w->lf) < 0)
            log_error("reopening log.txt failed: %s", strerror(errno));
        for (b = list; b != NULL; b = b->next)
            if (b->on_taken != NULL)
                b->on_taken(b, b->owner);
        failed = commit_group(w, list, n) < 0;
        for (b = list; b != NULL; b = next) {
            next = b->next;
            b->next = NULL;
            b->failed = failed;
            b->on_done(b, b->owner);
        }
        retention(w);
    }
    return NULL;
}

int
writer_start(struct writer *w)
{
    int rc;

    /* A log thread only pays when there is a store to overlap with
     * (--db off opens the "none" store, which does nothing). */
    if (w->st != NULL && w->lf != NULL &&
        strcmp(store_name(w->st), "none") != 0) {
        rc = pthread_create(&w->lt.thread, NULL, log_main, w);
        if (rc != 0)
            return -rc;
        w->lt.started = true;
    }
    rc = pthread_create(&w->thread, NULL, writer_main, w);
    if (rc != 0) {
        log_thread_stop(w);
        return -rc;
    }
    w->started = true;
    return 0;
}

void
writer_submit(struct writer *w, struct batch *b)
{
    b->next = NULL;
    pthread_mutex_lock(&w->mu);
    if (w->q_tail != NULL)
        w->q_tail->next = b;
    else
        w->q_head = b;
    w->q_tail = b;
    w->q_readings += b->n_readings;
    w->q_batches++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void
writer_reopen_log(struct writer *w)
{
    pthread_mutex_lock(&w->mu);
    w->reopen = true;
    pthread_mutex_unlock(&w->mu);
}

int
writer_stop(struct writer *w)
{
    bool healthy;

    if (!w->started)
        return 0;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    w->stop_ms = clock_mono_ms();
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    w->started = false;
    log_thread_stop(w);
    healthy = w->stats.healthy;
    return healthy ? 0 : -EIO;
}

void
writer_free(struct writer *w)
{
    if (w == NULL)
        return;
    store_close(w->st);
    logfile_close(w->lf);
    log_thread_stop(w);
    pthread_cond_destroy(&w->lt.cv);
    pthread_mutex_destroy(&w->lt.mu);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

void
writer_get_stats(struct writer *w, struct writer_stats *out)
{
    pthread_mutex_lock(&w->mu);
    *out = w->stats;
    out->queued_batches = w->q_batches;
    pthread_mutex_unlock(&w->mu);
}
