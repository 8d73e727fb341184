/*
 * options: see options.h. The opts[] table below is the single source of the
 * options, their defaults and limits, and the --help text.
 * SPDX-License-Identifier: MIT
 */
#include "client/options.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "client/pending.h"
#include "client/spool.h"
#include "client/tokens.h"

#ifndef SENSORNET_VERSION
#define SENSORNET_VERSION "0.1.0"
#endif

enum opt_id {
    O_SERVER = 1,
    O_KIND,
    O_ID,
    O_INTERVAL,
    O_COUNT,
    O_FORMAT,
    O_SENSORS,
    O_WINDOW,
    O_MAX_PENDING,
    O_BACKOFF_MAX,
    O_ACK_TIMEOUT,
    O_DRAIN_TIMEOUT,
    O_KEEPALIVE,
    O_SPOOL,
    O_NO_SPOOL,
    O_SPOOL_MAX,
    O_SEED,
    O_TLS,
    O_TLS_CA,
    O_TLS_CERT,
    O_TLS_KEY,
    O_TLS_SERVER_NAME,
    O_TOKEN,
    O_TOKEN_FILE,
    O_QUIET,
    O_VERBOSE,
    O_HELP,
    O_VERSION,
};

struct opt {
    const char *name;
    enum opt_id id;
    char short_name; /* 0: long only */
    const char *arg; /* NULL: takes no argument */
    const char *help;
};

static const struct opt opts[] = {
    {"server", O_SERVER, 's', "HOST:PORT",
     "collector address (default 127.0.0.1:5000); names are resolved at "
     "start and again after a failed connect"},
    {"kind", O_KIND, 'k', "KIND",
     "temperature (default: id Sensor1, every 2 s, 20-30 °C) or humidity "
     "(id Sensor2, every 3 s, 40-70 %)"},
    {"id", O_ID, 'i', "ID",
     "sensor id (default from --kind); with --sensors N > 1 the ids are "
     "ID-1 .. ID-N. No spaces, commas, '=', quotes or backslashes"},
    {"interval", O_INTERVAL, 0, "SECONDS",
     "time between readings, fractions allowed (default from --kind); 0: "
     "as fast as the window allows (load generation)"},
    {"count", O_COUNT, 'n', "N",
     "stop once N readings are acknowledged, per sensor (default 0: run "
     "until SIGTERM or SIGINT)"},
    {"format", O_FORMAT, 'f', "FORMAT",
     "influx (default; line protocol with ns timestamps), text (the "
     "original's line, with a line end) or original (exactly the original "
     "client: no line end, one message in flight)"},
    {"sensors", O_SENSORS, 0, "N",
     "simulated sensors in this process, each with its own connection "
     "(default 1; up to 100000); prints a status line each second to stderr"},
    {"window", O_WINDOW, 'w', "N",
     "most lines in flight without acknowledgement per connection "
     "(default 1000)"},
    {"max-pending", O_MAX_PENDING, 0, "N",
     "most readings kept unacknowledged in memory per sensor (default "
     "100000); beyond, with a spool they wait on disk, without one the "
     "sensor stops producing until acks free space"},
    {"backoff-max", O_BACKOFF_MAX, 0, "SECONDS",
     "longest wait between reconnect attempts (default 30; the first is at "
     "most 0.1 s, doubling, with full jitter)"},
    {"ack-timeout", O_ACK_TIMEOUT, 0, "SECONDS",
     "reconnect when lines in flight get no reply for this long "
     "(default 30)"},
    {"drain-timeout", O_DRAIN_TIMEOUT, 0, "SECONDS",
     "on SIGTERM or SIGINT, longest wait for outstanding acknowledgements "
     "before exiting (default 5)"},
    {"keepalive", O_KEEPALIVE, 0, "SECONDS",
     "send PING when nothing was received for this long, and reconnect if "
     "still nothing comes within as long again; also tunes TCP keepalive "
     "(default 30; 0: off; never in the original format)"},
    {"spool", O_SPOOL, 0, "DIR",
     "keep unacknowledged readings on disk in DIR/ID (default: "
     "$STATE_DIRECTORY, else ./" OPTIONS_SPOOL_DEFAULT "); they survive a "
     "crash and are resent at the next start"},
    {"no-spool", O_NO_SPOOL, 0, NULL,
     "keep unacknowledged readings in memory only"},
    {"spool-max", O_SPOOL_MAX, 0, "BYTES",
     "most disk space per sensor's spool, with k, M or G (binary) allowed "
     "(default 64M, at least 64k); when full the oldest readings are "
     "dropped and counted"},
    {"seed", O_SEED, 0, "N",
     "seed of the random walks and the jitter, for reproducible runs "
     "(default: from the clock and the pid)"},
    {"tls", O_TLS, 0, NULL,
     "speak TLS to the collector (its --tls-cert), verifying its "
     "certificate and name"},
    {"tls-ca", O_TLS_CA, 0, "FILE",
     "PEM CA certificates the server's certificate must chain to "
     "(default: the system's trust store); implies --tls"},
    {"tls-cert", O_TLS_CERT, 0, "FILE",
     "PEM client certificate (chain) for a collector with --tls-ca; with "
     "--tls-key; implies --tls"},
    {"tls-key", O_TLS_KEY, 0, "FILE", "PEM private key of --tls-cert"},
    {"tls-server-name", O_TLS_SERVER_NAME, 0, "NAME",
     "name (or IP address) the server's certificate must carry, also sent "
     "as SNI (default: the host of --server); implies --tls"},
    {"token", O_TOKEN, 0, "TOKEN",
     "send \"AUTH <id> <token>\" first on every connection (a collector "
     "with --tokens) and send readings only after \"AUTH OK\"; every "
     "sensor of --sensors uses it. Visible in ps: prefer --token-file"},
    {"token-file", O_TOKEN_FILE, 0, "FILE",
     "like --token, from FILE: lines \"<id> <token>\" (one per sensor) "
     "and/or one line with a token alone (for the others); mode 600"},
    {"quiet", O_QUIET, 'q', NULL,
     "no per-reading or per-acknowledgement lines on stdout"},
    {"verbose", O_VERBOSE, 'v', NULL, "debug messages on stderr"},
    {"help", O_HELP, 'h', NULL, "show this help and exit"},
    {"version", O_VERSION, 'V', NULL, "show the version and exit"},
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

const char *
options_version(void)
{
    return SENSORNET_VERSION;
}

void
options_usage(FILE *out)
{
    size_t i;

    fprintf(out,
            "Usage: sensornet-client [OPTIONS]\n"
            "Simulated sensor and load generator for sensornet-server.\n"
            "Sends readings, resends whatever the server has not "
            "acknowledged after\na reconnect, and never gives up on the "
            "server.\n\nOptions:\n");
    for (i = 0; i < N_OPTS; i++) {
        char left[48];

        if (opts[i].short_name != 0)
            snprintf(left, sizeof(left), "-%c, --%s%s%s", opts[i].short_name,
                     opts[i].name, opts[i].arg ? " " : "",
                     opts[i].arg ? opts[i].arg : "");
        else
            snprintf(left, sizeof(left), "    --%s%s%s", opts[i].name,
                     opts[i].arg ? " " : "", opts[i].arg ? opts[i].arg : "");
        fprintf(out, "  %-26s %s\n", left, opts[i].help);
    }
    fprintf(out,
            "\nOutput: per-reading and connection lines on stdout; at exit "
            "one line\n  sensornet-client: produced=N acked=N refused=N "
            "pending=N dropped=N\n  resumed=N spool_seq=N digest=HEX\n"
            "Exit status: 0 when --count is reached or after a "
            "signal, 1 when the server refuses the token (AUTH ERR),\n"
            "2 on bad usage or unusable TLS or token files.\n");
}

static int
fail(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return OPTIONS_E_USAGE;
}

/* A whole decimal number in [min, max], digits only. */
static int
parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (s[0] < '0' || s[0] > '9')
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -ERANGE;
    *out = v;
    return 0;
}

/* Seconds with an optional fraction ("2", "0.5", ".25") in [min, max],
 * returned in ns. No sign, exponent, hex, inf or nan. */
static int
parse_seconds(const char *s, double min, double max, int64_t *out_ns)
{
    char *end;
    double v;
    size_t i;

    if (s[0] == '\0')
        return -EINVAL;
    for (i = 0; s[i] != '\0'; i++) {
        if ((s[i] < '0' || s[i] > '9') && s[i] != '.')
            return -EINVAL;
    }
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < min || v > max)
        return -ERANGE;
    *out_ns = (int64_t)llround(v * 1e9);
    return 0;
}

/* A size in bytes with an optional k, M or G suffix (powers of 1024), in
 * [min, max]. */
static int
parse_bytes(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    size_t digits = strspn(s, "0123456789");
    unsigned shift = 0;
    char num[24];
    uint64_t v;

    if (digits == 0 || digits >= sizeof(num))
        return -EINVAL;
    if (s[digits] != '\0') {
        if (s[digits + 1] != '\0')
            return -EINVAL;
        switch (s[digits]) {
        case 'k':
        case 'K':
            shift = 10;
            break;
        case 'm':
        case 'M':
            shift = 20;
            break;
        case 'g':
        case 'G':
            shift = 30;
            break;
        default:
            return -EINVAL;
        }
    }
    memcpy(num, s, digits);
    num[digits] = '\0';
    if (parse_uint(num, 0, max, &v) < 0 || v > (max >> shift))
        return -ERANGE;
    v <<= shift;
    if (v < min)
        return -ERANGE;
    *out = v;
    return 0;
}

/* "HOST:PORT" or "[V6]:PORT" with a non-empty host and a port 1..65535.
 * Resolution happens later (and again on reconnect), not here. */
static bool
hostport_valid(const char *s)
{
    const char *port;
    uint64_t p;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');

        if (close == NULL || close == s + 1 || close[1] != ':')
            return false;
        port = close + 2;
    } else {
        const char *colon = strrchr(s, ':');

        if (colon == NULL || colon == s || strchr(s, ':') != colon)
            return false;
        port = colon + 1;
    }
    return parse_uint(port, 1, 65535, &p) == 0 && strlen(port) <= 5;
}

/* The host of a valid --server ("[V6]:PORT" without the brackets). */
static int
server_host(const char *server, char *buf, size_t len)
{
    const char *start = server, *end;

    if (server[0] == '[') {
        start = server + 1;
        end = strchr(start, ']');
    } else {
        end = strrchr(server, ':');
    }
    if (end == NULL || (size_t)(end - start) >= len)
        return -ENAMETOOLONG;
    memcpy(buf, start, (size_t)(end - start));
    buf[end - start] = '\0';
    return 0;
}

static void
set_defaults(struct client_conf *c)
{
    memset(c, 0, sizeof(*c));
    c->server = "127.0.0.1:5000";
    c->kind = SIM_TEMPERATURE;
    c->id = NULL;
    c->interval_ns = -1;
    c->count = 0;
    c->format = WIRE_INFLUX;
    c->sensors = 1;
    c->window = 1000;
    c->max_pending = 100000;
    c->backoff_max_ms = 30000;
    c->ack_timeout_ms = 30000;
    c->drain_timeout_ms = 5000;
    c->keepalive_ms = 30000;
    c->spool_max = SPOOL_MAX_DEFAULT;
}

static size_t
n_digits(uint32_t v)
{
    size_t n = 1;

    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* Checks that need every option known. */
static int
finish(struct client_conf *c, char *err, size_t err_len)
{
    const struct sim_kind_info *k = sim_kind_info(c->kind);
    size_t id_max = WIRE_ID_MAX;

    if (c->id == NULL)
        c->id = k->default_id;
    if (c->interval_ns < 0)
        c->interval_ns = k->interval_ms * 1000000;
    if (c->sensors > 1)
        id_max -= 1 + n_digits(c->sensors);
    if (!wire_id_valid(c->id) || strlen(c->id) > id_max)
        return fail(err, err_len,
                    "--id '%s': 1 to %zu bytes, without spaces, control "
                    "bytes, commas, '=', quotes or backslashes",
                    c->id, id_max);
    if (c->no_spool && c->spool_dir != NULL)
        return fail(err, err_len, "--spool and --no-spool together");
    if ((c->tls_cert == NULL) != (c->tls_key == NULL))
        return fail(err, err_len, "--tls-cert and --tls-key go together");
    if (c->token != NULL && c->token_file != NULL)
        return fail(err, err_len, "--token and --token-file together");
    if ((c->token != NULL || c->token_file != NULL) &&
        c->format == WIRE_ORIGINAL)
        return fail(err, err_len,
                    "--token needs --format influx or text: the original "
                    "format has no AUTH line");
    if (c->tls && c->tls_server_name == NULL) {
        if (server_host(c->server, c->tls_name_buf,
                        sizeof(c->tls_name_buf)) < 0)
            return fail(err, err_len, "--server '%s': host name too long "
                        "for TLS", c->server);
        c->tls_server_name = c->tls_name_buf;
    }
    if (!c->no_spool && c->spool_dir == NULL) {
        /* systemd's StateDirectory= (several are separated by ':'). */
        const char *state = getenv("STATE_DIRECTORY");
        size_t n = state != NULL ? strcspn(state, ":") : 0;

        if (n > 0 && n < sizeof(c->spool_dir_buf)) {
            memcpy(c->spool_dir_buf, state, n);
            c->spool_dir_buf[n] = '\0';
            c->spool_dir = c->spool_dir_buf;
        } else {
            c->spool_dir = OPTIONS_SPOOL_DEFAULT;
        }
    }
    return OPTIONS_RUN;
}

static int
set_seconds(const char *name, const char *arg, double min, double max,
            int64_t *ms, char *err, size_t err_len)
{
    int64_t ns;

    if (parse_seconds(arg, min, max, &ns) < 0)
        return fail(err, err_len, "--%s '%s': seconds from %g to %g", name,
                    arg, min, max);
    *ms = ns / 1000000;
    return 0;
}

static int
set_uint32(const char *name, const char *arg, uint64_t min, uint64_t max,
           uint32_t *out, char *err, size_t err_len)
{
    uint64_t v;

    if (parse_uint(arg, min, max, &v) < 0)
        return fail(err, err_len, "--%s '%s': a whole number from %llu to %llu",
                    name, arg, (unsigned long long)min,
                    (unsigned long long)max);
    *out = (uint32_t)v;
    return 0;
}

/* Apply one option; returns 0, OPTIONS_EXIT or OPTIONS_E_USAGE. */
static int
apply(struct client_conf *c, const struct opt *o, const char *arg, FILE *out,
      char *err, size_t err_len)
{
    int64_t ns;

    switch (o->id) {
    case O_SERVER:
        if (!hostport_valid(arg))
            return fail(err, err_len,
                        "--server '%s': expected HOST:PORT or [ADDRESS]:PORT "
                        "with a port from 1 to 65535",
                        arg);
        c->server = arg;
        return 0;
    case O_KIND:
        if (sim_kind_parse(arg, &c->kind) < 0)
            return fail(err, err_len,
                        "--kind '%s': expected temperature or humidity", arg);
        return 0;
    case O_ID:
        c->id = arg;
        return 0;
    case O_INTERVAL:
        if (parse_seconds(arg, 0, 86400, &c->interval_ns) < 0)
            return fail(err, err_len,
                        "--interval '%s': seconds from 0 to 86400", arg);
        return 0;
    case O_COUNT:
        if (parse_uint(arg, 0, UINT64_C(1) << 62, &c->count) < 0)
            return fail(err, err_len, "--count '%s': a whole number", arg);
        return 0;
    case O_FORMAT:
        if (wire_format_parse(arg, &c->format) < 0)
            return fail(err, err_len,
                        "--format '%s': expected influx, text or original",
                        arg);
        return 0;
    case O_SENSORS:
        return set_uint32(o->name, arg, 1, OPTIONS_SENSORS_MAX, &c->sensors,
                          err, err_len);
    case O_WINDOW:
        return set_uint32(o->name, arg, 1, OPTIONS_WINDOW_MAX, &c->window, err,
                          err_len);
    case O_MAX_PENDING:
        return set_uint32(o->name, arg, 1, PENDING_MAX_LIMIT, &c->max_pending,
                          err, err_len);
    case O_BACKOFF_MAX:
        return set_seconds(o->name, arg, 0.1, 3600, &c->backoff_max_ms, err,
                           err_len);
    case O_ACK_TIMEOUT:
        return set_seconds(o->name, arg, 0.1, 3600, &c->ack_timeout_ms, err,
                           err_len);
    case O_DRAIN_TIMEOUT:
        return set_seconds(o->name, arg, 0, 3600, &c->drain_timeout_ms, err,
                           err_len);
    case O_KEEPALIVE:
        if (parse_seconds(arg, 0, 3600, &ns) < 0 ||
            (ns != 0 && ns < 100000000))
            return fail(err, err_len,
                        "--keepalive '%s': 0 (off) or seconds from 0.1 to "
                        "3600", arg);
        c->keepalive_ms = ns / 1000000;
        return 0;
    case O_SPOOL:
        if (arg[0] == '\0' || strlen(arg) >= OPTIONS_PATH_MAX)
            return fail(err, err_len, "--spool: a directory, up to %d bytes",
                        OPTIONS_PATH_MAX - 1);
        c->spool_dir = arg;
        return 0;
    case O_NO_SPOOL:
        c->no_spool = true;
        return 0;
    case O_SPOOL_MAX:
        if (parse_bytes(arg, SPOOL_MAX_MIN, OPTIONS_SPOOL_MAX_LIMIT,
                        &c->spool_max) < 0)
            return fail(err, err_len,
                        "--spool-max '%s': bytes (k, M, G allowed) from 64k "
                        "to 1024G", arg);
        return 0;
    case O_SEED:
        if (parse_uint(arg, 0, UINT64_MAX, &c->seed) < 0)
            return fail(err, err_len, "--seed '%s': a whole number", arg);
        c->seed_set = true;
        return 0;
    case O_TLS:
        c->tls = true;
        return 0;
    case O_TLS_CA:
    case O_TLS_CERT:
    case O_TLS_KEY:
    case O_TLS_SERVER_NAME:
        if (arg[0] == '\0' || strlen(arg) >= (o->id == O_TLS_SERVER_NAME
                                                  ? OPTIONS_HOST_MAX
                                                  : OPTIONS_PATH_MAX))
            return fail(err, err_len, "--%s: empty or too long", o->name);
        c->tls = true;
        if (o->id == O_TLS_CA)
            c->tls_ca = arg;
        else if (o->id == O_TLS_CERT)
            c->tls_cert = arg;
        else if (o->id == O_TLS_KEY)
            c->tls_key = arg;
        else
            c->tls_server_name = arg;
        return 0;
    case O_TOKEN:
        if (!tokens_valid(arg, strlen(arg)))
            return fail(err, err_len,
                        "--token: %d to %d bytes of A-Z a-z 0-9 . _ ~ + / = -",
                        TOKENS_TOKEN_MIN, TOKENS_TOKEN_MAX);
        c->token = arg;
        return 0;
    case O_TOKEN_FILE:
        if (arg[0] == '\0' || strlen(arg) >= OPTIONS_PATH_MAX)
            return fail(err, err_len, "--token-file: empty or too long");
        c->token_file = arg;
        return 0;
    case O_QUIET:
        c->quiet = true;
        return 0;
    case O_VERBOSE:
        c->verbose = true;
        return 0;
    case O_HELP:
        options_usage(out);
        return OPTIONS_EXIT;
    case O_VERSION:
        fprintf(out, "sensornet-client %s\n", SENSORNET_VERSION);
        return OPTIONS_EXIT;
    }
    return fail(err, err_len, "internal error: option %d", (int)o->id);
}

int
options_parse(struct client_conf *conf, int argc, char **argv, FILE *out,
             char *err, size_t err_len)
{
    struct option longopts[N_OPTS + 1];
    char shortopts[2 * N_OPTS + 2];
    size_t i, s = 0;
    int ch, idx, rc;

    set_defaults(conf);
    shortopts[s++] = ':'; /* report a missing argument as ':' */
    for (i = 0; i < N_OPTS; i++) {
        longopts[i] = (struct option){
            .name = opts[i].name,
            .has_arg = opts[i].arg ? required_argument : no_argument,
            .flag = NULL,
            .val = 256 + (int)i,
        };
        if (opts[i].short_name != 0) {
            shortopts[s++] = opts[i].short_name;
            if (opts[i].arg)
                shortopts[s++] = ':';
        }
    }
    longopts[N_OPTS] = (struct option){0};
    shortopts[s] = '\0';

    optind = 0; /* glibc: full reset, so tests may parse several times */
    opterr = 0;
    for (;;) {
        const struct opt *o = NULL;

        idx = -1;
        ch = getopt_long(argc, argv, shortopts, longopts, &idx);
        if (ch == -1)
            break;
        if (ch == '?')
            return optopt != 0
                       ? fail(err, err_len, "unknown option '-%c'", optopt)
                       : fail(err, err_len, "unknown option '%s'",
                              argv[optind - 1]);
        if (ch == ':')
            return fail(err, err_len, "option '%s' needs a value",
                        argv[optind - 1]);
        if (ch >= 256) {
            o = &opts[ch - 256];
        } else {
            for (i = 0; i < N_OPTS; i++) {
                if (opts[i].short_name == ch)
                    o = &opts[i];
            }
        }
        if (o == NULL)
            return fail(err, err_len, "unknown option");
        rc = apply(conf, o, optarg, out, err, err_len);
        if (rc != 0)
            return rc;
    }
    if (optind < argc)
        return fail(err, err_len, "unexpected argument '%s'", argv[optind]);
    return finish(conf, err, err_len);
}
