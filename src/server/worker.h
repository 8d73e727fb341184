/*
 * worker: one network thread. It runs its own event loop over its own
 * SO_REUSEPORT listeners and the connections it accepted, parses their
 * lines into its batches, hands full batches to the writer and sends the
 * acknowledgements when they come back committed. Workers share nothing
 * but the writer and a few atomic counters (struct worker_shared).
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_WORKER_H
#define SN_WORKER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "server/config.h"
#include "server/presence.h"
#include "server/writer.h"

/* Refusal reasons counted per worker: -enum proto_rc, 1 to 10. */
#define WORKER_REFUSE_REASONS 13

/* Counters a worker keeps; read by any thread (relaxed atomics). */
struct worker_stats {
    atomic_uint_fast64_t conns_total;
    atomic_uint_fast64_t conns_refused; /* over --max-connections */
    atomic_uint_fast64_t lines_accepted;
    atomic_uint_fast64_t lines_refused;
    atomic_uint_fast64_t readings;
    atomic_uint_fast64_t bytes_in;
    atomic_uint_fast64_t http_on_sensor_port;
    atomic_uint_fast64_t idle_closed;
    atomic_uint_fast64_t log_lines_dropped;
    /* MQTT (conn_mqtt.c), for /metrics. */
    atomic_uint_fast64_t mqtt_connects;          /* CONNACK 0 sent */
    atomic_uint_fast64_t mqtt_connects_refused;  /* CONNACK 1 to 5 */
    atomic_uint_fast64_t mqtt_publish[2];        /* by QoS 0, 1 */
    atomic_uint_fast64_t mqtt_pubacks;
    atomic_uint_fast64_t mqtt_violations;        /* closed, no answer */
    atomic_uint_fast64_t mqtt_takeovers;         /* closed for a newer one */
    /* HTTP API hook: lines_refused by reason, indexed by -enum proto_rc
     * (for /metrics). */
    atomic_uint_fast64_t refused_by[WORKER_REFUSE_REASONS];
};

/* State shared by all workers; owned by main. */
struct auth;
struct mqtt_sessions;
struct tls_ctx;

struct worker_shared {
    const struct server_conf *conf;
    struct writer *writer;
    atomic_uint_fast64_t n_conns; /* open connections, all workers */
    const struct auth *auth;      /* --tokens, or NULL: open */
    int http_port;                /* 0: HTTP off (for the sensor-port hint) */
    struct presence *presence;    /* HTTP API hook: who is connected now */
    /* MQTT client ids connected on any worker: made by the first
     * worker_new, freed with the last worker_free (NULL in main's
     * initializer). */
    struct mqtt_sessions *mqtt_sessions;
    /* --tls-cert: every listener of every worker speaks TLS with this
     * context (read-only once loaded); NULL: plain TCP. */
    struct tls_ctx *tls;
};

struct worker;

/* A worker owning the listening sockets fds[0..n) (it closes them). NULL
 * with err set on failure. */
struct worker *worker_new(struct worker_shared *sh, int id, const int *fds,
                          size_t n, char *err, size_t err_len);
/* Start its thread. 0 or -errno. */
int worker_start(struct worker *w);
/* Ask it (from any thread) to stop accepting, finish what has arrived,
 * wait for the acknowledgements and close its connections. */
void worker_stop(struct worker *w);
/* Wait for its thread to end (after worker_stop). */
void worker_join(struct worker *w);
/* Free it; only after writer_stop(), which hands back every batch. */
void worker_free(struct worker *w);
const struct worker_stats *worker_stats(const struct worker *w);

#endif
