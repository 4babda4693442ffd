/* test_stream.c - the event-driven stream against the kernel: every way a
 * connection can end, seen through cw_stream on a real loopback socket,
 * with the kernel's TCP table and descriptor list as the oracle. The peer
 * is a plain socket driven by the test (or a thread, when it must block). */
// cw-test-timeout: 180
#include "cwtest.h"
#include "../src/net/stream_impl.h"   /* to see that an idle stream holds no buffer */

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- harness ---- */

enum act { NONE, CLOSE_GRACEFUL, CLOSE_ABORT, PAUSE };

/* What happened to one stream, and what its owner does on each event. */
struct rec {
    cw_stream *s;
    size_t got;
    int ends, end;          /* terminal results seen, the last one */
    int closed, how;        /* on_closed calls and its argument */
    enum cw_end cend;       /* cw_stream_end() in on_closed */
    int64_t end_ms, closed_ms;   /* when the terminal result and on_closed came */
    int drains;
    enum act on_data, on_end, on_drain;
    int close_rc;           /* what the close from a callback returned */
    int after_close_write;  /* cw_stream_write after that close */
    cw_loop *loop;          /* if set: the iterations of the last bytes, the end
                               and on_closed */
    uint64_t data_it, end_it, closed_it;
};

static void act(struct rec *r, enum act a)
{
    if (a == CLOSE_GRACEFUL || a == CLOSE_ABORT) {
        r->close_rc = cw_stream_close(r->s, a == CLOSE_ABORT ? CW_CLOSE_ABORT
                                                             : CW_CLOSE_GRACEFUL,
                                      cw_now_ms() + 2000, NULL);
        /* The stream must stay usable as a handle until on_closed. */
        r->after_close_write = cw_stream_write(r->s, "x", 1);
        assert_int_equal(cw_stream_close(r->s, CW_CLOSE_GRACEFUL, 0, NULL), CW_EINVAL);
        assert_int_equal(cw_stream_close(r->s, CW_CLOSE_PLAIN, 0, NULL), CW_EINVAL);
    } else if (a == PAUSE) {
        cw_stream_read_stop(r->s);
    }
}

static void rec_read(cw_stream *s, ssize_t n, const char *buf)
{
    struct rec *r = cw_stream_data(s);
    assert_true(n != 0);
    if (n > 0) {
        assert_int_equal(r->ends, 0);   /* no bytes after the end */
        r->got += (size_t)n;
        if (r->loop)
            r->data_it = cw_loop_iterations(r->loop);
        act(r, r->on_data);
    } else {
        assert_null(buf);
        r->ends++;
        r->end = (int)n;
        r->end_ms = cw_now_ms();
        if (r->loop)
            r->end_it = cw_loop_iterations(r->loop);
        act(r, r->on_end);
    }
}

static void rec_drain(cw_stream *s)
{
    struct rec *r = cw_stream_data(s);
    r->drains++;
    act(r, r->on_drain);
}

static void rec_closed(cw_stream *s, int how)
{
    struct rec *r = cw_stream_data(s);
    r->closed++;
    r->how = how;
    r->cend = cw_stream_end(s);
    r->closed_ms = cw_now_ms();
    if (r->loop)
        r->closed_it = cw_loop_iterations(r->loop);
    r->s = NULL;
    /* Closing again from on_closed is refused, not a crash. */
    assert_int_equal(cw_stream_close(s, CW_CLOSE_ABORT, 0, NULL), CW_EINVAL);
}

static const struct cw_stream_handlers rec_handlers = {
    .on_read = rec_read, .on_drain = rec_drain, .on_closed = rec_closed,
};

/* Run the loop until *flag is nonzero or timeout_ms passes; returns *flag. */
struct until {
    int *flag;
    int64_t deadline;
};

static void until_tick(cw_loop *loop, cw_timer *t)
{
    struct until *u = t->data;
    if (*u->flag || cw_now_ms() >= u->deadline)
        cw_loop_stop(loop);
    else
        cw_timer_start(loop, t, cw_now_ms() + 2, until_tick);
}

static int run_until(cw_loop *loop, int *flag, int timeout_ms)
{
    struct until u = {flag, cw_now_ms() + timeout_ms};
    cw_timer t = {.data = &u};
    cw_timer_start(loop, &t, cw_now_ms(), until_tick);
    cw_loop_run(loop);
    cw_timer_stop(loop, &t);
    return *flag;
}

static void stop_tick(cw_loop *loop, cw_timer *t)
{
    cw_loop_stop(loop);
}

/* Run the loop for ms milliseconds: one timer, so that the loop's
 * iteration count shows only the work under test. */
static void run_for(cw_loop *loop, int ms)
{
    cw_timer t = {0};
    cw_timer_start(loop, &t, cw_now_ms() + ms, stop_tick);
    cw_loop_run(loop);
    cw_timer_stop(loop, &t);
}

/* A loopback connection: the stream on one side, a plain blocking
 * descriptor on the other. rcvbuf/sndbuf > 0 fix the peer's receive
 * buffer and the stream's send buffer (no autotuning). */
static int pair(cw_loop *loop, const struct cw_stream_opts *o, int peer_rcvbuf,
                int stream_sndbuf, cw_stream **s)
{
    cw_listener *l;
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, 8, &l), CW_OK);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c >= 0);
    if (peer_rcvbuf > 0)
        assert_int_equal(setsockopt(c, SOL_SOCKET, SO_RCVBUF, &peer_rcvbuf,
                                    sizeof peer_rcvbuf), 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)cw_listener_port(l)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof a), 0);
    int fd = accept4(cw_listener_fd(l), NULL, NULL, SOCK_CLOEXEC);
    assert_true(fd >= 0);
    if (stream_sndbuf > 0)
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &stream_sndbuf,
                                    sizeof stream_sndbuf), 0);
    cw_listener_close(&l);
    assert_int_equal(cw_stream_adopt(loop, fd, o, s), CW_OK);
    return c;
}

static void start(struct rec *r, cw_stream *s)
{
    r->s = s;
    assert_int_equal(cw_stream_start(s, &rec_handlers, r), CW_OK);
}

static void send_all(int fd, const void *buf, size_t len)
{
    assert_int_equal(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* Read from a blocking descriptor until EOF or error: bytes read, and the
 * way it ended (0 = EOF, or -errno). */
static size_t read_to_end(int fd, int *end, int timeout_ms)
{
    char buf[65536];
    size_t total = 0;
    int64_t deadline = cw_now_ms() + timeout_ms;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)(deadline - cw_now_ms())) <= 0) {
            *end = -ETIMEDOUT;
            return total;
        }
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
            *end = n == 0 ? 0 : -errno;
            return total;
        }
        total += (size_t)n;
    }
}

struct reader {
    int fd, end;
    size_t got;
};

static void *reader(void *arg)
{
    struct reader *rd = arg;
    rd->got = read_to_end(rd->fd, &rd->end, 8000);
    return NULL;
}

/* The peer c reads in a thread while the loop flushes the len queued
 * bytes of r's closing stream: every byte, then FIN, and a graceful end. */
static void flush_to_reader(cw_loop *loop, struct rec *r, int c, size_t len)
{
    struct reader rd = {c, 1, 0};
    pthread_t t = cwt_thread(reader, &rd);
    assert_true(run_until(loop, &r->closed, 5000));
    cwt_join(t);
    assert_int_equal(rd.got, len);
    assert_int_equal(rd.end, 0);
    assert_int_equal(r->how, CW_OK);
}

static struct cw_stream_opts opts(uint32_t idle, uint32_t wto, uint32_t grace)
{
    struct cw_stream_opts o;
    cw_stream_opts_init(&o);
    o.idle_timeout_ms = idle;
    if (wto)
        o.write_timeout_ms = wto;
    o.close_grace_ms = grace;
    return o;
}

static int local_port_of(int fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    return ntohs(a.sin_port);
}

/* A loop and a started stream with its plain peer (see pair()). */
static int fixture(cw_loop **loop, cw_stream **s, struct rec *r,
                   struct cw_stream_opts o, int peer_rcvbuf, int stream_sndbuf)
{
    assert_int_equal(cw_loop_new(loop), CW_OK);
    int c = pair(*loop, &o, peer_rcvbuf, stream_sndbuf, s);
    start(r, *s);
    return c;
}

/* Queue len zero bytes on s; returns what cw_stream_write said. */
static int queue_big(cw_stream *s, size_t len)
{
    char *big = calloc(1, len);
    int rc = cw_stream_write(s, big, len);
    free(big);
    return rc;
}

struct accepted {
    cw_stream *s[16];
    int n;
    struct rec *recs;
};

static void on_accept_rec(cw_acceptor *a, cw_stream *s, void *data)
{
    struct accepted *acc = data;
    struct rec *r = &acc->recs[acc->n];
    acc->s[acc->n++] = s;
    start(r, s);
}

static int dial_raw(int port)
{
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c >= 0);
    int rcv = 32768;
    setsockopt(c, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof a), 0);
    return c;
}

/* A loop, a listener on 127.0.0.1 and an acceptor whose streams are
 * started with recs[] in order (on_accept_rec, or cb that calls it). */
struct accept_fx {
    cw_loop *loop;
    cw_listener *l;
    cw_acceptor *a;
    struct accepted acc;
};

static void accept_fx_new(struct accept_fx *f, struct rec *recs, int backlog,
                          const struct cw_stream_opts *o, cw_acceptor_cb *cb)
{
    assert_int_equal(cw_loop_new(&f->loop), CW_OK);
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, backlog, &f->l), CW_OK);
    f->acc = (struct accepted){.recs = recs};
    assert_int_equal(cw_acceptor_new(f->loop, f->l, o, cb ? cb : on_accept_rec, &f->acc, &f->a),
                     CW_OK);
}

static int accept_fx_dial(const struct accept_fx *f)
{
    return dial_raw(cw_listener_port(f->l));
}

/* Abort the streams still open, close the n peers, and free it all; the
 * acceptor (unless freed already) must count no stream open. */
static void accept_fx_free(struct accept_fx *f, const int *peers, int n)
{
    for (int i = 0; i < f->acc.n; i++)
        if (f->acc.recs[i].s)
            cw_stream_close(f->acc.recs[i].s, CW_CLOSE_ABORT, 0, NULL);
    for (int i = 0; i < n; i++)
        close(peers[i]);
    run_for(f->loop, 20);
    if (f->a) {
        struct cw_acceptor_stats st;
        cw_acceptor_stats(f->a, &st);
        assert_int_equal(st.open, 0);
        cw_acceptor_free(&f->a);
    }
    if (f->l)
        cw_listener_close(&f->l);
    cw_loop_free(&f->loop);
}

/* valgrind keeps its own descriptor limit: no EMFILE comes. */
static void skip_under_valgrind(void)
{
    const char *pre = getenv("LD_PRELOAD");
    if (pre && strstr(pre, "valgrind")) {
        printf("# skipped under valgrind: RLIMIT_NOFILE is virtualised there\n");
        skip();
    }
}

/* ---- terminal cases ---- */

static void test_peer_fin_while_reading(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {.on_end = CLOSE_GRACEFUL};
    int c = fixture(&loop, &s, &r, opts(0, 0, 5000), 0, 0);
    send_all(c, "hello", 5);
    shutdown(c, SHUT_WR);
    assert_true(run_until(loop, &r.closed, 3000));
    assert_int_equal(r.got, 5);
    assert_int_equal(r.ends, 1);
    assert_int_equal(r.end, CW_EOF);
    assert_int_equal(r.close_rc, CW_OK);
    assert_int_equal(r.after_close_write, CW_ECLOSING);
    assert_int_equal(r.how, CW_OK);   /* the peer's FIN was read: delivered */
    assert_int_equal(r.cend, CW_END_GRACEFUL);
    int end;
    assert_int_equal(read_to_end(c, &end, 2000), 0);
    assert_int_equal(end, 0);
    close(c);
    cw_loop_free(&loop);
}

/* The last bytes and the FIN in one segment (the peer corks, as the
 * reference server does for its last line), then nothing: the stream
 * reads one short read's worth, yet the end is not left for later
 * traffic or another loop pass: the bytes, then the end, in the same
 * dispatch. */
static void test_data_and_fin_in_one_segment(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {.on_end = CLOSE_GRACEFUL};
    int c = fixture(&loop, &s, &r, opts(0, 0, 5000), 0, 0);
    r.loop = loop;
    run_for(loop, 10);
    assert_int_equal(send(c, "hello", 5, MSG_MORE | MSG_NOSIGNAL), 5);
    shutdown(c, SHUT_WR);   /* the FIN rides on the corked bytes */
    assert_true(run_until(loop, &r.closed, 3000));
    assert_int_equal(r.got, 5);
    assert_int_equal(r.ends, 1);
    assert_int_equal(r.end, CW_EOF);
    assert_int_equal(r.data_it, r.end_it);
    assert_int_equal(r.how, CW_OK);
    int end;
    assert_int_equal(read_to_end(c, &end, 2000), 0);
    assert_int_equal(end, 0);
    close(c);
    cw_loop_free(&loop);
}

/* The stream takes its descriptor out of the loop's epoll set before
 * close(): close() alone does that only when no other descriptor refers
 * to the socket, and one may (the owner's dup of cw_stream_fd(), a
 * fork or posix_spawn child not yet past exec). Left in the set, the
 * socket - at EOF, readable for ever - would report events pointing at
 * the freed stream. */
static void test_dup_outlives_stream(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {.on_end = CLOSE_GRACEFUL};
    int c = fixture(&loop, &s, &r, opts(0, 0, 5000), 0, 0);
    int d = dup(cw_stream_fd(s));
    assert_true(d >= 0);
    send_all(c, "x", 1);
    shutdown(c, SHUT_WR);
    assert_true(run_until(loop, &r.closed, 3000));
    assert_int_equal(r.how, CW_OK);
    /* Freed; its socket lives on in d, readable at EOF. */
    uint64_t it = cw_loop_iterations(loop);
    run_for(loop, 100);
    assert_true(cw_loop_iterations(loop) - it < 10);
    close(d);
    close(c);
    cw_loop_free(&loop);
}

/* Reads paused: the FIN is noticed, nothing is delivered until reads
 * resume, and then the bytes come first, then exactly one CW_EOF. */
static void test_peer_fin_while_paused(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {.on_data = PAUSE};
    int c = fixture(&loop, &s, &r, opts(0, 0, 5000), 0, 0);
    send_all(c, "a", 1);
    assert_true(run_until(loop, (int *)&r.got, 2000));
    send_all(c, "bcd", 3);
    shutdown(c, SHUT_WR);
    run_for(loop, 100);
    assert_int_equal(r.got, 1);
    assert_int_equal(r.ends, 0);
    /* The loop is not spinning on the FIN it has seen. */
    uint64_t it = cw_loop_iterations(loop);
    run_for(loop, 100);
    assert_true(cw_loop_iterations(loop) - it < 80);
    r.on_data = NONE;
    r.on_end = CLOSE_GRACEFUL;
    assert_int_equal(cw_stream_read_start(s), CW_OK);
    assert_true(run_until(loop, &r.closed, 3000));
    assert_int_equal(r.got, 4);
    assert_int_equal(r.ends, 1);
    assert_int_equal(r.end, CW_EOF);
    assert_int_equal(r.how, CW_OK);
    close(c);
    cw_loop_free(&loop);
}

/* Our reply is queued (the peer reads nothing yet) when the peer's FIN
 * comes: the end is reported, the queue survives, and the graceful close
 * delivers all of it once the peer reads. */
static void test_peer_fin_while_writes_queued(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {0};
    int c = fixture(&loop, &s, &r, opts(0, 10000, 5000), 32768, 65536);
    size_t len = 2 * 1024 * 1024;
    assert_int_equal(queue_big(s, len), 1);   /* above high water */
    assert_true(cw_stream_queued(s) > 0);
    shutdown(c, SHUT_WR);
    assert_true(run_until(loop, &r.ends, 2000));
    assert_int_equal(r.end, CW_EOF);
    assert_true(cw_stream_queued(s) > 0);
    assert_int_equal(cw_stream_close(s, CW_CLOSE_GRACEFUL, cw_now_ms() + 5000, NULL),
                     CW_OK);
    run_for(loop, 50);
    assert_int_equal(r.closed, 0);   /* still flushing */
    /* The peer reads in a thread while the loop flushes. */
    flush_to_reader(loop, &r, c, len);
    assert_int_equal(r.drains, 0);   /* closing: on_drain is not called */
    close(c);
    cw_loop_free(&loop);
}

/* Half-close with a large reply still queued: the FIN follows its last
 * byte, writes are refused, and reading goes on to the peer's answer and
 * FIN; the close after that is graceful. Checked from the peer's side. */
static void test_shutdown_after_queued_reply(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {0};
    int c = fixture(&loop, &s, &r, opts(0, 10000, 5000), 32768, 65536);
    size_t len = 1024 * 1024;
    assert_int_equal(queue_big(s, len), 1);
    assert_int_equal(cw_stream_shutdown(s), CW_OK);
    assert_int_equal(cw_stream_shutdown(s), CW_OK);
    assert_int_equal(cw_stream_write(s, "x", 1), -ESHUTDOWN);
    run_for(loop, 50);
    /* Queued: no FIN yet. */
    assert_int_equal(cwt_count(CW_TCP_FIN_WAIT1, 0, local_port_of(c)) +
                     cwt_count(CW_TCP_FIN_WAIT2, 0, local_port_of(c)), 0);
    struct reader rd = {c, 1, 0};
    pthread_t t = cwt_thread(reader, &rd);
    int64_t t0 = cw_now_ms();
    while (cw_stream_queued(s) && cw_now_ms() - t0 < 5000)
        run_for(loop, 10);
    cwt_join(t);
    assert_int_equal(rd.got, len);
    assert_int_equal(rd.end, 0);   /* every byte, then our FIN */
    assert_int_equal(r.ends, 0);   /* the stream still reads */
    send_all(c, "bye", 3);
    shutdown(c, SHUT_WR);
    assert_true(run_until(loop, &r.ends, 2000));
    assert_int_equal(r.got, 3);
    assert_int_equal(r.end, CW_EOF);
    assert_int_equal(cw_stream_close(s, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000, NULL),
                     CW_OK);
    assert_true(run_until(loop, &r.closed, 2000));
    assert_int_equal(r.how, CW_OK);
    assert_int_equal(r.cend, CW_END_GRACEFUL);
    assert_int_equal(r.drains, 1);   /* the write said full: drained */
    close(c);
    cw_loop_free(&loop);
}

/* The peer resets while our writes are queued: reads and writes both say
 * CW_ERESET, the queue is freed, and the close says the same. */
static void test_rst_mid_write(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {.on_end = CLOSE_GRACEFUL};
    int c = fixture(&loop, &s, &r, opts(0, 10000, 5000), 32768, 65536);
    size_t len = 1024 * 1024;
    assert_int_equal(queue_big(s, len), 1);
    run_for(loop, 50);
    struct linger lg = {1, 0};
    setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c);
    assert_true(run_until(loop, &r.closed, 3000));
    assert_int_equal(r.ends, 1);
    assert_int_equal(r.end, CW_ERESET);
    assert_int_equal(r.how, CW_ERESET);
    assert_int_equal(r.cend, CW_END_RESET);
    cw_loop_free(&loop);
}

/* The kernel gives up on a peer that keeps its window shut past
 * TCP_USER_TIMEOUT: the loop takes the error with SO_ERROR, and the
 * stream still reports it as CW_ETIMEDOUT, not as a plain end. */
static void test_kernel_timeout_is_reported(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {.on_end = CLOSE_GRACEFUL};
    int c = fixture(&loop, &s, &r, opts(0, 30000, 5000), 32768, 65536);
    int ut = 300;
    assert_int_equal(setsockopt(cw_stream_fd(s), IPPROTO_TCP, TCP_USER_TIMEOUT,
                                &ut, sizeof ut), 0);
    assert_int_equal(queue_big(s, 1024 * 1024), 1);
    assert_true(run_until(loop, &r.closed, 10000));
    printf("# TCP_USER_TIMEOUT 300 ms on a peer that never reads: %s\n",
           cw_strerror(r.end));
    assert_int_equal(r.ends, 1);
    assert_int_equal(r.end, CW_ETIMEDOUT);
    /* The owner's close reports it too: no reset came. */
    assert_int_equal(r.how, CW_ETIMEDOUT);
    close(c);
    cw_loop_free(&loop);
}

/* The race behind a rare CW_EOF in test_kernel_timeout_is_reported
 * (valgrind, load 12): the loop collects EPOLLOUT, and before the stream
 * gets to flush, the kernel gives up (TCP_USER_TIMEOUT). The flush's
 * send() then takes the kernel's error (sk_err is read once), and the
 * recv() after it says a plain 0. The end must still be the timeout, not
 * a FIN the peer never sent. A watcher dispatched first in the same pass
 * plays the stalled loop: it waits for the kernel's abort. */
struct stall {
    cw_io io;
    cw_stream *s;
    size_t queued;   /* the stream's queue when the pass began */
    int ran, err;
};

static void on_stall(cw_loop *loop, cw_io *io, unsigned events)
{
    struct stall *st = io->data;
    char b;
    assert_int_equal(read(io->fd, &b, 1), 1);
    cw_io_stop(loop, io);
    st->ran = 1;
    /* The stream has not been dispatched in this pass yet. */
    assert_int_equal(cw_stream_queued(st->s), st->queued);
    int fd = cw_stream_fd(st->s), ut = 1;
    assert_int_equal(setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut), 0);
    /* poll() shows the error without taking it. */
    struct pollfd p = {.fd = fd, .events = 0};
    assert_int_equal(poll(&p, 1, 20000), 1);
    st->err = p.revents & POLLERR;
}

static void test_kernel_timeout_taken_by_flush(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {.on_end = CLOSE_GRACEFUL};
    int c = fixture(&loop, &s, &r, opts(0, 30000, 5000), 32768, 65536);
    assert_int_equal(queue_big(s, 1024 * 1024), 1);
    run_for(loop, 100);   /* zero window, the stream's watcher quiet */
    struct stall st = {.s = s, .queued = cw_stream_queued(s)};
    int pp[2];
    assert_int_equal(pipe2(pp, O_CLOEXEC), 0);
    st.io.fd = pp[0];
    st.io.data = &st;
    assert_int_equal(cw_io_start(loop, &st.io, CW_IO_READ, on_stall), CW_OK);
    /* The stall's event first, then the stream's: the peer reads, the
     * window opens, the kernel sends and frees room, and stays with
     * unsent bytes against the window that closes again. */
    assert_int_equal(write(pp[1], "x", 1), 1);
    char buf[65536];
    assert_true(recv(c, buf, sizeof buf, MSG_DONTWAIT) > 0);
    struct pollfd p = {.fd = cw_stream_fd(s), .events = POLLOUT};
    assert_int_equal(poll(&p, 1, 5000), 1);
    assert_true(run_until(loop, &r.closed, 30000));
    printf("# the kernel's timeout taken by the flush's send: %s\n",
           cw_strerror(r.end));
    assert_true(st.ran);
    assert_true(st.err);
    assert_int_equal(r.ends, 1);
    assert_int_equal(r.end, CW_ETIMEDOUT);
    assert_int_equal(r.how, CW_ETIMEDOUT);
    close(pp[0]);
    close(pp[1]);
    close(c);
    cw_loop_free(&loop);
}

/* ---- write timeout, with the acceptor's counters ---- */

static void test_write_timeout_resets_and_frees(void **state)
{
    struct accept_fx f;
    struct rec recs[2] = {{0}};
    struct cw_stream_opts o = opts(0, 300, 200);
    accept_fx_new(&f, recs, 8, &o, NULL);
    cw_loop *loop = f.loop;
    int c = accept_fx_dial(&f);
    assert_true(run_until(loop, &f.acc.n, 2000));
    /* A second client leaves at once; its owner ignores the EOF. */
    int c2 = accept_fx_dial(&f);
    shutdown(c2, SHUT_WR);
    size_t len = 4 * 1024 * 1024;
    /* The timeout starts inside queue_big, at the enqueue, before its
     * 4 MiB copy: t0 after it made a loaded machine see it "early". */
    int64_t t0 = cw_now_ms();
    assert_int_equal(queue_big(f.acc.s[0], len), 1);
    assert_true(run_until(loop, &recs[0].closed, 3000));
    int64_t took = cw_now_ms() - t0;
    printf("# write timeout 300 ms: stream reset after %lld ms\n", (long long)took);
    assert_true(took >= 290 && took < 2000);
    assert_int_equal(recs[0].how, CW_ETIMEDOUT);
    assert_int_equal(recs[0].cend, CW_END_TIMEOUT);
    assert_true(run_until(loop, &recs[1].closed, 3000));
    assert_int_equal(recs[1].end, CW_EOF);
    assert_int_equal(recs[1].how, CW_OK);
    struct cw_acceptor_stats st;
    cw_acceptor_stats(f.a, &st);
    assert_int_equal(st.write_timeouts, 1);
    assert_int_equal(st.grace_closed, 1);
    assert_int_equal(st.open, 0);
    close(c2);
    /* The peer gets what was in flight, then the RST. */
    int end;
    size_t got = read_to_end(c, &end, 2000);
    assert_true(got < len);
    assert_int_equal(end, -ECONNRESET);
    accept_fx_free(&f, &c, 1);
}

/* A write that keeps making progress, slowly, is never timed out. The
 * peer reads every 100 ms against a 500 ms timeout: a loaded machine may
 * hold this thread off the CPU for more than 100 ms (it did, once in 20
 * runs, with a 200 ms timeout), which would be a real timeout. */
static void test_write_timeout_restarts_on_progress(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {0};
    int c = fixture(&loop, &s, &r, opts(0, 500, 5000), 32768, 65536);
    size_t len = 3 * 1024 * 1024;
    queue_big(s, len);
    char buf[16384];
    size_t got = 0;
    int64_t t0 = cw_now_ms();
    while (got < len && cw_now_ms() - t0 < 8000) {
        run_for(loop, 100);   /* a fifth of the timeout between reads */
        ssize_t n;   /* what the peer's small buffer holds, then wait */
        while ((n = recv(c, buf, sizeof buf, MSG_DONTWAIT)) > 0)
            got += (size_t)n;
    }
    printf("# slow reader: %zu bytes in %lld ms against a 500 ms write timeout\n", got,
           (long long)(cw_now_ms() - t0));
    assert_int_equal(r.closed, 0);
    assert_true(cw_now_ms() - t0 > 1000);   /* longer than the timeout in all */
    run_for(loop, 20);
    while ((size_t)got < len) {
        ssize_t n = recv(c, buf, sizeof buf, 0);
        assert_true(n > 0);
        got += (size_t)n;
    }
    assert_int_equal(r.closed, 0);
    cw_stream_close(s, CW_CLOSE_ABORT, 0, NULL);
    assert_true(run_until(loop, &r.closed, 1000));
    close(c);
    cw_loop_free(&loop);
}

/* ---- idle deadline ---- */

static void test_idle_deadline(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r;
    int c;
    int64_t t0;
    for (int tries = 1;; tries++) {
        memset(&r, 0, sizeof r);
        c = fixture(&loop, &s, &r, opts(200, 0, 5000), 0, 0);
        t0 = cw_now_ms();   /* the idle time started just before */
        /* Bytes restart the idle time: one sent 120 ms in. */
        run_for(loop, 120);
        if (!r.ends || tries == 5)
            break;
        /* Never early; but the test thread was held off the CPU for the
         * 80 ms left (a load average of 13 did), so the timeout rightly
         * came before the byte: try again. */
        assert_true(r.end_ms - t0 >= 190);
        printf("# idle deadline: the test thread was back only after the "
               "timeout (%lld ms); try %d\n", (long long)(r.end_ms - t0), tries + 1);
        cw_stream_close(s, CW_CLOSE_ABORT, 0, NULL);
        assert_true(run_until(loop, &r.closed, 1000));
        close(c);
        cw_loop_free(&loop);
    }
    send_all(c, "x", 1);
    assert_true(run_until(loop, &r.ends, 2000));
    int64_t took = cw_now_ms() - t0;
    assert_int_equal(r.got, 1);
    assert_int_equal(r.end, CW_ETIMEDOUT);
    assert_true(took >= 310 && took < 1500);
    /* Writes stay allowed after the timeout: a last word, then close. */
    assert_int_equal(cw_stream_write(s, "bye\n", 4), CW_OK);
    assert_int_equal(cw_stream_read_start(s), CW_ETIMEDOUT);   /* sticky */
    cw_stream_close(s, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000, NULL);
    run_for(loop, 20);
    char buf[8];
    assert_int_equal(recv(c, buf, sizeof buf, 0), 4);
    assert_int_equal(recv(c, buf, sizeof buf, 0), 0);
    close(c);
    assert_true(run_until(loop, &r.closed, 2000));
    assert_int_equal(r.how, CW_OK);
    cw_loop_free(&loop);
}

static void note_iteration(cw_loop *loop, cw_timer *t)
{
    *(uint64_t *)t->data = cw_loop_iterations(loop);
}

/* A graceful close asked for outside every stream callback (from the
 * owner's own timer, say) keeps its deadline when the peer never sends
 * its FIN: the stream re-arms its timer for the close. */
static void test_close_deadline_outside_callbacks(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {0};
    int c = fixture(&loop, &s, &r, opts(0, 0, 60000), 0, 0);
    r.loop = loop;
    run_for(loop, 20);
    int64_t t0 = cw_now_ms();
    cw_stream_close(s, CW_CLOSE_GRACEFUL, t0 + 300, NULL);
    /* A plain timer with the same deadline: the close must end in the
     * loop pass that runs it (on_closed may come one or two passes
     * later), however late a loaded machine makes that pass. */
    uint64_t ref_it = 0;
    cw_timer ref = {.data = &ref_it};
    cw_timer_start(loop, &ref, t0 + 300, note_iteration);
    /* A generous time bound: without the re-armed timer the close would
     * wait for the 60 s idle timeout. */
    int done = run_until(loop, &r.closed, 20000);
    int64_t took = cw_now_ms() - t0;
    printf("# graceful close outside callbacks, peer silent: ended after %lld ms "
           "(deadline 300 ms), loop pass %llu (the deadline's: %llu)\n", (long long)took,
           (unsigned long long)r.closed_it, (unsigned long long)ref_it);
    assert_true(done);
    assert_int_equal(r.how, CW_ETIMEDOUT);
    assert_true(took >= 290 && took < 15000);
    assert_true(ref_it > 0 && r.closed_it >= ref_it && r.closed_it <= ref_it + 2);
    char buf[8];
    assert_int_equal(recv(c, buf, sizeof buf, 0), 0);   /* our FIN came first */
    close(c);
    cw_loop_free(&loop);
}

/* The idle timeout was delivered and a long reply is queued when the
 * peer's FIN comes: the loop waits for the peer to read (no spinning on
 * the FIN it has seen), and the reply still arrives whole. */
static void test_fin_after_idle_timeout_with_reply_queued(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {0};
    int c = fixture(&loop, &s, &r, opts(50, 10000, 5000), 32768, 65536);
    assert_true(run_until(loop, &r.ends, 2000));
    assert_int_equal(r.end, CW_ETIMEDOUT);
    size_t len = 1024 * 1024;
    assert_int_equal(queue_big(s, len), 1);
    shutdown(c, SHUT_WR);
    uint64_t it = cw_loop_iterations(loop);
    run_for(loop, 200);
    assert_true(cw_loop_iterations(loop) - it < 30);
    assert_int_equal(r.closed, 0);
    assert_true(cw_stream_queued(s) > 0);
    cw_stream_close(s, CW_CLOSE_GRACEFUL, cw_now_ms() + 5000, NULL);
    flush_to_reader(loop, &r, c, len);
    close(c);
    cw_loop_free(&loop);
}

/* ---- graceful vs abort with a 1 MiB queued reply ---- */

#define LARGE_REPLY (1024 * 1024)

struct late {
    int fd;
    size_t got;
    int end;
    int *closed_flag;
};

/* The client reads 864 KiB, then waits until the stream has been closed
 * (abort) or the close has started (graceful), then reads the rest. */
static void *late_reader(void *arg)
{
    struct late *lr = arg;
    char buf[16384];
    while (lr->got < 864 * 1024) {
        ssize_t n = recv(lr->fd, buf, sizeof buf, 0);
        if (n <= 0) {   /* the abort's RST can come this early */
            lr->end = n == 0 ? 0 : -errno;
            return NULL;
        }
        lr->got += (size_t)n;
    }
    while (!__atomic_load_n(lr->closed_flag, __ATOMIC_ACQUIRE))
        cwt_sleep_ms(5);
    cwt_sleep_ms(50);
    lr->got += read_to_end(lr->fd, &lr->end, 5000);
    shutdown(lr->fd, SHUT_WR);
    return NULL;
}

static size_t reply_and_close(int how, int *end)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {0};
    int c = fixture(&loop, &s, &r, opts(0, 10000, 5000), 32768, 200000);
    send_all(c, "request that is not all read", 28);
    char *big = malloc(LARGE_REPLY);
    memset(big, 'r', LARGE_REPLY);
    int closing = 0;
    struct late lr = {c, 0, 0, &closing};
    pthread_t t = cwt_thread(late_reader, &lr);
    cw_stream_write(s, big, LARGE_REPLY);
    free(big);
    /* Close with most of the reply still queued in user space and the
     * kernel: the late reader has not caught up yet. */
    assert_int_equal(cw_stream_close(s, how, cw_now_ms() + 5000, NULL), CW_OK);
    __atomic_store_n(&closing, 1, __ATOMIC_RELEASE);
    assert_true(run_until(loop, &r.closed, 8000));
    cwt_join(t);
    *end = lr.end;
    assert_int_equal(r.how, CW_OK);
    /* The how is CW_OK either way: only the end tells them apart. */
    assert_int_equal(r.cend, how == CW_CLOSE_ABORT ? CW_END_ABORT : CW_END_GRACEFUL);
    close(c);
    cw_loop_free(&loop);
    return lr.got;
}

static void test_graceful_delivers_queued_reply(void **state)
{
    for (int i = 0; i < 20; i++) {
        int end;
        size_t got = reply_and_close(CW_CLOSE_GRACEFUL, &end);
        assert_int_equal(got, LARGE_REPLY);
        assert_int_equal(end, 0);
    }
}

static void test_abort_loses_queued_reply(void **state)
{
    for (int i = 0; i < 20; i++) {
        int end;
        size_t got = reply_and_close(CW_CLOSE_ABORT, &end);
        assert_true(got < LARGE_REPLY);
        assert_int_equal(end, -ECONNRESET);
    }
}

/* ---- closing from inside every callback ---- */

static void close_in_read_data(enum act how)
{
    cw_loop *loop;
    assert_int_equal(cw_loop_new(&loop), CW_OK);
    struct rec r = {.on_data = how};
    cw_stream *s;
    int c = pair(loop, NULL, 0, 0, &s);
    start(&r, s);
    /* More than one read's worth, so the read loop would go on. */
    char buf[100000] = {0};
    send_all(c, buf, sizeof buf);
    assert_true(run_until(loop, &r.closed, 3000));
    assert_int_equal(r.close_rc, CW_OK);
    assert_int_equal(r.ends, 0);
    shutdown(c, SHUT_WR);
    int end;
    read_to_end(c, &end, 3000);
    assert_int_equal(end, how == CLOSE_ABORT ? -ECONNRESET : 0);
    close(c);
    cw_loop_free(&loop);
}

static void test_close_inside_read_callback(void **state)
{
    close_in_read_data(CLOSE_ABORT);
    close_in_read_data(CLOSE_GRACEFUL);
}

static void test_close_inside_terminal_callbacks(void **state)
{
    cw_loop *loop;
    assert_int_equal(cw_loop_new(&loop), CW_OK);
    /* EOF, reset and idle timeout, each closed abortively from on_read. */
    struct rec r[3] = {{.on_end = CLOSE_ABORT}, {.on_end = CLOSE_ABORT},
                       {.on_end = CLOSE_ABORT}};
    cw_stream *s[3];
    struct cw_stream_opts idle = opts(100, 0, 5000);
    int c0 = pair(loop, NULL, 0, 0, &s[0]);
    int c1 = pair(loop, NULL, 0, 0, &s[1]);
    int c2 = pair(loop, &idle, 0, 0, &s[2]);
    for (int i = 0; i < 3; i++)
        start(&r[i], s[i]);
    shutdown(c0, SHUT_WR);
    struct linger lg = {1, 0};
    setsockopt(c1, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c1);
    int all = 0;
    int64_t deadline = cw_now_ms() + 3000;
    while (!all && cw_now_ms() < deadline) {
        run_for(loop, 20);
        all = r[0].closed && r[1].closed && r[2].closed;
    }
    assert_true(all);
    assert_int_equal(r[0].end, CW_EOF);
    assert_int_equal(r[1].end, CW_ERESET);
    assert_int_equal(r[2].end, CW_ETIMEDOUT);
    close(c0);
    close(c2);
    cw_loop_free(&loop);
}

static void test_close_inside_drain_callback(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {.on_drain = CLOSE_GRACEFUL};
    struct cw_stream_opts o = opts(0, 5000, 5000);
    o.high_water = 1024;
    int c = fixture(&loop, &s, &r, o, 32768, 65536);
    size_t len = 300000;
    assert_int_equal(queue_big(s, len), 1);
    struct reader rd = {c, 1, 0};
    pthread_t t = cwt_thread(reader, &rd);
    run_until(loop, &r.drains, 5000);
    shutdown(c, SHUT_WR);   /* the reader thread may still be reading */
    assert_true(run_until(loop, &r.closed, 5000));
    cwt_join(t);
    assert_int_equal(r.drains, 1);
    assert_int_equal(rd.got, len);
    assert_int_equal(rd.end, 0);
    assert_int_equal(r.how, CW_OK);
    close(c);
    cw_loop_free(&loop);
}

/* Two streams readable in the same epoll batch; whichever is dispatched
 * first aborts the other, whose event is still ahead in the batch. The
 * aborted one must get nothing more than its on_closed, once, and its
 * memory must outlive the batch (the loop skips its event instead of
 * searching for it at close: ASan sees a use after free otherwise). */
struct batch_pair {
    struct rec r[2];
    int reads_after_abort;
    int aborted;          /* index of the stream closed by the other, or -1 */
};

static struct batch_pair *bp_of;

static void bp_read(cw_stream *s, ssize_t n, const char *buf)
{
    struct batch_pair *bp = bp_of;
    int me = cw_stream_data(s) == &bp->r[1];
    if (bp->aborted == me) {
        bp->reads_after_abort++;
        return;
    }
    if (n > 0 && bp->aborted < 0 && bp->r[!me].s) {
        bp->aborted = !me;
        assert_int_equal(cw_stream_close(bp->r[!me].s, CW_CLOSE_ABORT, 0, NULL), CW_OK);
    }
    rec_read(s, n, buf);
}

static const struct cw_stream_handlers bp_handlers = {
    .on_read = bp_read, .on_closed = rec_closed,
};

static void test_close_other_in_same_batch(void **state)
{
    cw_loop *loop;
    assert_int_equal(cw_loop_new(&loop), CW_OK);
    struct batch_pair bp = {.aborted = -1};
    bp_of = &bp;
    cw_stream *s[2];
    int c[2];
    for (int i = 0; i < 2; i++) {
        c[i] = pair(loop, NULL, 0, 0, &s[i]);
        bp.r[i].s = s[i];
        bp.r[i].loop = loop;
        assert_int_equal(cw_stream_start(s[i], &bp_handlers, &bp.r[i]), CW_OK);
    }
    /* Both readable before the loop's first epoll_wait: one batch. */
    for (int i = 0; i < 2; i++)
        send_all(c[i], "x", 1);
    uint64_t it0 = cw_loop_iterations(loop);
    int64_t deadline = cw_now_ms() + 3000;
    while (!(bp.aborted >= 0 && bp.r[bp.aborted].closed) && cw_now_ms() < deadline)
        run_for(loop, 10);
    assert_true(bp.aborted == 0 || bp.aborted == 1);
    int v = bp.aborted, k = !v;
    /* The first dispatched read its byte in the loop's first pass. */
    assert_int_equal(bp.r[k].data_it, it0 + 1);
    assert_int_equal(bp.r[k].got, 1);
    assert_int_equal(bp.r[v].got, 0);
    assert_int_equal(bp.reads_after_abort, 0);
    assert_int_equal(bp.r[v].closed, 1);
    assert_int_equal(bp.r[v].how, CW_OK);
    assert_int_equal(bp.r[v].cend, CW_END_ABORT);
    /* The kernel's side: the aborted stream's peer is reset. */
    int end;
    read_to_end(c[v], &end, 3000);
    assert_int_equal(end, -ECONNRESET);
    cw_stream_close(bp.r[k].s, CW_CLOSE_ABORT, 0, NULL);
    run_for(loop, 10);
    assert_int_equal(bp.r[k].closed, 1);
    close(c[0]);
    close(c[1]);
    cw_loop_free(&loop);
}

static void close_in_accept(cw_acceptor *a, cw_stream *s, void *data)
{
    int *n = data;
    (*n)++;
    assert_int_equal(cw_stream_close(s, CW_CLOSE_GRACEFUL, cw_now_ms() + 1000, NULL),
                     CW_OK);
}

static void test_close_inside_accept_callback(void **state)
{
    cw_loop *loop;
    assert_int_equal(cw_loop_new(&loop), CW_OK);
    cw_listener *l;
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, 8, &l), CW_OK);
    int n = 0;
    cw_acceptor *a;
    assert_int_equal(cw_acceptor_new(loop, l, NULL, close_in_accept, &n, &a), CW_OK);
    int c = dial_raw(cw_listener_port(l));
    assert_true(run_until(loop, &n, 2000));
    int end;
    read_to_end(c, &end, 2000);
    assert_int_equal(end, 0);
    close(c);
    struct cw_acceptor_stats st;
    for (int i = 0; i < 100 && (cw_acceptor_stats(a, &st), st.open); i++)
        run_for(loop, 10);
    assert_int_equal(st.open, 0);
    cw_acceptor_free(&a);
    cw_listener_close(&l);
    cw_loop_free(&loop);
}

struct dialed {
    cw_stream *s;
    int status, calls;
    int close_now;
};

static void on_dialed(cw_stream *s, int status, void *data)
{
    struct dialed *d = data;
    d->s = s;
    d->status = status;
    d->calls++;
    if (s && d->close_now)
        assert_int_equal(cw_stream_close(s, CW_CLOSE_ABORT, 0, NULL), CW_OK);
}

static void test_close_inside_dial_callback(void **state)
{
    cw_loop *loop;
    assert_int_equal(cw_loop_new(&loop), CW_OK);
    cw_listener *l;
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, 8, &l), CW_OK);
    struct dialed d = {.close_now = 1};
    assert_int_equal(cw_stream_dial(loop, "127.0.0.1", (uint16_t)cw_listener_port(l),
                                    NULL, cw_now_ms() + 2000, NULL, on_dialed, &d),
                     CW_OK);
    assert_int_equal(d.calls, 0);   /* never from inside the call */
    assert_true(run_until(loop, &d.calls, 2000));
    assert_int_equal(d.status, CW_OK);
    run_for(loop, 10);
    cw_conn *srv;
    assert_int_equal(cw_accept(l, cw_now_ms() + 1000, &srv), CW_OK);
    char b;
    assert_int_equal(cw_recv(srv, &b, 1, cw_now_ms() + 1000), CW_ERESET);
    cw_close(&srv, CW_CLOSE_ABORT, 0);
    cw_listener_close(&l);
    cw_loop_free(&loop);
}

/* ---- the owner that does nothing ---- */

static void ignore_eof(int start_reads)
{
    cw_loop *loop;
    assert_int_equal(cw_loop_new(&loop), CW_OK);
    struct rec r = {0};
    struct cw_stream_opts o = opts(0, 0, 300);
    cw_stream *s;
    int c = pair(loop, &o, 0, 0, &s);
    int port = local_port_of(c);
    r.s = s;
    if (start_reads)
        start(&r, s);
    else {   /* never reads; on_closed only */
        cw_stream_start(s, &rec_handlers, &r);
        cw_stream_read_stop(s);
    }
    send_all(c, "unread", 6);
    int64_t t0 = cw_now_ms();
    shutdown(c, SHUT_WR);
    run_for(loop, 100);
    assert_int_equal(cwt_count(CW_TCP_CLOSE_WAIT, 0, port), 1);
    assert_true(run_until(loop, &r.closed, 3000));
    /* The grace counts from the delivered EOF, or from the FIN itself
     * when nothing is read. */
    int64_t took = r.closed_ms - (start_reads ? r.end_ms : t0);
    printf("# owner ignored the peer's close (reads %s): library closed after %lld ms "
           "(grace 300)\n", start_reads ? "on" : "paused", (long long)took);
    assert_int_equal(r.ends, start_reads ? 1 : 0);
    assert_true(took >= 295 && took < 1500);
    assert_int_equal(r.how, CW_OK);
    assert_int_equal(r.cend, CW_END_ABANDONED);
    assert_int_equal(cwt_count(CW_TCP_CLOSE_WAIT, 0, 0), 0);
    assert_int_equal(cwt_count(CW_TCP_LAST_ACK, 0, port), 0);
    int end;
    read_to_end(c, &end, 1000);
    assert_int_equal(end, 0);   /* a FIN, not a reset: the unread bytes were drained */
    close(c);
    cw_loop_free(&loop);
}

static void test_owner_ignores_eof(void **state)
{
    ignore_eof(1);
}

static void test_owner_never_reads(void **state)
{
    ignore_eof(0);
}

/* ---- many at once ---- */

#define MANY 10000

static void raise_nofile(int want)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur >= (rlim_t)want)
        return;
    rl.rlim_cur = (rlim_t)want;
    if (rl.rlim_max < rl.rlim_cur)
        rl.rlim_max = rl.rlim_cur;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

static void many_accept(cw_acceptor *a, cw_stream *s, void *data)
{
    cw_stream **v = data;
    for (int i = 0; i < MANY; i++)
        if (!v[i]) {
            v[i] = s;
            break;
        }
}

static void many_closed(cw_stream *s, int how)
{
    int *closed = cw_stream_data(s);
    if (how == CW_OK)
        closed[0]++;
    else
        closed[1]++;
}

static const struct cw_stream_handlers many_handlers = {.on_closed = many_closed};

/* The peers: a child process (its own descriptor table: the hard
 * RLIMIT_NOFILE may be too low for both sides in one process) opens MANY
 * connections, says so on the pipe, then reads each to EOF and closes it. */
static pid_t many_peers(int port, int *ready_fd)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = cwt_fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        static int fds[MANY];
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        for (int i = 0; i < MANY; i++) {
            fds[i] = socket(AF_INET, SOCK_STREAM, 0);
            if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&a, sizeof a) < 0)
                _exit(10);
        }
        if (write(p[1], "r", 1) != 1)
            _exit(11);
        for (int i = 0; i < MANY; i++) {
            char b;
            if (recv(fds[i], &b, 1, 0) != 0)
                _exit(12);
            close(fds[i]);
        }
        _exit(0);
    }
    close(p[1]);
    *ready_fd = p[0];
    return pid;
}

static void test_ten_thousand_closed_at_once(void **state)
{
    raise_nofile(MANY + 200);
    cw_loop *loop;
    assert_int_equal(cw_loop_new(&loop), CW_OK);
    cw_listener *l;
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, 4096, &l), CW_OK);
    cw_stream **v = calloc(MANY, sizeof *v);
    struct cw_stream_opts o = opts(60000, 0, 5000);   /* an idle timer, as the server has */
    o.user_size = 40;   /* and its session's bytes (src/server/server.c) */
    cw_acceptor *a;
    assert_int_equal(cw_acceptor_new(loop, l, &o, many_accept, v, &a), CW_OK);
    struct cw_acceptor_stats st = {0};
    struct mallinfo2 m0 = mallinfo2();
    int ready;
    pid_t pid = many_peers(cw_listener_port(l), &ready);
    for (int i = 0; i < 3000 && (cw_acceptor_stats(a, &st), st.open < MANY); i++)
        run_for(loop, 5);
    assert_int_equal(st.open, MANY);
    char b;
    struct pollfd pr = {.fd = ready, .events = POLLIN};
    assert_int_equal(poll(&pr, 1, 5000), 1);
    assert_int_equal(read(ready, &b, 1), 1);   /* every connect returned */
    close(ready);
    /* Every stream started (an idle timer each, as the server has) and
     * idle: what did they cost? The heap, counted by malloc, and RSS. */
    int closed[2] = {0, 0};
    for (int i = 0; i < MANY; i++)
        assert_int_equal(cw_stream_start(v[i], &many_handlers, closed), CW_OK);
    run_for(loop, 20);
    struct mallinfo2 m1 = mallinfo2();
    long heap = (long)(m1.uordblks - m0.uordblks);
    printf("# idle stream with 40 user bytes: %ld bytes of heap each (malloc "
           "accounting: the stream, its timer-heap slot, the acceptor's share)\n",
           heap / MANY);
    for (int i = 0; i < MANY; i++)
        assert_null(v[i]->out);   /* no buffer while idle */
    /* Sanitizers and valgrind bring their own allocator: mallinfo2 sees
     * nothing there, and the bound is checked in the plain builds. */
    if (heap > 0)
        assert_true(heap / MANY <= 200);
    /* Close every one in one go; each peer closes when it reads EOF. */
    int64_t t0 = cw_now_ms();
    for (int i = 0; i < MANY; i++)
        assert_int_equal(cw_stream_close(v[i], CW_CLOSE_GRACEFUL, cw_now_ms() + 10000,
                                         NULL), CW_OK);
    int64_t deadline = cw_now_ms() + 20000;
    while (closed[0] + closed[1] < MANY && cw_now_ms() < deadline)
        run_for(loop, 10);
    printf("# %d streams closed at once: %d ended with the peer's FIN, %d otherwise, "
           "in %lld ms\n", MANY, closed[0], closed[1], (long long)(cw_now_ms() - t0));
    assert_int_equal(WEXITSTATUS(cwt_wait(pid, 10000)), 0);
    assert_int_equal(closed[0], MANY);
    assert_int_equal(cwt_count(CW_TCP_CLOSE_WAIT, 0, 0), 0);
    cw_acceptor_stats(a, &st);
    assert_int_equal(st.open, 0);
    cw_acceptor_free(&a);
    cw_listener_close(&l);
    free(v);
    cw_loop_free(&loop);
}

/* ---- dial ---- */

static void test_dial_refused_and_success(void **state)
{
    cw_loop *loop;
    assert_int_equal(cw_loop_new(&loop), CW_OK);
    int port = cwt_free_port();
    struct dialed d = {0};
    assert_int_equal(cw_stream_dial(loop, "127.0.0.1", (uint16_t)port, NULL,
                                    cw_now_ms() + 2000, NULL, on_dialed, &d), CW_OK);
    assert_true(run_until(loop, &d.calls, 3000));
    assert_int_equal(d.status, -ECONNREFUSED);
    assert_null(d.s);
    /* A name goes through the resolver thread; both families tried. */
    cw_listener *l;
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, 8, &l), CW_OK);
    struct dialed d2 = {0};
    assert_int_equal(cw_stream_dial(loop, "localhost", (uint16_t)cw_listener_port(l),
                                    NULL, cw_now_ms() + 3000, NULL, on_dialed, &d2), CW_OK);
    assert_true(run_until(loop, &d2.calls, 4000));
    assert_int_equal(d2.status, CW_OK);
    assert_non_null(d2.s);
    struct rec r = {0};
    start(&r, d2.s);
    cw_conn *srv;
    assert_int_equal(cw_accept(l, cw_now_ms() + 1000, &srv), CW_OK);
    assert_int_equal(cw_send_all(srv, "hi", 2, cw_now_ms() + 1000), CW_OK);
    cw_close(&srv, CW_CLOSE_GRACEFUL, cw_now_ms() + 1);
    r.on_end = CLOSE_GRACEFUL;
    assert_true(run_until(loop, &r.closed, 2000));
    assert_int_equal(r.got, 2);
    assert_int_equal(r.end, CW_EOF);
    struct dialed d3 = {0};
    assert_int_equal(cw_stream_dial(loop, "no-such-host.invalid", 80, NULL,
                                    cw_now_ms() + 3000, NULL, on_dialed, &d3), CW_OK);
    assert_true(run_until(loop, &d3.calls, 4000));
    printf("# async dial to a name that does not resolve: %s\n", cw_strerror(d3.status));
    assert_true(d3.status < 0);
    assert_null(d3.s);
    cw_listener_close(&l);
    cw_loop_free(&loop);
}

static char ns_a[64], ns_b[64];

static void test_dial_unreachable_times_out(void **state)
{
    if (cwt_netns_blackhole(ns_a, ns_b) != 0) {
        cwt_netns_del(ns_a);
        cwt_netns_del(ns_b);
        printf("# skipped: cannot create network namespaces (needs root and iproute2)\n");
        skip();
    }
    int orig = cwt_netns_enter(ns_a);
    cw_loop *loop;
    assert_int_equal(cw_loop_new(&loop), CW_OK);
    struct dialed d = {0};
    int64_t t0 = cw_now_ms();
    assert_int_equal(cw_stream_dial(loop, "198.18.0.2", 9, NULL, t0 + 500, NULL,
                                    on_dialed, &d), CW_OK);
    /* The loop keeps serving while the dial waits. */
    assert_true(run_until(loop, &d.calls, 3000));
    int64_t took = cw_now_ms() - t0;
    cw_loop_free(&loop);
    cwt_netns_leave(orig);
    cwt_netns_del(ns_a);
    cwt_netns_del(ns_b);
    printf("# async dial to an unanswering host: %s after %lld ms\n",
           cw_strerror(d.status), (long long)took);
    assert_int_equal(d.status, CW_ETIMEDOUT);
    assert_true(took >= 495 && took < 2000);
}

/* ---- acceptor under descriptor pressure ---- */

static void test_acceptor_emfile(void **state)
{
    skip_under_valgrind();
    struct accept_fx f;
    struct rec recs[16] = {{0}};
    struct cw_stream_opts o = opts(0, 0, 60000);
    accept_fx_new(&f, recs, 64, &o, NULL);
    cw_loop *loop = f.loop;
    /* Stream 0 lingers: closed gracefully, its peer never sends FIN. */
    int peers[9];
    peers[0] = accept_fx_dial(&f);
    assert_true(run_until(loop, &f.acc.n, 2000));
    cw_stream_close(recs[0].s, CW_CLOSE_GRACEFUL, cw_now_ms() + 60000, NULL);
    for (int i = 1; i < 9; i++)
        peers[i] = accept_fx_dial(&f);
    struct rlimit old;
    getrlimit(RLIMIT_NOFILE, &old);
    struct rlimit low = {(rlim_t)cwt_fd_count() + 3, old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    /* The lingering stream goes first; then a few fit, then EMFILE with
     * nothing to reclaim: accepting pauses, and the loop sleeps instead
     * of spinning on the readable listener. */
    uint64_t it = cw_loop_iterations(loop);
    run_for(loop, 500);
    uint64_t spins = cw_loop_iterations(loop) - it;
    struct cw_acceptor_stats st;
    cw_acceptor_stats(f.a, &st);
    uint64_t first = st.accepted;
    printf("# EMFILE: %llu accepted, %llu reclaimed, paused %llu times, %llu loop "
           "iterations in 500 ms\n", (unsigned long long)st.accepted,
           (unsigned long long)st.reclaimed, (unsigned long long)st.paused,
           (unsigned long long)spins);
    if (first < 2 || first >= 9 || st.paused < 1 || spins >= 50 || !recs[0].closed)
        setrlimit(RLIMIT_NOFILE, &old);
    assert_int_equal(recs[0].closed, 1);
    assert_int_equal(recs[0].how, CW_ETIMEDOUT);   /* as if its deadline passed */
    assert_int_equal(recs[0].cend, CW_END_EVICTED);
    assert_int_equal(st.reclaimed, 1);
    assert_true(first >= 2 && first < 9);   /* a few fit, not all */
    assert_true(st.paused >= 1);
    assert_true(spins < 50);   /* a 100 ms back-off, not a spin */
    /* After a second of idleness the streams are reclaimed, oldest first,
     * with -EMFILE, and the waiting connections get in. */
    int64_t deadline = cw_now_ms() + 5000;
    while (st.accepted < 9 && cw_now_ms() < deadline) {
        run_for(loop, 50);
        cw_acceptor_stats(f.a, &st);
    }
    run_for(loop, 20);   /* the last on_closed calls run in the loop */
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_int_equal(st.accepted, 9);
    assert_true(st.reclaimed >= 1 + 9 - first);
    assert_int_equal(recs[1].closed, 1);
    assert_int_equal(recs[1].how, -EMFILE);
    assert_int_equal(recs[1].cend, CW_END_EVICTED);
    accept_fx_free(&f, peers, 9);
}

/* The owner's pick goes before the acceptor's own choice: a fresh stream
 * it names is reclaimed (its last line arrives, then FIN), and a negative
 * answer protects even streams idle long enough for the acceptor. */
static int pick_victim = -1, pick_else;

static int pick(cw_acceptor *a, void *data, cw_stream **victim)
{
    struct accepted *acc = data;
    if (pick_victim < 0)
        return pick_else;
    *victim = acc->s[pick_victim];
    pick_victim = -1;
    assert_true(cw_stream_write(*victim, "ERR busy\n", 9) >= 0);
    return 1;
}

/* The soft limit at the lowest free descriptor: the next one fails. */
static void no_more_fds(const struct rlimit *old)
{
    int f = dup(0);
    assert_true(f >= 0);
    close(f);
    struct rlimit low = {(rlim_t)f, old->rlim_max};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
}

static void test_acceptor_pick(void **state)
{
    skip_under_valgrind();
    struct accept_fx f;
    struct rec recs[16] = {{0}};
    struct cw_stream_opts o = opts(0, 0, 60000);
    accept_fx_new(&f, recs, 64, &o, NULL);
    cw_loop *loop = f.loop;
    assert_int_equal(cw_acceptor_set_reclaim(f.a, pick), CW_OK);
    int peers[5];
    for (int i = 0; i < 3; i++)
        peers[i] = accept_fx_dial(&f);
    for (int i = 0; i < 100 && f.acc.n < 3; i++)
        run_for(loop, 10);
    assert_int_equal(f.acc.n, 3);
    struct rlimit old;
    getrlimit(RLIMIT_NOFILE, &old);
    /* The newest stream is the owner's pick; the acceptor alone would take
     * none of these (all younger than a second). */
    pick_victim = 2;
    pick_else = -1;
    peers[3] = accept_fx_dial(&f);
    no_more_fds(&old);
    for (int i = 0; i < 100 && f.acc.n < 4; i++)
        run_for(loop, 10);
    struct cw_acceptor_stats st;
    cw_acceptor_stats(f.a, &st);
    int end = 1;
    size_t got = read_to_end(peers[2], &end, 2000);
    if (f.acc.n != 4)
        setrlimit(RLIMIT_NOFILE, &old);
    assert_int_equal(f.acc.n, 4);
    assert_int_equal(st.reclaimed, 1);
    assert_int_equal(recs[2].closed, 1);
    assert_int_equal(recs[2].how, -EMFILE);
    assert_int_equal(recs[2].cend, CW_END_EVICTED);
    assert_int_equal(got, 9);   /* the last line, then */
    assert_int_equal(end, 0);   /* FIN, not RST */
    assert_int_equal(recs[0].closed + recs[1].closed, 0);
    /* Streams 0 and 1 are now idle for over a second, but the owner
     * protects them: accepting waits instead. */
    run_for(loop, 1100);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    peers[4] = accept_fx_dial(&f);
    no_more_fds(&old);
    run_for(loop, 300);
    cw_acceptor_stats(f.a, &st);
    if (st.reclaimed != 1 || f.acc.n != 4)
        setrlimit(RLIMIT_NOFILE, &old);
    assert_int_equal(st.reclaimed, 1);
    assert_int_equal(f.acc.n, 4);
    assert_true(st.paused >= 1);
    /* No preference: the acceptor's own choice, idle streams, the least
     * recently active first (a batch of them). */
    pick_else = 0;
    for (int i = 0; i < 100 && f.acc.n < 5; i++)
        run_for(loop, 10);
    run_for(loop, 20);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_int_equal(f.acc.n, 5);
    assert_int_equal(recs[0].closed, 1);
    assert_int_equal(recs[0].cend, CW_END_EVICTED);   /* oldest first */
    accept_fx_free(&f, peers, 5);
}

/* ---- closing plainly, evicting, cutting a close short ---- */

/* A plain close is a bare close(): with input left unread the kernel
 * resets (the trap it exists to show); with none, the peer gets what was
 * sent, then FIN. */
static void test_plain_close(void **state)
{
    for (int unread = 0; unread < 2; unread++) {
        cw_loop *loop;
        cw_stream *s;
        struct rec r = {0};
        int c = fixture(&loop, &s, &r, opts(0, 0, 5000), 0, 0);
        cw_stream_read_stop(s);
        if (unread)
            send_all(c, "junk\n", 5);
        run_for(loop, 50);
        assert_int_equal(cw_stream_write(s, "bye\n", 4), CW_OK);
        assert_int_equal(cw_stream_close(s, CW_CLOSE_PLAIN, CW_NEVER, NULL), CW_OK);
        assert_true(run_until(loop, &r.closed, 2000));
        assert_int_equal(r.how, CW_OK);
        assert_int_equal(r.cend, CW_END_PLAIN);
        int end;
        read_to_end(c, &end, 2000);
        assert_int_equal(end, unread ? -ECONNRESET : 0);
        close(c);
        cw_loop_free(&loop);
    }
}

/* Eviction reads what the peer sent first: a last line written just
 * before it arrives, then FIN, never RST. */
static void test_evict_sends_fin(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {0};
    int c = fixture(&loop, &s, &r, opts(0, 0, 5000), 0, 0);
    cw_stream_read_stop(s);
    send_all(c, "unread request\n", 15);
    run_for(loop, 50);
    assert_int_equal(cw_stream_write(s, "ERR busy\n", 9), CW_OK);
    assert_int_equal(cw_stream_evict(s), CW_OK);
    assert_int_equal(cw_stream_evict(s), CW_EINVAL);   /* ended already */
    assert_true(run_until(loop, &r.closed, 2000));
    assert_int_equal(r.how, -EMFILE);
    assert_int_equal(r.cend, CW_END_EVICTED);
    char buf[32];
    assert_int_equal(recv(c, buf, sizeof buf, 0), 9);
    int end;
    read_to_end(c, &end, 2000);
    assert_int_equal(end, 0);
    close(c);
    cw_loop_free(&loop);
}

/* An abort cuts a lingering close short: RST now, on_closed once. */
static void test_abort_cuts_linger_short(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {0};
    int c = fixture(&loop, &s, &r, opts(0, 0, 5000), 0, 0);
    assert_int_equal(cw_stream_close(s, CW_CLOSE_GRACEFUL, cw_now_ms() + 10000, NULL),
                     CW_OK);
    run_for(loop, 100);   /* lingering: the peer never sends FIN */
    assert_int_equal(r.closed, 0);
    assert_int_equal(cw_stream_close(s, CW_CLOSE_GRACEFUL, CW_NEVER, NULL), CW_EINVAL);
    assert_int_equal(cw_stream_close(s, CW_CLOSE_ABORT, 0, NULL), CW_OK);
    assert_int_equal(cw_stream_close(s, CW_CLOSE_ABORT, 0, NULL), CW_EINVAL);
    assert_true(run_until(loop, &r.closed, 2000));
    assert_int_equal(r.closed, 1);
    assert_int_equal(r.cend, CW_END_ABORT);
    /* Our FIN came first (lingering), then the RST: the peer's socket is
     * gone, so its next send fails. */
    int end;
    read_to_end(c, &end, 2000);
    assert_true(end == 0 || end == -ECONNRESET);
    assert_int_equal(send(c, "x", 1, MSG_NOSIGNAL), -1);
    assert_true(errno == ECONNRESET || errno == EPIPE);
    close(c);
    cw_loop_free(&loop);
}

/* write_more holds a last short line back for the close that follows:
 * nothing leaves before it, then the line and FIN. */
static void test_write_more_then_close(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {0};
    int c = fixture(&loop, &s, &r, opts(0, 0, 5000), 0, 0);
    int64_t t0 = cw_now_ms();
    assert_int_equal(cw_stream_write_more(s, "BYE\n", 4), CW_OK);
    struct pollfd p = {.fd = c, .events = POLLIN};
    int ready = poll(&p, 1, 20);
    if (cw_now_ms() - t0 < 150)   /* the kernel's cork lasts ~200 ms */
        assert_int_equal(ready, 0);
    assert_int_equal(cw_stream_close(s, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000, NULL),
                     CW_OK);
    char buf[16];
    assert_int_equal(recv(c, buf, sizeof buf, 0), 4);
    assert_memory_equal(buf, "BYE\n", 4);
    int end;
    read_to_end(c, &end, 2000);
    assert_int_equal(end, 0);
    close(c);
    assert_true(run_until(loop, &r.closed, 2000));
    assert_int_equal(r.cend, CW_END_GRACEFUL);
    cw_loop_free(&loop);
}

/* ---- the owner's memory and deadlines ---- */

static int user_ok;

static void user_closed(cw_stream *s, int how)
{
    unsigned char *u = cw_stream_user(s);
    user_ok = u && u[0] == 0xAB && u[63] == 0xCD;   /* still there */
}

static void test_user_area(void **state)
{
    cw_loop *loop;
    assert_int_equal(cw_loop_new(&loop), CW_OK);
    struct cw_stream_opts o = opts(0, 0, 5000);
    cw_stream *s;
    int c = pair(loop, &o, 0, 0, &s);
    assert_null(cw_stream_user(s));   /* user_size 0 */
    cw_stream_close(s, CW_CLOSE_ABORT, 0, NULL);
    run_for(loop, 10);
    close(c);
    o.user_size = CW_STREAM_USER_MAX + 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(cw_stream_adopt(loop, fd, &o, &s), CW_EINVAL);   /* fd closed */
    o.user_size = 64;
    c = pair(loop, &o, 0, 0, &s);
    unsigned char *u = cw_stream_user(s);
    assert_non_null(u);
    assert_int_equal((uintptr_t)u % 16, 0);
    for (int i = 0; i < 64; i++)
        assert_int_equal(u[i], 0);
    u[0] = 0xAB;
    u[63] = 0xCD;
    user_ok = 0;
    cw_stream_close(s, CW_CLOSE_GRACEFUL, cw_now_ms() + 1000, user_closed);
    shutdown(c, SHUT_WR);
    for (int i = 0; i < 300 && !user_ok; i++)
        run_for(loop, 10);
    assert_true(user_ok);
    close(c);
    cw_loop_free(&loop);
}

/* The owner's read deadline: input does not move it (idle timeout 0),
 * CW_NEVER removes it. */
static void test_read_deadline(void **state)
{
    cw_loop *loop;
    cw_stream *s;
    struct rec r = {0};
    int c = fixture(&loop, &s, &r, opts(0, 0, 5000), 0, 0);
    assert_int_equal(cw_stream_set_deadline(s, cw_now_ms() + 100), CW_OK);
    assert_int_equal(cw_stream_set_deadline(s, CW_NEVER), CW_OK);
    run_for(loop, 250);
    assert_int_equal(r.ends, 0);
    int64_t t0 = cw_now_ms();
    assert_int_equal(cw_stream_set_deadline(s, t0 + 300), CW_OK);
    /* A byte every 20 ms: about 15 before the deadline; a loaded machine
     * that ran this thread every 50 ms or so still sends the 5 asked. */
    for (int i = 0; i < 50 && !r.ends; i++) {
        send_all(c, "x", 1);
        run_for(loop, 20);
    }
    assert_int_equal(r.ends, 1);
    assert_int_equal(r.end, CW_ETIMEDOUT);
    assert_true(r.end_ms - t0 >= 300 && r.end_ms - t0 < 1000);
    assert_true(r.got >= 5);   /* bytes kept coming: they bought no time */
    cw_stream_close(s, CW_CLOSE_ABORT, 0, NULL);
    assert_true(run_until(loop, &r.closed, 1000));
    assert_int_equal(cw_stream_set_deadline(NULL, 0), CW_EINVAL);
    close(c);
    cw_loop_free(&loop);
}

/* The lingering timeout bounds the wait between two reads while draining,
 * the close deadline the whole: a peer that keeps sending is cut off at
 * the deadline (1 s), one that goes quiet after the timeout (300 ms, well
 * before its 4 s deadline). The peer sends every 50 ms: a loaded machine
 * may stall that six times over before the test means something else. */
static void test_linger_timeout(void **state)
{
    for (int talk = 0; talk < 2; talk++) {
        cw_loop *loop;
        cw_stream *s;
        struct rec r = {0};
        struct cw_stream_opts o = opts(0, 0, 5000);
        o.linger_timeout_ms = 300;
        int c = fixture(&loop, &s, &r, o, 0, 0);
        int64_t t0 = cw_now_ms();
        cw_stream_close(s, CW_CLOSE_GRACEFUL, t0 + (talk ? 1000 : 4000), NULL);
        while (!r.closed && cw_now_ms() - t0 < 6000) {
            if (talk)
                send(c, "x", 1, MSG_NOSIGNAL);
            run_for(loop, 50);
        }
        int64_t took = r.closed_ms - t0;
        printf("# linger timeout 300 ms, peer %s: closed after %lld ms\n",
               talk ? "sending every 50 ms, deadline 1 s" : "quiet, deadline 4 s",
               (long long)took);
        assert_int_equal(r.closed, 1);
        assert_int_equal(r.how, CW_ETIMEDOUT);
        if (talk)
            assert_true(took >= 1000 && took < 3000);
        else
            assert_true(took >= 300 && took < 3000);
        close(c);
        cw_loop_free(&loop);
    }
}

/* ---- the owner's say in accepting ---- */

static int admit_max;

static int admit_cap(cw_acceptor *a, void *data)
{
    struct accepted *acc = data;
    return acc->n < admit_max;
}

static int peer_port_seen;

static void on_accept_peer(cw_acceptor *a, cw_stream *s, void *data)
{
    socklen_t len = 0;
    const struct sockaddr_in *sa = (const void *)cw_acceptor_peer(a, &len);
    assert_non_null(sa);
    assert_int_equal(len, sizeof *sa);
    assert_int_equal(sa->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    peer_port_seen = ntohs(sa->sin_port);
    on_accept_rec(a, s, data);
}

static int count_walk(cw_stream *s, void *arg)
{
    (*(int *)arg)++;
    return 0;
}

static void test_acceptor_admit(void **state)
{
    struct accept_fx f;
    struct rec recs[16] = {{0}};
    struct cw_stream_opts o = opts(0, 0, 60000);
    accept_fx_new(&f, recs, 64, &o, on_accept_peer);
    cw_loop *loop = f.loop;
    assert_null(cw_acceptor_peer(f.a, NULL));   /* outside the callback */
    assert_int_equal(cw_acceptor_set_admit(f.a, admit_cap), CW_OK);
    admit_max = 2;
    int peers[3];
    for (int i = 0; i < 3; i++)
        peers[i] = accept_fx_dial(&f);
    run_for(loop, 200);
    assert_int_equal(f.acc.n, 2);   /* the third waits in the backlog */
    assert_int_equal(peer_port_seen, local_port_of(peers[1]));
    int n = 0;
    assert_int_equal(cw_acceptor_walk(f.a, count_walk, &n), CW_OK);
    assert_int_equal(n, 2);
    assert_null(cw_acceptor_idlest(f.a, 1000));   /* all fresh */
    assert_non_null(cw_acceptor_idlest(f.a, 0));
    /* A lingering stream is what cw_acceptor_reclaim takes first. */
    cw_stream_close(recs[0].s, CW_CLOSE_GRACEFUL, cw_now_ms() + 60000, NULL);
    run_for(loop, 20);
    struct cw_acceptor_stats st;
    cw_acceptor_stats(f.a, &st);
    assert_int_equal(st.closing, 1);
    assert_int_equal(cw_acceptor_reclaim(f.a, 1), 1);
    cw_acceptor_stats(f.a, &st);
    assert_int_equal(st.closing, 0);
    assert_int_equal(st.reclaimed, 1);
    /* Resumed by the owner (paused by the admit hook, it stays so). */
    run_for(loop, 100);
    assert_int_equal(f.acc.n, 2);
    admit_max = 3;
    assert_int_equal(cw_acceptor_resume(f.a), CW_OK);
    for (int i = 0; i < 300 && f.acc.n < 3; i++)
        run_for(loop, 10);
    assert_int_equal(f.acc.n, 3);
    assert_int_equal(peer_port_seen, local_port_of(peers[2]));
    /* An owner's pause holds even when streams end. */
    assert_int_equal(cw_acceptor_pause(f.a), CW_OK);
    admit_max = 16;
    int extra = accept_fx_dial(&f);
    cw_stream_close(recs[1].s, CW_CLOSE_ABORT, 0, NULL);
    run_for(loop, 100);
    assert_int_equal(f.acc.n, 3);
    assert_int_equal(cw_acceptor_resume(f.a), CW_OK);
    for (int i = 0; i < 300 && f.acc.n < 4; i++)
        run_for(loop, 10);
    assert_int_equal(f.acc.n, 4);
    close(extra);
    accept_fx_free(&f, peers, 3);
}

/* The acceptor's memory is its streams' options: freeing it while one
 * lives detaches, and the stream still works and ends cleanly. */
static void test_acceptor_freed_first(void **state)
{
    struct accept_fx f;
    struct rec recs[2] = {{0}};
    struct cw_stream_opts o = opts(0, 0, 60000);
    o.user_size = 32;
    accept_fx_new(&f, recs, 8, &o, NULL);
    cw_loop *loop = f.loop;
    int c = accept_fx_dial(&f);
    assert_true(run_until(loop, &f.acc.n, 2000));
    assert_non_null(cw_stream_user(f.acc.s[0]));
    cw_acceptor_free(&f.a);
    cw_listener_close(&f.l);
    send_all(c, "abc", 3);
    shutdown(c, SHUT_WR);
    for (int i = 0; i < 300 && !recs[0].ends; i++)
        run_for(loop, 10);
    assert_int_equal(recs[0].got, 3);
    assert_int_equal(recs[0].end, CW_EOF);
    cw_stream_close(f.acc.s[0], CW_CLOSE_GRACEFUL, cw_now_ms() + 1000, NULL);
    assert_true(run_until(loop, &recs[0].closed, 2000));
    assert_int_equal(recs[0].cend, CW_END_GRACEFUL);
    accept_fx_free(&f, &c, 1);
}

/* An ended stream's memory serves the next accept (the acceptor keeps
 * it: no malloc per connection in a churn), zeroed again: the new stream
 * sees none of the old one's user bytes or state, and works. Two streams
 * at once then take two different blocks. */
static void test_acceptor_reuses_memory(void **state)
{
    struct accept_fx f;
    struct rec recs[3] = {{0}};
    struct cw_stream_opts o = opts(0, 0, 60000);
    o.user_size = 40;
    accept_fx_new(&f, recs, 8, &o, NULL);
    cw_loop *loop = f.loop;
    int c[3];
    c[0] = accept_fx_dial(&f);
    assert_true(run_until(loop, &f.acc.n, 2000));
    cw_stream *old = f.acc.s[0];
    memset(cw_stream_user(old), 0xA5, 40);
    send_all(c[0], "abc", 3);
    shutdown(c[0], SHUT_WR);
    assert_true(run_until(loop, &recs[0].ends, 2000));
    assert_int_equal(cw_stream_close(old, CW_CLOSE_GRACEFUL, cw_now_ms() + 1000, NULL),
                     CW_OK);
    assert_true(run_until(loop, &recs[0].closed, 2000));
    assert_int_equal(recs[0].cend, CW_END_GRACEFUL);
    int n = 1;
    c[1] = accept_fx_dial(&f);
    for (int i = 0; i < 200 && f.acc.n == n; i++)
        run_for(loop, 10);
    assert_int_equal(f.acc.n, 2);
    cw_stream *s = f.acc.s[1];
    assert_ptr_equal(s, old);   /* the same block, LIFO */
    const unsigned char *u = cw_stream_user(s);
    for (int i = 0; i < 40; i++)
        assert_int_equal(u[i], 0);
    assert_int_equal(cw_stream_end(s), CW_END_NONE);
    assert_int_equal(cw_stream_queued(s), 0);
    assert_false(cw_stream_closing(s));
    c[2] = accept_fx_dial(&f);
    for (int i = 0; i < 200 && f.acc.n == 2; i++)
        run_for(loop, 10);
    assert_int_equal(f.acc.n, 3);
    assert_ptr_not_equal(f.acc.s[2], s);
    /* The reused stream reads, replies and closes like a new one. */
    send_all(c[1], "hello", 5);
    for (int i = 0; i < 200 && recs[1].got < 5; i++)
        run_for(loop, 10);
    assert_int_equal(recs[1].got, 5);
    assert_int_equal(cw_stream_write(s, "bye", 3), CW_OK);
    assert_int_equal(cw_stream_close(s, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000, NULL),
                     CW_OK);
    char b[8];
    int end;
    assert_int_equal(recv(c[1], b, sizeof b, MSG_WAITALL), 3);
    read_to_end(c[1], &end, 2000);
    assert_int_equal(end, 0);   /* FIN after the reply */
    close(c[1]);
    assert_true(run_until(loop, &recs[1].closed, 2000));
    assert_int_equal(recs[1].cend, CW_END_GRACEFUL);
    close(c[0]);
    /* Spares left in the acceptor are freed with it (ASan and valgrind
     * check; under ASan a spare is poisoned while kept). */
    accept_fx_free(&f, &c[2], 1);
}

/* A pick that refuses because its candidates are not ready asks for a
 * sooner retry: accepting is retried every 20 ms, not every 100 ms. */
static int retry_picks;

static int pick_retry(cw_acceptor *a, void *data, cw_stream **victim)
{
    retry_picks++;
    assert_int_equal(cw_acceptor_retry_at(a, cw_now_ms() + 20), CW_OK);
    return -1;
}

static void test_acceptor_retry_at(void **state)
{
    skip_under_valgrind();
    struct accept_fx f;
    struct rec recs[4] = {{0}};
    struct cw_stream_opts o = opts(0, 0, 60000);
    accept_fx_new(&f, recs, 64, &o, NULL);
    cw_loop *loop = f.loop;
    assert_int_equal(cw_acceptor_set_reclaim(f.a, pick_retry), CW_OK);
    assert_int_equal(cw_acceptor_retry_at(NULL, 0), CW_EINVAL);
    int peer = accept_fx_dial(&f);
    struct rlimit old;
    getrlimit(RLIMIT_NOFILE, &old);
    no_more_fds(&old);
    retry_picks = 0;
    run_for(loop, 400);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    struct cw_acceptor_stats st;
    cw_acceptor_stats(f.a, &st);
    printf("# pick asking for a retry in 20 ms: %d picks in 400 ms (a 100 ms "
           "back-off alone: at most 5)\n", retry_picks);
    assert_int_equal(f.acc.n, 0);
    assert_true(retry_picks >= 8);
    /* Descriptors back: the waiting connection gets in. */
    for (int i = 0; i < 300 && f.acc.n < 1; i++)
        run_for(loop, 10);
    assert_int_equal(f.acc.n, 1);
    accept_fx_free(&f, &peer, 1);
}

/* ---- fixed timeouts on the loop's FIFO queues ---- */

/* Where the stream's one timer is: 1 on a FIFO queue of the loop, 2 in
 * the timer heap, 0 nowhere. */
static int timer_place(const cw_stream *s)
{
    if (s->tm.h.slot)
        return 2;
    return s->tm.q.next ? 1 : 0;
}

/* Streams with the idle timeout wait on one queue, none in the heap; a
 * byte moves one to the tail, so it times out an idle period after its
 * last byte, the others an idle period after their start; never early.
 * The peers see the FIN of each close (the kernel's word, not ours). */
static void test_idle_timeouts_on_queue(void **state)
{
    enum { N = 12, IDLE = 250 };
    cw_loop *loop;
    assert_int_equal(cw_loop_new(&loop), CW_OK);
    struct cw_stream_opts o = opts(IDLE, 0, 5000);
    struct rec r[N];
    int c[N];
    int64_t last[N];
    memset(r, 0, sizeof r);
    for (int i = 0; i < N; i++) {
        cw_stream *s;
        c[i] = pair(loop, &o, 0, 0, &s);
        r[i].on_end = CLOSE_GRACEFUL;
        last[i] = cw_now_ms();   /* before the stream's own clock read */
        start(&r[i], s);
        assert_int_equal(timer_place(s), 1);
    }
    /* The even ones get a byte every 50 ms for 300 ms. */
    int64_t t0 = cw_now_ms();
    while (cw_now_ms() - t0 < 300) {
        for (int i = 0; i < N; i += 2)
            if (!r[i].ends) {
                send_all(c[i], "x", 1);
                last[i] = cw_now_ms();
            }
        run_for(loop, 50);
        /* On the queue with its exact deadline (moved on activity, not
         * left to fire early), behind every entry due before it. */
        for (int i = 0; i < N; i++)
            if (r[i].s && !r[i].ends) {
                assert_int_equal(timer_place(r[i].s), 1);
                assert_int_equal(r[i].s->tm.q.deadline, r[i].s->rdl);
                assert_true(r[i].s->tm.q.prev->deadline <= r[i].s->tm.q.deadline);
            }
    }
    int all = 0;
    for (int64_t end = cw_now_ms() + 3000; cw_now_ms() < end && all < N;) {
        run_for(loop, 10);
        all = 0;
        for (int i = 0; i < N; i++)
            all += r[i].closed;
    }
    assert_int_equal(all, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].end, CW_ETIMEDOUT);
        int64_t idle = r[i].end_ms - last[i];
        if (idle < IDLE || idle > IDLE + 1500)
            fail_msg("stream %d: timed out %lld ms after its last byte (timeout %d)",
                     i, (long long)idle, IDLE);
        int end;
        read_to_end(c[i], &end, 1000);
        assert_int_equal(end, 0);         /* our FIN arrived */
        close(c[i]);
    }
    cw_loop_free(&loop);
}

/* cw_stream_set_timeout: the owner's fixed timeout, on a queue; bytes buy
 * no time unless the owner sets it again (as the reference server does
 * per request); an earlier arbitrary deadline takes the heap and wins; a
 * later one set over a queued timeout is honoured too (the queued entry
 * fires early, finds nothing, and waits again). */
static int retime_on_bytes;

static void retime_read(cw_stream *s, ssize_t n, const char *buf)
{
    rec_read(s, n, buf);
    if (n > 0 && retime_on_bytes)
        assert_int_equal(cw_stream_set_timeout(s, 200), CW_OK);
}

static const struct cw_stream_handlers retime_handlers = {
    .on_read = retime_read, .on_closed = rec_closed,
};

static void test_set_timeout(void **state)
{
    for (int mode = 0; mode < 4; mode++) {
        cw_loop *loop;
        assert_int_equal(cw_loop_new(&loop), CW_OK);
        struct cw_stream_opts o = opts(0, 0, 5000);
        cw_stream *s;
        int c = pair(loop, &o, 0, 0, &s);
        struct rec r = {0};
        r.s = s;
        r.on_end = CLOSE_GRACEFUL;
        retime_on_bytes = mode != 1;   /* 1: bytes do not retime */
        assert_int_equal(cw_stream_start(s, &retime_handlers, &r), CW_OK);
        int64_t t0 = cw_now_ms(), last = t0, want;
        assert_int_equal(cw_stream_set_timeout(s, 200), CW_OK);
        assert_int_equal(timer_place(s), 1);
        if (mode <= 1) {   /* bytes every 50 ms for 300 ms */
            while (cw_now_ms() - t0 < 300 && !r.ends) {
                send_all(c, "x", 1);
                last = cw_now_ms();
                run_for(loop, 50);
            }
            want = mode == 0 ? last + 200 : t0 + 200;
        } else if (mode == 2) {   /* an earlier deadline: the heap */
            assert_int_equal(cw_stream_set_deadline(s, t0 + 80), CW_OK);
            assert_int_equal(timer_place(s), 2);
            want = t0 + 80;
        } else {   /* a later deadline over the queued timeout */
            assert_int_equal(cw_stream_set_deadline(s, t0 + 450), CW_OK);
            want = t0 + 450;
        }
        assert_true(run_until(loop, &r.closed, 3000));
        printf("# set_timeout mode %d: ended %lld ms after start, wanted %lld\n", mode,
               (long long)(r.end_ms - t0), (long long)(want - t0));
        assert_int_equal(r.end, CW_ETIMEDOUT);
        assert_true(r.end_ms >= want && r.end_ms < want + 1500);
        if (mode == 1)
            assert_true(r.got >= 3);   /* bytes came, and bought nothing */
        int end;
        read_to_end(c, &end, 1000);
        assert_int_equal(end, 0);
        close(c);
        assert_int_equal(cw_stream_set_timeout(NULL, 1), CW_EINVAL);
        cw_loop_free(&loop);
    }
}

/* The write timeout and the lingering timeout wait on queues too, and
 * still fire: a peer that never reads gets the write timeout's RST (seen
 * by the kernel: ECONNRESET on the peer); a lingering close whose peer
 * never sends its FIN ends at the lingering timeout, with our FIN sent. */
static void test_write_and_linger_on_queue(void **state)
{
    cw_loop *loop;
    assert_int_equal(cw_loop_new(&loop), CW_OK);
    struct cw_stream_opts o = opts(0, 300, 5000);
    o.linger_timeout_ms = 200;
    cw_stream *s;
    int c = pair(loop, &o, 4096, 4096, &s);
    struct rec r = {0};
    start(&r, s);
    int64_t t0 = cw_now_ms();
    assert_int_equal(queue_big(s, 4 << 20), 1);
    assert_int_equal(timer_place(s), 1);
    assert_int_equal(s->tm.q.deadline, s->out->due);
    assert_true(run_until(loop, &r.closed, 3000));
    assert_int_equal(r.how, CW_ETIMEDOUT);
    assert_int_equal(r.cend, CW_END_TIMEOUT);
    assert_true(r.closed_ms - t0 >= 300 && r.closed_ms - t0 < 2000);
    char buf[65536];
    ssize_t n;
    while ((n = recv(c, buf, sizeof buf, MSG_DONTWAIT)) > 0)
        ;
    assert_int_equal(n, -1);
    assert_int_equal(errno, ECONNRESET);
    close(c);

    struct rec q = {0};
    c = pair(loop, &o, 0, 0, &s);
    start(&q, s);
    t0 = cw_now_ms();
    assert_int_equal(cw_stream_close(s, CW_CLOSE_GRACEFUL, t0 + 5000, NULL), CW_OK);
    assert_int_equal(timer_place(s), 1);   /* lingering: 200 ms, a queue */
    assert_true(run_until(loop, &q.closed, 3000));
    assert_int_equal(q.how, CW_ETIMEDOUT);
    assert_true(q.closed_ms - t0 >= 200 && q.closed_ms - t0 < 2000);
    int end;
    read_to_end(c, &end, 1000);
    assert_int_equal(end, 0);   /* our FIN, then the close: no RST */
    close(c);
    cw_loop_free(&loop);
}

/* ---- the loop's time: one clock read per pass (cw__loop_now) ---- */

struct late_sender {
    int fd, delay_ms;
    int64_t sent_ms;
};

static void *send_late(void *arg)
{
    struct late_sender *ls = arg;
    usleep((useconds_t)ls->delay_ms * 1000);
    ls->sent_ms = cw_now_ms();
    send_all(ls->fd, "x", 1);
    return NULL;
}

/* A loop that has run one pass, and a stream on it with no timeout yet
 * whose owner closes gracefully at its end; returns the plain peer. */
static int pass_fixture(cw_loop **loop, struct rec *r,
                        const struct cw_stream_handlers *h)
{
    assert_int_equal(cw_loop_new(loop), CW_OK);
    struct cw_stream_opts o = opts(0, 0, 5000);
    int c = pair(*loop, &o, 0, 0, &r->s);
    r->on_end = CLOSE_GRACEFUL;
    assert_int_equal(cw_stream_start(r->s, h, r), CW_OK);
    run_for(*loop, 10);   /* a pass: the loop has a time of its own */
    return c;
}

/* r's stream ended by its timeout, no sooner than want_ms after since
 * (what) and no later than 1.5 s after that; then the peer reads our FIN
 * and closes, and the stream is freed with the loop. */
static void pass_fixture_end(cw_loop *loop, struct rec *r, int c, int64_t since,
                             const char *what)
{
    printf("# timeout ended %lld ms after %s (200 wanted)\n",
           (long long)(r->end_ms - since), what);
    assert_int_equal(r->ends, 1);
    assert_int_equal(r->end, CW_ETIMEDOUT);
    assert_true(r->end_ms - since >= 200 && r->end_ms - since < 1700);
    int end;
    read_to_end(c, &end, 1000);
    close(c);
    assert_true(run_until(loop, &r->closed, 5000));
    cw_loop_free(&loop);
}

/* The loop sleeps in epoll_wait until a byte comes 300 ms later; the byte
 * renews a 200 ms timeout. Computed from a time read before the sleep,
 * that timeout would be over at once: the pass's time must be read after
 * epoll_wait returns. */
static void test_loop_time_read_after_wakeup(void **state)
{
    cw_loop *loop;
    struct rec r = {0};
    retime_on_bytes = 1;
    int c = pass_fixture(&loop, &r, &retime_handlers);
    struct late_sender ls = {c, 300, 0};
    pthread_t t = cwt_thread(send_late, &ls);
    /* One timer only (run_until would tick every 2 ms): the loop sleeps
     * until the byte. */
    run_for(loop, 1900);
    cwt_join(t);
    assert_true(r.got == 1);
    pass_fixture_end(loop, &r, c, ls.sent_ms, "the byte");
}

/* Outside a pass (no loop running) a stream reads the real clock: a
 * timeout set 300 ms after the loop last ran counts from the call, not
 * from that old pass. */
static void test_loop_time_outside_a_pass(void **state)
{
    cw_loop *loop;
    struct rec r = {0};
    int c = pass_fixture(&loop, &r, &rec_handlers);
    usleep(300 * 1000);
    int64_t t0 = cw_now_ms();
    assert_int_equal(cw_stream_set_timeout(r.s, 200), CW_OK);
    assert_true(run_until(loop, &r.ends, 3000));
    pass_fixture_end(loop, &r, c, t0, "the call");
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_peer_fin_while_reading),
        CWT_TEST(test_peer_fin_while_paused),
        CWT_TEST(test_data_and_fin_in_one_segment),
        CWT_TEST(test_dup_outlives_stream),
        CWT_TEST(test_peer_fin_while_writes_queued),
        CWT_TEST(test_shutdown_after_queued_reply),
        CWT_TEST(test_rst_mid_write),
        CWT_TEST(test_kernel_timeout_is_reported),
        CWT_TEST(test_kernel_timeout_taken_by_flush),
        CWT_TEST(test_write_timeout_resets_and_frees),
        CWT_TEST(test_write_timeout_restarts_on_progress),
        CWT_TEST(test_idle_deadline),
        CWT_TEST(test_close_deadline_outside_callbacks),
        CWT_TEST(test_fin_after_idle_timeout_with_reply_queued),
        CWT_TEST(test_graceful_delivers_queued_reply),
        CWT_TEST(test_abort_loses_queued_reply),
        CWT_TEST(test_close_inside_read_callback),
        CWT_TEST(test_close_inside_terminal_callbacks),
        CWT_TEST(test_close_inside_drain_callback),
        CWT_TEST(test_close_other_in_same_batch),
        CWT_TEST(test_close_inside_accept_callback),
        CWT_TEST(test_close_inside_dial_callback),
        CWT_TEST(test_owner_ignores_eof),
        CWT_TEST(test_owner_never_reads),
        CWT_TEST(test_ten_thousand_closed_at_once),
        CWT_TEST(test_dial_refused_and_success),
        CWT_TEST(test_dial_unreachable_times_out),
        CWT_TEST(test_acceptor_emfile),
        CWT_TEST(test_acceptor_pick),
        CWT_TEST(test_plain_close),
        CWT_TEST(test_evict_sends_fin),
        CWT_TEST(test_abort_cuts_linger_short),
        CWT_TEST(test_write_more_then_close),
        CWT_TEST(test_user_area),
        CWT_TEST(test_read_deadline),
        CWT_TEST(test_linger_timeout),
        CWT_TEST(test_acceptor_admit),
        CWT_TEST(test_acceptor_freed_first),
        CWT_TEST(test_acceptor_reuses_memory),
        CWT_TEST(test_acceptor_retry_at),
        CWT_TEST(test_idle_timeouts_on_queue),
        CWT_TEST(test_set_timeout),
        CWT_TEST(test_write_and_linger_on_queue),
        CWT_TEST(test_loop_time_read_after_wakeup),
        CWT_TEST(test_loop_time_outside_a_pass),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
