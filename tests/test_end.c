/* test_end.c - the one vocabulary for how a connection ended: its words
 * are stable (logs and JSON depend on them), and cw_close()'s and the
 * reads' real results, from real sockets, map onto it. */
#include "cwtest.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void test_names_are_stable_words(void **state)
{
    static const char *want[] = {"none", "eof", "reset", "timeout", "too-long",
                                 "evicted", "abandoned", "error", "graceful",
                                 "abort", "plain"};
    size_t n = sizeof want / sizeof want[0];
    for (size_t i = 0; i < n; i++) {
        const char *w = cw_end_name((enum cw_end)i);
        assert_string_equal(w, want[i]);
        for (const char *p = w; *p; p++)
            assert_true(islower((unsigned char)*p) || *p == '-');
    }
    assert_string_equal(cw_end_name((enum cw_end)n), "unknown");
    assert_string_equal(cw_end_name((enum cw_end)-1), "unknown");
}

static void test_result_mapping(void **state)
{
    assert_int_equal(cw_end_of_read(5), CW_END_NONE);
    assert_int_equal(cw_end_of_read(0), CW_END_NONE);
    assert_int_equal(cw_end_of_read(CW_EOF), CW_END_EOF);
    assert_int_equal(cw_end_of_read(CW_ERESET), CW_END_RESET);
    assert_int_equal(cw_end_of_read(CW_ETIMEDOUT), CW_END_TIMEOUT);
    assert_int_equal(cw_end_of_read(CW_ETOOLONG), CW_END_TOO_LONG);
    assert_int_equal(cw_end_of_read(-EPIPE), CW_END_ERROR);
    assert_int_equal(cw_end_of_close(CW_CLOSE_ABORT, CW_OK), CW_END_ABORT);
    assert_int_equal(cw_end_of_close(CW_CLOSE_GRACEFUL, CW_OK), CW_END_GRACEFUL);
    assert_int_equal(cw_end_of_close(CW_CLOSE_GRACEFUL, CW_ETIMEDOUT), CW_END_TIMEOUT);
    assert_int_equal(cw_end_of_close(CW_CLOSE_GRACEFUL, CW_ERESET), CW_END_RESET);
    assert_int_equal(cw_end_of_close(CW_CLOSE_GRACEFUL, CW_ETOOLONG), CW_END_TOO_LONG);
    assert_int_equal(cw_end_of_close(CW_CLOSE_GRACEFUL, -EMFILE), CW_END_EVICTED);
    assert_int_equal(cw_end_of_close(CW_CLOSE_GRACEFUL, -EBADF), CW_END_ERROR);
}

/* The peer answers our FIN with its own: graceful. */
static void test_real_graceful_close(void **state)
{
    cw_conn *c;
    int fd;
    cwt_pair_raw("127.0.0.1", &c, &fd);
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    char b[8];
    assert_int_equal(cw_recv(c, b, sizeof b, cw_now_ms() + 2000), CW_EOF);
    assert_int_equal(cw_end_of_read(cw_recv(c, b, sizeof b, 0)), CW_END_EOF);
    int rc = cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000);
    assert_int_equal(cw_end_of_close(CW_CLOSE_GRACEFUL, rc), CW_END_GRACEFUL);
    close(fd);
}

/* The peer resets: the read says reset, and so does a close after it. */
static void test_real_reset(void **state)
{
    cw_conn *c;
    int fd;
    cwt_pair_raw("127.0.0.1", &c, &fd);
    struct linger lg = {1, 0};
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fd);
    char b[8];
    assert_int_equal(cw_end_of_read(cw_recv(c, b, sizeof b, cw_now_ms() + 2000)),
                     CW_END_RESET);
    int rc = cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000);
    assert_int_equal(cw_end_of_close(CW_CLOSE_GRACEFUL, rc), CW_END_RESET);
}

/* A peer that never closes: the close deadline ends it. */
static void test_real_timeout(void **state)
{
    cw_conn *c;
    int fd;
    cwt_pair_raw("127.0.0.1", &c, &fd);
    int rc = cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 100);
    assert_int_equal(cw_end_of_close(CW_CLOSE_GRACEFUL, rc), CW_END_TIMEOUT);
    close(fd);
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_names_are_stable_words),
        CWT_TEST(test_result_mapping),
        CWT_TEST(test_real_graceful_close),
        CWT_TEST(test_real_reset),
        CWT_TEST(test_real_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
