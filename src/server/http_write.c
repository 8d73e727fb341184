/*
 * http_write: POST /write, InfluxDB 1.x's line-protocol write, on the same
 * storage path as the sensor port. The state diagram is in
 * http_internal.h.
 *
 * The body is parsed as it arrives, one line at a time, with
 * proto_parse_line (precision scales the timestamps), into the HTTP
 * thread's current batch; each request's acknowledgement entry rides in
 * the batches that hold its readings, exactly as a connection's does
 * (worker.c). When no batch is free, the request stops consuming its body
 * and is suspended: libmicrohttpd keeps the unread bytes and stops reading
 * the socket, so a fast sender is held back by TCP. When the body is in,
 * the request waits (suspended) until its last batch is committed and is
 * then answered: 204, or 400 naming the first refused line (the other
 * lines are written: InfluxDB's "partial write").
 * SPDX-License-Identifier: MIT
 */
#include "server/auth.h"
#include "server/http_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>


#include "server/writer.h"
#include "util/clock.h"
#include "util/log.h"

/* log.txt bytes budgeted per reading, and kept free in a batch. */
#define HTTP_LOG_PER_READING 512
#define HTTP_LOG_SLACK (64 * 1024)

/* ---- batches (as worker.c's) -------------------------------------------- */

static void
on_taken(struct batch *b, void *arg)
{
    struct http *h = arg;

    (void)b;
    atomic_fetch_sub(&h->n_queued, 1);
    http_wake(h);
}

static void
on_done(struct batch *b, void *arg)
{
    struct http *h = arg;

    pthread_mutex_lock(&h->done_mu);
    b->next = h->done;
    h->done = b;
    pthread_mutex_unlock(&h->done_mu);
    http_wake(h);
}

int
http_write_init(struct http *h)
{
    const struct server_conf *cf = h->conf.sh->conf;
    size_t cap = cf->batch_max, log_cap = 0, i;

    h->log_on = cf->log_path != NULL;
    logfile_stamp_init(&h->stamp, cf->log_utc);
    if (h->log_on)
        log_cap = cap * 160 + (size_t)PROTO_MAX_FIELDS * HTTP_LOG_PER_READING +
                  4 * (size_t)PROTO_MAX_LINE_LIMIT + 2 * HTTP_LOG_SLACK;
    h->pl = malloc(sizeof(*h->pl));
    if (h->pl == NULL)
        return -ENOMEM;
    for (i = 0; i < HTTP_BATCHES; i++) {
        struct batch *b = batch_new(cap, log_cap);

        if (b == NULL)
            return -ENOMEM;
        b->owner = h;
        b->on_taken = on_taken;
        b->on_done = on_done;
        h->all_batches[i] = b;
        h->pool[h->n_pool++] = b;
    }
    h->cur = h->pool[--h->n_pool];
    return 0;
}

void
http_write_free(struct http *h)
{
    size_t i;

    /* Batches handed back after the thread ended (writer_stop) are in
     * all_batches too; the caller frees the requests they refer to. */
    h->done = NULL;
    for (i = 0; i < HTTP_BATCHES; i++)
        batch_free(h->all_batches[i]);
    free(h->pl);
    h->pl = NULL;
}

static void
submit_cur(struct http *h)
{
    atomic_fetch_add(&h->n_queued, 1);
    writer_submit(h->conf.sh->writer, h->cur);
    h->cur = h->pool[--h->n_pool];
}

/* Room in the current batch for one line of len bytes; false when every
 * batch is in use. */
static bool
write_room(struct http *h, size_t len)
{
    size_t log_need = 0;

    if (h->log_on) {
        log_need = (size_t)PROTO_MAX_FIELDS * HTTP_LOG_PER_READING;
        if (4 * len + 256 > log_need)
            log_need = 4 * len + 256;
        log_need += HTTP_LOG_SLACK;
    }
    if (!batch_room(h->cur, PROTO_MAX_FIELDS, log_need)) {
        if (h->n_pool == 0)
            return false;
        submit_cur(h);
    }
    if (h->cur->first_ns == 0)
        h->cur->first_ns = clock_mono_ns();
    return true;
}

void
http_write_batches_back(struct http *h)
{
    struct batch *list, *next;
    struct list *it, *nx;
    size_t i;

    pthread_mutex_lock(&h->done_mu);
    list = h->done;
    h->done = NULL;
    pthread_mutex_unlock(&h->done_mu);
    for (; list != NULL; list = next) {
        next = list->next;
        for (i = 0; i < list->n_acks; i++) {
            struct http_req *r = list->acks[i].who;

            if (list->failed)
                r->failed = true;
            if (--r->refs > 0)
                continue;
            if (r->state == W_COMMITTING)
                http_resume(h, r);
            http_req_maybe_free(r);
        }
        batch_reset(list);
        h->pool[h->n_pool++] = list;
    }
    if (h->n_pool == 0)
        return;
    /* Batches are free again: the blocked requests go on. */
    for (it = h->waiting.next; it != &h->waiting; it = nx) {
        struct http_req *r = list_entry(it, struct http_req, l_wait);

        nx = it->next;
        if (r->state == W_BLOCKED)
            http_resume(h, r);
    }
}

void
http_write_tick(struct http *h)
{
    /* Requests suspended too long: answer them (oldest first). */
    while (!list_empty(&h->waiting)) {
        struct http_req *r = list_entry(h->waiting.next, struct http_req,
                                        l_wait);

        if (h->now_ms - r->wait_ms < HTTP_WRITE_WAIT_MS)
            break;
        r->abort_status = MHD_HTTP_SERVICE_UNAVAILABLE;
        r->abort_msg = "timeout: storage did not commit in time; the points "
                       "may still be written";
        http_resume(h, r);
    }
    /* Group commit: as a worker, hand the current batch over when none of
     * ours still waits in the writer's queue. */
    if (!batch_empty(h->cur) && h->n_pool > 0 &&
        atomic_load(&h->n_queued) == 0)
        submit_cur(h);
}

/* ---- lines -------------------------------------------------------------- */

static void
refuse(struct http *h, struct http_req *r, uint64_t lineno, int rc)
{
    r->n_refused++;
    if (r->err_line == 0) {
        r->err_line = lineno;
        r->err_rc = rc;
    }
    h->stats.write_lines_refused++;
    if (-rc > 0 && -rc < (int)(sizeof(h->stats.write_refused_by) /
                                sizeof(h->stats.write_refused_by[0])))
        h->stats.write_refused_by[-rc]++;
}

static void
log_reading(struct http *h, struct http_req *r,
            const struct proto_reading *rd, int64_t now_ns)
{
    size_t n, room = HTTP_LOG_PER_READING;
    char *dst = batch_log_reserve(h->cur, room);

    if (dst == NULL)
        return;
    n = (size_t)snprintf(dst, room, "%sRecebido de %s: ",
                         logfile_stamp(&h->stamp, now_ns), r->peer_log);
    n += proto_format_human(rd, dst + n, room - n - 1);
    if (n > room - 1)
        n = room - 1;
    dst[n++] = '\n';
    batch_log_commit(h->cur, n);
}

/* One complete line (p, len), its line end removed; line number
 * r->lineno + 1. False when no batch has room (nothing done: the caller
 * retries the same line later). */
static bool
write_line(struct http *h, struct http_req *r, const char *p, size_t len)
{
    struct proto_opts opts = {.ts_mult = r->params.ts_mult};
    uint64_t lineno = r->lineno + 1;
    struct proto_line *pl = h->pl;
    int64_t now_ns;
    size_t i;
    int rc;

    if (len > 0 && p[len - 1] == '\r')
        len--;
    if (len == 0)
        return true;
    if (len > h->conf.sh->conf->max_line) {
        refuse(h, r, lineno, PROTO_E_TOOLONG);
        return true;
    }
    if (!write_room(h, len))
        return false;
    rc = proto_parse_line(p, len, &opts, pl);
    if (rc == PROTO_E_EMPTY)
        return true; /* spaces or a '#' comment */
    if (rc != PROTO_OK) {
        refuse(h, r, lineno, rc);
        return true;
    }
    if (r->auth_sensor != NULL) {
        /* A token lets its sensor write its own readings only. */
        for (i = 0; i < pl->n; i++) {
            if (pl->r[i].sensor.len != r->auth_len ||
                memcmp(pl->r[i].sensor.p, r->auth_sensor, r->auth_len) != 0) {
                refuse(h, r, lineno, PROTO_E_FORBIDDEN);
                return true;
            }
        }
    }
    now_ns = clock_real_ns();
    for (i = 0; i < pl->n; i++) {
        batch_add(h->cur, &pl->r[i], pl->has_ts,
                  pl->has_ts ? pl->ts_ns : now_ns, now_ns, r->peer);
        if (h->log_on)
            log_reading(h, r, &pl->r[i], now_ns);
    }
    r->n_accepted++;
    r->n_readings += pl->n;
    if (batch_ack(h->cur, r, r->n_accepted, 0))
        r->refs++;
    h->stats.write_lines_accepted++;
    h->stats.write_readings += pl->n;
    return true;
}

/*
 * Frame and handle the lines of one chunk of the body. Returns the bytes
 * consumed: all of them, or fewer when a line found no batch room (then
 * r->state is W_BLOCKED and the rest, from that line on, stays with
 * libmicrohttpd). A line split across chunks is assembled in r->line
 * (at most max_line + 1 bytes, for a '\r').
 */
static size_t
write_chunk(struct http *h, struct http_req *r, const char *buf, size_t len)
{
    size_t max = h->conf.sh->conf->max_line + 1, off = 0;

    while (off < len) {
        const char *p = buf + off;
        const char *nl = memchr(p, '\n', len - off);
        size_t n = nl != NULL ? (size_t)(nl - p) : len - off;

        if (r->skipping) {
            /* The rest of a line already refused as too long. */
            if (nl == NULL)
                return len;
            r->skipping = false;
            r->lineno++;
            off += n + 1;
            continue;
        }
        if (r->line_len + n > max) {
            refuse(h, r, r->lineno + 1, PROTO_E_TOOLONG);
            r->line_len = 0;
            if (nl == NULL) {
                r->skipping = true;
                return len;
            }
            r->lineno++;
            off += n + 1;
            continue;
        }
        if (nl == NULL || r->line_len > 0) {
            if (r->line == NULL) {
                r->line = malloc(max);
                if (r->line == NULL) {
                    r->abort_status = MHD_HTTP_INTERNAL_SERVER_ERROR;
                    r->abort_msg = "out of memory";
                    return len;
                }
            }
            if (nl == NULL) {
                memcpy(r->line + r->line_len, p, n);
                r->line_len += n;
                return len;
            }
            /* The end of a split line: make sure it will fit before
             * taking the bytes, so that a block leaves r->line whole. */
            if (!write_room(h, r->line_len + n)) {
                r->state = W_BLOCKED;
                return off;
            }
            memcpy(r->line + r->line_len, p, n);
            (void)write_line(h, r, r->line, r->line_len + n);
            r->line_len = 0;
        } else if (!write_line(h, r, p, n)) {
            r->state = W_BLOCKED;
            return off;
        }
        r->lineno++;
        off += n + 1;
    }
    return len;
}

/* The body ended: a last line without its line end is a line too. False
 * when it found no batch room. */
static bool
write_last_line(struct http *h, struct http_req *r)
{
    if (r->skipping) {
        r->skipping = false;
        r->lineno++;
    }
    if (r->line_len == 0)
        return true;
    if (!write_line(h, r, r->line, r->line_len))
        return false;
    r->line_len = 0;
    r->lineno++;
    return true;
}

/* ---- the request -------------------------------------------------------- */

/*
 * Who is writing (docs/security.md, 4): "Authorization: Bearer
 * <sensor>:<token>" (or "Token", Telegraf's InfluxDB v2 output), or what
 * InfluxDB 1.x clients send: HTTP Basic with the sensor id as user name
 * and the token as password (Telegraf's influxdb output), else the u and p
 * query parameters. On success r->auth_sensor holds the sensor id. False
 * with errno ENOMEM when out of memory, else the credentials are missing
 * or wrong.
 */
static bool
write_authenticate(struct http *h, struct MHD_Connection *c,
                   struct http_req *r)
{
    const char *hdr = MHD_lookup_connection_value(
        c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    struct proto_str sensor = {NULL, 0}, token = {NULL, 0};
    char *user = NULL, *pass = NULL;
    bool ok;

    errno = 0;
    if (hdr != NULL && auth_parse_bearer(hdr, strlen(hdr), &sensor,
                                         &token) == 0) {
        /* sensor and token borrow from the header */
    } else if (hdr != NULL &&
               (user = MHD_basic_auth_get_username_password(c, &pass)) !=
                   NULL) {
        sensor.p = user;
        sensor.len = strlen(user);
        token.p = pass;
        token.len = pass != NULL ? strlen(pass) : 0;
    } else if (hdr == NULL) {
        sensor.p = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "u");
        token.p = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "p");
        sensor.len = sensor.p != NULL ? strlen(sensor.p) : 0;
        token.len = token.p != NULL ? strlen(token.p) : 0;
    }
    ok = sensor.p != NULL && token.p != NULL &&
         auth_check(h->conf.sh->auth, sensor.p, sensor.len, token.p,
                    token.len);
    if (ok) {
        r->auth_sensor = strndup(sensor.p, sensor.len);
        if (r->auth_sensor == NULL) {
            errno = ENOMEM;
            ok = false;
        } else {
            r->auth_len = sensor.len;
        }
    }
    if (pass != NULL) {
        OPENSSL_cleanse(pass, strlen(pass));
        MHD_free(pass);
    }
    if (user != NULL)
        MHD_free(user);
    return ok;
}

/* Headers are in: check the limits and the parameters. */
static enum MHD_Result
write_begin(struct http *h, struct MHD_Connection *c, struct http_req *r)
{
    const char *cl, *enc;
    size_t max = h->conf.max_body;

    h->stats.write_requests++;
    enc = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                      MHD_HTTP_HEADER_CONTENT_ENCODING);
    if (enc != NULL && strcasecmp(enc, "identity") != 0) {
        r->state = W_ANSWER;
        return http_error(h, c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
                          "Content-Encoding %.64s is not supported: send "
                          "the body uncompressed (Telegraf: "
                          "content_encoding = \"identity\")",
                          enc);
    }
    cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL) {
        size_t n = strspn(cl, "0123456789");

        if (n == 0 || cl[n] != '\0' || n > 19 ||
            strtoull(cl, NULL, 10) > (unsigned long long)max) {
            r->state = W_ANSWER;
            return http_error(h, c, MHD_HTTP_CONTENT_TOO_LARGE,
                              "request body over %zu bytes "
                              "(--http-max-body): send fewer points per "
                              "request",
                              max);
        }
    }
    if (http_read_params(h, c, &r->params,
                         HP_PRECISION | HP_IGNORED, true) < 0) {
        r->state = W_ANSWER;
        return MHD_YES;
    }
    if (h->conf.sh->auth != NULL) {
        if (!write_authenticate(h, c, r)) {
            r->state = W_ANSWER;
            if (r->auth_sensor == NULL && errno == ENOMEM)
                return http_error(h, c, MHD_HTTP_SERVICE_UNAVAILABLE,
                                  "out of memory");
            return http_error(h, c, MHD_HTTP_UNAUTHORIZED,
                              "this collector takes /write only with a "
                              "sensor's token: Authorization: Bearer "
                              "<sensor>:<token>, Basic, or u=<sensor>&"
                              "p=<token> (docs/security.md)");
        }
    }
    r->state = W_BODY;
    return MHD_YES;
}

static enum MHD_Result
write_answer(struct http *h, struct MHD_Connection *c, struct http_req *r)
{
    json_t *doc;

    r->state = W_ANSWER;
    if (r->too_big)
        return http_error(h, c, MHD_HTTP_CONTENT_TOO_LARGE,
                          "request body over %zu bytes (--http-max-body); "
                          "nothing after the limit was written (%" PRIu64
                          " lines before it were)",
                          h->conf.max_body, r->n_accepted);
    if (r->failed)
        return http_error(h, c, MHD_HTTP_SERVICE_UNAVAILABLE,
                          "storage failed: the points were not written");
    if (r->n_refused > 0) {
        char msg[256];

        snprintf(msg, sizeof(msg),
                 "%sline %" PRIu64 ": %s (%" PRIu64 " of %" PRIu64
                 " lines refused, the others written)",
                 r->n_accepted > 0 ? "partial write: " : "unable to parse: ",
                 r->err_line, proto_strerror(r->err_rc), r->n_refused,
                 r->n_refused + r->n_accepted);
        doc = json_pack("{s:s,s:I,s:s,s:I,s:I}", "error", msg, "line",
                        (json_int_t)r->err_line, "reason",
                        proto_strerror(r->err_rc), "refused",
                        (json_int_t)r->n_refused, "written",
                        (json_int_t)r->n_accepted);
        return http_json(h, c, MHD_HTTP_BAD_REQUEST, doc);
    }
    if (r->n_accepted == 0)
        return http_error(h, c, MHD_HTTP_BAD_REQUEST,
                          "writing requires points: the body has no line");
    return http_reply(h, c, MHD_HTTP_NO_CONTENT, NULL, NULL, 0);
}

enum MHD_Result
http_write(struct http *h, struct MHD_Connection *c, struct http_req *r,
           const char *upload, size_t *upload_size)
{
    size_t n = *upload_size, used;

    if (r->abort_status != 0) {
        if (n != 0)
            return MHD_NO; /* mid-body: all we can do is close */
        if (r->state == W_ANSWER)
            return MHD_YES;
        r->state = W_ANSWER;
        return http_error(h, c, (unsigned)r->abort_status, "%s",
                          r->abort_msg != NULL ? r->abort_msg : "aborted");
    }
    switch (r->state) {
    case W_NEW:
        return write_begin(h, c, r);
    case W_ANSWER:
        /* Answered early (limits, bad request): drop the rest. */
        *upload_size = 0;
        return MHD_YES;
    case W_COMMITTING:
        if (r->refs > 0) {
            http_suspend(h, r);
            return MHD_YES;
        }
        return write_answer(h, c, r);
    case W_BLOCKED:
        r->state = W_BODY; /* resumed: try again */
        break;
    case W_BODY:
        break;
    }
    if (n > 0) {
        if (r->too_big || r->body_len + n > h->conf.max_body) {
            /* A body without Content-Length grew past the limit: discard
             * the rest (up to HTTP_DISCARD_MAX more), then answer 413;
             * past that, close. */
            r->too_big = true;
            r->body_len += n;
            *upload_size = 0;
            return r->body_len - h->conf.max_body > HTTP_DISCARD_MAX
                       ? MHD_NO
                       : MHD_YES;
        }
        used = write_chunk(h, r, upload, n);
        r->body_len += used;
        h->stats.write_bytes += used;
        *upload_size = n - used;
        if (r->state == W_BLOCKED)
            http_suspend(h, r);
        return MHD_YES;
    }
    /* The whole body is in. */
    if (!r->too_big && !write_last_line(h, r)) {
        r->state = W_BLOCKED;
        http_suspend(h, r);
        return MHD_YES;
    }
    r->state = W_COMMITTING;
    if (r->refs > 0) {
        http_suspend(h, r);
        return MHD_YES;
    }
    return write_answer(h, c, r);
}
