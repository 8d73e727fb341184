/*
 * worker: one network thread (see worker.h): accepting, the batch cycle
 * with the writer, timers, and the orderly stop.
 *
 * Batch cycle: cur fills while the loop runs. At the end of an iteration
 * cur goes to the writer if none of this worker's batches is still waiting
 * in the writer's queue (so one group commit takes everything that arrived
 * while the previous one ran, instead of many small batches), or at once
 * when it is full. The writer's on_taken wakes the worker to submit the
 * next one; on_done hands the batch back through done (a mutex-protected
 * list) and the eventfd, and the worker sends the acknowledgements.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/worker_internal.h"
#include "util/clock.h"

#define ACCEPT_BUDGET 64
#define MAX_EVENTS 256
#define SERVER_FULL "ERR server full\n"
#define MQTT_BACKLOG 65535

static void
wake(struct worker *w)
{
    uint64_t one = 1;

    /* Can only fail if the counter would overflow: it is read on every
     * wakeup, so that cannot happen. */
    if (write(w->wake.fd, &one, sizeof(one)) < 0)
        return;
}

/* ---- batches ------------------------------------------------------------ */

static void
on_taken(struct batch *b, void *arg)
{
    struct worker *w = arg;

    (void)b;
    atomic_fetch_sub(&w->n_queued, 1);
    wake(w);
}

static void
on_done(struct batch *b, void *arg)
{
    struct worker *w = arg;

    pthread_mutex_lock(&w->done_mu);
    b->next = w->done;
    w->done = b;
    pthread_mutex_unlock(&w->done_mu);
    wake(w);
}

static void
submit_cur(struct worker *w)
{
    atomic_fetch_add(&w->n_queued, 1);
    writer_submit(w->sh->writer, w->cur);
    w->cur = w->pool[--w->n_pool];
}

bool
worker_batch_room(struct worker *w, size_t n, size_t log_bytes)
{
    size_t log_need = w->log_on ? log_bytes + LOG_EVENT_SLACK : 0;

    if (batch_room(w->cur, n, log_need))
        goto ok;
    if (w->n_pool == 0)
        return false;
    submit_cur(w);
ok:
    if (w->cur->first_ns == 0)
        w->cur->first_ns = clock_mono_ns();
    return true;
}

/* Acknowledge what a committed batch holds and recycle it. */
static void
batch_returned(struct worker *w, struct batch *b)
{
    size_t i;

    for (i = 0; i < b->n_acks; i++) {
        struct conn *c = b->acks[i].who;

        if (!b->failed)
            conn_ack(c, b->acks[i].n_accepted, b->acks[i].n_orig);
        conn_unref(c);
    }
    batch_reset(b);
    w->pool[w->n_pool++] = b;
}

static void
unthrottle(struct worker *w)
{
    while (!list_empty(&w->throttled) && w->n_pool > 0) {
        struct conn *c = list_entry(w->throttled.next, struct conn,
                                    l_throttle);

        list_del(&c->l_throttle);
        if (!conn_resume(c))
            break; /* throttled again: it went back on the list */
    }
}

static void
on_wake(struct loop_io *io, uint32_t events)
{
    struct worker *w = io->arg;
    struct batch *list, *next;
    uint64_t v;

    (void)events;
    if (read(w->wake.fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        log_error("worker %d: eventfd read: %s", w->id, strerror(errno));
    pthread_mutex_lock(&w->done_mu);
    list = w->done;
    w->done = NULL;
    pthread_mutex_unlock(&w->done_mu);
    w->now_ms = clock_mono_ms();
    for (; list != NULL; list = next) {
        next = list->next;
        batch_returned(w, list);
    }
    unthrottle(w);
    conn_mqtt_evicted(w);
}

/* ---- log.txt events ----------------------------------------------------- */

void
worker_log(struct worker *w, const char *fmt, ...)
{
    char *dst;
    size_t room = 512, n;
    va_list ap;
    int r;

    if (!w->log_on)
        return;
    dst = batch_log_reserve(w->cur, room);
    if (dst == NULL) {
        atomic_fetch_add_explicit(&w->stats.log_lines_dropped, 1,
                                  memory_order_relaxed);
        return;
    }
    if (w->cur->first_ns == 0)
        w->cur->first_ns = clock_mono_ns();
    memcpy(dst, logfile_stamp(&w->stamp, clock_real_ns()),
           LOGFILE_STAMP_LEN);
    va_start(ap, fmt);
    r = vsnprintf(dst + LOGFILE_STAMP_LEN, room - LOGFILE_STAMP_LEN - 1, fmt,
                  ap);
    va_end(ap);
    n = LOGFILE_STAMP_LEN + (r < 0 ? 0 : (size_t)r);
    if (n > room - 2)
        n = room - 2;
    dst[n++] = '\n';
    batch_log_commit(w->cur, n);
}

void
worker_conn_closed(struct worker *w, struct conn *c)
{
    atomic_fetch_sub(&w->sh->n_conns, 1);
    w->n_conns--;
    worker_log(w, "Conexão encerrada com %s", c->peer_log);
}

/* ---- accepting ---------------------------------------------------------- */

static void
refuse_full(struct worker *w, int fd)
{
    uint64_t suppressed;

    /* Best effort on a fresh socket: its send buffer is empty. */
    (void)send(fd, SERVER_FULL, sizeof(SERVER_FULL) - 1,
               MSG_NOSIGNAL | MSG_DONTWAIT);
    close(fd);
    atomic_fetch_add_explicit(&w->stats.conns_refused, 1,
                              memory_order_relaxed);
    if (log_ratelimit(&w->full_rl, w->now_ms, 10000, &suppressed))
        log_warn("connection refused: --max-connections %llu reached "
                 "(%llu more refused since the last message)",
                 (unsigned long long)w->conf->max_conns,
                 (unsigned long long)suppressed);
}

static void
on_accept(struct loop_io *io, uint32_t events)
{
    struct worker *w = io->arg;
    struct conn *c;
    uint64_t now_open;
    int i, fd;

    (void)events;
    for (i = 0; i < ACCEPT_BUDGET; i++) {
        fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN)
                log_warn("accept: %s", strerror(errno));
            /* EMFILE and friends: level-triggered, so we come back next
             * iteration once something was closed. */
            return;
        }
        if (atomic_load(&w->sh->n_conns) >= w->conf->max_conns) {
            refuse_full(w, fd);
            continue;
        }
        c = conn_new(w, fd);
        if (c == NULL) {
            close(fd);
            log_warn("accept: out of memory");
            return;
        }
        net_tune_conn(fd);
        if (loop_add(w->loop, &c->io, fd, EPOLLIN, conn_on_io, c) < 0) {
            log_warn("epoll: %s", strerror(errno));
            close(fd);
            conn_free(c);
            continue;
        }
        list_add_tail(&w->conns, &c->l_all);
        list_add_tail(&w->idle, &c->l_idle);
        if (c->tls != NULL) /* HANDSHAKE first (worker_internal.h) */
            list_add_tail(&w->handshaking, &c->l_hs);
        if (io == w->mqtt_listener && conn_mqtt_start(c) < 0)
            conn_close_later(c, "out of memory");
        w->n_conns++;
        now_open = atomic_fetch_add(&w->sh->n_conns, 1) + 1;
        atomic_fetch_add_explicit(&w->stats.conns_total, 1,
                                  memory_order_relaxed);
        worker_log(w, "Nova conexão de %s", c->peer_log);
        worker_log(w, "Conexões ativas: %llu", (unsigned long long)now_open);
    }
}

/* ---- timers, flushing, stopping ----------------------------------------- */

static int64_t
min_deadline(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* --max-connection-age: w->conns is in accept order, so only its head,
 * up to the connections younger than the earliest possible limit (90 % of
 * the age), is looked at. A connection past its limit drains: what it sent
 * is acknowledged, then it is closed and its client reconnects. */
static int64_t
age_check(struct worker *w)
{
    int64_t min_age = w->conf->max_conn_age_ms -
                      w->conf->max_conn_age_ms / 10;
    int64_t next = w->now_ms + 1000;
    struct list *it;

    for (it = w->conns.next; it != &w->conns; it = it->next) {
        struct conn *c = list_entry(it, struct conn, l_all);

        if (c->accepted_ms + min_age > w->now_ms) {
            next = min_deadline(next, c->accepted_ms + min_age);
            break;
        }
        if (c->flags & (CONN_F_DRAINING | CONN_F_CLOSING | CONN_F_CLOSED))
            continue;
        if (c->accepted_ms + c->age_limit_ms <= w->now_ms)
            conn_drain(c);
        else
            next = min_deadline(next, c->accepted_ms + c->age_limit_ms);
    }
    return next;
}

/* TLS handshakes still under way CONN_TLS_HANDSHAKE_MS after accept (or
 * --idle-timeout, if shorter) are closed; w->handshaking is in accept
 * order, so only its head is looked at. Returns the next deadline. */
static int64_t
handshake_timers(struct worker *w)
{
    int64_t limit = CONN_TLS_HANDSHAKE_MS;
    struct conn *c;

    if (w->conf->idle_timeout_ms < limit)
        limit = w->conf->idle_timeout_ms;
    while (!list_empty(&w->handshaking)) {
        c = list_entry(w->handshaking.next, struct conn, l_hs);
        if (c->accepted_ms + limit > w->now_ms)
            return c->accepted_ms + limit;
        list_del(&c->l_hs);
        log_debug("%s: TLS handshake not done within %lld ms", c->peer,
                  (long long)limit);
        conn_close_later(c, "TLS handshake timeout");
    }
    return w->now_ms + 1000;
}

static int64_t
run_timers(struct worker *w)
{
    const struct server_conf *cf = w->conf;
    int64_t next = w->now_ms + 1000;
    struct conn *c;

    while (!list_empty(&w->idle)) {
        c = list_entry(w->idle.next, struct conn, l_idle);
        if (c->active_ms + cf->idle_timeout_ms > w->now_ms) {
            next = min_deadline(next, c->active_ms + cf->idle_timeout_ms);
            break;
        }
        if (c->flags & CONN_F_THROTTLED) {
            /* Not idle: it holds data the server does not read while
             * storage is behind. */
            c->active_ms = w->now_ms;
            list_move_tail(&w->idle, &c->l_idle);
            continue;
        }
        list_del(&c->l_idle);
        atomic_fetch_add_explicit(&w->stats.idle_closed, 1,
                                  memory_order_relaxed);
        conn_close_later(c, "idle timeout");
    }
    while (!list_empty(&w->silence)) {
        c = list_entry(w->silence.next, struct conn, l_silence);
        if (c->silence_ms + cf->silence_ms > w->now_ms) {
            next = min_deadline(next, c->silence_ms + cf->silence_ms);
            break;
        }
        conn_silence_expired(c);
    }
    next = min_deadline(next, conn_mqtt_timers(w));
    next = min_deadline(next, handshake_timers(w));
    if (cf->max_conn_age_ms > 0)
        next = min_deadline(next, age_check(w));
    while (!list_empty(&w->draining_list)) {
        c = list_entry(w->draining_list.next, struct conn, l_idle);
        if (c->drain_ms + CONN_LINGER_MS > w->now_ms) {
            next = min_deadline(next, c->drain_ms + CONN_LINGER_MS);
            break;
        }
        list_del(&c->l_idle);
        conn_close_later(c, "replies not read in time");
    }
    return next;
}

static void
flush_all(struct worker *w)
{
    while (!list_empty(&w->flush))
        conn_flush(list_entry(w->flush.next, struct conn, l_flush));
}

static void
close_pending(struct worker *w)
{
    while (!list_empty(&w->closing))
        conn_close_now(list_entry(w->closing.next, struct conn, l_close));
}

static void
begin_drain(struct worker *w)
{
    struct list *it, *nx;
    size_t i;

    w->draining = true;
    w->drain_deadline_ms = w->now_ms + w->conf->shutdown_timeout_ms +
                           CONN_LINGER_MS;
    for (i = 0; i < w->n_listeners; i++) {
        loop_del(w->loop, &w->listeners[i]);
        close(w->listeners[i].fd);
        w->listeners[i].fd = -1;
    }
    w->n_listeners = 0;
    /* What has arrived is what the kernel holds now: read it, then stop. */
    for (it = w->conns.next; it != &w->conns; it = nx) {
        struct conn *c = list_entry(it, struct conn, l_all);

        nx = it->next;
        if (c->flags & (CONN_F_CLOSING | CONN_F_CLOSED | CONN_F_DRAINING))
            continue;
        if (!(c->flags & CONN_F_THROTTLED))
            conn_on_io(&c->io, EPOLLIN);
        conn_drain(c);
    }
}

/* During a drain: close the connections with nothing left to wait for;
 * true when the worker may exit. */
static bool
drain_progress(struct worker *w)
{
    struct list *it, *nx;
    bool force = w->now_ms >= w->drain_deadline_ms;

    for (it = w->conns.next; it != &w->conns; it = nx) {
        struct conn *c = list_entry(it, struct conn, l_all);

        nx = it->next;
        if (c->flags & (CONN_F_CLOSING | CONN_F_CLOSED))
            continue;
        if (force || conn_drained(c))
            conn_close_later(c, "server stopping");
    }
    close_pending(w);
    if (w->n_conns > 0)
        return false;
    /* Past the deadline the writer may still hold batches (storage down):
     * they come back to the done list, which worker_free() frees. */
    return force || (batch_empty(w->cur) && w->n_pool == WORKER_BATCHES - 1);
}

static int
worker_tick(void *arg)
{
    struct worker *w = arg;
    int64_t next;

    w->now_ms = clock_mono_ms();
    if (atomic_load(&w->stop_requested) && !w->draining)
        begin_drain(w);
    next = run_timers(w);
    flush_all(w);
    close_pending(w);
    if (w->draining && drain_progress(w)) {
        loop_stop(w->loop);
        return 0;
    }
    if (!batch_empty(w->cur) && w->n_pool > 0 &&
        atomic_load(&w->n_queued) == 0)
        submit_cur(w);
    if (w->draining)
        next = min_deadline(next, w->now_ms + 50);
    return (int)(next > w->now_ms ? next - w->now_ms : 0);
}

/* ---- life cycle --------------------------------------------------------- */

static void
wake_cb(void *arg)
{
    wake(arg);
}

/* The --mqtt-listen listener: SO_REUSEPORT, one per worker like the
 * sensor port's, bound here because it is an MQTT-only port that main
 * knows nothing about. 0, or -1 with err set. */
static int
mqtt_listen(struct worker *w, char *err, size_t err_len)
{
    struct loop_io *io = &w->listeners[w->n_listeners];
    struct net_addr addr;
    char why[CONFIG_ERR_LEN];
    int fd;

    if (net_parse_hostport(w->conf->mqtt_listen, false, &addr, why,
                           sizeof(why)) < 0) {
        snprintf(err, err_len, "--mqtt-listen %s", why);
        return -1;
    }
    fd = net_listen(&addr, true, MQTT_BACKLOG, why, sizeof(why));
    if (fd < 0) {
        snprintf(err, err_len, "--mqtt-listen: %s", why);
        return -1;
    }
    io->fd = fd;
    w->n_listeners++;
    if (loop_add(w->loop, io, fd, EPOLLIN, on_accept, w) < 0) {
        snprintf(err, err_len, "epoll: %s", strerror(errno));
        return -1;
    }
    w->mqtt_listener = io;
    return 0;
}

struct worker *
worker_new(struct worker_shared *sh, int id, const int *fds, size_t n,
           char *err, size_t err_len)
{
    struct worker *w = calloc(1, sizeof(*w));
    size_t i, cap = sh->conf->batch_max, log_cap = 0;
    int efd = -1;

    if (w == NULL)
        goto nomem;
    w->sh = sh;
    w->conf = sh->conf;
    w->id = id;
    w->log_on = sh->conf->log_path != NULL;
    pthread_mutex_init(&w->done_mu, NULL);
    list_init(&w->conns);
    list_init(&w->idle);
    list_init(&w->draining_list);
    list_init(&w->silence);
    list_init(&w->flush);
    list_init(&w->throttled);
    list_init(&w->closing);
    list_init(&w->handshaking);
    logfile_stamp_init(&w->stamp, sh->conf->log_utc);
    w->gmap.prefix = sh->conf->graphite_prefix;
    w->gmap.sensor_parts = (unsigned)sh->conf->graphite_sensor_parts;
    w->popts.graphite = &w->gmap;
    w->wake.fd = -1;
    for (i = 0; i < n; i++)
        w->listeners[i].fd = fds[i];
    w->n_listeners = n;
    list_init(&w->mqtt_ka);
    w->mbox.wake = wake_cb;
    w->mbox.wake_arg = w;
    if (sh->mqtt_sessions == NULL)
        sh->mqtt_sessions = mqtt_sessions_new();
    else
        mqtt_sessions_ref(sh->mqtt_sessions);
    w->sessions = sh->mqtt_sessions;
    w->pl = malloc(sizeof(*w->pl));
    w->rbuf = malloc(WORKER_RBUF);
    w->loop = loop_new(MAX_EVENTS, worker_tick, w);
    if (w->pl == NULL || w->rbuf == NULL || w->loop == NULL ||
        w->sessions == NULL)
        goto nomem;
    /* Per reading about 100 bytes of log.txt on average, budgeted 160;
     * plus room for one worst-case line and the connection events. */
    if (w->log_on)
        log_cap = cap * 160 + (size_t)PROTO_MAX_FIELDS * LOG_PER_READING +
                  4 * (size_t)PROTO_MAX_LINE_LIMIT + 2 * LOG_EVENT_SLACK;
    for (i = 0; i < WORKER_BATCHES; i++) {
        struct batch *b = batch_new(cap, log_cap);

        if (b == NULL)
            goto nomem;
        b->owner = w;
        b->on_taken = on_taken;
        b->on_done = on_done;
        w->all_batches[i] = b;
        w->pool[w->n_pool++] = b;
    }
    w->cur = w->pool[--w->n_pool];
    efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0 || loop_add(w->loop, &w->wake, efd, EPOLLIN, on_wake, w) < 0) {
        snprintf(err, err_len, "eventfd: %s", strerror(errno));
        if (efd >= 0)
            close(efd);
        goto fail;
    }
    for (i = 0; i < n; i++) {
        if (loop_add(w->loop, &w->listeners[i], fds[i], EPOLLIN, on_accept,
                     w) < 0) {
            snprintf(err, err_len, "epoll: %s", strerror(errno));
            goto fail;
        }
    }
    if (sh->conf->mqtt_listen != NULL && mqtt_listen(w, err, err_len) < 0)
        goto fail;
    return w;
nomem:
    snprintf(err, err_len, "out of memory");
fail:
    if (w != NULL)
        worker_free(w);
    else
        for (i = 0; i < n; i++)
            close(fds[i]);
    return NULL;
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    char name[16];
    int rc;

    /* top, perf and the bench tell the threads apart by these names. */
    snprintf(name, sizeof(name), "sn-worker-%d", w->id);
    (void)pthread_setname_np(pthread_self(), name);
    rc = loop_run(w->loop);

    if (rc < 0)
        log_error("worker %d: event loop failed: %s", w->id, strerror(-rc));
    return NULL;
}

int
worker_start(struct worker *w)
{
    int rc = pthread_create(&w->thread, NULL, worker_main, w);

    if (rc != 0)
        return -rc;
    w->started = true;
    return 0;
}

void
worker_stop(struct worker *w)
{
    atomic_store(&w->stop_requested, true);
    wake(w);
}

void
worker_join(struct worker *w)
{
    if (w->started)
        pthread_join(w->thread, NULL);
    w->started = false;
}

void
worker_free(struct worker *w)
{
    struct list *it, *nx;
    size_t i;

    if (w == NULL)
        return;
    for (it = w->conns.next; it != &w->conns; it = nx) {
        struct conn *c = list_entry(it, struct conn, l_all);

        nx = it->next;
        if (c->fd >= 0)
            close(c->fd);
        conn_free(c);
    }
    for (i = 0; i < w->n_listeners; i++)
        if (w->listeners[i].fd >= 0)
            close(w->listeners[i].fd);
    if (w->wake.fd >= 0)
        close(w->wake.fd);
    for (i = 0; i < WORKER_BATCHES; i++)
        batch_free(w->all_batches[i]);
    if (w->sessions != NULL && mqtt_sessions_unref(w->sessions))
        w->sh->mqtt_sessions = NULL;
    loop_free(w->loop);
    free(w->pl);
    free(w->rbuf);
    pthread_mutex_destroy(&w->done_mu);
    free(w);
}

const struct worker_stats *
worker_stats(const struct worker *w)
{
    return &w->stats;
}
