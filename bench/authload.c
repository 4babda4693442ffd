/* authload.c - cw_bench_authload: the reference server under login load
 * (bench/authload.sh). Loopback only, bounded in time. Prints one line of
 * key=value pairs on stdout.
 *
 *   cw_bench_authload latency PORT SESSIONS RATE SECONDS K LOGIN ECHOUSER
 *     SESSIONS sessions log in as ECHOUSER ("user:password") and then
 *     each sends "ECHO" RATE times a second (one request outstanding per
 *     session), while K clients log in as LOGIN ("user:password[,...]",
 *     taken in turn) over and over: connect, AUTH, read the reply, then
 *     half-close and read to EOF. Reports the ECHO round trip (p50, p99,
 *     p99.9, max in microseconds), echoes lost (no reply within 5 s),
 *     logins/s, the login round trip (p50, p99 in ms) and how logins were
 *     answered (ok, bad, busy, other), and how long the echo thread itself
 *     waited on a run queue per time slice (a busy machine's share of the
 *     round trip). K = 0: the echo sessions alone.
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
 * their load is). */
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
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LOST_NS 5000000000LL
#define MAX_LOGINS 16

static int port;
static volatile int running = 1;

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

/* ---- echo sessions ---- */

struct session {
    int fd;
    int64_t sent;       /* ns of the outstanding request, 0 = none */
    int64_t due;        /* next request */
    size_t got;
    char buf[64];
};

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
    int64_t t = now_ns();   /* not now: earlier sends of this round took time */
    if (send_str(s->fd, "ECHO ping\n") < 0) {
        (*lost)++;
        s->due = now + period;
        return;
    }
    s->sent = t;
    s->due += period;
    if (s->due < now)
        s->due = now;   /* fell behind: no burst to catch up */
}

static void echo_read(struct session *s, struct samples *rtt, int64_t from)
{
    ssize_t r = recv(s->fd, s->buf + s->got, sizeof s->buf - s->got, MSG_DONTWAIT);
    if (r <= 0)
        return;
    s->got += (size_t)r;
    char *nl;
    while ((nl = memchr(s->buf, '\n', s->got))) {
        int64_t now = now_ns();
        if (s->sent && s->sent >= from)
            add(rtt, now - s->sent);
        s->sent = 0;
        size_t used = (size_t)(nl - s->buf) + 1;
        memmove(s->buf, nl + 1, s->got - used);
        s->got -= used;
    }
}

static int latency(int argc, char **argv)
{
    if (argc != 9) {
        fprintf(stderr, "usage: cw_bench_authload latency PORT SESSIONS RATE "
                "SECONDS K LOGIN ECHOUSER\n");
        return 2;
    }
    port = atoi(argv[2]);
    int nsess = atoi(argv[3]), rate = atoi(argv[4]), secs = atoi(argv[5]);
    int k = atoi(argv[6]);
    struct creds logins = {0}, echo = {0};
    if (nsess < 1 || rate < 1 || secs < 1 || k < 0 ||
        parse_creds(argv[7], &logins) < 0 || parse_creds(argv[8], &echo) < 0) {
        fprintf(stderr, "cw_bench_authload: bad arguments\n");
        return 2;
    }
    struct session *ss = calloc((size_t)nsess, sizeof *ss);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (!ss || ep < 0)
        die("setup");
    int64_t period = 1000000000LL / rate;
    int64_t t = now_ns();
    for (int i = 0; i < nsess; i++) {
        ss[i].fd = login_session(echo.line[0]);
        ss[i].due = t + period * i / nsess;   /* spread over one period */
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &ss[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, ss[i].fd, &ev) < 0)
            die("epoll_ctl");
    }
    struct login_stats ls = {0};
    pthread_mutex_init(&ls.mu, NULL);
    pthread_t th[256];
    struct login_arg la[256];
    if (k > 256)
        k = 256;
    for (int i = 0; i < k; i++) {
        la[i] = (struct login_arg){.creds = &logins, .st = &ls, .id = i};
        if (pthread_create(&th[i], NULL, login_main, &la[i]))
            die("pthread_create");
    }
    /* The first second warms the login pipeline up; then measure. */
    struct samples rtt = {0};
    long lost = 0;
    int64_t from = now_ns() + 1000000000LL;
    int64_t end = from + (int64_t)secs * 1000000000LL;
    unsigned long ok0 = 0;
    int base_taken = 0;
    long long w0 = 0, n0 = 0, w1, n1;
    for (;;) {
        int64_t now = now_ns();
        if (now >= end)
            break;
        if (!base_taken && now >= from) {
            ok0 = atomic_load(&ls.ok) + atomic_load(&ls.bad) + atomic_load(&ls.busy);
            base_taken = 1;
            own_wait(&w0, &n0);
        }
        int64_t next = end;
        for (int i = 0; i < nsess; i++) {
            echo_send(&ss[i], now, period, &lost);
            if (!ss[i].sent && ss[i].due < next)
                next = ss[i].due;
        }
        int wait_ms = next > now ? (int)((next - now + 999999) / 1000000) : 0;
        struct epoll_event evs[128];
        int n = epoll_wait(ep, evs, 128, wait_ms);
        for (int i = 0; i < n; i++)
            echo_read(evs[i].data.ptr, &rtt, from);
    }
    unsigned long answered = atomic_load(&ls.ok) + atomic_load(&ls.bad) +
                             atomic_load(&ls.busy) - ok0;
    own_wait(&w1, &n1);
    running = 0;
    for (int i = 0; i < k; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < nsess; i++)
        finish(ss[i].fd);
    close(ep);
    qsort(rtt.v, rtt.n, sizeof *rtt.v, cmp64);
    qsort(ls.rtt.v, ls.rtt.n, sizeof *ls.rtt.v, cmp64);
    printf("echo_n=%zu echo_p50_us=%.1f echo_p99_us=%.1f echo_p999_us=%.1f "
           "echo_max_us=%.1f echo_lost=%ld logins=%lu logins_per_s=%.1f "
           "login_p50_ms=%.1f login_p99_ms=%.1f ok=%lu bad=%lu busy=%lu other=%lu "
           "gen_wait_us_per_slice=%.0f\n",
           rtt.n, pct(&rtt, 0.5) / 1e3, pct(&rtt, 0.99) / 1e3,
           pct(&rtt, 0.999) / 1e3, rtt.n ? rtt.v[rtt.n - 1] / 1e3 : 0.0, lost,
           answered, (double)answered / secs, pct(&ls.rtt, 0.5) / 1e6,
           pct(&ls.rtt, 0.99) / 1e6, atomic_load(&ls.ok), atomic_load(&ls.bad),
           atomic_load(&ls.busy), atomic_load(&ls.other),
           n1 > n0 ? (double)(w1 - w0) / (double)(n1 - n0) / 1e3 : 0.0);
    free(rtt.v);
    free(ls.rtt.v);
    free(ss);
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

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "latency"))
        return latency(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "soak"))
        return soak(argc, argv);
    fprintf(stderr, "usage: cw_bench_authload latency ... (see bench/authload.c)\n");
    return 2;
}
