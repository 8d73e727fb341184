/*
 * tokens: see tokens.h. The file is read into one buffer; the entries
 * point into it, sorted by id so that each of up to 100000 sensors finds
 * its token with a binary search.
 * SPDX-License-Identifier: MIT
 */
#include "client/tokens.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/file.h"

struct entry {
    const char *id;
    const char *token;
};

struct tokens {
    char *buf;            /* the file, NUL-ended lines in place */
    size_t buf_len;
    struct entry *e;      /* sorted by id */
    size_t n;
    const char *fallback; /* a line with a token alone, or NULL */
};

bool
tokens_valid(const char *tok, size_t len)
{
    size_t i;

    if (len < TOKENS_TOKEN_MIN || len > TOKENS_TOKEN_MAX)
        return false;
    for (i = 0; i < len; i++) {
        char ch = tok[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || strchr("._~+/=-", ch) != NULL))
            return false;
    }
    return true;
}

static int
cmp_entry(const void *a, const void *b)
{
    return strcmp(((const struct entry *)a)->id,
                  ((const struct entry *)b)->id);
}

/* Read the whole file, checking its mode first. */
static int
read_file(struct tokens *t, const char *path, char *err, size_t err_len)
{
    struct stat st;
    size_t got = 0;
    int rc, fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -EIO;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > TOKENS_FILE_MAX) {
        snprintf(err, err_len, "%s: not a file of at most %u MiB", path,
                 TOKENS_FILE_MAX >> 20);
        close(fd);
        return -EINVAL;
    }
    if (st.st_mode & (S_IWGRP | S_IRWXO)) {
        snprintf(err, err_len, "%s: others may read or write it: chmod 600 "
                 "(or 640 with a group of its own)", path);
        close(fd);
        return -EPERM;
    }
    rc = file_read_all(fd, TOKENS_FILE_MAX, &t->buf, &got);
    close(fd);
    if (rc < 0) {
        snprintf(err, err_len, "%s: %s", path, strerror(-rc));
        return rc;
    }
    t->buf_len = got;
    return 0;
}

/* Split the buffer into lines and the lines into entries. */
static int
parse(struct tokens *t, const char *path, char *err, size_t err_len)
{
    char *p = t->buf, *end = t->buf + t->buf_len, *nl, *w1, *w1e, *w2;
    size_t lineno = 0, cap = 0;

    while (p < end) {
        nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            nl = end;
        *nl = '\0';
        lineno++;
        if (nl > p && nl[-1] == '\r')
            nl[-1] = '\0';
        w1 = p + strspn(p, " \t");
        p = nl + 1;
        if (*w1 == '\0' || *w1 == '#')
            continue;
        w1e = w1 + strcspn(w1, " \t");
        w2 = w1e + strspn(w1e, " \t");
        if (*w2 == '\0') { /* a token alone: for every sensor */
            *w1e = '\0';
            if (t->fallback != NULL) {
                snprintf(err, err_len, "%s:%zu: a second line with a token "
                         "alone", path, lineno);
                return -EINVAL;
            }
            if (!tokens_valid(w1, strlen(w1)))
                goto bad_token;
            t->fallback = w1;
            continue;
        }
        *w1e = '\0';
        w2[strcspn(w2, " \t")] = '\0';
        if (strncmp(w2, "sha256:", 7) == 0) {
            snprintf(err, err_len, "%s:%zu: a hashed token: the client "
                     "needs the token itself", path, lineno);
            return -EINVAL;
        }
        if (!tokens_valid(w2, strlen(w2)))
            goto bad_token;
        if (t->n == cap) {
            struct entry *ne;

            cap = cap ? 2 * cap : 16;
            ne = realloc(t->e, cap * sizeof(*ne));
            if (ne == NULL) {
                snprintf(err, err_len, "out of memory");
                return -ENOMEM;
            }
            t->e = ne;
        }
        t->e[t->n].id = w1;
        t->e[t->n].token = w2;
        t->n++;
        continue;
bad_token:
        snprintf(err, err_len, "%s:%zu: a token is %d to %d bytes of "
                 "A-Z a-z 0-9 . _ ~ + / = -", path, lineno, TOKENS_TOKEN_MIN,
                 TOKENS_TOKEN_MAX);
        return -EINVAL;
    }
    if (t->n == 0 && t->fallback == NULL) {
        snprintf(err, err_len, "%s: no token in it", path);
        return -EINVAL;
    }
    if (t->n > 1)
        qsort(t->e, t->n, sizeof(*t->e), cmp_entry);
    return 0;
}

struct tokens *
tokens_load(const char *path, char *err, size_t err_len)
{
    struct tokens *t = calloc(1, sizeof(*t));
    int rc;

    if (t == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    rc = read_file(t, path, err, err_len);
    if (rc == 0)
        rc = parse(t, path, err, err_len);
    if (rc < 0) {
        tokens_free(t);
        errno = -rc;
        return NULL;
    }
    return t;
}

const char *
tokens_for(const struct tokens *t, const char *id)
{
    struct entry key = {.id = id};
    const struct entry *e = NULL;

    if (t->n > 0)
        e = bsearch(&key, t->e, t->n, sizeof(*t->e), cmp_entry);
    return e != NULL ? e->token : t->fallback;
}

void
tokens_free(struct tokens *t)
{
    if (t == NULL)
        return;
    if (t->buf != NULL)
        explicit_bzero(t->buf, t->buf_len);
    free(t->buf);
    free(t->e);
    free(t);
}
