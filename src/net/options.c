/* options.c - socket options, applied the same way for dial and listen. */
#define _GNU_SOURCE
#include "internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>

void cw_opts_init(struct cw_opts *o)
{
    memset(o, 0, sizeof *o);
    o->reuseaddr = -1;
}

static int setopt(int fd, int level, int name, int value)
{
    if (setsockopt(fd, level, name, &value, sizeof value) < 0)
        return -errno;
    return CW_OK;
}

/* Each option is only set when asked for, so a kernel default is never
 * overwritten by a zero. */
int cw__apply_opts(int fd, const struct cw_opts *o, bool is_listener)
{
    struct cw_opts defaults;
    if (!o) {
        cw_opts_init(&defaults);
        o = &defaults;
    }
    int reuse = o->reuseaddr < 0 ? is_listener : o->reuseaddr;
    struct { bool on; int level, name, value; } tab[] = {
        {reuse, SOL_SOCKET, SO_REUSEADDR, 1},
        {o->reuseport && is_listener, SOL_SOCKET, SO_REUSEPORT, 1},
        {o->nodelay, IPPROTO_TCP, TCP_NODELAY, 1},
        {o->keepalive, SOL_SOCKET, SO_KEEPALIVE, 1},
        {o->keepalive && o->keepidle_s > 0, IPPROTO_TCP, TCP_KEEPIDLE, o->keepidle_s},
        {o->keepalive && o->keepintvl_s > 0, IPPROTO_TCP, TCP_KEEPINTVL, o->keepintvl_s},
        {o->keepalive && o->keepcnt > 0, IPPROTO_TCP, TCP_KEEPCNT, o->keepcnt},
        {o->user_timeout_ms > 0, IPPROTO_TCP, TCP_USER_TIMEOUT, (int)o->user_timeout_ms},
        {o->rcvbuf > 0, SOL_SOCKET, SO_RCVBUF, o->rcvbuf},
        {o->sndbuf > 0, SOL_SOCKET, SO_SNDBUF, o->sndbuf},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        if (!tab[i].on)
            continue;
        int rc = setopt(fd, tab[i].level, tab[i].name, tab[i].value);
        if (rc < 0)
            return rc;
    }
    return CW_OK;
}

int cw__set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return CW_OK;
}

int cw__set_linger0(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) < 0)
        return -errno;
    return CW_OK;
}
