/* authpool.c - worker threads for crypt(3), answers posted back to the
 * asking loop through an eventfd.
 *
 * The check threads run crypt_rn and take no lock a loop takes. Before,
 * a check thread took the pool's mutex and auth.c's when its hash ended;
 * preempted there (SCHED_IDLE, starved by busy nice-0 programs on every
 * core) it made a loop wait 16-126 ms for it (docs/BENCHMARKS.md, "The
 * check threads' policy"). Now everything but the hash happens on the
 * loops: auth.c's look-up of the user's hash when the check is submitted
 * (cw__auth_lookup), its padding when the answer arrives (cw__auth_pad),
 * the queue and the choice of thread under pool->mu, which only loops
 * take. A loop hands a job to an idle thread through the thread's
 * mailbox (an atomic pointer and a futex); the thread hashes, marks
 * itself idle, pushes the job on its port's lock-free stack (one CAS; the
 * loop takes the whole stack with one exchange) and writes the port's
 * eventfd. The loop that takes the answer then hands out the next queued
 * job. The only thing a thread can still delay is the answer of the job
 * it holds.
 *
 * Bookkeeping of a job (its state, its runners, whether its session let
 * go of it) is under pool->mu or, once its answer is taken (DONE,
 * DEFERRED), its port's loop's alone. A job's session lets go when its
 * callback starts or it cancels; a job still held by a thread then stays
 * until the thread's post arrives (the loop frees it on receipt).
 *
 * Threads start with the first check that goes to them, not with the
 * server: a server whose checks all run on the loop (DES, MD5: auth.c
 * calibrates those in place) never creates one.
 *
 * Two kinds of threads hash. Check threads run SCHED_IDLE by default
 * (--auth-priority nice: nice 19). SCHED_IDLE helps: the
 * kernel's wake-up placement counts a core running only SCHED_IDLE tasks
 * as idle (select_idle_sibling, sched_idle_cpu), so woken loops go to the
 * core a check is hashing on instead of queueing behind one another on
 * the other core; at nice 19 that core counts as busy (sha512 logins at
 * K=8: echo p99 0.68-0.75 ms at nice 19 against 0.09-0.10 at SCHED_IDLE,
 * docs/BENCHMARKS.md, "Server under auth load"). But
 * SCHED_IDLE has weight 3 against a nice-0 task's 1024, and an
 * unprivileged thread cannot leave it again: on a machine kept busy by
 * other programs a yescrypt check took 11 s. So as many rescuers sleep
 * at nice 19 (weight 15). Each loop watches its checks on a timer while
 * it has any in flight: a check whose thread got less than
 * 1/RESCUE_SHARE of a core for RESCUE_MS is handed to a rescuer as well
 * (the first answer counts), and for BUSY_MS the rescuers take every
 * check. The first check calibrates auth.c's costs: a few hashes on a
 * rescuer, results published by the loop. SCHED_IDLE was opt-in while
 * the check threads took the loops' locks: one starved inside them made
 * a loop wait 16-126 ms; a starved thread now holds nothing a loop
 * needs (test_authpool: test_threads_take_no_auth_lock,
 * test_starved_checks_never_block_loop). Nor does the pool's free wait
 * for one without a bound: it lifts the threads back to the server's
 * nice where it may and lets go of those still hashing after JOIN_MS
 * (cw__authpool_free). */
#define _GNU_SOURCE
#include "../net/internal.h"
#include "authpool.h"

#include <crypt.h>
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* helgrind knows mutexes, not C11 atomics: the hand-offs below tell it
 * what they order; the atomic words themselves are left unchecked. */
#if defined(__has_include)
#if __has_include(<valgrind/helgrind.h>)
#include <valgrind/helgrind.h>
#define HB(x) ANNOTATE_HAPPENS_BEFORE(x)
#define HA(x) ANNOTATE_HAPPENS_AFTER(x)
#define HG_ATOMIC(x) VALGRIND_HG_DISABLE_CHECKING(&(x), sizeof(x))
#endif
#endif
#ifndef HB
#define HB(x) ((void)(x))
#define HA(x) ((void)(x))
#define HG_ATOMIC(x) ((void)0)
#endif

#define CW_AUTH_NICE 19
#define RESCUE_MS 100        /* how long a check may stall */
#define RESCUE_SHARE 32      /* stalled: its thread ran < 1/32 of that */
#define BUSY_MS 10000        /* then the rescuers do every check this long */
#define RESCUE_NS (RESCUE_MS * 1000000LL)
#define START_RETRY_NS 1000000000LL   /* a failed thread start, again */
#define JOIN_MS 1000         /* the pool's free waits this long for its threads */

enum { J_QUEUED, J_RUNNING, J_DONE, J_DEFERRED };
enum { K_CHECK, K_CALIB };

struct jlist {
    cw__authjob *head, *tail;
};

struct worker {
    _Atomic(cw__authjob *) mbox;   /* a loop puts a job, the thread takes it */
    _Atomic uint32_t seq;          /* futex word: bumped per job and at stop */
    _Atomic int busy;              /* 1 from a hand-off until hashed */
    _Atomic int tid;               /* once its policy is set (lift) */
    cw__authpool *pool;
    pthread_t thread;
    clockid_t clock;               /* its CPU clock */
    int slot;                      /* 0: check thread, 1: rescuer */
    int live;                      /* created: joined by free */
};

/* A job on its port's stack: one per slot, so a check thread and a
 * rescuer can both post the same job. */
struct post {
    struct post *next;
    cw__authjob *job;
    int slot;
};

struct result {
    struct cw__authtime tm;
    int ok;
};

struct cw__authjob {
    cw__authjob *prev, *next;   /* queue or active (pool->mu); batch or
                                   deferred (the port's loop) */
    cw__authport *port;
    cw__authjob_cb *cb;
    void *data;
    struct worker *w[2];        /* who hashes it, per slot */
    struct post posts[2];
    struct result res[2];       /* written by the slot's thread */
    _Atomic int hashed;         /* a thread has finished hashing it */
    struct cw__authset set;     /* the loop's: its strings are auth.c's */
    struct cw__authset tset;    /* the thread's: the same on copies, set
                                   before the hand-off, then read-only */
    struct cw__authcal *cal;    /* K_CALIB (its settings: copies) */
    const char **cal_orig;      /* K_CALIB: auth.c's settings, to publish */
    cw_timer pad;               /* DEFERRED: answers at the due time */
    int64_t due_ns, watch_at, watch_cpu;
    int answer;                 /* the slot whose result answers */
    uint8_t kind, state, runners, released, rescued;
    uint16_t plen;
    char setting[CRYPT_OUTPUT_SIZE];   /* tset's copy */
    char buf[];                 /* the password and a NUL */
};

struct cw__authpool {
    pthread_mutex_t mu;         /* loops only: never held by a thread that hashes */
    struct jlist queue;
    struct jlist active;        /* RUNNING, session still waiting */
    int queued, queue_max;
    int nthreads;               /* check threads, then as many rescuers */
    int started;                /* threads created in pairs */
    int64_t start_retry_at;     /* a failed start is tried again then */
    int want_idle;
    _Atomic int idle_checks;    /* check threads that got SCHED_IDLE */
    _Atomic int lift;           /* freeing: no thread lowers itself now */
    int base_nice;              /* the creating thread's: lift() */
    _Atomic int stop;
    _Atomic int holders;        /* the owner + each thread not yet ended:
                                   the last one frees the pool */
    int64_t busy_until;         /* the rescuers do every check until then */
    cw__authjob *calib;         /* the calibration job in flight */
    cw__authport *dead;         /* freed ports a thread may still post to */
    struct worker *w;           /* nthreads check threads, then rescuers */
    cw__auth *auth;
    struct cw__authpool_stats st;
};

struct cw__authport {
    cw__authpool *pool;
    cw_loop *loop;
    cw_io io;                   /* eventfd: the threads post, we read */
    _Atomic(struct post *) done;   /* posted jobs: a lock-free stack */
    _Atomic int refs;           /* 1 while live + 1 per job a thread holds */
    cw__authport *next_dead;
    struct jlist batch;         /* DONE, loop thread only */
    struct jlist deferred;      /* DEFERRED, loop thread only */
    cw_timer watch;             /* while its checks are in flight */
    int inflight;               /* its jobs QUEUED or RUNNING */
};

/* ---- lists ---- */

static void jpush(struct jlist *l, cw__authjob *j)
{
    j->next = NULL;
    j->prev = l->tail;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
}

static void jpush_front(struct jlist *l, cw__authjob *j)
{
    j->prev = NULL;
    j->next = l->head;
    if (l->head)
        l->head->prev = j;
    else
        l->tail = j;
    l->head = j;
}

static void junlink(struct jlist *l, cw__authjob *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        l->head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        l->tail = j->prev;
    j->prev = j->next = NULL;
}

static void job_free(cw__authjob *j)
{
    explicit_bzero(j->buf, j->plen);
    free(j->cal);
    free(j->cal_orig);
    free(j);
}

static int64_t clock_ns(clockid_t c)
{
    struct timespec ts;
    if (clock_gettime(c, &ts) < 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the threads: hash, post, nothing else ---- */

static void futex_wait(_Atomic uint32_t *word, uint32_t seen)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* The thread marks itself idle before it posts, so the loop woken by the
 * post can hand it the next job at once; it must not touch j once j is
 * on the stack (the loop may free it), nor pt once its reference is
 * dropped. The eventfd is written for every post: a thread preempted
 * between its push and its write must not hold back another thread's
 * answer behind its own. */
void (*cw__authpool_post_hook)(int slot, int stage);

static void post(struct worker *w, cw__authjob *j)
{
    cw__authport *pt = j->port;
    struct post *n = &j->posts[w->slot];
    n->job = j;
    n->slot = w->slot;
    atomic_store_explicit(&j->hashed, 1, memory_order_relaxed);
    atomic_store_explicit(&w->busy, 0, memory_order_release);
    if (cw__authpool_post_hook)
        cw__authpool_post_hook(w->slot, 0);
    struct post *head = atomic_load_explicit(&pt->done, memory_order_relaxed);
    do {
        n->next = head;
        HB(n);
    } while (!atomic_compare_exchange_weak_explicit(&pt->done, &head, n,
                                                    memory_order_release,
                                                    memory_order_relaxed));
    if (cw__authpool_post_hook)
        cw__authpool_post_hook(w->slot, 1);
    uint64_t one = 1;
    while (write(pt->io.fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
    HB(pt);
    atomic_fetch_sub_explicit(&pt->refs, 1, memory_order_release);
}

static void run(struct worker *w, cw__authjob *j, struct crypt_data *cd)
{
    struct result *r = &j->res[w->slot];
    if (j->kind == K_CALIB) {
        if (cd)
            cw__auth_calib_run(j->cal, cd);
    } else if (cd) {   /* without its 32 KiB the thread answers "bad" */
        int64_t c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
        r->ok = cw__auth_hash(cd, &j->tset, j->buf, &r->tm);
        r->tm.cpu = clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0;   /* cw__auth_pad */
    } else {
        r->tm.t0 = r->tm.t1 = cw__auth_now_ns();
    }
    post(w, j);
}

static void pool_release(cw__authpool *p);

/* Back to SCHED_OTHER at the nice the pool was made with (a server
 * started under `nice -n 10` stays there), or the lowest nice
 * RLIMIT_NICE allows; 0 if refused (no CAP_SYS_NICE and RLIMIT_NICE 0:
 * the default for a user). tid 0: the calling thread. */
static int lift(cw__authpool *p, pid_t tid)
{
    /* sched_setattr's first version (linux/sched/types.h clashes with
     * sched.h): policy and nice in one call. */
    struct {
        uint32_t size, sched_policy;
        uint64_t sched_flags;
        int32_t sched_nice;
        uint32_t sched_priority;
        uint64_t sched_runtime, sched_deadline, sched_period;
    } at = {.size = sizeof at, .sched_policy = SCHED_OTHER,
            .sched_nice = p->base_nice};
    if (syscall(SYS_sched_setattr, tid, &at, 0) == 0)
        return 1;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NICE, &rl) < 0 || rl.rlim_cur < 1)
        return 0;
    int least = rl.rlim_cur >= 20 ? 0 : 20 - (int)rl.rlim_cur;
    if (at.sched_nice < least)
        at.sched_nice = least;
    return syscall(SYS_sched_setattr, tid, &at, 0) == 0;
}

/* Its policy first, then its tid for the pool's free to lift it; a
 * thread that sees the lift it may have missed lifts itself. Without
 * the lift's first check a thread starting as the pool is freed would
 * lower itself and then need a starved thread's turn to undo it. */
static void set_policy(struct worker *w)
{
    cw__authpool *p = w->pool;
    pid_t tid = (pid_t)syscall(SYS_gettid);
    if (!atomic_load(&p->lift)) {
        /* Best effort: Linux nices threads one by one. */
        (void)setpriority(PRIO_PROCESS, (id_t)tid, CW_AUTH_NICE);
        /* Check threads: SCHED_IDLE when asked for, else or where that
         * is refused (a seccomp profile, say) nice 19. */
        struct sched_param sp = {0};
        if (!w->slot && p->want_idle && sched_setscheduler(0, SCHED_IDLE, &sp) == 0)
            atomic_fetch_add(&p->idle_checks, 1);
    }
    atomic_store(&w->tid, tid);
    if (atomic_load(&p->lift))
        (void)lift(p, 0);
}

static void *thread_main(void *arg)
{
    struct worker *w = arg;
    cw__authpool *p = w->pool;
    pthread_setname_np(pthread_self(), w->slot ? "cw-auth-rescue" : "cw-auth");
    set_policy(w);
    struct crypt_data *cd = calloc(1, sizeof *cd);
    for (;;) {
        uint32_t seen = atomic_load_explicit(&w->seq, memory_order_acquire);
        cw__authjob *j = atomic_exchange_explicit(&w->mbox, NULL, memory_order_acquire);
        if (j) {
            HA(j);
            /* Stopping: every port is gone, nobody waits for the hash. */
            run(w, j, atomic_load(&p->stop) ? NULL : cd);
            continue;
        }
        if (atomic_load(&p->stop))
            break;
        futex_wait(&w->seq, seen);
    }
    free(cd);
    pool_release(p);   /* last: w is the pool's memory */
    return NULL;
}

/* ---- hand-offs, on a loop under p->mu ---- */

static void give(struct worker *w, cw__authjob *j)
{
    j->w[w->slot] = w;
    j->runners++;
    j->watch_at = 0;
    atomic_fetch_add_explicit(&j->port->refs, 1, memory_order_relaxed);
    atomic_store_explicit(&w->busy, 1, memory_order_relaxed);
    HB(j);
    atomic_store_explicit(&w->mbox, j, memory_order_release);
    atomic_fetch_add_explicit(&w->seq, 1, memory_order_release);
    futex_wake(&w->seq);
}

/* The thread's own copy of the hash it checks against: a thread the
 * pool's free lets go of (cw__authpool_free) may still be hashing when
 * auth.c's table is freed. A stored hash is its user's setting. */
static void thread_set(cw__authjob *j)
{
    const char *src = j->set.setting;
    size_t n = src ? strlen(src) : 0;
    j->tset = j->set;
    if (!src || n >= sizeof j->setting) {   /* longer: crypt never makes one */
        j->tset.setting = j->tset.stored = NULL;   /* "bad", unhashed */
        return;
    }
    memcpy(j->setting, src, n + 1);
    j->tset.setting = j->setting;
    j->tset.stored = j->set.stored ? j->setting : NULL;
}

/* The same for a calibration's settings; auth.c's stay in cal_orig for
 * the publication. 0: no memory. */
static int calib_copy(cw__authjob *j)
{
    struct cw__authcal *c = j->cal;
    size_t len[CW__AUTH_METHODS], total = 0;
    for (int i = 0; i < c->n; i++)
        total += len[i] = strlen(c->setting[i]) + 1;
    j->cal_orig = malloc(sizeof(char *) * CW__AUTH_METHODS + total);
    if (!j->cal_orig)
        return 0;
    char *text = (char *)(j->cal_orig + CW__AUTH_METHODS);
    for (int i = 0; i < c->n; i++) {
        j->cal_orig[i] = c->setting[i];
        c->setting[i] = memcpy(text, c->setting[i], len[i]);
        text += len[i];
    }
    return 1;
}

/* An idle thread of the slot's kind, or NULL. */
static struct worker *idle_worker(cw__authpool *p, int slot)
{
    int per = p->started / 2;   /* threads start in pairs */
    for (int i = 0; i < per; i++) {
        struct worker *w = &p->w[slot * p->nthreads + i];
        if (!atomic_load_explicit(&w->busy, memory_order_acquire))
            return w;
    }
    return NULL;
}

/* A calibration, first in the queue, when auth.c's table needs one and
 * none is in flight; 1 while one is (checks wait for it: their padding
 * and unknown users' setting come from it). */
static int calibrating(cw__authpool *p, cw__authport *pt)
{
    if (p->calib)
        return 1;
    if (cw__auth_calibrated(p->auth))
        return 0;
    cw__authjob *j = calloc(1, sizeof *j);
    struct cw__authcal *c = calloc(1, sizeof *c);
    if (j)
        j->cal = c;
    if (!j || !c || !cw__auth_calib_prepare(p->auth, c) || !calib_copy(j)) {
        if (j)
            job_free(j);
        else
            free(c);
        return 0;   /* no memory: known users' checks go on, padded as
                       they come; unknown users' wait (dispatch) */
    }
    j->kind = K_CALIB;
    j->port = pt;
    j->state = J_QUEUED;
    jpush_front(&p->queue, j);
    p->calib = j;
    return 1;
}

/* Hand out queued jobs to idle threads: the calibration to a rescuer
 * (nice 19: a starved SCHED_IDLE thread would hold every check behind
 * it), checks to check threads, or to rescuers while the checks are
 * starved (busy_until). */
static void dispatch(cw__authpool *p, cw__authport *pt, int64_t now)
{
    int cal = calibrating(p, pt);
    while (p->queue.head) {
        cw__authjob *j = p->queue.head;
        struct worker *w;
        if (j->kind == K_CALIB) {
            /* A rescuer only: a calibration is not in p->active, so no
             * watch would rescue it from a starved check thread, and
             * every check waits behind it. */
            if (!(w = idle_worker(p, 1)))
                return;
        } else {
            if (cal)
                return;
            int slot = now < p->busy_until;
            if (!(w = idle_worker(p, slot)))
                return;
            if (!j->set.setting && !j->set.reject &&
                !(j->set.setting = cw__auth_slowest(p->auth)) &&
                !cw__auth_calibrated(p->auth)) {
                /* A user added since calibrating() looked, or no memory
                 * for a calibration: an unknown user's check waits for
                 * one (queued now, or tried again on the next watch
                 * tick), never answered faster than a known one. */
                if (!(cal = calibrating(p, pt)) || p->queue.head == j)
                    return;   /* none queued in front of it now */
                continue;
            }
        }
        junlink(&p->queue, j);
        p->queued -= j->kind == K_CHECK;
        j->state = J_RUNNING;
        if (j->kind == K_CHECK) {
            jpush(&p->active, j);
            thread_set(j);
        }
        give(w, j);
    }
}

/* Start the missing threads, with all signals blocked (they inherit the
 * mask: SIGTERM stays the loops'). The pairs that started serve; none
 * started, every costly check is refused (-EAGAIN and the like). A
 * failed start (EAGAIN: a thread limit reached for a moment) is tried
 * again with a later check, at most once per START_RETRY_NS: one
 * failure at the first costly login must not refuse threaded checks for
 * the server's life, nor every check pay for a pthread_create. */
static int start_threads(cw__authpool *p, int64_t now)
{
    if (p->started == 2 * p->nthreads)
        return CW_OK;
    if (now < p->start_retry_at)
        return p->started ? CW_OK : -EAGAIN;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = 0;
    for (int i = p->started / 2; i < p->nthreads && !rc; i++) {
        struct worker *pair[2] = {&p->w[i], &p->w[p->nthreads + i]};
        for (int k = 0; k < 2 && !rc; k++) {
            if (pair[k]->live)   /* its partner failed last time */
                continue;
            atomic_fetch_add(&p->holders, 1);   /* before it can end */
            if ((rc = pthread_create(&pair[k]->thread, NULL, thread_main, pair[k]))) {
                atomic_fetch_sub(&p->holders, 1);
                break;
            }
            pair[k]->live = 1;
            if (pthread_getcpuclockid(pair[k]->thread, &pair[k]->clock))
                pair[k]->clock = CLOCK_MONOTONIC;   /* never looks stalled */
        }
        if (!rc)
            p->started += 2;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc)
        p->start_retry_at = now + START_RETRY_NS;
    return p->started ? CW_OK : -rc;
}

/* ---- the loop's side ---- */

/* A post taken from the stack (under p->mu): the job's first answer goes
 * to the batch; a job its session let go of is freed with its last post. */
static void take(cw__authpool *p, cw__authport *pt, cw__authjob *j, int slot)
{
    j->runners--;
    if (j->kind == K_CALIB) {
        if (p->calib == j) {
            p->calib = NULL;
            for (int i = 0; i < j->cal->n; i++)
                j->cal->setting[i] = j->cal_orig[i];
            cw__auth_calib_publish(p->auth, j->cal);
        }
    } else if (!j->released && j->state == J_RUNNING) {
        junlink(&p->active, j);
        pt->inflight--;
        j->answer = slot;
        p->st.rescued += slot == 1;
        j->state = J_DONE;
        jpush(&pt->batch, j);
    }
    if (j->runners)
        return;
    if (j->released || j->kind == K_CALIB)
        job_free(j);
    else   /* the password is read by no one now */
        explicit_bzero(j->buf, j->plen);
}

/* The port's posts, oldest first. */
static void take_posts(cw__authpool *p, cw__authport *pt)
{
    struct post *n = atomic_exchange_explicit(&pt->done, NULL, memory_order_acquire);
    struct post *fifo = NULL;
    while (n) {
        HA(n);
        struct post *next = n->next;
        n->next = fifo;
        fifo = n;
        n = next;
    }
    while (fifo) {
        struct post *next = fifo->next;   /* fifo's job may be freed */
        take(p, pt, fifo->job, fifo->slot);
        fifo = next;
    }
}

static void answer(cw__authport *pt, cw__authjob *j, struct jlist *from)
{
    cw__authpool *p = pt->pool;
    junlink(from, j);
    pthread_mutex_lock(&p->mu);
    p->st.answered++;
    p->st.deferred -= j->state == J_DEFERRED;
    j->released = 1;
    int mine = j->runners == 0;   /* else freed with the rescue's post */
    pthread_mutex_unlock(&p->mu);
    j->cb(j->data, j->res[j->answer].ok);
    if (mine)
        job_free(j);
}

static void on_pad(cw_loop *loop, cw_timer *t)
{
    cw__authjob *j = t->data;
    answer(j->port, j, &j->port->deferred);
}

/* Answer now, or hold the answer until the padding is over: the timer is
 * in whole milliseconds, rounded up, so it is never early. */
static void settle_job(cw__authport *pt, cw__authjob *j)
{
    int64_t due = cw__auth_pad(pt->pool->auth, j->set.setting, &j->res[j->answer].tm);
    if (due > cw__auth_now_ns()) {
        j->pad.data = j;
        if (cw_timer_start(pt->loop, &j->pad, (due + 999999) / 1000000, on_pad) == CW_OK) {
            junlink(&pt->batch, j);
            jpush(&pt->deferred, j);
            pthread_mutex_lock(&pt->pool->mu);
            j->state = J_DEFERRED;
            pt->pool->st.deferred++;
            pthread_mutex_unlock(&pt->pool->mu);
            return;
        }
        /* No memory for the timer heap: answer now rather than never. */
    }
    answer(pt, j, &pt->batch);
}

static void on_posted(cw_loop *loop, cw_io *io, unsigned events)
{
    cw__authport *pt = io->data;
    cw__authpool *p = pt->pool;
    uint64_t v;
    while (read(io->fd, &v, sizeof v) < 0 && errno == EINTR) {
    }
    pthread_mutex_lock(&p->mu);
    take_posts(p, pt);
    dispatch(p, pt, cw__auth_now_ns());   /* the posting threads are idle */
    pthread_mutex_unlock(&p->mu);
    /* A callback may cancel a job further down the batch: it unlinks
     * itself, so take the head each time. */
    while (pt->batch.head)
        settle_job(pt, pt->batch.head);
}

/* Its job has been on a check thread for RESCUE_MS and the thread ran
 * less than 1/RESCUE_SHARE of that (a hash longer than RESCUE_MS on a
 * free core is no stall): other programs starve it. */
static int stalled(cw__authjob *j, int64_t now)
{
    int64_t cpu = clock_ns(j->w[0]->clock);
    if (!j->watch_at || now - j->watch_at >= 2 * RESCUE_NS) {
        j->watch_at = now;   /* first look, or a late timer: start over */
        j->watch_cpu = cpu;
        return 0;
    }
    int64_t span = now - j->watch_at;
    if (span < RESCUE_NS)
        return 0;
    int starved = (cpu - j->watch_cpu) * RESCUE_SHARE < span;
    j->watch_at = now;
    j->watch_cpu = cpu;
    return starved;
}

static int watch_arm(cw__authport *pt);

/* Every RESCUE_MS while the port has checks in flight: take posts whose
 * thread was starved between its push and its eventfd write, hand this
 * port's stalled checks to rescuers too, and whatever is queued to idle
 * threads (a thread whose post went to a freed port told no loop it is
 * idle). A check whose thread has hashed but not pushed yet is rescued
 * like any other: stalled() sees no CPU from a thread starved in post(),
 * and the first answer counts (take() ignores the second). */
static void on_watch(cw_loop *loop, cw_timer *t)
{
    cw__authport *pt = t->data;
    cw__authpool *p = pt->pool;
    int64_t now = cw__auth_now_ns();
    pthread_mutex_lock(&p->mu);
    take_posts(p, pt);
    for (cw__authjob *j = p->active.head; j; j = j->next) {
        if (j->port != pt || !j->w[0] || j->w[1] || !stalled(j, now))
            continue;
        struct worker *w = idle_worker(p, 1);
        if (!w)
            break;
        p->busy_until = now + BUSY_MS * 1000000LL;
        give(w, j);
    }
    dispatch(p, pt, now);
    pthread_mutex_unlock(&p->mu);
    if (pt->inflight > 0)
        (void)watch_arm(pt);   /* cannot fail: this timer's heap slot was just freed */
    while (pt->batch.head)
        settle_job(pt, pt->batch.head);
}

/* -ENOMEM when the loop's timer heap cannot grow. */
static int watch_arm(cw__authport *pt)
{
    if (cw_timer_active(&pt->watch))
        return CW_OK;
    pt->watch.data = pt;
    return cw_timer_start(pt->loop, &pt->watch, cw_now_ms() + RESCUE_MS, on_watch);
}

int cw__authport_new(cw__authpool *p, cw_loop *loop, cw__authport **out)
{
    if (!p || !loop || !out)
        return CW_EINVAL;
    *out = NULL;
    cw__authport *pt = calloc(1, sizeof *pt);
    if (!pt)
        return -ENOMEM;
    pt->pool = p;
    pt->loop = loop;
    atomic_init(&pt->done, NULL);
    atomic_init(&pt->refs, 1);
    HG_ATOMIC(pt->done);
    HG_ATOMIC(pt->refs);
    pt->io.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pt->io.data = pt;
    int rc = pt->io.fd < 0 ? -errno : cw_io_start(loop, &pt->io, CW_IO_READ, on_posted);
    if (rc < 0) {
        if (pt->io.fd >= 0)
            close(pt->io.fd);
        free(pt);
        return rc;
    }
    *out = pt;
    return CW_OK;
}

/* Freed ports no thread holds a job of any more: their last posts (jobs
 * let go of) and the port itself. Under p->mu. */
static void reap(cw__authpool *p)
{
    for (cw__authport **d = &p->dead; *d;) {
        cw__authport *pt = *d;
        if (atomic_load_explicit(&pt->refs, memory_order_acquire)) {
            d = &pt->next_dead;
            continue;
        }
        HA(pt);
        *d = pt->next_dead;
        take_posts(p, pt);
        close(pt->io.fd);
        free(pt);
    }
}

static void drop_list(cw__authpool *p, struct jlist *l, cw_loop *loop)
{
    while (l->head) {
        cw__authjob *j = l->head;
        junlink(l, j);
        p->st.cancelled += j->kind == K_CHECK;
        p->st.deferred -= j->state == J_DEFERRED;
        cw_timer_stop(loop, &j->pad);
        j->released = 1;
        if (!j->runners)
            job_free(j);
    }
}

/* Jobs a thread holds stay: the port joins p->dead, its eventfd open for
 * their posts, until the last one is in (reap). Nothing here waits for a
 * thread. */
void cw__authport_free(cw__authport *pt)
{
    if (!pt)
        return;
    cw__authpool *p = pt->pool;
    cw_timer_stop(pt->loop, &pt->watch);
    cw_io_stop(pt->loop, &pt->io);
    pthread_mutex_lock(&p->mu);
    for (cw__authjob *j = p->queue.head, *next; j; j = next) {
        next = j->next;
        if (j->port != pt)
            continue;
        junlink(&p->queue, j);
        p->queued -= j->kind == K_CHECK;
        p->st.cancelled += j->kind == K_CHECK;
        if (p->calib == j)
            p->calib = NULL;
        job_free(j);
    }
    if (p->calib && p->calib->port == pt) {   /* another port calibrates anew */
        p->calib->released = 1;
        p->calib = NULL;
    }
    take_posts(p, pt);
    struct jlist mine = {0};
    for (cw__authjob *j = p->active.head, *next; j; j = next) {
        next = j->next;
        if (j->port == pt) {
            junlink(&p->active, j);
            jpush(&mine, j);
        }
    }
    drop_list(p, &mine, pt->loop);
    drop_list(p, &pt->batch, pt->loop);
    drop_list(p, &pt->deferred, pt->loop);
    pt->next_dead = p->dead;
    p->dead = pt;
    HB(pt);
    atomic_fetch_sub_explicit(&pt->refs, 1, memory_order_release);
    reap(p);
    pthread_mutex_unlock(&p->mu);
}

int cw__authport_submit(cw__authport *pt, const char *user, size_t ulen,
                        const char *pass, size_t plen, cw__authjob_cb *cb,
                        void *data, cw__authjob **job)
{
    if (!pt || !user || !pass || !cb || !job || plen > UINT16_MAX)
        return CW_EINVAL;
    *job = NULL;
    cw__authpool *p = pt->pool;
    cw__authjob *j = calloc(1, sizeof *j + plen + 1);
    if (!j)
        return -ENOMEM;
    HG_ATOMIC(j->hashed);
    cw__auth_lookup(p->auth, user, ulen, plen, &j->set);
    j->kind = K_CHECK;
    j->port = pt;
    j->cb = cb;
    j->data = data;
    j->plen = (uint16_t)plen;
    memcpy(j->buf, pass, plen);
    /* The watch first: a check queued without it could wait for ever on
     * a starved thread. Started for nothing if the queue is full: it
     * then finds nothing in flight and stops. */
    int rc = watch_arm(pt);
    if (rc < 0) {
        job_free(j);
        return rc;
    }
    pthread_mutex_lock(&p->mu);
    rc = p->queued >= p->queue_max ? -EBUSY : CW_OK;
    if (rc == CW_OK && p->started < 2 * p->nthreads)
        rc = start_threads(p, cw__auth_now_ns());   /* the first check that needs them */
    if (rc < 0) {
        p->st.busy += rc == -EBUSY;
        pthread_mutex_unlock(&p->mu);
        job_free(j);
        return rc;
    }
    j->state = J_QUEUED;
    jpush(&p->queue, j);
    p->queued++;
    p->st.submitted++;
    pt->inflight++;
    dispatch(p, pt, cw__auth_now_ns());
    pthread_mutex_unlock(&p->mu);
    *job = j;
    return CW_OK;
}

void cw__authjob_cancel(cw__authjob *j)
{
    if (!j)
        return;
    cw__authport *pt = j->port;
    cw__authpool *p = pt->pool;
    pthread_mutex_lock(&p->mu);
    p->st.cancelled++;
    switch (j->state) {
    case J_QUEUED:
        junlink(&p->queue, j);
        p->queued--;
        pt->inflight--;
        break;
    case J_RUNNING:
        junlink(&p->active, j);
        pt->inflight--;
        break;
    case J_DONE:
        junlink(&pt->batch, j);
        break;
    case J_DEFERRED:
        p->st.deferred--;
        junlink(&pt->deferred, j);
        cw_timer_stop(pt->loop, &j->pad);
        break;
    }
    j->released = 1;
    int mine = j->runners == 0;   /* else freed with its last post */
    pthread_mutex_unlock(&p->mu);
    if (mine)
        job_free(j);
}

/* ---- the pool ---- */

int cw__authpool_new(cw__auth *auth, int workers, int queue_max, int idle,
                     cw__authpool **out)
{
    if (!auth || !out || workers < 0 || queue_max < 0)
        return CW_EINVAL;
    *out = NULL;
    cw__authpool *p = calloc(1, sizeof *p);
    int n = workers ? workers : cw__usable_cpus();
    if (p)
        p->w = calloc((size_t)n * 2, sizeof *p->w);
    if (!p || !p->w) {
        free(p);
        return -ENOMEM;
    }
    p->nthreads = n;
    p->want_idle = idle != 0;
    p->auth = auth;
    p->queue_max = queue_max ? queue_max : 256 * n;
    atomic_init(&p->stop, 0);
    atomic_init(&p->lift, 0);
    errno = 0;
    p->base_nice = getpriority(PRIO_PROCESS, 0);   /* this thread's */
    if (errno)
        p->base_nice = 0;
    atomic_init(&p->holders, 1);
    atomic_init(&p->idle_checks, 0);
    HG_ATOMIC(p->stop);
    HG_ATOMIC(p->lift);
    HG_ATOMIC(p->holders);
    HG_ATOMIC(p->idle_checks);
    for (int i = 0; i < 2 * n; i++) {
        struct worker *w = &p->w[i];
        w->pool = p;
        w->slot = i >= n;
        atomic_init(&w->mbox, NULL);
        atomic_init(&w->seq, 0);
        atomic_init(&w->busy, 0);
        atomic_init(&w->tid, 0);
        HG_ATOMIC(w->tid);
        HG_ATOMIC(w->mbox);
        HG_ATOMIC(w->seq);
        HG_ATOMIC(w->busy);
    }
    pthread_mutex_init(&p->mu, NULL);
    *out = p;
    return CW_OK;
}

/* The owner's or the last thread's: the pool's memory, and the ports
 * freed while a thread still held a job of theirs. By then no thread
 * runs: nothing posts any more, every freed port goes. */
static void pool_release(cw__authpool *p)
{
    HB(p);
    if (atomic_fetch_sub(&p->holders, 1) != 1)
        return;
    HA(p);
    pthread_mutex_lock(&p->mu);
    reap(p);
    /* Ports were freed first, so the queue is empty; be safe anyway. */
    while (p->queue.head) {
        cw__authjob *j = p->queue.head;
        junlink(&p->queue, j);
        job_free(j);
    }
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_destroy(&p->mu);
    free(p->w);
    free(p);
}

/* Shutdown must be prompt, but a hash cannot be stopped, and a thread
 * that is in one when the pool is freed may be starved: a SCHED_IDLE
 * check thread gets 3/1027 of a core beside one busy nice-0 program, so
 * joining it took 10.7 s (test_free_when_starved); even an idle thread
 * needs a turn to see the stop. Two steps:
 * 1. Lift: every thread goes back to SCHED_OTHER at the nice the pool
 *    was made with, 0 mostly (lift()), so it finishes its hash at a
 *    normal program's share. The kernel allows
 *    that only with CAP_SYS_NICE (root) or an RLIMIT_NICE that covers
 *    it (leaving SCHED_IDLE counts as leaving nice 20; lowering one's
 *    priority is always allowed, raising it back is not). It is done
 *    before the stop, while no thread can end (a thread ends only once
 *    it sees the stop), so no tid here names a task that has gone.
 * 2. Bound: the threads are joined until JOIN_MS after the start of
 *    this call (CLOCK_MONOTONIC: pthread_clockjoin_np would do, but
 *    ThreadSanitizer and helgrind do not know it, so pthread_tryjoin_np
 *    every millisecond; free costs one more ms or so); one still
 *    running then is detached, and the last thread to end frees the
 *    pool (holders). This call
 *    therefore returns within about JOIN_MS, whatever the load. Nothing
 *    such a thread touches is freed before it ends: the pool, its
 *    worker slot, its job, the job's port and that port's eventfd
 *    (reap, in pool_release), and its strings are its own copies
 *    (thread_set, calib_copy), not auth.c's, which its owner frees next.
 *    A process that exits meanwhile ends the thread with it; one that
 *    lives on gets the memory and the eventfd back when the hash ends. */
void cw__authpool_free(cw__authpool *p)
{
    if (!p)
        return;
    int64_t deadline = cw_now_ms() + JOIN_MS;
    atomic_store(&p->lift, 1);
    for (int i = 0; i < 2 * p->nthreads; i++) {
        pid_t tid = p->w[i].live ? atomic_load(&p->w[i].tid) : 0;
        if (tid)
            (void)lift(p, tid);   /* refused: step 2 bounds the wait */
    }
    atomic_store(&p->stop, 1);
    int left = 0;
    for (int i = 0; i < 2 * p->nthreads; i++) {
        if (!p->w[i].live)
            continue;
        left++;
        atomic_fetch_add_explicit(&p->w[i].seq, 1, memory_order_release);
        futex_wake(&p->w[i].seq);
    }
    for (;;) {
        for (int i = 0; i < 2 * p->nthreads; i++) {
            if (p->w[i].live && pthread_tryjoin_np(p->w[i].thread, NULL) == 0) {
                p->w[i].live = 0;
                left--;
            }
        }
        if (!left || cw_now_ms() >= deadline)
            break;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);   /* EINTR: looks again sooner */
    }
    for (int i = 0; i < 2 * p->nthreads; i++)
        if (p->w[i].live)
            pthread_detach(p->w[i].thread);
    pool_release(p);
}

int cw__authpool_workers(const cw__authpool *p)
{
    return p ? p->nthreads : CW_EINVAL;
}

void cw__authpool_stats(cw__authpool *p, struct cw__authpool_stats *st)
{
    pthread_mutex_lock(&p->mu);
    *st = p->st;
    st->queued = p->queued;
    st->running = 0;
    for (cw__authjob *j = p->active.head; j; j = j->next)
        st->running += !atomic_load_explicit(&j->hashed, memory_order_relaxed);
    st->idle_threads = atomic_load(&p->idle_checks);
    pthread_mutex_unlock(&p->mu);
}
