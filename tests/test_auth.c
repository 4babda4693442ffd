/* test_auth.c - credentials and the login throttle of the reference
 * server: crypt(3) hashes, bad entries, per-address (IPv6: per /64)
 * throttling with a window, and a table that never grows. */
#include "cwtest.h"
#include "../src/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void v4(uint8_t a[16], int last)
{
    memset(a, 0, 16);
    a[10] = a[11] = 0xFF;
    a[12] = 10;
    a[15] = (uint8_t)last;
}

static int check(cw__auth *a, const char *user, const char *pw)
{
    return cw__auth_check(a, user, strlen(user), pw, strlen(pw));
}

static void test_hashes(void **state)
{
    cw__auth *a;
    assert_int_equal(cw__auth_new(5, 60000, &a), CW_OK);
    char y[256], six[256];
    assert_int_equal(cw_passwd_hash("pw one", NULL, y, sizeof y), CW_OK);
    assert_int_equal(cw_passwd_hash("pw two", "$6$", six, sizeof six), CW_OK);
    assert_true(strncmp(y, "$y$", 3) == 0);
    assert_true(strncmp(six, "$6$", 3) == 0);
    assert_int_equal(cw_passwd_hash("x", NULL, y + 200, 8), CW_ETOOLONG);
    assert_int_equal(cw__auth_add_hash(a, "yes", y), CW_OK);
    assert_int_equal(cw__auth_add_hash(a, "six", six), CW_OK);
    assert_int_equal(cw__auth_add_hash(a, "six", y), -EEXIST);
    assert_int_equal(cw__auth_add_hash(a, "bad", "not-a-hash"), CW_EINVAL);
    assert_int_equal(cw__auth_add_hash(a, "a:b", y), CW_EINVAL);
    assert_int_equal(cw__auth_add_hash(a, "", y), CW_EINVAL);
    assert_int_equal(cw__auth_count(a), 2);
    assert_int_equal(check(a, "yes", "pw one"), 1);
    assert_int_equal(check(a, "six", "pw two"), 1);
    assert_int_equal(check(a, "yes", "pw two"), 0);
    assert_int_equal(check(a, "yes", "pw on"), 0);
    assert_int_equal(check(a, "nobody", "pw one"), 0);
    assert_int_equal(check(a, "ye", "pw one"), 0);   /* no prefix match */
    cw__auth_free(a);
}

static void test_load_file(void **state)
{
    char path[] = "/tmp/cwtest-auth-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    char h[256];
    assert_int_equal(cw_passwd_hash("s3cret", "$6$", h, sizeof h), CW_OK);
    dprintf(fd, "# comment\n\nalice:%s\r\nbob:%s\n", h, h);
    close(fd);
    cw__auth *a;
    assert_int_equal(cw__auth_new(5, 60000, &a), CW_OK);
    int line = -1;
    assert_int_equal(cw__auth_load(a, path, &line), 2);
    assert_int_equal(line, 0);
    assert_int_equal(check(a, "alice", "s3cret"), 1);   /* CRLF stripped */
    cw__auth_free(a);
    fd = open(path, O_WRONLY | O_APPEND);
    dprintf(fd, "carol\n");
    close(fd);
    assert_int_equal(cw__auth_new(5, 60000, &a), CW_OK);
    assert_int_equal(cw__auth_load(a, path, &line), CW_EINVAL);
    assert_int_equal(line, 5);
    cw__auth_free(a);
    unlink(path);
    assert_int_equal(cw__auth_new(5, 60000, &a), CW_OK);
    assert_int_equal(cw__auth_load(a, path, &line), -ENOENT);
    assert_int_equal(line, 0);
    cw__auth_free(a);
}

static void test_throttle(void **state)
{
    cw__auth *a;
    assert_int_equal(cw__auth_new(2, 1000, &a), CW_OK);
    uint8_t x[16], y[16];
    v4(x, 1);
    v4(y, 2);
    int64_t t = 1000000;
    assert_int_equal(cw__auth_throttled(a, x, t), 0);
    cw__auth_failed(a, x, t);
    assert_int_equal(cw__auth_throttled(a, x, t), 0);
    cw__auth_failed(a, x, t + 10);
    assert_int_equal(cw__auth_throttled(a, x, t + 20), 1);
    assert_int_equal(cw__auth_throttled(a, y, t + 20), 0);   /* per address */
    assert_int_equal(cw__auth_throttled(a, x, t + 999), 1);
    assert_int_equal(cw__auth_throttled(a, x, t + 1000), 0); /* window over */
    /* IPv6: one /64 is one client */
    uint8_t p[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1};
    uint8_t q[16];
    memcpy(q, p, 16);
    q[15] = 0x99;
    cw__auth_failed(a, p, t);
    cw__auth_failed(a, q, t);
    assert_int_equal(cw__auth_throttled(a, p, t), 1);
    q[7] = 2;   /* another /64 */
    assert_int_equal(cw__auth_throttled(a, q, t), 0);
    cw__auth_free(a);
    /* 0 disables */
    assert_int_equal(cw__auth_new(0, 1000, &a), CW_OK);
    for (int i = 0; i < 10; i++)
        cw__auth_failed(a, x, t);
    assert_int_equal(cw__auth_throttled(a, x, t), 0);
    cw__auth_free(a);
}

/* 100,000 failing addresses: the table stays its fixed size (ASan/valgrind
 * see no growth: there is no allocation), and a recent offender stays
 * throttled while older entries are reused first. */
static void test_throttle_table_bounded(void **state)
{
    cw__auth *a;
    assert_int_equal(cw__auth_new(1, 60000, &a), CW_OK);
    uint8_t x[16];
    int64_t t = 5000000;
    for (int i = 0; i < 100000; i++) {
        v4(x, 0);
        x[13] = (uint8_t)(i >> 8);
        x[14] = (uint8_t)i;
        x[12] = (uint8_t)(i >> 16);
        cw__auth_failed(a, x, t + i / 1000);
    }
    /* the last address is still throttled */
    assert_int_equal(cw__auth_throttled(a, x, t + 100), 1);
    cw__auth_free(a);
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_hashes),
        CWT_TEST(test_load_file),
        CWT_TEST(test_throttle),
        CWT_TEST(test_throttle_table_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
