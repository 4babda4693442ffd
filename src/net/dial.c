/* dial.c - outgoing connections: every address, bounded by one deadline. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int cw__resolve(const char *host, uint16_t port, int family, int flags,
                   struct addrinfo **res)
{
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    struct addrinfo hints = {
        .ai_family = family,
        .ai_socktype = SOCK_STREAM,
        .ai_protocol = IPPROTO_TCP,
        .ai_flags = AI_NUMERICSERV | flags,
    };
    int rc = getaddrinfo(host, service, &hints, res);
    if (rc == 0)
        return CW_OK;
    if (rc == EAI_SYSTEM && errno)
        return -errno;
    return rc == EAI_MEMORY ? -ENOMEM : CW_ERESOLVE;
}

/* The seed's "reuse one local port": bind before connect. */
int cw__bind_local(int fd, int family, const struct cw_opts *o)
{
    if (!o || (!o->bind_host && !o->bind_port))
        return CW_OK;
    struct addrinfo *ai;
    int rc = cw__resolve(o->bind_host, o->bind_port, family, AI_PASSIVE, &ai);
    if (rc < 0)
        return rc;
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0)
        rc = -errno;
    freeaddrinfo(ai);
    return rc;
}

static int connect_wait(int fd, const struct addrinfo *ai, int64_t deadline)
{
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return CW_OK;
    if (errno != EINPROGRESS && errno != EINTR)
        return -errno;
    int w = cw__wait(fd, POLLOUT, deadline);
    if (w < 0)
        return w;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -errno;
    return err ? -err : CW_OK;
}

static int dial_one(const struct addrinfo *ai, const struct cw_opts *o,
                    int64_t deadline, int *fdp)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    IPPROTO_TCP);
    if (fd < 0)
        return -errno;
    int rc = cw__apply_opts(fd, o, false);
    if (rc == CW_OK)
        rc = cw__bind_local(fd, ai->ai_family, o);
    if (rc == CW_OK)
        rc = connect_wait(fd, ai, deadline);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    *fdp = fd;
    return CW_OK;
}

/* Split what is left of the deadline evenly over the remaining addresses,
 * so one black-holed address cannot use up the whole budget. */
int64_t cw__attempt_deadline(int64_t deadline, int left)
{
    if (deadline < 0 || left <= 1)
        return deadline;
    int64_t now = cw_now_ms();
    return deadline <= now ? deadline : now + (deadline - now) / left;
}

int cw_dial(const char *host, uint16_t port, const struct cw_opts *opts,
            int64_t deadline, cw_conn **out)
{
    if (!out || port == 0)
        return CW_EINVAL;
    *out = NULL;
    struct addrinfo *res;
    int rc = cw__resolve(host ? host : "localhost", port, AF_UNSPEC, 0, &res);
    if (rc < 0)
        return rc;
    int left = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
        left++;
    int fd = -1;
    rc = CW_ERESOLVE;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next, left--) {
        rc = dial_one(ai, opts, cw__attempt_deadline(deadline, left), &fd);
        if (rc == CW_OK)
            break;
    }
    freeaddrinfo(res);
    if (rc < 0)
        return rc;
    return cw__conn_new(fd, opts, out);
}
