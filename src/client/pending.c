/*
 * pending: see pending.h. A ring buffer of slots that grows by doubling up
 * to max. Refused readings in the sent region stay as tombstones until they
 * reach the head or the connection ends, so that the line number of the
 * slot at head + i is always first_line + i while connected.
 * SPDX-License-Identifier: MIT
 */
#include "client/pending.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Slots allocated at first; a lightly loaded sensor never grows past it. */
#define INITIAL_CAP 64
/* An empty queue at least this large shrinks back to INITIAL_CAP, giving
 * back what an outage made it grow without reallocating on every burst. */
#define SHRINK_CAP (INITIAL_CAP * 16)

#define SLOT_F_REFUSED 0x1 /* tombstone: ERR received for it */
#define SLOT_F_SENT 0x2    /* sent on some connection before */

struct slot {
    struct pending_entry e;
    uint32_t flags;
};

struct pending {
    struct slot *ring;
    size_t cap;        /* slots allocated */
    size_t max;        /* hard cap on used */
    size_t head;       /* index of the oldest slot */
    size_t used;       /* slots in use, tombstones included */
    size_t n_sent;     /* slots from head sent on this connection */
    size_t n_tomb;     /* tombstones among those */
    uint64_t next_line; /* line number the next sent slot gets */
    uint64_t accepted;  /* the last OK count on this connection */
};

static struct slot *
at(const struct pending *pq, size_t i)
{
    return &pq->ring[(pq->head + i) % pq->cap];
}

/* Line number of the slot at head (when n_sent > 0). */
static uint64_t
head_line(const struct pending *pq)
{
    return pq->next_line - pq->n_sent;
}

static void
pop_head(struct pending *pq)
{
    if (at(pq, 0)->flags & SLOT_F_REFUSED)
        pq->n_tomb--;
    pq->head = (pq->head + 1) % pq->cap;
    pq->used--;
    pq->n_sent--;
}

static void
pop_tombstones(struct pending *pq)
{
    while (pq->n_sent > 0 && (at(pq, 0)->flags & SLOT_F_REFUSED))
        pop_head(pq);
}

/* Copy the slots in order into a new array of new_cap (>= used). */
static int
resize(struct pending *pq, size_t new_cap)
{
    struct slot *ring = malloc(new_cap * sizeof(*ring));
    size_t i;

    if (ring == NULL)
        return -ENOMEM;
    for (i = 0; i < pq->used; i++)
        ring[i] = *at(pq, i);
    free(pq->ring);
    pq->ring = ring;
    pq->cap = new_cap;
    pq->head = 0;
    return 0;
}

/* Best effort: if the smaller array cannot be had, the larger one stays. */
static void
maybe_shrink(struct pending *pq)
{
    if (pq->used == 0 && pq->cap >= SHRINK_CAP)
        resize(pq, INITIAL_CAP);
}

struct pending *
pending_new(size_t max)
{
    struct pending *pq;

    if (max < 1 || max > PENDING_MAX_LIMIT) {
        errno = EINVAL;
        return NULL;
    }
    pq = calloc(1, sizeof(*pq));
    if (pq == NULL)
        return NULL;
    pq->cap = max < INITIAL_CAP ? max : INITIAL_CAP;
    pq->ring = malloc(pq->cap * sizeof(*pq->ring));
    if (pq->ring == NULL) {
        free(pq);
        errno = ENOMEM;
        return NULL;
    }
    pq->max = max;
    pq->next_line = 1;
    return pq;
}

void
pending_destroy(struct pending *pq)
{
    if (pq == NULL)
        return;
    free(pq->ring);
    free(pq);
}

int
pending_reserve(struct pending *pq)
{
    if (pq->used == pq->max)
        return -ENOBUFS;
    if (pq->used == pq->cap) {
        size_t new_cap = pq->cap <= pq->max / 2 ? pq->cap * 2 : pq->max;

        return resize(pq, new_cap);
    }
    return 0;
}

int
pending_push(struct pending *pq, const struct pending_entry *e)
{
    struct slot *s;
    int rc;

    rc = pending_reserve(pq);
    if (rc < 0)
        return rc;
    s = at(pq, pq->used);
    s->e = *e;
    s->flags = 0;
    pq->used++;
    return 0;
}

const struct pending_entry *
pending_peek(const struct pending *pq)
{
    /* Refused slots never stay at the head (pop_tombstones). */
    return pq->used > 0 ? &at(pq, 0)->e : NULL;
}

size_t
pending_drop_unsent(struct pending *pq, uint64_t seq)
{
    size_t k = 0, i;

    while (pq->n_sent + k < pq->used && at(pq, pq->n_sent + k)->e.seq <= seq)
        k++;
    if (k == 0)
        return 0;
    /* Slide the sent slots over the dropped ones, so that the head keeps
     * its line number. */
    for (i = pq->n_sent; i-- > 0;)
        *at(pq, i + k) = *at(pq, i);
    pq->head = (pq->head + k) % pq->cap;
    pq->used -= k;
    maybe_shrink(pq);
    return k;
}

size_t
pending_len(const struct pending *pq)
{
    return pq->used - pq->n_tomb;
}

bool
pending_full(const struct pending *pq)
{
    return pq->used == pq->max;
}

size_t
pending_unsent(const struct pending *pq)
{
    return pq->used - pq->n_sent;
}

size_t
pending_inflight(const struct pending *pq)
{
    return pq->n_sent - pq->n_tomb;
}

uint64_t
pending_accepted(const struct pending *pq)
{
    return pq->accepted;
}

const struct pending_entry *
pending_send_next(struct pending *pq, uint64_t *line, bool *resend)
{
    struct slot *s;

    if (pq->n_sent == pq->used)
        return NULL;
    s = at(pq, pq->n_sent);
    *resend = (s->flags & SLOT_F_SENT) != 0;
    s->flags |= SLOT_F_SENT;
    *line = pq->next_line++;
    pq->n_sent++;
    return &s->e;
}

int
pending_ok(struct pending *pq, uint64_t n, size_t *n_acked)
{
    uint64_t need;
    size_t done = 0;

    *n_acked = 0;
    if (n <= pq->accepted)
        return 0;
    need = n - pq->accepted;
    if (need > pending_inflight(pq))
        return -EPROTO;
    /* Tombstones never sit at the head (popped eagerly), so each pop here
     * is an accepted reading until the last, and then tombstones behind it
     * go too. */
    while (done < need) {
        pop_head(pq);
        done++;
        pop_tombstones(pq);
    }
    pq->accepted = n;
    *n_acked = done;
    maybe_shrink(pq);
    return 0;
}

int
pending_err(struct pending *pq, uint64_t line, struct pending_entry *out)
{
    struct slot *s;
    uint64_t first;

    if (pq->n_sent == 0)
        return -ENOENT;
    first = head_line(pq);
    if (line < first || line >= pq->next_line)
        return -ENOENT;
    s = at(pq, (size_t)(line - first));
    if (s->flags & SLOT_F_REFUSED)
        return -EALREADY;
    if (out != NULL)
        *out = s->e;
    s->flags |= SLOT_F_REFUSED;
    pq->n_tomb++;
    pop_tombstones(pq);
    maybe_shrink(pq);
    return 0;
}

void
pending_rewind(struct pending *pq)
{
    size_t i, w = 0;

    /* Squeeze the tombstones out, keeping the order of the rest. */
    if (pq->n_tomb > 0) {
        for (i = 0; i < pq->used; i++) {
            struct slot *s = at(pq, i);

            if (!(s->flags & SLOT_F_REFUSED))
                *at(pq, w++) = *s;
        }
        pq->used = w;
    }
    pq->n_sent = 0;
    pq->n_tomb = 0;
    pq->next_line = 1;
    pq->accepted = 0;
    maybe_shrink(pq);
}
