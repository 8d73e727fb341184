/*
 * wire: see wire.h. Formatting uses snprintf with the bounds WIRE_LINE_MAX
 * guarantees; reply parsing walks the bytes by hand (no sscanf).
 * SPDX-License-Identifier: MIT
 */
#include "client/wire.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* The longest formatted line: the influx form with the longest id, field
 * name, value ("100.00" at most for our ranges, 24 bytes reserved) and a
 * 19-digit timestamp, plus the line end and NUL. */
_Static_assert(sizeof("sensornet,sensor=") - 1 + WIRE_ID_MAX +
                   sizeof(" humidity=") - 1 + 24 + 1 + 19 + 2 <=
               WIRE_LINE_MAX,
               "WIRE_LINE_MAX too small for the influx form");

static const char *const format_names[] = {
    [WIRE_INFLUX] = "influx",
    [WIRE_TEXT] = "text",
    [WIRE_ORIGINAL] = "original",
};

int
wire_format_parse(const char *name, enum wire_format *out)
{
    size_t i;

    for (i = 0; i < sizeof(format_names) / sizeof(format_names[0]); i++) {
        if (strcmp(name, format_names[i]) == 0) {
            *out = (enum wire_format)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *
wire_format_name(enum wire_format fmt)
{
    return format_names[fmt];
}

bool
wire_id_valid(const char *id)
{
    size_t i;

    for (i = 0; id[i] != '\0'; i++) {
        unsigned char c = (unsigned char)id[i];

        if (i >= WIRE_ID_MAX || c <= 0x20 || c == 0x7f || c == ',' ||
            c == '=' || c == '"' || c == '\\')
            return false;
    }
    return i > 0;
}

size_t
wire_format_reading(enum wire_format fmt, const struct sim_kind_info *k,
                    const char *id, double value, int64_t ts_ns, char *buf,
                    size_t len)
{
    int r;

    switch (fmt) {
    case WIRE_INFLUX:
        r = snprintf(buf, len, "sensornet,sensor=%s %s=%.2f %" PRId64 "\n",
                     id, k->field, value, ts_ns);
        break;
    case WIRE_TEXT:
        r = snprintf(buf, len, "%s - %s: %.2f%s\n", id, k->label, value,
                     k->unit);
        break;
    case WIRE_ORIGINAL:
    default:
        r = snprintf(buf, len, "%s - %s: %.2f%s", id, k->label, value,
                     k->unit);
        break;
    }
    if (r < 0 || (size_t)r >= len) {
        if (len > 0)
            buf[0] = '\0';
        return 0;
    }
    return (size_t)r;
}

/* A decimal number of 1 to 19 digits at p (no sign); advances *i. */
static bool
parse_u64(const char *p, size_t len, size_t *i, uint64_t *out)
{
    uint64_t v = 0;
    size_t start = *i;

    while (*i < len && p[*i] >= '0' && p[*i] <= '9') {
        if (*i - start >= 19)
            return false;
        v = v * 10 + (uint64_t)(p[*i] - '0');
        (*i)++;
    }
    *out = v;
    return *i > start;
}

size_t
wire_format_auth(const char *id, const char *token, char *buf, size_t len)
{
    int n = snprintf(buf, len, "AUTH %s %s\n", id, token);

    return n < 0 || (size_t)n >= len ? 0 : (size_t)n;
}

/* Classify one reply line (p, len) without its line end. */
static void
parse_line(const char *p, size_t len, struct wire_reply *out)
{
    size_t i;
    uint64_t n;

    out->type = WIRE_R_UNKNOWN;
    out->n = 0;
    out->reason = p;
    out->reason_len = len;
    if (len == 7 && memcmp(p, "AUTH OK", 7) == 0) {
        out->type = WIRE_R_AUTH_OK;
        out->reason_len = 0;
        return;
    }
    if (len >= 8 && memcmp(p, "AUTH ERR", 8) == 0 &&
        (len == 8 || p[8] == ' ')) {
        out->type = WIRE_R_AUTH_ERR;
        out->reason = p + (len > 8 ? 9 : 8);
        out->reason_len = len > 8 ? len - 9 : 0;
        return;
    }
    if (len == 4 && memcmp(p, "PONG", 4) == 0) {
        out->type = WIRE_R_PONG;
        out->reason_len = 0;
        return;
    }
    if (len > 3 && memcmp(p, "OK ", 3) == 0) {
        i = 3;
        if (parse_u64(p, len, &i, &n) && i == len) {
            out->type = WIRE_R_OK;
            out->n = n;
            out->reason_len = 0;
        }
        return;
    }
    if (len > 4 && memcmp(p, "ERR ", 4) == 0) {
        i = 4;
        if (parse_u64(p, len, &i, &n) && n >= 1 && (i == len || p[i] == ' ')) {
            out->type = WIRE_R_ERR_LINE;
            out->n = n;
            if (i < len)
                i++;
            out->reason = p + i;
            out->reason_len = len - i;
        } else {
            out->type = WIRE_R_ERR_OTHER;
            out->reason = p + 4;
            out->reason_len = len - 4;
        }
    }
}

int
wire_parse_reply(const char *p, size_t len, struct wire_reply *out,
                 size_t *consumed)
{
    static const char orig[] = WIRE_ORIGINAL_REPLY;
    const size_t orig_len = sizeof(orig) - 1;
    const char *nl;
    size_t skip = 0, n, line_len;

    while (skip < len && (p[skip] == '\n' || p[skip] == '\r'))
        skip++;
    *consumed = skip;
    p += skip;
    len -= skip;
    if (len == 0)
        return WIRE_AGAIN;

    /* The original reply has no line end: recognise it by its bytes. */
    n = len < orig_len ? len : orig_len;
    if (memcmp(p, orig, n) == 0) {
        if (len < orig_len)
            return WIRE_AGAIN;
        out->type = WIRE_R_ORIGINAL;
        out->n = 0;
        out->reason = p;
        out->reason_len = orig_len;
        *consumed = skip + orig_len;
        return WIRE_OK;
    }

    nl = memchr(p, '\n', len);
    if (nl == NULL)
        return len >= WIRE_REPLY_MAX ? WIRE_E_TOOLONG : WIRE_AGAIN;
    line_len = (size_t)(nl - p);
    if (line_len + 1 > WIRE_REPLY_MAX)
        return WIRE_E_TOOLONG;
    *consumed = skip + line_len + 1;
    if (line_len > 0 && p[line_len - 1] == '\r')
        line_len--;
    parse_line(p, line_len, out);
    return WIRE_OK;
}
