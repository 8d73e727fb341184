/*
 * batch: see batch.h. Capacities are fixed at creation; batch_room() is
 * checked before each line so a line's readings never straddle batches.
 * SPDX-License-Identifier: MIT
 */
#include "server/batch.h"

#include <stdlib.h>
#include <string.h>

/* Arena bytes reserved per reading: sensor + quantity + unit at their
 * maximum lengths, so batch_room() can be a count check. */
#define ARENA_PER_READING (2 * PROTO_MAX_NAME + PROTO_MAX_UNIT)

struct batch *
batch_new(size_t cap_readings, size_t log_cap)
{
    struct batch *b = calloc(1, sizeof(*b));

    if (b == NULL)
        return NULL;
    b->cap_readings = cap_readings;
    b->arena_cap = cap_readings * ARENA_PER_READING;
    b->log_cap = log_cap;
    b->readings = calloc(cap_readings, sizeof(*b->readings));
    b->acks = calloc(cap_readings, sizeof(*b->acks));
    b->arena = malloc(b->arena_cap);
    b->log = log_cap ? malloc(log_cap) : NULL;
    if (b->readings == NULL || b->acks == NULL || b->arena == NULL ||
        (log_cap && b->log == NULL)) {
        batch_free(b);
        return NULL;
    }
    return b;
}

void
batch_free(struct batch *b)
{
    if (b == NULL)
        return;
    free(b->readings);
    free(b->acks);
    free(b->arena);
    free(b->log);
    free(b);
}

void
batch_reset(struct batch *b)
{
    b->next = NULL;
    b->first_ns = 0;
    b->ts_assigned = false;
    b->failed = false;
    b->n_readings = 0;
    b->n_acks = 0;
    b->arena_len = 0;
    b->log_len = 0;
    b->log_written = 0;
}

bool
batch_empty(const struct batch *b)
{
    return b->n_readings == 0 && b->n_acks == 0 && b->log_len == 0;
}

bool
batch_room(const struct batch *b, size_t n, size_t log_bytes)
{
    return b->n_readings + n <= b->cap_readings &&
           b->arena_len + n * ARENA_PER_READING <= b->arena_cap &&
           b->log_len + log_bytes <= b->log_cap;
}

static const char *
arena_copy(struct batch *b, const struct proto_str *s)
{
    char *p = b->arena + b->arena_len;

    memcpy(p, s->p, s->len);
    b->arena_len += s->len;
    return p;
}

void
batch_add(struct batch *b, const struct proto_reading *r, bool has_ts,
          int64_t ts_ns, int64_t recv_ns, const char *peer)
{
    struct store_reading *sr = &b->readings[b->n_readings++];

    sr->sensor = arena_copy(b, &r->sensor);
    sr->sensor_len = r->sensor.len;
    sr->quantity = arena_copy(b, &r->quantity);
    sr->quantity_len = r->quantity.len;
    sr->unit = arena_copy(b, &r->unit);
    sr->unit_len = r->unit.len;
    sr->value = r->value;
    sr->has_ts = has_ts;
    sr->ts_ns = ts_ns;
    sr->recv_ns = recv_ns;
    sr->peer = peer;
}

bool
batch_ack(struct batch *b, void *who, uint64_t n_accepted, uint32_t n_orig)
{
    struct batch_ack *a;

    /* Lines of one connection arrive together, so checking the last entry
     * coalesces almost every acknowledgement. */
    if (b->n_acks > 0 && b->acks[b->n_acks - 1].who == who) {
        a = &b->acks[b->n_acks - 1];
        a->n_accepted = n_accepted;
        a->n_orig += n_orig;
        return false;
    }
    a = &b->acks[b->n_acks++];
    a->who = who;
    a->n_accepted = n_accepted;
    a->n_orig = n_orig;
    return true;
}

char *
batch_log_reserve(struct batch *b, size_t want)
{
    if (b->log_len + want > b->log_cap)
        return NULL;
    return b->log + b->log_len;
}

void
batch_log_commit(struct batch *b, size_t n)
{
    b->log_len += n;
}
