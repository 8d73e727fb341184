/*
 * http_metrics: GET /metrics in the Prometheus text exposition format
 * (version 0.0.4), and GET /healthz. Both read counter snapshots only:
 * the workers' relaxed atomics (summed), the writer's stats (one mutex
 * acquisition), the presence registry's size and this thread's own
 * counters. No connection or database is touched.
 * SPDX-License-Identifier: MIT
 */
#include "server/http_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/presence.h"
#include "server/writer.h"

/* conn.c counts refusals in refused_by[-rc]: every enum proto_rc must fit
 * (a new reason raises WORKER_REFUSE_REASONS in worker.h). */
_Static_assert(-PROTO_E_FORBIDDEN < WORKER_REFUSE_REASONS,
               "refused_by[] too small for enum proto_rc");

/* A bounded text buffer: a metric line that does not fit is an error. */
struct text {
    char *p;
    size_t len, cap;
    bool full;
};

#define TEXT_MAX (256 * 1024)

static void
put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
put(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (t->full)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->full = true;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        if (t->cap * 2 > TEXT_MAX) {
            t->full = true;
            return;
        }
        {
            char *q = realloc(t->p, t->cap * 2);

            if (q == NULL) {
                t->full = true;
                return;
            }
            t->p = q;
            t->cap *= 2;
        }
    }
}

static void
head(struct text *t, const char *name, const char *type, const char *help)
{
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
counter(struct text *t, const char *name, const char *help, uint64_t v)
{
    head(t, name, "counter", help);
    put(t, "%s %" PRIu64 "\n", name, v);
}

static void
gauge(struct text *t, const char *name, const char *help, uint64_t v)
{
    head(t, name, "gauge", help);
    put(t, "%s %" PRIu64 "\n", name, v);
}

/* A refusal reason as a label value: "invalid utf-8" -> invalid_utf_8. */
static void
reason_label(int rc, char *buf, size_t len)
{
    const char *s = proto_strerror(rc);
    size_t i;

    for (i = 0; s[i] != '\0' && i + 1 < len; i++)
        buf[i] = (s[i] == ' ' || s[i] == '-') ? '_' : s[i];
    buf[i] = '\0';
}

static uint64_t
ld(const atomic_uint_fast64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

/* Every worker's counters, summed. */
struct tcp_sum {
    uint64_t conns_total, conns_refused, lines_accepted, lines_refused;
    uint64_t readings, bytes_in, http_on_sensor_port, idle_closed;
    uint64_t log_lines_dropped;
    uint64_t mqtt_connects, mqtt_connects_refused, mqtt_publish[2];
    uint64_t mqtt_pubacks, mqtt_violations, mqtt_takeovers;
    uint64_t refused_by[WORKER_REFUSE_REASONS];
};

static void
sum_workers(const struct http *h, struct tcp_sum *s)
{
    size_t i, k;

    memset(s, 0, sizeof(*s));
    for (i = 0; i < h->conf.n_workers; i++) {
        const struct worker_stats *w = worker_stats(h->conf.workers[i]);

        s->conns_total += ld(&w->conns_total);
        s->conns_refused += ld(&w->conns_refused);
        s->lines_accepted += ld(&w->lines_accepted);
        s->lines_refused += ld(&w->lines_refused);
        s->readings += ld(&w->readings);
        s->bytes_in += ld(&w->bytes_in);
        s->http_on_sensor_port += ld(&w->http_on_sensor_port);
        s->idle_closed += ld(&w->idle_closed);
        s->log_lines_dropped += ld(&w->log_lines_dropped);
        s->mqtt_connects += ld(&w->mqtt_connects);
        s->mqtt_connects_refused += ld(&w->mqtt_connects_refused);
        s->mqtt_publish[0] += ld(&w->mqtt_publish[0]);
        s->mqtt_publish[1] += ld(&w->mqtt_publish[1]);
        s->mqtt_pubacks += ld(&w->mqtt_pubacks);
        s->mqtt_violations += ld(&w->mqtt_violations);
        s->mqtt_takeovers += ld(&w->mqtt_takeovers);
        for (k = 0; k < WORKER_REFUSE_REASONS; k++)
            s->refused_by[k] += ld(&w->refused_by[k]);
    }
}

static void
histogram(struct text *t, const char *name, const char *help,
          const uint64_t *counts, const double *bounds, size_t n_bounds,
          double sum, uint64_t total)
{
    uint64_t cum = 0;
    size_t i;

    head(t, name, "histogram", help);
    for (i = 0; i < n_bounds; i++) {
        cum += counts[i];
        put(t, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, bounds[i], cum);
    }
    cum += counts[n_bounds];
    put(t, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cum);
    put(t, "%s_sum %.9g\n%s_count %" PRIu64 "\n", name, sum, name, total);
}

enum MHD_Result
http_metrics(struct http *h, struct MHD_Connection *c)
{
    struct worker_shared *sh = h->conf.sh;
    struct text t = {.cap = 16384};
    struct writer_stats ws;
    struct tcp_sum tcp;
    double bounds[WRITER_HIST_BUCKETS];
    char label[48];
    size_t i;
    int k;

    t.p = malloc(t.cap);
    if (t.p == NULL)
        return MHD_NO;
    sum_workers(h, &tcp);
    writer_get_stats(sh->writer, &ws);

    gauge(&t, "sensornet_connections", "Sensor connections open now.",
          atomic_load(&sh->n_conns));
    counter(&t, "sensornet_connections_total",
            "Sensor connections accepted.", tcp.conns_total);
    counter(&t, "sensornet_connections_refused_total",
            "Sensor connections refused over --max-connections.",
            tcp.conns_refused);
    counter(&t, "sensornet_connections_idle_closed_total",
            "Sensor connections closed after --idle-timeout.",
            tcp.idle_closed);
    counter(&t, "sensornet_received_bytes_total",
            "Bytes received on the sensor port.", tcp.bytes_in);
    counter(&t, "sensornet_mqtt_connections_total",
            "MQTT CONNECTs accepted (CONNACK 0).", tcp.mqtt_connects);
    counter(&t, "sensornet_mqtt_connections_refused_total",
            "MQTT CONNECTs refused (CONNACK 1 to 5: protocol level, "
            "client id, credentials).",
            tcp.mqtt_connects_refused);
    head(&t, "sensornet_mqtt_publish_total", "counter",
         "MQTT PUBLISH packets taken, by QoS (QoS 2 is a violation).");
    put(&t, "sensornet_mqtt_publish_total{qos=\"0\"} %" PRIu64 "\n",
        tcp.mqtt_publish[0]);
    put(&t, "sensornet_mqtt_publish_total{qos=\"1\"} %" PRIu64 "\n",
        tcp.mqtt_publish[1]);
    counter(&t, "sensornet_mqtt_puback_total",
            "MQTT PUBACKs sent, each after its reading was committed.",
            tcp.mqtt_pubacks);
    counter(&t, "sensornet_mqtt_violations_total",
            "MQTT connections closed for a protocol violation: a "
            "malformed packet, QoS 2, another sensor's topic (not a "
            "keep alive that expired).",
            tcp.mqtt_violations);
    counter(&t, "sensornet_mqtt_takeovers_total",
            "MQTT connections closed because a newer one took their "
            "client id.",
            tcp.mqtt_takeovers);
    gauge(&t, "sensornet_sensors_connected",
          "Sensors whose latest reading came over a connection open now.",
          presence_size(sh->presence));

    head(&t, "sensornet_lines_accepted_total", "counter",
         "Lines accepted, by where they came from.");
    put(&t, "sensornet_lines_accepted_total{source=\"tcp\"} %" PRIu64 "\n",
        tcp.lines_accepted);
    put(&t, "sensornet_lines_accepted_total{source=\"http\"} %" PRIu64 "\n",
        h->stats.write_lines_accepted);
    head(&t, "sensornet_lines_refused_total", "counter",
         "Lines refused, by where they came from and why.");
    for (k = 1; k < WORKER_REFUSE_REASONS; k++) {
        if (k == -PROTO_E_EMPTY)
            continue; /* blank lines are not refused */
        reason_label(-k, label, sizeof(label));
        put(&t,
            "sensornet_lines_refused_total{source=\"tcp\",reason=\"%s\"} "
            "%" PRIu64 "\n",
            label, tcp.refused_by[k]);
        put(&t,
            "sensornet_lines_refused_total{source=\"http\",reason=\"%s\"} "
            "%" PRIu64 "\n",
            label,
            (size_t)k < sizeof(h->stats.write_refused_by) /
                            sizeof(h->stats.write_refused_by[0])
                ? h->stats.write_refused_by[k]
                : 0);
    }
    head(&t, "sensornet_readings_received_total", "counter",
         "Readings parsed and handed to storage, by source.");
    put(&t, "sensornet_readings_received_total{source=\"tcp\"} %" PRIu64 "\n",
        tcp.readings);
    put(&t, "sensornet_readings_received_total{source=\"http\"} %" PRIu64
        "\n", h->stats.write_readings);

    counter(&t, "sensornet_commits_total", "Group commits that succeeded.",
            ws.commits);
    counter(&t, "sensornet_committed_readings_total",
            "Readings in successful commits (resent duplicates included).",
            ws.readings);
    counter(&t, "sensornet_storage_errors_total",
            "Failed commit attempts (each is retried).", ws.errors);
    counter(&t, "sensornet_storage_refused_readings_total",
            "Readings the store refused one by one.", ws.invalid);
    counter(&t, "sensornet_retention_deleted_total",
            "Readings deleted by --retention.", ws.retention_deleted);
    gauge(&t, "sensornet_storage_healthy",
          "1 while the last commit attempt succeeded.", ws.healthy ? 1 : 0);
    gauge(&t, "sensornet_writer_queue_batches",
          "Batches waiting in the writer's queue.", ws.queued_batches);
    for (i = 0; i + 1 < WRITER_HIST_BUCKETS; i++)
        bounds[i] = (double)writer_latency_bounds_ns[i] / 1e9;
    histogram(&t, "sensornet_commit_duration_seconds",
              "Time from a group commit's start to its data being durable "
              "(retries included).",
              ws.latency_hist, bounds, WRITER_HIST_BUCKETS - 1,
              (double)ws.latency_sum_ns / 1e9, ws.commits);
    for (i = 0; i + 1 < WRITER_HIST_BUCKETS; i++)
        bounds[i] = (double)writer_size_bounds[i];
    histogram(&t, "sensornet_commit_readings", "Readings per group commit.",
              ws.size_hist, bounds, WRITER_HIST_BUCKETS - 1,
              (double)ws.readings, ws.commits);
    counter(&t, "sensornet_log_lines_dropped_total",
            "log.txt lines dropped for lack of buffer room.",
            tcp.log_lines_dropped);
    counter(&t, "sensornet_http_on_sensor_port_total",
            "HTTP requests that reached the sensor port.",
            tcp.http_on_sensor_port);

    head(&t, "sensornet_http_requests_total", "counter",
         "HTTP API responses, by status class.");
    for (k = 1; k <= 5; k++)
        put(&t, "sensornet_http_requests_total{code=\"%dxx\"} %" PRIu64 "\n",
            k, h->stats.requests[k]);
    counter(&t, "sensornet_http_write_requests_total",
            "POST /write requests.", h->stats.write_requests);
    counter(&t, "sensornet_http_write_bytes_total",
            "Body bytes parsed by POST /write.", h->stats.write_bytes);
    counter(&t, "sensornet_http_query_errors_total",
            "API queries that failed in the database.",
            h->stats.query_errors);
    if (t.full) {
        free(t.p);
        return http_error(h, c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                          "metrics too large");
    }
    return http_reply(h, c, MHD_HTTP_OK,
                      "text/plain; version=0.0.4; charset=utf-8", t.p,
                      t.len);
}

enum MHD_Result
http_healthz(struct http *h, struct MHD_Connection *c)
{
    struct writer_stats ws;

    writer_get_stats(h->conf.sh->writer, &ws);
    if (ws.healthy)
        return http_json(h, c, MHD_HTTP_OK,
                         json_pack("{s:s}", "status", "ok"));
    return http_json(h, c, MHD_HTTP_SERVICE_UNAVAILABLE,
                     json_pack("{s:s,s:I}", "status",
                               "storage is failing: commits are being "
                               "retried and nothing new is acknowledged",
                               "errors", (json_int_t)ws.errors));
}
