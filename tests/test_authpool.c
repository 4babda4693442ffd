/* test_authpool.c - password checks on worker threads: answers on the
 * asking loop's thread and never inside the submitting call, the padding
 * held by a loop timer (not a worker), cancellation in every state of a
 * job, a full queue refused at once, ports freed with work in flight,
 * and two loops sharing one pool. Real threads and real crypt(3): run it
 * under helgrind too (scripts/valgrind.sh does). */
// cw-test-timeout: 240
#include "cwtest.h"
#include "../src/server/auth.h"
#include "../src/server/authpool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

static void fx_open(struct fx *f, int workers, int queue)
{
    f->a = new_auth();
    assert_int_equal(cw__authpool_new(f->a, workers, queue, &f->p), CW_OK);
    assert_int_equal(cw_loop_new(&f->l), CW_OK);
    assert_int_equal(cw__authport_new(f->p, f->l, &f->pt), CW_OK);
}

static void fx_close(struct fx *f)
{
    cw__authport_free(f->pt);
    cw__authpool_free(f->p);
    cw_loop_free(&f->l);
    cw__auth_free(f->a);
}

struct rec {
    int done, ok, want;
    pthread_t thread;
    int in_submit;       /* set while cw__authport_submit runs */
    cw_loop *loop;
    int *stop_after;     /* stop the loop when this reaches 0 */
    int64_t at_ms;
};

static void on_answer(void *data, int ok, const char *user, size_t ulen)
{
    assert_true(ulen > 0 && ulen < 16 && user[0] != '\0');
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
static void on_answer_cancel(void *data, int ok, const char *user, size_t ulen)
{
    on_answer(data, ok, user, ulen);
    if (victim)
        cw__authjob_cancel(victim);
    victim = NULL;
}

static void wait_idle(cw__authpool *p, int posted)
{
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
    }
    cw__authjob_cancel(j1);   /* queued */
    cw__authjob_cancel(j0);   /* running: the worker frees it */
    /* posted: hashed, not yet taken by the loop */
    cw__authjob *j2 = submit(pt, "six", "pw-6", &r[2]);
    wait_idle(p, 1);
    cw__authjob_cancel(j2);
    /* deferred: a sha512 answer waits for the yescrypt-sized padding */
    cw__authjob *j3 = submit(pt, "six", "pw-6", &r[3]);
    wait_idle(p, 1);
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
    assert_int_equal(cw__authpool_new(a, 2, SHARED_JOBS * 2, &p), CW_OK);
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

static void test_bad_args(void **state)
{
    cw__authpool *p;
    assert_int_equal(cw__authpool_new(NULL, 1, 0, &p), CW_EINVAL);
    cw__auth *a = new_auth();
    assert_int_equal(cw__authpool_new(a, -1, 0, &p), CW_EINVAL);
    assert_int_equal(cw__authpool_new(a, 0, 0, &p), CW_OK);   /* CPUs */
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
        CWT_TEST(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
