/*
 * conn_mqtt: the MQTT 3.1.1 side of a sensor connection (docs/protocol.md
 * 7). conn.c reads the bytes and hands them here once a connection is MQTT
 * (first byte 0x10, or accepted on --mqtt-listen); this file frames them
 * with mqtt_parse, stores each PUBLISH through the same batch path as a
 * line (conn_accept_line) and answers with conn.c's output buffer. Every
 * protocol violation closes the connection without an answer, in one
 * place (violation).
 *
 * PUBACK after commit: each QoS 1 PUBLISH puts (mark, packet id) in a
 * FIFO, mark being the connection's accepted count once that PUBLISH is
 * stored; conn_ack's cumulative count pops every entry it covers, in
 * order. A PUBLISH without a reading takes the mark of the entry before
 * it, so its PUBACK never overtakes an earlier one. At most
 * --mqtt-max-inflight entries: then the connection is not read (THROTTLED,
 * off w->throttled) until acks free a slot.
 *
 * Connection states, in addition to conn.c's (worker_internal.h):
 *
 *   (accepted) --CONNECT ok--> CONNECTED --DISCONNECT--> DRAINING
 *        |                        |  |
 *        | other packet, refused  |  +--inflight full--> held (THROTTLED)
 *        v                        v          ^   conn_mqtt_ack |
 *     CLOSING <---- violation, keep alive,   +-----------------+
 *                   taken over (conn_mqtt_evicted)
 *
 * Everything here runs on the connection's worker thread; the only shared
 * state is the session registry (mqtt_sessions.h).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "proto/mqtt.h"
#include "server/auth.h"
#include "server/worker_internal.h"

/* First FIFO size; it doubles up to --mqtt-max-inflight, so a connection
 * that publishes at QoS 0 or slowly costs no more than this. */
#define FIFO_MIN 16
/* Evicted connections taken per registry lock. */
#define EVICT_BATCH 64
/* Bytes of a topic quoted in a log message. */
#define LOG_TOPIC_MAX 96

enum pkt_rc { PKT_OK = 0, PKT_AGAIN = 1, PKT_STOP = 2 };

struct pending_ack {
    uint64_t mark;       /* PUBACK once c->n_acked reaches this */
    uint16_t packet_id;
};

struct conn_mqtt {
    bool connected;      /* CONNECT accepted */
    bool held;           /* inflight full: not read until acks */
    bool disconnected;   /* DISCONNECT received: ignore what follows */
    int64_t ka_ms;       /* 1.5 x the keep alive; 0: --idle-timeout */
    struct pending_ack *fifo;
    size_t head, n, cap;
    struct mqtt_session sess;
    struct log_ratelimit bad_rl; /* PUBLISHes without a reading */
};

int
conn_mqtt_start(struct conn *c)
{
    c->mq = calloc(1, sizeof(*c->mq));
    return c->mq != NULL ? 0 : -ENOMEM;
}

void
conn_mqtt_free(struct conn *c)
{
    if (c->mq == NULL)
        return;
    /* Normally released when closed; at exit (worker_free) the registry
     * may be gone, and nobody claims any more: only the copy is ours. */
    free(c->mq->sess.id);
    free(c->mq->fifo);
    free(c->mq);
    c->mq = NULL;
}

void
conn_mqtt_closed(struct conn *c)
{
    mqtt_sessions_release(c->w->sessions, &c->mq->sess);
}

/* The packet limit: --mqtt-max-packet, but a whole packet must fit in the
 * worker's read buffer, where conn_read assembles it. */
static size_t
max_packet(const struct worker *w)
{
    uint64_t m = w->conf->mqtt_max_packet;

    return m < WORKER_RBUF ? (size_t)m : WORKER_RBUF;
}

/* The one place where a violation becomes a close without an answer. */
static enum pkt_rc
violation(struct conn *c, const char *reason)
{
    struct worker *w = c->w;
    uint64_t suppressed;

    atomic_fetch_add_explicit(&w->stats.mqtt_violations, 1,
                              memory_order_relaxed);
    if (log_ratelimit(&w->mqtt_rl, w->now_ms, 10000, &suppressed))
        log_warn("mqtt %s: %s, closing (%llu more violations since the "
                 "last message)",
                 c->peer, reason, (unsigned long long)suppressed);
    conn_close_later(c, reason);
    return PKT_STOP;
}

static void
reply(struct conn *c, const uint8_t *p, size_t n)
{
    conn_out(c, p, n);
}

/* ---- the PUBACK FIFO ---------------------------------------------------- */

static bool
fifo_push(struct conn *c, uint64_t mark, uint16_t packet_id)
{
    struct conn_mqtt *mq = c->mq;
    struct pending_ack *e;

    if (mq->n == mq->cap) {
        size_t max = (size_t)c->w->conf->mqtt_max_inflight;
        size_t cap = mq->cap ? mq->cap * 2 : FIFO_MIN, i;
        struct pending_ack *f;

        if (cap > max)
            cap = max;
        f = malloc(cap * sizeof(*f));
        if (f == NULL)
            return false;
        /* Unwrap the ring into the new array. */
        for (i = 0; i < mq->n; i++)
            f[i] = mq->fifo[(mq->head + i) % mq->cap];
        free(mq->fifo);
        mq->fifo = f;
        mq->cap = cap;
        mq->head = 0;
    }
    e = &mq->fifo[(mq->head + mq->n) % mq->cap];
    e->mark = mark;
    e->packet_id = packet_id;
    mq->n++;
    return true;
}

static void
puback(struct conn *c, uint16_t packet_id)
{
    uint8_t b[MQTT_ACK_SIZE];

    reply(c, b, mqtt_encode_puback(b, sizeof(b), packet_id));
    atomic_fetch_add_explicit(&c->w->stats.mqtt_pubacks, 1,
                              memory_order_relaxed);
}

void
conn_mqtt_ack(struct conn *c, uint64_t n_accepted)
{
    struct conn_mqtt *mq = c->mq;
    struct worker *w = c->w;

    if (n_accepted > c->n_acked)
        c->n_acked = n_accepted;
    while (mq->n > 0 && mq->fifo[mq->head].mark <= c->n_acked) {
        puback(c, mq->fifo[mq->head].packet_id);
        mq->head = (mq->head + 1) % mq->cap;
        mq->n--;
    }
    if (mq->n == 0) {
        /* Idle publishers hold no FIFO. */
        free(mq->fifo);
        mq->fifo = NULL;
        mq->head = mq->cap = 0;
    }
    if (mq->held && mq->n < w->conf->mqtt_max_inflight &&
        !(c->flags & CONN_F_CLOSING)) {
        /* Still THROTTLED: unthrottle() resumes it right after the acks
         * of this wakeup, once a batch is free. */
        mq->held = false;
        list_add_tail(&w->throttled, &c->l_throttle);
    }
}

/* Inflight full: stop reading until conn_mqtt_ack frees a slot. */
static void
hold(struct conn *c)
{
    c->mq->held = true;
    c->flags |= CONN_F_THROTTLED;
    loop_mod(c->w->loop, &c->io, c->io.events & ~(uint32_t)EPOLLIN);
}

/* ---- packets ------------------------------------------------------------ */

static enum pkt_rc
connack(struct conn *c, uint8_t code)
{
    uint8_t b[MQTT_ACK_SIZE];

    reply(c, b, mqtt_encode_connack(b, sizeof(b), false, code));
    if (code == MQTT_CONNACK_ACCEPTED)
        return PKT_OK;
    conn_close_later(c, "CONNECT refused");
    return PKT_STOP;
}

/* With --tokens: user name = sensor id, password = its token (docs/
 * security.md 4.1). Returns the CONNACK code. */
static uint8_t
authenticate(struct conn *c, const struct mqtt_connect *cn)
{
    const struct auth *a = c->w->sh->auth;
    char who[4 * PROTO_MAX_NAME + 1];
    uint64_t suppressed;

    if (a == NULL)
        return MQTT_CONNACK_ACCEPTED;
    if (!cn->has_username || !cn->has_password)
        return MQTT_CONNACK_NOT_AUTHORIZED;
    if (!auth_check(a, cn->username.p, cn->username.len, cn->password.p,
                    cn->password.len)) {
        /* The claimed id, escaped; never the password. */
        if (log_ratelimit(&c->w->mqtt_rl, c->w->now_ms, 10000,
                          &suppressed)) {
            proto_escape_line(cn->username.p,
                              cn->username.len < PROTO_MAX_NAME
                                  ? cn->username.len
                                  : PROTO_MAX_NAME,
                              who, sizeof(who));
            log_warn("mqtt %s: bad credentials for sensor '%s' (%llu more "
                     "since the last message)",
                     c->peer, who, (unsigned long long)suppressed);
        }
        return MQTT_CONNACK_BAD_CREDENTIALS;
    }
    /* A verified TLS client certificate may have named the connection
     * already (conn.c, identity_from_cert): CONNECT's credentials
     * decide for MQTT (docs/security.md 2.2). */
    free(c->auth_sensor);
    c->auth_sensor = strndup(cn->username.p, cn->username.len);
    if (c->auth_sensor == NULL)
        return MQTT_CONNACK_UNAVAILABLE;
    c->auth_len = cn->username.len;
    return MQTT_CONNACK_ACCEPTED;
}

static enum pkt_rc
on_connect(struct conn *c, const struct mqtt_connect *cn)
{
    struct conn_mqtt *mq = c->mq;
    struct worker *w = c->w;
    uint8_t code = cn->return_code;
    int rc;

    if (code == MQTT_CONNACK_ACCEPTED)
        code = authenticate(c, cn);
    if (code != MQTT_CONNACK_ACCEPTED) {
        atomic_fetch_add_explicit(&w->stats.mqtt_connects_refused, 1,
                                  memory_order_relaxed);
        return connack(c, code);
    }
    /* An empty id (clean session only, checked by mqtt_parse) is nobody
     * else's: it takes nothing over. */
    if (cn->client_id.len > 0) {
        rc = mqtt_sessions_claim(w->sessions, &mq->sess, &w->mbox, c,
                                 cn->client_id.p, cn->client_id.len);
        if (rc < 0) {
            atomic_fetch_add_explicit(&w->stats.mqtt_connects_refused, 1,
                                      memory_order_relaxed);
            return connack(c, MQTT_CONNACK_UNAVAILABLE);
        }
        if (rc > 0)
            log_debug("mqtt %s: client id taken over from an older "
                      "connection",
                      c->peer);
    }
    mq->connected = true;
    atomic_fetch_add_explicit(&w->stats.mqtt_connects, 1,
                              memory_order_relaxed);
    if (cn->keep_alive > 0) {
        /* MQTT-3.1.2-24: one and a half keep alives without a packet. */
        mq->ka_ms = (int64_t)cn->keep_alive * 1500;
        c->flags |= CONN_F_KEEPALIVE;
        if (!(c->flags & CONN_F_DRAINING))
            list_move_tail(&w->mqtt_ka, &c->l_idle);
        if (c->active_ms + mq->ka_ms < w->mqtt_ka_next_ms)
            w->mqtt_ka_next_ms = c->active_ms + mq->ka_ms;
    }
    return connack(c, MQTT_CONNACK_ACCEPTED);
}

/* Count and log (rate-limited, per connection) a PUBLISH that carries no
 * reading. An empty payload is MQTT's "clear the retained message": it is
 * ignored without a word. */
static void
bad_publish(struct conn *c, const struct mqtt_publish *pub, int rc)
{
    struct worker *w = c->w;
    char topic[4 * LOG_TOPIC_MAX + 1];
    uint64_t suppressed;
    size_t tl = pub->topic.len < LOG_TOPIC_MAX ? pub->topic.len
                                               : LOG_TOPIC_MAX;

    if (rc == PROTO_E_EMPTY)
        return;
    atomic_fetch_add_explicit(&w->stats.lines_refused, 1,
                              memory_order_relaxed);
    if (-rc > 0 && -rc < WORKER_REFUSE_REASONS)
        atomic_fetch_add_explicit(&w->stats.refused_by[-rc], 1,
                                  memory_order_relaxed); /* /metrics */
    if (!log_ratelimit(&c->mq->bad_rl, w->now_ms, 10000, &suppressed))
        return;
    proto_escape_line(pub->topic.p, tl, topic, sizeof(topic));
    log_warn("mqtt %s: PUBLISH on '%s' dropped: %s (%llu more since the "
             "last message)",
             c->peer, topic, proto_strerror(rc),
             (unsigned long long)suppressed);
}

/* With --tokens: the reading is the connection's own sensor's. */
static bool
own_reading(const struct conn *c, const struct proto_line *pl)
{
    return pl->n == 1 && pl->r[0].sensor.len == c->auth_len &&
           memcmp(pl->r[0].sensor.p, c->auth_sensor, c->auth_len) == 0;
}

static enum pkt_rc
on_publish(struct conn *c, const struct mqtt_publish *pub)
{
    struct conn_mqtt *mq = c->mq;
    struct worker *w = c->w;
    int rc;

    if (pub->qos == 2)
        return violation(c, "QoS 2 refused");
    if (pub->qos == 1 && mq->n >= w->conf->mqtt_max_inflight) {
        hold(c);
        return PKT_AGAIN;
    }
    atomic_fetch_add_explicit(&w->stats.mqtt_publish[pub->qos], 1,
                              memory_order_relaxed);
    rc = mqtt_publish_to_line(pub, w->pl);
    if (rc != PROTO_OK) {
        bad_publish(c, pub, rc);
        if (pub->qos == 0)
            return PKT_OK;
        if (mq->n == 0) {
            puback(c, pub->packet_id); /* nothing before it is pending */
            return PKT_OK;
        }
        /* After the PUBACKs still pending, never before. */
        if (!fifo_push(c,
                       mq->fifo[(mq->head + mq->n - 1) % mq->cap].mark,
                       pub->packet_id))
            return violation(c, "out of memory");
        return PKT_OK;
    }
    if (c->auth_sensor != NULL && !own_reading(c, w->pl))
        return violation(c, "PUBLISH for another sensor");
    if (!worker_batch_room(w, w->pl->n,
                           w->log_on ? LOG_PER_READING * w->pl->n : 0)) {
        conn_throttle(c);
        return PKT_AGAIN;
    }
    /* Reserve the FIFO slot first: once stored, the reading must get its
     * PUBACK. */
    if (pub->qos == 1 && !fifo_push(c, c->n_accepted + 1, pub->packet_id))
        return violation(c, "out of memory");
    conn_accept_line(c, w->pl);
    return PKT_OK;
}

static enum pkt_rc
on_subscribe(struct conn *c, const struct mqtt_subscribe *sub)
{
    uint8_t small[64], *b = small;
    size_t n = mqtt_encode_suback(NULL, 0, sub->packet_id, NULL,
                                  sub->n_filters);

    /* A sink grants nothing: 0x80 for every filter. n is bounded by the
     * packet, itself bounded by max_packet. */
    if (n == 0)
        return violation(c, "SUBSCRIBE too large");
    if (n > sizeof(small)) {
        b = malloc(n);
        if (b == NULL)
            return violation(c, "out of memory");
    }
    mqtt_encode_suback(b, n, sub->packet_id, NULL, sub->n_filters);
    reply(c, b, n);
    if (b != small)
        free(b);
    return PKT_OK;
}

/* One whole packet. */
static enum pkt_rc
on_packet(struct conn *c, const struct mqtt_packet *pkt)
{
    struct conn_mqtt *mq = c->mq;
    uint8_t b[MQTT_ACK_SIZE];

    if (!mq->connected) {
        if (pkt->type != MQTT_CONNECT)
            return violation(c, "first packet not CONNECT");
        return on_connect(c, &pkt->connect);
    }
    switch (pkt->type) {
    case MQTT_PUBLISH:
        return on_publish(c, &pkt->publish);
    case MQTT_SUBSCRIBE:
        return on_subscribe(c, &pkt->subscribe);
    case MQTT_UNSUBSCRIBE:
        reply(c, b,
              mqtt_encode_unsuback(b, sizeof(b), pkt->subscribe.packet_id));
        return PKT_OK;
    case MQTT_PINGREQ:
        reply(c, b, mqtt_encode_pingresp(b, sizeof(b)));
        return PKT_OK;
    case MQTT_DISCONNECT:
        /* Like an EOF: what was stored is acknowledged, then close. */
        mq->disconnected = true;
        c->flags |= CONN_F_EOF;
        conn_drain(c);
        return PKT_STOP;
    case MQTT_CONNECT:
        return violation(c, "second CONNECT");
    default:
        /* The server never sends a PUBLISH: nothing to acknowledge. */
        return violation(c, "unexpected packet type");
    }
}

size_t
conn_mqtt_process(struct conn *c, const char *buf, size_t len)
{
    const uint8_t *p = (const uint8_t *)buf, *end = p + len;
    size_t limit = max_packet(c->w), used;
    struct mqtt_packet pkt;
    enum pkt_rc prc;
    int rc;

    while (p < end && !(c->flags & CONN_F_CLOSING) && !c->mq->disconnected) {
        rc = mqtt_parse(p, (size_t)(end - p), limit, &pkt, &used);
        if (rc == MQTT_NEED_MORE)
            break;
        if (rc != MQTT_OK) {
            violation(c, mqtt_strerror(rc));
            return len;
        }
        prc = on_packet(c, &pkt);
        if (prc == PKT_AGAIN)
            break;
        p += used;
    }
    /* Bytes after a DISCONNECT or a violation are nobody's. */
    if ((c->flags & CONN_F_CLOSING) || c->mq->disconnected)
        return len;
    return (size_t)(p - (const uint8_t *)buf);
}

/* ---- timers and takeovers ----------------------------------------------- */

/*
 * Keep alives differ per client, so w->mqtt_ka is not in deadline order:
 * it is walked whole, but only when its earliest deadline (remembered in
 * w->mqtt_ka_next_ms) has come, so about once per shortest keep alive.
 */
int64_t
conn_mqtt_timers(struct worker *w)
{
    int64_t next = INT64_MAX;
    struct list *it, *nx;

    if (w->now_ms < w->mqtt_ka_next_ms)
        return w->mqtt_ka_next_ms;
    for (it = w->mqtt_ka.next; it != &w->mqtt_ka; it = nx) {
        struct conn *c = list_entry(it, struct conn, l_idle);
        int64_t deadline;

        nx = it->next;
        if (c->flags & CONN_F_THROTTLED)
            c->active_ms = w->now_ms; /* the server is the one behind */
        deadline = c->active_ms + c->mq->ka_ms;
        if (deadline > w->now_ms) {
            if (deadline < next)
                next = deadline;
            continue;
        }
        list_del(&c->l_idle);
        atomic_fetch_add_explicit(&w->stats.idle_closed, 1,
                                  memory_order_relaxed);
        conn_close_later(c, "keep alive expired");
    }
    w->mqtt_ka_next_ms = next;
    return next;
}

void
conn_mqtt_evicted(struct worker *w)
{
    void *v[EVICT_BATCH];
    size_t n, i;

    do {
        n = mqtt_sessions_evicted(w->sessions, &w->mbox, v, EVICT_BATCH);
        for (i = 0; i < n; i++)
            conn_close_later(v[i], "client id taken over");
        atomic_fetch_add_explicit(&w->stats.mqtt_takeovers, n,
                                  memory_order_relaxed);
    } while (n == EVICT_BATCH);
}
