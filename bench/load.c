/* load.c - cw_bench_load: the load generator of the server benchmark
 * (bench/servers.sh): every connection is a cw_stream (cw_stream_dial).
 * Loopback only, bounded in time and count. Every mode prints one line
 * of key=value pairs on stdout.
 *
 *   cw_bench_load churn PORT CONC SECONDS MAX_COUNT PASSWORD
 *     CONC connections at a time for SECONDS (or MAX_COUNT connections):
 *     connect, send "AUTH bench PASSWORD", read to EOF, check that exactly
 *     "ERR bad credentials\n" arrived, close. Reports connections/s,
 *     p50/p99/p99.9 connection latency (connect() to EOF), and how each
 *     connection ended: ok (line, then EOF), rst (line, then a reset),
 *     lost (the line did not arrive whole), err (connect or other error).
 *
 *   cw_bench_load idle PORT COUNT RATE PASSWORD SERVER_PID [CLOSELOG]
 *     Log COUNT sessions in ("OK") and keep them idle; the server's RSS
 *     growth per session is measured. Then every client half-closes
 *     (shutdown SHUT_WR), in random order, one at a time RATE per second:
 *     the i-th at its own due time start + i / RATE, from a timerfd (a
 *     millisecond loop timer would send them in bunches); when we wake up
 *     later than 1 / RATE, the rest of the schedule moves by the delay
 *     rather than closes going out back to back. The time from just
 *     before a client's shutdown() to the EOF of the server's FIN reaching
 *     our loop is the close latency (CLOCK_MONOTONIC); our own work (the
 *     shutdown()s and close()s) waits until every event of a loop
 *     iteration had its time read. Also reported: how late shutdowns left
 *     against their due time (pace_late_*) and how often the schedule
 *     moved (pace_moved), which say whether the closes were spread as
 *     asked. CLOSELOG: a file
 *     that gets one line per session closed, "PORT T_SHUTDOWN T_EOF" (our
 *     port, CLOCK_MONOTONIC ns), to be split against a kernel trace
 *     (bench/closesplit.c).
 *
 *   cw_bench_load hash PASSWORD   print a cheap crypt(3) hash (see below)
 *   cw_bench_load freeport        print a loopback port free right now
 */
#define _GNU_SOURCE
#include <closewise/closewise.h>

#include <arpa/inet.h>
#include <crypt.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define REPLY_MAX 64
#define LOGIN_INFLIGHT 256      /* idle mode: logins in flight at once */
#define GRACE_MS 10000          /* after the run: how long stragglers get */
#define DIAL_MS 5000            /* connect deadline */
#define CLOSE_MS 1000           /* after the server's end: our close */

static const char ERR_LINE[] = "ERR bad credentials\n";
static const char OK_LINE[] = "OK\n";

enum phase { P_CONNECTING, P_SENT, P_IDLE, P_CLOSING };

struct close_rec {
    int64_t t0, t1;             /* ns: our shutdown(), the EOF; 0: none */
    uint16_t port;
};

/* One client connection on a cw_stream; freed by its on_closed. */
struct lconn {
    struct bench *b;
    cw_stream *s;
    int64_t t0;                 /* ns: connect in churn, shutdown in idle */
    uint32_t got;
    int idx;                    /* idle mode: position in b->conns */
    uint8_t phase;
    char buf[REPLY_MAX];
};

struct bench {
    cw_loop *loop;
    uint16_t port;
    char req[256];
    size_t req_len;
    const char *expect;
    size_t expect_len;
    int idle_mode;
    struct cw_stream_opts sopts;
    /* churn */
    int conc, active;           /* active: connected or connecting */
    int closing;                /* closed, on_closed still to come */
    uint64_t max_count, started;
    int launching;
    cw_timer end_timer, retry_timer;
    /* idle */
    struct lconn **conns;
    int count, opened, authed, next_close, closed;
    double rate;
    int64_t close_start;        /* ns: the first shutdown's due time */
    cw_io pace;                 /* timerfd: the next shutdown's due time */
    cw_timer after;             /* due now: runs after this iteration's events */
    cw_stream **ended;          /* sessions whose EOF came, to close */
    int nended;
    uint32_t *late;             /* per shutdown: us after its due time */
    int nlate, moved;           /* moved: schedule shifted by a late wake-up */
    struct close_rec *recs;     /* CLOSELOG: per session, in close order */
    const char *closelog;
    cw_timer tick;
    long rss_before, rss_after;
    int server_pid;
    /* results */
    uint32_t *lat;              /* microseconds */
    uint64_t nlat, cap;
    uint64_t ok, rst, lost, err;
    int64_t t_start, t_end;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "cw_bench_load: %s: %s\n", what, strerror(errno));
    exit(3);
}

/* Returns the end time it measured to (ns). */
static int64_t record(struct bench *b, int64_t t0)
{
    int64_t t1 = now_ns();
    if (b->nlat < b->cap)
        b->lat[b->nlat++] = (uint32_t)((t1 - t0) / 1000);
    return t1;
}

static int cmp_u32(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, c = *(const uint32_t *)y;
    return a < c ? -1 : a > c;
}

/* Nearest-rank percentile of n sorted values. */
static unsigned upct(const uint32_t *v, uint64_t n, double q)
{
    if (!n)
        return 0;
    uint64_t i = (uint64_t)(q * (double)n + 0.999999);
    return v[i ? i - 1 : 0];
}

static unsigned pct(const struct bench *b, double q)
{
    return upct(b->lat, b->nlat, q);
}

/* ---- one connection ---- */

static void launch_more(struct bench *b);
static void open_more(struct bench *b);
static void churn_done(struct bench *b);
static void churn_check_over(struct bench *b);
static void idle_ended(struct bench *b, struct lconn *c, enum cw_end how);
static void idle_bytes(struct bench *b, struct lconn *c);
static void idle_defer_close(struct bench *b, cw_stream *s);

/* How a churn connection ended: ok (the whole line, then the server's
 * FIN), rst (the whole line, then a reset), lost (not the whole line). */
static void churn_ended(struct bench *b, struct lconn *c, enum cw_end how)
{
    int whole = c->got == b->expect_len && !memcmp(c->buf, b->expect, b->expect_len);
    if (how != CW_END_EOF && how != CW_END_RESET)
        b->err++;
    else if (!whole)
        b->lost++;
    else if (how == CW_END_RESET)
        b->rst++;
    else
        b->ok++;
    if (how == CW_END_EOF || how == CW_END_RESET)
        record(b, c->t0);
}

static void on_read(cw_stream *s, ssize_t n, const char *buf)
{
    struct lconn *c = cw_stream_data(s);
    struct bench *b = c->b;
    if (n > 0) {
        size_t room = REPLY_MAX - c->got;
        memcpy(c->buf + c->got, buf, (size_t)n < room ? (size_t)n : room);
        c->got = (size_t)n > room ? REPLY_MAX : c->got + (uint32_t)n;  /* too long: cannot match */
        if (b->idle_mode)
            idle_bytes(b, c);
        return;
    }
    enum cw_end how = cw_end_of_read(n);
    if (b->idle_mode) {
        idle_ended(b, c, how);
        idle_defer_close(b, s);
        return;
    }
    churn_ended(b, c, how);
    /* After the server's FIN this is a plain close; after an error, a RST. */
    cw_stream_close(s, CW_CLOSE_GRACEFUL, cw_now_ms() + CLOSE_MS, NULL);
    b->closing++;
    churn_done(b);   /* the next connection starts now, as a client would */
}

/* The loop stops only once every stream had its on_closed. */
static void on_closed(cw_stream *s, int how)
{
    struct lconn *c = cw_stream_data(s);
    struct bench *b = c->b;
    free(c);
    if (!b->idle_mode) {
        b->closing--;
        churn_check_over(b);
    } else if (++b->closed == b->count) {
        cw_loop_stop(b->loop);
    }
}

static const struct cw_stream_handlers handlers = {
    .on_read = on_read, .on_closed = on_closed,
};

static void on_dialed(cw_stream *s, int status, void *data)
{
    struct lconn *c = data;
    struct bench *b = c->b;
    if (status < 0) {
        if (b->idle_mode)
            die("connect");   /* a session benchmark cannot go on */
        b->err++;
        free(c);
        churn_done(b);
        return;
    }
    c->s = s;
    c->phase = P_SENT;
    cw_stream_start(s, &handlers, c);
    /* A failed write ends in on_read, with the error. */
    cw_stream_write(s, b->req, b->req_len);
}

static int conn_start(struct bench *b, struct lconn **out)
{
    struct lconn *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->b = b;
    c->t0 = now_ns();
    int rc = cw_stream_dial(b->loop, "127.0.0.1", b->port, NULL,
                            cw_now_ms() + DIAL_MS, &b->sopts, on_dialed, c);
    if (rc < 0) {
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* ---- churn ---- */

static void churn_check_over(struct bench *b)
{
    if (b->active == 0 && !b->launching && b->closing == 0)
        cw_loop_stop(b->loop);
}

static void churn_done(struct bench *b)
{
    b->active--;
    launch_more(b);
    if (b->active == 0 && !b->launching)
        b->t_end = now_ns();
    churn_check_over(b);
}

static void on_retry(cw_loop *loop, cw_timer *t)
{
    launch_more(t->data);
}

static void launch_more(struct bench *b)
{
    while (b->launching && b->active < b->conc) {
        if (b->started >= b->max_count) {
            b->launching = 0;
            break;
        }
        struct lconn *c;
        if (conn_start(b, &c) < 0) {
            /* e.g. out of memory: count it, retry soon rather than spin */
            b->err++;
            b->started++;
            cw_timer_start(b->loop, &b->retry_timer, cw_now_ms() + 1, on_retry);
            break;
        }
        b->started++;
        b->active++;
    }
}

static void on_end(cw_loop *loop, cw_timer *t)
{
    struct bench *b = t->data;
    if (b->launching) {           /* the duration is over: let the rest finish */
        b->launching = 0;
        b->t_end = now_ns();
        churn_check_over(b);
        cw_timer_start(loop, t, cw_now_ms() + GRACE_MS, on_end);
        return;
    }
    cw_loop_stop(loop);           /* stragglers: the caller counts them */
}

/* ---- idle sessions and close latency ---- */

static long rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "re");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static void open_more(struct bench *b)
{
    while (b->opened < b->count && b->opened - b->authed < LOGIN_INFLIGHT) {
        struct lconn *c;
        if (conn_start(b, &c) < 0)
            die("connect");
        c->idx = b->opened;
        b->conns[b->opened++] = c;
    }
}

static void on_pace(cw_loop *loop, cw_io *io, unsigned events);

static int64_t close_due(const struct bench *b, int i)
{
    return b->close_start + (int64_t)((double)i * 1e9 / b->rate);
}

static void pace_arm(struct bench *b)
{
    int64_t due = close_due(b, b->next_close);
    struct itimerspec its = {.it_value = {.tv_sec = due / 1000000000,
                                          .tv_nsec = due % 1000000000}};
    if (timerfd_settime(b->pace.fd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
        die("timerfd_settime");
}

static void start_closing(struct bench *b)
{
    b->rss_after = rss_kb(b->server_pid);
    for (int i = b->count - 1; i > 0; i--) {   /* Fisher-Yates */
        int j = (int)((unsigned)rand() % (unsigned)(i + 1));
        struct lconn *x = b->conns[i];
        b->conns[i] = b->conns[j];
        b->conns[j] = x;
    }
    for (int i = 0; i < b->count; i++)
        if (b->conns[i])          /* NULL: ended early, already counted */
            b->conns[i]->idx = i;
    b->pace.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (b->pace.fd < 0 || cw_io_start(b->loop, &b->pace, CW_IO_READ, on_pace) < 0)
        die("timerfd");
    b->close_start = now_ns() + 1000000;
    pace_arm(b);
}

static void shut_one(struct bench *b, struct lconn *c)
{
    c->phase = P_CLOSING;
    c->got = 0;
    if (b->recs) {
        struct sockaddr_in a;
        socklen_t len = sizeof a;
        if (getsockname(cw_stream_fd(c->s), (struct sockaddr *)&a, &len) == 0)
            b->recs[c->idx].port = ntohs(a.sin_port);
    }
    c->t0 = now_ns();
    if (b->recs)
        b->recs[c->idx].t0 = c->t0;
    if (cw_stream_shutdown(c->s) < 0)
        die("shutdown");
}

/* Half-close the session whose due time has come: one per wake-up. A
 * wake-up later than one interval moves the rest of the schedule by that
 * delay (counted) instead of sending the missed closes back to back: a
 * bunch would measure the server's queue behind our own stall. */
static void pace_due(struct bench *b)
{
    int64_t now = now_ns(), gap = (int64_t)(1e9 / b->rate);
    while (b->next_close < b->count && close_due(b, b->next_close) <= now) {
        int64_t late = now - close_due(b, b->next_close);
        struct lconn *c = b->conns[b->next_close++];
        if (!c)
            continue;             /* ended early: not a close to make */
        b->late[b->nlate++] = (uint32_t)(late / 1000);
        if (late > gap) {
            b->close_start += late;
            b->moved++;
        }
        shut_one(b, c);
        break;
    }
    if (b->next_close < b->count) {
        pace_arm(b);
    } else if (b->pace.fd >= 0) {
        cw_io_stop(b->loop, &b->pace);
        close(b->pace.fd);
        b->pace.fd = -1;
    }
}

/* Our own work waits until every event of this loop iteration was seen:
 * an EOF that came in the same epoll_wait as the timerfd, or after another
 * EOF, gets its time read before our shutdown()s and close()s, which on
 * loopback carry the server's side of each FIN too (tens of us each). */
static void on_after(cw_loop *loop, cw_timer *t)
{
    struct bench *b = t->data;
    if (b->pace.fd >= 0)
        pace_due(b);
    while (b->nended > 0)   /* after the server's FIN: a plain close */
        cw_stream_close(b->ended[--b->nended], CW_CLOSE_GRACEFUL, cw_now_ms() + CLOSE_MS, NULL);
}

static void after_events(struct bench *b)
{
    if (!cw_timer_active(&b->after))
        cw_timer_start(b->loop, &b->after, cw_now_ms(), on_after);
}

static void idle_defer_close(struct bench *b, cw_stream *s)
{
    b->ended[b->nended++] = s;
    after_events(b);
}

static void on_pace(cw_loop *loop, cw_io *io, unsigned events)
{
    struct bench *b = io->data;
    uint64_t ticks;
    if (read(io->fd, &ticks, sizeof ticks) < 0 && errno != EAGAIN)
        die("timerfd read");
    after_events(b);
}

static void on_settled(cw_loop *loop, cw_timer *t)
{
    start_closing(t->data);
}

static void idle_bytes(struct bench *b, struct lconn *c)
{
    if (c->phase != P_SENT || c->got != sizeof OK_LINE - 1 ||
        memcmp(c->buf, OK_LINE, c->got))
        return;
    c->phase = P_IDLE;
    if (++b->authed == b->count) {
        /* Everyone is in: let the server settle, then measure. */
        cw_timer_start(b->loop, &b->tick, cw_now_ms() + 500, on_settled);
    }
    open_more(b);
}

/* The close latency runs from our FIN to the server's. */
static void idle_ended(struct bench *b, struct lconn *c, enum cw_end how)
{
    if (c->phase != P_CLOSING || c->got)   /* ended early, or a stray reply */
        b->lost++;
    else if (how == CW_END_RESET)
        b->rst++;
    else if (how == CW_END_EOF) {
        b->ok++;
        int64_t t1 = record(b, c->t0);
        if (b->recs)
            b->recs[c->idx].t1 = t1;
    } else
        b->err++;
    b->conns[c->idx] = NULL;
}

/* ---- modes ---- */

static void setup(struct bench *b, int port, const char *password)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (port <= 0 || port > 65535 || strlen(password) > 200) {
        fprintf(stderr, "cw_bench_load: bad port or password\n");
        exit(2);
    }
    b->port = (uint16_t)port;
    cw_stream_opts_init(&b->sopts);
    b->req_len = (size_t)snprintf(b->req, sizeof b->req, "AUTH bench %s\n", password);
    if (cw_loop_new(&b->loop) < 0)
        die("cw_loop_new");
    b->end_timer.data = b->retry_timer.data = b->tick.data = b->pace.data = b->after.data = b;
    b->pace.fd = -1;
}

/* Connections still open (only after a failed run) die with the process. */
static void teardown(struct bench *b)
{
    fflush(stdout);
    cw_loop_free(&b->loop);
    if (b->pace.fd >= 0)
        close(b->pace.fd);
    free(b->lat);
    free(b->late);
    free(b->ended);
    free(b->recs);
    free(b->conns);
}

static int churn(int argc, char **argv)
{
    struct bench b = {0};
    if (argc != 7) {
        fprintf(stderr, "usage: cw_bench_load churn PORT CONC SECONDS MAX_COUNT PASSWORD\n");
        return 2;
    }
    setup(&b, atoi(argv[2]), argv[6]);
    b.conc = atoi(argv[3]);
    double secs = atof(argv[4]);
    b.max_count = strtoull(argv[5], NULL, 10);
    if (b.conc <= 0 || secs <= 0 || secs > 600 || b.max_count == 0 ||
        b.max_count > 50000000) {
        fprintf(stderr, "cw_bench_load: bad CONC, SECONDS or MAX_COUNT\n");
        return 2;
    }
    b.expect = ERR_LINE;
    b.expect_len = sizeof ERR_LINE - 1;
    b.cap = b.max_count < 20000000 ? b.max_count : 20000000;
    b.lat = malloc(b.cap * sizeof *b.lat);
    if (!b.lat)
        die("malloc");
    b.launching = 1;
    b.t_start = now_ns();
    cw_timer_start(b.loop, &b.end_timer, cw_now_ms() + (int64_t)(secs * 1000), on_end);
    launch_more(&b);
    cw_loop_run(b.loop);
    if (!b.t_end)
        b.t_end = now_ns();
    qsort(b.lat, b.nlat, sizeof *b.lat, cmp_u32);
    uint64_t done = b.ok + b.rst + b.lost;
    double el = (double)(b.t_end - b.t_start) / 1e9;
    printf("conns=%llu secs=%.3f rate=%.0f p50_us=%u p99_us=%u p999_us=%u "
           "ok=%llu rst=%llu lost=%llu err=%llu unfinished=%d\n",
           (unsigned long long)done, el, (double)done / el, pct(&b, 0.50),
           pct(&b, 0.99), pct(&b, 0.999), (unsigned long long)b.ok,
           (unsigned long long)b.rst, (unsigned long long)b.lost,
           (unsigned long long)b.err, b.active);
    teardown(&b);
    return 0;
}

/* CLOSELOG: one line per session closed, in close order. */
static void write_closelog(const struct bench *b)
{
    FILE *f = fopen(b->closelog, "we");
    if (!f)
        die(b->closelog);
    for (int i = 0; i < b->count; i++)
        if (b->recs[i].t0 && b->recs[i].t1)
            fprintf(f, "%u %lld %lld\n", b->recs[i].port,
                    (long long)b->recs[i].t0, (long long)b->recs[i].t1);
    if (fclose(f) != 0)
        die(b->closelog);
}

static int idle(int argc, char **argv)
{
    struct bench b = {0};
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: cw_bench_load idle PORT COUNT RATE PASSWORD SERVER_PID [CLOSELOG]\n");
        return 2;
    }
    setup(&b, atoi(argv[2]), argv[5]);
    b.idle_mode = 1;
    b.count = atoi(argv[3]);
    b.rate = atof(argv[4]);
    b.server_pid = atoi(argv[6]);
    if (b.count <= 0 || b.count > 100000 || b.rate <= 0 || b.server_pid <= 0) {
        fprintf(stderr, "cw_bench_load: bad COUNT, RATE or SERVER_PID\n");
        return 2;
    }
    b.conns = calloc((size_t)b.count, sizeof *b.conns);
    b.cap = (uint64_t)b.count;
    b.lat = malloc(b.cap * sizeof *b.lat);
    b.late = malloc(b.cap * sizeof *b.late);
    b.ended = malloc(b.cap * sizeof *b.ended);
    b.closelog = argc == 8 ? argv[7] : NULL;
    if (b.closelog)
        b.recs = calloc((size_t)b.count, sizeof *b.recs);
    if (!b.conns || !b.lat || !b.late || !b.ended || (b.closelog && !b.recs))
        die("malloc");
    b.expect = OK_LINE;
    b.expect_len = sizeof OK_LINE - 1;
    srand((unsigned)now_ns());
    b.rss_before = rss_kb(b.server_pid);
    /* Bounded: logins plus closing at RATE, plus a grace period. */
    int64_t limit = 30000 + (int64_t)(1000.0 * b.count / b.rate) + GRACE_MS;
    cw_timer_start(b.loop, &b.end_timer, cw_now_ms() + limit, on_end);
    b.t_start = now_ns();
    open_more(&b);
    cw_loop_run(b.loop);
    qsort(b.lat, b.nlat, sizeof *b.lat, cmp_u32);
    qsort(b.late, (size_t)b.nlate, sizeof *b.late, cmp_u32);
    if (b.closelog)
        write_closelog(&b);
    long grow = b.rss_after - b.rss_before;
    printf("sessions=%d authed=%d rss_before_kb=%ld rss_after_kb=%ld "
           "bytes_per_session=%.0f close_p50_us=%u close_p99_us=%u close_max_us=%u "
           "ok=%llu rst=%llu lost=%llu err=%llu unfinished=%d "
           "pace_late_p50_us=%u pace_late_p99_us=%u pace_late_max_us=%u pace_moved=%d\n",
           b.count, b.authed, b.rss_before, b.rss_after,
           b.authed ? (double)grow * 1024 / b.authed : 0.0, pct(&b, 0.50),
           pct(&b, 0.99), b.nlat ? b.lat[b.nlat - 1] : 0,
           (unsigned long long)b.ok, (unsigned long long)b.rst,
           (unsigned long long)b.lost, (unsigned long long)b.err,
           b.count - b.closed, upct(b.late, (uint64_t)b.nlate, 0.50),
           upct(b.late, (uint64_t)b.nlate, 0.99),
           b.nlate ? b.late[b.nlate - 1] : 0, b.moved);
    teardown(&b);
    return 0;
}

/* BSDi extended DES with one iteration: a crypt(3) hash that costs about
 * half a microsecond, so that the churn benchmark measures connection
 * handling rather than password hashing (sha512-crypt at its minimum of
 * 1000 rounds costs ~270 us here, yescrypt milliseconds). Every server
 * that checks passwords checks this same hash. */
static int hash(int argc, char **argv)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    static struct crypt_data cd;
    if (argc != 3 || !crypt_gensalt_rn("_", 1, NULL, 0, setting, sizeof setting))
        return 2;
    const char *h = crypt_rn(argv[2], setting, &cd, sizeof cd);
    if (!h || h[0] == '*')
        return 3;
    puts(h);
    return 0;
}

static int freeport(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        die("freeport");
    printf("%u\n", ntohs(a.sin_port));
    close(fd);
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "churn"))
        return churn(argc, argv);
    if (!strcmp(mode, "idle"))
        return idle(argc, argv);
    if (!strcmp(mode, "hash"))
        return hash(argc, argv);
    if (!strcmp(mode, "freeport"))
        return freeport();
    fprintf(stderr, "usage: cw_bench_load churn|idle|hash|freeport ... (see bench/load.c)\n");
    return 2;
}
