/*
 * fuzz_client_wire: sensornet-client's reply parser (wire_parse_reply),
 * which reads whatever a server, or anything claiming to be one, sends.
 * Checked: it consumes whole replies only, never more than it was given
 * nor more than WIRE_REPLY_MAX bytes; a reason lies inside the input; an
 * incomplete reply (WIRE_AGAIN) holds no line end, after the blank lines
 * it skipped.
 * SPDX-License-Identifier: MIT
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_client_wire: invariant failed: %s\n", what);
        abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;

    while (p < end) {
        struct wire_reply r;
        size_t used = 0;
        int rc = wire_parse_reply(p, (size_t)(end - p), &r, &used);

        if (rc == WIRE_AGAIN) {
            /* Blank lines may have been skipped (consumed); what is left
             * must be one incomplete reply. */
            check(used <= (size_t)(end - p), "skipped in bounds");
            p += used;
            check((size_t)(end - p) < WIRE_REPLY_MAX,
                  "AGAIN only below the reply limit");
            check(memchr(p, '\n', (size_t)(end - p)) == NULL,
                  "AGAIN only without a line end");
            break;
        }
        if (rc == WIRE_E_TOOLONG) {
            check((size_t)(end - p) >= WIRE_REPLY_MAX ||
                      memchr(p, '\n', (size_t)(end - p)) != NULL,
                  "TOOLONG needs the bytes to show it");
            break;
        }
        check(rc == WIRE_OK, "known return code");
        check(used > 0 && used <= (size_t)(end - p), "consumed in bounds");
        check(used <= WIRE_REPLY_MAX, "at most one reply's bytes");
        check(r.type >= WIRE_R_OK && r.type <= WIRE_R_AUTH_ERR,
              "known reply type");
        if (r.reason != NULL && r.reason_len > 0)
            check(r.reason >= p && r.reason + r.reason_len <= p + used,
                  "reason inside the reply");
        p += used;
    }
    return 0;
}
