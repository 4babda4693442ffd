/* event_peer.c - the benchmark's libevent peer, with bufferevents: read a
 * line, write the reply; after the last reply is flushed, shutdown(SHUT_WR)
 * and discard input until EOF, bounded by a read timeout; then
 * bufferevent_free closes. Protocol: peer.h. */
#include "peer.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        bufferevent_free(bev);
}

static void on_discard(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
}

/* The last reply left: half-close, then linger for the peer's FIN. */
static void on_flushed(struct bufferevent *bev, void *arg)
{
    struct timeval linger = {PEER_LINGER_MS / 1000, 0};
    shutdown(bufferevent_getfd(bev), SHUT_WR);
    bufferevent_set_timeouts(bev, &linger, NULL);
    bufferevent_setcb(bev, on_discard, NULL, on_event, NULL);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t eol;
    struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol, EVBUFFER_EOL_LF);
    if (p.pos < 0 && evbuffer_get_length(in) <= PEER_MAX_LINE + 1)
        return;
    int r = PEER_BAD;
    if (p.pos >= 0)
        r = peer_check((char *)evbuffer_pullup(in, p.pos + 1), (size_t)p.pos);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (r == PEER_GOOD) {
        bufferevent_write(bev, PEER_OK, sizeof PEER_OK - 1);
        bufferevent_setcb(bev, on_discard, NULL, on_event, NULL);
    } else {
        bufferevent_write(bev, PEER_ERR, sizeof PEER_ERR - 1);
        bufferevent_setcb(bev, on_discard, on_flushed, on_event, NULL);
    }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int len, void *arg)
{
    struct bufferevent *bev = bufferevent_socket_new(arg, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        close(fd);
        return;
    }
    bufferevent_setcb(bev, on_read, NULL, on_event, NULL);
    bufferevent_enable(bev, EV_READ);
}

int main(int argc, char **argv)
{
    int fd = peer_listen(argc, argv, 1);
    struct event_base *base = event_base_new();
    if (!base || !evconnlistener_new(base, on_accept, base, LEV_OPT_CLOSE_ON_FREE, 0, fd))
        peer_die("libevent");
    return event_base_dispatch(base);
}
