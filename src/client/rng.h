/*
 * rng: a small, seedable pseudo-random generator (splitmix64) for the
 * simulated readings and the reconnect jitter. Not for cryptography.
 *
 * Deterministic: the same seed gives the same sequence on every machine,
 * so --seed makes a client's readings reproducible in tests. No global
 * state; each user embeds its own struct rng (one per sensor).
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_CLIENT_RNG_H
#define SN_CLIENT_RNG_H

#include <stdint.h>

/* Caller-owned; the field is private. */
struct rng {
    uint64_t state;
};

/* Start the sequence of seed. Any value, 0 included, is a good seed. */
void rng_seed(struct rng *r, uint64_t seed);
/* The next 64 uniformly distributed bits. */
uint64_t rng_next(struct rng *r);
/* Uniform in [0, 1). */
double rng_double(struct rng *r);
/* Uniform in [0, n]; n may be 0 (then 0) or UINT64_MAX. */
uint64_t rng_upto(struct rng *r, uint64_t n);
/* A seed derived from seed for the stream'th independent user (so sensor i
 * and its jitter never share a sequence). */
uint64_t rng_derive(uint64_t seed, uint64_t stream);

#endif
