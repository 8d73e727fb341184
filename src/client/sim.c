/*
 * sim: see sim.h. Walk: v' = reflect(v + U(-step, step)), rounded to 0.01.
 * The step is 2% of the range, so temperature moves at most 0.2 °C and
 * humidity 0.6 % per reading.
 * SPDX-License-Identifier: MIT
 */
#include "client/sim.h"

#include <errno.h>
#include <math.h>
#include <string.h>

static const struct sim_kind_info kinds[] = {
    [SIM_TEMPERATURE] = {"temperature", "Sensor1", 2000, 20.0, 30.0,
                         "Temperatura", "°C", "temperature"},
    [SIM_HUMIDITY] = {"humidity", "Sensor2", 3000, 40.0, 70.0, "Umidade",
                      "%", "humidity"},
};

const struct sim_kind_info *
sim_kind_info(enum sim_kind kind)
{
    return &kinds[kind];
}

int
sim_kind_parse(const char *name, enum sim_kind *out)
{
    size_t i;

    for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (strcmp(name, kinds[i].name) == 0) {
            *out = (enum sim_kind)i;
            return 0;
        }
    }
    return -EINVAL;
}

/* Round to 2 decimals and keep inside [lo, hi]; the bounds themselves are
 * whole hundredths, so the clamp only catches rounding at the very edge. */
static double
round2(const struct sim *s, double v)
{
    v = round(v * 100.0) / 100.0;
    if (v < s->lo)
        v = s->lo;
    if (v > s->hi)
        v = s->hi;
    return v;
}

void
sim_init(struct sim *s, double lo, double hi, uint64_t seed)
{
    s->lo = lo;
    s->hi = hi;
    s->step = (hi - lo) / 50.0;
    rng_seed(&s->rng, seed);
    s->value = round2(s, lo + rng_double(&s->rng) * (hi - lo));
}

double
sim_next(struct sim *s)
{
    double v = s->value + (rng_double(&s->rng) * 2.0 - 1.0) * s->step;

    /* Reflect rather than clamp, so the walk does not stick to a bound. The
     * step is below the range, so one reflection always lands inside. */
    if (v > s->hi)
        v = s->hi - (v - s->hi);
    if (v < s->lo)
        v = s->lo + (s->lo - v);
    s->value = round2(s, v);
    return s->value;
}
