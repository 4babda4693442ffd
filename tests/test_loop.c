/* test_loop.c - the event loop: timers in deadline order, a peer's FIN and
 * RST seen while reads are paused (once, without spinning), SO_ERROR on
 * EPOLLERR, watchers stopped mid-batch, stop from a thread and from
 * SIGTERM, and no busy loop. */
#include "cwtest.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct fired {
    int order[8];
    int n;
};

struct tmr {
    cw_timer t;
    int id;
    struct fired *log;
};

static void on_tmr(cw_loop *l, cw_timer *t)
{
    struct tmr *x = (struct tmr *)t;
    x->log->order[x->log->n++] = x->id;
    if (x->log->n == 3)
        cw_loop_stop(l);
}

static void test_timers_in_order(void **state)
{
    cw_loop *l;
    assert_int_equal(cw_loop_new(&l), CW_OK);
    struct fired log = {{0}, 0};
    struct tmr t[5];
    memset(t, 0, sizeof t);
    int64_t now = cw_now_ms();
    /* Timer 2 is left far behind the others: cw_loop_stop() ends the run
     * after the current iteration, and every timer due by then fires in
     * it; at now + 80 a 20 ms stall of this thread (1 in ~20 runs under
     * load) made it due in the same pass as timer 4. */
    int64_t when[5] = {now + 120, now + 40, now + 2000, now + 10, now + 60};
    for (int i = 0; i < 5; i++) {
        t[i].id = i;
        t[i].log = &log;
        assert_int_equal(cw_timer_start(l, &t[i].t, when[i], on_tmr), CW_OK);
    }
    assert_int_equal(cw_timer_stop(l, &t[3].t), CW_OK);   /* never fires */
    assert_int_equal(cw_timer_stop(l, &t[3].t), CW_OK);   /* idempotent */
    assert_false(cw_timer_active(&t[3].t));
    /* moving a started timer: 0 goes from last to first */
    assert_int_equal(cw_timer_start(l, &t[0].t, now + 20, on_tmr), CW_OK);
    assert_int_equal(cw_loop_run(l), CW_OK);
    assert_int_equal(log.n, 3);
    assert_int_equal(log.order[0], 0);
    assert_int_equal(log.order[1], 1);
    assert_int_equal(log.order[2], 4);
    assert_true(cw_now_ms() - now >= 60);
    assert_true(cw_timer_active(&t[2].t));
    assert_int_equal(cw_loop_free(&l), CW_OK);
    assert_null(l);
    assert_int_equal(cw_loop_free(&l), CW_EINVAL);
}

/* Many timers with random deadlines, some stopped, some moved: the loop
 * fires every remaining one exactly once, in deadline order. */
static int64_t heap_last;
static int heap_fired, heap_want, heap_disorder;

static void on_heap_tmr(cw_loop *l, cw_timer *t)
{
    if (t->deadline < heap_last)
        heap_disorder++;
    heap_last = t->deadline;
    if (++heap_fired == heap_want)
        cw_loop_stop(l);
}

static void test_timer_heap_stress(void **state)
{
    cw_loop *l;
    assert_int_equal(cw_loop_new(&l), CW_OK);
    enum { N = 3000 };
    cw_timer *t = calloc(N, sizeof *t);
    assert_non_null(t);
    srand(7);
    /* All already due. cw_now_ms() counts from boot: on a machine up for
     * less than a minute "now - 100 s" would be negative (CW_NEVER), which
     * once hung this test on a freshly booted CI machine. */
    int64_t now = cw_now_ms(), span = now < 50000 ? now + 1 : 50000;
    int64_t base = now - span + 1;
    for (int i = 0; i < N; i++)
        assert_int_equal(cw_timer_start(l, &t[i], base + rand() % span, on_heap_tmr), CW_OK);
    for (int i = 0; i < N; i += 3)
        assert_int_equal(cw_timer_stop(l, &t[i]), CW_OK);
    for (int i = 1; i < N; i += 3)
        assert_int_equal(cw_timer_start(l, &t[i], base + rand() % span, on_heap_tmr), CW_OK);
    /* CW_NEVER is refused: at the top of the heap it would hide the rest. */
    cw_timer never = {0};
    assert_int_equal(cw_timer_start(l, &never, CW_NEVER, on_heap_tmr), CW_EINVAL);
    assert_false(cw_timer_active(&never));
    heap_last = INT64_MIN;
    heap_fired = heap_disorder = 0;
    heap_want = N - (N + 2) / 3;
    assert_int_equal(cw_loop_run(l), CW_OK);
    assert_int_equal(heap_fired, heap_want);
    assert_int_equal(heap_disorder, 0);
    for (int i = 0; i < N; i++)
        assert_false(cw_timer_active(&t[i]));
    free(t);
    cw_loop_free(&l);
}

struct watch {
    cw_io io;
    unsigned events_or;
    int calls;
    int hup_calls;
    int err;
};

static void on_watch(cw_loop *l, cw_io *io, unsigned ev)
{
    struct watch *w = (struct watch *)io;
    w->events_or |= ev;
    w->calls++;
    if (ev & CW_EV_HUP)
        w->hup_calls++;
    if (ev & CW_EV_ERROR)
        w->err = io->err;
}

static void on_stop_timer(cw_loop *l, cw_timer *t)
{
    cw_loop_stop(l);
}

/* Run the loop for ms milliseconds. */
static void run_for(cw_loop *l, int ms)
{
    cw_timer t;
    memset(&t, 0, sizeof t);
    cw_timer_start(l, &t, cw_now_ms() + ms, on_stop_timer);
    assert_int_equal(cw_loop_run(l), CW_OK);
    cw_timer_stop(l, &t);
}

/* The seed's blind spot: the application is not reading (interest 0),
 * and the peer closes. The loop still reports it, exactly once, and does
 * not spin on the level-triggered condition. */
static void test_fin_seen_while_paused(void **state)
{
    cw_conn *c;
    int sfd;
    cwt_pair_raw(NULL, &c, &sfd);
    cw_loop *l;
    assert_int_equal(cw_loop_new(&l), CW_OK);
    struct watch w;
    memset(&w, 0, sizeof w);
    w.io.fd = sfd;
    assert_int_equal(cw_io_start(l, &w.io, 0, on_watch), CW_OK);
    assert_int_equal(cw_io_start(l, &w.io, 0, on_watch), CW_EINVAL);
    run_for(l, 50);
    assert_int_equal(w.calls, 0);
    assert_int_equal(cw_send_all(c, "unread", 6, cw_now_ms() + 1000), CW_OK);
    assert_int_equal(cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms()), CW_ETIMEDOUT);
    uint64_t it0 = cw_loop_iterations(l);
    run_for(l, 300);
    assert_int_equal(w.hup_calls, 1);
    assert_int_equal(w.calls, 1);
    assert_false(w.events_or & CW_EV_READ);   /* reads stayed paused */
    assert_true(cw_loop_iterations(l) - it0 <= 4);   /* no spinning */
    /* resuming reads finds the data, then the EOF */
    assert_int_equal(cw_io_set(l, &w.io, CW_IO_READ), CW_OK);
    run_for(l, 20);
    assert_true(w.events_or & CW_EV_READ);
    char buf[16];
    assert_int_equal(recv(sfd, buf, sizeof buf, 0), 6);
    assert_int_equal(recv(sfd, buf, sizeof buf, 0), 0);
    assert_int_equal(cw_io_stop(l, &w.io), CW_OK);
    assert_int_equal(cw_io_stop(l, &w.io), CW_OK);
    close(sfd);
    cw_loop_free(&l);
}

/* RST while paused: reported as an error with SO_ERROR's ECONNRESET. */
static void test_reset_seen_while_paused(void **state)
{
    cw_conn *c;
    int sfd;
    cwt_pair_raw(NULL, &c, &sfd);
    cw_loop *l;
    assert_int_equal(cw_loop_new(&l), CW_OK);
    struct watch w;
    memset(&w, 0, sizeof w);
    w.io.fd = sfd;
    assert_int_equal(cw_io_start(l, &w.io, CW_IO_WRITE, on_watch), CW_OK);
    run_for(l, 20);
    assert_true(w.events_or & CW_EV_WRITE);
    assert_int_equal(cw_io_set(l, &w.io, 0), CW_OK);
    w.events_or = 0;
    assert_int_equal(cw_close(&c, CW_CLOSE_ABORT, CW_NEVER), CW_OK);
    run_for(l, 50);
    assert_true(w.events_or & CW_EV_ERROR);
    assert_true(w.events_or & CW_EV_HUP);
    assert_int_equal(w.err, -ECONNRESET);
    cw_io_stop(l, &w.io);
    close(sfd);
    cw_loop_free(&l);
}

/* A callback closes and frees another watcher whose event is in the same
 * batch: the freed watcher must not be called (ASan would see it). */
struct pairw {
    cw_io io;
    struct pairw *other;
    int *calls;
};

static void on_pair(cw_loop *l, cw_io *io, unsigned ev)
{
    struct pairw *p = (struct pairw *)io;
    (*p->calls)++;
    char ch;
    assert_int_equal(read(io->fd, &ch, 1), 1);   /* not level-triggered again */
    struct pairw *o = p->other;
    if (o) {
        cw_io_stop(l, &o->io);
        close(o->io.fd);
        o->other = NULL;
        free(o);
        p->other = NULL;
    }
}

static void test_stop_other_in_same_batch(void **state)
{
    int a[2], b[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b), 0);
    assert_int_equal(write(a[1], "x", 1), 1);
    assert_int_equal(write(b[1], "x", 1), 1);
    cw_loop *l;
    assert_int_equal(cw_loop_new(&l), CW_OK);
    int calls = 0;
    struct pairw *p = calloc(1, sizeof *p), *q = calloc(1, sizeof *q);
    p->io.fd = a[0];
    q->io.fd = b[0];
    p->other = q;
    q->other = p;
    p->calls = q->calls = &calls;
    assert_int_equal(cw_io_start(l, &p->io, CW_IO_READ, on_pair), CW_OK);
    assert_int_equal(cw_io_start(l, &q->io, CW_IO_READ, on_pair), CW_OK);
    cw_timer t;
    memset(&t, 0, sizeof t);
    cw_timer_start(l, &t, cw_now_ms(), on_stop_timer);   /* one iteration */
    assert_int_equal(cw_loop_run(l), CW_OK);
    assert_int_equal(calls, 1);   /* the survivor ran, the freed one did not */
    cw_loop_free(&l);
    /* exactly one of p, q was freed; the survivor still owns its fd */
    int fds_left = (fcntl(a[0], F_GETFD) >= 0) + (fcntl(b[0], F_GETFD) >= 0);
    assert_int_equal(fds_left, 1);
    if (fcntl(a[0], F_GETFD) >= 0) {
        close(a[0]);
        free(p);
    } else {
        close(b[0]);
        free(q);
    }
    close(a[1]);
    close(b[1]);
}

static void *stop_later(void *arg)
{
    cwt_sleep_ms(150);
    cw_loop_stop(arg);
    return NULL;
}

/* Nothing to do: the loop sleeps (a couple of iterations), and a stop from
 * another thread wakes it at once. */
static void test_idle_loop_sleeps(void **state)
{
    cw_loop *l;
    assert_int_equal(cw_loop_new(&l), CW_OK);
    int64_t t0 = cw_now_ms();   /* before the thread's 150 ms start */
    pthread_t t = cwt_thread(stop_later, l);
    assert_int_equal(cw_loop_run(l), CW_OK);
    int64_t took = cw_now_ms() - t0;
    cwt_join(t);
    assert_true(took >= 140 && took < 2000);
    assert_true(cw_loop_iterations(l) <= 2);
    cw_loop_free(&l);
}

static void on_sig(cw_loop *l, int signo, void *data)
{
    *(int *)data = signo;
    cw_loop_stop(l);
}

static void test_sigterm_stops_cleanly(void **state)
{
    cw_loop *l;
    assert_int_equal(cw_loop_new(&l), CW_OK);
    int got = 0;
    assert_int_equal(cw_loop_signals(l, on_sig, &got), CW_OK);
    assert_int_equal(cw_loop_signals(l, on_sig, &got), CW_EINVAL);
    kill(getpid(), SIGTERM);   /* blocked now: delivered to the signalfd */
    assert_int_equal(cw_loop_run(l), CW_OK);
    assert_int_equal(got, SIGTERM);
    cw_loop_free(&l);
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    assert_false(sigismember(&cur, SIGTERM));   /* mask restored */
}

static void test_bad_arguments(void **state)
{
    assert_int_equal(cw_loop_new(NULL), CW_EINVAL);
    assert_int_equal(cw_loop_run(NULL), CW_EINVAL);
    assert_int_equal(cw_loop_stop(NULL), CW_EINVAL);
    cw_loop *l;
    assert_int_equal(cw_loop_new(&l), CW_OK);
    cw_io io;
    memset(&io, 0, sizeof io);
    io.fd = -1;
    assert_int_equal(cw_io_start(l, &io, CW_IO_READ, on_watch), CW_EINVAL);
    assert_int_equal(cw_io_set(l, &io, CW_IO_READ), CW_EINVAL);
    io.fd = 12345;   /* not open */
    assert_int_equal(cw_io_start(l, &io, CW_IO_READ, on_watch), -EBADF);
    assert_false(cw_io_active(&io));
    cw_timer t;
    memset(&t, 0, sizeof t);
    assert_int_equal(cw_timer_start(l, &t, 0, NULL), CW_EINVAL);
    cw_loop_free(&l);
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_timers_in_order),
        CWT_TEST(test_timer_heap_stress),
        CWT_TEST(test_fin_seen_while_paused),
        CWT_TEST(test_reset_seen_while_paused),
        CWT_TEST(test_stop_other_in_same_batch),
        CWT_TEST(test_idle_loop_sleeps),
        CWT_TEST(test_sigterm_stops_cleanly),
        CWT_TEST(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
