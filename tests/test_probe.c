/* test_probe.c - `closewise probe` against real clients: the seed's leaky
 * example leaks on every scenario that ends the connection, the
 * libclosewise example passes them all, and a client without a read
 * timeout hangs on `silent`. Every run is then checked for what it must
 * not leave behind: processes of the client and sockets on the port. */
// cw-test-timeout: 180
#include "cwtest.h"

#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define BIN CW_BUILD_DIR "/closewise"
#define LEAKY CW_BUILD_DIR "/examples/leaky_client"
#define TIDY CW_BUILD_DIR "/examples/tidy_client"

static char self[512];   /* this test binary: also a client, see main() */

struct probe {
    int status;          /* exit code */
    char out[65536];
    char err[8192];
};

/* Run `closewise probe ARGS...` and collect its output and exit code. */
static void probe(struct probe *p, char *const args[])
{
    char *argv[64] = {BIN, "probe"};
    int n = 2;
    for (int i = 0; args[i]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int out, err;
    pid_t pid = cwt_spawn3(argv, NULL, &out, &err);
    cwt_read_all(out, p->out, sizeof p->out, 120000);
    cwt_read_all(err, p->err, sizeof p->err, 5000);
    int st = cwt_wait(pid, 10000);
    close(out);
    close(err);
    assert_true(WIFEXITED(st));
    p->status = WEXITSTATUS(st);
}

/* The JSON line of one scenario (the report puts each on its own line). */
static const char *scenario(const struct probe *p, const char *name, char *buf,
                            size_t size)
{
    char key[96];
    snprintf(key, sizeof key, "{\"name\": \"%s\",", name);
    const char *s = strstr(p->out, key);
    if (!s)
        fail_msg("no scenario %s in:\n%s", name, p->out);
    size_t len = strcspn(s, "\n");
    assert_true(len < size);
    memcpy(buf, s, len);
    buf[len] = '\0';
    return buf;
}

static long long field(const char *line, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, "\"%s\": ", key);
    const char *s = strstr(line, k);
    if (!s)
        fail_msg("no %s in %s", key, line);
    return strtoll(s + strlen(k), NULL, 10);
}

static void expect_verdict(const char *line, const char *verdict)
{
    char want[64];
    snprintf(want, sizeof want, "\"verdict\": \"%s\"", verdict);
    if (!strstr(line, want))
        fail_msg("expected %s: %s", verdict, line);
}

static int count_lines(const char *text, const char *needle)
{
    int n = 0;
    for (const char *s = text; (s = strstr(s, needle)); s++)
        n++;
    return n;
}

static int json_port(const struct probe *p)
{
    return (int)field(p->out, "port");
}

/* Nothing of a run may outlive the probe: the client's processes are
 * gone, and no socket on the probe's port is open or stuck (TIME_WAIT,
 * the kernel's own, is allowed). */
static void expect_clean(const struct probe *p, const pid_t *pids, int n)
{
    for (int i = 0; i < n; i++)
        if (kill(pids[i], 0) == 0 || errno != ESRCH)
            fail_msg("process %d of the client outlived the probe", (int)pids[i]);
    int port = json_port(p);
    static const int live[] = {CW_TCP_ESTABLISHED, CW_TCP_CLOSE_WAIT, CW_TCP_LAST_ACK,
                               CW_TCP_LISTEN, CW_TCP_SYN_RECV};
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++) {
        assert_int_equal(cwt_wait_count(live[i], port, 0, 0, 2000), 0);
        assert_int_equal(cwt_wait_count(live[i], 0, port, 0, 2000), 0);
    }
}

/* The pids the report names, client and leak holders. */
static int report_pids(const struct probe *p, pid_t *out, int max)
{
    int n = 0;
    for (const char *s = p->out; n < max && (s = strstr(s, "\"pid\": ")); s++)
        out[n++] = (pid_t)atoi(s + 7);
    return n;
}

static void test_leaky_client_leaks(void **state)
{
    struct probe p;
    char *args[] = {"--json", "--grace", "500ms", "--hang-limit", "2s", "--",
                    LEAKY, "{host}", "{port}", "1", "4000", NULL};
    probe(&p, args);
    assert_int_equal(p.status, 1);
    assert_string_equal(p.err, "");
    static const char *fin[] = {"fin-on-accept", "fin-after-greeting",
                                "fin-while-client-writes", "half-close", "auth-error",
                                "slow-drip"};
    char line[2048];
    for (size_t i = 0; i < sizeof fin / sizeof fin[0]; i++) {
        scenario(&p, fin[i], line, sizeof line);
        expect_verdict(line, "LEAK");
        assert_non_null(strstr(line, "\"state\": \"CLOSE_WAIT\""));
        assert_non_null(strstr(line, "\"comm\": \"leaky_client\""));
        assert_true(field(line, "fd") >= 3);
        /* it read the EOF (Recv-Q 0) and never closed */
        assert_int_equal(field(line, "recv_q"), 0);
        /* --where (default on) names the recv() that returned 0 */
        char where[160];
        snprintf(where, sizeof where, "\"where\": \"EOF returned by recv() at "
                 "leaky_client.c:%d (session) and never closed\"", LEAKY_RECV_LINE);
        assert_non_null(strstr(line, where));
        long long held = field(line, "held_ms");
        assert_true(held > 500 && held < 3000);
        /* the probe ended the run at the leak: the client did not exit */
        assert_non_null(strstr(line, "\"killed\": true"));
        assert_int_equal(field(line, "connections"), 1);
    }
    /* a reset kills the socket; the descriptor stays open: still a leak */
    expect_verdict(scenario(&p, "rst", line, sizeof line), "LEAK");
    assert_non_null(strstr(line, "\"state\": \"CLOSED\""));
    /* a 30 s SO_RCVTIMEO is longer than the hang limit */
    expect_verdict(scenario(&p, "silent", line, sizeof line), "HANG");
    assert_true(field(line, "hang_ms") >= 2000);
    assert_non_null(strstr(p.out, "\"passed\": 0, \"failed\": 8"));
    pid_t pids[64];
    expect_clean(&p, pids, report_pids(&p, pids, 64));
}

static void test_tidy_client_passes_all(void **state)
{
    struct probe p;
    /* HOLD_MS 4000 keeps it alive past the grace: its sockets must be
     * closed by close(), not by its exit. A 300 ms read timeout ends the
     * wait on the silent server. A grace of 1 s leaves room for a loaded
     * machine; the client takes milliseconds. */
    char *args[] = {"--json", "--grace", "1s", "--hang-limit", "2s", "--",
                    TIDY, "{host}", "{port}", "1", "4000", "300", NULL};
    probe(&p, args);
    assert_int_equal(p.status, 0);
    assert_non_null(strstr(p.out, "\"passed\": 8, \"failed\": 0"));
    char line[2048];
    for (const char *s = p.out; (s = strstr(s, "{\"name\": ")); s++) {
        size_t len = strcspn(s, "\n");
        memcpy(line, s, len);
        line[len] = '\0';
        expect_verdict(line, "PASS");
        assert_int_equal(field(line, "connections"), 1);
        /* closed within the grace, while the process lived on */
        long long ms = field(line, "close_ms");
        assert_true(ms >= 0 && (ms < 1000 || strstr(line, "silent")));
        assert_non_null(strstr(line, "\"closed_first\": 0"));
        assert_non_null(strstr(line, "\"killed\": true"));
        assert_non_null(strstr(line, "\"leak\": null"));
    }
    /* silent: it gave up after its read timeout (300 ms after it sent
     * its login, which is after our accept), not at once */
    long long gave_up = field(scenario(&p, "silent", line, sizeof line), "close_ms");
    assert_true(gave_up >= 200 && gave_up < 2000);
    pid_t pids[64];
    expect_clean(&p, pids, report_pids(&p, pids, 64));
}

/* A correct client without any read timeout: it closes on the server's
 * FIN, and waits forever for a server that never answers. */
static void test_client_without_timeout_hangs_on_silent(void **state)
{
    struct probe p;
    char *args[] = {"--json", "--scenario", "silent,fin-after-greeting", "--grace", "500ms",
                    "--hang-limit", "1s", "--", self, "no-timeout", "{host}", "{port}", NULL};
    int64_t t0 = cw_now_ms();
    probe(&p, args);
    int64_t took = cw_now_ms() - t0;
    assert_int_equal(p.status, 1);
    char line[2048];
    expect_verdict(scenario(&p, "silent", line, sizeof line), "HANG");
    long long hang = field(line, "hang_ms");
    assert_true(hang >= 1000 && hang < 2000);
    assert_non_null(strstr(line, "\"killed\": true"));
    expect_verdict(scenario(&p, "fin-after-greeting", line, sizeof line), "PASS");
    assert_non_null(strstr(line, "\"exit_code\": 0"));   /* it exits on EOF */
    assert_non_null(strstr(p.out, "\"passed\": 1, \"failed\": 1"));
    assert_true(took < 6000);   /* bounded by the limits, not by the client */
    pid_t pids[8];
    expect_clean(&p, pids, report_pids(&p, pids, 8));
}

/* The verdict is about sockets kept while the process lives: the leaky
 * client that exits as soon as the server closed has released them. */
static void test_prompt_exit_passes(void **state)
{
    struct probe p;
    char *args[] = {"--json", "--scenario", "auth-error", "--grace", "500ms", "--",
                    LEAKY, "{host}", "{port}", "1", "0", NULL};
    probe(&p, args);
    assert_int_equal(p.status, 0);
    char line[2048];
    expect_verdict(scenario(&p, "auth-error", line, sizeof line), "PASS");
    assert_non_null(strstr(line, "\"exit_code\": 0, \"signal\": null, \"killed\": false"));
}

/* A client that leaves its socket to a background child and exits: the
 * child is still the client's (the probe is its reaper), its leak is
 * found, and it is killed at the end. It finds the probe through the
 * environment. */
static void test_daemonized_child_is_watched_and_killed(void **state)
{
    struct probe p;
    char *args[] = {"--json", "--scenario", "fin-after-greeting", "--grace", "500ms", "--",
                    "/bin/sh", "-c",
                    "\"$0\" \"$CW_PROBE_HOST\" \"$CW_PROBE_PORT\" 1 20000 & exit 7", LEAKY,
                    NULL};
    probe(&p, args);
    assert_int_equal(p.status, 1);
    char line[2048];
    expect_verdict(scenario(&p, "fin-after-greeting", line, sizeof line), "LEAK");
    assert_non_null(strstr(line, "\"comm\": \"leaky_client\""));
    /* the shell exited by itself; the leak's holder is another process */
    assert_non_null(strstr(line, "\"exit_code\": 7"));
    const char *leak = strstr(line, "\"leak\": ");
    assert_true(field(leak, "pid") != field(line, "pid"));
    pid_t pids[8];
    expect_clean(&p, pids, report_pids(&p, pids, 8));
}

/* --reuse: one run, the N-th connection gets the N-th scenario. */
static void test_reuse_one_run(void **state)
{
    struct probe p;
    char *args[] = {"--json", "--reuse", "--scenario", "auth-error,rst,half-close",
                    "--grace", "500ms", "--", LEAKY, "{host}", "{port}", "3", "5000", NULL};
    probe(&p, args);
    assert_int_equal(p.status, 1);
    char line[2048];
    long long pid = -1, fd0 = -1;
    static const char *names[] = {"auth-error", "rst", "half-close"};
    for (int i = 0; i < 3; i++) {
        scenario(&p, names[i], line, sizeof line);
        expect_verdict(line, "LEAK");
        /* one process, a new socket per connection: consecutive fds */
        const char *leak = strstr(line, "\"leak\": ");
        fd0 = fd0 < 0 ? field(leak, "fd") : fd0;
        assert_int_equal(field(leak, "fd"), fd0 + i);
        assert_true(pid < 0 || field(line, "pid") == pid);
        pid = field(line, "pid");
    }
    pid_t pids[8];
    expect_clean(&p, pids, report_pids(&p, pids, 8));

    char *tidy[] = {"--reuse", "--scenario", "auth-error,rst,half-close", "--grace",
                    "500ms", "--", TIDY, "{host}", "{port}", "3", "5000", NULL};
    probe(&p, tidy);
    assert_int_equal(p.status, 0);
    assert_non_null(strstr(p.out, ", one run\n"));
    assert_int_equal(count_lines(p.out, " PASS "), 3);
}

/* A command that never connects, with a name no JSON string may hold as
 * is; usage errors. */
static void test_no_connect_json_and_usage(void **state)
{
    struct probe p;
    char *args[] = {"--json", "--scenario", "fin-on-accept", "--grace", "200ms", "--hang-limit",
                    "500ms", "--", self, "exit", "q\"b\\s\n\x01\xc3\xa9{port}", NULL};
    probe(&p, args);
    assert_int_equal(p.status, 1);
    char line[2048];
    expect_verdict(scenario(&p, "fin-on-accept", line, sizeof line), "NO-CONNECT");
    assert_int_equal(field(line, "connections"), 0);
    char want[128];
    snprintf(want, sizeof want, "\"exit\", \"q\\\"b\\\\s\\u000a\\u0001\xc3\xa9%d\"]",
             json_port(&p));
    if (!strstr(p.out, want))
        fail_msg("command not escaped as %s in:\n%s", want, p.out);

    char *none[] = {"--grace", "1s", NULL};
    probe(&p, none);
    assert_int_equal(p.status, 2);
    assert_non_null(strstr(p.err, "closewise probe: no command to test"));
    char *bad[] = {"--scenario", "fin-on-accept,nope", "--", "/bin/true", NULL};
    probe(&p, bad);
    assert_int_equal(p.status, 2);
    assert_string_equal(p.err, "closewise probe: unknown scenario 'nope' (see 'closewise "
                               "probe --list')\n");
    char *dur[] = {"--hang-limit", "forever", "--", "/bin/true", NULL};
    probe(&p, dur);
    assert_int_equal(p.status, 2);
    char *missing[] = {"--", "/nonexistent/client", NULL};
    probe(&p, missing);
    assert_int_equal(p.status, 2);
    assert_non_null(strstr(p.err, "cannot run '/nonexistent/client': No such file"));
    assert_string_equal(p.out, "");
    char *help[] = {"--help", NULL};
    probe(&p, help);
    assert_int_equal(p.status, 0);
    assert_non_null(strstr(p.out, "usage: closewise probe"));
    char *list[] = {"--list", NULL};
    probe(&p, list);
    assert_int_equal(p.status, 0);
    assert_int_equal(count_lines(p.out, "\n"), 8);
    assert_non_null(strstr(p.out, "slow-drip "));
}

/* A free port, for a probe whose port must be known before it reports. */
static int free_port(void)
{
    cw_listener *l;
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, 1, &l), CW_OK);
    int port = cw_listener_port(l);
    cw_listener_close(&l);
    return port;
}

/* The first child of parent, from /proc; 0 if none. */
static pid_t child_of(pid_t parent)
{
    DIR *d = opendir("/proc");
    assert_non_null(d);
    struct dirent *e;
    pid_t found = 0;
    while (!found && (e = readdir(d))) {
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        int ppid;
        if (p && sscanf(p + 1, " %*c %d", &ppid) == 1 && ppid == parent)
            found = atoi(e->d_name);
    }
    closedir(d);
    return found;
}

/* SIGTERM in the middle of a run: the client is killed, the probe's
 * sockets are closed, and the probe says so and exits 3. */
static void test_interrupt_cleans_up(void **state)
{
    int port = free_port();
    char portarg[16];
    snprintf(portarg, sizeof portarg, "%d", port);
    char *argv[] = {BIN, "probe", "--port", portarg, "--scenario", "silent", "--hang-limit",
                    "30s", "--", LEAKY, "{host}", "{port}", "1", "60000", NULL};
    int err;
    pid_t pid = cwt_spawn3(argv, NULL, NULL, &err);
    assert_int_equal(cwt_wait_count(CW_TCP_ESTABLISHED, 0, port, 1, 10000), 1);
    pid_t client = child_of(pid);
    assert_true(client > 0);
    int64_t t0 = cw_now_ms();
    kill(pid, SIGTERM);
    char text[1024];
    cwt_read_all(err, text, sizeof text, 10000);
    int st = cwt_wait(pid, 5000);
    close(err);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 3);
    assert_true(cw_now_ms() - t0 < 3000);
    assert_string_equal(text, "closewise probe: interrupted; the client's processes "
                              "were killed\n");
    assert_int_equal(kill(client, 0), -1);
    assert_int_equal(cwt_count(CW_TCP_ESTABLISHED, 0, port), 0);
    assert_int_equal(cwt_count(CW_TCP_CLOSE_WAIT, port, 0), 0);
    assert_int_equal(cwt_count(CW_TCP_LISTEN, port, 0), 0);
}

/* A client that shuts down writing first (like `nc -N` at the end of
 * its input) still gets the whole scenario: the greeting, then the FIN. */
static void test_half_closing_client_gets_the_scenario(void **state)
{
    struct probe p;
    char *args[] = {"--json", "--scenario", "fin-after-greeting,slow-drip", "--grace", "1s",
                    "--drip", "20ms", "--", self, "half-close", "{host}", "{port}", NULL};
    probe(&p, args);
    assert_int_equal(p.status, 0);
    char line[2048];
    /* exit 0: it read the greeting (or the dripped line), then EOF */
    scenario(&p, "fin-after-greeting", line, sizeof line);
    assert_non_null(strstr(line, "\"exit_code\": 0"));
    assert_non_null(strstr(line, "\"closed_first\": 0"));
    scenario(&p, "slow-drip", line, sizeof line);
    assert_non_null(strstr(line, "\"exit_code\": 0"));
}

/* Shutting down writing is not closing: a client that half-closes, reads
 * the server's FIN, and keeps the descriptor leaks it. Its connection is
 * over (no CLOSE_WAIT: both FINs were exchanged), the socket is not. */
static void test_half_close_then_hold_leaks(void **state)
{
    struct probe p;
    char *args[] = {"--json", "--scenario", "fin-after-greeting", "--grace", "500ms", "--",
                    self, "half-close-hold", "{host}", "{port}", NULL};
    probe(&p, args);
    assert_int_equal(p.status, 1);
    char line[2048];
    expect_verdict(scenario(&p, "fin-after-greeting", line, sizeof line), "LEAK");
    assert_non_null(strstr(line, "\"state\": \"CLOSED\""));
    pid_t pids[8];
    expect_clean(&p, pids, report_pids(&p, pids, 8));
}

/* The test binary doubles as a client: "no-timeout HOST PORT" connects
 * and reads until the server closes, with no timeout at all;
 * "half-close HOST PORT" shuts down writing first, then reads a line and
 * EOF (exit 0 if both came); "exit" exits at once. */
static int as_client(int argc, char **argv)
{
    if (!strcmp(argv[1], "exit"))
        return 0;
    if (argc < 4)
        return 2;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(argv[2], argv[3], &hints, &res) != 0)
        return 3;
    int s = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = connect(s, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    int half = !strncmp(argv[1], "half-close", 10);
    if (rc == 0 && half)
        shutdown(s, SHUT_WR);
    char buf[512];
    size_t got = 0;
    ssize_t n;
    while (rc == 0 && got < sizeof buf && (n = recv(s, buf + got, sizeof buf - got, 0)) > 0)
        got += (size_t)n;
    if (!strcmp(argv[1], "half-close-hold"))
        sleep(20);   /* the probe kills us long before */
    close(s);
    if (rc != 0)
        return 4;
    return !half || memchr(buf, '\n', got) ? 0 : 5;
}

int main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "no-timeout") || !strncmp(argv[1], "half-close", 10) ||
                     !strcmp(argv[1], "exit")))
        return as_client(argc, argv);   /* a client, in the test's namespace */
    cwt_private_netns();
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = '\0';
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_leaky_client_leaks),
        CWT_TEST(test_tidy_client_passes_all),
        CWT_TEST(test_client_without_timeout_hangs_on_silent),
        CWT_TEST(test_prompt_exit_passes),
        CWT_TEST(test_half_closing_client_gets_the_scenario),
        CWT_TEST(test_half_close_then_hold_leaks),
        CWT_TEST(test_daemonized_child_is_watched_and_killed),
        CWT_TEST(test_reuse_one_run),
        CWT_TEST(test_no_connect_json_and_usage),
        CWT_TEST(test_interrupt_cleans_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
