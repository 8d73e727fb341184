/*
 * test_mqtt: the MQTT 3.1.1 codec (lib/proto/mqtt.c): every rule of
 * mqtt_parse with its malformed-packet class, the incremental contract
 * (byte by byte agrees with all at once), the encoders (checked by parsing
 * what they write), and the PUBLISH-to-reading mapping.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/mqtt.h"

static struct proto_line g_line;

/* ---- packet builder ------------------------------------------------------ */

struct pb {
    uint8_t b[70000];
    size_t n;
};

static void
pb_u8(struct pb *p, unsigned v)
{
    assert_true(p->n < sizeof(p->b));
    p->b[p->n++] = (uint8_t)v;
}

static void
pb_u16(struct pb *p, unsigned v)
{
    pb_u8(p, (v >> 8) & 0xff);
    pb_u8(p, v & 0xff);
}

static void
pb_raw(struct pb *p, const void *d, size_t n)
{
    assert_true(p->n + n <= sizeof(p->b));
    memcpy(p->b + p->n, d, n);
    p->n += n;
}

/* A length-prefixed string or binary field. */
static void
pb_str(struct pb *p, const char *s, size_t n)
{
    pb_u16(p, (unsigned)n);
    pb_raw(p, s, n);
}

static void
pb_s(struct pb *p, const char *s)
{
    pb_str(p, s, strlen(s));
}

/* A whole packet: first byte b0, minimal remaining length, body. */
static struct pb *
frame(unsigned b0, const struct pb *body)
{
    static struct pb out;
    size_t rem = body != NULL ? body->n : 0;

    out.n = 0;
    pb_u8(&out, b0);
    do {
        unsigned b = rem & 0x7f;

        rem >>= 7;
        pb_u8(&out, b | (rem ? 0x80 : 0));
    } while (rem);
    if (body != NULL)
        pb_raw(&out, body->b, body->n);
    return &out;
}

/* Parse a whole packet, in an exactly-sized heap block. */
static int
parse(const struct pb *p, size_t max, struct mqtt_packet *out)
{
    uint8_t *c = malloc(p->n ? p->n : 1);
    size_t used = 0;
    int rc;

    assert_non_null(c);
    memcpy(c, p->b, p->n);
    rc = mqtt_parse(c, p->n, max, out, &used);
    if (rc == MQTT_OK)
        assert_int_equal(used, p->n);
    /* Borrowed slices would dangle: tests only look at scalars after. */
    free(c);
    return rc;
}

#define MAX 65536

/* CONNECT body: name, level, flags, keep alive, then payload fields. */
static struct pb *
connect_body(const char *name, unsigned level, unsigned flags)
{
    static struct pb b;

    b.n = 0;
    pb_s(&b, name);
    pb_u8(&b, level);
    pb_u8(&b, flags);
    pb_u16(&b, 60);
    return &b;
}

/* ---- CONNECT ------------------------------------------------------------- */

static void
test_connect_ok(void **state)
{
    struct mqtt_packet pk;
    struct pb *b;
    uint8_t *c;
    size_t used;

    (void)state;
    b = connect_body("MQTT", 4, 0x02);
    pb_s(b, "client-1");
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_OK);
    assert_int_equal(pk.type, MQTT_CONNECT);
    assert_int_equal(pk.connect.level, 4);
    assert_int_equal(pk.connect.return_code, MQTT_CONNACK_ACCEPTED);
    assert_true(pk.connect.clean_session);
    assert_int_equal(pk.connect.keep_alive, 60);
    assert_int_equal(pk.connect.client_id.len, 8);
    assert_false(pk.connect.has_username || pk.connect.has_password ||
                 pk.connect.has_will);

    /* Everything: will (QoS 1, retained), user name and password. */
    b = connect_body("MQTT", 4, 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02);
    pb_s(b, "c");
    pb_s(b, "sensors/s1/status");
    pb_str(b, "gone\0", 5);
    pb_s(b, "s1");
    pb_str(b, "tok\0en", 6);
    b = frame(0x10, b);
    c = malloc(b->n);
    assert_non_null(c);
    memcpy(c, b->b, b->n);
    assert_int_equal(mqtt_parse(c, b->n, MAX, &pk, &used), MQTT_OK);
    assert_int_equal(used, b->n);
    assert_true(pk.connect.has_will && pk.connect.will_retain);
    assert_int_equal(pk.connect.will_qos, 1);
    assert_memory_equal(pk.connect.will_topic.p, "sensors/s1/status", 17);
    assert_int_equal(pk.connect.will_message.len, 5);
    assert_true(pk.connect.has_username && pk.connect.has_password);
    assert_memory_equal(pk.connect.username.p, "s1", 2);
    assert_int_equal(pk.connect.password.len, 6); /* binary: NUL is fine */
    assert_memory_equal(pk.connect.password.p, "tok\0en", 6);
    free(c);

    /* A user name alone. */
    b = connect_body("MQTT", 4, 0x82);
    pb_s(b, "c");
    pb_s(b, "s1");
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_OK);
    assert_true(pk.connect.has_username && !pk.connect.has_password);
}

static void
test_connect_refusals(void **state)
{
    struct mqtt_packet pk;
    struct pb *b;

    (void)state;
    /* 3.1.2-2: another level is CONNACK 1, whatever follows. */
    b = connect_body("MQTT", 3, 0x02);
    pb_s(b, "c");
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_OK);
    assert_int_equal(pk.connect.return_code, MQTT_CONNACK_BAD_PROTOCOL);
    assert_int_equal(pk.connect.level, 3);
    /* MQTT 5: properties after keep alive, which 3.1.1 cannot parse. */
    b = connect_body("MQTT", 5, 0x02);
    pb_u8(b, 0); /* property length */
    pb_s(b, "c");
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_OK);
    assert_int_equal(pk.connect.return_code, MQTT_CONNACK_BAD_PROTOCOL);
    /* MQTT 3.1's name and level. */
    b = connect_body("MQIsdp", 3, 0x02);
    pb_s(b, "c");
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_OK);
    assert_int_equal(pk.connect.return_code, MQTT_CONNACK_BAD_PROTOCOL);
    /* A level byte, and nothing else: still CONNACK 1. */
    b = connect_body("MQTT", 6, 0);
    b->n -= 3;
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_OK);
    assert_int_equal(pk.connect.return_code, MQTT_CONNACK_BAD_PROTOCOL);

    /* 3.1.3-8: an empty client id needs a clean session. */
    b = connect_body("MQTT", 4, 0x00);
    pb_s(b, "");
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_OK);
    assert_int_equal(pk.connect.return_code, MQTT_CONNACK_BAD_CLIENT_ID);
    b = connect_body("MQTT", 4, 0x02);
    pb_s(b, "");
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_OK);
    assert_int_equal(pk.connect.return_code, MQTT_CONNACK_ACCEPTED);
}

static void
test_connect_malformed(void **state)
{
    struct mqtt_packet pk;
    struct pb *b;

    (void)state;
    b = connect_body("MQTX", 4, 0x02);
    pb_s(b, "c");
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_E_PROTOCOL);
    b = connect_body("mqtt", 4, 0x02);
    pb_s(b, "c");
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_E_PROTOCOL);
    /* Fixed header flags must be 0. */
    b = connect_body("MQTT", 4, 0x02);
    pb_s(b, "c");
    assert_int_equal(parse(frame(0x11, b), MAX, &pk), MQTT_E_FLAGS);
    /* 3.1.2-3: the reserved connect flag. */
    b = connect_body("MQTT", 4, 0x03);
    pb_s(b, "c");
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_E_MALFORMED);
    /* 3.1.2-14: will QoS 3. */
    b = connect_body("MQTT", 4, 0x1e);
    pb_s(b, "c");
    pb_s(b, "t");
    pb_s(b, "m");
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_E_QOS);
    /* 3.1.2-13, 3.1.2-15: will QoS or retain without the will flag. */
    b = connect_body("MQTT", 4, 0x0a);
    pb_s(b, "c");
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_E_MALFORMED);
    b = connect_body("MQTT", 4, 0x22);
    pb_s(b, "c");
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_E_MALFORMED);
    /* 3.1.2-22: a password without a user name. */
    b = connect_body("MQTT", 4, 0x42);
    pb_s(b, "c");
    pb_s(b, "pw");
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_E_MALFORMED);
    /* Flags promise fields the payload lacks. */
    b = connect_body("MQTT", 4, 0x82);
    pb_s(b, "c");
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_E_MALFORMED);
    b = connect_body("MQTT", 4, 0x06);
    pb_s(b, "c");
    pb_s(b, "t");
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_E_MALFORMED);
    /* A string longer than what is left. */
    b = connect_body("MQTT", 4, 0x02);
    pb_u16(b, 10);
    pb_raw(b, "abc", 3);
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_E_MALFORMED);
    /* Bytes after the last field. */
    b = connect_body("MQTT", 4, 0x02);
    pb_s(b, "c");
    pb_u8(b, 0);
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_E_MALFORMED);
    /* Cut short inside the variable header. */
    b = connect_body("MQTT", 4, 0x02);
    b->n -= 2;
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_E_MALFORMED);
    /* A will topic is a topic name: no wildcards. */
    b = connect_body("MQTT", 4, 0x06);
    pb_s(b, "c");
    pb_s(b, "a/#");
    pb_s(b, "m");
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_E_TOPIC);
}

/* 1.5.3: UTF-8 strings, in every string field. */
static void
test_utf8_strings(void **state)
{
    static const struct {
        const char *s;
        size_t len;
        int rc;
    } cases[] = {
        { "ok", 2, MQTT_OK },
        { "\xc2\xb0" "C", 3, MQTT_OK },
        { "\xef\xbb\xbf" "bom", 6, MQTT_OK },        /* U+FEFF kept */
        { "\xf4\x8f\xbf\xbf", 4, MQTT_OK },          /* U+10FFFF */
        { "a\0b", 3, MQTT_E_UTF8 },                  /* 1.5.3-2 */
        { "\xed\xa0\x80", 3, MQTT_E_UTF8 },          /* surrogate, 1.5.3-1 */
        { "\xc0\x80", 2, MQTT_E_UTF8 },              /* overlong NUL */
        { "\xe0\x80\xaf", 3, MQTT_E_UTF8 },          /* overlong */
        { "\xf4\x90\x80\x80", 4, MQTT_E_UTF8 },      /* past U+10FFFF */
        { "\xff", 1, MQTT_E_UTF8 },
        { "\xc2", 1, MQTT_E_UTF8 },                  /* truncated */
    };
    struct mqtt_packet pk;
    struct pb *b, body;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* client id */
        b = connect_body("MQTT", 4, 0x02);
        pb_str(b, cases[i].s, cases[i].len);
        assert_int_equal(parse(frame(0x10, b), MAX, &pk), cases[i].rc);
        /* user name */
        b = connect_body("MQTT", 4, 0x82);
        pb_s(b, "c");
        pb_str(b, cases[i].s, cases[i].len);
        assert_int_equal(parse(frame(0x10, b), MAX, &pk), cases[i].rc);
        /* will topic */
        b = connect_body("MQTT", 4, 0x06);
        pb_s(b, "c");
        pb_str(b, cases[i].s, cases[i].len);
        pb_s(b, "m");
        assert_int_equal(parse(frame(0x10, b), MAX, &pk), cases[i].rc);
        /* PUBLISH topic */
        body.n = 0;
        pb_str(&body, cases[i].s, cases[i].len);
        assert_int_equal(parse(frame(0x30, &body), MAX, &pk), cases[i].rc);
        /* SUBSCRIBE and UNSUBSCRIBE filters */
        body.n = 0;
        pb_u16(&body, 1);
        pb_str(&body, cases[i].s, cases[i].len);
        pb_u8(&body, 0);
        assert_int_equal(parse(frame(0x82, &body), MAX, &pk), cases[i].rc);
        body.n -= 1;
        assert_int_equal(parse(frame(0xa2, &body), MAX, &pk), cases[i].rc);
    }
    /* Passwords and will messages are binary: anything goes. */
    b = connect_body("MQTT", 4, 0xc6);
    pb_s(b, "c");
    pb_s(b, "t");
    pb_str(b, "\xff\0", 2);
    pb_s(b, "u");
    pb_str(b, "\xed\xa0\x80\0", 4);
    assert_int_equal(parse(frame(0x10, b), MAX, &pk), MQTT_OK);
}

/* ---- PUBLISH ------------------------------------------------------------- */

static void
test_publish(void **state)
{
    struct mqtt_packet pk;
    struct pb body, *f;
    uint8_t *c;
    size_t used;

    (void)state;
    body.n = 0;
    pb_s(&body, "sensors/s1/temp");
    pb_raw(&body, "21.5", 4);
    f = frame(0x31, &body); /* QoS 0, retained */
    c = malloc(f->n);
    assert_non_null(c);
    memcpy(c, f->b, f->n);
    assert_int_equal(mqtt_parse(c, f->n, MAX, &pk, &used), MQTT_OK);
    assert_int_equal(pk.type, MQTT_PUBLISH);
    assert_int_equal(pk.publish.qos, 0);
    assert_true(pk.publish.retain && !pk.publish.dup);
    assert_int_equal(pk.publish.packet_id, 0);
    assert_int_equal(pk.publish.topic.len, 15);
    assert_ptr_equal(pk.publish.topic.p, (const char *)c + 4);
    assert_int_equal(pk.publish.payload.len, 4);
    assert_memory_equal(pk.publish.payload.p, "21.5", 4);
    free(c);

    /* QoS 1 and 2 carry a packet id; DUP is allowed with them. */
    body.n = 0;
    pb_s(&body, "t");
    pb_u16(&body, 7);
    pb_raw(&body, "x", 1);
    assert_int_equal(parse(frame(0x32, &body), MAX, &pk), MQTT_OK);
    assert_int_equal(pk.publish.qos, 1);
    assert_int_equal(pk.publish.packet_id, 7);
    assert_int_equal(pk.publish.payload.len, 1);
    assert_int_equal(parse(frame(0x3a, &body), MAX, &pk), MQTT_OK);
    assert_true(pk.publish.dup);
    /* QoS 2 is parsed: the caller refuses it (docs: it closes). */
    assert_int_equal(parse(frame(0x34, &body), MAX, &pk), MQTT_OK);
    assert_int_equal(pk.publish.qos, 2);

    /* An empty payload. */
    body.n = 0;
    pb_s(&body, "t");
    assert_int_equal(parse(frame(0x30, &body), MAX, &pk), MQTT_OK);
    assert_int_equal(pk.publish.payload.len, 0);

    /* 3.3.1-4: QoS 3; 3.3.1-2: DUP on QoS 0. Both seen on byte one. */
    assert_int_equal(parse(frame(0x36, &body), MAX, &pk), MQTT_E_QOS);
    assert_int_equal(parse(frame(0x38, &body), MAX, &pk), MQTT_E_MALFORMED);
    {
        uint8_t one = 0x36;

        assert_int_equal(mqtt_parse(&one, 1, MAX, &pk, &used), MQTT_E_QOS);
    }
    /* 2.3.1-1: packet id 0. */
    body.n = 0;
    pb_s(&body, "t");
    pb_u16(&body, 0);
    assert_int_equal(parse(frame(0x32, &body), MAX, &pk), MQTT_E_PACKET_ID);
    /* QoS 1 without room for the packet id. */
    body.n = 0;
    pb_s(&body, "t");
    pb_u8(&body, 1);
    assert_int_equal(parse(frame(0x32, &body), MAX, &pk), MQTT_E_MALFORMED);
    /* 3.3.2-2: no wildcards in a topic name; 4.7.3-1: not empty. */
    body.n = 0;
    pb_s(&body, "sensors/+/temp");
    assert_int_equal(parse(frame(0x30, &body), MAX, &pk), MQTT_E_TOPIC);
    body.n = 0;
    pb_s(&body, "sensors/#");
    assert_int_equal(parse(frame(0x30, &body), MAX, &pk), MQTT_E_TOPIC);
    body.n = 0;
    pb_s(&body, "");
    assert_int_equal(parse(frame(0x30, &body), MAX, &pk), MQTT_E_TOPIC);
    /* A topic longer than the packet. */
    body.n = 0;
    pb_u16(&body, 50);
    pb_raw(&body, "abc", 3);
    assert_int_equal(parse(frame(0x30, &body), MAX, &pk), MQTT_E_MALFORMED);
    /* Zero remaining length: no topic at all. */
    assert_int_equal(parse(frame(0x30, NULL), MAX, &pk), MQTT_E_MALFORMED);
}

/* ---- the small packets --------------------------------------------------- */

static void
test_acks_and_pings(void **state)
{
    static const struct {
        unsigned b0;
        enum mqtt_type type;
    } ids[] = {
        { 0x40, MQTT_PUBACK },  { 0x50, MQTT_PUBREC },
        { 0x62, MQTT_PUBREL },  { 0x70, MQTT_PUBCOMP },
        { 0xb0, MQTT_UNSUBACK },
    };
    struct mqtt_packet pk;
    struct pb body;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        body.n = 0;
        pb_u16(&body, 0x1234);
        assert_int_equal(parse(frame(ids[i].b0, &body), MAX, &pk), MQTT_OK);
        assert_int_equal(pk.type, ids[i].type);
        assert_int_equal(pk.packet_id, 0x1234);
        /* Any other flags (PUBREL: any but 0b0010). */
        assert_int_equal(parse(frame(ids[i].b0 ^ 0x02, &body), MAX, &pk),
                         MQTT_E_FLAGS);
        assert_int_equal(parse(frame(ids[i].b0 | 0x08, &body), MAX, &pk),
                         MQTT_E_FLAGS);
        /* Remaining length 2 exactly. */
        pb_u8(&body, 0);
        assert_int_equal(parse(frame(ids[i].b0, &body), MAX, &pk),
                         MQTT_E_MALFORMED);
        body.n = 1;
        assert_int_equal(parse(frame(ids[i].b0, &body), MAX, &pk),
                         MQTT_E_MALFORMED);
        body.n = 0;
        pb_u16(&body, 0);
        assert_int_equal(parse(frame(ids[i].b0, &body), MAX, &pk),
                         MQTT_E_PACKET_ID);
    }
    assert_int_equal(parse(frame(0xc0, NULL), MAX, &pk), MQTT_OK);
    assert_int_equal(pk.type, MQTT_PINGREQ);
    assert_int_equal(parse(frame(0xd0, NULL), MAX, &pk), MQTT_OK);
    assert_int_equal(pk.type, MQTT_PINGRESP);
    assert_int_equal(parse(frame(0xe0, NULL), MAX, &pk), MQTT_OK);
    assert_int_equal(pk.type, MQTT_DISCONNECT);
    assert_int_equal(parse(frame(0xc1, NULL), MAX, &pk), MQTT_E_FLAGS);
    assert_int_equal(parse(frame(0xe2, NULL), MAX, &pk), MQTT_E_FLAGS);
    body.n = 0;
    pb_u8(&body, 0);
    assert_int_equal(parse(frame(0xc0, &body), MAX, &pk), MQTT_E_MALFORMED);
    assert_int_equal(parse(frame(0xe0, &body), MAX, &pk), MQTT_E_MALFORMED);

    /* CONNACK: reserved ack flags, return codes, session present. */
    body.n = 0;
    pb_u8(&body, 1);
    pb_u8(&body, 0);
    assert_int_equal(parse(frame(0x20, &body), MAX, &pk), MQTT_OK);
    assert_true(pk.connack.session_present);
    body.b[0] = 2;
    assert_int_equal(parse(frame(0x20, &body), MAX, &pk), MQTT_E_MALFORMED);
    body.b[0] = 1;
    body.b[1] = 4;
    assert_int_equal(parse(frame(0x20, &body), MAX, &pk), MQTT_E_MALFORMED);
    body.b[0] = 0;
    body.b[1] = 6;
    assert_int_equal(parse(frame(0x20, &body), MAX, &pk), MQTT_E_MALFORMED);

    /* Reserved packet types. */
    assert_int_equal(parse(frame(0x00, NULL), MAX, &pk), MQTT_E_TYPE);
    assert_int_equal(parse(frame(0xf0, NULL), MAX, &pk), MQTT_E_TYPE);
}

/* ---- SUBSCRIBE, UNSUBSCRIBE, SUBACK -------------------------------------- */

static void
test_subscribe(void **state)
{
    static const struct {
        const char *filter;
        int rc;
    } filters[] = {
        { "sensors/+/temp", MQTT_OK }, { "#", MQTT_OK },
        { "+", MQTT_OK },              { "+/+", MQTT_OK },
        { "a/#", MQTT_OK },            { "/", MQTT_OK },
        { "+/a/#", MQTT_OK },          { "a//b", MQTT_OK },
        { "", MQTT_E_TOPIC },          { "a/b#", MQTT_E_TOPIC },
        { "a#", MQTT_E_TOPIC },        { "#/a", MQTT_E_TOPIC },
        { "a+", MQTT_E_TOPIC },        { "+a/b", MQTT_E_TOPIC },
        { "a/+b", MQTT_E_TOPIC },      { "##", MQTT_E_TOPIC },
    };
    struct mqtt_packet pk;
    struct pb body, *f;
    struct proto_str fl;
    const uint8_t *cur;
    uint8_t q, *c;
    size_t i, used;

    (void)state;
    for (i = 0; i < sizeof(filters) / sizeof(filters[0]); i++) {
        body.n = 0;
        pb_u16(&body, 9);
        pb_s(&body, filters[i].filter);
        pb_u8(&body, 1);
        assert_int_equal(parse(frame(0x82, &body), MAX, &pk), filters[i].rc);
        body.n -= 1;
        assert_int_equal(parse(frame(0xa2, &body), MAX, &pk), filters[i].rc);
    }

    /* Three filters, walked with mqtt_filter_next. */
    body.n = 0;
    pb_u16(&body, 9);
    pb_s(&body, "a/b");
    pb_u8(&body, 0);
    pb_s(&body, "c/#");
    pb_u8(&body, 1);
    pb_s(&body, "+");
    pb_u8(&body, 2);
    f = frame(0x82, &body);
    c = malloc(f->n);
    assert_non_null(c);
    memcpy(c, f->b, f->n);
    assert_int_equal(mqtt_parse(c, f->n, MAX, &pk, &used), MQTT_OK);
    assert_int_equal(pk.type, MQTT_SUBSCRIBE);
    assert_int_equal(pk.subscribe.packet_id, 9);
    assert_int_equal(pk.subscribe.n_filters, 3);
    cur = pk.subscribe.list;
    for (i = 0; mqtt_filter_next(&pk.subscribe, true, &cur, &fl, &q); i++) {
        static const char *const want[] = { "a/b", "c/#", "+" };

        assert_true(i < 3);
        assert_int_equal(fl.len, strlen(want[i]));
        assert_memory_equal(fl.p, want[i], fl.len);
        assert_int_equal(q, i);
    }
    assert_int_equal(i, 3);
    free(c);

    /* 3.8.1-1: flags 0b0010; 3.8.3-3: at least one filter; 3.8.3-4:
     * reserved QoS bits; QoS 3; packet id 0. */
    assert_int_equal(parse(frame(0x80, &body), MAX, &pk), MQTT_E_FLAGS);
    assert_int_equal(parse(frame(0x83, &body), MAX, &pk), MQTT_E_FLAGS);
    body.n = 0;
    pb_u16(&body, 9);
    assert_int_equal(parse(frame(0x82, &body), MAX, &pk), MQTT_E_MALFORMED);
    assert_int_equal(parse(frame(0xa2, &body), MAX, &pk), MQTT_E_MALFORMED);
    pb_s(&body, "a");
    pb_u8(&body, 0x04);
    assert_int_equal(parse(frame(0x82, &body), MAX, &pk), MQTT_E_MALFORMED);
    body.b[body.n - 1] = 3;
    assert_int_equal(parse(frame(0x82, &body), MAX, &pk), MQTT_E_QOS);
    body.b[body.n - 1] = 0;
    assert_int_equal(parse(frame(0x82, &body), MAX, &pk), MQTT_OK);
    body.n -= 1; /* a filter without its QoS byte */
    assert_int_equal(parse(frame(0x82, &body), MAX, &pk), MQTT_E_MALFORMED);
    body.b[0] = body.b[1] = 0;
    assert_int_equal(parse(frame(0xa2, &body), MAX, &pk), MQTT_E_PACKET_ID);

    /* UNSUBSCRIBE: flags 0b0010, filters without QoS. */
    body.n = 0;
    pb_u16(&body, 3);
    pb_s(&body, "a/+");
    pb_s(&body, "#");
    assert_int_equal(parse(frame(0xa2, &body), MAX, &pk), MQTT_OK);
    assert_int_equal(pk.type, MQTT_UNSUBSCRIBE);
    assert_int_equal(pk.subscribe.n_filters, 2);
    assert_int_equal(parse(frame(0xa0, &body), MAX, &pk), MQTT_E_FLAGS);

    /* SUBACK (what the encoder writes, parsed back elsewhere). */
    body.n = 0;
    pb_u16(&body, 3);
    pb_u8(&body, 0x80);
    pb_u8(&body, 2);
    assert_int_equal(parse(frame(0x90, &body), MAX, &pk), MQTT_OK);
    assert_int_equal(pk.suback.n_codes, 2);
    pb_u8(&body, 3);
    assert_int_equal(parse(frame(0x90, &body), MAX, &pk), MQTT_E_MALFORMED);
}

/* ---- remaining length, max_packet, NEED_MORE ----------------------------- */

static void
test_remaining_length(void **state)
{
    struct mqtt_packet pk;
    size_t used;
    /* PUBLISH headers with various length encodings. */
    static const uint8_t five[] = { 0x30, 0x80, 0x80, 0x80, 0x80, 0x01 };
    static const uint8_t four_max[] = { 0x30, 0xff, 0xff, 0xff, 0x7f };
    static const uint8_t overlong2[] = { 0x30, 0x80, 0x00 };
    static const uint8_t overlong4[] = { 0x30, 0xff, 0x80, 0x80, 0x00 };
    static const uint8_t min2[] = { 0x30, 0x80, 0x01 }; /* 128 */

    (void)state;
    /* The fifth length byte is an error once the fourth says "more". */
    assert_int_equal(mqtt_parse(five, 4, SIZE_MAX, &pk, &used),
                     MQTT_NEED_MORE);
    assert_int_equal(mqtt_parse(five, 5, SIZE_MAX, &pk, &used),
                     MQTT_E_VARINT);
    assert_int_equal(mqtt_parse(five, 6, SIZE_MAX, &pk, &used),
                     MQTT_E_VARINT);
    /* 268435455, the largest: too big for any sane max, else NEED_MORE. */
    assert_int_equal(mqtt_parse(four_max, 5, MAX, &pk, &used),
                     MQTT_E_TOOBIG);
    assert_int_equal(mqtt_parse(four_max, 5, SIZE_MAX, &pk, &used),
                     MQTT_NEED_MORE);
    assert_int_equal(mqtt_parse(four_max, 5, 268435455 + 5, &pk, &used),
                     MQTT_NEED_MORE);
    assert_int_equal(mqtt_parse(four_max, 5, 268435455 + 4, &pk, &used),
                     MQTT_E_TOOBIG);
    /* Not minimal. */
    assert_int_equal(mqtt_parse(overlong2, 3, MAX, &pk, &used),
                     MQTT_E_VARINT);
    assert_int_equal(mqtt_parse(overlong4, 5, SIZE_MAX, &pk, &used),
                     MQTT_E_VARINT);
    assert_int_equal(mqtt_parse(min2, 3, MAX, &pk, &used), MQTT_NEED_MORE);
    /* Nothing at all. */
    assert_int_equal(mqtt_parse(min2, 0, MAX, &pk, &used), MQTT_NEED_MORE);
}

static void
test_max_packet(void **state)
{
    struct mqtt_packet pk;
    struct pb body;
    size_t used;

    (void)state;
    body.n = 0;
    pb_s(&body, "t");
    while (body.n < 200)
        pb_u8(&body, 'x');
    /* 1 + 2 length bytes + 200 = 203. */
    assert_int_equal(parse(frame(0x30, &body), 203, &pk), MQTT_OK);
    assert_int_equal(pk.size, 203);
    assert_int_equal(parse(frame(0x30, &body), 202, &pk), MQTT_E_TOOBIG);
    /* Known from the header alone, before the body arrives. */
    assert_int_equal(mqtt_parse(frame(0x30, &body)->b, 3, 202, &pk, &used),
                     MQTT_E_TOOBIG);
    assert_int_equal(mqtt_parse(frame(0x30, &body)->b, 3, 203, &pk, &used),
                     MQTT_NEED_MORE);
    /* Fixed-size types: a wrong length is refused from the header too. */
    {
        static const uint8_t puback3[] = { 0x40, 0x03 };

        assert_int_equal(mqtt_parse(puback3, 2, MAX, &pk, &used),
                         MQTT_E_MALFORMED);
    }
}

/*
 * The incremental contract on a stream of packets: at every prefix of
 * each packet the result is NEED_MORE or the packet's own result, and two
 * packets back to back parse one at a time.
 */
static void
check_split(const uint8_t *p, size_t n)
{
    struct mqtt_packet all, part;
    size_t used_all = 0, used, k;
    int rc_all = mqtt_parse(p, n, MAX, &all, &used_all);

    assert_int_not_equal(rc_all, MQTT_NEED_MORE);
    for (k = 0; k <= n; k++) {
        uint8_t *c = malloc(k ? k : 1);
        int rc;

        assert_non_null(c);
        memcpy(c, p, k);
        rc = mqtt_parse(c, k, MAX, &part, &used);
        if (rc != MQTT_NEED_MORE) {
            assert_int_equal(rc, rc_all);
            if (rc == MQTT_OK) {
                assert_int_equal(k, n);
                assert_int_equal(used, used_all);
                assert_int_equal(part.type, all.type);
            }
            free(c);
            return;
        }
        free(c);
    }
    fail_msg("NEED_MORE for the whole packet");
}

static void
test_incremental(void **state)
{
    struct mqtt_packet pk;
    struct pb body, stream, *b;
    size_t used, off;
    int n;

    (void)state;
    b = connect_body("MQTT", 4, 0xc2);
    pb_s(b, "client");
    pb_s(b, "s1");
    pb_s(b, "0123456789abcdef");
    b = frame(0x10, b);
    check_split(b->b, b->n);
    stream.n = 0;
    pb_raw(&stream, b->b, b->n);

    body.n = 0;
    pb_s(&body, "sensors/s1/temp");
    pb_u16(&body, 1);
    while (body.n < 300)
        pb_u8(&body, '7');
    b = frame(0x32, &body);
    check_split(b->b, b->n);
    pb_raw(&stream, b->b, b->n);
    b = frame(0xc0, NULL);
    check_split(b->b, b->n);
    pb_raw(&stream, b->b, b->n);

    /* Errors: the same one, found at the same place or earlier. */
    b = connect_body("MQTT", 4, 0x03);
    pb_s(b, "c");
    b = frame(0x10, b);
    check_split(b->b, b->n);
    body.n = 0;
    pb_s(&body, "a/#");
    b = frame(0x30, &body);
    check_split(b->b, b->n);
    {
        static const uint8_t bad[] = { 0x30, 0x80, 0x80, 0x80, 0x80, 0x01 };

        check_split(bad, sizeof(bad));
    }

    /* The stream: one packet per call, consumed exactly. */
    for (off = 0, n = 0; off < stream.n; n++) {
        assert_int_equal(mqtt_parse(stream.b + off, stream.n - off, MAX, &pk,
                                    &used),
                         MQTT_OK);
        off += used;
    }
    assert_int_equal(n, 3);
    assert_int_equal(off, stream.n);
}

/* ---- encoders ------------------------------------------------------------ */

static void
test_encoders(void **state)
{
    struct mqtt_packet pk;
    uint8_t buf[1024], codes[3] = { 0, 1, 0x80 };
    size_t n, used, i;

    (void)state;
    memset(buf, 0xee, sizeof(buf));
    n = mqtt_encode_connack(buf, sizeof(buf), false, 0);
    assert_int_equal(n, MQTT_ACK_SIZE);
    assert_memory_equal(buf, "\x20\x02\x00\x00", 4);
    n = mqtt_encode_connack(buf, sizeof(buf), true, 0);
    assert_int_equal(mqtt_parse(buf, n, MAX, &pk, &used), MQTT_OK);
    assert_true(pk.connack.session_present);
    /* Session present never goes with a refusal (3.2.2-4). */
    n = mqtt_encode_connack(buf, sizeof(buf), true,
                            MQTT_CONNACK_NOT_AUTHORIZED);
    assert_memory_equal(buf, "\x20\x02\x00\x05", 4);
    assert_int_equal(mqtt_parse(buf, n, MAX, &pk, &used), MQTT_OK);
    assert_int_equal(pk.connack.return_code, 5);

    n = mqtt_encode_puback(buf, sizeof(buf), 0xbeef);
    assert_memory_equal(buf, "\x40\x02\xbe\xef", 4);
    n = mqtt_encode_unsuback(buf, sizeof(buf), 0x0102);
    assert_memory_equal(buf, "\xb0\x02\x01\x02", 4);
    assert_int_equal(mqtt_parse(buf, n, MAX, &pk, &used), MQTT_OK);
    assert_int_equal(pk.type, MQTT_UNSUBACK);
    n = mqtt_encode_pingresp(buf, sizeof(buf));
    assert_int_equal(n, 2);
    assert_memory_equal(buf, "\xd0\x00", 2);

    n = mqtt_encode_suback(buf, sizeof(buf), 5, codes, 3);
    assert_int_equal(n, 7);
    assert_memory_equal(buf, "\x90\x05\x00\x05\x00\x01\x80", 7);
    n = mqtt_encode_suback(buf, sizeof(buf), 5, NULL, 200);
    assert_int_equal(n, 1 + 2 + 2 + 200);
    assert_int_equal(mqtt_parse(buf, n, MAX, &pk, &used), MQTT_OK);
    assert_int_equal(pk.suback.n_codes, 200);
    for (i = 0; i < 200; i++)
        assert_int_equal(pk.suback.codes[i], MQTT_SUBACK_FAILURE);
    assert_int_equal(mqtt_encode_suback(buf, sizeof(buf), 5, NULL, 0), 0);

    /* Too small a buffer: the size, and nothing written. */
    memset(buf, 0xee, sizeof(buf));
    assert_int_equal(mqtt_encode_connack(buf, 3, false, 0), 4);
    assert_int_equal(mqtt_encode_puback(buf, 3, 1), 4);
    assert_int_equal(mqtt_encode_unsuback(buf, 0, 1), 4);
    assert_int_equal(mqtt_encode_pingresp(buf, 1), 2);
    assert_int_equal(mqtt_encode_suback(buf, 6, 1, codes, 3), 7);
    assert_int_equal(mqtt_encode_suback(NULL, 0, 1, NULL, 3), 7);
    for (i = 0; i < 8; i++)
        assert_int_equal(buf[i], 0xee);
}

static void
test_strerror(void **state)
{
    int rc, rc2;

    (void)state;
    for (rc = MQTT_E_PACKET_ID; rc <= MQTT_NEED_MORE; rc++) {
        const char *s = mqtt_strerror(rc);

        assert_true(strlen(s) > 0 && strlen(s) < 40);
        assert_string_not_equal(s, "unknown error");
        for (rc2 = MQTT_E_PACKET_ID; rc2 < rc; rc2++)
            assert_string_not_equal(s, mqtt_strerror(rc2));
    }
    assert_string_equal(mqtt_strerror(-99), "unknown error");
}

/* ---- PUBLISH to a reading ------------------------------------------------ */

/* The shortest of %.15g %.16g %.17g that reads back to exactly v. */
static void
fmt_value(char *tmp, size_t cap, double v)
{
    int prec;

    for (prec = 15; prec <= 17; prec++) {
        snprintf(tmp, cap, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
}

static void
render(char *out, size_t cap, int rc, const struct proto_line *pl)
{
    char ts[32], v[32];

    if (rc != PROTO_OK) {
        snprintf(out, cap, "err %s", proto_strerror(rc));
        return;
    }
    assert_int_equal(pl->n, 1);
    assert_int_equal(pl->fmt, PROTO_FMT_MQTT);
    if (pl->has_ts)
        snprintf(ts, sizeof(ts), "%lld", (long long)pl->ts_ns);
    else
        snprintf(ts, sizeof(ts), "-");
    fmt_value(v, sizeof(v), pl->r[0].value);
    snprintf(out, cap, "%s \"%.*s\" \"%.*s\" \"%.*s\" %s", ts,
             (int)pl->r[0].sensor.len, pl->r[0].sensor.p,
             (int)pl->r[0].quantity.len, pl->r[0].quantity.p,
             (int)pl->r[0].unit.len, pl->r[0].unit.p, v);
}

static void
test_publish_to_line(void **state)
{
    static const struct {
        const char *topic, *payload, *want;
    } cases[] = {
        /* docs/protocol.md, MQTT: the two payload forms */
        { "sensors/s1/temperature", "21.5",
          "- \"s1\" \"temperature\" \"\xc2\xb0" "C\" 21.5" },
        { "sensors/s1/temperature",
          "{\"value\": 21.5, \"unit\": \"\xc2\xb0" "C\", "
          "\"ts\": 1718100942000000000}",
          "1718100942000000000 \"s1\" \"temperature\" \"\xc2\xb0"
          "C\" 21.5" },
        { "sensors/greenhouse 2/Umidade", " 57.96\r\n",
          "- \"greenhouse 2\" \"humidity\" \"%\" 57.96" },
        { "sensors/s1/Wind", "-3e2", "- \"s1\" \"wind\" \"\" -300" },
        { "sensors/s1/temp", "{\"value\":-0.5}",
          "- \"s1\" \"temperature\" \"\xc2\xb0" "C\" -0.5" },
        { "sensors/s1/temp", "{\"value\":300,\"unit\":\"K\"}",
          "- \"s1\" \"temperature\" \"K\" 300" },
        { "sensors/s1/temp", "{\"value\":3,\"unit\":\"degC\"}",
          "- \"s1\" \"temperature\" \"\xc2\xb0" "C\" 3" },
        { "sensors/s1/temp", "{\"unit\":\"\\u00b0C\",\"value\":3}",
          "- \"s1\" \"temperature\" \"\xc2\xb0" "C\" 3" },
        { "sensors/s1/wind", "{\"value\":3,\"unit\":\"m\\/s\"}",
          "- \"s1\" \"wind\" \"m/s\" 3" },
        { "sensors/s1/x", "{\"\\u0076alue\":1}", "- \"s1\" \"x\" \"\" 1" },
        { "sensors/s1/x",
          "{\"id\":\"a\\\"b\",\"v\":[1,{\"a\":[true,false,null]}],"
          "\"value\":1e3,\"ts\":-5}",
          "-5 \"s1\" \"x\" \"\" 1000" },
        { "sensors/s1/x", "{\"value\":1,\"unit\":\"\\ud83c\\udf21\"}",
          "- \"s1\" \"x\" \"\xf0\x9f\x8c\xa1\" 1" },
        /* refused: topic */
        { "sensors/s1", "1", "err syntax error" },
        { "sensors/s1/temp/extra", "1", "err syntax error" },
        { "other/s1/temp", "1", "err syntax error" },
        { "Sensors/s1/temp", "1", "err syntax error" },
        { "sensors//temp", "1", "err bad name" },
        { "sensors/s1/", "1", "err bad name" },
        { "sensors/s\x01/temp", "1", "err nul or control byte" },
        { "sensors/s\t1/temp", "1", "err nul or control byte" },
        /* refused: numeric payload */
        { "sensors/s1/t", "", "err empty line" },
        { "sensors/s1/t", " \n", "err empty line" },
        { "sensors/s1/t", "nan", "err number out of range" },
        { "sensors/s1/t", "-Infinity", "err number out of range" },
        { "sensors/s1/t", "1e999", "err number out of range" },
        { "sensors/s1/t", "21.5 C", "err syntax error" },
        { "sensors/s1/t", "21,5", "err syntax error" },
        { "sensors/s1/t", "0x10", "err syntax error" },
        { "sensors/s1/t", "on", "err syntax error" },
        { "sensors/s1/t", "1\xff", "err invalid utf-8" },
        { "sensors/s1/t", "\x01" "1", "err nul or control byte" },
        /* refused: JSON */
        { "sensors/s1/t", "{}", "err no numeric field" },
        { "sensors/s1/t", "{\"unit\":\"C\"}", "err no numeric field" },
        { "sensors/s1/t", "{\"value\":\"21.5\"}", "err syntax error" },
        { "sensors/s1/t", "{\"value\":true}", "err syntax error" },
        { "sensors/s1/t", "{\"value\":null}", "err syntax error" },
        { "sensors/s1/t", "{\"value\":1,\"value\":2}", "err syntax error" },
        { "sensors/s1/t", "{\"value\":01}", "err syntax error" },
        { "sensors/s1/t", "{\"value\":1.}", "err syntax error" },
        { "sensors/s1/t", "{\"value\":+1}", "err syntax error" },
        { "sensors/s1/t", "{\"value\":1e999}", "err number out of range" },
        { "sensors/s1/t", "{\"value\":1,}", "err syntax error" },
        { "sensors/s1/t", "{\"value\":1} x", "err syntax error" },
        { "sensors/s1/t", "{\"value\":1", "err syntax error" },
        { "sensors/s1/t", "{'value':1}", "err syntax error" },
        { "sensors/s1/t", "{\"value\":1,\"ts\":1.5}", "err bad timestamp" },
        { "sensors/s1/t", "{\"value\":1,\"ts\":\"5\"}", "err bad timestamp" },
        { "sensors/s1/t", "{\"value\":1,\"ts\":9223372036854775807}",
          "err bad timestamp" },
        { "sensors/s1/t", "{\"value\":1,\"unit\":5}", "err syntax error" },
        { "sensors/s1/t",
          "{\"value\":1,\"unit\":\"0123456789012345678901234567890123\"}",
          "err bad name" },
        { "sensors/s1/t", "{\"value\":1,\"unit\":\"a\\nb\"}",
          "err nul or control byte" },
        { "sensors/s1/t", "{\"value\":1,\"unit\":\"\\u0000\"}",
          "err nul or control byte" },
        { "sensors/s1/t", "{\"value\":1,\"unit\":\"\\ud800\"}",
          "err invalid utf-8" },
        { "sensors/s1/t", "{\"value\":1,\"unit\":\"\\x41\"}",
          "err syntax error" },
        { "sensors/s1/t", "{\"value\":1,\"x\":\"a\tb\"}",
          "err syntax error" },
        { "sensors/s1/t",
          "{\"a\":[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]],\"value\":1}",
          "err syntax error" },
        { "sensors/s1/t",
          "{\"a\":[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]],\"value\":1}",
          "- \"s1\" \"t\" \"\" 1" },
    };
    struct mqtt_publish pub;
    char got[512];
    size_t i;
    unsigned fails = 0;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t tl = strlen(cases[i].topic), pl = strlen(cases[i].payload);
        char *t = malloc(tl + 1), *p = malloc(pl + 1);
        int rc;

        assert_true(t != NULL && p != NULL);
        memcpy(t, cases[i].topic, tl);
        memcpy(p, cases[i].payload, pl);
        memset(&pub, 0, sizeof(pub));
        pub.topic.p = t;
        pub.topic.len = tl;
        pub.payload.p = p;
        pub.payload.len = pl;
        rc = mqtt_publish_to_line(&pub, &g_line);
        render(got, sizeof(got), rc, &g_line);
        if (strcmp(got, cases[i].want) != 0) {
            print_error("case %zu: %s %s\n  want: %s\n  got:  %s\n", i,
                        cases[i].topic, cases[i].payload, cases[i].want, got);
            fails++;
        }
        if (rc == PROTO_OK) {
            /* The sensor borrows from the topic. */
            assert_true(g_line.r[0].sensor.p >= t &&
                        g_line.r[0].sensor.p < t + tl);
        }
        free(t);
        free(p);
    }
    assert_int_equal(fails, 0);
}

/* Name limits, and a payload at the size bound. */
static void
test_publish_limits(void **state)
{
    char topic[300], *payload;
    struct mqtt_publish pub;
    size_t n;

    (void)state;
    memset(&pub, 0, sizeof(pub));
    memcpy(topic, "sensors/", 8);
    memset(topic + 8, 's', 128);
    memcpy(topic + 136, "/", 1);
    memset(topic + 137, 'q', 128);
    pub.topic.p = topic;
    pub.topic.len = 265;
    pub.payload.p = "1";
    pub.payload.len = 1;
    assert_int_equal(mqtt_publish_to_line(&pub, &g_line), PROTO_OK);
    assert_int_equal(g_line.r[0].sensor.len, 128);
    assert_int_equal(g_line.r[0].quantity.len, 128);
    memset(topic + 137, 'Q', 129);
    pub.topic.len = 266;
    assert_int_equal(mqtt_publish_to_line(&pub, &g_line), PROTO_E_NAME);
    memcpy(topic, "sensors/", 8);
    memset(topic + 8, 's', 129);
    memcpy(topic + 137, "/q", 2);
    pub.topic.len = 139;
    assert_int_equal(mqtt_publish_to_line(&pub, &g_line), PROTO_E_NAME);

    /* A payload of PROTO_MAX_LINE_LIMIT bytes: blanks around a number.
     * One more byte is too long. */
    n = PROTO_MAX_LINE_LIMIT;
    payload = malloc(n + 1);
    assert_non_null(payload);
    memset(payload, ' ', n + 1);
    payload[n / 2] = '7';
    memcpy(topic, "sensors/s/Q", 11);
    pub.topic.len = 11;
    pub.payload.p = payload;
    pub.payload.len = n;
    assert_int_equal(mqtt_publish_to_line(&pub, &g_line), PROTO_OK);
    assert_true(g_line.r[0].value == 7);
    pub.payload.len = n + 1;
    assert_int_equal(mqtt_publish_to_line(&pub, &g_line), PROTO_E_TOOLONG);

    /* A JSON unit that needs unescaping, with an upper-case quantity in
     * scratch before it: both fit. */
    pub.payload.p = "{\"value\":1,\"unit\":\"\\u00e5\"}";
    pub.payload.len = strlen(pub.payload.p);
    assert_int_equal(mqtt_publish_to_line(&pub, &g_line), PROTO_OK);
    assert_int_equal(g_line.scratch_used, 1 + 2);
    assert_memory_equal(g_line.r[0].quantity.p, "q", 1);
    assert_memory_equal(g_line.r[0].unit.p, "\xc3\xa5", 2);
    free(payload);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_ok),
        cmocka_unit_test(test_connect_refusals),
        cmocka_unit_test(test_connect_malformed),
        cmocka_unit_test(test_utf8_strings),
        cmocka_unit_test(test_publish),
        cmocka_unit_test(test_acks_and_pings),
        cmocka_unit_test(test_subscribe),
        cmocka_unit_test(test_remaining_length),
        cmocka_unit_test(test_max_packet),
        cmocka_unit_test(test_incremental),
        cmocka_unit_test(test_encoders),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_publish_to_line),
        cmocka_unit_test(test_publish_limits),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
