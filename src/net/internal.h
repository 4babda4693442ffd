/* internal.h - shared by the library's source files, never installed. */
#ifndef CW_INTERNAL_H
#define CW_INTERNAL_H

#include <closewise/closewise.h>
#include <stdbool.h>
#include <sys/socket.h>

/* How many bytes a graceful close discards before it gives up on a peer
 * that keeps sending. */
#define CW_DRAIN_MAX (1024 * 1024)

struct cw_conn {
    int fd;
    int rd_sticky;        /* terminal read result, 0 while reads work */
    int wr_sticky;        /* terminal write result, 0 while writes work */
    int read_timeout_ms;  /* 0 = none */
    char *rbuf;           /* bytes read ahead by cw_readline, lazily allocated */
    size_t rbuf_cap, rbuf_off, rbuf_len;
};

struct cw_listener {
    int fd;
    int port;
    int read_timeout_ms;  /* handed to every accepted conn */
};

/* Milliseconds poll() should wait for an absolute deadline: -1 forever,
 * 0 when it has passed. */
int cw__poll_timeout(int64_t deadline);
/* The same, counted from now (a loop's pass time). */
int cw__timeout_at(int64_t deadline, int64_t now);

/* The earlier of two deadlines, treating CW_NEVER as infinity. */
int64_t cw__min_deadline(int64_t a, int64_t b);

/* poll() one fd for events until the deadline, restarting on EINTR.
 * Returns the revents (> 0), CW_ETIMEDOUT, or -errno. */
int cw__wait(int fd, short events, int64_t deadline);

/* One non-blocking recv: > 0 bytes, CW_EOF, CW_ERESET, -EAGAIN or -errno.
 * Shared by blocking conns and the event loop. */
ssize_t cw__recv_nb(int fd, void *buf, size_t len);

/* One non-blocking send with MSG_NOSIGNAL: bytes sent, -EAGAIN or -errno
 * (ECONNRESET is reported as CW_ERESET). */
ssize_t cw__send_nb(int fd, const void *buf, size_t len);

/* Read and throw away what is readable now: CW_EOF when the peer's FIN was
 * reached, -EAGAIN when nothing more is readable yet, CW_ERESET, -errno.
 * *total is increased by the bytes discarded. */
int cw__drain_nb(int fd, size_t *total);

/* Socket options. cw__apply_opts sets what a socket can take before
 * connect/listen; is_listener selects the SO_REUSEADDR default. */
int cw__apply_opts(int fd, const struct cw_opts *o, bool is_listener);
int cw__set_nonblock(int fd);
int cw__set_linger0(int fd);

/* Format a sockaddr as "1.2.3.4:80" or "[::1]:80" (addr.c). */
int cw__format_addr(const struct sockaddr *sa, socklen_t len, char *buf,
                    size_t size);
/* The same from the address bytes: addr.h. */
#include "addr.h"

/* getaddrinfo for TCP (family AF_UNSPEC for any; extra ai flags):
 * CW_OK, CW_ERESOLVE, -ENOMEM or -errno. */
struct addrinfo;
int cw__resolve(const char *host, uint16_t port, int family, int flags,
                struct addrinfo **res);

/* Bind to opts' local address and port before connect, if it has any. */
int cw__bind_local(int fd, int family, const struct cw_opts *o);

/* One connect attempt's deadline: an equal share of what is left for the
 * `left` addresses still to try, the last one all of it. */
int64_t cw__attempt_deadline(int64_t deadline, int left);

/* Allocate a conn around a connected non-blocking fd (takes ownership). */
int cw__conn_new(int fd, const struct cw_opts *o, cw_conn **out);

/* Timer queues (tqueue.c, loop.c). The loop keeps the non-empty ones on
 * a list: a queue goes on when its first entry arrives, off with its
 * last. */
void cw__loop_queue_on(cw_tqueue *q);
void cw__loop_queue_off(cw_tqueue *q);
/* The head's deadline (a non-empty queue); inline for the loop's wait. */
static inline int64_t cw__tqueue_head(const cw_tqueue *q)
{
    return q->head.next->deadline;
}
/* Unlink and fire the head if it is due at now: 1, else 0. */
int cw__tqueue_expire_one(cw_tqueue *q, int64_t now);
/* Queue e at the tail due at deadline if that keeps the queue in order
 * (O(1)): 1; else 0 and e is left where it was. */
int cw__tqueue_put(cw_tqueue *q, cw_tqentry *e, int64_t deadline);
/* The loop's own queue for (timeout_ms, cb), made on first use and freed
 * with the loop: its index (>= 1) for cw__loop_tq, or 0 when the loop
 * keeps too many already or is out of memory (use the heap then). */
int cw__loop_tqueue(cw_loop *l, int64_t timeout_ms, cw_tqueue_cb *cb);

/* Code placement on the churn path, where the 64-byte code lines a
 * connection executes cost more than its instructions (the kernel's work
 * between two events evicts the instruction cache): CW__ONE_COPY keeps a
 * function called from several hot places out of line, so that they all
 * run the same lines instead of an inlined copy each; CW__COLD moves a
 * rare path out of the hot function it would spread. */
#define CW__ONE_COPY __attribute__((noinline))
#define CW__COLD __attribute__((cold, noinline))

/* What every stream step reads of its loop, at the start of struct
 * cw_loop (loop.c) so that the two look-ups below are inline: each was a
 * call, and a code line of its own, 11 times per churn connection. */
#define CW__LOOP_QUEUES 64   /* distinct fixed timeouts a loop keeps */
struct cw__loop_hot {
    int in_pass;                          /* dispatching or running timers */
    int nown;
    int64_t now;                          /* the pass's time */
    uint64_t iterations;                  /* cw_loop_iterations */
    cw_tqueue *own[CW__LOOP_QUEUES];      /* cw__loop_tqueue's, by index - 1 */
};

/* cw_loop_iterations, inline (the server reads it per accept). */
static inline uint64_t cw__loop_iterations(const cw_loop *l)
{
    return ((const struct cw__loop_hot *)(const void *)l)->iterations;
}

/* The queue of a cw__loop_tqueue index, NULL for 0 (the heap). */
static inline cw_tqueue *cw__loop_tq(const cw_loop *l, int index)
{
    const struct cw__loop_hot *h = (const struct cw__loop_hot *)(const void *)l;
    return index > 0 && index <= h->nown ? h->own[index - 1] : NULL;
}

/* The loop's time (cw_now_ms() scale), read once per pass: after
 * epoll_wait returns, and again before the timers run. Inside a pass
 * (any callback of the loop) deadlines are computed from it, so one
 * computed late in a pass is early by at most the pass's work so far.
 * Outside a pass (before the first run, between runs, no loop running)
 * it is the real clock. */
static inline int64_t cw__loop_now(const cw_loop *l)
{
    const struct cw__loop_hot *h = (const struct cw__loop_hot *)(const void *)l;
    return h->in_pass ? h->now : cw_now_ms();
}

/* cw_io_stop for an owner that keeps io's memory until the loop's current
 * pass is over (a stream: freed from the timer pass): events of the
 * current batch for it are skipped at dispatch, instead of searched for
 * and erased here (a search of up to MAX_EVENTS per close, so O(n^2) for
 * a batch of closes). io must not be started again in this pass. */
void cw__io_stop_kept(cw_loop *l, cw_io *io);

/* Read the clock again for the rest of the pass: after work that may
 * have taken long on the loop (a password check run on it). */
void cw__loop_update_time(cw_loop *l);

/* The CPUs this process may run on (its affinity mask: taskset, a
 * container's cpuset), at least 1. */
int cw__usable_cpus(void);

#endif
