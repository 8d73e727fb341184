/*
 * fuzz_config: the collector's configuration file parser (config_parse with
 * -c FILE). The input goes into a memfd whose /proc path is the file, so the
 * real code path runs, fopen and fgets included.
 * SPDX-License-Identifier: MIT
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "server/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    char *argv[] = {"sensornet-server", "-c", path, "-t", NULL};
    struct server_conf cf;
    char err[CONFIG_ERR_LEN];
    int rc;

    if (fd < 0) {
        fd = memfd_create("fuzz_config", 0);
        if (fd < 0)
            abort();
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        abort();
    rc = config_parse(&cf, 4, argv, err, sizeof(err));
    if (rc == 0) {
        /* Whatever parsed must respect the table's limits. */
        if (cf.n_listen == 0 || cf.n_listen > CONFIG_MAX_LISTEN ||
            cf.max_line < 64 || cf.max_line > 65536 || cf.batch_max < 64)
            abort();
    }
    config_free(&cf);
    return 0;
}
