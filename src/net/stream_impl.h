/* stream_impl.h - what stream.c, stream_dial.c and acceptor.c share about
 * a cw_stream; never installed. */
#ifndef CW_STREAM_IMPL_H
#define CW_STREAM_IMPL_H

#include "internal.h"

/* Output the socket did not take yet; exists only while there is some. */
struct cw__wq {
    int64_t due;         /* write timeout: restarts on every byte sent */
    size_t off, len, cap;
    int shut;            /* cw_stream_shutdown() waits for this queue */
    char buf[];
};

/* What streams of one origin share: their loop, their options, and the
 * acceptor they came from. An acceptor embeds one for all its streams
 * (and outlives them); a stream adopted or dialed carries its own, in
 * the same allocation. Keeping the options here, not in every stream, is
 * most of what keeps an idle stream small. */
struct cw__sprof {
    cw_loop *loop;
    cw_acceptor *a;            /* NULL: not from an acceptor (any more) */
    struct cw_stream_opts o;   /* normalized: no 0 for "default" left */
    /* The loop's FIFO queues (cw__loop_tq indexes; 0: the heap) for the
     * fixed timeouts, and the one with timeout 0 that delivers on_closed
     * from the loop: a deferred-callback list. */
    int q_write, q_grace, q_linger, q_idle, q_done;
    /* cw_stream_set_timeout's last look-up (q_set 0: none yet): an owner
     * sets the same timeout on every stream it accepts. */
    uint32_t set_ms;
    int q_set;
};

/* The stream's one timer: on one of the loop's FIFO queues when the
 * deadline is a fixed timeout from now (O(1), no heap node), else in the
 * heap. Both start with the deadline; the heap's slot comes after the
 * queue links, and is 0 while queued. */
union cw__stimer {
    cw_timer h;
    cw_tqentry q;
};

/* Kept small: an idle stream is this struct, the owner's user_size bytes
 * right after it, and nothing else: no heap slot (docs/BENCHMARKS.md
 * measures it). */
struct cw_stream {
    cw_io io;              /* io.data: the struct cw__sprof */
    union cw__stimer tm;   /* every deadline */
    void *data;            /* the owner's (cw_stream_data) */
    union {
        const struct cw_stream_handlers *h;
        cw_stream_closed_cb *closed;   /* given to cw_stream_close(): only
                                          on_closed is called after it */
    } cb;
    struct cw__wq *out;
    cw_stream *prev, *next;           /* the acceptor's active or linger list */
    int64_t t;             /* open: last byte received or owner action
                              (acceptor's LRU age; grace after the end);
                              closing: the close deadline */
    int64_t rdl;           /* open: the read deadline (idle timeout or the
                              owner's); lingering: the lingering timeout */
    /* Bit-fields: the last 8 bytes hold what took 12 (an idle stream
     * plus the reference server's session fit a 192-byte chunk). */
    uint32_t aux : 22;     /* open: the queue of rdl (cw__loop_tq index;
                              0: rdl is an arbitrary deadline: the heap);
                              lingering: bytes drained (saturating: the
                              drain stops at CW_DRAIN_MAX anyway); done:
                              the enum cw_end (cw_stream_end) */
    uint32_t state : 2;
    uint32_t flags : 8;
    int16_t result;        /* terminal read result, once known; when done:
                              how the close ended (every code fits) */
    int16_t werr;          /* sticky write error */
};

#define CW__AUX_MAX ((1u << 22) - 1)
_Static_assert(CW_DRAIN_MAX < CW__AUX_MAX, "drain count does not fit aux");

/* The owner's user_size bytes follow the struct, this aligned. */
#define CW__STREAM_SIZE ((sizeof(struct cw_stream) + 15) & ~(size_t)15)

static inline struct cw__sprof *cw__prof(const cw_stream *s)
{
    return s->io.data;
}

/* On the acceptor's linger list rather than its active one (a flag bit
 * only acceptor.c uses). */
#define CW__F_LINGER_LIST 0x80u

enum { CW__ST_OPEN, CW__ST_FLUSH, CW__ST_LINGER, CW__ST_DONE };

/* How a stream known to be done ended: cw_stream_end without its checks,
 * inline for on_closed callbacks (the reference server's, per
 * connection), which only ever see done streams. */
static inline enum cw_end cw__stream_end_done(const cw_stream *s)
{
    return (enum cw_end)s->aux;
}

/* Why the library ended a stream, for the acceptor's counters. */
enum { CW__END_OWNER, CW__END_WRITE_TIMEOUT, CW__END_GRACE, CW__END_RECLAIM,
       CW__END_PLAIN };

/* Fill p->o from o (NULL: defaults), every 0-means-default resolved. */
void cw__sprof_init(struct cw__sprof *p, cw_loop *loop,
                    const struct cw_stream_opts *o);

/* A stream around a connected non-blocking fd (taken in every case).
 * prof NULL: the stream gets its own copy of loop and o, and is watched
 * at once; else it is left unwatched for cw__stream_watch(). */
int cw__stream_new(cw_loop *loop, int fd, const struct cw_stream_opts *o,
                   struct cw__sprof *prof, cw_stream **out);

/* An acceptor's stream is created unwatched (CW__F_IO_OFF): the owner's
 * cw_stream_start() in the accept callback adds it to epoll with its
 * interest at once. This watches one the owner did not start (the
 * acceptor calls it only while the flag is set: most owners started
 * it). */
void cw__stream_watch(cw_stream *s);
#define CW__F_IO_OFF 8u   /* stream.c's F_IO_OFF: not watched */

/* The acceptor's bookkeeping, no-ops for streams without one. */
void cw__acceptor_touch(cw_stream *s);     /* received bytes: LRU tail */
void cw__acceptor_closing(cw_stream *s);   /* now on the linger list */
void cw__acceptor_ended(cw_stream *s, int why);  /* descriptor closed */
/* The stream's memory, freed or kept for a later accept (taken). */
void cw__acceptor_put(cw_acceptor *a, cw_stream *s);
/* A kept stream's memory (not zeroed), or NULL: malloc one. */
void *cw__acceptor_spare(cw_acceptor *a);

#endif
