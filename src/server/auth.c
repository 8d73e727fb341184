/*
 * auth: the tokens table (see auth.h and docs/security.md).
 *
 * The table is an array of (sensor id, SHA-256 of a token) entries sorted
 * by sensor id, with the ids in one arena. Plain tokens from the file are
 * hashed as they are read, and the file's bytes are wiped (OPENSSL_cleanse)
 * before they are freed: no token is kept in memory in the clear.
 * SPDX-License-Identifier: MIT
 */
#include "server/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <pthread.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "util/file.h"
#include "util/strparse.h"

#define DIGEST_LEN 32 /* SHA-256 */
#define HASH_PREFIX "sha256:"
#define HASH_PREFIX_LEN (sizeof(HASH_PREFIX) - 1)

struct entry {
    size_t off;  /* sensor id in names */
    size_t len;
    unsigned char digest[DIGEST_LEN];
};

struct auth {
    /* Readers (auth_check, any thread) hold it shared; auth_reload holds it
     * exclusively only to swap the arrays, so a reload never waits for
     * file I/O under the lock and a check never sees half a table. */
    pthread_rwlock_t lock;
    struct entry *e;
    size_t n, cap;
    char *names;
    size_t names_len, names_cap;
};

/* ---- helpers --------------------------------------------------------- */

bool
auth_equal(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

static bool
sha256(const char *p, size_t len, unsigned char out[DIGEST_LEN])
{
    unsigned int n = 0;

    return EVP_Digest(p, len, out, &n, EVP_sha256(), NULL) == 1 &&
           n == DIGEST_LEN;
}

static bool
token_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '~' ||
           c == '+' || c == '/' || c == '=' || c == '-';
}

static int
hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = sp_ascii_lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The last blank-separated word of [b, e) (trimmed, non-empty), and what
 * lies before it, trimmed. False if there is only one word. */
static bool
split_last_word(const char *b, const char *e, struct proto_str *first,
                struct proto_str *last)
{
    const char *w = e;

    while (w > b && !sp_is_blank((unsigned char)w[-1]))
        w--;
    if (w == b)
        return false;
    last->p = w;
    last->len = (size_t)(e - w);
    first->p = b;
    first->len = (size_t)(sp_rtrim_blanks(b, w) - b);
    return first->len > 0;
}

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- loading --------------------------------------------------------- */

static int
add_entry(struct auth *a, struct proto_str sensor,
          const unsigned char digest[DIGEST_LEN])
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        struct entry *e = realloc(a->e, cap * sizeof(*e));

        if (e == NULL)
            return -ENOMEM;
        a->e = e;
        a->cap = cap;
    }
    if (a->names_len + sensor.len > a->names_cap) {
        size_t cap = a->names_cap ? a->names_cap * 2 : 4096;
        char *p;

        while (cap < a->names_len + sensor.len)
            cap *= 2;
        p = realloc(a->names, cap);
        if (p == NULL)
            return -ENOMEM;
        a->names = p;
        a->names_cap = cap;
    }
    memcpy(a->names + a->names_len, sensor.p, sensor.len);
    a->e[a->n].off = a->names_len;
    a->e[a->n].len = sensor.len;
    memcpy(a->e[a->n].digest, digest, DIGEST_LEN);
    a->names_len += sensor.len;
    a->n++;
    return 0;
}

/* One non-blank, non-comment line [b, e), trimmed. Returns NULL or the
 * reason it is refused. */
static const char *
parse_entry(struct auth *a, const char *b, const char *e, bool *plain,
            int *rc)
{
    struct proto_str sensor, tok;
    unsigned char digest[DIGEST_LEN];
    size_t i;

    *rc = -EINVAL;
    if (!split_last_word(b, e, &sensor, &tok))
        return "expected '<sensor id> <token>'";
    if (sensor.len > PROTO_MAX_NAME)
        return "sensor id longer than 128 bytes";
    if (tok.len > HASH_PREFIX_LEN &&
        memcmp(tok.p, HASH_PREFIX, HASH_PREFIX_LEN) == 0) {
        const char *h = tok.p + HASH_PREFIX_LEN;

        if (tok.len - HASH_PREFIX_LEN != 2 * DIGEST_LEN)
            return "sha256: needs 64 hex digits";
        for (i = 0; i < DIGEST_LEN; i++) {
            int hi = hexval((unsigned char)h[2 * i]);
            int lo = hexval((unsigned char)h[2 * i + 1]);

            if (hi < 0 || lo < 0)
                return "sha256: needs 64 hex digits";
            digest[i] = (unsigned char)(hi << 4 | lo);
        }
    } else {
        for (i = 0; i < tok.len; i++) {
            if (!token_char((unsigned char)tok.p[i]))
                return "token holds a byte outside [A-Za-z0-9._~+/=-]";
        }
        if (tok.len < AUTH_TOKEN_MIN)
            return "token shorter than 16 bytes";
        if (tok.len > AUTH_TOKEN_MAX)
            return "token longer than 256 bytes";
        if (!sha256(tok.p, tok.len, digest)) {
            *rc = -EIO;
            return "SHA-256 failed (OpenSSL)";
        }
        *plain = true;
    }
    *rc = add_entry(a, sensor, digest);
    if (*rc < 0)
        return "out of memory";
    return NULL;
}

static int
cmp_entry(const void *x, const void *y, void *arg)
{
    const struct entry *a = x, *b = y;
    const char *names = arg;

    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return memcmp(names + a->off, names + b->off, a->len);
}

struct auth *
auth_load(const char *path, char *err, size_t errlen)
{
    struct auth *a = NULL;
    char *buf = NULL;
    size_t len = 0, lineno = 0;
    const char *p, *end, *why = NULL;
    bool plain = false;
    struct stat st;
    int fd = -1, rc = 0;

    set_err(err, errlen, "%s", "");
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        rc = -errno;
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        set_err(err, errlen, "%s: not a regular file", path);
        goto fail;
    }
    if (st.st_mode & S_IWOTH) {
        rc = -EPERM;
        set_err(err, errlen,
                "%s: writable by others: anyone could add a token "
                "(chmod o-w)", path);
        goto fail;
    }
    if (st.st_size > (off_t)AUTH_FILE_MAX) {
        rc = -EFBIG;
        set_err(err, errlen, "%s: larger than %u bytes", path,
                AUTH_FILE_MAX);
        goto fail;
    }
    rc = file_read_all(fd, AUTH_FILE_MAX, &buf, &len);
    if (rc < 0) {
        set_err(err, errlen, "%s: %s", path,
                rc == -EFBIG ? "file too large" : strerror(-rc));
        goto fail;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        rc = -ENOMEM;
        set_err(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    pthread_rwlock_init(&a->lock, NULL);

    p = buf;
    end = buf + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl != NULL ? nl : end, *b, *e, *q;

        lineno++;
        if (le > p && le[-1] == '\r')
            le--;
        if ((size_t)(le - p) > AUTH_LINE_MAX) {
            why = "line longer than 1024 bytes";
            break;
        }
        for (q = p; q < le;) {
            size_t n = sp_utf8_len(q, le);
            unsigned char c = (unsigned char)*q;

            if (n == 0) {
                why = "invalid UTF-8";
                break;
            }
            if ((c < 0x20 && c != '\t') || c == 0x7f) {
                why = "NUL or control byte";
                break;
            }
            q += n;
        }
        if (why != NULL)
            break;
        b = sp_skip_blanks(p, le);
        e = sp_rtrim_blanks(b, le);
        if (b < e && *b != '#') {
            why = parse_entry(a, b, e, &plain, &rc);
            if (why != NULL)
                break;
        }
        p = nl != NULL ? nl + 1 : end;
    }
    if (why != NULL) {
        if (rc == 0)
            rc = -EINVAL;
        set_err(err, errlen, "%s:%zu: %s", path, lineno, why);
        goto fail;
    }
    if (a->n == 0) {
        rc = -EINVAL;
        set_err(err, errlen, "%s: no tokens in the file", path);
        goto fail;
    }
    if (plain && (st.st_mode & S_IROTH)) {
        rc = -EPERM;
        set_err(err, errlen,
                "%s: holds plain tokens and is readable by others "
                "(chmod o-r, or store them as sha256:<hex>)", path);
        goto fail;
    }
    qsort_r(a->e, a->n, sizeof(a->e[0]), cmp_entry, a->names);
    OPENSSL_cleanse(buf, len);
    free(buf);
    close(fd);
    return a;

fail:
    if (buf != NULL) {
        OPENSSL_cleanse(buf, len);
        free(buf);
    }
    if (fd >= 0)
        close(fd);
    auth_free(a);
    errno = -rc;
    return NULL;
}

void
auth_free(struct auth *a)
{
    if (a == NULL)
        return;
    pthread_rwlock_destroy(&a->lock);
    free(a->e);
    free(a->names);
    free(a);
}

/* The lock is not part of the table's value: checking a const table still
 * takes it. */
static pthread_rwlock_t *
table_lock(const struct auth *a)
{
    return (pthread_rwlock_t *)&a->lock;
}

int
auth_reload(struct auth *a, const char *path, char *err, size_t errlen)
{
    struct auth *n = auth_load(path, err, errlen);
    struct auth tmp;

    if (n == NULL)
        return errno != 0 ? -errno : -EINVAL;
    pthread_rwlock_wrlock(&a->lock);
    tmp = *a;
    a->e = n->e;
    a->n = n->n;
    a->cap = n->cap;
    a->names = n->names;
    a->names_len = n->names_len;
    a->names_cap = n->names_cap;
    pthread_rwlock_unlock(&a->lock);
    /* n now owns the old arrays; it frees them with its own lock. */
    n->e = tmp.e;
    n->names = tmp.names;
    auth_free(n);
    return 0;
}

size_t
auth_count(const struct auth *a)
{
    size_t n;

    if (a == NULL)
        return 0;
    pthread_rwlock_rdlock(table_lock(a));
    n = a->n;
    pthread_rwlock_unlock(table_lock(a));
    return n;
}

/* ---- checking -------------------------------------------------------- */

/* Index of the first entry of sensor (p, len), or a->n if none. */
static size_t
lower_bound(const struct auth *a, const char *p, size_t len)
{
    size_t lo = 0, hi = a->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct entry *e = &a->e[mid];
        int c;

        if (e->len != len)
            c = e->len < len ? -1 : 1;
        else
            c = memcmp(a->names + e->off, p, len);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool
auth_check(const struct auth *a, const char *sensor, size_t sensor_len,
           const char *token, size_t token_len)
{
    unsigned char digest[DIGEST_LEN];
    bool ok = false, hashed;
    size_t i;

    memset(digest, 0, sizeof(digest));
    if (a == NULL)
        return false;
    /* Hash first, whatever the sensor: an unknown sensor takes as long. */
    hashed = token_len <= AUTH_TOKEN_MAX &&
             sha256(token != NULL ? token : "", token_len, digest);
    if (sensor_len == 0 || sensor_len > PROTO_MAX_NAME)
        return false;
    pthread_rwlock_rdlock(table_lock(a));
    i = lower_bound(a, sensor, sensor_len);
    for (; i < a->n; i++) {
        const struct entry *e = &a->e[i];

        if (e->len != sensor_len ||
            memcmp(a->names + e->off, sensor, sensor_len) != 0)
            break;
        /* No early exit: every token of the sensor is compared. */
        ok |= auth_equal(e->digest, digest, DIGEST_LEN);
    }
    pthread_rwlock_unlock(table_lock(a));
    OPENSSL_cleanse(digest, sizeof(digest));
    return ok && hashed;
}

/* ---- wire forms ------------------------------------------------------ */

int
auth_parse_line(const char *p, size_t len, struct proto_str *sensor,
                struct proto_str *token)
{
    const char *end = p + len, *b, *e;

    if (len < 4 || memcmp(p, "AUTH", 4) != 0 ||
        (len > 4 && !sp_is_blank((unsigned char)p[4])))
        return -ENOENT;
    b = sp_skip_blanks(p + 4, end);
    e = sp_rtrim_blanks(b, end);
    if (b == e || !split_last_word(b, e, sensor, token))
        return -EINVAL;
    return 0;
}

int
auth_parse_bearer(const char *p, size_t len, struct proto_str *sensor,
                  struct proto_str *token)
{
    const char *end = p + len, *b, *e, *colon;

    b = sp_skip_blanks(p, end);
    if ((size_t)(end - b) >= 7 && sp_casematch(b, 6, "bearer") &&
        sp_is_blank((unsigned char)b[6]))
        b += 7;
    else if ((size_t)(end - b) >= 6 && sp_casematch(b, 5, "token") &&
             sp_is_blank((unsigned char)b[5]))
        b += 6;
    else
        return -ENOENT;
    b = sp_skip_blanks(b, end);
    e = sp_rtrim_blanks(b, end);
    colon = e;
    while (colon > b && colon[-1] != ':')
        colon--;
    if (colon == b || colon - 1 == b || colon == e)
        return -EINVAL;
    sensor->p = b;
    sensor->len = (size_t)(colon - 1 - b);
    token->p = colon;
    token->len = (size_t)(e - colon);
    return 0;
}
