/* explain.c - what a socket's kernel fields mean, in plain words: who must
 * act, and on what evidence. Also address formatting for cw_sock (state
 * names: tcpstate.c). */
#define _GNU_SOURCE
#include "../net/internal.h"

#include <arpa/inet.h>
#include <closewise/diag.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

int cw_sock_addr(const struct cw_sock *s, int peer, char *buf, size_t size)
{
    if (!s || !buf)
        return CW_EINVAL;
    int n = cw__addr_format(s->family, peer ? s->dst : s->src,
                            (unsigned)(peer ? s->dport : s->sport), buf, size);
    return n < 0 ? CW_EINVAL : n;
}

int cw_sock_close_wait_age(const struct cw_sock *s, uint32_t *min_ms,
                           uint32_t *max_ms)
{
    if (!s || !s->has_info || !min_ms || !max_ms)
        return CW_EINVAL;
    /* The FIN's ACK refreshed last_ack; a bare FIN leaves last_data_recv
     * at the last data segment. Later ACKs (of our own sends, or keepalive
     * replies) only make the lower bound smaller, never wrong. */
    uint32_t lo = s->last_ack_recv_ms, hi = s->last_data_recv_ms;
    *min_ms = lo < hi ? lo : hi;
    *max_ms = hi;
    return CW_OK;
}

static const char *close_wait_why(const struct cw_sock *s, char *lport, size_t size)
{
    if (s->inode == 0) {
        snprintf(lport, size,
                 "peer closed; still in the accept queue of listener :%u, "
                 "never accepted: the listening process must accept() it",
                 (unsigned)(s->listener_port ? s->listener_port : s->sport));
        return lport;
    }
    if (s->rqueue >= 1)
        return "peer closed; this process has not read the end of stream "
               "(it stopped reading or is blocked elsewhere): it must read "
               "to EOF and close()";
    return "peer closed; this process read EOF but never called close(): "
           "a missing-close bug";
}

static const char *state_why(int state)
{
    switch (state) {
    case CW_TCP_ESTABLISHED: return "open in both directions; nothing to do";
    case CW_TCP_SYN_SENT: return "connecting; waiting for the peer's SYN-ACK";
    case CW_TCP_SYN_RECV: return "half-open; waiting for the client's ACK";
    case CW_TCP_FIN_WAIT1: return "this side closed; its FIN is not yet acknowledged";
    case CW_TCP_FIN_WAIT2:
        return "this side closed; waiting for the peer to close (the peer "
               "must act)";
    case CW_TCP_TIME_WAIT:
        return "closed; the kernel keeps the 4-tuple for 60 s, no one must act";
    case CW_TCP_CLOSE: return "closed";
    case CW_TCP_LAST_ACK:
        return "both sides closed; waiting for the peer to acknowledge our FIN";
    case CW_TCP_LISTEN: return "listening";
    case CW_TCP_CLOSING: return "both sides closed at once; waiting for the last ACK";
    }
    return "unknown state";
}

const char *cw_sock_explain(const struct cw_sock *s, char *buf, size_t size)
{
    char why[200];
    if (!buf || size == 0)
        return "";
    if (!s) {
        snprintf(buf, size, "no socket");
        return buf;
    }
    const char *base = s->state == CW_TCP_CLOSE_WAIT
                           ? close_wait_why(s, why, sizeof why)
                           : state_why(s->state);
    const char *tail = "";
    if (s->state == CW_TCP_CLOSE_WAIT)
        tail = s->timer == 2 ? "; will be reset by keepalive once the peer "
                               "forgets it"
                             : "; no timer: it stays until the process closes it";
    snprintf(buf, size, "%s%s", base, tail);
    return buf;
}
