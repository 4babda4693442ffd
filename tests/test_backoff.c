/* test_backoff.c - reconnect delays: within bounds, doubling, capped,
 * jittered, and never zero. */
#include "cwtest.h"

static void test_delays_double_up_to_the_cap(void **state)
{
    struct cw_backoff b;
    cw_backoff_init(&b, 100, 1000);
    int64_t ceil = 100;
    for (int i = 0; i < 10; i++) {
        int64_t d = cw_backoff_next(&b);
        assert_true(d >= ceil - ceil / 2 && d <= ceil);
        ceil = ceil * 2 > 1000 ? 1000 : ceil * 2;
    }
    cw_backoff_reset(&b);
    int64_t d = cw_backoff_next(&b);
    assert_true(d >= 50 && d <= 100);
}

/* Equal jitter: delays of one attempt spread over half their range, so a
 * fleet of clients does not reconnect in lockstep. */
static void test_jitter_spreads(void **state)
{
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < 200; i++) {
        struct cw_backoff b;
        cw_backoff_init(&b, 1000, 1000);
        int64_t d = cw_backoff_next(&b);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    assert_true(lo >= 500 && hi <= 1000);
    assert_true(hi - lo >= 250);
}

static void test_never_zero_and_no_overflow(void **state)
{
    struct cw_backoff b;
    cw_backoff_init(&b, 0, -5);   /* raised to 1 ms */
    for (int i = 0; i < 1000; i++)
        assert_true(cw_backoff_next(&b) >= 1);
    cw_backoff_init(&b, 1, INT64_MAX);
    for (int i = 0; i < 200; i++)
        assert_true(cw_backoff_next(&b) > 0);
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_delays_double_up_to_the_cap),
        CWT_TEST(test_jitter_spreads),
        CWT_TEST(test_never_zero_and_no_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
