/*
 * rng: see rng.h. splitmix64 (Steele, Lea and Flood, "Fast splittable
 * pseudorandom number generators", 2014): one 64-bit add per step and a
 * strong output mix, good enough for simulation and jitter.
 * SPDX-License-Identifier: MIT
 */
#include "client/rng.h"

#define GOLDEN UINT64_C(0x9e3779b97f4a7c15)

static uint64_t
mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

void
rng_seed(struct rng *r, uint64_t seed)
{
    r->state = seed;
}

uint64_t
rng_next(struct rng *r)
{
    r->state += GOLDEN;
    return mix(r->state);
}

double
rng_double(struct rng *r)
{
    /* The top 53 bits fill a double's mantissa exactly. */
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t
rng_upto(struct rng *r, uint64_t n)
{
    uint64_t span, limit, v;

    if (n == UINT64_MAX)
        return rng_next(r);
    span = n + 1;
    /* Reject the top partial span so that every result is equally likely. */
    limit = UINT64_MAX - UINT64_MAX % span;
    do {
        v = rng_next(r);
    } while (v >= limit);
    return v % span;
}

uint64_t
rng_derive(uint64_t seed, uint64_t stream)
{
    return mix(seed ^ mix(stream + GOLDEN));
}
