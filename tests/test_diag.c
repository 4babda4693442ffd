/* test_diag.c - the inspector library against the kernel: sock_diag dumps
 * see every planted socket in the right state with the right owner,
 * CLOSE_WAIT fields mean what the explanations say, filters narrow the
 * dump, unreadable /proc entries give "unknown", and SOCK_DESTROY kills
 * exactly the socket asked for. */
// cw-test-timeout: 60
#include "zoo.h"

#include <dlfcn.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/stat.h>

static struct cw_sock *dump_port(int port, int want_info, int attribute, size_t *n)
{
    cw_diag *d = NULL;
    struct cw_diag_filter f;
    struct cw_sock *v = NULL;
    assert_int_equal(cw_diag_open(&d), CW_OK);
    cw_diag_filter_init(&f);
    f.port = port;
    f.want_info = want_info;
    assert_true(cw_diag_dump(d, &f, &v, n) >= 0);
    if (attribute)
        assert_int_equal(cw_diag_attribute(d, v, *n, NULL), CW_OK);
    assert_int_equal(cw_diag_close(&d), CW_OK);
    assert_null(d);
    return v;
}

/* Sockets of the dump that belong to the zoo. The port filter may also
 * match strays: TIME_WAIT sockets left towards an earlier user of the
 * same port number. */
static int count_zoo(const struct zoo *z, const struct cw_sock *v, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += zoo_find(z, v[i].sport, v[i].dport) != NULL;
    return k;
}

static const struct cw_sock *find(const struct cw_sock *v, size_t n, int sport, int dport)
{
    for (size_t i = 0; i < n; i++)
        if (v[i].sport == sport && v[i].dport == dport)
            return &v[i];
    return NULL;
}

/* Every zoo socket is in the dump with its state, ports and owner. */
static void check_zoo(int family)
{
    struct zoo z;
    zoo_plant(&z, family);
    size_t n;
    struct cw_sock *v = dump_port(z.port, 1, 1, &n);
    assert_int_equal(count_zoo(&z, v, n), z.nsock);
    for (int i = 0; i < z.nsock; i++) {
        const struct zoo_sock *e = &z.s[i];
        const struct cw_sock *s = find(v, n, e->sport, e->dport);
        if (!s)
            fail_msg("%s (%d -> %d) missing from the dump", e->name, e->sport, e->dport);
        assert_int_equal(s->family, family);
        if (s->state != e->state)
            fail_msg("%s: state %d, expected %d", e->name, s->state, e->state);
        assert_true(s->cookie != 0);
        if (e->holder == ZOO_NOBODY) {
            assert_int_equal(s->inode, 0);
            assert_int_equal(s->owner, CW_OWNER_NONE);
            continue;
        }
        if (s->pid != z.pid[e->holder] || s->fd != e->fd)
            fail_msg("%s: owner %d fd %d, expected %d fd %d", e->name, s->pid, s->fd,
                     (int)z.pid[e->holder], e->fd);
        assert_int_equal(s->owner, e->listener ? CW_OWNER_LISTENER : CW_OWNER_PROCESS);
        assert_string_equal(s->comm, e->holder == ZOO_SERVER ? "zoo-server" : "zoo-client");
        if (e->listener) {
            assert_int_equal(s->inode, 0);
            assert_int_equal(s->listener_port, z.port);
        }
    }
    /* The FIN is counted in Recv-Q of the unread CLOSE_WAIT socket. */
    const struct zoo_sock *cw = &z.s[3];
    assert_string_equal(cw->name, "closewait_s");
    assert_true(find(v, n, cw->sport, cw->dport)->rqueue >= 1);
    free(v);
    zoo_free(&z);
}

static void test_zoo_ipv4(void **state) { check_zoo(AF_INET); }
static void test_zoo_ipv6(void **state) { check_zoo(AF_INET6); }

/* State mask (kernel side), family, port and address filters. */
static void test_filters(void **state)
{
    struct zoo z;
    zoo_plant(&z, AF_INET6);
    cw_diag *d = NULL;
    struct cw_diag_filter f;
    struct cw_sock *v;
    size_t n;
    assert_int_equal(cw_diag_open(&d), CW_OK);

    cw_diag_filter_init(&f);
    f.port = z.port;
    f.states = CW_STATE_BIT(CW_TCP_CLOSE_WAIT) | CW_STATE_BIT(CW_TCP_TIME_WAIT);
    assert_true(cw_diag_dump(d, &f, &v, &n) >= 3);
    assert_int_equal(count_zoo(&z, v, n), 3);
    for (size_t i = 0; i < n; i++)
        assert_true(v[i].state == CW_TCP_CLOSE_WAIT || v[i].state == CW_TCP_TIME_WAIT);
    for (size_t i = 1; i < n; i++)
        assert_true(v[i - 1].cookie < v[i].cookie);
    free(v);

    f.family = AF_INET;    /* the zoo is IPv6 only */
    assert_true(cw_diag_dump(d, &f, &v, &n) >= 0);
    assert_int_equal(count_zoo(&z, v, n), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(v[i].family, AF_INET);
    free(v);

    cw_diag_filter_init(&f);
    f.sport = z.port;      /* server side only */
    assert_true(cw_diag_dump(d, &f, &v, &n) >= 6);
    assert_int_equal(count_zoo(&z, v, n), 6);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(v[i].sport, z.port);
    free(v);

    cw_diag_filter_init(&f);
    f.port = z.port;
    assert_int_equal(cw_diag_filter_addr(&f, "[::1]"), CW_OK);
    assert_true(cw_diag_dump(d, &f, &v, &n) >= z.nsock);
    assert_int_equal(count_zoo(&z, v, n), z.nsock);
    free(v);
    f.naddrs = 0;
    assert_int_equal(cw_diag_filter_addr(&f, "127.0.0.1"), CW_OK);
    assert_true(cw_diag_dump(d, &f, &v, &n) >= 0);
    assert_int_equal(count_zoo(&z, v, n), 0);
    free(v);
    assert_int_equal(cw_diag_filter_addr(&f, "not-an-address"), CW_EINVAL);
    assert_int_equal(cw_diag_dump(NULL, &f, &v, &n), CW_EINVAL);
    assert_int_equal(cw_diag_close(&d), CW_OK);
    assert_int_equal(cw_diag_close(&d), CW_EINVAL);
    zoo_free(&z);
}

static void test_state_names_and_addr(void **state)
{
    assert_int_equal(cw_tcp_state_parse("close-wait"), CW_TCP_CLOSE_WAIT);
    assert_int_equal(cw_tcp_state_parse("CLOSE_WAIT"), CW_TCP_CLOSE_WAIT);
    assert_int_equal(cw_tcp_state_parse("ClOsEwAiT"), CW_TCP_CLOSE_WAIT);
    assert_int_equal(cw_tcp_state_parse("fin-wait-2"), CW_TCP_FIN_WAIT2);
    assert_int_equal(cw_tcp_state_parse("time-wait"), CW_TCP_TIME_WAIT);
    assert_int_equal(cw_tcp_state_parse("listen"), CW_TCP_LISTEN);
    assert_int_equal(cw_tcp_state_parse("closed-wait"), CW_EINVAL);
    assert_int_equal(cw_tcp_state_parse(""), CW_EINVAL);
    assert_int_equal(cw_tcp_state_parse(NULL), CW_EINVAL);
    struct cw_sock s;
    memset(&s, 0, sizeof s);
    char buf[64];
    s.family = AF_INET6;
    s.src[15] = 1;
    s.sport = 8080;
    assert_int_equal(cw_sock_addr(&s, 0, buf, sizeof buf), 10);
    assert_string_equal(buf, "[::1]:8080");
    s.family = AF_INET;
    memcpy(s.dst, "\x7f\x00\x00\x01", 4);
    s.dport = 22;
    cw_sock_addr(&s, 1, buf, sizeof buf);
    assert_string_equal(buf, "127.0.0.1:22");
    assert_int_equal(cw_sock_addr(&s, 1, buf, 5), CW_EINVAL);
    s.family = 99;
    assert_int_equal(cw_sock_addr(&s, 1, buf, sizeof buf), CW_EINVAL);
}

static const struct cw_sock *dump_one(struct cw_sock **v, int lport, int rport)
{
    size_t n;
    *v = dump_port(lport, 1, 1, &n);
    const struct cw_sock *s = find(*v, n, lport, rport);
    assert_non_null(s);
    return s;
}

/* Recv-Q >= 1 means the FIN is unread; 0 means EOF was read and close()
 * is missing; a keepalive timer will clean the socket up. */
static void test_close_wait_evidence(void **state)
{
    cw_conn *c, *s;
    cwt_pair(NULL, NULL, &c, &s);
    int lport = cwt_local_port(s), rport = cwt_peer_port(s);
    int fd = cw_conn_fd(s);
    char why[256], buf[8];
    struct cw_sock *v;

    int64_t t_data0 = cw_now_ms();
    assert_int_equal(cw_send_all(c, "hello", 5, cw_now_ms() + 2000), CW_OK);
    int64_t t_data1 = cw_now_ms();
    cwt_sleep_ms(300);
    /* A bare FIN at least 300 ms after the data. */
    int64_t t_fin0 = cw_now_ms();
    assert_int_equal(shutdown(cw_conn_fd(c), SHUT_WR), 0);
    assert_int_equal(cwt_wait_count(CW_TCP_CLOSE_WAIT, lport, rport, 1, 2000), 1);
    int64_t t_fin1 = cw_now_ms();
    cwt_sleep_ms(300);
    int64_t t_dump0 = cw_now_ms();
    const struct cw_sock *k = dump_one(&v, lport, rport);
    int64_t t_dump1 = cw_now_ms();
    assert_int_equal(k->state, CW_TCP_CLOSE_WAIT);
    assert_int_equal(k->rqueue, 6);   /* 5 bytes and the FIN */
    assert_int_equal(k->pid, getpid());
    assert_int_equal(k->fd, fd);
    assert_non_null(strstr(cw_sock_explain(k, why, sizeof why),
                           "has not read the end of stream"));
    assert_non_null(strstr(why, "no timer"));
    uint32_t lo, hi;
    assert_int_equal(cw_sock_close_wait_age(k, &lo, &hi), CW_OK);
    /* last_ack dates the FIN, last_data_recv the data; the kernel counts
     * in jiffies (up to 10 ms each). */
    if (lo + 20 < t_dump0 - t_fin1 || lo > t_dump1 - t_fin0 + 20 ||
        hi + 20 < t_dump0 - t_data1 || hi > t_dump1 - t_data0 + 20 || hi < lo + 280)
        fail_msg("age bounds [%u, %u] ms; FIN %lld-%lld ms ago, data %lld-%lld ms ago", lo,
                 hi, (long long)(t_dump0 - t_fin1), (long long)(t_dump1 - t_fin0),
                 (long long)(t_dump0 - t_data1), (long long)(t_dump1 - t_data0));
    free(v);

    assert_int_equal(read(fd, buf, sizeof buf), 5);
    assert_int_equal(read(fd, buf, sizeof buf), 0);
    k = dump_one(&v, lport, rport);
    assert_int_equal(k->rqueue, 0);
    assert_non_null(strstr(cw_sock_explain(k, why, sizeof why), "never called close()"));
    free(v);

    int on = 1;
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on), 0);
    k = dump_one(&v, lport, rport);
    assert_int_equal(k->timer, 2);
    assert_non_null(strstr(cw_sock_explain(k, why, sizeof why), "reset by keepalive"));
    free(v);
    struct cw_sock none;
    memset(&none, 0, sizeof none);
    assert_int_equal(cw_sock_close_wait_age(&none, &lo, &hi), CW_EINVAL);

    cw_close(&s, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000);
    cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000);
}

/* The never-accepted socket is explained by its listener. */
static void test_accept_queue_explained(void **state)
{
    struct zoo z;
    zoo_plant(&z, AF_INET);
    const struct zoo_sock *q = &z.s[8];
    assert_string_equal(q->name, "queued_s");
    struct cw_sock *v;
    const struct cw_sock *k = dump_one(&v, q->sport, q->dport);
    char why[256], want[64];
    snprintf(want, sizeof want, "accept queue of listener :%d", z.port);
    assert_non_null(strstr(cw_sock_explain(k, why, sizeof why), want));
    free(v);
    zoo_free(&z);
}

/* As an unprivileged user, a root process's /proc/<pid>/fd cannot be
 * read: its socket is reported as unknown, never dropped. */
static void test_unreadable_proc_is_unknown(void **state)
{
    if (geteuid() != 0)
        skip();
    struct zoo z;
    zoo_plant(&z, AF_INET);
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = cwt_fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char out[64] = "setuid failed";
        if (setgid(65534) == 0 && setuid(65534) == 0) {
            cw_diag *d = NULL;
            struct cw_diag_filter f;
            struct cw_sock *v = NULL;
            size_t n = 0;
            struct cw_attr_stats st;
            cw_diag_filter_init(&f);
            f.port = z.port;
            f.states = CW_STATE_BIT(CW_TCP_CLOSE_WAIT);
            int rc = cw_diag_open(&d);
            if (rc == CW_OK && cw_diag_dump(d, &f, &v, &n) >= 0 &&
                cw_diag_attribute(d, v, n, &st) == CW_OK) {
                unsigned unknown = 0;
                for (size_t i = 0; i < n; i++)
                    unknown += v[i].owner == CW_OWNER_UNKNOWN ||
                               (v[i].owner == CW_OWNER_LISTENER && !v[i].pid);
                snprintf(out, sizeof out, "%zu %u %u %u", n, unknown, st.unknown,
                         st.pids_unreadable > 0);
            }
            free(v);
            if (d)
                cw_diag_close(&d);
        }
        strcat(out, "\n");
        if (write(p[1], out, strlen(out)) < 0)
            _exit(1);
        _exit(0);
    }
    close(p[1]);
    char line[64];
    assert_true(cwt_read_line(p[0], line, sizeof line, 5000) >= 0);
    close(p[0]);
    assert_true(cwt_wait(pid, 5000) != -1);
    /* Both CLOSE_WAIT sockets of the zoo, both unknown, and unreadable
     * /proc entries were counted. */
    assert_string_equal(line, "2 2 2 1");
    zoo_free(&z);
}

/* SOCK_DESTROY hits the socket by cookie only: a wrong cookie leaves it
 * alone; the right one sends the peer a RST, and the owner still holds a
 * descriptor whose writes fail. */
static void test_destroy_by_cookie(void **state)
{
    int l = zoo_listen(AF_INET);
    int port = zoo_port_of(l);
    int c = zoo_dial(AF_INET, port, 0), s = zoo_accept(l);
    close(l);
    int cport = zoo_port_of(c);
    shutdown(c, SHUT_WR);
    assert_int_equal(cwt_wait_count(CW_TCP_CLOSE_WAIT, port, cport, 1, 2000), 1);
    struct cw_sock *v;
    const struct cw_sock *k = dump_one(&v, port, cport);
    struct cw_sock wrong = *k;
    wrong.cookie ^= 0x5a5a;
    cw_diag *d = NULL;
    assert_int_equal(cw_diag_open(&d), CW_OK);
    int rc = cw_diag_destroy(d, &wrong);
    assert_true(rc == -ENOENT || rc == -ESTALE);
    assert_int_equal(cwt_count(CW_TCP_CLOSE_WAIT, port, cport), 1);
    if (cw_diag_destroy_configured() == 0) {
        assert_int_equal(cw_diag_destroy(d, k), -EOPNOTSUPP);
    } else {
        assert_int_equal(cw_diag_destroy(d, k), CW_OK);
        assert_int_equal(cwt_wait_count(CW_TCP_CLOSE_WAIT, port, cport, 0, 2000), 0);
        char b;
        assert_int_equal(recv(c, &b, 1, 0), -1);
        assert_int_equal(errno, ECONNRESET);
        assert_int_equal(send(s, "x", 1, MSG_NOSIGNAL), -1);
        assert_true(errno == ECONNABORTED || errno == EPIPE);
        assert_int_equal(cw_diag_destroy(d, k), -ENOENT);
    }
    assert_int_equal(cw_diag_destroy(d, NULL), CW_EINVAL);
    assert_int_equal(cw_diag_close(&d), CW_OK);
    free(v);
    close(s);
    close(c);
}

/* Attribution of many sockets of one process finds each one's fd (enough
 * of them that the /proc scan runs on several threads). */
static void test_attribute_many(void **state)
{
    enum { N = 300 };
    int l = zoo_listen(AF_INET);
    int port = zoo_port_of(l);
    int cl[N], sv[N];
    for (int i = 0; i < N; i++) {
        cl[i] = zoo_dial(AF_INET, port, 0);
        sv[i] = zoo_accept(l);
    }
    size_t n;
    struct cw_sock *v = dump_port(port, 0, 1, &n);
    assert_int_equal(n, 2 * N + 1);
    int matched = 0;
    for (int i = 0; i < N; i++) {
        const struct cw_sock *a = find(v, n, port, zoo_port_of(cl[i]));
        const struct cw_sock *b = find(v, n, zoo_port_of(cl[i]), port);
        assert_non_null(a);
        assert_non_null(b);
        matched += a->fd == sv[i] && b->fd == cl[i] && a->pid == getpid();
    }
    assert_int_equal(matched, N);
    free(v);
    for (int i = 0; i < N; i++) {
        close(cl[i]);
        close(sv[i]);
    }
    close(l);
}

/* Every thread the library starts passes here (the library is linked
 * into this executable, so its calls bind to this definition first). */
static atomic_int threads_started;

int pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    static int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "pthread_create");
    atomic_fetch_add(&threads_started, 1);
    return real(th, attr, fn, arg);
}

/* Threads started by one dump of 4 namespaces and one attribution of 601
 * sockets (both past the point where they run in parallel). */
static int threads_of_scan(cw_diag *d, int port)
{
    struct cw_diag_filter f;
    struct cw_sock *v = NULL;
    size_t n = 0;
    cw_diag_filter_init(&f);
    f.port = port;
    atomic_store(&threads_started, 0);
    assert_true(cw_diag_dump(d, &f, &v, &n) >= 0);
    assert_int_equal(n, 2 * 300 + 1);
    assert_int_equal(cw_diag_attribute(d, v, n, NULL), CW_OK);
    int k = atomic_load(&threads_started);
    free(v);
    return k;
}

/* `taskset -c 0 closewise ls`: the namespace walks and the /proc scan run
 * on the one CPU the process may use, not a thread per CPU online. */
static void test_threads_follow_affinity(void **state)
{
    (void)state;
    cpu_set_t all, one;
    assert_int_equal(sched_getaffinity(0, sizeof all, &all), 0);
    int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    assert_true(home >= 0);
    cw_diag *d = NULL;
    assert_int_equal(cw_diag_open(&d), CW_OK);
    int ns[3];
    for (int i = 0; i < 3; i++) {
        char path[48];
        assert_int_equal(unshare(CLONE_NEWNET), 0);
        ns[i] = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        assert_int_equal(setns(home, CLONE_NEWNET), 0);
        snprintf(path, sizeof path, "/proc/self/fd/%d", ns[i]);
        assert_int_equal(cw_diag_add_netns(d, path), 1);
    }
    enum { N = 300 };
    int l = zoo_listen(AF_INET), port = zoo_port_of(l), cl[N], sv[N];
    for (int i = 0; i < N; i++) {
        cl[i] = zoo_dial(AF_INET, port, 0);
        sv[i] = zoo_accept(l);
    }
    /* Control: with every CPU allowed, the same scan does start threads
     * (on a machine with more than one). */
    int wide = threads_of_scan(d, port);
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
    int narrow = threads_of_scan(d, port);
    assert_int_equal(sched_setaffinity(0, sizeof all, &all), 0);
    if (CPU_COUNT(&all) > 1)
        assert_true(wide > 0);
    assert_int_equal(narrow, 0);
    for (int i = 0; i < N; i++) {
        close(cl[i]);
        close(sv[i]);
    }
    close(l);
    assert_int_equal(cw_diag_close(&d), CW_OK);
    for (int i = 0; i < 3; i++)
        close(ns[i]);
    close(home);
}

/* A dual-stack listener's accepted sockets are IPv6 with IPv4-mapped
 * addresses: a filter on 127.0.0.1 finds them and the IPv4 client side,
 * as does ::ffff:127.0.0.1; CIDR prefixes and port sets narrow as ss's
 * filters do. Oracle: the kernel's own table. */
static int dual_listen(int *port)
{
    int l = zoo_socket(AF_INET6), off = 0;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6};
    assert_int_equal(setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off), 0);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l, 16), 0);
    *port = zoo_port_of(l);
    return l;
}

static size_t dump_with(const struct cw_diag_filter *f, struct cw_sock **v)
{
    cw_diag *d = NULL;
    size_t n = 0;
    assert_int_equal(cw_diag_open(&d), CW_OK);
    assert_true(cw_diag_dump(d, f, v, &n) >= 0);
    cw_diag_close(&d);
    return n;
}

static size_t count_with(int port, const char *addr)
{
    struct cw_diag_filter f;
    struct cw_sock *v;
    cw_diag_filter_init(&f);
    f.port = port;
    f.states = CW_STATE_BIT(CW_TCP_ESTABLISHED);
    if (addr)
        assert_int_equal(cw_diag_filter_addr(&f, addr), CW_OK);
    size_t n = dump_with(&f, &v);
    free(v);
    return n;
}

static void test_addr_filters_mapped_cidr_ports(void **state)
{
    int p1, p2;
    int l1 = dual_listen(&p1), l2 = zoo_listen(AF_INET);
    p2 = zoo_port_of(l2);
    int c1 = zoo_dial(AF_INET, p1, 0), s1 = zoo_accept(l1);
    int c2 = zoo_dial(AF_INET, p2, 0), s2 = zoo_accept(l2);
    /* The kernel's view: server side of p1 is IPv6 (mapped), client IPv4. */
    struct cw_diag_filter f;
    struct cw_sock *v;
    cw_diag_filter_init(&f);
    f.port = p1;
    f.states = CW_STATE_BIT(CW_TCP_ESTABLISHED);
    assert_int_equal(dump_with(&f, &v), 2);
    assert_int_equal(v[0].family + v[1].family, AF_INET + AF_INET6);
    free(v);
    assert_int_equal(count_with(p1, "127.0.0.1"), 2);
    assert_int_equal(count_with(p1, "::ffff:127.0.0.1"), 2);
    assert_int_equal(count_with(p1, "[::ffff:127.0.0.1]"), 2);
    assert_int_equal(count_with(p1, "127.0.0.0/8"), 2);
    assert_int_equal(count_with(p1, "127.0.0.1/32"), 2);
    assert_int_equal(count_with(p1, "::ffff:127.0.0.0/104"), 2);
    assert_int_equal(count_with(p1, "10.0.0.0/8"), 0);
    assert_int_equal(count_with(p1, "::1"), 0);
    assert_int_equal(count_with(p1, "0.0.0.0/0"), 2);
    assert_int_equal(count_with(p1, "::/0"), 2);
    cw_diag_filter_init(&f);
    assert_int_equal(cw_diag_filter_addr(&f, "127.0.0.1/33"), CW_EINVAL);
    assert_int_equal(cw_diag_filter_addr(&f, "::1/129"), CW_EINVAL);
    assert_int_equal(cw_diag_filter_addr(&f, "10.0.0.0/"), CW_EINVAL);
    assert_int_equal(cw_diag_filter_addr(&f, "10.0.0.0/-1"), CW_EINVAL);
    assert_int_equal(f.naddrs, 0);
    for (int i = 0; i < CW_DIAG_MAX_ADDRS; i++)
        assert_int_equal(cw_diag_filter_addr(&f, "10.0.0.1"), CW_OK);
    assert_int_equal(cw_diag_filter_addr(&f, "10.0.0.1"), -ENOSPC);
    /* Two ports: the sockets of both, and nothing else. */
    cw_diag_filter_init(&f);
    f.states = CW_STATE_BIT(CW_TCP_ESTABLISHED);
    assert_int_equal(cw_diag_filter_port(&f, CW_PORT_EITHER, p1), CW_OK);
    assert_int_equal(cw_diag_filter_port(&f, CW_PORT_EITHER, p2), CW_OK);
    size_t n = dump_with(&f, &v);
    assert_int_equal(n, 4);
    assert_int_equal((int)n, cwt_count(CW_TCP_ESTABLISHED, p1, 0) + cwt_count(CW_TCP_ESTABLISHED, 0, p1) +
                                 cwt_count(CW_TCP_ESTABLISHED, p2, 0) + cwt_count(CW_TCP_ESTABLISHED, 0, p2));
    free(v);
    cw_diag_filter_init(&f);
    assert_int_equal(cw_diag_filter_port(&f, CW_PORT_LOCAL, p1), CW_OK);
    assert_int_equal(cw_diag_filter_port(&f, CW_PORT_LOCAL, p2), CW_OK);
    f.states = CW_STATE_BIT(CW_TCP_ESTABLISHED);
    n = dump_with(&f, &v);
    assert_int_equal(n, 2);   /* the two server sides */
    for (size_t i = 0; i < n; i++)
        assert_true(v[i].sport == p1 || v[i].sport == p2);
    free(v);
    assert_int_equal(cw_diag_filter_port(&f, 7, p1), CW_EINVAL);
    assert_int_equal(cw_diag_filter_port(&f, CW_PORT_LOCAL, 65536), CW_EINVAL);
    close(c1);
    close(s1);
    close(c2);
    close(s2);
    close(l1);
    close(l2);
}

/* A socket inherited across fork() has two holders; both are named, in
 * pid order, with their own descriptor numbers. */
static void test_every_holder(void **state)
{
    struct zoo_heir z;
    zoo_heir_start(&z, 1);
    int port = z.port, cport = z.cport, s = z.s, moved = z.moved;
    pid_t pid = z.pid;
    /* The holders belong to the handle: it stays open while they are read. */
    cw_diag *d = NULL;
    struct cw_diag_filter f;
    struct cw_sock *v;
    size_t n;
    assert_int_equal(cw_diag_open(&d), CW_OK);
    cw_diag_filter_init(&f);
    f.sport = port;
    assert_true(cw_diag_dump(d, &f, &v, &n) >= 1);
    assert_int_equal(cw_diag_attribute(d, v, n, NULL), CW_OK);
    const struct cw_sock *k = find(v, n, port, cport);
    assert_non_null(k);
    assert_int_equal(k->owner, CW_OWNER_PROCESS);
    assert_int_equal(k->nholders, 3);
    assert_non_null(k->holders);
    /* pid order (pids wrap: the child's may be lower), then fd order */
    int me = getpid() < pid ? 0 : 2, heir = me ? 0 : 1;
    assert_int_equal(k->holders[me].pid, getpid());
    assert_int_equal(k->holders[me].fd, s);
    assert_int_equal(k->pid, k->holders[0].pid);
    assert_int_equal(k->fd, k->holders[0].fd);
    assert_int_equal(k->holders[heir].pid, pid);
    assert_int_equal(k->holders[heir + 1].pid, pid);
    int lo = s < moved ? s : moved, hi = s < moved ? moved : s;
    assert_int_equal(k->holders[heir].fd, lo);
    assert_int_equal(k->holders[heir + 1].fd, hi);
    assert_string_equal(k->holders[heir].comm, "heir");
    assert_non_null(k->holders[0].cgroup);
    assert_non_null(k->holders[0].container);
    free(v);
    cw_diag_close(&d);
    zoo_heir_stop(&z);
}

/* cw_diag_find_holders(), from inodes alone: the inherited socket's three
 * descriptors (ours, and the heir's two), whatever order; 0 and an inode
 * nobody holds add nothing. The inode comes from fstat(), not the dump. */
static void test_find_holders(void **state)
{
    struct zoo_heir z;
    zoo_heir_start(&z, 1);
    struct stat sb;
    assert_int_equal(fstat(z.s, &sb), 0);
    uint32_t inodes[] = {0, (uint32_t)sb.st_ino, 0xFFFFFFF0u};
    struct cw_fd_ref *refs = NULL;
    size_t n = 0;
    struct cw_attr_stats st;
    assert_int_equal(cw_diag_find_holders(inodes, 3, &refs, &n, &st), CW_OK);
    assert_int_equal(n, 3);
    assert_int_equal(st.method, CW_ATTR_PROC);
    assert_true(st.pids_scanned >= 2);
    int mine = 0, heirs = 0, fdsum = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(refs[i].inode, (uint32_t)sb.st_ino);
        if (refs[i].pid == getpid()) {
            mine++;
            assert_int_equal(refs[i].fd, z.s);
        } else {
            assert_int_equal(refs[i].pid, z.pid);
            heirs++;
            fdsum += refs[i].fd;
        }
    }
    assert_int_equal(mine, 1);
    assert_int_equal(heirs, 2);
    assert_int_equal(fdsum, z.s + z.moved);
    free(refs);
    assert_int_equal(cw_diag_find_holders(NULL, 0, &refs, &n, NULL), CW_OK);
    assert_int_equal(n, 0);
    free(refs);
    assert_int_equal(cw_diag_find_holders(NULL, 1, &refs, &n, NULL), CW_EINVAL);
    zoo_heir_stop(&z);
}

/* A socket whose process exits between the dump and the scan is
 * "exited during scan", never a permission problem. */
static void test_exited_during_scan(void **state)
{
    struct leak_like {
        int port, cport;
    } k;
    int l = zoo_listen(AF_INET);
    k.port = zoo_port_of(l);
    int c = zoo_dial(AF_INET, k.port, 0), s = zoo_accept(l);
    close(l);
    k.cport = zoo_port_of(c);
    int ctl[2];
    assert_int_equal(pipe2(ctl, O_CLOEXEC), 0);
    pid_t pid = cwt_fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ctl[1]);
        close(c);
        alarm(30);
        char b;
        while (read(ctl[0], &b, 1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    close(ctl[0]);
    close(s);
    shutdown(c, SHUT_WR);
    assert_int_equal(cwt_wait_count(CW_TCP_CLOSE_WAIT, k.port, k.cport, 1, 2000), 1);
    cw_diag *d = NULL;
    struct cw_diag_filter f;
    struct cw_sock *v;
    size_t n;
    struct cw_attr_stats st;
    assert_int_equal(cw_diag_open(&d), CW_OK);
    cw_diag_filter_init(&f);
    f.sport = k.port;
    f.states = CW_STATE_BIT(CW_TCP_CLOSE_WAIT);
    assert_int_equal(cw_diag_dump(d, &f, &v, &n), 1);
    close(ctl[1]);   /* the holder exits: its socket closes */
    assert_true(cwt_wait(pid, 5000) != -1);
    assert_int_equal(cwt_wait_count(CW_TCP_CLOSE_WAIT, k.port, k.cport, 0, 2000), 0);
    assert_int_equal(cw_diag_attribute(d, v, n, &st), CW_OK);
    assert_int_equal(v[0].owner, CW_OWNER_GONE);
    assert_int_equal(st.gone, 1);
    assert_int_equal(st.unknown, 0);
    assert_int_equal(st.method, CW_ATTR_PROC);
    free(v);
    cw_diag_close(&d);
    close(c);
}

static void test_cgroup_container_names(void **state)
{
    static const char *const cases[][2] = {
        {"/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope",
         "docker:0123456789ab"},
        {"/docker/fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
         "docker:fedcba987654"},
        {"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice/"
         "cri-containerd-aaaabbbbccccddddeeeeffff0000111122223333444455556666777788889999.scope",
         "k8s-pod:1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901"},
        {"/kubepods/besteffort/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
         "k8s-pod:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"},
        {"/machine.slice/libpod-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope",
         "podman:0123456789ab"},
        {"/system.slice/crio-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope",
         "crio:0123456789ab"},
        {"/system.slice/nginx.service", "unit:nginx.service"},
        {"/user.slice/user-1000.slice/session-3.scope", "unit:session-3.scope"},
        {"/", ""},
        {"", ""},
        {"/cwtest/plain", ""},
    };
    char buf[96];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (strcmp(cw_cgroup_container(cases[i][0], buf, sizeof buf), cases[i][1]))
            fail_msg("'%s': '%s', expected '%s'", cases[i][0], buf, cases[i][1]);
    assert_string_equal(cw_cgroup_container(NULL, buf, sizeof buf), "");
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_zoo_ipv4),
        CWT_TEST(test_zoo_ipv6),
        CWT_TEST(test_filters),
        CWT_TEST(test_state_names_and_addr),
        CWT_TEST(test_close_wait_evidence),
        CWT_TEST(test_accept_queue_explained),
        CWT_TEST(test_unreadable_proc_is_unknown),
        CWT_TEST(test_destroy_by_cookie),
        CWT_TEST(test_attribute_many),
        CWT_TEST(test_threads_follow_affinity),
        CWT_TEST(test_addr_filters_mapped_cidr_ports),
        CWT_TEST(test_every_holder),
        CWT_TEST(test_find_holders),
        CWT_TEST(test_exited_during_scan),
        CWT_TEST(test_cgroup_container_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
