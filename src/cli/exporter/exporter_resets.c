/* exporter_resets.c - resets counted per (comm, container, reason) for
 * the exporter (exporter_resets.h), on the shared collector rstwatch.c. */
#define _GNU_SOURCE
#include "exporter_resets.h"

#include "../resets/rstwatch.h"
#include "exporter_metrics.h"

#include <closewise/closewise.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One label pair's counts per reason. */
struct xr_series {
    char comm[16];
    char container[128];
    uint64_t n[CW_RST_KIND_MAX];
};

struct xr {
    struct rst_watch *w;
    uint64_t netns;
    int top;
    struct xr_series *s;      /* s[0] is "other"; s[1..ns) the pairs */
    size_t ns;
    int last_pid;             /* container of the last event's process, */
    char last_container[128]; /* read once per burst */
};

static struct xr_series *series_of(xr *r, const char *comm, const char *container)
{
    for (size_t i = 1; i < r->ns; i++)
        if (!strcmp(r->s[i].comm, comm) && !strcmp(r->s[i].container, container))
            return &r->s[i];
    if (r->ns > (size_t)r->top)
        return &r->s[0];
    struct xr_series *s = &r->s[r->ns++];
    snprintf(s->comm, sizeof s->comm, "%s", comm);
    snprintf(s->container, sizeof s->container, "%s", container);
    return s;
}

static int on_event(void *arg, const struct cw_rst_event *e)
{
    xr *r = arg;
    if (!e->local || (r->netns && e->netns != (uint32_t)r->netns))
        return 0;
    if ((int)e->pid != r->last_pid) {
        r->last_pid = (int)e->pid;
        char cg[512];
        /* "" when it is gone: it may exit right after the close */
        xm_container_labels((int)e->pid, cg, sizeof cg, r->last_container,
                            sizeof r->last_container);
    }
    char comm[16];
    memcpy(comm, e->comm, sizeof comm);
    comm[15] = '\0';
    series_of(r, comm, r->last_container)->n[e->kind < CW_RST_KIND_MAX ? e->kind : 0]++;
    return 0;
}

int xr_open(xr **out, int top, uint64_t netns_ino, char *why, size_t size)
{
    *out = NULL;
    xr *r = calloc(1, sizeof *r);
    if (r)
        r->s = calloc((size_t)top + 1, sizeof *r->s);
    if (!r || !r->s) {
        free(r);
        snprintf(why, size, "out of memory");
        return -1;
    }
    /* 512 KiB: about 220 events between two polls 200 ms apart, 1,100
     * resets a second before any is dropped (and counted as dropped);
     * the 4 MiB default would add 8 MiB to the exporter's RSS (the ring
     * is mapped twice) for events it reads only to count. */
    struct rst_watch_opts o = {.ring_kib = 512};
    if (rst_watch_start(&r->w, &o, why, size) < 0) {
        free(r->s);
        free(r);
        return -1;
    }
    snprintf(r->s[0].comm, sizeof r->s[0].comm, "other");
    r->ns = 1;
    r->top = top;
    r->netns = netns_ino;
    *out = r;
    return 0;
}

void xr_poll(xr *r)
{
    if (r)
        rst_watch_poll(r->w, 0, on_event, r);
}

void xr_render(xr *r, struct xbuf *b)
{
    xb_printf(b, "# HELP closewise_close_resets_bpf_enabled 1 when the BPF program that names "
                 "the process behind each reset is loaded (closewise_close_resets_total is "
                 "then exported), 0 when it is not.\n"
                 "# TYPE closewise_close_resets_bpf_enabled gauge\n"
                 "closewise_close_resets_bpf_enabled %d\n",
              r != NULL);
    if (!r)
        return;
    xb_printf(b, "# HELP closewise_close_resets_total Connections a process's own close() "
                 "ended with a RST since the exporter started (a reply in flight may be "
                 "destroyed), per process name, container and reason (unread: closed with "
                 "unread input; linger0: SO_LINGER {1,0}); the first pairs seen have their "
                 "own series, later ones are summed in comm=\"other\".\n"
                 "# TYPE closewise_close_resets_total counter\n");
    for (size_t i = 1; i <= r->ns; i++) {
        const struct xr_series *s = &r->s[i % r->ns];   /* "other" last */
        for (int k = 0; k < CW_RST_KIND_MAX; k++) {
            if (!s->n[k])
                continue;
            xb_printf(b, "closewise_close_resets_total{comm=");
            xb_label(b, s->comm);
            xb_printf(b, ",container=");
            xb_label(b, s->container);
            xb_printf(b, ",reason=\"%s\"} %llu\n", rst_kind_name((uint32_t)k),
                      (unsigned long long)s->n[k]);
        }
    }
    xb_printf(b, "# HELP closewise_close_resets_dropped_total Reset events lost because the "
                 "collector's ring buffer was full (not counted above).\n"
                 "# TYPE closewise_close_resets_dropped_total counter\n"
                 "closewise_close_resets_dropped_total %llu\n",
              (unsigned long long)rst_watch_drops(r->w));
}

void xr_close(xr **rp)
{
    if (!*rp)
        return;
    rst_watch_stop(&(*rp)->w);
    free((*rp)->s);
    free(*rp);
    *rp = NULL;
}
