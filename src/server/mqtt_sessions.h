/*
 * mqtt_sessions: which MQTT client ids are connected, across every worker
 * thread, so that a CONNECT with an id already in use closes the older
 * connection (MQTT-3.1.4-2, "session takeover").
 *
 * A connection is owned by one worker thread, and only that thread may
 * close or free it. So a takeover never touches the older connection: it
 * moves the older session to its owner's mailbox and wakes that owner,
 * which closes it in its own thread (mqtt_sessions_evicted).
 *
 * Lifetime: the registry refers to a session only while it is registered
 * or waits in a mailbox; mqtt_sessions_release, called by the owner before
 * it frees the session, removes it from both under the registry's lock, so
 * no other thread can reach the session afterwards.
 *
 * Every function may be called from any thread; one mutex guards it all
 * (a CONNECT and a close take it once; a wakeup takes it only when its
 * mailbox is not empty).
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_MQTT_SESSIONS_H
#define SN_MQTT_SESSIONS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mqtt_sessions;

/* Where a worker receives its taken-over sessions. Embedded in the
 * worker; evicted and the session links are the registry's (its lock). */
struct mqtt_mailbox {
    struct mqtt_session *evicted;   /* taken over, not yet closed */
    atomic_uint n_evicted;          /* read without the lock: a hint */
    void (*wake)(void *arg);        /* called under the lock: keep short */
    void *wake_arg;
};

/* One connected client id. Embedded in the owner's MQTT state; every
 * field is the registry's. */
struct mqtt_session {
    struct mqtt_session *chain;     /* hash bucket, while registered */
    struct mqtt_session *ev_next;   /* mailbox list, while evicted */
    struct mqtt_mailbox *mbox;      /* the owner's */
    void *owner;                    /* given back by mqtt_sessions_evicted */
    char *id;                       /* owned copy */
    size_t id_len;
    uint32_t hash;
    bool registered, evicted;
};

/* A new, empty registry with one reference; NULL (errno ENOMEM). */
struct mqtt_sessions *mqtt_sessions_new(void);
/* One more holder (a worker), from the thread that set them up. */
void mqtt_sessions_ref(struct mqtt_sessions *r);
/* Drop a reference; the last one frees the registry (then true), which
 * must then be unused: no thread may claim or release any more. */
bool mqtt_sessions_unref(struct mqtt_sessions *r);

/*
 * Register s (caller-owned, zeroed or released before) as the holder of
 * client id (id, len) (borrowed; copied), owned by owner and reachable
 * through mbox. If another session held that id, it is unregistered,
 * put in its mailbox and its owner woken: it is that owner's to close.
 * Returns 1 when an older session was evicted, 0 when the id was free,
 * -ENOMEM (nothing changed).
 */
int mqtt_sessions_claim(struct mqtt_sessions *r, struct mqtt_session *s,
                        struct mqtt_mailbox *mbox, void *owner,
                        const char *id, size_t len);

/* Forget s (the owner's thread, before freeing it): unregistered, out of
 * any mailbox, its id freed. No-op for a session never claimed. */
void mqtt_sessions_release(struct mqtt_sessions *r, struct mqtt_session *s);

/*
 * The owners (the owner argument of their claim) of up to max sessions
 * taken over from mbox's worker, removed from the mailbox; returns how
 * many were stored in out. Call it again while it fills out. The sessions
 * stay allocated (the caller owns them); closing them releases them.
 */
size_t mqtt_sessions_evicted(struct mqtt_sessions *r,
                             struct mqtt_mailbox *mbox, void **out,
                             size_t max);

#endif
