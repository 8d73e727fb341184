/*
 * store: picks the backend (the only place that knows which exist) and
 * forwards calls through its ops table.
 * SPDX-License-Identifier: MIT
 */
#include "server/store_internal.h"

#include <stdio.h>

struct store *
store_open(const struct store_conf *conf, char *err, int *why)
{
    const struct store_ops *ops = &store_sqlite_ops;

    if (conf->postgres != NULL)
        ops = &store_pg_ops;
    return ops->open(conf, err, why);
}

int
store_begin(struct store *st)
{
    return st->ops->begin(st);
}

int
store_append(struct store *st, const struct store_reading *r)
{
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
