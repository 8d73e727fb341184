/*
 * options: sensornet-client's command line. One table drives getopt_long,
 * the defaults, the limits and --help, so they cannot drift apart.
 *
 * options_parse() fills a struct client_conf from argv and checks every
 * value; main() then only acts on it. Strings borrow from argv.
 * Not thread-safe (getopt): call once, from main, before anything else.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_CLIENT_OPTIONS_H
#define SN_CLIENT_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "client/sim.h"
#include "client/wire.h"

#define OPTIONS_ERR_LEN 256
#define OPTIONS_SENSORS_MAX 100000
#define OPTIONS_WINDOW_MAX 1000000
/* Where the spools live without --spool and without $STATE_DIRECTORY. */
#define OPTIONS_SPOOL_DEFAULT "sensornet-spool"
#define OPTIONS_SPOOL_MAX_LIMIT (UINT64_C(1) << 40)
#define OPTIONS_PATH_MAX 1024
/* Longest host name in --server or --tls-server-name. */
#define OPTIONS_HOST_MAX 256

struct client_conf {
    const char *server;        /* "HOST:PORT", borrowed */
    enum sim_kind kind;
    const char *id;            /* base id: --id or the kind's default */
    int64_t interval_ns;       /* 0: as fast as the window allows */
    uint64_t count;            /* acked readings per sensor; 0: no limit */
    enum wire_format format;
    uint32_t sensors;          /* >= 1 */
    uint32_t window;           /* lines in flight per connection */
    uint32_t max_pending;      /* readings kept per sensor */
    int64_t backoff_max_ms;
    int64_t ack_timeout_ms;    /* lines in flight without reply: reconnect */
    int64_t drain_timeout_ms;  /* on SIGTERM/SIGINT */
    int64_t keepalive_ms;      /* PING after this long without input; 0 off */
    /* Base directory of the spools (sensor ID's is <spool_dir>/ID), or
     * NULL with --no-spool. Borrowed from argv, or spool_dir_buf. */
    const char *spool_dir;
    uint64_t spool_max;        /* bytes of spool per sensor */
    bool no_spool;
    char spool_dir_buf[OPTIONS_PATH_MAX]; /* $STATE_DIRECTORY's first entry */
    bool quiet;                /* no per-reading lines */
    bool verbose;              /* debug messages on stderr */
    bool seed_set;
    uint64_t seed;
    /* TLS (docs/client.md "TLS"): any --tls-* option turns tls on. */
    bool tls;
    const char *tls_ca;          /* NULL: the system's trust store */
    const char *tls_cert, *tls_key; /* client certificate, both or none */
    /* Name the server's certificate must carry, and SNI: --tls-server-name
     * or the host of --server (tls_name_buf). */
    const char *tls_server_name;
    char tls_name_buf[OPTIONS_HOST_MAX];
    /* --tokens on the server: "AUTH <id> <token>" first on each
     * connection. At most one of the two is set. */
    const char *token;           /* --token, checked (tokens_valid) */
    const char *token_file;      /* --token-file, loaded by main */
};

enum options_rc {
    OPTIONS_RUN = 0,         /* conf filled: run */
    OPTIONS_EXIT = 1,        /* --help or --version printed: exit 0 */
    OPTIONS_E_USAGE = -1,    /* bad usage, message in err: exit 2 */
};

/*
 * Parse argv into conf (defaults first). --help and --version print to
 * out. Returns an enum options_rc; on OPTIONS_E_USAGE err holds one line
 * without the program name.
 */
int options_parse(struct client_conf *conf, int argc, char **argv, FILE *out,
                 char *err, size_t err_len);

/* The --help text. */
void options_usage(FILE *out);

/* The version string printed by --version. */
const char *options_version(void);

#endif
