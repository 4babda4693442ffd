/* symbolize.h - user-space addresses of a live process to
 * `file:line (function)`, with elfutils libdw: line numbers from the
 * binary's DWARF debug info, function names from its symbol table (so a
 * binary without debug info still gets names). Used by `closewise resets`
 * for the stack of a close(), by `closewise trace` and `probe --where`
 * for the stacks libclosewise-trace.so recorded.
 * Built without libdw (CW_HAVE_DW=0), every lookup fails and callers
 * print raw addresses. */
#ifndef CW_CLI_SYMBOLIZE_H
#define CW_CLI_SYMBOLIZE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct sym;   /* caches one process's module map per pid */

struct sym_loc {
    uint64_t addr;
    char module[128];    /* basename of the ELF file, "" if unknown */
    char function[128];  /* "" if unknown */
    char file[256];      /* source file as the debug info names it, "" if unknown */
    int line;            /* 0 if unknown */
    uint64_t rel;        /* addr as the ELF file numbers it (addr - load bias),
                            for addr2line -e; 0 if unknown */
    int lib;             /* 1: code of libclosewise's core I/O layer (a compile
                            unit from src/net/ of a module holding
                            libclosewise): how the program's call got here */
    int split;           /* 1: a part gcc split off a function f (f.part.N),
                            called from f's own entry: the next frame */
};

/* A new symbolizer; NULL when out of memory. The caller frees it with
 * sym_free. */
struct sym *sym_new(void);
void sym_free(struct sym **s);

/* At most this many frames for one address: functions inlined into one
 * another there, then the function that holds the code. */
#define SYM_INLINE 4

/* Describe addr in process pid's address space, as up to max frames
 * innermost first: each function inlined at addr (named with the line
 * inside it), then the one it was inlined into with the line of the call
 * (from the debug info's inline scopes), down to the function that holds
 * the code. For a return address (is_ret = 1) the line is the one of the
 * call, not of the instruction after it. Returns how many frames (>= 1
 * when max >= 1) if the address is in a known module (module set;
 * function/file/line as far as known), -1 if the process or the module
 * is gone (out[0] holds addr). */
int sym_lookup(struct sym *s, pid_t pid, uint64_t addr, int is_ret, struct sym_loc *out,
               int max);

/* Whether addr is in a module of process pid's map (cached, or read now):
 * whether pid's map can name it. */
int sym_has(struct sym *s, pid_t pid, uint64_t addr);

/* Describe addr as an address of the ELF file path loaded at bias (its
 * load bias: runtime address minus the file's virtual address), for
 * stacks a process recorded itself and that outlive it (`closewise trace`,
 * `probe --where`). Returns how many frames if the file has addr (out
 * and max as for sym_lookup), -1 if not or unreadable (out->module still
 * named). */
int sym_lookup_file(struct sym *s, const char *path, uint64_t bias, uint64_t addr,
                    int is_ret, struct sym_loc *out, int max);

/* The user registers of a thread at a moment (x86-64: the ones a call
 * frame rule may use). */
struct sym_regs {
    uint64_t ip, sp, bp, bx, r12, r13, r14, r15;
};

/* Unwind the stack of thread tid of process pid from regs and a copy of
 * len bytes of its stack taken at regs->sp, with the call frame
 * information (.eh_frame) of each module: works without frame pointers.
 * Stores up to max program counters, pcs[0] = regs->ip and then return
 * addresses (look those up with is_ret = 1); returns how many (>= 1 when
 * max >= 1). The stack ends where the copy or the CFI ends. */
int sym_unwind(struct sym *s, pid_t pid, pid_t tid, const struct sym_regs *regs,
               const void *stack, size_t len, uint64_t *pcs, int max);

/* Drop what is cached about pid (after it exec'ed or exited). */
void sym_forget(struct sym *s, pid_t pid);

/* Let go of the maps of processes found exited at the previous call, and
 * mark those exited now (a zombie counts as alive until reaped). A map is
 * read on first sight and kept, so that a process's events read after it
 * exited are still named: call this between batches that read every event
 * sent before them, and each exited process's events have all been read
 * when its map goes. Without it, maps stay until SYM_CACHE others push
 * them out (each holds its modules' debug info: 18 MB with libc's). */
void sym_sweep(struct sym *s);

/* Whether the frame is in the C library, the dynamic loader, a sanitizer
 * runtime or the trace preload: how a call is carried out, not where. */
int sym_is_runtime(const struct sym_loc *l);

/* Which frames of a stack (fr[0] innermost) to name: up to max indices
 * into idx, innermost first, of the program's own frames, leaving out the
 * runtime's (sym_is_runtime) and libclosewise's core I/O layer (lib), so
 * that the first one named is the line that asked for the call, and the
 * entry frame of a function gcc split in two (split). A stack
 * with no such frame names its library frames; one with runtime frames
 * only, its outermost. Returns how many (0 when n or max is 0). */
int sym_pick(const struct sym_loc *fr, int n, int *idx, int max);

/* "file:line (function)" with the file's basename, or what is known:
 * "function (module)", "0xaddr (module+0xrel)" (a module loaded where its
 * addresses say, a non-PIE program: "0xaddr (module)"), "0xaddr". */
void sym_format(const struct sym_loc *l, char *buf, size_t size);

#endif
