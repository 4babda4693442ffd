/* closesplit.c - cw_bench_closesplit: where the close latency of
 * `cw_bench_load idle` goes, from a kernel trace of the run (bench/servers.sh).
 *
 *   cw_bench_closesplit SERVER_PORT CLOSELOG [SERVER_TID...] < TRACE
 *
 * CLOSELOG: the generator's "PORT T_SHUTDOWN T_EOF" lines (CLOCK_MONOTONIC
 * ns). TRACE: `perf script --ns -F tid,time,event,trace` of a recording
 * made with -k CLOCK_MONOTONIC (the same clock) of sock:inet_sock_set_state
 * on the server's port, and of sched:sched_switch and sched:sched_wakeup
 * for the server's and the generator's threads.
 *
 * Every close is split in three at its socket state changes:
 *   srv  our FIN reaching the server's socket (ESTABLISHED -> CLOSE_WAIT)
 *        to the server's FIN leaving it (CLOSE_WAIT -> LAST_ACK): the
 *        server's wake-up and work, nothing of ours;
 *   net  the two FINs' way through loopback (our FIN_WAIT1 to its
 *        CLOSE_WAIT, its LAST_ACK to our socket leaving FIN_WAIT);
 *   gen  the rest: our shutdown() entering the kernel, and the server's
 *        FIN reaching our loop (the generator's wake-up).
 * And inside srv and gen, how long that process's thread was runnable but
 * not running (its run-queue wait: woken, or preempted, until switched
 * in), and which task ran on the core when that wait ended; and how long
 * the server's thread was on a core inside srv (its own work then: this
 * close's, or others' ahead of it).
 * Prints key=value pairs: p50/p99/max of each part; over the slowest 1 %
 * of closes, the mean of each part (tail_*_us) and of each wait
 * (tail_srv_wait_us, tail_gen_wait_us), the task the server waited
 * behind longest there (tail_srv_behind; "self:" + its name when it is one
 * of SERVER_TID..., the server's own threads), and each one's time on a
 * core, from the FIN's arrival at its socket (tail_srv_run_us,
 * tail_gen_run_us). */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPORT 65536
#define MAX_WAITS (1 << 21)     /* run-queue waits kept; more are dropped */

/* Kernel times of one connection's close, ns; 0: not seen. */
struct fin_times {
    int64_t our_fin, srv_got, srv_fin, we_got;
    int srv_tid, gen_tid;       /* who made the server's FIN and ours */
};

/* A thread runnable but not running (or, run set, running), [from, to),
 * and who ran at the end of a wait. */
struct wait {
    int64_t from, to;
    int tid, run;
    char behind[24];
};

/* The threads the trace follows (the filter keeps the generator and the
 * processes named as the server: the seed's has one per connection): on a
 * core, waiting for one since a time, or asleep. */
#define NTHREAD 65536           /* a hash table: more threads are not followed */
struct thread {
    int key;                    /* tid + 1; 0: free slot */
    int running;
    int64_t since;              /* 0: not waiting */
    int64_t on;                 /* switched in at; 0: unknown */
};

struct trace {
    char **self;                /* the server's thread ids (argv) */
    int nself;
    struct fin_times *fin;
    struct wait *w;
    size_t nw;
    struct thread *th;          /* NTHREAD slots */
    int nth;
};

static void die(const char *what)
{
    fprintf(stderr, "cw_bench_closesplit: %s: %s\n", what, strerror(errno));
    exit(3);
}

static const char *field(const char *line, const char *key)
{
    const char *p = strstr(line, key);
    return p ? p + strlen(key) : NULL;
}

static int starts(const char *s, const char *with)
{
    return s && !strncmp(s, with, strlen(with));
}

static void tcp_event(struct trace *t, const char *line, int tid, int64_t ts, unsigned srv_port)
{
    const char *sp = field(line, " sport="), *dp = field(line, " dport=");
    const char *os = field(line, " oldstate=TCP_"), *ns = field(line, " newstate=TCP_");
    if (!sp || !dp || !os || !ns)
        return;
    unsigned src = (unsigned)atoi(sp), dst = (unsigned)atoi(dp);
    if (dst == srv_port && src < NPORT) {            /* our socket */
        struct fin_times *c = &t->fin[src];
        if (starts(os, "ESTABLISHED ") && starts(ns, "FIN_WAIT1")) {
            c->our_fin = ts;
            c->gen_tid = tid;
        } else if (!c->we_got && (starts(os, "FIN_WAIT1 ") || starts(os, "FIN_WAIT2 ")) &&
                   !starts(ns, "FIN_WAIT2")) {       /* the server's FIN came */
            c->we_got = ts;
        }
    } else if (src == srv_port && dst < NPORT) {     /* the server's */
        struct fin_times *c = &t->fin[dst];
        if (starts(os, "ESTABLISHED ") && starts(ns, "CLOSE_WAIT")) {
            c->srv_got = ts;
        } else if (starts(os, "CLOSE_WAIT ")) {
            c->srv_fin = ts;
            c->srv_tid = tid;
        }
    }
}

/* tid's slot; add: make one if there is none (NULL when full). */
static struct thread *thread_find(struct trace *t, int tid, int add)
{
    unsigned h = ((unsigned)tid * 2654435761u) % NTHREAD;
    for (unsigned n = 0; n < NTHREAD; n++, h = (h + 1) % NTHREAD) {
        if (t->th[h].key == tid + 1)
            return &t->th[h];
        if (!t->th[h].key) {
            if (!add || t->nth == NTHREAD / 2)
                return NULL;
            t->nth++;
            t->th[h] = (struct thread){.key = tid + 1};
            return &t->th[h];
        }
    }
    return NULL;
}

static struct thread *thread(struct trace *t, int tid)
{
    return thread_find(t, tid, 1);
}

/* Runnable from ts on, unless on a core (a wake-up of a running thread
 * that had not slept yet) or already waiting. */
static void wait_begin(struct trace *t, int tid, int64_t ts)
{
    struct thread *th = thread(t, tid);
    if (th && !th->running && !th->since)
        th->since = ts;
}

/* Switched in at ts: a wait, if any, ends; behind (thread prev) ran until
 * then. */
static void switched_in(struct trace *t, int tid, int64_t ts, const char *behind, int prev)
{
    struct thread *th = thread(t, tid);
    if (!th)
        return;
    if (th->since && t->nw < MAX_WAITS) {
        struct wait *w = &t->w[t->nw++];
        *w = (struct wait){.from = th->since, .to = ts, .tid = tid};
        int self = 0;
        for (int i = 0; i < t->nself; i++)
            self |= atoi(t->self[i]) == prev;
        snprintf(w->behind, sizeof w->behind, "%s%.*s", self ? "self:" : "",
                 (int)strcspn(behind, " "), behind);
    }
    th->since = 0;
    th->running = 1;
    th->on = ts;
}

static void switched_out(struct trace *t, int tid, int64_t ts)
{
    struct thread *th = thread(t, tid);
    if (!th)
        return;
    if (th->on && t->nw < MAX_WAITS)
        t->w[t->nw++] = (struct wait){.from = th->on, .to = ts, .tid = tid, .run = 1};
    th->running = 0;
    th->since = th->on = 0;
}

static void sched_event(struct trace *t, const char *ev, const char *line, int64_t ts)
{
    if (!strcmp(ev, "sched:sched_wakeup:")) {
        const char *pid = field(line, " pid=");
        if (pid)
            wait_begin(t, atoi(pid), ts);
        return;
    }
    const char *prev = field(line, " prev_pid="), *state = field(line, " prev_state=");
    const char *next = field(line, " next_pid="), *pcomm = field(line, "prev_comm=");
    if (!prev || !state || !next || !pcomm)
        return;
    switched_out(t, atoi(prev), ts);
    if (state[0] == 'R')                             /* preempted: still runnable */
        wait_begin(t, atoi(prev), ts);
    switched_in(t, atoi(next), ts, pcomm, atoi(prev));
}

static void read_trace(struct trace *t, FILE *in, unsigned srv_port)
{
    char line[1024], ev[64], frac[16];
    int tid;
    long long sec;
    while (fgets(line, sizeof line, in)) {
        if (sscanf(line, " %d %lld.%9[0-9]: %63s", &tid, &sec, frac, ev) != 4)
            continue;
        size_t fl = strlen(frac);
        int64_t ts = sec * 1000000000LL + strtoll(frac, NULL, 10) * (fl == 9 ? 1 : fl == 6 ? 1000 : 0);
        if (!strcmp(ev, "sock:inet_sock_set_state:"))
            tcp_event(t, line, tid, ts, srv_port);
        else
            sched_event(t, ev, line, ts);
    }
}

/* How long tid waited for a core (run 0) or ran (run 1) within [a, b); tl
 * gets, per task name, the waits it ended. */
struct tally {
    char name[24];
    int64_t ns;
};

static int64_t waited(const struct trace *t, int tid, int run, int64_t a, int64_t b,
                      struct tally *tl, int *ntl, int maxtl)
{
    int64_t sum = 0;
    for (size_t i = 0; i < t->nw; i++) {
        const struct wait *w = &t->w[i];
        if (w->tid != tid || w->run != run || w->to <= a || w->from >= b)
            continue;
        int64_t d = (w->to < b ? w->to : b) - (w->from > a ? w->from : a);
        sum += d;
        if (!tl)
            continue;
        int k = 0;
        while (k < *ntl && strcmp(tl[k].name, w->behind))
            k++;
        if (k == *ntl && *ntl < maxtl)
            snprintf(tl[(*ntl)++].name, sizeof tl[0].name, "%s", w->behind);
        if (k < *ntl)
            tl[k].ns += d;
    }
    return sum;
}

/* One close: its total and parts, ns. */
struct close_row {
    int64_t all, srv, net, gen;
    int64_t t1;                 /* the EOF in our loop (CLOCK_MONOTONIC) */
    uint16_t port;
};

static int by_all(const void *x, const void *y)
{
    int64_t a = ((const struct close_row *)x)->all, b = ((const struct close_row *)y)->all;
    return (a > b) - (a < b);
}

static int cmp64(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

/* Nearest-rank percentile of n sorted values, in us. */
static long long pct_us(const int64_t *v, size_t n, double q)
{
    if (!n)
        return 0;
    size_t i = (size_t)(q * (double)n + 0.999999);
    return (long long)(v[i ? i - 1 : 0] / 1000);
}

static void print_part(const char *name, struct close_row *r, size_t n, size_t off)
{
    int64_t *v = malloc((n ? n : 1) * sizeof *v);
    if (!v)
        die("malloc");
    for (size_t i = 0; i < n; i++)
        v[i] = *(const int64_t *)((const char *)&r[i] + off);
    qsort(v, n, sizeof *v, cmp64);
    printf(" close_%s_p50_us=%lld close_%s_p99_us=%lld close_%s_max_us=%lld", name,
           pct_us(v, n, 0.5), name, pct_us(v, n, 0.99), name, n ? (long long)(v[n - 1] / 1000) : 0);
    free(v);
}

static void report(struct trace *t, struct close_row *r, size_t n, size_t logged)
{
    printf("traced=%zu/%zu", n, logged);
    print_part("srv", r, n, offsetof(struct close_row, srv));
    print_part("net", r, n, offsetof(struct close_row, net));
    print_part("gen", r, n, offsetof(struct close_row, gen));
    qsort(r, n, sizeof *r, by_all);
    size_t nt = n ? (n / 100 ? n / 100 : 1) : 0, from = n - nt;   /* at least one */
    double s = 0, ne = 0, g = 0, sw = 0, gw = 0, sr = 0, gr = 0;
    struct tally tl[32] = {{{0}, 0}};
    int ntl = 0, seen = 0;
    for (size_t i = from; i < n; i++) {
        const struct fin_times *c = &t->fin[r[i].port];
        seen += thread_find(t, c->srv_tid, 0) != NULL;
        s += (double)r[i].srv, ne += (double)r[i].net, g += (double)r[i].gen;
        sw += (double)waited(t, c->srv_tid, 0, c->srv_got, c->srv_fin, tl, &ntl, 32);
        sr += (double)waited(t, c->srv_tid, 1, c->srv_got, c->srv_fin, NULL, NULL, 0);
        gw += (double)waited(t, c->gen_tid, 0, c->we_got, r[i].t1, NULL, NULL, 0);
        gr += (double)waited(t, c->gen_tid, 1, c->we_got, r[i].t1, NULL, NULL, 0);
    }
    int top = -1;
    for (int k = 0; k < ntl; k++)
        if (top < 0 || tl[k].ns > tl[top].ns)
            top = k;
    double d = nt ? (double)nt * 1000 : 1;
    printf(" tail_srv_us=%.0f tail_net_us=%.0f tail_gen_us=%.0f", s / d, ne / d, g / d);
    if (seen)   /* else the server's threads were not in the trace: no numbers */
        printf(" tail_srv_wait_us=%.0f tail_gen_wait_us=%.0f tail_srv_behind=%s tail_srv_run_us=%.0f"
               " tail_gen_run_us=%.0f",
               sw / d, gw / d, top >= 0 && tl[top].ns > 0 ? tl[top].name : "-", sr / d, gr / d);
    printf("\n");
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: cw_bench_closesplit SERVER_PORT CLOSELOG [SERVER_TID...] < TRACE\n");
        return 2;
    }
    unsigned srv_port = (unsigned)atoi(argv[1]);
    FILE *log = fopen(argv[2], "re");
    struct trace t = {.self = argv + 3, .nself = argc - 3, .fin = calloc(NPORT, sizeof *t.fin),
                      .w = malloc(MAX_WAITS * sizeof *t.w), .th = calloc(NTHREAD, sizeof *t.th)};
    struct close_row *r = malloc(NPORT * sizeof *r);
    if (!log || !t.fin || !t.w || !t.th || !r)
        die(argv[2]);
    read_trace(&t, stdin, srv_port);
    unsigned port;
    long long t0, t1;
    size_t n = 0, logged = 0;
    /* t0, t1: the generator's clock reads, on the trace's clock. */
    while (fscanf(log, "%u %lld %lld", &port, &t0, &t1) == 3 && n < NPORT) {
        logged++;
        const struct fin_times *c = &t.fin[port & 0xffff];
        if (!c->our_fin || !c->srv_got || !c->srv_fin || !c->we_got)
            continue;
        int64_t srv = c->srv_fin - c->srv_got;
        int64_t net = (c->srv_got - c->our_fin) + (c->we_got - c->srv_fin);
        int64_t all = t1 - t0;
        r[n++] = (struct close_row){all, srv, net, all - srv - net, t1, (uint16_t)port};
    }
    fclose(log);
    report(&t, r, n, logged);
    free(t.fin);
    free(t.w);
    free(t.th);
    free(r);
    return 0;
}
