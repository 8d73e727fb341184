/*
 * loop: a single-threaded, level-triggered epoll event loop (Redis ae,
 * libuv). One per network thread; it owns the fds registered on it.
 *
 * An fd is registered with a caller-embedded struct loop_io, whose address
 * is what epoll hands back: the owner must keep it alive until after
 * loop_del() and the end of the current loop iteration (free connections in
 * the tick callback, never inside their own I/O callback).
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_LOOP_H
#define SN_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct loop;
struct loop_io;

typedef void loop_io_fn(struct loop_io *io, uint32_t events);
/* Called before each wait; returns the wait timeout in ms (-1: none). */
typedef int loop_tick_fn(void *arg);

struct loop_io {
    int fd;
    uint32_t events; /* EPOLLIN/EPOLLOUT currently armed */
    loop_io_fn *fn;
    void *arg;
};

/* A new loop handling at most max_events per wait; NULL + errno. */
struct loop *loop_new(int max_events, loop_tick_fn *tick, void *tick_arg);
void loop_free(struct loop *l);

/* Register io->fd for events with callback fn. Returns 0 or -errno. */
int loop_add(struct loop *l, struct loop_io *io, int fd, uint32_t events,
             loop_io_fn *fn, void *arg);
/* Change the armed events (no system call if unchanged). */
int loop_mod(struct loop *l, struct loop_io *io, uint32_t events);
/* Unregister (before closing the fd). */
void loop_del(struct loop *l, struct loop_io *io);

/* Run until loop_stop(); returns 0 or -errno if epoll_wait fails. */
int loop_run(struct loop *l);
/* Make loop_run() return after the current iteration (loop thread only). */
void loop_stop(struct loop *l);

#endif
