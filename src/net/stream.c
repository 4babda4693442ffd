/* stream.c - an event-driven connection that always ends correctly.
 *
 * A stream is OPEN (reading and writing), FLUSH (closing gracefully: the
 * queued output goes out), LINGER (SHUT_WR sent, input discarded until
 * the peer's FIN or the deadline) or DONE (descriptor closed; on_closed
 * runs from the timer in the loop's next timer pass, then the memory is
 * freed). Freeing only from that timer callback is what makes closing
 * from inside any callback safe: no dispatch of this stream is on the
 * stack then. Event handlers do their work and end with settle(), the
 * one place that arms the watcher and the timer for the state. */
#define _GNU_SOURCE
#include "stream_impl.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_ROUNDS 8          /* recv calls per event before yielding */
#define READ_CHUNK 16384
#define CLOSE_DEFAULT_MS 30000 /* graceful close given CW_NEVER */

/* flags */
#define F_READING 1u     /* the owner wants bytes */
#define F_ENDED 2u       /* peer closed/reset, or terminal result delivered */
#define F_DELIVERED 4u   /* the terminal result went to on_read */
#define F_IO_OFF CW__F_IO_OFF   /* watcher stopped: EPOLLHUP would repeat
                                    forever */
#define F_FULL 16u       /* a write said "full": on_drain when empty */
#define F_OWN_CB 32u     /* s->cb.closed, not s->cb.h */
#define F_BY_GRACE 64u   /* the library is closing it after the grace */

/* werr after cw_stream_shutdown(): writes are refused, yet it is no error
 * (a close after it is still graceful). */
#define SHUT (-ESHUTDOWN)

static void on_io(cw_loop *loop, cw_io *io, unsigned events);
static void on_heap_timer(cw_loop *loop, cw_timer *t);
static void on_queue_timer(cw_loop *loop, cw_tqentry *e);
static void on_done(cw_loop *loop, cw_tqentry *e);
static void finish(cw_stream *s, int how, int rst, int why);
static void settle(cw_stream *s);

void cw_stream_opts_init(struct cw_stream_opts *o)
{
    memset(o, 0, sizeof *o);
    o->write_timeout_ms = 60000;
    o->close_grace_ms = 5000;
    o->high_water = 65536;
}

/* An idle stream must leave room for its owner's session in a 176-byte
 * malloc chunk: the reference server's idle session is this struct plus
 * 40 bytes of its own (docs/BENCHMARKS.md, <= 200 bytes per session). */
_Static_assert(CW__STREAM_SIZE <= 128, "cw_stream grew");
/* The timer union: one deadline for both, and the heap's slot clear of
 * the queue links (0 while queued). */
_Static_assert(offsetof(cw_timer, deadline) == offsetof(cw_tqentry, deadline) &&
               offsetof(cw_timer, slot) >= sizeof(cw_tqentry),
               "cw_timer and cw_tqentry no longer overlay");

void cw__sprof_init(struct cw__sprof *p, cw_loop *loop,
                    const struct cw_stream_opts *o)
{
    p->loop = loop;
    p->a = NULL;
    if (o)
        p->o = *o;
    else
        cw_stream_opts_init(&p->o);
    if (!p->o.write_timeout_ms)
        p->o.write_timeout_ms = 60000;
    if (!p->o.high_water)
        p->o.high_water = 65536;
    /* One queue per distinct timeout, shared by the loop's streams. */
    p->q_write = cw__loop_tqueue(loop, p->o.write_timeout_ms, on_queue_timer);
    p->q_grace = cw__loop_tqueue(loop, p->o.close_grace_ms, on_queue_timer);
    p->q_linger = p->o.linger_timeout_ms
                  ? cw__loop_tqueue(loop, p->o.linger_timeout_ms, on_queue_timer) : 0;
    p->q_idle = p->o.idle_timeout_ms
                ? cw__loop_tqueue(loop, p->o.idle_timeout_ms, on_queue_timer) : 0;
    p->q_done = cw__loop_tqueue(loop, 0, on_done);
    p->set_ms = 0;
    p->q_set = 0;
}

static struct cw__sprof *P(const cw_stream *s)
{
    return cw__prof(s);
}

static cw_loop *loop_of(const cw_stream *s)
{
    return P(s)->loop;
}

/* The loop's time: one clock read per loop pass, shared by every stream
 * the pass touches (cw__loop_now). */
static int64_t loop_now(const cw_stream *s)
{
    return cw__loop_now(P(s)->loop);
}

int cw__stream_new(cw_loop *loop, int fd, const struct cw_stream_opts *o,
                   struct cw__sprof *prof, cw_stream **out)
{
    size_t user = prof ? prof->o.user_size : o ? o->user_size : 0;
    size_t size = CW__STREAM_SIZE + user;   /* not rounded: every byte of
                                               a malloc chunk counts */
    if (!prof)
        size = (size + 15) & ~(size_t)15;   /* the options follow */
    /* Not calloc: glibc's calloc (2.36) never takes from the per-thread
     * cache that free() fills, so a stream per connection paid the
     * arena's slow paths both ways (callgrind: 221 instructions more per
     * churn connection). Zeroed in two parts, as gcc turns a malloc and a
     * memset of the same size back into calloc. */
    cw_stream *s = prof ? cw__acceptor_spare(prof->a) : NULL;
    if (!s)
        s = malloc(size + (prof ? 0 : sizeof *prof));
    if (!s) {
        close(fd);
        return -ENOMEM;
    }
    memset(s, 0, sizeof *s);
    memset((char *)s + sizeof *s, 0, size - sizeof *s);
    if (!prof) {   /* its own, after the user area */
        prof = (struct cw__sprof *)((char *)s + size);
        cw__sprof_init(prof, loop, o);
    }
    s->io.fd = fd;
    s->io.data = prof;
    s->rdl = INT64_MAX;
    if (prof->a) {
        /* cw__stream_watch() after the callback; the owner starts it
         * there, which sets t: one clock read per accept, not two. */
        s->flags |= F_IO_OFF;
        *out = s;
        return CW_OK;
    }
    s->t = cw__loop_now(loop);
    /* Watched from the start, reads or not: a peer that closes before the
     * owner starts reading is still noticed. */
    int rc = cw_io_start(loop, &s->io, 0, on_io);
    if (rc < 0) {
        close(fd);
        free(s);
        return rc;
    }
    *out = s;
    return CW_OK;
}

void cw__stream_watch(cw_stream *s)
{
    if (s->state != CW__ST_OPEN || !(s->flags & F_IO_OFF) || (s->flags & F_ENDED))
        return;
    if (!s->t)
        s->t = loop_now(s);   /* not started: its age counts from here */
    int rc = cw_io_start(loop_of(s), &s->io, 0, on_io);
    if (rc == CW_OK)
        s->flags &= ~F_IO_OFF;
    else
        finish(s, rc, 1, CW__END_OWNER);
}

int cw_stream_adopt(cw_loop *loop, int fd, const struct cw_stream_opts *opts,
                    cw_stream **out)
{
    if (!loop || fd < 0 || !out) {
        if (fd >= 0)
            close(fd);
        return CW_EINVAL;
    }
    *out = NULL;
    int rc = cw__set_nonblock(fd);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    if (opts && opts->user_size > CW_STREAM_USER_MAX) {
        close(fd);
        return CW_EINVAL;
    }
    return cw__stream_new(loop, fd, opts, NULL, out);
}

/* ---- ending ---- */

static void drop_queue(cw_stream *s)
{
    if (!s->out)
        return;   /* the usual case: no call into free() */
    free(s->out);
    s->out = NULL;
}

/* The public end for a close that ended with how (a result code), a RST
 * or not, for reason why. Only an abort closes with CW_OK and a RST. */
static enum cw_end end_of(int how, int rst, int why)
{
    switch (why) {
    case CW__END_PLAIN:
        return CW_END_PLAIN;
    case CW__END_RECLAIM:
        return CW_END_EVICTED;
    case CW__END_WRITE_TIMEOUT:
        return CW_END_TIMEOUT;
    case CW__END_GRACE:
        return CW_END_ABANDONED;
    default:   /* a clean close needs no call */
        if (how == CW_OK)
            return rst ? CW_END_ABORT : CW_END_GRACEFUL;
        return cw_end_of_close(CW_CLOSE_GRACEFUL, how);
    }
}

/* ---- the one timer: a FIFO queue of the loop, or its heap ---- */

static int tm_in_heap(const cw_stream *s)
{
    return s->tm.h.slot != 0;
}

static int tm_queued(const cw_stream *s)
{
    return !tm_in_heap(s) && s->tm.q.next;
}

static void tm_stop(cw_stream *s)
{
    if (tm_in_heap(s)) {
        cw_timer_stop(loop_of(s), &s->tm.h);
        s->tm.q.prev = s->tm.q.next = NULL;   /* the heap's data and cb */
    } else {
        cw_tqueue_remove(&s->tm.q);
    }
}

/* Be due at due, a fixed timeout of the loop's queue qi (0: none) or an
 * arbitrary deadline. On a queue a deadline is exact, so activity moves
 * the stream to the tail (O(1)); in the heap it is lazy: a later due
 * leaves it, it fires early and is re-armed then. A deadline that would
 * not go at its queue's tail (it was computed from an older time) takes
 * the heap, so no insert ever walks a queue. */
static int arm(cw_stream *s, int64_t due, int qi)
{
    if (due == INT64_MAX)
        return CW_OK;   /* a timer left running fires and finds nothing */
    cw_loop *loop = loop_of(s);
    if (tm_in_heap(s)) {
        if (s->tm.h.deadline <= due)
            return CW_OK;
    } else if (tm_queued(s) && s->tm.q.deadline == due) {
        return CW_OK;
    }
    cw_tqueue *q = cw__loop_tq(loop, qi);
    if (q) {
        if (tm_in_heap(s))
            tm_stop(s);
        if (cw__tqueue_put(q, &s->tm.q, due))
            return CW_OK;
    }
    if (tm_queued(s)) {
        if (s->tm.q.deadline <= due)
            return CW_OK;
        cw_tqueue_remove(&s->tm.q);
    }
    return cw_timer_start(loop, &s->tm.h, due < 0 ? 0 : due, on_heap_timer);
}

/* on_closed from the loop's next timer pass: on the loop's list of
 * deferred calls (the queue with timeout 0), not a heap node. */
static void arm_done(cw_stream *s)
{
    tm_stop(s);
    cw_tqueue *q = cw__loop_tq(loop_of(s), P(s)->q_done);
    if (!q || !cw__tqueue_put(q, &s->tm.q, 0))
        cw_timer_start(loop_of(s), &s->tm.h, 0, on_heap_timer);
}

/* Close the descriptor now; on_closed follows from the loop. */
static void finish(cw_stream *s, int how, int rst, int why)
{
    if (why == CW__END_OWNER && (s->flags & F_BY_GRACE))
        why = CW__END_GRACE;
    /* EPOLL_CTL_DEL before close(), though close() leaves the epoll set
     * by itself (one system call of 8 per churn connection): it does so
     * only when no other descriptor refers to the socket, and the library
     * cannot know that none does (a dup of cw_stream_fd() or of an
     * adopted fd, a fork or posix_spawn child before its exec). Left in
     * the set, the socket would report events pointing at this stream
     * after it is freed (test_dup_outlives_stream). The memory stays
     * until on_closed, from the timer pass: no search of the batch. */
    cw__io_stop_kept(loop_of(s), &s->io);
    drop_queue(s);
    if (rst)
        cw__set_linger0(s->io.fd);
    close(s->io.fd);   /* Linux releases the fd even when close() fails */
    s->io.fd = -1;
    s->state = CW__ST_DONE;
    s->result = how;
    s->aux = (uint32_t)end_of(how, rst, why);
    s->flags &= ~F_READING;
    cw__acceptor_ended(s, why);
    /* Deadline 0 is already due: the callback runs in this iteration's
     * timer pass, after whatever dispatch we are inside has returned. */
    arm_done(s);
}

static void start_linger(cw_stream *s)
{
    if ((s->flags & F_DELIVERED) && s->result == CW_EOF) {
        /* The peer's FIN was read, so nothing is left unread and nothing
         * is queued: close() itself sends our FIN, no shutdown needed. */
        finish(s, CW_OK, 0, CW__END_OWNER);
        return;
    }
    if (shutdown(s->io.fd, SHUT_WR) < 0 && errno != ENOTCONN) {
        finish(s, -errno, 1, CW__END_OWNER);
        return;
    }
    s->state = CW__ST_LINGER;
    s->aux = 0;
    uint32_t lt = P(s)->o.linger_timeout_ms;
    s->rdl = lt ? loop_now(s) + lt : INT64_MAX;
}

/* Graceful close: flush, then linger. s->t holds the close deadline. */
static void begin_close(cw_stream *s, int why)
{
    s->flags &= ~(F_READING | F_FULL);
    if (why == CW__END_GRACE)
        s->flags |= F_BY_GRACE;
    if (s->werr == CW_ERESET || s->result == CW_ERESET) {
        finish(s, CW_ERESET, 0, why);
        return;
    }
    if (s->werr && s->werr != SHUT) {
        finish(s, s->werr, 1, why);
        return;
    }
    s->state = CW__ST_FLUSH;
    cw__acceptor_closing(s);
    if (!s->out)
        start_linger(s);
}

int cw_stream_close(cw_stream *s, int how, int64_t deadline,
                    cw_stream_closed_cb *on_closed)
{
    if (!s || s->state == CW__ST_DONE || (how != CW_CLOSE_GRACEFUL &&
        how != CW_CLOSE_ABORT && how != CW_CLOSE_PLAIN))
        return CW_EINVAL;
    /* Only an abort may cut a graceful close short. */
    if (s->state != CW__ST_OPEN && how != CW_CLOSE_ABORT)
        return CW_EINVAL;
    if (on_closed) {
        s->cb.closed = on_closed;
        s->flags |= F_OWN_CB;
    }
    if (how == CW_CLOSE_ABORT) {
        finish(s, CW_OK, 1, CW__END_OWNER);
        return CW_OK;
    }
    if (how == CW_CLOSE_PLAIN) {
        finish(s, CW_OK, 0, CW__END_PLAIN);
        return CW_OK;
    }
    s->t = deadline < 0 ? loop_now(s) + CLOSE_DEFAULT_MS : deadline;
    begin_close(s, CW__END_OWNER);
    /* Arm the close's watcher and deadline now: called outside the
     * stream's own callbacks, nothing else would. */
    settle(s);
    return CW_OK;
}

int cw_stream_evict(cw_stream *s)
{
    if (!s || s->state == CW__ST_DONE)
        return CW_EINVAL;
    /* Read what is pending first, so the close sends FIN, not RST. */
    size_t total = 0;
    cw__drain_nb(s->io.fd, &total);
    if (s->state == CW__ST_OPEN)
        finish(s, -EMFILE, 0, CW__END_RECLAIM);
    else
        finish(s, CW_ETIMEDOUT, 0, CW__END_RECLAIM);
    return CW_OK;
}

/* ---- reading ---- */

static void deliver_end(cw_stream *s, int rc)
{
    /* The loop's SO_ERROR read after EPOLLERR, or a failed send, may have
     * taken the kernel's error (a reset, a keepalive or user timeout),
     * after which recv() says a plain 0: the error is what happened. A
     * send takes it when the kernel gives up between the loop's wait and
     * the flush (test_kernel_timeout_taken_by_flush). */
    if (rc == CW_EOF && s->result < 0)
        rc = s->result;
    else if (rc == CW_EOF && s->werr < 0 && s->werr != SHUT)
        rc = s->werr;
    s->result = rc;
    s->flags |= F_DELIVERED | F_ENDED;
    s->t = loop_now(s);   /* the grace period starts */
    if (s->cb.h && s->cb.h->on_read)
        s->cb.h->on_read(s, rc, NULL);
}

/* Read what the event announced. A short read took all the kernel had,
 * so the next recv would only say EAGAIN (a third system call per
 * request/reply): the loop is level-triggered and reports bytes that come
 * later. The peer's end is the exception: once it is known (the event
 * carries RDHUP/HUP/ERR, or an earlier one did: F_ENDED), reading goes on
 * to the EOF or error, so data and FIN in one segment are delivered in
 * this dispatch, data first and then the end. */
static void do_read(cw_stream *s, unsigned events)
{
    char buf[READ_CHUNK];
    int to_end = (events & (CW_EV_HUP | CW_EV_ERROR)) || (s->flags & F_ENDED);
    for (int round = 0; round < READ_ROUNDS; round++) {
        if (s->state != CW__ST_OPEN || !(s->flags & F_READING) ||
            (s->flags & F_DELIVERED))
            return;
        ssize_t n = cw__recv_nb(s->io.fd, buf, sizeof buf);
        if (n == -EAGAIN)
            return;
        if (n < 0) {
            deliver_end(s, (int)n);
            return;
        }
        s->t = loop_now(s);   /* LRU age and grace count from here */
        if (P(s)->o.idle_timeout_ms) {
            s->rdl = s->t + P(s)->o.idle_timeout_ms;
            s->aux = (uint32_t)P(s)->q_idle;
        }
        cw__acceptor_touch(s);
        if (s->cb.h && s->cb.h->on_read)
            s->cb.h->on_read(s, n, buf);
        if ((size_t)n < sizeof buf && !to_end)
            return;
    }
}

static void set_reading(cw_stream *s, int on);

int cw_stream_start(cw_stream *s, const struct cw_stream_handlers *h,
                    void *data)
{
    if (!s)
        return CW_EINVAL;
    if (s->state != CW__ST_OPEN)
        return CW_ECLOSING;
    s->cb.h = h;
    s->data = data;
    set_reading(s, 1);
    return CW_OK;
}

/* ---- writing ---- */

static void write_failed(cw_stream *s, int rc)
{
    /* We never shut our side while open: EPIPE means the kernel's error
     * (a reset, mostly) was already taken, by the loop or an earlier call;
     * a pending one recorded from SO_ERROR says which. */
    if (rc == -EPIPE)
        rc = s->result < 0 && !(s->flags & F_DELIVERED) ? s->result : CW_ERESET;
    s->werr = (int16_t)rc;
    /* An owner that paused reads for backpressure waits for an on_drain
     * that cannot come: reading resumes, so it gets what the peer sent
     * before the end, then the end itself. */
    s->flags |= F_ENDED | F_READING;
    s->t = loop_now(s);
    drop_queue(s);
}

/* Send what is queued; returns when the socket is full or the queue empty. */
static void flush(cw_stream *s)
{
    struct cw__wq *q = s->out;
    while (q && q->off < q->len) {
        ssize_t n = cw__send_nb(s->io.fd, q->buf + q->off, q->len - q->off);
        if (n == -EAGAIN)
            return;
        if (n < 0) {
            write_failed(s, (int)n);
            return;
        }
        q->off += (size_t)n;
        q->due = loop_now(s) + P(s)->o.write_timeout_ms;   /* progress:
                                                 nginx send_timeout */
    }
    if (q && q->shut)
        shutdown(s->io.fd, SHUT_WR);
    drop_queue(s);
    if (s->state != CW__ST_OPEN)
        return;   /* closing: s->t is the close deadline */
    if (s->flags & F_ENDED)
        s->t = loop_now(s);   /* the grace period counts from here */
    if (s->flags & F_FULL) {
        s->flags &= ~F_FULL;
        if (s->cb.h && s->cb.h->on_drain)
            s->cb.h->on_drain(s);
    }
}

static int enqueue(cw_stream *s, const char *p, size_t len)
{
    struct cw__wq *q = s->out;
    size_t have = q ? q->len - q->off : 0;
    if (q && q->off && q->len + len > q->cap) {   /* compact first */
        memmove(q->buf, q->buf + q->off, have);
        q->off = 0;
        q->len = have;
    }
    if (!q || q->len + len > q->cap) {
        size_t cap = q ? q->cap * 2 : 0;
        if (cap < have + len)
            cap = have + len;
        struct cw__wq *nq = realloc(q, sizeof *nq + cap);
        if (!nq)
            return -ENOMEM;
        if (!q) {
            nq->off = nq->len = 0;
            nq->shut = 0;
            nq->due = loop_now(s) + P(s)->o.write_timeout_ms;
        }
        nq->cap = cap;
        s->out = q = nq;
    }
    memcpy(q->buf + q->len, p, len);
    q->len += len;
    return CW_OK;
}


static int write_flags(cw_stream *s, const void *buf, size_t len, int more)
{
    if (!s || (!buf && len))
        return CW_EINVAL;
    if (s->state != CW__ST_OPEN)
        return CW_ECLOSING;
    if (s->werr)
        return s->werr;
    if (s->flags & F_ENDED)
        s->t = loop_now(s);   /* the owner acts: no grace close yet */
    const char *p = buf;
    if (!s->out && len) {
        ssize_t n;
        if (more) {
            n = send(s->io.fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL | MSG_MORE);
            if (n < 0)
                n = errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno;
        } else {
            n = cw__send_nb(s->io.fd, p, len);
        }
        if (n < 0 && n != -EAGAIN) {
            write_failed(s, (int)n);
            settle(s);
            return s->werr;
        }
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        }
    }
    if (len) {
        int rc = enqueue(s, p, len);
        if (rc < 0)
            return rc;
        settle(s);
    }
    if (s->out && s->out->len - s->out->off >= P(s)->o.high_water) {
        s->flags |= F_FULL;
        return 1;
    }
    return CW_OK;
}

int cw_stream_write(cw_stream *s, const void *buf, size_t len)
{
    return write_flags(s, buf, len, 0);
}

int cw_stream_write_more(cw_stream *s, const void *buf, size_t len)
{
    return write_flags(s, buf, len, 1);
}

int cw_stream_shutdown(cw_stream *s)
{
    if (!s)
        return CW_EINVAL;
    if (s->state != CW__ST_OPEN)
        return CW_ECLOSING;
    if (s->werr)
        return s->werr == SHUT ? CW_OK : s->werr;
    s->werr = SHUT;
    if (s->out)
        s->out->shut = 1;   /* flush() sends the FIN after the last byte */
    else if (shutdown(s->io.fd, SHUT_WR) < 0 && errno != ENOTCONN)
        s->werr = (int16_t)-errno;
    return s->werr == SHUT ? CW_OK : s->werr;
}

size_t cw_stream_queued(const cw_stream *s)
{
    return s && s->out ? s->out->len - s->out->off : 0;
}

/* ---- arming: the watcher and the one timer for the state ---- */

/* The earliest deadline, and the queue it is a fixed timeout of. */
struct due {
    int64_t at;
    int q;
};

static void earlier(struct due *d, int64_t at, int q)
{
    if (at < d->at) {
        d->at = at;
        d->q = q;
    }
}

static struct due open_deadline(const cw_stream *s)
{
    struct due d = {INT64_MAX, 0};
    if (s->out)
        earlier(&d, s->out->due, P(s)->q_write);
    else if (s->flags & F_ENDED)
        earlier(&d, s->t + P(s)->o.close_grace_ms, P(s)->q_grace);
    if ((s->flags & (F_READING | F_ENDED)) == F_READING)
        earlier(&d, s->rdl, (int)s->aux);
    return d;
}

static unsigned open_interest(const cw_stream *s)
{
    unsigned want = s->out ? CW_IO_WRITE : 0;
    if ((s->flags & (F_READING | F_DELIVERED)) == F_READING)
        want |= CW_IO_READ;
    return want;
}

/* One copy (CW__ONE_COPY), not one inlined in each caller: a churn
 * connection settles from cw_stream_start, cw_stream_close and on_io,
 * and the copies cost 10 code lines per connection more than the one. */
CW__ONE_COPY static void settle(cw_stream *s)
{
    cw_loop *loop = loop_of(s);
    if (s->state == CW__ST_DONE)
        return;
    unsigned want;
    struct due d = {INT64_MAX, 0};
    if (s->state == CW__ST_OPEN) {
        want = open_interest(s);
        d = open_deadline(s);
    } else if (s->state == CW__ST_FLUSH) {
        want = CW_IO_WRITE;
        earlier(&d, s->out->due, P(s)->q_write);
        earlier(&d, s->t, 0);   /* the close deadline: the owner's */
    } else {
        want = CW_IO_READ;
        earlier(&d, s->rdl, P(s)->q_linger);
        earlier(&d, s->t, 0);
    }
    int rc = CW_OK;
    if (s->flags & F_IO_OFF) {
        /* Restart only for work: EPOLLHUP makes it report at once. */
        if (want && (rc = cw_io_start(loop, &s->io, want, on_io)) == CW_OK)
            s->flags &= ~F_IO_OFF;
    } else if (want != s->io.interest) {   /* no call when unchanged */
        rc = cw_io_set(loop, &s->io, want);
    }
    if (rc == CW_OK)
        rc = arm(s, d.at, d.q);
    if (rc < 0)
        finish(s, rc, 1, CW__END_OWNER);
}

static void set_reading(cw_stream *s, int on)
{
    if (on && !(s->flags & F_READING)) {
        s->flags |= F_READING;
        if (!(s->flags & F_ENDED)) {
            s->t = loop_now(s);   /* the idle timeout counts from here */
            if (P(s)->o.idle_timeout_ms) {
                s->rdl = s->t + P(s)->o.idle_timeout_ms;
                s->aux = (uint32_t)P(s)->q_idle;
            }
        }
    } else if (!on) {
        s->flags &= ~F_READING;
    }
    settle(s);
}

int cw_stream_read_start(cw_stream *s)
{
    if (!s)
        return CW_EINVAL;
    if (s->state != CW__ST_OPEN)
        return CW_ECLOSING;
    if (s->flags & F_DELIVERED)
        return s->result;
    set_reading(s, 1);
    return CW_OK;
}

int cw_stream_read_stop(cw_stream *s)
{
    if (!s)
        return CW_EINVAL;
    if (s->state != CW__ST_OPEN)
        return CW_ECLOSING;
    set_reading(s, 0);
    return CW_OK;
}

/* ---- events ---- */

/* Both directions shut (a reset, or FINs both ways)? poll() reports
 * POLLHUP exactly then: EPOLLHUP, which unlike EPOLLRDHUP cannot be
 * masked and would wake the loop on every iteration. */
static int fully_shut(int fd)
{
    struct pollfd p = {.fd = fd, .events = 0};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLNVAL));
}

/* The peer closed or reset while we were not reading it. */
static void peer_ended(cw_stream *s, unsigned events)
{
    if (!(events & (CW_EV_HUP | CW_EV_ERROR)))
        return;
    if (!(s->flags & F_ENDED)) {
        s->flags |= F_ENDED;
        if (!s->out)
            s->t = loop_now(s);
    }
    if (fully_shut(s->io.fd)) {
        /* Nothing can be sent any more, and the bytes still unread wait
         * in the kernel for a read_start: stop watching until then. */
        cw_io_stop(loop_of(s), &s->io);
        s->flags |= F_IO_OFF;
        if (s->out)
            write_failed(s, CW_ERESET);
    }
}

static void on_open_io(cw_stream *s, unsigned events)
{
    /* Before the flush: its send() then says EPIPE, which write_failed
     * turns into this error, not a reset that never came. */
    if (events & CW_EV_ERROR && s->io.err && !s->result)
        s->result = s->io.err;   /* SO_ERROR was consumed: keep it */
    if ((events & (CW_EV_WRITE | CW_EV_ERROR | CW_EV_HUP)) && s->out)
        flush(s);
    if (s->state != CW__ST_OPEN)
        return;
    if (open_interest(s) & CW_IO_READ) {
        do_read(s, events);
    } else {
        peer_ended(s, events);
    }
}

static void on_linger_io(cw_stream *s, unsigned events)
{
    if (events & CW_EV_ERROR && s->io.err) {
        finish(s, s->io.err, 0, CW__END_OWNER);
        return;
    }
    size_t total = s->aux;
    int rc = cw__drain_nb(s->io.fd, &total);
    s->aux = total > CW__AUX_MAX ? CW__AUX_MAX : (uint32_t)total;
    uint32_t lt = P(s)->o.linger_timeout_ms;
    if (lt && rc == -EAGAIN)
        s->rdl = loop_now(s) + lt;   /* nginx lingering_timeout: per read */
    if (rc == CW_EOF)
        finish(s, CW_OK, 0, CW__END_OWNER);
    else if (rc == CW_ETOOLONG)
        finish(s, CW_ETOOLONG, 1, CW__END_OWNER);
    else if (rc != -EAGAIN)
        finish(s, rc == -ENOTCONN ? CW_ERESET : rc, 0, CW__END_OWNER);
}

static void on_io(cw_loop *loop, cw_io *io, unsigned events)
{
    cw_stream *s = (cw_stream *)((char *)io - offsetof(cw_stream, io));
    if (s->state == CW__ST_OPEN) {
        on_open_io(s, events);
        /* Open to closing only by the owner's cw_stream_close(), which
         * settled it (a churn connection's reply and close), and nothing
         * after that here or in the owner changes it: done. */
        if (s->state != CW__ST_OPEN)
            return;
    } else if (s->state == CW__ST_FLUSH) {
        flush(s);
        if (s->werr && s->werr != SHUT)
            finish(s, s->werr == -EPIPE ? CW_ERESET : s->werr, 0, CW__END_OWNER);
        else if (!s->out)
            start_linger(s);
    } else if (s->state == CW__ST_LINGER) {
        on_linger_io(s, events);
    }
    settle(s);
}

static void on_open_timer(cw_stream *s, int64_t now)
{
    if (s->out && now >= s->out->due) {
        /* The peer stopped reading: nothing more we send will arrive, so
         * the reset is the honest end, and the queue's memory goes now. */
        finish(s, CW_ETIMEDOUT, 1, CW__END_WRITE_TIMEOUT);
    } else if (!s->out && (s->flags & F_ENDED) &&
               now >= s->t + P(s)->o.close_grace_ms) {
        /* The peer is gone and the owner did nothing: close for it. */
        s->t = now + CLOSE_DEFAULT_MS;
        begin_close(s, CW__END_GRACE);
    } else if ((s->flags & (F_READING | F_ENDED)) == F_READING &&
               now >= s->rdl) {
        deliver_end(s, CW_ETIMEDOUT);
    }
}

/* The end of a done stream: on_closed, then its memory goes. */
static void closed(cw_stream *s)
{
    cw_stream_closed_cb *cb = (s->flags & F_OWN_CB) ? s->cb.closed
                              : s->cb.h ? s->cb.h->on_closed : NULL;
    if (cb)
        cb(s, s->result);
    cw_acceptor *a = P(s)->a;   /* P(s) may be inside s */
    if (a)
        cw__acceptor_put(a, s);   /* the options were the acceptor's */
    else
        free(s);
}

static void on_timer(cw_stream *s)
{
    if (s->state == CW__ST_DONE) {
        closed(s);
        return;
    }
    int64_t now = loop_now(s);
    if (s->state == CW__ST_OPEN) {
        on_open_timer(s, now);
    } else if (s->state == CW__ST_FLUSH) {
        if (now >= s->t || now >= s->out->due)
            finish(s, CW_ETIMEDOUT, 1, s->out && now >= s->out->due
                                           ? CW__END_WRITE_TIMEOUT : CW__END_OWNER);
    } else if (now >= s->t || now >= s->rdl) {   /* lingering */
        /* Discard what arrived last, so the close is a FIN, not a RST,
         * unless the peer is still sending. */
        size_t total = 0;
        cw__drain_nb(s->io.fd, &total);
        finish(s, CW_ETIMEDOUT, 0, CW__END_OWNER);
    }
    settle(s);
}

static cw_stream *stream_of_tm(void *tm)
{
    return (cw_stream *)((char *)tm - offsetof(cw_stream, tm));
}

static void on_heap_timer(cw_loop *loop, cw_timer *t)
{
    cw_stream *s = stream_of_tm(t);
    s->tm.q.prev = s->tm.q.next = NULL;   /* the heap's data and cb */
    on_timer(s);
}

static void on_queue_timer(cw_loop *loop, cw_tqentry *e)
{
    on_timer(stream_of_tm(e));
}

/* Only done streams are on the deferred-call queue (arm_done): their
 * end without the timer's dispatch on the state, whose open, flush and
 * linger code would share the lines this runs for every stream. */
static void on_done(cw_loop *loop, cw_tqentry *e)
{
    closed(stream_of_tm(e));
}

/* ---- accessors ---- */

void *cw_stream_data(const cw_stream *s)
{
    return s ? s->data : NULL;
}

void cw_stream_set_data(cw_stream *s, void *data)
{
    if (s)
        s->data = data;
}

void *cw_stream_user(const cw_stream *s)
{
    if (!s || !P(s)->o.user_size)
        return NULL;
    return (char *)s + CW__STREAM_SIZE;
}

int cw_stream_set_deadline(cw_stream *s, int64_t deadline)
{
    if (!s)
        return CW_EINVAL;
    if (s->state != CW__ST_OPEN)
        return CW_ECLOSING;
    s->rdl = deadline < 0 ? INT64_MAX : deadline;
    s->aux = 0;   /* arbitrary: the heap */
    settle(s);
    return CW_OK;
}

int cw_stream_set_timeout(cw_stream *s, uint32_t timeout_ms)
{
    if (!s)
        return CW_EINVAL;
    if (s->state != CW__ST_OPEN)
        return CW_ECLOSING;
    cw_loop *loop = loop_of(s);
    cw_tqueue *q = cw__loop_tq(loop, (int)s->aux);
    if (!q || q->timeout_ms != timeout_ms || q->cb != on_queue_timer) {
        struct cw__sprof *p = P(s);
        if (!p->q_set || p->set_ms != timeout_ms) {
            p->q_set = cw__loop_tqueue(loop, timeout_ms, on_queue_timer);
            p->set_ms = timeout_ms;
        }
        s->aux = (uint32_t)p->q_set;
        q = cw__loop_tq(loop, (int)s->aux);
    }
    s->rdl = loop_now(s) + timeout_ms;
    /* The usual call, a request renewing the idle timeout of a stream
     * that only reads: the watcher stays as it is and the one deadline is
     * rdl on q, so settle() would come to this same move to q's tail. */
    if (q && s->state == CW__ST_OPEN && !s->out && !tm_in_heap(s) &&
        (s->flags & (F_READING | F_ENDED | F_IO_OFF)) == F_READING &&
        s->io.interest == CW_IO_READ && cw__tqueue_put(q, &s->tm.q, s->rdl))
        return CW_OK;
    settle(s);
    return CW_OK;
}

int cw_stream_fd(const cw_stream *s)
{
    return s && s->state != CW__ST_DONE ? s->io.fd : CW_EINVAL;
}

int cw_stream_closing(const cw_stream *s)
{
    return s && s->state != CW__ST_OPEN;
}

enum cw_end cw_stream_end(const cw_stream *s)
{
    return s && s->state == CW__ST_DONE ? cw__stream_end_done(s) : CW_END_NONE;
}
