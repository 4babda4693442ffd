/* test_probe.c - `closewise probe` against real clients: the seed's leaky
 * example leaks on every scenario that ends the connection, the
 * libclosewise example passes them all, and a client without a read
 * timeout hangs on `silent`. Every run is then checked for what it must
 * not leave behind: processes of the client and sockets on the port. */
// cw-test-timeout: 180
#include "cwtest.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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
    char *args[] = {"--json", "--grace", "500ms", "--hang-limit", "1s", "--settle", "200ms",
                    "--", LEAKY, "{host}", "{port}", "1", "4000", NULL};
    probe(&p, args);
    assert_int_equal(p.status, 1);
    assert_string_equal(p.err, "");
    static const char *fin[] = {"fin-on-accept", "fin-after-greeting",
                                "fin-while-client-writes", "half-close", "auth-error",
                                "slow-drip", "fin-when-idle", "auth-error-when-idle"};
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
    expect_verdict(scenario(&p, "rst-when-idle", line, sizeof line), "LEAK");
    assert_non_null(strstr(line, "\"state\": \"CLOSED\""));
    /* a 30 s SO_RCVTIMEO is longer than the hang limit */
    expect_verdict(scenario(&p, "silent", line, sizeof line), "HANG");
    assert_true(field(line, "hang_ms") >= 1000);
    /* the idle ones waited for the quiet time (after the login line)
     * before the grace began */
    assert_true(field(scenario(&p, "fin-when-idle", line, sizeof line), "time_ms") >= 700);
    assert_non_null(strstr(p.out, "\"passed\": 0, \"failed\": 11"));
    pid_t pids[64];
    expect_clean(&p, pids, report_pids(&p, pids, 64));
}

static void test_tidy_client_passes_all(void **state)
{
    struct probe p;
    /* HOLD_MS 4000 keeps it alive past the grace: its sockets must be
     * closed by close(), not by its exit. A 1 s read timeout ends the
     * wait on the silent server, and is well past the 200 ms quiet time
     * of the idle scenarios. A grace of 600 ms leaves room for a loaded
     * machine; the client takes milliseconds. */
    char *args[] = {"--json", "--grace", "600ms", "--hang-limit", "2s", "--settle", "200ms", "--",
                    TIDY, "{host}", "{port}", "1", "4000", "1000", NULL};
    probe(&p, args);
    assert_int_equal(p.status, 0);
    assert_non_null(strstr(p.out, "\"passed\": 11, \"failed\": 0"));
    char line[2048];
    for (const char *s = p.out; (s = strstr(s, "{\"name\": ")); s++) {
        size_t len = strcspn(s, "\n");
        memcpy(line, s, len);
        line[len] = '\0';
        expect_verdict(line, "PASS");
        assert_int_equal(field(line, "connections"), 1);
        /* closed within the grace, while the process lived on */
        long long ms = field(line, "close_ms");
        assert_true(ms >= 0 && (ms < 600 || strstr(line, "silent")));
        assert_non_null(strstr(line, "\"closed_first\": 0"));
        assert_non_null(strstr(line, "\"killed\": true"));
        assert_non_null(strstr(line, "\"leak\": null"));
    }
    /* silent: it gave up after its read timeout (1 s after it sent its
     * login, which is after our accept), not at once */
    long long gave_up = field(scenario(&p, "silent", line, sizeof line), "close_ms");
    assert_true(gave_up >= 900 && gave_up < 2000);
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
    /* the error names the valid scenarios and points at --help */
    static const char head[] = "closewise probe: --scenario: unknown scenario 'nope'; "
                               "scenarios: fin-on-accept, fin-after-greeting, ";
    assert_true(strncmp(p.err, head, sizeof head - 1) == 0);
    assert_non_null(strstr(p.err, " (try 'closewise probe --help')\n"));
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
    assert_int_equal(count_lines(p.out, "\n"), 11);
    assert_non_null(strstr(p.out, "slow-drip "));
    assert_non_null(strstr(p.out, "auth-error-when-idle "));
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

/* A client that closes on a FIN that comes at once and leaks one that
 * finds it settled in its read loop (like `curl telnet://`): only the
 * idle-close scenarios catch it. */
static void test_settled_client_leaks_only_when_idle(void **state)
{
    struct probe p;
    char *args[] = {"--json", "--scenario",
                    "fin-on-accept,auth-error,fin-when-idle,auth-error-when-idle,rst-when-idle",
                    "--grace", "500ms", "--settle", "1s", "--", self, "settle-leak", "{host}",
                    "{port}", NULL};   /* 1 s: SETTLE_MS */
    probe(&p, args);
    assert_int_equal(p.status, 1);
    char line[2048];
    expect_verdict(scenario(&p, "fin-on-accept", line, sizeof line), "PASS");
    expect_verdict(scenario(&p, "auth-error", line, sizeof line), "PASS");
    static const char *idle[] = {"fin-when-idle", "auth-error-when-idle", "rst-when-idle"};
    for (size_t i = 0; i < 3; i++) {
        expect_verdict(scenario(&p, idle[i], line, sizeof line), "LEAK");
        assert_non_null(strstr(line, "\"killed\": true"));
    }
    pid_t pids[16];
    expect_clean(&p, pids, report_pids(&p, pids, 16));
}

/* The output of `xmllint --noout` on text; returns its exit status. */
static int xmllint(const char *text)
{
    char path[] = "/tmp/cw-probe-junit-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    int st = cwt_sh("xmllint --noout %s", path);
    unlink(path);
    return st;
}

/* CI formats: JUnit that an XML parser accepts, one testcase per
 * scenario and a failure for each that did not pass; TAP with its plan
 * and one ok / not ok line per scenario. A command line that XML must
 * escape is in the report. */
static void test_junit_and_tap(void **state)
{
    if (cwt_sh("command -v xmllint >/dev/null") != 0)
        fail_msg("xmllint is missing (scripts/deps.sh test installs libxml2-utils)");
    struct probe p;
    char *junit[] = {"--format", "junit", "--scenario", "fin-on-accept,rst,fin-when-idle",
                     "--grace", "300ms", "--settle", "100ms", "--", LEAKY, "{host}",
                     "{port}", "1", "3000", "<&\"\x01\xff>", NULL};
    probe(&p, junit);
    assert_int_equal(p.status, 1);
    assert_int_equal(xmllint(p.out), 0);
    assert_int_equal(count_lines(p.out, "<testcase "), 3);
    assert_int_equal(count_lines(p.out, "<failure type=\"LEAK\""), 3);
    assert_non_null(strstr(p.out, "tests=\"3\" failures=\"3\""));
    assert_non_null(strstr(p.out, "&lt;&amp;&quot;"));

    char *tidy[] = {"--format", "junit", "--scenario", "fin-on-accept,rst", "--grace", "1s",
                    "--", TIDY, "{host}", "{port}", "1", "3000", NULL};
    probe(&p, tidy);
    assert_int_equal(p.status, 0);
    assert_int_equal(xmllint(p.out), 0);
    assert_int_equal(count_lines(p.out, "<testcase "), 2);
    assert_null(strstr(p.out, "<failure"));

    char *tap[] = {"--format", "tap", "--scenario", "fin-on-accept,silent", "--grace",
                   "300ms", "--hang-limit", "500ms", "--", self, "no-timeout", "{host}",
                   "{port}", NULL};
    probe(&p, tap);
    assert_int_equal(p.status, 1);
    static const char tap_head[] = "TAP version 13\n1..2\nok 1 - fin-on-accept: PASS\n"
                                   "not ok 2 - silent: HANG\n# no close in the ";
    assert_true(strncmp(p.out, tap_head, sizeof tap_head - 1) == 0);
    /* it says what happened (the limit ran out), not that the client never gives up */
    assert_non_null(strstr(p.out, "the probe waited (--hang-limit): still open when it "
                                  "stopped waiting"));
    assert_null(strstr(p.out, "never gave up"));
    /* every line is the plan, a test line or a diagnostic */
    int tests = 0;
    for (char *l = strchr(p.out, '\n') + 1; *l; l = strchr(l, '\n') + 1) {
        assert_true(!strncmp(l, "1..", 3) || !strncmp(l, "ok ", 3) ||
                    !strncmp(l, "not ok ", 7) || !strncmp(l, "# ", 2));
        tests += !strncmp(l, "ok ", 3) || !strncmp(l, "not ok ", 7);
    }
    assert_int_equal(tests, 2);
}

/* --repeat: the worst verdict of the runs, and how many saw it. */
static void test_repeat_counts_runs(void **state)
{
    struct probe p;
    char *args[] = {"--json", "--repeat", "2", "--scenario", "rst", "--grace", "300ms", "--",
                    LEAKY, "{host}", "{port}", "1", "3000", NULL};
    probe(&p, args);
    assert_int_equal(p.status, 1);
    char line[2048];
    scenario(&p, "rst", line, sizeof line);
    expect_verdict(line, "LEAK");
    assert_int_equal(field(line, "runs"), 2);
    assert_int_equal(field(line, "worst_runs"), 2);
    /* A client that leaks every other run: the worst verdict, and how
     * many of the runs saw it. */
    char path[] = "/tmp/cw-probe-runs-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char *alt[] = {"--repeat", "3", "--scenario", "fin-on-accept", "--grace", "300ms", "--",
                   self, "alternate", "{host}", "{port}", path, NULL};
    probe(&p, alt);
    unlink(path);
    assert_int_equal(p.status, 1);
    assert_non_null(strstr(p.out, "fin-on-accept            LEAK 1/3 "));
}

/* --- server mode --- */

struct srv {
    pid_t pid;
    int out;
    char addr[64];   /* 127.0.0.1:PORT */
};

/* Start a server that prints "listening on ADDR:PORT" first. */
static void srv_start(struct srv *s, char *const argv[])
{
    s->pid = cwt_spawn(argv, &s->out);
    char line[128];
    if (cwt_read_line(s->out, line, sizeof line, 20000) < 0)
        fail_msg("%s did not start", argv[0]);
    assert_true(strncmp(line, "listening on ", 13) == 0);
    snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", atoi(strrchr(line, ':') + 1));
}

static void srv_stop(struct srv *s)
{
    cwt_kill(s->pid);
    close(s->out);
}

/* A request whose reply (256 KiB of echoes) outgrows the socket buffers,
 * written to a file for --large @FILE; the caller unlinks path. */
static void large_request(char *path)
{
    strcpy(path, "/tmp/cw-probe-large-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "AUTH alice s3cret\n");
    for (int i = 0; i < 256; i++)
        fprintf(f, "ECHO %01000d\n", i);
    fprintf(f, "QUIT\n");
    fclose(f);
}

/* closewise server in one close mode, every scenario that mode changes. */
static void probe_closewise_server(struct probe *p, const char *mode, const char *scenarios,
                                   struct srv *s, const char *large)
{
    /* Timeouts long enough that a loaded machine still answers the request
     * first (400 ms once ended a run with "ERR login timeout"). Checks on
     * the loop: the default nice-19 check threads, starved by a machine
     * busy with nice-0 work, once kept large-reply's login unanswered past
     * the 6 s hang limit (HANG, 0 bytes); the probe is under test here. */
    char *sv[] = {BIN, "server", "-q", "--port", "0", "--user", "alice:s3cret",
                  "--close-mode", (char *)mode, "--idle-timeout", "1500ms", "--login-timeout",
                  "1500ms", "--auth-threads", "0", NULL};
    srv_start(s, sv);
    char at[300];
    snprintf(at, sizeof at, "@%s", large);
    char *args[] = {"--json", "--server", s->addr, "--send", "QUIT\\n", "--expect", "^BYE$",
                    "--large", at, "--large-expect", "^BYE$", "--scenario",
                    (char *)scenarios, "--grace", "1s", "--hang-limit", "6s", "--settle",
                    "100ms", NULL};
    probe(p, args);
}

static int bpf_traced(const struct probe *p)
{
    return strstr(p->out, "resets traced with BPF") != NULL;
}

/* The server's close() that sent the reset is named, when BPF works: the
 * server.c line that asked for it (marked in src/server/server.c), not
 * the library's close() in cw_stream_close() under it. */
static void expect_reset_by(const char *line, pid_t server, int bpf)
{
    char want[64], at[64];
    snprintf(want, sizeof want, "\"reset_by\": \"pid %d (closewise) ", (int)server);
    snprintf(at, sizeof at, " at server.c:%d (", SERVER_CLOSE_LINE);
    if (bpf && (!strstr(line, want) || !strstr(line, at)))
        fail_msg("expected %s...%s in %s", want, at, line);
    if (!bpf)
        assert_non_null(strstr(line, "not named without BPF"));
}

static void test_server_mode_closewise_server(void **state)
{
    char large[64];
    large_request(large);
    struct probe p;
    struct srv s;
    char line[4096];
    probe_closewise_server(&p, "graceful", "request,request-extra-input,large-reply,"
                           "half-close,idle,reset-mid-request", &s, large);
    srv_stop(&s);
    if (p.status != 0)
        fail_msg("graceful server:\n%s%s", p.out, p.err);
    assert_non_null(strstr(p.out, "\"passed\": 6, \"failed\": 0"));
    scenario(&p, "large-reply", line, sizeof line);
    assert_true(field(line, "reply_bytes") > 256 * 1000);
    assert_non_null(strstr(line, "\"end\": \"fin\""));
    scenario(&p, "idle", line, sizeof line);   /* its login timeout */
    assert_true(field(line, "end_ms") >= 1400 && field(line, "end_ms") < 6000);
    scenario(&p, "reset-mid-request", line, sizeof line);
    assert_true(field(line, "server_pid") == s.pid);

    probe_closewise_server(&p, "linger0", "request,request-extra-input,large-reply", &s, large);
    srv_stop(&s);
    assert_int_equal(p.status, 1);
    int bpf = bpf_traced(&p);
    expect_verdict(scenario(&p, "request", line, sizeof line), "RST-CLOSE");
    assert_non_null(strstr(line, "\"expect_matched\": true"));
    expect_reset_by(line, s.pid, bpf);
    expect_verdict(scenario(&p, "request-extra-input", line, sizeof line), "RST-CLOSE");
    expect_verdict(scenario(&p, "large-reply", line, sizeof line), "LOST");
    assert_true(field(line, "reply_bytes") < 256 * 1000);
    expect_reset_by(line, s.pid, bpf);

    probe_closewise_server(&p, "plain", "request,request-extra-input,large-reply", &s, large);
    srv_stop(&s);
    assert_int_equal(p.status, 1);
    expect_verdict(scenario(&p, "request", line, sizeof line), "PASS");
    expect_verdict(scenario(&p, "request-extra-input", line, sizeof line), "RST-CLOSE");
    expect_reset_by(line, s.pid, bpf);
    assert_non_null(strstr(line, "unread bytes"));
    expect_verdict(scenario(&p, "large-reply", line, sizeof line), "LOST");

    /* Without BPF: the same verdicts, and the reason it cannot name the
     * close(). */
    setenv("CLOSEWISE_NO_BPF", "1", 1);
    probe_closewise_server(&p, "linger0", "request", &s, large);
    unsetenv("CLOSEWISE_NO_BPF");
    srv_stop(&s);
    expect_verdict(scenario(&p, "request", line, sizeof line), "RST-CLOSE");
    expect_reset_by(line, s.pid, 0);
    unlink(large);
}

/* A server that never closes what its clients closed or reset: caught in
 * CLOSE_WAIT with its pid, its descriptor still open after our reset,
 * and no idle timeout. */
static void test_server_mode_never_closing_server(void **state)
{
    struct srv s;
    char *sv[] = {self, "hold-server", NULL};
    srv_start(&s, sv);
    struct probe p;
    char *args[] = {"--json", "--server", s.addr, "--send", "HELLO\\n", "--scenario",
                    "half-close,reset-mid-request,idle", "--grace", "500ms", "--hang-limit",
                    "600ms", "--settle", "100ms", NULL};
    probe(&p, args);
    assert_int_equal(p.status, 1);
    char line[4096], want[64];
    snprintf(want, sizeof want, "pid %d (test_probe) fd ", (int)s.pid);
    expect_verdict(scenario(&p, "half-close", line, sizeof line), "LEAK");
    assert_non_null(strstr(line, want));
    assert_non_null(strstr(line, "in CLOSE_WAIT"));
    assert_true(field(line, "server_pid") == s.pid);
    expect_verdict(scenario(&p, "reset-mid-request", line, sizeof line), "LEAK");
    assert_non_null(strstr(line, want));
    assert_non_null(strstr(line, "after our reset"));
    expect_verdict(scenario(&p, "idle", line, sizeof line), "HANG");
    /* the server holds two CLOSE_WAIT sockets: the half-close's, and the
     * idle one's after our close */
    assert_int_equal(cwt_count_pid(s.pid, CW_TCP_CLOSE_WAIT), 2);
    srv_stop(&s);

    char *tap[] = {"--format", "tap", "--server", "127.0.0.1:1", "--send", "x", "--scenario",
                   "request", NULL};
    probe(&p, tap);   /* nothing listens on port 1 */
    assert_int_equal(p.status, 1);
    assert_non_null(strstr(p.out, "not ok 1 - request: NO-CONNECT\n# cannot connect"));
}

/* nginx's stream module (a bench dependency), when installed: `return`
 * answers and closes without reading the request, which then meets a
 * closed socket and a reset; proxying to closewise server passes. */
static void test_server_mode_nginx(void **state)
{
    const char *mod = "/usr/lib/nginx/modules/ngx_stream_module.so";
    if (access("/usr/sbin/nginx", X_OK) != 0 || access(mod, R_OK) != 0) {
        printf("nginx or its stream module is not installed (scripts/deps.sh bench): "
               "skipped\n");
        skip();
    }
    struct srv cw;
    char *sv[] = {BIN, "server", "-q", "--port", "0", "--user", "alice:s3cret", NULL};
    srv_start(&cw, sv);
    char dir[] = "/tmp/cw-probe-nginx-XXXXXX";
    assert_non_null(mkdtemp(dir));
    int ret = cwt_free_port(), proxy = cwt_free_port();
    char conf[PATH_MAX];
    snprintf(conf, sizeof conf, "%s/nginx.conf", dir);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f, "load_module %s;\ndaemon off;\nmaster_process off;\nworker_processes 1;\n"
            "pid %s/nginx.pid;\nerror_log %s/error.log warn;\nevents { worker_connections 64; }\n"
            "stream {\n server { listen 127.0.0.1:%d; return \"ERR bad credentials\\n\"; }\n"
            " server { listen 127.0.0.1:%d; proxy_pass %s; }\n}\n", mod, dir, dir, ret, proxy,
            cw.addr);
    fclose(f);
    char elog[PATH_MAX + 16];
    snprintf(elog, sizeof elog, "%s/error.log", dir);
    char *nx[] = {"/usr/sbin/nginx", "-e", elog, "-c", conf, "-p", dir, NULL};
    pid_t ngx = cwt_spawn(nx, NULL);
    assert_int_equal(cwt_wait_count(CW_TCP_LISTEN, proxy, 0, 1, 10000), 1);
    char at[64];
    snprintf(at, sizeof at, "127.0.0.1:%d", ret);
    struct probe p;
    char line[4096];
    char *a1[] = {"--json", "--server", at, "--send", "AUTH alice wrong\\n", "--expect",
                  "^ERR bad credentials$", "--scenario", "request", NULL};
    probe(&p, a1);
    assert_int_equal(p.status, 1);
    expect_verdict(scenario(&p, "request", line, sizeof line), "RST-CLOSE");
    assert_int_equal(field(line, "reply_bytes"), 20);
    snprintf(at, sizeof at, "127.0.0.1:%d", proxy);
    char *a2[] = {"--json", "--server", at, "--send", "QUIT\\n", "--expect", "^BYE$",
                  "--scenario", "request,request-extra-input,half-close", "--grace", "1s",
                  "--settle", "100ms", NULL};
    probe(&p, a2);
    cwt_kill(ngx);
    srv_stop(&cw);
    char rm[PATH_MAX + 16];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    cwt_sh("%s", rm);
    if (p.status != 0)
        fail_msg("nginx proxy:\n%s", p.out);
}

static void test_server_mode_usage(void **state)
{
    struct probe p;
    char *nosend[] = {"--server", "127.0.0.1:7", NULL};
    probe(&p, nosend);
    assert_int_equal(p.status, 2);
    /* (the prefix is the shared error voice's) */
    assert_non_null(strstr(p.err, "probe: --server wants --send DATA (the request to send) "
                                  "(try 'closewise probe --help')\n"));
    char *bad[] = {"--server", "localhost", "--send", "x", NULL};
    probe(&p, bad);
    assert_int_equal(p.status, 2);
    assert_non_null(strstr(p.err, "--server: bad address 'localhost'"));
    char *esc[] = {"--server", "[::1]:7", "--send", "a\\q", NULL};
    probe(&p, esc);
    assert_int_equal(p.status, 2);
    assert_non_null(strstr(p.err, "--send: bad escape in"));
    char *re[] = {"--server", "[::1]:7", "--send", "x", "--expect", "(", NULL};
    probe(&p, re);
    assert_int_equal(p.status, 2);
    assert_non_null(strstr(p.err, "--expect: bad regex '('"));
    char *sc[] = {"--server", "[::1]:7", "--send", "x", "--scenario", "rst", NULL};
    probe(&p, sc);
    assert_int_equal(p.status, 2);
    assert_non_null(strstr(p.err, "unknown server scenario 'rst'"));
    char *withcmd[] = {"--send", "x", "--", "/bin/true", NULL};
    probe(&p, withcmd);
    assert_int_equal(p.status, 2);
    char *fmt[] = {"--format", "xml", "--", "/bin/true", NULL};
    probe(&p, fmt);
    assert_int_equal(p.status, 2);
    assert_non_null(strstr(p.err, "--format: bad value 'xml'"));
    char *rep[] = {"--repeat", "0", "--", "/bin/true", NULL};
    probe(&p, rep);
    assert_int_equal(p.status, 2);
    char *list[] = {"--list", "--server", "x:1", NULL};
    probe(&p, list);
    assert_int_equal(p.status, 0);
    assert_int_equal(count_lines(p.out, "\n"), 6);
    assert_non_null(strstr(p.out, "reset-mid-request "));
    /* every error is one line */
    assert_int_equal(count_lines(p.err, "\n"), 0);
}

/* The test binary doubles as a client: "no-timeout HOST PORT" connects
 * and reads until the server closes, with no timeout at all;
 * "half-close HOST PORT" shuts down writing first, then reads a line and
 * EOF (exit 0 if both came); "exit" exits at once. */
/* "settle-leak HOST PORT": an end that comes within SETTLE_MS / 2 of our
 * line is closed, a later one (the idle scenarios wait SETTLE_MS) is not.
 * The kernel's timestamps tell (TCP_INFO: how long ago our line left,
 * how long ago the last segment, the FIN, came), not the moment this
 * process got to look: on a loaded machine it once saw a prompt FIN only
 * after its 150 ms limit. A reset has no timestamp: then our own clock,
 * which load only makes later (the reset here is an idle scenario's). */
#define SETTLE_MS 1000
static int settle_leak(int s)
{
    const char hello[] = "HELLO\n";
    if (send(s, hello, sizeof hello - 1, MSG_NOSIGNAL) < 0)
        return 4;
    int64_t t0 = cw_now_ms();
    char buf[512];
    ssize_t n;
    while ((n = recv(s, buf, sizeof buf, 0)) > 0)
        ;
    int64_t after = cw_now_ms() - t0;
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (n == 0 && getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0)
        after = (int64_t)ti.tcpi_last_data_sent - (int64_t)ti.tcpi_last_ack_recv;
    if (after < SETTLE_MS / 2)
        close(s);   /* the prompt path closes... */
    sleep(20);      /* ...the settled one forgets; the probe kills us */
    return 0;
}

/* "alternate HOST PORT FILE": read to the end, then close on even runs
 * and keep the socket on odd ones (FILE counts the runs). */
static int alternate(int s, const char *file)
{
    FILE *f = fopen(file, "r+");
    int runs = 0;
    if (!f || fscanf(f, "%d", &runs) < 0)
        runs = 0;
    if (f) {
        rewind(f);
        fprintf(f, "%d\n", runs + 1);
        fclose(f);
    }
    char buf[512];
    while (recv(s, buf, sizeof buf, 0) > 0)
        ;
    if (runs % 2 == 0)
        close(s);
    sleep(20);   /* the probe kills us */
    return 0;
}

/* "hold-server": accept, read to the end, never close. */
static int hold_server(void)
{
    cw_listener *l;
    if (cw_listen("127.0.0.1", 0, NULL, 64, &l) < 0)
        return 3;
    printf("listening on 127.0.0.1:%d\n", cw_listener_port(l));
    fflush(stdout);
    struct pollfd p[65] = {{.fd = cw_listener_fd(l), .events = POLLIN}};
    int n = 1;
    while (poll(p, (nfds_t)n, -1) > 0) {
        for (int i = 1; i < n; i++) {
            char buf[4096];
            if ((p[i].revents & (POLLIN | POLLHUP | POLLERR)) &&
                recv(p[i].fd, buf, sizeof buf, MSG_DONTWAIT) <= 0)
                p[i].fd = -p[i].fd - 1;   /* ended: kept open, no longer polled */
        }
        int fd;
        if ((p[0].revents & POLLIN) && n < 65 &&
            (fd = accept4(p[0].fd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
            p[n++] = (struct pollfd){.fd = fd, .events = POLLIN};
    }
    return 0;
}

static int as_client(int argc, char **argv)
{
    if (!strcmp(argv[1], "exit"))
        return 0;
    if (!strcmp(argv[1], "hold-server"))
        return hold_server();
    if (argc < 4)
        return 2;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(argv[2], argv[3], &hints, &res) != 0)
        return 3;
    int s = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = connect(s, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    int half = !strncmp(argv[1], "half-close", 10);
    if (rc == 0 && !strcmp(argv[1], "settle-leak"))
        return settle_leak(s);
    if (rc == 0 && !strcmp(argv[1], "alternate") && argc > 4)
        return alternate(s, argv[4]);
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
                     !strcmp(argv[1], "exit") || !strcmp(argv[1], "settle-leak") ||
                     !strcmp(argv[1], "alternate") ||
                     !strcmp(argv[1], "hold-server")))
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
        CWT_TEST(test_settled_client_leaks_only_when_idle),
        CWT_TEST(test_junit_and_tap),
        CWT_TEST(test_repeat_counts_runs),
        CWT_TEST(test_server_mode_closewise_server),
        CWT_TEST(test_server_mode_never_closing_server),
        CWT_TEST(test_server_mode_nginx),
        CWT_TEST(test_server_mode_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
