/* server.c - `closewise server`: run the reference authentication server
 * (docs/PROTOCOL.md, closewise-server(1)). */
#define _GNU_SOURCE
#include "../cli.h"
#include "../../net/internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

enum {
    OPT_LISTEN = 'l', OPT_PORT = 'p', OPT_CREDS = 'c', OPT_USER = 'u', OPT_QUIET = 'q',
    OPT_PORT_FILE = 256, OPT_IDLE, OPT_LTIME, OPT_LTIMEOUT, OPT_WTIMEOUT,
    OPT_MAXCONN, OPT_CLOSE_MODE, OPT_LINGER0, OPT_MAXFAIL, OPT_AUTHWIN,
    OPT_LOGIN, OPT_MAXUNAUTH, OPT_SNDBUF, OPT_NETFAIL, OPT_ACCTFAIL, OPT_V6,
    OPT_V6NET, OPT_WORKERS, OPT_AUTH_THREADS, OPT_AUTH_QUEUE,
    OPT_AUTH_PRIO
};

static const struct cli_opt server_opts[] = {
    {"listen", 'l', OPT_LISTEN, "ADDR",
     "address to listen on (default 127.0.0.1; \"::\" or\n\"*\" for every address)", NULL},
    {"port", 'p', OPT_PORT, "PORT", "port (default 7007; 0 = ephemeral)", NULL},
    {"port-file", 0, OPT_PORT_FILE, "FILE", "write the bound port to FILE", "@file"},
    {"credentials", 'c', OPT_CREDS, "FILE", "user:crypt-hash lines (closewise passwd)", "@file"},
    {"user", 'u', OPT_USER, "NAME:PASSWORD",
     "add a user, hashed at start-up (demos, tests)", NULL},
    {"idle-timeout", 0, OPT_IDLE, "DUR", "close sessions idle this long (default 30s)", NULL},
    {"lingering-time", 0, OPT_LTIME, "DUR", "cap on a graceful close (default 30s)", NULL},
    {"lingering-timeout", 0, OPT_LTIMEOUT, "DUR",
     "max wait for the peer while lingering (default 5s)", NULL},
    {"write-timeout", 0, OPT_WTIMEOUT, "DUR",
     "reset a reply stuck this long (default 10s)", NULL},
    {"max-connections", 0, OPT_MAXCONN, "N", "accept pauses at N connections (1024)", NULL},
    {"close-mode", 0, OPT_CLOSE_MODE, "MODE", "graceful (default), linger0 or plain",
     "graceful linger0 plain"},
    {"linger0", 0, OPT_LINGER0, NULL, "same as --close-mode linger0 (the trap)", NULL},
    {"login-timeout", 0, OPT_LOGIN, "DUR", "log in within this of connecting (10s)", NULL},
    {"max-unauthenticated", 0, OPT_MAXUNAUTH, "N",
     "sessions not logged in at once (half of\n--max-connections); the oldest gives way", NULL},
    {"sndbuf", 0, OPT_SNDBUF, "BYTES",
     "SO_SNDBUF of client sockets (65536; 0 = kernel\nautotuning)", NULL},
    {"max-auth-failures", 0, OPT_MAXFAIL, "N",
     "failed logins per address and account in a\nwindow (5; 0 = no throttle)", NULL},
    {"max-net-failures", 0, OPT_NETFAIL, "N",
     "per IPv6 network (4 x --max-auth-failures)", NULL},
    {"max-account-failures", 0, OPT_ACCTFAIL, "N",
     "per account, from anywhere (4 x\n--max-auth-failures)", NULL},
    {"auth-v6-prefix", 0, OPT_V6, "BITS", "an IPv6 client address is this prefix (64)", NULL},
    {"auth-v6-net-prefix", 0, OPT_V6NET, "BITS", "an IPv6 network is this prefix (48)", NULL},
    {"auth-window", 0, OPT_AUTHWIN, "DUR", "throttle window (default 60s)", NULL},
    {"workers", 0, OPT_WORKERS, "N",
     "event loops, each with its own listener\n(SO_REUSEPORT; default: one per CPU)", NULL},
    {"auth-threads", 0, OPT_AUTH_THREADS, "N",
     "threads checking passwords off the loops\n(default: one per CPU; 0 = on the loop, "
     "which\nstops for every hash: to compare)", NULL},
    {"auth-queue", 0, OPT_AUTH_QUEUE, "N",
     "checks waiting for a thread at most; more logins\nget \"ERR busy\" (256 per thread)",
     NULL},
    {"auth-priority", 0, OPT_AUTH_PRIO, "nice|idle",
     "the check threads' scheduling: idle (SCHED_IDLE,\ndefault: lower echo latency while logins "
     "hash)\nor nice (19)", NULL},
    {"quiet", 'q', OPT_QUIET, NULL, "no per-connection log lines", NULL},
    {NULL, 0, 0, NULL, NULL, NULL}};

const struct cli_spec server_spec = {
    "server", "(--credentials FILE | --user NAME:PASSWORD) [options]",
    "Serve the closewise line protocol (AUTH, ECHO, QUIT) and end every\n"
    "connection correctly. Prints \"listening on ADDR:PORT\" first on stdout;\n"
    "one line per ended connection goes to stderr.",
    {server_opts, NULL},
    "Durations: 500ms, 1.5s, 2m30s (a number needs its unit). SIGINT/SIGTERM\n"
    "stop the server cleanly. See closewise-server(1)."};

#define MAX_USERS 64

struct server_args {
    struct cw_server_opts o;
    const char *port_file;
    const char *credentials;
    char *users[MAX_USERS];
    int nusers;
};

/* Durations: at least 1 ms, or 0 too where 0 means "no wait". */
static int parse_dur(int opt, const char *arg, int64_t *out, int allow0)
{
    long long v;
    if (cli_duration(cli_opt_name(&server_spec, opt), arg, allow0 ? 0 : 1, CLI_DURATION_MAX,
                     &v) < 0)
        return -1;
    *out = v;
    return 0;
}

static int parse_count(int opt, const char *arg, int *out, int min, int max)
{
    long long v;
    if (cli_count(cli_opt_name(&server_spec, opt), arg, min, max, &v) < 0)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_mode(const char *arg, enum cw_server_close *out)
{
    if (!strcmp(arg, "graceful"))
        *out = CW_SERVER_GRACEFUL;
    else if (!strcmp(arg, "linger0"))
        *out = CW_SERVER_LINGER0;
    else if (!strcmp(arg, "plain"))
        *out = CW_SERVER_PLAIN;
    else {
        cli_usage_error("bad --close-mode '%s' (graceful, linger0 or plain)", arg);
        return -1;
    }
    return 0;
}

static int add_user_arg(struct server_args *a, char *arg)
{
    if (a->nusers == MAX_USERS || !strchr(arg, ':')) {
        cli_usage_error(a->nusers == MAX_USERS ? "too many --user options (at most 64)"
                                               : "--user wants NAME:PASSWORD");
        return -1;
    }
    a->users[a->nusers++] = arg;
    return 0;
}

/* One option: 0, or -1 after its error. */
static int parse_one(struct server_args *a, int opt, char *arg)
{
    struct cw_server_opts *o = &a->o;
    int port, threads, rc;
    enum { MAXN = 10000000 };
    switch (opt) {
    case OPT_LISTEN: o->host = strcmp(arg, "*") ? arg : "::"; return 0;
    case OPT_PORT:
        if (cli_port("--port", arg, 0, &port) < 0)
            return -1;
        o->port = (uint16_t)port;
        return 0;
    case OPT_PORT_FILE: a->port_file = arg; return 0;
    case OPT_CREDS: a->credentials = arg; return 0;
    case OPT_USER: return add_user_arg(a, arg);
    case OPT_IDLE: return parse_dur(opt, arg, &o->idle_timeout_ms, 0);
    case OPT_LTIME: return parse_dur(opt, arg, &o->lingering_time_ms, 1);
    case OPT_LTIMEOUT: return parse_dur(opt, arg, &o->lingering_timeout_ms, 1);
    case OPT_WTIMEOUT: return parse_dur(opt, arg, &o->write_timeout_ms, 0);
    case OPT_LOGIN: return parse_dur(opt, arg, &o->login_timeout_ms, 0);
    case OPT_AUTHWIN: return parse_dur(opt, arg, &o->auth_window_ms, 0);
    case OPT_MAXCONN: return parse_count(opt, arg, &o->max_conns, 1, MAXN);
    case OPT_MAXUNAUTH: return parse_count(opt, arg, &o->max_unauth, 1, MAXN);
    case OPT_SNDBUF: return parse_count(opt, arg, &o->sndbuf, 0, MAXN);
    case OPT_MAXFAIL: return parse_count(opt, arg, &o->auth_max_failures, 0, MAXN);
    case OPT_NETFAIL: return parse_count(opt, arg, &o->auth_net_max_failures, 1, MAXN);
    case OPT_ACCTFAIL: return parse_count(opt, arg, &o->auth_account_max_failures, 1, MAXN);
    case OPT_V6: return parse_count(opt, arg, &o->auth_v6_prefix, 1, 128);
    case OPT_V6NET: return parse_count(opt, arg, &o->auth_v6_net_prefix, 1, 128);
    case OPT_WORKERS: return parse_count(opt, arg, &o->workers, 1, MAXN);
    case OPT_AUTH_THREADS:
        rc = parse_count(opt, arg, &threads, 0, MAXN);
        o->auth_threads = threads ? threads : -1;   /* -1: checks on the loop */
        return rc;
    case OPT_AUTH_QUEUE: return parse_count(opt, arg, &o->auth_queue, 1, MAXN);
    case OPT_AUTH_PRIO:
        if (strcmp(arg, "nice") && strcmp(arg, "idle")) {
            cli_usage_error("bad --auth-priority '%s' (nice or idle)", arg);
            return -1;
        }
        o->auth_idle = !strcmp(arg, "idle");
        return 0;
    case OPT_CLOSE_MODE: return parse_mode(arg, &o->close_mode);
    case OPT_LINGER0: o->close_mode = CW_SERVER_LINGER0; return 0;
    case OPT_QUIET: o->log = NULL; return 0;
    }
    return -1;
}

/* Returns CLI_OK to run, CLI_HELPED after --help, CLI_USAGE after an error. */
static int parse_args(int argc, char **argv, struct server_args *a)
{
    cw_server_opts_init(&a->o);
    a->o.port = 7007;
    a->o.log = stderr;
    a->o.workers = cw__usable_cpus();   /* one loop per CPU it may use */
    struct cli_parser p;
    const char *arg;
    int opt;
    cli_getopt_init(&p, &server_spec, argc, argv);
    while ((opt = cli_getopt(&p, &arg)) != -1) {
        if (opt == CLI_HELPED)
            return CLI_HELPED;
        /* --user's value is wiped from argv later: it is argv's own string. */
        if (opt == '?' || parse_one(a, opt, (char *)arg) < 0)
            return CLI_USAGE;
    }
    if (cli_no_operands(&server_spec, argc, argv) != CLI_OK)
        return CLI_USAGE;
    int a6 = a->o.auth_v6_prefix, n6 = a->o.auth_v6_net_prefix;
    if (n6 > a6) {
        cli_usage_error("--auth-v6-net-prefix %d is longer than --auth-v6-prefix %d", n6, a6);
        return CLI_USAGE;
    }
    if (!a->credentials && a->nusers == 0) {
        cli_usage_error("no users: give --credentials FILE or --user NAME:PASSWORD");
        return CLI_USAGE;
    }
    return CLI_OK;
}

static int add_users(cw_server *s, struct server_args *a)
{
    if (a->credentials) {
        int line;
        int rc = cw_server_load_credentials(s, a->credentials, &line);
        if (rc < 0) {
            if (line)
                cli_error("%s:%d: %s", a->credentials, line,
                          rc == -EEXIST ? "duplicate user"
                                        : "bad entry (want user:crypt-hash)");
            else
                cli_error("--credentials: %s: %s", a->credentials,
                          rc == -EISDIR ? "is a directory, not a file of user:crypt-hash lines"
                                        : cw_strerror(rc));
            /* A file that is not there or not a file is a bad command line
             * (closewise-server(1)); unreadable is a system error. */
            return line || rc == -ENOENT || rc == -EISDIR ? CLI_USAGE : CLI_SYSTEM;
        }
    }
    for (int i = 0; i < a->nusers; i++) {
        char *colon = strchr(a->users[i], ':');
        *colon = '\0';
        int rc = cw_server_add_user(s, a->users[i], colon + 1);
        /* Wipe the password from argv, so /proc/PID/cmdline stops showing
         * it (it was visible until now: --user is for demos). */
        explicit_bzero(colon + 1, strlen(colon + 1));
        if (rc < 0) {
            cli_error("--user %s: %s", a->users[i],
                      rc == -EEXIST ? "duplicate user" : cw_strerror(rc));
            return rc == -ENOMEM ? CLI_SYSTEM : CLI_USAGE;
        }
    }
    return CLI_OK;
}

/* Every connection costs a descriptor: use what the hard limit allows. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int write_port_file(const char *path, int port)
{
    FILE *f = fopen(path, "we");
    if (!f) {
        cli_error("%s: %s", path, strerror(errno));
        return -1;
    }
    fprintf(f, "%d\n", port);
    if (fclose(f) != 0) {
        cli_error("%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* The counters, once at exit, in the vocabulary of the per-connection
 * lines (end=login-timeout, end=evicted reason=...). */
static void log_stats(const cw_server *s, FILE *log)
{
    struct cw_server_stats st;
    if (cw_server_stats(s, &st) < 0)
        return;
    fprintf(log, "closewise-server: stats accepted=%llu ended=%llu login-timeout=%llu "
            "throttled=%llu throttle-overflow=%llu evicted-login=no:%llu,yes:%llu "
            "evicted-reason=descriptors:%llu,max-connections:%llu,"
            "unauthenticated-cap:%llu accept-paused=%llu auth-busy=%llu "
            "auth-cancelled=%llu auth-rescued=%llu auth-waited=%llu\n",
            (unsigned long long)st.accepted, (unsigned long long)st.ended,
            (unsigned long long)st.login_timeouts, (unsigned long long)st.throttled,
            (unsigned long long)st.throttle_overflow,
            (unsigned long long)st.evicted_unauth, (unsigned long long)st.evicted_authed,
            (unsigned long long)st.evicted_descriptors,
            (unsigned long long)st.evicted_max_conns,
            (unsigned long long)st.evicted_unauth_cap,
            (unsigned long long)st.accept_paused,
            (unsigned long long)st.auth_busy, (unsigned long long)st.auth_cancelled,
            (unsigned long long)st.auth_rescued, (unsigned long long)st.auth_waited);
    fflush(log);
}

int cmd_server(int argc, char **argv)
{
    struct server_args a;
    memset(&a, 0, sizeof a);
    int p = parse_args(argc, argv, &a);
    if (p != CLI_OK)
        return p == CLI_HELPED ? CLI_OK : CLI_USAGE;
    raise_nofile();
    /* A log reader that went away must not kill the server: log writes
     * then fail quietly (sockets already use MSG_NOSIGNAL). */
    signal(SIGPIPE, SIG_IGN);
    cw_server *s;
    int rc = cw_server_new(&a.o, &s);
    if (rc < 0) {
        cli_error("server: cannot listen on %s port %u: %s",
                  a.o.host ? a.o.host : "127.0.0.1", (unsigned)a.o.port,
                  cw_strerror(rc));
        return rc == CW_EINVAL || rc == CW_ERESOLVE ? CLI_USAGE : CLI_SYSTEM;
    }
    int ret = add_users(s, &a);
    char addr[80];
    if (ret == CLI_OK && a.port_file && write_port_file(a.port_file, cw_server_port(s)) < 0)
        ret = CLI_SYSTEM;
    if (ret == CLI_OK && cw_server_address(s, addr, sizeof addr) == CW_OK) {
        printf("listening on %s\n", addr);
        fflush(stdout);
    }
    if (ret == CLI_OK) {
        rc = cw_server_run(s);
        if (rc < 0) {
            cli_error("server: %s", cw_strerror(rc));
            ret = CLI_SYSTEM;
        }
        if (a.o.log)
            log_stats(s, a.o.log);
    }
    cw_server_free(&s);
    return ret;
}
