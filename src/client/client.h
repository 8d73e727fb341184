/*
 * client: one simulated sensor and its connection to the collector, as an
 * explicit state machine driven by one epoll loop (main.c) that may carry
 * many sensors. No threads, nothing blocks except the name resolution of
 * --server (numeric addresses never block; names are re-resolved at most
 * once a second, after a failed connect).
 *
 * Each sensor produces readings on its schedule into its spool (spool.h,
 * durable before they are sent) and its pending queue (pending.h, the
 * in-memory window onto the spool), sends them in order within the
 * window, drops them when the server acknowledges (OK) or refuses (ERR)
 * them, and after any connection failure waits (capped exponential
 * backoff, full jitter) and resends what is still unacknowledged. A
 * keepalive (PING after --keepalive without input, then as long again for
 * any byte) notices a dead peer on an idle connection.
 *
 * The loop calls client_on_io() for events on the sensor's socket and
 * client_on_timer() when the sensor's struct timer expires; each call
 * leaves the timer rescheduled. Not thread-safe: one loop owns all.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_CLIENT_CLIENT_H
#define SN_CLIENT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/options.h"
#include "client/timers.h"
#include "util/log.h"
#include "util/net.h"

#define CLIENT_EVENTS_BURST 20
#define CLIENT_EVENTS_PER_S 20

/* A connect that has not completed after this long counts as failed. */
#define CLIENT_CONNECT_TIMEOUT_MS 5000
/* A connection up this long (or acknowledging anything) resets backoff. */
#define CLIENT_STABLE_MS 10000

/* The collector's address, shared by all sensors of the process. */
struct tls_ctx;

struct client_target {
    const char *spec;     /* "HOST:PORT", borrowed from the config */
    struct net_addr addr; /* valid when have */
    bool have;
    bool stale;           /* a connect failed: resolve again first */
    int64_t next_try_ns;  /* no resolution before this (1 per second) */
    char err[NET_ERR_LEN]; /* why the last resolution failed */
};

/*
 * What the sensors of one process share. Owned by main, which reads the
 * totals for the status and summary lines; the sensors update them.
 */
struct client_env {
    const struct client_conf *conf; /* borrowed, outlives the sensors */
    int epfd;                       /* the loop's epoll fd */
    struct timers timers;           /* one timer per sensor */
    struct client_target target;
    bool draining;                  /* SIGTERM/SIGINT seen */
    struct tls_ctx *tls;            /* --tls (owned by main), or NULL */
    bool fatal;                     /* a token was refused: exit 1 */
    struct log_ratelimit tls_rl;    /* TLS failures on stderr */
    /* Totals over all sensors. */
    uint64_t produced, acked, refused;
    uint64_t dropped;               /* lost to a full spool */
    uint64_t resumed;               /* found unacknowledged in the spools */
    uint64_t digest;                /* client_digest() summed, this run */
    uint64_t sent;                  /* lines written, resends included */
    uint32_t n_connected;           /* sensors in SENDING */
    uint32_t n_done;                /* sensors in DONE */
    /* With many sensors, connection events on stdout are rate-limited:
     * a token bucket (burst CLIENT_EVENTS_BURST, CLIENT_EVENTS_PER_S). */
    double event_tokens;
    int64_t event_refill_ns;
    uint64_t events_suppressed;
};

struct client;

/* Initialise target from spec (borrowed); nothing is resolved yet. */
void client_target_init(struct client_target *t, const char *spec);
/*
 * The address to connect to, resolving it first when never resolved or
 * marked stale (at most once a second; a failed resolution keeps the last
 * good address). Returns NULL, with a reason in err, when no address is
 * known.
 */
const struct net_addr *client_target_get(struct client_target *t,
                                         int64_t now_ns, char *err,
                                         size_t err_len);

/*
 * A sensor (index idx among env's, used to tag its epoll events) named id
 * (copied), whose walk and jitter derive from seed, producing its first
 * reading at first_ns (monotonic). With conf->spool_dir it opens its spool
 * <spool_dir>/<id> (the directory spool_dir must exist) and resumes what
 * is unacknowledged there. Returns NULL with errno set (and a logged
 * reason for a spool that cannot be opened).
 */
struct client *client_new(struct client_env *env, uint32_t idx,
                          const char *id, uint64_t seed, int64_t first_ns);
/* The token sent in "AUTH <id> <token>" on each connection (borrowed:
 * it must outlive c), or NULL: no AUTH line. Before client_start. */
void client_set_token(struct client *c, const char *token);

/* Close the connection and free; client_destroy(NULL) is a no-op. */
void client_destroy(struct client *c);

/* Leave DISCONNECTED: start the first connect. */
void client_start(struct client *c, int64_t now_ns);

/* The epoll data word of a sensor's socket: index and generation, so an
 * event for a socket already closed is recognised and ignored. */
uint64_t client_event_tag(const struct client *c);
/* Index encoded in an epoll data word made by client_event_tag(). */
uint32_t client_tag_index(uint64_t tag);

/* Events (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP) for the socket tagged
 * tag; stale tags are ignored. */
void client_on_io(struct client *c, uint64_t tag, uint32_t events,
                  int64_t now_ns);
/* The sensor's timer expired. */
void client_on_timer(struct client *c, int64_t now_ns);
/* The sensor that embeds tm. */
struct client *client_from_timer(struct timer *tm);

/* Stop producing; the sensor turns DONE once nothing is pending. */
void client_drain(struct client *c, int64_t now_ns);
/* DONE: count reached or drained, connection closed. */
bool client_done(const struct client *c);
/* Readings neither acknowledged nor refused (in memory or only on disk). */
size_t client_pending(const struct client *c);
/* Readings its spool ever held (the last spool seq); 0 without a spool. */
uint64_t client_spool_seq(const struct client *c);
/* Make the spool durable now and write its ack state (at exit). */
void client_sync(struct client *c);

/*
 * The digest term of one reading: FNV-1a 64 of "<id>\x1f<ts_ns decimal>".
 * The summary line's digest is the sum (mod 2^64) over the readings
 * produced in this run, so a test can compare it with the rows stored.
 */
uint64_t client_digest(const char *id, int64_t ts_ns);

#endif
