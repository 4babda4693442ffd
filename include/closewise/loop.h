/*
 * closewise/loop.h - a small epoll event loop: readiness watchers that
 * always see a peer's FIN or RST, a timer heap for arbitrary deadlines
 * and FIFO timer queues for fixed timeouts (no heap operation), and a
 * clean stop on SIGINT/SIGTERM. Never busy-loops: it sleeps in
 * epoll_wait until a watched descriptor is ready or the earliest timer is
 * due.
 *
 * Do not include this file directly: include <closewise/closewise.h>.
 *
 * Conventions (see also conn.h):
 *  - cw_loop is an opaque handle owned by its creator, released once with
 *    cw_loop_free().
 *  - cw_io and cw_timer are watchers the caller embeds in its own objects,
 *    so that a connection costs no extra allocation. The caller owns their
 *    memory; set the public fields, treat the rest as private. A watcher
 *    must be stopped before its memory is freed. Stopping a watcher from
 *    any callback is safe, even if it had another event pending in the same
 *    iteration: that event is then dropped.
 *  - Every function returns CW_OK or a negative result code.
 *  - One loop belongs to one thread; only cw_loop_stop() may be called from
 *    another thread or a signal handler.
 */
#ifndef CLOSEWISE_LOOP_H
#define CLOSEWISE_LOOP_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cw_loop cw_loop;
typedef struct cw_io cw_io;
typedef struct cw_timer cw_timer;

/* Interest a cw_io can ask for. Peer close is always watched and needs no
 * flag: it is reported whether or not CW_IO_READ is set. */
enum { CW_IO_READ = 1, CW_IO_WRITE = 2 };

/* Events passed to a cw_io callback (any combination). */
enum {
    CW_EV_READ = 1,   /* readable (data, EOF or error to read) */
    CW_EV_WRITE = 2,  /* writable */
    CW_EV_HUP = 4,    /* the peer sent FIN or both directions are shut:
                         reported once per watcher (it is sticky, and a
                         level-triggered report would spin) */
    CW_EV_ERROR = 8   /* socket error; cw_io.err holds -SO_ERROR */
};

typedef void cw_io_cb(cw_loop *loop, cw_io *io, unsigned events);
typedef void cw_timer_cb(cw_loop *loop, cw_timer *t);
typedef void cw_signal_cb(cw_loop *loop, int signo, void *data);

struct cw_io {            /* the ints first: no padding (32 bytes) */
    int fd;              /* public: the descriptor, still owned by the caller */
    int err;             /* public: -errno from SO_ERROR after CW_EV_ERROR */
    unsigned interest;   /* private */
    unsigned flags;      /* private */
    void *data;          /* public: for the callback */
    cw_io_cb *cb;        /* public: set by cw_io_start */
};

struct cw_timer {
    int64_t deadline;    /* public, read-only: absolute cw_now_ms() time */
    void *data;          /* public: for the callback */
    cw_timer_cb *cb;     /* private */
    uint32_t slot;       /* private: heap position + 1, 0 when stopped */
};

/* Create a loop. *out is owned by the caller. Returns CW_OK or -errno. */
int cw_loop_new(cw_loop **out);

/* Free the loop and set *lp to NULL. Watchers still started are simply
 * forgotten (their descriptors are not closed: the caller owns them). The
 * signal mask changed by cw_loop_signals() is restored. */
int cw_loop_free(cw_loop **lp);

/* Run until cw_loop_stop() is called. Returns CW_OK, or -errno if
 * epoll_wait fails for a reason other than EINTR. */
int cw_loop_run(cw_loop *loop);

/* Make cw_loop_run() return after the current iteration. Safe from another
 * thread and from a signal handler (it writes to an eventfd). */
int cw_loop_stop(cw_loop *loop);

/* Deliver SIGINT and SIGTERM to cb through a signalfd instead of killing
 * the process: the signals are blocked in the calling thread until
 * cw_loop_free(). cb NULL means "just stop the loop". */
int cw_loop_signals(cw_loop *loop, cw_signal_cb *cb, void *data);

/* Start watching io->fd (set io->fd and io->data first) with interest
 * CW_IO_READ and/or CW_IO_WRITE, or 0 to watch only for the peer's close.
 * Starting a started watcher is CW_EINVAL. */
int cw_io_start(cw_loop *loop, cw_io *io, unsigned interest, cw_io_cb *cb);

/* Change the interest of a started watcher. Pausing reads (interest
 * without CW_IO_READ) keeps the peer's FIN/RST visible. */
int cw_io_set(cw_loop *loop, cw_io *io, unsigned interest);

/* Stop watching. Safe to call on a stopped watcher. Call it before closing
 * the descriptor. */
int cw_io_stop(cw_loop *loop, cw_io *io);

/* Nonzero if the watcher is started. */
int cw_io_active(const cw_io *io);

/* Start (or move) a one-shot timer due at the absolute time deadline
 * (cw_now_ms() scale). A deadline in the past fires in the next
 * iteration. Returns CW_OK, -ENOMEM, or CW_EINVAL for a negative deadline
 * (CW_NEVER): a timer that never fires is a stopped one. Note that
 * cw_now_ms() counts from boot, so "now minus a minute" is negative on a
 * machine up for less than a minute: clamp such arithmetic at 0. */
int cw_timer_start(cw_loop *loop, cw_timer *t, int64_t deadline,
                   cw_timer_cb *cb);

/* Stop a timer. Safe to call on a stopped timer. */
int cw_timer_stop(cw_loop *loop, cw_timer *t);

/* Nonzero if the timer is started. */
int cw_timer_active(const cw_timer *t);

/* ---- timer queues: fixed timeouts at O(1) per event ----
 *
 * A timeout that is the same for every object (a server's idle, write or
 * lingering timeout) is due in the order the objects were last touched.
 * A cw_tqueue keeps its entries in that order (Apache's event MPM does
 * the same): queuing or re-queuing an entry is a list move at the tail,
 * and no heap operation ever: the loop looks at the head of each
 * non-empty queue for its next wake-up and expires entries from there.
 * Arbitrary deadlines stay with cw_timer.
 * An entry is in at most one queue; entries and queues are embedded in
 * the caller's objects, as watchers are. */
typedef struct cw_tqueue cw_tqueue;
typedef struct cw_tqentry cw_tqentry;

/* The entry is due; it is already off its queue (re-queue it, or not). */
typedef void cw_tqueue_cb(cw_loop *loop, cw_tqentry *e);

struct cw_tqentry {
    int64_t deadline;            /* public, read-only */
    cw_tqentry *prev, *next;     /* private: NULL while not queued */
};

struct cw_tqueue {                /* private */
    cw_loop *loop;
    cw_tqueue_cb *cb;
    int64_t timeout_ms;
    cw_tqueue *lprev, *lnext;     /* on the loop's list while not empty */
    cw_tqentry head;              /* sentinel of a circular list */
};

/* Set up an empty queue whose entries are due timeout_ms (>= 0) after
 * they are queued; cb gets each due entry. Returns CW_OK or CW_EINVAL. */
int cw_tqueue_init(cw_loop *loop, cw_tqueue *q, int64_t timeout_ms,
                   cw_tqueue_cb *cb);

/* Queue e at the tail, due at cw_now_ms() + the queue's timeout; an
 * entry already queued (here or in another queue) moves. O(1). */
int cw_tqueue_add(cw_tqueue *q, cw_tqentry *e);

/* Queue e due at an earlier deadline than cw_tqueue_add would give (a
 * cap that ends a lingering close sooner, say): found by a walk from the
 * tail, so O(1) only when it is the latest. CW_EINVAL for a negative
 * deadline. */
int cw_tqueue_add_at(cw_tqueue *q, cw_tqentry *e, int64_t deadline);

/* Take e off its queue. Safe on an entry that is not queued. */
void cw_tqueue_remove(cw_tqentry *e);

/* Nonzero if e is queued. */
int cw_tqueue_active(const cw_tqentry *e);

/* Unlink every entry (none fires); the loop forgets the queue. A queue
 * with no entries is not known to the loop: its memory may go without
 * this call. */
void cw_tqueue_close(cw_tqueue *q);

/* Number of epoll_wait calls so far: lets tests prove the loop sleeps. */
uint64_t cw_loop_iterations(const cw_loop *loop);

#ifdef __cplusplus
}
#endif
#endif
