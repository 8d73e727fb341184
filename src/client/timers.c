/*
 * timers: see timers.h. Textbook array heap; pos is kept 1-based so that a
 * zeroed struct timer reads as "not scheduled".
 * SPDX-License-Identifier: MIT
 */
#include "client/timers.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

int
timers_init(struct timers *t, size_t cap)
{
    t->n = 0;
    t->cap = cap;
    t->heap = calloc(cap > 0 ? cap : 1, sizeof(*t->heap));
    return t->heap == NULL ? -ENOMEM : 0;
}

void
timers_free(struct timers *t)
{
    free(t->heap);
    t->heap = NULL;
    t->n = t->cap = 0;
}

static void
place(struct timers *t, size_t i, struct timer *tm)
{
    t->heap[i] = tm;
    tm->pos = i + 1;
}

static void
sift_up(struct timers *t, size_t i)
{
    struct timer *tm = t->heap[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (t->heap[parent]->when <= tm->when)
            break;
        place(t, i, t->heap[parent]);
        i = parent;
    }
    place(t, i, tm);
}

static void
sift_down(struct timers *t, size_t i)
{
    struct timer *tm = t->heap[i];

    for (;;) {
        size_t child = 2 * i + 1;

        if (child >= t->n)
            break;
        if (child + 1 < t->n && t->heap[child + 1]->when < t->heap[child]->when)
            child++;
        if (tm->when <= t->heap[child]->when)
            break;
        place(t, i, t->heap[child]);
        i = child;
    }
    place(t, i, tm);
}

static void
remove_at(struct timers *t, size_t i)
{
    struct timer *last = t->heap[--t->n];

    t->heap[i]->pos = 0;
    if (i == t->n)
        return;
    place(t, i, last);
    sift_down(t, i);
    sift_up(t, last->pos - 1);
}

void
timers_set(struct timers *t, struct timer *tm, int64_t when)
{
    if (when == TIMERS_NEVER) {
        if (tm->pos != 0)
            remove_at(t, tm->pos - 1);
        tm->when = TIMERS_NEVER;
        return;
    }
    if (tm->pos == 0) {
        assert(t->n < t->cap);
        tm->when = when;
        place(t, t->n++, tm);
        sift_up(t, t->n - 1);
        return;
    }
    tm->when = when;
    sift_down(t, tm->pos - 1);
    sift_up(t, tm->pos - 1);
}

struct timer *
timers_peek(const struct timers *t)
{
    return t->n > 0 ? t->heap[0] : NULL;
}
