/*
 * closewise/conn.h - connection lifecycle: dial, listen, accept, read,
 * write and close a TCP connection so that it always ends correctly.
 *
 * Do not include this file directly: include <closewise/closewise.h>.
 *
 * Conventions used by every function in this header:
 *  - Result codes: 0 (CW_OK) or a positive count on success, a negative
 *    value on failure. Negative values are either -errno (for example
 *    -ECONNREFUSED) or one of the CW_E* codes below, which are chosen
 *    outside the errno range. cw_strerror() explains any of them.
 *  - Deadlines are absolute CLOCK_MONOTONIC times in milliseconds, as
 *    returned by cw_now_ms(). CW_NEVER (-1) means "no deadline". A
 *    deadline already in the past means "do not wait".
 *  - Ownership: a cw_conn or cw_listener returned through an out-pointer
 *    belongs to the caller, who must release it exactly once with
 *    cw_close() / cw_listener_close(). Those functions take the address
 *    of the handle and set it to NULL, so a second close or a use after
 *    close is a CW_EINVAL, never a crash.
 *  - No function raises SIGPIPE. EINTR is handled inside.
 *  - A conn or listener is used by one thread at a time; different conns
 *    may be used from different threads.
 */
#ifndef CLOSEWISE_CONN_H
#define CLOSEWISE_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CW_NEVER ((int64_t)-1)

/* Result codes beyond errno. CW_ERESET and CW_ETIMEDOUT are the errno
 * values themselves so that `rc == -ECONNRESET` also works. */
enum {
    CW_OK = 0,
    CW_EOF = -10001,        /* peer sent FIN: socket is in CLOSE_WAIT, close it */
    CW_ETOOLONG = -10002,   /* a line exceeded the caller's maximum */
    CW_ERESOLVE = -10003,   /* host name lookup failed */
    CW_ECLOSING = -10004,   /* operation on a conn that is being closed */
    CW_ERESET = -104,       /* -ECONNRESET: peer reset the connection */
    CW_ETIMEDOUT = -110,    /* -ETIMEDOUT: deadline or kernel timeout */
    CW_EINVAL = -22,        /* -EINVAL: bad argument, NULL or closed handle */
};

/* How cw_close() ends a connection. */
enum cw_close_how {
    CW_CLOSE_GRACEFUL = 0, /* shutdown(SHUT_WR), drain to peer FIN, close */
    CW_CLOSE_ABORT = 1     /* SO_LINGER {1,0} + close: peer gets RST */
};

typedef struct cw_conn cw_conn;
typedef struct cw_listener cw_listener;

/* Socket options for cw_dial() and cw_listen(). Always start from
 * cw_opts_init(); a NULL opts pointer means "all defaults". Fields with
 * value 0 after init mean "kernel default / off". */
struct cw_opts {
    int nodelay;           /* TCP_NODELAY (default off) */
    int keepalive;         /* SO_KEEPALIVE (default off) */
    int keepidle_s;        /* TCP_KEEPIDLE, 0 = kernel default */
    int keepintvl_s;       /* TCP_KEEPINTVL, 0 = kernel default */
    int keepcnt;           /* TCP_KEEPCNT, 0 = kernel default */
    unsigned user_timeout_ms; /* TCP_USER_TIMEOUT, 0 = kernel default */
    int reuseaddr;         /* SO_REUSEADDR: -1 = role default (on for
                              listeners, off for dialers), 0 off, 1 on */
    int reuseport;         /* SO_REUSEPORT, listeners only (default off) */
    const char *bind_host; /* dial: local address to bind, NULL = any */
    uint16_t bind_port;    /* dial: local port to bind, 0 = ephemeral */
    int read_timeout_ms;   /* upper bound for every cw_recv/cw_readline
                              wait, like SO_RCVTIMEO; 0 = none */
    int rcvbuf;            /* SO_RCVBUF bytes, 0 = kernel default */
    int sndbuf;            /* SO_SNDBUF bytes, 0 = kernel default */
    int v6only;            /* IPV6_V6ONLY for "::" listeners (default 0:
                              dual stack) */
};

/* Fill *o with defaults. */
void cw_opts_init(struct cw_opts *o);

/* Current CLOCK_MONOTONIC time in milliseconds. */
int64_t cw_now_ms(void);

/* Static, human-readable text for any result code. Never NULL. */
const char *cw_strerror(int rc);

/* Resolve host:port (host NULL = localhost) and connect, trying every
 * address getaddrinfo returns (IPv6 and IPv4) in order. Each attempt gets
 * an equal share of the time left until the deadline, the last one all of
 * it. On success *out is a new conn owned by the caller. Returns CW_OK,
 * CW_ERESOLVE, CW_ETIMEDOUT, or -errno of the last failed attempt
 * (-ECONNREFUSED, -EADDRNOTAVAIL when a bound local port still has a
 * TIME_WAIT twin towards the same peer, ...). */
int cw_dial(const char *host, uint16_t port, const struct cw_opts *opts,
            int64_t deadline, cw_conn **out);

/* Wrap a connected TCP socket. Ownership of fd passes to the conn in every
 * case (it is closed on failure). opts may be NULL; only options that make
 * sense after connect are applied. */
int cw_conn_adopt(int fd, const struct cw_opts *opts, cw_conn **out);

/* Bind and listen on host:port (host NULL = every address, dual stack;
 * port 0 = ephemeral, see cw_listener_port(); backlog <= 0 = SOMAXCONN). SO_REUSEADDR is on unless
 * opts->reuseaddr == 0: on Linux it only lets a new listener bind while
 * old connections on the port sit in TIME_WAIT; it never lets two live
 * listeners share a port (that is SO_REUSEPORT, which would let any
 * process of the same user steal connections, so it is opt-in). */
int cw_listen(const char *host, uint16_t port, const struct cw_opts *opts,
              int backlog, cw_listener **out);

/* Wait for a connection until the deadline. On success *out is a new conn
 * owned by the caller (accept4 with SOCK_CLOEXEC). Returns CW_OK,
 * CW_ETIMEDOUT, -EMFILE/-ENFILE (descriptor exhaustion: the pending
 * connection stays queued) or another -errno. */
int cw_accept(cw_listener *l, int64_t deadline, cw_conn **out);

/* The local port the listener is bound to, or a negative result code. */
int cw_listener_port(const cw_listener *l);

/* The listening descriptor, for poll/epoll integration. The listener keeps
 * ownership: never close it yourself. */
int cw_listener_fd(const cw_listener *l);

/* Close the listener and set *lp to NULL. Connections already accepted are
 * not affected. Returns CW_OK or CW_EINVAL. */
int cw_listener_close(cw_listener **lp);

/* Read up to len bytes. Returns the number of bytes read (> 0), or exactly
 * one of: CW_EOF (the peer sent FIN; the socket is in CLOSE_WAIT and must
 * be closed), CW_ERESET, CW_ETIMEDOUT (the deadline or the conn's read
 * timeout passed, or the kernel gave up on the peer), or another negative
 * code. Never 0. Terminal results are sticky: every later read returns the
 * same code until the conn is closed. Writes stay allowed after CW_EOF and
 * CW_ETIMEDOUT, so a final reply can still be sent (TCP half-close). */
ssize_t cw_recv(cw_conn *c, void *buf, size_t len, int64_t deadline);

/* Read one line terminated by "\n" into buf (at most size - 1 bytes plus a
 * terminating NUL; a trailing "\r" is removed). Returns the line length
 * (>= 0; a line may contain NUL bytes, so use the length), or a cw_recv()
 * result. A line longer than size - 1 gives CW_ETOOLONG, which is sticky
 * since the framing is lost. Unterminated bytes before the peer's FIN are
 * returned as a last line, then CW_EOF. */
ssize_t cw_readline(cw_conn *c, char *buf, size_t size, int64_t deadline);

/* Send all len bytes or fail. Returns CW_OK, CW_ETIMEDOUT (some bytes may
 * have been sent: the stream is no longer usable for writing, and later
 * sends return the same code), CW_ERESET, -EPIPE or another code. Data the
 * peer sent before it closed or reset stays readable: after a failed send,
 * cw_recv() still returns those bytes first, then the error. */
int cw_send_all(cw_conn *c, const void *buf, size_t len, int64_t deadline);

/* Close the connection, free it and set *cp to NULL, in every case.
 * CW_CLOSE_GRACEFUL: shutdown(SHUT_WR) so everything sent is delivered,
 * then read and discard until the peer's FIN, the deadline, or a drain
 * limit (1 MiB), then close. Returns how it ended: CW_OK (peer FIN seen),
 * CW_ETIMEDOUT (deadline passed first), CW_ERESET (peer reset),
 * CW_ETOOLONG (peer kept sending past the drain limit). In every case but
 * CW_OK the close may send the peer a RST.
 * CW_CLOSE_ABORT: SO_LINGER {1,0} then close. The peer gets RST, and
 * whatever was not yet delivered is lost. Use it only when that is the
 * intent. Returns CW_OK. */
int cw_close(cw_conn **cp, enum cw_close_how how, int64_t deadline);

/* Non-blocking check: 1 if the peer has closed (FIN) or reset the
 * connection, 0 if not, negative code on error. Data the peer sent before
 * its FIN may still be readable. For code that holds idle connections. */
int cw_peer_closed(cw_conn *c);

/* Kernel TCP states (values of TCP_INFO's tcpi_state). */
enum cw_tcp_state {
    CW_TCP_ESTABLISHED = 1, CW_TCP_SYN_SENT, CW_TCP_SYN_RECV,
    CW_TCP_FIN_WAIT1, CW_TCP_FIN_WAIT2, CW_TCP_TIME_WAIT, CW_TCP_CLOSE,
    CW_TCP_CLOSE_WAIT, CW_TCP_LAST_ACK, CW_TCP_LISTEN, CW_TCP_CLOSING,
    CW_TCP_NEW_SYN_RECV
};

/* The kernel's TCP state for this connection (asked with TCP_INFO), or a
 * negative result code. */
int cw_tcp_state(const cw_conn *c);

/* "ESTABLISHED", "CLOSE_WAIT", ... for a state value; "UNKNOWN" otherwise. */
const char *cw_tcp_state_name(int state);

/* The connection's descriptor, for poll/epoll integration. The conn keeps
 * ownership: never close it yourself. */
int cw_conn_fd(const cw_conn *c);

/* Format the peer ("[::1]:8080" / "127.0.0.1:8080") or local address
 * into buf. Returns CW_OK or a negative code. */
int cw_conn_peer(const cw_conn *c, char *buf, size_t size);
int cw_conn_local(const cw_conn *c, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
