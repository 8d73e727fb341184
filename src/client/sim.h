/*
 * sim: the simulated sensors. Each kind has the original's defaults (id,
 * period, range, wire names); each sensor's values follow a bounded random
 * walk with 2 decimals, so consecutive readings look like a real signal and
 * not independent noise.
 *
 * Invariant: every value sim_next() returns lies in [lo, hi] and is a
 * multiple of 0.01 (to the nearest double). Pure and deterministic for a
 * given seed; no global state.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_CLIENT_SIM_H
#define SN_CLIENT_SIM_H

#include <stdint.h>

#include "client/rng.h"

enum sim_kind {
    SIM_TEMPERATURE = 0,
    SIM_HUMIDITY = 1,
};

/* The fixed description of a kind; static storage, never freed. */
struct sim_kind_info {
    const char *name;       /* --kind value: "temperature" */
    const char *default_id; /* the original's id: "Sensor1" */
    int64_t interval_ms;    /* the original's period: 2000 */
    double lo, hi;          /* value range: 20.0, 30.0 */
    const char *label;      /* text form quantity: "Temperatura" */
    const char *unit;       /* text form unit: "°C" */
    const char *field;      /* line protocol field key: "temperature" */
};

/* The description of kind (a valid enum sim_kind). */
const struct sim_kind_info *sim_kind_info(enum sim_kind kind);
/* Look a kind up by its --kind name; 0 and *out set, or -EINVAL. */
int sim_kind_parse(const char *name, enum sim_kind *out);

/* One sensor's walk. Caller-owned; fields are private except value. */
struct sim {
    double lo, hi;
    double step;  /* largest change between two readings */
    double value; /* the last value returned (or the start value) */
    struct rng rng;
};

/* Start a walk over [lo, hi] (hi > lo) at a random point chosen by seed. */
void sim_init(struct sim *s, double lo, double hi, uint64_t seed);
/* Advance the walk by one uniform step in [-step, step], reflecting at the
 * bounds, and return the new value rounded to 2 decimals. */
double sim_next(struct sim *s);

#endif
