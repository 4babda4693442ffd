/* conn.c - a connected TCP stream: reads that end unambiguously, writes
 * that never raise SIGPIPE, and close as a protocol rather than a syscall. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A graceful close given CW_NEVER still ends: a peer that never sends its
 * FIN must not be able to hold us forever. */
#define CW_CLOSE_DEFAULT_MS 30000

int cw__conn_new(int fd, const struct cw_opts *o, cw_conn **out)
{
    cw_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return -ENOMEM;
    }
    c->fd = fd;
    c->read_timeout_ms = o ? o->read_timeout_ms : 0;
    *out = c;
    return CW_OK;
}

int cw_conn_adopt(int fd, const struct cw_opts *opts, cw_conn **out)
{
    if (fd < 0 || !out) {
        if (fd >= 0)
            close(fd);
        return CW_EINVAL;
    }
    *out = NULL;
    int rc = cw__set_nonblock(fd);
    if (rc == CW_OK)
        rc = cw__apply_opts(fd, opts, false);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return cw__conn_new(fd, opts, out);
}

/* Record a terminal read result. A failed send may already have consumed
 * the kernel's pending ECONNRESET, after which recv() reports a plain 0:
 * the reset is remembered so the reader still sees CW_ERESET. */
static ssize_t set_rd_sticky(cw_conn *c, ssize_t rc)
{
    if (rc == CW_EOF && c->wr_sticky == CW_ERESET)
        rc = CW_ERESET;
    c->rd_sticky = (int)rc;
    if (rc == CW_ERESET && !c->wr_sticky)
        c->wr_sticky = CW_ERESET;
    return rc;
}

/* Read from the kernel, waiting until the deadline or read timeout. */
static ssize_t conn_read(cw_conn *c, void *buf, size_t len, int64_t deadline)
{
    if (c->read_timeout_ms > 0)
        deadline = cw__min_deadline(deadline, cw_now_ms() + c->read_timeout_ms);
    for (;;) {
        ssize_t n = cw__recv_nb(c->fd, buf, len);
        if (n > 0)
            return n;
        if (n != -EAGAIN)
            return set_rd_sticky(c, n);
        int w = cw__wait(c->fd, POLLIN | POLLRDHUP, deadline);
        if (w < 0)
            return set_rd_sticky(c, w);
    }
}

static size_t rbuf_pending(const cw_conn *c)
{
    return c->rbuf_len - c->rbuf_off;
}

ssize_t cw_recv(cw_conn *c, void *buf, size_t len, int64_t deadline)
{
    if (!c || !buf || len == 0)
        return CW_EINVAL;
    size_t pending = rbuf_pending(c);
    if (pending) {   /* bytes cw_readline read ahead come first */
        size_t n = pending < len ? pending : len;
        memcpy(buf, c->rbuf + c->rbuf_off, n);
        c->rbuf_off += n;
        return (ssize_t)n;
    }
    if (c->rd_sticky)
        return c->rd_sticky;
    return conn_read(c, buf, len, deadline);
}

/* Hand out n buffered bytes as a line, plus skip consumed terminators. */
static ssize_t take_line(cw_conn *c, char *buf, size_t size, size_t n,
                         size_t skip)
{
    const char *line = c->rbuf + c->rbuf_off;
    size_t len = n;
    if (skip && len > 0 && line[len - 1] == '\r')
        len--;
    if (len > size - 1) {
        c->rbuf_off = c->rbuf_len = 0;
        return set_rd_sticky(c, CW_ETOOLONG);
    }
    memcpy(buf, line, len);
    buf[len] = '\0';
    c->rbuf_off += n + skip;
    return (ssize_t)len;
}

/* Make room for reading: keep what is pending at the front, and hold at
 * most one maximal line plus its "\r\n". */
static int rbuf_reserve(cw_conn *c, size_t size)
{
    size_t pending = rbuf_pending(c);
    if (pending && c->rbuf_off)
        memmove(c->rbuf, c->rbuf + c->rbuf_off, pending);
    c->rbuf_off = 0;
    c->rbuf_len = pending;
    size_t want = size + 1;
    if (c->rbuf_cap >= want)
        return CW_OK;
    char *p = realloc(c->rbuf, want);
    if (!p)
        return -ENOMEM;
    c->rbuf = p;
    c->rbuf_cap = want;
    return CW_OK;
}

ssize_t cw_readline(cw_conn *c, char *buf, size_t size, int64_t deadline)
{
    if (!c || !buf || size == 0)
        return CW_EINVAL;
    if (c->rd_sticky == CW_ETOOLONG)
        return CW_ETOOLONG;
    for (;;) {
        size_t pending = rbuf_pending(c);
        char *start = c->rbuf ? c->rbuf + c->rbuf_off : NULL;
        char *nl = pending ? memchr(start, '\n', pending) : NULL;
        if (nl)
            return take_line(c, buf, size, (size_t)(nl - start), 1);
        /* size - 1 bytes of line plus a possible "\r" may wait for "\n". */
        if (pending > size || (pending == size && start[pending - 1] != '\r')) {
            c->rbuf_off = c->rbuf_len = 0;
            return set_rd_sticky(c, CW_ETOOLONG);
        }
        /* Only a clean end of stream turns a partial line into a line. */
        if (c->rd_sticky)
            return (pending && c->rd_sticky == CW_EOF)
                       ? take_line(c, buf, size, pending, 0) : c->rd_sticky;
        int rc = rbuf_reserve(c, size);
        if (rc < 0)
            return rc;
        ssize_t n = conn_read(c, c->rbuf + c->rbuf_len,
                              c->rbuf_cap - c->rbuf_len, deadline);
        if (n > 0)
            c->rbuf_len += (size_t)n;
    }
}

int cw_send_all(cw_conn *c, const void *buf, size_t len, int64_t deadline)
{
    if (!c || !buf || len == 0)
        return CW_EINVAL;
    if (c->wr_sticky)
        return c->wr_sticky;
    const char *p = buf;
    size_t off = 0;
    while (off < len) {
        ssize_t n = cw__send_nb(c->fd, p + off, len - off);
        if (n >= 0) {
            off += (size_t)n;
            continue;
        }
        if (n == -EAGAIN) {
            int w = cw__wait(c->fd, POLLOUT, deadline);
            if (w >= 0)
                continue;
            n = w;
        }
        c->wr_sticky = (int)n;
        return (int)n;
    }
    return CW_OK;
}

/* Read and discard until the peer's FIN: what makes the peer receive
 * everything we sent instead of a RST that destroys it. */
static int drain_to_fin(cw_conn *c, int64_t deadline)
{
    size_t total = 0;
    for (;;) {
        int rc = cw__drain_nb(c->fd, &total);
        if (rc == CW_EOF)
            return CW_OK;
        if (rc != -EAGAIN)
            return rc;
        int w = cw__wait(c->fd, POLLIN | POLLRDHUP, deadline);
        if (w < 0)
            return w;
    }
}

static int close_graceful(cw_conn *c, int64_t deadline)
{
    if (deadline < 0)
        deadline = cw_now_ms() + CW_CLOSE_DEFAULT_MS;
    if (c->rd_sticky == CW_ERESET || c->wr_sticky == CW_ERESET)
        return CW_ERESET;
    /* ENOTCONN: both FINs already crossed (or a reset came); the drain
     * below reads which one it was. */
    if (shutdown(c->fd, SHUT_WR) < 0 && errno != ENOTCONN)
        return -errno;
    if (c->rd_sticky == CW_EOF)
        return CW_OK;   /* the peer's FIN was already read */
    int rc = drain_to_fin(c, deadline);
    return rc == -ENOTCONN ? CW_ERESET : rc;
}

int cw_close(cw_conn **cp, enum cw_close_how how, int64_t deadline)
{
    if (!cp || !*cp)
        return CW_EINVAL;
    cw_conn *c = *cp;
    *cp = NULL;
    int rc = CW_OK;
    if (how == CW_CLOSE_ABORT)
        cw__set_linger0(c->fd);
    else
        rc = close_graceful(c, deadline);
    close(c->fd);   /* Linux releases the fd even when close() fails */
    free(c->rbuf);
    free(c);
    return rc;
}

int cw_peer_closed(cw_conn *c)
{
    if (!c)
        return CW_EINVAL;
    if (c->rd_sticky == CW_EOF || c->rd_sticky == CW_ERESET)
        return 1;
    struct pollfd p = {.fd = c->fd, .events = POLLRDHUP};
    int n = poll(&p, 1, 0);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) ? 1 : 0;
}

int cw_tcp_state(const cw_conn *c)
{
    if (!c)
        return CW_EINVAL;
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
        return -errno;
    return ti.tcpi_state;
}

int cw_conn_fd(const cw_conn *c)
{
    return c ? c->fd : CW_EINVAL;
}

static int format_name(const cw_conn *c, char *buf, size_t size, bool peer)
{
    if (!c || !buf || size == 0)
        return CW_EINVAL;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int rc = peer ? getpeername(c->fd, (struct sockaddr *)&ss, &len)
                  : getsockname(c->fd, (struct sockaddr *)&ss, &len);
    if (rc < 0)
        return -errno;
    return cw__format_addr((struct sockaddr *)&ss, len, buf, size);
}

int cw_conn_peer(const cw_conn *c, char *buf, size_t size)
{
    return format_name(c, buf, size, true);
}

int cw_conn_local(const cw_conn *c, char *buf, size_t size)
{
    return format_name(c, buf, size, false);
}
