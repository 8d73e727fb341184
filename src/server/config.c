/*
 * config: see config.h. The option table below is the single source of the
 * defaults, the limits, the file keys and the --help text.
 * SPDX-License-Identifier: MIT
 */
#include "server/config.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

#ifndef SENSORNET_VERSION
#define SENSORNET_VERSION "0.1.0"
#endif

enum opt_type {
    OPT_STR,    /* string */
    OPT_OFFSTR, /* string, "off" means NULL */
    OPT_LISTEN, /* comma-separated HOST:PORT list */
    OPT_UINT,   /* unsigned integer within [min, max] */
    OPT_DUR,    /* duration: number and unit ms/s/m/h/d/w, stored in ms */
    OPT_BOOL,   /* flag on the command line, yes/no in the file */
    OPT_FSYNC,  /* always | batch | off */
};

struct opt {
    const char *name;
    enum opt_type type;
    const char *def; /* NULL: unset */
    size_t off;
    int64_t min, max;
    int64_t unit_ms; /* for OPT_DUR: unit of a bare number */
    const char *arg;
    const char *help;
};

#define F(field) offsetof(struct server_conf, field)

static const struct opt opts[] = {
    {"listen", OPT_LISTEN, "0.0.0.0:5000", F(listen), 0, 0, 0, "ADDR",
     "sensor port(s): HOST:PORT or [V6]:PORT, comma-separated"},
    {"log", OPT_OFFSTR, "log.txt", F(log_path), 0, 0, 0, "PATH",
     "the original's human log of connections and readings; off: none"},
    {"log-utc", OPT_BOOL, "no", F(log_utc), 0, 0, 0, NULL,
     "log.txt times in UTC instead of local time"},
    {"db", OPT_OFFSTR, "sensornet.db", F(db_path), 0, 0, 0, "PATH",
     "SQLite database (the default store); off: no database, readings "
     "only in log.txt as in the original (acknowledged once it is synced)"},
    {"postgres", OPT_STR, NULL, F(postgres), 0, 0, 0, "CONNINFO",
     "store in PostgreSQL instead (URI or key=value string)"},
    {"fsync", OPT_FSYNC, "batch", F(fsync), 0, 0, 0, "MODE",
     "always: sync, commit without waiting; batch: sync each group "
     "commit; off: never sync (survives a server crash, not power loss)"},
    {"commit-interval", OPT_DUR, "10ms", F(commit_interval_ms), 0, 60000, 1,
     "TIME", "longest wait to gather readings into one commit"},
    {"batch-max", OPT_UINT, "10000", F(batch_max), 64, 1000000, 0, "N",
     "readings per batch; a commit starts at once when this many wait"},
    {"threads", OPT_UINT, "0", F(threads), 0, 256, 0, "N",
     "network threads (event loops); 0: one per core"},
    {"max-connections", OPT_UINT, "0", F(max_conns), 0, 10000000, 0, "N",
     "sensor connections; past it new ones get 'ERR server full'; 0: as "
     "many as the open-file limit allows (raised to its hard maximum)"},
    {"max-line", OPT_UINT, "4096", F(max_line), 64, PROTO_MAX_LINE_LIMIT, 0,
     "BYTES", "longest line; longer ones get ERR and are skipped"},
    {"silence", OPT_DUR, "100ms", F(silence_ms), 1, 60000, 1, "TIME",
     "quiet time after which bytes without a line end from an original "
     "client count as one message"},
    {"idle-timeout", OPT_DUR, "300s", F(idle_timeout_ms), 1000,
     INT64_C(86400000), 1000, "TIME",
     "close connections silent for this long"},
    {"tokens", OPT_STR, NULL, F(tokens), 0, 0, 0, "FILE",
     "let in only sensors with a token: lines '<sensor id> <token>' or "
     "'<sensor id> sha256:<hex>' (docs/security.md); clients send AUTH, "
     "/write a Bearer header"},
    {"graphite-prefix", OPT_STR, NULL, F(graphite_prefix), 0, 0, 0,
     "PREFIX", "Graphite paths: strip this prefix first (collectd's "
     "write_graphite: collectd.)"},
    {"graphite-sensor-parts", OPT_UINT, "0", F(graphite_sensor_parts), 0, 64,
     0, "N", "Graphite paths: the first N components name the sensor, the "
     "rest the quantity; 0: all but the last (collectd: 1, the host)"},
    {"max-connection-age", OPT_DUR, "0", F(max_conn_age_ms), 0,
     INT64_C(31536000000), 1000, "TIME",
     "close a connection this old (minus up to 10 % jitter) once its "
     "readings are acknowledged, so clients reconnect and spread over "
     "newly added collectors behind a load balancer; 0: never"},
    {"retention", OPT_DUR, "0", F(retention_ms), 0, INT64_MAX / 1000000,
     86400000, "TIME", "delete readings older than this; 0: keep all"},
    {"shutdown-timeout", OPT_DUR, "10s", F(shutdown_timeout_ms), 0, 3600000,
     1000, "TIME", "on SIGTERM, longest wait for storage to commit"},
    /* HTTP API (src/server/http.c, docs/api.md) */
    {"http", OPT_OFFSTR, "127.0.0.1:8080", F(http), 0, 0, 0, "ADDR",
     "HTTP API, /write, /metrics and dashboard: HOST:PORT or [V6]:PORT; "
     "off: none"},
    {"http-max-body", OPT_UINT, "8388608", F(http_max_body), 1024,
     1073741824, 0, "BYTES", "largest POST /write body; larger get 413"},
    /* MQTT 3.1.1 (docs/protocol.md, "MQTT") */
    {"mqtt-listen", OPT_OFFSTR, "off", F(mqtt_listen), 0, 0, 0, "ADDR",
     "an MQTT-only port (1883 by convention): HOST:PORT; MQTT is also "
     "recognised on the sensor port by its first byte; off: none"},
    {"mqtt-max-packet", OPT_UINT, "65536", F(mqtt_max_packet), 64,
     268435460, 0, "BYTES", "largest MQTT packet; a larger one closes the "
     "connection (a protocol violation)"},
    {"mqtt-max-inflight", OPT_UINT, "1024", F(mqtt_max_inflight), 1, 65535,
     0, "N", "QoS 1 messages of one connection awaiting their PUBACK; past "
     "it the connection is not read until commits catch up"},
    /* TLS (docs/security.md) */
    {"tls-cert", OPT_STR, NULL, F(tls_cert), 0, 0, 0, "FILE",
     "PEM certificate chain: with --tls-key, the sensor port, the MQTT "
     "port and the HTTP port speak only TLS"},
    {"tls-key", OPT_STR, NULL, F(tls_key), 0, 0, 0, "FILE",
     "PEM private key of --tls-cert"},
    {"tls-ca", OPT_STR, NULL, F(tls_ca), 0, 0, 0, "FILE",
     "PEM CA certificates: require every TLS client to present a "
     "certificate they signed"},
    {"verbose", OPT_BOOL, "no", F(verbose), 0, 0, 0, NULL,
     "debug messages on stderr"},
};
#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

static void
seterr(char *err, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

/* Decimal digits only, no sign, no overflow. */
static int
parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (len == 0 || len > 19)
        return -EINVAL;
    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

static int
parse_duration(const char *s, int64_t unit_ms, int64_t *out_ms)
{
    static const struct {
        const char *u;
        int64_t ms;
    } units[] = {{"ms", 1},         {"s", 1000},       {"m", 60000},
                 {"h", 3600000},    {"d", 86400000},   {"w", 604800000}};
    size_t digits = strspn(s, "0123456789");
    uint64_t v;
    size_t i;

    if (parse_u64(s, digits, &v) < 0)
        return -EINVAL;
    if (s[digits] != '\0') {
        for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
            if (strcmp(s + digits, units[i].u) == 0)
                break;
        if (i == sizeof(units) / sizeof(units[0]))
            return -EINVAL;
        unit_ms = units[i].ms;
    }
    if (v > (uint64_t)(INT64_MAX / unit_ms))
        return -ERANGE;
    *out_ms = (int64_t)v * unit_ms;
    return 0;
}

static int
set_str(char **field, const char *v)
{
    char *copy = strdup(v);

    if (copy == NULL)
        return -ENOMEM;
    free(*field);
    *field = copy;
    return 0;
}

static int
set_listen(struct server_conf *c, const char *v, char *err, size_t len)
{
    const char *p = v;
    size_t i;

    for (i = 0; i < c->n_listen; i++) {
        free(c->listen[i]);
        c->listen[i] = NULL;
    }
    c->n_listen = 0;
    while (*p != '\0') {
        size_t n = strcspn(p, ",");

        if (n == 0) {
            seterr(err, len, "listen: empty address in '%s'", v);
            return -EINVAL;
        }
        if (c->n_listen == CONFIG_MAX_LISTEN) {
            seterr(err, len, "listen: at most %d addresses",
                   CONFIG_MAX_LISTEN);
            return -EINVAL;
        }
        c->listen[c->n_listen] = strndup(p, n);
        if (c->listen[c->n_listen] == NULL)
            return -ENOMEM;
        c->n_listen++;
        p += n;
        if (*p == ',')
            p++;
    }
    if (c->n_listen == 0) {
        seterr(err, len, "listen: no address");
        return -EINVAL;
    }
    return 0;
}

/* Apply value v to option o; where names the source for messages. */
static int
apply(struct server_conf *c, const struct opt *o, const char *v,
      const char *where, char *err, size_t len)
{
    char *base = (char *)c;
    uint64_t u;
    int64_t d;
    int rc = 0;

    switch (o->type) {
    case OPT_STR:
        rc = set_str((char **)(base + o->off), v);
        break;
    case OPT_OFFSTR:
        if (strcmp(v, "off") == 0 || v[0] == '\0') {
            free(*(char **)(base + o->off));
            *(char **)(base + o->off) = NULL;
            rc = 0;
        } else {
            rc = set_str((char **)(base + o->off), v);
        }
        break;
    case OPT_LISTEN:
        return set_listen(c, v, err, len);
    case OPT_UINT:
        if (parse_u64(v, strlen(v), &u) < 0 || (int64_t)u < o->min ||
            (int64_t)u > o->max) {
            seterr(err, len, "%s%s: '%s' is not a number from %lld to %lld",
                   where, o->name, v, (long long)o->min, (long long)o->max);
            return -EINVAL;
        }
        *(uint64_t *)(base + o->off) = u;
        return 0;
    case OPT_DUR:
        if (parse_duration(v, o->unit_ms, &d) < 0 || d < o->min ||
            d > o->max) {
            seterr(err, len,
                   "%s%s: '%s' is not a duration (a number with ms, s, m, "
                   "h, d or w) from %lld ms to %lld ms",
                   where, o->name, v, (long long)o->min, (long long)o->max);
            return -EINVAL;
        }
        *(int64_t *)(base + o->off) = d;
        return 0;
    case OPT_BOOL:
        if (strcmp(v, "yes") == 0 || strcmp(v, "true") == 0 ||
            strcmp(v, "1") == 0 || strcmp(v, "on") == 0) {
            *(bool *)(base + o->off) = true;
        } else if (strcmp(v, "no") == 0 || strcmp(v, "false") == 0 ||
                   strcmp(v, "0") == 0 || strcmp(v, "off") == 0) {
            *(bool *)(base + o->off) = false;
        } else {
            seterr(err, len, "%s%s: '%s' is not yes or no", where, o->name,
                   v);
            return -EINVAL;
        }
        return 0;
    case OPT_FSYNC:
        if (strcmp(v, "always") == 0)
            c->fsync = STORE_FSYNC_ALWAYS;
        else if (strcmp(v, "batch") == 0)
            c->fsync = STORE_FSYNC_BATCH;
        else if (strcmp(v, "off") == 0)
            c->fsync = STORE_FSYNC_OFF;
        else {
            seterr(err, len, "%s%s: '%s' is not always, batch or off",
                   where, o->name, v);
            return -EINVAL;
        }
        return 0;
    }
    if (rc < 0)
        seterr(err, len, "out of memory");
    return rc;
}

static const struct opt *
find_opt(const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < N_OPTS; i++)
        if (strlen(opts[i].name) == len &&
            memcmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

static int
load_file(struct server_conf *c, const char *path, char *err, size_t len)
{
    FILE *f = fopen(path, "r");
    char line[1024], where[300];
    unsigned lineno = 0;
    int rc = 0;

    if (f == NULL) {
        seterr(err, len, "cannot read config %s: %s", path, strerror(errno));
        return -errno;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        char *p = line, *key, *val, *end;
        const struct opt *o;
        size_t klen;

        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            seterr(err, len, "%s:%u: line too long", path, lineno);
            rc = -EINVAL;
            break;
        }
        p += strspn(p, " \t");
        if (*p == '#' || *p == '\n' || *p == '\0')
            continue;
        key = p;
        klen = strcspn(p, " \t\n");
        val = key + klen;
        val += strspn(val, " \t");
        end = val + strlen(val);
        while (end > val && (end[-1] == '\n' || end[-1] == ' ' ||
                             end[-1] == '\t' || end[-1] == '\r'))
            *--end = '\0';
        o = find_opt(key, klen);
        if (o == NULL) {
            seterr(err, len, "%s:%u: unknown key '%.*s'", path, lineno,
                   (int)klen, key);
            rc = -EINVAL;
            break;
        }
        if (*val == '\0' && o->type != OPT_BOOL) {
            seterr(err, len, "%s:%u: %s needs a value", path, lineno,
                   o->name);
            rc = -EINVAL;
            break;
        }
        snprintf(where, sizeof(where), "%s:%u: ", path, lineno);
        rc = apply(c, o, *val == '\0' ? "yes" : val, where, err, len);
        if (rc < 0)
            break;
    }
    fclose(f);
    return rc;
}

/* Print text word-wrapped between column indent (already reached) and
 * width. */
static void
wrap(FILE *out, const char *text, int indent, int width)
{
    const char *p = text;
    int col = indent;

    while (*p != '\0') {
        int w = (int)strcspn(p, " ");

        if (col > indent && col + 1 + w > width) {
            fprintf(out, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', out);
            col++;
        }
        fprintf(out, "%.*s", w, p);
        col += w;
        p += w;
        while (*p == ' ')
            p++;
    }
    fputc('\n', out);
}

void
config_usage(FILE *out)
{
    size_t i;

    fprintf(out,
            "Usage: sensornet-server [OPTION]...\n"
            "Collect sensor readings over TCP, log them to log.txt, store "
            "them durably and\nacknowledge them.\n\n"
            "  -c, --config FILE        read options from FILE (\"key "
            "value\" lines)\n"
            "  -t, --check-config       check the options and exit\n"
            "  -v, --verbose            debug messages on stderr\n"
            "  -V, --version            print the version and exit\n"
            "  -h, --help               print this help and exit\n");
    for (i = 0; i < N_OPTS; i++) {
        char left[64], text[512];

        if (strcmp(opts[i].name, "verbose") == 0)
            continue;
        snprintf(left, sizeof(left), "--%s%s%s", opts[i].name,
                 opts[i].arg ? " " : "", opts[i].arg ? opts[i].arg : "");
        if (opts[i].def != NULL && opts[i].type != OPT_BOOL)
            snprintf(text, sizeof(text), "%s [%s]", opts[i].help,
                     opts[i].def);
        else
            snprintf(text, sizeof(text), "%s", opts[i].help);
        fprintf(out, "      %-24s ", left);
        wrap(out, text, 31, 79);
    }
    fprintf(out,
            "\nTIME is a number with a unit (ms, s, m, h, d, w). Every option "
            "is also a\nconfiguration file key. Signals: TERM/INT drain and "
            "exit, HUP reopens log.txt.\n");
}

void
config_free(struct server_conf *c)
{
    size_t i;

    for (i = 0; i < c->n_listen; i++)
        free(c->listen[i]);
    c->n_listen = 0;
    free(c->log_path);
    free(c->db_path);
    free(c->postgres);
    free(c->http);
    free(c->graphite_prefix);
    free(c->tokens);
    c->tokens = NULL;
    free(c->mqtt_listen);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->tls_ca);
    c->mqtt_listen = c->tls_cert = c->tls_key = c->tls_ca = NULL;
    c->log_path = c->db_path = c->postgres = c->http = NULL;
    c->graphite_prefix = NULL;
}

int
config_parse(struct server_conf *c, int argc, char **argv, char *err,
             size_t len)
{
    struct option lopts[N_OPTS + 5];
    const char *cfg = NULL;
    size_t i;
    int ch, idx, rc;

    memset(c, 0, sizeof(*c));
    for (i = 0; i < N_OPTS; i++) {
        if (opts[i].def != NULL) {
            rc = apply(c, &opts[i], opts[i].def, "default ", err, len);
            if (rc < 0)
                return -1;
        }
        lopts[i].name = opts[i].name;
        lopts[i].has_arg =
            opts[i].type == OPT_BOOL ? no_argument : required_argument;
        lopts[i].flag = NULL;
        lopts[i].val = 1000 + (int)i;
    }
    lopts[N_OPTS] = (struct option){"config", required_argument, NULL, 'c'};
    lopts[N_OPTS + 1] = (struct option){"check-config", no_argument, NULL,
                                        't'};
    lopts[N_OPTS + 2] = (struct option){"version", no_argument, NULL, 'V'};
    lopts[N_OPTS + 3] = (struct option){"help", no_argument, NULL, 'h'};
    lopts[N_OPTS + 4] = (struct option){NULL, 0, NULL, 0};

    /* First pass: only -c, so the file comes before the command line. */
    opterr = 0;
    optind = 0;
    while ((ch = getopt_long(argc, argv, "c:tvVh", lopts, &idx)) != -1)
        if (ch == 'c')
            cfg = optarg;
    if (cfg != NULL && load_file(c, cfg, err, len) < 0)
        return -1;

    opterr = 0;
    optind = 0;
    while ((ch = getopt_long(argc, argv, "c:tvVh", lopts, &idx)) != -1) {
        switch (ch) {
        case 'c':
            break;
        case 't':
            c->check_only = true;
            break;
        case 'v':
            c->verbose = true;
            break;
        case 'V':
            printf("sensornet-server %s\n", SENSORNET_VERSION);
            return 1;
        case 'h':
            config_usage(stdout);
            return 1;
        case '?':
            if (optopt != 0)
                seterr(err, len, "option -%c: unknown or missing its value",
                       optopt);
            else
                seterr(err, len, "unknown option or missing value: %s",
                       argv[optind - 1]);
            return -1;
        default:
            if (ch >= 1000 && ch < 1000 + (int)N_OPTS) {
                const struct opt *o = &opts[ch - 1000];

                rc = apply(c, o, o->type == OPT_BOOL ? "yes" : optarg,
                           "--", err, len);
                if (rc < 0)
                    return -1;
            }
            break;
        }
    }
    if (optind < argc) {
        seterr(err, len, "unexpected argument '%s'", argv[optind]);
        return -1;
    }
    if ((c->tls_cert == NULL) != (c->tls_key == NULL)) {
        seterr(err, len, "tls-cert and tls-key go together");
        return -1;
    }
    if (c->tls_ca != NULL && c->tls_cert == NULL) {
        seterr(err, len, "tls-ca needs tls-cert and tls-key");
        return -1;
    }
    return 0;
}
