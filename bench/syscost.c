/* syscost.c - what three kernel-side items of a churn connection cost by
 * themselves, measured apart from the churn (whose timing a shared
 * machine drowns): each is an A/B in one process, alternated ROUNDS
 * times, minimum and median per operation of each side.
 *
 *   del:    EPOLL_CTL_DEL before close() against close() alone (which
 *           leaves the epoll set by itself when no other reference to the
 *           file exists), 500 AF_UNIX sockets registered per round;
 *   hrtimer: CPU time of a thread woken through epoll_wait, with a 5 s
 *           timeout (the kernel arms and cancels an hrtimer for every
 *           sleep) against -1 (no timer); the waker is a second thread;
 *   thread: a descriptor system call (recv on an empty socket: EAGAIN) in
 *           a single-threaded process, then with one idle thread started
 *           (glibc's cancellation wrapper and the kernel's file reference
 *           per descriptor lookup, both paid only with threads).
 *
 * Usage: cw_bench_syscost [ROUNDS]  (default 30); pin it (taskset -c 0)
 * for steadier numbers. The thread part runs last: once a thread exists
 * the process cannot become single-threaded again. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEL_N 500
#define WAKE_N 20000
#define CALL_N 200000
#define MAX_ROUNDS 1000

static int64_t clock_ns(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void die(const char *what)
{
    perror(what);
    exit(3);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, const char *a, double *va, const char *b,
                   double *vb, int n)
{
    qsort(va, (size_t)n, sizeof *va, cmp);
    qsort(vb, (size_t)n, sizeof *vb, cmp);
    printf("%s: %s min %.0f median %.0f ns; %s min %.0f median %.0f ns; "
           "difference min %.0f median %.0f ns\n", what, a, va[0], va[n / 2], b,
           vb[0], vb[n / 2], vb[0] - va[0], vb[n / 2] - va[n / 2]);
}

/* ---- del ---- */

static double close_round(int ep, int del)
{
    int a[DEL_N], b[DEL_N];
    for (int i = 0; i < DEL_N; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
            die("socketpair");
        a[i] = sv[0];
        b[i] = sv[1];
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, a[i], &ev) < 0)
            die("epoll_ctl");
    }
    int64_t t0 = clock_ns(CLOCK_MONOTONIC);
    for (int i = 0; i < DEL_N; i++) {
        if (del)
            epoll_ctl(ep, EPOLL_CTL_DEL, a[i], NULL);
        close(a[i]);
    }
    int64_t t1 = clock_ns(CLOCK_MONOTONIC);
    for (int i = 0; i < DEL_N; i++)
        close(b[i]);
    return (double)(t1 - t0) / DEL_N;
}

static void part_del(int rounds)
{
    static double plain[MAX_ROUNDS], del[MAX_ROUNDS];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    for (int r = 0; r < rounds; r++) {
        plain[r] = close_round(ep, 0);
        del[r] = close_round(ep, 1);
    }
    close(ep);
    report("del (per close)", "close", plain, "DEL+close", del, rounds);
}

/* ---- hrtimer ---- */

struct pingpong {
    int ping, pong;   /* eventfds: to the waiter, back to the waker */
};

static void *waker(void *arg)
{
    struct pingpong *p = arg;
    uint64_t v = 1;
    for (int i = 0; i < WAKE_N; i++) {
        if (write(p->ping, &v, sizeof v) < 0 || read(p->pong, &v, sizeof v) < 0)
            die("waker");
    }
    return NULL;
}

/* The waiter's CPU time per wake-up, with epoll_wait's timeout tmo. Both
 * threads on one core, the waiter sleeps in every epoll_wait. */
static double wake_round(int tmo)
{
    struct pingpong p = {eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), eventfd(0, EFD_CLOEXEC)};
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    if (p.ping < 0 || p.pong < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, p.ping, &ev) < 0)
        die("hrtimer setup");
    pthread_t t;
    if (pthread_create(&t, NULL, waker, &p))
        die("pthread_create");
    int64_t c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    for (int i = 0; i < WAKE_N; i++) {
        struct epoll_event out;
        uint64_t v;
        while (epoll_wait(ep, &out, 1, tmo) < 1)
            ;
        if (read(p.ping, &v, sizeof v) < 0 || write(p.pong, &v, sizeof v) < 0)
            die("waiter");
    }
    int64_t c1 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    pthread_join(t, NULL);
    close(p.ping);
    close(p.pong);
    close(ep);
    return (double)(c1 - c0) / WAKE_N;
}

static void part_hrtimer(int rounds)
{
    static double none[MAX_ROUNDS], timed[MAX_ROUNDS];
    for (int r = 0; r < rounds; r++) {
        none[r] = wake_round(-1);
        timed[r] = wake_round(5000);
    }
    report("hrtimer (waiter CPU per wake-up)", "timeout -1", none, "timeout 5 s",
           timed, rounds);
}

/* ---- thread ---- */

static double call_round(int fd)
{
    char b[16];
    int64_t t0 = clock_ns(CLOCK_MONOTONIC);
    for (int i = 0; i < CALL_N; i++)
        if (recv(fd, b, sizeof b, MSG_DONTWAIT) >= 0)
            die("recv");
    return (double)(clock_ns(CLOCK_MONOTONIC) - t0) / CALL_N;
}

static void *idle(void *arg)
{
    for (;;)
        pause();
    return arg;
}

static void part_thread(int rounds)
{
    static double one[MAX_ROUNDS], two[MAX_ROUNDS];
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair");
    for (int r = 0; r < rounds; r++)
        one[r] = call_round(sv[0]);
    pthread_t t;
    if (pthread_create(&t, NULL, idle, NULL))
        die("pthread_create");
    for (int r = 0; r < rounds; r++)
        two[r] = call_round(sv[0]);
    report("thread (per descriptor system call)", "1 thread", one, "2 threads", two,
           rounds);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 30;
    if (rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "usage: cw_bench_syscost [ROUNDS 1-%d]\n", MAX_ROUNDS);
        return 2;
    }
    part_del(rounds);
    part_hrtimer(rounds);
    part_thread(rounds);
    return 0;
}
