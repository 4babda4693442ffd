/* loop.c - the event loop: epoll for readiness, a binary min-heap for
 * arbitrary deadlines, FIFO timer queues for fixed timeouts (tqueue.c;
 * the loop scans the heads of the non-empty ones), a signalfd for
 * SIGINT/SIGTERM and an eventfd for cw_loop_stop(). One epoll_wait per
 * iteration, whose timeout is the earliest deadline: nothing ever polls
 * in a busy loop. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define MAX_EVENTS 256

/* cw_io.flags */
#define IO_ACTIVE 1u
#define IO_HUP_SEEN 2u   /* RDHUP reported once: disarmed so it cannot spin */

struct cw_loop {
    struct cw__loop_hot h;     /* first: internal.h reads it inline */
    int epfd;
    volatile int stopping;
    cw_timer **heap;           /* min-heap on deadline */
    uint32_t nheap, heap_cap;
    cw_tqueue *queues;         /* the non-empty timer queues */
    struct epoll_event events[MAX_EVENTS];
    int nevents, cur;          /* the batch being dispatched */
    cw_io wake;                /* eventfd written by cw_loop_stop */
    cw_io sig;                 /* signalfd, fd -1 until cw_loop_signals */
    cw_signal_cb *sig_cb;
    void *sig_data;
    sigset_t old_mask;
};

/* ---- timers: a binary heap of pointers, each timer knowing its slot ---- */

static void heap_set(cw_loop *l, uint32_t i, cw_timer *t)
{
    l->heap[i] = t;
    t->slot = i + 1;
}

static void sift_up(cw_loop *l, uint32_t i)
{
    cw_timer *t = l->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (l->heap[parent]->deadline <= t->deadline)
            break;
        heap_set(l, i, l->heap[parent]);
        i = parent;
    }
    heap_set(l, i, t);
}

static void sift_down(cw_loop *l, uint32_t i)
{
    cw_timer *t = l->heap[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= l->nheap)
            break;
        if (child + 1 < l->nheap &&
            l->heap[child + 1]->deadline < l->heap[child]->deadline)
            child++;
        if (t->deadline <= l->heap[child]->deadline)
            break;
        heap_set(l, i, l->heap[child]);
        i = child;
    }
    heap_set(l, i, t);
}

int cw_timer_stop(cw_loop *l, cw_timer *t)
{
    if (!l || !t)
        return CW_EINVAL;
    if (!t->slot)
        return CW_OK;
    uint32_t i = t->slot - 1;
    t->slot = 0;
    cw_timer *last = l->heap[--l->nheap];
    if (i == l->nheap)
        return CW_OK;
    heap_set(l, i, last);
    sift_up(l, i);
    sift_down(l, last->slot - 1);
    return CW_OK;
}

int cw_timer_start(cw_loop *l, cw_timer *t, int64_t deadline, cw_timer_cb *cb)
{
    /* A negative deadline is CW_NEVER: at the top of the heap it would make
     * epoll_wait block forever and hide every later timer. */
    if (!l || !t || !cb || deadline < 0)
        return CW_EINVAL;
    t->cb = cb;
    if (t->slot) {   /* move: the common case of an idle timer reset */
        t->deadline = deadline;
        sift_up(l, t->slot - 1);
        sift_down(l, t->slot - 1);
        return CW_OK;
    }
    if (l->nheap == l->heap_cap) {
        uint32_t cap = l->heap_cap ? l->heap_cap * 2 : 64;
        cw_timer **h = realloc(l->heap, cap * sizeof *h);
        if (!h)
            return -ENOMEM;
        l->heap = h;
        l->heap_cap = cap;
    }
    t->deadline = deadline;
    heap_set(l, l->nheap++, t);
    sift_up(l, l->nheap - 1);
    return CW_OK;
}

int cw_timer_active(const cw_timer *t)
{
    return t && t->slot != 0;
}

/* ---- timer queues: the loop only tracks which ones have entries ---- */

void cw__loop_queue_on(cw_tqueue *q)
{
    cw_loop *l = q->loop;
    q->lprev = NULL;
    q->lnext = l->queues;
    if (l->queues)
        l->queues->lprev = q;
    l->queues = q;
}

void cw__loop_queue_off(cw_tqueue *q)
{
    if (q->lprev)
        q->lprev->lnext = q->lnext;
    else
        q->loop->queues = q->lnext;
    if (q->lnext)
        q->lnext->lprev = q->lprev;
    q->lprev = q->lnext = NULL;
}

int cw__loop_tqueue(cw_loop *l, int64_t timeout_ms, cw_tqueue_cb *cb)
{
    for (int i = 0; i < l->h.nown; i++)
        if (l->h.own[i]->timeout_ms == timeout_ms && l->h.own[i]->cb == cb)
            return i + 1;
    if (l->h.nown == CW__LOOP_QUEUES)
        return 0;
    cw_tqueue *q = malloc(sizeof *q);
    if (!q || cw_tqueue_init(l, q, timeout_ms, cb) < 0) {
        free(q);
        return 0;
    }
    l->h.own[l->h.nown++] = q;
    return l->h.nown;
}

/* Fire one due timer or queue entry; 0 if none is due. Callbacks may
 * start, stop and queue anything: nothing is cached across a call. */
static int run_one(cw_loop *l, int64_t now)
{
    if (l->nheap && l->heap[0]->deadline <= now) {
        cw_timer *t = l->heap[0];
        cw_timer_stop(l, t);
        t->cb(l, t);
        return 1;
    }
    /* The heads are read here: a call per queue for each pass that
     * fires nothing, the usual pass, cost more than the check. */
    for (cw_tqueue *q = l->queues; q; q = q->lnext)
        if (cw__tqueue_head(q) <= now && cw__tqueue_expire_one(q, now))
            return 1;
    return 0;
}

/* The time is read again here, not taken from before the dispatch: a
 * timer that fell due while events were handled fires in this pass, not
 * after one more epoll_wait. Callbacks see this same time, so a stream
 * fired as due finds itself due. */
static void run_timers(cw_loop *l)
{
    int64_t now = l->h.now = cw_now_ms();
    while (!l->stopping && run_one(l, now))
        ;
}

/* ---- the loop's time ---- */

void cw__loop_update_time(cw_loop *l)
{
    if (l->h.in_pass)
        l->h.now = cw_now_ms();
}

/* epoll_wait timeout in ms for the earliest deadline, -1 for none. From
 * the time the timer pass read: what its callbacks took is the most a
 * deadline can be late by. */
static int next_timeout(const cw_loop *l)
{
    int64_t first = l->nheap ? l->heap[0]->deadline : INT64_MAX;
    for (const cw_tqueue *q = l->queues; q; q = q->lnext)
        if (cw__tqueue_head(q) < first)
            first = cw__tqueue_head(q);
    return first == INT64_MAX ? -1 : cw__timeout_at(first, l->h.now);
}

/* ---- descriptors ---- */

static uint32_t epoll_mask(const cw_io *io)
{
    uint32_t m = 0;
    if (io->interest & CW_IO_READ)
        m |= EPOLLIN;
    if (io->interest & CW_IO_WRITE)
        m |= EPOLLOUT;
    if (!(io->flags & IO_HUP_SEEN))
        m |= EPOLLRDHUP;   /* armed even while reads are paused */
    return m;
}

static int io_ctl(cw_loop *l, int op, cw_io *io)
{
    struct epoll_event ev = {.events = epoll_mask(io), .data.ptr = io};
    if (epoll_ctl(l->epfd, op, io->fd, &ev) < 0)
        return -errno;
    return CW_OK;
}

int cw_io_start(cw_loop *l, cw_io *io, unsigned interest, cw_io_cb *cb)
{
    if (!l || !io || !cb || io->fd < 0 || (io->flags & IO_ACTIVE))
        return CW_EINVAL;
    io->cb = cb;
    io->interest = interest & (CW_IO_READ | CW_IO_WRITE);
    io->flags = 0;
    io->err = 0;
    int rc = io_ctl(l, EPOLL_CTL_ADD, io);
    if (rc == CW_OK)
        io->flags |= IO_ACTIVE;
    return rc;
}

int cw_io_set(cw_loop *l, cw_io *io, unsigned interest)
{
    if (!l || !io || !(io->flags & IO_ACTIVE))
        return CW_EINVAL;
    interest &= CW_IO_READ | CW_IO_WRITE;
    if (interest == io->interest)
        return CW_OK;
    io->interest = interest;
    return io_ctl(l, EPOLL_CTL_MOD, io);
}

int cw_io_stop(cw_loop *l, cw_io *io)
{
    if (!l || !io)
        return CW_EINVAL;
    if (!(io->flags & IO_ACTIVE))
        return CW_OK;
    cw__io_stop_kept(l, io);
    /* The watcher may be freed right after this: forget any event of the
     * current batch that still points at it. */
    for (int i = l->cur + 1; i < l->nevents; i++)
        if (l->events[i].data.ptr == io)
            l->events[i].data.ptr = NULL;
    return CW_OK;
}

void cw__io_stop_kept(cw_loop *l, cw_io *io)
{
    if (!(io->flags & IO_ACTIVE))
        return;
    io->flags &= ~IO_ACTIVE;
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
}

int cw_io_active(const cw_io *io)
{
    return io && (io->flags & IO_ACTIVE);
}

static void dispatch(cw_loop *l, cw_io *io, uint32_t ev)
{
    unsigned out = 0;
    if (ev & (EPOLLIN | EPOLLPRI))
        out |= CW_EV_READ;
    if (ev & EPOLLOUT)
        out |= CW_EV_WRITE;
    if ((ev & (EPOLLRDHUP | EPOLLHUP)) && !(io->flags & IO_HUP_SEEN)) {
        /* Reported once. RDHUP stays armed in the kernel until it fires
         * again: most owners close the socket in this very callback, and
         * disarming it first would cost them an epoll_ctl for nothing. */
        out |= CW_EV_HUP;
        io->flags |= IO_HUP_SEEN;
    } else if (ev & EPOLLHUP) {
        out |= CW_EV_HUP;   /* cannot be masked: the owner must act */
    } else if (ev & EPOLLRDHUP) {
        io_ctl(l, EPOLL_CTL_MOD, io);   /* seen already: stop the repeats */
    }
    if (ev & EPOLLERR) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err)
            io->err = -err;
        out |= CW_EV_ERROR;
    }
    if (out)
        io->cb(l, io, out);
}

/* ---- internal watchers: stop and signals ---- */

static void on_wake(cw_loop *l, cw_io *io, unsigned events)
{
    uint64_t v;
    while (read(io->fd, &v, sizeof v) < 0 && errno == EINTR)
        ;
    l->stopping = 1;
}

static void on_signal(cw_loop *l, cw_io *io, unsigned events)
{
    struct signalfd_siginfo si;
    while (read(io->fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (l->sig_cb)
            l->sig_cb(l, (int)si.ssi_signo, l->sig_data);
        else
            l->stopping = 1;
    }
}

int cw_loop_signals(cw_loop *l, cw_signal_cb *cb, void *data)
{
    if (!l || l->sig.fd >= 0)
        return CW_EINVAL;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int rc = pthread_sigmask(SIG_BLOCK, &set, &l->old_mask);
    if (rc)
        return -rc;
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        pthread_sigmask(SIG_SETMASK, &l->old_mask, NULL);
        return rc;
    }
    l->sig.fd = fd;
    l->sig_cb = cb;
    l->sig_data = data;
    rc = cw_io_start(l, &l->sig, CW_IO_READ, on_signal);
    if (rc < 0) {
        close(fd);
        l->sig.fd = -1;
        pthread_sigmask(SIG_SETMASK, &l->old_mask, NULL);
    }
    return rc;
}

int cw_loop_new(cw_loop **out)
{
    if (!out)
        return CW_EINVAL;
    *out = NULL;
    cw_loop *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    l->sig.fd = -1;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int rc = CW_OK;
    if (l->epfd < 0 || l->wake.fd < 0)
        rc = -errno;
    else
        rc = cw_io_start(l, &l->wake, CW_IO_READ, on_wake);
    if (rc < 0) {
        if (l->epfd >= 0)
            close(l->epfd);
        if (l->wake.fd >= 0)
            close(l->wake.fd);
        free(l);
        return rc;
    }
    *out = l;
    return CW_OK;
}

int cw_loop_free(cw_loop **lp)
{
    if (!lp || !*lp)
        return CW_EINVAL;
    cw_loop *l = *lp;
    *lp = NULL;
    if (l->sig.fd >= 0) {
        close(l->sig.fd);
        /* Signals that arrived after the last read stay pending and would
         * fire on unblock: that is the user's intent, so let them. */
        pthread_sigmask(SIG_SETMASK, &l->old_mask, NULL);
    }
    close(l->wake.fd);
    close(l->epfd);
    for (int i = 0; i < l->h.nown; i++)
        free(l->h.own[i]);
    free(l->heap);
    free(l);
    return CW_OK;
}

int cw_loop_stop(cw_loop *l)
{
    if (!l)
        return CW_EINVAL;
    uint64_t one = 1;
    /* Only async-signal-safe calls here. */
    if (write(l->wake.fd, &one, sizeof one) < 0 && errno != EAGAIN)
        return -errno;
    return CW_OK;
}

uint64_t cw_loop_iterations(const cw_loop *l)
{
    return l ? l->h.iterations : 0;
}

int cw_loop_run(cw_loop *l)
{
    if (!l)
        return CW_EINVAL;
    l->stopping = 0;
    l->h.now = cw_now_ms();   /* for the first timeout */
    while (!l->stopping) {
        int n = epoll_wait(l->epfd, l->events, MAX_EVENTS, next_timeout(l));
        l->h.iterations++;
        if (n < 0) {
            int err = errno;
            l->h.now = cw_now_ms();   /* the next timeout counts from here */
            if (err == EINTR)
                continue;
            return -err;
        }
        /* One clock read for the whole batch: streams, the acceptor and
         * their owners take the pass's time (cw__loop_now) instead of
         * reading the clock at every step of every connection. */
        l->h.now = cw_now_ms();
        l->h.in_pass = 1;
        l->nevents = n;
        for (l->cur = 0; l->cur < n; l->cur++) {
            cw_io *io = l->events[l->cur].data.ptr;
            /* Inactive: stopped earlier in this batch by an owner that
             * keeps its memory until the pass is over (cw__io_stop_kept). */
            if (io && (io->flags & IO_ACTIVE))
                dispatch(l, io, l->events[l->cur].events);
        }
        l->nevents = l->cur = 0;
        run_timers(l);
        l->h.in_pass = 0;
    }
    return CW_OK;
}
