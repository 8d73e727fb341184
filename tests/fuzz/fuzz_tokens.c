/*
 * fuzz_tokens: the tokens file parser (auth_load with --tokens FILE), and
 * the AUTH line and Bearer header parsers on the same bytes.
 *
 * The input goes into a memfd (mode 0600) whose /proc path is the file, so
 * the real code path runs, open, fstat and read included. Checked: a
 * refusal always says why, naming the file; a table that loads has at
 * least one entry, and every plain "<sensor id> <token>" line of the input
 * checks true while the same token with one byte changed does not; the
 * wire parsers return slices inside their input.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_tokens: invariant failed: %s\n", what);
        abort();
    }
}

static int
blank(char c)
{
    return c == ' ' || c == '\t';
}

static int
inside(struct proto_str s, const char *p, size_t n)
{
    return s.p >= p && s.p + s.len <= p + n;
}

/* Every plain token line of a file that loaded must check. */
static void
check_lines(const struct auth *a, const char *p, size_t size)
{
    const char *start = p, *end = p + size;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *b = p, *e = nl != NULL ? nl : end, *w;

        if (e > b && e[-1] == '\r')
            e--;
        while (b < e && blank(*b))
            b++;
        while (e > b && blank(e[-1]))
            e--;
        if (b < e && *b != '#') {
            w = e;
            while (w > b && !blank(w[-1]))
                w--;
            if ((size_t)(e - w) < 7 || memcmp(w, "sha256:", 7) != 0) {
                const char *se = w;
                char tok[AUTH_TOKEN_MAX];
                size_t tl = (size_t)(e - w);

                while (se > b && blank(se[-1]))
                    se--;
                check(tl <= sizeof(tok), "token length");
                check(auth_check(a, b, (size_t)(se - b), w, tl),
                      "a plain token of the file checks");
                memcpy(tok, w, tl);
                tok[tl / 2] ^= 1;
                /* Unless the file also holds the changed token. */
                if (memmem(start, size, tok, tl) == NULL)
                    check(!auth_check(a, b, (size_t)(se - b), tok, tl),
                          "a changed token does not");
            }
        }
        p = nl != NULL ? nl + 1 : end;
    }
}

static void
fuzz_wire(const char *p, size_t n)
{
    struct proto_str s, t;
    char *c = malloc(n ? n : 1);

    check(c != NULL, "malloc");
    if (n > 0)
        memcpy(c, p, n);
    if (auth_parse_line(c, n, &s, &t) == 0)
        check(s.len > 0 && t.len > 0 && inside(s, c, n) && inside(t, c, n),
              "auth line slices");
    if (auth_parse_bearer(c, n, &s, &t) == 0)
        check(s.len > 0 && t.len > 0 && inside(s, c, n) && inside(t, c, n),
              "bearer slices");
    free(c);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    char err[AUTH_ERR_LEN];
    const char *p = (const char *)data, *end = p + size;
    struct auth *a;

    if (fd < 0) {
        fd = memfd_create("fuzz_tokens", 0);
        if (fd < 0 || fchmod(fd, 0600) < 0)
            abort();
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        abort();
    errno = 0;
    a = auth_load(path, err, sizeof(err));
    if (a == NULL) {
        check(errno != 0, "errno set");
        check(strncmp(err, path, strlen(path)) == 0 &&
                  strlen(err) > strlen(path) + 2,
              "the reason names the file");
    } else {
        check(auth_count(a) >= 1, "at least one entry");
        check_lines(a, p, size);
        auth_free(a);
    }
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);

        fuzz_wire(p, len);
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    return 0;
}
