/*
 * spool: see spool.h and docs/internals/spool.md.
 *
 * In memory the spool is the list of its segments, oldest first, each with
 * its first seq, its record count and its durable size; the last one also
 * owns the write buffer (the bytes after its durable size). Three positions
 * move forward only:
 *
 *     acked  <  read_seq  <=  next_seq
 *     (settled) (next to hand out) (next to append)
 *
 * and a record's disk copy goes away only when it is settled (segment
 * deleted after spool_settle) or evicted by the full policy.
 * SPDX-License-Identifier: MIT
 */
#include "client/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/strparse.h"

#define ACK_NAME "ack"
#define ACK_TMP_NAME "ack.tmp"
#define ACK_TAG "snspool-ack 1"
/* "0123456789abcdef.seg" */
#define SEG_NAME_LEN 20
/* Read buffer of the open-time scan. */
#define SCAN_BUF (64 * 1024)

_Static_assert(sizeof(SPOOL_MAGIC) - 1 == SPOOL_MAGIC_LEN, "magic length");
_Static_assert(SCAN_BUF >= 2 * SPOOL_REC_MAX, "scan buffer too small");

struct seg {
    uint64_t first; /* seq of its first record: its name */
    uint64_t n;     /* records (buffered ones included, last segment) */
    uint64_t size;  /* durable bytes, magic included */
    uint64_t open_off; /* at open: offset of its first unsettled record */
};

struct spool {
    const struct spool_io *io;
    char *dir;
    uint64_t max_bytes;
    uint64_t seg_bytes;
    int dfd; /* the directory: locked, fsynced, base of openat */
    int wfd; /* the last segment */
    int rfd; /* a sealed segment being read, or -1 */
    uint64_t rfd_first;

    struct seg *segs;
    size_t n_segs, cap_segs;
    uint64_t bytes; /* durable bytes of all segments */

    char *wbuf; /* records appended, not yet durable */
    size_t wlen, wcap;
    uint64_t wn; /* records in wbuf */

    uint64_t next_seq;
    uint64_t acked;
    uint64_t read_seq;
    size_t read_idx;   /* segment of the next record to hand out */
    uint64_t read_off; /* its offset there */
    uint64_t n_unread;
    uint64_t dropped;
    uint64_t evicted_through;
    int64_t last_ts;

    bool ack_dirty; /* acked or last_ts changed since the ack file */
    int64_t ack_next_ms;
    bool dir_dirty; /* a segment was created: fsync the directory */
    bool broken;    /* the last segment has bytes past its durable size
                     * that could not be cut: write to a new one */
};

static ssize_t
sys_write(int fd, const void *buf, size_t len)
{
    return write(fd, buf, len);
}

static ssize_t
sys_pread(int fd, void *buf, size_t len, off_t off)
{
    return pread(fd, buf, len, off);
}

static int
sys_fdatasync(int fd)
{
    return fdatasync(fd);
}

static int
sys_fsync(int fd)
{
    return fsync(fd);
}

static int
sys_ftruncate(int fd, off_t len)
{
    return ftruncate(fd, len);
}

static int
sys_renameat(int olddirfd, const char *oldpath, int newdirfd,
             const char *newpath)
{
    return renameat(olddirfd, oldpath, newdirfd, newpath);
}

const struct spool_io spool_io_default = {
    .write = sys_write,
    .pread = sys_pread,
    .fdatasync = sys_fdatasync,
    .fsync = sys_fsync,
    .ftruncate = sys_ftruncate,
    .renameat = sys_renameat,
};

/* ---- CRC-32C and encoding ---------------------------------------------- */

static uint32_t crc_table[256];
static bool crc_ready;

/* The reflected Castagnoli polynomial, one byte at a time (table-driven).
 * The table is built on first use: the client has one thread. */
static void
crc_init(void)
{
    uint32_t i, j, c;

    for (i = 0; i < 256; i++) {
        c = i;
        for (j = 0; j < 8; j++)
            c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc_table[i] = c;
    }
    crc_ready = true;
}

uint32_t
spool_crc32c(uint32_t crc, const void *p, size_t len)
{
    const unsigned char *b = p;
    size_t i;

    if (!crc_ready)
        crc_init();
    crc = ~crc;
    for (i = 0; i < len; i++)
        crc = crc_table[(crc ^ b[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static void
put_le32(unsigned char *p, uint32_t v)
{
    int i;

    for (i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void
put_le64(unsigned char *p, uint64_t v)
{
    int i;

    for (i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t
get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t
get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;

    for (i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Encode one record into p (room for SPOOL_REC_MAX); returns its size. */
static size_t
encode(unsigned char *p, uint64_t seq, int64_t ts_ns, double value,
       const char *line, size_t len)
{
    uint32_t plen = (uint32_t)(SPOOL_FIXED_LEN + len);
    uint64_t bits;
    uint32_t crc;

    memcpy(&bits, &value, sizeof(bits));
    put_le32(p, plen);
    put_le64(p + SPOOL_HDR_LEN, seq);
    put_le64(p + SPOOL_HDR_LEN + 8, (uint64_t)ts_ns);
    put_le64(p + SPOOL_HDR_LEN + 16, bits);
    memcpy(p + SPOOL_HDR_LEN + SPOOL_FIXED_LEN, line, len);
    crc = spool_crc32c(0, p, 4);
    crc = spool_crc32c(crc, p + SPOOL_HDR_LEN, plen);
    put_le32(p + 4, crc);
    return SPOOL_HDR_LEN + plen;
}

/*
 * Decode the record at (p, avail). Returns 0 with *out and *rec_len set,
 * -EAGAIN if the bytes end inside it (a torn tail), or -EBADMSG for an
 * impossible length or a CRC mismatch.
 */
static int
decode(const unsigned char *p, size_t avail, struct spool_rec *out,
       size_t *rec_len)
{
    uint32_t plen, crc;
    uint64_t bits;

    if (avail < SPOOL_HDR_LEN)
        return -EAGAIN;
    plen = get_le32(p);
    if (plen <= SPOOL_FIXED_LEN || plen > SPOOL_FIXED_LEN + SPOOL_LINE_MAX)
        return -EBADMSG;
    if (avail < SPOOL_HDR_LEN + (size_t)plen)
        return -EAGAIN;
    crc = spool_crc32c(0, p, 4);
    crc = spool_crc32c(crc, p + SPOOL_HDR_LEN, plen);
    if (crc != get_le32(p + 4))
        return -EBADMSG;
    out->seq = get_le64(p + SPOOL_HDR_LEN);
    out->ts_ns = (int64_t)get_le64(p + SPOOL_HDR_LEN + 8);
    bits = get_le64(p + SPOOL_HDR_LEN + 16);
    memcpy(&out->value, &bits, sizeof(bits));
    out->line_len = plen - SPOOL_FIXED_LEN;
    memcpy(out->line, p + SPOOL_HDR_LEN + SPOOL_FIXED_LEN, out->line_len);
    *rec_len = SPOOL_HDR_LEN + plen;
    return 0;
}

/* ---- segments ---------------------------------------------------------- */

static void
seg_name(char *buf, size_t len, uint64_t first)
{
    snprintf(buf, len, "%016" PRIx64 ".seg", first);
}

/* "0123456789abcdef.seg" -> its seq; false for any other name. */
static bool
seg_parse_name(const char *name, uint64_t *first)
{
    uint64_t v = 0;
    int i;

    if (strlen(name) != SEG_NAME_LEN || strcmp(name + 16, ".seg") != 0)
        return false;
    for (i = 0; i < 16; i++) {
        char c = name[i];

        if (c >= '0' && c <= '9')
            v = (v << 4) | (uint64_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v = (v << 4) | (uint64_t)(c - 'a' + 10);
        else
            return false;
    }
    *first = v;
    return v > 0;
}

static struct seg *
last_seg(struct spool *sp)
{
    return &sp->segs[sp->n_segs - 1];
}

static int
push_seg(struct spool *sp, const struct seg *s)
{
    if (sp->n_segs == sp->cap_segs) {
        size_t cap = sp->cap_segs ? sp->cap_segs * 2 : 8;
        struct seg *n = realloc(sp->segs, cap * sizeof(*n));

        if (n == NULL)
            return -ENOMEM;
        sp->segs = n;
        sp->cap_segs = cap;
    }
    sp->segs[sp->n_segs++] = *s;
    return 0;
}

static int
unlink_seg(struct spool *sp, uint64_t first)
{
    char name[SEG_NAME_LEN + 1];

    seg_name(name, sizeof(name), first);
    if (unlinkat(sp->dfd, name, 0) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

/* Forget segs[0] (its file is gone), keeping the read position valid. */
static void
drop_front(struct spool *sp)
{
    if (sp->rfd >= 0 && sp->rfd_first == sp->segs[0].first) {
        close(sp->rfd);
        sp->rfd = -1;
    }
    sp->bytes -= sp->segs[0].size;
    memmove(sp->segs, sp->segs + 1, (sp->n_segs - 1) * sizeof(*sp->segs));
    sp->n_segs--;
    if (sp->read_idx > 0) {
        sp->read_idx--;
    } else {
        sp->read_off = SPOOL_MAGIC_LEN;
        if (sp->read_seq < sp->segs[0].first)
            sp->read_seq = sp->segs[0].first;
    }
}

/*
 * Start a new last segment whose first record is seq first. The records
 * still buffered (wn of them, first .. next_seq - 1) move into it; the old
 * last segment keeps only its durable part. If the old last segment has
 * that very name (all its records are buffered), it is started over in
 * place instead.
 */
static int
rotate_to(struct spool *sp, uint64_t first)
{
    char name[SEG_NAME_LEN + 1];
    struct seg s = {.first = first, .n = sp->wn, .size = SPOOL_MAGIC_LEN};
    bool had = sp->n_segs > 0;
    bool replace = had && last_seg(sp)->first == first;
    uint64_t old_size = had ? last_seg(sp)->size : 0;
    size_t old_idx = had ? sp->n_segs - 1 : 0;
    ssize_t n;
    int fd, rc;

    seg_name(name, sizeof(name), first);
    /* A file of that name could only hold records >= first, and those
     * are all in the buffer: truncating it is safe. */
    fd = openat(sp->dfd, name, O_RDWR | O_APPEND | O_CREAT | O_TRUNC |
                                   O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    n = sp->io->write(fd, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
    if (n != SPOOL_MAGIC_LEN) {
        rc = n < 0 ? -errno : -EIO;
        close(fd);
        if (!replace)
            unlinkat(sp->dfd, name, 0);
        else
            sp->broken = true; /* the old descriptor sees a cut file */
        return rc;
    }
    if (replace) {
        sp->bytes -= old_size;
        *last_seg(sp) = s;
    } else {
        rc = push_seg(sp, &s);
        if (rc < 0) {
            close(fd);
            unlinkat(sp->dfd, name, 0);
            return rc;
        }
        if (had)
            sp->segs[old_idx].n -= sp->wn;
    }
    /* A reader inside the moved buffer follows it. */
    if (had && sp->wn > 0 && sp->read_idx == old_idx &&
        sp->read_off >= old_size) {
        sp->read_idx = sp->n_segs - 1;
        sp->read_off = SPOOL_MAGIC_LEN + (sp->read_off - old_size);
    }
    if (sp->rfd >= 0 && sp->rfd_first == first) {
        close(sp->rfd);
        sp->rfd = -1;
    }
    if (sp->wfd >= 0)
        close(sp->wfd);
    sp->wfd = fd;
    sp->bytes += SPOOL_MAGIC_LEN;
    sp->dir_dirty = true;
    return 0;
}

/*
 * Write the buffer and fdatasync. On failure the file is cut back to its
 * durable size (or, if even that fails, the next commit starts a new
 * segment) and the buffer is kept for the next try.
 */
static int
commit(struct spool *sp)
{
    struct seg *cur;
    size_t done = 0;
    int rc;

    if (sp->broken) {
        rc = rotate_to(sp, sp->next_seq - sp->wn);
        if (rc < 0)
            return rc;
        sp->broken = false;
    }
    if (sp->dir_dirty) {
        if (sp->io->fsync(sp->dfd) < 0)
            return -errno;
        sp->dir_dirty = false;
    }
    if (sp->wlen == 0)
        return 0;
    cur = last_seg(sp);
    while (done < sp->wlen) {
        ssize_t n = sp->io->write(sp->wfd, sp->wbuf + done, sp->wlen - done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO;
            goto undo;
        }
        done += (size_t)n;
    }
    if (sp->io->fdatasync(sp->wfd) < 0) {
        rc = -errno;
        goto undo;
    }
    cur->size += sp->wlen;
    sp->bytes += sp->wlen;
    sp->wlen = 0;
    sp->wn = 0;
    return 0;
undo:
    /* After a failed fdatasync the kernel may have dropped the pages:
     * only rewriting them makes them durable. */
    if (sp->io->ftruncate(sp->wfd, (off_t)cur->size) < 0)
        sp->broken = true;
    return rc;
}

/* Delete segs[0] to make room: its records never handed out are lost. */
static int
evict_front(struct spool *sp)
{
    struct seg *s = &sp->segs[0];
    uint64_t end = s->first + s->n; /* one past its last seq */
    int rc;

    rc = unlink_seg(sp, s->first);
    if (rc < 0)
        return rc;
    if (s->n > 0) {
        if (sp->read_idx == 0 && sp->read_seq < end) {
            uint64_t from = sp->read_seq > s->first ? sp->read_seq : s->first;

            sp->n_unread -= end - from;
            sp->dropped += end - from;
        }
        if (sp->evicted_through < end - 1)
            sp->evicted_through = end - 1;
        if (sp->acked < end - 1) {
            sp->acked = end - 1;
            sp->ack_dirty = true;
        }
    }
    drop_front(sp);
    return 0;
}

/* ---- the ack state ----------------------------------------------------- */

static size_t
ack_format(char *buf, size_t len, uint64_t acked, int64_t last_ts)
{
    int n = snprintf(buf, len, ACK_TAG " %" PRIu64 " %" PRId64, acked,
                     last_ts);
    uint32_t crc;

    if (n < 0 || (size_t)n >= len)
        return 0;
    crc = spool_crc32c(0, buf, (size_t)n);
    n += snprintf(buf + n, len - (size_t)n, " %08" PRIx32 "\n", crc);
    return (size_t)n < len ? (size_t)n : 0;
}

/* Parse the ack file's bytes; false if they are not one well-formed,
 * checksummed line. */
static bool
ack_parse(const char *p, size_t len, uint64_t *acked, int64_t *last_ts)
{
    const char *end = p + len, *cur = p, *body_end;
    uint32_t crc = 0;
    int i;

    if (len < sizeof(ACK_TAG) + 12 || p[len - 1] != '\n')
        return false;
    if (memcmp(p, ACK_TAG " ", sizeof(ACK_TAG)) != 0)
        return false;
    cur += sizeof(ACK_TAG);
    if (sp_u64(&cur, end, acked) < 0 || cur == end || *cur++ != ' ')
        return false;
    if (sp_i64(&cur, end, last_ts) < 0 || cur == end || *cur != ' ')
        return false;
    body_end = cur++;
    if (end - cur != 9)
        return false;
    for (i = 0; i < 8; i++) {
        char c = cur[i];

        if (c >= '0' && c <= '9')
            crc = (crc << 4) | (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            crc = (crc << 4) | (uint32_t)(c - 'a' + 10);
        else
            return false;
    }
    return crc == spool_crc32c(0, p, (size_t)(body_end - p));
}

static void
ack_read(struct spool *sp)
{
    char buf[128];
    ssize_t n = -1;
    int fd = openat(sp->dfd, ACK_NAME, O_RDONLY | O_CLOEXEC);

    if (fd >= 0) {
        n = read(fd, buf, sizeof(buf));
        close(fd);
    }
    /* Missing or damaged: nothing counts as settled, everything left on
     * disk is resent (at-least-once; the store keeps one copy). */
    if (n <= 0 || !ack_parse(buf, (size_t)n, &sp->acked, &sp->last_ts)) {
        sp->acked = 0;
        sp->last_ts = 0;
    }
}

/* Replace the ack file: write a temporary, fsync, rename, fsync the dir. */
static int
ack_write(struct spool *sp)
{
    char buf[128];
    size_t len = ack_format(buf, sizeof(buf), sp->acked, sp->last_ts);
    ssize_t n;
    int fd, rc = 0;

    if (len == 0)
        return -EOVERFLOW;
    fd = openat(sp->dfd, ACK_TMP_NAME,
                O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    n = sp->io->write(fd, buf, len);
    if (n != (ssize_t)len)
        rc = n < 0 ? -errno : -EIO;
    if (rc == 0 && sp->io->fsync(fd) < 0)
        rc = -errno;
    close(fd);
    if (rc == 0 &&
        sp->io->renameat(sp->dfd, ACK_TMP_NAME, sp->dfd, ACK_NAME) < 0)
        rc = -errno;
    if (rc == 0 && sp->io->fsync(sp->dfd) < 0)
        rc = -errno;
    if (rc < 0) {
        unlinkat(sp->dfd, ACK_TMP_NAME, 0);
        return rc;
    }
    sp->ack_dirty = false;
    return 0;
}

/* ---- open: scan ------------------------------------------------------- */

/*
 * Read segment s (fd) record by record, checking length, CRC and seq
 * continuity; cut the file at the first bad record, or at seq limit (where
 * the next segment starts: a failed write whose bytes could not be cut may
 * have left copies of records that were then written to the next segment).
 * Sets s->n, s->size and s->open_off, and raises last_ts.
 */
static int
scan_seg(struct spool *sp, int fd, struct seg *s, uint64_t limit,
         unsigned char *buf, struct spool_open_info *info)
{
    struct stat st;
    struct spool_rec rec;
    uint64_t off = SPOOL_MAGIC_LEN, buf_off = SPOOL_MAGIC_LEN, expect;
    uint64_t file_size;
    size_t buf_len = 0, rec_len;
    bool found = false;
    ssize_t n;

    if (fstat(fd, &st) < 0)
        return -errno;
    file_size = (uint64_t)st.st_size;
    s->n = 0;
    s->open_off = SPOOL_MAGIC_LEN;
    if (file_size < SPOOL_MAGIC_LEN) {
        /* Torn at creation: no record ever made it. */
        s->size = 0;
        return 0;
    }
    n = sp->io->pread(fd, buf, SPOOL_MAGIC_LEN, 0);
    if (n != SPOOL_MAGIC_LEN)
        return n < 0 ? -errno : -EIO;
    if (memcmp(buf, SPOOL_MAGIC, SPOOL_MAGIC_LEN) != 0)
        return -EINVAL;
    expect = s->first;
    for (;;) {
        size_t avail = (size_t)(buf_off + buf_len - off);

        if (avail < SPOOL_REC_MAX && buf_off + buf_len < file_size) {
            memmove(buf, buf + (off - buf_off), avail);
            buf_off = off;
            buf_len = avail;
            n = sp->io->pread(fd, buf + buf_len, SCAN_BUF - buf_len,
                              (off_t)(buf_off + buf_len));
            if (n < 0)
                return -errno;
            buf_len += (size_t)n;
            avail = buf_len;
        }
        if (avail == 0)
            break;
        if (decode(buf + (off - buf_off), avail, &rec, &rec_len) < 0 ||
            rec.seq != expect || rec.seq >= limit)
            break;
        if (!found && rec.seq > sp->acked) {
            s->open_off = off;
            found = true;
        }
        if (rec.ts_ns > sp->last_ts)
            sp->last_ts = rec.ts_ns;
        expect++;
        off += rec_len;
    }
    if (!found)
        s->open_off = off;
    if (off < file_size) {
        if (sp->io->ftruncate(fd, (off_t)off) < 0 ||
            sp->io->fdatasync(fd) < 0)
            return -errno;
        if (info != NULL) {
            info->cut_bytes += file_size - off;
            info->n_cut++;
        }
    }
    s->n = expect - s->first;
    s->size = off;
    return 0;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* The seqs of the segment files in the directory, sorted. */
static int
list_segs(struct spool *sp, uint64_t **out, size_t *n_out)
{
    uint64_t *v = NULL, first;
    size_t n = 0, cap = 0;
    struct dirent *de;
    DIR *d;
    int fd = dup(sp->dfd);

    if (fd < 0)
        return -errno;
    d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return -errno;
    }
    rewinddir(d);
    while ((de = readdir(d)) != NULL) {
        if (!seg_parse_name(de->d_name, &first))
            continue;
        if (n == cap) {
            uint64_t *nv;

            cap = cap ? cap * 2 : 16;
            nv = realloc(v, cap * sizeof(*v));
            if (nv == NULL) {
                free(v);
                closedir(d);
                return -ENOMEM;
            }
            v = nv;
        }
        v[n++] = first;
    }
    closedir(d);
    if (n > 1)
        qsort(v, n, sizeof(*v), cmp_u64);
    *out = v;
    *n_out = n;
    return 0;
}

/* Scan every segment file into sp->segs (empty files dropped). */
static int
load_segs(struct spool *sp, struct spool_open_info *info, char *what,
          size_t what_len)
{
    unsigned char *buf = NULL;
    uint64_t *firsts = NULL;
    size_t n = 0, i;
    int rc;

    rc = list_segs(sp, &firsts, &n);
    if (rc < 0) {
        snprintf(what, what_len, "listing");
        return rc;
    }
    buf = malloc(SCAN_BUF);
    if (buf == NULL) {
        free(firsts);
        return -ENOMEM;
    }
    for (i = 0; i < n; i++) {
        char name[SEG_NAME_LEN + 1];
        struct seg s = {.first = firsts[i]};
        int fd;

        seg_name(name, sizeof(name), s.first);
        fd = openat(sp->dfd, name, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            rc = -errno;
            snprintf(what, what_len, "opening %s", name);
            goto out;
        }
        rc = scan_seg(sp, fd, &s, i + 1 < n ? firsts[i + 1] : UINT64_MAX,
                      buf, info);
        close(fd);
        if (rc < 0) {
            snprintf(what, what_len, rc == -EINVAL ? "%s is not a spool "
                     "segment" : "reading %s", name);
            goto out;
        }
        if (sp->n_segs > 0) {
            struct seg *prev = last_seg(sp);

            if (s.first < prev->first + prev->n) {
                rc = -EINVAL;
                snprintf(what, what_len, "%s overlaps the segment before",
                         name);
                goto out;
            }
        }
        if (s.n == 0 && i + 1 < n) {
            /* Nothing in it, and not the last: useless. The last one is
             * kept even empty: its name is the next seq to use. */
            unlinkat(sp->dfd, name, 0);
            continue;
        }
        rc = push_seg(sp, &s);
        if (rc < 0)
            goto out;
        sp->bytes += s.size;
    }
    rc = 0;
out:
    free(buf);
    free(firsts);
    return rc;
}

/* Open the directory, creating it if missing, and lock it. */
static int
open_dir(struct spool *sp, char *what, size_t what_len)
{
    if (mkdir(sp->dir, 0700) < 0 && errno != EEXIST) {
        snprintf(what, what_len, "creating the directory");
        return -errno;
    }
    sp->dfd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sp->dfd < 0) {
        snprintf(what, what_len, "opening the directory");
        return -errno;
    }
    if (flock(sp->dfd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;

        snprintf(what, what_len, e == EWOULDBLOCK
                                     ? "in use by another process"
                                     : "locking");
        return -e;
    }
    return 0;
}

/* After the scan: where appending and reading resume. */
static int
resume(struct spool *sp, struct spool_open_info *info)
{
    uint64_t end = sp->acked + 1;
    size_t i;
    bool found = false;
    int rc;

    if (sp->n_segs > 0) {
        struct seg *l = last_seg(sp);

        if (l->first + l->n > end)
            end = l->first + l->n;
    }
    sp->next_seq = end;
    if (sp->n_segs == 0 ||
        last_seg(sp)->first + last_seg(sp)->n != sp->next_seq ||
        last_seg(sp)->size < SPOOL_MAGIC_LEN ||
        last_seg(sp)->size >= sp->seg_bytes) {
        rc = rotate_to(sp, sp->next_seq);
        if (rc < 0)
            return rc;
    } else {
        char name[SEG_NAME_LEN + 1];

        seg_name(name, sizeof(name), last_seg(sp)->first);
        sp->wfd = openat(sp->dfd, name, O_RDWR | O_APPEND | O_CLOEXEC);
        if (sp->wfd < 0)
            return -errno;
    }
    /* Settled segments go (never the last). */
    while (sp->n_segs > 1 &&
           sp->segs[0].first + sp->segs[0].n <= sp->acked + 1) {
        rc = unlink_seg(sp, sp->segs[0].first);
        if (rc < 0)
            return rc;
        drop_front(sp); /* the read position is set below */
    }
    sp->n_unread = 0;
    for (i = 0; i < sp->n_segs; i++) {
        struct seg *s = &sp->segs[i];
        uint64_t from = s->first > sp->acked ? s->first : sp->acked + 1;

        if (s->n == 0 || s->first + s->n <= from)
            continue;
        sp->n_unread += s->first + s->n - from;
        if (!found) {
            sp->read_idx = i;
            sp->read_off = s->open_off;
            sp->read_seq = from;
            found = true;
        }
    }
    if (!found) {
        sp->read_idx = sp->n_segs - 1;
        sp->read_off = last_seg(sp)->size;
        sp->read_seq = sp->next_seq;
    }
    if (info != NULL)
        info->resumed = sp->n_unread;
    return 0;
}

int
spool_open(const struct spool_conf *conf, struct spool **out,
           struct spool_open_info *info, char *err, size_t err_len)
{
    struct spool *sp;
    char what[96] = "";
    int rc;

    *out = NULL;
    if (info != NULL)
        memset(info, 0, sizeof(*info));
    if (conf->max_bytes < SPOOL_MAX_MIN ||
        (conf->seg_bytes != 0 && conf->seg_bytes < 2 * SPOOL_REC_MAX)) {
        snprintf(err, err_len, "spool %s: size limits too small", conf->dir);
        return -EINVAL;
    }
    sp = calloc(1, sizeof(*sp));
    if (sp == NULL) {
        snprintf(err, err_len, "spool %s: out of memory", conf->dir);
        return -ENOMEM;
    }
    sp->dfd = sp->wfd = sp->rfd = -1;
    sp->io = conf->io != NULL ? conf->io : &spool_io_default;
    sp->max_bytes = conf->max_bytes;
    sp->seg_bytes = conf->seg_bytes;
    if (sp->seg_bytes == 0) {
        sp->seg_bytes = conf->max_bytes / 4;
        if (sp->seg_bytes > SPOOL_SEG_DEFAULT)
            sp->seg_bytes = SPOOL_SEG_DEFAULT;
    }
    sp->dir = strdup(conf->dir);
    if (sp->dir == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = open_dir(sp, what, sizeof(what));
    if (rc < 0)
        goto fail;
    ack_read(sp);
    unlinkat(sp->dfd, ACK_TMP_NAME, 0);
    rc = load_segs(sp, info, what, sizeof(what));
    if (rc < 0)
        goto fail;
    rc = resume(sp, info);
    if (rc < 0) {
        snprintf(what, sizeof(what), "starting a segment");
        goto fail;
    }
    *out = sp;
    return 0;
fail:
    snprintf(err, err_len, "spool %s: %s%s%s", conf->dir, what,
             what[0] ? ": " : "", strerror(-rc));
    spool_close(sp);
    return rc;
}

void
spool_close(struct spool *sp)
{
    if (sp == NULL)
        return;
    if (sp->wfd >= 0) {
        commit(sp);
        if (sp->ack_dirty)
            ack_write(sp);
        close(sp->wfd);
    }
    if (sp->rfd >= 0)
        close(sp->rfd);
    if (sp->dfd >= 0)
        close(sp->dfd); /* releases the lock */
    free(sp->segs);
    free(sp->wbuf);
    free(sp->dir);
    free(sp);
}

/* ---- appending --------------------------------------------------------- */

static int
wbuf_reserve(struct spool *sp, size_t more)
{
    size_t cap = sp->wcap ? sp->wcap : 1024;
    char *n;

    if (sp->wlen + more <= sp->wcap)
        return 0;
    while (cap < sp->wlen + more)
        cap *= 2;
    n = realloc(sp->wbuf, cap);
    if (n == NULL)
        return -ENOMEM;
    sp->wbuf = n;
    sp->wcap = cap;
    return 0;
}

int
spool_append(struct spool *sp, int64_t ts_ns, double value, const char *line,
             size_t len, uint64_t *seq)
{
    size_t rec_len = SPOOL_HDR_LEN + SPOOL_FIXED_LEN + len;
    struct seg *cur;
    int rc;

    if (len == 0 || len > SPOOL_LINE_MAX)
        return -EINVAL;
    /* Rotation: the last segment is full. */
    cur = last_seg(sp);
    if (cur->n > 0 && cur->size + sp->wlen + rec_len > sp->seg_bytes) {
        rc = commit(sp);
        if (rc < 0)
            return rc;
        rc = rotate_to(sp, sp->next_seq);
        if (rc < 0)
            return rc;
    }
    /* The full policy: drop the oldest segment. */
    while (sp->bytes + sp->wlen + rec_len > sp->max_bytes) {
        if (sp->n_segs == 1) {
            if (last_seg(sp)->n == 0)
                break; /* cannot happen: max_bytes >= SPOOL_MAX_MIN */
            rc = commit(sp);
            if (rc < 0)
                return rc;
            rc = rotate_to(sp, sp->next_seq);
            if (rc < 0)
                return rc;
        }
        rc = evict_front(sp);
        if (rc < 0)
            return rc;
    }
    if (sp->wlen + rec_len > SPOOL_WBUF_MAX) {
        rc = commit(sp);
        if (rc < 0)
            return rc;
    }
    rc = wbuf_reserve(sp, SPOOL_REC_MAX);
    if (rc < 0)
        return rc;
    encode((unsigned char *)sp->wbuf + sp->wlen, sp->next_seq, ts_ns, value,
           line, len);
    sp->wlen += rec_len;
    sp->wn++;
    last_seg(sp)->n++;
    *seq = sp->next_seq++;
    sp->n_unread++;
    if (ts_ns > sp->last_ts)
        sp->last_ts = ts_ns;
    return 0;
}

int
spool_sync(struct spool *sp, int64_t now_ms, bool force)
{
    int rc = commit(sp);

    if (rc < 0)
        return rc;
    if (sp->ack_dirty && (force || now_ms >= sp->ack_next_ms)) {
        rc = ack_write(sp);
        if (rc < 0)
            return rc;
        sp->ack_next_ms = now_ms + SPOOL_ACK_INTERVAL_MS;
    }
    return 0;
}

/* ---- reading and settling ---------------------------------------------- */

/* A descriptor to read segs[idx] through. */
static int
read_fd(struct spool *sp, size_t idx)
{
    char name[SEG_NAME_LEN + 1];

    if (idx == sp->n_segs - 1)
        return sp->wfd;
    if (sp->rfd >= 0 && sp->rfd_first == sp->segs[idx].first)
        return sp->rfd;
    if (sp->rfd >= 0)
        close(sp->rfd);
    seg_name(name, sizeof(name), sp->segs[idx].first);
    sp->rfd = openat(sp->dfd, name, O_RDONLY | O_CLOEXEC);
    if (sp->rfd < 0)
        return -errno;
    sp->rfd_first = sp->segs[idx].first;
    return sp->rfd;
}

int
spool_read(struct spool *sp, struct spool_rec *out)
{
    unsigned char buf[SPOOL_REC_MAX];
    const unsigned char *p;
    struct seg *s;
    size_t avail, rec_len;
    ssize_t n;
    int fd;

    for (;;) {
        if (sp->n_unread == 0)
            return -ENOENT;
        /* Past the end of a sealed segment: on to the next. */
        while (sp->read_idx + 1 < sp->n_segs &&
               sp->read_seq >= sp->segs[sp->read_idx].first +
                                   sp->segs[sp->read_idx].n) {
            sp->read_idx++;
            sp->read_off = SPOOL_MAGIC_LEN;
            if (sp->read_seq < sp->segs[sp->read_idx].first)
                sp->read_seq = sp->segs[sp->read_idx].first;
        }
        s = &sp->segs[sp->read_idx];
        if (sp->read_idx == sp->n_segs - 1 && sp->read_off >= s->size) {
            p = (const unsigned char *)sp->wbuf + (sp->read_off - s->size);
            avail = sp->wlen - (size_t)(sp->read_off - s->size);
        } else {
            fd = read_fd(sp, sp->read_idx);
            if (fd < 0)
                return fd;
            n = sp->io->pread(fd, buf, sizeof(buf), (off_t)sp->read_off);
            if (n < 0)
                return -errno;
            avail = (size_t)n;
            if (avail > s->size - sp->read_off)
                avail = (size_t)(s->size - sp->read_off);
            p = buf;
        }
        if (decode(p, avail, out, &rec_len) == 0 && out->seq == sp->read_seq)
            break;
        /* Damaged since the open: the rest of this segment is lost. */
        {
            uint64_t end = s->first + s->n, lost = end - sp->read_seq;

            sp->n_unread -= lost;
            sp->dropped += lost;
            sp->read_seq = end;
            if (sp->read_idx == sp->n_segs - 1)
                sp->read_off = s->size + sp->wlen;
        }
    }
    sp->read_off += rec_len;
    sp->read_seq = out->seq + 1;
    sp->n_unread--;
    return 0;
}

/*
 * Everything is settled: start the last segment over under the name of
 * the next seq (rename, then cut to the magic), dropping settled records
 * still buffered. Frees the disk without creating a file, so that it works
 * on a full disk too. A crash between the two steps leaves a file whose
 * records do not match its name: the next open cuts them (they are all
 * settled).
 */
static int
recycle(struct spool *sp)
{
    struct seg *l = last_seg(sp);
    char from[SEG_NAME_LEN + 1], to[SEG_NAME_LEN + 1];

    seg_name(from, sizeof(from), l->first);
    seg_name(to, sizeof(to), sp->next_seq);
    if (sp->io->renameat(sp->dfd, from, sp->dfd, to) < 0)
        return -errno;
    if (sp->rfd >= 0 && sp->rfd_first == l->first) {
        close(sp->rfd);
        sp->rfd = -1;
    }
    sp->bytes -= l->size - SPOOL_MAGIC_LEN;
    l->first = sp->next_seq;
    l->n = 0;
    l->size = SPOOL_MAGIC_LEN;
    sp->wlen = 0;
    sp->wn = 0;
    sp->read_idx = sp->n_segs - 1;
    sp->read_off = SPOOL_MAGIC_LEN;
    sp->read_seq = sp->next_seq;
    sp->dir_dirty = true;
    /* If the cut fails, the next commit starts the file over in place. */
    if (sp->io->ftruncate(sp->wfd, SPOOL_MAGIC_LEN) < 0)
        sp->broken = true;
    return 0;
}

int
spool_settle(struct spool *sp, uint64_t seq)
{
    int rc;

    if (seq >= sp->read_seq)
        seq = sp->read_seq - 1;
    if (seq <= sp->acked)
        return 0;
    sp->acked = seq;
    sp->ack_dirty = true;
    while (sp->n_segs > 1 &&
           sp->segs[0].first + sp->segs[0].n <= sp->acked + 1) {
        rc = unlink_seg(sp, sp->segs[0].first);
        if (rc < 0)
            return rc;
        drop_front(sp);
    }
    /* All settled: give the last segment's space back once it is worth a
     * rename, or at once if settled records wait unwritten (a disk that
     * filled up must not stay full of what is no longer needed). */
    if (sp->acked + 1 == sp->next_seq && last_seg(sp)->n > 0 &&
        (sp->wlen > 0 || last_seg(sp)->size >= sp->seg_bytes / 4))
        return recycle(sp);
    return 0;
}

uint64_t
spool_unread(const struct spool *sp)
{
    return sp->n_unread;
}

uint64_t
spool_next_seq(const struct spool *sp)
{
    return sp->next_seq;
}

uint64_t
spool_acked(const struct spool *sp)
{
    return sp->acked;
}

uint64_t
spool_dropped(const struct spool *sp)
{
    return sp->dropped;
}

uint64_t
spool_evicted_through(const struct spool *sp)
{
    return sp->evicted_through;
}

int64_t
spool_last_ts(const struct spool *sp)
{
    return sp->last_ts;
}

uint64_t
spool_bytes(const struct spool *sp)
{
    return sp->bytes + sp->wlen;
}

bool
spool_dirty(const struct spool *sp)
{
    return sp->wlen > 0 || sp->dir_dirty || sp->broken;
}
