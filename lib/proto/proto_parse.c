/*
 * proto_parse: one line of bytes in, readings out (docs/protocol.md).
 *
 * Order of work for proto_parse_line:
 *   1. length, then one pass over the whole line: invalid UTF-8 first, then
 *      control bytes (tab is the only one allowed);
 *   2. blank or comment line -> PROTO_E_EMPTY;
 *   3. the text form; if the line does not fit it, line protocol; if that
 *      refuses it too, Graphite plaintext (graphite.c). If all refuse, the
 *      text form's error when the line looked like the text form ("x - y:
 *      <number>") and line protocol saw only a syntax error; else
 *      Graphite's when it looked like Graphite ("a <number> b") and line
 *      protocol saw only a syntax error; else line protocol's.
 *
 * Everything is parsed in place: readings point into the caller's line.
 * Only a token with a backslash escape, or a quantity name that needs
 * lower-casing, is copied into struct proto_line's scratch, and the copies
 * never exceed the line's length, so scratch (PROTO_MAX_LINE_LIMIT) always
 * suffices. No allocation, no syscalls, no global state.
 * SPDX-License-Identifier: MIT
 */
#include "proto/proto.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "util/strparse.h"

#define S(lit) { lit, sizeof(lit) - 1 }

/* The canonical quantities (docs/protocol.md, "Quantities and units"). */
enum { Q_TEMP, Q_HUM, Q_PRES, Q_LIGHT, Q_CO2, Q_COUNT };

struct quantity {
    struct proto_str name; /* canonical */
    struct proto_str unit; /* default unit */
    const char *const *unit_aliases; /* folded; NULL-terminated */
};

/* Unit spellings that mean the default unit, folded as fold_name() does. */
static const char *const temp_units[] = {
    "\xc2\xb0" "c", /* °C, the degree sign */
    "\xc2\xba" "c", /* ºC, the masculine ordinal many keyboards give */
    "\xe2\x84\x83", /* ℃ */
    "c", "degc", "deg_c", "celsius", NULL,
};
static const char *const hum_units[] = {
    "%", "%rh", "rh", "pct", "percent", NULL,
};
static const char *const pres_units[] = {
    "hpa", "mbar", "mb", "millibar", NULL,
};
static const char *const light_units[] = { "lx", "lux", NULL };
static const char *const co2_units[] = { "ppm", NULL };

static const struct quantity quantities[Q_COUNT] = {
    [Q_TEMP] = { S("temperature"), S("\xc2\xb0" "C"), temp_units },
    [Q_HUM] = { S("humidity"), S("%"), hum_units },
    [Q_PRES] = { S("pressure"), S("hPa"), pres_units },
    [Q_LIGHT] = { S("light"), S("lx"), light_units },
    [Q_CO2] = { S("co2"), S("ppm"), co2_units },
};

/* Wire names of the known quantities, folded. */
static const struct {
    const char *name;
    size_t len;
    int q;
} quantity_names[] = {
    { "temperatura", 11, Q_TEMP },  { "temperature", 11, Q_TEMP },
    { "temp", 4, Q_TEMP },          { "umidade", 7, Q_HUM },
    { "humidade", 8, Q_HUM },       { "humidity", 8, Q_HUM },
    { "hum", 3, Q_HUM },            { "rh", 2, Q_HUM },
    { "pressao", 7, Q_PRES },       { "press\xc3\xa3o", 8, Q_PRES },
    { "pressure", 8, Q_PRES },      { "luminosidade", 12, Q_LIGHT },
    { "luminosity", 10, Q_LIGHT },  { "light", 5, Q_LIGHT },
    { "lux", 3, Q_LIGHT },          { "co2", 3, Q_CO2 },
};

/* Longest name or unit alias fold_name() has to handle. */
#define FOLD_MAX 16

/*
 * Case-fold a short name for table lookup: ASCII A-Z, and the Latin-1
 * capitals U+00C0..U+00DE (UTF-8 C3 80..C3 9E, except the multiplication
 * sign C3 97), so that "PRESSÃO" finds "pressão". Returns false if the
 * name is too long to be in any table.
 */
static bool
fold_name(const char *p, size_t len, char out[FOLD_MAX])
{
    size_t i;

    if (len > FOLD_MAX)
        return false;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];

        if (c == 0xc3 && i + 1 < len) {
            unsigned char c2 = (unsigned char)p[i + 1];

            out[i] = (char)c;
            if (c2 >= 0x80 && c2 <= 0x9e && c2 != 0x97)
                c2 = (unsigned char)(c2 + 0x20);
            out[++i] = (char)c2;
            continue;
        }
        out[i] = (char)sp_ascii_lower(c);
    }
    return true;
}

/* The known quantity a wire name denotes, or -1. */
static int
quantity_lookup(const char *p, size_t len)
{
    char f[FOLD_MAX];
    size_t i;

    if (len < 2 || !fold_name(p, len, f))
        return -1;
    for (i = 0; i < sizeof(quantity_names) / sizeof(quantity_names[0]);
         i++) {
        if (quantity_names[i].len == len &&
            quantity_names[i].name[0] == f[0] &&
            memcmp(quantity_names[i].name, f, len) == 0)
            return quantity_names[i].q;
    }
    return -1;
}

static bool
has_upper(const char *p, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (p[i] >= 'A' && p[i] <= 'Z')
            return true;
    }
    return false;
}

static void
lower_into(char *dst, const char *src, size_t len)
{
    size_t i;

    /* Byte by byte, so dst == src (in place) is fine. */
    for (i = 0; i < len; i++)
        dst[i] = (char)sp_ascii_lower((unsigned char)src[i]);
}

struct proto_str
proto_canon_quantity(const char *name, size_t len, char *buf, size_t buf_len,
                     struct proto_str *default_unit)
{
    static const struct proto_str empty = { "", 0 };
    struct proto_str r;
    int q = quantity_lookup(name, len);

    if (q >= 0) {
        if (default_unit != NULL)
            *default_unit = quantities[q].unit;
        return quantities[q].name;
    }
    if (default_unit != NULL)
        *default_unit = empty;
    if (len == 0 || buf == NULL || buf_len < len)
        return empty; /* caller broke the contract: buf_len >= len */
    lower_into(buf, name, len);
    r.p = buf;
    r.len = len;
    return r;
}

/* The unit a reading of quantity q gets when the line says (p, len). */
static struct proto_str
canon_unit(int q, const char *p, size_t len)
{
    struct proto_str u = { p, len };
    char f[FOLD_MAX];
    const char *const *a;

    if (q < 0)
        return u;
    if (len == 0 || (len == quantities[q].unit.len &&
                     memcmp(p, quantities[q].unit.p, len) == 0))
        return quantities[q].unit; /* the common case: as canonical */
    if (!fold_name(p, len, f))
        return u;
    for (a = quantities[q].unit_aliases; *a != NULL; a++) {
        if ((*a)[0] == f[0] && strlen(*a) == len && memcmp(*a, f, len) == 0)
            return quantities[q].unit;
    }
    return u;
}

struct proto_str
proto_canon_unit(const char *q, size_t q_len, const char *u, size_t u_len)
{
    return canon_unit(quantity_lookup(q, q_len), u, u_len);
}

/* ---- Whole-line checks ------------------------------------------------ */

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Nonzero if any byte of x is below n (n <= 128), or has its high bit. */
static inline uint64_t
has_less(uint64_t x, unsigned n)
{
    return (x - ONES * n) | x;
}

/*
 * One pass over the line: PROTO_E_UTF8 if it is not valid UTF-8 anywhere,
 * else PROTO_E_NUL if it holds a byte below 0x20 other than tab, or 0x7f.
 * Eight plain-ASCII bytes at a time on the fast path.
 */
static int
check_bytes(const char *p, size_t len)
{
    const char *end = p + len;
    bool ctl = false;

    while (p < end) {
        unsigned char c;
        size_t n;

        while ((size_t)(end - p) >= 8) {
            uint64_t x, del;

            memcpy(&x, p, 8);
            /* a byte of 0x7f becomes 0 after the xor */
            del = x ^ (ONES * 0x7f);
            if ((has_less(x, 0x20) & HIGHS) != 0 ||
                ((del - ONES) & ~del & HIGHS) != 0)
                break;
            p += 8;
        }
        if (p >= end)
            break;
        c = (unsigned char)*p;
        if (c < 0x80) {
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                ctl = true;
            p++;
            continue;
        }
        n = sp_utf8_len(p, end);
        if (n == 0)
            return PROTO_E_UTF8;
        p += n;
    }
    return ctl ? PROTO_E_NUL : PROTO_OK;
}

bool
proto_utf8_valid(const char *p, size_t len)
{
    const char *end = p + len;

    while (p < end) {
        size_t n;

        if (*p == '\0')
            return false;
        n = sp_utf8_len(p, end);
        if (n == 0)
            return false;
        p += n;
    }
    return true;
}

/*
 * Common prologue: limits, byte checks, blank and comment lines. On
 * PROTO_OK, [*b, *e) is the line without leading and trailing blanks.
 */
/* Always inlined: a third caller (proto_parse_graphite) must not turn it
 * into a call on the two hot paths (measured: 7 to 19 more instructions
 * per line without this). */
static inline __attribute__((always_inline)) int
line_prologue(const char *p, size_t len, struct proto_line *out,
              const char **b, const char **e)
{
    int rc;

    if (len > PROTO_MAX_LINE_LIMIT)
        return PROTO_E_TOOLONG;
    rc = check_bytes(p, len);
    if (rc != PROTO_OK)
        return rc;
    *b = sp_skip_blanks(p, p + len);
    *e = sp_rtrim_blanks(*b, p + len);
    if (*b == *e || **b == '#')
        return PROTO_E_EMPTY;
    out->has_ts = false;
    out->ts_ns = 0;
    out->n = 0;
    out->scratch_used = 0;
    return PROTO_OK;
}

/* ---- Scratch ---------------------------------------------------------- */

static char *
scratch_get(struct proto_line *out, size_t len)
{
    char *s;

    if (len > sizeof(out->scratch) - out->scratch_used)
        return NULL;
    s = out->scratch + out->scratch_used;
    out->scratch_used += len;
    return s;
}

/*
 * The quantity name for wire name (p, len), and its quantity index. mine
 * is p itself when p is already a scratch copy of ours (an unescaped key),
 * which is then lower-cased in place; NULL when p is the caller's line.
 */
static int
quantity_of(struct proto_line *out, const char *p, size_t len, char *mine,
            struct proto_str *name, int *q)
{
    char *s = mine;

    *q = quantity_lookup(p, len);
    if (*q >= 0) {
        *name = quantities[*q].name;
        return PROTO_OK;
    }
    name->p = p;
    name->len = len;
    if (!has_upper(p, len))
        return PROTO_OK;
    if (s == NULL) {
        s = scratch_get(out, len);
        if (s == NULL)
            return PROTO_E_TOOLONG;
    }
    lower_into(s, p, len);
    name->p = s;
    return PROTO_OK;
}

static bool
name_ok(size_t len, size_t max)
{
    return len > 0 && len <= max;
}

static void
add_first(struct proto_line *out, struct proto_str sensor,
          struct proto_str quantity, struct proto_str unit, double v)
{
    struct proto_reading *r = &out->r[0];

    r->sensor = sensor;
    r->quantity = quantity;
    r->unit = unit;
    r->value = v;
    out->n = 1;
}

/* ---- The text form ---------------------------------------------------- */

/* True if [p, end) starts with nan or inf (any case, any sign) not followed
 * by an ASCII letter or digit: "nan°C", "-Infinity", "inf%". */
static bool
at_nan_inf(const char *p, const char *end)
{
    size_t n;

    if (p < end && (*p == '+' || *p == '-'))
        p++;
    if ((size_t)(end - p) < 3)
        return false;
    if (sp_casematch(p, 3, "nan") || sp_casematch(p, 3, "inf"))
        n = 3;
    else
        return false;
    if ((size_t)(end - p) >= 8 && sp_casematch(p, 8, "infinity"))
        n = 8;
    if (p + n < end) {
        unsigned char c = (unsigned char)p[n];

        if (sp_is_digit(c) || (sp_ascii_lower(c) >= 'a' &&
                               sp_ascii_lower(c) <= 'z'))
            return false;
    }
    return true;
}

static const char *
find_dash(const char *p, const char *end)
{
    while ((size_t)(end - p) >= 3) {
        const char *d = memchr(p + 1, '-', (size_t)(end - p) - 2);

        if (d == NULL)
            return NULL;
        if (d[-1] == ' ' && d[1] == ' ')
            return d - 1;
        p = d;
    }
    return NULL;
}

/* Trimmed sub-range; false if it is empty, too long or holds a tab. */
static bool
text_name(const char *b, const char *e, size_t max, struct proto_str *s)
{
    b = sp_skip_blanks(b, e);
    e = sp_rtrim_blanks(b, e);
    s->p = b;
    s->len = (size_t)(e - b);
    return name_ok(s->len, max) && memchr(b, '\t', s->len) == NULL;
}

/*
 * The text form on [b, e). *looks is set when the line has the shape
 * "x - y: <number, nan or inf>", so that its error, rather than line
 * protocol's, is the one reported.
 */
static int
parse_text_form(const char *b, const char *e, struct proto_line *out,
                bool *looks)
{
    const char *dash, *sensor_end, *qb, *colon, *cur, *ub;
    struct proto_str sensor, qname, quantity, unit;
    double v;
    size_t i;
    int q, rc;

    *looks = false;
    dash = find_dash(b, e);
    if (dash != NULL) {
        sensor_end = dash;
        qb = dash + 3;
    } else if ((size_t)(e - b) >= 2 && b[0] == '-' && b[1] == ' ') {
        /* " - x: 1" with its leading blank trimmed: an empty sensor. Only
         * when no " - " follows, so that the sensor "-" ("- - x: 1", the
         * human form of "-\t - x: 1") keeps parsing the same. */
        sensor_end = b;
        qb = b + 2;
    } else {
        return PROTO_E_SYNTAX;
    }
    colon = memchr(qb, ':', (size_t)(e - qb));
    if (colon == NULL)
        return PROTO_E_SYNTAX;
    cur = sp_skip_blanks(colon + 1, e);
    if (at_nan_inf(cur, e)) {
        *looks = true;
        return PROTO_E_RANGE;
    }
    rc = sp_f64(&cur, e, &v);
    if (rc == -ERANGE) {
        *looks = true;
        return PROTO_E_RANGE;
    }
    if (rc < 0)
        return PROTO_E_SYNTAX;
    *looks = true;
    if (!text_name(b, sensor_end, PROTO_MAX_NAME, &sensor) ||
        !text_name(qb, colon, PROTO_MAX_NAME, &qname))
        return PROTO_E_NAME;
    /* A sensor ending in " -" ("a  -\t - q: 1") would come back from its
     * human form "a  - - q: 1" as the sensor "a": refuse it. */
    if (sensor.len >= 2 && sensor.p[sensor.len - 1] == '-' &&
        sensor.p[sensor.len - 2] == ' ')
        return PROTO_E_NAME;

    /* The unit: one word that cannot be mistaken for more of the number
     * or for line protocol (no blanks, commas, '=', quotes, backslashes). */
    ub = sp_skip_blanks(cur, e);
    unit.p = ub;
    unit.len = (size_t)(e - ub);
    if (unit.len > 0 && (sp_is_digit((unsigned char)*ub) || *ub == '.'))
        return PROTO_E_SYNTAX;
    for (i = 0; i < unit.len; i++) {
        char c = ub[i];

        if (c == ' ' || c == '\t' || c == ',' || c == '=' || c == '"' ||
            c == '\\')
            return PROTO_E_SYNTAX;
    }
    if (unit.len > PROTO_MAX_UNIT)
        return PROTO_E_NAME;

    rc = quantity_of(out, qname.p, qname.len, NULL, &quantity, &q);
    if (rc != PROTO_OK)
        return rc;
    out->fmt = PROTO_FMT_TEXT;
    add_first(out, sensor, quantity, canon_unit(q, unit.p, unit.len), v);
    return PROTO_OK;
}

/* ---- Line protocol ---------------------------------------------------- */

struct tok {
    const char *p;
    size_t len;
    bool esc; /* holds a backslash: unescape before use */
};

/*
 * Scan a measurement, tag key, tag value or field key: up to an unescaped
 * ',' or ' ' (or '=' when stop_eq). A backslash always takes the next byte
 * with it, as InfluxDB's scanner does. Tabs are not separators in line
 * protocol and may not be part of a name: PROTO_E_SYNTAX.
 */
/* Byte classes for scan_name: what ends a name, and what needs a look. */
enum { C_SEP = 1, C_EQ = 2, C_SPECIAL = 4 };
static const unsigned char name_class[256] = {
    [','] = C_SEP, [' '] = C_SEP, ['='] = C_EQ,
    ['\\'] = C_SPECIAL, ['\t'] = C_SPECIAL,
};

static int
scan_name(const char **curp, const char *end, bool stop_eq, struct tok *t)
{
    const unsigned stop = C_SEP | C_SPECIAL | (stop_eq ? C_EQ : 0);
    const char *p = *curp;

    t->p = p;
    t->esc = false;
    for (;;) {
        while (p < end && (name_class[(unsigned char)*p] & stop) == 0)
            p++;
        if (p >= end || *p == ',' || *p == ' ' || *p == '=')
            break;
        if (*p == '\t')
            return PROTO_E_SYNTAX;
        /* A backslash: it takes the next byte with it, tab excepted. */
        if (p + 1 < end) {
            if (p[1] == '\t')
                return PROTO_E_SYNTAX;
            t->esc = true;
            p += 2;
        } else {
            p++;
        }
    }
    t->len = (size_t)(p - t->p);
    *curp = p;
    return PROTO_OK;
}

/*
 * Resolve escapes: "\\" and "\," "\ " always, "\=" except in measurements;
 * any other backslash is literal. Borrows when there is nothing to do.
 */
static int
tok_str(struct proto_line *out, const struct tok *t, bool measurement,
        struct proto_str *s, char **mine)
{
    size_t i = 0, o = 0;
    char *dst;

    s->p = t->p;
    s->len = t->len;
    if (mine != NULL)
        *mine = NULL;
    if (!t->esc)
        return PROTO_OK;
    dst = scratch_get(out, t->len);
    if (dst == NULL)
        return PROTO_E_TOOLONG;
    while (i < t->len) {
        char c = t->p[i];

        if (c == '\\' && i + 1 < t->len) {
            char n = t->p[i + 1];

            if (n == ',' || n == ' ' || n == '\\' ||
                (n == '=' && !measurement)) {
                dst[o++] = n;
                i += 2;
                continue;
            }
        }
        dst[o++] = c;
        i++;
    }
    out->scratch_used -= t->len - o;
    s->p = dst;
    s->len = o;
    if (mine != NULL)
        *mine = dst;
    return PROTO_OK;
}

enum fval { FV_NUMBER, FV_STRING };

/* InfluxDB's booleans: t T true True TRUE f F false False FALSE. */
static bool
is_bool(const char *p, size_t n, double *v)
{
    static const struct {
        const char *s;
        size_t len;
        double v;
    } bools[] = {
        { "t", 1, 1 },     { "T", 1, 1 },     { "true", 4, 1 },
        { "True", 4, 1 },  { "TRUE", 4, 1 },  { "f", 1, 0 },
        { "F", 1, 0 },     { "false", 5, 0 }, { "False", 5, 0 },
        { "FALSE", 5, 0 },
    };
    size_t i;

    if (n > 5 || (p[0] != 't' && p[0] != 'T' && p[0] != 'f' && p[0] != 'F'))
        return false;
    for (i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
        if (bools[i].len == n && memcmp(bools[i].s, p, n) == 0) {
            *v = bools[i].v;
            return true;
        }
    }
    return false;
}

/* A field value at *curp: a number or boolean into *v, or a string. */
static int
scan_field_value(const char **curp, const char *end, enum fval *kind,
                 double *v)
{
    const char *p = *curp, *tb, *te, *q;
    size_t n;
    int rc;

    if (p < end && *p == '"') {
        /* String: ends at an unescaped quote; "\\" and "\"" are escapes. */
        p++;
        for (;;) {
            if (p >= end)
                return PROTO_E_SYNTAX; /* unterminated */
            if (*p == '\\' && p + 1 < end) {
                p += 2;
                continue;
            }
            if (*p == '"')
                break;
            p++;
        }
        *curp = p + 1;
        *kind = FV_STRING;
        return PROTO_OK;
    }

    tb = p;
    while (p < end && *p != ',' && *p != ' ') {
        if (*p == '\t')
            return PROTO_E_SYNTAX;
        p++;
    }
    te = p;
    n = (size_t)(te - tb);
    *curp = te;
    *kind = FV_NUMBER;
    if (n == 0)
        return PROTO_E_SYNTAX;

    if (is_bool(tb, n, v))
        return PROTO_OK;

    q = tb;
    if (te[-1] == 'i') {
        int64_t iv;

        rc = sp_i64(&q, te - 1, &iv);
        if (rc == 0 && q == te - 1) {
            *v = (double)iv;
            return PROTO_OK;
        }
        return rc == -ERANGE ? PROTO_E_RANGE : PROTO_E_SYNTAX;
    }
    if (te[-1] == 'u') {
        uint64_t uv;

        rc = sp_u64(&q, te - 1, &uv);
        if (rc == 0 && q == te - 1) {
            *v = (double)uv;
            return PROTO_OK;
        }
        return rc == -ERANGE ? PROTO_E_RANGE : PROTO_E_SYNTAX;
    }
    rc = sp_f64(&q, te, v);
    if (rc == -ERANGE)
        return PROTO_E_RANGE;
    if (rc == 0 && q == te)
        return PROTO_OK;
    if (at_nan_inf(tb, te)) {
        q = tb + (*tb == '+' || *tb == '-');
        n = (size_t)(te - q);
        if (sp_casematch(q, n, "nan") || sp_casematch(q, n, "inf") ||
            sp_casematch(q, n, "infinity"))
            return PROTO_E_RANGE;
    }
    return PROTO_E_SYNTAX;
}

/* InfluxDB 1.x's valid time range, in ns (its min and max are sentinels). */
#define TS_MIN (INT64_MIN + 2)
#define TS_MAX (INT64_MAX - 1)

static int
parse_timestamp(const char *b, const char *e, int64_t mult, int64_t *ts)
{
    const char *p = b;
    int64_t t;

    if (sp_i64(&p, e, &t) != 0 || p != e || *b == '+')
        return PROTO_E_TIMESTAMP;
    if (mult > 1) {
        if (t > INT64_MAX / mult || t < INT64_MIN / mult)
            return PROTO_E_TIMESTAMP;
        t *= mult;
    }
    if (t < TS_MIN || t > TS_MAX)
        return PROTO_E_TIMESTAMP;
    *ts = t;
    return PROTO_OK;
}

/* Add or (same quantity: last wins) update one numeric field's reading. */
static int
add_field(struct proto_line *out, struct proto_str quantity,
          struct proto_str unit, double v)
{
    size_t i;

    for (i = 0; i < out->n; i++) {
        struct proto_reading *r = &out->r[i];

        if (r->quantity.len == quantity.len &&
            (r->quantity.p == quantity.p ||
             memcmp(r->quantity.p, quantity.p, quantity.len) == 0)) {
            r->unit = unit;
            r->value = v;
            return PROTO_OK;
        }
    }
    if (out->n == PROTO_MAX_FIELDS)
        return PROTO_E_TOOMANY;
    out->r[out->n].quantity = quantity;
    out->r[out->n].unit = unit;
    out->r[out->n].value = v;
    out->n++;
    return PROTO_OK;
}

static int
parse_influx(const char *b, const char *e, const struct proto_opts *opts,
             struct proto_line *out)
{
    const char *cur = b;
    struct tok meas, key, val;
    struct proto_str sensor = { NULL, 0 }, unit = { NULL, 0 }, s;
    bool have_sensor = false, have_unit = false;
    size_t i;
    int rc;

    rc = scan_name(&cur, e, false, &meas);
    if (rc != PROTO_OK)
        return rc;
    if (meas.len == 0)
        return PROTO_E_SYNTAX;

    /* Tags: ",key=value" until the first unescaped space. */
    while (cur < e && *cur == ',') {
        cur++;
        rc = scan_name(&cur, e, true, &key);
        if (rc != PROTO_OK)
            return rc;
        if (key.len == 0 || cur >= e || *cur != '=')
            return PROTO_E_SYNTAX;
        cur++;
        rc = scan_name(&cur, e, true, &val);
        if (rc != PROTO_OK)
            return rc;
        if (val.len == 0 || (cur < e && *cur == '='))
            return PROTO_E_SYNTAX;
        if (!key.esc && key.len == 6 && memcmp(key.p, "sensor", 6) == 0) {
            rc = tok_str(out, &val, false, &sensor, NULL);
            have_sensor = true;
        } else if (!key.esc && key.len == 4 &&
                   memcmp(key.p, "unit", 4) == 0) {
            rc = tok_str(out, &val, false, &unit, NULL);
            have_unit = true;
        }
        if (rc != PROTO_OK)
            return rc;
    }
    if (cur >= e || *cur != ' ')
        return PROTO_E_SYNTAX; /* no field set */
    while (cur < e && *cur == ' ')
        cur++;

    /* Fields: "key=value" separated by commas. */
    for (;;) {
        enum fval kind;
        double v = 0;

        rc = scan_name(&cur, e, true, &key);
        if (rc != PROTO_OK)
            return rc;
        if (key.len == 0 || cur >= e || *cur != '=')
            return PROTO_E_SYNTAX;
        cur++;
        rc = scan_field_value(&cur, e, &kind, &v);
        if (rc != PROTO_OK)
            return rc;
        if (kind == FV_NUMBER) {
            struct proto_str quantity;
            char *mine;
            int q;

            /* Escapes at most halve a key: skip copying hopeless ones. */
            if (key.len > 2 * PROTO_MAX_NAME)
                return PROTO_E_NAME;
            rc = tok_str(out, &key, false, &s, &mine);
            if (rc != PROTO_OK)
                return rc;
            if (!name_ok(s.len, PROTO_MAX_NAME))
                return PROTO_E_NAME;
            rc = quantity_of(out, s.p, s.len, mine, &quantity, &q);
            if (rc != PROTO_OK)
                return rc;
            rc = add_field(out, quantity,
                           canon_unit(q, have_unit ? unit.p : "",
                                      have_unit ? unit.len : 0),
                           v);
            if (rc != PROTO_OK)
                return rc;
        }
        if (cur < e && *cur == ',') {
            cur++;
            continue;
        }
        break;
    }

    /* Optional timestamp, then nothing (trailing blanks were trimmed). */
    if (cur < e) {
        const char *tb;

        if (*cur != ' ')
            return PROTO_E_SYNTAX; /* e.g. a string field with a tail */
        while (cur < e && *cur == ' ')
            cur++;
        tb = cur;
        while (cur < e && *cur != ' ')
            cur++;
        if (memchr(tb, '\t', (size_t)(cur - tb)) != NULL)
            return PROTO_E_SYNTAX;
        if (cur != e)
            return PROTO_E_SYNTAX; /* something after the timestamp */
        rc = parse_timestamp(tb, cur,
                             opts != NULL && opts->ts_mult > 1
                                 ? opts->ts_mult
                                 : 1,
                             &out->ts_ns);
        if (rc != PROTO_OK)
            return rc;
        out->has_ts = true;
    }

    if (out->n == 0)
        return PROTO_E_NOFIELD;
    if (!have_sensor) {
        rc = tok_str(out, &meas, true, &sensor, NULL);
        if (rc != PROTO_OK)
            return rc;
    }
    if (!name_ok(sensor.len, PROTO_MAX_NAME) ||
        (have_unit && unit.len > PROTO_MAX_UNIT))
        return PROTO_E_NAME;
    for (i = 0; i < out->n; i++)
        out->r[i].sensor = sensor;
    out->fmt = PROTO_FMT_INFLUX;
    return PROTO_OK;
}

/* ---- Entry points ----------------------------------------------------- */

/*
 * Graphite, once the text form and line protocol have refused [b, e) with
 * line protocol's syntax error: its result if the line looked like
 * Graphite, else that syntax error. Out of line, so that the hot path of
 * proto_parse_line stays as it was.
 */
static __attribute__((noinline)) int
try_graphite(const char *b, const char *e, const struct proto_opts *opts,
             struct proto_line *out)
{
    bool looks;
    int rc;

    out->has_ts = false;
    out->ts_ns = 0;
    out->n = 0;
    out->scratch_used = 0;
    rc = proto_graphite_parse(b, e, opts, out, &looks);
    return rc == PROTO_OK || looks ? rc : PROTO_E_SYNTAX;
}

int
proto_parse_line(const char *p, size_t len, const struct proto_opts *opts,
                 struct proto_line *out)
{
    const char *b, *e;
    bool looks;
    int rc_text, rc;

    rc = line_prologue(p, len, out, &b, &e);
    if (rc != PROTO_OK)
        return rc;
    rc_text = parse_text_form(b, e, out, &looks);
    if (rc_text == PROTO_OK)
        return PROTO_OK;
    out->n = 0;
    out->scratch_used = 0;
    rc = parse_influx(b, e, opts, out);
    if (rc == PROTO_OK)
        return PROTO_OK;
    /* A line-protocol error other than syntax means the line was line
     * protocol (for instance a string field holding "x - y: 5"). */
    if (rc != PROTO_E_SYNTAX)
        return rc;
    if (looks)
        return rc_text;
    return try_graphite(b, e, opts, out);
}

int
proto_parse_text(const char *p, size_t len, struct proto_line *out)
{
    const char *b, *e;
    bool looks;
    int rc;

    rc = line_prologue(p, len, out, &b, &e);
    if (rc != PROTO_OK)
        return rc;
    return parse_text_form(b, e, out, &looks);
}

int
proto_parse_graphite(const char *p, size_t len, const struct proto_opts *opts,
                     struct proto_line *out)
{
    const char *b, *e;
    bool looks;
    int rc;

    rc = line_prologue(p, len, out, &b, &e);
    if (rc != PROTO_OK)
        return rc;
    return proto_graphite_parse(b, e, opts, out, &looks);
}

/*
 * "METHOD SP TARGET SP HTTP/d.d": METHOD 3 to 10 upper-case ASCII letters,
 * TARGET one or more bytes that are neither space nor control bytes.
 */
bool
proto_is_http_request(const char *p, size_t len)
{
    const char *end = p + len, *t;
    size_t m = 0;

    while (p + m < end && p[m] >= 'A' && p[m] <= 'Z')
        m++;
    if (m < 3 || m > 10)
        return false;
    p += m;
    if (p >= end || *p != ' ')
        return false;
    t = ++p;
    while (p < end && (unsigned char)*p > ' ' && *p != 0x7f)
        p++;
    if (p == t)
        return false;
    return end - p == 9 && memcmp(p, " HTTP/", 6) == 0 &&
           sp_is_digit((unsigned char)p[6]) && p[7] == '.' &&
           sp_is_digit((unsigned char)p[8]);
}
