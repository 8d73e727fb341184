/*
 * fuzz_query: the HTTP API's query-string validation (http_params.c). The
 * input is a query string; its first byte picks the endpoint (the
 * parameters it takes); the rest is split at '&' and '=' and
 * percent-decoded as libmicrohttpd does, then every pair goes through
 * http_params_set and the whole through http_params_finish. Every value
 * is also parsed alone as a time and a duration.
 *
 * Invariants (abort on violation): accepted parameters respect the
 * documented ranges (names 1..128 bytes, 1 <= limit <= HTTP_MAX_ROWS,
 * from < to, step > 0, at most HTTP_MAX_ROWS buckets), a failure always
 * says why, and every time that parses prints and parses back to itself.
 * SPDX-License-Identifier: MIT
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/http_params.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW INT64_C(1700000000000000000)

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

/* In place: '+' is a space, %XX a byte (as libmicrohttpd unescapes). The
 * result stops at the first NUL, as a C string handed to us would. */
static void
unescape(char *s)
{
    char *w = s;

    for (; *s != '\0'; s++) {
        if (*s == '+') {
            *w++ = ' ';
        } else if (*s == '%' && hexval(s[1]) >= 0 && hexval(s[2]) >= 0) {
            *w++ = (char)(hexval(s[1]) * 16 + hexval(s[2]));
            s += 2;
        } else {
            *w++ = *s;
        }
    }
    *w = '\0';
}

static void
check_time_roundtrip(const char *v)
{
    int64_t t, back;
    char buf[64];

    if (http_parse_time(v, NOW, &t) != 0)
        return;
    http_format_time(t, buf, sizeof(buf));
    if (http_parse_time(buf, 0, &back) != 0 || back != t)
        abort();
}

static void
check_duration(const char *v)
{
    int64_t d;

    if (http_parse_duration(v, &d) == 0 && d <= 0)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned endpoints[] = {
        HP_SENSOR | HP_QUANTITY | HP_FROM | HP_TO | HP_LIMIT | HP_FORMAT,
        HP_SENSOR | HP_QUANTITY | HP_FROM | HP_TO | HP_STEP,
        HP_SENSOR,
        HP_PRECISION | HP_IGNORED,
    };
    struct http_params hp;
    char err[HTTP_ERR_LEN], *buf, *p;
    unsigned allowed;
    bool lenient;
    int rc = 0;

    if (size < 1 || size > 4096)
        return 0;
    allowed = endpoints[data[0] % 4];
    lenient = data[0] % 4 == 3;
    buf = malloc(size);
    if (buf == NULL)
        abort();
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = '\0';
    http_params_init(&hp, allowed, lenient);
    for (p = buf; rc == 0;) {
        char *amp = strchr(p, '&'), *eq;

        if (amp != NULL)
            *amp = '\0';
        eq = strchr(p, '=');
        if (eq != NULL)
            *eq++ = '\0';
        unescape(p);
        if (eq != NULL) {
            unescape(eq);
            check_time_roundtrip(eq);
            check_duration(eq);
        }
        err[0] = '\0';
        rc = http_params_set(&hp, p, eq, NOW, err, sizeof(err));
        if (rc != 0 && err[0] == '\0')
            abort(); /* a refusal always says why */
        if (amp == NULL)
            break;
        p = amp + 1;
    }
    if (rc == 0) {
        err[0] = '\0';
        rc = http_params_finish(&hp, NOW, err, sizeof(err));
        if (rc != 0 && err[0] == '\0')
            abort();
    }
    if (rc == 0) {
        if (hp.seen & ~hp.allowed)
            abort();
        if ((hp.seen & HP_SENSOR) &&
            (hp.sensor[0] == '\0' || strlen(hp.sensor) > PROTO_MAX_NAME))
            abort();
        if ((hp.seen & HP_QUANTITY) && (hp.quantity[0] == '\0' ||
                                        strlen(hp.quantity) > PROTO_MAX_NAME))
            abort();
        if (hp.limit < 1 || hp.limit > HTTP_MAX_ROWS || hp.ts_mult < 1)
            abort();
        if ((allowed & HP_FROM) && hp.from_ns >= hp.to_ns)
            abort();
        if ((allowed & HP_STEP) &&
            (hp.step_ns <= 0 ||
             (hp.to_ns - hp.from_ns) / hp.step_ns + 2 > HTTP_MAX_ROWS))
            abort();
    }
    free(buf);
    return 0;
}
