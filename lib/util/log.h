/*
 * log: diagnostic messages to stderr (journald picks them up). Not log.txt:
 * that is the server's reading log, written by its writer thread.
 *
 * Thread-safe: each message is formatted into one buffer and written with
 * one write(2). Payloads are only logged at debug level.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_LOG_H
#define SN_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Set the lowest level printed and the program name shown. */
void log_init(const char *prog, enum log_level level);
void log_set_level(enum log_level level);
bool log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_error(...) log_msg(LOG_ERROR, __func__, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __func__, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __func__, __VA_ARGS__)
#define log_debug(...)                                                        \
    do {                                                                      \
        if (log_enabled(LOG_DEBUG))                                           \
            log_msg(LOG_DEBUG, __func__, __VA_ARGS__);                        \
    } while (0)

/*
 * Rate limiter for messages one peer can trigger at will (collectd's
 * c_complain): log_ratelimit() returns true at most once per interval_ms and
 * counts the suppressed calls, reported by the next message through
 * *suppressed. Not thread-safe: keep one per thread or per connection.
 */
struct log_ratelimit {
    int64_t next_ms;
    uint64_t suppressed;
};
bool log_ratelimit(struct log_ratelimit *rl, int64_t now_ms, int interval_ms,
                   uint64_t *suppressed);

#endif
