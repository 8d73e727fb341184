/*
 * tokens: the client's side of --tokens (docs/client.md, "Tokens"): which
 * token each simulated sensor sends in its "AUTH <id> <token>" line.
 *
 * A --token-file holds lines "<id> <token>" (the collector's tokens file
 * format, plain tokens only: the client needs the token itself, not its
 * hash) and at most one line with a token alone, used by every sensor
 * without a line of its own. "#" comment lines and blank lines are
 * ignored. One file can so serve --sensors N: the ids ID-1 .. ID-N, each
 * with its own token, or one token for all.
 *
 * Loaded once at start-up (blocking reads); then read-only. Not
 * thread-safe, like the rest of the client.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_CLIENT_TOKENS_H
#define SN_CLIENT_TOKENS_H

#include <stdbool.h>
#include <stddef.h>

/* Token length bounds and the largest file, as the collector's. */
#define TOKENS_TOKEN_MIN 16
#define TOKENS_TOKEN_MAX 256
#define TOKENS_FILE_MAX (4u << 20)
#define TOKENS_ERR_LEN 320

struct tokens;

/* True if (tok, len) is a token the collector accepts: 16 to 256 bytes of
 * A-Z a-z 0-9 . _ ~ + / = - (docs/security.md 3.1). */
bool tokens_valid(const char *tok, size_t len);

/*
 * Load path. Returns the table, or NULL with errno set and one line in
 * err naming the file and line ("tokens:3: token shorter than 16
 * bytes"). Refuses a file others may read or anyone but its owner may
 * write (chmod 600), hashed entries, a second default token, and a file
 * without any token.
 */
struct tokens *tokens_load(const char *path, char *err, size_t err_len);

/* The token for sensor id (borrowed from t, valid until tokens_free): its
 * own line, else the default token, else NULL. */
const char *tokens_for(const struct tokens *t, const char *id);

/* Free; NULL is a no-op. The file's bytes are wiped first. */
void tokens_free(struct tokens *t);

#endif
