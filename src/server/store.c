/*
 * store: picks the backend (the only place that knows which exist) and
 * forwards calls through its ops table.
 * SPDX-License-Identifier: MIT
 */
#include "server/store_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "proto/proto.h"

struct store *
store_open(const struct store_conf *conf, char *err, int *why)
{
    const struct store_ops *ops = &store_sqlite_ops;

    if (conf->postgres != NULL)
        ops = &store_pg_ops;
    else if (conf->sqlite_path == NULL)
        ops = &store_none_ops;
    return ops->open(conf, err, why);
}

int
store_begin(struct store *st)
{
    return st->ops->begin(st);
}

/* What no backend's schema holds, refused here once so that every backend
 * refuses the same readings; the transaction goes on. */
static const char *
reading_refusal(const struct store_reading *r)
{
    if (r->sensor == NULL || r->sensor_len == 0 ||
        r->sensor_len > PROTO_MAX_NAME)
        return "sensor name empty or longer than 128 bytes";
    if (r->quantity == NULL || r->quantity_len == 0 ||
        r->quantity_len > PROTO_MAX_NAME)
        return "quantity name empty or longer than 128 bytes";
    if ((r->unit == NULL && r->unit_len != 0) || r->unit_len > PROTO_MAX_UNIT)
        return "unit longer than 32 bytes";
    if (!isfinite(r->value))
        return "value is not a finite number";
    if (r->peer != NULL && strnlen(r->peer, STORE_PEER_MAX + 1) >
                               STORE_PEER_MAX)
        return "peer address longer than 128 bytes";
    return NULL;
}

int
store_append(struct store *st, const struct store_reading *r)
{
    const char *why = reading_refusal(r);

    if (why != NULL) {
        snprintf(st->errmsg, sizeof(st->errmsg), "reading refused: %s", why);
        return STORE_E_INVAL;
    }
    return st->ops->append(st, r);
}

int
store_commit(struct store *st)
{
    return st->ops->commit(st);
}

void
store_rollback(struct store *st)
{
    st->ops->rollback(st);
}

const char *
store_errmsg(struct store *st)
{
    return st->errmsg;
}

const char *
store_name(const struct store *st)
{
    return st->ops->name;
}

int
store_retention_step(struct store *st, int64_t cutoff_ns, int max_rows)
{
    return st->ops->retention_step(st, cutoff_ns, max_rows);
}

void
store_close(struct store *st)
{
    if (st != NULL)
        st->ops->close(st);
}

/* ---- The read side: argument checks shared by the backends ------------- */

static int
refuse_query(struct store *st, const char *why)
{
    snprintf(st->errmsg, sizeof(st->errmsg), "%s", why);
    return STORE_E_INVAL;
}

static size_t
cap_rows(size_t n)
{
    return n > STORE_QUERY_MAX_ROWS ? STORE_QUERY_MAX_ROWS : n;
}

int
store_list_series(struct store *st, const char *sensor, const char *quantity,
                  size_t max_rows, store_series_fn *fn, void *arg)
{
    if (fn == NULL || (sensor == NULL && quantity != NULL))
        return refuse_query(st, "list_series: bad arguments");
    if (max_rows == 0)
        return 0;
    return st->ops->list_series(st, sensor, quantity, cap_rows(max_rows), fn,
                                arg);
}

static int
check_range(struct store *st, const struct store_range *q)
{
    if (q == NULL || q->sensor == NULL || q->quantity == NULL)
        return refuse_query(st, "query: no sensor or quantity");
    if (q->from_ns > q->to_ns)
        return refuse_query(st, "query: from is after to");
    return 0;
}

int
store_read_range(struct store *st, const struct store_range *q,
                 store_point_fn *fn, void *arg)
{
    struct store_range c;
    int rc = check_range(st, q);

    if (rc < 0)
        return rc;
    if (fn == NULL)
        return refuse_query(st, "read_range: no callback");
    if (q->limit == 0 || q->from_ns == q->to_ns)
        return 0;
    c = *q;
    c.limit = cap_rows(c.limit);
    return st->ops->read_range(st, &c, fn, arg);
}

int
store_read_buckets(struct store *st, const struct store_range *q,
                   int64_t step_ns, store_bucket_fn *fn, void *arg)
{
    struct store_range c;
    int64_t origin, rem, span;
    int rc = check_range(st, q);

    if (rc < 0)
        return rc;
    if (fn == NULL || step_ns <= 0)
        return refuse_query(st, "read_buckets: no callback or step <= 0");
    /* Buckets start at multiples of step: round from down (floor, also
     * for times before 1970). */
    rem = q->from_ns % step_ns;
    if (rem < 0)
        rem += step_ns;
    /* The backends compute (ts - origin) / step for origin <= ts < to. */
    if (__builtin_sub_overflow(q->from_ns, rem, &origin) ||
        __builtin_sub_overflow(q->to_ns, origin, &span))
        return refuse_query(st, "read_buckets: time range too large");
    if (q->limit == 0 || q->from_ns == q->to_ns)
        return 0;
    c = *q;
    c.limit = cap_rows(c.limit);
    return st->ops->read_buckets(st, &c, origin, step_ns, fn, arg);
}
