/*
 * presence: which sensors are connected now. A small thread-safe registry
 * from sensor id to the number of open connections whose latest reading
 * came from that sensor.
 *
 * Writers are the workers: a connection holds one counted reference to the
 * entry of the sensor it sent last, and conn.c moves it only when the
 * sensor changes (presence_is() is a lock-free memcmp, so a connection that
 * keeps sending one sensor costs no lock) and drops it when it closes.
 * The reader is the HTTP thread (GET /api/sensors).
 *
 * Bounded: at most max_sensors entries; past that a new sensor is simply
 * not shown as connected (presence_switch returns NULL) until others go.
 * An entry is freed when its last connection leaves.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_PRESENCE_H
#define SN_PRESENCE_H

#include <stdbool.h>
#include <stddef.h>

struct presence;
struct presence_entry;

/* A registry of at most max_sensors sensors (0: PRESENCE_MAX_DEFAULT).
 * NULL + errno on allocation failure. */
#define PRESENCE_MAX_DEFAULT 262144
struct presence *presence_new(size_t max_sensors);
/* Frees the registry and every entry still in it. NULL: no-op. */
void presence_free(struct presence *p);

/*
 * Move one connection's reference from old (NULL: none) to the sensor
 * (name, len): returns the sensor's entry, its count raised by one, with
 * old's count lowered by one. NULL when the registry is full or out of
 * memory (old is dropped all the same). Any thread. p NULL: returns NULL.
 */
struct presence_entry *presence_switch(struct presence *p,
                                       struct presence_entry *old,
                                       const char *name, size_t len);

/* True if e (may be NULL: false) is the entry of sensor (name, len). Takes
 * no lock: an entry's name never changes while a reference is held, and
 * only the holder calls this. */
bool presence_is(const struct presence_entry *e, const char *name,
                 size_t len);

/* Drop one connection's reference (e NULL: no-op). Any thread. */
void presence_release(struct presence *p, struct presence_entry *e);

/* Open connections whose latest reading came from sensor name
 * (NUL-terminated); 0 if none. Any thread. */
unsigned presence_count(struct presence *p, const char *name);

/* Sensors in the registry now (for /metrics). */
size_t presence_size(struct presence *p);

#endif
