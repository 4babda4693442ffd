/* symbolize.c - addresses of a live process to file:line (function) with
 * libdwfl. One Dwfl (the process's module map from /proc/PID/maps) is
 * cached per pid, a few pids at a time: a busy server closes many
 * connections from the same process. */
#define _GNU_SOURCE
#include "symbolize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if CW_HAVE_DW
#include <dwarf.h>
#include <elfutils/libdwfl.h>

#define SYM_CACHE 8
#define SYM_MEMO 1024   /* symbolized addresses: a server closes from few sites */

struct memo {
    pid_t pid;
    uint64_t addr;
    int is_ret, rc;
    struct sym_loc loc;
};

struct sym {
    struct memo memo[SYM_MEMO];
    struct {
        pid_t pid;
        uint64_t ip;
        int64_t off;        /* CFA offset from sp at ip, -1 if unknown */
    } cfa[64];
    struct {
        pid_t pid;
        Dwfl *dwfl;
        unsigned long used;
        time_t made;        /* when the map was read */
    } e[SYM_CACHE];
    unsigned long tick;
};

static const Dwfl_Callbacks proc_callbacks = {
    .find_elf = dwfl_linux_proc_find_elf,
    .find_debuginfo = dwfl_standard_find_debuginfo,
};

struct sym *sym_new(void)
{
    /* libdw would ask a debuginfod server over the network for missing
     * debug info; a live monitor must not stall on that. */
    unsetenv("DEBUGINFOD_URLS");
    return calloc(1, sizeof(struct sym));
}

void sym_forget(struct sym *s, pid_t pid)
{
    for (int i = 0; i < SYM_MEMO; i++)
        if (s->memo[i].pid == pid)
            s->memo[i].pid = 0;
    for (int i = 0; i < 64; i++)
        if (s->cfa[i].pid == pid)
            s->cfa[i].pid = 0;
    for (int i = 0; i < SYM_CACHE; i++)
        if (s->e[i].dwfl && s->e[i].pid == pid) {
            dwfl_end(s->e[i].dwfl);
            s->e[i].dwfl = NULL;
        }
}

void sym_free(struct sym **sp)
{
    struct sym *s = *sp;
    if (!s)
        return;
    for (int i = 0; i < SYM_CACHE; i++)
        if (s->e[i].dwfl)
            dwfl_end(s->e[i].dwfl);
    free(s);
    *sp = NULL;
}

static Dwfl *report(pid_t pid)
{
    Dwfl *d = dwfl_begin(&proc_callbacks);
    if (!d)
        return NULL;
    dwfl_report_begin(d);
    if (dwfl_linux_proc_report(d, pid) != 0 || dwfl_report_end(d, NULL, NULL) != 0) {
        dwfl_end(d);
        return NULL;
    }
    return d;
}

/* The cached map of pid, made on first use; the least recently used
 * entry makes room. */
static Dwfl *dwfl_of(struct sym *s, pid_t pid)
{
    int victim = -1;
    for (int i = 0; i < SYM_CACHE; i++)
        if (s->e[i].dwfl && s->e[i].pid == pid) {
            s->e[i].used = ++s->tick;
            return s->e[i].dwfl;
        }
    for (int i = 0; i < SYM_CACHE && (victim < 0 || s->e[victim].dwfl); i++)
        if (victim < 0 || !s->e[i].dwfl || s->e[i].used < s->e[victim].used)
            victim = i;
    Dwfl *d = report(pid);
    if (!d)
        return NULL;
    if (s->e[victim].dwfl)
        dwfl_end(s->e[victim].dwfl);
    s->e[victim].pid = pid;
    s->e[victim].dwfl = d;
    s->e[victim].made = time(NULL);
    s->e[victim].used = ++s->tick;
    return d;
}

/* The module holding addr. A miss re-reads the map (the process may have
 * loaded a library since), at most every SYM_REREAD seconds per process:
 * a broken frame-pointer chain yields garbage addresses, and re-reading
 * the map also drops the debug info already loaded. */
#define SYM_REREAD 10
static Dwfl_Module *module_of(struct sym *s, pid_t pid, uint64_t addr)
{
    Dwfl *d = dwfl_of(s, pid);
    Dwfl_Module *m = d ? dwfl_addrmodule(d, addr) : NULL;
    if (m || !d)
        return m;
    for (int i = 0; i < SYM_CACHE; i++)
        if (s->e[i].dwfl == d && time(NULL) - s->e[i].made < SYM_REREAD)
            return NULL;
    sym_forget(s, pid);
    d = dwfl_of(s, pid);
    return d ? dwfl_addrmodule(d, addr) : NULL;
}

static void copy(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src ? src : "");
}

static int lookup(struct sym *s, pid_t pid, uint64_t addr, int is_ret, struct sym_loc *out);

static size_t memo_slot(pid_t pid, uint64_t addr)
{
    uint64_t h = (addr ^ ((uint64_t)pid << 32)) * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 54) % SYM_MEMO;
}

int sym_lookup(struct sym *s, pid_t pid, uint64_t addr, int is_ret, struct sym_loc *out)
{
    struct memo *m = &s->memo[memo_slot(pid, addr)];
    if (m->pid != pid || m->addr != addr || m->is_ret != is_ret) {
        /* Failures are kept too (until the map is re-read): a frame
         * chain broken the same way every time must stay cheap. */
        m->rc = lookup(s, pid, addr, is_ret, &m->loc);
        m->pid = pid;
        m->addr = addr;
        m->is_ret = is_ret;
    }
    *out = m->loc;
    return m->rc;
}

static int lookup(struct sym *s, pid_t pid, uint64_t addr, int is_ret, struct sym_loc *out)
{
    memset(out, 0, sizeof *out);
    out->addr = addr;
    Dwfl_Module *m = module_of(s, pid, addr);
    if (!m)
        return -1;
    uint64_t a = is_ret && addr ? addr - 1 : addr;
    const char *name = dwfl_module_info(m, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    const char *base = name ? strrchr(name, '/') : NULL;
    copy(out->module, sizeof out->module, base ? base + 1 : name);
    GElf_Off off;
    GElf_Sym symbol;
    copy(out->function, sizeof out->function,
         dwfl_module_addrinfo(m, a, &off, &symbol, NULL, NULL, NULL));
    Dwfl_Line *line = dwfl_module_getsrc(m, a);
    int lineno = 0;
    const char *file = line ? dwfl_lineinfo(line, NULL, &lineno, NULL, NULL, NULL) : NULL;
    if (file) {
        copy(out->file, sizeof out->file, file);
        out->line = lineno;
    }
    return 0;
}

/* The offset of the canonical frame address from the stack pointer at
 * ip, when the rule is "CFA = rsp + offset" (DWARF register 7), which is
 * what frameless functions have; -1 otherwise. */
static int64_t cfa_offset(struct sym *s, pid_t pid, uint64_t ip)
{
    Dwfl_Module *m = module_of(s, pid, ip);
    if (!m)
        return -1;
    Dwarf_Addr bias;
    Dwarf_CFI *cfi = dwfl_module_eh_cfi(m, &bias);
    if (!cfi)
        cfi = dwfl_module_dwarf_cfi(m, &bias);
    Dwarf_Frame *frame = NULL;
    if (!cfi || dwarf_cfi_addrframe(cfi, ip - bias, &frame) != 0)
        return -1;
    Dwarf_Op *ops;
    size_t nops;
    int64_t off = -1;
    if (dwarf_frame_cfa(frame, &ops, &nops) == 0 && nops == 1) {
        if (ops[0].atom == DW_OP_breg7)
            off = (int64_t)ops[0].number;
        else if (ops[0].atom == DW_OP_bregx && ops[0].number == 7)
            off = (int64_t)ops[0].number2;
    }
    free(frame);
    return off;
}

int sym_caller(struct sym *s, pid_t pid, uint64_t ip, const uint64_t *words, size_t n,
               uint64_t *ret)
{
#if defined(__x86_64__)
    size_t slot = memo_slot(pid, ip) % 64;
    if (s->cfa[slot].pid != pid || s->cfa[slot].ip != ip) {
        s->cfa[slot].off = cfa_offset(s, pid, ip);
        s->cfa[slot].pid = s->cfa[slot].off >= 0 ? pid : 0;
        s->cfa[slot].ip = ip;
    }
    int64_t off = s->cfa[slot].off;
    /* On x86-64 the return address sits just below the CFA. */
    if (off < 8 || (off - 8) % 8 || (size_t)(off - 8) / 8 >= n)
        return -1;
    *ret = words[(off - 8) / 8];
    return *ret ? 0 : -1;
#else
    (void)s; (void)pid; (void)ip; (void)words; (void)n; (void)ret;
    return -1;
#endif
}

#else /* !CW_HAVE_DW */

struct sym {
    int unused;
};

struct sym *sym_new(void)
{
    return calloc(1, sizeof(struct sym));
}

void sym_free(struct sym **sp)
{
    free(*sp);
    *sp = NULL;
}

void sym_forget(struct sym *s, pid_t pid)
{
    (void)s;
    (void)pid;
}

int sym_lookup(struct sym *s, pid_t pid, uint64_t addr, int is_ret, struct sym_loc *out)
{
    (void)s; (void)pid; (void)is_ret;
    memset(out, 0, sizeof *out);
    out->addr = addr;
    return -1;
}

int sym_caller(struct sym *s, pid_t pid, uint64_t ip, const uint64_t *words, size_t n,
               uint64_t *ret)
{
    (void)s; (void)pid; (void)ip; (void)words; (void)n; (void)ret;
    return -1;
}
#endif

void sym_format(const struct sym_loc *l, char *buf, size_t size)
{
    const char *base = strrchr(l->file, '/');
    base = base ? base + 1 : l->file;
    if (l->file[0] && l->line)
        snprintf(buf, size, "%s:%d (%s)", base, l->line, l->function[0] ? l->function : "?");
    else if (l->function[0])
        snprintf(buf, size, "%s (%s)", l->function, l->module);
    else if (l->module[0])
        snprintf(buf, size, "0x%llx (%s)", (unsigned long long)l->addr, l->module);
    else
        snprintf(buf, size, "0x%llx", (unsigned long long)l->addr);
}
