/*
 * golden: the pieces the golden-table unit tests share (test_proto.c over
 * tests/unit/data/proto.cases, test_graphite.c over graphite.cases): a
 * growing string buffer, the one rendering of a parse result the tables
 * are written in, "~" input decoding, and reading a cases file line by
 * line. Linked into every unit-test binary (the Makefile's UNIT_HELP).
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_TEST_GOLDEN_H
#define SN_TEST_GOLDEN_H

#include <stddef.h>

#include "proto/proto.h"

/* A NUL-ended string that grows (cmocka-asserts on out of memory). */
struct sbuf {
    char *p;
    size_t len, cap;
};

void sb_put(struct sbuf *b, const char *p, size_t n);
void sb_puts(struct sbuf *b, const char *s);
void sb_printf(struct sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* "..." with \" \\ and \xHH for control bytes and invalid UTF-8. */
void sb_quoted(struct sbuf *b, const char *p, size_t len);
/* The shortest of %.15g %.16g %.17g that reads back to exactly v. */
void sb_value(struct sbuf *b, double v);

/* A parse result as the tables write it:
 *   ok <text|influx|graphite> <ts|-> | "<sensor>" "<quantity>" "<unit>"
 *   <value> | ...      or      err <proto_strerror text> */
void gd_render_parse(struct sbuf *b, int rc, const struct proto_line *pl);
/* Decode a "~" input's C escapes (\\ \t \r \n \0 \xHH) in place;
 * returns its new length, or -1 if malformed. */
long gd_decode_input(char *s, size_t len);
/* The whole file, NUL-ended (fails the test if it cannot be read). */
char *gd_read_file(const char *path, size_t *len);
/* len bytes in an exactly-sized heap block, so ASan sees any overread. */
char *gd_exact_copy(const char *p, size_t len);

/* A cases file, read line by line. */
struct gd_case_file {
    char *buf;
    size_t len, pos;
    unsigned lineno;
};

/* Next line of the file (without LF), or NULL at its end. */
char *gd_next_line(struct gd_case_file *cf, size_t *len);

#endif
