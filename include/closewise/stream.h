/*
 * closewise/stream.h - an event-driven TCP connection on a cw_loop that
 * always ends correctly: reads that end with exactly one terminal result,
 * buffered writes with backpressure and a write timeout, a graceful close
 * that delivers the last byte, and a library that closes what its owner
 * forgot instead of leaving it in CLOSE_WAIT.
 *
 * Do not include this file directly: include <closewise/closewise.h>.
 *
 * Conventions (see also conn.h and loop.h):
 *  - A cw_stream is created by cw_stream_adopt(), cw_stream_dial() or a
 *    cw_acceptor, and lives until its on_closed callback has returned; the
 *    library frees it then. on_closed runs exactly once per stream, either
 *    after cw_stream_close() or when the library ended the stream itself
 *    (write timeout, grace period after the peer's close, descriptor
 *    reclaim). Do not touch the stream after on_closed.
 *  - Callbacks run from cw_loop_run(). Calling any cw_stream_* function,
 *    cw_stream_close() included, from inside any callback is safe: the
 *    memory is released only once the dispatch has unwound.
 *  - "How a close ended" uses cw_close()'s vocabulary: CW_OK (the peer's
 *    FIN was seen: everything we sent was delivered), CW_ETIMEDOUT (a
 *    deadline passed first; after a write timeout the peer got a RST),
 *    CW_ERESET (the peer reset), CW_ETOOLONG (the peer kept sending past
 *    the drain limit), -EMFILE (closed to give a descriptor back to the
 *    acceptor), or another -errno. cw_stream_end() says the same in the
 *    one vocabulary of closewise/end.h, and tells apart what how cannot
 *    (an abort, a close by the library after the grace period).
 *  - A stream and its loop belong to one thread. Close every stream and
 *    let the loop run its on_closed calls before cw_loop_free().
 */
#ifndef CLOSEWISE_STREAM_H
#define CLOSEWISE_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cw_stream cw_stream;
typedef struct cw_acceptor cw_acceptor;

/* nread > 0: that many bytes at buf, valid only during the call.
 * nread < 0: the one terminal result, delivered once: CW_EOF (the peer
 * sent FIN), CW_ERESET, CW_ETIMEDOUT (the idle timeout passed with no
 * byte received, or the kernel gave up on the peer) or another -errno.
 * Never 0. Writes stay allowed after CW_EOF and CW_ETIMEDOUT (a last
 * reply, then cw_stream_close). */
typedef void cw_stream_read_cb(cw_stream *s, ssize_t nread, const char *buf);

/* The write queue went from at or above the high-water mark to empty. */
typedef void cw_stream_drain_cb(cw_stream *s);

/* The stream has ended; how says how (see the conventions above). The
 * stream is freed when this returns. */
typedef void cw_stream_closed_cb(cw_stream *s, int how);

/* Callbacks, usually one static const table per protocol; any may be
 * NULL. The stream keeps the pointer: the table must outlive it. */
struct cw_stream_handlers {
    cw_stream_read_cb *on_read;
    cw_stream_drain_cb *on_drain;
    cw_stream_closed_cb *on_closed;   /* when the library ends the stream,
                                         or cw_stream_close() got NULL */
};

/* Timeouts and limits; start from cw_stream_opts_init(). Values in ms. */
struct cw_stream_opts {
    uint32_t idle_timeout_ms;   /* no byte received for this long while
                                   reading: CW_ETIMEDOUT; 0 = none (default;
                                   the owner may keep its own read deadline:
                                   cw_stream_set_deadline()) */
    uint32_t write_timeout_ms;  /* queued output that makes no progress for
                                   this long: RST, queue freed, on_closed
                                   with CW_ETIMEDOUT (default and 0: 60000) */
    uint32_t close_grace_ms;    /* after the peer closed or a terminal result
                                   was delivered, an owner that neither
                                   writes nor closes for this long has the
                                   stream closed for it (default 5000;
                                   0 = at once) */
    uint32_t high_water;        /* queued bytes at which cw_stream_write()
                                   says "full" (default and 0: 65536; 1 =
                                   "full" whenever anything is queued) */
    uint32_t linger_timeout_ms; /* graceful close: longest wait between two
                                   reads while draining to the peer's FIN
                                   (nginx lingering_timeout); the close
                                   deadline bounds the whole (nginx
                                   lingering_time); 0 = none (default) */
    uint32_t user_size;         /* bytes of zeroed memory for the owner in
                                   the stream's own allocation, at
                                   cw_stream_user() (0 = none; at most
                                   CW_STREAM_USER_MAX): per-connection state
                                   without a second malloc */
};

#define CW_STREAM_USER_MAX 4096

/* A third way to end a stream, beside conn.h's CW_CLOSE_GRACEFUL and
 * CW_CLOSE_ABORT (cw_stream_close() only). */
#define CW_CLOSE_PLAIN 2

void cw_stream_opts_init(struct cw_stream_opts *o);

/* Wrap a connected TCP socket (made non-blocking here). Ownership of fd
 * passes to the stream in every case (closed on failure). opts NULL =
 * defaults. Reads start with cw_stream_start(). */
int cw_stream_adopt(cw_loop *loop, int fd, const struct cw_stream_opts *opts,
                    cw_stream **out);

/* Set the callbacks and user data and start reading. Returns CW_OK, or
 * CW_ECLOSING once the stream is closing. */
int cw_stream_start(cw_stream *s, const struct cw_stream_handlers *h,
                    void *data);

/* Pause and resume reading. A paused stream still notices the peer's
 * FIN or RST: the terminal result waits for reads to resume (bytes the
 * peer sent before it come first), and the grace period runs. A failed
 * write resumes reading by itself: the owner learns of the end through
 * on_read instead of waiting for an on_drain that cannot come. Resuming
 * after the terminal result was delivered returns that result. */
int cw_stream_read_stop(cw_stream *s);
int cw_stream_read_start(cw_stream *s);

/* Queue len bytes (copied). What the socket takes at once is sent at once;
 * only the rest is buffered, so an idle stream holds no buffer. Returns
 * CW_OK, 1 when the queue is at or above the high-water mark (on_drain
 * comes once it is empty: stop producing until then), or the sticky
 * write error (CW_ERESET, -EPIPE, CW_ETIMEDOUT), or CW_ECLOSING. */
int cw_stream_write(cw_stream *s, const void *buf, size_t len);

/* cw_stream_write(), but the bytes are sent with MSG_MORE: the kernel
 * holds a short write back for what follows in this loop iteration - a
 * cw_stream_close(CW_CLOSE_GRACEFUL) or cw_stream_shutdown() right after
 * it sends the bytes and the FIN in one segment (and the peer acknowledges
 * both at once). Only for a last write: bytes the kernel holds back wait
 * until the next write, shutdown or close, or ~200 ms. */
int cw_stream_write_more(cw_stream *s, const void *buf, size_t len);

/* Half-close (libuv's uv_shutdown): no more writes (cw_stream_write()
 * returns -ESHUTDOWN from now on); the peer gets our FIN once the queued
 * output is out, and reading goes on until its end: after CW_EOF, call
 * cw_stream_close() as usual (still graceful, nothing to flush). For
 * clients whose protocol ends the request with a FIN. Returns CW_OK (also
 * when repeated), CW_ECLOSING, or the sticky write error. */
int cw_stream_shutdown(cw_stream *s);

/* Bytes queued and not yet taken by the kernel. */
size_t cw_stream_queued(const cw_stream *s);

/* End the stream; on_closed (NULL = the handlers' one) is called once,
 * from the loop, never from inside this call.
 * CW_CLOSE_GRACEFUL: unread input is discarded, queued output is flushed
 * (write timeout applies), then shutdown(SHUT_WR), then input is read and
 * discarded until the peer's FIN, the deadline (CW_NEVER = 30 s), or 1
 * MiB, then close. how = CW_OK, CW_ETIMEDOUT, CW_ERESET or CW_ETOOLONG.
 * CW_CLOSE_ABORT: SO_LINGER {1,0} and close now: the peer gets RST, queued
 * output is lost; how = CW_OK, cw_stream_end() CW_END_ABORT. Only on
 * purpose. It may also cut a graceful close in progress short (on_closed
 * NULL keeps the one given then).
 * CW_CLOSE_PLAIN: close() now, nothing waited for: queued output is lost,
 * what the kernel holds is still sent, and input left unread makes the
 * kernel send RST instead of FIN; how = CW_OK, cw_stream_end()
 * CW_END_PLAIN. For servers that must show this (or choose it); see
 * cw_stream_evict() for a plain close that avoids the RST.
 * Returns CW_OK, or CW_EINVAL if the stream is already closing (except
 * for an abort) or how is unknown. */
int cw_stream_close(cw_stream *s, int how, int64_t deadline,
                    cw_stream_closed_cb *on_closed);

/* Close now to give the descriptor back: input already received is read
 * and discarded (so the close sends FIN, not RST, and what was already
 * written arrives), then a plain close; a closing stream is cut short.
 * on_closed gets -EMFILE (CW_ETIMEDOUT for a closing one), and
 * cw_stream_end() says CW_END_EVICTED; its acceptor counts it as
 * reclaimed. A last line written just before is sent. Returns CW_OK, or
 * CW_EINVAL once the stream has ended. */
int cw_stream_evict(cw_stream *s);

/* User data given to cw_stream_start() (or set here). */
void *cw_stream_data(const cw_stream *s);
void cw_stream_set_data(cw_stream *s, void *data);

/* The owner's opts.user_size bytes (zeroed at creation, 16-byte aligned,
 * freed with the stream after on_closed), or NULL if user_size was 0. */
void *cw_stream_user(const cw_stream *s);

/* Set the read deadline (absolute, cw_now_ms() scale; CW_NEVER = none):
 * if it passes while reading, before any terminal result, on_read gets
 * CW_ETIMEDOUT as for the idle timeout, whose running deadline this is:
 * with idle_timeout_ms set, every byte received moves it to now + idle
 * again. With idle_timeout_ms 0 the owner alone decides, e.g. a login
 * deadline that input does not extend. Returns CW_OK or CW_ECLOSING. */
int cw_stream_set_deadline(cw_stream *s, int64_t deadline);

/* cw_stream_set_deadline(s, cw_now_ms() + timeout_ms), for a timeout that
 * is the same for many streams (a login timeout, an idle timeout counted
 * per request): the stream waits on the loop's FIFO queue for that
 * timeout instead of its timer heap, so setting it again is a list move
 * (O(1)), and an idle stream costs no heap node. The loop keeps one queue
 * per distinct timeout (up to 64; past that, the heap as for
 * cw_stream_set_deadline). Returns CW_OK or CW_ECLOSING. */
int cw_stream_set_timeout(cw_stream *s, uint32_t timeout_ms);

/* The descriptor (owned by the stream), or CW_EINVAL once closed. */
int cw_stream_fd(const cw_stream *s);

/* How the stream ended (closewise/end.h), for on_closed, where the how
 * result alone cannot tell an abort from a graceful close, nor say why
 * the library closed it: CW_END_GRACEFUL, CW_END_ABORT, CW_END_TIMEOUT
 * (close deadline, or the write timeout's RST), CW_END_RESET,
 * CW_END_TOO_LONG, CW_END_EVICTED (acceptor reclaim), CW_END_ABANDONED
 * (closed by the library after the grace period) or CW_END_ERROR.
 * CW_END_NONE until the descriptor is closed. */
enum cw_end cw_stream_end(const cw_stream *s);

/* Nonzero if cw_stream_close() was called or the library is closing it. */
int cw_stream_closing(const cw_stream *s);

/* Connect to host:port without blocking the loop, trying every address
 * (IPv6 and IPv4), each attempt with a fair share of the deadline.
 * Numeric addresses are used directly; a name is resolved by getaddrinfo
 * in a short-lived thread, so a slow DNS server cannot stall the loop
 * (the thread is abandoned, not waited for, if the deadline passes).
 * cb gets the new stream (owned by the caller: start it or close it) and
 * CW_OK, or NULL and CW_ERESOLVE, CW_ETIMEDOUT or the last attempt's
 * -errno (-ECONNREFUSED, ...). cb always runs from the loop, never from
 * inside this call. Only cw_opts' pre-connect options apply (bind address
 * and port, buffers, keepalive, nodelay, user timeout). Returns CW_OK if
 * the dial was started. */
typedef void cw_stream_dial_cb(cw_stream *s, int status, void *data);
int cw_stream_dial(cw_loop *loop, const char *host, uint16_t port,
                   const struct cw_opts *opts, int64_t deadline,
                   const struct cw_stream_opts *sopts,
                   cw_stream_dial_cb *cb, void *data);

/* Accept connections on a listener: accept4 in batches with SOCK_CLOEXEC
 * and SOCK_NONBLOCK; every new stream (options sopts) goes to cb, which
 * owns it. When descriptors run out (EMFILE, ENFILE), the acceptor first
 * closes the streams that cost least to lose - lingering closes, then
 * streams of its own idle for a second or more with nothing queued (their
 * on_closed gets -EMFILE) - and if none is left, stops accepting for a
 * short back-off instead of spinning: the connections wait in the
 * kernel's backlog. The listener stays the caller's; free the acceptor
 * before closing it. */
typedef void cw_acceptor_cb(cw_acceptor *a, cw_stream *s, void *data);
int cw_acceptor_new(cw_loop *loop, cw_listener *l,
                    const struct cw_stream_opts *sopts, cw_acceptor_cb *cb,
                    void *data, cw_acceptor **out);

/* The peer address of the stream being handed to the accept callback
 * (from accept4 itself: no getpeername), *len set if len is not NULL;
 * NULL outside the callback. Points into the acceptor. */
const struct sockaddr *cw_acceptor_peer(const cw_acceptor *a, socklen_t *len);

/* The owner's say in who goes first under descriptor pressure (a server
 * that values a logged-in session above one that has not logged in, say).
 * After the lingering closes, and before the acceptor's own choice of
 * idle streams, it asks pick (with the acceptor's data) again and again:
 * return 1 with *victim one of this acceptor's open streams, not closing,
 * and it is closed like the acceptor's own choice (pending input read,
 * then a plain close: what was already sent arrives; on_closed gets
 * -EMFILE, cw_stream_end() says CW_END_EVICTED; counted as reclaimed):
 * a last line written just before returning it is sent. Return 0 for no
 * preference (the idle streams go, as without pick), or a negative value
 * to protect every other stream for now: accepting backs off instead.
 * Do not close streams from inside pick. NULL (the default) removes it. */
typedef int cw_acceptor_pick_cb(cw_acceptor *a, void *data, cw_stream **victim);
int cw_acceptor_set_reclaim(cw_acceptor *a, cw_acceptor_pick_cb *pick);

/* From pick, before it returns a negative value because its candidates
 * are not ready yet (too fresh, say): retry accepting at when (absolute,
 * cw_now_ms() scale) if that is sooner than the 100 ms back-off. */
int cw_acceptor_retry_at(cw_acceptor *a, int64_t when);

/* The owner's say in whether to accept at all (a connection cap, say):
 * admit is asked (with the acceptor's data) before every accept4; 0 means
 * "not now": the acceptor pauses as with cw_acceptor_pause() and the
 * connections wait in the kernel's backlog until cw_acceptor_resume().
 * admit may make room first (close or evict streams). NULL removes it. */
typedef int cw_acceptor_admit_cb(cw_acceptor *a, void *data);
int cw_acceptor_set_admit(cw_acceptor *a, cw_acceptor_admit_cb *admit);

/* Told (with the acceptor's data and the -errno, -EMFILE mostly) when
 * accepting stops for a back-off because descriptors ran out and nothing
 * could be reclaimed: for a log line. NULL removes it. */
typedef void cw_acceptor_pause_cb(cw_acceptor *a, void *data, int err);
int cw_acceptor_set_on_pause(cw_acceptor *a, cw_acceptor_pause_cb *cb);

/* Stop accepting until cw_acceptor_resume(), whatever else happens (a
 * descriptor back-off ends, streams end). Both are idempotent and may be
 * called from any callback, the acceptor's own included. */
int cw_acceptor_pause(cw_acceptor *a);
int cw_acceptor_resume(cw_acceptor *a);

/* Free up to max descriptors now, in the order used under descriptor
 * pressure (lingering closes, the owner's pick, streams idle for 1 s
 * or more): for an owner at a cap that wants room before an accept.
 * Returns how many streams were closed, or CW_EINVAL. */
int cw_acceptor_reclaim(cw_acceptor *a, int max);

/* The least recently active of the acceptor's open streams (the oldest
 * last byte received, or start of reading) if it has had nothing for
 * min_idle_ms and has nothing queued, else NULL: a pick for
 * cw_acceptor_set_reclaim()'s callback. */
cw_stream *cw_acceptor_idlest(cw_acceptor *a, uint32_t min_idle_ms);

/* Call fn(s, arg) for each of the acceptor's streams not yet ended,
 * closing ones first; fn may close the stream it gets (and no other).
 * Stops at and returns fn's first nonzero result; CW_OK after all. */
typedef int cw_acceptor_walk_cb(cw_stream *s, void *arg);
int cw_acceptor_walk(cw_acceptor *a, cw_acceptor_walk_cb *fn, void *arg);

struct cw_acceptor_stats {
    uint64_t accepted;
    uint64_t open;            /* its streams not yet ended */
    uint64_t paused;          /* times accepting stopped for lack of fds */
    uint64_t reclaimed;       /* streams closed to get a descriptor back */
    uint64_t write_timeouts;  /* streams reset by the write timeout */
    uint64_t grace_closed;    /* closed by the library after the grace */
    uint64_t closing;         /* its streams closing now (flushing or
                                 lingering) */
};
int cw_acceptor_stats(const cw_acceptor *a, struct cw_acceptor_stats *st);

/* Stop accepting and free the acceptor, set *ap to NULL. Its streams
 * live on (they are no longer reclaimed, counted or walked; the memory
 * they share with the acceptor goes with the last of them). Not from
 * inside the acceptor's own callbacks. */
int cw_acceptor_free(cw_acceptor **ap);

#ifdef __cplusplus
}
#endif
#endif
