/*
 * config: the collector's options. One table drives the command line, the
 * configuration file (-c FILE: "key value" lines, '#' comments) and
 * --help; command-line options override the file.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_CONFIG_H
#define SN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "server/store.h"

#define CONFIG_MAX_LISTEN 8
#define CONFIG_ERR_LEN 512

struct server_conf {
    char *listen[CONFIG_MAX_LISTEN]; /* "HOST:PORT" each */
    size_t n_listen;
    char *log_path;       /* NULL: no log.txt */
    bool log_utc;
    char *db_path;
    char *postgres;       /* NULL: SQLite */
    enum store_fsync fsync;
    int64_t commit_interval_ms;
    uint64_t batch_max;
    uint64_t threads;     /* 0: one per core */
    uint64_t max_conns;
    uint64_t max_line;
    int64_t silence_ms;
    int64_t idle_timeout_ms;
    int64_t max_conn_age_ms; /* 0: no limit */
    int64_t retention_ms; /* 0: keep everything */
    int64_t shutdown_timeout_ms;
    char *http;           /* NULL: off */
    char *tokens;         /* --tokens FILE, or NULL: open */
    char *graphite_prefix;          /* stripped from Graphite paths */
    uint64_t graphite_sensor_parts; /* 0: all but the last component */
    uint64_t http_max_body; /* bytes */
    char *mqtt_listen;    /* NULL: MQTT only on the sensor port */
    uint64_t mqtt_max_packet;   /* bytes, fixed header included */
    uint64_t mqtt_max_inflight; /* QoS 1 PUBLISHes awaiting PUBACK */
    char *tls_cert;       /* PEM chain; with tls_key turns TLS on */
    char *tls_key;        /* PEM private key */
    char *tls_ca;         /* PEM CAs: client certificates required */
    bool verbose;
    bool check_only;
};

/*
 * Fill conf from defaults, then the file given with -c, then argv.
 * Returns 0, 1 when the program should exit 0 (--help, --version), or -1
 * with a message in err (the caller prints it and exits 2).
 */
int config_parse(struct server_conf *conf, int argc, char **argv, char *err,
                 size_t err_len);
/* Free the strings config_parse allocated. */
void config_free(struct server_conf *conf);
void config_usage(FILE *out);

#endif
