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
 *      |                   | writable, SO_ERROR 0: on_connected()        |
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
 *   CONNECTING   -> SENDING      on_connected()
 *   CONNECTING   -> BACKOFF      on_io()/on_timer() -> go_backoff()
 *   SENDING      -> BACKOFF      lost() -> go_backoff()
 *   BACKOFF      -> DISCONNECTED client_on_timer() (then connect_start())
 *   any          -> DONE         check_done()
 *
 * Readings are produced on schedule in every state (they wait in the
 * pending queue while disconnected, up to --max-pending); every reading is
 * resent after a reconnect until an OK or ERR settles it. Backoff starts
 * over once a connection acknowledged something or stayed up
 * CLIENT_STABLE_MS.
 * SPDX-License-Identifier: MIT
 */
#include "client/client.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client/backoff.h"
#include "client/pending.h"
#include "client/sim.h"
#include "client/wire.h"
#include "util/clock.h"
#include "util/log.h"

/* Bytes of output buffered per connection: about a hundred lines. */
#define OUT_CAP 8192
/* Reads per wakeup before the loop serves other sensors (libuv's 32). */
#define READ_BUDGET 16
/* Fill-and-write rounds per wakeup, for the same fairness. */
#define WRITE_ROUNDS 8
/* Most readings one overdue production timer catches up at once. */
#define PRODUCE_BURST 1000

#define NS_PER_MS INT64_C(1000000)

enum client_state {
    CLIENT_DISCONNECTED = 0,
    CLIENT_CONNECTING,
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
    uint32_t ev_mask; /* events registered with epoll; 0: not registered */
    struct sim sim;
    struct rng rng; /* jitter */
    struct backoff bo;
    struct pending *pq;
    struct timer tm;

    /* Production. */
    bool producing;      /* false once draining */
    bool stalled;        /* queue full: paused, said so once */
    int64_t next_prod_ns; /* monotonic time of the next reading */
    int64_t last_ts_ns;   /* wall-clock stamp of the last reading */
    uint64_t produced, acked, refused;

    /* The current connection or attempt. */
    int64_t deadline_ns;  /* BACKOFF: retry at; CONNECTING: give up at */
    int64_t connected_ns; /* SENDING since */
    int64_t ack_wait_ns;  /* lines in flight without reply since */
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

    return count == 0 || c->acked + pending_len(c->pq) < count;
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
        when = c->deadline_ns;
        break;
    case CLIENT_SENDING:
        if (pending_inflight(c->pq) > 0)
            when = c->ack_wait_ns + conf_of(c)->ack_timeout_ms * NS_PER_MS;
        break;
    case CLIENT_DISCONNECTED:
        when = 0; /* at once */
        break;
    }
    if (c->producing && conf_of(c)->interval_ns > 0 && c->next_prod_ns < when)
        when = c->next_prod_ns;
    timers_set(&c->env->timers, &c->tm, when);
}

/* DONE once nothing is pending and nothing more will be produced. */
static bool
check_done(struct client *c)
{
    const struct client_conf *conf = conf_of(c);

    if (c->state == CLIENT_DONE || pending_len(c->pq) > 0)
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

/* ---- production -------------------------------------------------------- */

/* One new reading into the queue. False if the count, a full queue or
 * memory stopped it. */
static bool
produce_one(struct client *c)
{
    struct pending_entry e;
    int64_t now_real;
    int rc;

    if (!c->producing || !count_allows(c))
        return false;
    if (pending_full(c->pq)) {
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
    rc = pending_push(c->pq, &e);
    if (rc < 0) {
        uint64_t suppressed;

        if (log_ratelimit(&c->warn_rl, clock_mono_ms(), 10000, &suppressed))
            log_warn("%s: cannot queue a reading: %s", c->id, strerror(-rc));
        return false;
    }
    c->last_ts_ns = e.ts_ns;
    c->produced++;
    c->env->produced++;
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
           !pending_full(c->pq);
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

/* Write the buffer until done or EAGAIN. Returns 0 or -1 (lost). */
static int
flush(struct client *c, int64_t now)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL);

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
    for (round = 0; round < WRITE_ROUNDS; round++) {
        fill(c, now);
        if (c->out_len == 0)
            break;
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

static void
on_connected(struct client *c, int64_t now)
{
    size_t backlog = pending_len(c->pq);

    c->state = CLIENT_SENDING;
    c->env->n_connected++;
    c->connected_ns = now;
    c->ack_wait_ns = now;
    c->got_ack = false;
    c->reason[0] = '\0';
    net_tune_conn(c->fd);
    say_event(c, "Conectado a %s", c->peer);
    if (backlog > 0 && c->was_connected)
        say_event(c, "%zu leituras sem confirmação na fila: enviando "
                  "em ordem", backlog);
    c->was_connected = true;
    pump(c, now);
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

    switch (r->type) {
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
            say_reading(c, "Confirmado: OK %" PRIu64 " (%zu)", r->n, n);
        }
        return 0;
    case WIRE_R_ORIGINAL:
        c->ack_wait_ns = now;
        rc = pending_ok(c->pq, pending_accepted(c->pq) + 1, &n);
        if (rc < 0)
            return lost(c, now, "resposta sem mensagem enviada");
        note_ack(c, n);
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

/* Read replies within the budget. Returns 0 or -1 (connection dropped). */
static int
read_replies(struct client *c, int64_t now)
{
    int i;

    for (i = 0; i < READ_BUDGET; i++) {
        ssize_t n = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return lost(c, now, "%s", c->reason[0] ? c->reason
                                                     : strerror(errno));
        }
        if (n == 0)
            return lost(c, now, "%s",
                        c->reason[0] ? c->reason : "fechada pelo servidor");
        c->in_len += (size_t)n;
        if (on_input(c, now) < 0)
            return -1;
    }
    return 0;
}

/* ---- entry points ------------------------------------------------------ */

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
    return c;
}

void
client_destroy(struct client *c)
{
    if (c == NULL)
        return;
    if (c->fd >= 0)
        close(c->fd); /* the epoll fd may be gone already: no epoll_ctl */
    if (c->tm.pos != 0)
        timers_set(&c->env->timers, &c->tm, TIMERS_NEVER);
    pending_destroy(c->pq);
    free(c);
}

void
client_start(struct client *c, int64_t now)
{
    connect_start(c, now);
    produce_due(c, now);
    pump(c, now);
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
            on_connected(c, now);
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
        if (now >= c->deadline_ns)
            go_backoff(c, now, true, "tempo esgotado");
        break;
    case CLIENT_SENDING:
        if (pending_inflight(c->pq) > 0 &&
            now >= c->ack_wait_ns + conf_of(c)->ack_timeout_ms * NS_PER_MS)
            lost(c, now, "sem resposta há %.1f s",
                 (double)(now - c->ack_wait_ns) / 1e9);
        break;
    case CLIENT_DONE:
        return;
    }
    produce_due(c, now);
    pump(c, now);
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
    return pending_len(c->pq);
}
