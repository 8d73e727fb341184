/*
 * net: address parsing and socket set-up shared by the server and the client
 * (anet in Redis). Blocking name resolution happens only here and only at
 * start-up or reconnect time, never on a server event loop.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_NET_H
#define SN_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define NET_ERR_LEN 256
/* Longest "host" text net_addr_host() writes, IPv6 included. */
#define NET_HOST_LEN 64

struct net_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

/*
 * Parse "HOST:PORT", "[V6]:PORT" or ":PORT" (all addresses) and resolve it.
 * numeric_only refuses names (no DNS). Returns 0 or a negative errno with a
 * message in err.
 */
int net_parse_hostport(const char *s, bool numeric_only, struct net_addr *out,
                       char *err, size_t err_len);

/*
 * A non-blocking, close-on-exec listening TCP socket bound to addr.
 * reuseport sets SO_REUSEPORT so that several event loops can each own one
 * listener on the same port. Returns the fd or a negative errno (err set).
 */
int net_listen(const struct net_addr *addr, bool reuseport, int backlog,
               char *err, size_t err_len);

/* Start a non-blocking connect; returns the fd (connect may be in progress)
 * or a negative errno. */
int net_connect_nb(const struct net_addr *addr);

/* Numeric host of a socket address ("10.0.2.135", "::1") and its port. */
void net_addr_host(const struct sockaddr *sa, char *host, size_t host_len,
                   int *port);

/* "HOST:PORT" or "[V6]:PORT" of a socket address. */
void net_addr_str(const struct sockaddr *sa, char *buf, size_t len);

/* TCP_NODELAY and SO_KEEPALIVE on a connected socket; errors ignored. */
void net_tune_conn(int fd);

#endif
