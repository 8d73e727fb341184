/*
 * loop: see loop.h. Level-triggered, so a callback that leaves bytes unread
 * (a read budget) is simply called again on the next iteration.
 * SPDX-License-Identifier: MIT
 */
#include "server/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

struct loop {
    int epfd;
    int max_events;
    bool stop;
    loop_tick_fn *tick;
    void *tick_arg;
    struct epoll_event *events;
};

struct loop *
loop_new(int max_events, loop_tick_fn *tick, void *tick_arg)
{
    struct loop *l = calloc(1, sizeof(*l));

    if (l == NULL)
        return NULL;
    l->epfd = -1;
    l->events = calloc((size_t)max_events, sizeof(*l->events));
    if (l->events == NULL)
        goto fail;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0)
        goto fail;
    l->max_events = max_events;
    l->tick = tick;
    l->tick_arg = tick_arg;
    return l;
fail:
    free(l->events);
    free(l);
    return NULL;
}

void
loop_free(struct loop *l)
{
    if (l == NULL)
        return;
    close(l->epfd);
    free(l->events);
    free(l);
}

int
loop_add(struct loop *l, struct loop_io *io, int fd, uint32_t events,
         loop_io_fn *fn, void *arg)
{
    struct epoll_event ev = {.events = events, .data.ptr = io};

    io->fd = fd;
    io->events = events;
    io->fn = fn;
    io->arg = arg;
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return -errno;
    return 0;
}

int
loop_mod(struct loop *l, struct loop_io *io, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = io};

    if (io->events == events)
        return 0;
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0)
        return -errno;
    io->events = events;
    return 0;
}

void
loop_del(struct loop *l, struct loop_io *io)
{
    /* Fails only if the fd was never added or is already closed. */
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    io->events = 0;
}

int
loop_run(struct loop *l)
{
    int i, n, timeout;

    l->stop = false;
    while (!l->stop) {
        timeout = l->tick(l->tick_arg);
        if (l->stop)
            break;
        n = epoll_wait(l->epfd, l->events, l->max_events, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        for (i = 0; i < n; i++) {
            struct loop_io *io = l->events[i].data.ptr;

            io->fn(io, l->events[i].events);
        }
    }
    return 0;
}

void
loop_stop(struct loop *l)
{
    l->stop = true;
}
