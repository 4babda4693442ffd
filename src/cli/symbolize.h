/* symbolize.h - user-space addresses of a live process to
 * `file:line (function)`, with elfutils libdw: line numbers from the
 * binary's DWARF debug info, function names from its symbol table (so a
 * binary without debug info still gets names). Used by `closewise resets`
 * for the stack of a close(); meant for the probe's --where as well.
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
};

/* A new symbolizer; NULL when out of memory. The caller frees it with
 * sym_free. */
struct sym *sym_new(void);
void sym_free(struct sym **s);

/* Describe addr in process pid's address space. For a return address
 * (is_ret = 1) the line is the one of the call, not of the instruction
 * after it. Returns 0 if the address is in a known module (out->module
 * set; function/file/line as far as known), -1 if the process or the
 * module is gone. */
int sym_lookup(struct sym *s, pid_t pid, uint64_t addr, int is_ret, struct sym_loc *out);

/* The return address of the function executing at ip, from its module's
 * call frame information; words[] holds the n stack words starting at its
 * stack pointer. Finds the caller of a frameless
 * function (a libc syscall wrapper) that a frame-pointer walk skips.
 * Returns 0 and sets *ret, or -1. */
int sym_caller(struct sym *s, pid_t pid, uint64_t ip, const uint64_t *words, size_t n,
               uint64_t *ret);

/* Drop what is cached about pid (after it exec'ed or exited). */
void sym_forget(struct sym *s, pid_t pid);

/* "file:line (function)" with the file's basename, or what is known:
 * "function (module)", "0xaddr (module)", "0xaddr". */
void sym_format(const struct sym_loc *l, char *buf, size_t size);

#endif
