/*
 * timers: a binary min-heap of deadlines, one per sensor, so the event loop
 * finds the next thing to do in O(1) and reschedules in O(log n) however
 * many sensors one process simulates (libuv's timer heap, nginx's rbtree).
 *
 * Intrusive: each user embeds a struct timer and gets back to itself with
 * container_of-style arithmetic. The heap never allocates after
 * timers_init(), so rescheduling cannot fail.
 * Not thread-safe: one event loop.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_CLIENT_TIMERS_H
#define SN_CLIENT_TIMERS_H

#include <stddef.h>
#include <stdint.h>

/* "No deadline": timers_set() with it unschedules. */
#define TIMERS_NEVER INT64_MAX

/* Embedded by the user; zero-initialise it. Fields are private except
 * when (read only). */
struct timer {
    int64_t when; /* deadline, in the caller's clock (ns here) */
    size_t pos;   /* 1 + index in the heap, 0 when not scheduled */
};

struct timers {
    struct timer **heap;
    size_t n, cap;
};

/* Room for cap timers. Returns 0 or -ENOMEM. */
int timers_init(struct timers *t, size_t cap);
void timers_free(struct timers *t);

/* Schedule tm (borrowed until unscheduled) at when, moving it if it was
 * already scheduled; when == TIMERS_NEVER unschedules it. At most cap
 * timers may be scheduled at once (a programming error otherwise). */
void timers_set(struct timers *t, struct timer *tm, int64_t when);
/* The earliest timer, or NULL when none is scheduled. */
struct timer *timers_peek(const struct timers *t);

#endif
