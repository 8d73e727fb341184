/*
 * fuzz_mqtt: libFuzzer harness for the MQTT 3.1.1 codec (lib/proto/mqtt.c).
 *
 * Input: byte 0 picks the mode and the packet size limit.
 *   even: the rest is a byte stream from a client. It is parsed all at once
 *         (packet after packet, until NEED_MORE or an error), then again
 *         fed one byte at a time into a growing, exactly-sized buffer: the
 *         two must agree on every packet (result, size, type) and on the
 *         final NEED_MORE or error, which proves every split point
 *         consistent. Each parsed packet is checked against mqtt.h's
 *         contract, answered with the encoders (parsed back), and each
 *         PUBLISH mapped with mqtt_publish_to_line.
 *   odd:  the rest is "<topic>\n<payload>" for mqtt_publish_to_line alone.
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/mqtt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_PACKETS 64

struct result {
    int rc;
    size_t used;
    enum mqtt_type type;
};

static struct proto_line g_line;

static void
check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_mqtt: invariant failed: %s\n", what);
        abort();
    }
}

static int
inside(struct proto_str s, const uint8_t *p, size_t n)
{
    return s.len == 0 ||
           ((const uint8_t *)s.p >= p && (const uint8_t *)s.p + s.len <= p + n);
}

static int
clean(struct proto_str s)
{
    size_t i;

    if (s.len == 0)
        return 1;
    if (!proto_utf8_valid(s.p, s.len))
        return 0;
    for (i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];

        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

static void
check_mapping(const struct mqtt_publish *pub)
{
    int rc = mqtt_publish_to_line(pub, &g_line);
    const struct proto_reading *r = &g_line.r[0];
    size_t i;

    check(rc <= PROTO_OK && rc >= PROTO_E_TIMESTAMP, "mapping rc in enum");
    if (rc != PROTO_OK)
        return;
    check(g_line.n == 1 && g_line.fmt == PROTO_FMT_MQTT, "one reading");
    check(r->sensor.len >= 1 && r->sensor.len <= PROTO_MAX_NAME, "sensor");
    check(r->quantity.len >= 1 && r->quantity.len <= PROTO_MAX_NAME,
          "quantity");
    check(r->unit.len <= PROTO_MAX_UNIT, "unit");
    check(clean(r->sensor) && clean(r->quantity) && clean(r->unit),
          "clean names");
    check(r->sensor.p >= pub->topic.p &&
              r->sensor.p + r->sensor.len <= pub->topic.p + pub->topic.len,
          "sensor borrows from the topic");
    for (i = 0; i < r->quantity.len; i++)
        check(!(r->quantity.p[i] >= 'A' && r->quantity.p[i] <= 'Z'),
              "quantity lower-case");
    check(isfinite(r->value), "finite value");
    check(g_line.scratch_used <= PROTO_MAX_NAME + PROTO_MAX_UNIT,
          "scratch bounded");
}

/* Contract checks, and the server's answers encoded and parsed back. */
static void
check_packet(const uint8_t *p, size_t n, size_t max,
             const struct mqtt_packet *pk)
{
    uint8_t out[512];
    struct mqtt_packet back;
    size_t used, k;

    check(pk->size == n && n <= max && n >= 2, "size");
    switch (pk->type) {
    case MQTT_CONNECT: {
        const struct mqtt_connect *c = &pk->connect;

        check(c->return_code <= MQTT_CONNACK_BAD_CLIENT_ID, "connack rc");
        if (c->return_code == MQTT_CONNACK_ACCEPTED) {
            check(c->level == 4, "level 4");
            check(c->client_id.len > 0 || c->clean_session, "client id");
            check(c->has_username || !c->has_password, "password");
            check(c->has_will || (c->will_qos == 0 && !c->will_retain),
                  "will flags");
            check(c->will_qos <= 2, "will qos");
            check(inside(c->client_id, p, n) && inside(c->username, p, n) &&
                      inside(c->password, p, n) &&
                      inside(c->will_topic, p, n) &&
                      inside(c->will_message, p, n),
                  "connect slices inside");
            check((c->client_id.len == 0 ||
                   proto_utf8_valid(c->client_id.p, c->client_id.len)) &&
                      (c->username.len == 0 ||
                       proto_utf8_valid(c->username.p, c->username.len)),
                  "connect strings utf-8");
        } else if (c->return_code == MQTT_CONNACK_BAD_CLIENT_ID) {
            check(c->client_id.len == 0 && !c->clean_session,
                  "identifier rejected");
        }
        k = mqtt_encode_connack(out, sizeof(out), false, c->return_code);
        check(mqtt_parse(out, k, max, &back, &used) == MQTT_OK &&
                  back.type == MQTT_CONNACK &&
                  back.connack.return_code == c->return_code,
              "connack round trip");
        break;
    }
    case MQTT_PUBLISH: {
        const struct mqtt_publish *pub = &pk->publish;

        check(pub->qos <= 2, "qos");
        check((pub->qos == 0) == (pub->packet_id == 0), "packet id");
        check(!pub->dup || pub->qos > 0, "dup");
        check(pub->topic.len > 0 && proto_utf8_valid(pub->topic.p,
                                                     pub->topic.len),
              "topic");
        check(memchr(pub->topic.p, '+', pub->topic.len) == NULL &&
                  memchr(pub->topic.p, '#', pub->topic.len) == NULL,
              "no wildcards");
        check(inside(pub->topic, p, n) && inside(pub->payload, p, n),
              "publish slices inside");
        if (pub->qos == 1) {
            k = mqtt_encode_puback(out, sizeof(out), pub->packet_id);
            check(mqtt_parse(out, k, max, &back, &used) == MQTT_OK &&
                      back.packet_id == pub->packet_id,
                  "puback round trip");
        }
        check_mapping(pub);
        break;
    }
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE: {
        const struct mqtt_subscribe *s = &pk->subscribe;
        bool sub = pk->type == MQTT_SUBSCRIBE;
        const uint8_t *cur = s->list;
        struct proto_str f;
        uint8_t q;
        size_t count = 0;

        check(s->packet_id != 0 && s->n_filters >= 1, "subscribe");
        while (mqtt_filter_next(s, sub, &cur, &f, &q)) {
            check(f.len > 0 && inside(f, p, n), "filter");
            check(q <= 2, "filter qos");
            count++;
        }
        check(count == s->n_filters, "filter count");
        k = sub ? mqtt_encode_suback(NULL, 0, s->packet_id, NULL,
                                     s->n_filters)
                : mqtt_encode_unsuback(NULL, 0, s->packet_id);
        if (k <= sizeof(out)) {
            k = sub ? mqtt_encode_suback(out, sizeof(out), s->packet_id,
                                         NULL, s->n_filters)
                    : mqtt_encode_unsuback(out, sizeof(out), s->packet_id);
            check(mqtt_parse(out, k, SIZE_MAX, &back, &used) == MQTT_OK &&
                      used == k,
                  "suback round trip");
            if (sub)
                check(back.suback.n_codes == s->n_filters, "suback codes");
        }
        break;
    }
    case MQTT_SUBACK:
        for (k = 0; k < pk->suback.n_codes; k++)
            check(pk->suback.codes[k] <= 2 ||
                      pk->suback.codes[k] == MQTT_SUBACK_FAILURE,
                  "suback code");
        break;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
    case MQTT_UNSUBACK:
        check(pk->packet_id != 0 && n == 4, "ack");
        break;
    case MQTT_PINGREQ:
        k = mqtt_encode_pingresp(out, sizeof(out));
        check(k == 2 && mqtt_parse(out, k, max, &back, &used) == MQTT_OK,
              "pingresp");
        break;
    default:
        break;
    }
}

static void
fuzz_stream(const uint8_t *data, size_t size, size_t max)
{
    struct result all[MAX_PACKETS];
    struct mqtt_packet pk;
    size_t off = 0, n_all = 0, i, k;
    int last = MQTT_NEED_MORE;

    /* All at once. */
    while (n_all < MAX_PACKETS) {
        size_t used = 0;
        int rc = mqtt_parse(data + off, size - off, max, &pk, &used);

        check(rc <= MQTT_NEED_MORE && rc >= MQTT_E_PACKET_ID, "rc in enum");
        if (rc != MQTT_OK) {
            last = rc;
            break;
        }
        check(used >= 2 && used <= size - off, "consumed");
        check_packet(data + off, used, max, &pk);
        all[n_all].rc = rc;
        all[n_all].used = used;
        all[n_all].type = pk.type;
        n_all++;
        off += used;
    }

    /* One byte at a time, each prefix in its own exact heap block. */
    off = 0;
    for (i = 0; i <= n_all && i < MAX_PACKETS; i++) {
        int rc = MQTT_NEED_MORE;
        size_t used = 0;

        for (k = 0; off + k <= size; k++) {
            uint8_t *c = malloc(k ? k : 1);

            check(c != NULL, "malloc");
            memcpy(c, data + off, k);
            rc = mqtt_parse(c, k, max, &pk, &used);
            free(c);
            if (rc != MQTT_NEED_MORE)
                break;
        }
        if (i < n_all) {
            check(rc == MQTT_OK && used == all[i].used && k == used &&
                      pk.type == all[i].type,
                  "byte by byte == all at once (packet)");
            off += used;
        } else {
            check(rc == last, "byte by byte == all at once (end)");
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t maxes[] = { 2, 5, 64, 300, 4096, 65536, SIZE_MAX };
    size_t max;

    if (size == 0)
        return 0;
    max = maxes[(data[0] >> 1) % 7];
    if (data[0] & 1) {
        const char *p = (const char *)data + 1, *end = p + size - 1;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        struct mqtt_publish pub;
        char *t, *pl;

        memset(&pub, 0, sizeof(pub));
        pub.topic.len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        pub.payload.len = nl != NULL ? (size_t)(end - nl - 1) : 0;
        t = malloc(pub.topic.len + 1);
        pl = malloc(pub.payload.len + 1);
        check(t != NULL && pl != NULL, "malloc");
        memcpy(t, p, pub.topic.len);
        if (nl != NULL)
            memcpy(pl, nl + 1, pub.payload.len);
        pub.topic.p = t;
        pub.payload.p = pl;
        if (proto_utf8_valid(t, pub.topic.len))
            check_mapping(&pub);
        free(t);
        free(pl);
        return 0;
    }
    fuzz_stream(data + 1, size - 1, max);
    return 0;
}
