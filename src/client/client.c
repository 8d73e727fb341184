/*
 * client: see client.h. One sensor's connection state machine:
 *
 *                    client_start()
 *                          |
 *                          v
 *      +------------> DISCONNECTED ----- no address, socket() failed ----+
 *      |                   |                                             |
 *      |                   | connect_start(): non-blocking connect()     |
 *      |                   v                                             |
 *      |              CONNECTING ------- refused, unreachable, --------->|
 *      |                   |             CLIENT_CONNECT_TIMEOUT_MS       |
 *      |                   | writable, SO_ERROR 0: on_tcp_connected()    |
 *      |                   v                                             |
 *      |              HANDSHAKE -------- --tls only: certificate or ---->|
 *      |                   |             name refused, reset, timeout    |
 *      |                   | tls_handshake() done: after_transport()     |
 *      |                   v                                             |
 *      |                 AUTH ---------- --token only: reset, timeout -->|
 *      |                   |             ("AUTH ERR": exit status 1)     |
 *      |                   | "AUTH OK": on_connected()                   |
 *      |                   v                                             v
 *      |               SENDING --------- EOF, reset, write error, ---> BACKOFF
 *      |                   |             bad reply, --ack-timeout,       |
 *      |                   |             "ERR server full" then EOF      |
 *      +---- on_timer(): backoff delay over -----------------------------+
 *                          |
 *                          | nothing pending, and --count reached or
 *                          v draining (check_done(), from any state)
 *                        DONE
 *
 * Transitions and the function that performs each:
 *   DISCONNECTED -> CONNECTING   connect_start()
 *   DISCONNECTED -> BACKOFF      connect_start() -> go_backoff()
 *   CONNECTING   -> HANDSHAKE    on_tcp_connected() (--tls)
 *   CONNECTING   -> AUTH         on_tcp_connected() -> after_transport()
 *   CONNECTING   -> SENDING      on_tcp_connected() -> on_connected()
 *   HANDSHAKE    -> AUTH/SENDING step_handshake() -> after_transport()
 *   AUTH         -> SENDING      on_reply() "AUTH OK" -> on_connected()
 *   CONNECTING, HANDSHAKE, AUTH -> BACKOFF  on_io()/on_timer() ->
 *                                go_backoff(); the connect deadline
 *                                (CLIENT_CONNECT_TIMEOUT_MS) covers all
 *                                three
 *   SENDING      -> BACKOFF      lost() -> go_backoff() (also: no byte
 *                                within two --keepalive periods)
 *   BACKOFF      -> DISCONNECTED client_on_timer() (then connect_start())
 *   any          -> DONE         check_done()
 *
 * Readings are produced on schedule in every state. With a spool each one
 * is appended to it first (durable before it is sent: pump() syncs between
 * formatting and writing, and every entry point syncs before returning),
 * and moved into the pending queue while that has room (refill()); the
 * queue's head tells the spool how far everything is settled (settle()).
 * Without a spool they wait in the pending queue, up to --max-pending.
 * Every reading is resent after a reconnect until an OK or ERR settles it.
 * Backoff starts over once a connection acknowledged something or stayed
 * up CLIENT_STABLE_MS.
 *
 * TLS (--tls) and AUTH (--token) sit between the TCP connect and SENDING:
 * nothing counts as sent before the server said "AUTH OK", so a refused
 * token never costs a reading. All socket bytes go through sock_read()
 * and sock_write(), plain or TLS.
 *
 * Keepalive (SENDING, not in the original format, whose message mode a
 * line end would end): nothing received for --keepalive -> send "PING\n"
 * (keep_alive()); still nothing for as long again -> lost(). TCP keepalive
 * and TCP_USER_TIMEOUT are set to the same order (tune_keepalive()).
 * SPDX-License-Identifier: MIT
 */
#include "client/client.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client/backoff.h"
#include "client/pending.h"
#include "client/sim.h"
#include "client/spool.h"
#include "client/wire.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/tls.h"

/* Bytes of output buffered per connection: about a hundred lines. */
#define OUT_CAP 8192
/* Reads per wakeup before the loop serves other sensors (libuv's 32). */
#define READ_BUDGET 16
/* Fill-and-write rounds per wakeup, for the same fairness. */
#define WRITE_ROUNDS 8
/* Most readings one overdue production timer catches up at once. */
#define PRODUCE_BURST 1000

#define NS_PER_MS INT64_C(1000000)
/* A failing spool is retried this often at least. */
#define SPOOL_RETRY_MS 1000

enum client_state {
    CLIENT_DISCONNECTED = 0,
    CLIENT_CONNECTING,
    CLIENT_HANDSHAKE,
    CLIENT_AUTH,
    CLIENT_SENDING,
    CLIENT_BACKOFF,
    CLIENT_DONE,
};

struct client {
    struct client_env *env;
    uint32_t idx;
    uint32_t gen; /* bumped at each close: tags of old sockets go stale */
    char id[WIRE_ID_MAX + 1];
    const struct sim_kind_info *kind;
    enum client_state state;
    int fd;
    struct tls *tls;  /* the TLS session on fd (--tls), or NULL */
    const char *token; /* --token: sent in AUTH (borrowed), or NULL */
    uint32_t ev_mask; /* events registered with epoll; 0: not registered */
    struct sim sim;
    struct rng rng; /* jitter */
    struct backoff bo;
    struct pending *pq;
    struct spool *sp;         /* NULL: --no-spool */
    uint64_t loaded_seq;      /* last seq moved from the spool into pq */
    uint64_t evicted_seen;    /* spool_evicted_through() acted upon */
    bool spool_failing;       /* appends fail: production paused */
    int64_t spool_fail_ns;    /* the last failure */
    bool line_mismatch_said;  /* spooled lines in another format: said */
    struct timer tm;

    /* Production. */
    bool producing;      /* false once draining */
    bool stalled;        /* queue full: paused, said so once */
    int64_t next_prod_ns; /* monotonic time of the next reading */
    int64_t last_ts_ns;   /* wall-clock stamp of the last reading */
    uint64_t produced, acked, refused, dropped;

    /* The current connection or attempt. */
    int64_t deadline_ns;  /* BACKOFF: retry at; CONNECTING: give up at */
    int64_t connected_ns; /* SENDING since */
    int64_t ack_wait_ns;  /* lines in flight without reply since */
    int64_t last_rx_ns;   /* the last byte received */
    int64_t ping_ns;      /* keepalive PING sent (or due) at; 0: none */
    bool got_ack;         /* this connection acknowledged something */
    bool was_connected;   /* some earlier connection reached SENDING */
    char peer[NET_HOST_LEN + 8];
    char reason[128];     /* a connection-level ERR, shown at close */
    struct log_ratelimit warn_rl;
    size_t out_off, out_len;
    size_t in_len;
    char in[WIRE_REPLY_MAX];
    char out[OUT_CAP];
};

_Static_assert(OUT_CAP >= 2 * WIRE_LINE_MAX, "OUT_CAP below two lines");

/* ---- local log (stdout) ------------------------------------------------ */

/* "[10:15:42] [Sensor1] " prefix, as the original printed. */
static void
say_v(const struct client *c, const char *fmt, va_list ap)
{
    char when[16] = "??:??:??";
    struct tm tm;
    time_t t = time(NULL);

    if (localtime_r(&t, &tm) != NULL)
        strftime(when, sizeof(when), "%H:%M:%S", &tm);
    /* One fprintf per line, and stdout is line-buffered (main), so
     * concurrent readers of our stdout see whole lines. */
    flockfile(stdout);
    printf("[%s] [%s] ", when, c->id);
    vprintf(fmt, ap);
    putchar('\n');
    funlockfile(stdout);
}

/* A per-reading line: only with one sensor and without --quiet. */
static void say_reading(const struct client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
say_reading(const struct client *c, const char *fmt, ...)
{
    va_list ap;

    if (c->env->conf->quiet || c->env->conf->sensors > 1)
        return;
    va_start(ap, fmt);
    say_v(c, fmt, ap);
    va_end(ap);
}

/* Token bucket for say_event() when several sensors share stdout. */
static bool
event_allowed(struct client_env *env)
{
    int64_t now = clock_mono_ns();

    if (env->event_refill_ns == 0)
        env->event_tokens = CLIENT_EVENTS_BURST;
    else
        env->event_tokens += (double)(now - env->event_refill_ns) *
                             CLIENT_EVENTS_PER_S / 1e9;
    if (env->event_tokens > CLIENT_EVENTS_BURST)
        env->event_tokens = CLIENT_EVENTS_BURST;
    env->event_refill_ns = now;
    if (env->event_tokens < 1.0) {
        env->events_suppressed++;
        return false;
    }
    env->event_tokens -= 1.0;
    return true;
}

/* A connection event: always with one sensor; rate-limited with many. */
static void say_event(struct client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
say_event(struct client *c, const char *fmt, ...)
{
    struct client_env *env = c->env;
    va_list ap;

    if (env->conf->sensors > 1 && !event_allowed(env))
        return;
    if (env->events_suppressed > 0) {
        printf("(%" PRIu64 " mensagens omitidas)\n", env->events_suppressed);
        env->events_suppressed = 0;
    }
    va_start(ap, fmt);
    say_v(c, fmt, ap);
    va_end(ap);
}

/* The reading in the original's human form, for the local log. */
static const char *
human(const struct client *c, const struct pending_entry *e, char *buf,
      size_t len)
{
    wire_format_reading(WIRE_ORIGINAL, c->kind, c->id, e->value, e->ts_ns,
                        buf, len);
    return buf;
}

/* ---- target ------------------------------------------------------------ */

void
client_target_init(struct client_target *t, const char *spec)
{
    memset(t, 0, sizeof(*t));
    t->spec = spec;
    t->stale = true;
}

const struct net_addr *
client_target_get(struct client_target *t, int64_t now_ns, char *err,
                  size_t err_len)
{
    struct net_addr a;
    int rc;

    err[0] = '\0';
    if ((!t->have || t->stale) && now_ns >= t->next_try_ns) {
        /* Blocking for names (getaddrinfo); numeric addresses return at
         * once. Rate-limited so that a thousand sensors failing together
         * resolve once. */
        t->next_try_ns = now_ns + 1000 * NS_PER_MS;
        rc = net_parse_hostport(t->spec, false, &a, err, err_len);
        if (rc == 0) {
            t->addr = a;
            t->have = true;
            t->stale = false;
        } else {
            snprintf(t->err, sizeof(t->err), "%s", err);
            log_debug("resolving %s: %s", t->spec, err);
        }
    }
    if (!t->have) {
        snprintf(err, err_len, "%s",
                 t->err[0] != '\0' ? t->err : "endereço não resolvido");
        return NULL;
    }
    return &t->addr;
}

/* ---- helpers ----------------------------------------------------------- */

static const struct client_conf *
conf_of(const struct client *c)
{
    return c->env->conf;
}

static size_t
window_of(const struct client *c)
{
    /* The original protocol has no line numbers: one message at a time. */
    return conf_of(c)->format == WIRE_ORIGINAL ? 1 : conf_of(c)->window;
}

static bool
count_allows(const struct client *c)
{
    uint64_t count = conf_of(c)->count;

    return count == 0 || c->acked + client_pending(c) < count;
}

/* The application keepalive applies (not to the original's message mode,
 * which a line end would end). */
static int64_t
keepalive_ns(const struct client *c)
{
    if (conf_of(c)->format == WIRE_ORIGINAL)
        return 0;
    return conf_of(c)->keepalive_ms * NS_PER_MS;
}

uint64_t
client_event_tag(const struct client *c)
{
    return ((uint64_t)c->gen << 32) | c->idx;
}

uint32_t
client_tag_index(uint64_t tag)
{
    return (uint32_t)(tag & 0xffffffffu);
}

struct client *
client_from_timer(struct timer *tm)
{
    return (struct client *)((char *)tm - offsetof(struct client, tm));
}

/* Register, change or drop the epoll interest of the socket. */
static void
set_events(struct client *c, uint32_t mask)
{
    struct epoll_event ev = {.events = mask};
    int op;

    if (c->fd < 0 || mask == c->ev_mask)
        return;
    ev.data.u64 = client_event_tag(c);
    op = c->ev_mask == 0 ? EPOLL_CTL_ADD
                         : (mask == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD);
    if (epoll_ctl(c->env->epfd, op, c->fd, &ev) < 0) {
        /* Only ENOMEM/ENOSPC can happen here; the connect or ack
         * timeout recycles the connection if events never come. */
        log_error("%s: epoll_ctl: %s", c->id, strerror(errno));
        return;
    }
    c->ev_mask = mask;
}

/* Close the socket, if any; the queue forgets this connection. */
static void
close_conn(struct client *c)
{
    if (c->tls != NULL) {
        tls_close(c->tls); /* close_notify: a clean end for the server */
        tls_free(c->tls);
        c->tls = NULL;
    }
    if (c->fd >= 0) {
        set_events(c, 0);
        close(c->fd);
        c->fd = -1;
    }
    c->ev_mask = 0;
    c->gen++;
    if (c->state == CLIENT_SENDING)
        c->env->n_connected--;
    c->out_off = c->out_len = 0;
    c->in_len = 0;
    pending_rewind(c->pq);
}

/* The next time this sensor needs the loop, or TIMERS_NEVER. */
static void
reschedule(struct client *c)
{
    int64_t when = TIMERS_NEVER;

    switch (c->state) {
    case CLIENT_DONE:
        timers_set(&c->env->timers, &c->tm, TIMERS_NEVER);
        return;
    case CLIENT_BACKOFF:
    case CLIENT_CONNECTING:
    case CLIENT_HANDSHAKE:
    case CLIENT_AUTH:
        when = c->deadline_ns;
        break;
    case CLIENT_SENDING:
        if (pending_inflight(c->pq) > 0)
            when = c->ack_wait_ns + conf_of(c)->ack_timeout_ms * NS_PER_MS;
        if (keepalive_ns(c) > 0) {
            int64_t ka = (c->ping_ns != 0 ? c->ping_ns : c->last_rx_ns) +
                         keepalive_ns(c);

            if (ka < when)
                when = ka;
        }
        break;
    case CLIENT_DISCONNECTED:
        when = 0; /* at once */
        break;
    }
    if (c->producing && conf_of(c)->interval_ns > 0 && c->next_prod_ns < when)
        when = c->next_prod_ns;
    /* A spool that cannot be written is tried again within a second even
     * if nothing else happens (--interval 0 waits for no timer). */
    if (c->spool_failing && c->producing) {
        int64_t retry = c->spool_fail_ns + SPOOL_RETRY_MS * NS_PER_MS;

        if (retry < when)
            when = retry;
    }
    timers_set(&c->env->timers, &c->tm, when);
}

/* DONE once nothing is pending and nothing more will be produced. */
static bool
check_done(struct client *c)
{
    const struct client_conf *conf = conf_of(c);

    if (c->state == CLIENT_DONE || client_pending(c) > 0)
        return c->state == CLIENT_DONE;
    if (!(c->env->draining || (conf->count > 0 && c->acked >= conf->count)))
        return false;
    close_conn(c);
    c->state = CLIENT_DONE;
    c->producing = false;
    c->env->n_done++;
    timers_set(&c->env->timers, &c->tm, TIMERS_NEVER);
    return true;
}

/* ---- spool ------------------------------------------------------------- */

/* A spool failure: logged at most every 10 s per sensor. */
static void
spool_trouble(struct client *c, const char *what, int rc)
{
    uint64_t suppressed;

    if (log_ratelimit(&c->warn_rl, clock_mono_ms(), 10000, &suppressed))
        log_warn("%s: spool: %s: %s", c->id, what, strerror(-rc));
}

/* Readings are produced only while the spool can be written: a failed
 * append or sync pauses production for SPOOL_RETRY_MS at least, and the
 * first successful sync after that resumes it (a nearly full disk would
 * otherwise flap at every batch). What is already queued is still sent. */
static void
spool_failed(struct client *c, const char *what, int rc)
{
    spool_trouble(c, what, rc);
    c->spool_fail_ns = clock_mono_ns();
    if (!c->spool_failing) {
        c->spool_failing = true;
        say_event(c, "Spool sem gravar (%s): produção suspensa",
                  strerror(-rc));
    }
}

/* Make what was appended durable (and, when due, the ack state). */
static void
sync_spool(struct client *c, bool force)
{
    int rc;

    if (c->sp == NULL)
        return;
    rc = spool_sync(c->sp, clock_mono_ms(), force);
    if (rc < 0) {
        spool_failed(c, "gravando", rc);
    } else if (c->spool_failing &&
               clock_mono_ns() - c->spool_fail_ns >=
                   SPOOL_RETRY_MS * NS_PER_MS) {
        c->spool_failing = false;
        say_event(c, "Spool gravando de novo: produção retomada");
    }
}

/* Move readings from the spool into the queue while it has room, so that
 * the queue always holds the oldest unsettled ones. */
static void
refill(struct client *c)
{
    struct spool_rec rec;
    struct pending_entry e;
    char line[WIRE_LINE_MAX];
    int rc;

    if (c->sp == NULL)
        return;
    while (spool_unread(c->sp) > 0 && pending_reserve(c->pq) == 0) {
        rc = spool_read(c->sp, &rec);
        if (rc < 0) {
            if (rc != -ENOENT)
                spool_trouble(c, "lendo", rc);
            return;
        }
        e.ts_ns = rec.ts_ns;
        e.value = rec.value;
        e.seq = rec.seq;
        pending_push(c->pq, &e); /* reserved: cannot fail */
        c->loaded_seq = rec.seq;
        if (!c->line_mismatch_said) {
            size_t n = wire_format_reading(conf_of(c)->format, c->kind,
                                           c->id, e.value, e.ts_ns, line,
                                           sizeof(line));

            if (n != rec.line_len || memcmp(line, rec.line, n) != 0) {
                c->line_mismatch_said = true;
                log_warn("%s: spooled readings were made with another "
                         "--format, --kind or --id; resending them in the "
                         "current form", c->id);
            }
        }
    }
}

/* The queue's head moved: everything before it is settled in the spool. */
static void
settle(struct client *c)
{
    const struct pending_entry *head;
    int rc;

    if (c->sp == NULL)
        return;
    head = pending_peek(c->pq);
    rc = spool_settle(c->sp, head != NULL ? head->seq - 1 : c->loaded_seq);
    if (rc < 0)
        spool_trouble(c, "apagando um segmento", rc);
    refill(c);
}

/* The spool deleted its oldest segment to make room: readings of it still
 * waiting in memory unsent are dropped too (readings in flight stay). */
static void
note_evictions(struct client *c)
{
    uint64_t through = spool_evicted_through(c->sp);
    size_t n;

    if (through <= c->evicted_seen)
        return;
    c->evicted_seen = through;
    n = pending_drop_unsent(c->pq, through);
    c->dropped += n;
    c->env->dropped += n;
}

/* Append one reading to the spool. False if it could not be written (the
 * sensor pauses production until it can). */
static bool
spool_one(struct client *c, const struct pending_entry *e)
{
    char line[WIRE_LINE_MAX];
    uint64_t seq, before = spool_dropped(c->sp);
    size_t n;
    int rc;

    n = wire_format_reading(conf_of(c)->format, c->kind, c->id, e->value,
                            e->ts_ns, line, sizeof(line));
    rc = spool_append(c->sp, e->ts_ns, e->value, line, n, &seq);
    if (rc < 0) {
        spool_failed(c, "acrescentando", rc);
        return false;
    }
    c->dropped += spool_dropped(c->sp) - before;
    c->env->dropped += spool_dropped(c->sp) - before;
    note_evictions(c);
    refill(c);
    return true;
}

/* ---- production -------------------------------------------------------- */

/* One new reading into the spool and the queue. False if the count, a full
 * queue (without a spool), a failing spool or memory stopped it. */
static bool
produce_one(struct client *c)
{
    struct pending_entry e;
    int64_t now_real;
    int rc;

    if (!c->producing || !count_allows(c) || c->spool_failing)
        return false;
    if (c->sp == NULL && pending_full(c->pq)) {
        if (!c->stalled) {
            c->stalled = true;
            say_event(c,
                      "Fila cheia (%" PRIu32 " leituras sem confirmação): "
                      "produção suspensa",
                      conf_of(c)->max_pending);
        }
        return false;
    }
    /* Strictly increasing wall-clock stamps: each reading has its own key
     * (sensor, quantity, ts), so a resent reading is stored once. */
    now_real = clock_real_ns();
    e.ts_ns = now_real > c->last_ts_ns ? now_real : c->last_ts_ns + 1;
    e.value = sim_next(&c->sim);
    e.seq = 0;
    if (c->sp != NULL) {
        if (!spool_one(c, &e))
            return false;
    } else {
        rc = pending_push(c->pq, &e);
        if (rc < 0) {
            uint64_t suppressed;

            if (log_ratelimit(&c->warn_rl, clock_mono_ms(), 10000,
                              &suppressed))
                log_warn("%s: cannot queue a reading: %s", c->id,
                         strerror(-rc));
            return false;
        }
    }
    c->last_ts_ns = e.ts_ns;
    c->produced++;
    c->env->produced++;
    c->env->digest += client_digest(c->id, e.ts_ns);
    if (c->stalled) {
        c->stalled = false;
        say_event(c, "Fila com espaço: produção retomada");
    }
    return true;
}

/* Readings due on the --interval schedule (not for interval 0, whose
 * readings are made when the window has room: fill()). */
static void
produce_due(struct client *c, int64_t now)
{
    int64_t interval = conf_of(c)->interval_ns;
    int n = 0;

    if (!c->producing || interval == 0)
        return;
    while (c->next_prod_ns <= now) {
        if (n == PRODUCE_BURST) {
            /* Far behind (a stopped process, a huge rate): skip ahead
             * rather than make an unbounded burst. */
            c->next_prod_ns = now + interval;
            break;
        }
        produce_one(c);
        c->next_prod_ns += interval;
        n++;
    }
}

/* ---- sending ----------------------------------------------------------- */

/* True if fill() could put another line in the buffer now. */
static bool
can_send_more(const struct client *c)
{
    if (pending_inflight(c->pq) >= window_of(c))
        return false;
    if (pending_unsent(c->pq) > 0)
        return true;
    return conf_of(c)->interval_ns == 0 && c->producing && count_allows(c) &&
           !pending_full(c->pq) && !c->spool_failing;
}

/* Format unsent readings into the output buffer, within the window. */
static void
fill(struct client *c, int64_t now)
{
    char h[WIRE_LINE_MAX];

    if (c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    while (c->out_len + WIRE_LINE_MAX <= sizeof(c->out) && can_send_more(c)) {
        const struct pending_entry *e;
        uint64_t line;
        bool resend;
        size_t n;

        if (pending_unsent(c->pq) == 0 && !produce_one(c))
            break;
        e = pending_send_next(c->pq, &line, &resend);
        if (e == NULL)
            break;
        if (pending_inflight(c->pq) == 1)
            c->ack_wait_ns = now; /* the reply clock starts */
        n = wire_format_reading(conf_of(c)->format, c->kind, c->id, e->value,
                                e->ts_ns, c->out + c->out_len,
                                sizeof(c->out) - c->out_len);
        c->out_len += n;
        c->env->sent++;
        say_reading(c, "%s: %s", resend ? "Reenviado" : "Enviado",
                    human(c, e, h, sizeof(h)));
    }
}

static void go_backoff(struct client *c, int64_t now, bool connect_failed,
                       const char *why);

/* Connection lost while SENDING: say why and back off. Returns -1 so that
 * callers can write "return lost(...)". */
static int lost(struct client *c, int64_t now, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
lost(struct client *c, int64_t now, const char *fmt, ...)
{
    char why[192];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    go_backoff(c, now, false, why);
    return -1;
}

/* ---- byte I/O: the socket, or TLS over it ----------------------------- */

/* read() or tls_read(), with read()'s contract (-1 and errno). */
static ssize_t
sock_read(struct client *c, void *buf, size_t len)
{
    ssize_t n;

    if (c->tls == NULL)
        return read(c->fd, buf, len);
    n = tls_read(c->tls, buf, len);
    if (n >= 0)
        return n;
    errno = (int)-n;
    return -1;
}

/* send() or tls_write(). After EAGAIN the same bytes are offered again
 * first (the buffer only grows at its end or moves: tls.h allows both). */
static ssize_t
sock_write(struct client *c, const void *buf, size_t len)
{
    ssize_t n;

    if (c->tls == NULL)
        return send(c->fd, buf, len, MSG_NOSIGNAL);
    n = tls_write(c->tls, buf, len);
    if (n >= 0)
        return n;
    errno = (int)-n;
    return -1;
}

/* Write the buffer until done or EAGAIN. Returns 0 or -1 (lost). */
static int
flush(struct client *c, int64_t now)
{
    while (c->out_off < c->out_len) {
        ssize_t n = sock_write(c, c->out + c->out_off,
                               c->out_len - c->out_off);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return lost(c, now, "%s", strerror(errno));
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

/* Send what the window allows, then set the epoll interest. */
static void
pump(struct client *c, int64_t now)
{
    int round;

    if (c->state != CLIENT_SENDING)
        return;
    /* --interval 0 with a spool: make what the window has room for now,
     * so that one sync covers the whole wakeup rather than each round. */
    if (c->sp != NULL && conf_of(c)->interval_ns == 0) {
        while (pending_inflight(c->pq) + pending_unsent(c->pq) <
                   window_of(c) &&
               c->producing && !pending_full(c->pq) && produce_one(c))
            ;
    }
    for (round = 0; round < WRITE_ROUNDS; round++) {
        fill(c, now);
        if (c->out_len == 0)
            break;
        /* Durable before it leaves: a reading the server may store is
         * never one a crash could lose from the spool. */
        sync_spool(c, false);
        if (flush(c, now) < 0)
            return;
        if (c->out_len > 0)
            break; /* socket full: wait for EPOLLOUT */
    }
    /* Level-triggered EPOLLOUT only while there is something to write:
     * bytes buffered, or more lines the window allows right now. */
    set_events(c, EPOLLIN |
                      (c->out_len > 0 || can_send_more(c) ? EPOLLOUT : 0));
}

/* ---- connecting -------------------------------------------------------- */

static void
go_backoff(struct client *c, int64_t now, bool connect_failed,
           const char *why)
{
    bool was_sending = c->state == CLIENT_SENDING;
    int64_t delay_ms;
    double secs;

    if (was_sending &&
        (c->got_ack || now - c->connected_ns >= CLIENT_STABLE_MS * NS_PER_MS))
        backoff_reset(&c->bo);
    close_conn(c);
    if (connect_failed)
        c->env->target.stale = true; /* "again when a connect fails" */
    c->state = CLIENT_BACKOFF;
    if (check_done(c))
        return;
    delay_ms = backoff_next(&c->bo, &c->rng);
    c->deadline_ns = now + delay_ms * NS_PER_MS;
    /* Shown in tenths, rounded up: "0.0 s" would read as "no wait". */
    secs = (double)((delay_ms + 99) / 100) / 10.0;
    if (was_sending)
        say_event(c, "Conexão perdida (%s), nova tentativa em %.1f s", why,
                  secs);
    else
        say_event(c, "Falha ao conectar a %s (%s), nova tentativa em %.1f s",
                  c->peer[0] ? c->peer : c->env->target.spec, why, secs);
    c->reason[0] = '\0';
}

static void
connect_start(struct client *c, int64_t now)
{
    char err[NET_ERR_LEN];
    const struct net_addr *addr;
    int fd;

    c->state = CLIENT_DISCONNECTED;
    c->peer[0] = '\0';
    addr = client_target_get(&c->env->target, now, err, sizeof(err));
    if (addr == NULL) {
        go_backoff(c, now, true, err);
        return;
    }
    net_addr_str((const struct sockaddr *)&addr->ss, c->peer,
                 sizeof(c->peer));
    fd = net_connect_nb(addr);
    if (fd < 0) {
        go_backoff(c, now, true, strerror(-fd));
        return;
    }
    c->fd = fd;
    c->state = CLIENT_CONNECTING;
    c->deadline_ns = now + CLIENT_CONNECT_TIMEOUT_MS * NS_PER_MS;
    set_events(c, EPOLLOUT);
}

/* TCP keepalive and TCP_USER_TIMEOUT of the same order as --keepalive:
 * probes after one period of silence, dead after about two; unacknowledged
 * data times out after two. Best effort. */
static void
tune_keepalive(const struct client *c)
{
    int64_t ms = conf_of(c)->keepalive_ms;
    int idle = (int)(ms / 1000), intvl, cnt = 3;
    unsigned int user_ms = (unsigned int)(2 * ms);

    if (ms <= 0)
        return;
    if (idle < 1)
        idle = 1;
    intvl = idle / cnt > 0 ? idle / cnt : 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    setsockopt(c->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_ms,
               sizeof(user_ms));
}

/* SENDING: PING after a keepalive period without input; a second period
 * without any byte means the peer or the path is gone. Returns 0 or -1
 * (connection dropped). */
static int
keep_alive(struct client *c, int64_t now)
{
    int64_t ka = keepalive_ns(c);

    if (ka == 0)
        return 0;
    if (c->ping_ns != 0) {
        if (now - c->ping_ns < ka)
            return 0;
        return lost(c, now, "nada recebido há %.1f s, nem resposta ao PING",
                    (double)(now - c->last_rx_ns) / 1e9);
    }
    if (now - c->last_rx_ns < ka)
        return 0;
    c->ping_ns = now;
    /* With bytes still waiting to be written the socket is stuck anyway:
     * just start the second period. */
    if (c->out_len == 0) {
        memcpy(c->out, WIRE_PING, WIRE_PING_LEN);
        c->out_len = WIRE_PING_LEN;
        return flush(c, now);
    }
    return 0;
}

static void
on_connected(struct client *c, int64_t now)
{
    size_t backlog = client_pending(c);

    c->state = CLIENT_SENDING;
    c->env->n_connected++;
    c->connected_ns = now;
    c->ack_wait_ns = now;
    c->last_rx_ns = now;
    c->ping_ns = 0;
    c->got_ack = false;
    c->reason[0] = '\0';
    net_tune_conn(c->fd);
    tune_keepalive(c);
    say_event(c, "Conectado a %s", c->peer);
    if (backlog > 0 && c->was_connected)
        say_event(c, "%zu leituras sem confirmação na fila: enviando "
                  "em ordem", backlog);
    c->was_connected = true;
    pump(c, now);
}

/* TLS and AUTH done (or not wanted): SENDING. */
static void
after_transport(struct client *c, int64_t now)
{
    size_t n;

    if (c->token == NULL) {
        on_connected(c, now);
        return;
    }
    /* The AUTH line alone in the buffer: nothing is sent after it until
     * "AUTH OK" (docs/protocol.md 8). */
    n = wire_format_auth(c->id, c->token, c->out, sizeof(c->out));
    c->out_off = 0;
    c->out_len = n;
    c->state = CLIENT_AUTH;
    if (flush(c, now) < 0)
        return;
    set_events(c, EPOLLIN | (c->out_len > 0 ? EPOLLOUT : 0));
}

/* HANDSHAKE: advance it; a failure is a failed connect (backoff). */
static void
step_handshake(struct client *c, int64_t now)
{
    char why[TLS_ERR_LEN], msg[TLS_ERR_LEN + 16];
    uint64_t suppressed;
    int rc = tls_handshake(c->tls, why, sizeof(why));

    if (rc == -EAGAIN) {
        set_events(c, EPOLLIN | (tls_want_write(c->tls) ? EPOLLOUT : 0));
        return;
    }
    if (rc < 0) {
        /* A refused certificate is a configuration problem worth a line
         * on stderr, not only the connection event on stdout. */
        if (rc == -EPROTO &&
            log_ratelimit(&c->env->tls_rl, clock_mono_ms(), 10000,
                          &suppressed))
            log_warn("%s: TLS handshake with %s failed: %s", c->id,
                     c->peer, why);
        snprintf(msg, sizeof(msg), "TLS: %s", why);
        go_backoff(c, now, true, msg);
        return;
    }
    log_debug("%s: %s with %s", c->id, tls_version(c->tls), c->peer);
    after_transport(c, now);
}

/* CONNECTING -> writable with SO_ERROR 0. */
static void
on_tcp_connected(struct client *c, int64_t now)
{
    if (c->env->tls == NULL) {
        after_transport(c, now);
        return;
    }
    c->tls = tls_new(c->env->tls, c->fd, conf_of(c)->tls_server_name);
    if (c->tls == NULL) {
        go_backoff(c, now, false, strerror(errno));
        return;
    }
    c->state = CLIENT_HANDSHAKE;
    step_handshake(c, now);
}

/* "AUTH ERR": the token is wrong or revoked, and trying again would only
 * guess against the server's logs. Stop the whole process (exit 1); the
 * spool keeps what is unacknowledged. */
static int
auth_refused(struct client *c, const struct wire_reply *r)
{
    log_error("%s: the server refused the token: AUTH ERR %.*s (check "
              "--token or --token-file); stopping",
              c->id, (int)(r->reason_len < 96 ? r->reason_len : 96),
              r->reason);
    say_event(c, "Token recusado pelo servidor: AUTH ERR %.*s",
              (int)(r->reason_len < 96 ? r->reason_len : 96), r->reason);
    close_conn(c);
    c->state = CLIENT_BACKOFF;
    c->deadline_ns = INT64_MAX;
    c->producing = false;
    c->env->fatal = true;
    return -1;
}

/* ---- replies ----------------------------------------------------------- */

static void
note_ack(struct client *c, size_t n)
{
    c->acked += n;
    c->env->acked += n;
    if (!c->got_ack) {
        c->got_ack = true;
        backoff_reset(&c->bo);
    }
    if (conf_of(c)->count > 0 && c->acked >= conf_of(c)->count)
        c->producing = false;
}

/* Act on one reply. Returns 0, or -1 when the connection was dropped. */
static int
on_reply(struct client *c, const struct wire_reply *r, int64_t now)
{
    struct pending_entry e;
    char h[WIRE_LINE_MAX];
    uint64_t suppressed;
    size_t n;
    int rc;

    if (c->state == CLIENT_AUTH) {
        /* Only the answer to AUTH, or a connection-level ERR, can come
         * before it (nothing else was sent). */
        if (r->type == WIRE_R_AUTH_OK) {
            on_connected(c, now);
            return c->state == CLIENT_SENDING ? 0 : -1;
        }
        if (r->type == WIRE_R_AUTH_ERR)
            return auth_refused(c, r);
        if (r->type != WIRE_R_ERR_OTHER) {
            if (log_ratelimit(&c->warn_rl, clock_mono_ms(), 10000,
                              &suppressed))
                log_warn("%s: ignoring a %zu-byte reply before AUTH OK",
                         c->id, r->reason_len);
            return 0;
        }
    }
    switch (r->type) {
    case WIRE_R_AUTH_OK:
    case WIRE_R_AUTH_ERR:
        return 0; /* only after an AUTH, handled above */
    case WIRE_R_OK:
        c->ack_wait_ns = now;
        rc = pending_ok(c->pq, r->n, &n);
        if (rc < 0)
            return lost(c, now,
                        "resposta 'OK %" PRIu64 "' além das %" PRIu64
                        " linhas enviadas",
                        r->n,
                        pending_accepted(c->pq) + pending_inflight(c->pq));
        if (n > 0) {
            note_ack(c, n);
            settle(c);
            say_reading(c, "Confirmado: OK %" PRIu64 " (%zu)", r->n, n);
        }
        return 0;
    case WIRE_R_ORIGINAL:
        c->ack_wait_ns = now;
        rc = pending_ok(c->pq, pending_accepted(c->pq) + 1, &n);
        if (rc < 0)
            return lost(c, now, "resposta sem mensagem enviada");
        note_ack(c, n);
        settle(c);
        say_reading(c, "Resposta: %s", WIRE_ORIGINAL_REPLY);
        return 0;
    case WIRE_R_ERR_LINE:
        c->ack_wait_ns = now;
        rc = pending_err(c->pq, r->n, &e);
        if (rc < 0) {
            if (log_ratelimit(&c->warn_rl, clock_mono_ms(), 10000,
                              &suppressed))
                log_warn("%s: 'ERR %" PRIu64 "' for no line awaiting a reply",
                         c->id, r->n);
            return 0;
        }
        c->refused++;
        c->env->refused++;
        settle(c);
        say_event(c, "Recusada pelo servidor (linha %" PRIu64 ": %.*s): %s",
                  r->n, (int)r->reason_len, r->reason,
                  human(c, &e, h, sizeof(h)));
        return 0;
    case WIRE_R_ERR_OTHER:
        /* "ERR server full" and the like: the server closes next; keep
         * the reason for the close message. */
        snprintf(c->reason, sizeof(c->reason), "servidor: %.*s",
                 (int)(r->reason_len < 96 ? r->reason_len : 96), r->reason);
        return 0;
    case WIRE_R_PONG:
        return 0; /* any byte counts as life: read_replies() noted it */
    case WIRE_R_UNKNOWN:
    default:
        if (log_ratelimit(&c->warn_rl, clock_mono_ms(), 10000, &suppressed))
            log_warn("%s: ignoring an unknown %zu-byte reply", c->id,
                     r->reason_len);
        return 0;
    }
}

/* Parse and act on every complete reply in the input buffer. */
static int
on_input(struct client *c, int64_t now)
{
    struct wire_reply r;
    size_t off = 0, used;
    int rc;

    for (;;) {
        rc = wire_parse_reply(c->in + off, c->in_len - off, &r, &used);
        off += used;
        if (rc == WIRE_AGAIN)
            break;
        if (rc == WIRE_E_TOOLONG)
            return lost(c, now, "resposta com mais de %d bytes",
                        WIRE_REPLY_MAX);
        if (on_reply(c, &r, now) < 0)
            return -1;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    return 0;
}

/* A TLS error after the handshake: with TLS 1.3 this is also where a
 * server that refuses our client certificate says so (an alert after the
 * client's handshake ended). */
static int
tls_lost(struct client *c, int64_t now)
{
    char why[TLS_ERR_LEN];
    uint64_t suppressed;

    tls_error(c->tls, why, sizeof(why));
    if (log_ratelimit(&c->env->tls_rl, clock_mono_ms(), 10000, &suppressed))
        log_warn("%s: TLS connection with %s failed: %s", c->id, c->peer,
                 why);
    return lost(c, now, "TLS: %s", why);
}

/* Read replies within the budget. Returns 0 or -1 (connection dropped). */
static int
read_replies(struct client *c, int64_t now)
{
    int i;

    /* Past the budget only to empty a TLS record read in part, which
     * epoll would not report again. */
    for (i = 0; i < READ_BUDGET || (c->tls != NULL && tls_pending(c->tls));
         i++) {
        ssize_t n = sock_read(c, c->in + c->in_len,
                              sizeof(c->in) - c->in_len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EPROTO && c->tls != NULL)
                return tls_lost(c, now);
            return lost(c, now, "%s", c->reason[0] ? c->reason
                                                     : strerror(errno));
        }
        if (n == 0)
            return lost(c, now, "%s",
                        c->reason[0] ? c->reason : "fechada pelo servidor");
        c->in_len += (size_t)n;
        c->last_rx_ns = now;
        c->ping_ns = 0;
        if (on_input(c, now) < 0)
            return -1;
    }
    return 0;
}

/* ---- entry points ------------------------------------------------------ */

/* Open <spool_dir>/<id> and take over what a previous run left there.
 * Returns 0 or -1 with errno set and the reason logged. */
static int
open_spool(struct client *c, const struct client_conf *conf, const char *id)
{
    struct spool_conf sc = {.max_bytes = conf->spool_max};
    struct spool_open_info info;
    char path[OPTIONS_PATH_MAX + WIRE_ID_MAX + 2];
    char err[OPTIONS_PATH_MAX + 256];
    int rc, n;

    n = snprintf(path, sizeof(path), "%s/%s", conf->spool_dir, id);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    sc.dir = path;
    rc = spool_open(&sc, &c->sp, &info, err, sizeof(err));
    if (rc < 0) {
        log_error("%s", err);
        errno = -rc;
        return -1;
    }
    if (info.n_cut > 0)
        log_warn("spool %s: cut %" PRIu64 " bytes of torn or damaged "
                 "records from %" PRIu32 " segment(s)",
                 path, info.cut_bytes, info.n_cut);
    c->env->resumed += info.resumed;
    c->last_ts_ns = spool_last_ts(c->sp);
    c->evicted_seen = spool_evicted_through(c->sp);
    c->loaded_seq = spool_acked(c->sp);
    return 0;
}

struct client *
client_new(struct client_env *env, uint32_t idx, const char *id,
           uint64_t seed, int64_t first_ns)
{
    const struct client_conf *conf = env->conf;
    struct client *c;
    size_t id_len = strlen(id);

    if (id_len > WIRE_ID_MAX) {
        errno = EINVAL;
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->pq = pending_new(conf->max_pending);
    if (c->pq == NULL) {
        free(c);
        return NULL;
    }
    c->env = env;
    if (conf->spool_dir != NULL && open_spool(c, conf, id) < 0) {
        int e = errno;

        pending_destroy(c->pq);
        free(c);
        errno = e;
        return NULL;
    }
    c->idx = idx;
    memcpy(c->id, id, id_len + 1);
    c->kind = sim_kind_info(conf->kind);
    c->state = CLIENT_DISCONNECTED;
    c->fd = -1;
    sim_init(&c->sim, c->kind->lo, c->kind->hi, rng_derive(seed, 2 * idx));
    rng_seed(&c->rng, rng_derive(seed, 2 * idx + 1));
    backoff_init(&c->bo, BACKOFF_BASE_MS, conf->backoff_max_ms);
    c->producing = true;
    c->next_prod_ns = first_ns;
    c->tm.when = TIMERS_NEVER;
    refill(c);
    return c;
}

void
client_set_token(struct client *c, const char *token)
{
    c->token = token;
}

void
client_destroy(struct client *c)
{
    if (c == NULL)
        return;
    tls_free(c->tls); /* no close_notify: the loop is gone */
    if (c->fd >= 0)
        close(c->fd); /* the epoll fd may be gone already: no epoll_ctl */
    if (c->tm.pos != 0)
        timers_set(&c->env->timers, &c->tm, TIMERS_NEVER);
    spool_close(c->sp);
    pending_destroy(c->pq);
    free(c);
}

void
client_start(struct client *c, int64_t now)
{
    if (client_pending(c) > 0)
        say_event(c, "%zu leituras do spool sem confirmação: serão "
                  "reenviadas", client_pending(c));
    connect_start(c, now);
    produce_due(c, now);
    pump(c, now);
    sync_spool(c, false);
    if (!check_done(c))
        reschedule(c);
}

void
client_on_io(struct client *c, uint64_t tag, uint32_t events, int64_t now)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (tag != client_event_tag(c) || c->fd < 0)
        return; /* an event for a socket closed earlier in this batch */
    switch (c->state) {
    case CLIENT_CONNECTING:
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            break;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err != 0)
            go_backoff(c, now, true, strerror(err));
        else
            on_tcp_connected(c, now);
        break;
    case CLIENT_HANDSHAKE:
        step_handshake(c, now);
        break;
    case CLIENT_AUTH:
        if ((events & EPOLLOUT) && c->out_off < c->out_len) {
            if (flush(c, now) < 0)
                break;
            set_events(c, EPOLLIN | (c->out_len > 0 ? EPOLLOUT : 0));
        }
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            read_replies(c, now);
        break;
    case CLIENT_SENDING:
        if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) &&
            read_replies(c, now) < 0)
            break;
        pump(c, now);
        break;
    default:
        break;
    }
    sync_spool(c, false);
    if (!check_done(c))
        reschedule(c);
}

void
client_on_timer(struct client *c, int64_t now)
{
    switch (c->state) {
    case CLIENT_DISCONNECTED:
        connect_start(c, now);
        break;
    case CLIENT_BACKOFF:
        if (now >= c->deadline_ns)
            connect_start(c, now);
        break;
    case CLIENT_CONNECTING:
    case CLIENT_HANDSHAKE:
    case CLIENT_AUTH:
        if (now >= c->deadline_ns)
            go_backoff(c, now, true,
                       c->state == CLIENT_CONNECTING  ? "tempo esgotado"
                       : c->state == CLIENT_HANDSHAKE ? "tempo esgotado no "
                                                        "handshake TLS"
                                                      : "tempo esgotado "
                                                        "esperando AUTH OK");
        break;
    case CLIENT_SENDING:
        if (pending_inflight(c->pq) > 0 &&
            now >= c->ack_wait_ns + conf_of(c)->ack_timeout_ms * NS_PER_MS)
            lost(c, now, "sem resposta há %.1f s",
                 (double)(now - c->ack_wait_ns) / 1e9);
        else
            keep_alive(c, now);
        break;
    case CLIENT_DONE:
        return;
    }
    if (c->spool_failing)
        sync_spool(c, false); /* production resumes once it works */
    produce_due(c, now);
    pump(c, now);
    sync_spool(c, false);
    if (!check_done(c))
        reschedule(c);
}

void
client_drain(struct client *c, int64_t now)
{
    c->producing = false;
    if (c->state == CLIENT_DONE)
        return;
    pump(c, now); /* drops EPOLLOUT if only production wanted it */
    sync_spool(c, false);
    if (!check_done(c))
        reschedule(c);
}

bool
client_done(const struct client *c)
{
    return c->state == CLIENT_DONE;
}

size_t
client_pending(const struct client *c)
{
    size_t n = pending_len(c->pq);

    if (c->sp != NULL)
        n += (size_t)spool_unread(c->sp);
    return n;
}

uint64_t
client_spool_seq(const struct client *c)
{
    return c->sp != NULL ? spool_next_seq(c->sp) - 1 : 0;
}

void
client_sync(struct client *c)
{
    sync_spool(c, true);
}

uint64_t
client_digest(const char *id, int64_t ts_ns)
{
    char buf[WIRE_ID_MAX + 32];
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    int n = snprintf(buf, sizeof(buf), "%s\x1f%" PRId64, id, ts_ns);
    int i;

    for (i = 0; i < n && (size_t)i < sizeof(buf); i++) {
        h ^= (unsigned char)buf[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}
