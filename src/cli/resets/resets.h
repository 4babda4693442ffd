/* resets.h - what the parts of `closewise resets` share. */
#ifndef CW_CLI_RESETS_H
#define CW_CLI_RESETS_H

#include "../cli.h"

#include <signal.h>
#include <sys/types.h>

struct resets_opts {
    int json, all, exit_on_reset, no_bpf;
    pid_t pid;
    const char *comm, *container;
    unsigned reasons;            /* bit per enum cw_rst_kind; 0 = every one */
    long long duration_ms;       /* 0 = until interrupted */
    long long count;             /* 0 = no limit */
    long long interval_ms;       /* counter sampling (fallback only) */
};

extern volatile sig_atomic_t resets_stop;

/* The fallback without BPF (why: the reason, for the one-line notice):
 * print per-interval deltas of the kernel's abort counters in
 * /proc/net/netstat (this network namespace, every process). Returns a
 * CLI_* exit code. */
int resets_counters(const struct resets_opts *o, int64_t deadline, const char *why);

/* "HH:MM:SS.mmm" (text) or ISO 8601 UTC (json) for a wall-clock time in
 * nanoseconds since the epoch. */
void resets_time(char *buf, size_t size, int64_t wall_ns, int json);

#endif
