/* zoo.h - plant TCP sockets in every interesting state on loopback, held
 * by two known child processes, for the inspector tests (test_diag.c,
 * test_inspect_cli.c). The kernel's own table (/proc/net/tcp*) confirms
 * each state before the zoo is handed over.
 *
 * Server child S holds: the listener, an ESTABLISHED socket, a CLOSE_WAIT
 * socket with its FIN unread, a LAST_ACK socket (its FIN is stuck behind
 * data the peer does not read), and indirectly a CLOSE_WAIT socket that
 * was never accepted. Client child C holds: an ESTABLISHED socket and two
 * FIN_WAIT2 sockets. Nobody holds a TIME_WAIT socket and an orphaned
 * FIN_WAIT2 one. */
#ifndef CW_TEST_ZOO_H
#define CW_TEST_ZOO_H

#include "cwtest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* Each test file uses only some helpers. */
#define ZOO_FN static __attribute__((unused))

#define ZOO_MAX 12
enum { ZOO_NOBODY = 0, ZOO_SERVER = 1, ZOO_CLIENT = 2 };

struct zoo_sock {
    const char *name;
    int state;
    int holder;       /* ZOO_* */
    int fd;           /* in the holder, -1 for nobody */
    int sport, dport;
    int listener;     /* waits in the listener's accept queue */
};

struct zoo {
    int family;
    int port;                  /* the listener's port */
    pid_t pid[3];              /* [ZOO_SERVER], [ZOO_CLIENT] */
    int ctl[3];                /* closing ctl[i] ends child i */
    int nsock;
    struct zoo_sock s[ZOO_MAX];
};

ZOO_FN int zoo_socket(int family)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    return fd;
}

ZOO_FN socklen_t zoo_addr(int family, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return sizeof *a;
    }
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    a->sin6_addr = in6addr_loopback;
    return sizeof *a;
}

ZOO_FN int zoo_port_of(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                         : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

ZOO_FN int zoo_listen(int family)
{
    struct sockaddr_storage ss;
    int fd = zoo_socket(family);
    socklen_t len = zoo_addr(family, 0, &ss);
    assert_int_equal(bind(fd, (struct sockaddr *)&ss, len), 0);
    assert_int_equal(listen(fd, 16), 0);
    return fd;
}

ZOO_FN int zoo_dial(int family, int port, int rcvbuf)
{
    struct sockaddr_storage ss;
    int fd = zoo_socket(family);
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    socklen_t len = zoo_addr(family, port, &ss);
    assert_int_equal(connect(fd, (struct sockaddr *)&ss, len), 0);
    return fd;
}

ZOO_FN int zoo_accept(int l)
{
    int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    assert_true(fd >= 0);
    return fd;
}

ZOO_FN void zoo_add(struct zoo *z, const char *name, int state, int holder, int fd,
                    int sport, int dport)
{
    assert_true(z->nsock < ZOO_MAX);
    struct zoo_sock *s = &z->s[z->nsock++];
    memset(s, 0, sizeof *s);
    s->name = name;
    s->state = state;
    s->holder = holder;
    s->fd = fd;
    s->sport = sport;
    s->dport = dport;
}

ZOO_FN void zoo_wait_state(int state, int lport, int rport)
{
    int n = cwt_wait_count(state, lport, rport, 1, 3000);
    if (n != 1)
        fail_msg("%d sockets in %s from port %d to %d, expected 1", n,
                 cw_tcp_state_name(state), lport, rport);
}

/* Fill the send queue of s until the peer's receive window is closed, so
 * a FIN queued after it cannot leave: that is when bytes stay unsent
 * (SIOCOUTQNSD > 0) although the socket has had time to send them. */
ZOO_FN void zoo_fill(int s)
{
    int small = 4096;
    setsockopt(s, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    int fl = fcntl(s, F_GETFL);
    fcntl(s, F_SETFL, fl | O_NONBLOCK);
    static char junk[4096];
    int64_t end = cw_now_ms() + 3000;
    while (cw_now_ms() < end) {
        while (send(s, junk, sizeof junk, MSG_NOSIGNAL) > 0)
            ;
        int unsent = 0;
        if (ioctl(s, SIOCOUTQNSD, &unsent) == 0 && unsent > 0) {
            cwt_sleep_ms(20);
            if (ioctl(s, SIOCOUTQNSD, &unsent) == 0 && unsent > 0)
                break;
        }
        cwt_sleep_ms(5);
    }
    fcntl(s, F_SETFL, fl);
}

/* Keep only the descriptors of holder `who`, say so on ready, then wait
 * until the parent closes ctl (or 60 s pass) and exit without running
 * atexit handlers. */
ZOO_FN void zoo_child(struct zoo *z, int who, int ctl, int ready, const char *comm)
{
    for (int i = 0; i < z->nsock; i++)
        if (z->s[i].fd >= 0 && z->s[i].holder != who && !z->s[i].listener)
            close(z->s[i].fd);
    /* An earlier sibling's control pipe must not stay open here, or that
     * sibling would never see EOF. */
    for (int i = 0; i < 3; i++)
        if (z->ctl[i] >= 0)
            close(z->ctl[i]);
    if (comm)
        prctl(PR_SET_NAME, comm);
    alarm(60);
    if (write(ready, "r", 1) != 1)
        _exit(1);
    close(ready);
    char b;
    while (read(ctl, &b, 1) < 0 && errno == EINTR)
        ;
    _exit(0);
}

/* Fork a holder and wait until it has dropped the other side's
 * descriptors, so that attribution sees each socket in one process. */
ZOO_FN pid_t zoo_fork(struct zoo *z, int who, int *ctl_out, const char *comm)
{
    int p[2], r[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(pipe2(r, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[1]);
        close(r[0]);
        zoo_child(z, who, p[0], r[1], comm);
    }
    close(p[0]);
    close(r[1]);
    struct pollfd pf = {.fd = r[0], .events = POLLIN};
    char b = 0;
    int ok = poll(&pf, 1, 5000) == 1 && read(r[0], &b, 1) == 1 && b == 'r';
    close(r[0]);
    *ctl_out = p[1];
    assert_true(ok);
    return pid;
}

/* Plant the zoo for family (AF_INET or AF_INET6). */
ZOO_FN void zoo_plant(struct zoo *z, int family)
{
    memset(z, 0, sizeof *z);
    z->ctl[0] = z->ctl[1] = z->ctl[2] = -1;
    z->family = family;
    int l = zoo_listen(family);
    int P = z->port = zoo_port_of(l);
    zoo_add(z, "listen", CW_TCP_LISTEN, ZOO_SERVER, l, P, 0);

    int ec = zoo_dial(family, P, 0), es = zoo_accept(l);
    zoo_add(z, "estab_s", CW_TCP_ESTABLISHED, ZOO_SERVER, es, P, zoo_port_of(ec));
    zoo_add(z, "estab_c", CW_TCP_ESTABLISHED, ZOO_CLIENT, ec, zoo_port_of(ec), P);

    int fc = zoo_dial(family, P, 0), cs = zoo_accept(l);
    shutdown(fc, SHUT_WR);
    zoo_wait_state(CW_TCP_CLOSE_WAIT, P, zoo_port_of(fc));
    zoo_wait_state(CW_TCP_FIN_WAIT2, zoo_port_of(fc), P);
    zoo_add(z, "closewait_s", CW_TCP_CLOSE_WAIT, ZOO_SERVER, cs, P, zoo_port_of(fc));
    zoo_add(z, "finwait2_c", CW_TCP_FIN_WAIT2, ZOO_CLIENT, fc, zoo_port_of(fc), P);

    int ac = zoo_dial(family, P, 2048), as = zoo_accept(l);
    zoo_fill(as);
    shutdown(ac, SHUT_WR);
    zoo_wait_state(CW_TCP_CLOSE_WAIT, P, zoo_port_of(ac));
    shutdown(as, SHUT_WR);
    zoo_wait_state(CW_TCP_LAST_ACK, P, zoo_port_of(ac));
    zoo_add(z, "lastack_s", CW_TCP_LAST_ACK, ZOO_SERVER, as, P, zoo_port_of(ac));
    zoo_add(z, "lastack_peer_c", CW_TCP_FIN_WAIT2, ZOO_CLIENT, ac, zoo_port_of(ac), P);

    int tc = zoo_dial(family, P, 0), ts = zoo_accept(l);
    int tport = zoo_port_of(tc);
    close(ts);
    zoo_wait_state(CW_TCP_CLOSE_WAIT, tport, P);
    close(tc);
    zoo_wait_state(CW_TCP_TIME_WAIT, P, tport);
    zoo_add(z, "timewait", CW_TCP_TIME_WAIT, ZOO_NOBODY, -1, P, tport);

    /* Connected and closed by the client, never accepted. */
    int qc = zoo_dial(family, P, 0);
    int qport = zoo_port_of(qc);
    close(qc);
    zoo_wait_state(CW_TCP_CLOSE_WAIT, P, qport);
    /* The peer's ACK of the FIN may trail the FIN's arrival. */
    zoo_wait_state(CW_TCP_FIN_WAIT2, qport, P);
    zoo_add(z, "queued_s", CW_TCP_CLOSE_WAIT, ZOO_SERVER, l, P, qport);
    z->s[z->nsock - 1].listener = 1;
    zoo_add(z, "queued_orphan_c", CW_TCP_FIN_WAIT2, ZOO_NOBODY, -1, qport, P);

    z->pid[ZOO_SERVER] = zoo_fork(z, ZOO_SERVER, &z->ctl[ZOO_SERVER], "zoo-server");
    z->pid[ZOO_CLIENT] = zoo_fork(z, ZOO_CLIENT, &z->ctl[ZOO_CLIENT], "zoo-client");
    /* From now on only the children hold the sockets. */
    for (int i = 0; i < z->nsock; i++)
        if (z->s[i].fd >= 0 && !z->s[i].listener)
            close(z->s[i].fd);
}

ZOO_FN const struct zoo_sock *zoo_find(const struct zoo *z, int sport, int dport)
{
    for (int i = 0; i < z->nsock; i++)
        if (z->s[i].sport == sport && z->s[i].dport == dport)
            return &z->s[i];
    return NULL;
}

ZOO_FN int zoo_count(const struct zoo *z, int state)
{
    int n = 0;
    for (int i = 0; i < z->nsock; i++)
        n += z->s[i].state == state;
    return n;
}

/* End both children and reap them. */
ZOO_FN void zoo_free(struct zoo *z)
{
    for (int who = ZOO_SERVER; who <= ZOO_CLIENT; who++) {
        close(z->ctl[who]);
        assert_int_not_equal(cwt_wait(z->pid[who], 5000), -1);
    }
}

/* A CLOSE_WAIT socket inherited across fork(): this process holds s (the
 * server side; c is its peer), and a child named "heir" holds it too,
 * also under a second number `moved` (a dup) when dup_too is set. The
 * child waits until ctl is closed (zoo_heir_stop). */
struct zoo_heir {
    int port, cport;
    int s, c, moved;
    int ctl;
    pid_t pid;
};

ZOO_FN void zoo_heir_start(struct zoo_heir *h, int dup_too)
{
    int l = zoo_listen(AF_INET);
    h->port = zoo_port_of(l);
    h->c = zoo_dial(AF_INET, h->port, 0);
    h->s = zoo_accept(l);
    close(l);
    h->cport = zoo_port_of(h->c);
    h->moved = -1;
    shutdown(h->c, SHUT_WR);
    assert_int_equal(cwt_wait_count(CW_TCP_CLOSE_WAIT, h->port, h->cport, 1, 2000), 1);
    int ctl[2], rd[2];
    assert_int_equal(pipe2(ctl, O_CLOEXEC), 0);
    assert_int_equal(pipe2(rd, O_CLOEXEC), 0);
    h->pid = fork();
    assert_true(h->pid >= 0);
    if (h->pid == 0) {
        close(ctl[1]);
        close(rd[0]);
        close(h->c);
        int moved = dup_too ? dup(h->s) : -1;
        prctl(PR_SET_NAME, "heir");
        alarm(30);
        if ((dup_too && moved < 0) || write(rd[1], &moved, sizeof moved) != sizeof moved)
            _exit(1);
        char b;
        while (read(ctl[0], &b, 1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    close(ctl[0]);
    close(rd[1]);
    h->ctl = ctl[1];
    /* The name is set before anyone looks. */
    struct pollfd pf = {.fd = rd[0], .events = POLLIN};
    int ok = poll(&pf, 1, 5000) == 1 && read(rd[0], &h->moved, sizeof h->moved) ==
                                            (ssize_t)sizeof h->moved;
    close(rd[0]);
    assert_true(ok);
}

ZOO_FN void zoo_heir_stop(struct zoo_heir *h)
{
    close(h->ctl);
    assert_true(cwt_wait(h->pid, 5000) != -1);
    close(h->s);
    close(h->c);
}

#endif
