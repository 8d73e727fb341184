/*
 * sensornet-client: the simulated sensor(s) and load generator.
 *
 * main() parses the command line, then run() owns one epoll loop that
 * carries every sensor of the process (client.h), a signalfd for SIGTERM
 * and SIGINT, and the sensors' timer heap. On the first signal the sensors
 * stop producing and the loop waits at most --drain-timeout for their
 * acknowledgements; a second signal ends the wait. At exit the spools are
 * synced (what is unacknowledged is resent by the next run) and one
 * summary line goes to stdout (tests parse it).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/client.h"
#include "client/options.h"
#include "client/timers.h"
#include "client/tokens.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/tls.h"

#define PROG "sensornet-client"
#define MAX_EVENTS 256
/* The epoll data word of the signalfd (no sensor has this index). */
#define SIGNAL_TAG UINT64_MAX
#define NS_PER_MS INT64_C(1000000)
#define STATUS_INTERVAL_NS (1000 * NS_PER_MS)

struct run {
    const struct client_conf *conf;
    struct client_env env;
    struct client **clients;
    uint32_t n_clients;
    struct tokens *tokens; /* --token-file, or NULL */
    int sigfd;
    bool stop;             /* leave the loop now */
    int64_t drain_end_ns;  /* when draining: give up waiting then */
    int64_t status_ns;     /* next status line */
    uint64_t last_sent, last_acked;
    bool status_tty;
};

/* Ask for enough descriptors for one socket per sensor (systemd and shells
 * often start us at 1024 soft). Best effort: sensors beyond the limit keep
 * retrying, and say why. */
static void
raise_nofile(uint32_t sensors, bool spool)
{
    struct rlimit rl;
    /* A socket per sensor; with a spool also its locked directory, its
     * segment being written and, while catching up, one being read. */
    rlim_t need = (rlim_t)sensors * (spool ? 4 : 1) + 64;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= need)
        return;
    rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < need)
        log_warn("only %llu file descriptors allowed for %" PRIu32
                 " sensors: raise the limit (ulimit -n)",
                 (unsigned long long)rl.rlim_cur, sensors);
}

static int
setup_signals(struct run *r)
{
    sigset_t set;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = SIGNAL_TAG};

    /* A peer that resets must not kill us: every send uses MSG_NOSIGNAL,
     * and this covers anything else. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return -errno;
    r->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (r->sigfd < 0)
        return -errno;
    if (epoll_ctl(r->env.epfd, EPOLL_CTL_ADD, r->sigfd, &ev) < 0)
        return -errno;
    return 0;
}

static void
on_signal(struct run *r, int64_t now)
{
    struct signalfd_siginfo si;
    uint32_t i;

    while (read(r->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (r->env.draining) {
            r->stop = true; /* second signal: no more waiting */
            continue;
        }
        log_info("signal %" PRIu32 ": stopping, waiting up to %.1f s for "
                 "acknowledgements",
                 si.ssi_signo, (double)r->conf->drain_timeout_ms / 1000.0);
        r->env.draining = true;
        r->drain_end_ns = now + r->conf->drain_timeout_ms * NS_PER_MS;
        for (i = 0; i < r->n_clients; i++)
            client_drain(r->clients[i], now);
    }
}

static size_t
total_pending(const struct run *r)
{
    size_t n = 0;
    uint32_t i;

    for (i = 0; i < r->n_clients; i++)
        n += client_pending(r->clients[i]);
    return n;
}

/* mkdir -p path, mode 0700 for what it creates. Returns 0 or -errno. */
static int
make_dirs(const char *path)
{
    char buf[OPTIONS_PATH_MAX];
    size_t len = strlen(path), i;

    if (len == 0 || len >= sizeof(buf))
        return -ENAMETOOLONG;
    memcpy(buf, path, len + 1);
    for (i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        buf[i] = '\0';
        if (mkdir(buf, 0700) < 0 && errno != EEXIST)
            return -errno;
        buf[i] = i < len ? '/' : '\0';
    }
    return 0;
}

/* Once a second with --sensors > 1: rates and state on stderr. */
static void
status_line(struct run *r, int64_t now)
{
    const struct client_env *e = &r->env;
    char line[256];
    int n;

    n = snprintf(line, sizeof(line),
                 "%s: sent/s=%" PRIu64 " acked/s=%" PRIu64
                 " connected=%" PRIu32 "/%" PRIu32 " pending=%zu"
                 " produced=%" PRIu64 " acked=%" PRIu64 " refused=%" PRIu64
                 " dropped=%" PRIu64,
                 PROG, e->sent - r->last_sent, e->acked - r->last_acked,
                 e->n_connected, r->n_clients, total_pending(r), e->produced,
                 e->acked, e->refused, e->dropped);
    if (n < 0)
        return;
    /* On a terminal, one line updated in place; otherwise one per second. */
    fprintf(stderr, r->status_tty ? "\r%s\033[K" : "%s\n", line);
    r->last_sent = e->sent;
    r->last_acked = e->acked;
    r->status_ns = now + STATUS_INTERVAL_NS;
}

/* Milliseconds epoll_wait may sleep: until the earliest timer, rounded up
 * so that we never wake a little early and spin. */
static int
wait_ms(const struct run *r, int64_t now)
{
    struct timer *tm = timers_peek(&r->env.timers);
    int64_t until = now + 60000 * NS_PER_MS, d;

    if (tm != NULL && tm->when < until)
        until = tm->when;
    if (r->n_clients > 1 && r->status_ns < until)
        until = r->status_ns;
    if (r->env.draining && r->drain_end_ns < until)
        until = r->drain_end_ns;
    if (until <= now)
        return 0;
    d = (until - now + NS_PER_MS - 1) / NS_PER_MS;
    return (int)d;
}

static void
run_timers(struct run *r, int64_t now)
{
    struct timer *tm;
    /* Each expiry moves its timer past now; the budget only guards
     * against a bug turning into a hang. */
    size_t budget = 4 * (size_t)r->n_clients + 16;

    while ((tm = timers_peek(&r->env.timers)) != NULL && tm->when <= now &&
           budget-- > 0)
        client_on_timer(client_from_timer(tm), now);
}

static int
loop(struct run *r)
{
    struct epoll_event evs[MAX_EVENTS];
    int64_t now;
    int i, n;

    for (;;) {
        now = clock_mono_ns();
        if (r->env.fatal)
            return -EACCES; /* a token refused: auth_refused() said so */
        if (r->stop || r->env.n_done == r->n_clients)
            return 0;
        if (r->env.draining && now >= r->drain_end_ns)
            return 0;
        n = epoll_wait(r->env.epfd, evs, MAX_EVENTS, wait_ms(r, now));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error("epoll_wait: %s", strerror(errno));
            return -errno;
        }
        now = clock_mono_ns();
        for (i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            uint32_t idx;

            if (tag == SIGNAL_TAG) {
                on_signal(r, now);
                continue;
            }
            idx = client_tag_index(tag);
            if (idx < r->n_clients)
                client_on_io(r->clients[idx], tag, evs[i].events, now);
        }
        run_timers(r, clock_mono_ns());
        if (r->n_clients > 1 && now >= r->status_ns)
            status_line(r, now);
    }
}

static int
run(const struct client_conf *conf)
{
    struct run r;
    char id[WIRE_ID_MAX + 1];
    uint64_t seed, spool_seq;
    int64_t now;
    uint32_t i;
    int rc = 1;

    memset(&r, 0, sizeof(r));
    r.conf = conf;
    r.sigfd = -1;
    r.env.conf = conf;
    r.env.epfd = -1;
    client_target_init(&r.env.target, conf->server);
    /* TLS and token files: read once, before anything starts; unusable
     * ones are configuration errors (exit 2), like bad usage. */
    if (conf->tls) {
        char err[TLS_ERR_LEN + OPTIONS_PATH_MAX];

        r.env.tls = tls_ctx_client(conf->tls_ca, conf->tls_cert,
                                   conf->tls_key, err, sizeof(err));
        if (r.env.tls == NULL) {
            log_error("TLS: %s", err);
            rc = 2;
            goto done;
        }
    }
    if (conf->token_file != NULL) {
        char err[TOKENS_ERR_LEN + OPTIONS_PATH_MAX];

        r.tokens = tokens_load(conf->token_file, err, sizeof(err));
        if (r.tokens == NULL) {
            log_error("--token-file %s", err);
            rc = 2;
            goto done;
        }
    }
    raise_nofile(conf->sensors, conf->spool_dir != NULL);
    if (conf->spool_dir != NULL) {
        int e = make_dirs(conf->spool_dir);

        if (e < 0) {
            log_error("spool directory %s: %s", conf->spool_dir,
                      strerror(-e));
            goto done;
        }
    }

    r.env.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (r.env.epfd < 0) {
        log_error("epoll_create1: %s", strerror(errno));
        goto done;
    }
    if (setup_signals(&r) < 0) {
        log_error("signals: %s", strerror(errno));
        goto done;
    }
    if (timers_init(&r.env.timers, conf->sensors) < 0) {
        log_error("out of memory");
        goto done;
    }
    r.clients = calloc(conf->sensors, sizeof(*r.clients));
    if (r.clients == NULL) {
        log_error("out of memory");
        goto done;
    }

    seed = conf->seed_set ? conf->seed
                          : (uint64_t)clock_real_ns() ^
                                ((uint64_t)getpid() << 32);
    now = clock_mono_ns();
    for (i = 0; i < conf->sensors; i++) {
        /* Several sensors start spread over one interval, not all at
         * once (a thundering herd against a fresh server). */
        int64_t first = now + (conf->sensors > 1
                                   ? conf->interval_ns / conf->sensors * i
                                   : 0);

        if (conf->sensors > 1)
            snprintf(id, sizeof(id), "%s-%" PRIu32, conf->id, i + 1);
        else
            snprintf(id, sizeof(id), "%s", conf->id);
        r.clients[i] = client_new(&r.env, i, id, seed, first);
        if (r.clients[i] == NULL) {
            log_error("sensor %s: %s", id, strerror(errno));
            goto done;
        }
        r.n_clients++;
        if (r.tokens != NULL) {
            const char *tok = tokens_for(r.tokens, id);

            if (tok == NULL) {
                log_error("--token-file %s: no token for sensor %s (and "
                          "no line with a token alone)",
                          conf->token_file, id);
                rc = 2;
                goto done;
            }
            client_set_token(r.clients[i], tok);
        } else if (conf->token != NULL) {
            client_set_token(r.clients[i], conf->token);
        }
    }
    {
        char err[NET_ERR_LEN];

        if (client_target_get(&r.env.target, now, err, sizeof(err)) == NULL)
            log_warn("%s; retrying", err);
    }
    for (i = 0; i < r.n_clients; i++)
        client_start(r.clients[i], now);

    r.status_tty = isatty(STDERR_FILENO) == 1;
    r.status_ns = now + STATUS_INTERVAL_NS;
    rc = loop(&r) < 0 ? 1 : 0;
    if (r.n_clients > 1 && r.status_tty)
        fputc('\n', stderr);
    spool_seq = 0;
    for (i = 0; i < r.n_clients; i++) {
        client_sync(r.clients[i]);
        spool_seq += client_spool_seq(r.clients[i]);
    }
    if (r.env.draining && total_pending(&r) > 0)
        log_warn("exiting with %zu readings unacknowledged%s",
                 total_pending(&r),
                 conf->spool_dir != NULL ? " (kept in the spool)" : "");
    printf("%s: produced=%" PRIu64 " acked=%" PRIu64 " refused=%" PRIu64
           " pending=%zu dropped=%" PRIu64 " resumed=%" PRIu64
           " spool_seq=%" PRIu64 " digest=%016" PRIx64 "\n",
           PROG, r.env.produced, r.env.acked, r.env.refused,
           total_pending(&r), r.env.dropped, r.env.resumed, spool_seq,
           r.env.digest);
    fflush(stdout);
done:
    for (i = 0; i < r.n_clients; i++)
        client_destroy(r.clients[i]);
    free(r.clients);
    tokens_free(r.tokens);
    tls_ctx_free(r.env.tls);
    timers_free(&r.env.timers);
    if (r.sigfd >= 0)
        close(r.sigfd);
    if (r.env.epfd >= 0)
        close(r.env.epfd);
    return rc;
}

int
main(int argc, char **argv)
{
    struct client_conf conf;
    char err[OPTIONS_ERR_LEN];
    int rc;

    rc = options_parse(&conf, argc, argv, stdout, err, sizeof(err));
    if (rc == OPTIONS_EXIT)
        return 0;
    if (rc != OPTIONS_RUN) {
        fprintf(stderr, "%s: %s\nTry '%s --help' for more information.\n",
                PROG, err, PROG);
        return 2;
    }
    log_init(PROG, conf.verbose ? LOG_DEBUG : LOG_INFO);
    /* Whole lines even when stdout is a file or a pipe: tests and
     * journald read it while we run. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    return run(&conf);
}
