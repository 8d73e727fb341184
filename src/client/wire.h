/*
 * wire: the client's side of the sensor protocol (docs/protocol.md): the
 * lines a sensor sends and the replies it reads back.
 *
 * Sends, one reading each:
 *   influx    "sensornet,sensor=Sensor1 temperature=25.34 <ts ns>\n"
 *   text      "Sensor1 - Temperatura: 25.34°C\n"
 *   original  "Sensor1 - Temperatura: 25.34°C" (no line end, one in flight)
 * Reads:
 *   "OK <n>\n"              n lines of this connection accepted in all
 *   "ERR <k> <reason>\n"    line k refused
 *   "ERR <reason>\n"        about the connection ("ERR server full")
 *   "Dados recebidos com sucesso."  the original server's reply, no line end
 *   "PONG\n"                the answer to the keepalive "PING\n"
 *   "AUTH OK\n", "AUTH ERR <reason>\n"   the answer to "AUTH <id> <token>"
 *
 * Pure functions, no state, thread-safe.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_CLIENT_WIRE_H
#define SN_CLIENT_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/sim.h"

/* Longest sensor id (--id plus the "-<i>" suffix of --sensors). */
#define WIRE_ID_MAX 100
/* Room for any line wire_format_reading() writes, NUL included. */
#define WIRE_LINE_MAX 256
/* Longest reply line the client accepts, line end included. */
#define WIRE_REPLY_MAX 1024
/* The application keepalive: a line the server answers at once with
 * "PONG", never counted or numbered. */
#define WIRE_PING "PING\n"
#define WIRE_PING_LEN 5
/* The original server's acknowledgement. */
#define WIRE_ORIGINAL_REPLY "Dados recebidos com sucesso."

enum wire_format {
    WIRE_INFLUX = 0,
    WIRE_TEXT,
    WIRE_ORIGINAL,
};

/* Look up a --format name; 0 and *out set, or -EINVAL. */
int wire_format_parse(const char *name, enum wire_format *out);
const char *wire_format_name(enum wire_format fmt);

/*
 * True if id can go on the wire unescaped in every format: 1 to WIRE_ID_MAX
 * bytes, none of them a control byte, space, ',', '=', '"' or '\'. UTF-8
 * above ASCII is allowed.
 */
bool wire_id_valid(const char *id);

/*
 * Write one reading of kind k from sensor id in fmt into buf (len bytes,
 * WIRE_LINE_MAX is always enough), NUL-terminated. Returns the length
 * written without the NUL, or 0 if it did not fit. id is borrowed.
 */
size_t wire_format_reading(enum wire_format fmt, const struct sim_kind_info *k,
                           const char *id, double value, int64_t ts_ns,
                           char *buf, size_t len);

/*
 * The line that authenticates a connection with --tokens
 * (docs/protocol.md 8): "AUTH <id> <token>\n" into buf (len bytes),
 * NUL-terminated. Returns its length without the NUL, or 0 if it did not
 * fit. id and token are borrowed and must hold no blanks or line ends.
 */
size_t wire_format_auth(const char *id, const char *token, char *buf,
                        size_t len);

enum wire_reply_type {
    WIRE_R_OK = 1,       /* "OK n": n in .n */
    WIRE_R_ERR_LINE,     /* "ERR k reason": k in .n, reason may be empty */
    WIRE_R_ERR_OTHER,    /* "ERR reason": reason set */
    WIRE_R_ORIGINAL,     /* "Dados recebidos com sucesso." */
    WIRE_R_PONG,         /* "PONG": the answer to a keepalive */
    WIRE_R_UNKNOWN,      /* any other line (ignored, logged) */
    WIRE_R_AUTH_OK,      /* "AUTH OK" */
    WIRE_R_AUTH_ERR,     /* "AUTH ERR reason": reason set (may be empty) */
};

struct wire_reply {
    enum wire_reply_type type;
    uint64_t n;
    const char *reason; /* borrows from the parsed bytes; not NUL-ended */
    size_t reason_len;
};

enum wire_rc {
    WIRE_OK = 0,
    WIRE_AGAIN = 1,       /* incomplete reply: read more */
    WIRE_E_TOOLONG = -1,  /* WIRE_REPLY_MAX bytes without a line end */
};

/*
 * Parse the first reply in (p, len). Blank lines are skipped. Returns
 * WIRE_OK with *out filled and *consumed bytes used, WIRE_AGAIN (with
 * *consumed possibly > 0 for skipped line ends), or WIRE_E_TOOLONG. Never
 * reads past p + len.
 */
int wire_parse_reply(const char *p, size_t len, struct wire_reply *out,
                     size_t *consumed);

#endif
