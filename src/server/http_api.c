/*
 * http_api: the read endpoints (docs/api.md): GET /api/sensors,
 * /api/readings and /api/series. Parameters are checked (http_params.c)
 * before the database is asked; the database does the work (a primary-key
 * range scan, a GROUP BY for aggregates) on the HTTP thread's read handle.
 * Every response is bounded: at most HTTP_MAX_ROWS rows, built in memory.
 * SPDX-License-Identifier: MIT
 */
#include "server/http_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/clock.h"
#include "util/strparse.h"

int
http_fmt_double(double v, char *buf, size_t len)
{
    int prec, n = 0;

    /* The shortest of %.15g .. %.17g that reads back as v. */
    for (prec = 15; prec <= 17; prec++) {
        const char *p = buf;
        double back;

        n = snprintf(buf, len, "%.*g", prec, v);
        if (n < 0 || (size_t)n >= len)
            return -1;
        if (sp_f64(&p, buf + n, &back) == 0 && p == buf + n && back == v)
            break;
    }
    return n;
}

static json_t *
time_pair(json_t *obj, const char *ts_key, const char *time_key, int64_t ns)
{
    char t[48];

    http_format_time(ns, t, sizeof(t));
    json_object_set_new(obj, ts_key, json_integer((json_int_t)ns));
    json_object_set_new(obj, time_key, json_string(t));
    return obj;
}

/* ---- GET /api/sensors ---------------------------------------------------- */

struct sensors_ctx {
    struct http *h;
    json_t *list;
    int64_t now_ns;
    size_t n;
};

static int
sensor_row(void *arg, const struct store_series *s)
{
    struct sensors_ctx *sc = arg;
    unsigned conns;
    json_t *o;

    if (sc->n++ >= HTTP_MAX_ROWS)
        return 1; /* one more than we show: the list is truncated */
    conns = presence_count(sc->h->conf.sh->presence, s->sensor);
    o = json_pack("{s:s,s:s,s:s,s:I,s:b,s:I,s:s}", "sensor", s->sensor,
                  "quantity", s->quantity, "unit", s->unit, "count",
                  (json_int_t)s->count, "connected", conns > 0,
                  "connections", (json_int_t)conns, "peer", s->peer);
    if (o == NULL)
        return 1;
    if (s->has_last) {
        json_object_set_new(o, "last_value", json_real(s->last_value));
        time_pair(o, "last_ts", "last_time", s->last_ts);
    } else {
        json_object_set_new(o, "last_value", json_null());
        json_object_set_new(o, "last_ts", json_null());
        json_object_set_new(o, "last_time", json_null());
    }
    time_pair(o, "last_seen", "last_seen_time", s->last_seen);
    /* How long ago the last reading arrived, by the server's clock. */
    json_object_set_new(o, "age_s",
                        json_real((double)(sc->now_ns - s->last_seen) / 1e9));
    if (s->count > 0)
        json_object_set_new(o, "first_ts", json_integer(s->first_ts));
    json_array_append_new(sc->list, o);
    return 0;
}

enum MHD_Result
http_api_sensors(struct http *h, struct MHD_Connection *c)
{
    struct sensors_ctx sc = {.h = h};
    struct http_params hp;
    struct store *st;
    json_t *doc;
    int rc;

    if (http_read_params(h, c, &hp, HP_SENSOR, false) < 0)
        return MHD_YES;
    st = http_store(h);
    if (st == NULL)
        return http_store_error(h, c, 0);
    sc.now_ns = clock_real_ns();
    sc.list = json_array();
    if (sc.list == NULL)
        return MHD_NO;
    rc = store_list_series(st, (hp.seen & HP_SENSOR) ? hp.sensor : NULL,
                           NULL, HTTP_MAX_ROWS + 1, sensor_row, &sc);
    if (rc < 0) {
        json_decref(sc.list);
        return http_store_error(h, c, rc);
    }
    doc = json_pack("{s:o,s:b}", "sensors", sc.list, "truncated",
                    sc.n > HTTP_MAX_ROWS);
    if (doc == NULL)
        return MHD_NO;
    time_pair(doc, "now", "now_time", sc.now_ns);
    return http_json(h, c, MHD_HTTP_OK, doc);
}

/* ---- the series a range query is about ----------------------------------- */

struct pick_ctx {
    size_t n;
    char quantity[PROTO_MAX_NAME + 1];
    char unit[PROTO_MAX_UNIT + 1];
    char list[3 * (PROTO_MAX_NAME + 2)]; /* "a, b, c" for the message */
};

static int
pick_row(void *arg, const struct store_series *s)
{
    struct pick_ctx *pc = arg;
    size_t have = strlen(pc->list);

    if (pc->n++ == 0) {
        snprintf(pc->quantity, sizeof(pc->quantity), "%s", s->quantity);
        snprintf(pc->unit, sizeof(pc->unit), "%s", s->unit);
    }
    if (pc->n <= 3)
        snprintf(pc->list + have, sizeof(pc->list) - have, "%s%s",
                 have > 0 ? ", " : "", s->quantity);
    return 0;
}

/*
 * Make hp name exactly one series: the quantity may be left out when the
 * sensor has only one. Returns 0 (unit filled), or -1 after answering
 * (404: no such series; 400: ambiguous; 503: database).
 */
static int
pick_series(struct http *h, struct MHD_Connection *c, struct store *st,
            struct http_params *hp, char *unit, size_t unit_len)
{
    bool given = (hp->seen & HP_QUANTITY) != 0;
    struct pick_ctx pc = {0};
    int rc;

    rc = store_list_series(st, hp->sensor, given ? hp->quantity : NULL,
                           given ? 1 : 3, pick_row, &pc);
    if (rc < 0) {
        http_store_error(h, c, rc);
        return -1;
    }
    if (pc.n == 0) {
        if (given)
            http_error(h, c, MHD_HTTP_NOT_FOUND,
                       "no readings of %s from sensor '%s'", hp->quantity,
                       hp->sensor);
        else
            http_error(h, c, MHD_HTTP_NOT_FOUND, "no sensor '%s'",
                       hp->sensor);
        return -1;
    }
    if (pc.n > 1) {
        http_error(h, c, MHD_HTTP_BAD_REQUEST,
                   "sensor '%s' has several quantities (%s%s): add "
                   "quantity=",
                   hp->sensor, pc.list, pc.n > 3 ? ", ..." : "");
        return -1;
    }
    snprintf(hp->quantity, sizeof(hp->quantity), "%s", pc.quantity);
    snprintf(unit, unit_len, "%s", pc.unit);
    return 0;
}

static json_t *
series_doc(const struct http_params *hp, const char *unit)
{
    json_t *doc = json_pack("{s:s,s:s,s:s}", "sensor", hp->sensor,
                            "quantity", hp->quantity, "unit", unit);

    if (doc == NULL)
        return NULL;
    json_object_set_new(doc, "from", (hp->seen & HP_FROM) ||
                                             (hp->allowed & HP_STEP)
                                         ? json_integer(hp->from_ns)
                                         : json_null());
    json_object_set_new(doc, "to", (hp->seen & HP_TO) ||
                                           (hp->allowed & HP_STEP)
                                       ? json_integer(hp->to_ns)
                                       : json_null());
    return doc;
}

/* ---- GET /api/readings --------------------------------------------------- */

struct readings_ctx {
    size_t limit, n;
    int64_t next;         /* the first row not shown */
    bool more;
    bool csv;
    json_t *rows;
    char *buf;            /* CSV */
    size_t len, cap;
    bool oom;
};

static bool
csv_put(struct readings_ctx *rc, const char *p, size_t n)
{
    if (rc->len + n > rc->cap) {
        size_t cap = rc->cap ? rc->cap * 2 : 65536;
        char *q;

        while (cap < rc->len + n)
            cap *= 2;
        if (cap > HTTP_MAX_RESPONSE) {
            rc->oom = true;
            return false;
        }
        q = realloc(rc->buf, cap);
        if (q == NULL) {
            rc->oom = true;
            return false;
        }
        rc->buf = q;
        rc->cap = cap;
    }
    memcpy(rc->buf + rc->len, p, n);
    rc->len += n;
    return true;
}

static int
reading_row(void *arg, int64_t ts, double value)
{
    struct readings_ctx *rc = arg;
    char t[48], v[40], line[160];
    int n;

    if (rc->n == rc->limit) {
        rc->more = true;
        rc->next = ts;
        return 1;
    }
    rc->n++;
    http_format_time(ts, t, sizeof(t));
    if (rc->csv) {
        if (http_fmt_double(value, v, sizeof(v)) < 0)
            return 1;
        n = snprintf(line, sizeof(line), "%s,%" PRId64 ",%s\n", t, ts, v);
        return csv_put(rc, line, (size_t)n) ? 0 : 1;
    }
    if (json_array_append_new(rc->rows,
                              json_pack("{s:I,s:s,s:f}", "ts",
                                        (json_int_t)ts, "time", t, "value",
                                        value)) < 0) {
        rc->oom = true;
        return 1;
    }
    return 0;
}

enum MHD_Result
http_api_readings(struct http *h, struct MHD_Connection *c)
{
    struct readings_ctx rc = {0};
    struct http_params hp;
    struct store_range q;
    char unit[PROTO_MAX_UNIT + 1], next[32];
    struct store *st;
    json_t *doc;
    int n;

    if (http_read_params(h, c, &hp,
                         HP_SENSOR | HP_QUANTITY | HP_FROM | HP_TO |
                             HP_LIMIT | HP_FORMAT,
                         false) < 0)
        return MHD_YES;
    st = http_store(h);
    if (st == NULL)
        return http_store_error(h, c, 0);
    if (pick_series(h, c, st, &hp, unit, sizeof(unit)) < 0)
        return MHD_YES;
    rc.limit = hp.limit;
    rc.csv = hp.csv;
    q = (struct store_range){.sensor = hp.sensor, .quantity = hp.quantity,
                             .from_ns = hp.from_ns, .to_ns = hp.to_ns,
                             .limit = hp.limit + 1};
    if (rc.csv) {
        static const char head[] = "time,ts,value\n";

        csv_put(&rc, head, sizeof(head) - 1);
    } else {
        rc.rows = json_array();
        if (rc.rows == NULL)
            return MHD_NO;
    }
    n = store_read_range(st, &q, reading_row, &rc);
    if (n < 0 || rc.oom) {
        json_decref(rc.rows);
        free(rc.buf);
        if (n < 0)
            return http_store_error(h, c, n);
        return http_error(h, c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                          "out of memory building the response");
    }
    snprintf(next, sizeof(next), "%" PRId64, rc.next);
    if (rc.csv) {
        /* The cursor travels in a header: the body is plain CSV. */
        const char *hdrs[2] = {"X-Sensornet-Next", next};

        return http_reply_hdrs(h, c, MHD_HTTP_OK, "text/csv; charset=utf-8",
                               rc.buf, rc.len, hdrs, rc.more ? 1 : 0);
    }
    doc = series_doc(&hp, unit);
    if (doc == NULL) {
        json_decref(rc.rows);
        return MHD_NO;
    }
    json_object_set_new(doc, "count", json_integer((json_int_t)rc.n));
    json_object_set_new(doc, "readings", rc.rows);
    /* A string: JavaScript keeps every digit of it. */
    json_object_set_new(doc, "next",
                        rc.more ? json_string(next) : json_null());
    return http_json(h, c, MHD_HTTP_OK, doc);
}

/* ---- GET /api/series ----------------------------------------------------- */

static int
bucket_row(void *arg, const struct store_bucket *b)
{
    json_t *points = arg, *o;
    char t[48];

    http_format_time(b->start_ns, t, sizeof(t));
    o = json_pack("{s:I,s:s,s:f,s:f,s:f,s:I}", "ts", (json_int_t)b->start_ns,
                  "time", t, "min", b->min, "max", b->max, "avg", b->avg,
                  "count", (json_int_t)b->count);
    return json_array_append_new(points, o) < 0 ? 1 : 0;
}

enum MHD_Result
http_api_series(struct http *h, struct MHD_Connection *c)
{
    struct http_params hp;
    struct store_range q;
    char unit[PROTO_MAX_UNIT + 1];
    struct store *st;
    json_t *doc, *points;
    int n;

    if (http_read_params(h, c, &hp,
                         HP_SENSOR | HP_QUANTITY | HP_FROM | HP_TO | HP_STEP,
                         false) < 0)
        return MHD_YES;
    st = http_store(h);
    if (st == NULL)
        return http_store_error(h, c, 0);
    if (pick_series(h, c, st, &hp, unit, sizeof(unit)) < 0)
        return MHD_YES;
    points = json_array();
    if (points == NULL)
        return MHD_NO;
    q = (struct store_range){.sensor = hp.sensor, .quantity = hp.quantity,
                             .from_ns = hp.from_ns, .to_ns = hp.to_ns,
                             .limit = HTTP_MAX_ROWS};
    n = store_read_buckets(st, &q, hp.step_ns, bucket_row, points);
    if (n < 0) {
        json_decref(points);
        return http_store_error(h, c, n);
    }
    doc = series_doc(&hp, unit);
    if (doc == NULL) {
        json_decref(points);
        return MHD_NO;
    }
    json_object_set_new(doc, "step", json_integer(hp.step_ns));
    json_object_set_new(doc, "points", points);
    return http_json(h, c, MHD_HTTP_OK, doc);
}
