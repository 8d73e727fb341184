/*
 * logfile: log.txt, the original prototype's human log ("[2025-06-11
 * 10:15:42] Recebido de ('10.0.2.135', 54812): Sensor1 - Temperatura:
 * 25.34°C"). Network threads format lines into batches; only the writer
 * thread writes the file, in large appends.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_LOGFILE_H
#define SN_LOGFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "[YYYY-MM-DD HH:MM:SS] " is this long. */
#define LOGFILE_STAMP_LEN 22

struct logfile;

/* Open path for appending (created 0644). NULL with err set on failure. */
struct logfile *logfile_open(const char *path, char *err, size_t err_len);
/* Append all of (p, len); 0 or -errno. *written says how much went out,
 * so a retry after ENOSPC continues where it stopped. */
int logfile_write(struct logfile *lf, const char *p, size_t len,
                  size_t *written);
int logfile_sync(struct logfile *lf);
/* Close and reopen the same path (SIGHUP, logrotate). 0 or -errno. */
int logfile_reopen(struct logfile *lf);
/* logfile_close(NULL) is a no-op. */
void logfile_close(struct logfile *lf);

/*
 * A per-thread cache of the "[YYYY-MM-DD HH:MM:SS] " prefix: localtime_r
 * runs once per second, not once per line.
 */
struct logfile_stamp {
    int64_t sec;
    bool utc;
    char text[LOGFILE_STAMP_LEN + 1];
};
void logfile_stamp_init(struct logfile_stamp *s, bool utc);
/* The prefix for wall-clock time real_ns (LOGFILE_STAMP_LEN bytes). */
const char *logfile_stamp(struct logfile_stamp *s, int64_t real_ns);

#endif
