/*
 * test_tokens: the client's --token-file (src/client/tokens.c): per-sensor
 * lines, the default token, comments and CRLF, and each refusal with its
 * line number. Files go to $TMPDIR (tests/test_unit.py gives each run its
 * own).
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/tokens.h"

#define TOK1 "0123456789abcdef0123"
#define TOK2 "s3cr3t-T0ken_with.all+chars/~="

static char g_path[4096];

static const char *
write_file(const char *content, mode_t mode)
{
    const char *dir = getenv("TMPDIR");
    size_t len = strlen(content);
    int fd;

    snprintf(g_path, sizeof(g_path), "%s/ctokens-XXXXXX",
             dir != NULL && dir[0] != '\0' ? dir : "/tmp");
    fd = mkstemp(g_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
    return g_path;
}

/* Load content; expect failure with want in the message. */
static void
refused(const char *content, mode_t mode, const char *want)
{
    char err[TOKENS_ERR_LEN];
    struct tokens *t = tokens_load(write_file(content, mode), err,
                                   sizeof(err));

    unlink(g_path);
    assert_null(t);
    if (strstr(err, want) == NULL)
        fail_msg("'%s' not in '%s'", want, err);
}

static void
test_per_sensor_and_default(void **state)
{
    char err[TOKENS_ERR_LEN];
    struct tokens *t;

    (void)state;
    t = tokens_load(write_file("# sensors\r\nS-2 " TOK2 "\r\n\n"
                               "  S-1\t" TOK1 "  \n" TOK2 "\n",
                               0600),
                    err, sizeof(err));
    unlink(g_path);
    if (t == NULL)
        fail_msg("%s", err);
    assert_string_equal(tokens_for(t, "S-1"), TOK1);
    assert_string_equal(tokens_for(t, "S-2"), TOK2);
    assert_string_equal(tokens_for(t, "S-3"), TOK2); /* the default */
    tokens_free(t);

    t = tokens_load(write_file("S-1 " TOK1 "\n", 0600), err, sizeof(err));
    unlink(g_path);
    assert_non_null(t);
    assert_null(tokens_for(t, "S-2")); /* no default: none */
    tokens_free(t);
    tokens_free(NULL);
}

static void
test_refusals(void **state)
{
    (void)state;
    refused("S-1 " TOK1 "\n", 0644, "chmod 600");
    refused("S-1 " TOK1 "\n", 0620, "chmod 600");
    refused("# nothing\n\n", 0600, "no token");
    refused("S-1 " TOK1 "\nS-2 short\n", 0600, ":2: a token is 16");
    refused("S-1 sha256:0123456789abcdef0123456789abcdef\n", 0600,
            ":1: a hashed token");
    refused(TOK1 "\n" TOK2 "\n", 0600, ":2: a second line");
    refused("S-1 " TOK1 "\nS-2 bad:token-with-colon\n", 0600, ":2:");
}

static void
test_missing_file(void **state)
{
    char err[TOKENS_ERR_LEN];

    (void)state;
    assert_null(tokens_load("/nonexistent/tokens", err, sizeof(err)));
    assert_int_equal(errno, EIO);
    assert_non_null(strstr(err, "/nonexistent/tokens"));
}

static void
test_valid(void **state)
{
    (void)state;
    assert_true(tokens_valid(TOK1, strlen(TOK1)));
    assert_true(tokens_valid(TOK2, strlen(TOK2)));
    assert_false(tokens_valid("0123456789abcde", 15)); /* one short */
    assert_false(tokens_valid("0123456789abcdef 0", 18));
    assert_false(tokens_valid("0123456789abcdef\n", 17));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_per_sensor_and_default),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_valid),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
