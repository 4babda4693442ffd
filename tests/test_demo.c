/* test_demo.c - `closewise demo` end to end in its short mode, with its
 * numbers asserted, and its cleanup on Ctrl-C checked against /proc and
 * the kernel's socket table. */
// cw-test-timeout: 120
#include "cwtest.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define BIN CW_BUILD_DIR "/closewise"

static int json_int(const char *doc, const char *after, const char *key)
{
    const char *p = after ? strstr(doc, after) : doc;
    assert_non_null(p);
    char k[64];
    snprintf(k, sizeof k, "\"%s\": ", key);
    p = strstr(p, k);
    assert_non_null(p);
    return atoi(p + strlen(k));
}

static void test_demo_quick_numbers(void **state)
{
    char svg[] = "/tmp/cwtest-demo-XXXXXX";
    int sfd = mkstemp(svg);
    assert_true(sfd >= 0);
    char *argv[] = {BIN, "demo", "--quick", "--json", "--svg", svg, NULL};
    int out;
    pid_t pid = cwt_spawn3(argv, NULL, &out, NULL);
    static char doc[65536];
    cwt_read_all(out, doc, sizeof doc, 60000);
    int status = cwt_wait(pid, 10000);
    close(out);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* part 1: the seed's clients leak one socket each, ours none */
    assert_int_equal(json_int(doc, NULL, "clients"), 50);
    assert_int_equal(json_int(doc, NULL, "seed_max"), 50);
    assert_int_equal(json_int(doc, NULL, "seed_final"), 50);
    assert_int_equal(json_int(doc, NULL, "seed_after_exit"), 0);
    assert_int_equal(json_int(doc, NULL, "tidy_stuck"), 0);
    assert_int_equal(json_int(doc, NULL, "tidy_final"), 0);
    assert_int_equal(json_int(doc, NULL, "tidy_sessions_ended"), 50);
    /* part 2: graceful close delivers everything; a RST loses the queued
     * long reply, while the short one survives on Linux but ends in reset */
    const char *ref_g = "\"reference server, graceful close\"";
    const char *ref_l = "\"reference server, SO_LINGER {1,0}\"";
    const char *ref_p = "\"reference server, plain close()\"";
    assert_int_equal(json_int(doc, ref_g, "complete"), 50);
    assert_int_equal(json_int(doc, ref_g, "eof"), 50);
    assert_int_equal(json_int(doc, ref_l, "reset"), 50);
    assert_int_equal(json_int(doc, ref_p, "reset"), 50);
    assert_int_equal(json_int(doc, "\"256 KiB reply, graceful close\"", "complete"), 50);
    assert_int_equal(json_int(doc, "\"256 KiB reply, SO_LINGER {1,0}\"", "complete"), 0);
    assert_int_equal(json_int(doc, "\"256 KiB reply, plain close()\"", "complete"), 0);
    char head[64] = "";
    FILE *f = fdopen(sfd, "r");
    assert_non_null(fgets(head, sizeof head, f));
    fclose(f);
    unlink(svg);
    assert_true(strncmp(head, "<svg ", 5) == 0);
}

/* Children of pid, from /proc. */
static int children_of(pid_t parent, pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) && n < max) {
        char path[300], buf[512];
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        int ppid = 0;
        if (fgets(buf, sizeof buf, f)) {
            char *p = strrchr(buf, ')');
            if (p)
                sscanf(p + 2, "%*c %d", &ppid);
        }
        fclose(f);
        if (ppid == parent)
            out[n++] = atoi(e->d_name);
    }
    closedir(d);
    return n;
}

static void test_demo_ctrl_c_cleans_up(void **state)
{
    char *argv[] = {BIN, "demo", "--quick", NULL};
    int out;
    pid_t pid = cwt_spawn3(argv, NULL, &out, NULL);
    char line[256];
    /* run until the seed's clients are leaking, then interrupt */
    int64_t end = cw_now_ms() + 10000;
    while (cwt_count_addr(CW_TCP_CLOSE_WAIT, "127.0.0.2") == 0 && cw_now_ms() < end)
        cwt_read_line(out, line, sizeof line, 100);
    assert_true(cwt_count_addr(CW_TCP_CLOSE_WAIT, "127.0.0.2") > 0);
    pid_t kids[16];
    int nkids = children_of(pid, kids, 16);
    assert_int_equal(nkids, 3);   /* the server and the two client groups */
    kill(pid, SIGINT);
    int status = cwt_wait(pid, 10000);
    close(out);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 128 + SIGINT);
    for (int i = 0; i < nkids; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d", (int)kids[i]);
        assert_int_equal(access(path, F_OK), -1);   /* reaped, not orphaned */
    }
    assert_int_equal(cwt_count_addr(CW_TCP_CLOSE_WAIT, "127.0.0.2"), 0);
    assert_int_equal(cwt_count_addr(CW_TCP_ESTABLISHED, "127.0.0.3"), 0);
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_demo_quick_numbers),
        CWT_TEST(test_demo_ctrl_c_cleans_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
