/* trace.h - inside libclosewise-trace.so: the interposers (preload.c) and
 * the record writer (record.c). Nothing here is exported but the libc
 * names the library interposes (see trace.map). */
#ifndef CW_TRACE_H
#define CW_TRACE_H

#include "trace_format.h"

#include <stddef.h>
#include <stdint.h>

/* The real libc functions the writer needs (never our own wrappers). */
extern int (*cw__tr_real_close)(int);

/* One E/C/S record for fd. pcs: the stack of this call (E only). */
void cw__tr_ended(int fd, const struct cw_trace_slot *s, int eof, const char *func,
                  void *const *pcs, int n);
void cw__tr_closed(int fd, const struct cw_trace_slot *s, const char *what, int how);

/* A P line for this process (at start, and in a fork child, which also
 * forgets the modules its parent wrote). */
void cw__tr_started(void);

/* Take the record file's name from the environment. Returns 0 when
 * tracing is asked for. */
int cw__tr_record_init(void);

/* Return addresses of the caller's stack, our own frames left out: up to
 * max of the first walk frames (walk <= CW_TRACE_DEPTH + 8). Unwinding
 * costs ~170 ns a frame (bench/trace.sh), so the stack of every read
 * walks only CW__TR_HOT_WALK frames (ours, a sanitizer's, then the
 * program's innermost ones); an end of stream, rare, walks them all. */
#define CW__TR_HOT_WALK 12
#define CW__TR_FULL_WALK (CW_TRACE_DEPTH + 8)
int cw__tr_stack(void **pcs, int max, int walk);

int64_t cw__tr_now_ms(void);

extern struct cw_trace_slot *cw__tr_table;

#endif
