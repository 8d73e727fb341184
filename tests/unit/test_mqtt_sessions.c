/*
 * test_mqtt_sessions: the registry of connected MQTT client ids
 * (src/server/mqtt_sessions.c): claiming a free id, taking one over (the
 * older session lands in its owner's mailbox, the owner is woken),
 * releasing registered, evicted and never-claimed sessions, growth past
 * the first table, and threads taking the same ids over from each other
 * (run it under ASan/TSan: lifetimes must hold).
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "server/mqtt_sessions.h"

struct box {
    struct mqtt_mailbox mbox;
    int n_wakes;
};

static void
on_wake(void *arg)
{
    struct box *b = arg;

    b->n_wakes++; /* called under the registry lock */
}

static void
box_init(struct box *b)
{
    memset(b, 0, sizeof(*b));
    b->mbox.wake = on_wake;
    b->mbox.wake_arg = b;
}

static void
test_claim_and_takeover(void **state)
{
    struct mqtt_sessions *r = mqtt_sessions_new();
    struct mqtt_session a = {0}, b = {0}, c = {0}, never = {0};
    struct box w1, w2;
    void *out[4];

    (void)state;
    assert_non_null(r);
    box_init(&w1);
    box_init(&w2);
    assert_int_equal(mqtt_sessions_claim(r, &a, &w1.mbox, &a, "id", 2), 0);
    assert_int_equal(mqtt_sessions_claim(r, &c, &w1.mbox, &c, "id2", 3), 0);
    assert_int_equal(mqtt_sessions_evicted(r, &w1.mbox, out, 4), 0);
    /* Same id from another worker: a goes to w1's mailbox. */
    assert_int_equal(mqtt_sessions_claim(r, &b, &w2.mbox, &b, "id", 2), 1);
    assert_int_equal(w1.n_wakes, 1);
    assert_int_equal(w2.n_wakes, 0);
    assert_int_equal(mqtt_sessions_evicted(r, &w2.mbox, out, 4), 0);
    assert_int_equal(mqtt_sessions_evicted(r, &w1.mbox, out, 4), 1);
    assert_ptr_equal(out[0], &a);
    assert_int_equal(mqtt_sessions_evicted(r, &w1.mbox, out, 4), 0);
    mqtt_sessions_release(r, &a);
    /* b holds "id" now: taking it over again evicts b, not a. */
    assert_int_equal(mqtt_sessions_claim(r, &a, &w1.mbox, &a, "id", 2), 1);
    assert_int_equal(w2.n_wakes, 1);
    /* b closes before its owner looked at the mailbox. */
    mqtt_sessions_release(r, &b);
    assert_int_equal(mqtt_sessions_evicted(r, &w2.mbox, out, 4), 0);
    mqtt_sessions_release(r, &never);
    mqtt_sessions_release(r, &a);
    mqtt_sessions_release(r, &c);
    /* Released ids are free again. */
    assert_int_equal(mqtt_sessions_claim(r, &b, &w2.mbox, &b, "id", 2), 0);
    mqtt_sessions_release(r, &b);
    mqtt_sessions_ref(r);
    assert_false(mqtt_sessions_unref(r));
    assert_true(mqtt_sessions_unref(r));
}

static void
test_many_ids(void **state)
{
    enum { N = 1000 };
    static struct mqtt_session s[N], t[N];
    struct mqtt_sessions *r = mqtt_sessions_new();
    struct box w;
    void *out[64];
    char id[32];
    size_t i, got = 0, n;

    (void)state;
    box_init(&w);
    memset(s, 0, sizeof(s));
    memset(t, 0, sizeof(t));
    for (i = 0; i < N; i++) {
        int len = snprintf(id, sizeof(id), "client-%zu", i);

        assert_int_equal(
            mqtt_sessions_claim(r, &s[i], &w.mbox, &s[i], id, (size_t)len),
            0);
    }
    for (i = 0; i < N; i += 2) {
        int len = snprintf(id, sizeof(id), "client-%zu", i);

        assert_int_equal(
            mqtt_sessions_claim(r, &t[i], &w.mbox, &t[i], id, (size_t)len),
            1);
    }
    do {
        n = mqtt_sessions_evicted(r, &w.mbox, out, 64);
        for (i = 0; i < n; i++) {
            struct mqtt_session *e = out[i];

            assert_true(e >= s && e < s + N && (e - s) % 2 == 0);
        }
        got += n;
    } while (n > 0);
    assert_int_equal(got, N / 2);
    for (i = 0; i < N; i++) {
        mqtt_sessions_release(r, &s[i]);
        mqtt_sessions_release(r, &t[i]);
    }
    assert_true(mqtt_sessions_unref(r));
}

/* Threads as workers: each claims ids others hold, closes what it was
 * told to close, and releases its own at random moments. */
struct worker_sim {
    struct mqtt_sessions *r;
    struct box box;
    struct mqtt_session s[8];
    int id;
};

static void *
sim_main(void *arg)
{
    struct worker_sim *ws = arg;
    void *out[8];
    char id[16];
    int round, k;

    for (round = 0; round < 2000; round++) {
        k = (round + ws->id) % 8;
        mqtt_sessions_release(ws->r, &ws->s[k]);
        snprintf(id, sizeof(id), "shared-%d", round % 5);
        assert_true(mqtt_sessions_claim(ws->r, &ws->s[k], &ws->box.mbox,
                                        &ws->s[k], id, strlen(id)) >= 0);
        while (mqtt_sessions_evicted(ws->r, &ws->box.mbox, out, 8) > 0)
            ;
    }
    for (k = 0; k < 8; k++)
        mqtt_sessions_release(ws->r, &ws->s[k]);
    return NULL;
}

static void
test_threads(void **state)
{
    static struct worker_sim ws[4];
    struct mqtt_sessions *r = mqtt_sessions_new();
    pthread_t th[4];
    int i;

    (void)state;
    memset(ws, 0, sizeof(ws));
    for (i = 0; i < 4; i++) {
        ws[i].r = r;
        ws[i].id = i;
        box_init(&ws[i].box);
        assert_int_equal(pthread_create(&th[i], NULL, sim_main, &ws[i]), 0);
    }
    for (i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_true(mqtt_sessions_unref(r));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_claim_and_takeover),
        cmocka_unit_test(test_many_ids),
        cmocka_unit_test(test_threads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
