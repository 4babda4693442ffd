/* test_client.c - `closewise client` as a real process against the real
 * server (and against a silent listener): echo, detect-and-close on the
 * server's idle close, reconnect after a restart, read timeout, bounded
 * retries, and the seed's bound local port against a TIME_WAIT twin. */
// cw-test-timeout: 120
#include "cwtest.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define BIN CW_BUILD_DIR "/closewise"

struct server {
    pid_t pid;
    int out;
    int port;
};

/* Start `closewise server` on port (0 = any) with user alice:secret. */
static void server_start(struct server *sv, int port, const char *idle)
{
    char portarg[16];
    snprintf(portarg, sizeof portarg, "%d", port);
    char *argv[] = {BIN, "server", "--port", portarg, "--user", "alice:secret",
                    "--idle-timeout", (char *)idle, "--quiet", NULL};
    sv->pid = cwt_spawn(argv, &sv->out);
    char line[128];
    assert_true(cwt_read_line(sv->out, line, sizeof line, 5000) > 0);
    const char *colon = strrchr(line, ':');
    assert_non_null(colon);
    sv->port = atoi(colon + 1);
    assert_true(sv->port > 0);
}

static void server_stop(struct server *sv)
{
    kill(sv->pid, SIGTERM);
    int status = cwt_wait(sv->pid, 5000);
    assert_true(WIFEXITED(status));
    close(sv->out);
}

struct client {
    pid_t pid;
    int in, out, err;
};

static void client_start(struct client *cl, int port, char *extra[])
{
    char portarg[16];
    snprintf(portarg, sizeof portarg, "%d", port);
    char *argv[32] = {BIN, "client", "--port", portarg, "--user", "alice:secret"};
    int n = 6;
    for (int i = 0; extra && extra[i]; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    cl->pid = cwt_spawn3(argv, &cl->in, &cl->out, &cl->err);
}

/* Send a line on the client's stdin and expect it echoed on its stdout. */
static void say(struct client *cl, const char *text)
{
    char line[256];
    assert_int_equal(write(cl->in, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(write(cl->in, "\n", 1), 1);
    assert_int_equal(cwt_read_line(cl->out, line, sizeof line, 10000), (int)strlen(text));
    assert_string_equal(line, text);
}

/* Close stdin and collect exit status and stderr. */
static int client_finish(struct client *cl, char *err, size_t size)
{
    if (cl->in >= 0)
        close(cl->in);
    cwt_read_all(cl->err, err, size, 15000);
    int status = cwt_wait(cl->pid, 5000);
    close(cl->out);
    close(cl->err);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void test_echo_and_quit(void **state)
{
    struct server sv;
    server_start(&sv, 0, "30s");
    struct client cl;
    client_start(&cl, sv.port, NULL);
    say(&cl, "hello");
    say(&cl, "a longer line with spaces");
    char err[4096];
    assert_int_equal(client_finish(&cl, err, sizeof err), 0);
    assert_string_equal(err, "");   /* quiet success */
    server_stop(&sv);
}

/* The seed's trigger: the server closes an idle session first. The client
 * must close its side at once (no CLOSE_WAIT in the kernel) and reconnect. */
static void test_idle_close_is_detected_and_closed(void **state)
{
    struct server sv;
    server_start(&sv, 0, "400ms");
    struct client cl;
    client_start(&cl, sv.port, NULL);
    say(&cl, "before");
    cwt_sleep_ms(700);   /* the server has closed, the client noticed */
    assert_int_equal(cwt_count_pid(cl.pid, CW_TCP_CLOSE_WAIT), 0);
    assert_int_equal(cwt_count(CW_TCP_CLOSE_WAIT, 0, sv.port), 0);
    say(&cl, "after");   /* on a new connection */
    char err[4096];
    assert_int_equal(client_finish(&cl, err, sizeof err), 0);
    assert_non_null(strstr(err, "server said 'ERR idle timeout', then closed"));
    server_stop(&sv);
}

static void test_reconnects_after_server_restart(void **state)
{
    struct server sv;
    server_start(&sv, 0, "30s");
    int port = sv.port;
    struct client cl;
    char *extra[] = {"--backoff-min", "50ms", "--backoff-max", "200ms", NULL};
    client_start(&cl, port, extra);
    say(&cl, "first");
    server_stop(&sv);
    assert_int_equal(cwt_wait_count(CW_TCP_CLOSE_WAIT, 0, port, 0, 2000), 0);
    cwt_sleep_ms(300);   /* a few refused reconnects */
    server_start(&sv, port, "30s");
    say(&cl, "second");
    char err[8192];
    assert_int_equal(client_finish(&cl, err, sizeof err), 0);
    assert_non_null(strstr(err, "ERR server shutting down"));
    assert_non_null(strstr(err, "Connection refused; retrying in"));
    server_stop(&sv);
}

static void test_login_refused_and_usage(void **state)
{
    struct server sv;
    server_start(&sv, 0, "30s");
    char portarg[16];
    snprintf(portarg, sizeof portarg, "%d", sv.port);
    char *argv[] = {BIN, "client", "--port", portarg, "--user", "alice:wrong", "-n", "1", NULL};
    int err;
    pid_t pid = cwt_spawn3(argv, NULL, NULL, &err);
    char text[1024];
    cwt_read_all(err, text, sizeof text, 5000);
    int status = cwt_wait(pid, 5000);
    close(err);
    assert_int_equal(WEXITSTATUS(status), 1);
    assert_string_equal(text, "closewise: login refused: ERR bad credentials\n");
    char *bad[] = {BIN, "client", "--port", "nope", "--user", "a:b", NULL};
    pid = cwt_spawn3(bad, NULL, NULL, &err);
    cwt_read_all(err, text, sizeof text, 5000);
    status = cwt_wait(pid, 5000);
    close(err);
    assert_int_equal(WEXITSTATUS(status), 2);
    assert_non_null(strstr(text, "bad port"));
    server_stop(&sv);
}

/* A server that accepts and never answers: the client's read timeout
 * (the seed's SO_RCVTIMEO) ends each attempt, the client closes first, and
 * it gives up after --max-retries with a bounded number of attempts. */
static int silent_client(cw_listener *l, const char *bind_port, char *err, size_t size,
                         int64_t *took)
{
    char portarg[16];
    snprintf(portarg, sizeof portarg, "%d", cw_listener_port(l));
    char *argv[] = {BIN, "client", "--port", portarg, "--user", "alice:secret", "-n", "1",
                    "--read-timeout", "200ms", "--max-retries", "3",
                    "--backoff-min", "100ms", "--backoff-max", "400ms",
                    bind_port ? "--bind-port" : NULL, (char *)bind_port, NULL};
    int efd;
    int64_t t0 = cw_now_ms();
    pid_t pid = cwt_spawn3(argv, NULL, NULL, &efd);
    cw_conn *held[8] = {0};
    int n = 0;
    siginfo_t info = {0};
    /* accept (and never answer) until the client exits; WNOWAIT leaves
     * the exit status for cwt_wait */
    while (n < 8 && waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           info.si_pid == 0)
        if (cw_accept(l, cw_now_ms() + 100, &held[n]) == CW_OK)
            n++;
    cwt_read_all(efd, err, size, 10000);
    int status = cwt_wait(pid, 10000);
    *took = cw_now_ms() - t0;
    close(efd);
    for (int i = 0; i < n; i++)
        cw_close(&held[i], CW_CLOSE_ABORT, CW_NEVER);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static int count_str(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static void test_read_timeout_and_bounded_retries(void **state)
{
    cw_listener *l;
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, 16, &l), CW_OK);
    char err[8192];
    int64_t took;
    assert_int_equal(silent_client(l, NULL, err, sizeof err, &took), 1);
    cw_listener_close(&l);
    assert_int_equal(count_str(err, "timed out"), 4);   /* 1 try + 3 retries */
    assert_non_null(strstr(err, "giving up after 3 retries"));
    assert_true(took >= 4 * 200 + 3 * 50 && took < 8000);
}

/* Namespaced test host with TCP timestamps off: see test_dial.c. */
static char ns[64];

static int netns_up(void)
{
    cwt_netns_name(ns, sizeof ns, "c");
    return cwt_sh("exec >/dev/null 2>&1; ip netns add %s && "
                  "ip netns exec %s sysctl -qw net.ipv4.tcp_timestamps=0 && "
                  "ip -n %s link set lo up", ns, ns, ns);
}

/* The seed's remedy, reusing one local port: after the client closed first
 * (read timeout) its port sits in TIME_WAIT towards the same server. With
 * TCP timestamps off, connect fails with EADDRNOTAVAIL: the client says
 * so in one line per attempt and backs off instead of spinning. */
static void test_bind_port_time_wait_without_timestamps(void **state)
{
    if (netns_up() != 0) {
        cwt_netns_del(ns);
        printf("# skipped: cannot create network namespaces (needs root and iproute2)\n");
        skip();
    }
    int orig = cwt_netns_enter(ns);
    cw_listener *l;
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, 16, &l), CW_OK);
    char bind_port[16], err[8192];
    snprintf(bind_port, sizeof bind_port, "%d", cwt_free_port());
    int64_t took;
    struct rusage before, after;
    getrusage(RUSAGE_CHILDREN, &before);
    int rc = silent_client(l, bind_port, err, sizeof err, &took);
    getrusage(RUSAGE_CHILDREN, &after);
    cw_listener_close(&l);
    cwt_netns_leave(orig);
    cwt_netns_del(ns);
    printf("# %s", err);
    assert_int_equal(rc, 1);
    assert_int_equal(count_str(err, "timed out"), 1);
    assert_int_equal(count_str(err, "TIME_WAIT"), 3);
    long cpu_ms = (after.ru_utime.tv_sec - before.ru_utime.tv_sec) * 1000 +
                  (after.ru_utime.tv_usec - before.ru_utime.tv_usec) / 1000 +
                  (after.ru_stime.tv_sec - before.ru_stime.tv_sec) * 1000 +
                  (after.ru_stime.tv_usec - before.ru_stime.tv_usec) / 1000;
    assert_true(cpu_ms < 500);   /* backed off, never spun */
}

/* Same, timestamps on (Linux's default): the kernel recycles the TIME_WAIT
 * twin, so every reconnect from the bound port succeeds. */
static void test_bind_port_time_wait_with_timestamps(void **state)
{
    cw_listener *l;
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, 16, &l), CW_OK);
    char bind_port[16], err[8192];
    snprintf(bind_port, sizeof bind_port, "%d", cwt_free_port());
    int64_t took;
    assert_int_equal(silent_client(l, bind_port, err, sizeof err, &took), 1);
    cw_listener_close(&l);
    assert_int_equal(count_str(err, "timed out"), 4);
    assert_int_equal(count_str(err, "TIME_WAIT"), 0);
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_echo_and_quit),
        CWT_TEST(test_idle_close_is_detected_and_closed),
        CWT_TEST(test_reconnects_after_server_restart),
        CWT_TEST(test_login_refused_and_usage),
        CWT_TEST(test_read_timeout_and_bounded_retries),
        CWT_TEST(test_bind_port_time_wait_without_timestamps),
        CWT_TEST(test_bind_port_time_wait_with_timestamps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
