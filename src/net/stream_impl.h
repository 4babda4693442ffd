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

/* Kept small: an idle stream is this struct, one timer-heap slot and
 * nothing else (docs/BENCHMARKS.md measures it). */
struct cw_stream {
    cw_io io;              /* io.data: the cw_acceptor it came from, or NULL */
    cw_timer timer;        /* timer.data: the loop; one timer for every deadline */
    void *data;
    union {
        const struct cw_stream_handlers *h;
        cw_stream_closed_cb *closed;   /* given to cw_stream_close(): only
                                          on_closed is called after it */
    } cb;
    struct cw__wq *out;
    cw_stream *prev, *next;           /* the acceptor's active or linger list */
    int64_t t;             /* open: last byte received (idle) or last owner
                              action after the end (grace); closing: the
                              close deadline */
    uint32_t idle_ms, write_ms, grace_ms;
    uint32_t hwm;          /* open: high-water mark; lingering: bytes drained;
                              done: the enum cw_end (cw_stream_end) */
    int32_t result;        /* terminal read result, once known; when done:
                              how the close ended */
    int16_t werr;          /* sticky write error (every code fits) */
    uint8_t state, flags;
};

/* On the acceptor's linger list rather than its active one (a flag bit
 * only acceptor.c uses). */
#define CW__F_LINGER_LIST 0x80u

enum { CW__ST_OPEN, CW__ST_FLUSH, CW__ST_LINGER, CW__ST_DONE };

/* Why the library ended a stream, for the acceptor's counters. */
enum { CW__END_OWNER, CW__END_WRITE_TIMEOUT, CW__END_GRACE, CW__END_RECLAIM };

/* A stream around a connected non-blocking fd (taken in every case). */
int cw__stream_new(cw_loop *loop, int fd, const struct cw_stream_opts *o,
                   cw_acceptor *a, cw_stream **out);

/* Close now: a lingering stream as if its deadline passed, an open one
 * with -EMFILE. Used by the acceptor under descriptor pressure. */
void cw__stream_reclaim(cw_stream *s);

/* The acceptor's bookkeeping, no-ops for streams without one. */
void cw__acceptor_touch(cw_stream *s);     /* received bytes: LRU tail */
void cw__acceptor_closing(cw_stream *s);   /* now on the linger list */
void cw__acceptor_ended(cw_stream *s, int why);  /* descriptor closed */

#endif
