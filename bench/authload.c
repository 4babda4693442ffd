/* authload.c - cw_bench_authload: the reference server under login load
 * (bench/authload.sh). Loopback only, bounded in time. Prints one line of
 * key=value pairs on stdout.
 *
 *   cw_bench_authload latency PORT SESSIONS RATE SECONDS K LOGIN ECHOUSER
 *                             [slow=N] [slowgap=MS] [wrong=N] [wronglogin=LIST]
 *                             [echofifo=1] [echoslice=NS] [loadnice=N]
 *                             [instep=1]
 *     SESSIONS sessions log in as ECHOUSER ("user:password") and then
 *     each sends "ECHO" RATE times a second (one request outstanding per
 *     session; the requests spread evenly over each period, or all at
 *     its start with instep=1), while K clients log in as LOGIN
 *     ("user:password[,...]", taken in turn) over and over: connect, AUTH, read the reply, then
 *     half-close and read to EOF. Optional load: N clients sending the
 *     wrong passwords of wronglogin the same way, and a slowloris crowd of
 *     N connections each sending one byte of an unfinished AUTH line every
 *     slowgap ms (1000), dialled again when the server closes them.
 *     Reports the ECHO round trip (p50, p99, p99.9, max in microseconds)
 *     and its two parts, split at the reply's kernel receive timestamp
 *     (SO_TIMESTAMPNS): srv_* from our send to the reply's arrival on our
 *     socket, gen_* from there to our recvmsg returning, and tail_* the
 *     mean of each part over the slowest 1 %; echoes lost (no reply
 *     within 5 s), logins/s, the login round trip (p50, p99 in ms), how
 *     logins were answered (ok, bad, busy, other), wrong passwords/s, and
 *     how long the echo thread waited on a run queue per time slice.
 *     The echo sessions have a thread of their own ("gen-echo"); echofifo=1
 *     asks SCHED_FIFO for it (root), echoslice a shorter EEVDF slice,
 *     loadnice a nice for the load threads. K = 0: the echo sessions alone.
 *
 *   cw_bench_authload floor PORTFILE
 *     The machine's floor for the latency rows: a bare epoll line server
 *     on one thread (no timers, no hashing: "AUTH ..." gets "OK", "ECHO x"
 *     gets "x") until SIGTERM; its port goes to PORTFILE. The echo round
 *     trip measured against it is what this machine's loopback and
 *     wake-ups cost, the least any server could show.
 *
 *   cw_bench_authload slice NS TID...
 *     Give threads TID... a time slice of NS (sched_setattr, SCHED_OTHER,
 *     Linux 6.12+); exit 3 if any kept another. For A/B runs.
 *
 *   cw_bench_authload soak PORT COUNT CONC MAXSECS YES SIX CHEAP
 *     COUNT connections, CONC at a time (one thread each, blocking I/O),
 *     each a behaviour drawn at random (see kinds[] below for the mix):
 *     right and wrong passwords with yescrypt (YES="user:pw,baduser:pw":
 *     wrong passwords go to the second account) and sha512 (SIX), ECHO sessions (CHEAP, a cheap sha512 user), a reset
 *     in the middle of a line, half-close, a client that never reads, one
 *     idle past the server's idle timeout, one that leaves while its
 *     password is checked, QUIT. Every connection comes from a random
 *     127.x.y.z address (so the throttle sees many clients). Clients that
 *     read check that the server's last line arrived whole, then EOF.
 *     Prints counts and failures per behaviour, and connections/s.
 *
 * The echo sessions run on one epoll thread; each login client is a
 * thread of its own doing blocking I/O (their latency is not the point,
 * their load is); the slowloris crowd is one thread. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define LOST_NS 5000000000LL
#define MAX_LOGINS 16

static int port;
static volatile int running = 1;
static int load_nice;   /* nice of the threads that make load (not the echo) */
/* instep=1: every echo session sends at the same moment of each period
 * (100 requests in one burst) instead of spread over it: what queueing
 * behind a burst costs, the server's per-request cost times its share. */
static int in_step;

/* The load threads run at load_nice: their CPU time stands for clients on
 * other machines, so it should not count against the server's threads in
 * the scheduler's fairness. Best effort (Linux nices threads one by one). */
static void load_thread(const char *name)
{
    pthread_setname_np(pthread_self(), name);   /* for perf sched */
    if (load_nice)
        (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), load_nice);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "cw_bench_authload: %s: %s\n", what, strerror(errno));
    exit(3);
}

/* ---- samples ---- */

struct samples {
    int64_t *v;
    size_t n, cap;
};

static void add(struct samples *s, int64_t x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v)
            die("realloc");
    }
    s->v[s->n++] = x;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t pct(struct samples *s, double q)
{
    if (!s->n)
        return 0;
    size_t i = (size_t)(q * (double)(s->n - 1) + 0.5);
    return s->v[i];
}

/* ---- blocking helpers ---- */

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {.tv_sec = 30};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Read one line (blocking, SO_RCVTIMEO); returns its length or -1. */
static int read_line(int fd, char *buf, size_t size)
{
    size_t n = 0;
    while (n + 1 < size) {
        ssize_t r = recv(fd, buf + n, 1, 0);
        if (r <= 0)
            return -1;
        if (buf[n] == '\n') {
            buf[n] = '\0';
            return (int)n;
        }
        n++;
    }
    return -1;
}

static int send_str(int fd, const char *s)
{
    size_t len = strlen(s);
    return send(fd, s, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

/* Half-close and read to the server's FIN: nothing stays in CLOSE_WAIT
 * or TIME_WAIT on our side for longer than it must. */
static void finish(int fd)
{
    char buf[256];
    shutdown(fd, SHUT_WR);
    while (recv(fd, buf, sizeof buf, 0) > 0) {
    }
    close(fd);
}

/* ---- login clients ---- */

struct creds {
    char line[MAX_LOGINS][256];   /* "AUTH user password\n" */
    int n;
};

static int parse_creds(const char *arg, struct creds *c)
{
    char *copy = strdup(arg), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && c->n < MAX_LOGINS;
         tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        if (!colon)
            return -1;
        *colon = '\0';
        snprintf(c->line[c->n++], sizeof c->line[0], "AUTH %s %s\n", tok, colon + 1);
    }
    free(copy);
    return c->n ? 0 : -1;
}

struct login_stats {
    atomic_ulong ok, bad, busy, other;
    pthread_mutex_t mu;
    struct samples rtt;
};

struct login_arg {
    struct creds *creds;
    struct login_stats *st;
    int id;
};

static void *login_main(void *arg)
{
    struct login_arg *la = arg;
    load_thread("gen-login");
    int turn = la->id;
    char line[128];
    while (running) {
        const char *auth = la->creds->line[turn++ % la->creds->n];
        int64_t t0 = now_ns();
        int fd = dial();
        if (fd < 0) {
            atomic_fetch_add(&la->st->other, 1);
            usleep(10000);
            continue;
        }
        int n = send_str(fd, auth) == 0 ? read_line(fd, line, sizeof line) : -1;
        int64_t t1 = now_ns();
        if (n < 0)
            atomic_fetch_add(&la->st->other, 1);
        else if (!strcmp(line, "OK"))
            atomic_fetch_add(&la->st->ok, 1);
        else if (!strcmp(line, "ERR bad credentials"))
            atomic_fetch_add(&la->st->bad, 1);
        else if (!strcmp(line, "ERR busy"))
            atomic_fetch_add(&la->st->busy, 1);
        else
            atomic_fetch_add(&la->st->other, 1);
        if (n >= 0) {
            pthread_mutex_lock(&la->st->mu);
            add(&la->st->rtt, t1 - t0);
            pthread_mutex_unlock(&la->st->mu);
        }
        finish(fd);
    }
    return NULL;
}

/* This thread's run-queue wait (ns) and time slices, from schedstat:
 * the generator's own share of a round trip on a busy machine. */
static void own_wait(long long *wait_ns, long long *slices)
{
    FILE *f = fopen("/proc/thread-self/schedstat", "re");
    long long run = 0;
    *wait_ns = *slices = 0;
    if (!f)
        return;
    if (fscanf(f, "%lld %lld %lld", &run, wait_ns, slices) != 3)
        *wait_ns = *slices = 0;
    fclose(f);
}

/* ---- slowloris crowd ---- */

/* n connections that never finish a line: "AUTH " and then one byte every
 * gap_ms each, spread out; one the server closes (login timeout, line too
 * long, eviction) is dialled again. One thread, non-blocking sends. */
struct slow {
    int n, gap_ms;
    atomic_long bytes, redials;
};

static void *slow_main(void *arg)
{
    struct slow *sl = arg;
    load_thread("gen-slow");
    int *fd = calloc((size_t)sl->n, sizeof *fd);
    int64_t *due = calloc((size_t)sl->n, sizeof *due);
    if (!fd || !due)
        die("calloc");
    int64_t gap = (int64_t)sl->gap_ms * 1000000, t = now_ns();
    for (int i = 0; i < sl->n; i++) {
        fd[i] = -1;
        due[i] = t + gap * i / sl->n;
    }
    while (running) {
        int64_t now = now_ns(), next = now + gap;
        for (int i = 0; i < sl->n; i++) {
            if (due[i] > now) {
                next = due[i] < next ? due[i] : next;
                continue;
            }
            due[i] = now + gap;
            char sink[256];
            if (fd[i] >= 0 && recv(fd[i], sink, sizeof sink, MSG_DONTWAIT) >= 0) {
                close(fd[i]);   /* the server's last line, or its FIN */
                fd[i] = -1;
            }
            if (fd[i] < 0) {
                fd[i] = dial();
                if (fd[i] < 0 || send_str(fd[i], "AUTH ") < 0)
                    continue;
                atomic_fetch_add(&sl->redials, 1);
            } else if (send(fd[i], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1) {
                atomic_fetch_add(&sl->bytes, 1);
            }
        }
        int64_t d = next - now_ns();
        if (d > 0)
            usleep((useconds_t)(d / 1000));
    }
    for (int i = 0; i < sl->n; i++)
        if (fd[i] >= 0)
            close(fd[i]);
    free(fd);
    free(due);
    return NULL;
}

/* ---- echo sessions ---- */

/* One echo's round trip, split at the moment the reply reached our
 * socket (its kernel receive timestamp): srv = send to arrival (the
 * request's way in, the server's wake-up and work, the reply's way out),
 * gen = arrival to our recvmsg returning (this thread's own wake-up). */
struct echo_sample {
    int64_t rtt, srv, gen;
};

struct echo_samples {
    struct echo_sample *v;
    size_t n, cap;
};

struct session {
    int fd;
    int64_t sent;       /* ns of the outstanding request, 0 = none */
    int64_t sent_rt;    /* the same instant, CLOCK_REALTIME (timestamps) */
    int64_t due;        /* next request */
    size_t got;
    char buf[64];
};

static int64_t rt_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int login_session(const char *auth)
{
    int fd = dial();
    char line[128];
    if (fd < 0)
        die("connect");
    if (send_str(fd, auth) < 0 || read_line(fd, line, sizeof line) < 0 ||
        strcmp(line, "OK")) {
        fprintf(stderr, "cw_bench_authload: echo session login failed\n");
        exit(3);
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) < 0)
        die("SO_TIMESTAMPNS");
    return fd;
}

static void echo_send(struct session *s, int64_t now, int64_t period, long *lost)
{
    if (s->sent && now - s->sent > LOST_NS) {
        (*lost)++;          /* give up on it; the next reply is counted */
        s->sent = 0;
    }
    if (s->sent || now < s->due)
        return;
    /* not now: earlier sends of this round took time */
    int64_t t = now_ns(), trt = rt_ns();
    if (send_str(s->fd, "ECHO ping\n") < 0) {
        (*lost)++;
        s->due = now + period;
        return;
    }
    s->sent = t;
    s->sent_rt = trt;
    /* Fell behind: skip the missed turns instead of sending them in a
     * burst, and keep this session's phase, so the sessions stay spread
     * over the period rather than drifting into step with each other. */
    do
        s->due += period;
    while (s->due <= now);
}

static void echo_read(struct session *s, struct echo_samples *es, int64_t from)
{
    char cbuf[CMSG_SPACE(sizeof(struct timespec))];
    struct iovec iov = {s->buf + s->got, sizeof s->buf - s->got};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                        .msg_controllen = sizeof cbuf};
    ssize_t r = recvmsg(s->fd, &mh, MSG_DONTWAIT);
    int64_t now = now_ns(), now_rt = rt_ns();
    if (r <= 0)
        return;
    int64_t arrived = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(cm), sizeof ts);
            arrived = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        }
    s->got += (size_t)r;
    char *nl;
    while ((nl = memchr(s->buf, '\n', s->got))) {
        if (s->sent && s->sent >= from) {
            if (es->n == es->cap) {
                es->cap = es->cap ? es->cap * 2 : 4096;
                es->v = realloc(es->v, es->cap * sizeof *es->v);
                if (!es->v)
                    die("realloc");
            }
            int64_t srv = arrived ? arrived - s->sent_rt : 0;
            es->v[es->n++] = (struct echo_sample){now - s->sent, srv,
                                                  arrived ? now_rt - arrived : 0};
        }
        s->sent = 0;
        size_t used = (size_t)(nl - s->buf) + 1;
        memmove(s->buf, nl + 1, s->got - used);
        s->got -= used;
    }
}

/* The echo sessions, on a thread of their own (no login traffic of ours
 * on it): from is when measuring starts, end when everything stops. */
struct echo {
    struct session *ss;
    int n;
    int64_t period, from, end;
    struct echo_samples es;
    long lost;
    long long w0, n0, w1, n1;   /* this thread's schedstat, measured part */
    long long slice_ns;         /* asked for (0: the default), then in effect */
    int fifo;                   /* asked for SCHED_FIFO, then got it */
};

/* Ask the kernel for a time slice of ns for thread tid (0: this one;
 * EEVDF, Linux 6.12+): a waking thread with a shorter slice than the
 * running one preempts it at once instead of waiting for the runner's
 * protected slice to end. Best effort; returns the slice in effect (ns),
 * 0 if unknown. */
static long long set_slice(pid_t tid, long long ns)
{
    struct {
        uint32_t size, policy;
        uint64_t flags;
        int32_t nice;
        uint32_t prio;
        uint64_t runtime, deadline, period;
        uint32_t util_min, util_max;
    } a = {.size = sizeof a, .policy = SCHED_OTHER};
    if (!tid)
        tid = (pid_t)syscall(SYS_gettid);
    if (ns > 0) {
        a.runtime = (uint64_t)ns;
        errno = 0;
        a.nice = getpriority(PRIO_PROCESS, (id_t)tid);
        if (errno)
            return 0;
        (void)syscall(SYS_sched_setattr, tid, &a, 0);
    }
    memset(&a, 0, sizeof a);
    if (syscall(SYS_sched_getattr, tid, &a, sizeof a, 0) < 0)
        return 0;
    return (long long)a.runtime;
}

static void *echo_main(void *arg)
{
    struct echo *e = arg;
    pthread_setname_np(pthread_self(), "gen-echo");   /* for perf sched */
    e->slice_ns = set_slice(0, e->slice_ns);
    if (e->fifo) {
        /* The measuring thread out of the fair class (root only): its own
         * wake-up no longer waits behind our load threads or the server. */
        struct sched_param sp = {.sched_priority = 1};
        e->fifo = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    for (int i = 0; i < e->n; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &e->ss[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, e->ss[i].fd, &ev) < 0)
            die("epoll_ctl");
    }
    /* Spread the first requests over one period from now (unless instep).
     * The sessions logged in long before (the logins, the warm-up second),
     * so due times set then were all past and fired together: every
     * session ran in step for the whole run, 100 requests in one burst. */
    int64_t start = now_ns();
    for (int i = 0; i < e->n; i++)
        e->ss[i].due = start + (in_step ? 0 : e->period * i / e->n);
    int base_taken = 0;
    for (;;) {
        int64_t now = now_ns();
        if (now >= e->end)
            break;
        if (!base_taken && now >= e->from) {
            own_wait(&e->w0, &e->n0);
            base_taken = 1;
        }
        int64_t next = e->end;
        for (int i = 0; i < e->n; i++) {
            echo_send(&e->ss[i], now, e->period, &e->lost);
            if (!e->ss[i].sent && e->ss[i].due < next)
                next = e->ss[i].due;
        }
        /* A timeout in nanoseconds: epoll_wait's whole milliseconds would
         * send the requests due within one millisecond together. */
        int64_t wait = next > now ? next - now : 0;
        struct timespec ts = {.tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000};
        struct epoll_event evs[128];
        int n = epoll_pwait2(ep, evs, 128, &ts, NULL);
        for (int i = 0; i < n; i++)
            echo_read(evs[i].data.ptr, &e->es, e->from);
    }
    own_wait(&e->w1, &e->n1);
    close(ep);
    return NULL;
}

static int cmp_rtt(const void *a, const void *b)
{
    int64_t x = ((const struct echo_sample *)a)->rtt, y = ((const struct echo_sample *)b)->rtt;
    return (x > y) - (x < y);
}

/* Percentiles of the round trip and of its two parts; and, over the
 * slowest 1 % of round trips, the mean of each part: where the tail is. */
static void echo_report(struct echo *e)
{
    struct echo_samples *es = &e->es;
    struct samples rtt = {0}, srv = {0}, gen = {0};
    qsort(es->v, es->n, sizeof *es->v, cmp_rtt);
    double tail_srv = 0, tail_gen = 0;
    size_t tail0 = es->n - es->n / 100, ntail = 0;
    for (size_t i = 0; i < es->n; i++) {
        add(&rtt, es->v[i].rtt);
        add(&srv, es->v[i].srv);
        add(&gen, es->v[i].gen);
        if (i >= tail0) {
            tail_srv += (double)es->v[i].srv;
            tail_gen += (double)es->v[i].gen;
            ntail++;
        }
    }
    qsort(srv.v, srv.n, sizeof *srv.v, cmp64);
    qsort(gen.v, gen.n, sizeof *gen.v, cmp64);
    printf("echo_n=%zu echo_p50_us=%.1f echo_p99_us=%.1f echo_p999_us=%.1f "
           "echo_max_us=%.1f echo_lost=%ld srv_p50_us=%.1f srv_p99_us=%.1f "
           "srv_max_us=%.1f gen_p50_us=%.1f gen_p99_us=%.1f gen_max_us=%.1f "
           "tail_srv_us=%.1f tail_gen_us=%.1f gen_wait_us_per_slice=%.0f gen_slice_us=%.0f gen_fifo=%d",
           rtt.n, pct(&rtt, 0.5) / 1e3, pct(&rtt, 0.99) / 1e3,
           pct(&rtt, 0.999) / 1e3, rtt.n ? rtt.v[rtt.n - 1] / 1e3 : 0.0, e->lost,
           pct(&srv, 0.5) / 1e3, pct(&srv, 0.99) / 1e3,
           srv.n ? srv.v[srv.n - 1] / 1e3 : 0.0, pct(&gen, 0.5) / 1e3,
           pct(&gen, 0.99) / 1e3, gen.n ? gen.v[gen.n - 1] / 1e3 : 0.0,
           ntail ? tail_srv / (double)ntail / 1e3 : 0.0,
           ntail ? tail_gen / (double)ntail / 1e3 : 0.0,
           e->n1 > e->n0 ? (double)(e->w1 - e->w0) / (double)(e->n1 - e->n0) / 1e3 : 0.0,
           (double)e->slice_ns / 1e3, e->fifo);
    free(rtt.v);
    free(srv.v);
    free(gen.v);
}

/* Start k clients logging in with creds (in turn) over and over. */
static void start_logins(pthread_t *th, struct login_arg *la, int k,
                         struct creds *creds, struct login_stats *st)
{
    pthread_mutex_init(&st->mu, NULL);
    for (int i = 0; i < k; i++) {
        la[i] = (struct login_arg){.creds = creds, .st = st, .id = i};
        if (pthread_create(&th[i], NULL, login_main, &la[i]))
            die("pthread_create");
    }
}

static unsigned long answered(struct login_stats *st)
{
    return atomic_load(&st->ok) + atomic_load(&st->bad) + atomic_load(&st->busy);
}

/* "slow=N", "slowgap=MS", "wrong=N", "wronglogin=LIST", "echoslice=NS"
 * after the fixed arguments of latency; 0 if all were understood. */
static int latency_opts(int argc, char **argv, struct slow *sl, int *wrong,
                        struct creds *bad, long long *slice, int *fifo)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strncmp(a, "slow=", 5))
            sl->n = atoi(a + 5);
        else if (!strncmp(a, "slowgap=", 8))
            sl->gap_ms = atoi(a + 8);
        else if (!strncmp(a, "loadnice=", 9))
            load_nice = atoi(a + 9);
        else if (!strncmp(a, "echofifo=", 9))
            *fifo = atoi(a + 9);
        else if (!strncmp(a, "instep=", 7))
            in_step = atoi(a + 7);
        else if (!strncmp(a, "echoslice=", 10))
            *slice = atoll(a + 10);
        else if (!strncmp(a, "wrong=", 6))
            *wrong = atoi(a + 6);
        else if (!strncmp(a, "wronglogin=", 11)) {
            if (parse_creds(a + 11, bad) < 0)
                return -1;
        } else
            return -1;
    }
    return sl->n < 0 || sl->gap_ms < 1 || *wrong < 0 || *wrong > 256 ||
           (*wrong && !bad->n) ? -1 : 0;
}

static int latency(int argc, char **argv)
{
    struct slow sl = {.gap_ms = 1000};
    struct creds logins = {0}, echo = {0}, bad = {0};
    int wrong = 0;
    long long slice = 0;
    int fifo = 0;
    if (argc < 9) {
        fprintf(stderr, "usage: cw_bench_authload latency PORT SESSIONS RATE "
                "SECONDS K LOGIN ECHOUSER [slow=N] [slowgap=MS] [wrong=N] "
                "[wronglogin=LIST]\n");
        return 2;
    }
    port = atoi(argv[2]);
    int nsess = atoi(argv[3]), rate = atoi(argv[4]), secs = atoi(argv[5]);
    int k = atoi(argv[6]);
    if (nsess < 1 || rate < 1 || secs < 1 || k < 0 || k > 256 ||
        parse_creds(argv[7], &logins) < 0 || parse_creds(argv[8], &echo) < 0 ||
        latency_opts(argc - 9, argv + 9, &sl, &wrong, &bad, &slice, &fifo) < 0) {
        fprintf(stderr, "cw_bench_authload: bad arguments\n");
        return 2;
    }
    struct echo e = {.n = nsess, .period = 1000000000LL / rate, .slice_ns = slice, .fifo = fifo};
    e.ss = calloc((size_t)nsess, sizeof *e.ss);
    if (!e.ss)
        die("calloc");
    for (int i = 0; i < nsess; i++) {
        e.ss[i].fd = login_session(echo.line[0]);
    }
    static pthread_t th[256], wth[256], slth;
    static struct login_arg la[256], wla[256];
    struct login_stats ls = {0}, ws = {0};
    start_logins(th, la, k, &logins, &ls);
    start_logins(wth, wla, wrong, &bad, &ws);
    if (sl.n && pthread_create(&slth, NULL, slow_main, &sl))
        die("pthread_create");
    /* The first second warms the login pipeline up; then measure. */
    e.from = now_ns() + 1000000000LL;
    e.end = e.from + (int64_t)secs * 1000000000LL;
    pthread_t eth;
    if (pthread_create(&eth, NULL, echo_main, &e))
        die("pthread_create");
    struct timespec start = {.tv_sec = e.from / 1000000000, .tv_nsec = e.from % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &start, NULL) == EINTR) {
    }
    unsigned long ok0 = answered(&ls), bad0 = answered(&ws);
    long bytes0 = atomic_load(&sl.bytes), redials0 = atomic_load(&sl.redials);
    pthread_join(eth, NULL);
    unsigned long done = answered(&ls) - ok0, wdone = answered(&ws) - bad0;
    long bytes = atomic_load(&sl.bytes) - bytes0, redials = atomic_load(&sl.redials) - redials0;
    running = 0;
    for (int i = 0; i < k; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < wrong; i++)
        pthread_join(wth[i], NULL);
    if (sl.n)
        pthread_join(slth, NULL);
    for (int i = 0; i < nsess; i++)
        finish(e.ss[i].fd);
    qsort(ls.rtt.v, ls.rtt.n, sizeof *ls.rtt.v, cmp64);
    echo_report(&e);
    printf(" logins=%lu logins_per_s=%.1f login_p50_ms=%.1f login_p99_ms=%.1f "
           "ok=%lu bad=%lu busy=%lu other=%lu wrong_per_s=%.1f wrong_bad=%lu "
           "wrong_other=%lu slow_conns=%d slow_bytes_per_s=%.1f slow_redials=%ld\n",
           done, (double)done / secs, pct(&ls.rtt, 0.5) / 1e6,
           pct(&ls.rtt, 0.99) / 1e6, atomic_load(&ls.ok), atomic_load(&ls.bad),
           atomic_load(&ls.busy), atomic_load(&ls.other), (double)wdone / secs,
           atomic_load(&ws.bad), atomic_load(&ws.other) + atomic_load(&ws.ok) +
           atomic_load(&ws.busy), sl.n, (double)bytes / secs, redials);
    free(e.es.v);
    free(ls.rtt.v);
    free(ws.rtt.v);
    free(e.ss);
    return 0;
}

/* ---- soak ---- */

enum kind {
    K_YES_OK, K_YES_BAD, K_SIX_OK, K_SIX_BAD, K_ECHO, K_RESET_MIDLINE,
    K_HALF_CLOSE, K_NEVER_READ, K_IDLE, K_LEAVE_MID_CHECK, K_QUIT, K_NKINDS
};

/* name, weight per 10,000: the hashes are the costly part (a yescrypt
 * check is tens of ms of CPU), so they are a small share of a million */
static const struct {
    const char *name;
    int weight;
} kinds[K_NKINDS] = {
    [K_YES_OK] = {"yescrypt-ok", 8},     [K_YES_BAD] = {"yescrypt-bad", 8},
    [K_SIX_OK] = {"sha512-ok", 100},     [K_SIX_BAD] = {"sha512-bad", 100},
    [K_ECHO] = {"echo", 1000},           [K_RESET_MIDLINE] = {"reset-midline", 1500},
    [K_HALF_CLOSE] = {"half-close", 2000}, [K_NEVER_READ] = {"never-read", 4},
    [K_IDLE] = {"idle-timeout", 30},     [K_LEAVE_MID_CHECK] = {"leave-mid-check", 10},
    [K_QUIT] = {"quit", 0},              /* the rest */
};

struct soak {
    struct creds yes, six, cheap;
    char yes_bad[256], six_bad[256];
    atomic_long next;           /* connections started */
    long count;
    int64_t end;
    atomic_long done[K_NKINDS], failed[K_NKINDS];
    pthread_mutex_t mu;
    char first_failure[256];
};

static int soak_dial(unsigned *seed)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in me = {.sin_family = AF_INET};
    me.sin_addr.s_addr = htonl(0x7F000000u | (1 + rand_r(seed) % 0xFFFFFE));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {.tv_sec = 30};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (bind(fd, (struct sockaddr *)&me, sizeof me) < 0 ||
        connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Read to EOF; 0 if the last line was want (NULL: any) and then EOF. */
static int read_to_end(int fd, const char *want)
{
    char buf[4096], last[256] = "";
    size_t ll = 0;
    int nl = 1;
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r == 0)
            break;
        if (r < 0)
            return -1;   /* reset or timeout: the last line may be lost */
        for (ssize_t i = 0; i < r; i++) {
            if (nl) {
                ll = 0;
                nl = 0;
            }
            if (buf[i] == '\n') {
                last[ll] = '\0';
                nl = 1;
            } else if (ll + 1 < sizeof last) {
                last[ll++] = buf[i];
            }
        }
    }
    if (!nl)
        return -1;   /* a partial line */
    return want && strcmp(last, want) ? -1 : 0;
}

static void set_linger0(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

/* One connection of kind k; 0 if it went as it should. */
static int soak_one(struct soak *sk, enum kind k, unsigned *seed)
{
    int fd = soak_dial(seed);
    if (fd < 0)
        return -1;
    char line[256];
    int rc = 0;
    switch (k) {
    case K_YES_OK:
    case K_SIX_OK:
    case K_ECHO: {
        const char *auth = k == K_YES_OK ? sk->yes.line[0]
                         : k == K_SIX_OK ? sk->six.line[0] : sk->cheap.line[0];
        rc = send_str(fd, auth) || read_line(fd, line, sizeof line) < 0 ||
             strcmp(line, "OK");
        for (int i = 0; !rc && k == K_ECHO && i < 5; i++)
            rc = send_str(fd, "ECHO soak\n") || read_line(fd, line, sizeof line) < 0 ||
                 strcmp(line, "soak");
        if (!rc)
            rc = send_str(fd, "QUIT\n") || read_to_end(fd, "BYE");
        break;
    }
    case K_YES_BAD:
    case K_SIX_BAD: {
        rc = send_str(fd, k == K_YES_BAD ? sk->yes_bad : sk->six_bad);
        if (!rc) {
            /* the throttle may have spoken first: also a final line */
            char last[64];
            rc = read_line(fd, last, sizeof last) < 0 ||
                 (strcmp(last, "ERR bad credentials") && strcmp(last, "ERR too many failures") &&
                  strcmp(last, "ERR busy"));
            if (!rc)
                rc = read_to_end(fd, NULL);
        }
        break;
    }
    case K_RESET_MIDLINE:
        send_str(fd, "ECHO half a li");
        set_linger0(fd);
        break;
    case K_HALF_CLOSE:
        /* a request, then our FIN: the reply and the server's FIN come */
        rc = send_str(fd, "QUIT\n");
        shutdown(fd, SHUT_WR);
        if (!rc)
            rc = read_to_end(fd, "BYE");
        break;
    case K_NEVER_READ: {
        char big[1000];
        memset(big, 'x', sizeof big);
        memcpy(big, "ECHO ", 5);
        big[sizeof big - 1] = '\n';
        rc = send_str(fd, sk->cheap.line[0]);
        struct timeval tv = {.tv_sec = 2};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        /* until the server stops reading us (its replies back up) */
        for (int i = 0; !rc && i < 2000; i++)
            if (send(fd, big, sizeof big, MSG_NOSIGNAL) < 0)
                break;
        /* the server's write timeout resets us; leave either way */
        set_linger0(fd);
        rc = 0;
        break;
    }
    case K_IDLE:
        rc = read_to_end(fd, "ERR login timeout") && read_to_end(fd, "ERR idle timeout");
        break;
    case K_LEAVE_MID_CHECK:
        send_str(fd, sk->yes.line[0]);
        usleep(1000);
        if (rand_r(seed) & 1)
            set_linger0(fd);
        break;
    default:
        rc = send_str(fd, "QUIT\n") || read_to_end(fd, "BYE");
        break;
    }
    close(fd);
    return rc;
}

static enum kind pick(unsigned *seed)
{
    int r = rand_r(seed) % 10000;
    for (int k = 0; k < K_NKINDS; k++) {
        if (r < kinds[k].weight)
            return (enum kind)k;
        r -= kinds[k].weight;
    }
    return K_QUIT;
}

static void *soak_main(void *arg)
{
    struct soak *sk = arg;
    unsigned seed = (unsigned)now_ns() ^ (unsigned)(uintptr_t)&seed;
    while (atomic_fetch_add(&sk->next, 1) < sk->count && now_ns() < sk->end) {
        enum kind k = pick(&seed);
        int rc = soak_one(sk, k, &seed);
        atomic_fetch_add(&sk->done[k], 1);
        if (rc) {
            atomic_fetch_add(&sk->failed[k], 1);
            pthread_mutex_lock(&sk->mu);
            if (!sk->first_failure[0])
                snprintf(sk->first_failure, sizeof sk->first_failure, "%s", kinds[k].name);
            pthread_mutex_unlock(&sk->mu);
        }
    }
    return NULL;
}

static int soak(int argc, char **argv)
{
    if (argc != 9) {
        fprintf(stderr, "usage: cw_bench_authload soak PORT COUNT CONC MAXSECS "
                "YES SIX CHEAP\n");
        return 2;
    }
    static struct soak sk;
    port = atoi(argv[2]);
    sk.count = atol(argv[3]);
    int conc = atoi(argv[4]), secs = atoi(argv[5]);
    if (sk.count < 1 || conc < 1 || conc > 4096 || secs < 1 ||
        parse_creds(argv[6], &sk.yes) < 0 || parse_creds(argv[7], &sk.six) < 0 ||
        parse_creds(argv[8], &sk.cheap) < 0) {
        fprintf(stderr, "cw_bench_authload: bad arguments\n");
        return 2;
    }
    /* Wrong passwords go to the second account of YES and SIX, so that
     * the per-account throttle (rightly) locks those, not the accounts
     * that log in with the right password. */
    if (sk.yes.n < 2 || sk.six.n < 2) {
        fprintf(stderr, "cw_bench_authload: YES and SIX need a second account "
                "for wrong passwords (user:pw,baduser:pw)\n");
        return 2;
    }
    snprintf(sk.yes_bad, sizeof sk.yes_bad, "%.*sX\n", (int)strlen(sk.yes.line[1]) - 1,
             sk.yes.line[1]);
    snprintf(sk.six_bad, sizeof sk.six_bad, "%.*sX\n", (int)strlen(sk.six.line[1]) - 1,
             sk.six.line[1]);
    pthread_mutex_init(&sk.mu, NULL);
    int64_t t0 = now_ns();
    sk.end = t0 + (int64_t)secs * 1000000000LL;
    pthread_t *th = calloc((size_t)conc, sizeof *th);
    if (!th)
        die("calloc");
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < conc; i++)
        if (pthread_create(&th[i], &attr, soak_main, &sk))
            die("pthread_create");
    for (int i = 0; i < conc; i++)
        pthread_join(th[i], NULL);
    double el = (double)(now_ns() - t0) / 1e9;
    long total = 0, failed = 0;
    for (int k = 0; k < K_NKINDS; k++) {
        total += atomic_load(&sk.done[k]);
        failed += atomic_load(&sk.failed[k]);
    }
    printf("connections=%ld seconds=%.1f per_s=%.0f failed=%ld", total, el,
           (double)total / el, failed);
    for (int k = 0; k < K_NKINDS; k++)
        printf(" %s=%ld/%ld", kinds[k].name, atomic_load(&sk.done[k]),
               atomic_load(&sk.failed[k]));
    printf(" first_failure=%s\n", sk.first_failure[0] ? sk.first_failure : "none");
    free(th);
    return failed ? 1 : 0;
}

/* ---- floor: the least an echo costs on this machine ---- */

struct fconn {
    int fd;
    size_t n;
    char buf[512];
};

static volatile sig_atomic_t floor_stop;
static void on_term(int sig)
{
    (void)sig;
    floor_stop = 1;
}

/* Answer every whole line in c->buf; 0, or -1 to drop the connection. */
static int floor_lines(struct fconn *c)
{
    char *nl;
    while ((nl = memchr(c->buf, '\n', c->n))) {
        size_t len = (size_t)(nl - c->buf) + 1;
        const char *out = "ERR\n";
        size_t olen = 4;
        if (len >= 5 && !memcmp(c->buf, "AUTH ", 5)) {
            out = "OK\n";
            olen = 3;
        } else if (len >= 5 && !memcmp(c->buf, "ECHO ", 5)) {
            out = c->buf + 5;
            olen = len - 5;
        }
        if (send(c->fd, out, olen, MSG_NOSIGNAL) != (ssize_t)olen)
            return -1;
        memmove(c->buf, c->buf + len, c->n - len);
        c->n -= len;
    }
    return c->n == sizeof c->buf ? -1 : 0;
}

static int floor_server(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: cw_bench_authload floor PORTFILE\n");
        return 2;
    }
    signal(SIGTERM, on_term);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) < 0)
        die("listen");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev) < 0)
        die("epoll");
    FILE *pf = fopen(argv[2], "w");
    if (!pf || fprintf(pf, "%d\n", ntohs(a.sin_port)) < 0 || fclose(pf) != 0)
        die(argv[2]);
    struct epoll_event evs[64];
    while (!floor_stop) {
        int n = epoll_wait(ep, evs, 64, 200);
        for (int i = 0; i < n; i++) {
            struct fconn *c = evs[i].data.ptr;
            if (!c) {
                int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0)
                    continue;
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                c = calloc(1, sizeof *c);
                if (!c)
                    die("calloc");
                c->fd = fd;
                ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = c};
                if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
                    die("epoll_ctl");
                continue;
            }
            ssize_t r = recv(c->fd, c->buf + c->n, sizeof c->buf - c->n, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r > 0) {
                c->n += (size_t)r;
                if (floor_lines(c) == 0)
                    continue;
            }
            close(c->fd);   /* EOF, error or an overlong line */
            free(c);
        }
    }
    return 0;
}

/* cw_bench_authload slice NS TID...: the A/B of a short slice for the
 * server's loop threads, applied from outside (bench/authload.sh). */
static int slice(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: cw_bench_authload slice NS TID...\n");
        return 2;
    }
    long long ns = atoll(argv[2]);
    int rc = 0;
    for (int i = 3; i < argc; i++)
        if (set_slice((pid_t)atoi(argv[i]), ns) != ns)
            rc = 3;   /* not applied: the row says so */
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "slice"))
        return slice(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "latency"))
        return latency(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "soak"))
        return soak(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "floor"))
        return floor_server(argc, argv);
    fprintf(stderr, "usage: cw_bench_authload latency ... (see bench/authload.c)\n");
    return 2;
}
