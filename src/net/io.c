/* io.c - the few non-blocking primitives every connection path shares:
 * deadline arithmetic, waiting, and one-shot recv/send/drain. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sys/socket.h>

int cw__timeout_at(int64_t deadline, int64_t now)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - now;
    if (left <= 0)
        return 0;
    return left > INT_MAX ? INT_MAX : (int)left;
}

int cw__poll_timeout(int64_t deadline)
{
    return cw__timeout_at(deadline, cw_now_ms());
}

int64_t cw__min_deadline(int64_t a, int64_t b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

int cw__wait(int fd, short events, int64_t deadline)
{
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        int n = poll(&p, 1, cw__poll_timeout(deadline));
        if (n > 0)
            return p.revents;
        if (n == 0)
            return CW_ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

ssize_t cw__recv_nb(int fd, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);
        if (n > 0)
            return n;
        if (n == 0)
            return CW_EOF;
        if (errno == EINTR)
            continue;
        if (errno == EWOULDBLOCK)
            return -EAGAIN;
        return -errno;   /* -ECONNRESET == CW_ERESET, -ETIMEDOUT, ... */
    }
}

ssize_t cw__send_nb(int fd, const void *buf, size_t len)
{
    for (;;) {
        ssize_t n = send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EWOULDBLOCK)
            return -EAGAIN;
        return -errno;
    }
}

int cw__drain_nb(int fd, size_t *total)
{
    char scratch[16384];
    for (;;) {
        /* MSG_TRUNC would skip the copy, but only the first call frees
         * the receive queue as fast; a small scratch buffer is simpler
         * and the drain is bounded by the caller anyway. */
        ssize_t n = cw__recv_nb(fd, scratch, sizeof scratch);
        if (n < 0)
            return (int)n;
        *total += (size_t)n;
        if (*total > CW_DRAIN_MAX)
            return CW_ETOOLONG;
    }
}
