/* authpool.h - password checks off the event loop: worker threads run
 * crypt(3) (auth.c) from a bounded queue and post each answer back to the
 * loop that asked, through an eventfd watched by that loop. Internal:
 * never installed.
 *
 * One pool serves any number of loops; each loop reaches it through its
 * own port. A job's callback runs on the port's loop, never inside the
 * call that submitted it, exactly once unless the job is cancelled first.
 * The equal-time padding of auth.c does not hold a worker: a finished
 * check that may not answer yet waits on a loop timer. */
#ifndef CW_AUTHPOOL_H
#define CW_AUTHPOOL_H

#include <closewise/closewise.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"

typedef struct cw__authpool cw__authpool;
typedef struct cw__authport cw__authport;
typedef struct cw__authjob cw__authjob;

/* ok: 1 good credentials, 0 bad (data says whose). The job handle is
 * invalid from the start of this call (do not cancel it). It may cancel
 * or submit other jobs, but must not free its own port (the port's loop
 * goes on with that port's other answers after it returns). */
typedef void cw__authjob_cb(void *data, int ok);

/* workers check threads (0 = one per online CPU) and as many rescuers
 * (authpool.c says when they run), started with the first submitted
 * check, at most queue_max checks waiting for a worker (0 = 256 per
 * worker: a yescrypt backlog clears within the default login timeout).
 * idle: the check threads run SCHED_IDLE, else at nice 19 (authpool.c
 * weighs the two). auth must outlive the pool. The threads block every
 * signal: SIGTERM stays the loop's business. */
int cw__authpool_new(cw__auth *auth, int workers, int queue_max, int idle,
                     cw__authpool **out);

/* Stop the workers and join them, for about 1 s at most: a thread still
 * hashing then (starved by other programs, and not lifted back to nice
 * 0 for want of CAP_SYS_NICE) is let go, and frees the pool's memory
 * and the freed ports' eventfds when its hash ends (authpool.c says
 * how). Free every port first; auth may be freed right after. */
void cw__authpool_free(cw__authpool *p);

int cw__authpool_workers(const cw__authpool *p);

struct cw__authpool_stats {
    uint64_t submitted;   /* jobs accepted into the queue */
    uint64_t busy;        /* submissions refused: queue full */
    uint64_t cancelled;   /* jobs cancelled before their answer */
    uint64_t answered;    /* callbacks run */
    uint64_t rescued;     /* hashed by a rescuer: the check threads were
                             starved (authpool.c) */
    int queued;           /* waiting for a worker now */
    int running;          /* being hashed now, for an answer */
    int deferred;         /* hashed, answer held by the padding */
    int idle_threads;     /* check threads running SCHED_IDLE (the rest
                             run at nice 19) */
};
/* Safe from any thread. */
void cw__authpool_stats(cw__authpool *p, struct cw__authpool_stats *st);

/* A loop's way into the pool: an eventfd watcher on loop (call from the
 * loop's thread). */
int cw__authport_new(cw__authpool *p, cw_loop *loop, cw__authport **out);

/* Cancel every job of this port that has not answered and stop the
 * watcher. From the loop's thread; waits for no thread: a hash cannot be
 * stopped, so the port's eventfd and memory stay with the pool until the
 * threads hashing its jobs have posted them (freed then, or with the
 * pool). */
void cw__authport_free(cw__authport *pt);

/* Queue a check of user/pass (the user is looked up now; the password
 * is copied, and the copy wiped once hashed). Returns CW_OK with *job
 * set (valid until the callback starts or cw__authjob_cancel), -EBUSY
 * when queue_max checks already wait (answer the client at once: nothing
 * was queued), or -ENOMEM. */
int cw__authport_submit(cw__authport *pt, const char *user, size_t ulen,
                        const char *pass, size_t plen, cw__authjob_cb *cb,
                        void *data, cw__authjob **job);

/* Forget a job whose callback has not started: it never runs, and the
 * memory is released (now, or by the worker hashing it). From the port's
 * loop thread; a connection that closes mid-check calls this. */
void cw__authjob_cancel(cw__authjob *j);

/* Tests only: when set, a thread calls it in its post of a job, with
 * stage 0 once hashed (job not on the port's stack yet) and stage 1 once
 * on the stack (eventfd not written yet), to play a thread starved there.
 * Set it before the pool's threads start. */
extern void (*cw__authpool_post_hook)(int slot, int stage);

#endif
