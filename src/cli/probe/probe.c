/* probe.c - `closewise probe -- CMD`: point a client program at a loopback
 * server that ends its connections every way real servers and networks
 * do, and report, from the kernel, whether the client closed its side.
 * This file is the command line and the report; probe_run.c does a run. */
#define _GNU_SOURCE
#include "probe.h"
#include "../inspect/inspect.h"

#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

enum { OPT_SCENARIO = 's', OPT_GRACE = 'g', OPT_HANG = 256, OPT_DRIP, OPT_REUSE, OPT_HOST,
       OPT_PORT, OPT_JSON, OPT_SHOW, OPT_LIST, OPT_SETTLE, OPT_FORMAT, OPT_REPEAT, OPT_SERVER,
       OPT_SEND, OPT_EXPECT, OPT_LARGE, OPT_LARGE_EXPECT, OPT_SLOW, OPT_NOBPF, OPT_NO_WHERE,
       OPT_WHERE };

/* Options for both modes: scenarios, timing, the report. */
static const struct cli_opt probe_common_opts[] = {
    {"scenario", 's', OPT_SCENARIO, "S[,S...]", "scenarios to run (default all, in this order)",
     "@scenarios"},
    {"grace", 'g', OPT_GRACE, "D", "time the peer has to close (default 2s)", NULL},
    {"hang-limit", 0, OPT_HANG, "D",
     "how long silent (idle with --server) waits for\nthe peer to give up (default 10s)", NULL},
    {"settle", 0, OPT_SETTLE, "D",
     "*-when-idle, half-close, reset-mid-request: the\nquiet time first (default 500ms)", NULL},
    {"drip", 0, OPT_DRIP, "D", "slow-drip: time between bytes (default 100ms)", NULL},
    {"repeat", 0, OPT_REPEAT, "N",
     "run everything N times (1 to 1000); report each\nscenario's worst verdict and how many "
     "runs saw it", NULL},
    {"format", 0, OPT_FORMAT, "F", "text (default), json, junit or tap", "text json junit tap"},
    {"json", 0, OPT_JSON, NULL, "the same as --format json", NULL},
    {"list", 0, OPT_LIST, NULL, "list the scenarios and exit (with --server: the\nserver's)",
     NULL},
    {NULL, 0, 0, NULL, NULL, NULL}};

/* Testing a client: CMD after "--". */
static const struct cli_opt probe_client_opts[] = {
    {"reuse", 0, OPT_REUSE, NULL,
     "run CMD once; its N-th connection gets the N-th\nscenario", NULL},
    {"host", 0, OPT_HOST, "ADDR", "listen address (default 127.0.0.1)", NULL},
    {"port", 0, OPT_PORT, "P", "listen port (default: any free port)", NULL},
    {"show-output", 0, OPT_SHOW, NULL, "pass CMD's stdout and stderr to our stderr", NULL},
    {"where", 0, OPT_WHERE, NULL,
     "run CMD under libclosewise-trace.so: a LEAK names\nthe line that read the end (default)",
     NULL},
    {"no-where", 0, OPT_NO_WHERE, NULL,
     "run CMD without libclosewise-trace.so: a LEAK\ndoes not name the line that read the end",
     NULL},
    {NULL, 0, 0, NULL, NULL, NULL}};

/* Testing a server. */
static const struct cli_opt probe_server_opts[] = {
    {"server", 0, OPT_SERVER, "HOST:PORT", "test the server there ([::1]:80 for IPv6)", NULL},
    {"send", 0, OPT_SEND, "DATA",
     "--server: the request (\\n \\r \\t \\\\ \\xHH; @FILE\nreads it from FILE)", NULL},
    {"expect", 0, OPT_EXPECT, "REGEX",
     "--server: what a whole reply matches (POSIX\nextended; ^ and $ also match at line ends)",
     NULL},
    {"large", 0, OPT_LARGE, "DATA",
     "--server large-reply: a request whose reply is\nlarger than the socket buffers "
     "(default DATA)", NULL},
    {"large-expect", 0, OPT_LARGE_EXPECT, "REGEX", "what that reply matches (default --expect)",
     NULL},
    {"slow-read", 0, OPT_SLOW, "D", "large-reply: time between reads (default 20ms)", NULL},
    {"no-bpf", 0, OPT_NOBPF, NULL,
     "--server: do not name the close() behind a reset\n(also CLOSEWISE_NO_BPF=1)", NULL},
    {NULL, 0, 0, NULL, NULL, NULL}};

const struct cli_spec probe_spec = {
    "probe",
    "[options] -- CMD [ARGS...]\n"
    "       closewise probe --server HOST:PORT --send DATA [--expect REGEX] [options]",
    "Listen on a loopback port and run CMD once per scenario; {host} and {port}\n"
    "in ARGS (and CW_PROBE_HOST, CW_PROBE_PORT in its environment) say where to\n"
    "connect. Each connection of CMD is ended the scenario's way, and the kernel\n"
    "tells whether CMD's process tree closed its socket:\n"
    "  PASS       every socket was closed within --grace of our FIN or reset\n"
    "             (exiting counts as closing)\n"
    "  LEAK       a socket stayed in CLOSE_WAIT, or a reset socket stayed open,\n"
    "             longer than --grace while its process lived\n"
    "  HANG       silent: a connection was still open after --hang-limit (a\n"
    "             client that gives up later, or never, is not told apart)\n"
    "  NO-CONNECT CMD never connected\n"
    "CMD's whole process tree is killed after each run. Its stdin is /dev/null.\n"
    "The *-when-idle scenarios end the connection only once it has been quiet\n"
    "for --settle, as an idle timeout does: some clients leak only then.\n\n"
    "With --server, connect to a server instead and test how it ends\n"
    "connections (scenarios: closewise probe --server X --list):\n"
    "  PASS       the reply arrived whole and ended in FIN; the server closed\n"
    "             after our FIN, reset or silence as it should\n"
    "  LOST       the reply was cut short: bytes destroyed by a reset, or\n"
    "             missing (it does not match --expect)\n"
    "  RST-CLOSE  the reply arrived, then a reset instead of FIN: a peer that\n"
    "             had not read it yet (Windows) loses it\n"
    "  LEAK       a local server kept its socket in CLOSE_WAIT, or its\n"
    "             descriptor, after we closed or reset\n"
    "  HANG       the server never ended the connection within the limit\n"
    "  SKIP       nothing to check (a remote server's descriptors)\n"
    "For a local server, the process holding its socket is named, and with\n"
    "BPF (root) the close() that reset the connection, as file:line.",
    {probe_common_opts, probe_client_opts, probe_server_opts, NULL},
    "Durations: 500ms, 2s, 1m. Exit: 0 every scenario passed (or was skipped),\n"
    "1 one did not, 2 usage, 3 system error. See closewise-probe(1)."};

static void list_scenarios(int server)
{
    if (server)
        for (size_t i = 0; i < probe_nsscenarios; i++)
            printf("%-24s %s\n", probe_sscenarios[i].name, probe_sscenarios[i].what);
    else
        for (size_t i = 0; i < probe_nscenarios; i++)
            printf("%-24s %s\n", probe_scenarios[i].name, probe_scenarios[i].what);
}

/* "unknown scenario 'x'; scenarios: a, b, ..." in one line. */
static void unknown_scenario(int server, const char *name)
{
    char names[2048];
    size_t len = 0, n = server ? probe_nsscenarios : probe_nscenarios;
    names[0] = '\0';
    for (size_t i = 0; i < n && len < sizeof names; i++)
        len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", i ? ", " : "",
                                server ? probe_sscenarios[i].name : probe_scenarios[i].name);
    cli_usage_error("--scenario: unknown %sscenario '%s'; scenarios: %s", server ? "server " : "",
                    name, names);
}

/* --scenario, once the mode is known: client scenarios, or with
 * --server the server's. */
static int parse_list(struct probe_opts *o, const char *arg)
{
    char buf[1024];
    if (strlen(arg) >= sizeof buf) {
        cli_usage_error("--scenario: list too long");
        return -1;
    }
    strcpy(buf, arg);
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        const void *sc = o->server ? (const void *)probe_sscenario_find(t)
                                   : (const void *)probe_scenario_find(t);
        if (!sc) {
            unknown_scenario(o->server != NULL, t);
            return -1;
        }
        if (n == PROBE_MAX_SCENARIOS) {
            cli_usage_error("--scenario: more than %d scenarios", PROBE_MAX_SCENARIOS);
            return -1;
        }
        if (o->server)
            o->slist[n++] = sc;
        else
            o->list[n++] = sc;
    }
    if (!n)
        cli_usage_error("--scenario: wants a list of names");
    if (o->server)
        o->nslist = n;
    else
        o->nlist = n;
    return n ? 0 : -1;
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

/* "HOST:PORT" or "[V6]:PORT" into o->shost, o->sport. */
static int parse_server(struct probe_opts *o, const char *arg)
{
    const char *colon = strrchr(arg, ':');
    const char *h = arg;
    size_t hlen = colon ? (size_t)(colon - arg) : 0;
    if (hlen >= 2 && arg[0] == '[' && arg[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    int port = colon ? cli_parse_port(colon + 1) : -1;
    if (hlen && hlen < sizeof o->shost && port <= 0) {
        cli_usage_error("--server: bad port '%s' in '%s' (expected 1 to 65535)", colon + 1,
                        arg);
        return -1;
    }
    if (!hlen || hlen >= sizeof o->shost) {
        cli_usage_error("--server: bad address '%s' (expected HOST:PORT, [IPV6]:PORT)", arg);
        return -1;
    }
    memcpy(o->shost, h, hlen);
    o->shost[hlen] = '\0';
    o->sport = port;
    o->server = arg;
    return 0;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The bytes of FILE into a malloc'ed *out. */
static int read_data_file(const char *name, const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    size_t cap = 0, n = 0, got;
    char *v = NULL;
    while (f) {
        if (n == cap) {
            char *nv = realloc(v, cap = cap * 2 + 4096);
            if (!nv)
                break;
            v = nv;
        }
        if ((got = fread(v + n, 1, cap - n, f)) == 0)
            break;
        n += got;
    }
    int bad = !f || ferror(f) || !n || n == cap;   /* n == cap: out of memory */
    if (f)
        fclose(f);
    if (bad) {
        free(v);
        cli_usage_error("%s: cannot read file '%s'%s", name, path,
                  f ? " (or it is empty)" : "");
        return -1;
    }
    *out = v;
    *len = n;
    return 0;
}

/* DATA with \n \r \t \\ \xHH, or @FILE: the bytes into a malloc'ed *out. */
static int parse_data(const char *name, const char *arg, char **out, size_t *len)
{
    free(*out);
    *out = NULL;
    if (arg[0] == '@')
        return read_data_file(name, arg + 1, out, len);
    char *v = malloc(strlen(arg) + 1);
    size_t n = 0;
    for (const char *p = arg; v && *p; p++) {
        if (*p != '\\') {
            v[n++] = *p;
            continue;
        }
        const char *esc = "n\nr\rt\t\\\\", *hit = p[1] ? strchr(esc, p[1]) : NULL;
        if (hit && (hit - esc) % 2 == 0) {
            v[n++] = hit[1];
            p++;
        } else if (p[1] == 'x' && hexval(p[2]) >= 0 && hexval(p[3]) >= 0) {
            v[n++] = (char)(hexval(p[2]) * 16 + hexval(p[3]));
            p += 3;
        } else {
            free(v);
            cli_usage_error("%s: bad escape in '%s' (\\n \\r \\t \\\\ \\xHH)", name, arg);
            return -1;
        }
    }
    if (!v || !n) {
        free(v);
        cli_usage_error("%s: wants some bytes", name);
        return -1;
    }
    *out = v;
    *len = n;
    return 0;
}

static int parse_regex(const char *name, const char *arg, const char **out)
{
    regex_t re;
    int rc = regcomp(&re, arg, REG_EXTENDED | REG_NEWLINE | REG_NOSUB);
    if (rc != 0) {
        char why[128];
        regerror(rc, &re, why, sizeof why);
        cli_usage_error("%s: bad regex '%s': %s", name, arg, why);
        return -1;
    }
    regfree(&re);
    *out = arg;
    return 0;
}

static int parse_format(struct probe_opts *o, const char *arg)
{
    static const char *const names[] = {"text", "json", "junit", "tap"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(arg, names[i])) {
            o->format = i;
            return 0;
        }
    cli_usage_error("--format: bad value '%s' (text, json, junit or tap)", arg);
    return -1;
}

static int parse_repeat(struct probe_opts *o, const char *arg)
{
    long long v;
    if (cli_count("--repeat", arg, 1, 1000, &v) < 0)
        return -1;
    o->repeat = (int)v;
    return 0;
}

static int parse_one(struct probe_opts *o, int c, const char *arg)
{
    switch (c) {
    case 's': return 0;   /* once the mode is known: parse_args */
    case 'g': return duration("--grace", arg, 0, 600000, &o->grace_ms);
    case OPT_HANG: return duration("--hang-limit", arg, 100, 3600000, &o->hang_ms);
    case OPT_DRIP: return duration("--drip", arg, 1, 60000, &o->drip_ms);
    case OPT_SETTLE: return duration("--settle", arg, 1, 600000, &o->settle_ms);
    case OPT_SLOW: return duration("--slow-read", arg, 1, 10000, &o->slow_ms);
    case OPT_REUSE: o->reuse = 1; return 0;
    case OPT_HOST: o->host = arg; return 0;
    case OPT_PORT:
        return cli_port("--port", arg, 0, &o->port);
    case OPT_JSON: o->format = PROBE_JSON; return 0;
    case OPT_FORMAT: return parse_format(o, arg);
    case OPT_REPEAT: return parse_repeat(o, arg);
    case OPT_SHOW: o->show_output = 1; return 0;
    case OPT_SERVER: return parse_server(o, arg);
    case OPT_SEND: return parse_data("--send", arg, &o->send, &o->send_len);
    case OPT_LARGE: return parse_data("--large", arg, &o->large, &o->large_len);
    case OPT_EXPECT: return parse_regex("--expect", arg, &o->expect);
    case OPT_LARGE_EXPECT: return parse_regex("--large-expect", arg, &o->large_expect);
    case OPT_NOBPF: o->no_bpf = 1; return 0;
    case OPT_WHERE: o->where = 1; return 0;
    case OPT_NO_WHERE: o->where = 0; return 0;
    }
    return -1;   /* not in the tables: cli_getopt() said so */
}

/* What only one mode takes. */
static int check_mode(struct probe_opts *o, int argc, char **argv)
{
    if (!o->server) {
        if (optind >= argc) {
            cli_usage_error("no command to test (closewise probe [options] -- CMD ...)");
            return -1;
        }
        if (o->send || o->large || o->expect || o->large_expect) {
            cli_usage_error("--send, --large and --expect go with --server");
            return -1;
        }
        o->cmd = argv + optind;
        return 0;
    }
    if (optind < argc) {
        cli_usage_error("--server tests a server: no command (got '%s')", argv[optind]);
        return -1;
    }
    if (o->reuse) {
        cli_usage_error("--reuse is for testing a client, not with --server");
        return -1;
    }
    if (!o->send) {
        cli_usage_error("--server wants --send DATA (the request to send)");
        return -1;
    }
    return 0;
}

/* Returns 0 to run, 1 after --help/--list, -1 on a usage error. */
static int parse_args(struct probe_opts *o, int argc, char **argv)
{
    struct cli_parser p;
    const char *arg, *scenarios = NULL;
    int c, list = 0;
    /* The usage's "-- CMD" makes the parser stop at CMD, whose options
     * are its own. */
    cli_getopt_init(&p, &probe_spec, argc, argv);
    while ((c = cli_getopt(&p, &arg)) != -1) {
        if (c == CLI_HELPED)
            return 1;
        if (c == '?')
            return -1;
        list |= c == OPT_LIST;
        if (c == 's')
            scenarios = arg;
        if (c != OPT_LIST && parse_one(o, c, arg) < 0)
            return -1;
    }
    if (list) {
        list_scenarios(o->server != NULL);
        return 1;
    }
    if (scenarios && parse_list(o, scenarios) < 0)
        return -1;
    return check_mode(o, argc, argv);
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

const char *probe_verdict_name(int v)
{
    switch (v) {
    case PROBE_PASS: return "PASS";
    case PROBE_SKIP: return "SKIP";
    case PROBE_LEAK: return "LEAK";
    case PROBE_HANG: return "HANG";
    case PROBE_LOST: return "LOST";
    case PROBE_RST_CLOSE: return "RST-CLOSE";
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
    if (!r->sc) {   /* --server: its judge wrote it */
        snprintf(buf, size, "%s", r->srv.note);
        return buf;
    }
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
        snprintf(buf, size, "no close in the %s the probe waited (--hang-limit): still "
                 "open when it stopped waiting",
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
    char t[32], e[32], d[768], v[32];
    printf("closewise probe: %s port %d, grace %s, hang limit %s%s", o->host, port,
           insp_fmt_ms((uint64_t)o->grace_ms, t, sizeof t),
           insp_fmt_ms((uint64_t)o->hang_ms, e, sizeof e), o->reuse ? ", one run" : "");
    printf(o->repeat > 1 ? ", %d runs\n" : "\n", o->repeat);
    printf("%-24s %-10s %5s  %-9s  %-10s %s\n", "SCENARIO", "VERDICT", "CONNS", "CLOSED IN",
           "CLIENT", "DETAIL");
    for (size_t i = 0; i < n; i++) {
        if (r[i].close_ms >= 0)
            snprintf(t, sizeof t, "%lldms", (long long)r[i].close_ms);
        else if (r[i].closed_first)
            snprintf(t, sizeof t, "first");
        else
            snprintf(t, sizeof t, "-");
        printf("%-24s %-10s %5d  %-9s  %-10s %s\n", r[i].name,
               probe_verdict_runs(&r[i], v, sizeof v), r[i].conns, t, exit_text(&r[i], e, sizeof e), detail(&r[i], d, sizeof d));
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
           "\"closed_first\": %d, \"runs\": %d, \"worst_runs\": %d, \"time_ms\": %lld, ",
           r->name, probe_verdict_name(r->verdict), r->conns, r->closed_first, r->runs,
           r->worst_runs, (long long)r->run_ms);
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
    int64_t t0 = cw_now_ms();
    if (o->server) {
        int rc = probe_server_run(o, res);
        return rc != CLI_OK ? -rc : probe_interrupted ? -CLI_SYSTEM : (int)o->nslist;
    }
    if (o->reuse) {
        int rc = probe_run(o, l, port, o->list, o->nlist, res);
        for (size_t i = 0; i < o->nlist; i++)
            res[i].run_ms = cw_now_ms() - t0;
        return rc != CLI_OK ? -rc : probe_interrupted ? -CLI_SYSTEM : (int)o->nlist;
    }
    for (size_t i = 0; i < o->nlist; i++) {
        int rc = probe_run(o, l, port, &o->list[i], 1, &res[i]);
        res[i].run_ms = cw_now_ms() - t0;
        t0 += res[i].run_ms;
        if (rc != CLI_OK)
            return -rc;
        if (probe_interrupted)
            return -CLI_SYSTEM;
    }
    return (int)o->nlist;
}

const char *probe_verdict_runs(const struct probe_result *r, char *buf, size_t size)
{
    if (r->runs > 1)
        snprintf(buf, size, "%s %d/%d", probe_verdict_name(r->verdict), r->worst_runs, r->runs);
    else
        snprintf(buf, size, "%s", probe_verdict_name(r->verdict));
    return buf;
}

/* --repeat: keep each scenario's worst verdict (its first run's details)
 * and count the runs that saw it. */
static void merge_run(struct probe_result *total, const struct probe_result *run, int n,
                      int first)
{
    for (int i = 0; i < n; i++) {
        int runs = first ? 0 : total[i].runs, worst = first ? 0 : total[i].worst_runs;
        if (first || run[i].verdict > total[i].verdict) {
            total[i] = run[i];
            worst = 0;
        }
        total[i].runs = runs + 1;
        total[i].worst_runs = worst + (run[i].verdict == total[i].verdict);
    }
}

/* Every run (--repeat), merged into res. Returns the count of scenarios
 * or a negative exit code. */
static int run_repeated(struct probe_opts *o, cw_listener *l, int port,
                        struct probe_result *res)
{
    struct probe_result *one = calloc(PROBE_MAX_SCENARIOS, sizeof *one);
    if (!one) {
        cli_error("probe: out of memory");
        return -CLI_SYSTEM;
    }
    int n = 0;
    for (int k = 0; k < o->repeat; k++) {
        n = run_all(o, l, port, one);
        if (n < 0)
            break;
        merge_run(res, one, n, k == 0);
    }
    free(one);
    return n;
}

static void report(const struct probe_opts *o, int port, const struct probe_result *res,
                   int n, int passed)
{
    if (o->format == PROBE_JUNIT)
        probe_report_junit(o, res, (size_t)n, detail);
    else if (o->format == PROBE_TAP)
        probe_report_tap(o, res, (size_t)n, detail);
    else if (o->server && o->format == PROBE_JSON)
        probe_report_server_json(o, res, (size_t)n);
    else if (o->server)
        probe_report_server_text(o, res, (size_t)n);
    else if (o->format == PROBE_JSON)
        print_json(o, port, res, (size_t)n, passed);
    else
        print_table(o, port, res, (size_t)n);
}

static int probe_main(struct probe_opts *o)
{
    cw_listener *l = NULL;
    int port = o->sport;
    char **user_cmd = o->cmd;
    if (!o->server) {
        int rc = open_listener(o, &l);
        if (rc != CLI_OK)
            return rc;
        port = cw_listener_port(l);
        o->cmd = expand_all(user_cmd, o->host, port);
        probe_where_init(o->where && o->cmd, o->cmd);
    }
    struct probe_result res[PROBE_MAX_SCENARIOS];
    int n = o->cmd || o->server ? run_repeated(o, l, port, res) : -CLI_SYSTEM;
    cw_listener_close(&l);
    probe_where_done();
    if (n < 0) {
        if (probe_interrupted)
            cli_error(o->server ? "probe: interrupted"
                                : "probe: interrupted; the client's processes were killed");
        if (!o->server)
            free_all(o->cmd);
        return -n;
    }
    int passed = 0;
    for (int i = 0; i < n; i++)
        passed += res[i].verdict == PROBE_PASS || res[i].verdict == PROBE_SKIP;
    report(o, port, res, n, passed);
    if (!o->server) {
        free_all(o->cmd);
        o->cmd = user_cmd;
    }
    return passed == n ? CLI_OK : CLI_FOUND;
}

int cmd_probe(int argc, char **argv)
{
    struct probe_opts o = {
        .host = "127.0.0.1", .grace_ms = 2000, .hang_ms = 10000, .drip_ms = 100,
        .settle_ms = 500, .slow_ms = 20, .repeat = 1,
        .where = 1,
    };
    for (size_t i = 0; i < probe_nscenarios; i++)
        o.list[o.nlist++] = &probe_scenarios[i];
    for (size_t i = 0; i < probe_nsscenarios; i++)
        o.slist[o.nslist++] = &probe_sscenarios[i];
    int rc = parse_args(&o, argc, argv);
    if (rc == 0) {
        const char *env = getenv("CLOSEWISE_NO_BPF");
        o.no_bpf |= env && *env && strcmp(env, "0");
    }
    if (rc != 0) {
        free(o.send);
        free(o.large);
        return rc > 0 ? CLI_OK : CLI_USAGE;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;   /* no SA_RESTART: poll must return */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    probe_tree_init();
    rc = probe_main(&o);
    free(o.send);
    free(o.large);
    return rc;
}
