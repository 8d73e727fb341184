/*
 * test_file: file_read_all (lib/util/file.c), the reader of tokens files
 * and certificates: whole contents, NUL-ended, the limit, read errors.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/file.h"

/* A memfd holding n bytes of a repeating pattern, offset 0. */
static int
mem_file(size_t n)
{
    int fd = memfd_create("test_file", 0);
    size_t i;

    assert_true(fd >= 0);
    for (i = 0; i < n; i++) {
        char c = (char)('a' + i % 26);

        assert_int_equal(write(fd, &c, 1), 1);
    }
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return fd;
}

static void
test_sizes(void **state)
{
    /* Around the first buffer (4096 with its NUL) and past two growths. */
    static const size_t sizes[] = {0, 1, 4094, 4095, 4096, 4097, 9000, 70000};
    size_t k;

    (void)state;
    for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        int fd = mem_file(sizes[k]);
        char *buf = NULL;
        size_t len = 12345, i;

        assert_int_equal(file_read_all(fd, 1u << 20, &buf, &len), 0);
        assert_int_equal(len, sizes[k]);
        assert_int_equal(buf[len], '\0');
        for (i = 0; i < len; i++)
            assert_int_equal(buf[i], 'a' + (int)(i % 26));
        file_free(buf, len);
        close(fd);
    }
    file_free(NULL, 0);
}

static void
test_limit(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    int fd;

    (void)state;
    /* Exactly the limit is fine; one byte more is not, whatever the
     * buffer size is at that point. */
    fd = mem_file(5000);
    assert_int_equal(file_read_all(fd, 5000, &buf, &len), 0);
    assert_int_equal(len, 5000);
    file_free(buf, len);
    buf = NULL;
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    assert_int_equal(file_read_all(fd, 4999, &buf, &len), -EFBIG);
    assert_null(buf);
    close(fd);
    fd = mem_file(100000);
    assert_int_equal(file_read_all(fd, 10, &buf, &len), -EFBIG);
    assert_null(buf);
    close(fd);
}

static void
test_read_error(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    int fds[2];

    (void)state;
    /* A closed descriptor: read(2)'s error comes back as is. */
    fds[0] = memfd_create("x", 0);
    close(fds[0]);
    assert_int_equal(file_read_all(fds[0], 100, &buf, &len), -EBADF);
    assert_null(buf);
    /* A pipe: read to EOF, not to a size. */
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], "PEM\n", 4), 4);
    close(fds[1]);
    assert_int_equal(file_read_all(fds[0], 100, &buf, &len), 0);
    assert_string_equal(buf, "PEM\n");
    file_free(buf, len);
    close(fds[0]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_read_error),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
