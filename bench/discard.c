/*
 * discard: the reference floor for the ingest benchmark. It accepts TCP
 * connections and reads and drops what they send, with one epoll loop per
 * thread (SO_REUSEPORT listeners, one thread per core by default): what a
 * server that does no work at all reaches on this machine with this load
 * generator. With --ack it also counts line ends per connection and answers
 * each read with the cumulative "OK n\n", as sensornet does after a commit,
 * so loadgen can run against it exactly as against sensornet: the cost of
 * the wire, framing and acknowledgements, with no parsing, no storage and
 * no log.
 *
 *   discard --listen 127.0.0.1:5999 [--threads N] [--ack] [--seconds S]
 *
 * It exits by itself after --seconds (default 900), or on SIGTERM/SIGINT,
 * and then prints "lines=N bytes=N" (lines counted with --ack only).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/net.h"

#define RBUF (256 * 1024)
#define MAX_EVENTS 256
#define READ_BUDGET 4

struct dconn {
    int fd;
    uint64_t lines;
};

struct dthread {
    pthread_t tid;
    int lfd;
    int ep;
};

static bool ack;
static atomic_bool stopping;
static atomic_uint_fast64_t total_lines, total_bytes;

static void
on_sig(int sig)
{
    (void)sig;
    atomic_store(&stopping, true);
}

static void
drop(int ep, struct dconn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

static uint64_t
count_lf(const char *p, size_t n)
{
    const char *end = p + n;
    uint64_t k = 0;

    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        k++;
        p++;
    }
    return k;
}

/* Read what the socket holds (bounded); false when the peer is gone. */
static bool
on_read(struct dconn *c, char *buf)
{
    uint64_t bytes = 0, lines = 0;
    int i;

    for (i = 0; i < READ_BUDGET; i++) {
        ssize_t n = recv(c->fd, buf, RBUF, 0);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            return false;
        }
        if (n == 0)
            return false;
        bytes += (uint64_t)n;
        if (ack)
            lines += count_lf(buf, (size_t)n);
        if ((size_t)n < RBUF)
            break;
    }
    atomic_fetch_add_explicit(&total_bytes, bytes, memory_order_relaxed);
    if (ack && lines > 0) {
        char reply[32];
        int len;

        c->lines += lines;
        atomic_fetch_add_explicit(&total_lines, lines, memory_order_relaxed);
        len = snprintf(reply, sizeof(reply), "OK %llu\n",
                       (unsigned long long)c->lines);
        /* A reply the socket cannot take is dropped: the next read sends
         * a later, cumulative one. */
        (void)send(c->fd, reply, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    return true;
}

static void *
thread_main(void *arg)
{
    struct dthread *t = arg;
    struct epoll_event evs[MAX_EVENTS];
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    char *buf = malloc(RBUF);
    int i, n;

    if (buf == NULL || epoll_ctl(t->ep, EPOLL_CTL_ADD, t->lfd, &ev) < 0) {
        perror("discard");
        exit(1);
    }
    while (!atomic_load(&stopping)) {
        n = epoll_wait(t->ep, evs, MAX_EVENTS, 200);
        for (i = 0; i < n; i++) {
            struct dconn *c = evs[i].data.ptr;

            if (c == NULL) {
                int k;

                for (k = 0; k < 64; k++) {
                    int fd = accept4(t->lfd, NULL, NULL,
                                     SOCK_NONBLOCK | SOCK_CLOEXEC);
                    struct epoll_event cev = {.events = EPOLLIN};

                    if (fd < 0)
                        break;
                    c = calloc(1, sizeof(*c));
                    if (c == NULL) {
                        close(fd);
                        break;
                    }
                    c->fd = fd;
                    net_tune_conn(fd);
                    cev.data.ptr = c;
                    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, fd, &cev) < 0) {
                        close(fd);
                        free(c);
                    }
                }
                continue;
            }
            if (!on_read(c, buf))
                drop(t->ep, c);
        }
    }
    free(buf);
    return NULL;
}

int
main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"listen", required_argument, NULL, 'l'},
        {"threads", required_argument, NULL, 't'},
        {"ack", no_argument, NULL, 'a'},
        {"seconds", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0}};
    const char *listen_at = "127.0.0.1:5999";
    long threads = sysconf(_SC_NPROCESSORS_ONLN), i;
    double seconds = 900;
    struct dthread *ts;
    struct net_addr addr;
    struct rlimit rl;
    char err[NET_ERR_LEN], *end;
    int64_t deadline;
    int ch;

    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'l': listen_at = optarg; break;
        case 't':
            threads = strtol(optarg, &end, 10);
            if (*end != '\0' || threads < 1 || threads > 256)
                goto usage;
            break;
        case 'a': ack = true; break;
        case 's':
            seconds = strtod(optarg, &end);
            if (*end != '\0' || !(seconds > 0 && seconds <= 86400))
                goto usage;
            break;
        default:
            goto usage;
        }
    }
    if (threads < 1)
        threads = 1;
    if (net_parse_hostport(listen_at, true, &addr, err, sizeof(err)) < 0) {
        fprintf(stderr, "discard: %s\n", err);
        return 2;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_sig);
    signal(SIGINT, on_sig);
    ts = calloc((size_t)threads, sizeof(*ts));
    if (ts == NULL)
        return 1;
    for (i = 0; i < threads; i++) {
        ts[i].lfd = net_listen(&addr, true, 65535, err, sizeof(err));
        ts[i].ep = epoll_create1(EPOLL_CLOEXEC);
        if (ts[i].lfd < 0 || ts[i].ep < 0) {
            fprintf(stderr, "discard: %s\n", err);
            return 1;
        }
    }
    for (i = 0; i < threads; i++)
        if (pthread_create(&ts[i].tid, NULL, thread_main, &ts[i]) != 0)
            return 1;
    fprintf(stderr, "discard: listening on %s, %ld threads%s\n", listen_at,
            threads, ack ? ", acknowledging lines" : "");
    deadline = clock_mono_ms() + (int64_t)(seconds * 1000);
    while (!atomic_load(&stopping) && clock_mono_ms() < deadline)
        usleep(50000);
    atomic_store(&stopping, true);
    for (i = 0; i < threads; i++)
        pthread_join(ts[i].tid, NULL);
    printf("lines=%llu bytes=%llu\n",
           (unsigned long long)atomic_load(&total_lines),
           (unsigned long long)atomic_load(&total_bytes));
    free(ts);
    return 0;
usage:
    fprintf(stderr, "usage: discard --listen H:P [--threads N] [--ack] "
                    "[--seconds S]\n");
    return 2;
}
