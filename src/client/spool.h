/*
 * spool: one sensor's readings on disk until the server has settled them
 * (acknowledged or refused), so that neither a lost connection nor a
 * kill -9 of the client loses a reading that was produced.
 *
 * A spool is a directory holding append-only segment files and one small
 * ack-state file:
 *
 *     <dir>/0000000000000001.seg   records with seq 1 .. k   (sealed)
 *     <dir>/00000000000003e9.seg   records with seq 1001 ..  (being written)
 *     <dir>/ack                    "every seq <= N is settled", last stamp
 *
 * A segment is the 8-byte magic "SNSPOOL1" followed by records:
 *
 *     u32 len | u32 crc32c(len bytes + payload) | payload (len bytes)
 *     payload = u64 seq | i64 ts_ns | f64 value | the reading's wire line
 *
 * all little-endian. Sequence numbers start at 1, grow by one per record,
 * and are never reused; a segment is named by the seq of its first record.
 *
 * Invariants:
 * - Records are appended to the last segment only, buffered in memory and
 *   made durable by spool_sync() (write, then fdatasync): one fsync per
 *   batch, never per record. A failed write or fdatasync truncates the file
 *   back to its last durable length and keeps the buffer for the next try.
 * - At open, every segment is scanned; the first record with a bad length,
 *   a bad CRC or an unexpected seq ends its segment, and the file is cut
 *   there (a torn tail after a crash).
 * - The ack state is only ever replaced whole (write ack.tmp, fsync,
 *   rename, fsync the directory). It may lag behind the truth by
 *   SPOOL_ACK_INTERVAL_MS: after a crash those readings are resent, which
 *   the store's (sensor, quantity, ts) key makes harmless.
 * - A segment whose records are all settled is deleted, except the last;
 *   once every record is settled, the last one is started over (renamed to
 *   the next seq and cut to its magic) when it holds a quarter of the
 *   rotation size, or settled records that could not be written yet.
 * - The segment files never exceed max_bytes in all: when an append would
 *   pass it, the oldest segment is deleted (policy "drop oldest"). Its
 *   records not yet handed out by spool_read() are counted as dropped;
 *   the caller learns through spool_evicted_through() which of the records
 *   it holds in memory lost their disk copy.
 * - The directory is locked (flock) while open: two processes never share
 *   a spool.
 *
 * Reading: spool_read() hands out records in seq order, from the oldest
 * unsettled one, exactly once per open; the caller keeps what it read in
 * memory until it can settle it (the pending queue) and calls
 * spool_settle() with the highest seq below which everything is settled.
 *
 * Not thread-safe: one sensor, one event loop. See docs/internals/spool.md.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_CLIENT_SPOOL_H
#define SN_CLIENT_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SPOOL_MAGIC "SNSPOOL1"
#define SPOOL_MAGIC_LEN 8
/* Record header: length and CRC. */
#define SPOOL_HDR_LEN 8
/* Payload before the line: seq, ts_ns, value. */
#define SPOOL_FIXED_LEN 24
/* Longest line a record carries (the client's WIRE_LINE_MAX). */
#define SPOOL_LINE_MAX 256
#define SPOOL_REC_MAX (SPOOL_HDR_LEN + SPOOL_FIXED_LEN + SPOOL_LINE_MAX)

/* Smallest and default size bound of one spool (--spool-max). */
#define SPOOL_MAX_MIN (64 * 1024)
#define SPOOL_MAX_DEFAULT (64 * 1024 * 1024)
/* Segment rotation size: this, or max_bytes / 4 if smaller. */
#define SPOOL_SEG_DEFAULT (4 * 1024 * 1024)
/* Most bytes buffered between two syncs; an append past it syncs first. */
#define SPOOL_WBUF_MAX (256 * 1024)
/* The ack state is rewritten at most this often (and at close). */
#define SPOOL_ACK_INTERVAL_MS 1000

/*
 * The system calls on the durability path (SQLite's aSyscall[]): tests
 * replace them to make writes, syncs and renames fail. Every member is
 * required; spool_io_default holds the real ones.
 */
struct spool_io {
    ssize_t (*write)(int fd, const void *buf, size_t len);
    ssize_t (*pread)(int fd, void *buf, size_t len, off_t off);
    int (*fdatasync)(int fd);
    int (*fsync)(int fd);
    int (*ftruncate)(int fd, off_t len);
    int (*renameat)(int olddirfd, const char *oldpath, int newdirfd,
                    const char *newpath);
};

extern const struct spool_io spool_io_default;

struct spool_conf {
    const char *dir;           /* borrowed; created (mode 0700) if missing */
    uint64_t max_bytes;        /* >= SPOOL_MAX_MIN */
    uint64_t seg_bytes;        /* 0: min(SPOOL_SEG_DEFAULT, max_bytes / 4) */
    const struct spool_io *io; /* borrowed; NULL: spool_io_default */
};

/* One record as spool_read() returns it. */
struct spool_rec {
    uint64_t seq;
    int64_t ts_ns;
    double value;
    size_t line_len;
    char line[SPOOL_LINE_MAX];
};

/* What spool_open() found. */
struct spool_open_info {
    uint64_t resumed;   /* unsettled records found (to be resent) */
    uint64_t cut_bytes; /* bytes cut from torn or corrupt segment tails */
    uint32_t n_cut;     /* segments that were cut */
};

struct spool;

/*
 * Open (or create) the spool in conf->dir: lock it, read the ack state,
 * scan the segments, cut torn tails and delete settled segments. Returns 0
 * and *out, or a negative errno with one line in err: -EWOULDBLOCK (locked
 * by another process), -EINVAL (a file that is not a spool segment, an
 * unusable conf), or the error of a failed system call. info may be NULL.
 */
int spool_open(const struct spool_conf *conf, struct spool **out,
               struct spool_open_info *info, char *err, size_t err_len);

/* Sync what is buffered and write the ack state (best effort), close and
 * free. spool_close(NULL) is a no-op. */
void spool_close(struct spool *sp);

/*
 * Append one reading: ts_ns, value and its wire line (line, len; copied,
 * 1..SPOOL_LINE_MAX bytes). Sets *seq. The record is only buffered:
 * spool_sync() makes it durable. May rotate to a new segment (syncing the
 * old one first), and may delete the oldest segment when the spool is full.
 * Returns 0, -EINVAL (bad length), or the error of a sync that had to
 * happen first and failed (nothing appended then; try again later).
 */
int spool_append(struct spool *sp, int64_t ts_ns, double value,
                 const char *line, size_t len, uint64_t *seq);

/*
 * Make every appended record durable (write + fdatasync) and, when due or
 * force is true, rewrite the ack state. now_ms is a monotonic clock.
 * Returns 0 or the first error (the records stay buffered and are written
 * again by the next call).
 */
int spool_sync(struct spool *sp, int64_t now_ms, bool force);

/*
 * The next record not yet handed out, in seq order. Returns 0, -ENOENT
 * when every record has been handed out, or -EIO if the disk failed (try
 * again later). A record found corrupt (damaged on disk since the open)
 * ends its segment: the rest of it is counted as dropped, and reading goes
 * on with the next segment.
 */
int spool_read(struct spool *sp, struct spool_rec *out);

/*
 * Every record with a seq <= seq is settled (acknowledged or refused).
 * Settling is clamped to what was handed out; settling less than before is
 * a no-op. Deletes segments that became fully settled and may start the
 * last one over (see above). Returns 0 or the error of a failed unlink or
 * rename (harmless: tried again at the next settle).
 */
int spool_settle(struct spool *sp, uint64_t seq);

/* Records appended and not yet handed out by spool_read(). */
uint64_t spool_unread(const struct spool *sp);
/* The seq the next append gets (1 for a new spool): over the spool's
 * lifetime, spool_next_seq() - 1 readings were appended. */
uint64_t spool_next_seq(const struct spool *sp);
/* Every seq <= this is settled (acknowledged, refused or dropped). */
uint64_t spool_acked(const struct spool *sp);
/* Records dropped by the full policy (or found corrupt) since the open,
 * among those never handed out. */
uint64_t spool_dropped(const struct spool *sp);
/* Records with a seq <= this lost their disk copy to the full policy. */
uint64_t spool_evicted_through(const struct spool *sp);
/* The highest timestamp ever appended (kept across restarts), or 0. */
int64_t spool_last_ts(const struct spool *sp);
/* Bytes of segment files, buffered bytes included. */
uint64_t spool_bytes(const struct spool *sp);
/* True while records are buffered and not yet durable. */
bool spool_dirty(const struct spool *sp);

/* CRC-32C (Castagnoli) of (p, len), continuing from crc (0 to start). */
uint32_t spool_crc32c(uint32_t crc, const void *p, size_t len);

#endif
