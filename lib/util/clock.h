/*
 * clock: monotonic milliseconds for timeouts, wall-clock nanoseconds for
 * reading timestamps. Thread-safe.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_CLOCK_H
#define SN_CLOCK_H

#include <stdint.h>

/* Monotonic time in milliseconds (never jumps; for deadlines only). */
int64_t clock_mono_ms(void);
/* Monotonic time in nanoseconds (for latency measurements). */
int64_t clock_mono_ns(void);
/* Wall-clock time in nanoseconds since the Unix epoch. */
int64_t clock_real_ns(void);

#endif
