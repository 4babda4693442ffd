/* acceptor.c - accepting streams on a loop, and descriptor pressure: when
 * accept4 runs out of descriptors, give back the streams that cost least
 * to lose (lingering closes, then the owner's pick, then long-idle
 * streams), and if there are none, stop watching the listener for a
 * back-off instead of spinning on a listener that stays readable.
 *
 * The acceptor's struct cw__sprof is every one of its streams' options,
 * so the acceptor outlives them: cw_acceptor_free() stops accepting and
 * detaches; the memory goes with the last stream. */
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
#define SPARE_MAX 256            /* freed streams kept for reuse: a batch */
#define SPARE_BYTES 65536        /* and at most this much memory in them */

/* A spare's memory is off limits under ASan, as if freed: a stream used
 * after its on_closed is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#define CW_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CW_ASAN 1
#endif
#endif
#ifdef CW_ASAN
#include <sanitizer/asan_interface.h>
#else
#define ASAN_POISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#define ASAN_UNPOISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#endif

struct list {
    cw_stream *head, *tail;
};

struct cw_acceptor {
    struct cw__sprof prof;       /* its streams' loop and options */
    cw_io io;
    cw_timer timer;              /* back-off while paused */
    int paused;                  /* for lack of descriptors */
    int held;                    /* by the owner: cw_acceptor_pause() */
    int freed;                   /* cw_acceptor_free() was called */
    int64_t retry_at;            /* the pick's sooner retry, or 0 */
    uint64_t refs;               /* streams whose memory is not freed yet */
    /* The memory of ended streams, last freed first, for the next
     * accepts: what a churn frees in one loop pass it allocates again in
     * the next, and in glibc a chunk this size (past the fast bins) took
     * the arena's slow paths both ways; a spare is also still in cache. */
    void *spare;                 /* linked through its first word; at most
                                    spare_max: SPARE_MAX, fewer when large */
    uint32_t nspare, spare_max;
    cw_acceptor_cb *cb;
    cw_acceptor_pick_cb *pick;   /* the owner's choice, before idle streams */
    cw_acceptor_admit_cb *admit; /* asked before every accept */
    cw_acceptor_pause_cb *on_pause;
    void *data;
    struct list active;          /* least recently active first */
    struct list linger;          /* oldest close first */
    struct cw_acceptor_stats st;
    struct sockaddr_storage peer;   /* of the stream in the callback */
    socklen_t peerlen;
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

/* The stream's acceptor if it still keeps books on it. */
static cw_acceptor *acceptor_of(const cw_stream *s)
{
    cw_acceptor *a = cw__prof(s)->a;
    return a && !a->freed ? a : NULL;
}

void cw__acceptor_touch(cw_stream *s)
{
    cw_acceptor *a = acceptor_of(s);
    if (!a || (s->flags & CW__F_LINGER_LIST) || !s->next)
        return;
    list_remove(&a->active, s);
    list_push(&a->active, s);
}

void cw__acceptor_closing(cw_stream *s)
{
    cw_acceptor *a = acceptor_of(s);
    if (!a || (s->flags & CW__F_LINGER_LIST))
        return;
    list_remove(&a->active, s);
    s->flags |= CW__F_LINGER_LIST;
    list_push(&a->linger, s);
    a->st.closing++;
}

static void resume(cw_acceptor *a);

void cw__acceptor_ended(cw_stream *s, int why)
{
    cw_acceptor *a = acceptor_of(s);
    if (!a)
        return;
    if (s->flags & CW__F_LINGER_LIST)
        a->st.closing--;
    list_remove(list_of(a, s), s);
    s->flags &= ~CW__F_LINGER_LIST;
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

static size_t stream_size(const cw_acceptor *a)
{
    return CW__STREAM_SIZE + a->prof.o.user_size;
}

void *cw__acceptor_spare(cw_acceptor *a)
{
    void *m = a->spare;
    if (!m)
        return NULL;
    ASAN_UNPOISON_MEMORY_REGION(m, stream_size(a));
    a->spare = *(void **)m;
    a->nspare--;
    return m;
}

static void free_spares(cw_acceptor *a)
{
    while (a->nspare)
        free(cw__acceptor_spare(a));
}

void cw__acceptor_put(cw_acceptor *a, cw_stream *s)
{
    if (!a->freed && a->nspare < a->spare_max) {
        *(void **)s = a->spare;
        a->spare = s;
        a->nspare++;
        ASAN_POISON_MEMORY_REGION(s, stream_size(a));
    } else {
        free(s);
    }
    if (--a->refs == 0 && a->freed)
        free(a);
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
    a->retry_at = 0;   /* only the pick of this round may set it */
    for (cw_stream *s = a->linger.head, *next; s && n < max; s = next) {
        next = s->next;
        if (s->state == CW__ST_LINGER) {   /* never one still flushing */
            cw_stream_evict(s);
            n++;
        }
    }
    while (n < max && a->pick) {
        cw_stream *v = NULL;
        int rc = a->pick(a, a->data, &v);
        if (rc == 0)
            break;   /* no preference: the idle streams, as usual */
        if (rc < 0 || !v || acceptor_of(v) != a || v->state != CW__ST_OPEN) {
            a->paused = paused;
            return n;   /* the owner protects the rest for now */
        }
        cw_stream_evict(v);
        n++;
    }
    cw_stream *s;
    while (n < max && (s = cw_acceptor_idlest(a, RECLAIM_MIN_IDLE_MS))) {
        cw_stream_evict(s);
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

/* Stop watching the listener: connections wait in the kernel's backlog. */
static void unwatch(cw_acceptor *a)
{
    cw_io_stop(a->prof.loop, &a->io);
}

static void pause_accept(cw_acceptor *a, int err)
{
    if (!a->paused) {
        unwatch(a);
        a->paused = 1;
        a->st.paused++;
        if (a->on_pause)
            a->on_pause(a, a->data, err);
    }
    int64_t at = cw__loop_now(a->prof.loop) + ACCEPT_BACKOFF_MS;
    if (a->retry_at && a->retry_at < at)
        at = a->retry_at;
    a->retry_at = 0;
    if (!cw_timer_active(&a->timer) || a->timer.deadline > at)
        cw_timer_start(a->prof.loop, &a->timer, at, on_backoff);
}

static void watch(cw_acceptor *a)
{
    if (a->paused || a->held || a->freed || cw_io_active(&a->io))
        return;
    int rc = cw_io_start(a->prof.loop, &a->io, CW_IO_READ, on_accept);
    if (rc < 0)
        pause_accept(a, rc);
}

static void resume(cw_acceptor *a)
{
    if (!a->paused)
        return;
    cw_timer_stop(a->prof.loop, &a->timer);
    a->paused = 0;
    watch(a);
}

static void on_accept(cw_loop *loop, cw_io *io, unsigned events)
{
    cw_acceptor *a = io->data;
    for (int i = 0; i < ACCEPT_BATCH && !a->paused && !a->held; i++) {
        if (a->admit && !a->admit(a, a->data)) {
            if (!a->held)
                cw_acceptor_pause(a);   /* the owner resumes it */
            return;
        }
        if (a->held)
            return;   /* admit paused it */
        a->peerlen = sizeof a->peer;
        int fd = accept4(io->fd, (struct sockaddr *)&a->peer, &a->peerlen,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            cw_stream *s;
            if (cw__stream_new(a->prof.loop, fd, NULL, &a->prof, &s) < 0)
                continue;   /* fd closed: the peer sees its connection end */
            list_push(&a->active, s);
            a->refs++;
            a->st.accepted++;
            a->st.open++;
            a->cb(a, s, a->data);
            a->peerlen = 0;
            /* Watched from here on whatever the owner did: a peer that
             * closes before it starts reading is still noticed. Most
             * owners started it in the callback: one epoll_ctl, not two. */
            if (s->flags & CW__F_IO_OFF)
                cw__stream_watch(s);
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
        pause_accept(a, -err);
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
    if (!loop || !l || !cb || (sopts && sopts->user_size > CW_STREAM_USER_MAX))
        return CW_EINVAL;
    cw_acceptor *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    cw__sprof_init(&a->prof, loop, sopts);
    a->prof.a = a;
    a->spare_max = (uint32_t)(SPARE_BYTES / stream_size(a));
    if (a->spare_max > SPARE_MAX)
        a->spare_max = SPARE_MAX;
    a->io.fd = cw_listener_fd(l);
    a->io.data = a;
    a->timer.data = a;
    a->cb = cb;
    a->data = data;
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

const struct sockaddr *cw_acceptor_peer(const cw_acceptor *a, socklen_t *len)
{
    if (!a || !a->peerlen)
        return NULL;
    if (len)
        *len = a->peerlen;
    return (const struct sockaddr *)&a->peer;
}

int cw_acceptor_set_reclaim(cw_acceptor *a, cw_acceptor_pick_cb *pick)
{
    if (!a)
        return CW_EINVAL;
    a->pick = pick;
    return CW_OK;
}

int cw_acceptor_set_admit(cw_acceptor *a, cw_acceptor_admit_cb *admit)
{
    if (!a)
        return CW_EINVAL;
    a->admit = admit;
    return CW_OK;
}

int cw_acceptor_set_on_pause(cw_acceptor *a, cw_acceptor_pause_cb *cb)
{
    if (!a)
        return CW_EINVAL;
    a->on_pause = cb;
    return CW_OK;
}

int cw_acceptor_retry_at(cw_acceptor *a, int64_t when)
{
    if (!a || a->freed || when < 0)
        return CW_EINVAL;
    a->retry_at = when;
    return CW_OK;
}

int cw_acceptor_pause(cw_acceptor *a)
{
    if (!a || a->freed)
        return CW_EINVAL;
    a->held = 1;
    unwatch(a);
    return CW_OK;
}

int cw_acceptor_resume(cw_acceptor *a)
{
    if (!a || a->freed)
        return CW_EINVAL;
    a->held = 0;
    watch(a);
    return CW_OK;
}

int cw_acceptor_reclaim(cw_acceptor *a, int max)
{
    if (!a || a->freed || max < 0)
        return CW_EINVAL;
    return reclaim(a, max);
}

cw_stream *cw_acceptor_idlest(cw_acceptor *a, uint32_t min_idle_ms)
{
    if (!a || a->freed)
        return NULL;
    cw_stream *s = a->active.head;
    int64_t now = cw__loop_now(a->prof.loop);
    if (!s || s->state != CW__ST_OPEN || s->out || now - s->t < (int64_t)min_idle_ms)
        return NULL;
    return s;
}

int cw_acceptor_walk(cw_acceptor *a, cw_acceptor_walk_cb *fn, void *arg)
{
    if (!a || a->freed || !fn)
        return CW_EINVAL;
    /* fn may close the stream it is given (it moves to the linger list
     * or leaves): take the next one first. The linger list is walked
     * first, so a stream fn closes is not visited twice. */
    struct list *lists[] = {&a->linger, &a->active};
    for (int i = 0; i < 2; i++) {
        for (cw_stream *s = lists[i]->head, *next; s; s = next) {
            next = s->next;
            int rc = fn(s, arg);
            if (rc)
                return rc;
        }
    }
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
        s->flags &= ~CW__F_LINGER_LIST;
    }
}

int cw_acceptor_free(cw_acceptor **ap)
{
    if (!ap || !*ap)
        return CW_EINVAL;
    cw_acceptor *a = *ap;
    *ap = NULL;
    unwatch(a);
    cw_timer_stop(a->prof.loop, &a->timer);
    detach(&a->active);
    detach(&a->linger);
    free_spares(a);
    a->freed = 1;
    if (a->refs == 0)
        free(a);
    return CW_OK;
}
