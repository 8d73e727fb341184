/*
 * worker_internal: the structs that worker.c (threads, batches, timers),
 * conn.c (one connection's bytes, lines and replies) and conn_mqtt.c (the
 * same for MQTT packets) share. Only those three files include it.
 *
 * Connection states:
 *
 *      accept
 *        |
 *        v
 *     READING <----> THROTTLED    no free batch: EPOLLIN off, unparsed
 *        |                        bytes kept in c->in (conn_throttle /
 *        |                        worker_unthrottle)
 *        | EOF, or shutdown
 *        v
 *     DRAINING      no more reads; wait until every batch holding its
 *        |          lines is committed and the replies are written
 *        |          (conn_drain, checked in worker_tick)
 *        v
 *     CLOSING       fd closed in worker_tick, never inside a callback
 *        |          (conn_close_later -> conn_close_now)
 *        v
 *     ZOMBIE        closed, struct kept while batches still refer to it
 *        |          (refs > 0); freed when the last one comes back
 *        v
 *      freed
 *
 * Errors, limits, idle timeout and HTTP on the sensor port go straight to
 * CLOSING from READING or DRAINING.
 *
 * On a TLS port (--tls-cert) a connection starts in HANDSHAKE (c->tls set,
 * not yet established; on w->handshaking): conn_handshake() advances it
 * on every event and moves it to READING when done, or to CLOSING when it
 * fails, when the peer sent plain text (answered "ERR tls required"), or
 * after CONN_TLS_HANDSHAKE_MS (run_timers). Above that the byte I/O goes
 * through conn_recv()/conn_send(), so lines, MQTT and replies do not know
 * whether TLS is there.
 *
 * MQTT connections (conn_mqtt.c; c->mq set) follow the same diagram with
 * packets instead of lines. Two additions: THROTTLED is also entered when
 * --mqtt-max-inflight PUBACKs are pending (then the connection is not on
 * w->throttled; conn_mqtt_ack puts it there once acks free room), and
 * DISCONNECT goes to DRAINING like an EOF. A connection taken over by a
 * newer CONNECT with its client id goes to CLOSING in its own worker's
 * thread (conn_mqtt_evicted).
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_WORKER_INTERNAL_H
#define SN_WORKER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "proto/proto.h"
#include "server/mqtt_sessions.h"
#include "server/batch.h"
#include "server/logfile.h"
#include "server/loop.h"
#include "server/worker.h"
#include "util/list.h"
#include "util/log.h"
#include "util/net.h"

/* Batches per worker: one filling, the rest queued or committing. */
#define WORKER_BATCHES 4
/* Read buffer: room for a partial line of max_line plus a big read. */
#define WORKER_RBUF (PROTO_MAX_LINE_LIMIT + 128 * 1024)
/* Reads per connection per wakeup, so one busy sender cannot starve the
 * others (libuv does 32 for its streams; our reads are bigger). */
#define CONN_READ_BUDGET 4
/* Replies a connection may have pending before it is closed for not
 * reading them (acknowledgements coalesce; only ERR lines accumulate). */
#define CONN_OUT_MAX (64 * 1024)
/* How long a draining connection may take to read its last replies. */
#define CONN_LINGER_MS 10000
/* How long a TLS handshake may take from accept (or --idle-timeout if
 * shorter): a peer that stalls it holds a connection and an SSL object. */
#define CONN_TLS_HANDSHAKE_MS 10000
/* Longest HTTP request head read on the sensor port. */
#define CONN_HTTP_MAX 8192
/* log.txt bytes budgeted per reading line and kept free for connection
 * events. */
#define LOG_PER_READING 512
#define LOG_EVENT_SLACK (64 * 1024)

enum conn_flags {
    CONN_F_LINEMODE = 1u << 0,  /* has sent a line end */
    CONN_F_SKIP = 1u << 1,      /* discarding an overlong line */
    CONN_F_THROTTLED = 1u << 2, /* waiting for a free batch */
    CONN_F_DRAINING = 1u << 3,  /* no more reads */
    CONN_F_CLOSING = 1u << 4,   /* queued for conn_close_now */
    CONN_F_CLOSED = 1u << 5,    /* fd closed; freed when refs == 0 */
    CONN_F_HTTP = 1u << 6,      /* first line was an HTTP request */
    CONN_F_EOF = 1u << 7,       /* peer sent FIN */
    CONN_F_KEEPALIVE = 1u << 8, /* MQTT keep alive: on w->mqtt_ka, not
                                 * w->idle */
};

struct worker;
struct conn_mqtt;
struct tls;

struct conn {
    struct loop_io io;
    struct worker *w;
    int fd;
    unsigned flags;
    int refs;                /* batches that hold acks for this conn */
    const char *close_reason;

    char peer[NET_HOST_LEN + 8];      /* "10.0.2.135:54812" (store) */
    char peer_log[NET_HOST_LEN + 16]; /* "('10.0.2.135', 54812)" */
    uint16_t local_port;
    char local_host[NET_HOST_LEN];

    char *in;                /* unparsed bytes, allocated while pending */
    size_t in_len, in_cap;
    char *out;               /* pending replies */
    size_t out_len, out_pos, out_cap;
    size_t ok_off;           /* offset of a trailing "OK n" or SIZE_MAX */
    char *http_host;         /* Host header of an HTTP request */
    struct presence_entry *pres; /* HTTP API hook: sensor it sent last */
    char *auth_sensor;       /* --tokens: the sensor it proved to be */
    size_t auth_len;
    struct conn_mqtt *mq;    /* MQTT state, only on MQTT connections */
    struct tls *tls;         /* TLS ports: the session; NULL: plain TCP */

    uint64_t n_lines;        /* non-blank lines received (line numbers) */
    uint64_t n_accepted;     /* lines accepted */
    uint64_t n_acked;        /* accepted lines committed */
    uint64_t n_orig;         /* original-form messages received */

    int64_t accepted_ms;     /* w->conns order */
    int64_t age_limit_ms;    /* --max-connection-age with its jitter */
    int64_t active_ms;       /* last read (idle list order) */
    int64_t silence_ms;      /* last read while holding a partial line */
    int64_t drain_ms;        /* when DRAINING began */

    struct list l_all;       /* w->conns */
    struct list l_idle;      /* w->idle (reading) or w->draining */
    struct list l_silence;   /* w->silence */
    struct list l_flush;     /* w->flush */
    struct list l_throttle;  /* w->throttled */
    struct list l_close;     /* w->closing */
    struct list l_hs;        /* w->handshaking (TLS, accept order) */
};

struct worker {
    struct worker_shared *sh;
    const struct server_conf *conf;
    int id;
    pthread_t thread;
    bool started;
    struct loop *loop;

    struct loop_io listeners[CONFIG_MAX_LISTEN + 1]; /* + --mqtt-listen */
    size_t n_listeners;
    struct loop_io *mqtt_listener; /* in listeners[], or NULL */
    struct loop_io wake;     /* eventfd: writer progress and stop */
    atomic_bool stop_requested;
    bool draining;
    int64_t drain_deadline_ms;

    /* Batches: cur is being filled; free ones wait in pool[]. */
    struct batch *all_batches[WORKER_BATCHES];
    struct batch *pool[WORKER_BATCHES];
    size_t n_pool;
    struct batch *cur;
    atomic_int n_queued;     /* submitted, not yet taken by the writer */
    pthread_mutex_t done_mu;
    struct batch *done;      /* committed, handed back (done_mu) */

    struct list conns, idle, draining_list, silence, flush, throttled,
        closing;
    size_t n_conns;

    /* MQTT (conn_mqtt.c) */
    struct list mqtt_ka;     /* connections with a keep alive (l_idle) */
    int64_t mqtt_ka_next_ms; /* no keep alive expires before */
    struct mqtt_sessions *sessions; /* shared; one reference per worker */
    struct mqtt_mailbox mbox;       /* sessions other CONNECTs took over */
    struct log_ratelimit mqtt_rl;   /* protocol violations */
    struct list handshaking; /* TLS handshakes under way (l_hs) */
    struct log_ratelimit tls_rl;    /* handshake failures, plain text */

    struct proto_line *pl;   /* parse scratch */
    struct proto_graphite_map gmap;
    struct proto_opts popts; /* parser options (Graphite mapping) */
    char *rbuf;
    int64_t now_ms;          /* monotonic, refreshed each wakeup */
    int64_t now_real_ns;     /* wall clock, refreshed each read */
    struct logfile_stamp stamp;
    bool log_on;
    struct log_ratelimit full_rl;
    struct worker_stats stats;
};

/* conn.c */
struct conn *conn_new(struct worker *w, int fd);
void conn_on_io(struct loop_io *io, uint32_t events);
/* Parse what c->in holds after a throttle; false if throttled again. */
bool conn_resume(struct conn *c);
/* Treat pending bytes of a connection that never sent a line end as one
 * message if they form one text-form reading (the silence rule). */
void conn_silence_expired(struct conn *c);
/* Stop reading: finish pending bytes, then wait for acks (shutdown, EOF). */
void conn_drain(struct conn *c);
/* True when a draining conn has nothing left to wait for. */
bool conn_drained(const struct conn *c);
void conn_close_later(struct conn *c, const char *reason);
void conn_close_now(struct conn *c);
void conn_flush(struct conn *c);
/* Apply one committed batch's acknowledgement to its connection. */
void conn_ack(struct conn *c, uint64_t n_accepted, uint32_t n_orig);
/* Drop one batch reference; frees a closed conn at zero. */
void conn_unref(struct conn *c);
void conn_free(struct conn *c);

/* Shared with conn_mqtt.c. */
/* Queue (p, n) (borrowed) as reply bytes; closes the connection if it has
 * left too much unread. */
void conn_out(struct conn *c, const void *p, size_t n);
/* Store the readings of one accepted message (line or PUBLISH): count it,
 * add them and their log.txt lines to the current batch (room checked by
 * the caller with worker_batch_room) and ask for its acknowledgement. */
void conn_accept_line(struct conn *c, const struct proto_line *pl);
/* No batch room: stop reading, resume from w->throttled (unthrottle). */
void conn_throttle(struct conn *c);

/* conn_mqtt.c: MQTT 3.1.1 connections (docs/protocol.md 7) */
/* Make c an MQTT connection (first byte 0x10 on the sensor port, or
 * accepted on --mqtt-listen). 0 or -ENOMEM. */
int conn_mqtt_start(struct conn *c);
/* Handle the packets in (buf, len) (borrowed); returns the bytes used. It
 * stops early with c THROTTLED when a batch or a PUBACK slot is missing;
 * the rest waits in c->in. */
size_t conn_mqtt_process(struct conn *c, const char *buf, size_t len);
/* Committed up to n_accepted: send the PUBACKs that were waiting. */
void conn_mqtt_ack(struct conn *c, uint64_t n_accepted);
/* c is being closed (its worker's thread): leave the session registry. */
void conn_mqtt_closed(struct conn *c);
/* Free c's MQTT state (conn_free). */
void conn_mqtt_free(struct conn *c);
/* Close connections past their keep alive; returns the next deadline. */
int64_t conn_mqtt_timers(struct worker *w);
/* Close the connections that newer CONNECTs took over (on wakeup). */
void conn_mqtt_evicted(struct worker *w);

/* worker.c, for conn.c */
/* Make cur have room for n readings and log_bytes; false if no batch is
 * free (the caller throttles). */
bool worker_batch_room(struct worker *w, size_t n, size_t log_bytes);
/* Append one "[stamp] text\n" line to log.txt via the current batch. */
void worker_log(struct worker *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void worker_conn_closed(struct worker *w, struct conn *c);

#endif
