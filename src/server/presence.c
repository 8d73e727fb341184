/*
 * presence: see presence.h. A chained hash table under one mutex; the
 * table's bucket count is fixed at creation (a power of two near a quarter
 * of the cap), so nothing is ever rehashed and the only allocations are
 * the entries themselves. The hash is seeded per registry, so sensor names
 * chosen to collide cannot be prepared in advance.
 * SPDX-License-Identifier: MIT
 */
#include "server/presence.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

struct presence_entry {
    struct presence_entry *next; /* bucket chain */
    uint64_t hash;
    unsigned count;              /* connections holding it */
    size_t len;
    char name[];                 /* NUL-terminated too */
};

struct presence {
    pthread_mutex_t mu;
    struct presence_entry **buckets;
    size_t mask;
    size_t n, max;
    uint64_t seed;
};

static uint64_t
hash_name(uint64_t seed, const char *p, size_t len)
{
    uint64_t h = seed ^ 1469598103934665603ULL;
    size_t i;

    for (i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    h ^= h >> 32;
    return h;
}

struct presence *
presence_new(size_t max_sensors)
{
    struct presence *p = calloc(1, sizeof(*p));
    size_t n_buckets = 64;

    if (p == NULL)
        return NULL;
    p->max = max_sensors != 0 ? max_sensors : PRESENCE_MAX_DEFAULT;
    while (n_buckets < p->max / 4 && n_buckets < ((size_t)1 << 20))
        n_buckets *= 2;
    p->buckets = calloc(n_buckets, sizeof(*p->buckets));
    if (p->buckets == NULL) {
        free(p);
        errno = ENOMEM;
        return NULL;
    }
    p->mask = n_buckets - 1;
    if (getrandom(&p->seed, sizeof(p->seed), GRND_NONBLOCK) !=
        (ssize_t)sizeof(p->seed)) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        p->seed = (uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)p;
    }
    pthread_mutex_init(&p->mu, NULL);
    return p;
}

void
presence_free(struct presence *p)
{
    size_t i;

    if (p == NULL)
        return;
    for (i = 0; i <= p->mask; i++) {
        struct presence_entry *e = p->buckets[i], *next;

        for (; e != NULL; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(p->buckets);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* Lower e's count, unlinking and freeing it at zero; mu held. */
static void
put_locked(struct presence *p, struct presence_entry *e)
{
    struct presence_entry **pp;

    if (--e->count > 0)
        return;
    for (pp = &p->buckets[e->hash & p->mask]; *pp != NULL;
         pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            p->n--;
            free(e);
            return;
        }
    }
}

static struct presence_entry *
find_locked(struct presence *p, uint64_t h, const char *name, size_t len)
{
    struct presence_entry *e;

    for (e = p->buckets[h & p->mask]; e != NULL; e = e->next)
        if (e->hash == h && e->len == len && memcmp(e->name, name, len) == 0)
            return e;
    return NULL;
}

struct presence_entry *
presence_switch(struct presence *p, struct presence_entry *old,
                const char *name, size_t len)
{
    struct presence_entry *e;
    uint64_t h;

    if (p == NULL)
        return NULL;
    h = hash_name(p->seed, name, len);
    pthread_mutex_lock(&p->mu);
    if (old != NULL)
        put_locked(p, old);
    e = find_locked(p, h, name, len);
    if (e == NULL && p->n < p->max) {
        e = malloc(sizeof(*e) + len + 1);
        if (e != NULL) {
            e->hash = h;
            e->count = 0;
            e->len = len;
            memcpy(e->name, name, len);
            e->name[len] = '\0';
            e->next = p->buckets[h & p->mask];
            p->buckets[h & p->mask] = e;
            p->n++;
        }
    }
    if (e != NULL)
        e->count++;
    pthread_mutex_unlock(&p->mu);
    return e;
}

bool
presence_is(const struct presence_entry *e, const char *name, size_t len)
{
    return e != NULL && e->len == len && memcmp(e->name, name, len) == 0;
}

void
presence_release(struct presence *p, struct presence_entry *e)
{
    if (p == NULL || e == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    put_locked(p, e);
    pthread_mutex_unlock(&p->mu);
}

unsigned
presence_count(struct presence *p, const char *name)
{
    struct presence_entry *e;
    size_t len;
    unsigned n;

    if (p == NULL || name == NULL)
        return 0;
    len = strlen(name);
    pthread_mutex_lock(&p->mu);
    e = find_locked(p, hash_name(p->seed, name, len), name, len);
    n = e != NULL ? e->count : 0;
    pthread_mutex_unlock(&p->mu);
    return n;
}

size_t
presence_size(struct presence *p)
{
    size_t n;

    if (p == NULL)
        return 0;
    pthread_mutex_lock(&p->mu);
    n = p->n;
    pthread_mutex_unlock(&p->mu);
    return n;
}
