/* test_cwtest.c - the test helpers' own promises that other tests rely
 * on: a child forked with cwt_fork (and so every cwt_spawn'ed server)
 * dies with the test process that forked it, even when that process is
 * killed and runs no teardown. */
// cw-test-timeout: 60
#include "cwtest.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
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

int main(void)
{
    cwt_private_netns();
    /* orphans of our children are re-parented to us, not to init */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_fork_child_dies_with_parent),
        CWT_TEST(test_plain_fork_child_outlives_parent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
