/* demo_rst.c - part 2 of `closewise demo` names the line of the server
 * whose close() sent each RST: the resets collector (rstwatch.c, BPF on
 * tcp:tcp_send_reset) hands over the closer's user stack, symbolized
 * while the server still runs. Without BPF the demo says it cannot. */
#define _GNU_SOURCE
#include "../cli.h"
#include "../resets/rstwatch.h"
#include "demo.h"

#include <string.h>

void demo_rst_start(struct demo *d)
{
    struct rst_watch_opts o = {0};
    d->sym = sym_new();
    if (!d->sym)
        snprintf(d->rst_why, sizeof d->rst_why, "out of memory");
    else if (rst_watch_start(&d->rw, &o, d->rst_why, sizeof d->rst_why) == 0) {
        d->rst_bpf = 1;
        return;
    }
    sym_free(&d->sym);
}

struct poll_ctx {
    struct demo *d;
    struct demo_case *c;
};

static int on_reset(void *arg, const struct cw_rst_event *e)
{
    struct poll_ctx *p = arg;
    struct demo_case *c = p->c;
    if (!e->local || (pid_t)e->pid != c->server_pid)
        return 0;   /* another process's reset, or a client's */
    c->rsts++;
    char at[sizeof c->where[0].at];
    rst_where(p->d->sym, e, 2, at, sizeof at);
    if (!at[0])
        snprintf(at, sizeof at, "(stack not readable)");
    int i = 0;
    while (i < c->nwhere && strcmp(c->where[i].at, at))
        i++;
    if (i == c->nwhere) {
        int max = (int)(sizeof c->where / sizeof c->where[0]);
        if (c->nwhere == max)
            i = max - 1;   /* more lines than room: counted with the last */
        else
            snprintf(c->where[c->nwhere++].at, sizeof at, "%s", at);
    }
    c->where[i].n++;
    return 0;
}

void demo_rst_poll(struct demo *d, struct demo_case *c, int timeout_ms)
{
    struct poll_ctx p = {d, c};
    if (d->rw)
        rst_watch_poll(d->rw, timeout_ms, on_reset, &p);
}

void demo_rst_print(const struct demo *d, const struct demo_case *c)
{
    if (c->graceful)
        return;
    if (!d->rst_bpf) {
        fprintf(d->out, "      (BPF unavailable: cannot name the line; %s)\n", d->rst_why);
        return;
    }
    if (!c->rsts) {
        fprintf(d->out, "      no RST from the server's close() was seen\n");
        return;
    }
    for (int i = 0; i < c->nwhere; i++)
        fprintf(d->out, "      %d RST%s sent by the server's close() at %s\n", c->where[i].n,
                c->where[i].n == 1 ? "" : "s", c->where[i].at);
}

void demo_rst_stop(struct demo *d)
{
    rst_watch_stop(&d->rw);
    sym_free(&d->sym);
}
