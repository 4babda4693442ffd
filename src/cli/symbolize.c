/* symbolize.c - addresses of a live process to file:line (function) with
 * libdwfl. One Dwfl (the process's module map from /proc/PID/maps) is
 * cached per pid, a few pids at a time: a busy server closes many
 * connections from the same process. */
#define _GNU_SOURCE
#include "symbolize.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if CW_HAVE_DW
#include <dlfcn.h>
#include <dwarf.h>
#include <errno.h>
#include <signal.h>
#include <elfutils/libdwfl.h>

#define SYM_CACHE 8
#define SYM_FILES 16   /* modules of recorded stacks, by path and bias */
#define SYM_MEMO 512    /* symbolized addresses: a server closes from few sites */

/* What the unwinder's callbacks see of the current event. */
struct sample {
    pid_t tid;
    const struct sym_regs *regs;
    const unsigned char *stack;
    size_t len;
};

struct memo {
    pid_t pid;
    uint64_t addr;
    int is_ret, rc;
    struct sym_loc loc[SYM_INLINE];
};

struct sym {
    struct memo memo[SYM_MEMO];
    struct sample *cur;     /* the stack being unwound (callbacks read it) */
    struct {
        pid_t pid;
        Dwfl *dwfl;
        unsigned long used;
        time_t made;        /* when the map was read */
        int exited;         /* found gone by the last sym_sweep */
    } e[SYM_CACHE];
    struct {                /* ELF files by path and load bias */
        char path[512];
        uint64_t bias;
        Dwfl *dwfl;
        unsigned long used;
    } f[SYM_FILES];
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
    for (int i = 0; i < SYM_FILES; i++)
        if (s->f[i].dwfl)
            dwfl_end(s->f[i].dwfl);
    free(s);
    *sp = NULL;
}

static const Dwfl_Thread_Callbacks thread_callbacks;

/* The module map of pid, ready to unwind stacks handed in by sym_unwind
 * (if attaching fails, lookups still work). */
static Dwfl *report(struct sym *s, pid_t pid)
{
    Dwfl *d = dwfl_begin(&proc_callbacks);
    if (!d)
        return NULL;
    dwfl_report_begin(d);
    if (dwfl_linux_proc_report(d, pid) != 0 || dwfl_report_end(d, NULL, NULL) != 0) {
        dwfl_end(d);
        return NULL;
    }
    dwfl_attach_state(d, NULL, pid, &thread_callbacks, s);
    return d;
}

void sym_sweep(struct sym *s)
{
    for (int i = 0; i < SYM_CACHE; i++)
        if (s->e[i].dwfl && s->e[i].exited)
            sym_forget(s, s->e[i].pid);
    for (int i = 0; i < SYM_CACHE; i++)
        s->e[i].exited = s->e[i].dwfl && kill(s->e[i].pid, 0) < 0 && errno == ESRCH;
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
    Dwfl *d = report(s, pid);
    if (!d)
        return NULL;
    if (s->e[victim].dwfl)
        dwfl_end(s->e[victim].dwfl);
    s->e[victim].pid = pid;
    s->e[victim].dwfl = d;
    s->e[victim].made = time(NULL);
    s->e[victim].exited = 0;
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

int sym_has(struct sym *s, pid_t pid, uint64_t addr)
{
    return module_of(s, pid, addr) != NULL;
}

static void copy(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src ? src : "");
}

static int lookup(struct sym *s, pid_t pid, uint64_t addr, int is_ret, struct sym_loc *out);

/* C++ names as people write them, with the C++ runtime's own demangler
 * when it is installed (any C++ program needs it); mangled otherwise. */
typedef char *(*demangle_fn)(const char *, char *, size_t *, int *);
static void demangle(char *name, size_t size)
{
    static demangle_fn fn;
    static int tried;
    if (strncmp(name, "_Z", 2) != 0)
        return;
    if (!tried) {
        tried = 1;
        void *h = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_LOCAL);
        void *f = h ? dlsym(h, "__cxa_demangle") : NULL;
        memcpy(&fn, &f, sizeof fn);
    }
    int status = -1;
    char *d = fn ? fn(name, NULL, NULL, &status) : NULL;
    if (d && status == 0)
        copy(name, size, d);
    free(d);
}

static size_t memo_slot(pid_t pid, uint64_t addr)
{
    uint64_t h = (addr ^ ((uint64_t)pid << 32)) * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 54) % SYM_MEMO;
}

int sym_lookup(struct sym *s, pid_t pid, uint64_t addr, int is_ret, struct sym_loc *out,
               int max)
{
    struct memo *m = &s->memo[memo_slot(pid, addr)];
    if (max < 1)
        return 0;
    if (m->pid != pid || m->addr != addr || m->is_ret != is_ret) {
        /* Failures are kept too (until the map is re-read): a frame
         * chain broken the same way every time must stay cheap. */
        m->rc = lookup(s, pid, addr, is_ret, m->loc);
        m->pid = pid;
        m->addr = addr;
        m->is_ret = is_ret;
    }
    int n = m->rc < 0 ? 1 : m->rc < max ? m->rc : max;
    memcpy(out, m->loc, (size_t)n * sizeof *out);
    return m->rc < 0 ? -1 : n;
}

static int describe(Dwfl_Module *m, uint64_t addr, int is_ret, struct sym_loc *out, int max);

static int lookup(struct sym *s, pid_t pid, uint64_t addr, int is_ret, struct sym_loc *out)
{
    memset(out, 0, sizeof *out);
    out->addr = addr;
    Dwfl_Module *m = module_of(s, pid, addr);
    return m ? describe(m, addr, is_ret, out, SYM_INLINE) : -1;
}

/* ---- ELF files named by path and load bias (the process may be gone) ---- */

static const Dwfl_Callbacks file_callbacks = {
    .find_elf = dwfl_build_id_find_elf,
    .find_debuginfo = dwfl_standard_find_debuginfo,
    .section_address = dwfl_offline_section_address,
};

static Dwfl *file_dwfl(struct sym *s, const char *path, uint64_t bias)
{
    int victim = 0;
    for (int i = 0; i < SYM_FILES; i++) {
        if (s->f[i].dwfl && s->f[i].bias == bias && !strcmp(s->f[i].path, path)) {
            s->f[i].used = ++s->tick;
            return s->f[i].dwfl;
        }
        if (!s->f[i].dwfl || (s->f[victim].dwfl && s->f[i].used < s->f[victim].used))
            victim = i;
    }
    if (strlen(path) >= sizeof s->f[0].path)
        return NULL;
    Dwfl *d = dwfl_begin(&file_callbacks);
    if (!d)
        return NULL;
    dwfl_report_begin(d);
    if (!dwfl_report_elf(d, path, path, -1, bias, false) ||
        dwfl_report_end(d, NULL, NULL) != 0) {
        dwfl_end(d);
        return NULL;
    }
    if (s->f[victim].dwfl)
        dwfl_end(s->f[victim].dwfl);
    s->f[victim].dwfl = d;
    s->f[victim].bias = bias;
    strcpy(s->f[victim].path, path);
    s->f[victim].used = ++s->tick;
    return d;
}

int sym_lookup_file(struct sym *s, const char *path, uint64_t bias, uint64_t addr,
                    int is_ret, struct sym_loc *out, int max)
{
    if (max < 1)
        return 0;
    memset(out, 0, sizeof *out);
    out->addr = addr;
    Dwfl *d = file_dwfl(s, path, bias);
    Dwfl_Module *m = d ? dwfl_addrmodule(d, addr) : NULL;
    if (!m) {
        const char *base = strrchr(path, '/');
        copy(out->module, sizeof out->module, base ? base + 1 : path);
        return -1;
    }
    return describe(m, addr, is_ret, out, max);
}

/* The compile unit holding a (address a of the module less *bias). When
 * the module has no .debug_aranges (clang emits none by default, and
 * libdw 0.188 finds no compile unit without them), each compile unit is
 * asked whether it covers a. */
static Dwarf_Die *cu_at(Dwfl_Module *m, Dwarf_Addr a, Dwarf_Addr *bias)
{
    Dwarf_Die *cu = dwfl_module_addrdie(m, a, bias);
    if (cu)
        return cu;
    while ((cu = dwfl_module_nextcu(m, cu, bias)))
        if (dwarf_haspc(cu, a - *bias) == 1)
            return cu;
    return NULL;
}

/* The line of a from its compile unit's line table, for modules where
 * dwfl_module_getsrc finds none (no .debug_aranges, as above). */
static int line_by_cu(Dwarf_Die *cu, Dwarf_Addr a, struct sym_loc *out)
{
    Dwarf_Line *l = cu ? dwarf_getsrc_die(cu, a) : NULL;
    const char *file = l ? dwarf_linesrc(l, NULL, NULL) : NULL;
    if (!file || dwarf_lineno(l, &out->line) != 0)
        return -1;
    copy(out->file, sizeof out->file, file);
    return 0;
}

/* Whether module m holds libclosewise (the closewise program, or a
 * program linked with libclosewise.a, or libclosewise.so itself): it
 * defines cw_version. Asked once per module, kept in its user data. */
static int holds_libclosewise(Dwfl_Module *m)
{
    static char yes, no;
    void **ud;
    dwfl_module_info(m, &ud, NULL, NULL, NULL, NULL, NULL, NULL);
    if (ud && *ud)
        return *ud == &yes;
    int found = 0, n = dwfl_module_getsymtab(m);
    for (int i = 1; i < n && !found; i++) {
        GElf_Sym sym;
        GElf_Addr addr;
        GElf_Word shndx;
        Elf *elf;
        Dwarf_Addr bias;
        const char *name = dwfl_module_getsym_info(m, i, &sym, &addr, &shndx, &elf, &bias);
        found = name && !strcmp(name, "cw_version") && shndx != SHN_UNDEF;
    }
    if (ud)
        *ud = found ? &yes : &no;
    return found;
}

/* libclosewise's core I/O layer: compile units built from src/net/ (the
 * unit, not the line's file: a header's inline function belongs to the
 * unit that calls it). The path is as the compiler was given it, or
 * relative to the unit's directory; the module check keeps out a program
 * that happens to have a src/net/ of its own. */
static int core_io(Dwfl_Module *m, Dwarf_Die *cu)
{
    const char *name = cu ? dwarf_diename(cu) : NULL;
    const char *net = name ? strstr(name, "src/net/") : NULL;
    while (net && net != name && net[-1] != '/')
        net = strstr(net + 1, "src/net/");
    return net && !strchr(net + 8, '/') && holds_libclosewise(m);
}

/* gcc names the copies it makes of a function "session.isra.0",
 * "run.part.1", "f.constprop.0", "g.cold": the user wrote "session". */
static void drop_clone_suffix(char *name, int *split)
{
    static const char *const kinds[] = {".part.", ".isra.", ".constprop.", ".cold",
                                        ".lto_priv.", ".localalias"};
    for (char *dot = strchr(name, '.'); dot; dot = strchr(dot + 1, '.'))
        for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
            if (!strncmp(dot, kinds[i], strlen(kinds[i]))) {
                *split = i == 0;
                *dot = '\0';
                return;
            }
}

/* The source file numbered idx in cu's file table ("" if unknown). */
static const char *cu_file(Dwarf_Die *cu, Dwarf_Word idx)
{
    Dwarf_Files *files;
    size_t n;
    const char *name = NULL;
    if (dwarf_getsrcfiles(cu, &files, &n) == 0 && idx < n)
        name = dwarf_filesrc(files, idx, NULL, NULL);
    return name ? name : "";
}

/* Functions inlined at pc of cu, innermost first: each takes the name of
 * out[k] (whose file:line is inside it), and out[k + 1] the line of its
 * call, in the function it was inlined into. Returns the index of the
 * frame left for the function all of them ended up in. */
static int inlined(Dwarf_Die *cu, Dwarf_Addr pc, struct sym_loc *out, int max)
{
    Dwarf_Die *scopes = NULL;
    int ns = cu ? dwarf_getscopes(cu, pc, &scopes) : -1, k = 0;
    for (int i = 0; i < ns && k + 1 < max; i++) {
        Dwarf_Attribute attr;
        Dwarf_Word file, line;
        const char *name = dwarf_diename(&scopes[i]);
        if (dwarf_tag(&scopes[i]) != DW_TAG_inlined_subroutine || !name ||
            dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_file, &attr), &file) != 0 ||
            dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_line, &attr), &line) != 0)
            continue;
        copy(out[k].function, sizeof out[k].function, name);
        out[k + 1] = out[k];
        k++;
        copy(out[k].file, sizeof out[k].file, cu_file(cu, file));
        out[k].line = (int)line;
    }
    free(scopes);
    return k;
}

/* The frames of one address: functions inlined there, innermost first,
 * then the function that holds the code (its name from the symbol table,
 * so a binary without debug info still gets one). Returns how many. */
static int describe(Dwfl_Module *m, uint64_t addr, int is_ret, struct sym_loc *out, int max)
{
    uint64_t a = is_ret && addr ? addr - 1 : addr;
    const char *name = dwfl_module_info(m, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    const char *base = name ? strrchr(name, '/') : NULL;
    copy(out->module, sizeof out->module, base ? base + 1 : name);
    Dwarf_Addr bias;
    if (dwfl_module_getelf(m, &bias))
        out->rel = addr - bias;
    Dwarf_Addr cubias = 0;
    Dwarf_Die *cu = cu_at(m, a, &cubias);
    out->lib = core_io(m, cu);
    Dwfl_Line *line = dwfl_module_getsrc(m, a);
    int lineno = 0;
    const char *file = line ? dwfl_lineinfo(line, NULL, &lineno, NULL, NULL, NULL) : NULL;
    if (file) {
        copy(out->file, sizeof out->file, file);
        out->line = lineno;
    } else if (line_by_cu(cu, a - cubias, out) < 0) {
        out->line = 0;
    }
    int k = inlined(cu, a - cubias, out, max);
    GElf_Off off;
    GElf_Sym symbol;
    copy(out[k].function, sizeof out[k].function,
         dwfl_module_addrinfo(m, a, &off, &symbol, NULL, NULL, NULL));
    demangle(out[k].function, sizeof out[k].function);
    drop_clone_suffix(out[k].function, &out[k].split);
    return k + 1;
}

/* ---- unwinding a copied user stack with the modules' CFI ---- */

static pid_t next_thread(Dwfl *dwfl, void *arg, void **thread_argp)
{
    struct sym *s = arg;
    (void)dwfl;
    if (*thread_argp || !s->cur)
        return 0;
    *thread_argp = s->cur;
    return s->cur->tid;
}

static bool get_thread(Dwfl *dwfl, pid_t tid, void *arg, void **thread_argp)
{
    struct sym *s = arg;
    (void)dwfl;
    if (!s->cur || s->cur->tid != tid)
        return false;
    *thread_argp = s->cur;
    return true;
}

/* Only the copy taken when the event happened: the live stack has moved. */
static bool memory_read(Dwfl *dwfl, Dwarf_Addr addr, Dwarf_Word *result, void *arg)
{
    struct sym *s = arg;
    (void)dwfl;
    const struct sample *c = s->cur;
    if (!c || addr < c->regs->sp || addr - c->regs->sp + 8 > c->len)
        return false;
    memcpy(result, c->stack + (addr - c->regs->sp), 8);
    return true;
}

static bool set_initial_registers(Dwfl_Thread *thread, void *arg)
{
    const struct sample *c = arg;
#if defined(__x86_64__)
    /* DWARF numbering: rbx 3, rbp 6, rsp 7, r12-r15 12-15. */
    Dwarf_Word bx = c->regs->bx, bpsp[2] = {c->regs->bp, c->regs->sp};
    Dwarf_Word r12[4] = {c->regs->r12, c->regs->r13, c->regs->r14, c->regs->r15};
    dwfl_thread_state_register_pc(thread, c->regs->ip);
    return dwfl_thread_state_registers(thread, 3, 1, &bx) &&
           dwfl_thread_state_registers(thread, 6, 2, bpsp) &&
           dwfl_thread_state_registers(thread, 12, 4, r12);
#else
    (void)thread;
    (void)c;
    return false;
#endif
}

static const Dwfl_Thread_Callbacks thread_callbacks = {
    .next_thread = next_thread,
    .get_thread = get_thread,
    .memory_read = memory_read,
    .set_initial_registers = set_initial_registers,
};

struct frames {
    uint64_t *pcs;
    int n, max;
};

static int on_frame(Dwfl_Frame *state, void *arg)
{
    struct frames *f = arg;
    Dwarf_Addr pc;
    if (!dwfl_frame_pc(state, &pc, NULL) || pc == 0)
        return DWARF_CB_ABORT;
    f->pcs[f->n++] = pc;
    return f->n < f->max ? DWARF_CB_OK : DWARF_CB_ABORT;
}

int sym_unwind(struct sym *s, pid_t pid, pid_t tid, const struct sym_regs *regs,
               const void *stack, size_t len, uint64_t *pcs, int max)
{
    if (max < 1)
        return 0;
    struct sample c = {.tid = tid, .regs = regs, .stack = stack, .len = len};
    struct frames f = {.pcs = pcs, .n = 0, .max = max};
    Dwfl *d = module_of(s, pid, regs->ip) ? dwfl_of(s, pid) : NULL;
    if (d) {
        s->cur = &c;
        dwfl_getthread_frames(d, tid, on_frame, &f);   /* an error ends the stack */
        s->cur = NULL;
    }
    if (f.n == 0)
        pcs[f.n++] = regs->ip;
    return f.n;
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

void sym_sweep(struct sym *s)
{
    (void)s;
}

int sym_has(struct sym *s, pid_t pid, uint64_t addr)
{
    (void)s; (void)pid; (void)addr;
    return 0;
}

int sym_lookup(struct sym *s, pid_t pid, uint64_t addr, int is_ret, struct sym_loc *out,
               int max)
{
    (void)s; (void)pid; (void)is_ret;
    if (max < 1)
        return 0;
    memset(out, 0, sizeof *out);
    out->addr = addr;
    return -1;
}

int sym_lookup_file(struct sym *s, const char *path, uint64_t bias, uint64_t addr,
                    int is_ret, struct sym_loc *out, int max)
{
    (void)s; (void)bias; (void)is_ret;
    if (max < 1)
        return 0;
    memset(out, 0, sizeof *out);
    out->addr = addr;
    const char *base = strrchr(path, '/');
    snprintf(out->module, sizeof out->module, "%s", base ? base + 1 : path);
    return -1;
}

int sym_unwind(struct sym *s, pid_t pid, pid_t tid, const struct sym_regs *regs,
               const void *stack, size_t len, uint64_t *pcs, int max)
{
    (void)s; (void)pid; (void)tid; (void)stack; (void)len;
    if (max < 1)
        return 0;
    pcs[0] = regs->ip;
    return 1;
}
#endif

int sym_is_runtime(const struct sym_loc *l)
{
    static const char *const names[] = {"libc.so", "libc-", "libpthread", "ld-linux",
                                        "libasan", "libubsan", "libtsan", "liblsan",
                                        "libclosewise-trace"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strncmp(l->module, names[i], strlen(names[i])))
            return 1;
    return 0;
}

/* Whether fr[i] is the entry of the function whose split-off part fr[i - 1]
 * is: one function the user wrote, already named. */
static int split_entry(const struct sym_loc *fr, int i)
{
    return i > 0 && fr[i - 1].split && !strcmp(fr[i - 1].function, fr[i].function) &&
           !strcmp(fr[i - 1].file, fr[i].file) && !strcmp(fr[i - 1].module, fr[i].module);
}

int sym_pick(const struct sym_loc *fr, int n, int *idx, int max)
{
    int k = 0;
    for (int with_lib = 0; with_lib < 2 && k == 0; with_lib++)
        for (int i = 0; i < n && k < max; i++)
            if (!sym_is_runtime(&fr[i]) && (with_lib || !fr[i].lib) && !split_entry(fr, i))
                idx[k++] = i;
    if (k == 0 && n > 0 && max > 0)
        idx[k++] = n - 1;
    return k;
}

void sym_format(const struct sym_loc *l, char *buf, size_t size)
{
    const char *base = strrchr(l->file, '/');
    base = base ? base + 1 : l->file;
    if (l->file[0] && l->line)
        snprintf(buf, size, "%s:%d (%s)", base, l->line, l->function[0] ? l->function : "?");
    else if (l->function[0])
        snprintf(buf, size, "%s (%s)", l->function, l->module);
    else if (l->module[0] && l->rel && l->rel != l->addr)
        snprintf(buf, size, "0x%llx (%s+0x%llx)", (unsigned long long)l->addr, l->module,
                 (unsigned long long)l->rel);
    else if (l->module[0])
        snprintf(buf, size, "0x%llx (%s)", (unsigned long long)l->addr, l->module);
    else
        snprintf(buf, size, "0x%llx", (unsigned long long)l->addr);
}
