/* authpool.c - worker threads for crypt(3), answers posted back to the
 * asking loop through an eventfd.
 *
 * A job moves QUEUED (pool queue) -> RUNNING (a worker hashes it) ->
 * POSTED (its port's done list) -> BATCH (taken by the loop) -> DEFERRED
 * (a loop timer holds the answer until auth.c's padding is over) ->
 * answered. Every move before BATCH happens under the pool mutex; BATCH
 * and DEFERRED belong to the loop thread alone. A cancel frees the job at
 * once in every state but RUNNING, where it only marks it: the worker
 * frees it when the hash is done. */
#define _GNU_SOURCE
#include "../net/internal.h"
#include "authpool.h"

#include <crypt.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define CW_AUTH_NICE 19

enum { J_QUEUED, J_RUNNING, J_POSTED, J_BATCH, J_DEFERRED };

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
    uint8_t state, cancelled;
    uint16_t ulen, plen;
    char buf[];                 /* user, then password */
};

struct cw__authpool {
    pthread_mutex_t mu;
    pthread_cond_t work;        /* a job was queued, or stop */
    pthread_cond_t idle;        /* a port's last running job finished */
    struct jlist queue;
    int queued, queue_max, running, stop;
    int nthreads;
    pthread_t *threads;
    cw__auth *auth;
    struct cw__authpool_stats st;
};

struct cw__authport {
    cw__authpool *pool;
    cw_loop *loop;
    cw_io io;                   /* eventfd: the workers post, we read */
    struct jlist done;          /* POSTED, under pool->mu */
    int running;                /* its jobs on a worker, under pool->mu */
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
 * after the write, and a thread at nice 19 preempted while holding the
 * mutex leaves every loop that takes it waiting until the thread gets a
 * core again - milliseconds on a busy machine, and no scheduling policy of
 * the loops helps (docs/BENCHMARKS.md, "server under auth load"). The
 * caller keeps pt->running raised meanwhile, so the port and its eventfd
 * outlive the write (cw__authport_free waits for it), and drops it only
 * when it has the mutex again, as it needs to for its next job anyway.
 * An atomic pt->running would save no lock: the worker takes the mutex
 * right after the write all the same; and decremented outside the mutex,
 * its broadcast could fall between cw__authport_free's check and its
 * wait, which would then sleep forever. */
static void wake_port(cw__authport *pt)
{
    uint64_t one = 1;
    while (write(pt->io.fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
}

static void *worker(void *arg)
{
    cw__authpool *p = arg;
    pthread_setname_np(pthread_self(), "cw-auth");   /* for top, perf */
    /* Hashing yields to the loops: at nice 19 (weight 15 against a
     * loop's 1024) a check takes little from them; unlike SCHED_IDLE
     * (weight 3), hashes still get a share on a machine busy with other
     * work. Best effort: Linux nices threads one by one. Nothing here may
     * make a loop wait for this thread: see wake_port(). */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), CW_AUTH_NICE);
    struct crypt_data *cd = calloc(1, sizeof *cd);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && !p->queue.head)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->stop)
            break;
        cw__authjob *j = p->queue.head;
        junlink(&p->queue, j);
        p->queued--;
        p->running++;
        j->state = J_RUNNING;
        j->port->running++;
        pthread_mutex_unlock(&p->mu);
        int64_t due = 0;
        /* Without its 32 KiB the worker still answers: "bad", at once. */
        int ok = cd ? cw__auth_verify(p->auth, cd, j->buf, j->ulen,
                                      j->buf + j->ulen, j->plen, &due) : 0;
        explicit_bzero(j->buf + j->ulen, j->plen);
        pthread_mutex_lock(&p->mu);
        p->running--;
        cw__authport *pt = j->port;
        int wake = 0;
        if (j->cancelled) {
            job_free(j);
        } else {
            j->ok = ok;
            j->due_ns = due;
            wake = post(j);
        }
        if (wake) {
            pthread_mutex_unlock(&p->mu);
            wake_port(pt);
            pthread_mutex_lock(&p->mu);
        }
        if (--pt->running == 0)   /* pt may be freed once this is seen */
            pthread_cond_broadcast(&p->idle);
    }
    pthread_mutex_unlock(&p->mu);
    free(cd);
    return NULL;
}

int cw__authpool_new(cw__auth *auth, int workers, int queue_max,
                     cw__authpool **out)
{
    if (!auth || !out || workers < 0 || queue_max < 0)
        return CW_EINVAL;
    *out = NULL;
    cw__authpool *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    int n = workers ? workers : cw__usable_cpus();
    p->threads = calloc((size_t)n, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return -ENOMEM;
    }
    p->auth = auth;
    p->queue_max = queue_max ? queue_max : 256 * n;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->idle, NULL);
    /* Workers inherit the creator's mask: block everything there, so a
     * SIGTERM meant for the loop's signalfd never lands on a worker. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = 0;
    for (; p->nthreads < n; p->nthreads++) {
        rc = pthread_create(&p->threads[p->nthreads], NULL, worker, p);
        if (rc)
            break;
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
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    /* Ports were freed first, so the queue is empty; be safe anyway. */
    while (p->queue.head) {
        cw__authjob *j = p->queue.head;
        junlink(&p->queue, j);
        job_free(j);
    }
    pthread_cond_destroy(&p->idle);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->mu);
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
    pthread_mutex_unlock(&p->mu);
}

/* ---- the loop's side ---- */

static void answer(cw__authport *pt, cw__authjob *j, struct jlist *from)
{
    junlink(from, j);
    pthread_mutex_lock(&pt->pool->mu);
    pt->pool->st.answered++;
    pt->pool->st.deferred -= j->state == J_DEFERRED;
    pthread_mutex_unlock(&pt->pool->mu);
    j->cb(j->data, j->ok, j->buf, j->ulen);
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
            j->state = J_DEFERRED;
            jpush(&pt->deferred, j);
            pthread_mutex_lock(&pt->pool->mu);
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
    while (pt->running)   /* bounded by one hash: the job cannot be stopped */
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
    pthread_cond_signal(&p->work);
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
        j->cancelled = 1;   /* the worker frees it */
        pthread_mutex_unlock(&p->mu);
        return;
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
    pthread_mutex_unlock(&p->mu);
    job_free(j);
}
