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
    /* Before saying and ending, wait until the connection has been quiet
     * (no byte either way) for --settle: the seed's idle close, which
     * finds the client settled in its steady read loop. */
    int settle;
};

extern const struct probe_scenario probe_scenarios[];
extern const size_t probe_nscenarios;
const struct probe_scenario *probe_scenario_find(const char *name);

/* In order of severity: --repeat reports the worst one a run saw.
 * SKIP (nothing to check) and the server mode's LOST and RST_CLOSE are
 * here so that one scale ranks both modes. */
enum probe_verdict { PROBE_PASS, PROBE_SKIP, PROBE_NOCONN, PROBE_HANG, PROBE_RST_CLOSE,
                     PROBE_LEAK, PROBE_LOST };

/* "PASS", "LEAK", "NO-CONNECT", ... */
const char *probe_verdict_name(int v);

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

/* --server: a scenario against a server. Each is one connection. */
struct probe_sscenario {
    const char *name;
    const char *what;       /* one line for --help and --list */
    int send;               /* 0 nothing, 1 --send DATA, 2 --large DATA,
                               3 the first half of DATA */
    int extra;              /* then 64 KiB more input, left unread by a
                               server that closes after the request */
    int slow;               /* read through a small receive buffer, one
                               read per --slow-read interval */
    int half_close;         /* once quiet for --settle, shutdown(SHUT_WR) */
    int reset;              /* once quiet for --settle, abortive close */
    int idle;               /* nothing: how long does the server wait? */
};

extern const struct probe_sscenario probe_sscenarios[];
extern const size_t probe_nsscenarios;
const struct probe_sscenario *probe_sscenario_find(const char *name);

/* What one server-mode scenario saw. */
struct probe_sresult {
    int64_t reply_bytes;
    int end;                /* the server's end as we saw it: CW_END_EOF,
                               CW_END_RESET, CW_END_NONE (never), ... */
    int64_t end_ms;         /* from the request (our FIN, the connect) to it */
    int matched;            /* --expect: 1 matched, 0 not, -1 not asked */
    int local;              /* the server's socket is in our namespace */
    pid_t pid;              /* its holder, 0 unknown */
    char comm[16];
    int fd;
    int state;              /* its TCP state when judged, 0 gone/unknown */
    uint32_t rqueue;
    int reset_seen;         /* BPF named the close() that reset it */
    char reset[512];        /* ... in words, with file:line */
    char note[768];         /* the verdict's detail */
};

struct probe_result {
    const char *name;       /* the scenario's */
    const struct probe_scenario *sc;   /* client mode; NULL with --server */
    struct probe_sresult srv;          /* --server */
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
    int64_t run_ms;         /* how long the run took */
    int runs, worst_runs;   /* --repeat: runs, and how many saw this verdict */
};

#define PROBE_MAX_SCENARIOS 32

enum probe_format { PROBE_TEXT, PROBE_JSON, PROBE_JUNIT, PROBE_TAP };

struct probe_opts {
    const char *host;
    int port;
    int64_t grace_ms, hang_ms, drip_ms, settle_ms;
    int format;             /* enum probe_format */
    int reuse, show_output, repeat;
    int where;              /* --where (default on), probe_where.c */
    char **cmd;             /* NULL-terminated, after "--" */
    const struct probe_scenario *list[PROBE_MAX_SCENARIOS];
    size_t nlist;
    /* --server HOST:PORT */
    const char *server;     /* as given */
    char shost[256];
    int sport;
    char *send, *large;     /* --send, --large (unescaped, malloc'ed) */
    size_t send_len, large_len;
    const char *expect, *large_expect;   /* REGEX, NULL: none */
    int64_t slow_ms;
    int no_bpf;
    const struct probe_sscenario *slist[PROBE_MAX_SCENARIOS];
    size_t nslist;
};

/* --server: run every scenario of o->slist once against the server,
 * res[i] for slist[i]. Returns CLI_OK, or CLI_SYSTEM / CLI_USAGE after
 * printing why. */
int probe_server_run(const struct probe_opts *o, struct probe_result *res);
/* What the last run found out about the server, for the report:
 * "local, pid 123 (nginx); resets traced with BPF", ... */
const char *probe_server_about(void);
/* "12ms" below 10 s, "12.3s", "4m05s" above, into buf. */
const char *probe_ms(int64_t ms, char *buf, size_t size);

/* The reports of probe_report.c; probe.c has the client mode's text and
 * JSON. detail is the verdict's text for a result, from the one function
 * that writes it (probe.c). */
typedef const char *probe_detail_fn(const struct probe_result *r, char *buf, size_t size);
void probe_report_junit(const struct probe_opts *o, const struct probe_result *r, size_t n,
                        probe_detail_fn *detail);
void probe_report_tap(const struct probe_opts *o, const struct probe_result *r, size_t n,
                      probe_detail_fn *detail);
void probe_report_server_text(const struct probe_opts *o, const struct probe_result *r,
                              size_t n);
void probe_report_server_json(const struct probe_opts *o, const struct probe_result *r,
                              size_t n);
/* "LEAK (3/5 runs)" after --repeat, else the verdict's name. */
const char *probe_verdict_runs(const struct probe_result *r, char *buf, size_t size);

/* Run CMD once, serving its connections scenario after scenario
 * (res[i] for list[i]): one scenario per run, or all in order with
 * --reuse. l is the probe's (non-blocking) listener; it stays the caller's. Returns CLI_OK, or
 * CLI_SYSTEM / CLI_USAGE after printing why. */
int probe_run(const struct probe_opts *o, cw_listener *l, int port,
              const struct probe_scenario *const *list, size_t n,
              struct probe_result *res);

/* A run's event loop and sock_diag handle (the caller frees both).
 * Returns CLI_OK, or CLI_SYSTEM after printing why. */
int probe_open(cw_loop **loop, cw_diag **diag);

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
