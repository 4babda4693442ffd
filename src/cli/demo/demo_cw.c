/* demo_cw.c - part 1 of `closewise demo`: CLOSE_WAIT over time. */
#define _GNU_SOURCE
#include "../cli.h"
#include "demo.h"

#include <arpa/inet.h>
#include <crypt.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

enum group { SEED, TIDY };
static const char *group_addr[] = {"127.0.0.2", "127.0.0.3"};

/* A cheap sha512-crypt hash, so that hashing does not dominate the demo. */
static int add_demo_user(cw_server *s)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data cd;
    memset(&cd, 0, sizeof cd);
    if (!crypt_gensalt_rn("$6$", 1000, NULL, 0, setting, sizeof setting))
        return -1;
    const char *h = crypt_rn(DEMO_PASSWORD, setting, &cd, sizeof cd);
    return h && h[0] != '*' ? cw_server_add_hash(s, DEMO_USER, h) : -1;
}

static void serve(const struct demo *d, enum cw_server_close mode, int64_t idle_ms,
                  int report_fd)
{
    struct cw_server_opts o;
    cw_server_opts_init(&o);
    o.host = "127.0.0.1";
    o.idle_timeout_ms = idle_ms;
    o.lingering_time_ms = 1000;     /* keep the demo short */
    o.lingering_timeout_ms = 1000;
    o.max_conns = 2 * d->clients + 64;
    o.close_mode = mode;
    o.auth_max_failures = 0;        /* part 2 fails logins on purpose */
    /* Checks on the loop: the demo's timeline assumes a login is answered
     * at once, and its hash is cheap. The default check threads run at
     * nice 19, which a machine busy with other work starves: under 4 busy
     * loops on 2 cores only 16 of the 50 seed clients had logged in when
     * part 1 hit its time limit, so the demo showed 16 leaks, not 50. */
    o.auth_threads = -1;
    cw_server *s;
    int port = -1;
    if (cw_server_new(&o, &s) == CW_OK && add_demo_user(s) == CW_OK)
        port = cw_server_port(s);
    if (write(report_fd, &port, sizeof port) != sizeof port || port < 0)
        _exit(3);
    close(report_fd);
    cw_server_run(s);
    cw_server_free(&s);
    _exit(0);
}

pid_t demo_server(const struct demo *d, enum cw_server_close mode, int64_t idle_ms,
                  int *port)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = demo_fork();
    if (pid == 0) {
        close(p[0]);
        serve(d, mode, idle_ms, p[1]);
    }
    close(p[1]);
    struct pollfd pf = {.fd = p[0], .events = POLLIN};
    *port = -1;
    if (pid < 0 || poll(&pf, 1, 5000) != 1 || read(p[0], port, sizeof *port) != sizeof *port)
        *port = -1;
    close(p[0]);
    if (*port < 0 && pid > 0)
        demo_reap(pid, SIGKILL);
    return *port < 0 ? -1 : pid;
}

/* The seed's client: blocking socket, 30 s SO_RCVTIMEO, log in. */
static int seed_connect(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, group_addr[SEED], &a.sin_addr);
    struct timeval tv = {.tv_sec = 30};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0)
        return -1;
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    a.sin_port = htons((uint16_t)port);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0)
        return -1;
    const char login[] = "AUTH " DEMO_USER " " DEMO_PASSWORD "\n";
    char buf[8];
    send(s, login, sizeof login - 1, MSG_NOSIGNAL);
    return recv(s, buf, sizeof buf, 0) > 0 ? s : -1;   /* "OK\n" */
}

/* A session ended. The seed's code "returns FALSE" here without closing.
 * Returns 1 when the session is over. */
static int seed_event(struct pollfd *p)
{
    char buf[256];
    if (recv(p->fd, buf, sizeof buf, 0) > 0)
        return 0;
    /* closesocket(s); -- the seed's missing line */
    p->fd = -1;
    return 1;
}

static void report(int report_fd)
{
    if (write(report_fd, "e", 1) != 1)
        _exit(3);
}

/* The seed's n clients, connected over ~1 s while the ones already open
 * are watched. */
static void run_seed(int port, int n, int report_fd)
{
    struct pollfd *p = calloc((size_t)n, sizeof *p);
    if (!p)
        _exit(3);
    int opened = 0, open = 0;
    int64_t step = 1000 / n, next = cw_now_ms();
    while (opened < n || open > 0) {
        if (opened < n && cw_now_ms() >= next) {
            p[opened].events = POLLIN;
            if ((p[opened].fd = seed_connect(port)) < 0)
                _exit(3);
            opened++, open++;
            next += step;
            continue;
        }
        int64_t wait = opened < n ? next - cw_now_ms() : -1;
        if (poll(p, (nfds_t)opened, wait < 0 && opened < n ? 0 : (int)wait) < 0 &&
            errno != EINTR)
            _exit(3);
        for (int i = 0; i < opened; i++)
            if (p[i].fd >= 0 && p[i].revents && seed_event(&p[i])) {
                open--;
                report(report_fd);
            }
    }
}

/* Ours: the same clients, each a cw_stream on one loop. What the server
 * says ("OK", later "ERR idle timeout") is read and dropped; its end
 * (or our 30 s idle timeout, as the seed's SO_RCVTIMEO) closes the
 * stream gracefully, and on_closed counts the session. */
struct tidy {
    cw_loop *loop;
    cw_timer next;
    struct cw_opts o;
    struct cw_stream_opts so;
    int port, n, opened, closed, report_fd;
    int64_t step;
};

static void tidy_read(cw_stream *s, ssize_t n, const char *buf)
{
    if (n < 0)
        cw_stream_close(s, CW_CLOSE_GRACEFUL, cw_now_ms() + 1000, NULL);
}

static void tidy_closed(cw_stream *s, int how)
{
    struct tidy *t = cw_stream_data(s);
    report(t->report_fd);
    if (++t->closed == t->n)
        cw_loop_stop(t->loop);
}

static const struct cw_stream_handlers tidy_handlers = {
    .on_read = tidy_read, .on_closed = tidy_closed,
};

static void tidy_dialed(cw_stream *s, int status, void *data)
{
    static const char login[] = "AUTH " DEMO_USER " " DEMO_PASSWORD "\n";
    if (status < 0 || cw_stream_start(s, &tidy_handlers, data) < 0 ||
        cw_stream_write(s, login, sizeof login - 1) < 0)
        _exit(3);
}

static void tidy_next(cw_loop *loop, cw_timer *timer)
{
    struct tidy *t = timer->data;
    if (cw_stream_dial(loop, "127.0.0.1", (uint16_t)t->port, &t->o,
                       cw_now_ms() + 5000, &t->so, tidy_dialed, t) < 0)
        _exit(3);
    if (++t->opened < t->n)
        cw_timer_start(loop, timer, cw_now_ms() + t->step, tidy_next);
}

static void run_tidy(int port, int n, int report_fd)
{
    struct tidy t = {.port = port, .n = n, .report_fd = report_fd, .step = 1000 / n};
    cw_opts_init(&t.o);
    t.o.bind_host = group_addr[TIDY];
    cw_stream_opts_init(&t.so);
    t.so.idle_timeout_ms = 30000;
    t.next.data = &t;
    if (cw_loop_new(&t.loop) < 0 || cw_timer_start(t.loop, &t.next, 0, tidy_next) < 0 ||
        cw_loop_run(t.loop) < 0)
        _exit(3);
}

/* A helper process with n clients of one group; it writes a byte to
 * report_fd per session the server ends, then lives on, as a
 * long-running client does, until the demo stops it. */
static void run_group(enum group g, int port, int n, int report_fd)
{
    if (g == SEED)
        run_seed(port, n, report_fd);
    else
        run_tidy(port, n, report_fd);
    for (;;)
        pause();
}

static pid_t start_group(enum group g, int port, int n, int *report_fd)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
        return -1;
    pid_t pid = demo_fork();
    if (pid == 0) {
        close(p[0]);
        run_group(g, port, n, p[1]);
    }
    close(p[1]);
    *report_fd = p[0];
    return pid;
}

static int count_reports(int fd)
{
    char buf[512];
    int total = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        total += (int)n;
    return total;
}

static int from(const struct cw_sock *s, enum group g)
{
    struct in_addr a;
    inet_pton(AF_INET, group_addr[g], &a);
    return s->family == AF_INET && memcmp(s->src, &a, 4) == 0;
}

/* A sample can catch one of ours in CLOSE_WAIT in the instant between the
 * FIN's arrival and close(); one seen again a sample later is stuck. */
static void track_stuck(struct demo *d, uint64_t *now, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d->tidy_cw_nprev; j++)
            d->tidy_cw_stuck += now[i] == d->tidy_cw_prev[j];
    free(d->tidy_cw_prev);
    d->tidy_cw_prev = now;
    d->tidy_cw_nprev = n;
}

/* Count the states of every socket on the server's port, by the kernel. */
static int take_sample(struct demo *d, cw_diag *dg, int port, struct demo_sample *sm)
{
    struct cw_diag_filter f;
    cw_diag_filter_init(&f);
    f.port = port;
    struct cw_sock *v;
    size_t n;
    int rc = cw_diag_dump(dg, &f, &v, &n);
    if (rc < 0)
        return rc;
    uint64_t *cw_now = calloc(n + 1, sizeof *cw_now);
    size_t ncw = 0;
    if (!cw_now) {
        free(v);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        int st = v[i].state;
        int estab = st == CW_TCP_ESTABLISHED, cw = st == CW_TCP_CLOSE_WAIT;
        if (v[i].sport == port) {
            sm->srv_fin_wait += st == CW_TCP_FIN_WAIT1 || st == CW_TCP_FIN_WAIT2;
            sm->srv_time_wait += st == CW_TCP_TIME_WAIT;
        } else if (from(&v[i], SEED)) {
            sm->seed_estab += estab;
            sm->seed_cw += cw;
        } else if (from(&v[i], TIDY)) {
            sm->tidy_estab += estab;
            sm->tidy_cw += cw;
            if (cw)
                cw_now[ncw++] = v[i].cookie;
        }
    }
    free(v);
    if (d)
        track_stuck(d, cw_now, ncw);
    else
        free(cw_now);
    return CW_OK;
}

static void print_header(const struct demo *d, int port)
{
    fprintf(d->out,
        "Part 1: %d clients written the seed's way and %d on libclosewise log in to a\n"
        "server on 127.0.0.1:%d that closes sessions idle for %lld ms (the seed's\n"
        "trigger). Kernel TCP states every %d ms (sock_diag):\n\n"
        "   time   the seed's client     libclosewise client   server side\n"
        "          ESTAB   CLOSE_WAIT    ESTAB   CLOSE_WAIT    FIN_WAIT  TIME_WAIT\n",
        d->clients, d->clients, port, d->idle_ms, DEMO_SAMPLE_MS);
}

static void print_sample(const struct demo *d, const struct demo_sample *s)
{
    fprintf(d->out, "%6.2fs  %5d   %10d    %5d   %10d    %8d  %9d\n",
            (double)s->t_ms / 1000, s->seed_estab, s->seed_cw, s->tidy_estab,
            s->tidy_cw, s->srv_fin_wait, s->srv_time_wait);
    fflush(d->out);
}

/* The server's idle timeouts ended sessions between the previous sample
 * and the last one: the interval the chart marks. */
static void note_ends(struct demo *d, int ended)
{
    if (!ended)
        return;
    if (d->ends_from_ms < 0)
        d->ends_from_ms = d->nsamples > 1 ? d->samples[d->nsamples - 2].t_ms : 0;
    d->ends_to_ms = d->samples[d->nsamples - 1].t_ms;
}

/* Sample until both groups' sessions have all ended and the table has
 * settled, within a hard limit. */
static int sample_loop(struct demo *d, cw_diag *dg, int port, int seed_fd, int tidy_fd)
{
    int64_t t0 = cw_now_ms(), limit = 1000 + d->idle_ms + 6000;
    int settled = 0;
    while (!demo_interrupted() && d->nsamples < DEMO_MAX_SAMPLES && settled < 3) {
        demo_sleep_ms(t0 + (int64_t)(d->nsamples + 1) * DEMO_SAMPLE_MS - cw_now_ms());
        struct demo_sample *s = &d->samples[d->nsamples++];
        memset(s, 0, sizeof *s);
        s->t_ms = cw_now_ms() - t0;
        int rc = take_sample(d, dg, port, s);
        if (rc < 0) {
            cli_error("sock_diag: %s", cw_strerror(rc));
            return CLI_SYSTEM;
        }
        print_sample(d, s);
        int seed_ended = count_reports(seed_fd), tidy_ended = count_reports(tidy_fd);
        note_ends(d, seed_ended + tidy_ended);
        d->seed_sessions += seed_ended;
        d->tidy_sessions += tidy_ended;
        int done = d->seed_sessions == d->clients && d->tidy_sessions == d->clients;
        settled = done ? settled + 1 : 0;
        if (s->t_ms > limit)
            break;
    }
    return CLI_OK;
}

static void summarize_samples(struct demo *d)
{
    for (int i = 0; i < d->nsamples; i++) {
        const struct demo_sample *s = &d->samples[i];
        d->seed_cw_max = s->seed_cw > d->seed_cw_max ? s->seed_cw : d->seed_cw_max;
        d->tidy_cw_max = s->tidy_cw > d->tidy_cw_max ? s->tidy_cw : d->tidy_cw_max;
    }
    if (d->nsamples) {
        d->seed_cw_final = d->samples[d->nsamples - 1].seed_cw;
        d->tidy_cw_final = d->samples[d->nsamples - 1].tidy_cw;
    }
}

int demo_close_wait(struct demo *d)
{
    cw_diag *dg;
    int rc = cw_diag_open(&dg);
    if (rc < 0) {
        cli_error("sock_diag: %s", cw_strerror(rc));
        return CLI_SYSTEM;
    }
    int port, seed_fd = -1, tidy_fd = -1;
    pid_t srv = demo_server(d, CW_SERVER_GRACEFUL, d->idle_ms, &port);
    pid_t seed = srv > 0 ? start_group(SEED, port, d->clients, &seed_fd) : -1;
    pid_t tidy = seed > 0 ? start_group(TIDY, port, d->clients, &tidy_fd) : -1;
    if (tidy < 0) {
        cli_error("cannot start the demo's processes: %s", strerror(errno));
        cw_diag_close(&dg);
        return CLI_SYSTEM;
    }
    print_header(d, port);
    rc = sample_loop(d, dg, port, seed_fd, tidy_fd);
    summarize_samples(d);
    /* The leak ends only when the leaking process does. */
    demo_reap(seed, SIGKILL);
    struct demo_sample after = {0};
    if (rc == CLI_OK && take_sample(NULL, dg, port, &after) == CW_OK)
        d->seed_cw_after_exit = after.seed_cw;
    demo_reap(tidy, SIGKILL);
    demo_reap(srv, SIGTERM);
    close(seed_fd);
    close(tidy_fd);
    free(d->tidy_cw_prev);
    d->tidy_cw_prev = NULL;
    cw_diag_close(&dg);
    return rc;
}
