/*
 * http: the HTTP API, the InfluxDB-compatible /write endpoint, /metrics,
 * /healthz and the dashboard, on a thread of their own (docs/api.md is
 * the contract; docs/internals/collector.md shows where it sits).
 *
 * libmicrohttpd runs in external epoll mode inside this thread's own event
 * loop (loop.h): its epoll fd is one fd of our loop, MHD_run() runs when it
 * is readable, and the loop's timeout comes from MHD_get_timeout(). Read
 * queries go to a STORE_F_READONLY handle this thread owns, so a slow
 * query delays other HTTP requests but never a sensor worker. /write
 * parses with the same parser as the sensor port into batches this thread
 * owns and hands them to the writer; the request is answered once its
 * batches come back committed.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_HTTP_H
#define SN_HTTP_H

#include <stddef.h>

#include "server/store.h"
#include "server/worker.h"

struct http_conf {
    int listen_fd;                   /* bound and listening; http owns it */
    size_t max_body;                 /* largest /write body (413 above) */
    struct store_conf store;         /* for the read handle (strings
                                      * borrowed: they must outlive http) */
    struct worker_shared *sh;        /* writer, presence, conf, counters */
    struct worker *const *workers;   /* for their stats (borrowed) */
    size_t n_workers;
};

struct http;

/* Set up the server (nothing runs yet); NULL with err set on failure.
 * Takes conf->listen_fd even on failure. */
struct http *http_new(const struct http_conf *conf, char *err,
                      size_t err_len);
/* Start its thread. 0 or -errno. */
int http_start(struct http *h);
/* Ask it (any thread) to stop: no new connections; requests waiting for a
 * commit get their answer (or 503 after the shutdown timeout). */
void http_stop(struct http *h);
/* Wait for its thread to end and close every HTTP connection. */
void http_join(struct http *h);
/* Free it; after writer_stop(), which hands every batch back. NULL: no-op. */
void http_free(struct http *h);

#endif
