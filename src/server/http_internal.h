/*
 * http_internal: what the HTTP thread's files share. http.c runs the
 * thread, the loop, libmicrohttpd and the routing; http_api.c the read
 * endpoints; http_write.c POST /write; http_metrics.c /metrics and
 * /healthz. Only these files include it.
 *
 * A /write request moves through these states (http_write.c):
 *
 *     NEW --headers ok--> BODY --body done, lines in batches--> COMMITTING
 *                          |  ^                                    |
 *       no free batch:     v  | a batch came back:                 | its last
 *       suspended       BLOCKED  resumed (write_resume_blocked)    | batch is
 *                                                                  v back
 *     NEW, BODY --limits, bad request--> answered at once       ANSWER
 *
 * BLOCKED and COMMITTING connections are suspended in libmicrohttpd
 * (MHD_suspend_connection) and listed in h->waiting; they are resumed
 * from the loop, never from the writer thread. A request is freed when
 * libmicrohttpd is done with it and no batch refers to it any more.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_HTTP_INTERNAL_H
#define SN_HTTP_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "proto/proto.h"
#include "server/batch.h"
#include "server/http.h"
#include "server/http_assets.h"
#include "server/http_params.h"
#include "server/logfile.h"
#include "server/loop.h"
#include "util/list.h"
#include "util/log.h"
#include "util/net.h"

/* Batches the HTTP thread owns: one filling, the rest at the writer. */
#define HTTP_BATCHES 4
/* libmicrohttpd limits: idle connection timeout (seconds), connections,
 * memory per connection (request head plus read buffer). */
#define HTTP_CONN_TIMEOUT_S 30
#define HTTP_MAX_CONNS 64
#define HTTP_CONN_MEMORY (128 * 1024)
/* Longest a /write request waits suspended for a free batch or for its
 * commit before it is answered 503. */
#define HTTP_WRITE_WAIT_MS 30000
/* A chunked /write body over the limit is read and discarded for up to
 * this much more, to answer 413; a longer one is cut off. */
#define HTTP_DISCARD_MAX (16u << 20)
/* How often a missing read handle is opened again. */
#define HTTP_STORE_RETRY_MS 2000
/* Largest response built in memory (a full page of readings as JSON
 * is about 1 MiB). */
#define HTTP_MAX_RESPONSE (8u << 20)

enum req_kind { REQ_OTHER = 0, REQ_WRITE };

enum write_state {
    W_NEW = 0,
    W_BODY,
    W_BLOCKED,
    W_COMMITTING,
    W_ANSWER,
};

struct http;

struct http_req {
    struct http *h;
    struct MHD_Connection *conn;
    enum req_kind kind;
    struct list l_all;      /* h->reqs: every live /write request */
    struct list l_wait;     /* h->waiting while suspended */
    bool suspended;
    bool mhd_done;          /* libmicrohttpd has finished with it */
    int refs;               /* batches holding acknowledgements for it */
    int64_t wait_ms;        /* when it was last suspended */
    int abort_status;       /* answer this instead (timeout, shutdown) */
    const char *abort_msg;

    /* /write */
    enum write_state state;
    struct http_params params;
    char *line;             /* a line split across chunks (max_line + 1) */
    size_t line_len;
    bool skipping;          /* discarding the rest of an over-long line */
    bool too_big;           /* the body passed max_body: discard the rest */
    bool failed;            /* a batch came back given up: not stored */
    size_t body_len;        /* bytes consumed */
    uint64_t lineno;        /* physical lines so far */
    uint64_t n_accepted;    /* lines handed to the writer */
    uint64_t n_refused;
    uint64_t n_readings;
    uint64_t err_line;      /* first refused line, 0 if none */
    int err_rc;             /* its enum proto_rc */
    char peer[NET_HOST_LEN + 8];
    char peer_log[NET_HOST_LEN + 16];
    char *auth_sensor;      /* --tokens: the sensor its token proved */
    size_t auth_len;
};

/* Counters of the HTTP thread (only it reads and writes them). */
struct http_stats {
    uint64_t requests[6];   /* by status class: [2] = 2xx ... [5] = 5xx */
    uint64_t write_requests;
    uint64_t write_lines_accepted;
    uint64_t write_lines_refused;
    uint64_t write_refused_by[16]; /* by -enum proto_rc */
    uint64_t write_readings;
    uint64_t write_bytes;
    uint64_t query_errors;  /* database errors answered 503 */
};

struct http {
    struct http_conf conf;
    struct loop *loop;
    struct MHD_Daemon *mhd;
    int listen_fd;          /* closed after MHD_stop_daemon */
    struct loop_io mhd_io;  /* libmicrohttpd's epoll fd */
    struct loop_io wake;    /* eventfd: batches back, stop */
    int64_t mhd_due_ms;     /* MHD_run() due by then; -1: no deadline */
    pthread_t thread;
    bool started;
    bool mhd_stopped;
    atomic_bool stop_requested;
    bool draining;
    int64_t drain_deadline_ms;
    int64_t flush_until_ms;  /* 0 until the drain answers what waits */
    int64_t now_ms;

    /* The read side. */
    struct store *st;       /* NULL until opened */
    int64_t st_retry_ms;
    char st_err[STORE_ERR_LEN];

    /* The write side, as a worker's (worker.c). */
    struct batch *all_batches[HTTP_BATCHES];
    struct batch *pool[HTTP_BATCHES];
    size_t n_pool;
    struct batch *cur;
    atomic_int n_queued;
    pthread_mutex_t done_mu;
    struct batch *done;     /* committed, handed back (done_mu) */
    struct proto_line *pl;
    bool log_on;
    struct logfile_stamp stamp;
    struct list reqs;
    struct list waiting;

    /* HTTPS (--tls-cert): the PEM files, which libmicrohttpd takes from
     * memory; the key is wiped before it is freed. */
    char *tls_cert_pem, *tls_key_pem, *tls_ca_pem;
    size_t tls_key_len;
    bool tls_verify;        /* --tls-ca: a verified client certificate */
    struct log_ratelimit tls_rl; /* refused client certificates */

    struct http_req other_req; /* marks requests other than /write */
    uint64_t *etags;        /* per asset */
    struct http_stats stats;
};

/* http.c */
/* Queue a response with a JSON body {"error": msg} and status. */
enum MHD_Result http_error(struct http *h, struct MHD_Connection *c,
                           unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Queue body (len bytes, malloc'ed: freed by libmicrohttpd, or here on
 * failure) with status and Content-Type type. */
enum MHD_Result http_reply(struct http *h, struct MHD_Connection *c,
                           unsigned status, const char *type, char *body,
                           size_t len);
/* The same with extra headers: n pairs of (name, value) in hdrs. */
enum MHD_Result http_reply_hdrs(struct http *h, struct MHD_Connection *c,
                                unsigned status, const char *type,
                                char *body, size_t len,
                                const char *const *hdrs, size_t n);
/* Queue a JSON document (reference taken over) with status. */
enum MHD_Result http_json(struct http *h, struct MHD_Connection *c,
                          unsigned status, json_t *doc);
/* Parse the query string into hp (the endpoint takes allowed). 0, or -1
 * after queueing a 400. */
int http_read_params(struct http *h, struct MHD_Connection *c,
                     struct http_params *hp, unsigned allowed, bool lenient);
/* The read handle, opened on first use; NULL with h->st_err set. */
struct store *http_store(struct http *h);
/* Answer a failed query: 400 for a bad argument, else 503; a handle that
 * cannot recover by itself is closed and opened again later. */
enum MHD_Result http_store_error(struct http *h, struct MHD_Connection *c,
                                 int rc);
void http_suspend(struct http *h, struct http_req *r);
void http_resume(struct http *h, struct http_req *r);
/* Free r if nothing refers to it any more. */
void http_req_maybe_free(struct http_req *r);
/* Wake the HTTP loop (any thread). */
void http_wake(struct http *h);

/* http_api.c */
enum MHD_Result http_api_sensors(struct http *h, struct MHD_Connection *c);
enum MHD_Result http_api_readings(struct http *h, struct MHD_Connection *c);
enum MHD_Result http_api_series(struct http *h, struct MHD_Connection *c);
/* Shortest decimal form of v that reads back as v. */
int http_fmt_double(double v, char *buf, size_t len);

/* http_write.c */
enum MHD_Result http_write(struct http *h, struct MHD_Connection *c,
                           struct http_req *r, const char *upload,
                           size_t *upload_size);
/* Batches came back (eventfd): acknowledge and recycle them. */
void http_write_batches_back(struct http *h);
/* End of a loop iteration: submit the current batch when nothing of ours
 * waits in the writer's queue. */
void http_write_tick(struct http *h);
/* Set up and free the write side. */
int http_write_init(struct http *h);
void http_write_free(struct http *h);

/* http_metrics.c */
enum MHD_Result http_metrics(struct http *h, struct MHD_Connection *c);
enum MHD_Result http_healthz(struct http *h, struct MHD_Connection *c);

#endif
