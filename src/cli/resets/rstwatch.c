/* rstwatch.c - load resets.bpf.c, read its ring buffer, unload. */
#define _GNU_SOURCE
#include "rstwatch.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *rst_kind_name(uint32_t kind)
{
    static const char *const names[CW_RST_KIND_MAX] = {
        [CW_RST_OTHER] = "other",
        [CW_RST_UNREAD] = "unread",
        [CW_RST_LINGER0] = "linger0",
        [CW_RST_ABORT] = "abort",
        [CW_RST_AFTER_CLOSE] = "data-after-close",
        [CW_RST_LINGER2] = "fin-wait2-linger",
        [CW_RST_MEMORY] = "memory",
        [CW_RST_TIMEOUT] = "timeout",
        [CW_RST_NO_SOCKET] = "no-socket",
    };
    return kind < CW_RST_KIND_MAX ? names[kind] : "other";
}

#define RST_MAX_FRAMES 32

int rst_frames(struct sym *s, const struct cw_rst_event *e, struct sym_loc *out, int max)
{
    uint64_t pcs[RST_MAX_FRAMES];
    if (!e->pid || !e->ip || !s)
        return 0;
    struct sym_regs r = {.ip = e->ip, .sp = e->sp, .bp = e->bp, .bx = e->bx,
                         .r12 = e->r12, .r13 = e->r13, .r14 = e->r14, .r15 = e->r15};
    size_t len = e->stack_len <= sizeof e->stack ? e->stack_len : 0;
    /* A fork child still running its parent's image is read in the
     * parent's map: one map for all the children of a fork-per-connection
     * server (each child's own would be read, and its debug info loaded,
     * anew), and there when the child has exited right after its close. */
    pid_t map = (pid_t)e->pid;
    if (e->parent_image && e->ppid && sym_has(s, (pid_t)e->ppid, e->ip))
        map = (pid_t)e->ppid;
    int np = sym_unwind(s, map, (pid_t)e->tid, &r, e->stack, len, pcs,
                        max < RST_MAX_FRAMES ? max : RST_MAX_FRAMES);
    int n = 0;
    for (int i = 0; i < np && n < max; i++) {
        int k = sym_lookup(s, map, pcs[i], i > 0, &out[n], max - n);
        if (k < 0 && i > 0)
            break;
        n += k < 0 ? 1 : k;   /* an inlined call is a frame of its own */
    }
    return n;
}

char *rst_where(struct sym *s, const struct cw_rst_event *e, int depth, char *buf,
                size_t size)
{
    struct sym_loc fr[RST_MAX_FRAMES];
    int idx[RST_MAX_FRAMES];
    int nf = rst_frames(s, e, fr, RST_MAX_FRAMES);
    int np = sym_pick(fr, nf, idx, depth < RST_MAX_FRAMES ? depth : RST_MAX_FRAMES);
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < np && off < size; i++) {
        char f[400];
        sym_format(&fr[idx[i]], f, sizeof f);
        int k = snprintf(buf + off, size - off, "%s%s", i ? " < " : "", f);
        off += k > 0 ? (size_t)k : 0;
    }
    return buf;
}

#if CW_HAVE_BPF
#include <bpf/libbpf.h>

#include "resets.skel.h"

struct rst_watch {
    struct resets_bpf *skel;
    struct ring_buffer *rb;
    rst_watch_cb cb;
    void *arg;
    int stopped;
};

/* libbpf explains load failures in many lines on stderr; the command
 * says it in one, so libbpf stays quiet unless asked. */
__attribute__((format(printf, 2, 0)))
static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    if (!getenv("CLOSEWISE_BPF_DEBUG"))
        return 0;
    (void)level;
    return vfprintf(stderr, fmt, ap);
}

static void why_errno(char *why, size_t size, const char *what, int err)
{
    if (err == EPERM || err == EACCES)
        snprintf(why, size, "%s: permission denied (needs root, or CAP_BPF and CAP_PERFMON)",
                 what);
    else
        snprintf(why, size, "%s: %s", what, strerror(err));
}

static int on_sample(void *ctx, void *data, size_t size)
{
    struct rst_watch *w = ctx;
    if (size < sizeof(struct cw_rst_event))
        return 0;
    if (w->cb(w->arg, data)) {
        w->stopped = 1;
        return -ECANCELED;   /* libbpf stops consuming here */
    }
    return 0;
}

int rst_watch_start(struct rst_watch **out, const struct rst_watch_opts *o, char *why,
                    size_t why_size)
{
    *out = NULL;
    if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
        snprintf(why, why_size, "the kernel has no BTF (/sys/kernel/btf/vmlinux)");
        return -1;
    }
    libbpf_set_print(libbpf_log);
    struct rst_watch *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(why, why_size, "out of memory");
        return -1;
    }
    int err = 0;
    const char *step = "open";
    w->skel = resets_bpf__open();
    if (!w->skel) {
        err = errno;
        goto fail;
    }
    w->skel->rodata->target_tgid = o->pid > 0 ? (uint32_t)o->pid : 0;
    w->skel->rodata->want_all = o->all ? 1 : 0;
    step = "ring buffer size";
    if (o->ring_kib &&
        (err = -bpf_map__set_max_entries(w->skel->maps.events, o->ring_kib * 1024u)) != 0)
        goto fail;
    step = "load";
    if ((err = -resets_bpf__load(w->skel)) != 0)
        goto fail;
    step = "attach to tcp:tcp_send_reset";
    if ((err = -resets_bpf__attach(w->skel)) != 0)
        goto fail;
    step = "ring buffer";
    w->rb = ring_buffer__new(bpf_map__fd(w->skel->maps.events), on_sample, w, NULL);
    if (!w->rb) {
        err = errno;
        goto fail;
    }
    *out = w;
    return 0;
fail:
    why_errno(why, why_size, step, err ? err : EINVAL);
    rst_watch_stop(&w);
    return -1;
}

int rst_watch_poll(struct rst_watch *w, int timeout_ms, rst_watch_cb cb, void *arg)
{
    w->cb = cb;
    w->arg = arg;
    w->stopped = 0;
    int n = ring_buffer__poll(w->rb, timeout_ms);
    /* The program wakes us only for a backlog (see resets.bpf.c): after
     * the wait, read whatever arrived quietly. */
    if (n >= 0 && !w->stopped) {
        int m = ring_buffer__consume(w->rb);
        n = m < 0 ? m : n + m;
    }
    if (w->stopped)
        return RST_WATCH_STOPPED;
    if (n == -EINTR)
        return 0;
    return n < 0 ? -1 : n;
}

uint64_t rst_watch_drops(const struct rst_watch *w)
{
    return __atomic_load_n(&w->skel->bss->drops, __ATOMIC_RELAXED);
}

void rst_watch_stop(struct rst_watch **wp)
{
    struct rst_watch *w = *wp;
    if (!w)
        return;
    ring_buffer__free(w->rb);
    resets_bpf__destroy(w->skel);
    free(w);
    *wp = NULL;
}

#else /* !CW_HAVE_BPF */

struct rst_watch {
    int unused;
};

int rst_watch_start(struct rst_watch **out, const struct rst_watch_opts *o, char *why,
                    size_t why_size)
{
    (void)o;
    *out = NULL;
    snprintf(why, why_size, "closewise was built without BPF (CW_BPF=OFF)");
    return -1;
}

int rst_watch_poll(struct rst_watch *w, int timeout_ms, rst_watch_cb cb, void *arg)
{
    (void)w; (void)timeout_ms; (void)cb; (void)arg;
    return -1;
}

uint64_t rst_watch_drops(const struct rst_watch *w)
{
    (void)w;
    return 0;
}

void rst_watch_stop(struct rst_watch **w)
{
    *w = NULL;
}
#endif
