/*
 * proto_format: readings and raw lines back into text for log.txt, and the
 * fixed error reasons used on the wire.
 *
 * Both formatters follow snprintf: they write at most len bytes including
 * a terminating NUL (when len > 0) and return the length they needed, so a
 * caller can size a buffer or detect truncation. Output is always one line
 * of valid UTF-8 without control bytes (tab included), whatever the input.
 * Thread-safe, no allocation.
 * SPDX-License-Identifier: MIT
 */
#include "proto/proto.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "util/strparse.h"

/* A bounded output cursor that keeps counting past its capacity. */
struct out {
    char *buf;
    size_t len;  /* size of buf, 0 if none */
    size_t cap;  /* bytes we may write, the NUL excluded */
    size_t need; /* bytes the whole output takes */
};

static void
out_init(struct out *o, char *buf, size_t len)
{
    o->buf = buf;
    o->len = buf != NULL ? len : 0;
    o->cap = o->len > 0 ? o->len - 1 : 0;
    o->need = 0;
}

static void
out_put(struct out *o, const char *p, size_t n)
{
    if (o->need < o->cap) {
        size_t room = o->cap - o->need;

        memcpy(o->buf + o->need, p, n < room ? n : room);
    }
    o->need += n;
}

static size_t
out_finish(struct out *o)
{
    if (o->len > 0)
        o->buf[o->need < o->cap ? o->need : o->cap] = '\0';
    return o->need;
}

static void
put_hex(struct out *o, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char e[4] = { '\\', 'x', hex[c >> 4], hex[c & 0xf] };

    out_put(o, e, sizeof(e));
}

/*
 * Copy (p, len) escaping control bytes (\n \r \t or \xHH), 0x7f and bytes
 * that are not valid UTF-8 (\xHH). With esc_backslash, "\" becomes "\\"
 * so that the escaping can be undone.
 */
static void
put_escaped(struct out *o, const char *p, size_t len, bool esc_backslash)
{
    const char *end, *run = p;

    if (len == 0)
        return;
    end = p + len;
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        size_t n;

        if (c >= 0x20 && c < 0x7f && (c != '\\' || !esc_backslash)) {
            p++;
            continue;
        }
        if (c >= 0x80) {
            n = sp_utf8_len(p, end);
            if (n > 0) {
                p += n;
                continue;
            }
        }
        out_put(o, run, (size_t)(p - run));
        switch (c) {
        case '\n':
            out_put(o, "\\n", 2);
            break;
        case '\r':
            out_put(o, "\\r", 2);
            break;
        case '\t':
            out_put(o, "\\t", 2);
            break;
        case '\\':
            out_put(o, "\\\\", 2);
            break;
        default:
            put_hex(o, c);
            break;
        }
        p++;
        run = p;
    }
    out_put(o, run, (size_t)(p - run));
}

static bool
str_is(struct proto_str s, const char *lit, size_t n)
{
    return s.len == n && s.p != NULL && memcmp(s.p, lit, n) == 0;
}

/*
 * "%.15g" of v without snprintf for the common case: v is the double
 * nearest to a decimal m / 10^k with |m| < 10^15 and k <= 6. Then that
 * decimal has at most 15 significant digits, so "%.15g" prints exactly it
 * (DBL_DIG is 15), trailing zeros stripped. (double)m / 10^k is correctly
 * rounded (both operands exact), so comparing it with v proves the case.
 * Returns the length, or 0 for "use snprintf" (-0, tiny or huge values).
 */
static size_t
fmt_g15_fast(double v, char *buf)
{
    static const double p10[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6};
    double a = fabs(v);
    int k;

    if (signbit(v) && v == 0)
        return 0;
    if (v != 0 && (a < 1e-4 || a >= 1e15))
        return 0;
    for (k = 0; k <= 6; k++) {
        double s = v * p10[k];
        long long m;
        unsigned long long u, ip, fp;
        char tmp[24], *q = buf;
        int n = 0, d;

        if (fabs(s) >= 1e15)
            return 0;
        m = llround(s);
        if ((double)m / p10[k] != v)
            continue;
        if (m < 0) {
            *q++ = '-';
            u = (unsigned long long)(-m);
        } else {
            u = (unsigned long long)m;
        }
        ip = u / (unsigned long long)p10[k];
        fp = u % (unsigned long long)p10[k];
        do {
            tmp[n++] = (char)('0' + ip % 10);
            ip /= 10;
        } while (ip != 0);
        while (n > 0)
            *q++ = tmp[--n];
        if (fp != 0) {
            d = k;
            while (fp % 10 == 0) {
                fp /= 10;
                d--;
            }
            *q++ = '.';
            for (n = d - 1; n >= 0; n--) {
                tmp[n] = (char)('0' + fp % 10);
                fp /= 10;
            }
            memcpy(q, tmp, (size_t)d);
            q += d;
        }
        return (size_t)(q - buf);
    }
    return 0;
}

size_t
proto_format_human(const struct proto_reading *r, char *buf, size_t len)
{
    struct out o;
    char num[64];
    int n;
    const char *word = NULL;
    bool glue = false;

    out_init(&o, buf, len);
    /* The original's words, and its unit glued to the number, for the two
     * quantities it knew; glued only with the default unit, so that the
     * line parses back to the same reading ("25 K" stays apart). */
    if (str_is(r->quantity, "temperature", 11)) {
        word = "Temperatura";
        glue = str_is(r->unit, "\xc2\xb0" "C", 3);
    } else if (str_is(r->quantity, "humidity", 8)) {
        word = "Umidade";
        glue = str_is(r->unit, "%", 1);
    }

    put_escaped(&o, r->sensor.p, r->sensor.len, false);
    out_put(&o, " - ", 3);
    if (word != NULL)
        out_put(&o, word, strlen(word));
    else
        put_escaped(&o, r->quantity.p, r->quantity.len, false);
    out_put(&o, ": ", 2);
    n = (int)fmt_g15_fast(r->value, num);
    if (n == 0)
        n = snprintf(num, sizeof(num), "%.15g", r->value);
    if (n > 0 && (size_t)n < sizeof(num))
        out_put(&o, num, (size_t)n);
    if (r->unit.len > 0) {
        if (!glue)
            out_put(&o, " ", 1);
        put_escaped(&o, r->unit.p, r->unit.len, false);
    }
    return out_finish(&o);
}

size_t
proto_escape_line(const char *p, size_t len, char *buf, size_t buflen)
{
    struct out o;

    out_init(&o, buf, buflen);
    put_escaped(&o, p, len, true);
    return out_finish(&o);
}

const char *
proto_strerror(int rc)
{
    switch (rc) {
    case PROTO_OK:
        return "ok";
    case PROTO_E_SYNTAX:
        return "syntax error";
    case PROTO_E_UTF8:
        return "invalid utf-8";
    case PROTO_E_NUL:
        return "nul or control byte";
    case PROTO_E_RANGE:
        return "number out of range";
    case PROTO_E_NOFIELD:
        return "no numeric field";
    case PROTO_E_TOOMANY:
        return "too many fields";
    case PROTO_E_NAME:
        return "bad name";
    case PROTO_E_TOOLONG:
        return "line too long";
    case PROTO_E_EMPTY:
        return "empty line";
    case PROTO_E_TIMESTAMP:
        return "bad timestamp";
    case PROTO_E_NOAUTH:
        return "not authenticated";
    case PROTO_E_FORBIDDEN:
        return "sensor not allowed";
    default:
        return "unknown error";
    }
}
