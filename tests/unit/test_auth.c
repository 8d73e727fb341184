/*
 * test_auth: the tokens file (src/server/auth.c): loading, every refusal
 * with its line number, plain and hashed tokens, the constant-time
 * comparison's results, and the AUTH line and Bearer header parsers.
 * Files go to $TMPDIR (tests/test_unit.py gives each run its own).
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "server/auth.h"

#define TOK1 "0123456789abcdef0123456789abcdef"
#define TOK2 "s3cr3t-T0ken_with.all+chars/~="
#define TOK3 "another-token-for-rotation"

static char g_path[4096];

/* Write content to a fresh file with mode; returns its path (static). */
static const char *
write_file(const char *content, size_t len, mode_t mode)
{
    const char *dir = getenv("TMPDIR");
    int fd;

    snprintf(g_path, sizeof(g_path), "%s/tokens-XXXXXX",
             dir != NULL && dir[0] != '\0' ? dir : "/tmp");
    fd = mkstemp(g_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
    return g_path;
}

static const char *
write_str(const char *content, mode_t mode)
{
    return write_file(content, strlen(content), mode);
}

static void
hex_sha256(const char *tok, char out[65], bool upper)
{
    unsigned char md[32];
    unsigned int n = 0;
    size_t i;

    assert_int_equal(EVP_Digest(tok, strlen(tok), md, &n, EVP_sha256(),
                                NULL),
                     1);
    for (i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, upper ? "%02X" : "%02x", md[i]);
}

static bool
check(const struct auth *a, const char *sensor, const char *tok)
{
    return auth_check(a, sensor, strlen(sensor), tok, strlen(tok));
}

static void
test_load_and_check(void **state)
{
    char h2[65], h3[65], file[2048];
    char err[AUTH_ERR_LEN];
    struct auth *a;

    (void)state;
    hex_sha256(TOK2, h2, false);
    hex_sha256(TOK3, h3, true);
    snprintf(file, sizeof(file),
             "# sensornet tokens\n"
             "\n"
             "Sensor1 " TOK1 "\n"
             "   # indented comment\r\n"
             "greenhouse-2\tsha256:%s\r\n"
             "greenhouse-2 sha256:%s\n"
             "Sensor 3   " TOK1 "   \n"
             "  \t \n"
             "sala-\xc3\xa9 " TOK3, /* no final line end */
             h2, h3);
    a = auth_load(write_str(file, 0600), err, sizeof(err));
    if (a == NULL)
        fail_msg("auth_load: %s", err);
    unlink(g_path);
    assert_int_equal(auth_count(a), 5);

    assert_true(check(a, "Sensor1", TOK1));
    assert_true(check(a, "greenhouse-2", TOK2));
    assert_true(check(a, "greenhouse-2", TOK3)); /* two tokens: rotation */
    assert_true(check(a, "Sensor 3", TOK1));
    assert_true(check(a, "sala-\xc3\xa9", TOK3));

    /* Someone else's token, an unknown sensor, near misses. */
    assert_false(check(a, "Sensor1", TOK2));
    assert_false(check(a, "greenhouse-2", TOK1));
    assert_false(check(a, "sensor1", TOK1));
    assert_false(check(a, "Sensor", TOK1));
    assert_false(check(a, "Sensor11", TOK1));
    assert_false(check(a, "nobody", TOK1));
    assert_false(check(a, "Sensor1", TOK1 "x"));
    assert_false(check(a, "Sensor1", "123456789abcdef0123456789abcdef"));
    assert_false(check(a, "Sensor1", ""));
    assert_false(check(a, "", TOK1));
    /* The hash itself is not a token. */
    {
        char hashed[80];

        snprintf(hashed, sizeof(hashed), "sha256:%s", h2);
        assert_false(check(a, "greenhouse-2", hashed));
        assert_false(check(a, "greenhouse-2", h2));
    }
    /* A token with a NUL, and one far too long. */
    assert_false(auth_check(a, "Sensor1", 7, TOK1 "\0", sizeof(TOK1)));
    {
        char big[4096];

        memset(big, 'a', sizeof(big));
        assert_false(auth_check(a, "Sensor1", 7, big, sizeof(big)));
        assert_false(auth_check(a, big, sizeof(big), TOK1, strlen(TOK1)));
    }
    assert_false(auth_check(NULL, "Sensor1", 7, TOK1, strlen(TOK1)));
    auth_free(a);
    auth_free(NULL);
    assert_int_equal(auth_count(NULL), 0);
}

/* SIGHUP: a reload swaps the tokens in place; a broken file keeps the old
 * ones; concurrent checks see one table or the other. */
struct reload_arg {
    struct auth *a;
    int ok, bad, rounds;
};

static void *
check_loop(void *p)
{
    struct reload_arg *r = p;
    int i;

    for (i = 0; i < r->rounds; i++) {
        /* Either table holds TOK1 or TOK2 for Sensor1, never TOK3, and
         * Sensor2 is in neither. */
        if (check(r->a, "Sensor1", TOK1) || check(r->a, "Sensor1", TOK2))
            r->ok++;
        if (check(r->a, "Sensor1", TOK3) || check(r->a, "Sensor2", TOK3))
            r->bad++;
    }
    return NULL;
}

static void
test_reload(void **state)
{
    char err[AUTH_ERR_LEN], path[4096];
    struct reload_arg r = {0};
    pthread_t t;
    struct auth *a;
    int i;

    (void)state;
    a = auth_load(write_str("Sensor1 " TOK1 "\n", 0600), err, sizeof(err));
    if (a == NULL)
        fail_msg("auth_load: %s", err);
    snprintf(path, sizeof(path), "%s", g_path);
    unlink(path); /* a path that no longer exists, for later */
    assert_true(check(a, "Sensor1", TOK1));

    /* Rotation: the new file holds only TOK2. */
    write_str("Sensor1 " TOK2 "\nSensor2 " TOK3 "\n", 0600);
    assert_int_equal(auth_reload(a, g_path, err, sizeof(err)), 0);
    unlink(g_path);
    assert_int_equal(auth_count(a), 2);
    assert_false(check(a, "Sensor1", TOK1));
    assert_true(check(a, "Sensor1", TOK2));
    assert_true(check(a, "Sensor2", TOK3));

    /* A broken file: an error naming it, the tokens that worked stay. */
    write_str("Sensor1 short\n", 0600);
    assert_true(auth_reload(a, g_path, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, g_path));
    unlink(g_path);
    assert_int_equal(auth_reload(a, path, err, sizeof(err)), -ENOENT);
    assert_true(check(a, "Sensor1", TOK2));
    assert_int_equal(auth_count(a), 2);

    /* Reloads racing with checks (ThreadSanitizer-free, but ASan sees any
     * use of a freed table). */
    write_str("Sensor1 " TOK1 "\n", 0600); /* Sensor2 TOK3 goes */
    assert_int_equal(auth_reload(a, g_path, err, sizeof(err)), 0);
    unlink(g_path);
    r.a = a;
    r.rounds = 2000;
    assert_int_equal(pthread_create(&t, NULL, check_loop, &r), 0);
    for (i = 0; i < 50; i++) {
        write_str(i % 2 ? "Sensor1 " TOK1 "\n" : "Sensor1 " TOK2 "\n",
                  0600);
        assert_int_equal(auth_reload(a, g_path, err, sizeof(err)), 0);
        unlink(g_path);
    }
    pthread_join(t, NULL);
    assert_true(r.ok > 0);
    assert_int_equal(r.bad, 0);
    auth_free(a);
}

/* Many sensors: the sorted table finds every one. */
static void
test_many_sensors(void **state)
{
    char err[AUTH_ERR_LEN], line[128];
    size_t cap = 1 << 20, len = 0, i;
    char *buf = malloc(cap);
    struct auth *a;

    (void)state;
    assert_non_null(buf);
    for (i = 0; i < 5000; i++) {
        int n = snprintf(line, sizeof(line), "s%zu tok-%zu-0123456789abcdef\n",
                         (i * 7919) % 5000, i);

        memcpy(buf + len, line, (size_t)n);
        len += (size_t)n;
    }
    a = auth_load(write_file(buf, len, 0600), err, sizeof(err));
    if (a == NULL)
        fail_msg("auth_load: %s", err);
    unlink(g_path);
    assert_int_equal(auth_count(a), 5000);
    for (i = 0; i < 5000; i++) {
        char s[32], t[64];

        snprintf(s, sizeof(s), "s%zu", (i * 7919) % 5000);
        snprintf(t, sizeof(t), "tok-%zu-0123456789abcdef", i);
        assert_true(check(a, s, t));
        snprintf(t, sizeof(t), "tok-%zu-0123456789abcdef", i + 1);
        assert_false(check(a, s, t));
    }
    auth_free(a);
    free(buf);
}

/* Each refusal names the file and the line. */
static void
test_file_errors(void **state)
{
    static const struct {
        const char *content;
        const char *want; /* after "<path>:" */
    } cases[] = {
        { "s1\n", "1: expected '<sensor id> <token>'" },
        { "# c\n\ns1 short\n", "3: token shorter than 16 bytes" },
        { "s1 " TOK1 "\ns2 " TOK1 ":x\n",
          "2: token holds a byte outside [A-Za-z0-9._~+/=-]" },
        { "s1 " TOK1 "#comment\n",
          "1: token holds a byte outside [A-Za-z0-9._~+/=-]" },
        { "s1 sha256:0123\n", "1: sha256: needs 64 hex digits" },
        { "s1 sha256:0123456789abcdef0123456789abcdef0123456789abcdef"
          "0123456789abcdeg\n",
          "1: sha256: needs 64 hex digits" },
        { "s1 sha256:0123456789abcdef0123456789abcdef0123456789abcdef"
          "0123456789abcdef0\n",
          "1: sha256: needs 64 hex digits" },
        { "s1 sha256:\n", "1: token holds a byte outside [A-Za-z0-9._~+/=-]" },
        { "s\xff " TOK1 "\n", "1: invalid UTF-8" },
        { "s1 " TOK1 "\ns\x01 " TOK1 "\n", "2: NUL or control byte" },
        { "# only comments\n\n   \n", " no tokens in the file" },
        { "", " no tokens in the file" },
    };
    char err[AUTH_ERR_LEN], want[AUTH_ERR_LEN + 4200];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *path = write_str(cases[i].content, 0600);

        errno = 0;
        assert_null(auth_load(path, err, sizeof(err)));
        assert_int_equal(errno, EINVAL);
        snprintf(want, sizeof(want), "%s:%s", path, cases[i].want);
        if (strcmp(err, want) != 0)
            fail_msg("case %zu:\n  want: %s\n  got:  %s", i, want, err);
        unlink(path);
    }
}

static void
test_file_limits(void **state)
{
    char err[AUTH_ERR_LEN], *buf;
    char name[PROTO_MAX_NAME + 2];
    struct auth *a;
    const char *path;
    size_t n;

    (void)state;
    /* A line of exactly 1024 bytes passes, 1025 does not. */
    buf = malloc(2048);
    assert_non_null(buf);
    /* A 100-byte sensor id, a blank, a 923-byte token: the line is let
     * through and the token refused. */
    memset(buf, 's', 100);
    buf[100] = ' ';
    memset(buf + 101, 't', 923);         /* 101 + 923 = 1024 */
    buf[1024] = '\n';
    path = write_file(buf, 1025, 0600);
    assert_null(auth_load(path, err, sizeof(err)));
    assert_non_null(strstr(err, ":1: token longer than 256 bytes"));
    unlink(path);
    memset(buf + 101, 't', 924);
    buf[1025] = '\n';
    path = write_file(buf, 1026, 0600);
    assert_null(auth_load(path, err, sizeof(err)));
    assert_non_null(strstr(err, ":1: line longer than 1024 bytes"));
    unlink(path);

    /* A token of 256 bytes passes, 257 does not. */
    memcpy(buf, "s1 ", 3);
    memset(buf + 3, 't', 256);
    buf[259] = '\n';
    path = write_file(buf, 260, 0600);
    a = auth_load(path, err, sizeof(err));
    assert_non_null(a);
    buf[259] = '\0';
    assert_true(check(a, "s1", buf + 3));
    auth_free(a);
    unlink(path);
    memset(buf + 3, 't', 257);
    buf[260] = '\n';
    path = write_file(buf, 261, 0600);
    assert_null(auth_load(path, err, sizeof(err)));
    assert_non_null(strstr(err, ":1: token longer than 256 bytes"));
    unlink(path);

    /* Sensor ids: 128 bytes pass, 129 do not. */
    memset(name, 'n', sizeof(name));
    n = (size_t)snprintf(buf, 2048, "%.128s " TOK1 "\n", name);
    path = write_file(buf, n, 0600);
    a = auth_load(path, err, sizeof(err));
    assert_non_null(a);
    auth_free(a);
    unlink(path);
    n = (size_t)snprintf(buf, 2048, "%.129s " TOK1 "\n", name);
    path = write_file(buf, n, 0600);
    assert_null(auth_load(path, err, sizeof(err)));
    assert_non_null(strstr(err, ":1: sensor id longer than 128 bytes"));
    unlink(path);
    free(buf);

    /* A file over AUTH_FILE_MAX, refused before it is read. */
    path = write_str("s1 " TOK1 "\n", 0600);
    assert_int_equal(truncate(path, (off_t)AUTH_FILE_MAX + 1), 0);
    errno = 0;
    assert_null(auth_load(path, err, sizeof(err)));
    assert_int_equal(errno, EFBIG);
    assert_non_null(strstr(err, "larger than"));
    unlink(path);
}

static void
test_file_access(void **state)
{
    char err[AUTH_ERR_LEN], h[65], file[200];
    struct auth *a;
    const char *path;

    (void)state;
    errno = 0;
    assert_null(auth_load("/nonexistent/tokens", err, sizeof(err)));
    assert_int_equal(errno, ENOENT);
    assert_string_equal(err, "/nonexistent/tokens: No such file or directory");
    assert_null(auth_load("/", err, sizeof(err)));
    assert_string_equal(err, "/: not a regular file");

    /* Writable by others: never. */
    path = write_str("s1 " TOK1 "\n", 0602);
    errno = 0;
    assert_null(auth_load(path, err, sizeof(err)));
    assert_int_equal(errno, EPERM);
    assert_non_null(strstr(err, "writable by others"));
    unlink(path);
    /* Readable by others: only without plain tokens. */
    path = write_str("s1 " TOK1 "\n", 0644);
    errno = 0;
    assert_null(auth_load(path, err, sizeof(err)));
    assert_int_equal(errno, EPERM);
    assert_non_null(strstr(err, "readable by others"));
    unlink(path);
    hex_sha256(TOK1, h, false);
    snprintf(file, sizeof(file), "s1 sha256:%s\n", h);
    path = write_str(file, 0644);
    a = auth_load(path, err, sizeof(err));
    assert_non_null(a);
    assert_true(check(a, "s1", TOK1));
    auth_free(a);
    unlink(path);
    /* Group-readable is fine (root:sensornet 0640). */
    path = write_str("s1 " TOK1 "\n", 0640);
    a = auth_load(path, err, sizeof(err));
    assert_non_null(a);
    auth_free(a);
    unlink(path);
    /* err may be NULL. */
    assert_null(auth_load("/nonexistent/tokens", NULL, 0));
}

/* auth_equal is plain equality, whatever the length and position. */
static void
test_constant_time_equal(void **state)
{
    unsigned char a[64] = { 0 }, b[64] = { 0 };
    size_t len, i;

    (void)state;
    for (len = 0; len <= sizeof(a); len++) {
        for (i = 0; i < len; i++)
            a[i] = b[i] = (unsigned char)(i * 37 + len);
        assert_true(auth_equal(a, b, len));
        for (i = 0; i < len; i++) {
            unsigned bit;

            for (bit = 0; bit < 8; bit++) {
                b[i] ^= (unsigned char)(1u << bit);
                assert_false(auth_equal(a, b, len));
                assert_false(auth_equal(b, a, len));
                b[i] ^= (unsigned char)(1u << bit);
            }
        }
        assert_true(auth_equal(a, b, len));
    }
}

static void
test_parse_line(void **state)
{
    static const struct {
        const char *line;
        int rc;
        const char *sensor, *token;
    } cases[] = {
        { "AUTH s1 " TOK1, 0, "s1", TOK1 },
        { "AUTH  Sensor 3 \t " TOK1 "  ", 0, "Sensor 3", TOK1 },
        { "AUTH\ts1\ttok", 0, "s1", "tok" },
        { "AUTH s1", -EINVAL, NULL, NULL },
        { "AUTH ", -EINVAL, NULL, NULL },
        { "AUTH", -EINVAL, NULL, NULL },
        { "AUTH    ", -EINVAL, NULL, NULL },
        { "AUTHX s1 tok", -ENOENT, NULL, NULL },
        { "auth s1 tok", -ENOENT, NULL, NULL },
        { " AUTH s1 tok", -ENOENT, NULL, NULL },
        { "AUT", -ENOENT, NULL, NULL },
        { "Sensor1 - Temperatura: 25.34\xc2\xb0" "C", -ENOENT, NULL, NULL },
        { "AUTH,sensor=s1 v=1", -ENOENT, NULL, NULL },
    };
    struct proto_str s, t;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = auth_parse_line(cases[i].line, strlen(cases[i].line), &s,
                                 &t);

        if (rc != cases[i].rc)
            fail_msg("case %zu (%s): rc %d", i, cases[i].line, rc);
        if (rc == 0) {
            assert_int_equal(s.len, strlen(cases[i].sensor));
            assert_memory_equal(s.p, cases[i].sensor, s.len);
            assert_int_equal(t.len, strlen(cases[i].token));
            assert_memory_equal(t.p, cases[i].token, t.len);
        }
    }
}

static void
test_parse_bearer(void **state)
{
    static const struct {
        const char *value;
        int rc;
        const char *sensor, *token;
    } cases[] = {
        { "Bearer s1:" TOK1, 0, "s1", TOK1 },
        { "bearer   s1:" TOK1 "  ", 0, "s1", TOK1 },
        { "Token s1:" TOK1, 0, "s1", TOK1 },
        { "Bearer Sensor 3:" TOK1, 0, "Sensor 3", TOK1 },
        { "Bearer a:b:" TOK1, 0, "a:b", TOK1 },
        { "Bearer " TOK1, -EINVAL, NULL, NULL },
        { "Bearer :" TOK1, -EINVAL, NULL, NULL },
        { "Bearer s1:", -EINVAL, NULL, NULL },
        { "Bearer ", -EINVAL, NULL, NULL },
        { "Basic czE6dG9r", -ENOENT, NULL, NULL },
        { "Bearers1:tok", -ENOENT, NULL, NULL },
        { "", -ENOENT, NULL, NULL },
    };
    struct proto_str s, t;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = auth_parse_bearer(cases[i].value, strlen(cases[i].value),
                                   &s, &t);

        if (rc != cases[i].rc)
            fail_msg("case %zu (%s): rc %d", i, cases[i].value, rc);
        if (rc == 0) {
            assert_int_equal(s.len, strlen(cases[i].sensor));
            assert_memory_equal(s.p, cases[i].sensor, s.len);
            assert_int_equal(t.len, strlen(cases[i].token));
            assert_memory_equal(t.p, cases[i].token, t.len);
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_and_check),
        cmocka_unit_test(test_many_sensors),
        cmocka_unit_test(test_reload),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_file_limits),
        cmocka_unit_test(test_file_access),
        cmocka_unit_test(test_constant_time_equal),
        cmocka_unit_test(test_parse_line),
        cmocka_unit_test(test_parse_bearer),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
