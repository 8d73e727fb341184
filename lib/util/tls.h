/*
 * tls: TLS through OpenSSL for non-blocking sockets driven by an event loop,
 * shared by the collector (server side: the sensor and MQTT ports) and
 * sensornet-client (client side). docs/security.md section 2 is the user's
 * view; this header is the contract of the byte I/O layer.
 *
 * A struct tls_ctx holds the certificates and settings (an SSL_CTX); it is
 * loaded once at start-up and then only read, so any thread may create
 * connections from it. A struct tls is one connection (an SSL) on a socket
 * the caller owns; it belongs to the thread of that socket's loop.
 *
 * Non-blocking contract: every call that returns -EAGAIN says, through
 * tls_want_write(), whether it waits for the socket to become writable
 * (arm EPOLLOUT) or readable (EPOLLIN), and must be repeated when it is.
 * A write that returned -EAGAIN must be repeated with the same bytes first
 * (more may follow them; the buffer may move: SSL_MODE_ENABLE_PARTIAL_WRITE
 * and SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER are set).
 *
 * Memory: SSL_MODE_RELEASE_BUFFERS is set, so an idle connection holds no
 * record buffers (OpenSSL 3.0's per-connection state remains: about 14 KiB
 * of the collector's RSS per idle TLS connection, docs/security.md 2.2).
 * read_ahead stays off: OpenSSL takes one record at a
 * time from the socket, so after a read into a buffer of at least
 * TLS_RECORD_MAX bytes nothing is left inside OpenSSL that level-triggered
 * epoll would not report.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_TLS_H
#define SN_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Size for the err buffers below. */
#define TLS_ERR_LEN 256
/* Largest plaintext of one TLS record. */
#define TLS_RECORD_MAX 16384
/* First byte of every TLS connection: a handshake record. */
#define TLS_HANDSHAKE_BYTE 0x16

struct tls_ctx;
struct tls;

/*
 * The collector's context: certificate chain cert_file and its key_file
 * (PEM), TLS 1.2 at least. With ca_file (PEM CAs), every client must
 * present a certificate those CAs signed (SSL_VERIFY_PEER |
 * SSL_VERIFY_FAIL_IF_NO_PEER_CERT). Paths are borrowed. Returns NULL with a
 * one-line reason naming the file in err. Start-up only (blocking reads).
 */
struct tls_ctx *tls_ctx_server(const char *cert_file, const char *key_file,
                               const char *ca_file, char *err,
                               size_t err_len);

/*
 * A client's context: the server is verified against ca_file, or the
 * system's trust store when ca_file is NULL; cert_file/key_file (both or
 * neither) are the client certificate offered to servers that ask.
 * Returns NULL with a reason naming the file in err.
 */
struct tls_ctx *tls_ctx_client(const char *ca_file, const char *cert_file,
                               const char *key_file, char *err,
                               size_t err_len);

/*
 * SIGHUP: load the files again into ctx (made by tls_ctx_server), in
 * place. Connections made from then on use the new certificate; those
 * already open keep theirs. On error (the reason, naming the file, in
 * err) ctx is unchanged. Any thread; tls_new may run meanwhile.
 */
int tls_ctx_reload(struct tls_ctx *ctx, const char *cert_file,
                   const char *key_file, const char *ca_file, char *err,
                   size_t err_len);

/* Free a context (after every struct tls made from it); NULL: no-op. */
void tls_ctx_free(struct tls_ctx *ctx);

/* True if the context requires client certificates (server, ca_file). */
bool tls_ctx_verifies_peer(const struct tls_ctx *ctx);

/*
 * One connection on the connected, non-blocking socket fd (borrowed: the
 * caller closes it after tls_free). For a client context, server_name
 * (copied by OpenSSL) is both the SNI name (not sent for an IP address)
 * and the name the certificate must carry (a DNS name, or an IP address
 * matched against the IP SANs). NULL with errno set (ENOMEM).
 */
struct tls *tls_new(struct tls_ctx *ctx, int fd, const char *server_name);

/* Free a connection; NULL: no-op. Sends nothing (see tls_close). */
void tls_free(struct tls *t);

/*
 * Advance the handshake. Returns 0 once it is complete, -EAGAIN (see
 * tls_want_write), or on failure (the connection is then only good for
 * closing):
 *   -EPROTONOSUPPORT  server side: the peer's first byte is not a TLS
 *                     handshake record (plain text on a TLS port); nothing
 *                     has been read from the socket, so the caller may
 *                     answer in plain text
 *   -ECONNRESET       the peer closed or reset the connection
 *   -EPROTO           the handshake failed; err holds OpenSSL's reason and,
 *                     for a certificate, the verification result ("wrong
 *                     CA", "certificate has expired", "no certificate")
 */
int tls_handshake(struct tls *t, char *err, size_t err_len);

/* True once tls_handshake() has returned 0. */
bool tls_established(const struct tls *t);

/* After -EAGAIN from any call here: true if it waits for writability. */
bool tls_want_write(const struct tls *t);

/*
 * Read up to len plaintext bytes. Returns the count (> 0), 0 at the end of
 * the stream (see tls_eof_clean), -EAGAIN, or another -errno (-EPROTO for
 * a TLS error, -ECONNRESET, ...).
 */
ssize_t tls_read(struct tls *t, void *buf, size_t len);

/* Plaintext bytes OpenSSL holds from a record already read (a read into a
 * buffer smaller than the record leaves the rest there, where epoll cannot
 * see it): read again before waiting. */
bool tls_pending(const struct tls *t);

/*
 * Write up to len bytes. Returns the count written (> 0; at most one
 * record's worth, so call again for the rest), -EAGAIN, or another -errno.
 */
ssize_t tls_write(struct tls *t, const void *buf, size_t len);

/*
 * After tls_read() returned 0: true if the peer ended with a close_notify
 * alert, false if the TCP stream just ended. Without close_notify the end
 * may have been forged by someone on the path at a record boundary, so a
 * partial last line must not be trusted.
 */
bool tls_eof_clean(const struct tls *t);

/* Best effort, never blocks: send close_notify once if the connection is
 * healthy and established. The caller closes the socket afterwards. */
void tls_close(struct tls *t);

/*
 * The subject CN of the verified peer certificate into buf (NUL-ended).
 * Returns its length, or -ENOENT (no verified certificate, no CN),
 * -EINVAL (a CN with control bytes or NULs), -ENAMETOOLONG (>= len).
 */
int tls_peer_cn(const struct tls *t, char *buf, size_t len);

/* Why the last call failed with -EPROTO, into buf ("SSL routines: tlsv13
 * alert certificate required"). */
void tls_error(const struct tls *t, char *buf, size_t len);

/* "TLSv1.3" and the like, for debug logs. */
const char *tls_version(const struct tls *t);

#endif
