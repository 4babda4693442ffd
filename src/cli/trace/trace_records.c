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
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

/* An ELF file at a load bias, as M lines name it: one entry however many
 * processes map it there (every child of a fork-per-connection server
 * does, under the parent's bias), freed when the last process list and
 * the last recorded stack holding it let go. */
struct trec_mod {
    struct trec_mod *next;   /* in its hash bucket */
    uint64_t bias;
    size_t refs;
    char path[];
};

#define MOD_BUCKETS 256
#define MOD_MAX_IDX 4096     /* the library numbers at most 64 a process */

/* A traced process not yet found dead: its table, and its modules by M
 * index (numbered anew after exec and in a fork child). */
struct proc {
    pid_t pid;
    int nslots, slotsize, version;
    uint64_t table;
    int started;             /* its P line was read */
    int gone;                /* found dead: dropped once its lines are read */
    int nmods;
    struct trec_mod **mods;  /* by M index; NULL: not described */
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
    struct trec_mod *bucket[MOD_BUCKETS];
    size_t nfiles;           /* trec_mod entries */
    struct proc *procs;
    size_t nprocs, capprocs;
    size_t live;             /* procs left by the last sweep */
    int64_t checked_ms;      /* when procs were last checked for life */
    int pending;             /* checked, not swept yet: */
    off_t seen_cur, seen_old;   /* the files' sizes at the check */
    int started;             /* a P line was seen */
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

/* ---- module files, shared ---- */

static size_t mod_hash(const char *path, uint64_t bias)
{
    uint64_t h = bias * 0x9e3779b97f4a7c15ull;
    for (const unsigned char *c = (const unsigned char *)path; *c; c++)
        h = (h ^ *c) * 0x100000001b3ull;
    return (size_t)(h >> 32) % MOD_BUCKETS;
}

/* The entry for path at bias, with one more reference; NULL when out of
 * memory. */
static struct trec_mod *mod_get(struct trec *t, const char *path, uint64_t bias)
{
    struct trec_mod **b = &t->bucket[mod_hash(path, bias)];
    for (struct trec_mod *m = *b; m; m = m->next)
        if (m->bias == bias && !strcmp(m->path, path)) {
            m->refs++;
            return m;
        }
    size_t len = strlen(path) + 1;
    struct trec_mod *m = malloc(sizeof *m + len);
    if (!m)
        return NULL;
    m->bias = bias;
    m->refs = 1;
    memcpy(m->path, path, len);
    m->next = *b;
    *b = m;
    t->nfiles++;
    return m;
}

static struct trec_mod *mod_hold(struct trec_mod *m)
{
    if (m)
        m->refs++;
    return m;
}

static void mod_put(struct trec *t, struct trec_mod *m)
{
    if (!m || --m->refs)
        return;
    struct trec_mod **p = &t->bucket[mod_hash(m->path, m->bias)];
    while (*p != m)
        p = &(*p)->next;
    *p = m->next;
    free(m);
    t->nfiles--;
}

static void stack_put(struct trec *t, struct trec_stack *s)
{
    for (int i = 0; i < s->n; i++)
        mod_put(t, s->mod[i]);
    s->n = 0;
}

static void proc_clear(struct trec *t, struct proc *p)
{
    for (int i = 0; i < p->nmods; i++)
        mod_put(t, p->mods[i]);
    free(p->mods);
    p->mods = NULL;
    p->nmods = 0;
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
    for (size_t i = 0; i < t->nprocs; i++)
        proc_clear(t, &t->procs[i]);
    for (size_t i = 0; i < t->nends; i++) {
        stack_put(t, &t->ends[i].at);
        stack_put(t, &t->ends[i].last);
    }
    free(t->procs);
    free(t->ends);
    sym_free(&t->sym);
    free(t);
    *tp = NULL;
}

/* ---- processes ---- */

/* pid's entry (the latest processes are looked for first), made when
 * create is set; NULL if none or out of memory. */
static struct proc *proc_of(struct trec *t, pid_t pid, int create)
{
    for (size_t i = t->nprocs; i-- > 0;)
        if (t->procs[i].pid == pid)
            return &t->procs[i];
    if (!create || grow((void **)&t->procs, &t->capprocs, t->nprocs, sizeof *t->procs) < 0)
        return NULL;
    struct proc *p = &t->procs[t->nprocs++];
    memset(p, 0, sizeof *p);
    p->pid = pid;
    return p;
}

/* Which processes have exited, looked at about once a second, or sooner
 * once the entries have doubled: memory bounded by the processes alive
 * and the last moments' dead ones, at one kill(0) per entry and check.
 * A zombie counts as alive until reaped. */
static void check_procs(struct trec *t)
{
    int64_t now = cw_now_ms();
    struct stat cur, old;
    if (t->pending || (now - t->checked_ms < 1000 && t->nprocs < 2 * t->live + 64) ||
        fstat(t->cur.fd, &cur) < 0 || (t->old.fd >= 0 && fstat(t->old.fd, &old) < 0))
        return;
    t->checked_ms = now;
    t->seen_cur = cur.st_size;
    t->seen_old = t->old.fd >= 0 ? old.st_size : 0;
    for (size_t i = 0; i < t->nprocs; i++)
        t->procs[i].gone = kill(t->procs[i].pid, 0) < 0 && errno == ESRCH;
    t->pending = 1;
}

/* Let go of the processes found dead, once the files have been read as
 * far as they were at the check: a dead process has written all its lines
 * by then, so an end read after its process is gone still finds its
 * modules (and holds them from then on). A P line read since (the number
 * taken by a new process) cleared the mark. */
static void sweep(struct trec *t)
{
    if (!t->pending || (off_t)t->cur.bytes < t->seen_cur ||
        (t->old.fd >= 0 && (off_t)t->old.bytes < t->seen_old))
        return;
    size_t k = 0;
    for (size_t i = 0; i < t->nprocs; i++) {
        if (t->procs[i].gone)
            proc_clear(t, &t->procs[i]);
        else
            t->procs[k++] = t->procs[i];
    }
    t->nprocs = t->live = k;
    t->pending = 0;
}

static void on_process(struct trec *t, char *p)
{
    struct proc pr = {0};
    int ppid;
    if (sscanf(p, "%d %d %" SCNx64 " %d %d %d", &pr.pid, &ppid, &pr.table, &pr.nslots,
               &pr.slotsize, &pr.version) != 6)
        return;
    t->started = 1;
    struct proc *e = proc_of(t, pr.pid, 1);
    if (!e)
        return;
    /* A new image (exec), a fork child numbering its own modules, or a
     * new process under a dead one's number (then no longer gone). */
    proc_clear(t, e);
    *e = pr;
    e->started = 1;
}

static void on_module(struct trec *t, char *p)
{
    pid_t pid;
    int idx, off = 0;
    uint64_t bias;
    if (sscanf(p, "%d %d %" SCNx64 " %n", &pid, &idx, &bias, &off) != 3 || !off ||
        idx < 0 || idx >= MOD_MAX_IDX)
        return;
    struct proc *pr = proc_of(t, pid, 1);
    if (!pr)
        return;
    if (idx >= pr->nmods) {
        struct trec_mod **m = realloc(pr->mods, (size_t)(idx + 1) * sizeof *m);
        if (!m)
            return;
        memset(m + pr->nmods, 0, (size_t)(idx + 1 - pr->nmods) * sizeof *m);
        pr->mods = m;
        pr->nmods = idx + 1;
    }
    mod_put(t, pr->mods[idx]);
    pr->mods[idx] = mod_get(t, p + off, bias);
}

/* "N pc:idx ..." into s, each frame holding its module; returns the rest
 * of the line. */
static char *parse_stack(struct trec *t, pid_t pid, char *p, struct trec_stack *s)
{
    const struct proc *pr = proc_of(t, pid, 0);
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
            s->mod[s->n++] = pr && idx >= 0 && idx < pr->nmods ? mod_hold(pr->mods[idx]) : NULL;
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
    if (grow((void **)&t->ends, &t->capends, t->nends, sizeof e) == 0) {
        t->ends[t->nends++] = e;
    } else {
        stack_put(t, &e.at);
        stack_put(t, &e.last);
    }
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

static void count(struct trec *t)
{
    struct trec_stats *st = &t->stats;
    st->procs = t->nprocs;
    st->mods = t->nfiles;
    st->lists = 0;
    for (size_t i = 0; i < t->nprocs; i++)
        st->lists += t->procs[i].nmods > 0;
    st->procs_max = st->procs > st->procs_max ? st->procs : st->procs_max;
    st->lists_max = st->lists > st->lists_max ? st->lists : st->lists_max;
    st->mods_max = st->mods > st->mods_max ? st->mods : st->mods_max;
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
        /* A long backlog (the reader was held up) is read in steps that
         * let the dead go as soon as their lines are behind. */
        count(t);
        sweep(t);
        check_procs(t);
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

void trec_poll(struct trec *t)
{
    check_procs(t);
    read_src(t, &t->old);
    read_src(t, &t->cur);
    sweep(t);
    count(t);
    if (t->cur.bytes >= CW__TREC_ROTATE)
        rotate(t);
}

void trec_settle(struct trec *t)
{
    trec_poll(t);          /* what is left, and the pending sweep */
    t->checked_ms = 0;     /* a check now, whenever the last one was */
    trec_poll(t);
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
    for (size_t i = 0; i < t->nends; i++) {
        struct trec_end *e = &t->ends[i];
        if (!e->checked || e->leaked) {
            t->ends[k++] = *e;
            continue;
        }
        stack_put(t, &e->at);
        stack_put(t, &e->last);
    }
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
    if (!pid)
        return t->started;
    for (size_t i = 0; i < t->nprocs; i++)
        if (t->procs[i].pid == pid && t->procs[i].started)
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
        const struct trec_mod *m = s->mod[i];
        if (!m) {
            memset(&loc[n], 0, sizeof loc[n]);
            loc[n++].addr = s->pc[i];
            continue;
        }
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
    const struct proc *p = proc_of(t, pid, 0);
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
