/* test_cwtest.c - the test helpers' own promises that other tests rely
 * on: a child forked with cwt_fork (and so every cwt_spawn'ed server)
 * dies with the test process that forked it, even when that process is
 * killed and runs no teardown; cwt_rx_queue reads the kernel's receive
 * queue of the right socket. */
// cw-test-timeout: 60
#include "cwtest.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* A stand-in for a test process: it forks a child with `forker` (which
 * would serve forever), reports the child's pid, and is SIGKILLed. We are
 * the subreaper, so the orphan comes to us: its wait status tells whether
 * it was killed, and we reap it either way. Returns that status, or -1 if
 * the child still lived after ms (then killed by us). */
static int orphan_status(pid_t (*forker)(void), int ms)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    pid_t mid = fork();
    assert_true(mid >= 0);
    if (mid == 0) {
        pid_t kid = forker();
        if (kid == 0) {
            for (;;)
                pause();
        }
        if (write(p[1], &kid, sizeof kid) != sizeof kid)
            _exit(1);
        for (;;)
            pause();
    }
    close(p[1]);
    pid_t kid = -1;
    assert_int_equal(read(p[0], &kid, sizeof kid), (ssize_t)sizeof kid);
    close(p[0]);
    assert_true(kid > 0);
    kill(mid, SIGKILL);   /* no teardown, no atexit: like CTest's timeout */
    int st;
    assert_int_equal(waitpid(mid, &st, 0), mid);
    int64_t end = cw_now_ms() + ms;
    while (cw_now_ms() < end) {
        pid_t r = waitpid(kid, &st, WNOHANG);
        if (r == kid)
            return st;
        cwt_sleep_ms(10);
    }
    kill(kid, SIGKILL);
    waitpid(kid, NULL, 0);
    return -1;
}

static void test_fork_child_dies_with_parent(void **state)
{
    for (int i = 0; i < 20; i++) {
        int st = orphan_status(cwt_fork, 10000);
        assert_true(st != -1);
        /* killed by the parent-death signal, or, when the parent died
         * before the child's prctl, gone by its own check (exit 127) */
        if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) &&
            !(WIFEXITED(st) && WEXITSTATUS(st) == 127))
            fail_msg("orphan ended with status 0x%x", st);
    }
}

static pid_t plain_fork(void)
{
    return fork();
}

/* The same with a plain fork(): the orphan lives on. This is what
 * cwt_fork prevents, and shows orphan_status can see it. */
static void test_plain_fork_child_outlives_parent(void **state)
{
    assert_int_equal(orphan_status(plain_fork, 500), -1);
}

/* cwt_rx_queue against the kernel's own answer to its process (FIONREAD
 * on the receiving descriptor), for bytes that were never read; -1 for a
 * connection that is not there. */
static void test_rx_queue(void **state)
{
    cw_conn *c = NULL;
    int s = -1;
    cwt_pair_raw(NULL, &c, &s);
    int lport = cwt_peer_port(c), rport = cwt_local_port(c);
    assert_int_equal(cwt_rx_queue(lport, rport), 0);
    static const char data[1000];
    assert_int_equal(send(cw_conn_fd(c), data, sizeof data, 0), (ssize_t)sizeof data);
    int inq = 0;
    for (int i = 0; i < 500 && inq < (int)sizeof data; i++) {   /* loopback: at once */
        assert_int_equal(ioctl(s, FIONREAD, &inq), 0);
        cwt_sleep_ms(1);
    }
    assert_int_equal(inq, (int)sizeof data);
    assert_int_equal(cwt_rx_queue(lport, rport), (long)sizeof data);
    assert_int_equal(cwt_rx_queue(rport, lport), 0);   /* the sender's side */
    assert_int_equal(cw_close(&c, CW_CLOSE_ABORT, 0), CW_OK);   /* RST: no TIME_WAIT */
    close(s);
    assert_int_equal(cwt_rx_queue(lport, rport), -1);
    assert_int_equal(cwt_rx_queue(rport, lport), -1);
}

int main(void)
{
    cwt_private_netns();
    /* orphans of our children are re-parented to us, not to init */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_fork_child_dies_with_parent),
        CWT_TEST(test_plain_fork_child_outlives_parent),
        CWT_TEST(test_rx_queue),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
