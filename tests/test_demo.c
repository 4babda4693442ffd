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

static int have(const char *cmd)
{
    char sh[128];
    snprintf(sh, sizeof sh, "command -v %s >/dev/null 2>&1", cmd);
    return system(sh) == 0;
}

static int count_of(const char *doc, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(doc, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* The picture: well-formed XML with both panels of part 1 (each with its
 * directly labelled CLOSE_WAIT line and the idle-timeout marker) and the
 * part 2 chart (six bars, the line of the server behind the RSTs, or the
 * sentence saying BPF could not name it). */
static void check_svg(const char *path, int bpf)
{
    if (have("xmllint"))
        assert_int_equal(cwt_sh("xmllint --noout '%s'", path), 0);
    else
        print_message("xmllint missing: well-formedness unchecked\n");
    static char svg[131072];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(svg, 1, sizeof svg - 1, f);
    svg[n] = '\0';
    fclose(f);
    assert_non_null(strstr(svg, "<svg "));
    assert_non_null(strstr(svg, "id=\"panel-seed\""));
    assert_non_null(strstr(svg, "id=\"panel-libclosewise\""));
    assert_int_equal(count_of(svg, "class=\"close-wait\""), 2);
    assert_int_equal(count_of(svg, "class=\"idle-timeout\""), 2);
    assert_non_null(strstr(svg, ">CLOSE_WAIT: 50 (never closed)</text>"));
    assert_non_null(strstr(svg, ">CLOSE_WAIT: 0 (each closed at once)</text>"));
    assert_int_equal(count_of(svg, "class=\"label-established\""), 2);
    assert_non_null(strstr(svg, "id=\"part2\""));
    assert_int_equal(count_of(svg, "class=\"bar\""), 6);
    assert_non_null(strstr(svg, ">50/50 complete, then end of stream</text>"));
    assert_non_null(strstr(svg, ">0/50 complete, then reset (RST)</text>"));
    assert_int_equal(count_of(svg, "class=\"rst-line\""), 2);
    char at[64];
    snprintf(at, sizeof at, "close() at server.c:%d (", SERVER_CLOSE_LINE);
    if (bpf)   /* the server's line, not the library's close() under it */
        assert_int_equal(count_of(svg, at), 2);
    else
        assert_int_equal(count_of(svg, "(BPF unavailable: cannot name the line)"), 2);
}

static void check_png(const char *path)
{
    unsigned char sig[8] = {0};
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(sig, 1, sizeof sig, f), sizeof sig);
    fclose(f);
    assert_memory_equal(sig, "\x89PNG\r\n\x1a\n", 8);
}

/* Part 2 names the server line behind each RST of the resetting
 * reference servers (BPF), or says it cannot (JSON null). */
static int check_rst_lines(const char *doc)
{
    const char *bpf = strstr(doc, "\"resets_bpf\": ");
    assert_non_null(bpf);
    int on = !strncmp(bpf + 14, "true", 4);
    const char *cases[] = {"\"reference server, SO_LINGER {1,0}\"",
                           "\"reference server, plain close()\""};
    for (int i = 0; i < 2; i++) {
        const char *c = strstr(doc, cases[i]);
        assert_non_null(c);
        const char *r = strstr(c, "\"rst_at\": ");
        assert_non_null(r);
        if (on) {
            assert_int_equal(json_int(doc, cases[i], "server_rsts"), 50);
            char want[64];
            snprintf(want, sizeof want, "[{\"at\": \"server.c:%d (", SERVER_CLOSE_LINE);
            if (strncmp(r + 10, want, strlen(want)))
                fail_msg("%s: expected %s... in %.200s", cases[i], want, r);
        } else {
            assert_true(!strncmp(r + 10, "null", 4));
        }
    }
    assert_int_equal(on ? json_int(doc, "\"reference server, graceful close\"", "server_rsts")
                        : 0, 0);
    return on;
}

static void test_demo_quick_numbers(void **state)
{
    char svg[] = "/tmp/cwtest-demo-XXXXXX.svg", png[] = "/tmp/cwtest-demo-XXXXXX.png";
    int sfd = mkstemps(svg, 4), pfd = mkstemps(png, 4);
    assert_true(sfd >= 0 && pfd >= 0);
    close(sfd);
    close(pfd);
    int raster = have("rsvg-convert");
    char *argv[] = {BIN, "demo", "--quick", "--json", "--svg", svg, raster ? "--png" : NULL,
                    png, NULL};
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
    check_svg(svg, check_rst_lines(doc));
    if (raster)
        check_png(png);
    else
        print_message("rsvg-convert missing: --png untested\n");
    unlink(svg);
    unlink(png);
}

/* A path that cannot be written fails at once (not after the run), with
 * one line, status 3; so does --png without a rasterizer. */
static void test_demo_bad_output(void **state)
{
    char *argv[] = {BIN, "demo", "--svg", "/nonexistent/x.svg", NULL};
    int err;
    int64_t t0 = cw_now_ms();
    pid_t pid = cwt_spawn3(argv, NULL, NULL, &err);
    static char msg[4096];
    cwt_read_all(err, msg, sizeof msg, 5000);
    int status = cwt_wait(pid, 5000);
    close(err);
    assert_true(cw_now_ms() - t0 < 2000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 3);
    assert_int_equal(count_of(msg, "\n"), 1);
    assert_non_null(strstr(msg, "closewise demo: --svg: cannot write '/nonexistent/x.svg'"));
    char *argv2[] = {"/usr/bin/env", "PATH=/nonexistent", BIN, "demo", "--png", "/tmp/x.png",
                     NULL};
    pid = cwt_spawn3(argv2, NULL, NULL, &err);
    cwt_read_all(err, msg, sizeof msg, 5000);
    status = cwt_wait(pid, 5000);
    close(err);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 3);
    assert_int_equal(count_of(msg, "\n"), 1);
    assert_non_null(strstr(msg, "rsvg-convert"));
    assert_int_equal(access("/tmp/x.png", F_OK), -1);
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
        CWT_TEST(test_demo_bad_output),
        CWT_TEST(test_demo_quick_numbers),
        CWT_TEST(test_demo_ctrl_c_cleans_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
