/* trace_records.c - the lines libclosewise-trace.so appended to a record
 * file (trace_format.h), read as they come, and their stacks symbolized
 * with symbolize.c: from the module files and load biases the process
 * recorded (it may be gone), or from a live process's own table. */
#define _GNU_SOURCE
#include "trace.h"
#include "../symbolize.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

struct module {
    pid_t pid;
    int idx, stale;         /* stale: pid has exec'ed since */
    uint64_t bias;
    char *path;
};

struct proc {
    pid_t pid;
    uint64_t table;
    int nslots, slotsize, version;
};

/* Every traced process appends a line or two per socket that ends (about
 * 1 KB with its stacks), so a long trace would grow the file without
 * bound: once CW__TREC_ROTATE bytes have been read, a fresh empty file
 * takes the path (rename) and the one read so far is let go. */
#define CW__TREC_ROTATE (1 << 20)

/* One generation of the record file: its descriptor and the partial line
 * read at its end (a concurrent append may be seen half written). */
struct trec_src {
    int fd;                 /* -1: none */
    char buf[65536];
    size_t len;
    size_t bytes;           /* read from it so far */
};

struct trec {
    char path[4096];
    struct trec_src cur;
    /* The generation before cur: a writer that opened it just before the
     * rename appends there, so it is read until the next rotation. */
    struct trec_src old;
    struct module *mods;
    size_t nmods, capmods;
    struct proc *procs;
    size_t nprocs, capprocs;
    struct trec_end *ends;
    size_t nends, capends;
    struct sym *sym;
    struct trec_stats stats;
};

static int grow(void **v, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 16;
    void *p = realloc(*v, c * size);
    if (!p)
        return -1;
    *v = p;
    *cap = c;
    return 0;
}

struct trec *trec_open(const char *path)
{
    struct trec *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->old.fd = -1;
    t->cur.fd = strlen(path) < sizeof t->path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (t->cur.fd >= 0)
        memcpy(t->path, path, strlen(path) + 1);
    t->sym = sym_new();
    if (t->cur.fd < 0 || !t->sym) {
        trec_free(&t);
        return NULL;
    }
    return t;
}

void trec_free(struct trec **tp)
{
    struct trec *t = *tp;
    if (!t)
        return;
    if (t->cur.fd >= 0)
        close(t->cur.fd);
    if (t->old.fd >= 0)
        close(t->old.fd);
    for (size_t i = 0; i < t->nmods; i++)
        free(t->mods[i].path);
    free(t->mods);
    free(t->procs);
    free(t->ends);
    sym_free(&t->sym);
    free(t);
    *tp = NULL;
}

/* The module table's entry for M index idx of pid, -1 if none. */
static int module_ref(const struct trec *t, pid_t pid, int idx)
{
    for (size_t i = t->nmods; idx >= 0 && i-- > 0;)
        if (t->mods[i].pid == pid && t->mods[i].idx == idx && !t->mods[i].stale)
            return (int)i;
    return -1;
}

static void on_process(struct trec *t, char *p)
{
    struct proc pr = {0};
    int ppid;
    if (sscanf(p, "%d %d %" SCNx64 " %d %d %d", &pr.pid, &ppid, &pr.table, &pr.nslots,
               &pr.slotsize, &pr.version) != 6)
        return;
    for (size_t i = 0; i < t->nmods; i++)
        if (t->mods[i].pid == pr.pid)
            t->mods[i].stale = 1;   /* a new image (exec) or a fork child's own list */
    for (size_t i = 0; i < t->nprocs; i++)
        if (t->procs[i].pid == pr.pid) {
            t->procs[i] = pr;
            return;
        }
    if (grow((void **)&t->procs, &t->capprocs, t->nprocs, sizeof pr) == 0)
        t->procs[t->nprocs++] = pr;
}

static void on_module(struct trec *t, char *p)
{
    struct module m = {0};
    int off = 0;
    if (sscanf(p, "%d %d %" SCNx64 " %n", &m.pid, &m.idx, &m.bias, &off) != 3 || !off)
        return;
    if (grow((void **)&t->mods, &t->capmods, t->nmods, sizeof m) < 0 ||
        !(m.path = strdup(p + off)))
        return;
    t->mods[t->nmods++] = m;
}

/* "N pc:idx ..." into s; returns the rest of the line. */
static char *parse_stack(struct trec *t, pid_t pid, char *p, struct trec_stack *s)
{
    char *end;
    long n = strtol(p, &end, 10);
    s->n = 0;
    for (long i = 0; i < n && end != p; i++) {
        p = end;
        uint64_t pc = strtoull(p, &end, 16);
        if (*end != ':')
            break;
        int idx = (int)strtol(end + 1, &end, 10);
        if (s->n < CW_TRACE_DEPTH) {
            s->pc[s->n] = pc;
            s->mod[s->n++] = module_ref(t, pid, idx);
        }
    }
    return end;
}

static void on_end(struct trec *t, char *p)
{
    struct trec_end e = {0};
    char kind[8];
    int off = 0;
    if (sscanf(p, "%d %d %" SCNu64 " %" SCNd64 " %7s %15s %n", &e.pid, &e.fd, &e.ino,
               &e.t_ms, kind, e.func, &off) != 6 || !off)
        return;
    e.eof = !strcmp(kind, "eof");
    p = parse_stack(t, e.pid, p + off, &e.at);
    p = strchr(p, '|');
    if (p)
        parse_stack(t, e.pid, p + 1, &e.last);
    if (grow((void **)&t->ends, &t->capends, t->nends, sizeof e) == 0)
        t->ends[t->nends++] = e;
}

static void on_closed(struct trec *t, char *p)
{
    pid_t pid;
    int fd;
    uint64_t ino;
    int64_t ms;
    if (sscanf(p, "%d %d %" SCNu64 " %" SCNd64, &pid, &fd, &ino, &ms) != 4)
        return;
    for (size_t i = t->nends; i-- > 0;)
        if (t->ends[i].ino == ino && t->ends[i].pid == pid && t->ends[i].fd == fd) {
            if (!t->ends[i].t_closed)
                t->ends[i].t_closed = ms;
            return;
        }
}

static void on_line(struct trec *t, char *line)
{
    if (!line[0] || line[1] != ' ')
        return;
    switch (line[0]) {
    case 'P': on_process(t, line + 2); break;
    case 'M': on_module(t, line + 2); break;
    case 'E': on_end(t, line + 2); break;
    case 'C': on_closed(t, line + 2); break;
    }
}

static void read_src(struct trec *t, struct trec_src *r)
{
    while (r->fd >= 0) {
        ssize_t n = read(r->fd, r->buf + r->len, sizeof r->buf - 1 - r->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        r->bytes += (size_t)n;
        r->len += (size_t)n;
        r->buf[r->len] = '\0';
        char *p = r->buf, *nl;
        while ((nl = memchr(p, '\n', r->len - (size_t)(p - r->buf)))) {
            *nl = '\0';
            on_line(t, p);
            p = nl + 1;
        }
        r->len -= (size_t)(p - r->buf);
        memmove(r->buf, p, r->len);
        if (r->len == sizeof r->buf - 1)
            r->len = 0;   /* a line longer than any the library writes */
    }
}

/* A fresh empty file at t->path, as writable by every traced process as
 * the first one (trec_launch_prepare); cur, read to its end, becomes old.
 * On failure the file just goes on growing. A writer that opened the file
 * two generations back and has not written yet loses its line. */
static void rotate(struct trec *t)
{
    char tmp[4096 + 16];
    snprintf(tmp, sizeof tmp, "%s.XXXXXX", t->path);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat sb;
    if (fstat(t->cur.fd, &sb) < 0 || fchmod(fd, sb.st_mode & 07777) < 0 ||
        rename(tmp, t->path) < 0) {
        unlink(tmp);
        close(fd);
        return;
    }
    if (t->old.fd >= 0)
        close(t->old.fd);
    t->old = t->cur;
    t->cur.fd = fd;
    t->cur.len = t->cur.bytes = 0;
}

static void count(struct trec *t)
{
    struct trec_stats *st = &t->stats;
    st->procs = t->nprocs;
    st->mods = t->nmods;
    st->lists = 0;
    for (size_t i = 0; i < t->nmods; i++)
        st->lists += t->mods[i].idx == 0;
    st->procs_max = st->procs > st->procs_max ? st->procs : st->procs_max;
    st->lists_max = st->lists > st->lists_max ? st->lists : st->lists_max;
    st->mods_max = st->mods > st->mods_max ? st->mods : st->mods_max;
}

void trec_poll(struct trec *t)
{
    read_src(t, &t->old);
    read_src(t, &t->cur);
    if (t->cur.bytes >= CW__TREC_ROTATE)
        rotate(t);
    count(t);
}

void trec_stats(const struct trec *t, struct trec_stats *out)
{
    *out = t->stats;
}

size_t trec_nends(const struct trec *t)
{
    return t->nends;
}

struct trec_end *trec_endat(struct trec *t, size_t i)
{
    return i < t->nends ? &t->ends[i] : NULL;
}

void trec_drop_closed(struct trec *t)
{
    size_t k = 0;
    for (size_t i = 0; i < t->nends; i++)
        if (!t->ends[i].checked || t->ends[i].leaked)
            t->ends[k++] = t->ends[i];
    t->nends = k;
}

struct trec_end *trec_find(struct trec *t, uint64_t ino)
{
    for (size_t i = t->nends; i-- > 0;)
        if (t->ends[i].ino == ino)
            return &t->ends[i];
    return NULL;
}

int trec_started(const struct trec *t, pid_t pid)
{
    for (size_t i = 0; i < t->nprocs; i++)
        if (!pid || t->procs[i].pid == pid)
            return 1;
    return 0;
}

/* ---- symbolizing ---- */

/* Frames of a recorded stack once inlined calls are frames of their own. */
#define TREC_FRAMES (2 * CW_TRACE_DEPTH)

/* The recorded stack as frames, inlined calls included: up to max into
 * loc; returns how many. */
static int frames_of(struct trec *t, const struct trec_stack *s, struct sym_loc *loc, int max)
{
    int n = 0;
    for (int i = 0; i < s->n && n < max; i++) {
        if (s->mod[i] < 0) {
            memset(&loc[n], 0, sizeof loc[n]);
            loc[n++].addr = s->pc[i];
            continue;
        }
        const struct module *m = &t->mods[s->mod[i]];
        int k = sym_lookup_file(t->sym, m->path, m->bias, s->pc[i], 1, &loc[n], max - n);
        n += k < 0 ? 1 : k;
    }
    return n;
}

/* The index of the frame to name: the program's own code that asked
 * (sym_pick: not the runtime's, not libclosewise's core I/O); 0 if all
 * are the runtime's. */
static int first_own(const struct sym_loc *loc, int n)
{
    int first = 0;
    sym_pick(loc, n, &first, 1);
    return n && sym_is_runtime(&loc[first]) ? 0 : first;
}

void trec_site(struct trec *t, pid_t pid, const struct trec_stack *s, char *buf, size_t size)
{
    (void)pid;
    if (!s->n) {
        snprintf(buf, size, "an unknown place (no stack)");
        return;
    }
    struct sym_loc loc[TREC_FRAMES];
    int n = frames_of(t, s, loc, TREC_FRAMES);
    sym_format(&loc[first_own(loc, n)], buf, size);
}

int trec_frames(struct trec *t, const struct trec_stack *s, trec_text *out)
{
    struct sym_loc loc[TREC_FRAMES];
    int n = frames_of(t, s, loc, TREC_FRAMES), k = 0;
    for (int i = first_own(loc, n); i < n && k < CW_TRACE_DEPTH; i++)
        sym_format(&loc[i], out[k++], sizeof out[0]);
    return k;
}

/* ---- a live process's table ---- */

static int read_slot(const struct proc *p, pid_t pid, int fd, struct cw_trace_slot *out)
{
    if (p->version != CW_TRACE_VERSION || p->slotsize != (int)sizeof *out || fd < 0 ||
        fd >= p->nslots)
        return -1;
    for (int tries = 0; tries < 8; tries++) {
        struct iovec local = {.iov_base = out, .iov_len = sizeof *out};
        struct iovec remote = {.iov_base = (void *)(uintptr_t)(p->table + (uint64_t)fd * sizeof *out),
                               .iov_len = sizeof *out};
        uint32_t seq;
        struct iovec lseq = {.iov_base = &seq, .iov_len = sizeof seq};
        struct iovec rseq = {.iov_base = remote.iov_base, .iov_len = sizeof seq};
        if (process_vm_readv(pid, &local, 1, &remote, 1, 0) != (ssize_t)sizeof *out ||
            process_vm_readv(pid, &lseq, 1, &rseq, 1, 0) != (ssize_t)sizeof seq)
            return -1;
        if (!(out->seq & 1) && seq == out->seq)
            return 0;
    }
    return -1;   /* written to all the time: no stable copy */
}

int trec_last_read(struct trec *t, pid_t pid, int fd, uint64_t ino, char *buf, size_t size)
{
    const struct proc *p = NULL;
    for (size_t i = 0; i < t->nprocs; i++)
        if (t->procs[i].pid == pid)
            p = &t->procs[i];
    struct cw_trace_slot s;
    if (!p || read_slot(p, pid, fd, &s) < 0 || s.kind != CW_TRACE_TCP || !s.nlast ||
        (ino && s.ino != ino))
        return -1;
    int n = s.nlast < CW_TRACE_DEPTH ? s.nlast : CW_TRACE_DEPTH;
    struct sym_loc loc[TREC_FRAMES];
    int m = 0;
    for (int i = 0; i < n && m < TREC_FRAMES; i++) {   /* the innermost, and those mapped */
        int k = sym_lookup(t->sym, pid, s.last[i], 1, &loc[m], TREC_FRAMES - m);
        m += k > 0 ? k : m == 0;
    }
    sym_format(&loc[first_own(loc, m)], buf, size);
    return 0;
}
