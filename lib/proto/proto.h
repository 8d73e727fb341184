/*
 * proto: the sensor wire formats, as pure functions from bytes to readings.
 *
 * Knows nothing about sockets, event loops or storage; the collector, the
 * client, the tests and the fuzzers all share it. Framing (finding line ends,
 * the silence rule, line length limits) is the caller's job: these functions
 * take one line without its "\n" or "\r\n".
 *
 * Formats (docs/protocol.md is the contract):
 *   text    the original's  "<sensor> - <quantity>: <number><unit>"
 *   influx  InfluxDB line protocol; the "sensor" tag names the sensor and
 *           each numeric field is one reading whose quantity is its key.
 *   graphite Graphite plaintext "<path> <value> <timestamp>" (graphite.c);
 *           struct proto_graphite_map splits the path into sensor and
 *           quantity.
 * MQTT PUBLISH packets map to the same struct proto_line (proto/mqtt.h).
 *
 * Thread-safe: no global state; struct proto_line is caller-owned scratch.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_PROTO_H
#define SN_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Default and hard upper bound for --max-line (bytes, line end excluded). */
#define PROTO_MAX_LINE_DEFAULT 4096
#define PROTO_MAX_LINE_LIMIT 65536
/* Numeric fields one line-protocol line may carry. */
#define PROTO_MAX_FIELDS 64
/* Longest sensor id and quantity name, in bytes. */
#define PROTO_MAX_NAME 128
/* Longest unit, in bytes. */
#define PROTO_MAX_UNIT 32

enum proto_format {
    PROTO_FMT_TEXT = 1,   /* the original's human form */
    PROTO_FMT_INFLUX = 2, /* InfluxDB line protocol */
    PROTO_FMT_GRAPHITE = 3, /* Graphite plaintext (graphite.c) */
    PROTO_FMT_MQTT = 4,   /* an MQTT PUBLISH (mqtt_publish_to_line) */
};

enum proto_rc {
    PROTO_OK = 0,
    PROTO_E_SYNTAX = -1,   /* matches no format */
    PROTO_E_UTF8 = -2,     /* invalid UTF-8 */
    PROTO_E_NUL = -3,      /* NUL or other control byte */
    PROTO_E_RANGE = -4,    /* number out of range, NaN or infinite */
    PROTO_E_NOFIELD = -5,  /* line protocol without any numeric field */
    PROTO_E_TOOMANY = -6,  /* more than PROTO_MAX_FIELDS numeric fields */
    PROTO_E_NAME = -7,     /* sensor, quantity or unit empty or too long */
    PROTO_E_TOOLONG = -8,  /* line over the limit (reported by framing) */
    PROTO_E_EMPTY = -9,    /* blank line (callers ignore these) */
    PROTO_E_TIMESTAMP = -10, /* bad or out-of-range timestamp */
    /* Given by the collector, never by the parsers (--tokens): */
    PROTO_E_NOAUTH = -11,    /* the connection has not authenticated */
    PROTO_E_FORBIDDEN = -12, /* a reading of another sensor than its own */
};

/* A borrowed byte string: points into the parsed line, into
 * struct proto_line's scratch, or into static storage. Not NUL-terminated. */
struct proto_str {
    const char *p;
    size_t len;
};

struct proto_reading {
    struct proto_str sensor;   /* as sent (unescaped) */
    struct proto_str quantity; /* canonical name, see proto_canon_quantity */
    struct proto_str unit;     /* canonical unit; may be empty */
    double value;              /* finite */
};

/*
 * One parsed line. Caller-owned, reusable, large (keep one per thread, not
 * one per reading). Everything in r[] borrows from the input line, from
 * scratch, or from static tables: valid until the next parse into this
 * struct or until the input bytes change.
 */
struct proto_line {
    enum proto_format fmt;
    bool has_ts;   /* the line carried its own timestamp */
    int64_t ts_ns; /* that timestamp in ns since the epoch, if has_ts */
    size_t n;      /* readings in r[] (at least 1 on PROTO_OK) */
    struct proto_reading r[PROTO_MAX_FIELDS];
    size_t scratch_used;
    char scratch[PROTO_MAX_LINE_LIMIT];
};

/*
 * How a Graphite path becomes a sensor and a quantity (docs/protocol.md,
 * "Graphite plaintext"). The path is split at its dots into components,
 * after prefix (if the path starts with it) has been removed:
 *   sensor   = the first sensor_parts components, joined by dots;
 *              0 (the default) means all but the last component;
 *   quantity = the remaining components, joined by dots, canonicalized
 *              as proto_canon_quantity does.
 * Both must be non-empty: a path with too few components is "bad name".
 * For collectd's write_graphite ("collectd.<host>.<plugin>.<type>"), use
 * { .prefix = "collectd.", .sensor_parts = 1 }: the host is the sensor.
 */
struct proto_graphite_map {
    const char *prefix;    /* borrowed, NUL-terminated; NULL or "": none */
    unsigned sensor_parts; /* 0: all but the last component */
};

/* Options for proto_parse_line; NULL means the defaults. */
struct proto_opts {
    /* Multiplier from the line-protocol timestamp unit to ns: 1 for "ns"
     * (the default, also when 0), 1000 for "u", 1000000 for "ms",
     * 1000000000 for "s" (the /write endpoint's precision parameter). */
    int64_t ts_mult;
    /* Graphite path mapping; NULL means the defaults (no prefix, all but
     * the last component is the sensor). Borrowed for the call. */
    const struct proto_graphite_map *graphite;
};

/*
 * Parse one line (p, len), without its line end, trying the text form first,
 * then line protocol, then Graphite plaintext (the three never accept the
 * same line; docs/protocol.md 2.1 says which error is reported when none
 * does). Returns PROTO_OK with out filled, or a negative enum proto_rc; out
 * is undefined on error. Never reads past p + len and accepts any bytes,
 * including NULs and invalid UTF-8 (which it refuses).
 */
int proto_parse_line(const char *p, size_t len, const struct proto_opts *opts,
                     struct proto_line *out);

/* Parse only the original text form (the silence rule uses this: bytes
 * without a line end count as a message only if they are one complete
 * text-form reading). Same contract as proto_parse_line. */
int proto_parse_text(const char *p, size_t len, struct proto_line *out);

/* Parse only Graphite plaintext (tests, and callers that know the format).
 * Same contract as proto_parse_line; opts->graphite maps the path. */
int proto_parse_graphite(const char *p, size_t len,
                         const struct proto_opts *opts,
                         struct proto_line *out);

/*
 * lib/proto internal, for proto_parse.c: Graphite on [b, e), a line that
 * passed proto_parse_line's byte checks and was trimmed (non-empty, not a
 * comment), with out reset (n, scratch_used, has_ts zero). *looks is set
 * when the line has Graphite's shape (three blank-separated words, the
 * second a number, nan or inf), so that its error is the one reported.
 */
int proto_graphite_parse(const char *b, const char *e,
                         const struct proto_opts *opts,
                         struct proto_line *out, bool *looks);

/* A short, fixed, lower-case English reason for an enum proto_rc, used on
 * the wire in "ERR <n> <reason>" (no line breaks). */
const char *proto_strerror(int rc);

/*
 * Canonical quantity for a wire name, ASCII case-insensitive, with the
 * default unit of that quantity ("" if none). Known names map through the
 * table in docs/protocol.md (Temperatura, temperature, temp -> temperature,
 * "°C"; Umidade, humidity, rh -> humidity, "%"; ...). Unknown names are
 * returned lower-cased into buf (buf_len >= len). Returns the canonical name.
 */
struct proto_str proto_canon_quantity(const char *name, size_t len, char *buf,
                                      size_t buf_len,
                                      struct proto_str *default_unit);

/*
 * The canonical unit for a reading of the quantity named (q, q_len) (a wire
 * name or a canonical one) whose sender said unit (u, u_len): as the text
 * form maps it (docs/protocol.md 2.4). For a known quantity an empty unit
 * or an alias gives the default unit (static storage); any other unit, and
 * any unit of an unknown quantity, is returned as given (borrowed).
 */
struct proto_str proto_canon_unit(const char *q, size_t q_len, const char *u,
                                  size_t u_len);

/*
 * The log.txt human form of one reading, as the original logged it:
 *   "Sensor1 - Temperatura: 25.34°C"  (temperature)
 *   "Sensor2 - Umidade: 57.96%"       (humidity)
 *   "<sensor> - <quantity>: <value> <unit>"  (others; no space if no unit)
 * The value uses the shortest "%.15g" form. Control bytes in names are
 * escaped as in proto_escape_line. Writes at most len bytes, always
 * NUL-terminates when len > 0, returns the length it needed (snprintf).
 */
size_t proto_format_human(const struct proto_reading *r, char *buf,
                          size_t len);

/*
 * Escape a raw line for log.txt so that one entry stays one line: bytes
 * below 0x20, 0x7f and backslash become \n \r \t \\ or \xHH; invalid UTF-8
 * bytes become \xHH; valid UTF-8 passes unchanged. Same return convention
 * as proto_format_human.
 */
size_t proto_escape_line(const char *p, size_t len, char *buf, size_t buflen);

/* True if (p, len) is valid UTF-8 without NULs (overlongs and surrogates
 * refused). */
bool proto_utf8_valid(const char *p, size_t len);

/*
 * True if the line is an HTTP request line ("GET / HTTP/1.1": a method of
 * upper-case letters, a space, a target without spaces, " HTTP/" and a
 * version). The sensor port answers these with a short HTTP response.
 */
bool proto_is_http_request(const char *p, size_t len);

#endif
