/* inspect.h - what the inspector subcommands (stat, ls, watch, kill)
 * share: filter options, dumping with attribution, JSON and text output. */
#ifndef CW_CLI_INSPECT_H
#define CW_CLI_INSPECT_H

#include "../cli.h"
#include "../opts.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

/* How owners are found (--owners). AUTO and BPF both use the BPF
 * iterator when it loads and fall back to /proc otherwise; AUTO is the
 * default, kept apart so that a cheaper choice can be made there later. */
enum { INSP_OWNERS_AUTO = 0, INSP_OWNERS_BPF, INSP_OWNERS_PROC };

/* Which network namespaces to look into (--netns). */
enum { INSP_NETNS_AUTO = 0, INSP_NETNS_SELF, INSP_NETNS_ALL, INSP_NETNS_PATH };

/* Command-line selection of sockets. */
struct insp_sel {
    struct cw_diag_filter f;
    int pid;            /* keep only sockets of this process, 0 = any */
    int have_cookie;
    uint64_t cookie;
    int narrowed;       /* a port, address, pid or cookie was given */
    int netns;          /* INSP_NETNS_*: AUTO is every namespace when
                           privileged, the caller's otherwise */
    char netns_path[256];
    int owners;         /* INSP_OWNERS_*: --owners, --no-bpf, or the
                           environment (CLOSEWISE_OWNERS, CLOSEWISE_NO_BPF) */
    int verbose;        /* --verbose: say how owners were found */
    int quiet;          /* insp_open() prints errors, not notes */
    struct cw_attr_stats attr;   /* of the last insp_collect() */
    const char *bpf_why;         /* why BPF was not used, if it was not */
};

/* Owners through a BPF task_file iterator (owners_bpf.c): CW_OK, or a
 * negative code with *why saying why BPF cannot be used here. */
int insp_bpf_attribute(cw_diag *d, struct cw_sock *v, size_t n, struct cw_attr_stats *st,
                       const char **why);

/* The iterator alone: every (inode, pid, fd) holding one of inodes (n,
 * distinct, nonzero), in *refs (malloc'ed, the caller frees). CW_OK, or a
 * negative code with *why saying why BPF cannot be used here. */
int insp_bpf_refs(uint32_t *inodes, size_t n, struct cw_fd_ref **refs, size_t *nrefs,
                  const char **why);

/* getopt_long codes for the shared options. */
enum {
    INSP_OPT_STATE = 1000, INSP_OPT_PORT, INSP_OPT_SPORT, INSP_OPT_DPORT,
    INSP_OPT_ADDR, INSP_OPT_PID, INSP_OPT_COOKIE, INSP_OPT_V4, INSP_OPT_V6,
    INSP_OPT_NETNS, INSP_OPT_NO_BPF, INSP_OPT_VERBOSE, INSP_OPT_OWNERS
};

/* The filter options as an option table (stat, ls, kill: their --help
 * and completion come from it), and --state apart: watch has no --state. */
extern const struct cli_opt insp_filter_opts[];
extern const struct cli_opt insp_state_opt[];
/* The filters watch takes: not --pid and --cookie. */
extern const struct cli_opt insp_watch_filter_opts[];

void insp_sel_init(struct insp_sel *s);

/* An inspector command, as a table for insp_run(): parse the spec's
 * options (the filters into the insp_sel, which must be the first member
 * of the command's options struct; the rest through option()), check
 * them, open sock_diag on the namespaces chosen, dump (and name owners
 * when attribute() says so), report, clean up. One code path for target
 * selection, namespaces and filters. */
struct insp_cmd {
    const struct cli_spec *spec;
    /* The command's own option id with its value: CLI_OK or CLI_USAGE. */
    int (*option)(struct insp_sel *sel, int id, const char *arg);
    /* After parsing: defaults and combinations. CLI_OK or CLI_USAGE. */
    int (*check)(struct insp_sel *sel);
    /* Whether to name every socket's owners before report(). */
    int (*attribute)(const struct insp_sel *sel);
    /* Print; the sockets and their holders are valid until it returns. */
    int (*report)(cw_diag *d, struct insp_sel *sel, struct cw_sock *v, size_t n);
};

/* Run cmd. sel points at the command's zeroed options struct. Returns
 * the exit code. */
int insp_run(const struct insp_cmd *cmd, int argc, char **argv, struct insp_sel *sel);

/* Parse argv as cmd says, without running: CLI_OK, CLI_USAGE or CLI_HELPED. */
int insp_parse(const struct insp_cmd *cmd, int argc, char **argv, struct insp_sel *sel);

/* Handle one shared option. Returns 1 if opt was one, 0 if not, or -1
 * after printing an error for a bad value. */
int insp_sel_option(struct insp_sel *s, int opt, const char *arg);

/* Dump what s selects and, when attribute is set (or s has a pid), name
 * the owners (s->attr says how) and apply the pid/cookie filters. On
 * success *out (malloc'ed, caller frees) holds *n sockets, whose holders
 * stay valid until d is closed or attributes again. Returns CLI_OK or an
 * exit code after printing the error. */
int insp_collect(cw_diag *d, struct insp_sel *s, int attribute,
                 struct cw_sock **out, size_t *n);

/* Name the owners of v (BPF when it loads and s allows it, /proc
 * otherwise), filling s->attr. Returns a cw result code. */
int insp_attribute(cw_diag *d, struct insp_sel *s, struct cw_sock *v, size_t n);

/* Open a cw_diag on the namespaces s selects, or print why not. Returns
 * CLI_OK, CLI_USAGE or CLI_SYSTEM. */
int insp_open(const struct insp_sel *s, cw_diag **d);

/* "bpf", "proc" or "none". */
const char *insp_method_name(int method);

/* Every holder "1234/nginx fd 7,1240/nginx fd 7" into buf. */
const char *insp_fmt_holders(const struct cw_sock *s, char *buf, size_t size);

/* The holder's container identity, or its cgroup path, or "-". */
const char *insp_where(const struct cw_sock *s);

/* The JSON members "netns", "holders" (and "cgroup", "container" of the
 * first holder) of one socket, each preceded by a comma. */
void insp_json_owner_extra(const struct cw_sock *s);

/* Text helpers. */
const char *insp_state_name(int state);
const char *insp_timer_name(int timer);
const char *insp_owner_name(int owner);
/* "12.3s", "4m05s", "2h03m" into buf. */
const char *insp_fmt_ms(uint64_t ms, char *buf, size_t size);
/* "1234/nginx fd 7", "listener :80 1234/nginx", "-" ... into buf. */
const char *insp_fmt_owner(const struct cw_sock *s, char *buf, size_t size);

/* Fast formatting for listings of 10,000s of sockets, where printf is
 * most of the user-space time: append to p, return the new end. */
char *insp_put_u(char *p, unsigned long long v);
char *insp_put_pad(char *p, const char *s, size_t len, int width, int right);
/* The socket's local or peer address, like cw_sock_addr(); buf has at
 * least 64 bytes. Returns the length. */
int insp_addr(const struct cw_sock *s, int peer, char *buf);

#endif
