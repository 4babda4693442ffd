/* test_resets.c - `closewise resets` against real closes on the real
 * kernel: a program built with -g (resets_helper.c) closes with unread
 * input, with SO_LINGER {1,0} after queuing 256 KiB, and gracefully; the
 * command must report exactly the first two, with the right reason, byte
 * counts and the file:line of each close() (lines found by marker in the
 * helper's source, not written here). `closewise server` in its three
 * close modes: the resetting ones are reported with the server's pid, the
 * graceful one not at all. Without BPF, the counter deltas must move by
 * exactly what this test did (its private netns has its own counters).
 * Every run is bounded by --duration or --count; after each, none of the
 * BPF programs it loaded is left loaded, and nothing is pinned. */
// cw-test-timeout: 120
#include "cwtest.h"

#include <dirent.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define CLI CW_BUILD_DIR "/closewise"

static int bpf_ok;                 /* BPF loads here */
static char bpf_why[512];

/* ---- a little JSON reading: flat fields of one event line ---- */

static long long json_int(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p)
        fail_msg("no %s in %s", key, line);
    return strtoll(p + strlen(pat), NULL, 10);
}

static void json_str(const char *line, const char *key, char *buf, size_t size)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(line, pat);
    if (!p)
        fail_msg("no %s in %s", key, line);
    p += strlen(pat);
    size_t n = strcspn(p, "\"");
    snprintf(buf, size, "%.*s", (int)(n < size ? n : size - 1), p);
}

/* The line of the first stack frame in file `base`, 0 if none. */
static int stack_line_in(const char *line, const char *base)
{
    char pat[128];
    snprintf(pat, sizeof pat, "/%s\",\"line\":", base);
    const char *p = strstr(line, pat);
    return p ? atoi(p + strlen(pat)) : 0;
}

/* Line number of "RESETS-MARK <name>" in a helper's source. */
static int marker_line_in(const char *file, const char *name)
{
    char path[256];
    snprintf(path, sizeof path, CW_SOURCE_DIR "/tests/%s", file);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char buf[512], want[64];
    snprintf(want, sizeof want, "RESETS-MARK %s ", name);
    int n = 0, found = 0;
    while (!found && fgets(buf, sizeof buf, f)) {
        n++;
        found = strstr(buf, want) != NULL;
    }
    fclose(f);
    assert_true(found);
    return n;
}

static int marker_line(const char *name)
{
    return marker_line_in("resets_helper.c", name);
}

/* ---- our BPF programs, by id: other instances may run meanwhile (the
 * exporter and the demo load the same program), so a program is the
 * command's when the command's own descriptors hold it ---- */

#define MAXPROGS 64

struct progs {
    int id[MAXPROGS];
    int n;
};

/* The ids of every on_send_reset program loaded now (bpftool prog show). */
static void progs_now(struct progs *p)
{
    p->n = 0;
    FILE *f = popen("bpftool prog show 2>/dev/null", "r");
    assert_non_null(f);
    char buf[512];
    while (fgets(buf, sizeof buf, f))
        if (strstr(buf, "on_send_reset") && p->n < MAXPROGS)
            p->id[p->n++] = atoi(buf);
    pclose(f);
}

static int progs_has(const struct progs *p, int id)
{
    for (int i = 0; i < p->n; i++)
        if (p->id[i] == id)
            return 1;
    return 0;
}

/* Whether process pid has a descriptor on BPF program id (its fdinfo
 * says "prog_id:	id", for the program's and its link's descriptors). */
static int pid_holds_prog(pid_t pid, int id)
{
    char path[64], want[32], buf[256];
    snprintf(path, sizeof path, "/proc/%d/fdinfo", (int)pid);
    snprintf(want, sizeof want, "prog_id:\t%d\n", id);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        char f[320];
        snprintf(f, sizeof f, "%s/%s", path, e->d_name);
        FILE *fp = e->d_name[0] != '.' ? fopen(f, "re") : NULL;
        while (fp && !found && fgets(buf, sizeof buf, fp))
            found = !strcmp(buf, want);
        if (fp)
            fclose(fp);
    }
    closedir(d);
    return found;
}

/* Programs are freed shortly after their last descriptor closes: wait
 * (bounded) until none of `mine` is loaded; nothing may be pinned. */
static void expect_gone(const struct progs *mine)
{
    struct progs now;
    int left = 1;
    for (int i = 0; i < 40 && left; i++) {
        if (i)
            cwt_sleep_ms(50);
        progs_now(&now);
        left = 0;
        for (int k = 0; k < mine->n; k++)
            left += progs_has(&now, mine->id[k]);
    }
    if (left)
        fail_msg("%d BPF program(s) of closewise resets still loaded after it exited", left);
    assert_int_not_equal(cwt_sh("ls /sys/fs/bpf 2>/dev/null | grep -q reset"), 0);
}

/* ---- running the command ---- */

struct cmd {
    pid_t pid;
    int out, err;
    struct progs mine;     /* the programs it loaded */
};

/* Start closewise resets with args; with BPF, wait until it is attached. */
static struct cmd resets_start(const char *const *args)
{
    char *argv[24];
    int n = 0;
    argv[n++] = (char *)CLI;
    argv[n++] = (char *)"resets";
    for (; *args && n < 23; args++)
        argv[n++] = (char *)*args;
    argv[n] = NULL;
    struct cmd c;
    struct progs now;
    c.pid = cwt_spawn3(argv, NULL, &c.out, &c.err);
    char line[1024];
    if (cwt_read_line(c.err, line, sizeof line, 20000) < 0)
        fail_msg("closewise resets said nothing on stderr");
    assert_non_null(strstr(line, "closewise resets: "));
    progs_now(&now);
    c.mine.n = 0;
    for (int i = 0; i < now.n; i++)
        if (pid_holds_prog(c.pid, now.id[i]))
            c.mine.id[c.mine.n++] = now.id[i];
    if (strstr(line, "with BPF") && c.mine.n == 0)
        fail_msg("closewise resets says it watches, but no program of it is loaded");
    return c;
}

/* Wait for the command to end (bounded) and return its exit code; its
 * stdout (everything) in out. Its programs must be gone then. */
static int resets_finish(struct cmd *c, char *out, size_t size)
{
    cwt_read_all(c->out, out, size, 20000);
    int st = cwt_wait(c->pid, 20000);
    char err[4096];
    cwt_read_all(c->err, err, sizeof err, 1000);
    close(c->out);
    close(c->err);
    if (st < 0 || !WIFEXITED(st))
        fail_msg("closewise resets did not end by itself; stderr: %s", err);
    if (strstr(err, "lost"))
        fail_msg("events lost: %s", err);
    expect_gone(&c->mine);
    return WEXITSTATUS(st);
}

/* ---- the helper program: two resets and a graceful close ---- */

struct helper_run {
    int port[3];                 /* server sides: graceful, unread, linger0 */
    int unread, unsent;
};

static void read_helper(int fd, struct helper_run *h)
{
    char line[256];
    int np = 0;
    while (cwt_read_line(fd, line, sizeof line, 10000) >= 0 && strcmp(line, "done")) {
        if (!strncmp(line, "port ", 5) && np < 3)
            h->port[np++] = atoi(line + 5);
        else if (!strncmp(line, "unread ", 7))
            h->unread = atoi(line + 7);
        else if (!strncmp(line, "unsent ", 7))
            h->unsent = atoi(line + 7);
    }
    assert_int_equal(np, 3);
}

/* The helper, started and waiting for "go". */
struct helper {
    pid_t pid;
    int in, out;
    char pidarg[32];
    struct helper_run run;
};

static void helper_start_prog(struct helper *h, const char *prog)
{
    char *argv[] = {(char *)prog, NULL};
    char line[256];
    memset(h, 0, sizeof *h);
    h->pid = cwt_spawn3(argv, &h->in, &h->out, NULL);
    assert_true(cwt_read_line(h->out, line, sizeof line, 5000) > 0);
    assert_int_equal(atoi(line + 6), h->pid);
    snprintf(h->pidarg, sizeof h->pidarg, "%d", (int)h->pid);
}

static void helper_start(struct helper *h)
{
    helper_start_prog(h, CW_BUILD_DIR "/tests/resets_helper");
}

/* Let it close its three connections; returns once it has. */
static void helper_go(struct helper *h)
{
    assert_int_equal(write(h->in, "go\n", 3), 3);
    read_helper(h->out, &h->run);
}

static void helper_end(struct helper *h)
{
    close(h->in);
    assert_true(WIFEXITED(cwt_wait(h->pid, 5000)));
    close(h->out);
}

static void check_event(const char *ev, pid_t pid, const char *reason, int port, int line)
{
    char s[128];
    assert_int_equal(json_int(ev, "pid"), pid);
    json_str(ev, "reason", s, sizeof s);
    assert_string_equal(s, reason);
    json_str(ev, "local", s, sizeof s);
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%d", port);
    assert_string_equal(s, want);
    json_str(ev, "comm", s, sizeof s);
    assert_string_equal(s, "resets_helper");
    json_str(ev, "state", s, sizeof s);
    assert_string_equal(s, "CLOSE");
    if (stack_line_in(ev, "resets_helper.c") != line)
        fail_msg("expected the close() at resets_helper.c:%d in %s", line, ev);
}

static void test_helper_closes(void **state)
{
    if (!bpf_ok)
        skip();
    struct helper hp;
    helper_start(&hp);
    /* --count 2: the graceful close comes first, so a reset from it would
     * be one of the two and fail the checks below. */
    const char *args[] = {"--json", "--pid", hp.pidarg, "--count", "2", "--duration", "15s",
                          NULL};
    struct cmd c = resets_start(args);
    helper_go(&hp);
    static char out[65536];
    assert_int_equal(resets_finish(&c, out, sizeof out), 0);
    helper_end(&hp);
    struct helper_run h = hp.run;

    char *second = strchr(out, '\n');
    assert_non_null(second);
    *second++ = '\0';
    assert_non_null(strchr(second, '\n'));
    check_event(out, hp.pid, "unread", h.port[1], marker_line("unread"));
    assert_int_equal(json_int(out, "unread"), 27);
    assert_int_equal(h.unread, 27);
    assert_int_equal(json_int(out, "unsent"), 0);
    assert_non_null(strstr(out, "\"peer_fin\":false"));
    check_event(second, hp.pid, "linger0", h.port[2], marker_line("linger0"));
    long long unsent = json_int(second, "unsent");
    /* SIOCOUTQ just before close() is write_seq - snd_una too; an ACK in
     * between can only lower it. */
    if (unsent > h.unsent || unsent < h.unsent - 65536 || unsent < 128 * 1024)
        fail_msg("unsent %lld, helper saw %d queued before close", unsent, h.unsent);
    assert_true(strstr(out, "\"local_close\":true") && strstr(second, "\"local_close\":true"));
}

/* Text output, the user-space filters and --exit-on-reset: only the
 * linger0 close passes --reason, and the command stops there with 1. */
static void test_filters_and_text(void **state)
{
    if (!bpf_ok)
        skip();
    struct helper hp;
    helper_start(&hp);
    const char *args[] = {"--pid", hp.pidarg, "--comm", "resets_helper", "--reason", "linger0",
                          "--container", "/", "--exit-on-reset", "--duration", "15s", NULL};
    struct cmd c = resets_start(args);
    helper_go(&hp);
    static char out[65536];
    assert_int_equal(resets_finish(&c, out, sizeof out), 1);
    helper_end(&hp);
    char want[128];
    assert_non_null(strstr(out, " (resets_helper) "));
    assert_non_null(strstr(out, "SO_LINGER 0: "));
    snprintf(want, sizeof want, "127.0.0.1:%d > ", hp.run.port[2]);
    assert_non_null(strstr(out, want));
    snprintf(want, sizeof want, " at resets_helper.c:%d (linger0)", marker_line("linger0"));
    if (!strstr(out, want))
        fail_msg("expected '%s' in: %s", want, out);
    assert_int_equal(strchr(out, '\n') - out + 1, (long)strlen(out));   /* one line */

    /* A container that is not there: nothing, exit 0 at --duration. */
    helper_start(&hp);
    const char *none[] = {"--pid", hp.pidarg, "--container", "no-such-container",
                          "--exit-on-reset", "--duration", "1500ms", NULL};
    c = resets_start(none);
    helper_go(&hp);
    assert_int_equal(resets_finish(&c, out, sizeof out), 0);
    assert_string_equal(out, "");
    helper_end(&hp);
}

/* A fork-per-connection server (tests/trace_forker.c, rst mode): each of
 * 300 children closes its connection with unread input and exits at
 * once, before the command reads the event. Every reset still names the
 * child's close(), read in the parent's map (none did when the child's
 * own map was needed: it is gone by then). */
static void test_fork_per_connection_children(void **state)
{
    if (!bpf_ok)
        skip();
    /* (The tracer's tests run trace_forker too, in their own network
     * namespace but under the same tracepoint: their resets are linger0.) */
    const char *args[] = {"--comm", "trace_forker", "--reason", "unread", "--count", "300",
                          "--duration", "60s", NULL};
    struct cmd c = resets_start(args);
    char *argv[] = {(char *)FORKER, (char *)"300", (char *)"rst", NULL};
    int fo;
    static char out[1 << 18];
    pid_t fp = cwt_spawn(argv, &fo);
    cwt_read_all(fo, out, sizeof out, 60000);
    close(fo);
    int st = cwt_wait(fp, 10000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(resets_finish(&c, out, sizeof out), 0);
    char want[128];
    snprintf(want, sizeof want, " at trace_forker.c:%d (one)",
             marker_line_in("trace_forker.c", "forker-close"));
    int events = 0, named = 0;
    for (char *l = out, *nl; (nl = strchr(l, '\n')); l = nl + 1) {
        *nl = '\0';
        events++;
        named += strstr(l, want) != NULL;
    }
    if (events != 300 || named != 300)
        fail_msg("%d resets, %d naming%s; the first: %.400s", events, named, want, out);
}

/* A program linked with libclosewise.so resets a connection through
 * cw_close(): the line named is the program's call, not the library's
 * close() (conn.c) under it, and the call sits in an inlined function,
 * named as such with the line that called it; the JSON stack keeps the
 * library's frames. */
static void test_library_caller(void **state)
{
    if (!bpf_ok)
        skip();
    static char out[65536];
    char want[128], line[256];
    for (int json = 0; json < 2; json++) {
        struct helper hp;
        helper_start_prog(&hp, CW_BUILD_DIR "/tests/resets_lib_helper");
        const char *args[] = {"--pid", hp.pidarg, "--count", "1", "--duration", "15s",
                              json ? "--json" : NULL, NULL};
        struct cmd c = resets_start(args);
        assert_int_equal(write(hp.in, "go\n", 3), 3);
        while (cwt_read_line(hp.out, line, sizeof line, 10000) >= 0 && strcmp(line, "done"))
            ;
        assert_int_equal(resets_finish(&c, out, sizeof out), 0);
        helper_end(&hp);
        int drop = marker_line_in("resets_lib_helper.c", "drop");
        if (json) {
            assert_non_null(strstr(out, "\"module\":\"libclosewise.so"));
            assert_non_null(strstr(out, "/src/net/conn.c\",\"line\":"));
            assert_non_null(strstr(out, ",\"library\":true}"));
            assert_int_equal(stack_line_in(out, "resets_lib_helper.c"), drop);
            continue;
        }
        /* drop() is inlined into serve(): both are named, each with its line. */
        snprintf(want, sizeof want, " at resets_lib_helper.c:%d (drop) < resets_lib_helper.c:%d "
                 "(serve) < ", drop, marker_line_in("resets_lib_helper.c", "call"));
        if (!strstr(out, want) || strstr(out, "conn.c"))
            fail_msg("expected '%s' and no conn.c in: %s", want, out);
    }
}

/* ---- closewise server in its three close modes ---- */

/* A client whose request is followed by 64 KiB the server never reads. */
static void bad_login_with_junk(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    static char junk[65536];
    memset(junk, 'j', sizeof junk);
    memcpy(junk, "AUTH alice wrong\n", 17);
    size_t off = 0;
    ssize_t w;
    while (off < sizeof junk && (w = send(fd, junk + off, sizeof junk - off, MSG_NOSIGNAL)) > 0)
        off += (size_t)w;
    /* Until the server's reply and its RST (or FIN): a loaded machine may
     * take seconds to check the password, and a client that left first
     * would get no reply and no reset at all. */
    char buf[4096];
    int64_t end = cw_now_ms() + 20000;
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    ssize_t r = 1;
    while (r > 0 && poll(&pf, 1, (int)(end - cw_now_ms() > 0 ? end - cw_now_ms() : 0)) == 1)
        r = read(fd, buf, sizeof buf);
    close(fd);
}

/* Runs one server mode with resets' extra arguments; returns the
 * command's output in out. */
static int server_mode(const char *mode, const char *const *extra, char *out, size_t size,
                       pid_t *server_pid)
{
    /* Checks on the loop: at nice 19 (the default) on a machine busy with
     * nice-0 work the bad login went unanswered past --duration 15s. */
    char *sargv[] = {CLI, "server", "--user", "alice:s3cret", "--port", "0", "--close-mode",
                     (char *)mode, "--lingering-timeout", "500ms", "--auth-threads", "0",
                     "--quiet", NULL};
    int sout;
    pid_t sp = cwt_spawn3(sargv, NULL, &sout, NULL);
    char line[256], pidarg[32];
    assert_true(cwt_read_line(sout, line, sizeof line, 10000) > 0);
    const char *colon = strrchr(line, ':');
    assert_non_null(colon);
    int port = atoi(colon + 1);
    snprintf(pidarg, sizeof pidarg, "%d", (int)sp);
    const char *args[12] = {"--pid", pidarg};
    int n = 2;
    for (; *extra; extra++)
        args[n++] = *extra;
    args[n] = NULL;
    struct cmd c = resets_start(args);
    bad_login_with_junk(port);
    int rc = resets_finish(&c, out, size);
    cwt_kill(sp);
    close(sout);
    *server_pid = sp;
    return rc;
}

/* The JSON stack keeps every frame: the library's own (src/net/, marked
 * "library":true) and the server's line that asked for the close(). */
static void expect_server_stack(const char *ev)
{
    const char *lib = strstr(ev, "/src/net/stream.c\",\"line\":");
    if (!lib || strncmp(strstr(lib, ",\"library\":"), ",\"library\":true}", 16))
        fail_msg("no stream.c frame marked library in %s", ev);
    if (stack_line_in(ev, "server.c") != SERVER_CLOSE_LINE)
        fail_msg("expected the close() at server.c:%d in %s", SERVER_CLOSE_LINE, ev);
    const char *srv = strstr(ev, "/src/server/server.c\",\"line\":");
    if (!srv || strncmp(strstr(srv, ",\"library\":"), ",\"library\":false}", 17))
        fail_msg("server.c frame marked library in %s", ev);
}

static void test_server_close_modes(void **state)
{
    if (!bpf_ok)
        skip();
    static char out[65536];
    pid_t sp;
    const char *one[] = {"--json", "--count", "1", "--duration", "15s", NULL};
    const char *modes[] = {"plain", "linger0"};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(server_mode(modes[i], one, out, sizeof out, &sp), 0);
        char reason[32];
        if (!*out)
            fail_msg("--close-mode %s: no reset reported", modes[i]);
        expect_server_stack(out);
        assert_int_equal(json_int(out, "pid"), sp);
        json_str(out, "reason", reason, sizeof reason);
        /* With unread input the kernel reports TCP_ABORT_ON_CLOSE even
         * under SO_LINGER 0: that check comes first in tcp_close(). */
        if (strcmp(reason, "unread") && !(i == 1 && !strcmp(reason, "linger0")))
            fail_msg("--close-mode %s: reason %s", modes[i], reason);
        assert_non_null(strstr(out, "\"module\":\"closewise\""));
    }
    /* The text names the server's line, not the library's close() under it. */
    const char *text[] = {"--count", "1", "--duration", "15s", NULL};
    assert_int_equal(server_mode("linger0", text, out, sizeof out, &sp), 0);
    char want[64];
    snprintf(want, sizeof want, " at server.c:%d (", SERVER_CLOSE_LINE);
    if (!strstr(out, " (closewise) ") || !strstr(out, want))
        fail_msg("expected '%s' in: %s", want, out);
    assert_null(strstr(out, "stream.c"));
    const char *quiet[] = {"--exit-on-reset", "--duration", "2s", NULL};
    assert_int_equal(server_mode("graceful", quiet, out, sizeof out, &sp), 0);
    assert_string_equal(out, "");
}

/* IPv6 addresses in full, a close after the peer's FIN (CLOSE_WAIT), and
 * a process whose stack is ASan's. */
static void test_ipv6(void **state)
{
    if (!bpf_ok)
        skip();
    int l = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    socklen_t len = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0) {
        close(l);
        skip();   /* no ::1 in this namespace */
    }
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
    char pidarg[32];
    snprintf(pidarg, sizeof pidarg, "%d", (int)getpid());
    const char *args[] = {"--json", "--pid", pidarg, "--count", "1", "--duration", "15s", NULL};
    struct cmd c = resets_start(args);
    int cl = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(cl, (struct sockaddr *)&a, sizeof a), 0);
    int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    assert_true(s >= 0);
    struct sockaddr_in6 ca;
    len = sizeof ca;
    assert_int_equal(getsockname(cl, (struct sockaddr *)&ca, &len), 0);
    assert_int_equal(write(cl, "five!", 5), 5);
    /* The peer's FIN too: it takes a sequence number but is no unread
     * byte, and the event says the peer had closed. */
    assert_int_equal(shutdown(cl, SHUT_WR), 0);
    struct pollfd pf = {.fd = s, .events = POLLRDHUP};
    assert_int_equal(poll(&pf, 1, 5000), 1);
    close(s);
    close(cl);
    close(l);
    static char out[65536];
    assert_int_equal(resets_finish(&c, out, sizeof out), 0);
    char got[128], want[64];
    json_str(out, "local", got, sizeof got);
    snprintf(want, sizeof want, "[::1]:%d", ntohs(a.sin6_port));
    assert_string_equal(got, want);
    json_str(out, "peer", got, sizeof got);
    snprintf(want, sizeof want, "[::1]:%d", ntohs(ca.sin6_port));
    assert_string_equal(got, want);
    json_str(out, "reason", got, sizeof got);
    assert_string_equal(got, "unread");
    assert_int_equal(json_int(out, "unread"), 5);
    assert_non_null(strstr(out, "\"peer_fin\":true"));
    assert_non_null(strstr(out, "\"function\":\"test_ipv6\""));
}

/* ---- without BPF: the kernel's counters ---- */

static void reset_pair(int linger0)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof a), 0);
    int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    assert_true(s >= 0);
    close(l);
    if (linger0) {
        struct linger lg = {1, 0};
        assert_int_equal(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    } else {
        assert_int_equal(write(c, "unread", 6), 6);
        int n = 0;
        for (int i = 0; i < 1000 && n < 6; i++) {
            assert_int_equal(ioctl(s, FIONREAD, &n), 0);
            if (n < 6)
                cwt_sleep_ms(1);
        }
    }
    close(s);
    close(c);
}

static long long sum_field(const char *out, const char *key)
{
    long long sum = 0;
    for (const char *p = out; *p; p = strchr(p, '\n') + 1) {
        sum += json_int(p, key);
        if (!strchr(p, '\n'))
            break;
    }
    return sum;
}

static void test_counter_fallback(void **state)
{
    setenv("CLOSEWISE_NO_BPF", "1", 1);
    const char *args[] = {"--json", "--interval", "100ms", "--duration", "1500ms", NULL};
    struct cmd c = resets_start(args);
    unsetenv("CLOSEWISE_NO_BPF");
    reset_pair(0);
    reset_pair(0);
    reset_pair(1);
    static char out[65536];
    assert_int_equal(resets_finish(&c, out, sizeof out), 0);
    assert_non_null(strstr(out, "\"source\":\"netstat\""));
    assert_int_equal(sum_field(out, "TCPAbortOnClose"), 2);
    assert_int_equal(sum_field(out, "TCPAbortOnData"), 1);
    assert_int_equal(sum_field(out, "TCPAbortOnLinger"), 0);
}

static void test_bad_usage(void **state)
{
    const char *bad[][3] = {{"--reason", "bogus", NULL}, {"--count", "0", NULL},
                            {"--duration", "soon", NULL}, {"--pid", "x", NULL},
                            {"extra", NULL, NULL}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[] = {CLI, "resets", (char *)bad[i][0], (char *)bad[i][1], NULL};
        int err;
        pid_t p = cwt_spawn3(argv, NULL, NULL, &err);
        char line[512];
        assert_true(cwt_read_line(err, line, sizeof line, 5000) > 0);
        assert_non_null(strstr(line, "closewise resets: "));
        int st = cwt_wait(p, 5000);
        close(err);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    }
}

/* Can this machine load the program? Ask the command itself. */
static void probe_bpf(void)
{
    char *argv[] = {CLI, "resets", "--duration", "10ms", NULL};
    int err;
    pid_t p = cwt_spawn3(argv, NULL, NULL, &err);
    cwt_read_all(err, bpf_why, sizeof bpf_why, 20000);
    cwt_wait(p, 20000);
    close(err);
    bpf_ok = strstr(bpf_why, "watching TCP resets with BPF") != NULL;
}

int main(void)
{
    cwt_private_netns();
    probe_bpf();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_helper_closes),
        CWT_TEST(test_filters_and_text),
        CWT_TEST(test_server_close_modes),
        CWT_TEST(test_library_caller),
        CWT_TEST(test_fork_per_connection_children),
        CWT_TEST(test_ipv6),
        CWT_TEST(test_counter_fallback),
        CWT_TEST(test_bad_usage),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (rc == 0 && !bpf_ok) {
        fprintf(stderr, "test_resets: BPF cannot be loaded here, BPF tests skipped: %s", bpf_why);
        return CWT_SKIP;
    }
    return rc;
}
