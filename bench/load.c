/* load.c - cw_bench_load: the load generator of the server benchmark
 * (bench/servers.sh), on cw_loop. Loopback only, bounded in time and
 * count. Every mode prints one line of key=value pairs on stdout.
 *
 *   cw_bench_load churn PORT CONC SECONDS MAX_COUNT PASSWORD
 *     CONC connections at a time for SECONDS (or MAX_COUNT connections):
 *     connect, send "AUTH bench PASSWORD", read to EOF, check that exactly
 *     "ERR bad credentials\n" arrived, close. Reports connections/s,
 *     p50/p99/p99.9 connection latency (connect() to EOF), and how each
 *     connection ended: ok (line, then EOF), rst (line, then a reset),
 *     lost (the line did not arrive whole), err (connect or other error).
 *
 *   cw_bench_load idle PORT COUNT RATE PASSWORD SERVER_PID
 *     Log COUNT sessions in ("OK") and keep them idle; the server's RSS
 *     growth per session is measured. Then every client half-closes
 *     (shutdown SHUT_WR), in random order, RATE per second: the time from
 *     a client's FIN to the server's FIN arriving (EOF) is the close
 *     latency.
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
#include <time.h>
#include <unistd.h>

#define REPLY_MAX 64
#define LOGIN_INFLIGHT 256      /* idle mode: logins in flight at once */
#define GRACE_MS 10000          /* after the run: how long stragglers get */

static const char ERR_LINE[] = "ERR bad credentials\n";
static const char OK_LINE[] = "OK\n";

enum phase { P_CONNECTING, P_SENT, P_IDLE, P_CLOSING };
enum how { H_EOF, H_RESET, H_ERROR };

struct lconn {
    cw_io io;
    int64_t t0;                 /* ns: connect() in churn, shutdown() in idle */
    uint32_t got;
    int idx;                    /* idle mode: position in b->conns */
    uint8_t phase;
    char buf[REPLY_MAX];
};

struct bench {
    cw_loop *loop;
    struct sockaddr_in to;
    char req[256];
    size_t req_len;
    const char *expect;
    size_t expect_len;
    int idle_mode;
    /* churn */
    int conc, active;
    uint64_t max_count, started;
    int launching;
    cw_timer end_timer, retry_timer;
    /* idle */
    struct lconn **conns;
    int count, opened, authed, next_close, closed;
    double rate, owed;
    int64_t close_start;
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

static void record(struct bench *b, int64_t t0)
{
    if (b->nlat < b->cap)
        b->lat[b->nlat++] = (uint32_t)((now_ns() - t0) / 1000);
}

static int cmp_u32(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, c = *(const uint32_t *)y;
    return a < c ? -1 : a > c;
}

/* Nearest-rank percentile of the sorted latencies. */
static unsigned pct(const struct bench *b, double q)
{
    if (!b->nlat)
        return 0;
    uint64_t i = (uint64_t)(q * (double)b->nlat + 0.999999);
    return b->lat[i ? i - 1 : 0];
}

/* ---- one connection ---- */

static void on_io(cw_loop *loop, cw_io *io, unsigned events);
static void launch_more(struct bench *b);

static void conn_end(struct bench *b, struct lconn *c, enum how how)
{
    cw_io_stop(b->loop, &c->io);
    close(c->io.fd);
    int whole = c->got == b->expect_len && !memcmp(c->buf, b->expect, b->expect_len);
    if (how == H_ERROR)
        b->err++;
    else if (!whole)
        b->lost++;
    else if (how == H_RESET)
        b->rst++;
    else
        b->ok++;
    if (how != H_ERROR)
        record(b, c->t0);
    free(c);
}

/* Start a connection and send the request at once: on loopback the
 * handshake has almost always completed when connect() returns, so the
 * usual case costs no wait for writability. */
static int conn_start(struct bench *b, struct lconn **out)
{
    struct lconn *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->io.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c->io.data = b;
    c->t0 = now_ns();
    int rc = 0;
    if (c->io.fd < 0 ||
        (connect(c->io.fd, (struct sockaddr *)&b->to, sizeof b->to) < 0 &&
         errno != EINPROGRESS))
        rc = -errno;
    unsigned want = CW_IO_READ;
    if (rc == 0) {
        ssize_t n = send(c->io.fd, b->req, b->req_len, MSG_NOSIGNAL);
        if (n == (ssize_t)b->req_len)
            c->phase = P_SENT;
        else if (n < 0 && (errno == EAGAIN || errno == ENOTCONN))
            want = CW_IO_WRITE;   /* still connecting: send when writable */
        else
            rc = n < 0 ? -errno : -EIO;
    }
    if (rc == 0)
        rc = cw_io_start(b->loop, &c->io, want, on_io);
    if (rc < 0) {
        if (c->io.fd >= 0)
            close(c->io.fd);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

static int conn_recv(struct lconn *c, enum how *how)
{
    for (;;) {
        char tmp[REPLY_MAX];
        ssize_t n = recv(c->io.fd, tmp, sizeof tmp, 0);
        if (n > 0) {
            size_t room = REPLY_MAX - c->got;
            memcpy(c->buf + c->got, tmp, (size_t)n < room ? (size_t)n : room);
            c->got += (uint32_t)((size_t)n < room ? (size_t)n : room);
            if ((size_t)n > room)
                c->got = REPLY_MAX;   /* too long: cannot match */
            continue;
        }
        if (n == 0) {
            *how = H_EOF;
            return 1;
        }
        if (errno == EAGAIN || errno == EINTR)
            return 0;
        *how = errno == ECONNRESET ? H_RESET : H_ERROR;
        return 1;
    }
}

/* Read what is there; returns 1 when the connection ended. The loop
 * reads SO_ERROR on EPOLLERR, which clears it in the kernel: after that a
 * reset reads as EOF, so io.err is what says it was one. */
static int conn_read(struct bench *b, struct lconn *c, enum how *how)
{
    int ended = conn_recv(c, how);
    if (ended && *how == H_EOF && c->io.err)
        *how = c->io.err == -ECONNRESET ? H_RESET : H_ERROR;
    return ended;
}

/* Returns -1 when the connection failed (and was freed). */
static int on_connected(struct bench *b, struct lconn *c, unsigned events)
{
    ssize_t n = -1;
    if (!(events & CW_EV_ERROR))
        n = send(c->io.fd, b->req, b->req_len, MSG_NOSIGNAL);
    if (n != (ssize_t)b->req_len) {
        if (b->idle_mode)
            die("connect");   /* a session benchmark cannot go on */
        conn_end(b, c, H_ERROR);
        return -1;
    }
    c->phase = P_SENT;
    cw_io_set(b->loop, &c->io, CW_IO_READ);
    return 0;
}

/* ---- churn ---- */

static void churn_done(struct bench *b)
{
    b->active--;
    launch_more(b);
    if (b->active == 0 && !b->launching) {
        b->t_end = now_ns();
        cw_loop_stop(b->loop);
    }
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
            /* e.g. out of ports: count it, retry soon rather than spin */
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
        if (b->active == 0)
            cw_loop_stop(loop);
        else
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

static void on_tick(cw_loop *loop, cw_timer *t);

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
    b->close_start = now_ns();
    cw_timer_start(b->loop, &b->tick, cw_now_ms() + 1, on_tick);
}

/* Half-close as many sessions as the rate owes since the start: a steady
 * pace whatever the timer's jitter. */
static void on_tick(cw_loop *loop, cw_timer *t)
{
    struct bench *b = t->data;
    double due = (double)(now_ns() - b->close_start) / 1e9 * b->rate;
    while (b->next_close < b->count && b->next_close < (int)due) {
        struct lconn *c = b->conns[b->next_close++];
        if (!c)
            continue;
        c->phase = P_CLOSING;
        c->got = 0;
        c->t0 = now_ns();
        if (shutdown(c->io.fd, SHUT_WR) < 0)
            die("shutdown");
    }
    if (b->next_close < b->count)
        cw_timer_start(loop, t, cw_now_ms() + 1, on_tick);
}

static void on_settled(cw_loop *loop, cw_timer *t)
{
    start_closing(t->data);
}

static void idle_io(struct bench *b, struct lconn *c)
{
    enum how how;
    int ended = conn_read(b, c, &how);
    if (c->phase == P_SENT && c->got == sizeof OK_LINE - 1 &&
        !memcmp(c->buf, OK_LINE, c->got) && !ended) {
        c->phase = P_IDLE;
        if (++b->authed == b->count) {
            /* Everyone is in: let the server settle, then measure. */
            cw_timer_start(b->loop, &b->tick, cw_now_ms() + 500, on_settled);
        }
        open_more(b);
        return;
    }
    if (!ended)
        return;
    if (c->phase != P_CLOSING || c->got)   /* ended early, or a stray reply */
        b->lost++;
    else if (how == H_RESET)
        b->rst++;
    else if (how == H_EOF)
        b->ok++, record(b, c->t0);
    else
        b->err++;
    cw_io_stop(b->loop, &c->io);
    close(c->io.fd);
    b->conns[c->idx] = NULL;
    free(c);
    if (++b->closed == b->count)
        cw_loop_stop(b->loop);
}

/* ---- dispatch ---- */

static void on_io(cw_loop *loop, cw_io *io, unsigned events)
{
    struct bench *b = io->data;
    struct lconn *c = (struct lconn *)io;   /* io is the first member */
    if (c->phase == P_CONNECTING) {
        if (on_connected(b, c, events) < 0)
            churn_done(b);
        return;
    }
    if (b->idle_mode) {
        idle_io(b, c);
        return;
    }
    enum how how;
    if (conn_read(b, c, &how)) {
        conn_end(b, c, how);
        churn_done(b);
    }
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
    b->to.sin_family = AF_INET;
    b->to.sin_port = htons((uint16_t)port);
    b->to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    b->req_len = (size_t)snprintf(b->req, sizeof b->req, "AUTH bench %s\n", password);
    if (cw_loop_new(&b->loop) < 0)
        die("cw_loop_new");
    b->end_timer.data = b->retry_timer.data = b->tick.data = b;
}

/* Connections still open (only after a failed run) die with the process. */
static void teardown(struct bench *b)
{
    fflush(stdout);
    cw_loop_free(&b->loop);
    free(b->lat);
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

static int idle(int argc, char **argv)
{
    struct bench b = {0};
    if (argc != 7) {
        fprintf(stderr, "usage: cw_bench_load idle PORT COUNT RATE PASSWORD SERVER_PID\n");
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
    if (!b.conns || !b.lat)
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
    long grow = b.rss_after - b.rss_before;
    printf("sessions=%d authed=%d rss_before_kb=%ld rss_after_kb=%ld "
           "bytes_per_session=%.0f close_p50_us=%u close_p99_us=%u close_max_us=%u "
           "ok=%llu rst=%llu lost=%llu err=%llu unfinished=%d\n",
           b.count, b.authed, b.rss_before, b.rss_after,
           b.authed ? (double)grow * 1024 / b.authed : 0.0, pct(&b, 0.50),
           pct(&b, 0.99), b.nlat ? b.lat[b.nlat - 1] : 0,
           (unsigned long long)b.ok, (unsigned long long)b.rst,
           (unsigned long long)b.lost, (unsigned long long)b.err,
           b.count - b.closed);
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
