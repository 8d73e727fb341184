/*
 * http: the HTTP thread (see http.h): its event loop, libmicrohttpd in
 * external epoll mode, routing, responses, the read handle, and the
 * orderly stop.
 *
 * Driving libmicrohttpd from our loop (the integration its maintainer
 * describes): MHD's epoll fd is registered on our loop; MHD_run() runs
 * when it is readable and whenever the deadline from MHD_get_timeout()
 * has passed (that timeout is 0 while MHD holds data it has not processed,
 * such as a resumed connection's). The loop's wait never outlasts it.
 *
 * Stopping: http_stop() sets a flag and wakes the loop. The loop stops
 * accepting (MHD_quiesce_daemon), lets suspended /write requests finish
 * until the writer's shutdown timeout, answers those still waiting 503,
 * gives the answers a moment to go out, and ends. http_join() then stops
 * the daemon, which closes every connection.
 * SPDX-License-Identifier: MIT
 */
#include "server/http_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "util/clock.h"
#include "util/file.h"
#include "util/log.h"

#define MAX_EVENTS 64
/* After the drain, how long answers get to go out before the stop. */
#define HTTP_FLUSH_MS 200

static const char json_ctype[] = "application/json; charset=utf-8";

/* ---- responses ---------------------------------------------------------- */

static void
count_status(struct http *h, unsigned status)
{
    unsigned cls = status / 100;

    if (cls >= 1 && cls <= 5)
        h->stats.requests[cls]++;
}

enum MHD_Result
http_reply_hdrs(struct http *h, struct MHD_Connection *c, unsigned status,
                const char *type, char *body, size_t len,
                const char *const *hdrs, size_t n)
{
    struct MHD_Response *resp;
    enum MHD_Result ok;
    size_t i;

    resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(body);
        return MHD_NO;
    }
    if (type != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    for (i = 0; i < n; i++)
        MHD_add_response_header(resp, hdrs[2 * i], hdrs[2 * i + 1]);
    ok = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    if (ok == MHD_YES)
        count_status(h, status);
    return ok;
}

enum MHD_Result
http_reply(struct http *h, struct MHD_Connection *c, unsigned status,
           const char *type, char *body, size_t len)
{
    return http_reply_hdrs(h, c, status, type, body, len, NULL, 0);
}

enum MHD_Result
http_json(struct http *h, struct MHD_Connection *c, unsigned status,
          json_t *doc)
{
    char *text;
    size_t len;

    if (doc == NULL)
        return MHD_NO;
    /* Values with 15 significant digits, as log.txt shows them. */
    text = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(doc);
    if (text == NULL)
        return MHD_NO;
    len = strlen(text);
    /* jansson allocates with malloc (we never change its allocator), so
     * libmicrohttpd may free() the text. */
    text[len] = '\n';
    return http_reply(h, c, status, json_ctype, text, len + 1);
}

enum MHD_Result
http_error(struct http *h, struct MHD_Connection *c, unsigned status,
           const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return http_json(h, c, status, json_pack("{s:s}", "error", msg));
}

static enum MHD_Result
method_not_allowed(struct http *h, struct MHD_Connection *c,
                   const char *allow)
{
    static const char fmt[] = "{\"error\":\"method not allowed: use %s\"}\n";
    const char *hdrs[2] = {MHD_HTTP_HEADER_ALLOW, allow};
    char *body;
    int n = snprintf(NULL, 0, fmt, allow);

    body = malloc((size_t)n + 1);
    if (body == NULL)
        return MHD_NO;
    snprintf(body, (size_t)n + 1, fmt, allow);
    return http_reply_hdrs(h, c, MHD_HTTP_METHOD_NOT_ALLOWED, json_ctype, body,
                           (size_t)n, hdrs, 1);
}

/* ---- query parameters --------------------------------------------------- */

struct params_ctx {
    struct http_params *hp;
    int64_t now_ns;
    int rc;
    char err[HTTP_ERR_LEN];
};

static enum MHD_Result
param_it(void *cls, enum MHD_ValueKind kind, const char *key,
         const char *value)
{
    struct params_ctx *pc = cls;

    (void)kind;
    pc->rc = http_params_set(pc->hp, key, value, pc->now_ns, pc->err,
                             sizeof(pc->err));
    return pc->rc == 0 ? MHD_YES : MHD_NO;
}

int
http_read_params(struct http *h, struct MHD_Connection *c,
                 struct http_params *hp, unsigned allowed, bool lenient)
{
    struct params_ctx pc = {.hp = hp, .now_ns = clock_real_ns()};

    http_params_init(hp, allowed, lenient);
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, param_it, &pc);
    if (pc.rc == 0)
        pc.rc = http_params_finish(hp, pc.now_ns, pc.err, sizeof(pc.err));
    if (pc.rc == 0)
        return 0;
    http_error(h, c, MHD_HTTP_BAD_REQUEST, "%s", pc.err);
    return -1;
}

/* ---- the read handle ---------------------------------------------------- */

struct store *
http_store(struct http *h)
{
    int why = 0;

    if (h->st != NULL)
        return h->st;
    if (clock_mono_ms() < h->st_retry_ms)
        return NULL;
    h->st = store_open(&h->conf.store, h->st_err, &why);
    if (h->st == NULL) {
        h->st_retry_ms = clock_mono_ms() + HTTP_STORE_RETRY_MS;
        log_warn("HTTP API: cannot open the database for reading: %s",
                 h->st_err);
    }
    return h->st;
}

enum MHD_Result
http_store_error(struct http *h, struct MHD_Connection *c, int rc)
{
    char msg[STORE_ERR_LEN];

    if (h->st == NULL)
        return http_error(h, c, MHD_HTTP_SERVICE_UNAVAILABLE,
                          "database not available: %s", h->st_err);
    snprintf(msg, sizeof(msg), "%s", store_errmsg(h->st));
    if (rc == STORE_E_INVAL)
        return http_error(h, c, MHD_HTTP_BAD_REQUEST, "%s", msg);
    h->stats.query_errors++;
    log_warn("HTTP API: query failed: %s", msg);
    if (rc == STORE_E_CORRUPT || rc == STORE_E_VERSION) {
        /* Not something a retry on this handle fixes (a newer collector
         * may have migrated the schema): open it again next time. */
        store_close(h->st);
        h->st = NULL;
        snprintf(h->st_err, sizeof(h->st_err), "%s", msg);
    }
    return http_error(h, c, MHD_HTTP_SERVICE_UNAVAILABLE, "database: %s",
                      msg);
}

/* ---- suspend and resume ------------------------------------------------- */

void
http_suspend(struct http *h, struct http_req *r)
{
    if (r->suspended)
        return;
    MHD_suspend_connection(r->conn);
    r->suspended = true;
    r->wait_ms = clock_mono_ms();
    list_add_tail(&h->waiting, &r->l_wait);
}

void
http_resume(struct http *h, struct http_req *r)
{
    if (!r->suspended)
        return;
    list_del(&r->l_wait);
    r->suspended = false;
    if (h->mhd_stopped)
        return;
    MHD_resume_connection(r->conn);
    h->mhd_due_ms = 0; /* MHD must run before the loop waits again */
}

void
http_req_maybe_free(struct http_req *r)
{
    if (!r->mhd_done || r->refs > 0)
        return;
    list_del(&r->l_all);
    free(r->line);
    free(r->auth_sensor);
    free(r);
}

static struct http_req *
req_new(struct http *h, struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci;
    struct http_req *r = calloc(1, sizeof(*r));
    char host[NET_HOST_LEN];
    int port = 0;

    if (r == NULL)
        return NULL;
    r->h = h;
    r->conn = c;
    list_init(&r->l_wait);
    list_add_tail(&h->reqs, &r->l_all);
    ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci != NULL && ci->client_addr != NULL) {
        net_addr_str(ci->client_addr, r->peer, sizeof(r->peer));
        net_addr_host(ci->client_addr, host, sizeof(host), &port);
        snprintf(r->peer_log, sizeof(r->peer_log), "('%s', %d)", host, port);
    } else {
        snprintf(r->peer, sizeof(r->peer), "?");
        snprintf(r->peer_log, sizeof(r->peer_log), "('?', 0)");
    }
    return r;
}

/* ---- the dashboard's files ---------------------------------------------- */

static uint64_t
fnv1a(const unsigned char *p, size_t len)
{
    uint64_t v = 1469598103934665603ULL;
    size_t i;

    for (i = 0; i < len; i++)
        v = (v ^ p[i]) * 1099511628211ULL;
    return v;
}

static enum MHD_Result
serve_asset(struct http *h, struct MHD_Connection *c, const char *url)
{
    /* Everything the page loads comes from this server. */
    static const char csp[] =
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'";
    const struct http_asset *a = NULL;
    struct MHD_Response *resp;
    const char *inm;
    char etag[32];
    enum MHD_Result ok;
    unsigned status = MHD_HTTP_OK;
    size_t i;

    if (strcmp(url, "/") == 0)
        url = "/index.html";
    for (i = 0; i < http_n_assets; i++) {
        if (strcmp(url, http_assets[i].path) == 0) {
            a = &http_assets[i];
            break;
        }
    }
    if (a == NULL)
        return http_error(h, c, MHD_HTTP_NOT_FOUND, "not found: %.200s",
                          url);
    snprintf(etag, sizeof(etag), "\"%016llx\"",
             (unsigned long long)h->etags[i]);
    inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                      MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (inm != NULL && strcmp(inm, etag) == 0) {
        status = MHD_HTTP_NOT_MODIFIED;
        resp = MHD_create_response_from_buffer(0, NULL,
                                               MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer(a->len, (void *)a->data,
                                               MHD_RESPMEM_PERSISTENT);
    }
    if (resp == NULL)
        return MHD_NO;
    if (status == MHD_HTTP_OK)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, a->type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
    /* Revalidate each time: a new binary serves new files at once. */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Content-Security-Policy", csp);
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    ok = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    if (ok == MHD_YES)
        count_status(h, status);
    return ok;
}

/* ---- routing ------------------------------------------------------------ */

static bool
is_get(const char *method)
{
    return strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
           strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
}

/* InfluxDB clients check /ping before writing. */
static enum MHD_Result
ping(struct http *h, struct MHD_Connection *c)
{
    static const char *const hdrs[] = {"X-Influxdb-Version",
                                       "1.8-compatible (sensornet)"};

    return http_reply_hdrs(h, c, MHD_HTTP_NO_CONTENT, NULL, NULL, 0, hdrs,
                           1);
}

/* ---- HTTPS -------------------------------------------------------------- */

/* Largest PEM file read for libmicrohttpd (a chain of a few certificates,
 * or a bundle of CAs, is far smaller). */
#define HTTP_PEM_MAX (1u << 20)
/* TLS 1.2 at least, as on the sensor port (tls.c). */
#define HTTP_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

/* Read a whole PEM file, NUL-ended, into *out. 0 or -1 with err set. */
static int
read_pem(const char *what, const char *path, char **out, size_t *out_len,
         char *err, size_t err_len)
{
    struct stat st;
    size_t got = 0;
    char *buf;
    int rc, fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(err, err_len, "%s %s: %s", what, path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode) || st.st_size <= 0 ||
        (uint64_t)st.st_size > HTTP_PEM_MAX) {
        snprintf(err, err_len, "%s %s: not a file of 1 byte to %u KiB",
                 what, path, HTTP_PEM_MAX / 1024);
        close(fd);
        return -1;
    }
    rc = file_read_all(fd, HTTP_PEM_MAX, &buf, &got);
    close(fd);
    if (rc < 0) {
        snprintf(err, err_len, "%s %s: %s", what, path, strerror(-rc));
        return -1;
    }
    *out = buf;
    *out_len = got;
    return 0;
}

/* With --tls-cert, the same certificate and key as the sensor port (the
 * collector's TLS context has checked them already). */
static int
https_load(struct http *h, char *err, size_t err_len)
{
    const struct server_conf *cf = h->conf.sh->conf;
    size_t len;

    if (cf->tls_cert == NULL)
        return 0;
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        snprintf(err, err_len, "this libmicrohttpd has no TLS support");
        return -1;
    }
    if (read_pem("certificate", cf->tls_cert, &h->tls_cert_pem, &len, err,
                 err_len) < 0 ||
        read_pem("key", cf->tls_key, &h->tls_key_pem, &h->tls_key_len, err,
                 err_len) < 0)
        return -1;
    if (cf->tls_ca != NULL) {
        if (read_pem("CA file", cf->tls_ca, &h->tls_ca_pem, &len, err,
                     err_len) < 0)
            return -1;
        h->tls_verify = true;
    }
    return 0;
}

static void
https_free(struct http *h)
{
    if (h->tls_key_pem != NULL)
        explicit_bzero(h->tls_key_pem, h->tls_key_len);
    free(h->tls_key_pem);
    free(h->tls_cert_pem);
    free(h->tls_ca_pem);
}

/*
 * --tls-ca: libmicrohttpd only *asks* GnuTLS for a client certificate
 * (GNUTLS_CERT_REQUEST) and leaves the check to the application, so every
 * request checks that one was sent and that it verifies against the CAs
 * given (gnutls_certificate_verify_peers2, chain and dates).
 */
static bool
https_client_ok(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci;
    unsigned int status = 0;

    ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (ci == NULL || ci->tls_session == NULL)
        return false;
    if (gnutls_certificate_verify_peers2((gnutls_session_t)ci->tls_session,
                                         &status) != GNUTLS_E_SUCCESS)
        return false;
    return status == 0;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url,
           const char *method, const char *version, const char *upload,
           size_t *upload_size, void **con_cls)
{
    struct http *h = cls;
    struct http_req *r = *con_cls;

    (void)version;
    h->now_ms = clock_mono_ms();
    if (r == NULL && h->tls_verify && !https_client_ok(c)) {
        uint64_t suppressed;

        if (log_ratelimit(&h->tls_rl, h->now_ms, 10000, &suppressed))
            log_warn("HTTPS: a request without a verified client "
                     "certificate refused (403)");
        return http_error(h, c, MHD_HTTP_FORBIDDEN,
                          "a client certificate signed by the collector's "
                          "--tls-ca is required");
    }
    if (r == NULL && strcmp(url, "/write") == 0) {
        r = req_new(h, c);
        if (r == NULL)
            return MHD_NO;
        r->kind = REQ_WRITE;
        *con_cls = r;
        if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
            r->state = W_ANSWER;
            return method_not_allowed(h, c, "POST");
        }
    }
    if (r != NULL && r != &h->other_req)
        return http_write(h, c, r, upload, upload_size);
    /* Everything else is read-only. The first call only marks the
     * request: answering before the request is fully read would make
     * libmicrohttpd close the connection instead of keeping it alive. */
    if (r == NULL) {
        *con_cls = &h->other_req;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        *upload_size = 0; /* a body nobody asked for: discarded */
        return MHD_YES;
    }
    if (strcmp(url, "/ping") == 0 &&
        (is_get(method) || strcmp(method, MHD_HTTP_METHOD_POST) == 0))
        return ping(h, c);
    if (!is_get(method))
        return method_not_allowed(h, c, "GET, HEAD");
    if (strcmp(url, "/api/sensors") == 0)
        return http_api_sensors(h, c);
    if (strcmp(url, "/api/readings") == 0)
        return http_api_readings(h, c);
    if (strcmp(url, "/api/series") == 0)
        return http_api_series(h, c);
    if (strcmp(url, "/metrics") == 0)
        return http_metrics(h, c);
    if (strcmp(url, "/healthz") == 0)
        return http_healthz(h, c);
    return serve_asset(h, c, url);
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    struct http *h = cls;
    struct http_req *r = *con_cls;

    (void)c;
    (void)toe;
    if (r == NULL || r == &h->other_req)
        return;
    *con_cls = NULL;
    if (r->suspended) /* cannot happen: MHD never ends a suspended one */
        list_del(&r->l_wait);
    r->suspended = false;
    r->mhd_done = true;
    http_req_maybe_free(r);
}

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    log_debug("libmicrohttpd: %s", msg);
}

/* ---- the loop ----------------------------------------------------------- */

static void
wake(struct http *h)
{
    uint64_t one = 1;

    if (write(h->wake.fd, &one, sizeof(one)) < 0)
        return; /* the counter cannot overflow: it is read every wakeup */
}

static void
on_wake(struct loop_io *io, uint32_t events)
{
    struct http *h = io->arg;
    uint64_t v;

    (void)events;
    if (read(h->wake.fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        log_error("HTTP: eventfd read: %s", strerror(errno));
    h->now_ms = clock_mono_ms();
    http_write_batches_back(h);
}

static void
on_mhd(struct loop_io *io, uint32_t events)
{
    struct http *h = io->arg;

    (void)events;
    MHD_run(h->mhd);
}

static void
begin_drain(struct http *h)
{
    const struct server_conf *cf = h->conf.sh->conf;

    h->draining = true;
    h->drain_deadline_ms = h->now_ms + cf->shutdown_timeout_ms;
    /* Stop accepting; the listening socket is ours again, to close
     * once the daemon is stopped. */
    h->listen_fd = MHD_quiesce_daemon(h->mhd);
}

/* During the drain: wait until nothing waits for a commit (or the
 * deadline), answer what still waits with 503, give the answers
 * HTTP_FLUSH_MS to go out; true once the loop may end. */
static bool
drain_progress(struct http *h)
{
    bool idle = list_empty(&h->waiting) && batch_empty(h->cur) &&
                h->n_pool == HTTP_BATCHES - 1;

    if (h->flush_until_ms == 0) {
        if (!idle && h->now_ms < h->drain_deadline_ms)
            return false;
        while (!list_empty(&h->waiting)) {
            struct http_req *r = list_entry(h->waiting.next,
                                            struct http_req, l_wait);

            r->abort_status = MHD_HTTP_SERVICE_UNAVAILABLE;
            r->abort_msg = "server shutting down before storage committed "
                           "the points; they may still be written";
            http_resume(h, r);
        }
        h->flush_until_ms = h->now_ms + HTTP_FLUSH_MS;
        return false;
    }
    return h->now_ms >= h->flush_until_ms;
}

static int
http_tick(void *arg)
{
    struct http *h = arg;
    MHD_UNSIGNED_LONG_LONG t = 0;
    int64_t timeout = 1000;

    h->now_ms = clock_mono_ms();
    if (atomic_load(&h->stop_requested) && !h->draining)
        begin_drain(h);
    if (h->mhd_due_ms >= 0 && h->now_ms >= h->mhd_due_ms)
        MHD_run(h->mhd);
    http_write_tick(h);
    if (h->draining) {
        if (drain_progress(h)) {
            loop_stop(h->loop);
            return 0;
        }
        timeout = 20;
    }
    if (MHD_get_timeout(h->mhd, &t) == MHD_YES) {
        if (t < (MHD_UNSIGNED_LONG_LONG)timeout)
            timeout = (int64_t)t;
        h->mhd_due_ms = h->now_ms + (int64_t)t;
    } else if (h->mhd_due_ms != 0) {
        h->mhd_due_ms = -1;
    }
    if (h->mhd_due_ms == 0)
        timeout = 0;
    return (int)timeout;
}

static void *
http_main(void *arg)
{
    struct http *h = arg;
    int rc;

    (void)pthread_setname_np(pthread_self(), "sn-http");
    /* Open the read handle now, so the first request does not wait. */
    (void)http_store(h);
    rc = loop_run(h->loop);
    if (rc < 0)
        log_error("HTTP: event loop failed: %s", strerror(-rc));
    return NULL;
}

/* ---- life cycle --------------------------------------------------------- */

struct http *
http_new(const struct http_conf *conf, char *err, size_t err_len)
{
    struct http *h = calloc(1, sizeof(*h));
    const union MHD_DaemonInfo *di;
    struct MHD_OptionItem tls_opts[5];
    size_t n_tls;
    int efd = -1;
    size_t i;

    if (h == NULL) {
        close(conf->listen_fd);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    h->conf = *conf;
    h->conf.store.flags |= STORE_F_READONLY;
    h->listen_fd = conf->listen_fd;
    h->wake.fd = -1;
    h->mhd_due_ms = -1;
    list_init(&h->reqs);
    list_init(&h->waiting);
    pthread_mutex_init(&h->done_mu, NULL);
    h->loop = loop_new(MAX_EVENTS, http_tick, h);
    h->etags = calloc(http_n_assets + 1, sizeof(*h->etags));
    if (h->loop == NULL || h->etags == NULL || http_write_init(h) < 0) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    for (i = 0; i < http_n_assets; i++)
        h->etags[i] = fnv1a(http_assets[i].data, http_assets[i].len);
    efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0 || loop_add(h->loop, &h->wake, efd, EPOLLIN, on_wake, h) < 0) {
        snprintf(err, err_len, "eventfd: %s", strerror(errno));
        if (efd >= 0)
            close(efd);
        goto fail;
    }
    if (https_load(h, err, err_len) < 0)
        goto fail;
    n_tls = 0;
    if (h->tls_cert_pem != NULL) {
        /* libmicrohttpd's TLS is GnuTLS (docs/security.md 2.4). */
        tls_opts[n_tls++] = (struct MHD_OptionItem){
            MHD_OPTION_HTTPS_MEM_CERT, 0, h->tls_cert_pem};
        tls_opts[n_tls++] = (struct MHD_OptionItem){
            MHD_OPTION_HTTPS_MEM_KEY, 0, h->tls_key_pem};
        tls_opts[n_tls++] = (struct MHD_OptionItem){
            MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)HTTP_TLS_PRIORITIES};
        if (h->tls_ca_pem != NULL)
            tls_opts[n_tls++] = (struct MHD_OptionItem){
                MHD_OPTION_HTTPS_MEM_TRUST, 0, h->tls_ca_pem};
    }
    tls_opts[n_tls] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    /* External epoll mode: no thread of MHD's own, suspend/resume for
     * /write (which also gives MHD an eventfd of its own for resumes). */
    h->mhd = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
            (h->tls_cert_pem != NULL ? MHD_USE_TLS : 0),
        0, NULL, NULL, on_request, h, MHD_OPTION_ARRAY, tls_opts,
        MHD_OPTION_LISTEN_SOCKET, h->listen_fd,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_CONN_TIMEOUT_S,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNS,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_MEMORY,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h, MHD_OPTION_END);
    if (h->mhd == NULL) {
        snprintf(err, err_len, "libmicrohttpd: cannot start the daemon%s",
                 h->tls_cert_pem != NULL
                     ? " (GnuTLS refused the certificate or key?)"
                     : "");
        goto fail;
    }
    h->listen_fd = -1; /* the daemon's now: MHD_stop_daemon closes it */
    di = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (di == NULL || loop_add(h->loop, &h->mhd_io, di->epoll_fd, EPOLLIN,
                               on_mhd, h) < 0) {
        snprintf(err, err_len, "libmicrohttpd: no epoll fd to watch");
        goto fail;
    }
    return h;
fail:
    http_free(h);
    return NULL;
}

int
http_start(struct http *h)
{
    int rc = pthread_create(&h->thread, NULL, http_main, h);

    if (rc != 0)
        return -rc;
    h->started = true;
    return 0;
}

void
http_stop(struct http *h)
{
    if (h == NULL)
        return;
    atomic_store(&h->stop_requested, true);
    wake(h);
}

void
http_join(struct http *h)
{
    if (h == NULL)
        return;
    if (h->started)
        pthread_join(h->thread, NULL);
    h->started = false;
    /* Nothing may stay suspended when the daemon stops. */
    while (!list_empty(&h->waiting)) {
        struct http_req *r = list_entry(h->waiting.next, struct http_req,
                                        l_wait);

        r->abort_status = MHD_HTTP_SERVICE_UNAVAILABLE;
        r->abort_msg = "server shutting down";
        http_resume(h, r);
    }
    if (h->mhd != NULL && !h->mhd_stopped) {
        MHD_stop_daemon(h->mhd);
        h->mhd_stopped = true;
    }
}

void
http_free(struct http *h)
{
    struct list *it, *nx;

    if (h == NULL)
        return;
    http_join(h);
    if (h->mhd != NULL && !h->mhd_stopped)
        MHD_stop_daemon(h->mhd);
    h->mhd_stopped = true;
    if (h->listen_fd >= 0)
        close(h->listen_fd);
    http_write_free(h);
    for (it = h->reqs.next; it != &h->reqs; it = nx) {
        struct http_req *r = list_entry(it, struct http_req, l_all);

        nx = it->next;
        list_del(&r->l_all);
        free(r->line);
        free(r);
    }
    store_close(h->st);
    if (h->wake.fd >= 0)
        close(h->wake.fd);
    loop_free(h->loop);
    free(h->etags);
    https_free(h);
    pthread_mutex_destroy(&h->done_mu);
    free(h);
}

void
http_wake(struct http *h)
{
    wake(h);
}
