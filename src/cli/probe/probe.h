/* probe.h - `closewise probe`: serve a client program every way servers
 * and networks end connections, and ask the kernel whether the client
 * closed its side. Shared by probe.c (command line, report), probe_run.c
 * (one run of the client), probe_tree.c (its process tree) and
 * probe_scenarios.c (the table of scenarios). */
#ifndef CW_CLI_PROBE_H
#define CW_CLI_PROBE_H

#include "../cli.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct probe_scenario {
    const char *name;
    const char *what;       /* one line for --help */
    int wait_input_ms;      /* first wait this long for the client's bytes */
    int wait_line;          /* ... for a whole line, not just bytes */
    const char *say;        /* then send this (NULL: nothing) */
    int drip;               /* one byte per --drip interval */
    /* How the server ends it once it has said its piece, in the library's
     * vocabulary: CW_END_GRACEFUL (shutdown(SHUT_WR), drain briefly,
     * close), CW_END_ABORT (SO_LINGER {1,0} + close) or CW_END_NONE
     * (never: the client has to give up). */
    enum cw_end end;
    int half_close;         /* GRACEFUL: read on until the client closes */
};

extern const struct probe_scenario probe_scenarios[];
extern const size_t probe_nscenarios;
const struct probe_scenario *probe_scenario_find(const char *name);

enum probe_verdict { PROBE_NOCONN, PROBE_PASS, PROBE_LEAK, PROBE_HANG };

/* The first leaked socket of a scenario, as the kernel showed it. */
struct probe_leak {
    pid_t pid;              /* 0: a process outside the tree, or unreadable */
    int fd;
    char comm[16];
    int state;              /* CW_TCP_CLOSE_WAIT, or 0: reset, fd still open */
    uint32_t rqueue;        /* Recv-Q; for CLOSE_WAIT it counts the FIN */
    int64_t held_ms;        /* since our FIN/RST, as long as it was seen */
    int closed_late;        /* the client did close it, after the grace */
    char where[320];        /* --where: the line behind it, "" unknown */
};

struct probe_result {
    const struct probe_scenario *sc;
    int verdict;            /* enum probe_verdict */
    int conns;              /* connections the client made */
    int leaks;              /* connections that leaked */
    int64_t close_ms;       /* slowest close after our FIN/RST, -1 none */
    int closed_first;       /* connections the client closed before we ended them */
    int64_t hang_ms;        /* HANG: how long the connection stayed open */
    struct probe_leak leak;
    pid_t pid;              /* CMD's pid */
    int status;             /* its wait status, valid unless killed */
    int killed;             /* it was still running: probe killed it */
};

#define PROBE_MAX_SCENARIOS 32

struct probe_opts {
    const char *host;
    int port;
    int64_t grace_ms, hang_ms, drip_ms;
    int json, reuse, show_output;
    int where;              /* --where (default on), probe_where.c */
    char **cmd;             /* NULL-terminated, after "--" */
    const struct probe_scenario *list[PROBE_MAX_SCENARIOS];
    size_t nlist;
};

/* Run CMD once, serving its connections scenario after scenario
 * (res[i] for list[i]): one scenario per run, or all in order with
 * --reuse. l is the probe's (non-blocking) listener; it stays the caller's. Returns CLI_OK, or
 * CLI_SYSTEM / CLI_USAGE after printing why. */
int probe_run(const struct probe_opts *o, cw_listener *l, int port,
              const struct probe_scenario *const *list, size_t n,
              struct probe_result *res);

/* Set by SIGINT/SIGTERM: end the run, clean up, report. */
extern volatile int probe_interrupted;

/* --- the process tree (probe_tree.c) --- */

/* One socket descriptor of a process of the tree. */
struct probe_fd {
    pid_t pid;
    int fd;
    uint32_t inode;
};

/* Become the reaper of every orphaned descendant, so a client that
 * daemonizes stays in the tree (and is reaped by us). */
void probe_tree_init(void);

/* Every descendant of this process, from /proc. *out is malloc'ed.
 * Returns the count, or -1 on error. */
int probe_tree_pids(pid_t **out);

/* Every socket descriptor of those processes. *out is malloc'ed.
 * Returns the count. */
int probe_tree_fds(const pid_t *pids, size_t n, struct probe_fd **out);

/* The command name of pid into comm[16] ("" when gone). */
void probe_comm(pid_t pid, char comm[16]);

/* Reap every exited child without waiting; root's status goes to
 * *status and *root_done is set. */
void probe_reap(pid_t root, int *status, int *root_done);

/* SIGTERM the whole tree (root's process group and every descendant),
 * SIGKILL what is left after a short wait, and reap it all. Bounded. */
void probe_tree_kill(pid_t root, int *status, int *root_done);

/* --- where it leaked (probe_where.c): the client under libclosewise-trace.so --- */

/* Decide once whether CMD runs traced (enabled, and not a static
 * binary); probe_where_child sets the environment in the forked child. */
void probe_where_init(int enabled, char *const cmd[]);
void probe_where_child(void);
/* The line behind a leaked socket (pid, fd, its inode, our FIN unread),
 * e.g. "EOF returned by recv() at client.c:41 (run_once) and never
 * closed", or why it is unknown. Call while pid is alive. */
void probe_where_explain(pid_t pid, int fd, uint32_t inode, int rqueue, char *buf,
                         size_t size);
void probe_where_done(void);

#endif
