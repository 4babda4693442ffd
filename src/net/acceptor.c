/* acceptor.c - accepting streams on a loop, and descriptor pressure: when
 * accept4 runs out of descriptors, give back the streams that cost least
 * to lose (lingering closes, then long-idle streams), and if there are
 * none, stop watching the listener for a back-off instead of spinning on
 * a listener that stays readable. */
#define _GNU_SOURCE
#include "stream_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ACCEPT_BATCH 64          /* accepts per readiness event: stay fair */
#define ACCEPT_BACKOFF_MS 100    /* retry after EMFILE with nothing to reclaim */
#define RECLAIM_BATCH 8          /* streams closed per descriptor shortage */
#define RECLAIM_MIN_IDLE_MS 1000 /* never reclaim a stream this fresh */

struct list {
    cw_stream *head, *tail;
};

struct cw_acceptor {
    cw_loop *loop;
    cw_io io;
    cw_timer timer;              /* back-off while paused */
    int paused;
    struct cw_stream_opts so;
    cw_acceptor_cb *cb;
    cw_acceptor_pick_cb *pick;   /* the owner's choice, before idle streams */
    void *data;
    struct list active;          /* least recently active first */
    struct list linger;          /* oldest close first */
    struct cw_acceptor_stats st;
};

static void list_push(struct list *l, cw_stream *s)
{
    s->next = NULL;
    s->prev = l->tail;
    if (l->tail)
        l->tail->next = s;
    else
        l->head = s;
    l->tail = s;
}

static void list_remove(struct list *l, cw_stream *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        l->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        l->tail = s->prev;
    s->prev = s->next = NULL;
}

static struct list *list_of(cw_acceptor *a, cw_stream *s)
{
    return (s->flags & CW__F_LINGER_LIST) ? &a->linger : &a->active;
}

void cw__acceptor_touch(cw_stream *s)
{
    cw_acceptor *a = s->io.data;
    if (!a || (s->flags & CW__F_LINGER_LIST) || !s->next)
        return;
    list_remove(&a->active, s);
    list_push(&a->active, s);
}

void cw__acceptor_closing(cw_stream *s)
{
    cw_acceptor *a = s->io.data;
    if (!a || (s->flags & CW__F_LINGER_LIST))
        return;
    list_remove(&a->active, s);
    s->flags |= CW__F_LINGER_LIST;
    list_push(&a->linger, s);
}

static void resume(cw_acceptor *a);

void cw__acceptor_ended(cw_stream *s, int why)
{
    cw_acceptor *a = s->io.data;
    if (!a)
        return;
    list_remove(list_of(a, s), s);
    s->io.data = NULL;
    a->st.open--;
    if (why == CW__END_WRITE_TIMEOUT)
        a->st.write_timeouts++;
    else if (why == CW__END_GRACE)
        a->st.grace_closed++;
    else if (why == CW__END_RECLAIM)
        a->st.reclaimed++;
    if (a->paused)
        resume(a);   /* a descriptor just came back */
}

/* Close up to max streams: lingering ones first (they have said their
 * last word), then the owner's picks, then streams idle for a while with
 * nothing queued, least recently active first. Returns how many were
 * closed. */
static int reclaim(cw_acceptor *a, int max)
{
    int n = 0;
    int paused = a->paused;
    a->paused = 0;   /* no resume from cw__acceptor_ended: we are accepting */
    for (cw_stream *s = a->linger.head, *next; s && n < max; s = next) {
        next = s->next;
        if (s->state == CW__ST_LINGER) {   /* never one still flushing */
            cw__stream_reclaim(s);
            n++;
        }
    }
    while (n < max && a->pick) {
        cw_stream *v = NULL;
        int rc = a->pick(a, a->data, &v);
        if (rc == 0)
            break;   /* no preference: the idle streams, as usual */
        if (rc < 0 || !v || v->io.data != a || v->state != CW__ST_OPEN) {
            a->paused = paused;
            return n;   /* the owner protects the rest for now */
        }
        cw__stream_reclaim(v);
        n++;
    }
    int64_t old = cw_now_ms() - RECLAIM_MIN_IDLE_MS;
    while (n < max && a->active.head) {
        cw_stream *s = a->active.head;
        if (s->state != CW__ST_OPEN || s->out || s->t > old)
            break;
        cw__stream_reclaim(s);
        n++;
    }
    a->paused = paused;
    return n;
}

static void on_accept(cw_loop *loop, cw_io *io, unsigned events);

static void on_backoff(cw_loop *loop, cw_timer *t)
{
    resume(t->data);
}

static void pause_accept(cw_acceptor *a)
{
    if (!a->paused) {
        cw_io_stop(a->loop, &a->io);
        a->paused = 1;
        a->st.paused++;
    }
    if (!cw_timer_active(&a->timer))
        cw_timer_start(a->loop, &a->timer, cw_now_ms() + ACCEPT_BACKOFF_MS,
                       on_backoff);
}

static void resume(cw_acceptor *a)
{
    if (!a->paused)
        return;
    cw_timer_stop(a->loop, &a->timer);
    a->paused = 0;
    if (cw_io_start(a->loop, &a->io, CW_IO_READ, on_accept) < 0)
        pause_accept(a);
}

static void on_accept(cw_loop *loop, cw_io *io, unsigned events)
{
    cw_acceptor *a = io->data;
    for (int i = 0; i < ACCEPT_BATCH && !a->paused; i++) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            cw_stream *s;
            if (cw__stream_new(a->loop, fd, &a->so, a, &s) < 0)
                continue;   /* fd closed: the peer sees its connection end */
            list_push(&a->active, s);
            a->st.accepted++;
            a->st.open++;
            a->cb(a, s, a->data);
            continue;
        }
        int err = errno;
        if (err == EINTR || err == ECONNABORTED)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK)
            return;
        if ((err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) &&
            reclaim(a, RECLAIM_BATCH))
            continue;
        /* Nothing to give back, or an unexpected error: the listener stays
         * readable, so watching it now would spin. */
        pause_accept(a);
        return;
    }
}

int cw_acceptor_new(cw_loop *loop, cw_listener *l,
                    const struct cw_stream_opts *sopts, cw_acceptor_cb *cb,
                    void *data, cw_acceptor **out)
{
    if (!out)
        return CW_EINVAL;
    *out = NULL;
    if (!loop || !l || !cb)
        return CW_EINVAL;
    cw_acceptor *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->loop = loop;
    a->io.fd = cw_listener_fd(l);
    a->io.data = a;
    a->timer.data = a;
    a->cb = cb;
    a->data = data;
    if (sopts)
        a->so = *sopts;
    else
        cw_stream_opts_init(&a->so);
    int rc = cw__set_nonblock(a->io.fd);
    if (rc == CW_OK)
        rc = cw_io_start(loop, &a->io, CW_IO_READ, on_accept);
    if (rc < 0) {
        free(a);
        return rc;
    }
    *out = a;
    return CW_OK;
}

int cw_acceptor_set_reclaim(cw_acceptor *a, cw_acceptor_pick_cb *pick)
{
    if (!a)
        return CW_EINVAL;
    a->pick = pick;
    return CW_OK;
}

int cw_acceptor_stats(const cw_acceptor *a, struct cw_acceptor_stats *st)
{
    if (!a || !st)
        return CW_EINVAL;
    *st = a->st;
    return CW_OK;
}

static void detach(struct list *l)
{
    while (l->head) {
        cw_stream *s = l->head;
        list_remove(l, s);
        s->io.data = NULL;
        s->flags &= ~CW__F_LINGER_LIST;
    }
}

int cw_acceptor_free(cw_acceptor **ap)
{
    if (!ap || !*ap)
        return CW_EINVAL;
    cw_acceptor *a = *ap;
    *ap = NULL;
    cw_io_stop(a->loop, &a->io);
    cw_timer_stop(a->loop, &a->timer);
    detach(&a->active);
    detach(&a->linger);
    free(a);
    return CW_OK;
}
