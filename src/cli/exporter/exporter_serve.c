/* exporter_serve.c - the exporter's HTTP side (see exporter_serve.h).
 * Built on cw_loop rather than libmicrohttpd: one small GET per scrape
 * needs no more than a strict head parser, and the close path is the
 * project's own (shutdown, bounded drain, close), which is the point. */
#define _GNU_SOURCE
#include "exporter_serve.h"
#include "exporter_http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* A response body shared by every connection sending it. */
struct body {
    int refs;
    size_t len;
    char *text;
};

enum phase { READING, WRITING, LINGERING };

struct hconn {
    cw_io io;
    cw_timer timer;
    struct xs *srv;
    struct hconn *prev, *next;
    enum phase phase;
    int head_only;              /* HEAD: no body */
    size_t inlen;
    char in[XH_MAX_HEAD];
    char head[256];
    size_t headlen, off;        /* off: bytes of head + body sent */
    struct body *body;          /* NULL: static text in stext */
    const char *stext;
    size_t slen;
};

struct xs {
    cw_loop *loop;
    struct xs_opts o;
    cw_io lio;
    cw_timer retry;             /* accept paused on EMFILE */
    struct hconn *conns;
    int nconns;
    int accepting;
    struct body *cur;
};

static void body_unref(struct body *b)
{
    if (b && --b->refs == 0) {
        free(b->text);
        free(b);
    }
}

static void set_accepting(struct xs *s, int on)
{
    if (s->accepting != on && cw_io_set(s->loop, &s->lio, on ? CW_IO_READ : 0) == CW_OK)
        s->accepting = on;
}

static void conn_free(struct hconn *c)
{
    struct xs *s = c->srv;
    cw_io_stop(s->loop, &c->io);
    cw_timer_stop(s->loop, &c->timer);
    close(c->io.fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    body_unref(c->body);
    free(c);
    s->nconns--;
    if (s->nconns < s->o.max_conns && !cw_timer_active(&s->retry))
        set_accepting(s, 1);
}

/* Drop the connection with a RST: a scraper that does not take its
 * response in time, or resets, loses nothing worth a graceful end. */
static void conn_abort(struct hconn *c)
{
    struct linger lg = {1, 0};
    setsockopt(c->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    conn_free(c);
}

static void respond(struct hconn *c, int code, const char *reason, const char *extra,
                    struct body *b, const char *text);

static void on_timer(cw_loop *loop, cw_timer *t)
{
    struct hconn *c = t->data;
    (void)loop;
    if (c->phase == READING)   /* say why, then end as gracefully as always */
        respond(c, 408, "Request Timeout", NULL, NULL, "request timeout\n");
    else if (c->phase == LINGERING)
        conn_free(c);   /* it has had its answer; a RST now costs nothing */
    else
        conn_abort(c);  /* it does not take its answer: stop waiting */
}

/* Read and discard until EAGAIN; 1 when the scraper's FIN was reached. */
static int drain(struct hconn *c)
{
    char buf[4096];
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t n = recv(c->io.fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0)
            return 1;
        if (n < 0)
            return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    }
    return 0;
}

static void start_linger(struct hconn *c)
{
    struct xs *s = c->srv;
    if (shutdown(c->io.fd, SHUT_WR) < 0) {
        conn_abort(c);
        return;
    }
    c->phase = LINGERING;
    int r = drain(c);
    if (r != 0) {
        conn_free(c);
        return;
    }
    cw_io_set(s->loop, &c->io, CW_IO_READ);
    cw_timer_start(s->loop, &c->timer, cw_now_ms() + s->o.linger_ms, on_timer);
}

static void write_more(struct hconn *c)
{
    size_t blen = c->head_only ? 0 : c->body ? c->body->len : c->slen;
    const char *btext = c->body ? c->body->text : c->stext;
    while (c->off < c->headlen + blen) {
        struct iovec v[2];
        int k = 0;
        if (c->off < c->headlen)
            v[k++] = (struct iovec){c->head + c->off, c->headlen - c->off};
        size_t boff = c->off > c->headlen ? c->off - c->headlen : 0;
        if (blen > boff)
            v[k++] = (struct iovec){(char *)btext + boff, blen - boff};
        struct msghdr mh = {.msg_iov = v, .msg_iovlen = (size_t)k};
        ssize_t n = sendmsg(c->io.fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            cw_io_set(c->srv->loop, &c->io, CW_IO_WRITE);
            return;
        }
        if (n < 0) {
            conn_abort(c);
            return;
        }
        c->off += (size_t)n;
    }
    start_linger(c);
}

static void respond(struct hconn *c, int code, const char *reason, const char *extra,
                    struct body *b, const char *text)
{
    struct xs *s = c->srv;
    c->phase = WRITING;
    c->body = b;
    if (b)
        b->refs++;
    c->stext = text;
    c->slen = text ? strlen(text) : 0;
    size_t len = b ? b->len : c->slen;
    int n = snprintf(c->head, sizeof c->head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "%sConnection: close\r\n\r\n",
                     code, reason, b ? CONTENT_TYPE : "text/plain; charset=utf-8", len,
                     extra ? extra : "");
    c->headlen = n > 0 && (size_t)n < sizeof c->head ? (size_t)n : 0;
    c->off = 0;
    cw_io_set(s->loop, &c->io, 0);
    cw_timer_start(s->loop, &c->timer, cw_now_ms() + s->o.write_timeout_ms, on_timer);
    write_more(c);
}

static void route(struct hconn *c, const struct xh_request *r)
{
    c->head_only = r->method == XH_HEAD;
    if (r->method == XH_OTHER)
        respond(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n", NULL,
                "only GET and HEAD\n");
    else if (r->path_len == 8 && !memcmp(r->path, "/metrics", 8))
        respond(c, 200, "OK", NULL, c->srv->cur, NULL);
    else if (r->path_len == 1)
        respond(c, 200, "OK", NULL, NULL, "closewise exporter: metrics at /metrics\n");
    else
        respond(c, 404, "Not Found", NULL, NULL, "not found; metrics at /metrics\n");
}

/* Read what is there and act once the head is whole. */
static void on_readable(struct hconn *c)
{
    int eof = 0;
    while (c->inlen < sizeof c->in) {
        ssize_t n = recv(c->io.fd, c->in + c->inlen, sizeof c->in - c->inlen, MSG_DONTWAIT);
        if (n > 0) {
            c->inlen += (size_t)n;
            continue;
        }
        if (n == 0)
            eof = 1;
        else if (errno != EAGAIN && errno != EINTR) {
            conn_abort(c);
            return;
        }
        break;
    }
    struct xh_request r;
    switch (xh_parse(c->in, c->inlen, &r)) {
    case XH_OK:
        route(c, &r);
        return;
    case XH_BAD:
    case XH_TOOLONG:
        respond(c, 400, "Bad Request", NULL, NULL, "bad request\n");
        return;
    case XH_INCOMPLETE:
        if (eof)
            conn_free(c);   /* the scraper left mid-request: nothing to say */
        return;
    }
}

static void on_conn(cw_loop *loop, cw_io *io, unsigned ev)
{
    struct hconn *c = io->data;
    (void)loop;
    if (ev & CW_EV_ERROR) {
        conn_free(c);   /* a RST: the socket is already closed in the kernel */
        return;
    }
    switch (c->phase) {
    case READING:
        if (ev & (CW_EV_READ | CW_EV_HUP))
            on_readable(c);
        break;
    case WRITING:
        if (ev & CW_EV_WRITE)
            write_more(c);
        break;
    case LINGERING:
        if (ev & (CW_EV_READ | CW_EV_HUP)) {
            int r = drain(c);
            if (r != 0)
                conn_free(c);
        }
        break;
    }
}

static void on_retry(cw_loop *loop, cw_timer *t)
{
    struct xs *s = t->data;
    (void)loop;
    if (s->nconns < s->o.max_conns)
        set_accepting(s, 1);
}

static int add_conn(struct xs *s, int fd)
{
    struct hconn *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->srv = s;
    c->io.fd = fd;
    c->io.data = c;
    c->timer.data = c;
    if (cw_io_start(s->loop, &c->io, CW_IO_READ, on_conn) < 0 ||
        cw_timer_start(s->loop, &c->timer, cw_now_ms() + s->o.request_timeout_ms,
                       on_timer) < 0) {
        cw_io_stop(s->loop, &c->io);
        free(c);
        return -ENOMEM;
    }
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    return 0;
}

static void on_accept(cw_loop *loop, cw_io *io, unsigned ev)
{
    struct xs *s = io->data;
    (void)ev;
    while (s->nconns < s->o.max_conns) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* the connection stays queued; try again shortly, no spin */
                set_accepting(s, 0);
                cw_timer_start(loop, &s->retry, cw_now_ms() + 100, on_retry);
            }
            return;   /* EAGAIN, ECONNABORTED, EINTR: next readiness */
        }
        if (add_conn(s, fd) < 0) {
            close(fd);
            return;
        }
    }
    set_accepting(s, 0);   /* at the cap: the backlog holds the rest */
}

int xs_new(cw_loop *loop, int listen_fd, const struct xs_opts *o, xs **out)
{
    struct xs *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->loop = loop;
    s->o = *o;
    s->lio.fd = listen_fd;
    s->lio.data = s;
    s->retry.data = s;
    s->cur = calloc(1, sizeof *s->cur);
    if (!s->cur) {
        free(s);
        return -ENOMEM;
    }
    s->cur->refs = 1;
    s->cur->text = strdup("");
    int rc = cw_io_start(loop, &s->lio, CW_IO_READ, on_accept);
    if (rc < 0 || !s->cur->text) {
        body_unref(s->cur);
        free(s);
        return rc < 0 ? rc : -ENOMEM;
    }
    s->accepting = 1;
    *out = s;
    return CW_OK;
}

int xs_set_body(xs *s, char *text, size_t len)
{
    struct body *b = malloc(sizeof *b);
    if (!b) {
        free(text);
        return -ENOMEM;
    }
    b->refs = 1;
    b->len = len;
    b->text = text;
    body_unref(s->cur);
    s->cur = b;
    return CW_OK;
}

int xs_conns(const xs *s)
{
    return s->nconns;
}

void xs_free(xs **sp)
{
    struct xs *s = *sp;
    if (!s)
        return;
    s->o.max_conns = 0;   /* conn_free must not re-arm accepting */
    while (s->conns)
        conn_free(s->conns);
    cw_io_stop(s->loop, &s->lio);
    cw_timer_stop(s->loop, &s->retry);
    body_unref(s->cur);
    free(s);
    *sp = NULL;
}
