/*
 * net: see net.h.
 * SPDX-License-Identifier: MIT
 */
#include "util/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* A decimal port from 1 to 65535, digits only. */
static bool
port_ok(const char *p)
{
    unsigned long v = 0;
    size_t i;

    for (i = 0; p[i] != '\0'; i++) {
        if (p[i] < '0' || p[i] > '9' || i >= 5)
            return false;
        v = v * 10 + (unsigned long)(p[i] - '0');
    }
    return i > 0 && v >= 1 && v <= 65535;
}

int
net_parse_hostport(const char *s, bool numeric_only, struct net_addr *out,
                   char *err, size_t err_len)
{
    char host[256];
    const char *port, *h = s;
    size_t hlen;
    struct addrinfo hints, *res = NULL;
    int rc;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');

        if (close == NULL || close[1] != ':') {
            snprintf(err, err_len, "'%s': expected [ADDRESS]:PORT", s);
            return -EINVAL;
        }
        h = s + 1;
        hlen = (size_t)(close - h);
        port = close + 2;
    } else {
        const char *colon = strrchr(s, ':');

        if (colon == NULL) {
            snprintf(err, err_len, "'%s': expected HOST:PORT", s);
            return -EINVAL;
        }
        if (strchr(s, ':') != colon) {
            snprintf(err, err_len,
                     "'%s': write IPv6 addresses as [ADDRESS]:PORT", s);
            return -EINVAL;
        }
        hlen = (size_t)(colon - s);
        port = colon + 1;
    }
    if (hlen >= sizeof(host)) {
        snprintf(err, err_len, "'%s': host name too long", s);
        return -EINVAL;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (!port_ok(port)) {
        snprintf(err, err_len, "'%s': port must be a number from 1 to 65535",
                 s);
        return -EINVAL;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (hlen == 0 ? AI_PASSIVE : 0);
    if (numeric_only)
        hints.ai_flags |= AI_NUMERICHOST;
    rc = getaddrinfo(hlen == 0 ? NULL : host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, err_len, "'%s': %s", s, gai_strerror(rc));
        return -EINVAL;
    }
    memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
    out->len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int
net_listen(const struct net_addr *addr, bool reuseport, int backlog,
           char *err, size_t err_len)
{
    int fd, one = 1, rc;
    char name[NET_HOST_LEN + 8];

    net_addr_str((const struct sockaddr *)&addr->ss, name, sizeof(name));
    fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, err_len, "socket for %s: %s", name, strerror(errno));
        return rc;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport &&
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
        rc = -errno;
        snprintf(err, err_len, "SO_REUSEPORT on %s: %s", name,
                 strerror(errno));
        goto fail;
    }
    if (addr->ss.ss_family == AF_INET6) {
        /* "[::]:5000" takes IPv4 too, as most daemons do by default. */
        int zero = 0;

        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    }
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0) {
        rc = -errno;
        snprintf(err, err_len, "cannot listen on %s: %s", name,
                 strerror(errno));
        goto fail;
    }
    if (listen(fd, backlog) < 0) {
        rc = -errno;
        snprintf(err, err_len, "listen on %s: %s", name, strerror(errno));
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return rc;
}

int
net_connect_nb(const struct net_addr *addr)
{
    int fd, rc;

    fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 &&
        errno != EINPROGRESS) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

void
net_addr_host(const struct sockaddr *sa, char *host, size_t host_len,
              int *port)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

        inet_ntop(AF_INET, &in->sin_addr, host, (socklen_t)host_len);
        *port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

        /* A v4-mapped peer on a dual-stack listener shows as plain IPv4,
         * as it would on an IPv4 listener. */
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], host,
                      (socklen_t)host_len);
        else
            inet_ntop(AF_INET6, &in6->sin6_addr, host, (socklen_t)host_len);
        *port = ntohs(in6->sin6_port);
    } else {
        snprintf(host, host_len, "?");
        *port = 0;
    }
}

void
net_addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[NET_HOST_LEN];
    int port;

    net_addr_host(sa, host, sizeof(host), &port);
    if (strchr(host, ':') != NULL)
        snprintf(buf, len, "[%s]:%d", host, port);
    else
        snprintf(buf, len, "%s:%d", host, port);
}

void
net_tune_conn(int fd)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
}
