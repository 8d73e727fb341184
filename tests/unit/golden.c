/*
 * golden: see golden.h.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "util/strparse.h"


void
sb_put(struct sbuf *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;

        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = realloc(b->p, cap);
        assert_non_null(b->p);
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void
sb_puts(struct sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

void
sb_printf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(tmp));
    sb_put(b, tmp, (size_t)n);
}

void
sb_quoted(struct sbuf *b, const char *p, size_t len)
{
    const char *end = p + len;

    sb_puts(b, "\"");
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        size_t n = sp_utf8_len(p, end);

        if (c == '"' || c == '\\') {
            sb_put(b, "\\", 1);
            sb_put(b, p, 1);
            p++;
        } else if (c < 0x20 || c == 0x7f || n == 0) {
            sb_printf(b, "\\x%02x", c);
            p++;
        } else {
            sb_put(b, p, n);
            p += n;
        }
    }
    sb_puts(b, "\"");
}

void
sb_value(struct sbuf *b, double v)
{
    char tmp[64];
    int prec;

    for (prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    sb_puts(b, tmp);
}

void
gd_render_parse(struct sbuf *b, int rc, const struct proto_line *pl)
{
    size_t i;

    if (rc != PROTO_OK) {
        sb_printf(b, "err %s", proto_strerror(rc));
        return;
    }
    sb_puts(b, pl->fmt == PROTO_FMT_TEXT       ? "ok text"
               : pl->fmt == PROTO_FMT_INFLUX   ? "ok influx"
               : pl->fmt == PROTO_FMT_GRAPHITE ? "ok graphite"
                                               : "ok ???");
    if (pl->has_ts)
        sb_printf(b, " %lld", (long long)pl->ts_ns);
    else
        sb_puts(b, " -");
    for (i = 0; i < pl->n; i++) {
        const struct proto_reading *r = &pl->r[i];

        sb_puts(b, " | ");
        sb_quoted(b, r->sensor.p, r->sensor.len);
        sb_puts(b, " ");
        sb_quoted(b, r->quantity.p, r->quantity.len);
        sb_puts(b, " ");
        sb_quoted(b, r->unit.p, r->unit.len);
        sb_puts(b, " ");
        sb_value(b, r->value);
    }
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long
gd_decode_input(char *s, size_t len)
{
    size_t i = 0, o = 0;

    while (i < len) {
        if (s[i] != '\\') {
            s[o++] = s[i++];
            continue;
        }
        if (i + 1 >= len)
            return -1;
        switch (s[i + 1]) {
        case '\\': s[o++] = '\\'; i += 2; break;
        case 't': s[o++] = '\t'; i += 2; break;
        case 'r': s[o++] = '\r'; i += 2; break;
        case 'n': s[o++] = '\n'; i += 2; break;
        case '0': s[o++] = '\0'; i += 2; break;
        case 'x':
            if (i + 3 >= len || hexval(s[i + 2]) < 0 || hexval(s[i + 3]) < 0)
                return -1;
            s[o++] = (char)(hexval(s[i + 2]) * 16 + hexval(s[i + 3]));
            i += 4;
            break;
        default:
            return -1;
        }
    }
    return (long)o;
}

char *
gd_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;

    if (f == NULL)
        fail_msg("cannot open %s (run from the repository root)", path);
    for (;;) {
        size_t got;

        if (n + 4096 > cap) {
            cap = cap ? cap * 2 : 65536;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Bytes in an exactly-sized heap block, so ASan sees any overread. */
char *
gd_exact_copy(const char *p, size_t len)
{
    char *c = malloc(len ? len : 1);

    assert_non_null(c);
    if (len > 0)
        memcpy(c, p, len);
    return c;
}



char *
gd_next_line(struct gd_case_file *cf, size_t *len)
{
    char *s, *nl;

    if (cf->pos >= cf->len)
        return NULL;
    s = cf->buf + cf->pos;
    nl = memchr(s, '\n', cf->len - cf->pos);
    *len = nl ? (size_t)(nl - s) : cf->len - cf->pos;
    cf->pos += *len + (nl ? 1 : 0);
    cf->lineno++;
    return s;
}
