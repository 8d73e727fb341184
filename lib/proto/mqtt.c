/*
 * mqtt: the MQTT 3.1.1 codec (mqtt.h) and the PUBLISH-to-reading mapping.
 *
 * mqtt_parse checks, in this order, so that the first error is found as
 * soon as its bytes are there and is the same however the bytes arrive:
 *   1. first byte: packet type, then its flags (PUBLISH: QoS 3, DUP on
 *      QoS 0);
 *   2. remaining length: at most 4 bytes, minimal (no trailing 0x00);
 *   3. remaining length against the type's fixed size, then max_packet;
 *   4. (whole packet there) the variable header and payload, front to back.
 * References like 3.1.2-3 are the normative statements [MQTT-3.1.2-3] of
 * the OASIS MQTT Version 3.1.1 standard.
 *
 * The JSON reader below is deliberately small: one flat object at the top,
 * RFC 8259 syntax, other members skipped up to JSON_MAX_DEPTH of nesting.
 * SPDX-License-Identifier: MIT
 */
#include "proto/mqtt.h"

#include <errno.h>
#include <string.h>

#include "util/strparse.h"

_Static_assert(MQTT_FIXED_HEADER_MAX == 5, "1 type byte + 4 length bytes");

/* ---- reading the variable header and payload ----------------------------- */

struct rd {
    const uint8_t *p, *end;
};

static bool
rd_u8(struct rd *r, uint8_t *v)
{
    if (r->p >= r->end)
        return false;
    *v = *r->p++;
    return true;
}

static bool
rd_u16(struct rd *r, uint16_t *v)
{
    if (r->end - r->p < 2)
        return false;
    *v = (uint16_t)((r->p[0] << 8) | r->p[1]);
    r->p += 2;
    return true;
}

/* Two length bytes, then that many bytes (1.5.3 strings, 3.1.3 binary). */
static bool
rd_bytes(struct rd *r, struct proto_str *s)
{
    uint16_t n;

    if (!rd_u16(r, &n) || (size_t)(r->end - r->p) < n)
        return false;
    s->p = (const char *)r->p;
    s->len = n;
    r->p += n;
    return true;
}

/* A UTF-8 string: MQTT_E_MALFORMED if short, MQTT_E_UTF8 if ill-formed
 * or holding U+0000 (1.5.3-1, 1.5.3-2). proto_utf8_valid refuses
 * overlongs, surrogates and code points past U+10FFFF, as 1.5.3 asks. */
static int
rd_utf8(struct rd *r, struct proto_str *s)
{
    if (!rd_bytes(r, s))
        return MQTT_E_MALFORMED;
    if (!proto_utf8_valid(s->p, s->len))
        return MQTT_E_UTF8;
    return MQTT_OK;
}

/* A topic name (4.7): at least one byte, no wildcards (3.3.2-2). */
static int
rd_topic(struct rd *r, struct proto_str *s)
{
    int rc = rd_utf8(r, s);

    if (rc != MQTT_OK)
        return rc;
    if (s->len == 0 || memchr(s->p, '+', s->len) != NULL ||
        memchr(s->p, '#', s->len) != NULL)
        return MQTT_E_TOPIC;
    return MQTT_OK;
}

/* A topic filter (4.7.1): '+' fills a whole level, '#' is the whole last
 * level, and it is not empty (4.7.3-1). */
static bool
filter_ok(const char *p, size_t len)
{
    size_t i;

    if (len == 0)
        return false;
    for (i = 0; i < len; i++) {
        bool starts = i == 0 || p[i - 1] == '/';

        if (p[i] == '+' && (!starts || (i + 1 < len && p[i + 1] != '/')))
            return false;
        if (p[i] == '#' && (!starts || i + 1 != len))
            return false;
    }
    return true;
}

/* ---- the fixed header ---------------------------------------------------- */

/* The flags each type must carry (2.2.2); -1: PUBLISH, checked apart. */
static const int8_t type_flags[16] = {
    [MQTT_CONNECT] = 0,     [MQTT_CONNACK] = 0,  [MQTT_PUBLISH] = -1,
    [MQTT_PUBACK] = 0,      [MQTT_PUBREC] = 0,   [MQTT_PUBREL] = 2,
    [MQTT_PUBCOMP] = 0,     [MQTT_SUBSCRIBE] = 2, [MQTT_SUBACK] = 0,
    [MQTT_UNSUBSCRIBE] = 2, [MQTT_UNSUBACK] = 0, [MQTT_PINGREQ] = 0,
    [MQTT_PINGRESP] = 0,    [MQTT_DISCONNECT] = 0,
};

/* Remaining length of the types whose size is fixed; -1: variable. */
static const int8_t type_size[16] = {
    [MQTT_CONNECT] = -1,     [MQTT_CONNACK] = 2,   [MQTT_PUBLISH] = -1,
    [MQTT_PUBACK] = 2,       [MQTT_PUBREC] = 2,    [MQTT_PUBREL] = 2,
    [MQTT_PUBCOMP] = 2,      [MQTT_SUBSCRIBE] = -1, [MQTT_SUBACK] = -1,
    [MQTT_UNSUBSCRIBE] = -1, [MQTT_UNSUBACK] = 2,  [MQTT_PINGREQ] = 0,
    [MQTT_PINGRESP] = 0,     [MQTT_DISCONNECT] = 0,
};

static int
check_first_byte(uint8_t b)
{
    unsigned type = b >> 4, flags = b & 0x0f;

    if (type == 0 || type == 15)
        return MQTT_E_TYPE;
    if (type == MQTT_PUBLISH) {
        unsigned qos = (flags >> 1) & 3;

        if (qos == 3)
            return MQTT_E_QOS; /* 3.3.1-4 */
        if ((flags & 8) && qos == 0)
            return MQTT_E_MALFORMED; /* DUP on QoS 0: 3.3.1-2 */
        return MQTT_OK;
    }
    if ((int)flags != type_flags[type])
        return MQTT_E_FLAGS; /* 2.2.2-1, 2.2.2-2, 3.6.1-1, 3.8.1-1 */
    return MQTT_OK;
}

/* The remaining length after the first byte: 1 to 4 bytes, 7 bits each,
 * low first (2.2.3); a last byte of 0 after others would be overlong. */
static int
read_varint(const uint8_t *p, size_t len, uint32_t *val, size_t *n)
{
    uint32_t v = 0;
    size_t i;

    for (i = 0; i < 4; i++) {
        if (i >= len)
            return MQTT_NEED_MORE;
        v |= (uint32_t)(p[i] & 0x7f) << (7 * i);
        if ((p[i] & 0x80) == 0) {
            if (i > 0 && p[i] == 0)
                return MQTT_E_VARINT;
            *val = v;
            *n = i + 1;
            return MQTT_OK;
        }
    }
    return MQTT_E_VARINT; /* a fifth byte */
}

/* ---- the packets --------------------------------------------------------- */

static int
parse_connect(struct rd *r, struct mqtt_connect *c)
{
    struct proto_str name;
    uint8_t fl;
    int rc;

    memset(c, 0, sizeof(*c));
    if (!rd_bytes(r, &name))
        return MQTT_E_MALFORMED;
    if (!(name.len == 4 && memcmp(name.p, "MQTT", 4) == 0) &&
        !(name.len == 6 && memcmp(name.p, "MQIsdp", 6) == 0))
        return MQTT_E_PROTOCOL; /* 3.1.2-1: may close */
    if (!rd_u8(r, &c->level))
        return MQTT_E_MALFORMED;
    if (c->level != 4 || name.len != 4) {
        /* 3.1.2-2: CONNACK 1, then close. The rest of the packet follows
         * another version's layout: it is not looked at. MQTT 3.1
         * ("MQIsdp", level 3) gets the same answer. */
        c->return_code = MQTT_CONNACK_BAD_PROTOCOL;
        r->p = r->end;
        return MQTT_OK;
    }
    if (!rd_u8(r, &fl) || !rd_u16(r, &c->keep_alive))
        return MQTT_E_MALFORMED;
    if (fl & 0x01)
        return MQTT_E_MALFORMED; /* reserved flag: 3.1.2-3 */
    c->clean_session = (fl & 0x02) != 0;
    c->has_will = (fl & 0x04) != 0;
    c->will_qos = (uint8_t)((fl >> 3) & 3);
    c->will_retain = (fl & 0x20) != 0;
    c->has_password = (fl & 0x40) != 0;
    c->has_username = (fl & 0x80) != 0;
    if (c->will_qos == 3)
        return MQTT_E_QOS; /* 3.1.2-14 */
    if (!c->has_will && (c->will_qos != 0 || c->will_retain))
        return MQTT_E_MALFORMED; /* 3.1.2-11, 3.1.2-13, 3.1.2-15 */
    if (c->has_password && !c->has_username)
        return MQTT_E_MALFORMED; /* 3.1.2-22 */

    /* Payload, in this order (3.1.3-1). */
    rc = rd_utf8(r, &c->client_id);
    if (rc != MQTT_OK)
        return rc;
    if (c->has_will) {
        rc = rd_topic(r, &c->will_topic);
        if (rc != MQTT_OK)
            return rc;
        if (!rd_bytes(r, &c->will_message))
            return MQTT_E_MALFORMED;
    }
    if (c->has_username) {
        rc = rd_utf8(r, &c->username);
        if (rc != MQTT_OK)
            return rc;
    }
    if (c->has_password && !rd_bytes(r, &c->password))
        return MQTT_E_MALFORMED;
    if (r->p != r->end)
        return MQTT_E_MALFORMED; /* bytes after the last field */
    if (c->client_id.len == 0 && !c->clean_session)
        c->return_code = MQTT_CONNACK_BAD_CLIENT_ID; /* 3.1.3-8 */
    return MQTT_OK;
}

static int
parse_publish(struct rd *r, uint8_t flags, struct mqtt_publish *pub)
{
    int rc;

    memset(pub, 0, sizeof(*pub));
    pub->dup = (flags & 8) != 0;
    pub->qos = (uint8_t)((flags >> 1) & 3);
    pub->retain = (flags & 1) != 0;
    rc = rd_topic(r, &pub->topic);
    if (rc != MQTT_OK)
        return rc;
    if (pub->qos > 0) {
        if (!rd_u16(r, &pub->packet_id))
            return MQTT_E_MALFORMED;
        if (pub->packet_id == 0)
            return MQTT_E_PACKET_ID; /* 2.3.1-1 */
    }
    pub->payload.p = (const char *)r->p;
    pub->payload.len = (size_t)(r->end - r->p);
    r->p = r->end;
    return MQTT_OK;
}

/* SUBSCRIBE (with a requested QoS per filter) and UNSUBSCRIBE. */
static int
parse_subscribe(struct rd *r, bool is_sub, struct mqtt_subscribe *s)
{
    memset(s, 0, sizeof(*s));
    if (!rd_u16(r, &s->packet_id))
        return MQTT_E_MALFORMED;
    if (s->packet_id == 0)
        return MQTT_E_PACKET_ID;
    s->list = r->p;
    s->list_len = (size_t)(r->end - r->p);
    if (r->p == r->end)
        return MQTT_E_MALFORMED; /* no filter: 3.8.3-3, 3.10.3-2 */
    while (r->p < r->end) {
        struct proto_str f;
        uint8_t q;
        int rc = rd_utf8(r, &f);

        if (rc != MQTT_OK)
            return rc;
        if (!filter_ok(f.p, f.len))
            return MQTT_E_TOPIC;
        if (is_sub) {
            if (!rd_u8(r, &q))
                return MQTT_E_MALFORMED;
            if (q & 0xfc)
                return MQTT_E_MALFORMED; /* reserved bits: 3.8.3-4 */
            if (q == 3)
                return MQTT_E_QOS;
        }
        s->n_filters++;
    }
    return MQTT_OK;
}

static int
parse_suback(struct rd *r, struct mqtt_suback *s)
{
    const uint8_t *q;

    if (!rd_u16(r, &s->packet_id))
        return MQTT_E_MALFORMED;
    if (s->packet_id == 0)
        return MQTT_E_PACKET_ID;
    if (r->p == r->end)
        return MQTT_E_MALFORMED;
    for (q = r->p; q < r->end; q++) {
        if (*q > 2 && *q != MQTT_SUBACK_FAILURE)
            return MQTT_E_MALFORMED; /* 3.9.3-2 */
    }
    s->codes = r->p;
    s->n_codes = (size_t)(r->end - r->p);
    r->p = r->end;
    return MQTT_OK;
}

static int
parse_body(struct rd *r, struct mqtt_packet *out)
{
    uint8_t a = 0, b = 0;

    switch (out->type) {
    case MQTT_CONNECT:
        return parse_connect(r, &out->connect);
    case MQTT_PUBLISH:
        return parse_publish(r, out->flags, &out->publish);
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        return parse_subscribe(r, out->type == MQTT_SUBSCRIBE,
                               &out->subscribe);
    case MQTT_SUBACK:
        return parse_suback(r, &out->suback);
    case MQTT_CONNACK:
        (void)rd_u8(r, &a);
        (void)rd_u8(r, &b);
        if ((a & 0xfe) != 0 || b > MQTT_CONNACK_NOT_AUTHORIZED ||
            ((a & 1) && b != 0))
            return MQTT_E_MALFORMED; /* 3.2.2.1, 3.2.2-4 */
        out->connack.session_present = (a & 1) != 0;
        out->connack.return_code = b;
        return MQTT_OK;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
    case MQTT_UNSUBACK:
        (void)rd_u16(r, &out->packet_id);
        return out->packet_id != 0 ? MQTT_OK : MQTT_E_PACKET_ID;
    case MQTT_PINGREQ:
    case MQTT_PINGRESP:
    case MQTT_DISCONNECT:
        return MQTT_OK;
    }
    return MQTT_E_TYPE;
}

int
mqtt_parse(const uint8_t *p, size_t len, size_t max_packet,
           struct mqtt_packet *out, size_t *consumed)
{
    uint32_t rem;
    size_t n, total;
    unsigned type;
    struct rd r;
    int rc;

    if (len == 0)
        return MQTT_NEED_MORE;
    rc = check_first_byte(p[0]);
    if (rc != MQTT_OK)
        return rc;
    type = p[0] >> 4;
    rc = read_varint(p + 1, len - 1, &rem, &n);
    if (rc != MQTT_OK)
        return rc;
    if (type_size[type] >= 0 && rem != (uint32_t)type_size[type])
        return MQTT_E_MALFORMED;
    total = 1 + n + rem;
    if (total > max_packet)
        return MQTT_E_TOOBIG;
    if (len < total)
        return MQTT_NEED_MORE;

    memset(out, 0, sizeof(*out));
    out->type = (enum mqtt_type)type;
    out->flags = p[0] & 0x0f;
    out->size = total;
    r.p = p + 1 + n;
    r.end = p + total;
    rc = parse_body(&r, out);
    if (rc != MQTT_OK)
        return rc;
    if (r.p != r.end)
        return MQTT_E_MALFORMED;
    *consumed = total;
    return MQTT_OK;
}

const char *
mqtt_strerror(int rc)
{
    switch (rc) {
    case MQTT_OK:
        return "ok";
    case MQTT_NEED_MORE:
        return "incomplete packet";
    case MQTT_E_TYPE:
        return "reserved packet type";
    case MQTT_E_FLAGS:
        return "bad fixed header flags";
    case MQTT_E_VARINT:
        return "bad remaining length";
    case MQTT_E_TOOBIG:
        return "packet too large";
    case MQTT_E_MALFORMED:
        return "malformed packet";
    case MQTT_E_UTF8:
        return "invalid utf-8 string";
    case MQTT_E_PROTOCOL:
        return "unknown protocol name";
    case MQTT_E_QOS:
        return "qos 3";
    case MQTT_E_TOPIC:
        return "bad topic";
    case MQTT_E_PACKET_ID:
        return "packet identifier 0";
    default:
        return "unknown error";
    }
}

bool
mqtt_filter_next(const struct mqtt_subscribe *sub, bool is_subscribe,
                 const uint8_t **cur, struct proto_str *filter, uint8_t *qos)
{
    struct rd r;
    uint8_t q = 0;

    r.p = *cur;
    r.end = sub->list + sub->list_len;
    if (r.p < sub->list || r.p >= r.end || !rd_bytes(&r, filter))
        return false;
    if (is_subscribe && !rd_u8(&r, &q))
        return false;
    if (qos != NULL)
        *qos = q;
    *cur = r.p;
    return true;
}

/* ---- encoders ------------------------------------------------------------ */

static size_t
put_ack(uint8_t *buf, size_t cap, uint8_t b0, uint8_t b2, uint8_t b3)
{
    if (cap < MQTT_ACK_SIZE)
        return MQTT_ACK_SIZE;
    buf[0] = b0;
    buf[1] = 2;
    buf[2] = b2;
    buf[3] = b3;
    return MQTT_ACK_SIZE;
}

size_t
mqtt_encode_connack(uint8_t *buf, size_t cap, bool session_present,
                    uint8_t return_code)
{
    /* Session present only with an accepted connection (3.2.2-4). */
    return put_ack(buf, cap, MQTT_CONNACK << 4,
                   session_present && return_code == 0 ? 1 : 0,
                   return_code);
}

size_t
mqtt_encode_puback(uint8_t *buf, size_t cap, uint16_t packet_id)
{
    return put_ack(buf, cap, MQTT_PUBACK << 4, (uint8_t)(packet_id >> 8),
                   (uint8_t)packet_id);
}

size_t
mqtt_encode_unsuback(uint8_t *buf, size_t cap, uint16_t packet_id)
{
    return put_ack(buf, cap, MQTT_UNSUBACK << 4, (uint8_t)(packet_id >> 8),
                   (uint8_t)packet_id);
}

size_t
mqtt_encode_pingresp(uint8_t *buf, size_t cap)
{
    if (cap < 2)
        return 2;
    buf[0] = MQTT_PINGRESP << 4;
    buf[1] = 0;
    return 2;
}

size_t
mqtt_encode_suback(uint8_t *buf, size_t cap, uint16_t packet_id,
                   const uint8_t *codes, size_t n)
{
    uint8_t hdr[MQTT_FIXED_HEADER_MAX];
    size_t rem = 2 + n, h = 1, total;
    uint32_t v;

    if (n == 0 || n > MQTT_REMAINING_MAX - 2)
        return 0;
    hdr[0] = MQTT_SUBACK << 4;
    v = (uint32_t)rem;
    do {
        uint8_t b = v & 0x7f;

        v >>= 7;
        hdr[h++] = (uint8_t)(b | (v ? 0x80 : 0));
    } while (v);
    total = h + rem;
    if (total > cap)
        return total;
    memcpy(buf, hdr, h);
    buf[h] = (uint8_t)(packet_id >> 8);
    buf[h + 1] = (uint8_t)packet_id;
    if (codes != NULL)
        memcpy(buf + h + 2, codes, n);
    else
        memset(buf + h + 2, MQTT_SUBACK_FAILURE, n);
    return total;
}

/* ---- PUBLISH to a reading ------------------------------------------------ */

/* Nesting allowed in members the mapping skips. */
#define JSON_MAX_DEPTH 16
/* InfluxDB's timestamp range, as proto_parse.c's TS_MIN and TS_MAX. */
#define TS_MIN (INT64_MIN + 2)
#define TS_MAX (INT64_MAX - 1)

struct js {
    const char *p, *end;
};

static bool
js_is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void
js_ws(struct js *j)
{
    while (j->p < j->end && js_is_ws(*j->p))
        j->p++;
}

static int
hex4(const char *p, uint32_t *v)
{
    int i;

    *v = 0;
    for (i = 0; i < 4; i++) {
        char c = p[i];
        uint32_t d;

        if (c >= '0' && c <= '9')
            d = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (uint32_t)(c - 'A' + 10);
        else
            return -1;
        *v = *v << 4 | d;
    }
    return 0;
}

/*
 * A string at j->p (on its opening quote). Checks it fully; *raw is the
 * bytes between the quotes. With dst, also writes the unescaped string
 * (never longer than raw) and its length into *dst_len. PROTO_E_UTF8 for
 * a lone surrogate escape, PROTO_E_NUL for an escape that decodes to a
 * control character (names must not hold one), PROTO_E_SYNTAX otherwise.
 */
static int
js_string(struct js *j, struct proto_str *raw, char *dst, size_t *dst_len)
{
    const char *p = j->p + 1;
    size_t o = 0;

    raw->p = p;
    for (;;) {
        unsigned char c;

        if (p >= j->end)
            return PROTO_E_SYNTAX;
        c = (unsigned char)*p;
        if (c == '"')
            break;
        if (c < 0x20)
            return PROTO_E_SYNTAX; /* unescaped control character */
        if (c != '\\') {
            if (dst != NULL)
                dst[o++] = (char)c;
            p++;
            continue;
        }
        if (p + 1 >= j->end)
            return PROTO_E_SYNTAX;
        c = (unsigned char)p[1];
        if (c == 'u') {
            uint32_t cp, lo;

            if (j->end - p < 6 || hex4(p + 2, &cp) < 0)
                return PROTO_E_SYNTAX;
            p += 6;
            if (cp >= 0xdc00 && cp <= 0xdfff)
                return PROTO_E_UTF8; /* a lone low surrogate */
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (j->end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
                    hex4(p + 2, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
                    return PROTO_E_UTF8;
                p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (cp < 0x20 || cp == 0x7f)
                return PROTO_E_NUL;
            /* At most 4 bytes out for 6 or 12 in: within raw's length. */
            if (dst != NULL) {
                if (cp < 0x80) {
                    dst[o++] = (char)cp;
                } else if (cp < 0x800) {
                    dst[o++] = (char)(0xc0 | cp >> 6);
                    dst[o++] = (char)(0x80 | (cp & 0x3f));
                } else if (cp < 0x10000) {
                    dst[o++] = (char)(0xe0 | cp >> 12);
                    dst[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                    dst[o++] = (char)(0x80 | (cp & 0x3f));
                } else {
                    dst[o++] = (char)(0xf0 | cp >> 18);
                    dst[o++] = (char)(0x80 | ((cp >> 12) & 0x3f));
                    dst[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                    dst[o++] = (char)(0x80 | (cp & 0x3f));
                }
            }
            continue;
        }
        switch (c) {
        case '"': case '\\': case '/':
            break;
        case 'b': case 'f': case 'n': case 'r': case 't':
            if (dst != NULL)
                return PROTO_E_NUL; /* a control character in a name */
            break;
        default:
            return PROTO_E_SYNTAX;
        }
        if (dst != NULL)
            dst[o++] = (char)c;
        p += 2;
    }
    raw->len = (size_t)(p - raw->p);
    if (dst_len != NULL)
        *dst_len = o;
    j->p = p + 1;
    return PROTO_OK;
}

/* A number, as RFC 8259 writes it:
 *     -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
 * *integer says it had neither fraction nor exponent. */
static int
js_number(struct js *j, struct proto_str *tok, bool *integer)
{
    const char *p = j->p, *e = j->end;

    tok->p = p;
    *integer = true;
    if (p < e && *p == '-')
        p++;
    if (p >= e || !sp_is_digit((unsigned char)*p))
        return PROTO_E_SYNTAX;
    if (*p == '0')
        p++;
    else
        while (p < e && sp_is_digit((unsigned char)*p))
            p++;
    if (p < e && *p == '.') {
        *integer = false;
        p++;
        if (p >= e || !sp_is_digit((unsigned char)*p))
            return PROTO_E_SYNTAX;
        while (p < e && sp_is_digit((unsigned char)*p))
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        *integer = false;
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || !sp_is_digit((unsigned char)*p))
            return PROTO_E_SYNTAX;
        while (p < e && sp_is_digit((unsigned char)*p))
            p++;
    }
    tok->len = (size_t)(p - tok->p);
    j->p = p;
    return PROTO_OK;
}

static bool
js_literal(struct js *j, const char *lit, size_t n)
{
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return false;
    j->p += n;
    return true;
}

/* Skip any value; depth counts the containers around it. */
static int
js_skip(struct js *j, int depth)
{
    struct proto_str s;
    bool integer;
    int rc;

    if (j->p >= j->end)
        return PROTO_E_SYNTAX;
    switch (*j->p) {
    case '"':
        return js_string(j, &s, NULL, NULL);
    case 't':
        return js_literal(j, "true", 4) ? PROTO_OK : PROTO_E_SYNTAX;
    case 'f':
        return js_literal(j, "false", 5) ? PROTO_OK : PROTO_E_SYNTAX;
    case 'n':
        return js_literal(j, "null", 4) ? PROTO_OK : PROTO_E_SYNTAX;
    case '{':
    case '[': {
        char close = *j->p == '{' ? '}' : ']';
        bool obj = close == '}';

        if (depth >= JSON_MAX_DEPTH)
            return PROTO_E_SYNTAX;
        j->p++;
        js_ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return PROTO_OK;
        }
        for (;;) {
            if (obj) {
                if (j->p >= j->end || *j->p != '"')
                    return PROTO_E_SYNTAX;
                rc = js_string(j, &s, NULL, NULL);
                if (rc != PROTO_OK)
                    return rc;
                js_ws(j);
                if (j->p >= j->end || *j->p != ':')
                    return PROTO_E_SYNTAX;
                j->p++;
                js_ws(j);
            }
            rc = js_skip(j, depth + 1);
            if (rc != PROTO_OK)
                return rc;
            js_ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                js_ws(j);
                continue;
            }
            if (j->p < j->end && *j->p == close) {
                j->p++;
                return PROTO_OK;
            }
            return PROTO_E_SYNTAX;
        }
    }
    default:
        return js_number(j, &s, &integer);
    }
}

enum { K_OTHER, K_VALUE, K_UNIT, K_TS };

/* Which member a (decoded) key names. */
static int
js_key(const char *k, size_t n)
{
    if (n == 5 && memcmp(k, "value", 5) == 0)
        return K_VALUE;
    if (n == 4 && memcmp(k, "unit", 4) == 0)
        return K_UNIT;
    if (n == 2 && memcmp(k, "ts", 2) == 0)
        return K_TS;
    return K_OTHER;
}

struct member_vals {
    bool have[4];
    double value;
    struct proto_str unit;
};

static int
json_payload(struct js *j, struct proto_line *out, struct member_vals *mv)
{
    int rc;

    j->p++; /* '{' */
    js_ws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        return PROTO_OK;
    }
    for (;;) {
        struct proto_str raw, tok;
        char kbuf[32];
        size_t klen;
        bool integer;
        struct js probe;
        int k = K_OTHER;

        if (j->p >= j->end || *j->p != '"')
            return PROTO_E_SYNTAX;
        probe = *j;
        rc = js_string(j, &raw, NULL, NULL);
        if (rc != PROTO_OK)
            return rc;
        /* Keys with escapes are decoded to be compared; keys too long to
         * decode into kbuf cannot be ours. */
        if (memchr(raw.p, '\\', raw.len) == NULL)
            k = js_key(raw.p, raw.len);
        else if (raw.len <= sizeof(kbuf) &&
                 js_string(&probe, &raw, kbuf, &klen) == PROTO_OK)
            k = js_key(kbuf, klen);
        js_ws(j);
        if (j->p >= j->end || *j->p != ':')
            return PROTO_E_SYNTAX;
        j->p++;
        js_ws(j);
        if (k != K_OTHER && mv->have[k])
            return PROTO_E_SYNTAX; /* a member twice */
        if (k != K_OTHER)
            mv->have[k] = true;

        switch (k) {
        case K_VALUE: {
            const char *q;

            if (j->p >= j->end || (*j->p != '-' && !sp_is_digit(
                                                      (unsigned char)*j->p)))
                return PROTO_E_SYNTAX; /* not a number */
            rc = js_number(j, &tok, &integer);
            if (rc != PROTO_OK)
                return rc;
            q = tok.p;
            rc = sp_f64(&q, tok.p + tok.len, &mv->value);
            if (rc == -ERANGE)
                return PROTO_E_RANGE;
            if (rc != 0 || q != tok.p + tok.len)
                return PROTO_E_SYNTAX;
            break;
        }
        case K_UNIT: {
            /* Every escape decodes to at least one byte per six. */
            char ubuf[6 * PROTO_MAX_UNIT];
            size_t n;

            if (j->p >= j->end || *j->p != '"')
                return PROTO_E_SYNTAX;
            probe = *j;
            rc = js_string(j, &raw, NULL, NULL);
            if (rc != PROTO_OK)
                return rc;
            if (memchr(raw.p, '\\', raw.len) == NULL) {
                if (raw.len > PROTO_MAX_UNIT)
                    return PROTO_E_NAME;
                mv->unit = raw; /* borrowed: nothing to unescape */
                break;
            }
            if (raw.len > sizeof(ubuf))
                return PROTO_E_NAME;
            rc = js_string(&probe, &raw, ubuf, &n);
            if (rc != PROTO_OK)
                return rc;
            if (n > PROTO_MAX_UNIT)
                return PROTO_E_NAME;
            /* Scratch holds at most a 128-byte quantity so far. */
            memcpy(out->scratch + out->scratch_used, ubuf, n);
            mv->unit.p = out->scratch + out->scratch_used;
            mv->unit.len = n;
            out->scratch_used += n;
            break;
        }
        case K_TS: {
            const char *q;
            int64_t t;

            if (j->p >= j->end || (*j->p != '-' && !sp_is_digit(
                                                      (unsigned char)*j->p)))
                return PROTO_E_TIMESTAMP;
            rc = js_number(j, &tok, &integer);
            if (rc != PROTO_OK)
                return rc;
            q = tok.p;
            if (!integer || sp_i64(&q, tok.p + tok.len, &t) != 0 ||
                q != tok.p + tok.len || t < TS_MIN || t > TS_MAX)
                return PROTO_E_TIMESTAMP;
            out->has_ts = true;
            out->ts_ns = t;
            break;
        }
        default:
            rc = js_skip(j, 1);
            if (rc != PROTO_OK)
                return rc;
        }
        js_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            js_ws(j);
            continue;
        }
        if (j->p < j->end && *j->p == '}') {
            j->p++;
            return PROTO_OK;
        }
        return PROTO_E_SYNTAX;
    }
}

/* True if (p, len) is nan, inf or infinity, any case, with a sign or not. */
static bool
is_nan_inf(const char *p, size_t len)
{
    if (len > 0 && (*p == '+' || *p == '-')) {
        p++;
        len--;
    }
    return sp_casematch(p, len, "nan") || sp_casematch(p, len, "inf") ||
           sp_casematch(p, len, "infinity");
}

/* sensors/<sensor>/<quantity>: exactly three levels. */
static int
split_topic(struct proto_str t, struct proto_str *sensor,
            struct proto_str *qname)
{
    static const char pre[] = "sensors/";
    const size_t plen = sizeof(pre) - 1;
    const char *s, *slash, *end = t.p + t.len;
    size_t i;

    if (t.len <= plen || memcmp(t.p, pre, plen) != 0)
        return PROTO_E_SYNTAX;
    s = t.p + plen;
    slash = memchr(s, '/', (size_t)(end - s));
    if (slash == NULL ||
        memchr(slash + 1, '/', (size_t)(end - slash - 1)) != NULL)
        return PROTO_E_SYNTAX;
    sensor->p = s;
    sensor->len = (size_t)(slash - s);
    qname->p = slash + 1;
    qname->len = (size_t)(end - slash - 1);
    if (sensor->len == 0 || sensor->len > PROTO_MAX_NAME ||
        qname->len == 0 || qname->len > PROTO_MAX_NAME)
        return PROTO_E_NAME;
    for (i = 0; i < t.len; i++) {
        unsigned char c = (unsigned char)t.p[i];

        if (c < 0x20 || c == 0x7f)
            return PROTO_E_NUL;
    }
    return PROTO_OK;
}

int
mqtt_publish_to_line(const struct mqtt_publish *pub, struct proto_line *out)
{
    struct proto_str sensor, qname, quantity, unit, pl = pub->payload;
    struct member_vals mv;
    const char *end;
    struct js j;
    size_t i, room;
    double v;
    int rc;

    out->has_ts = false;
    out->ts_ns = 0;
    out->n = 0;
    out->scratch_used = 0;
    memset(&mv, 0, sizeof(mv));
    if (pub->topic.len == 0)
        return PROTO_E_SYNTAX;
    if (!proto_utf8_valid(pub->topic.p, pub->topic.len))
        return PROTO_E_UTF8;
    rc = split_topic(pub->topic, &sensor, &qname);
    if (rc != PROTO_OK)
        return rc;

    /* The payload: bounded, UTF-8, no control bytes but JSON's blanks. */
    if (pl.len == 0)
        return PROTO_E_EMPTY; /* pl.p may be NULL */
    if (pl.len > PROTO_MAX_LINE_LIMIT)
        return PROTO_E_TOOLONG;
    end = pl.p + pl.len;
    for (i = 0; i < pl.len;) {
        unsigned char c = (unsigned char)pl.p[i];
        size_t n = sp_utf8_len(pl.p + i, end);

        if (n == 0)
            return PROTO_E_UTF8;
        if ((c < 0x20 && !js_is_ws((char)c)) || c == 0x7f)
            return PROTO_E_NUL;
        i += n;
    }
    j.p = pl.p;
    j.end = end;
    js_ws(&j);
    while (j.end > j.p && js_is_ws(j.end[-1]))
        j.end--;
    if (j.p == j.end)
        return PROTO_E_EMPTY;

    /* The quantity first: JSON's unit may go into scratch after it. */
    room = sizeof(out->scratch);
    quantity = proto_canon_quantity(qname.p, qname.len, out->scratch, room,
                                    &unit);
    if (quantity.p == out->scratch) {
        if (memcmp(quantity.p, qname.p, qname.len) == 0)
            quantity.p = qname.p;
        else
            out->scratch_used += quantity.len;
    }

    if (*j.p == '{') {
        rc = json_payload(&j, out, &mv);
        if (rc != PROTO_OK)
            return rc;
        if (j.p != j.end)
            return PROTO_E_SYNTAX; /* something after the object */
        if (!mv.have[K_VALUE])
            return PROTO_E_NOFIELD;
        v = mv.value;
        if (mv.have[K_UNIT])
            unit = proto_canon_unit(qname.p, qname.len, mv.unit.p,
                                    mv.unit.len);
    } else {
        const char *q = j.p;

        if (is_nan_inf(j.p, (size_t)(j.end - j.p)))
            return PROTO_E_RANGE;
        rc = sp_f64(&q, j.end, &v);
        if (rc == -ERANGE)
            return PROTO_E_RANGE;
        if (rc != 0 || q != j.end)
            return PROTO_E_SYNTAX;
    }

    out->fmt = PROTO_FMT_MQTT;
    out->r[0].sensor = sensor;
    out->r[0].quantity = quantity;
    out->r[0].unit = unit;
    out->r[0].value = v;
    out->n = 1;
    return PROTO_OK;
}
