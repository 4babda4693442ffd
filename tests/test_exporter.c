/* test_exporter.c - `closewise exporter` as Prometheus meets it: the text
 * passes `promtool check metrics`; a real Prometheus server scrapes it
 * and sees 25 planted CLOSE_WAIT sockets of a named process come and go;
 * the age bounds contain the true age; bad requests get 404/400/408 and a
 * closed connection; scrapers that leave, reset or idle leave no
 * descriptor and no CLOSE_WAIT socket in the exporter; 1,000 concurrent
 * scrapers do not grow it; SIGTERM ends it with status 0. */
// cw-test-timeout: 150
#include "zoo.h"

#include <dirent.h>
#include <net/if.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>

#define CLI CW_BUILD_DIR "/closewise"
#define LEAKER "cwt_leaker"

struct exporter {
    pid_t pid;
    int port;
    int out;
};

/* Start the exporter on an ephemeral loopback port with extra args
 * (NULL-terminated) and read the port it prints. */
static void exporter_start(struct exporter *x, const char *const *extra)
{
    char *argv[24];
    int n = 0;
    argv[n++] = (char *)CLI;
    argv[n++] = (char *)"exporter";
    argv[n++] = (char *)"--listen";
    argv[n++] = (char *)"127.0.0.1:0";
    /* the counts asserted are this test's namespace's: others' tests run
     * in theirs at the same time */
    argv[n++] = (char *)"--netns";
    argv[n++] = (char *)"self";
    for (; extra && *extra && n < 23; extra++)
        argv[n++] = (char *)*extra;
    argv[n] = NULL;
    x->pid = cwt_spawn3(argv, NULL, &x->out, NULL);
    char line[256];
    assert_true(cwt_read_line(x->out, line, sizeof line, 10000) > 0);
    char *colon = strrchr(line, ':');
    assert_non_null(colon);
    x->port = atoi(colon + 1);
    assert_true(x->port > 0);
}

/* A bound against a hang on SIGTERM, not a speed: the exporter (an ASan
 * build here) usually exits within 100 ms, also beside 4 busy loops, but
 * once took over 3 s at load 8 (ctest -j2 with a valgrind run beside). */
#define EXIT_MS 20000

/* SIGTERM, and the exit status must be 0 (within EXIT_MS). */
static void exporter_stop(struct exporter *x)
{
    kill(x->pid, SIGTERM);
    int64_t t0 = cw_now_ms();
    int st = cwt_wait(x->pid, EXIT_MS);
    if (cw_now_ms() - t0 > 1000)
        print_message("exporter took %lld ms to exit after SIGTERM\n",
                      (long long)(cw_now_ms() - t0));
    close(x->out);
    assert_true(st >= 0 && WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* A connection to the port, or -1 when nobody listens (yet). */
static int try_dial(int port)
{
    int fd = zoo_socket(AF_INET);
    struct sockaddr_storage ss;
    socklen_t len = zoo_addr(AF_INET, port, &ss);
    if (connect(fd, (struct sockaddr *)&ss, len) == 0)
        return fd;
    close(fd);
    return -1;
}

static int dial_port(int port)
{
    int fd = try_dial(port);
    assert_true(fd >= 0);
    return fd;
}

static void send_str(int fd, const char *s)
{
    size_t n = strlen(s), off = 0;
    while (off < n) {
        ssize_t k = send(fd, s + off, n - off, MSG_NOSIGNAL);
        assert_true(k > 0);
        off += (size_t)k;
    }
}

/* Send a raw request, read the answer until the server closes (bounded);
 * returns the status code and stores the whole answer in buf. */
static int http_raw(int port, const char *req, char *buf, size_t size)
{
    int fd = try_dial(port);
    buf[0] = '\0';
    if (fd < 0)
        return -1;
    send_str(fd, req);
    size_t n = cwt_read_all(fd, buf, size, 10000);
    close(fd);
    int code = 0;
    if (n > 12 && !strncmp(buf, "HTTP/1.1 ", 9))
        code = atoi(buf + 9);
    return code;
}

static int http_get(int port, const char *path, char *buf, size_t size)
{
    char req[1200];   /* room for any path the tests pass (< 1024) */
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    return http_raw(port, req, buf, size);
}

/* The value of the first sample line starting with prefix (a metric
 * name, with or without the start of its labels), or -1. */
static double metric(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, prefix, n))
            continue;
        const char *eol = strchr(p, '\n'), *sp = NULL;
        for (const char *q = p + n; *q && q != eol; q++)
            if (*q == ' ')
                sp = q;
        if (sp)
            return strtod(sp + 1, NULL);
    }
    return -1;
}

static double scrape_metric(int port, const char *prefix)
{
    static char buf[1 << 20];
    assert_int_equal(http_get(port, "/metrics", buf, sizeof buf), 200);
    return metric(buf, prefix);
}

/* ---- planting CLOSE_WAIT sockets held by a named child ---- */

struct plant {
    pid_t pid;
    int ctl;         /* closing it makes the child close its sockets and exit */
    /* cw_now_ms() before the first "x" and after the last; before the
     * first close (the FINs) and once every socket is in CLOSE_WAIT */
    int64_t t_data0, t_data1, t_fin, t_cw;
};

/* n connections accepted by a child named LEAKER; the test's ends send
 * "x" (so that last data and FIN differ by gap_ms or more) and then
 * close, which leaves the child's ends in CLOSE_WAIT. *t_fin gets the
 * time of the FINs (p->t_fin). */
static void plant(struct plant *p, int n, int gap_ms, int64_t *t_fin)
{
    int l = zoo_listen(AF_INET);
    int port = zoo_port_of(l);
    int ctl[2], ready[2];
    assert_int_equal(pipe2(ctl, O_CLOEXEC), 0);
    assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
    p->pid = cwt_fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        /* keep only what this holder needs: an inherited end of an earlier
         * holder's control pipe would keep that one waiting */
        for (int fd = 3; fd < 1024; fd++)
            if (fd != l && fd != ctl[0] && fd != ready[1])
                close(fd);
        prctl(PR_SET_NAME, LEAKER);
        alarm(60);
        int fds[64];
        for (int i = 0; i < n; i++)
            fds[i] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        close(l);
        if (write(ready[1], "r", 1) != 1)
            _exit(1);
        char b;
        while (read(ctl[0], &b, 1) < 0 && errno == EINTR)
            ;
        for (int i = 0; i < n; i++)
            close(fds[i]);
        _exit(0);
    }
    close(ctl[0]);
    close(ready[1]);
    int c[64];
    for (int i = 0; i < n; i++) {
        c[i] = zoo_dial(AF_INET, port, 0);
        if (i == 0)
            p->t_data0 = cw_now_ms();
        send_str(c[i], "x");
    }
    p->t_data1 = cw_now_ms();
    char b;
    assert_int_equal(read(ready[0], &b, 1), 1);
    close(ready[0]);
    close(l);
    cwt_sleep_ms(gap_ms);
    *t_fin = p->t_fin = cw_now_ms();
    for (int i = 0; i < n; i++)
        close(c[i]);
    assert_int_equal(cwt_wait_count(CW_TCP_CLOSE_WAIT, port, 0, n, 3000), n);
    p->t_cw = cw_now_ms();
    p->ctl = ctl[1];
}

static void plant_end(struct plant *p)
{
    close(p->ctl);
    assert_int_equal(WEXITSTATUS(cwt_wait(p->pid, 5000)), 0);
}

/* ---- what the kernel says about the exporter ---- */

static long status_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    assert_non_null(f);
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':')
            v = atol(line + n + 1);
    fclose(f);
    return v;
}

/* Wait until the exporter is back to `fds` descriptors and holds no
 * CLOSE_WAIT socket; fail naming what is left. */
static void assert_exporter_clean(const struct exporter *x, int fds, int timeout_ms)
{
    int64_t end = cw_now_ms() + timeout_ms;
    int n, cw;
    do {
        n = cwt_fd_count_pid(x->pid);
        cw = cwt_count_pid(x->pid, CW_TCP_CLOSE_WAIT);
        if (n == fds && cw == 0)
            return;
        cwt_sleep_ms(20);
    } while (cw_now_ms() < end);
    fail_msg("exporter holds %d descriptors (expected %d) and %d CLOSE_WAIT sockets", n,
             fds, cw);
}

/* ---- tests ---- */

static void test_promtool_textfile(void **state)
{
    (void)state;
    if (system("command -v promtool >/dev/null 2>&1") != 0)
        skip();
    char dir[] = "/tmp/cwt_exporterXXXXXX";
    assert_non_null(mkdtemp(dir));
    struct plant p;
    int64_t t_fin;
    plant(&p, 3, 0, &t_fin);
    char *argv[] = {(char *)CLI, (char *)"exporter", (char *)"--textfile", dir,
                    (char *)"--once", NULL};
    pid_t pid = cwt_spawn3(argv, NULL, NULL, NULL);
    int st = cwt_wait(pid, 10000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(cwt_sh("promtool check metrics <'%s/closewise.prom'", dir), 0);
    assert_int_equal(cwt_sh("grep -q '^closewise_close_wait_sockets{pid=\"%d\",comm=\"%s\"' "
                            "'%s/closewise.prom'", (int)p.pid, LEAKER, dir), 0);
    assert_true(cwt_sh("ls -A '%s' | grep -qv '^closewise.prom$'", dir) != 0);
    /* the container and cgroup labels are the inspector's reading of the
     * holder's cgroup */
    char path[64], line[512], cg[512] = "", ct[128];
    snprintf(path, sizeof path, "/proc/%d/cgroup", (int)p.pid);
    FILE *f = fopen(path, "re");
    assert_non_null(f);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "0::", 3))
            snprintf(cg, sizeof cg, "%.*s", (int)strcspn(line + 3, "\n"), line + 3);
    fclose(f);
    cw_cgroup_container(cg, ct, sizeof ct);
    assert_int_equal(cwt_sh("grep -qF 'closewise_close_wait_sockets{pid=\"%d\",comm=\"%s\","
                            "container=\"%s\",cgroup=\"%s\"} 3' '%s/closewise.prom'",
                            (int)p.pid, LEAKER, ct, cg, dir), 0);
    plant_end(&p);
    cwt_sh("rm -rf '%s'", dir);
}

/* --textfile without --once rewrites the file every interval, leaves no
 * temporary file behind, and stops with 0 on SIGTERM. */
static void test_textfile_loop(void **state)
{
    (void)state;
    char dir[] = "/tmp/cwt_exporterXXXXXX", file[64];
    assert_non_null(mkdtemp(dir));
    snprintf(file, sizeof file, "%s/closewise.prom", dir);
    char *argv[] = {(char *)CLI, (char *)"exporter", (char *)"--textfile", dir,
                    (char *)"--interval", (char *)"100ms", NULL};
    pid_t pid = cwt_spawn3(argv, NULL, NULL, NULL);
    double first = -1, last = -1;
    static char buf[1 << 16];
    /* Three rewrites take 0.3 s; the bound is time, not a count of polls:
     * a snapshot walks every process's descriptors, and on a loaded
     * machine (load average 13) one rewrite has taken over 4.9 s. */
    int64_t t0 = cw_now_ms();
    while ((first < 0 || last < first + 3) && cw_now_ms() - t0 < 20000) {
        cwt_sleep_ms(100);
        int fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        buf[n > 0 ? n : 0] = '\0';
        /* whole files only: every one ends with the last family */
        assert_non_null(strstr(buf, "closewise_snapshot_timestamp_seconds "));
        last = metric(buf, "closewise_snapshots_total");
        if (first < 0)
            first = last;
    }
    print_message("snapshots %g -> %g in %lld ms\n", first, last,
                  (long long)(cw_now_ms() - t0));
    assert_true(first >= 1 && last >= first + 3);
    kill(pid, SIGTERM);
    int st = cwt_wait(pid, EXIT_MS);
    assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_true(cwt_sh("ls -A '%s' | grep -qv '^closewise.prom$'", dir) != 0);
    cwt_sh("rm -rf '%s'", dir);
}

/* --top caps the per-process series; the rest are summed in "other". */
static void test_top_and_other(void **state)
{
    (void)state;
    char dir[] = "/tmp/cwt_exporterXXXXXX";
    assert_non_null(mkdtemp(dir));
    struct plant small, big;
    int64_t t_fin;
    plant(&small, 2, 0, &t_fin);
    plant(&big, 3, 0, &t_fin);
    char *argv[] = {(char *)CLI, (char *)"exporter", (char *)"--textfile", dir,
                    (char *)"--once", (char *)"--top", (char *)"1", (char *)"--netns",
                    (char *)"self", NULL};
    pid_t pid = cwt_spawn3(argv, NULL, NULL, NULL);
    int st = cwt_wait(pid, 10000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    const char *f = "closewise_close_wait_sockets{pid=";
    assert_int_equal(cwt_sh("grep -q '^%s\"%d\",.*} 3$' '%s/closewise.prom'", f, (int)big.pid,
                            dir), 0);
    assert_int_equal(cwt_sh("grep -q '^%s\"other\",comm=\"other\",.*} 2$' '%s/closewise.prom'",
                            f, dir), 0);
    assert_true(cwt_sh("grep -q '^%s\"%d\"' '%s/closewise.prom'", f, (int)small.pid, dir) != 0);
    assert_int_equal(cwt_sh("grep -c '^%s' '%s/closewise.prom' | grep -qx 2", f, dir), 0);
    plant_end(&small);
    plant_end(&big);
    cwt_sh("rm -rf '%s'", dir);
}

static void test_promtool_http(void **state)
{
    (void)state;
    if (system("command -v promtool >/dev/null 2>&1") != 0)
        skip();
    struct exporter x;
    const char *args[] = {"--interval", "200ms", NULL};
    exporter_start(&x, args);
    assert_int_equal(cwt_sh("curl -sf http://127.0.0.1:%d/metrics | promtool check metrics",
                            x.port), 0);
    exporter_stop(&x);
}

/* One scrape into buf; returns the snapshot's time on cw_now_ms()'s
 * clock. The ages in it are as of that moment, which under load can be
 * an interval or more before the scrape (closewise_snapshot_timestamp_
 * seconds is wall-clock time, to the millisecond). */
static int64_t scrape_snapshot(int port, char *buf, size_t size)
{
    assert_int_equal(http_get(port, "/metrics", buf, size), 200);
    double ts = metric(buf, "closewise_snapshot_timestamp_seconds");
    assert_true(ts > 0);
    int64_t mono = cw_now_ms();
    struct timespec w;
    clock_gettime(CLOCK_REALTIME, &w);
    int64_t wall = (int64_t)w.tv_sec * 1000 + w.tv_nsec / 1000000;
    return (int64_t)(ts * 1000 + 0.5) - (wall - mono);
}

/* The oldest-age bounds of pid's series in one scrape, and the true age
 * range at the snapshot's moment t: p's socket entered CLOSE_WAIT between
 * p->t_fin and p->t_cw. tcp_info counts in jiffies: 15 ms of slack. */
static void age_bounds(int port, const struct plant *p, double *lo, double *hi)
{
    static char buf[1 << 20];
    int64_t t = scrape_snapshot(port, buf, sizeof buf);
    char prefix[128];
    snprintf(prefix, sizeof prefix, "closewise_close_wait_oldest_seconds{pid=\"%d\"",
             (int)p->pid);
    *lo = metric(buf, prefix);
    snprintf(prefix, sizeof prefix, "closewise_close_wait_oldest_max_seconds{pid=\"%d\"",
             (int)p->pid);
    *hi = metric(buf, prefix);
    double truth_min = (t - p->t_cw) / 1000.0, truth_max = (t - p->t_fin) / 1000.0;
    print_message("pid %d: age bounds [%.3f, %.3f], truth in [%.3f, %.3f] (snapshot "
                  "%lld ms before the scrape)\n", (int)p->pid, *lo, *hi, truth_min,
                  truth_max, (long long)(cw_now_ms() - t));
    assert_true(*lo >= 0 && *hi >= 0);
    assert_true(*lo <= truth_max + 0.015);
    assert_true(*hi >= truth_min - 0.015);
}

/* Without BPF the bounds contain the true age. A socket stuck before the
 * exporter started gets tcp_info's: lastack <= age <= lastrcv, as far
 * apart as its data and its FIN (a second or more), plus the dump's
 * duration. One that entered
 * CLOSE_WAIT later is bounded by the snapshots before and after: as far
 * apart as two snapshots (100 ms, later under load), less than its own
 * data-to-FIN gap (1.5 s or more), which tcp_info would have given. */
static void test_age_bounds(void **state)
{
    (void)state;
    struct plant before, after;
    int64_t t_fin;
    plant(&before, 1, 1000, &t_fin);
    struct exporter x;
    const char *args[] = {"--interval", "100ms", "--no-bpf", NULL};
    exporter_start(&x, args);
    assert_true(scrape_metric(x.port, "closewise_close_wait_exact_enabled") == 0);
    plant(&after, 1, 1500, &t_fin);
    double lo, hi;
    age_bounds(x.port, &before, &lo, &hi);
    /* the data-to-FIN gap, as the test saw it (two jiffies of slack), and
     * the exporter's first dump, as long as it took (the kernel's
     * tcp_info is from some moment within it): room for a loaded one */
    double gap_min = (before.t_fin - before.t_data1) / 1000.0 - 0.02;
    double gap_max = (before.t_cw - before.t_data0) / 1000.0 + 0.02;
    print_message("width %.3f, data-to-FIN gap in [%.3f, %.3f]\n", hi - lo, gap_min,
                  gap_max);
    assert_true(hi - lo >= gap_min && hi - lo <= gap_max + 1.0);
    /* a snapshot after the second FIN: its series appears */
    char prefix[128];
    snprintf(prefix, sizeof prefix, "closewise_close_wait_oldest_seconds{pid=\"%d\"",
             (int)after.pid);
    int64_t end = cw_now_ms() + 20000;
    while (scrape_metric(x.port, prefix) < 0 && cw_now_ms() < end)
        cwt_sleep_ms(20);
    age_bounds(x.port, &after, &lo, &hi);
    gap_min = (after.t_fin - after.t_data1) / 1000.0 - 0.02;
    print_message("width %.3f, tcp_info's would be %.3f or more\n", hi - lo, gap_min);
    assert_true(hi - lo < gap_min);
    plant_end(&before);
    plant_end(&after);
    exporter_stop(&x);
}

/* With BPF, a socket that enters CLOSE_WAIT 3 s after the exporter
 * started has its exact age: within 100 ms of the truth, and both bounds
 * equal. */
static void test_exact_age(void **state)
{
    (void)state;
    struct exporter x;
    const char *args[] = {"--interval", "50ms", NULL};
    exporter_start(&x, args);
    if (scrape_metric(x.port, "closewise_close_wait_exact_enabled") != 1) {
        print_message("SKIP: the BPF program could not load here (see the exporter's "
                      "message above); exact ages untested\n");
        exporter_stop(&x);
        skip();
    }
    cwt_sleep_ms(3000);
    struct plant p;
    int64_t t_fin;
    plant(&p, 1, 1000, &t_fin);
    cwt_sleep_ms(1500);
    char prefix[128];
    snprintf(prefix, sizeof prefix, "closewise_close_wait_oldest_seconds{pid=\"%d\"",
             (int)p.pid);
    /* both and the snapshot's time from one scrape */
    static char buf[1 << 20];
    int64_t t = scrape_snapshot(x.port, buf, sizeof buf);
    double lo = metric(buf, prefix);
    snprintf(prefix, sizeof prefix, "closewise_close_wait_oldest_max_seconds{pid=\"%d\"",
             (int)p.pid);
    double hi = metric(buf, prefix);
    double truth_min = (t - p.t_cw) / 1000.0, truth_max = (t - p.t_fin) / 1000.0;
    print_message("exact age %.3f (max %.3f), truth in [%.3f, %.3f]\n", lo, hi, truth_min,
                  truth_max);
    assert_true(lo == hi);
    assert_true(lo >= truth_min - 0.1 && lo <= truth_max + 0.1);
    assert_true(scrape_metric(x.port, "closewise_close_wait_exact_sockets") == 1);
    plant_end(&p);
    exporter_stop(&x);
}

/* Client ends from an ephemeral port to a server port are counted per
 * destination, their TIME_WAIT too; a close() with unread input shows in
 * the kernel's TCPAbortOnClose (this test's namespace starts at 0). */
static void test_destinations_and_aborts(void **state)
{
    (void)state;
    struct exporter x;
    const char *args[] = {"--interval", "50ms", "--no-bpf", NULL};
    exporter_start(&x, args);
    int l = zoo_socket(AF_INET), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_storage ss;
    socklen_t len = zoo_addr(AF_INET, 4444, &ss);   /* below ip_local_port_range */
    assert_int_equal(bind(l, (struct sockaddr *)&ss, len), 0);
    assert_int_equal(listen(l, 16), 0);
    int c[3], a[3];
    for (int i = 0; i < 3; i++) {
        c[i] = zoo_dial(AF_INET, 4444, 0);
        a[i] = zoo_accept(l);
    }
    cwt_sleep_ms(200);
    const char *used = "closewise_ephemeral_ports_used{destination=\"127.0.0.1:4444\"}";
    const char *tw = "closewise_time_wait_sockets{destination=\"127.0.0.1:4444\"}";
    assert_true(scrape_metric(x.port, used) == 3);
    assert_true(scrape_metric(x.port, tw) == -1);
    double aborts0 = scrape_metric(x.port, "closewise_tcp_aborts_total{reason=\"on_close\"}");
    /* clients close first: TIME_WAIT on their side */
    for (int i = 0; i < 3; i++)
        close(c[i]);
    assert_int_equal(cwt_wait_count(CW_TCP_CLOSE_WAIT, 4444, 0, 3, 3000), 3);
    /* the server closes one with unread input: a RST, TCPAbortOnClose */
    int u = zoo_dial(AF_INET, 4444, 0), ua = zoo_accept(l);
    send_str(u, "unread");
    cwt_sleep_ms(50);
    close(ua);
    close(u);
    for (int i = 0; i < 3; i++)
        close(a[i]);
    close(l);
    cwt_sleep_ms(300);
    assert_true(scrape_metric(x.port, tw) == 3);
    assert_true(scrape_metric(x.port, used) == 3);
    double aborts1 = scrape_metric(x.port, "closewise_tcp_aborts_total{reason=\"on_close\"}");
    print_message("TCPAbortOnClose %g -> %g\n", aborts0, aborts1);
    assert_true(aborts0 >= 0 && aborts1 == aborts0 + 1);
    exporter_stop(&x);
}

/* ---- resets per process (the resets collector) ---- */

/* The container label the exporter derives for a process of our own
 * cgroup (the helper is our child). */
static void own_container(char *ct, size_t size)
{
    char line[512], cg[512] = "";
    FILE *f = fopen("/proc/self/cgroup", "re");
    assert_non_null(f);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "0::", 3))
            snprintf(cg, sizeof cg, "%.*s", (int)strcspn(line + 3, "\n"), line + 3);
    fclose(f);
    cw_cgroup_container(cg, ct, size);
}

/* resets_helper closes one connection with unread input and one with
 * SO_LINGER {1,0} (and one gracefully): each RST its close() sent is
 * counted once, under its name and reason; the text passes promtool.
 * With --no-bpf the family is absent and the _bpf_enabled gauge says 0. */
static void test_resets_counter(void **state)
{
    (void)state;
    struct exporter x;
    const char *off[] = {"--interval", "100ms", "--no-bpf", NULL};
    exporter_start(&x, off);
    static char buf[1 << 20];
    assert_int_equal(http_get(x.port, "/metrics", buf, sizeof buf), 200);
    assert_true(metric(buf, "closewise_close_resets_bpf_enabled") == 0);
    assert_null(strstr(buf, "\nclosewise_close_resets_total"));
    assert_null(strstr(buf, "TYPE closewise_close_resets_total"));
    exporter_stop(&x);

    const char *on[] = {"--interval", "100ms", NULL};
    exporter_start(&x, on);
    if (scrape_metric(x.port, "closewise_close_resets_bpf_enabled") != 1) {
        exporter_stop(&x);
        print_message("SKIP: the resets BPF program could not load here; the counter is "
                      "untested\n");
        skip();
    }
    char *argv[] = {(char *)CW_BUILD_DIR "/tests/resets_helper", NULL};
    int in, out;
    char line[256];
    pid_t h = cwt_spawn3(argv, &in, &out, NULL);
    assert_true(cwt_read_line(out, line, sizeof line, 5000) > 0);   /* ready */
    assert_int_equal(write(in, "go\n", 3), 3);
    while (cwt_read_line(out, line, sizeof line, 5000) > 0 && strncmp(line, "done", 4))
        ;
    assert_int_equal(strncmp(line, "done", 4), 0);
    close(in);
    assert_true(WIFEXITED(cwt_wait(h, 5000)));
    close(out);
    char ct[128], unread[256], linger0[256], graceful[256];
    own_container(ct, sizeof ct);
#define RESETS_SERIES "closewise_close_resets_total{comm=\"resets_helper\",container=\"%s\"," \
                      "reason=\"%s\"}"
    snprintf(unread, sizeof unread, RESETS_SERIES, ct, "unread");
    snprintf(linger0, sizeof linger0, RESETS_SERIES, ct, "linger0");
    snprintf(graceful, sizeof graceful, "closewise_close_resets_total{comm=\"resets_helper\"");
    /* polled every 200 ms, rendered every 100 ms */
    double u = -1, l = -1;
    for (int i = 0; i < 40 && (u < 1 || l < 1); i++) {
        cwt_sleep_ms(100);
        assert_int_equal(http_get(x.port, "/metrics", buf, sizeof buf), 200);
        u = metric(buf, unread);
        l = metric(buf, linger0);
    }
    print_message("resets counted: unread %g, linger0 %g\n", u, l);
    assert_true(u == 1 && l == 1);
    /* two series of resets_helper, no third (the graceful close) */
    int series = 0;
    for (const char *p = strstr(buf, graceful); p; p = strstr(p + 1, graceful))
        series++;
    assert_int_equal(series, 2);
    if (system("command -v promtool >/dev/null 2>&1") == 0) {
        char tmp[] = "/tmp/cwt_resetsXXXXXX";
        int fd = mkstemp(tmp);
        assert_true(fd >= 0);
        const char *body = strstr(buf, "\r\n\r\n");
        assert_non_null(body);
        body += 4;
        assert_int_equal(write(fd, body, strlen(body)), (ssize_t)strlen(body));
        close(fd);
        assert_int_equal(cwt_sh("promtool check metrics <'%s'", tmp), 0);
        unlink(tmp);
    }
    exporter_stop(&x);
}

static void test_bad_requests(void **state)
{
    (void)state;
    struct exporter x;
    const char *args[] = {"--interval", "1s", "--request-timeout", "500ms", NULL};
    exporter_start(&x, args);
    cwt_sleep_ms(100);
    int fds = cwt_fd_count_pid(x.pid);
    static char buf[1 << 20];
    assert_int_equal(http_get(x.port, "/nope", buf, sizeof buf), 404);
    assert_int_equal(http_get(x.port, "/metrics?x=1", buf, sizeof buf), 200);
    assert_int_equal(http_raw(x.port, "HEAD /metrics HTTP/1.0\r\n\r\n", buf, sizeof buf), 200);
    assert_null(strstr(buf, "# HELP"));
    assert_int_equal(http_raw(x.port, "GET /metrics HTTP/1.1\r\n\r\n", buf, sizeof buf), 400);
    assert_int_equal(http_raw(x.port, "GET /metrics HTTP/1.1\r\nHost x\r\n\r\n", buf, sizeof buf), 400);
    assert_int_equal(http_raw(x.port, "GET metrics HTTP/1.1\r\n\r\n", buf, sizeof buf), 400);
    assert_int_equal(http_raw(x.port, "GET /metrics HTTP/2.0\r\n\r\n", buf, sizeof buf), 400);
    assert_int_equal(http_raw(x.port, "POST /metrics HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello",
                              buf, sizeof buf), 400);
    assert_int_equal(http_raw(x.port, "DELETE /metrics HTTP/1.0\r\n\r\n", buf, sizeof buf), 405);
    /* oversized: 64 KiB of headers without an end; 400, then EOF */
    static char big[65536 + 64];
    strcpy(big, "GET /metrics HTTP/1.1\r\nHost: a\r\n");
    size_t n = strlen(big);
    while (n + 16 < sizeof big - 8) {
        memcpy(big + n, "X-Pad: aaaaaaa\r\n", 16);
        n += 16;
    }
    big[n] = '\0';
    assert_int_equal(http_raw(x.port, big, buf, sizeof buf), 400);
    /* idle: 408 after the request timeout, then EOF */
    int fd = dial_port(x.port);
    int64_t t = cw_now_ms();
    size_t got = cwt_read_all(fd, buf, sizeof buf, 5000);
    assert_true(cw_now_ms() - t < 3000);
    assert_true(got > 12 && !strncmp(buf, "HTTP/1.1 408", 12));
    close(fd);
    assert_exporter_clean(&x, fds, 3000);
    exporter_stop(&x);
}

/* Scrapers that close first mid-request, reset, or take the answer and
 * vanish: the exporter keeps nothing. */
static void test_scrapers_leave(void **state)
{
    (void)state;
    struct exporter x;
    const char *args[] = {"--interval", "1s", NULL};
    exporter_start(&x, args);
    cwt_sleep_ms(100);
    int fds = cwt_fd_count_pid(x.pid);
    for (int round = 0; round < 20; round++) {
        int a = dial_port(x.port), b = dial_port(x.port), c = dial_port(x.port);
        send_str(a, "GET /metr");            /* half a request, then FIN */
        send_str(b, "GET /metrics HTTP/1.1");
        send_str(c, "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
        close(a);
        struct linger lg = {1, 0};
        setsockopt(b, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(b);                            /* RST */
        cwt_sleep_ms(5);
        close(c);                            /* FIN before reading the answer */
    }
    assert_exporter_clean(&x, fds, 5000);
    exporter_stop(&x);
}

static void test_many_scrapers(void **state)
{
    (void)state;
    enum { N = 1000 };
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_max < N + 200)
        skip();
    struct rlimit want = {N + 200, rl.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &want), 0);
    struct exporter x;
    const char *args[] = {"--interval", "1s", NULL};
    exporter_start(&x, args);
    cwt_sleep_ms(100);
    int fds = cwt_fd_count_pid(x.pid);
    static char buf[1 << 20];
    assert_int_equal(http_get(x.port, "/metrics", buf, sizeof buf), 200);
    long rss0 = status_kib(x.pid, "VmRSS");
    double snaps0 = scrape_metric(x.port, "closewise_snapshots_total");
    int64_t t_start = cw_now_ms();
    static int s[N];
    static size_t got[N];
    for (int i = 0; i < N; i++) {
        s[i] = dial_port(x.port);
        got[i] = 0;
        send_str(s[i], "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
    }
    /* read every answer to its end (the exporter's FIN) */
    int open_n = N, ok = 0;
    int64_t end = cw_now_ms() + 60000;
    int most = 0;
    while (open_n && cw_now_ms() < end) {
        int now_fds = cwt_fd_count_pid(x.pid);
        most = now_fds > most ? now_fds : most;
        for (int i = 0; i < N; i++) {
            if (s[i] < 0)
                continue;
            char b[65536];
            ssize_t k = recv(s[i], b, sizeof b, MSG_DONTWAIT);
            if (k > 0) {
                if (!got[i] && !strncmp(b, "HTTP/1.1 200", 12))
                    ok++;
                got[i] += (size_t)k;
            } else if (k == 0 || (errno != EAGAIN && errno != EINTR)) {
                close(s[i]);
                s[i] = -1;
                open_n--;
            }
        }
        cwt_sleep_ms(2);
    }
    long hwm = status_kib(x.pid, "VmHWM"), rss1 = status_kib(x.pid, "VmRSS");
    /* however many scrapes, one snapshot per interval (1 s) */
    int scrapes = N;
    while (cw_now_ms() - t_start < 2500) {
        scrape_metric(x.port, "closewise_snapshots_total");
        scrapes++;
        cwt_sleep_ms(2);   /* each leaves a TIME_WAIT: stay far from port exhaustion */
    }
    double snaps1 = scrape_metric(x.port, "closewise_snapshots_total");
    double secs = (cw_now_ms() - t_start) / 1000.0;
    print_message("%g snapshots for %d scrapes in %.1f s\n", snaps1 - snaps0, scrapes, secs);
    assert_true(snaps1 - snaps0 <= secs + 1);
    for (int i = 0; i < N; i++)
        if (s[i] >= 0)
            close(s[i]);
    print_message("%d/%d answered; exporter RSS %ld -> %ld KiB, peak %ld KiB\n", ok, N,
                  rss0, rss1, hwm);
    assert_int_equal(ok, N);
    print_message("at most %d descriptors open (%d at rest, cap 64 connections)\n", most, fds);
    assert_true(most <= fds + 64);
#if defined(__SANITIZE_ADDRESS__)
    /* ASan keeps freed memory in quarantine: only a coarse bound */
    assert_true(rss1 - rss0 < 16384);
#else
    assert_true(rss1 - rss0 < 4096);   /* 64 connections at most, 4.6 KiB each */
    assert_true(hwm < 20 * 1024);
#endif
    assert_exporter_clean(&x, fds, 5000);
    exporter_stop(&x);
    setrlimit(RLIMIT_NOFILE, &rl);
}

/* ---- a real Prometheus server ---- */

/* Query Prometheus' HTTP API; the first sample's value, or -1 when the
 * result is empty or unreadable. */
static double prom_query(int port, const char *query)
{
    char path[1024], enc[768];
    size_t o = 0;
    for (const char *q = query; *q && o + 4 < sizeof enc; q++) {
        unsigned char c = (unsigned char)*q;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '_')
            enc[o++] = (char)c;
        else
            o += (size_t)snprintf(enc + o, sizeof enc - o, "%%%02X", c);
    }
    enc[o] = '\0';
    snprintf(path, sizeof path, "/api/v1/query?query=%s", enc);
    static char buf[65536];
    if (http_get(port, path, buf, sizeof buf) != 200)
        return -1;
    char *v = strstr(buf, "\"value\":[");
    if (!v || !(v = strstr(v, ",\"")))
        return -1;
    return strtod(v + 2, NULL);
}

static double prom_wait(int port, const char *query, double want, int timeout_ms)
{
    int64_t end = cw_now_ms() + timeout_ms;
    double v;
    do {
        v = prom_query(port, query);
        if (v == want)
            return v;
        cwt_sleep_ms(250);
    } while (cw_now_ms() < end);
    return v;
}

static void test_prometheus(void **state)
{
    (void)state;
    if (access("/usr/bin/prometheus", X_OK) != 0) {
        print_message("SKIP: /usr/bin/prometheus is not installed (Debian package "
                      "prometheus; scripts/deps.sh test)\n");
        skip();
    }
    struct exporter x;
    const char *args[] = {"--interval", "500ms", NULL};
    exporter_start(&x, args);
    char dir[] = "/tmp/cwt_promXXXXXX";
    assert_non_null(mkdtemp(dir));
    char cfg[256], data[256], web[64], cfgarg[300], dataarg[300];
    snprintf(cfg, sizeof cfg, "%s/prometheus.yml", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    FILE *f = fopen(cfg, "we");
    assert_non_null(f);
    fprintf(f, "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
               "scrape_configs:\n  - job_name: closewise\n    static_configs:\n"
               "      - targets: ['127.0.0.1:%d']\n", x.port);
    fclose(f);
    int pport = cwt_free_port();
    snprintf(web, sizeof web, "--web.listen-address=127.0.0.1:%d", pport);
    snprintf(cfgarg, sizeof cfgarg, "--config.file=%s", cfg);
    snprintf(dataarg, sizeof dataarg, "--storage.tsdb.path=%s", data);
    char *pargv[] = {(char *)"/usr/bin/prometheus", cfgarg, dataarg, web,
                     (char *)"--log.level=warn", NULL};
    pid_t prom = cwt_spawn3(pargv, NULL, NULL, NULL);

    struct plant p;
    int64_t t_fin;
    plant(&p, 25, 0, &t_fin);
    const char *q = "sum(closewise_close_wait_sockets{comm=\"" LEAKER "\"}) or vector(0)";
    double v = prom_wait(pport, q, 25, 30000);
    print_message("prometheus: %s = %g\n", q, v);
    assert_true(v == 25);
    /* the exporter names the holder */
    char pq[160];
    snprintf(pq, sizeof pq, "closewise_close_wait_sockets{comm=\"%s\",pid=\"%d\"}", LEAKER,
             (int)p.pid);
    assert_true(prom_query(pport, pq) == 25);
    plant_end(&p);
    v = prom_wait(pport, q, 0, 30000);
    print_message("prometheus after close: %g\n", v);
    assert_true(v == 0);
    assert_true(prom_query(pport, "closewise_close_wait_closed_total") >= 25);

    kill(prom, SIGTERM);
    int st = cwt_wait(prom, 10000);
    assert_true(st >= 0);
    exporter_stop(&x);
    cwt_sh("rm -rf '%s'", dir);
}

/* The shipped alert rules load, and fire when (and only when) they should. */
static void test_rules(void **state)
{
    (void)state;
    if (system("command -v promtool >/dev/null 2>&1") != 0)
        skip();
    assert_int_equal(cwt_sh("promtool check rules '%s/contrib/closewise.rules.yml' >/dev/null",
                            CW_SOURCE_DIR), 0);
    assert_int_equal(cwt_sh("cd '%s/contrib' && promtool test rules closewise.rules.test.yml "
                            ">/dev/null", CW_SOURCE_DIR), 0);
}

/* `closewise watch --json`: JSON Lines, one event each (appeared, leak,
 * closed), with the age exact when BPF stamped the socket. */
static void test_watch_json(void **state)
{
    (void)state;
    int l = zoo_listen(AF_INET);
    char port[16];
    snprintf(port, sizeof port, "%d", zoo_port_of(l));
    close(l);
    char *argv[] = {(char *)CLI, (char *)"watch", (char *)"--json", (char *)"--netns",
                    (char *)"self", (char *)"--interval", (char *)"100ms",
                    (char *)"--older-than", (char *)"500ms", (char *)"--count",
                    (char *)"40", NULL};
    int out;
    pid_t w = cwt_spawn3(argv, NULL, &out, NULL);
    cwt_sleep_ms(300);
    struct plant p;
    int64_t t_fin;
    plant(&p, 1, 0, &t_fin);
    char line[2048], want[64];
    snprintf(want, sizeof want, "\"pid\":%d,", (int)p.pid);
    const char *events[] = {"\"event\":\"appeared\"", "\"event\":\"leak\"",
                            "\"event\":\"closed\""};
    for (int e = 0; e < 3; e++) {
        if (e == 2)
            plant_end(&p);
        int n = cwt_read_line(out, line, sizeof line, 5000);
        assert_true(n > 0);
        assert_true(line[0] == '{' && line[n - 1] == '}');
        assert_non_null(strstr(line, events[e]));
        assert_non_null(strstr(line, want));
        assert_non_null(strstr(line, "\"comm\":\"" LEAKER "\""));
        assert_non_null(strstr(line, "\"age_min_s\":"));
        if (e == 1)
            assert_non_null(strstr(line, "\"explain\":\""));
    }
    kill(w, SIGTERM);
    int st = cwt_wait(w, 3000);
    assert_true(st >= 0 && WIFEXITED(st));
    close(out);
}

/* cw_diag_dump_each() (the exporter's streamed dump) hands over exactly
 * the sockets cw_diag_dump() returns, with their tcp_info. */
struct each_seen {
    uint64_t cookie[64];
    int n, with_info;
};

static void on_each(const struct cw_sock *s, void *arg)
{
    struct each_seen *e = arg;
    if (e->n < 64)
        e->cookie[e->n++] = s->cookie;
    e->with_info += s->has_info;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_dump_each(void **state)
{
    (void)state;
    struct plant p;
    int64_t t_fin;
    plant(&p, 5, 0, &t_fin);
    cw_diag *d = NULL;
    assert_int_equal(cw_diag_open(&d), CW_OK);
    struct cw_diag_filter f;
    cw_diag_filter_init(&f);
    f.states = CW_STATE_BIT(CW_TCP_CLOSE_WAIT);
    f.want_info = 1;
    struct cw_sock *v = NULL;
    size_t n = 0;
    assert_int_equal(cw_diag_dump(d, &f, &v, &n), 5);
    struct each_seen e = {.n = 0};
    assert_int_equal(cw_diag_dump_each(d, &f, on_each, &e), CW_OK);
    assert_int_equal(e.n, 5);
    assert_int_equal(e.with_info, 5);
    qsort(e.cookie, (size_t)e.n, sizeof e.cookie[0], u64_cmp);
    for (size_t i = 0; i < n; i++)
        assert_true(e.cookie[i] == v[i].cookie);
    assert_int_equal(cw_diag_dump_each(d, &f, NULL, NULL), CW_EINVAL);
    free(v);
    cw_diag_close(&d);
    plant_end(&p);
}

/* ---- a holder in a network namespace of its own ---- */

#define NS_LEAKER "cwt_nsleaker"

/* The child: a fresh namespace (unshare), loopback up, n connections to
 * itself whose client halves are shut, leaving the accepted ends in
 * CLOSE_WAIT. No cmocka here: any failure is _exit(1). */
static void ns_child(int n, int ctl, int ready)
{
    alarm(60);
    prctl(PR_SET_NAME, NS_LEAKER);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    int u = unshare(CLONE_NEWNET) == 0 ? socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0) : -1;
    if (u < 0 || ioctl(u, SIOCGIFFLAGS, &ifr) < 0)
        _exit(2);
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(u, SIOCSIFFLAGS, &ifr) < 0)
        _exit(2);
    close(u);
    int l = zoo_listen(AF_INET), port = zoo_port_of(l);
    for (int i = 0; i < n; i++) {
        int c = zoo_dial(AF_INET, port, 0);
        int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        char b;
        struct pollfd pf = {.fd = s, .events = POLLIN};
        if (s < 0 || shutdown(c, SHUT_WR) < 0 || poll(&pf, 1, 3000) != 1 ||
            recv(s, &b, 1, MSG_PEEK) != 0)
            _exit(1);
    }
    if (write(ready, "r", 1) != 1)
        _exit(1);
    char b;
    while (read(ctl, &b, 1) < 0 && errno == EINTR)
        ;
    _exit(0);
}

/* 0 when the child is ready, -1 when namespaces cannot be made here. */
static int ns_plant(struct plant *p, int n)
{
    int ctl[2], ready[2];
    assert_int_equal(pipe2(ctl, O_CLOEXEC), 0);
    assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
    p->pid = cwt_fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        close(ctl[1]);
        close(ready[0]);
        ns_child(n, ctl[0], ready[1]);
    }
    close(ctl[0]);
    close(ready[1]);
    p->ctl = ctl[1];
    char b;
    ssize_t r = read(ready[0], &b, 1);
    close(ready[0]);
    if (r == 1)
        return 0;
    close(p->ctl);
    int st = cwt_wait(p->pid, 5000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    return -1;
}

/* The CLOSE_WAIT series of pid in one --textfile --once run with args.
 * Every namespace of the machine is in view here, with whatever other
 * tests (and other users) hold in CLOSE_WAIT: under the default --top 20
 * the holder's 3 sockets may rank below 20 bigger holders and be summed
 * in pid="other", so every process gets its own series. */
static int ns_series(const char *netns, pid_t holder, int n)
{
    char dir[] = "/tmp/cwt_exporterXXXXXX";
    assert_non_null(mkdtemp(dir));
    char *argv[] = {(char *)CLI, (char *)"exporter", (char *)"--textfile", dir, (char *)"--once",
                    (char *)"--top", (char *)"10000",
                    (char *)(netns ? "--netns" : NULL), (char *)netns, NULL};
    pid_t pid = cwt_spawn3(argv, NULL, NULL, NULL);
    int st = cwt_wait(pid, 10000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    int found = cwt_sh("grep -q '^closewise_close_wait_sockets{pid=\"%d\",comm=\"%s\",.*} %d$' "
                       "'%s/closewise.prom'", (int)holder, NS_LEAKER, n, dir) == 0;
    cwt_sh("rm -rf '%s'", dir);
    return found;
}

/* By default (privileged) and with --netns all or PID, the exporter sees
 * a process in another namespace; with --netns self it does not. */
static void test_netns(void **state)
{
    (void)state;
    struct plant p;
    if (ns_plant(&p, 3) < 0) {
        print_message("skipped: cannot unshare(CLONE_NEWNET) here\n");
        skip();
    }
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)p.pid);
    int def = ns_series(NULL, p.pid, 3), all = ns_series("all", p.pid, 3);
    int by_pid = ns_series(pid, p.pid, 3), self = ns_series("self", p.pid, 3);
    plant_end(&p);
    assert_true(def && all && by_pid && !self);
}

/* ---- exact ages in `ls --json` through the exporter's pinned map ---- */

#define PIN_DIR "/sys/fs/bpf/closewise"
#define PIN PIN_DIR "/cw_entry"

/* A bpffs at /sys/fs/bpf of this test's own mount namespace, so that
 * nothing the test pins can outlive it. 0, or -1 when not permitted. */
static int private_bpffs(void)
{
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return -1;
    return mount("bpf", "/sys/fs/bpf", "bpf", 0, NULL);
}

/* An exporter (100 ms interval) that pinned its map in a private bpffs;
 * the test is skipped when either is impossible here. */
static void exporter_start_pinned(struct exporter *x)
{
    if (private_bpffs() < 0) {
        print_message("skipped: cannot mount a private bpffs (%s)\n", strerror(errno));
        skip();
    }
    const char *args[] = {"--interval", "100ms", NULL};
    exporter_start(x, args);
    for (int i = 0; i < 40 && access(PIN, F_OK) < 0; i++)
        cwt_sleep_ms(50);
    if (access(PIN, F_OK) < 0) {
        exporter_stop(x);
        umount("/sys/fs/bpf");
        print_message("skipped: the exporter's BPF program did not load here (no pin)\n");
        skip();
    }
}

/* The "age_exact_ms" of `ls --json` for pid's CLOSE_WAIT socket, -1 when
 * it reports bounds, -2 when the socket is missing. */
static long long ls_exact_ms(pid_t pid)
{
    char cmd[256], out[8192];
    snprintf(cmd, sizeof cmd, "%s ls --json --netns self --state close-wait --pid %d", CLI,
             (int)pid);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    assert_int_equal(pclose(f), 0);
    const char *e = strstr(out, "\"age_exact_ms\":");
    if (e) {
        assert_non_null(strstr(out, "\"age_source\":\"bpf\""));
        assert_non_null(strstr(out, "\"entered_close_wait_at\":\""));
        return atoll(e + 15);
    }
    if (strstr(out, "\"age_source\":\"bounds\""))
        return -1;
    return -2;
}

/* While the exporter runs, its map is pinned and `ls --json` gives the
 * exact age of a socket planted after it started (within 100 ms of the
 * truth); after SIGTERM nothing stays pinned and ls falls back to bounds. */
static void test_ls_exact(void **state)
{
    (void)state;
    struct exporter x;
    exporter_start_pinned(&x);
    cwt_sleep_ms(300);
    struct plant p;
    int64_t t_fin;
    plant(&p, 1, 0, &t_fin);
    cwt_sleep_ms(700);
    int64_t t0 = cw_now_ms();
    long long age = ls_exact_ms(p.pid);
    int64_t t1 = cw_now_ms();
    print_message("ls age_exact_ms %lld, truth %lld..%lld\n", age, (long long)(t0 - t_fin),
                  (long long)(t1 - t_fin));
    assert_true(age >= t0 - t_fin - 100 && age <= t1 - t_fin + 100);
    exporter_stop(&x);
    assert_true(access(PIN, F_OK) < 0 && access(PIN_DIR, F_OK) < 0);
    assert_int_equal(ls_exact_ms(p.pid), -1);
    plant_end(&p);
    umount("/sys/fs/bpf");
}

/* One sample of `closewise watch` (JSON Lines with json) for this
 * namespace, into out. */
static void watch_once(int json, char *out, size_t size)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "%s watch %s--netns self --count 1 2>/dev/null", CLI,
             json ? "--json " : "");
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, size - 1, f);
    out[n] = '\0';
    assert_int_equal(pclose(f), 0);
}

static double json_num(const char *line, const char *key)
{
    const char *p = strstr(line, key);
    return p ? strtod(p + strlen(key), NULL) : -1;
}

/* watch reads a running exporter's pinned map: a socket that entered
 * CLOSE_WAIT before watch started (which watch's own program cannot have
 * seen) gets its exact age, within 100 ms of the truth, in JSON and in
 * words; once the exporter is gone, the same socket gets bounds that
 * contain the truth, and says so. */
static void test_watch_exact(void **state)
{
    (void)state;
    struct exporter x;
    exporter_start_pinned(&x);
    struct plant p;
    int64_t t_fin;
    plant(&p, 1, 500, &t_fin);
    cwt_sleep_ms(700);
    static char out[8192];
    int64_t t0 = cw_now_ms();
    watch_once(1, out, sizeof out);
    int64_t t1 = cw_now_ms();
    print_message("watch: %s", out);
    assert_non_null(strstr(out, "\"event\":\"appeared\""));
    assert_non_null(strstr(out, "\"age_source\":\"bpf\""));
    assert_non_null(strstr(out, "\"age_exact\":true"));
    assert_non_null(strstr(out, "\"entered_close_wait_at\":\""));
    double lo = json_num(out, "\"age_min_s\":"), hi = json_num(out, "\"age_max_s\":");
    assert_true(lo == hi);
    assert_true(lo * 1000 >= t0 - t_fin - 100 && lo * 1000 <= t1 - t_fin + 100);
    watch_once(0, out, sizeof out);
    assert_non_null(strstr(out, " in CLOSE_WAIT for "));
    assert_non_null(strstr(out, " since "));
    assert_null(strstr(out, "at least"));
    exporter_stop(&x);
    /* no exporter, no pin: the socket predates watch's own program */
    t0 = cw_now_ms();
    watch_once(1, out, sizeof out);
    t1 = cw_now_ms();
    print_message("watch: %s", out);
    assert_non_null(strstr(out, "\"age_source\":\"bounds\""));
    assert_null(strstr(out, "entered_close_wait_at"));
    lo = json_num(out, "\"age_min_s\":");
    hi = json_num(out, "\"age_max_s\":");
    /* tcp_info: the FIN's ACK <= age <= the last data (500 ms earlier) */
    assert_true(lo >= 0 && lo * 1000 <= t1 - t_fin + 50);
    assert_true(hi * 1000 >= t0 - t_fin - 50);
    watch_once(0, out, sizeof out);
    assert_non_null(strstr(out, " in CLOSE_WAIT for at least "));
    assert_non_null(strstr(out, ", at most "));
    plant_end(&p);
    umount("/sys/fs/bpf");
}

static void test_usage(void **state)
{
    (void)state;
    char *argv[] = {(char *)CLI, (char *)"exporter", (char *)"--interval", (char *)"5",
                    NULL};
    pid_t pid = cwt_spawn3(argv, NULL, NULL, NULL);
    int st = cwt_wait(pid, 5000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    char *argv2[] = {(char *)CLI, (char *)"exporter", (char *)"--listen",
                     (char *)"127.0.0.1:1", (char *)"--textfile", (char *)"/tmp", NULL};
    pid = cwt_spawn3(argv2, NULL, NULL, NULL);
    st = cwt_wait(pid, 5000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    char *argv3[] = {(char *)CLI, (char *)"exporter", (char *)"--textfile",
                     (char *)"/nonexistent/dir", (char *)"--once", NULL};
    pid = cwt_spawn3(argv3, NULL, NULL, NULL);
    st = cwt_wait(pid, 5000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 3);
}

int main(void)
{
    cwt_private_netns();
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_usage),
        CWT_TEST(test_netns),
        CWT_TEST(test_ls_exact),
        CWT_TEST(test_watch_exact),
        CWT_TEST(test_rules),
        CWT_TEST(test_dump_each),
        CWT_TEST(test_promtool_textfile),
        CWT_TEST(test_promtool_http),
        CWT_TEST(test_top_and_other),
        CWT_TEST(test_textfile_loop),
        CWT_TEST(test_age_bounds),
        CWT_TEST(test_exact_age),
        CWT_TEST(test_destinations_and_aborts),
        CWT_TEST(test_resets_counter),
        CWT_TEST(test_watch_json),
        CWT_TEST(test_bad_requests),
        CWT_TEST(test_scrapers_leave),
        CWT_TEST(test_many_scrapers),
        CWT_TEST(test_prometheus),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (rc == 0 && access("/usr/bin/prometheus", X_OK) != 0) {
        fprintf(stderr, "test_exporter: SKIP: the Prometheus server test needs "
                        "/usr/bin/prometheus (Debian package prometheus: sh scripts/deps.sh test)\n");
        return CWT_SKIP;
    }
    return rc;
}
