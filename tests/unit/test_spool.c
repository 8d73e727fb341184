/*
 * Unit tests for the client's disk spool (src/client/spool.c): round trip,
 * restart and resume, a crash with unsynced records (a forked child that
 * exits without closing), a torn tail at every byte offset, CRC and length
 * corruption, rotation and deletion of settled segments, the full policy
 * (drop oldest), failing write/fdatasync/ftruncate/rename through the
 * spool_io hooks, the ack file, the directory lock, foreign files, and a
 * randomized model check against a list in memory.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/rng.h"
#include "client/spool.h"

#define SEG1 "0000000000000001.seg"

/* ---- helpers ----------------------------------------------------------- */

struct tdir {
    char path[512];
};

static void
tdir_make(struct tdir *t)
{
    const char *base = getenv("TMPDIR");

    snprintf(t->path, sizeof(t->path), "%s/spoolXXXXXX",
             base != NULL && base[0] != '\0' ? base : "/tmp");
    assert_non_null(mkdtemp(t->path));
}

/* Remove the (flat) directory and its files. */
static void
tdir_remove(struct tdir *t)
{
    DIR *d = opendir(t->path);
    struct dirent *de;
    char p[1024];

    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof(p), "%s/%s", t->path, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(t->path);
}

static size_t
n_files(const struct tdir *t, const char *suffix)
{
    DIR *d = opendir(t->path);
    struct dirent *de;
    size_t n = 0, sl = strlen(suffix);

    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);

        if (l >= sl && strcmp(de->d_name + l - sl, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* Whole file into a new buffer; *len set. */
static unsigned char *
slurp(const struct tdir *t, const char *name, size_t *len)
{
    char p[1024];
    struct stat st;
    unsigned char *b;
    int fd;

    snprintf(p, sizeof(p), "%s/%s", t->path, name);
    fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    b = malloc((size_t)st.st_size + 1);
    assert_non_null(b);
    assert_int_equal(read(fd, b, (size_t)st.st_size), st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return b;
}

static void
spit(const struct tdir *t, const char *name, const void *b, size_t len)
{
    char p[1024];
    int fd;

    snprintf(p, sizeof(p), "%s/%s", t->path, name);
    fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b, len), (ssize_t)len);
    close(fd);
}

static off_t
file_size(const struct tdir *t, const char *name)
{
    char p[1024];
    struct stat st;

    snprintf(p, sizeof(p), "%s/%s", t->path, name);
    if (stat(p, &st) < 0)
        return -1;
    return st.st_size;
}

/* The line of reading i: lengths vary, content is checkable. */
static size_t
line_of(uint64_t i, char *buf, size_t len)
{
    int n = snprintf(buf, len, "sensornet,sensor=T temperature=%" PRIu64
                     ".%02d %" PRIu64 "%.*s\n",
                     i % 97, (int)(i % 100), 1000000 + i, (int)(i % 23),
                     "xxxxxxxxxxxxxxxxxxxxxxxx");

    return (size_t)n;
}

static int
sp_open(const struct tdir *t, uint64_t max, uint64_t seg,
        const struct spool_io *io, struct spool **sp,
        struct spool_open_info *info)
{
    struct spool_conf c = {
        .dir = t->path, .max_bytes = max, .seg_bytes = seg, .io = io};
    char err[256];

    return spool_open(&c, sp, info, err, sizeof(err));
}

static struct spool *
must_open(const struct tdir *t, uint64_t max, uint64_t seg,
          struct spool_open_info *info)
{
    struct spool *sp = NULL;

    assert_int_equal(sp_open(t, max, seg, NULL, &sp, info), 0);
    assert_non_null(sp);
    return sp;
}

static void
append_n(struct spool *sp, uint64_t from, uint64_t n)
{
    char line[SPOOL_LINE_MAX];
    uint64_t i, seq;

    for (i = from; i < from + n; i++) {
        size_t len = line_of(i, line, sizeof(line));

        assert_int_equal(spool_append(sp, (int64_t)(1000 + i),
                                      (double)i / 4.0, line, len, &seq),
                         0);
        assert_int_equal(seq, i);
    }
}

/* Read n records and check they are seq from .. from + n - 1. */
static void
expect_reads(struct spool *sp, uint64_t from, uint64_t n)
{
    struct spool_rec r;
    char line[SPOOL_LINE_MAX];
    uint64_t i;

    for (i = from; i < from + n; i++) {
        size_t len = line_of(i, line, sizeof(line));

        assert_int_equal(spool_read(sp, &r), 0);
        assert_int_equal(r.seq, i);
        assert_int_equal(r.ts_ns, (int64_t)(1000 + i));
        assert_true(r.value == (double)i / 4.0);
        assert_int_equal(r.line_len, len);
        assert_memory_equal(r.line, line, len);
    }
}

/* ---- fault-injecting system calls -------------------------------------- */

static struct {
    int n_write, fail_write_at, short_writes;
    int n_fdatasync, fail_fdatasync_at;
    int fail_ftruncate;
    int fail_rename;
    int n_pread, fail_pread_at;
} fx;

static ssize_t
fx_write(int fd, const void *b, size_t len)
{
    if (++fx.n_write == fx.fail_write_at) {
        errno = ENOSPC;
        return -1;
    }
    if (fx.short_writes && len > 3)
        len = len / 3;
    return write(fd, b, len);
}

static ssize_t
fx_pread(int fd, void *b, size_t len, off_t off)
{
    if (++fx.n_pread == fx.fail_pread_at) {
        errno = EIO;
        return -1;
    }
    return pread(fd, b, len, off);
}

static int
fx_fdatasync(int fd)
{
    if (++fx.n_fdatasync == fx.fail_fdatasync_at) {
        errno = EIO;
        return -1;
    }
    return fdatasync(fd);
}

static int
fx_fsync(int fd)
{
    return fsync(fd);
}

static int
fx_ftruncate(int fd, off_t len)
{
    if (fx.fail_ftruncate) {
        errno = EIO;
        return -1;
    }
    return ftruncate(fd, len);
}

static int
fx_renameat(int a, const char *ap, int b, const char *bp)
{
    if (fx.fail_rename) {
        errno = EIO;
        return -1;
    }
    return renameat(a, ap, b, bp);
}

static const struct spool_io fx_io = {
    .write = fx_write,
    .pread = fx_pread,
    .fdatasync = fx_fdatasync,
    .fsync = fx_fsync,
    .ftruncate = fx_ftruncate,
    .renameat = fx_renameat,
};

static void
fx_reset(void)
{
    memset(&fx, 0, sizeof(fx));
    fx.fail_write_at = fx.fail_fdatasync_at = fx.fail_pread_at = -1;
}

/* ---- tests ------------------------------------------------------------- */

static void
test_spool_crc32c(void **state)
{
    (void)state;
    /* The standard check value of CRC-32C. */
    assert_int_equal(spool_crc32c(0, "123456789", 9), 0xe3069283u);
    /* Chaining equals one pass. */
    assert_int_equal(spool_crc32c(spool_crc32c(0, "1234", 4), "56789", 5),
                     0xe3069283u);
    assert_int_equal(spool_crc32c(0, "", 0), 0);
}

static void
test_spool_roundtrip(void **state)
{
    struct tdir t;
    struct spool *sp;
    struct spool_rec r;
    struct spool_open_info info;

    (void)state;
    tdir_make(&t);
    sp = must_open(&t, SPOOL_MAX_DEFAULT, 0, &info);
    assert_int_equal(info.resumed, 0);
    assert_int_equal(spool_next_seq(sp), 1);
    assert_int_equal(spool_read(sp, &r), -ENOENT);
    append_n(sp, 1, 50);
    assert_true(spool_dirty(sp));
    /* Records are readable before they are durable (from the buffer). */
    expect_reads(sp, 1, 20);
    assert_int_equal(spool_sync(sp, 0, false), 0);
    assert_false(spool_dirty(sp));
    expect_reads(sp, 21, 30);
    assert_int_equal(spool_read(sp, &r), -ENOENT);
    assert_int_equal(spool_unread(sp), 0);
    assert_int_equal(spool_settle(sp, 50), 0);
    assert_int_equal(spool_acked(sp), 50);
    assert_int_equal(spool_last_ts(sp), 1050);
    /* Bad lengths are refused. */
    {
        uint64_t seq;
        char big[SPOOL_LINE_MAX + 1];

        memset(big, 'a', sizeof(big));
        assert_int_equal(spool_append(sp, 1, 1.0, big, 0, &seq), -EINVAL);
        assert_int_equal(spool_append(sp, 1, 1.0, big, sizeof(big), &seq),
                         -EINVAL);
    }
    spool_close(sp);
    /* Everything was settled: nothing to resend, numbering goes on. */
    sp = must_open(&t, SPOOL_MAX_DEFAULT, 0, &info);
    assert_int_equal(info.resumed, 0);
    assert_int_equal(spool_next_seq(sp), 51);
    assert_int_equal(spool_last_ts(sp), 1050);
    spool_close(sp);
    tdir_remove(&t);
}

static void
test_spool_restart_resume(void **state)
{
    struct tdir t;
    struct spool *sp;
    struct spool_open_info info;

    (void)state;
    tdir_make(&t);
    sp = must_open(&t, SPOOL_MAX_DEFAULT, 0, NULL);
    append_n(sp, 1, 100);
    assert_int_equal(spool_sync(sp, 0, false), 0);
    expect_reads(sp, 1, 60);
    /* Settling is clamped to what was read. */
    assert_int_equal(spool_settle(sp, 1000), 0);
    assert_int_equal(spool_acked(sp), 60);
    spool_close(sp);

    sp = must_open(&t, SPOOL_MAX_DEFAULT, 0, &info);
    assert_int_equal(info.resumed, 40);
    assert_int_equal(spool_unread(sp), 40);
    expect_reads(sp, 61, 10);
    append_n(sp, 101, 5);
    expect_reads(sp, 71, 35);
    spool_close(sp); /* still only 60 settled */

    sp = must_open(&t, SPOOL_MAX_DEFAULT, 0, &info);
    assert_int_equal(info.resumed, 45);
    expect_reads(sp, 61, 45);
    spool_close(sp);
    tdir_remove(&t);
}

/* A kill -9: a child appends, syncs part, and exits without closing. */
static void
test_spool_crash_keeps_synced(void **state)
{
    struct tdir t;
    struct spool *sp;
    struct spool_open_info info;
    pid_t pid;
    int status;

    (void)state;
    tdir_make(&t);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct spool_rec r;
        int i;

        sp = must_open(&t, SPOOL_MAX_DEFAULT, 2048, NULL);
        append_n(sp, 1, 50);
        if (spool_sync(sp, 0, false) < 0)
            _exit(3);
        for (i = 0; i < 20; i++)
            if (spool_read(sp, &r) < 0)
                _exit(4);
        spool_settle(sp, 10);
        append_n(sp, 51, 7); /* never synced */
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    sp = must_open(&t, SPOOL_MAX_DEFAULT, 2048, &info);
    /* The 50 synced records, nothing settled (the ack state is written at
     * sync time only when due, and the settle came after the last sync;
     * at-least-once), the 7 unsynced ones gone, and numbering resumes
     * after the last durable record. */
    assert_int_equal(info.resumed, 50);
    assert_int_equal(spool_next_seq(sp), 51);
    expect_reads(sp, 1, 50);
    append_n(sp, 51, 1);
    expect_reads(sp, 51, 1);
    spool_close(sp);
    tdir_remove(&t);
}

/* Cut the only segment at every byte offset: the spool keeps exactly the
 * whole records before the cut and truncates the rest. */
static void
test_spool_torn_tail_every_offset(void **state)
{
    struct tdir t, t2;
    struct spool *sp;
    struct spool_open_info info;
    unsigned char *img;
    size_t len, off, ends[8], n_ends = 0, i;

    (void)state;
    tdir_make(&t);
    sp = must_open(&t, SPOOL_MAX_DEFAULT, 0, NULL);
    for (i = 1; i <= 5; i++) {
        append_n(sp, i, 1);
        assert_int_equal(spool_sync(sp, 0, false), 0);
        ends[n_ends++] = (size_t)file_size(&t, SEG1);
    }
    spool_close(sp);
    img = slurp(&t, SEG1, &len);
    assert_int_equal(len, ends[4]);
    tdir_remove(&t);

    for (off = 0; off <= len; off++) {
        size_t whole = 0;

        for (i = 0; i < n_ends; i++)
            whole += ends[i] <= off;
        tdir_make(&t2);
        spit(&t2, SEG1, img, off);
        sp = must_open(&t2, SPOOL_MAX_DEFAULT, 0, &info);
        assert_int_equal(info.resumed, whole);
        assert_int_equal(spool_next_seq(sp), whole + 1);
        if (off >= SPOOL_MAGIC_LEN) {
            size_t keep = whole ? ends[whole - 1] : SPOOL_MAGIC_LEN;

            assert_int_equal(file_size(&t2, SEG1), (off_t)keep);
            assert_int_equal(info.cut_bytes, off - keep);
        } else {
            /* Torn before the magic was complete: started over. */
            assert_int_equal(file_size(&t2, SEG1), SPOOL_MAGIC_LEN);
        }
        expect_reads(sp, 1, whole);
        append_n(sp, whole + 1, 1);
        assert_int_equal(spool_sync(sp, 0, false), 0);
        expect_reads(sp, whole + 1, 1);
        spool_close(sp);
        /* And it reopens cleanly. */
        sp = must_open(&t2, SPOOL_MAX_DEFAULT, 0, &info);
        assert_int_equal(info.n_cut, 0);
        assert_int_equal(info.resumed, whole + 1);
        spool_close(sp);
        tdir_remove(&t2);
    }
    free(img);
}

static void
test_spool_corruption(void **state)
{
    /* Byte offsets inside record 3 (of 5): length, CRC, seq, line. */
    static const size_t where[] = {0, 2, 5, 8, 20, 40};
    struct tdir t;
    struct spool *sp;
    struct spool_open_info info;
    unsigned char *img;
    size_t len, rec3, i;

    (void)state;
    for (i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
        tdir_make(&t);
        sp = must_open(&t, SPOOL_MAX_DEFAULT, 0, NULL);
        append_n(sp, 1, 2);
        assert_int_equal(spool_sync(sp, 0, false), 0);
        rec3 = (size_t)file_size(&t, SEG1);
        append_n(sp, 3, 3);
        spool_close(sp);
        img = slurp(&t, SEG1, &len);
        img[rec3 + where[i]] ^= 0x40;
        spit(&t, SEG1, img, len);
        free(img);
        sp = must_open(&t, SPOOL_MAX_DEFAULT, 0, &info);
        assert_int_equal(info.resumed, 2);
        assert_int_equal(info.n_cut, 1);
        assert_int_equal(info.cut_bytes, len - rec3);
        assert_int_equal(file_size(&t, SEG1), (off_t)rec3);
        expect_reads(sp, 1, 2);
        spool_close(sp);
        tdir_remove(&t);
    }
}

/* Damage in a sealed segment cuts that segment only; later segments
 * survive (with a gap in the numbering). */
/* The seq of the second oldest segment file (from its name). */
static uint64_t
second_seg(const struct tdir *t)
{
    DIR *d = opendir(t->path);
    struct dirent *de;
    uint64_t best = UINT64_MAX;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        unsigned long long v;
        char *end;

        if (strlen(de->d_name) != 20)
            continue;
        v = strtoull(de->d_name, &end, 16);
        if (strcmp(end, ".seg") == 0 && v > 1 && v < best)
            best = v;
    }
    closedir(d);
    return best;
}

static void
test_spool_corruption_middle_segment(void **state)
{
    struct tdir t;
    struct spool *sp;
    struct spool_open_info info;
    unsigned char *img;
    size_t len;
    uint64_t seq;

    (void)state;
    tdir_make(&t);
    sp = must_open(&t, SPOOL_MAX_DEFAULT, 1024, NULL);
    append_n(sp, 1, 40);
    spool_close(sp);
    assert_true(n_files(&t, ".seg") >= 3);
    seq = second_seg(&t);
    assert_true(seq > 3 && seq < 40);
    /* Damage the last byte of segment 1: its last record, seq - 1. */
    img = slurp(&t, SEG1, &len);
    img[len - 1] ^= 0xff;
    spit(&t, SEG1, img, len);
    free(img);
    sp = must_open(&t, SPOOL_MAX_DEFAULT, 1024, &info);
    assert_int_equal(info.n_cut, 1);
    /* Records 1 .. seq - 2 of segment 1, then seq .. 40. */
    assert_int_equal(info.resumed, (seq - 2) + (40 - seq + 1));
    expect_reads(sp, 1, seq - 2);
    expect_reads(sp, seq, 40 - seq + 1);
    assert_int_equal(spool_next_seq(sp), 41);
    spool_close(sp);
    tdir_remove(&t);
}

static void
test_spool_rotation_and_trim(void **state)
{
    struct tdir t;
    struct spool *sp;
    struct spool_open_info info;
    size_t segs;
    uint64_t i;

    (void)state;
    tdir_make(&t);
    sp = must_open(&t, SPOOL_MAX_DEFAULT, 1024, NULL);
    append_n(sp, 1, 100);
    assert_int_equal(spool_sync(sp, 0, false), 0);
    segs = n_files(&t, ".seg");
    assert_true(segs >= 6);
    /* Every file within the rotation size (plus one record). */
    expect_reads(sp, 1, 100);
    /* Settling deletes whole segments only, oldest first, never the last. */
    for (i = 1; i <= 100; i += 7) {
        size_t before = n_files(&t, ".seg");

        assert_int_equal(spool_settle(sp, i), 0);
        assert_true(n_files(&t, ".seg") <= before);
        assert_true(n_files(&t, ".seg") >= 1);
    }
    assert_int_equal(spool_settle(sp, 100), 0);
    assert_int_equal(n_files(&t, ".seg"), 1);
    assert_true(spool_bytes(sp) <= 1024 + SPOOL_REC_MAX);
    spool_close(sp);
    sp = must_open(&t, SPOOL_MAX_DEFAULT, 1024, &info);
    assert_int_equal(info.resumed, 0);
    assert_int_equal(spool_next_seq(sp), 101);
    spool_close(sp);
    tdir_remove(&t);
}

/* All settled: the last segment is started over under the next seq's
 * name, also when its records could not even be written (a full disk),
 * and numbering survives a crash right after. */
static void
test_spool_recycle(void **state)
{
    struct tdir t;
    struct spool *sp;
    struct spool_open_info info;
    pid_t pid;
    int status;

    (void)state;
    fx_reset();
    tdir_make(&t);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct spool_rec r;
        int i;

        if (sp_open(&t, SPOOL_MAX_DEFAULT, 1024, &fx_io, &sp, NULL) < 0)
            _exit(2);
        append_n(sp, 1, 5);
        if (spool_sync(sp, 0, false) < 0)
            _exit(3);
        append_n(sp, 6, 5);
        fx.fail_write_at = fx.n_write + 1; /* the disk is full */
        if (spool_sync(sp, 0, false) == 0)
            _exit(4);
        for (i = 0; i < 10; i++)
            if (spool_read(sp, &r) < 0)
                _exit(5);
        /* Acknowledged all the same (sent from memory): nothing is left
         * to write, and the space comes back. */
        fx.fail_write_at = fx.n_write + 1; /* still full */
        if (spool_settle(sp, 10) < 0)
            _exit(8);
        if (file_size(&t, "000000000000000b.seg") != SPOOL_MAGIC_LEN ||
            n_files(&t, ".seg") != 1)
            _exit(6);
        /* The directory only (the ack state is not due yet at -1). */
        if (spool_sync(sp, -1, false) < 0)
            _exit(7);
        _exit(0); /* a crash: no ack state written since */
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    sp = must_open(&t, SPOOL_MAX_DEFAULT, 1024, &info);
    assert_int_equal(info.resumed, 0);
    assert_int_equal(spool_next_seq(sp), 11);
    append_n(sp, 11, 3);
    expect_reads(sp, 11, 3);
    spool_close(sp);
    tdir_remove(&t);
}

static void
test_spool_full_drops_oldest(void **state)
{
    struct tdir t;
    struct spool *sp;
    struct spool_open_info info;
    struct spool_rec r;
    uint64_t n = 3000, first;

    (void)state;
    tdir_make(&t);
    sp = must_open(&t, SPOOL_MAX_MIN, 0, NULL);
    /* Ten read (held in memory by the caller), the rest only on disk. */
    append_n(sp, 1, 10);
    expect_reads(sp, 1, 10);
    append_n(sp, 11, n - 10);
    assert_int_equal(spool_sync(sp, 0, false), 0);
    assert_true(spool_bytes(sp) <= SPOOL_MAX_MIN);
    assert_true(spool_dropped(sp) > 0);
    /* Each record is either dropped or still unread: nothing else. */
    assert_int_equal(spool_dropped(sp) + spool_unread(sp), n - 10);
    /* The ten in memory lost their disk copy, and the caller is told. */
    assert_true(spool_evicted_through(sp) >= 10);
    /* What is left is the newest, in order. */
    first = n - spool_unread(sp) + 1;
    assert_int_equal(spool_evicted_through(sp), first - 1);
    expect_reads(sp, first, n - first + 1);
    assert_int_equal(spool_read(sp, &r), -ENOENT);
    spool_close(sp);
    sp = must_open(&t, SPOOL_MAX_MIN, 0, &info);
    assert_int_equal(info.resumed, n - first + 1);
    expect_reads(sp, first, n - first + 1);
    spool_close(sp);
    tdir_remove(&t);
}

/* write or fdatasync fails: sync reports it, the file keeps only durable
 * bytes, the next sync writes the same records again, nothing is lost or
 * doubled. */
static void
test_spool_write_fsync_failures(void **state)
{
    struct tdir t;
    struct spool *sp;
    struct spool_open_info info;
    off_t durable;
    int round;

    (void)state;
    for (round = 0; round < 3; round++) {
        fx_reset();
        tdir_make(&t);
        assert_int_equal(sp_open(&t, SPOOL_MAX_DEFAULT, 0, &fx_io, &sp, NULL),
                         0);
        append_n(sp, 1, 10);
        assert_int_equal(spool_sync(sp, 0, false), 0);
        durable = file_size(&t, SEG1);
        append_n(sp, 11, 10);
        if (round == 0)
            fx.fail_write_at = fx.n_write + 1;
        else if (round == 1)
            fx.fail_fdatasync_at = fx.n_fdatasync + 1;
        else {
            fx.short_writes = 1; /* and then the write fails midway */
            fx.fail_write_at = fx.n_write + 2;
        }
        assert_true(spool_sync(sp, 0, false) < 0);
        assert_true(spool_dirty(sp));
        assert_int_equal(file_size(&t, SEG1), durable);
        /* Readable all the same (from the buffer). */
        expect_reads(sp, 1, 20);
        assert_int_equal(spool_sync(sp, 0, false), 0);
        assert_false(spool_dirty(sp));
        spool_close(sp);
        sp = must_open(&t, SPOOL_MAX_DEFAULT, 0, &info);
        assert_int_equal(info.n_cut, 0);
        assert_int_equal(info.resumed, 20);
        expect_reads(sp, 1, 20);
        spool_close(sp);
        tdir_remove(&t);
    }
}

/* The write fails and so does cutting the file back: the buffered records
 * move to a new segment; at the next open the garbage is cut. */
static void
test_spool_truncate_failure_rotates(void **state)
{
    struct tdir t;
    struct spool *sp;
    struct spool_open_info info;

    (void)state;
    fx_reset();
    tdir_make(&t);
    assert_int_equal(sp_open(&t, SPOOL_MAX_DEFAULT, 0, &fx_io, &sp, NULL), 0);
    append_n(sp, 1, 10);
    assert_int_equal(spool_sync(sp, 0, false), 0);
    append_n(sp, 11, 10);
    fx.short_writes = 1;
    fx.fail_write_at = fx.n_write + 2; /* a part lands, then ENOSPC */
    fx.fail_ftruncate = 1;
    assert_true(spool_sync(sp, 0, false) < 0);
    fx.short_writes = 0;
    fx.fail_ftruncate = 0;
    assert_int_equal(spool_sync(sp, 0, false), 0);
    assert_int_equal(n_files(&t, ".seg"), 2);
    expect_reads(sp, 1, 20);
    append_n(sp, 21, 2);
    spool_close(sp);
    sp = must_open(&t, SPOOL_MAX_DEFAULT, 0, &info);
    assert_int_equal(info.n_cut, 1); /* the garbage after record 10 */
    assert_int_equal(info.resumed, 22);
    expect_reads(sp, 1, 22);
    spool_close(sp);
    tdir_remove(&t);
}

/* A failed fdatasync of a segment whose only records are buffered, and a
 * failed truncation: the segment is started over in place. */
static void
test_spool_truncate_failure_fresh_segment(void **state)
{
    struct tdir t;
    struct spool *sp;
    struct spool_open_info info;

    (void)state;
    fx_reset();
    tdir_make(&t);
    assert_int_equal(sp_open(&t, SPOOL_MAX_DEFAULT, 0, &fx_io, &sp, NULL), 0);
    append_n(sp, 1, 5);
    fx.fail_fdatasync_at = fx.n_fdatasync + 1;
    fx.fail_ftruncate = 1;
    assert_true(spool_sync(sp, 0, false) < 0);
    fx.fail_ftruncate = 0;
    assert_int_equal(spool_sync(sp, 0, false), 0);
    assert_int_equal(n_files(&t, ".seg"), 1);
    expect_reads(sp, 1, 5);
    spool_close(sp);
    sp = must_open(&t, SPOOL_MAX_DEFAULT, 0, &info);
    assert_int_equal(info.n_cut, 0);
    assert_int_equal(info.resumed, 5);
    expect_reads(sp, 1, 5);
    spool_close(sp);
    tdir_remove(&t);
}

static void
test_spool_ack_file(void **state)
{
    struct tdir t;
    struct spool *sp;
    struct spool_open_info info;
    unsigned char *img;
    size_t len;

    (void)state;
    fx_reset();
    tdir_make(&t);
    assert_int_equal(sp_open(&t, SPOOL_MAX_DEFAULT, 0, &fx_io, &sp, NULL), 0);
    append_n(sp, 1, 30);
    expect_reads(sp, 1, 30);
    assert_int_equal(spool_settle(sp, 10), 0);
    /* Due at once the first time, then rate-limited. */
    assert_int_equal(spool_sync(sp, 1000, false), 0);
    assert_true(file_size(&t, "ack") > 0);
    assert_int_equal(spool_settle(sp, 20), 0);
    assert_int_equal(spool_sync(sp, 1000 + SPOOL_ACK_INTERVAL_MS - 1, false),
                     0);
    img = slurp(&t, "ack", &len);
    assert_non_null(strstr((char *)img, " 10 "));
    free(img);
    /* A failed rename leaves the old state and no temporary. */
    fx.fail_rename = 1;
    assert_true(spool_sync(sp, 1000 + SPOOL_ACK_INTERVAL_MS, false) < 0);
    assert_int_equal(file_size(&t, "ack.tmp"), -1);
    img = slurp(&t, "ack", &len);
    assert_non_null(strstr((char *)img, " 10 "));
    free(img);
    fx.fail_rename = 0;
    assert_int_equal(spool_sync(sp, 1000 + SPOOL_ACK_INTERVAL_MS, true), 0);
    spool_close(sp);
    sp = must_open(&t, SPOOL_MAX_DEFAULT, 0, &info);
    assert_int_equal(info.resumed, 10);
    expect_reads(sp, 21, 10);
    spool_close(sp);

    /* A damaged ack file settles nothing: everything is resent. */
    img = slurp(&t, "ack", &len);
    img[len - 3] = img[len - 3] == '0' ? '1' : '0';
    spit(&t, "ack", img, len);
    free(img);
    sp = must_open(&t, SPOOL_MAX_DEFAULT, 0, &info);
    assert_int_equal(spool_acked(sp), 0);
    assert_int_equal(info.resumed, 30);
    spool_close(sp);
    spit(&t, "ack", "garbage\n", 8);
    sp = must_open(&t, SPOOL_MAX_DEFAULT, 0, &info);
    assert_int_equal(info.resumed, 30);
    spool_close(sp);
    tdir_remove(&t);
}

static void
test_spool_lock_and_foreign_files(void **state)
{
    struct tdir t;
    struct spool *sp, *sp2 = NULL;
    struct spool_conf c = {.max_bytes = SPOOL_MAX_DEFAULT};
    char err[256];
    unsigned char *img;
    size_t len;

    (void)state;
    tdir_make(&t);
    sp = must_open(&t, SPOOL_MAX_DEFAULT, 0, NULL);
    c.dir = t.path;
    assert_int_equal(spool_open(&c, &sp2, NULL, err, sizeof(err)),
                     -EWOULDBLOCK);
    assert_null(sp2);
    assert_non_null(strstr(err, "in use by another process"));
    spool_close(sp);
    /* A file with a segment's name that is not one is never touched. */
    spit(&t, SEG1, "not a spool segment at all\n", 27);
    assert_int_equal(spool_open(&c, &sp2, NULL, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "is not a spool segment"));
    img = slurp(&t, SEG1, &len);
    assert_int_equal(len, 27);
    free(img);
    /* Other files are ignored. */
    tdir_remove(&t);
    tdir_make(&t);
    spit(&t, "README", "x", 1);
    sp = must_open(&t, SPOOL_MAX_DEFAULT, 0, NULL);
    spool_close(sp);
    assert_int_equal(file_size(&t, "README"), 1);
    /* Limits. */
    c.dir = t.path;
    c.max_bytes = SPOOL_MAX_MIN - 1;
    assert_int_equal(spool_open(&c, &sp2, NULL, err, sizeof(err)), -EINVAL);
    tdir_remove(&t);
}

/* Damage after the open: the reader loses the rest of that segment only,
 * counted as dropped; a failing pread is reported and can be retried. */
static void
test_spool_read_damage_and_errors(void **state)
{
    struct tdir t;
    struct spool *sp;
    unsigned char *img;
    size_t len;
    uint64_t n1;

    (void)state;
    fx_reset();
    tdir_make(&t);
    assert_int_equal(sp_open(&t, SPOOL_MAX_DEFAULT, 1024, &fx_io, &sp, NULL),
                     0);
    append_n(sp, 1, 30);
    assert_int_equal(spool_sync(sp, 0, false), 0);
    assert_true(n_files(&t, ".seg") >= 3);
    img = slurp(&t, SEG1, &len);
    img[SPOOL_MAGIC_LEN + SPOOL_HDR_LEN + 2] ^= 1; /* record 1's seq */
    spit(&t, SEG1, img, len);
    free(img);
    fx.fail_pread_at = fx.n_pread + 1;
    {
        struct spool_rec r;

        assert_int_equal(spool_read(sp, &r), -EIO);
        assert_int_equal(spool_unread(sp), 30);
        assert_int_equal(spool_read(sp, &r), 0);
        /* Segment 1 is gone: the first record read is segment 2's. */
        n1 = r.seq - 1;
        assert_true(n1 >= 2);
        assert_int_equal(spool_dropped(sp), n1);
        expect_reads(sp, n1 + 2, 30 - n1 - 1);
    }
    spool_close(sp);
    tdir_remove(&t);
}

/* Random appends, syncs, reads, settles and reopens against a model: what
 * comes back after a reopen is exactly the records after the last settled
 * one, in order; numbering never repeats. */
static void
test_spool_model(void **state)
{
    struct tdir t;
    struct spool *sp;
    struct spool_open_info info;
    struct rng r;
    uint64_t next = 1, read_next = 1, settled = 0;
    int round, op;

    (void)state;
    tdir_make(&t);
    rng_seed(&r, 99);
    sp = must_open(&t, SPOOL_MAX_DEFAULT, 1500, NULL);
    for (round = 0; round < 3000; round++) {
        op = (int)rng_upto(&r, 99);
        if (op < 45) {
            uint64_t k = 1 + rng_upto(&r, 5);

            append_n(sp, next, k);
            next += k;
        } else if (op < 55) {
            assert_int_equal(spool_sync(sp, round, false), 0);
        } else if (op < 80) {
            uint64_t k = rng_upto(&r, next - read_next);

            expect_reads(sp, read_next, k);
            read_next += k;
        } else if (op < 97) {
            uint64_t upto = settled + rng_upto(&r, read_next - 1 - settled);

            assert_int_equal(spool_settle(sp, upto), 0);
            settled = upto;
            assert_int_equal(spool_acked(sp), settled);
        } else {
            spool_close(sp);
            sp = must_open(&t, SPOOL_MAX_DEFAULT, 1500, &info);
            assert_int_equal(info.n_cut, 0);
            assert_int_equal(info.resumed, next - 1 - settled);
            assert_int_equal(spool_next_seq(sp), next);
            read_next = settled + 1;
        }
        assert_int_equal(spool_unread(sp), next - read_next);
    }
    spool_close(sp);
    tdir_remove(&t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spool_crc32c),
        cmocka_unit_test(test_spool_roundtrip),
        cmocka_unit_test(test_spool_restart_resume),
        cmocka_unit_test(test_spool_crash_keeps_synced),
        cmocka_unit_test(test_spool_torn_tail_every_offset),
        cmocka_unit_test(test_spool_corruption),
        cmocka_unit_test(test_spool_corruption_middle_segment),
        cmocka_unit_test(test_spool_rotation_and_trim),
        cmocka_unit_test(test_spool_recycle),
        cmocka_unit_test(test_spool_full_drops_oldest),
        cmocka_unit_test(test_spool_write_fsync_failures),
        cmocka_unit_test(test_spool_truncate_failure_rotates),
        cmocka_unit_test(test_spool_truncate_failure_fresh_segment),
        cmocka_unit_test(test_spool_ack_file),
        cmocka_unit_test(test_spool_lock_and_foreign_files),
        cmocka_unit_test(test_spool_read_damage_and_errors),
        cmocka_unit_test(test_spool_model),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
