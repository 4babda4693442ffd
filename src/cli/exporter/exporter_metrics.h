/* exporter_metrics.h - the exporter's snapshot: one refresh dumps the
 * kernel's TCP sockets, follows CLOSE_WAIT sockets by cookie across
 * refreshes, and renders everything as Prometheus text exposition format
 * (version 0.0.4). No I/O besides sock_diag and /proc: serving the text is
 * exporter_serve.c's job. */
#ifndef CW_CLI_EXPORTER_METRICS_H
#define CW_CLI_EXPORTER_METRICS_H

#include "../inspect/inspect.h"

#include <stddef.h>
#include <stdint.h>

struct xm_opts {
    int top_procs;     /* processes with their own series; the rest: "other" */
    int top_dests;     /* destinations with their own TIME_WAIT/port series */
    int exact;         /* try the BPF program for exact CLOSE_WAIT ages */
    struct insp_sel sel;   /* --netns (the filters are not used) */
};

typedef struct xm xm;

/* A growable text buffer; on allocation failure oom is set and further
 * appends are dropped, so the caller checks once at the end. */
struct xbuf {
    char *p;
    size_t len, cap;
    int oom;
};
void xb_printf(struct xbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void xb_free(struct xbuf *b);
/* A quoted label value, escaped; invalid UTF-8 and control bytes as '?'. */
void xb_label(struct xbuf *b, const char *s);

/* *out is owned by the caller and released with xm_free(). Checks that
 * the namespaces o->sel names can be opened (insp_open() prints why not).
 * Returns CLI_OK, or CLI_USAGE / CLI_SYSTEM after a one-line error. */
int xm_new(const struct xm_opts *o, xm **out);
void xm_free(xm **mp);

/* The cgroup v2 path of process pid and the container the inspector
 * derives from it (cw_cgroup_container()), "" each when unreadable: the
 * one source of the container and cgroup labels. */
void xm_container_labels(int pid, char *cgroup, size_t csize, char *container, size_t size);

/* NULL when exact CLOSE_WAIT ages are on, else why they are off. */
const char *xm_exact_why(const xm *m);

/* NULL when closewise_close_resets_total is exported (BPF), else why
 * not. */
const char *xm_resets_why(const xm *m);

/* Count the reset events waiting since the last call: every few hundred
 * ms between snapshots, so that the collector's ring buffer does not
 * fill. Returns 1 when there is anything to poll, 0 when not (no BPF). */
int xm_poll(xm *m);

/* Take a new snapshot and render it into out (appended). Errors of one
 * part (the dump, /proc/net/netstat, ...) are counted in
 * closewise_scrape_errors_total and the other parts still rendered.
 * Returns CW_OK, or -ENOMEM when out could not grow. */
int xm_refresh(xm *m, struct xbuf *out);

#endif
