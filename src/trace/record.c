/* record.c - libclosewise-trace.so's writer: stacks, and the text lines of
 * trace_format.h appended to $CW_TRACE_FILE. Each line goes out in one
 * write() on a descriptor opened for just that line (O_APPEND: lines of
 * concurrent processes never interleave; a program that closes every
 * descriptor it does not know cannot break the trace). Formatting is done
 * by hand: only async-signal-safe calls, no malloc. */
#define _GNU_SOURCE
#include "trace.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <fcntl.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char path[4096];     /* the record file */
static char exe[4096];      /* the main program's file (its link_map has no name) */
static uintptr_t self_lo, self_hi;   /* our own code: left out of stacks */

/* Modules already described by an M line of this process. */
#define MODULES 64
static struct link_map *modules[MODULES];
static int nmodules;
static int modules_lock;

/* ---- a line buffer ---- */

struct line {
    char b[4096];
    size_t n;
};

static void put(struct line *l, const char *s)
{
    size_t len = strlen(s);
    if (len > sizeof l->b - 1 - l->n)
        len = sizeof l->b - 1 - l->n;
    memcpy(l->b + l->n, s, len);
    l->n += len;
}

static void put_u(struct line *l, uint64_t v, unsigned base)
{
    char tmp[24];
    int i = (int)sizeof tmp;
    tmp[--i] = '\0';
    do {
        tmp[--i] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (base == 16)
        tmp[--i] = 'x', tmp[--i] = '0';
    put(l, tmp + i);
}

static void put_d(struct line *l, int64_t v)
{
    if (v < 0) {
        put(l, "-");
        v = -v;
    }
    put_u(l, (uint64_t)v, 10);
}

static void emit(struct line *l)
{
    l->b[l->n++] = '\n';
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0)
        return;   /* out of descriptors, or the file is gone: lose the line */
    ssize_t w = write(fd, l->b, l->n);
    (void)w;
    cw__tr_real_close(fd);
}

/* ---- time, stacks, modules ---- */

int64_t cw__tr_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cw__tr_stack(void **pcs, int max, int walk)
{
    void *raw[CW__TR_FULL_WALK];
    int n = backtrace(raw, walk < CW__TR_FULL_WALK ? walk : CW__TR_FULL_WALK), k = 0, i = 0;
    /* Our frames come first (after ASan's own backtrace interceptor, when
     * the program has one): the stack starts after the last of them. */
    for (int j = 0; j < n && j < 8; j++)
        if ((uintptr_t)raw[j] >= self_lo && (uintptr_t)raw[j] < self_hi)
            i = j + 1;
    for (; i < n && k < max; i++)
        pcs[k++] = raw[i];
    return k;
}

/* The M line index of the module holding pc, writing the line the first
 * time; -1 when unknown (or the vdso, which has no file). */
static int module_of(uintptr_t pc)
{
    Dl_info info;
    struct link_map *lm = NULL;
    if (!dladdr1((void *)pc, &info, (void **)&lm, RTLD_DL_LINKMAP) || !lm)
        return -1;
    const char *file = lm->l_name && lm->l_name[0] ? lm->l_name : exe;
    if (file[0] != '/')
        return -1;
    while (__atomic_exchange_n(&modules_lock, 1, __ATOMIC_ACQUIRE))
        ;   /* held by another thread for one short write at most */
    int idx = -1;
    for (int i = 0; i < nmodules && idx < 0; i++)
        if (modules[i] == lm)
            idx = i;
    if (idx < 0 && nmodules < MODULES) {
        idx = nmodules;
        modules[nmodules++] = lm;
        struct line l = {.n = 0};
        put(&l, "M ");
        put_d(&l, getpid());
        put(&l, " ");
        put_d(&l, idx);
        put(&l, " ");
        put_u(&l, (uint64_t)lm->l_addr, 16);
        put(&l, " ");
        put(&l, file);
        emit(&l);
    }
    __atomic_store_n(&modules_lock, 0, __ATOMIC_RELEASE);
    return idx;
}

static void put_stack(struct line *l, const uint64_t *pcs, int n)
{
    put_d(l, n);
    for (int i = 0; i < n; i++) {
        put(l, " ");
        put_u(l, pcs[i], 16);
        put(l, ":");
        put_d(l, module_of((uintptr_t)pcs[i]));
    }
}

static void put_head(struct line *l, const char *tag, int fd, const struct cw_trace_slot *s)
{
    put(l, tag);
    put(l, " ");
    put_d(l, getpid());
    put(l, " ");
    put_d(l, fd);
    put(l, " ");
    put_u(l, s->ino, 10);
    put(l, " ");
    put_d(l, cw__tr_now_ms());
}

/* ---- the records ---- */

void cw__tr_ended(int fd, const struct cw_trace_slot *s, int eof, const char *func,
                  void *const *pcs, int n)
{
    uint64_t now[CW_TRACE_DEPTH];
    for (int i = 0; i < n; i++)
        now[i] = (uint64_t)(uintptr_t)pcs[i];
    struct line l = {.n = 0};
    put_head(&l, "E", fd, s);
    put(&l, eof ? " eof " : " reset ");
    put(&l, func);
    put(&l, " ");
    put_stack(&l, now, n);
    put(&l, " | ");
    put_stack(&l, s->last, s->nlast);
    emit(&l);
}

void cw__tr_closed(int fd, const struct cw_trace_slot *s, const char *what, int how)
{
    struct line l = {.n = 0};
    put_head(&l, what, fd, s);
    if (what[0] == 'S') {
        put(&l, " ");
        put_d(&l, how);
    }
    emit(&l);
}

void cw__tr_started(void)
{
    nmodules = 0;
    modules_lock = 0;
    struct line l = {.n = 0};
    put(&l, "P ");
    put_d(&l, getpid());
    put(&l, " ");
    put_d(&l, getppid());
    put(&l, " ");
    put_u(&l, (uint64_t)(uintptr_t)cw__tr_table, 16);
    put(&l, " ");
    put_d(&l, CW_TRACE_SLOTS);
    put(&l, " ");
    put_d(&l, (int64_t)sizeof(struct cw_trace_slot));
    put(&l, " ");
    put_d(&l, CW_TRACE_VERSION);
    emit(&l);
}

static int find_self(struct dl_phdr_info *info, size_t size, void *arg)
{
    uintptr_t me = (uintptr_t)arg;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + p->p_vaddr;
        if (p->p_type == PT_LOAD && (p->p_flags & PF_X) && me >= lo && me < lo + p->p_memsz) {
            self_lo = lo;
            self_hi = lo + p->p_memsz;
            return 1;
        }
    }
    return 0;
}

int cw__tr_record_init(void)
{
    const char *p = getenv("CW_TRACE_FILE");
    if (!p || !p[0] || strlen(p) >= sizeof path)
        return -1;
    memcpy(path, p, strlen(p) + 1);
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    dl_iterate_phdr(find_self, (void *)(uintptr_t)&cw__tr_record_init);
    return 0;
}
