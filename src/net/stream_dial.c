/* stream_dial.c - connecting without blocking the loop: every address in
 * turn, each with a fair share of one deadline.
 *
 * Name resolution: getaddrinfo blocks (DNS over the network, for seconds),
 * and glibc's getaddrinfo_a only runs it in a thread of its own and then
 * notifies through a signal or yet another thread. So a numeric address
 * is parsed directly (AI_NUMERICHOST never blocks), and a name is looked
 * up by one thread per dial that posts the answer to an eventfd the loop
 * watches. If the deadline passes first the dial ends at once and the
 * thread, which cannot be interrupted safely, is detached and frees its
 * own result when it finishes: the two sides share a reference count. */
#define _GNU_SOURCE
#include "stream_impl.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct resolver {
    atomic_int refs;          /* the dial and the thread */
    pthread_t thread;
    int efd;                  /* written once by the thread */
    uint16_t port;
    int rc;
    struct addrinfo *res;
    char host[];
};

struct dial {
    cw_loop *loop;
    cw_io io;                 /* the resolver's eventfd, then the socket */
    cw_timer timer;           /* this attempt's deadline */
    int64_t deadline;
    struct addrinfo *res, *cur;
    int left, last_rc;
    struct resolver *r;
    struct cw_opts o;
    char *bind_host;
    struct cw_stream_opts so;
    cw_stream_dial_cb *cb;
    void *data;
};

static void resolver_put(struct resolver *r)
{
    if (atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    if (r->res)
        freeaddrinfo(r->res);
    close(r->efd);
    free(r);
}

static void *resolve_thread(void *arg)
{
    struct resolver *r = arg;
    r->rc = cw__resolve(r->host, r->port, AF_UNSPEC, 0, &r->res);
    uint64_t one = 1;
    while (write(r->efd, &one, sizeof one) < 0 && errno == EINTR)
        ;
    resolver_put(r);
    return NULL;
}

static int resolver_start(struct dial *d, const char *host, uint16_t port)
{
    size_t n = strlen(host) + 1;
    struct resolver *r = calloc(1, sizeof *r + n);
    if (!r)
        return -ENOMEM;
    memcpy(r->host, host, n);
    r->port = port;
    atomic_init(&r->refs, 2);
    r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->efd < 0) {
        int rc = -errno;
        free(r);
        return rc;
    }
    int rc = pthread_create(&r->thread, NULL, resolve_thread, r);
    if (rc) {
        close(r->efd);
        free(r);
        return -rc;
    }
    d->r = r;
    d->io.fd = r->efd;
    return CW_OK;
}

/* ---- the end of a dial: exactly one callback ---- */

/* Leave a lookup still running: the thread frees what it shares. */
static void resolver_abandon(struct resolver *r)
{
    pthread_detach(r->thread);
    resolver_put(r);
}

static void dial_end(struct dial *d, int fd, int rc)
{
    cw_io_stop(d->loop, &d->io);
    cw_timer_stop(d->loop, &d->timer);
    if (d->r)
        resolver_abandon(d->r);
    if (d->res)
        freeaddrinfo(d->res);
    cw_stream *s = NULL;
    if (fd >= 0) {
        rc = cw__stream_new(d->loop, fd, &d->so, NULL, &s);
        if (rc < 0)
            s = NULL;
    }
    cw_stream_dial_cb *cb = d->cb;
    void *data = d->data;
    free(d->bind_host);
    free(d);
    cb(s, s ? CW_OK : rc, data);
}

/* ---- attempts ---- */

static void on_connect(cw_loop *loop, cw_io *io, unsigned events);
static void on_timer(cw_loop *loop, cw_timer *t);

/* Connected already? On loopback the handshake is done by the time
 * connect() returns EINPROGRESS: no need to watch for writability. */
static int connected_now(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    return poll(&p, 1, 0) == 1 && p.revents == POLLOUT;
}

/* Attempts run from the loop (the kick timer, a failed attempt, the
 * resolver's answer), so ending the dial from here still calls cb from
 * the loop. Returns CW_OK once the attempt is under way or has won. */
static int attempt(struct dial *d, const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    IPPROTO_TCP);
    if (fd < 0)
        return -errno;
    int rc = cw__apply_opts(fd, &d->o, false);
    if (rc == CW_OK)
        rc = cw__bind_local(fd, ai->ai_family, &d->o);
    if (rc == CW_OK && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 &&
        errno != EINPROGRESS && errno != EINTR)
        rc = -errno;
    if (rc == CW_OK && connected_now(fd)) {
        dial_end(d, fd, CW_OK);
        return CW_OK;
    }
    d->io.fd = fd;
    if (rc == CW_OK)
        rc = cw_io_start(d->loop, &d->io, CW_IO_WRITE, on_connect);
    int64_t due = cw__attempt_deadline(d->deadline, d->left + 1);
    if (rc == CW_OK && due >= 0)
        rc = cw_timer_start(d->loop, &d->timer, due, on_timer);
    if (rc < 0) {
        cw_io_stop(d->loop, &d->io);
        close(fd);
        d->io.fd = -1;
    }
    return rc;
}

/* Start the next address, or end the dial with the last failure. */
static void next_address(struct dial *d)
{
    while (d->cur) {
        const struct addrinfo *ai = d->cur;
        d->cur = ai->ai_next;
        d->left--;
        int rc = attempt(d, ai);
        if (rc == CW_OK)
            return;
        d->last_rc = rc;
    }
    dial_end(d, -1, d->last_rc);
}

static void attempt_failed(struct dial *d, int rc)
{
    cw_io_stop(d->loop, &d->io);
    cw_timer_stop(d->loop, &d->timer);
    close(d->io.fd);
    d->io.fd = -1;
    d->last_rc = rc;
    if (d->deadline >= 0 && cw_now_ms() >= d->deadline)
        dial_end(d, -1, CW_ETIMEDOUT);
    else
        next_address(d);
}

static void on_connect(cw_loop *loop, cw_io *io, unsigned events)
{
    struct dial *d = (struct dial *)((char *)io - offsetof(struct dial, io));
    /* The loop read SO_ERROR already after EPOLLERR (reading clears it). */
    int err = (events & CW_EV_ERROR) ? io->err : 0;
    if (!err) {
        int e = 0;
        socklen_t len = sizeof e;
        if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
            e = errno;
        err = -e;
    }
    if (!err && (events & CW_EV_HUP))
        err = -ECONNREFUSED;
    if (err) {
        attempt_failed(d, err);
        return;
    }
    int fd = io->fd;
    cw_io_stop(loop, io);
    d->io.fd = -1;
    dial_end(d, fd, CW_OK);
}

static void set_addresses(struct dial *d, struct addrinfo *res)
{
    d->res = d->cur = res;
    d->left = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
        d->left++;
}

static void on_resolved(cw_loop *loop, cw_io *io, unsigned events)
{
    struct dial *d = (struct dial *)((char *)io - offsetof(struct dial, io));
    struct resolver *r = d->r;
    cw_io_stop(loop, io);
    cw_timer_stop(loop, &d->timer);
    d->io.fd = -1;
    d->r = NULL;
    /* The thread has posted its answer and only has its own release left
     * to run: joining costs no wait, and leaves the eventfd to be closed
     * here and now rather than some time later by the thread. */
    pthread_join(r->thread, NULL);
    int rc = r->rc;
    struct addrinfo *res = r->res;
    r->res = NULL;
    resolver_put(r);
    if (rc < 0) {
        dial_end(d, -1, rc);
        return;
    }
    set_addresses(d, res);
    next_address(d);
}

static void on_timer(cw_loop *loop, cw_timer *t)
{
    struct dial *d = (struct dial *)((char *)t - offsetof(struct dial, timer));
    if (d->r) {   /* still resolving at the deadline */
        dial_end(d, -1, CW_ETIMEDOUT);
    } else if (d->io.fd >= 0) {
        attempt_failed(d, CW_ETIMEDOUT);
    } else if (d->res) {
        next_address(d);   /* the kick: first attempt from inside the loop */
    }
}

int cw_stream_dial(cw_loop *loop, const char *host, uint16_t port,
                   const struct cw_opts *opts, int64_t deadline,
                   const struct cw_stream_opts *sopts,
                   cw_stream_dial_cb *cb, void *data)
{
    if (!loop || !cb || port == 0)
        return CW_EINVAL;
    struct dial *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    d->loop = loop;
    d->io.fd = -1;
    d->deadline = deadline;
    d->last_rc = CW_ERESOLVE;
    d->cb = cb;
    d->data = data;
    if (opts)
        d->o = *opts;
    else
        cw_opts_init(&d->o);
    if (sopts)
        d->so = *sopts;
    else
        cw_stream_opts_init(&d->so);
    int rc = CW_OK;
    if (d->o.bind_host && !(d->bind_host = strdup(d->o.bind_host)))
        rc = -ENOMEM;
    d->o.bind_host = d->bind_host;
    if (!host)
        host = "localhost";
    struct addrinfo *res;
    if (rc == CW_OK &&
        cw__resolve(host, port, AF_UNSPEC, AI_NUMERICHOST, &res) == CW_OK) {
        set_addresses(d, res);   /* numeric: the kick timer starts them */
        res = NULL;
        rc = cw_timer_start(loop, &d->timer, 0, on_timer);
    } else if (rc == CW_OK) {
        rc = resolver_start(d, host, port);
        if (rc == CW_OK)
            rc = cw_io_start(loop, &d->io, CW_IO_READ, on_resolved);
        if (rc == CW_OK && deadline >= 0)
            rc = cw_timer_start(loop, &d->timer, deadline, on_timer);
    }
    if (rc < 0) {
        cw_io_stop(loop, &d->io);
        if (d->r)
            resolver_abandon(d->r);
        if (d->res)
            freeaddrinfo(d->res);
        free(d->bind_host);
        free(d);
    }
    return rc;
}
