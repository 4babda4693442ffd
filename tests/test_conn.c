/* test_conn.c - reads that end unambiguously: EOF, reset, timeout, sticky
 * results, line framing, argument checks, SIGPIPE. */
#include "cwtest.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

struct closer {
    cw_conn *conn;
    int delay_ms;
    enum cw_close_how how;
};

static void *close_later(void *arg)
{
    struct closer *cl = arg;
    cwt_sleep_ms(cl->delay_ms);
    cw_close(&cl->conn, cl->how, cw_now_ms() + 2000);
    return NULL;
}

/* The seed's failure, made impossible: the peer closes while we are blocked
 * in a read; we get CW_EOF, the kernel shows CLOSE_WAIT, and after cw_close
 * the socket is gone from the kernel's table. */
static void test_peer_close_while_blocked(void **state)
{
    cw_conn *c, *s;
    cwt_pair(NULL, NULL, &c, &s);
    int lport = cwt_local_port(c), rport = cwt_peer_port(c);
    struct closer cl = {.conn = s, .delay_ms = 100, .how = CW_CLOSE_GRACEFUL};
    pthread_t t = cwt_thread(close_later, &cl);
    char buf[64];
    assert_int_equal(cw_recv(c, buf, sizeof buf, cw_now_ms() + 5000), CW_EOF);
    assert_int_equal(cwt_count(CW_TCP_CLOSE_WAIT, lport, rport), 1);
    assert_int_equal(cw_tcp_state(c), CW_TCP_CLOSE_WAIT);
    assert_string_equal(cw_tcp_state_name(cw_tcp_state(c)), "CLOSE_WAIT");
    assert_int_equal(cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000), CW_OK);
    assert_null(c);
    cwt_join(t);
    /* Passive closer: LAST_ACK, then nothing left with our local port. */
    assert_int_equal(cwt_wait_count(0, lport, rport, 0, 2000), 0);
}

static void test_eof_is_sticky(void **state)
{
    cw_conn *c, *s;
    cwt_pair(NULL, NULL, &c, &s);
    assert_int_equal(cw_send_all(s, "last\n", 5, CW_NEVER), CW_OK);
    assert_int_equal(cw_close(&s, CW_CLOSE_GRACEFUL, cw_now_ms() + 50), CW_ETIMEDOUT);
    char buf[64];
    assert_int_equal(cw_recv(c, buf, sizeof buf, cw_now_ms() + 2000), 5);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(cw_recv(c, buf, sizeof buf, cw_now_ms() + 2000), CW_EOF);
        assert_int_equal(cw_readline(c, buf, sizeof buf, cw_now_ms() + 2000), CW_EOF);
    }
    assert_int_equal(cw_peer_closed(c), 1);
    assert_int_equal(cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000), CW_OK);
}

static void test_reset_is_sticky(void **state)
{
    cw_conn *c, *s;
    cwt_pair(NULL, NULL, &c, &s);
    assert_int_equal(cw_close(&s, CW_CLOSE_ABORT, CW_NEVER), CW_OK);
    char buf[64];
    for (int i = 0; i < 3; i++)
        assert_int_equal(cw_recv(c, buf, sizeof buf, cw_now_ms() + 2000), CW_ERESET);
    assert_int_equal(cw_send_all(c, "x", 1, cw_now_ms() + 2000), CW_ERESET);
    assert_int_equal(cw_peer_closed(c), 1);
    assert_int_equal(cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000), CW_ERESET);
}

static void test_read_timeout_within_deadline(void **state)
{
    cw_conn *c, *s;
    cwt_pair(NULL, NULL, &c, &s);
    char buf[32];
    int64_t t0 = cw_now_ms();
    assert_int_equal(cw_recv(c, buf, sizeof buf, t0 + 200), CW_ETIMEDOUT);
    int64_t took = cw_now_ms() - t0;
    assert_true(took >= 195 && took < 1500);
    /* sticky, and immediate the second time */
    t0 = cw_now_ms();
    assert_int_equal(cw_recv(c, buf, sizeof buf, t0 + 5000), CW_ETIMEDOUT);
    assert_true(cw_now_ms() - t0 < 100);
    /* a final message can still be sent after a read timeout */
    assert_int_equal(cw_send_all(c, "ERR idle timeout\n", 17, cw_now_ms() + 1000), CW_OK);
    assert_int_equal(cw_readline(s, buf, sizeof buf, cw_now_ms() + 1000), 16);
    assert_string_equal(buf, "ERR idle timeout");
    cw_close(&s, CW_CLOSE_ABORT, CW_NEVER);
    cw_close(&c, CW_CLOSE_ABORT, CW_NEVER);
}

/* The SO_RCVTIMEO equivalent: the conn's read timeout bounds a read that
 * was given no deadline at all. */
static void test_read_timeout_option(void **state)
{
    struct cw_opts o;
    cw_opts_init(&o);
    o.read_timeout_ms = 150;
    cw_conn *c, *s;
    cwt_pair(NULL, &o, &c, &s);
    char buf[16];
    int64_t t0 = cw_now_ms();
    assert_int_equal(cw_recv(c, buf, sizeof buf, CW_NEVER), CW_ETIMEDOUT);
    int64_t took = cw_now_ms() - t0;
    assert_true(took >= 145 && took < 1500);
    cw_close(&s, CW_CLOSE_ABORT, CW_NEVER);
    cw_close(&c, CW_CLOSE_ABORT, CW_NEVER);
}

static void on_alarm(int sig) { (void)sig; }

/* A signal without SA_RESTART must neither end a read early nor stretch it. */
static void test_eintr_is_handled(void **state)
{
    struct sigaction sa = {.sa_handler = on_alarm}, old;
    sigaction(SIGALRM, &sa, &old);
    struct itimerval it = {.it_interval = {0, 10000}, .it_value = {0, 10000}};
    setitimer(ITIMER_REAL, &it, NULL);
    cw_conn *c, *s;
    cwt_pair(NULL, NULL, &c, &s);
    char buf[16];
    int64_t t0 = cw_now_ms();
    assert_int_equal(cw_recv(c, buf, sizeof buf, t0 + 300), CW_ETIMEDOUT);
    int64_t took = cw_now_ms() - t0;
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    sigaction(SIGALRM, &old, NULL);
    assert_true(took >= 295 && took < 1500);
    cw_close(&s, CW_CLOSE_ABORT, CW_NEVER);
    cw_close(&c, CW_CLOSE_ABORT, CW_NEVER);
}

static void test_readline_framing(void **state)
{
    cw_conn *c, *s;
    cwt_pair(NULL, NULL, &c, &s);
    const char msg[] = "AUTH a b\r\nECHO hi\n\nexactly10!\nthis line is too long\nrest";
    assert_int_equal(cw_send_all(s, msg, sizeof msg - 1, CW_NEVER), CW_OK);
    cw_close(&s, CW_CLOSE_GRACEFUL, cw_now_ms() + 50);
    char buf[11];
    int64_t dl = cw_now_ms() + 2000;
    assert_int_equal(cw_readline(c, buf, sizeof buf, dl), 8);
    assert_string_equal(buf, "AUTH a b");
    assert_int_equal(cw_readline(c, buf, sizeof buf, dl), 7);
    assert_string_equal(buf, "ECHO hi");
    assert_int_equal(cw_readline(c, buf, sizeof buf, dl), 0);
    assert_int_equal(cw_readline(c, buf, sizeof buf, dl), 10);
    assert_string_equal(buf, "exactly10!");
    assert_int_equal(cw_readline(c, buf, sizeof buf, dl), CW_ETOOLONG);
    assert_int_equal(cw_readline(c, buf, sizeof buf, dl), CW_ETOOLONG);
    cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000);
}

static void test_readline_partial_line_at_eof(void **state)
{
    cw_conn *c, *s;
    cwt_pair(NULL, NULL, &c, &s);
    assert_int_equal(cw_send_all(s, "one\ntwo", 7, CW_NEVER), CW_OK);
    assert_int_equal(shutdown(cw_conn_fd(s), SHUT_WR), 0);
    char buf[32];
    int64_t dl = cw_now_ms() + 2000;
    assert_int_equal(cw_readline(c, buf, sizeof buf, dl), 3);
    assert_int_equal(cw_readline(c, buf, sizeof buf, dl), 3);
    assert_string_equal(buf, "two");
    assert_int_equal(cw_readline(c, buf, sizeof buf, dl), CW_EOF);
    assert_int_equal(cw_recv(c, buf, sizeof buf, dl), CW_EOF);
    cw_close(&c, CW_CLOSE_GRACEFUL, dl);
    assert_int_equal(cw_close(&s, CW_CLOSE_GRACEFUL, dl), CW_OK);
}

/* Bytes read ahead by cw_readline are handed out by cw_recv first. */
static void test_recv_after_readline(void **state)
{
    cw_conn *c, *s;
    cwt_pair(NULL, NULL, &c, &s);
    assert_int_equal(cw_send_all(s, "head\nbody", 9, CW_NEVER), CW_OK);
    char buf[32];
    int64_t dl = cw_now_ms() + 2000;
    assert_int_equal(cw_readline(c, buf, sizeof buf, dl), 4);
    ssize_t n = cw_recv(c, buf, sizeof buf, dl);
    assert_int_equal(n, 4);
    assert_memory_equal(buf, "body", 4);
    cw_close(&s, CW_CLOSE_ABORT, CW_NEVER);
    cw_close(&c, CW_CLOSE_ABORT, CW_NEVER);
}

static void test_bad_arguments(void **state)
{
    char buf[8];
    cw_conn *c = NULL, *s;
    assert_int_equal(cw_recv(NULL, buf, sizeof buf, CW_NEVER), CW_EINVAL);
    assert_int_equal(cw_send_all(NULL, "x", 1, CW_NEVER), CW_EINVAL);
    assert_int_equal(cw_readline(NULL, buf, sizeof buf, CW_NEVER), CW_EINVAL);
    assert_int_equal(cw_close(NULL, CW_CLOSE_GRACEFUL, CW_NEVER), CW_EINVAL);
    assert_int_equal(cw_close(&c, CW_CLOSE_GRACEFUL, CW_NEVER), CW_EINVAL);
    assert_int_equal(cw_peer_closed(NULL), CW_EINVAL);
    assert_int_equal(cw_tcp_state(NULL), CW_EINVAL);
    assert_int_equal(cw_dial("127.0.0.1", 1, NULL, CW_NEVER, NULL), CW_EINVAL);
    assert_int_equal(cw_dial("127.0.0.1", 0, NULL, CW_NEVER, &c), CW_EINVAL);
    assert_int_equal(cw_listen(NULL, 0, NULL, 1, NULL), CW_EINVAL);
    assert_int_equal(cw_accept(NULL, CW_NEVER, &c), CW_EINVAL);
    assert_int_equal(cw_listener_close(NULL), CW_EINVAL);
    assert_int_equal(cw_dial("no-such-host.invalid", 80, NULL, cw_now_ms() + 5000, &c),
                     CW_ERESOLVE);
    cwt_pair(NULL, NULL, &c, &s);
    assert_int_equal(cw_recv(c, NULL, 8, CW_NEVER), CW_EINVAL);
    assert_int_equal(cw_recv(c, buf, 0, CW_NEVER), CW_EINVAL);
    assert_int_equal(cw_send_all(c, buf, 0, CW_NEVER), CW_EINVAL);
    assert_int_equal(cw_readline(c, buf, 0, CW_NEVER), CW_EINVAL);
    cw_close(&s, CW_CLOSE_ABORT, CW_NEVER);
    assert_int_equal(cw_close(&c, CW_CLOSE_ABORT, CW_NEVER), CW_OK);
    /* the closed handle is NULL now: every call is a clean CW_EINVAL */
    assert_int_equal(cw_close(&c, CW_CLOSE_ABORT, CW_NEVER), CW_EINVAL);
    assert_int_equal(cw_recv(c, buf, sizeof buf, CW_NEVER), CW_EINVAL);
    assert_int_equal(cw_send_all(c, "x", 1, CW_NEVER), CW_EINVAL);
    for (int rc = -10005; rc <= 0; rc++)
        assert_non_null(cw_strerror(rc));
}

/* Writing to a peer that is gone must return an error, never kill us. */
static void test_no_sigpipe(void **state)
{
    cw_conn *c, *s;
    cwt_pair(NULL, NULL, &c, &s);
    cw_close(&s, CW_CLOSE_GRACEFUL, cw_now_ms() + 50);
    static char big[65536];
    int rc = CW_OK;
    for (int i = 0; i < 100 && rc == CW_OK; i++) {
        rc = cw_send_all(c, big, sizeof big, cw_now_ms() + 2000);
        cwt_sleep_ms(1);
    }
    assert_true(rc == CW_ERESET || rc == -EPIPE);
    cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000);
}

/* The seed's client: the server sends its final message and resets
 * (unread input). Our write fails, but the message is still readable, and
 * the read that follows reports the reset, not a clean EOF. */
static void test_final_message_survives_failed_send(void **state)
{
    cw_conn *c;
    int sfd;
    cwt_pair_raw(NULL, &c, &sfd);
    assert_int_equal(cw_send_all(c, "AUTH u wrong\n", 13, CW_NEVER), CW_OK);
    cwt_sleep_ms(20);
    assert_int_equal(write(sfd, "ERR bad credentials\n", 20), 20);
    /* plain close() with unread input: the kernel sends RST, not FIN */
    close(sfd);
    cwt_sleep_ms(20);
    assert_int_equal(cw_send_all(c, "ECHO x\n", 7, cw_now_ms() + 1000), CW_ERESET);
    char buf[64];
    assert_int_equal(cw_readline(c, buf, sizeof buf, cw_now_ms() + 1000), 19);
    assert_string_equal(buf, "ERR bad credentials");
    assert_int_equal(cw_readline(c, buf, sizeof buf, cw_now_ms() + 1000), CW_ERESET);
    assert_int_equal(cw_recv(c, buf, sizeof buf, cw_now_ms() + 1000), CW_ERESET);
    cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 1000);
}

/* For code that holds idle connections: the peer's FIN or RST is seen
 * without reading, and without consuming anything. */
static void test_peer_closed_on_idle_conn(void **state)
{
    cw_conn *c, *s;
    cwt_pair(NULL, NULL, &c, &s);
    assert_int_equal(cw_peer_closed(c), 0);
    assert_int_equal(cw_send_all(s, "bye\n", 4, CW_NEVER), CW_OK);
    assert_int_equal(cw_peer_closed(c), 0);
    assert_int_equal(shutdown(cw_conn_fd(s), SHUT_WR), 0);
    int64_t end = cw_now_ms() + 2000;
    while (cw_peer_closed(c) == 0 && cw_now_ms() < end)
        cwt_sleep_ms(1);
    assert_int_equal(cw_peer_closed(c), 1);
    char buf[8];
    assert_int_equal(cw_readline(c, buf, sizeof buf, cw_now_ms() + 1000), 3);
    assert_int_equal(cw_readline(c, buf, sizeof buf, cw_now_ms() + 1000), CW_EOF);
    cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 1000);
    assert_int_equal(cw_close(&s, CW_CLOSE_GRACEFUL, cw_now_ms() + 1000), CW_OK);
}

struct flooder {
    cw_conn *conn;
    size_t sent;
    int rc;
};

/* A peer that never stops sending and never closes. */
static void *flood(void *arg)
{
    struct flooder *f = arg;
    static char chunk[65536];
    while ((f->rc = cw_send_all(f->conn, chunk, sizeof chunk, cw_now_ms() + 3000)) == CW_OK)
        f->sent += sizeof chunk;
    return NULL;
}

/* Graceful close says how it ended, and ends within its bounds: the
 * deadline against a silent peer, the drain limit against a flood. */
static void test_graceful_close_reports_how_it_ended(void **state)
{
    cw_conn *c, *s;
    cwt_pair(NULL, NULL, &c, &s);
    int64_t t0 = cw_now_ms();
    assert_int_equal(cw_close(&c, CW_CLOSE_GRACEFUL, t0 + 150), CW_ETIMEDOUT);
    int64_t took = cw_now_ms() - t0;
    assert_true(took >= 145 && took < 1500);
    char buf[8];
    assert_int_equal(cw_recv(s, buf, sizeof buf, cw_now_ms() + 1000), CW_EOF);
    cw_close(&s, CW_CLOSE_GRACEFUL, cw_now_ms() + 1000);

    cwt_pair(NULL, NULL, &c, &s);
    struct flooder f = {.conn = s};
    pthread_t t = cwt_thread(flood, &f);
    t0 = cw_now_ms();
    assert_int_equal(cw_close(&c, CW_CLOSE_GRACEFUL, t0 + 10000), CW_ETOOLONG);
    assert_true(cw_now_ms() - t0 < 5000);
    cwt_join(t);
    assert_true(f.sent >= 1024 * 1024);
    /* Our close with unread data sent a RST. The flooder had our FIN, so it
     * was in CLOSE_WAIT, where Linux reports a RST as EPIPE; its own close
     * still finds our FIN and reports a clean end. */
    assert_int_equal(f.rc, -EPIPE);
    assert_int_equal(cw_close(&s, CW_CLOSE_GRACEFUL, cw_now_ms() + 1000), CW_OK);
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_peer_close_while_blocked),
        CWT_TEST(test_eof_is_sticky),
        CWT_TEST(test_reset_is_sticky),
        CWT_TEST(test_read_timeout_within_deadline),
        CWT_TEST(test_read_timeout_option),
        CWT_TEST(test_eintr_is_handled),
        CWT_TEST(test_readline_framing),
        CWT_TEST(test_readline_partial_line_at_eof),
        CWT_TEST(test_recv_after_readline),
        CWT_TEST(test_bad_arguments),
        CWT_TEST(test_no_sigpipe),
        CWT_TEST(test_final_message_survives_failed_send),
        CWT_TEST(test_peer_closed_on_idle_conn),
        CWT_TEST(test_graceful_close_reports_how_it_ended),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
