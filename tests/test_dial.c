/* test_dial.c - dial and listen: every address, deadlines that hold when
 * the network does not answer, SO_REUSEADDR against TIME_WAIT, options. */
// cw-test-timeout: 120
#include "cwtest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void echo_once(cw_conn *c, cw_conn *s)
{
    char buf[16];
    assert_int_equal(cw_send_all(c, "ping\n", 5, cw_now_ms() + 2000), CW_OK);
    assert_int_equal(cw_readline(s, buf, sizeof buf, cw_now_ms() + 2000), 4);
    assert_string_equal(buf, "ping");
}

static void test_ipv6_loopback(void **state)
{
    cw_conn *c, *s;
    cwt_pair("::1", NULL, &c, &s);
    echo_once(c, s);
    char peer[64];
    assert_int_equal(cw_conn_peer(c, peer, sizeof peer), CW_OK);
    assert_true(strncmp(peer, "[::1]:", 6) == 0);
    cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 50);
    assert_int_equal(cw_close(&s, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000), CW_OK);
}

/* A name with an IPv6 and an IPv4 address: whichever one listens, the dial
 * finds it after the other refuses. The name lives in a hosts file
 * bind-mounted over /etc/hosts in a private mount namespace of a child. */
static int dial_both_families(void)
{
    const char *hosts[] = {"127.0.0.1", "::1"};
    for (int i = 0; i < 2; i++) {
        struct cw_opts o;
        cw_opts_init(&o);
        o.v6only = 1;
        cw_listener *l;
        cw_conn *c, *s;
        if (cw_listen(hosts[i], 0, &o, 8, &l) != CW_OK)
            return 10 + i;
        if (cw_dial("cwtest-dual", (uint16_t)cw_listener_port(l), NULL,
                    cw_now_ms() + 2000, &c) != CW_OK)
            return 20 + i;
        if (cw_accept(l, cw_now_ms() + 2000, &s) != CW_OK)
            return 30 + i;
        cw_close(&c, CW_CLOSE_ABORT, CW_NEVER);
        cw_close(&s, CW_CLOSE_ABORT, CW_NEVER);
        cw_listener_close(&l);
    }
    return 0;
}

static void test_dial_tries_every_address(void **state)
{
    char hosts[] = "/tmp/cwtest-hosts-XXXXXX";
    int fd = mkstemp(hosts);
    assert_true(fd >= 0);
    const char text[] = "::1 cwtest-dual\n127.0.0.1 cwtest-dual\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)sizeof text - 1);
    close(fd);
    pid_t pid = cwt_fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (unshare(CLONE_NEWNS) < 0 ||
            mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0 ||
            mount(hosts, "/etc/hosts", "none", MS_BIND, NULL) < 0)
            _exit(77);
        _exit(dial_both_families());
    }
    int status = cwt_wait(pid, 20000);
    unlink(hosts);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
        printf("# skipped: needs a private mount namespace (root)\n");
        skip();
    }
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_dual_stack_listener(void **state)
{
    cw_listener *l;
    assert_int_equal(cw_listen(NULL, 0, NULL, 8, &l), CW_OK);
    const char *hosts[] = {"127.0.0.1", "::1"};
    for (int i = 0; i < 2; i++) {
        cw_conn *c, *s;
        assert_int_equal(cw_dial(hosts[i], (uint16_t)cw_listener_port(l), NULL,
                                 cw_now_ms() + 2000, &c), CW_OK);
        assert_int_equal(cw_accept(l, cw_now_ms() + 2000, &s), CW_OK);
        echo_once(c, s);
        cw_close(&c, CW_CLOSE_ABORT, CW_NEVER);
        cw_close(&s, CW_CLOSE_ABORT, CW_NEVER);
    }
    cw_listener_close(&l);
}

static void test_refused_and_accept_timeout(void **state)
{
    cw_listener *l;
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, 8, &l), CW_OK);
    int port = cw_listener_port(l);
    int64_t t0 = cw_now_ms();
    cw_conn *s;
    assert_int_equal(cw_accept(l, t0 + 100, &s), CW_ETIMEDOUT);
    assert_true(cw_now_ms() - t0 >= 95);
    assert_null(s);
    cw_listener_close(&l);
    cw_conn *c;
    assert_int_equal(cw_dial("127.0.0.1", (uint16_t)port, NULL, cw_now_ms() + 2000, &c),
                     -ECONNREFUSED);
    assert_null(c);
}

/* A listener whose accept queue is full drops new SYNs: the dial must end
 * at its deadline, not after the kernel's minutes of SYN retries. */
static void test_dial_backlog_full_times_out(void **state)
{
    cw_listener *l;
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, 1, &l), CW_OK);
    uint16_t port = (uint16_t)cw_listener_port(l);
    cw_conn *held[16] = {0};
    int n = 0, rc = CW_OK;
    int64_t took = 0;
    while (n < 16) {
        int64_t t0 = cw_now_ms();
        rc = cw_dial("127.0.0.1", port, NULL, t0 + 300, &held[n]);
        took = cw_now_ms() - t0;
        if (rc != CW_OK)
            break;
        n++;
    }
    printf("# accept queue full after %d connections; dial ended after %lld ms\n",
           n, (long long)took);
    assert_int_equal(rc, CW_ETIMEDOUT);
    assert_true(took >= 295 && took < 2000);
    for (int i = 0; i < n; i++)
        cw_close(&held[i], CW_CLOSE_ABORT, CW_NEVER);
    cw_listener_close(&l);
}

/* Two test hosts in namespaces made here: A dials B over a veth pair, and
 * B's replies to A are black-holed, so A's SYNs are never answered. The
 * 198.18.0.0/15 benchmarking range exists only inside these namespaces. */
static char ns_a[64], ns_b[64];

static int netns_up(void)
{
    return cwt_netns_blackhole(ns_a, ns_b);
}

static void netns_down(void)
{
    cwt_netns_del(ns_a);
    cwt_netns_del(ns_b);
}

static void test_dial_unreachable_times_out(void **state)
{
    if (netns_up() != 0) {
        netns_down();
        printf("# skipped: cannot create network namespaces (needs root and iproute2)\n");
        skip();
    }
    int orig = cwt_netns_enter(ns_a);
    cw_conn *c;
    int64_t t0 = cw_now_ms();
    int rc = cw_dial("198.18.0.2", 9, NULL, t0 + 500, &c);
    int64_t took = cw_now_ms() - t0;
    cwt_netns_leave(orig);
    netns_down();
    printf("# dial to an unanswering host: %s after %lld ms\n", cw_strerror(rc),
           (long long)took);
    assert_int_equal(rc, CW_ETIMEDOUT);
    assert_true(took >= 495 && took < 2000);
}

/* The server closes first, so its side of the connection sits in
 * TIME_WAIT on the listening port. A restarted server can bind that port
 * again only with SO_REUSEADDR. */
static void test_reuseaddr_rebinds_over_time_wait(void **state)
{
    cw_listener *l;
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, 8, &l), CW_OK);
    uint16_t port = (uint16_t)cw_listener_port(l);
    cw_conn *c, *s;
    assert_int_equal(cw_dial("127.0.0.1", port, NULL, cw_now_ms() + 2000, &c), CW_OK);
    assert_int_equal(cw_accept(l, cw_now_ms() + 2000, &s), CW_OK);
    int cport = cwt_local_port(c);
    assert_int_equal(shutdown(cw_conn_fd(s), SHUT_WR), 0);
    char buf[8];
    assert_int_equal(cw_recv(c, buf, sizeof buf, cw_now_ms() + 2000), CW_EOF);
    assert_int_equal(cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000), CW_OK);
    assert_int_equal(cw_close(&s, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000), CW_OK);
    cw_listener_close(&l);
    /* by both ports: unrelated TIME_WAIT sockets may share one of them */
    assert_int_equal(cwt_wait_count(CW_TCP_TIME_WAIT, port, cport, 1, 2000), 1);

    struct cw_opts no_reuse;
    cw_opts_init(&no_reuse);
    no_reuse.reuseaddr = 0;
    assert_int_equal(cw_listen("127.0.0.1", port, &no_reuse, 8, &l), -EADDRINUSE);
    assert_null(l);
    assert_int_equal(cw_listen("127.0.0.1", port, NULL, 8, &l), CW_OK);
    cw_listener_close(&l);
}

/* The seed's "reuse one local port": the previous connection from port Q
 * to the same peer is in TIME_WAIT (the client closed first). Returns what
 * the second dial to the same peer gives; checks the bind rules on the way:
 * without SO_REUSEADDR the bind itself fails, and another peer always works. */
static int redial_over_time_wait(void)
{
    cw_listener *l1, *l2;
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, 8, &l1), CW_OK);
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, 8, &l2), CW_OK);
    struct cw_opts o;
    cw_opts_init(&o);
    o.bind_host = "127.0.0.1";
    o.bind_port = (uint16_t)cwt_free_port();
    o.reuseaddr = 1;
    cw_conn *c, *s;
    uint16_t p1 = (uint16_t)cw_listener_port(l1), p2 = (uint16_t)cw_listener_port(l2);
    assert_int_equal(cw_dial("127.0.0.1", p1, &o, cw_now_ms() + 2000, &c), CW_OK);
    assert_int_equal(cwt_local_port(c), o.bind_port);
    assert_int_equal(cw_accept(l1, cw_now_ms() + 2000, &s), CW_OK);
    assert_int_equal(shutdown(cw_conn_fd(c), SHUT_WR), 0);
    char buf[8];
    assert_int_equal(cw_recv(s, buf, sizeof buf, cw_now_ms() + 2000), CW_EOF);
    assert_int_equal(cw_close(&s, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000), CW_OK);
    assert_int_equal(cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000), CW_OK);
    assert_int_equal(cwt_wait_count(CW_TCP_TIME_WAIT, o.bind_port, p1, 1, 2000), 1);

    o.reuseaddr = 0;
    assert_int_equal(cw_dial("127.0.0.1", p2, &o, cw_now_ms() + 2000, &c), -EADDRINUSE);
    o.reuseaddr = 1;
    assert_int_equal(cw_dial("127.0.0.1", p2, &o, cw_now_ms() + 2000, &c), CW_OK);
    assert_int_equal(cw_accept(l2, cw_now_ms() + 2000, &s), CW_OK);
    cw_close(&c, CW_CLOSE_ABORT, CW_NEVER);
    cw_close(&s, CW_CLOSE_ABORT, CW_NEVER);

    int rc = cw_dial("127.0.0.1", p1, &o, cw_now_ms() + 2000, &c);
    if (rc == CW_OK) {
        assert_int_equal(cw_accept(l1, cw_now_ms() + 2000, &s), CW_OK);
        assert_int_equal(cwt_count(CW_TCP_TIME_WAIT, o.bind_port, p1), 0);
        cw_close(&c, CW_CLOSE_ABORT, CW_NEVER);
        cw_close(&s, CW_CLOSE_ABORT, CW_NEVER);
    }
    cw_listener_close(&l1);
    cw_listener_close(&l2);
    return rc;
}

/* With TCP timestamps (Linux's default) the kernel may recycle the TIME_WAIT
 * twin of an explicitly bound socket: PAWS keeps old segments out. */
static void test_bind_port_reuses_time_wait_with_timestamps(void **state)
{
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_timestamps", "r");
    int ts = f ? fgetc(f) - '0' : -1;
    if (f)
        fclose(f);
    if (ts != 1) {
        printf("# skipped: net.ipv4.tcp_timestamps is not 1 here\n");
        skip();
    }
    assert_int_equal(redial_over_time_wait(), CW_OK);
}

/* Without timestamps the 4-tuple is taken until TIME_WAIT ends: connect
 * fails with EADDRNOTAVAIL, and cw_strerror says why. */
static void test_bind_port_time_wait_twin_without_timestamps(void **state)
{
    if (netns_up() != 0 ||
        cwt_sh("ip netns exec %s sysctl -qw net.ipv4.tcp_timestamps=0 && "
           "ip -n %s link set lo up", ns_a, ns_a) != 0) {
        netns_down();
        printf("# skipped: cannot create network namespaces (needs root and iproute2)\n");
        skip();
    }
    int orig = cwt_netns_enter(ns_a);
    int rc = redial_over_time_wait();
    cwt_netns_leave(orig);
    netns_down();
    assert_int_equal(rc, -EADDRNOTAVAIL);
    assert_non_null(strstr(cw_strerror(rc), "TIME_WAIT"));
}

static int getint(int fd, int level, int name)
{
    int v = -1;
    socklen_t len = sizeof v;
    assert_int_equal(getsockopt(fd, level, name, &v, &len), 0);
    return v;
}

static void test_options_reach_the_socket(void **state)
{
    struct cw_opts o;
    cw_opts_init(&o);
    o.nodelay = 1;
    o.keepalive = 1;
    o.keepidle_s = 7;
    o.keepintvl_s = 3;
    o.keepcnt = 4;
    o.user_timeout_ms = 5000;
    cw_conn *c, *s;
    cwt_pair(NULL, &o, &c, &s);
    int fd = cw_conn_fd(c);
    assert_int_equal(getint(fd, IPPROTO_TCP, TCP_NODELAY), 1);
    assert_int_equal(getint(fd, SOL_SOCKET, SO_KEEPALIVE), 1);
    assert_int_equal(getint(fd, IPPROTO_TCP, TCP_KEEPIDLE), 7);
    assert_int_equal(getint(fd, IPPROTO_TCP, TCP_KEEPINTVL), 3);
    assert_int_equal(getint(fd, IPPROTO_TCP, TCP_KEEPCNT), 4);
    assert_int_equal(getint(fd, IPPROTO_TCP, TCP_USER_TIMEOUT), 5000);
    assert_int_equal(getint(fd, SOL_SOCKET, SO_REUSEADDR), 0);
    assert_int_equal(getint(cw_conn_fd(s), IPPROTO_TCP, TCP_NODELAY), 0);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    assert_true(fcntl(cw_conn_fd(s), F_GETFD) & FD_CLOEXEC);
    cw_close(&c, CW_CLOSE_ABORT, CW_NEVER);
    cw_close(&s, CW_CLOSE_ABORT, CW_NEVER);
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_ipv6_loopback),
        CWT_TEST(test_dial_tries_every_address),
        CWT_TEST(test_dual_stack_listener),
        CWT_TEST(test_refused_and_accept_timeout),
        CWT_TEST(test_dial_backlog_full_times_out),
        CWT_TEST(test_dial_unreachable_times_out),
        CWT_TEST(test_reuseaddr_rebinds_over_time_wait),
        CWT_TEST(test_bind_port_reuses_time_wait_with_timestamps),
        CWT_TEST(test_bind_port_time_wait_twin_without_timestamps),
        CWT_TEST(test_options_reach_the_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
