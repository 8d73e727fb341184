/*
 * loadgen: the benchmark load generator. N connections on one epoll loop,
 * each pipelining line-protocol readings with at most --window lines
 * unacknowledged, counting the server's cumulative "OK n" replies. Bounded
 * in lines and in time; stops by itself.
 *
 *   loadgen --server 127.0.0.1:5000 --conns 100 --lines 100000
 *           [--window 5000] [--seconds 60] [--idle] [--bind 127.0.0.2]
 *
 * --idle opens the connections, sends nothing, holds them until --seconds
 * or SIGINT, for memory-per-connection measurements; --bind picks the
 * source addresses (comma list: several 127.x addresses give more than 64k
 * connections). Prints one summary line:
 *   conns=N sent=N acked=N errs=N seconds=S rate=R/s lat_p50_ms=.. ..
 * Latency: time from sending a line to the OK that covers it (sampled).
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
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

#define MAX_BIND 16
#define LAT_SAMPLES 200000

struct lconn {
    int fd;
    int id;
    uint64_t sent, acked, errs;
    uint64_t target;
    bool connected, done;
    char rbuf[4096];
    size_t rlen;
    char wbuf[65536];
    size_t wlen, wpos;
    /* latency sampling: one line at a time */
    uint64_t probe_line;
    int64_t probe_ns;
};

static volatile sig_atomic_t stop;
static double lat[LAT_SAMPLES];
static size_t n_lat;

static void
on_sig(int sig)
{
    (void)sig;
    stop = 1;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double
pct(double p)
{
    size_t i;

    if (n_lat == 0)
        return 0;
    i = (size_t)(p / 100.0 * (double)(n_lat - 1));
    return lat[i];
}

static void
fill(struct lconn *c, uint64_t window, int64_t base_ts)
{
    while (c->sent < c->target && c->sent - c->acked < window &&
           c->wlen + 128 < sizeof(c->wbuf)) {
        int n = snprintf(c->wbuf + c->wlen, sizeof(c->wbuf) - c->wlen,
                         "bench,sensor=lg%d temperature=%d.%02d %lld\n",
                         c->id, (int)(c->sent % 40), (int)(c->sent % 100),
                         (long long)(base_ts + (int64_t)c->sent));

        c->wlen += (size_t)n;
        c->sent++;
        if (c->probe_line == 0 && n_lat < LAT_SAMPLES) {
            c->probe_line = c->sent;
            c->probe_ns = clock_mono_ns();
        }
    }
}

static void
parse_replies(struct lconn *c)
{
    char *p = c->rbuf, *nl;
    size_t left = c->rlen;

    while ((nl = memchr(p, '\n', left)) != NULL) {
        *nl = '\0';
        if (strncmp(p, "OK ", 3) == 0) {
            c->acked = strtoull(p + 3, NULL, 10);
            if (c->probe_line != 0 && c->acked >= c->probe_line) {
                lat[n_lat++] = (double)(clock_mono_ns() - c->probe_ns) / 1e6;
                c->probe_line = 0;
            }
        } else {
            c->errs++;
        }
        left -= (size_t)(nl + 1 - p);
        p = nl + 1;
    }
    memmove(c->rbuf, p, left);
    c->rlen = left;
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
        {"idle", no_argument, NULL, 'i'},
        {"bind", required_argument, NULL, 'b'},
        {NULL, 0, NULL, 0}};
    const char *server = "127.0.0.1:5000";
    char *binds[MAX_BIND];
    int n_bind = 0;
    long conns = 100;
    uint64_t lines = 100000, window = 5000, total_sent = 0, total_acked = 0,
             total_errs = 0, want;
    double seconds = 60;
    bool idle = false;
    struct net_addr addr;
    char err[256];
    struct lconn *cs;
    struct epoll_event ev, evs[512];
    struct rlimit rl;
    int ep, ch, i, n, open_conns = 0, done = 0;
    int64_t t0, deadline, base_ts;

    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 's': server = optarg; break;
        case 'c': conns = strtol(optarg, NULL, 10); break;
        case 'n': lines = strtoull(optarg, NULL, 10); break;
        case 'w': window = strtoull(optarg, NULL, 10); break;
        case 't': seconds = strtod(optarg, NULL); break;
        case 'i': idle = true; break;
        case 'b': {
            char *tok, *save = NULL;

            for (tok = strtok_r(optarg, ",", &save);
                 tok != NULL && n_bind < MAX_BIND;
                 tok = strtok_r(NULL, ",", &save))
                binds[n_bind++] = tok;
            break;
        }
        default:
            fprintf(stderr, "usage: loadgen --server H:P --conns N "
                            "--lines N [--window N] [--seconds S] "
                            "[--idle] [--bind A,B]\n");
            return 2;
        }
    }
    if (conns < 1 || conns > 1000000 || window < 1 || seconds <= 0) {
        fprintf(stderr, "loadgen: bad --conns, --window or --seconds\n");
        return 2;
    }
    if (net_parse_hostport(server, false, &addr, err, sizeof(err)) < 0) {
        fprintf(stderr, "loadgen: %s\n", err);
        return 2;
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max = (rlim_t)conns + 64 > rl.rlim_max
                                    ? (rlim_t)conns + 64
                                    : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGINT, on_sig);
    signal(SIGTERM, on_sig);
    signal(SIGPIPE, SIG_IGN);
    cs = calloc((size_t)conns, sizeof(*cs));
    ep = epoll_create1(0);
    if (cs == NULL || ep < 0) {
        perror("loadgen");
        return 1;
    }
    base_ts = clock_real_ns();
    t0 = clock_mono_ns();
    deadline = t0 + (int64_t)(seconds * 1e9);
    for (i = 0; i < conns; i++) {
        struct lconn *c = &cs[i];

        c->id = i;
        c->target = idle ? 0 : lines;
        c->fd = socket(addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (c->fd < 0) {
            fprintf(stderr, "loadgen: socket %d: %s\n", i, strerror(errno));
            conns = i;
            break;
        }
        if (n_bind > 0) {
            struct sockaddr_in b = {.sin_family = AF_INET};
            int one = 1;

            setsockopt(c->fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one,
                       sizeof(one));
            inet_pton(AF_INET, binds[i % n_bind], &b.sin_addr);
            if (bind(c->fd, (struct sockaddr *)&b, sizeof(b)) < 0) {
                fprintf(stderr, "loadgen: bind: %s\n", strerror(errno));
                return 1;
            }
        }
        if (connect(c->fd, (struct sockaddr *)&addr.ss, addr.len) < 0 &&
            errno != EINPROGRESS) {
            fprintf(stderr, "loadgen: connect %d: %s\n", i, strerror(errno));
            close(c->fd);
            c->fd = -1;
            c->done = true;
            done++;
            continue;
        }
        ev.events = EPOLLIN | EPOLLOUT;
        ev.data.ptr = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        open_conns++;
    }
    want = idle ? 0 : lines * (uint64_t)conns;
    while (!stop && clock_mono_ns() < deadline &&
           (idle || total_acked < want) && done < conns) {
        n = epoll_wait(ep, evs, 512, 100);
        for (i = 0; i < n; i++) {
            struct lconn *c = evs[i].data.ptr;
            uint64_t before = c->acked;

            if (evs[i].events & (EPOLLERR | EPOLLHUP) && !c->connected) {
                fprintf(stderr, "loadgen: connection %d failed\n", c->id);
                close(c->fd);
                c->fd = -1;
                c->done = true;
                done++;
                continue;
            }
            c->connected = true;
            if (evs[i].events & EPOLLIN) {
                ssize_t r = recv(c->fd, c->rbuf + c->rlen,
                                 sizeof(c->rbuf) - c->rlen - 1, 0);

                if (r > 0) {
                    c->rlen += (size_t)r;
                    parse_replies(c);
                    total_acked += c->acked - before;
                } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    close(c->fd);
                    c->fd = -1;
                    c->done = true;
                    done++;
                    continue;
                }
            }
            if (idle) {
                ev.events = EPOLLIN;
                ev.data.ptr = c;
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                continue;
            }
            fill(c, window, base_ts);
            while (c->wpos < c->wlen) {
                ssize_t w = send(c->fd, c->wbuf + c->wpos, c->wlen - c->wpos,
                                 MSG_NOSIGNAL);

                if (w <= 0)
                    break;
                c->wpos += (size_t)w;
            }
            if (c->wpos == c->wlen)
                c->wpos = c->wlen = 0;
            ev.events = EPOLLIN | (c->wlen > 0 || (c->sent < c->target &&
                                                   c->sent - c->acked < window)
                                       ? EPOLLOUT
                                       : 0);
            ev.data.ptr = c;
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
    }
    for (i = 0; i < conns; i++) {
        total_sent += cs[i].sent;
        total_errs += cs[i].errs;
        if (cs[i].fd >= 0)
            close(cs[i].fd);
    }
    {
        double secs = (double)(clock_mono_ns() - t0) / 1e9;

        qsort(lat, n_lat, sizeof(lat[0]), cmp_double);
        printf("conns=%d sent=%llu acked=%llu errs=%llu seconds=%.3f "
               "rate=%.0f lat_p50_ms=%.3f lat_p99_ms=%.3f lat_p999_ms=%.3f\n",
               open_conns, (unsigned long long)total_sent,
               (unsigned long long)total_acked,
               (unsigned long long)total_errs, secs,
               (double)total_acked / secs, pct(50), pct(99), pct(99.9));
    }
    free(cs);
    close(ep);
    return total_errs == 0 ? 0 : 1;
}
