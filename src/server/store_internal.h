/*
 * store_internal: the backend interface behind store.h. Only store.c and
 * the store_*.c backends include this.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_STORE_INTERNAL_H
#define SN_STORE_INTERNAL_H

#include "server/store.h"

struct store_ops {
    const char *name;
    /* Allocate and open; NULL with err and *why set on failure. */
    struct store *(*open)(const struct store_conf *conf, char *err,
                          int *why);
    int (*begin)(struct store *st);
    int (*append)(struct store *st, const struct store_reading *r);
    int (*commit)(struct store *st);
    void (*rollback)(struct store *st);
    int (*retention_step)(struct store *st, int64_t cutoff_ns, int max_rows);
    void (*close)(struct store *st);
    /* The read side (store.h); arguments already checked by store.c. */
    int (*list_series)(struct store *st, const char *sensor,
                       const char *quantity, size_t max_rows,
                       store_series_fn *fn, void *arg);
    int (*read_range)(struct store *st, const struct store_range *q,
                      store_point_fn *fn, void *arg);
    int (*read_buckets)(struct store *st, const struct store_range *q,
                        int64_t origin_ns, int64_t step_ns,
                        store_bucket_fn *fn, void *arg);
};

/* Every backend's struct starts with this header. */
struct store {
    const struct store_ops *ops;
    char errmsg[STORE_ERR_LEN];
};

extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_pg_ops;
extern const struct store_ops store_none_ops;

#endif
