/*
 * file: see file.h.
 * SPDX-License-Identifier: MIT
 */
#include "util/file.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void
file_free(char *p, size_t len)
{
    if (p == NULL)
        return;
    explicit_bzero(p, len);
    free(p);
}

int
file_read_all(int fd, size_t max, char **out, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *p = malloc(cap);

    if (p == NULL)
        return -ENOMEM;
    for (;;) {
        ssize_t r;

        if (n + 1 == cap) {
            char *q;

            if (n > max) {
                file_free(p, n);
                return -EFBIG;
            }
            /* Not realloc: the old block must be wiped before it is
             * freed, and realloc may free it without. */
            q = malloc(cap * 2);
            if (q == NULL) {
                file_free(p, n);
                return -ENOMEM;
            }
            memcpy(q, p, n);
            file_free(p, n);
            p = q;
            cap *= 2;
        }
        r = read(fd, p + n, cap - 1 - n);
        if (r < 0) {
            int e = errno;

            if (e == EINTR)
                continue;
            file_free(p, n);
            return -e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > max) {
        file_free(p, n);
        return -EFBIG;
    }
    p[n] = '\0';
    *out = p;
    *len = n;
    return 0;
}
