/* test_examples.c - the seed's bug and its fix, as real processes: the
 * leaky example leaves one CLOSE_WAIT socket per connection the server
 * ended; the libclosewise one leaves none. The kernel's table decides. */
#include "cwtest.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CONNECTIONS 5

struct server {
    cw_listener *l;
    int served;
};

/* The seed's server: read the login, refuse it, close first. */
static void *serve(void *arg)
{
    struct server *sv = arg;
    for (int i = 0; i < CONNECTIONS; i++) {
        cw_conn *c;
        assert_int_equal(cw_accept(sv->l, cw_now_ms() + 10000, &c), CW_OK);
        char line[128];
        assert_true(cw_readline(c, line, sizeof line, cw_now_ms() + 5000) > 0);
        assert_int_equal(cw_send_all(c, "ERR bad credentials\n", 20, CW_NEVER), CW_OK);
        cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 100);
        sv->served++;
    }
    return NULL;
}

/* Run an example client against the server; returns how many sockets the
 * client holds in CLOSE_WAIT once it has finished its connections. */
static int run_client(const char *name, int *total_sockets)
{
    struct server sv = {0};
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, 16, &sv.l), CW_OK);
    char path[512], port[16];
    snprintf(path, sizeof path, "%s/examples/%s", CW_BUILD_DIR, name);
    snprintf(port, sizeof port, "%d", cw_listener_port(sv.l));
    pthread_t t = cwt_thread(serve, &sv);
    char count[8];
    snprintf(count, sizeof count, "%d", CONNECTIONS);
    char *argv[] = {path, "127.0.0.1", port, count, "30000", NULL};
    int out;
    pid_t pid = cwt_spawn(argv, &out);
    char line[64];
    assert_int_equal(cwt_read_line(out, line, sizeof line, 20000), 4);
    assert_string_equal(line, "done");
    cwt_join(t);
    assert_int_equal(sv.served, CONNECTIONS);
    /* CLOSE_WAIT towards our port, by the kernel's table and by owner */
    int by_owner = cwt_count_pid(pid, CW_TCP_CLOSE_WAIT);
    int by_port = cwt_count(CW_TCP_CLOSE_WAIT, 0, cw_listener_port(sv.l));
    assert_int_equal(by_owner, by_port);
    *total_sockets = cwt_count_pid(pid, CW_TCP_CLOSE_WAIT) + cwt_count_pid(pid, CW_TCP_ESTABLISHED);
    cwt_kill(pid);
    close(out);
    /* the leak dies with the process: the kernel closes what it held */
    assert_int_equal(cwt_wait_count(CW_TCP_CLOSE_WAIT, 0, cw_listener_port(sv.l), 0, 2000), 0);
    cw_listener_close(&sv.l);
    return by_owner;
}

static void test_leaky_client_leaks(void **state)
{
    int total;
    int leaked = run_client("leaky_client", &total);
    printf("# leaky_client: %d of %d connections left in CLOSE_WAIT\n", leaked, CONNECTIONS);
    assert_int_equal(leaked, CONNECTIONS);
}

static void test_tidy_client_leaks_nothing(void **state)
{
    int total;
    int leaked = run_client("tidy_client", &total);
    printf("# tidy_client: %d of %d connections left in CLOSE_WAIT\n", leaked, CONNECTIONS);
    assert_int_equal(leaked, 0);
    assert_int_equal(total, 0);
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_leaky_client_leaks),
        CWT_TEST(test_tidy_client_leaks_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
