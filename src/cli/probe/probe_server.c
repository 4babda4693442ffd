/* probe_server.c - `closewise probe --server HOST:PORT`: a client that
 * does to a server what the seed's server-side traps need (a request,
 * input left unread, a slow reader, a half-close, silence, a reset), one
 * connection per scenario on cw_stream_dial, and judges how the server
 * ended each: from the bytes and the FIN or RST that came back and, when
 * the server runs in this network namespace, from the kernel (sock_diag:
 * its socket's state and holder; /proc: its descriptor; BPF, through the
 * resets collector: the close() that sent a reset, as file:line). */
#define _GNU_SOURCE
#include "probe.h"
#include "../inspect/inspect.h"
#include "../resets/rstwatch.h"
#include "../symbolize.h"

#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <regex.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* request-extra-input: more input than a server reads in one go, so some
 * is still in its receive queue when it closes after the request. */
#define EXTRA_BYTES 65536
/* Reply bytes kept for --expect; more are counted, not kept. */
#define REPLY_MAX (16u << 20)
/* large-reply: our receive buffer, so the reply waits in the server's. */
#define SLOW_RCVBUF 4096
#define MAX_RESETS 32

enum sphase { SP_DIAL, SP_SETTLE, SP_READ, SP_FDS, SP_RESET_WAIT, SP_DONE };

/* How long a reset waits for its BPF event: the tracepoint can fire after
 * the RST has reached us over loopback. */
#define RESET_EVENT_WAIT_MS 300

struct srun;

/* One scenario's connection. */
struct sconn {
    struct srun *r;
    const struct probe_sscenario *sc;
    struct probe_result *res;
    cw_stream *s;           /* NULL once we closed it */
    cw_timer timer;         /* the next step or deadline */
    cw_timer slow;          /* large-reply: the next read */
    enum sphase phase;
    int lport;              /* our local port */
    char *reply;
    size_t rlen, rcap;
    int64_t t_start, t_req, t_quiet, t_end;
    uint32_t reset_unsent;  /* bytes the server's reset destroyed (BPF) */
    /* reset-mid-request: the server's socket just before our reset */
    uint32_t sinode;
    pid_t spid;
    int fds_before;
};

struct srun {
    const struct probe_opts *o;
    cw_loop *loop;
    cw_diag *diag;
    struct rst_watch *watch;    /* NULL: no BPF (why in bpf_why) */
    char bpf_why[256];
    struct sym *sym;
    cw_timer poll;              /* reads the BPF events, sees interrupts */
    cw_timer guard;             /* bounds a scenario */
    int listener_local;         /* a listener on the port in our namespace */
    pid_t lpid;
    char lcomm[16];
    struct sconn c;
    int open;                   /* our stream's on_closed is still to come */
    struct { uint16_t dport; int local; char text[480]; uint32_t unsent; } rst[MAX_RESETS];
    size_t nrst;
};

/* --- the kernel's view of the server --- */

static size_t count_fds(pid_t pid, uint32_t inode, int *has_inode)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    size_t n = 0;
    *has_inode = 0;
    if (!d)
        return 0;
    char want[32];
    snprintf(want, sizeof want, "socket:[%u]", inode);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        n++;
        char link[64];
        ssize_t len = readlinkat(dirfd(d), e->d_name, link, sizeof link - 1);
        if (len > 0) {
            link[len] = '\0';
            *has_inode |= !strcmp(link, want);
        }
    }
    closedir(d);
    return n;
}

/* The server's end of our connection (its local port is the server's,
 * its peer port ours), or with lport 0 its listener; its holder named by
 * the inspector's owner lookup. Returns 1 found (into *out, holders not
 * kept), 0 not in this namespace, or a negative code. */
static int server_sock(struct srun *r, int lport, struct cw_sock *out)
{
    struct cw_diag_filter f;
    cw_diag_filter_init(&f);
    f.sport = r->o->sport;
    if (lport)
        f.dport = lport;
    else
        f.states = CW_STATE_BIT(CW_TCP_LISTEN);
    struct cw_sock *v = NULL;
    size_t n = 0;
    int rc = cw_diag_dump(r->diag, &f, &v, &n);
    if (rc < 0 || n == 0) {
        free(v);
        return rc < 0 ? rc : 0;
    }
    struct insp_sel sel;
    insp_sel_init(&sel);
    sel.owners = r->o->no_bpf ? INSP_OWNERS_PROC : INSP_OWNERS_AUTO;
    insp_attribute(r->diag, &sel, v, n);
    /* The live socket before a TIME_WAIT twin of an earlier connection. */
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (v[i].inode && !v[best].inode)
            best = i;
    *out = v[best];
    out->holders = NULL;
    out->nholders = 0;
    free(v);
    return 1;
}

/* --- the close() that reset it (BPF) --- */

/* " at server.c:417 (finish) < server.c:540 (settle)": the line that asked
 * for the close(), from the event's copy of the closer's stack. */
static void where_of(struct srun *r, const struct cw_rst_event *e, char *buf, size_t size)
{
    static const char pre[] = " at ";
    buf[0] = '\0';
    if (!r->sym || size <= sizeof pre)
        return;
    if (rst_where(r->sym, e, 2, buf + sizeof pre - 1, size - (sizeof pre - 1))[0])
        memcpy(buf, pre, sizeof pre - 1);
    else
        buf[0] = '\0';
}

static int on_reset(void *arg, const struct cw_rst_event *e)
{
    struct srun *r = arg;
    if (e->sport != r->o->sport || r->nrst == MAX_RESETS)
        return 0;
    char where[400], why[96];
    r->rst[r->nrst].dport = e->dport;
    r->rst[r->nrst].unsent = e->unsent;
    r->rst[r->nrst].local = (int)e->local;
    if (!e->local) {
        snprintf(r->rst[r->nrst++].text, sizeof r->rst[0].text,
                 "the kernel, not a close() (%s%s)", rst_kind_name(e->kind),
                 e->kind == CW_RST_AFTER_CLOSE ? ": our input arrived after the server closed"
                                               : "");
        return 0;
    }
    where_of(r, e, where, sizeof where);
    if (e->kind == CW_RST_UNREAD)
        snprintf(why, sizeof why, "closed with %u unread bytes", e->unread);
    else if (e->kind == CW_RST_LINGER0)
        snprintf(why, sizeof why, "closed with SO_LINGER {1,0}");
    else
        snprintf(why, sizeof why, "reset (%s)", rst_kind_name(e->kind));
    char *text = r->rst[r->nrst].text;
    size_t size = sizeof r->rst[r->nrst].text;
    int len = snprintf(text, size, "pid %u (%.16s) %s, %u unsent bytes destroyed", e->pid,
                       e->comm, why, e->unsent);
    if (len > 0 && (size_t)len < size)
        snprintf(text + len, size - (size_t)len, "%.*s", (int)(size - (size_t)len - 1), where);
    r->nrst++;
    return 0;
}

static void poll_resets(struct srun *r)
{
    if (r->watch && rst_watch_poll(r->watch, 0, on_reset, r) < 0) {
        snprintf(r->bpf_why, sizeof r->bpf_why, "reading BPF events failed");
        rst_watch_stop(&r->watch);
    }
}

static void on_poll(cw_loop *loop, cw_timer *t)
{
    struct srun *r = t->data;
    poll_resets(r);
    if (probe_interrupted)
        cw_loop_stop(loop);
    cw_timer_start(loop, t, cw_now_ms() + 50, on_poll);
}

/* --- judging --- */

static void note(struct sconn *c, int verdict, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note(struct sconn *c, int verdict, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->res->srv.note, sizeof c->res->srv.note, fmt, ap);
    va_end(ap);
    c->res->verdict = verdict;
}

/* Does the reply match the scenario's --expect? -1: nothing to match. */
static int matches(const struct sconn *c)
{
    const struct probe_opts *o = c->r->o;
    const char *re = c->sc->send == 2 && o->large_expect ? o->large_expect : o->expect;
    regex_t x;
    if (!re || regcomp(&x, re, REG_EXTENDED | REG_NEWLINE | REG_NOSUB) != 0)
        return -1;
    int m = regexec(&x, c->reply ? c->reply : "", 0, NULL, 0) == 0;
    regfree(&x);
    return m;
}

/* "12ms" below 10 s, where milliseconds matter; "12.3s", "4m05s" above. */
const char *probe_ms(int64_t ms, char *buf, size_t size)
{
    if (ms < 0)
        ms = 0;
    if (ms < 10000)
        snprintf(buf, size, "%lldms", (long long)ms);
    else
        insp_fmt_ms((uint64_t)ms, buf, size);
    return buf;
}

#define ms_text probe_ms

/* The reply ended (FIN, RST) or never did: PASS, LOST, RST-CLOSE, HANG. */
static void judge_reply(struct sconn *c)
{
    struct probe_sresult *v = &c->res->srv;
    char t[32];
    v->matched = matches(c);
    long long bytes = (long long)v->reply_bytes;
    const char *unmatched = c->sc->send == 2 && c->r->o->large_expect ? "--large-expect"
                                                                      : "--expect";
    if (v->end == CW_END_NONE) {
        note(c, PROBE_HANG, "%lld bytes, then nothing for %s: the server never ended "
             "the connection", bytes, ms_text(c->r->o->hang_ms, t, sizeof t));
    } else if (v->end == CW_END_EOF && v->matched != 0) {
        note(c, PROBE_PASS, "%lld bytes, then FIN", bytes);
    } else if (v->end == CW_END_EOF) {
        note(c, PROBE_LOST, "%lld bytes, then FIN: the reply does not match %s (cut short)",
             bytes, unmatched);
    } else if (v->end == CW_END_RESET && v->reset_seen && c->reset_unsent) {
        note(c, PROBE_LOST, "%lld bytes, then a reset that destroyed the rest", bytes);
    } else if (v->end == CW_END_RESET && v->matched == 0) {
        note(c, PROBE_LOST, "%lld bytes, then a reset: the reply does not match %s", bytes,
             unmatched);
    } else if (v->end == CW_END_RESET) {
        note(c, PROBE_RST_CLOSE, "%lld bytes, then a reset instead of FIN%s", bytes,
             v->matched < 0 && !v->reset_seen ? " (give --expect to tell whether bytes were lost)"
                                              : "");
    } else {
        note(c, PROBE_LOST, "%lld bytes, then %s", bytes, cw_end_name((enum cw_end)v->end));
    }
}

static void judge_half_close(struct sconn *c)
{
    struct probe_sresult *v = &c->res->srv;
    char t[32];
    if (v->end == CW_END_EOF) {
        note(c, PROBE_PASS, "the server closed %s after our FIN",
             ms_text(v->end_ms, t, sizeof t));
        return;
    }
    if (v->end == CW_END_RESET) {
        note(c, PROBE_RST_CLOSE, "the server answered our FIN with a reset after %s",
             ms_text(v->end_ms, t, sizeof t));
        return;
    }
    ms_text(c->r->o->grace_ms, t, sizeof t);
    if (v->local && v->state == CW_TCP_CLOSE_WAIT)
        note(c, PROBE_LEAK, "pid %d (%s) fd %d in CLOSE_WAIT >= %s after our FIN, Recv-Q %u: "
             "%s", (int)v->pid, v->pid ? v->comm : "?", v->fd, t, (unsigned)v->rqueue,
             v->rqueue ? "our FIN not read" : "EOF read, never closed");
    else
        note(c, PROBE_HANG, "no FIN from the server within %s of ours%s", t,
             v->local ? "" : " (remote: its socket's state is not visible)");
}

static void judge_idle(struct sconn *c)
{
    struct probe_sresult *v = &c->res->srv;
    char t[32];
    ms_text(v->end_ms, t, sizeof t);
    if (v->end == CW_END_EOF)
        note(c, PROBE_PASS, "the server closed the idle connection after %s (%lld bytes)", t,
             (long long)v->reply_bytes);
    else if (v->end == CW_END_RESET)
        note(c, PROBE_RST_CLOSE, "the server reset the idle connection after %s (%lld bytes "
             "before)", t, (long long)v->reply_bytes);
    else
        note(c, PROBE_HANG, "still open after %s: no idle timeout, or a longer one than "
             "--hang-limit", ms_text(c->r->o->hang_ms, t, sizeof t));
}

/* reset-mid-request: once per sample until the server let go of the
 * socket or the grace passed. Returns 1 when judged. */
static int judge_fds(struct sconn *c, int64_t now)
{
    struct probe_sresult *v = &c->res->srv;
    char t[32];
    if (!v->local || !c->spid || !c->sinode) {
        note(c, PROBE_SKIP, v->local ? "the server had not accepted the connection"
                                     : "remote server: its descriptors cannot be counted");
        return 1;
    }
    int has;
    size_t n = count_fds(c->spid, c->sinode, &has);
    v->end_ms = now - c->t_req;
    v->end = CW_END_ABORT;
    if (!has) {
        note(c, PROBE_PASS, "pid %d (%s) closed its socket %s after our reset "
             "(descriptors %d -> %zu)", (int)c->spid, v->comm, ms_text(v->end_ms, t, sizeof t),
             c->fds_before, n);
        return 1;
    }
    if (now - c->t_req < c->r->o->grace_ms)
        return 0;
    note(c, PROBE_LEAK, "pid %d (%s) fd %d still open >= %s after our reset (descriptors %d "
         "-> %zu)", (int)c->spid, v->comm, v->fd, ms_text(v->end_ms, t, sizeof t),
         c->fds_before, n);
    return 1;
}

/* The server's socket of this connection, as the kernel shows it now. */
static void look(struct sconn *c)
{
    struct cw_sock s;
    struct probe_sresult *v = &c->res->srv;
    int rc = server_sock(c->r, c->lport, &s);
    if (rc <= 0) {
        v->state = 0;
        return;
    }
    v->local = 1;
    v->state = s.state;
    v->rqueue = s.rqueue;
    if (s.pid) {
        v->pid = s.pid;
        v->fd = s.fd;
        snprintf(v->comm, sizeof v->comm, "%s", s.comm);
    }
    if (s.inode)
        c->sinode = s.inode;
}

/* --- the connection --- */

static void on_closed(cw_stream *s, int how)
{
    struct sconn *c = cw_stream_data(s);
    (void)how;
    c->r->open = 0;
    if (c->phase == SP_DONE)
        cw_loop_stop(c->r->loop);
}

static void done(struct sconn *c)
{
    c->phase = SP_DONE;
    cw_timer_stop(c->r->loop, &c->timer);
    cw_timer_stop(c->r->loop, &c->slow);
    if (c->s)
        cw_stream_close(c->s, CW_CLOSE_GRACEFUL, cw_now_ms() + 1000, NULL);
    c->s = NULL;
    if (!c->r->open)
        cw_loop_stop(c->r->loop);
}

/* The close() behind the server's reset, as BPF saw it: 1 found, 0 not
 * (yet). */
static int who_reset(struct sconn *c)
{
    struct srun *r = c->r;
    struct probe_sresult *v = &c->res->srv;
    poll_resets(r);
    /* A close() that reset it explains more than the kernel's answers to
     * what we sent after. */
    size_t best = r->nrst;
    for (size_t i = 0; i < r->nrst; i++)
        if (r->rst[i].dport == c->lport && (best == r->nrst || (r->rst[i].local &&
                                                                !r->rst[best].local)))
            best = i;
    if (best == r->nrst)
        return 0;
    v->reset_seen = 1;
    c->reset_unsent = r->rst[best].local ? r->rst[best].unsent : 0;
    snprintf(v->reset, sizeof v->reset, "%s", r->rst[best].text);
    return 1;
}

/* Judge how the server ended it, at c->t_end. */
static void judge_end(struct sconn *c)
{
    struct probe_sresult *v = &c->res->srv;
    if (v->end == CW_END_RESET && !v->reset_seen && v->local)
        snprintf(v->reset, sizeof v->reset, c->r->watch ? "? (BPF saw no close() reset it)"
                                                        : "? (not named without BPF: %s)",
                 c->r->bpf_why);
    if (c->sc->half_close)
        look(c);   /* before our close: is its socket in CLOSE_WAIT? */
    if (c->sc->half_close)
        judge_half_close(c);
    else if (c->sc->idle)
        judge_idle(c);
    else
        judge_reply(c);
    if (v->reset[0]) {
        size_t len = strlen(v->note);
        snprintf(v->note + len, sizeof v->note - len, "; reset by %s", v->reset);
    }
    done(c);
}

static void on_step(cw_loop *loop, cw_timer *t);

/* The server ended it (or the wait is over, end CW_END_NONE). A reset
 * waits a moment for its BPF event. */
static void ended(struct sconn *c, int end, int64_t now)
{
    struct probe_sresult *v = &c->res->srv;
    v->end = end;
    v->end_ms = now - c->t_req;
    c->t_end = now;
    if (c->rlen < c->rcap)
        c->reply[c->rlen] = '\0';
    if (end == CW_END_RESET && c->r->watch && v->local && !who_reset(c)) {
        c->phase = SP_RESET_WAIT;
        cw_timer_start(c->r->loop, &c->timer, now + 20, on_step);
        return;
    }
    judge_end(c);
}

static void on_step(cw_loop *loop, cw_timer *t);

static void keep(struct sconn *c, const char *buf, size_t n)
{
    c->res->srv.reply_bytes += (int64_t)n;
    if (c->rlen + n + 1 > c->rcap && c->rcap < REPLY_MAX) {
        size_t cap = c->rcap ? c->rcap : 4096;
        while (cap < c->rlen + n + 1 && cap < REPLY_MAX)
            cap *= 2;
        char *p = realloc(c->reply, cap);
        if (p) {
            c->reply = p;
            c->rcap = cap;
        }
    }
    size_t room = c->rcap > c->rlen + 1 ? c->rcap - c->rlen - 1 : 0;
    size_t k = n < room ? n : room;
    memcpy(c->reply + c->rlen, buf, k);
    c->rlen += k;
}

static void on_slow(cw_loop *loop, cw_timer *t)
{
    struct sconn *c = t->data;
    if (c->s)
        cw_stream_read_start(c->s);
}

static void on_read(cw_stream *s, ssize_t n, const char *buf)
{
    struct sconn *c = cw_stream_data(s);
    int64_t now = cw_now_ms();
    if (c->phase == SP_DONE || c->phase == SP_FDS || c->phase == SP_RESET_WAIT)
        return;
    if (n > 0) {
        keep(c, buf, (size_t)n);
        c->t_quiet = now;
        if (c->sc->slow) {
            cw_stream_read_stop(s);
            cw_timer_start(c->r->loop, &c->slow, now + c->r->o->slow_ms, on_slow);
        }
        if (c->phase == SP_READ && !c->sc->half_close && !c->sc->idle)
            cw_timer_start(c->r->loop, &c->timer, now + c->r->o->hang_ms, on_step);
        return;
    }
    /* Writing to a connection the server reset fails with EPIPE before
     * the reset itself is read: the same end. */
    int end = n == -EPIPE ? CW_END_RESET : cw_end_of_read(n);
    if (c->phase == SP_SETTLE && c->sc->reset) {   /* gone before our reset */
        note(c, PROBE_SKIP, "the server ended the connection (%s) before our reset",
             end == CW_END_EOF ? "FIN" : cw_end_name((enum cw_end)end));
        c->res->srv.end = end;
        c->res->srv.end_ms = now - c->t_start;
        done(c);
        return;
    }
    if (c->phase == SP_SETTLE && c->sc->half_close) {   /* before our FIN */
        c->res->srv.end = end;
        c->res->srv.end_ms = now - c->t_start;
        if (end == CW_END_EOF)
            note(c, PROBE_PASS, "the server closed first, %lldms after the connect",
                 (long long)(now - c->t_start));
        else
            note(c, PROBE_RST_CLOSE, "the server reset the connection %lldms after the "
                 "connect", (long long)(now - c->t_start));
        done(c);
        return;
    }
    ended(c, end, now);
}

static const struct cw_stream_handlers handlers = {.on_read = on_read, .on_closed = on_closed};

/* After the quiet time: half-close, or reset. */
static void after_settle(struct sconn *c, int64_t now)
{
    c->t_req = now;
    if (c->sc->half_close) {
        cw_stream_shutdown(c->s);
        c->phase = SP_READ;
        cw_timer_start(c->r->loop, &c->timer, now + c->r->o->grace_ms, on_step);
        return;
    }
    look(c);   /* its socket and holder before the reset */
    struct probe_sresult *v = &c->res->srv;
    if (v->local && v->pid && c->sinode) {
        int has;
        c->spid = v->pid;
        c->fds_before = (int)count_fds(c->spid, c->sinode, &has);
    }
    cw_stream_close(c->s, CW_CLOSE_ABORT, 0, NULL);
    c->s = NULL;
    c->phase = SP_FDS;
    cw_timer_start(c->r->loop, &c->timer, now + 10, on_step);
}

static void on_step(cw_loop *loop, cw_timer *t)
{
    struct sconn *c = t->data;
    int64_t now = cw_now_ms();
    const struct probe_opts *o = c->r->o;
    if (c->phase == SP_SETTLE) {
        int64_t until = c->t_quiet + o->settle_ms, bound = c->t_start + o->hang_ms;
        if (now < until && now < bound) {
            cw_timer_start(loop, t, until < bound ? until : bound, on_step);
            return;
        }
        after_settle(c, now);
    } else if (c->phase == SP_FDS) {
        if (judge_fds(c, now))
            done(c);
        else
            cw_timer_start(loop, t, now + 20, on_step);
    } else if (c->phase == SP_READ) {
        ended(c, CW_END_NONE, now);   /* the wait is over */
    } else if (c->phase == SP_RESET_WAIT) {
        if (who_reset(c) || now - c->t_end >= RESET_EVENT_WAIT_MS)
            judge_end(c);
        else
            cw_timer_start(loop, t, now + 20, on_step);
    }
}

/* The request, then (extra) 64 KiB more of it: one write, so that all of
 * it is queued at the server before it reads the first request. */
static void request(struct sconn *c, const char *d, size_t n)
{
    if (!c->sc->extra) {
        cw_stream_write(c->s, d, n);
        return;
    }
    const struct probe_opts *o = c->r->o;
    char *all = malloc(n + EXTRA_BYTES);
    if (!all) {
        cw_stream_write(c->s, d, n);
        return;
    }
    memcpy(all, d, n);
    /* --send's DATA again and again: requests the server would take */
    for (size_t i = 0; i < EXTRA_BYTES; i++)
        all[n + i] = o->send[i % o->send_len];
    cw_stream_write(c->s, all, n + EXTRA_BYTES);
    free(all);
}

static void on_dial(cw_stream *s, int status, void *data)
{
    struct sconn *c = data;
    const struct probe_opts *o = c->r->o;
    int64_t now = cw_now_ms();
    c->t_start = c->t_quiet = c->t_req = now;
    if (!s) {
        note(c, PROBE_NOCONN, "cannot connect to %s: %s", o->server, cw_strerror(status));
        c->r->open = 0;
        done(c);
        return;
    }
    c->s = s;
    c->r->open = 1;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(cw_stream_fd(s), (struct sockaddr *)&ss, &len) == 0)
        c->lport = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                  : ((struct sockaddr_in *)&ss)->sin_port);
    cw_stream_start(s, &handlers, c);
    look(c);   /* local? and whose: before a reset can take it away */
    const struct probe_sscenario *sc = c->sc;
    if (sc->send == 1 || sc->send == 2) {
        const char *d = sc->send == 2 && o->large ? o->large : o->send;
        size_t n = sc->send == 2 && o->large ? o->large_len : o->send_len;
        request(c, d, n);
    } else if (sc->send == 3) {
        cw_stream_write(s, o->send, o->send_len > 1 ? o->send_len / 2 : 1);
    }
    if (sc->half_close || sc->reset) {
        c->phase = SP_SETTLE;
        cw_timer_start(c->r->loop, &c->timer, now + o->settle_ms, on_step);
    } else {
        c->phase = SP_READ;
        cw_timer_start(c->r->loop, &c->timer, now + o->hang_ms, on_step);
    }
}

/* --- a run --- */

static void on_guard(cw_loop *loop, cw_timer *t)
{
    struct srun *r = t->data;
    struct sconn *c = &r->c;
    if (c->phase == SP_READ) {
        ended(c, CW_END_NONE, cw_now_ms());
    } else if (c->phase == SP_RESET_WAIT) {
        judge_end(c);
    } else if (c->phase != SP_DONE) {
        note(c, PROBE_HANG, "no verdict within the scenario's bound");
        done(c);
    }
    cw_loop_stop(loop);
}

/* Start the scenario's connection: a small receive buffer for the slow
 * reader, and no library timeout shorter than ours. */
static int dial(struct srun *r, struct sconn *c, int64_t t0)
{
    const struct probe_opts *o = r->o;
    struct cw_opts co;
    cw_opts_init(&co);
    if (c->sc->slow)
        co.rcvbuf = SLOW_RCVBUF;
    struct cw_stream_opts so;
    cw_stream_opts_init(&so);
    /* Our steps decide when we close, never the library's grace; a
     * large request to a slow server may take the whole hang limit. */
    so.close_grace_ms = 24 * 3600 * 1000;
    so.write_timeout_ms = (uint32_t)o->hang_ms;
    r->open = 1;   /* until the dial's callback says otherwise */
    return cw_stream_dial(r->loop, o->shost, (uint16_t)o->sport, &co, t0 + 5000, &so,
                          on_dial, c);
}

/* Run the loop until the scenario is judged and our stream closed. Every
 * phase has a timer; the guard bounds a server that trickles bytes
 * forever, and the wait for our own close. */
static void run_loop(struct srun *r, struct sconn *c, int64_t t0)
{
    const struct probe_opts *o = r->o;
    int64_t bound = t0 + 5000 + 2 * o->hang_ms + o->grace_ms + o->settle_ms;
    cw_timer_start(r->loop, &r->guard, bound, on_guard);
    while ((c->phase != SP_DONE || r->open) && !probe_interrupted &&
           cw_now_ms() < bound + 2000)
        if (cw_loop_run(r->loop) < 0 && errno != EINTR)
            break;
    if (c->phase != SP_DONE)
        done(c);
    cw_timer_start(r->loop, &r->guard, cw_now_ms() + 2000, on_guard);
    while (r->open && cw_now_ms() < bound + 4000)
        if (cw_loop_run(r->loop) < 0 && errno != EINTR)
            break;
    cw_timer_stop(r->loop, &r->guard);
}

static void run_one(struct srun *r, const struct probe_sscenario *sc, struct probe_result *res)
{
    memset(res, 0, sizeof *res);
    res->name = sc->name;
    res->close_ms = -1;
    res->srv.matched = -1;
    res->srv.fd = -1;
    int64_t t0 = cw_now_ms();
    struct sconn *c = &r->c;
    memset(c, 0, sizeof *c);
    c->r = r;
    c->sc = sc;
    c->res = res;
    c->timer.data = c->slow.data = c;
    int rc = dial(r, c, t0);
    if (rc < 0)
        note(c, PROBE_NOCONN, "cannot connect to %s: %s", r->o->server, cw_strerror(rc));
    else
        run_loop(r, c, t0);
    res->conns = c->lport ? 1 : 0;
    res->run_ms = cw_now_ms() - t0;
    free(c->reply);
    c->reply = NULL;
}

static void start_bpf(struct srun *r)
{
    /* all: a reset the kernel sent for data that came after the close
     * is named as such, not left unexplained */
    struct rst_watch_opts wo = {.pid = 0, .all = 1};
    if (r->o->no_bpf) {
        snprintf(r->bpf_why, sizeof r->bpf_why, "disabled by --no-bpf or CLOSEWISE_NO_BPF");
        return;
    }
    if (!r->listener_local) {
        snprintf(r->bpf_why, sizeof r->bpf_why, "the server is not local");
        return;
    }
    if (rst_watch_start(&r->watch, &wo, r->bpf_why, sizeof r->bpf_why) < 0)
        return;
    r->sym = sym_new();
}

static char about[400];

const char *probe_server_about(void)
{
    return about;
}

static void describe(const struct srun *r)
{
    if (!r->listener_local)
        snprintf(about, sizeof about, "not in this network namespace: judged from the wire");
    else if (r->watch)
        snprintf(about, sizeof about, "local, pid %d (%s); resets traced with BPF",
                 (int)r->lpid, r->lcomm);
    else
        snprintf(about, sizeof about, "local, pid %d (%s); resets not traced: %s",
                 (int)r->lpid, r->lcomm, r->bpf_why);
}

int probe_server_run(const struct probe_opts *o, struct probe_result *res)
{
    struct srun *r = calloc(1, sizeof *r);
    if (!r) {
        cli_error("probe: out of memory");
        return CLI_SYSTEM;
    }
    r->o = o;
    r->poll.data = r->guard.data = r;
    int rc = probe_open(&r->loop, &r->diag);
    if (rc != CLI_OK) {
        free(r);
        return rc;
    }
    struct cw_sock l;
    if (server_sock(r, 0, &l) > 0) {
        r->listener_local = 1;
        r->lpid = l.pid;
        snprintf(r->lcomm, sizeof r->lcomm, "%s", l.comm);
    }
    start_bpf(r);
    describe(r);
    cw_timer_start(r->loop, &r->poll, cw_now_ms() + 50, on_poll);
    for (size_t i = 0; i < o->nslist && !probe_interrupted; i++) {
        r->nrst = 0;
        run_one(r, o->slist[i], &res[i]);
    }
    cw_timer_stop(r->loop, &r->poll);
    rst_watch_stop(&r->watch);
    sym_free(&r->sym);
    cw_diag_close(&r->diag);
    cw_loop_free(&r->loop);
    free(r);
    return CLI_OK;
}
