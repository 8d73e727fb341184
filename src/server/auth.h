/*
 * auth: per-sensor tokens (--tokens FILE) and the wire forms that carry
 * them (docs/security.md).
 *
 * The tokens file holds lines "<sensor id> <token>" or
 * "<sensor id> sha256:<64 hex digits>" (the SHA-256 of the token), blank
 * lines and "#" comment lines. A sensor may have several lines (several
 * valid tokens, for rotation). The loaded table is immutable: any thread
 * may call auth_check on it at the same time; a reload (SIGHUP,
 * auth_reload) loads the file first, then swaps the table in place under
 * a lock that checks hold shared.
 *
 * Every token is kept only as its SHA-256; auth_check hashes the token it
 * is given and compares digests with CRYPTO_memcmp, so the time it takes
 * depends neither on the token's bytes nor on how much of it matches.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_AUTH_H
#define SN_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "proto/proto.h"

/* Size for auth_load's err buffer. */
#define AUTH_ERR_LEN 256
/* Largest tokens file, in bytes. */
#define AUTH_FILE_MAX (4u << 20)
/* Longest line of a tokens file, line end excluded. */
#define AUTH_LINE_MAX 1024
/* Token length bounds, in bytes; tokens are [A-Za-z0-9._~+/=-]. */
#define AUTH_TOKEN_MIN 16
#define AUTH_TOKEN_MAX 256

struct auth;

/*
 * Load a tokens file. Returns a new table, or NULL with errno set and a
 * one-line reason, naming the file and line ("tokens.txt:12: token shorter
 * than 16 bytes"), in err (errlen bytes, AUTH_ERR_LEN is enough). Refuses:
 * a file over AUTH_FILE_MAX bytes or a line over AUTH_LINE_MAX, a sensor id
 * that is not 1 to PROTO_MAX_NAME bytes of UTF-8 without control bytes, a
 * token outside the charset or the length bounds, a malformed hash, a file
 * without any token, a file others may write, and a file others may read
 * that holds plain (unhashed) tokens. Start-up and reload path: reads the
 * file with blocking I/O.
 */
struct auth *auth_load(const char *path, char *err, size_t errlen);

/*
 * Replace a's tokens with those of path (SIGHUP), in place: threads
 * checking meanwhile see either the old table or the new one, whole.
 * Returns 0, or -errno with the reason in err and a unchanged (a reload of
 * a broken file keeps the tokens that worked). Connections already
 * authenticated stay so; a revoked token stops working at the next AUTH.
 */
int auth_reload(struct auth *a, const char *path, char *err, size_t errlen);

/* Free a table from auth_load; NULL is a no-op. */
void auth_free(struct auth *a);

/* Number of (sensor, token) entries, for the start-up log line. */
size_t auth_count(const struct auth *a);

/*
 * True if token (token, token_len) is one of sensor (sensor, sensor_len)'s
 * tokens. Borrows both. Constant time in the token's content; an unknown
 * sensor costs the same hashing as a known one. Any thread.
 */
bool auth_check(const struct auth *a, const char *sensor, size_t sensor_len,
                const char *token, size_t token_len);

/*
 * Constant-time equality of two byte strings of the same length (a wrapper
 * of CRYPTO_memcmp): the time depends only on len.
 */
bool auth_equal(const void *a, const void *b, size_t len);

/*
 * The "AUTH <sensor id> <token>" line of the text protocols (one line
 * without its line end). Returns 0 and borrows the two parts from the
 * line if it is one: "AUTH", one or more blanks, the sensor id (which may
 * hold inner blanks), one or more blanks, the token (the last word);
 * -EINVAL if it starts with "AUTH " but is malformed; -ENOENT if the line
 * is not an AUTH line at all (it does not start with "AUTH" and a blank).
 */
int auth_parse_line(const char *p, size_t len, struct proto_str *sensor,
                    struct proto_str *token);

/*
 * The value of an HTTP "Authorization" header: "Bearer <sensor>:<token>"
 * (scheme case-insensitive; the token is after the last ':'). Returns 0 and
 * borrows the two parts, -EINVAL if it is a Bearer header without that
 * shape, -ENOENT if it is another scheme.
 */
int auth_parse_bearer(const char *p, size_t len, struct proto_str *sensor,
                      struct proto_str *token);

#endif
