/*
 * strparse: bounded, cursor-advancing helpers for parsing bytes that are not
 * NUL-terminated (in the manner of curl's strparse). Every function takes a
 * cursor and an end pointer, never reads at or past end, and on failure
 * leaves the cursor where it was.
 *
 * These replace sscanf, atoi, strtol and unchecked strtod. Numbers follow
 * one plain decimal grammar (no hex, no "nan"/"inf", no locale); sp_f64 is
 * correctly rounded, like strtod in the "C" locale.
 *
 * Thread-safe: no global state. Used by lib/proto and the config parsers.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_STRPARSE_H
#define SN_STRPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest number token sp_f64 accepts, in bytes (longer: -ERANGE). */
#define SP_NUM_MAX 400

/* Blanks are space and horizontal tab. */
static inline bool
sp_is_blank(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static inline bool
sp_is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static inline unsigned char
sp_ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* First byte at or after p that is not a blank (end if none). */
const char *sp_skip_blanks(const char *p, const char *end);

/* The end of [p, end) with trailing blanks removed (p if all blank). */
const char *sp_rtrim_blanks(const char *p, const char *end);

/*
 * Parse a decimal floating-point number at *cur:
 *     [+-]? ( digits [ "." digits? ] | "." digits ) [ [eE] [+-]? digits ]
 * The exponent is taken only when digits follow the e. Parses the longest
 * such prefix and stops there; the caller checks what follows. Returns 0
 * and advances *cur; -EINVAL if there is no number at *cur; -ERANGE if the
 * number overflows a double or is longer than SP_NUM_MAX bytes. Results
 * below the smallest double round to zero or a subnormal (not an error).
 */
int sp_f64(const char **cur, const char *end, double *out);

/* Parse [+-]? digits as an int64_t. Returns 0 and advances *cur, -EINVAL
 * if there are no digits, -ERANGE if the value does not fit. */
int sp_i64(const char **cur, const char *end, int64_t *out);

/* Parse digits (no sign) as a uint64_t. Same returns as sp_i64. */
int sp_u64(const char **cur, const char *end, uint64_t *out);

/* True if (p, len) equals the NUL-terminated lower-case ASCII literal lit,
 * ignoring ASCII case in p. */
bool sp_casematch(const char *p, size_t len, const char *lit);

/*
 * Length (1 to 4) of the well-formed UTF-8 sequence starting at p, or 0 if
 * the bytes at p are not one (truncated, stray continuation byte, overlong
 * form, surrogate, or above U+10FFFF). p < end. ASCII, NUL included, is 1.
 */
size_t sp_utf8_len(const char *p, const char *end);

#endif
