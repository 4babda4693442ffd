/* resets.c - `closewise resets`: every TCP reset that a local close()
 * caused, live, with the process, its container, the bytes the reset
 * destroyed and the line of code that closed (docs/RESETS.md). Events
 * come from rstwatch.c (BPF); without BPF, from the kernel's counters
 * (resets_counters.c). */
#define _GNU_SOURCE
#include "resets.h"
#include "rstwatch.h"
#include "../symbolize.h"
#include "../../net/addr.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

volatile sig_atomic_t resets_stop;

static void on_signal(int sig)
{
    (void)sig;
    resets_stop = 1;
}

enum { O_JSON = 256, O_PID, O_COMM, O_CONT, O_REASON, O_ALL, O_DUR, O_COUNT, O_EXIT,
       O_NOBPF, O_INTERVAL };

static const struct cli_opt resets_opts_table[] = {
    {"json", 0, O_JSON, NULL, "JSON Lines, one object per event", NULL},
    {"pid", 0, O_PID, "PID", "only resets caused by this process", NULL},
    {"comm", 0, O_COMM, "NAME", "only this command name", NULL},
    {"container", 0, O_CONT, "ID", "only processes whose cgroup path contains ID", NULL},
    {"reason", 0, O_REASON, "LIST",
     "only these reasons (comma-separated): unread,\n"
     "linger0, abort, data-after-close, fin-wait2-linger,\n"
     "memory, timeout, no-socket, other",
     "unread linger0 abort data-after-close fin-wait2-linger memory timeout no-socket other"},
    {"all", 0, O_ALL, NULL, "also resets not caused by a local close (labelled)", NULL},
    {"duration", 0, O_DUR, "D", "stop after D (500ms, 2s, 1m)", NULL},
    {"count", 0, O_COUNT, "N", "stop after N resets", NULL},
    {"exit-on-reset", 0, O_EXIT, NULL, "exit 1 at the first reset (for CI)", NULL},
    {"no-bpf", 0, O_NOBPF, NULL, "count from /proc/net/netstat (also CLOSEWISE_NO_BPF=1)", NULL},
    {"interval", 0, O_INTERVAL, "D", "counter sampling interval without BPF (default 1s)", NULL},
    {NULL, 0, 0, NULL, NULL, NULL}};

const struct cli_spec resets_spec = {
    "resets", "[options]",
    "Report each TCP reset that a local close() caused, as it happens: time,\n"
    "process, cgroup, connection, why the kernel sent RST instead of FIN, the\n"
    "bytes it destroyed, and the file:line of the close() call. Needs BPF (root);\n"
    "without it, counts resets from /proc/net/netstat per interval.",
    {resets_opts_table, NULL},
    "Exit status: 0 done, 1 a reset with --exit-on-reset, 2 usage, 3 system error.\n"
    "See closewise-resets(1)."};

/* "unknown reason 'x'; reasons: unread, linger0, ..." in one line. */
static void unknown_reason(const char *name)
{
    char names[512];
    size_t len = 0;
    names[0] = '\0';
    for (uint32_t k = 0; k < CW_RST_KIND_MAX && len < sizeof names; k++)
        len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", k ? ", " : "",
                                rst_kind_name(k));
    cli_usage_error("--reason: unknown reason '%s'; reasons: %s", name, names);
}

static int parse_reasons(const char *arg, unsigned *mask)
{
    char *copy = strdup(arg), *save = NULL;
    if (!copy)
        return -1;
    int ok = 1;
    for (char *t = strtok_r(copy, ",", &save); t && ok; t = strtok_r(NULL, ",", &save)) {
        uint32_t k = 0;
        while (k < CW_RST_KIND_MAX && strcmp(t, rst_kind_name(k)))
            k++;
        if (k == CW_RST_KIND_MAX) {
            unknown_reason(t);
            ok = 0;
        }
        *mask |= 1u << k;
    }
    free(copy);
    if (ok && !*mask)
        cli_usage_error("--reason: wants a list of reasons");
    return ok && *mask ? 0 : -1;
}

static int parse_count(const char *name, const char *arg, long long *out)
{
    return cli_count(name, arg, 1, 1000000000000LL, out);
}

static int parse_dur(const char *name, const char *arg, long long *out)
{
    if (cli_duration(name, arg, 1, CLI_DURATION_MAX, out) < 0)
        return -1;
    return 0;
}

static int handle_opt(int c, const char *arg, struct resets_opts *o)
{
    long long v;
    switch (c) {
    case O_JSON: o->json = 1; return 0;
    case O_ALL: o->all = 1; return 0;
    case O_EXIT: o->exit_on_reset = 1; return 0;
    case O_NOBPF: o->no_bpf = 1; return 0;
    case O_COMM: o->comm = arg; return 0;
    case O_CONT: o->container = arg; return 0;
    case O_REASON: return parse_reasons(arg, &o->reasons);
    case O_DUR: return parse_dur("--duration", arg, &o->duration_ms);
    case O_INTERVAL: return parse_dur("--interval", arg, &o->interval_ms);
    case O_COUNT: return parse_count("--count", arg, &o->count);
    case O_PID:
        if (parse_count("--pid", arg, &v) < 0 || v > 0x7fffffff)
            return -1;
        o->pid = (pid_t)v;
        return 0;
    }
    return -1;
}

/* Returns CLI_OK, CLI_USAGE, or -1 after --help. */
static int resets_parse(int argc, char **argv, struct resets_opts *o)
{
    struct cli_parser p;
    const char *arg;
    int c;
    memset(o, 0, sizeof *o);
    o->interval_ms = 1000;
    cli_getopt_init(&p, &resets_spec, argc, argv);
    while ((c = cli_getopt(&p, &arg)) != -1) {
        if (c == CLI_HELPED)
            return -1;
        if (c == '?' || handle_opt(c, arg, o) < 0)
            return CLI_USAGE;
    }
    if (cli_no_operands(&resets_spec, argc, argv) != CLI_OK)
        return CLI_USAGE;
    const char *env = getenv("CLOSEWISE_NO_BPF");
    if (env && *env && strcmp(env, "0"))
        o->no_bpf = 1;
    return CLI_OK;
}

void resets_time(char *buf, size_t size, int64_t wall_ns, int json)
{
    time_t s = (time_t)(wall_ns / 1000000000);
    int ms = (int)(wall_ns / 1000000 % 1000);
    struct tm tm;
    char t[32];
    if (json) {
        gmtime_r(&s, &tm);
        strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(buf, size, "%s.%03dZ", t, ms);
    } else {
        localtime_r(&s, &tm);
        strftime(t, sizeof t, "%H:%M:%S", &tm);
        snprintf(buf, size, "%s.%03d", t, ms);
    }
}

/* ---- one event ---- */

struct ctx {
    const struct resets_opts *o;
    struct sym *sym;
    int64_t wall_minus_mono;   /* ns to add to bpf_ktime_get_ns() */
    long long seen;
    int found;
    pid_t cg_pid;              /* the last process whose cgroup was read */
    int64_t cg_time;
    char cg[512];
};

/* The process's cgroup v2 path ("/system.slice/x.service"), "" if gone. */
static void cgroup_of(pid_t pid, char *buf, size_t size)
{
    char path[64], line[512];
    buf[0] = '\0';
    snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "0::", 3)) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(buf, size, "%s", line + 3);
        }
    fclose(f);
}

/* A container id in a cgroup path: the first run of 64 hex digits
 * (docker-<id>.scope, /docker/<id>, cri-containerd-<id>.scope,
 * libpod-<id>.scope), cut to the usual 12; "" on the host. */
static void container_of(const char *cg, char *buf, size_t size)
{
    buf[0] = '\0';
    for (const char *p = cg; *p; p++) {
        size_t n = strspn(p, "0123456789abcdef");
        if (n == 64) {
            snprintf(buf, size, "%.12s", p);
            return;
        }
        p += n ? n - 1 : 0;
    }
}

static void fmt_addr(const struct cw_rst_event *e, int peer, char *buf, size_t size)
{
    int fam = e->family == 10 ? AF_INET6 : AF_INET;
    if (cw__addr_format(fam, peer ? e->daddr : e->saddr, (unsigned)(peer ? e->dport : e->sport),
                        buf, size) < 0)
        snprintf(buf, size, "?");
}

/* The reason in plain words. */
static void explain(const struct cw_rst_event *e, char *buf, size_t size)
{
    char n[48];
    switch (e->kind) {
    case CW_RST_UNREAD:
        snprintf(buf, size, "closed with %s: the kernel sent RST instead of FIN%s",
                 cli_plural(e->unread, "unread byte", "unread bytes", n, sizeof n),
                 e->unsent ? " and dropped the unsent reply" : "");
        break;
    case CW_RST_LINGER0:
        snprintf(buf, size, "SO_LINGER 0: %s destroyed",
                 cli_plural(e->unsent, "unsent byte", "unsent bytes", n, sizeof n));
        break;
    case CW_RST_ABORT:
        snprintf(buf, size, "aborted outside close() (SOCK_DESTROY or connect(AF_UNSPEC)): "
                 "%s destroyed", cli_plural(e->unsent, "unsent byte", "unsent bytes", n, sizeof n));
        break;
    case CW_RST_AFTER_CLOSE:
        snprintf(buf, size, "not a close: data arrived after close(), answered with RST");
        break;
    case CW_RST_LINGER2:
        snprintf(buf, size, "not a close: FIN_WAIT2 aborted (TCP_LINGER2 < 0)");
        break;
    case CW_RST_MEMORY:
        snprintf(buf, size, "not a close: too many orphaned sockets or out of memory");
        break;
    case CW_RST_TIMEOUT:
        snprintf(buf, size, "not a close: keepalive timeout");
        break;
    case CW_RST_NO_SOCKET:
        snprintf(buf, size, "not a close: segment for no socket (closed port)");
        break;
    default:
        snprintf(buf, size, "not a close: kernel reason %u", e->kreason);
    }
}

#define MAX_FRAMES 32

static void print_text(struct ctx *c, const struct cw_rst_event *e, const char *t,
                       const char *cg, const char *cont, const struct sym_loc *fr, int nf)
{
    char l[64], p[64], why[200], f[400];
    fmt_addr(e, 0, l, sizeof l);
    fmt_addr(e, 1, p, sizeof p);
    explain(e, why, sizeof why);
    if (e->pid)
        printf("%s pid %u (%.16s) %s %s > %s %s; unsent %u, unread %u", t, e->pid, e->comm,
               cont[0] ? cont : cg[0] ? cg : "-", l, p, why, e->unsent, e->unread);
    else
        printf("%s [not a local close] %s > %s %s", t, l, p, why);
    int idx[4];
    int np = sym_pick(fr, nf, idx, 4);
    for (int i = 0; i < np; i++) {
        sym_format(&fr[idx[i]], f, sizeof f);
        printf("%s%s", i ? " < " : " at ", f);
    }
    putchar('\n');
    (void)c;
}

/* The socket's TCP state when the RST left: TCP_CLOSE on the close paths
 * (the kernel moves there first), others for --all. */
static const char *state_name(int st)
{
    const char *name = cw_tcp_state_name(st);
    return strcmp(name, "UNKNOWN") ? name : "?";
}

static void json_frame(const struct sym_loc *l)
{
    printf("{\"addr\":\"0x%llx\",\"module\":", (unsigned long long)l->addr);
    cli_json_str(stdout, l->module);
    printf(",\"function\":");
    cli_json_str(stdout, l->function);
    printf(",\"file\":");
    cli_json_str(stdout, l->file);
    printf(",\"line\":%d,\"library\":%s}", l->line, l->lib ? "true" : "false");
}

static void print_json(const struct cw_rst_event *e, const char *t, const char *cg,
                       const char *cont, const struct sym_loc *fr, int nf)
{
    char l[64], p[64], why[200], comm[17];
    fmt_addr(e, 0, l, sizeof l);
    fmt_addr(e, 1, p, sizeof p);
    explain(e, why, sizeof why);
    snprintf(comm, sizeof comm, "%.16s", e->comm);
    printf("{\"schema\":1,\"time\":\"%s\",\"pid\":%u,\"tid\":%u,\"comm\":", t, e->pid, e->tid);
    cli_json_str(stdout, comm);
    printf(",\"cgroup\":");
    cli_json_str(stdout, cg);
    printf(",\"cgroup_id\":%llu,\"container\":", (unsigned long long)e->cgroup_id);
    cli_json_str(stdout, cont);
    printf(",\"netns\":%u,\"local\":\"%s\",\"peer\":\"%s\",\"reason\":\"%s\","
           "\"kernel_reason\":%u,\"local_close\":%s,\"state\":\"%s\",\"peer_fin\":%s,"
           "\"unsent\":%u,\"unread\":%u,\"message\":",
           e->netns, l, p, rst_kind_name(e->kind), e->kreason, e->local ? "true" : "false",
           e->pid || e->state ? state_name(e->state) : "?", e->peer_fin ? "true" : "false",
           e->unsent, e->unread);
    cli_json_str(stdout, why);
    printf(",\"stack\":[");
    for (int i = 0; i < nf; i++) {
        if (i)
            putchar(',');
        json_frame(&fr[i]);
    }
    printf("]}\n");
}

/* Filters the BPF program cannot apply: name, container, reason. */
static int wanted(const struct resets_opts *o, const struct cw_rst_event *e, const char *cg)
{
    if (o->pid && e->pid != (uint32_t)o->pid)
        return 0;
    if (o->comm && strncmp(o->comm, e->comm, sizeof e->comm))
        return 0;
    /* The cgroup path holds the full container id: any prefix matches. */
    if (o->container && !strstr(cg, o->container))
        return 0;
    if (o->reasons && !(o->reasons >> e->kind & 1))
        return 0;
    return 1;
}

static int on_event(void *arg, const struct cw_rst_event *e)
{
    struct ctx *c = arg;
    const struct resets_opts *o = c->o;
    if (resets_stop)
        return 1;
    char cont[16] = "", t[40];
    const char *cg = "";
    if (e->pid) {
        /* Bursts come from one process: read its cgroup once a second. */
        int64_t now = cw_now_ms();
        if (c->cg_pid != (pid_t)e->pid || now - c->cg_time >= 1000) {
            cgroup_of((pid_t)e->pid, c->cg, sizeof c->cg);
            c->cg_pid = (pid_t)e->pid;
            c->cg_time = now;
        }
        cg = c->cg;
        container_of(cg, cont, sizeof cont);
    }
    if (!wanted(o, e, cg))
        return 0;
    struct sym_loc fr[MAX_FRAMES];
    int nf = rst_frames(c->sym, e, fr, MAX_FRAMES);
    resets_time(t, sizeof t, (int64_t)e->ts_ns + c->wall_minus_mono, o->json);
    if (o->json)
        print_json(e, t, cg, cont, fr, nf);
    else
        print_text(c, e, t, cg, cont, fr, nf);
    c->seen++;
    if (o->exit_on_reset)
        c->found = 1;
    return c->found || (o->count && c->seen >= o->count);
}

static int64_t wall_minus_mono(void)
{
    struct timespec r, m;
    clock_gettime(CLOCK_REALTIME, &r);
    clock_gettime(CLOCK_MONOTONIC, &m);
    return ((int64_t)r.tv_sec - m.tv_sec) * 1000000000 + (r.tv_nsec - m.tv_nsec);
}

static void report_drops(struct rst_watch *w, uint64_t *reported)
{
    uint64_t d = rst_watch_drops(w);
    if (d > *reported) {
        cli_error("resets: %llu events lost (ring buffer full; %llu in total)",
                  (unsigned long long)(d - *reported), (unsigned long long)d);
        *reported = d;
    }
}

static int bpf_loop(struct rst_watch *w, const struct resets_opts *o, int64_t deadline)
{
    struct ctx c = {.o = o, .sym = sym_new(), .wall_minus_mono = wall_minus_mono()};
    uint64_t reported = 0;
    int rc = CLI_OK;
    if (!c.sym) {
        cli_error("resets: out of memory");
        return CLI_SYSTEM;
    }
    while (!resets_stop) {
        int64_t left = deadline == CW_NEVER ? 100 : deadline - cw_now_ms();
        if (left <= 0)
            break;
        sym_sweep(c.sym);   /* each poll reads every event sent before it */
        int n = rst_watch_poll(w, left < 100 ? (int)left : 100, on_event, &c);
        fflush(stdout);   /* a batch per poll: at most 100 ms late */
        report_drops(w, &reported);
        if (n == RST_WATCH_STOPPED)
            break;
        if (n < 0) {
            cli_error("resets: reading events failed");
            rc = CLI_SYSTEM;
            break;
        }
    }
    sym_free(&c.sym);
    return c.found ? CLI_FOUND : rc;
}

int cmd_resets(int argc, char **argv)
{
    struct resets_opts o;
    int rc = resets_parse(argc, argv, &o);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;   /* no SA_RESTART: the wait must end */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* Fully buffered, flushed after each batch of events (bpf_loop) or
     * interval (counters): line buffering made JSON output the command's
     * main cost at 10k events/s. */
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    int64_t deadline = o.duration_ms ? cw_now_ms() + o.duration_ms : CW_NEVER;
    char why[256] = "disabled by --no-bpf or CLOSEWISE_NO_BPF";
    struct rst_watch *w = NULL;
    struct rst_watch_opts wo = {.pid = o.pid, .all = o.all};
    if (!o.no_bpf && rst_watch_start(&w, &wo, why, sizeof why) == 0) {
        fprintf(stderr, "closewise resets: watching TCP resets with BPF (tcp:tcp_send_reset)\n");
        rc = bpf_loop(w, &o, deadline);
        rst_watch_stop(&w);
        return rc;
    }
    return resets_counters(&o, deadline, why);
}
