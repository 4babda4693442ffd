/* test_client.c - `closewise client` as a real process against the real
 * server (and against a silent listener): echo, detect-and-close on the
 * server's idle close, reconnect after a restart, read timeout, bounded
 * retries, and the seed's bound local port against a TIME_WAIT twin.
 * Against hostile in-test servers (OK then close, reset, busy, over-long
 * line): the retry budget holds, counted in connections accepted. And
 * stdin: a burst is echoed at once, unsendable lines are skipped locally. */
// cw-test-timeout: 120
#include "cwtest.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define BIN CW_BUILD_DIR "/closewise"

/* Pipes a failed assertion would leave open: the teardown closes them, so
 * the failure is reported as itself and not as a descriptor leak. */
static int live_fds[16], nlive;

static int track(int fd)
{
    assert_true(nlive < (int)(sizeof live_fds / sizeof live_fds[0]));
    live_fds[nlive++] = fd;
    return fd;
}

static void untrack_close(int fd)
{
    for (int i = 0; i < nlive; i++)
        if (live_fds[i] == fd)
            live_fds[i] = live_fds[--nlive];
    close(fd);
}

struct server {
    pid_t pid;
    int out;
    int port;
};

/* Start `closewise server` on port (0 = any) with user alice:secret.
 * Its password checks run on its loop (--auth-threads 0): by default they
 * run on nice-19 threads, which a machine kept busy by nice-0 work starves;
 * under 4 busy loops on 2 cores one yescrypt login then took 4-20 s (70 ms
 * on the loop), past these tests' bounds. The client is under test here;
 * the server's check threads are test_server_load's. */
static void server_start(struct server *sv, int port, const char *idle)
{
    char portarg[16];
    snprintf(portarg, sizeof portarg, "%d", port);
    char *argv[] = {BIN, "server", "--port", portarg, "--user", "alice:secret",
                    "--idle-timeout", (char *)idle, "--auth-threads", "0", "--quiet", NULL};
    sv->pid = cwt_spawn(argv, &sv->out);
    track(sv->out);
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
    untrack_close(sv->out);
    assert_true(WIFEXITED(status));
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
    track(cl->in);
    track(cl->out);
    track(cl->err);
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
    untrack_close(cl->in);
    cwt_read_all(cl->err, err, size, 15000);
    int status = cwt_wait(cl->pid, 5000);
    untrack_close(cl->out);
    untrack_close(cl->err);
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
    /* The client says so after it closed: no fixed sleep (700 ms failed
     * under load), and a client that never closed fails both checks. */
    char err[4096];
    assert_true(cwt_read_line(cl.err, err, sizeof err, 10000) > 0);
    assert_non_null(strstr(err, "server said 'ERR idle timeout', then closed"));
    assert_int_equal(cwt_count_pid(cl.pid, CW_TCP_CLOSE_WAIT), 0);
    /* both FINs exchanged: the server's side reaches TIME_WAIT */
    assert_int_equal(cwt_wait_count(CW_TCP_TIME_WAIT, sv.port, 0, 1, 10000), 1);
    assert_int_equal(cwt_count(CW_TCP_CLOSE_WAIT, 0, sv.port), 0);
    say(&cl, "after");   /* on a new connection */
    assert_int_equal(client_finish(&cl, err, sizeof err), 0);
    server_stop(&sv);
}

static void test_reconnects_after_server_restart(void **state)
{
    struct server sv;
    server_start(&sv, 0, "30s");
    int port = sv.port;
    struct client cl;
    /* A budget far beyond the restart: the default 10 retries (about 2 s
     * here) ran out when a loaded machine took longer to restart the
     * server, and the client's exit made the next say() die of SIGPIPE. */
    char *extra[] = {"--backoff-min", "50ms", "--backoff-max", "200ms",
                     "--max-retries", "600", NULL};
    client_start(&cl, port, extra);
    say(&cl, "first");
    server_stop(&sv);
    assert_int_equal(cwt_wait_count(CW_TCP_CLOSE_WAIT, 0, port, 0, 2000), 0);
    /* Restart once the client was refused (a fixed 300 ms sleep could end
     * before its first reconnect under load): its stderr says so. */
    char err[8192] = "";
    size_t n = 0;
    while (!strstr(err, "Connection refused; retrying in")) {
        int len = cwt_read_line(cl.err, err + n, sizeof err - n - 1, 10000);
        assert_true(len >= 0);
        n += (size_t)len;
        err[n++] = '\n';
        err[n] = '\0';
    }
    assert_non_null(strstr(err, "ERR server shutting down"));
    server_start(&sv, port, "30s");
    say(&cl, "second");
    assert_int_equal(client_finish(&cl, err, sizeof err), 0);
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
    assert_string_equal(text, "closewise client: login refused: ERR bad credentials\n");
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

/* A fake server on loopback, one connection at a time, behaving in one
 * way after the login line; it counts the connections it accepted. */
enum fake_mode {
    FAKE_ECHO,         /* a correct server: OK, echoes, BYE */
    FAKE_ONE_ANSWER,   /* OK, answers one ECHO, closes */
    FAKE_OK_CLOSE,     /* OK, then FIN */
    FAKE_OK_RESET,     /* OK, then RST */
    FAKE_BUSY,         /* ERR server busy instead of OK */
    FAKE_OK_BUSY,      /* OK, ERR server busy, FIN */
    FAKE_OK_BUSY_SLOW, /* the same, its FIN 300 ms after the line */
    FAKE_OK_LONG,      /* OK, a 3000-byte line */
    FAKE_OK_IDLE,      /* OK, ERR idle timeout, FIN */
    FAKE_THROTTLED,    /* ERR too many failures */
};

struct fake {
    cw_listener *l;
    enum fake_mode mode;
    atomic_int stop, accepted;
    pthread_t thread;
};

static void fake_say(cw_conn *c, const char *text)
{
    cw_send_all(c, text, strlen(text), cw_now_ms() + 2000);
}

/* Answer ECHO and QUIT like the real server until the client leaves;
 * with once, close after the first answer. */
static void fake_echo(cw_conn *c, int once)
{
    char line[4096];
    while (cw_readline(c, line, sizeof line, cw_now_ms() + 5000) >= 0) {
        if (strcmp(line, "QUIT") == 0) {
            fake_say(c, "BYE\n");
            return;
        }
        if (strncmp(line, "ECHO ", 5) != 0)
            return;   /* no cmocka assertion off the main thread */
        fake_say(c, line + 5);
        fake_say(c, "\n");
        if (once)
            return;
    }
}

static void fake_serve(struct fake *f, cw_conn *c)
{
    static const char *const says[] = {
        [FAKE_ECHO] = "OK\n", [FAKE_ONE_ANSWER] = "OK\n", [FAKE_OK_CLOSE] = "OK\n",
        [FAKE_OK_RESET] = "OK\n", [FAKE_BUSY] = "ERR server busy\n",
        [FAKE_OK_BUSY] = "OK\nERR server busy\n",
        [FAKE_OK_BUSY_SLOW] = "OK\nERR server busy\n", [FAKE_OK_LONG] = "OK\n",
        [FAKE_OK_IDLE] = "OK\nERR idle timeout\n",
        [FAKE_THROTTLED] = "ERR too many failures\n"};
    char line[4096];
    if (cw_readline(c, line, sizeof line, cw_now_ms() + 5000) < 0 ||
        strcmp(line, "AUTH alice secret") != 0) {
        cw_close(&c, CW_CLOSE_ABORT, CW_NEVER);
        return;
    }
    fake_say(c, says[f->mode]);
    if (f->mode == FAKE_ECHO || f->mode == FAKE_ONE_ANSWER)
        fake_echo(c, f->mode == FAKE_ONE_ANSWER);
    if (f->mode == FAKE_OK_LONG) {
        char longline[3001];
        memset(longline, 'x', 3000);
        longline[3000] = '\0';
        fake_say(c, longline);
        fake_say(c, "\n");
    }
    if (f->mode == FAKE_OK_BUSY_SLOW)
        cwt_sleep_ms(300);   /* a loaded server, between its line and FIN */
    if (f->mode == FAKE_OK_RESET) {
        /* let the client read OK (or send its message) before the RST */
        cw_readline(c, line, sizeof line, cw_now_ms() + 50);
        cw_close(&c, CW_CLOSE_ABORT, CW_NEVER);
        return;
    }
    cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000);
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    while (!atomic_load(&f->stop)) {
        cw_conn *c;
        if (cw_accept(f->l, cw_now_ms() + 20, &c) == CW_OK) {
            atomic_fetch_add(&f->accepted, 1);
            fake_serve(f, c);
        }
    }
    return NULL;
}

/* The fake server a failed assertion would leave running. */
static struct fake *live_fake;

static void fake_start(struct fake *f, enum fake_mode mode)
{
    live_fake = f;
    f->mode = mode;
    atomic_init(&f->stop, 0);
    atomic_init(&f->accepted, 0);
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, 16, &f->l), CW_OK);
    f->thread = cwt_thread(fake_main, f);
}

/* Stop the server; returns how many connections it accepted. */
static int fake_stop(struct fake *f)
{
    live_fake = NULL;
    atomic_store(&f->stop, 1);
    cwt_join(f->thread);
    cw_listener_close(&f->l);
    return atomic_load(&f->accepted);
}

/* Run the client against the fake server until it exits on its own, stdin
 * open and silent (an idle interactive user) unless extra has -n. */
static int run_against(struct fake *f, char *extra[], char *err, size_t size,
                       int64_t *took)
{
    struct client cl;
    int64_t t0 = cw_now_ms();
    client_start(&cl, cw_listener_port(f->l), extra);
    cwt_read_all(cl.err, err, size, 10000);
    int status = cwt_wait(cl.pid, 5000);
    *took = cw_now_ms() - t0;
    untrack_close(cl.in);
    untrack_close(cl.out);
    untrack_close(cl.err);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* The hostile servers: before, --max-retries 3 made 8-15
 * connections a second for as long as it ran, because a successful login
 * refilled the budget. Now: 1 try + 3 retries, then exit 1, and the
 * backoff spaces them (at least 20 + 40 + 80 ms). */
static void test_hostile_servers_exhaust_the_budget(void **state)
{
    static const enum fake_mode modes[] = {FAKE_OK_CLOSE, FAKE_OK_RESET, FAKE_BUSY,
                                           FAKE_OK_BUSY, FAKE_OK_BUSY_SLOW, FAKE_OK_LONG};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        for (int counted = 0; counted < 2; counted++) {
            char *extra[] = {"--max-retries", "3", "--backoff-min", "40ms",
                             "--backoff-max", "160ms", "--read-timeout", "2s",
                             counted ? "-n" : NULL, "1", NULL};
            struct fake f;
            fake_start(&f, modes[i]);
            char err[8192];
            int64_t took;
            int rc = run_against(&f, extra, err, sizeof err, &took);
            int conns = fake_stop(&f);
            printf("# mode %d %s: %d connections in %lld ms, exit %d\n", (int)modes[i],
                   counted ? "-n 1" : "stdin", conns, (long long)took, rc);
            if (conns != 4 || rc != 1)
                printf("# %s", err);
            assert_int_equal(rc, 1);
            assert_int_equal(conns, 4);
            assert_int_equal(count_str(err, "\n"), 4);   /* one line per attempt */
            assert_int_equal(count_str(err, "giving up after 3 retries"), 1);
            assert_true(took >= 140 && took < 5000);
        }
    }
}

/* A final reply ends the run at once: one connection, one line. */
static void test_final_reply_ends_the_run(void **state)
{
    struct fake f;
    fake_start(&f, FAKE_THROTTLED);
    char *extra[] = {"-n", "1", NULL};
    char err[4096];
    int64_t took;
    assert_int_equal(run_against(&f, extra, err, sizeof err, &took), 1);
    assert_int_equal(fake_stop(&f), 1);
    assert_string_equal(err, "closewise client: login refused: ERR too many failures\n");
}

/* An answered message refills the budget: a server that closes after
 * every answer still gets every message through with --max-retries 1. */
static void test_answered_message_refills_the_budget(void **state)
{
    struct fake f;
    fake_start(&f, FAKE_ONE_ANSWER);
    char *extra[] = {"-n", "5", "--max-retries", "1", "--backoff-min", "10ms",
                     "--backoff-max", "10ms", NULL};
    struct client cl;
    client_start(&cl, cw_listener_port(f.l), extra);
    char line[64], want[64];
    for (int i = 1; i <= 5; i++) {
        snprintf(want, sizeof want, "message %d", i);
        assert_true(cwt_read_line(cl.out, line, sizeof line, 5000) >= 0);
        assert_string_equal(line, want);
    }
    char err[8192];
    client_finish(&cl, err, sizeof err);   /* QUIT found the server gone: 1 */
    assert_int_equal(fake_stop(&f), 5);
    assert_int_equal(count_str(err, "(1 of 1)"), 4);
    assert_int_equal(count_str(err, "giving up"), 0);
}

/* ERR idle timeout on a session we left idle: no reconnect until there is
 * input. A server that says it at once cannot use that to make the client
 * loop: the message is then unanswered and counts. */
static void test_idle_timeout_reconnects_on_input(void **state)
{
    struct fake f;
    fake_start(&f, FAKE_OK_IDLE);
    char *extra[] = {"--max-retries", "3", "--backoff-min", "20ms",
                     "--backoff-max", "40ms", NULL};
    struct client cl;
    client_start(&cl, cw_listener_port(f.l), extra);
    char err[8192];
    assert_true(cwt_read_line(cl.err, err, sizeof err, 5000) > 0);
    assert_non_null(strstr(err, "server said 'ERR idle timeout', then closed; "
                                "reconnecting at the next line of input"));
    cwt_sleep_ms(300);   /* the old client reconnected within 40 ms */
    assert_int_equal(atomic_load(&f.accepted), 1);
    assert_int_equal(cwt_count(CW_TCP_CLOSE_WAIT, 0, cw_listener_port(f.l)), 0);
    assert_int_equal(write(cl.in, "hi\n", 3), 3);
    assert_int_equal(client_finish(&cl, err, sizeof err), 1);
    assert_int_equal(fake_stop(&f), 1 + 4);
    assert_int_equal(count_str(err, "\n"), 4);
    assert_int_equal(count_str(err, "giving up after 3 retries"), 1);
}

/* Lines written in one burst are all echoed at once: the client reads
 * stdin into its own buffer, so nothing waits in stdio's. */
static void test_burst_stdin_echoed_at_once(void **state)
{
    struct server sv;
    server_start(&sv, 0, "30s");
    struct client cl;
    client_start(&cl, sv.port, NULL);
    say(&cl, "warm");   /* logged in */
    int64_t t0 = cw_now_ms();
    assert_int_equal(write(cl.in, "a\nb\nc\n", 6), 6);
    char line[16];
    for (const char *want = "abc"; *want; want++) {
        assert_int_equal(cwt_read_line(cl.out, line, sizeof line, 2000), 1);
        assert_int_equal(line[0], *want);
    }
    printf("# burst of 3 lines echoed in %lld ms\n", (long long)(cw_now_ms() - t0));
    assert_true(cw_now_ms() - t0 < 1000);
    char err[4096];
    assert_int_equal(client_finish(&cl, err, sizeof err), 0);
    assert_string_equal(err, "");
    server_stop(&sv);
}

/* Lines the protocol cannot carry (ECHO + text over 1024 bytes, control
 * bytes) are refused locally, one error each; the connection stays, and
 * the longest line that fits still goes through. */
static void test_unsendable_stdin_lines_skipped(void **state)
{
    struct fake f;
    fake_start(&f, FAKE_ECHO);
    struct client cl;
    client_start(&cl, cw_listener_port(f.l), NULL);
    static char big[70001];
    memset(big, 'x', sizeof big - 1);
    const size_t lens[] = {1019, 1020, 1023, 70000};
    say(&cl, "before");
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(write(cl.in, big, lens[i]), (ssize_t)lens[i]);
        assert_int_equal(write(cl.in, "\n", 1), 1);
    }
    assert_int_equal(write(cl.in, "bad\001byte\n", 9), 9);
    char line[2048];
    assert_int_equal(cwt_read_line(cl.out, line, sizeof line, 5000), 1019);
    say(&cl, "after");
    char err[4096];
    assert_int_equal(client_finish(&cl, err, sizeof err), 1);
    assert_int_equal(fake_stop(&f), 1);
    assert_string_equal(err,
        "closewise client: stdin line 3: longer than 1019 bytes; not sent\n"
        "closewise client: stdin line 4: longer than 1019 bytes; not sent\n"
        "closewise client: stdin line 5: longer than 1019 bytes; not sent\n"
        "closewise client: stdin line 6: not text (a control byte or invalid UTF-8); not sent\n");
}

static int usage_exit(char *opt, char *val, char *err, size_t size)
{
    char *argv[] = {BIN, "client", "--port", "1", "--user", "alice:secret", "-n", "1",
                    opt, val, NULL};
    int efd;
    pid_t pid = cwt_spawn3(argv, NULL, NULL, &efd);
    cwt_read_all(efd, err, size, 5000);
    int status = cwt_wait(pid, 5000);
    close(efd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Durations that would overflow or mean "never" are usage errors. */
static void test_durations_range_checked(void **state)
{
    char *bad[][2] = {{"--read-timeout", "600h"}, {"--read-timeout", "0"},
                      {"--connect-timeout", "0.4ms"}, {"--backoff-min", "0"},
                      {"--backoff-max", "25h"}, {"--read-timeout", "nan"},
                      {"--read-timeout", "1e400s"}, {"--max-retries", "99999999999999999999"},
                      {"--user", "a-name-longer-than-sixty-four-bytes-is-refused-by-the-server-xxxx:pw"}};
    char err[1024];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(usage_exit(bad[i][0], bad[i][1], err, sizeof err), 2);
        assert_int_equal(count_str(err, "\n"), 1);
        assert_non_null(strstr(err, "closewise client: "));
    }
    assert_int_equal(usage_exit("--backoff-min", "6s", err, sizeof err), 2);
    assert_string_equal(err, "closewise client: --backoff-max must not be below --backoff-min "
                             "(try 'closewise client --help')\n");
    assert_int_equal(usage_exit("--read-timeout", "600h", err, sizeof err), 2);
    assert_string_equal(err, "closewise client: --read-timeout: '600h' is out of range "
                             "(1ms to 24h) (try 'closewise client --help')\n");
    /* the bounds themselves are accepted */
    struct fake f;
    fake_start(&f, FAKE_ECHO);
    char *extra[] = {"-n", "1", "--read-timeout", "24h", "--backoff-min", "1ms",
                     "--backoff-max", "24h", "--max-retries", "0", NULL};
    int64_t took;
    assert_int_equal(run_against(&f, extra, err, sizeof err, &took), 0);
    assert_int_equal(fake_stop(&f), 1);
    assert_string_equal(err, "");
}

static int client_teardown(void **state)
{
    if (live_fake)
        fake_stop(live_fake);
    while (nlive > 0)
        close(live_fds[--nlive]);
    return cwt_teardown(state);
}

int main(void)
{
    cwt_private_netns();
#define CLIENT_TEST(fn) cmocka_unit_test_setup_teardown(fn, cwt_setup, client_teardown)
    const struct CMUnitTest tests[] = {
        CLIENT_TEST(test_echo_and_quit),
        CLIENT_TEST(test_idle_close_is_detected_and_closed),
        CLIENT_TEST(test_reconnects_after_server_restart),
        CLIENT_TEST(test_login_refused_and_usage),
        CLIENT_TEST(test_read_timeout_and_bounded_retries),
        CLIENT_TEST(test_bind_port_time_wait_without_timestamps),
        CLIENT_TEST(test_bind_port_time_wait_with_timestamps),
        CLIENT_TEST(test_hostile_servers_exhaust_the_budget),
        CLIENT_TEST(test_final_reply_ends_the_run),
        CLIENT_TEST(test_answered_message_refills_the_budget),
        CLIENT_TEST(test_idle_timeout_reconnects_on_input),
        CLIENT_TEST(test_burst_stdin_echoed_at_once),
        CLIENT_TEST(test_unsendable_stdin_lines_skipped),
        CLIENT_TEST(test_durations_range_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
