/*
 * http_params: the HTTP API's query parameters, parsed and checked before
 * anything touches the database. Pure functions over NUL-terminated
 * strings (libmicrohttpd has already split and percent-decoded the query
 * string); no allocation, no global state. tests/unit/test_http.c has the
 * cases and tests/fuzz/fuzz_query.c fuzzes every function here.
 *
 * Accepted forms (docs/api.md is the contract):
 *   time      integer ns since the epoch ("1700000000000000000", may be
 *             negative), RFC 3339 ("2023-11-14T22:13:20.5Z", offsets
 *             "+01:00", up to 9 fraction digits), "now", "now-DUR",
 *             "-DUR" (DUR before now)
 *   duration  one or more integer-and-unit pairs: "10s", "1h30m", "500ms";
 *             units ns, us (or µs), ms, s, m, h, d, w; a unit is required
 *   limit     decimal, capped at HTTP_MAX_ROWS
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_HTTP_PARAMS_H
#define SN_HTTP_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"

/* Most rows one response carries (readings, buckets, sensors). */
#define HTTP_MAX_ROWS 10000
/* Rows of /api/readings when no limit is given. */
#define HTTP_DEFAULT_LIMIT 1000
/* Buckets /api/series aims at when no step is given. */
#define HTTP_AUTO_BUCKETS 300
#define HTTP_ERR_LEN 256

/* Which parameters an endpoint takes (bit per parameter). */
enum http_param {
    HP_SENSOR = 1u << 0,
    HP_QUANTITY = 1u << 1,
    HP_FROM = 1u << 2,
    HP_TO = 1u << 3,
    HP_LIMIT = 1u << 4,
    HP_FORMAT = 1u << 5,
    HP_STEP = 1u << 6,
    HP_PRECISION = 1u << 7,
    HP_IGNORED = 1u << 8, /* /write: db, rp, u, p, consistency */
};

/* What the parameters of one request say. */
struct http_params {
    unsigned allowed;          /* enum http_param bits the endpoint takes */
    unsigned seen;             /* those given */
    bool lenient;              /* ignore unknown parameters (/write) */
    char sensor[PROTO_MAX_NAME + 1];
    char quantity[PROTO_MAX_NAME + 1]; /* canonical */
    int64_t from_ns;
    int64_t to_ns;
    int64_t step_ns;
    uint64_t limit;
    bool csv;
    int64_t ts_mult;           /* precision: ns per timestamp unit */
};

/* Start parsing for an endpoint taking the allowed parameters; lenient
 * ignores unknown names instead of refusing them. */
void http_params_init(struct http_params *hp, unsigned allowed,
                      bool lenient);

/*
 * Take one parameter (val NULL means given without '='). now_ns is the
 * wall clock for relative times. Returns 0, or -EINVAL with a one-line
 * reason in err ("from: not a time: ..."). A parameter given twice is
 * refused.
 */
int http_params_set(struct http_params *hp, const char *key, const char *val,
                    int64_t now_ns, char *err, size_t err_len);

/*
 * Check what must hold once all are set, and fill defaults. For range
 * queries (HP_FROM allowed): from < to; with HP_STEP, a step (chosen
 * for about HTTP_AUTO_BUCKETS buckets when not given) giving at most
 * HTTP_MAX_ROWS buckets. Returns 0 or -EINVAL with err.
 */
int http_params_finish(struct http_params *hp, int64_t now_ns, char *err,
                       size_t err_len);

/* One time value (see above) into *out_ns. 0 or -EINVAL. */
int http_parse_time(const char *s, int64_t now_ns, int64_t *out_ns);
/* One duration (see above), > 0, into *out_ns. 0 or -EINVAL / -ERANGE. */
int http_parse_duration(const char *s, int64_t *out_ns);
/* Format ns since the epoch as RFC 3339 UTC with 9 fraction digits
 * ("2023-11-14T22:13:20.000000000Z") into buf (at least 40 bytes).
 * Returns the length. */
size_t http_format_time(int64_t ns, char *buf, size_t len);

#endif
