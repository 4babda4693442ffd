/* server.c - `closewise server`: run the reference authentication server
 * (docs/PROTOCOL.md, closewise-server(1)). */
#define _GNU_SOURCE
#include "../cli.h"
#include "../../net/internal.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static void server_usage(FILE *f)
{
    fprintf(f,
        "usage: closewise server [options]\n\n"
        "Serve the closewise line protocol (AUTH, ECHO, QUIT) and end every\n"
        "connection correctly. Prints \"listening on ADDR:PORT\" first on stdout;\n"
        "one line per ended connection goes to stderr.\n\n"
        "options:\n"
        "  -l, --listen ADDR          address to listen on (default 127.0.0.1;\n"
        "                             \"::\" or \"*\" for every address)\n"
        "  -p, --port PORT            port (default 7007; 0 = ephemeral)\n"
        "      --port-file FILE       write the bound port to FILE\n"
        "  -c, --credentials FILE     user:crypt-hash lines (closewise passwd)\n"
        "  -u, --user NAME:PASSWORD   add a user, hashed at start-up (demos, tests)\n"
        "      --idle-timeout DUR     close sessions idle this long (default 30s)\n"
        "      --lingering-time DUR   cap on a graceful close (default 30s)\n"
        "      --lingering-timeout DUR  max wait for the peer while lingering (5s)\n"
        "      --write-timeout DUR    reset a reply stuck this long (default 10s)\n"
        "      --max-connections N    accept pauses at N connections (1024)\n"
        "      --close-mode MODE      graceful (default), linger0 or plain\n"
        "      --linger0              same as --close-mode linger0 (the trap)\n"
        "      --login-timeout DUR    log in within this of connecting (10s)\n"
        "      --max-unauthenticated N  sessions not logged in at once (half of\n"
        "                             --max-connections); the oldest gives way\n"
        "      --sndbuf BYTES         SO_SNDBUF of client sockets (65536; 0 =\n"
        "                             kernel autotuning)\n"
        "      --max-auth-failures N  failed logins per address and account in\n"
        "                             a window (5; 0 = no throttle)\n"
        "      --max-net-failures N   per IPv6 network (4 x --max-auth-failures)\n"
        "      --max-account-failures N  per account, from anywhere (4 x ...)\n"
        "      --auth-v6-prefix BITS  an IPv6 client address is this prefix (64)\n"
        "      --auth-v6-net-prefix BITS  an IPv6 network is this prefix (48)\n"
        "      --auth-window DUR      throttle window (default 60s)\n"
        "      --workers N            event loops, each with its own listener\n"
        "                             (SO_REUSEPORT; default: one per CPU)\n"
        "      --auth-threads N       threads checking passwords off the loops\n"
        "                             (default: one per CPU; 0 = on the loop,\n"
        "                             which stops for every hash: to compare)\n"
        "      --auth-queue N         checks waiting for a thread at most; more\n"
        "                             logins get \"ERR busy\" (256 per thread)\n"
        "  -q, --quiet                no per-connection log lines\n"
        "  -h, --help                 this help\n\n"
        "Durations: 500ms, 1.5s, 2m30s (a number needs its unit). SIGINT/SIGTERM stop the\n"
        "server cleanly. See closewise-server(1).\n");
}

enum {
    OPT_PORT_FILE = 256, OPT_IDLE, OPT_LTIME, OPT_LTIMEOUT, OPT_WTIMEOUT,
    OPT_MAXCONN, OPT_CLOSE_MODE, OPT_LINGER0, OPT_MAXFAIL, OPT_AUTHWIN,
    OPT_LOGIN, OPT_MAXUNAUTH, OPT_SNDBUF, OPT_NETFAIL, OPT_ACCTFAIL, OPT_V6,
    OPT_V6NET, OPT_WORKERS, OPT_AUTH_THREADS, OPT_AUTH_QUEUE
};

static const struct option long_opts[] = {
    {"listen", required_argument, NULL, 'l'},
    {"port", required_argument, NULL, 'p'},
    {"port-file", required_argument, NULL, OPT_PORT_FILE},
    {"credentials", required_argument, NULL, 'c'},
    {"user", required_argument, NULL, 'u'},
    {"idle-timeout", required_argument, NULL, OPT_IDLE},
    {"lingering-time", required_argument, NULL, OPT_LTIME},
    {"lingering-timeout", required_argument, NULL, OPT_LTIMEOUT},
    {"write-timeout", required_argument, NULL, OPT_WTIMEOUT},
    {"max-connections", required_argument, NULL, OPT_MAXCONN},
    {"close-mode", required_argument, NULL, OPT_CLOSE_MODE},
    {"linger0", no_argument, NULL, OPT_LINGER0},
    {"max-auth-failures", required_argument, NULL, OPT_MAXFAIL},
    {"auth-window", required_argument, NULL, OPT_AUTHWIN},
    {"login-timeout", required_argument, NULL, OPT_LOGIN},
    {"max-unauthenticated", required_argument, NULL, OPT_MAXUNAUTH},
    {"sndbuf", required_argument, NULL, OPT_SNDBUF},
    {"max-net-failures", required_argument, NULL, OPT_NETFAIL},
    {"max-account-failures", required_argument, NULL, OPT_ACCTFAIL},
    {"auth-v6-prefix", required_argument, NULL, OPT_V6},
    {"auth-v6-net-prefix", required_argument, NULL, OPT_V6NET},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"auth-threads", required_argument, NULL, OPT_AUTH_THREADS},
    {"auth-queue", required_argument, NULL, OPT_AUTH_QUEUE},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}
};

#define MAX_USERS 64

struct server_args {
    struct cw_server_opts o;
    const char *port_file;
    const char *credentials;
    char *users[MAX_USERS];
    int nusers;
};

static int parse_dur(const char *name, const char *arg, int64_t *out, int allow0)
{
    char opt[64];
    long long v;
    snprintf(opt, sizeof opt, "--%s", name);
    if (cli_duration(opt, arg, allow0 ? 0 : 1, CLI_DURATION_MAX, &v) < 0)
        return -1;
    *out = v;
    return 0;
}

static int parse_count(const char *name, const char *arg, int *out, int min)
{
    char opt[64];
    long long v;
    snprintf(opt, sizeof opt, "--%s", name);
    if (cli_count(opt, arg, min, 10000000, &v) < 0)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_bits(const char *name, const char *arg, int *out)
{
    if (parse_count(name, arg, out, 1) < 0)
        return -1;
    if (*out > 128) {
        cli_error("server: --%s wants 1 to 128 bits, not '%s'", name, arg);
        return -1;
    }
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
        cli_error("server: bad --close-mode '%s' (graceful, linger0 or plain)", arg);
        return -1;
    }
    return 0;
}

/* Returns -1 to exit with CLI_USAGE, 1 for --help, 0 to run. */
static int parse_args(int argc, char **argv, struct server_args *a)
{
    cw_server_opts_init(&a->o);
    a->o.port = 7007;
    a->o.log = stderr;
    a->o.workers = cw__usable_cpus();   /* one loop per CPU it may use */
    int c, port, threads;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":l:p:c:u:qh", long_opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'l': a->o.host = strcmp(optarg, "*") ? optarg : "::"; break;
        case 'p':
            if (cli_port("--port", optarg, 0, &port) < 0)
                return -1;
            a->o.port = (uint16_t)port;
            break;
        case OPT_PORT_FILE: a->port_file = optarg; break;
        case 'c': a->credentials = optarg; break;
        case 'u':
            if (a->nusers == MAX_USERS || !strchr(optarg, ':')) {
                cli_error(a->nusers == MAX_USERS ? "server: too many --user options"
                                                 : "server: --user wants NAME:PASSWORD");
                return -1;
            }
            a->users[a->nusers++] = optarg;
            break;
        case OPT_IDLE: bad = parse_dur("idle-timeout", optarg, &a->o.idle_timeout_ms, 0); break;
        case OPT_LTIME: bad = parse_dur("lingering-time", optarg, &a->o.lingering_time_ms, 1); break;
        case OPT_LTIMEOUT: bad = parse_dur("lingering-timeout", optarg, &a->o.lingering_timeout_ms, 1); break;
        case OPT_WTIMEOUT: bad = parse_dur("write-timeout", optarg, &a->o.write_timeout_ms, 0); break;
        case OPT_MAXCONN: bad = parse_count("max-connections", optarg, &a->o.max_conns, 1); break;
        case OPT_CLOSE_MODE: bad = parse_mode(optarg, &a->o.close_mode); break;
        case OPT_LINGER0: a->o.close_mode = CW_SERVER_LINGER0; break;
        case OPT_MAXFAIL: bad = parse_count("max-auth-failures", optarg, &a->o.auth_max_failures, 0); break;
        case OPT_AUTHWIN: bad = parse_dur("auth-window", optarg, &a->o.auth_window_ms, 0); break;
        case OPT_LOGIN: bad = parse_dur("login-timeout", optarg, &a->o.login_timeout_ms, 0); break;
        case OPT_MAXUNAUTH: bad = parse_count("max-unauthenticated", optarg, &a->o.max_unauth, 1); break;
        case OPT_SNDBUF: bad = parse_count("sndbuf", optarg, &a->o.sndbuf, 0); break;
        case OPT_NETFAIL: bad = parse_count("max-net-failures", optarg, &a->o.auth_net_max_failures, 1); break;
        case OPT_ACCTFAIL: bad = parse_count("max-account-failures", optarg, &a->o.auth_account_max_failures, 1); break;
        case OPT_V6: bad = parse_bits("auth-v6-prefix", optarg, &a->o.auth_v6_prefix); break;
        case OPT_V6NET: bad = parse_bits("auth-v6-net-prefix", optarg, &a->o.auth_v6_net_prefix); break;
        case OPT_WORKERS: bad = parse_count("workers", optarg, &a->o.workers, 1); break;
        case OPT_AUTH_THREADS:
            bad = parse_count("auth-threads", optarg, &threads, 0);
            a->o.auth_threads = threads ? threads : -1;
            break;
        case OPT_AUTH_QUEUE: bad = parse_count("auth-queue", optarg, &a->o.auth_queue, 1); break;
        case 'q': a->o.log = NULL; break;
        case 'h': return 1;
        default:
            return cli_getopt_error(argv, long_opts), -1;
        }
        if (bad)
            return -1;
    }
    if (optind < argc) {
        cli_error("server: unexpected argument '%s'", argv[optind]);
        return -1;
    }
    int a6 = a->o.auth_v6_prefix, n6 = a->o.auth_v6_net_prefix;
    if (n6 > a6) {
        cli_error("server: --auth-v6-net-prefix %d is longer than --auth-v6-prefix %d",
                  n6, a6);
        return -1;
    }
    if (!a->credentials && a->nusers == 0) {
        cli_error("server: no users: give --credentials FILE or --user NAME:PASSWORD");
        return -1;
    }
    return 0;
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
            "auth-cancelled=%llu\n",
            (unsigned long long)st.accepted, (unsigned long long)st.ended,
            (unsigned long long)st.login_timeouts, (unsigned long long)st.throttled,
            (unsigned long long)st.throttle_overflow,
            (unsigned long long)st.evicted_unauth, (unsigned long long)st.evicted_authed,
            (unsigned long long)st.evicted_descriptors,
            (unsigned long long)st.evicted_max_conns,
            (unsigned long long)st.evicted_unauth_cap,
            (unsigned long long)st.accept_paused,
            (unsigned long long)st.auth_busy, (unsigned long long)st.auth_cancelled);
    fflush(log);
}

int cmd_server(int argc, char **argv)
{
    struct server_args a;
    memset(&a, 0, sizeof a);
    int p = parse_args(argc, argv, &a);
    if (p) {
        if (p > 0)
            server_usage(stdout);
        return p > 0 ? CLI_OK : CLI_USAGE;
    }
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
