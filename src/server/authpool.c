/* authpool.c - worker threads for crypt(3), answers posted back to the
 * asking loop through an eventfd.
 *
 * A job moves QUEUED (pool queue) -> RUNNING (the pool's active list:
 * one or two threads hash it) -> POSTED (its port's done list) -> BATCH
 * (taken by the loop) -> DEFERRED (a loop timer holds the answer until
 * auth.c's padding is over) -> answered. Every move before BATCH happens
 * under the pool mutex; BATCH and DEFERRED belong to the loop thread
 * alone. The first thread to finish a job posts it; a job still hashed by
 * another thread when it is answered or cancelled becomes an ORPHAN, on
 * no list, and its last hashing thread frees it. Otherwise a cancel frees
 * the job at once.
 *
 * Two kinds of threads hash. Check threads run SCHED_IDLE when the server
 * asks (--auth-priority idle), else nice 19. SCHED_IDLE helps: the kernel's
 * wake-up placement counts a core running only SCHED_IDLE tasks as idle
 * (select_idle_sibling, sched_idle_cpu), so woken loops go to the core a
 * check is hashing on instead of queueing behind one another on the other
 * core; at nice 19 that core counts as busy, and with two loops and two
 * checks the echo p99 was 1.1-1.9 ms (docs/BENCHMARKS.md, "server under
 * auth load"). But SCHED_IDLE has weight 3 against a nice-0 task's 1024,
 * and an unprivileged thread cannot leave it again: on a machine kept
 * busy by other programs a yescrypt check took 11 s and the checks queued
 * behind it waited as long. So as many rescuers, at nice 19 (weight 15),
 * sleep beside them and hash only while the check threads are starved:
 * work waiting, and for RESCUE_MS no check started or finished and the
 * check threads got less than 1/RESCUE_SHARE of a core each. Then, for
 * BUSY_MS, the rescuers hash again the jobs starved check threads hold
 * (the first answer counts) and do every other check, while the check
 * threads wait holding no lock (see busy_begin). An idle machine only
 * wakes one rescuer, once per RESCUE_MS while checks run; a saturated one
 * answers logins at about nice-19 speed.
 * Left open, and why SCHED_IDLE is not the default: a check thread that
 * was hashing when the machine got busy still takes this mutex and
 * auth.c's when its hash ends, and preempted there it makes a loop wait
 * (16-126 ms measured; echo p99 26.9 ms against 1.15 at nice 19:
 * docs/BENCHMARKS.md, "The check threads' policy"). At nice 19 such a
 * wait stays under 0.11 ms. */
#define _GNU_SOURCE
#include "../net/internal.h"
#include "authpool.h"

#include <crypt.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CW_AUTH_NICE 19
#define RESCUE_MS 100        /* how long the checks may stall */
#define RESCUE_SHARE 32      /* stalled: they ran < 1/32 of that, per thread */
#define BUSY_MS 10000        /* then the rescuers do every check this long */

enum { J_QUEUED, J_RUNNING, J_POSTED, J_BATCH, J_DEFERRED, J_ORPHAN };

struct jlist {
    cw__authjob *head, *tail;
};

struct cw__authjob {
    cw__authjob *prev, *next;   /* on the list of its state */
    cw__authport *port;
    cw__authjob_cb *cb;
    void *data;
    cw_timer pad;               /* DEFERRED: answers at the due time */
    int64_t due_ns;
    int ok;
    uint8_t state;
    uint8_t runners;            /* threads hashing it, under pool->mu */
    uint8_t rescued;            /* a rescuer hashes it: not again */
    uint16_t ulen, plen;
    char buf[];                 /* user, then password */
};

struct cw__authpool {
    pthread_mutex_t mu;
    pthread_cond_t work;        /* a job was queued, or stop */
    pthread_cond_t idle;        /* a port's last running job finished */
    pthread_cond_t rescue;      /* rescuers wait here */
    pthread_cond_t park;        /* check threads wait here while busy */
    struct jlist queue;
    struct jlist active;        /* RUNNING, oldest first */
    int queued, queue_max, running, stop;
    int nthreads;               /* check threads, then as many rescuers */
    int started;                /* threads created (joined by free) */
    int rescue_asleep;          /* rescuers in an untimed wait */
    int watching;               /* rescuers in a timed wait: 0 or 1 */
    int warm;                   /* a rescuer hashed the first job */
    int busy;                   /* the checks stalled: rescuers do them all */
    int64_t busy_until;         /* ... until then (monotonic ns) */
    int want_idle;              /* check threads should run SCHED_IDLE */
    int idle_checks;            /* check threads that got SCHED_IDLE */
    uint64_t progress;          /* jobs started + finished by check threads */
    struct watch {              /* since when the rescuers watch */
        int64_t at, cpu;        /* monotonic time; check threads' CPU time */
        uint64_t progress;
        int on;
    } watch;
    pthread_t *threads;
    clockid_t *clocks;          /* the check threads' CPU clocks */
    cw__auth *auth;
    struct cw__authpool_stats st;
};

struct cw__authport {
    cw__authpool *pool;
    cw_loop *loop;
    cw_io io;                   /* eventfd: the workers post, we read */
    struct jlist done;          /* POSTED, under pool->mu */
    int posting;                /* threads writing its eventfd, under pool->mu */
    struct jlist batch;         /* BATCH, loop thread only */
    struct jlist deferred;      /* DEFERRED, loop thread only */
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
    explicit_bzero(j->buf, (size_t)j->ulen + j->plen);
    free(j);
}

/* ---- workers ---- */

/* Put a hashed job on its port's done list; 1 if the list was empty, so
 * the caller must wake the loop (wake_port) once it has let go of the
 * mutex: one wake-up per batch, since the loop takes the whole list. */
static int post(cw__authjob *j)
{
    cw__authport *pt = j->port;
    j->state = J_POSTED;
    int was_empty = pt->done.head == NULL;
    jpush(&pt->done, j);
    return was_empty;
}

/* Not under the mutex: a waking loop preempts the check thread right
 * after the write, and a hashing thread (SCHED_IDLE or nice 19)
 * preempted while holding the mutex leaves every loop that takes it
 * waiting until the thread gets a core again - milliseconds to seconds on
 * a busy machine, and no scheduling policy of the loops helps
 * (docs/BENCHMARKS.md, "server under auth load"). The caller keeps
 * pt->posting raised meanwhile, so the port and its eventfd outlive the
 * write (cw__authport_free waits for it), and drops it only when it has
 * the mutex again, as it needs to for its next job anyway. An atomic
 * pt->posting would save no lock: the thread takes the mutex right after
 * the write all the same; and decremented outside the mutex, its
 * broadcast could fall between cw__authport_free's check and its wait,
 * which would then sleep forever. */
static void wake_port(cw__authport *pt)
{
    uint64_t one = 1;
    while (write(pt->io.fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
}

/* The queue's head becomes RUNNING. */
static cw__authjob *start_next(cw__authpool *p)
{
    cw__authjob *j = p->queue.head;
    junlink(&p->queue, j);
    p->queued--;
    p->running++;
    j->state = J_RUNNING;
    jpush(&p->active, j);
    return j;
}

/* Who hashes a job. */
enum { BY_CHECK, BY_RESCUER, BY_WARMUP };

/* The first answer of a RUNNING job: post it; 1 if the loop must be woken
 * (pt->posting is raised then). */
static int first_answer(cw__authpool *p, cw__authjob *j, int ok, int64_t due,
                        int by)
{
    junlink(&p->active, j);
    p->running--;
    p->st.rescued += by == BY_RESCUER;
    j->ok = ok;
    j->due_ns = due;
    int wake = post(j);
    j->port->posting += wake;
    return wake;
}

/* Hash j as one of its runners. Called and returns with p->mu held; the
 * hash runs without it. Nothing here may make a loop wait for this
 * thread: see wake_port(). */
static void run_job(cw__authpool *p, cw__authjob *j, struct crypt_data *cd,
                    int by)
{
    j->runners++;
    j->rescued |= by != BY_CHECK;
    p->progress += by == BY_CHECK;
    pthread_mutex_unlock(&p->mu);
    int64_t due = 0;
    /* Without its 32 KiB the worker still answers: "bad", at once. */
    int ok = cd ? cw__auth_verify(p->auth, cd, j->buf, j->ulen,
                                  j->buf + j->ulen, j->plen, &due) : 0;
    pthread_mutex_lock(&p->mu);
    p->progress += by == BY_CHECK;
    cw__authport *pt = j->port;
    int wake = j->state == J_RUNNING && first_answer(p, j, ok, due, by);
    if (--j->runners == 0) {   /* the password is read by no one now */
        explicit_bzero(j->buf + j->ulen, j->plen);
        if (j->state == J_ORPHAN)
            job_free(j);
    }
    if (wake) {   /* j may be answered and freed from here on */
        pthread_mutex_unlock(&p->mu);
        wake_port(pt);
        pthread_mutex_lock(&p->mu);
        if (--pt->posting == 0)   /* pt may be freed once this is seen */
            pthread_cond_broadcast(&p->idle);
    }
}

static void thread_setup(const char *name)
{
    pthread_setname_np(pthread_self(), name);   /* for top, perf */
    /* Best effort: Linux nices threads one by one. */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), CW_AUTH_NICE);
}

/* Check threads: SCHED_IDLE when asked for, else or where that is refused
 * (a seccomp profile, say) nice 19; the rescuers then add nice-19
 * threads only on a saturated machine. */
static void *worker(void *arg)
{
    cw__authpool *p = arg;
    thread_setup("cw-auth");
    struct sched_param sp = {0};
    int idle = p->want_idle && sched_setscheduler(0, SCHED_IDLE, &sp) == 0;   /* this thread */
    struct crypt_data *cd = calloc(1, sizeof *cd);
    pthread_mutex_lock(&p->mu);
    p->idle_checks += idle;
    for (;;) {
        while (!p->stop && (!p->queue.head || !p->warm || p->busy))
            pthread_cond_wait(p->busy ? &p->park : &p->work, &p->mu);
        if (p->stop)
            break;
        run_job(p, start_next(p), cd, BY_CHECK);
    }
    pthread_mutex_unlock(&p->mu);
    free(cd);
    return NULL;
}

static int64_t clock_ns(clockid_t c)
{
    struct timespec ts;
    if (clock_gettime(c, &ts) < 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void timed_wait(pthread_cond_t *c, pthread_mutex_t *mu, int64_t due)
{
    struct timespec ts = {.tv_sec = due / 1000000000, .tv_nsec = due % 1000000000};
    pthread_cond_timedwait(c, mu, &ts);
}

/* CPU time of all check threads (their clocks are fixed once the
 * threads exist). */
static int64_t checks_cpu_ns(const cw__authpool *p)
{
    int64_t ns = 0;
    for (int i = 0; i < p->nthreads; i++)
        ns += clock_ns(p->clocks[i]);
    return ns;
}

/* What a rescuer would hash: the oldest job only a check thread hashes,
 * else the queue's head (NULL: nothing). take: make it RUNNING. */
static cw__authjob *rescuable(cw__authpool *p, int take)
{
    for (cw__authjob *j = p->active.head; j; j = j->next)
        if (!j->rescued)
            return j;
    if (!p->queue.head)
        return NULL;
    return take ? start_next(p) : p->queue.head;
}

#define RESCUE_NS (RESCUE_MS * 1000000LL)

/* Since the watch began, RESCUE_MS or more: no check started or finished
 * and the check threads ran less than 1/RESCUE_SHARE of the time each (so
 * a hash longer than RESCUE_MS on a free core is no stall). */
static int stalled(const cw__authpool *p, int64_t now, int64_t cpu)
{
    const struct watch *w = &p->watch;
    int64_t span = now - w->at;
    return w->on && span >= RESCUE_NS && p->progress == w->progress &&
           (cpu - w->cpu) * RESCUE_SHARE < span * p->nthreads;
}

/* A rescuer's first job, the pool's first: its hash calibrates auth.c's
 * costs (under auth's mutex, a few hashes long), which a starved
 * SCHED_IDLE thread would drag out for seconds with every other check,
 * and the loops' cost look-ups, waiting behind it. The check threads wait
 * for it (pool->warm). Credentials added later are calibrated by
 * whichever thread comes first. */
static void warm_up(cw__authpool *p, struct crypt_data *cd)
{
    if (cd && p->queue.head)
        run_job(p, start_next(p), cd, BY_WARMUP);
    p->warm = 1;
    pthread_cond_broadcast(&p->work);
}

/* Wait on the rescue condition: untimed while another rescuer watches
 * or nothing could be rescued (submit wakes one rescuer when none
 * watches, so a wake costs the loop a futex call at most once per
 * RESCUE_MS), else as the watcher until the watch is RESCUE_MS old. */
static void rescue_wait(cw__authpool *p, int64_t now, int64_t cpu)
{
    if (p->watching || !rescuable(p, 0)) {
        if (!rescuable(p, 0))
            p->watch.on = 0;
        p->rescue_asleep++;
        pthread_cond_wait(&p->rescue, &p->mu);
        p->rescue_asleep--;
        return;
    }
    if (!p->watch.on || now - p->watch.at >= RESCUE_NS)
        p->watch = (struct watch){.at = now, .cpu = cpu, .progress = p->progress, .on = 1};
    p->watching++;
    timed_wait(&p->rescue, &p->mu, p->watch.at + RESCUE_NS);
    p->watching--;
}

/* A stall means other programs keep every core busy. Then a SCHED_IDLE
 * thread is not only slow: preempted while it holds the pool's or auth's
 * mutex, it makes the loops wait for it - up to 0.39 s measured with a
 * busy loop on each core. So for BUSY_MS the rescuers do every check, as
 * nice-19 check threads did before, and the check threads wait holding
 * nothing (park). Then they are tried again. */
static void busy_begin(cw__authpool *p, int64_t now)
{
    p->busy = 1;
    p->busy_until = now + BUSY_MS * 1000000LL;
    p->watch.on = 0;
    pthread_cond_broadcast(&p->work);     /* check threads: to park */
    pthread_cond_broadcast(&p->rescue);   /* every rescuer: to work */
}

/* One step of a rescuer while busy. */
static void busy_turn(cw__authpool *p, struct crypt_data *cd, int64_t now)
{
    if (now >= p->busy_until) {
        p->busy = 0;
        pthread_cond_broadcast(&p->park);
        return;
    }
    cw__authjob *j = cd ? rescuable(p, 1) : NULL;
    if (j)
        run_job(p, j, cd, BY_RESCUER);
    else   /* submit broadcasts work while busy */
        timed_wait(&p->work, &p->mu, p->busy_until);
}

/* Rescuers: nice 19, one of them watching for a stall while there is
 * work, the others asleep. On a stall every rescuer goes to work (see
 * busy_begin), jobs that starved check threads hold first. The clocks
 * are read without the mutex: a thread preempted while holding it would
 * make the loops wait. */
static void *rescuer(void *arg)
{
    cw__authpool *p = arg;
    thread_setup("cw-auth-rescue");
    struct crypt_data *cd = calloc(1, sizeof *cd);   /* NULL: never hashes */
    int64_t now = clock_ns(CLOCK_MONOTONIC), cpu = checks_cpu_ns(p);
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        if (!p->warm && (p->queue.head || !cd)) {
            warm_up(p, cd);
            continue;
        }
        cw__authjob *j;
        if (p->busy) {
            busy_turn(p, cd, now);
        } else if (cd && stalled(p, now, cpu) && (j = rescuable(p, 1))) {
            busy_begin(p, now);
            run_job(p, j, cd, BY_RESCUER);
        } else {
            rescue_wait(p, now, cpu);
        }
        pthread_mutex_unlock(&p->mu);
        now = clock_ns(CLOCK_MONOTONIC);
        cpu = checks_cpu_ns(p);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    free(cd);
    return NULL;
}

int cw__authpool_new(cw__auth *auth, int workers, int queue_max, int idle,
                     cw__authpool **out)
{
    if (!auth || !out || workers < 0 || queue_max < 0)
        return CW_EINVAL;
    *out = NULL;
    cw__authpool *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    int n = workers ? workers : cw__usable_cpus();
    p->threads = calloc((size_t)n * 2, sizeof *p->threads);   /* + rescuers */
    p->clocks = calloc((size_t)n, sizeof *p->clocks);
    if (!p->threads || !p->clocks) {
        free(p->threads);
        free(p->clocks);
        free(p);
        return -ENOMEM;
    }
    p->nthreads = n;
    p->want_idle = idle != 0;
    p->auth = auth;
    p->queue_max = queue_max ? queue_max : 256 * n;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->idle, NULL);
    pthread_cond_init(&p->park, NULL);
    pthread_condattr_t ca;   /* rescuers wait for a CLOCK_MONOTONIC time */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->work, &ca);
    pthread_cond_init(&p->rescue, &ca);
    pthread_condattr_destroy(&ca);
    /* Workers inherit the creator's mask: block everything there, so a
     * SIGTERM meant for the loop's signalfd never lands on a worker. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = 0;
    for (; p->started < 2 * n; p->started++) {
        int i = p->started;
        rc = pthread_create(&p->threads[i], NULL, i < n ? worker : rescuer, p);
        if (rc)
            break;
        /* the rescuers start once every check thread's clock is known */
        if (i < n && (rc = pthread_getcpuclockid(p->threads[i], &p->clocks[i])) != 0) {
            p->started++;
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        cw__authpool_free(p);
        return -rc;
    }
    *out = p;
    return CW_OK;
}

void cw__authpool_free(cw__authpool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_cond_broadcast(&p->rescue);
    pthread_cond_broadcast(&p->park);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++)
        pthread_join(p->threads[i], NULL);
    /* Ports were freed first, so the queue is empty; be safe anyway. */
    while (p->queue.head) {
        cw__authjob *j = p->queue.head;
        junlink(&p->queue, j);
        job_free(j);
    }
    pthread_cond_destroy(&p->park);
    pthread_cond_destroy(&p->rescue);
    pthread_cond_destroy(&p->idle);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->mu);
    free(p->clocks);
    free(p->threads);
    free(p);
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
    st->running = p->running;
    st->idle_threads = p->idle_checks;
    pthread_mutex_unlock(&p->mu);
}

/* ---- the loop's side ---- */

/* Off the loop's lists: freed now, or an ORPHAN its last runner frees.
 * Under p->mu. 1: the caller frees it (once it lets go of the mutex). */
static int release(cw__authjob *j)
{
    if (j->runners) {
        j->state = J_ORPHAN;
        return 0;
    }
    return 1;
}

static void answer(cw__authport *pt, cw__authjob *j, struct jlist *from)
{
    junlink(from, j);
    pthread_mutex_lock(&pt->pool->mu);
    pt->pool->st.answered++;
    pt->pool->st.deferred -= j->state == J_DEFERRED;
    pthread_mutex_unlock(&pt->pool->mu);
    /* A runner still hashing j reads only its password, never the user
     * name the callback reads, and frees nothing until it is released. */
    j->cb(j->data, j->ok, j->buf, j->ulen);
    pthread_mutex_lock(&pt->pool->mu);
    int mine = release(j);
    pthread_mutex_unlock(&pt->pool->mu);
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
    if (j->due_ns > cw__auth_now_ns()) {
        j->pad.data = j;
        if (cw_timer_start(pt->loop, &j->pad, (j->due_ns + 999999) / 1000000,
                           on_pad) == CW_OK) {
            junlink(&pt->batch, j);
            jpush(&pt->deferred, j);
            pthread_mutex_lock(&pt->pool->mu);   /* a runner reads state */
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
    uint64_t v;
    while (read(io->fd, &v, sizeof v) < 0 && errno == EINTR) {
    }
    pthread_mutex_lock(&pt->pool->mu);
    for (cw__authjob *j = pt->done.head; j; j = j->next)
        j->state = J_BATCH;
    pt->batch = pt->done;
    pt->done.head = pt->done.tail = NULL;
    pthread_mutex_unlock(&pt->pool->mu);
    /* A callback may cancel a job further down the batch: it unlinks
     * itself, so take the head each time. */
    while (pt->batch.head)
        settle_job(pt, pt->batch.head);
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

static void drop_list(cw__authpool *p, struct jlist *l, cw_loop *loop)
{
    while (l->head) {
        cw__authjob *j = l->head;
        junlink(l, j);
        p->st.cancelled++;
        p->st.deferred -= j->state == J_DEFERRED;
        cw_timer_stop(loop, &j->pad);
        if (release(j))
            job_free(j);
    }
}

void cw__authport_free(cw__authport *pt)
{
    if (!pt)
        return;
    cw__authpool *p = pt->pool;
    pthread_mutex_lock(&p->mu);
    for (cw__authjob *j = p->queue.head, *next; j; j = next) {
        next = j->next;
        if (j->port != pt)
            continue;
        junlink(&p->queue, j);
        p->queued--;
        p->st.cancelled++;
        job_free(j);
    }
    /* Hashes cannot be stopped: their jobs become orphans. Only a write to
     * the eventfd is waited for, not a hash a starved thread may take
     * seconds over. */
    for (cw__authjob *j = p->active.head, *next; j; j = next) {
        next = j->next;
        if (j->port != pt)
            continue;
        junlink(&p->active, j);
        p->running--;
        p->st.cancelled++;
        j->state = J_ORPHAN;
    }
    while (pt->posting)
        pthread_cond_wait(&p->idle, &p->mu);
    drop_list(p, &pt->done, pt->loop);
    drop_list(p, &pt->batch, pt->loop);
    drop_list(p, &pt->deferred, pt->loop);
    pthread_mutex_unlock(&p->mu);
    cw_io_stop(pt->loop, &pt->io);
    close(pt->io.fd);
    free(pt);
}

int cw__authport_submit(cw__authport *pt, const char *user, size_t ulen,
                        const char *pass, size_t plen, cw__authjob_cb *cb,
                        void *data, cw__authjob **job)
{
    if (!pt || !user || !pass || !cb || !job || ulen > UINT16_MAX ||
        plen > UINT16_MAX)
        return CW_EINVAL;
    *job = NULL;
    cw__authpool *p = pt->pool;
    pthread_mutex_lock(&p->mu);
    int full = p->queued >= p->queue_max;
    if (full)
        p->st.busy++;
    pthread_mutex_unlock(&p->mu);
    if (full)
        return -EBUSY;
    cw__authjob *j = calloc(1, sizeof *j + ulen + plen);
    if (!j)
        return -ENOMEM;
    j->port = pt;
    j->cb = cb;
    j->data = data;
    j->ulen = (uint16_t)ulen;
    j->plen = (uint16_t)plen;
    memcpy(j->buf, user, ulen);
    memcpy(j->buf + ulen, pass, plen);
    pthread_mutex_lock(&p->mu);
    /* Checked again: another loop may have filled the queue meanwhile. */
    if (p->queued >= p->queue_max) {
        p->st.busy++;
        pthread_mutex_unlock(&p->mu);
        job_free(j);
        return -EBUSY;
    }
    j->state = J_QUEUED;
    jpush(&p->queue, j);
    p->queued++;
    p->st.submitted++;
    if (p->busy)   /* rescuers and parked-to-be check threads wait on it */
        pthread_cond_broadcast(&p->work);
    else
        pthread_cond_signal(&p->work);
    /* One rescuer: the pool's first job, or the watch for stalls. */
    if (!p->busy && p->rescue_asleep && !p->watching)
        pthread_cond_signal(&p->rescue);
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
        break;
    case J_RUNNING:
        junlink(&p->active, j);
        p->running--;
        break;
    case J_POSTED:
        junlink(&pt->done, j);
        break;
    case J_BATCH:
        junlink(&pt->batch, j);
        break;
    case J_DEFERRED:
        p->st.deferred--;
        junlink(&pt->deferred, j);
        cw_timer_stop(pt->loop, &j->pad);
        break;
    }
    int mine = release(j);
    pthread_mutex_unlock(&p->mu);
    if (mine)
        job_free(j);
}
