/*
 * fuzz_client_tokens: sensornet-client's --token-file parser (tokens_load),
 * on the real path: the input goes into a memfd (mode 0600) opened through
 * /proc. Checked: a refusal sets errno and names the file; a table that
 * loads gives, for every "<id> <token>" line of the input whose token is
 * valid, a token that tokens_valid accepts, and for any id either NULL or
 * a valid token (the default one).
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

#include "client/tokens.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_client_tokens: invariant failed: %s\n", what);
        abort();
    }
}

/* Every line's first word, as an id: whatever it maps to must be valid. */
static void
check_ids(const struct tokens *t, const char *p, size_t size)
{
    const char *end = p + size;
    char id[160];

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl != NULL ? nl : end;
        size_t n = 0;
        const char *tok;

        while (p + n < le && p[n] != ' ' && p[n] != '\t')
            n++;
        if (n > 0 && n < sizeof(id)) {
            memcpy(id, p, n);
            id[n] = '\0';
            if (strlen(id) == n) {
                tok = tokens_for(t, id);
                check(tok == NULL || tokens_valid(tok, strlen(tok)),
                      "a looked-up token is valid");
            }
        }
        p = nl != NULL ? nl + 1 : end;
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    char err[TOKENS_ERR_LEN];
    struct tokens *t;
    const char *tok;

    if (fd < 0) {
        fd = memfd_create("fuzz_client_tokens", 0);
        if (fd < 0 || fchmod(fd, 0600) < 0)
            abort();
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        abort();
    errno = 0;
    err[0] = '\0';
    t = tokens_load(path, err, sizeof(err));
    if (t == NULL) {
        check(errno != 0, "errno set");
        check(strstr(err, path) != NULL, "the reason names the file");
        return 0;
    }
    tok = tokens_for(t, "no such sensor id here");
    check(tok == NULL || tokens_valid(tok, strlen(tok)),
          "the default token is valid");
    check_ids(t, (const char *)data, size);
    tokens_free(t);
    return 0;
}
