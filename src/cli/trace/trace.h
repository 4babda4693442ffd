/* trace.h - reading what libclosewise-trace.so (src/trace/) recorded, for
 * `closewise trace` (trace.c) and `closewise probe --where`
 * (probe/probe_where.c): starting a traced program (trace_launch.c) and
 * reading its records and stacks (trace_records.c). */
#ifndef CW_CLI_TRACE_H
#define CW_CLI_TRACE_H

#include "../cli.h"
#include "../../trace/trace_format.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* --- launching (trace_launch.c) --- */

/* How CMD can be traced. */
struct trec_launch {
    char lib[4096];        /* libclosewise-trace.so, "" if not found */
    char file[4096];       /* the record file (made by trec_launch_prepare) */
    char why[256];         /* "" or why there will be no trace, e.g. "static binary" */
};

/* Find the library, look at CMD (argv[0], through PATH and "#!"), and make
 * an empty record file. Returns 0 when CMD will be traced; -1 with
 * l->why set when it cannot be (CMD still runs, untraced). */
int trec_launch_prepare(struct trec_launch *l, const char *cmd0);

/* In the child, before exec: LD_PRELOAD (ahead of any the user set),
 * CW_TRACE_FILE, and ASan's link-order check relaxed (an ASan program
 * otherwise refuses a preload that comes before its runtime). */
void trec_launch_env(const struct trec_launch *l);

/* Remove the record file. */
void trec_launch_done(struct trec_launch *l);

/* --- records (trace_records.c) --- */

struct trec_mod;   /* an ELF file at a load bias, shared by the processes mapping it */

struct trec_stack {
    int n;
    uint64_t pc[CW_TRACE_DEPTH];
    struct trec_mod *mod[CW_TRACE_DEPTH];   /* held while the stack is: the
                                               module of pc, NULL unknown */
};

/* An E record: a read returned end of stream or a reset. */
struct trec_end {
    pid_t pid;
    int fd;
    uint64_t ino;
    int64_t t_ms;              /* CLOCK_MONOTONIC, as cw_now_ms() */
    int eof;                   /* 1 end of stream, 0 ECONNRESET */
    char func[16];
    struct trec_stack at, last;
    int64_t t_closed;          /* a C record of the same pid and fd, 0 none */
    int checked, leaked;       /* for the caller */
    pid_t holder;              /* ... a process still holding it */
    int holder_fd;
    char comm[16];
};

struct trec;

/* Open the record file. Returns NULL when out of memory. */
struct trec *trec_open(const char *path);
void trec_free(struct trec **t);

/* Read the lines added since the last call. */
void trec_poll(struct trec *t);

/* Read the lines added since the last call, and let go of every process
 * that has exited by now (at the end of a trace: trec_poll lets them go
 * about a second after). */
void trec_settle(struct trec *t);

/* The E records read so far, in file order. */
size_t trec_nends(const struct trec *t);
struct trec_end *trec_endat(struct trec *t, size_t i);

/* Forget the E records checked and found closed in time: a long trace
 * keeps only the ends it may still report (index order is kept). */
void trec_drop_closed(struct trec *t);

/* The latest E record for socket inode ino, or NULL. */
struct trec_end *trec_find(struct trec *t, uint64_t ino);

/* What the reader holds about the traced processes: process entries,
 * module lists (one per process image), module entries; now and at most
 * at once. For tests and for CLOSEWISE_TRACE_DEBUG. */
struct trec_stats {
    size_t procs, lists, mods;
    size_t procs_max, lists_max, mods_max;
};
void trec_stats(const struct trec *t, struct trec_stats *out);

/* Has pid (or any process, pid 0) started tracing (a P record)? */
int trec_started(const struct trec *t, pid_t pid);

/* Where a recorded stack was: the first frame outside the runtime
 * (preload, sanitizers, libc), as "file:line (function)". */
void trec_site(struct trec *t, pid_t pid, const struct trec_stack *s, char *buf, size_t size);

/* The frames of a recorded stack from trec_site's frame on, each as
 * trec_site formats it, into out[0..CW_TRACE_DEPTH). Returns how many. */
typedef char trec_text[256];
int trec_frames(struct trec *t, const struct trec_stack *s, trec_text *out);

/* The last read on fd of live process pid, read from its table (socket
 * inode ino, 0: any) and symbolized as trec_site does. Returns 0, or -1
 * when none is known (no read yet, another socket now, process gone). */
int trec_last_read(struct trec *t, pid_t pid, int fd, uint64_t ino, char *buf, size_t size);

/* --- the report (trace_report.c) --- */

struct trace_report {
    char **cmd;
    int64_t grace_ms;
    int json;
    const char *output;     /* a file rewritten at each report, NULL: stderr */
    const char *note;       /* why CMD is not traced, "" or NULL when it is */
};

/* Print every leaked socket of t (NULL: none known) as o says; status is
 * CMD's wait status once it has exited, NULL while it runs. Returns how
 * many leaked, or -1 when the output cannot be written. */
int trace_report(struct trec *t, const struct trace_report *o, const int *status);

#endif
