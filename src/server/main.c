/*
 * sensornet-server: start-up, signals and the orderly stop.
 *
 * Threads: N workers (one event loop each, SO_REUSEPORT listeners), one
 * writer (storage and log.txt), and this main thread, which only waits for
 * signals: TERM/INT drain and exit 0, HUP reopens log.txt. Signals are
 * blocked everywhere and taken synchronously here with sigwaitinfo, so no
 * handler ever runs inside a worker.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "server/auth.h"
#include "server/config.h"
#include "server/http.h"
#include "server/logfile.h"
#include "server/store.h"
#include "server/worker.h"
#include "server/writer.h"
#include "util/log.h"
#include "util/net.h"
#include "util/tls.h"

#define LISTEN_BACKLOG 65535
/* File descriptors kept for listeners, the database, log.txt, eventfds. */
#define FD_MARGIN 256

/* Raise RLIMIT_NOFILE to fit max_conns; lower max_conns if we cannot.
 * max_conns 0 means: whatever the hard limit allows. */
static void
raise_nofile(struct server_conf *cf)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)cf->max_conns + FD_MARGIN;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if (cf->max_conns == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        cf->max_conns = rl.rlim_cur > 2 * FD_MARGIN
                            ? (uint64_t)rl.rlim_cur - FD_MARGIN
                            : (uint64_t)rl.rlim_cur / 2;
        return;
    }
    if (rl.rlim_cur >= want)
        return;
    if (rl.rlim_max < want) {
        struct rlimit up = {want, want};

        /* Root (CAP_SYS_RESOURCE) may go past the hard limit. */
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            return;
    }
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want) {
        uint64_t fit = rl.rlim_cur > 2 * FD_MARGIN ? rl.rlim_cur - FD_MARGIN
                                                   : rl.rlim_cur / 2;

        log_warn("open files limited to %llu: --max-connections lowered "
                 "from %llu to %llu (raise LimitNOFILE / ulimit -n)",
                 (unsigned long long)rl.rlim_cur,
                 (unsigned long long)cf->max_conns, (unsigned long long)fit);
        cf->max_conns = fit;
    }
}

/* systemd Type=notify: "READY=1" once listening, "STOPPING=1" on drain. */
static void
sd_notify_msg(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len;
    int fd;

    if (path == NULL || (path[0] != '/' && path[0] != '@'))
        return;
    len = strlen(path);
    if (len >= sizeof(sa.sun_path))
        return;
    memcpy(sa.sun_path, path, len);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    (void)sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
                 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
    close(fd);
}

static int
threads_wanted(const struct server_conf *cf)
{
    long n;

    if (cf->threads > 0)
        return (int)cf->threads;
    n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* "[stamp] Servidor iniciando em ADDR", written before the writer starts,
 * so tests and people can wait for it: the listeners are bound by then. */
static void
log_start(struct logfile *lf, const struct server_conf *cf)
{
    struct logfile_stamp st;
    char line[512];
    size_t i, n, written = 0;
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    logfile_stamp_init(&st, cf->log_utc);
    n = (size_t)snprintf(line, sizeof(line), "%sServidor iniciando em ",
                         logfile_stamp(&st, (int64_t)ts.tv_sec * 1000000000));
    for (i = 0; i < cf->n_listen && n < sizeof(line); i++)
        n += (size_t)snprintf(line + n, sizeof(line) - n, "%s%s",
                              i ? ", " : "", cf->listen[i]);
    if (n >= sizeof(line) - 1)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    if (logfile_write(lf, line, n, &written) < 0)
        log_warn("writing log.txt: %s", strerror(errno));
}

int
main(int argc, char **argv)
{
    struct server_conf cf;
    struct worker_shared sh;
    struct worker **workers = NULL;
    struct writer *wr = NULL;
    struct store *st = NULL;
    struct logfile *lf = NULL;
    struct auth *auth = NULL;
    struct tls_ctx *tls = NULL;
    struct net_addr addrs[CONFIG_MAX_LISTEN];
    struct net_addr http_addr;  /* HTTP API hook */
    struct http *http = NULL;
    struct presence *presence = NULL;
    struct store_conf scf;
    struct writer_conf wcf;
    char err[CONFIG_ERR_LEN];
    sigset_t sigs;
    int i, n_threads = 0, started = 0, rc, why, status = 1;
    size_t j;

    log_init("sensornet-server", LOG_INFO);
    rc = config_parse(&cf, argc, argv, err, sizeof(err));
    if (rc != 0) {
        if (rc < 0) {
            fprintf(stderr, "sensornet-server: %s\n", err);
            fprintf(stderr, "Try 'sensornet-server --help'.\n");
        }
        config_free(&cf);
        return rc < 0 ? 2 : 0;
    }
    if (cf.verbose)
        log_set_level(LOG_DEBUG);
    for (j = 0; j < cf.n_listen; j++) {
        if (net_parse_hostport(cf.listen[j], false, &addrs[j], err,
                               sizeof(err)) < 0) {
            fprintf(stderr, "sensornet-server: --listen %s\n", err);
            config_free(&cf);
            return 2;
        }
    }
    /* HTTP API hook: --http HOST:PORT, or off. */
    if (cf.http != NULL &&
        net_parse_hostport(cf.http, false, &http_addr, err, sizeof(err)) < 0) {
        fprintf(stderr, "sensornet-server: --http %s\n", err);
        config_free(&cf);
        return 2;
    }
    /* TLS: loaded once, before anything else starts, so that -t checks
     * the files too and a bad one stops the start with exit status 2. */
    if (cf.tls_cert != NULL) {
        tls = tls_ctx_server(cf.tls_cert, cf.tls_key, cf.tls_ca, err,
                             sizeof(err));
        if (tls == NULL) {
            fprintf(stderr, "sensornet-server: TLS: %s\n", err);
            config_free(&cf);
            return 2;
        }
    }
    if (cf.check_only) {
        tls_ctx_free(tls);
        printf("sensornet-server: configuration ok\n");
        config_free(&cf);
        return 0;
    }
    tzset();
    raise_nofile(&cf);

    /* Signals: blocked in every thread (threads inherit the mask), taken
     * here with sigwaitinfo. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    scf = (struct store_conf){.sqlite_path = cf.db_path,
                              .postgres = cf.postgres,
                              .fsync = cf.fsync};
    st = store_open(&scf, err, &why);
    if (st == NULL) {
        fprintf(stderr, "sensornet-server: %s\n", err);
        goto out;
    }
    if (cf.db_path == NULL && cf.postgres == NULL)
        log_warn(cf.log_path != NULL
                     ? "--db off: readings go to log.txt only, no database"
                     : "--db off and --log off: readings are parsed and "
                       "acknowledged, then dropped (a benchmark mode)");
    if (cf.log_path != NULL) {
        lf = logfile_open(cf.log_path, err, sizeof(err));
        if (lf == NULL) {
            fprintf(stderr, "sensornet-server: %s\n", err);
            goto out;
        }
    }

    n_threads = threads_wanted(&cf);
    workers = calloc((size_t)n_threads, sizeof(*workers));
    if (workers == NULL)
        goto out;
    sh = (struct worker_shared){.conf = &cf, .tls = tls};
    atomic_init(&sh.n_conns, 0);
    presence = presence_new(0); /* HTTP API hook */
    if (presence == NULL)
        goto out;
    sh.presence = presence;
    if (cf.tokens != NULL) {
        auth = auth_load(cf.tokens, err, sizeof(err));
        if (auth == NULL) {
            fprintf(stderr, "sensornet-server: --tokens %s\n", err);
            goto out;
        }
        sh.auth = auth;
        log_info("tokens: %zu sensors may write", auth_count(auth));
    }
    for (i = 0; i < n_threads; i++) {
        int fds[CONFIG_MAX_LISTEN];

        for (j = 0; j < cf.n_listen; j++) {
            fds[j] = net_listen(&addrs[j], true, LISTEN_BACKLOG, err,
                                sizeof(err));
            if (fds[j] < 0) {
                fprintf(stderr, "sensornet-server: %s\n", err);
                while (j-- > 0)
                    close(fds[j]);
                goto out;
            }
        }
        workers[i] = worker_new(&sh, i, fds, cf.n_listen, err, sizeof(err));
        if (workers[i] == NULL) {
            fprintf(stderr, "sensornet-server: %s\n", err);
            goto out;
        }
    }

    /* HTTP API hook: bind its port now, so that it is listening once
     * log.txt says the server started; the thread starts below. */
    if (cf.http != NULL) {
        struct http_conf hcf = {.max_body = (size_t)cf.http_max_body,
                                .store = scf,
                                .sh = &sh,
                                .workers = workers,
                                .n_workers = (size_t)n_threads};
        struct sockaddr_storage ss;
        socklen_t sslen = sizeof(ss);
        char host[NET_HOST_LEN];

        hcf.listen_fd = net_listen(&http_addr, false, 1024, err, sizeof(err));
        if (hcf.listen_fd < 0) {
            fprintf(stderr, "sensornet-server: --http: %s\n", err);
            goto out;
        }
        if (getsockname(hcf.listen_fd, (struct sockaddr *)&ss, &sslen) == 0)
            net_addr_host((struct sockaddr *)&ss, host, sizeof(host),
                          &sh.http_port);
        http = http_new(&hcf, err, sizeof(err));
        if (http == NULL) {
            fprintf(stderr, "sensornet-server: --http: %s\n", err);
            goto out;
        }
    }

    wcf = (struct writer_conf){
        .fsync = cf.fsync,
        .commit_interval_ms = (int)cf.commit_interval_ms,
        .batch_max = cf.batch_max,
        .retention_ns = cf.retention_ms * 1000000,
        .shutdown_timeout_ms = (int)cf.shutdown_timeout_ms,
    };
    if (lf != NULL)
        log_start(lf, &cf);
    wr = writer_new(&wcf, st, lf);
    if (wr == NULL)
        goto out;
    st = NULL;
    lf = NULL;
    sh.writer = wr;
    rc = writer_start(wr);
    if (rc < 0) {
        fprintf(stderr, "sensornet-server: writer thread: %s\n",
                strerror(-rc));
        goto out;
    }
    for (i = 0; i < n_threads; i++) {
        rc = worker_start(workers[i]);
        if (rc < 0) {
            fprintf(stderr, "sensornet-server: worker thread: %s\n",
                    strerror(-rc));
            goto stop;
        }
        started++;
    }
    if (http != NULL) { /* HTTP API hook */
        rc = http_start(http);
        if (rc < 0) {
            fprintf(stderr, "sensornet-server: HTTP thread: %s\n",
                    strerror(-rc));
            goto stop;
        }
        log_info("HTTP API and dashboard on %s://%s/",
                 tls != NULL ? "https" : "http", cf.http);
    }
    log_info("listening on %s (and %zu more)%s, %d threads, at most %llu "
             "connections, store %s, fsync %s",
             cf.listen[0], cf.n_listen - 1,
             tls == NULL          ? ""
             : cf.tls_ca != NULL  ? " with TLS, client certificates required"
                                  : " with TLS",
             n_threads,
             (unsigned long long)cf.max_conns,
             cf.postgres != NULL  ? "postgresql"
             : cf.db_path != NULL ? "sqlite"
                                  : "none",
             cf.fsync == STORE_FSYNC_ALWAYS  ? "always"
             : cf.fsync == STORE_FSYNC_BATCH ? "batch"
                                             : "off");
    sd_notify_msg("READY=1");

    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&sigs, &si);

        if (sig < 0)
            continue; /* EINTR */
        if (sig == SIGHUP) {
            log_info("SIGHUP: reopening log.txt");
            writer_reopen_log(wr);
            if (tls != NULL) {
                /* The sensor and MQTT ports; HTTPS keeps what it started
                 * with (libmicrohttpd takes its certificate once). */
                if (tls_ctx_reload(tls, cf.tls_cert, cf.tls_key, cf.tls_ca,
                                   err, sizeof(err)) < 0)
                    log_error("SIGHUP: TLS certificate not reloaded, the "
                              "previous one stays in use: %s", err);
                else
                    log_info("SIGHUP: TLS certificate reloaded from %s",
                             cf.tls_cert);
            }
            if (auth != NULL) {
                if (auth_reload(auth, cf.tokens, err, sizeof(err)) < 0)
                    log_error("SIGHUP: tokens not reloaded, the previous "
                              "ones stay in force: %s", err);
                else
                    log_info("SIGHUP: tokens reloaded: %zu entries",
                             auth_count(auth));
            }
            continue;
        }
        log_info("%s: finishing what has arrived, then exiting",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    }
    sd_notify_msg("STOPPING=1");
    status = 0;
stop:
    for (i = 0; i < started; i++)
        worker_stop(workers[i]);
    http_stop(http); /* HTTP API hook */
    for (i = 0; i < started; i++)
        worker_join(workers[i]);
    http_join(http);
    if (writer_stop(wr) < 0) {
        log_error("storage never recovered: readings not acknowledged "
                  "were not stored");
        status = 1;
    }
out:
    http_free(http); /* after writer_stop: every batch is back */
    if (workers != NULL) {
        for (i = 0; i < n_threads; i++)
            worker_free(workers[i]);
        free(workers);
    }
    writer_free(wr);
    presence_free(presence);
    auth_free(auth);
    tls_ctx_free(tls); /* after the workers, whose sessions used it */
    store_close(st);
    logfile_close(lf);
    config_free(&cf);
    return status;
}
