/* test_authpool.c - password checks on worker threads: answers on the
 * asking loop's thread and never inside the submitting call, the padding
 * held by a loop timer (not a worker), cancellation in every state of a
 * job, a full queue refused at once, ports freed with work in flight,
 * and two loops sharing one pool. Real threads and real crypt(3): run it
 * under helgrind too (scripts/valgrind.sh does). */
// cw-test-timeout: 240
// cw-test-serial: test_rescue_when_starved keeps every core busy on purpose,
// which would starve the checks of tests running beside it.
#include "cwtest.h"
#include "../src/server/auth.h"
#include "../src/server/authpool.h"

#include <crypt.h>
#include <dirent.h>
#include <stdatomic.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__aarch64__)
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/syscall.h>
#define HAVE_SECCOMP_TEST 1
#endif

/* Hashes made once: yescrypt (the default, slow) and cheap sha512. */
static char yes_hash[256], six_hash[256];

static cw__auth *new_auth(void)
{
    cw__auth *a;
    assert_int_equal(cw__auth_new(&a), CW_OK);
    assert_int_equal(cw__auth_add_hash(a, "yes", yes_hash), CW_OK);
    assert_int_equal(cw__auth_add_hash(a, "six", six_hash), CW_OK);
    return a;
}

/* What every test needs: credentials, a pool, a loop and its port. */
struct fx {
    cw__auth *a;
    cw__authpool *p;
    cw_loop *l;
    cw__authport *pt;
};

/* idle: the check threads at SCHED_IDLE (--auth-priority idle). */
static void fx_open_policy(struct fx *f, int workers, int queue, int idle)
{
    f->a = new_auth();
    assert_int_equal(cw__authpool_new(f->a, workers, queue, idle, &f->p), CW_OK);
    assert_int_equal(cw_loop_new(&f->l), CW_OK);
    assert_int_equal(cw__authport_new(f->p, f->l, &f->pt), CW_OK);
}

static void fx_open(struct fx *f, int workers, int queue)
{
    fx_open_policy(f, workers, queue, 0);
}

/* The pool's threads (a sanitizer may have threads of its own). */
static int pool_tasks(void)
{
    struct cwt_task t[64];
    int nt = cwt_tasks(getpid(), t, 64), n = 0;
    for (int i = 0; i < nt; i++)
        n += !strncmp(t[i].name, "cw-auth", 7);
    return n;
}

static void fx_close(struct fx *f)
{
    cw__authport_free(f->pt);
    cw__authpool_free(f->p);
    cw_loop_free(&f->l);
    cw__auth_free(f->a);
    /* A thread the free let go of (still hashing after 1 s: starved where
     * it could not be lifted, without CAP_SYS_NICE) keeps its port's
     * eventfd until its hash ends: wait for it, so the teardown counts
     * descriptors after it. */
    int64_t t0 = cw_now_ms();
    while (pool_tasks() > 0 && cw_now_ms() - t0 < 30000)
        cwt_sleep_ms(5);
}

struct rec {
    int done, ok, want;
    pthread_t thread;
    int in_submit;       /* set while cw__authport_submit runs */
    cw_loop *loop;
    int *stop_after;     /* stop the loop when this reaches 0 */
    int64_t at_ms;
};

static void on_answer(void *data, int ok)
{
    struct rec *r = data;
    assert_false(r->in_submit);
    r->done++;
    r->ok = ok;
    r->thread = pthread_self();
    r->at_ms = cw_now_ms();
    if (r->stop_after && --*r->stop_after == 0)
        cw_loop_stop(r->loop);
}

static cw__authjob *submit_cb(cw__authport *pt, const char *user, const char *pw,
                              struct rec *r, cw__authjob_cb *cb)
{
    cw__authjob *j = NULL;
    r->in_submit = 1;
    int rc = cw__authport_submit(pt, user, strlen(user), pw, strlen(pw), cb, r, &j);
    r->in_submit = 0;
    assert_int_equal(rc, CW_OK);
    assert_non_null(j);
    return j;
}

static cw__authjob *submit(cw__authport *pt, const char *user, const char *pw,
                           struct rec *r)
{
    return submit_cb(pt, user, pw, r, on_answer);
}

/* n records whose answers stop loop l once *left of them have come. */
static void recs_init(struct rec *r, int n, cw_loop *l, int *left)
{
    memset(r, 0, (size_t)n * sizeof *r);
    for (int i = 0; i < n; i++) {
        r[i].loop = l;
        r[i].stop_after = left;
    }
}

/* The pool's counters, checked to hold no job queued, running or
 * waiting for its padding. */
static struct cw__authpool_stats stats_idle(cw__authpool *p)
{
    struct cw__authpool_stats st;
    cw__authpool_stats(p, &st);
    assert_int_equal(st.queued + st.running + st.deferred, 0);
    return st;
}

static void on_guard(cw_loop *l, cw_timer *t)
{
    cw_loop_stop(l);
}

/* Run the loop until stop or timeout_ms. */
static void run_for(cw_loop *l, int timeout_ms)
{
    cw_timer guard = {0};
    cw_timer_start(l, &guard, cw_now_ms() + timeout_ms, on_guard);
    assert_int_equal(cw_loop_run(l), CW_OK);
    cw_timer_stop(l, &guard);
}

static void test_answers(void **state)
{
    struct fx f;
    fx_open(&f, 2, 0);
    assert_int_equal(cw__authpool_workers(f.p), 2);
    int left = 5;
    struct rec r[5];
    recs_init(r, 5, f.l, &left);
    const char *u[5] = {"yes", "six", "yes", "nobody", "six"};
    const char *pw[5] = {"pw-y", "pw-6", "wrong", "pw-y", ""};
    int want[5] = {1, 1, 0, 0, 0};
    for (int i = 0; i < 5; i++)
        submit(f.pt, u[i], pw[i], &r[i]);
    run_for(f.l, 60000);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(r[i].done, 1);
        assert_int_equal(r[i].ok, want[i]);
        assert_true(pthread_equal(r[i].thread, pthread_self()));
    }
    struct cw__authpool_stats st = stats_idle(f.p);
    assert_int_equal(st.submitted, 5);
    assert_int_equal(st.answered, 5);
    fx_close(&f);
}

/* A sha512 user is answered no sooner than a yescrypt check takes: the
 * padding is a loop timer (the worker is free meanwhile: a second check
 * on the one worker starts before the first is answered). */
static void test_padding_on_loop(void **state)
{
    struct fx f;
    fx_open(&f, 1, 0);
    cw__authpool *p = f.p;
    cw_loop *l = f.l;
    /* warm up (the first check calibrates), then time yescrypt */
    int64_t t0 = 0, yes_ms = 0;
    int left;
    for (int i = 0; i < 2; i++) {
        left = 1;
        struct rec w = {.loop = l, .stop_after = &left};
        t0 = cw_now_ms();
        submit(f.pt, "yes", "pw-y", &w);
        run_for(l, 60000);
        assert_int_equal(w.done, 1);
        yes_ms = w.at_ms - t0;
    }
    int deferred_seen = 0;
    for (int round = 0; round < 5 && !deferred_seen; round++) {
        left = 1;
        struct rec r = {.loop = l, .stop_after = &left};
        t0 = cw_now_ms();
        submit(f.pt, "six", "pw-6", &r);
        /* poll: the hash is done long before the answer is due */
        for (int i = 0; i < 2000 && !deferred_seen && !r.done; i++) {
            struct cw__authpool_stats st;
            cwt_sleep_ms(1);
            cw__authpool_stats(p, &st);
            if (st.queued == 0 && st.running == 0) {
                run_for(l, 0);   /* one iteration: take the posted answer */
                cw__authpool_stats(p, &st);
                deferred_seen = st.deferred == 1;
            }
        }
        run_for(l, 60000);
        assert_int_equal(r.done, 1);
        assert_int_equal(r.ok, 1);
        /* Generous: the running cost estimate falls slowly, never below
         * most of a yescrypt hash. */
        assert_true(r.at_ms - t0 >= yes_ms / 4);
    }
    assert_true(deferred_seen);
    fx_close(&f);
}

/* Cancel in every state: queued, running, posted, deferred, and from
 * another job's callback. A cancelled callback never runs. */
static cw__authjob *victim;
static void on_answer_cancel(void *data, int ok)
{
    on_answer(data, ok);
    if (victim)
        cw__authjob_cancel(victim);
    victim = NULL;
}

/* Jobs go to threads from a loop (at submit, or when a thread's answer
 * arrives: authpool.c): run l one iteration at a time until nothing is
 * queued. An answer posted after that waits until l runs again. */
static void dispatch_all(cw__authpool *p, cw_loop *l)
{
    for (int i = 0; i < 20000; i++) {
        struct cw__authpool_stats st;
        cw__authpool_stats(p, &st);
        if (st.queued == 0)
            return;
        cwt_sleep_ms(1);
        run_for(l, 0);
    }
    fail_msg("jobs stayed queued");
}

static void wait_idle(cw__authpool *p, cw_loop *l, int posted)
{
    dispatch_all(p, l);
    for (int i = 0; i < 20000; i++) {
        struct cw__authpool_stats st;
        cw__authpool_stats(p, &st);
        if (st.queued == 0 && st.running == 0 &&
            st.submitted - st.cancelled - st.answered - (uint64_t)st.deferred
                == (uint64_t)posted)
            return;
        cwt_sleep_ms(1);
    }
    fail_msg("pool never went idle");
}

static void test_cancel_every_state(void **state)
{
    struct fx f;
    fx_open(&f, 1, 0);
    cw__authpool *p = f.p;
    cw_loop *l = f.l;
    cw__authport *pt = f.pt;
    int left = 2;
    struct rec r[7];
    recs_init(r, 7, NULL, NULL);
    /* running and queued: the one worker takes the first */
    cw__authjob *j0 = submit(pt, "yes", "pw-y", &r[0]);
    cw__authjob *j1 = submit(pt, "yes", "pw-y", &r[1]);
    for (int i = 0; i < 5000; i++) {
        struct cw__authpool_stats st;
        cw__authpool_stats(p, &st);
        if (st.running == 1)
            break;
        cwt_sleep_ms(1);
        run_for(l, 0);   /* the first check waits for the calibration's post */
    }
    /* A job is the caller's until it is answered: under valgrind on a
     * loaded machine j0 was hashed and answered by run_for between two
     * polls, and cancelling it then was a use after free. */
    if (r[1].done)
        r[1].want = 1;
    else
        cw__authjob_cancel(j1);   /* queued */
    if (r[0].done)
        r[0].want = 1;
    else
        cw__authjob_cancel(j0);   /* running: the worker frees it */
    /* posted: hashed, not yet taken by the loop */
    cw__authjob *j2 = submit(pt, "six", "pw-6", &r[2]);
    wait_idle(p, l, 1);
    cw__authjob_cancel(j2);
    /* deferred: a sha512 answer waits for the yescrypt-sized padding */
    cw__authjob *j3 = submit(pt, "six", "pw-6", &r[3]);
    wait_idle(p, l, 1);
    run_for(l, 0);
    struct cw__authpool_stats st;
    cw__authpool_stats(p, &st);
    if (st.deferred == 1)
        cw__authjob_cancel(j3);
    else
        r[3].want = 1;   /* answered at once: the machine is slow now */
    /* from a callback: the victim, queued behind a yescrypt hash, is
     * still in the pool (running or queued) when the first answers */
    recs_init(&r[4], 1, l, &left);
    recs_init(&r[6], 1, l, &left);
    submit_cb(pt, "yes", "x", &r[4], on_answer_cancel);
    submit(pt, "yes", "pw-y", &r[6]);
    r[6].want = 1;
    victim = submit(pt, "six", "pw-6", &r[5]);
    run_for(l, 60000);
    run_for(l, 300);   /* anything wrongly left would answer now */
    assert_int_equal(r[4].done, 1);
    assert_int_equal(r[4].ok, 0);
    for (int i = 0; i < 7; i++)
        if (i != 4)
            assert_int_equal(r[i].done, r[i].want);
    st = stats_idle(p);
    assert_int_equal(st.cancelled + st.answered, st.submitted);
    fx_close(&f);
}

/* A full queue refuses at once with -EBUSY; what was accepted is
 * answered. */
static void test_full_queue(void **state)
{
    struct fx f;
    fx_open(&f, 1, 2);
    struct rec r[6];
    int accepted = 0, busy = 0, left = 0;
    recs_init(r, 6, f.l, &left);
    for (int i = 0; i < 6; i++) {
        cw__authjob *j;
        int rc = cw__authport_submit(f.pt, "yes", 3, "pw-y", 4, on_answer, &r[i], &j);
        if (rc == CW_OK) {
            accepted++;
            r[i].want = 1;
        } else {
            assert_int_equal(rc, -EBUSY);
            assert_null(j);
            busy++;
        }
    }
    /* at most one running and two waiting */
    assert_true(accepted >= 2 && accepted <= 3);
    assert_int_equal(accepted + busy, 6);
    left = accepted;
    run_for(f.l, 60000);
    for (int i = 0; i < 6; i++)
        assert_int_equal(r[i].done, r[i].want);
    assert_int_equal(stats_idle(f.p).busy, busy);
    fx_close(&f);
}

/* Freeing a port with queued and running work: no callback, no leak
 * (ASan and valgrind check the latter), and the pool goes on. */
static void test_port_free_in_flight(void **state)
{
    struct fx f;
    fx_open(&f, 2, 0);
    struct rec r[8];
    recs_init(r, 8, NULL, NULL);
    for (int i = 0; i < 8; i++)
        submit(f.pt, "yes", "pw-y", &r[i]);
    cwt_sleep_ms(5);
    cw__authport_free(f.pt);
    for (int i = 0; i < 8; i++)
        assert_int_equal(r[i].done, 0);
    assert_int_equal(stats_idle(f.p).cancelled, 8);
    /* a new port on the same pool works */
    assert_int_equal(cw__authport_new(f.p, f.l, &f.pt), CW_OK);
    int left = 1;
    struct rec ok = {.loop = f.l, .stop_after = &left};
    submit(f.pt, "six", "pw-6", &ok);
    run_for(f.l, 60000);
    assert_int_equal(ok.done, 1);
    assert_int_equal(ok.ok, 1);
    fx_close(&f);
}

/* Two loops on two threads share one pool: each gets its own answers, on
 * its own thread, with cancels mixed in. */
#define SHARED_JOBS 60
struct side {
    cw__authpool *pool;
    struct rec r[SHARED_JOBS];
    int answered;
};

static void *side_main(void *arg)
{
    struct side *sd = arg;
    cw_loop *l;
    if (cw_loop_new(&l) != CW_OK)
        return NULL;
    cw__authport *pt;
    if (cw__authport_new(sd->pool, l, &pt) != CW_OK) {
        cw_loop_free(&l);
        return NULL;
    }
    int left = 0;
    cw__authjob *jobs[SHARED_JOBS];
    for (int i = 0; i < SHARED_JOBS; i++) {
        struct rec *r = &sd->r[i];
        r->loop = l;
        r->stop_after = &left;
        const char *pw = i % 3 ? "pw-6" : "bad";
        if (cw__authport_submit(pt, "six", 3, pw, strlen(pw), on_answer, r,
                                &jobs[i]) != CW_OK)
            jobs[i] = NULL;
    }
    for (int i = 0; i < SHARED_JOBS; i++) {
        if (!jobs[i])
            continue;
        if (i % 4 == 0)
            cw__authjob_cancel(jobs[i]);
        else {
            sd->r[i].want = 1;
            left++;
        }
    }
    if (left) {
        cw_timer guard = {0};
        cw_timer_start(l, &guard, cw_now_ms() + 120000, on_guard);
        cw_loop_run(l);
        cw_timer_stop(l, &guard);
    }
    for (int i = 0; i < SHARED_JOBS; i++)
        if (sd->r[i].done == sd->r[i].want &&
            (!sd->r[i].done || pthread_equal(sd->r[i].thread, pthread_self())))
            sd->answered++;
    cw__authport_free(pt);
    cw_loop_free(&l);
    return NULL;
}

static void test_two_loops_share(void **state)
{
    cw__auth *a;
    assert_int_equal(cw__auth_new(&a), CW_OK);
    char cheap[256];
    assert_int_equal(cw_passwd_hash("pw-6", "$6$rounds=1000$", cheap, sizeof cheap), CW_OK);
    assert_int_equal(cw__auth_add_hash(a, "six", cheap), CW_OK);
    cw__authpool *p;
    assert_int_equal(cw__authpool_new(a, 2, SHARED_JOBS * 2, 0, &p), CW_OK);
    struct side *sd = calloc(2, sizeof *sd);
    assert_non_null(sd);
    sd[0].pool = sd[1].pool = p;
    pthread_t t0 = cwt_thread(side_main, &sd[0]);
    pthread_t t1 = cwt_thread(side_main, &sd[1]);
    cwt_join(t0);
    cwt_join(t1);
    assert_int_equal(sd[0].answered, SHARED_JOBS);
    assert_int_equal(sd[1].answered, SHARED_JOBS);
    struct cw__authpool_stats st = stats_idle(p);
    assert_int_equal(st.cancelled + st.answered, st.submitted);
    free(sd);
    cw__authpool_free(p);
    cw__auth_free(a);
}

/* ---- scheduling: SCHED_IDLE checks, nice-19 rescuers ---- */

/* The pool threads of this process as the kernel sees them: how many
 * "cw-auth" threads run policy check_policy and "cw-auth-rescue" ones
 * run SCHED_OTHER at nice 19 (sched_getscheduler, getpriority on each
 * tid). Returns the number of check threads; *rescuers the others. */
static int count_threads(int check_policy, int check_nice, int *rescuers)
{
    struct cwt_task t[64];
    int nt = cwt_tasks(getpid(), t, 64), checks = 0;
    *rescuers = 0;
    for (int i = 0; i < nt; i++) {
        pid_t tid = t[i].tid;
        errno = 0;
        int nice = getpriority(PRIO_PROCESS, (id_t)tid);
        assert_int_equal(errno, 0);
        if (!strcmp(t[i].name, "cw-auth")) {
            assert_int_equal(sched_getscheduler(tid), check_policy);
            if (check_policy != SCHED_IDLE)
                assert_int_equal(nice, check_nice);
            checks++;
        } else if (!strcmp(t[i].name, "cw-auth-rescue")) {
            assert_int_equal(sched_getscheduler(tid), SCHED_OTHER);
            assert_int_equal(nice, 19);
            (*rescuers)++;
        }
    }
    return checks;
}

/* One check answered: the pool works whatever its threads' policy. */
static void answer_one(struct fx *f)
{
    int left = 1;
    struct rec r = {.loop = f->l, .stop_after = &left};
    submit(f->pt, "six", "pw-6", &r);
    run_for(f->l, 60000);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.ok, 1);
}

/* Asked for idle, the check threads run SCHED_IDLE, the rescuers nice
 * 19, one each; by default all run nice 19. */
static void test_thread_policy(void **state)
{
    struct fx f;
    fx_open(&f, 2, 0);
    answer_one(&f);
    int rescuers, checks = count_threads(SCHED_OTHER, 19, &rescuers);
    assert_int_equal(checks, 2);
    assert_int_equal(rescuers, 2);
    assert_int_equal(stats_idle(f.p).idle_threads, 0);
    fx_close(&f);

    fx_open_policy(&f, 2, 0, 1);
    answer_one(&f);   /* every thread has set itself up by now */
    for (int i = 0; i < 1000; i++) {
        struct cw__authpool_stats st;
        cw__authpool_stats(f.p, &st);
        if (st.idle_threads == 2)
            break;
        cwt_sleep_ms(1);
    }
    checks = count_threads(SCHED_IDLE, 0, &rescuers);
    assert_int_equal(checks, 2);
    assert_int_equal(rescuers, 2);
    struct cw__authpool_stats st = stats_idle(f.p);
    assert_int_equal(st.idle_threads, 2);
    fx_close(&f);
}

#ifdef HAVE_SECCOMP_TEST
/* Refuse every scheduling-policy change with EPERM, as a container's
 * seccomp profile may: this thread and the threads it creates. */
static int refuse_sched_policy(void)
{
#ifdef __x86_64__
    const unsigned arch = AUDIT_ARCH_X86_64;
#else
    const unsigned arch = AUDIT_ARCH_AARCH64;
#endif
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_sched_setscheduler, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_sched_setattr, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
    };
    struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}
#endif

static int under_valgrind(void)
{
    const char *pre = getenv("LD_PRELOAD");
    return pre && strstr(pre, "valgrind");
}

/* Where SCHED_IDLE is refused the check threads fall back to nice 19 and
 * answer as before. In a child process, whose seccomp filter dies with
 * it. */
static void test_policy_refused(void **state)
{
#ifdef HAVE_SECCOMP_TEST
    if (under_valgrind()) {   /* it runs the filter on its own calls */
        printf("# skipped under valgrind\n");
        return;
    }
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(60);
        if (refuse_sched_policy() < 0)
            _exit(3);
        struct sched_param sp = {0};
        if (sched_setscheduler(0, SCHED_IDLE, &sp) == 0 || errno != EPERM)
            _exit(4);   /* the filter does not work here */
        struct fx f;
        fx_open_policy(&f, 2, 0, 1);
        answer_one(&f);
        int rescuers, checks = count_threads(SCHED_OTHER, 19, &rescuers);
        struct cw__authpool_stats st;
        cw__authpool_stats(f.p, &st);
        fx_close(&f);
        _exit(checks == 2 && rescuers == 2 && st.idle_threads == 0 ? 0 : 5);
    }
    cwt_track(pid);
    assert_int_equal(cwt_wait(pid, 60000), 0);
#else
    printf("# skipped: no seccomp filter for this architecture here\n");
#endif
}

/* A nice-0 busy loop pinned to each CPU this process may use: child
 * processes that end with cwt_kill, with this test (PDEATHSIG, and
 * teardown kills tracked children), or after 30 s by themselves. */
static int burners_start(pid_t *pids, int max)
{
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    int n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && n < max; cpu++) {
        if (!CPU_ISSET(cpu, &set))
            continue;
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            alarm(30);
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            sched_setaffinity(0, sizeof one, &one);
            for (volatile unsigned long spin = 0;; spin++) {
            }
        }
        cwt_track(pid);
        pids[n++] = pid;
    }
    return n;
}

/* A machine kept busy by other programs (a nice-0 busy loop on every
 * core) starves the SCHED_IDLE check thread: a yescrypt check took 11.5 s
 * there (20 ms of CPU at 0.17 % of a core) without the rescuers. A
 * rescuer hashes it at nice 19 instead, in 2-5 s on this 2-core machine
 * under load 6 (within the server's 10 s login timeout); a machine busier
 * still gives nice 19 less. */
static void test_rescue_when_starved(void **state)
{
    if (under_valgrind()) {   /* one thread at a time: a starved thread holds them all */
        printf("# skipped under valgrind\n");
        return;
    }
    struct fx f;
    fx_open_policy(&f, 1, 0, 1);
    answer_one(&f);   /* calibrated now, not under the burners */
    pid_t burners[CPU_SETSIZE];
    int nb = burners_start(burners, CPU_SETSIZE);
    cwt_sleep_ms(20);
    int left = 1;
    struct rec r = {.loop = f.l, .stop_after = &left};
    int64_t t0 = cw_now_ms();
    submit(f.pt, "yes", "pw-y", &r);
    run_for(f.l, 30000);
    int64_t took = cw_now_ms() - t0;
    struct cw__authpool_stats st;
    cw__authpool_stats(f.p, &st);
    for (int i = 0; i < nb; i++)
        cwt_kill(burners[i]);
    print_message("# starved: yescrypt check answered after %lld ms, %llu rescued\n",
                  (long long)took, (unsigned long long)st.rescued);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.ok, 1);
    /* The rescue is the check (without the rescuers: 0 rescued, 12 s);
     * its time is printed, not bounded: with other programs' busy loops
     * beside this test's burners a nice-19 rescuer took 10.1 s once, and
     * run_for's 30 s is the hang guard. */
    assert_int_equal(st.rescued, 1);
    fx_close(&f);   /* the check thread's own hash ends now, at full speed */
}

/* ---- a thread starved inside its post ---- */

static _Atomic int block_stage = -1;   /* the threads stop there */
static _Atomic int block_slots;        /* 1: check threads, 3: rescuers too */
static _Atomic int blocked;

/* Plays a thread starved in post(): it sleeps, using no CPU. */
static void post_hook(int slot, int stage)
{
    if (!(atomic_load(&block_slots) & (1 << slot)) || atomic_load(&block_stage) != stage)
        return;
    atomic_store(&blocked, 1);
    while (atomic_load(&block_stage) == stage)
        cwt_sleep_ms(5);
}

/* One check whose check thread stops at stage: answered within 5 s;
 * returns how many were rescued. The thread then posts late: the second
 * answer is ignored and the job freed once (ASan, stats). */
static uint64_t starved_in_post(int stage, int slots)
{
    cw__authpool_post_hook = post_hook;   /* before the threads start */
    struct fx f;
    fx_open(&f, 1, 0);
    answer_one(&f);   /* calibrated */
    atomic_store(&blocked, 0);
    atomic_store(&block_slots, slots);
    atomic_store(&block_stage, stage);
    int left = 1;
    struct rec r = {.loop = f.l, .stop_after = &left};
    submit(f.pt, "six", "pw-6", &r);
    run_for(f.l, 5000);
    int was_blocked = atomic_load(&blocked), done = r.done;
    atomic_store(&block_stage, -1);
    run_for(f.l, 300);   /* the late post */
    struct cw__authpool_stats st = stats_idle(f.p);
    assert_true(was_blocked);
    assert_int_equal(done, 1);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.ok, 1);
    assert_int_equal(st.answered, 2);
    fx_close(&f);
    cw__authpool_post_hook = NULL;
    return st.rescued;
}

/* Starved after it marked the job hashed, before its push: the answer
 * is the thread's alone until a rescuer hashes the job too. */
static void test_starved_before_push(void **state)
{
    assert_int_equal(starved_in_post(0, 1), 1);
}

/* Starved after its push, before its eventfd write: the answer is on
 * the stack and the loop's watch timer takes it (no rescue needed; a
 * rescuer would stop there too, so only the timer can wake the loop). */
static void test_starved_before_wake(void **state)
{
    assert_int_equal(starved_in_post(1, 3), 0);
}

/* ---- check threads take no lock a loop takes ---- */

struct holder {
    cw__auth *a;
    char setting[128];
    _Atomic int done;
};

/* Adds a user whose bcrypt hash (cost 14, ~1 s here) auth.c checks
 * while it holds the table's mutex, the one loops take. */
static void *hold_auth(void *arg)
{
    struct holder *h = arg;
    cw__auth_add_hash(h->a, "slowpoke", h->setting);
    atomic_store(&h->done, 1);
    return NULL;
}

/* A check thread hashes and posts while auth.c's mutex is held all along
 * (a slow cw__auth_add_hash, 300 sha512 hashes long: room for a nice-19
 * thread on a loaded machine): it needs no lock a loop takes. Before, it took that mutex to look the user up and to
 * compute the padding, and a check thread starved while holding it made
 * the loops wait (docs/BENCHMARKS.md, "The check threads' policy"). */
static void test_threads_take_no_auth_lock(void **state)
{
    if (under_valgrind()) {   /* 50 s of bcrypt there */
        printf("# skipped under valgrind\n");
        return;
    }
    struct fx f;
    fx_open(&f, 1, 0);
    answer_one(&f);   /* calibrated, threads started */
    struct holder *h = calloc(1, sizeof *h);
    assert_non_null(h);
    h->a = f.a;
    assert_non_null(crypt_gensalt_rn("$2b$", 14, NULL, 0, h->setting, sizeof h->setting));
    int left = 1;
    struct rec r = {.loop = f.l, .stop_after = &left};
    submit(f.pt, "six", "pw-6", &r);   /* handed to the idle thread at once */
    pthread_t t = cwt_thread(hold_auth, h);
    int hashed_first = 0;
    for (int i = 0; i < 60000 && !atomic_load(&h->done); i++) {
        struct cw__authpool_stats st;
        cw__authpool_stats(f.p, &st);   /* takes only the pool's mutex */
        if (st.queued == 0 && st.running == 0) {
            hashed_first = !atomic_load(&h->done);
            break;
        }
        cwt_sleep_ms(1);
    }
    cwt_join(t);
    run_for(f.l, 60000);
    if (!hashed_first) {
        struct cw__authpool_stats st;
        cw__authpool_stats(f.p, &st);
        print_message("# not hashed while auth.c's mutex was held: queued %d running %d\n",
                      st.queued, st.running);
    }
    assert_true(hashed_first);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.ok, 1);
    free(h);
    /* The slowpoke made the table time its methods again (a rescuer
     * hashes bcrypt 14, ~1 s); a check waits for that. Without it the
     * pool's free would let go of the rescuer after 1 s, its eventfd
     * open until it ends: the teardown would count a descriptor. */
    answer_one(&f);
    fx_close(&f);
}

/* Logins keep coming while the SCHED_IDLE check threads are starved (a
 * nice-0 busy loop on every core): the loop's calls into the pool never
 * wait for a starved thread, and the loop keeps its pace. The bound is
 * generous (a loop at nice 0 shares its core with a busy loop); the
 * inversion this guards against lasted 16-390 ms, up to seconds. */
#define STORM_SLOTS 8
struct storm {
    struct fx *f;
    cw_timer tick;
    cw__authjob *job[STORM_SLOTS];
    int n, answered;
    int64_t last_ns, max_gap_ns, max_call_ns, end_ms;
};

static void on_storm_answer(void *data, int ok)
{
    cw__authjob **slot = data;
    *slot = NULL;
}

static void on_storm_tick(cw_loop *l, cw_timer *t)
{
    struct storm *s = t->data;
    int64_t now = cw__auth_now_ns();
    if (s->last_ns && now - s->last_ns > s->max_gap_ns)
        s->max_gap_ns = now - s->last_ns;
    cw__authjob **slot = &s->job[s->n++ % STORM_SLOTS];
    int64_t t0 = cw__auth_now_ns();
    if (*slot) {
        cw__authjob_cancel(*slot);
        *slot = NULL;
    } else {
        int rc = cw__authport_submit(s->f->pt, "six", 3, "pw-6", 4, on_storm_answer,
                                     slot, slot);
        assert_int_equal(rc, CW_OK);
    }
    int64_t took = cw__auth_now_ns() - t0;
    if (took > s->max_call_ns)
        s->max_call_ns = took;
    s->last_ns = cw__auth_now_ns();
    if (cw_now_ms() >= s->end_ms)
        cw_loop_stop(l);
    else
        cw_timer_start(l, t, cw_now_ms() + 2, on_storm_tick);
}

static void test_starved_checks_never_block_loop(void **state)
{
    if (under_valgrind()) {   /* one thread at a time: a starved thread holds them all */
        printf("# skipped under valgrind\n");
        return;
    }
    struct fx f;
    fx_open_policy(&f, 2, 0, 1);
    answer_one(&f);
    pid_t burners[CPU_SETSIZE];
    int nb = burners_start(burners, CPU_SETSIZE);
    struct storm *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->f = &f;
    s->end_ms = cw_now_ms() + 3000;
    s->tick.data = s;
    cw_timer_start(f.l, &s->tick, cw_now_ms(), on_storm_tick);
    assert_int_equal(cw_loop_run(f.l), CW_OK);
    for (int i = 0; i < nb; i++)
        cwt_kill(burners[i]);
    for (int i = 0; i < STORM_SLOTS; i++)
        cw__authjob_cancel(s->job[i]);
    print_message("# starved checks: %d ticks, longest pool call %.2f ms, longest gap %.2f ms\n",
                  s->n, s->max_call_ns / 1e6, s->max_gap_ns / 1e6);
    assert_true(s->n >= 100);
    assert_true(s->max_call_ns < 100 * 1000000LL);
    assert_true(s->max_gap_ns < 250 * 1000000LL);
    free(s);
    fx_close(&f);
}

/* ---- shutdown while a starved thread hashes ---- */

/* ns the thread has run (schedstat's first field), -1 if unreadable. */
static long long task_cpu_ns(pid_t tid)
{
    char path[64], buf[128];
    snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", (int)tid);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return -1;
    long long ns = -1;
    if (!fgets(buf, sizeof buf, fp) || sscanf(buf, "%lld", &ns) != 1)
        ns = -1;
    fclose(fp);
    return ns;
}

static pid_t find_task(const char *name)
{
    struct cwt_task t[64];
    int nt = cwt_tasks(getpid(), t, 64);
    for (int i = 0; i < nt; i++)
        if (!strcmp(t[i].name, name))
            return t[i].tid;
    return 0;
}

/* On a thread of its own (nice is per thread): nice 19 cannot go back
 * to 0. */
static void *nice_back_refused(void *arg)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    int *refused = arg;
    *refused = setpriority(PRIO_PROCESS, (id_t)tid, 19) == 0 &&
               setpriority(PRIO_PROCESS, (id_t)tid, 0) < 0 && errno == EACCES;
    return NULL;
}

/* Drop CAP_SYS_NICE from this thread's sets (threads created later
 * inherit it) and RLIMIT_NICE to 0: an unprivileged server's threads. */
static int drop_nice_privilege(void)
{
    struct __user_cap_header_struct hd = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &hd, d) < 0)
        return -1;
    int i = CAP_TO_INDEX(CAP_SYS_NICE);
    d[i].effective &= ~CAP_TO_MASK(CAP_SYS_NICE);
    d[i].permitted &= ~CAP_TO_MASK(CAP_SYS_NICE);
    d[i].inheritable &= ~CAP_TO_MASK(CAP_SYS_NICE);
    struct rlimit rl = {0, 0};
    if (syscall(SYS_capset, &hd, d) < 0 || setrlimit(RLIMIT_NICE, &rl) < 0)
        return -1;
    int refused = 0;
    cwt_join(cwt_thread(nice_back_refused, &refused));
    return refused ? 0 : -1;
}

/* In a child (its capabilities and burners its own): a yescrypt check
 * hashing on a starved SCHED_IDLE check thread (a nice-0 busy loop on
 * every core), then the port and the pool freed. Writes how long the
 * pool's free took (ms) and, without the privilege, how long until the
 * let-go thread had closed what it held, to fd; exits 0 when all went as
 * it should. */
static void starved_free_child(int fd, int privileged)
{
    alarm(120);
    if (!privileged && drop_nice_privilege() < 0)
        _exit(3);
    int fds0 = cwt_fd_count();
    struct fx f;
    fx_open_policy(&f, 1, 0, 1);
    answer_one(&f);   /* calibrated, threads started */
    pid_t check = find_task("cw-auth");
    if (!check || sched_getscheduler(check) != SCHED_IDLE)
        _exit(4);
    pid_t burners[CPU_SETSIZE];
    int nb = burners_start(burners, CPU_SETSIZE);
    cwt_sleep_ms(20);
    long long cpu0 = task_cpu_ns(check);
    struct rec r = {0};
    submit(f.pt, "yes", "pw-y", &r);   /* on the check thread at once */
    /* mid-hash: it ran a little (1 ms of a yescrypt's ~20) and is not done */
    int64_t t0 = cw_now_ms();
    while (task_cpu_ns(check) - cpu0 < 1000000 && cw_now_ms() - t0 < 20000)
        cwt_sleep_ms(5);
    struct cw__authpool_stats st;
    cw__authpool_stats(f.p, &st);
    int midhash = st.running == 1 && task_cpu_ns(check) - cpu0 >= 1000000;
    cw__authport_free(f.pt);
    t0 = cw_now_ms();
    cw__authpool_free(f.p);
    long long took[3] = {cw_now_ms() - t0, 0, pool_tasks()};
    for (int i = 0; i < nb; i++)
        cwt_kill(burners[i]);
    cw_loop_free(&f.l);
    cw__auth_free(f.a);   /* a let-go thread reads nothing of it */
    /* A thread let go of closes the port's eventfd and frees the pool
     * itself when its hash ends: everything is back, threads and fds. */
    t0 = cw_now_ms();
    while ((pool_tasks() > 0 || cwt_fd_count() != fds0) &&
           cw_now_ms() - t0 < 20000)
        cwt_sleep_ms(5);
    took[1] = cw_now_ms() - t0;
    int back = pool_tasks() == 0 && cwt_fd_count() == fds0;
    if (write(fd, took, sizeof took) != sizeof took)
        _exit(5);
    _exit(!midhash ? 6 : !back ? 7 : r.done ? 8 : 0);
}

/* The pool's free returns within its bound with a yescrypt check in
 * flight on a starved SCHED_IDLE thread: before, it joined that thread
 * for as long as the hash took at SCHED_IDLE's share (seconds). With the
 * privilege (root, or CAP_SYS_NICE) the threads are lifted to nice 0 and
 * the hash ends at a normal share; without it they are let go after the
 * bound and the last one frees what they used (checked: threads and
 * descriptors back, ASan sees no use after free). */
static void starved_free(int privileged)
{
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        starved_free_child(pfd[1], privileged);
    }
    close(pfd[1]);
    cwt_track(pid);
    int status = cwt_wait(pid, 150000);
    long long took[3] = {-1, -1, -1};
    ssize_t n = read(pfd[0], took, sizeof took);
    close(pfd[0]);
    print_message("# %s: pool freed %lld ms after a starved thread's hash began; "
                  "%lld threads let go, all back %lld ms after the busy loops ended (status %d)\n",
                  privileged ? "privileged" : "unprivileged", took[0], took[2], took[1], status);
    assert_int_equal(n, (ssize_t)sizeof took);
    assert_int_equal(status, 0);
    /* The bound is 1 s (authpool.c: JOIN_MS); room for a loaded machine. */
    assert_true(took[0] < 3000);
    /* Unlifted, the check thread (its hash needs seconds at SCHED_IDLE's
     * share) was still running when the free returned: let go. */
    if (!privileged)
        assert_true(took[2] >= 1);
}

static void test_free_when_starved(void **state)
{
    if (under_valgrind()) {   /* one thread at a time: a starved thread holds them all */
        printf("# skipped under valgrind\n");
        return;
    }
    starved_free(1);
    starved_free(0);
}

static void test_bad_args(void **state)
{
    cw__authpool *p;
    assert_int_equal(cw__authpool_new(NULL, 1, 0, 0, &p), CW_EINVAL);
    cw__auth *a = new_auth();
    assert_int_equal(cw__authpool_new(a, -1, 0, 0, &p), CW_EINVAL);
    assert_int_equal(cw__authpool_new(a, 0, 0, 1, &p), CW_OK);   /* CPUs */
    assert_true(cw__authpool_workers(p) >= 1);
    assert_int_equal(cw__authport_new(p, NULL, NULL), CW_EINVAL);
    cw__authjob_cancel(NULL);
    cw__authpool_free(p);
    cw__authpool_free(NULL);
    cw__auth_free(a);
}

int main(void)
{
    cwt_private_netns();
    if (cw_passwd_hash("pw-y", NULL, yes_hash, sizeof yes_hash) != CW_OK ||
        cw_passwd_hash("pw-6", "$6$", six_hash, sizeof six_hash) != CW_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_answers),
        CWT_TEST(test_padding_on_loop),
        CWT_TEST(test_cancel_every_state),
        CWT_TEST(test_full_queue),
        CWT_TEST(test_port_free_in_flight),
        CWT_TEST(test_two_loops_share),
        CWT_TEST(test_thread_policy),
        CWT_TEST(test_policy_refused),
        CWT_TEST(test_rescue_when_starved),
        CWT_TEST(test_starved_before_push),
        CWT_TEST(test_starved_before_wake),
        CWT_TEST(test_threads_take_no_auth_lock),
        CWT_TEST(test_starved_checks_never_block_loop),
        CWT_TEST(test_free_when_starved),
        CWT_TEST(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
