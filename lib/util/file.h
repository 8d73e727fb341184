/*
 * file: reading a whole small file (tokens, certificates) the one careful
 * way: every byte up to EOF, a limit, EINTR retried, and no copy of the
 * contents left behind in freed memory (they may be secrets).
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_FILE_H
#define SN_FILE_H

#include <stddef.h>

/*
 * Read fd (borrowed, not closed) from its current offset to EOF into a new
 * NUL-ended buffer, *out (free it with file_free), its length in *len (the
 * NUL not counted). At most max bytes: more gives -EFBIG. Returns 0,
 * -ENOMEM, -EFBIG or the -errno of read(2); on error *out is untouched.
 */
int file_read_all(int fd, size_t max, char **out, size_t *len);

/* Wipe len bytes of p, then free it; NULL is a no-op. */
void file_free(char *p, size_t len);

#endif
