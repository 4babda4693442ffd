/* server.c - the reference authentication server on cw_loop: accept,
 * descriptor pressure, the life of a connection, and its end.
 *
 * A connection is ACTIVE (serving requests), CLOSING (its final line is
 * being flushed), LINGERING (SHUT_WR sent, discarding input until the
 * peer's FIN or a deadline) or DEAD (to be closed now). Event handlers do
 * their work, then call settle(), the one place that arms the watcher and
 * the timer for the state, and the only place a connection is freed: no
 * handler ever touches a freed connection.
 *
 * Until it logs in, a session is second-class: it has a login deadline
 * its lines do not extend, at most max_unauth of them exist at once, and
 * they are the first to go when room is needed (newcomers at a cap,
 * descriptor shortage); an authenticated session is only reclaimed when
 * no unauthenticated one is left. Who may try a password is throttle.c's
 * business. */
#define _GNU_SOURCE
#include "../net/internal.h"
#include "auth.h"
#include "protocol.h"
#include "throttle.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ACCEPT_BATCH 64        /* accepts per readiness event: stay fair */
#define ACCEPT_BACKOFF_MS 100  /* retry after EMFILE with nothing to reclaim */
#define RECLAIM_BATCH 8        /* conns closed per descriptor shortage */
#define RECLAIM_MIN_IDLE_MS 1000 /* never reclaim a session this fresh */
/* An unauthenticated session is not evicted for a newcomer before it has
 * had this long, and one full loop iteration, to send its AUTH: else a
 * fast flood would evict the legitimate client it was accepted with. */
#define UNAUTH_GRACE_MS 50
#define READ_ROUNDS 8          /* recv calls per event before yielding */
#define SCRATCH_SIZE (CW_PROTO_MAX_LINE + 2 + 16384)

enum state { ST_ACTIVE, ST_CLOSING, ST_LINGER, ST_DEAD };

enum end {
    END_NONE, END_PEER_EOF, END_RESET, END_IDLE, END_AUTH_FAILED,
    END_THROTTLED, END_QUIT, END_TOOLONG, END_BAD, END_WRITE_TIMEOUT,
    END_SHUTDOWN, END_ERROR, END_LOGIN_TIMEOUT, END_EVICTED
};

/* The protocol's reasons: the server ended the session with a last line.
 * Ends without one (the peer's, a limit's, an eviction) are cw_end words,
 * as close= always is. */
static const char *end_names[] = {
    [END_NONE] = "none",           [END_IDLE] = "idle",
    [END_AUTH_FAILED] = "auth-failed", [END_THROTTLED] = "throttled",
    [END_QUIT] = "quit",           [END_TOOLONG] = "line-too-long",
    [END_BAD] = "bad-request",     [END_SHUTDOWN] = "shutdown",
    [END_LOGIN_TIMEOUT] = "login-timeout",
};

static const char *end_word(enum end e)
{
    switch (e) {
    case END_PEER_EOF: return cw_end_name(CW_END_EOF);
    case END_RESET: return cw_end_name(CW_END_RESET);
    case END_WRITE_TIMEOUT: return cw_end_name(CW_END_TIMEOUT);
    case END_EVICTED: return cw_end_name(CW_END_EVICTED);
    case END_ERROR: return cw_end_name(CW_END_ERROR);
    default: return end_names[e];
    }
}

/* Why a session was evicted (log: end=evicted reason=...). */
enum evict {
    EV_DESCRIPTORS,  /* accept failed for want of a descriptor */
    EV_MAX_CONNS,    /* a newcomer at --max-connections */
    EV_UNAUTH_CAP    /* a newcomer at the unauthenticated cap */
};

static const char *evict_names[] = {
    [EV_DESCRIPTORS] = "descriptors", [EV_MAX_CONNS] = "max-connections",
    [EV_UNAUTH_CAP] = "unauthenticated-cap",
};

/* Kept small: an idle session holds this struct and nothing else. */
struct sconn {
    cw_io io;
    cw_timer timer;
    struct sconn *prev, *next;   /* s->unauth (FIFO), s->active (LRU) or
                                    s->linger (FIFO) */
    const char *reason;          /* detail of end=, for the log, or NULL */
    int64_t start_ms;
    int64_t last_ms;             /* last request after login, or start */
    uint32_t gen;                /* s->accept_gen when accepted */
    char *rbuf;                  /* unprocessed input, only when some */
    char *wbuf;                  /* unsent output, only when some */
    uint32_t rlen, wlen, woff;
    uint8_t state, end, authed;
    uint8_t how;                 /* enum cw_end: how the descriptor closed */
    uint8_t in_linger;           /* on s->linger rather than s->active */
    uint8_t wblocked;            /* write timeout running */
    uint8_t family;
    uint16_t port;               /* host order */
    uint8_t addr[16];            /* IPv4 as ::ffff:a.b.c.d */
};

struct list {
    struct sconn *head, *tail;
};

struct cw_server {
    struct cw_server_opts o;
    cw_loop *loop;
    cw_listener *lis;
    cw_io lio;
    cw_timer accept_timer;
    cw_timer stop_timer;
    int accept_paused;
    int pause_logged;            /* the current pause's reason is logged */
    int64_t pause_log_ms;        /* when a pause was last logged */
    int stopping;
    int max_unauth;
    uint32_t accept_gen;         /* on_accept calls so far */
    int nunauth;                 /* on s->unauth */
    cw__auth *auth;
    cw__throttle *thr;
    struct list unauth, active, linger;
    struct cw_server_stats st;
    char scratch[SCRATCH_SIZE];
};

/* ---- lists ---- */

static void list_push(struct list *l, struct sconn *c)
{
    c->next = NULL;
    c->prev = l->tail;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
}

static void list_remove(struct list *l, struct sconn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
}

static struct list *list_of(cw_server *s, struct sconn *c)
{
    return c->in_linger ? &s->linger : c->authed ? &s->active : &s->unauth;
}

/* ---- logging ---- */

static void format_peer(const struct sconn *c, char *buf, size_t size)
{
    cw__addr_format(c->family, c->family == AF_INET ? c->addr + 12 : c->addr, c->port, buf,
                    size);
}

static void log_end(cw_server *s, const struct sconn *c)
{
    if (!s->o.log)
        return;
    char peer[64];
    format_peer(c, peer, sizeof peer);
    long long ms = (long long)(cw_now_ms() - c->start_ms);
    char detail[80] = "";
    if (c->end == END_EVICTED)
        snprintf(detail, sizeof detail, " reason=%s login=%s", c->reason,
                 c->authed ? "yes" : "no");
    else if (c->reason)
        snprintf(detail, sizeof detail, " reason=%s", c->reason);
    fprintf(s->o.log, "closewise-server: peer=%s duration=%lld.%03llds end=%s%s close=%s\n",
            peer, ms / 1000, ms % 1000, end_word(c->end), detail,
            cw_end_name(c->how));
    fflush(s->o.log);
}

/* ---- closing ---- */

static void resume_accept(cw_server *s);

static size_t conn_bytes(const struct sconn *c)
{
    return sizeof *c + c->rlen + c->wlen;
}

/* The one place a connection is freed. */
static void conn_free(cw_server *s, struct sconn *c)
{
    cw_io_stop(s->loop, &c->io);
    cw_timer_stop(s->loop, &c->timer);
    list_remove(list_of(s, c), c);
    if (c->in_linger)
        s->st.lingering--;
    else if (!c->authed)
        s->nunauth--;
    if (c->how == CW_END_ABORT)
        cw__set_linger0(c->io.fd);
    close(c->io.fd);
    log_end(s, c);
    s->st.conn_bytes -= conn_bytes(c);
    s->st.conns--;
    s->st.ended++;
    free(c->rbuf);
    free(c->wbuf);
    free(c);
    if (s->accept_paused && !s->stopping)
        resume_accept(s);
    if (s->stopping && s->st.conns == 0)
        cw_loop_stop(s->loop);
}

/* Mark for closing; settle() does it. The first reason wins. */
static void conn_die(struct sconn *c, enum end why, enum cw_end how)
{
    if (c->end == END_NONE)
        c->end = why;
    if (c->how == CW_END_NONE)
        c->how = how;
    c->state = ST_DEAD;
}

static void drop_rbuf(cw_server *s, struct sconn *c)
{
    s->st.conn_bytes -= c->rlen;
    free(c->rbuf);
    c->rbuf = NULL;
    c->rlen = 0;
}

/* ---- output ---- */

static void flush(cw_server *s, struct sconn *c)
{
    while (c->woff < c->wlen) {
        ssize_t n = cw__send_nb(c->io.fd, c->wbuf + c->woff, c->wlen - c->woff);
        if (n == -EAGAIN)
            return;
        if (n < 0) {
            conn_die(c, END_RESET, CW_END_RESET);
            return;
        }
        c->woff += (uint32_t)n;
        c->wblocked = 0;   /* progress: the write timeout starts again */
    }
    s->st.conn_bytes -= c->wlen;
    free(c->wbuf);
    c->wbuf = NULL;
    c->wlen = c->woff = 0;
}

/* Send a reply line. The usual case is one send() from the stack; only
 * the part the socket does not take is kept, in a buffer allocated for
 * it, and then reads pause until it is flushed. A last line before a
 * graceful close is sent corked (MSG_MORE): the shutdown() that follows
 * in the same iteration attaches the FIN to it, so line and FIN leave in
 * one segment and the client acknowledges both at once. */
static void send_line(cw_server *s, struct sconn *c, const char *text, size_t len,
                      int last)
{
    if (c->state == ST_DEAD)
        return;
    char line[CW_PROTO_MAX_LINE + 1];
    if (len > CW_PROTO_MAX_LINE)
        len = CW_PROTO_MAX_LINE;   /* cannot happen: requests are shorter */
    memcpy(line, text, len);
    line[len++] = '\n';
    size_t off = 0;
    if (!c->wbuf) {
        ssize_t n = send(c->io.fd, line, len,
                         MSG_DONTWAIT | MSG_NOSIGNAL | (last ? MSG_MORE : 0));
        if (n < 0)
            n = errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno;
        if (n < 0 && n != -EAGAIN) {
            conn_die(c, END_RESET, CW_END_RESET);
            return;
        }
        off = n > 0 ? (size_t)n : 0;
        if (off == len)
            return;
    }
    size_t pending = c->wlen - c->woff;
    size_t total = pending + (len - off);
    char *p = malloc(total);
    if (!p) {
        conn_die(c, END_ERROR, CW_END_ABORT);
        return;
    }
    if (pending)
        memcpy(p, c->wbuf + c->woff, pending);
    memcpy(p + pending, line + off, len - off);
    s->st.conn_bytes += total;
    s->st.conn_bytes -= c->wlen;
    free(c->wbuf);
    c->wbuf = p;
    c->wlen = (uint32_t)total;
    c->woff = 0;
}

static void reply(cw_server *s, struct sconn *c, const char *text, size_t len)
{
    send_line(s, c, text, len, 0);
}

static void reply_str(cw_server *s, struct sconn *c, const char *text)
{
    reply(s, c, text, strlen(text));
}

/* Send a final line and end the connection the configured way. */
static void finish(cw_server *s, struct sconn *c, const char *text, enum end why)
{
    if (c->state != ST_ACTIVE)
        return;
    c->end = why;
    send_line(s, c, text, strlen(text), s->o.close_mode == CW_SERVER_GRACEFUL);
    if (c->state == ST_ACTIVE)
        c->state = ST_CLOSING;
}

/* ---- requests ---- */

/* From second class to first: off the unauthenticated FIFO, onto the
 * tail of the LRU of sessions. */
static void authenticated(cw_server *s, struct sconn *c)
{
    list_remove(&s->unauth, c);
    s->nunauth--;
    c->authed = 1;
    c->last_ms = cw_now_ms();
    list_push(&s->active, c);
}

static void log_table_full(cw_server *s)
{
    if (!s->o.log)
        return;
    fprintf(s->o.log, "closewise-server: throttle table full: failures from "
            "addresses it cannot hold share one budget until the window ends\n");
    fflush(s->o.log);
}

static void handle(cw_server *s, struct sconn *c, const struct cw_req *r)
{
    switch (r->type) {
    case CW_REQ_AUTH: {
        if (c->authed) {
            reply_str(s, c, "ERR already authenticated");
            break;
        }
        int64_t now = cw_now_ms();
        enum cw__thr v = cw__throttle_check(s->thr, c->addr, r->user, r->user_len, now);
        if (v != CW__THR_OK) {
            s->st.throttled++;
            c->reason = cw__throttle_name(v);
            finish(s, c, "ERR too many failures", END_THROTTLED);
            break;
        }
        int ok = cw__auth_check(s->auth, r->user, r->user_len, r->pass, r->pass_len);
        if (ok == 1) {
            authenticated(s, c);
            reply_str(s, c, "OK");
        } else {
            if (cw__throttle_failed(s->thr, c->addr, r->user, r->user_len, now))
                log_table_full(s);
            finish(s, c, "ERR bad credentials", END_AUTH_FAILED);
        }
        break;
    }
    case CW_REQ_ECHO:
        if (c->authed)
            reply(s, c, r->text, r->text_len);
        else
            reply_str(s, c, "ERR not authenticated");
        break;
    case CW_REQ_QUIT:
        finish(s, c, "BYE", END_QUIT);
        break;
    case CW_REQ_SYNTAX:
        reply_str(s, c, "ERR syntax");
        break;
    case CW_REQ_UNKNOWN:
        reply_str(s, c, "ERR unknown command");
        break;
    case CW_REQ_TOOLONG:
        finish(s, c, "ERR line too long", END_TOOLONG);
        break;
    case CW_REQ_BAD:
        finish(s, c, "ERR bad request", END_BAD);
        break;
    case CW_REQ_INCOMPLETE:
        break;
    }
}

/* Serve the complete requests in buf; returns the bytes used. Stops when
 * the connection is closing or a reply is blocked (backpressure). */
static size_t process(cw_server *s, struct sconn *c, const char *buf, size_t len)
{
    size_t off = 0;
    while (c->state == ST_ACTIVE && !c->wbuf) {
        struct cw_req r;
        if (cw__proto_parse(buf + off, len - off, &r) == CW_REQ_INCOMPLETE)
            break;
        handle(s, c, &r);
        if (!r.consumed)
            break;
        off += r.consumed;
        if (!c->authed || c->state != ST_ACTIVE)
            continue;   /* before login, lines buy no time */
        c->last_ms = cw_now_ms();
        /* Move to the tail of the LRU: the least recently active session
         * is the first one reclaimed under descriptor pressure. */
        list_remove(&s->active, c);
        list_push(&s->active, c);
    }
    return off;
}

/* Read and serve. Input that is not a complete request yet is kept in a
 * buffer sized to it; the shared scratch buffer does the rest. */
static void on_readable(cw_server *s, struct sconn *c)
{
    char *buf = s->scratch;
    size_t len = c->rlen;
    if (len)
        memcpy(buf, c->rbuf, len);
    drop_rbuf(s, c);
    /* Every recv is followed by a process(): what is left in rbuf is then
     * an unfinished line, or requests waiting for a blocked reply. Complete
     * requests left behind with nothing more to read would never be served
     * (no readiness event would come for them). */
    for (int round = 0;; round++) {
        size_t used = process(s, c, buf, len);
        memmove(buf, buf + used, len - used);
        len -= used;
        if (c->state != ST_ACTIVE) {
            len = 0;   /* closing: what follows the last request is ignored */
            break;
        }
        if (c->wbuf || len == sizeof s->scratch || round == READ_ROUNDS)
            break;   /* more input stays in the kernel: level-triggered */
        ssize_t n = cw__recv_nb(c->io.fd, buf + len, sizeof s->scratch - len);
        if (n == -EAGAIN)
            break;
        if (n == CW_EOF) {
            conn_die(c, END_PEER_EOF, CW_END_EOF);
            return;
        }
        if (n < 0) {
            conn_die(c, END_RESET, CW_END_RESET);
            return;
        }
        len += (size_t)n;
    }
    if (!len)
        return;
    c->rbuf = malloc(len);
    if (!c->rbuf) {
        conn_die(c, END_ERROR, CW_END_ABORT);
        return;
    }
    memcpy(c->rbuf, buf, len);
    c->rlen = (uint32_t)len;
    s->st.conn_bytes += len;
}

/* Lingering: discard input until the peer's FIN. A peer that keeps
 * sending is bounded by the lingering time, not by a byte count. */
static void on_linger_readable(struct sconn *c)
{
    size_t total = 0;
    int rc = cw__drain_nb(c->io.fd, &total);
    if (rc == -EAGAIN || rc == CW_ETOOLONG)
        return;
    c->how = rc == CW_EOF ? CW_END_GRACEFUL : CW_END_RESET;
    c->state = ST_DEAD;
}

/* ---- state machine ---- */

static void on_timer(cw_loop *loop, cw_timer *t);
static void on_io(cw_loop *loop, cw_io *io, unsigned events);

static void start_linger(cw_server *s, struct sconn *c)
{
    if (shutdown(c->io.fd, SHUT_WR) < 0 && errno != ENOTCONN) {
        conn_die(c, END_ERROR, CW_END_ABORT);
        return;
    }
    list_remove(list_of(s, c), c);
    if (!c->authed)
        s->nunauth--;
    c->state = ST_LINGER;
    c->in_linger = 1;
    list_push(&s->linger, c);
    s->st.lingering++;
    c->last_ms = cw_now_ms();   /* start of lingering */
    drop_rbuf(s, c);
}

static int64_t linger_deadline(cw_server *s, struct sconn *c)
{
    int64_t cap = c->last_ms + s->o.lingering_time_ms;
    int64_t next = cw_now_ms() + s->o.lingering_timeout_ms;
    return next < cap ? next : cap;
}

/* Arm the watcher and timer for the state, or free a dead connection. */
static void settle(cw_server *s, struct sconn *c)
{
    if (c->state == ST_CLOSING) {
        if (s->o.close_mode == CW_SERVER_LINGER0)
            conn_die(c, c->end, CW_END_ABORT);
        else if (s->o.close_mode == CW_SERVER_PLAIN)
            conn_die(c, c->end, CW_END_PLAIN);
        else if (!c->wbuf)
            start_linger(s, c);
    }
    if (c->state == ST_DEAD) {
        conn_free(s, c);
        return;
    }
    unsigned want;
    int64_t deadline;
    if (c->state == ST_LINGER) {
        want = CW_IO_READ;
        deadline = linger_deadline(s, c);
    } else if (c->wbuf) {
        want = CW_IO_WRITE;   /* reads paused; the peer's FIN still seen */
        if (!c->wblocked) {
            c->wblocked = 1;
            deadline = cw_now_ms() + s->o.write_timeout_ms;
        } else {
            deadline = c->timer.deadline;
        }
    } else {
        want = CW_IO_READ;
        c->wblocked = 0;
        deadline = c->last_ms + s->o.idle_timeout_ms;
        if (!c->authed && c->start_ms + s->o.login_timeout_ms < deadline)
            deadline = c->start_ms + s->o.login_timeout_ms;
    }
    if (cw_io_set(s->loop, &c->io, want) < 0 ||
        cw_timer_start(s->loop, &c->timer, deadline, on_timer) < 0) {
        conn_die(c, END_ERROR, CW_END_ABORT);
        conn_free(s, c);
    }
}

static void on_io(cw_loop *loop, cw_io *io, unsigned events)
{
    struct sconn *c = io->data;
    cw_server *s = c->timer.data;
    if (events & CW_EV_ERROR) {
        conn_die(c, END_RESET, CW_END_RESET);   /* lingering or not: a reset */
    } else if (c->state == ST_LINGER) {
        on_linger_readable(c);
    } else {
        if ((events & CW_EV_WRITE) && c->wbuf)
            flush(s, c);
        /* A peer FIN shows up as readable EOF once reads resume. */
        if (c->state == ST_ACTIVE && !c->wbuf)
            on_readable(s, c);
    }
    settle(s, c);
}

static void on_timer(cw_loop *loop, cw_timer *t)
{
    struct sconn *c = (struct sconn *)((char *)t - offsetof(struct sconn, timer));
    cw_server *s = t->data;
    if (c->state == ST_LINGER) {
        /* Discard what arrived last, so the close is a FIN, not a RST,
         * unless the peer is still sending. */
        size_t total = 0;
        cw__drain_nb(c->io.fd, &total);
        c->how = CW_END_TIMEOUT;
        c->state = ST_DEAD;
    } else if (c->wbuf) {
        /* The peer stopped reading: nothing we send will arrive, so the
         * reset is the honest end. */
        if (c->end == END_NONE)
            c->reason = "write";
        conn_die(c, END_WRITE_TIMEOUT, CW_END_ABORT);
    } else if (c->state == ST_ACTIVE && !c->authed &&
               cw_now_ms() >= c->start_ms + s->o.login_timeout_ms) {
        s->st.login_timeouts++;
        finish(s, c, "ERR login timeout", END_LOGIN_TIMEOUT);
    } else if (c->state == ST_ACTIVE) {
        finish(s, c, "ERR idle timeout", END_IDLE);
    }
    settle(s, c);
}

/* ---- accepting, and descriptor pressure ---- */

static void on_accept(cw_loop *loop, cw_io *io, unsigned events);

static void on_accept_timer(cw_loop *loop, cw_timer *t)
{
    resume_accept(t->data);
}

/* Stop watching the listener: pending connections wait in the kernel's
 * backlog instead of waking us up for an accept that cannot succeed.
 * A timer retries at retry_at (a descriptor may be freed elsewhere, an
 * unauthenticated session become evictable); with CW_NEVER the next
 * closed connection resumes. why, if not NULL, is logged once per pause. */
static void pause_accept(cw_server *s, int64_t retry_at, const char *why)
{
    if (!s->accept_paused) {
        cw_io_stop(s->loop, &s->lio);
        s->accept_paused = 1;
        s->pause_logged = 0;
        s->st.accept_paused++;
    }
    /* At most one line a second: a flood pauses often (the count is in
     * the stats line at exit). */
    int64_t now = cw_now_ms();
    if (s->o.log && why && !s->pause_logged &&
        (s->pause_log_ms == 0 || now - s->pause_log_ms >= 1000)) {
        fprintf(s->o.log, "closewise-server: accept paused: %s\n", why);
        fflush(s->o.log);
        s->pause_logged = 1;
        s->pause_log_ms = now;
    }
    if (retry_at != CW_NEVER && (!cw_timer_active(&s->accept_timer) ||
                                 s->accept_timer.deadline > retry_at))
        cw_timer_start(s->loop, &s->accept_timer, retry_at, on_accept_timer);
}

/* At --max-connections with no one to give way: wait for an end. */
static void pause_full(cw_server *s)
{
    char why[64];
    snprintf(why, sizeof why, "%d connections (max)", s->st.conns);
    pause_accept(s, CW_NEVER, why);
}

static void resume_accept(cw_server *s)
{
    if (!s->accept_paused || s->stopping)
        return;
    if (s->st.conns >= s->o.max_conns && !s->linger.head && !s->unauth.head) {
        pause_full(s);   /* still paused; now for this reason */
        return;
    }
    cw_timer_stop(s->loop, &s->accept_timer);
    s->accept_paused = 0;
    int rc = cw_io_start(s->loop, &s->lio, CW_IO_READ, on_accept);
    if (rc < 0)
        pause_accept(s, cw_now_ms() + ACCEPT_BACKOFF_MS, strerror(-rc));
}

/* End a session to make room: it gets "ERR server busy" and a plain close
 * (no lingering: the descriptor is needed now). Its pending input is read
 * first, so the close sends FIN, not RST. */
static void evict(cw_server *s, struct sconn *c, enum evict why)
{
    size_t total = 0;
    cw__drain_nb(c->io.fd, &total);
    /* The end is decided before the reply: if the peer is already gone
     * the send fails and records a reset, which must then be the close,
     * not the reason (the log and the eviction counters agree). */
    c->end = END_EVICTED;
    c->reason = evict_names[why];
    reply_str(s, c, "ERR server busy");
    conn_die(c, END_EVICTED, CW_END_PLAIN);
    if (why == EV_DESCRIPTORS)
        s->st.evicted_descriptors++;
    else if (why == EV_MAX_CONNS)
        s->st.evicted_max_conns++;
    else
        s->st.evicted_unauth_cap++;
    if (c->authed)
        s->st.evicted_authed++;
    else
        s->st.evicted_unauth++;
    conn_free(s, c);
}

/* The oldest unauthenticated session if it has had its chance to log in:
 * one full loop iteration since it was accepted (so input that came with
 * it has been read) and, with grace, UNAUTH_GRACE_MS. Else NULL, and
 * *when says when it will have (CW_NEVER if there is none). */
static struct sconn *unauth_victim(cw_server *s, int grace, int64_t *when)
{
    struct sconn *c = s->unauth.head;
    int64_t now = cw_now_ms();
    *when = CW_NEVER;
    if (!c)
        return NULL;
    int64_t ripe = grace ? c->start_ms + UNAUTH_GRACE_MS : now;
    if (s->accept_gen - c->gen >= 2 && ripe <= now)
        return c;
    /* A generation passes with the next accept event: retry soon. */
    *when = ripe > now ? ripe : now + 1;
    return NULL;
}

/* Close up to max connections that cost the least to lose: lingering ones
 * first (they have said their last word), then unauthenticated ones,
 * oldest first, and only when none is left, sessions idle for a while,
 * least recently active first. Returns how many were closed; *when as
 * for unauth_victim when unauthenticated sessions were too fresh. */
static int reclaim(cw_server *s, int max, int64_t *when)
{
    int n = 0;
    *when = CW_NEVER;
    while (n < max && s->linger.head) {
        struct sconn *c = s->linger.head;
        c->how = CW_END_TIMEOUT;
        c->state = ST_DEAD;
        s->st.reclaimed++;
        conn_free(s, c);
        n++;
    }
    struct sconn *v;
    while (n < max && (v = unauth_victim(s, 0, when))) {
        evict(s, v, EV_DESCRIPTORS);
        s->st.reclaimed++;
        n++;
    }
    if (s->unauth.head)
        return n;   /* never an authenticated session while these remain */
    int64_t old = cw_now_ms() - RECLAIM_MIN_IDLE_MS;
    while (n < max && s->active.head) {
        struct sconn *c = s->active.head;
        if (c->state != ST_ACTIVE || c->wbuf || c->rbuf || c->last_ms > old)
            break;
        evict(s, c, EV_DESCRIPTORS);
        s->st.reclaimed++;
        n++;
    }
    return n;
}

/* Before an accept: at --max-connections a lingering connection or else
 * the oldest unauthenticated session gives way; at the unauthenticated
 * cap, the oldest unauthenticated session does. Returns 0, with accepting
 * paused, when no one can give way yet. */
static int make_room(cw_server *s)
{
    int64_t when = CW_NEVER;
    struct sconn *v;
    if (s->st.conns >= s->o.max_conns) {
        if (s->linger.head) {
            reclaim(s, 1, &when);
        } else if ((v = unauth_victim(s, 1, &when))) {
            evict(s, v, EV_MAX_CONNS);
        } else if (s->unauth.head) {
            pause_accept(s, when, NULL);   /* routine under a flood: quiet */
            return 0;
        } else {
            pause_full(s);
            return 0;
        }
    }
    if (s->nunauth >= s->max_unauth) {
        if (!(v = unauth_victim(s, 1, &when))) {
            pause_accept(s, when, NULL);   /* routine under a flood: quiet */
            return 0;
        }
        evict(s, v, EV_UNAUTH_CAP);
    }
    return 1;
}

static void set_sndbuf(cw_server *s, int fd)
{
    if (s->o.sndbuf <= 0)
        return;
    /* Best effort: a socket that refuses keeps the kernel's autotuned
     * buffer, which is what it would have had without the option. */
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &s->o.sndbuf, sizeof s->o.sndbuf);
}

static int conn_new(cw_server *s, int fd, const struct sockaddr_storage *ss)
{
    struct sconn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return -ENOMEM;
    }
    set_sndbuf(s, fd);
    c->io.fd = fd;
    c->io.data = c;
    c->timer.data = s;
    c->gen = s->accept_gen;
    c->start_ms = c->last_ms = cw_now_ms();
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        memcpy(c->addr, &a->sin6_addr, 16);
        c->port = ntohs(a->sin6_port);
        /* IPv4 clients of a dual-stack listener are IPv4 clients. */
        c->family = IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) ? AF_INET : AF_INET6;
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        c->addr[10] = c->addr[11] = 0xFF;
        memcpy(c->addr + 12, &a->sin_addr, 4);
        c->port = ntohs(a->sin_port);
        c->family = AF_INET;
    }
    int64_t first = c->start_ms + (s->o.login_timeout_ms < s->o.idle_timeout_ms
                                   ? s->o.login_timeout_ms : s->o.idle_timeout_ms);
    int rc = cw_io_start(s->loop, &c->io, CW_IO_READ, on_io);
    if (rc == CW_OK)
        rc = cw_timer_start(s->loop, &c->timer, first, on_timer);
    if (rc < 0) {
        cw_io_stop(s->loop, &c->io);
        close(fd);
        free(c);
        return rc;
    }
    list_push(&s->unauth, c);
    s->nunauth++;
    s->st.conns++;
    s->st.accepted++;
    s->st.conn_bytes += sizeof *c;
    return CW_OK;
}

static void on_accept(cw_loop *loop, cw_io *io, unsigned events)
{
    cw_server *s = io->data;
    s->accept_gen++;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        if (!make_room(s))
            return;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(io->fd, (struct sockaddr *)&ss, &sl,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_new(s, fd, &ss);
            continue;
        }
        int err = errno;
        if (err == EINTR || err == ECONNABORTED)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK)
            return;
        int64_t when = CW_NEVER;
        if ((err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) &&
            reclaim(s, RECLAIM_BATCH, &when))
            continue;
        /* Out of descriptors with nothing to give back, or an unexpected
         * error: the listener would stay readable, so watching it now
         * would spin. */
        int64_t backoff = cw_now_ms() + ACCEPT_BACKOFF_MS;
        pause_accept(s, when < backoff ? when : backoff, strerror(err));
        return;
    }
}

/* ---- the server object ---- */

void cw_server_opts_init(struct cw_server_opts *o)
{
    memset(o, 0, sizeof *o);
    o->idle_timeout_ms = 30000;
    o->lingering_time_ms = 30000;
    o->lingering_timeout_ms = 5000;
    o->write_timeout_ms = 10000;
    o->max_conns = 1024;
    o->close_mode = CW_SERVER_GRACEFUL;
    o->auth_max_failures = 5;
    o->auth_window_ms = 60000;
    o->handle_signals = 1;
    o->login_timeout_ms = 10000;
    o->sndbuf = 65536;
    o->auth_v6_prefix = 64;
    o->auth_v6_net_prefix = 48;
}

static int check_opts(const struct cw_server_opts *o)
{
    if (o->idle_timeout_ms <= 0 || o->lingering_time_ms < 0 ||
        o->lingering_timeout_ms < 0 || o->write_timeout_ms <= 0 ||
        o->max_conns <= 0 || o->auth_max_failures < 0 ||
        o->auth_window_ms <= 0 || o->backlog < 0 ||
        (unsigned)o->close_mode > CW_SERVER_PLAIN || o->login_timeout_ms <= 0 ||
        o->max_unauth < 0 || o->sndbuf < 0 || o->auth_net_max_failures < 0 ||
        o->auth_account_max_failures < 0)
        return CW_EINVAL;
    /* 0 for the prefixes: the defaults, so zeroed options stay valid */
    int a6 = o->auth_v6_prefix ? o->auth_v6_prefix : 64;
    int n6 = o->auth_v6_net_prefix ? o->auth_v6_net_prefix : 48;
    if (a6 < 1 || a6 > 128 || n6 < 1 || n6 > a6)
        return CW_EINVAL;
    return CW_OK;
}

static int new_throttle(cw_server *s)
{
    struct cw__throttle_opts t;
    cw__throttle_opts_init(&t, s->o.auth_max_failures, s->o.auth_window_ms);
    if (s->o.auth_net_max_failures)
        t.net_max = s->o.auth_net_max_failures;
    if (s->o.auth_account_max_failures)
        t.account_max = s->o.auth_account_max_failures;
    if (s->o.auth_v6_prefix)
        t.v6_addr_prefix = s->o.auth_v6_prefix;
    if (s->o.auth_v6_net_prefix)
        t.v6_net_prefix = s->o.auth_v6_net_prefix;
    return cw__throttle_new(&t, &s->thr);
}

int cw_server_new(const struct cw_server_opts *opts, cw_server **out)
{
    if (!out)
        return CW_EINVAL;
    *out = NULL;
    cw_server *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    if (opts)
        s->o = *opts;
    else
        cw_server_opts_init(&s->o);
    int rc = check_opts(&s->o);
    if (rc == CW_OK)
        rc = cw_loop_new(&s->loop);
    if (rc == CW_OK && s->o.handle_signals)
        rc = cw_loop_signals(s->loop, NULL, NULL);
    if (rc == CW_OK)
        rc = cw__auth_new(&s->auth);
    if (rc == CW_OK)
        rc = new_throttle(s);
    s->max_unauth = s->o.max_unauth ? s->o.max_unauth
                                    : (s->o.max_conns + 1) / 2;
    if (rc == CW_OK)
        rc = cw_listen(s->o.host ? s->o.host : "127.0.0.1", s->o.port, NULL,
                       s->o.backlog, &s->lis);
    if (rc == CW_OK) {
        s->lio.fd = cw_listener_fd(s->lis);
        s->lio.data = s;
        s->accept_timer.data = s;
        rc = cw_io_start(s->loop, &s->lio, CW_IO_READ, on_accept);
    }
    if (rc < 0) {
        cw_server_free(&s);
        return rc;
    }
    *out = s;
    return CW_OK;
}

int cw_server_add_user(cw_server *s, const char *user, const char *password)
{
    if (!s || !user || !password)
        return CW_EINVAL;
    char hash[CW_SERVER_MAX_LINE];
    int rc = cw_passwd_hash(password, NULL, hash, sizeof hash);
    if (rc == CW_OK)
        rc = cw__auth_add_hash(s->auth, user, hash);
    return rc;
}

int cw_server_add_hash(cw_server *s, const char *user, const char *hash)
{
    if (!s)
        return CW_EINVAL;
    return cw__auth_add_hash(s->auth, user, hash);
}

int cw_server_load_credentials(cw_server *s, const char *path, int *bad_line)
{
    int dummy;
    if (!bad_line)
        bad_line = &dummy;
    *bad_line = 0;
    if (!s || !path)
        return CW_EINVAL;
    return cw__auth_load(s->auth, path, bad_line);
}

int cw_server_port(const cw_server *s)
{
    return s ? cw_listener_port(s->lis) : CW_EINVAL;
}

int cw_server_address(const cw_server *s, char *buf, size_t size)
{
    if (!s || !buf || size == 0)
        return CW_EINVAL;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(cw_listener_fd(s->lis), (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    return cw__format_addr((struct sockaddr *)&ss, len, buf, size);
}

static void on_stop_timer(cw_loop *loop, cw_timer *t)
{
    cw_loop_stop(loop);
}

/* Phase two of a stop: every session gets a last line and a graceful
 * close, bounded by the lingering time. */
static void shut_down_sessions(cw_server *s)
{
    s->stopping = 1;
    cw_io_stop(s->loop, &s->lio);
    cw_timer_stop(s->loop, &s->accept_timer);
    struct list *lists[] = {&s->unauth, &s->active};
    for (int i = 0; i < 2; i++) {
        struct sconn *c = lists[i]->head;
        while (c) {
            struct sconn *next = c->next;
            if (c->state == ST_ACTIVE) {
                finish(s, c, "ERR server shutting down", END_SHUTDOWN);
                settle(s, c);   /* may free c, or move it to s->linger */
            }
            c = next;
        }
    }
}

int cw_server_run(cw_server *s)
{
    if (!s || s->stopping)
        return CW_EINVAL;
    int rc = cw_loop_run(s->loop);
    if (rc < 0)
        return rc;
    shut_down_sessions(s);
    if (s->st.conns == 0)
        return CW_OK;
    s->stop_timer.data = s;
    cw_timer_start(s->loop, &s->stop_timer,
                   cw_now_ms() + s->o.lingering_time_ms, on_stop_timer);
    rc = cw_loop_run(s->loop);   /* ends when the last conn is freed */
    cw_timer_stop(s->loop, &s->stop_timer);
    return rc;
}

int cw_server_stop(cw_server *s)
{
    return s ? cw_loop_stop(s->loop) : CW_EINVAL;
}

int cw_server_stats(const cw_server *s, struct cw_server_stats *st)
{
    if (!s || !st)
        return CW_EINVAL;
    *st = s->st;
    st->unauthenticated = s->nunauth;
    st->throttle_overflow = cw__throttle_overflowed(s->thr);
    return CW_OK;
}

static void free_all(cw_server *s, struct list *l)
{
    while (l->head) {
        struct sconn *c = l->head;
        if (c->end == END_NONE)
            c->end = END_SHUTDOWN;
        /* Whatever could not finish in time ends abortively, on purpose. */
        c->how = c->how == CW_END_NONE ? CW_END_ABORT : c->how;
        c->state = ST_DEAD;
        conn_free(s, c);
    }
}

int cw_server_free(cw_server **sp)
{
    if (!sp || !*sp)
        return CW_EINVAL;
    cw_server *s = *sp;
    *sp = NULL;
    s->stopping = 1;
    if (s->loop) {
        free_all(s, &s->unauth);
        free_all(s, &s->active);
        free_all(s, &s->linger);
        cw_io_stop(s->loop, &s->lio);
        cw_loop_free(&s->loop);
    }
    if (s->lis)
        cw_listener_close(&s->lis);
    cw__auth_free(s->auth);
    cw__throttle_free(s->thr);
    free(s);
    return CW_OK;
}
