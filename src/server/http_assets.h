/*
 * http_assets: the dashboard's files (src/server/dashboard/), embedded in
 * the binary. The table is generated at build time by
 * scripts/embed-assets.sh (src/server/dashboard/dashboard.mk), so the
 * server needs no files at run time and no network: no CDN.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_HTTP_ASSETS_H
#define SN_HTTP_ASSETS_H

#include <stddef.h>

struct http_asset {
    const char *path;          /* "/index.html" */
    const char *type;          /* its Content-Type */
    const unsigned char *data; /* len bytes (a NUL follows, not counted) */
    size_t len;
};

extern const struct http_asset http_assets[];
extern const size_t http_n_assets;

#endif
