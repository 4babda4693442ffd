/* listen.c - listening sockets and accept with a deadline. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static int listen_one(const struct addrinfo *ai, const struct cw_opts *o,
                      bool dual, int backlog, int *fdp)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    IPPROTO_TCP);
    if (fd < 0)
        return -errno;
    int rc = cw__apply_opts(fd, o, true);
    if (rc == CW_OK && ai->ai_family == AF_INET6 && dual) {
        int v6only = o ? o->v6only : 0;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) < 0)
            rc = -errno;
    }
    if (rc == CW_OK && bind(fd, ai->ai_addr, ai->ai_addrlen) < 0)
        rc = -errno;
    if (rc == CW_OK && listen(fd, backlog > 0 ? backlog : SOMAXCONN) < 0)
        rc = -errno;
    if (rc < 0) {
        close(fd);
        return rc;
    }
    *fdp = fd;
    return CW_OK;
}

/* With no host, "::" with IPV6_V6ONLY off serves IPv4 and IPv6 on one
 * socket; 0.0.0.0 is the fallback for kernels without IPv6. */
static int resolve_passive(const char *host, uint16_t port, struct addrinfo **res)
{
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    struct addrinfo hints = {
        .ai_family = host ? AF_UNSPEC : AF_INET6,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
    };
    int rc = getaddrinfo(host, service, &hints, res);
    if (rc != 0 && !host) {
        hints.ai_family = AF_INET;
        rc = getaddrinfo(host, service, &hints, res);
    }
    if (rc == 0)
        return CW_OK;
    return rc == EAI_SYSTEM && errno ? -errno : CW_ERESOLVE;
}

int cw_listen(const char *host, uint16_t port, const struct cw_opts *opts,
              int backlog, cw_listener **out)
{
    if (!out)
        return CW_EINVAL;
    *out = NULL;
    struct addrinfo *res;
    int rc = resolve_passive(host, port, &res);
    if (rc < 0)
        return rc;
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        rc = listen_one(ai, opts, host == NULL, backlog, &fd);
        if (rc == CW_OK)
            break;
    }
    freeaddrinfo(res);
    if (rc < 0)
        return rc;
    cw_listener *l = calloc(1, sizeof *l);
    if (!l) {
        close(fd);
        return -ENOMEM;
    }
    l->fd = fd;
    l->port = bound_port(fd);
    l->read_timeout_ms = opts ? opts->read_timeout_ms : 0;
    *out = l;
    return CW_OK;
}

int cw_accept(cw_listener *l, int64_t deadline, cw_conn **out)
{
    if (!l || !out)
        return CW_EINVAL;
    *out = NULL;
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            struct cw_opts o;
            cw_opts_init(&o);
            o.read_timeout_ms = l->read_timeout_ms;
            return cw__conn_new(fd, &o, out);
        }
        /* A connection reset before we took it is not our failure. */
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno != EAGAIN)
            return -errno;
        int w = cw__wait(l->fd, POLLIN, deadline);
        if (w < 0)
            return w;
    }
}

int cw_listener_port(const cw_listener *l)
{
    return l ? l->port : CW_EINVAL;
}

int cw_listener_fd(const cw_listener *l)
{
    return l ? l->fd : CW_EINVAL;
}

int cw_listener_close(cw_listener **lp)
{
    if (!lp || !*lp)
        return CW_EINVAL;
    close((*lp)->fd);
    free(*lp);
    *lp = NULL;
    return CW_OK;
}
