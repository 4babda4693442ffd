/* echo_server.c - an echo server on cw_stream that never leaks a socket.
 *
 * Every way a connection can end arrives as one terminal result in
 * on_read, and the one thing done with it is a graceful close. A client
 * that sends faster than it reads pauses our reading (backpressure), and
 * one that stops reading altogether is reset by the write timeout.
 *
 * usage: echo_server PORT [IDLE_MS]
 * PORT 0 picks a free port; "listening PORT" is printed once ready.
 * SIGINT/SIGTERM stop it.
 */
#include <closewise/closewise.h>
#include <stdio.h>
#include <stdlib.h>

static void on_read(cw_stream *s, ssize_t n, const char *buf)
{
    if (n < 0) {   /* CW_EOF, CW_ERESET, CW_ETIMEDOUT or an error */
        cw_stream_close(s, CW_CLOSE_GRACEFUL, cw_now_ms() + 5000, NULL);
        return;
    }
    if (cw_stream_write(s, buf, (size_t)n) == 1)
        cw_stream_read_stop(s);   /* the queue is full: wait for on_drain */
}

static void on_drain(cw_stream *s)
{
    cw_stream_read_start(s);
}

static void on_closed(cw_stream *s, int how)
{
    if (how != CW_OK)
        fprintf(stderr, "echo_server: connection ended: %s\n", cw_strerror(how));
}

static const struct cw_stream_handlers echo = {on_read, on_drain, on_closed};

static void on_accept(cw_acceptor *a, cw_stream *s, void *data)
{
    cw_stream_start(s, &echo, NULL);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: echo_server PORT [IDLE_MS]\n");
        return 2;
    }
    struct cw_stream_opts so;
    cw_stream_opts_init(&so);
    so.idle_timeout_ms = argc > 2 ? (uint32_t)atoi(argv[2]) : 30000;
    cw_loop *loop;
    cw_listener *l;
    cw_acceptor *a;
    int rc = cw_loop_new(&loop);
    if (rc == CW_OK)
        rc = cw_loop_signals(loop, NULL, NULL);
    if (rc == CW_OK)
        rc = cw_listen("127.0.0.1", (uint16_t)atoi(argv[1]), NULL, 0, &l);
    if (rc == CW_OK)
        rc = cw_acceptor_new(loop, l, &so, on_accept, NULL, &a);
    if (rc < 0) {
        fprintf(stderr, "echo_server: %s\n", cw_strerror(rc));
        return 3;
    }
    printf("listening %d\n", cw_listener_port(l));
    fflush(stdout);
    rc = cw_loop_run(loop);
    cw_acceptor_free(&a);
    cw_listener_close(&l);
    cw_loop_free(&loop);
    return rc < 0 ? 3 : 0;
}
