/*
 * backoff: reconnect delays, capped exponential with full jitter (the
 * delay is uniform in [1 ms, min(cap, base * 2^attempt)]), so that a
 * thousand sensors that lost the same server do not all come back at the
 * same instant. Reset it once a connection has proved stable.
 *
 * Pure: the caller passes the random source. No global state.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_CLIENT_BACKOFF_H
#define SN_CLIENT_BACKOFF_H

#include <stdint.h>

#include "client/rng.h"

/* The first ceiling. */
#define BACKOFF_BASE_MS 100

/* Caller-owned; read attempt only. */
struct backoff {
    int64_t base_ms;
    int64_t cap_ms;
    int64_t ceil_ms;  /* ceiling of the next delay */
    uint32_t attempt; /* delays handed out since the last reset */
};

/* base_ms >= 1; cap_ms >= base_ms (a smaller cap is raised to base_ms). */
void backoff_init(struct backoff *b, int64_t base_ms, int64_t cap_ms);
/* Forget past failures: the next delay is at most base_ms again. */
void backoff_reset(struct backoff *b);
/* The next delay in ms, in [1, min(cap, base * 2^attempt)]; then doubles
 * the ceiling (never past the cap). */
int64_t backoff_next(struct backoff *b, struct rng *r);

#endif
