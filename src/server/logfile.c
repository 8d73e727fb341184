/*
 * logfile: see logfile.h.
 * SPDX-License-Identifier: MIT
 */
#include "server/logfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct logfile {
    int fd;
    char *path;
};

static int
open_path(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

struct logfile *
logfile_open(const char *path, char *err, size_t err_len)
{
    struct logfile *lf = calloc(1, sizeof(*lf));

    if (lf == NULL || (lf->path = strdup(path)) == NULL) {
        snprintf(err, err_len, "out of memory");
        free(lf);
        return NULL;
    }
    lf->fd = open_path(path);
    if (lf->fd < 0) {
        snprintf(err, err_len, "cannot open log %s: %s", path,
                 strerror(errno));
        free(lf->path);
        free(lf);
        return NULL;
    }
    return lf;
}

int
logfile_write(struct logfile *lf, const char *p, size_t len, size_t *written)
{
    while (*written < len) {
        ssize_t n = write(lf->fd, p + *written, len - *written);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        *written += (size_t)n;
    }
    return 0;
}

int
logfile_sync(struct logfile *lf)
{
    if (fdatasync(lf->fd) < 0)
        return -errno;
    return 0;
}

int
logfile_reopen(struct logfile *lf)
{
    int fd = open_path(lf->path);

    if (fd < 0)
        return -errno;
    close(lf->fd);
    lf->fd = fd;
    return 0;
}

void
logfile_close(struct logfile *lf)
{
    if (lf == NULL)
        return;
    close(lf->fd);
    free(lf->path);
    free(lf);
}

void
logfile_stamp_init(struct logfile_stamp *s, bool utc)
{
    s->sec = -1;
    s->utc = utc;
    s->text[0] = '\0';
}

const char *
logfile_stamp(struct logfile_stamp *s, int64_t real_ns)
{
    int64_t sec = real_ns / 1000000000;
    time_t t = (time_t)sec;
    struct tm tm;

    if (sec != s->sec) {
        if (s->utc)
            gmtime_r(&t, &tm);
        else
            localtime_r(&t, &tm);
        if (strftime(s->text, sizeof(s->text), "[%Y-%m-%d %H:%M:%S] ",
                     &tm) != LOGFILE_STAMP_LEN)
            snprintf(s->text, sizeof(s->text), "[%19s] ", "?");
        s->sec = sec;
    }
    return s->text;
}
