/* epoll_peer.c - the benchmark's ceiling: a bare level-triggered epoll
 * loop that does only accept, read, write, shutdown, drain and close. No
 * timers (a peer that never sends its FIN is kept forever), no logging,
 * one recv per readiness event, and the last line and the FIN in one
 * segment. Protocol: peer.h. */
#include "peer.h"

#include <sys/epoll.h>

/* Per descriptor: a partial line, and whether the reply went out. */
struct conn {
    struct peer_line line;
    int answered;
};

static struct conn *conns;   /* indexed by fd */
static char rbuf[65536];

static void conn_close(int fd)
{
    peer_line_free(&conns[fd].line);
    conns[fd].answered = 0;
    close(fd);               /* also leaves the epoll set */
}

static void on_readable(int fd)
{
    struct conn *c = &conns[fd];
    ssize_t n = recv(fd, rbuf, sizeof rbuf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_close(fd);
        return;
    }
    int r = c->answered ? PEER_MORE : peer_feed(&c->line, rbuf, (size_t)n);
    if (r == PEER_MORE)
        return;
    c->answered = 1;
    const char *msg = r == PEER_GOOD ? PEER_OK : PEER_ERR;
    size_t len = strlen(msg);
    /* A reply this small always fits an idle socket's send buffer. The
     * last one is corked (MSG_MORE) so that the FIN rides in its segment. */
    if (send(fd, msg, len, MSG_NOSIGNAL | (r == PEER_BAD ? MSG_MORE : 0)) != (ssize_t)len)
        conn_close(fd);
    else if (r == PEER_BAD)
        shutdown(fd, SHUT_WR);   /* then the drain: reads until EOF */
}

static void on_accept(int ep, int lfd)
{
    int fd;
    while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            close(fd);
    }
}

int main(int argc, char **argv)
{
    int lfd = peer_listen(argc, argv, 1);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    conns = calloc(rl.rlim_cur, sizeof *conns);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    if (!conns || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
        peer_die("epoll");
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd == lfd)
                on_accept(ep, lfd);
            else
                on_readable(evs[i].data.fd);
        }
    }
}
