/* rstwatch.h - collect the TCP resets the kernel sends, as they happen,
 * with BPF (src/bpf/resets.bpf.c on tcp:tcp_send_reset). A small
 * start/poll/stop API so that every command that wants to name the close()
 * behind a reset (resets, later probe --server, the exporter) shares it.
 * Built without BPF (CW_HAVE_BPF=0), rst_watch_start always fails and
 * says why. */
#ifndef CW_CLI_RSTWATCH_H
#define CW_CLI_RSTWATCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../../bpf/resets.h"
#include "../symbolize.h"

struct rst_watch;

struct rst_watch_opts {
    pid_t pid;      /* only resets this process's close() caused; 0 = any */
    int all;        /* also resets not caused by a local close */
    unsigned ring_kib;  /* ring buffer size, a power of two >= 4 KiB (0:
                           4 MiB); its pages count in the caller's RSS */
};

/* Called for each event; return nonzero to stop rst_watch_poll early
 * (the events not yet handled stay queued for the next poll). */
typedef int (*rst_watch_cb)(void *arg, const struct cw_rst_event *e);

/* Load and attach the BPF program. On success *out owns it (free with
 * rst_watch_stop) and 0 is returned. On failure returns -1 with a one-line
 * reason in why (e.g. "needs root (CAP_BPF and CAP_PERFMON)"); *out is
 * NULL. */
int rst_watch_start(struct rst_watch **out, const struct rst_watch_opts *o, char *why,
                    size_t why_size);

/* Wait up to timeout_ms (0 = don't wait) for events and hand each to cb.
 * Events may wait in the kernel until the next call: poll at least every
 * 100 ms or so.
 * Returns the number of events handled (0 also when a signal cut the
 * wait short), RST_WATCH_STOPPED when cb asked to stop, or -1 on error. */
#define RST_WATCH_STOPPED (-2)
int rst_watch_poll(struct rst_watch *w, int timeout_ms, rst_watch_cb cb, void *arg);

/* Events lost because the ring buffer was full, since start. */
uint64_t rst_watch_drops(const struct rst_watch *w);

/* Detach and unload (nothing is pinned); *w becomes NULL. */
void rst_watch_stop(struct rst_watch **w);

/* What kind means, in a few words ("closed with unread input"). */
const char *rst_kind_name(uint32_t kind);

/* The user stack of the close() behind e, unwound from the event's copy
 * of the stack and symbolized while e->pid still lives (or, for a fork
 * child on its parent's image, in the parent's map): up to max frames
 * into out, innermost first, inlined calls included (sym_lookup); returns
 * how many (0 for a reset without a local process). A frame outside every
 * module ends it: the unwinder went astray. */
int rst_frames(struct sym *s, const struct cw_rst_event *e, struct sym_loc *out, int max);

/* "file:line (function)" of the line that asked for the close() (the
 * first frame sym_pick names: neither the C library nor libclosewise's
 * own close), then " < " and its callers, at most depth frames, into buf;
 * "" when the stack is unknown. Returns buf. */
char *rst_where(struct sym *s, const struct cw_rst_event *e, int depth, char *buf,
                size_t size);

#endif
