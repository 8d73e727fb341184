/*
 * strparse: bounded cursor-advancing parsers (see strparse.h).
 *
 * sp_f64 takes a fast path for the common sensor values (at most 15
 * significant digits and a small decimal exponent), where one IEEE multiply
 * or divide of two exact doubles is correctly rounded (Clinger's fast path).
 * Everything else is copied into a bounded NUL-terminated buffer and handed
 * to strtod, whose end pointer and result are checked.
 * SPDX-License-Identifier: MIT
 */
#include "util/strparse.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The fast path needs doubles evaluated in double precision (SSE2, not
 * x87's extended precision). */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
#define SP_FAST_F64 1
#else
#define SP_FAST_F64 0
#endif

const char *
sp_skip_blanks(const char *p, const char *end)
{
    while (p < end && sp_is_blank((unsigned char)*p))
        p++;
    return p;
}

const char *
sp_rtrim_blanks(const char *p, const char *end)
{
    while (end > p && sp_is_blank((unsigned char)end[-1]))
        end--;
    return end;
}

/* 10^0 .. 10^22: every one is exactly representable as a double. */
static const double pow10_exact[] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

int
sp_f64(const char **cur, const char *end, double *out)
{
    const char *p = *cur;
    const char *digits_start;
    uint64_t mant = 0;
    int n_sig = 0;      /* significant digits seen (leading zeros excluded) */
    int e10 = 0;        /* decimal exponent implied by the fraction */
    long exp_val = 0;   /* the explicit exponent, saturated */
    bool neg = false, any = false;

    if (p < end && (*p == '+' || *p == '-')) {
        neg = *p == '-';
        p++;
    }
    digits_start = p;
    while (p < end && sp_is_digit((unsigned char)*p)) {
        unsigned d = (unsigned)(*p - '0');

        if (mant != 0 || d != 0) {
            if (n_sig < 19)
                mant = mant * 10 + d;
            else
                e10++; /* digit dropped: only the slow path uses it */
            n_sig++;
        }
        p++;
    }
    any = p != digits_start;
    if (p < end && *p == '.') {
        const char *frac = p + 1;

        p = frac;
        while (p < end && sp_is_digit((unsigned char)*p)) {
            unsigned d = (unsigned)(*p - '0');

            if (mant != 0 || d != 0) {
                if (n_sig < 19) {
                    mant = mant * 10 + d;
                    e10--;
                }
                n_sig++;
            } else {
                e10--; /* a leading zero of the fraction: 0.001 */
            }
            p++;
        }
        if (!any && p == frac)
            return -EINVAL; /* "." or "+." alone */
        any = true;
    }
    if (!any)
        return -EINVAL;
    if (p < end && (*p == 'e' || *p == 'E')) {
        const char *q = p + 1;
        bool eneg = false;

        if (q < end && (*q == '+' || *q == '-')) {
            eneg = *q == '-';
            q++;
        }
        if (q < end && sp_is_digit((unsigned char)*q)) {
            while (q < end && sp_is_digit((unsigned char)*q)) {
                if (exp_val < 100000)
                    exp_val = exp_val * 10 + (*q - '0');
                q++;
            }
            if (eneg)
                exp_val = -exp_val;
            p = q;
        }
    }

    if ((size_t)(p - *cur) > SP_NUM_MAX)
        return -ERANGE;

    if (SP_FAST_F64 && n_sig <= 15) {
        long total = (long)e10 + exp_val;
        double v;

        if (mant == 0) {
            *out = neg ? -0.0 : 0.0;
            *cur = p;
            return 0;
        }
        if (total >= -22 && total <= 22) {
            /* mant < 10^15 < 2^53 is exact, and so is the power. */
            v = (double)mant;
            if (total < 0)
                v /= pow10_exact[-total];
            else
                v *= pow10_exact[total];
            *out = neg ? -v : v;
            *cur = p;
            return 0;
        }
    }

    /* Slow path: strtod on a bounded, NUL-terminated copy. */
    {
        char buf[SP_NUM_MAX + 1];
        size_t n = (size_t)(p - *cur);
        char *ep = NULL;
        double v;

        memcpy(buf, *cur, n);
        buf[n] = '\0';
        errno = 0;
        v = strtod(buf, &ep);
        if (ep != buf + n)
            return -EINVAL; /* cannot happen in the "C" locale */
        if (!isfinite(v))
            return -ERANGE;
        /* errno == ERANGE with a finite result is underflow: accepted. */
        *out = v;
        *cur = p;
        return 0;
    }
}

/* Digits at *cur into a uint64_t, failing past limit. */
static int
parse_digits(const char **cur, const char *end, uint64_t limit, uint64_t *out)
{
    const char *p = *cur;
    uint64_t v = 0;
    bool overflow = false;
    int n = 0;

    if (p >= end || !sp_is_digit((unsigned char)*p))
        return -EINVAL;
    while (p < end && sp_is_digit((unsigned char)*p)) {
        unsigned d = (unsigned)(*p - '0');

        /* 18 digits stay below 10^18 < 2^63: check only past that. */
        if (n < 18)
            v = v * 10 + d;
        else if (v > (limit - d) / 10)
            overflow = true;
        else
            v = v * 10 + d;
        n++;
        p++;
    }
    if (overflow)
        return -ERANGE;
    *out = v;
    *cur = p;
    return 0;
}

int
sp_i64(const char **cur, const char *end, int64_t *out)
{
    const char *p = *cur;
    uint64_t mag;
    bool neg = false;
    int rc;

    if (p < end && (*p == '+' || *p == '-')) {
        neg = *p == '-';
        p++;
    }
    rc = parse_digits(&p, end, neg ? (uint64_t)INT64_MAX + 1 : INT64_MAX,
                      &mag);
    if (rc < 0)
        return rc;
    if (neg)
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    else
        *out = (int64_t)mag;
    *cur = p;
    return 0;
}

int
sp_u64(const char **cur, const char *end, uint64_t *out)
{
    return parse_digits(cur, end, UINT64_MAX, out);
}

bool
sp_casematch(const char *p, size_t len, const char *lit)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (lit[i] == '\0' || sp_ascii_lower((unsigned char)p[i]) !=
                                  (unsigned char)lit[i])
            return false;
    }
    return lit[len] == '\0';
}

static inline bool
is_cont(unsigned char c)
{
    return (c & 0xc0) == 0x80;
}

size_t
sp_utf8_len(const char *p, const char *end)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t avail = (size_t)(end - p);
    unsigned char c = s[0];

    if (c < 0x80)
        return 1;
    if (c < 0xc2)
        return 0; /* continuation byte, or overlong 2-byte lead C0/C1 */
    if (c < 0xe0)
        return (avail >= 2 && is_cont(s[1])) ? 2 : 0;
    if (c < 0xf0) {
        if (avail < 3 || !is_cont(s[1]) || !is_cont(s[2]))
            return 0;
        if (c == 0xe0 && s[1] < 0xa0)
            return 0; /* overlong */
        if (c == 0xed && s[1] >= 0xa0)
            return 0; /* UTF-16 surrogate */
        return 3;
    }
    if (c < 0xf5) {
        if (avail < 4 || !is_cont(s[1]) || !is_cont(s[2]) || !is_cont(s[3]))
            return 0;
        if (c == 0xf0 && s[1] < 0x90)
            return 0; /* overlong */
        if (c == 0xf4 && s[1] >= 0x90)
            return 0; /* above U+10FFFF */
        return 4;
    }
    return 0;
}
