/* uv_peer.c - the benchmark's libuv peer, written the way a careful libuv
 * user writes it: uv_read_start, uv_write, uv_shutdown queued after the
 * last write, read (and discard) to EOF while a lingering timer bounds the
 * wait, uv_close on every handle. Protocol: peer.h. */
#include "peer.h"

#include <uv.h>

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;        /* started only while lingering */
    uv_write_t wr;
    uv_shutdown_t sh;
    struct peer_line line;
    int answered, lingering, handles;
};

static uv_loop_t *loop;
static char rbuf[65536];     /* one thread: every read can share it */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    *b = uv_buf_init(rbuf, sizeof rbuf);
}

static void on_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->handles == 0) {
        peer_line_free(&c->line);
        free(c);
    }
}

static void conn_close(struct conn *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    if (c->lingering)
        uv_close((uv_handle_t *)&c->timer, on_closed);
}

static void on_linger_timeout(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (status < 0 || uv_is_closing((uv_handle_t *)&c->tcp)) {
        conn_close(c);
        return;
    }
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->handles++;
    c->lingering = 1;
    uv_timer_start(&c->timer, on_linger_timeout, PEER_LINGER_MS, 0);
}

static void on_written(uv_write_t *req, int status)
{
    if (status < 0)
        conn_close(req->data);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (n < 0) {                 /* UV_EOF or an error: the end either way */
        conn_close(c);
        return;
    }
    if (n == 0 || c->answered)   /* after the reply, input is discarded */
        return;
    int r = peer_feed(&c->line, b->base, (size_t)n);
    if (r == PEER_MORE)
        return;
    c->answered = 1;
    uv_buf_t out = r == PEER_GOOD ? uv_buf_init((char *)PEER_OK, sizeof PEER_OK - 1)
                                  : uv_buf_init((char *)PEER_ERR, sizeof PEER_ERR - 1);
    if (uv_write(&c->wr, s, &out, 1, on_written) < 0 ||
        (r == PEER_BAD && uv_shutdown(&c->sh, s, on_shutdown) < 0))
        conn_close(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct conn *c = status < 0 ? NULL : calloc(1, sizeof *c);
    if (!c)
        return;
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c->wr.data = c->sh.data = c;
    c->handles = 1;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
        conn_close(c);
}

int main(int argc, char **argv)
{
    int fd = peer_listen(argc, argv, 1);
    uv_tcp_t server;
    loop = uv_default_loop();
    if (uv_tcp_init(loop, &server) < 0 || uv_tcp_open(&server, fd) < 0 ||
        uv_listen((uv_stream_t *)&server, 4096, on_connection) < 0)
        peer_die("uv_listen");
    return uv_run(loop, UV_RUN_DEFAULT);
}
