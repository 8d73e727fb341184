/*
 * mqtt: an MQTT 3.1.1 (OASIS standard, protocol level 4) codec, as pure
 * functions over byte buffers: no sockets, no allocation, no global state.
 *
 *   mqtt_parse            one control packet from the front of a buffer
 *                         (incremental: MQTT_NEED_MORE until it is whole)
 *   mqtt_encode_*         the server's replies, into a caller buffer
 *   mqtt_publish_to_line  a PUBLISH on sensors/<sensor>/<quantity> into
 *                         the struct proto_line every other format fills
 *
 * The collector is a sink, not a broker: it takes PUBLISH packets, refuses
 * every subscription (SUBACK 0x80) and never sends a PUBLISH. The rules
 * the parser enforces, each with its section of the standard, and the
 * server's answers are in docs/protocol.md ("MQTT").
 *
 * Thread-safe: no global state; struct mqtt_packet is caller-owned and
 * borrows from the parsed buffer.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_MQTT_H
#define SN_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"

/* The largest remaining length four varint bytes hold (2.2.3). */
#define MQTT_REMAINING_MAX 268435455u
/* Fixed header: one byte of type and flags, 1 to 4 of remaining length. */
#define MQTT_FIXED_HEADER_MAX 5
/* A sensible --mqtt-max-packet default: a reading fits many times over. */
#define MQTT_MAX_PACKET_DEFAULT 65536
/* Size of every encoded CONNACK, PUBACK, UNSUBACK (4) and PINGRESP (2). */
#define MQTT_ACK_SIZE 4

enum mqtt_type {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_PUBACK = 4,
    MQTT_PUBREC = 5,
    MQTT_PUBREL = 6,
    MQTT_PUBCOMP = 7,
    MQTT_SUBSCRIBE = 8,
    MQTT_SUBACK = 9,
    MQTT_UNSUBSCRIBE = 10,
    MQTT_UNSUBACK = 11,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
    MQTT_DISCONNECT = 14,
};

/*
 * mqtt_parse's result. Every error means "close the network connection
 * without a reply" (4.8: a protocol violation), except that a CONNECT the
 * server must refuse politely parses as MQTT_OK with a nonzero
 * connect.return_code (see struct mqtt_connect).
 */
enum mqtt_rc {
    MQTT_OK = 0,
    MQTT_NEED_MORE = 1,       /* the packet is not complete yet */
    MQTT_E_TYPE = -1,         /* reserved packet type 0 or 15 */
    MQTT_E_FLAGS = -2,        /* fixed header flags wrong for the type */
    MQTT_E_VARINT = -3,       /* remaining length over 4 bytes or overlong */
    MQTT_E_TOOBIG = -4,       /* packet larger than the caller's maximum */
    MQTT_E_MALFORMED = -5,    /* lengths, counts or reserved bits wrong */
    MQTT_E_UTF8 = -6,         /* a string that is not MQTT UTF-8 (1.5.3) */
    MQTT_E_PROTOCOL = -7,     /* CONNECT with an unknown protocol name */
    MQTT_E_QOS = -8,          /* QoS 3 */
    MQTT_E_TOPIC = -9,        /* bad topic name or topic filter */
    MQTT_E_PACKET_ID = -10,   /* packet identifier 0 */
};

/* CONNACK return codes (3.2.2.3). */
enum mqtt_connack_rc {
    MQTT_CONNACK_ACCEPTED = 0,
    MQTT_CONNACK_BAD_PROTOCOL = 1,   /* unacceptable protocol level */
    MQTT_CONNACK_BAD_CLIENT_ID = 2,  /* identifier rejected */
    MQTT_CONNACK_UNAVAILABLE = 3,    /* server unavailable */
    MQTT_CONNACK_BAD_CREDENTIALS = 4, /* bad user name or password */
    MQTT_CONNACK_NOT_AUTHORIZED = 5,
};

/* SUBACK's failure return code: the collector grants no subscription. */
#define MQTT_SUBACK_FAILURE 0x80

/*
 * A parsed CONNECT. When return_code is not MQTT_CONNACK_ACCEPTED the
 * server must send CONNACK with that code and close (3.1.2.2, 3.1.3.1);
 * then only level (and for code 2, the flags and client_id) were parsed.
 */
struct mqtt_connect {
    uint8_t level;            /* protocol level: 4 for 3.1.1 */
    uint8_t return_code;      /* enum mqtt_connack_rc the server must send */
    bool clean_session;
    uint16_t keep_alive;      /* seconds; 0 turns the mechanism off */
    struct proto_str client_id; /* UTF-8, may be empty (clean session) */
    bool has_will;
    uint8_t will_qos;         /* 0 to 2 */
    bool will_retain;
    struct proto_str will_topic;   /* UTF-8, no wildcards */
    struct proto_str will_message; /* binary */
    bool has_username;
    struct proto_str username;     /* UTF-8 */
    bool has_password;             /* only with has_username */
    struct proto_str password;     /* binary */
};

struct mqtt_publish {
    bool dup;
    uint8_t qos;           /* 0, 1 or 2: the server refuses 2 by closing */
    bool retain;
    uint16_t packet_id;    /* nonzero when qos > 0, else 0 */
    struct proto_str topic;   /* UTF-8, 1 byte at least, no + or # */
    struct proto_str payload; /* binary, may be empty */
};

/* SUBSCRIBE and UNSUBSCRIBE: the filters, validated; walk them with
 * mqtt_filter_next. */
struct mqtt_subscribe {
    uint16_t packet_id;    /* nonzero */
    size_t n_filters;      /* at least 1 */
    const uint8_t *list;   /* the payload: the filter list */
    size_t list_len;
};

struct mqtt_suback {
    uint16_t packet_id;
    size_t n_codes;        /* at least 1 */
    const uint8_t *codes;  /* each 0, 1, 2 or 0x80 */
};

/*
 * One parsed control packet. Every struct proto_str and pointer in it
 * borrows from the buffer given to mqtt_parse: valid while those bytes
 * are. Only the member that type names is filled.
 */
struct mqtt_packet {
    enum mqtt_type type;
    uint8_t flags;         /* the low nibble of the first byte */
    size_t size;           /* whole packet, fixed header included */
    union {
        struct mqtt_connect connect;   /* CONNECT */
        struct mqtt_publish publish;   /* PUBLISH */
        struct mqtt_subscribe subscribe; /* SUBSCRIBE, UNSUBSCRIBE */
        struct mqtt_suback suback;     /* SUBACK */
        struct {
            bool session_present;
            uint8_t return_code;
        } connack;                     /* CONNACK */
        uint16_t packet_id; /* PUBACK PUBREC PUBREL PUBCOMP UNSUBACK */
    };
};

/*
 * Parse the control packet at the front of (p, len), at most max_packet
 * bytes in all (fixed header included; 2 <= max_packet; values over
 * MQTT_REMAINING_MAX + 5 mean no limit). Returns:
 *   MQTT_OK          *out filled, *consumed = out->size bytes used;
 *   MQTT_NEED_MORE   no error in the bytes so far, but the packet is not
 *                    complete: call again with more (the same bytes first);
 *   MQTT_E_*         the bytes are not a valid packet: close the
 *                    connection (*consumed and *out undefined).
 * Errors are found as early as the bytes allow (a wrong first byte with
 * len == 1, a packet over max_packet as soon as its length is known), and
 * always the same one: parsing a stream byte by byte gives NEED_MORE and
 * then exactly what parsing it all at once gives. Parses all fourteen
 * packet types, both directions (the tests check the encoders with it);
 * a server treats CONNACK, SUBACK, UNSUBACK and PINGRESP from a client,
 * and any packet before or a second CONNECT, as violations (3.1.0-1,
 * 3.1.0-2). Never reads past p + len.
 */
int mqtt_parse(const uint8_t *p, size_t len, size_t max_packet,
               struct mqtt_packet *out, size_t *consumed);

/* A short, fixed, lower-case English reason for an enum mqtt_rc. */
const char *mqtt_strerror(int rc);

/*
 * The next filter of a parsed SUBSCRIBE or UNSUBSCRIBE: start with
 * *cur = sub->list; returns false after the last. qos (may be NULL) gets
 * the requested QoS of a SUBSCRIBE; pass is_subscribe = false for
 * UNSUBSCRIBE, whose filters carry none.
 */
bool mqtt_filter_next(const struct mqtt_subscribe *sub, bool is_subscribe,
                      const uint8_t **cur, struct proto_str *filter,
                      uint8_t *qos);

/*
 * Encoders. Each writes one packet into (buf, cap) and returns its size;
 * when that is more than cap nothing is written (so a NULL buf with cap 0
 * asks for the size).
 */
size_t mqtt_encode_connack(uint8_t *buf, size_t cap, bool session_present,
                           uint8_t return_code);
size_t mqtt_encode_puback(uint8_t *buf, size_t cap, uint16_t packet_id);
size_t mqtt_encode_unsuback(uint8_t *buf, size_t cap, uint16_t packet_id);
size_t mqtt_encode_pingresp(uint8_t *buf, size_t cap);
/* codes (borrowed) holds n return codes; NULL means n times
 * MQTT_SUBACK_FAILURE, the collector's answer to every filter. 1 <= n and
 * 2 + n <= MQTT_REMAINING_MAX, else returns 0 and writes nothing. */
size_t mqtt_encode_suback(uint8_t *buf, size_t cap, uint16_t packet_id,
                          const uint8_t *codes, size_t n);

/*
 * The reading a PUBLISH carries (docs/protocol.md, "MQTT"): the topic is
 * sensors/<sensor>/<quantity>, the payload a number ("21.5") or a JSON
 * object ({"value": 21.5, "unit": "°C", "ts": <ns>}). Fills out with one
 * reading (fmt PROTO_FMT_MQTT), canonicalized as the text form is. The
 * sensor and quantity borrow from the topic, the unit from the payload;
 * either may instead be in out's scratch or in static tables (as struct
 * proto_line says). Returns PROTO_OK or a negative enum proto_rc:
 * PROTO_E_EMPTY for an empty payload (nothing to store: ignore it),
 * PROTO_E_SYNTAX for another topic or a payload that is neither form,
 * PROTO_E_NOFIELD for a JSON object without "value", and the line
 * formats' errors otherwise. Reads only pub's slices.
 */
int mqtt_publish_to_line(const struct mqtt_publish *pub,
                         struct proto_line *out);

#endif
