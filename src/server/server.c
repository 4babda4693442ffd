/* server.c - the reference authentication server: the protocol, logins,
 * the caps on sessions, and what the log and the stats say. The life of a
 * connection - reading, writing with backpressure and a write timeout,
 * the lingering close that delivers the last line, descriptor pressure -
 * is cw_stream's and cw_acceptor's (src/net/stream.c, acceptor.c); a
 * session's own state lives in its stream's user area (struct sess).
 *
 * Until it logs in, a session is second-class: it has a login deadline
 * its lines do not extend, at most max_unauth of them exist at once, and
 * they are the first to go when room is needed (newcomers at a cap,
 * descriptor shortage); an authenticated session is only reclaimed when
 * no unauthenticated one is left. Who may try a password is throttle.c's
 * business. */
#define _GNU_SOURCE
#include "../net/stream_impl.h"
#include "auth.h"
#include "authpool.h"
#include "protocol.h"
#include "throttle.h"

#include <arpa/inet.h>
#include <crypt.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>

#define RECLAIM_MIN_IDLE_MS 1000 /* never reclaim a session this fresh */
/* An unauthenticated session is not evicted for a newcomer before it has
 * had this long, and one full loop iteration, to send its AUTH: else a
 * fast flood would evict the legitimate client it was accepted with. */
#define UNAUTH_GRACE_MS 50
#define SCRATCH_SIZE (CW_PROTO_MAX_LINE + 2 + 16384)

enum end {
    END_NONE, END_PEER_EOF, END_RESET, END_IDLE, END_AUTH_FAILED,
    END_THROTTLED, END_QUIT, END_TOOLONG, END_BAD, END_WRITE_TIMEOUT,
    END_SHUTDOWN, END_ERROR, END_LOGIN_TIMEOUT, END_EVICTED, END_BUSY
};

/* The protocol's reasons: the server ended the session with a last line.
 * Ends without one (the peer's, a limit's, an eviction) are cw_end words,
 * as close= always is. */
static const char *end_names[] = {
    [END_NONE] = "none",           [END_IDLE] = "idle",
    [END_AUTH_FAILED] = "auth-failed", [END_THROTTLED] = "throttled",
    [END_QUIT] = "quit",           [END_TOOLONG] = "line-too-long",
    [END_BAD] = "bad-request",     [END_SHUTDOWN] = "shutdown",
    [END_LOGIN_TIMEOUT] = "login-timeout", [END_BUSY] = "auth-busy",
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

/* The detail of end= (reason=...), one byte: */
enum {
    R_NONE = 0,
    R_WRITE = 1,                 /* the write timeout */
    R_EVICT = 2,                 /* + enum evict */
    R_THR = 8                    /* + enum cw__thr: the throttle's verdict */
};

/* A session: its stream's user area. With the stream (128 bytes) it must
 * fit a 176-byte malloc chunk: that chunk is all an idle session costs
 * (its timeout is a FIFO queue entry inside the stream, tqueue.c, not a
 * timer-heap slot), and docs/BENCHMARKS.md holds it to <= 200 bytes.
 * Hence the bit-fields, a one-byte reason and a 32-bit start time
 * (cw_now_ms() modulo 2^32: differences stay right for sessions shorter
 * than 49 days). */
struct sess {
    char *rbuf;                  /* unprocessed input, only when some */
    uint32_t start;              /* cw_now_ms() at accept, low 32 bits */
    uint32_t useq;               /* place in s->unauth while in it */
    uint8_t addr[16];            /* IPv4 as ::ffff:a.b.c.d */
    uint16_t rlen;
    uint16_t port;               /* host order */
    uint8_t end : 4;             /* enum end */
    uint8_t how : 4;             /* enum cw_end decided here (the peer's
                                    end, an eviction), else the stream's */
    uint8_t reason;              /* R_* */
    uint8_t authed : 1, in_unauth : 1, closing : 1, v6 : 1, checking : 1,
            waiting : 1,         /* its AUTH waits for the throttle */
            waited : 1;          /* ... did once (counted once) */
};
_Static_assert(CW__STREAM_SIZE + sizeof(struct sess) <= 168,
               "an idle session outgrew its 176-byte malloc chunk");

static const char *reason_name(const struct sess *c)
{
    if (c->reason == R_WRITE)
        return "write";
    if (c->reason >= R_THR)
        return cw__throttle_name((enum cw__thr)(c->reason - R_THR));
    if (c->reason >= R_EVICT)
        return evict_names[c->reason - R_EVICT];
    return NULL;
}

/* The user area and the owner's pointer, read in place: every stream
 * here is the acceptor's, with a session (stream_impl.h); the public
 * accessors were calls, 5 per churn connection. */
static struct sess *sess_of(const cw_stream *st)
{
    return (struct sess *)((char *)st + CW__STREAM_SIZE);
}

static cw_server *server_of(const cw_stream *st)
{
    return st->data;
}

/* Unauthenticated sessions, oldest first: a queue of stream pointers
 * with holes (a session that logs in or ends leaves a NULL behind; the
 * head skips them), so that no session carries list links: an idle
 * logged-in session pays nothing for it. gen is the loop iteration of
 * the accept. */
struct fifo {
    struct fent {
        cw_stream *st;
        uint32_t gen;
    } *e;
    uint32_t base;               /* sequence number of e[0] */
    uint32_t off, n, cap;        /* e[off..n) may hold entries */
};

/* One per loop. With --workers N the first (the handle the caller holds)
 * owns what the loops share - credentials, check pool, throttle table -
 * and the others in shards[]; each loop has its own listener on the
 * same port (SO_REUSEPORT: the kernel spreads connections), acceptor
 * and counters, and runs in a thread of its own. --max-connections
 * counts every loop's sessions (the first loop's atomic counter), but a
 * loop only evicts its own: at the cap with no victim of its own it
 * holds accepting and retries soon (another loop's session may end
 * meanwhile). The unauthenticated cap is shared out among the loops
 * (each evicts its own oldest: a newcomer must not wait on a session
 * another loop would have to evict). */
/* ---- sessions under a password check ----
 * Their jobs, and their holds on the throttle's budget, live in this side
 * table, not in struct sess: only sessions being checked (bounded by the
 * pool's queue) pay for it, and an idle session keeps its 176-byte
 * chunk. Open addressing, linear probing, backward-shift deletion (no
 * tombstones). Loop thread only. */
struct jobmap {
    struct jslot {
        const cw_stream *st;
        cw__authjob *job;
        struct cw__thr_hold hold;
    } *slot;
    uint32_t cap, n;             /* cap: 0 or a power of two */
};

static uint32_t jm_home(const struct jobmap *m, const cw_stream *st)
{
    uint64_t x = (uint64_t)(uintptr_t)st * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(x >> 32) & (m->cap - 1);
}

static int jm_put(struct jobmap *m, const cw_stream *st, cw__authjob *job,
                  const struct cw__thr_hold *hold)
{
    if ((m->n + 1) * 2 > m->cap) {
        uint32_t cap = m->cap ? m->cap * 2 : 64;
        struct jobmap g = {calloc(cap, sizeof *g.slot), cap, 0};
        if (!g.slot)
            return -ENOMEM;
        for (uint32_t i = 0; i < m->cap; i++)
            if (m->slot[i].st)
                jm_put(&g, m->slot[i].st, m->slot[i].job, &m->slot[i].hold);
        free(m->slot);
        *m = g;
    }
    uint32_t i = jm_home(m, st);
    while (m->slot[i].st)
        i = (i + 1) & (m->cap - 1);
    m->slot[i] = (struct jslot){st, job, *hold};
    m->n++;
    return CW_OK;
}

/* Remove st's entry; returns its job, NULL if it had none, and its hold
 * in *hold (cleared if none). */
static cw__authjob *jm_take(struct jobmap *m, const cw_stream *st,
                            struct cw__thr_hold *hold)
{
    memset(hold, 0, sizeof *hold);
    if (!m->cap)
        return NULL;
    uint32_t i = jm_home(m, st);
    while (m->slot[i].st != st) {
        if (!m->slot[i].st)
            return NULL;
        i = (i + 1) & (m->cap - 1);
    }
    cw__authjob *job = m->slot[i].job;
    *hold = m->slot[i].hold;
    m->n--;
    for (uint32_t j = i;;) {
        m->slot[i].st = NULL;
        uint32_t h;
        do {   /* the next entry that may move into the hole at i */
            j = (j + 1) & (m->cap - 1);
            if (!m->slot[j].st)
                return job;
            h = jm_home(m, m->slot[j].st);
        } while (i <= j ? (h > i && h <= j) : (h > i || h <= j));
        m->slot[i] = m->slot[j];
        i = j;
    }
}

struct cw_server {
    struct cw_server_opts o;
    cw_server *primary;          /* NULL in the first loop's */
    cw_server **shards;          /* the first loop's: the other loops */
    int nshards;
    pthread_t thread;
    int run_rc;
    int nloops;
    int id;                      /* 0 for the first loop: log's loop= */
    atomic_int open_all;         /* the first loop's: sessions of every loop */
    cw_loop *loop;
    cw_listener *lis;
    cw_acceptor *acc;
    cw_timer accept_timer;       /* retries a pause of ours */
    cw_timer stop_timer;
    cw_timer wait_timer;         /* retries the logins that wait */
    int nwaiting;                /* sessions with c->waiting */
    uint64_t wait_ends;          /* cw__throttle_ends() at the last retry */
    int accept_paused;           /* paused by us (caps), not for descriptors */
    int pause_logged;            /* the current pause's reason is logged */
    int64_t pause_log_ms;        /* when a pause was last logged */
    int stopping;
    int no_pick;                 /* reclaiming lingering closes only */
    int max_unauth;
    int live;                    /* sessions whose on_closed is to come */
    int nunauth;                 /* live entries in s->unauth */
    uint64_t cap_evictions;      /* evictions at a cap, not for descriptors */
    size_t rbuf_bytes;
    struct fifo unauth;
    cw__auth *auth;
    cw__authpool *pool;          /* NULL: checks run on the loop */
    cw__authport *port;
    struct crypt_data *cd;       /* this loop's, for checks run on it */
    struct jobmap jobs;          /* sessions under a check -> their job */
    cw__throttle *thr;
    struct cw_server_stats st;
    char scratch[SCRATCH_SIZE];
};

/* The loop's time (one clock read per loop pass, src/net/loop.c). */
static int64_t now_ms(const cw_server *s)
{
    return cw__loop_now(s->loop);
}

/* Milliseconds since the session was accepted. */
static uint32_t age_ms(const cw_server *s, const struct sess *c)
{
    return (uint32_t)now_ms(s) - c->start;
}

/* ---- the unauthenticated FIFO ---- */

static struct fent *fifo_head(struct fifo *f);

static int fifo_push(struct fifo *f, cw_stream *st, uint32_t gen, uint32_t *seq)
{
    /* Skip the holes at the front first: nothing else may have (the head
     * is looked at only at a cap), and without this the array would grow
     * by an entry per accepted connection (the soak measured it). */
    if (f->n == f->cap)
        fifo_head(f);
    if (f->n == f->cap && f->off) {   /* compact: sequence numbers stay */
        memmove(f->e, f->e + f->off, (f->n - f->off) * sizeof *f->e);
        f->base += f->off;
        f->n -= f->off;
        f->off = 0;
    }
    if (f->n == f->cap) {
        uint32_t cap = f->cap ? f->cap * 2 : 64;
        struct fent *e = realloc(f->e, cap * sizeof *e);
        if (!e)
            return -ENOMEM;
        f->e = e;
        f->cap = cap;
    }
    f->e[f->n] = (struct fent){st, gen};
    *seq = f->base + f->n++;
    return CW_OK;
}

static struct fent *fifo_head(struct fifo *f)
{
    while (f->off < f->n && !f->e[f->off].st)
        f->off++;
    if (f->off == f->n) {   /* empty: start over at the front */
        f->base += f->n;
        f->off = f->n = 0;
        return NULL;
    }
    return &f->e[f->off];
}

static cw_server *first_loop(cw_server *s)
{
    return s->primary ? s->primary : s;
}

/* Sessions open in every loop: one loop is the count's only writer, so
 * a plain store, not a locked add (two per connection). */
static void open_add(cw_server *s, int d)
{
    atomic_int *n = &first_loop(s)->open_all;
    if (s->nloops > 1)
        atomic_fetch_add(n, d);
    else
        atomic_store_explicit(n, atomic_load_explicit(n, memory_order_relaxed) + d,
                              memory_order_relaxed);
}

static void unauth_drop(cw_server *s, struct sess *c)
{
    if (!c->in_unauth)
        return;
    struct fifo *f = &s->unauth;
    uint32_t i = c->useq - f->base;
    f->e[i].st = NULL;
    c->in_unauth = 0;
    s->nunauth--;
    if (i == f->off)
        fifo_head(f);   /* logins come mostly in order: keep it short */
}

/* ---- logging ---- */

static void format_peer(const struct sess *c, char *buf, size_t size)
{
    int family = c->v6 ? AF_INET6 : AF_INET;
    cw__addr_format(family, c->v6 ? c->addr : c->addr + 12, c->port, buf, size);
}

/* Called only with a log (CW__COLD: its formatting stays out of
 * on_closed's code lines, where a quiet server's sessions end). */
CW__COLD static void log_end(cw_server *s, const struct sess *c, enum cw_end how)
{
    char peer[64];
    format_peer(c, peer, sizeof peer);
    long long ms = age_ms(s, c);
    char detail[80] = "";
    if (c->end == END_EVICTED)
        snprintf(detail, sizeof detail, " reason=%s login=%s", reason_name(c),
                 c->authed ? "yes" : "no");
    else if (c->reason)
        snprintf(detail, sizeof detail, " reason=%s", reason_name(c));
    /* Which loop served it, with more than one: per-loop evidence
     * (tests, an operator asking whether SO_REUSEPORT spreads the load). */
    char loop[16] = "";
    if (s->nloops > 1)
        snprintf(loop, sizeof loop, " loop=%d", s->id);
    fprintf(s->o.log, "closewise-server: peer=%s duration=%lld.%03llds end=%s%s close=%s%s\n",
            peer, ms / 1000, ms % 1000, end_word((enum end)c->end), detail,
            cw_end_name(how), loop);
    fflush(s->o.log);
}

/* ---- output ---- */

/* The session's reads are paused while a reply waits (high_water 1:
 * anything queued is "full"); on_drain resumes them. */
static int blocked(const cw_stream *st)
{
    return st->out && st->out->len > st->out->off;   /* cw_stream_queued, inline */
}

/* A write failed: the peer is gone (a reset, mostly). */
static void write_failed(cw_stream *st, struct sess *c)
{
    if (c->end == END_NONE)
        c->end = END_RESET;
    if (c->how == CW_END_NONE)
        c->how = CW_END_RESET;
    c->closing = 1;
    cw_stream_close(st, CW_CLOSE_GRACEFUL, CW_NEVER, NULL);   /* ends at once */
}

/* Send a reply line: one send() from the stack in the usual case; the
 * stream keeps only what the socket does not take. last: the line before
 * a graceful close, sent corked (MSG_MORE) so that the shutdown() right
 * after it attaches the FIN: line and FIN leave in one segment and the
 * client acknowledges both at once. */
static void send_line(cw_stream *st, struct sess *c, const char *text, size_t len,
                      int last)
{
    if (c->closing)
        return;
    char line[CW_PROTO_MAX_LINE + 1];
    if (len > CW_PROTO_MAX_LINE)
        len = CW_PROTO_MAX_LINE;   /* cannot happen: requests are shorter */
    memcpy(line, text, len);
    line[len++] = '\n';
    int rc = last ? cw_stream_write_more(st, line, len)
                  : cw_stream_write(st, line, len);
    if (rc == 1)
        cw_stream_read_stop(st);   /* backpressure: on_drain resumes */
    else if (rc < 0)
        write_failed(st, c);
}

static void reply(cw_stream *st, struct sess *c, const char *text, size_t len)
{
    send_line(st, c, text, len, 0);
}

static void reply_str(cw_stream *st, struct sess *c, const char *text)
{
    reply(st, c, text, strlen(text));
}

static void drop_check(cw_server *s, cw_stream *st, struct sess *c);

/* Send a final line and end the connection the configured way. */
static void finish(cw_server *s, cw_stream *st, struct sess *c, const char *text,
                   enum end why)
{
    if (c->closing)
        return;
    drop_check(s, st, c);
    c->end = why;
    int graceful = s->o.close_mode == CW_SERVER_GRACEFUL;
    send_line(st, c, text, strlen(text), graceful);
    if (c->closing)
        return;   /* the write failed: already ending */
    c->closing = 1;
    unauth_drop(s, c);
    int how = graceful ? CW_CLOSE_GRACEFUL
              : s->o.close_mode == CW_SERVER_LINGER0 ? CW_CLOSE_ABORT : CW_CLOSE_PLAIN;
    /* cw-mark: the close() of a final line; tests expect the next line */
    cw_stream_close(st, how, now_ms(s) + s->o.lingering_time_ms, NULL);
}

/* ---- requests ---- */

static uint32_t ms32(int64_t ms)
{
    return ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
}

/* From second class to first: off the unauthenticated FIFO; from now on
 * every request buys idle_timeout. */
static void authenticated(cw_server *s, cw_stream *st, struct sess *c)
{
    unauth_drop(s, c);
    c->authed = 1;
    cw_stream_set_timeout(st, ms32(s->o.idle_timeout_ms));
}

static void log_table_full(cw_server *s)
{
    if (!s->o.log)
        return;
    fprintf(s->o.log, "closewise-server: throttle table full: failures from "
            "addresses it cannot hold share one budget until the window ends\n");
    fflush(s->o.log);
}

/* ---- password checks off the loop (authpool.c) ----
 * While its check is in flight a session keeps reading, so its FIN or
 * RST (or its login deadline) ends it at once and drops the check: no
 * reply, nothing left. Requests behind the AUTH wait in rbuf (reads pause
 * past a line's worth). It has had its chance to log in: it leaves the
 * unauthenticated FIFO, so no newcomer evicts it; the check queue bounds
 * how many wait so.
 *
 * A check in flight holds a share of the throttle's budget on each of its
 * keys, as if it had failed already (throttle.h): an answer that passes
 * gives it back, one that fails turns it into the failure, a dropped
 * check gives it back. So guesses sent on many connections at once get
 * no more checks than guesses sent one by one. A login that only the
 * checks in flight stand in the way of is neither checked nor refused:
 * it waits (below), since they may pass. Counting them as failures
 * refused clients that log in on many connections at once (measured: the
 * soak's echo clients, one account from many addresses, hit the
 * per-account limit); counting failures only once known let up to
 * --auth-queue plus the threads guesses pass together. */

static void on_drain(cw_stream *st);

/* ---- logins waiting for the throttle ----
 * A waiting session keeps its AUTH line unconsumed at the head of rbuf
 * and stays what it was: unauthenticated, in the FIFO (a newcomer may
 * evict it; the unauthenticated cap bounds how many wait), under its
 * login deadline, reading (its FIN or RST ends it: no reply). Its AUTH is
 * served again when it sends more, when a check of this loop answers or
 * is dropped (its hold may be the one waited for), and, if any hold has
 * ended meanwhile, every WAIT_RETRY_MS: a check answered on another loop
 * (--workers) cannot wake this one's sessions without a cross-thread
 * hand-off, and a timer on the session's own loop needs none. The table
 * is shared under its mutex, so whichever loop re-asks sees every loop's
 * holds; a tick with no hold ended costs one atomic load, not a walk.
 * 5 ms: a third of a yescrypt check here (15 ms), so a waiter of the
 * other loop loses little; 200 wake-ups a second only while some wait. */
#define WAIT_RETRY_MS 5

static void on_wait_timer(cw_loop *loop, cw_timer *t);

static void unwait(cw_server *s, struct sess *c)
{
    if (!c->waiting)
        return;
    c->waiting = 0;
    s->nwaiting--;
}

static void wait_login(cw_server *s, struct sess *c)
{
    c->waiting = 1;
    s->nwaiting++;
    if (!c->waited)
        s->st.auth_waited++;
    c->waited = 1;
    if (!cw_timer_active(&s->wait_timer))
        cw_timer_start(s->loop, &s->wait_timer, now_ms(s) + WAIT_RETRY_MS,
                       on_wait_timer);
}

/* A hold was given back on this loop: its waiting logins ask again in
 * the next timer pass (not from inside the answer's call chain). */
static void wake_waiting(cw_server *s)
{
    if (s->nwaiting && !s->stopping &&
        (!cw_timer_active(&s->wait_timer) || s->wait_timer.deadline > now_ms(s)))
        cw_timer_start(s->loop, &s->wait_timer, now_ms(s), on_wait_timer);
}

/* Every waiting session of the loop asks again, oldest first (the FIFO's
 * order: none is overtaken by later ones for ever). A retry only takes
 * sessions off the FIFO (a NULL left behind) or empties it, never moves
 * an entry, so the walk by index is safe. */
static void on_wait_timer(cw_loop *loop, cw_timer *t)
{
    cw_server *s = t->data;
    struct fifo *f = &s->unauth;
    uint64_t ends = cw__throttle_ends(s->thr);
    int left = ends != s->wait_ends ? s->nwaiting : 0;
    s->wait_ends = ends;
    for (uint32_t i = f->off; i < f->n && left > 0; i++) {
        cw_stream *st = f->e[i].st;
        if (!st || !sess_of(st)->waiting)
            continue;
        left--;
        unwait(s, sess_of(st));
        on_drain(st);   /* its AUTH again, from rbuf */
    }
    if (s->nwaiting && !s->stopping)
        cw_timer_start(loop, t, now_ms(s) + WAIT_RETRY_MS, on_wait_timer);
}

static void drop_check(cw_server *s, cw_stream *st, struct sess *c)
{
    unwait(s, c);
    if (!c->checking)
        return;
    struct cw__thr_hold hold;
    cw__authjob *job = jm_take(&s->jobs, st, &hold);
    if (job)
        cw__authjob_cancel(job);
    cw__throttle_end(s->thr, &hold, CW__THR_CANCELLED, now_ms(s));
    wake_waiting(s);
    c->checking = 0;
    s->st.auth_cancelled++;
}

/* The peer has ended the connection and sent nothing more: a FIN with
 * no bytes before it, or a reset. One peek, once per login. */
static int peer_left(cw_stream *st)
{
    char b;
    ssize_t k = recv(cw_stream_fd(st), &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* A login's answer, checked here or on a thread: its hold ends as the
 * answer says, and the client gets OK or its last line. */
static void answer_login(cw_server *s, cw_stream *st, struct sess *c, int ok,
                         struct cw__thr_hold *hold)
{
    int first = cw__throttle_end(s->thr, hold, ok ? CW__THR_PASSED : CW__THR_FAILED,
                                 now_ms(s));
    if (!ok) {
        if (first)
            log_table_full(s);
        finish(s, st, c, "ERR bad credentials", END_AUTH_FAILED);
        return;
    }
    authenticated(s, st, c);
    reply_str(st, c, "OK");
}

static void on_checked(void *data, int ok)
{
    cw_stream *st = data;
    cw_server *s = cw_stream_data(st);
    struct sess *c = sess_of(st);
    struct cw__thr_hold hold;
    jm_take(&s->jobs, st, &hold);   /* the job ends with this call */
    c->checking = 0;
    /* Its FIN or RST may wait in the same loop iteration as the answer:
     * it left during the check, so no reply (and no failure: nobody
     * learnt the answer); reading its end next closes the session. */
    if (peer_left(st)) {
        cw__throttle_end(s->thr, &hold, CW__THR_CANCELLED, now_ms(s));
        wake_waiting(s);
        s->st.auth_cancelled++;
        return;
    }
    answer_login(s, st, c, ok, &hold);
    wake_waiting(s);
    if (ok)
        on_drain(st);   /* serve what came behind the AUTH, read again */
}

static void start_check(cw_server *s, cw_stream *st, struct sess *c,
                        const struct cw_req *r, struct cw__thr_hold *hold)
{
    cw__authjob *job;
    int rc = cw__authport_submit(s->port, r->user, r->user_len, r->pass,
                                 r->pass_len, on_checked, st, &job);
    if (rc == CW_OK && jm_put(&s->jobs, st, job, hold) != CW_OK) {
        cw__authjob_cancel(job);
        rc = -ENOMEM;
    }
    if (rc == CW_OK) {
        unauth_drop(s, c);
        c->checking = 1;
        /* It logged in on time: the check's wait (bounded by the queue)
         * is not held against its login or idle deadline. */
        cw_stream_set_deadline(st, CW_NEVER);
        return;
    }
    cw__throttle_end(s->thr, hold, CW__THR_CANCELLED, now_ms(s));   /* not checked */
    if (rc == -EBUSY)
        s->st.auth_busy++;
    finish(s, st, c, "ERR busy", rc == -EBUSY ? END_BUSY : END_ERROR);
}

/* A check on the loop, with the loop's own crypt_data (32 KiB: not a
 * malloc per login). With check threads it is answered at once: no
 * padding sleep, which would hold every session of the loop (100 us or
 * more per login: the churn benchmark's loop spent most of its time
 * asleep, at a quarter of the peers' connections/s). Only methods cheaper
 * than CW__AUTH_INLINE_NS come here then, so what an answer's time could
 * tell apart is under 20 us: an unknown user is hashed with the costliest
 * method present, like a known user of that method. (Also a table of one
 * cheap method whose cost is not settled yet, handle_auth: every user is
 * hashed alike there.) Without threads
 * (--auth-threads 0, the blocking mode) every check comes here and is
 * padded by a sleep. 0 (refused) without memory for the hash. */
static int check_on_loop(cw_server *s, const struct cw_req *r)
{
    if (!s->cd && !(s->cd = calloc(1, sizeof *s->cd)))
        return 0;
    if (!s->pool) {   /* --auth-threads 0: padded, with a sleep on the loop */
        int ok = cw__auth_check(s->auth, s->cd, r->user, r->user_len, r->pass,
                                r->pass_len);
        /* The check held the loop (up to a yescrypt hash and its pad):
         * deadlines set after it count from now, not from the pass's
         * start. */
        cw__loop_update_time(s->loop);
        return ok;
    }
    /* no pad: answered at once (above) */
    return cw__auth_verify(s->auth, s->cd, r->user, r->user_len, r->pass,
                           r->pass_len, NULL);
}

static void handle_auth(cw_server *s, cw_stream *st, struct sess *c,
                        const struct cw_req *r)
{
    if (c->authed) {
        reply_str(st, c, "ERR already authenticated");
        return;
    }
    struct cw__thr_hold hold;
    enum cw__thr v = cw__throttle_begin(s->thr, c->addr, r->user, r->user_len,
                                        now_ms(s), &hold);
    if (v == CW__THR_WAIT) {
        wait_login(s, c);
        return;
    }
    if (v != CW__THR_OK) {
        s->st.throttled++;
        c->reason = (uint8_t)(R_THR + v);
        finish(s, st, c, "ERR too many failures", END_THROTTLED);
        return;
    }
    /* A check cheaper than a hand-off to a thread (DES in the churn
     * benchmark: half a microsecond) runs here; anything that could stall
     * the loop goes to the pool. */
    /* A cost not settled yet may be a slow moment's timing (auth.c): up
     * to CW__AUTH_SLOW_MOMENT times the true one was seen, so within that
     * the check stays on the loop until timed again; beyond it the method
     * is dear. */
    int settled = 1;
    int64_t cost = s->pool ? cw__auth_cost_ns(s->auth, &settled) : 0;
    if (cost > CW__AUTH_INLINE_NS &&
        (settled || cost > CW__AUTH_SLOW_MOMENT * CW__AUTH_INLINE_NS)) {
        start_check(s, st, c, r, &hold);
        return;
    }
    /* The same accounting as a check off the loop, the hold given back
     * at once (by another loop's logins, it may have been waited for). */
    answer_login(s, st, c, check_on_loop(s, r) == 1, &hold);
}

static void handle(cw_server *s, cw_stream *st, struct sess *c, const struct cw_req *r)
{
    switch (r->type) {
    case CW_REQ_AUTH:
        handle_auth(s, st, c, r);
        break;
    case CW_REQ_ECHO:
        if (c->authed)
            reply(st, c, r->text, r->text_len);
        else
            reply_str(st, c, "ERR not authenticated");
        break;
    case CW_REQ_QUIT:
        finish(s, st, c, "BYE", END_QUIT);
        break;
    case CW_REQ_SYNTAX:
        reply_str(st, c, "ERR syntax");
        break;
    case CW_REQ_UNKNOWN:
        reply_str(st, c, "ERR unknown command");
        break;
    case CW_REQ_TOOLONG:
        finish(s, st, c, "ERR line too long", END_TOOLONG);
        break;
    case CW_REQ_BAD:
        finish(s, st, c, "ERR bad request", END_BAD);
        break;
    case CW_REQ_INCOMPLETE:
        break;
    }
}

/* Serve the complete requests in buf; returns the bytes used. Stops when
 * the session is closing or a reply is blocked (backpressure). */
static size_t process(cw_server *s, cw_stream *st, struct sess *c,
                      const char *buf, size_t len)
{
    size_t off = 0;
    unwait(s, c);   /* a waiting AUTH is first in buf: asked again */
    while (!c->closing && !c->checking && !blocked(st)) {
        struct cw_req r;
        if (cw__proto_parse(buf + off, len - off, &r) == CW_REQ_INCOMPLETE)
            break;
        handle(s, st, c, &r);
        if (!r.consumed || c->waiting)
            break;   /* a waiting AUTH stays in buf, for its next try */
        off += r.consumed;
        /* Before login, lines buy no time. After it, the session moves
         * to the tail of the loop's idle-timeout queue: a list move. */
        if (c->authed && !c->closing)
            cw_stream_set_timeout(st, ms32(s->o.idle_timeout_ms));
    }
    return off;
}

static void drop_rbuf(cw_server *s, struct sess *c)
{
    if (!c->rbuf)
        return;   /* the usual case: no call into free() */
    s->rbuf_bytes -= c->rlen;
    free(c->rbuf);
    c->rbuf = NULL;
    c->rlen = 0;
}

/* Serve buf[0..len), keeping what is left (an unfinished line, or
 * requests waiting for a blocked reply) in a buffer sized to it. */
static void serve(cw_server *s, cw_stream *st, struct sess *c, const char *buf,
                  size_t len)
{
    size_t used = process(s, st, c, buf, len);
    if (c->closing || used == len)
        return;   /* closing: what follows the last request is ignored */
    c->rbuf = malloc(len - used);
    if (!c->rbuf) {
        c->end = END_ERROR;
        c->closing = 1;
        unauth_drop(s, c);
        cw_stream_close(st, CW_CLOSE_ABORT, 0, NULL);
        return;
    }
    memcpy(c->rbuf, buf + used, len - used);
    c->rlen = (uint16_t)(len - used);
    s->rbuf_bytes += c->rlen;
    if ((c->checking || c->waiting) && c->rlen > CW_PROTO_MAX_LINE)
        cw_stream_read_stop(st);   /* enough waiting: on_checked resumes */
}

/* ---- the stream's callbacks ---- */

static void on_peer_end(cw_server *s, cw_stream *st, struct sess *c, ssize_t rc)
{
    if (rc == CW_ETIMEDOUT) {   /* our deadline: the login's or the idle one */
        if (!c->authed && age_ms(s, c) >= s->o.login_timeout_ms) {
            s->st.login_timeouts++;
            finish(s, st, c, "ERR login timeout", END_LOGIN_TIMEOUT);
        } else {
            finish(s, st, c, "ERR idle timeout", END_IDLE);
        }
        return;
    }
    drop_check(s, st, c);
    c->end = rc == CW_EOF ? END_PEER_EOF : END_RESET;
    c->how = rc == CW_EOF ? CW_END_EOF : CW_END_RESET;
    c->closing = 1;
    unauth_drop(s, c);
    /* After the peer's FIN was read the close is a bare close() (nothing
     * to flush, nothing left to read); after a reset, nothing is sent. */
    cw_stream_close(st, CW_CLOSE_GRACEFUL, CW_NEVER, NULL);
}

static void on_read(cw_stream *st, ssize_t n, const char *buf)
{
    cw_server *s = server_of(st);
    struct sess *c = sess_of(st);
    if (n < 0) {
        on_peer_end(s, st, c, n);
        return;
    }
    if (!c->rlen) {
        serve(s, st, c, buf, (size_t)n);   /* the usual case: no copy */
        return;
    }
    if (c->rlen + (size_t)n > sizeof s->scratch) {
        /* Only after a write error resumed reads with requests still
         * waiting: the session is ending anyway. */
        drop_rbuf(s, c);
        return;
    }
    size_t len = c->rlen;
    memcpy(s->scratch, c->rbuf, len);
    memcpy(s->scratch + len, buf, (size_t)n);
    drop_rbuf(s, c);
    serve(s, st, c, s->scratch, len + (size_t)n);
}

/* The blocked reply is out: serve the requests that waited for it (no
 * readiness event would come for them), then read again. */
static void on_drain(cw_stream *st)
{
    cw_server *s = server_of(st);
    struct sess *c = sess_of(st);
    if (c->rlen) {
        size_t len = c->rlen;
        memcpy(s->scratch, c->rbuf, len);
        drop_rbuf(s, c);
        serve(s, st, c, s->scratch, len);
    }
    if (!c->closing && !c->checking && !blocked(st) &&
        !(c->waiting && c->rlen > CW_PROTO_MAX_LINE))
        cw_stream_read_start(st);
}

CW__COLD static void resume_accept(cw_server *s);

/* The close word: what this file decided (the peer's end, an eviction),
 * else what the stream says. A library-ended stream the server did not
 * close was reset by the write timeout; a lingering close cut short for a
 * descriptor ran out of time, as far as the peer can tell. */
static enum cw_end close_word(struct sess *c, enum cw_end e)
{
    if (c->how != CW_END_NONE)
        return (enum cw_end)c->how;
    if (e == CW_END_EVICTED)
        return CW_END_TIMEOUT;
    if (e == CW_END_TIMEOUT && !c->closing) {
        c->end = END_WRITE_TIMEOUT;
        c->reason = R_WRITE;
        return CW_END_ABORT;
    }
    return e;
}

static void on_closed(cw_stream *st, int how)
{
    cw_server *s = server_of(st);
    struct sess *c = sess_of(st);
    drop_check(s, st, c);   /* before close_word, which may set the reason */
    unauth_drop(s, c);
    drop_rbuf(s, c);
    enum cw_end e = close_word(c, cw__stream_end_done(st));   /* st is done */
    if (c->end == END_NONE)
        c->end = e == CW_END_RESET ? END_RESET : END_ERROR;
    if (s->o.log)
        log_end(s, c, e);
    s->live--;
    open_add(s, -1);
    s->st.ended++;
    if (s->accept_paused && !s->stopping)
        resume_accept(s);
    if (s->stopping && s->live == 0)
        cw_loop_stop(s->loop);
}

static const struct cw_stream_handlers handlers = {
    .on_read = on_read, .on_drain = on_drain, .on_closed = on_closed,
};

/* ---- accepting, caps and descriptor pressure ---- */

static struct cw_acceptor_stats acc_stats(const cw_server *s)
{
    struct cw_acceptor_stats a;
    cw_acceptor_stats(s->acc, &a);
    return a;
}

static void on_accept_timer(cw_loop *loop, cw_timer *t)
{
    resume_accept(t->data);
}

/* Stop accepting: pending connections wait in the kernel's backlog
 * instead of waking us up for an accept we would refuse. A timer retries
 * at retry_at (an unauthenticated session become evictable); with
 * CW_NEVER the next ended session resumes. why, if not NULL, is logged
 * once per pause, at most once a second (a flood pauses often: the count
 * is in the stats line at exit). */
static void hold_accept(cw_server *s, int64_t retry_at, const char *why)
{
    if (!s->accept_paused) {
        cw_acceptor_pause(s->acc);
        s->accept_paused = 1;
        s->pause_logged = 0;
        s->st.accept_paused++;
    }
    int64_t now = now_ms(s);
    if (s->o.log && why && !s->pause_logged &&
        (s->pause_log_ms == 0 || now - s->pause_log_ms >= 1000)) {
        fprintf(s->o.log, "closewise-server: accept paused: %s\n", why);
        fflush(s->o.log);
        s->pause_logged = 1;
        s->pause_log_ms = now;
    }
    if (retry_at == CW_NEVER && s->nloops > 1)
        retry_at = now + 20;   /* an end in another loop would not resume us */
    if (retry_at != CW_NEVER && (!cw_timer_active(&s->accept_timer) ||
                                 s->accept_timer.deadline > retry_at))
        cw_timer_start(s->loop, &s->accept_timer, retry_at, on_accept_timer);
}

/* At --max-connections with no one to give way: wait for an end. */
static void hold_full(cw_server *s, uint64_t open)
{
    char why[64];
    snprintf(why, sizeof why, "%llu connections (max)", (unsigned long long)open);
    hold_accept(s, CW_NEVER, why);
}

CW__COLD static void resume_accept(cw_server *s)
{
    if (!s->accept_paused || s->stopping)
        return;
    struct cw_acceptor_stats a = acc_stats(s);
    int open = atomic_load(&first_loop(s)->open_all);
    if (open >= s->o.max_conns && !a.closing && !s->nunauth) {
        hold_full(s, (uint64_t)open);   /* still paused; now for this reason */
        return;
    }
    cw_timer_stop(s->loop, &s->accept_timer);
    s->accept_paused = 0;
    cw_acceptor_resume(s->acc);
}

/* Descriptors ran out and nothing could be reclaimed (the acceptor backs
 * off by itself). */
static void on_acceptor_pause(cw_acceptor *a, void *data, int err)
{
    cw_server *s = data;
    int64_t now = now_ms(s);
    if (s->o.log && (s->pause_log_ms == 0 || now - s->pause_log_ms >= 1000)) {
        fprintf(s->o.log, "closewise-server: accept paused: %s\n", strerror(-err));
        fflush(s->o.log);
        s->pause_log_ms = now;
    }
}

/* Make a session give way: it gets "ERR server busy", and the stream
 * reads what it sent and closes plainly (no lingering: the descriptor is
 * needed now; no RST: nothing is left unread). The end is decided before
 * the reply: if the peer is already gone the failed send records a
 * reset, which must then be the close, not the reason. */
static void evict_mark(cw_server *s, cw_stream *st, enum evict why)
{
    struct sess *c = sess_of(st);
    drop_check(s, st, c);
    c->end = END_EVICTED;
    c->reason = (uint8_t)(R_EVICT + why);
    reply_str(st, c, "ERR server busy");
    if (c->how == CW_END_NONE)
        c->how = CW_END_PLAIN;
    c->closing = 1;
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
    unauth_drop(s, c);
}

static void evict(cw_server *s, cw_stream *st, enum evict why)
{
    evict_mark(s, st, why);
    s->cap_evictions++;
    cw_stream_evict(st);
}

/* The oldest unauthenticated session if it has had its chance to log in:
 * one full loop iteration since it was accepted (so input that came with
 * it has been read) and, with grace, UNAUTH_GRACE_MS. Else NULL, and
 * *when says when it will have (CW_NEVER if there is none). */
static cw_stream *unauth_victim(cw_server *s, int grace, int64_t *when)
{
    struct fent *h = fifo_head(&s->unauth);
    int64_t now = now_ms(s);
    *when = CW_NEVER;
    if (!h)
        return NULL;
    uint32_t age = age_ms(s, sess_of(h->st));
    int64_t wait = grace && age < UNAUTH_GRACE_MS ? UNAUTH_GRACE_MS - age : 0;
    if ((uint32_t)cw__loop_iterations(s->loop) - h->gen >= 2 && !wait)
        return h->st;
    /* An iteration passes soon: retry then. */
    *when = now + (wait ? wait : 1);
    return NULL;
}

/* Descriptor pressure, after the lingering closes: unauthenticated
 * sessions, oldest first, each after its grace as at --max-connections
 * (without it, a flood reconnecting as fast as it is evicted made a
 * newcomer the oldest within milliseconds: a login was evicted 3 ms after
 * its connect, before its AUTH arrived, on a loaded machine), and only
 * when none is left, sessions idle for a while, least recently active
 * first. -1 protects the rest for now; new connections wait in the
 * kernel's accept queue meanwhile. */
static int pick(cw_acceptor *a, void *data, cw_stream **victim)
{
    cw_server *s = data;
    int64_t when;
    if (s->no_pick)
        return -1;
    cw_stream *v = unauth_victim(s, 1, &when);
    if (!v) {
        if (s->nunauth) {
            /* Never an authenticated session while these remain; the
             * oldest is ripe when its grace is over: retry then, not
             * after the acceptor's 100 ms (a login waits for it). */
            cw_acceptor_retry_at(a, when);
            return -1;
        }
        v = cw_acceptor_idlest(a, RECLAIM_MIN_IDLE_MS);
        if (!v || sess_of(v)->rlen)
            return -1;
    }
    evict_mark(s, v, EV_DESCRIPTORS);
    *victim = v;
    return 1;
}

/* A lingering close gives way (1), if there is one (0: none, or only
 * closes still flushing). */
static int reclaim_lingering(cw_server *s)
{
    if (!acc_stats(s).closing)
        return 0;
    s->no_pick = 1;   /* the lingering closes only, not the pick's choice */
    int n = cw_acceptor_reclaim(s->acc, 1);
    s->no_pick = 0;
    return n > 0;
}

/* Before an accept: at --max-connections a lingering connection or else
 * the oldest unauthenticated session gives way; at the unauthenticated
 * cap, the oldest unauthenticated session does. Returns 0, with accepting
 * held, when no one can give way yet. */
static int admit(cw_acceptor *a, void *data)
{
    cw_server *s = data;
    int64_t when = CW_NEVER;
    cw_stream *v;
    if (s->stopping)
        return 0;
    /* The acceptor's counts only at the cap: a copy of its stats per
     * accept was most of this function's cost. */
    int open = atomic_load(&first_loop(s)->open_all);
    if (open >= s->o.max_conns && !reclaim_lingering(s)) {
        if ((v = unauth_victim(s, 1, &when))) {
            evict(s, v, EV_MAX_CONNS);
        } else if (s->nunauth) {
            hold_accept(s, when, NULL);   /* routine under a flood: quiet */
            return 0;
        } else {
            hold_full(s, (uint64_t)open);
            return 0;
        }
    }
    if (s->nunauth >= s->max_unauth) {
        if (!(v = unauth_victim(s, 1, &when))) {
            hold_accept(s, when, NULL);   /* routine under a flood: quiet */
            return 0;
        }
        evict(s, v, EV_UNAUTH_CAP);
    }
    return 1;
}

static void set_peer(struct sess *c, const struct sockaddr *sa)
{
    if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        memcpy(c->addr, &a->sin6_addr, 16);
        c->port = ntohs(a->sin6_port);
        /* IPv4 clients of a dual-stack listener are IPv4 clients. */
        c->v6 = !IN6_IS_ADDR_V4MAPPED(&a->sin6_addr);
    } else {
        c->addr[10] = c->addr[11] = 0xFF;
        if (sa) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
            memcpy(c->addr + 12, &a->sin_addr, 4);
            c->port = ntohs(a->sin_port);
        }
    }
}

static void on_accept(cw_acceptor *a, cw_stream *st, void *data)
{
    cw_server *s = data;
    struct sess *c = sess_of(st);
    int64_t now = now_ms(s);
    c->start = (uint32_t)now;
    set_peer(c, cw_acceptor_peer(a, NULL));
    s->live++;
    open_add(s, 1);
    s->st.accepted++;
    cw_stream_start(st, &handlers, s);
    if (fifo_push(&s->unauth, st, (uint32_t)cw__loop_iterations(s->loop),
                  &c->useq) < 0) {
        c->end = END_ERROR;
        c->closing = 1;
        cw_stream_close(st, CW_CLOSE_ABORT, 0, NULL);
        return;
    }
    c->in_unauth = 1;
    s->nunauth++;
    int64_t first = s->o.login_timeout_ms < s->o.idle_timeout_ms
                    ? s->o.login_timeout_ms : s->o.idle_timeout_ms;
    cw_stream_set_timeout(st, ms32(first));
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
    o->auth_idle = 1;   /* the check threads take no lock a loop takes */
}

static int check_opts(const struct cw_server_opts *o)
{
    if (o->idle_timeout_ms <= 0 || o->lingering_time_ms < 0 ||
        o->lingering_timeout_ms < 0 || o->write_timeout_ms <= 0 ||
        o->max_conns <= 0 || o->auth_max_failures < 0 ||
        o->auth_window_ms <= 0 || o->backlog < 0 ||
        (unsigned)o->close_mode > CW_SERVER_PLAIN || o->login_timeout_ms <= 0 ||
        o->max_unauth < 0 || o->sndbuf < 0 || o->auth_net_max_failures < 0 ||
        o->auth_account_max_failures < 0 || o->auth_threads < -1 ||
        o->auth_queue < 0 || o->workers < 0)
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

static int new_acceptor(cw_server *s)
{
    struct cw_stream_opts so;
    cw_stream_opts_init(&so);
    so.write_timeout_ms = ms32(s->o.write_timeout_ms);
    so.high_water = 1;   /* a queued byte is "full": reads pause */
    /* 0 was "no wait between reads" here; 0 is "none" to the stream */
    so.linger_timeout_ms = s->o.lingering_timeout_ms ? ms32(s->o.lingering_timeout_ms) : 1;
    so.user_size = sizeof(struct sess);
    int rc = cw_acceptor_new(s->loop, s->lis, &so, on_accept, s, &s->acc);
    if (rc == CW_OK) {
        cw_acceptor_set_admit(s->acc, admit);
        cw_acceptor_set_reclaim(s->acc, pick);
        cw_acceptor_set_on_pause(s->acc, on_acceptor_pause);
    }
    return rc;
}

/* A loop's own parts: loop, listener, acceptor, auth port. */
static int shard_open(cw_server *s, uint16_t port, int nloops)
{
    int rc = cw_loop_new(&s->loop);
    if (rc == CW_OK && s->o.handle_signals && !s->primary)
        rc = cw_loop_signals(s->loop, NULL, NULL);
    if (rc == CW_OK && s->pool)
        rc = cw__authport_new(s->pool, s->loop, &s->port);
    s->nloops = nloops;
    int unauth = s->o.max_unauth ? s->o.max_unauth : (s->o.max_conns + 1) / 2;
    s->max_unauth = (unauth + nloops - 1) / nloops;
    struct cw_opts lo;
    cw_opts_init(&lo);
    lo.reuseport = nloops > 1;
    /* Accepted sockets inherit the listener's SO_SNDBUF (and its lock
     * against autotuning): set once here, not a system call per accept.
     * 0: the kernel's autotuning. */
    lo.sndbuf = s->o.sndbuf;
    if (rc == CW_OK)
        rc = cw_listen(s->o.host ? s->o.host : "127.0.0.1", port, &lo,
                       s->o.backlog, &s->lis);
    s->accept_timer.data = s;
    s->wait_timer.data = s;
    if (rc == CW_OK)
        rc = new_acceptor(s);
    return rc;
}

/* The other loops, sharing the first one's port and tables. */
static int open_shards(cw_server *s, int n)
{
    s->shards = calloc((size_t)n, sizeof *s->shards);
    if (!s->shards)
        return -ENOMEM;
    while (s->nshards < n) {
        cw_server *x = calloc(1, sizeof *x);
        if (!x)
            return -ENOMEM;
        s->shards[s->nshards++] = x;   /* freed with s from here on */
        x->o = s->o;
        x->primary = s;
        x->auth = s->auth;
        x->pool = s->pool;
        x->thr = s->thr;
        x->id = s->nshards;
        int rc = shard_open(x, (uint16_t)cw_listener_port(s->lis), n + 1);
        if (rc < 0)
            return rc;
    }
    return CW_OK;
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
    int nloops = s->o.workers > 1 ? s->o.workers : 1;
    if (rc == CW_OK)
        rc = cw__auth_new(&s->auth);
    if (rc == CW_OK)
        rc = new_throttle(s);
    if (rc == CW_OK && s->o.auth_threads >= 0)
        rc = cw__authpool_new(s->auth, s->o.auth_threads, s->o.auth_queue,
                              s->o.auth_idle, &s->pool);
    if (rc == CW_OK)
        rc = shard_open(s, s->o.port, nloops);
    if (rc == CW_OK && nloops > 1)
        rc = open_shards(s, nloops - 1);
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

static int shut_down_one(cw_stream *st, void *arg)
{
    if (!cw_stream_closing(st))
        finish(arg, st, sess_of(st), "ERR server shutting down", END_SHUTDOWN);
    return 0;
}

/* Phase two of a stop: every session gets a last line and a graceful
 * close, bounded by the lingering time. */
static void shut_down_sessions(cw_server *s)
{
    s->stopping = 1;
    cw_acceptor_pause(s->acc);
    cw_timer_stop(s->loop, &s->accept_timer);
    cw_timer_stop(s->loop, &s->wait_timer);
    cw_acceptor_walk(s->acc, shut_down_one, s);
}

/* Serve until the loop is stopped, then end every session. The first
 * loop stops the others when it is stopped (a signal, cw_server_stop). */
static int shard_run(cw_server *s)
{
    int rc = cw_loop_run(s->loop);
    for (int i = 0; i < s->nshards; i++)
        cw_loop_stop(s->shards[i]->loop);
    if (rc < 0)
        return rc;
    shut_down_sessions(s);
    if (s->live == 0)
        return CW_OK;
    s->stop_timer.data = s;
    cw_timer_start(s->loop, &s->stop_timer,
                   cw_now_ms() + s->o.lingering_time_ms, on_stop_timer);
    rc = cw_loop_run(s->loop);   /* ends when the last session is freed */
    cw_timer_stop(s->loop, &s->stop_timer);
    return rc;
}

static void *shard_main(void *arg)
{
    cw_server *s = arg;
    pthread_setname_np(pthread_self(), "cw-loop");   /* for top, perf, tests */
    s->run_rc = shard_run(s);
    return NULL;
}

int cw_server_run(cw_server *s)
{
    if (!s || s->stopping || s->primary)
        return CW_EINVAL;
    /* The loops' threads block every signal: SIGTERM is the first loop's
     * (its signalfd), wherever the kernel would deliver it. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int started = 0, rc = CW_OK;
    for (; started < s->nshards; started++) {
        int err = pthread_create(&s->shards[started]->thread, NULL, shard_main,
                                 s->shards[started]);
        if (err) {
            rc = -err;
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == CW_OK)
        rc = shard_run(s);   /* stops the other loops when it is stopped */
    else
        for (int i = 0; i < started; i++)
            cw_loop_stop(s->shards[i]->loop);
    /* Not stopped again here: a loop ending its sessions (its second run)
     * would cut their lingering closes short. */
    for (int i = 0; i < started; i++) {
        pthread_join(s->shards[i]->thread, NULL);
        if (rc == CW_OK)
            rc = s->shards[i]->run_rc;
    }
    return rc;
}

int cw_server_stop(cw_server *s)
{
    return s ? cw_loop_stop(s->loop) : CW_EINVAL;
}

static int add_queued(cw_stream *st, void *arg)
{
    *(size_t *)arg += cw_stream_queued(st);
    return 0;
}

static void shard_stats(const cw_server *s, struct cw_server_stats *st)
{
    *st = s->st;
    struct cw_acceptor_stats a = acc_stats(s);
    st->conns = (int)a.open;
    st->lingering = (int)a.closing;
    st->accept_paused += a.paused;
    st->reclaimed = a.reclaimed - s->cap_evictions;
    /* What sessions hold in user space: their allocations (stream and
     * session), unprocessed input, queued output. */
    size_t queued = 0;
    cw_acceptor_walk(s->acc, add_queued, &queued);
    st->conn_bytes = (size_t)s->live * (CW__STREAM_SIZE + sizeof(struct sess)) +
                     s->rbuf_bytes + queued;
    st->unauthenticated = s->nunauth;
}

int cw_server_stats(const cw_server *s, struct cw_server_stats *st)
{
    if (!s || !st)
        return CW_EINVAL;
    shard_stats(s, st);
    for (int i = 0; i < s->nshards; i++) {
        struct cw_server_stats x;
        shard_stats(s->shards[i], &x);
#define CW_SUM(f) st->f += x.f
        CW_SUM(accepted); CW_SUM(ended); CW_SUM(conns); CW_SUM(lingering);
        CW_SUM(accept_paused); CW_SUM(reclaimed); CW_SUM(conn_bytes);
        CW_SUM(unauthenticated); CW_SUM(login_timeouts); CW_SUM(throttled);
        CW_SUM(evicted_unauth); CW_SUM(evicted_authed); CW_SUM(evicted_descriptors);
        CW_SUM(evicted_max_conns); CW_SUM(evicted_unauth_cap); CW_SUM(auth_busy);
        CW_SUM(auth_cancelled); CW_SUM(auth_waited);
#undef CW_SUM
    }
    st->throttle_overflow = cw__throttle_overflowed(s->thr);
    if (s->pool) {   /* one pool for every loop */
        struct cw__authpool_stats ps;
        cw__authpool_stats(s->pool, &ps);
        st->auth_rescued = ps.rescued;
    }
    return CW_OK;
}

/* Whatever could not finish in time ends abortively, on purpose. */
static int abort_one(cw_stream *st, void *arg)
{
    struct sess *c = sess_of(st);
    if (c->end == END_NONE)
        c->end = END_SHUTDOWN;
    c->closing = 1;
    cw_stream_close(st, CW_CLOSE_ABORT, 0, NULL);
    return 0;
}

/* A loop's own parts (its thread, if any, has been joined). */
static void shard_close(cw_server *s)
{
    s->stopping = 1;
    if (s->acc) {
        cw_acceptor_walk(s->acc, abort_one, NULL);
        /* Their on_closed calls are all due in the next timer pass; a
         * stop still pending (cw_server_stop() without a run, a signal)
         * ends a run before its timers, hence a second one. */
        for (int i = 0; i < 3 && s->live; i++)
            cw_loop_run(s->loop);
        cw_acceptor_free(&s->acc);
    }
    cw__authport_free(s->port);
    free(s->cd);
    free(s->jobs.slot);
    if (s->loop)
        cw_loop_free(&s->loop);
    if (s->lis)
        cw_listener_close(&s->lis);
    free(s->unauth.e);
}

int cw_server_free(cw_server **sp)
{
    if (!sp || !*sp || (*sp)->primary)
        return CW_EINVAL;
    cw_server *s = *sp;
    *sp = NULL;
    for (int i = 0; i < s->nshards; i++) {
        shard_close(s->shards[i]);
        free(s->shards[i]);
    }
    free(s->shards);
    shard_close(s);
    cw__authpool_free(s->pool);
    cw__auth_free(s->auth);
    cw__throttle_free(s->thr);
    free(s);
    return CW_OK;
}
