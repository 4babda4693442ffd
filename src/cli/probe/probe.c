/* probe.c - `closewise probe -- CMD`: point a client program at a loopback
 * server that ends its connections every way real servers and networks
 * do, and report, from the kernel, whether the client closed its side.
 * This file is the command line and the report; probe_run.c does a run. */
#define _GNU_SOURCE
#include "probe.h"
#include "../inspect/inspect.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static void probe_help(void)
{
    printf("usage: closewise probe [options] -- CMD [ARGS...]\n\n"
           "Listen on a loopback port and run CMD once per scenario; {host} and {port}\n"
           "in ARGS (and CW_PROBE_HOST, CW_PROBE_PORT in its environment) say where to\n"
           "connect. Each connection of CMD is ended the scenario's way, and the kernel\n"
           "tells whether CMD's process tree closed its socket:\n"
           "  PASS       every socket was closed within --grace of our FIN or reset\n"
           "             (exiting counts as closing)\n"
           "  LEAK       a socket stayed in CLOSE_WAIT, or a reset socket stayed open,\n"
           "             longer than --grace while its process lived\n"
           "  HANG       silent: a connection was still open after --hang-limit\n"
           "  NO-CONNECT CMD never connected\n"
           "CMD's whole process tree is killed after each run. Its stdin is /dev/null.\n\n"
           "options:\n"
           "  -s, --scenario S[,S...]  scenarios to run (default all, in this order)\n"
           "  -g, --grace D            time the client has to close (default 2s)\n"
           "      --hang-limit D       how long silent waits for the client to give\n"
           "                           up (default 10s)\n"
           "      --drip D             slow-drip: time between bytes (default 100ms)\n"
           "      --reuse              run CMD once; its N-th connection gets the N-th\n"
           "                           scenario\n"
           "      --host ADDR          listen address (default 127.0.0.1)\n"
           "      --port P             listen port (default: any free port)\n"
           "      --json               report as JSON\n"
           "      --show-output        pass CMD's stdout and stderr to our stderr\n"
           "      --no-where           run CMD without libclosewise-trace.so: a LEAK\n"
           "                           does not name the line that read the end\n"
           "      --list               list the scenarios and exit\n"
           "  -h, --help               this help\n\n"
           "Durations: 500ms, 2s, 1m. Exit: 0 every scenario passed, 1 one did not,\n"
           "2 usage, 3 system error. See closewise-probe(1).\n");
}

static void list_scenarios(void)
{
    for (size_t i = 0; i < probe_nscenarios; i++)
        printf("%-24s %s\n", probe_scenarios[i].name, probe_scenarios[i].what);
}

static int parse_list(struct probe_opts *o, const char *arg)
{
    char buf[1024];
    if (strlen(arg) >= sizeof buf)
        return -1;
    strcpy(buf, arg);
    o->nlist = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        const struct probe_scenario *sc = probe_scenario_find(t);
        if (!sc || o->nlist == PROBE_MAX_SCENARIOS) {
            cli_error("probe: unknown scenario '%s' (see 'closewise probe --list')", t);
            return -1;
        }
        o->list[o->nlist++] = sc;
    }
    if (!o->nlist)
        cli_error("probe: --scenario wants a list of names");
    return o->nlist ? 0 : -1;
}

/* A duration option within [min, max] milliseconds. */
static int duration(const char *name, const char *arg, int64_t min, int64_t max,
                    int64_t *out)
{
    long long v;
    if (cli_duration(name, arg, min, max, &v) < 0)
        return -1;
    *out = v;
    return 0;
}

enum { OPT_HANG = 256, OPT_DRIP, OPT_REUSE, OPT_HOST, OPT_PORT, OPT_JSON, OPT_SHOW,
       OPT_LIST, OPT_NO_WHERE, OPT_WHERE };

static int parse_one(struct probe_opts *o, int c, const char *arg)
{
    switch (c) {
    case 's': return parse_list(o, arg);
    case 'g': return duration("--grace", arg, 0, 600000, &o->grace_ms);
    case OPT_HANG: return duration("--hang-limit", arg, 100, 3600000, &o->hang_ms);
    case OPT_DRIP: return duration("--drip", arg, 1, 60000, &o->drip_ms);
    case OPT_REUSE: o->reuse = 1; return 0;
    case OPT_HOST: o->host = arg; return 0;
    case OPT_PORT:
        return cli_port("--port", arg, 0, &o->port);
    case OPT_JSON: o->json = 1; return 0;
    case OPT_SHOW: o->show_output = 1; return 0;
    case OPT_WHERE: o->where = 1; return 0;
    case OPT_NO_WHERE: o->where = 0; return 0;
    }
    cli_error("probe: bad option '%s' (see 'closewise probe --help')", arg ? arg : "?");
    return -1;
}

/* Returns 0 to run, 1 after --help/--list, -1 on a usage error. */
static int parse_args(struct probe_opts *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"scenario", required_argument, NULL, 's'},
        {"grace", required_argument, NULL, 'g'},
        {"hang-limit", required_argument, NULL, OPT_HANG},
        {"drip", required_argument, NULL, OPT_DRIP},
        {"reuse", no_argument, NULL, OPT_REUSE},
        {"host", required_argument, NULL, OPT_HOST},
        {"port", required_argument, NULL, OPT_PORT},
        {"json", no_argument, NULL, OPT_JSON},
        {"show-output", no_argument, NULL, OPT_SHOW},
        {"where", no_argument, NULL, OPT_WHERE},
        {"no-where", no_argument, NULL, OPT_NO_WHERE},
        {"list", no_argument, NULL, OPT_LIST},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    optind = 1;
    opterr = 0;
    int c;
    /* "+": stop at CMD, whose options are its own. */
    while ((c = getopt_long(argc, argv, "+s:g:h", longopts, NULL)) != -1) {
        if (c == 'h' || c == OPT_LIST) {
            c == 'h' ? probe_help() : list_scenarios();
            return 1;
        }
        if (c == '?')
            return cli_getopt_error(argv, longopts), -1;
        if (parse_one(o, c, optarg) < 0)
            return -1;
    }
    if (optind >= argc) {
        cli_error("probe: no command to test (usage: closewise probe [options] -- CMD ...)");
        return -1;
    }
    o->cmd = argv + optind;
    return 0;
}

/* CMD's arguments with every {host} and {port} replaced. */
static char *expand(const char *arg, const char *host, const char *port)
{
    size_t cap = strlen(arg) + 1, len = 0;
    for (const char *p = arg; (p = strchr(p, '{')); p++)
        cap += strlen(host) + strlen(port);
    char *out = malloc(cap);
    if (!out)
        return NULL;
    for (const char *p = arg; *p;) {
        const char *with = !strncmp(p, "{host}", 6) ? host : !strncmp(p, "{port}", 6) ? port : NULL;
        if (with) {
            memcpy(out + len, with, strlen(with));
            len += strlen(with);
            p += 6;
        } else {
            out[len++] = *p++;
        }
    }
    out[len] = '\0';
    return out;
}

static char **expand_all(char **cmd, const char *host, int port)
{
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    size_t n = 0;
    while (cmd[n])
        n++;
    char **v = calloc(n + 1, sizeof *v);
    for (size_t i = 0; v && i < n; i++)
        if (!(v[i] = expand(cmd[i], host, p))) {
            while (i--)
                free(v[i]);
            free(v);
            return NULL;
        }
    return v;
}

static void free_all(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* --- the report --- */

static const char *verdict_name(int v)
{
    switch (v) {
    case PROBE_PASS: return "PASS";
    case PROBE_LEAK: return "LEAK";
    case PROBE_HANG: return "HANG";
    }
    return "NO-CONNECT";
}

static const char *exit_text(const struct probe_result *r, char *buf, size_t size)
{
    if (r->killed)
        snprintf(buf, size, "running");
    else if (WIFEXITED(r->status))
        snprintf(buf, size, "exit %d", WEXITSTATUS(r->status));
    else if (WIFSIGNALED(r->status))
        snprintf(buf, size, "signal %d", WTERMSIG(r->status));
    else
        snprintf(buf, size, "?");
    return buf;
}

static const char *leak_state(const struct probe_leak *l)
{
    return l->state == CW_TCP_CLOSE_WAIT ? "CLOSE_WAIT" : "CLOSED";
}

static const char *holder(const struct probe_leak *l, char *buf, size_t size)
{
    if (l->pid)
        snprintf(buf, size, "pid %d (%s) fd %d", (int)l->pid, l->comm, l->fd);
    else
        snprintf(buf, size, "a process outside the client's tree (or unreadable)");
    return buf;
}

static const char *detail(const struct probe_result *r, char *buf, size_t size)
{
    const struct probe_leak *l = &r->leak;
    char t[32], who[96];
    buf[0] = '\0';
    /* --where's line replaces the guess; its "no trace" note only adds */
    int note = !strncmp(l->where, "no trace", 8);
    if (r->verdict == PROBE_LEAK && l->state == CW_TCP_CLOSE_WAIT)
        snprintf(buf, size, "%s in CLOSE_WAIT %s%s, Recv-Q %u: %s%s%s%s",
                 holder(l, who, sizeof who), l->closed_late ? "" : ">= ",
                 insp_fmt_ms((uint64_t)l->held_ms, t, sizeof t), (unsigned)l->rqueue,
                 l->where[0] && !note ? l->where
                 : l->rqueue ? "our FIN not read" : "EOF read, never closed",
                 note ? " (" : "", note ? l->where : "", note ? ")" : "");
    else if (r->verdict == PROBE_LEAK)
        snprintf(buf, size, "%s: connection reset or closed, "
                 "descriptor still open %s%s%s%s", holder(l, who, sizeof who),
                 l->closed_late ? "" : ">= ", insp_fmt_ms((uint64_t)l->held_ms, t, sizeof t),
                 l->where[0] ? "; " : "", l->where);
    else if (r->verdict == PROBE_HANG)
        snprintf(buf, size, "connection still open after %s: the client never gave up",
                 insp_fmt_ms((uint64_t)r->hang_ms, t, sizeof t));
    else if (r->verdict == PROBE_NOCONN)
        snprintf(buf, size, "the client never connected");
    if (r->leaks > 1)
        snprintf(buf + strlen(buf), size - strlen(buf), " (%d connections leaked)", r->leaks);
    return buf;
}

static void print_table(const struct probe_opts *o, int port, const struct probe_result *r,
                        size_t n)
{
    char t[32], e[32], d[768];
    printf("closewise probe: %s port %d, grace %s, hang limit %s%s\n", o->host, port,
           insp_fmt_ms((uint64_t)o->grace_ms, t, sizeof t),
           insp_fmt_ms((uint64_t)o->hang_ms, e, sizeof e), o->reuse ? ", one run" : "");
    printf("%-24s %-10s %5s  %-9s  %-10s %s\n", "SCENARIO", "VERDICT", "CONNS", "CLOSED IN",
           "CLIENT", "DETAIL");
    for (size_t i = 0; i < n; i++) {
        if (r[i].close_ms >= 0)
            snprintf(t, sizeof t, "%lldms", (long long)r[i].close_ms);
        else if (r[i].closed_first)
            snprintf(t, sizeof t, "first");
        else
            snprintf(t, sizeof t, "-");
        printf("%-24s %-10s %5d  %-9s  %-10s %s\n", r[i].sc->name, verdict_name(r[i].verdict),
               r[i].conns, t, exit_text(&r[i], e, sizeof e), detail(&r[i], d, sizeof d));
    }
}

static void json_client(const struct probe_result *r)
{
    printf("\"client\": {\"pid\": %d, ", (int)r->pid);
    if (!r->killed && WIFEXITED(r->status))
        printf("\"exit_code\": %d, \"signal\": null, ", WEXITSTATUS(r->status));
    else if (!r->killed && WIFSIGNALED(r->status))
        printf("\"exit_code\": null, \"signal\": %d, ", WTERMSIG(r->status));
    else
        printf("\"exit_code\": null, \"signal\": null, ");
    printf("\"killed\": %s}", r->killed ? "true" : "false");
}

static void json_leak(const struct probe_result *r)
{
    const struct probe_leak *l = &r->leak;
    if (r->verdict != PROBE_LEAK) {
        printf("\"leak\": null");
        return;
    }
    printf("\"leak\": {\"pid\": %d, \"comm\": ", (int)l->pid);
    cli_json_str(stdout, l->comm);
    printf(", \"fd\": %d, \"state\": \"%s\", \"recv_q\": %u, \"held_ms\": %lld, "
           "\"closed_late\": %s, \"connections\": %d, \"where\": ", l->fd, leak_state(l),
           (unsigned)l->rqueue, (long long)l->held_ms, l->closed_late ? "true" : "false",
           r->leaks);
    cli_json_str(stdout, l->where);
    printf("}");
}

static void json_result(const struct probe_result *r)
{
    printf("    {\"name\": \"%s\", \"verdict\": \"%s\", \"connections\": %d, "
           "\"closed_first\": %d, ", r->sc->name, verdict_name(r->verdict), r->conns,
           r->closed_first);
    if (r->close_ms >= 0)
        printf("\"close_ms\": %lld, ", (long long)r->close_ms);
    else
        printf("\"close_ms\": null, ");
    if (r->verdict == PROBE_HANG)
        printf("\"hang_ms\": %lld, ", (long long)r->hang_ms);
    else
        printf("\"hang_ms\": null, ");
    json_client(r);
    printf(", ");
    json_leak(r);
    printf("}");
}

static void print_json(const struct probe_opts *o, int port, const struct probe_result *r,
                       size_t n, int passed)
{
    printf("{\n  \"schema\": 1,\n  \"host\": ");
    cli_json_str(stdout, o->host);
    printf(", \"port\": %d, \"grace_ms\": %lld, \"hang_limit_ms\": %lld, "
           "\"drip_ms\": %lld, \"reuse\": %s,\n  \"command\": [", port,
           (long long)o->grace_ms, (long long)o->hang_ms, (long long)o->drip_ms,
           o->reuse ? "true" : "false");
    for (size_t i = 0; o->cmd[i]; i++) {
        printf(i ? ", " : "");
        cli_json_str(stdout, o->cmd[i]);
    }
    printf("],\n  \"scenarios\": [\n");
    for (size_t i = 0; i < n; i++) {
        json_result(&r[i]);
        printf(i + 1 < n ? ",\n" : "\n");
    }
    printf("  ],\n  \"passed\": %d, \"failed\": %d\n}\n", passed, (int)n - passed);
}

/* --- running --- */

static void on_signal(int sig)
{
    (void)sig;
    probe_interrupted = 1;
}

static int open_listener(const struct probe_opts *o, cw_listener **l)
{
    int rc = cw_listen(o->host, (uint16_t)o->port, NULL, 128, l);
    if (rc < 0) {
        cli_error("probe: cannot listen on %s port %d: %s", o->host, o->port,
                  cw_strerror(rc));
        return rc == CW_ERESOLVE || rc == -EINVAL ? CLI_USAGE : CLI_SYSTEM;
    }
    int fd = cw_listener_fd(*l);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return CLI_OK;
}

/* One run per scenario, or one for all. Results fill res[0..n). Returns
 * how many ran, or a negative exit code. */
static int run_all(struct probe_opts *o, cw_listener *l, int port, struct probe_result *res)
{
    if (o->reuse) {
        int rc = probe_run(o, l, port, o->list, o->nlist, res);
        return rc != CLI_OK ? -rc : probe_interrupted ? -CLI_SYSTEM : (int)o->nlist;
    }
    for (size_t i = 0; i < o->nlist; i++) {
        int rc = probe_run(o, l, port, &o->list[i], 1, &res[i]);
        if (rc != CLI_OK)
            return -rc;
        if (probe_interrupted)
            return -CLI_SYSTEM;
    }
    return (int)o->nlist;
}

static int probe_main(struct probe_opts *o)
{
    cw_listener *l = NULL;
    int rc = open_listener(o, &l);
    if (rc != CLI_OK)
        return rc;
    int port = cw_listener_port(l);
    char **user_cmd = o->cmd;
    o->cmd = expand_all(user_cmd, o->host, port);
    probe_where_init(o->where && o->cmd, o->cmd);
    struct probe_result res[PROBE_MAX_SCENARIOS];
    int n = o->cmd ? run_all(o, l, port, res) : -CLI_SYSTEM;
    cw_listener_close(&l);
    probe_where_done();
    if (n < 0) {
        if (probe_interrupted)
            cli_error("probe: interrupted; the client's processes were killed");
        free_all(o->cmd);
        return -n;
    }
    int passed = 0;
    for (int i = 0; i < n; i++)
        passed += res[i].verdict == PROBE_PASS;
    if (o->json)
        print_json(o, port, res, (size_t)n, passed);
    else
        print_table(o, port, res, (size_t)n);
    free_all(o->cmd);
    o->cmd = user_cmd;
    return passed == n ? CLI_OK : CLI_FOUND;
}

int cmd_probe(int argc, char **argv)
{
    struct probe_opts o = {
        .host = "127.0.0.1", .grace_ms = 2000, .hang_ms = 10000, .drip_ms = 100,
        .where = 1,
    };
    for (size_t i = 0; i < probe_nscenarios; i++)
        o.list[o.nlist++] = &probe_scenarios[i];
    int rc = parse_args(&o, argc, argv);
    if (rc != 0)
        return rc > 0 ? CLI_OK : CLI_USAGE;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;   /* no SA_RESTART: poll must return */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    probe_tree_init();
    return probe_main(&o);
}
