/*
 * loadgen: the benchmark load generator. N connections on one epoll loop,
 * one thread, bounded in lines and in time; it stops by itself. It speaks
 * four protocols, so that sensornet and the reference servers are measured
 * by the same program with the same accounting:
 *
 *   line      sensornet line protocol, pipelined: at most --window lines
 *             unacknowledged per connection, counting the cumulative
 *             "OK n" replies (the default). --window 0 sends without
 *             waiting for replies (for bench/discard's drop mode).
 *   original  the original Python client: one text-form message without a
 *             line end, then wait for "Dados recebidos com sucesso.",
 *             then the next message on the same connection.
 *   http      InfluxDB 1.x POST /write, --body-lines lines per request,
 *             one request in flight per connection (keep-alive).
 *   mqtt      MQTT 3.1.1 PUBLISH at QoS 1, one reading per message, at
 *             most --window PUBACKs outstanding per connection.
 *
 *   loadgen --server 127.0.0.1:5000 --conns 100 --lines 100000
 *           [--mode line|original|http|mqtt] [--window 5000]
 *           [--seconds 60] [--warmup 1] [--rate R] [--body-lines 5000]
 *           [--db NAME] [--idle] [--bind 127.0.0.2,127.0.0.3]
 *
 * --rate R paces the whole run at R lines per second in total (round robin
 * over the connections, 1 ms steps); latency is then measured from the
 * moment a line was due, not from when it was written, so a stalled server
 * cannot hide behind a stalled generator (coordinated omission).
 * --idle opens the connections, sends nothing, prints "ready connected=N"
 * once every attempt has settled, and holds them until --seconds or
 * SIGTERM, for memory-per-connection measurements. --bind picks the source
 * addresses round robin (several 127.x give more than 28k connections).
 *
 * Prints one summary line of key=value pairs on stdout:
 *   mode conns connected failed connecting closed sent acked errs
 *   seconds rate
 *   steady_rate lat_n lat_p50_ms lat_p99_ms lat_p999_ms lat_max_ms
 *   connect_ms cpu_s cpu_pct maxrss_kb
 * rate is acked/seconds over the whole run; steady_rate leaves out the
 * first --warmup seconds. cpu_pct is this process's CPU time over the run
 * (100 = one core): the generator must stay well below the server's.
 * Exit status 0 when no line was refused and no connection failed.
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/net.h"

#define MAX_BIND 64
#define MAX_EVENTS 1024
#define LAT_MAX 2000000
/* One write burst per connection and wakeup; also the read scratch. */
#define SCRATCH (256 * 1024)
/* Longest generated line (line protocol or text form), line end included. */
#define LINE_MAX_LEN 96
/* Reply bytes kept between reads (a partial "OK n" or PUBACK). */
#define CARRY 64
/* HTTP response head and error body kept per connection. */
#define HTTP_IN 8192
#define ORIGINAL_REPLY "Dados recebidos com sucesso."
#define ORIGINAL_REPLY_LEN (sizeof(ORIGINAL_REPLY) - 1)

enum mode { M_LINE, M_ORIGINAL, M_HTTP, M_MQTT };

enum lstate {
    S_CONNECTING = 0, /* TCP handshake in progress */
    S_HANDSHAKE,      /* MQTT: CONNECT sent, waiting for CONNACK */
    S_READY,          /* sending and reading replies */
    S_DONE,           /* closed (finished, failed or closed by the peer) */
};

struct lconn {
    int fd;
    uint32_t id;
    uint8_t state;
    bool in_flight;   /* original/http: a message awaits its reply */
    uint32_t events;  /* epoll interest currently registered */
    uint64_t sent;    /* lines generated */
    uint64_t acked;   /* lines acknowledged (or written, --window 0) */
    uint64_t errs;
    uint64_t target;  /* lines to send in all */
    /* Bytes generated but not yet written (a short write), heap. */
    char *out;
    size_t out_len, out_pos, out_cap;
    uint64_t out_lines; /* --window 0: lines in out, counted when written */
    /* Reply bytes carried over to the next read. */
    char carry[CARRY];
    uint32_t carry_len;
    char *hin; /* http: response bytes */
    size_t hin_len;
    uint32_t req_lines; /* http: lines in the request in flight */
    /* Latency: one line per connection is timed at a time. */
    uint64_t probe_line; /* 0: none */
    int64_t probe_ns;
};

struct opts {
    enum mode mode;
    long conns;
    uint64_t lines, window, body_lines;
    double seconds, warmup, rate;
    bool idle;
    const char *db;
};

static volatile sig_atomic_t stop;
static float *lat;
static size_t n_lat;
static char *scratch;
static int ep = -1;
static struct opts o;
static int64_t base_ts, t0;
static uint64_t total_sent, total_acked;
static long n_connected, n_failed, n_closed, n_done, n_connecting;
static bool warned_http;
static char first_failure[160];

static void
on_sig(int sig)
{
    (void)sig;
    stop = 1;
}

static int
cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;

    return (x > y) - (x < y);
}

static double
pct(double p)
{
    size_t i;

    if (n_lat == 0)
        return 0;
    i = (size_t)ceil(p / 100.0 * (double)n_lat);
    if (i > 0)
        i--;
    if (i >= n_lat)
        i = n_lat - 1;
    return lat[i];
}

static void
lat_add(int64_t from_ns)
{
    if (n_lat < LAT_MAX)
        lat[n_lat++] = (float)((double)(clock_mono_ns() - from_ns) / 1e6);
}

/* ---- formatting ------------------------------------------------------- */

static char *
put_u64(char *p, uint64_t v)
{
    char tmp[24];
    int n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

static char *
put_str(char *p, const char *s, size_t len)
{
    memcpy(p, s, len);
    return p + len;
}

#define PUT_LIT(p, s) put_str((p), (s), sizeof(s) - 1)

/* Line seq of connection c's readings, in line protocol, without its line
 * end: "bench,sensor=lg12 temperature=21.34 1700000000000000123". */
static char *
put_reading(char *p, const struct lconn *c, uint64_t seq)
{
    uint64_t frac = seq % 100;

    p = PUT_LIT(p, "bench,sensor=lg");
    p = put_u64(p, c->id);
    p = PUT_LIT(p, " temperature=");
    p = put_u64(p, seq % 40);
    *p++ = '.';
    *p++ = (char)('0' + frac / 10);
    *p++ = (char)('0' + frac % 10);
    *p++ = ' ';
    return put_u64(p, (uint64_t)base_ts + seq);
}

/* The original's message: "Sensor12 - Temperatura: 21.34°C", no line end. */
static char *
put_original(char *p, const struct lconn *c, uint64_t seq)
{
    uint64_t frac = seq % 100;

    p = PUT_LIT(p, "Sensor");
    p = put_u64(p, c->id);
    p = PUT_LIT(p, " - Temperatura: ");
    p = put_u64(p, seq % 40);
    *p++ = '.';
    *p++ = (char)('0' + frac / 10);
    *p++ = (char)('0' + frac % 10);
    return PUT_LIT(p, "\xc2\xb0"
                      "C");
}

/* An MQTT 3.1.1 PUBLISH, QoS 1, topic "sensors/lg<id>/temperature"
 * (docs/protocol.md 7.3), packet id from seq, payload the bare number
 * "21.34"; the reading is stamped on arrival. */
static char *
put_publish(char *p, const struct lconn *c, uint64_t seq)
{
    char topic[48], payload[16], *q;
    size_t tlen, plen, rem;
    uint64_t frac = seq % 100;
    uint16_t pid = (uint16_t)(seq % 65535 + 1);

    q = put_u64(PUT_LIT(topic, "sensors/lg"), c->id);
    tlen = (size_t)(PUT_LIT(q, "/temperature") - topic);
    q = put_u64(payload, seq % 40);
    *q++ = '.';
    *q++ = (char)('0' + frac / 10);
    *q++ = (char)('0' + frac % 10);
    plen = (size_t)(q - payload);
    rem = 2 + tlen + 2 + plen;

    *p++ = 0x32; /* PUBLISH, QoS 1 */
    /* Remaining length: under 16384, so at most two bytes. */
    if (rem < 128) {
        *p++ = (char)rem;
    } else {
        *p++ = (char)(0x80 | (rem & 0x7f));
        *p++ = (char)(rem >> 7);
    }
    *p++ = (char)(tlen >> 8);
    *p++ = (char)(tlen & 0xff);
    p = put_str(p, topic, tlen);
    *p++ = (char)(pid >> 8);
    *p++ = (char)(pid & 0xff);
    return put_str(p, payload, plen);
}

/* ---- connections ------------------------------------------------------ */

static void
set_events(struct lconn *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};

    if (c->state == S_DONE || c->events == events)
        return;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->events = events;
}

static void
conn_done(struct lconn *c, bool by_peer)
{
    if (c->state == S_DONE)
        return;
    if (c->state == S_CONNECTING)
        n_failed++;
    else if (by_peer)
        n_closed++;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = S_DONE;
    n_done++;
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_pos = c->out_cap = 0;
    free(c->hin);
    c->hin = NULL;
}

static bool
finished(const struct lconn *c)
{
    if (o.idle)
        return false;
    return c->acked >= c->target;
}

/* Write the pending bytes; false if the connection broke. */
static bool
flush_out(struct lconn *c)
{
    while (c->out_pos < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_pos, c->out_len - c->out_pos,
                         MSG_NOSIGNAL);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return true;
            conn_done(c, true);
            return false;
        }
        c->out_pos += (size_t)w;
    }
    c->out_pos = c->out_len = 0;
    if (o.window == 0 && o.mode == M_LINE) {
        c->acked += c->out_lines;
        total_acked += c->out_lines;
        c->out_lines = 0;
    }
    return true;
}

/* Keep (p, n) as the connection's pending output. */
static bool
keep_out(struct lconn *c, const char *p, size_t n, uint64_t lines)
{
    if (n > c->out_cap) {
        char *q = realloc(c->out, n);

        if (q == NULL) {
            fprintf(stderr, "loadgen: out of memory\n");
            exit(1);
        }
        c->out = q;
        c->out_cap = n;
    }
    memcpy(c->out, p, n);
    c->out_len = n;
    c->out_pos = 0;
    c->out_lines = lines;
    return true;
}

/* Send (p, n) now; what the socket does not take waits in c->out. */
static bool
send_or_keep(struct lconn *c, const char *p, size_t n, uint64_t lines)
{
    size_t done = 0;

    while (done < n) {
        ssize_t w = send(c->fd, p + done, n - done, MSG_NOSIGNAL);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            conn_done(c, true);
            return false;
        }
        done += (size_t)w;
    }
    if (done < n)
        return keep_out(c, p + done, n - done, lines);
    if (o.window == 0 && o.mode == M_LINE) {
        c->acked += lines;
        total_acked += lines;
    }
    return true;
}

/* How many more lines connection c may generate now. */
static uint64_t
room(const struct lconn *c)
{
    uint64_t left = c->target - c->sent, in_flight = c->sent - c->acked;

    if (c->state != S_READY || c->out_len > 0 || c->in_flight)
        return 0;
    if (o.mode == M_ORIGINAL)
        return left > 0 ? 1 : 0;
    if (o.mode == M_HTTP) /* one request in flight, of --body-lines */
        return left;
    if (o.window > 0) {
        if (in_flight >= o.window)
            return 0;
        if (left > o.window - in_flight)
            left = o.window - in_flight;
    }
    return left;
}

/* Build one HTTP /write request of n lines into c->out and send it. */
static bool
http_request(struct lconn *c, uint64_t n, int64_t due_ns)
{
    char head[256];
    size_t need = (size_t)n * LINE_MAX_LEN + sizeof(head), hlen, blen;
    char *body, *p;
    uint64_t i;
    int r;

    if (need > c->out_cap) {
        char *q = realloc(c->out, need);

        if (q == NULL) {
            fprintf(stderr, "loadgen: out of memory\n");
            exit(1);
        }
        c->out = q;
        c->out_cap = need;
    }
    body = c->out + sizeof(head);
    p = body;
    for (i = 0; i < n; i++) {
        p = put_reading(p, c, c->sent + i);
        *p++ = '\n';
    }
    blen = (size_t)(p - body);
    r = snprintf(head, sizeof(head),
                 "POST /write?db=%s&precision=ns HTTP/1.1\r\n"
                 "Host: loadgen\r\nContent-Type: text/plain\r\n"
                 "Content-Length: %zu\r\n\r\n",
                 o.db, blen);
    if (r < 0 || (size_t)r >= sizeof(head))
        return false;
    hlen = (size_t)r;
    memcpy(body - hlen, head, hlen);
    c->out_pos = sizeof(head) - hlen;
    c->out_len = sizeof(head) + blen;
    c->sent += n;
    total_sent += n;
    c->req_lines = (uint32_t)n;
    c->in_flight = true;
    c->probe_line = c->sent;
    c->probe_ns = due_ns;
    return flush_out(c);
}

/*
 * Generate up to max lines for c and send them. due_ns is when the first
 * of them was due (the latency origin), step_ns how far apart the next
 * ones are due (0 without --rate). Returns the lines generated.
 */
static uint64_t
produce(struct lconn *c, uint64_t max, int64_t due_ns, double step_ns)
{
    uint64_t n = room(c), i;
    char *p = scratch;

    if (n > max)
        n = max;
    if (n == 0)
        return 0;
    if (o.mode == M_HTTP) {
        if (n > o.body_lines)
            n = o.body_lines;
        http_request(c, n, due_ns);
        return n;
    }
    if (n > SCRATCH / LINE_MAX_LEN)
        n = SCRATCH / LINE_MAX_LEN;
    for (i = 0; i < n; i++) {
        uint64_t seq = c->sent + i;

        if (o.mode == M_MQTT) {
            p = put_publish(p, c, seq);
        } else if (o.mode == M_ORIGINAL) {
            p = put_original(p, c, seq);
        } else {
            p = put_reading(p, c, seq);
            *p++ = '\n';
        }
        if (c->probe_line == 0 && o.window > 0) {
            c->probe_line = seq + 1;
            c->probe_ns = due_ns + (int64_t)(step_ns * (double)i);
        }
    }
    c->sent += n;
    total_sent += n;
    if (o.mode == M_ORIGINAL)
        c->in_flight = true;
    send_or_keep(c, scratch, (size_t)(p - scratch), n);
    return n;
}

static void
update_events(struct lconn *c)
{
    uint32_t ev = EPOLLIN;

    if (c->state == S_DONE)
        return;
    if (c->state == S_CONNECTING || c->out_len > 0 ||
        (o.rate <= 0 && room(c) > 0))
        ev |= EPOLLOUT;
    set_events(c, ev);
}

static void
acked_to(struct lconn *c, uint64_t n)
{
    if (n <= c->acked)
        return;
    total_acked += n - c->acked;
    c->acked = n;
    if (c->probe_line != 0 && c->acked >= c->probe_line) {
        lat_add(c->probe_ns);
        c->probe_line = 0;
    }
}

/* Line mode: "OK n" and "ERR k reason" lines. */
static size_t
parse_line_replies(struct lconn *c, char *p, size_t len)
{
    char *start = p, *end = p + len, *nl;

    while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        if (nl - p > 3 && memcmp(p, "OK ", 3) == 0) {
            uint64_t v = 0;
            const char *q;

            for (q = p + 3; q < nl && *q >= '0' && *q <= '9'; q++)
                v = v * 10 + (uint64_t)(*q - '0');
            acked_to(c, v);
        } else {
            c->errs++;
            if (c->errs == 1 && c->id < 4)
                fprintf(stderr, "loadgen: conn %u: %.*s\n", c->id,
                        (int)(nl - p), p);
        }
        p = nl + 1;
    }
    return (size_t)(p - start);
}

/* Original mode: the 28-byte reply, no line end. */
static size_t
parse_original_replies(struct lconn *c, char *p, size_t len)
{
    size_t used = 0;

    while (len - used >= ORIGINAL_REPLY_LEN) {
        if (memcmp(p + used, ORIGINAL_REPLY, ORIGINAL_REPLY_LEN) != 0) {
            c->errs++;
            fprintf(stderr, "loadgen: conn %u: unexpected reply %.*s\n",
                    c->id, (int)(len - used), p + used);
            conn_done(c, true);
            return len;
        }
        used += ORIGINAL_REPLY_LEN;
        c->in_flight = false;
        acked_to(c, c->acked + 1);
    }
    if (len - used >= 4 && memcmp(p + used, "ERR ", 4) == 0 &&
        memchr(p + used, '\n', len - used) != NULL) {
        c->errs++;
        conn_done(c, true);
        return len;
    }
    return used;
}

/* MQTT: CONNACK, then PUBACKs (in order, one per PUBLISH). */
static size_t
parse_mqtt(struct lconn *c, unsigned char *p, size_t len)
{
    size_t used = 0;

    while (len - used >= 2) {
        unsigned type = p[used] >> 4;
        size_t rem = p[used + 1];

        if (rem & 0x80) {
            fprintf(stderr, "loadgen: conn %u: unexpected long MQTT "
                            "packet\n", c->id);
            conn_done(c, true);
            return len;
        }
        if (len - used < 2 + rem)
            break;
        if (type == 2 && c->state == S_HANDSHAKE) { /* CONNACK */
            if (rem != 2 || p[used + 3] != 0) {
                c->errs++;
                fprintf(stderr, "loadgen: conn %u: CONNACK refused (%u)\n",
                        c->id, rem == 2 ? p[used + 3] : 255u);
                conn_done(c, true);
                return len;
            }
            c->state = S_READY;
        } else if (type == 4) { /* PUBACK */
            acked_to(c, c->acked + 1);
        } else {
            c->errs++;
        }
        used += 2 + rem;
    }
    return used;
}

/* HTTP: one response per request; 2xx acknowledges its lines. */
static void
parse_http(struct lconn *c)
{
    char *head_end, *cl;
    size_t head_len, body_len = 0;
    int status;

    for (;;) {
        head_end = memmem(c->hin, c->hin_len, "\r\n\r\n", 4);
        if (head_end == NULL)
            return;
        head_len = (size_t)(head_end - c->hin) + 4;
        c->hin[head_len - 1] = '\0';
        cl = strcasestr(c->hin, "\r\nContent-Length:");
        if (cl != NULL)
            body_len = strtoull(cl + 17, NULL, 10);
        if (c->hin_len < head_len + body_len) {
            c->hin[head_len - 1] = '\n';
            if (head_len + body_len > HTTP_IN) {
                fprintf(stderr, "loadgen: conn %u: HTTP reply too big\n",
                        c->id);
                conn_done(c, true);
            }
            return;
        }
        status = (int)strtol(c->hin + 9, NULL, 10);
        if (c->hin_len < 12 || memcmp(c->hin, "HTTP/1.", 7) != 0)
            status = 0;
        if (status >= 200 && status < 300) {
            acked_to(c, c->acked + c->req_lines);
        } else {
            c->errs++;
            if (!warned_http) {
                warned_http = true;
                fprintf(stderr, "loadgen: HTTP %d: %.*s\n", status,
                        (int)body_len, c->hin + head_len);
            }
        }
        c->in_flight = false;
        c->req_lines = 0;
        memmove(c->hin, c->hin + head_len + body_len,
                c->hin_len - head_len - body_len);
        c->hin_len -= head_len + body_len;
    }
}

static void
on_readable(struct lconn *c)
{
    ssize_t r;
    size_t have, used, asked;
    int i;

    for (i = 0; i < 4 && c->state != S_DONE; i++) {
        if (o.mode == M_HTTP) {
            asked = HTTP_IN - c->hin_len;
            if (c->hin == NULL && (c->hin = malloc(HTTP_IN)) == NULL) {
                fprintf(stderr, "loadgen: out of memory\n");
                exit(1);
            }
            r = recv(c->fd, c->hin + c->hin_len, HTTP_IN - c->hin_len, 0);
        } else {
            memcpy(scratch, c->carry, c->carry_len);
            asked = SCRATCH - c->carry_len;
            r = recv(c->fd, scratch + c->carry_len,
                     SCRATCH - c->carry_len, 0);
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                conn_done(c, true);
            return;
        }
        if (r == 0) {
            conn_done(c, !finished(c));
            return;
        }
        if (o.mode == M_HTTP) {
            c->hin_len += (size_t)r;
            parse_http(c);
            if ((size_t)r < asked)
                return;
            continue;
        }
        have = c->carry_len + (size_t)r;
        if (o.mode == M_LINE)
            used = parse_line_replies(c, scratch, have);
        else if (o.mode == M_ORIGINAL)
            used = parse_original_replies(c, scratch, have);
        else
            used = parse_mqtt(c, (unsigned char *)scratch, have);
        if (c->state == S_DONE)
            return;
        if (have - used > CARRY) /* a reply we do not need whole */
            used = have - CARRY;
        c->carry_len = (uint32_t)(have - used);
        memcpy(c->carry, scratch + used, c->carry_len);
        if ((size_t)r < asked)
            return; /* the socket is empty for now */
    }
}

static void
on_connected(struct lconn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
        if (first_failure[0] == '\0')
            snprintf(first_failure, sizeof(first_failure),
                     "connection %u: %s", c->id, strerror(err ? err : errno));
        conn_done(c, false);
        return;
    }
    n_connected++;
    if (o.mode == M_MQTT) {
        /* CONNECT: protocol "MQTT" level 4, clean session, keepalive
         * 600 s, client id "lg<id>". */
        char pkt[64], cid[24], *p = pkt;
        size_t clen = (size_t)(put_u64(PUT_LIT(cid, "lg"), c->id) - cid);

        *p++ = 0x10;
        *p++ = (char)(10 + 2 + clen);
        p = put_str(p, "\0\4MQTT\4\2\2\x58", 10);
        *p++ = 0;
        *p++ = (char)clen;
        p = put_str(p, cid, clen);
        c->state = S_HANDSHAKE;
        send_or_keep(c, pkt, (size_t)(p - pkt), 0);
        return;
    }
    c->state = S_READY;
}

static void
usage(void)
{
    fprintf(stderr,
            "usage: loadgen --server H:P --conns N --lines N "
            "[--mode line|original|http|mqtt]\n"
            "               [--window N] [--seconds S] [--warmup S] "
            "[--rate R] [--body-lines N]\n"
            "               [--db NAME] [--idle] [--bind A,B,...]\n");
    exit(2);
}

static bool
parse_u64_arg(const char *s, uint64_t *out)
{
    char *end;

    errno = 0;
    *out = strtoull(s, &end, 10);
    return errno == 0 && end != s && *end == '\0' && s[0] != '-';
}

static bool
parse_double_arg(const char *s, double *out)
{
    char *end;

    errno = 0;
    *out = strtod(s, &end);
    return errno == 0 && end != s && *end == '\0' && *out >= 0 &&
           isfinite(*out);
}

/* Split "A,B,C" in place into at most MAX_BIND addresses. */
static int
parse_binds(char *s, struct in_addr *out)
{
    int n = 0;

    while (s != NULL && *s != '\0') {
        char *comma = strchr(s, ',');

        if (comma != NULL)
            *comma = '\0';
        if (n == MAX_BIND || inet_pton(AF_INET, s, &out[n]) != 1)
            return -1;
        n++;
        s = comma != NULL ? comma + 1 : NULL;
    }
    return n;
}

static void
raise_nofile(long conns)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)conns + 64;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if (rl.rlim_cur >= want)
        return;
    rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
}

int
main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"server", required_argument, NULL, 's'},
        {"conns", required_argument, NULL, 'c'},
        {"lines", required_argument, NULL, 'n'},
        {"window", required_argument, NULL, 'w'},
        {"seconds", required_argument, NULL, 't'},
        {"warmup", required_argument, NULL, 'W'},
        {"rate", required_argument, NULL, 'r'},
        {"mode", required_argument, NULL, 'm'},
        {"body-lines", required_argument, NULL, 'B'},
        {"db", required_argument, NULL, 'd'},
        {"idle", no_argument, NULL, 'i'},
        {"bind", required_argument, NULL, 'b'},
        {NULL, 0, NULL, 0}};
    const char *server = "127.0.0.1:5000";
    struct in_addr binds[MAX_BIND];
    int n_bind = 0;
    uint64_t u, warm_acked = 0, errs = 0, rr = 0;
    struct net_addr addr;
    char err[256];
    struct lconn *cs;
    struct epoll_event *evs;
    struct rusage ru;
    int64_t deadline, warm_at, warm_ns = 0, connect_ns = 0, now, end;
    double secs, steady, cpu;
    bool warm_done = false, ready_said = false;
    int ch, i, n;
    long k;

    o = (struct opts){.mode = M_LINE, .conns = 100, .lines = 100000,
                      .window = 5000, .body_lines = 5000, .seconds = 60,
                      .warmup = 1, .db = "bench"};
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 's': server = optarg; break;
        case 'c':
            if (!parse_u64_arg(optarg, &u) || u < 1 || u > 1000000)
                usage();
            o.conns = (long)u;
            break;
        case 'n':
            if (!parse_u64_arg(optarg, &o.lines))
                usage();
            break;
        case 'w':
            if (!parse_u64_arg(optarg, &o.window) || o.window > 60000)
                usage();
            break;
        case 'B':
            if (!parse_u64_arg(optarg, &o.body_lines) || o.body_lines < 1 ||
                o.body_lines > 1000000)
                usage();
            break;
        case 't':
            if (!parse_double_arg(optarg, &o.seconds) || o.seconds <= 0 ||
                o.seconds > 3600)
                usage();
            break;
        case 'W':
            if (!parse_double_arg(optarg, &o.warmup))
                usage();
            break;
        case 'r':
            if (!parse_double_arg(optarg, &o.rate))
                usage();
            break;
        case 'm':
            if (strcmp(optarg, "line") == 0)
                o.mode = M_LINE;
            else if (strcmp(optarg, "original") == 0)
                o.mode = M_ORIGINAL;
            else if (strcmp(optarg, "http") == 0)
                o.mode = M_HTTP;
            else if (strcmp(optarg, "mqtt") == 0)
                o.mode = M_MQTT;
            else
                usage();
            break;
        case 'd': o.db = optarg; break;
        case 'i': o.idle = true; break;
        case 'b':
            n_bind = parse_binds(optarg, binds);
            if (n_bind < 0)
                usage();
            break;
        default:
            usage();
        }
    }
    if (o.window == 0 && o.mode != M_LINE) {
        fprintf(stderr, "loadgen: --window 0 is for --mode line only\n");
        return 2;
    }
    if (net_parse_hostport(server, true, &addr, err, sizeof(err)) < 0) {
        fprintf(stderr, "loadgen: %s\n", err);
        return 2;
    }
    raise_nofile(o.conns);
    signal(SIGINT, on_sig);
    signal(SIGTERM, on_sig);
    signal(SIGPIPE, SIG_IGN);
    cs = calloc((size_t)o.conns, sizeof(*cs));
    lat = malloc(LAT_MAX * sizeof(*lat));
    scratch = malloc(SCRATCH + CARRY);
    evs = calloc(MAX_EVENTS, sizeof(*evs));
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (cs == NULL || lat == NULL || scratch == NULL || evs == NULL ||
        ep < 0) {
        perror("loadgen");
        return 1;
    }
    base_ts = clock_real_ns();
    t0 = clock_mono_ns();
    deadline = t0 + (int64_t)(o.seconds * 1e9);
    warm_at = t0 + (int64_t)(o.warmup * 1e9);
    for (k = 0; k < o.conns; k++) {
        struct lconn *c = &cs[k];
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};

        c->id = (uint32_t)k;
        c->target = o.idle ? 0 : o.lines;
        c->fd = socket(addr.ss.ss_family,
                       SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) {
            fprintf(stderr, "loadgen: socket %ld: %s (open-file limit?)\n",
                    k, strerror(errno));
            o.conns = k;
            break;
        }
        if (n_bind > 0) {
            struct sockaddr_in b = {.sin_family = AF_INET};
            int one = 1;

            setsockopt(c->fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one,
                       sizeof(one));
            b.sin_addr = binds[k % n_bind];
            if (bind(c->fd, (struct sockaddr *)&b, sizeof(b)) < 0) {
                fprintf(stderr, "loadgen: bind: %s\n", strerror(errno));
                return 1;
            }
        }
        /* As sensornet-client does: without TCP_NODELAY, Nagle holds a
         * paced run's small writes until the server's next reply carries
         * an ACK, and the wait shows up as acknowledgement latency. */
        net_tune_conn(c->fd);
        if (connect(c->fd, (struct sockaddr *)&addr.ss, addr.len) < 0 &&
            errno != EINPROGRESS) {
            if (first_failure[0] == '\0')
                snprintf(first_failure, sizeof(first_failure),
                         "connect %ld: %s", k, strerror(errno));
            conn_done(c, false);
            continue;
        }
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
            perror("loadgen: epoll");
            return 1;
        }
        c->events = ev.events;
    }
    while (!stop) {
        int timeout = 100;

        now = clock_mono_ns();
        if (now >= deadline || n_done >= o.conns)
            break;
        if (!o.idle && total_acked >= (uint64_t)o.conns * o.lines)
            break;
        if (connect_ns == 0 && n_connected + n_failed >= o.conns) {
            connect_ns = now - t0;
            if (o.idle && !ready_said) {
                printf("ready connected=%ld failed=%ld connect_ms=%.1f\n",
                       n_connected, n_failed, (double)connect_ns / 1e6);
                fflush(stdout);
                ready_said = true;
            }
        }
        if (!warm_done && now >= warm_at) {
            warm_done = true;
            warm_ns = now;
            warm_acked = total_acked;
        }
        if (o.rate > 0 && !o.idle) {
            /* Pacing: hand out the lines due by now, round robin. */
            double step = 1e9 / o.rate;
            uint64_t due = (uint64_t)((double)(now - t0) / step);
            long tried = 0;

            while (total_sent < due && tried < o.conns) {
                struct lconn *c = &cs[rr++ % (uint64_t)o.conns];
                uint64_t want = (due - total_sent) / (uint64_t)o.conns + 1;
                int64_t due_ns = t0 + (int64_t)((double)total_sent * step);

                if (produce(c, want, due_ns, step) == 0)
                    tried++;
                else
                    tried = 0;
                update_events(c);
            }
            timeout = 1;
        }
        n = epoll_wait(ep, evs, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("loadgen: epoll_wait");
            break;
        }
        for (i = 0; i < n; i++) {
            struct lconn *c = evs[i].data.ptr;
            uint32_t e = evs[i].events;

            if (c->state == S_DONE)
                continue;
            if (c->state == S_CONNECTING) {
                if (!(e & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
                    continue;
                on_connected(c);
                if (c->state == S_DONE)
                    continue;
            }
            if (e & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_readable(c);
            if (c->state == S_DONE)
                continue;
            if (c->out_len > 0 && !flush_out(c))
                continue;
            if (o.rate <= 0 && !o.idle)
                produce(c, UINT64_MAX, clock_mono_ns(), 0);
            if (c->state != S_DONE && finished(c) && c->out_len == 0 &&
                o.mode != M_LINE) {
                /* Nothing more to wait for on this one. */
                conn_done(c, false);
                continue;
            }
            update_events(c);
        }
    }
    end = clock_mono_ns();
    for (k = 0; k < o.conns; k++) {
        errs += cs[k].errs;
        if (cs[k].state == S_CONNECTING) {
            /* Still in the handshake when time ran out (a full listen
             * backlog retransmits SYNs): not a failure of the peer. */
            n_connecting++;
            cs[k].state = S_READY;
        }
        if (cs[k].state != S_DONE)
            conn_done(&cs[k], false);
    }
    n_done = 0;
    secs = (double)(end - t0) / 1e9;
    steady = warm_done && end - warm_ns > 200000000
                 ? (double)(total_acked - warm_acked) /
                       ((double)(end - warm_ns) / 1e9)
                 : (double)total_acked / secs;
    getrusage(RUSAGE_SELF, &ru);
    cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
          (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    qsort(lat, n_lat, sizeof(lat[0]), cmp_float);
    if (n_failed > 0)
        fprintf(stderr, "loadgen: %ld connections failed; the first: %s\n",
                n_failed, first_failure);
    if (n_connecting > 0)
        fprintf(stderr, "loadgen: %ld connections still connecting when "
                        "the run ended\n", n_connecting);
    printf("mode=%s conns=%ld connected=%ld failed=%ld connecting=%ld "
           "closed=%ld sent=%llu "
           "acked=%llu errs=%llu seconds=%.3f rate=%.0f steady_rate=%.0f "
           "lat_n=%zu lat_p50_ms=%.3f lat_p99_ms=%.3f lat_p999_ms=%.3f "
           "lat_max_ms=%.3f connect_ms=%.1f cpu_s=%.2f cpu_pct=%.1f "
           "maxrss_kb=%ld\n",
           o.mode == M_LINE       ? "line"
           : o.mode == M_ORIGINAL ? "original"
           : o.mode == M_HTTP     ? "http"
                                  : "mqtt",
           o.conns, n_connected, n_failed, n_connecting, n_closed,
           (unsigned long long)total_sent, (unsigned long long)total_acked,
           (unsigned long long)errs, secs, (double)total_acked / secs, steady,
           n_lat, pct(50), pct(99), pct(99.9), n_lat ? lat[n_lat - 1] : 0.0,
           (double)connect_ns / 1e6, cpu, 100.0 * cpu / secs, ru.ru_maxrss);
    free(cs);
    free(lat);
    free(scratch);
    free(evs);
    close(ep);
    return errs == 0 && n_failed == 0 ? 0 : 1;
}
