/* probe_where.c - `probe --where`: the client runs with
 * libclosewise-trace.so preloaded (src/cli/trace/), and a LEAK names the
 * line of code behind it: the read that returned end of stream or a reset
 * and went on without closing, or, when our FIN was never read, the last
 * read before it. One probe, one record file, shared by every run. */
#define _GNU_SOURCE
#include "probe.h"
#include "../trace/trace.h"

#include <string.h>

static struct {
    int on;                 /* asked for, and CMD can be traced */
    struct trec_launch launch;
    struct trec *rec;
    char note[300];         /* why not, when asked for */
} w;

void probe_where_init(int enabled, char *const cmd[])
{
    memset(&w, 0, sizeof w);
    if (!enabled)
        return;
    if (trec_launch_prepare(&w.launch, cmd[0]) < 0) {
        snprintf(w.note, sizeof w.note, "no trace: %s", w.launch.why);
        return;
    }
    w.rec = trec_open(w.launch.file);
    if (!w.rec) {
        trec_launch_done(&w.launch);
        snprintf(w.note, sizeof w.note, "no trace: cannot read the record file");
        return;
    }
    w.on = 1;
}

void probe_where_child(void)
{
    if (w.on)
        trec_launch_env(&w.launch);
}

void probe_where_explain(pid_t pid, int fd, uint32_t inode, int rqueue, char *buf,
                         size_t size)
{
    buf[0] = '\0';
    if (!w.on) {
        snprintf(buf, size, "%s", w.note);
        return;
    }
    trec_poll(w.rec);
    char site[256];
    const struct trec_end *e = inode ? trec_find(w.rec, inode) : NULL;
    if (e) {
        trec_site(w.rec, e->pid, &e->at, site, sizeof site);
        snprintf(buf, size, "%s returned by %s() at %s and never closed",
                 e->eof ? "EOF" : "ECONNRESET", e->func, site);
    } else if (pid && trec_last_read(w.rec, pid, fd, inode, site, sizeof site) == 0) {
        snprintf(buf, size, "never read after our %s; last read at %s",
                 rqueue ? "FIN" : "reset", site);
    } else if (pid && !trec_started(w.rec, pid)) {
        snprintf(buf, size, "no trace: pid %d did not load libclosewise-trace.so", (int)pid);
    } else {
        snprintf(buf, size, "never read after our %s; no read of it seen",
                 rqueue ? "FIN" : "reset");
    }
}

void probe_where_done(void)
{
    trec_free(&w.rec);
    trec_launch_done(&w.launch);
}
