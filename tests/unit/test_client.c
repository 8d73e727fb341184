/*
 * Unit tests for sensornet-client's modules: rng, sim (random walk bounds),
 * backoff (jitter bounds), wire (line formats and reply parsing), pending
 * (ack/err accounting, peek, dropping evicted readings), timers (heap
 * order), config (command line), and client (the state machine against a
 * scripted server on a loopback socket: window, resends, keepalive, and a
 * restart that resumes from the spool). The spool itself: test_spool.c.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/backoff.h"
#include "client/client.h"
#include "client/options.h"
#include "client/pending.h"
#include "client/rng.h"
#include "client/sim.h"
#include "client/spool.h"
#include "client/timers.h"
#include "client/wire.h"
#include "util/clock.h"

/* ---- rng --------------------------------------------------------------- */

static void
test_rng_deterministic(void **state)
{
    struct rng a, b, c;
    int i;

    (void)state;
    rng_seed(&a, 42);
    rng_seed(&b, 42);
    rng_seed(&c, 43);
    for (i = 0; i < 100; i++) {
        uint64_t va = rng_next(&a);

        assert_int_equal(va, rng_next(&b));
        assert_int_not_equal(va, rng_next(&c));
    }
    assert_int_not_equal(rng_derive(1, 0), rng_derive(1, 1));
    assert_int_not_equal(rng_derive(1, 0), rng_derive(2, 0));
}

static void
test_rng_bounds(void **state)
{
    struct rng r;
    bool seen_lo = false, seen_hi = false;
    int i;

    (void)state;
    rng_seed(&r, 7);
    for (i = 0; i < 10000; i++) {
        uint64_t v = rng_upto(&r, 9);
        double d = rng_double(&r);

        assert_true(v <= 9);
        seen_lo |= v == 0;
        seen_hi |= v == 9;
        assert_true(d >= 0.0 && d < 1.0);
        assert_int_equal(rng_upto(&r, 0), 0);
    }
    assert_true(seen_lo && seen_hi);
}

/* ---- sim --------------------------------------------------------------- */

static bool
is_hundredth(double v)
{
    return fabs(v * 100.0 - round(v * 100.0)) < 1e-6;
}

static void
walk_stays_in_bounds(enum sim_kind kind, uint64_t seed)
{
    const struct sim_kind_info *k = sim_kind_info(kind);
    struct sim s;
    double prev, min = 1e9, max = -1e9;
    int i;

    sim_init(&s, k->lo, k->hi, seed);
    prev = s.value;
    assert_true(prev >= k->lo && prev <= k->hi);
    for (i = 0; i < 200000; i++) {
        double v = sim_next(&s);

        assert_true(v >= k->lo);
        assert_true(v <= k->hi);
        assert_true(is_hundredth(v));
        /* A walk, not noise: one step moves at most step (+ rounding). */
        assert_true(fabs(v - prev) <= s.step + 0.0100001);
        prev = v;
        if (v < min)
            min = v;
        if (v > max)
            max = v;
    }
    /* Reflection keeps the walk moving: it visits both ends. */
    assert_true(min < k->lo + (k->hi - k->lo) * 0.05);
    assert_true(max > k->hi - (k->hi - k->lo) * 0.05);
}

static void
test_sim_bounds(void **state)
{
    (void)state;
    walk_stays_in_bounds(SIM_TEMPERATURE, 1);
    walk_stays_in_bounds(SIM_HUMIDITY, 2);
    walk_stays_in_bounds(SIM_TEMPERATURE, UINT64_MAX);
}

static void
test_sim_reflects_at_bound(void **state)
{
    struct sim s;
    int i;

    (void)state;
    sim_init(&s, 20.0, 30.0, 5);
    for (i = 0; i < 1000; i++) {
        s.value = 30.0; /* sitting on the bound: next is inside */
        assert_true(sim_next(&s) <= 30.0);
        s.value = 20.0;
        assert_true(sim_next(&s) >= 20.0);
    }
}

static void
test_sim_seeded(void **state)
{
    struct sim a, b;
    int i;

    (void)state;
    sim_init(&a, 40.0, 70.0, 99);
    sim_init(&b, 40.0, 70.0, 99);
    for (i = 0; i < 1000; i++)
        assert_true(sim_next(&a) == sim_next(&b));
}

static void
test_sim_kinds(void **state)
{
    enum sim_kind k;
    const struct sim_kind_info *t = sim_kind_info(SIM_TEMPERATURE);
    const struct sim_kind_info *h = sim_kind_info(SIM_HUMIDITY);

    (void)state;
    assert_string_equal(t->default_id, "Sensor1");
    assert_int_equal(t->interval_ms, 2000);
    assert_true(t->lo == 20.0 && t->hi == 30.0);
    assert_string_equal(h->default_id, "Sensor2");
    assert_int_equal(h->interval_ms, 3000);
    assert_true(h->lo == 40.0 && h->hi == 70.0);
    assert_int_equal(sim_kind_parse("humidity", &k), 0);
    assert_int_equal(k, SIM_HUMIDITY);
    assert_int_equal(sim_kind_parse("pressure", &k), -EINVAL);
}

/* ---- backoff ----------------------------------------------------------- */

static void
test_backoff_bounds(void **state)
{
    struct backoff b;
    struct rng r;
    int64_t ceil_ms = BACKOFF_BASE_MS;
    int i, round;

    (void)state;
    rng_seed(&r, 3);
    for (round = 0; round < 200; round++) {
        backoff_init(&b, BACKOFF_BASE_MS, 30000);
        ceil_ms = BACKOFF_BASE_MS;
        for (i = 0; i < 40; i++) {
            int64_t d = backoff_next(&b, &r);

            assert_true(d >= 1);
            assert_true(d <= ceil_ms);
            assert_true(d <= 30000);
            ceil_ms = ceil_ms * 2 > 30000 ? 30000 : ceil_ms * 2;
        }
        assert_int_equal(b.ceil_ms, 30000);
    }
}

static void
test_backoff_jitter_spreads(void **state)
{
    struct backoff b;
    struct rng r;
    int64_t min = INT64_MAX, max = 0;
    int i;

    (void)state;
    rng_seed(&r, 11);
    backoff_init(&b, 100, 1000);
    for (i = 0; i < 6; i++)
        backoff_next(&b, &r); /* reach the cap */
    for (i = 0; i < 2000; i++) {
        int64_t d = backoff_next(&b, &r);

        if (d < min)
            min = d;
        if (d > max)
            max = d;
    }
    /* Full jitter: the whole [1, cap] range, not a narrow band. */
    assert_true(min < 100);
    assert_true(max > 900);
    assert_true(max <= 1000);
}

static void
test_backoff_reset(void **state)
{
    struct backoff b;
    struct rng r;
    int i;

    (void)state;
    rng_seed(&r, 1);
    backoff_init(&b, 100, 5000);
    for (i = 0; i < 10; i++)
        backoff_next(&b, &r);
    assert_int_equal(b.ceil_ms, 5000);
    backoff_reset(&b);
    assert_int_equal(b.attempt, 0);
    for (i = 0; i < 100; i++) {
        backoff_reset(&b);
        assert_true(backoff_next(&b, &r) <= 100);
    }
    /* A cap below the base is raised to the base. */
    backoff_init(&b, 100, 10);
    assert_true(backoff_next(&b, &r) <= 100);
    assert_int_equal(b.ceil_ms, 100);
}

/* ---- wire: formats ----------------------------------------------------- */

static void
test_wire_formats(void **state)
{
    const struct sim_kind_info *t = sim_kind_info(SIM_TEMPERATURE);
    const struct sim_kind_info *h = sim_kind_info(SIM_HUMIDITY);
    char buf[WIRE_LINE_MAX];
    size_t n;

    (void)state;
    n = wire_format_reading(WIRE_INFLUX, t, "Sensor1", 25.34,
                            INT64_C(1718100942000000001), buf, sizeof(buf));
    assert_string_equal(buf, "sensornet,sensor=Sensor1 temperature=25.34 "
                             "1718100942000000001\n");
    assert_int_equal(n, strlen(buf));
    wire_format_reading(WIRE_TEXT, t, "Sensor1", 25.3, 0, buf, sizeof(buf));
    assert_string_equal(buf, "Sensor1 - Temperatura: 25.30°C\n");
    wire_format_reading(WIRE_ORIGINAL, h, "Sensor2", 57.96, 0, buf,
                        sizeof(buf));
    assert_string_equal(buf, "Sensor2 - Umidade: 57.96%");
    wire_format_reading(WIRE_INFLUX, h, "Sensor2-7", 40, 5, buf, sizeof(buf));
    assert_string_equal(buf, "sensornet,sensor=Sensor2-7 humidity=40.00 5\n");
    /* Too small a buffer: nothing, NUL-terminated. */
    assert_int_equal(wire_format_reading(WIRE_TEXT, t, "Sensor1", 1, 0, buf,
                                         10),
                     0);
    assert_string_equal(buf, "");
}

static void
test_wire_longest_line_fits(void **state)
{
    const struct sim_kind_info *h = sim_kind_info(SIM_HUMIDITY);
    char id[WIRE_ID_MAX + 1];
    char buf[WIRE_LINE_MAX];

    (void)state;
    memset(id, 'x', WIRE_ID_MAX);
    id[WIRE_ID_MAX] = '\0';
    assert_true(wire_id_valid(id));
    assert_true(wire_format_reading(WIRE_INFLUX, h, id, 100.0, INT64_MAX,
                                    buf, sizeof(buf)) > 0);
    assert_true(wire_format_reading(WIRE_TEXT, h, id, 100.0, 0, buf,
                                    sizeof(buf)) > 0);
}

static void
test_wire_id_valid(void **state)
{
    char id[WIRE_ID_MAX + 2];

    (void)state;
    assert_true(wire_id_valid("Sensor1"));
    assert_true(wire_id_valid("sala-3.temp_1"));
    assert_true(wire_id_valid("Sensor-\xc3\xa7"));
    assert_false(wire_id_valid(""));
    assert_false(wire_id_valid("Sensor 1"));
    assert_false(wire_id_valid("a,b"));
    assert_false(wire_id_valid("a=b"));
    assert_false(wire_id_valid("a\"b"));
    assert_false(wire_id_valid("a\\b"));
    assert_false(wire_id_valid("a\tb"));
    assert_false(wire_id_valid("a\x7f"));
    memset(id, 'x', WIRE_ID_MAX + 1);
    id[WIRE_ID_MAX + 1] = '\0';
    assert_false(wire_id_valid(id));
}

static void
test_wire_format_names(void **state)
{
    enum wire_format f;

    (void)state;
    assert_int_equal(wire_format_parse("original", &f), 0);
    assert_int_equal(f, WIRE_ORIGINAL);
    assert_string_equal(wire_format_name(WIRE_INFLUX), "influx");
    assert_int_equal(wire_format_parse("json", &f), -EINVAL);
}

/* ---- wire: replies ----------------------------------------------------- */

static int
parse(const char *s, struct wire_reply *r, size_t *used)
{
    return wire_parse_reply(s, strlen(s), r, used);
}

static void
test_reply_ok(void **state)
{
    struct wire_reply r;
    size_t used;

    (void)state;
    assert_int_equal(parse("OK 17\nOK 18\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_OK);
    assert_int_equal(r.n, 17);
    assert_int_equal(used, 6);
    assert_int_equal(parse("OK 0\r\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_OK);
    assert_int_equal(r.n, 0);
    assert_int_equal(used, 6);
    assert_int_equal(parse("OK 9999999999999999999\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_OK);
    assert_int_equal(r.n, UINT64_C(9999999999999999999));
}

static void
test_reply_err(void **state)
{
    struct wire_reply r;
    size_t used;

    (void)state;
    assert_int_equal(parse("ERR 3 syntax error\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_ERR_LINE);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.reason_len, strlen("syntax error"));
    assert_memory_equal(r.reason, "syntax error", r.reason_len);
    assert_int_equal(parse("ERR 12\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_ERR_LINE);
    assert_int_equal(r.n, 12);
    assert_int_equal(r.reason_len, 0);
    assert_int_equal(parse("ERR server full\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_ERR_OTHER);
    assert_int_equal(r.reason_len, strlen("server full"));
    assert_memory_equal(r.reason, "server full", r.reason_len);
    /* Line numbers are 1-based: "ERR 0" is not about a line. */
    assert_int_equal(parse("ERR 0 x\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_ERR_OTHER);
    assert_int_equal(parse("ERR 5x bad\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_ERR_OTHER);
}

static void
test_reply_original(void **state)
{
    struct wire_reply r;
    size_t used;
    const char *full = WIRE_ORIGINAL_REPLY;
    size_t i;

    (void)state;
    assert_int_equal(parse(full, &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_ORIGINAL);
    assert_int_equal(used, strlen(full));
    /* Every proper prefix waits for more bytes. */
    for (i = 1; i < strlen(full); i++) {
        assert_int_equal(wire_parse_reply(full, i, &r, &used), WIRE_AGAIN);
        assert_int_equal(used, 0);
    }
    /* Two replies back to back (no line end between them). */
    assert_int_equal(parse(WIRE_ORIGINAL_REPLY WIRE_ORIGINAL_REPLY, &r, &used),
                     WIRE_OK);
    assert_int_equal(used, strlen(full));
    /* A server that adds a line end is fine too. */
    assert_int_equal(parse("\n" WIRE_ORIGINAL_REPLY, &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_ORIGINAL);
    assert_int_equal(used, strlen(full) + 1);
}

static void
test_reply_partial_and_blank(void **state)
{
    struct wire_reply r;
    size_t used;

    (void)state;
    assert_int_equal(parse("", &r, &used), WIRE_AGAIN);
    assert_int_equal(used, 0);
    assert_int_equal(parse("OK 1", &r, &used), WIRE_AGAIN);
    assert_int_equal(used, 0);
    assert_int_equal(parse("\r\n\n", &r, &used), WIRE_AGAIN);
    assert_int_equal(used, 3);
    assert_int_equal(parse("\n\nOK 4\n", &r, &used), WIRE_OK);
    assert_int_equal(r.n, 4);
    assert_int_equal(used, 7);
}

static void
test_reply_unknown(void **state)
{
    struct wire_reply r;
    size_t used;

    (void)state;
    assert_int_equal(parse("HELLO\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_UNKNOWN);
    assert_int_equal(parse("OK\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_UNKNOWN);
    assert_int_equal(parse("OK -1\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_UNKNOWN);
    assert_int_equal(parse("OK 12 extra\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_UNKNOWN);
    /* 20 digits overflow: refused, not wrapped. */
    assert_int_equal(parse("OK 18446744073709551616\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_UNKNOWN);
    assert_int_equal(parse("Dados X\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_UNKNOWN);
}

/* The answers to AUTH (docs/protocol.md 8), and the line itself. */
static void
test_reply_auth(void **state)
{
    struct wire_reply r;
    size_t used;
    char buf[64];

    (void)state;
    assert_int_equal(parse("AUTH OK\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_AUTH_OK);
    assert_int_equal(parse("AUTH ERR bad credentials\r\n", &r, &used),
                     WIRE_OK);
    assert_int_equal(r.type, WIRE_R_AUTH_ERR);
    assert_int_equal(r.reason_len, 15);
    assert_memory_equal(r.reason, "bad credentials", 15);
    assert_int_equal(parse("AUTH ERR\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_AUTH_ERR);
    assert_int_equal(r.reason_len, 0);
    assert_int_equal(parse("AUTH OKAY\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_UNKNOWN);
    assert_int_equal(parse("AUTH ERRX\n", &r, &used), WIRE_OK);
    assert_int_equal(r.type, WIRE_R_UNKNOWN);
    assert_int_equal(wire_format_auth("S-1", "0123456789abcdef", buf,
                                      sizeof(buf)),
                     26);
    assert_string_equal(buf, "AUTH S-1 0123456789abcdef\n");
    assert_int_equal(wire_format_auth("S-1", "0123456789abcdef", buf, 26),
                     0); /* no room for the NUL */
}

static void
test_reply_too_long(void **state)
{
    char buf[WIRE_REPLY_MAX + 8];
    struct wire_reply r;
    size_t used;

    (void)state;
    memset(buf, 'E', sizeof(buf));
    assert_int_equal(wire_parse_reply(buf, WIRE_REPLY_MAX - 1, &r, &used),
                     WIRE_AGAIN);
    assert_int_equal(wire_parse_reply(buf, WIRE_REPLY_MAX, &r, &used),
                     WIRE_E_TOOLONG);
    buf[WIRE_REPLY_MAX] = '\n';
    assert_int_equal(wire_parse_reply(buf, WIRE_REPLY_MAX + 1, &r, &used),
                     WIRE_E_TOOLONG);
    /* The longest accepted line: WIRE_REPLY_MAX bytes with its "\n". */
    buf[WIRE_REPLY_MAX - 1] = '\n';
    assert_int_equal(wire_parse_reply(buf, WIRE_REPLY_MAX, &r, &used),
                     WIRE_OK);
    assert_int_equal(used, WIRE_REPLY_MAX);
}

/* ---- pending ----------------------------------------------------------- */

static struct pending_entry
entry(int64_t i)
{
    struct pending_entry e = {
        .ts_ns = i, .value = (double)i, .seq = (uint64_t)i};

    return e;
}

static void
push_n(struct pending *pq, int64_t first, int64_t n)
{
    int64_t i;

    for (i = 0; i < n; i++) {
        struct pending_entry e = entry(first + i);

        assert_int_equal(pending_push(pq, &e), 0);
    }
}

/* Send n lines; checks the line numbers and readings handed out. */
static void
send_n(struct pending *pq, size_t n, uint64_t first_line, int64_t first_ts,
       bool resend)
{
    size_t i;

    for (i = 0; i < n; i++) {
        const struct pending_entry *e;
        uint64_t line;
        bool rs;

        e = pending_send_next(pq, &line, &rs);
        assert_non_null(e);
        assert_int_equal(line, first_line + i);
        assert_int_equal(e->ts_ns, first_ts + (int64_t)i);
        assert_int_equal(rs, resend);
    }
}

static void
test_pending_ok_cumulative(void **state)
{
    struct pending *pq = pending_new(100);
    size_t n;

    (void)state;
    assert_non_null(pq);
    push_n(pq, 1, 5);
    assert_int_equal(pending_len(pq), 5);
    assert_int_equal(pending_unsent(pq), 5);
    send_n(pq, 3, 1, 1, false);
    assert_int_equal(pending_inflight(pq), 3);
    assert_int_equal(pending_unsent(pq), 2);
    assert_int_equal(pending_ok(pq, 2, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(pending_len(pq), 3);
    assert_int_equal(pending_inflight(pq), 1);
    /* Stale and repeated counts change nothing. */
    assert_int_equal(pending_ok(pq, 2, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(pending_ok(pq, 1, &n), 0);
    assert_int_equal(n, 0);
    send_n(pq, 2, 4, 4, false);
    assert_null(pending_send_next(pq, &(uint64_t){0}, &(bool){false}));
    assert_int_equal(pending_ok(pq, 5, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(pending_len(pq), 0);
    assert_int_equal(pending_accepted(pq), 5);
    pending_destroy(pq);
}

static void
test_pending_ok_beyond_sent(void **state)
{
    struct pending *pq = pending_new(100);
    size_t n;

    (void)state;
    push_n(pq, 1, 5);
    send_n(pq, 2, 1, 1, false);
    /* The server counts 3 accepted lines of 2 sent: out of step. */
    assert_int_equal(pending_ok(pq, 3, &n), -EPROTO);
    assert_int_equal(n, 0);
    assert_int_equal(pending_len(pq), 5);
    assert_int_equal(pending_inflight(pq), 2);
    pending_destroy(pq);
}

static void
test_pending_err_middle(void **state)
{
    struct pending *pq = pending_new(100);
    struct pending_entry e;
    size_t n;

    (void)state;
    push_n(pq, 1, 4);
    send_n(pq, 4, 1, 1, false);
    /* Line 2 refused, then OK 1 (line 1), then OK 3 (lines 1, 3, 4). */
    assert_int_equal(pending_err(pq, 2, &e), 0);
    assert_int_equal(e.ts_ns, 2);
    assert_int_equal(pending_len(pq), 3);
    assert_int_equal(pending_inflight(pq), 3);
    assert_int_equal(pending_err(pq, 2, NULL), -EALREADY);
    assert_int_equal(pending_ok(pq, 1, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(pending_inflight(pq), 2);
    assert_int_equal(pending_ok(pq, 3, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(pending_len(pq), 0);
    pending_destroy(pq);
}

static void
test_pending_err_after_ok(void **state)
{
    struct pending *pq = pending_new(100);
    struct pending_entry e;
    size_t n;

    (void)state;
    push_n(pq, 1, 3);
    send_n(pq, 3, 1, 1, false);
    /* OK 1 may come before "ERR 2" (it counts no later line). */
    assert_int_equal(pending_ok(pq, 1, &n), 0);
    assert_int_equal(pending_err(pq, 2, &e), 0);
    assert_int_equal(e.ts_ns, 2);
    /* Line 1 is gone, line 4 was never sent. */
    assert_int_equal(pending_err(pq, 1, NULL), -ENOENT);
    assert_int_equal(pending_err(pq, 4, NULL), -ENOENT);
    assert_int_equal(pending_err(pq, 0, NULL), -ENOENT);
    /* OK 2 counts lines 1 and 3. */
    assert_int_equal(pending_ok(pq, 2, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(pending_len(pq), 0);
    pending_destroy(pq);
}

static void
test_pending_err_all(void **state)
{
    struct pending *pq = pending_new(100);
    size_t n;

    (void)state;
    push_n(pq, 1, 3);
    send_n(pq, 3, 1, 1, false);
    assert_int_equal(pending_err(pq, 3, NULL), 0);
    assert_int_equal(pending_err(pq, 1, NULL), 0);
    assert_int_equal(pending_err(pq, 2, NULL), 0);
    assert_int_equal(pending_len(pq), 0);
    assert_int_equal(pending_inflight(pq), 0);
    /* Nothing was accepted: "OK 1" is out of step. */
    assert_int_equal(pending_ok(pq, 1, &n), -EPROTO);
    assert_int_equal(pending_ok(pq, 0, &n), 0);
    pending_destroy(pq);
}

static void
test_pending_rewind_resends_in_order(void **state)
{
    struct pending *pq = pending_new(100);
    size_t n;

    (void)state;
    push_n(pq, 1, 6);
    send_n(pq, 5, 1, 1, false);
    assert_int_equal(pending_ok(pq, 1, &n), 0);   /* line 1 accepted */
    assert_int_equal(pending_err(pq, 3, NULL), 0); /* reading 3 refused */
    /* Connection lost: 2, 4, 5 (sent) and 6 (never sent) remain. */
    pending_rewind(pq);
    assert_int_equal(pending_len(pq), 4);
    assert_int_equal(pending_unsent(pq), 4);
    assert_int_equal(pending_inflight(pq), 0);
    assert_int_equal(pending_accepted(pq), 0);
    {
        static const int64_t want[] = {2, 4, 5, 6};
        static const bool resent[] = {true, true, true, false};
        size_t i;

        for (i = 0; i < 4; i++) {
            const struct pending_entry *e;
            uint64_t line;
            bool rs;

            e = pending_send_next(pq, &line, &rs);
            assert_non_null(e);
            assert_int_equal(line, i + 1);
            assert_int_equal(e->ts_ns, want[i]);
            assert_int_equal(rs, resent[i]);
        }
    }
    /* The new connection counts from 1 again. */
    assert_int_equal(pending_ok(pq, 4, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(pending_len(pq), 0);
    pending_destroy(pq);
}

static void
test_pending_full(void **state)
{
    struct pending *pq = pending_new(3);
    struct pending_entry e = entry(9);
    size_t n;

    (void)state;
    push_n(pq, 1, 3);
    assert_true(pending_full(pq));
    assert_int_equal(pending_push(pq, &e), -ENOBUFS);
    assert_int_equal(pending_len(pq), 3);
    send_n(pq, 2, 1, 1, false);
    /* A refused tombstone still holds its slot until it leaves. */
    assert_int_equal(pending_err(pq, 2, NULL), 0);
    assert_true(pending_full(pq));
    assert_int_equal(pending_ok(pq, 1, &n), 0); /* 1 and tombstone 2 go */
    assert_false(pending_full(pq));
    assert_int_equal(pending_push(pq, &e), 0);
    assert_int_equal(pending_len(pq), 2);
    pending_destroy(pq);
}

static void
test_pending_peek_and_drop_unsent(void **state)
{
    struct pending *pq = pending_new(8);
    size_t n;

    (void)state;
    assert_null(pending_peek(pq));
    push_n(pq, 1, 6);
    assert_int_equal(pending_peek(pq)->seq, 1);
    send_n(pq, 2, 1, 1, false);
    /* 3 and 4 lost their spool copy: unsent, they go; 1 and 2 are in
     * flight and stay, keeping their line numbers. */
    assert_int_equal(pending_drop_unsent(pq, 4), 2);
    assert_int_equal(pending_len(pq), 4);
    assert_int_equal(pending_inflight(pq), 2);
    assert_int_equal(pending_peek(pq)->seq, 1);
    send_n(pq, 1, 3, 5, false);
    assert_int_equal(pending_ok(pq, 3, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(pending_peek(pq)->seq, 6);
    assert_int_equal(pending_drop_unsent(pq, 5), 0);
    /* Again across the end of the ring (8 slots). */
    push_n(pq, 7, 5);
    send_n(pq, 1, 4, 6, false);
    assert_int_equal(pending_drop_unsent(pq, 9), 3);
    send_n(pq, 2, 5, 10, false);
    assert_int_equal(pending_ok(pq, 6, &n), 0);
    assert_int_equal(n, 3);
    assert_null(pending_peek(pq));
    assert_int_equal(pending_reserve(pq), 0);
    pending_destroy(pq);
}

static void
test_pending_new_limits(void **state)
{
    (void)state;
    errno = 0;
    assert_null(pending_new(0));
    assert_int_equal(errno, EINVAL);
    assert_null(pending_new(PENDING_MAX_LIMIT + 1));
    pending_destroy(NULL);
}

/* Growth past the first allocation with the ring wrapped, and shrinking
 * back when empty, keep the order. */
static void
test_pending_grow_wrapped(void **state)
{
    struct pending *pq = pending_new(5000);
    size_t n;

    (void)state;
    push_n(pq, 1, 50);
    send_n(pq, 40, 1, 1, false);
    assert_int_equal(pending_ok(pq, 40, &n), 0); /* head moves to 40 */
    push_n(pq, 51, 3000);                         /* wraps, then grows */
    assert_int_equal(pending_len(pq), 3010);
    send_n(pq, 3010, 41, 41, false);
    assert_int_equal(pending_ok(pq, 3050, &n), 0);
    assert_int_equal(n, 3010);
    assert_int_equal(pending_len(pq), 0);
    push_n(pq, 7000, 10);
    pending_rewind(pq);
    send_n(pq, 10, 1, 7000, false);
    pending_destroy(pq);
}

/*
 * A model check: a scripted server refuses random lines and acknowledges
 * at random moments; connections drop at random. Every reading must end up
 * accepted or refused exactly once, accepted ones in order.
 */
static void
test_pending_model(void **state)
{
    struct rng r;
    int round;

    (void)state;
    rng_seed(&r, 2024);
    for (round = 0; round < 50; round++) {
        struct pending *pq = pending_new(64);
        /* The server's view of the current connection. */
        int64_t line_ts[4096];
        bool line_bad[4096];
        uint64_t n_lines = 0, n_replied = 0, accepted = 0;
        int64_t produced = 0, last_accepted = 0;
        uint64_t n_acked = 0, n_refused = 0;
        int step;

        assert_non_null(pq);
        for (step = 0; step < 3000; step++) {
            uint64_t what = rng_upto(&r, 99);

            if (what < 30) {
                struct pending_entry e = entry(produced + 1);

                if (pending_push(pq, &e) == 0)
                    produced++;
            } else if (what < 60) {
                const struct pending_entry *e;
                uint64_t line;
                bool rs;

                e = pending_send_next(pq, &line, &rs);
                if (e != NULL) {
                    assert_true(n_lines < 4096);
                    assert_int_equal(line, n_lines + 1);
                    line_ts[n_lines] = e->ts_ns;
                    line_bad[n_lines] = rng_upto(&r, 9) == 0;
                    n_lines++;
                }
            } else if (what < 95) {
                /* Reply to the lines received so far: ERR for bad ones
                 * first, then one cumulative OK. */
                size_t n;

                while (n_replied < n_lines) {
                    if (line_bad[n_replied]) {
                        struct pending_entry e;

                        assert_int_equal(
                            pending_err(pq, n_replied + 1, &e), 0);
                        assert_int_equal(e.ts_ns, line_ts[n_replied]);
                        n_refused++;
                    } else {
                        accepted++;
                        assert_true(line_ts[n_replied] > last_accepted);
                        last_accepted = line_ts[n_replied];
                    }
                    n_replied++;
                }
                assert_int_equal(pending_ok(pq, accepted, &n), 0);
                n_acked += n;
            } else {
                /* Connection lost; replies not yet read are lost too, so
                 * the server forgets what it had not acknowledged (a new
                 * server would store them again: at-least-once). */
                pending_rewind(pq);
                n_lines = n_replied = accepted = 0;
                last_accepted = 0;
            }
            assert_int_equal((int64_t)(n_acked + n_refused +
                                       pending_len(pq)),
                             produced);
        }
        pending_destroy(pq);
    }
}

/* ---- timers ------------------------------------------------------------ */

static void
test_timers_order(void **state)
{
    enum { N = 300 };
    struct timers t;
    struct timer tm[N];
    struct rng r;
    int64_t last = INT64_MIN;
    size_t i, n = 0;

    (void)state;
    assert_int_equal(timers_init(&t, N), 0);
    memset(tm, 0, sizeof(tm));
    rng_seed(&r, 5);
    assert_null(timers_peek(&t));
    for (i = 0; i < N; i++)
        timers_set(&t, &tm[i], (int64_t)rng_upto(&r, 1000));
    /* Move some, remove some. */
    for (i = 0; i < N; i += 3)
        timers_set(&t, &tm[i], (int64_t)rng_upto(&r, 1000));
    for (i = 1; i < N; i += 7)
        timers_set(&t, &tm[i], TIMERS_NEVER);
    timers_set(&t, &tm[1], TIMERS_NEVER); /* twice: no-op */
    while (timers_peek(&t) != NULL) {
        struct timer *top = timers_peek(&t);

        assert_true(top->when >= last);
        last = top->when;
        timers_set(&t, top, TIMERS_NEVER);
        assert_int_equal(top->pos, 0);
        n++;
    }
    assert_int_equal(n, N - (N + 5) / 7);
    timers_free(&t);
}

/* ---- config ------------------------------------------------------------ */

static int
cfg(struct client_conf *c, const char *const *args)
{
    char *argv[32];
    char err[OPTIONS_ERR_LEN];
    FILE *devnull = fopen("/dev/null", "w");
    int argc = 0, rc;

    assert_non_null(devnull);
    argv[argc++] = (char *)"sensornet-client";
    while (*args != NULL)
        argv[argc++] = (char *)*args++;
    argv[argc] = NULL;
    rc = options_parse(c, argc, argv, devnull, err, sizeof(err));
    fclose(devnull);
    return rc;
}

static void
test_options_defaults(void **state)
{
    struct client_conf c;
    const char *none[] = {NULL};
    const char *hum[] = {"--kind", "humidity", NULL};

    (void)state;
    unsetenv("STATE_DIRECTORY");
    assert_int_equal(cfg(&c, none), OPTIONS_RUN);
    assert_string_equal(c.server, "127.0.0.1:5000");
    assert_int_equal(c.keepalive_ms, 30000);
    assert_string_equal(c.spool_dir, OPTIONS_SPOOL_DEFAULT);
    assert_int_equal(c.spool_max, 64 * 1024 * 1024);
    assert_string_equal(c.id, "Sensor1");
    assert_int_equal(c.interval_ns, INT64_C(2000000000));
    assert_int_equal(c.format, WIRE_INFLUX);
    assert_int_equal(c.window, 1000);
    assert_int_equal(c.max_pending, 100000);
    assert_int_equal(c.backoff_max_ms, 30000);
    assert_int_equal(c.drain_timeout_ms, 5000);
    assert_int_equal(c.sensors, 1);
    assert_int_equal(c.count, 0);
    assert_false(c.seed_set);
    assert_int_equal(cfg(&c, hum), OPTIONS_RUN);
    assert_string_equal(c.id, "Sensor2");
    assert_int_equal(c.interval_ns, INT64_C(3000000000));
}

static void
test_options_values(void **state)
{
    struct client_conf c;
    const char *args[] = {"--server", "[::1]:6000", "--id", "Sala",
                          "--interval", "0.25", "-n", "7", "--format",
                          "original", "--sensors", "3", "--window", "5",
                          "--max-pending", "9", "--backoff-max", "1.5",
                          "--drain-timeout", "0", "--seed", "12", "-q",
                          NULL};
    const char *zero[] = {"--interval", "0", NULL};

    (void)state;
    assert_int_equal(cfg(&c, args), OPTIONS_RUN);
    assert_string_equal(c.server, "[::1]:6000");
    assert_string_equal(c.id, "Sala");
    assert_int_equal(c.interval_ns, INT64_C(250000000));
    assert_int_equal(c.count, 7);
    assert_int_equal(c.format, WIRE_ORIGINAL);
    assert_int_equal(c.sensors, 3);
    assert_int_equal(c.window, 5);
    assert_int_equal(c.max_pending, 9);
    assert_int_equal(c.backoff_max_ms, 1500);
    assert_int_equal(c.drain_timeout_ms, 0);
    assert_true(c.seed_set);
    assert_int_equal(c.seed, 12);
    assert_true(c.quiet);
    assert_int_equal(cfg(&c, zero), OPTIONS_RUN);
    assert_int_equal(c.interval_ns, 0);
}

static void
test_options_spool_keepalive(void **state)
{
    struct client_conf c;
    const char *none[] = {NULL};
    const char *off[] = {"--no-spool", "--keepalive", "0", NULL};
    const char *set[] = {"--spool", "/x/y", "--spool-max", "128k",
                         "--keepalive", "2.5", NULL};
    const char *mega[] = {"--spool-max", "3M", NULL};
    const char *giga[] = {"--spool-max", "2G", NULL};
    const char *bytes[] = {"--spool-max", "70000", NULL};

    (void)state;
    /* systemd's StateDirectory: the first of several. */
    setenv("STATE_DIRECTORY", "/var/lib/a:/var/lib/b", 1);
    assert_int_equal(cfg(&c, none), OPTIONS_RUN);
    assert_string_equal(c.spool_dir, "/var/lib/a");
    setenv("STATE_DIRECTORY", "/var/lib/s", 1);
    assert_int_equal(cfg(&c, none), OPTIONS_RUN);
    assert_string_equal(c.spool_dir, "/var/lib/s");
    unsetenv("STATE_DIRECTORY");
    assert_int_equal(cfg(&c, off), OPTIONS_RUN);
    assert_null(c.spool_dir);
    assert_int_equal(c.keepalive_ms, 0);
    assert_int_equal(cfg(&c, set), OPTIONS_RUN);
    assert_string_equal(c.spool_dir, "/x/y");
    assert_int_equal(c.spool_max, 128 * 1024);
    assert_int_equal(c.keepalive_ms, 2500);
    assert_int_equal(cfg(&c, mega), OPTIONS_RUN);
    assert_int_equal(c.spool_max, 3 * 1024 * 1024);
    assert_int_equal(cfg(&c, giga), OPTIONS_RUN);
    assert_int_equal(c.spool_max, UINT64_C(2) << 30);
    assert_int_equal(cfg(&c, bytes), OPTIONS_RUN);
    assert_int_equal(c.spool_max, 70000);
}

static void
test_options_usage_errors(void **state)
{
    static const char *const bad[][4] = {
        {"--server", "localhost", NULL},
        {"--server", "host:0", NULL},
        {"--server", "host:65536", NULL},
        {"--server", ":5000", NULL},
        {"--server", "::1:5000", NULL},
        {"--kind", "pressure", NULL},
        {"--format", "json", NULL},
        {"--interval", "-1", NULL},
        {"--interval", "1e3", NULL},
        {"--interval", "nan", NULL},
        {"--count", "-3", NULL},
        {"--count", "3x", NULL},
        {"--sensors", "0", NULL},
        {"--window", "0", NULL},
        {"--max-pending", "0", NULL},
        {"--backoff-max", "0", NULL},
        {"--id", "has space", NULL},
        {"--spool-max", "1k", NULL},
        {"--spool-max", "12x", NULL},
        {"--spool-max", "2T", NULL},
        {"--spool-max", "2048G", NULL},
        {"--spool-max", "k", NULL},
        {"--keepalive", "0.05", NULL},
        {"--keepalive", "-1", NULL},
        {"--keepalive", "3601", NULL},
        {"--spool", "", NULL},
        {"--spool", "/x", "--no-spool"},
        {"--id", "", NULL},
        {"--nope", NULL},
        {"--count", NULL},
        {"extra", NULL},
    };
    struct client_conf c;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (cfg(&c, bad[i]) != OPTIONS_E_USAGE)
            fail_msg("accepted: %s %s", bad[i][0],
                     bad[i][1] ? bad[i][1] : "");
    }
}

static void
test_options_id_room_for_suffix(void **state)
{
    struct client_conf c;
    char id[WIRE_ID_MAX + 1];
    const char *one[] = {"--id", id, NULL};
    const char *many[] = {"--id", id, "--sensors", "100", NULL};

    (void)state;
    memset(id, 'a', WIRE_ID_MAX);
    id[WIRE_ID_MAX] = '\0';
    assert_int_equal(cfg(&c, one), OPTIONS_RUN);
    /* "-100" would not fit. */
    assert_int_equal(cfg(&c, many), OPTIONS_E_USAGE);
    id[WIRE_ID_MAX - 4] = '\0';
    assert_int_equal(cfg(&c, many), OPTIONS_RUN);
}

static void
test_options_help_version(void **state)
{
    struct client_conf c;
    const char *help[] = {"--help", NULL};
    const char *ver[] = {"-V", NULL};

    (void)state;
    assert_int_equal(cfg(&c, help), OPTIONS_EXIT);
    assert_int_equal(cfg(&c, ver), OPTIONS_EXIT);
}

/* ---- client: state machine against a scripted server ------------------- */

struct harness {
    struct client_conf conf;
    struct client_env env;
    struct client *c;
    int lfd;        /* listening socket of the scripted server */
    int sfd;        /* its accepted connection, or -1 */
    char spec[32];
    char in[65536]; /* bytes the server received */
    size_t in_len;
};

/* The scripted server and a conf; harness_go() starts the client. */
static void
harness_setup(struct harness *h, enum wire_format fmt, uint64_t count)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);

    memset(h, 0, sizeof(*h));
    h->sfd = -1;
    h->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(h->lfd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(h->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(h->lfd, 8), 0);
    assert_int_equal(getsockname(h->lfd, (struct sockaddr *)&sa, &len), 0);
    snprintf(h->spec, sizeof(h->spec), "127.0.0.1:%d", ntohs(sa.sin_port));

    h->conf.server = h->spec;
    h->conf.kind = SIM_TEMPERATURE;
    h->conf.id = "T";
    h->conf.interval_ns = 0;
    h->conf.count = count;
    h->conf.format = fmt;
    h->conf.sensors = 1;
    h->conf.window = 4;
    h->conf.max_pending = 100;
    h->conf.backoff_max_ms = 100;
    h->conf.ack_timeout_ms = 5000;
    h->conf.drain_timeout_ms = 1000;
    h->conf.quiet = true;
    h->env.conf = &h->conf;
    h->env.epfd = epoll_create1(EPOLL_CLOEXEC);
    assert_true(h->env.epfd >= 0);
    assert_int_equal(timers_init(&h->env.timers, 1), 0);
    client_target_init(&h->env.target, h->spec);
}

static void
harness_go(struct harness *h)
{
    h->c = client_new(&h->env, 0, "T", 1, clock_mono_ns());
    assert_non_null(h->c);
    client_start(h->c, clock_mono_ns());
}

static void
harness_init(struct harness *h, enum wire_format fmt, uint64_t count)
{
    harness_setup(h, fmt, count);
    harness_go(h);
}

static void
harness_free(struct harness *h)
{
    client_destroy(h->c);
    timers_free(&h->env.timers);
    close(h->env.epfd);
    if (h->sfd >= 0)
        close(h->sfd);
    close(h->lfd);
}

/* One turn of main.c's loop, waiting at most ms. */
static void
turn(struct harness *h, int ms)
{
    struct epoll_event evs[8];
    struct timer *tm;
    int64_t now = clock_mono_ns();
    int i, n;

    tm = timers_peek(&h->env.timers);
    if (tm != NULL && tm->when <= now)
        ms = 0;
    else if (tm != NULL && (tm->when - now) / 1000000 + 1 < ms)
        ms = (int)((tm->when - now) / 1000000 + 1);
    n = epoll_wait(h->env.epfd, evs, 8, ms);
    now = clock_mono_ns();
    for (i = 0; i < n; i++)
        client_on_io(h->c, evs[i].data.u64, evs[i].events, now);
    while ((tm = timers_peek(&h->env.timers)) != NULL && tm->when <= now)
        client_on_timer(client_from_timer(tm), now);
}

/* One turn of the client, then of the scripted server: accept the
 * connection when it comes, else read what arrived. */
static void
turn_both(struct harness *h)
{
    turn(h, 10);
    if (h->sfd < 0) {
        h->sfd = accept4(h->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    } else {
        ssize_t r = read(h->sfd, h->in + h->in_len, sizeof(h->in) - h->in_len);

        if (r > 0)
            h->in_len += (size_t)r;
    }
}

/* Run both until the server has received n lines, or fail after 5 s. */
static void
serve_until_lines(struct harness *h, size_t n)
{
    int64_t end = clock_mono_ns() + INT64_C(5000000000);

    for (;;) {
        size_t lines = 0, i;

        for (i = 0; i < h->in_len; i++)
            lines += h->in[i] == '\n';
        if (lines >= n)
            return;
        if (clock_mono_ns() > end)
            fail_msg("server got %zu of %zu lines", lines, n);
        turn_both(h);
    }
}

static void
reply(struct harness *h, const char *s)
{
    assert_int_equal(write(h->sfd, s, strlen(s)), (ssize_t)strlen(s));
}

static void
loop_until_pending(struct harness *h, size_t pending)
{
    int64_t end = clock_mono_ns() + INT64_C(5000000000);

    while (client_pending(h->c) != pending) {
        if (clock_mono_ns() > end)
            fail_msg("pending %zu, want %zu", client_pending(h->c), pending);
        turn(h, 10);
    }
}

static void
test_client_window_ok_err(void **state)
{
    struct harness h;

    (void)state;
    harness_init(&h, WIRE_INFLUX, 6);
    /* Interval 0: the window (4) fills at once, and no more. */
    serve_until_lines(&h, 4);
    turn(&h, 20);
    assert_int_equal(h.env.sent, 4);
    /* Line 2 refused, 1, 3, 4 accepted: for --count 6, three more go (one
     * makes up for the refused reading). */
    reply(&h, "ERR 2 syntax\nOK 3\n");
    loop_until_pending(&h, 3);
    assert_int_equal(h.env.refused, 1);
    assert_int_equal(h.env.acked, 3);
    serve_until_lines(&h, 7);
    reply(&h, "OK 5\n");
    loop_until_pending(&h, 1);
    assert_false(client_done(h.c));
    reply(&h, "OK 6\n");
    loop_until_pending(&h, 0);
    assert_true(client_done(h.c));
    assert_int_equal(h.env.acked, 6);
    assert_int_equal(h.env.produced, 7);
    harness_free(&h);
}

static void
test_client_resends_after_reset(void **state)
{
    struct harness h;
    char first[4096];
    size_t first_len, lines = 0, i;

    (void)state;
    harness_init(&h, WIRE_INFLUX, 4);
    serve_until_lines(&h, 4);
    reply(&h, "OK 1\n");
    loop_until_pending(&h, 3);
    /* The server vanishes: lines 2..4 must come again, in order. */
    memcpy(first, h.in, h.in_len);
    first_len = h.in_len;
    close(h.sfd);
    h.sfd = -1;
    h.in_len = 0;
    serve_until_lines(&h, 3);
    for (i = 0; i < first_len && lines < 1; i++)
        lines += first[i] == '\n';
    assert_int_equal(h.in_len, first_len - i);
    assert_memory_equal(h.in, first + i, h.in_len);
    reply(&h, "OK 3\n");
    loop_until_pending(&h, 0);
    assert_true(client_done(h.c));
    assert_int_equal(h.env.acked, 4);
    assert_int_equal(h.env.produced, 4);
    harness_free(&h);
}

static void
test_client_original_one_in_flight(void **state)
{
    struct harness h;
    int64_t end;

    (void)state;
    harness_init(&h, WIRE_ORIGINAL, 2);
    end = clock_mono_ns() + INT64_C(5000000000);
    while (h.in_len < 17) {
        assert_true(clock_mono_ns() < end);
        turn_both(&h);
    }
    /* No line end, and nothing more until the reply. */
    assert_null(memchr(h.in, '\n', h.in_len));
    assert_memory_equal(h.in, "T - Temperatura: ", 17);
    turn(&h, 50);
    assert_int_equal(h.env.sent, 1);
    reply(&h, WIRE_ORIGINAL_REPLY);
    end = clock_mono_ns() + INT64_C(5000000000);
    while (h.env.sent < 2) {
        assert_true(clock_mono_ns() < end);
        turn(&h, 10);
    }
    reply(&h, WIRE_ORIGINAL_REPLY);
    loop_until_pending(&h, 0);
    assert_true(client_done(h.c));
    assert_int_equal(h.env.acked, 2);
    harness_free(&h);
}

static void
test_client_bad_ok_reconnects(void **state)
{
    struct harness h;
    int64_t end;

    (void)state;
    harness_init(&h, WIRE_INFLUX, 2);
    serve_until_lines(&h, 2);
    /* OK for more lines than were sent: out of step, so reconnect and
     * resend rather than drop readings. */
    reply(&h, "OK 5\n");
    end = clock_mono_ns() + INT64_C(5000000000);
    while (h.env.n_connected == 1) {
        assert_true(clock_mono_ns() < end);
        turn(&h, 10);
    }
    assert_int_equal(client_pending(h.c), 2);
    assert_int_equal(h.env.acked, 0);
    close(h.sfd);
    h.sfd = -1;
    h.in_len = 0;
    serve_until_lines(&h, 2);
    reply(&h, "OK 2\n");
    loop_until_pending(&h, 0);
    assert_int_equal(h.env.acked, 2);
    harness_free(&h);
}

/* Run the client alone until pred holds, or fail after 5 s. */
static void
loop_until_connected(struct harness *h, uint32_t n)
{
    int64_t end = clock_mono_ns() + INT64_C(5000000000);

    while (h->env.n_connected != n) {
        if (clock_mono_ns() > end)
            fail_msg("connected %u, want %u", h->env.n_connected, n);
        turn(h, 10);
    }
}

/* The server drops its end and takes the next connection afresh. */
static void
server_reset(struct harness *h)
{
    close(h->sfd);
    h->sfd = -1;
    h->in_len = 0;
}

static void
test_client_keepalive(void **state)
{
    struct harness h;
    static const char want[] = "\nPING\nPING\n";

    (void)state;
    harness_setup(&h, WIRE_INFLUX, 1);
    h.conf.keepalive_ms = 300;
    harness_go(&h);
    /* The reading, then (no reply for 300 ms) a PING; a PONG keeps the
     * connection, and the next quiet period brings another PING. */
    serve_until_lines(&h, 2);
    assert_int_equal(memcmp(h.in + h.in_len - 5, "PING\n", 5), 0);
    reply(&h, "PONG\n");
    serve_until_lines(&h, 3);
    assert_non_null(memmem(h.in, h.in_len, want, sizeof(want) - 1));
    assert_int_equal(h.env.n_connected, 1);
    assert_int_equal(h.env.sent, 1); /* PINGs are not readings */
    /* No answer within another period: the connection is dead. */
    loop_until_connected(&h, 0);
    server_reset(&h);
    serve_until_lines(&h, 1);
    reply(&h, "OK 1\n");
    loop_until_pending(&h, 0);
    assert_true(client_done(h.c));
    assert_int_equal(h.env.acked, 1);
    harness_free(&h);
}

static void
test_client_no_ping_in_original(void **state)
{
    struct harness h;
    int64_t end;

    (void)state;
    harness_setup(&h, WIRE_ORIGINAL, 1);
    h.conf.keepalive_ms = 100;
    harness_go(&h);
    end = clock_mono_ns() + INT64_C(500000000);
    while (clock_mono_ns() < end)
        turn_both(&h);
    /* A line end would end the original's message mode. */
    assert_null(memchr(h.in, '\n', h.in_len));
    assert_int_equal(h.env.n_connected, 1);
    reply(&h, WIRE_ORIGINAL_REPLY);
    loop_until_pending(&h, 0);
    harness_free(&h);
}

/* The n-th line (1-based) of (p, len): its offset and length. */
static void
nth_line(const char *p, size_t len, size_t n, size_t *off, size_t *llen)
{
    size_t i, start = 0, seen = 0;

    for (i = 0; i < len; i++) {
        if (p[i] != '\n')
            continue;
        if (++seen == n) {
            *off = start;
            *llen = i + 1 - start;
            return;
        }
        start = i + 1;
    }
    fail_msg("no line %zu", n);
}

static void
rm_tree(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    char p[1024];
    struct stat st;

    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rm_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(path);
}

/* A client that stops with readings unacknowledged and a new one on the
 * same spool: the new one resends them, byte for byte, before its own. */
static void
test_client_spool_resumes_identical(void **state)
{
    struct harness h;
    char dir[512], first[4096];
    const char *base = getenv("TMPDIR");
    size_t first_len, i;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/clientspoolXXXXXX",
             base != NULL && base[0] != '\0' ? base : "/tmp");
    assert_non_null(mkdtemp(dir));
    harness_setup(&h, WIRE_INFLUX, 5);
    h.conf.spool_dir = dir;
    h.conf.spool_max = SPOOL_MAX_DEFAULT;
    harness_go(&h);
    serve_until_lines(&h, 4); /* the window */
    reply(&h, "OK 1\n");
    serve_until_lines(&h, 5);
    loop_until_pending(&h, 4);
    memcpy(first, h.in, h.in_len);
    first_len = h.in_len;
    assert_int_equal(client_spool_seq(h.c), 5);

    /* Stop (as at exit) and start a new client on the same spool. */
    client_destroy(h.c);
    assert_int_equal(h.env.resumed, 0);
    server_reset(&h);
    harness_go(&h);
    assert_int_equal(h.env.resumed, 4);
    assert_int_equal(client_pending(h.c), 4);
    serve_until_lines(&h, 4);
    for (i = 1; i <= 4; i++) {
        size_t o1, l1, o2, l2;

        nth_line(first, first_len, i + 1, &o1, &l1);
        nth_line(h.in, h.in_len, i, &o2, &l2);
        assert_int_equal(l1, l2);
        assert_memory_equal(first + o1, h.in + o2, l1);
    }
    /* --count 5 with 4 resumed: one new reading, once the window (4)
     * has room. */
    reply(&h, "OK 4\n");
    serve_until_lines(&h, 5);
    reply(&h, "OK 5\n");
    loop_until_pending(&h, 0);
    assert_true(client_done(h.c));
    assert_int_equal(client_spool_seq(h.c), 6);
    assert_int_equal(h.env.produced, 6);
    assert_int_equal(h.env.acked, 6);
    harness_free(&h);
    rm_tree(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rng_deterministic),
        cmocka_unit_test(test_rng_bounds),
        cmocka_unit_test(test_sim_bounds),
        cmocka_unit_test(test_sim_reflects_at_bound),
        cmocka_unit_test(test_sim_seeded),
        cmocka_unit_test(test_sim_kinds),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_backoff_jitter_spreads),
        cmocka_unit_test(test_backoff_reset),
        cmocka_unit_test(test_wire_formats),
        cmocka_unit_test(test_wire_longest_line_fits),
        cmocka_unit_test(test_wire_id_valid),
        cmocka_unit_test(test_wire_format_names),
        cmocka_unit_test(test_reply_ok),
        cmocka_unit_test(test_reply_err),
        cmocka_unit_test(test_reply_original),
        cmocka_unit_test(test_reply_auth),
        cmocka_unit_test(test_reply_partial_and_blank),
        cmocka_unit_test(test_reply_unknown),
        cmocka_unit_test(test_reply_too_long),
        cmocka_unit_test(test_pending_ok_cumulative),
        cmocka_unit_test(test_pending_ok_beyond_sent),
        cmocka_unit_test(test_pending_err_middle),
        cmocka_unit_test(test_pending_err_after_ok),
        cmocka_unit_test(test_pending_err_all),
        cmocka_unit_test(test_pending_rewind_resends_in_order),
        cmocka_unit_test(test_pending_full),
        cmocka_unit_test(test_pending_peek_and_drop_unsent),
        cmocka_unit_test(test_pending_new_limits),
        cmocka_unit_test(test_pending_grow_wrapped),
        cmocka_unit_test(test_pending_model),
        cmocka_unit_test(test_timers_order),
        cmocka_unit_test(test_options_defaults),
        cmocka_unit_test(test_options_values),
        cmocka_unit_test(test_options_spool_keepalive),
        cmocka_unit_test(test_options_usage_errors),
        cmocka_unit_test(test_options_id_room_for_suffix),
        cmocka_unit_test(test_options_help_version),
        cmocka_unit_test(test_client_window_ok_err),
        cmocka_unit_test(test_client_resends_after_reset),
        cmocka_unit_test(test_client_original_one_in_flight),
        cmocka_unit_test(test_client_bad_ok_reconnects),
        cmocka_unit_test(test_client_keepalive),
        cmocka_unit_test(test_client_no_ping_in_original),
        cmocka_unit_test(test_client_spool_resumes_identical),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
