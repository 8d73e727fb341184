/*
 * log: see log.h. One formatted buffer, one write(2), so lines from
 * different threads never interleave.
 * SPDX-License-Identifier: MIT
 */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *log_prog = "sensornet";
static volatile int log_level = LOG_INFO;
static const char *level_names[] = {"error", "warn", "info", "debug"};

void
log_init(const char *prog, enum log_level level)
{
    log_prog = prog;
    log_level = level;
}

void
log_set_level(enum log_level level)
{
    log_level = level;
}

bool
log_enabled(enum log_level level)
{
    return (int)level <= log_level;
}

void
log_msg(enum log_level level, const char *func, const char *fmt, ...)
{
    char line[1024];
    size_t n;
    int r;
    va_list ap;

    if (!log_enabled(level))
        return;
    if (level == LOG_DEBUG)
        r = snprintf(line, sizeof(line), "%s: %s: %s: ", log_prog,
                     level_names[level], func);
    else
        r = snprintf(line, sizeof(line), "%s: %s: ", log_prog,
                     level_names[level]);
    n = r < 0 ? 0 : (size_t)r;
    if (n < sizeof(line)) {
        va_start(ap, fmt);
        r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        va_end(ap);
        if (r > 0)
            n += (size_t)r;
    }
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    /* Best effort: nowhere to report a failed write to stderr. */
    if (write(STDERR_FILENO, line, n) < 0)
        return;
}

bool
log_ratelimit(struct log_ratelimit *rl, int64_t now_ms, int interval_ms,
              uint64_t *suppressed)
{
    if (now_ms < rl->next_ms) {
        rl->suppressed++;
        return false;
    }
    rl->next_ms = now_ms + interval_ms;
    *suppressed = rl->suppressed;
    rl->suppressed = 0;
    return true;
}
