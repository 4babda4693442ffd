/* trace.c - `closewise trace -- CMD`: run any program with
 * libclosewise-trace.so preloaded and name the line of code behind each
 * socket that read end of stream (or a reset) and was still open --grace
 * later. Whether a socket is still open comes from the kernel (/proc: any
 * process of CMD's tree holding the socket's inode), never from the
 * library's bookkeeping; the library only says where. */
#define _GNU_SOURCE
#include "trace.h"
#include "../probe/probe.h"
#include "../opts.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct topts {
    int64_t grace_ms;
    int check, json;
    const char *output;
    char **cmd;
};

static volatile sig_atomic_t want_report, got_signal;

static const struct cli_opt trace_opts[] = {
    {"grace", 'g', 'g', "D",
     "time a socket has to be closed after its end\n(default 100ms)", NULL},
    {"check", 0, 'c', NULL, "exit 1 when a socket leaked", NULL},
    {"json", 0, 'j', NULL, "the report as one JSON document", NULL},
    {"output", 'o', 'o', "FILE",
     "write the report to FILE (rewritten at each\nreport) instead of stderr", "@file"},
    {NULL, 0, 0, NULL, NULL, NULL}};

const struct cli_spec trace_spec = {
    "trace", "[options] -- CMD [ARGS...]",
    "Run CMD with libclosewise-trace.so preloaded (LD_PRELOAD). When CMD exits,\n"
    "and whenever closewise gets SIGUSR1, print every TCP socket of CMD's process\n"
    "tree that read end of stream or a reset and was still open --grace later,\n"
    "with the stack of the read that returned it and of the read before that,\n"
    "as file:line (function) (function names only without debug info).\n"
    "Nothing is printed when no socket leaked. Statically linked programs run\n"
    "untraced, with a note.",
    {trace_opts, NULL},
    "Exit: CMD's exit code (128+N when killed by signal N), 127 when it cannot\n"
    "be run; with --check, 1 when a socket leaked; 2 usage, 3 system error.\n"
    "The report goes to stderr (or --output). SIGTERM and SIGHUP are passed on\n"
    "to CMD.\n"
    "See closewise-trace(1)."};

/* Returns 0 to run, 1 after --help, -1 on a usage error. */
static int parse_args(struct topts *o, int argc, char **argv)
{
    struct cli_parser p;
    const char *arg;
    long long ms;
    int c;
    /* The usage's "-- CMD" stops the parser at CMD: its options are its own. */
    cli_getopt_init(&p, &trace_spec, argc, argv);
    while ((c = cli_getopt(&p, &arg)) != -1) {
        switch (c) {
        case CLI_HELPED: return 1;
        case 'c': o->check = 1; break;
        case 'j': o->json = 1; break;
        case 'o': o->output = arg; break;
        case 'g':
            if (cli_duration("--grace", arg, 0, 3600000, &ms) < 0)
                return -1;
            o->grace_ms = ms;
            break;
        default: return -1;   /* '?': cli_getopt() said why */
        }
    }
    if (optind >= argc) {
        cli_usage_error("no command to run (closewise trace [options] -- CMD ...)");
        return -1;
    }
    o->cmd = argv + optind;
    return 0;
}

static int by_inode(const void *a, const void *b)
{
    uint32_t x = ((const struct probe_fd *)a)->inode, y = ((const struct probe_fd *)b)->inode;
    return (x > y) - (x < y);
}

/* Sorted by inode, then holder (lowest pid, lowest fd first). */
static int by_inode_pid(const void *a, const void *b)
{
    const struct probe_fd *x = a, *y = b;
    int c = by_inode(a, b);
    return c ? c : x->pid != y->pid ? (x->pid > y->pid) - (x->pid < y->pid)
                                    : (x->fd > y->fd) - (x->fd < y->fd);
}

static void on_usr1(int sig)
{
    (void)sig;
    want_report = 1;
}

static void on_stop(int sig)
{
    got_signal = sig;
}

static void child(const struct topts *o, const struct trec_launch *l, int traced)
{
    signal(SIGINT, SIG_DFL);
    signal(SIGQUIT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGUSR1, SIG_DFL);
    if (traced)
        trec_launch_env(l);
    execvp(o->cmd[0], o->cmd);
    cli_error("trace: cannot run '%s': %s", o->cmd[0], strerror(errno));
    _exit(127);
}

/* Every socket descriptor of CMD's tree, sorted by inode; < 0 on error. */
static int tree_sockets(struct probe_fd **fds)
{
    pid_t *pids;
    int np = probe_tree_pids(&pids);
    *fds = NULL;
    if (np <= 0) {
        free(np < 0 ? NULL : pids);
        return np;
    }
    int nf = probe_tree_fds(pids, (size_t)np, fds);
    free(pids);
    if (nf > 1)
        qsort(*fds, (size_t)nf, sizeof **fds, by_inode_pid);
    return nf;
}

/* Judge every end whose grace is over against one look at the tree's
 * descriptors (a busy program ends thousands of sockets a second). */
static void check(struct trec *t, int64_t grace_ms, int64_t now)
{
    struct probe_fd *fds = NULL;
    int nf = -2;
    for (size_t i = 0; i < trec_nends(t); i++) {
        struct trec_end *e = trec_endat(t, i);
        if (e->checked || now < e->t_ms + grace_ms)
            continue;
        if (nf == -2)
            nf = tree_sockets(&fds);
        struct probe_fd key = {.inode = (uint32_t)e->ino};
        const struct probe_fd *h = nf > 0 ? bsearch(&key, fds, (size_t)nf, sizeof key, by_inode)
                                          : NULL;
        while (h && h > fds && h[-1].inode == h->inode)
            h--;
        e->checked = 1;
        e->leaked = h != NULL;
        if (h) {
            e->holder = h->pid;
            e->holder_fd = h->fd;
            probe_comm(e->holder, e->comm);
        }
    }
    free(fds);
    trec_drop_closed(t);
}

static void nap(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);   /* a signal ends it early: fine */
}

static void handle_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    /* The terminal sends these to CMD as well: wait for it to act. */
    signal(SIGINT, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
}

/* Watch CMD until it exits; returns its wait status. */
static int watch(const struct topts *o, const struct trace_report *rep, struct trec *t,
                 pid_t root)
{
    int status = 0, done = 0;
    int64_t step = o->grace_ms / 4 < 5 ? 5 : o->grace_ms / 4 > 50 ? 50 : o->grace_ms / 4;
    while (!done) {
        probe_reap(root, &status, &done);
        if (done)
            break;
        if (t) {
            trec_poll(t);
            check(t, o->grace_ms, cw_now_ms());
        }
        if (got_signal) {
            kill(root, got_signal);
            got_signal = 0;
        }
        if (want_report) {
            want_report = 0;
            trace_report(t, rep, NULL);
        }
        nap(step);
    }
    return status;
}

static int trace_main(const struct topts *o)
{
    struct trec_launch l;
    int traced = trec_launch_prepare(&l, o->cmd[0]) == 0;
    if (!traced && !l.lib[0]) {
        cli_error("trace: %s", l.why);
        return CLI_SYSTEM;
    }
    if (!traced)
        cli_error("trace: no trace: %s", l.why);
    struct trace_report rep = {.cmd = o->cmd, .grace_ms = o->grace_ms, .json = o->json,
                               .output = o->output, .note = traced ? NULL : l.why};
    FILE *out = o->output ? fopen(o->output, "w") : NULL;
    if (o->output && !out) {
        cli_error("trace: cannot write %s: %s", o->output, strerror(errno));
        trec_launch_done(&l);
        return CLI_SYSTEM;
    }
    if (out)
        fclose(out);
    struct trec *t = traced ? trec_open(l.file) : NULL;
    if (traced && !t) {
        cli_error("trace: cannot read the record file %s", l.file);
        trec_launch_done(&l);
        return CLI_SYSTEM;
    }
    probe_tree_init();
    handle_signals();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        cli_error("trace: fork: %s", strerror(errno));
        trec_free(&t);
        trec_launch_done(&l);
        return CLI_SYSTEM;
    }
    if (pid == 0)
        child(o, &l, traced);
    int status = watch(o, &rep, t, pid);
    char note[320] = "";
    if (t) {
        trec_settle(t);
        if (!trec_started(t, 0) && !(WIFEXITED(status) && WEXITSTATUS(status) == 127)) {
            snprintf(note, sizeof note, "%s did not load libclosewise-trace.so (setuid, "
                     "or a static interpreter?)", o->cmd[0]);
            cli_error("trace: no trace: %s", note);
            rep.note = note;
        }
    }
    int leaks = trace_report(t, &rep, &status);
    if (t && getenv("CLOSEWISE_TRACE_DEBUG")) {
        struct trec_stats st;
        trec_stats(t, &st);
        cli_error("trace: held %zu processes, %zu module lists, %zu modules (at most %zu, "
                  "%zu, %zu)", st.procs, st.lists, st.mods, st.procs_max, st.lists_max,
                  st.mods_max);
    }
    trec_free(&t);
    trec_launch_done(&l);
    if (leaks < 0)
        return CLI_SYSTEM;
    if (o->check && leaks)
        return CLI_FOUND;
    return WIFEXITED(status) ? WEXITSTATUS(status)
         : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : CLI_SYSTEM;
}

int cmd_trace(int argc, char **argv)
{
    struct topts o = {.grace_ms = 100};
    int rc = parse_args(&o, argc, argv);
    if (rc != 0)
        return rc > 0 ? CLI_OK : CLI_USAGE;
    return trace_main(&o);
}
