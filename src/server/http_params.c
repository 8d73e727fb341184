/*
 * http_params: see http_params.h. Every parser is bounded by the string's
 * NUL, checks for trailing garbage and for int64 overflow, and leaves its
 * output untouched on failure.
 * SPDX-License-Identifier: MIT
 */
#include "server/http_params.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/strparse.h"

#define NS_PER_S INT64_C(1000000000)

static void
seterr(char *err, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

/* ---- durations ---------------------------------------------------------- */

static const struct {
    const char *name;
    int64_t ns;
} units[] = {
    {"ns", 1},
    {"us", 1000},
    {"\xc2\xb5s", 1000}, /* µs, U+00B5 */
    {"ms", 1000000},
    {"s", NS_PER_S},
    {"m", 60 * NS_PER_S},
    {"h", 3600 * NS_PER_S},
    {"d", 86400 * NS_PER_S},
    {"w", 604800 * NS_PER_S},
};

/* The unit at *p, longest match first ("ms" is not "m" then "s");
 * advances *p; 0 if none. */
static int64_t
unit_at(const char **p)
{
    size_t i, best = 0, best_len = 0;

    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        size_t n = strlen(units[i].name);

        if (n > best_len && strncmp(*p, units[i].name, n) == 0) {
            best = i;
            best_len = n;
        }
    }
    if (best_len == 0)
        return 0;
    *p += best_len;
    return units[best].ns;
}

int
http_parse_duration(const char *s, int64_t *out_ns)
{
    const char *p = s, *end;
    int64_t total = 0;

    if (s == NULL || *s == '\0')
        return -EINVAL;
    end = s + strlen(s);
    while (p < end) {
        uint64_t v;
        int64_t unit, part;

        if (!sp_is_digit((unsigned char)*p))
            return -EINVAL;
        if (sp_u64(&p, end, &v) < 0)
            return -ERANGE;
        unit = unit_at(&p);
        if (unit == 0)
            return -EINVAL;
        if (v > (uint64_t)(INT64_MAX / unit))
            return -ERANGE;
        part = (int64_t)v * unit;
        if (__builtin_add_overflow(total, part, &total))
            return -ERANGE;
    }
    if (total <= 0)
        return -EINVAL;
    *out_ns = total;
    return 0;
}

/* ---- times -------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (valid for any year
 * an int64 of nanoseconds can reach). */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void
civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    int64_t era, doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static bool
is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Exactly n digits at *p as a number; advances *p. */
static bool
fixed_digits(const char **p, int n, int *out)
{
    int v = 0, i;

    for (i = 0; i < n; i++) {
        if (!sp_is_digit((unsigned char)(*p)[i]))
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* RFC 3339 date-time:
 * YYYY-MM-DD('T'|'t'|' ')HH:MM:SS[.frac]('Z'|'z'|±HH:MM) */
static int
parse_rfc3339(const char *s, int64_t *out_ns)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30,
                                31, 31, 30, 31, 30, 31};
    const char *p = s;
    int year, mon, day, hh, mm, ss, oh = 0, om = 0, sign = 0, n_frac = 0;
    int64_t frac = 0, secs, ns;

    if (!fixed_digits(&p, 4, &year) || *p++ != '-' ||
        !fixed_digits(&p, 2, &mon) || *p++ != '-' ||
        !fixed_digits(&p, 2, &day))
        return -EINVAL;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -EINVAL;
    p++;
    if (!fixed_digits(&p, 2, &hh) || *p++ != ':' ||
        !fixed_digits(&p, 2, &mm) || *p++ != ':' ||
        !fixed_digits(&p, 2, &ss))
        return -EINVAL;
    if (*p == '.') {
        p++;
        while (sp_is_digit((unsigned char)*p)) {
            if (n_frac == 9)
                return -EINVAL; /* finer than a nanosecond */
            frac = frac * 10 + (*p - '0');
            n_frac++;
            p++;
        }
        if (n_frac == 0)
            return -EINVAL;
        while (n_frac++ < 9)
            frac *= 10;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '-' ? -1 : 1;
        p++;
        if (!fixed_digits(&p, 2, &oh) || *p++ != ':' ||
            !fixed_digits(&p, 2, &om) || oh > 23 || om > 59)
            return -EINVAL;
    } else {
        return -EINVAL;
    }
    if (*p != '\0')
        return -EINVAL;
    if (mon < 1 || mon > 12 || day < 1 || hh > 23 || mm > 59 || ss > 60)
        return -EINVAL;
    if (day > mdays[mon - 1] + (mon == 2 && is_leap(year)))
        return -EINVAL;
    if (ss == 60)
        ss = 59; /* a leap second: the last representable instant before */
    secs = days_from_civil(year, mon, day) * 86400 + hh * 3600 + mm * 60 +
           ss - sign * (oh * 3600 + om * 60);
    if (secs < 0 && frac > 0) {
        /* Near the lower end, secs * 1e9 alone may not fit. */
        secs++;
        frac -= NS_PER_S;
    }
    if (__builtin_mul_overflow(secs, NS_PER_S, &ns) ||
        __builtin_add_overflow(ns, frac, &ns))
        return -ERANGE;
    *out_ns = ns;
    return 0;
}

int
http_parse_time(const char *s, int64_t now_ns, int64_t *out_ns)
{
    const char *p, *end;
    int64_t v, d;
    int rc;

    if (s == NULL || *s == '\0')
        return -EINVAL;
    end = s + strlen(s);
    if (strcmp(s, "now") == 0) {
        *out_ns = now_ns;
        return 0;
    }
    /* "now-DUR", or "-DUR" with a unit (a bare "-5" is ns): a duration
     * before now. */
    p = s;
    if (strncmp(p, "now-", 4) == 0)
        p += 3;
    else if (strncmp(p, "now", 3) == 0)
        return -EINVAL;
    if (*p == '-' && (p != s || strspn(p + 1, "0123456789") < strlen(p + 1))) {
        rc = http_parse_duration(p + 1, &d);
        if (rc < 0)
            return rc;
        if (__builtin_sub_overflow(now_ns, d, &v))
            return -ERANGE;
        *out_ns = v;
        return 0;
    }
    /* An integer: ns since the epoch. */
    if (sp_is_digit((unsigned char)*s) ||
        ((*s == '-' || *s == '+') && sp_is_digit((unsigned char)s[1]))) {
        p = s;
        rc = sp_i64(&p, end, &v);
        if (rc == 0 && p == end) {
            *out_ns = v;
            return 0;
        }
        if (rc == -ERANGE)
            return -ERANGE;
        if (end - s >= 10 && s[4] == '-')
            return parse_rfc3339(s, out_ns);
        return -EINVAL;
    }
    return -EINVAL;
}

size_t
http_format_time(int64_t ns, char *buf, size_t len)
{
    int64_t secs = ns / NS_PER_S, frac = ns % NS_PER_S, days, sod, y;
    int m, d, n;

    if (frac < 0) {
        frac += NS_PER_S;
        secs--;
    }
    days = secs / 86400;
    sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    civil_from_days(days, &y, &m, &d);
    n = snprintf(buf, len, "%04lld-%02d-%02dT%02d:%02d:%02d.%09lldZ",
                 (long long)y, m, d, (int)(sod / 3600), (int)(sod / 60 % 60),
                 (int)(sod % 60), (long long)frac);
    if (n < 0)
        return 0;
    return (size_t)n < len ? (size_t)n : len - 1;
}

/* ---- parameters --------------------------------------------------------- */

static const struct {
    const char *name;
    unsigned bit;
} names[] = {
    {"sensor", HP_SENSOR},       {"quantity", HP_QUANTITY},
    {"from", HP_FROM},           {"to", HP_TO},
    {"limit", HP_LIMIT},         {"format", HP_FORMAT},
    {"step", HP_STEP},           {"precision", HP_PRECISION},
    {"db", HP_IGNORED},          {"rp", HP_IGNORED},
    {"u", HP_IGNORED},           {"p", HP_IGNORED},
    {"consistency", HP_IGNORED},
};

void
http_params_init(struct http_params *hp, unsigned allowed, bool lenient)
{
    memset(hp, 0, sizeof(*hp));
    hp->allowed = allowed;
    hp->lenient = lenient;
    hp->limit = HTTP_DEFAULT_LIMIT;
    hp->ts_mult = 1;
}

/* A name: 1 to PROTO_MAX_NAME bytes of UTF-8 without control bytes. */
static bool
name_ok(const char *v, size_t len)
{
    size_t i;

    if (len == 0 || len > PROTO_MAX_NAME || !proto_utf8_valid(v, len))
        return false;
    for (i = 0; i < len; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
            return false;
    return true;
}

static int
set_precision(struct http_params *hp, const char *v)
{
    static const struct {
        const char *name;
        int64_t mult;
    } prec[] = {
        {"ns", 1},          {"n", 1},
        {"u", 1000},        {"us", 1000},
        {"\xc2\xb5", 1000}, {"ms", 1000000},
        {"s", NS_PER_S},    {"m", 60 * NS_PER_S},
        {"h", 3600 * NS_PER_S},
    };
    size_t i;

    for (i = 0; i < sizeof(prec) / sizeof(prec[0]); i++) {
        if (strcmp(v, prec[i].name) == 0) {
            hp->ts_mult = prec[i].mult;
            return 0;
        }
    }
    return -EINVAL;
}

int
http_params_set(struct http_params *hp, const char *key, const char *val,
                int64_t now_ns, char *err, size_t err_len)
{
    const char *v = val != NULL ? val : "";
    size_t i, vlen = strlen(v);
    unsigned bit = 0;
    int rc;

    if (key == NULL)
        key = "";
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(key, names[i].name) == 0) {
            bit = names[i].bit;
            break;
        }
    }
    if (bit == 0 || !(hp->allowed & bit)) {
        if (hp->lenient)
            return 0;
        seterr(err, err_len, "unknown parameter '%.64s'", key);
        return -EINVAL;
    }
    if (bit == HP_IGNORED)
        return 0;
    if (hp->seen & bit) {
        seterr(err, err_len, "parameter '%s' given twice", key);
        return -EINVAL;
    }
    hp->seen |= bit;
    switch (bit) {
    case HP_SENSOR:
        if (!name_ok(v, vlen)) {
            seterr(err, err_len, "sensor: 1 to %d bytes of UTF-8 text",
                   PROTO_MAX_NAME);
            return -EINVAL;
        }
        memcpy(hp->sensor, v, vlen + 1);
        return 0;
    case HP_QUANTITY: {
        char buf[PROTO_MAX_NAME];
        struct proto_str q;

        if (!name_ok(v, vlen)) {
            seterr(err, err_len, "quantity: 1 to %d bytes of UTF-8 text",
                   PROTO_MAX_NAME);
            return -EINVAL;
        }
        /* Any wire name of a quantity works: "temperatura" is
         * "temperature". */
        q = proto_canon_quantity(v, vlen, buf, sizeof(buf), NULL);
        memcpy(hp->quantity, q.p, q.len);
        hp->quantity[q.len] = '\0';
        return 0;
    }
    case HP_FROM:
    case HP_TO:
        rc = http_parse_time(v, now_ns,
                             bit == HP_FROM ? &hp->from_ns : &hp->to_ns);
        if (rc < 0) {
            seterr(err, err_len,
                   "%s: '%.64s' is not a time (ns since the epoch, RFC 3339 "
                   "like 2024-05-01T12:00:00Z, now, or -DURATION like "
                   "-1h)%s",
                   key, v, rc == -ERANGE ? ": out of range" : "");
            return -EINVAL;
        }
        return 0;
    case HP_STEP:
        rc = http_parse_duration(v, &hp->step_ns);
        if (rc < 0) {
            seterr(err, err_len,
                   "step: '%.64s' is not a duration (a number and a unit: "
                   "ns, us, ms, s, m, h, d, w; like 10s or 1h30m)%s",
                   v, rc == -ERANGE ? ": out of range" : "");
            return -EINVAL;
        }
        return 0;
    case HP_LIMIT: {
        uint64_t n = 0;
        size_t k;

        for (k = 0; k < vlen && sp_is_digit((unsigned char)v[k]); k++) {
            /* Saturate past the cap: any larger number means the cap. */
            if (n <= HTTP_MAX_ROWS)
                n = n * 10 + (uint64_t)(v[k] - '0');
        }
        if (vlen == 0 || k != vlen || n == 0) {
            seterr(err, err_len, "limit: '%.64s' is not a number from 1",
                   v);
            return -EINVAL;
        }
        hp->limit = n > HTTP_MAX_ROWS ? HTTP_MAX_ROWS : n;
        return 0;
    }
    case HP_FORMAT:
        if (strcmp(v, "json") == 0) {
            hp->csv = false;
        } else if (strcmp(v, "csv") == 0) {
            hp->csv = true;
        } else {
            seterr(err, err_len, "format: '%.64s' is not json or csv", v);
            return -EINVAL;
        }
        return 0;
    case HP_PRECISION:
        if (set_precision(hp, v) < 0) {
            seterr(err, err_len,
                   "precision: '%.64s' is not one of ns, u, ms, s, m, h", v);
            return -EINVAL;
        }
        return 0;
    default:
        return 0;
    }
}

/* A round step giving about HTTP_AUTO_BUCKETS buckets over span. */
static int64_t
auto_step(int64_t span)
{
    static const int64_t steps[] = {
        NS_PER_S,           2 * NS_PER_S,     5 * NS_PER_S,
        10 * NS_PER_S,      15 * NS_PER_S,    30 * NS_PER_S,
        60 * NS_PER_S,      120 * NS_PER_S,   300 * NS_PER_S,
        600 * NS_PER_S,     900 * NS_PER_S,   1800 * NS_PER_S,
        3600 * NS_PER_S,    7200 * NS_PER_S,  10800 * NS_PER_S,
        21600 * NS_PER_S,   43200 * NS_PER_S, 86400 * NS_PER_S,
        604800 * NS_PER_S,
    };
    int64_t want = span / HTTP_AUTO_BUCKETS;
    size_t i;

    for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
        if (steps[i] >= want)
            return steps[i];
    /* Longer spans: whole weeks. */
    return (want / steps[i - 1] + 1) * steps[i - 1];
}

int
http_params_finish(struct http_params *hp, int64_t now_ns, char *err,
                   size_t err_len)
{
    int64_t span;

    /* The range endpoints need a sensor; /api/sensors only filters. */
    if ((hp->allowed & HP_FROM) && !(hp->seen & HP_SENSOR)) {
        seterr(err, err_len, "missing parameter 'sensor'");
        return -EINVAL;
    }
    if (!(hp->allowed & HP_FROM))
        return 0;
    if (hp->allowed & HP_STEP) {
        /* Aggregates: the last hour by default. */
        if (!(hp->seen & HP_TO))
            hp->to_ns = now_ns;
        if (!(hp->seen & HP_FROM) &&
            __builtin_sub_overflow(hp->to_ns, 3600 * NS_PER_S, &hp->from_ns))
            hp->from_ns = INT64_MIN;
    } else {
        /* Raw readings: everything by default. */
        if (!(hp->seen & HP_FROM))
            hp->from_ns = INT64_MIN;
        if (!(hp->seen & HP_TO))
            hp->to_ns = INT64_MAX;
    }
    if (hp->from_ns >= hp->to_ns) {
        seterr(err, err_len, "from must be before to");
        return -EINVAL;
    }
    if (!(hp->allowed & HP_STEP))
        return 0;
    if (__builtin_sub_overflow(hp->to_ns, hp->from_ns, &span)) {
        seterr(err, err_len, "from..to: time range too large");
        return -EINVAL;
    }
    if (!(hp->seen & HP_STEP))
        hp->step_ns = auto_step(span);
    /* The buckets touched, counting partial ones at both ends. */
    if (span / hp->step_ns + 2 > HTTP_MAX_ROWS) {
        seterr(err, err_len,
               "step too small: the range would need more than %d buckets",
               HTTP_MAX_ROWS);
        return -EINVAL;
    }
    return 0;
}
