/*
 * backoff: see backoff.h. "Full jitter" as in Brooker, "Exponential Backoff
 * And Jitter" (AWS Architecture Blog, 2015), with a 1 ms floor so that a
 * connect that fails at once never makes the event loop spin.
 * SPDX-License-Identifier: MIT
 */
#include "client/backoff.h"

void
backoff_init(struct backoff *b, int64_t base_ms, int64_t cap_ms)
{
    if (base_ms < 1)
        base_ms = 1;
    if (cap_ms < base_ms)
        cap_ms = base_ms;
    b->base_ms = base_ms;
    b->cap_ms = cap_ms;
    backoff_reset(b);
}

void
backoff_reset(struct backoff *b)
{
    b->ceil_ms = b->base_ms;
    b->attempt = 0;
}

int64_t
backoff_next(struct backoff *b, struct rng *r)
{
    int64_t d = 1 + (int64_t)rng_upto(r, (uint64_t)(b->ceil_ms - 1));

    /* Doubling stops at the cap, so the ceiling never overflows. */
    if (b->ceil_ms <= b->cap_ms / 2)
        b->ceil_ms *= 2;
    else
        b->ceil_ms = b->cap_ms;
    if (b->attempt < UINT32_MAX)
        b->attempt++;
    return d;
}
