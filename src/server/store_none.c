/*
 * store_none: --db off. Readings are parsed, written to log.txt (what the
 * original Python server did, and all it did) and acknowledged once
 * log.txt is synced, but not stored in any database; the HTTP read side
 * answers with no series. Also the benchmark's way to measure the network
 * and parsing path without storage (docs/performance.md).
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>

#include "server/store_internal.h"

static struct store *
none_open(const struct store_conf *conf, char *err, int *why)
{
    struct store *st = calloc(1, sizeof(*st));

    (void)conf;
    if (st == NULL) {
        snprintf(err, STORE_ERR_LEN, "out of memory");
        *why = STORE_E_IO;
        return NULL;
    }
    st->ops = &store_none_ops;
    return st;
}

static int
none_begin(struct store *st)
{
    (void)st;
    return 0;
}

static int
none_append(struct store *st, const struct store_reading *r)
{
    (void)st;
    (void)r;
    return 0;
}

static int
none_commit(struct store *st)
{
    (void)st;
    return 0;
}

static void
none_rollback(struct store *st)
{
    (void)st;
}

static int
none_retention_step(struct store *st, int64_t cutoff_ns, int max_rows)
{
    (void)st;
    (void)cutoff_ns;
    (void)max_rows;
    return 0;
}

static void
none_close(struct store *st)
{
    free(st);
}

static int
none_list_series(struct store *st, const char *sensor, const char *quantity,
                 size_t max_rows, store_series_fn *fn, void *arg)
{
    (void)st;
    (void)sensor;
    (void)quantity;
    (void)max_rows;
    (void)fn;
    (void)arg;
    return 0;
}

static int
none_read_range(struct store *st, const struct store_range *q,
                store_point_fn *fn, void *arg)
{
    (void)st;
    (void)q;
    (void)fn;
    (void)arg;
    return 0;
}

static int
none_read_buckets(struct store *st, const struct store_range *q,
                  int64_t origin_ns, int64_t step_ns, store_bucket_fn *fn,
                  void *arg)
{
    (void)st;
    (void)q;
    (void)origin_ns;
    (void)step_ns;
    (void)fn;
    (void)arg;
    return 0;
}

const struct store_ops store_none_ops = {
    .name = "none",
    .open = none_open,
    .begin = none_begin,
    .append = none_append,
    .commit = none_commit,
    .rollback = none_rollback,
    .retention_step = none_retention_step,
    .close = none_close,
    .list_series = none_list_series,
    .read_range = none_read_range,
    .read_buckets = none_read_buckets,
};
