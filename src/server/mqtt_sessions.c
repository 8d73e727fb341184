/*
 * mqtt_sessions: the registry of connected MQTT client ids (see the
 * header). A chained hash table (FNV-1a) that doubles when it holds more
 * sessions than buckets, and a singly linked mailbox per worker, all under
 * one mutex.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "server/mqtt_sessions.h"

#define BUCKETS_MIN 64

struct mqtt_sessions {
    pthread_mutex_t mu;
    struct mqtt_session **buckets;
    size_t n_buckets;        /* a power of two */
    size_t n_sessions;
    int refs;                /* workers holding it (set-up thread only) */
};

static uint32_t
hash_id(const char *p, size_t len)
{
    uint32_t h = 2166136261u;
    size_t i;

    for (i = 0; i < len; i++) {
        h ^= (uint8_t)p[i];
        h *= 16777619u;
    }
    return h;
}

struct mqtt_sessions *
mqtt_sessions_new(void)
{
    struct mqtt_sessions *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->buckets = calloc(BUCKETS_MIN, sizeof(*r->buckets));
    if (r->buckets == NULL) {
        free(r);
        errno = ENOMEM;
        return NULL;
    }
    r->n_buckets = BUCKETS_MIN;
    r->refs = 1;
    pthread_mutex_init(&r->mu, NULL);
    return r;
}

void
mqtt_sessions_ref(struct mqtt_sessions *r)
{
    r->refs++;
}

bool
mqtt_sessions_unref(struct mqtt_sessions *r)
{
    if (--r->refs > 0)
        return false;
    pthread_mutex_destroy(&r->mu);
    free(r->buckets);
    free(r);
    return true;
}

/* Double the table (lock held). On allocation failure the table stays as
 * it is: longer chains, still correct. */
static void
grow(struct mqtt_sessions *r)
{
    size_t n = r->n_buckets * 2, i;
    struct mqtt_session **b = calloc(n, sizeof(*b));

    if (b == NULL)
        return;
    for (i = 0; i < r->n_buckets; i++) {
        struct mqtt_session *s = r->buckets[i], *next;

        for (; s != NULL; s = next) {
            next = s->chain;
            s->chain = b[s->hash & (n - 1)];
            b[s->hash & (n - 1)] = s;
        }
    }
    free(r->buckets);
    r->buckets = b;
    r->n_buckets = n;
}

/* Unlink s from its bucket (lock held). */
static void
unregister(struct mqtt_sessions *r, struct mqtt_session *s)
{
    struct mqtt_session **pp = &r->buckets[s->hash & (r->n_buckets - 1)];

    while (*pp != NULL && *pp != s)
        pp = &(*pp)->chain;
    if (*pp == s)
        *pp = s->chain;
    s->chain = NULL;
    s->registered = false;
    r->n_sessions--;
}

int
mqtt_sessions_claim(struct mqtt_sessions *r, struct mqtt_session *s,
                    struct mqtt_mailbox *mbox, void *owner, const char *id,
                    size_t len)
{
    struct mqtt_session **pp, *old;
    char *copy = malloc(len + 1);
    uint32_t h = hash_id(id, len);
    int evicted = 0;

    if (copy == NULL)
        return -ENOMEM;
    memcpy(copy, id, len);
    copy[len] = '\0';
    pthread_mutex_lock(&r->mu);
    pp = &r->buckets[h & (r->n_buckets - 1)];
    for (old = *pp; old != NULL; old = old->chain)
        if (old->hash == h && old->id_len == len &&
            memcmp(old->id, id, len) == 0)
            break;
    if (old != NULL) {
        unregister(r, old);
        old->evicted = true;
        old->ev_next = old->mbox->evicted;
        old->mbox->evicted = old;
        atomic_fetch_add(&old->mbox->n_evicted, 1);
        old->mbox->wake(old->mbox->wake_arg);
        evicted = 1;
    }
    s->id = copy;
    s->id_len = len;
    s->hash = h;
    s->mbox = mbox;
    s->owner = owner;
    s->registered = true;
    s->evicted = false;
    pp = &r->buckets[h & (r->n_buckets - 1)];
    s->chain = *pp;
    *pp = s;
    r->n_sessions++;
    if (r->n_sessions > r->n_buckets)
        grow(r);
    pthread_mutex_unlock(&r->mu);
    return evicted;
}

void
mqtt_sessions_release(struct mqtt_sessions *r, struct mqtt_session *s)
{
    if (s->id == NULL)
        return; /* never claimed */
    pthread_mutex_lock(&r->mu);
    if (s->registered)
        unregister(r, s);
    if (s->evicted) {
        struct mqtt_session **pp = &s->mbox->evicted;

        while (*pp != NULL && *pp != s)
            pp = &(*pp)->ev_next;
        if (*pp == s) {
            *pp = s->ev_next;
            atomic_fetch_sub(&s->mbox->n_evicted, 1);
        }
        s->evicted = false;
        s->ev_next = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    free(s->id);
    s->id = NULL;
    s->id_len = 0;
}

size_t
mqtt_sessions_evicted(struct mqtt_sessions *r, struct mqtt_mailbox *mbox,
                      void **out, size_t max)
{
    size_t n = 0;

    if (atomic_load(&mbox->n_evicted) == 0)
        return 0;
    pthread_mutex_lock(&r->mu);
    while (n < max && mbox->evicted != NULL) {
        struct mqtt_session *s = mbox->evicted;

        mbox->evicted = s->ev_next;
        s->ev_next = NULL;
        s->evicted = false;
        atomic_fetch_sub(&mbox->n_evicted, 1);
        out[n++] = s->owner;
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}
