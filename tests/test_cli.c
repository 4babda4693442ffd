/* test_cli.c - the `closewise` front door: --help, --version, exit codes. */
#include "cwtest.h"

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Run closewise with args; returns the exit status, first stdout line in out. */
static int run(char *out, size_t size, char *a1, char *a2)
{
    char *argv[] = {CW_BUILD_DIR "/closewise", a1, a2, NULL};
    int fd;
    pid_t pid = cwt_spawn(argv, &fd);
    out[0] = '\0';
    cwt_read_line(fd, out, size, 5000);
    close(fd);
    int status = cwt_wait(pid, 5000);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void test_version_and_help(void **state)
{
    char line[256];
    assert_int_equal(run(line, sizeof line, "--version", NULL), 0);
    const char want[] = "closewise " CW_VERSION_STRING " ";
    assert_true(strncmp(line, want, sizeof want - 1) == 0);
    assert_int_equal(run(line, sizeof line, "--help", NULL), 0);
    assert_true(strncmp(line, "usage: closewise", 16) == 0);
}

static void test_usage_errors_exit_2(void **state)
{
    char line[256];
    assert_int_equal(run(line, sizeof line, NULL, NULL), 2);
    assert_int_equal(run(line, sizeof line, "no-such-command", NULL), 2);
    assert_string_equal(line, "");   /* errors go to stderr, not stdout */
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_version_and_help),
        CWT_TEST(test_usage_errors_exit_2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
