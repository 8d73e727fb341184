/*
 * conn: one sensor connection on a worker's loop: reading and framing its
 * bytes, one line at a time, into the worker's current batch; its replies
 * (cumulative "OK n", "ERR line reason", the original's "Dados recebidos
 * com sucesso."); its end. The state diagram is in worker_internal.h.
 *
 * Framing invariant: after conn_process() returns without throttling,
 * c->in holds at most one partial line of at most max_line bytes (longer
 * ones are refused and skipped), so a connection costs no input buffer
 * unless it is in the middle of a line. A connection whose first byte is
 * an MQTT CONNECT's (0x10, never the start of a line) is handed to
 * conn_mqtt.c, which frames packets instead (conn_input).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/auth.h"
#include "server/worker_internal.h"
#include "util/clock.h"
#include "util/tls.h"

#define ORIGINAL_REPLY "Dados recebidos com sucesso."
/* The one plain-text answer of a TLS port (docs/security.md 2.3). */
#define TLS_REQUIRED "ERR tls required\n"

enum line_rc { LINE_OK = 0, LINE_AGAIN = 1, LINE_STOP = 2 };

static void
peer_strings(struct conn *c)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[NET_HOST_LEN];
    int port;

    if (getpeername(c->fd, (struct sockaddr *)&ss, &len) == 0) {
        net_addr_host((struct sockaddr *)&ss, host, sizeof(host), &port);
        net_addr_str((struct sockaddr *)&ss, c->peer, sizeof(c->peer));
        /* The Python original printed its address tuple. */
        snprintf(c->peer_log, sizeof(c->peer_log), "('%s', %d)", host, port);
    } else {
        snprintf(c->peer, sizeof(c->peer), "?");
        snprintf(c->peer_log, sizeof(c->peer_log), "('?', 0)");
    }
    len = sizeof(ss);
    if (getsockname(c->fd, (struct sockaddr *)&ss, &len) == 0) {
        net_addr_host((struct sockaddr *)&ss, c->local_host,
                      sizeof(c->local_host), &port);
        c->local_port = (uint16_t)port;
    }
}

struct conn *
conn_new(struct worker *w, int fd)
{
    struct conn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->w = w;
    c->fd = fd;
    c->ok_off = SIZE_MAX;
    c->active_ms = w->now_ms;
    c->accepted_ms = w->now_ms;
    if (w->conf->max_conn_age_ms > 0)
        /* Up to 10 % earlier, so connections accepted together (after a
         * restart) do not all reconnect at the same moment. */
        c->age_limit_ms = w->conf->max_conn_age_ms -
                          (int64_t)((uint64_t)random() %
                                    (uint64_t)(w->conf->max_conn_age_ms / 10 +
                                               1));
    list_init(&c->l_all);
    list_init(&c->l_idle);
    list_init(&c->l_silence);
    list_init(&c->l_flush);
    list_init(&c->l_throttle);
    list_init(&c->l_close);
    list_init(&c->l_hs);
    peer_strings(c);
    if (w->sh->tls != NULL) {
        c->tls = tls_new(w->sh->tls, fd, NULL);
        if (c->tls == NULL) {
            free(c);
            return NULL;
        }
    }
    return c;
}

void
conn_free(struct conn *c)
{
    free(c->in);
    free(c->out);
    free(c->http_host);
    free(c->auth_sensor);
    conn_mqtt_free(c);
    tls_free(c->tls);
    free(c);
}

/* A draining connection closes once nothing is left to wait for: no batch
 * holds its lines, nothing is throttled, every reply is written. */
static void
maybe_finish(struct conn *c)
{
    if ((c->flags & CONN_F_DRAINING) && !(c->flags & CONN_F_CLOSING) &&
        conn_drained(c))
        conn_close_later(c, (c->flags & CONN_F_EOF) ? "closed by peer"
                                                    : "server stopping");
}

/* ---- replies ---------------------------------------------------------- */

/* Make room for n more reply bytes; false if the client has left more than
 * CONN_OUT_MAX unread (then it is closed). */
static bool
out_reserve(struct conn *c, size_t n)
{
    size_t need = c->out_len + n, cap;
    char *p;

    if (need <= c->out_cap)
        return true;
    if (need > CONN_OUT_MAX) {
        conn_close_later(c, "not reading its replies");
        return false;
    }
    cap = c->out_cap ? c->out_cap : 256;
    while (cap < need)
        cap *= 2;
    if (cap > CONN_OUT_MAX)
        cap = CONN_OUT_MAX;
    p = realloc(c->out, cap);
    if (p == NULL) {
        conn_close_later(c, "out of memory");
        return false;
    }
    c->out = p;
    c->out_cap = cap;
    return true;
}

static void
out_schedule(struct conn *c)
{
    if (!list_linked(&c->l_flush))
        list_add_tail(&c->w->flush, &c->l_flush);
}

static void
out_append(struct conn *c, const char *p, size_t n)
{
    if (c->flags & CONN_F_CLOSED)
        return;
    if (!out_reserve(c, n))
        return;
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
    out_schedule(c);
}

void
conn_out(struct conn *c, const void *p, size_t n)
{
    out_append(c, p, n);
}

static void
out_printf(struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
out_printf(struct conn *c, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    out_append(c, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void
reply_err(struct conn *c, uint64_t lineno, const char *reason)
{
    /* An ERR must not jump ahead of the OK before it, so the trailing OK
     * is no longer the last reply and cannot be coalesced any more. */
    out_printf(c, "ERR %llu %s\n", (unsigned long long)lineno, reason);
    c->ok_off = SIZE_MAX;
}

void
conn_ack(struct conn *c, uint64_t n_accepted, uint32_t n_orig)
{
    uint32_t i;

    if (c->flags & CONN_F_CLOSED)
        return;
    if (c->mq != NULL) {
        conn_mqtt_ack(c, n_accepted);
        return;
    }
    if (n_accepted > c->n_acked) {
        c->n_acked = n_accepted;
        /* Coalesce: replace an OK that has not started going out. */
        if (c->ok_off != SIZE_MAX && c->ok_off >= c->out_pos)
            c->out_len = c->ok_off;
        c->ok_off = c->out_len;
        out_printf(c, "OK %llu\n", (unsigned long long)c->n_acked);
    }
    for (i = 0; i < n_orig; i++)
        out_append(c, ORIGINAL_REPLY, sizeof(ORIGINAL_REPLY) - 1);
}

/* ---- byte I/O: the socket, or TLS over it ------------------------------ */

/*
 * recv() or tls_read(), with recv()'s contract: bytes, 0 at the end of the
 * stream, or -1 with errno (EAGAIN: try again on the next event). A TLS
 * read may have to wait for writability (a TLS 1.3 KeyUpdate answer that
 * did not fit): then EPOLLOUT is armed and conn_on_io reads again on it.
 */
static ssize_t
conn_recv(struct conn *c, void *buf, size_t len)
{
    ssize_t n;

    if (c->tls == NULL)
        return recv(c->fd, buf, len, 0);
    n = tls_read(c->tls, buf, len);
    if (n >= 0)
        return n;
    if (n == -EAGAIN && tls_want_write(c->tls))
        loop_mod(c->w->loop, &c->io, c->io.events | EPOLLOUT);
    errno = (int)-n;
    return -1;
}

/* send() or tls_write(), with send()'s contract. */
static ssize_t
conn_send(struct conn *c, const void *buf, size_t len)
{
    ssize_t n;

    if (c->tls == NULL)
        return send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    n = tls_write(c->tls, buf, len);
    if (n >= 0)
        return n;
    /* OpenSSL has sealed these bytes into a record that waits for the
     * socket: they must go out as they are, so a trailing "OK n" among
     * them can no longer be replaced by a newer one (conn_ack). */
    if (n == -EAGAIN)
        c->ok_off = SIZE_MAX;
    errno = (int)-n;
    return -1;
}

/* A blocked write waits for EPOLLOUT (plain TCP always; TLS unless it
 * waits for a read, which EPOLLIN delivers: conn_on_io flushes then). */
static bool
send_waits_for_out(const struct conn *c)
{
    return c->tls == NULL || tls_want_write(c->tls);
}

void
conn_flush(struct conn *c)
{
    ssize_t n;

    if (list_linked(&c->l_flush))
        list_del(&c->l_flush);
    if (c->flags & CONN_F_CLOSED)
        return;
    if (c->tls != NULL && !tls_established(c->tls))
        return; /* nothing is queued before the handshake ends */
    while (c->out_pos < c->out_len) {
        n = conn_send(c, c->out + c->out_pos, c->out_len - c->out_pos);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                if (send_waits_for_out(c))
                    loop_mod(c->w->loop, &c->io, c->io.events | EPOLLOUT);
                return;
            }
            conn_close_later(c, "write error");
            return;
        }
        c->out_pos += (size_t)n;
    }
    /* All out: give the buffer back, idle connections hold none. */
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_pos = c->out_cap = 0;
    c->ok_off = SIZE_MAX;
    if (c->io.events & EPOLLOUT)
        loop_mod(c->w->loop, &c->io, c->io.events & ~(uint32_t)EPOLLOUT);
    maybe_finish(c);
}

/* ---- HTTP on the sensor port ------------------------------------------ */

static bool
host_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == ':' ||
           ch == '[' || ch == ']';
}

/* Keep the Host header's host part, for the redirect. */
static void
http_header(struct conn *c, const char *p, size_t len)
{
    size_t i, hlen;
    const char *h;

    if (len < 5 || strncasecmp(p, "host:", 5) != 0 || c->http_host != NULL)
        return;
    h = p + 5;
    hlen = len - 5;
    while (hlen > 0 && (*h == ' ' || *h == '\t')) {
        h++;
        hlen--;
    }
    /* Drop the port: the dashboard has its own. */
    if (hlen > 0 && h[0] == '[') {
        const char *rb = memchr(h, ']', hlen);

        if (rb != NULL)
            hlen = (size_t)(rb - h) + 1;
    } else {
        const char *colon = memchr(h, ':', hlen);

        if (colon != NULL)
            hlen = (size_t)(colon - h);
    }
    if (hlen == 0 || hlen > NET_HOST_LEN)
        return;
    for (i = 0; i < hlen; i++)
        if (!host_char_ok(h[i]))
            return;
    c->http_host = strndup(h, hlen);
}

/* Answer a browser that opened the sensor port, then close. */
static void
http_reply(struct conn *c)
{
    char body[512], head[1024], url[NET_HOST_LEN * 2 + 32];
    int port = c->w->sh->http_port;
    const char *host = c->http_host;
    int nb, nh;

    if (host == NULL)
        host = c->local_host;
    if (port > 0) {
        if (strchr(host, ':') != NULL && host[0] != '[')
            snprintf(url, sizeof(url), "http://[%s]:%d/", host, port);
        else
            snprintf(url, sizeof(url), "http://%s:%d/", host, port);
        nb = snprintf(body, sizeof(body),
                      "This is the sensornet sensor port: it takes readings "
                      "as lines of text, not HTTP.\nThe dashboard is at "
                      "%s\n",
                      url);
        nh = snprintf(head, sizeof(head),
                      "HTTP/1.0 302 Found\r\nLocation: %s\r\n"
                      "Content-Type: text/plain; charset=utf-8\r\n"
                      "Content-Length: %d\r\nConnection: close\r\n\r\n",
                      url, nb);
    } else {
        nb = snprintf(body, sizeof(body),
                      "This is the sensornet sensor port: it takes readings "
                      "as lines of text, not HTTP.\nThe HTTP dashboard is "
                      "turned off on this server (--http).\n");
        nh = snprintf(head, sizeof(head),
                      "HTTP/1.0 400 Bad Request\r\n"
                      "Content-Type: text/plain; charset=utf-8\r\n"
                      "Content-Length: %d\r\nConnection: close\r\n\r\n",
                      nb);
    }
    out_append(c, head, (size_t)nh);
    out_append(c, body, (size_t)nb);
    conn_close_later(c, "HTTP request on the sensor port");
}

/* ---- lines -------------------------------------------------------------- */

static void
log_received_raw(struct conn *c, const char *p, size_t len)
{
    struct worker *w = c->w;
    char *dst;
    size_t need, n;
    const char *stamp;

    if (!w->log_on)
        return;
    need = LOGFILE_STAMP_LEN + 32 + sizeof(c->peer_log) + 4 * len + 2;
    dst = batch_log_reserve(w->cur, need);
    if (dst == NULL) {
        atomic_fetch_add_explicit(&w->stats.log_lines_dropped, 1,
                                  memory_order_relaxed);
        return;
    }
    stamp = logfile_stamp(&w->stamp, w->now_real_ns);
    n = (size_t)snprintf(dst, need, "%sRecebido de %s: ", stamp, c->peer_log);
    n += proto_escape_line(p, len, dst + n, need - n);
    dst[n++] = '\n';
    batch_log_commit(w->cur, n);
}

static void
log_reading(struct conn *c, const struct proto_reading *r)
{
    struct worker *w = c->w;
    char *dst;
    size_t n, room = LOG_PER_READING;
    const char *stamp;

    dst = batch_log_reserve(w->cur, room);
    if (dst == NULL) {
        atomic_fetch_add_explicit(&w->stats.log_lines_dropped, 1,
                                  memory_order_relaxed);
        return;
    }
    stamp = logfile_stamp(&w->stamp, w->now_real_ns);
    /* The prefix without snprintf: it is per reading. */
    memcpy(dst, stamp, LOGFILE_STAMP_LEN);
    n = LOGFILE_STAMP_LEN;
    memcpy(dst + n, "Recebido de ", 12);
    n += 12;
    {
        size_t pl = strlen(c->peer_log);

        memcpy(dst + n, c->peer_log, pl);
        n += pl;
    }
    dst[n++] = ':';
    dst[n++] = ' ';
    n += proto_format_human(r, dst + n, room - n - 1);
    if (n > room - 1)
        n = room - 1;
    dst[n++] = '\n';
    batch_log_commit(w->cur, n);
}

/* Room in the current batch for one line of len bytes. */
static bool
line_room(struct conn *c, size_t len)
{
    size_t log_bytes = 0;

    if (c->w->log_on) {
        log_bytes = (size_t)PROTO_MAX_FIELDS * LOG_PER_READING;
        if (4 * len + 256 > log_bytes)
            log_bytes = 4 * len + 256;
    }
    return worker_batch_room(c->w, PROTO_MAX_FIELDS, log_bytes);
}

static void
add_readings(struct conn *c, const struct proto_line *pl)
{
    struct worker *w = c->w;
    size_t i;

    for (i = 0; i < pl->n; i++) {
        batch_add(w->cur, &pl->r[i], pl->has_ts,
                  pl->has_ts ? pl->ts_ns : w->now_real_ns, w->now_real_ns,
                  c->peer);
        if (w->log_on)
            log_reading(c, &pl->r[i]);
    }
    atomic_fetch_add_explicit(&w->stats.readings, pl->n,
                              memory_order_relaxed);
    /* HTTP API hook (presence.h): the sensor this connection sends now;
     * the registry is locked only when it changes. */
    if (pl->n > 0 &&
        !presence_is(c->pres, pl->r[0].sensor.p, pl->r[0].sensor.len))
        c->pres = presence_switch(w->sh->presence, c->pres, pl->r[0].sensor.p,
                                  pl->r[0].sensor.len);
}

static void
ack_later(struct conn *c, uint32_t n_orig)
{
    if (batch_ack(c->w->cur, c, c->n_accepted, n_orig))
        c->refs++;
}

void
conn_accept_line(struct conn *c, const struct proto_line *pl)
{
    c->n_accepted++;
    add_readings(c, pl);
    ack_later(c, 0);
    atomic_fetch_add_explicit(&c->w->stats.lines_accepted, 1,
                              memory_order_relaxed);
}

static void
refuse_line(struct conn *c, uint64_t lineno, int rc)
{
    struct worker *w = c->w;

    reply_err(c, lineno, proto_strerror(rc));
    atomic_fetch_add_explicit(&w->stats.lines_refused, 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&w->stats.refused_by[-rc], 1,
                              memory_order_relaxed); /* /metrics */
}

/* With --tokens: every reading of the line is the connection's sensor. */
static bool
own_readings(const struct conn *c, const struct proto_line *pl)
{
    size_t i;

    for (i = 0; i < pl->n; i++)
        if (pl->r[i].sensor.len != c->auth_len ||
            memcmp(pl->r[i].sensor.p, c->auth_sensor, c->auth_len) != 0)
            return false;
    return true;
}

static void
auth_reply(struct conn *c, const char *msg)
{
    out_append(c, msg, strlen(msg));
    c->ok_off = SIZE_MAX; /* not an OK: never coalesced away */
}

/*
 * "AUTH <sensor> <token>" (docs/protocol.md 8): answered at once, never
 * numbered. A wrong token closes the connection, so each guess costs one.
 */
static void
conn_auth(struct conn *c, const char *p, size_t len)
{
    const struct auth *a = c->w->sh->auth;
    struct proto_str sensor, token;
    int rc;

    if (a == NULL) {
        auth_reply(c, "AUTH OK\n");
        return;
    }
    rc = auth_parse_line(p, len, &sensor, &token);
    if (rc < 0 || !auth_check(a, sensor.p, sensor.len, token.p, token.len)) {
        auth_reply(c, "AUTH ERR bad credentials\n");
        conn_close_later(c, "bad credentials");
        return;
    }
    if (c->auth_sensor != NULL) {
        if (sensor.len != c->auth_len ||
            memcmp(sensor.p, c->auth_sensor, c->auth_len) != 0)
            auth_reply(c, "AUTH ERR already authenticated\n");
        else
            auth_reply(c, "AUTH OK\n");
        return;
    }
    c->auth_sensor = strndup(sensor.p, sensor.len);
    if (c->auth_sensor == NULL) {
        conn_close_later(c, "out of memory");
        return;
    }
    c->auth_len = sensor.len;
    auth_reply(c, "AUTH OK\n");
}

/* One complete line (p, len) without its line end. */
static enum line_rc
conn_line(struct conn *c, const char *p, size_t len)
{
    struct worker *w = c->w;
    uint64_t lineno;
    int rc;

    if (c->flags & CONN_F_HTTP) {
        if (len == 0) {
            http_reply(c);
            return LINE_STOP;
        }
        http_header(c, p, len);
        return LINE_OK;
    }
    if (len == 0)
        return LINE_OK; /* blank lines are not counted */
    if (len > 5 && p[0] == 'A' && memcmp(p, "AUTH", 4) == 0 &&
        (p[4] == ' ' || p[4] == '\t')) {
        conn_auth(c, p, len);
        return (c->flags & CONN_F_CLOSING) ? LINE_STOP : LINE_OK;
    }
    if (len == 4 && memcmp(p, "PING", 4) == 0) {
        /* Application keepalive: answered at once, never counted, so a
         * client learns within one round trip that the path is alive. */
        out_append(c, "PONG\n", 5);
        c->ok_off = SIZE_MAX;
        return LINE_OK;
    }
    lineno = c->n_lines + 1;
    if (len > w->conf->max_line) {
        c->n_lines++;
        reply_err(c, lineno, proto_strerror(PROTO_E_TOOLONG));
        atomic_fetch_add_explicit(&w->stats.lines_refused, 1,
                                  memory_order_relaxed);
        atomic_fetch_add_explicit(&w->stats.refused_by[-PROTO_E_TOOLONG], 1,
                                  memory_order_relaxed); /* /metrics */
        return LINE_OK;
    }
    if (lineno == 1 && c->n_orig == 0 && proto_is_http_request(p, len)) {
        c->flags |= CONN_F_HTTP;
        atomic_fetch_add_explicit(&w->stats.http_on_sensor_port, 1,
                                  memory_order_relaxed);
        return LINE_OK;
    }
    if (!line_room(c, len))
        return LINE_AGAIN;
    c->n_lines++;
    rc = proto_parse_line(p, len, &w->popts, w->pl);
    if (rc == PROTO_E_EMPTY) {
        c->n_lines--; /* only spaces, or a '#' comment: not a line */
        return LINE_OK;
    }
    if (w->sh->auth != NULL && c->auth_sensor == NULL) {
        /* Not logged either: log.txt is no place for strangers' bytes. */
        refuse_line(c, lineno, PROTO_E_NOAUTH);
        return LINE_OK;
    }
    if (rc != PROTO_OK) {
        refuse_line(c, lineno, rc);
        log_received_raw(c, p, len);
        return LINE_OK;
    }
    if (w->sh->auth != NULL && !own_readings(c, w->pl)) {
        refuse_line(c, lineno, PROTO_E_FORBIDDEN);
        return LINE_OK;
    }
    conn_accept_line(c, w->pl);
    return LINE_OK;
}

static void
silence_track(struct conn *c)
{
    struct worker *w = c->w;

    if ((c->flags & CONN_F_LINEMODE) || c->in_len == 0 || c->mq != NULL) {
        if (list_linked(&c->l_silence))
            list_del(&c->l_silence);
        return;
    }
    c->silence_ms = w->now_ms;
    list_move_tail(&w->silence, &c->l_silence);
}

/*
 * Frame and handle the lines in (buf, len). Returns the bytes consumed:
 * all complete lines, or fewer when the worker has no batch room left
 * (throttled). The unconsumed rest is a partial line or the lines that
 * wait for room.
 */
static size_t
conn_process(struct conn *c, const char *buf, size_t len)
{
    const char *p = buf, *end = buf + len, *nl;
    size_t llen;
    enum line_rc rc;

    while (p < end && !(c->flags & CONN_F_CLOSING)) {
        nl = memchr(p, '\n', (size_t)(end - p));
        if (c->flags & CONN_F_SKIP) {
            if (nl == NULL)
                return len;
            c->flags &= ~(unsigned)CONN_F_SKIP;
            p = nl + 1;
            continue;
        }
        if (nl == NULL) {
            size_t rest = (size_t)(end - p);
            size_t cap = (c->flags & CONN_F_HTTP) ? CONN_HTTP_MAX
                                                  : c->w->conf->max_line + 1;

            if (rest <= cap)
                break;
            if (c->flags & CONN_F_HTTP) {
                conn_close_later(c, "HTTP request head too long");
                return len;
            }
            /* Too long already: refuse now, skip to its end. */
            c->flags |= CONN_F_SKIP | CONN_F_LINEMODE;
            c->n_lines++;
            reply_err(c, c->n_lines, proto_strerror(PROTO_E_TOOLONG));
            atomic_fetch_add_explicit(&c->w->stats.lines_refused, 1,
                                      memory_order_relaxed);
            atomic_fetch_add_explicit(
                &c->w->stats.refused_by[-PROTO_E_TOOLONG], 1,
                memory_order_relaxed); /* /metrics */
            return len;
        }
        llen = (size_t)(nl - p);
        if (llen > 0 && p[llen - 1] == '\r')
            llen--;
        c->flags |= CONN_F_LINEMODE;
        rc = conn_line(c, p, llen);
        if (rc == LINE_AGAIN)
            return (size_t)(p - buf);
        if (rc == LINE_STOP)
            return len;
        p = nl + 1;
    }
    return (size_t)(p - buf);
}

/* Keep (p, n) as c->in, the connection's pending bytes. */
static bool
keep_pending(struct conn *c, const char *p, size_t n)
{
    char *q;

    if (n == 0) {
        free(c->in);
        c->in = NULL;
        c->in_len = c->in_cap = 0;
        return true;
    }
    if (n > c->in_cap) {
        q = realloc(c->in, n);
        if (q == NULL) {
            conn_close_later(c, "out of memory");
            return false;
        }
        c->in = q;
        c->in_cap = n;
    }
    memmove(c->in, p, n);
    c->in_len = n;
    return true;
}

/* Frame (buf, len) as lines, or as MQTT packets on an MQTT connection;
 * returns the bytes consumed (conn_process). */
static size_t
conn_input(struct conn *c, const char *buf, size_t len)
{
    if (c->mq == NULL && len > 0 && (unsigned char)buf[0] == 0x10 &&
        !(c->flags & (CONN_F_LINEMODE | CONN_F_HTTP)) && c->n_orig == 0 &&
        conn_mqtt_start(c) < 0) {
        conn_close_later(c, "out of memory");
        return len;
    }
    if (c->mq != NULL)
        return conn_mqtt_process(c, buf, len);
    return conn_process(c, buf, len);
}

void
conn_throttle(struct conn *c)
{
    struct worker *w = c->w;

    if (c->flags & CONN_F_THROTTLED)
        return;
    c->flags |= CONN_F_THROTTLED;
    loop_mod(w->loop, &c->io, c->io.events & ~(uint32_t)EPOLLIN);
    list_add_tail(&w->throttled, &c->l_throttle);
}

/* What a connection that stops reading still holds: after the peer's EOF
 * a final line without its line end counts as a line (the peer said it is
 * complete); bytes from a client that never sent a line end count as its
 * original-form message if they are one. A partial line of a connection
 * the server stops (shutdown, --max-connection-age) may be cut anywhere:
 * it is dropped unacknowledged, and the client sends it again. */
static void
finish_pending(struct conn *c)
{
    if (c->in_len == 0 || c->mq != NULL)
        return; /* MQTT: a partial packet is dropped, never acknowledged */
    if ((c->flags & CONN_F_LINEMODE) && !(c->flags & CONN_F_EOF))
        return;
    if (c->flags & CONN_F_LINEMODE) {
        enum line_rc rc = conn_line(c, c->in, c->in_len);

        if (rc == LINE_OK)
            keep_pending(c, NULL, 0);
        else if (rc == LINE_AGAIN)
            conn_throttle(c);
    } else {
        conn_silence_expired(c);
    }
}

bool
conn_resume(struct conn *c)
{
    size_t used;

    c->flags &= ~(unsigned)CONN_F_THROTTLED;
    if (c->in_len > 0) {
        used = conn_input(c, c->in, c->in_len);
        if (!keep_pending(c, c->in + used, c->in_len - used) ||
            (c->flags & CONN_F_CLOSING))
            return true;
        if (c->flags & CONN_F_THROTTLED) /* MQTT stopped again */
            return !list_linked(&c->l_throttle);
        if (c->mq == NULL && c->in_len > 0 &&
            memchr(c->in, '\n', c->in_len) != NULL) {
            conn_throttle(c);
            return false;
        }
    }
    if (c->flags & CONN_F_DRAINING) {
        finish_pending(c);
        maybe_finish(c);
        return true;
    }
    silence_track(c);
    loop_mod(c->w->loop, &c->io, c->io.events | EPOLLIN);
    return true;
}

static void
conn_eof(struct conn *c)
{
    c->flags |= CONN_F_EOF;
    conn_drain(c);
}

static void
conn_read(struct conn *c)
{
    struct worker *w = c->w;
    char *buf = w->rbuf;
    size_t have, used;
    ssize_t n;
    int i;

    for (i = 0; i < CONN_READ_BUDGET; i++) {
        have = c->in_len;
        if (have > 0)
            memcpy(buf, c->in, have);
        n = conn_recv(c, buf + have, WORKER_RBUF - have);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                conn_close_later(c, "read error");
            return;
        }
        if (n == 0) {
            /* TLS ended without close_notify: whoever cut the stream may
             * have cut it inside a line, so a last partial one is not
             * taken as complete (finish_pending) but dropped. */
            if (c->tls != NULL && !tls_eof_clean(c->tls))
                keep_pending(c, NULL, 0);
            conn_eof(c);
            return;
        }
        atomic_fetch_add_explicit(&w->stats.bytes_in, (uint64_t)n,
                                  memory_order_relaxed);
        w->now_real_ns = clock_real_ns();
        c->active_ms = w->now_ms;
        if (!(c->flags & (CONN_F_DRAINING | CONN_F_KEEPALIVE)))
            list_move_tail(&w->idle, &c->l_idle);
        used = conn_input(c, buf, have + (size_t)n);
        if (!keep_pending(c, buf + used, have + (size_t)n - used))
            return;
        /* MQTT: DISCONNECT drains; a missing batch or PUBACK slot stops. */
        if (c->flags & (CONN_F_CLOSING | CONN_F_DRAINING | CONN_F_THROTTLED))
            return;
        if (c->mq == NULL && c->in_len > 0 &&
            memchr(c->in, '\n', c->in_len) != NULL) {
            /* Complete lines left over: the batches are all in use. */
            conn_throttle(c);
            return;
        }
        silence_track(c);
        /* A TLS read returns one record (16 KiB at most) however much
         * the socket holds: only EAGAIN says it is empty. */
        if ((size_t)n < WORKER_RBUF - have && c->tls == NULL)
            return; /* the socket is empty for now */
    }
}

/* ---- TLS handshake ------------------------------------------------------ */

/* With --tls-ca and --tokens: a verified client certificate's subject CN
 * is the sensor the connection speaks for, as if it had sent AUTH
 * (docs/security.md 4). A CN that cannot be a sensor id gives nothing. */
static void
identity_from_cert(struct conn *c)
{
    char cn[PROTO_MAX_NAME + 1];
    int n;

    /* MQTT (--mqtt-listen) authenticates with CONNECT's user name and
     * password instead (conn_mqtt.c). */
    if (c->w->sh->auth == NULL || !tls_ctx_verifies_peer(c->w->sh->tls) ||
        c->mq != NULL)
        return;
    n = tls_peer_cn(c->tls, cn, sizeof(cn));
    if (n <= 0)
        return;
    c->auth_sensor = strndup(cn, (size_t)n);
    if (c->auth_sensor == NULL) {
        conn_close_later(c, "out of memory");
        return;
    }
    c->auth_len = (size_t)n;
    log_debug("%s: authenticated as '%s' by its certificate", c->peer, cn);
}

/* A failure one peer can cause at will: logged at most every 10 s per
 * worker, with the count of those not shown. */
static void
tls_complain(struct conn *c, const char *what, const char *why)
{
    uint64_t suppressed;

    if (!log_ratelimit(&c->w->tls_rl, c->w->now_ms, 10000, &suppressed))
        return;
    if (suppressed > 0)
        log_warn("%s: %s%s%s (and %llu more TLS failures since the last "
                 "message)", c->peer, what, why[0] ? ": " : "", why,
                 (unsigned long long)suppressed);
    else
        log_warn("%s: %s%s%s", c->peer, what, why[0] ? ": " : "", why);
}

/* Closing with unread bytes sends a reset, which may destroy our last
 * words (a TLS alert, "ERR tls required") before the peer reads them:
 * discard what has arrived (a few reads; more than that gets the reset). */
static void
discard_input(struct conn *c)
{
    int i;

    for (i = 0; i < 4; i++)
        if (recv(c->fd, c->w->rbuf, WORKER_RBUF, MSG_DONTWAIT) <= 0)
            break;
}

/* HANDSHAKE (worker_internal.h): advance it; READING when done. */
static void
conn_handshake(struct conn *c)
{
    struct worker *w = c->w;
    char why[TLS_ERR_LEN];
    uint32_t want;
    int rc;

    rc = tls_handshake(c->tls, why, sizeof(why));
    if (rc == -EAGAIN) {
        want = EPOLLIN | (tls_want_write(c->tls) ? EPOLLOUT : 0);
        if (c->io.events != want)
            loop_mod(w->loop, &c->io, want);
        return;
    }
    if (rc == -EPROTONOSUPPORT) {
        /* Nothing was read and nothing sent yet: the send buffer takes
         * this one line whole. */
        (void)send(c->fd, TLS_REQUIRED, sizeof(TLS_REQUIRED) - 1,
                   MSG_NOSIGNAL | MSG_DONTWAIT);
        discard_input(c);
        tls_complain(c, "plain text on a TLS port, answered "
                        "\"ERR tls required\"", "");
        conn_close_later(c, "plain text on a TLS port");
        return;
    }
    if (rc < 0) {
        /* A bare connect and close (port scans, load balancer checks)
         * is no failure worth a warning. */
        if (rc == -ECONNRESET)
            log_debug("%s: TLS handshake: %s", c->peer, why);
        else
            tls_complain(c, "TLS handshake failed", why);
        discard_input(c); /* keep the alert OpenSSL sent */
        conn_close_later(c, "TLS handshake failed");
        return;
    }
    list_del(&c->l_hs);
    if (c->io.events != EPOLLIN)
        loop_mod(w->loop, &c->io, EPOLLIN);
    log_debug("%s: %s established", c->peer, tls_version(c->tls));
    identity_from_cert(c);
}

void
conn_on_io(struct loop_io *io, uint32_t events)
{
    struct conn *c = io->arg;

    if (c->flags & (CONN_F_CLOSING | CONN_F_CLOSED))
        return;
    if (c->tls != NULL) {
        if (!tls_established(c->tls)) {
            conn_handshake(c);
            return;
        }
        /* TLS crosses directions: a write may wait for a read (flush on
         * any event while output is pending), a read for a write (read
         * again when writable). */
        if (c->out_pos < c->out_len)
            events |= EPOLLOUT;
        if (events & EPOLLOUT)
            events |= EPOLLIN;
    }
    if (events & EPOLLOUT)
        conn_flush(c);
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) &&
        !(c->flags & (CONN_F_THROTTLED | CONN_F_DRAINING | CONN_F_CLOSING)))
        conn_read(c);
    else if ((events & (EPOLLHUP | EPOLLERR)) &&
             (c->flags & (CONN_F_DRAINING | CONN_F_THROTTLED)))
        /* epoll reports these even with EPOLLIN off: a throttled or
         * draining connection whose peer is gone would wake the loop
         * forever. Its unparsed bytes were never acknowledged, so the
         * client sends them again. */
        conn_close_later(c, "connection reset");
}

/* ---- the original clients' silence rule ------------------------------- */

void
conn_silence_expired(struct conn *c)
{
    struct worker *w = c->w;
    char last;
    int rc;

    if (list_linked(&c->l_silence))
        list_del(&c->l_silence);
    if ((c->flags & (CONN_F_LINEMODE | CONN_F_CLOSING | CONN_F_THROTTLED)) ||
        c->in_len == 0)
        return;
    if (w->sh->auth != NULL)
        return; /* cannot send AUTH: refused, without an answer */
    /* Only one whole reading that ends with its unit: bytes cut inside
     * the number ("...: 25.3" of "25.34°C") must not pass for a message. */
    last = c->in[c->in_len - 1];
    if ((last >= '0' && last <= '9') || last == '.')
        return;
    rc = proto_parse_text(c->in, c->in_len, w->pl);
    if (rc != PROTO_OK)
        return; /* not one whole reading: wait for a line end */
    if (!line_room(c, c->in_len)) {
        /* Try again at the next tick. */
        c->silence_ms = w->now_ms - w->conf->silence_ms;
        list_add_tail(&w->silence, &c->l_silence);
        return;
    }
    w->now_real_ns = clock_real_ns();
    c->n_orig++;
    add_readings(c, w->pl);
    ack_later(c, 1);
    atomic_fetch_add_explicit(&w->stats.lines_accepted, 1,
                              memory_order_relaxed);
    keep_pending(c, NULL, 0);
}

/* ---- the end ------------------------------------------------------------ */

void
conn_drain(struct conn *c)
{
    struct worker *w = c->w;

    if (c->flags & (CONN_F_DRAINING | CONN_F_CLOSING))
        return;
    c->flags |= CONN_F_DRAINING;
    loop_mod(w->loop, &c->io, c->io.events & ~(uint32_t)EPOLLIN);
    c->drain_ms = w->now_ms;
    list_move_tail(&w->draining_list, &c->l_idle);
    /* A throttled connection finishes when conn_resume() runs. */
    if (!(c->flags & CONN_F_THROTTLED))
        finish_pending(c);
    maybe_finish(c);
}

bool
conn_drained(const struct conn *c)
{
    return c->refs == 0 && !(c->flags & CONN_F_THROTTLED) &&
           c->out_pos == c->out_len;
}

void
conn_close_later(struct conn *c, const char *reason)
{
    struct worker *w = c->w;

    if (c->flags & (CONN_F_CLOSING | CONN_F_CLOSED))
        return;
    c->flags |= CONN_F_CLOSING;
    c->close_reason = reason;
    list_add_tail(&w->closing, &c->l_close);
}

void
conn_close_now(struct conn *c)
{
    struct worker *w = c->w;

    /* Best effort: the last replies (ERR server full, the HTTP answer,
     * final acknowledgements) go out if the socket takes them. */
    if (c->out_pos < c->out_len &&
        (c->tls == NULL || tls_established(c->tls)))
        (void)conn_send(c, c->out + c->out_pos, c->out_len - c->out_pos);
    if (c->tls != NULL) {
        tls_close(c->tls); /* close_notify, if the socket takes it */
        tls_free(c->tls);  /* a zombie waiting for its batches keeps none */
        c->tls = NULL;
    }
    if (list_linked(&c->l_hs))
        list_del(&c->l_hs);
    loop_del(w->loop, &c->io);
    close(c->fd);
    c->fd = -1;
    c->flags |= CONN_F_CLOSED;
    log_debug("closed %s: %s", c->peer, c->close_reason);
    if (list_linked(&c->l_close))
        list_del(&c->l_close);
    if (list_linked(&c->l_idle))
        list_del(&c->l_idle);
    if (list_linked(&c->l_silence))
        list_del(&c->l_silence);
    if (list_linked(&c->l_flush))
        list_del(&c->l_flush);
    if (list_linked(&c->l_throttle))
        list_del(&c->l_throttle);
    worker_conn_closed(w, c);
    if (c->mq != NULL)
        conn_mqtt_closed(c);
    presence_release(w->sh->presence, c->pres); /* HTTP API hook */
    c->pres = NULL;
    free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = 0;
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_pos = c->out_cap = 0;
    if (c->refs == 0) {
        list_del(&c->l_all);
        conn_free(c);
    }
}

void
conn_unref(struct conn *c)
{
    c->refs--;
    if (c->refs == 0 && (c->flags & CONN_F_CLOSED)) {
        list_del(&c->l_all);
        conn_free(c);
        return;
    }
    maybe_finish(c);
}
