/* test_tcpstate.c - the one table of TCP state names (src/net/tcpstate.c):
 * the kernel's names, ss(8)'s names and groups, and the state of a real
 * socket named by it. */
#include "cwtest.h"

#include <closewise/diag.h>
#include <string.h>
#include <unistd.h>

static void test_names_both_ways(void **state)
{
    for (int st = CW_TCP_ESTABLISHED; st <= CW_TCP_NEW_SYN_RECV; st++) {
        assert_int_equal(cw_tcp_state_parse(cw_tcp_state_name(st)), st);
        assert_int_equal(cw_tcp_state_parse(cw_tcp_state_filter_name(st)), st);
    }
    assert_string_equal(cw_tcp_state_name(CW_TCP_CLOSE_WAIT), "CLOSE_WAIT");
    assert_string_equal(cw_tcp_state_filter_name(CW_TCP_CLOSE_WAIT), "close-wait");
    assert_string_equal(cw_tcp_state_name(0), "UNKNOWN");
    assert_null(cw_tcp_state_filter_name(99));
    /* ss(8)'s spellings */
    assert_int_equal(cw_tcp_state_parse("estab"), CW_TCP_ESTABLISHED);
    assert_int_equal(cw_tcp_state_parse("listening"), CW_TCP_LISTEN);
    assert_int_equal(cw_tcp_state_parse("closed"), CW_TCP_CLOSE);
    assert_int_equal(cw_tcp_state_parse("fin-wait-1"), CW_TCP_FIN_WAIT1);
    assert_int_equal(cw_tcp_state_parse("SYN-RECV"), CW_TCP_SYN_RECV);
    assert_int_equal(cw_tcp_state_parse("close-wai"), CW_EINVAL);
    assert_int_equal(cw_tcp_state_parse("-"), CW_EINVAL);
    assert_int_equal(cw_tcp_state_parse("all"), CW_EINVAL);   /* a group, not a state */
}

static void test_lists_and_groups(void **state)
{
    unsigned m = 0;
    size_t bad = 99;
    assert_int_equal(cw_tcp_states_parse("close-wait,time-wait", &m, &bad), CW_OK);
    assert_int_equal(m, CW_STATE_BIT(CW_TCP_CLOSE_WAIT) | CW_STATE_BIT(CW_TCP_TIME_WAIT));
    assert_int_equal(cw_tcp_states_parse("all", &m, NULL), CW_OK);
    assert_int_equal(m, CW_STATES_ALL);
    assert_int_equal(cw_tcp_states_parse("connected", &m, NULL), CW_OK);
    assert_false(m & CW_STATE_BIT(CW_TCP_LISTEN));
    assert_true(m & CW_STATE_BIT(CW_TCP_SYN_SENT));
    assert_int_equal(cw_tcp_states_parse("synchronized", &m, NULL), CW_OK);
    assert_false(m & CW_STATE_BIT(CW_TCP_SYN_SENT));
    assert_true(m & CW_STATE_BIT(CW_TCP_CLOSE_WAIT));
    assert_int_equal(cw_tcp_states_parse("bucket", &m, NULL), CW_OK);
    assert_int_equal(m, CW_STATE_BIT(CW_TCP_SYN_RECV) | CW_STATE_BIT(CW_TCP_TIME_WAIT));
    assert_int_equal(cw_tcp_states_parse("big", &m, NULL), CW_OK);
    assert_int_equal(m, CW_STATES_ALL & ~(CW_STATE_BIT(CW_TCP_SYN_RECV) |
                                          CW_STATE_BIT(CW_TCP_TIME_WAIT)));
    m = 7;
    assert_int_equal(cw_tcp_states_parse("estab,nope", &m, &bad), CW_EINVAL);
    assert_int_equal(bad, 6);
    assert_int_equal(m, 7);   /* untouched on error */
    assert_int_equal(cw_tcp_states_parse("estab,", &m, &bad), CW_EINVAL);
    assert_int_equal(bad, 6);
    assert_int_equal(cw_tcp_states_parse("", &m, &bad), CW_EINVAL);
    assert_int_equal(cw_tcp_states_parse(NULL, &m, &bad), CW_EINVAL);
    for (int i = 0; cw_tcp_state_group_name(i); i++)
        assert_int_equal(cw_tcp_states_parse(cw_tcp_state_group_name(i), &m, NULL), CW_OK);
}

/* The kernel's number for a real CLOSE_WAIT socket reads as the name the
 * table gives it. */
static void test_real_socket(void **state)
{
    cw_conn *c;
    int srv;
    cwt_pair_raw("127.0.0.1", &c, &srv);
    close(srv);
    int st = -1;
    for (int i = 0; i < 100 && st != CW_TCP_CLOSE_WAIT; i++) {
        st = cw_tcp_state(c);
        if (st != CW_TCP_CLOSE_WAIT)
            cwt_sleep_ms(10);
    }
    assert_string_equal(cw_tcp_state_name(st), "CLOSE_WAIT");
    cw_close(&c, CW_CLOSE_ABORT, CW_NEVER);
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_names_both_ways),
        CWT_TEST(test_lists_and_groups),
        CWT_TEST(test_real_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
