/* probe_run.c - one run of the client under test: start it, serve each of
 * its connections one scenario (each a cw_stream on a cw_loop, from a
 * cw_acceptor), sample the kernel, judge, and kill what is left. The verdict comes from the kernel and /proc, never from what the
 * client says: a connection is closed when no process of the client's
 * tree holds its socket any more. */
#define _GNU_SOURCE
#include "probe.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* After our FIN, a server drains this long for the client's FIN before it
 * closes its own side (what a graceful close does). */
#define LINGER_MS 1000
/* One run serves at most this many connections; a client reconnecting
 * faster than that is judged on the first ones. */
#define MAX_CONNS 256

volatile int probe_interrupted;

enum phase { PH_WAIT, PH_SETTLE, PH_SAY, PH_LINGER, PH_READ, PH_DONE };

struct run;

struct pconn {
    struct run *r;
    cw_stream *s;           /* our side, NULL once we closed it */
    cw_timer timer;         /* the scenario's next step (wait, drip) */
    int cport;              /* the client's local port */
    int idx;                /* scenario index, -1: extra, not judged */
    const struct probe_scenario *sc;
    enum phase phase;
    int64_t t_accept, t_action, t_eof, t_resolved, next_drip;
    int64_t t_quiet;        /* the last byte either way (or the accept) */
    size_t said;
    int got, got_line;      /* the client has sent bytes, a line */
    int eof;                /* ... and its FIN: nothing more to read */
    /* The client's socket as last sampled. */
    int cstate;             /* 0: not in the kernel's table */
    uint32_t inode, rqueue;
    pid_t pid;              /* holder in the tree, 0: none */
    int cfd;
    int held;               /* some process still has the socket open */
    int sampled, resolved, leaked, hung;
    int64_t hang_ms;
    struct probe_leak leak;
};

struct run {
    const struct probe_opts *o;
    cw_listener *l;
    int port;
    cw_loop *loop;
    cw_acceptor *acc;
    cw_timer sampler, stop_accepting;
    int rc;                 /* CLI_OK, or why the run stopped early */
    int open;               /* streams whose on_closed has not come yet */
    cw_diag *diag;
    const struct probe_scenario *const *list;
    size_t n;
    pid_t root;
    int status, root_done;
    int64_t t_start, deadline, last_event, next_sample, prev_sample;
    struct pconn c[MAX_CONNS];
    size_t nc;
};

/* --- starting the client --- */

static void child_exec(const struct probe_opts *o, int port, int errfd)
{
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);   /* the probe died: so does CMD */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);   /* ignored dispositions survive exec */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    dup2(null, STDIN_FILENO);
    if (o->show_output) {
        dup2(STDERR_FILENO, STDOUT_FILENO);
    } else {
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
    }
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    setenv("CW_PROBE_HOST", o->host, 1);
    setenv("CW_PROBE_PORT", p, 1);
    probe_where_child();
    execvp(o->cmd[0], o->cmd);
    int e = errno;
    if (write(errfd, &e, sizeof e) < 0)
        _exit(127);
    _exit(127);
}

static int spawn(struct run *r)
{
    int ep[2];
    if (pipe2(ep, O_CLOEXEC) < 0) {
        cli_error("probe: pipe: %s", strerror(errno));
        return CLI_SYSTEM;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        cli_error("probe: fork: %s", strerror(errno));
        close(ep[0]);
        close(ep[1]);
        return CLI_SYSTEM;
    }
    if (pid == 0)
        child_exec(r->o, r->port, ep[1]);
    setpgid(pid, pid);   /* also here, so no signal can race the child's */
    close(ep[1]);
    int e = 0;
    ssize_t n;
    while ((n = read(ep[0], &e, sizeof e)) < 0 && errno == EINTR)
        ;
    close(ep[0]);
    r->root = pid;
    if (n == (ssize_t)sizeof e) {
        waitpid(pid, &r->status, 0);
        r->root_done = 1;
        cli_error("probe: cannot run '%s': %s", r->o->cmd[0], strerror(e));
        return CLI_USAGE;
    }
    return CLI_OK;
}

/* --- serving one connection --- */

static void sample_at(struct run *r, int64_t t);

static void resolve(struct run *r, struct pconn *c, int64_t now)
{
    c->resolved = 1;
    /* The client's FIN on our socket dates its close better than the
     * sample that found the descriptor gone, unless an earlier sample
     * still saw it held (a shutdown() long before the close). */
    int fin_dates = c->t_eof && c->t_eof >= c->t_action && c->t_eof > r->prev_sample;
    c->t_resolved = fin_dates ? c->t_eof : now;
    if (c->leaked) {
        c->leak.closed_late = 1;
        c->leak.held_ms = c->t_resolved - c->t_action;
    }
    r->last_event = now;
}

/* The client's FIN (or reset) reached our socket. */
static void saw_end(struct pconn *c, int64_t now)
{
    c->t_eof = now;
    c->eof = 1;
    sample_at(c->r, now);   /* look soon */
}

/* End ours. deadline bounds the wait for the client's FIN; after that
 * FIN (or a reset) the close is immediate. */
static void close_ours(struct pconn *c, int how, int64_t deadline)
{
    if (c->s)
        cw_stream_close(c->s, how, deadline, NULL);
    c->s = NULL;
    c->phase = PH_DONE;
    cw_timer_stop(c->r->loop, &c->timer);
}

static void act(struct run *r, struct pconn *c, int64_t now)
{
    c->t_action = now;
    sample_at(r, now + 10);   /* a prompt close is timed closely */
    switch (c->sc->end) {
    case CW_END_GRACEFUL:
        if (c->sc->half_close) {
            cw_stream_shutdown(c->s);
            c->phase = PH_READ;
        } else {
            close_ours(c, CW_CLOSE_GRACEFUL, now + LINGER_MS);
            c->phase = PH_LINGER;
        }
        break;
    case CW_END_ABORT:
        close_ours(c, CW_CLOSE_ABORT, 0);
        break;
    default:   /* CW_END_NONE */
        c->t_action = 0;   /* nothing ended: the client has to */
        c->phase = PH_READ;
        break;
    }
}

/* Send the next part of sc->say. Returns 1 when all of it is out (or the
 * connection is gone: the scenario ends anyway), else 0 with c->timer
 * set for the next drip. */
static int say(struct run *r, struct pconn *c, int64_t now)
{
    const char *s = c->sc->say;
    size_t len = s ? strlen(s) : 0;
    while (c->said < len) {
        if (c->sc->drip && now < c->next_drip)
            return 0;
        size_t chunk = c->sc->drip ? 1 : len - c->said;
        if (cw_stream_write(c->s, s + c->said, chunk) < 0)
            return 1;
        c->said += chunk;
        c->t_quiet = now;
        c->next_drip = now + r->o->drip_ms;
    }
    return 1;
}

static void on_step(cw_loop *loop, cw_timer *t);

static void step(struct run *r, struct pconn *c, int64_t now)
{
    /* Act only once the client's socket is known: after a reset it is
     * gone from the kernel's table, and only its inode still tells
     * whether the client holds it. */
    if (!c->s || !c->sampled)
        return;
    if (c->phase == PH_WAIT) {
        int have = c->eof || (c->sc->wait_line ? c->got_line : c->got);
        int64_t until = c->t_accept + c->sc->wait_input_ms;
        if (!have && now < until) {
            cw_timer_start(r->loop, &c->timer, until, on_step);
            return;
        }
        c->phase = c->sc->settle ? PH_SETTLE : PH_SAY;
    }
    if (c->phase == PH_SETTLE) {
        /* Quiet for --settle; a client that never stops talking is ended
         * anyway once the hang limit has passed. */
        int64_t until = c->t_quiet + r->o->settle_ms;
        int64_t bound = c->t_accept + c->sc->wait_input_ms + r->o->hang_ms;
        if (now < until && now < bound) {
            cw_timer_start(r->loop, &c->timer, until < bound ? until : bound, on_step);
            return;
        }
        c->phase = PH_SAY;
    }
    if (c->phase == PH_SAY) {
        if (!say(r, c, now)) {
            cw_timer_start(r->loop, &c->timer, c->next_drip, on_step);
            return;
        }
        act(r, c, now);
    }
    if (c->phase == PH_READ && c->eof)
        close_ours(c, CW_CLOSE_GRACEFUL, now + LINGER_MS);
}

static void on_step(cw_loop *loop, cw_timer *t)
{
    struct pconn *c = t->data;
    step(c->r, c, cw_now_ms());
}

static void on_read(cw_stream *s, ssize_t n, const char *buf)
{
    struct pconn *c = cw_stream_data(s);
    int64_t now = cw_now_ms();
    if (n > 0) {
        c->t_quiet = now;
        c->got = 1;
        c->got_line |= memchr(buf, '\n', (size_t)n) != NULL;
    } else {
        enum cw_end end = cw_end_of_read(n);
        saw_end(c, now);
        /* A reset, or a FIN once our part is done (or was to wait for
         * the client): close ours at once, so the probe never holds a
         * CLOSE_WAIT socket for long. A client that only half-closed
         * still gets the rest of the scenario, bounded by its steps. */
        if (end != CW_END_EOF || c->phase >= PH_LINGER || c->sc->end == CW_END_NONE)
            close_ours(c, CW_CLOSE_GRACEFUL, now + LINGER_MS);
        /* silent answers a half-close with its FIN: from now on the
         * client has to close, like after any other FIN. */
        if (end == CW_END_EOF && c->sc->end == CW_END_NONE && !c->t_action)
            c->t_action = now;
    }
    step(c->r, c, now);
}

/* Our side is closed. A graceful close that saw the client's FIN, or a
 * reset, during the linger dates the client's close. */
static void on_closed(cw_stream *s, int how)
{
    struct pconn *c = cw_stream_data(s);
    enum cw_end end = cw_stream_end(s);
    c->r->open--;
    if (!c->eof && (end == CW_END_GRACEFUL || end == CW_END_RESET))
        saw_end(c, cw_now_ms());
}

static const struct cw_stream_handlers handlers = {
    .on_read = on_read, .on_closed = on_closed,
};

static int peer_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* Scenario for the i-th connection: the run's one scenario, or with
 * --reuse the i-th; later connections are ended at once, unjudged. */
static void assign(struct run *r, struct pconn *c, size_t i)
{
    if (!r->o->reuse) {
        c->idx = 0;
        c->sc = r->list[0];
    } else if (i < r->n) {
        c->idx = (int)i;
        c->sc = r->list[i];
    } else {
        c->idx = -1;
        c->sc = &probe_scenarios[0];
    }
}

/* The acceptor is freed outside its own callback; later connections
 * wait in the kernel's backlog, unserved. */
static void on_stop_accepting(cw_loop *loop, cw_timer *t)
{
    struct run *r = t->data;
    cw_acceptor_free(&r->acc);
}

static void on_accept(cw_acceptor *a, cw_stream *s, void *data)
{
    struct run *r = data;
    int64_t now = cw_now_ms();
    if (r->nc == MAX_CONNS) {   /* the one accepted too many */
        cw_stream_close(s, CW_CLOSE_GRACEFUL, now + LINGER_MS, NULL);
        cw_timer_start(r->loop, &r->stop_accepting, 0, on_stop_accepting);
        return;
    }
    struct pconn *c = &r->c[r->nc];
    memset(c, 0, sizeof *c);
    c->r = r;
    c->s = s;
    c->timer.data = c;
    c->cport = peer_port(cw_stream_fd(s));
    c->t_accept = c->t_quiet = now;
    assign(r, c, r->nc++);
    r->open++;
    r->last_event = now;
    sample_at(r, now);   /* learn the client's socket early */
    cw_stream_start(s, &handlers, c);
}

/* --- judging from the kernel --- */

static const struct probe_fd *holder(const struct probe_fd *v, size_t n, uint32_t ino)
{
    for (size_t i = 0; ino && i < n; i++)
        if (v[i].inode == ino)
            return &v[i];
    return NULL;
}

/* The client's end of c. A port can show twice: the socket we know by
 * its inode, and a TIME_WAIT twin (from an earlier connection, or this
 * one's own after a half-close). The live socket wins. */
static const struct cw_sock *client_sock(const struct cw_sock *v, size_t n,
                                         const struct pconn *c)
{
    const struct cw_sock *best = NULL;
    for (size_t i = 0; i < n; i++) {
        if (v[i].sport != c->cport)
            continue;
        if (c->inode && v[i].inode == c->inode)
            return &v[i];
        if (!best || (best->inode == 0 && v[i].inode != 0))
            best = &v[i];
    }
    return best;
}

static void note_leak(struct run *r, struct pconn *c, int64_t now)
{
    if (!c->leaked) {
        c->leaked = 1;
        c->leak.pid = c->pid;
        c->leak.fd = c->cfd;
        probe_comm(c->pid, c->leak.comm);
    }
    c->leak.state = c->cstate;
    c->leak.rqueue = c->rqueue;
    if (!c->leak.where[0])
        probe_where_explain(c->pid, c->cfd, c->inode, c->rqueue > 0, c->leak.where,
                            sizeof c->leak.where);
    c->leak.held_ms = now - c->t_action;
}

static void judge(struct run *r, struct pconn *c, int64_t now)
{
    if (!c->held) {
        resolve(r, c, now);
        return;
    }
    if (c->hung)
        return;
    /* Past the grace with our FIN (or reset) unanswered by a close: the
     * socket sits in CLOSE_WAIT, or the connection is over (reset, or
     * both FINs exchanged after the client's shutdown) while the
     * descriptor is still open. Only these states are still waiting for
     * something from us. */
    int stuck = c->cstate != CW_TCP_ESTABLISHED && c->cstate != CW_TCP_SYN_SENT &&
                c->cstate != CW_TCP_FIN_WAIT1 && c->cstate != CW_TCP_FIN_WAIT2;
    if (c->t_action && stuck && now - c->t_action > r->o->grace_ms)
        note_leak(r, c, now);
    if (c->sc->end == CW_END_NONE && !c->t_action && now - c->t_accept > r->o->hang_ms) {
        c->hung = 1;
        c->hang_ms = now - c->t_accept;
        if (r->o->reuse && c->s)
            cw_stream_shutdown(c->s);   /* let the client go on to the next */
    }
}

static void update(struct run *r, struct pconn *c, const struct cw_sock *v, size_t nv,
                   const struct probe_fd *fds, size_t nf, int64_t now)
{
    const struct cw_sock *s = client_sock(v, nv, c);
    c->sampled = 1;
    c->cstate = s ? s->state : 0;
    if (s && s->inode)
        c->inode = s->inode;
    if (s)
        c->rqueue = s->rqueue;
    const struct probe_fd *h = holder(fds, nf, c->inode);
    c->pid = h ? h->pid : 0;
    c->cfd = h ? h->fd : -1;
    /* A socket with an inode still has a file: if no process of the tree
     * has it, one we cannot see does (an unreadable /proc entry, or a
     * process it was passed to). That is not a close. */
    c->held = h || (s && s->inode);
    judge(r, c, now);
}

static int sample(struct run *r, cw_diag *d, int64_t now)
{
    pid_t *pids;
    int np = probe_tree_pids(&pids);
    if (np < 0) {
        cli_error("probe: cannot read /proc");
        return CLI_SYSTEM;
    }
    struct probe_fd *fds;
    int nf = probe_tree_fds(pids, (size_t)np, &fds);
    free(pids);
    struct cw_diag_filter f;
    cw_diag_filter_init(&f);
    /* The client's port tells its sockets apart; no address filter, so
     * a wildcard or IPv4-mapped address cannot hide one. */
    f.dport = r->port;
    struct cw_sock *v = NULL;
    size_t nv = 0;
    int rc = cw_diag_dump(d, &f, &v, &nv);
    if (rc < 0) {
        free(fds);
        cli_error("probe: sock_diag dump failed: %s", cw_strerror(rc));
        return CLI_SYSTEM;
    }
    for (size_t i = 0; i < r->nc; i++)
        if (!r->c[i].resolved)
            update(r, &r->c[i], v, nv, fds, (size_t)nf, now);
    r->prev_sample = now;
    free(v);
    free(fds);
    return CLI_OK;
}

/* --- when a run is over --- */

static int tree_gone(struct run *r)
{
    if (!r->root_done)
        return 0;
    pid_t *pids;
    int n = probe_tree_pids(&pids);
    free(pids);
    return n == 0;
}

static int decided(const struct pconn *c)
{
    return c->resolved || c->leaked || c->hung;
}

static int over(struct run *r, int64_t now)
{
    if (probe_interrupted || now >= r->deadline)
        return 1;
    size_t judged = 0, done = 0;
    for (size_t i = 0; i < r->nc; i++) {
        if (r->c[i].idx < 0)
            continue;
        judged++;
        done += decided(&r->c[i]);
        if (!r->o->reuse && (r->c[i].leaked || r->c[i].hung))
            return 1;   /* one is enough for the verdict */
    }
    if (r->o->reuse)
        return judged == r->n && done == judged;
    /* Quiet for a grace period with every connection closed: the client
     * has answered the scenario. */
    return judged && done == judged && now - r->last_event >= r->o->grace_ms;
}

static int64_t scenario_bound(const struct probe_opts *o, const struct probe_scenario *sc)
{
    int64_t drip = sc->drip && sc->say ? (int64_t)strlen(sc->say) * o->drip_ms : 0;
    int64_t settle = sc->settle ? o->hang_ms : 0;   /* see PH_SETTLE */
    return sc->wait_input_ms + drip + settle + o->hang_ms + o->grace_ms + 1000;
}

static int64_t sample_interval(const struct probe_opts *o)
{
    int64_t t = o->grace_ms / 10;
    return t < 20 ? 20 : t > 100 ? 100 : t;
}

static void on_sample(cw_loop *loop, cw_timer *t);

/* Sample at t, or earlier if a sample is due earlier. */
static void sample_at(struct run *r, int64_t t)
{
    if (t < r->next_sample || !cw_timer_active(&r->sampler)) {
        r->next_sample = t;
        cw_timer_start(r->loop, &r->sampler, t, on_sample);
    }
}

static void on_sample(cw_loop *loop, cw_timer *t)
{
    struct run *r = t->data;
    int64_t now = cw_now_ms();
    probe_reap(r->root, &r->status, &r->root_done);
    int rc = sample(r, r->diag, now);
    if (rc != CLI_OK || tree_gone(r) || over(r, now)) {
        r->rc = rc;
        cw_loop_stop(loop);
        return;
    }
    r->next_sample = now + sample_interval(r->o);
    cw_timer_start(loop, t, r->next_sample, on_sample);
    for (size_t i = 0; i < r->nc; i++)
        step(r, &r->c[i], now);
}

static int serve(struct run *r)
{
    struct cw_stream_opts so;
    cw_stream_opts_init(&so);
    /* The scenario decides when our side closes, never the library:
     * the run's own bounds end every connection. */
    so.close_grace_ms = 24 * 3600 * 1000;
    int rc = cw_acceptor_new(r->loop, r->l, &so, on_accept, r, &r->acc);
    if (rc < 0) {
        cli_error("probe: cannot accept: %s", cw_strerror(rc));
        return CLI_SYSTEM;
    }
    sample_at(r, cw_now_ms());
    if (cw_loop_run(r->loop) < 0) {
        cli_error("probe: event loop failed: %s", strerror(errno));
        return CLI_SYSTEM;
    }
    return r->rc;
}

static void on_stop(cw_loop *loop, cw_timer *t)
{
    cw_loop_stop(loop);
}

/* The client's exit closed whatever it still held. Ours close now, and
 * the loop runs until every on_closed has come (bounded). */
static void finish(struct run *r, int64_t now)
{
    cw_acceptor_free(&r->acc);
    cw_timer_stop(r->loop, &r->sampler);
    cw_timer_stop(r->loop, &r->stop_accepting);
    for (size_t i = 0; i < r->nc; i++) {
        struct pconn *c = &r->c[i];
        if (!c->resolved && !c->hung && !c->leaked)
            resolve(r, c, now);
        close_ours(c, CW_CLOSE_GRACEFUL, now);
    }
    while (r->open > 0 && cw_now_ms() < now + 2 * LINGER_MS) {
        cw_timer_start(r->loop, &r->sampler, cw_now_ms() + 10, on_stop);
        cw_loop_run(r->loop);
    }
    /* Connections still in the accept queue were never served. */
    int fd;
    while ((fd = accept4(cw_listener_fd(r->l), NULL, NULL,
                         SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0)
        close(fd);
}

static void result_of(const struct run *r, size_t k, struct probe_result *res)
{
    memset(res, 0, sizeof *res);
    res->sc = r->list[k];
    res->name = res->sc->name;
    res->close_ms = -1;
    res->pid = r->root;
    res->status = r->status;
    for (size_t i = 0; i < r->nc; i++) {
        const struct pconn *c = &r->c[i];
        if (c->idx != (int)k)
            continue;
        res->conns++;
        if (c->leaked && !res->leaks++)
            res->leak = c->leak;
        if (c->hung && !res->hang_ms)
            res->hang_ms = c->hang_ms;
        /* silent: how long the client waited before it gave up */
        int64_t from = c->sc->end == CW_END_NONE ? c->t_accept : c->t_action;
        if (c->resolved && from && !c->leaked && !c->hung &&
            c->t_resolved - from > res->close_ms)
            res->close_ms = c->t_resolved - from;
        res->closed_first += c->resolved && !from;
    }
    res->verdict = res->leaks ? PROBE_LEAK
                 : res->hang_ms ? PROBE_HANG
                 : res->conns ? PROBE_PASS : PROBE_NOCONN;
    /* A close time says how fast the client closed: not for a verdict
     * that says it did not (it would be another connection's close). */
    if (res->verdict != PROBE_PASS)
        res->close_ms = -1;
}

int probe_open(cw_loop **loop, cw_diag **diag)
{
    int rc = cw_loop_new(loop);
    if (rc < 0) {
        cli_error("probe: cannot create the event loop: %s", cw_strerror(rc));
        return CLI_SYSTEM;
    }
    rc = cw_diag_open(diag);
    if (rc < 0) {
        cw_loop_free(loop);
        cli_error("probe: cannot open sock_diag netlink socket: %s", cw_strerror(rc));
        return CLI_SYSTEM;
    }
    return CLI_OK;
}

int probe_run(const struct probe_opts *o, cw_listener *l, int port,
              const struct probe_scenario *const *list, size_t n,
              struct probe_result *res)
{
    struct run *r = calloc(1, sizeof *r);
    if (!r) {
        cli_error("probe: out of memory");
        return CLI_SYSTEM;
    }
    r->o = o;
    r->l = l;
    r->port = port;
    r->list = list;
    r->n = n;
    r->sampler.data = r->stop_accepting.data = r;
    int rc = probe_open(&r->loop, &r->diag);
    if (rc != CLI_OK) {
        free(r);
        return rc;
    }
    r->t_start = r->last_event = r->next_sample = cw_now_ms();
    r->deadline = r->t_start;
    for (size_t i = 0; i < n; i++)
        r->deadline += scenario_bound(o, list[i]);
    rc = spawn(r);
    if (rc == CLI_OK)
        rc = serve(r);
    int was_done = r->root_done;
    if (!r->root_done || !tree_gone(r))
        probe_tree_kill(r->root, &r->status, &r->root_done);
    finish(r, cw_now_ms());
    for (size_t k = 0; k < n; k++) {
        result_of(r, k, &res[k]);
        res[k].killed = !was_done;
    }
    cw_diag_close(&r->diag);
    cw_loop_free(&r->loop);
    free(r);
    return rc;
}
